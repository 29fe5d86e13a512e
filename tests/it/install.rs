//! Running snaproll where users run it: `install` (CronJob, least-privilege RBAC), the RBAC
//! proof against a real engine run, JSON logs, and the kubectl plugin name.

use std::path::Path;

use serde_json::{Value, json};

use crate::common::*;

const GKE: &str = "examples/gke-daily/snaproll.yaml";
const REPO: &str = "https://git.example.com/ops.git";

fn docs(stdout: &[u8]) -> Vec<Value> {
    let text = String::from_utf8(stdout.to_vec()).unwrap();
    text.split("---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_saphyr::from_str(d).unwrap())
        .collect()
}

fn kinds(objects: &[Value]) -> Vec<&str> {
    objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect()
}

/// A copy of the GKE example with `from` replaced by `to`, in `dir`.
pub(crate) fn variant(dir: &Path, from: &str, to: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(repo_path(GKE)).unwrap();
    assert!(text.contains(from), "{from:?} not in the example");
    let path = dir.join("snaproll.yaml");
    std::fs::write(&path, text.replace(from, to)).unwrap();
    path
}

#[test]
fn install_renders_the_cronjob_and_its_rbac() {
    let out = snaproll()
        .args(["install", "-f", GKE, "--repo", REPO])
        .args(["--image", "ghcr.io/snaproll/snaproll:test"])
        .assert()
        .success();
    let stdout = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    insta::assert_snapshot!("install_gke", stdout);
    let stderr = String::from_utf8(out.get_output().stderr.clone()).unwrap();
    assert!(
        stderr.contains("create secret generic snaproll-git --from-literal=token="),
        "{stderr}"
    );
    let objects = docs(stdout.as_bytes());
    assert_eq!(
        kinds(&objects),
        [
            "ServiceAccount",
            "ConfigMap",
            "Role",
            "RoleBinding",
            "ClusterRole",
            "ClusterRoleBinding",
            "CronJob"
        ]
    );
    // The ConfigMap carries the spec byte for byte.
    assert_eq!(
        objects[1]["data"]["snaproll.yaml"].as_str().unwrap(),
        std::fs::read_to_string(repo_path(GKE)).unwrap()
    );
    let cron = &objects[6];
    let pod = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(cron["spec"]["concurrencyPolicy"], "Forbid");
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        c["args"],
        json!([
            "reconcile",
            "-f",
            "/etc/snaproll/snaproll.yaml",
            "--repo",
            REPO,
            "--push",
            "--apply",
            "--prune",
            "-o",
            "json"
        ])
    );
    let token = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "SNAPROLL_GIT_TOKEN")
        .expect("token env");
    assert_eq!(
        token["valueFrom"]["secretKeyRef"],
        json!({"key": "token", "name": "snaproll-git"})
    );
    // No install object carries the ownership labels prune selects by.
    for o in &objects {
        assert!(
            o["metadata"]["labels"]
                .get("app.kubernetes.io/managed-by")
                .is_none(),
            "{o}"
        );
    }
}

#[test]
fn existing_class_gets_no_cluster_role_and_no_repo_means_apply() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = variant(
        tmp.path(),
        "    deletionPolicy: Delete\n",
        "    existing: true\n",
    );
    let out = snaproll()
        .args(["install", "-f"])
        .arg(&spec)
        .args(["--namespace", "snaproll-system"])
        .assert()
        .success();
    let objects = docs(&out.get_output().stdout);
    assert_eq!(
        kinds(&objects),
        [
            "ServiceAccount",
            "ConfigMap",
            "Role",
            "RoleBinding",
            "CronJob"
        ]
    );
    // The Role lives where the rollout's objects are; the CronJob where the user asked.
    assert_eq!(objects[2]["metadata"]["namespace"], "default");
    assert_eq!(objects[3]["subjects"][0]["namespace"], "snaproll-system");
    assert_eq!(objects[4]["metadata"]["namespace"], "snaproll-system");
    let c = &objects[4]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        c["args"],
        json!([
            "reconcile",
            "-f",
            "/etc/snaproll/snaproll.yaml",
            "--apply",
            "--prune",
            "-o",
            "json"
        ])
    );
    assert!(
        !c["env"].to_string().contains("SNAPROLL_GIT_TOKEN"),
        "no Git, no token"
    );
}

#[test]
fn ssh_remotes_mount_the_key_instead_of_a_token() {
    let out = snaproll()
        .args([
            "install",
            "-f",
            GKE,
            "--repo",
            "git@github.com:acme/ops.git",
        ])
        .args(["--git-secret", "ops-deploy-key"])
        .assert()
        .success();
    let objects = docs(&out.get_output().stdout);
    let pod = &objects[6]["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    let args = pod["containers"][0]["args"].to_string();
    assert!(
        args.contains("\"--ssh-key\",\"/etc/snaproll-git/ssh-privatekey\""),
        "{args}"
    );
    let git = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "git")
        .expect("git volume");
    assert_eq!(git["secret"]["secretName"], "ops-deploy-key");
    assert_eq!(git["secret"]["defaultMode"], 0o400);
    assert_eq!(
        git["secret"]["items"],
        json!([
            {"key": "ssh-privatekey", "path": "ssh-privatekey"},
            {"key": "known_hosts", "path": "known_hosts"},
        ])
    );
    // libgit2 refuses unknown hosts: the host keys sit where it looks, $HOME/.ssh/known_hosts,
    // over the writable scratch volume that $HOME points at.
    let c = &pod["containers"][0];
    let home = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "HOME")
        .expect("HOME set");
    assert_eq!(home["value"], "/tmp");
    let mounts = c["volumeMounts"].as_array().unwrap();
    assert!(
        mounts.contains(&json!({"name": "tmp", "mountPath": "/tmp"})),
        "{mounts:?}"
    );
    assert!(
        mounts.contains(&json!({
            "name": "git",
            "mountPath": "/tmp/.ssh/known_hosts",
            "subPath": "known_hosts",
            "readOnly": true,
        })),
        "{mounts:?}"
    );
    let stderr = String::from_utf8(out.get_output().stderr.clone()).unwrap();
    assert!(
        stderr.contains(
            "--from-file=ssh-privatekey=<key file> --from-file=known_hosts=<(ssh-keyscan github.com)"
        ),
        "{stderr}"
    );
}

#[test]
fn pull_mode_only_commits_and_only_reads() {
    let out = snaproll()
        .args(["install", "-f", GKE, "--repo", REPO, "--pull"])
        .assert()
        .success();
    let objects = docs(&out.get_output().stdout);
    assert_eq!(
        kinds(&objects),
        [
            "ServiceAccount",
            "ConfigMap",
            "Role",
            "RoleBinding",
            "CronJob"
        ]
    );
    assert_eq!(
        objects[2]["rules"],
        json!([
            {"apiGroups": [""], "resources": ["persistentvolumeclaims", "pods", "services"], "verbs": ["list"]},
            {"apiGroups": ["snapshot.storage.k8s.io"], "resources": ["volumesnapshots"], "verbs": ["list"]},
            {"apiGroups": ["apps"], "resources": ["statefulsets"], "verbs": ["list"]},
            {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["list"]},
            {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["snaproll-demo"], "verbs": ["get"]},
        ])
    );
    let c = &objects[4]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        c["args"],
        json!([
            "reconcile",
            "-f",
            "/etc/snaproll/snaproll.yaml",
            "--repo",
            REPO,
            "--push",
            "-o",
            "json"
        ])
    );
    // Pull mode without a repository has nothing to do.
    snaproll()
        .args(["install", "-f", GKE, "--pull"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("--repo"));
}

#[test]
fn bad_flags_fail_with_one_line_and_print_nothing() {
    let out = snaproll()
        .args(["install", "-f", GKE, "--schedule", "every day"])
        .assert()
        .code(2);
    assert!(out.get_output().stdout.is_empty());
    let stderr = String::from_utf8(out.get_output().stderr.clone()).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: --schedule `every day`: a schedule has 5 fields"),
        "{stderr}"
    );

    // --apply writes to the cluster, --out to a directory: one or the other.
    let out = snaproll()
        .args(["install", "-f", GKE, "--apply", "--out", "x"])
        .assert()
        .code(2);
    assert!(out.get_output().stdout.is_empty());
    assert!(!repo_path("x").exists());
}

#[test]
fn install_apply_creates_the_objects_and_a_rerun_writes_nothing() {
    let server = crate::fakeapi::FakeApi::serve();
    let dir = tempfile::tempdir().unwrap();
    let kc = server.kubeconfig(dir.path());
    let run = |extra: &[&str]| {
        let mut cmd = snaproll();
        cmd.args([
            "install",
            "-f",
            GKE,
            "--repo",
            REPO,
            "--apply",
            "--kubeconfig",
        ])
        .arg(&kc)
        .args(["--image", "ghcr.io/snaproll/snaproll:test"])
        .args(extra);
        cmd
    };
    // A dry run checks every object with the server and writes nothing.
    let out = run(&["--dry-run"]).assert().code(0);
    let stdout = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert!(
        stdout.ends_with("Would be: 7 created, 0 configured, 0 unchanged, 0 deleted, 0 skipped\n"),
        "{stdout}"
    );
    assert!(server.api.writes().is_empty(), "{:?}", server.api.writes());
    let dry_runs = server
        .api
        .requests()
        .iter()
        .filter(|r| r.is_dry_run())
        .count();
    assert_eq!(dry_runs, 7);

    server.api.clear_requests();
    let out = run(&[]).assert().code(0);
    let stdout = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert_eq!(
        stdout,
        "ServiceAccount/snaproll-demo (default) created\n\
         ConfigMap/snaproll-demo-spec (default) created\n\
         Role/snaproll-demo (default) created\n\
         RoleBinding/snaproll-demo (default) created\n\
         ClusterRole/snaproll-default-demo created\n\
         ClusterRoleBinding/snaproll-default-demo created\n\
         CronJob/snaproll-demo (default) created\n\
         7 created, 0 configured, 0 unchanged, 0 deleted, 0 skipped\n"
    );
    // Every object was dry-run before the first write, then written in dependency order.
    let reqs = server.api.requests();
    let first_write = reqs.iter().position(|r| r.is_write()).unwrap();
    assert_eq!(
        reqs[..first_write]
            .iter()
            .filter(|r| r.is_dry_run())
            .count(),
        7
    );
    let written: Vec<String> = server.api.writes().iter().map(|r| r.resource()).collect();
    assert_eq!(
        written,
        [
            "serviceaccounts",
            "configmaps",
            "roles",
            "rolebindings",
            "clusterroles",
            "clusterrolebindings",
            "cronjobs"
        ]
    );
    assert!(
        server
            .api
            .writes()
            .iter()
            .all(|r| r.method == "PATCH" && r.query.contains("fieldManager=snaproll"))
    );
    // The objects are in the cluster as rendered.
    let expected = docs(
        &snaproll()
            .args(["install", "-f", GKE, "--repo", REPO])
            .args(["--image", "ghcr.io/snaproll/snaproll:test"])
            .assert()
            .success()
            .get_output()
            .stdout,
    );
    let cron = server
        .block_on(
            server
                .api
                .get("/apis/batch/v1/namespaces/default/cronjobs/snaproll-demo"),
        )
        .expect("CronJob stored");
    assert_eq!(cron["spec"]["schedule"], expected[6]["spec"]["schedule"]);
    let role = server
        .block_on(
            server
                .api
                .get("/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles/snaproll-demo"),
        )
        .expect("Role stored");
    assert_eq!(role["rules"], expected[2]["rules"]);
    assert!(
        server
            .block_on(
                server
                    .api
                    .get("/apis/rbac.authorization.k8s.io/v1/clusterroles/snaproll-default-demo")
            )
            .is_some()
    );

    // A re-run reads each object and writes nothing (no apply, no dry-run).
    server.api.clear_requests();
    let out = run(&[]).assert().code(0);
    assert_eq!(
        String::from_utf8(out.get_output().stdout.clone()).unwrap(),
        "0 created, 0 configured, 7 unchanged, 0 deleted, 0 skipped\n"
    );
    let reqs = server.api.requests();
    assert!(reqs.iter().all(|r| r.method == "GET"), "{reqs:?}");
    // One per object, and the spec ConfigMap's once more first for the previous inventory.
    assert_eq!(reqs.len(), 8);

    // A changed flag reconfigures only the CronJob.
    let out = run(&["--schedule", "0 3 * * *"]).assert().code(0);
    let stdout = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert!(
        stdout.starts_with("CronJob/snaproll-demo (default) configured: "),
        "{stdout}"
    );
    assert!(stdout.ends_with("0 created, 1 configured, 6 unchanged, 0 deleted, 0 skipped\n"));
}

#[test]
fn install_apply_prunes_what_it_no_longer_renders_and_only_what_it_applied() {
    const CR: &str = "/apis/rbac.authorization.k8s.io/v1/clusterroles/snaproll-default-demo";
    const CRB: &str =
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/snaproll-default-demo";
    let server = crate::fakeapi::FakeApi::serve();
    let dir = tempfile::tempdir().unwrap();
    let kc = server.kubeconfig(dir.path());
    let run = |extra: &[&str]| {
        let mut cmd = snaproll();
        cmd.args(["install", "-f", GKE, "--repo", REPO, "--apply"])
            .arg("--kubeconfig")
            .arg(&kc)
            .args(["--image", "ghcr.io/snaproll/snaproll:test"])
            .args(extra);
        let out = cmd.output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (code, stdout, stderr) = run(&[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.ends_with("7 created, 0 configured, 0 unchanged, 0 deleted, 0 skipped\n"));
    // The ClusterRoleBinding is replaced by a look-alike another tool applied: same name and
    // labels, but none of its fields are snaproll's.
    let binding = server.block_on(server.api.get(CRB)).unwrap();
    server.block_on(server.api.delete(CRB));
    let lookalike = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "snaproll-default-demo", "labels": binding["metadata"]["labels"]},
        "roleRef": binding["roleRef"],
        "subjects": binding["subjects"],
    });
    server.block_on(server.api.apply_as("kubectl", CRB, &lookalike, false));
    // Pull mode renders no ClusterRole: the one install applied goes, the look-alike stays.
    let (code, dry, stderr) = run(&["--pull", "--dry-run"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(server.block_on(server.api.get(CR)).is_some());
    server.api.clear_requests();
    let (code, stdout, stderr) = run(&["--pull"]);
    assert_eq!(code, 0, "{stderr}");
    insta::assert_snapshot!("install_pull_dry_run_prunes", dry);
    insta::assert_snapshot!("install_pull_prunes", stdout);
    assert!(server.block_on(server.api.get(CR)).is_none());
    assert!(server.block_on(server.api.get(CRB)).is_some());
    let deletes: Vec<String> = server
        .api
        .writes()
        .iter()
        .filter(|r| r.method == "DELETE")
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(deletes, [CR]);
    // Nothing more to prune: the inventory now lists only what pull mode renders.
    let (code, stdout, _) = run(&["--pull"]);
    assert_eq!(code, 0);
    assert_eq!(
        stdout,
        "0 created, 0 configured, 5 unchanged, 0 deleted, 0 skipped\n"
    );
}

#[test]
fn install_apply_failures_exit_4_and_write_nothing_after_a_failed_dry_run() {
    use crate::fakeapi::Fault;
    let server = crate::fakeapi::FakeApi::serve();
    let dir = tempfile::tempdir().unwrap();
    let kc = server.kubeconfig(dir.path());
    server.api.inject(
        Fault::status(
            "PATCH",
            "/apis/batch/v1/namespaces/default/cronjobs/snaproll-demo",
            403,
            "Forbidden",
            "cronjobs.batch is forbidden",
        )
        .dry_run(true),
    );
    let out = snaproll()
        .args(["install", "-f", GKE, "--apply", "--kubeconfig"])
        .arg(&kc)
        .assert()
        .code(4);
    let stderr = String::from_utf8(out.get_output().stderr.clone()).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: apply stopped after 0 created, 0 configured; nothing was pruned: CronJob/snaproll-demo (default): rejected by server-side dry-run, nothing was written: 403 Forbidden"),
        "{stderr}"
    );
    assert!(server.api.writes().is_empty(), "{:?}", server.api.writes());
    // No cluster at all: exit 4, one line.
    let out = snaproll()
        .args(["install", "-f", GKE, "--apply", "--kubeconfig"])
        .arg(dir.path().join("missing"))
        .assert()
        .code(4);
    let stderr = String::from_utf8(out.get_output().stderr.clone()).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: cannot configure cluster access"),
        "{stderr}"
    );
}

#[test]
fn snapshot_timeout_passes_through_to_the_reconcile_cronjob() {
    let out = snaproll()
        .args([
            "install",
            "-f",
            GKE,
            "--repo",
            REPO,
            "--snapshot-timeout",
            "12h",
        ])
        .assert()
        .success();
    let objects = docs(&out.get_output().stdout);
    let c = &objects[6]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let at = args
        .iter()
        .position(|a| *a == "--snapshot-timeout")
        .expect("passed");
    assert_eq!(args[at + 1], "12h");
    // The CronJob's reconcile takes what was rendered.
    let tmp = tempfile::tempdir().unwrap();
    snaproll()
        .args([
            "reconcile",
            "-f",
            GKE,
            "--generation",
            "2021-07-15",
            "--repo",
        ])
        .arg(tmp.path().join("gitops"))
        .args(["--snapshot-timeout", args[at + 1]])
        .assert()
        .success();
    // Not a duration, or no reconcile to pass it to: exit 2, nothing printed.
    for extra in [
        &["--repo", REPO, "--snapshot-timeout", "soon"][..],
        &["--snapshot-timeout", "12h"][..],
    ] {
        let out = snaproll()
            .args(["install", "-f", GKE])
            .args(extra)
            .assert()
            .code(2);
        assert!(out.get_output().stdout.is_empty());
        let stderr = String::from_utf8(out.get_output().stderr.clone()).unwrap();
        assert!(
            stderr.contains("--snapshot-timeout") || stderr.contains("--repo"),
            "{stderr}"
        );
    }
    // The environment variable install documents is passed through the same way; without
    // either the CronJob gets no flag: the spec's `snapshot.timeout` holds for it.
    let cron_args = |env: Option<&str>| -> Vec<String> {
        let mut cmd = snaproll();
        cmd.args(["install", "-f", GKE, "--repo", REPO]);
        if let Some(v) = env {
            cmd.env("SNAPROLL_SNAPSHOT_TIMEOUT", v);
        }
        let objects = docs(&cmd.assert().success().get_output().stdout);
        objects[6]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect()
    };
    let with_env = cron_args(Some("12h"));
    assert!(
        with_env
            .windows(2)
            .any(|w| w == ["--snapshot-timeout", "12h"]),
        "{with_env:?}"
    );
    let plain = cron_args(None);
    assert!(
        !plain.iter().any(|a| a == "--snapshot-timeout"),
        "{plain:?}"
    );
}

#[test]
fn install_out_writes_one_file_per_object_in_apply_order() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("install");
    snaproll()
        .args(["install", "-f", GKE, "--repo", REPO, "--out"])
        .arg(&dir)
        .assert()
        .success();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "10-serviceaccount-snaproll-demo.yaml",
            "20-configmap-snaproll-demo-spec.yaml",
            "30-role-snaproll-demo.yaml",
            "40-rolebinding-snaproll-demo.yaml",
            "50-clusterrole-snaproll-default-demo.yaml",
            "60-clusterrolebinding-snaproll-default-demo.yaml",
            "70-cronjob-snaproll-demo.yaml"
        ]
    );
}

// The Role's sufficiency and minimality are proven against the requests of whole lifecycles
// in `lifecycle.rs` (`reconcile`: push, pull and Git-less mode, with a managed and an existing
// snapshot class).
