//! Pruning: order, guards, consumer volumes, the ApplySet inventory widened and narrowed.

use super::*;

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
    assert_converged(&api, &mgr, &g2).await;
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
    assert_converged(&api, &mgr, &g2).await;
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
    assert_converged(&api, &mgr, &g2).await;
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
