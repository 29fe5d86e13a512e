//! Whole rollout lifecycles, driven as a CronJob would drive them: the `snaproll` binary runs
//! `reconcile` again and again against a loopback API server (kube-fake-client), and between
//! runs a small driver plays the controllers a real cluster has (the kubelet finishing the
//! producer Pod, the snapshot controller, the StatefulSet controller creating and removing
//! claims) and, in pull mode, Argo CD applying what Git holds.
//!
//! After every single run (offline and `--wait` runs too) and every controller step,
//! [`World::check_invariants`] observes the cluster (offline: Git) as snaproll does and calls
//! the rollout's own checks, `rollout::check_all` (`rollout::check_state` on Git): a snapshot
//! is never gone while a StatefulSet or claim of its generation exists; at most one generation
//! is being introduced per dataset; the serving generation is always rendered in full; and,
//! across runs, once a dataset served, a ready StatefulSet always serves it. Re-runs with
//! nothing new make no write request and no commit.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::{Value, json};
use snaproll::install::{self, Options as InstallOptions, rbac};
use snaproll::rollout;

use crate::common::*;
use crate::fakeapi::{FakeApi, Req, Server, rbac_requests};

pub(crate) const NS: &str = "default";
pub(crate) const PODS: &str = "/api/v1/namespaces/default/pods";
pub(crate) const PVCS: &str = "/api/v1/namespaces/default/persistentvolumeclaims";
pub(crate) const SVCS: &str = "/api/v1/namespaces/default/services";
pub(crate) const STS: &str = "/apis/apps/v1/namespaces/default/statefulsets";
pub(crate) const SNAPS: &str =
    "/apis/snapshot.storage.k8s.io/v1/namespaces/default/volumesnapshots";
pub(crate) const CLASSES: &str = "/apis/snapshot.storage.k8s.io/v1/volumesnapshotclasses";

pub(crate) const D1: &str = "2021-07-15T04:00:00Z";
pub(crate) const D2: &str = "2021-07-16T04:00:00Z";
pub(crate) const D3: &str = "2021-07-17T04:00:00Z";
pub(crate) const G1: &str = "2021-07-15";
pub(crate) const G2: &str = "2021-07-16";
pub(crate) const G3: &str = "2021-07-17";

/// How snaproll reaches the cluster.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Mode {
    /// `reconcile --apply --prune`: snaproll applies each step itself.
    Push,
    /// `reconcile` with read-only cluster access: it commits, Argo CD (played here) applies.
    Pull,
    /// No cluster configuration at all: decisions from what Git holds.
    Offline,
    /// `reconcile --prune` without `--repo`: push mode without Git (what `install` without
    /// `--repo` runs).
    Direct,
}

/// The knobs of the generated spec.
#[derive(Clone)]
pub(crate) struct Knobs {
    pub(crate) datasets: Vec<&'static str>,
    pub(crate) keep: u32,
    pub(crate) replicas: u32,
    pub(crate) size: &'static str,
    pub(crate) when_deleted: &'static str,
    pub(crate) pin: Option<&'static str>,
    /// `snapshotClass.existing: true`: the class is the cluster's, not rendered.
    pub(crate) existing_class: bool,
    /// `consumer.switch: atomic` (else the default, `overlap`).
    pub(crate) atomic: bool,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            datasets: vec!["data"],
            keep: 1,
            replicas: 3,
            size: "10Gi",
            when_deleted: "Delete",
            pin: None,
            existing_class: false,
            atomic: false,
        }
    }
}

/// The consumer of a dataset: `consumer` for `data` (as in the article), else `<name>-consumer`.
pub(crate) fn consumer(dataset: &str) -> String {
    if dataset == "data" {
        "consumer".to_string()
    } else {
        format!("{dataset}-consumer")
    }
}

pub(crate) fn spec_text(k: &Knobs) -> String {
    let class = if k.existing_class {
        "    existing: true\n"
    } else {
        "    driver: pd.csi.storage.gke.io\n    deletionPolicy: Delete\n"
    };
    let mut s = format!(
        "apiVersion: snaproll.dev/v1alpha1\nkind: DatasetRollout\nmetadata:\n  name: demo\n  namespace: default\nspec:\n  snapshotClass:\n    name: csi-gce-pd-snapshot-class\n{class}  datasets:\n",
    );
    for d in &k.datasets {
        let pin = k
            .pin
            .map(|p| format!("\n        pin: \"{p}\""))
            .unwrap_or_default();
        s.push_str(&format!(
            "    - name: {d}\n      storage:\n        storageClassName: standard-rwo\n        size: {size}\n        accessModes: [ReadWriteOnce]\n      producer:\n        image: ubuntu:22.04\n        command: [\"/bin/sh\", \"-c\"]\n        args: [\"echo refreshed > /data/file.txt\"]\n        mountPath: /data\n      generations:\n        schedule: daily\n        keep: {keep}{pin}\n      consumer:\n        name: {c}\n        replicas: {replicas}\n        image: ubuntu:22.04\n        mountPath: /data\n        pvcRetentionPolicy:\n          whenDeleted: {wd}\n        service:\n          type: Headless\n{switch}",
            size = k.size,
            keep = k.keep,
            c = consumer(d),
            replicas = k.replicas,
            wd = k.when_deleted,
            switch = if k.atomic {
                "        switch: atomic\n"
            } else {
                ""
            },
        ));
    }
    s
}

/// What the played controllers do with one generation's objects.
#[derive(Clone, Debug)]
pub(crate) struct Behaviour {
    /// `None`: the producer succeeds; `Some(reason)`: it fails with that message.
    pub(crate) producer_fails: Option<String>,
    /// The producer is still running (the controller does nothing yet).
    pub(crate) producer_holds: bool,
    /// The producer crash-loops under `restartPolicy: OnFailure`: it stays Running and each
    /// controller step adds `crash_restarts` restarts, the last one exiting with code 1.
    pub(crate) crash_restarts: i64,
    /// The kubelet ends the producer at its `activeDeadlineSeconds`.
    pub(crate) producer_deadline: bool,
    /// The snapshot's `status.error` while it is not ready.
    pub(crate) snapshot_error: Option<String>,
    /// The snapshot is not ready yet.
    pub(crate) snapshot_holds: bool,
    /// The snapshot's `restoreSize` once ready (empty: not reported).
    pub(crate) restore_size: String,
    /// The StatefulSet's pods never become ready.
    pub(crate) sts_holds: bool,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            producer_fails: None,
            producer_holds: false,
            crash_restarts: 0,
            producer_deadline: false,
            snapshot_error: None,
            snapshot_holds: false,
            restore_size: "10Gi".to_string(),
            sts_holds: false,
        }
    }
}

/// One `snaproll reconcile` run.
pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    /// The first JSON line of stdout: the Git outcome and the generations' states.
    pub(crate) report: Value,
}

impl Run {
    pub(crate) fn from(out: Output) -> Run {
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let report = stdout
            .lines()
            .next()
            .and_then(|l| serde_json::from_str(l).ok())
            .unwrap_or(Value::Null);
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout,
            stderr: String::from_utf8_lossy(&out.stderr).to_string(),
            report,
        }
    }

    /// `generation state` for each generation of `dataset`, oldest first.
    pub(crate) fn states(&self, dataset: &str) -> Vec<String> {
        self.report["generations"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| d["dataset"] == dataset)
            .flat_map(|d| d["generations"].as_array().cloned().unwrap_or_default())
            .map(|g| format!("{} {}", str_of(&g["generation"]), str_of(&g["state"])))
            .collect()
    }

    /// The detail text of one generation.
    pub(crate) fn detail(&self, dataset: &str, generation: &str) -> String {
        self.report["generations"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| d["dataset"] == dataset)
            .flat_map(|d| d["generations"].as_array().cloned().unwrap_or_default())
            .find(|g| g["generation"] == generation)
            .map(|g| str_of(&g["detail"]))
            .unwrap_or_default()
    }

    pub(crate) fn committed(&self) -> bool {
        !self.report["commit"].is_null()
    }
}

pub(crate) fn str_of(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

/// A cluster (the fake behind a loopback server), a Git repository, a spec, and the played
/// controllers.
pub(crate) struct World {
    pub(crate) tmp: tempfile::TempDir,
    pub(crate) server: Server,
    pub(crate) mode: Mode,
    pub(crate) kubeconfig: PathBuf,
    pub(crate) spec: PathBuf,
    pub(crate) repo: PathBuf,
    pub(crate) knobs: RefCell<Knobs>,
    /// Per generation id; the default for the others.
    pub(crate) behaviour: RefCell<BTreeMap<String, Behaviour>>,
    /// Whether the StatefulSet controller deletes claims with their StatefulSet (the
    /// `persistentVolumeClaimRetentionPolicy` of Kubernetes 1.32+); off plays an older cluster.
    pub(crate) retention_gc: bool,
    /// Datasets that have had a ready StatefulSet: from then on one must always exist.
    pub(crate) served: RefCell<BTreeSet<String>>,
    /// What the played Argo CD applied last (pull mode), by API path: it applies what changed
    /// (an OutOfSync resource) and prunes what Git dropped.
    pub(crate) argo_applied: RefCell<BTreeMap<String, Value>>,
    /// Every object that appeared (`+Kind/name`) or went (`-Kind/name`), in order.
    pub(crate) events: RefCell<Vec<String>>,
    pub(crate) seen: RefCell<BTreeSet<(usize, String)>>,
    /// The `--now` of the last run, for the invariant check's decision.
    pub(crate) now: RefCell<String>,
    /// Dataset → the generation its live Service selected at the last check (atomic switch).
    pub(crate) selects: RefCell<BTreeMap<String, String>>,
}

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
            // pods, PVCs, snapshots, Services, StatefulSets; and the rollout's Events in the
            // modes that report them (snaproll applies).
            let kinds = 5 + usize::from(matches!(self.mode, Mode::Push | Mode::Direct));
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
    /// the one property that spans runs: once a dataset served, a ready StatefulSet serves it.
    pub(crate) fn check_invariants(&self, when: &str) {
        let loaded = snaproll::spec::load(&self.spec).unwrap();
        if self.mode == Mode::Offline {
            if !self.repo.join(".git").exists() {
                return;
            }
            let manifests: Vec<Value> = self
                .git_files()
                .iter()
                .filter(|f| f.as_str() != "kustomization.yaml")
                .map(|f| {
                    let text = self.git(&["show", &format!("HEAD:rollouts/demo/{f}")]);
                    serde_saphyr::from_str(&text).unwrap()
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
        for path in [PODS, PVCS, SNAPS, SVCS, STS] {
            for mut v in self.items(path) {
                let kind = match path {
                    PODS => "Pod",
                    PVCS => "PersistentVolumeClaim",
                    SNAPS => "VolumeSnapshot",
                    SVCS => "Service",
                    _ => "StatefulSet",
                };
                v["kind"] = json!(kind);
                objects.push(v);
            }
        }
        // What snaproll counts: members of the rollout's ApplySet (look-alikes are not).
        let id = snaproll::manifest::rollout_applyset_id("demo", NS);
        let observed = snaproll::engine::observe_members("demo", &id, &objects).datasets;
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
        let mut served = self.served.borrow_mut();
        for (d, gens) in &observed {
            let ready = gens
                .iter()
                .filter(|g| g.statefulset.as_ref().is_some_and(sts_ready))
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

    /// Invariants of the run's own report: at most one generation per dataset in motion.
    pub(crate) fn check_report(&self, run: &Run) {
        for d in &self.knobs.borrow().datasets {
            let moving: Vec<String> = run
                .states(d)
                .into_iter()
                .filter(|s| {
                    s.ends_with(" producing")
                        || s.ends_with(" snapshotting")
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
                    None => json!({"phase": "Succeeded"}),
                };
                api.set_status(&format!("{PODS}/{name}"), status).await;
            }
            for snap in api.items(SNAPS).await {
                let name = str_of(&snap["metadata"]["name"]);
                let b = self.behaviour(&generation_of(&snap));
                if snap.pointer("/status/readyToUse") == Some(&json!(true)) {
                    continue;
                }
                let status = if b.snapshot_holds {
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
            let stss = api.items(STS).await;
            for sts in &stss {
                let name = str_of(&sts["metadata"]["name"]);
                let b = self.behaviour(&generation_of(sts));
                let replicas = sts["spec"]["replicas"].as_i64().unwrap_or(1);
                let template = &sts["spec"]["volumeClaimTemplates"][0];
                let claim = str_of(&template["metadata"]["name"]);
                for i in 0..replicas {
                    let pvc = format!("{claim}-{name}-{i}");
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
                [STS, SVCS, SNAPS, PODS, PVCS, CLASSES]
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

pub(crate) fn generation_of(v: &Value) -> String {
    v.pointer("/metadata/labels/snaproll.dev~1generation")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

pub(crate) fn sts_ready(s: &Value) -> bool {
    let want = s["spec"]["replicas"].as_i64().unwrap_or(1);
    s.pointer("/status/readyReplicas").and_then(Value::as_i64) == Some(want)
        && s.pointer("/status/observedGeneration") == s.pointer("/metadata/generation")
}

/// The API path of a manifest.
fn path_of(v: &Value) -> String {
    let name = str_of(&v["metadata"]["name"]);
    let base = match v["kind"].as_str().unwrap_or_default() {
        "VolumeSnapshotClass" => CLASSES,
        "PersistentVolumeClaim" => PVCS,
        "Pod" => PODS,
        "VolumeSnapshot" => SNAPS,
        "Service" => SVCS,
        "StatefulSet" => STS,
        other => panic!("unexpected kind {other}"),
    };
    format!("{base}/{name}")
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The three claims of a 3-replica consumer's StatefulSet.
fn claims(sts: &str) -> Vec<String> {
    (0..3)
        .map(|i| format!("PersistentVolumeClaim/data-{sts}-{i}"))
        .collect()
}

/// Day 2 (or 3) in push or pull mode: the new generation comes up step by step while the old
/// one serves, then the old one retires in order: StatefulSet, its claims, producer, snapshot.
fn day_events(old: &str, new: &str) -> Vec<String> {
    let mut e = strs(&[&format!("+Pod/data-producer-{new}")]);
    e.push(format!("+VolumeSnapshot/data-{new}"));
    e.push(format!("+StatefulSet/consumer-{new}"));
    e.extend(
        claims(&format!("consumer-{new}"))
            .iter()
            .map(|c| format!("+{c}")),
    );
    e.push(format!("-StatefulSet/consumer-{old}"));
    e.extend(
        claims(&format!("consumer-{old}"))
            .iter()
            .map(|c| format!("-{c}")),
    );
    e.push(format!("-Pod/data-producer-{old}"));
    e.push(format!("-VolumeSnapshot/data-{old}"));
    e
}

/// Day 1 to day 3 in `mode`; returns the world for further checks.
fn three_days(mode: Mode) -> World {
    let w = World::new(mode, Knobs::default());

    // Day 1: nothing yet. Each run takes one step and exits.
    let r = w.run(D1);
    assert_eq!(r.states("data"), [format!("{G1} producing")]);
    w.quiet(D1);
    w.play();
    let r = w.run(D1);
    assert_eq!(r.states("data"), [format!("{G1} snapshotting")]);
    w.quiet(D1);
    w.play();
    let r = w.run(D1);
    assert_eq!(r.states("data"), [format!("{G1} rolling-out")]);
    w.play();
    let r = w.run(D1);
    assert_eq!(r.states("data"), [format!("{G1} serving")]);
    assert_eq!(r.detail("data", G1), "3/3 replicas ready");
    w.quiet(D1);
    let mut day1 = strs(&[
        "+VolumeSnapshotClass/csi-gce-pd-snapshot-class",
        "+PersistentVolumeClaim/data",
        "+Pod/data-producer-2021-07-15",
        "+Service/consumer",
        "+VolumeSnapshot/data-2021-07-15",
        "+StatefulSet/consumer-2021-07-15",
    ]);
    day1.extend(
        claims("consumer-2021-07-15")
            .iter()
            .map(|c| format!("+{c}")),
    );
    assert_eq!(w.take_events(), day1);

    // Day 2: the old generation serves until the new one is ready, then retires.
    let r = w.run(D2);
    assert_eq!(
        r.states("data"),
        [format!("{G1} serving"), format!("{G2} producing")]
    );
    w.quiet(D2);
    let r = w.settle(D2, 12);
    assert_eq!(r.states("data"), [format!("{G2} serving")]);
    w.quiet(D2);
    assert_eq!(w.take_events(), day_events(G1, G2));

    // Day 3, the same again.
    w.settle(D3, 12);
    let r = w.quiet(D3);
    assert_eq!(r.states("data"), [format!("{G3} serving")]);
    assert_eq!(w.take_events(), day_events(G2, G3));
    w
}

#[test]
fn push_mode_rolls_day_1_to_day_3_one_step_per_run() {
    let w = three_days(Mode::Push);
    // Git followed every step too: the folder holds exactly day 3's generation.
    let files = w.git_files();
    assert!(
        files.iter().any(|f| f.contains("consumer-2021-07-17")),
        "{files:?}"
    );
    assert!(!files.iter().any(|f| f.contains("2021-07-16")), "{files:?}");
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(&w.repo)
        .args(["fsck", "--full", "--no-dangling"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn pull_mode_commits_each_step_and_argo_cd_applying_git_does_the_rest() {
    let w = three_days(Mode::Pull);
    // snaproll itself never wrote to the cluster: every object there came from Argo CD (or the
    // controllers).
    let writes: Vec<Req> = w
        .api()
        .requests()
        .into_iter()
        .filter(|r| r.method != "GET")
        .collect();
    assert!(writes.is_empty(), "{writes:?}");
    // One commit per step: the log reads as the rollout's history.
    let log = w.git(&["log", "--format=%s"]);
    assert!(log.lines().count() >= 12, "{log}");
    assert!(log.contains("snaproll: demo 2021-07-17"), "{log}");
}

#[test]
fn offline_mode_keeps_the_newest_generations_in_git() {
    let w = World::new(Mode::Offline, Knobs::default());
    let r = w.run(D1);
    assert_eq!(r.states("data"), [format!("{G1} rolling-out")]);
    assert!(r.committed());
    w.quiet(D1);
    let gens = |files: &[String]| -> BTreeSet<String> {
        files
            .iter()
            .filter(|f| f.contains("statefulset"))
            .map(|f| f.to_string())
            .collect()
    };
    // Day 2: the new generation in full, the previous one in full too (it serves until Argo
    // CD or Flux has brought the new one up).
    let r = w.run(D2);
    assert_eq!(
        r.states("data"),
        [format!("{G1} serving"), format!("{G2} rolling-out")]
    );
    let files = w.git_files();
    assert_eq!(gens(&files).len(), 2, "{files:?}");
    w.quiet(D2);
    // Day 3: day 1 leaves Git (keep 1), its StatefulSet first and its snapshot one run later;
    // day 2 stays until day 3 is applied.
    let r = w.run(D3);
    assert_eq!(
        r.states("data"),
        [
            format!("{G1} retiring"),
            format!("{G2} serving"),
            format!("{G3} rolling-out")
        ]
    );
    let files = w.git_files();
    let day1: Vec<&String> = files.iter().filter(|f| f.contains(G1)).collect();
    assert_eq!(
        day1,
        [&format!("40-volumesnapshot-data-{G1}.yaml")],
        "{files:?}"
    );
    w.run(D3);
    let files = w.git_files();
    assert!(!files.iter().any(|f| f.contains(G1)), "{files:?}");
    assert!(files.iter().any(|f| f.contains(G2)), "{files:?}");
    assert!(files.iter().any(|f| f.contains(G3)), "{files:?}");
    w.quiet(D3);
    // Nothing ever talked to the cluster.
    assert!(w.api().requests().is_empty());
}

#[test]
fn offline_removed_dataset_leaves_git_statefulset_first() {
    let w = World::new(
        Mode::Offline,
        Knobs {
            datasets: vec!["data", "extra"],
            ..Knobs::default()
        },
    );
    w.run(D1);
    let extra = |files: Vec<String>| -> Vec<String> {
        files.into_iter().filter(|f| f.contains("extra")).collect()
    };
    assert_eq!(extra(w.git_files()).len(), 5, "{:?}", w.git_files());
    w.set_knobs(|k| k.datasets = vec!["data"]);
    let r = w.run(D1);
    assert!(r.committed());
    assert_eq!(
        extra(w.git_files()),
        [
            "20-persistentvolumeclaim-extra.yaml".to_string(),
            format!("30-pod-extra-producer-{G1}.yaml"),
            format!("40-volumesnapshot-extra-{G1}.yaml"),
            "50-service-extra-consumer.yaml".to_string(),
        ]
    );
    let r = w.run(D1);
    assert!(r.committed());
    assert_eq!(extra(w.git_files()), Vec::<String>::new());
    w.quiet(D1);
}

/// A day-1 generation that serves, then a day 2 run left to the given behaviour.
pub(crate) fn serving_day1(mode: Mode, knobs: Knobs) -> World {
    let w = World::new(mode, knobs);
    let r = w.settle(D1, 8);
    assert_eq!(r.states("data"), [format!("{G1} serving")]);
    w.take_events();
    w
}

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

/// `status -o json` at `now`: its exit code and the states of `data` but the due one.
fn status_states(w: &World, now: &str) -> (i32, Vec<String>) {
    let out = snaproll()
        .env("HOME", w.tmp.path())
        .args(["status", "-f"])
        .arg(&w.spec)
        .arg("--kubeconfig")
        .arg(&w.kubeconfig)
        .args(["--now", now, "-o", "json"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert!(
        v.is_array(),
        "status at {now}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let states = v[0]["generations"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|g| format!("{} {}", str_of(&g["generation"]), str_of(&g["state"])))
        // The clock's own date shows as `waiting` (status starts nothing).
        .filter(|s: &String| !s.ends_with(" waiting"))
        .collect();
    (out.status.code().unwrap_or(-1), states)
}

#[test]
fn snapshot_timeout_in_the_spec_holds_for_status_and_reconcile_alike() {
    let w = serving_day1(Mode::Push, Knobs::default());
    let text = std::fs::read_to_string(&w.spec).unwrap().replace(
        "      consumer:\n",
        "      snapshot:\n        timeout: 12h\n      consumer:\n",
    );
    std::fs::write(&w.spec, text).unwrap();
    w.behave(G2, |b| b.snapshot_holds = true);
    w.run(D2);
    w.play();
    w.run(D2);
    w.play();
    // Measured against the snapshot's creation time: the fake's clock is the real one.
    let later = |hours| {
        jiff::Timestamp::now()
            .checked_add(jiff::SignedDuration::from_hours(hours))
            .unwrap()
            .to_string()
    };
    // At 7h: past the 6h default, within the spec's 12h; no flag anywhere.
    let waiting = [format!("{G1} serving"), format!("{G2} snapshotting")];
    assert_eq!(status_states(&w, &later(7)), (0, waiting.to_vec()));
    let r = w.run_code(&later(7), &["--generation", G2], 0);
    assert_eq!(r.states("data"), waiting);
    // After 12h both say failed, with the spec's timeout in the detail.
    let failed = [format!("{G1} serving"), format!("{G2} failed")];
    assert_eq!(status_states(&w, &later(13)), (1, failed.to_vec()));
    let r = w.run_code(&later(13), &["--generation", G2], 1);
    assert_eq!(r.states("data"), failed);
    let detail = r.detail("data", G2);
    assert!(
        detail.starts_with("snapshot data-2021-07-16 not ready after 12h"),
        "{detail}"
    );
    // The flag still overrides the spec for one run.
    let r = w.run_code(
        &later(7),
        &["--generation", G2, "--snapshot-timeout", "6h"],
        1,
    );
    assert_eq!(r.states("data"), failed);
}

#[test]
fn generation_flag_names_one_dataset_and_a_manual_dataset_says_it_waits() {
    let w = World::new(
        Mode::Push,
        Knobs {
            datasets: vec!["data", "models"],
            ..Knobs::default()
        },
    );
    // `models` is manual; `data` stays daily.
    let text = std::fs::read_to_string(&w.spec).unwrap();
    let at = text.find("- name: models").unwrap();
    let text = format!(
        "{}{}",
        &text[..at],
        text[at..].replacen("schedule: daily", "schedule: manual", 1)
    );
    std::fs::write(&w.spec, text).unwrap();
    let r = w.run(D1);
    assert_eq!(r.states("data"), [format!("{G1} producing")]);
    let models = |r: &Run| {
        r.report["generations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["dataset"] == "models")
            .cloned()
            .unwrap()
    };
    insta::assert_snapshot!(
        "manual_dataset_waits",
        serde_json::to_string_pretty(&models(&r)).unwrap()
    );
    let out = snaproll()
        .env("HOME", w.tmp.path())
        .args(["status", "-f"])
        .arg(&w.spec)
        .arg("--kubeconfig")
        .arg(&w.kubeconfig)
        .args(["--now", D1])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    let row = table.lines().find(|l| l.starts_with("models")).unwrap();
    insta::assert_snapshot!("manual_dataset_status_row", row.trim_end());
    // `models=v1` starts models' generation only: data keeps its daily one.
    w.play();
    let r = w.run_code(D1, &["--generation", "models=v1"], 0);
    assert_eq!(r.states("models"), ["v1 producing"]);
    assert!(
        r.states("data").iter().all(|s| s.starts_with(G1)),
        "{:?}",
        r.states("data")
    );
    // An unknown dataset is refused before anything is read, naming the known ones.
    w.api().clear_requests();
    let out = w
        .command(D1, &["--generation", "modles=v2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(w.api().requests().is_empty());
    insta::assert_snapshot!(
        "generation_names_an_unknown_dataset",
        String::from_utf8_lossy(&out.stderr)
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

#[test]
fn rollback_by_pinning_a_kept_generation_serves_it_again() {
    let w = World::new(
        Mode::Push,
        Knobs {
            keep: 2,
            ..Knobs::default()
        },
    );
    w.settle(D1, 8);
    let r = w.settle(D2, 12);
    assert_eq!(
        r.states("data"),
        [format!("{G1} kept"), format!("{G2} serving")]
    );
    // keep 2: day 1's snapshot stays for rollback, its StatefulSet, claims and producer go.
    let objects: Vec<String> = w.objects().into_iter().map(|o| o.1).collect();
    assert!(objects.contains(&format!("VolumeSnapshot/data-{G1}")));
    assert!(!objects.contains(&format!("StatefulSet/consumer-{G1}")));
    assert!(!objects.contains(&format!("Pod/data-producer-{G1}")));
    w.take_events();
    // Pin day 1 in the spec: its StatefulSet comes back from the kept snapshot, and day 2
    // serves until it is ready.
    w.set_knobs(|k| k.pin = Some(G1));
    let r = w.run(D2);
    assert_eq!(
        r.states("data"),
        [format!("{G1} rolling-out"), format!("{G2} serving")]
    );
    // The commit names the generation rolled back to, not the newer one still retiring.
    assert!(
        r.report["summary"]
            .as_str()
            .is_some_and(|s| s.starts_with(&format!("snaproll: demo {G1}:"))),
        "{}",
        r.report
    );
    let r = w.settle(D2, 10);
    // The generation rolled back from retires in full: its data is what was rolled back.
    assert_eq!(r.states("data"), [format!("{G1} serving")]);
    // While pinned, a new day starts nothing.
    let r = w.quiet(D3);
    assert_eq!(r.states("data"), [format!("{G1} serving")]);
    let mut back = strs(&[&format!("+StatefulSet/consumer-{G1}")]);
    back.extend(
        claims(&format!("consumer-{G1}"))
            .iter()
            .map(|c| format!("+{c}")),
    );
    back.push(format!("-StatefulSet/consumer-{G2}"));
    back.extend(
        claims(&format!("consumer-{G2}"))
            .iter()
            .map(|c| format!("-{c}")),
    );
    back.push(format!("-Pod/data-producer-{G2}"));
    back.push(format!("-VolumeSnapshot/data-{G2}"));
    assert_eq!(w.take_events(), back);
    // Unpinned, the schedule resumes with today's generation.
    w.set_knobs(|k| k.pin = None);
    let r = w.settle(D3, 12);
    assert_eq!(
        r.states("data"),
        [format!("{G1} kept"), format!("{G3} serving")]
    );
}

#[test]
fn rollback_by_the_generation_flag_lasts_while_it_is_passed_and_unkept_generations_are_refused() {
    let w = World::new(
        Mode::Push,
        Knobs {
            keep: 2,
            ..Knobs::default()
        },
    );
    w.settle(D1, 8);
    w.settle(D2, 12);
    // A generation that was never kept: refused before anything is written.
    w.api().clear_requests();
    let commits = w.commits();
    let out = w
        .command(D2, &["--generation", "2021-07-14"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: reconcile of rollout demo: dataset data: --generation names generation 2021-07-14, which is not kept (no snapshot of it exists); kept generations: 2021-07-15, 2021-07-16 (raise generations.keep to keep more for rollback)"
    );
    assert!(w.api().writes().is_empty());
    assert_eq!(w.commits(), commits);
    w.check_invariants("after a refused --generation");
    // The flag rolls back to the kept day 1 while it is passed.
    let mut r = w.run_code(D2, &["--generation", G1], 0);
    assert_eq!(
        r.states("data"),
        [format!("{G1} rolling-out"), format!("{G2} serving")]
    );
    for _ in 0..8 {
        if r.states("data") == [format!("{G1} serving")] {
            break;
        }
        w.play();
        r = w.run_code(D2, &["--generation", G1], 0);
    }
    assert_eq!(r.states("data"), [format!("{G1} serving")]);
    assert!(
        !w.objects().iter().any(|o| o.1.contains(G2)),
        "{:?}",
        w.objects()
    );
    // Without the flag the daily schedule wants today's generation again: it starts anew.
    // (generations.pin is the rollback that lasts.)
    let r = w.run(D2);
    assert_eq!(
        r.states("data"),
        [format!("{G1} serving"), format!("{G2} producing")]
    );
}

#[test]
fn pinning_a_generation_that_is_not_kept_is_an_error_in_status_and_reconcile() {
    let w = serving_day1(Mode::Push, Knobs::default());
    w.settle(D2, 12);
    w.set_knobs(|k| k.pin = Some(G1));
    let (code, v, stderr) = w.status(D2);
    assert_eq!(code, 2);
    assert_eq!(v, Value::Null);
    let want = format!(
        "error: reconcile of rollout demo: dataset data: generations.pin names generation {G1}, which is not kept (no snapshot of it exists); kept generations: {G2} (raise generations.keep to keep more for rollback)"
    );
    assert_eq!(stderr.trim(), want);
    w.api().clear_requests();
    let out = w.command(D2, &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), want);
    assert!(w.api().writes().is_empty());
    w.check_invariants("after a refused pin");
}

#[test]
fn clusters_without_claim_retention_get_the_old_claims_deleted_by_label() {
    let mut w = World::new(Mode::Push, Knobs::default());
    w.retention_gc = false;
    w.settle(D1, 8);
    let r = w.settle(D2, 12);
    assert_eq!(r.states("data"), [format!("{G2} serving")]);
    let pvcs = w.server.block_on(w.api().names(PVCS));
    assert_eq!(
        pvcs,
        [
            "data".to_string(),
            format!("data-consumer-{G2}-0"),
            format!("data-consumer-{G2}-1"),
            format!("data-consumer-{G2}-2"),
        ]
    );
    // And in order: the StatefulSet went before its claims, the claims before the snapshot.
    let events = w.take_events();
    let at = |e: &str| events.iter().position(|x| x == e).unwrap();
    assert!(
        at(&format!("-StatefulSet/consumer-{G1}"))
            < at(&format!("-PersistentVolumeClaim/data-consumer-{G1}-0"))
    );
    assert!(
        at(&format!("-PersistentVolumeClaim/data-consumer-{G1}-2"))
            < at(&format!("-VolumeSnapshot/data-{G1}"))
    );
}

#[test]
fn retain_claims_are_deleted_by_label_after_their_statefulset_and_retirement_completes() {
    // whenDeleted: Retain: the cluster keeps the claims; push mode's prune deletes them.
    let w = World::new(
        Mode::Push,
        Knobs {
            when_deleted: "Retain",
            ..Knobs::default()
        },
    );
    w.settle(D1, 8);
    let sts = w
        .server
        .block_on(w.api().get(&format!("{STS}/consumer-{G1}")))
        .unwrap();
    assert_eq!(
        sts.pointer("/spec/persistentVolumeClaimRetentionPolicy/whenDeleted"),
        Some(&json!("Retain"))
    );
    w.take_events();
    let r = w.settle(D2, 12);
    assert_eq!(r.states("data"), [format!("{G2} serving")]);
    // The prune deletes the StatefulSet and then its claims in one run (the event log sees
    // them go together), the producer and the snapshot after them.
    let mut events = w.take_events();
    assert_eq!(
        events.last(),
        Some(&format!("-VolumeSnapshot/data-{G1}")),
        "{events:?}"
    );
    let mut want = day_events(G1, G2);
    events.sort();
    want.sort();
    assert_eq!(events, want);
    w.quiet(D2);
}

#[test]
fn pull_mode_without_claim_retention_names_the_cleanup_command_until_the_claims_go() {
    let mut w = World::new(Mode::Pull, Knobs::default());
    w.retention_gc = false;
    w.settle(D1, 8);
    for _ in 0..6 {
        w.run(D2);
        w.play();
    }
    // Argo CD pruned the old StatefulSet; nothing deletes its claims (the Role only lists).
    let r = w.quiet(D2);
    assert_eq!(
        r.states("data"),
        [format!("{G1} retiring"), format!("{G2} serving")]
    );
    let selector = format!(
        "app.kubernetes.io/managed-by=snaproll,snaproll.dev/rollout=demo,snaproll.dev/dataset=data,snaproll.dev/generation={G1},app.kubernetes.io/component=consumer-volume"
    );
    assert_eq!(
        r.detail("data", G1),
        format!(
            "waiting for 3 PVC(s) to be deleted; in pull mode without claim retention (Kubernetes before 1.32, or whenDeleted: Retain) delete them: kubectl delete pvc -n default -l '{selector}'"
        )
    );
    let (code, status, _) = w.status(D2);
    assert_eq!(code, 0);
    assert_eq!(status[0]["generations"][0]["detail"], r.detail("data", G1));
    // The snapshot stays while the claims exist.
    assert!(
        w.objects()
            .contains(&(3, format!("VolumeSnapshot/data-{G1}")))
    );
    // The operator runs the command (played: delete the claims the selector names).
    for c in claims(&format!("consumer-{G1}")) {
        let name = c.trim_start_matches("PersistentVolumeClaim/");
        w.server.block_on(w.api().delete(&format!("{PVCS}/{name}")));
    }
    w.record("kubectl");
    let r = w.settle(D2, 6);
    assert_eq!(r.states("data"), [format!("{G2} serving")]);
    assert!(
        !w.objects().iter().any(|o| o.1.contains(G1)),
        "{:?}",
        w.objects()
    );
}

/// Day 1 with two datasets, then `extra` leaves the spec: it retires in order, one step per
/// run, while `data` keeps serving.
fn removed_dataset_retires_in_order(mode: Mode) {
    let w = World::new(
        mode,
        Knobs {
            datasets: vec!["data", "extra"],
            ..Knobs::default()
        },
    );
    w.settle(D1, 8);
    w.take_events();
    w.set_knobs(|k| k.datasets = vec!["data"]);
    let r = w.run(D1);
    assert_eq!(r.states("extra"), [format!("{G1} retiring")]);
    assert_eq!(
        r.detail("extra", G1),
        "dataset removed from the spec; removing StatefulSet"
    );
    let mut steps = vec![w.take_events()];
    for _ in 0..4 {
        w.play();
        w.run(D1);
        steps.push(w.take_events());
    }
    let r = w.quiet(D1);
    assert_eq!(
        r.states("extra"),
        Vec::<String>::new(),
        "{steps:#?}\n{}",
        r.stdout
    );
    assert_eq!(r.states("data"), [format!("{G1} serving")]);
    let steps: Vec<Vec<String>> = steps.into_iter().filter(|s| !s.is_empty()).collect();
    let claims: Vec<String> = (0..3)
        .map(|i| format!("-PersistentVolumeClaim/extra-extra-consumer-{G1}-{i}"))
        .collect();
    // The StatefulSet; its claims (the cluster's retention policy, played between the runs);
    // then producer, source PVC and Service; then, a run later, the snapshot.
    let mut second = claims;
    second.extend([
        "-PersistentVolumeClaim/extra".to_string(),
        format!("-Pod/extra-producer-{G1}"),
        "-Service/extra-consumer".to_string(),
    ]);
    assert_eq!(
        steps,
        [
            vec![format!("-StatefulSet/extra-consumer-{G1}")],
            second,
            vec![format!("-VolumeSnapshot/extra-{G1}")],
        ]
    );
}

#[test]
fn removed_dataset_retires_in_order_in_push_mode() {
    removed_dataset_retires_in_order(Mode::Push);
}

#[test]
fn removed_dataset_retires_in_order_in_pull_mode() {
    removed_dataset_retires_in_order(Mode::Pull);
}

#[test]
fn status_shows_each_generation_with_its_state_and_detail() {
    let w = serving_day1(Mode::Push, Knobs::default());
    w.behave(G2, |b| b.producer_holds = true);
    w.run(D2);
    let (code, v, stderr) = w.status(D2);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(v[0]["dataset"], "data");
    assert_eq!(v[0]["generations"][0]["state"], "serving");
    assert_eq!(v[0]["generations"][0]["detail"], "3/3 replicas ready");
    assert_eq!(v[0]["generations"][1]["state"], "producing");
    assert!(v[0]["generations"][1]["firstSeen"].is_string());
    // The text table, with times scrubbed.
    let out = snaproll()
        .env("HOME", w.tmp.path())
        .args(["status", "-f"])
        .arg(&w.spec)
        .arg("--kubeconfig")
        .arg(&w.kubeconfig)
        .args(["--now", D2])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(|l| {
            l.split("  ")
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect()
        })
        .collect();
    assert_eq!(
        lines[0],
        ["DATASET", "GENERATION", "STATE", "FIRST SEEN", "DETAIL"]
    );
    assert_eq!(lines[1][..3], ["data", G1, "serving"]);
    assert_eq!(lines[1][4], "3/3 replicas ready");
    assert_eq!(lines[2][..3], ["data", G2, "producing"]);
    assert_eq!(lines[2][4], "producer not scheduled");
    // status never writes.
    w.api().clear_requests();
    w.status(D2);
    assert!(w.api().writes().is_empty());
}

// --- RBAC: the Role `install` renders against what these lifecycles request ------------------

fn install_grants(spec: &Path, pull: bool) -> Vec<rbac::Grant> {
    install_grants_for(spec, Some("https://git.example.com/gitops.git"), pull)
}

fn install_grants_for(spec: &Path, repo: Option<&str>, pull: bool) -> Vec<rbac::Grant> {
    let loaded = snaproll::spec::load(spec).unwrap();
    let text = std::fs::read_to_string(spec).unwrap();
    let objects = install::render(
        &loaded.rollout,
        &loaded.file,
        &text,
        &InstallOptions {
            schedule: "*/15 * * * *".into(),
            repo: repo.map(str::to_string),
            git_secret: "snaproll-git".into(),
            image: install::default_image(),
            namespace: None,
            pull,
            snapshot_timeout: None,
        },
    )
    .unwrap();
    install::rbac::grants(&objects)
}

#[test]
fn push_role_is_exactly_what_the_push_lifecycle_requests() {
    let w = World::new(
        Mode::Push,
        Knobs {
            datasets: vec!["data", "extra"],
            ..Knobs::default()
        },
    );
    w.settle(D1, 8);
    // A dataset leaves the spec: its Service and source PVC are pruned too.
    w.set_knobs(|k| k.datasets = vec!["data"]);
    w.settle(D2, 12);
    let requests = rbac_requests(&w.api().requests());
    let report = rbac::check(&install_grants(&w.spec, false), &requests);
    assert!(
        report.is_exact(),
        "denied: {:#?}\nunused: {:#?}",
        report.denied,
        report.unused
    );
}

/// What `install` without `--repo` renders is exactly what its CronJob's command
/// (`reconcile --apply --prune`, no Git) requests over days and a dataset leaving the spec.
#[test]
fn gitless_role_is_exactly_what_the_gitless_lifecycle_requests() {
    let w = World::new(
        Mode::Direct,
        Knobs {
            datasets: vec!["data", "extra"],
            ..Knobs::default()
        },
    );
    w.settle(D1, 8);
    w.set_knobs(|k| k.datasets = vec!["data"]);
    w.settle(D2, 12);
    assert!(!w.repo.exists(), "no Git is written");
    let deleted: BTreeSet<String> = w
        .api()
        .requests()
        .iter()
        .filter(|r| r.method == "DELETE")
        .map(|r| r.resource())
        .collect();
    for kind in [
        "statefulsets",
        "volumesnapshots",
        "pods",
        "services",
        "persistentvolumeclaims",
    ] {
        assert!(deleted.contains(kind), "no {kind} pruned: {deleted:?}");
    }
    let requests = rbac_requests(&w.api().requests());
    let report = rbac::check(&install_grants_for(&w.spec, None, false), &requests);
    assert!(
        report.is_exact(),
        "denied: {:#?}\nunused: {:#?}",
        report.denied,
        report.unused
    );
}

#[test]
fn pull_role_allows_everything_the_pull_lifecycle_requests() {
    let w = World::new(Mode::Pull, Knobs::default());
    w.settle(D1, 8);
    w.settle(D2, 12);
    let requests = rbac_requests(&w.api().requests());
    let report = rbac::check(&install_grants(&w.spec, true), &requests);
    assert!(
        report.is_exact(),
        "denied: {:#?}\nunused: {:#?}",
        report.denied,
        report.unused
    );
}

#[test]
fn existing_class_lifecycle_needs_no_cluster_role() {
    let w = World::new(
        Mode::Push,
        Knobs {
            existing_class: true,
            ..Knobs::default()
        },
    );
    w.settle(D1, 8);
    w.settle(D2, 12);
    let grants = install_grants(&w.spec, false);
    assert!(grants.iter().all(|g| g.namespace.is_some()), "{grants:#?}");
    let requests = rbac_requests(&w.api().requests());
    assert!(
        requests.iter().all(|r| r.namespace.is_some()),
        "cluster-scoped requests: {requests:#?}"
    );
    // Sufficient (minimality is the full push lifecycle's test, which also drops a dataset).
    let report = rbac::check(&grants, &requests);
    assert!(report.denied.is_empty(), "denied: {:#?}", report.denied);
}
