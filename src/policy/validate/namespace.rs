//! Validating a rule's `namespaces` globs and `namespaceSelector`: names, label keys and
//! values, operators and their values, each problem at its position. No I/O.

use std::collections::BTreeSet;

use serde_saphyr::Spanned;

use super::Validator;
use crate::policy::namespace::{
    LabelSelector, NamespaceGlob, NamespaceScope, Operator, Requirement, check_label_key,
    check_label_value,
};
use crate::policy::read::{RawNamespaces, RawRequirement, RawSelector};
use crate::policy::shown::shown;

impl Validator<'_> {
    /// A rule's namespace conditions; None when any part has a problem (each reported).
    pub(super) fn namespace_scope(
        &mut self,
        raw: &RawNamespaces,
        rule: &str,
    ) -> Option<NamespaceScope> {
        let before = self.issues.len();
        let globs = raw.globs.as_ref().map(|g| self.namespace_globs(g, rule));
        let selector = raw.selector.as_ref().map(|s| self.selector(&s.value, rule));
        (!raw.broken && self.issues.len() == before).then_some(NamespaceScope { globs, selector })
    }

    fn namespace_globs(
        &mut self,
        raw: &Spanned<Vec<Spanned<String>>>,
        rule: &str,
    ) -> Vec<NamespaceGlob> {
        if raw.value.is_empty() {
            let msg = format!(
                "rule {rule}: namespaces is empty; name at least one namespace (or leave \
                 namespaces out for a rule that applies everywhere)"
            );
            self.at(raw, msg);
        }
        let mut globs = Vec::new();
        for g in &raw.value {
            match NamespaceGlob::new(&g.value) {
                Ok(glob) => globs.push(glob),
                Err(problem) => {
                    let msg = format!("rule {rule}: namespace {}: {problem}", shown(&g.value));
                    self.at(g, msg);
                }
            }
        }
        globs
    }

    fn selector(&mut self, raw: &RawSelector, rule: &str) -> LabelSelector {
        let mut requirements = Vec::new();
        for (k, v) in &raw.match_labels {
            self.label_key(k, rule);
            self.label_value(v, rule);
            requirements.push(Requirement {
                key: k.value.clone(),
                operator: Operator::In,
                values: BTreeSet::from([v.value.clone()]),
            });
        }
        for e in &raw.match_expressions {
            if let Some(r) = self.requirement(&e.value, e, rule) {
                requirements.push(r);
            }
        }
        LabelSelector { requirements }
    }

    fn requirement<T>(
        &mut self,
        raw: &RawRequirement,
        at: &Spanned<T>,
        rule: &str,
    ) -> Option<Requirement> {
        self.label_key(&raw.key, rule);
        let values = raw.values.as_ref();
        let key = shown(&raw.key.value);
        match raw.operator {
            Operator::In | Operator::NotIn => match values {
                Some(v) if !v.value.is_empty() => {
                    v.value.iter().for_each(|x| self.label_value(x, rule));
                }
                Some(v) => {
                    let msg = format!(
                        "rule {rule}: the {:?} requirement on {key} has empty values; \
                         In and NotIn need at least one",
                        raw.operator
                    );
                    self.at(v, msg);
                }
                None => {
                    let msg = format!(
                        "rule {rule}: the {:?} requirement on {key} needs values",
                        raw.operator
                    );
                    self.at(at, msg);
                }
            },
            Operator::Exists | Operator::DoesNotExist => {
                if let Some(v) = values.filter(|v| !v.value.is_empty()) {
                    let msg = format!(
                        "rule {rule}: the {:?} requirement on {key} takes no values",
                        raw.operator
                    );
                    self.at(v, msg);
                }
            }
        }
        Some(Requirement {
            key: raw.key.value.clone(),
            operator: raw.operator,
            values: values
                .map(|v| v.value.iter().map(|x| x.value.clone()).collect())
                .unwrap_or_default(),
        })
    }

    fn label_key(&mut self, key: &Spanned<String>, rule: &str) {
        if let Err(problem) = check_label_key(&key.value) {
            let msg = format!(
                "rule {rule}: label key {} is invalid: {problem}",
                shown(&key.value)
            );
            self.at(key, msg);
        }
    }

    fn label_value(&mut self, value: &Spanned<String>, rule: &str) {
        if let Err(problem) = check_label_value(&value.value) {
            let msg = format!(
                "rule {rule}: label value {}: {problem}",
                shown(&value.value)
            );
            self.at(value, msg);
        }
    }
}
