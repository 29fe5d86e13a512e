//! Rollout safety, through the binary against the loopback fake API (issue "Rollout safety"):
//! a clock that goes back, the Git-less path, look-alike objects, name clashes and offline
//! pins. Every run goes through [`World`], which checks the rollout's invariants after it.

use serde_json::{Value, json};

use crate::common::*;
use crate::lifecycle::*;

const G0: &str = "2021-07-14";

/// No request wrote the rollout's objects (the fake leaves Lease requests out of `writes`).
fn assert_no_writes(w: &World) {
    let writes: Vec<String> = w
        .api()
        .writes()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(writes.is_empty(), "{writes:#?}");
}

/// A hand-made object carrying the rollout's labels but not its ApplySet membership.
fn look_alike_pod(generation: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("data-producer-{generation}"), "namespace": NS,
            "labels": {"app.kubernetes.io/managed-by": "snaproll", "snaproll.dev/rollout": "demo",
                       "snaproll.dev/dataset": "data", "snaproll.dev/generation": generation,
                       "app.kubernetes.io/component": "producer"}},
        "spec": {"restartPolicy": "Never",
                 "containers": [{"name": "producer", "image": "busybox"}]}})
}

#[test]
fn a_clock_behind_the_newest_generation_starts_nothing_and_retires_nothing() {
    let w = serving_day1(Mode::Push, Knobs::default());
    w.settle(D3, 12);
    w.take_events();
    // The node's clock goes back a day: the run says so, starts nothing, deletes nothing.
    for _ in 0..3 {
        w.api().clear_requests();
        let run = w.run(D2);
        assert_eq!(run.states("data"), [format!("{G3} serving")]);
        assert!(
            run.stderr.contains(&format!(
                "dataset data: the clock says {G2}, behind its newest generation {G3}; not starting an older generation (generations only move forward)"
            )),
            "{}",
            run.stderr
        );
        assert_no_writes(&w);
        w.play();
    }
    assert_eq!(w.take_events(), Vec::<String>::new());
    // Back on time, the rollout continues from the newest generation.
    w.quiet(D3);
}

#[test]
fn offline_a_clock_behind_keeps_the_newest_generation_in_git() {
    let w = World::new(Mode::Offline, Knobs::default());
    w.run(D3);
    let files = w.git_files();
    let commits = w.commits();
    let run = w.run(D2);
    assert!(
        run.stderr.contains("behind its newest generation"),
        "{}",
        run.stderr
    );
    assert_eq!(w.git_files(), files);
    assert_eq!(w.commits(), commits);
}

#[test]
fn a_new_generation_flag_older_than_the_newest_is_refused() {
    let w = serving_day1(Mode::Push, Knobs::default());
    w.settle(D2, 12);
    w.api().clear_requests();
    let run = w.run_code(D2, &["--generation", G0], 2);
    assert_eq!(
        run.stderr.trim(),
        format!(
            "error: reconcile of rollout demo: dataset data: --generation names generation {G0}, which is not kept (no snapshot of it exists); kept generations: {G2} (raise generations.keep to keep more for rollback)"
        )
    );
    assert_no_writes(&w);
}

/// `snaproll apply` in this world's cluster.
fn apply(w: &World, now: &str) -> (i32, String, String) {
    let out = snaproll()
        .env("HOME", w.tmp.path())
        .args(["apply", "--prune", "-f"])
        .arg(&w.spec)
        .arg("--kubeconfig")
        .arg(&w.kubeconfig)
        .args(["--now", now])
        .output()
        .unwrap();
    w.check_invariants("after apply");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn apply_advances_one_gated_step_per_run() {
    let w = World::new(Mode::Push, Knobs::default());
    let names = |w: &World| -> Vec<String> { w.objects().into_iter().map(|(_, n)| n).collect() };
    let (code, out, err) = apply(&w, D1);
    assert_eq!(code, 0, "{out}{err}");
    // The dry-run that decided the run needs the Lease is not repeated under it: one per
    // written object and the ApplySet parent.
    let dry_runs = w.api().requests().iter().filter(|r| r.is_dry_run()).count();
    assert_eq!(dry_runs, 5, "{:#?}", w.api().requests());
    // The producer only: no snapshot of a volume still being written, no StatefulSet.
    assert_eq!(
        names(&w),
        [
            "VolumeSnapshotClass/csi-gce-pd-snapshot-class",
            "PersistentVolumeClaim/data",
            "Pod/data-producer-2021-07-15",
            "Service/consumer",
        ]
    );
    assert!(out.contains(&format!("data: {G1} producing")), "{out}");
    // Again: nothing new happened, nothing is written.
    w.api().clear_requests();
    assert_eq!(apply(&w, D1).0, 0);
    assert_no_writes(&w);
    w.play();
    let (code, out, _) = apply(&w, D1);
    assert_eq!(code, 0);
    assert!(out.contains(&format!("data: {G1} snapshotting")), "{out}");
    assert!(names(&w).contains(&"VolumeSnapshot/data-2021-07-15".to_string()));
    assert!(!names(&w).iter().any(|n| n.starts_with("StatefulSet/")));
    w.play();
    let (code, out, _) = apply(&w, D1);
    assert_eq!(code, 0);
    assert!(out.contains(&format!("data: {G1} rolling out")), "{out}");
    assert!(names(&w).contains(&"StatefulSet/consumer-2021-07-15".to_string()));
}

#[test]
fn reconcile_without_a_repository_is_push_mode() {
    let w = World::new(Mode::Push, Knobs::default());
    let out = snaproll()
        .env("HOME", w.tmp.path())
        .args(["reconcile", "--prune", "-f"])
        .arg(&w.spec)
        .arg("--kubeconfig")
        .arg(&w.kubeconfig)
        .args(["--now", D1, "-o", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(!w.repo.exists(), "no Git was written");
    let first: Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().next().unwrap()).unwrap();
    assert_eq!(
        first["generations"][0]["generations"][0]["state"],
        "producing"
    );
    assert!(
        w.objects()
            .iter()
            .any(|(_, n)| n == "Pod/data-producer-2021-07-15")
    );
}

#[test]
fn install_without_a_repository_runs_the_gated_engine() {
    let w = World::new(Mode::Push, Knobs::default());
    let out = snaproll()
        .args(["install", "-f"])
        .arg(&w.spec)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let docs: Vec<Value> = text
        .split("\n---\n")
        .filter_map(|d| serde_saphyr::from_str(d).ok())
        .collect();
    let cron = docs
        .iter()
        .find(|d| d["kind"] == "CronJob")
        .expect("a CronJob");
    let args = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"];
    let args: Vec<&str> = args
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        &args[..5],
        [
            "reconcile",
            "-f",
            "/etc/snaproll/snaproll.yaml",
            "--apply",
            "--prune"
        ]
    );
}

#[test]
fn a_look_alike_is_reported_and_never_adopted_served_or_deleted() {
    let w = serving_day1(Mode::Push, Knobs::default());
    let path = format!("{PODS}/data-producer-{G0}");
    w.server.block_on(async {
        w.api()
            .apply_as("kubectl", &path, &look_alike_pod(G0), true)
            .await;
        w.api()
            .set_status(&path, json!({"phase": "Succeeded"}))
            .await;
    });
    let before = w.server.block_on(w.api().get(&path)).unwrap();
    for now in [D1, D2, D2, D2, D2, D2, D2] {
        w.api().clear_requests();
        let run = w.run(now);
        assert!(
            run.stderr.contains(&format!(
                "dataset data: ignoring Pod/data-producer-{G0} (the rollout's labels, but not members of its ApplySet: not snaproll's)"
            )),
            "{}",
            run.stderr
        );
        assert!(
            !run.states("data").iter().any(|s| s.starts_with(G0)),
            "{:?}",
            run.states("data")
        );
        let touched: Vec<String> = w
            .api()
            .requests()
            .iter()
            .filter(|r| r.path.contains(G0) && r.method != "GET")
            .map(|r| format!("{} {}", r.method, r.path))
            .collect();
        assert!(touched.is_empty(), "{touched:#?}");
        w.play();
    }
    assert_eq!(w.server.block_on(w.api().get(&path)).unwrap(), before);
    let (code, v, _) = w.status(D2);
    assert_eq!(code, 0);
    assert_eq!(v[0]["foreign"], json!([format!("Pod/data-producer-{G0}")]));
    assert_eq!(v[0]["generations"][0]["generation"], G2);
}

#[test]
fn a_name_clash_with_a_foreign_object_fails_and_writes_nothing() {
    let w = World::new(Mode::Push, Knobs::default());
    // Someone's own claim named like the dataset's source claim, without any of its labels.
    let pvc = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data", "namespace": NS},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}});
    let path = format!("{PVCS}/data");
    w.server
        .block_on(w.api().apply_as("kubectl", &path, &pvc, true));
    let before = w.server.block_on(w.api().get(&path)).unwrap();
    w.api().clear_requests();
    let run = w.run_code(D1, &[], 4);
    assert!(
        run.stderr.contains(
            "PersistentVolumeClaim/data (default) exists and is not snaproll's (made by kubectl without the rollout's labels); snaproll never adopts or overwrites it"
        ),
        "{}",
        run.stderr
    );
    assert_no_writes(&w);
    assert_eq!(w.server.block_on(w.api().get(&path)).unwrap(), before);
}

#[test]
fn offline_pin_of_a_generation_git_never_kept_is_refused_like_online() {
    let w = World::new(Mode::Offline, Knobs::default());
    w.run(D1);
    let commits = w.commits();
    w.set_knobs(|k| k.pin = Some(G0));
    let run = w.run_code(D2, &[], 2);
    assert_eq!(
        run.stderr.trim(),
        format!(
            "error: reconcile of rollout demo: dataset data: generations.pin names generation {G0}, which is not kept (no snapshot of it exists); kept generations: {G1} (raise generations.keep to keep more for rollback)"
        )
    );
    assert_eq!(w.commits(), commits);
}

#[test]
fn an_immutable_source_claim_change_rolls_forward_to_a_fresh_claim() {
    let w = serving_day1(Mode::Push, Knobs::default());
    // The storage class of the shared source claim `data` changes: the API server refuses that
    // in place (a claim's spec is immutable but for its size).
    let text = std::fs::read_to_string(&w.spec).unwrap();
    std::fs::write(
        &w.spec,
        text.replace(
            "storageClassName: standard-rwo",
            "storageClassName: premium-rwo",
        ),
    )
    .unwrap();
    w.api().clear_requests();
    let run = w.run(D2);
    assert!(
        run.stderr.contains(
            "dataset data: source claim data cannot change in place (storageClassName standard-rwo -> premium-rwo); new generations fill a fresh claim data-<generation>; data stays while a producer uses it"
        ),
        "{}",
        run.stderr
    );
    assert_eq!(
        run.states("data"),
        [format!("{G1} serving"), format!("{G2} producing")]
    );
    let fresh = w
        .server
        .block_on(w.api().get(&format!("{PVCS}/data-{G2}")))
        .expect("a fresh source claim");
    assert_eq!(fresh["spec"]["storageClassName"], "premium-rwo");
    let producer = w
        .server
        .block_on(w.api().get(&format!("{PODS}/data-producer-{G2}")))
        .unwrap();
    assert_eq!(
        producer.pointer("/spec/volumes/0/persistentVolumeClaim/claimName"),
        Some(&json!(format!("data-{G2}")))
    );
    // The old claim is never patched; the serving generation keeps serving.
    let patched: Vec<String> = w
        .api()
        .writes()
        .iter()
        .filter(|r| r.path.ends_with("/persistentvolumeclaims/data"))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(patched.is_empty(), "{patched:#?}");
    let r = w.settle(D2, 16);
    assert_eq!(r.states("data"), [format!("{G2} serving")]);
    let snap = w
        .server
        .block_on(w.api().get(&format!("{SNAPS}/data-{G2}")))
        .unwrap();
    assert_eq!(
        snap.pointer("/spec/source/persistentVolumeClaimName"),
        Some(&json!(format!("data-{G2}")))
    );
    // Once no producer uses the old claim, it goes and the shared claim comes back with the
    // new class; the next generation fills it again.
    let data = w
        .server
        .block_on(w.api().get(&format!("{PVCS}/data")))
        .expect("the shared claim again");
    assert_eq!(data["spec"]["storageClassName"], "premium-rwo");
    w.settle(D3, 16);
    let snap = w
        .server
        .block_on(w.api().get(&format!("{SNAPS}/data-{G3}")))
        .unwrap();
    assert_eq!(
        snap.pointer("/spec/source/persistentVolumeClaimName"),
        Some(&json!("data"))
    );
    assert!(
        w.server
            .block_on(w.api().get(&format!("{PVCS}/data-{G2}")))
            .is_none(),
        "the fresh claim retires with its generation's producer"
    );
}

#[test]
fn a_run_that_would_write_while_another_holds_the_lease_exits_6_and_writes_nothing() {
    let w = World::new(Mode::Push, Knobs::default());
    let lease = "/apis/coordination.k8s.io/v1/namespaces/default/leases/snaproll-demo";
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S.000000Z")
        .to_string();
    w.server.block_on(w.api().apply_as(
        "other-run",
        lease,
        &json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "snaproll-demo", "namespace": NS},
            "spec": {"holderIdentity": "ci-runner/42/abcdef", "leaseDurationSeconds": 60,
                     "acquireTime": now, "renewTime": now}}),
        true,
    ));
    w.api().clear_requests();
    let run = w.run_code(D1, &[], 6);
    assert!(
        run.stderr.contains("rollout demo is being changed by another run: Lease default/snaproll-demo held by ci-runner/42/abcdef"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("this run did nothing"),
        "{}",
        run.stderr
    );
    let writes: Vec<String> = w
        .api()
        .requests()
        .iter()
        .filter(|r| r.method != "GET" && !r.is_dry_run())
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(writes.is_empty(), "{writes:#?}");
    assert!(w.objects().is_empty());
    // A run with nothing to write needs no Lease: `status` and a dry run still work.
    let (code, _, stderr) = w.status(D1);
    assert_eq!(code, 0, "{stderr}");
    // Once the holder's Lease expires, the next run takes it over and proceeds.
    let past = "2021-01-01T00:00:00.000000Z";
    w.server.block_on(w.api().apply_as(
        "other-run",
        lease,
        &json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "snaproll-demo", "namespace": NS},
            "spec": {"holderIdentity": "ci-runner/42/abcdef", "leaseDurationSeconds": 60,
                     "acquireTime": past, "renewTime": past}}),
        true,
    ));
    let run = w.run(D1);
    assert_eq!(run.states("data"), [format!("{G1} producing")]);
    let held = w.server.block_on(w.api().get(lease)).unwrap();
    assert!(
        held.pointer("/spec/holderIdentity")
            .is_none_or(Value::is_null),
        "released at the end: {held:#}"
    );
}

#[test]
fn racing_runs_on_one_remote_never_move_it_back_to_an_older_generation() {
    let tmp = tempfile::tempdir().unwrap();
    let bare = tmp.path().join("remote.git");
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    git(&["init", "-q", "--bare", "-b", "main", bare.to_str().unwrap()]);
    // An existing GitOps repository with someone else's folder in it.
    let seed = tmp.path().join("seed");
    git(&["init", "-q", "-b", "main", seed.to_str().unwrap()]);
    std::fs::write(seed.join("README.md"), "ops\n").unwrap();
    let s = seed.to_str().unwrap();
    git(&["-C", s, "add", "README.md"]);
    git(&[
        "-C",
        s,
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@t",
        "commit",
        "-q",
        "-m",
        "init",
    ]);
    git(&["-C", s, "push", "-q", bare.to_str().unwrap(), "main"]);
    let spec = tmp.path().join("snaproll.yaml");
    std::fs::write(&spec, spec_text(&Knobs::default())).unwrap();
    let url = format!("file://{}", bare.display());
    // Three runs, three days, one remote, at once (a CI job and two CronJob runs).
    let run = |now: &str| {
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("snaproll"));
        cmd.env("HOME", tmp.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env_remove("KUBECONFIG")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .args(["reconcile", "--offline", "--push", "-f"])
            .arg(&spec)
            .args(["--repo", &url, "--now", now])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    for round in 0..3 {
        let children = [run(D3), run(D1), run(D2)];
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert_eq!(
                out.status.code(),
                Some(0),
                "round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let dir = format!("--git-dir={}", bare.display());
    git(&[&dir, "fsck", "--strict"]);
    // Commit subjects name the generation each run committed: never an older one after a
    // newer, and the newest is where the remote ends.
    let subjects = git(&[&dir, "log", "--reverse", "--format=%s", "main"]);
    let gens: Vec<&str> = subjects
        .lines()
        .filter(|s| s.starts_with("snaproll: "))
        .filter_map(|s| s.split_whitespace().nth(2))
        .map(|g| g.trim_end_matches(':'))
        .collect();
    assert!(!gens.is_empty(), "{subjects}");
    assert!(gens.windows(2).all(|w| w[0] <= w[1]), "{subjects}");
    assert_eq!(gens.last(), Some(&G3), "{subjects}");
    let files = git(&[&dir, "ls-tree", "-r", "--name-only", "main"]);
    assert!(
        files.contains(&format!("60-statefulset-consumer-{G3}.yaml")),
        "{files}"
    );
}

#[test]
fn wait_keeps_one_clone_of_a_url_remote_for_all_its_polls() {
    let w = World::new(Mode::Push, Knobs::default());
    let bare = w.tmp.path().join("remote.git");
    let out = std::process::Command::new("git")
        .args(["init", "-q", "--bare", "-b", "main"])
        .arg(&bare)
        .output()
        .unwrap();
    assert!(out.status.success());
    let url = format!("file://{}", bare.display());
    // The producer never finishes here: --wait polls until its timeout.
    let out = snaproll()
        .env("HOME", w.tmp.path())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .args([
            "--log-level",
            "debug",
            "reconcile",
            "--apply",
            "--prune",
            "--wait",
        ])
        .args(["--timeout", "2s", "--poll-interval", "300ms", "-f"])
        .arg(&w.spec)
        .args(["--repo", &url, "--now", D1, "--kubeconfig"])
        .arg(&w.kubeconfig)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("timed out after 2s waiting for the rollout to settle"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("new clone").count(), 1, "{stderr}");
    assert!(
        stderr.matches("fetching into the existing clone").count() >= 2,
        "{stderr}"
    );
}
