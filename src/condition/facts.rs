//! The CEL activation for one verified statement, read straight from its JSON into CEL values
//! (projected to what the conditions reference), with the sizes the cost bound needs.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use cel_core::{Expr, MapActivation, MapKey, SpannedExpr, Timestamp, Value, ValueMap};
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::Condition;
use super::cost::push_children;

/// Why a statement could not be made into facts.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FactsError {
    /// Not JSON, or not an object at the top.
    #[error("condition facts: the statement is not a JSON object CEL can read")]
    Statement(#[source] serde_json::Error),
    /// The signer facts are not a JSON object.
    #[error("condition facts: the signer facts are not a JSON object")]
    Signer(#[source] serde_json::Error),
}

/// Sizes of the facts, for the cost bound (of what was kept, projection applied).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Stats {
    /// Longest list or map.
    pub(super) max_len: u64,
    /// Longest string (or key) in bytes.
    pub(super) max_str: u64,
    /// Values plus string bytes.
    pub(super) weight: u64,
}

impl Stats {
    fn string(&mut self, len: usize) {
        self.max_str = self.max_str.max(len as u64);
        self.weight = self.weight.saturating_add(len as u64).saturating_add(1);
    }
    fn container(&mut self, len: usize) {
        self.max_len = self.max_len.max(len as u64);
        self.weight = self.weight.saturating_add(1);
    }
}

/// The CEL activation for one verified statement.
pub struct Facts {
    activation: MapActivation,
    /// The same values as the activation's (shared), for the cost bound to look at.
    values: Vec<(&'static str, Value)>,
    stats: Stats,
}

impl fmt::Debug for Facts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Facts")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Facts {
    /// `statement`: the in-toto statement's JSON bytes (already verified, may be tens of MiB);
    /// `signer`: a JSON object; `now`: the evaluation time (for timestamp conditions). The whole
    /// statement becomes CEL values ([`Facts::for_conditions`] keeps only what conditions use);
    /// integral numbers are `int` (`uint` above i64), others `double`; of a duplicate key the last
    /// value counts, as Go's encoding/json (cosign) reads it.
    pub fn new(
        statement: &[u8],
        signer: &serde_json::Value,
        now: SystemTime,
    ) -> Result<Facts, FactsError> {
        Self::build(statement, signer, now, &Projection::Whole)
    }

    /// As [`Facts::new`], keeping of `predicate` only the first-level fields that one of
    /// `conditions` selects by name (all of it when one uses `predicate` or `statement` whole):
    /// the rest of the JSON is skipped without being stored. The outcome of each of those
    /// conditions is the one [`Facts::new`] would give.
    pub fn for_conditions(
        statement: &[u8],
        signer: &serde_json::Value,
        now: SystemTime,
        conditions: &[Condition],
    ) -> Result<Facts, FactsError> {
        let projection = conditions
            .iter()
            .fold(Projection::Fields(BTreeSet::new()), |acc, c| {
                acc.union(&c.projection)
            });
        Self::build(statement, signer, now, &projection)
    }

    fn build(
        statement: &[u8],
        signer: &serde_json::Value,
        now: SystemTime,
        projection: &Projection,
    ) -> Result<Facts, FactsError> {
        let mut stats = Stats::default();
        let mut de = serde_json::Deserializer::from_slice(statement);
        let seed = Builder {
            stats: &mut stats,
            predicate: Some(projection),
        };
        let statement = seed.deserialize(&mut de).map_err(FactsError::Statement)?;
        de.end().map_err(FactsError::Statement)?;
        let Value::Map(top) = &statement else {
            return Err(FactsError::Statement(serde::de::Error::custom(
                "not an object",
            )));
        };
        let field = |name: &str| top.get(&MapKey::from(name)).cloned().unwrap_or(Value::Null);
        let signer_value = Builder {
            stats: &mut stats,
            predicate: None,
        }
        .deserialize(signer)
        .map_err(FactsError::Signer)?;
        if !matches!(signer_value, Value::Map(_)) {
            return Err(FactsError::Signer(serde::de::Error::custom(
                "not an object",
            )));
        }
        let values = vec![
            ("predicateType", field("predicateType")),
            ("predicate", field("predicate")),
            ("subject", field("subject")),
            ("signer", signer_value),
            ("now", timestamp(now)),
            ("statement", statement),
        ];
        let mut activation = MapActivation::new();
        for (name, value) in &values {
            activation.insert(*name, value.clone());
        }
        Ok(Facts {
            activation,
            values,
            stats,
        })
    }

    pub(super) fn activation(&self) -> &MapActivation {
        &self.activation
    }

    /// The value of fact variable `name`.
    pub(super) fn value(&self, name: &str) -> Option<&Value> {
        self.values.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    pub(super) fn stats(&self) -> &Stats {
        &self.stats
    }
}

/// `now` as a CEL timestamp.
fn timestamp(now: SystemTime) -> Value {
    let t = match now.duration_since(UNIX_EPOCH) {
        Ok(d) => Timestamp::new(
            i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            d.subsec_nanos() as i32,
        ),
        Err(e) => {
            let d = e.duration();
            let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            match d.subsec_nanos() {
                0 => Timestamp::new(-secs, 0),
                n => Timestamp::new(-secs - 1, 1_000_000_000 - n as i32),
            }
        }
    };
    Value::Timestamp(t)
}

/// Which of `predicate`'s first-level fields the conditions can read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Projection {
    /// All of it.
    Whole,
    /// Only these (by name).
    Fields(BTreeSet<String>),
}

impl Projection {
    /// What `expr` can read of `predicate`: every `predicate.F` / `statement.predicate.F` names F;
    /// any other use of `predicate`, `statement.predicate` or `statement` (indexed, passed to a
    /// function, compared, iterated, bound) reads it whole. An iteration variable named
    /// `predicate` or `statement` is treated as the fact it shadows: that only keeps more.
    pub(super) fn of(expr: &SpannedExpr) -> Projection {
        let mut fields = BTreeSet::new();
        let mut stack = vec![expr];
        while let Some(e) = stack.pop() {
            if let Some(path) = fact_path(e) {
                match path.as_slice() {
                    ["predicate", field, ..] | ["statement", "predicate", field, ..] => {
                        fields.insert((*field).to_owned());
                        continue;
                    }
                    ["predicate"] | ["statement"] | ["statement", "predicate"] => {
                        return Projection::Whole;
                    }
                    // `statement.subject`, `statement.predicateType`…: not the predicate.
                    ["statement", ..] => continue,
                    _ => {}
                }
            }
            push_children(e, &mut stack);
        }
        Projection::Fields(fields)
    }

    fn union(self, other: &Projection) -> Projection {
        match (self, other) {
            (Projection::Fields(mut a), Projection::Fields(b)) => {
                a.extend(b.iter().cloned());
                Projection::Fields(a)
            }
            _ => Projection::Whole,
        }
    }

    fn keeps(&self, field: &str) -> bool {
        match self {
            Projection::Whole => true,
            Projection::Fields(f) => f.contains(field),
        }
    }
}

/// `a.b.c` as `["a", "b", "c"]` when `e` is a chain of field selections (or a `has()` test) on
/// an identifier.
fn fact_path(e: &SpannedExpr) -> Option<Vec<&str>> {
    let mut path = Vec::new();
    let mut cur = e;
    loop {
        match &cur.node {
            Expr::Member { expr, field, .. } | Expr::MemberTestOnly { expr, field } => {
                path.push(field.as_str());
                cur = expr;
            }
            Expr::Ident(name) | Expr::RootIdent(name) => {
                path.push(name.as_str());
                path.reverse();
                return Some(path);
            }
            _ => return None,
        }
    }
}

/// Builds a CEL value from JSON, counting its sizes; at the statement's top, `predicate` set
/// says which of `predicate`'s fields to keep.
struct Builder<'s, 'p> {
    stats: &'s mut Stats,
    predicate: Option<&'p Projection>,
}

impl<'de> DeserializeSeed<'de> for Builder<'_, '_> {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

/// A JSON object's field values: all of them, or the projection's.
struct Only<'s, 'p> {
    stats: &'s mut Stats,
    keep: &'p Projection,
}

impl<'de> DeserializeSeed<'de> for Only<'_, '_> {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(OnlyVisitor(self))
    }
}

/// [`Only`]'s visitor: an object is filtered, anything else built whole.
struct OnlyVisitor<'s, 'p>(Only<'s, 'p>);

impl<'de> Visitor<'de> for Builder<'_, '_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Value, E> {
        self.stats.weight = self.stats.weight.saturating_add(1);
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Value, E> {
        self.stats.weight = self.stats.weight.saturating_add(1);
        Ok(Value::Int(v))
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Value, E> {
        self.stats.weight = self.stats.weight.saturating_add(1);
        Ok(i64::try_from(v).map_or(Value::UInt(v), Value::Int))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        self.stats.weight = self.stats.weight.saturating_add(1);
        Ok(Value::Double(v))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Value, E> {
        self.stats.string(v.len());
        Ok(Value::String(Arc::from(v)))
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Value, E> {
        self.stats.weight = self.stats.weight.saturating_add(1);
        Ok(Value::Null)
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(Builder {
            stats: &mut *self.stats,
            predicate: None,
        })? {
            items.push(v);
        }
        self.stats.container(items.len());
        Ok(Value::List(items.into()))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let (mut entries, mut count) = (BTreeMap::new(), 0);
        while let Some(key) = map.next_key::<String>()? {
            self.stats.string(key.len());
            let value = match (key.as_str(), self.predicate) {
                ("predicate", Some(keep)) => map.next_value_seed(Only {
                    stats: &mut *self.stats,
                    keep,
                })?,
                _ => map.next_value_seed(Builder {
                    stats: &mut *self.stats,
                    predicate: None,
                })?,
            };
            entries.insert(MapKey::from(key), value);
            count += 1;
        }
        self.stats.container(count);
        Ok(Value::Map(Arc::new(ValueMap::from_entries(entries))))
    }
}

impl<'de> Visitor<'de> for OnlyVisitor<'_, '_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Value, E> {
        self.whole().visit_bool(v)
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Value, E> {
        self.whole().visit_i64(v)
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Value, E> {
        self.whole().visit_u64(v)
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        self.whole().visit_f64(v)
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Value, E> {
        self.whole().visit_str(v)
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Value, E> {
        self.whole().visit_unit()
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<Value, E> {
        self.whole().visit_unit()
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Value, A::Error> {
        self.whole().visit_seq(seq)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let Only { stats, keep } = self.0;
        let (mut entries, mut count) = (BTreeMap::new(), 0);
        while let Some(key) = map.next_key::<String>()? {
            stats.string(key.len());
            count += 1;
            if keep.keeps(&key) {
                let value = map.next_value_seed(Builder {
                    stats: &mut *stats,
                    predicate: None,
                })?;
                entries.insert(MapKey::from(key), value);
            } else {
                map.next_value_seed(Skip(&mut *stats))?;
            }
        }
        stats.container(count);
        Ok(Value::Map(Arc::new(ValueMap::from_entries(entries))))
    }
}

impl<'s, 'p> OnlyVisitor<'s, 'p> {
    fn whole(self) -> Builder<'s, 'p> {
        Builder {
            stats: self.0.stats,
            predicate: None,
        }
    }
}

/// Skips a JSON value without storing it, counting its sizes as [`Builder`] would: the cost
/// bound on projected facts is the one on whole facts, so a projection changes no outcome.
struct Skip<'s>(&'s mut Stats);

impl<'de> DeserializeSeed<'de> for Skip<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Skip<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
        self.visit_unit()
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<(), E> {
        self.visit_unit()
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<(), E> {
        self.visit_unit()
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<(), E> {
        self.visit_unit()
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        self.0.string(v.len());
        Ok(())
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.0.weight = self.0.weight.saturating_add(1);
        Ok(())
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<(), E> {
        self.visit_unit()
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut count = 0;
        while seq.next_element_seed(Skip(&mut *self.0))?.is_some() {
            count += 1;
        }
        self.0.container(count);
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut count = 0;
        while map.next_key_seed(Skip(&mut *self.0))?.is_some() {
            map.next_value_seed(Skip(&mut *self.0))?;
            count += 1;
        }
        self.0.container(count);
        Ok(())
    }
}
