//! The engine's failure classes: why a decision is not a plain "allow". Defined once here (a
//! leaf module, so that `verify` and `policy` can classify what they find without importing the
//! engine) and used unchanged by the CLI's JSON (`failure`), the webhook's deny reason and the
//! metrics' `failure` label.
//!
//! Two families: the artifact was looked at and found wanting (`unsigned`, `untrusted`,
//! `mismatch`, `annotation`, `tlog`, and for attestations `unattested`, `condition`), or no verdict on the artifact could be reached (`registry`,
//! `auth`, `rate-limited`, `not-found`, `timeout`, `policy`). A failure of the second family is
//! never reported as "unsigned". `no-match` is the policy's `noMatch` answer; `internal` is a
//! bug in ocigate itself.

use serde::Serialize;

/// Why a decision is not a plain allow (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Failure {
    /// No signature of any kind was found anywhere it was looked for.
    Unsigned,
    /// Signatures were found, but none by a key or identity the rule accepts (or fewer
    /// authorities than the rule's threshold), or none that is a valid signature at all.
    Untrusted,
    /// A signature by an accepted signer, but for another digest or another repository.
    Mismatch,
    /// A signature by an accepted signer, but without the annotations the rule requires.
    Annotation,
    /// A signature by an accepted signer, but without the transparency-log proof the rule
    /// requires (or with one that does not verify).
    Tlog,
    /// The rule's signatures hold, but an attestation it requires (`attestations:`) has no
    /// verified statement of that predicate type for this digest by an accepted signer.
    Unattested,
    /// Attestations of the required type verified, but in none of them did every condition
    /// hold (a false condition, or one refused for its cost or time).
    Condition,
    /// The registry failed: unreachable, an HTTP error, a malformed or oversized answer.
    Registry,
    /// The registry refused access (401/403): missing or wrong credentials.
    Auth,
    /// The registry answered 429 (or kept answering 503) within the deadline.
    RateLimited,
    /// The reference (tag or digest) does not exist.
    NotFound,
    /// The deadline ran out before a verdict.
    Timeout,
    /// The policy cannot decide (two rules equally specific, a trust root unavailable).
    Policy,
    /// No rule matches and the policy's `noMatch` is not `allow`.
    NoMatch,
    /// The rule requires Flux to verify this source itself (`fluxVerification: required`) and
    /// the Flux object has no `verify` with provider cosign.
    FluxVerify,
    /// The object names no valid artifact: an unparsable image, a Flux source that cannot be
    /// followed (a missing HelmRepository), a malformed semver constraint.
    Invalid,
    /// ocigate itself failed (a verification task panicked): a bug; never an allow.
    Internal,
}

impl Failure {
    /// Every class, in documentation order.
    pub const ALL: [Failure; 17] = [
        Failure::Unsigned,
        Failure::Untrusted,
        Failure::Mismatch,
        Failure::Annotation,
        Failure::Tlog,
        Failure::Unattested,
        Failure::Condition,
        Failure::Registry,
        Failure::Auth,
        Failure::RateLimited,
        Failure::NotFound,
        Failure::Timeout,
        Failure::Policy,
        Failure::NoMatch,
        Failure::FluxVerify,
        Failure::Invalid,
        Failure::Internal,
    ];

    /// The class as written in JSON, log lines and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Unsigned => "unsigned",
            Failure::Untrusted => "untrusted",
            Failure::Mismatch => "mismatch",
            Failure::Annotation => "annotation",
            Failure::Tlog => "tlog",
            Failure::Unattested => "unattested",
            Failure::Condition => "condition",
            Failure::Registry => "registry",
            Failure::Auth => "auth",
            Failure::RateLimited => "rate-limited",
            Failure::NotFound => "not-found",
            Failure::Timeout => "timeout",
            Failure::Policy => "policy",
            Failure::NoMatch => "no-match",
            Failure::FluxVerify => "flux-verify",
            Failure::Invalid => "invalid",
            Failure::Internal => "internal",
        }
    }

    /// Whether no verdict on the artifact itself could be reached (the registry or the clock
    /// stood in the way): such a decision is cached briefly or not at all.
    pub fn is_unreached(self) -> bool {
        matches!(
            self,
            Failure::Registry
                | Failure::Auth
                | Failure::RateLimited
                | Failure::NotFound
                | Failure::Timeout
        )
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_serde_and_are_distinct() {
        let mut seen = std::collections::BTreeSet::new();
        for f in Failure::ALL {
            let json = serde_json::to_string(&f).unwrap();
            assert_eq!(json, format!("\"{}\"", f.as_str()));
            assert!(seen.insert(f.as_str()), "{f} twice");
        }
        assert!(Failure::Auth.is_unreached());
        assert!(!Failure::Unsigned.is_unreached());
        assert!(!Failure::NoMatch.is_unreached());
    }
}
