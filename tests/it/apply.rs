//! The apply engine against kube-fake-client behind a real `kube::Client` (see `fakeapi`):
//! create, update, unchanged (zero writes), conflicts, prune guards and order, the ApplySet
//! inventory, immutable fields and injected faults; then the `snaproll` binary end to end
//! against a loopback HTTP server serving the same fake.

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

#[tokio::test]
async fn first_apply_creates_every_object_in_dependency_order_with_applyset_membership() {
    let api = FakeApi::new().await;
    let set = render(&SpecOpts::default(), G1);
    let mgr = manager(&api, "demo");
    let cs = ok(mgr.apply(&set, &opts(false)).await);
    assert_eq!(cs.summary.created, set.objects.len());
    assert_eq!(cs.inventory.as_ref().unwrap().action, Action::Created);

    // Every changed object was dry-run before the first write, and writes went in
    // dependency order: parent, class, PVC, producer, snapshot, Service, StatefulSet.
    let reqs = api.requests();
    let first_write = reqs.iter().position(Req::is_write).unwrap();
    assert_eq!(
        reqs.iter().filter(|r| r.is_dry_run()).count(),
        set.objects.len() + 1
    );
    assert!(
        reqs[..first_write]
            .iter()
            .filter(|r| r.is_dry_run())
            .count()
            == set.objects.len() + 1
    );
    let order: Vec<String> = api.writes().iter().map(Req::resource).collect();
    assert_eq!(
        order,
        [
            "configmaps",
            "volumesnapshotclasses",
            "persistentvolumeclaims",
            "pods",
            "volumesnapshots",
            "services",
            "statefulsets"
        ]
    );

    // Members carry part-of; the parent records the kinds with kubectl's id.
    let sts = api.get(&format!("{STS}/data-consumer-{G1}")).await.unwrap();
    assert_eq!(
        sts.pointer("/metadata/labels/applyset.kubernetes.io~1part-of"),
        Some(&json!(mgr.applyset().id))
    );
    let parent = api.get(PARENT).await.unwrap();
    assert_eq!(
        parent.pointer("/metadata/labels/applyset.kubernetes.io~1id"),
        Some(&json!(mgr.applyset().id))
    );
    assert_eq!(
        parent.pointer("/metadata/annotations/applyset.kubernetes.io~1tooling"),
        Some(&json!(format!("snaproll/v{}", env!("CARGO_PKG_VERSION"))))
    );
    assert_eq!(
        recorded_kinds(&api).await,
        [
            "PersistentVolumeClaim",
            "Pod",
            "Service",
            "StatefulSet.apps",
            "VolumeSnapshot.snapshot.storage.k8s.io",
            "VolumeSnapshotClass.snapshot.storage.k8s.io"
        ]
        .map(String::from)
        .into()
    );
    // The class is cluster-scoped.
    assert!(
        api.get(&format!("{CLASSES}/csi-snapclass"))
            .await
            .unwrap()
            .pointer("/metadata/namespace")
            .is_none()
    );
}

#[tokio::test]
async fn noop_reapply_makes_zero_writes_and_one_list_per_kind() {
    let api = FakeApi::new().await;
    let set = render(&SpecOpts::default(), G1);
    let mgr = manager(&api, "demo");
    ok(mgr.apply(&set, &opts(true)).await);
    api.clear_requests();
    mgr.reset_stats();

    let cs = ok(mgr.apply(&set, &opts(true)).await);
    assert_eq!(cs.summary.unchanged, set.objects.len());
    assert!(!cs.has_changes());
    let reqs = api.requests();
    assert!(api.writes().is_empty(), "no writes: {:?}", api.writes());
    assert_eq!(reqs.iter().filter(|r| r.is_dry_run()).count(), 0);
    let lists: Vec<String> = reqs
        .iter()
        .filter(|r| r.is_list())
        .map(Req::resource)
        .collect();
    // One LIST per namespaced kind...
    assert_eq!(
        lists,
        [
            "persistentvolumeclaims",
            "pods",
            "volumesnapshots",
            "services",
            "statefulsets"
        ]
    );
    // ...one GET of the cluster-scoped class by name (RBAC can limit it to that name), one
    // GET of the ApplySet parent, and nothing else.
    let gets: Vec<String> = reqs
        .iter()
        .filter(|r| !r.is_list())
        .map(|r| format!("{} {}", r.method, r.resource()))
        .collect();
    assert_eq!(gets, ["GET configmaps", "GET volumesnapshotclasses"]);
    assert_eq!(reqs.len(), Kind::ALL.len() + 1);
    let stats = mgr.stats();
    assert_eq!(
        (stats.lists, stats.gets, stats.writes(), stats.dry_runs),
        (5, 2, 0, 0)
    );
}

#[tokio::test]
async fn server_defaulted_fields_and_other_managers_fields_do_not_cause_writes() {
    let api = FakeApi::new().await;
    let set = render(&SpecOpts::default(), G1);
    let mgr = manager(&api, "demo");
    ok(mgr.apply(&set, &opts(false)).await);
    // What the API server and controllers add: defaults, other fields, status.
    api.apply_as(
        "kube-apiserver-defaults",
        &format!("{STS}/data-consumer-{G1}"),
        &json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "spec": {"podManagementPolicy": "OrderedReady", "revisionHistoryLimit": 10}}),
        false,
    )
    .await;
    api.apply_as(
        "kube-apiserver-defaults",
        &format!("{SVCS}/data-consumer"),
        &json!({"apiVersion": "v1", "kind": "Service", "spec": {"clusterIPs": ["None"], "sessionAffinity": "None", "ipFamilies": ["IPv4"]}}),
        false,
    )
    .await;
    make_ready(&api, &format!("data-consumer-{G1}"), 3).await;
    api.clear_requests();
    let cs = ok(mgr.apply(&set, &opts(false)).await);
    assert_eq!(cs.summary.unchanged, set.objects.len(), "{:?}", cs.changes);
    assert!(api.writes().is_empty());
}

#[tokio::test]
async fn changed_object_is_dry_run_then_applied_and_nothing_else_is_written() {
    let api = FakeApi::new().await;
    let mut o = SpecOpts::default();
    let mgr = manager(&api, "demo");
    ok(mgr.apply(&render(&o, G1), &opts(false)).await);
    api.clear_requests();

    o.replicas = 5;
    let cs = ok(mgr.apply(&render(&o, G1), &opts(false)).await);
    assert_eq!(
        actions(&cs, Action::Configured),
        vec![format!("StatefulSet/data-consumer-{G1}")]
    );
    assert!(
        cs.changes
            .iter()
            .find(|c| c.action == Action::Configured)
            .unwrap()
            .reason
            .as_deref()
            .unwrap()
            .contains(".spec.replicas")
    );
    let patches: Vec<(bool, String)> = api
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH")
        .map(|r| (r.is_dry_run(), r.name().unwrap()))
        .collect();
    let name = format!("data-consumer-{G1}");
    assert_eq!(patches, vec![(true, name.clone()), (false, name)]);
    let sts = api.get(&format!("{STS}/data-consumer-{G1}")).await.unwrap();
    assert_eq!(sts.pointer("/spec/replicas"), Some(&json!(5)));
}

#[tokio::test]
async fn removing_a_field_from_the_template_is_a_change() {
    let api = FakeApi::new().await;
    let mgr = manager(&api, "demo");
    let set = render(&SpecOpts::default(), G1);
    ok(mgr.apply(&set, &opts(false)).await);
    // Same object minus a field: a subset of live, but the applied hash differs.
    let mut smaller = set.clone();
    let svc = smaller
        .objects
        .iter_mut()
        .find(|o| o.id.kind == Kind::Service)
        .unwrap();
    svc.value["metadata"]["labels"]
        .as_object_mut()
        .unwrap()
        .remove("app.kubernetes.io/component");
    let cs = ok(mgr.apply(&smaller, &opts(false)).await);
    assert_eq!(
        actions(&cs, Action::Configured),
        vec!["Service/data-consumer".to_string()]
    );
}

#[tokio::test]
async fn conflict_is_reported_with_the_manager_name_and_nothing_is_written() {
    let api = FakeApi::new().await;
    let mgr = manager(&api, "demo");
    let mut o = SpecOpts::default();
    ok(mgr.apply(&render(&o, G1), &opts(false)).await);
    // Someone scales the StatefulSet with their own field manager.
    api.apply_as(
        "kubectl-scale",
        &format!("{STS}/data-consumer-{G1}"),
        &json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "spec": {"replicas": 7}}),
        true,
    )
    .await;
    api.clear_requests();
    o.replicas = 4;
    let f = err(mgr.apply(&render(&o, G1), &opts(true)).await);
    match &f.error {
        ApplyError::Conflict {
            object, managers, ..
        } => {
            assert_eq!(managers, &vec!["kubectl-scale".to_string()]);
            assert!(object.contains(&format!("StatefulSet/data-consumer-{G1}")));
        }
        other => panic!("expected a conflict, got {other}"),
    }
    let msg = f.error.to_string();
    assert!(
        msg.contains("\"kubectl-scale\"") && msg.contains("--force-conflicts"),
        "{msg}"
    );
    assert!(api.writes().is_empty(), "{:?}", api.writes());
    assert_eq!(f.changes.summary.failed, 1);
}

#[tokio::test]
async fn force_conflicts_takes_ownership() {
    let api = FakeApi::new().await;
    let mgr = manager(&api, "demo");
    let mut o = SpecOpts::default();
    ok(mgr.apply(&render(&o, G1), &opts(false)).await);
    let path = format!("{STS}/data-consumer-{G1}");
    api.apply_as(
        "kubectl-scale",
        &path,
        &json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "spec": {"replicas": 7}}),
        true,
    )
    .await;
    o.replicas = 4;
    let forced = ApplyOptions {
        force_conflicts: true,
        ..ApplyOptions::default()
    };
    let cs = ok(mgr.apply(&render(&o, G1), &forced).await);
    assert_eq!(
        actions(&cs, Action::Configured),
        vec![format!("StatefulSet/data-consumer-{G1}")]
    );
    let sts = api.get(&path).await.unwrap();
    assert_eq!(sts.pointer("/spec/replicas"), Some(&json!(4)));
    let managers: Vec<&str> = sts["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["manager"].as_str())
        .collect();
    assert!(!managers.contains(&"kubectl-scale"), "{managers:?}");
    // And the next run is a no-op.
    api.clear_requests();
    ok(mgr.apply(&render(&o, G1), &opts(false)).await);
    assert!(api.writes().is_empty());
}

#[tokio::test]
async fn immutable_statefulset_change_names_the_field_advises_a_new_generation_and_writes_nothing()
{
    let api = FakeApi::new().await;
    let mgr = manager(&api, "demo");
    let mut o = SpecOpts::default();
    ok(mgr.apply(&render(&o, G1), &opts(false)).await);
    api.clear_requests();
    o.size = "20Gi";
    let f = err(mgr.apply(&render(&o, G1), &opts(true)).await);
    let ApplyError::Immutable { object, fields, .. } = &f.error else {
        panic!("expected an immutable-field error, got {}", f.error);
    };
    assert!(object.starts_with(&format!("StatefulSet/data-consumer-{G1}")));
    assert_eq!(
        fields,
        &vec!["spec.volumeClaimTemplates[0].spec.resources.requests.storage".to_string()]
    );
    let msg = f.error.to_string();
    assert!(msg.contains("roll a new generation"), "{msg}");
    // The dry-run caught it: nothing was written (the source PVC's size change included),
    // and the StatefulSet was certainly not deleted.
    assert!(api.writes().is_empty(), "{:?}", api.writes());
    assert!(
        api.get(&format!("{STS}/data-consumer-{G1}"))
            .await
            .is_some()
    );
}

#[tokio::test]
async fn immutable_snapshot_source_names_the_field_advises_a_new_generation_and_writes_nothing() {
    let api = FakeApi::new().await;
    let mgr = manager(&api, "demo");
    ok(mgr
        .apply(&render(&SpecOpts::default(), G1), &opts(false))
        .await);
    // The same generation's snapshot now names another source PVC (a template edited in
    // place): the CEL rule of the VolumeSnapshot CRD forbids it.
    let mut g1 = render(&SpecOpts::default(), G1);
    let snap = g1
        .objects
        .iter_mut()
        .find(|o| o.id.kind == Kind::VolumeSnapshot)
        .unwrap();
    snap.value["spec"]["source"]["persistentVolumeClaimName"] = json!("data-copy");
    api.clear_requests();
    let f = err(mgr.apply(&g1, &opts(true)).await);
    let ApplyError::Immutable { object, fields, .. } = &f.error else {
        panic!("expected an immutable-field error, got {}", f.error);
    };
    assert_eq!(object, &format!("VolumeSnapshot/data-{G1} ({NS})"));
    assert_eq!(
        fields,
        &vec!["spec.source.persistentVolumeClaimName".to_string()]
    );
    assert_eq!(
        f.error.to_string(),
        format!(
            "VolumeSnapshot/data-{G1} ({NS}): cannot change immutable field spec.source.persistentVolumeClaimName; roll a new generation (--generation) instead, snaproll never deletes and recreates a live object"
        )
    );
    assert_eq!(
        f.to_string(),
        "apply stopped after 0 created, 0 configured; nothing was pruned"
    );
    // Caught by the dry-run: nothing written, the snapshot untouched.
    assert!(api.writes().is_empty(), "{:?}", api.writes());
    assert_eq!(
        api.get(&format!("{SNAPS}/data-{G1}"))
            .await
            .unwrap()
            .pointer("/spec/source/persistentVolumeClaimName"),
        Some(&json!("data"))
    );
}

#[tokio::test]
async fn dry_run_failure_stops_before_the_first_write() {
    let api = FakeApi::new().await;
    let mgr = manager(&api, "demo");
    api.inject(
        Fault::status(
            "PATCH",
            "/services/",
            422,
            "Invalid",
            "Service \"data-consumer\" is invalid: spec.ports: Required value",
        )
        .dry_run(true),
    );
    let f = err(mgr
        .apply(&render(&SpecOpts::default(), G1), &opts(true))
        .await);
    assert!(matches!(f.error, ApplyError::DryRun { .. }), "{}", f.error);
    assert!(
        f.error
            .to_string()
            .contains("Service/data-consumer (default)")
    );
    assert!(api.writes().is_empty());
    assert!(api.get(PARENT).await.is_none());
    assert_eq!(f.changes.summary.created, 0);
}

#[tokio::test]
async fn apply_dry_run_reports_changes_and_writes_nothing() {
    let api = FakeApi::new().await;
    let mgr = manager(&api, "demo");
    let set = render(&SpecOpts::default(), G1);
    let cs = ok(mgr
        .apply(
            &set,
            &ApplyOptions {
                dry_run: true,
                prune: true,
                ..ApplyOptions::default()
            },
        )
        .await);
    assert!(cs.dry_run);
    assert_eq!(cs.summary.created, set.objects.len());
    assert!(api.writes().is_empty());
    assert!(api.names(STS).await.is_empty());
}

#[tokio::test]
async fn diff_shows_a_unified_diff_without_server_fields_and_writes_nothing() {
    let api = FakeApi::new().await;
    let mgr = manager(&api, "demo");
    let mut o = SpecOpts::default();
    ok(mgr.apply(&render(&o, G1), &opts(false)).await);
    api.clear_requests();
    o.replicas = 4;
    let cs = ok(mgr.diff(&render(&o, G1), &DiffOptions::default()).await);
    assert!(cs.has_changes());
    let d = cs
        .changes
        .iter()
        .find_map(|c| c.diff.clone())
        .expect("a diff");
    assert!(
        d.contains("-  replicas: 3") && d.contains("+  replicas: 4"),
        "{d}"
    );
    for hidden in [
        "managedFields",
        "resourceVersion",
        "uid:",
        "creationTimestamp",
        "generation:",
        "applied-hash",
    ] {
        assert!(!d.contains(hidden), "{hidden} in {d}");
    }
    assert!(api.writes().is_empty());
    let cs = ok(mgr
        .diff(&render(&SpecOpts::default(), G1), &DiffOptions::default())
        .await);
    assert!(!cs.has_changes());
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

#[tokio::test]
async fn prune_deletes_statefulset_then_its_volumes_then_snapshot_then_the_rest() {
    let api = FakeApi::new().await;
    let (mgr, g2) = two_generations(&api).await;
    api.clear_requests();
    let cs = ok(mgr.apply(&g2, &opts(true)).await);
    let deletes: Vec<(String, String)> = api
        .requests()
        .iter()
        .filter(|r| r.method == "DELETE")
        .map(|r| (r.resource(), r.name().unwrap()))
        .collect();
    let expect: Vec<(String, String)> = vec![
        ("statefulsets".into(), format!("data-consumer-{G1}")),
        (
            "persistentvolumeclaims".into(),
            format!("data-data-consumer-{G1}-0"),
        ),
        (
            "persistentvolumeclaims".into(),
            format!("data-data-consumer-{G1}-1"),
        ),
        (
            "persistentvolumeclaims".into(),
            format!("data-data-consumer-{G1}-2"),
        ),
        ("volumesnapshots".into(), format!("data-{G1}")),
        ("pods".into(), format!("data-producer-{G1}")),
    ];
    assert_eq!(deletes, expect);
    assert_eq!(cs.summary.deleted, expect.len());
    // Every DELETE came after every apply.
    let reqs = api.requests();
    let last_patch = reqs
        .iter()
        .rposition(|r| r.method == "PATCH" && !r.is_dry_run() && !r.path.contains("configmaps"))
        .unwrap();
    let first_delete = reqs.iter().position(|r| r.method == "DELETE").unwrap();
    assert!(last_patch < first_delete);
    assert_eq!(api.names(STS).await, vec![format!("data-consumer-{G2}")]);
    assert_eq!(api.names(PVCS).await, vec!["data".to_string()]);
    // The next run is a no-op.
    api.clear_requests();
    ok(mgr.apply(&g2, &opts(true)).await);
    assert!(api.writes().is_empty());
}

#[tokio::test]
async fn volumes_are_left_to_the_retention_policy_and_hold_the_snapshot_until_they_are_gone() {
    let api = FakeApi::new().await;
    let o = SpecOpts {
        when_deleted: "Delete",
        ..SpecOpts::default()
    };
    let mgr = manager(&api, "demo");
    ok(mgr.apply(&render(&o, G1), &opts(true)).await);
    controller_pvcs(&api, "data", G1, 2).await;
    let sts = api.get(&format!("{STS}/data-consumer-{G1}")).await.unwrap();
    let pvc0 = format!("data-data-consumer-{G1}-0");
    let pvc1 = format!("data-data-consumer-{G1}-1");
    let g2 = render(&o, G2);
    let pvc_deletes = |api: &FakeApi| -> Vec<String> {
        api.requests()
            .iter()
            .filter(|r| r.method == "DELETE" && r.resource() == "persistentvolumeclaims")
            .map(|r| r.name().unwrap())
            .collect()
    };
    let skipped = |cs: &ChangeSet| -> Vec<(String, String)> {
        cs.with_action(Action::Skipped)
            .map(|c| (format!("{}/{}", c.kind, c.name), c.reason.clone().unwrap()))
            .collect()
    };
    let gc = "deleted with its StatefulSet by the cluster (persistentVolumeClaimRetentionPolicy whenDeleted: Delete); its snapshot waits";

    // Run 1 deletes the StatefulSet whose live spec says `whenDeleted: Delete`: its claims
    // are the cluster's to delete, and the snapshot waits for them.
    api.clear_requests();
    let cs = ok(mgr.apply(&g2, &opts(true)).await);
    assert_eq!(pvc_deletes(&api), Vec::<String>::new());
    assert_eq!(
        actions(&cs, Action::Deleted),
        vec![
            format!("StatefulSet/data-consumer-{G1}"),
            format!("Pod/data-producer-{G1}")
        ]
    );
    assert_eq!(
        skipped(&cs),
        vec![
            (format!("PersistentVolumeClaim/{pvc0}"), gc.to_string()),
            (format!("PersistentVolumeClaim/{pvc1}"), gc.to_string()),
            (
                format!("VolumeSnapshot/data-{G1}"),
                format!(
                    "PersistentVolumeClaim/{pvc0} ({NS}) and 1 more claims restored from it still exist; deleted once they are gone"
                )
            ),
        ]
    );
    assert!(api.names(SNAPS).await.contains(&format!("data-{G1}")));

    // The garbage collector has not got to claim 0 yet: it carries the owner reference the
    // StatefulSet controller sets under `whenDeleted: Delete`. Claim 1 has none (a cluster
    // that ignores the policy).
    api.apply_as(
        "statefulset-controller",
        &format!("{PVCS}/{pvc0}"),
        &json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": pvc0, "namespace": NS, "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "StatefulSet", "name": sts["metadata"]["name"],
                "uid": sts["metadata"]["uid"]}]}}),
        false,
    )
    .await;
    // Run 2: claim 1 is still there without an owner reference, so nothing else will delete
    // it; claim 0 is still the garbage collector's and keeps the snapshot.
    api.clear_requests();
    let cs = ok(mgr.apply(&g2, &opts(true)).await);
    assert_eq!(pvc_deletes(&api), vec![pvc1.clone()]);
    assert_eq!(
        actions(&cs, Action::Deleted),
        vec![format!("PersistentVolumeClaim/{pvc1}")]
    );
    assert_eq!(
        skipped(&cs),
        vec![
            (format!("PersistentVolumeClaim/{pvc0}"), gc.to_string()),
            (
                format!("VolumeSnapshot/data-{G1}"),
                format!(
                    "PersistentVolumeClaim/{pvc0} ({NS}) restored from it still exists; deleted once it is gone"
                )
            ),
        ]
    );

    // The garbage collector removes claim 0; the next run deletes the snapshot, and the one
    // after that writes nothing.
    api.delete(&format!("{PVCS}/{pvc0}")).await;
    let cs = ok(mgr.apply(&g2, &opts(true)).await);
    assert_eq!(
        actions(&cs, Action::Deleted),
        vec![format!("VolumeSnapshot/data-{G1}")]
    );
    assert_eq!(api.names(SNAPS).await, vec![format!("data-{G2}")]);
    api.clear_requests();
    ok(mgr.apply(&g2, &opts(true)).await);
    assert!(api.writes().is_empty(), "{:?}", api.writes());
}

#[tokio::test]
async fn failed_consumer_volume_delete_keeps_the_snapshot_and_is_retried_next_run() {
    let api = FakeApi::new().await;
    let (mgr, g2) = two_generations(&api).await;
    let pvc1 = format!("data-data-consumer-{G1}-1");
    api.inject(Fault::status(
        "DELETE",
        &format!("/persistentvolumeclaims/{pvc1}"),
        403,
        "Forbidden",
        "persistentvolumeclaims is forbidden",
    ));
    let f = err(mgr.apply(&g2, &opts(true)).await);
    assert!(matches!(f.error, ApplyError::Delete { .. }), "{}", f.error);
    assert_eq!(
        f.error.to_string(),
        format!(
            "deleting PersistentVolumeClaim/{pvc1} ({NS}) (kept in the inventory for the next run)"
        )
    );
    // The StatefulSet and the other claims went; the failed claim keeps the snapshot.
    assert_eq!(api.names(STS).await, vec![format!("data-consumer-{G2}")]);
    assert_eq!(
        api.names(PVCS).await,
        vec!["data".to_string(), pvc1.clone()]
    );
    assert_eq!(
        api.names(SNAPS).await,
        vec![format!("data-{G1}"), format!("data-{G2}")]
    );
    let snap = f
        .changes
        .get(&ObjectRef::new(
            Kind::VolumeSnapshot,
            Some(NS),
            &format!("data-{G1}"),
        ))
        .unwrap();
    assert_eq!(snap.action, Action::Skipped);
    assert_eq!(
        snap.reason.as_deref(),
        Some(format!("PersistentVolumeClaim/{pvc1} ({NS}) restored from it still exists; deleted once it is gone").as_str())
    );
    assert!(
        recorded_kinds(&api)
            .await
            .contains("VolumeSnapshot.snapshot.storage.k8s.io")
    );

    // The next run finds the claim by its labels although its StatefulSet is long gone,
    // deletes it, then the snapshot.
    api.clear_faults();
    api.clear_requests();
    let cs = ok(mgr.apply(&g2, &opts(true)).await);
    assert_eq!(
        actions(&cs, Action::Deleted),
        vec![
            format!("PersistentVolumeClaim/{pvc1}"),
            format!("VolumeSnapshot/data-{G1}")
        ]
    );
    let deletes: Vec<String> = api
        .requests()
        .iter()
        .filter(|r| r.method == "DELETE")
        .map(|r| format!("{}/{}", r.resource(), r.name().unwrap()))
        .collect();
    assert_eq!(
        deletes,
        vec![
            format!("persistentvolumeclaims/{pvc1}"),
            format!("volumesnapshots/data-{G1}")
        ]
    );
    assert_eq!(api.names(PVCS).await, vec!["data".to_string()]);
    assert_eq!(api.names(SNAPS).await, vec![format!("data-{G2}")]);
    api.clear_requests();
    ok(mgr.apply(&g2, &opts(true)).await);
    assert!(api.writes().is_empty(), "{:?}", api.writes());
}

#[tokio::test]
async fn consumer_volumes_are_not_applyset_members_and_never_pruned_on_their_own() {
    let api = FakeApi::new().await;
    let mgr = manager(&api, "demo");
    let g1 = render(&SpecOpts::default(), G1);
    ok(mgr.apply(&g1, &opts(true)).await);
    controller_pvcs(&api, "data", G1, 2).await;
    api.clear_requests();
    let cs = ok(mgr.apply(&g1, &opts(true)).await);
    assert_eq!(cs.summary.deleted, 0);
    assert!(api.writes().is_empty());
}

#[tokio::test]
async fn last_ready_generation_is_kept_until_the_new_one_is_ready() {
    let api = FakeApi::new().await;
    let (mgr, g2) = two_generations(&api).await;
    make_ready(&api, &format!("data-consumer-{G1}"), 3).await;
    let cs = ok(mgr.apply(&g2, &opts(true)).await);
    let skipped: Vec<(String, String)> = cs
        .with_action(Action::Skipped)
        .map(|c| (c.name.clone(), c.reason.clone().unwrap()))
        .collect();
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert!(
        skipped[0]
            .1
            .contains("last ready generation of dataset data"),
        "{skipped:?}"
    );
    assert!(
        skipped
            .iter()
            .any(|(n, r)| n == &format!("data-{G1}") && r.contains("data source")),
        "{skipped:?}"
    );
    // The producer Pod of G1 is not needed any more.
    assert_eq!(
        actions(&cs, Action::Deleted),
        vec![format!("Pod/data-producer-{G1}")]
    );
    assert!(recorded_kinds(&api).await.contains("StatefulSet.apps"));

    // Once G2 is ready, G1 goes.
    make_ready(&api, &format!("data-consumer-{G2}"), 3).await;
    let cs = ok(mgr.apply(&g2, &opts(true)).await);
    assert_eq!(cs.summary.deleted, 1 + 3 + 1, "{:?}", cs.changes);
    assert_eq!(api.names(SNAPS).await, vec![format!("data-{G2}")]);
}

#[tokio::test]
async fn empty_rendered_set_never_prunes() {
    let api = FakeApi::new().await;
    let (mgr, _) = two_generations(&api).await;
    api.clear_requests();
    let cs = ok(mgr.apply(&RenderedSet::default(), &opts(true)).await);
    assert_eq!(cs.summary.deleted, 0);
    assert!(cs.summary.skipped > 0);
    assert!(
        cs.changes
            .iter()
            .all(|c| c.reason.as_deref().unwrap().contains("empty"))
    );
    assert!(api.writes().is_empty(), "{:?}", api.writes());
}

#[tokio::test]
async fn objects_without_ownership_labels_or_of_another_rollout_are_never_pruned() {
    let api = FakeApi::new().await;
    let mgr = manager(&api, "demo");
    let id = mgr.applyset().id.clone();
    ok(mgr
        .apply(&render(&SpecOpts::default(), G1), &opts(true))
        .await);
    // Another rollout in the same namespace, and an object claiming our ApplySet but
    // without snaproll's ownership labels (e.g. edited by hand).
    let other = SpecOpts {
        rollout: "other",
        datasets: vec!["logs".into()],
        ..SpecOpts::default()
    };
    let other_mgr = manager(&api, "other");
    ok(other_mgr.apply(&render(&other, G1), &opts(true)).await);
    api.apply_as(
        "kubectl",
        &format!("{PODS}/hand-made"),
        &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hand-made", "namespace": NS,
            "labels": {"applyset.kubernetes.io/part-of": id, "snaproll.dev/rollout": "demo"}},
            "spec": {"containers": [{"name": "c", "image": "x"}]}}),
        false,
    )
    .await;
    // Rendering only a subset of demo (no StatefulSet) prunes demo's StatefulSet only.
    let partial = render_with(&SpecOpts::default(), |r| {
        let mut p = Plan::single(r, G1);
        for gens in p.datasets.values_mut() {
            gens[0] = GenerationPlan {
                statefulset: false,
                ..GenerationPlan::full(G1)
            };
        }
        p
    });
    let cs = ok(mgr.apply(&partial, &opts(true)).await);
    assert_eq!(
        actions(&cs, Action::Deleted),
        vec![format!("StatefulSet/data-consumer-{G1}")]
    );
    assert!(api.get(&format!("{PODS}/hand-made")).await.is_some());
    assert_eq!(api.names(STS).await, vec![format!("logs-consumer-{G1}")]);

    // The guard itself, on a live state a label selector would not have filtered.
    let mut live = LiveState::default();
    let unlabelled = ObjectRef::new(Kind::Pod, Some(NS), "unlabelled");
    live.objects.insert(
        unlabelled.clone(),
        json!({"metadata": {"name": "unlabelled", "labels": {"applyset.kubernetes.io/part-of": id}}}),
    );
    let foreign = ObjectRef::new(Kind::Pod, Some(NS), "foreign");
    live.objects.insert(
        foreign.clone(),
        json!({"metadata": {"name": "foreign", "labels": {"applyset.kubernetes.io/part-of": id,
            "app.kubernetes.io/managed-by": "snaproll", "snaproll.dev/rollout": "other"}}}),
    );
    let plan = plan_prune("demo", &id, &partial, &live, &PruneOptions::default());
    assert!(plan.deletes.is_empty());
    assert_eq!(plan.skipped.len(), 2);
    assert!(
        plan.skipped
            .iter()
            .all(|(_, r)| r.contains("ownership labels"))
    );
}

#[tokio::test]
async fn inventory_is_widened_before_apply_and_narrowed_after_prune() {
    let api = FakeApi::new().await;
    let mgr = manager(&api, "demo");
    let no_sts = render_with(&SpecOpts::default(), |r| {
        let mut p = Plan::single(r, G1);
        for gens in p.datasets.values_mut() {
            gens[0] = GenerationPlan {
                statefulset: false,
                ..GenerationPlan::full(G1)
            };
        }
        p
    });
    ok(mgr.apply(&no_sts, &opts(true)).await);
    assert!(!recorded_kinds(&api).await.contains("StatefulSet.apps"));

    // The StatefulSet's apply fails after the dry-run: the parent already records its kind,
    // so a later prune would find it whatever happened to this run.
    api.inject(
        Fault::status(
            "PATCH",
            "/statefulsets/",
            403,
            "Forbidden",
            "statefulsets.apps is forbidden",
        )
        .dry_run(false),
    );
    let f = err(mgr
        .apply(&render(&SpecOpts::default(), G1), &opts(true))
        .await);
    assert!(matches!(f.error, ApplyError::Apply { .. }));
    assert!(recorded_kinds(&api).await.contains("StatefulSet.apps"));
    api.clear_faults();
    ok(mgr
        .apply(&render(&SpecOpts::default(), G1), &opts(true))
        .await);
    assert!(recorded_kinds(&api).await.contains("StatefulSet.apps"));

    // Pruning the StatefulSet away narrows the parent again.
    let cs = ok(mgr.apply(&no_sts, &opts(true)).await);
    assert_eq!(
        actions(&cs, Action::Deleted),
        vec![format!("StatefulSet/data-consumer-{G1}")]
    );
    assert!(!recorded_kinds(&api).await.contains("StatefulSet.apps"));
    assert_eq!(cs.inventory.as_ref().unwrap().action, Action::Configured);
    // Without --prune the parent is never narrowed.
    ok(mgr
        .apply(&render(&SpecOpts::default(), G1), &opts(false))
        .await);
    ok(mgr.apply(&no_sts, &opts(false)).await);
    assert!(recorded_kinds(&api).await.contains("StatefulSet.apps"));
}

#[tokio::test]
async fn inventory_owned_fields_of_another_manager_never_block_a_run() {
    let api = FakeApi::new().await;
    let mgr = manager(&api, "demo");
    let g1 = render(&SpecOpts::default(), G1);
    ok(mgr.apply(&g1, &opts(true)).await);
    let all = recorded_kinds(&api).await;
    // A hand edit leaves `kubectl-annotate` owning the group-kinds annotation, narrower.
    api.apply_as(
        "kubectl-annotate",
        PARENT,
        &json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "snaproll-demo", "namespace": NS, "annotations": {
                "applyset.kubernetes.io/contains-group-kinds": "Pod"}}}),
        true,
    )
    .await;
    assert_eq!(
        recorded_kinds(&api).await,
        BTreeSet::from(["Pod".to_string()])
    );
    // Without --force-conflicts the run still takes the parent back (the members are not
    // forced: nothing of theirs changed), so the inventory records every kind again.
    let cs = ok(mgr.apply(&g1, &opts(true)).await);
    assert_eq!(cs.inventory.as_ref().unwrap().action, Action::Configured);
    assert_eq!(cs.summary.unchanged, 6);
    assert_eq!(recorded_kinds(&api).await, all);
}

#[tokio::test]
async fn failed_delete_stays_in_the_inventory_and_is_retried_next_run() {
    let api = FakeApi::new().await;
    let (mgr, g2) = two_generations(&api).await;
    api.inject(Fault::status(
        "DELETE",
        "/volumesnapshots/",
        403,
        "Forbidden",
        "volumesnapshots is forbidden",
    ));
    let f = err(mgr.apply(&g2, &opts(true)).await);
    assert!(matches!(f.error, ApplyError::Delete { .. }), "{}", f.error);
    assert!(
        f.error
            .to_string()
            .contains(&format!("VolumeSnapshot/data-{G1}"))
    );
    assert!(api.names(SNAPS).await.contains(&format!("data-{G1}")));
    assert!(
        recorded_kinds(&api)
            .await
            .contains("VolumeSnapshot.snapshot.storage.k8s.io")
    );
    api.clear_faults();
    let cs = ok(mgr.apply(&g2, &opts(true)).await);
    assert_eq!(
        actions(&cs, Action::Deleted),
        vec![format!("VolumeSnapshot/data-{G1}")]
    );
}

#[tokio::test]
async fn transient_errors_are_retried_with_bounded_backoff() {
    let api = FakeApi::new().await;
    let mgr = manager(&api, "demo");
    api.inject(
        Fault::status(
            "PATCH",
            "/services/",
            500,
            "InternalError",
            "etcd leader changed",
        )
        .dry_run(false)
        .times(2),
    );
    api.inject(Fault::status("GET", "/pods", 429, "TooManyRequests", "slow down").times(1));
    ok(mgr
        .apply(&render(&SpecOpts::default(), G1), &opts(true))
        .await);
    assert_eq!(mgr.stats().retries, 3);
    // Bounded: a permanent 503 gives up after the configured attempts, naming the object.
    api.inject(Fault::status(
        "GET",
        "/statefulsets",
        503,
        "ServiceUnavailable",
        "down",
    ));
    let f = err(mgr
        .apply(&render(&SpecOpts::default(), G1), &opts(true))
        .await);
    let msg = f.error.to_string();
    assert!(msg.contains("StatefulSet"), "{msg}");
    assert!(
        format!("{}", std::error::Error::source(&f.error).unwrap()).contains("after 3 attempts")
    );
}

/// A server's Retry-After is waited only up to the policy's longest delay: a 30 s request
/// does not stall a run whose `max_delay` is 5 ms.
#[tokio::test]
async fn retry_after_is_capped_by_the_longest_delay() {
    let api = FakeApi::new().await;
    let mgr = manager(&api, "demo");
    api.inject(
        Fault::status("GET", "/statefulsets", 429, "TooManyRequests", "slow down")
            .retry_after(30)
            .times(1),
    );
    let start = std::time::Instant::now();
    ok(mgr
        .apply(&render(&SpecOpts::default(), G1), &opts(true))
        .await);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(mgr.stats().retries, 1);
}

#[tokio::test]
async fn only_connection_failures_are_retried_among_errors_without_an_http_answer() {
    let api = FakeApi::new().await;
    let mgr = manager(&api, "demo");
    let g1 = render(&SpecOpts::default(), G1);
    // A reset connection is retried and the run succeeds.
    api.inject(Fault::reset("GET", "/statefulsets").times(2));
    ok(mgr.apply(&g1, &opts(true)).await);
    assert_eq!(mgr.stats().retries, 2);
    // An answer that does not decode is final: one attempt, the kind named, nothing written.
    mgr.reset_stats();
    api.clear_requests();
    api.inject(Fault::body("GET", "/statefulsets", "{not json"));
    let f = err(mgr.apply(&g1, &opts(true)).await);
    assert!(matches!(f.error, ApplyError::List { .. }), "{}", f.error);
    assert_eq!(
        f.error.to_string(),
        format!("listing StatefulSet objects in namespace {NS}")
    );
    assert_eq!(mgr.stats().retries, 0);
    let sts_lists = api
        .requests()
        .iter()
        .filter(|r| r.is_list() && r.resource() == "statefulsets")
        .count();
    assert_eq!(sts_lists, 1);
    assert!(api.writes().is_empty(), "{:?}", api.writes());
}

/// How a fault scenario arranges the cluster so its step happens at all.
#[derive(Clone, Copy, PartialEq)]
enum Arrange {
    /// Applying G2 over G1 as is.
    Plain,
    /// The parent is gone (deleted by hand), so the run dry-runs and writes it.
    NoParent,
    /// G2 renders no producer Pod, so the prune narrows the parent (drops `Pod`).
    NoProducer,
}

/// Which phase a step belongs to, for what must survive its failure.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Phase {
    /// Reads, dry-runs, the parent's widening and the applies: nothing may be deleted.
    BeforePrune,
    DeleteStatefulSet,
    DeleteClaims,
    DeleteSnapshot,
    DeletePod,
    Narrow,
}

/// One step of a run where a fault can strike.
struct Step {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    dry_run: Option<bool>,
    arrange: Arrange,
    phase: Phase,
}

const fn step(
    name: &'static str,
    method: &'static str,
    path: &'static str,
    dry_run: Option<bool>,
    arrange: Arrange,
    phase: Phase,
) -> Step {
    Step {
        name,
        method,
        path,
        dry_run,
        arrange,
        phase,
    }
}

const STEPS: [Step; 17] = [
    step(
        "read parent",
        "GET",
        "/configmaps/snaproll-demo",
        None,
        Arrange::Plain,
        Phase::BeforePrune,
    ),
    step(
        "get snapshot class",
        "GET",
        "/volumesnapshotclasses/csi-snapclass",
        None,
        Arrange::Plain,
        Phase::BeforePrune,
    ),
    step(
        "list statefulsets",
        "GET",
        "/statefulsets",
        None,
        Arrange::Plain,
        Phase::BeforePrune,
    ),
    step(
        "list snapshots",
        "GET",
        "/volumesnapshots",
        None,
        Arrange::Plain,
        Phase::BeforePrune,
    ),
    step(
        "list pods",
        "GET",
        "/pods",
        None,
        Arrange::Plain,
        Phase::BeforePrune,
    ),
    // The one PVC LIST is also where the prune finds the consumer PVCs.
    step(
        "list pvcs (consumer claims)",
        "GET",
        "/persistentvolumeclaims",
        None,
        Arrange::Plain,
        Phase::BeforePrune,
    ),
    step(
        "list services",
        "GET",
        "/services",
        None,
        Arrange::Plain,
        Phase::BeforePrune,
    ),
    step(
        "dry-run parent",
        "PATCH",
        "/configmaps/",
        Some(true),
        Arrange::NoParent,
        Phase::BeforePrune,
    ),
    step(
        "dry-run",
        "PATCH",
        "/statefulsets/",
        Some(true),
        Arrange::Plain,
        Phase::BeforePrune,
    ),
    step(
        "widen parent",
        "PATCH",
        "/configmaps/",
        Some(false),
        Arrange::NoParent,
        Phase::BeforePrune,
    ),
    step(
        "apply",
        "PATCH",
        "/statefulsets/",
        Some(false),
        Arrange::Plain,
        Phase::BeforePrune,
    ),
    step(
        "delete statefulset",
        "DELETE",
        "/statefulsets/",
        None,
        Arrange::Plain,
        Phase::DeleteStatefulSet,
    ),
    step(
        "delete consumer pvc",
        "DELETE",
        "/persistentvolumeclaims/data-data-consumer-",
        None,
        Arrange::Plain,
        Phase::DeleteClaims,
    ),
    step(
        "delete snapshot",
        "DELETE",
        "/volumesnapshots/",
        None,
        Arrange::Plain,
        Phase::DeleteSnapshot,
    ),
    step(
        "delete producer pod",
        "DELETE",
        "/pods/",
        None,
        Arrange::Plain,
        Phase::DeletePod,
    ),
    step(
        "delete producer pod (narrowing run)",
        "DELETE",
        "/pods/",
        None,
        Arrange::NoProducer,
        Phase::DeletePod,
    ),
    step(
        "narrow parent",
        "PATCH",
        "/configmaps/",
        Some(false),
        Arrange::NoProducer,
        Phase::Narrow,
    ),
];

enum Hit {
    Status(u16, &'static str, &'static str),
    Timeout,
}

const FAULTS: [(&str, Hit); 5] = [
    (
        "409",
        Hit::Status(
            409,
            "Conflict",
            "the object has been modified; please apply your changes to the latest version",
        ),
    ),
    (
        "422",
        Hit::Status(422, "Invalid", "metadata.labels: Invalid value"),
    ),
    (
        "429",
        Hit::Status(429, "TooManyRequests", "too many requests"),
    ),
    (
        "500",
        Hit::Status(500, "InternalError", "etcdserver: request timed out"),
    ),
    ("timeout", Hit::Timeout),
];

fn fault(step: &Step, hit: &Hit) -> Fault {
    let mut f = match hit {
        Hit::Status(code, reason, msg) => Fault::status(step.method, step.path, *code, reason, msg),
        Hit::Timeout => Fault::delay(step.method, step.path, Duration::from_millis(600)),
    };
    f.dry_run = step.dry_run;
    f
}

fn g1_claims() -> Vec<String> {
    (0..3)
        .map(|i| format!("data-data-consumer-{G1}-{i}"))
        .collect()
}

/// What survives of G1: StatefulSets, snapshots, producer Pods and consumer claims of G1.
async fn g1_left(api: &FakeApi) -> (bool, bool, bool, Vec<String>) {
    let g1 = |names: Vec<String>| names.iter().any(|n| n.ends_with(G1));
    let claims: Vec<String> = api
        .names(PVCS)
        .await
        .into_iter()
        .filter(|n| n.contains(G1))
        .collect();
    (
        g1(api.names(STS).await),
        g1(api.names(SNAPS).await),
        g1(api.names(PODS).await),
        claims,
    )
}

/// One scenario: `hit` at `step`, recovering within the retry budget (`permanent: false`,
/// transient faults only) or never. Panics naming the scenario on any broken expectation.
async fn fault_scenario(step: &Step, label: &str, hit: &Hit, permanent: bool) {
    let what = format!(
        "{} {label} at {}",
        if permanent { "permanent" } else { "clearing" },
        step.name
    );
    let api = FakeApi::new().await;
    let (mgr, g2) = two_generations(&api).await;
    let g2 = match step.arrange {
        Arrange::NoProducer => render_with(&SpecOpts::default(), |r| {
            let mut p = Plan::single(r, G2);
            for gens in p.datasets.values_mut() {
                gens[0].producer = false;
            }
            p
        }),
        _ => g2,
    };
    if step.arrange == Arrange::NoParent {
        api.delete(PARENT).await;
    }
    let converged = |api: FakeApi, mgr: Manager, g2: RenderedSet, what: String| async move {
        ok(mgr.apply(&g2, &opts(true)).await);
        assert_eq!(
            g1_left(&api).await,
            (false, false, false, Vec::new()),
            "{what}: G1 not gone after the re-run"
        );
        assert_eq!(
            api.names(STS).await,
            vec![format!("data-consumer-{G2}")],
            "{what}"
        );
        assert_eq!(api.names(SNAPS).await, vec![format!("data-{G2}")], "{what}");
        api.clear_requests();
        ok(mgr.apply(&g2, &opts(true)).await);
        assert!(
            api.writes().is_empty(),
            "{what}: not converged: {:?}",
            api.writes()
        );
    };
    api.clear_requests();
    if !permanent {
        api.inject(fault(step, hit).times(2));
        let cs = ok(mgr.apply(&g2, &opts(true)).await);
        assert_eq!(cs.summary.deleted, 6, "{what}: {:?}", cs.changes);
        assert!(mgr.stats().retries >= 2, "{what}: {:?}", mgr.stats());
        return converged(api, mgr, g2, what).await;
    }
    api.inject(fault(step, hit));
    let f = match mgr.apply(&g2, &opts(true)).await {
        Ok(c) => panic!("{what}: run succeeded: {:?}", c.summary),
        Err(f) => f,
    };
    let msg = format!("{}: {}", f, f.error);
    assert!(
        f.error.object().is_some(),
        "{what}: error names no object: {msg}"
    );
    // A timed-out request may still have been carried out by the server (the fake answers
    // late): the object the faulty DELETE was about may be gone, but everything that depends
    // on it must stay, since the run cannot know.
    let late = matches!(hit, Hit::Timeout);
    let faulty = |r: &Req| late && r.method == step.method && r.path.contains(step.path);
    let deleted: Vec<String> = api
        .requests()
        .iter()
        .filter(|r| r.method == "DELETE" && r.status < 300 && !faulty(r))
        .map(|r| format!("{}/{}", r.resource(), r.name().unwrap_or_default()))
        .collect();
    let mut left = g1_left(&api).await;
    if late {
        match step.phase {
            Phase::DeleteStatefulSet => left.0 = true,
            Phase::DeleteClaims => left.3 = g1_claims(),
            Phase::DeleteSnapshot => left.1 = true,
            Phase::DeletePod => left.2 = true,
            _ => {}
        }
    }
    let delete_error = |kind: &str| {
        assert!(
            matches!(f.error, ApplyError::Delete { .. }),
            "{what}: {msg}"
        );
        assert!(
            f.error
                .to_string()
                .starts_with(&format!("deleting {kind}/")),
            "{what}: {msg}"
        );
    };
    match step.phase {
        Phase::BeforePrune => {
            assert!(
                !api.requests().iter().any(|r| r.method == "DELETE"),
                "{what}: deleted after a failure: {:?}",
                api.requests()
            );
            assert_eq!(left, (true, true, true, g1_claims()), "{what}");
            assert!(msg.contains("nothing was pruned"), "{what}: {msg}");
        }
        Phase::DeleteStatefulSet => {
            delete_error("StatefulSet");
            // The StatefulSet stays, so its claims and the snapshot they restore from stay.
            assert_eq!(left, (true, true, false, g1_claims()), "{what}");
            assert_eq!(deleted, vec![format!("pods/data-producer-{G1}")], "{what}");
        }
        Phase::DeleteClaims => {
            delete_error("PersistentVolumeClaim");
            assert_eq!(left, (false, true, false, g1_claims()), "{what}");
            assert_eq!(
                deleted,
                vec![
                    format!("statefulsets/data-consumer-{G1}"),
                    format!("pods/data-producer-{G1}")
                ],
                "{what}"
            );
        }
        Phase::DeleteSnapshot => {
            delete_error("VolumeSnapshot");
            assert_eq!(left, (false, true, false, Vec::new()), "{what}");
        }
        Phase::DeletePod => {
            delete_error("Pod");
            assert_eq!(left, (false, false, true, Vec::new()), "{what}");
            assert!(recorded_kinds(&api).await.contains("Pod"), "{what}");
        }
        Phase::Narrow => {
            assert!(
                matches!(f.error, ApplyError::Parent { .. }),
                "{what}: {msg}"
            );
            assert_eq!(left, (false, false, false, Vec::new()), "{what}");
            // The wider inventory stays until a narrowing succeeds.
            assert!(recorded_kinds(&api).await.contains("Pod"), "{what}");
        }
    }
    api.clear_faults();
    converged(api.clone(), mgr, g2, what.clone()).await;
    if step.phase == Phase::Narrow || step.arrange == Arrange::NoProducer {
        assert!(!recorded_kinds(&api).await.contains("Pod"), "{what}");
    }
}

/// Every fault at every step: a permanent fault (409 and 422 always; 429, 500 and timeouts
/// once the retries run out) fails the run with the object named and deletes nothing that
/// the failed step protects (nothing at all before the prune; the claims and snapshot of a
/// StatefulSet that could not be deleted; the snapshot of claims that could not be); a
/// transient fault that clears is retried within the run. A re-run without the fault
/// converges and the run after that writes nothing.
#[tokio::test]
async fn every_fault_at_every_step_stops_safely_and_a_rerun_converges() {
    let mut scenarios = Vec::new();
    for step in &STEPS {
        for (label, hit) in &FAULTS {
            let transient = !matches!(hit, Hit::Status(409 | 422, ..));
            if transient {
                scenarios.push(fault_scenario(step, label, hit, false));
            }
            scenarios.push(fault_scenario(step, label, hit, true));
        }
    }
    assert_eq!(scenarios.len(), STEPS.len() * (2 + 3 * 2));
    use futures::StreamExt;
    futures::stream::iter(scenarios)
        .buffer_unordered(4)
        .collect::<Vec<()>>()
        .await;
}

#[tokio::test]
async fn diff_with_prune_shows_what_would_be_deleted() {
    let api = FakeApi::new().await;
    let (mgr, g2) = two_generations(&api).await;
    api.clear_requests();
    let cs = ok(mgr
        .diff(
            &g2,
            &DiffOptions {
                prune: true,
                ..DiffOptions::default()
            },
        )
        .await);
    let deleted = actions(&cs, Action::Deleted);
    assert_eq!(deleted.len(), 6, "{deleted:?}");
    let sts = cs
        .changes
        .iter()
        .find(|c| c.action == Action::Deleted && c.kind == "StatefulSet")
        .unwrap();
    assert!(sts.diff.as_deref().unwrap().contains("-kind: StatefulSet"));
    assert!(api.writes().is_empty(), "{:?}", api.writes());
}

/// Readiness as the rollout reads it: the per-kind rules over one live read.
async fn readiness_of(mgr: &Manager, id: &ObjectRef) -> Readiness {
    let live = mgr.live(&BTreeSet::new()).await.expect("live read");
    readiness(id.kind, live.get(id).expect("object exists"))
}

#[tokio::test]
async fn readiness_from_the_live_state_keeps_a_retrying_snapshot_pending_and_a_failed_pod_failed() {
    let api = FakeApi::new().await;
    let mgr = manager(&api, "demo");
    let set = render(&SpecOpts::default(), G1);
    ok(mgr.apply(&set, &opts(false)).await);
    let sts = ObjectRef::new(Kind::StatefulSet, Some(NS), &format!("data-consumer-{G1}"));
    let snap = ObjectRef::new(Kind::VolumeSnapshot, Some(NS), &format!("data-{G1}"));
    let pod = ObjectRef::new(Kind::Pod, Some(NS), &format!("data-producer-{G1}"));
    // A snapshot with an error is pending (the controller retries), not failed.
    api.set_status(
        &format!("{SNAPS}/data-{G1}"),
        json!({"readyToUse": false, "error": {"message": "quota exceeded"}}),
    )
    .await;
    let r = readiness_of(&mgr, &snap).await;
    assert!(
        matches!(&r, Readiness::Pending(reason) if reason.contains("quota exceeded")),
        "{r:?}"
    );

    api.set_status(&format!("{SNAPS}/data-{G1}"), json!({"readyToUse": true}))
        .await;
    make_ready(&api, &format!("data-consumer-{G1}"), 3).await;
    api.clear_requests();
    assert!(readiness_of(&mgr, &snap).await.is_ready());
    assert!(readiness_of(&mgr, &sts).await.is_ready());
    assert!(api.writes().is_empty(), "{:?}", api.writes());

    api.set_status(
        &format!("{PODS}/data-producer-{G1}"),
        json!({"phase": "Failed", "message": "OOMKilled"}),
    )
    .await;
    let r = readiness_of(&mgr, &pod).await;
    assert!(
        matches!(&r, Readiness::Failed(reason) if reason == "OOMKilled"),
        "{r:?}"
    );
}

#[tokio::test]
async fn narrowing_failure_keeps_the_wider_inventory_and_is_retried() {
    let api = FakeApi::new().await;
    let mgr = manager(&api, "demo");
    ok(mgr
        .apply(&render(&SpecOpts::default(), G1), &opts(true))
        .await);
    let no_sts = render_with(&SpecOpts::default(), |r| {
        let mut p = Plan::single(r, G1);
        for gens in p.datasets.values_mut() {
            gens[0] = GenerationPlan {
                statefulset: false,
                ..GenerationPlan::full(G1)
            };
        }
        p
    });
    api.inject(
        Fault::status("PATCH", "/configmaps/", 500, "InternalError", "etcd down").dry_run(false),
    );
    let f = err(mgr.apply(&no_sts, &opts(true)).await);
    assert!(matches!(f.error, ApplyError::Parent { .. }), "{}", f.error);
    assert_eq!(f.to_string(), "prune incomplete after 1 deleted");
    // Wider than needed is safe: the next run lists the kind again and finds nothing.
    assert!(recorded_kinds(&api).await.contains("StatefulSet.apps"));
    api.clear_faults();
    ok(mgr.apply(&no_sts, &opts(true)).await);
    assert!(!recorded_kinds(&api).await.contains("StatefulSet.apps"));
}

#[tokio::test]
async fn only_rendered_or_recorded_kinds_are_listed() {
    let api = FakeApi::new().await;
    let mgr = manager(&api, "demo");
    // A rollout using an existing snapshot class renders none: no cluster-wide LIST.
    let mut set = render(&SpecOpts::default(), G1);
    set.objects
        .retain(|o| o.id.kind != Kind::VolumeSnapshotClass);
    ok(mgr.apply(&set, &opts(true)).await);
    ok(mgr.apply(&set, &opts(true)).await);
    assert!(
        !api.requests()
            .iter()
            .any(|r| r.resource() == "volumesnapshotclasses"),
        "{:?}",
        api.requests()
    );
}

#[tokio::test]
async fn snapshot_classes_are_never_pruned_and_stay_recorded() {
    let api = FakeApi::new().await;
    let mgr = manager(&api, "demo");
    ok(mgr
        .apply(&render(&SpecOpts::default(), G1), &opts(true))
        .await);
    // The spec switches to an existing class: the old one may still be needed to delete
    // old snapshots, so it stays, and so does its kind in the inventory.
    let mut set = render(&SpecOpts::default(), G1);
    set.objects
        .retain(|o| o.id.kind != Kind::VolumeSnapshotClass);
    let cs = ok(mgr.apply(&set, &opts(true)).await);
    assert_eq!(cs.summary.deleted, 0);
    assert!(api.get(&format!("{CLASSES}/csi-snapclass")).await.is_some());
    assert!(
        recorded_kinds(&api)
            .await
            .contains("VolumeSnapshotClass.snapshot.storage.k8s.io")
    );
}

#[tokio::test]
async fn missing_snapshot_crds_are_named() {
    let api = FakeApi::new().await;
    let mgr = manager(&api, "demo");
    api.inject(Fault::status(
        "GET",
        "/volumesnapshots",
        404,
        "NotFound",
        "the server could not find the requested resource",
    ));
    let f = err(mgr
        .apply(&render(&SpecOpts::default(), G1), &opts(true))
        .await);
    let msg = f.error.to_string();
    assert!(
        msg.contains("does not serve VolumeSnapshot (snapshot.storage.k8s.io/v1)"),
        "{msg}"
    );
    assert!(api.writes().is_empty());
}

#[tokio::test]
async fn permanent_timeouts_fail_the_run_without_pruning() {
    let api = FakeApi::new().await;
    let (mgr, g2) = two_generations(&api).await;
    api.inject(Fault::delay("PATCH", "/statefulsets/", Duration::from_millis(600)).dry_run(false));
    let f = err(mgr.apply(&g2, &opts(true)).await);
    assert!(matches!(f.error, ApplyError::Apply { .. }), "{}", f.error);
    assert!(
        std::error::Error::source(&f.error)
            .unwrap()
            .to_string()
            .contains("no answer within")
    );
    assert!(!api.requests().iter().any(|r| r.method == "DELETE"));
    api.clear_faults();
    ok(mgr.apply(&g2, &opts(true)).await);
    assert_eq!(api.names(STS).await, vec![format!("data-consumer-{G2}")]);
}
