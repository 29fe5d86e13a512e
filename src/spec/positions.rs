//! A map from field path (`spec.datasets[0].consumer.replicas`) to the line and column where the
//! value stands in the spec file.
//!
//! serde gives the typed structs no positions, so the spec is parsed a second time into this
//! span-aware tree; semantic validation then reports `file:line:column` for any path it names,
//! and deserialisation errors (which carry a position but no path) get their path from it.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// A line:column position (both 1-based).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub line: u32,
    pub column: u32,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// Field path → position of its value, for every node in the document.
#[derive(Debug, Default)]
pub struct Positions {
    by_path: BTreeMap<String, Pos>,
    /// Position of each mapping key → path of the mapping that holds it.
    key_parent: BTreeMap<Pos, String>,
    /// Field path → position of its key (where an unknown field is reported).
    keys: BTreeMap<String, Pos>,
}

impl Positions {
    /// Builds the map, or returns the YAML syntax error that prevents it.
    pub fn parse(
        text: &str,
        options: serde_saphyr::Options,
    ) -> Result<Positions, serde_saphyr::Error> {
        let root: Spanned<Node> = serde_saphyr::from_str_with_options(text, options)?;
        let mut positions = Positions::default();
        positions.walk(String::new(), &root);
        Ok(positions)
    }

    fn walk(&mut self, path: String, node: &Spanned<Node>) {
        let loc = node.referenced;
        if loc.line() > 0 {
            self.by_path.insert(
                path.clone(),
                Pos {
                    line: loc.line() as u32,
                    column: loc.column() as u32,
                },
            );
        }
        match &node.value {
            Node::Map(entries) => {
                for (key, child) in entries {
                    let child_path = if path.is_empty() {
                        key.value.0.clone()
                    } else {
                        format!("{path}.{}", key.value.0)
                    };
                    if key.referenced.line() > 0 {
                        let at = Pos {
                            line: key.referenced.line() as u32,
                            column: key.referenced.column() as u32,
                        };
                        self.key_parent.insert(at, path.clone());
                        self.keys.insert(child_path.clone(), at);
                    }
                    self.walk(child_path, child);
                }
            }
            Node::Seq(items) => {
                for (i, child) in items.iter().enumerate() {
                    self.walk(format!("{path}[{i}]"), child);
                }
            }
            Node::Scalar => {}
        }
    }

    /// Position of `path`, or of its nearest ancestor that exists (a missing field is reported
    /// at the mapping that should hold it).
    pub fn find(&self, path: &str) -> Option<Pos> {
        let mut p = path.to_string();
        loop {
            if let Some(pos) = self.by_path.get(&p) {
                return Some(*pos);
            }
            let cut = p.rfind(['.', '['])?;
            p.truncate(cut);
        }
    }

    /// Position of the key of the field at `path`.
    pub fn key(&self, path: &str) -> Option<Pos> {
        self.keys.get(path).copied()
    }

    /// The path of the mapping holding the key at `pos` (or the nearest key before it on the
    /// same line): where an unknown or missing field is reported.
    pub fn mapping_of_key(&self, pos: Pos) -> Option<&str> {
        self.key_parent
            .range(..=pos)
            .next_back()
            .filter(|(p, _)| p.line == pos.line)
            .map(|(_, path)| path.as_str())
    }

    /// The deepest path whose value starts at or before `pos` on the same line or the closest
    /// line above: names the field a positioned parse error is about.
    pub fn path_at(&self, pos: Pos) -> Option<&str> {
        self.by_path
            .iter()
            .filter(|(_, p)| **p <= pos)
            .max_by(|(pa, a), (pb, b)| a.cmp(b).then(pa.len().cmp(&pb.len())))
            .map(|(path, _)| path.as_str())
            .filter(|p| !p.is_empty())
    }
}

/// Untyped YAML node; only its shape matters, scalars are skipped.
enum Node {
    Map(Vec<(Spanned<KeyString>, Spanned<Node>)>),
    Seq(Vec<Spanned<Node>>),
    Scalar,
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<KeyString>>()? {
            entries.push((key, map.next_value::<Spanned<Node>>()?));
        }
        Ok(Node::Map(entries))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Node>>()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_i128<E>(self, _: i128) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_u128<E>(self, _: u128) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_str<E>(self, _: &str) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_bytes<E>(self, _: &[u8]) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

/// A mapping key of any scalar type, kept as text (YAML allows `80: x`).
struct KeyString(String);

impl<'de> Deserialize<'de> for KeyString {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = KeyString;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a scalar mapping key")
            }
            fn visit_str<E>(self, v: &str) -> Result<KeyString, E> {
                Ok(KeyString(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<KeyString, E> {
                Ok(KeyString(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<KeyString, E> {
                Ok(KeyString(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<KeyString, E> {
                Ok(KeyString(v.to_string()))
            }
            fn visit_bool<E>(self, v: bool) -> Result<KeyString, E> {
                Ok(KeyString(v.to_string()))
            }
            fn visit_unit<E>(self) -> Result<KeyString, E> {
                Ok(KeyString("null".to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_value_positions() {
        let text = "a:\n  b: 1\n  list:\n    - x: 2\n    - y: 3\n";
        let p = Positions::parse(text, Default::default()).unwrap();
        assert_eq!(p.find("a.b"), Some(Pos { line: 2, column: 6 }));
        assert_eq!(p.find("a.list[1].y").map(|p| p.line), Some(5));
        // A missing field falls back to its parent.
        assert_eq!(p.find("a.list[0].missing").map(|p| p.line), Some(4));
        assert_eq!(p.mapping_of_key(Pos { line: 2, column: 3 }), Some("a"));
        assert_eq!(
            p.mapping_of_key(Pos { line: 5, column: 7 }),
            Some("a.list[1]")
        );
    }
}
