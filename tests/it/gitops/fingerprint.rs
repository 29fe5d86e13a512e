//! The offline no-op skip is honest: a run whose inputs equal the head commit's fingerprint
//! stops after reading it, and its result is byte for byte what the full run makes; any change
//! of spec, templates or generation, and any run that is one step of several, does the full
//! work.

use super::*;

/// `reconcile -o json` (offline) with the given generation and extra flags; returns the JSON.
fn run(env: &Env, repo: &Path, generation: &str, extra: &[&str]) -> serde_json::Value {
    let out = snaproll()
        .env("HOME", env.home())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .args(["reconcile", "--offline", "-o", "json", "-f"])
        .arg(env.path("snaproll.yaml"))
        .args(["--repo", repo.to_str().unwrap(), "--generation", generation])
        .args([
            "--author-name",
            "Snap Bot",
            "--author-email",
            "bot@example.com",
        ])
        .args(extra)
        .assert()
        .success();
    serde_json::from_str(stdout(&out).lines().next().unwrap()).unwrap()
}

fn skipped(v: &serde_json::Value) -> bool {
    v["summary"]
        .as_str()
        .unwrap()
        .starts_with("snaproll: nothing to do")
}

#[test]
fn offline_no_op_skips_only_when_nothing_could_change() {
    let env = Env::new();
    let repo = env.path("gitops");
    env.spec(&[("data", 1), ("old", 1)]);
    let first = run(&env, &repo, "2021-07-15", &[]);
    assert!(first["commit"].is_string() && !skipped(&first));
    // The same inputs again: nothing read, decided or written.
    let again = run(&env, &repo, "2021-07-15", &[]);
    assert!(skipped(&again), "{again}");
    assert_eq!(again["commit"], serde_json::Value::Null);
    assert_eq!(env.count(&repo, "HEAD"), 1);

    // A spec change is never skipped.
    env.spec(&[("data", 2), ("old", 1)]);
    let v = run(&env, &repo, "2021-07-15", &[]);
    assert!(!skipped(&v) && v["commit"].is_string(), "{v}");
    // Nor a generation change.
    let v = run(&env, &repo, "2021-07-16", &[]);
    assert!(!skipped(&v) && v["commit"].is_string(), "{v}");
    assert!(skipped(&run(&env, &repo, "2021-07-16", &[])));
    // Nor a templates override, even one that changes no output byte.
    let templates = env.path("templates");
    std::fs::create_dir_all(&templates).unwrap();
    let service = concat!(env!("CARGO_MANIFEST_DIR"), "/templates/service.yaml.j2");
    let text = std::fs::read_to_string(service).unwrap();
    std::fs::write(templates.join("service.yaml.j2"), &text).unwrap();
    let t = ["--templates", templates.to_str().unwrap()];
    let v = run(&env, &repo, "2021-07-16", &t);
    assert!(!skipped(&v), "{v}");
    assert_eq!(
        v["commit"],
        serde_json::Value::Null,
        "same bytes: no commit"
    );
    std::fs::write(
        templates.join("service.yaml.j2"),
        format!("{{# edited #}}\n{text}"),
    )
    .unwrap();
    let v = run(&env, &repo, "2021-07-16", &t);
    assert!(!skipped(&v), "{v}");

    // A dataset leaving the spec leaves Git in two runs (StatefulSets first): the first run's
    // commit is not a fixed point, so the second is not skipped and finishes the removal.
    env.spec(&[("data", 2)]);
    let step1 = run(&env, &repo, "2021-07-16", &[]);
    assert!(step1["commit"].is_string(), "{step1}");
    let step2 = run(&env, &repo, "2021-07-16", &[]);
    assert!(!skipped(&step2) && step2["commit"].is_string(), "{step2}");
    assert!(
        !env.files(&repo, "HEAD").iter().any(|f| f.contains("old")),
        "{:?}",
        env.files(&repo, "HEAD")
    );
    let settled = run(&env, &repo, "2021-07-16", &[]);
    assert!(skipped(&settled), "{settled}");

    // Same output bytes: the full run (the head's trailers removed, so nothing can be skipped)
    // finds exactly the committed folder.
    let tree = env.git(&repo, &["rev-parse", "HEAD^{tree}"]);
    env.git(&repo, &["commit", "-q", "--amend", "-m", "no trailers"]);
    let full = run(&env, &repo, "2021-07-16", &[]);
    assert!(!skipped(&full), "{full}");
    assert_eq!(full["commit"], serde_json::Value::Null, "{full}");
    assert_eq!(env.git(&repo, &["rev-parse", "HEAD^{tree}"]), tree);
    env.fsck(&repo);
}

/// The skip happens before the spec is parsed, so what it proves must cover what a parse would
/// tell: a spec with warnings still prints them on a skipped run; an edit that changes no
/// meaning (a comment) is a change of bytes, so a full run (which commits nothing); edits in
/// the folder's working tree are refused exactly as by a full run.
#[test]
fn skip_before_parse_keeps_warnings_comments_and_dirty_trees_honest() {
    let env = Env::new();
    let repo = env.path("gitops");
    let spec = env.spec(&[("data", 1)]);
    let text = std::fs::read_to_string(&spec).unwrap();
    std::fs::write(&spec, text.replace("size: 10Gi", "size: 200")).unwrap();
    let warn = |out: &std::process::Output| {
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            err.starts_with("warning: ") && err.contains("has no unit"),
            "{err}"
        );
    };
    let first = env
        .reconcile(repo.to_str().unwrap(), &["--offline", "-o", "json"])
        .assert()
        .success();
    warn(first.get_output());
    let again = env
        .reconcile(repo.to_str().unwrap(), &["--offline", "-o", "json"])
        .assert()
        .success();
    warn(again.get_output());
    let v: serde_json::Value =
        serde_json::from_str(stdout(&again).lines().next().unwrap()).unwrap();
    assert!(skipped(&v), "{v}");

    // Without warnings: the skip (before the parse) prints nothing on stderr.
    env.spec(&[("data", 1)]);
    let v = run(&env, &repo, "2021-07-15", &[]);
    assert!(!skipped(&v) && v["commit"].is_string(), "{v}");
    let quiet = env
        .reconcile(repo.to_str().unwrap(), &["--offline"])
        .assert()
        .success();
    assert_eq!(String::from_utf8_lossy(&quiet.get_output().stderr), "");
    let head = env.git(&repo, &["rev-parse", "--short", "HEAD"]);
    assert_eq!(
        stdout(&quiet),
        format!(
            "no changes: rollouts/demo is up to date at {}\n",
            head.trim()
        )
    );

    // A comment is new bytes: the full run, which finds nothing to commit.
    let mut text = std::fs::read_to_string(&spec).unwrap();
    text.push_str("# a note\n");
    std::fs::write(&spec, &text).unwrap();
    let v = run(&env, &repo, "2021-07-15", &[]);
    assert!(!skipped(&v), "{v}");
    assert_eq!(v["commit"], serde_json::Value::Null, "{v}");

    // Back to the recorded bytes: skipped; an edit in the folder is refused as always.
    env.spec(&[("data", 1)]);
    assert!(skipped(&run(&env, &repo, "2021-07-15", &[])));
    let folder = repo.join("rollouts/demo");
    let file = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "yaml"))
        .unwrap();
    std::fs::write(&file, "edited: by hand\n").unwrap();
    let out = env
        .reconcile(repo.to_str().unwrap(), &["--offline"])
        .assert()
        .code(3);
    let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(
        err.starts_with("error: reconcile of rollout demo: ") && err.contains("stash push"),
        "{err}"
    );
    assert_eq!(stdout(&out), "");
    assert_eq!(env.count(&repo, "HEAD"), 2);
}

/// The fixed-point check decides once more from what is being committed and compares plans;
/// it renders again only when the plans differ. A first run and a spec change that leave the
/// content a fixed point must not need that second render (it doubled the cost of a
/// 1,000-dataset run): the plan read back from the rendered objects equals the one rendered.
#[test]
fn a_fixed_point_is_recognised_from_the_plan_without_rendering_again() {
    let env = Env::new();
    let repo = env.path("gitops");
    let debug_run = || {
        let out = env
            .reconcile(repo.to_str().unwrap(), &["--offline"])
            .env("SNAPROLL_LOG", "debug")
            .assert()
            .success();
        String::from_utf8_lossy(&out.get_output().stderr).into_owned()
    };
    env.spec(&[("data", 1), ("more", 2)]);
    for step in ["first", "replicas changed"] {
        if step == "replicas changed" {
            env.spec(&[("data", 3), ("more", 2)]);
        }
        let log = debug_run();
        assert!(log.contains("fixed_point=true"), "{step}: {log}");
        assert!(!log.contains("plans differently"), "{step}: {log}");
    }
    // The next run with the same inputs is the no-op the fingerprint promises.
    let log = debug_run();
    assert!(log.contains("fingerprint matches the branch head"), "{log}");
}
