//! Reading a spec: bounded input, strict parsing and the one-line located parse messages.

use std::path::Path;

use super::positions::Positions;
use super::*;

/// A spec that passed validation, with the warnings found on the way.
#[derive(Debug)]
pub struct Loaded {
    pub rollout: Rollout,
    pub warnings: Vec<Issue>,
    /// The name the file was given as (for messages).
    pub file: String,
}

/// Reads, parses and validates a spec file (`-`: standard input).
pub fn load(path: &Path) -> Result<Loaded, SpecError> {
    let bytes = read(path)?;
    parse_bytes(&crate::input::display_name(path), &bytes)
}

/// Reads a spec file (`-`: standard input): a regular file of at most [`MAX_SPEC_BYTES`],
/// read with bounded memory and time whatever the path names (see [`crate::input`]).
pub fn read(path: &Path) -> Result<Vec<u8>, SpecError> {
    use crate::input::InputError;
    crate::input::read_bounded(path, MAX_SPEC_BYTES).map_err(|e| match e {
        InputError::Io { path, source } => SpecError::Read { path, source },
        InputError::TooLarge { name, size, .. } => SpecError::TooLarge { path: name, size },
        other => SpecError::Input(other),
    })
}

/// Parses and validates spec bytes; `file` is used in messages.
pub fn parse_bytes(file: &str, bytes: &[u8]) -> Result<Loaded, SpecError> {
    if bytes.len() as u64 > MAX_SPEC_BYTES {
        return Err(SpecError::TooLarge {
            path: file.to_string(),
            size: bytes.len() as u64,
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|e| SpecError::NotText {
        path: file.to_string(),
        offset: e.valid_up_to(),
    })?;
    parse_str(file, text)
}

/// Parses and validates spec text; `file` is used in messages.
pub fn parse_str(file: &str, text: &str) -> Result<Loaded, SpecError> {
    if text.contains('\0') {
        return Err(SpecError::NotText {
            path: file.to_string(),
            offset: text.find('\0').unwrap_or(0),
        });
    }
    if text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#') || l.trim() == "---")
    {
        return Err(SpecError::Empty {
            path: file.to_string(),
        });
    }
    let options = serde_saphyr::options! { budget: budget() };
    // The span tree costs a second parse, so it is built only when there is something to
    // locate: a parse error, or a spec that validation has issues (errors or warnings) with.
    let positions = || -> Result<Positions, SpecError> {
        // Syntax errors win: a typed parse may stop at a misplaced field before reaching them.
        Positions::parse(text, options.clone()).map_err(|syntax| {
            let mut issue = parse_issue(file, text, &Positions::default(), &syntax);
            // The parser knows no path for a syntax (often indentation) error; the keys above
            // the line name the field it stands in.
            if issue.field.is_empty()
                && let Some(pos) = issue.pos
            {
                issue.field = collect::enclosing_path(text, pos.line);
            }
            SpecError::Invalid {
                issues: vec![issue],
            }
        })
    };
    let rollout: Result<Rollout, _> = match plain_rollout(text) {
        Some(r) => Ok(r),
        None => serde_saphyr::from_str_with_options(text, options.clone()),
    };
    let rollout = match rollout {
        Ok(r) => r,
        Err(e) => {
            let p = positions()?;
            if let Some(issue) = collect::other_kind(file, text, &p) {
                return Err(SpecError::Invalid {
                    issues: vec![issue],
                });
            }
            let first = parse_issue(file, text, &p, &e);
            return Err(SpecError::Invalid {
                issues: collect::all_issues(file, text, &p, first),
            });
        }
    };
    let unlocated = Positions::default();
    // Only text with a raw unportable character, or an escape that makes one (`\x85`, `\u0085`,
    // `\U00000085`, `\N`), can hold one; most specs skip the walk.
    let scan_text = ["\\x", "\\u", "\\U", "\\N"]
        .iter()
        .any(|e| text.contains(e))
        || text.chars().any(unportable);
    let mut v = Validator {
        file,
        positions: &unlocated,
        scan_text,
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    v.rollout(&rollout);
    if !v.errors.is_empty() || !v.warnings.is_empty() {
        // Validate again with positions: cheap next to a parse, and only on this path.
        let located = positions()?;
        v = Validator {
            file,
            positions: &located,
            scan_text,
            errors: Vec::new(),
            warnings: Vec::new(),
        };
        v.rollout(&rollout);
        if !v.errors.is_empty() {
            collect::sort(&mut v.errors);
            return Err(SpecError::Invalid { issues: v.errors });
        }
        let warnings = v.warnings;
        return Ok(Loaded {
            rollout,
            warnings,
            file: file.to_string(),
        });
    }
    Ok(Loaded {
        rollout,
        warnings: v.warnings,
        file: file.to_string(),
    })
}

/// The JSON Schema (draft 2020-12) of a rollout document, derived from the spec types so it
/// follows the parser: unknown fields are refused (`additionalProperties: false`), defaults and
/// doc comments become `default` and `description`. Checks the parser makes beyond the types
/// (names, quantities, cross-field rules) stay with `snaproll validate`.
pub fn json_schema() -> serde_json::Value {
    schemars::schema_for!(Rollout).to_value()
}

/// Parser limits: generous enough for a 16 MiB spec of tens of thousands of datasets (the
/// default node budget stops at 250,000), still bounded against alias bombs.
/// Parser events a spec read on the fast path may have; larger ones go to serde-saphyr, whose
/// budget ([`budget`]) reports them.
const MAX_PLAIN_EVENTS: usize = 20_000_000;

/// The spec read straight from the parser's events into a JSON value and typed from it, when
/// it is plain YAML (see [`crate::yaml::from_str`]) and types without error. That reads the
/// same values as serde-saphyr and takes about half its time, on the one step of a render no
/// core can share. Anything else (anchors, tags, ambiguous scalars, a value of the wrong type,
/// an unknown field) gets `None`: serde-saphyr reads the spec then, so its values, its
/// coercions and every error message with its file:line:column stay its own.
fn plain_rollout(text: &str) -> Option<Rollout> {
    let value = crate::yaml::plain_document_within(text, MAX_PLAIN_EVENTS)?;
    serde_json::from_value(value).ok()
}

fn budget() -> Option<serde_saphyr::Budget> {
    serde_saphyr::budget! {
        max_nodes: 20_000_000,
        max_events: 40_000_000,
        max_total_scalar_bytes: MAX_SPEC_BYTES as usize * 4,
    }
}

/// Turns a serde-saphyr error into a one-line located issue with a field path and, for an
/// unknown field, a "did you mean" suggestion.
fn parse_issue(file: &str, text: &str, positions: &Positions, e: &serde_saphyr::Error) -> Issue {
    let pos = e.location().and_then(|l| {
        (l.line() > 0).then_some(Pos {
            line: l.line() as u32,
            column: l.column() as u32,
        })
    });
    let raw = bare_message(e);
    let mut field = pos
        .and_then(|p| positions.path_at(p))
        .unwrap_or("")
        .to_string();
    // Unknown and missing fields point at a key: name the mapping it stands in.
    let key_mapping = pos
        .and_then(|p| positions.mapping_of_key(p))
        .map(str::to_string);
    let message = if let Some((unknown, expected)) = parse_unknown_field(&raw) {
        if let Some(m) = key_mapping {
            field = m;
        }
        unknown_field_message(&unknown, &expected)
    } else if let Some(missing) = raw
        .strip_prefix("missing field `")
        .and_then(|r| r.strip_suffix('`'))
    {
        if let Some(m) = key_mapping {
            field = m;
        }
        format!("missing required field `{missing}`")
    } else if let Some(rest) = raw.strip_prefix("unknown variant `") {
        let (value, tail) = rest.split_once('`').unwrap_or((rest, ""));
        let options: Vec<String> = tail
            .split_once("expected one of ")
            .or_else(|| tail.split_once("expected "))
            .map(|(_, l)| {
                l.split(", ")
                    .map(|o| o.trim_matches('`').to_string())
                    .collect()
            })
            .unwrap_or_default();
        let suggestion = closest(value, &options)
            .map(|s| format!("; did you mean `{s}`?"))
            .unwrap_or_default();
        format!(
            "invalid value `{value}`{suggestion} (valid values: {})",
            options.join(", ")
        )
    } else if let Some(range) = raw.strip_prefix("invalid ").and_then(integer_range) {
        let range = field_range(&field).unwrap_or(range);
        number_message(pos.map(|p| scalar_at(text, p)).unwrap_or_default(), range)
    } else {
        user_message(&raw)
    };
    Issue {
        file: file.to_string(),
        pos,
        field,
        message,
    }
}

/// "unknown field `x`; did you mean `y`? (valid fields: …)".
pub(super) fn unknown_field_message(unknown: &str, expected: &[String]) -> String {
    let suggestion = closest(unknown, expected)
        .map(|s| format!("; did you mean `{s}`?"))
        .unwrap_or_default();
    let valid = if expected.is_empty() {
        "this mapping takes no fields".to_string()
    } else {
        format!("valid fields: {}", expected.join(", "))
    };
    format!("unknown field `{unknown}`{suggestion} ({valid})")
}

/// The range of an integer type serde-saphyr names in "invalid u32" and the like.
pub(super) fn integer_range(ty: &str) -> Option<(i128, i128)> {
    Some(match ty {
        "u8" => (0, u8::MAX.into()),
        "u16" => (0, u16::MAX.into()),
        "u32" => (0, u32::MAX.into()),
        "u64" => (0, u64::MAX.into()),
        "i8" => (i8::MIN.into(), i8::MAX.into()),
        "i16" => (i16::MIN.into(), i16::MAX.into()),
        "i32" => (i32::MIN.into(), i32::MAX.into()),
        "i64" => (i64::MIN.into(), i64::MAX.into()),
        _ => return None,
    })
}

/// The valid range of a numeric spec field where it is narrower than its Rust type's.
pub(super) fn field_range(field: &str) -> Option<(i128, i128)> {
    let last = field.rsplit('.').next().unwrap_or(field);
    Some(match last {
        "replicas" => (0, i32::MAX.into()),
        "keep" => (1, u32::MAX.into()),
        "containerPort" | "port" | "targetPort" => (1, 65535),
        _ => return None,
    })
}

/// Says why a scalar is not a whole number of the field's type, quoting it.
pub(super) fn number_message(scalar: &str, (min, max): (i128, i128)) -> String {
    // An empty value is located at the `:` after its key.
    if scalar.is_empty()
        || scalar.starts_with(':')
        || matches!(scalar, "~" | "null" | "Null" | "NULL")
    {
        return "must not be empty (expected a whole number)".to_string();
    }
    match scalar.parse::<i128>() {
        Ok(n) if n < min || n > max => {
            format!("`{scalar}` is out of range: expected a whole number from {min} to {max}")
        }
        _ => format!("expected a whole number, got `{scalar}`"),
    }
}

/// The plain scalar that starts at `pos`, as written (up to a flow delimiter, comment or line end).
pub(super) fn scalar_at(text: &str, pos: Pos) -> &str {
    let Some(line) = text.lines().nth(pos.line.saturating_sub(1) as usize) else {
        return "";
    };
    let start = line
        .char_indices()
        .nth(pos.column.saturating_sub(1) as usize)
        .map_or(line.len(), |(i, _)| i);
    let rest = &line[start..];
    let end = rest.find([',', ']', '}', '#']).unwrap_or(rest.len());
    rest[..end].trim().trim_matches(|c| c == '"' || c == '\'')
}

/// Rewrites parser messages addressed to Rust developers into what a spec author needs.
pub(super) fn user_message(raw: &str) -> String {
    if let Some(breach) = raw.strip_prefix("budget breached: ") {
        return budget_message(breach);
    }
    if raw.starts_with("alias replay")
        || raw.starts_with("alias expansion")
        || raw.starts_with("alias replay stack")
    {
        return "aliases (`*name`) expand to more than a spec can hold (over a million nodes); write the values out or use fewer aliases".to_string();
    }
    if let Some(key) = raw.strip_prefix("duplicate mapping key: ") {
        let key = key.split(", set DuplicateKeyPolicy").next().unwrap_or(key);
        return format!("duplicate key `{key}` (each key may appear once per mapping)");
    }
    if raw.starts_with("cannot deserialize null into string") {
        return "must not be empty or null (expected a string)".to_string();
    }
    if raw.starts_with("multiple YAML documents detected") {
        return format!("more than one YAML document; a spec is a single {KIND} document");
    }
    if let Some(what) = raw.strip_prefix("unexpected event: expected ") {
        let what = match what {
            "mapping start" => "a mapping (key: value pairs)",
            "sequence start" => "a list",
            "string scalar" => "a string",
            other => other,
        };
        return format!("expected {what}");
    }
    if raw.contains("tab") {
        return format!("{raw}; indent with spaces, not tabs");
    }
    raw.to_string()
}

/// Explains a parser limit (`Depth { depth: 65 }`, `Nodes { nodes: … }`, …) in a spec author's terms.
fn budget_message(breach: &str) -> String {
    let kind = breach.split([' ', '{']).next().unwrap_or(breach);
    let number: String = breach.chars().filter(char::is_ascii_digit).collect();
    let what = match kind {
        "Depth" => {
            return format!(
                "nested {number} levels deep; a spec is never more than 64 levels deep"
            );
        }
        "Nodes" => "values",
        "Events" => "parser events",
        "ScalarBytes" => "bytes of text in values",
        "Aliases" => "aliases (`*name`)",
        "Anchors" => "anchors (`&name`)",
        "Documents" => "YAML documents",
        "MergeKeys" => "merge keys (`<<`)",
        "CommentBytes" => "bytes of comments",
        _ => return format!("the spec exceeds a parser limit ({breach})"),
    };
    format!("too large: more than {number} {what}, over the parser's limit for a spec")
}

/// A YAML error as one plain sentence, without the parser's snippet, position or Rust advice;
/// also used for the text templates render.
pub(crate) fn yaml_problem(e: &serde_saphyr::Error) -> String {
    user_message(&bare_message(e))
}

/// The error text without serde-saphyr's source snippet or position suffix.
fn bare_message(e: &serde_saphyr::Error) -> String {
    let full = e.to_string();
    let first = full.lines().next().unwrap_or("").trim().to_string();
    // serde-saphyr appends " at line X, column Y" (several, for aliases) to some messages.
    let first = match first.find(" at line ") {
        Some(i) => first[..i].to_string(),
        None => first,
    };
    let mut first = first.trim_start_matches("error: ").trim_end_matches('.');
    if first.starts_with("line ")
        && let Some((_, rest)) = first.split_once(": ")
    {
        first = rest;
    }
    let first = first.to_string();
    if first.is_empty() {
        "not a valid YAML document".to_string()
    } else {
        first
    }
}

/// Parses serde's "unknown field `x`, expected one of `a`, `b`" (or "expected `a`", or "there
/// are no fields").
pub(super) fn parse_unknown_field(msg: &str) -> Option<(String, Vec<String>)> {
    let rest = msg.strip_prefix("unknown field `")?;
    let end = rest.find('`')?;
    let unknown = rest[..end].to_string();
    let tail = &rest[end + 1..];
    let list = tail
        .split_once("expected one of ")
        .or_else(|| tail.split_once("expected "))
        .map(|(_, l)| l)
        .unwrap_or("");
    let expected = list
        .split(", ")
        .map(|s| s.trim().trim_matches('`').to_string())
        .filter(|s| !s.is_empty())
        .collect();
    Some((unknown, expected))
}

/// The known field closest to a misspelt one, when it is close enough to be a typo.
pub fn closest<'a>(unknown: &str, known: &'a [String]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| {
            (
                strsim::jaro_winkler(&unknown.to_lowercase(), &k.to_lowercase()),
                k,
            )
        })
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_field_messages_parse() {
        let (u, e) =
            parse_unknown_field("unknown field `replcas`, expected one of `name`, `replicas`")
                .unwrap();
        assert_eq!(u, "replcas");
        assert_eq!(e, vec!["name", "replicas"]);
        assert_eq!(closest("replcas", &e), Some("replicas"));
        assert_eq!(closest("zzz", &e), None);
    }

    /// The example specs the fast read takes (the daily GKE one at least; model-weights has a
    /// scalar it leaves to serde-saphyr) read what serde-saphyr reads.
    #[test]
    fn examples_take_the_plain_read() {
        for text in [
            include_str!("../../examples/gke-daily/snaproll.yaml"),
            include_str!("../../examples/multi/snaproll.yaml"),
            include_str!("../../examples/eks/snaproll.yaml"),
            include_str!("../../examples/model-weights/snaproll.yaml"),
        ] {
            let slow: Rollout = serde_saphyr::from_str(text).unwrap();
            if let Some(fast) = plain_rollout(text) {
                assert_eq!(fast, slow);
            }
        }
        assert!(plain_rollout(include_str!("../../examples/gke-daily/snaproll.yaml")).is_some());
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;
        use serde_json::{Value, json};

        /// 2,000 cases per property unless PROPTEST_CASES says otherwise.
        fn config() -> ProptestConfig {
            let cases = std::env::var("PROPTEST_CASES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(2_000);
            ProptestConfig {
                cases,
                failure_persistence: None,
                ..ProptestConfig::default()
            }
        }

        const EXAMPLE: &str = include_str!("../../examples/gke-daily/snaproll.yaml");

        const SPECIAL: &[char] = &[
            '\u{0}', '\t', '\n', '\r', '\u{7f}', '\u{85}', '\u{9f}', '\u{2028}', '\u{feff}',
            '\u{fffe}', '"', '\'', '\\', ':', '#', '-', '?', '&', '*', '!', '|', '>', '{', '}',
            '[', ']', ',', ' ', '<', '~', '0', 'a',
        ];

        fn text() -> impl Strategy<Value = String> {
            let c = prop_oneof![
                3 => proptest::sample::select(SPECIAL),
                1 => any::<char>(),
            ];
            proptest::collection::vec(c, 0..32).prop_map(String::from_iter)
        }

        /// The example spec with the free-text fields set to `v`, written as YAML.
        fn spec_with(v: &str) -> String {
            let mut doc: Value = crate::yaml::from_str(EXAMPLE).unwrap();
            doc["spec"]["snapshotClass"]["parameters"] = json!({ v: v, "p": v });
            let d = &mut doc["spec"]["datasets"][0];
            d["producer"]["command"] = json!([v]);
            d["producer"]["args"] = json!([v, v]);
            d["producer"]["env"] = json!([{"name": "V", "value": v}]);
            d["consumer"]["args"] = json!([v]);
            d["consumer"]["env"] = json!([{"name": "V", "value": v}]);
            crate::yaml::to_string(&doc)
        }

        proptest! {
            #![proptest_config(config())]

            /// Arbitrary text never panics the loader.
            #[test]
            fn loader_never_panics_on_arbitrary_text(s in text()) {
                let _ = parse_str("fuzz.yaml", &s);
                let _ = parse_bytes("fuzz.yaml", s.as_bytes());
            }

            /// The example with any span replaced by arbitrary text never panics the loader.
            #[test]
            fn loader_never_panics_on_a_mangled_spec(at in 0..EXAMPLE.len(), len in 0usize..40, s in text()) {
                let start = (0..=at).rev().find(|&i| EXAMPLE.is_char_boundary(i)).unwrap_or(0);
                let end = (start + len).min(EXAMPLE.len());
                let end = (end..=EXAMPLE.len()).find(|&i| EXAMPLE.is_char_boundary(i)).unwrap();
                let text = format!("{}{s}{}", &EXAMPLE[..start], &EXAMPLE[end..]);
                let _ = parse_str("fuzz.yaml", &text);
            }

            /// The fast read of a spec, when it reads one, reads what serde-saphyr reads.
            #[test]
            fn plain_rollout_agrees_with_serde_saphyr(v in text(), at in 0..EXAMPLE.len(), len in 0usize..8, s in text()) {
                let start = (0..=at).rev().find(|&i| EXAMPLE.is_char_boundary(i)).unwrap_or(0);
                let end = (start + len).min(EXAMPLE.len());
                let end = (end..=EXAMPLE.len()).find(|&i| EXAMPLE.is_char_boundary(i)).unwrap();
                let mangled = format!("{}{s}{}", &EXAMPLE[..start], &EXAMPLE[end..]);
                for text in [spec_with(&v), mangled] {
                    if let Some(fast) = plain_rollout(&text) {
                        let slow: Rollout = serde_saphyr::from_str(&text).map_err(|e| {
                            TestCaseError::fail(format!("fast read accepted what serde-saphyr refuses: {e}\n{text}"))
                        })?;
                        prop_assert_eq!(fast, slow, "{}", text);
                    }
                }
            }

            /// Any string in the spec's free-text fields is accepted and reaches the rendered
            /// objects exactly as written.
            #[test]
            fn free_text_reaches_rendered_objects_exactly(v in text()) {
                let loaded = parse_str("fuzz.yaml", &spec_with(&v))
                    .map_err(|e| e.to_string());
                let loaded = match loaded {
                    Ok(l) => l,
                    Err(e) => {
                        // Only an empty parameter key, or a character go-yaml cannot carry.
                        prop_assert!(v.is_empty() || v.chars().any(unportable), "{}", e);
                        return Ok(());
                    }
                };
                prop_assert!(!v.chars().any(unportable), "{:?} was accepted", v);
                let set = crate::render::Renderer::new(None)
                    .unwrap()
                    .render(&loaded.rollout, &crate::render::Plan::single(&loaded.rollout, "2021-07-15"))
                    .unwrap();
                for o in &set.objects {
                    let back = crate::yaml::from_str(&o.yaml).unwrap();
                    prop_assert_eq!(&back, &*o.value);
                    prop_assert_eq!(&serde_saphyr::from_str::<Value>(&o.yaml).unwrap(), &*o.value);
                    if o.id.kind == crate::manifest::Kind::Pod {
                        let c = &back["spec"]["containers"][0];
                        prop_assert_eq!(&c["args"], &json!([v, v]));
                        prop_assert_eq!(&c["command"], &json!([v]));
                        prop_assert_eq!(&c["env"][0]["value"], &json!(v));
                    }
                }
            }
        }
    }
}
