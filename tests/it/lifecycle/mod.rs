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

mod failures;
mod modes;
mod rbac_role;
mod retire;
mod wait;
mod world;

pub(crate) const NS: &str = "default";
pub(crate) const PODS: &str = "/api/v1/namespaces/default/pods";
pub(crate) const PVCS: &str = "/api/v1/namespaces/default/persistentvolumeclaims";
pub(crate) const SVCS: &str = "/api/v1/namespaces/default/services";
pub(crate) const STS: &str = "/apis/apps/v1/namespaces/default/statefulsets";
pub(crate) const SNAPS: &str =
    "/apis/snapshot.storage.k8s.io/v1/namespaces/default/volumesnapshots";
pub(crate) const JOBS: &str = "/apis/batch/v1/namespaces/default/jobs";
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
    /// `snapshot.copies` (1, the default, is not written).
    pub(crate) copies: u32,
    /// `consumer.verify` (a checksum Job) is written.
    pub(crate) verify: bool,
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
            copies: 1,
            verify: false,
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
            "    - name: {d}\n      storage:\n        storageClassName: standard-rwo\n        size: {size}\n        accessModes: [ReadWriteOnce]\n      producer:\n        image: ubuntu:22.04\n        command: [\"/bin/sh\", \"-c\"]\n        args: [\"echo refreshed > /data/file.txt\"]\n        mountPath: /data\n      generations:\n        schedule: daily\n        keep: {keep}{pin}\n{copies}      consumer:\n        name: {c}\n        replicas: {replicas}\n        image: ubuntu:22.04\n        mountPath: /data\n        pvcRetentionPolicy:\n          whenDeleted: {wd}\n        service:\n          type: Headless\n{switch}{verify}",
            size = k.size,
            keep = k.keep,
            c = consumer(d),
            replicas = k.replicas,
            copies = if k.copies == 1 {
                String::new()
            } else {
                format!("      snapshot:\n        copies: {}\n", k.copies)
            },
            wd = k.when_deleted,
            switch = if k.atomic {
                "        switch: atomic\n"
            } else {
                ""
            },
            verify = if k.verify {
                "        verify:\n          image: busybox:1.36\n          command: [sha256sum, -c, /data/SHA256SUMS]\n          timeout: 30m\n"
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
    /// Snapshots (by name) of the generation that are not ready yet, the others being ready
    /// (one slow copy of several).
    pub(crate) held_snapshots: BTreeSet<String>,
    /// The snapshot's `restoreSize` once ready (empty: not reported).
    pub(crate) restore_size: String,
    /// The StatefulSet's pods never become ready.
    pub(crate) sts_holds: bool,
    /// The producer succeeds writing this termination message (a digest of its data).
    pub(crate) producer_message: Option<String>,
    /// The verify Job fails, its Pod's termination message this (`None`: it completes).
    pub(crate) verify_fails: Option<String>,
    /// The verify Job keeps running (the controller reports it active).
    pub(crate) verify_holds: bool,
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
            held_snapshots: BTreeSet::new(),
            restore_size: "10Gi".to_string(),
            sts_holds: false,
            producer_message: None,
            verify_fails: None,
            verify_holds: false,
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
    /// `(dataset, generation)` a run reported `unchanged`: never a snapshot or StatefulSet.
    pub(crate) unchanged: RefCell<BTreeSet<(String, String)>>,
}

/// Names of the live objects under `path` of generation `g`, sorted.
pub(crate) fn names(w: &World, path: &str, g: &str) -> Vec<String> {
    let mut out: Vec<String> = w
        .items(path)
        .iter()
        .filter(|v| generation_of(v) == g)
        .map(|v| str_of(&v["metadata"]["name"]))
        .collect();
    out.sort();
    out
}

pub(crate) fn generation_of(v: &Value) -> String {
    v.pointer("/metadata/labels/snaproll.dev~1generation")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// Objects as the engine's observation takes them (shared, not copied).
pub(crate) fn shared(objects: &[Value]) -> Vec<std::sync::Arc<Value>> {
    objects.iter().cloned().map(std::sync::Arc::new).collect()
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
        "Job" => JOBS,
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

/// A day-1 generation that serves, then a day 2 run left to the given behaviour.
pub(crate) fn serving_day1(mode: Mode, knobs: Knobs) -> World {
    let w = World::new(mode, knobs);
    let r = w.settle(D1, 8);
    assert_eq!(r.states("data"), [format!("{G1} serving")]);
    w.take_events();
    w
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
