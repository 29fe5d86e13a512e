//! `reconcile` into Git: real repositories and bare remotes in temp dirs, checked with the `git`
//! CLI. Remote races use a real `git daemon` and `pre-receive` hooks (libgit2's local transport
//! runs no hooks), so the rejection is the one a real server sends.

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

#[test]
fn two_identical_runs_make_exactly_one_commit_and_write_nothing_the_second_time() {
    let env = Env::new();
    env.spec(&[("data", 3)]);
    let repo = env.path("gitops");
    let first = env
        .reconcile(repo.to_str().unwrap(), &[])
        .assert()
        .success();
    insta::assert_snapshot!("first_commit_output", scrub_shas(&stdout(&first)));
    let objects = env.loose_objects(&repo);
    let second = env
        .reconcile(repo.to_str().unwrap(), &[])
        .assert()
        .success();
    assert!(
        stdout(&second).starts_with("no changes: rollouts/demo is up to date at "),
        "{}",
        stdout(&second)
    );
    assert_eq!(env.count(&repo, "HEAD"), 1);
    assert_eq!(
        env.loose_objects(&repo),
        objects,
        "a no-op run wrote objects"
    );
    // The first commit of an unborn branch has no parent, and the working tree matches it.
    assert_eq!(
        env.git(&repo, &["rev-list", "--max-parents=0", "HEAD"])
            .lines()
            .count(),
        1
    );
    assert_eq!(env.git(&repo, &["status", "--porcelain"]), "");
    assert_eq!(
        env.git(&repo, &["log", "-1", "--format=%an <%ae>|%cn <%ce>"])
            .trim(),
        "Snap Bot <bot@example.com>|Snap Bot <bot@example.com>"
    );
    env.fsck(&repo);
}

#[test]
fn spec_change_makes_one_commit_whose_message_lists_the_changed_objects() {
    let env = Env::new();
    env.spec(&[("data", 3)]);
    let repo = env.path("gitops");
    let r = repo.to_str().unwrap();
    env.reconcile(r, &[]).assert().success();
    env.spec(&[("data", 5)]);
    let out = env.reconcile(r, &[]).assert().success();
    assert!(
        stdout(&out).contains("snaproll: demo 2021-07-15: 0 added, 1 changed, 0 removed"),
        "{}",
        stdout(&out)
    );
    assert_eq!(env.count(&repo, "HEAD"), 2);
    let message = env.git(&repo, &["log", "-1", "--format=%B"]);
    insta::assert_snapshot!("changed_commit_message", message);
    assert_eq!(env.git(&repo, &["status", "--porcelain"]), "");
    env.fsck(&repo);
}

#[test]
fn removed_dataset_removes_its_files_from_branch_and_working_tree() {
    let env = Env::new();
    env.spec(&[("data", 1), ("logs", 1)]);
    let repo = env.path("gitops");
    let r = repo.to_str().unwrap();
    env.reconcile(r, &[]).assert().success();
    assert!(
        env.files(&repo, "HEAD")
            .iter()
            .any(|f| f.contains("logs-reader"))
    );
    env.spec(&[("data", 1)]);
    // Offline, a removed dataset's StatefulSet leaves Git first (its body names it), the other
    // four files a run later (see docs/operations.md, offline mode).
    let out = env.reconcile(r, &[]).assert().success();
    assert!(
        stdout(&out).contains("0 added, 0 changed, 1 removed"),
        "{}",
        stdout(&out)
    );
    let body = env.git(&repo, &["log", "-1", "--format=%b"]);
    assert!(
        body.contains("- StatefulSet/logs-reader-2021-07-15 (default)"),
        "{body}"
    );
    let out = env.reconcile(r, &[]).assert().success();
    assert!(
        stdout(&out).contains("0 added, 0 changed, 4 removed"),
        "{}",
        stdout(&out)
    );
    let files = env.files(&repo, "HEAD");
    assert!(files.iter().all(|f| !f.contains("logs")), "{files:?}");
    assert!(files.iter().any(|f| f.contains("data-reader")), "{files:?}");
    assert!(
        !repo
            .join("rollouts/demo/60-statefulset-logs-reader-2021-07-15.yaml")
            .exists()
    );
    assert_eq!(env.git(&repo, &["status", "--porcelain"]), "");
    env.fsck(&repo);
}

#[test]
fn files_outside_the_path_survive_every_run() {
    let env = Env::new();
    let repo = env.seeded_repo("gitops");
    let r = repo.to_str().unwrap();
    std::fs::write(repo.join("untracked-notes.txt"), "mine\n").unwrap();
    for replicas in [1, 2, 2, 3] {
        env.spec(&[("data", replicas)]);
        env.reconcile(r, &[]).assert().success();
        assert!(env.files(&repo, "HEAD").contains(&"README.md".to_string()));
        assert_eq!(
            std::fs::read_to_string(repo.join("README.md")).unwrap(),
            "hand-written\n"
        );
        assert_eq!(
            std::fs::read_to_string(repo.join("untracked-notes.txt")).unwrap(),
            "mine\n"
        );
    }
    assert_eq!(env.count(&repo, "HEAD"), 4, "seed + three changes");
    assert_eq!(
        env.git(&repo, &["status", "--porcelain"]),
        "?? untracked-notes.txt\n"
    );
    env.fsck(&repo);
}

#[test]
fn local_bare_repo_is_committed_to_without_a_working_tree() {
    let env = Env::new();
    env.spec(&[("data", 1)]);
    let bare = env.seeded_bare("bare.git");
    let r = bare.to_str().unwrap();
    env.reconcile(r, &["--path", "clusters/prod/demo"])
        .assert()
        .success();
    env.reconcile(r, &["--path", "clusters/prod/demo"])
        .assert()
        .success();
    assert_eq!(env.count(&bare, "main"), 2);
    let files = env.files(&bare, "main");
    assert!(files.contains(&"README.md".to_string()));
    assert!(files.contains(&"clusters/prod/demo/kustomization.yaml".to_string()));
    env.fsck(&bare);
}

#[test]
fn url_remote_is_cloned_committed_and_pushed_then_a_rerun_is_a_no_op() {
    let env = Env::new();
    env.spec(&[("data", 1)]);
    let bare = env.seeded_bare("remote.git");
    let url = format!("file://{}", bare.display());
    let workdir = env.path("work");
    let out = env
        .reconcile(&url, &["--workdir", workdir.to_str().unwrap()])
        .assert()
        .success();
    assert!(
        stdout(&out).contains("and pushed to main"),
        "{}",
        stdout(&out)
    );
    assert_eq!(env.count(&bare, "main"), 2);
    assert!(
        env.files(&bare, "main")
            .contains(&"rollouts/demo/kustomization.yaml".to_string())
    );
    // A second run (reusing the work directory) and one in a fresh temp dir change nothing.
    let again = env
        .reconcile(&url, &["--workdir", workdir.to_str().unwrap()])
        .assert()
        .success();
    assert!(
        stdout(&again).starts_with("no changes"),
        "{}",
        stdout(&again)
    );
    let json = env.reconcile(&url, &["-o", "json"]).assert().success();
    let v: serde_json::Value = serde_json::from_str(&stdout(&json)).unwrap();
    assert_eq!(v["commit"], serde_json::Value::Null);
    assert_eq!(v["pushed"], false);
    assert_eq!(env.count(&bare, "main"), 2);
    env.fsck(&bare);
    env.fsck(&workdir);
}

#[test]
fn url_clone_into_a_temp_dir_is_cleaned_up() {
    let env = Env::new();
    env.spec(&[("data", 1)]);
    let bare = env.seeded_bare("remote.git");
    let tmpdir = env.path("tmp");
    std::fs::create_dir_all(&tmpdir).unwrap();
    env.reconcile(&format!("file://{}", bare.display()), &[])
        .env("TMPDIR", &tmpdir)
        .assert()
        .success();
    assert_eq!(
        std::fs::read_dir(&tmpdir).unwrap().count(),
        0,
        "clone left behind"
    );
    assert_eq!(env.count(&bare, "main"), 2);
    env.fsck(&bare);
}

#[test]
fn push_race_on_the_remote_is_rebuilt_retried_and_keeps_both_changes() {
    let env = Env::new();
    env.spec(&[("data", 1)]);
    let base = env.path("srv");
    std::fs::create_dir_all(&base).unwrap();
    let bare = base.join("remote.git");
    let seeded = env.seeded_bare("srv/remote.git");
    assert_eq!(seeded, bare);
    install_racing_hook(&env, &bare, false);
    let daemon = Daemon::start(&env, &base);
    let out = env
        .reconcile(&daemon.url("remote.git"), &["-o", "json"])
        .assert()
        .success();
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["pushed"], true);
    assert_eq!(v["pushAttempts"], 2, "{v}");
    let log = env.git(&bare, &["log", "--format=%s", "main"]);
    assert_eq!(
        log.lines().collect::<Vec<_>>(),
        [
            "snaproll: demo 2021-07-15: 6 added, 0 changed, 0 removed",
            "other change",
            "seed"
        ],
        "{log}"
    );
    assert!(env.files(&bare, "main").contains(&"other.txt".to_string()));
    env.fsck(&bare);
}

#[test]
fn remote_that_keeps_moving_fails_after_bounded_retries_and_nothing_is_lost_locally() {
    let env = Env::new();
    env.spec(&[("data", 1)]);
    let base = env.path("srv");
    let bare = env.seeded_bare("srv/remote.git");
    install_racing_hook(&env, &bare, true);
    let daemon = Daemon::start(&env, &base);
    let local = env.path("local");
    env.git(
        env.tmp.path(),
        &[
            "clone",
            "-q",
            &daemon.url("remote.git"),
            local.to_str().unwrap(),
        ],
    );
    let started = Instant::now();
    let out = env
        .reconcile(local.to_str().unwrap(), &["--push", "--push-retries", "2"])
        .assert()
        .code(3);
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("rejected after 3 attempt(s)"), "{err}");
    assert!(
        err.ends_with("and the next run pushes it\n")
            && err.contains("; the commit stays on the local branch ("),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    // Nothing lost: the local branch holds the (rebuilt) snaproll commit on top of the remote's
    // changes, and the working tree follows it.
    let subject = env.git(&local, &["log", "-1", "--format=%s"]);
    assert!(
        subject.starts_with("snaproll: demo 2021-07-15"),
        "{subject}"
    );
    assert!(
        env.files(&local, "HEAD")
            .contains(&"rollouts/demo/kustomization.yaml".to_string())
    );
    assert!(env.files(&local, "HEAD").contains(&"other.txt".to_string()));
    assert_eq!(env.git(&local, &["status", "--porcelain"]), "");
    assert!(
        !env.files(&bare, "main")
            .iter()
            .any(|f| f.starts_with("rollouts/"))
    );
    env.fsck(&local);
    env.fsck(&bare);
}

#[test]
fn remote_that_declines_the_push_fails_at_once_with_exit_3() {
    let env = Env::new();
    env.spec(&[("data", 1)]);
    let base = env.path("srv");
    let bare = env.seeded_bare("srv/remote.git");
    write_hook(&bare, "#!/bin/sh\necho 'protected branch' >&2\nexit 1\n");
    let daemon = Daemon::start(&env, &base);
    let out = env
        .reconcile(&daemon.url("remote.git"), &[])
        .assert()
        .code(3);
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("rejected after 1 attempt(s)"), "{err}");
    assert_eq!(env.count(&bare, "main"), 1);
    env.fsck(&bare);
}

#[test]
fn dirty_working_tree_inside_path_is_refused_and_nothing_is_committed() {
    let env = Env::new();
    env.spec(&[("data", 1)]);
    let repo = env.path("gitops");
    let r = repo.to_str().unwrap();
    env.reconcile(r, &[]).assert().success();
    let edited = repo.join("rollouts/demo/50-service-consumer.yaml");
    let edited = if edited.exists() {
        edited
    } else {
        repo.join("rollouts/demo/kustomization.yaml")
    };
    std::fs::write(&edited, "hand edit\n").unwrap();
    env.spec(&[("data", 2)]);
    let out = env.reconcile(r, &[]).assert().code(3);
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("uncommitted changes under rollouts/demo"),
        "{err}"
    );
    assert_eq!(env.count(&repo, "HEAD"), 1);
    assert_eq!(std::fs::read_to_string(&edited).unwrap(), "hand edit\n");
    // An untracked file in the path is refused as well.
    env.git(&repo, &["checkout", "--", "."]);
    std::fs::write(repo.join("rollouts/demo/extra.yaml"), "x: 1\n").unwrap();
    env.reconcile(r, &[]).assert().code(3);
    assert_eq!(env.count(&repo, "HEAD"), 1);
    env.fsck(&repo);
}

#[test]
fn missing_branch_in_an_existing_repo_is_an_error() {
    let env = Env::new();
    env.spec(&[("data", 1)]);
    let repo = env.seeded_repo("gitops");
    let out = env
        .reconcile(repo.to_str().unwrap(), &["--branch", "deploy"])
        .assert()
        .code(3);
    insta::assert_snapshot!("missing_branch", scrub(&stderr(&out), env.tmp.path()));
    assert_eq!(env.count(&repo, "--all"), 1);
    env.fsck(&repo);
}

#[test]
fn new_repo_is_created_on_the_named_branch() {
    let env = Env::new();
    env.spec(&[("data", 1)]);
    let repo = env.path("a/b/gitops");
    env.reconcile(repo.to_str().unwrap(), &["--branch", "deploy"])
        .assert()
        .success();
    assert_eq!(
        env.git(&repo, &["symbolic-ref", "HEAD"]).trim(),
        "refs/heads/deploy"
    );
    assert_eq!(env.count(&repo, "deploy"), 1);
    env.fsck(&repo);
}

#[test]
fn repo_path_that_cannot_be_created_is_a_one_line_git_error() {
    let env = Env::new();
    env.spec(&[("data", 1)]);
    // A regular file where a parent directory should be: fails for root as well.
    std::fs::write(env.path("plain-file"), "x").unwrap();
    let out = env
        .reconcile(env.path("plain-file/gitops").to_str().unwrap(), &[])
        .assert()
        .code(3);
    insta::assert_snapshot!("path_under_a_file", scrub(&stderr(&out), env.tmp.path()));
}

/// A parent directory that refuses new entries: for a normal user a 0555 directory, for root
/// (who ignores permission bits) sysfs, which refuses `mkdir` to root too. Either way the
/// error is the permission error itself, in one line, and nothing is created.
#[test]
fn directory_that_refuses_new_entries_is_a_one_line_permission_error() {
    let env = Env::new();
    env.spec(&[("data", 1)]);
    let (target, expected) = if is_root() {
        (
            PathBuf::from("/sys/snaproll-test/gitops"),
            // sysfs: EPERM; a read-only /sys mount (containers): EROFS.
            vec![
                "Operation not permitted (os error 1)",
                "Read-only file system (os error 30)",
            ],
        )
    } else {
        use std::os::unix::fs::PermissionsExt;
        let ro = env.path("ro");
        std::fs::create_dir_all(&ro).unwrap();
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
        (ro.join("gitops"), vec!["Permission denied (os error 13)"])
    };
    let out = env
        .reconcile(target.to_str().unwrap(), &[])
        .assert()
        .code(3);
    let err = stderr(&out);
    assert!(
        expected.iter().any(|cause| err
            == format!(
                "error: reconcile of rollout demo: cannot create repository {}: {cause}\n",
                target.display()
            )),
        "{err}"
    );
    assert!(!target.exists());
}

#[test]
fn existing_directory_that_is_not_a_repo_is_refused() {
    let env = Env::new();
    env.spec(&[("data", 1)]);
    let dir = env.path("notes");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a.txt"), "x").unwrap();
    let out = env.reconcile(dir.to_str().unwrap(), &[]).assert().code(3);
    insta::assert_snapshot!("not_a_repo", scrub(&stderr(&out), env.tmp.path()));
    assert!(!dir.join(".git").exists());
}

#[test]
fn unreachable_urls_are_one_line_git_errors() {
    let env = Env::new();
    env.spec(&[("data", 1)]);
    for url in ["file:///nonexistent/x.git", "http://127.0.0.1:1/x.git"] {
        let out = env.reconcile(url, &[]).assert().code(3);
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("cannot fetch from"), "{err}");
    }
}

#[test]
fn credentials_never_appear_in_errors() {
    let env = Env::new();
    env.spec(&[("data", 1)]);
    let out = env
        .reconcile("http://bot:hunter2secret@127.0.0.1:1/x.git", &[])
        .env("SNAPROLL_GIT_TOKEN", "tok-abcdef")
        .env("SNAPROLL_LOG", "debug")
        .assert()
        .code(3);
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        !all.contains("hunter2secret") && !all.contains("tok-abcdef"),
        "{all}"
    );
    assert!(all.contains("http://127.0.0.1:1/x.git"), "{all}");
}

#[test]
fn invalid_path_is_invalid_input() {
    let env = Env::new();
    env.spec(&[("data", 1)]);
    let repo = env.path("gitops");
    let out = env
        .reconcile(repo.to_str().unwrap(), &["--path", "../escape"])
        .assert()
        .code(2);
    assert!(
        stderr(&out).contains("--path `../escape`"),
        "{}",
        stderr(&out)
    );
    assert!(!repo.exists(), "nothing may be created for invalid input");
}

#[test]
fn dry_run_shows_a_file_diff_and_writes_nothing() {
    let env = Env::new();
    env.spec(&[("data", 1)]);
    let repo = env.path("gitops");
    let r = repo.to_str().unwrap();
    // A missing repository is not created by a dry run.
    env.reconcile(r, &["--dry-run"]).assert().success();
    assert!(!repo.exists());
    env.reconcile(r, &[]).assert().success();
    env.spec(&[("data", 4)]);
    let objects = env.loose_objects(&repo);
    let out = env.reconcile(r, &["--dry-run"]).assert().success();
    insta::assert_snapshot!("dry_run_diff", scrub_shas(&stdout(&out)));
    assert_eq!(env.count(&repo, "HEAD"), 1);
    assert_eq!(env.loose_objects(&repo), objects);
    env.fsck(&repo);
}

#[test]
fn author_falls_back_to_env_then_git_config_then_snaproll() {
    let env = Env::new();
    env.spec(&[("data", 1)]);
    let author = |repo: &Path| env.git(repo, &["log", "-1", "--format=%an <%ae>"]);
    let run = |rel: &str| {
        let repo = env.path(rel);
        let mut cmd = snaproll();
        cmd.env("HOME", env.home())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .args(["reconcile", "-f"])
            .arg(env.path("snaproll.yaml"))
            .args(["--repo", repo.to_str().unwrap()]);
        (repo, cmd)
    };
    let (repo, mut cmd) = run("fallback");
    cmd.assert().success();
    assert_eq!(author(&repo).trim(), "snaproll <snaproll@localhost>");
    let (repo, mut cmd) = run("from-env");
    cmd.env("SNAPROLL_GIT_AUTHOR_NAME", "Env Bot")
        .env("SNAPROLL_GIT_AUTHOR_EMAIL", "env@example.com")
        .assert()
        .success();
    assert_eq!(author(&repo).trim(), "Env Bot <env@example.com>");
    let (repo, mut cmd) = run("from-config");
    std::fs::create_dir_all(&repo).unwrap();
    env.git(&repo, &["init", "-q", "-b", "main"]);
    env.git(&repo, &["config", "user.name", "Config Bot"]);
    env.git(&repo, &["config", "user.email", "config@example.com"]);
    cmd.assert().success();
    assert_eq!(author(&repo).trim(), "Config Bot <config@example.com>");
    for rel in ["fallback", "from-env", "from-config"] {
        env.fsck(&env.path(rel));
    }
}

#[test]
fn empty_remote_gets_a_first_commit_without_parent_on_main() {
    let env = Env::new();
    env.spec(&[("data", 1)]);
    let bare = env.path("empty.git");
    env.git(
        env.tmp.path(),
        &["init", "-q", "--bare", "-b", "main", bare.to_str().unwrap()],
    );
    env.reconcile(&format!("file://{}", bare.display()), &[])
        .assert()
        .success();
    assert_eq!(env.count(&bare, "refs/heads/main"), 1);
    assert_eq!(
        env.git(&bare, &["rev-list", "--max-parents=0", "refs/heads/main"])
            .lines()
            .count(),
        1
    );
    env.fsck(&bare);
}

/// The library API the rollout state machine calls: nested files, and an empty file set
/// removing the folder while the rest of the repository stays.
#[test]
fn library_publish_handles_nested_files_and_an_emptied_folder() {
    use snaproll::gitops::{self, ChangeKind, Destination, File, Request};
    let env = Env::new();
    let repo = env.seeded_repo("lib");
    let file = |path: &str, content: &str| File {
        path: path.to_string(),
        content: content.as_bytes().to_vec(),
        objects: vec![format!("Thing/{path}")],
    };
    let files = vec![file("a.yaml", "a: 1\n"), file("sub/b.yaml", "b: 2\n")];
    fn req(files: &[File]) -> Request<'_> {
        Request {
            files,
            rollout: "demo",
            generation: "g1",
            author_name: Some("Lib"),
            author_email: Some("lib@example.com"),
            describe_removed: None,
            fingerprint: None,
        }
    }
    let dest = Destination::new(repo.to_str().unwrap(), "deploy/demo/");
    let out = gitops::publish(&dest, &req(&files)).unwrap();
    assert!(out.commit.is_some());
    assert_eq!(out.count(ChangeKind::Added), 2);
    assert_eq!(
        out.summary,
        "snaproll: demo g1: 2 added, 0 changed, 0 removed"
    );
    assert_eq!(
        std::fs::read_to_string(repo.join("deploy/demo/sub/b.yaml")).unwrap(),
        "b: 2\n"
    );
    // Preview of the same content: nothing to do.
    let preview = gitops::preview(&dest, &req(&files)).unwrap();
    assert!(preview.changes.is_empty());
    // An empty set removes the folder (and its parents that became empty).
    let out = gitops::publish(&dest, &req(&[])).unwrap();
    assert_eq!(out.count(ChangeKind::Removed), 2);
    assert_eq!(env.files(&repo, "HEAD"), ["README.md"]);
    assert!(!repo.join("deploy").exists());
    assert_eq!(env.git(&repo, &["status", "--porcelain"]), "");
    env.fsck(&repo);
}

/// A file the commit must write cannot be written (here an ignored file sits where the folder
/// goes, which stops root as well): refused before the branch moves, so branch, index and
/// working tree stay as they were and the next run, once the obstacle is gone, just works.
#[test]
fn unwritable_working_tree_is_refused_before_the_branch_moves() {
    let env = Env::new();
    env.spec(&[("data", 1)]);
    let repo = env.seeded_repo("gitops");
    let r = repo.to_str().unwrap();
    std::fs::write(repo.join(".gitignore"), "/rollouts/demo\n").unwrap();
    env.git(&repo, &["add", ".gitignore"]);
    env.git(&repo, &["commit", "-q", "-m", "ignore"]);
    std::fs::create_dir_all(repo.join("rollouts")).unwrap();
    std::fs::write(repo.join("rollouts/demo"), "in the way\n").unwrap();
    let head = env.git(&repo, &["rev-parse", "HEAD"]);
    let out = env.reconcile(r, &[]).assert().code(3);
    assert_eq!(
        scrub(&stderr(&out), env.tmp.path()),
        "error: reconcile of rollout demo: [TMP]/gitops: cannot write \
         rollouts/demo/10-volumesnapshotclass-csi-gce-pd-snapshot-class.yaml in the working tree, \
         so nothing was committed: rollouts/demo is a file, not a folder (an ignored file?); \
         move it away\n"
    );
    assert_eq!(env.git(&repo, &["rev-parse", "HEAD"]), head);
    assert_eq!(env.git(&repo, &["status", "--porcelain"]), "");
    assert_eq!(env.git(&repo, &["diff", "--cached", "--name-only"]), "");
    assert_eq!(
        std::fs::read_to_string(repo.join("rollouts/demo")).unwrap(),
        "in the way\n"
    );
    env.fsck(&repo);
    // Without the obstacle the same run commits, and index and working tree follow.
    std::fs::remove_file(repo.join("rollouts/demo")).unwrap();
    env.reconcile(r, &[]).assert().success();
    assert_eq!(env.count(&repo, "HEAD"), 3);
    assert_eq!(env.git(&repo, &["status", "--porcelain"]), "");
    env.fsck(&repo);
}

/// `--path` and `--branch` are checked before anything is opened: against an existing
/// repository and a URL (unreachable, so any connection attempt would be exit 3) they are
/// invalid input (exit 2) and nothing is written.
#[test]
fn invalid_path_and_branch_are_exit_2_before_an_existing_repo_or_url_is_opened() {
    let env = Env::new();
    env.spec(&[("data", 1)]);
    let repo = env.seeded_repo("gitops");
    let url = "http://127.0.0.1:1/x.git";
    for target in [repo.to_str().unwrap(), url] {
        let out = env
            .reconcile(target, &["--offline", "--path", "../escape"])
            .assert()
            .code(2);
        assert_eq!(
            stderr(&out),
            "error: reconcile of rollout demo: --path `../escape`: contains `..`; use a relative folder like rollouts/NAME\n"
        );
        let out = env
            .reconcile(target, &["--offline", "--branch", "bad..name"])
            .assert()
            .code(2);
        assert_eq!(
            stderr(&out),
            "error: reconcile of rollout demo: --branch `bad..name`: not a valid branch name\n"
        );
    }
    assert_eq!(env.count(&repo, "--all"), 1);
    assert_eq!(env.git(&repo, &["status", "--porcelain"]), "");
    env.fsck(&repo);
}

/// One run opens the remote once: the offline read and the commit share one clone, so the run
/// decides on the same remote head it commits onto. Counted on the server: the clone's ref
/// listing and fetch (2 upload-pack requests) and the push (1 receive-pack); a no-op re-run
/// lists and fetches only.
#[test]
fn url_run_clones_once_for_read_and_commit() {
    let env = Env::new();
    env.spec(&[("data", 1)]);
    let base = env.path("srv");
    let bare = env.seeded_bare("srv/remote.git");
    let log = env.path("daemon.log");
    let daemon = Daemon::start_logged(&env, &base, Some(&log));
    let requests = || {
        let text = std::fs::read_to_string(&log).unwrap();
        (
            text.matches("Request upload-pack").count(),
            text.matches("Request receive-pack").count(),
        )
    };
    env.reconcile(&daemon.url("remote.git"), &["--offline"])
        .assert()
        .success();
    assert_eq!(requests(), (2, 1));
    env.reconcile(&daemon.url("remote.git"), &["--offline"])
        .assert()
        .success();
    assert_eq!(requests(), (4, 1));
    assert_eq!(env.count(&bare, "main"), 2);
    env.fsck(&bare);
}

/// Only the secret leaves a message: a token in the URL and a user name that is not a secret
/// (`git@`) come out as the URL without the token and the URL unchanged, with no `***` inside
/// other words; the clone kept in --workdir stores the URL without the token (the credentials
/// callback supplies it).
#[test]
fn url_secrets_are_scrubbed_exactly_and_never_stored_in_the_workdir() {
    let env = Env::new();
    env.spec(&[("data", 1)]);
    let workdir = env.path("work");
    let out = env
        .reconcile(
            "https://bot:s3cr3t@127.0.0.1:1/repo.git",
            &["--offline", "--workdir", workdir.to_str().unwrap()],
        )
        .assert()
        .code(3);
    assert_eq!(
        stderr(&out),
        "error: reconcile of rollout demo: cannot fetch from https://127.0.0.1:1/repo.git: \
         failed to connect to 127.0.0.1: Connection refused\n"
    );
    let config = std::fs::read_to_string(workdir.join("config")).unwrap();
    assert!(!config.contains("s3cr3t"), "{config}");
    assert!(
        config.contains("url = https://127.0.0.1:1/repo.git\n"),
        "{config}"
    );
    let out = env
        .reconcile("ssh://git@127.0.0.1:1/x.git", &["--offline"])
        .assert()
        .code(3);
    let err = stderr(&out);
    assert!(
        err.starts_with(
            "error: reconcile of rollout demo: cannot fetch from ssh://git@127.0.0.1:1/x.git: "
        ),
        "{err}"
    );
    assert!(!err.contains("***"), "{err}");
}

/// A rejected push in URL mode says what really happens to the commit: without --workdir the
/// temporary clone is removed; with --workdir the next run resets the clone to the remote.
#[test]
fn rejected_push_in_url_mode_says_what_becomes_of_the_commit() {
    let env = Env::new();
    env.spec(&[("data", 1)]);
    let base = env.path("srv");
    let bare = env.seeded_bare("srv/remote.git");
    write_hook(&bare, "#!/bin/sh\necho 'protected branch' >&2\nexit 1\n");
    let daemon = Daemon::start(&env, &base);
    let url = daemon.url("remote.git");
    let out = env.reconcile(&url, &["--offline"]).assert().code(3);
    assert_eq!(
        stderr(&out),
        format!(
            "error: reconcile of rollout demo: push of main to {url} rejected after 1 attempt(s): \
             pre-receive hook declined; nothing was pushed and the temporary clone is removed; \
             the next run clones and commits again\n"
        )
    );
    let work = env.path("work");
    let out = env
        .reconcile(&url, &["--offline", "--workdir", work.to_str().unwrap()])
        .assert()
        .code(3);
    assert_eq!(
        scrub(&stderr(&out), env.tmp.path()),
        format!(
            "error: reconcile of rollout demo: push of main to {url} rejected after 1 attempt(s): \
             pre-receive hook declined; nothing was pushed; the next run resets the clone in \
             [TMP]/work to the remote and commits again\n"
        )
    );
    // What the message promises: the next run starts again from the remote head.
    std::fs::remove_file(bare.join("hooks/pre-receive")).unwrap();
    env.reconcile(&url, &["--offline", "--workdir", work.to_str().unwrap()])
        .assert()
        .success();
    assert_eq!(env.count(&bare, "main"), 2);
    env.fsck(&bare);
}

/// A URL repository without the named branch: exit 3 naming the branches there, and the remote
/// is left as it was (no new branch, no commit).
#[test]
fn missing_branch_on_a_url_repo_is_refused_and_the_remote_is_untouched() {
    let env = Env::new();
    env.spec(&[("data", 1)]);
    let base = env.path("srv");
    let bare = env.seeded_bare("srv/remote.git");
    let daemon = Daemon::start(&env, &base);
    let url = daemon.url("remote.git");
    let refs = env.git(&bare, &["show-ref"]);
    let out = env
        .reconcile(&url, &["--offline", "--branch", "deploy"])
        .assert()
        .code(3);
    assert_eq!(
        stderr(&out),
        format!(
            "error: reconcile of rollout demo: branch `deploy` does not exist in {url} \
             (branches: main); create it first or pass an existing --branch\n"
        )
    );
    assert_eq!(env.git(&bare, &["show-ref"]), refs);
    env.fsck(&bare);
}

/// A change staged (not just edited) inside --path is refused like any other: nothing is
/// committed and the staged content stays staged.
#[test]
fn staged_change_inside_path_is_refused_and_stays_staged() {
    let env = Env::new();
    env.spec(&[("data", 1)]);
    let repo = env.path("gitops");
    let r = repo.to_str().unwrap();
    env.reconcile(r, &[]).assert().success();
    let file = "rollouts/demo/kustomization.yaml";
    std::fs::write(repo.join(file), "staged edit\n").unwrap();
    env.git(&repo, &["add", file]);
    env.spec(&[("data", 2)]);
    let head = env.git(&repo, &["rev-parse", "--short=7", "HEAD"]);
    let out = env.reconcile(r, &[]).assert().code(3);
    assert_eq!(
        scrub(&stderr(&out), env.tmp.path()),
        format!(
            "error: reconcile of rollout demo: [TMP]/gitops: uncommitted changes under rollouts/demo \
             (rollouts/demo/kustomization.yaml); the working tree holds edits made after HEAD ({}), \
             which holds the last commit; set them aside with `git -C [TMP]/gitops stash push \
             --include-untracked -- rollouts/demo` (the folder returns to HEAD, the edits stay in \
             the stash), then re-run\n",
            head.trim()
        )
    );
    assert_eq!(env.count(&repo, "HEAD"), 1);
    assert_eq!(
        env.git(&repo, &["status", "--porcelain"]),
        format!("M  {file}\n")
    );
    assert_eq!(
        env.git(&repo, &["show", &format!(":{file}")]),
        "staged edit\n"
    );
    // The named command works: the edit goes to the stash and the next run commits.
    env.git(
        &repo,
        &[
            "stash",
            "push",
            "--include-untracked",
            "--",
            "rollouts/demo",
        ],
    );
    env.reconcile(r, &[]).assert().success();
    assert_eq!(env.count(&repo, "HEAD"), 2);
    assert_eq!(env.git(&repo, &["status", "--porcelain"]), "");
    env.fsck(&repo);
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
    }
}

fn lib_dest(repo: &str) -> snaproll::gitops::Destination {
    let mut d = snaproll::gitops::Destination::new(repo, "rollouts/demo");
    d.retry_delay = Duration::from_millis(1);
    d
}

/// Two runs open the same remote head and decide differently: the first is pushed; the
/// second, whose decision was made from the older head, is never pushed (`is_stale()`), and
/// a fresh checkout (the engine's retry) reads the first's content and publishes on top of it.
#[test]
fn racing_url_runs_never_push_a_decision_made_from_an_older_head() {
    use snaproll::gitops::Checkout;
    let env = Env::new();
    let bare = env.seeded_bare("remote.git");
    let url = format!("file://{}", bare.display());
    let dest = lib_dest(&url);
    let first = lib_files(&[("a.yaml", "day: 2021-07-18\n")]);
    let second = lib_files(&[("a.yaml", "day: 2021-07-17\n")]);
    let a = Checkout::open(&dest).unwrap();
    let b = Checkout::open(&dest).unwrap();
    assert!(a.read().unwrap().is_empty());
    assert!(b.read().unwrap().is_empty());
    let seed = env.git(&bare, &["rev-parse", "--short=7", "main"]);
    let out = a.publish(&lib_req(&first)).unwrap();
    assert!(out.pushed);
    let pushed = env.git(&bare, &["rev-parse", "--short=7", "main"]);
    let err = b.publish(&lib_req(&second)).unwrap_err();
    assert!(err.is_stale(), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "branch `main` moved since this run read it ({} -> {}) and rollouts/demo changed there; nothing was pushed; decide again from the new head (re-run)",
            seed.trim(),
            pushed.trim()
        )
    );
    assert_eq!(err.exit_code(), 3);
    assert_eq!(env.git(&bare, &["rev-parse", "--short=7", "main"]), pushed);
    assert_eq!(
        env.git(&bare, &["show", "main:rollouts/demo/a.yaml"]),
        "day: 2021-07-18\n"
    );
    assert_eq!(env.count(&bare, "main"), 2);
    // The engine's loop: a new checkout starts from the remote's current head.
    let again = Checkout::open(&dest).unwrap();
    assert_eq!(again.read().unwrap()[0].content, b"day: 2021-07-18\n");
    let out = again.publish(&lib_req(&second)).unwrap();
    assert!(out.pushed);
    assert_eq!(out.push_attempts, 1);
    assert_eq!(env.count(&bare, "main"), 3);
    env.fsck(&bare);
}

/// The same race in one local repository: the branch moved between the read and the commit
/// and the folder differs there, so nothing is committed; index and working tree keep the
/// first run's commit.
#[test]
fn racing_local_runs_never_commit_a_decision_made_from_an_older_head() {
    use snaproll::gitops::Checkout;
    let env = Env::new();
    let repo = env.seeded_repo("gitops");
    let dest = lib_dest(repo.to_str().unwrap());
    let a = Checkout::open(&dest).unwrap();
    let b = Checkout::open(&dest).unwrap();
    a.read().unwrap();
    b.read().unwrap();
    a.publish(&lib_req(&lib_files(&[("a.yaml", "a: 1\n")])))
        .unwrap();
    let head = env.git(&repo, &["rev-parse", "HEAD"]);
    let err = b
        .publish(&lib_req(&lib_files(&[("a.yaml", "a: 2\n")])))
        .unwrap_err();
    assert!(err.is_stale(), "{err}");
    assert!(
        err.to_string().ends_with(
            "and rollouts/demo changed there; nothing was committed; decide again from the new head (re-run)"
        ),
        "{err}"
    );
    assert_eq!(env.git(&repo, &["rev-parse", "HEAD"]), head);
    assert_eq!(
        std::fs::read_to_string(repo.join("rollouts/demo/a.yaml")).unwrap(),
        "a: 1\n"
    );
    assert_eq!(env.git(&repo, &["status", "--porcelain"]), "");
    env.fsck(&repo);
}

/// A racing writer that touched only another path does not make the decision stale: the
/// commit is rebuilt on the new head (remote: after the rejected push; local: at commit time)
/// and both changes are kept.
#[test]
fn racing_writer_on_another_path_still_gets_the_rebuild() {
    use snaproll::gitops::Checkout;
    let env = Env::new();
    let bare = env.seeded_bare("remote.git");
    let url = format!("file://{}", bare.display());
    let other = env.path("other");
    env.git(
        env.tmp.path(),
        &["clone", "-q", &url, other.to_str().unwrap()],
    );
    let files = lib_files(&[("a.yaml", "a: 1\n")]);
    let c = Checkout::open(&lib_dest(&url)).unwrap();
    c.read().unwrap();
    std::fs::write(other.join("other.txt"), "theirs\n").unwrap();
    env.git(&other, &["add", "other.txt"]);
    env.git(&other, &["commit", "-q", "-m", "other change"]);
    env.git(&other, &["push", "-q", "origin", "HEAD:main"]);
    let out = c.publish(&lib_req(&files)).unwrap();
    assert!(out.pushed);
    assert_eq!(out.push_attempts, 2);
    assert_eq!(
        env.git(&bare, &["log", "--format=%s", "main"])
            .lines()
            .collect::<Vec<_>>(),
        [
            "snaproll: demo g: 0 added, 0 changed, 0 removed",
            "other change",
            "seed"
        ]
    );
    assert_eq!(
        env.files(&bare, "main"),
        ["README.md", "other.txt", "rollouts/demo/a.yaml"]
    );
    env.fsck(&bare);

    // Local: someone commits another file between the read and the commit.
    let repo = env.seeded_repo("gitops");
    let c = Checkout::open(&lib_dest(repo.to_str().unwrap())).unwrap();
    c.read().unwrap();
    std::fs::write(repo.join("notes.txt"), "mine\n").unwrap();
    env.git(&repo, &["add", "notes.txt"]);
    env.git(&repo, &["commit", "-q", "-m", "notes"]);
    let out = c.publish(&lib_req(&files)).unwrap();
    assert!(out.commit.is_some());
    assert_eq!(
        env.git(&repo, &["log", "--format=%s", "HEAD~1"])
            .lines()
            .next(),
        Some("notes")
    );
    assert_eq!(env.git(&repo, &["status", "--porcelain"]), "");
    env.fsck(&repo);
}

/// A local repository with `--push` whose remote got another run's folder: nothing is pushed,
/// the local branch (and working tree) follow the remote head so the next read sees the other
/// run's decision, and the retry then pushes.
#[test]
fn stale_push_from_a_local_repo_moves_it_to_the_remote_head() {
    use snaproll::gitops::Checkout;
    let env = Env::new();
    let bare = env.seeded_bare("remote.git");
    let local = env.path("local");
    let other = env.path("other");
    for dir in [&local, &other] {
        env.git(
            env.tmp.path(),
            &["clone", "-q", bare.to_str().unwrap(), dir.to_str().unwrap()],
        );
    }
    let mut dest = lib_dest(local.to_str().unwrap());
    dest.push = true;
    let c = Checkout::open(&dest).unwrap();
    c.read().unwrap();
    std::fs::create_dir_all(other.join("rollouts/demo")).unwrap();
    std::fs::write(other.join("rollouts/demo/a.yaml"), "a: theirs\n").unwrap();
    env.git(&other, &["add", "-A"]);
    env.git(&other, &["commit", "-q", "-m", "another run"]);
    env.git(&other, &["push", "-q", "origin", "HEAD:main"]);
    let theirs = env.git(&bare, &["rev-parse", "main"]);
    let err = c
        .publish(&lib_req(&lib_files(&[("a.yaml", "a: mine\n")])))
        .unwrap_err();
    assert!(err.is_stale(), "{err}");
    assert!(
        err.to_string().contains(
            "nothing was pushed and the local branch now follows the remote head (the older commit stays in the reflog)"
        ),
        "{err}"
    );
    assert_eq!(env.git(&bare, &["rev-parse", "main"]), theirs);
    assert_eq!(env.git(&local, &["rev-parse", "HEAD"]), theirs);
    assert_eq!(
        std::fs::read_to_string(local.join("rollouts/demo/a.yaml")).unwrap(),
        "a: theirs\n"
    );
    assert_eq!(env.git(&local, &["status", "--porcelain"]), "");
    let again = Checkout::open(&dest).unwrap();
    assert_eq!(again.read().unwrap()[0].content, b"a: theirs\n");
    let out = again
        .publish(&lib_req(&lib_files(&[("a.yaml", "a: mine\n")])))
        .unwrap();
    assert!(out.pushed);
    assert_eq!(
        env.git(&bare, &["show", "main:rollouts/demo/a.yaml"]),
        "a: mine\n"
    );
    env.fsck(&local);
    env.fsck(&bare);
}

/// Simulates a run that stopped right after moving the branch: HEAD is the new commit, the
/// index and working tree still hold its parent's files.
fn crash_after_ref_move(env: &Env, repo: &Path) {
    let head = env.git(repo, &["rev-parse", "HEAD"]);
    env.git(repo, &["reset", "-q", "--hard", "HEAD~1"]);
    env.git(repo, &["update-ref", "refs/heads/main", head.trim()]);
    assert_ne!(env.git(repo, &["status", "--porcelain"]), "");
}

/// The next run completes a crashed run's update (the folder's index and working tree equal
/// the previous commit's) and goes on: exit 0, clean status, HEAD's content on disk.
#[test]
fn next_run_completes_a_crashed_runs_checkout() {
    let env = Env::new();
    let repo = env.seeded_repo("gitops");
    let r = repo.to_str().unwrap();
    env.spec(&[("data", 1), ("logs", 1)]);
    env.reconcile(r, &["--offline"]).assert().success();
    env.spec(&[("data", 2)]);
    env.reconcile(r, &["--offline"]).assert().success();
    let head = env.git(&repo, &["rev-parse", "HEAD"]);
    std::fs::write(repo.join("untracked-notes.txt"), "mine\n").unwrap();
    crash_after_ref_move(&env, &repo);
    let out = env
        .reconcile(r, &["--offline"])
        .env("SNAPROLL_LOG", "info")
        .assert()
        .success();
    assert_eq!(
        stderr(&out)
            .matches("completed an unfinished update")
            .count(),
        1,
        "{}",
        stderr(&out)
    );
    // It then went on: the removed dataset's other files leave Git on top of the crashed
    // run's commit (the second step of an offline removal).
    assert_eq!(env.git(&repo, &["rev-parse", "HEAD~1"]), head);
    assert!(
        stdout(&out).contains("0 added, 0 changed, 4 removed"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        env.git(&repo, &["status", "--porcelain"]),
        "?? untracked-notes.txt\n"
    );
    assert_eq!(env.git(&repo, &["diff", "HEAD", "--stat"]), "");
    env.fsck(&repo);
}

/// A crashed update plus a tracked edit outside the folder is more than snaproll's own
/// update: refused with the exact command that completes it, nothing written; after that
/// command the next run works and the edit outside is kept.
#[test]
fn crashed_checkout_with_a_foreign_edit_is_refused_with_the_exact_command() {
    let env = Env::new();
    let repo = env.seeded_repo("gitops");
    let r = repo.to_str().unwrap();
    env.spec(&[("data", 1)]);
    env.reconcile(r, &["--offline"]).assert().success();
    env.spec(&[("data", 2)]);
    env.reconcile(r, &["--offline"]).assert().success();
    crash_after_ref_move(&env, &repo);
    std::fs::write(repo.join("README.md"), "edited\n").unwrap();
    let head = env.git(&repo, &["rev-parse", "HEAD"]);
    let status = env.git(&repo, &["status", "--porcelain"]);
    let out = env.reconcile(r, &["--offline"]).assert().code(3);
    let sha = &head[..7];
    assert_eq!(
        scrub(&stderr(&out), env.tmp.path()),
        format!(
            "error: reconcile of rollout demo: [TMP]/gitops: uncommitted changes under rollouts/demo \
             (rollouts/demo/60-statefulset-data-reader-2021-07-15.yaml); they hold the previous \
             commit's content and HEAD ({sha}) is newer (a run stopped after committing), but files \
             outside rollouts/demo changed too (README.md), so it was not completed automatically; \
             complete it with `git -C [TMP]/gitops restore --source=HEAD --staged --worktree -- \
             rollouts/demo`, then re-run\n"
        )
    );
    assert_eq!(env.git(&repo, &["rev-parse", "HEAD"]), head);
    assert_eq!(env.git(&repo, &["status", "--porcelain"]), status);
    env.git(
        &repo,
        &[
            "restore",
            "--source=HEAD",
            "--staged",
            "--worktree",
            "--",
            "rollouts/demo",
        ],
    );
    env.reconcile(r, &["--offline"]).assert().success();
    assert_eq!(env.git(&repo, &["status", "--porcelain"]), " M README.md\n");
    env.fsck(&repo);
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

/// A large commit is written as one pack (a handful of loose trees and the commit besides),
/// and its tree is byte for byte the one `git add -A && git commit` makes of the same files;
/// so is the next, small, commit (loose objects), read back through the pack.
#[test]
fn large_commit_is_one_pack_and_the_same_tree_git_makes() {
    use snaproll::gitops::{self, File};
    let env = Env::new();
    let ours = env.path("ours");
    let theirs = env.path("theirs");
    std::fs::create_dir_all(&theirs).unwrap();
    env.git(&theirs, &["init", "-q", "-b", "main"]);
    let dest = lib_dest(ours.to_str().unwrap());
    for changed in [None, Some(7)] {
        let named = many_files(150, changed);
        let files: Vec<File> = named
            .iter()
            .map(|(p, c)| File {
                path: p.clone(),
                content: c.clone().into_bytes(),
                objects: vec![],
            })
            .collect();
        let out = gitops::publish(&dest, &lib_req(&files)).unwrap();
        assert!(out.commit.is_some());
        for (p, c) in &named {
            let path = theirs.join("rollouts/demo").join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, c).unwrap();
        }
        env.git(&theirs, &["add", "-A"]);
        env.git(&theirs, &["commit", "-q", "-m", "git"]);
        assert_eq!(
            env.git(&ours, &["rev-parse", "HEAD^{tree}"]),
            env.git(&theirs, &["rev-parse", "HEAD^{tree}"]),
            "{changed:?}"
        );
        assert_eq!(env.git(&ours, &["status", "--porcelain"]), "");
        env.fsck(&ours);
    }
    let counts = env.git(&ours, &["count-objects", "-v"]);
    let field = |name: &str| -> usize {
        counts
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(field("packs"), 1, "{counts}");
    assert_eq!(field("in-pack"), 152, "{counts}");
    // First commit: 4 trees + commit; second: 1 blob, 2 trees on the path... + commit.
    assert!(field("count") <= 10, "{counts}");
    let read = gitops::read(&dest).unwrap();
    assert_eq!(read.len(), 152);
    // Pushed from a bare clone (the CronJob's case), the pack's objects reach the remote.
    let bare = env.seeded_bare("remote.git");
    let url = format!("file://{}", bare.display());
    let files: Vec<File> = many_files(150, None)
        .into_iter()
        .map(|(path, c)| File {
            path,
            content: c.into_bytes(),
            objects: vec![],
        })
        .collect();
    assert!(
        gitops::publish(&lib_dest(&url), &lib_req(&files))
            .unwrap()
            .pushed
    );
    assert_eq!(env.files(&bare, "main").len(), 153);
    env.fsck(&bare);
    assert_eq!(
        String::from_utf8(
            read.iter()
                .find(|f| f.path == "007-configmap-c7.yaml")
                .unwrap()
                .content
                .clone()
        )
        .unwrap(),
        "kind: ConfigMap\nmetadata:\n  name: c7\ndata:\n  v: changed\n"
    );
}

/// The fingerprint trailer: written with the folder's tree, returned by `head_fingerprint`
/// only while the head's folder is that tree, and a publish with the same fingerprint writes
/// nothing.
#[test]
fn fingerprint_is_bound_to_the_folder_it_produced() {
    use snaproll::gitops::{self, Checkout, Request};
    let env = Env::new();
    let repo = env.seeded_repo("gitops");
    let dest = lib_dest(repo.to_str().unwrap());
    let files = lib_files(&[("a.yaml", "a: 1\n")]);
    let with = |fp: &'static str| Request {
        fingerprint: Some(fp),
        ..lib_req(&files)
    };
    assert_eq!(
        Checkout::open(&dest).unwrap().head_fingerprint().unwrap(),
        None
    );
    let out = gitops::publish(&dest, &with("sha256-abc")).unwrap();
    let folder = env.git(&repo, &["rev-parse", "HEAD:rollouts/demo"]);
    assert!(
        env.git(&repo, &["log", "-1", "--format=%B"])
            .ends_with(&format!(
                "Path: rollouts/demo\nSnaproll-Fingerprint: sha256-abc\nSnaproll-Folder: {}\n\n",
                folder.trim()
            ))
    );
    assert_eq!(
        env.git(
            &repo,
            &[
                "log",
                "-1",
                "--format=%(trailers:key=Snaproll-Fingerprint,valueonly)"
            ]
        ),
        "sha256-abc\n\n"
    );
    assert_eq!(
        Checkout::open(&dest).unwrap().head_fingerprint().unwrap(),
        Some("sha256-abc".to_string())
    );
    // Same fingerprint: nothing written, not even compared.
    let objects = env.loose_objects(&repo);
    let again = gitops::publish(&dest, &with("sha256-abc")).unwrap();
    assert_eq!(again.commit, None);
    assert_eq!(again.head, out.commit);
    assert_eq!(env.loose_objects(&repo), objects);
    // An amended commit that keeps the message but not the folder no longer proves anything.
    std::fs::write(repo.join("rollouts/demo/a.yaml"), "a: hand\n").unwrap();
    env.git(&repo, &["commit", "-q", "-a", "--amend", "--no-edit"]);
    assert_eq!(
        Checkout::open(&dest).unwrap().head_fingerprint().unwrap(),
        None
    );
    // A fingerprint that is not one token is invalid input.
    let err = gitops::publish(&dest, &with("a b")).unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert_eq!(
        err.to_string(),
        "fingerprint `a b`: must be one token of at most 256 characters"
    );
}

/// A URL is cloned bare: no working tree is ever written, also in --workdir.
#[test]
fn url_clone_writes_no_working_tree() {
    let env = Env::new();
    env.spec(&[("data", 1)]);
    let bare = env.seeded_bare("remote.git");
    let workdir = env.path("work");
    env.reconcile(
        &format!("file://{}", bare.display()),
        &["--workdir", workdir.to_str().unwrap()],
    )
    .assert()
    .success();
    assert_eq!(
        env.git(&workdir, &["rev-parse", "--is-bare-repository"]),
        "true\n"
    );
    assert!(!workdir.join("rollouts").exists());
    assert!(!workdir.join("README.md").exists());
}
