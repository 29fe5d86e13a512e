//! `reconcile` into Git: real repositories and bare remotes in temp dirs, checked with the `git`
//! CLI. Remote races use a real `git daemon` and `pre-receive` hooks (libgit2's local transport
//! runs no hooks), so the rejection is the one a real server sends.

mod fingerprint;
mod local;
mod partial;
mod races;
mod refusals;
mod remote;
mod speed;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

const SPEC_HEAD: &str = "apiVersion: snaproll.dev/v1alpha1
kind: DatasetRollout
metadata:
  name: demo
  namespace: default
spec:
  snapshotClass:
    name: csi-gce-pd-snapshot-class
    driver: pd.csi.storage.gke.io
    deletionPolicy: Delete
  datasets:
";

/// A spec with one dataset per `(name, replicas)`; each dataset's consumer is `<name>-reader`.
fn spec_text(datasets: &[(&str, u32)]) -> String {
    let mut s = SPEC_HEAD.to_string();
    for (name, replicas) in datasets {
        s.push_str(&format!(
            "    - name: {name}
      storage:
        storageClassName: standard-rwo
        size: 10Gi
        accessModes: [ReadWriteOnce]
      producer:
        image: ubuntu:22.04
        command: [\"/bin/sh\", \"-c\"]
        args: [\"echo hi > /data/file.txt\"]
        mountPath: /data
      consumer:
        name: {name}-reader
        replicas: {replicas}
        image: ubuntu:22.04
        command: [\"/bin/sh\", \"-c\"]
        args: [\"sleep infinity\"]
        mountPath: /data
"
        ));
    }
    s
}

/// HEAD, refs, index and status of a repository (see [`Env::state`]).
#[derive(Debug, PartialEq)]
struct RepoState {
    head: String,
    refs: String,
    index: String,
    status: String,
}

/// A temp dir with a spec file, a HOME without git config, and helpers.
struct Env {
    tmp: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let env = Env {
            tmp: tempfile::tempdir().unwrap(),
        };
        std::fs::create_dir_all(env.home()).unwrap();
        env
    }
    fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }
    fn home(&self) -> PathBuf {
        self.path("home")
    }
    fn spec(&self, datasets: &[(&str, u32)]) -> PathBuf {
        let p = self.path("snaproll.yaml");
        std::fs::write(&p, spec_text(datasets)).unwrap();
        p
    }
    /// `snaproll reconcile` with a fixed author and a clean git environment.
    fn reconcile(&self, repo: &str, extra: &[&str]) -> assert_cmd::Command {
        let mut cmd = snaproll();
        cmd.env("HOME", self.home())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env_remove("SNAPROLL_GIT_TOKEN")
            .args(["reconcile", "-f"])
            .arg(self.path("snaproll.yaml"))
            .args(["--repo", repo, "--generation", "2021-07-15"])
            .args([
                "--author-name",
                "Snap Bot",
                "--author-email",
                "bot@example.com",
            ])
            .args(extra);
        cmd
    }
    /// Runs the git CLI in `dir`, asserting success; returns stdout.
    fn git(&self, dir: &Path, args: &[&str]) -> String {
        let out = self.git_cmd(dir).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "git {args:?} in {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
    fn git_cmd(&self, dir: &Path) -> Command {
        let mut c = Command::new("git");
        c.current_dir(dir)
            .env("HOME", self.home())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_NAME", "Other Person")
            .env("GIT_AUTHOR_EMAIL", "other@example.com")
            .env("GIT_COMMITTER_NAME", "Other Person")
            .env("GIT_COMMITTER_EMAIL", "other@example.com");
        c
    }
    /// `git fsck --full` must be clean (dangling objects are fine: they are not corruption).
    fn fsck(&self, dir: &Path) {
        let out = self
            .git_cmd(dir)
            .args(["fsck", "--full", "--no-dangling"])
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && text.trim().is_empty(),
            "fsck {}: {text}",
            dir.display()
        );
    }
    /// What a refused run must leave exactly as it was: HEAD, every ref, and (with a working
    /// tree) the index and the working tree's status.
    fn state(&self, dir: &Path) -> RepoState {
        let bare = self.git(dir, &["rev-parse", "--is-bare-repository"]).trim() == "true";
        let head = self
            .git_cmd(dir)
            .args(["rev-parse", "--symbolic-full-name", "HEAD", "HEAD"])
            .output()
            .unwrap();
        RepoState {
            head: String::from_utf8_lossy(&head.stdout).into_owned(),
            refs: self.git(dir, &["for-each-ref", "--format=%(refname) %(objectname)"]),
            index: if bare {
                String::new()
            } else {
                self.git(dir, &["ls-files", "--stage"])
            },
            status: if bare {
                String::new()
            } else {
                self.git(dir, &["status", "--porcelain", "--untracked-files=all"])
            },
        }
    }
    /// Asserts that `dir` is exactly as `before` (HEAD, refs, index, status) and fsck-clean:
    /// the one check every refused run ends with.
    fn assert_untouched(&self, dir: &Path, before: &RepoState) {
        assert_eq!(&self.state(dir), before, "{} changed", dir.display());
        self.fsck(dir);
    }
    fn count(&self, dir: &Path, rev: &str) -> usize {
        self.git(dir, &["rev-list", "--count", rev])
            .trim()
            .parse()
            .unwrap()
    }
    fn files(&self, dir: &Path, rev: &str) -> Vec<String> {
        self.git(dir, &["ls-tree", "-r", "--name-only", rev])
            .lines()
            .map(str::to_string)
            .collect()
    }
    /// A repository with one commit holding README.md (outside any snaproll path).
    fn seeded_repo(&self, rel: &str) -> PathBuf {
        let dir = self.path(rel);
        std::fs::create_dir_all(&dir).unwrap();
        self.git(&dir, &["init", "-q", "-b", "main"]);
        std::fs::write(dir.join("README.md"), "hand-written\n").unwrap();
        self.git(&dir, &["add", "README.md"]);
        self.git(&dir, &["commit", "-q", "-m", "seed"]);
        dir
    }
    /// A bare repository seeded with README.md on main.
    fn seeded_bare(&self, rel: &str) -> PathBuf {
        let seed = self.seeded_repo(&format!("{rel}-seed"));
        let bare = self.path(rel);
        self.git(
            self.tmp.path(),
            &[
                "clone",
                "-q",
                "--bare",
                seed.to_str().unwrap(),
                bare.to_str().unwrap(),
            ],
        );
        bare
    }
    fn loose_objects(&self, dir: &Path) -> String {
        self.git(dir, &["count-objects"])
    }
}

fn stdout(a: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&a.get_output().stdout).to_string()
}

fn stderr(a: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&a.get_output().stderr).to_string()
}

/// Replaces commit ids (7 or 40 hex digits) for snapshots.
fn scrub_shas(text: &str) -> String {
    let mut out = String::new();
    for word in text.split_inclusive(|c: char| !c.is_ascii_hexdigit()) {
        let hex = word.trim_end_matches(|c: char| !c.is_ascii_hexdigit());
        // Any 7- or 40-digit lowercase hex word: a commit id may have no decimal digit.
        if (hex.len() == 7 || hex.len() == 40) && !hex.chars().any(|c| c.is_ascii_uppercase()) {
            out.push_str("[SHA]");
            out.push_str(&word[hex.len()..]);
        } else {
            out.push_str(word);
        }
    }
    out
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A `git daemon` serving the bare repositories under `base` with push enabled, on a free
/// loopback port. Killed on drop.
struct Daemon {
    child: Child,
    port: u16,
}

impl Daemon {
    fn start(env: &Env, base: &Path) -> Daemon {
        Daemon::start_logged(env, base, None)
    }
    /// With `log`, the daemon runs `--verbose` and writes one line per request there.
    fn start_logged(env: &Env, base: &Path, log: Option<&Path>) -> Daemon {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = env
            .git_cmd(base)
            .args([
                "daemon",
                "--reuseaddr",
                "--export-all",
                "--enable=receive-pack",
                "--listen=127.0.0.1",
            ])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base.display()))
            .args(log.map(|_| "--verbose"))
            .arg(base)
            .stdout(Stdio::null())
            .stderr(match log {
                Some(p) => Stdio::from(std::fs::File::create(p).unwrap()),
                None => Stdio::null(),
            })
            .spawn()
            .expect("git daemon");
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "git daemon did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Daemon { child, port }
    }
    fn url(&self, name: &str) -> String {
        format!("git://127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Installs a `pre-receive` hook in `bare` that, when `$marker` is absent (or always, when
/// `every_time`), lands another commit on main from a separate clone before the push it is
/// checking completes: the remote moves between snaproll's fetch and its ref update.
fn install_racing_hook(env: &Env, bare: &Path, every_time: bool) {
    let helper = env.path("racer");
    env.git(
        env.tmp.path(),
        &[
            "clone",
            "-q",
            bare.to_str().unwrap(),
            helper.to_str().unwrap(),
        ],
    );
    let marker = env.path("raced");
    let once = if every_time {
        String::new()
    } else {
        format!(
            "[ -e '{m}' ] && exit 0\ntouch '{m}'\n",
            m = marker.display()
        )
    };
    let hook = format!(
        "#!/bin/sh
[ -n \"$SNAPROLL_TEST_NESTED\" ] && exit 0
{once}for v in $(env | sed -n 's/^\\(GIT_[A-Za-z_]*\\)=.*/\\1/p'); do unset $v; done
export GIT_AUTHOR_NAME='Other Person' GIT_AUTHOR_EMAIL=other@example.com
export GIT_COMMITTER_NAME='Other Person' GIT_COMMITTER_EMAIL=other@example.com
cd '{helper}' || exit 1
git fetch -q origin && git reset -q --hard origin/main || exit 1
date +%s%N >> other.txt
git add other.txt && git commit -q -m 'other change' || exit 1
SNAPROLL_TEST_NESTED=1 git push -q origin HEAD:main || exit 1
exit 0
",
        helper = helper.display()
    );
    write_hook(bare, &hook);
}

fn write_hook(bare: &Path, script: &str) {
    use std::os::unix::fs::PermissionsExt;
    let path = bare.join("hooks/pre-receive");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Library helpers for the race tests: a request for `files` (name, content) under
/// `rollouts/demo`, and a destination with no pause between push attempts.
fn lib_files(files: &[(&str, &str)]) -> Vec<snaproll::gitops::File> {
    files
        .iter()
        .map(|(p, c)| snaproll::gitops::File {
            path: p.to_string(),
            content: c.as_bytes().to_vec(),
            objects: vec![],
        })
        .collect()
}

fn lib_req(files: &[snaproll::gitops::File]) -> snaproll::gitops::Request<'_> {
    snaproll::gitops::Request {
        files,
        rollout: "demo",
        generation: "g",
        author_name: Some("Lib"),
        author_email: Some("lib@example.com"),
        describe_removed: None,
        fingerprint: None,
        fingerprint_check: None,
        scope: None,
    }
}

fn lib_dest(repo: &str) -> snaproll::gitops::Destination {
    let mut d = snaproll::gitops::Destination::new(repo, "rollouts/demo");
    d.retry_delay = Duration::from_millis(1);
    d
}

/// `n` distinct YAML-ish files plus a nested one, as (name, content).
fn many_files(n: usize, changed: Option<usize>) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = (0..n)
        .map(|i| {
            let v = if Some(i) == changed { "changed" } else { "v1" };
            (
                format!("{i:03}-configmap-c{i}.yaml"),
                format!("kind: ConfigMap\nmetadata:\n  name: c{i}\ndata:\n  v: {v}\n"),
            )
        })
        .collect();
    files.push(("sub/nested.yaml".into(), "nested: true\n".into()));
    files.push(("kustomization.yaml".into(), "resources: []\n".into()));
    files
}
