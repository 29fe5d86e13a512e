//! `reconcile --wait` against the real API server: its watches see the status the harness sets
//! (the kubelet's and snapshotter's part) and the next step acts within about a second, with a
//! 60 s resync. Latency: from the status patch's answer to the run's next write as the audit
//! log received it.

use super::*;

/// When the API server received the request (audit `requestReceivedTimestamp`).
fn received(a: &Audit) -> jiff::Timestamp {
    a.0["requestReceivedTimestamp"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .expect("audit timestamp")
}

/// Waits (up to 30 s) for the first audit event from `mark` on that `f` accepts.
fn audit_until(c: &Cluster, mark: usize, f: impl Fn(&Audit) -> bool) -> Audit {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(a) = c.audit_since(mark).into_iter().find(|a| f(a)) {
            return a;
        }
        assert!(Instant::now() < end, "no such request within 30 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn by_snaproll(a: &Audit) -> bool {
    a.0["userAgent"]
        .as_str()
        .is_some_and(|u| u.starts_with("snaproll/"))
}

/// Kills the run if the test fails before it ended.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn wait_reacts_to_status_changes_within_a_second() {
    let Some(r) = Rollout::new("wait") else {
        return;
    };
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("snaproll"));
    for (k, _) in std::env::vars() {
        if k.starts_with("SNAPROLL_") || k == "KUBECONFIG" {
            cmd.env_remove(k);
        }
    }
    cmd.env("NO_COLOR", "1")
        .env("HOME", r.c.tmp.path())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .args(["reconcile", "--repo", &r.repo, "--apply", "--prune"])
        .args([
            "--now",
            D1,
            "--wait",
            "--poll-interval",
            "60s",
            "--timeout",
            "5m",
        ])
        .arg("-f")
        .arg(&r.spec)
        .arg("--kubeconfig")
        .arg(&r.kubeconfig)
        .stdout(std::process::Stdio::null())
        .stderr(log.reopen().unwrap());
    let mark = r.c.audit_mark();
    let mut run = Running(cmd.spawn().unwrap());
    let producer = format!("data-producer-{G1}");
    audit_until(&r.c, mark, |a| {
        by_snaproll(a) && a.resource() == "pods" && a.is_write() && a.name() == producer
    });
    // Let the step end and the run pause on its watches.
    std::thread::sleep(Duration::from_secs(2));
    let mut latencies = Vec::new();
    for (what, resource, status, next) in [
        (
            "producer Succeeded",
            "pod",
            json!({"phase": "Succeeded"}),
            "volumesnapshots",
        ),
        (
            "snapshot readyToUse",
            "volumesnapshot",
            json!({"readyToUse": true, "restoreSize": "1Gi",
                   "boundVolumeSnapshotContentName": format!("snapcontent-data-{G1}")}),
            "statefulsets",
        ),
    ] {
        let name = if resource == "pod" {
            producer.clone()
        } else {
            format!("data-{G1}")
        };
        let mark = r.c.audit_mark();
        r.c.set_status(resource, &name, status);
        // The harness's kubectl is not this test's identity (not in its audit): the flip is
        // done when kubectl returns.
        let flipped = jiff::Timestamp::now();
        let acted = audit_until(&r.c, mark, |a| {
            by_snaproll(a) && a.resource() == next && a.is_write()
        });
        let latency = received(&acted).duration_since(flipped);
        println!(
            "real API server: --wait reacted to {what} in {} ms",
            latency.as_millis()
        );
        assert!(
            latency < jiff::SignedDuration::from_secs(5),
            "{what}: {latency:?}"
        );
        latencies.push(latency);
        std::thread::sleep(Duration::from_secs(2));
    }
    // The StatefulSet's Pods become ready (the kubelet); the run settles and ends.
    r.c.play(&r.size);
    let end = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = run.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < end,
            "the run did not end once settled: {}",
            std::fs::read_to_string(log.path()).unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        status.code(),
        Some(0),
        "{}",
        std::fs::read_to_string(log.path()).unwrap()
    );
    r.check_invariants(D1, "after reconcile --wait");
}
