//! Writing: create, update, unchanged (zero writes), conflicts, immutable fields, dry-run
//! and diff.

use super::*;

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
    // The five kinds rendered (no verify Job: the parent records no Job kind) and two GETs.
    assert_eq!(reqs.len(), lists.len() + 2);
    assert_eq!(lists.len(), Kind::ALL.len() - 2);
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
    std::sync::Arc::make_mut(&mut svc.value)["metadata"]["labels"]
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
    std::sync::Arc::make_mut(&mut snap.value)["spec"]["source"]["persistentVolumeClaimName"] =
        json!("data-copy");
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
