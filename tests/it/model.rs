//! A randomized, model-style test of the engine: random sequences of `reconcile` runs (push
//! mode, through the binary, against the loopback fake API) with the clock jumping back and
//! forward, the controllers playing between runs, look-alike objects created and deleted, API
//! faults injected, runs killed part-way, and two runs racing. After every step the rollout's
//! invariants are checked:
//! - the World's own check ([`World::check_invariants`]): a snapshot exists while a StatefulSet
//!   or claim of its generation does, at most one generation moves, a served dataset keeps a
//!   ready StatefulSet;
//! - the newest ready generation of a dataset is never deleted (unless a newer one is ready);
//! - a snapshot is never created before its producer Succeeded, a StatefulSet never before its
//!   snapshot is ready (checked on every object's first appearance);
//! - generations only move forward: no generation older than the newest that existed appears;
//! - no look-alike is ever written or deleted by snaproll.
//!
//! Seeds and length: `SNAPROLL_MODEL_SEEDS` (a count, default 3) and `SNAPROLL_MODEL_STEPS`
//! (default 40) for a longer run, e.g. `SNAPROLL_MODEL_SEEDS=50 SNAPROLL_MODEL_STEPS=200 cargo
//! test model -- --nocapture`. The PRNG is a fixed xorshift so a seed replays exactly (no
//! shrinking is needed: each failure prints its seed, step and the step log).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{Value, json};

use crate::lifecycle::*;

const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/default/leases/snaproll-demo";

/// xorshift64*: deterministic per seed, no dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `2021-07-<day>T04:00:00Z` and its date.
fn clock(day: i64) -> (String, String) {
    let date = jiff::civil::date(2021, 7, 1)
        .checked_add(jiff::Span::new().days(day - 1))
        .unwrap();
    (format!("{date}T04:00:00Z"), date.to_string())
}

/// A hand-made object with the rollout's labels but no ApplySet membership.
fn look_alike(kind: &str, generation: &str, n: u64) -> (String, Value) {
    let labels = json!({"app.kubernetes.io/managed-by": "snaproll", "snaproll.dev/rollout": "demo",
        "snaproll.dev/dataset": "data", "snaproll.dev/generation": generation,
        "app.kubernetes.io/component": if kind == "Pod" { "producer" } else { "snapshot" }});
    match kind {
        "Pod" => {
            let name = format!("data-producer-{generation}-x{n}");
            (
                format!("{PODS}/{name}"),
                json!({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": name, "namespace": NS, "labels": labels},
                    "spec": {"restartPolicy": "Never",
                             "containers": [{"name": "p", "image": "busybox"}]}}),
            )
        }
        _ => {
            let name = format!("data-{generation}-x{n}");
            (
                format!("{SNAPS}/{name}"),
                json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
                    "metadata": {"name": name, "namespace": NS, "labels": labels},
                    "spec": {"volumeSnapshotClassName": "csi-gce-pd-snapshot-class",
                             "source": {"persistentVolumeClaimName": "data"}}}),
            )
        }
    }
}

/// What the model remembers between steps.
#[derive(Default)]
struct Memory {
    /// Look-alikes alive, by path, with their labels and spec as created.
    foreign: BTreeMap<String, Value>,
    /// Every snaproll object seen, by `kind/name`.
    seen: BTreeSet<String>,
    /// The newest generation whose StatefulSet was seen ready.
    newest_ready: Option<String>,
    /// The newest generation that ever existed.
    newest: Option<String>,
}

fn name_of(v: &Value) -> String {
    str_of(&v["metadata"]["name"])
}

fn is_member(v: &Value) -> bool {
    v.pointer("/metadata/labels/applyset.kubernetes.io~1part-of")
        .is_some()
}

/// The model's invariants over what the cluster holds now.
fn check(w: &World, m: &mut Memory, log: &[String]) {
    let fail = |what: String| -> ! { panic!("{what}\nsteps:\n{}", log.join("\n")) };
    let pods = w.items(PODS);
    let snaps = w.items(SNAPS);
    let stss = w.items(STS);
    // No look-alike written or deleted by snaproll.
    for (path, original) in &m.foreign {
        let Some(live) = w.server.block_on(w.api().get(path)) else {
            fail(format!("look-alike {path} was deleted"));
        };
        if live["metadata"]["labels"] != original["metadata"]["labels"]
            || live["spec"] != original["spec"]
        {
            fail(format!("look-alike {path} was changed: {live:#}"));
        }
        let managers: Vec<&str> = live["metadata"]["managedFields"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f["manager"].as_str())
            .collect();
        if managers.contains(&"snaproll") {
            fail(format!("snaproll wrote look-alike {path}"));
        }
    }
    for r in w.api().writes() {
        if m.foreign.keys().any(|p| r.path.starts_with(p.as_str())) {
            fail(format!("a write to a look-alike: {} {}", r.method, r.path));
        }
    }
    let ours = |v: &&Value| is_member(v);
    // Gates, on first appearance.
    for s in snaps.iter().filter(ours) {
        let key = format!("VolumeSnapshot/{}", name_of(s));
        if m.seen.insert(key.clone()) {
            let g = generation_of(s);
            let producer = pods.iter().filter(ours).find(|p| generation_of(p) == g);
            let succeeded = producer
                .and_then(|p| p.pointer("/status/phase"))
                .is_some_and(|p| p == "Succeeded");
            if !succeeded {
                fail(format!(
                    "{key} appeared before its producer Succeeded: {producer:?}"
                ));
            }
        }
    }
    for s in stss.iter().filter(ours) {
        let key = format!("StatefulSet/{}", name_of(s));
        if m.seen.insert(key.clone()) {
            let g = generation_of(s);
            let ready = snaps
                .iter()
                .filter(ours)
                .find(|x| generation_of(x) == g)
                .and_then(|x| x.pointer("/status/readyToUse"))
                .is_some_and(|r| r == true);
            if !ready {
                fail(format!("{key} appeared before its snapshot was ready"));
            }
        }
    }
    // Forward only: nothing older than the newest generation ever appears.
    let gens: BTreeSet<String> = pods
        .iter()
        .chain(&snaps)
        .chain(&stss)
        .filter(ours)
        .map(generation_of)
        .collect();
    for g in &gens {
        let key = format!("generation/{g}");
        if m.seen.insert(key)
            && let Some(newest) = &m.newest
            && g < newest
        {
            fail(format!("generation {g} started after {newest} existed"));
        }
    }
    if let Some(g) = gens.iter().max()
        && m.newest.as_ref().is_none_or(|n| g > n)
    {
        m.newest = Some(g.clone());
    }
    // The newest ready generation is never deleted unless a newer one is ready.
    let ready: BTreeSet<String> = stss
        .iter()
        .filter(ours)
        .filter(|s| sts_ready(s))
        .map(generation_of)
        .collect();
    if let Some(n) = &m.newest_ready
        && !ready.iter().any(|g| g >= n)
    {
        fail(format!(
            "the newest ready generation {n} is gone and nothing newer is ready: {ready:?}"
        ));
    }
    if let Some(g) = ready.iter().max()
        && m.newest_ready.as_ref().is_none_or(|n| g > n)
    {
        m.newest_ready = Some(g.clone());
    }
}

fn model(seed: u64, steps: u64) -> u64 {
    let mut rng = Rng::new(seed);
    let w = World::new(
        Mode::Push,
        Knobs {
            keep: 1 + rng.below(2) as u32,
            replicas: 1 + rng.below(3) as u32,
            atomic: rng.below(2) == 1,
            // From the seed, not the generator: the seeds' action sequences stay as they were.
            copies: 1 + (seed % 3) as u32,
            ..Knobs::default()
        },
    );
    let mut m = Memory::default();
    let mut log: Vec<String> = Vec::new();
    let mut day: i64 = 15;
    let mut runs = 0;
    let mut n = 0;
    for step in 0..steps {
        w.api().clear_requests();
        let (now, date) = clock(day);
        let action = rng.below(12);
        log.push(format!(
            "seed {seed} step {step}: action {action} at {date}"
        ));
        match action {
            0..=3 => {
                runs += 1;
                w.run_allowing(&now, &[], &[0, 1]);
            }
            4 => day += 1 + rng.below(2) as i64,
            5 => day -= 1 + rng.below(3) as i64,
            6 | 7 => w.play(),
            8 => {
                // A look-alike of a random nearby generation, or one removed.
                if !m.foreign.is_empty() && rng.below(3) == 0 {
                    let path = m.foreign.keys().next().unwrap().clone();
                    w.server.block_on(w.api().delete(&path));
                    m.foreign.remove(&path);
                    log.push(format!("  deleted look-alike {path}"));
                } else {
                    let (_, g) = clock(day + rng.below(5) as i64 - 2);
                    n += 1;
                    let kind = if rng.below(2) == 0 {
                        "Pod"
                    } else {
                        "VolumeSnapshot"
                    };
                    let (path, v) = look_alike(kind, &g, n);
                    w.server
                        .block_on(w.api().apply_as("kubectl", &path, &v, true));
                    if kind == "Pod" {
                        w.server
                            .block_on(w.api().set_status(&path, json!({"phase": "Succeeded"})));
                    } else {
                        w.server.block_on(
                            w.api().set_status(
                                &path,
                                json!({"readyToUse": true, "restoreSize": "10Gi"}),
                            ),
                        );
                    }
                    m.foreign.insert(path.clone(), v);
                    log.push(format!("  created look-alike {path}"));
                }
            }
            9 => {
                // An API fault on a write, once or a few times; the run may fail (exit 4).
                let target = [
                    "/pods",
                    "/volumesnapshots",
                    "/statefulsets",
                    "/persistentvolumeclaims",
                ][rng.below(4) as usize];
                let method = if rng.below(2) == 0 { "PATCH" } else { "DELETE" };
                w.api().inject(
                    crate::fakeapi::Fault::status(method, target, 500, "InternalError", "injected")
                        .times(1 + rng.below(6) as usize),
                );
                runs += 1;
                let run = w.run_allowing(&now, &[], &[0, 1, 4]);
                log.push(format!("  fault {method} {target}: exit {}", run.code));
                w.api().clear_faults();
            }
            10 => {
                // A run killed part-way; its Lease is left to expire (played by deleting it).
                runs += 1;
                let mut child = w
                    .std_command(&now, &[])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .unwrap();
                std::thread::sleep(Duration::from_millis(rng.below(400)));
                let _ = child.kill();
                let _ = child.wait();
                w.server.block_on(w.api().delete(LEASE));
                // A Git write killed part-way can leave libgit2's lock files; the next run's
                // error names them, and the operator removes them (played here).
                for lock in [
                    ".git/index.lock",
                    ".git/refs/heads/main.lock",
                    ".git/HEAD.lock",
                ] {
                    let _ = std::fs::remove_file(w.repo.join(lock));
                }
                w.check_invariants("after a killed run");
            }
            _ => {
                // Two runs racing, with clocks a day apart: the Lease lets one write at a
                // time, the other reports who holds it (exit 6) or runs after it.
                runs += 2;
                let (other, _) = clock(day + 1);
                let quiet = |mut c: std::process::Command| {
                    c.stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::piped())
                        .spawn()
                        .unwrap()
                };
                let a = quiet(w.std_command(&now, &[]));
                let b = quiet(w.std_command(&other, &[]));
                for child in [a, b] {
                    let out = child.wait_with_output().unwrap();
                    let code = out.status.code();
                    assert!(
                        matches!(code, Some(0 | 1 | 6)),
                        "racing run exit {code:?}: {}\n{}",
                        String::from_utf8_lossy(&out.stderr),
                        log.join("\n")
                    );
                    log.push(format!("  racing run exit {code:?}"));
                }
                w.check_invariants("after two racing runs");
            }
        }
        check(&w, &mut m, &log);
    }
    // Whatever happened, runs on time finish the rollout. The model's checks run after every
    // step here too: its gates hold at an object's first appearance, which a settle of several
    // runs would hide (a kept snapshot whose producer already retired).
    let (now, _) = clock(day.max(15) + 3);
    for _ in 0..14 {
        w.run_allowing(&now, &[], &[0, 1]);
        check(&w, &mut m, &log);
        w.play();
        check(&w, &mut m, &log);
    }
    w.settle_allowing(&now, 2, &[0, 1]);
    check(&w, &mut m, &log);
    runs
}

#[test]
fn random_runs_keep_every_invariant() {
    let seeds = env_number("SNAPROLL_MODEL_SEEDS", 3);
    let steps = env_number("SNAPROLL_MODEL_STEPS", 40);
    let mut runs = 0;
    for seed in 1..=seeds {
        runs += model(seed, steps);
    }
    println!(
        "model: {seeds} seeds x {steps} steps = {} steps, {runs} snaproll runs, every invariant held",
        seeds * steps
    );
}
