//! Map keys and label values.

use super::*;

// ---------------------------------------------------------------------------------------------
// Keys and label values

#[test]
fn node_selector_and_toleration_keys_are_qualified_names() {
    let text = gke_text().replace(
        "        mountPath: /data\n      generations:",
        "        mountPath: /data
        nodeSelector:
          \"a\\\"b\": x
          kubernetes.io/os: \"linux os\"
          \"\": y
          Example.com/x: z
        tolerations:
          - key: \"{{ 7*7 }}\"
            operator: Exists
          - key: dedicated
            operator: Equal
            value: \"a/b\"
      generations:",
    );
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("snaproll.yaml");
    std::fs::write(&spec, text).unwrap();
    let out = snaproll()
        .current_dir(tmp.path())
        .args(["validate", "-f", "snaproll.yaml"])
        .assert()
        .code(2)
        .get_output()
        .clone();
    assert!(out.stdout.is_empty());
    assert_eq!(
        out_text(&out.stderr),
        "error: snaproll.yaml:27:19: spec.datasets[0].producer.nodeSelector: key `a\\\"b` is not a qualified name: at most 63 letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit, after an optional DNS subdomain prefix and `/` (e.g. `kubernetes.io/os`)
error: snaproll.yaml:28:29: spec.datasets[0].producer.nodeSelector.kubernetes.io/os: value of `kubernetes.io/os`: `linux os` is not a valid label value: at most 63 letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit (or empty)
error: snaproll.yaml:29:15: spec.datasets[0].producer.nodeSelector: key `` is not a qualified name: at most 63 letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit, after an optional DNS subdomain prefix and `/` (e.g. `kubernetes.io/os`)
error: snaproll.yaml:30:26: spec.datasets[0].producer.nodeSelector: key `Example.com/x`: the prefix before `/` must be a DNS subdomain of at most 253 characters (lower-case letters, digits, `-` and `.`), e.g. `kubernetes.io/os`
error: snaproll.yaml:32:18: spec.datasets[0].producer.tolerations[0].key: key `{{ 7*7 }}` is not a qualified name: at most 63 letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit, after an optional DNS subdomain prefix and `/` (e.g. `kubernetes.io/os`)
error: snaproll.yaml:36:20: spec.datasets[0].producer.tolerations[1].value: `a/b` is not a valid label value: at most 63 letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit (or empty)
"
    );
    // A 100 kB key (an explicit key: implicit ones stop at 1,024 characters) is named briefly.
    let long = gke_text().replace(
        "        mountPath: /data\n      generations:",
        &format!(
            "        mountPath: /data\n        nodeSelector:\n          ? {}\n          : x\n      generations:",
            "k".repeat(100_000)
        ),
    );
    std::fs::write(&spec, long).unwrap();
    let out = snaproll()
        .current_dir(tmp.path())
        .args(["validate", "-f", "snaproll.yaml"])
        .assert()
        .code(2)
        .get_output()
        .clone();
    let err = out_text(&out.stderr);
    assert!(err.len() < 400, "{err}");
    assert!(
        err.starts_with(&format!(
            "error: snaproll.yaml:28:13: spec.datasets[0].producer.nodeSelector: key `{}…` is not a qualified name",
            "k".repeat(40)
        )),
        "{err}"
    );
}
