//! The inventory: a kubectl-compatible ApplySet (KEP-3659).
//!
//! The parent is a ConfigMap (ConfigMaps need less privileged RBAC than kubectl's default
//! Secret) named `snaproll-<rollout>` in the rollout's namespace. Its id is computed exactly as
//! kubectl does and its members carry the standard labels, so kubectl and other ApplySet-aware
//! tools see the same set.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::manifest;

/// Label on the parent holding the set's id.
pub const LABEL_ID: &str = "applyset.kubernetes.io/id";
pub use crate::manifest::{LABEL_PART_OF, applyset_id};
/// Parent annotation naming the tool that manages the set.
pub const ANNOTATION_TOOLING: &str = "applyset.kubernetes.io/tooling";
/// Parent annotation listing the member group-kinds (`Kind` or `Kind.group`, sorted).
pub const ANNOTATION_GROUP_KINDS: &str = "applyset.kubernetes.io/contains-group-kinds";
/// Parent annotation listing member namespaces other than the parent's own.
pub const ANNOTATION_NAMESPACES: &str = "applyset.kubernetes.io/additional-namespaces";

/// The ApplySet of one rollout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplySet {
    /// Parent ConfigMap name.
    pub name: String,
    /// Parent namespace (the rollout's).
    pub namespace: String,
    /// `applyset-<base64url(sha256(name.namespace.Kind.group))>-v1`.
    pub id: String,
}

impl ApplySet {
    /// The ApplySet of rollout `rollout` in `namespace`.
    pub fn for_rollout(rollout: &str, namespace: &str) -> Self {
        let name = format!("snaproll-{rollout}");
        let id = manifest::rollout_applyset_id(rollout, namespace);
        ApplySet {
            name,
            namespace: namespace.to_string(),
            id,
        }
    }

    /// `ConfigMap/<name> (<namespace>)`, for messages.
    pub fn display(&self) -> String {
        format!("ConfigMap/{} ({})", self.name, self.namespace)
    }

    /// The parent object to apply, recording `group_kinds` and `namespaces` (other than the
    /// parent's own). Carries the ownership labels too, so it is recognisably snaproll's.
    pub fn parent(
        &self,
        rollout: &str,
        group_kinds: &BTreeSet<String>,
        namespaces: &BTreeSet<String>,
    ) -> Value {
        let mut annotations = serde_json::Map::new();
        annotations.insert(
            ANNOTATION_TOOLING.into(),
            json!(format!("snaproll/v{}", env!("CARGO_PKG_VERSION"))),
        );
        annotations.insert(
            ANNOTATION_GROUP_KINDS.into(),
            json!(join(group_kinds.iter().map(String::as_str))),
        );
        let extra: Vec<&str> = namespaces
            .iter()
            .map(String::as_str)
            .filter(|n| *n != self.namespace)
            .collect();
        if !extra.is_empty() {
            annotations.insert(ANNOTATION_NAMESPACES.into(), json!(join(extra)));
        }
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": {
                    LABEL_ID: self.id,
                    manifest::LABEL_MANAGED_BY: manifest::MANAGED_BY,
                    manifest::LABEL_ROLLOUT: rollout,
                },
                "annotations": annotations,
            }
        })
    }
}

fn join<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    items.into_iter().collect::<Vec<_>>().join(",")
}

/// The comma-separated values of a parent annotation, as a set.
pub fn annotation_set(parent: &Value, key: &str) -> BTreeSet<String> {
    parent
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
        .map(|s| {
            s.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_matches_kubectl() {
        // Vectors computed independently (Python: base64.urlsafe_b64encode(
        // hashlib.sha256(b"<name>.<namespace>.<Kind>.<group>").digest()).rstrip(b"=")), the
        // format kubectl's ApplySet uses for `applyset.kubernetes.io/id`.
        assert_eq!(
            applyset_id("my-set", "test", "Secret", ""),
            "applyset-0eFHV8ySqp7XoShsGvyWFQD3s96yqwHmzc4e0HR1dsY-v1"
        );
        assert_eq!(
            ApplySet::for_rollout("demo", "default").id,
            "applyset-vk1AZGX8I5kGcxHOPx9AQfiz6dOqrnE6_H1TzMekEWI-v1"
        );
    }

    #[test]
    fn parent_lists_sorted_group_kinds_and_only_extra_namespaces() {
        let set = ApplySet::for_rollout("demo", "default");
        let kinds: BTreeSet<String> = ["StatefulSet.apps", "Pod"].map(String::from).into();
        let ns: BTreeSet<String> = ["default", "other"].map(String::from).into();
        let p = set.parent("demo", &kinds, &ns);
        assert_eq!(
            annotation_set(&p, ANNOTATION_GROUP_KINDS),
            kinds,
            "round-trips"
        );
        assert_eq!(
            p.pointer("/metadata/annotations/applyset.kubernetes.io~1contains-group-kinds"),
            Some(&json!("Pod,StatefulSet.apps"))
        );
        assert_eq!(
            p.pointer("/metadata/annotations/applyset.kubernetes.io~1additional-namespaces"),
            Some(&json!("other"))
        );
        assert_eq!(
            p.pointer("/metadata/labels/applyset.kubernetes.io~1id"),
            Some(&json!(set.id))
        );
    }
}
