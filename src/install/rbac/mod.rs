//! The RBAC snaproll's CronJob needs.
//!
//! The rules are derived from the spec (the kinds it renders) rather than written by hand in a
//! template, so the Role can never lag behind the kinds the engine touches. A small RBAC
//! evaluator (`evaluate`, test support only) proves them right against the request log of a
//! real engine run.

use k8s_openapi::api::rbac::v1::PolicyRule;

use crate::manifest::Kind;
use crate::spec::Rollout;

#[cfg(any(test, feature = "test-support"))]
mod evaluate;
#[cfg(any(test, feature = "test-support"))]
pub use evaluate::*;

/// Verbs the apply engine (`crate::apply`) uses on every namespaced kind it renders: `list` to
/// read the live state (one LIST per kind by the ownership label; it never GETs single objects),
/// `patch` for server-side apply and its dry-run, `create` because an apply that creates an
/// object is authorized as `create` too, and `delete` for prune and retirement.
pub const OBJECT_VERBS: [&str; 4] = ["list", "create", "patch", "delete"];

/// Verbs on the ApplySet parent ConfigMap, limited to its one name: the engine GETs it first,
/// then applies it (creating it on the first run).
pub const PARENT_VERBS: [&str; 3] = ["get", "create", "patch"];

/// Verbs on the VolumeSnapshotClass snaproll manages, limited to its name: applied (created on
/// the first run), never deleted (every non-empty render includes it, and an empty render never
/// prunes).
pub const CLASS_VERBS: [&str; 3] = ["get", "create", "patch"];

/// Verbs on the rollout's Lease (`crate::apply::lease`), limited to its one name: a push run
/// GETs it, then takes, renews and releases it with conditional updates.
pub const LEASE_VERBS: [&str; 2] = ["get", "update"];

/// Verbs on Leases that cannot be limited by name: the first run creates its Lease (a POST to
/// the collection carries no name RBAC could match).
pub const LEASE_CREATE_VERBS: [&str; 1] = ["create"];

/// Name of the ApplySet parent ConfigMap of a rollout (see `crate::apply::applyset`).
pub fn parent_name(rollout: &Rollout) -> String {
    format!("snaproll-{}", rollout.metadata.name)
}

/// API group of the Events snaproll reports (events.k8s.io/v1), push mode only.
pub const EVENTS_GROUP: &str = "events.k8s.io";

/// Verbs on Events: each transition is one create; an existing Event answers 409.
pub const EVENT_VERBS: [&str; 2] = ["create", "list"];

/// Verbs in pull mode, where Argo CD or Flux applies and snaproll only reads the rollout's
/// objects (one LIST per kind, and a GET of the ApplySet parent) to decide when an old
/// generation may leave Git.
pub const PULL_VERBS: [&str; 1] = ["list"];

/// The namespaced rules (for the Role in the rollout's namespace) and the cluster-scoped rules
/// (for a ClusterRole; empty unless the spec manages its VolumeSnapshotClass and snaproll
/// applies it). With `pull`, only read access to the rollout's namespaced kinds and its parent.
pub fn rules_for(rollout: &Rollout, pull: bool) -> (Vec<PolicyRule>, Vec<PolicyRule>) {
    let verbs: &[&str] = if pull { &PULL_VERBS } else { &OBJECT_VERBS };
    let kinds: Vec<Kind> = Kind::ALL.into_iter().filter(|k| k.namespaced()).collect();
    // Verify Jobs (`consumer.verify`) are written only when a dataset has one; every run
    // still lists them (one LIST per kind).
    let verifies = rollout
        .spec
        .datasets
        .iter()
        .any(|d| d.consumer.verify.is_some());
    // One rule per API group, in apply order of the group's first kind.
    let mut namespaced: Vec<PolicyRule> = Vec::new();
    for kind in kinds {
        let verbs: &[&str] = if kind == Kind::Job && !verifies && !pull {
            &PULL_VERBS
        } else {
            verbs
        };
        let resource = kind.plural().to_string();
        match namespaced
            .iter_mut()
            .find(|r| r.api_groups.as_deref() == Some(&[kind.group().to_string()][..]))
        {
            Some(rule) => rule.resources.get_or_insert_with(Vec::new).push(resource),
            None => namespaced.push(rule(kind.group(), vec![resource], verbs, None)),
        }
    }
    // The ApplySet parent: read in both modes (it records the namespaces and kinds a push
    // run wrote), written only by push runs.
    namespaced.push(rule(
        "",
        vec!["configmaps".to_string()],
        if pull { &["get"] } else { &PARENT_VERBS },
        Some(vec![parent_name(rollout)]),
    ));
    // Pull mode takes no Lease: it never writes the cluster, and its runs race only in Git,
    // where the push is a compare-and-swap on the branch.
    if pull {
        return (namespaced, Vec::new());
    }
    let lease = crate::apply::lease::lease_name(&rollout.metadata.name);
    namespaced.push(rule(
        "coordination.k8s.io",
        vec!["leases".to_string()],
        &LEASE_VERBS,
        Some(vec![lease]),
    ));
    namespaced.push(rule(
        "coordination.k8s.io",
        vec!["leases".to_string()],
        &LEASE_CREATE_VERBS,
        None,
    ));
    // The rollout's Events (`crate::events`): listed (one labelled LIST, to create only what
    // is not reported yet) and created, never updated or deleted. RBAC cannot limit `create`
    // by name, so the rule names no resource.
    namespaced.push(rule(
        EVENTS_GROUP,
        vec!["events".to_string()],
        &EVENT_VERBS,
        None,
    ));
    let mut cluster = Vec::new();
    if !rollout.spec.snapshot_class.existing {
        let class = Kind::VolumeSnapshotClass;
        // The engine reads the class by name (never a cluster-wide LIST), so every verb is
        // limited to the one class.
        cluster.push(rule(
            class.group(),
            vec![class.plural().to_string()],
            &CLASS_VERBS,
            Some(vec![rollout.spec.snapshot_class.name.clone()]),
        ));
    }
    (namespaced, cluster)
}

fn rule(
    group: &str,
    resources: Vec<String>,
    verbs: &[&str],
    names: Option<Vec<String>>,
) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![group.to_string()]),
        resources: Some(resources),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        resource_names: names,
        non_resource_urls: None,
    }
}
