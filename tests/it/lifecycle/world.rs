//! The world's driver: runs the binary and plays the cluster's controllers and Argo CD between runs.

use super::*;

impl World {
    pub(crate) fn new(mode: Mode, knobs: Knobs) -> World {
        let tmp = tempfile::tempdir().unwrap();
        let server = FakeApi::serve();
        let kubeconfig = server.kubeconfig(tmp.path());
        let spec = tmp.path().join("snaproll.yaml");
        std::fs::write(&spec, spec_text(&knobs)).unwrap();
        let repo = tmp.path().join("gitops");
        World {
            server,
            mode,
            kubeconfig,
            spec,
            repo,
            knobs: RefCell::new(knobs),
            behaviour: RefCell::default(),
            retention_gc: true,
            served: RefCell::default(),
            argo_applied: RefCell::default(),
            events: RefCell::default(),
            seen: RefCell::default(),
            now: RefCell::new(D1.to_string()),
            selects: RefCell::default(),
            unchanged: RefCell::default(),
            tmp,
        }
    }

    pub(crate) fn api(&self) -> &FakeApi {
        &self.server.api
    }

    pub(crate) fn set_knobs(&self, f: impl FnOnce(&mut Knobs)) {
        let mut k = self.knobs.borrow_mut();
        f(&mut k);
        std::fs::write(&self.spec, spec_text(&k)).unwrap();
    }

    pub(crate) fn behave(&self, generation: &str, f: impl FnOnce(&mut Behaviour)) {
        let mut b = self.behaviour.borrow_mut();
        f(b.entry(generation.to_string()).or_default());
    }

    pub(crate) fn behaviour(&self, generation: &str) -> Behaviour {
        self.behaviour
            .borrow()
            .get(generation)
            .cloned()
            .unwrap_or_default()
    }

    /// `snaproll reconcile` as the CronJob runs it in this world's mode, at time `now`.
    pub(crate) fn command(&self, now: &str, extra: &[&str]) -> assert_cmd::Command {
        assert_cmd::Command::from_std(self.std_command(now, extra))
    }

    /// [`World::command`] as a plain process, to spawn (and kill) it.
    pub(crate) fn std_command(&self, now: &str, extra: &[&str]) -> std::process::Command {
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("snaproll"));
        for (k, _) in std::env::vars() {
            if k.starts_with("SNAPROLL_") || k == "KUBECONFIG" {
                cmd.env_remove(k);
            }
        }
        cmd.env("NO_COLOR", "1")
            .current_dir(crate::common::root())
            .env("HOME", self.tmp.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .args(["reconcile", "-f"])
            .arg(&self.spec)
            .args(["--now", now, "-o", "json"]);
        if self.mode != Mode::Direct {
            cmd.arg("--repo").arg(&self.repo);
        }
        match self.mode {
            Mode::Direct => {
                cmd.arg("--kubeconfig")
                    .arg(&self.kubeconfig)
                    .args(["--prune"]);
            }
            Mode::Push => {
                cmd.arg("--kubeconfig")
                    .arg(&self.kubeconfig)
                    .args(["--apply", "--prune"]);
            }
            Mode::Pull => {
                cmd.arg("--kubeconfig").arg(&self.kubeconfig);
            }
            Mode::Offline => {}
        }
        cmd.args(extra);
        cmd
    }

    /// One run that must succeed (exit 0), then the invariants; in pull mode Argo CD syncs.
    pub(crate) fn run(&self, now: &str) -> Run {
        self.run_code(now, &[], 0)
    }

    pub(crate) fn run_code(&self, now: &str, extra: &[&str], code: i32) -> Run {
        self.run_allowing(now, extra, &[code])
    }

    /// One run whose exit code must be one of `codes`, then the checks.
    pub(crate) fn run_allowing(&self, now: &str, extra: &[&str], codes: &[i32]) -> Run {
        *self.now.borrow_mut() = now.to_string();
        let run = Run::from(self.command(now, extra).output().unwrap());
        assert!(
            codes.contains(&run.code),
            "reconcile at {now} {extra:?}: exit {}\nstdout: {}\nstderr: {}",
            run.code,
            run.stdout,
            run.stderr
        );
        assert!(!run.stderr.contains("panicked"), "a panic: {}", run.stderr);
        self.record("run");
        self.check_report(&run);
        self.check_invariants("after reconcile");
        if self.mode == Mode::Pull {
            self.argo_sync();
            self.record("argo");
            self.check_invariants("after Argo CD synced");
        }
        run
    }

    /// A run with nothing new: no write request to the API server and no commit.
    pub(crate) fn quiet(&self, now: &str) -> Run {
        let commits = self.commits();
        self.api().clear_requests();
        let run = self.run(now);
        let writes: Vec<String> = self
            .api()
            .writes()
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect();
        assert!(writes.is_empty(), "a quiet run wrote: {writes:#?}");
        assert_eq!(self.commits(), commits, "a quiet run committed");
        assert!(!run.committed(), "{}", run.stdout);
        if self.mode != Mode::Offline {
            let lists = self.api().requests().iter().filter(|r| r.is_list()).count();
            // pods, PVCs, snapshots, Services, StatefulSets, Jobs; and the rollout's Events in
            // the modes that report them (snaproll applies).
            let kinds = 6 + usize::from(matches!(self.mode, Mode::Push | Mode::Direct));
            assert!(lists <= kinds, "{lists} LISTs for {kinds} kinds");
        }
        run
    }

    pub(crate) fn commits(&self) -> usize {
        if !self.repo.join(".git").exists() {
            return 0;
        }
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(&self.repo)
            .args(["rev-list", "--count", "HEAD"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    }

    pub(crate) fn git(&self, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(&self.repo)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Files under the rollout's folder at HEAD.
    pub(crate) fn git_files(&self) -> Vec<String> {
        self.git(&["ls-tree", "-r", "--name-only", "HEAD", "rollouts/demo/"])
            .lines()
            .map(|l| l.trim_start_matches("rollouts/demo/").to_string())
            .collect()
    }

    /// Every object of the rollout in the cluster, as `(order, Kind/name)` pairs.
    pub(crate) fn objects(&self) -> BTreeSet<(usize, String)> {
        let mut out = BTreeSet::new();
        for (i, (kind, path)) in [
            ("VolumeSnapshotClass", CLASSES),
            ("PersistentVolumeClaim", PVCS),
            ("Pod", PODS),
            ("VolumeSnapshot", SNAPS),
            ("Service", SVCS),
            ("StatefulSet", STS),
            ("Job", JOBS),
        ]
        .into_iter()
        .enumerate()
        {
            for name in self.server.block_on(self.api().names(path)) {
                out.insert((i, format!("{kind}/{name}")));
            }
        }
        out
    }

    /// Appends what appeared and went since the last call to the event log.
    pub(crate) fn record(&self, _step: &str) {
        let now = self.objects();
        let mut seen = self.seen.borrow_mut();
        let mut events = self.events.borrow_mut();
        for gone in seen.difference(&now) {
            events.push(format!("-{}", gone.1));
        }
        for new in now.difference(&seen) {
            events.push(format!("+{}", new.1));
        }
        *seen = now;
    }

    /// The events so far, and a fresh log.
    pub(crate) fn take_events(&self) -> Vec<String> {
        std::mem::take(&mut *self.events.borrow_mut())
    }

    pub(crate) fn items(&self, path: &str) -> Vec<Value> {
        self.server.block_on(self.api().items(path))
    }

    /// The single place the rollout's invariants are checked, after every run (offline,
    /// `--wait` and controller steps included): what the cluster holds (or, offline, what Git
    /// holds) is observed as snaproll observes it and checked by `rollout::check_all` (offline:
    /// `rollout::check_state`, Git-level: a snapshot file whenever its StatefulSet's file), plus
    /// the properties that span runs: once a dataset served, a ready StatefulSet serves it; a
    /// generation once reported unchanged never has a snapshot or StatefulSet.
    pub(crate) fn check_invariants(&self, when: &str) {
        let loaded = snaproll::spec::load(&self.spec).unwrap();
        if self.mode == Mode::Offline {
            if !self.repo.join(".git").exists() {
                return;
            }
            let manifests: Vec<std::sync::Arc<Value>> = self
                .git_files()
                .iter()
                .filter(|f| f.as_str() != "kustomization.yaml")
                .map(|f| {
                    let text = self.git(&["show", &format!("HEAD:rollouts/demo/{f}")]);
                    std::sync::Arc::new(serde_saphyr::from_str(&text).unwrap())
                })
                .collect();
            for (d, gens) in snaproll::engine::observe("demo", &manifests) {
                if let Err(e) = rollout::check_state(&d, &gens) {
                    panic!("{when}: in Git: {e}");
                }
            }
            return;
        }
        let mut objects = Vec::new();
        for path in [PODS, PVCS, SNAPS, SVCS, STS, JOBS] {
            for mut v in self.items(path) {
                let kind = match path {
                    PODS => "Pod",
                    PVCS => "PersistentVolumeClaim",
                    SNAPS => "VolumeSnapshot",
                    SVCS => "Service",
                    JOBS => "Job",
                    _ => "StatefulSet",
                };
                v["kind"] = json!(kind);
                objects.push(v);
            }
        }
        // What snaproll counts: members of the rollout's ApplySet (look-alikes are not).
        let id = snaproll::manifest::rollout_applyset_id("demo", NS);
        let observed = snaproll::engine::observe_members("demo", &id, &shared(&objects)).datasets;
        let now = self.now.borrow().clone();
        let opts = rollout::Options {
            generation: Default::default(),
            today: now[..10].to_string(),
            now: now.parse().unwrap(),
            snapshot_timeout: Some(rollout::DEFAULT_SNAPSHOT_TIMEOUT),
            start: false,
            rollout: "demo".into(),
            namespace: NS.into(),
        };
        if let Err(e) = rollout::check_all(&loaded.rollout, &observed, &opts) {
            panic!("{when}: {e}\n{observed:#?}");
        }
        crate::switch::check_service(self, when);
        // Unchanged data, across runs: a generation once reported unchanged never gets a
        // snapshot or StatefulSet, and its dataset keeps a serving generation (checked below).
        for (d, g) in self.unchanged.borrow().iter() {
            if let Some(o) = observed
                .get(d)
                .and_then(|gs| gs.iter().find(|o| &o.id == g))
            {
                assert!(
                    o.snapshot.is_none() && o.statefulset.is_none(),
                    "{when}: unchanged generation {g} of {d} has a snapshot or StatefulSet"
                );
            }
        }
        let mut served = self.served.borrow_mut();
        for (d, gens) in &observed {
            let ready = gens
                .iter()
                .filter(|g| g.statefulset.as_deref().is_some_and(sts_ready))
                .count();
            let in_spec = loaded.rollout.spec.datasets.iter().any(|x| &x.name == d);
            if served.contains(d) && in_spec {
                assert!(
                    ready >= 1,
                    "{when}: dataset {d} served before but no ready StatefulSet is left: {gens:#?}"
                );
            }
            if ready >= 1 {
                served.insert(d.clone());
            }
        }
    }

    /// Invariants of the run's own report: at most one generation per dataset in motion; notes
    /// the generations it reports unchanged (checked by [`World::check_invariants`]).
    pub(crate) fn check_report(&self, run: &Run) {
        for d in &self.knobs.borrow().datasets {
            for s in run.states(d) {
                if let Some(g) = s.strip_suffix(" unchanged") {
                    self.unchanged
                        .borrow_mut()
                        .insert((d.to_string(), g.to_string()));
                }
            }
            let moving: Vec<String> = run
                .states(d)
                .into_iter()
                .filter(|s| {
                    s.ends_with(" producing")
                        || s.ends_with(" snapshotting")
                        || s.ends_with(" verifying")
                        || s.ends_with(" rolling-out")
                })
                .collect();
            assert!(
                moving.len() <= 1,
                "more than one generation introduced: {moving:?}"
            );
        }
    }

    /// Plays the cluster's controllers once: the producer Pod finishes, the snapshot
    /// controller readies snapshots, the StatefulSet controller creates claims and reports
    /// readiness, and (1.32+) deletes the claims of deleted StatefulSets.
    pub(crate) fn play(&self) {
        let api = self.api();
        self.server.block_on(async {
            for pod in api.items(PODS).await {
                let name = str_of(&pod["metadata"]["name"]);
                let g = generation_of(&pod);
                let b = self.behaviour(&g);
                let phase = pod.pointer("/status/phase").and_then(Value::as_str);
                if matches!(phase, Some("Succeeded" | "Failed")) || b.producer_holds {
                    continue;
                }
                let restarts = pod
                    .pointer("/status/containerStatuses/0/restartCount")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                let status = match &b.producer_fails {
                    _ if b.producer_deadline => json!({"phase": "Failed",
                        "reason": "DeadlineExceeded",
                        "message": "Pod was active on the node longer than the specified deadline"}),
                    _ if b.crash_restarts > 0 => json!({"phase": "Running",
                        "containerStatuses": [{"name": "producer", "ready": false,
                            "restartCount": restarts + b.crash_restarts,
                            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                            "lastState": {"terminated": {"reason": "Error", "exitCode": 1}}}]}),
                    Some(reason) => json!({"phase": "Failed", "message": reason}),
                    None => match &b.producer_message {
                        // The kubelet copies the file at terminationMessagePath into the status.
                        Some(m) => json!({"phase": "Succeeded",
                            "containerStatuses": [{"name": "producer", "ready": false,
                                "restartCount": restarts,
                                "state": {"terminated": {"reason": "Completed",
                                    "exitCode": 0, "message": m}}}]}),
                        None => json!({"phase": "Succeeded"}),
                    },
                };
                api.set_status(&format!("{PODS}/{name}"), status).await;
            }
            for snap in api.items(SNAPS).await {
                let name = str_of(&snap["metadata"]["name"]);
                let b = self.behaviour(&generation_of(&snap));
                if snap.pointer("/status/readyToUse") == Some(&json!(true)) {
                    continue;
                }
                let status = if b.snapshot_holds || b.held_snapshots.contains(&name) {
                    match &b.snapshot_error {
                        Some(m) => json!({"readyToUse": false,
                            "error": {"message": m, "time": "2021-07-16T05:00:00Z"}}),
                        None => json!({"readyToUse": false}),
                    }
                } else {
                    let mut st = json!({"readyToUse": true, "restoreSize": b.restore_size,
                           "boundVolumeSnapshotContentName": format!("snapcontent-{name}")});
                    if b.restore_size.is_empty() {
                        st["restoreSize"] = Value::Null;
                    }
                    st
                };
                api.set_status(&format!("{SNAPS}/{name}"), status).await;
            }
            // The Job controller and the kubelet: the verify Job's Pod runs the check once
            // (backoffLimit 0); its failure carries the Pod's termination message.
            for job in api.items(JOBS).await {
                let name = str_of(&job["metadata"]["name"]);
                let b = self.behaviour(&generation_of(&job));
                if job.pointer("/status/conditions").is_some() {
                    continue;
                }
                let status = match (&b.verify_fails, b.verify_holds) {
                    (_, true) => json!({"active": 1, "startTime": "2021-07-16T04:00:00Z"}),
                    (Some(_), false) => json!({"failed": 1, "conditions": [
                        {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded",
                         "message": "Job has reached the specified backoff limit"},
                        {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                         "message": "Job has reached the specified backoff limit"}]}),
                    (None, false) => json!({"succeeded": 1, "conditions": [
                        {"type": "SuccessCriteriaMet", "status": "True"},
                        {"type": "Complete", "status": "True"}]}),
                };
                api.set_status(&format!("{JOBS}/{name}"), status).await;
                if let (Some(m), false) = (&b.verify_fails, b.verify_holds) {
                    let pod = format!("{name}-x7k2p");
                    let obj = json!({"apiVersion": "v1", "kind": "Pod",
                        "metadata": {"name": pod, "namespace": NS, "labels": {
                            "batch.kubernetes.io/job-name": name,
                            "job-name": name}},
                        "spec": {"restartPolicy": "Never", "containers": [
                            {"name": "verify", "image": "busybox:1.36"}]}});
                    api.apply_as("job-controller", &format!("{PODS}/{pod}"), &obj, true)
                        .await;
                    api.set_status(
                        &format!("{PODS}/{pod}"),
                        json!({"phase": "Failed", "containerStatuses": [{"name": "verify",
                            "ready": false, "restartCount": 0, "image": "busybox:1.36",
                            "imageID": "", "state": {"terminated": {"exitCode": 1,
                                "reason": "Error", "message": m}}}]}),
                    )
                    .await;
                }
            }
            // The garbage collector: a deleted Job's Pods go with it (background propagation).
            let jobs: BTreeSet<String> = api
                .items(JOBS)
                .await
                .iter()
                .map(|j| str_of(&j["metadata"]["name"]))
                .collect();
            for pod in api.items(PODS).await {
                if let Some(job) = pod
                    .pointer("/metadata/labels/batch.kubernetes.io~1job-name")
                    .and_then(Value::as_str)
                    && !jobs.contains(job)
                {
                    let name = str_of(&pod["metadata"]["name"]);
                    api.delete(&format!("{PODS}/{name}")).await;
                }
            }
            let stss = api.items(STS).await;
            // The controller makes only the claims that do not exist: existing ones (made by
            // snaproll for `snapshot.copies`) are adopted by name as they are.
            let claims: BTreeSet<String> = api
                .items(PVCS)
                .await
                .iter()
                .map(|v| str_of(&v["metadata"]["name"]))
                .collect();
            for sts in &stss {
                let name = str_of(&sts["metadata"]["name"]);
                let b = self.behaviour(&generation_of(sts));
                let replicas = sts["spec"]["replicas"].as_i64().unwrap_or(1);
                let template = &sts["spec"]["volumeClaimTemplates"][0];
                let claim = str_of(&template["metadata"]["name"]);
                for i in 0..replicas {
                    let pvc = format!("{claim}-{name}-{i}");
                    if claims.contains(&pvc) {
                        continue;
                    }
                    let obj = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                        "metadata": {"name": pvc, "namespace": NS,
                                     "labels": template["metadata"]["labels"].clone()},
                        "spec": template["spec"].clone()});
                    api.apply_as(
                        "statefulset-controller",
                        &format!("{PVCS}/{pvc}"),
                        &obj,
                        true,
                    )
                    .await;
                }
                let generation = sts["metadata"]["generation"].as_i64().unwrap_or(1);
                let ready = if b.sts_holds { 0 } else { replicas };
                api.set_status(
                    &format!("{STS}/{name}"),
                    json!({"observedGeneration": generation, "replicas": replicas,
                           "readyReplicas": ready, "availableReplicas": ready,
                           "updatedReplicas": replicas, "currentReplicas": replicas,
                           "currentRevision": format!("{name}-r1"),
                           "updateRevision": format!("{name}-r1")}),
                )
                .await;
            }
            if self.retention_gc {
                // A claim belongs to the StatefulSet of its dataset and generation.
                let key = |v: &Value| {
                    (
                        str_of(&v["metadata"]["labels"]["snaproll.dev/dataset"]),
                        generation_of(v),
                    )
                };
                let live: BTreeSet<_> = stss.iter().map(key).collect();
                for pvc in api.items(PVCS).await {
                    let name = str_of(&pvc["metadata"]["name"]);
                    if pvc.pointer("/metadata/labels/app.kubernetes.io~1component")
                        != Some(&json!("consumer-volume"))
                    {
                        continue;
                    }
                    let owner = live.contains(&key(&pvc));
                    if !owner && self.knobs.borrow().when_deleted == "Delete" {
                        api.delete(&format!("{PVCS}/{name}")).await;
                    }
                }
            }
        });
        self.record("controllers");
        self.check_invariants("after the controllers ran");
    }

    /// Argo CD (played): applies what Git holds under the rollout's folder in sync-wave order
    /// as its own field manager, and prunes what it applied before and Git no longer holds.
    pub(crate) fn argo_sync(&self) {
        let dir = self.repo.join("rollouts/demo");
        let mut docs: Vec<(i64, String, Value)> = Vec::new();
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if name == "kustomization.yaml" {
                continue;
            }
            let text = std::fs::read_to_string(entry.path()).unwrap();
            let v: Value = serde_saphyr::from_str(&text).unwrap();
            let wave = v
                .pointer("/metadata/annotations/argocd.argoproj.io~1sync-wave")
                .and_then(Value::as_str)
                .and_then(|w| w.parse().ok())
                .unwrap_or(0);
            docs.push((wave, path_of(&v), v));
        }
        docs.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        let wanted: BTreeMap<String, Value> =
            docs.iter().map(|d| (d.1.clone(), d.2.clone())).collect();
        let mut applied = self.argo_applied.borrow_mut();
        self.server.block_on(async {
            for (_, path, v) in &docs {
                if applied.get(path) != Some(v) {
                    self.api().apply_as("argocd", path, v, true).await;
                }
            }
            // Prune in reverse dependency order: StatefulSets first, snapshots after them.
            let mut gone: Vec<&String> = applied
                .keys()
                .filter(|p| !wanted.contains_key(*p))
                .collect();
            gone.sort_by_key(|p| {
                [JOBS, STS, SVCS, SNAPS, PODS, PVCS, CLASSES]
                    .iter()
                    .position(|k| p.starts_with(k))
                    .unwrap_or(9)
            });
            for p in gone {
                self.api().delete(p).await;
            }
        });
        *applied = wanted;
    }

    /// `snaproll status -o json` against the cluster.
    pub(crate) fn status(&self, now: &str) -> (i32, Value, String) {
        let out = snaproll()
            .env("HOME", self.tmp.path())
            .args(["status", "-f"])
            .arg(&self.spec)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["--now", now, "-o", "json"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        (
            out.status.code().unwrap_or(-1),
            serde_json::from_str(&text).unwrap_or(Value::Null),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    }

    /// Runs until nothing is in motion (at most `max` runs), playing the controllers between
    /// runs; returns the last run.
    pub(crate) fn settle(&self, now: &str, max: usize) -> Run {
        self.settle_allowing(now, max, &[0])
    }

    /// [`World::settle`] where runs may exit with any of `codes` (1 while a failed generation
    /// is reported).
    pub(crate) fn settle_allowing(&self, now: &str, max: usize, codes: &[i32]) -> Run {
        for _ in 0..max {
            let run = self.run_allowing(now, &[], codes);
            let moving = self.knobs.borrow().datasets.iter().any(|d| {
                run.states(d).iter().any(|s| {
                    [
                        " producing",
                        " snapshotting",
                        " verifying",
                        " rolling-out",
                        " retiring",
                        " waiting",
                    ]
                    .iter()
                    .any(|m| s.ends_with(m))
                })
            });
            if !moving {
                return run;
            }
            self.play();
        }
        panic!("the rollout did not settle in {max} runs");
    }
}
