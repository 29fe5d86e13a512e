//! The generation state machine: from what the cluster (or Git) shows, decide each dataset's
//! generations' states and which parts of which generations to render this run.
//!
//! Each run advances as far as it can and exits; the next run continues. The decision is a pure
//! function of the observation, so a run that observes nothing new renders exactly what the last
//! one did (no writes, no commit). Retirement is expressed by *not rendering* an object: prune
//! then deletes it, in reverse dependency order, and only after every apply succeeded.
//!
//! Per generation: producing → snapshotting → rolling out → serving → (kept) → retiring → retired,
//! or failed. Invariants (checked by [`check_invariants`]): at most one generation is being
//! introduced per dataset; the newest serving generation is always rendered in full; a snapshot
//! is rendered while any StatefulSet or PVC of its generation exists.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::apply::readiness::{Readiness, readiness};
use crate::manifest::{self, Kind};
use crate::render::{GenerationPlan, Plan};
use crate::spec::{self, Dataset, Rollout, Schedule};

/// Default time a snapshot may take to become ready before its generation is marked failed:
/// EBS snapshots of large volumes take hours, so this is generous.
pub const DEFAULT_SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

/// What was seen of one generation of one dataset.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    pub id: String,
    pub producer: Option<Value>,
    pub snapshot: Option<Value>,
    pub statefulset: Option<Value>,
    /// Consumer PVCs (made by the StatefulSet controller) still present.
    pub claims: usize,
}

impl Observed {
    /// When the generation first appeared (the oldest creation timestamp among its objects).
    fn first_seen(&self) -> Option<jiff::Timestamp> {
        [&self.producer, &self.snapshot, &self.statefulset]
            .into_iter()
            .flatten()
            .filter_map(created)
            .min()
    }
}

fn created(v: &Value) -> Option<jiff::Timestamp> {
    v.pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(|t| t.parse().ok())
}

/// Groups objects by dataset and generation from their labels. For what Git holds: the
/// rollout's folder is its inventory, so every object there with the ownership labels counts.
/// Live objects go through [`observe_members`] instead.
pub fn observe(rollout: &str, objects: &[Value]) -> BTreeMap<String, Vec<Observed>> {
    group(rollout, objects.iter())
}

/// What a run saw of the cluster: the rollout's generations, and look-alikes.
#[derive(Clone, Debug, Default)]
pub struct Observation {
    pub datasets: BTreeMap<String, Vec<Observed>>,
    /// Objects carrying the rollout's ownership labels that are not members of its ApplySet,
    /// by dataset (`""` when they name none): `Kind/name` each. Reported, never adopted,
    /// counted, served or deleted.
    pub foreign: BTreeMap<String, Vec<String>>,
}

/// Groups live objects (from one LIST per kind) into datasets and generations: only members
/// of the rollout's ApplySet (see [`manifest::is_member`]) count; objects that only look like
/// the rollout's are returned as foreign.
pub fn observe_members(rollout: &str, applyset_id: &str, objects: &[Value]) -> Observation {
    let mut foreign: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let members = objects.iter().filter(|v| {
        let labels = manifest::labels_of(v);
        if !manifest::is_owned_by(&labels, rollout) {
            return false;
        }
        if manifest::is_member(&labels, rollout, applyset_id) {
            return true;
        }
        let kind = v.get("kind").and_then(Value::as_str).unwrap_or("?");
        let name = v
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("?");
        foreign
            .entry(
                labels
                    .get(manifest::LABEL_DATASET)
                    .cloned()
                    .unwrap_or_default(),
            )
            .or_default()
            .push(format!("{kind}/{name}"));
        false
    });
    let datasets = group(rollout, members);
    for names in foreign.values_mut() {
        names.sort();
    }
    Observation { datasets, foreign }
}

fn group<'a>(
    rollout: &str,
    objects: impl Iterator<Item = &'a Value>,
) -> BTreeMap<String, Vec<Observed>> {
    let mut by: BTreeMap<(String, String), Observed> = BTreeMap::new();
    for v in objects {
        let labels = manifest::labels_of(v);
        if !manifest::is_owned_by(&labels, rollout) {
            continue;
        }
        let (Some(dataset), Some(generation)) = (
            labels.get(manifest::LABEL_DATASET),
            labels.get(manifest::LABEL_GENERATION),
        ) else {
            continue;
        };
        let entry = by
            .entry((dataset.clone(), generation.clone()))
            .or_insert_with(|| Observed {
                id: generation.clone(),
                ..Observed::default()
            });
        let kind = v
            .get("kind")
            .and_then(Value::as_str)
            .and_then(Kind::from_kind);
        let component = labels.get(manifest::LABEL_COMPONENT).map(String::as_str);
        match (kind, component) {
            (Some(Kind::Pod), Some("producer")) => entry.producer = Some(v.clone()),
            (Some(Kind::VolumeSnapshot), _) => entry.snapshot = Some(v.clone()),
            (Some(Kind::StatefulSet), _) => entry.statefulset = Some(v.clone()),
            (Some(Kind::PersistentVolumeClaim), Some("consumer-volume")) => entry.claims += 1,
            _ => {}
        }
    }
    let mut out: BTreeMap<String, Vec<Observed>> = BTreeMap::new();
    for ((dataset, _), o) in by {
        out.entry(dataset).or_default().push(o);
    }
    out
}

/// The state of a generation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// The producer Pod is filling the PVC.
    Producing,
    /// The producer succeeded; the VolumeSnapshot is being taken.
    Snapshotting,
    /// The snapshot is ready; the StatefulSet is starting.
    RollingOut,
    /// The newest ready StatefulSet: what the Service sends traffic to.
    Serving,
    /// An older ready generation whose snapshot is kept for rollback.
    Kept,
    /// Being removed: StatefulSet first, then its PVCs, the producer, the snapshot.
    Retiring,
    /// Will not become ready; the previous generation keeps serving.
    Failed,
    /// Named by the schedule or `--generation` but not started yet.
    Waiting,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Producing => "producing",
            State::Snapshotting => "snapshotting",
            State::RollingOut => "rolling out",
            State::Serving => "serving",
            State::Kept => "kept",
            State::Retiring => "retiring",
            State::Failed => "failed",
            State::Waiting => "waiting",
        })
    }
}

/// One generation's state, for `status` and the run's report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GenerationStatus {
    pub generation: String,
    pub state: State,
    /// RFC 3339 time the generation first appeared (its oldest object's creation), when known:
    /// not when its current state began, which the objects do not record.
    #[serde(rename = "firstSeen")]
    pub first_seen: Option<String>,
    pub detail: String,
}

/// What to do for one dataset this run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Decision {
    pub dataset: String,
    /// Oldest first.
    pub generations: Vec<GenerationStatus>,
    #[serde(skip)]
    pub render: Vec<GenerationPlan>,
    /// The dataset left the spec: `render` lists what the prune holds, nothing is rendered.
    #[serde(skip)]
    pub removed: bool,
    /// Why the dataset has no generation at all, when that is expected: a manual schedule
    /// waits for `--generation` (shown instead of an empty state).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    /// What the run did not do and why, one line each (a clock behind the newest generation).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Look-alikes: objects with the dataset's ownership labels that are not members of the
    /// rollout's ApplySet (`Kind/name`); ignored.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub foreign: Vec<String>,
    /// The shared source claim, when it is no longer rendered (its spec changed in a way the
    /// API server refuses in place) but a rendered producer still uses it: kept until then.
    #[serde(skip)]
    pub held_source: Option<String>,
}

impl Decision {
    /// Whether any generation of this dataset is failed.
    pub fn failed(&self) -> bool {
        self.generations.iter().any(|g| g.state == State::Failed)
    }
}

/// Inputs of a decision besides the observation.
#[derive(Clone, Debug)]
pub struct Options {
    /// `--generation`: start (or pin, when it exists and is ready) this generation; per
    /// dataset when `DATASET=ID` names it.
    pub generation: spec::GenerationIds,
    /// Today's UTC date, the generation a `daily` schedule wants.
    pub today: String,
    pub now: jiff::Timestamp,
    /// `--snapshot-timeout`: overrides every dataset's `snapshot.timeout` for this run.
    pub snapshot_timeout: Option<Duration>,
    /// Whether a due generation is started (a run) or only reported (`status`).
    pub start: bool,
    /// The rollout's name and namespace, for the cleanup commands `status` names.
    pub rollout: String,
    pub namespace: String,
}

/// Decides every dataset of a rollout, and every observed dataset that left the spec (it
/// retires in the normal order); the plan renders exactly the decided parts (the renderer
/// skips datasets the spec no longer has: their plans say what the prune must hold).
pub fn decide_all(
    rollout: &Rollout,
    observed: &BTreeMap<String, Vec<Observed>>,
    opts: &Options,
) -> (Vec<Decision>, Plan) {
    decide_all_with(rollout, observed, &BTreeMap::new(), opts)
}

/// [`decide_all`], knowing each dataset's shared source claim as it exists (live, or as Git
/// holds it), so that a change the API server refuses in place rolls forward
/// ([`roll_source_forward`]).
pub fn decide_all_with(
    rollout: &Rollout,
    observed: &BTreeMap<String, Vec<Observed>>,
    sources: &BTreeMap<String, Value>,
    opts: &Options,
) -> (Vec<Decision>, Plan) {
    let empty = Vec::new();
    let mut decisions: Vec<Decision> = rollout
        .spec
        .datasets
        .iter()
        .map(|d| decide(d, observed.get(&d.name).unwrap_or(&empty), opts))
        .collect();
    for (name, gens) in observed {
        if !rollout.spec.datasets.iter().any(|d| &d.name == name) {
            decisions.push(decide_removed(name, gens, opts));
        }
    }
    let fresh_source = roll_source_forward(rollout, observed, sources, &mut decisions);
    let plan = Plan {
        datasets: decisions
            .iter()
            .map(|d| (d.dataset.clone(), d.render.clone()))
            .collect(),
        fresh_source,
    };
    (decisions, plan)
}

/// What in the shared source claim `live` the API server would refuse to change to `d`'s
/// storage spec in place (a claim's spec is immutable but for a larger size): `None` when it
/// can be applied. A storage class the spec leaves out is the server's default: not a change.
pub fn source_change(d: &Dataset, live: &Value) -> Option<String> {
    let spec = &d.storage;
    let mut changes = Vec::new();
    let have = |p: &str| live.pointer(p);
    if let Some(want) = &spec.storage_class_name
        && have("/spec/storageClassName").and_then(Value::as_str) != Some(want.as_str())
    {
        changes.push(format!(
            "storageClassName {} -> {want}",
            have("/spec/storageClassName")
                .and_then(Value::as_str)
                .unwrap_or("(default)")
        ));
    }
    let modes: Vec<String> = spec.access_modes.iter().map(|m| format!("{m:?}")).collect();
    let live_modes: Vec<String> = have("/spec/accessModes")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    if !live_modes.is_empty() && sorted(live_modes.clone()) != sorted(modes.clone()) {
        changes.push(format!(
            "accessModes {} -> {}",
            live_modes.join(","),
            modes.join(",")
        ));
    }
    let mode = format!("{:?}", spec.volume_mode);
    if let Some(m) = have("/spec/volumeMode").and_then(Value::as_str)
        && m != mode
    {
        changes.push(format!("volumeMode {m} -> {mode}"));
    }
    let size = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .and_then(|q| spec::quantity::parse(q).ok())
    };
    if let (Some(have_size), Some(want)) = (
        size(have("/spec/resources/requests/storage")),
        spec::quantity::parse(&spec.size).ok(),
    ) && want < have_size
    {
        changes.push(format!(
            "size {} -> {} (claims never shrink)",
            have("/spec/resources/requests/storage")
                .and_then(Value::as_str)
                .unwrap_or_default(),
            spec.size
        ));
    }
    (!changes.is_empty()).then(|| changes.join(", "))
}

/// The storage of a StatefulSet's claim template (immutable once created).
fn claim_storage_of(sts: &Value) -> Option<crate::render::ClaimStorage> {
    let spec = sts.pointer("/spec/volumeClaimTemplates/0/spec")?;
    let text = |p: &str| spec.pointer(p).and_then(Value::as_str).map(String::from);
    Some(crate::render::ClaimStorage {
        storage_class_name: text("/storageClassName"),
        access_modes: spec
            .get("accessModes")?
            .as_array()?
            .iter()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect(),
        volume_mode: text("/volumeMode").unwrap_or_else(|| "Filesystem".to_string()),
        size: text("/resources/requests/storage")?,
    })
}

/// The claim a generation's producer filled: its snapshot's source, else its producer's volume.
fn source_of(o: &Observed) -> Option<String> {
    let from_snapshot = o
        .snapshot
        .as_ref()
        .and_then(|s| s.pointer("/spec/source/persistentVolumeClaimName"))
        .and_then(Value::as_str);
    let from_producer = || {
        o.producer
            .as_ref()?
            .pointer("/spec/volumes")?
            .as_array()?
            .iter()
            .find_map(|v| v.pointer("/persistentVolumeClaim/claimName"))
            .and_then(Value::as_str)
    };
    from_snapshot.or_else(from_producer).map(String::from)
}

/// Immutable source changes roll forward. The shared claim `<dataset>` is filled by every
/// generation's producer; when the spec changes one of its immutable fields, applying it would
/// fail on every run. Instead the shared claim stops being rendered, each new generation fills
/// a fresh claim `<dataset>-<generation>` (rendered while its producer is), the serving
/// generation keeps serving from its snapshot, and the old claim is kept while a rendered
/// producer still uses it, then pruned. Once it is gone the next generation uses `<dataset>`
/// again, created with the new spec. Generations keep the claim they started with (a
/// snapshot's source is immutable), and an existing StatefulSet keeps its claim template's
/// storage (immutable too). Returns the datasets whose shared claim is not rendered.
fn roll_source_forward(
    rollout: &Rollout,
    observed: &BTreeMap<String, Vec<Observed>>,
    sources: &BTreeMap<String, Value>,
    decisions: &mut [Decision],
) -> std::collections::BTreeSet<String> {
    let mut fresh = std::collections::BTreeSet::new();
    let empty = Vec::new();
    for d in &rollout.spec.datasets {
        let Some(decision) = decisions.iter_mut().find(|x| x.dataset == d.name) else {
            continue;
        };
        let gens = observed.get(&d.name).unwrap_or(&empty);
        let change = sources.get(&d.name).and_then(|live| source_change(d, live));
        for plan in &mut decision.render {
            let seen = gens.iter().find(|o| o.id == plan.id);
            if plan.statefulset {
                plan.claim_storage = seen
                    .and_then(|o| o.statefulset.as_ref())
                    .and_then(claim_storage_of);
            }
            let used = seen.and_then(source_of);
            plan.source = match used {
                Some(c) if c != d.name => Some(c),
                Some(_) => None,
                // A generation starting now.
                None if change.is_some() => Some(format!("{}-{}", d.name, plan.id)),
                None => None,
            };
        }
        if let Some(what) = change {
            fresh.insert(d.name.clone());
            let still_used = decision
                .render
                .iter()
                .any(|p| p.producer && p.source.is_none());
            decision.notes.push(format!(
                "dataset {}: source claim {} cannot change in place ({what}); new generations fill a fresh claim {}-<generation>{}",
                d.name,
                d.name,
                d.name,
                if still_used {
                    format!("; {} stays while a producer uses it", d.name)
                } else {
                    format!("; {} is removed", d.name)
                }
            ));
            if still_used {
                decision.held_source = Some(d.name.clone());
            }
        }
    }
    fresh
}

/// What the prune (push mode) or Git (offline) must keep of shared source claims that are no
/// longer rendered but still used (see [`roll_source_forward`]).
pub fn source_holds(
    decisions: &[Decision],
    namespace: &str,
) -> BTreeMap<crate::manifest::ObjectRef, String> {
    decisions
        .iter()
        .filter_map(|d| {
            let name = d.held_source.as_ref()?;
            Some((
                crate::manifest::ObjectRef::new(Kind::PersistentVolumeClaim, Some(namespace), name),
                format!(
                    "source claim of dataset {}: a producer still uses it; removed once none does",
                    d.dataset
                ),
            ))
        })
        .collect()
}

/// A dataset that left the spec: every generation retires, one step per run as usual
/// (StatefulSet, then its claims, then the producer, then the snapshot). Nothing of it can be
/// rendered any more, so `render` says what must be *held* (see [`removed_holds`]).
pub fn decide_removed(name: &str, observed: &[Observed], opts: &Options) -> Decision {
    let mut generations = Vec::new();
    let mut render = Vec::new();
    let mut gens: Vec<&Observed> = observed.iter().collect();
    gens.sort_by(|a, b| a.id.cmp(&b.id));
    for o in gens {
        let mut plan = GenerationPlan::none(&o.id);
        let (state, detail) = retire(
            o,
            &mut plan,
            "dataset removed from the spec",
            &cleanup_command(opts, name, &o.id),
        );
        if plan.producer || plan.snapshot {
            render.push(plan);
        }
        generations.push(GenerationStatus {
            generation: o.id.clone(),
            state,
            first_seen: o.first_seen().map(|t| t.to_string()),
            detail,
        });
    }
    Decision {
        dataset: name.to_string(),
        waiting: None,
        generations,
        render,
        removed: true,
        notes: Vec::new(),
        foreign: Vec::new(),
        held_source: None,
    }
}

/// What the prune must keep this run of datasets that left the spec, with why: per
/// [`decide_removed`], a generation's producer and snapshot while its StatefulSet or claims
/// exist (the snapshot also while the producer does); the dataset's Service while any of its
/// StatefulSets exists; its source PVC while any producer is held.
pub fn removed_holds(
    decisions: &[Decision],
    rollout: &str,
    objects: &[Value],
) -> BTreeMap<crate::manifest::ObjectRef, String> {
    let mut out = BTreeMap::new();
    for d in decisions.iter().filter(|d| d.removed) {
        let ours: Vec<&Value> = objects
            .iter()
            .filter(|v| {
                let l = manifest::labels_of(v);
                manifest::is_owned_by(&l, rollout)
                    && l.get(manifest::LABEL_DATASET) == Some(&d.dataset)
            })
            .collect();
        let any_sts = ours
            .iter()
            .any(|v| v.get("kind").and_then(Value::as_str) == Some("StatefulSet"));
        let any_producer_held = d.render.iter().any(|p| p.producer);
        for v in ours {
            let l = manifest::labels_of(v);
            let Some(kind) = v
                .get("kind")
                .and_then(Value::as_str)
                .and_then(Kind::from_kind)
            else {
                continue;
            };
            let component = l.get(manifest::LABEL_COMPONENT).map(String::as_str);
            let plan = l
                .get(manifest::LABEL_GENERATION)
                .and_then(|g| d.render.iter().find(|p| &p.id == g));
            let why = match (kind, component) {
                (Kind::Pod, Some("producer")) if plan.is_some_and(|p| p.producer) => {
                    "its StatefulSet or claims still exist"
                }
                (Kind::VolumeSnapshot, _) if plan.is_some_and(|p| p.snapshot) => {
                    "its StatefulSet, claims or producer still exist"
                }
                (Kind::Service, _) if any_sts => "a StatefulSet of the dataset still exists",
                (Kind::PersistentVolumeClaim, Some("source")) if any_producer_held => {
                    "a producer of the dataset is still held"
                }
                _ => continue,
            };
            let name = v
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let ns = v.pointer("/metadata/namespace").and_then(Value::as_str);
            out.insert(
                crate::manifest::ObjectRef::new(kind, ns, name),
                format!(
                    "dataset {} left the spec and retires in order: {why}",
                    d.dataset
                ),
            );
        }
    }
    out
}

/// Offline, what Git keeps this run of datasets that left the spec: while any StatefulSet of
/// such a dataset is in Git, everything else of it stays; the StatefulSets leave now and the
/// rest on the next run (nothing has a status offline to wait for).
pub fn removed_git_holds(
    rollout: &Rollout,
    name: &str,
    manifests: &[Value],
) -> BTreeMap<crate::manifest::ObjectRef, String> {
    let mut out = BTreeMap::new();
    let removed = |v: &Value| {
        let l = manifest::labels_of(v);
        if !manifest::is_owned_by(&l, name) {
            return None;
        }
        let d = l.get(manifest::LABEL_DATASET)?.clone();
        (!rollout.spec.datasets.iter().any(|x| x.name == d)).then_some(d)
    };
    let kind_of = |v: &Value| {
        v.get("kind")
            .and_then(Value::as_str)
            .and_then(Kind::from_kind)
    };
    let with_sts: std::collections::BTreeSet<String> = manifests
        .iter()
        .filter(|v| kind_of(v) == Some(Kind::StatefulSet))
        .filter_map(removed)
        .collect();
    for v in manifests {
        let (Some(d), Some(kind)) = (removed(v), kind_of(v)) else {
            continue;
        };
        if kind == Kind::StatefulSet || !with_sts.contains(&d) {
            continue;
        }
        let field = |p: &str| v.pointer(p).and_then(Value::as_str);
        out.insert(
            crate::manifest::ObjectRef::new(
                kind,
                field("/metadata/namespace"),
                field("/metadata/name").unwrap_or_default(),
            ),
            format!("dataset {d} left the spec: its StatefulSets leave Git first"),
        );
    }
    out
}

/// The raw condition of one observed generation, before its place among the others is known.
#[derive(Debug)]
enum Raw {
    Producing(String),
    Failed(String),
    Snapshotting(String),
    /// Snapshot ready; `restore` is its restoreSize.
    SnapshotReady {
        restore: Option<String>,
    },
    RollingOut {
        restore: Option<String>,
        detail: String,
    },
    Ready {
        restore: Option<String>,
    },
    /// Only leftovers (claims, or nothing).
    Leftover,
}

fn restore_size(snapshot: &Option<Value>) -> Option<String> {
    snapshot
        .as_ref()?
        .pointer("/status/restoreSize")
        .and_then(|v| match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
}

fn raw_state(d: &Dataset, o: &Observed, opts: &Options) -> Raw {
    let restore = restore_size(&o.snapshot);
    let timeout = opts
        .snapshot_timeout
        .unwrap_or_else(|| d.snapshot_timeout());
    if let Some(sts) = &o.statefulset {
        return match readiness(Kind::StatefulSet, sts) {
            Readiness::Ready => Raw::Ready { restore },
            Readiness::Pending(d) | Readiness::Failed(d) => Raw::RollingOut { restore, detail: d },
        };
    }
    if let Some(snap) = &o.snapshot {
        let state = match readiness(Kind::VolumeSnapshot, snap) {
            // The claim size depends on restoreSize, and a StatefulSet's claim template is
            // immutable: created at the spec size, it could not grow to a larger restoreSize
            // reported later. So a ready snapshot without one is waited for like a pending one.
            Readiness::Ready if restore.is_none() => Readiness::Pending(
                "ready to use but reports no restoreSize yet (the claim size depends on it)"
                    .to_string(),
            ),
            r => r,
        };
        return match state {
            Readiness::Ready => Raw::SnapshotReady { restore },
            Readiness::Pending(d) | Readiness::Failed(d) => {
                let name = snap
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("?");
                let waited = created(snap).map(|t| opts.now.duration_since(t));
                match waited {
                    Some(w) if w.as_secs() >= timeout.as_secs() as i64 => Raw::Failed(format!(
                        "snapshot {name} not ready after {}: {d}",
                        human(timeout)
                    )),
                    _ => Raw::Snapshotting(format!("snapshot {name} {d}")),
                }
            }
        };
    }
    if let Some(pod) = &o.producer {
        return match readiness(Kind::Pod, pod) {
            Readiness::Ready => Raw::Snapshotting("producer succeeded; taking the snapshot".into()),
            Readiness::Failed(r) => Raw::Failed(format!("producer failed: {r}")),
            Readiness::Pending(phase) => match crash_loop(pod, d.producer.max_restarts) {
                Some(why) => Raw::Failed(format!("producer failed: {why}")),
                None => Raw::Producing(format!("producer {}", producer_detail(pod, &phase))),
            },
        };
    }
    Raw::Leftover
}

/// A producer still Running (or Pending in back-off) whose container restarted more than
/// `max_restarts` times: under `restartPolicy: OnFailure` the phase never becomes Failed, so
/// the restarts are what say it will not finish. Names the count and the last termination.
fn crash_loop(pod: &Value, max_restarts: i64) -> Option<String> {
    let status = pod.pointer("/status/containerStatuses/0")?;
    let restarts = status.get("restartCount").and_then(Value::as_i64)?;
    if restarts <= max_restarts {
        return None;
    }
    let last = status.pointer("/lastState/terminated");
    let reason = last
        .and_then(|t| t.get("reason"))
        .and_then(Value::as_str)
        .unwrap_or("unknown");
    let code = last
        .and_then(|t| t.get("exitCode"))
        .and_then(Value::as_i64)
        .map(|c| format!(", exit code {c}"))
        .unwrap_or_default();
    Some(format!(
        "crash loop: {restarts} restarts, more than producer.maxRestarts {max_restarts} (last: {reason}{code})"
    ))
}

/// The pod phase plus restarts and the last termination reason, which say more than a phase
/// for a producer that keeps failing under `restartPolicy: OnFailure`.
fn producer_detail(pod: &Value, phase: &str) -> String {
    let status = pod
        .pointer("/status/containerStatuses/0")
        .cloned()
        .unwrap_or(Value::Null);
    let restarts = status
        .get("restartCount")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let last = status
        .pointer("/lastState/terminated/reason")
        .and_then(Value::as_str);
    match (restarts, last) {
        (0, _) => phase.to_string(),
        (n, Some(r)) => format!("{phase}, {n} restarts (last: {r})"),
        (n, None) => format!("{phase}, {n} restarts"),
    }
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// The claim size for a StatefulSet restoring from a snapshot: at least the snapshot's
/// `restoreSize` (a smaller request is rejected by the provisioner).
fn claim_size(d: &Dataset, restore: &Option<String>) -> Option<String> {
    let restore = restore.as_ref()?;
    let want = spec::quantity::parse(&d.storage.size).ok()?;
    let have = spec::quantity::parse(restore).ok()?;
    (have > want).then(|| restore.clone())
}

/// Decides one dataset.
pub fn decide(d: &Dataset, observed: &[Observed], opts: &Options) -> Decision {
    let mut gens: Vec<&Observed> = observed.iter().collect();
    if gens.iter().all(|o| is_date(&o.id)) {
        // Dated generations are ordered by their date, never by when their objects appeared:
        // a generation started by a run whose clock was behind is older, not newer.
        gens.sort_by(|a, b| a.id.cmp(&b.id));
    } else {
        gens.sort_by(|a, b| {
            a.first_seen()
                .cmp(&b.first_seen())
                .then_with(|| a.id.cmp(&b.id))
        });
    }
    let raws: Vec<Raw> = gens.iter().map(|o| raw_state(d, o, opts)).collect();

    // The generation `--generation`, the pin or the schedule asks for.
    let mut notes = Vec::new();
    let wanted = wanted(d, gens.iter().map(|o| o.id.as_str()), opts, &mut notes);
    // A pinned generation: `generations.pin` or `--generation` naming an existing one whose
    // snapshot is usable.
    let explicit = d.generations.pin.as_ref().or(opts.generation.get(&d.name));
    let pinned = explicit.and_then(|g| {
        gens.iter().position(|o| &o.id == g).filter(|&i| {
            matches!(
                raws[i],
                Raw::Ready { .. } | Raw::RollingOut { .. } | Raw::SnapshotReady { .. }
            )
        })
    });
    let newest_ready = raws.iter().rposition(|r| matches!(r, Raw::Ready { .. }));
    let serving = match pinned {
        Some(p) if matches!(raws[p], Raw::Ready { .. }) => Some(p),
        _ => newest_ready,
    };
    // The generation being introduced: newer than the serving one and not failed; with a pin,
    // the pinned one if it is not serving yet.
    let in_progress: Option<usize> = match pinned {
        Some(p) if Some(p) != serving => Some(p),
        Some(_) => None,
        None => (0..gens.len()).rev().find(|&i| {
            serving.is_none_or(|s| i > s)
                && !matches!(raws[i], Raw::Failed(_) | Raw::Leftover | Raw::Ready { .. })
        }),
    };

    let mut statuses = Vec::new();
    let mut render = Vec::new();
    let cleanup = |g: &str| cleanup_command(opts, &d.name, g);
    let mut kept_budget = d.generations.keep.saturating_sub(1) as usize;
    for (i, (o, raw)) in gens.iter().zip(&raws).enumerate().rev() {
        let first_seen = o.first_seen().map(|t| t.to_string());
        let mut plan = GenerationPlan::none(&o.id);
        let (state, detail) = if Some(i) == serving {
            let Raw::Ready { restore } = raw else {
                unreachable!()
            };
            plan = GenerationPlan::restoring(&o.id, o.producer.is_some());
            plan.claim_size = claim_size(d, restore);
            let sts = &o.statefulset;
            (
                State::Serving,
                sts.as_ref().map(replicas_detail).unwrap_or_default(),
            )
        } else if Some(i) == in_progress {
            match raw {
                Raw::Producing(detail) => {
                    plan.producer = true;
                    (State::Producing, detail.clone())
                }
                Raw::Snapshotting(detail) => {
                    plan.producer = true;
                    plan.snapshot = true;
                    (State::Snapshotting, detail.clone())
                }
                Raw::SnapshotReady { restore } => {
                    plan = GenerationPlan::restoring(&o.id, o.producer.is_some());
                    plan.claim_size = claim_size(d, restore);
                    (
                        State::RollingOut,
                        "snapshot ready; starting the StatefulSet".to_string(),
                    )
                }
                Raw::RollingOut { restore, detail } => {
                    plan = GenerationPlan::restoring(&o.id, o.producer.is_some());
                    plan.claim_size = claim_size(d, restore);
                    (State::RollingOut, detail.clone())
                }
                Raw::Ready { restore } => {
                    plan = GenerationPlan::restoring(&o.id, o.producer.is_some());
                    plan.claim_size = claim_size(d, restore);
                    (State::RollingOut, "ready; taking over".to_string())
                }
                Raw::Failed(_) | Raw::Leftover => unreachable!("never chosen as in progress"),
            }
        } else if serving.is_none_or(|s| i > s) {
            // Newer than serving and not the one being introduced: failed, or superseded.
            match raw {
                Raw::Failed(reason) => {
                    plan.producer = o.producer.is_some();
                    plan.snapshot = o.snapshot.is_some();
                    (State::Failed, reason.clone())
                }
                _ => retire(
                    o,
                    &mut plan,
                    "superseded by a newer generation",
                    &cleanup(&o.id),
                ),
            }
        } else {
            // Older than serving.
            let was_ready = matches!(
                raw,
                Raw::Ready { .. } | Raw::RollingOut { .. } | Raw::SnapshotReady { .. }
            );
            if was_ready && kept_budget > 0 && o.snapshot.is_some() {
                kept_budget -= 1;
                if o.statefulset.is_some() || o.claims > 0 {
                    plan.producer = o.producer.is_some();
                    plan.snapshot = true;
                    (State::Retiring, retiring_detail(o, true, &cleanup(&o.id)))
                } else {
                    plan.snapshot = true;
                    (State::Kept, "snapshot kept for rollback".to_string())
                }
            } else {
                retire(o, &mut plan, "", &cleanup(&o.id))
            }
        };
        if plan.producer || plan.snapshot || plan.statefulset {
            render.push(plan);
        }
        statuses.push(GenerationStatus {
            generation: o.id.clone(),
            state,
            first_seen,
            detail,
        });
    }

    // Start the wanted generation when it is new and nothing else is being introduced.
    if let Some(w) = wanted
        && !gens.iter().any(|o| o.id == w)
    {
        if let Some(p) = in_progress {
            statuses.push(GenerationStatus {
                generation: w.clone(),
                state: State::Waiting,
                first_seen: None,
                detail: format!("waits for generation {} to finish", gens[p].id),
            });
        } else if !opts.start {
            statuses.push(GenerationStatus {
                generation: w.clone(),
                state: State::Waiting,
                first_seen: None,
                detail: "due; the next reconcile starts it".to_string(),
            });
        } else {
            render.push(GenerationPlan {
                producer: true,
                ..GenerationPlan::none(&w)
            });
            statuses.push(GenerationStatus {
                generation: w.clone(),
                state: State::Producing,
                first_seen: None,
                detail: "producer created".to_string(),
            });
        }
    }
    statuses.sort_by_key(|s| {
        gens.iter()
            .position(|o| o.id == s.generation)
            .unwrap_or(usize::MAX)
    });
    render.sort_by_key(|p| gens.iter().position(|o| o.id == p.id).unwrap_or(usize::MAX));
    Decision {
        dataset: d.name.clone(),
        waiting: waiting(d, &statuses),
        generations: statuses,
        render,
        removed: false,
        notes,
        foreign: Vec::new(),
        held_source: None,
    }
}

/// Decides one dataset with no cluster access, from what Git holds. Without statuses nothing
/// can be waited for, so Git keeps the wanted generation in full, the newest previous
/// generation that had a StatefulSet in full too (it serves until Argo CD or Flux, applying
/// in sync-wave order, has brought the new one up), and the snapshots of older generations
/// within `keep`; the rest leaves Git, a StatefulSet one run before its snapshot.
pub fn decide_offline(d: &Dataset, in_git: &[Observed], opts: &Options) -> Decision {
    let mut ids: Vec<&Observed> = in_git.iter().collect();
    ids.sort_by(|a, b| a.id.cmp(&b.id));
    let mut notes = Vec::new();
    let wanted = wanted(d, ids.iter().map(|o| o.id.as_str()), opts, &mut notes)
        .or_else(|| ids.last().map(|o| o.id.clone()));
    let mut render = Vec::new();
    let mut generations = Vec::new();
    let previous = ids
        .iter()
        .rev()
        .find(|o| Some(&o.id) != wanted.as_ref() && o.statefulset.is_some())
        .map(|o| o.id.clone());
    let mut kept_budget = d.generations.keep.saturating_sub(1) as usize;
    for o in ids.iter().rev() {
        if Some(&o.id) == wanted.as_ref() {
            continue;
        }
        let (state, detail) = if Some(&o.id) == previous.as_ref() {
            render.push(GenerationPlan::full(&o.id));
            (
                State::Serving,
                "kept in Git until the new generation is applied".to_string(),
            )
        } else if kept_budget > 0 && o.snapshot.is_some() {
            kept_budget -= 1;
            render.push(GenerationPlan {
                snapshot: true,
                ..GenerationPlan::none(&o.id)
            });
            (State::Kept, "snapshot kept for rollback".to_string())
        } else if o.statefulset.is_some() && o.snapshot.is_some() {
            // Never in the same commit as its StatefulSet: the snapshot leaves Git one run
            // later, so a controller pruning both cannot delete it while the claims restored
            // from it still exist.
            render.push(GenerationPlan {
                snapshot: true,
                ..GenerationPlan::none(&o.id)
            });
            (
                State::Retiring,
                "StatefulSet removed from Git; the snapshot leaves on the next run".to_string(),
            )
        } else {
            (State::Retiring, "removed from Git".to_string())
        };
        generations.push(GenerationStatus {
            generation: o.id.clone(),
            state,
            first_seen: None,
            detail,
        });
    }
    if let Some(w) = wanted {
        render.push(GenerationPlan::full(&w));
        generations.push(GenerationStatus {
            generation: w,
            state: State::RollingOut,
            first_seen: None,
            detail: "in Git; Argo CD or Flux applies it in sync-wave order".to_string(),
        });
    }
    generations.reverse();
    generations.sort_by(|a, b| a.generation.cmp(&b.generation));
    render.sort_by(|a, b| a.id.cmp(&b.id));
    Decision {
        dataset: d.name.clone(),
        waiting: waiting(d, &generations),
        generations,
        render,
        removed: false,
        notes,
        foreign: Vec::new(),
        held_source: None,
    }
}

/// What a dataset without any generation waits for: a manual one, for `--generation`.
fn waiting(d: &Dataset, generations: &[GenerationStatus]) -> Option<String> {
    (generations.is_empty() && d.generations.schedule == Schedule::Manual)
        .then(|| "manual: waiting for --generation".to_string())
}

/// Whether a generation id is a date (`YYYY-MM-DD`): dated generations order by date.
pub fn is_date(id: &str) -> bool {
    id.len() == 10 && id.parse::<jiff::civil::Date>().is_ok()
}

/// The newest dated generation among `ids`.
fn newest_date<'a>(ids: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    ids.filter(|id| is_date(id)).max()
}

/// The generation a dataset asks for: its pin, else `--generation`, else the schedule's
/// (today on a daily schedule). Generations only move forward: when the run's clock is behind
/// the newest dated generation that exists, the schedule asks for nothing and the run says so
/// in `notes` (an older generation would otherwise be started and, once ready, serve in place
/// of the newer one). Rollback is explicit: a pin.
fn wanted<'a>(
    d: &Dataset,
    ids: impl Iterator<Item = &'a str>,
    opts: &Options,
    notes: &mut Vec<String>,
) -> Option<String> {
    if let Some(g) = d.generations.pin.as_ref().or(opts.generation.get(&d.name)) {
        return Some(g.clone());
    }
    match d.generations.schedule {
        Schedule::Manual => None,
        Schedule::Daily => match newest_date(ids) {
            Some(newest) if newest > opts.today.as_str() => {
                notes.push(format!(
                    "dataset {}: the clock says {}, behind its newest generation {newest}; not starting an older generation (generations only move forward)",
                    d.name, opts.today
                ));
                None
            }
            _ => Some(opts.today.clone()),
        },
    }
}

/// Retirement steps, one per run: the StatefulSet goes first (not rendered); the snapshot and
/// producer stay while the StatefulSet or its PVCs exist; then the producer goes; then the
/// snapshot.
fn retire(o: &Observed, plan: &mut GenerationPlan, why: &str, cleanup: &str) -> (State, String) {
    if o.statefulset.is_some() || o.claims > 0 {
        plan.producer = o.producer.is_some();
        plan.snapshot = o.snapshot.is_some();
    } else if o.producer.is_some() {
        plan.snapshot = o.snapshot.is_some();
    }
    let mut detail = retiring_detail(o, false, cleanup);
    if !why.is_empty() {
        detail = format!("{why}; {detail}");
    }
    (State::Retiring, detail)
}

fn retiring_detail(o: &Observed, keep_snapshot: bool, cleanup: &str) -> String {
    let snap = if keep_snapshot { "; snapshot kept" } else { "" };
    if o.statefulset.is_some() {
        format!("removing StatefulSet{snap}")
    } else if o.claims > 0 {
        // Push mode's prune deletes them by label; in pull mode before Kubernetes 1.32 (or
        // with whenDeleted: Retain) nothing does, and the read-only Role cannot.
        format!(
            "waiting for {} PVC(s) to be deleted{snap}; in pull mode without claim retention (Kubernetes before 1.32, or whenDeleted: Retain) delete them: {cleanup}",
            o.claims
        )
    } else if o.producer.is_some() {
        "removing producer".to_string()
    } else {
        "removing snapshot".to_string()
    }
}

/// The command that deletes one generation's consumer PVCs by label.
pub fn cleanup_command(opts: &Options, dataset: &str, generation: &str) -> String {
    format!(
        "kubectl delete pvc -n {} -l '{}'",
        opts.namespace,
        crate::apply::consumer_volume_selector(&opts.rollout, dataset, generation)
    )
}

fn replicas_detail(sts: &Value) -> String {
    let want = sts
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let ready = sts
        .pointer("/status/readyReplicas")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    format!("{ready}/{want} replicas ready")
}

/// Why a step of the rollout could not be planned.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// Reading the rollout's objects from the cluster failed.
    #[error("reading the rollout's objects from the cluster")]
    Live(#[source] Box<crate::apply::ApplyError>),
    /// Rendering the decided parts failed.
    #[error("rendering the decided generations")]
    Render(#[source] crate::render::RenderError),
    /// `generations.pin` or `--generation` names a generation that cannot serve again: its
    /// snapshot is gone (rolling back to it would run a new producer under the old id).
    #[error(
        "dataset {dataset}: {via} names generation {generation}, which is not kept (no snapshot of it exists); {kept}"
    )]
    NotKept {
        dataset: String,
        generation: String,
        via: &'static str,
        kept: String,
    },
}

/// Refuses a pin (spec or `--generation`) of a generation that is not kept. The flag may also
/// start a new generation: it is refused only for an id that existed (seen without snapshot
/// or producer) or a date older than the newest generation that exists.
pub fn check_pins(
    rollout: &Rollout,
    observed: &BTreeMap<String, Vec<Observed>>,
    opts: &Options,
) -> Result<(), StepError> {
    let empty = Vec::new();
    for d in &rollout.spec.datasets {
        let gens = observed.get(&d.name).unwrap_or(&empty);
        let (via, g) = match (&d.generations.pin, opts.generation.get(&d.name)) {
            (Some(p), _) => ("generations.pin", p),
            (None, Some(f)) => ("--generation", f),
            (None, None) => continue,
        };
        let seen = gens.iter().find(|o| &o.id == g);
        let usable = seen.is_some_and(|o| o.snapshot.is_some() || o.producer.is_some());
        let refused = match (via, seen) {
            _ if usable => false,
            ("generations.pin", _) => true,
            (_, Some(_)) => true,
            (_, None) => {
                // A new dated generation older than the newest that exists (a clock behind):
                // generations only move forward. Any other new id starts a generation.
                is_date(g)
                    && newest_date(gens.iter().map(|o| o.id.as_str()))
                        .is_some_and(|newest| g.as_str() < newest)
            }
        };
        if refused {
            let mut kept: Vec<&str> = gens
                .iter()
                .filter(|o| o.snapshot.is_some())
                .map(|o| o.id.as_str())
                .collect();
            kept.sort();
            return Err(StepError::NotKept {
                dataset: d.name.clone(),
                generation: g.clone(),
                via,
                kept: if kept.is_empty() {
                    "no generation is kept".to_string()
                } else {
                    format!(
                        "kept generations: {} (raise generations.keep to keep more for rollback)",
                        kept.join(", ")
                    )
                },
            });
        }
    }
    Ok(())
}

/// One planned step: what was seen, what was decided, and the objects to commit or apply.
#[derive(Debug)]
pub struct Step {
    pub observed: BTreeMap<String, Vec<Observed>>,
    pub decisions: Vec<Decision>,
    pub set: crate::render::RenderedSet,
    /// What the cluster held (push mode applies on top of it instead of reading it again).
    pub live: Option<crate::apply::LiveState>,
}

/// Plans a step from the cluster: one LIST per kind, a decision per dataset, the render.
pub async fn step_from_cluster(
    manager: &crate::apply::Manager,
    rollout: &Rollout,
    renderer: &crate::render::Renderer,
    opts: &Options,
) -> Result<Step, StepError> {
    let live = manager
        .live(&std::collections::BTreeSet::new())
        .await
        .map_err(|e| StepError::Live(Box::new(e)))?;
    let values: Vec<Value> = live.objects.values().cloned().collect();
    let Observation {
        datasets: observed,
        mut foreign,
    } = observe_members(&rollout.metadata.name, &manager.applyset().id, &values);
    check_pins(rollout, &observed, opts)?;
    let sources = shared_sources(rollout, &values, Some(&manager.applyset().id));
    let (mut decisions, plan) = decide_all_with(rollout, &observed, &sources, opts);
    for d in &mut decisions {
        d.foreign = foreign.remove(&d.dataset).unwrap_or_default();
    }
    if let Some(d) = decisions.first_mut() {
        // Look-alikes naming no dataset of the spec are reported with the first dataset.
        d.foreign.extend(foreign.into_values().flatten());
    }
    let set = renderer.render(rollout, &plan).map_err(StepError::Render)?;
    Ok(Step {
        observed,
        decisions,
        set,
        live: Some(live),
    })
}

/// Plans a step without a cluster, from the manifests Git holds for the rollout.
pub fn step_from_git(
    manifests: &[Value],
    rollout: &Rollout,
    renderer: &crate::render::Renderer,
    opts: &Options,
) -> Result<Step, StepError> {
    let observed = observe(&rollout.metadata.name, manifests);
    // Offline, Git is what exists: a pin of a generation Git does not keep is refused exactly
    // as online (it would commit a new producer under the old id).
    check_pins(rollout, &observed, opts)?;
    let empty = Vec::new();
    let mut decisions: Vec<Decision> = rollout
        .spec
        .datasets
        .iter()
        .map(|d| decide_offline(d, observed.get(&d.name).unwrap_or(&empty), opts))
        .collect();
    let sources = shared_sources(rollout, manifests, None);
    let fresh_source = roll_source_forward(rollout, &observed, &sources, &mut decisions);
    let plan = Plan {
        datasets: decisions
            .iter()
            .map(|d| (d.dataset.clone(), d.render.clone()))
            .collect(),
        fresh_source,
    };
    let set = renderer.render(rollout, &plan).map_err(StepError::Render)?;
    Ok(Step {
        observed,
        decisions,
        set,
        live: None,
    })
}

/// Each dataset's shared source claim `<dataset>` among `objects` (members only, when
/// `applyset_id` is given: live objects).
fn shared_sources(
    rollout: &Rollout,
    objects: &[Value],
    applyset_id: Option<&str>,
) -> BTreeMap<String, Value> {
    let name = &rollout.metadata.name;
    objects
        .iter()
        .filter(|v| v.get("kind").and_then(Value::as_str) == Some("PersistentVolumeClaim"))
        .filter(|v| {
            let l = manifest::labels_of(v);
            l.get(manifest::LABEL_COMPONENT).map(String::as_str) == Some("source")
                && match applyset_id {
                    Some(id) => manifest::is_member(&l, name, id),
                    None => manifest::is_owned_by(&l, name),
                }
        })
        .filter_map(|v| {
            let claim = v.pointer("/metadata/name").and_then(Value::as_str)?;
            rollout
                .spec
                .datasets
                .iter()
                .any(|d| d.name == claim)
                .then(|| (claim.to_string(), v.clone()))
        })
        .collect()
}

/// A broken invariant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("dataset {dataset}: {what}")]
pub struct InvariantViolation {
    pub dataset: String,
    pub what: String,
}

/// Checks the invariant of what exists, in the cluster or in Git (where nothing has a
/// status): a snapshot is present whenever a StatefulSet or claim of its generation is.
pub fn check_state(dataset: &str, observed: &[Observed]) -> Result<(), InvariantViolation> {
    let fail = |what: String| InvariantViolation {
        dataset: dataset.to_string(),
        what,
    };
    for o in observed {
        if o.snapshot.is_none() && (o.statefulset.is_some() || o.claims > 0) {
            return Err(fail(format!(
                "snapshot of {} is gone while its StatefulSet or {} claim(s) exist",
                o.id, o.claims
            )));
        }
    }
    Ok(())
}

/// Every invariant of one observation, written once: [`check_state`] and at most one
/// StatefulSet not ready (one generation introduced at a time) for every observed dataset, and [`check_invariants`] for the decision made from it (datasets that left the
/// spec included). The lifecycle tests call it after every run and controller step.
pub fn check_all(
    rollout: &Rollout,
    observed: &BTreeMap<String, Vec<Observed>>,
    opts: &Options,
) -> Result<(), InvariantViolation> {
    for (name, gens) in observed {
        check_state(name, gens)?;
        let unready: Vec<&str> = gens
            .iter()
            .filter(|o| {
                o.statefulset
                    .as_ref()
                    .is_some_and(|s| !readiness(Kind::StatefulSet, s).is_ready())
            })
            .map(|o| o.id.as_str())
            .collect();
        if unready.len() > 1 {
            return Err(InvariantViolation {
                dataset: name.clone(),
                what: format!(
                    "{} StatefulSets are being introduced at once: {}",
                    unready.len(),
                    unready.join(", ")
                ),
            });
        }
    }
    let (decisions, _) = decide_all(rollout, observed, opts);
    for d in &decisions {
        let gens = observed.get(&d.dataset).map(Vec::as_slice).unwrap_or(&[]);
        check_invariants(d, gens)?;
    }
    Ok(())
}

/// Checks the rollout invariants of a decision against what it was decided from. The lifecycle
/// tests call it after every run.
pub fn check_invariants(
    decision: &Decision,
    observed: &[Observed],
) -> Result<(), InvariantViolation> {
    let fail = |what: String| InvariantViolation {
        dataset: decision.dataset.clone(),
        what,
    };
    let introducing = decision
        .generations
        .iter()
        .filter(|g| {
            matches!(
                g.state,
                State::Producing | State::Snapshotting | State::RollingOut
            )
        })
        .count();
    if introducing > 1 {
        return Err(fail(format!(
            "{introducing} generations are being introduced at once"
        )));
    }
    let rendered = |id: &str| decision.render.iter().find(|p| p.id == id);
    // The newest serving generation always keeps its snapshot and StatefulSet (its producer
    // too while it exists; a rolled-back generation has none).
    if let Some(s) = decision
        .generations
        .iter()
        .rev()
        .find(|g| g.state == State::Serving)
    {
        match rendered(&s.generation) {
            Some(p) if p.snapshot && p.statefulset => {}
            _ => {
                return Err(fail(format!(
                    "serving generation {} is not fully rendered",
                    s.generation
                )));
            }
        }
    }
    // A ready generation that served before must not lose its StatefulSet unless a newer one
    // serves.
    let serving_exists = decision
        .generations
        .iter()
        .any(|g| g.state == State::Serving);
    for o in observed {
        let ready_sts = o
            .statefulset
            .as_ref()
            .is_some_and(|s| readiness(Kind::StatefulSet, s).is_ready());
        // (A dataset that left the spec retires on purpose: its StatefulSets go first.)
        if ready_sts
            && !serving_exists
            && !decision.removed
            && rendered(&o.id).is_none_or(|p| !p.statefulset)
        {
            return Err(fail(format!(
                "StatefulSet of {} is dropped while no generation serves",
                o.id
            )));
        }
        // A snapshot is never dropped while a StatefulSet or PVC of its generation exists.
        if o.snapshot.is_some()
            && (o.statefulset.is_some() || o.claims > 0)
            && rendered(&o.id).is_none_or(|p| !p.snapshot)
        {
            return Err(fail(format!(
                "snapshot of {} is dropped while its StatefulSet or PVCs exist",
                o.id
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dataset(keep: u32) -> Dataset {
        let text = format!(
            "apiVersion: snaproll.dev/v1alpha1\nkind: DatasetRollout\nmetadata: {{name: demo}}\nspec:\n  snapshotClass: {{name: c, driver: d}}\n  datasets:\n    - name: data\n      storage: {{size: 10Gi}}\n      producer: {{image: busybox}}\n      generations: {{keep: {keep}}}\n      consumer: {{name: consumer, replicas: 3, image: busybox}}\n"
        );
        spec::parse_str("t.yaml", &text)
            .unwrap()
            .rollout
            .spec
            .datasets[0]
            .clone()
    }

    fn opts(today: &str) -> Options {
        Options {
            generation: Default::default(),
            today: today.to_string(),
            now: "2021-07-16T12:00:00Z".parse().unwrap(),
            snapshot_timeout: Some(DEFAULT_SNAPSHOT_TIMEOUT),
            start: true,
            rollout: "demo".into(),
            namespace: "default".into(),
        }
    }

    fn meta(ts: &str) -> Value {
        json!({"creationTimestamp": ts, "name": "x"})
    }

    fn pod(phase: &str, ts: &str) -> Value {
        json!({"metadata": meta(ts), "status": {"phase": phase}})
    }

    fn snap(ready: bool, ts: &str) -> Value {
        json!({"metadata": meta(ts), "status": {"readyToUse": ready, "restoreSize": "12Gi"}})
    }

    fn sts(ready: i64, ts: &str) -> Value {
        json!({"metadata": {"creationTimestamp": ts, "generation": 1}, "spec": {"replicas": 3},
               "status": {"observedGeneration": 1, "readyReplicas": ready, "updatedReplicas": 3}})
    }

    fn serving(id: &str, ts: &str) -> Observed {
        Observed {
            id: id.into(),
            producer: Some(pod("Succeeded", ts)),
            snapshot: Some(snap(true, ts)),
            statefulset: Some(sts(3, ts)),
            claims: 3,
        }
    }

    #[test]
    fn a_new_day_starts_a_producer_and_keeps_the_old_generation_serving() {
        let d = dataset(1);
        let old = serving("2021-07-15", "2021-07-15T01:00:00Z");
        let dec = decide(&d, std::slice::from_ref(&old), &opts("2021-07-16"));
        assert_eq!(dec.generations[0].state, State::Serving);
        assert_eq!(dec.generations[1].state, State::Producing);
        assert!(
            dec.render
                .iter()
                .any(|p| p.id == "2021-07-16" && p.producer && !p.snapshot)
        );
        check_invariants(&dec, &[old]).unwrap();
    }

    #[test]
    fn snapshot_waits_for_the_producer_and_statefulset_for_the_snapshot() {
        let d = dataset(1);
        let old = serving("2021-07-15", "2021-07-15T01:00:00Z");
        let mut new = Observed {
            id: "2021-07-16".into(),
            producer: Some(pod("Running", "2021-07-16T01:00:00Z")),
            ..Observed::default()
        };
        let dec = decide(&d, &[old.clone(), new.clone()], &opts("2021-07-16"));
        let p = dec.render.iter().find(|p| p.id == "2021-07-16").unwrap();
        assert!(p.producer && !p.snapshot && !p.statefulset);
        new.producer = Some(pod("Succeeded", "2021-07-16T01:00:00Z"));
        let dec = decide(&d, &[old.clone(), new.clone()], &opts("2021-07-16"));
        let p = dec.render.iter().find(|p| p.id == "2021-07-16").unwrap();
        assert!(p.snapshot && !p.statefulset);
        new.snapshot = Some(snap(true, "2021-07-16T02:00:00Z"));
        let dec = decide(&d, &[old.clone(), new.clone()], &opts("2021-07-16"));
        let p = dec.render.iter().find(|p| p.id == "2021-07-16").unwrap();
        assert!(p.statefulset);
        assert_eq!(
            p.claim_size.as_deref(),
            Some("12Gi"),
            "restoreSize above 10Gi wins"
        );
        check_invariants(&dec, &[old, new]).unwrap();
    }

    #[test]
    fn old_generation_retires_in_order_once_the_new_one_serves() {
        let d = dataset(1);
        let mut old = serving("2021-07-15", "2021-07-15T01:00:00Z");
        let new = serving("2021-07-16", "2021-07-16T01:00:00Z");
        let step = |old: &Observed| {
            let dec = decide(&d, &[old.clone(), new.clone()], &opts("2021-07-16"));
            check_invariants(&dec, &[old.clone(), new.clone()]).unwrap();
            dec.render.iter().find(|p| p.id == "2021-07-15").cloned()
        };
        let p = step(&old).unwrap();
        assert!(
            !p.statefulset && p.snapshot && p.producer,
            "StatefulSet goes first"
        );
        old.statefulset = None;
        let p = step(&old).unwrap();
        assert!(p.snapshot, "snapshot stays while PVCs exist");
        old.claims = 0;
        let p = step(&old).unwrap();
        assert!(!p.producer && p.snapshot, "then the producer");
        old.producer = None;
        assert!(step(&old).is_none(), "then the snapshot");
    }

    #[test]
    fn failed_producer_keeps_the_previous_generation_serving() {
        let d = dataset(1);
        let old = serving("2021-07-15", "2021-07-15T01:00:00Z");
        let bad = Observed {
            id: "2021-07-16".into(),
            producer: Some(json!({"metadata": meta("2021-07-16T01:00:00Z"),
                "status": {"phase": "Failed", "message": "DeadlineExceeded"}})),
            ..Observed::default()
        };
        let dec = decide(&d, &[old.clone(), bad.clone()], &opts("2021-07-16"));
        assert_eq!(dec.generations[0].state, State::Serving);
        assert_eq!(dec.generations[1].state, State::Failed);
        assert_eq!(
            dec.generations[1].detail,
            "producer failed: DeadlineExceeded"
        );
        assert!(dec.failed());
        check_invariants(&dec, &[old, bad]).unwrap();
    }

    #[test]
    fn snapshot_error_is_reported_but_not_final_until_the_timeout() {
        let d = dataset(1);
        let mut s = snap(false, "2021-07-16T10:00:00Z");
        s["status"]["error"] = json!({"message": "quota exceeded"});
        let g = Observed {
            id: "2021-07-16".into(),
            producer: Some(pod("Succeeded", "2021-07-16T09:00:00Z")),
            snapshot: Some(s),
            ..Observed::default()
        };
        let dec = decide(&d, std::slice::from_ref(&g), &opts("2021-07-16"));
        assert_eq!(dec.generations[0].state, State::Snapshotting);
        assert!(dec.generations[0].detail.contains("quota exceeded"));
        let mut late = opts("2021-07-16");
        late.now = "2021-07-16T17:00:00Z".parse().unwrap();
        let dec = decide(&d, &[g], &late);
        assert_eq!(dec.generations[0].state, State::Failed);
        assert!(
            dec.generations[0]
                .detail
                .starts_with("snapshot x not ready after 6h")
        );
    }

    #[test]
    fn keep_two_keeps_the_previous_snapshot_and_pinning_rolls_back() {
        let d = dataset(2);
        let mut old = serving("2021-07-15", "2021-07-15T01:00:00Z");
        old.statefulset = None;
        old.claims = 0;
        let new = serving("2021-07-16", "2021-07-16T01:00:00Z");
        let dec = decide(&d, &[old.clone(), new.clone()], &opts("2021-07-16"));
        assert_eq!(dec.generations[0].state, State::Kept);
        let mut pin = opts("2021-07-16");
        pin.generation = spec::GenerationIds::all("2021-07-15");
        let dec = decide(&d, &[old.clone(), new.clone()], &pin);
        let p = dec.render.iter().find(|p| p.id == "2021-07-15").unwrap();
        assert!(p.statefulset, "the pinned generation rolls out again");
        assert_eq!(dec.generations[0].state, State::RollingOut);
        assert_eq!(
            dec.generations[1].state,
            State::Serving,
            "until it is ready"
        );
        check_invariants(&dec, &[old, new]).unwrap();
    }

    #[test]
    fn at_most_one_generation_is_introduced() {
        let d = dataset(1);
        let busy = Observed {
            id: "2021-07-15".into(),
            producer: Some(pod("Running", "2021-07-15T01:00:00Z")),
            ..Observed::default()
        };
        let dec = decide(&d, std::slice::from_ref(&busy), &opts("2021-07-16"));
        assert_eq!(dec.generations[1].state, State::Waiting);
        assert!(!dec.render.iter().any(|p| p.id == "2021-07-16"));
        check_invariants(&dec, &[busy]).unwrap();
    }
}
