//! How the installed binary behaves as a job and a plugin: JSON log lines (one object per
//! line, also when a run fails) and kubectl's plugin mode.

use serde_json::Value;

use crate::common::*;
use crate::install::variant;

const GKE: &str = "examples/gke-daily/snaproll.yaml";

#[test]
fn json_logs_are_one_json_object_per_line() {
    let out = snaproll()
        .args([
            "--log-format",
            "json",
            "--log-level",
            "debug",
            "validate",
            "-f",
            GKE,
        ])
        .args(["--generation", "2021-07-15"])
        .assert()
        .success();
    let stderr = String::from_utf8(out.get_output().stderr.clone()).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(!lines.is_empty(), "debug logging produced nothing");
    for line in lines {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
    }
    // In a cluster (KUBERNETES_SERVICE_HOST set) without a terminal, JSON is the default.
    let out = snaproll()
        .env("KUBERNETES_SERVICE_HOST", "10.0.0.1")
        .args(["--log-level", "debug", "validate", "-f", GKE])
        .assert()
        .success();
    let stderr = String::from_utf8(out.get_output().stderr.clone()).unwrap();
    let first = stderr.lines().next().expect("a debug line");
    assert!(serde_json::from_str::<Value>(first).is_ok(), "{first}");
    // Text on request, even off a terminal.
    let out = snaproll()
        .args([
            "--log-format",
            "text",
            "--log-level",
            "debug",
            "validate",
            "-f",
            GKE,
        ])
        .assert()
        .success();
    let stderr = String::from_utf8(out.get_output().stderr.clone()).unwrap();
    assert!(stderr.contains("DEBUG"), "{stderr}");
    assert!(serde_json::from_str::<Value>(stderr.lines().next().unwrap()).is_err());
}

/// Every stderr line of a run in JSON mode is one JSON object, the final error and the spec's
/// warnings included, so a log collector never meets a plain-text line.
#[test]
fn json_mode_failing_run_writes_only_json_lines() {
    let tmp = tempfile::tempdir().unwrap();
    // 8 replicas on a GKE PD class without `snapshot-type: images`: a warning; then the apply
    // fails for want of a cluster.
    let spec = variant(tmp.path(), "replicas: 3", "replicas: 8");
    let out = snaproll()
        .args(["--log-format", "json", "apply", "-f"])
        .arg(&spec)
        .arg("--kubeconfig")
        .arg(tmp.path().join("missing-kubeconfig"))
        .assert()
        .code(4);
    let stderr = String::from_utf8(out.get_output().stderr.clone()).unwrap();
    let records: Vec<Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let levels: Vec<&str> = records
        .iter()
        .map(|r| r["level"].as_str().unwrap())
        .collect();
    assert_eq!(levels, ["WARN", "ERROR"], "{stderr}");
    assert!(
        records[0]["fields"]["message"]
            .as_str()
            .unwrap()
            .contains("restores per hour"),
        "{stderr}"
    );
    let error = &records[1];
    assert!(
        error["fields"]["message"]
            .as_str()
            .unwrap()
            .starts_with("cannot configure cluster access"),
        "{stderr}"
    );
    assert_eq!(error["fields"]["exit_code"], 4);
    assert!(error["timestamp"].is_string());

    // An invalid spec: one ERROR record per problem, exit 2, still only JSON.
    let bad = variant(tmp.path(), "replicas: 3", "replica: 3");
    let out = snaproll()
        .args(["--log-format", "json", "validate", "-f"])
        .arg(&bad)
        .assert()
        .code(2);
    let stderr = String::from_utf8(out.get_output().stderr.clone()).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let v: Value = serde_json::from_str(stderr.trim_end()).unwrap();
    assert_eq!(v["level"], "ERROR");
    assert_eq!(v["fields"]["exit_code"], 2);
    assert!(
        v["fields"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown field `replica`"),
        "{stderr}"
    );

    // A value the parser rejects (here from the environment, as a CronJob would set it) is one
    // ERROR record too; help still prints as text on stdout.
    let out = snaproll()
        .env("SNAPROLL_LOG_FORMAT", "json")
        .env("SNAPROLL_SNAPSHOT_TIMEOUT", "soon")
        .args(["reconcile", "-f", GKE, "--repo"])
        .arg(tmp.path().join("gitops"))
        .assert()
        .code(2);
    let stderr = String::from_utf8(out.get_output().stderr.clone()).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let v: Value = serde_json::from_str(stderr.trim_end()).unwrap();
    assert_eq!(v["level"], "ERROR");
    assert_eq!(v["fields"]["exit_code"], 2);
    assert!(
        v["fields"]["message"]
            .as_str()
            .unwrap()
            .contains("'soon' for '--snapshot-timeout"),
        "{stderr}"
    );
    assert!(!tmp.path().join("gitops").exists());
    snaproll()
        .args(["--log-format", "json", "validate", "--help"])
        .assert()
        .code(0)
        .stdout(predicates::str::contains("Usage: snaproll validate"));

    // On a terminal-style run the same failure stays plain text.
    let out = snaproll()
        .args(["--log-format", "text", "validate", "-f"])
        .arg(&bad)
        .assert()
        .code(2);
    let stderr = String::from_utf8(out.get_output().stderr.clone()).unwrap();
    assert!(stderr.starts_with("error: "), "{stderr}");
}

#[test]
fn works_as_a_kubectl_plugin() {
    let tmp = tempfile::tempdir().unwrap();
    let plugin = install_plugin(tmp.path());
    let run = |args: &[&str]| {
        let mut cmd = assert_cmd::Command::new(&plugin);
        cmd.args(args).current_dir(root()).env("NO_COLOR", "1");
        cmd.env_remove("SNAPROLL_SPEC").env_remove("KUBECONFIG");
        cmd
    };
    let out = run(&["--help"]).assert().success();
    let help = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert!(help.contains("Usage: kubectl snaproll"), "{help}");
    assert!(!help.contains("kubectl-snaproll"), "{help}");
    run(&["validate", "-f", GKE, "--generation", "2021-07-15"])
        .assert()
        .success()
        .stdout(predicates::str::contains("valid (1 dataset"));
    // Errors name the command the way users typed it through kubectl.
    let out = run(&["no-such-command"]).assert().code(2);
    let stderr = String::from_utf8(out.get_output().stderr.clone()).unwrap();
    assert!(stderr.contains("snaproll"), "{stderr}");
}

/// `kubectl snaproll …` through kubectl itself: kubectl finds `kubectl-snaproll` on PATH and
/// runs it with the remaining arguments. Skipped (with the reason printed) where kubectl is not
/// installed.
#[test]
fn kubectl_dispatches_to_the_plugin_on_path() {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let Some(kubectl) = std::env::split_paths(&path)
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file())
    else {
        eprintln!("skipped: kubectl is not on PATH");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let plugin = install_plugin(tmp.path());
    let path = std::env::join_paths(
        std::iter::once(tmp.path().to_path_buf()).chain(std::env::split_paths(&path)),
    )
    .unwrap();
    let kubectl_cmd = |args: &[&str]| {
        let mut cmd = assert_cmd::Command::new(&kubectl);
        cmd.args(args)
            .current_dir(root())
            .env("PATH", &path)
            .env("NO_COLOR", "1")
            // No real cluster configuration can leak in; dispatch needs none.
            .env("KUBECONFIG", tmp.path().join("no-kubeconfig"))
            .env_remove("SNAPROLL_SPEC");
        cmd
    };
    let out = kubectl_cmd(&["plugin", "list"]).assert().success();
    let list = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert!(list.contains(&plugin.display().to_string()), "{list}");
    kubectl_cmd(&[
        "snaproll",
        "validate",
        "-f",
        GKE,
        "--generation",
        "2021-07-15",
    ])
    .assert()
    .success()
    .stdout(format!(
        "{GKE}: valid (1 dataset, 6 objects at generation 2021-07-15)\n"
    ));
    // The plugin's exit code and error come through kubectl unchanged.
    let out = kubectl_cmd(&["snaproll", "validate", "-f", "no-such-spec.yaml"])
        .assert()
        .code(2);
    let stderr = String::from_utf8(out.get_output().stderr.clone()).unwrap();
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains("no-such-spec.yaml"), "{stderr}");
}
