//! Canonical YAML output of rendered objects.
//!
//! serde-saphyr parses specs and templates, but its serializer quotes only what YAML 1.2 finds
//! ambiguous: a label value `2021-07-15` comes out plain, and YAML 1.1 readers (PyYAML, older
//! go-yaml users, many CI scripts) turn it into a timestamp; `0755` or `12:30` become numbers.
//! Rendered manifests are read by many such tools, so this emitter writes the same block style
//! kubectl does but quotes every string that is not plainly a string in both YAML versions.
//! Quoted strings are JSON strings, which are valid YAML double-quoted scalars.
//!
//! [`from_str`] reads rendered objects and files snaproll wrote back into JSON values.

use std::borrow::Cow;

use granit_parser::{Event, Parser, ScalarStyle};
use serde_json::Value;

/// Parses one YAML document into a JSON value, exactly as `serde_saphyr::from_str` does.
///
/// Rendered objects and the files snaproll writes are plain YAML: block and flow collections,
/// string keys, quoted strings, plain words and whole numbers. Those are read straight from
/// the parser's events, which is about twice as fast as serde-saphyr's serde layer (that layer
/// was over half of a large render). Anything else (anchors, aliases, tags, merge keys,
/// duplicate keys, scalars that YAML may read as a bool, null, float or non-decimal number,
/// deep nesting, errors) is left to serde-saphyr, so results and error messages are its own.
pub fn from_str(text: &str) -> Result<Value, serde_saphyr::Error> {
    match plain_document(text) {
        Some(value) => Ok(value),
        None => serde_saphyr::from_str(text),
    }
}

/// Deeper or larger documents go to serde-saphyr, whose budget reports them (its defaults
/// allow depth 64 and 250,000 nodes).
const MAX_DEPTH: usize = 48;
const MAX_NODES: usize = 100_000;

/// The document as a value, or `None` when it is not plain YAML as described on [`from_str`].
pub(crate) fn plain_document(text: &str) -> Option<Value> {
    plain_document_within(text, MAX_NODES)
}

/// [`plain_document`] for documents of up to `max_nodes` parser events (a spec of 10,000
/// datasets has a few hundred thousand; serde-saphyr's budget for it is larger still).
pub(crate) fn plain_document_within(text: &str, max_nodes: usize) -> Option<Value> {
    if text.len() >= PIPELINE_BYTES
        && std::thread::available_parallelism().is_ok_and(|n| n.get() > 1)
    {
        return pipelined(text, max_nodes);
    }
    let mut events = events(text, max_nodes);
    plain_events(&mut || events.next()?)
}

/// Documents from this size on (a spec of a few hundred datasets) are read on two cores.
const PIPELINE_BYTES: usize = 64 * 1024;

/// Events passed from the parsing thread to the reading one at a time.
const BATCH: usize = 1024;

/// A document's events without comments: `Some(None)` once it has more than `max_nodes` or
/// fails to parse.
fn events(text: &str, max_nodes: usize) -> impl Iterator<Item = Option<Event<'_>>> {
    let mut parser = Parser::new_from_str(text);
    let mut nodes = 0;
    let mut over = false;
    std::iter::from_fn(move || {
        if over {
            return None;
        }
        loop {
            let event = match parser.next_event()? {
                Ok((Event::Comment(..), _)) => continue,
                Ok((event, _)) => {
                    nodes += 1;
                    (nodes <= max_nodes).then_some(event)
                }
                Err(_) => None,
            };
            over = event.is_none();
            return Some(event);
        }
    })
}

/// [`plain_document_within`] with the parser on a thread of its own, handing its events over
/// in batches while this one builds the value: the spec is read before anything else can
/// start, so its reading is the one step of a render that no other work overlaps.
fn pipelined(text: &str, max_nodes: usize) -> Option<Value> {
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Option<Event<'_>>>>(8);
        s.spawn(move || {
            let mut batch = Vec::with_capacity(BATCH);
            for event in events(text, max_nodes) {
                batch.push(event);
                if batch.len() == BATCH {
                    // The reader stopped (the document is not plain): so does the parser.
                    if tx
                        .send(std::mem::replace(&mut batch, Vec::with_capacity(BATCH)))
                        .is_err()
                    {
                        return;
                    }
                }
            }
            let _ = tx.send(batch);
        });
        let mut current = Vec::new().into_iter();
        let mut next = move || loop {
            if let Some(event) = current.next() {
                return event;
            }
            current = rx.recv().ok()?.into_iter();
        };
        plain_events(&mut next)
        // `next`, holding the receiver, is dropped here: a parser still sending stops.
    })
}

/// The value of a document's events, `None` when it is not plain.
fn plain_events<'a>(next: &mut impl FnMut() -> Option<Event<'a>>) -> Option<Value> {
    if !matches!(next()?, Event::StreamStart) || !matches!(next()?, Event::DocumentStart(..)) {
        return None;
    }
    let first = next()?;
    let value = plain_node(first, next, 0)?;
    match (next()?, next()?) {
        (Event::DocumentEnd, Event::StreamEnd) => Some(value),
        _ => None,
    }
}

fn plain_node<'a>(
    event: Event<'a>,
    next: &mut impl FnMut() -> Option<Event<'a>>,
    depth: usize,
) -> Option<Value> {
    if depth > MAX_DEPTH {
        return None;
    }
    match event {
        // Anchor id 0 and no tag: neither anchored nor tagged.
        Event::Scalar(s, style, 0, None) => plain_scalar(s, style),
        Event::SequenceStart(_, 0, None) => {
            let mut items = Vec::new();
            loop {
                match next()? {
                    Event::SequenceEnd => return Some(Value::Array(items)),
                    event => items.push(plain_node(event, next, depth + 1)?),
                }
            }
        }
        Event::MappingStart(_, 0, None) => {
            let mut map = serde_json::Map::new();
            loop {
                let key = match next()? {
                    Event::MappingEnd => return Some(Value::Object(map)),
                    Event::Scalar(k, style, 0, None) => match plain_scalar(k, style)? {
                        Value::String(k) if k != "<<" => k,
                        _ => return None,
                    },
                    _ => return None,
                };
                let value = plain_node(next()?, next, depth + 1)?;
                if map.insert(key, value).is_some() {
                    return None;
                }
            }
        }
        _ => None,
    }
}

/// Words YAML 1.1 or 1.2 may read as a bool, null or float (compared ignoring case).
const SPECIAL_WORDS: [&str; 12] = [
    "y", "n", "yes", "no", "on", "off", "true", "false", "null", "inf", "infinity", "nan",
];

/// A scalar's value when it is certain: quoted (not block) strings, `true`, `false`, decimal integers
/// without a leading zero, and plain strings that cannot be read as anything else.
fn plain_scalar(s: Cow<'_, str>, style: ScalarStyle) -> Option<Value> {
    // Block scalars go to serde-saphyr, which checks their indentation more strictly than the
    // parser (found by the fuzz test: `>` over an unindented line).
    if matches!(style, ScalarStyle::Literal | ScalarStyle::Folded) {
        return None;
    }
    if style != ScalarStyle::Plain {
        return Some(Value::String(s.into_owned()));
    }
    match &*s {
        "true" => return Some(Value::Bool(true)),
        "false" => return Some(Value::Bool(false)),
        _ => {}
    }
    // Controls, NEL and other line breaks or spaces in a plain scalar: serde-saphyr decides
    // (it reads `\u{85}0` as the number 0; found by the fuzz test).
    if !s.is_ascii()
        && s.chars()
            .any(|c| needs_escape(c) || (c.is_whitespace() && c != ' '))
        || s.bytes().any(|b| b.is_ascii_control())
    {
        return None;
    }
    let first = *s.as_bytes().first()?;
    let digits = s.strip_prefix('-').unwrap_or(&s);
    if !digits.is_empty()
        && digits.bytes().all(|c| c.is_ascii_digit())
        && (!digits.starts_with('0') || s == "0")
    {
        return if s.starts_with('-') {
            s.parse::<i64>().ok().map(Value::from)
        } else {
            s.parse::<u64>().ok().map(Value::from)
        };
    }
    if matches!(first, b'+' | b'-' | b'.' | b'~')
        || SPECIAL_WORDS.iter().any(|w| s.eq_ignore_ascii_case(w))
    {
        return None;
    }
    // Numbers start with a digit, a sign or a dot (`inf` and `nan` are special words). One that
    // starts with a digit, in any form YAML or Rust reads (decimal, hex, octal, binary,
    // exponent, underscores, sexagesimal), uses only these characters: with any other it is a
    // string.
    let numeric = |c: u8| c.is_ascii_hexdigit() || b"xXoO.+-_:".contains(&c);
    if first.is_ascii_digit() && s.bytes().all(numeric) {
        return None;
    }
    Some(Value::String(s.into_owned()))
}

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
    const SPACES: &str = "                                                                ";
    let mut n = n;
    while n > SPACES.len() {
        out.push_str(SPACES);
        n -= SPACES.len();
    }
    out.push_str(&SPACES[..n]);
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
        Value::Number(n) => {
            use std::fmt::Write;
            let _ = write!(out, "{n}");
        }
        Value::String(s) => write_str(out, s),
        Value::Object(_) => out.push_str("{}"),
        Value::Array(_) => out.push_str("[]"),
    }
}

fn write_str(out: &mut String, s: &str) {
    if plain_safe(s) {
        out.push_str(s);
    } else {
        write_quoted(out, s);
    }
}

/// A double-quoted scalar that every YAML reader (1.1 and 1.2) reads back as `s`. JSON's
/// escaping is not enough: it leaves DEL, the C1 controls, NEL, LS/PS, the BOM and the
/// non-characters raw. YAML 1.1 readers (go-yaml in kubectl, kustomize, Argo CD and Flux;
/// PyYAML) refuse a document with an unprintable character, and read NEL, LS and PS as line
/// breaks, folding them into a space. Each of those is written as an escape instead.
fn write_quoted(out: &mut String, s: &str) {
    use std::fmt::Write;
    out.reserve(s.len() + 2);
    out.push('"');
    // Runs of characters that need no escape are copied whole.
    let mut run = 0;
    for (i, c) in s.char_indices() {
        let short = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\n' => "\\n",
            '\t' => "\\t",
            '\r' => "\\r",
            c if needs_escape(c) => "",
            _ => continue,
        };
        out.push_str(&s[run..i]);
        run = i + c.len_utf8();
        if !short.is_empty() {
            out.push_str(short);
            continue;
        }
        let n = c as u32;
        let _ = if n <= 0xFF {
            write!(out, "\\x{n:02X}")
        } else if n <= 0xFFFF {
            write!(out, "\\u{n:04X}")
        } else {
            write!(out, "\\U{n:08X}")
        };
    }
    out.push_str(&s[run..]);
    out.push('"');
}

/// Characters written as escapes in a quoted scalar: every C0 and C1 control and DEL (not
/// printable in YAML), NEL, LS and PS (line breaks to YAML 1.1), the BOM (a stream marker to
/// some readers) and the Unicode non-characters (U+FDD0..U+FDEF and the last two code
/// points of every plane; YAML 1.1 refuses U+FFFE and U+FFFF).
pub(crate) fn needs_escape(c: char) -> bool {
    let n = c as u32;
    n < 0x20
        || (0x7F..=0x9F).contains(&n)
        || matches!(n, 0x2028 | 0x2029 | 0xFEFF)
        || (0xFDD0..=0xFDEF).contains(&n)
        || n & 0xFFFE == 0xFFFE
}

/// Words YAML 1.1 reads as booleans or null.
const RESERVED: [&str; 13] = [
    "y", "n", "yes", "no", "on", "off", "true", "false", "null", "~", "nan", "inf", "=",
];

/// [`BYTE_CLASS`] bits: a byte a plain string may hold; `:`; a letter no number form uses
/// (outside hex digits and x/o).
const PLAIN: u8 = 1;
const COLON: u8 = 2;
const NOT_NUMBER: u8 = 4;

/// The class of each byte, looked up once per byte of every key and string written.
const BYTE_CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_alphanumeric()
            || matches!(
                c,
                b' ' | b'_' | b'.' | b'/' | b'-' | b'+' | b'=' | b'@' | b':' | b','
            )
        {
            t[b] |= PLAIN;
        }
        if c == b':' {
            t[b] |= COLON;
        }
        if c.is_ascii_alphabetic()
            && !matches!(c, b'a'..=b'f' | b'A'..=b'F' | b'x' | b'X' | b'o' | b'O')
        {
            t[b] |= NOT_NUMBER;
        }
        b += 1;
    }
    t
};

/// Whether `s` reads back as the same string, plainly, under YAML 1.1 and 1.2. Conservative:
/// anything unusual is quoted. One pass over the bytes: this runs for every key and string of
/// every rendered object.
fn plain_safe(s: &str) -> bool {
    let bytes = s.as_bytes();
    let Some(&first) = bytes.first() else {
        return false;
    };
    // The longest reserved word has 5 bytes; those starting with a letter start with one of
    // these (the others fail the first-byte check below), so most short keys skip the list.
    if bytes.len() <= 5
        && (!first.is_ascii_alphabetic()
            || matches!(first | 0x20, b'y' | b'n' | b'o' | b't' | b'f' | b'i'))
        && RESERVED.iter().any(|w| s.eq_ignore_ascii_case(w))
    {
        return false;
    }
    if !(first.is_ascii_alphabetic() || first == b'/' || first.is_ascii_digit()) {
        return false;
    }
    if bytes.last() == Some(&b':') || bytes.last() == Some(&b' ') {
        return false;
    }
    // The charset leaves `#` out, so ` #` (a comment) cannot occur; `: ` (a mapping) is
    // checked on the way.
    let mut seen = PLAIN;
    for &b in bytes {
        let class = BYTE_CLASS[b as usize];
        seen &= class | !PLAIN;
        seen |= class & !PLAIN;
    }
    let colon = seen & COLON != 0;
    if seen & PLAIN == 0 || (colon && s.contains(": ")) {
        return false;
    }
    let letter_not_number = seen & NOT_NUMBER != 0;
    if first.is_ascii_digit() {
        // Numbers, dates, times, octal, hex, exponents and sexagesimal all start with a digit
        // and contain no letter outside hex digits and x/o: such strings are quoted. `10Gi`,
        // `500m` pass.
        return letter_not_number && !colon;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The one-pass [`plain_safe`] gives the verdict of its former, pattern-search form on
    /// every short string over an alphabet of the characters that matter.
    #[test]
    fn plain_safe_matches_its_reference() {
        fn reference(s: &str) -> bool {
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
                return bytes
                    .iter()
                    .any(|b| b.is_ascii_alphabetic() && !b"abcdefABCDEFxXoO".contains(b))
                    && !s.contains(':');
            }
            true
        }
        let alphabet: Vec<char> = "aeoxyGn1: #/-~.\u{e9}\"".chars().collect();
        let mut words = vec![String::new()];
        for _ in 0..4 {
            let longer: Vec<String> = words
                .iter()
                .flat_map(|w| alphabet.iter().map(move |c| format!("{w}{c}")))
                .collect();
            words.extend(longer);
            words.dedup();
        }
        for extra in [
            "yes",
            "No",
            "false",
            "NULL",
            "10Gi",
            "ubuntu:22.04",
            "a: b",
            "a #b",
        ] {
            words.push(extra.to_string());
        }
        for w in &words {
            assert_eq!(plain_safe(w), reference(w), "{w:?}");
        }
    }

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

    /// The fast reader must agree with serde-saphyr on every document, whether it reads the
    /// document itself or hands it over.
    fn agrees(text: &str) -> bool {
        let fast = from_str(text).map_err(|e| e.to_string());
        let slow = serde_saphyr::from_str::<Value>(text).map_err(|e| e.to_string());
        assert_eq!(fast, slow, "disagreement on {text:?}");
        plain_document(text).is_some()
    }

    #[test]
    fn fast_reader_agrees_with_serde_saphyr_on_every_scalar_form() {
        let read_directly = [
            "a: b",
            "a: \"quoted\"",
            "a: 'single'",
            "a: 10Gi",
            "a: 500m",
            "a: ubuntu:22.04",
            "a: /data/file.txt",
            "a: key=value",
            "a: über",
            "a: 0",
            "a: 3",
            "a: -1",
            "a: 8080",
            "a: 18446744073709551615",
            "a: -9223372036854775808",
            "a: true",
            "a: false",
            "a: [1, \"x\", {b: c}]",
            "a: {}",
            "a: []",
            "- a\n- b\n",
            "# comment\na: b # trailing\n",
            "---\na: b\n",
            "a:\n  b:\n  - c: d\n    e: [f]\n",
            "a: b c d",
            "a: 1.5Gi",
            "a: deadbeef",
            "e: x",
            "a: $HOME",
            "a: \"yes\"",
            "a: '1.5'",
        ];
        for text in read_directly {
            assert!(agrees(text), "{text:?} should be read without serde-saphyr");
        }
        let handed_over = [
            "a: |\n  literal\n  text\n",
            "a: >\n  folded\n  text\n",
            ">\n\n: \n- \n",
            "a: yes",
            "a: No",
            "a: ON",
            "a: off",
            "a: y",
            "a: True",
            "a: FALSE",
            "a: null",
            "a: Null",
            "a: ~",
            "a:",
            "a: 1.5",
            "a: 1e3",
            "a: .inf",
            "a: -.inf",
            "a: .NaN",
            "a: inf",
            "a: nan",
            "a: 0x1F",
            "a: 0o17",
            "a: 0b101",
            "a: 0755",
            "a: -0",
            "a: +1",
            "a: 1_000",
            "a: 12:30",
            "a: 2021-07-15",
            "a: 18446744073709551616",
            "a: -9223372036854775809",
            "a: 1deadbeef",
            "a: &x 1\nb: *x\n",
            "a: &x {c: d}\nb:\n  <<: *x\n",
            "a: !!str 1",
            "a: !custom x",
            "a: 1\na: 2\n",
            "1: a",
            "? [a]\n: b\n",
            "a: b\n---\nc: d\n",
            "",
            "a: [unclosed",
            "a: b\n\tc: d\n",
            "a: 'unterminated",
        ];
        for text in handed_over {
            assert!(!agrees(text), "{text:?} must be left to serde-saphyr");
        }
    }

    #[test]
    fn fast_reader_hands_deep_or_huge_documents_to_serde_saphyr() {
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 2), "]".repeat(MAX_DEPTH + 2));
        assert!(!agrees(&deep));
        let shallow = format!("{}{}", "[".repeat(10), "]".repeat(10));
        assert!(agrees(&shallow));
        let huge = format!("[{}]", vec!["1"; MAX_NODES].join(","));
        assert!(plain_document(&huge).is_none());
    }

    #[test]
    fn large_documents_read_on_two_threads_as_on_one() {
        let item = |i: usize| {
            format!(
                "  - name: data-{i}\n    size: 10Gi\n    args: [\"echo {i}\", /bin/sh]\n    count: {i}\n"
            )
        };
        let mut text = String::from("# a spec\nkind: Test\nitems:\n");
        while text.len() < 2 * PIPELINE_BYTES {
            text.push_str(&item(text.len()));
        }
        let mut serial = events(&text, MAX_NODES);
        let one = plain_events(&mut || serial.next()?);
        assert!(one.is_some());
        assert_eq!(pipelined(&text, MAX_NODES), one);
        assert_eq!(plain_document(&text), one);
        assert_eq!(plain_document(&text), serde_saphyr::from_str(&text).ok());
        // Not plain near the start (an anchor): the reader stops while the parser still has
        // batches to send, and the parser stops with it.
        let anchored = text.replacen("kind: Test", "kind: &k Test", 1);
        assert!(plain_document(&anchored).is_none());
        // A syntax error at the end, and a node budget exceeded half way.
        assert!(plain_document(&format!("{text}  - [")).is_none());
        assert!(plain_document_within(&text, 1_000).is_none());
    }

    #[test]
    fn fast_reader_reads_canonical_output_itself() {
        let v = json!({
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data", "labels": {"snaproll.dev/generation": "2021-07-15"}},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}}, "replicas": 3, "readOnly": true},
        });
        assert!(agrees(&to_string(&v)));
        assert_eq!(from_str(&to_string(&v)).unwrap(), v);
    }

    #[test]
    fn every_unprintable_or_ambiguous_character_is_escaped_and_round_trips() {
        let hostile = [
            '\u{0}',
            '\u{1}',
            '\u{8}',
            '\u{b}',
            '\u{c}',
            '\u{1b}',
            '\u{1f}',
            '\u{7f}',
            '\u{80}',
            '\u{85}',
            '\u{9f}',
            '\u{a0}',
            '\u{2028}',
            '\u{2029}',
            '\u{feff}',
            '\u{fdd0}',
            '\u{fdef}',
            '\u{fffe}',
            '\u{ffff}',
            '\u{1fffe}',
            '\u{10ffff}',
        ];
        for c in hostile {
            let s = format!("a{c}b");
            let v = json!({ s.as_str(): [s.as_str()] });
            let text = to_string(&v);
            if needs_escape(c) {
                assert!(!text.contains(c), "{c:?} written raw: {text:?}");
            }
            assert_eq!(from_str(&text).unwrap(), v, "{c:?}: {text:?}");
            assert_eq!(serde_saphyr::from_str::<Value>(&text).unwrap(), v, "{c:?}");
        }
        assert_eq!(
            to_string(&json!("\u{85}\u{7f}\u{2028}\u{1fffe}")),
            "\"\\x85\\x7F\\u2028\\U0001FFFE\"\n"
        );
        assert_eq!(to_string(&json!("\u{a0}é")), "\"\u{a0}é\"\n");
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

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

        /// Characters that break YAML readers, YAML syntax and YAML 1.1 typing.
        const SPECIAL: &[char] = &[
            '\u{0}',
            '\t',
            '\n',
            '\r',
            '\u{1b}',
            '\u{7f}',
            '\u{80}',
            '\u{85}',
            '\u{9f}',
            '\u{a0}',
            '\u{2028}',
            '\u{2029}',
            '\u{feff}',
            '\u{fdd0}',
            '\u{fffe}',
            '\u{ffff}',
            '\u{10fffe}',
            '"',
            '\'',
            '\\',
            ':',
            '#',
            '-',
            '?',
            '&',
            '*',
            '!',
            '|',
            '>',
            '%',
            '@',
            '`',
            '{',
            '}',
            '[',
            ']',
            ',',
            ' ',
            '~',
            '.',
            '0',
            '1',
            'e',
            'x',
            'y',
            'n',
        ];

        pub(crate) fn text() -> impl Strategy<Value = String> {
            let c = prop_oneof![
                3 => proptest::sample::select(SPECIAL),
                1 => any::<char>(),
                1 => proptest::char::range('\0', '\u{ff}'),
            ];
            proptest::collection::vec(c, 0..24).prop_map(String::from_iter)
        }

        fn value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                4 => text().prop_map(Value::String),
                1 => any::<i64>().prop_map(Value::from),
                1 => any::<u64>().prop_map(Value::from),
                1 => any::<bool>().prop_map(Value::Bool),
                1 => Just(Value::Null),
            ];
            leaf.prop_recursive(4, 64, 6, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                    proptest::collection::vec((text(), inner), 0..6)
                        .prop_map(|kv| Value::Object(kv.into_iter().collect())),
                ]
            })
        }

        proptest! {
            #![proptest_config(config())]

            /// Any string, as a key and as a value, reads back exactly, by both readers, and
            /// nothing unprintable is written raw.
            #[test]
            fn written_strings_read_back_exactly(s in text()) {
                let v = json!({ s.as_str(): s.as_str(), "list": [s.as_str()] });
                let text = to_string(&v);
                prop_assert!(!text.chars().any(|c| c != '\n' && needs_escape(c)), "{:?}", text);
                prop_assert_eq!(&from_str(&text).unwrap(), &v);
                prop_assert_eq!(&serde_saphyr::from_str::<Value>(&text).unwrap(), &v);
            }

            /// Any JSON value (no floats: rendered objects hold none) round-trips through the
            /// writer, and the fast reader agrees with serde-saphyr.
            #[test]
            fn written_values_read_back_exactly(v in value()) {
                let text = to_string(&v);
                let slow = serde_saphyr::from_str::<Value>(&text).map_err(|e| e.to_string());
                prop_assert_eq!(&slow, &Ok(v.clone()), "{}", text);
                prop_assert_eq!(&from_str(&text).map_err(|e| e.to_string()), &slow);
            }

            /// On arbitrary text the fast reader never panics and agrees with serde-saphyr
            /// (value or error message).
            #[test]
            fn readers_agree_on_arbitrary_text(s in text(), t in text()) {
                let doc = format!("{s}: {t}\n- {t}\n{t}");
                for text in [s.as_str(), doc.as_str()] {
                    let fast = from_str(text).map_err(|e| e.to_string());
                    let slow = serde_saphyr::from_str::<Value>(text).map_err(|e| e.to_string());
                    prop_assert_eq!(fast, slow, "{:?}", text);
                }
            }
        }
    }
}
