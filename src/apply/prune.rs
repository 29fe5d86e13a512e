//! Pruning: what to delete ([`plan_prune`], pure), the deletes in reverse dependency order, and
//! narrowing the inventory afterwards. The delete-time holds are the retirement policy's, so
//! they live with it in `rollout::retire` ([`snapshot_hold`], [`claim_left_to_cluster`]).

use std::collections::BTreeSet;

use futures::StreamExt;
use kube::api::{DeleteParams, Preconditions, PropagationPolicy};
use serde_json::Value;

use super::{
    Action, ApiCause, ApplyError, CONCURRENCY, Change, ChangeSet, LiveState, Manager, PARENT_FORCE,
    PruneOptions, Verb, applyset, readiness,
};
use crate::manifest::{self, FIELD_MANAGER, Kind, ObjectRef};
use crate::render::RenderedSet;
use crate::rollout::{claim_left_to_cluster, generation_key, last_ready_hold, snapshot_hold};

impl Manager {
    /// Prunes owned ApplySet members that `set` no longer renders, with every guard, and the
    /// consumer PVCs of StatefulSets that are gone (found by label on every prune, so a failed
    /// delete is retried; see docs/apply.md for those left to the retention policy), then
    /// narrows the inventory. On the live state [`Manager::apply`] (`prune: true`) or
    /// [`Manager::diff`] (dry run) already read.
    pub(super) async fn prune_into(
        &self,
        set: &RenderedSet,
        live: &LiveState,
        opts: &PruneOptions,
        changes: &mut ChangeSet,
    ) -> Result<(), ApplyError> {
        let plan = plan_prune(&self.rollout, &self.set.id, set, live, opts);
        for (id, reason) in &plan.skipped {
            changes.push(Change::new(id, Action::Skipped, Some(reason.clone())));
        }
        // Consumer PVCs are not ApplySet members (the StatefulSet controller makes them), so
        // they are found by label on every prune, not only in the run that deletes their
        // StatefulSet: a delete that failed, or a run that stopped in between, is retried.
        let claims = if set.objects.is_empty() {
            Vec::new()
        } else {
            self.consumer_claims(live).await?
        };
        // Claims a snapshot must outlive: the consumer claims, and the claims verify Jobs
        // mount (ApplySet members, deleted in the phase before snapshots).
        let restored: Vec<(ObjectRef, Value)> = claims
            .iter()
            .cloned()
            .chain(
                live.of_kind(Kind::PersistentVolumeClaim)
                    .filter(|(_, v)| is_verify(v))
                    .map(|(id, v)| (id.clone(), v.clone())),
            )
            .collect();
        let rendered_sts: BTreeSet<(String, String)> = set
            .objects
            .iter()
            .filter(|o| o.id.kind == Kind::StatefulSet)
            .filter_map(|o| Some((o.dataset.clone()?, o.generation.clone()?)))
            .collect();
        let claim_of_gone_sts = |gone: &BTreeSet<ObjectRef>, v: &Value| {
            let Some(key) = generation_key(v) else {
                return false;
            };
            !rendered_sts.contains(&key)
                && !live
                    .of_kind(Kind::StatefulSet)
                    .any(|(sid, s)| !gone.contains(sid) && generation_key(s) == Some(key.clone()))
        };
        let nothing_to_delete = plan.deletes.is_empty()
            && plan.skipped.is_empty()
            && !claims
                .iter()
                .any(|(_, v)| claim_of_gone_sts(&BTreeSet::new(), v));
        if nothing_to_delete {
            // Nothing to delete: still narrow a parent that records kinds no longer present.
            return self
                .narrow(set, live, &BTreeSet::new(), opts.dry_run, changes)
                .await;
        }
        let mut first_error: Option<ApplyError> = None;
        let mut survivors: BTreeSet<ObjectRef> =
            plan.skipped.iter().map(|(id, _)| id.clone()).collect();
        let mut deleted_statefulsets: BTreeSet<ObjectRef> = BTreeSet::new();
        let mut deleted_claims: BTreeSet<ObjectRef> = BTreeSet::new();
        // Phases in delete order: StatefulSets, their PVCs, verify Jobs and their claims,
        // snapshots, then the rest.
        let mut phases: Vec<Vec<ObjectRef>> = vec![Vec::new(); 5];
        for id in &plan.deletes {
            let phase = match id.kind {
                Kind::StatefulSet => 0,
                Kind::VolumeSnapshot => 3,
                Kind::Job => 2,
                Kind::PersistentVolumeClaim if live.get(id).is_some_and(is_verify) => 2,
                _ => 4,
            };
            phases[phase].push(id.clone());
        }
        for (n, phase) in phases.into_iter().enumerate() {
            if n == 1 {
                // Claims whose StatefulSet is gone (deleted now or in an earlier run), one at
                // a time so they go in a stable order.
                for (id, v) in &claims {
                    if !claim_of_gone_sts(&deleted_statefulsets, v) {
                        continue;
                    }
                    if let Some(reason) = opts.keep.get(id) {
                        changes.push(Change::new(id, Action::Skipped, Some(reason.clone())));
                        continue;
                    }
                    if let Some(reason) =
                        claim_left_to_cluster(v, &live.objects, &deleted_statefulsets)
                    {
                        changes.push(Change::new(id, Action::Skipped, Some(reason)));
                        continue;
                    }
                    let (d, g) = generation_key(v).unwrap_or_default();
                    let reason = format!(
                        "volume of generation {g} of dataset {d}, whose StatefulSet is gone"
                    );
                    if opts.dry_run {
                        changes.push(Change::new(id, Action::Deleted, Some(reason)));
                        deleted_claims.insert(id.clone());
                        continue;
                    }
                    let uid = v
                        .pointer("/metadata/uid")
                        .and_then(Value::as_str)
                        .map(str::to_string);
                    match self.delete(id, uid).await {
                        Ok(()) => {
                            changes.push(Change::new(id, Action::Deleted, Some(reason)));
                            deleted_claims.insert(id.clone());
                        }
                        Err(source) => {
                            let e = ApplyError::Delete {
                                object: id.to_string(),
                                source,
                            };
                            changes.push(Change::new(id, Action::Failed, Some(e.to_string())));
                            first_error.get_or_insert(e);
                        }
                    }
                }
                continue;
            }
            let jobs = phase.into_iter().map(|id| {
                let keep_reason = (id.kind == Kind::VolumeSnapshot)
                    .then(|| {
                        snapshot_hold(
                            &id,
                            &live.objects,
                            &deleted_statefulsets,
                            &restored,
                            &deleted_claims,
                        )
                    })
                    .flatten();
                async move {
                    if let Some(reason) = keep_reason {
                        return (id, Deletion::Kept(reason));
                    }
                    if opts.dry_run {
                        return (id, Deletion::Deleted);
                    }
                    let uid = live
                        .get(&id)
                        .and_then(|v| v.pointer("/metadata/uid"))
                        .and_then(Value::as_str)
                        .map(str::to_string);
                    let r = self.delete(&id, uid).await;
                    (
                        id,
                        match r {
                            Ok(()) => Deletion::Deleted,
                            Err(c) => Deletion::Failed(c),
                        },
                    )
                }
            });
            let mut results: Vec<(ObjectRef, Deletion)> = futures::stream::iter(jobs)
                .buffer_unordered(CONCURRENCY)
                .collect()
                .await;
            results.sort_by(|a, b| a.0.cmp(&b.0));
            for (id, r) in results {
                match r {
                    Deletion::Deleted => {
                        if id.kind == Kind::StatefulSet {
                            deleted_statefulsets.insert(id.clone());
                        }
                        if id.kind == Kind::PersistentVolumeClaim {
                            deleted_claims.insert(id.clone());
                        }
                        changes.push(Change::new(
                            &id,
                            Action::Deleted,
                            Some("no longer rendered".into()),
                        ));
                    }
                    Deletion::Kept(reason) => {
                        survivors.insert(id.clone());
                        changes.push(Change::new(&id, Action::Skipped, Some(reason)));
                    }
                    Deletion::Failed(source) => {
                        survivors.insert(id.clone());
                        let e = ApplyError::Delete {
                            object: id.to_string(),
                            source,
                        };
                        changes.push(Change::new(&id, Action::Failed, Some(e.to_string())));
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
        self.narrow(set, live, &survivors, opts.dry_run, changes)
            .await?;
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Narrows the parent to the kinds still present: rendered ones and members that
    /// survived the prune (kept by a guard or failed to delete, so the next run finds them).
    async fn narrow(
        &self,
        set: &RenderedSet,
        live: &LiveState,
        survivors: &BTreeSet<ObjectRef>,
        dry_run: bool,
        changes: &mut ChangeSet,
    ) -> Result<(), ApplyError> {
        if set.objects.is_empty() {
            return Ok(());
        }
        let mut kinds: BTreeSet<String> =
            set.objects.iter().map(|o| o.id.kind.group_kind()).collect();
        kinds.extend(survivors.iter().map(|id| id.kind.group_kind()));
        // Cluster-scoped members are never pruned, so their kind stays recorded.
        if let Some(p) = &live.parent {
            let recorded = applyset::annotation_set(p, applyset::ANNOTATION_GROUP_KINDS);
            kinds.extend(
                Kind::ALL
                    .into_iter()
                    .filter(|k| !k.namespaced())
                    .map(Kind::group_kind)
                    .filter(|gk| recorded.contains(gk)),
            );
        }
        let mut namespaces = Self::namespaces_of(set);
        namespaces.extend(survivors.iter().filter_map(|id| id.namespace.clone()));
        let Some(p) = self.parent_if_changed(live.parent.as_ref(), &kinds, &namespaces) else {
            return Ok(());
        };
        let action = if live.parent.is_some() {
            Action::Configured
        } else {
            Action::Created
        };
        if !dry_run {
            let api = self.parent_api();
            self.patch(&api, &self.set.name, &p, PARENT_FORCE, false)
                .await
                .map_err(|source| ApplyError::Parent {
                    object: self.set.display(),
                    source,
                })?;
        }
        changes.inventory = Some(self.inventory_change(action, Some(&p)));
        Ok(())
    }

    async fn delete(&self, id: &ObjectRef, uid: Option<String>) -> Result<(), ApiCause> {
        let api = self.api(id.kind, id.namespace.as_deref());
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            // Delete exactly the object the guards looked at, not a namesake created since.
            preconditions: uid.map(|uid| Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match self.call(Verb::Delete, || api.delete(&id.name, &dp)).await {
            Ok(_) => Ok(()),
            Err(c) if c.is_not_found() => Ok(()),
            Err(c) => Err(c),
        }
    }
}

/// What became of one prune candidate.
enum Deletion {
    Deleted,
    /// Kept by a guard checked at delete time, with the reason.
    Kept(String),
    Failed(ApiCause),
}

/// What a prune would do before any request: deletions in delete order and guarded objects.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PrunePlan {
    /// Objects to delete, StatefulSets first, then snapshots, then the rest in reverse
    /// dependency order.
    pub deletes: Vec<ObjectRef>,
    /// Candidates a guard keeps, with the guard's reason.
    pub skipped: Vec<(ObjectRef, String)>,
}

/// Whether snaproll's field manager applied `v`: an `Apply` entry of manager `snaproll` in its
/// `managedFields`. An object without `managedFields` (servers that omit them) passes; the
/// StatefulSet controller's claims are never prune candidates (they have no `part-of`).
fn applied_by_snaproll(v: &Value) -> bool {
    match v
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
    {
        None => true,
        Some(entries) => entries.iter().any(|m| {
            m.get("manager").and_then(Value::as_str) == Some(FIELD_MANAGER)
                && m.get("operation").and_then(Value::as_str) == Some("Apply")
        }),
    }
}

/// Decides what to prune. Candidates are live objects carrying this ApplySet's `part-of`
/// label that `set` does not render (namespaced kinds only: the engine reads cluster-scoped
/// VolumeSnapshotClasses by name and never prunes them, since old snapshots may still need
/// their class to be deleted). Guards: an empty `set` prunes nothing; an object
/// without the rollout's ownership labels is never deleted; a dataset's last ready
/// StatefulSet is kept while no rendered StatefulSet of that dataset is ready; objects in
/// `opts.keep` are kept.
pub fn plan_prune(
    rollout: &str,
    applyset_id: &str,
    set: &RenderedSet,
    live: &LiveState,
    opts: &PruneOptions,
) -> PrunePlan {
    let rendered: BTreeSet<&ObjectRef> = set.objects.iter().map(|o| &o.id).collect();
    let mut plan = PrunePlan::default();
    let candidates: Vec<(&ObjectRef, &Value)> = live
        .objects
        .iter()
        .filter(|(id, v)| {
            let labels = manifest::labels_of(v);
            // Claims the StatefulSet controller made carry the membership label from their
            // claim template; they go with their StatefulSet (see `consumer_claims`).
            id.kind.namespaced()
                && !rendered.contains(id)
                && labels.get(applyset::LABEL_PART_OF).map(String::as_str) == Some(applyset_id)
                && labels.get(manifest::LABEL_COMPONENT).map(String::as_str)
                    != Some("consumer-volume")
        })
        .collect();
    if set.objects.is_empty() {
        for (id, _) in candidates {
            plan.skipped.push((
                id.clone(),
                "the rendered set is empty; prune never runs on an empty set".into(),
            ));
        }
        return plan;
    }
    // Datasets with a rendered StatefulSet that is already ready.
    let ready_rendered: BTreeSet<String> = set
        .objects
        .iter()
        .filter(|o| o.id.kind == Kind::StatefulSet)
        .filter(|o| {
            live.get(&o.id)
                .is_some_and(|v| readiness(Kind::StatefulSet, v).is_ready())
        })
        .filter_map(|o| o.dataset.clone())
        .collect();
    let mut deletes = Vec::new();
    for (id, v) in candidates {
        let labels = manifest::labels_of(v);
        if !manifest::is_owned_by(&labels, rollout) {
            plan.skipped.push((
                id.clone(),
                format!("lacks the ownership labels of rollout {rollout}; never deleted"),
            ));
            continue;
        }
        if let Some(reason) = opts.keep.get(id) {
            plan.skipped.push((id.clone(), reason.clone()));
            continue;
        }
        if !applied_by_snaproll(v) {
            plan.skipped.push((
                id.clone(),
                format!("never applied by field manager {FIELD_MANAGER}; never deleted"),
            ));
            continue;
        }
        if v.pointer("/metadata/deletionTimestamp").is_some() {
            // A finalizer holds it: deleting it again every run would be a write per run.
            plan.skipped.push((
                id.clone(),
                "already being deleted (a finalizer holds it)".into(),
            ));
            continue;
        }
        if opts.keep_last_ready
            && id.kind == Kind::StatefulSet
            && let Some(reason) = last_ready_hold(v, &ready_rendered, &opts.removed_datasets)
        {
            plan.skipped.push((id.clone(), reason));
            continue;
        }
        deletes.push(id.clone());
    }
    // Delete order: StatefulSets, snapshots, then the rest in reverse dependency order.
    let rank = |k: Kind| match k {
        Kind::StatefulSet => 0,
        Kind::VolumeSnapshot => 1,
        other => 10 + (Kind::ALL.len() - other.order()),
    };
    deletes.sort_by(|a, b| rank(a.kind).cmp(&rank(b.kind)).then(a.cmp(b)));
    plan.deletes = deletes;
    plan
}

/// Whether a live object is the claim a verify Job mounts (`consumer.verify`).
fn is_verify(v: &Value) -> bool {
    crate::manifest::labels_of(v)
        .get(crate::manifest::LABEL_COMPONENT)
        .is_some_and(|c| c == "verify-volume")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_never_deletes_again_an_object_already_being_deleted() {
        let labels = serde_json::json!({"applyset.kubernetes.io/part-of": "set",
            "app.kubernetes.io/managed-by": "snaproll", "snaproll.dev/rollout": "demo"});
        let svc = ObjectRef::new(Kind::Service, Some("default"), "consumer");
        let set = RenderedSet {
            objects: vec![manifest::Object {
                id: svc.clone(),
                dataset: None,
                generation: None,
                value: serde_json::json!({}).into(),
                yaml: String::new(),
            }],
        };
        let mut live = LiveState::default();
        let pod = |name: &str, terminating: bool| {
            let mut v = serde_json::json!({"metadata": {"name": name, "labels": labels}});
            if terminating {
                v["metadata"]["deletionTimestamp"] = "2021-07-16T05:00:00Z".into();
                v["metadata"]["finalizers"] = serde_json::json!(["example.com/hold"]);
            }
            v
        };
        let stuck = ObjectRef::new(Kind::Pod, Some("default"), "stuck");
        let old = ObjectRef::new(Kind::Pod, Some("default"), "old");
        live.objects.insert(stuck.clone(), pod("stuck", true));
        live.objects.insert(old.clone(), pod("old", false));
        let plan = plan_prune("demo", "set", &set, &live, &PruneOptions::default());
        assert_eq!(plan.deletes, vec![old]);
        assert_eq!(
            plan.skipped,
            vec![(
                stuck,
                "already being deleted (a finalizer holds it)".to_string()
            )]
        );
    }
}
