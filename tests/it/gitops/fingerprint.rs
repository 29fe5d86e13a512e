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
