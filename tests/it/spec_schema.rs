//! `snaproll schema`: the committed schema is exactly what the binary prints, every example
//! validates against it, and a misspelt field is refused as the parser refuses it.

use serde_json::Value;

use crate::common::*;

const COMMITTED: &str = "schema/datasetrollout.schema.json";

/// Every DatasetRollout under `examples/`, by path.
fn examples() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(repo_path("examples")).unwrap() {
        let file = entry.unwrap().path().join("snaproll.yaml");
        if file.is_file() {
            out.push((
                file.display().to_string(),
                std::fs::read_to_string(&file).unwrap(),
            ));
        }
    }
    out.sort();
    out
}

fn validator() -> jsonschema::Validator {
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(repo_path(COMMITTED)).unwrap()).unwrap();
    jsonschema::draft202012::new(&schema).expect("a valid 2020-12 schema")
}

fn errors(v: &jsonschema::Validator, yaml: &str) -> Vec<String> {
    let doc: Value = serde_saphyr::from_str(yaml).unwrap();
    v.iter_errors(&doc)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

#[test]
fn the_committed_schema_is_what_snaproll_schema_prints() {
    let out = snaproll().arg("schema").assert().success().code(0);
    let printed = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    let committed = std::fs::read_to_string(repo_path(COMMITTED)).unwrap();
    assert!(
        printed == committed,
        "{COMMITTED} is out of date: run `snaproll schema > {COMMITTED}`"
    );
    let schema: Value = serde_json::from_str(&printed).unwrap();
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    assert_eq!(schema["title"], "DatasetRollout");
}

#[test]
fn every_example_validates_and_names_the_committed_schema() {
    let v = validator();
    let all = examples();
    assert!(all.len() >= 3, "examples found: {all:?}");
    for (path, text) in &all {
        assert_eq!(errors(&v, text), Vec::<String>::new(), "{path}");
        assert_eq!(
            text.lines().next(),
            Some("# yaml-language-server: $schema=../../schema/datasetrollout.schema.json"),
            "{path}: the first line points editors at the schema"
        );
    }
}

#[test]
fn a_misspelt_field_is_refused_by_the_schema_as_by_the_parser() {
    let v = validator();
    let (_, text) = examples()
        .into_iter()
        .find(|(p, _)| p.ends_with("gke-daily/snaproll.yaml"))
        .unwrap();
    assert!(text.contains("replicas: 3"));
    let bad = text.replace("replicas: 3", "replica: 3");
    assert_eq!(
        errors(&v, &bad),
        vec![
            "/spec/datasets/0/consumer: Additional properties are not allowed ('replica' was unexpected)"
                .to_string()
        ]
    );
    // A wrong apiVersion and a wrong enum value are refused too.
    let bad = text.replace(
        "apiVersion: snaproll.dev/v1alpha1",
        "apiVersion: snaproll.dev/v1",
    );
    assert_eq!(errors(&v, &bad).len(), 1, "{:?}", errors(&v, &bad));
    let bad = text.replace("deletionPolicy: Delete", "deletionPolicy: Keep");
    assert_eq!(errors(&v, &bad).len(), 1, "{:?}", errors(&v, &bad));
}
