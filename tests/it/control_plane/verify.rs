//! `consumer.verify` against the real API server. No Job controller runs here, so the test plays
//! it: it sets the Job's status as the controller would, which kube-apiserver (1.31+) validates
//! (a finished Job needs `startTime`; Complete needs `completionTime` and SuccessCriteriaMet,
//! Failed needs FailureTarget), and for a failure makes the Job's Pod with its termination
//! message. Day 1 passes: the Job and its claim come before any StatefulSet, then the generation
//! rolls out and the Job and claim are pruned. Day 2 fails: the generation fails with the Pod's
//! message, nothing of it rolls out, and the serving generation and the Service are not written.

use super::*;

/// The check day 2's Pod reports as its termination message.
const MESSAGE: &str = "data/shard-3.bin: FAILED";

fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn job(g: &str) -> String {
    format!("data-{g}-verify")
}

fn detail(run: &Run, g: &str) -> String {
    run.report["generations"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["dataset"] == "data")
        .flat_map(|d| d["generations"].as_array().cloned().unwrap_or_default())
        .find(|x| x["generation"] == g)
        .and_then(|x| x["detail"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The snapshot's `snaproll.dev/verify` record.
fn record(r: &Rollout, g: &str) -> Option<String> {
    r.c.get("volumesnapshot", &format!("data-{g}"))?
        .pointer("/metadata/annotations/snaproll.dev~1verify")
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// Waits (up to 10s) until `resource/name` is gone: a claim waits for PVC protection, a Pod for
/// the garbage collector.
fn gone(r: &Rollout, resource: &str, name: &str) {
    let start = Instant::now();
    while r.c.get(resource, name).is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{resource}/{name} still exists: {:#}",
            r.c.get(resource, name).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs at `now` until generation `g` is verifying (settle stops there: only the Job moves it
/// on, and the test plays it); asserts the Job and its read-only claim exist and no StatefulSet
/// of `g` does.
fn until_verifying(r: &Rollout, now: &str, g: &str) {
    let run = r.settle(now);
    assert!(
        run.states().contains(&format!("{g} verifying")),
        "{}",
        run.stdout
    );
    assert_eq!(detail(&run, g), "snapshot ready; verify Job created");
    let job = r.c.get("job", &job(g)).expect("the verify Job");
    assert_eq!(job["spec"]["backoffLimit"], 0);
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    assert_eq!(
        pod["volumes"][0]["persistentVolumeClaim"]["claimName"],
        self::job(g)
    );
    assert_eq!(pod["volumes"][0]["persistentVolumeClaim"]["readOnly"], true);
    assert_eq!(pod["containers"][0]["volumeMounts"][0]["readOnly"], true);
    let claim = r.c.get("pvc", &self::job(g)).expect("the verify claim");
    assert_eq!(claim["spec"]["dataSource"]["name"], format!("data-{g}"));
    assert_eq!(claim["spec"]["dataSource"]["kind"], "VolumeSnapshot");
    assert!(
        r.c.get("statefulset", &format!("consumer-{g}")).is_none(),
        "no StatefulSet before the Job completed"
    );
}

#[test]
fn verify_job_gates_the_statefulset_and_a_failure_leaves_the_old_generation_untouched() {
    let Some(mut r) = Rollout::new("verify") else {
        return;
    };
    r.consumer = "        verify:\n          image: busybox:1.36\n          command: [\"/bin/sh\", \"-c\", \"cd /data && sha256sum -c -s SHA256SUMS\"]\n".into();
    r.write_spec();

    // Day 1: the Job and its claim, no StatefulSet; nothing is written while the Job runs (the
    // server's defaults on the Job, its selector and template labels, are no drift).
    let mark = r.c.audit_mark();
    until_verifying(&r, D1, G1);
    r.quiet(D1);
    let t = now();
    r.c.set_status(
        "job",
        &job(G1),
        json!({"startTime": t, "completionTime": t, "succeeded": 1, "conditions": [
            {"type": "SuccessCriteriaMet", "status": "True", "lastProbeTime": t, "lastTransitionTime": t},
            {"type": "Complete", "status": "True", "lastProbeTime": t, "lastTransitionTime": t}]}),
    );
    let run = r.run(D1);
    assert_eq!(
        run.states(),
        [format!("{G1} rolling-out")],
        "{}",
        run.stdout
    );
    assert!(r.c.get("statefulset", &format!("consumer-{G1}")).is_some());
    assert!(r.c.get("job", &job(G1)).is_none(), "the Job is pruned");
    gone(&r, "pvc", &job(G1));
    assert_eq!(record(&r, G1).as_deref(), Some("passed"));
    let run = r.settle(D1);
    assert_eq!(run.states(), [format!("{G1} serving")], "{}", run.stdout);
    r.quiet(D1);
    // The audit log orders the writes: the Job before the StatefulSet.
    let reqs = r.c.audit_since(mark);
    let first = |resource: &str| {
        reqs.iter()
            .position(|a| a.is_write() && a.resource() == resource)
            .unwrap_or_else(|| panic!("no write to {resource}"))
    };
    assert!(first("jobs") < first("statefulsets"));

    // Day 2: the check fails.
    let svc = r.c.get("service", "consumer").unwrap();
    let sts = r.c.get("statefulset", &format!("consumer-{G1}")).unwrap();
    let rv = |v: &Value| v["metadata"]["resourceVersion"].clone();
    let mark = r.c.audit_mark();
    until_verifying(&r, D2, G2);
    // The Job controller and the kubelet: the Job's one Pod fails with its message, then the
    // Job fails.
    let uid = r.c.get("job", &job(G2)).unwrap()["metadata"]["uid"].clone();
    let pod = format!("{}-x7k2p", job(G2));
    r.c.apply_admin(&json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod, "namespace": r.c.ns,
            "labels": {"batch.kubernetes.io/job-name": job(G2), "job-name": job(G2)},
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job(G2),
                "uid": uid, "controller": true, "blockOwnerDeletion": true}]},
        "spec": {"restartPolicy": "Never",
            "containers": [{"name": "verify", "image": "busybox:1.36"}]}}));
    let t = now();
    r.c.set_status(
        "pod",
        &pod,
        json!({"phase": "Failed", "startTime": t, "containerStatuses": [{"name": "verify",
            "ready": false, "restartCount": 0, "image": "busybox:1.36", "imageID": "",
            "state": {"terminated": {"exitCode": 1, "reason": "Error", "message": MESSAGE,
                "startedAt": t, "finishedAt": t}}}]}),
    );
    let why = "Job has reached the specified backoff limit";
    r.c.set_status(
        "job",
        &job(G2),
        json!({"startTime": t, "failed": 1, "conditions": [
            {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded",
             "message": why, "lastProbeTime": t, "lastTransitionTime": t},
            {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
             "message": why, "lastProbeTime": t, "lastTransitionTime": t}]}),
    );
    let run = r.reconcile(D2, &[]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    r.check_invariants(D2, "after the failed verify");
    assert_eq!(
        run.states(),
        [format!("{G1} serving"), format!("{G2} failed")],
        "{}",
        run.stdout
    );
    let failed = format!("{MESSAGE} (BackoffLimitExceeded: {why})");
    assert_eq!(detail(&run, G2), format!("verify failed: {failed}"));
    assert_eq!(record(&r, G2), Some(format!("failed: {failed}")));
    // The Job and its claim are pruned; the garbage collector takes the Pod with the Job.
    assert!(r.c.get("job", &job(G2)).is_none(), "the Job is pruned");
    gone(&r, "pvc", &job(G2));
    gone(&r, "pod", &pod);
    // The Event is reported against the Job.
    let events: Vec<String> =
        r.c.items("events")
            .iter()
            .filter(|e| e["involvedObject"]["name"] == job(G2) && e["type"] == "Warning")
            .map(|e| format!("{} {}", e["reason"], e["action"]))
            .collect();
    assert_eq!(events, ["\"Failed\" \"VerifySnapshot\""], "{events:?}");
    // No StatefulSet of day 2 ever; the serving one and the Service were not written.
    let writes: Vec<String> =
        r.c.audit_since(mark)
            .iter()
            .filter(|a| a.is_write() && matches!(a.resource(), "statefulsets" | "services"))
            .map(Audit::line)
            .collect();
    assert!(writes.is_empty(), "{writes:#?}");
    assert!(r.c.get("statefulset", &format!("consumer-{G2}")).is_none());
    assert_eq!(rv(&r.c.get("service", "consumer").unwrap()), rv(&svc));
    assert_eq!(
        rv(&r.c.get("statefulset", &format!("consumer-{G1}")).unwrap()),
        rv(&sts)
    );
    // A re-run writes nothing and keeps reporting the failure.
    let mark = r.c.audit_mark();
    let run = r.reconcile(D2, &[]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(detail(&run, G2), format!("verify failed: {failed}"));
    assert_quiet(&r.c.audit_since(mark));
    r.check_invariants(D2, "after the re-run");
}
