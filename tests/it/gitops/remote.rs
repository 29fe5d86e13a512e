//! URL remotes and pushes: one clone per run, retries on a moving remote, secrets never shown.

use super::*;

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
    let before = env.state(&bare);
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
    env.assert_untouched(&bare, &before);
}
