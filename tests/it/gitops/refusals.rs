//! What a run refuses, and that a refused run leaves the repository untouched.

use super::*;

#[test]
fn dirty_working_tree_inside_path_is_refused_and_nothing_is_committed() {
    let env = Env::new();
    env.spec(&[("data", 1)]);
    let repo = env.path("gitops");
    let r = repo.to_str().unwrap();
    env.reconcile(r, &[]).assert().success();
    let clean = env.state(&repo);
    let edited = repo.join("rollouts/demo/50-service-consumer.yaml");
    let edited = if edited.exists() {
        edited
    } else {
        repo.join("rollouts/demo/kustomization.yaml")
    };
    std::fs::write(&edited, "hand edit\n").unwrap();
    env.spec(&[("data", 2)]);
    let dirty = env.state(&repo);
    let out = env.reconcile(r, &[]).assert().code(3);
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("uncommitted changes under rollouts/demo"),
        "{err}"
    );
    env.assert_untouched(&repo, &dirty);
    assert_eq!(std::fs::read_to_string(&edited).unwrap(), "hand edit\n");
    // An untracked file in the path is refused as well.
    env.git(&repo, &["checkout", "--", "."]);
    assert_eq!(env.state(&repo), clean);
    std::fs::write(repo.join("rollouts/demo/extra.yaml"), "x: 1\n").unwrap();
    let untracked = env.state(&repo);
    env.reconcile(r, &[]).assert().code(3);
    env.assert_untouched(&repo, &untracked);
}

#[test]
fn missing_branch_in_an_existing_repo_is_an_error() {
    let env = Env::new();
    env.spec(&[("data", 1)]);
    let repo = env.seeded_repo("gitops");
    let before = env.state(&repo);
    let out = env
        .reconcile(repo.to_str().unwrap(), &["--branch", "deploy"])
        .assert()
        .code(3);
    insta::assert_snapshot!("missing_branch", scrub(&stderr(&out), env.tmp.path()));
    env.assert_untouched(&repo, &before);
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
    let before = env.state(&repo);
    let out = env.reconcile(r, &[]).assert().code(3);
    assert_eq!(
        scrub(&stderr(&out), env.tmp.path()),
        "error: reconcile of rollout demo: [TMP]/gitops: cannot write \
         rollouts/demo/10-volumesnapshotclass-csi-gce-pd-snapshot-class.yaml in the working tree, \
         so nothing was committed: rollouts/demo is a file, not a folder (an ignored file?); \
         move it away\n"
    );
    env.assert_untouched(&repo, &before);
    assert_eq!(
        std::fs::read_to_string(repo.join("rollouts/demo")).unwrap(),
        "in the way\n"
    );
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
    let before = env.state(&repo);
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
    env.assert_untouched(&repo, &before);
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
    let before = env.state(&repo);
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
    env.assert_untouched(&repo, &before);
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
