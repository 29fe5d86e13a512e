//! Rendering, validation and the validate/render commands, driven through the binary.

use std::fs;
use std::path::Path;

use crate::common::*;

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

#[test]
fn render_out_writes_one_file_per_object_and_a_kustomization() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("manifests");
    snaproll()
        .args([
            "render",
            "-f",
            &example("gke-daily"),
            "--generation",
            GEN,
            "--out",
        ])
        .arg(&out)
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
    snaproll()
        .args([
            "render",
            "-f",
            &example("gke-daily"),
            "--generation",
            "2021-07-16",
            "--out",
        ])
        .arg(&out)
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
    let out = snaproll()
        .args([
            "render",
            "-f",
            &example("gke-daily"),
            "--generation",
            GEN,
            "--out",
        ])
        .arg(tmp.path())
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
    snaproll()
        .args([
            "render",
            "-f",
            &example("gke-daily"),
            "--generation",
            GEN,
            "--out",
        ])
        .arg(&out)
        .assert()
        .success();
    let before = dir_snapshot(&out);
    let spec = tmp.path().join("bad.yaml");
    fs::write(&spec, gke_with("replicas: 3", "replicas: -1")).unwrap();
    let res = snaproll()
        .args([
            "render",
            "-f",
            spec.to_str().unwrap(),
            "--generation",
            GEN,
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(res.status.code(), Some(2));
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

/// Runs `validate` and `render --out` on a bad spec and checks the exact outcome: exit code 2,
/// one error line (snapshotted as `name`), no panic, and nothing written to `--out`.
fn rejects(name: &str, spec: &[u8], extra: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("snaproll.yaml");
    fs::write(&path, spec).unwrap();
    let out_dir = tmp.path().join("out");
    for cmd in ["validate", "render"] {
        let mut c = snaproll();
        c.current_dir(tmp.path())
            .args([cmd, "-f", "snaproll.yaml"])
            .args(extra);
        if cmd == "render" {
            c.arg("--out").arg(&out_dir);
        }
        let res = c.output().unwrap();
        let stderr = String::from_utf8_lossy(&res.stderr).to_string();
        assert_eq!(res.status.code(), Some(2), "{name}/{cmd}: {stderr}");
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
        assert_eq!(
            stderr.lines().count(),
            1,
            "{name}/{cmd}: not one line: {stderr}"
        );
        assert!(res.stdout.is_empty(), "{name}/{cmd}: wrote to stdout");
        assert!(!out_dir.exists(), "{name}: render wrote --out");
        assert_no_staging_left(tmp.path());
        if cmd == "validate" {
            insta::assert_snapshot!(name, scrub(stderr.trim_end(), tmp.path()));
        }
    }
}

fn rejects_text(name: &str, spec: &str) {
    rejects(name, spec.as_bytes(), &["--generation", GEN]);
}

// ---- One test per validation rule (exact message, exit code 2). ----

#[test]
fn rule_api_version_must_be_supported() {
    rejects_text(
        "rule_api_version",
        &gke_with("snaproll.dev/v1alpha1", "snaproll.dev/v9"),
    );
}

#[test]
fn rule_kind_must_be_dataset_rollout() {
    rejects_text(
        "rule_kind",
        &gke_with("kind: DatasetRollout", "kind: Rollout"),
    );
}

#[test]
fn rule_rollout_name_is_rfc1123() {
    rejects_text(
        "rule_rollout_name",
        &gke_with("  name: demo", "  name: Demo_Rollout"),
    );
}

#[test]
fn rule_namespace_is_rfc1123() {
    rejects_text(
        "rule_namespace",
        &gke_with("namespace: default", "namespace: -prod"),
    );
}

#[test]
fn rule_class_needs_a_driver_unless_existing() {
    rejects_text(
        "rule_class_driver",
        &gke_with("    driver: pd.csi.storage.gke.io\n", ""),
    );
}

#[test]
fn rule_class_name_is_a_subdomain() {
    rejects_text(
        "rule_class_name",
        &gke_with("name: csi-gce-pd-snapshot-class", "name: csi_gce"),
    );
}

#[test]
fn rule_deletion_policy_is_delete_or_retain() {
    rejects_text(
        "rule_deletion_policy",
        &gke_with("deletionPolicy: Delete", "deletionPolicy: Keep"),
    );
}

#[test]
fn rule_producer_deadline_is_positive() {
    rejects_text(
        "rule_producer_deadline",
        &gke_with(
            "        mountPath: /data\n",
            "        mountPath: /data\n        activeDeadlineSeconds: 0\n",
        ),
    );
}

#[test]
fn rule_producer_max_restarts_is_not_negative() {
    rejects_text(
        "rule_producer_max_restarts",
        &gke_with(
            "        mountPath: /data\n",
            "        mountPath: /data\n        maxRestarts: -1\n",
        ),
    );
}

#[test]
fn rule_datasets_must_not_be_empty() {
    let base = gke_text();
    let cut = base.find("  datasets:").unwrap();
    rejects_text(
        "rule_datasets_empty",
        &format!("{}  datasets: []\n", &base[..cut]),
    );
}

#[test]
fn rule_dataset_names_are_unique() {
    let base = gke_text();
    let start = base.find("    - name: data").unwrap();
    let dataset = &base[start..];
    let second = dataset.replace("name: consumer", "name: consumer-b");
    rejects_text("rule_dataset_duplicate", &format!("{base}{second}"));
}

#[test]
fn rule_consumer_names_are_unique() {
    let base = gke_text();
    let start = base.find("    - name: data").unwrap();
    let second = base[start..].replace("- name: data", "- name: data-b");
    rejects_text("rule_consumer_duplicate", &format!("{base}{second}"));
}

#[test]
fn rule_dataset_name_rejects_path_like_names() {
    rejects_text(
        "rule_dataset_name_path",
        &gke_with("- name: data", "- name: ../x"),
    );
}

#[test]
fn rule_consumer_name_fits_the_statefulset_limit() {
    rejects_text(
        "rule_consumer_name_length",
        &gke_with("name: consumer", &format!("name: {}", "c".repeat(42))),
    );
}

#[test]
fn rule_consumer_name_of_41_characters_is_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("s.yaml");
    fs::write(
        &spec,
        gke_with("name: consumer", &format!("name: {}", "c".repeat(41))),
    )
    .unwrap();
    snaproll()
        .args([
            "validate",
            "-f",
            spec.to_str().unwrap(),
            "--generation",
            GEN,
        ])
        .assert()
        .success();
}

#[test]
fn rule_size_is_a_quantity() {
    rejects_text("rule_size_quantity", &gke_with("size: 10Gi", "size: 10GB"));
}

#[test]
fn rule_size_is_positive() {
    rejects_text("rule_size_positive", &gke_with("size: 10Gi", "size: \"0\""));
}

#[test]
fn rule_access_modes_are_known() {
    rejects_text(
        "rule_access_mode_enum",
        &gke_with("[ReadWriteOnce]", "[ReadWriteSometimes]"),
    );
}

#[test]
fn rule_access_modes_are_not_empty() {
    rejects_text(
        "rule_access_modes_empty",
        &gke_with("[ReadWriteOnce]", "[]"),
    );
}

#[test]
fn rule_access_modes_do_not_repeat() {
    rejects_text(
        "rule_access_modes_repeat",
        &gke_with("[ReadWriteOnce]", "[ReadWriteOnce, ReadWriteOnce]"),
    );
}

#[test]
fn rule_replicas_are_not_negative() {
    rejects_text(
        "rule_replicas_negative",
        &gke_with("replicas: 3", "replicas: -3"),
    );
}

#[test]
fn rule_replicas_are_whole_numbers() {
    rejects_text(
        "rule_replicas_type",
        &gke_with("replicas: 3", "replicas: three"),
    );
}

#[test]
fn rule_image_is_not_empty() {
    rejects_text(
        "rule_image_empty",
        &gke_with("    image: ubuntu:22.04", "    image: \"\""),
    );
}

#[test]
fn rule_mount_path_is_absolute() {
    rejects_text(
        "rule_mount_path",
        &gke_with("mountPath: /data", "mountPath: data"),
    );
}

#[test]
fn rule_keep_is_at_least_one() {
    rejects_text("rule_keep", &gke_with("keep: 1", "keep: 0"));
}

#[test]
fn rule_schedule_is_daily_or_manual() {
    rejects_text(
        "rule_schedule",
        &gke_with("schedule: daily", "schedule: hourly"),
    );
}

#[test]
fn rule_resource_quantities_parse() {
    rejects_text(
        "rule_resources_quantity",
        &gke_with(
            "        mountPath: /data\n      generations",
            "        mountPath: /data\n        resources:\n          requests: {cpu: lots}\n      generations",
        ),
    );
}

#[test]
fn rule_requests_do_not_exceed_limits() {
    rejects_text(
        "rule_request_above_limit",
        &gke_with(
            "        mountPath: /data\n      generations",
            "        mountPath: /data\n        resources:\n          requests: {memory: 2Gi}\n          limits: {memory: 1Gi}\n      generations",
        ),
    );
}

#[test]
fn rule_env_names_are_unique() {
    rejects_text(
        "rule_env_duplicate",
        &gke_with(
            "        mountPath: /data\n      generations",
            "        mountPath: /data\n        env:\n          - {name: A, value: x}\n          - {name: A, value: y}\n      generations",
        ),
    );
}

#[test]
fn rule_ports_are_in_range() {
    rejects_text(
        "rule_port_range",
        &gke_with(
            "        service:\n",
            "        ports:\n          - {name: http, containerPort: 70000}\n        service:\n",
        ),
    );
}

#[test]
fn rule_port_names_are_iana_names() {
    rejects_text(
        "rule_port_name",
        &gke_with(
            "        service:\n",
            "        ports:\n          - {name: HTTP_PORT, containerPort: 80}\n        service:\n",
        ),
    );
}

#[test]
fn rule_service_target_port_names_a_consumer_port() {
    rejects_text(
        "rule_target_port",
        &gke_with(
            "          type: Headless\n",
            "          type: Headless\n          ports:\n            - {name: http, port: 80, targetPort: web}\n",
        ),
    );
}

#[test]
fn rule_clusterip_service_needs_a_port() {
    rejects_text(
        "rule_clusterip_ports",
        &gke_with("type: Headless", "type: ClusterIP"),
    );
}

#[test]
fn rule_service_type_is_known() {
    rejects_text(
        "rule_service_type",
        &gke_with("type: Headless", "type: LoadBalancer"),
    );
}

#[test]
fn rule_toleration_exists_takes_no_value() {
    rejects_text(
        "rule_toleration",
        &gke_with(
            "        mountPath: /data\n      generations",
            "        mountPath: /data\n        tolerations:\n          - {key: a, operator: Exists, value: b}\n      generations",
        ),
    );
}

#[test]
fn rule_unknown_fields_suggest_the_close_one() {
    rejects_text("rule_unknown_field", &gke_with("replicas: 3", "replcas: 3"));
}

#[test]
fn rule_missing_required_field_is_named() {
    rejects_text(
        "rule_missing_field",
        &gke_with(
            "      storage:\n        storageClassName: standard-rwo\n        size: 10Gi\n",
            "      storage:\n        storageClassName: standard-rwo\n",
        ),
    );
}

#[test]
fn rule_generation_is_a_dns_label() {
    rejects(
        "rule_generation_invalid",
        gke_text().as_bytes(),
        &["--generation", "2021_07_15"],
    );
}

#[test]
fn rule_generation_fits_the_statefulset_limit() {
    rejects(
        "rule_generation_too_long",
        gke_text().as_bytes(),
        &["--generation", &"g".repeat(45)],
    );
}

// ---- Malformed input: each a one-line located error, exit 2, nothing written. ----

#[test]
fn bad_yaml_syntax_unclosed_bracket() {
    rejects_text(
        "bad_syntax_bracket",
        &gke_with("[ReadWriteOnce]", "[ReadWriteOnce"),
    );
}

#[test]
fn bad_yaml_tab_indentation() {
    rejects_text(
        "bad_tab",
        &gke_with("  namespace: default", "\tnamespace: default"),
    );
}

#[test]
fn bad_yaml_bad_indentation() {
    rejects_text(
        "bad_indent",
        &gke_with("  namespace: default", "   namespace: default"),
    );
}

#[test]
fn bad_wrong_type_list_for_map() {
    rejects_text(
        "bad_type_list_for_map",
        &gke_with("  namespace: default", "  namespace: [a]"),
    );
}

#[test]
fn bad_wrong_type_map_for_list() {
    rejects_text(
        "bad_type_map_for_list",
        &gke_with("command: [\"/bin/sh\", \"-c\"]", "command: {sh: c}"),
    );
}

#[test]
fn bad_empty_file() {
    rejects("bad_empty", b"", &[]);
}

#[test]
fn bad_comments_only() {
    rejects("bad_comments_only", b"# nothing here\n---\n", &[]);
}

#[test]
fn bad_binary_garbage() {
    let garbage: Vec<u8> = (0..512u32).map(|i| (i * 7919 % 251) as u8).collect();
    rejects("bad_binary", &garbage, &[]);
}

#[test]
fn bad_nul_bytes() {
    rejects("bad_nul", b"apiVersion: snaproll.dev/v1alpha1\0\n", &[]);
}

#[test]
fn bad_huge_file() {
    let mut text = gke_text();
    text.push_str(&format!("# {}\n", "x".repeat(17 * 1024 * 1024)));
    rejects("bad_huge", text.as_bytes(), &[]);
}

#[test]
fn bad_multiple_documents() {
    let text = gke_text();
    rejects_text("bad_two_documents", &format!("{text}---\n{text}"));
}

#[test]
fn bad_scalar_document() {
    rejects("bad_scalar_document", b"just a string\n", &[]);
}

#[test]
fn bad_duplicate_key() {
    rejects_text(
        "bad_duplicate_key",
        &gke_with(
            "  namespace: default",
            "  namespace: default\n  namespace: other",
        ),
    );
}

#[test]
fn bad_misspelt_top_level_field() {
    rejects_text("bad_misspelt_spec", &gke_with("spec:", "spce:"));
}

#[test]
fn bad_unknown_nested_field() {
    rejects_text(
        "bad_unknown_storage_field",
        &gke_with("size: 10Gi", "size: 10Gi\n        iops: 3000"),
    );
}

#[test]
fn bad_null_required_field() {
    rejects_text(
        "bad_null_image",
        &gke_with("    image: ubuntu:22.04", "    image: ~"),
    );
}

#[test]
fn bad_replicas_float() {
    rejects_text(
        "bad_replicas_float",
        &gke_with("replicas: 3", "replicas: 2.5"),
    );
}

#[test]
fn bad_snapshot_copies_zero() {
    rejects_text(
        "bad_snapshot_copies_zero",
        &gke_with(
            "      consumer:\n",
            "      snapshot:\n        copies: 0\n      consumer:\n",
        ),
    );
}

/// Copies raise the GKE restore budget: 12 replicas from 2 copies pass, 13 warn.
#[test]
fn snapshot_copies_count_in_the_restore_rate_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("s.yaml");
    for (replicas, warns) in [(12, false), (13, true)] {
        let text = gke_with(
            "      consumer:\n",
            "      snapshot:\n        copies: 2\n      consumer:\n",
        )
        .replacen("replicas: 3", &format!("replicas: {replicas}"), 1);
        fs::write(&spec, text).unwrap();
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
        assert_eq!(stderr.contains("restores per hour"), warns, "{stderr}");
        if warns {
            assert!(
                stderr.contains("13 replicas restore from 2 GKE PD snapshot copies, which allow about 12 restores per hour; set `snapshot-type: images` in spec.snapshotClass.parameters (or snapshot.copies: 3)"),
                "{stderr}"
            );
        }
    }
}

#[test]
fn bad_unicode_name() {
    rejects_text(
        "bad_unicode_name",
        &gke_with("- name: data", "- name: dätä"),
    );
}

/// Rejects the GKE example rendered with one override template: `edit` turns the embedded
/// template `file` into the override's text.
fn rejects_with_template(name: &str, file: &str, edit: impl FnOnce(String) -> String) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tpl");
    fs::create_dir(&dir).unwrap();
    let embedded = fs::read_to_string(repo_path(&format!("templates/{file}"))).unwrap();
    fs::write(dir.join(file), edit(embedded)).unwrap();
    rejects(
        name,
        gke_text().as_bytes(),
        &["--generation", GEN, "--templates", dir.to_str().unwrap()],
    );
}

#[test]
fn bad_override_template_syntax() {
    rejects_with_template("bad_template_syntax", "service.yaml.j2", |_| {
        "apiVersion: v1\n{% if %}\n".to_string()
    });
}

#[test]
fn bad_override_template_undefined_variable() {
    rejects_with_template("bad_template_undefined", "service.yaml.j2", |svc| {
        svc.replace("{{ names.service }}", "{{ names.servce }}")
    });
}

#[test]
fn bad_override_template_undefined_top_level_name() {
    rejects_with_template("bad_template_undefined_name", "service.yaml.j2", |svc| {
        svc.replace("{{ names.service }}", "{{ servce }}")
    });
}

#[test]
fn bad_override_template_unknown_field_in_output() {
    rejects_with_template(
        "bad_template_unknown_field",
        "persistentvolumeclaim.yaml.j2",
        |pvc| pvc.replace("  resources:\n", "  resource:\n"),
    );
}

#[test]
fn bad_override_template_two_snapshot_sources() {
    rejects_with_template("bad_template_two_sources", "volumesnapshot.yaml.j2", |vs| {
        format!("{vs}    volumeSnapshotContentName: other\n")
    });
}

#[test]
fn bad_override_template_unknown_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tpl");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("deployment.yaml.j2"), "kind: Deployment\n").unwrap();
    let res = snaproll()
        .args(["validate", "-f", &example("gke-daily"), "--templates"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(res.status.code(), Some(2));
    insta::assert_snapshot!(
        "bad_template_unknown_file",
        scrub(&String::from_utf8_lossy(&res.stderr), tmp.path())
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

/// The GKE example with `text` inserted before the consumer section of the producer.
fn gke_producer_with(text: &str) -> String {
    gke_with(
        "        mountPath: /data\n      generations",
        &format!("        mountPath: /data\n{text}      generations"),
    )
}

#[test]
fn rule_class_parameter_names_are_not_empty() {
    rejects_text(
        "rule_class_parameter_empty",
        &gke_with(
            "    deletionPolicy: Delete\n",
            "    deletionPolicy: Delete\n    parameters: {\"\": x}\n",
        ),
    );
}

#[test]
fn rule_toleration_without_key_uses_exists() {
    rejects_text(
        "rule_toleration_without_key",
        &gke_producer_with("        tolerations:\n          - {operator: Equal, value: b}\n"),
    );
}

#[test]
fn rule_container_port_names_are_unique() {
    rejects_text(
        "rule_port_name_duplicate",
        &gke_with(
            "        service:\n",
            "        ports:\n          - {name: http, containerPort: 80}\n          - {name: http, containerPort: 81}\n        service:\n",
        ),
    );
}

#[test]
fn rule_service_ports_are_unique() {
    rejects_text(
        "rule_service_port_duplicate",
        &gke_with(
            "          type: Headless",
            "          type: Headless\n          ports: [{name: a, port: 80}, {name: b, port: 80}]",
        ),
    );
}

#[test]
fn rule_service_ports_need_names_when_several() {
    rejects_text(
        "rule_service_port_name_required",
        &gke_with(
            "          type: Headless",
            "          type: Headless\n          ports: [{name: a, port: 80}, {port: 81}]",
        ),
    );
}

#[test]
fn rule_image_has_no_white_space() {
    rejects_text(
        "rule_image_white_space",
        &gke_with("image: ubuntu:22.04", "image: ubuntu 22.04"),
    );
}

#[test]
fn rule_mount_path_has_no_parent_components() {
    rejects_text(
        "rule_mount_path_parent",
        &gke_with("mountPath: /data", "mountPath: /data/../etc"),
    );
}

#[test]
fn rule_resource_quantities_are_not_negative() {
    rejects_text(
        "rule_resources_negative",
        &gke_producer_with("        resources:\n          requests: {cpu: \"-1\"}\n"),
    );
}

#[test]
fn rule_replicas_fit_an_int32() {
    rejects_text(
        "rule_replicas_int32",
        &gke_with("replicas: 3", "replicas: 3000000000"),
    );
}

#[test]
fn rule_env_names_have_no_equals_sign() {
    rejects_text(
        "rule_env_name",
        &gke_producer_with("        env:\n          - {name: \"A=B\", value: x}\n"),
    );
}

#[test]
fn rule_pin_is_a_generation_id() {
    rejects_text(
        "rule_pin",
        &gke_with("keep: 1", "keep: 1\n        pin: Not_A_Generation"),
    );
}

#[test]
fn rule_claim_name_is_rfc1123() {
    rejects_text(
        "rule_claim_name",
        &gke_with("replicas: 3", "replicas: 3\n        claimName: Bad_Claim"),
    );
}

#[test]
fn rule_storage_class_name_is_a_subdomain() {
    rejects_text(
        "rule_storage_class_name",
        &gke_with(
            "storageClassName: standard-rwo",
            "storageClassName: Standard_RWO",
        ),
    );
}

#[test]
fn rule_service_account_name_is_a_subdomain() {
    rejects_text(
        "rule_service_account_name",
        &gke_producer_with("        serviceAccountName: -robot\n"),
    );
}

#[test]
fn rule_consumer_name_starts_with_a_letter() {
    rejects_text(
        "rule_consumer_name_digit",
        &gke_with("name: consumer", "name: 1consumer"),
    );
}

#[test]
fn rule_keep_out_of_range_names_the_range() {
    rejects_text("rule_keep_negative", &gke_with("keep: 1", "keep: -1"));
}

#[test]
fn rule_replicas_out_of_range_names_the_range() {
    rejects_text(
        "rule_replicas_overflow",
        &gke_with("replicas: 3", "replicas: 99999999999999999999999"),
    );
}

#[test]
fn rule_replicas_must_not_be_empty() {
    rejects_text("rule_replicas_empty", &gke_with("replicas: 3", "replicas:"));
}

/// Regression: an over-long name cut for the message at a byte inside a multi-byte character
/// used to panic (exit 101) instead of exiting 2 with a message.
#[test]
fn over_long_multibyte_driver_is_an_error_not_a_panic() {
    rejects_text(
        "bad_over_long_multibyte_driver",
        &gke_with(
            "driver: pd.csi.storage.gke.io",
            &format!("driver: a{}", "é".repeat(200)),
        ),
    );
}

#[test]
fn bad_deep_nesting_is_explained() {
    let spec = format!(
        "{}  extra: {}{}\n",
        gke_text(),
        "[".repeat(100),
        "]".repeat(100)
    );
    rejects_text("bad_deep_nesting", &spec);
}

#[test]
fn bad_alias_bomb_is_one_short_line() {
    let mut spec = String::from("a0: &a0 [x,x,x,x,x,x,x,x,x,x]\n");
    for i in 1..9 {
        let refs = vec![format!("*a{}", i - 1); 10].join(",");
        spec.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    rejects_text("bad_alias_bomb", &spec);
}

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
fn bad_override_template_wrong_type_names_the_field() {
    rejects_with_template("bad_template_wrong_type", "statefulset.yaml.j2", |sts| {
        let replicas = sts
            .lines()
            .find(|l| l.trim_start().starts_with("replicas:"))
            .expect("the StatefulSet template sets replicas")
            .to_string();
        sts.replace(&replicas, "  replicas: \"abc\"")
    });
}

#[test]
fn bad_override_template_duplicate_key_quotes_the_rendered_line() {
    rejects_with_template("bad_template_duplicate_key", "service.yaml.j2", |svc| {
        format!("{svc}\nkind: Service\n")
    });
}

#[test]
fn render_out_refuses_a_file_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("out");
    fs::write(&file, "mine").unwrap();
    let res = snaproll()
        .args([
            "render",
            "-f",
            &example("gke-daily"),
            "--generation",
            GEN,
            "--out",
        ])
        .arg(&file)
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
    snaproll()
        .args([
            "render",
            "-f",
            &example("gke-daily"),
            "--generation",
            GEN,
            "--out",
        ])
        .arg(&out)
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
