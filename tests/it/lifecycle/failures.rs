//! Failures: a producer, a snapshot or a StatefulSet that does not get ready, and restore sizes.

use super::*;

#[test]
fn failed_producer_fails_its_generation_and_the_previous_one_keeps_serving() {
    let w = serving_day1(Mode::Push, Knobs::default());
    w.behave(G2, |b| b.producer_fails = Some("OOMKilled".into()));
    w.run(D2);
    w.play();
    // Exit code 1: a generation failed; the run itself worked.
    let r = w.run_code(D2, &[], 1);
    assert_eq!(
        r.states("data"),
        [format!("{G1} serving"), format!("{G2} failed")]
    );
    assert_eq!(r.detail("data", G2), "producer failed: OOMKilled");
    // No snapshot of a failed producer's volume, and nothing retires.
    assert_eq!(w.take_events(), strs(&["+Pod/data-producer-2021-07-16"]));
    // Re-runs change nothing and keep reporting it.
    w.api().clear_requests();
    let r = w.run_code(D2, &[], 1);
    assert!(w.api().writes().is_empty());
    assert!(!r.committed());
    let (code, status, _) = w.status(D2);
    assert_eq!(code, 1);
    assert_eq!(status[0]["generations"][1]["state"], "failed");
    // The next day starts afresh; the failed generation is reported (exit code 1) until the
    // new one serves, then it retires with the old one.
    let r = w.run_code(D3, &[], 1);
    assert_eq!(
        r.states("data"),
        [
            format!("{G1} serving"),
            format!("{G2} failed"),
            format!("{G3} producing")
        ]
    );
    let r = w.settle_allowing(D3, 12, &[0, 1]);
    assert_eq!(r.code, 0);
    assert_eq!(r.states("data"), [format!("{G3} serving")]);
    assert!(
        w.objects().iter().all(|o| !o.1.contains(G2)),
        "{:?}",
        w.objects()
    );
}

#[test]
fn crash_looping_producer_fails_its_generation_after_max_restarts() {
    let w = serving_day1(Mode::Push, Knobs::default());
    w.behave(G2, |b| b.crash_restarts = 4);
    w.run(D2);
    // The producer carries the deadline the kubelet enforces (12h by default).
    let pod = w
        .server
        .block_on(w.api().get(&format!("{PODS}/data-producer-{G2}")))
        .unwrap();
    assert_eq!(
        pod.pointer("/spec/activeDeadlineSeconds"),
        Some(&json!(43200))
    );
    assert_eq!(
        pod.pointer("/spec/restartPolicy"),
        Some(&json!("OnFailure"))
    );
    // 4 restarts, phase Running: still producing (maxRestarts 6).
    w.play();
    let r = w.run(D2);
    assert_eq!(
        r.states("data"),
        [format!("{G1} serving"), format!("{G2} producing")]
    );
    assert_eq!(
        r.detail("data", G2),
        "producer phase Running, 4 restarts (last: Error)"
    );
    // 8 restarts: a crash loop. The generation fails, the old one keeps serving.
    w.play();
    let r = w.run_code(D2, &[], 1);
    assert_eq!(
        r.states("data"),
        [format!("{G1} serving"), format!("{G2} failed")]
    );
    assert_eq!(
        r.detail("data", G2),
        "producer failed: crash loop: 8 restarts, more than producer.maxRestarts 6 (last: Error, exit code 1)"
    );
    // No snapshot of a crash-looping producer's volume; status exits 1.
    assert_eq!(w.take_events(), strs(&["+Pod/data-producer-2021-07-16"]));
    let (code, status, _) = w.status(D2);
    assert_eq!(code, 1);
    assert_eq!(status[0]["generations"][1]["state"], "failed");
    // It no longer blocks: the next day starts afresh and takes over.
    w.behave(G2, |b| b.crash_restarts = 0);
    let r = w.run_code(D3, &[], 1);
    assert_eq!(r.states("data")[2], format!("{G3} producing"));
}

#[test]
fn producer_past_its_deadline_fails_with_deadline_exceeded() {
    let w = serving_day1(Mode::Push, Knobs::default());
    w.behave(G2, |b| b.producer_deadline = true);
    w.run(D2);
    w.play();
    let r = w.run_code(D2, &[], 1);
    assert_eq!(
        r.states("data"),
        [format!("{G1} serving"), format!("{G2} failed")]
    );
    assert_eq!(
        r.detail("data", G2),
        "producer failed: DeadlineExceeded: Pod was active on the node longer than the specified deadline"
    );
}

#[test]
fn snapshot_error_is_reported_and_the_rollout_continues_when_it_clears() {
    let w = serving_day1(Mode::Push, Knobs::default());
    w.behave(G2, |b| {
        b.snapshot_holds = true;
        b.snapshot_error = Some("Failed to create snapshot: quota exceeded".into());
    });
    w.run(D2);
    w.play();
    w.run(D2);
    w.play();
    let r = w.run(D2);
    assert_eq!(
        r.states("data"),
        [format!("{G1} serving"), format!("{G2} snapshotting")]
    );
    assert!(
        r.detail("data", G2).contains("quota exceeded"),
        "{}",
        r.detail("data", G2)
    );
    w.quiet(D2);
    // The snapshot controller retries and succeeds: the rollout goes on.
    w.behave(G2, |b| {
        b.snapshot_holds = false;
        b.snapshot_error = None;
    });
    w.play();
    let r = w.settle(D2, 10);
    assert_eq!(r.states("data"), [format!("{G2} serving")]);
}

#[test]
fn snapshot_that_never_becomes_ready_fails_after_the_timeout_and_the_old_generation_serves() {
    let w = serving_day1(Mode::Push, Knobs::default());
    w.behave(G2, |b| b.snapshot_holds = true);
    w.run(D2);
    w.play();
    w.run(D2);
    w.play();
    // Measured against the snapshot's creation time: the fake's clock is the real one.
    let late = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_hours(7))
        .unwrap()
        .to_string();
    let r = w.run_code(&late, &["--generation", G2], 1);
    let detail = r.detail("data", G2);
    assert!(
        detail.starts_with("snapshot data-2021-07-16 not ready after 6h"),
        "{detail}"
    );
    assert_eq!(
        r.states("data"),
        [format!("{G1} serving"), format!("{G2} failed")]
    );
    // A shorter timeout fails it sooner; the old generation still serves.
    let now = jiff::Timestamp::now().to_string();
    let r = w.run_code(&now, &["--generation", G2, "--snapshot-timeout", "0s"], 1);
    assert_eq!(r.states("data")[1], format!("{G2} failed"));
    assert!(
        w.objects()
            .contains(&(5, "StatefulSet/consumer-2021-07-15".to_string()))
    );
    assert!(
        !w.objects()
            .iter()
            .any(|o| o.1 == "StatefulSet/consumer-2021-07-16")
    );
    // The timeout is not final: a snapshot that becomes ready after it (the controller kept
    // retrying) resumes the rollout, since nothing newer has started.
    w.behave(G2, |b| b.snapshot_holds = false);
    w.play();
    let r = w.run_code(&late, &["--generation", G2], 0);
    assert_eq!(
        r.states("data"),
        [format!("{G1} serving"), format!("{G2} rolling-out")]
    );
}

#[test]
fn statefulset_that_never_becomes_ready_keeps_the_old_generation_serving_and_wait_times_out() {
    let w = serving_day1(Mode::Push, Knobs::default());
    w.behave(G2, |b| b.sts_holds = true);
    for _ in 0..4 {
        w.run(D2);
        w.play();
    }
    let r = w.quiet(D2);
    assert_eq!(
        r.states("data"),
        [format!("{G1} serving"), format!("{G2} rolling-out")]
    );
    assert_eq!(r.detail("data", G2), "0/3 replicas ready");
    assert!(
        w.objects()
            .contains(&(5, "StatefulSet/consumer-2021-07-15".to_string()))
    );
    // --wait gives up after its timeout with the cluster exit code and what is pending.
    let out = w
        .command(
            D2,
            &["--wait", "--timeout", "1s", "--poll-interval", "200ms"],
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("timed out after 1s waiting for the rollout to settle")
            && stderr.contains("2021-07-16 rolling out"),
        "{stderr}"
    );
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with("error:")).count(),
        1
    );
    w.check_invariants("after reconcile --wait");
}

#[test]
fn statefulset_generation_lag_and_revision_mismatch_keep_it_rolling_out() {
    let w = serving_day1(Mode::Push, Knobs::default());
    for _ in 0..2 {
        w.run(D2);
        w.play();
    }
    let r = w.run(D2);
    assert_eq!(r.states("data")[1], format!("{G2} rolling-out"));
    let sts = format!("{STS}/consumer-{G2}");
    let status = |v: Value| w.server.block_on(w.api().set_status(&sts, v));
    // The controller has not observed the spec yet, though it reports every replica ready.
    status(
        json!({"observedGeneration": 0, "replicas": 3, "readyReplicas": 3,
                  "updatedReplicas": 3}),
    );
    let r = w.run(D2);
    assert_eq!(
        r.detail("data", G2),
        "controller has observed generation 0 of 1"
    );
    // Ready but without updatedReplicas (a merge patch's null removes it): nothing is known
    // to be updated.
    status(
        json!({"observedGeneration": 1, "replicas": 3, "readyReplicas": 3,
                  "updatedReplicas": null, "currentRevision": null, "updateRevision": null}),
    );
    let r = w.run(D2);
    assert_eq!(r.detail("data", G2), "0/3 replicas updated");
    // Updated and ready, but the revisions still differ.
    status(
        json!({"observedGeneration": 1, "replicas": 3, "readyReplicas": 3,
                  "updatedReplicas": 3, "currentRevision": "r1", "updateRevision": "r2"}),
    );
    let r = w.run(D2);
    assert_eq!(r.detail("data", G2), "revision r1 rolling to r2");
    assert_eq!(
        r.states("data"),
        [format!("{G1} serving"), format!("{G2} rolling-out")]
    );
    // The old generation served throughout; once the controller catches up, the new one takes over.
    w.play();
    let r = w.settle(D2, 10);
    assert_eq!(r.states("data"), [format!("{G2} serving")]);
}

#[test]
fn statefulset_waits_for_the_snapshot_restore_size() {
    let w = World::new(Mode::Push, Knobs::default());
    w.behave(G1, |b| b.restore_size = String::new());
    for _ in 0..2 {
        w.run(D1);
        w.play();
    }
    // Ready to use, no restoreSize: no StatefulSet yet (its claim size would be a guess that
    // an immutable claim template could not correct).
    let r = w.quiet(D1);
    assert_eq!(r.states("data"), [format!("{G1} snapshotting")]);
    assert_eq!(
        r.detail("data", G1),
        format!(
            "snapshot data-{G1} ready to use but reports no restoreSize yet (the claim size depends on it)"
        )
    );
    assert!(!w.objects().iter().any(|o| o.1.starts_with("StatefulSet/")));
    // The snapshot controller reports it: the StatefulSet asks for at least that.
    w.server.block_on(w.api().set_status(
        &format!("{SNAPS}/data-{G1}"),
        json!({"restoreSize": "11Gi"}),
    ));
    w.settle(D1, 6);
    let sts = w
        .server
        .block_on(w.api().get(&format!("{STS}/consumer-{G1}")))
        .unwrap();
    assert_eq!(
        sts.pointer("/spec/volumeClaimTemplates/0/spec/resources/requests/storage"),
        Some(&json!("11Gi"))
    );
}

#[test]
fn claims_request_the_snapshot_restore_size_when_it_is_larger() {
    let w = World::new(Mode::Push, Knobs::default());
    w.behave(G1, |b| b.restore_size = "12Gi".into());
    w.settle(D1, 8);
    let sts = w
        .server
        .block_on(w.api().get(&format!("{STS}/consumer-{G1}")))
        .unwrap();
    assert_eq!(
        sts.pointer("/spec/volumeClaimTemplates/0/spec/resources/requests/storage"),
        Some(&json!("12Gi"))
    );
    // The claims the controller made from it too.
    let pvc = w
        .server
        .block_on(w.api().get(&format!("{PVCS}/data-consumer-{G1}-0")))
        .unwrap();
    assert_eq!(
        pvc.pointer("/spec/resources/requests/storage"),
        Some(&json!("12Gi"))
    );
    // The source PVC keeps the size the spec asks for.
    let src = w
        .server
        .block_on(w.api().get(&format!("{PVCS}/data")))
        .unwrap();
    assert_eq!(
        src.pointer("/spec/resources/requests/storage"),
        Some(&json!("10Gi"))
    );
    w.quiet(D1);
}
