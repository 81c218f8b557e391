//! The YAML of a policy file as a tree of positioned nodes (where each is used and where it is
//! written), parsed without stopping at repeated keys. Must not know what any field means.

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{Location, Spanned};

use super::Issue;

/// One YAML node and where it stands.
pub(super) struct Node {
    pub(super) value: Value,
    /// Where the node is used (for an alias, the alias).
    pub(super) at: Location,
    /// Where its content is written (for an alias, the anchored node).
    pub(super) defined: Location,
}

pub(super) enum Value {
    Null,
    /// A quoted or block scalar, or a plain one YAML does not read as a boolean or number.
    Text(String),
    /// A plain scalar YAML reads as a boolean or a number. Where a field wants text, the text
    /// is the scalar as written (`on`, `1.10`), taken from the source.
    Typed(Typed),
    List(Vec<Node>),
    Mapping(Vec<(Node, Node)>),
}

#[derive(Clone, Copy)]
pub(super) enum Typed {
    Bool,
    Unsigned(u64),
    Other,
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        let s = Spanned::<Value>::deserialize(d)?;
        Ok(Node {
            value: s.value,
            at: s.referenced,
            defined: s.defined,
        })
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Value, E> {
        Ok(Value::Typed(Typed::Bool))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Typed(Typed::Unsigned(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Typed(match u64::try_from(v) {
            Ok(u) => Typed::Unsigned(u),
            Err(_) => Typed::Other,
        }))
    }
    fn visit_u128<E>(self, _: u128) -> Result<Value, E> {
        Ok(Value::Typed(Typed::Other))
    }
    fn visit_i128<E>(self, _: i128) -> Result<Value, E> {
        Ok(Value::Typed(Typed::Other))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Value, E> {
        Ok(Value::Typed(Typed::Other))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Text(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::Text(v))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Value, E> {
        Ok(Value::Text(String::from_utf8_lossy(v).into_owned()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(n) = seq.next_element::<Node>()? {
            items.push(n);
        }
        Ok(Value::List(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(k) = map.next_key::<Node>()? {
            let v = map.next_value::<Node>()?;
            entries.push((k, v));
        }
        Ok(Value::Mapping(entries))
    }
}

/// Parse YAML text into a tree. A file that is not YAML at all is one problem, reported alone.
pub(super) fn tree(text: &str) -> Result<Node, Issue> {
    let mut options = serde_saphyr::Options::default();
    // Repeated fields are reported (each of them) by the reader, not as a parse error.
    options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::PassThrough;
    // `.inf` and `.nan` are text where a field wants text.
    options.non_finite_float_policy = serde_saphyr::NonFiniteFloatPolicy::PassThrough;
    serde_saphyr::from_str_with_options::<Node>(text, options).map_err(|e| {
        let loc = e.location();
        let msg = e.without_snippet().to_string();
        Issue {
            line: loc.map_or(1, |l| l.line()).max(1),
            column: loc.map_or(1, |l| l.column()).max(1),
            message: crate::escape_text(&super::shown::cut(&strip_location_suffix(&msg), 300)),
        }
    })
}

/// serde-saphyr's plain message ends with " at line L, column C"; the position is ours to print.
fn strip_location_suffix(msg: &str) -> String {
    let first = msg.lines().next().unwrap_or(msg);
    match first.rfind(" at line ") {
        Some(i) => first[..i].to_string(),
        None => first.to_string(),
    }
}
