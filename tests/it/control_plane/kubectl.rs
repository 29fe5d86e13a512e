//! Beside kubectl and the API server: ApplySet, finalizers, server-side diff, wave-by-wave pull, a server that stops mid-run.

use super::*;

/// The folder `snaproll render --out` writes for generation `g`, built by `kubectl kustomize`,
/// as a JSON list without the ApplySet membership label (kubectl refuses input carrying it: it
/// sets the label itself).
fn kustomized(r: &Rollout, g: &str, drop_kind: Option<&str>) -> String {
    let dir = r.c.tmp.path().join(format!("render-{g}"));
    let out = snaproll()
        .args(["render", "--generation", g, "-f"])
        .arg(&r.spec)
        .arg("--out")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let yaml = run_ok(r.c.kubectl().arg("kustomize").arg(&dir));
    let mut items = Vec::new();
    for doc in yaml.split("\n---\n").filter(|d| !d.trim().is_empty()) {
        let mut v: Value = serde_saphyr::from_str(doc).unwrap();
        if drop_kind.is_some_and(|k| v["kind"] == k) {
            continue;
        }
        if let Some(labels) = v["metadata"]["labels"].as_object_mut() {
            labels.remove("applyset.kubernetes.io/part-of");
        }
        items.push(v);
    }
    json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string()
}

/// Suite 4: ApplySet interop with the real kubectl. kubectl recognises snaproll's parent and
/// refuses to take over a set another tool manages, naming the tooling; with the tooling
/// annotation handed to kubectl, its server-side dry-run prune accepts the parent's ID and
/// group-kinds and sees exactly snaproll's members (nothing to prune for the same folder; the
/// Service when the folder drops it).
#[test]
fn applyset_is_recognised_by_kubectl() {
    let Some(r) = Rollout::new("applyset") else {
        return;
    };
    r.settle(D1);
    let parent = "snaproll-demo";
    let kubectl_apply = |input: &str, extra: &[&str]| {
        let mut cmd = r.c.kubectl();
        cmd.env("KUBECTL_APPLYSET", "true")
            .args(["apply", "--server-side", "--prune"])
            .arg(format!("--applyset=configmaps/{parent}"))
            .args(extra)
            .args(["-f", "-"]);
        pipe(cmd, input)
    };
    let folder = kustomized(&r, G1, None);
    let out = kubectl_apply(&folder, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!(
            "ApplySet parent object \"configmaps./{parent}\" already exists and is managed by tooling \"snaproll\" instead of \"kubectl\""
        )),
        "{stderr}"
    );

    let live = r.c.get("configmap", parent).unwrap();
    let tooling = live["metadata"]["annotations"]["applyset.kubernetes.io/tooling"]
        .as_str()
        .unwrap()
        .to_string();
    r.c.kubectl_ok(&[
        "annotate",
        "--overwrite",
        "configmap",
        parent,
        "applyset.kubernetes.io/tooling=kubectl/v1.34.4",
    ]);
    // --force-conflicts (harmless in a dry-run): the server defaults `status.phase: Pending`
    // into the StatefulSet's claim templates, an atomic list, so any second manager applying
    // the same folder conflicts with snaproll over `.spec.volumeClaimTemplates`.
    let out = kubectl_apply(&folder, &["--dry-run=server", "--force-conflicts"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(!stdout.contains("pruned"), "{stdout}");
    let out = kubectl_apply(
        &kustomized(&r, G1, Some("Service")),
        &["--dry-run=server", "--force-conflicts"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let pruned: Vec<&str> = stdout.lines().filter(|l| l.contains("pruned")).collect();
    assert_eq!(
        pruned,
        ["service/consumer pruned (server dry run)"],
        "{stdout}"
    );
    r.c.kubectl_ok(&[
        "annotate",
        "--overwrite",
        "configmap",
        parent,
        &format!("applyset.kubernetes.io/tooling={tooling}"),
    ]);
    // kubectl's dry-runs changed nothing: snaproll's next run is a no-op.
    r.quiet(D1);
}

/// Suite 8: an object held in Terminating by a finalizer (here the retiring generation's
/// snapshot, by a backup tool) is deleted once, then skipped: later runs do not delete it
/// again; once the finalizer goes, the rollout completes.
#[test]
fn finalizer_held_terminating_object_is_deleted_once() {
    let Some(r) = Rollout::new("finalizer") else {
        return;
    };
    r.settle(D1);
    let old = format!("data-{G1}");
    r.c.kubectl_ok(&[
        "patch",
        "volumesnapshot",
        &old,
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":["backup.example.com/hold"]}}"#,
    ]);
    let mark = r.c.audit_mark();
    // Day 2 advances until the old snapshot is the only thing left to retire.
    for _ in 0..30 {
        let run = r.run(D2);
        let held =
            r.c.get("volumesnapshot", &old)
                .is_some_and(|s| !s["metadata"]["deletionTimestamp"].is_null());
        if held {
            break;
        }
        r.c.play(&r.size);
        if run.states().iter().any(|s| s.ends_with(" retiring")) {
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    let snap =
        r.c.get("volumesnapshot", &old)
            .expect("held by its finalizer");
    assert!(!snap["metadata"]["deletionTimestamp"].is_null());
    // Further runs leave it alone.
    for _ in 0..2 {
        r.run(D2);
    }
    let deletes: Vec<String> =
        r.c.audit_since(mark)
            .iter()
            .filter(|a| a.verb() == "delete" && a.name() == old && !a.is_dry_run())
            .map(Audit::line)
            .collect();
    assert_eq!(deletes.len(), 1, "{deletes:#?}");
    r.c.kubectl_ok(&[
        "patch",
        "volumesnapshot",
        &old,
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    let run = r.settle(D2);
    assert_eq!(run.states(), [format!("{G2} serving")], "{}", run.stdout);
    r.quiet(D2);
}

/// Suite 10 (Argo CD, argo-cd issue 11143): in pull mode the committed StatefulSet's
/// volumeClaimTemplates carry `apiVersion` and `kind`, as the live object has them, so a
/// server-side dry-run of the committed file by Argo CD's field manager against the live object
/// shows no diff.
#[test]
fn committed_statefulset_has_no_server_side_diff() {
    let Some(r) = Rollout::new("argocd") else {
        return;
    };
    pull_until_serving(&r, D1, G1, &mut BTreeMap::new());
    let dir = Path::new(&r.repo).join("rollouts/demo");
    let file = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains("statefulset"))
        .expect("a committed StatefulSet");
    let committed: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let template = &committed["spec"]["volumeClaimTemplates"][0];
    assert_eq!(template["apiVersion"], "v1", "{template}");
    assert_eq!(template["kind"], "PersistentVolumeClaim", "{template}");
    let live = r.c.get("statefulset", &format!("consumer-{G1}")).unwrap();
    let live_template = &live["spec"]["volumeClaimTemplates"][0];
    assert_eq!(live_template["apiVersion"], "v1", "{live_template}");
    assert_eq!(
        live_template["kind"], "PersistentVolumeClaim",
        "{live_template}"
    );
    // As Argo CD's ServerSideApply diff does it: dry-run apply the file as the manager that
    // applied it and compare with the live object.
    let out =
        r.c.kubectl()
            .args(["diff", "--server-side", "--field-manager=argocd", "-f"])
            .arg(&file)
            .output()
            .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Argo CD (played) for suite 2: builds the committed folder with `kubectl kustomize`, applies
/// it with the real `kubectl apply --server-side` wave by wave (the `argocd.argoproj.io/sync-wave`
/// annotations, lowest first), and deletes what it applied before and Git no longer holds,
/// StatefulSets first. Returns what it applied, by `kind/name`.
fn argo_sync(r: &Rollout, applied: &BTreeMap<String, Value>) -> BTreeMap<String, Value> {
    let dir = Path::new(&r.repo).join("rollouts/demo");
    let built = run_ok(r.c.kubectl().arg("kustomize").arg(&dir));
    let mut waves: BTreeMap<i64, Vec<Value>> = BTreeMap::new();
    let mut wanted = BTreeMap::new();
    for doc in built.split("\n---\n").filter(|d| !d.trim().is_empty()) {
        let v: Value = serde_saphyr::from_str(doc).unwrap();
        let wave = v["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"]
            .as_str()
            .and_then(|w| w.parse().ok())
            .unwrap_or(0);
        let key = format!(
            "{}/{}",
            v["kind"].as_str().unwrap_or_default().to_lowercase(),
            v["metadata"]["name"].as_str().unwrap_or_default()
        );
        wanted.insert(key, v.clone());
        waves.entry(wave).or_default().push(v);
    }
    for (_, docs) in waves {
        let mut cmd = r.c.kubectl();
        cmd.args([
            "apply",
            "--server-side",
            "--field-manager=argocd",
            "-f",
            "-",
        ]);
        let out = pipe(
            cmd,
            &json!({"apiVersion": "v1", "kind": "List", "items": docs}).to_string(),
        );
        assert!(out.status.success(), "Argo CD sync: {out:?}");
    }
    let order = [
        "statefulset/",
        "service/",
        "volumesnapshot/",
        "pod/",
        "persistentvolumeclaim/",
        "volumesnapshotclass/",
    ];
    let mut gone: Vec<&String> = applied
        .keys()
        .filter(|k| !wanted.contains_key(*k))
        .collect();
    gone.sort_by_key(|k| order.iter().position(|o| k.starts_with(o)).unwrap_or(9));
    for k in gone {
        r.c.kubectl_ok(&["delete", k, "--wait=false", "--ignore-not-found"]);
    }
    wanted
}

/// Pull-mode runs at `now`, each followed by Argo CD (played) syncing Git and the kubelet and
/// snapshotter playing, until `g` serves; the invariants after every step.
fn pull_until_serving(r: &Rollout, now: &str, g: &str, applied: &mut BTreeMap<String, Value>) {
    for _ in 0..30 {
        let run = r.checked(
            now,
            r.snaproll_run(&["reconcile", "--repo", &r.repo, "--now", now, "-o", "json"]),
        );
        *applied = argo_sync(r, applied);
        r.check_invariants(now, "after Argo CD synced");
        if !run.moving() && run.states() == [format!("{g} serving")] {
            return;
        }
        r.c.play(&r.size);
        r.check_invariants(now, "after the kubelet and snapshotter played");
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!("pull mode did not settle at {now}");
}

/// Suite 2: pull mode. snaproll only commits (and reads the cluster); the real kubectl applies
/// the committed folder wave by wave as Argo CD would, and `kubectl kustomize` builds it; day 1
/// to day 2 with the invariants after every step, and snaproll writes nothing.
#[test]
fn pull_mode_kubectl_applies_the_committed_folder_wave_by_wave() {
    let Some(r) = Rollout::new("pull") else {
        return;
    };
    let mark = r.c.audit_mark();
    let mut applied = BTreeMap::new();
    for (now, g) in [(D1, G1), (D2, G2)] {
        pull_until_serving(&r, now, g, &mut applied);
    }
    let names = r.c.names();
    assert_eq!(
        names.get("StatefulSet").cloned().unwrap_or_default(),
        [format!("consumer-{G2}")]
    );
    // snaproll itself never wrote to the cluster.
    let writes: Vec<String> =
        r.c.audit_since(mark)
            .iter()
            .filter(|a| a.is_write() && a.resource() != "leases")
            .map(Audit::line)
            .collect();
    assert!(writes.is_empty(), "{writes:#?}");
}

/// Suite 9: the API server stops in the middle of a run: the run fails with one clear line
/// (exit 4), and the re-run against a working server converges with the invariants intact. A
/// second kube-apiserver on the same etcd is stopped, so the other tests keep theirs.
#[test]
fn api_server_stopped_mid_run_then_rerun_converges() {
    let Some(mut r) = Rollout::new("outage") else {
        return;
    };
    r.settle(D1);
    let (mut server, url) = r.c.plane.second_apiserver("outage");
    let token = format!("test-token-{}", r.c.user.trim_start_matches("test-"));
    let kc = r.c.tmp.path().join("outage.kubeconfig");
    std::fs::write(&kc, kubeconfig(&url, &r.c.plane.ca, &token, &r.c.ns)).unwrap();
    r.kubeconfig = kc;
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("snaproll"));
    cmd.env("HOME", r.c.tmp.path())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("NO_COLOR", "1")
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .args([
            "reconcile",
            "--repo",
            &r.repo,
            "--apply",
            "--prune",
            "--now",
            D2,
        ])
        .arg("-f")
        .arg(&r.spec)
        .arg("--kubeconfig")
        .arg(&r.kubeconfig)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    // Stop the server at the run's first request.
    let audit = r.c.plane.dir.join("audit-outage.log");
    let start = Instant::now();
    while !std::fs::read_to_string(&audit)
        .unwrap_or_default()
        .contains(&format!("\"username\":\"{}\"", r.c.user))
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no request arrived"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    server.kill().unwrap();
    server.wait().unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("stopped mid-run: {stderr}");
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    r.check_invariants(D2, "after the failed run");
    // The server is back (the shared one, same etcd): the re-runs converge.
    r.kubeconfig = r.c.kubeconfig.clone();
    let run = r.settle(D2);
    assert_eq!(run.states(), [format!("{G2} serving")], "{}", run.stdout);
    r.quiet(D2);
}
