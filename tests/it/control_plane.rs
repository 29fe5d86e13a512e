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

impl Plane {
    fn start(bin: PathBuf) -> Plane {
        let started = Instant::now();
        let dir =
            std::env::temp_dir().join(format!("snaproll-control-plane-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        WORKDIR.set(dir.clone()).unwrap();
        // SAFETY: registers a plain extern "C" function.
        unsafe { libc::atexit(cleanup) };

        // A CA, the API server's serving certificate (127.0.0.1 and localhost) and the
        // service-account signing key pair, with the openssl CLI.
        let openssl = |args: &[&str]| {
            run_ok(Command::new("openssl").current_dir(&dir).args(args));
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "7",
            "-subj",
            "/CN=snaproll-test-ca",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=kube-apiserver",
        ]);
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "7",
            "-extfile",
            "server.ext",
        ]);
        openssl(&["genrsa", "-out", "sa.key", "2048"]);
        openssl(&["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"]);

        // Identities: the harness's admin and one admin per test, all in system:masters.
        let mut tokens = String::from("admin-token,admin,admin,\"system:masters\"\n");
        for i in 0..USERS {
            tokens.push_str(&format!(
                "test-token-{i},test-{i},test-{i},\"system:masters\"\n"
            ));
        }
        std::fs::write(dir.join("tokens.csv"), tokens).unwrap();
        // Every request once (when its response completed), without bodies.
        std::fs::write(
            dir.join("audit-policy.yaml"),
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived, ResponseStarted]\nrules:\n- level: Metadata\n",
        )
        .unwrap();

        let log = |name: &str| std::fs::File::create(dir.join(name)).unwrap();
        let (client, peer) = (free_port(), free_port());
        let etcd_url = format!("http://127.0.0.1:{client}");
        let mut etcd = Command::new(bin.join("etcd"));
        etcd.current_dir(&dir)
            .args(["--data-dir", "etcd", "--name", "test"])
            .arg(format!("--listen-client-urls={etcd_url}"))
            .arg(format!("--advertise-client-urls={etcd_url}"))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
            .arg(format!(
                "--initial-advertise-peer-urls=http://127.0.0.1:{peer}"
            ))
            .arg(format!("--initial-cluster=test=http://127.0.0.1:{peer}"))
            .args(["--unsafe-no-fsync", "--log-level=warn"])
            .stdout(Stdio::null())
            .stderr(log("etcd.log"));
        let etcd = spawn_kept(etcd);

        let port = free_port();
        let url = format!("https://127.0.0.1:{port}");
        let ca = dir.join("ca.crt");
        let audit_log = dir.join("audit.log");
        let apiserver = spawn_kept(Self::apiserver_command(
            &bin,
            &dir,
            &etcd_url,
            port,
            &audit_log,
            "apiserver.log",
        ));

        let admin = dir.join("admin.kubeconfig");
        std::fs::write(&admin, kubeconfig(&url, &ca, "admin-token", "default")).unwrap();
        let plane = Plane {
            dir: dir.clone(),
            bin: bin.clone(),
            url,
            etcd_url,
            ca,
            admin,
            audit_log,
            next_user: AtomicUsize::new(0),
            procs: Mutex::new(vec![("etcd", etcd), ("kube-apiserver", apiserver)]),
        };
        plane.wait_ready(&dir.join("apiserver.log"), Duration::from_secs(90));

        let mut kcm = Command::new(bin.join("kube-controller-manager"));
        kcm.current_dir(&dir)
            .arg(format!("--kubeconfig={}", plane.admin.display()))
            .args([
                "--controllers=statefulset,garbagecollector,pvc-protection",
                "--use-service-account-credentials=false",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                "--secure-port=0",
                "--concurrent-statefulset-syncs=5",
                "--v=1",
            ])
            .stdout(Stdio::null())
            .stderr(log("kube-controller-manager.log"));
        let kcm = spawn_kept(kcm);
        plane
            .procs
            .lock()
            .unwrap()
            .push(("kube-controller-manager", kcm));

        // The snapshot CRDs, established before any test uses them.
        let mut apply = plane.kubectl();
        apply
            .args(["apply", "--server-side", "-f"])
            .arg(repo_path("crds"));
        run_ok(&mut apply);
        run_ok(plane.kubectl().args([
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/volumesnapshots.snapshot.storage.k8s.io",
            "crd/volumesnapshotclasses.snapshot.storage.k8s.io",
            "crd/volumesnapshotcontents.snapshot.storage.k8s.io",
        ]));
        println!(
            "control plane up at {} in {:.1}s ({})",
            plane.url,
            started.elapsed().as_secs_f64(),
            plane.dir.display()
        );
        plane
    }

    /// kube-apiserver on `port` against `etcd_url`, RBAC, token identities, service-account
    /// keys (TokenRequest) and the audit log.
    fn apiserver_command(
        bin: &Path,
        dir: &Path,
        etcd_url: &str,
        port: u16,
        audit_log: &Path,
        log: &str,
    ) -> Command {
        let mut cmd = Command::new(bin.join("kube-apiserver"));
        cmd.current_dir(dir)
            .arg(format!("--etcd-servers={etcd_url}"))
            .arg(format!("--secure-port={port}"))
            .args([
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                "--tls-cert-file=server.crt",
                "--tls-private-key-file=server.key",
                "--client-ca-file=ca.crt",
                "--token-auth-file=tokens.csv",
                "--authorization-mode=RBAC",
                "--service-account-issuer=https://kubernetes.default.svc",
                "--service-account-key-file=sa.pub",
                "--service-account-signing-key-file=sa.key",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--endpoint-reconciler-type=none",
                "--enable-priority-and-fairness=false",
                "--audit-policy-file=audit-policy.yaml",
                "--audit-log-maxsize=0",
                "--v=1",
            ])
            .arg(format!("--audit-log-path={}", audit_log.display()))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join(log)).unwrap());
        cmd
    }

    /// Waits until `/readyz` answers ok (RBAC's bootstrap roles included).
    fn wait_ready(&self, log: &Path, timeout: Duration) {
        let start = Instant::now();
        loop {
            let out = self
                .kubectl()
                .args(["get", "--raw", "/readyz"])
                .output()
                .unwrap();
            if out.status.success() && out.stdout.starts_with(b"ok") {
                return;
            }
            assert!(
                start.elapsed() < timeout,
                "kube-apiserver not ready after {timeout:?}: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                log_tail(log)
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// `kubectl` as the harness's admin.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(self.bin.join("kubectl"));
        cmd.arg(format!("--kubeconfig={}", self.admin.display()))
            .env_remove("KUBECONFIG")
            .current_dir(&self.dir);
        cmd
    }

    pub fn kubectl_path(&self) -> PathBuf {
        self.bin.join("kubectl")
    }

    /// Every audit event so far of `user`.
    pub fn audit(&self, user: &str) -> Vec<Audit> {
        let needle = format!("\"username\":\"{user}\"");
        // The log backend writes an event after the response is on its way: let it land.
        std::thread::sleep(Duration::from_millis(300));
        let file = std::fs::File::open(&self.audit_log).unwrap();
        BufReader::new(file)
            .lines()
            .map_while(Result::ok)
            .filter(|l| l.contains(&needle))
            .filter_map(|l| serde_json::from_str::<Value>(&l).ok())
            .map(Audit)
            .filter(|a| a.user() == user)
            .collect()
    }

    /// A second kube-apiserver on the same etcd, for a test that stops it mid-run (the shared
    /// one serves the other tests throughout). Returns the child and its URL once ready.
    pub fn second_apiserver(&self, name: &str) -> (Child, String) {
        let port = free_port();
        let log = format!("apiserver-{name}.log");
        let child = spawn_kept(Self::apiserver_command(
            &self.bin,
            &self.dir,
            &self.etcd_url,
            port,
            &self.dir.join(format!("audit-{name}.log")),
            &log,
        ));
        let url = format!("https://127.0.0.1:{port}");
        let cfg = self.dir.join(format!("{name}.kubeconfig"));
        std::fs::write(&cfg, kubeconfig(&url, &self.ca, "admin-token", "default")).unwrap();
        let start = Instant::now();
        loop {
            let out = Command::new(self.kubectl_path())
                .arg(format!("--kubeconfig={}", cfg.display()))
                .args(["get", "--raw", "/readyz"])
                .output()
                .unwrap();
            if out.status.success() {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "second kube-apiserver not ready: {}",
                log_tail(&self.dir.join(&log))
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        (child, url)
    }
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

impl Cluster {
    /// A fresh namespace `ns` (with its `default` ServiceAccount, which Pod admission needs and
    /// no controller here creates); `None` when the tier is skipped.
    pub fn new(ns: &str) -> Option<Cluster> {
        let plane = plane()?;
        let i = plane.next_user.fetch_add(1, Ordering::SeqCst);
        assert!(i < USERS, "more tests than identities in the token file");
        let tmp = tempfile::tempdir().unwrap();
        let kubeconfig = tmp.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            self::kubeconfig(&plane.url, &plane.ca, &format!("test-token-{i}"), ns),
        )
        .unwrap();
        let c = Cluster {
            plane,
            ns: ns.to_string(),
            user: format!("test-{i}"),
            kubeconfig,
            tmp,
        };
        c.apply_admin(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
        c.apply_admin(&json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "default", "namespace": ns}}));
        Some(c)
    }

    /// `kubectl` as the harness's admin, in this namespace.
    pub fn kubectl(&self) -> Command {
        let mut cmd = self.plane.kubectl();
        cmd.arg(format!("--namespace={}", self.ns));
        cmd
    }

    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        run_ok(self.kubectl().args(args))
    }

    /// Server-side applies `obj` as the harness (field manager `harness`).
    pub fn apply_admin(&self, obj: &Value) {
        let mut cmd = self.kubectl();
        cmd.args([
            "apply",
            "--server-side",
            "--field-manager=harness",
            "-f",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(obj.to_string().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "apply {obj}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The items of `resource` in this namespace (kubectl fills in `kind`).
    pub fn items(&self, resource: &str) -> Vec<Value> {
        let text = self.kubectl_ok(&["get", resource, "-o", "json"]);
        let list: Value = serde_json::from_str(&text).unwrap();
        list["items"].as_array().cloned().unwrap_or_default()
    }

    pub fn get(&self, resource: &str, name: &str) -> Option<Value> {
        let out = self
            .kubectl()
            .args(["get", resource, name, "-o", "json", "--ignore-not-found"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Merges `status` into the status subresource of `resource/name` (the kubelet's or the
    /// snapshot controller's part).
    pub fn set_status(&self, resource: &str, name: &str, status: Value) {
        self.kubectl_ok(&[
            "patch",
            resource,
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            &json!({ "status": status }).to_string(),
        ]);
    }

    /// This test's audit events (by its identity), from the `from`-th on.
    pub fn audit_since(&self, from: usize) -> Vec<Audit> {
        self.plane
            .audit(&self.user)
            .into_iter()
            .skip(from)
            .collect()
    }

    /// How many audit events of this test there are so far.
    pub fn audit_mark(&self) -> usize {
        self.audit_since(0).len()
    }

    /// The kubelet and the CSI snapshotter, once: producer Pods succeed, snapshots become ready
    /// with `restore_size`, and StatefulSet Pods run and become ready; then waits (up to 60s)
    /// for the StatefulSet controller to report every StatefulSet ready, pods created one by
    /// one (OrderedReady) readied as they come.
    pub fn play(&self, restore_size: &str) {
        for pod in self.items("pods") {
            let owned = pod["metadata"]["ownerReferences"].is_array();
            let phase = pod["status"]["phase"].as_str().unwrap_or_default();
            let name = pod["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if !owned && !matches!(phase, "Succeeded" | "Failed") {
                self.set_status("pod", &name, json!({"phase": "Succeeded"}));
            }
        }
        for snap in self.items("volumesnapshots") {
            if snap["status"]["readyToUse"] != json!(true) {
                let name = snap["metadata"]["name"].as_str().unwrap_or_default();
                self.set_status(
                    "volumesnapshot",
                    name,
                    json!({"readyToUse": true, "restoreSize": restore_size,
                           "boundVolumeSnapshotContentName": format!("snapcontent-{name}")}),
                );
            }
        }
        let start = Instant::now();
        loop {
            let mut pending = false;
            for pod in self.items("pods") {
                if !pod["metadata"]["ownerReferences"].is_array()
                    || !pod["metadata"]["deletionTimestamp"].is_null()
                {
                    continue;
                }
                let ready = pod["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True");
                if !ready {
                    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
                    self.set_pod_ready(name);
                }
            }
            for sts in self.items("statefulsets") {
                if !sts["metadata"]["deletionTimestamp"].is_null() {
                    continue;
                }
                let want = sts["spec"]["replicas"].as_i64().unwrap_or(1);
                if sts["status"]["readyReplicas"].as_i64().unwrap_or(0) != want
                    || sts["status"]["observedGeneration"] != sts["metadata"]["generation"]
                {
                    pending = true;
                }
            }
            if !pending {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "StatefulSets not ready after 60s: {:#?}",
                self.items("statefulsets")
                    .iter()
                    .map(|s| (s["metadata"]["name"].clone(), s["status"].clone()))
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A Pod Running and Ready, as the kubelet reports it.
    pub fn set_pod_ready(&self, name: &str) {
        let now = jiff::Timestamp::now()
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        self.set_status(
            "pod",
            name,
            json!({"phase": "Running", "startTime": now, "conditions": [
                {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                {"type": "Ready", "status": "True", "lastTransitionTime": now}]}),
        );
    }

    /// Every object of the rollout's kinds, `kind` filled in, for `engine::observe`.
    pub fn rollout_objects(&self) -> Vec<Value> {
        let mut out = Vec::new();
        for r in [
            "pods",
            "persistentvolumeclaims",
            "volumesnapshots",
            "services",
            "statefulsets",
        ] {
            out.extend(self.items(r));
        }
        out
    }

    /// Object names per kind, sorted: `Kind/name`.
    pub fn names(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for v in self.rollout_objects() {
            let kind = v["kind"].as_str().unwrap_or_default().to_string();
            out.entry(kind).or_default().push(
                v["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
        }
        out
    }
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
        };
        r.write_spec();
        Some(r)
    }

    fn write_spec(&self) {
        std::fs::write(
            &self.spec,
            format!(
                "apiVersion: snaproll.dev/v1alpha1\nkind: DatasetRollout\nmetadata:\n  name: demo\n  namespace: {ns}\nspec:\n  snapshotClass:\n    name: {class}\n    driver: pd.csi.storage.gke.io\n    deletionPolicy: Delete\n  datasets:\n    - name: data\n      storage:\n        storageClassName: standard-rwo\n        size: {size}\n        accessModes: [ReadWriteOnce]\n      producer:\n        image: ubuntu:22.04\n        command: [\"/bin/sh\", \"-c\"]\n        args: [\"echo refreshed > /data/file.txt\"]\n        mountPath: /data\n      generations:\n        schedule: daily\n        keep: 1\n      consumer:\n        name: consumer\n        replicas: 2\n        image: ubuntu:22.04\n        mountPath: /data\n        pvcRetentionPolicy:\n          whenDeleted: Delete\n        service:\n          type: Headless\n",
                ns = self.c.ns,
                class = self.class,
                size = self.size,
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
        let observed = snaproll::engine::observe("demo", &self.c.rollout_objects());
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

/// Suite 3: once the rollout serves, reconcile and apply change nothing and write nothing.
#[test]
fn no_op_reconcile_and_apply_make_no_writes() {
    let Some(r) = Rollout::new("noop") else {
        return;
    };
    let run = r.settle(D1);
    assert_eq!(run.states(), [format!("{G1} serving")]);
    let reqs = r.quiet(D1);
    println!("no-op reconcile: {}", summary(&reqs));
    // A bare apply of the serving generation is a no-op too.
    let mark = r.c.audit_mark();
    let out = r.snaproll(&["apply", "--generation", G1]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let reqs = r.c.audit_since(mark);
    assert_quiet(&reqs);
    println!("no-op apply: {}", summary(&reqs));
}

/// Suite 1: day 1 to day 3 in push mode against the real server and controllers: the
/// StatefulSet controller creates the claims and Pods, the garbage collector removes them with
/// their StatefulSet (retention policy), PVC protection holds claims while Pods use them.
#[test]
fn push_mode_rolls_day_1_to_day_3() {
    let Some(r) = Rollout::new("push") else {
        return;
    };
    let run = r.run(D1);
    assert_eq!(run.states(), [format!("{G1} producing")]);
    let run = r.settle(D1);
    assert_eq!(run.states(), [format!("{G1} serving")]);
    r.quiet(D1);
    for (now, g) in [(D2, G2), (D3, G3)] {
        let run = r.settle(now);
        assert_eq!(run.states(), [format!("{g} serving")], "{}", run.stdout);
        r.quiet(now);
        // Only the day's generation is left: the old StatefulSet, its claims and Pods (the
        // garbage collector), its producer and its snapshot are gone.
        let names = r.c.names();
        assert_eq!(
            names.get("StatefulSet").cloned().unwrap_or_default(),
            [format!("consumer-{g}")]
        );
        assert_eq!(
            names.get("VolumeSnapshot").cloned().unwrap_or_default(),
            [format!("data-{g}")]
        );
        assert_eq!(
            names
                .get("PersistentVolumeClaim")
                .cloned()
                .unwrap_or_default(),
            [
                "data".to_string(),
                format!("data-consumer-{g}-0"),
                format!("data-consumer-{g}-1")
            ]
        );
        assert_eq!(
            names.get("Pod").cloned().unwrap_or_default(),
            [
                format!("consumer-{g}-0"),
                format!("consumer-{g}-1"),
                format!("data-producer-{g}")
            ]
        );
    }
}

/// Suite 6: someone takes a field with `kubectl apply --server-side --force-conflicts`; the
/// real server's conflict comes out as one line naming the manager, then `--force-conflicts`
/// takes it back and the next run is a no-op.
#[test]
fn field_manager_conflict_then_force_conflicts() {
    let Some(r) = Rollout::new("conflict") else {
        return;
    };
    r.settle(D1);
    let sts = format!("consumer-{G1}");
    let scale = json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": sts, "namespace": r.c.ns}, "spec": {"replicas": 3}});
    // Without --force-conflicts kubectl itself is refused: snaproll owns spec.replicas.
    let mut cmd = r.c.kubectl();
    cmd.args([
        "apply",
        "--server-side",
        "--field-manager=intruder",
        "-f",
        "-",
    ]);
    let out = pipe(cmd, &scale.to_string());
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("conflict"),
        "{out:?}"
    );
    let mut cmd = r.c.kubectl();
    cmd.args([
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=intruder",
        "-f",
        "-",
    ]);
    let out = pipe(cmd, &scale.to_string());
    assert!(out.status.success(), "{out:?}");

    let mark = r.c.audit_mark();
    let run = r.reconcile(D1, &[]);
    assert_eq!(run.code, 4, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!(
            "StatefulSet/{sts} ({}): conflict with field manager \"intruder\"",
            r.c.ns
        )) && run.stderr.contains("--force-conflicts"),
        "{}",
        run.stderr
    );
    let writes: Vec<String> =
        r.c.audit_since(mark)
            .iter()
            .filter(|a| a.is_write() && a.resource() != "leases")
            .map(Audit::line)
            .collect();
    assert!(writes.is_empty(), "{writes:#?}");
    assert_eq!(r.c.get("statefulset", &sts).unwrap()["spec"]["replicas"], 3);

    let run = r.reconcile(D1, &["--force-conflicts"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let live = r.c.get("statefulset", &sts).unwrap();
    assert_eq!(live["spec"]["replicas"], 2);
    let managers: Vec<&str> = live["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert!(!managers.contains(&"intruder"), "{managers:?}");
    r.c.play(&r.size);
    r.settle(D1);
    r.quiet(D1);
}

/// Suite 7: changes the real server refuses (the StatefulSet's claim templates, the source
/// claim's size, the snapshot source's CEL rule) come out as snaproll's one-line messages,
/// caught by the dry-run: nothing is written.
#[test]
fn immutable_and_invalid_changes_are_one_line_errors() {
    let Some(mut r) = Rollout::new("immutable") else {
        return;
    };
    r.settle(D1);
    let before = r.c.get("statefulset", &format!("consumer-{G1}")).unwrap();

    // A bigger claim in place: the StatefulSet's volumeClaimTemplates and the unbound source
    // claim's size are both refused.
    r.size = "2Gi".into();
    r.write_spec();
    let mark = r.c.audit_mark();
    let out = r.snaproll(&["apply", "--generation", G1]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    println!("size change: {stderr}");
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "PersistentVolumeClaim/data ({}): cannot change immutable field spec.resources.requests.storage; roll a new generation",
            r.c.ns
        )),
        "{stderr}"
    );
    // The server's own message is kept, the dump of the object it appends is not.
    assert!(
        stderr.contains("spec is immutable after creation"),
        "{stderr}"
    );
    assert!(!stderr.contains("@@"), "{stderr}");
    let writes: Vec<String> =
        r.c.audit_since(mark)
            .iter()
            .filter(|a| a.is_write() && a.resource() != "leases")
            .map(Audit::line)
            .collect();
    assert!(writes.is_empty(), "{writes:#?}");
    let after = r.c.get("statefulset", &format!("consumer-{G1}")).unwrap();
    assert_eq!(after["metadata"]["uid"], before["metadata"]["uid"]);
    assert_eq!(after["spec"], before["spec"]);

    // The StatefulSet's claim templates alone changed in place (a template edited): the
    // server's generic "updates to statefulset spec for fields other than" answer, with the
    // field named by snaproll.
    r.size = "1Gi".into();
    r.write_spec();
    let templates = r.c.tmp.path().join("templates");
    std::fs::create_dir_all(&templates).unwrap();
    let sts = std::fs::read_to_string(repo_path("templates/statefulset.yaml.j2")).unwrap();
    std::fs::write(
        templates.join("statefulset.yaml.j2"),
        sts.replace("volumeMode: {{ storage.volumeMode }}", "volumeMode: Block"),
    )
    .unwrap();
    let dir = templates.display().to_string();
    let mark = r.c.audit_mark();
    let out = r
        .snaproll(&["apply", "--generation", G1, "--templates", &dir])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    println!("StatefulSet claim template change: {stderr}");
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "StatefulSet/consumer-{G1} ({}): cannot change immutable field spec.volumeClaimTemplates[0].spec.volumeMode; roll a new generation",
            r.c.ns
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("updates to statefulset spec for fields other than"),
        "{stderr}"
    );
    let writes: Vec<String> =
        r.c.audit_since(mark)
            .iter()
            .filter(|a| a.is_write() && a.resource() != "leases")
            .map(Audit::line)
            .collect();
    assert!(writes.is_empty(), "{writes:#?}");
    std::fs::remove_file(templates.join("statefulset.yaml.j2")).unwrap();

    // The snapshot source changed in place (a template edited): the CRD's CEL rule refuses it.
    let snap = std::fs::read_to_string(repo_path("templates/volumesnapshot.yaml.j2")).unwrap();
    std::fs::write(
        templates.join("volumesnapshot.yaml.j2"),
        snap.replace("{{ names.pvc }}", "data-copy"),
    )
    .unwrap();
    let mark = r.c.audit_mark();
    let templates = templates.display().to_string();
    let out = r
        .snaproll(&["apply", "--generation", G1, "--templates", &templates])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    println!("snapshot source change: {stderr}");
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "VolumeSnapshot/data-{G1} ({}): cannot change immutable field spec.source.persistentVolumeClaimName",
            r.c.ns
        )),
        "{stderr}"
    );
    let writes: Vec<String> =
        r.c.audit_since(mark)
            .iter()
            .filter(|a| a.is_write() && a.resource() != "leases")
            .map(Audit::line)
            .collect();
    assert!(writes.is_empty(), "{writes:#?}");
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

/// The objects `snaproll install` renders for this rollout (`--pull` when `pull`), applied by
/// the harness's admin; returns the CronJob container's arguments, with the spec's in-cluster
/// path replaced by the local one, the ServiceAccount's name, and the Role's and ClusterRole's
/// rules (`Null` when not rendered).
fn install(r: &Rollout, repo: &str, pull: bool) -> (Vec<String>, String, Value, Value) {
    let mut cmd = snaproll();
    cmd.args(["install", "-f"])
        .arg(&r.spec)
        .args(["--repo", repo]);
    if pull {
        cmd.arg("--pull");
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut args = Vec::new();
    let mut account = String::new();
    let (mut role, mut cluster_role) = (Value::Null, Value::Null);
    for doc in text.split("\n---\n").filter(|d| !d.trim().is_empty()) {
        let v: Value = serde_saphyr::from_str(doc).unwrap();
        match v["kind"].as_str() {
            Some("CronJob") => {
                let c = &v["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
                args = c["args"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| {
                        let a = a.as_str().unwrap().to_string();
                        if a.ends_with("/snaproll.yaml") {
                            r.spec.display().to_string()
                        } else {
                            a
                        }
                    })
                    .collect();
            }
            Some("ServiceAccount") => {
                account = v["metadata"]["name"].as_str().unwrap().to_string();
            }
            Some("Role") => role = v["rules"].clone(),
            Some("ClusterRole") => cluster_role = v["rules"].clone(),
            _ => {}
        }
        r.c.apply_admin(&v);
    }
    (args, account, role, cluster_role)
}

/// One distinct authorization a run needed: verb, API group, resource, subresource, namespace
/// (empty: cluster scope), name.
type Need = (String, String, String, String, String, String);

/// What `user`'s successful requests (after its first `skip`) needed, from the audit log; a
/// server-side apply that created its object (201) needed `create` as well as `patch`.
fn needs(c: &Cluster, user: &str, skip: usize) -> std::collections::BTreeSet<Need> {
    let mut out = std::collections::BTreeSet::new();
    for a in c.plane.audit(user).into_iter().skip(skip) {
        // Dry-runs are authorized as the real requests are.
        if a.code() >= 400 {
            continue;
        }
        let o = &a.0["objectRef"];
        let field = |k: &str| o[k].as_str().unwrap_or_default().to_string();
        let need = |verb: &str| {
            (
                verb.to_string(),
                field("apiGroup"),
                field("resource"),
                field("subresource"),
                field("namespace"),
                field("name"),
            )
        };
        out.insert(need(a.verb()));
        if a.verb() == "patch" && a.code() == 201 {
            out.insert(need("create"));
        }
    }
    out
}

/// Whether the real authorizer allows `need` to `user` (`kubectl auth can-i --as`).
fn can(c: &Cluster, user: &str, need: &Need) -> bool {
    let (verb, group, resource, sub, ns, name) = need;
    let mut target = resource.clone();
    if !group.is_empty() {
        target = format!("{target}.{group}");
    }
    if !name.is_empty() {
        target = format!("{target}/{name}");
    }
    let mut cmd = c.plane.kubectl();
    cmd.args(["auth", "can-i", verb, &target, "--as", user]);
    if !sub.is_empty() {
        cmd.arg(format!("--subresource={sub}"));
    }
    if !ns.is_empty() {
        cmd.arg(format!("--namespace={ns}"));
    }
    cmd.output().unwrap().status.success()
}

/// For each rule of the Role and the ClusterRole, a copy without that rule, bound to a
/// ServiceAccount of its own, is denied at least one of the requests the CronJob's runs made:
/// every rule is needed. Asked of the real authorizer.
fn every_rule_is_needed(
    c: &Cluster,
    needs: &std::collections::BTreeSet<Need>,
    role: &Value,
    cluster_role: &Value,
) {
    let ns = &c.ns;
    let minus = format!("system:serviceaccount:{ns}:minus");
    c.apply_admin(&json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "minus", "namespace": ns}}));
    c.apply_admin(
        &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "minus", "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "minus"},
        "subjects": [{"kind": "ServiceAccount", "name": "minus", "namespace": ns}]}),
    );
    c.apply_admin(&json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": format!("minus-{ns}")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": format!("minus-{ns}")},
        "subjects": [{"kind": "ServiceAccount", "name": "minus", "namespace": ns}]}));
    let rules = |v: &Value| v.as_array().cloned().unwrap_or_default();
    let (role, cluster_role) = (rules(role), rules(cluster_role));
    let variants = (0..role.len())
        .map(|i| (true, i))
        .chain((0..cluster_role.len()).map(|i| (false, i)));
    for (in_role, i) in variants {
        let without = |rules: &[Value], skip: bool| -> Vec<Value> {
            rules
                .iter()
                .enumerate()
                .filter(|(j, _)| !(skip && *j == i))
                .map(|(_, r)| r.clone())
                .collect()
        };
        // kubectl apply replaces the rules list: an empty one is sent as such.
        c.kubectl_ok(&["delete", "role", "minus", "--ignore-not-found"]);
        c.kubectl_ok(&[
            "delete",
            "clusterrole",
            &format!("minus-{ns}"),
            "--ignore-not-found",
        ]);
        c.apply_admin(
            &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "minus", "namespace": ns}, "rules": without(&role, in_role)}),
        );
        c.apply_admin(&json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": format!("minus-{ns}")}, "rules": without(&cluster_role, !in_role)}));
        let removed = if in_role { &role[i] } else { &cluster_role[i] };
        let start = Instant::now();
        let denied = loop {
            // The authorizer's informers take a moment to see the new rules.
            std::thread::sleep(Duration::from_millis(300));
            let denied = needs.iter().find(|n| !can(c, &minus, n));
            if denied.is_some() || start.elapsed() > Duration::from_secs(5) {
                break denied;
            }
        };
        assert!(
            denied.is_some(),
            "the rule {removed} is not needed: every request of the runs is allowed without it"
        );
    }
}

/// A kubeconfig with a fresh token of `account` (TokenRequest, as a projected token in the
/// CronJob's Pod).
fn token_kubeconfig(c: &Cluster, account: &str, file: &str) -> PathBuf {
    let token = c.kubectl_ok(&["create", "token", account, "--duration=2h"]);
    let path = c.tmp.path().join(file);
    std::fs::write(
        &path,
        kubeconfig(&c.plane.url, &c.plane.ca, token.trim(), &c.ns),
    )
    .unwrap();
    path
}

/// Suite 5: least privilege proven by the real authorizer. The CronJob `install` renders runs
/// its exact command (Git pushed to a bare repository through a `file://` URL) with a token of
/// its ServiceAccount from day 1 to day 2: every run succeeds, creates included (server-side
/// apply creating an object is authorized as `patch` and `create`). Pull mode's read-only Role
/// suffices for its command too.
#[test]
fn least_privilege_cronjob_runs_with_its_service_account_token() {
    let Some(mut r) = Rollout::new("rbac") else {
        return;
    };
    let bare = r.c.tmp.path().join("remote.git");
    run_ok(
        Command::new("git")
            .args(["init", "--bare", "-q"])
            .arg(&bare),
    );
    let url = format!("file://{}", bare.display());
    let (args, account, role, cluster_role) = install(&r, &url, false);
    assert!(args.iter().any(|a| a == "--apply"), "{args:?}");
    r.kubeconfig = token_kubeconfig(&r.c, &account, "sa.kubeconfig");
    for (now, g) in [(D1, G1), (D2, G2)] {
        let run = r.settle_with(now, || {
            let mut a: Vec<&str> = args.iter().map(String::as_str).collect();
            a.extend(["--now", now]);
            r.checked(now, r.snaproll_run(&a))
        });
        assert_eq!(run.states(), [format!("{g} serving")], "{}", run.stdout);
    }
    // Every request the ServiceAccount made was allowed.
    let sa_user = format!("system:serviceaccount:{}:{account}", r.c.ns);
    let denied: Vec<String> =
        r.c.plane
            .audit(&sa_user)
            .iter()
            .filter(|a| a.code() == 403)
            .map(Audit::line)
            .collect();
    assert!(denied.is_empty(), "{denied:#?}");
    // And none of it is more than needed.
    let push_needs = needs(&r.c, &sa_user, 0);
    every_rule_is_needed(&r.c, &push_needs, &role, &cluster_role);

    // Pull mode: only commits (to a fresh remote) and reads the cluster.
    let bare = r.c.tmp.path().join("pull.git");
    run_ok(
        Command::new("git")
            .args(["init", "--bare", "-q"])
            .arg(&bare),
    );
    let url = format!("file://{}", bare.display());
    let (args, account, role, _) = install(&r, &url, true);
    let pull_user = format!("system:serviceaccount:{}:{account}", r.c.ns);
    let before = r.c.plane.audit(&pull_user).len();
    assert!(!args.iter().any(|a| a == "--apply"), "{args:?}");
    r.kubeconfig = token_kubeconfig(&r.c, &account, "pull.kubeconfig");
    let mut a: Vec<&str> = args.iter().map(String::as_str).collect();
    a.extend(["--now", D3]);
    let run = r.snaproll_run(&a);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    every_rule_is_needed(&r.c, &needs(&r.c, &pull_user, before), &role, &Value::Null);
}

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

// ---------------------------------------------------------------------------------------------
// Benchmark (ignored by default): 1,000 datasets against the real server, snaproll next to
// `kubectl apply --server-side --prune --applyset` of the same rendered folder.
//
//   cargo test --release --test it control_plane::bench -- --ignored --nocapture
//   (SNAPROLL_BENCH_DATASETS=N for another size)

/// A spec of `n` datasets in `ns` using an existing class (no cluster-scoped object: kubectl
/// refuses those in a namespaced ApplySet), consumers at 0 replicas (the StatefulSet controller
/// stays idle) except `changed`, at 1.
fn bench_spec(ns: &str, n: usize, changed: Option<usize>) -> String {
    let mut s = format!(
        "apiVersion: snaproll.dev/v1alpha1\nkind: DatasetRollout\nmetadata:\n  name: bench\n  namespace: {ns}\nspec:\n  snapshotClass:\n    name: bench-class\n    existing: true\n  datasets:\n"
    );
    for i in 0..n {
        let replicas = usize::from(Some(i) == changed);
        s.push_str(&format!(
            "    - name: ds-{i:04}\n      storage:\n        storageClassName: standard-rwo\n        size: 1Gi\n        accessModes: [ReadWriteOnce]\n      producer:\n        image: ubuntu:22.04\n        command: [\"/bin/sh\", \"-c\"]\n        args: [\"echo hi > /data/file.txt\"]\n        mountPath: /data\n      consumer:\n        name: ds-{i:04}-consumer\n        replicas: {replicas}\n        image: ubuntu:22.04\n        mountPath: /data\n        service:\n          type: Headless\n"
        ));
    }
    s
}

struct BenchRow {
    tool: &'static str,
    run: &'static str,
    secs: f64,
    requests: usize,
    writes: usize,
}

#[test]
#[ignore = "benchmark: 1,000 datasets against the real server, minutes; run with --ignored"]
fn bench_apply_against_the_real_server() {
    let n: usize = std::env::var("SNAPROLL_BENCH_DATASETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let Some(snap) = Cluster::new("bench-snaproll") else {
        return;
    };
    let Some(kube) = Cluster::new("bench-kubectl") else {
        return;
    };
    let mut rows = Vec::new();
    let mut measure = |c: &Cluster, tool: &'static str, run: &'static str, f: &dyn Fn()| {
        let mark = c.audit_mark();
        let start = Instant::now();
        f();
        let secs = start.elapsed().as_secs_f64();
        let reqs = c.audit_since(mark);
        rows.push(BenchRow {
            tool,
            run,
            secs,
            requests: reqs.len(),
            writes: reqs.iter().filter(|a| a.is_write()).count(),
        });
    };

    let spec = snap.tmp.path().join("snaproll.yaml");
    let snaproll_apply = || {
        let out = snaproll()
            .args(["apply", "--prune", "--generation", G1, "-f"])
            .arg(&spec)
            .arg("--kubeconfig")
            .arg(&snap.kubeconfig)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    };
    std::fs::write(&spec, bench_spec(&snap.ns, n, None)).unwrap();
    measure(&snap, "snaproll", "first apply", &snaproll_apply);
    measure(&snap, "snaproll", "no-op", &snaproll_apply);
    std::fs::write(&spec, bench_spec(&snap.ns, n, Some(0))).unwrap();
    measure(&snap, "snaproll", "one dataset changed", &snaproll_apply);

    // kubectl: the same folder rendered for its namespace, without the membership label
    // (kubectl sets it), pruned by its own ApplySet.
    let kspec = kube.tmp.path().join("snaproll.yaml");
    let folder = kube.tmp.path().join("folder.json");
    let render = |changed: Option<usize>| {
        std::fs::write(&kspec, bench_spec(&kube.ns, n, changed)).unwrap();
        let dir = kube.tmp.path().join("render");
        let out = snaproll()
            .args(["render", "--generation", G1, "-f"])
            .arg(&kspec)
            .arg("--out")
            .arg(&dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        // The files directly (one object each, in apply order by name): `kubectl kustomize`
        // takes minutes over 4,000 files.
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| !p.ends_with("kustomization.yaml"))
            .collect();
        files.sort();
        let mut items = Vec::new();
        for file in files {
            let mut v: Value =
                serde_saphyr::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
            if let Some(labels) = v["metadata"]["labels"].as_object_mut() {
                labels.remove("applyset.kubernetes.io/part-of");
            }
            items.push(v);
        }
        std::fs::write(
            &folder,
            json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string(),
        )
        .unwrap();
    };
    let kubectl_apply = || {
        let out = Command::new(kube.plane.kubectl_path())
            .arg(format!("--kubeconfig={}", kube.kubeconfig.display()))
            .arg(format!("--namespace={}", kube.ns))
            .env("KUBECTL_APPLYSET", "true")
            .args([
                "apply",
                "--server-side",
                "--prune",
                "--applyset=configmaps/kubectl-bench",
                "-f",
            ])
            .arg(&folder)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    render(None);
    measure(&kube, "kubectl", "first apply", &kubectl_apply);
    measure(&kube, "kubectl", "no-op", &kubectl_apply);
    render(Some(0));
    measure(&kube, "kubectl", "one dataset changed", &kubectl_apply);

    println!(
        "\n{n} datasets against kube-apiserver v1.34.4 (requests and writes from its audit log)\n"
    );
    println!("| tool | run | wall (s) | requests | writes |");
    println!("|---|---|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {:.1} | {} | {} |",
            r.tool, r.run, r.secs, r.requests, r.writes
        );
    }
}
