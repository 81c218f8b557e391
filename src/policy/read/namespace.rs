//! Reading a rule's `namespaces` and `namespaceSelector` (`matchLabels`, `matchExpressions`
//! as Kubernetes writes them) into raw shapes, with positions. Must not validate values.

use serde_saphyr::Spanned;

use super::{Fields, Reader};
use crate::policy::namespace::Operator;
use crate::policy::tree::{Node, Value};

const SELECTOR_FIELDS: &[&str] = &["matchLabels", "matchExpressions"];
const REQUIREMENT_FIELDS: &[&str] = &["key", "operator", "values"];
const OPERATOR_VALUES: &[&str] = &["In", "NotIn", "Exists", "DoesNotExist"];

/// A rule's namespace conditions as the file gives them.
#[derive(Default)]
pub(in crate::policy) struct RawNamespaces {
    /// `namespaces`, when given as a list of text.
    pub globs: Option<Spanned<Vec<Spanned<String>>>>,
    /// `namespaceSelector`, when given as a mapping.
    pub selector: Option<Spanned<RawSelector>>,
    /// Whether either was given but malformed (already reported).
    pub broken: bool,
}

/// A `namespaceSelector`.
pub(in crate::policy) struct RawSelector {
    /// `matchLabels`: key and value, each with its position.
    pub match_labels: Vec<(Spanned<String>, Spanned<String>)>,
    /// `matchExpressions`, each with its position.
    pub match_expressions: Vec<Spanned<RawRequirement>>,
}

/// One entry of `matchExpressions`.
pub(in crate::policy) struct RawRequirement {
    pub key: Spanned<String>,
    pub operator: Operator,
    /// `values`, when given.
    pub values: Option<Spanned<Vec<Spanned<String>>>>,
}

impl Reader<'_> {
    /// A rule's `namespaces` and `namespaceSelector`, from its fields.
    pub(super) fn rule_namespaces(&mut self, f: &Fields) -> RawNamespaces {
        let mut raw = RawNamespaces::default();
        if let Some(n) = f.get("namespaces") {
            raw.globs = self.texts(n, "namespaces");
            raw.broken |= raw.globs.is_none();
        }
        if let Some(n) = f.get("namespaceSelector") {
            let before = self.issues.len();
            raw.selector = self.selector(n).map(|s| Spanned::new(s, n.at, n.defined));
            raw.broken |= raw.selector.is_none() || self.issues.len() != before;
        }
        raw
    }

    /// A selector, with what could be read of it (problems reported, the rule marked broken
    /// by the caller).
    fn selector(&mut self, n: &Node) -> Option<RawSelector> {
        const WHAT: &str = "namespaceSelector";
        let f = self.fields(n, WHAT, SELECTOR_FIELDS)?;
        let mut match_labels = Vec::new();
        if let Some(m) = f.get("matchLabels") {
            match &m.value {
                Value::Mapping(entries) => {
                    for (k, v) in entries {
                        let key = self.text(k, "a matchLabels key");
                        let value = self.text(v, "a matchLabels value");
                        if let (Some(k), Some(v)) = (key, value) {
                            match_labels.push((k, v));
                        }
                    }
                }
                Value::Null => {}
                _ => {
                    let msg = format!("matchLabels must be a mapping, found {}", self.describe(m));
                    self.issue(&m.at, msg);
                }
            }
        }
        let mut match_expressions = Vec::new();
        if let Some(m) = f.get("matchExpressions")
            && let Some(list) = self.spanned_list(m, "matchExpressions", Self::requirement)
        {
            match_expressions = list.value;
        }
        Some(RawSelector {
            match_labels,
            match_expressions,
        })
    }

    fn requirement(&mut self, n: &Node) -> Option<RawRequirement> {
        const WHAT: &str = "a matchExpressions entry";
        let f = self.fields(n, WHAT, REQUIREMENT_FIELDS)?;
        let key = self
            .required(&f, "key", WHAT)
            .and_then(|k| self.text(k, "matchExpressions key"));
        let operator = self
            .required(&f, "operator", WHAT)
            .and_then(|o| self.choice(o, "matchExpressions operator", OPERATOR_VALUES))
            .map(|o| match o {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                _ => Operator::DoesNotExist,
            });
        let values = match f.get("values") {
            Some(v) if !matches!(v.value, Value::Null) => Some(self.texts(v, "values")?),
            _ => None,
        };
        if f.had_unknown {
            return None;
        }
        Some(RawRequirement {
            key: key?,
            operator: operator?,
            values,
        })
    }
}
