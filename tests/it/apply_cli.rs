//! `diff` and `apply` end to end: the binary against a loopback fake API server. Both run the
//! rollout engine: a run applies what the rollout decided, so the producer comes first, the
//! snapshot once the producer succeeded and the StatefulSet once the snapshot is ready; the
//! tests play the kubelet and the snapshot controller between runs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::apply::{
    CLASSES, G1, G2, NS, PARENT, PODS, PVCS, SNAPS, STS, SVCS, SpecOpts, make_ready, spec_yaml,
};
use crate::common::*;
use crate::fakeapi::{Fault, Req, Server};

fn write_spec(dir: &Path, o: &SpecOpts) -> PathBuf {
    let p = dir.join("snaproll.yaml");
    std::fs::write(
        &p,
        spec_yaml(o.rollout, &o.datasets, o.replicas, o.size, o.when_deleted),
    )
    .unwrap();
    p
}

/// `snaproll <cmd> -f SPEC --generation G --kubeconfig KC`.
fn args(cmd: &str, spec: &Path, generation: &str, kc: &Path) -> Vec<String> {
    vec![
        cmd.into(),
        "-f".into(),
        spec.display().to_string(),
        "--generation".into(),
        generation.into(),
        "--kubeconfig".into(),
        kc.display().to_string(),
    ]
}

/// Plays the cluster once: producers succeed, snapshots become ready (restoreSize 10Gi), the
/// StatefulSet controller makes each replica's claim and reports every replica ready.
fn play(server: &Server) {
    let api = &server.api;
    server.block_on(async {
        for pod in api.items(PODS).await {
            if pod
                .pointer("/status/phase")
                .is_none_or(|p| p != "Succeeded")
            {
                let name = pod["metadata"]["name"].as_str().unwrap().to_string();
                api.set_status(&format!("{PODS}/{name}"), json!({"phase": "Succeeded"}))
                    .await;
            }
        }
        for snap in api.items(SNAPS).await {
            let name = snap["metadata"]["name"].as_str().unwrap().to_string();
            api.set_status(
                &format!("{SNAPS}/{name}"),
                json!({"readyToUse": true, "restoreSize": "10Gi"}),
            )
            .await;
        }
        for sts in api.items(STS).await {
            let name = sts["metadata"]["name"].as_str().unwrap().to_string();
            let replicas = sts["spec"]["replicas"].as_i64().unwrap_or(1);
            let template = &sts["spec"]["volumeClaimTemplates"][0];
            for i in 0..replicas {
                let claim = format!(
                    "{}-{name}-{i}",
                    template["metadata"]["name"].as_str().unwrap()
                );
                let obj = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                    "metadata": {"name": claim, "namespace": NS,
                                 "labels": template["metadata"]["labels"].clone()},
                    "spec": template["spec"].clone()});
                api.apply_as(
                    "statefulset-controller",
                    &format!("{PVCS}/{claim}"),
                    &obj,
                    true,
                )
                .await;
            }
            make_ready(api, &name, replicas).await;
        }
    });
}

/// `apply` runs (with `extra`), playing the cluster after each, until `generation` serves
/// and nothing is left to do; returns each run's JSON change set.
fn roll_out(
    server: &Server,
    spec: &Path,
    kc: &Path,
    generation: &str,
    extra: &[&str],
) -> Vec<Value> {
    let mut sets = Vec::new();
    for _ in 0..8 {
        let out = snaproll()
            .args(args("apply", spec, generation, kc))
            .args(["-o", "json"])
            .args(extra)
            .assert()
            .code(0)
            .get_output()
            .stdout
            .clone();
        let v: Value = serde_json::from_slice(&out).expect("JSON change set");
        let quiet = v["summary"]["created"] == 0
            && v["summary"]["configured"] == 0
            && v["summary"]["deleted"] == 0
            && v["summary"]["skipped"] == 0;
        sets.push(v);
        if quiet {
            return sets;
        }
        play(server);
    }
    panic!("apply did not settle: {sets:#?}");
}

#[test]
fn cli_diff_exits_1_with_changes_and_0_after_apply() {
    let server = crate::fakeapi::FakeApi::serve();
    let dir = tempfile::tempdir().unwrap();
    let kc = server.kubeconfig(dir.path());
    let spec = write_spec(dir.path(), &SpecOpts::default());
    let args = |cmd: &str| args(cmd, &spec, G1, &kc);
    let out = snaproll()
        .args(args("diff"))
        .assert()
        .code(1)
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(out).unwrap();
    // The first step of a generation: its producer (and the shared objects), nothing else.
    assert!(
        text.contains("+++ desired/Pod/default/data-producer-2021-07-15"),
        "{text}"
    );
    assert!(!text.contains("StatefulSet"), "{text}");
    assert!(
        text.contains("Would be: 4 created, 0 configured, 0 unchanged"),
        "{text}"
    );

    // JSON for CI: the change set with each object's diff.
    let out = snaproll()
        .args(args("diff"))
        .args(["-o", "json"])
        .assert()
        .code(1)
        .get_output()
        .stdout
        .clone();
    let v: Value = serde_json::from_slice(&out).expect("JSON");
    assert_eq!(v["summary"]["created"], json!(4));
    assert!(
        v["changes"][0]["diff"]
            .as_str()
            .unwrap()
            .contains("+kind: VolumeSnapshotClass")
    );
    // A server-side dry-run apply reports the same and writes nothing.
    let out = snaproll()
        .args(args("apply"))
        .arg("--dry-run")
        .assert()
        .code(0)
        .get_output()
        .stdout
        .clone();
    assert!(
        String::from_utf8(out)
            .unwrap()
            .contains("Would be: 4 created")
    );
    assert!(server.api.writes().is_empty(), "{:?}", server.api.writes());

    let out = snaproll()
        .args(args("apply"))
        .assert()
        .code(0)
        .get_output()
        .stdout
        .clone();
    insta::assert_snapshot!("cli_first_apply", String::from_utf8(out).unwrap());

    // The no-op diff and the no-op apply: exactly the reads (the parent and the class by
    // name, one LIST per kind by the ownership label), no dry-run, no write, no Lease.
    let reads = |reqs: Vec<Req>| -> Vec<(String, String, bool)> {
        let mut r: Vec<(String, String, bool)> = reqs
            .iter()
            .map(|r| {
                (
                    r.method.clone(),
                    r.path.clone(),
                    r.query.contains("labelSelector=app.kubernetes.io%2Fmanaged-by%3Dsnaproll%2Csnaproll.dev%2Frollout%3Ddemo"),
                )
            })
            .collect();
        r.sort();
        r
    };
    let expected: Vec<(String, String, bool)> = {
        let mut e: Vec<(String, String, bool)> = [
            (PARENT, false),
            (&format!("{CLASSES}/csi-snapclass") as &str, false),
            (STS, true),
            (SNAPS, true),
            (PODS, true),
            (PVCS, true),
            (SVCS, true),
            ("/apis/batch/v1/namespaces/default/jobs", true),
        ]
        .iter()
        .map(|(p, sel)| ("GET".to_string(), p.to_string(), *sel))
        .collect();
        e.sort();
        e
    };
    server.api.clear_requests();
    let out = snaproll()
        .args(args("diff"))
        .assert()
        .code(0)
        .get_output()
        .stdout
        .clone();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "Would be: 0 created, 0 configured, 4 unchanged, 0 deleted, 0 skipped\n"
    );
    assert_eq!(reads(server.api.requests()), expected);
    assert!(server.api.writes().is_empty(), "{:?}", server.api.writes());
    assert!(!server.api.requests().iter().any(Req::is_dry_run));

    server.api.clear_requests();
    let out = snaproll()
        .args(args("apply"))
        .assert()
        .code(0)
        .get_output()
        .stdout
        .clone();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "0 created, 0 configured, 4 unchanged, 0 deleted, 0 skipped\n  data: 2021-07-15 producing (producer not scheduled)\n"
    );
    // apply also lists the rollout's Events, to report only transitions not reported yet.
    let mut expected = expected;
    expected.push((
        "GET".to_string(),
        "/apis/events.k8s.io/v1/namespaces/default/events".to_string(),
        true,
    ));
    expected.sort();
    assert_eq!(reads(server.api.requests()), expected);
    assert!(
        server.api.writes().is_empty(),
        "a no-op apply writes nothing"
    );
    assert!(!server.api.requests().iter().any(Req::is_dry_run));
    // Every request names snaproll and its version, for the API server's audit log.
    let agent = format!("snaproll/{}", env!("CARGO_PKG_VERSION"));
    let requests = server.api.requests();
    assert!(!requests.is_empty());
    for r in &requests {
        assert_eq!(r.user_agent, agent, "{} {}", r.method, r.path);
    }
}

#[test]
fn cli_apply_json_and_prune_of_the_previous_generation() {
    let server = crate::fakeapi::FakeApi::serve();
    let dir = tempfile::tempdir().unwrap();
    let kc = server.kubeconfig(dir.path());
    let spec = write_spec(dir.path(), &SpecOpts::default());
    let sets = roll_out(&server, &spec, &kc, G1, &[]);
    let first = &sets[0];
    assert_eq!(first["summary"]["created"], json!(4));
    assert_eq!(first["inventory"]["action"], json!("created"));
    assert!(first["applyset"].as_str().unwrap().starts_with("applyset-"));
    // One object per step after the first: the snapshot, then the StatefulSet.
    assert_eq!(sets[1]["summary"]["created"], json!(1));
    assert_eq!(sets[2]["summary"]["created"], json!(1));
    assert_eq!(
        server.block_on(server.api.names(STS)),
        vec![format!("data-consumer-{G1}")]
    );

    let sets = roll_out(&server, &spec, &kc, G2, &["--prune"]);
    let deleted: Vec<String> = sets
        .iter()
        .flat_map(|s| s["changes"].as_array().cloned().unwrap_or_default())
        .filter(|c| c["action"] == "deleted")
        .filter(|c| c["kind"] != "PersistentVolumeClaim")
        .map(|c| {
            format!(
                "{}/{}",
                c["kind"].as_str().unwrap(),
                c["name"].as_str().unwrap()
            )
        })
        .collect();
    // The old generation retires after the new one serves: StatefulSet, producer, snapshot.
    assert_eq!(
        deleted,
        vec![
            format!("StatefulSet/data-consumer-{G1}"),
            format!("Pod/data-producer-{G1}"),
            format!("VolumeSnapshot/data-{G1}"),
        ]
    );
    let names = server.block_on(server.api.names(STS));
    assert_eq!(names, vec![format!("data-consumer-{G2}")]);
}

#[test]
fn cli_cluster_errors_exit_4_with_one_line_naming_the_object() {
    let server = crate::fakeapi::FakeApi::serve();
    let dir = tempfile::tempdir().unwrap();
    let kc = server.kubeconfig(dir.path());
    let spec = write_spec(dir.path(), &SpecOpts::default());
    server.api.inject(
        Fault::status(
            "PATCH",
            "/pods/",
            403,
            "Forbidden",
            "pods is forbidden: User \"ci\" cannot patch",
        )
        .dry_run(true),
    );
    let out = snaproll()
        .args(args("apply", &spec, G1, &kc))
        .assert()
        .code(4)
        .get_output()
        .clone();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("Pod/data-producer-2021-07-15 (default)")
            && stderr.contains("403 Forbidden"),
        "{stderr}"
    );
    assert!(!stderr.contains("Status {"), "{stderr}");
    assert!(server.api.writes().is_empty());

    // diff reports errors with 2 or more.
    snaproll()
        .args(args("diff", &spec, G1, &kc))
        .assert()
        .code(4);
    // A missing kubeconfig is a cluster error too, in one line.
    let out = snaproll()
        .args([
            "diff",
            "-f",
            &spec.display().to_string(),
            "--kubeconfig",
            "/nonexistent/kubeconfig",
        ])
        .assert()
        .code(4)
        .get_output()
        .clone();
    assert_eq!(String::from_utf8(out.stderr).unwrap().lines().count(), 1);
}

#[test]
fn cli_diff_is_coloured_only_when_asked_or_on_a_terminal() {
    let server = crate::fakeapi::FakeApi::serve();
    let dir = tempfile::tempdir().unwrap();
    let kc = server.kubeconfig(dir.path());
    let spec = write_spec(dir.path(), &SpecOpts::default());
    // Up to the step that adds the StatefulSet, whose pod and claim templates the diff shows.
    snaproll()
        .args(args("apply", &spec, G1, &kc))
        .assert()
        .code(0);
    play(&server);
    snaproll()
        .args(args("apply", &spec, G1, &kc))
        .assert()
        .code(0);
    play(&server);
    let diff = |extra: &[&str], no_color: bool| -> String {
        let mut cmd = snaproll();
        if !no_color {
            cmd.env_remove("NO_COLOR");
        }
        let out = cmd
            .args(args("diff", &spec, G1, &kc))
            .args(extra)
            .assert()
            .code(1)
            .get_output()
            .stdout
            .clone();
        String::from_utf8(out).unwrap()
    };
    let coloured = diff(&["--color", "always"], true);
    assert!(
        coloured.contains(&format!(
            "\x1b[1m+++ desired/StatefulSet.apps/default/data-consumer-{G1}\x1b[0m\n"
        )),
        "{coloured}"
    );
    assert!(
        coloured.contains("\x1b[32m+kind: StatefulSet\x1b[0m\n"),
        "{coloured}"
    );
    // NO_COLOR, and a pipe instead of a terminal, give plain text; so does JSON.
    for (extra, no_color) in [
        (&[][..], true),
        (&[][..], false),
        (&["-o", "json"][..], false),
    ] {
        let plain = diff(extra, no_color);
        assert!(
            !plain.contains('\x1b'),
            "{extra:?} NO_COLOR={no_color}: {plain}"
        );
        assert!(plain.contains("+kind: StatefulSet"), "{plain}");
    }
    // A new object's diff shows no server noise in its templates.
    assert!(!coloured.contains("creationTimestamp"), "{coloured}");
}

#[test]
fn cli_json_change_set_gives_every_entry_a_reason() {
    let server = crate::fakeapi::FakeApi::serve();
    let dir = tempfile::tempdir().unwrap();
    let kc = server.kubeconfig(dir.path());
    let mut seen = BTreeSet::new();
    let mut check = |sets: Vec<Value>| {
        for v in sets {
            for c in v["changes"].as_array().unwrap() {
                let reason = c["reason"].as_str().unwrap_or_default();
                assert!(!reason.is_empty(), "entry without a reason: {c}");
                seen.insert(c["action"].as_str().unwrap().to_string());
            }
        }
    };
    let two = SpecOpts {
        datasets: vec!["data".into(), "extra".into()],
        ..SpecOpts::default()
    };
    let spec = write_spec(dir.path(), &two);
    check(roll_out(&server, &spec, &kc, G1, &["--prune"]));
    // `extra` leaves the spec and `data` scales: configured, and skipped (what `extra`'s
    // retirement still holds while its StatefulSet exists).
    let spec = write_spec(
        dir.path(),
        &SpecOpts {
            replicas: 4,
            ..SpecOpts::default()
        },
    );
    check(roll_out(&server, &spec, &kc, G1, &["--prune"]));
    // G2 replaces G1: created, unchanged, deleted.
    check(roll_out(&server, &spec, &kc, G2, &["--prune"]));
    assert_eq!(
        seen,
        ["configured", "created", "deleted", "skipped", "unchanged"]
            .map(String::from)
            .into()
    );
}

#[test]
fn cli_context_selects_the_cluster_from_a_kubeconfig_with_several() {
    let server = crate::fakeapi::FakeApi::serve();
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), &SpecOpts::default());
    // Two contexts: `bogus` (the current one) points at a port nothing listens on.
    let kc = dir.path().join("kubeconfig");
    std::fs::write(
        &kc,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{}\n- name: bogus\n  cluster:\n    server: http://127.0.0.1:1\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: tester\n- name: bogus\n  context:\n    cluster: bogus\n    user: tester\ncurrent-context: bogus\nusers:\n- name: tester\n  user:\n    token: test-token\n",
            server.addr
        ),
    )
    .unwrap();
    let apply = |extra: &[&str]| {
        let mut cmd = snaproll();
        cmd.args(args("apply", &spec, G1, &kc)).args(extra);
        cmd
    };
    let out = apply(&["--context", "fake"])
        .assert()
        .code(0)
        .get_output()
        .clone();
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .contains("4 created, 0 configured, 0 unchanged, 0 deleted, 0 skipped\n")
    );
    assert_eq!(
        server.block_on(server.api.names(PODS)),
        vec![format!("data-producer-{G1}")]
    );
    // Without --context the current (bogus) context is used: the connection is refused,
    // retried, and reported on one line naming the first request's object.
    server.api.clear_requests();
    let out = apply(&[]).assert().code(4).get_output().clone();
    let stderr = String::from_utf8(out.stderr).unwrap();
    // Regression: kube's own ERROR line per failed attempt used to come before snaproll's error.
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(
        stderr.contains("ConfigMap/snaproll-demo (default) (ApplySet parent)"),
        "{stderr}"
    );
    assert!(stderr.contains(": after 5 attempts: "), "{stderr}");
    assert!(server.api.requests().is_empty());
    // An unknown context is a configuration error naming it; nothing is sent anywhere.
    server.api.clear_requests();
    let out = apply(&["--context", "nope"])
        .assert()
        .code(4)
        .get_output()
        .clone();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("nope"), "{stderr}");
    assert!(server.api.requests().is_empty());
}

#[test]
fn cli_conflict_is_reported_then_resolved_with_force_conflicts() {
    let server = crate::fakeapi::FakeApi::serve();
    let dir = tempfile::tempdir().unwrap();
    let kc = server.kubeconfig(dir.path());
    let spec = write_spec(dir.path(), &SpecOpts::default());
    let apply = |extra: &[&str]| {
        let mut cmd = snaproll();
        cmd.args(args("apply", &spec, G1, &kc)).args(extra);
        cmd
    };
    roll_out(&server, &spec, &kc, G1, &[]);
    // Someone scales the StatefulSet by hand: `kubectl-scale` now owns .spec.replicas. (The
    // fake's conflict message names no field path, a real API server's does.)
    let path = format!("{STS}/data-consumer-{G1}");
    server.block_on(server.api.apply_as(
        "kubectl-scale",
        &path,
        &json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": format!("data-consumer-{G1}"), "namespace": NS},
            "spec": {"replicas": 5}}),
        true,
    ));
    server.api.clear_requests();
    let out = apply(&[]).assert().code(4).get_output().clone();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("StatefulSet/data-consumer-{G1} (default): conflict with field manager \"kubectl-scale\" over fields snaproll sets; rerun with --force-conflicts to take ownership")),
        "{stderr}"
    );
    assert!(server.api.writes().is_empty(), "{:?}", server.api.writes());
    let live = server.block_on(server.api.get(&path)).unwrap();
    assert_eq!(live.pointer("/spec/replicas"), Some(&json!(5)));

    let out = apply(&["--force-conflicts"])
        .assert()
        .code(0)
        .get_output()
        .clone();
    assert!(String::from_utf8(out.stdout).unwrap().contains(&format!(
        "StatefulSet/data-consumer-{G1} (default) configured"
    )));
    let live = server.block_on(server.api.get(&path)).unwrap();
    assert_eq!(live.pointer("/spec/replicas"), Some(&json!(3)));
    // snaproll owns the field again: the next run without --force-conflicts is a no-op.
    server.api.clear_requests();
    apply(&[]).assert().code(0);
    assert!(server.api.writes().is_empty(), "{:?}", server.api.writes());
}

// --- One retry budget (kube's own retry is off in the binary's client) ----------------------

/// The statefulset LISTs of a request log.
fn sts_lists(reqs: &[Req]) -> Vec<Req> {
    reqs.iter()
        .filter(|r| r.is_list() && r.resource() == "statefulsets")
        .cloned()
        .collect()
}

#[test]
fn cli_a_persistent_429_gives_up_after_5_attempts_within_the_budget() {
    let server = crate::fakeapi::FakeApi::serve();
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), &SpecOpts::default());
    let kc = server.kubeconfig(dir.path());
    server.api.inject(Fault::status(
        "GET",
        "/statefulsets",
        429,
        "TooManyRequests",
        "too many requests, please try again later",
    ));
    let start = std::time::Instant::now();
    let out = snaproll()
        .args(["apply", "-f"])
        .arg(&spec)
        .args(["--generation", G1, "--kubeconfig"])
        .arg(&kc)
        .assert()
        .code(4)
        .get_output()
        .clone();
    let took = start.elapsed();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        stderr,
        "error: reconcile of rollout demo: reading the rollout's objects from the cluster: listing StatefulSet objects in namespace default: after 5 attempts: 429 TooManyRequests: too many requests, please try again later\n"
    );
    // 5 requests, not 5 × kube's own 15 retries; backoff 0.2 + 0.4 + 0.8 + 1.6 s.
    let lists = sts_lists(&server.api.requests());
    assert_eq!(lists.len(), 5, "{lists:?}");
    assert!(lists.iter().all(|r| r.status == 429));
    assert!(took < Duration::from_secs(15), "{took:?}");
    assert!(
        lists[4].at - lists[0].at >= Duration::from_millis(3000),
        "{:?}",
        lists[4].at - lists[0].at
    );
    assert!(server.api.writes().is_empty());
    eprintln!("persistent 429: exit 4 after {took:?}");
}

#[test]
fn cli_a_transient_503_is_retried_and_retry_after_is_waited() {
    let server = crate::fakeapi::FakeApi::serve();
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), &SpecOpts::default());
    let kc = server.kubeconfig(dir.path());
    let apply = || {
        snaproll()
            .args(["apply", "-f"])
            .arg(&spec)
            .args(["--generation", G1, "--dry-run", "--kubeconfig"])
            .arg(&kc)
            .assert()
            .code(0);
    };
    // Twice 503, then the answer: 3 attempts, success.
    server.api.inject(
        Fault::status(
            "GET",
            "/statefulsets",
            503,
            "ServiceUnavailable",
            "etcd is busy",
        )
        .times(2),
    );
    apply();
    let lists = sts_lists(&server.api.requests());
    assert_eq!(
        lists.iter().map(|r| r.status).collect::<Vec<_>>(),
        [503, 503, 200]
    );
    // The server asks for 1 s (Retry-After and retryAfterSeconds): that, not 200 ms, is waited.
    server.api.clear_requests();
    server.api.inject(
        Fault::status("GET", "/statefulsets", 429, "TooManyRequests", "slow down")
            .retry_after(1)
            .times(1),
    );
    apply();
    let lists = sts_lists(&server.api.requests());
    assert_eq!(
        lists.iter().map(|r| r.status).collect::<Vec<_>>(),
        [429, 200]
    );
    let waited = lists[1].at - lists[0].at;
    assert!(
        waited >= Duration::from_millis(1000) && waited < Duration::from_millis(2000),
        "{waited:?}"
    );
    eprintln!("Retry-After 1 s: retried after {waited:?}");
    // The API server's own throttling (priority and fairness): a plain-text 429 whose only
    // trace of the pause is the Retry-After header. Waited too, and named on failure.
    server.api.clear_requests();
    server
        .api
        .inject(Fault::throttled("GET", "/statefulsets", 1).times(1));
    apply();
    let lists = sts_lists(&server.api.requests());
    assert_eq!(
        lists.iter().map(|r| r.status).collect::<Vec<_>>(),
        [429, 200]
    );
    let waited = lists[1].at - lists[0].at;
    assert!(
        waited >= Duration::from_millis(1000) && waited < Duration::from_millis(2000),
        "{waited:?}"
    );
    eprintln!("header-only Retry-After 1 s: retried after {waited:?}");
    server
        .api
        .inject(Fault::throttled("GET", "/statefulsets", 1).times(5));
    let out = snaproll()
        .args(["apply", "-f"])
        .arg(&spec)
        .args(["--generation", G1, "--dry-run", "--kubeconfig"])
        .arg(&kc)
        .assert()
        .code(4)
        .get_output()
        .clone();
    assert!(
        String::from_utf8(out.stderr).unwrap().ends_with(
            "listing StatefulSet objects in namespace default: after 5 attempts: 429 Too Many Requests: Too many requests, please try again later.\n"
        )
    );
}
