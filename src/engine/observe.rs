//! Observation: one LIST per kind (or what Git holds) grouped into datasets and generations,
//! then a decision and the render of the decided parts.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use crate::manifest::{self, Kind};
use crate::rollout::{
    Decision, Observed, Options, PinError, Plan, Shared, check_pins, decide_all_offline,
    decide_all_with,
};
use crate::spec::Rollout;

/// Groups objects by dataset and generation from their labels. For what Git holds: the
/// rollout's folder is its inventory, so every object there with the ownership labels counts.
/// Live objects go through [`observe_members`] instead.
pub fn observe(rollout: &str, objects: &[Arc<Value>]) -> BTreeMap<String, Vec<Observed>> {
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
pub fn observe_members(rollout: &str, applyset_id: &str, objects: &[Arc<Value>]) -> Observation {
    let mut foreign: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let members = objects.iter().filter(|v| {
        let labels = manifest::Labels::of(v);
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
                    .unwrap_or_default()
                    .to_string(),
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
    objects: impl Iterator<Item = &'a Arc<Value>>,
) -> BTreeMap<String, Vec<Observed>> {
    // Keyed by the labels' text, borrowed: thousands of objects, a few per generation.
    let mut by: BTreeMap<(&str, &str), Observed> = BTreeMap::new();
    for v in objects {
        let labels = manifest::Labels::of(v);
        if !manifest::is_owned_by(&labels, rollout) {
            continue;
        }
        let (Some(dataset), Some(generation)) = (
            labels.get(manifest::LABEL_DATASET),
            labels.get(manifest::LABEL_GENERATION),
        ) else {
            continue;
        };
        let entry = by.entry((dataset, generation)).or_insert_with(|| Observed {
            id: generation.to_string(),
            ..Observed::default()
        });
        let kind = v
            .get("kind")
            .and_then(Value::as_str)
            .and_then(Kind::from_kind);
        let component = labels.get(manifest::LABEL_COMPONENT);
        match (kind, component) {
            (Some(Kind::Pod), Some("producer")) => entry.producer = Some(v.clone()),
            (Some(Kind::VolumeSnapshot), _) => entry.snapshots.push(v.clone()),
            (Some(Kind::StatefulSet), _) => entry.statefulset = Some(v.clone()),
            (Some(Kind::PersistentVolumeClaim), Some("consumer-volume")) => entry.claims += 1,
            (Some(Kind::Job), Some("verify")) => entry.verify = Some(v.clone()),
            (Some(Kind::PersistentVolumeClaim), Some("verify-volume")) => entry.verify_claim = true,
            _ => {}
        }
    }
    let mut out: BTreeMap<String, Vec<Observed>> = BTreeMap::new();
    for ((dataset, _), mut o) in by {
        // Copies by name; `snapshot` is the first (any snapshot of the generation exists).
        let name = |v: &Arc<Value>| {
            v.pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        o.snapshots.sort_by_key(name);
        o.snapshot = o.snapshots.first().cloned();
        out.entry(dataset.to_string()).or_default().push(o);
    }
    out
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
    /// `generations.pin` or `--generation` names a generation that is not kept.
    #[error(transparent)]
    Pin(#[from] PinError),
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
    let mut values: Vec<Value> = live.objects.values().cloned().collect();
    verify_messages(manager.client(), &mut values).await;
    let values: Vec<Arc<Value>> = values.into_iter().map(Arc::new).collect();
    let Observation {
        datasets: observed,
        mut foreign,
    } = observe_members(&rollout.metadata.name, &manager.applyset().id, &values);
    check_pins(rollout, &observed, opts)?;
    let shared = shared_objects(rollout, &values, Some(&manager.applyset().id));
    let (mut decisions, plan) = decide_all_with(rollout, &observed, &shared, opts);
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

/// Puts on each failed verify Job (as observed, never applied) its Pod's termination message,
/// which says why the check failed where the Job's condition only says that it did: one LIST of
/// the Job's Pods, only for a failed Job (pruned in the run that records its outcome). A
/// failed LIST leaves the condition's message alone.
async fn verify_messages(client: &kube::Client, values: &mut [Value]) {
    use crate::rollout::readiness::{POD_MESSAGE, Readiness, readiness};
    for v in values.iter_mut() {
        let is_verify = v.get("kind").and_then(Value::as_str) == Some("Job")
            && manifest::labels_of(v)
                .get(manifest::LABEL_COMPONENT)
                .is_some_and(|c| c == "verify");
        if !is_verify || !matches!(readiness(Kind::Job, v), Readiness::Failed(_)) {
            continue;
        }
        let field = |p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_string);
        let (Some(name), Some(ns)) = (field("/metadata/name"), field("/metadata/namespace")) else {
            continue;
        };
        let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
            kube::Api::namespaced(client.clone(), &ns);
        let lp = kube::api::ListParams::default()
            .labels(&format!("batch.kubernetes.io/job-name={name}"));
        let Ok(list) = pods.list(&lp).await else {
            continue;
        };
        let message = list.items.iter().find_map(|p| {
            p.status
                .as_ref()?
                .container_statuses
                .as_ref()?
                .iter()
                .find_map(|c| c.state.as_ref()?.terminated.as_ref()?.message.clone())
                .filter(|m| !m.trim().is_empty())
        });
        if let (Some(m), Some(status)) = (message, v.get_mut("status"))
            && let Some(status) = status.as_object_mut()
        {
            let key = POD_MESSAGE.trim_start_matches("/status/");
            status.insert(key.to_string(), Value::String(m));
        }
    }
}

/// Plans a step without a cluster, from the manifests Git holds for the rollout.
pub fn step_from_git(
    manifests: &[Arc<Value>],
    rollout: &Rollout,
    renderer: &crate::render::Renderer,
    opts: &Options,
) -> Result<Step, StepError> {
    let (observed, decisions, plan) = decide_from_git(manifests, rollout, opts)?;
    let set = renderer.render(rollout, &plan).map_err(StepError::Render)?;
    Ok(Step {
        observed,
        decisions,
        set,
        live: None,
    })
}

/// What was seen in Git (by dataset), the decisions, and the plan to render.
pub(super) type Decided = (BTreeMap<String, Vec<Observed>>, Vec<Decision>, Plan);

/// What an offline step decides from the manifests Git holds, before rendering: the render is
/// a function of the spec and this plan alone, so two equal plans render the same objects.
pub(super) fn decide_from_git(
    manifests: &[Arc<Value>],
    rollout: &Rollout,
    opts: &Options,
) -> Result<Decided, StepError> {
    let observed = observe(&rollout.metadata.name, manifests);
    // Offline, Git is what exists: a pin of a generation Git does not keep is refused exactly
    // as online (it would commit a new producer under the old id).
    check_pins(rollout, &observed, opts)?;
    let shared = shared_objects(rollout, manifests, None);
    let (decisions, plan) = decide_all_offline(rollout, &observed, &shared, opts);
    Ok((observed, decisions, plan))
}

/// Each dataset's shared source claim `<dataset>` and the generation its Service selects,
/// among `objects` (members only, when `applyset_id` is given: live objects).
fn shared_objects(rollout: &Rollout, objects: &[Arc<Value>], applyset_id: Option<&str>) -> Shared {
    let name = &rollout.metadata.name;
    let mut shared = Shared::default();
    // By name: a scan of the spec's datasets per object grew with the square of their number.
    let datasets: std::collections::HashMap<&str, &crate::spec::Dataset> = rollout
        .spec
        .datasets
        .iter()
        .map(|d| (d.name.as_str(), d))
        .collect();
    for v in objects {
        let l = manifest::Labels::of(v);
        let owned = match applyset_id {
            Some(id) => manifest::is_member(&l, name, id),
            None => manifest::is_owned_by(&l, name),
        };
        let (Some(dataset), true) = (l.get(manifest::LABEL_DATASET), owned) else {
            continue;
        };
        let Some(d) = datasets.get(dataset) else {
            continue;
        };
        let object = v.pointer("/metadata/name").and_then(Value::as_str);
        match v.get("kind").and_then(Value::as_str) {
            Some("PersistentVolumeClaim")
                if l.get(manifest::LABEL_COMPONENT) == Some("source")
                    && object == Some(d.name.as_str()) =>
            {
                shared.sources.insert(d.name.clone(), v.clone());
            }
            Some("Service") if object == Some(d.consumer.name.as_str()) => {
                if let Some(g) = v
                    .pointer("/spec/selector")
                    .and_then(|s| s.get(manifest::LABEL_GENERATION))
                    .and_then(Value::as_str)
                {
                    shared.selects.insert(d.name.clone(), g.to_string());
                }
            }
            _ => {}
        }
    }
    shared
}
