//! Kubernetes Events (events.k8s.io/v1) for the transitions of a rollout's generations, so
//! `kubectl get events` shows a rollout's history next to the objects it concerns.
//!
//! [`from_decisions`] is pure: it maps each generation's decided state to the Events that state
//! stands for, against the object concerned (producer Pod, VolumeSnapshot, StatefulSet). It keeps
//! no memory of earlier runs: an Event's name is deterministic (`<object>.<reason>`), so a run
//! that sees the same state again finds that Event already there (one labelled LIST) and
//! [`emit_events`] creates only what is missing. No annotation or other state is written.
//! Events expire (the API server's `--event-ttl`, one hour by default); a state that lasts
//! longer (a generation serving for a day) is then reported again by the next run, at most once
//! per expiry.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as KubeEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};

use crate::apply::{ApiCause, ApplyError, Manager};
use crate::manifest::{self, Kind};
use crate::rollout::{Decision, State};
use crate::spec::Rollout;

/// `reportingController` of every Event snaproll creates (`reportingComponent` in the core/v1
/// view that `kubectl get events` shows).
pub const REPORTING_CONTROLLER: &str = "snaproll.dev/snaproll";

/// Longest `note` the API accepts (bytes).
pub const MAX_NOTE: usize = 1024;

/// Longest object name (an RFC 1123 subdomain).
const MAX_NAME: usize = 253;

/// Normal or Warning, as events.k8s.io/v1 knows them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// One Event to report: a transition of one generation, against the object it concerns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Deterministic: `<object>.<reason in lower case>`, so a transition is reported once.
    pub name: String,
    pub rollout: String,
    pub dataset: String,
    pub generation: String,
    /// The object concerned.
    pub kind: Kind,
    pub object: String,
    pub type_: EventType,
    /// Machine-readable, CamelCase: Producing, SnapshotTaken, SnapshotReady, RollingOut,
    /// Serving, Retiring, Failed.
    pub reason: &'static str,
    /// What snaproll did (or what failed): CreateProducer, CreateSnapshot, RestoreSnapshot,
    /// CreateStatefulSet, Serve, Retire, RunProducer, TakeSnapshot, RollOut.
    pub action: &'static str,
    /// For people: at most [`MAX_NOTE`] bytes.
    pub note: String,
}

/// The Events the decisions of a run stand for. Datasets that left the spec are skipped (their
/// consumer's name is no longer known); `Kept` and `Waiting` generations report nothing; an
/// `Unchanged` one a Normal Event against its producer Pod.
pub fn from_decisions(rollout: &Rollout, decisions: &[Decision]) -> Vec<Event> {
    let consumers: BTreeMap<&str, &str> = rollout
        .spec
        .datasets
        .iter()
        .map(|d| (d.name.as_str(), d.consumer.name.as_str()))
        .collect();
    let copies_of: BTreeMap<&str, u32> = rollout
        .spec
        .datasets
        .iter()
        .map(|d| (d.name.as_str(), d.snapshot.copies))
        .collect();
    let mut out = Vec::new();
    for decision in decisions {
        if decision.removed {
            continue;
        }
        let Some(consumer) = consumers.get(decision.dataset.as_str()) else {
            continue;
        };
        let ds = decision.dataset.as_str();
        for g in &decision.generations {
            let id = g.generation.as_str();
            // The names `render` gives the generation's objects.
            let producer = (Kind::Pod, format!("{ds}-producer-{id}"));
            // With `snapshot.copies` > 1 (frozen in the plan once taken): copy 0 stands for all.
            let copies = decision
                .render
                .iter()
                .find(|p| p.id == id)
                .and_then(|p| p.copies)
                .or_else(|| copies_of.get(ds).copied())
                .unwrap_or(1);
            let snapshot = if copies > 1 {
                (Kind::VolumeSnapshot, format!("{ds}-{id}-0"))
            } else {
                (Kind::VolumeSnapshot, format!("{ds}-{id}"))
            };
            let ready = if copies > 1 {
                format!(
                    "snapshot copies {ds}-{id}-0…{} are ready to use",
                    copies - 1
                )
            } else {
                format!("snapshot {ds}-{id} is ready to use")
            };
            let statefulset = (Kind::StatefulSet, format!("{consumer}-{id}"));
            let verify = (Kind::Job, format!("{ds}-{id}-verify"));
            let mut push =
                |(kind, object): &(Kind, String), type_, reason, action, note: String| {
                    out.push(event(
                        &rollout.metadata.name,
                        ds,
                        id,
                        (*kind, object),
                        (type_, reason, action),
                        note,
                    ))
                };
            let subject = format!("generation {id} of dataset {ds}");
            match g.state {
                State::Producing => push(
                    &producer,
                    EventType::Normal,
                    "Producing",
                    "CreateProducer",
                    format!("{subject}: {}", g.detail),
                ),
                State::Snapshotting => push(
                    &snapshot,
                    EventType::Normal,
                    "SnapshotTaken",
                    "CreateSnapshot",
                    format!("{subject}: {}", g.detail),
                ),
                State::Verifying => push(
                    &verify,
                    EventType::Normal,
                    "Verifying",
                    "VerifySnapshot",
                    format!("{subject}: {}", g.detail),
                ),
                State::RollingOut => {
                    push(
                        &snapshot,
                        EventType::Normal,
                        "SnapshotReady",
                        "RestoreSnapshot",
                        format!("{subject}: {ready}"),
                    );
                    push(
                        &statefulset,
                        EventType::Normal,
                        "RollingOut",
                        "CreateStatefulSet",
                        format!("{subject}: {}", g.detail),
                    );
                }
                State::Serving => push(
                    &statefulset,
                    EventType::Normal,
                    "Serving",
                    "Serve",
                    format!("{subject} is serving: {}", g.detail),
                ),
                State::Retiring => push(
                    &statefulset,
                    EventType::Normal,
                    "Retiring",
                    "Retire",
                    format!("{subject} retires: {}", g.detail),
                ),
                State::Failed => {
                    // The detail says which step failed (see `rollout::raw_state`).
                    let (target, action) = if g.detail.starts_with("producer") {
                        (&producer, "RunProducer")
                    } else if g.detail.starts_with("snapshot") {
                        (&snapshot, "TakeSnapshot")
                    } else if g.detail.starts_with("verify") {
                        (&verify, "VerifySnapshot")
                    } else {
                        (&statefulset, "RollOut")
                    };
                    push(
                        target,
                        EventType::Warning,
                        "Failed",
                        action,
                        format!("{subject} failed: {}", g.detail),
                    );
                }
                // Against the producer Pod whose digest said so (pruned in the same run; the
                // Event's fixed name keeps later runs reporting it to one Event).
                State::Unchanged => push(
                    &producer,
                    EventType::Normal,
                    "Unchanged",
                    "SkipRollout",
                    format!("{subject}: {}", g.detail),
                ),
                State::Kept | State::Waiting => {}
            }
        }
    }
    out
}

fn event(
    rollout: &str,
    dataset: &str,
    generation: &str,
    (kind, object): (Kind, &str),
    (type_, reason, action): (EventType, &'static str, &'static str),
    note: String,
) -> Event {
    let suffix = format!(".{}", reason.to_ascii_lowercase());
    let mut base = object.to_string();
    base.truncate(MAX_NAME - suffix.len());
    Event {
        name: format!("{}{suffix}", base.trim_end_matches(['-', '.'])),
        rollout: rollout.to_string(),
        dataset: dataset.to_string(),
        generation: generation.to_string(),
        kind,
        object: object.to_string(),
        type_,
        reason,
        action,
        note: truncate(note, MAX_NOTE),
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max - '…'.len_utf8();
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

/// The events.k8s.io/v1 object for `e` in `namespace`, reported by `instance` at `now`.
pub fn to_kube(e: &Event, namespace: &str, instance: &str, now: jiff::Timestamp) -> KubeEvent {
    KubeEvent {
        metadata: ObjectMeta {
            name: Some(e.name.clone()),
            namespace: Some(namespace.to_string()),
            labels: Some(
                [
                    (manifest::LABEL_MANAGED_BY, "snaproll"),
                    (manifest::LABEL_ROLLOUT, e.rollout.as_str()),
                    (manifest::LABEL_DATASET, e.dataset.as_str()),
                    (manifest::LABEL_GENERATION, e.generation.as_str()),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(now)),
        reporting_controller: Some(REPORTING_CONTROLLER.to_string()),
        reporting_instance: Some(instance.to_string()),
        action: Some(e.action.to_string()),
        reason: Some(e.reason.to_string()),
        note: Some(e.note.clone()),
        type_: Some(e.type_.as_str().to_string()),
        regarding: Some(ObjectReference {
            api_version: Some(e.kind.api_version().to_string()),
            kind: Some(e.kind.as_str().to_string()),
            name: Some(e.object.clone()),
            namespace: Some(namespace.to_string()),
            ..ObjectReference::default()
        }),
        ..KubeEvent::default()
    }
}

/// Who reports: the Pod's name in a cluster (`POD_NAME` from the downward API, else the
/// `HOSTNAME` the kubelet sets to it), else `snaproll`.
pub fn reporting_instance() -> String {
    ["POD_NAME", "HOSTNAME"]
        .iter()
        .filter_map(|k| std::env::var(k).ok())
        .find(|v| !v.is_empty())
        .unwrap_or_else(|| "snaproll".to_string())
}

/// Creates those of `events` in `namespace` that do not exist yet: one labelled LIST of the
/// rollout's Events, then a create per missing one. A state seen again (a generation serving
/// day after day) is therefore reported once per Event lifetime with no write in between, and
/// a run that changes nothing still reports a transition only it observed (the first
/// generation turning ready, a snapshot timing out). When the LIST is refused (RBAC from an
/// older install grants only `create`), every Event is created and a 409 counts as reported.
/// Returns how many were created. Every Event is tried; the first failure is returned after
/// the others. Callers log a failure at warn and go on: an Event never fails a run.
pub async fn emit_events(
    manager: &Manager,
    namespace: &str,
    events: &[Event],
) -> Result<usize, ApplyError> {
    if events.is_empty() {
        return Ok(0);
    }
    let api: Api<KubeEvent> = Api::namespaced(manager.client().clone(), namespace);
    let rollouts: std::collections::BTreeSet<&str> =
        events.iter().map(|e| e.rollout.as_str()).collect();
    let mut existing = std::collections::BTreeSet::new();
    for rollout in rollouts {
        let selector = format!(
            "{}=snaproll,{}={rollout}",
            manifest::LABEL_MANAGED_BY,
            manifest::LABEL_ROLLOUT
        );
        match api
            .list_metadata(&kube::api::ListParams::default().labels(&selector))
            .await
        {
            Ok(list) => existing.extend(list.items.into_iter().filter_map(|m| m.metadata.name)),
            Err(e) => {
                tracing::debug!(error = %e, "listing the rollout's Events; creating each instead");
            }
        }
    }
    let instance = reporting_instance();
    let now = jiff::Timestamp::now();
    let mut created = 0;
    let mut first_error = None;
    for e in events.iter().filter(|e| !existing.contains(&e.name)) {
        match api
            .create(
                &PostParams::default(),
                &to_kube(e, namespace, &instance, now),
            )
            .await
        {
            Ok(_) => created += 1,
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(err) => {
                first_error.get_or_insert(ApplyError::Apply {
                    object: format!("Event {namespace}/{}", e.name),
                    source: ApiCause::from_kube(err),
                });
            }
        }
    }
    match first_error {
        Some(err) => Err(err),
        None => Ok(created),
    }
}

/// One Event of a rollout as `status --events` shows it (kubectl's `get events` columns).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Recent {
    /// RFC 3339 time of the Event (`eventTime`, else its creation).
    pub time: Option<String>,
    #[serde(rename = "type")]
    pub type_: String,
    pub reason: String,
    /// `Kind/name` of the object concerned.
    pub object: String,
    pub dataset: Option<String>,
    pub generation: Option<String>,
    pub note: String,
}

/// The last `limit` Events snaproll reported for `rollout` in `namespace`, oldest first: one
/// labelled LIST (Events expire, so this is at most the API server's `--event-ttl` of history).
pub async fn recent(
    manager: &Manager,
    namespace: &str,
    rollout: &str,
    limit: usize,
) -> Result<Vec<Recent>, ApplyError> {
    let api: Api<KubeEvent> = Api::namespaced(manager.client().clone(), namespace);
    let selector = format!(
        "{}=snaproll,{}={rollout}",
        manifest::LABEL_MANAGED_BY,
        manifest::LABEL_ROLLOUT
    );
    let list = api
        .list(&kube::api::ListParams::default().labels(&selector))
        .await
        .map_err(|e| ApplyError::List {
            kind: "Event".to_string(),
            scope: format!("namespace {namespace}"),
            source: ApiCause::from_kube(e),
        })?;
    let mut out: Vec<(Option<jiff::Timestamp>, Recent)> = list
        .items
        .into_iter()
        .map(|e| {
            let labels = e.metadata.labels.clone().unwrap_or_default();
            let regarding = e.regarding.unwrap_or_default();
            let time = e
                .event_time
                .map(|t| t.0)
                .or_else(|| e.metadata.creation_timestamp.map(|t| t.0));
            let recent = Recent {
                time: time.map(|t| t.to_string()),
                type_: e.type_.unwrap_or_default(),
                reason: e.reason.unwrap_or_default(),
                object: format!(
                    "{}/{}",
                    regarding.kind.unwrap_or_default(),
                    regarding.name.unwrap_or_default()
                ),
                dataset: labels.get(manifest::LABEL_DATASET).cloned(),
                generation: labels.get(manifest::LABEL_GENERATION).cloned(),
                note: e.note.unwrap_or_default(),
            };
            (time, recent)
        })
        .collect();
    // Oldest first. One run reports its Events with one time: those tie in the order a
    // generation goes through them, then by object.
    let rank = |reason: &str| {
        [
            "Producing",
            "SnapshotTaken",
            "SnapshotReady",
            "RollingOut",
            "Serving",
            "Retiring",
            "Failed",
        ]
        .iter()
        .position(|r| *r == reason)
        .unwrap_or(usize::MAX)
    };
    out.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| rank(&a.1.reason).cmp(&rank(&b.1.reason)))
            .then_with(|| a.1.object.cmp(&b.1.object))
    });
    let skip = out.len().saturating_sub(limit);
    Ok(out.into_iter().skip(skip).map(|(_, r)| r).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::GenerationStatus;

    fn rollout() -> Rollout {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/gke-daily/snaproll.yaml"
        ))
        .unwrap();
        crate::spec::parse_str("s.yaml", &text).unwrap().rollout
    }

    fn decision(gens: &[(&str, State, &str)]) -> Decision {
        Decision {
            dataset: "data".into(),
            waiting: None,
            generations: gens
                .iter()
                .map(|(g, s, d)| GenerationStatus {
                    generation: g.to_string(),
                    state: s.clone(),
                    first_seen: None,
                    detail: d.to_string(),
                })
                .collect(),
            render: Vec::new(),
            removed: false,
            notes: Vec::new(),
            foreign: Vec::new(),
            held_source: None,
            service: None,
        }
    }

    fn summary(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .map(|e| {
                format!(
                    "{} {} {} {}/{} {}: {}",
                    e.name,
                    e.type_.as_str(),
                    e.reason,
                    e.kind.as_str(),
                    e.object,
                    e.action,
                    e.note
                )
            })
            .collect()
    }

    #[test]
    fn each_state_maps_to_its_transition_against_the_object_concerned() {
        let d = decision(&[
            ("2021-07-10", State::Retiring, "deleting the StatefulSet"),
            ("2021-07-11", State::Kept, "kept for rollback"),
            ("2021-07-12", State::Serving, "3/3 replicas ready"),
            ("2021-07-13", State::RollingOut, "1/3 replicas ready"),
            (
                "2021-07-14",
                State::Snapshotting,
                "snapshot data-2021-07-14 not ready",
            ),
            ("2021-07-15", State::Producing, "producer Running"),
            ("2021-07-16", State::Waiting, ""),
            (
                "2021-07-17",
                State::Unchanged,
                "data unchanged (digest sha256:a); generation 2021-07-12 keeps serving",
            ),
        ]);
        assert_eq!(
            summary(&from_decisions(&rollout(), &[d])),
            [
                "consumer-2021-07-10.retiring Normal Retiring StatefulSet/consumer-2021-07-10 Retire: generation 2021-07-10 of dataset data retires: deleting the StatefulSet",
                "consumer-2021-07-12.serving Normal Serving StatefulSet/consumer-2021-07-12 Serve: generation 2021-07-12 of dataset data is serving: 3/3 replicas ready",
                "data-2021-07-13.snapshotready Normal SnapshotReady VolumeSnapshot/data-2021-07-13 RestoreSnapshot: generation 2021-07-13 of dataset data: snapshot data-2021-07-13 is ready to use",
                "consumer-2021-07-13.rollingout Normal RollingOut StatefulSet/consumer-2021-07-13 CreateStatefulSet: generation 2021-07-13 of dataset data: 1/3 replicas ready",
                "data-2021-07-14.snapshottaken Normal SnapshotTaken VolumeSnapshot/data-2021-07-14 CreateSnapshot: generation 2021-07-14 of dataset data: snapshot data-2021-07-14 not ready",
                "data-producer-2021-07-15.producing Normal Producing Pod/data-producer-2021-07-15 CreateProducer: generation 2021-07-15 of dataset data: producer Running",
                "data-producer-2021-07-17.unchanged Normal Unchanged Pod/data-producer-2021-07-17 SkipRollout: generation 2021-07-17 of dataset data: data unchanged (digest sha256:a); generation 2021-07-12 keeps serving",
            ]
        );
    }

    #[test]
    fn a_failure_is_a_warning_against_the_step_that_failed() {
        let d = decision(&[
            (
                "2021-07-13",
                State::Failed,
                "producer failed: Error (exit code 1)",
            ),
            (
                "2021-07-14",
                State::Failed,
                "snapshot data-2021-07-14 not ready after 6h: no status",
            ),
            ("2021-07-15", State::Failed, "pinned generation is gone"),
        ]);
        assert_eq!(
            summary(&from_decisions(&rollout(), &[d])),
            [
                "data-producer-2021-07-13.failed Warning Failed Pod/data-producer-2021-07-13 RunProducer: generation 2021-07-13 of dataset data failed: producer failed: Error (exit code 1)",
                "data-2021-07-14.failed Warning Failed VolumeSnapshot/data-2021-07-14 TakeSnapshot: generation 2021-07-14 of dataset data failed: snapshot data-2021-07-14 not ready after 6h: no status",
                "consumer-2021-07-15.failed Warning Failed StatefulSet/consumer-2021-07-15 RollOut: generation 2021-07-15 of dataset data failed: pinned generation is gone",
            ]
        );
    }

    #[test]
    fn removed_and_unknown_datasets_report_nothing() {
        let mut d = decision(&[("2021-07-12", State::Retiring, "x")]);
        d.removed = true;
        let mut other = decision(&[("2021-07-12", State::Serving, "x")]);
        other.dataset = "gone".into();
        assert!(from_decisions(&rollout(), &[d, other]).is_empty());
    }

    #[test]
    fn object_names_are_the_rendered_ones() {
        let r = rollout();
        let plan = crate::render::Plan {
            datasets: [(
                "data".to_string(),
                vec![crate::render::GenerationPlan::full("2021-07-15")],
            )]
            .into_iter()
            .collect(),
            ..Default::default()
        };
        let set = crate::render::Renderer::new(None)
            .unwrap()
            .render(&r, &plan)
            .unwrap();
        let rendered: Vec<(Kind, String)> = set
            .objects
            .iter()
            .map(|o| (o.id.kind, o.id.name.clone()))
            .collect();
        let d = decision(&[
            ("2021-07-15", State::RollingOut, ""),
            ("2021-07-15", State::Producing, ""),
        ]);
        for e in from_decisions(&r, &[d]) {
            assert!(
                rendered.contains(&(e.kind, e.object.clone())),
                "{} {} not rendered: {rendered:?}",
                e.kind.as_str(),
                e.object
            );
        }
    }

    #[test]
    fn names_and_notes_stay_within_api_limits() {
        let long = "x".repeat(300);
        let e = event(
            "r",
            "d",
            "g",
            (Kind::VolumeSnapshot, &long),
            (EventType::Normal, "SnapshotReady", "RestoreSnapshot"),
            "é".repeat(MAX_NOTE),
        );
        assert_eq!(e.name.len(), MAX_NAME);
        assert!(e.name.ends_with(".snapshotready"));
        assert!(e.note.len() <= MAX_NOTE && e.note.ends_with('…'));
        let k = to_kube(&e, "ns", "pod-1", jiff::Timestamp::UNIX_EPOCH);
        assert_eq!(
            k.reporting_controller.as_deref(),
            Some("snaproll.dev/snaproll")
        );
        assert_eq!(k.reporting_instance.as_deref(), Some("pod-1"));
        let regarding = k.regarding.unwrap();
        assert_eq!(
            regarding.api_version.as_deref(),
            Some("snapshot.storage.k8s.io/v1")
        );
        assert_eq!(regarding.kind.as_deref(), Some("VolumeSnapshot"));
    }
}
