//! Reading a rule's `attestations:` (each `{name, predicateType, authorities, conditions}`) into
//! raw shapes, with where each condition's expression text starts in the file, so that a CEL
//! error inside an expression is reported at its file line and column. Must not compile anything.

use serde_saphyr::Spanned;

use super::Reader;
use crate::policy::tree::Node;

pub(in crate::policy) const ATTESTATION_FIELDS: &[&str] =
    &["name", "predicateType", "authorities", "conditions"];
const CONDITION_FIELDS: &[&str] = &["expression", "message"];

/// One entry of a rule's `attestations:`.
pub(in crate::policy) struct RawAttestation {
    pub name: Spanned<String>,
    pub predicate_type: Option<Spanned<String>>,
    /// None when absent (all of the rule's authorities).
    pub authorities: Option<Spanned<Vec<Spanned<String>>>>,
    pub conditions: Vec<RawCondition>,
    pub broken: bool,
}

/// One condition: its CEL text and what a false outcome says.
pub(in crate::policy) struct RawCondition {
    pub expression: Spanned<String>,
    pub message: Option<String>,
    pub origin: ExpressionOrigin,
}

/// Where an expression's text starts in the file: line and column of its first character,
/// and, for an unquoted scalar (plain or block), the indentation its later lines share.
#[derive(Debug, Clone, Copy)]
pub(in crate::policy) struct ExpressionOrigin {
    pub line: u64,
    pub column: u64,
    pub block_indent: Option<u64>,
}

impl ExpressionOrigin {
    /// The file position of `line`:`column` (1-based) within the expression text.
    pub(in crate::policy) fn locate(self, line: usize, column: usize) -> (u64, u64) {
        let (line, column) = (line.max(1) as u64, column.max(1) as u64);
        match self.block_indent {
            Some(indent) => (self.line + line - 1, indent + column),
            None if line == 1 => (self.line, self.column + column - 1),
            None => (self.line + line - 1, column),
        }
    }
}

impl Reader<'_> {
    /// A rule's `attestations:` list.
    pub(super) fn attestations(&mut self, n: &Node) -> Option<Vec<RawAttestation>> {
        let items = self.list(n, "attestations")?;
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            out.extend(self.attestation(item, i));
        }
        Some(out)
    }

    fn attestation(&mut self, n: &Node, index: usize) -> Option<RawAttestation> {
        const WHAT: &str = "an attestation";
        let f = self.fields(n, WHAT, ATTESTATION_FIELDS)?;
        let mut broken = f.had_unknown;
        let name = self
            .required(&f, "name", WHAT)
            .and_then(|n| self.text(n, "name"))
            .unwrap_or_else(|| {
                broken = true;
                Spanned::new(format!("attestations[{index}]"), f.at, f.at)
            });
        let predicate_type = self
            .required(&f, "predicateType", WHAT)
            .and_then(|n| self.text(n, "predicateType"));
        broken |= predicate_type.is_none();
        let authorities = f.get("authorities").and_then(|n| {
            let r = self.texts(n, "authorities");
            broken |= r.is_none();
            r
        });
        let mut conditions = Vec::new();
        if let Some(list) = f.get("conditions").and_then(|n| self.list(n, "conditions")) {
            for c in list {
                match self.condition(c) {
                    Some(c) => conditions.push(c),
                    None => broken = true,
                }
            }
        }
        Some(RawAttestation {
            name,
            predicate_type,
            authorities,
            conditions,
            broken,
        })
    }

    fn condition(&mut self, n: &Node) -> Option<RawCondition> {
        const WHAT: &str = "a condition";
        let f = self.fields(n, WHAT, CONDITION_FIELDS)?;
        let mut broken = f.had_unknown;
        let message = self.opt_text(&f, "message", &mut broken).map(|m| m.value);
        let node = self.required(&f, "expression", WHAT)?;
        let expression = self.text(node, "expression")?;
        if broken {
            return None;
        }
        Some(RawCondition {
            origin: self.expression_origin(node),
            expression,
            message,
        })
    }

    /// Where the text of a scalar starts: after its opening quote; for a plain or block
    /// scalar (whose position is its first content line) at its position, its later lines
    /// indented as the first.
    fn expression_origin(&self, n: &Node) -> ExpressionOrigin {
        let at = n.defined;
        let start = at
            .span()
            .byte_offset()
            .and_then(|o| usize::try_from(o).ok());
        let first = start.and_then(|s| self.source.get(s..)).unwrap_or("");
        match first.chars().next() {
            Some('\'' | '"') => ExpressionOrigin {
                line: at.line(),
                column: at.column() + 1,
                block_indent: None,
            },
            _ => ExpressionOrigin {
                line: at.line(),
                column: at.column(),
                block_indent: Some(at.column().saturating_sub(1)),
            },
        }
    }
}
