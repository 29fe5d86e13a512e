//! Runs into a local repository: one commit per change, the working tree follows, the rest of the repository stays.

use super::*;

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
    // The fingerprint digests the build too, so it differs from build to build.
    let message: String = message
        .lines()
        .map(|l| match l.strip_prefix("Snaproll-Fingerprint: offline-") {
            Some(hex) if hex.len() == 64 => "Snaproll-Fingerprint: offline-[SHA256]\n".to_string(),
            _ => format!("{l}\n"),
        })
        .collect();
    insta::assert_snapshot!("changed_commit_message", message);
    assert_eq!(env.git(&repo, &["status", "--porcelain"]), "");
    env.fsck(&repo);
}

/// A large commit lists 100 files of each kind and counts the rest: the message of a
/// first commit of 1,000 datasets was 400 KB, read back by every later run.
#[test]
fn a_large_commit_message_lists_a_hundred_files_and_counts_the_rest() {
    let env = Env::new();
    let names: Vec<String> = (0..25).map(|i| format!("data{i:02}")).collect();
    let datasets: Vec<(&str, u32)> = names.iter().map(|n| (n.as_str(), 1)).collect();
    env.spec(&datasets);
    let repo = env.path("gitops");
    env.reconcile(repo.to_str().unwrap(), &[])
        .assert()
        .success();
    let body = env.git(&repo, &["log", "-1", "--format=%b"]);
    let listed = body.lines().filter(|l| l.ends_with(".yaml]")).count();
    // 25 datasets x 5 objects, the VolumeSnapshotClass and kustomization.yaml.
    assert_eq!(listed, 100, "{body}");
    assert!(
        body.contains("- and 27 more files (`git show --stat` lists them all)\n"),
        "{body}"
    );
    assert!(body.contains("Snaproll-Fingerprint: offline-"), "{body}");
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
            fingerprint_check: None,
            scope: None,
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
