//! Rendered YAML every reader agrees on, and what validation refuses.

use super::*;

// ---------------------------------------------------------------------------------------------
// YAML every reader agrees on

/// Strings that YAML readers disagree on or refuse when written raw, and strings YAML 1.1 types
/// (the characters validation refuses are in [`unportable_strings`]).
fn hostile_strings() -> Vec<String> {
    let mut v: Vec<String> = [
        '\u{1}',
        '\u{8}',
        '\u{b}',
        '\u{1b}',
        '\u{1f}',
        '\u{a0}',
        '\u{2028}',
        '\u{2029}',
        '\u{feff}',
        '\u{fdd0}',
        '\u{fdef}',
        '\u{1fffe}',
        '\u{1ffff}',
        '\u{10ffff}',
    ]
    .iter()
    .map(|c| format!("a{c}b"))
    .collect();
    v.extend(
        [
            "line\nbreak",
            "tab\tand\rreturn",
            "\"quoted\" and \\back",
            "# comment",
            "key: value",
            "{{ 7*7 }}",
            "&anchor *alias !tag",
            "2021-07-15",
            "0755",
            "yes",
            "~",
            " lead",
            "trail ",
            "- item",
            "\u{1b}[31mred\u{1b}[0m",
        ]
        .map(str::to_string),
    );
    v
}

/// A spec with the hostile strings in every free-text field.
fn hostile_spec() -> Value {
    let mut doc: Value = snaproll::yaml::from_str(&gke_text()).unwrap();
    let hostile = hostile_strings();
    let params: serde_json::Map<String, Value> = hostile
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("p{i}{s}"), json!(s)))
        .collect();
    doc["spec"]["snapshotClass"]["parameters"] = Value::Object(params);
    let env: Vec<Value> = hostile
        .iter()
        .enumerate()
        .map(|(i, s)| json!({"name": format!("V{i}"), "value": s}))
        .collect();
    let d = &mut doc["spec"]["datasets"][0];
    d["producer"]["command"] = json!(hostile);
    d["producer"]["args"] = json!(hostile);
    d["producer"]["env"] = json!(env);
    d["producer"]["nodeSelector"] = json!({"kubernetes.io/os": "linux"});
    d["producer"]["tolerations"] = json!([{"key": "dedicated", "operator": "Equal", "value": "data_1.x", "effect": "NoSchedule"}]);
    d["consumer"]["command"] = json!(hostile);
    d["consumer"]["args"] = json!(hostile);
    d["consumer"]["env"] = json!(env);
    doc
}

/// The documents of each file as PyYAML (a YAML 1.1 reader, like go-yaml) reads them, or
/// `None` when python3 with PyYAML is not installed.
fn pyyaml_docs(files: &[PathBuf]) -> Option<Vec<Vec<Value>>> {
    let probe = Command::new("python3")
        .args(["-c", "import yaml"])
        .output()
        .ok()?;
    if !probe.status.success() {
        return None;
    }
    let script = "import sys, json, yaml\n\
                  print(json.dumps([list(yaml.safe_load_all(open(p, encoding='utf-8'))) for p in sys.argv[1:]]))";
    let out = Command::new("python3")
        .args(["-c", script])
        .args(files)
        .output()
        .unwrap();
    assert!(out.status.success(), "PyYAML: {}", out_text(&out.stderr));
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

/// kubectl: on PATH, in $KUBEBUILDER_ASSETS, or the one the end-to-end tests build.
fn kubectl() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(dir) = std::env::var_os("KUBEBUILDER_ASSETS") {
        candidates.push(PathBuf::from(dir).join("kubectl"));
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
    if let Some(cache) = cache
        && let Ok(entries) = std::fs::read_dir(cache.join("snaproll/control-plane"))
    {
        let mut found: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path().join("kubectl")))
            .collect();
        found.sort();
        candidates.extend(found.into_iter().rev());
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join("kubectl")));
    }
    candidates.into_iter().find(|p| p.is_file())
}

/// Hostile values in every free-text field render to files that serde-saphyr, PyYAML and
/// `kubectl kustomize` all read back as exactly the input.
#[test]
fn rendered_yaml_reads_back_exactly_in_every_reader() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("hostile.yaml");
    std::fs::write(&spec, snaproll::yaml::to_string(&hostile_spec())).unwrap();
    snaproll()
        .arg("validate")
        .arg("-f")
        .arg(&spec)
        .args(["--generation", GEN])
        .assert()
        .code(0);
    let out = tmp.path().join("out");
    snaproll()
        .arg("render")
        .arg("-f")
        .arg(&spec)
        .args(["--generation", GEN, "--out"])
        .arg(&out)
        .assert()
        .code(0);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap() != "kustomization.yaml")
        .collect();
    files.sort();
    let ours: Vec<Value> = files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            for c in text.chars() {
                assert!(
                    c == '\n'
                        || !(c.is_control()
                            || matches!(
                                c,
                                '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}'
                            )),
                    "{} holds {c:?} raw",
                    f.display()
                );
            }
            serde_saphyr::from_str::<Value>(&text).unwrap()
        })
        .collect();

    // The values arrive as written.
    let hostile = json!(hostile_strings());
    let pod = ours.iter().find(|o| o["kind"] == "Pod").unwrap();
    assert_eq!(pod["spec"]["containers"][0]["args"], hostile);
    assert_eq!(pod["spec"]["containers"][0]["command"], hostile);
    let sts = ours.iter().find(|o| o["kind"] == "StatefulSet").unwrap();
    let consumer = &sts["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(consumer["args"], hostile);
    assert_eq!(
        consumer["env"][2]["value"],
        json!(hostile_strings()[2]),
        "{consumer}"
    );
    let class = ours
        .iter()
        .find(|o| o["kind"] == "VolumeSnapshotClass")
        .unwrap();
    assert_eq!(
        class["parameters"]["p6a\u{2028}b"],
        json!("a\u{2028}b"),
        "{class}"
    );

    match pyyaml_docs(&files) {
        Some(docs) => {
            for ((f, mine), theirs) in files.iter().zip(&ours).zip(docs) {
                assert_eq!(
                    theirs,
                    vec![mine.clone()],
                    "PyYAML reads {} differently",
                    f.display()
                );
            }
        }
        None => println!("skipped: python3 with PyYAML is not installed"),
    }

    match kubectl() {
        Some(kubectl) => {
            let out = Command::new(&kubectl)
                .arg("kustomize")
                .arg(&out)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "kubectl kustomize refused the folder: {}",
                out_text(&out.stderr)
            );
            // go-yaml writes what it read for go-yaml (YAML 1.1 line breaks) to read: read its
            // output with the YAML 1.1 reader, PyYAML.
            let built = tmp.path().join("kustomized.yaml");
            std::fs::write(&built, &out.stdout).unwrap();
            let Some(mut docs) = pyyaml_docs(std::slice::from_ref(&built)) else {
                println!(
                    "skipped: kustomize output not compared, python3 with PyYAML is not installed"
                );
                return;
            };
            let mut theirs = docs.remove(0);
            let key = |v: &Value| format!("{}/{}", v["kind"], v["metadata"]["name"]);
            theirs.sort_by_key(key);
            let mut mine = ours.clone();
            mine.sort_by_key(key);
            assert_eq!(
                theirs,
                mine,
                "kubectl kustomize ({}) reads the folder differently",
                kubectl.display()
            );
        }
        None => println!("skipped: no kubectl on PATH, in KUBEBUILDER_ASSETS or the test cache"),
    }
}

/// The characters go-yaml cannot carry (kustomize refuses DEL, C1 and U+FFFE/FFFF even
/// escaped, and passes NEL on raw for YAML 1.1 readers to fold): refused by validation, in
/// values and keys, with their location.
#[test]
fn validation_refuses_what_kustomize_cannot_carry() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("snaproll.yaml");
    for c in [
        '\u{7f}', '\u{80}', '\u{85}', '\u{9f}', '\u{fffe}', '\u{ffff}',
    ] {
        let text = gke_text().replace(
            "args: [\"echo \\\"generated at $(date -u)\\\" > /data/file.txt\"]",
            &format!("args: [\"ok\", \"x\\u{:04X}y\"]", c as u32),
        );
        std::fs::write(&spec, &text).unwrap();
        let out = snaproll()
            .current_dir(tmp.path())
            .args(["validate", "-f", "snaproll.yaml"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{c:?}");
        let why = if c == '\u{85}' {
            "YAML 1.1 readers (go-yaml in kubectl, kustomize, Argo CD and Flux) read it as a line break, so the cluster would get another value"
        } else {
            "kubectl kustomize (and so Argo CD and Flux) refuses any YAML holding it, even escaped"
        };
        assert_eq!(
            out_text(&out.stderr),
            format!(
                "error: snaproll.yaml:24:22: spec.datasets[0].producer.args[1]: `x{}y` contains U+{:04X}: {why}\n",
                c.escape_debug(),
                c as u32
            )
        );
    }
    // In a key: named with its map.
    let text = gke_text().replace(
        "    deletionPolicy: Delete",
        "    deletionPolicy: Delete\n    parameters:\n      \"k\\x85\": v",
    );
    std::fs::write(&spec, &text).unwrap();
    snaproll()
        .current_dir(tmp.path())
        .args(["validate", "-f", "snaproll.yaml"])
        .assert()
        .code(2)
        .stderr("error: snaproll.yaml:16:16: spec.snapshotClass.parameters: key `k\\u{85}` contains U+0085: YAML 1.1 readers (go-yaml in kubectl, kustomize, Argo CD and Flux) read it as a line break, so the cluster would get another value\n");
}
