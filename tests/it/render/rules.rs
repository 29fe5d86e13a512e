//! Bad input: each validation rule and each malformed spec or template gives one located
//! error line, exit 2, no panic, and nothing written.

use std::fs;

use super::*;

/// Runs `validate` and `render --out` on a bad spec and checks the exact outcome: exit code 2,
/// one error line (snapshotted as `name`), no panic, and nothing written to `--out`.
pub(super) fn rejects(name: &str, spec: &[u8], extra: &[&str]) {
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

pub(super) fn rejects_text(name: &str, spec: &str) {
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
