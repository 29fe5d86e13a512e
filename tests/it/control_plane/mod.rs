//! The control-plane tier: the `snaproll` binary against a real kube-apiserver, etcd and
//! kube-controller-manager (StatefulSet, garbage-collector and PVC-protection controllers), with
//! the real `kubectl` beside it. Fakes miss what bites in production: server-side apply creating
//! an object is authorized as `patch` and `create`, finalizers hold objects in Terminating, the
//! snapshot CRDs' CEL rules, defaulting, and the controllers acting on retention policies.
//!
//! The control plane starts once per test binary (on first use) on loopback ephemeral ports, with
//! RBAC, a static token file (admin identities in `system:masters`, one per test so the audit log
//! tells the tests apart), service-account signing keys (TokenRequest works), an audit log of
//! every request at level Metadata, and the snapshot CRDs of `crds/`. Each test works in its own
//! namespace. The harness plays only what needs a node or a storage backend: Pod status (the
//! kubelet) and VolumeSnapshot status (the snapshot controller and CSI driver).
//!
//! Binaries: `$KUBEBUILDER_ASSETS` (envtest's convention) or the cache `.ci/control-plane`
//! builds. Without them a test prints one line naming `.ci/control-plane` and passes, unless
//! `SNAPROLL_CONTROL_PLANE_REQUIRED` is set (CI), where it fails.
//!
//! The processes are killed when the test binary exits: they are spawned by a thread that lives
//! as long as the process with `PR_SET_PDEATHSIG` (a `Drop` on a static never runs), and an
//! `atexit` handler kills them and removes the working directory on a normal exit.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::*;

mod bench;
mod cluster;
mod copies;
mod kubectl;
mod plane;
mod rbac;
mod runs;
mod verify;
mod wait;

/// How many per-test admin identities the token file holds.
const USERS: usize = 64;

/// A started control plane, shared by the tests of this binary.
pub struct Plane {
    /// The working directory: certificates, keys, token file, kubeconfigs, logs, etcd data.
    dir: PathBuf,
    /// Where kube-apiserver, kube-controller-manager, kubectl and etcd are.
    bin: PathBuf,
    /// `https://127.0.0.1:<port>`.
    pub url: String,
    pub etcd_url: String,
    /// The CA that signed the API server's serving certificate.
    pub ca: PathBuf,
    /// A kubeconfig for the harness's own admin (`admin`, group `system:masters`).
    pub admin: PathBuf,
    pub audit_log: PathBuf,
    next_user: AtomicUsize,
    /// etcd, kube-apiserver and kube-controller-manager, to notice one that exited.
    procs: Mutex<Vec<(&'static str, Child)>>,
}

/// Processes to kill, and the directory to remove, when the binary exits.
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());
static WORKDIR: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn cleanup() {
    if let Ok(pids) = CHILDREN.lock() {
        for pid in pids.iter() {
            // SAFETY: plain kill(2) of a process this binary spawned.
            unsafe { libc::kill(*pid as libc::pid_t, libc::SIGKILL) };
        }
    }
    if let Some(dir) = WORKDIR.get() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Spawns `cmd` from a thread that never exits, so `PR_SET_PDEATHSIG` (which fires when the
/// spawning *thread* ends) kills the child only when this process ends.
fn spawn_kept(cmd: Command) -> Child {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::spawn(move || {
            for (mut cmd, answer) in rx {
                // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
                unsafe {
                    cmd.pre_exec(|| {
                        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                        Ok(())
                    });
                }
                let _ = answer.send(cmd.spawn());
            }
            // The sender lives in a static: the channel never closes.
        });
        Mutex::new(tx)
    });
    let (answer, result) = mpsc::channel();
    tx.lock().unwrap().send((cmd, answer)).unwrap();
    let child = result
        .recv()
        .unwrap()
        .expect("spawn a control-plane process");
    CHILDREN.lock().unwrap().push(child.id());
    child
}

/// The directory holding the four binaries, if there is one.
fn binaries() -> Option<PathBuf> {
    let complete = |d: &Path| {
        [
            "kube-apiserver",
            "kube-controller-manager",
            "kubectl",
            "etcd",
        ]
        .iter()
        .all(|b| d.join(b).is_file())
    };
    if let Some(d) = std::env::var_os("KUBEBUILDER_ASSETS").map(PathBuf::from)
        && complete(&d)
    {
        return Some(d);
    }
    // The cache `.ci/control-plane` fills, keyed by the versions go.mod pins.
    let gomod = std::fs::read_to_string(repo_path("tests/control-plane/go.mod")).ok()?;
    let version = |module: &str| {
        gomod.lines().find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some(module))
                .then(|| w.next())
                .flatten()
                .filter(|v| v.starts_with('v'))
                .map(str::to_string)
        })
    };
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    let d = cache.join("snaproll/control-plane").join(format!(
        "{}-etcd-{}",
        version("k8s.io/kubernetes")?,
        version("go.etcd.io/etcd/server/v3")?
    ));
    complete(&d).then_some(d)
}

/// The shared control plane, started on first use; `None` (after printing one line) when the
/// binaries are missing and the tier is not required.
pub fn plane() -> Option<&'static Plane> {
    static PLANE: OnceLock<Option<Plane>> = OnceLock::new();
    let plane = PLANE.get_or_init(|| binaries().map(Plane::start));
    if plane.is_none() {
        assert!(
            std::env::var_os("SNAPROLL_CONTROL_PLANE_REQUIRED").is_none(),
            "SNAPROLL_CONTROL_PLANE_REQUIRED is set but no control plane binaries were found: \
             run .ci/control-plane and export KUBEBUILDER_ASSETS to the directory it prints"
        );
        println!(
            "skipped: no test control plane (build it with .ci/control-plane, or set KUBEBUILDER_ASSETS)"
        );
    }
    plane.as_ref()
}

/// A free loopback port (bound, then released for the child to take).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// A kubeconfig for `token` against `url`, with `namespace` as the context's default.
fn kubeconfig(url: &str, ca: &Path, token: &str, namespace: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {url}\n    certificate-authority: {ca}\nusers:\n- name: test\n  user:\n    token: {token}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: test\n    namespace: {namespace}\ncurrent-context: test\n",
        ca = ca.display()
    )
}

/// One audit event (level Metadata, stage ResponseComplete).
#[derive(Clone, Debug)]
pub struct Audit(pub Value);

impl Audit {
    pub fn verb(&self) -> &str {
        self.0["verb"].as_str().unwrap_or_default()
    }
    pub fn user(&self) -> &str {
        self.0["user"]["username"].as_str().unwrap_or_default()
    }
    pub fn resource(&self) -> &str {
        self.0["objectRef"]["resource"].as_str().unwrap_or_default()
    }
    pub fn subresource(&self) -> &str {
        self.0["objectRef"]["subresource"]
            .as_str()
            .unwrap_or_default()
    }
    pub fn name(&self) -> &str {
        self.0["objectRef"]["name"].as_str().unwrap_or_default()
    }
    pub fn uri(&self) -> &str {
        self.0["requestURI"].as_str().unwrap_or_default()
    }
    pub fn code(&self) -> i64 {
        self.0["responseStatus"]["code"]
            .as_i64()
            .unwrap_or_default()
    }
    pub fn is_dry_run(&self) -> bool {
        self.uri().contains("dryRun=All")
    }
    /// A request that changes stored state (dry-runs do not).
    pub fn is_write(&self) -> bool {
        matches!(
            self.verb(),
            "create" | "update" | "patch" | "delete" | "deletecollection"
        ) && !self.is_dry_run()
    }
    /// `VERB resource[/subresource] name`, for messages.
    pub fn line(&self) -> String {
        let sub = match self.subresource() {
            "" => String::new(),
            s => format!("/{s}"),
        };
        format!(
            "{} {}{sub} {} -> {}",
            self.verb(),
            self.resource(),
            self.name(),
            self.code()
        )
    }
}

/// The kinds a rollout renders (their resources), as opposed to the Lease a writing run may
/// hold: writes are counted for these.
pub const ROLLOUT_RESOURCES: &[&str] = &[
    "pods",
    "persistentvolumeclaims",
    "volumesnapshots",
    "statefulsets",
    "services",
    "volumesnapshotclasses",
    "configmaps",
];

/// One test's corner of the control plane: its own namespace, its own admin identity (so its
/// requests are told apart in the audit log), a kubeconfig for `snaproll`, a temp directory.
pub struct Cluster {
    pub plane: &'static Plane,
    pub ns: String,
    /// The identity `snaproll` runs as (`test-<i>`).
    pub user: String,
    pub kubeconfig: PathBuf,
    pub tmp: tempfile::TempDir,
}

// ---------------------------------------------------------------------------------------------
// Suites: the `snaproll` binary driven as the CronJob drives it, against the real server.

const D1: &str = "2021-07-15T04:00:00Z";
const D2: &str = "2021-07-16T04:00:00Z";
const D3: &str = "2021-07-17T04:00:00Z";
const G1: &str = "2021-07-15";
const G2: &str = "2021-07-16";
const G3: &str = "2021-07-17";

/// A rollout `demo` of one dataset `data` (consumer `consumer`, 2 replicas) in the test's
/// namespace, with its own VolumeSnapshotClass (cluster-scoped, so named after the namespace),
/// and a local Git repository.
struct Rollout {
    c: Cluster,
    spec: PathBuf,
    /// The Git repository `--repo` names (a path or a URL).
    repo: String,
    /// The kubeconfig snaproll runs with (the test's admin unless a test swaps it).
    kubeconfig: PathBuf,
    class: String,
    size: String,
    /// Dataset-level spec lines (indented 6) inserted before `generations:`, e.g. `snapshot:`.
    extra: String,
    /// The consumer's replicas (2 unless a test changes it).
    replicas: u32,
    /// Consumer-level spec lines (indented 8) appended to `consumer:`, e.g. `verify:`.
    consumer: String,
}

/// One `snaproll` run.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    /// The first JSON line of stdout (reconcile `-o json`).
    report: Value,
}

impl Run {
    fn states(&self) -> Vec<String> {
        self.report["generations"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| d["dataset"] == "data")
            .flat_map(|d| d["generations"].as_array().cloned().unwrap_or_default())
            .map(|g| {
                format!(
                    "{} {}",
                    g["generation"].as_str().unwrap_or_default(),
                    g["state"].as_str().unwrap_or_default()
                )
            })
            .collect()
    }

    fn moving(&self) -> bool {
        self.states().iter().any(|s| {
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
    }
}

impl Rollout {
    fn new(ns: &str) -> Option<Rollout> {
        let c = Cluster::new(ns)?;
        let spec = c.tmp.path().join("snaproll.yaml");
        let repo = c.tmp.path().join("gitops").display().to_string();
        let r = Rollout {
            kubeconfig: c.kubeconfig.clone(),
            class: format!("{ns}-class"),
            c,
            spec,
            repo,
            size: "1Gi".into(),
            extra: String::new(),
            replicas: 2,
            consumer: String::new(),
        };
        r.write_spec();
        Some(r)
    }

    fn write_spec(&self) {
        std::fs::write(
            &self.spec,
            format!(
                "apiVersion: snaproll.dev/v1alpha1\nkind: DatasetRollout\nmetadata:\n  name: demo\n  namespace: {ns}\nspec:\n  snapshotClass:\n    name: {class}\n    driver: pd.csi.storage.gke.io\n    deletionPolicy: Delete\n  datasets:\n    - name: data\n      storage:\n        storageClassName: standard-rwo\n        size: {size}\n        accessModes: [ReadWriteOnce]\n      producer:\n        image: ubuntu:22.04\n        command: [\"/bin/sh\", \"-c\"]\n        args: [\"echo refreshed > /data/file.txt\"]\n        mountPath: /data\n{extra}      generations:\n        schedule: daily\n        keep: 1\n      consumer:\n        name: consumer\n        replicas: {replicas}\n        image: ubuntu:22.04\n        mountPath: /data\n        pvcRetentionPolicy:\n          whenDeleted: Delete\n        service:\n          type: Headless\n{consumer}",
                ns = self.c.ns,
                class = self.class,
                size = self.size,
                extra = self.extra,
                replicas = self.replicas,
                consumer = self.consumer,
            ),
        )
        .unwrap();
    }

    /// `snaproll <args>` with this test's kubeconfig and a clean environment.
    fn snaproll(&self, args: &[&str]) -> assert_cmd::Command {
        let mut cmd = snaproll();
        cmd.env("HOME", self.c.tmp.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .args(args);
        if !args.contains(&"-f") {
            cmd.arg("-f").arg(&self.spec);
        }
        cmd.arg("--kubeconfig").arg(&self.kubeconfig);
        cmd
    }

    /// `reconcile --apply --prune` (push mode) at `now`, with `extra` flags.
    fn reconcile(&self, now: &str, extra: &[&str]) -> Run {
        let mut args = vec![
            "reconcile",
            "--repo",
            self.repo.as_str(),
            "--apply",
            "--prune",
        ];
        args.extend(["--now", now, "-o", "json"]);
        args.extend(extra);
        self.snaproll_run(&args)
    }

    /// `snaproll <args> -f SPEC --kubeconfig K`, whatever its outcome.
    fn snaproll_run(&self, args: &[&str]) -> Run {
        let out = self.snaproll(args).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        Run {
            code: out.status.code().unwrap_or(-1),
            report: stdout
                .lines()
                .next()
                .and_then(|l| serde_json::from_str(l).ok())
                .unwrap_or(Value::Null),
            stdout,
            stderr: String::from_utf8_lossy(&out.stderr).to_string(),
        }
    }

    /// A push-mode run that must succeed, then the rollout's invariants on the live state.
    fn run(&self, now: &str) -> Run {
        self.checked(now, self.reconcile(now, &[]))
    }

    /// `run` must have succeeded; then the invariants.
    fn checked(&self, now: &str, run: Run) -> Run {
        assert_eq!(
            run.code, 0,
            "reconcile at {now}\nstdout: {}\nstderr: {}",
            run.stdout, run.stderr
        );
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
        self.check_invariants(now, "after reconcile");
        run
    }

    /// The rollout's own invariant checks (`rollout::check_all`) on what the real cluster
    /// holds, observed as snaproll observes it.
    fn check_invariants(&self, now: &str, when: &str) {
        let loaded = snaproll::spec::load(&self.spec).unwrap();
        let observed =
            snaproll::engine::observe("demo", &crate::lifecycle::shared(&self.c.rollout_objects()));
        let opts = snaproll::rollout::Options {
            generation: Default::default(),
            today: now[..10].to_string(),
            now: now.parse().unwrap(),
            snapshot_timeout: Some(snaproll::rollout::DEFAULT_SNAPSHOT_TIMEOUT),
            start: false,
            rollout: "demo".into(),
            namespace: self.c.ns.clone(),
        };
        if let Err(e) = snaproll::rollout::check_all(&loaded.rollout, &observed, &opts) {
            panic!("{when} at {now}: {e}\n{observed:#?}");
        }
    }

    /// Runs at `now` until nothing is in motion, playing the kubelet and snapshotter between
    /// runs and giving the garbage collector time; the invariants hold after every step.
    fn settle(&self, now: &str) -> Run {
        self.settle_with(now, || self.run(now))
    }

    /// [`Rollout::settle`] with the runs `run` makes.
    fn settle_with(&self, now: &str, run: impl Fn() -> Run) -> Run {
        for _ in 0..30 {
            let run = run();
            if !run.moving() {
                return run;
            }
            self.c.play(&self.size);
            self.check_invariants(now, "after the kubelet and snapshotter played");
            if run.states().iter().any(|s| s.ends_with(" retiring")) {
                // The garbage collector and PVC protection remove the old claims.
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        panic!("the rollout did not settle at {now} in 30 runs");
    }

    /// A run at `now` that must change nothing: no write to the rollout's kinds (the audit
    /// log says), and at most a Lease get/update pair, which writing runs take (PRODUCT.md
    /// invariant 6). Returns the run's requests.
    fn quiet(&self, now: &str) -> Vec<Audit> {
        let mark = self.c.audit_mark();
        let run = self.run(now);
        assert!(run.report["commit"].is_null(), "{}", run.stdout);
        let reqs = self.c.audit_since(mark);
        assert_quiet(&reqs);
        reqs
    }
}

/// No write to a rollout kind; a Lease renewal at most.
fn assert_quiet(reqs: &[Audit]) {
    let writes: Vec<String> = reqs
        .iter()
        .filter(|a| a.is_write() && a.resource() != "leases")
        .map(Audit::line)
        .collect();
    assert!(writes.is_empty(), "a no-op run wrote: {writes:#?}");
    let lease_writes = reqs.iter().filter(|a| a.is_write()).count();
    assert!(lease_writes <= 2, "{lease_writes} Lease writes");
    let lists: Vec<String> = reqs
        .iter()
        .filter(|a| a.verb() == "list" && ROLLOUT_RESOURCES.contains(&a.resource()))
        .map(Audit::line)
        .collect();
    // At most one LIST per kind: pods, PVCs, snapshots, Services, StatefulSets, classes.
    assert!(lists.len() <= 6, "{lists:#?}");
}

fn summary(reqs: &[Audit]) -> String {
    let writes = reqs.iter().filter(|a| a.is_write()).count();
    let mut verbs: BTreeMap<&str, usize> = BTreeMap::new();
    for a in reqs {
        *verbs.entry(a.verb()).or_default() += 1;
    }
    format!("{} requests ({writes} writes): {verbs:?}", reqs.len())
}

/// Runs `cmd` with `input` on stdin.
fn pipe(mut cmd: Command, input: &str) -> std::process::Output {
    use std::io::Write;
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}
