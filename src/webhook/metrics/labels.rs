//! The label values of `ocigate_decisions_total`, each from a bounded set: the verdict and the
//! failure class (closed sets), the object's kind (the kinds the webhook checks, else "other")
//! and the rule's name (the first [`MAX_NAMED_RULES`] names seen, else "other"). Owns the
//! bounds; must not count anything or know the policy beyond a rule's name.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;

use crate::failure::Failure;
use crate::policy::Verdict;
use crate::registry::fold::{LabelFold, OTHER};
use crate::webhook::decision_log::verdict_name;

/// Rule names that keep their own label value; later ones are counted as "other". Rule names
/// come from the policy (the operator's), but a policy reloaded with new names many times
/// must not grow the series without end.
pub(crate) const MAX_NAMED_RULES: usize = 64;

/// The kinds the webhook checks (deploy/'s webhook rules, and the pod-template kinds
/// `extract` reads); any other kind an AdmissionReview names is labelled "other".
pub(crate) const KNOWN_KINDS: [&str; 13] = [
    "Pod",
    "PodTemplate",
    "ReplicationController",
    "Deployment",
    "ReplicaSet",
    "StatefulSet",
    "DaemonSet",
    "Job",
    "CronJob",
    "OCIRepository",
    "HelmChart",
    "HelmRelease",
    "KluctlDeployment",
];

/// One series of `ocigate_decisions_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct DecisionLabels {
    verdict: &'static str,
    failure: &'static str,
    rule: String,
    kind: &'static str,
}

/// `kind`'s label value: itself if the webhook checks that kind, else "other".
pub(crate) fn kind_label(kind: &str) -> &'static str {
    KNOWN_KINDS
        .iter()
        .find(|k| **k == kind)
        .copied()
        .unwrap_or(OTHER)
}

/// The rule names seen, folded past [`MAX_NAMED_RULES`].
#[derive(Debug)]
pub(super) struct RuleFold(Mutex<LabelFold>);

impl Default for RuleFold {
    fn default() -> Self {
        RuleFold(Mutex::new(LabelFold::new(MAX_NAMED_RULES)))
    }
}

impl RuleFold {
    /// The labels of one decision: no rule (a `noMatch` answer, a source nothing can verify)
    /// is the empty value, which PromQL reads as the label's absence.
    pub(super) fn labels(
        &self,
        verdict: Verdict,
        failure: Option<Failure>,
        rule: Option<&str>,
        kind: &str,
    ) -> DecisionLabels {
        let rule = match rule {
            None => String::new(),
            Some(r) => crate::sync::lock(&self.0).fold(r).to_string(),
        };
        DecisionLabels {
            verdict: verdict_name(verdict),
            failure: failure.map_or("none", Failure::as_str),
            rule,
            kind: kind_label(kind),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_the_known_ones_or_other() {
        assert_eq!(kind_label("Pod"), "Pod");
        assert_eq!(kind_label("HelmRelease"), "HelmRelease");
        assert_eq!(kind_label("pod"), OTHER);
        assert_eq!(kind_label(&"K".repeat(10_000)), OTHER);
    }

    #[test]
    fn rule_names_past_the_bound_are_other() {
        let f = RuleFold::default();
        let rule = |name: &str| {
            f.labels(Verdict::Deny, Some(Failure::Unsigned), Some(name), "Pod")
                .rule
        };
        for i in 0..MAX_NAMED_RULES {
            assert_eq!(rule(&format!("r{i}")), format!("r{i}"));
        }
        assert_eq!(rule("one-more"), OTHER);
        assert_eq!(rule("r0"), "r0", "named stay named");
        let none = f.labels(Verdict::Allow, None, None, "Job");
        assert_eq!((none.rule.as_str(), none.failure), ("", "none"));
    }
}
