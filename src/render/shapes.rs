//! Rendering objects of the embedded templates without reading their YAML back each time.
//!
//! A large render makes thousands of objects from six templates, and the objects of one template
//! differ only in the values interpolated into it (names, labels, sizes, images, ...); reading
//! each rendered text back as YAML was half of a large render, and the k8s-openapi round trip of
//! each object another sixth. So each template is also rendered with every interpolation replaced
//! by a slot marker, recording the values: that text is the object's *shape*. The first object of
//! a shape takes the full path (its real text is parsed and validated in full) and teaches the
//! shape: the marker text is parsed once into a skeleton, which is kept only when filling its
//! slots with the recorded values gives exactly the parsed object. Later objects of the shape
//! fill the skeleton with their own values instead of parsing.
//!
//! The k8s-openapi round trip accepts or rejects a value by its structure alone (keys, array
//! items, JSON types, and whether a number fits an `i32` or `i64`): no field the templates
//! interpolate into is one whose string content the types parse (timestamps, base64). So a
//! shape is keyed by its text and the structure of its values ([`signature`]), and an object
//! of a known shape skips the round trip; every check that reads string contents (names,
//! labels, the CRD schemas' enums and rules, the StatefulSet name and selector) still runs on
//! every object ([`crate::schema::validate_instance`]).
//!
//! Only values that read back identically as JSON and as YAML take this path: strings of
//! printable ASCII, whole numbers, booleans, null, and lists and maps of them. Anything else
//! (floats, other characters, `safe` strings), any marker that does not land as a whole value,
//! and every `--templates` override take the full path.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use serde_json::Value;

/// Start of a slot marker, `__snaproll_slot_<n>__`: a plain YAML scalar no template writes.
const SLOT: &str = "__snaproll_slot_";

/// Shapes kept per renderer; a spec whose objects never repeat a shape stops learning there.
const MAX_SHAPES: usize = 1024;

thread_local! {
    /// The values interpolated so far while this thread renders a marker text.
    static RECORDING: RefCell<Option<Vec<minijinja::Value>>> = const { RefCell::new(None) };
}

/// The environment's formatter: minijinja's own (JSON escaping for `.yaml.j2`), except while
/// [`Shapes::probe`] renders, when each value is recorded and a slot marker written instead.
pub(super) fn formatter(
    out: &mut minijinja::Output,
    state: &mut minijinja::State,
    value: &minijinja::Value,
) -> Result<(), minijinja::Error> {
    let slot = RECORDING.with(|r| {
        r.borrow_mut().as_mut().map(|values| {
            values.push(value.clone());
            values.len() - 1
        })
    });
    match slot {
        // Written piece by piece: `write!` was a tenth of the marker render.
        Some(i) => {
            let mut buf = [0; 20];
            [SLOT, decimal(i, &mut buf), "__"]
                .into_iter()
                .try_for_each(|part| out.write_str(part))
                .map_err(minijinja::Error::from)
        }
        None => minijinja::escape_formatter(out, state, value),
    }
}

/// `n` in decimal, written at the end of `buf` without the formatting machinery.
fn decimal(n: usize, buf: &mut [u8; 20]) -> &str {
    let mut at = buf.len();
    let mut n = n;
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[at..]).expect("decimal digits")
}

/// One shape: the parsed marker text.
struct Shape {
    skeleton: Value,
}

/// What [`Shapes::probe`] found for one object.
pub(super) enum Probe {
    /// A known shape, filled with the object's values; only the per-object checks remain.
    Hit(Value),
    /// A new shape: take the full path, then [`Shapes::learn`] from its result.
    Learn(Lesson),
    /// Not for this path: take the full path.
    Off,
}

/// A new shape and the values of the object that introduced it.
pub(super) struct Lesson {
    key: String,
    text: String,
    slots: Vec<Value>,
}

/// The shapes of one renderer's templates.
pub(super) struct Shapes {
    /// The templates served: the embedded ones not overridden.
    templates: BTreeSet<String>,
    /// Shape key → its skeleton, or `None` when the shape cannot take this path. The keys are
    /// the text of the renderer's own templates and the spec: a fast hash is enough.
    known: RwLock<HashMap<String, Option<Arc<Shape>>, foldhash::fast::RandomState>>,
}

impl Shapes {
    pub(super) fn new(templates: BTreeSet<String>) -> Self {
        Shapes {
            templates,
            known: RwLock::new(HashMap::default()),
        }
    }

    /// How many shapes were met (learnt or refused).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.known.read().expect("shape cache lock").len()
    }

    /// Renders the marker text of `name` with `ctx` and looks its shape up.
    pub(super) fn probe(
        &self,
        name: &str,
        tmpl: &minijinja::Template<'_, '_>,
        ctx: &minijinja::Value,
    ) -> Probe {
        if !self.templates.contains(name) {
            return Probe::Off;
        }
        RECORDING.with(|r| *r.borrow_mut() = Some(Vec::new()));
        let text = tmpl.render(ctx);
        let recorded = RECORDING
            .with(|r| r.borrow_mut().take())
            .unwrap_or_default();
        // A template error is reported by the full path, with its own message.
        let Ok(text) = text else {
            return Probe::Off;
        };
        let Some(slots) = recorded.iter().map(plain_json).collect::<Option<Vec<_>>>() else {
            return Probe::Off;
        };
        let mut key = String::with_capacity(name.len() + text.len() + 64);
        key.push_str(name);
        key.push('\0');
        for s in &slots {
            signature(s, &mut key);
            key.push(';');
        }
        key.push('\0');
        key.push_str(&text);
        let known = self.known.read().expect("shape cache lock");
        match known.get(&key) {
            Some(Some(shape)) => Probe::Hit(fill(
                &shape.skeleton,
                &mut slots.into_iter().map(Some).collect::<Vec<_>>(),
            )),
            Some(None) => Probe::Off,
            None if known.len() >= MAX_SHAPES => Probe::Off,
            None => Probe::Learn(Lesson { key, text, slots }),
        }
    }

    /// Learns a shape from `parsed`, the object its real text gave (before anything was added
    /// to it), once that object passed the full validation.
    pub(super) fn learn(&self, lesson: Lesson, parsed: &Value) {
        let shape = skeleton(&lesson.text, lesson.slots.len()).and_then(|skeleton| {
            let mut slots: Vec<Option<Value>> = lesson.slots.into_iter().map(Some).collect();
            (fill(&skeleton, &mut slots) == *parsed).then(|| Arc::new(Shape { skeleton }))
        });
        let mut known = self.known.write().expect("shape cache lock");
        if known.len() < MAX_SHAPES {
            known.insert(lesson.key, shape);
        }
    }
}

/// The value as the full path reads its JSON text back, when both readings surely agree.
fn plain_json(v: &minijinja::Value) -> Option<Value> {
    if v.is_safe() {
        return None;
    }
    match direct(v) {
        Direct::Plain(json) => Some(json),
        Direct::NotPlain => None,
        Direct::Serde => serialised(v),
    }
}

/// A value through its `Serialize` implementation, as [`plain_json`] reads it.
fn serialised(v: &minijinja::Value) -> Option<Value> {
    let json = serde_json::to_value(v).ok()?;
    plain(&json).then_some(json)
}

/// What [`direct`] made of a value.
enum Direct {
    /// The value, read without serde.
    Plain(Value),
    /// Not plain: the full path takes the object.
    NotPlain,
    /// A kind read through serde (numbers, iterables, objects of their own).
    Serde,
}

/// Strings, booleans, none and the lists and maps of them (nearly every interpolated value)
/// converted straight from minijinja's value, as its `Serialize` implementation writes them:
/// going through serde was a fifteenth of a large render.
fn direct(v: &minijinja::Value) -> Direct {
    use minijinja::value::ValueKind;
    match v.kind() {
        ValueKind::String => match v.as_str() {
            Some(s) if printable_ascii(s) => Direct::Plain(Value::String(s.to_string())),
            Some(_) => Direct::NotPlain,
            None => Direct::Serde,
        },
        ValueKind::Bool => Direct::Plain(Value::Bool(v.is_true())),
        ValueKind::None => Direct::Plain(Value::Null),
        ValueKind::Seq => {
            let Ok(items) = v.try_iter() else {
                return Direct::Serde;
            };
            let mut out = Vec::with_capacity(v.len().unwrap_or(0));
            for item in items {
                match direct(&item) {
                    Direct::Plain(x) => out.push(x),
                    Direct::NotPlain => return Direct::NotPlain,
                    Direct::Serde => match serialised(&item) {
                        Some(x) => out.push(x),
                        None => return Direct::NotPlain,
                    },
                }
            }
            Direct::Plain(Value::Array(out))
        }
        ValueKind::Map => {
            // The context's own string maps (labels, annotations: see `context::local_value`)
            // read straight from Rust, as their serialisation writes them.
            if let Some(map) = v.downcast_object_ref::<std::collections::BTreeMap<String, String>>()
            {
                let mut out = serde_json::Map::new();
                for (k, x) in map {
                    if !printable_ascii(k) || !printable_ascii(x) {
                        return Direct::NotPlain;
                    }
                    out.insert(k.clone(), Value::String(x.clone()));
                }
                return Direct::Plain(Value::Object(out));
            }
            // Pairs, as `Serialize` reads them: looking each key up again was most of this.
            let Some(pairs) = v.as_object().and_then(|o| o.try_iter_pairs()) else {
                return Direct::Serde;
            };
            let mut out = serde_json::Map::new();
            for (key, item) in pairs {
                // Other keys serialise in ways of their own.
                let Some(k) = key.as_str().filter(|_| key.kind() == ValueKind::String) else {
                    return Direct::Serde;
                };
                if !printable_ascii(k) {
                    return Direct::NotPlain;
                }
                let x = match direct(&item) {
                    Direct::Plain(x) => x,
                    Direct::NotPlain => return Direct::NotPlain,
                    Direct::Serde => match serialised(&item) {
                        Some(x) => x,
                        None => return Direct::NotPlain,
                    },
                };
                out.insert(k.to_string(), x);
            }
            Direct::Plain(Value::Object(out))
        }
        _ => Direct::Serde,
    }
}

fn plain(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(_) => true,
        Value::Number(n) => n.is_i64() || n.is_u64(),
        Value::String(s) => printable_ascii(s),
        Value::Array(a) => a.iter().all(plain),
        Value::Object(m) => m.iter().all(|(k, v)| printable_ascii(k) && plain(v)),
    }
}

fn printable_ascii(s: &str) -> bool {
    s.bytes().all(|b| (0x20..0x7f).contains(&b)) && !has_slot(s.as_bytes())
}

/// Whether `s` holds [`SLOT`]: found from its underscores, as a substring search set up for
/// each of the many short strings cost more than the rest of their conversion.
fn has_slot(s: &[u8]) -> bool {
    let mut from = 0;
    while let Some(at) = s[from..].iter().position(|&b| b == b'_') {
        if s[from + at..].starts_with(SLOT.as_bytes()) {
            return true;
        }
        from += at + 1;
    }
    false
}

/// The structure of a value as the typed round trip sees it: types, keys, items (a list of
/// items of one structure is written once, whatever its length) and the integer width a
/// number fits; string contents are left out.
fn signature(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push('n'),
        Value::Bool(_) => out.push('b'),
        Value::Number(n) => out.push(match n.as_i64() {
            Some(i) if i32::try_from(i).is_ok() => 'i',
            Some(_) => 'l',
            None => 'u',
        }),
        Value::String(_) => out.push('s'),
        Value::Array(a) => {
            let items: Vec<String> = a
                .iter()
                .map(|x| {
                    let mut s = String::new();
                    signature(x, &mut s);
                    s
                })
                .collect();
            out.push('[');
            match items.first() {
                Some(first) if items.iter().all(|s| s == first) => {
                    out.push_str(first);
                    out.push('*');
                }
                _ => out.push_str(&items.join(",")),
            }
            out.push(']');
        }
        Value::Object(m) => {
            out.push('{');
            for (k, v) in m {
                out.push_str(decimal(k.len(), &mut [0; 20]));
                out.push(':');
                out.push_str(k);
                out.push('=');
                signature(v, out);
                out.push(',');
            }
            out.push('}');
        }
    }
}

/// The marker text parsed, when every slot `0..slots` sits in it exactly once as a whole value
/// and nowhere else (not in a key, not inside a longer string).
fn skeleton(text: &str, slots: usize) -> Option<Value> {
    let value = crate::yaml::plain_document(text)?;
    let mut seen = vec![false; slots];
    markers_ok(&value, &mut seen).then_some(())?;
    seen.iter().all(|s| *s).then_some(value)
}

fn markers_ok(v: &Value, seen: &mut [bool]) -> bool {
    match v {
        Value::String(s) if s.contains(SLOT) => match slot_index(s) {
            Some(i) if i < seen.len() && !seen[i] => {
                seen[i] = true;
                true
            }
            _ => false,
        },
        Value::Array(a) => a.iter().all(|x| markers_ok(x, seen)),
        Value::Object(m) => m
            .iter()
            .all(|(k, x)| !k.contains(SLOT) && markers_ok(x, seen)),
        _ => true,
    }
}

fn slot_index(s: &str) -> Option<usize> {
    s.strip_prefix(SLOT)?.strip_suffix("__")?.parse().ok()
}

/// The skeleton with each slot replaced by its value. A clone and replacements in place: a
/// map's clone copies its index table, where collecting a new map hashes every key again.
fn fill(skeleton: &Value, slots: &mut [Option<Value>]) -> Value {
    let mut value = skeleton.clone();
    fill_in(&mut value, slots);
    value
}

fn fill_in(v: &mut Value, slots: &mut [Option<Value>]) {
    match v {
        Value::String(s) => {
            if let Some(i) = slot_index(s) {
                *v = slots[i].take().unwrap_or(Value::Null);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| fill_in(x, slots)),
        Value::Object(m) => m.values_mut().for_each(|x| fill_in(x, slots)),
        _ => {}
    }
}
