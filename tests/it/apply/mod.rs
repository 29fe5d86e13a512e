//! The apply engine against kube-fake-client behind a real `kube::Client` (see `fakeapi`):
//! create, update, unchanged (zero writes), conflicts, prune guards and order, the ApplySet
//! inventory, immutable fields and injected faults (`apply_cli` drives the `snaproll` binary
//! end to end against a loopback HTTP server serving the same fake).
//!
//! This module holds the shared spec, render and assertion helpers; the tests are in
//! `write` (create, update, unchanged, conflicts, immutable fields, dry-run, diff), `prune`
//! (prune guards and order, the inventory), `faults` (retries and the fault matrix) and
//! `live` (what is read, readiness from the live state).

mod faults;
mod live;
mod prune;
mod write;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};
use snaproll::apply::{
    Action, ApplyError, ApplyOptions, ChangeSet, DiffOptions, Failed, LiveState, Manager,
    PruneOptions, Readiness, RetryPolicy, plan_prune, readiness,
};
use snaproll::manifest::{Kind, ObjectRef};
use snaproll::render::{GenerationPlan, Plan, RenderedSet, Renderer};

use crate::fakeapi::{FakeApi, Fault, Req};

pub(crate) const NS: &str = "default";
pub(crate) const G1: &str = "2021-07-15";
pub(crate) const G2: &str = "2021-07-16";

/// Knobs of the generated spec.
#[derive(Clone)]
pub(crate) struct SpecOpts {
    pub(crate) rollout: &'static str,
    pub(crate) datasets: Vec<String>,
    pub(crate) replicas: u32,
    pub(crate) size: &'static str,
    pub(crate) when_deleted: &'static str,
}

impl Default for SpecOpts {
    fn default() -> Self {
        SpecOpts {
            rollout: "demo",
            datasets: vec!["data".into()],
            replicas: 3,
            size: "10Gi",
            when_deleted: "Retain",
        }
    }
}

/// A DatasetRollout spec with one dataset per name (consumer `<name>-consumer`).
pub fn spec_yaml(
    rollout: &str,
    datasets: &[String],
    replicas: u32,
    size: &str,
    when_deleted: &str,
) -> String {
    let mut s = format!(
        "apiVersion: snaproll.dev/v1alpha1\nkind: DatasetRollout\nmetadata:\n  name: {rollout}\n  namespace: default\nspec:\n  snapshotClass:\n    name: csi-snapclass\n    driver: pd.csi.storage.gke.io\n    deletionPolicy: Delete\n  datasets:\n"
    );
    for d in datasets {
        s.push_str(&format!(
            "    - name: {d}\n      storage:\n        storageClassName: standard-rwo\n        size: {size}\n        accessModes: [ReadWriteOnce]\n      producer:\n        image: ubuntu:22.04\n        command: [\"/bin/sh\", \"-c\"]\n        args: [\"echo hi > /data/file.txt\"]\n        mountPath: /data\n      consumer:\n        name: {d}-consumer\n        replicas: {replicas}\n        image: ubuntu:22.04\n        mountPath: /data\n        pvcRetentionPolicy:\n          whenDeleted: {when_deleted}\n        service:\n          type: Headless\n"
        ));
    }
    s
}

fn render_with(o: &SpecOpts, plan: impl Fn(&snaproll::spec::Rollout) -> Plan) -> RenderedSet {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snaproll.yaml");
    std::fs::write(
        &path,
        spec_yaml(o.rollout, &o.datasets, o.replicas, o.size, o.when_deleted),
    )
    .unwrap();
    let loaded = snaproll::spec::load(&path).expect("spec loads");
    Renderer::new(None)
        .unwrap()
        .render(&loaded.rollout, &plan(&loaded.rollout))
        .expect("renders")
}

fn render(o: &SpecOpts, generation: &str) -> RenderedSet {
    render_with(o, |r| Plan::single(r, generation))
}

fn manager(api: &FakeApi, rollout: &str) -> Manager {
    Manager::new(api.client.clone(), rollout, NS)
        .with_retry(RetryPolicy {
            attempts: 3,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
        })
        .with_request_timeout(Duration::from_millis(300))
}

fn opts(prune: bool) -> ApplyOptions {
    ApplyOptions {
        prune,
        ..ApplyOptions::default()
    }
}

pub(crate) const STS: &str = "/apis/apps/v1/namespaces/default/statefulsets";
pub(crate) const SNAPS: &str =
    "/apis/snapshot.storage.k8s.io/v1/namespaces/default/volumesnapshots";
pub(crate) const PODS: &str = "/api/v1/namespaces/default/pods";
pub(crate) const PVCS: &str = "/api/v1/namespaces/default/persistentvolumeclaims";
pub(crate) const SVCS: &str = "/api/v1/namespaces/default/services";
pub(crate) const CLASSES: &str = "/apis/snapshot.storage.k8s.io/v1/volumesnapshotclasses";
pub(crate) const PARENT: &str = "/api/v1/namespaces/default/configmaps/snaproll-demo";

fn ok(r: Result<ChangeSet, Box<Failed>>) -> ChangeSet {
    match r {
        Ok(c) => c,
        Err(f) => panic!("run failed: {} ({:?})", f.error, f.changes.changes),
    }
}

fn err(r: Result<ChangeSet, Box<Failed>>) -> Box<Failed> {
    match r {
        Ok(c) => panic!("run succeeded unexpectedly: {:?}", c.summary),
        Err(f) => f,
    }
}

fn actions(cs: &ChangeSet, action: Action) -> Vec<String> {
    cs.with_action(action)
        .map(|c| format!("{}/{}", c.kind, c.name))
        .collect()
}

/// Group-kinds recorded by the parent.
async fn recorded_kinds(api: &FakeApi) -> BTreeSet<String> {
    let p = api.get(PARENT).await.expect("parent exists");
    p.pointer("/metadata/annotations/applyset.kubernetes.io~1contains-group-kinds")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// Creates the PVCs the StatefulSet controller would create for `<sts>` (ordinals 0..n):
/// the claim template's labels, no ApplySet membership.
async fn controller_pvcs(api: &FakeApi, dataset: &str, generation: &str, n: usize) {
    for i in 0..n {
        let name = format!("{dataset}-{dataset}-consumer-{generation}-{i}");
        let obj = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": NS, "labels": {
                "app.kubernetes.io/managed-by": "snaproll", "snaproll.dev/rollout": "demo",
                "snaproll.dev/dataset": dataset, "snaproll.dev/generation": generation,
                "app.kubernetes.io/component": "consumer-volume"}},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}}}});
        api.apply_as(
            "statefulset-controller",
            &format!("{PVCS}/{name}"),
            &obj,
            false,
        )
        .await;
    }
}

pub(crate) async fn make_ready(api: &FakeApi, sts: &str, replicas: i64) {
    let path = format!("{STS}/{sts}");
    let live = api.get(&path).await.expect("sts exists");
    let generation = live
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    api.set_status(
        &path,
        json!({"observedGeneration": generation, "replicas": replicas, "readyReplicas": replicas,
               "updatedReplicas": replicas, "currentRevision": "r1", "updateRevision": "r1"}),
    )
    .await;
}

/// Applies G1, makes the cluster look like the controllers ran (consumer PVCs), then applies
/// G2 with prune: the G1 StatefulSet is not ready, so nothing guards it.
async fn two_generations(api: &FakeApi) -> (Manager, RenderedSet) {
    let mgr = manager(api, "demo");
    ok(mgr
        .apply(&render(&SpecOpts::default(), G1), &opts(true))
        .await);
    controller_pvcs(api, "data", G1, 3).await;
    (mgr, render(&SpecOpts::default(), G2))
}

/// Applies `set` with prune once more and asserts the run wrote nothing: it converged.
async fn assert_converged(api: &FakeApi, mgr: &Manager, set: &RenderedSet) {
    api.clear_requests();
    ok(mgr.apply(set, &opts(true)).await);
    assert!(api.writes().is_empty(), "{:?}", api.writes());
}
