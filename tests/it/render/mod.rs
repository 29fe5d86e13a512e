//! Rendering, validation and the validate/render commands, driven through the binary.

use std::fs;
use std::path::Path;

use crate::common::*;

mod bad;
mod rules;

const GEN: &str = "2021-07-15";

fn example(name: &str) -> String {
    format!("examples/{name}/snaproll.yaml")
}

fn gke_text() -> String {
    fs::read_to_string(repo_path(&example("gke-daily"))).unwrap()
}

/// The GKE example with `from` replaced by `to` (which must occur).
fn gke_with(from: &str, to: &str) -> String {
    let base = gke_text();
    assert!(
        base.contains(from),
        "mutation target {from:?} not in the example"
    );
    base.replacen(from, to, 1)
}

fn render_stdout(spec: &str) -> String {
    let out = snaproll()
        .args(["render", "-f", spec, "--generation", GEN])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn gke_daily_render_matches_golden() {
    insta::assert_snapshot!("render_gke_daily", render_stdout(&example("gke-daily")));
}

#[test]
fn eks_render_matches_golden() {
    insta::assert_snapshot!("render_eks", render_stdout(&example("eks")));
}

#[test]
fn multi_render_matches_golden() {
    insta::assert_snapshot!("render_multi", render_stdout(&example("multi")));
}

/// `consumer.verify`: the verify Job and the claim it mounts read-only, restored from the
/// generation's snapshot, in the sync wave before the StatefulSet's.
#[test]
fn verified_render_matches_golden() {
    let out = render_stdout(&example("verified"));
    assert!(out.contains("kind: Job\n"), "{out}");
    assert!(out.contains("  name: index-2021-07-15-verify\n"), "{out}");
    insta::assert_snapshot!("render_verified", out);
}

#[test]
fn model_weights_render_matches_golden() {
    let out = render_stdout(&example("model-weights"));
    // `switch: atomic`: the Service selects the rendered generation's pods only.
    assert!(
        out.contains("    snaproll.dev/generation: \"2021-07-15\"\n"),
        "{out}"
    );
    // `snapshot.copies: 3`: three snapshots, and a claim per replica restoring round-robin.
    let copies: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("  name: weights-2021-07-15-"))
        .collect();
    assert_eq!(copies, ["0", "1", "2"], "{out}");
    let sources: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("    name: weights-2021-07-15-"))
        .collect();
    assert_eq!(sources, ["0", "1", "2", "0", "1", "2", "0", "1"], "{out}");
    insta::assert_snapshot!("render_model_weights", out);
}

#[test]
fn render_is_byte_identical_across_runs() {
    let a = render_stdout(&example("multi"));
    let b = render_stdout(&example("multi"));
    assert_eq!(a, b);
}

#[test]
fn render_objects_come_in_apply_order() {
    let out = render_stdout(&example("gke-daily"));
    let kinds: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("kind: "))
        .collect();
    assert_eq!(
        kinds,
        [
            "VolumeSnapshotClass",
            "PersistentVolumeClaim",
            "Pod",
            "VolumeSnapshot",
            "Service",
            "StatefulSet"
        ]
    );
}

#[test]
fn generation_labels_are_quoted_so_yaml11_readers_keep_strings() {
    let out = render_stdout(&example("gke-daily"));
    assert!(
        out.contains("snaproll.dev/generation: \"2021-07-15\""),
        "{out}"
    );
    assert!(!out.contains("generation: 2021-07-15"));
}

#[test]
fn statefulset_claims_restore_from_the_dated_snapshot() {
    let out = render_stdout(&example("gke-daily"));
    assert!(out.contains("name: consumer-2021-07-15\n"));
    assert!(out.contains(
        "      dataSource:\n        apiGroup: snapshot.storage.k8s.io\n        kind: VolumeSnapshot\n        name: data-2021-07-15\n"
    ));
    assert!(out.contains("  volumeSnapshotClassName: csi-gce-pd-snapshot-class\n"));
    assert!(out.contains("  serviceName: consumer\n"));
}

#[test]
fn default_generation_is_todays_utc_date() {
    let out = snaproll()
        .args(["render", "-f", &example("gke-daily")])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let today = jiff::Timestamp::now().strftime("%Y-%m-%d").to_string();
    assert!(
        text.contains(&format!("name: consumer-{today}\n")),
        "{text}"
    );
}

#[test]
fn validate_reports_counts() {
    let out = snaproll()
        .args(["validate", "-f", &example("multi"), "--generation", GEN])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    insta::assert_snapshot!("validate_multi", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn validate_prints_gke_restore_rate_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("s.yaml");
    fs::write(&spec, gke_with("replicas: 3", "replicas: 12")).unwrap();
    let out = snaproll()
        .args([
            "validate",
            "-f",
            spec.to_str().unwrap(),
            "--generation",
            GEN,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    insta::assert_snapshot!(
        "warning_gke_restore_rate",
        scrub(&String::from_utf8_lossy(&out.stderr), tmp.path())
    );
}

/// An existing class is not rendered, but its `driver` and `parameters` still feed the GKE
/// restore-rate check: the multi example's 8-replica consumer passes only with image snapshots.
#[test]
fn existing_class_driver_hint_enables_the_restore_rate_warning() {
    let text = fs::read_to_string(repo_path(&example("multi"))).unwrap();
    let hinted = "    parameters: {snapshot-type: images}\n";
    assert!(text.contains(hinted));
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("s.yaml");
    for (content, warns) in [(text.clone(), false), (text.replace(hinted, ""), true)] {
        fs::write(&spec, content).unwrap();
        let out = snaproll()
            .args([
                "validate",
                "-f",
                spec.to_str().unwrap(),
                "--generation",
                GEN,
            ])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            stderr.contains("8 replicas restore from one GKE PD snapshot"),
            warns,
            "{stderr}"
        );
    }
}

/// `snaproll render -f SPEC --generation G --out OUT`.
fn render_out(
    spec: &str,
    generation: &str,
    out: impl AsRef<std::ffi::OsStr>,
) -> assert_cmd::Command {
    let mut cmd = snaproll();
    cmd.args(["render", "-f", spec, "--generation", generation, "--out"])
        .arg(out);
    cmd
}

#[test]
fn render_out_writes_one_file_per_object_and_a_kustomization() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("manifests");
    render_out(&example("gke-daily"), GEN, &out)
        .assert()
        .success();
    let mut names: Vec<String> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    insta::assert_snapshot!("render_out_layout", names.join("\n"));
    insta::assert_snapshot!(
        "render_out_kustomization",
        fs::read_to_string(out.join("kustomization.yaml")).unwrap()
    );
    // A re-render into the same directory replaces it cleanly.
    render_out(&example("gke-daily"), "2021-07-16", &out)
        .assert()
        .success();
    assert!(out.join("60-statefulset-consumer-2021-07-16.yaml").exists());
    assert!(!out.join("60-statefulset-consumer-2021-07-15.yaml").exists());
    assert_no_staging_left(tmp.path());
}

#[test]
fn render_out_refuses_to_replace_a_foreign_directory() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("precious.txt"), "keep me").unwrap();
    let out = render_out(&example("gke-daily"), GEN, tmp.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = scrub(&String::from_utf8_lossy(&out.stderr), tmp.path());
    insta::assert_snapshot!("render_out_foreign_dir", err);
    assert_eq!(
        fs::read_to_string(tmp.path().join("precious.txt")).unwrap(),
        "keep me"
    );
}

#[test]
fn failed_render_keeps_the_previous_out_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m");
    render_out(&example("gke-daily"), GEN, &out)
        .assert()
        .success();
    let before = dir_snapshot(&out);
    let spec = tmp.path().join("bad.yaml");
    fs::write(&spec, gke_with("replicas: 3", "replicas: -1")).unwrap();
    let res = render_out(spec.to_str().unwrap(), GEN, &out)
        .output()
        .unwrap();
    assert_eq!(res.status.code(), Some(2));
    assert_eq!(dir_snapshot(&out), before);
    assert_no_staging_left(tmp.path());
}

/// A render that fails after other render workers have already written files of the datasets
/// before it (each writes its own as it goes) leaves the previous `--out` directory as it was
/// and no staging directory behind.
#[test]
fn render_failing_midway_keeps_the_previous_out_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = String::from(
        "apiVersion: snaproll.dev/v1alpha1\nkind: DatasetRollout\nmetadata:\n  name: many\n  namespace: many\nspec:\n  snapshotClass:\n    name: many-class\n    driver: pd.csi.storage.gke.io\n  datasets:\n",
    );
    for i in 0..80 {
        spec.push_str(&format!(
            "    - name: data-{i:02}\n      storage: {{size: 1Gi}}\n      producer: {{image: busybox}}\n      consumer: {{name: consumer-{i:02}, image: busybox}}\n"
        ));
    }
    let spec_path = tmp.path().join("many.yaml");
    fs::write(&spec_path, spec).unwrap();
    let out = tmp.path().join("m");
    render_out(spec_path.to_str().unwrap(), GEN, &out)
        .assert()
        .success();
    let before = dir_snapshot(&out);
    assert_eq!(before.len(), 80 * 5 + 2);
    // The Pod of the last dataset fails: the runs of datasets before it are written first.
    let templates = tmp.path().join("templates");
    fs::create_dir(&templates).unwrap();
    let pod = include_str!("../../../templates/pod.yaml.j2").replace(
        "restartPolicy: OnFailure",
        "restartPolicy: {% if dataset.name == 'data-79' %}{{ no_such_value }}{% endif %}OnFailure",
    );
    fs::write(templates.join("pod.yaml.j2"), pod).unwrap();
    let res = render_out(spec_path.to_str().unwrap(), "2021-07-16", &out)
        .arg("--templates")
        .arg(&templates)
        .output()
        .unwrap();
    assert_eq!(res.status.code(), Some(2));
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(err.contains("pod.yaml.j2"), "{err}");
    assert_eq!(dir_snapshot(&out), before);
    assert_no_staging_left(tmp.path());
}

fn dir_snapshot(dir: &Path) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().into_string().unwrap(),
                fs::read_to_string(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

fn assert_no_staging_left(dir: &Path) {
    let leftovers: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(".snaproll-"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "staging directories left: {leftovers:?}"
    );
}

#[test]
fn missing_spec_file_is_invalid_input() {
    let res = snaproll()
        .args(["validate", "-f", "does/not/exist.yaml"])
        .output()
        .unwrap();
    assert_eq!(res.status.code(), Some(2));
    insta::assert_snapshot!("missing_spec_file", String::from_utf8_lossy(&res.stderr));
}

#[test]
fn every_command_has_help_with_examples() {
    for cmd in [
        "validate",
        "render",
        "diff",
        "apply",
        "reconcile",
        "status",
        "completions",
    ] {
        let out = snaproll().args([cmd, "--help"]).output().unwrap();
        assert!(out.status.success(), "{cmd} --help failed");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Examples:"), "{cmd} --help has no examples");
    }
    let out = snaproll().arg("--help").output().unwrap();
    insta::assert_snapshot!("help", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn completions_are_generated_for_bash() {
    let out = snaproll().args(["completions", "bash"]).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("_snaproll()"));
}

// ---- Rules added after the first audit: each validator rule has its own test. ----

/// Kubernetes limits subdomains to 253 characters in all, not 63 per dot-separated part, and a
/// dataset name of up to 63 characters gives a producer Pod name of up to 83: both valid.
#[test]
fn long_subdomain_and_dataset_names_are_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("s.yaml");
    let text = gke_with(
        "name: csi-gce-pd-snapshot-class",
        &format!("name: {}", "k".repeat(70)),
    )
    .replacen("- name: data", &format!("- name: {}", "d".repeat(63)), 1);
    fs::write(&spec, text).unwrap();
    let out = snaproll()
        .args(["render", "-f", spec.to_str().unwrap(), "--generation", GEN])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8(out.stdout).unwrap();
    assert!(yaml.contains(&format!("name: {}-producer-{GEN}", "d".repeat(63))));
}

#[test]
fn render_out_refuses_a_file_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("out");
    fs::write(&file, "mine").unwrap();
    let res = render_out(&example("gke-daily"), GEN, &file)
        .output()
        .unwrap();
    assert_eq!(res.status.code(), Some(2));
    assert_eq!(
        scrub(&String::from_utf8_lossy(&res.stderr), tmp.path()),
        "error: --out [TMP]/out is a file; --out takes a directory (created when missing)\n"
    );
    assert_eq!(fs::read_to_string(&file).unwrap(), "mine");
    assert_no_staging_left(tmp.path());
}

#[test]
fn render_out_refuses_the_current_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = repo_path(&example("gke-daily"));
    let res = snaproll()
        .current_dir(tmp.path())
        .args(["render", "--generation", GEN, "--out", ".", "-f"])
        .arg(&spec)
        .output()
        .unwrap();
    assert_eq!(res.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&res.stderr),
        "error: --out . contains the current directory, which cannot be replaced; choose another directory\n"
    );
    assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 0);
}

/// kustomize re-sorts resources by its own kind list unless told otherwise: the rendered
/// kustomization must keep snaproll's apply order (checked with kubectl when it is installed).
#[test]
fn kustomization_keeps_apply_order_in_kubectl_kustomize() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    render_out(&example("gke-daily"), GEN, &out)
        .assert()
        .success();
    let k = fs::read_to_string(out.join("kustomization.yaml")).unwrap();
    assert!(k.contains("sortOptions:\n  order: fifo\n"), "{k}");
    let Ok(res) = std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(&out)
        .output()
    else {
        eprintln!("kubectl not installed: checked the kustomization text only");
        return;
    };
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let built = String::from_utf8(res.stdout).unwrap();
    let kinds: Vec<&str> = built
        .lines()
        .filter_map(|l| l.strip_prefix("kind: "))
        .collect();
    assert_eq!(
        kinds,
        [
            "VolumeSnapshotClass",
            "PersistentVolumeClaim",
            "Pod",
            "VolumeSnapshot",
            "Service",
            "StatefulSet"
        ]
    );
}

/// A spec of `n` datasets that between them use every optional field the templates read, values
/// that take the fast path and values that do not (non-ASCII and quoted text, a deadline over
/// `i32`), so the objects fall into many shapes and some shapes repeat.
fn varied_spec(n: usize) -> String {
    let mut s = String::from(
        "apiVersion: snaproll.dev/v1alpha1\nkind: DatasetRollout\nmetadata:\n  name: varied\n  namespace: team-a\nspec:\n  snapshotClass:\n    name: varied-class\n    driver: ebs.csi.aws.com\n    deletionPolicy: Retain\n    parameters: {tagSpecification_1: \"team=a\"}\n  datasets:\n",
    );
    for i in 0..n {
        s.push_str(&format!(
            "    - name: d{i}\n      storage:\n        size: {}Gi\n",
            i % 7 + 1
        ));
        match i % 3 {
            0 => s.push_str("        storageClassName: standard-rwo\n"),
            1 => s.push_str(
                "        accessModes: [ReadWriteOnce, ReadOnlyMany]\n        volumeMode: Block\n",
            ),
            _ => {}
        }
        s.push_str("      producer:\n        image: alpine:3.20\n");
        s.push_str(&format!(
            "        command: [\"/bin/sh\", \"-c\"]\n        args: [\"{}\"]\n",
            match i % 10 {
                0 => format!("echo héllo wörld {i} > /data/f"),
                1 => format!("echo \\\"quoted\\\" 'single' {i} # not a comment"),
                2 => "yes".to_string(),
                _ => format!("echo {i}"),
            }
        ));
        if i % 4 == 0 {
            s.push_str(&format!(
                "        env: [{{name: A, value: \"x{i}\"}}, {{name: B, value: \"2021-07-15\"}}]\n"
            ));
        }
        if i % 5 == 0 {
            s.push_str("        resources: {requests: {cpu: 100m, memory: 64Mi}, limits: {memory: 128Mi}}\n");
        }
        if i % 6 == 0 {
            s.push_str("        nodeSelector: {disk: ssd, zone: \"1\"}\n");
        }
        if i % 7 == 0 {
            s.push_str("        tolerations: [{key: dedicated, operator: Equal, value: data, effect: NoSchedule}, {operator: Exists, effect: NoExecute, tolerationSeconds: 3600}]\n");
        }
        if i % 8 == 0 {
            s.push_str("        serviceAccountName: filler\n");
        }
        if i % 9 == 0 {
            s.push_str("        activeDeadlineSeconds: 5000000000\n");
        }
        s.push_str(&format!(
            "      consumer:\n        name: c{i}\n        replicas: {}\n        image: nginx:1.27\n",
            i % 4 + 1
        ));
        if i % 2 == 0 {
            s.push_str("        readOnly: true\n        mountPath: /srv\n");
        }
        if i % 5 == 1 {
            s.push_str("        claimName: html\n        pvcRetentionPolicy: {whenDeleted: Retain, whenScaled: Delete}\n");
        }
        // `consumer.verify` on every third dataset: its Job and claim take the fast path too.
        match i % 6 {
            0 => s.push_str(&format!(
                "        verify: {{image: busybox:1.36, command: [sh, -c, \"sha256sum -c /srv/SUMS # {i}\"], timeout: 1h30m}}\n"
            )),
            3 => s.push_str(&format!(
                "        verify: {{image: busybox, command: [/check], args: [\"--id={i}\", \"yes\"]}}\n"
            )),
            _ => {}
        }
        if i % 4 == 1 {
            s.push_str(&format!(
                "        command: [/app]\n        args: [\"--id={i}\"]\n        env: [{{name: ID, value: \"{i}\"}}]\n        resources: {{limits: {{cpu: \"1\"}}}}\n"
            ));
        }
        match i % 3 {
            0 => s.push_str("        ports: [{name: http, containerPort: 8080}]\n        service: {type: ClusterIP, ports: [{name: http, port: 80, targetPort: http}]}\n"),
            1 => s.push_str(&format!(
                "        ports: [{{name: dns, containerPort: {}, protocol: UDP}}]\n        service: {{ports: [{{port: 53, targetPort: {}, protocol: UDP}}]}}\n",
                5300 + i,
                5300 + i
            )),
            _ => {}
        }
    }
    s
}

/// Objects of a known shape skip the YAML re-read and the typed round trip
/// (src/render/shapes.rs); the objects and files must be exactly those of the full path, for
/// the shipped examples and a varied 200-dataset spec, with values kept and text only.
#[test]
fn fast_path_renders_the_bytes_of_the_full_path() {
    use snaproll::render::{Plan, Renderer};
    let mut specs: Vec<(String, String)> = ["gke-daily", "eks", "multi", "verified"]
        .iter()
        .map(|e| {
            (
                e.to_string(),
                fs::read_to_string(repo_path(&example(e))).unwrap(),
            )
        })
        .collect();
    specs.push(("varied-200".to_string(), varied_spec(200)));
    for (name, text) in specs {
        let loaded = snaproll::spec::parse_str(&name, &text).unwrap();
        let plan = Plan::single(&loaded.rollout, GEN);
        let full = Renderer::new(None)
            .unwrap()
            .full_path()
            .render(&loaded.rollout, &plan)
            .unwrap();
        let fast = Renderer::new(None)
            .unwrap()
            .render(&loaded.rollout, &plan)
            .unwrap();
        assert_eq!(fast.files(), full.files(), "{name}");
        let values = |set: &snaproll::render::RenderedSet| {
            set.objects
                .iter()
                .map(|o| o.value.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(values(&fast), values(&full), "{name}");
        let text_only = Renderer::new(None)
            .unwrap()
            .text_only()
            .render(&loaded.rollout, &plan)
            .unwrap();
        assert_eq!(text_only.files(), full.files(), "{name}");
    }
}
