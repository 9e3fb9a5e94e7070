//! Unknown keys, all of them: a walk of the YAML tree against the JSON Schema of `pipeline.yml`.
//!
//! serde stops at the first error, so for a file that does not read into its types this walk
//! finds every unknown key, each with its place and a "did you mean", to be reported with that
//! error. A file that reads has them noted during its one parse ([`super::unknown_fields`]),
//! with the same messages.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::{Spanned, span_of};
use crate::diagnostic::{Span, did_you_mean};

/// A YAML document's shape with each mapping key's place: all the walk needs.
pub(super) enum Node {
    Map(Vec<(Spanned<String>, Node)>),
    Seq(Vec<Node>),
    Leaf,
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct NodeVisitor;
        impl<'de> Visitor<'de> for NodeVisitor {
            type Value = Node;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_i128<E: de::Error>(self, _: i128) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_u128<E: de::Error>(self, _: u128) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_none<E: de::Error>(self) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
                Node::deserialize(d)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Node::Seq(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Node::Map(entries))
            }
        }
        d.deserialize_any(NodeVisitor)
    }
}

/// Every key of `node` that `schema` does not allow, in file order: the message and the place.
pub(super) fn unknown(node: &Node, schema: &Value) -> Vec<(String, Span)> {
    let mut found = Vec::new();
    walk(node, schema, schema, &mut found);
    found
}

fn walk(node: &Node, schema: &Value, root: &Value, found: &mut Vec<(String, Span)>) {
    match node {
        Node::Leaf => {}
        Node::Seq(items) => {
            let Some(items_schema) = branches(schema, root)
                .into_iter()
                .find_map(|b| b.get("items"))
            else {
                return;
            };
            for item in items {
                walk(item, items_schema, root, found);
            }
        }
        Node::Map(entries) => {
            let mut objects: Vec<&Value> = branches(schema, root)
                .into_iter()
                .filter(|b| {
                    b.get("properties").is_some() || b.get("additionalProperties").is_some()
                })
                .collect();
            // One variant of an enum (`publish: [{pypi: ...}]`): the one whose keys are given.
            if objects.len() > 1 {
                objects.retain(|b| required(b).all(|r| entries.iter().any(|(k, _)| k.value == r)));
            }
            let [object] = objects[..] else {
                return;
            };
            let properties = object.get("properties").and_then(Value::as_object);
            for (key, value) in entries {
                if let Some(property) = properties.and_then(|p| p.get(&key.value)) {
                    walk(value, property, root, found);
                    continue;
                }
                match object.get("additionalProperties") {
                    Some(Value::Bool(false)) => {
                        let names = properties
                            .into_iter()
                            .flat_map(|p| p.keys().map(String::as_str));
                        found.push((message(&key.value, names), span_of(key)));
                    }
                    Some(other @ Value::Object(_)) => walk(value, other, root, found),
                    _ => {}
                }
            }
        }
    }
}

/// `unknown key `neds` (did you mean `needs`?)`, or the keys there are.
pub(super) fn message<'a>(key: &str, expected: impl Iterator<Item = &'a str> + Clone) -> String {
    let mut out = format!("unknown key `{key}`");
    match did_you_mean(key, expected.clone()) {
        Some(near) => out.push_str(&format!(" (did you mean `{near}`?)")),
        None => {
            let names: Vec<&str> = expected.collect();
            if !names.is_empty() {
                out.push_str(&format!("; expected one of: {}", names.join(", ")));
            }
        }
    }
    out
}

fn required(schema: &Value) -> impl Iterator<Item = &str> {
    schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

/// The schema with `$ref`s followed, split into its `anyOf`/`oneOf` alternatives.
fn branches<'a>(schema: &'a Value, root: &'a Value) -> Vec<&'a Value> {
    let schema = resolve(schema, root);
    let mut out = vec![schema];
    for key in ["anyOf", "oneOf"] {
        if let Some(list) = schema.get(key).and_then(Value::as_array) {
            out.extend(list.iter().map(|b| resolve(b, root)));
        }
    }
    out
}

fn resolve<'a>(schema: &'a Value, root: &'a Value) -> &'a Value {
    let mut schema = schema;
    // Definitions do not refer to one another by `$ref` alone, but a chain must end anyway.
    for _ in 0..8 {
        let Some(pointer) = schema
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix('#'))
        else {
            break;
        };
        match root.pointer(pointer) {
            Some(target) => schema = target,
            None => break,
        }
    }
    schema
}
