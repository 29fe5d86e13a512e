//! Deciding whether a live object already matches the desired one, and showing the difference.
//!
//! An object is unchanged, and gets no request at all, when
//! 1. every field of the desired object has the same value live (so fields the server defaults,
//!    such as a Service's `clusterIPs` or a container's `terminationMessagePath`, never cause a
//!    diff; quantities compare by value because the server canonicalises `1024Mi` to `1Gi`);
//! 2. the live object carries the hash of exactly this desired object in
//!    [`ANNOTATION_APPLIED`], so a field removed from the template (which the subset test in 1
//!    cannot see) still triggers an apply that removes it; and
//! 3. snaproll's field manager still has an `Apply` entry in `managedFields` (when the server
//!    returns them), so an object someone else created with the same name is adopted.
//!
//! The hash is schema-free: comparing `managedFields` tries directly would need the list-map
//! keys of every schema (`k:{"name":...}` entries) to be right for every kind.

use serde_json::{Map, Value, json};

use crate::manifest::{FIELD_MANAGER, Kind};

use super::applyset::LABEL_PART_OF;

/// Annotation holding the SHA-256 of the configuration snaproll last applied to an object.
pub const ANNOTATION_APPLIED: &str = "snaproll.dev/applied-hash";

/// The object snaproll applies: the rendered object plus the ApplySet membership label and the
/// hash of its own content (computed before the hash annotation is added).
pub fn desired_for_apply(rendered: &Value, applyset_id: &str) -> Value {
    let mut v = rendered.clone();
    // The cluster-scoped VolumeSnapshotClass is shared by rollouts and never pruned: not a
    // member of any one rollout's set.
    let shared = v.get("kind").and_then(Value::as_str) == Some(Kind::VolumeSnapshotClass.as_str());
    let meta = ensure_object(&mut v, "metadata");
    if !shared {
        ensure_object_map(meta, "labels").insert(LABEL_PART_OF.into(), json!(applyset_id));
    }
    let hash = content_hash(&v);
    let meta = ensure_object(&mut v, "metadata");
    ensure_object_map(meta, "annotations").insert(ANNOTATION_APPLIED.into(), json!(hash));
    v
}

fn ensure_object<'a>(v: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    let obj = v.as_object_mut().expect("rendered objects are mappings");
    ensure_object_map(obj, key)
}

fn ensure_object_map<'a>(m: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let entry = m.entry(key.to_string()).or_insert_with(|| json!({}));
    if !entry.is_object() {
        *entry = json!({});
    }
    entry.as_object_mut().expect("just made an object")
}

/// SHA-256 (hex, first 32 characters) of the canonical JSON of `v` (keys sorted, so the
/// template's key order does not matter).
pub fn content_hash(v: &Value) -> String {
    let canonical = canonical_json(v);
    let d = ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes());
    d.as_ref()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn canonical_json(v: &Value) -> String {
    let mut out = Vec::with_capacity(2048);
    write_canonical(v, &mut out);
    String::from_utf8(out).expect("JSON is UTF-8")
}

/// Writes `v` as JSON with object keys sorted, into one buffer (no per-node allocations:
/// this runs for every object on every run).
fn write_canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort_unstable();
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, k).expect("writing to a Vec");
                out.push(b':');
                write_canonical(&m[k], out);
            }
            out.push(b'}');
        }
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(x, out);
            }
            out.push(b']');
        }
        other => serde_json::to_writer(&mut *out, other).expect("writing to a Vec"),
    }
}

/// Why an object needs an apply, or `None` when it is unchanged.
pub fn change_reason(desired: &Value, live: &Value) -> Option<String> {
    // The hash annotation is compared below, with its own reason.
    if let Some(path) = first_difference(desired, live, "") {
        return Some(format!("{path} differs"));
    }
    let want = desired
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(ANNOTATION_APPLIED));
    let have = live
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(ANNOTATION_APPLIED));
    if want != have {
        return Some("applied configuration changed (fields removed)".to_string());
    }
    if let Some(Value::Array(entries)) = live.pointer("/metadata/managedFields") {
        let ours = entries.iter().any(|e| {
            e.get("manager").and_then(Value::as_str) == Some(FIELD_MANAGER)
                && e.get("operation").and_then(Value::as_str) == Some("Apply")
                && e.get("subresource")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .is_empty()
        });
        if !ours {
            return Some(format!(
                "not yet managed by field manager `{FIELD_MANAGER}`"
            ));
        }
    }
    None
}

/// The first path (`.spec.replicas`) where `desired` has a value `live` does not.
pub fn first_difference(desired: &Value, live: &Value, path: &str) -> Option<String> {
    let mut segments = Vec::new();
    if !differs(desired, live, &mut segments) {
        return None;
    }
    let mut p = path.to_string();
    for s in segments.iter().rev() {
        p.push_str(s);
    }
    Some(p)
}

/// Whether `desired` has a value `live` does not; on a difference, `segments` receives the
/// path to it, innermost first (built only then: the common case allocates nothing).
fn differs(desired: &Value, live: &Value, segments: &mut Vec<String>) -> bool {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => {
            for (k, dv) in d {
                // snaproll's own hash annotation has its own check in `change_reason`.
                if k == ANNOTATION_APPLIED {
                    continue;
                }
                let found = match l.get(k) {
                    Some(lv) => differs(dv, lv, segments),
                    // An empty map or list desired is the same as an absent one: the server
                    // drops empty values.
                    None => !is_empty(dv),
                };
                if found {
                    segments.push(format!(".{k}"));
                    return true;
                }
            }
            false
        }
        (Value::Array(d), Value::Array(l)) => {
            if d.iter().all(|x| !x.is_object()) || l.len() == d.len() {
                if d.len() != l.len() {
                    return true;
                }
                for (i, (dv, lv)) in d.iter().zip(l).enumerate() {
                    if differs(dv, lv, segments) {
                        segments.push(format!("[{i}]"));
                        return true;
                    }
                }
                return false;
            }
            // Lists of objects may gain entries from others (an injected sidecar container):
            // every desired entry must match a live entry, in order.
            let mut li = l.iter();
            for (i, dv) in d.iter().enumerate() {
                if !li.any(|lv| !differs(dv, lv, &mut Vec::new())) {
                    segments.push(format!("[{i}]"));
                    return true;
                }
            }
            false
        }
        (Value::String(d), Value::String(l)) => d != l && !same_quantity(d, l),
        (Value::Number(d), Value::Number(l)) => d.as_f64() != l.as_f64(),
        // The server writes `port: 80` where a template may have written the string "80".
        (Value::String(d), Value::Number(l)) | (Value::Number(l), Value::String(d)) => {
            d.as_str() != l.to_string()
        }
        (d, l) => d != l && !(is_empty(d) && l.is_null()),
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Null => true,
        _ => false,
    }
}

/// Whether two different strings are the same Kubernetes quantity (`1024Mi` and `1Gi`).
fn same_quantity(a: &str, b: &str) -> bool {
    let starts_numeric = |s: &str| s.starts_with(|c: char| c.is_ascii_digit() || c == '.');
    if !starts_numeric(a) || !starts_numeric(b) {
        return false;
    }
    match (
        crate::spec::quantity::parse(a),
        crate::spec::quantity::parse(b),
    ) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// The object as a diff shows it: without managedFields, resourceVersion, uid, timestamps,
/// generation, status and snaproll's hash annotation, and with Secret data masked.
pub fn cleaned(v: &Value) -> Value {
    let mut v = v.clone();
    // The server fills `creationTimestamp: null` into embedded object metadata (Pod template,
    // claim templates) of a dry-run answer: noise in a new object's diff.
    let mut embedded: Vec<&mut Value> = Vec::new();
    if let Some(spec) = v.get_mut("spec").and_then(Value::as_object_mut) {
        for (k, val) in spec.iter_mut() {
            match k.as_str() {
                "template" => embedded.push(val),
                "volumeClaimTemplates" => {
                    if let Some(a) = val.as_array_mut() {
                        embedded.extend(a.iter_mut());
                    }
                }
                _ => {}
            }
        }
    }
    for e in embedded {
        if let Some(meta) = e.get_mut("metadata").and_then(Value::as_object_mut)
            && meta.get("creationTimestamp") == Some(&Value::Null)
        {
            meta.remove("creationTimestamp");
        }
    }
    if let Some(obj) = v.as_object_mut() {
        obj.remove("status");
        if let Some(Value::Object(meta)) = obj.get_mut("metadata") {
            for k in [
                "managedFields",
                "resourceVersion",
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "generation",
                "selfLink",
            ] {
                meta.remove(k);
            }
            if let Some(Value::Object(ann)) = meta.get_mut("annotations") {
                ann.remove(ANNOTATION_APPLIED);
                ann.remove("kubectl.kubernetes.io/last-applied-configuration");
                if ann.is_empty() {
                    meta.remove("annotations");
                }
            }
        }
    }
    v
}

/// Masks Secret values like `kubectl diff`: `***` everywhere, `*** (before)` / `*** (after)`
/// where the value changed, so a diff never prints secret material.
pub fn mask_secret_pair(before: &mut Value, after: &mut Value) {
    let is_secret = |v: &Value| v.get("kind").and_then(Value::as_str) == Some("Secret");
    if !is_secret(before) && !is_secret(after) {
        return;
    }
    for field in ["data", "stringData"] {
        let b = before.get(field).cloned();
        let a = after.get(field).cloned();
        let mask = |side: &mut Value, other: &Option<Value>, label: &str| {
            if let Some(Value::Object(m)) = side.get_mut(field) {
                for (k, val) in m.iter_mut() {
                    let changed = other.as_ref().and_then(|o| o.get(k)) != Some(&*val);
                    *val = json!(if changed && other.is_some() {
                        format!("*** ({label})")
                    } else {
                        "***".to_string()
                    });
                }
            }
        };
        mask(before, &a, "before");
        mask(after, &b, "after");
    }
}

/// A unified diff of two objects' YAML (`before` absent for a create, `after` absent for a
/// delete), coloured for a terminal when asked.
pub fn unified_diff(
    title: &str,
    before: Option<&Value>,
    after: Option<&Value>,
    color: bool,
) -> String {
    let mut b = before.map(cleaned).unwrap_or(Value::Null);
    let mut a = after.map(cleaned).unwrap_or(Value::Null);
    mask_secret_pair(&mut b, &mut a);
    let text = |v: &Value| {
        if v.is_null() {
            String::new()
        } else {
            crate::yaml::to_string(v)
        }
    };
    let (bt, at) = (text(&b), text(&a));
    let diff = similar::TextDiff::from_lines(&bt, &at);
    let body = diff
        .unified_diff()
        .context_radius(3)
        .header(&format!("live/{title}"), &format!("desired/{title}"))
        .to_string();
    if !color {
        return body;
    }
    paint_diff(&body, true)
}

/// A unified diff line by line, coloured for a terminal when `color` (file headers bold,
/// additions green, removals red, hunk headers cyan): the one painter of every diff snaproll
/// prints, the cluster's and the Git preview's (`commands::reconcile`).
pub fn paint_diff(text: &str, color: bool) -> String {
    text.lines()
        .map(|l| {
            let code = if !color {
                None
            } else if l.starts_with("+++") || l.starts_with("---") {
                Some("1")
            } else if l.starts_with('+') {
                Some("32")
            } else if l.starts_with('-') {
                Some("31")
            } else if l.starts_with("@@") {
                Some("36")
            } else {
                None
            };
            match code {
                Some(c) => format!("\x1b[{c}m{l}\x1b[0m\n"),
                None => format!("{l}\n"),
            }
        })
        .collect()
}

/// Paths under `spec` where `desired` differs from `live` and that the API server does not
/// allow changing on a StatefulSet (anything but replicas, template, updateStrategy, ...).
/// Used to name the field when the server answers with its generic "updates to statefulset
/// spec for fields other than" message.
pub fn immutable_statefulset_fields(desired: &Value, live: &Value) -> Vec<String> {
    const MUTABLE: [&str; 7] = [
        "replicas",
        "ordinals",
        "template",
        "updateStrategy",
        "revisionHistoryLimit",
        "persistentVolumeClaimRetentionPolicy",
        "minReadySeconds",
    ];
    let mut out = Vec::new();
    if let (Some(Value::Object(d)), Some(l)) = (desired.get("spec"), live.get("spec")) {
        for (k, dv) in d {
            if MUTABLE.contains(&k.as_str()) {
                continue;
            }
            let lv = l.get(k).unwrap_or(&Value::Null);
            if let Some(p) = first_difference(dv, lv, &format!("spec.{k}")) {
                out.push(p);
            }
        }
    }
    out
}

/// Paths where `desired` differs from `live`, for immutable-field messages of any kind.
pub fn differing_fields(kind: Kind, desired: &Value, live: Option<&Value>) -> Vec<String> {
    let Some(live) = live else {
        return Vec::new();
    };
    if kind == Kind::StatefulSet {
        let f = immutable_statefulset_fields(desired, live);
        if !f.is_empty() {
            return f;
        }
    }
    let mut d = desired.clone();
    if let Some(m) = d.as_object_mut() {
        m.remove("metadata");
    }
    first_difference(&d, live, "")
        .map(|p| vec![p.trim_start_matches('.').to_string()])
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_painter_colours_headers_changes_and_hunks_and_only_when_asked() {
        let text = "--- a/f\n+++ b/f\n@@ -1 +1 @@\n-old\n+new\n same\n";
        assert_eq!(paint_diff(text, false), text);
        assert_eq!(
            paint_diff(text, true),
            "\x1b[1m--- a/f\x1b[0m\n\x1b[1m+++ b/f\x1b[0m\n\x1b[36m@@ -1 +1 @@\x1b[0m\n\x1b[31m-old\x1b[0m\n\x1b[32m+new\x1b[0m\n same\n"
        );
    }

    #[test]
    fn diffs_drop_null_creation_timestamps_of_embedded_templates() {
        let v = json!({"kind": "StatefulSet", "metadata": {"name": "c", "creationTimestamp": "t"},
            "spec": {"template": {"metadata": {"creationTimestamp": null, "labels": {"a": "b"}}},
                     "volumeClaimTemplates": [{"metadata": {"name": "d", "creationTimestamp": null}}]}});
        assert_eq!(
            cleaned(&v),
            json!({"kind": "StatefulSet", "metadata": {"name": "c"},
                "spec": {"template": {"metadata": {"labels": {"a": "b"}}},
                         "volumeClaimTemplates": [{"metadata": {"name": "d"}}]}})
        );
        let text = unified_diff("StatefulSet.apps/default/c", None, Some(&v), false);
        assert!(!text.contains("creationTimestamp"), "{text}");
    }

    #[test]
    fn server_defaults_do_not_count_as_changes() {
        let d = json!({"spec": {"ports": [{"port": 80}], "clusterIP": "None"}});
        let l = json!({"spec": {"ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}],
                       "clusterIP": "None", "clusterIPs": ["None"], "type": "ClusterIP"}});
        assert_eq!(first_difference(&d, &l, ""), None);
    }

    #[test]
    fn canonicalised_quantities_are_equal() {
        let d = json!({"resources": {"requests": {"storage": "1024Mi", "cpu": "1000m"}}});
        let l = json!({"resources": {"requests": {"storage": "1Gi", "cpu": "1"}}});
        assert_eq!(first_difference(&d, &l, ""), None);
        let l2 = json!({"resources": {"requests": {"storage": "2Gi", "cpu": "1"}}});
        assert_eq!(
            first_difference(&d, &l2, ""),
            Some(".resources.requests.storage".into())
        );
    }

    #[test]
    fn injected_list_entries_are_tolerated_but_changed_ones_are_not() {
        let d = json!({"containers": [{"name": "a", "image": "x"}]});
        let l = json!({"containers": [{"name": "a", "image": "x"}, {"name": "sidecar"}]});
        assert_eq!(first_difference(&d, &l, ""), None);
        let l = json!({"containers": [{"name": "a", "image": "y"}, {"name": "sidecar"}]});
        assert!(first_difference(&d, &l, "").is_some());
        let d = json!({"args": ["a", "b"]});
        let l = json!({"args": ["a", "b", "c"]});
        assert_eq!(first_difference(&d, &l, ""), Some(".args".into()));
    }

    #[test]
    fn removed_fields_are_caught_by_the_hash() {
        let old = desired_for_apply(
            &json!({"metadata": {"name": "a"}, "spec": {"x": 1, "y": 2}}),
            "id",
        );
        let new = desired_for_apply(&json!({"metadata": {"name": "a"}, "spec": {"x": 1}}), "id");
        // The new object is a subset of the old one, yet it is a change.
        assert!(change_reason(&new, &old).is_some());
        assert_eq!(change_reason(&old, &old), None);
    }

    #[test]
    fn hash_ignores_key_order() {
        assert_eq!(
            content_hash(&json!({"a": 1, "b": {"c": 2, "d": 3}})),
            content_hash(&json!({"b": {"d": 3, "c": 2}, "a": 1}))
        );
    }

    #[test]
    fn objects_not_applied_by_snaproll_are_adopted() {
        let d = desired_for_apply(&json!({"metadata": {"name": "a"}}), "id");
        let mut l = d.clone();
        l["metadata"]["managedFields"] =
            json!([{"manager": "kubectl", "operation": "Apply", "fieldsV1": {}}]);
        assert!(change_reason(&d, &l).unwrap().contains("not yet managed"));
    }

    #[test]
    fn secret_values_never_appear_in_diffs() {
        let before = json!({"kind": "Secret", "data": {"a": "c2VjcmV0", "b": "eA=="}});
        let after = json!({"kind": "Secret", "data": {"a": "bmV3", "b": "eA=="}});
        let d = unified_diff("Secret/s", Some(&before), Some(&after), false);
        assert!(!d.contains("c2VjcmV0") && !d.contains("bmV3") && !d.contains("eA=="));
        assert!(d.contains("*** (before)") && d.contains("*** (after)"));
    }

    #[test]
    fn diffs_hide_server_bookkeeping() {
        let live = json!({"kind": "Service", "metadata": {"name": "s", "uid": "u", "resourceVersion": "9",
            "generation": 2, "creationTimestamp": "t", "managedFields": [{}]}, "status": {"x": 1}});
        let c = cleaned(&live);
        assert_eq!(c, json!({"kind": "Service", "metadata": {"name": "s"}}));
    }

    #[test]
    fn statefulset_immutable_fields_are_named() {
        let d = json!({"spec": {"replicas": 5, "volumeClaimTemplates": [{"spec": {"resources": {"requests": {"storage": "20Gi"}}}}]}});
        let l = json!({"spec": {"replicas": 3, "volumeClaimTemplates": [{"spec": {"resources": {"requests": {"storage": "10Gi"}}}}]}});
        assert_eq!(
            immutable_statefulset_fields(&d, &l),
            vec!["spec.volumeClaimTemplates[0].spec.resources.requests.storage"]
        );
    }
}
