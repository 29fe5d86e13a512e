//! Validation of rendered objects before anything is written anywhere.
//!
//! Built-in kinds are parsed into their k8s-openapi types; since those accept and silently drop
//! unknown fields, the parsed object is serialised back and any field of the rendered object that
//! did not survive the round trip is reported as unknown (the API server would prune it, which is
//! how a typo in an override template goes unnoticed). VolumeSnapshot and VolumeSnapshotClass are
//! checked against the CRD schemas copied from external-snapshotter (`crds/`): a structural-schema
//! check (types, required, enums, unknown fields) plus the CRDs' creation-time CEL rules, evaluated
//! by a small interpreter for the subset they use (`has()`, `size()`, `!`, `&&`, `||`, `>`).
//! Transition rules (those reading `oldSelf`) only apply to updates and are left to the server.

use std::sync::OnceLock;

use serde_json::Value;

use crate::manifest::{Kind, ObjectRef};
use crate::spec;

const SNAPSHOT_CRD: &str = include_str!("../crds/snapshot.storage.k8s.io_volumesnapshots.yaml");
const CLASS_CRD: &str = include_str!("../crds/snapshot.storage.k8s.io_volumesnapshotclasses.yaml");

/// The kind, namespace and name of a rendered object, or what is wrong with them.
pub fn identity(value: &Value) -> Result<ObjectRef, String> {
    let obj = value
        .as_object()
        .ok_or_else(|| "a manifest must be a YAML mapping".to_string())?;
    let kind_str = obj
        .get("kind")
        .and_then(Value::as_str)
        .ok_or_else(|| "missing `kind`".to_string())?;
    let kind = Kind::from_kind(kind_str).ok_or_else(|| {
        format!(
            "kind `{kind_str}` is not one snaproll renders ({})",
            Kind::ALL.map(Kind::as_str).join(", ")
        )
    })?;
    let api_version = obj.get("apiVersion").and_then(Value::as_str);
    if api_version != Some(kind.api_version()) {
        return Err(format!(
            "apiVersion must be `{}` for {kind} (got {})",
            kind.api_version(),
            api_version.map_or("none".to_string(), |v| format!("`{v}`"))
        ));
    }
    let name = field(value, &["metadata", "name"])
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| "missing `metadata.name`".to_string())?;
    let namespace = field(value, &["metadata", "namespace"]).and_then(Value::as_str);
    match (kind.namespaced(), namespace) {
        (true, None) => return Err(format!("{kind} `{name}` needs `metadata.namespace`")),
        (false, Some(_)) => {
            return Err(format!(
                "{kind} `{name}` is cluster-scoped and must not set `metadata.namespace`"
            ));
        }
        _ => {}
    }
    Ok(ObjectRef::new(kind, namespace, name))
}

/// The value at a path of keys: `Value::pointer` unescapes every token with a `replace`,
/// which cost a few percent of a large render at a dozen lookups per object.
fn field<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, k| v.get(k))
}

/// Validates a rendered object of `kind`; the message names the offending field.
pub fn validate(kind: Kind, value: &Value) -> Result<(), String> {
    check_metadata(kind, value)?;
    match kind {
        Kind::PersistentVolumeClaim => {
            round_trip::<k8s_openapi::api::core::v1::PersistentVolumeClaim>(value)
        }
        Kind::Pod => round_trip::<k8s_openapi::api::core::v1::Pod>(value),
        Kind::Service => round_trip::<k8s_openapi::api::core::v1::Service>(value),
        Kind::StatefulSet => round_trip::<k8s_openapi::api::apps::v1::StatefulSet>(value),
        Kind::Job => round_trip::<k8s_openapi::api::batch::v1::Job>(value),
        Kind::VolumeSnapshot => crd_check(&schemas().snapshot, value),
        Kind::VolumeSnapshotClass => crd_check(&schemas().class, value),
    }?;
    if kind == Kind::StatefulSet {
        check_statefulset(value)?;
    }
    Ok(())
}

/// [`validate`] without the k8s-openapi round trip of the built-in kinds, for an object whose
/// structure already passed it (see `render::shapes`): every check that reads string contents
/// (names, labels, the CRD schemas' types, enums and rules, the StatefulSet name and selector)
/// runs, in [`validate`]'s order, so the first problem reported is the same.
pub fn validate_instance(kind: Kind, value: &Value) -> Result<(), String> {
    check_metadata(kind, value)?;
    match kind {
        Kind::VolumeSnapshot => crd_check(&schemas().snapshot, value)?,
        Kind::VolumeSnapshotClass => crd_check(&schemas().class, value)?,
        Kind::PersistentVolumeClaim | Kind::Pod | Kind::Service | Kind::StatefulSet | Kind::Job => {
        }
    }
    if kind == Kind::StatefulSet {
        check_statefulset(value)?;
    }
    Ok(())
}

fn check_metadata(kind: Kind, value: &Value) -> Result<(), String> {
    let meta = value
        .get("metadata")
        .and_then(Value::as_object)
        .ok_or("missing `metadata`")?;
    let name = meta.get("name").and_then(Value::as_str).unwrap_or_default();
    let named = if kind == Kind::Service {
        // Service names are RFC 1035 labels: they must start with a letter.
        spec::check_dns_label(name).and_then(|_| {
            if name.starts_with(|c: char| c.is_ascii_digit()) {
                Err(format!("Service name `{name}` must start with a letter"))
            } else {
                Ok(())
            }
        })
    } else {
        spec::check_dns_subdomain(name)
    };
    named.map_err(|e| format!("metadata.name: {e}"))?;
    for field in ["labels", "annotations"] {
        if let Some(map) = meta.get(field) {
            let map = map
                .as_object()
                .ok_or_else(|| format!("metadata.{field} must be a mapping"))?;
            for (k, v) in map {
                check_label_key(k).map_err(|e| format!("metadata.{field}: {e}"))?;
                let v = v
                    .as_str()
                    .ok_or_else(|| format!("metadata.{field}.{k} must be a string"))?;
                if field == "labels" {
                    check_label_value(v).map_err(|e| format!("metadata.labels.{k}: {e}"))?;
                }
            }
        }
    }
    Ok(())
}

/// Label keys: an optional DNS-subdomain prefix and `/`, then a name of at most 63 characters.
pub fn check_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        spec::check_dns_subdomain(p).map_err(|e| format!("key `{key}`: prefix {e}"))?;
    }
    if name.is_empty() || name.len() > 63 || !label_chars(name) {
        return Err(format!(
            "invalid key `{key}`: the name part must be 1-63 alphanumerics, `-`, `_` or `.`, starting and ending alphanumeric"
        ));
    }
    Ok(())
}

/// Label values: empty, or at most 63 alphanumerics, `-`, `_`, `.`, alphanumeric at both ends.
pub fn check_label_value(v: &str) -> Result<(), String> {
    if v.len() > 63 || (!v.is_empty() && !label_chars(v)) {
        return Err(format!(
            "invalid label value `{v}`: at most 63 alphanumerics, `-`, `_` or `.`, starting and ending alphanumeric"
        ));
    }
    Ok(())
}

fn label_chars(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
}

/// Parses into a k8s-openapi type and reports fields lost on the way back. Also used for the
/// objects of `snaproll install`, which are not rollout kinds.
pub(crate) fn round_trip<T>(value: &Value) -> Result<(), String>
where
    T: serde::de::DeserializeOwned + serde::Serialize,
{
    // The path is tracked only on failure: tracking it on every object costs a few percent of
    // a large render.
    let typed = T::deserialize(value).map_err(|plain| {
        match serde_path_to_error::deserialize::<_, T>(value) {
            Err(e) if e.path().to_string() != "." => {
                format!("{}: {}", e.path(), rust_free(&e.inner().to_string()))
            }
            _ => rust_free(&plain.to_string()),
        }
    })?;
    let back = serde_json::to_value(&typed).map_err(|e| e.to_string())?;
    let mut unknown = Vec::new();
    lost_fields(value, &back, &mut Vec::new(), &mut unknown);
    match unknown.first() {
        None => Ok(()),
        Some(first) => Err(format!("unknown field `{first}`")),
    }
}

/// Rewrites serde's Rust type names (`expected i32`) into the words a template author uses.
fn rust_free(message: &str) -> String {
    let mut out = message.to_string();
    for (rust, plain) in [
        ("expected i32", "expected a whole number"),
        ("expected i64", "expected a whole number"),
        ("expected f64", "expected a number"),
        ("expected a boolean", "expected true or false"),
        ("; use Option<String>", ""),
    ] {
        out = out.replace(rust, plain);
    }
    out
}

/// Fields of `orig` that did not survive the typed round trip. The path is a stack of
/// segments joined only for a lost field: formatting it for every key was a few percent of a
/// large render.
fn lost_fields<'a>(
    orig: &'a Value,
    back: &Value,
    path: &mut Vec<Segment<'a>>,
    out: &mut Vec<String>,
) {
    match (orig, back) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                match b.get(k) {
                    Some(bv) => {
                        path.push(Segment::Key(k));
                        lost_fields(v, bv, path, out);
                        path.pop();
                    }
                    None if v.is_null() => {}
                    None => {
                        path.push(Segment::Key(k));
                        out.push(join_path(path));
                        path.pop();
                    }
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                path.push(Segment::Index(i));
                lost_fields(x, y, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

/// One step of a field path: `key` or `[index]`.
enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

/// `spec.containers[0].name`.
fn join_path(path: &[Segment<'_>]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Segment::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Segment::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// Checks the API server would reject, which the types cannot express.
fn check_statefulset(value: &Value) -> Result<(), String> {
    let name = field(value, &["metadata", "name"])
        .and_then(Value::as_str)
        .unwrap_or_default();
    if name.len() > spec::MAX_STATEFULSET_NAME {
        return Err(format!(
            "StatefulSet name `{name}` is {} characters; at most {} fit the controller-revision-hash label",
            name.len(),
            spec::MAX_STATEFULSET_NAME
        ));
    }
    let selector = field(value, &["spec", "selector", "matchLabels"]).and_then(Value::as_object);
    let labels =
        field(value, &["spec", "template", "metadata", "labels"]).and_then(Value::as_object);
    if let Some(sel) = selector {
        for (k, v) in sel {
            if labels.and_then(|l| l.get(k)) != Some(v) {
                return Err(format!(
                    "spec.selector.matchLabels.{k} does not match spec.template.metadata.labels"
                ));
            }
        }
    }
    Ok(())
}

struct Schemas {
    snapshot: Value,
    class: Value,
}

fn schemas() -> &'static Schemas {
    static SCHEMAS: OnceLock<Schemas> = OnceLock::new();
    SCHEMAS.get_or_init(|| Schemas {
        snapshot: crd_schema(SNAPSHOT_CRD),
        class: crd_schema(CLASS_CRD),
    })
}

/// The `openAPIV3Schema` of the served `v1` version of a CRD.
fn crd_schema(text: &str) -> Value {
    let crd: Value = serde_saphyr::from_str(text).expect("embedded CRD is valid YAML");
    crd["spec"]["versions"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["name"] == "v1"))
        .map(|v| v["schema"]["openAPIV3Schema"].clone())
        .expect("embedded CRD has a v1 schema")
}

fn crd_check(schema: &Value, value: &Value) -> Result<(), String> {
    let mut errors = Vec::new();
    check_node(schema, value, "", true, &mut errors);
    match errors.into_iter().next() {
        None => Ok(()),
        Some(e) => Err(e),
    }
}

fn at(path: &str) -> String {
    if path.is_empty() {
        "the object".to_string()
    } else {
        path.to_string()
    }
}

/// Structural-schema check of one node. `root` relaxes `metadata`, which CRD schemas leave
/// untyped (it is checked by [`check_metadata`]).
fn check_node(schema: &Value, value: &Value, path: &str, root: bool, errors: &mut Vec<String>) {
    let ty = schema.get("type").and_then(Value::as_str);
    let type_ok = match ty {
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        _ => true,
    };
    if !type_ok {
        errors.push(format!(
            "{}: must be of type {} (got {})",
            at(path),
            ty.unwrap_or("?"),
            json_type(value)
        ));
        return;
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        let list: Vec<String> = options.iter().map(|o| o.to_string()).collect();
        errors.push(format!(
            "{}: {} is not one of {}",
            at(path),
            value,
            list.join(", ")
        ));
    }
    if let Value::Object(map) = value {
        let props = schema.get("properties").and_then(Value::as_object);
        let additional = schema.get("additionalProperties");
        if let Some(required) = schema.get("required").and_then(Value::as_array) {
            for r in required.iter().filter_map(Value::as_str) {
                if !map.contains_key(r) {
                    errors.push(format!("{}: missing required field `{r}`", at(path)));
                }
            }
        }
        for (k, v) in map {
            let child = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            if root && k == "metadata" {
                continue;
            }
            match (props.and_then(|p| p.get(k)), additional) {
                (Some(s), _) => check_node(s, v, &child, false, errors),
                (None, Some(s)) if s.is_object() => check_node(s, v, &child, false, errors),
                (None, Some(Value::Bool(true))) => {}
                (None, _) if props.is_none() && additional.is_none() => {}
                (None, _) => {
                    let known: Vec<String> = props
                        .map(|p| p.keys().cloned().collect())
                        .unwrap_or_default();
                    let hint = spec::closest(k, &known)
                        .map(|s| format!("; did you mean `{s}`?"))
                        .unwrap_or_default();
                    errors.push(format!("unknown field `{child}`{hint}"));
                }
            }
        }
    }
    if let (Value::Array(items), Some(item_schema)) = (value, schema.get("items")) {
        for (i, item) in items.iter().enumerate() {
            check_node(item_schema, item, &format!("{path}[{i}]"), false, errors);
        }
    }
    if let Some(rules) = schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
    {
        for rule in rules {
            let expr = rule.get("rule").and_then(Value::as_str).unwrap_or_default();
            if expr.contains("oldSelf") {
                continue;
            }
            if let Some(false) = cel::eval(expr, value) {
                let msg = rule.get("message").and_then(Value::as_str).unwrap_or(expr);
                errors.push(format!("{}: {msg}", at(path)));
            }
        }
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The CEL subset the snapshot CRDs' creation rules use. `eval` returns `None` for anything
/// outside it, and such a rule is left to the API server rather than guessed at.
mod cel {
    use serde_json::Value;

    #[derive(Debug, Clone, PartialEq)]
    enum Tok {
        Ident(String),
        Num(i64),
        LParen,
        RParen,
        Dot,
        Not,
        And,
        Or,
        Gt,
    }

    fn lex(s: &str) -> Option<Vec<Tok>> {
        let b = s.as_bytes();
        let mut i = 0;
        let mut out = Vec::new();
        while i < b.len() {
            let c = b[i];
            match c {
                b' ' | b'\n' | b'\t' => i += 1,
                b'(' => {
                    out.push(Tok::LParen);
                    i += 1
                }
                b')' => {
                    out.push(Tok::RParen);
                    i += 1
                }
                b'.' => {
                    out.push(Tok::Dot);
                    i += 1
                }
                b'>' => {
                    out.push(Tok::Gt);
                    i += 1
                }
                b'!' => {
                    out.push(Tok::Not);
                    i += 1
                }
                b'&' if b.get(i + 1) == Some(&b'&') => {
                    out.push(Tok::And);
                    i += 2
                }
                b'|' if b.get(i + 1) == Some(&b'|') => {
                    out.push(Tok::Or);
                    i += 2
                }
                b'0'..=b'9' => {
                    let start = i;
                    while i < b.len() && b[i].is_ascii_digit() {
                        i += 1;
                    }
                    out.push(Tok::Num(s[start..i].parse().ok()?));
                }
                c if c.is_ascii_alphabetic() || c == b'_' => {
                    let start = i;
                    while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                        i += 1;
                    }
                    out.push(Tok::Ident(s[start..i].to_string()));
                }
                _ => return None,
            }
        }
        Some(out)
    }

    struct Parser<'a> {
        toks: &'a [Tok],
        pos: usize,
        this: &'a Value,
    }

    thread_local! {
        /// Each rule's tokens, by its text: the same few CRD rules run on every snapshot of a
        /// render, and lexing them each time was most of checking one.
        static LEXED: std::cell::RefCell<std::collections::HashMap<String, Option<Vec<Tok>>>> =
            Default::default();
    }

    /// Evaluates `rule` against `this` (`self`); `None` when the rule is outside the subset.
    pub fn eval(rule: &str, this: &Value) -> Option<bool> {
        LEXED.with(|lexed| {
            let mut lexed = lexed.borrow_mut();
            if !lexed.contains_key(rule) {
                lexed.insert(rule.to_string(), lex(rule));
            }
            let toks = lexed.get(rule)?.as_deref()?;
            let mut p = Parser { toks, pos: 0, this };
            let v = p.or()?;
            (p.pos == p.toks.len()).then_some(v)
        })
    }

    impl<'a> Parser<'a> {
        fn peek(&self) -> Option<&'a Tok> {
            self.toks.get(self.pos)
        }

        fn eat(&mut self, t: &Tok) -> bool {
            if self.peek() == Some(t) {
                self.pos += 1;
                true
            } else {
                false
            }
        }

        fn or(&mut self) -> Option<bool> {
            let mut v = self.and()?;
            while self.eat(&Tok::Or) {
                let r = self.and()?;
                v = v || r;
            }
            Some(v)
        }

        fn and(&mut self) -> Option<bool> {
            let mut v = self.unary()?;
            while self.eat(&Tok::And) {
                let r = self.unary()?;
                v = v && r;
            }
            Some(v)
        }

        fn unary(&mut self) -> Option<bool> {
            if self.eat(&Tok::Not) {
                return self.unary().map(|v| !v);
            }
            if self.eat(&Tok::LParen) {
                let v = self.or()?;
                return self.eat(&Tok::RParen).then_some(v);
            }
            match self.peek()? {
                Tok::Ident(f) if f == "has" => {
                    self.pos += 1;
                    if !self.eat(&Tok::LParen) {
                        return None;
                    }
                    let path = self.path()?;
                    if !self.eat(&Tok::RParen) || path.is_empty() {
                        return None;
                    }
                    Some(self.lookup(&path).is_some())
                }
                Tok::Ident(f) if f == "size" => {
                    self.pos += 1;
                    if !self.eat(&Tok::LParen) {
                        return None;
                    }
                    let path = self.path()?;
                    if !self.eat(&Tok::RParen) || !self.eat(&Tok::Gt) {
                        return None;
                    }
                    let &Tok::Num(n) = self.peek()? else {
                        return None;
                    };
                    self.pos += 1;
                    let len = match self.lookup(&path)? {
                        Value::String(s) => s.chars().count(),
                        Value::Array(a) => a.len(),
                        Value::Object(o) => o.len(),
                        _ => return None,
                    };
                    Some(len as i64 > n)
                }
                _ => None,
            }
        }

        /// `self(.field)*` → the field names.
        fn path(&mut self) -> Option<Vec<&'a str>> {
            match self.peek()? {
                Tok::Ident(s) if s == "self" => self.pos += 1,
                _ => return None,
            }
            let mut fields = Vec::new();
            while self.eat(&Tok::Dot) {
                match self.peek()? {
                    Tok::Ident(f) => {
                        self.pos += 1;
                        fields.push(f.as_str());
                    }
                    _ => return None,
                }
            }
            Some(fields)
        }

        fn lookup(&self, path: &[&str]) -> Option<&Value> {
            let mut v = self.this;
            for f in path {
                v = v.get(f)?;
            }
            (!v.is_null()).then_some(v)
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use serde_json::json;

        const EXACTLY_ONE: &str = "(has(self.volumeSnapshotContentName) && !has(self.persistentVolumeClaimName)) || (!has(self.volumeSnapshotContentName) && has(self.persistentVolumeClaimName))";

        #[test]
        fn exactly_one_source() {
            assert_eq!(
                eval(EXACTLY_ONE, &json!({"persistentVolumeClaimName": "a"})),
                Some(true)
            );
            assert_eq!(
                eval(
                    EXACTLY_ONE,
                    &json!({"persistentVolumeClaimName": "a", "volumeSnapshotContentName": "b"})
                ),
                Some(false)
            );
            assert_eq!(eval(EXACTLY_ONE, &json!({})), Some(false));
        }

        #[test]
        fn size_and_unsupported() {
            assert_eq!(eval("size(self) > 0", &json!("x")), Some(true));
            assert_eq!(eval("size(self) > 0", &json!("")), Some(false));
            assert_eq!(eval("self.matches('x')", &json!("x")), None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn snapshot(source: Value) -> Value {
        json!({
            "apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshot",
            "metadata": {"name": "data-1", "namespace": "default"},
            "spec": {"volumeSnapshotClassName": "c", "source": source}
        })
    }

    #[test]
    fn snapshot_needs_exactly_one_source() {
        assert!(
            validate(
                Kind::VolumeSnapshot,
                &snapshot(json!({"persistentVolumeClaimName": "data"}))
            )
            .is_ok()
        );
        let both =
            snapshot(json!({"persistentVolumeClaimName": "d", "volumeSnapshotContentName": "c"}));
        let err = validate(Kind::VolumeSnapshot, &both).unwrap_err();
        assert!(err.contains("exactly one of"), "{err}");
    }

    #[test]
    fn crd_unknown_fields_and_enums() {
        let mut v = snapshot(json!({"persistentVolumeClaimName": "data"}));
        v["spec"]["volumeSnapshotClasName"] = json!("x");
        let err = validate(Kind::VolumeSnapshot, &v).unwrap_err();
        assert_eq!(
            err,
            "unknown field `spec.volumeSnapshotClasName`; did you mean `volumeSnapshotClassName`?"
        );
        let class = json!({
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
            "metadata": {"name": "c"}, "driver": "d", "deletionPolicy": "Keep"
        });
        let err = validate(Kind::VolumeSnapshotClass, &class).unwrap_err();
        assert!(
            err.contains("deletionPolicy: \"Keep\" is not one of"),
            "{err}"
        );
    }

    #[test]
    fn builtin_unknown_fields_are_reported() {
        let pvc = json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "d", "namespace": "n"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resource": {"requests": {"storage": "1Gi"}}}
        });
        assert_eq!(
            validate(Kind::PersistentVolumeClaim, &pvc).unwrap_err(),
            "unknown field `spec.resource`"
        );
    }

    #[test]
    fn identity_requires_namespace_for_namespaced_kinds() {
        let v = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}});
        assert_eq!(
            identity(&v).unwrap_err(),
            "Service `s` needs `metadata.namespace`"
        );
    }
}
