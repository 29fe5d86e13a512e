//! Concurrent writers and crashed runs: a decision made from an older head is never published.

use super::*;

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
    let before = env.state(&repo);
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
    env.assert_untouched(&repo, &before);
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
