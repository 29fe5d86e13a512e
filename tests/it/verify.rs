//! `consumer.verify`: once a generation's snapshot is ready, a Job checks a claim restored from
//! it before the StatefulSet exists. Complete: the generation rolls out as without verify.
//! Failed (or timed out): the generation fails with the Job's message, the previous one keeps
//! serving untouched, and the Job and its claim are pruned; the outcome stays on the snapshot.

use serde_json::Value;

use crate::lifecycle::{
    D1, D2, D3, G1, G2, G3, JOBS, Knobs, Mode, PVCS, SNAPS, STS, SVCS, World, generation_of, names,
    serving_day1, str_of,
};

fn verified() -> Knobs {
    Knobs {
        verify: true,
        ..Knobs::default()
    }
}

fn verify_claims(w: &World, g: &str) -> Vec<Value> {
    w.items(PVCS)
        .into_iter()
        .filter(|v| {
            generation_of(v) == g
                && v.pointer("/metadata/labels/app.kubernetes.io~1component")
                    == Some(&Value::from("verify-volume"))
        })
        .collect()
}

fn verify_record(w: &World, g: &str) -> Option<String> {
    w.items(SNAPS)
        .iter()
        .find(|v| generation_of(v) == g)
        .and_then(|v| v.pointer("/metadata/annotations/snaproll.dev~1verify"))
        .map(str_of)
}

#[test]
fn a_passing_verify_job_runs_before_the_statefulset_which_then_rolls_out() {
    for mode in [Mode::Push, Mode::Pull, Mode::Direct] {
        let w = World::new(mode, verified());
        let r = w.run(D1);
        assert_eq!(r.states("data"), [format!("{G1} producing")], "{mode:?}");
        w.play();
        let r = w.run(D1);
        assert_eq!(r.states("data"), [format!("{G1} snapshotting")], "{mode:?}");
        w.play();
        // Snapshot ready: the verify Job and its claim, no StatefulSet.
        let r = w.run(D1);
        assert_eq!(r.states("data"), [format!("{G1} verifying")], "{mode:?}");
        assert_eq!(
            r.detail("data", G1),
            "snapshot ready; verify Job created",
            "{mode:?}"
        );
        assert_eq!(
            names(&w, JOBS, G1),
            [format!("data-{G1}-verify")],
            "{mode:?}"
        );
        let claims = verify_claims(&w, G1);
        assert_eq!(claims.len(), 1, "{mode:?}");
        assert_eq!(
            claims[0]["spec"]["dataSource"]["name"],
            format!("data-{G1}")
        );
        assert!(names(&w, STS, G1).is_empty(), "{mode:?}");
        let job = &w.items(JOBS)[0];
        assert_eq!(job["spec"]["backoffLimit"], 0, "{mode:?}");
        assert_eq!(job["spec"]["activeDeadlineSeconds"], 1800, "{mode:?}");
        let pod = &job["spec"]["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "Never", "{mode:?}");
        assert_eq!(pod["volumes"][0]["persistentVolumeClaim"]["readOnly"], true);
        assert_eq!(
            pod["volumes"][0]["persistentVolumeClaim"]["claimName"],
            format!("data-{G1}-verify")
        );
        assert_eq!(pod["containers"][0]["volumeMounts"][0]["readOnly"], true);
        // Nothing new while the Job runs: no write, no commit.
        w.quiet(D1);
        w.play();
        // Complete: the StatefulSet is created; the Job and its claim leave; the snapshot
        // records the outcome.
        let r = w.run(D1);
        assert_eq!(r.states("data"), [format!("{G1} rolling-out")], "{mode:?}");
        assert_eq!(names(&w, STS, G1), [format!("consumer-{G1}")], "{mode:?}");
        assert!(names(&w, JOBS, G1).is_empty(), "{mode:?}");
        assert!(verify_claims(&w, G1).is_empty(), "{mode:?}");
        assert_eq!(verify_record(&w, G1).as_deref(), Some("passed"), "{mode:?}");
        let r = w.settle(D1, 6);
        assert_eq!(r.states("data"), [format!("{G1} serving")], "{mode:?}");
        w.quiet(D1);
        // The StatefulSet appeared only after the Job: the event log says so.
        let events = w.take_events();
        let job = events
            .iter()
            .position(|e| e == &format!("+Job/data-{G1}-verify"))
            .expect("the Job was created");
        let sts = events
            .iter()
            .position(|e| e == &format!("+StatefulSet/consumer-{G1}"))
            .expect("the StatefulSet was created");
        assert!(job < sts, "{mode:?}: {events:?}");
        // Day 2 verifies too, and day 1 retires as usual.
        let r = w.settle(D2, 16);
        assert_eq!(r.states("data"), [format!("{G2} serving")], "{mode:?}");
        assert!(w.objects().iter().all(|o| !o.1.contains(G1)), "{mode:?}");
        assert_eq!(verify_record(&w, G2).as_deref(), Some("passed"), "{mode:?}");
    }
}

#[test]
fn a_failing_verify_job_fails_its_generation_and_the_old_one_keeps_serving_untouched() {
    for mode in [Mode::Push, Mode::Direct] {
        let w = serving_day1(mode, verified());
        w.behave(G2, |b| {
            b.verify_fails = Some("data/shard-3.bin: FAILED".into());
        });
        let svc = w.server.block_on(w.api().get(&format!("{SVCS}/consumer")));
        let sts = w
            .server
            .block_on(w.api().get(&format!("{STS}/consumer-{G1}")));
        let mut writes = Vec::new();
        let mut last = None;
        for _ in 0..8 {
            w.api().clear_requests();
            let r = w.run_allowing(D2, &[], &[0, 1]);
            writes.extend(w.api().writes().into_iter().map(|r| r.path));
            let failed = r.code == 1;
            last = Some(r);
            if failed {
                break;
            }
            w.play();
        }
        let r = last.unwrap();
        assert_eq!(r.code, 1, "{mode:?}: {}", r.stdout);
        assert_eq!(
            r.states("data"),
            [format!("{G1} serving"), format!("{G2} failed")],
            "{mode:?}"
        );
        let why = "verify failed: data/shard-3.bin: FAILED (BackoffLimitExceeded: Job has reached the specified backoff limit)";
        assert_eq!(r.detail("data", G2), why, "{mode:?}");
        // Nothing of the new StatefulSet, ever; the Job and its claim are gone; the outcome
        // stays on the snapshot; the old generation and the Service were not written.
        assert!(
            w.take_events()
                .iter()
                .all(|e| !e.contains(&format!("StatefulSet/consumer-{G2}"))),
            "{mode:?}"
        );
        assert!(names(&w, STS, G2).is_empty(), "{mode:?}");
        assert!(names(&w, JOBS, G2).is_empty(), "{mode:?}");
        assert!(verify_claims(&w, G2).is_empty(), "{mode:?}");
        assert_eq!(
            verify_record(&w, G2),
            Some(format!(
                "failed: {}",
                why.trim_start_matches("verify failed: ")
            )),
            "{mode:?}"
        );
        assert!(
            writes
                .iter()
                .all(|p| !p.starts_with(SVCS) && !p.starts_with(STS)),
            "{mode:?}: {writes:?}"
        );
        let spec = |v: Option<Value>| v.map(|v| v["spec"].clone());
        assert_eq!(
            spec(w.server.block_on(w.api().get(&format!("{SVCS}/consumer")))),
            spec(svc.clone()),
            "{mode:?}"
        );
        assert_eq!(
            spec(
                w.server
                    .block_on(w.api().get(&format!("{STS}/consumer-{G1}")))
            ),
            spec(sts.clone()),
            "{mode:?}"
        );
        // Re-runs change nothing and keep reporting it.
        w.api().clear_requests();
        let r = w.run_code(D2, &[], 1);
        assert!(w.api().writes().is_empty(), "{mode:?}");
        assert_eq!(r.detail("data", G2), why, "{mode:?}");
        let (code, status, _) = w.status(D2);
        assert_eq!(code, 1, "{mode:?}");
        assert_eq!(status[0]["generations"][1]["state"], "failed", "{mode:?}");
        // The next day starts afresh and, verified, replaces both.
        let r = w.settle_allowing(D3, 16, &[0, 1]);
        assert_eq!(r.code, 0, "{mode:?}");
        assert_eq!(r.states("data"), [format!("{G3} serving")], "{mode:?}");
        assert!(
            w.objects()
                .iter()
                .all(|o| !o.1.contains(G2) && !o.1.contains(G1)),
            "{mode:?}: {:?}",
            w.objects()
        );
    }
}

#[test]
fn a_verify_job_past_its_timeout_fails_the_generation() {
    let w = serving_day1(Mode::Push, verified());
    w.behave(G2, |b| b.verify_holds = true);
    for _ in 0..3 {
        w.run(D2);
        w.play();
    }
    let r = w.run(D2);
    assert_eq!(
        r.states("data"),
        [format!("{G1} serving"), format!("{G2} verifying")]
    );
    assert_eq!(r.detail("data", G2), "verify Job running");
    // 31 minutes after the Job was created (the fake stamps creation with the real clock).
    let job = &w.items(JOBS)[0];
    let created: jiff::Timestamp = str_of(&job["metadata"]["creationTimestamp"])
        .parse()
        .unwrap();
    let later = created
        .checked_add(jiff::SignedDuration::from_mins(31))
        .unwrap()
        .to_string();
    let r = w.run_code(&later, &[], 1);
    assert_eq!(
        r.detail("data", G2),
        "verify failed: verify Job did not complete within 30m"
    );
    assert!(names(&w, STS, G2).is_empty());
    assert!(names(&w, JOBS, G2).is_empty());
    assert!(verify_claims(&w, G2).is_empty());
}

#[test]
fn offline_renders_the_verify_job_for_the_new_generation_only() {
    let w = World::new(Mode::Offline, verified());
    w.run(D1);
    let files = w.git_files();
    assert!(
        files.contains(&format!("70-job-data-{G1}-verify.yaml")),
        "{files:?}"
    );
    assert!(
        files.contains(&format!("20-persistentvolumeclaim-data-{G1}-verify.yaml")),
        "{files:?}"
    );
    // The next day, the serving generation's verify objects leave Git.
    w.run(D2);
    let files = w.git_files();
    assert!(
        files.contains(&format!("70-job-data-{G2}-verify.yaml")),
        "{files:?}"
    );
    assert!(
        files.iter().all(|f| !f.contains(&format!("{G1}-verify"))),
        "{files:?}"
    );
}
