//! Retirement: what leaves, in which order, and what the prune or Git must hold meanwhile.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::GenerationPlan;
use super::{Decision, GenerationStatus, Observed, Options, State};
use crate::manifest::{self, Kind, ObjectRef};
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
    manifests: &[std::sync::Arc<Value>],
) -> BTreeMap<crate::manifest::ObjectRef, String> {
    let mut out = BTreeMap::new();
    let in_spec = super::spec_names(rollout);
    let removed = |v: &Value| {
        let l = manifest::Labels::of(v);
        if !manifest::is_owned_by(&l, name) {
            return None;
        }
        let d = l.get(manifest::LABEL_DATASET)?;
        (!in_spec.contains(d)).then(|| d.to_string())
    };
    let kind_of = |v: &Value| {
        v.get("kind")
            .and_then(Value::as_str)
            .and_then(Kind::from_kind)
    };
    let with_sts: std::collections::BTreeSet<String> = manifests
        .iter()
        .filter(|v| kind_of(v) == Some(Kind::StatefulSet))
        .filter_map(|v| removed(v))
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
    if o.statefulset.is_some() || o.claims > 0 || o.verify_claim {
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
    } else if o.verify_claim || o.verify.is_some() {
        "removing the verify Job and its claim".to_string()
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

/// The (dataset, generation) labels of an object.
pub fn generation_key(v: &Value) -> Option<(String, String)> {
    let l = manifest::labels_of(v);
    Some((
        l.get(manifest::LABEL_DATASET)?.clone(),
        l.get(manifest::LABEL_GENERATION)?.clone(),
    ))
}

/// Why a claim whose StatefulSet is gone is not deleted by snaproll (`None`: it is). The
/// cluster removes it when its StatefulSet's `persistentVolumeClaimRetentionPolicy` says
/// `whenDeleted: Delete` and the server honours it: the live StatefulSet deleted this run
/// kept the field (servers that do not know it drop it), or the claim carries the
/// StatefulSet owner reference the controller sets for the garbage collector. A claim left
/// a run later without that reference is deleted: nothing else will.
pub fn claim_left_to_cluster(
    claim: &Value,
    live: &BTreeMap<ObjectRef, Value>,
    deleted_statefulsets: &BTreeSet<ObjectRef>,
) -> Option<String> {
    if claim.pointer("/metadata/deletionTimestamp").is_some() {
        return Some("already being deleted (a finalizer holds it); its snapshot waits".into());
    }
    let gc = "deleted with its StatefulSet by the cluster (persistentVolumeClaimRetentionPolicy whenDeleted: Delete); its snapshot waits";
    let owned_by_sts = claim
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|o| {
            o.iter()
                .any(|r| r.get("kind").and_then(Value::as_str) == Some("StatefulSet"))
        });
    let key = generation_key(claim);
    let policy_deletes = deleted_statefulsets.iter().any(|sid| {
        live.get(sid)
            .is_some_and(|s| generation_key(s) == key && retention_deletes_claims(s))
    });
    (owned_by_sts || policy_deletes).then(|| gc.to_string())
}

/// Why a pruned snapshot must stay (`None`: it may go): a surviving StatefulSet restores
/// from it, or a surviving claim of its generation does (a StatefulSet recreates lost claims
/// from the snapshot, and a claim being restored needs it).
pub fn snapshot_hold(
    snap: &ObjectRef,
    live: &BTreeMap<ObjectRef, Value>,
    deleted_statefulsets: &BTreeSet<ObjectRef>,
    claims: &[(ObjectRef, Value)],
    deleted_claims: &BTreeSet<ObjectRef>,
) -> Option<String> {
    if let Some((sid, _)) = live
        .iter()
        .filter(|(sid, _)| sid.kind == Kind::StatefulSet && !deleted_statefulsets.contains(*sid))
        .find(|(_, s)| snapshot_of(s).as_deref() == Some(snap.name.as_str()))
    {
        return Some(format!("still the data source of {sid}"));
    }
    let key = live.get(snap).and_then(generation_key);
    let remaining: Vec<&ObjectRef> = claims
        .iter()
        .filter(|(id, _)| !deleted_claims.contains(id) && id.namespace == snap.namespace)
        .filter(|(_, c)| {
            let source = ["/spec/dataSource", "/spec/dataSourceRef"].iter().any(|p| {
                c.pointer(p).is_some_and(|ds| {
                    ds.get("kind").and_then(Value::as_str) == Some("VolumeSnapshot")
                        && ds.get("name").and_then(Value::as_str) == Some(snap.name.as_str())
                })
            });
            source || (key.is_some() && generation_key(c) == key)
        })
        .map(|(id, _)| id)
        .collect();
    let first = remaining.first()?;
    Some(match remaining.len() {
        1 => format!("{first} restored from it still exists; deleted once it is gone"),
        n => format!(
            "{first} and {} more claims restored from it still exist; deleted once they are gone",
            n - 1
        ),
    })
}

/// Whether a live StatefulSet's retention policy already deletes its PVCs with it.
fn retention_deletes_claims(sts: &Value) -> bool {
    sts.pointer("/spec/persistentVolumeClaimRetentionPolicy/whenDeleted")
        .and_then(Value::as_str)
        == Some("Delete")
}

/// The VolumeSnapshot a StatefulSet's claims restore from.
fn snapshot_of(sts: &Value) -> Option<String> {
    sts.pointer("/spec/volumeClaimTemplates")
        .and_then(Value::as_array)?
        .iter()
        .find_map(|t| {
            let ds = t.pointer("/spec/dataSource")?;
            (ds.get("kind").and_then(Value::as_str) == Some("VolumeSnapshot"))
                .then(|| ds.get("name").and_then(Value::as_str).map(str::to_string))
                .flatten()
        })
}

/// Why prune must keep a ready StatefulSet that is no longer rendered (`None`: it may go): it
/// is its dataset's last ready generation and no rendered generation of that dataset
/// (`ready_rendered`) is ready yet. A dataset that left the spec (`removed`) holds nothing:
/// its StatefulSets retire first.
pub fn last_ready_hold(
    sts: &Value,
    ready_rendered: &BTreeSet<String>,
    removed: &BTreeSet<String>,
) -> Option<String> {
    let labels = manifest::labels_of(sts);
    let d = labels.get(manifest::LABEL_DATASET)?;
    (super::readiness::readiness(Kind::StatefulSet, sts).is_ready()
        && !ready_rendered.contains(d)
        && !removed.contains(d))
    .then(|| {
        format!("last ready generation of dataset {d}; kept until a rendered generation is ready")
    })
}
