//! The apply pipeline: plan against the live state, dry-run every change, refuse foreign
//! objects, widen the inventory, apply kind by kind, then prune.

use std::collections::{BTreeMap, BTreeSet};

use futures::StreamExt;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::Value;

use super::{
    Action, ApiCause, ApplyError, ApplyOptions, CONCURRENCY, Change, ChangeSet, Failed, LiveState,
    Manager, PARENT_FORCE, PruneOptions, Verb, applyset, compare,
};
use crate::manifest::{self, FIELD_MANAGER, Kind, ObjectRef};
use crate::render::RenderedSet;

/// How one desired object compares with the cluster.
#[derive(Clone, Debug)]
pub(super) enum PlanState {
    Create,
    Update(String),
    Unchanged,
}

/// One object a run may write, as the shared dry-run and apply steps see it.
pub(super) struct Write<'a> {
    pub(super) api: Api<DynamicObject>,
    pub(super) name: &'a str,
    pub(super) desired: &'a Value,
    /// New or changed: only these are sent.
    pub(super) changed: bool,
}

pub(super) struct Planned<'a> {
    pub(super) obj: &'a manifest::Object,
    pub(super) desired: Value,
    pub(super) state: PlanState,
}

impl Manager {
    pub(super) fn plan<'a>(&self, set: &'a RenderedSet, live: &LiveState) -> Vec<Planned<'a>> {
        set.objects
            .iter()
            .map(|obj| {
                let desired = compare::desired_for_apply(&obj.value, &self.set.id);
                let state = match live.get(&obj.id) {
                    None => PlanState::Create,
                    Some(l) => match compare::change_reason(&desired, l) {
                        Some(r) => PlanState::Update(r),
                        None => PlanState::Unchanged,
                    },
                };
                Planned {
                    obj,
                    desired,
                    state,
                }
            })
            .collect()
    }

    /// The parent to write before applying (`None`: unchanged): the union of what it
    /// records and what `set` needs, so a crash mid-run never leaves a member unrecorded.
    pub(super) fn widened_parent(&self, set: &RenderedSet, live: &LiveState) -> Option<Value> {
        let mut kinds: BTreeSet<String> =
            set.objects.iter().map(|o| o.id.kind.group_kind()).collect();
        let mut namespaces = Self::namespaces_of(set);
        if let Some(p) = &live.parent {
            kinds.extend(applyset::annotation_set(
                p,
                applyset::ANNOTATION_GROUP_KINDS,
            ));
            namespaces.extend(applyset::annotation_set(p, applyset::ANNOTATION_NAMESPACES));
        }
        self.parent_if_changed(live.parent.as_ref(), &kinds, &namespaces)
    }

    pub(super) fn parent_if_changed(
        &self,
        current: Option<&Value>,
        kinds: &BTreeSet<String>,
        namespaces: &BTreeSet<String>,
    ) -> Option<Value> {
        let desired = self.set.parent(&self.rollout, kinds, namespaces);
        match current {
            Some(cur) => {
                let same_meta = |key: &str| {
                    desired
                        .pointer(&format!("/metadata/{key}"))
                        .and_then(Value::as_object)
                        .is_some_and(|want| {
                            let have = cur.pointer(&format!("/metadata/{key}"));
                            want.iter()
                                .all(|(k, v)| have.and_then(|h| h.get(k)) == Some(v))
                        })
                };
                let extra_ns_gone = cur
                    .pointer("/metadata/annotations")
                    .and_then(|a| a.get(applyset::ANNOTATION_NAMESPACES))
                    .is_some()
                    && desired
                        .pointer("/metadata/annotations")
                        .and_then(|a| a.get(applyset::ANNOTATION_NAMESPACES))
                        .is_none();
                (!(same_meta("labels") && same_meta("annotations")) || extra_ns_gone)
                    .then_some(desired)
            }
            None => Some(desired),
        }
    }

    pub(super) async fn patch(
        &self,
        api: &Api<DynamicObject>,
        name: &str,
        body: &Value,
        force: bool,
        dry_run: bool,
    ) -> Result<Value, ApiCause> {
        let mut pp = PatchParams::apply(FIELD_MANAGER);
        if force {
            pp = pp.force();
        }
        if dry_run {
            pp = pp.dry_run();
        }
        let verb = if dry_run { Verb::DryRun } else { Verb::Apply };
        let patch = Patch::Apply(body);
        let obj = self.call(verb, || api.patch(name, &pp, &patch)).await?;
        Ok(serde_json::to_value(&obj).unwrap_or(Value::Null))
    }

    /// Turns a failed apply or dry-run into the most specific error.
    pub(super) fn classify(
        &self,
        id: &ObjectRef,
        desired: &Value,
        live: Option<&Value>,
        cause: ApiCause,
        dry_run: bool,
    ) -> ApplyError {
        let object = id.to_string();
        if cause.is_immutable() && !cause.is_apply_conflict() {
            let mut fields = compare::differing_fields(id.kind, desired, live);
            if fields.is_empty() {
                fields = cause.fields.clone();
            }
            if fields.is_empty() {
                fields.push("(see the server's message)".to_string());
            }
            return ApplyError::Immutable {
                object,
                fields,
                source: cause,
            };
        }
        write_error(object, cause, dry_run)
    }

    /// Dry-runs every changed object (parent included), concurrently; the first failure in
    /// apply order is returned. Returns the server's answer per object (for diffs).
    async fn dry_run_all(
        &self,
        plan: &[Planned<'_>],
        live: &LiveState,
        parent: Option<&Value>,
        force: bool,
    ) -> Result<BTreeMap<usize, Value>, (Option<ObjectRef>, ApplyError)> {
        if let Some(p) = parent {
            let api = self.parent_api();
            self.patch(&api, &self.set.name, p, PARENT_FORCE, true)
                .await
                .map_err(|source| {
                    (
                        None,
                        ApplyError::Parent {
                            object: self.set.display(),
                            source,
                        },
                    )
                })?;
        }
        self.dry_run_writes(&self.writes(plan), force)
            .await
            .map_err(|(i, cause)| {
                let p = &plan[i];
                // Creating an object the labelled LIST did not see conflicts only with an
                // object someone else made under the same name: never adopted.
                let err = if matches!(p.state, PlanState::Create) && cause.is_apply_conflict() {
                    ApplyError::Foreign {
                        object: p.obj.id.to_string(),
                        reason: format!(
                            "made by {} without the rollout's labels",
                            cause.conflicting_managers().join(", ")
                        ),
                    }
                } else {
                    self.classify(&p.obj.id, &p.desired, live.get(&p.obj.id), cause, true)
                };
                (Some(p.obj.id.clone()), err)
            })
    }

    /// The writes of a plan: every object, changed or not, in plan order.
    pub(super) fn writes<'a>(&self, plan: &'a [Planned<'_>]) -> Vec<Write<'a>> {
        plan.iter()
            .map(|p| Write {
                api: self.api(p.obj.id.kind, p.obj.id.namespace.as_deref()),
                name: &p.obj.id.name,
                desired: &p.desired,
                changed: !matches!(p.state, PlanState::Unchanged),
            })
            .collect()
    }

    /// Server-side dry-runs of every changed write, [`CONCURRENCY`] at a time: the server's
    /// answer per index (for diffs and the foreign check), or the first failure in order.
    /// The one dry-run step of both pipelines (a rollout's [`Manager::apply`] and
    /// [`Manager::apply_named`]).
    pub(super) async fn dry_run_writes(
        &self,
        writes: &[Write<'_>],
        force: bool,
    ) -> Result<BTreeMap<usize, Value>, (usize, ApiCause)> {
        let mut answers = BTreeMap::new();
        for (i, r) in self.dry_run_each(writes, force).await {
            match r {
                Ok(v) => answers.insert(i, v),
                Err(cause) => return Err((i, cause)),
            };
        }
        Ok(answers)
    }

    /// Server-side dry-runs of every changed write, [`CONCURRENCY`] at a time: every answer,
    /// in order (a diff shows them all, failures included).
    pub(super) async fn dry_run_each(
        &self,
        writes: &[Write<'_>],
        force: bool,
    ) -> Vec<(usize, Result<Value, ApiCause>)> {
        let jobs =
            writes
                .iter()
                .enumerate()
                .filter(|(_, w)| w.changed)
                .map(|(i, w)| async move {
                    (i, self.patch(&w.api, w.name, w.desired, force, true).await)
                });
        let mut results: Vec<(usize, Result<Value, ApiCause>)> = futures::stream::iter(jobs)
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        results.sort_by_key(|(i, _)| *i);
        results
    }

    /// Applies the changed writes group by group, in the order given, the writes of one group
    /// concurrently; once a group has a failure, later groups are not sent. Per index: `None`
    /// when nothing was sent (unchanged, or after a failure), else the answer. The one write
    /// step of both pipelines.
    pub(super) async fn apply_writes(
        &self,
        writes: &[Write<'_>],
        groups: &[Vec<usize>],
        force: bool,
    ) -> Vec<Option<Result<(), ApiCause>>> {
        let mut out: Vec<Option<Result<(), ApiCause>>> = writes.iter().map(|_| None).collect();
        for group in groups {
            let jobs = group.iter().filter(|&&i| writes[i].changed).map(|&i| {
                let w = &writes[i];
                async move {
                    let r = self.patch(&w.api, w.name, w.desired, force, false).await;
                    (i, r.map(|_| ()))
                }
            });
            let results: Vec<(usize, Result<(), ApiCause>)> = futures::stream::iter(jobs)
                .buffer_unordered(CONCURRENCY)
                .collect()
                .await;
            let failed = results.iter().any(|(_, r)| r.is_err());
            for (i, r) in results {
                out[i] = Some(r);
            }
            if failed {
                break;
            }
        }
        out
    }

    /// Refuses to write over an object that is not a member of the rollout's ApplySet: one in
    /// the live state (it carries the ownership labels) without this set's `part-of`, or one
    /// the labelled LIST did not see (a plain object with the same name) whose dry-run answer
    /// shows other field managers, i.e. it existed before. Costs no request.
    fn check_foreign(
        &self,
        plan: &[Planned<'_>],
        live: &LiveState,
        answers: &BTreeMap<usize, Value>,
    ) -> Option<(ObjectRef, ApplyError)> {
        for (i, p) in plan.iter().enumerate() {
            let reason = match (&p.state, live.get(&p.obj.id)) {
                (PlanState::Unchanged, _) => continue,
                (_, Some(l)) => {
                    let labels = manifest::labels_of(l);
                    let shared_class = p.obj.id.kind == Kind::VolumeSnapshotClass
                        && labels.get(manifest::LABEL_MANAGED_BY).map(String::as_str)
                            == Some(manifest::MANAGED_BY);
                    if shared_class || manifest::is_member(&labels, &self.rollout, &self.set.id) {
                        continue;
                    }
                    match labels.get(applyset::LABEL_PART_OF) {
                        Some(other) => format!("a member of another ApplySet, {other}"),
                        None if manifest::is_owned_by(&labels, &self.rollout) => format!(
                            "it carries the labels of rollout {} but is not a member of its ApplySet",
                            self.rollout
                        ),
                        None => match managers(l) {
                            m if m.is_empty() => "made without the rollout's labels".to_string(),
                            m => format!("made by {m} without the rollout's labels"),
                        },
                    }
                }
                (_, None) => match answers.get(&i).map(managers) {
                    Some(m) if !m.is_empty() => format!("made by {m} without the rollout's labels"),
                    _ => continue,
                },
            };
            return Some((
                p.obj.id.clone(),
                ApplyError::Foreign {
                    object: p.obj.id.to_string(),
                    reason,
                },
            ));
        }
        None
    }

    /// Applies `set` (see the module documentation for the steps), then prunes when
    /// `opts.prune`. On failure the partial change set comes with the error.
    pub async fn apply(
        &self,
        set: &RenderedSet,
        opts: &ApplyOptions,
    ) -> Result<ChangeSet, Box<Failed>> {
        self.apply_from(set, opts, None).await
    }

    /// [`Manager::apply`] on top of a live state read earlier in the same run (the rollout's
    /// observation from [`Manager::live`]): only what that read lacks is read again, so a
    /// reconcile makes at most one LIST per kind.
    pub async fn apply_from(
        &self,
        set: &RenderedSet,
        opts: &ApplyOptions,
        known: Option<LiveState>,
    ) -> Result<ChangeSet, Box<Failed>> {
        let mut changes = self.change_set(opts.dry_run);
        let fail = Failed::boxed;
        let live = match self
            .live_of(&Self::namespaces_of(set), Some(set), known)
            .await
        {
            Ok(l) => l,
            Err(e) => return Err(fail(changes, e)),
        };
        let plan = self.plan(set, &live);
        let parent = self.widened_parent(set, &live);

        // 3. Dry-run everything that will be written; nothing is written if any fails, or if
        // any of it would adopt an object that is not the rollout's.
        let checked = if opts.already_dry_run && !opts.dry_run {
            None
        } else {
            match self
                .dry_run_all(&plan, &live, parent.as_ref(), opts.force_conflicts)
                .await
            {
                Ok(answers) => self
                    .check_foreign(&plan, &live, &answers)
                    .map(|(id, e)| (Some(id), e)),
                Err(e) => Some(e),
            }
        };
        if let Some((id, err)) = checked {
            for p in &plan {
                let c = match (&p.state, id.as_ref() == Some(&p.obj.id)) {
                    (_, true) => Change::new(&p.obj.id, Action::Failed, Some(err.to_string())),
                    (PlanState::Unchanged, _) => unchanged(&p.obj.id),
                    _ => Change::new(
                        &p.obj.id,
                        Action::Skipped,
                        Some("not applied: the dry-run of another object failed".into()),
                    ),
                };
                changes.push(c);
            }
            return Err(fail(changes, err));
        }

        if opts.dry_run {
            if let Some(p) = &parent {
                changes.inventory = Some(self.inventory_change(
                    if live.parent.is_some() {
                        Action::Configured
                    } else {
                        Action::Created
                    },
                    Some(p),
                ));
            }
            for p in &plan {
                changes.push(planned_change(p));
            }
            if opts.prune {
                let popts = PruneOptions {
                    dry_run: true,
                    ..opts.prune_options.clone()
                };
                if let Err(f) = self.prune_into(set, &live, &popts, &mut changes).await {
                    return Err(fail(changes, f));
                }
            }
            return Ok(changes);
        }

        // 4. Widen the inventory, then apply kind by kind.
        let mut recorded = live.parent.clone();
        if let Some(p) = &parent {
            let api = self.parent_api();
            match self
                .patch(&api, &self.set.name, p, PARENT_FORCE, false)
                .await
            {
                Ok(v) => {
                    changes.inventory = Some(self.inventory_change(
                        if live.parent.is_some() {
                            Action::Configured
                        } else {
                            Action::Created
                        },
                        Some(&v),
                    ));
                    recorded = Some(v);
                }
                Err(source) => {
                    let err = ApplyError::Parent {
                        object: self.set.display(),
                        source,
                    };
                    for p in &plan {
                        changes.push(match p.state {
                            PlanState::Unchanged => unchanged(&p.obj.id),
                            _ => Change::new(
                                &p.obj.id,
                                Action::Skipped,
                                Some("not applied: the inventory could not be updated".into()),
                            ),
                        });
                    }
                    return Err(fail(changes, err));
                }
            }
        }
        // Kind by kind in dependency order, the objects of one kind concurrently.
        let groups: Vec<Vec<usize>> = Kind::ALL
            .into_iter()
            .map(|kind| {
                (0..plan.len())
                    .filter(|&i| plan[i].obj.id.kind == kind)
                    .collect()
            })
            .collect();
        let writes = self.writes(&plan);
        let mut results = self
            .apply_writes(&writes, &groups, opts.force_conflicts)
            .await;
        let mut first_error: Option<ApplyError> = None;
        for i in groups.into_iter().flatten() {
            let p = &plan[i];
            changes.push(match results[i].take() {
                Some(Ok(())) => planned_change(p),
                Some(Err(cause)) => {
                    let err =
                        self.classify(&p.obj.id, &p.desired, live.get(&p.obj.id), cause, false);
                    let c = Change::new(&p.obj.id, Action::Failed, Some(err.to_string()));
                    first_error.get_or_insert(err);
                    c
                }
                None if matches!(p.state, PlanState::Unchanged) => unchanged(&p.obj.id),
                None => Change::new(
                    &p.obj.id,
                    Action::Skipped,
                    Some("not applied: an earlier apply failed".into()),
                ),
            });
        }
        if let Some(err) = first_error {
            return Err(fail(changes, err));
        }

        // 5. Prune only after every apply succeeded.
        if opts.prune {
            let live = LiveState {
                parent: recorded,
                ..live
            };
            if let Err(e) = self
                .prune_into(set, &live, &opts.prune_options, &mut changes)
                .await
            {
                return Err(fail(changes, e));
            }
        }
        Ok(changes)
    }
}

pub(super) fn planned_change(p: &Planned<'_>) -> Change {
    match &p.state {
        PlanState::Create => Change::new(
            &p.obj.id,
            Action::Created,
            Some("not in the cluster".to_string()),
        ),
        PlanState::Update(r) => Change::new(&p.obj.id, Action::Configured, Some(r.clone())),
        PlanState::Unchanged => unchanged(&p.obj.id),
    }
}

/// An unchanged object's entry: every entry of a change set says why (for `-o json`).
pub(super) fn unchanged(id: &ObjectRef) -> Change {
    Change::new(
        id,
        Action::Unchanged,
        Some("every field snaproll sets already has the desired value".to_string()),
    )
}

/// A failed apply or dry-run as a conflict (with the managers and fields) or a plain write error;
/// shared by the rollout's apply and `apply_named`.
pub(super) fn write_error(object: String, cause: ApiCause, dry_run: bool) -> ApplyError {
    if cause.is_apply_conflict() {
        let mut fields = cause.fields.clone();
        if fields.is_empty() {
            fields = conflict_fields(&cause.message);
        }
        return ApplyError::Conflict {
            object,
            managers: cause.conflicting_managers(),
            fields,
            source: cause,
        };
    }
    if dry_run {
        ApplyError::DryRun {
            object,
            source: cause,
        }
    } else {
        ApplyError::Apply {
            object,
            source: cause,
        }
    }
}

/// Field paths of a conflict message (`... using apps/v1: .spec.replicas, conflict with ...`).
fn conflict_fields(message: &str) -> Vec<String> {
    let mut out = Vec::new();
    for part in message.split("conflict with \"").skip(1) {
        if let Some(i) = part.find(": ") {
            let rest = &part[i + 2..];
            let field = rest.split([',', ' ']).next().unwrap_or_default();
            if field.starts_with('.') && !out.contains(&field.to_string()) {
                out.push(field.to_string());
            }
        }
    }
    out
}

/// The field managers of `v` other than snaproll's, comma-separated (empty: none).
fn managers(v: &Value) -> String {
    let others: BTreeSet<&str> = v
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| m.get("manager").and_then(Value::as_str))
        .filter(|m| *m != FIELD_MANAGER)
        .collect();
    others.into_iter().collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_fields_are_parsed_from_the_message() {
        let m = "Apply failed with 2 conflicts: conflict with \"kubectl\" using apps/v1: .spec.replicas, conflict with \"hpa\" using apps/v1: .spec.template";
        assert_eq!(conflict_fields(m), vec![".spec.replicas", ".spec.template"]);
        assert!(
            conflict_fields("Apply failed with 1 conflict: conflict with \"x\" using v1")
                .is_empty()
        );
    }
}
