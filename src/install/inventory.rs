//! `install --apply`'s own inventory: the objects it applied, recorded on the spec ConfigMap,
//! so that a later `install --apply` that no longer renders some of them (push switched to
//! `--pull`, the snapshot class became `existing`) deletes them instead of leaving a
//! ClusterRole and its binding behind.
//!
//! Only what the recorded inventory names is ever considered, and an object is deleted only
//! when it still carries the install labels of this rollout and fields applied by snaproll's
//! field manager: anything else is reported as skipped, never deleted.

use kube::api::{Api, DeleteParams, DynamicObject};
use serde_json::{Value, json};

use super::{InstallKind, InstallObject};
use crate::apply::{Action, ApiCause, ApplyError, Change};

/// The ConfigMap annotation holding the inventory: `Kind/name` (cluster-scoped) or
/// `Kind/namespace/name`, comma-separated, sorted.
pub const ANNOTATION: &str = "snaproll.dev/install-inventory";

/// The field manager every install apply uses.
const FIELD_MANAGER: &str = "snaproll";

/// One recorded object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    pub kind: InstallKind,
    pub namespace: Option<String>,
    pub name: String,
}

impl Entry {
    fn of(o: &InstallObject) -> Entry {
        Entry {
            kind: o.kind,
            namespace: o.namespace.clone(),
            name: o.name.clone(),
        }
    }

    fn key(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{}/{ns}/{}", self.kind, self.name),
            None => format!("{}/{}", self.kind, self.name),
        }
    }

    fn parse(s: &str) -> Option<Entry> {
        let parts: Vec<&str> = s.trim().split('/').collect();
        let (kind, namespace, name) = match parts.as_slice() {
            [k, n] => (*k, None, *n),
            [k, ns, n] => (*k, Some(ns.to_string()), *n),
            _ => return None,
        };
        let kind = InstallKind::from_kind(kind)?;
        // A namespaced kind is recorded with its namespace, a cluster-scoped one without.
        (kind.namespaced() == namespace.is_some() && !name.is_empty()).then(|| Entry {
            kind,
            namespace,
            name: name.to_string(),
        })
    }

    /// `Kind/name (namespace)`, as the change set names objects.
    fn change(&self, action: Action, reason: Option<String>) -> Change {
        Change {
            kind: self.kind.as_str().to_string(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            action,
            reason,
            diff: None,
        }
    }

    fn api(&self, client: &kube::Client) -> Api<DynamicObject> {
        let probe = InstallObject {
            kind: self.kind,
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            value: Value::Null,
            yaml: String::new(),
        };
        let resource = probe.to_named().resource;
        match &self.namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
            None => Api::all_with(client.clone(), &resource),
        }
    }
}

/// The objects with the inventory of all of them recorded on the spec ConfigMap.
pub fn recorded(objects: &[InstallObject]) -> Vec<InstallObject> {
    let mut entries: Vec<String> = objects.iter().map(|o| Entry::of(o).key()).collect();
    entries.sort();
    let value = entries.join(",");
    objects
        .iter()
        .cloned()
        .map(|mut o| {
            if o.kind == InstallKind::ConfigMap
                && let Some(meta) = o.value.get_mut("metadata").and_then(Value::as_object_mut)
            {
                let ann = meta.entry("annotations").or_insert_with(|| json!({}));
                if let Some(ann) = ann.as_object_mut() {
                    ann.insert(ANNOTATION.to_string(), json!(value));
                }
                o.yaml = crate::yaml::to_string(&o.value);
            }
            o
        })
        .collect()
}

/// The inventory recorded on the live spec ConfigMap by the previous `install --apply`
/// (empty when there is none or it is not one).
pub async fn previous(
    client: &kube::Client,
    objects: &[InstallObject],
) -> Result<Vec<Entry>, ApplyError> {
    let Some(cm) = objects.iter().find(|o| o.kind == InstallKind::ConfigMap) else {
        return Ok(Vec::new());
    };
    let entry = Entry::of(cm);
    let live = entry
        .api(client)
        .get_opt(&entry.name)
        .await
        .map_err(|e| ApplyError::List {
            kind: "ConfigMap".to_string(),
            scope: format!(
                "namespace {} (name {})",
                entry.namespace.as_deref().unwrap_or_default(),
                entry.name
            ),
            source: ApiCause::from_kube(e),
        })?;
    let recorded = live
        .as_ref()
        .and_then(|l| l.metadata.annotations.as_ref())
        .and_then(|a| a.get(ANNOTATION))
        .map(String::as_str)
        .unwrap_or_default();
    let mut entries: Vec<Entry> = recorded.split(',').filter_map(Entry::parse).collect();
    entries.sort();
    entries.dedup();
    Ok(entries)
}

/// Deletes (or with `dry_run` reports) the previously recorded objects no longer rendered,
/// in reverse apply order, guarded: each must carry this rollout's install labels and fields
/// of snaproll's field manager. Returns the changes; the first failed delete stops the prune
/// and is returned with the changes so far.
pub async fn prune(
    client: &kube::Client,
    previous: &[Entry],
    objects: &[InstallObject],
    rollout: &str,
    dry_run: bool,
) -> Result<Vec<Change>, (Vec<Change>, ApplyError)> {
    let current: Vec<Entry> = objects.iter().map(Entry::of).collect();
    let mut gone: Vec<&Entry> = previous.iter().filter(|e| !current.contains(e)).collect();
    gone.sort_by(|a, b| b.kind.cmp(&a.kind).then_with(|| a.name.cmp(&b.name)));
    let mut changes = Vec::new();
    for e in gone {
        let api = e.api(client);
        let object = e.change(Action::Deleted, None).object();
        let live = match api.get_opt(&e.name).await {
            Ok(Some(l)) => l,
            // Already gone (deleted by hand): nothing to do.
            Ok(None) => continue,
            Err(err) => {
                let err = ApplyError::Delete {
                    object,
                    source: ApiCause::from_kube(err),
                };
                changes.push(e.change(Action::Failed, Some(err.to_string())));
                return Err((changes, err));
            }
        };
        if let Some(why) = not_ours(&live, rollout) {
            changes.push(e.change(Action::Skipped, Some(format!("not deleted: {why}"))));
            continue;
        }
        if !dry_run && let Err(err) = api.delete(&e.name, &DeleteParams::background()).await {
            if matches!(&err, kube::Error::Api(s) if s.code == 404) {
                continue;
            }
            let err = ApplyError::Delete {
                object,
                source: ApiCause::from_kube(err),
            };
            changes.push(e.change(Action::Failed, Some(err.to_string())));
            return Err((changes, err));
        }
        changes.push(e.change(
            Action::Deleted,
            Some("no longer rendered by install".to_string()),
        ));
    }
    Ok(changes)
}

/// Why a live object is not one `install --apply` of this rollout applied, if it is not.
fn not_ours(live: &DynamicObject, rollout: &str) -> Option<String> {
    let labels = live.metadata.labels.clone().unwrap_or_default();
    let label = |k: &str| labels.get(k).map(String::as_str);
    if label("app.kubernetes.io/part-of") != Some("snaproll")
        || label("app.kubernetes.io/instance") != Some(rollout)
    {
        return Some(format!(
            "it lacks the install labels of rollout {rollout} (app.kubernetes.io/part-of=snaproll, app.kubernetes.io/instance={rollout})"
        ));
    }
    let applied = live
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .any(|m| m.manager.as_deref() == Some(FIELD_MANAGER));
    (!applied).then(|| format!("no fields of it were applied by field manager {FIELD_MANAGER}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_refuse_other_shapes() {
        for s in [
            "ClusterRole/snaproll-default-demo",
            "ConfigMap/default/snaproll-demo-spec",
        ] {
            assert_eq!(Entry::parse(s).unwrap().key(), s);
        }
        for bad in [
            "",
            "Secret/default/x",
            "ClusterRole/default/x",
            "ConfigMap/x",
            "ConfigMap/default/",
        ] {
            assert_eq!(Entry::parse(bad), None, "{bad}");
        }
    }
}
