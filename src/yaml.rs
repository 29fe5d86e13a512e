//! Canonical YAML output of rendered objects.
//!
//! serde-saphyr parses specs and templates, but its serializer quotes only what YAML 1.2 finds
//! ambiguous: a label value `2021-07-15` comes out plain, and YAML 1.1 readers (PyYAML, older
//! go-yaml users, many CI scripts) turn it into a timestamp; `0755` or `12:30` become numbers.
//! Rendered manifests are read by many such tools, so this emitter writes the same block style
//! kubectl does but quotes every string that is not plainly a string in both YAML versions.
//! Quoted strings are JSON strings, which are valid YAML double-quoted scalars.

use serde_json::Value;

/// Block-style YAML for a JSON value, ending in a newline. Deterministic: equal values give
/// identical text (keys keep their order).
pub fn to_string(value: &Value) -> String {
    let mut out = String::with_capacity(1024);
    match value {
        Value::Object(m) if !m.is_empty() => write_map(&mut out, m, 0),
        Value::Array(a) if !a.is_empty() => write_seq(&mut out, a, 0),
        other => {
            write_scalar(&mut out, other);
            out.push('\n');
        }
    }
    out
}

fn indent(out: &mut String, n: usize) {
    for _ in 0..n {
        out.push(' ');
    }
}

fn write_map(out: &mut String, m: &serde_json::Map<String, Value>, ind: usize) {
    let mut first = true;
    for (k, v) in m {
        // The first key of a map that is a list item sits on the `- ` line already.
        if !first || !out.ends_with("- ") {
            indent(out, ind);
        }
        first = false;
        write_str(out, k);
        out.push(':');
        write_value_after_key(out, v, ind);
    }
}

fn write_value_after_key(out: &mut String, v: &Value, ind: usize) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            write_map(out, m, ind + 2);
        }
        // Lists under a key are not indented further, as kubectl writes them.
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            write_seq(out, a, ind);
        }
        other => {
            out.push(' ');
            write_scalar(out, other);
            out.push('\n');
        }
    }
}

fn write_seq(out: &mut String, a: &[Value], ind: usize) {
    for item in a {
        indent(out, ind);
        out.push_str("- ");
        match item {
            Value::Object(m) if !m.is_empty() => write_map(out, m, ind + 2),
            Value::Array(inner) if !inner.is_empty() => {
                out.pop();
                out.push('\n');
                write_seq(out, inner, ind + 2);
            }
            other => {
                write_scalar(out, other);
                out.push('\n');
            }
        }
    }
}

fn write_scalar(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_str(out, s),
        Value::Object(_) => out.push_str("{}"),
        Value::Array(_) => out.push_str("[]"),
    }
}

fn write_str(out: &mut String, s: &str) {
    if plain_safe(s) {
        out.push_str(s);
    } else {
        out.push_str(&serde_json::to_string(s).expect("strings serialise"));
    }
}

/// Words YAML 1.1 reads as booleans or null.
const RESERVED: [&str; 13] = [
    "y", "n", "yes", "no", "on", "off", "true", "false", "null", "~", "nan", "inf", "=",
];

/// Whether `s` reads back as the same string, plainly, under YAML 1.1 and 1.2. Conservative:
/// anything unusual is quoted.
fn plain_safe(s: &str) -> bool {
    let bytes = s.as_bytes();
    let Some(&first) = bytes.first() else {
        return false;
    };
    if RESERVED.iter().any(|w| s.eq_ignore_ascii_case(w)) {
        return false;
    }
    if !(first.is_ascii_alphabetic() || first == b'/' || first.is_ascii_digit()) {
        return false;
    }
    if bytes.last() == Some(&b':') || bytes.last() == Some(&b' ') {
        return false;
    }
    let charset_ok = bytes.iter().all(|&b| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b' ' | b'_' | b'.' | b'/' | b'-' | b'+' | b'=' | b'@' | b':' | b','
            )
    });
    if !charset_ok || s.contains(": ") || s.contains(" #") {
        return false;
    }
    if first.is_ascii_digit() {
        // Numbers, dates, times, octal, hex, exponents and sexagesimal all start with a digit
        // and contain no letter outside hex digits and x/o: such strings are quoted. `10Gi`,
        // `500m` pass.
        let unambiguous = bytes
            .iter()
            .any(|b| b.is_ascii_alphabetic() && !b"abcdefABCDEFxXoO".contains(b))
            && !s.contains(':');
        return unambiguous;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ambiguous_strings_are_quoted_and_round_trip() {
        let tricky = [
            "2021-07-15",
            "0755",
            "12:30",
            "yes",
            "No",
            "on",
            "true",
            "null",
            "~",
            "1e3",
            "0x1F",
            "",
            " lead",
            "trail ",
            "a: b",
            "a #b",
            "#c",
            "- x",
            "*ref",
            "&a",
            "!tag",
            "|",
            ">",
            "%x",
            "@x",
            "`x",
            "multi\nline",
            "quote\"s",
            "back\\slash",
            "10",
            "1.5",
            ".inf",
            "-1",
            "10Gi",
            "500m",
            "ubuntu:22.04",
            "/data",
            "key=value",
            "y",
            "N",
            "über",
        ];
        for s in tricky {
            let v = json!({ "k": s, s: [s, {"x": s}] });
            let text = to_string(&v);
            let back: Value =
                serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{s:?}: {e}\n{text}"));
            assert_eq!(back, v, "{s:?} did not round-trip:\n{text}");
        }
        assert!(to_string(&json!({"g": "2021-07-15"})).contains("\"2021-07-15\""));
        assert!(to_string(&json!({"s": "10Gi"})).contains("s: 10Gi"));
    }

    #[test]
    fn block_layout_matches_kubectl_style() {
        let v = json!({"a": {"b": [1, {"c": "d", "e": []}], "f": {}}, "g": [[1, 2]]});
        assert_eq!(
            to_string(&v),
            "a:\n  b:\n  - 1\n  - c: d\n    e: []\n  f: {}\ng:\n-\n  - 1\n  - 2\n"
        );
        let back: Value = serde_saphyr::from_str(&to_string(&v)).unwrap();
        assert_eq!(back, v);
    }
}
