use super::*;
use crate::spec::{self, Dataset};
use serde_json::json;

fn dataset(keep: u32) -> Dataset {
    let text = format!(
        "apiVersion: snaproll.dev/v1alpha1\nkind: DatasetRollout\nmetadata: {{name: demo}}\nspec:\n  snapshotClass: {{name: c, driver: d}}\n  datasets:\n    - name: data\n      storage: {{size: 10Gi}}\n      producer: {{image: busybox}}\n      generations: {{keep: {keep}}}\n      consumer: {{name: consumer, replicas: 3, image: busybox}}\n"
    );
    spec::parse_str("t.yaml", &text)
        .unwrap()
        .rollout
        .spec
        .datasets[0]
        .clone()
}

fn opts(today: &str) -> Options {
    Options {
        generation: Default::default(),
        today: today.to_string(),
        now: "2021-07-16T12:00:00Z".parse().unwrap(),
        snapshot_timeout: Some(DEFAULT_SNAPSHOT_TIMEOUT),
        start: true,
        rollout: "demo".into(),
        namespace: "default".into(),
    }
}

fn meta(ts: &str) -> Value {
    json!({"creationTimestamp": ts, "name": "x"})
}

fn pod(phase: &str, ts: &str) -> Value {
    json!({"metadata": meta(ts), "status": {"phase": phase}})
}

fn snap(ready: bool, ts: &str) -> Value {
    json!({"metadata": meta(ts), "status": {"readyToUse": ready, "restoreSize": "12Gi"}})
}

fn sts(ready: i64, ts: &str) -> Value {
    json!({"metadata": {"creationTimestamp": ts, "generation": 1}, "spec": {"replicas": 3},
           "status": {"observedGeneration": 1, "readyReplicas": ready, "updatedReplicas": 3}})
}

fn serving(id: &str, ts: &str) -> Observed {
    Observed {
        id: id.into(),
        producer: Some(pod("Succeeded", ts).into()),
        snapshot: Some(snap(true, ts).into()),
        snapshots: Vec::new(),
        statefulset: Some(sts(3, ts).into()),
        claims: 3,
        ..Observed::default()
    }
}

#[test]
fn a_new_day_starts_a_producer_and_keeps_the_old_generation_serving() {
    let d = dataset(1);
    let old = serving("2021-07-15", "2021-07-15T01:00:00Z");
    let dec = decide(&d, std::slice::from_ref(&old), &opts("2021-07-16"));
    assert_eq!(dec.generations[0].state, State::Serving);
    assert_eq!(dec.generations[1].state, State::Producing);
    assert!(
        dec.render
            .iter()
            .any(|p| p.id == "2021-07-16" && p.producer && !p.snapshot)
    );
    check_invariants(&dec, &[old]).unwrap();
}

#[test]
fn snapshot_waits_for_the_producer_and_statefulset_for_the_snapshot() {
    let d = dataset(1);
    let old = serving("2021-07-15", "2021-07-15T01:00:00Z");
    let mut new = Observed {
        id: "2021-07-16".into(),
        producer: Some(pod("Running", "2021-07-16T01:00:00Z").into()),
        ..Observed::default()
    };
    let dec = decide(&d, &[old.clone(), new.clone()], &opts("2021-07-16"));
    let p = dec.render.iter().find(|p| p.id == "2021-07-16").unwrap();
    assert!(p.producer && !p.snapshot && !p.statefulset);
    new.producer = Some(pod("Succeeded", "2021-07-16T01:00:00Z").into());
    let dec = decide(&d, &[old.clone(), new.clone()], &opts("2021-07-16"));
    let p = dec.render.iter().find(|p| p.id == "2021-07-16").unwrap();
    assert!(p.snapshot && !p.statefulset);
    new.snapshot = Some(snap(true, "2021-07-16T02:00:00Z").into());
    let dec = decide(&d, &[old.clone(), new.clone()], &opts("2021-07-16"));
    let p = dec.render.iter().find(|p| p.id == "2021-07-16").unwrap();
    assert!(p.statefulset);
    assert_eq!(
        p.claim_size.as_deref(),
        Some("12Gi"),
        "restoreSize above 10Gi wins"
    );
    check_invariants(&dec, &[old, new]).unwrap();
}

#[test]
fn old_generation_retires_in_order_once_the_new_one_serves() {
    let d = dataset(1);
    let mut old = serving("2021-07-15", "2021-07-15T01:00:00Z");
    let new = serving("2021-07-16", "2021-07-16T01:00:00Z");
    let step = |old: &Observed| {
        let dec = decide(&d, &[old.clone(), new.clone()], &opts("2021-07-16"));
        check_invariants(&dec, &[old.clone(), new.clone()]).unwrap();
        dec.render.iter().find(|p| p.id == "2021-07-15").cloned()
    };
    let p = step(&old).unwrap();
    assert!(
        !p.statefulset && p.snapshot && p.producer,
        "StatefulSet goes first"
    );
    old.statefulset = None;
    let p = step(&old).unwrap();
    assert!(p.snapshot, "snapshot stays while PVCs exist");
    old.claims = 0;
    let p = step(&old).unwrap();
    assert!(!p.producer && p.snapshot, "then the producer");
    old.producer = None;
    assert!(step(&old).is_none(), "then the snapshot");
}

#[test]
fn failed_producer_keeps_the_previous_generation_serving() {
    let d = dataset(1);
    let old = serving("2021-07-15", "2021-07-15T01:00:00Z");
    let bad = Observed {
        id: "2021-07-16".into(),
        producer: Some(
            json!({"metadata": meta("2021-07-16T01:00:00Z"),
            "status": {"phase": "Failed", "message": "DeadlineExceeded"}})
            .into(),
        ),
        ..Observed::default()
    };
    let dec = decide(&d, &[old.clone(), bad.clone()], &opts("2021-07-16"));
    assert_eq!(dec.generations[0].state, State::Serving);
    assert_eq!(dec.generations[1].state, State::Failed);
    assert_eq!(
        dec.generations[1].detail,
        "producer failed: DeadlineExceeded"
    );
    assert!(dec.failed());
    check_invariants(&dec, &[old, bad]).unwrap();
}

#[test]
fn snapshot_error_is_reported_but_not_final_until_the_timeout() {
    let d = dataset(1);
    let mut s = snap(false, "2021-07-16T10:00:00Z");
    s["status"]["error"] = json!({"message": "quota exceeded"});
    let g = Observed {
        id: "2021-07-16".into(),
        producer: Some(pod("Succeeded", "2021-07-16T09:00:00Z").into()),
        snapshot: Some(s.into()),
        ..Observed::default()
    };
    let dec = decide(&d, std::slice::from_ref(&g), &opts("2021-07-16"));
    assert_eq!(dec.generations[0].state, State::Snapshotting);
    assert!(dec.generations[0].detail.contains("quota exceeded"));
    let mut late = opts("2021-07-16");
    late.now = "2021-07-16T17:00:00Z".parse().unwrap();
    let dec = decide(&d, &[g], &late);
    assert_eq!(dec.generations[0].state, State::Failed);
    assert!(
        dec.generations[0]
            .detail
            .starts_with("snapshot x not ready after 6h")
    );
}

#[test]
fn keep_two_keeps_the_previous_snapshot_and_pinning_rolls_back() {
    let d = dataset(2);
    let mut old = serving("2021-07-15", "2021-07-15T01:00:00Z");
    old.statefulset = None;
    old.claims = 0;
    let new = serving("2021-07-16", "2021-07-16T01:00:00Z");
    let dec = decide(&d, &[old.clone(), new.clone()], &opts("2021-07-16"));
    assert_eq!(dec.generations[0].state, State::Kept);
    let mut pin = opts("2021-07-16");
    pin.generation = spec::GenerationIds::all("2021-07-15");
    let dec = decide(&d, &[old.clone(), new.clone()], &pin);
    let p = dec.render.iter().find(|p| p.id == "2021-07-15").unwrap();
    assert!(p.statefulset, "the pinned generation rolls out again");
    assert_eq!(dec.generations[0].state, State::RollingOut);
    assert_eq!(
        dec.generations[1].state,
        State::Serving,
        "until it is ready"
    );
    check_invariants(&dec, &[old, new]).unwrap();
}

#[test]
fn at_most_one_generation_is_introduced() {
    let d = dataset(1);
    let busy = Observed {
        id: "2021-07-15".into(),
        producer: Some(pod("Running", "2021-07-15T01:00:00Z").into()),
        ..Observed::default()
    };
    let dec = decide(&d, std::slice::from_ref(&busy), &opts("2021-07-16"));
    assert_eq!(dec.generations[1].state, State::Waiting);
    assert!(!dec.render.iter().any(|p| p.id == "2021-07-16"));
    check_invariants(&dec, &[busy]).unwrap();
}

fn with_digest(mut o: Observed, digest: &str, unchanged: Option<&str>) -> Observed {
    let s = std::sync::Arc::make_mut(o.snapshot.as_mut().unwrap());
    s["metadata"]["annotations"] = json!({"snaproll.dev/digest": digest});
    if let Some(u) = unchanged {
        s["metadata"]["annotations"]["snaproll.dev/unchanged"] = json!(u);
    }
    o
}

fn reporting(id: &str, message: &str) -> Observed {
    let mut p = pod("Succeeded", "2021-07-16T01:00:00Z");
    p["status"]["containerStatuses"] =
        json!([{"state": {"terminated": {"exitCode": 0, "message": message}}}]);
    Observed {
        id: id.into(),
        producer: Some(p.into()),
        ..Observed::default()
    }
}

#[test]
fn a_producer_reporting_the_serving_digest_is_unchanged_and_recorded_on_the_serving_snapshot() {
    let d = dataset(1);
    let old = with_digest(
        serving("2021-07-15", "2021-07-15T01:00:00Z"),
        "sha256:a",
        None,
    );
    let same = reporting("2021-07-16", "sha256:a\n");
    let observed = [old.clone(), same];
    let dec = decide(&d, &observed, &opts("2021-07-16"));
    assert_eq!(dec.generations[0].state, State::Serving);
    assert_eq!(dec.generations[1].state, State::Unchanged);
    assert_eq!(
        dec.generations[1].detail,
        "data unchanged (digest sha256:a); generation 2021-07-15 keeps serving"
    );
    assert_eq!(dec.render.len(), 1, "the producer is no longer rendered");
    assert_eq!(dec.render[0].id, "2021-07-15");
    assert_eq!(dec.render[0].unchanged.as_deref(), Some("2021-07-16"));
    check_invariants(&dec, &observed).unwrap();

    // Another digest (or none) takes the snapshot as before.
    for other in [
        reporting("2021-07-16", "sha256:b"),
        reporting("2021-07-16", ""),
    ] {
        let dec = decide(&d, &[old.clone(), other], &opts("2021-07-16"));
        assert_eq!(dec.generations[1].state, State::Snapshotting);
    }
}

#[test]
fn a_recorded_unchanged_generation_is_not_started_again_and_is_shown_while_newest() {
    let d = dataset(1);
    let old = with_digest(
        serving("2021-07-15", "2021-07-15T01:00:00Z"),
        "sha256:a",
        Some("2021-07-16"),
    );
    let dec = decide(&d, std::slice::from_ref(&old), &opts("2021-07-16"));
    let states: Vec<_> = dec.generations.iter().map(|g| g.state.clone()).collect();
    assert_eq!(states, [State::Serving, State::Unchanged]);
    assert_eq!(dec.generations[1].generation, "2021-07-16");
    assert_eq!(dec.render.len(), 1, "nothing started");
    let mut again = opts("2021-07-16");
    again.generation = spec::GenerationIds::all("2021-07-16");
    assert_eq!(
        decide(&d, std::slice::from_ref(&old), &again).render.len(),
        1
    );
    // The next day starts as usual.
    let dec = decide(&d, std::slice::from_ref(&old), &opts("2021-07-17"));
    let states: Vec<_> = dec.generations.iter().map(|g| g.state.clone()).collect();
    assert_eq!(states, [State::Serving, State::Producing]);
    assert!(
        dec.render
            .iter()
            .any(|p| p.id == "2021-07-17" && p.producer)
    );
}

/// A copy of generation `g` out of `n`, ready or not, with its restoreSize.
fn copy(i: u32, n: u32, ready: bool, size: &str) -> Value {
    json!({"metadata": {"creationTimestamp": "2021-07-16T10:00:00Z",
                        "name": format!("data-2021-07-16-{i}"),
                        "labels": {"snaproll.dev/copies": n.to_string()}},
           "status": {"readyToUse": ready, "restoreSize": size}})
}

/// `snapshot.copies`: the StatefulSet waits for every copy (all taken, all ready), its claims
/// request the largest restoreSize, and the plan renders the generation's frozen count.
#[test]
fn copies_gate_the_statefulset_until_every_copy_is_ready() {
    let d = dataset(1);
    let old = serving("2021-07-15", "2021-07-15T01:00:00Z");
    let new = |snapshots: Vec<Value>| Observed {
        id: "2021-07-16".into(),
        producer: Some(pod("Succeeded", "2021-07-16T01:00:00Z").into()),
        snapshot: snapshots.first().cloned().map(Into::into),
        snapshots: snapshots.into_iter().map(Into::into).collect(),
        ..Observed::default()
    };
    let plan_of = |dec: &Decision| {
        dec.render
            .iter()
            .find(|p| p.id == "2021-07-16")
            .cloned()
            .unwrap()
    };
    // Two of three taken, both ready: still snapshotting, all three rendered.
    let two = new(vec![copy(0, 3, true, "10Gi"), copy(1, 3, true, "10Gi")]);
    let dec = decide(&d, &[old.clone(), two], &opts("2021-07-16"));
    assert_eq!(dec.generations[1].state, State::Snapshotting);
    assert_eq!(dec.generations[1].detail, "2 of 3 snapshot copies taken");
    let p = plan_of(&dec);
    assert!(p.snapshot && !p.statefulset);
    assert_eq!(p.copies, Some(3));
    // All taken, one not ready: still no StatefulSet, and the detail names the slow copy.
    let slow = new(vec![
        copy(0, 3, true, "10Gi"),
        copy(1, 3, false, "10Gi"),
        copy(2, 3, true, "10Gi"),
    ]);
    let dec = decide(&d, &[old.clone(), slow.clone()], &opts("2021-07-16"));
    assert_eq!(dec.generations[1].state, State::Snapshotting);
    assert!(dec.generations[1].detail.contains("data-2021-07-16-1"));
    assert!(!plan_of(&dec).statefulset);
    check_invariants(&dec, &[old.clone(), slow]).unwrap();
    // All ready: the StatefulSet starts, its claims at the largest restoreSize.
    let all = new(vec![
        copy(0, 3, true, "10Gi"),
        copy(1, 3, true, "12Gi"),
        copy(2, 3, true, "11Gi"),
    ]);
    let dec = decide(&d, &[old.clone(), all.clone()], &opts("2021-07-16"));
    assert_eq!(dec.generations[1].state, State::RollingOut);
    let p = plan_of(&dec);
    assert!(p.snapshot && p.statefulset);
    assert_eq!(p.claim_size.as_deref(), Some("12Gi"));
    assert_eq!(p.copies, Some(3));
    check_invariants(&dec, &[old, all]).unwrap();
}

/// A generation whose StatefulSet or claims exist with a copy gone breaks the per-copy
/// invariant.
#[test]
fn a_missing_copy_under_a_statefulset_breaks_the_invariant() {
    let mut o = serving("2021-07-16", "2021-07-16T01:00:00Z");
    o.snapshots = vec![
        copy(0, 3, true, "10Gi").into(),
        copy(2, 3, true, "10Gi").into(),
    ];
    o.snapshot = o.snapshots.first().cloned();
    let e = check_state("data", &[o]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "dataset data: 2 of 3 snapshot copies of 2021-07-16 exist while its StatefulSet or 3 claim(s) do"
    );
}

fn verified_dataset(keep: u32) -> Dataset {
    let mut d = dataset(keep);
    d.consumer.verify = Some(spec::Verify {
        image: "busybox".into(),
        command: vec!["true".into()],
        args: Vec::new(),
        timeout: "30m".into(),
    });
    d
}

fn job(condition: Option<(&str, &str)>, ts: &str) -> Value {
    let conditions: Vec<Value> = condition
        .map(|(t, m)| json!({"type": t, "status": "True", "reason": "R", "message": m}))
        .into_iter()
        .collect();
    json!({"metadata": meta(ts), "status": {"conditions": conditions}})
}

fn ready_snapshot(id: &str, ts: &str) -> Observed {
    Observed {
        id: id.into(),
        producer: Some(pod("Succeeded", ts).into()),
        snapshot: Some(snap(true, ts).into()),
        ..Observed::default()
    }
}

#[test]
fn verify_gates_the_statefulset_and_records_its_outcome_on_the_snapshot() {
    let d = verified_dataset(1);
    let old = serving("2021-07-15", "2021-07-15T01:00:00Z");
    let ts = "2021-07-16T11:50:00Z";
    let mut new = ready_snapshot("2021-07-16", ts);
    let today = opts("2021-07-16");
    let plan_of = |dec: &Decision| dec.render.iter().find(|p| p.id == "2021-07-16").cloned();

    // Snapshot ready, no Job yet: verifying renders the Job and its claim, no StatefulSet.
    let dec = decide(&d, &[old.clone(), new.clone()], &today);
    assert_eq!(dec.generations[1].state, State::Verifying);
    let p = plan_of(&dec).unwrap();
    assert!(p.verify && p.snapshot && !p.statefulset);
    check_invariants(&dec, &[old.clone(), new.clone()]).unwrap();

    // Running: still verifying.
    new.verify = Some(job(None, ts).into());
    new.verify_claim = true;
    let dec = decide(&d, &[old.clone(), new.clone()], &today);
    assert_eq!(dec.generations[1].state, State::Verifying);
    assert_eq!(dec.generations[1].detail, "verify Job not started");

    // Complete: the StatefulSet; the Job and claim are no longer rendered; `passed` recorded.
    new.verify = Some(job(Some(("Complete", "")), ts).into());
    let (decs, _) = decide_all(
        &rollout_of(&d),
        &[("data".into(), vec![old.clone(), new.clone()])].into(),
        &today,
    );
    let p = plan_of(&decs[0]).unwrap();
    assert!(p.statefulset && !p.verify);
    assert_eq!(p.verified.as_deref(), Some("passed"));
    assert_eq!(decs[0].generations[1].state, State::RollingOut);

    // Failed: the generation fails, the old one keeps serving, `failed: …` recorded.
    new.verify = Some(
        job(
            Some(("Failed", "Job has reached the specified backoff limit")),
            ts,
        )
        .into(),
    );
    let (decs, _) = decide_all(
        &rollout_of(&d),
        &[("data".into(), vec![old.clone(), new.clone()])].into(),
        &today,
    );
    assert_eq!(decs[0].generations[0].state, State::Serving);
    assert_eq!(decs[0].generations[1].state, State::Failed);
    assert_eq!(
        decs[0].generations[1].detail,
        "verify failed: R: Job has reached the specified backoff limit"
    );
    let p = plan_of(&decs[0]).unwrap();
    assert!(!p.statefulset && !p.verify && p.snapshot);
    assert_eq!(
        p.verified.as_deref(),
        Some("failed: R: Job has reached the specified backoff limit")
    );

    // Recorded and the Job gone: still failed, nothing restarts it.
    new.verify = None;
    new.verify_claim = false;
    new.snapshot = Some(
        json!({"metadata": {"creationTimestamp": ts, "name": "x",
        "annotations": {"snaproll.dev/verify": "failed: checksum"}},
        "status": {"readyToUse": true, "restoreSize": "12Gi"}})
        .into(),
    );
    let dec = decide(&d, &[old.clone(), new.clone()], &today);
    assert_eq!(dec.generations[1].state, State::Failed);
    assert_eq!(dec.generations[1].detail, "verify failed: checksum");
    assert!(plan_of(&dec).is_some_and(|p| !p.verify && !p.statefulset));
}

#[test]
fn a_kept_generation_is_not_retired_nor_reverified_because_verify_is_on() {
    let d = verified_dataset(2);
    let mut old = serving("2021-07-15", "2021-07-15T01:00:00Z");
    old.statefulset = None;
    old.claims = 0;
    let new = serving("2021-07-16", "2021-07-16T01:00:00Z");
    let dec = decide(&d, &[old.clone(), new.clone()], &opts("2021-07-16"));
    assert_eq!(dec.generations[0].state, State::Kept);
    let p = dec.render.iter().find(|p| p.id == "2021-07-15").unwrap();
    assert!(p.snapshot && !p.verify);
}

#[test]
fn a_verify_claim_holds_its_snapshot_while_the_generation_retires() {
    let d = verified_dataset(1);
    let mut failed = ready_snapshot("2021-07-15", "2021-07-15T01:00:00Z");
    failed.verify_claim = true;
    let new = serving("2021-07-16", "2021-07-16T01:00:00Z");
    let dec = decide(&d, &[failed.clone(), new.clone()], &opts("2021-07-16"));
    let p = dec.render.iter().find(|p| p.id == "2021-07-15").unwrap();
    assert!(p.snapshot && !p.verify, "{p:?}");
    let mut gone = failed.clone();
    gone.snapshot = None;
    assert!(check_state("data", &[gone, new]).is_err());
}

fn rollout_of(d: &Dataset) -> spec::Rollout {
    let text = "apiVersion: snaproll.dev/v1alpha1\nkind: DatasetRollout\nmetadata: {name: demo}\nspec:\n  snapshotClass: {name: c, driver: d}\n  datasets:\n    - name: data\n      storage: {size: 10Gi}\n      producer: {image: busybox}\n      consumer: {name: consumer, replicas: 3, image: busybox}\n";
    let mut r = spec::parse_str("t.yaml", text).unwrap().rollout;
    r.spec.datasets[0] = d.clone();
    r
}
