//! Reading the live state: which kinds are listed, missing CRDs, readiness as the rollout
//! reads it.

use super::*;

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
