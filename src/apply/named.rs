//! Applying objects that belong to no rollout: what `snaproll install --apply` writes
//! (ServiceAccount, ConfigMap, RBAC, CronJob).
//!
//! The same engine as [`Manager::apply`] (server-side apply as field manager `snaproll`,
//! [`compare::change_reason`] with the applied-hash annotation so an unchanged object gets no
//! write, a server-side dry-run of every changed object before the first write, retries,
//! request counting, the same errors and change set), minus what only rollout members need:
//! these objects carry no ownership or ApplySet labels, so they are read by name (one GET
//! each, not a LIST by label), never recorded in an inventory and never pruned.

use kube::api::{Api, ApiResource, DynamicObject};
use serde_json::{Value, json};

use super::apply::Write;
use super::{
    ApiCause, ApplyError, ApplyOptions, Change, ChangeSet, Failed, Manager, Verb, compare,
};
use crate::apply::Action;

/// One object to apply by name, outside any rollout's inventory.
#[derive(Clone, Debug)]
pub struct NamedObject {
    /// Group, version, kind and plural of its API resource.
    pub resource: ApiResource,
    /// `None` for cluster-scoped kinds.
    pub namespace: Option<String>,
    pub name: String,
    /// The object as rendered.
    pub value: Value,
}

impl NamedObject {
    fn api(&self, client: &kube::Client) -> Api<DynamicObject> {
        match &self.namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &self.resource),
            None => Api::all_with(client.clone(), &self.resource),
        }
    }

    fn change(&self, action: Action, reason: Option<String>) -> Change {
        Change {
            kind: self.resource.kind.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            action,
            reason,
            diff: None,
        }
    }

    /// `Kind/name (namespace)`, as the engine names objects in errors.
    fn display(&self) -> String {
        self.change(Action::Unchanged, None).object()
    }
}

/// The object as applied: the rendered object plus the hash of its content, so a field removed
/// from a template still causes an apply (see [`compare`]). No ApplySet label: these objects
/// are members of no set.
fn desired(rendered: &Value) -> Value {
    let mut v = rendered.clone();
    let hash = compare::content_hash(&v);
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        let ann = meta.entry("annotations").or_insert_with(|| json!({}));
        if !ann.is_object() {
            *ann = json!({});
        }
        if let Some(ann) = ann.as_object_mut() {
            ann.insert(compare::ANNOTATION_APPLIED.into(), json!(hash));
        }
    }
    v
}

impl Manager {
    /// Applies `objects` in the order given (callers pass dependency order): one GET each,
    /// then a server-side dry-run of every new or changed object (any failure stops the run
    /// before the first write), then the applies, one at a time. The dry-run and apply steps
    /// are the rollout pipeline's own (`dry_run_writes`, `apply_writes`);
    /// only reading by name and the absent inventory differ. `opts.dry_run` stops after the
    /// dry-run; `opts.prune` is ignored (nothing here is ever pruned). Unchanged objects get
    /// no write.
    pub async fn apply_named(
        &self,
        objects: &[NamedObject],
        opts: &ApplyOptions,
    ) -> Result<ChangeSet, Box<Failed>> {
        let mut changes = self.change_set(opts.dry_run);
        changes.applyset = String::new();
        let fail = Failed::boxed;
        // 1. Read each object by name.
        let mut plan: Vec<(Value, Option<String>, bool)> = Vec::with_capacity(objects.len());
        for o in objects {
            let api = o.api(&self.client);
            let live = match self.call(Verb::Get, || api.get_opt(&o.name)).await {
                Ok(l) => l.map(|l| serde_json::to_value(&l).unwrap_or(Value::Null)),
                Err(source) => {
                    let e = ApplyError::List {
                        kind: o.resource.kind.clone(),
                        scope: match &o.namespace {
                            Some(ns) => format!("namespace {ns} (name {})", o.name),
                            None => format!("the cluster (name {})", o.name),
                        },
                        source,
                    };
                    return Err(fail(changes, e));
                }
            };
            let want = desired(&o.value);
            let (reason, exists) = match &live {
                None => (None, false),
                Some(l) => (compare::change_reason(&want, l), true),
            };
            plan.push((want, reason, exists));
        }
        let writes: Vec<Write<'_>> = objects
            .iter()
            .zip(&plan)
            .map(|(o, (want, reason, exists))| Write {
                api: o.api(&self.client),
                name: &o.name,
                desired: want,
                changed: !*exists || reason.is_some(),
            })
            .collect();
        // 2. Dry-run every write; nothing is written if any fails.
        if let Err((i, cause)) = self.dry_run_writes(&writes, opts.force_conflicts).await {
            let err = classify(&objects[i], cause, true);
            for (j, other) in objects.iter().enumerate() {
                changes.push(if j == i {
                    other.change(Action::Failed, Some(err.to_string()))
                } else if !writes[j].changed {
                    other.change(Action::Unchanged, None)
                } else {
                    other.change(
                        Action::Skipped,
                        Some("not applied: the dry-run of another object failed".into()),
                    )
                });
            }
            return Err(fail(changes, err));
        }
        // 3. Apply, one object at a time in the order given (each its own group).
        let mut results = if opts.dry_run {
            Vec::new()
        } else {
            let groups: Vec<Vec<usize>> = (0..objects.len()).map(|i| vec![i]).collect();
            self.apply_writes(&writes, &groups, opts.force_conflicts)
                .await
        };
        let mut first_error: Option<ApplyError> = None;
        for (i, (o, (_, reason, exists))) in objects.iter().zip(&plan).enumerate() {
            let action = match (exists, reason) {
                (false, _) => Action::Created,
                (true, Some(_)) => Action::Configured,
                (true, None) => {
                    changes.push(o.change(Action::Unchanged, None));
                    continue;
                }
            };
            if opts.dry_run {
                changes.push(o.change(action, reason.clone()));
                continue;
            }
            match results[i].take() {
                Some(Ok(())) => changes.push(o.change(action, reason.clone())),
                Some(Err(cause)) => {
                    let err = classify(o, cause, false);
                    changes.push(o.change(Action::Failed, Some(err.to_string())));
                    first_error.get_or_insert(err);
                }
                None => changes.push(o.change(
                    Action::Skipped,
                    Some("not applied: an earlier apply failed".into()),
                )),
            }
        }
        match first_error {
            Some(err) => Err(fail(changes, err)),
            None => Ok(changes),
        }
    }
}

fn classify(o: &NamedObject, cause: ApiCause, dry_run: bool) -> ApplyError {
    super::apply::write_error(o.display(), cause, dry_run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn desired_adds_only_the_applied_hash() {
        let rendered = json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "a", "namespace": "n", "labels": {"x": "y"}}});
        let d = desired(&rendered);
        assert_eq!(d["metadata"]["labels"], json!({"x": "y"}));
        let hash = d["metadata"]["annotations"][compare::ANNOTATION_APPLIED]
            .as_str()
            .unwrap();
        assert_eq!(hash, compare::content_hash(&rendered));
        // An object with annotations keeps them.
        let with = json!({"metadata": {"name": "a", "annotations": {"k": "v"}}});
        assert_eq!(desired(&with)["metadata"]["annotations"]["k"], "v");
    }
}
