//! Validating a rule's `attestations:`: each predicate type read as cosign reads `--type`, its
//! authorities among the rule's, and each CEL condition compiled and type-checked now, its errors
//! at their line and column in the file. Must not read files or evaluate anything.

use std::collections::BTreeSet;

use super::Validator;
use crate::condition::Condition;
use crate::policy::Issue;
use crate::policy::model::{AttestationRequirement, Authority};
use crate::policy::read::{RawAttestation, RawCondition};
use crate::policy::shown::shown;
use crate::predicate::PredicateType;

/// Most attestations one rule may require, and most conditions one attestation may have.
pub(in crate::policy) const MAX_ATTESTATIONS: usize = 16;
/// Most conditions one attestation may have.
pub(in crate::policy) const MAX_CONDITIONS: usize = 32;

impl Validator<'_> {
    /// A rule's attestation requirements; `authorities` are the rule's, validated.
    pub(super) fn attestations(
        &mut self,
        raw: Vec<RawAttestation>,
        authorities: &[Authority],
        rule: &str,
    ) -> Vec<AttestationRequirement> {
        if raw.len() > MAX_ATTESTATIONS
            && let Some(extra) = raw.get(MAX_ATTESTATIONS)
        {
            let msg = format!("rule {rule}: more than {MAX_ATTESTATIONS} attestations");
            self.at(&extra.name, msg);
        }
        let mut names = BTreeSet::new();
        let mut out = Vec::new();
        for a in raw {
            if !names.insert(a.name.value.clone()) {
                let msg = format!(
                    "rule {rule}: attestation {} is given twice",
                    shown(&a.name.value)
                );
                self.at(&a.name, msg);
            }
            out.extend(self.attestation(a, authorities, rule));
        }
        out
    }

    fn attestation(
        &mut self,
        raw: RawAttestation,
        authorities: &[Authority],
        rule: &str,
    ) -> Option<AttestationRequirement> {
        let label = format!("rule {rule}: attestation {}", shown(&raw.name.value));
        let predicate_type = raw.predicate_type.as_ref().and_then(|t| {
            PredicateType::parse(&t.value)
                .map_err(|e| self.at(t, format!("{label}: {e}")))
                .ok()
        });
        let chosen = self.chosen_authorities(&raw, authorities, &label);
        if raw.conditions.len() > MAX_CONDITIONS
            && let Some(extra) = raw.conditions.get(MAX_CONDITIONS)
        {
            let msg = format!("{label}: more than {MAX_CONDITIONS} conditions");
            self.at(&extra.expression, msg);
        }
        let conditions: Vec<Option<Condition>> = raw
            .conditions
            .iter()
            .enumerate()
            .map(|(i, c)| self.condition(c, i, &label))
            .collect();
        if raw.broken {
            return None;
        }
        Some(AttestationRequirement {
            name: raw.name.value,
            predicate_type: predicate_type?,
            authorities: chosen?,
            conditions: conditions.into_iter().collect::<Option<Vec<_>>>()?,
        })
    }

    /// The rule's authorities an attestation names (all of them when it names none).
    fn chosen_authorities(
        &mut self,
        raw: &RawAttestation,
        authorities: &[Authority],
        label: &str,
    ) -> Option<Vec<usize>> {
        let Some(names) = &raw.authorities else {
            return Some((0..authorities.len()).collect());
        };
        if names.value.is_empty() {
            self.at(names, format!("{label}: authorities is empty"));
            return None;
        }
        let mut chosen = BTreeSet::new();
        let mut ok = true;
        for n in &names.value {
            match authorities.iter().position(|a| a.name == n.value) {
                Some(i) => {
                    chosen.insert(i);
                }
                None => {
                    ok = false;
                    let known: Vec<String> = authorities.iter().map(|a| shown(&a.name)).collect();
                    let msg = format!(
                        "{label}: {} is not an authority of this rule (its authorities: {})",
                        shown(&n.value),
                        known.join(", ")
                    );
                    self.at(n, msg);
                }
            }
        }
        ok.then(|| chosen.into_iter().collect())
    }

    /// One condition compiled; a CEL error is reported where it stands in the file.
    fn condition(&mut self, c: &RawCondition, index: usize, label: &str) -> Option<Condition> {
        match Condition::compile(&c.expression.value, c.message.as_deref()) {
            Ok(compiled) => Some(compiled),
            Err(e) => {
                let (line, column) = c.origin.locate(e.line, e.column);
                self.issues.push(Issue {
                    line: line.max(1),
                    column: column.max(1),
                    message: format!("{label}: condition {}: {}", index + 1, e.kind),
                });
                None
            }
        }
    }
}
