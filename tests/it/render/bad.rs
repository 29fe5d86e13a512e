//! Malformed specs: YAML syntax, wrong types, empty, binary or oversized input, each one
//! located error line with nothing written (snapshots named by the checking helper).

use super::rules::{rejects, rejects_text};
use std::fs;

use super::*;

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
fn bad_unicode_name() {
    rejects_text(
        "bad_unicode_name",
        &gke_with("- name: data", "- name: dätä"),
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
