//! The first hour of a user: every spec problem in one run, kubectl's conventions, JSON shapes,
//! cluster configuration errors in kubectl's words.

use std::fs;

use crate::common::{repo_path, scrub, snaproll};

const GEN: &str = "2021-07-15";

fn gke_text() -> String {
    fs::read_to_string(repo_path("examples/gke-daily/snaproll.yaml")).unwrap()
}

/// The GKE example with each `(from, to)` replaced once (each `from` must occur).
fn gke_with(edits: &[(&str, &str)]) -> String {
    let mut text = gke_text();
    for (from, to) in edits {
        assert!(
            text.contains(from),
            "mutation target {from:?} not in the example"
        );
        text = text.replacen(from, to, 1);
    }
    text
}

/// Runs `validate` on `spec` and returns (exit code, stdout, stderr with the temp dir scrubbed).
fn validate(spec: &str, extra: &[&str]) -> (i32, String, String) {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("snaproll.yaml"), spec).unwrap();
    let out = snaproll()
        .current_dir(tmp.path())
        .args(["validate", "-f", "snaproll.yaml", "--generation", GEN])
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        scrub(&String::from_utf8_lossy(&out.stderr), tmp.path()),
    )
}

/// `validate` must refuse `spec` with exit 2 and nothing on stdout; returns stderr.
fn refused(spec: &str) -> String {
    let (code, stdout, stderr) = validate(spec, &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

// ---- 1. Every spec problem in one run ----

#[test]
fn two_typos_give_two_lines() {
    let stderr = refused(&gke_with(&[
        ("replicas: 3", "replcas: 3"),
        ("keep: 1", "kep: 1"),
    ]));
    assert_eq!(stderr.lines().count(), 2, "{stderr}");
    insta::assert_snapshot!(stderr);
}

#[test]
fn a_missing_field_does_not_hide_a_bad_size_below_it() {
    let stderr = refused(&gke_with(&[
        ("    - name: data\n", "    - storage2: x\n"),
        ("size: 10Gi", "size: ten"),
        ("replicas: 3", "replicas: lots"),
    ]));
    insta::assert_snapshot!(stderr);
}

#[test]
fn problems_of_typed_parse_and_validation_are_sorted_by_line() {
    let stderr = refused(&gke_with(&[
        ("name: demo", "name: Demo"),
        ("keep: 1", "kep: 1"),
        (
            "mountPath: /data\n      generations",
            "mountPath: data\n      generations",
        ),
    ]));
    insta::assert_snapshot!(stderr);
}

#[test]
fn many_problems_are_capped_with_a_count() {
    let mut spec = gke_text();
    let extra: String = (0..25).map(|i| format!("        typo{i}: x\n")).collect();
    spec = spec.replacen(
        "        size: 10Gi\n",
        &format!("        size: 10Gi\n{extra}"),
        1,
    );
    let stderr = refused(&spec);
    assert_eq!(stderr.lines().count(), 21, "{stderr}");
    insta::assert_snapshot!(stderr);
}

#[test]
fn a_statefulset_says_what_it_is() {
    let out = snaproll()
        .args([
            "render",
            "-f",
            "examples/gke-daily/snaproll.yaml",
            "--generation",
            GEN,
        ])
        .output()
        .unwrap();
    let rendered = String::from_utf8(out.stdout).unwrap();
    let sts = rendered
        .split("\n---\n")
        .find(|d| d.contains("kind: StatefulSet"))
        .unwrap();
    insta::assert_snapshot!(refused(sts));
}

#[test]
fn a_kustomization_says_what_it_is() {
    insta::assert_snapshot!(refused("resources:\n  - a.yaml\n  - b.yaml\n"));
}

#[test]
fn metadata_labels_and_annotations_are_accepted() {
    let (code, stdout, stderr) = validate(
        &gke_with(&[(
            "  namespace: default\n",
            "  namespace: default\n  labels:\n    team: data\n    example.com/tier: gold\n  annotations:\n    example.com/owner: \"Data team <data@example.com>\"\n",
        )]),
        &[],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
    assert!(stdout.contains("valid"), "{stdout}");
}

#[test]
fn bad_label_keys_and_values_are_refused() {
    let stderr = refused(&gke_with(&[(
        "  namespace: default\n",
        "  namespace: default\n  labels:\n    team: \"data team\"\n    -bad: x\n  annotations:\n    Example.com/owner: me\n",
    )]));
    insta::assert_snapshot!(stderr);
}

#[test]
fn a_size_without_unit_warns_with_the_likely_unit() {
    let (code, _, stderr) = validate(&gke_with(&[("size: 10Gi", "size: 200")]), &[]);
    assert_eq!(code, 0, "{stderr}");
    insta::assert_snapshot!(stderr);
}

#[test]
fn a_snapshot_timeout_that_is_no_duration_is_refused_with_examples() {
    let stderr = refused(&gke_with(&[(
        "        keep: 1\n",
        "        keep: 1\n      snapshot:\n        timeout: soon\n",
    )]));
    insta::assert_snapshot!(stderr);
    let stderr = refused(&gke_with(&[(
        "        keep: 1\n",
        "        keep: 1\n      snapshot:\n        timeout: 0s\n",
    )]));
    insta::assert_snapshot!("zero_snapshot_timeout", stderr);
    let (code, _, stderr) = validate(
        &gke_with(&[(
            "        keep: 1\n",
            "        keep: 1\n      snapshot:\n        timeout: 12h\n",
        )]),
        &[],
    );
    assert_eq!((code, stderr.as_str()), (0, ""));
}

#[test]
fn an_indentation_error_names_the_enclosing_field() {
    let stderr = refused(&gke_with(&[(
        "        storageClassName: standard-rwo\n        size: 10Gi\n",
        "        storageClassName: standard-rwo\n         size: 10Gi\n",
    )]));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    insta::assert_snapshot!(stderr);
}

// ---- 2. kubectl's conventions ----

#[test]
fn filename_and_file_both_name_the_spec() {
    for flag in ["-f", "--filename", "--file"] {
        snaproll()
            .args([
                "validate",
                flag,
                "examples/gke-daily/snaproll.yaml",
                "--generation",
                GEN,
            ])
            .assert()
            .success();
    }
}

#[test]
fn validate_prints_json_and_yaml() {
    for format in ["json", "yaml"] {
        let out = snaproll()
            .args([
                "validate",
                "-f",
                "examples/gke-daily/snaproll.yaml",
                "--generation",
                GEN,
                "-o",
                format,
            ])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        insta::assert_snapshot!(
            format!("validate_{format}"),
            String::from_utf8(out.stdout).unwrap()
        );
    }
}

#[test]
fn render_prints_a_json_list() {
    let out = snaproll()
        .args([
            "render",
            "-f",
            "examples/gke-daily/snaproll.yaml",
            "--generation",
            GEN,
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["kind"], "List");
    assert_eq!(v["items"].as_array().unwrap().len(), 6);
    assert_eq!(v["items"][5]["kind"], "StatefulSet");
}

#[test]
fn version_names_commit_and_api_versions() {
    let out = snaproll().args(["version", "-o", "json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let mut v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let commit = v["gitCommit"].as_str().unwrap().to_string();
    assert!(commit == "unknown" || commit.len() == 40, "{commit}");
    v["gitCommit"] = "[COMMIT]".into();
    v["version"] = "[VERSION]".into();
    insta::assert_snapshot!(serde_json::to_string_pretty(&v).unwrap());
}

#[test]
fn global_flags_are_accepted_before_the_subcommand() {
    // The context does not exist: the run gets as far as the cluster configuration.
    let tmp = tempfile::tempdir().unwrap();
    let out = snaproll()
        .env("HOME", tmp.path())
        .args(["--context", "prod", "--kubeconfig"])
        .arg(tmp.path().join("nope"))
        .args(["status", "-f", "examples/gke-daily/snaproll.yaml"])
        .output()
        .unwrap();
    let stderr = scrub(&String::from_utf8_lossy(&out.stderr), tmp.path());
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(!stderr.contains("unexpected argument"), "{stderr}");
}

#[test]
fn dry_run_takes_kubectl_modes() {
    let tmp = tempfile::tempdir().unwrap();
    for mode in [
        "--dry-run",
        "--dry-run=server",
        "--dry-run=client",
        "--dry-run=none",
    ] {
        let out = snaproll()
            .env("HOME", tmp.path())
            .args([
                "apply",
                "-f",
                "examples/gke-daily/snaproll.yaml",
                mode,
                "--kubeconfig",
            ])
            .arg(tmp.path().join("nope"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{mode}: {stderr}");
    }
    let out = snaproll()
        .args([
            "apply",
            "-f",
            "examples/gke-daily/snaproll.yaml",
            "--dry-run=maybe",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn plugin_completion_follows_cobra_protocol() {
    let out = snaproll()
        .args(["__complete", "apply", "--dry"])
        .output()
        .unwrap();
    insta::assert_snapshot!(String::from_utf8(out.stdout).unwrap());
    let out = snaproll()
        .args(["__complete", "status", "-o", ""])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "text\njson\nyaml\n:4\n"
    );
    let out = snaproll().args(["__complete", "st"]).output().unwrap();
    insta::assert_snapshot!(String::from_utf8(out.stdout).unwrap());
}

// ---- 5. Cluster configuration errors in kubectl's words ----

const KUBECONFIG: &str = "apiVersion: v1\nkind: Config\ncurrent-context: a\nclusters:\n- name: c\n  cluster: {server: \"https://127.0.0.1:1\"}\nusers:\n- name: u\n  user: {token: t}\ncontexts:\n- name: a\n  context: {cluster: c, user: u}\n- name: b\n  context: {cluster: c, user: u}\n";

/// Runs snaproll with HOME in a fresh directory (holding `.kube/config` when `home_config`),
/// no KUBECONFIG and not in a cluster; returns (exit code, stderr scrubbed).
fn cluster_run(home_config: bool, args: &[&str]) -> (i32, String) {
    let tmp = tempfile::tempdir().unwrap();
    if home_config {
        fs::create_dir_all(tmp.path().join(".kube")).unwrap();
        fs::write(tmp.path().join(".kube/config"), KUBECONFIG).unwrap();
    }
    let out = snaproll()
        .env("HOME", tmp.path())
        .env_remove("KUBERNETES_SERVICE_HOST")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        scrub(&String::from_utf8_lossy(&out.stderr), tmp.path()),
    )
}

#[test]
fn an_unknown_context_lists_the_known_ones_and_the_file() {
    let (code, stderr) = cluster_run(
        true,
        &[
            "status",
            "-f",
            "examples/gke-daily/snaproll.yaml",
            "--context",
            "prod",
        ],
    );
    assert_eq!(code, 4, "{stderr}");
    insta::assert_snapshot!(stderr);
}

#[test]
fn a_missing_kubeconfig_names_where_it_looked() {
    let (code, stderr) = cluster_run(false, &["status", "-f", "examples/gke-daily/snaproll.yaml"]);
    assert_eq!(code, 4, "{stderr}");
    assert!(!stderr.contains("'\""), "doubled quotes: {stderr}");
    insta::assert_snapshot!(stderr);
}

#[test]
fn an_unreadable_kubeconfig_is_named_once() {
    let (code, stderr) = cluster_run(
        false,
        &[
            "status",
            "-f",
            "examples/gke-daily/snaproll.yaml",
            "--kubeconfig",
            "/nonexistent/kubeconfig",
        ],
    );
    assert_eq!(code, 4, "{stderr}");
    insta::assert_snapshot!(stderr);
}

#[test]
fn a_cluster_error_of_reconcile_with_git_names_offline() {
    let repo = tempfile::tempdir().unwrap();
    let (code, stderr) = cluster_run(
        true,
        &[
            "reconcile",
            "-f",
            "examples/gke-daily/snaproll.yaml",
            "--generation",
            GEN,
            "--context",
            "prod",
            "--repo",
            repo.path().to_str().unwrap(),
        ],
    );
    assert_eq!(code, 4, "{stderr}");
    assert!(stderr.contains("--offline"), "{stderr}");
}

#[test]
fn an_unreachable_cluster_mid_run_names_offline() {
    let repo = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let (code, stderr) = cluster_run(
        true,
        &[
            "reconcile",
            "-f",
            "examples/gke-daily/snaproll.yaml",
            "--generation",
            GEN,
            "--repo",
            repo.path().to_str().unwrap(),
        ],
    );
    assert_eq!(code, 4, "{stderr}");
    insta::assert_snapshot!(stderr);
    // Nothing was committed: the repository has no commit.
    let log = std::process::Command::new("git")
        .args([
            "-C",
            repo.path().to_str().unwrap(),
            "rev-parse",
            "--verify",
            "HEAD",
        ])
        .output()
        .unwrap();
    assert!(!log.status.success());
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
}

// ---- 4. Docs true ----

#[test]
fn the_readme_lists_every_environment_variable_of_the_flags() {
    let cli = fs::read_to_string(repo_path("src/cli.rs")).unwrap();
    let readme = fs::read_to_string(repo_path("README.md")).unwrap();
    let mut missing = Vec::new();
    for part in cli.split("env = \"").skip(1) {
        let var = &part[..part.find('"').unwrap()];
        if !readme.contains(&format!("`{var}`")) {
            missing.push(var.to_string());
        }
    }
    assert!(missing.is_empty(), "not in the README's table: {missing:?}");
    // And the table names no variable the flags do not read.
    let table: String = readme[readme.find("### Flags and environment").unwrap()..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .collect();
    let stale: Vec<&str> = table
        .split('`')
        .filter(|w| w.starts_with("SNAPROLL_") && !cli.contains(&format!("env = \"{w}\"")))
        .collect();
    assert!(
        stale.is_empty(),
        "in the README's table, read by no flag: {stale:?}"
    );
    for code in 0..=6 {
        assert!(
            readme.contains(&format!("| {code} |")),
            "exit code {code} not in the README"
        );
    }
}

#[test]
fn reconcile_offline_json_is_camel_case() {
    let repo = tempfile::tempdir().unwrap();
    let out = snaproll()
        .args([
            "reconcile",
            "-f",
            "examples/gke-daily/snaproll.yaml",
            "--generation",
            GEN,
            "--offline",
            "-o",
            "json",
            "--repo",
        ])
        .arg(repo.path())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for k in ["commit", "head"] {
        v[k] = "[SHA]".into();
    }
    for d in v["generations"].as_array_mut().unwrap() {
        for g in d["generations"].as_array_mut().unwrap() {
            if !g["firstSeen"].is_null() {
                g["firstSeen"] = "[TIME]".into();
            }
        }
    }
    insta::assert_snapshot!(serde_json::to_string_pretty(&v).unwrap());
}

// ---- 6. render --out keeps hand-added files unless --force ----

#[test]
fn render_out_refuses_to_delete_a_hand_added_file() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let render = |extra: &[&str]| {
        snaproll()
            .args([
                "render",
                "-f",
                "examples/gke-daily/snaproll.yaml",
                "--generation",
                GEN,
                "--out",
            ])
            .arg(&out)
            .args(extra)
            .output()
            .unwrap()
    };
    assert_eq!(render(&[]).status.code(), Some(0));
    fs::write(out.join("notes.md"), "mine").unwrap();
    let res = render(&[]);
    assert_eq!(res.status.code(), Some(2));
    assert_eq!(fs::read_to_string(out.join("notes.md")).unwrap(), "mine");
    insta::assert_snapshot!(scrub(&String::from_utf8_lossy(&res.stderr), tmp.path()));
    assert_eq!(render(&["--force"]).status.code(), Some(0));
    assert!(!out.join("notes.md").exists());
}
