//! Finding every problem of a spec that does not deserialise, not just the first.
//!
//! serde stops at the first error. To report the rest in the same run, the document is read
//! into an untyped value and deserialised again and again: each error is recorded, then
//! repaired in the value (an unknown field removed, a missing or wrong value replaced by a
//! placeholder) until the document deserialises, and the semantic validator runs on the
//! result. Problems inside placeholders are consequences of a recorded one and are dropped.

use serde_json::{Map, Value};

use super::positions::Positions;
use super::{
    API_VERSION, Issue, KIND, Pos, Rollout, Validator, closest, field_range, integer_range,
    number_message, parse_unknown_field, scalar_at, user_message,
};

/// Most repairs tried: bounds the work on a document that is wrong everywhere.
const MAX_ROUNDS: usize = 200;

/// Placeholders tried in turn for a missing or wrong value, until its path stops failing.
fn placeholders() -> [Value; 5] {
    [
        Value::String("placeholder".into()),
        Value::from(1),
        Value::Object(Map::new()),
        Value::Array(Vec::new()),
        Value::Bool(false),
    ]
}

/// A document that is not a DatasetRollout at all (a StatefulSet, a kustomization.yaml): one
/// issue naming what it is and what was expected, instead of its first unknown field.
pub(super) fn other_kind(file: &str, text: &str, positions: &Positions) -> Option<Issue> {
    let value: Value = serde_saphyr::from_str(text).ok()?;
    let map = value.as_object()?;
    let api = map.get("apiVersion").and_then(Value::as_str);
    let kind = map.get("kind").and_then(Value::as_str);
    let what = match (api, kind) {
        (Some(a), Some(k)) if a == API_VERSION && k == KIND => return None,
        (a, Some(k)) if k != KIND => match a {
            Some(a) => format!("a {k} ({a})"),
            None => format!("a {k}"),
        },
        (Some(a), _) if !a.starts_with("snaproll.dev/") => format!("a document of apiVersion {a}"),
        (None, None) if map.contains_key("resources") || map.contains_key("bases") => {
            "a kustomization.yaml".to_string()
        }
        (None, None) if !map.contains_key("spec") && !map.contains_key("metadata") => {
            "a document with neither apiVersion nor kind".to_string()
        }
        _ => return None,
    };
    let field = if kind.is_some() { "kind" } else { "" };
    Some(Issue {
        file: file.to_string(),
        pos: positions.find(field).or(Some(Pos { line: 1, column: 1 })),
        field: String::new(),
        message: format!(
            "this is {what}, not a snaproll spec; expected apiVersion: {API_VERSION}, kind: {KIND}"
        ),
    })
}

/// Every problem of a document whose typed parse failed, sorted by position; `first` is the
/// typed parser's own message for the first one (kept as is, it reads best).
pub(super) fn all_issues(
    file: &str,
    text: &str,
    positions: &Positions,
    first: Issue,
) -> Vec<Issue> {
    let Ok(mut value) = serde_saphyr::from_str::<Value>(text) else {
        return vec![first];
    };
    let mut issues: Vec<Issue> = Vec::new();
    // Paths holding a placeholder, and paths an unknown field's suggestion stands for: errors
    // under them repeat a recorded problem.
    let mut quiet: Vec<String> = Vec::new();
    let mut suggested: Vec<String> = Vec::new();
    let mut tried: Vec<(String, usize)> = Vec::new();
    let mut rollout = None;
    for _ in 0..MAX_ROUNDS {
        let err = match serde_path_to_error::deserialize::<_, Rollout>(&value) {
            Ok(r) => {
                rollout = Some(r);
                break;
            }
            Err(e) => e,
        };
        let path = path_text(err.path());
        let raw = err.inner().to_string();
        let is_quiet = quiet.iter().any(|q| under(&path, q))
            || raw
                .strip_prefix("missing field `")
                .and_then(|r| r.strip_suffix('`'))
                .is_some_and(|m| suggested.contains(&join(&path, m)));
        if let Some((unknown, expected)) = parse_unknown_field(&raw) {
            let mapping = parent(&path).to_string();
            if !is_quiet {
                let suggestion = closest(&unknown, &expected);
                if let Some(s) = suggestion {
                    suggested.push(join(&mapping, s));
                }
                issues.push(Issue {
                    file: file.to_string(),
                    pos: positions.key(&path).or_else(|| positions.find(&path)),
                    field: mapping.clone(),
                    message: super::unknown_field_message(&unknown, &expected),
                });
            }
            if !remove(&mut value, &mapping, &unknown) {
                break;
            }
            continue;
        }
        let (target, missing) = match raw
            .strip_prefix("missing field `")
            .and_then(|r| r.strip_suffix('`'))
        {
            Some(m) => (join(&path, m), Some(m.to_string())),
            None => (path.clone(), None),
        };
        if !is_quiet {
            let message = match &missing {
                Some(m) => format!("missing required field `{m}`"),
                None => value_message(&raw, &path, text, positions),
            };
            issues.push(Issue {
                file: file.to_string(),
                pos: positions.find(&path),
                field: path.clone(),
                message,
            });
        }
        // The next placeholder for this path; an enum takes its first variant.
        let attempt = match tried.iter_mut().find(|(p, _)| *p == target) {
            Some((_, n)) => {
                *n += 1;
                *n
            }
            None => {
                tried.push((target.clone(), 0));
                0
            }
        };
        let variant = raw
            .strip_prefix("unknown variant `")
            .and_then(|r| r.split_once("expected "))
            .and_then(|(_, l)| l.trim_start_matches("one of ").split(", ").next())
            .map(|v| Value::String(v.trim_matches('`').to_string()));
        let placeholder = match variant {
            Some(v) if attempt == 0 || missing.is_none() => v,
            _ => match placeholders().into_iter().nth(attempt) {
                Some(p) => p,
                None => break,
            },
        };
        if !quiet.contains(&target) {
            quiet.push(target.clone());
        }
        if !set(&mut value, &target, placeholder) {
            break;
        }
    }
    if let Some(r) = rollout {
        let mut v = Validator {
            file,
            positions,
            // The error path: always look for unportable characters too.
            scan_text: true,
            errors: Vec::new(),
            warnings: Vec::new(),
        };
        v.rollout(&r);
        issues.extend(v.errors.into_iter().filter(|i| {
            !quiet.iter().any(|q| under(&i.field, q)) && !suggested.contains(&i.field)
        }));
    }
    // The typed parser's message for the first problem replaces the repair loop's.
    match issues.iter().position(|i| i.field == first.field) {
        Some(i) => issues[i] = first,
        None => issues.insert(0, first),
    }
    sort(&mut issues);
    issues
}

/// Orders issues by position (unlocated ones first, as they concern the whole document).
pub(super) fn sort(issues: &mut [Issue]) {
    issues.sort_by_key(|i| i.pos);
}

/// The message for a value of the wrong type or out of range, in the typed parser's words.
fn value_message(raw: &str, path: &str, text: &str, positions: &Positions) -> String {
    if let Some(rest) = raw.strip_prefix("unknown variant `") {
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
        return format!(
            "invalid value `{value}`{suggestion} (valid values: {})",
            options.join(", ")
        );
    }
    if let Some((_, ty)) = raw.rsplit_once(", expected ")
        && let Some(range) = integer_range(ty)
    {
        let range = field_range(path).unwrap_or(range);
        let scalar = positions
            .find(path)
            .map(|p| scalar_at(text, p))
            .unwrap_or_default();
        return number_message(scalar, range);
    }
    if let Some(rest) = raw.strip_prefix("invalid type: ")
        && let Some((got, expected)) = rest.split_once(", expected ")
    {
        let expected = match expected {
            "a sequence" => "a list",
            "a map" => "a mapping (key: value pairs)",
            "a string" => "a string",
            other if other.starts_with("struct ") => "a mapping (key: value pairs)",
            other => other,
        };
        let got = got.split(' ').next().unwrap_or(got);
        let got = match got {
            "map" => "a mapping",
            "sequence" => "a list",
            "null" | "unit" => "nothing",
            other => other,
        };
        return format!("expected {expected}, got {got}");
    }
    user_message(raw)
}

/// serde_path_to_error's path as the spec's field paths are written (`spec.datasets[0].name`).
fn path_text(path: &serde_path_to_error::Path) -> String {
    let text = path.to_string();
    if text == "." { String::new() } else { text }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// The mapping holding the last key of `path`.
fn parent(path: &str) -> &str {
    match path.rfind('.') {
        Some(i) => &path[..i],
        None => "",
    }
}

/// Whether `path` is `root` or lies below it.
fn under(path: &str, root: &str) -> bool {
    path == root
        || (path.starts_with(root) && matches!(path.as_bytes().get(root.len()), Some(b'.' | b'[')))
}

/// Splits `a.b[2].c` into steps; keys holding dots (label keys) are not addressable, which only
/// ends the search early.
fn steps(path: &str) -> Vec<Step<'_>> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, mut rest) = part.split_once('[').map_or((part, ""), |(k, r)| (k, r));
        if !key.is_empty() {
            out.push(Step::Key(key));
        }
        while let Some((n, tail)) = rest.split_once(']') {
            if let Ok(i) = n.parse() {
                out.push(Step::Index(i));
            }
            rest = tail.trim_start_matches('[');
        }
    }
    out
}

enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

fn get_mut<'v>(value: &'v mut Value, path: &str) -> Option<&'v mut Value> {
    let mut at = value;
    for step in steps(path) {
        at = match step {
            Step::Key(k) => at.as_object_mut()?.get_mut(k)?,
            Step::Index(i) => at.as_array_mut()?.get_mut(i)?,
        };
    }
    Some(at)
}

/// Removes `key` from the mapping at `mapping`; false when there is nothing to remove.
fn remove(value: &mut Value, mapping: &str, key: &str) -> bool {
    get_mut(value, mapping)
        .and_then(Value::as_object_mut)
        .and_then(|m| m.remove(key))
        .is_some()
}

/// Sets the value at `path` (creating its last key); false when its parent is not there.
fn set(value: &mut Value, path: &str, new: Value) -> bool {
    let (head, last) = match path.rfind(['.', '[']) {
        Some(i) => (&path[..i], &path[i..]),
        None => ("", path),
    };
    let Some(holder) = get_mut(value, head) else {
        return false;
    };
    if let Some(i) = last
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|n| n.parse::<usize>().ok())
    {
        return match holder.as_array_mut().and_then(|a| a.get_mut(i)) {
            Some(slot) => {
                *slot = new;
                true
            }
            None => false,
        };
    }
    match holder.as_object_mut() {
        Some(m) => {
            m.insert(last.trim_start_matches('.').to_string(), new);
            true
        }
        None => false,
    }
}

/// The field path enclosing `line` (1-based) judged by indentation: for a YAML syntax error
/// (often an indentation mistake) the parser knows no path, but the keys above the line do.
pub(super) fn enclosing_path(text: &str, line: u32) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let Some(error_line) = lines.get(line.saturating_sub(1) as usize) else {
        return String::new();
    };
    let indent = |l: &str| l.len() - l.trim_start_matches([' ', '-']).len();
    let mut limit = indent(error_line);
    let mut parts: Vec<String> = Vec::new();
    // Set after a list item: the key holding the list may stand in the item's column.
    let mut after_item = false;
    for i in (0..line.saturating_sub(1) as usize).rev() {
        let l = lines[i];
        let content = l.trim_start();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let dash_col = l.len() - content.len();
        let key_col = indent(l);
        let item = content.starts_with("- ") || content == "-";
        let key = content
            .trim_start_matches("- ")
            .trim_start()
            .split_once(':')
            .map(|(k, _)| k.trim_matches(['"', '\'']))
            .filter(|k| !k.is_empty() && !k.contains(' '));
        if (key_col < limit || (after_item && !item && key_col == limit))
            && let Some(k) = key
        {
            parts.push(k.to_string());
            limit = key_col;
            after_item = false;
        }
        if item && dash_col < limit {
            // A list item: count the items of the same list above it.
            let index = (0..i)
                .rev()
                .take_while(|&j| {
                    let t = lines[j].trim_start();
                    t.is_empty() || t.starts_with('#') || lines[j].len() - t.len() >= dash_col
                })
                .filter(|&j| {
                    let t = lines[j].trim_start();
                    t.starts_with("- ") && lines[j].len() - t.len() == dash_col
                })
                .count();
            parts.push(format!("[{index}]"));
            limit = dash_col;
            after_item = true;
        }
        if limit == 0 {
            break;
        }
    }
    let mut path = String::new();
    for p in parts.iter().rev() {
        if p.starts_with('[') {
            path.push_str(p);
        } else {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(p);
        }
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enclosing_paths_follow_indentation() {
        let text = "spec:\n  datasets:\n    - name: a\n      storage:\n        size: 1Gi\n         bad: x\n";
        assert_eq!(enclosing_path(text, 6), "spec.datasets[0].storage.size");
        let text =
            "spec:\n  datasets:\n    - name: a\n    - name: b\n      storage:\n     size: 1\n";
        assert_eq!(enclosing_path(text, 6), "spec.datasets[1]");
        let text = "spec:\n  datasets:\n  - name: a\n  - name: b\n    storage:\n      size: 1\n     x: 2\n";
        assert_eq!(enclosing_path(text, 7), "spec.datasets[1].storage");
    }

    #[test]
    fn paths_split_into_steps() {
        let mut v: Value = serde_json::json!({"a": {"b": [{"c": 1}]}});
        assert!(set(&mut v, "a.b[0].c", Value::from(2)));
        assert_eq!(v["a"]["b"][0]["c"], 2);
        assert!(remove(&mut v, "a.b[0]", "c"));
        assert!(under("a.b[0].c", "a.b"));
        assert!(!under("a.bc", "a.b"));
    }
}
