//! Evaluation: the verification outcomes of one artifact's candidates → the rule's verdict,
//! reasons, evidence and failure class. Pure; must not verify anything itself.

use std::collections::BTreeSet;

use super::attestation::AttestationEvidence;
use super::model::{Mode, Rule, Verdict};
use crate::failure::Failure;
use crate::verify::{Rejection, VerifiedSignature};

/// What verifying one candidate against each of a rule's authorities gave.
#[derive(Debug)]
pub struct CandidateOutcome {
    /// Where the candidate was found.
    pub location: String,
    /// Indexed like `Rule::authorities`.
    pub results: Vec<Result<VerifiedSignature, Rejection>>,
}

/// The policy's judgement on the verification outcomes.
#[derive(Debug)]
pub struct Evaluation {
    /// The rule's verdict under its mode.
    pub verdict: Verdict,
    /// Why, for people.
    pub reasons: Vec<String>,
    /// Every signature that satisfied an authority.
    pub evidence: Vec<VerifiedSignature>,
    /// Why the rule was not satisfied (None when it was).
    pub failure: Option<Failure>,
    /// Every attestation that verified for one of the rule's requirements, with what its
    /// conditions gave (see [`super::evaluate_attestations`]).
    pub attestations: Vec<AttestationEvidence>,
}

/// Most rejected signatures named in a decision's reasons (the rest are counted).
pub const MAX_REJECTIONS_SHOWN: usize = 5;

/// Apply `rule` to the outcomes. `looked` describes where signatures were looked for.
pub fn evaluate(rule: &Rule, outcomes: Vec<CandidateOutcome>, looked: &str) -> Evaluation {
    let tally = Tally::of(outcomes);
    let ok = tally.satisfied.len() >= rule.threshold;
    let reasons = tally.reasons(rule, ok, looked);
    let verdict = match (ok, rule.mode) {
        (true, _) => Verdict::Allow,
        (false, Mode::Enforce) => Verdict::Deny,
        (false, Mode::Warn) => Verdict::Warn,
        (false, Mode::Audit) => Verdict::Allow,
    };
    let reasons = if !ok && rule.mode == Mode::Audit {
        reasons.into_iter().map(|r| format!("audit: {r}")).collect()
    } else {
        reasons
    };
    let failure = if ok {
        None
    } else if tally.candidates == 0 {
        Some(Failure::Unsigned)
    } else if tally.satisfied.is_empty() {
        Some(tally.most_telling.map_or(Failure::Untrusted, |(_, f)| f))
    } else {
        // Some authorities verified, not enough of them.
        Some(Failure::Untrusted)
    };
    Evaluation {
        verdict,
        reasons,
        evidence: tally.evidence,
        failure,
        attestations: Vec::new(),
    }
}

/// The outcomes counted: which authorities were satisfied (with the evidence), and for each
/// candidate that satisfied none its most telling refusal.
struct Tally {
    candidates: usize,
    evidence: Vec<VerifiedSignature>,
    /// The authorities counted: each satisfied by a signer of its own (indexes into
    /// `Rule::authorities`; see [`super::signers`]).
    satisfied: BTreeSet<usize>,
    /// The authorities some signature satisfied, counted or not.
    verified: BTreeSet<usize>,
    /// (rank, text), the most telling first, each text once.
    failures: Vec<(u8, String)>,
    /// The rank and class of the most telling rejection of all.
    most_telling: Option<(u8, Failure)>,
}

impl Tally {
    fn of(outcomes: Vec<CandidateOutcome>) -> Tally {
        let mut tally = Tally {
            candidates: outcomes.len(),
            evidence: Vec::new(),
            satisfied: BTreeSet::new(),
            verified: BTreeSet::new(),
            failures: Vec::new(),
            most_telling: None,
        };
        let mut signers = Vec::new();
        for c in outcomes {
            let mut best: Option<Rejection> = None;
            let mut any_ok = false;
            let mut one = super::signers::Verified {
                authorities: Vec::new(),
                signer: Vec::new(),
            };
            for (i, r) in c.results.into_iter().enumerate() {
                match r {
                    Ok(v) => {
                        tally.verified.insert(i);
                        one.authorities.push(i);
                        one.signer.extend(v.signer());
                        tally.evidence.push(v);
                        any_ok = true;
                    }
                    Err(rej) => {
                        let better = best.as_ref().is_none_or(|b| rej.rank() > b.rank());
                        if better {
                            best = Some(rej);
                        }
                    }
                }
            }
            if any_ok {
                signers.push(one);
            }
            if !any_ok && let Some(b) = best {
                if tally.most_telling.is_none_or(|(rank, _)| b.rank() > rank) {
                    tally.most_telling = Some((b.rank(), b.class()));
                }
                tally.failures.push((b.rank(), b.reason()));
            }
        }
        // The most telling rejections first, each said once: a registry can plant any number
        // of signatures.
        tally.failures.sort_by_key(|f| std::cmp::Reverse(f.0));
        let mut said = BTreeSet::new();
        tally.failures.retain(|(_, text)| said.insert(text.clone()));
        tally.satisfied = super::signers::counted(&signers);
        tally
    }

    /// Why the rule is satisfied (`ok`) or not.
    fn reasons(&self, rule: &Rule, ok: bool, looked: &str) -> Vec<String> {
        let satisfied = &self.satisfied;
        if ok && rule.threshold == 0 {
            vec!["no signature required (the attestations decide)".to_string()]
        } else if ok {
            let names: Vec<&str> = satisfied
                .iter()
                .map(|i| rule.authorities[*i].name.as_str())
                .collect();
            vec![format!(
                "verified by {} of {} required authorities: {}",
                satisfied.len(),
                rule.threshold,
                names.join(", ")
            )]
        } else if self.candidates == 0 {
            vec![format!("no signatures found ({looked})")]
        } else if satisfied.is_empty() {
            self.with_rejections(format!(
                "none of {} signature(s) satisfied an authority of rule {:?}",
                self.candidates, rule.name
            ))
        } else {
            let missing: Vec<&str> = rule
                .authorities
                .iter()
                .enumerate()
                .filter(|(i, _)| !satisfied.contains(i))
                .map(|(_, a)| a.name.as_str())
                .collect();
            let mut reasons = self.with_rejections(format!(
                "{} of {} required authorities verified; missing: {}",
                satisfied.len(),
                rule.threshold,
                missing.join(", ")
            ));
            let shared: Vec<&str> = self
                .verified
                .difference(satisfied)
                .map(|i| rule.authorities[*i].name.as_str())
                .collect();
            if !shared.is_empty() {
                reasons.insert(
                    1,
                    format!(
                        "{} verified only signatures by a signer already counted for another \
                     authority (one signer counts once)",
                        shared.join(", ")
                    ),
                );
            }
            reasons
        }
    }

    /// `first`, then at most [`MAX_REJECTIONS_SHOWN`] rejections, then how many more.
    fn with_rejections(&self, first: String) -> Vec<String> {
        let mut reasons = vec![first];
        let shown = self.failures.len().min(MAX_REJECTIONS_SHOWN);
        reasons.extend(self.failures[..shown].iter().map(|(_, text)| text.clone()));
        if self.failures.len() > shown {
            reasons.push(format!(
                "… and {} more rejected signature(s) (ocigate discover lists them)",
                self.failures.len() - shown
            ));
        }
        reasons
    }
}

/// The verdict when verification could not be carried out (registry down, access denied):
/// never "unsigned", and never allow under `enforce`.
pub fn failed_verdict(mode: Mode) -> Verdict {
    match mode {
        Mode::Enforce => Verdict::Deny,
        Mode::Warn => Verdict::Warn,
        Mode::Audit => Verdict::Allow,
    }
}
