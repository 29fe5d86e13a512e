//! Starting the control plane and the admin identities, token and audit log it serves.

use super::*;

impl Plane {
    pub(super) fn start(bin: PathBuf) -> Plane {
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
    pub(super) fn apiserver_command(
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
    pub(super) fn wait_ready(&self, log: &Path, timeout: Duration) {
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
