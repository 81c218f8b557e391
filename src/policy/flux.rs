//! The rule's `fluxVerification` requirement on a Flux source: whether Flux must verify the
//! source itself, and what the rule's verdict becomes when it does not. Must not look at Flux
//! objects (the engine says whether Flux verifies) or at signatures.

use super::evaluate::failed_verdict;
use super::model::{FluxVerification, Rule, Verdict};

/// Why a Flux source falls short of its rule's `fluxVerification: required`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FluxShortfall {
    /// The reason, naming the rule and where the source is.
    pub reason: String,
    /// The verdict the rule's mode gives a failure (see [`failed_verdict`]).
    pub verdict: Verdict,
}

impl FluxShortfall {
    /// `verdict` made no more lenient than this shortfall's: deny over warn over allow.
    pub fn stricter(&self, verdict: Verdict) -> Verdict {
        match (verdict, self.verdict) {
            (Verdict::Deny, _) | (_, Verdict::Deny) => Verdict::Deny,
            (Verdict::Warn, _) | (_, Verdict::Warn) => Verdict::Warn,
            _ => Verdict::Allow,
        }
    }
}

/// What `rule` says of a Flux source that Flux itself verifies with cosign (`flux_verifies`)
/// or not: None when the rule is satisfied. `verify_field` is where Flux's verification of it
/// is set (`spec.verify`, a HelmRelease's `spec.chart.spec.verify`).
pub fn flux_requirement(
    rule: &Rule,
    flux_verifies: bool,
    verify_field: &str,
) -> Option<FluxShortfall> {
    if rule.flux_verification != FluxVerification::Required || flux_verifies {
        return None;
    }
    Some(FluxShortfall {
        reason: format!(
            "rule {:?} requires Flux to verify this source itself, and it does not: set \
             {verify_field} with provider: cosign",
            rule.name
        ),
        verdict: failed_verdict(rule.mode),
    })
}
