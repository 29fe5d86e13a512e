//! Retirement: what leaves, in which order, and what the prune or Git must hold meanwhile.

use std::collections::BTreeMap;

use serde_json::Value;

use super::GenerationPlan;
use super::{Decision, GenerationStatus, Observed, Options, State};
use crate::manifest::{self, Kind};
use crate::spec::Rollout;

/// What the prune (push mode) or Git (offline) must keep of shared source claims that are no
/// longer rendered but still used (see `roll_source_forward`).
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
        plan.copies = o.frozen_copies();
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
        service: None,
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

/// Retirement steps, one per run: the StatefulSet goes first (not rendered); the snapshot and
/// producer stay while the StatefulSet or its PVCs exist; then the producer goes; then the
/// snapshot.
pub(crate) fn retire(
    o: &Observed,
    plan: &mut GenerationPlan,
    why: &str,
    cleanup: &str,
) -> (State, String) {
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

pub(crate) fn retiring_detail(o: &Observed, keep_snapshot: bool, cleanup: &str) -> String {
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
        manifest::consumer_volume_selector(&opts.rollout, dataset, generation)
    )
}
