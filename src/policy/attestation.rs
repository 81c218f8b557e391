//! A rule's attestation requirements applied to what discovery found: each attestation
//! candidate verified by the requirement's authorities, its conditions evaluated on the verified
//! statement (then the statement is dropped), and the requirements judged. Pure; must not do I/O.

use std::time::SystemTime;

use serde::Serialize;

use super::CompiledPolicy;
use super::evaluate::{Evaluation, failed_verdict};
use super::model::{AttestationRequirement, Mode, Rule};
use crate::candidate::AttestationCandidate;
use crate::condition::{Condition, Facts};
use crate::failure::Failure;
use crate::verify::{
    ArtifactDigests, AttestationExpectation, Evidence, PreparedAttestation, Rejection,
    RejectionKind, VerifiedAttestation, verify_attestation,
};

/// One condition's outcome on one verified statement.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConditionOutcome {
    /// The expression.
    pub expression: String,
    /// Its message, when the policy gives one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Whether it held.
    pub passed: bool,
    /// Why it could not be evaluated (cost limit, time bound, a missing field), when it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ConditionOutcome {
    /// What a person is told when it did not hold: its message, else the expression.
    pub fn said(&self) -> String {
        let what = self
            .message
            .clone()
            .unwrap_or_else(|| self.expression.clone());
        match &self.error {
            Some(e) => format!("{what} (not evaluated: {e})"),
            None => what,
        }
    }
}

/// Evidence that an attestation verified, and what its conditions gave. Small: the statement
/// itself is not kept.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AttestationEvidence {
    /// The requirement (its name in the rule) it was verified for.
    pub requirement: String,
    /// The statement's predicate type.
    pub predicate_type: String,
    /// The authority that signed it.
    pub authority: String,
    /// How the signature was tied to the authority.
    #[serde(flatten)]
    pub evidence: Evidence,
    /// Where it was found.
    pub location: String,
    /// Every condition of the requirement, in order.
    pub conditions: Vec<ConditionOutcome>,
}

impl AttestationEvidence {
    /// Whether every condition held.
    pub fn holds(&self) -> bool {
        self.conditions.iter().all(|c| c.passed)
    }

    /// About how many bytes this holds (for cache weights).
    pub fn approx_bytes(&self) -> usize {
        let conditions: usize = self
            .conditions
            .iter()
            .map(|c| 48 + c.expression.len() + c.message.as_ref().map_or(0, String::len))
            .sum();
        200 + self.requirement.len()
            + self.predicate_type.len()
            + self.authority.len()
            + self.location.len()
            + conditions
    }

    /// Cut what the registry and the signer control to `max` bytes each.
    pub fn bound(&mut self, max: usize) {
        use crate::bounded::cut_in_place;
        cut_in_place(&mut self.location, max);
        cut_in_place(&mut self.predicate_type, max);
        for c in &mut self.conditions {
            if let Some(e) = &mut c.error {
                cut_in_place(e, max);
            }
        }
        if let Evidence::Keyless {
            identity, issuer, ..
        } = &mut self.evidence
        {
            cut_in_place(identity, max);
            cut_in_place(issuer, max);
        }
    }
}

/// What one attestation candidate gave for each requirement it was tried for.
#[derive(Debug)]
pub struct AttestationOutcome {
    /// Where it was found.
    pub location: String,
    /// (index into `Rule::attestations`, what it gave).
    pub results: Vec<(usize, Result<AttestationEvidence, Rejection>)>,
}

impl CompiledPolicy {
    /// Verify one attestation candidate for each of `rule`'s requirements it may satisfy (its
    /// annotated type, when it has one, is the requirement's), by the requirement's authorities
    /// in turn until one verifies it with every condition true (the first that verifies it is
    /// reported when none does).
    pub(crate) fn attestation_outcome(
        &self,
        rule: &Rule,
        digests: &ArtifactDigests,
        candidate: &AttestationCandidate,
        now: SystemTime,
    ) -> AttestationOutcome {
        let prepared = PreparedAttestation::new(candidate);
        let results = rule
            .attestations
            .iter()
            .enumerate()
            .filter(|(_, req)| {
                candidate
                    .claimed_type
                    .as_deref()
                    .is_none_or(|t| req.predicate_type.is(t))
            })
            .map(|(i, req)| (i, self.attest_one(rule, req, &prepared, digests, now)))
            .collect();
        AttestationOutcome {
            location: candidate.location.clone(),
            results,
        }
    }

    fn attest_one(
        &self,
        rule: &Rule,
        req: &AttestationRequirement,
        prepared: &PreparedAttestation<'_>,
        digests: &ArtifactDigests,
        now: SystemTime,
    ) -> Result<AttestationEvidence, Rejection> {
        let expect = AttestationExpectation {
            digests,
            predicate_type: &req.predicate_type,
        };
        let mut best: Option<Rejection> = None;
        // Verified by an authority whose signer the conditions refused: another authority that
        // also verifies it (the conditions see `signer.authority`) may still satisfy them.
        let mut refused: Option<AttestationEvidence> = None;
        for a in req
            .authorities
            .iter()
            .filter_map(|i| rule.authorities.get(*i))
        {
            let location = &prepared.candidate().location;
            let verified = self
                .bundle_authority(a, prepared.has_tlog_entries(), location)
                .and_then(|(who, root)| verify_attestation(prepared, &a.name, who, root, &expect));
            match verified {
                Ok(v) => {
                    let evidence = attestation_evidence(req, &v, now);
                    if evidence.holds() {
                        return Ok(evidence);
                    }
                    refused.get_or_insert(evidence);
                }
                Err(r) if best.as_ref().is_none_or(|b| r.rank() > b.rank()) => best = Some(r),
                Err(_) => {}
            }
        }
        if let Some(evidence) = refused {
            return Ok(evidence);
        }
        Err(best.unwrap_or_else(|| {
            let kind = RejectionKind::NotSupported {
                authority: req.name.clone(),
                what: "an attestation requirement without authorities".into(),
            };
            Rejection::new(prepared.candidate().location.clone(), kind)
        }))
    }
}

/// The requirement's conditions on one verified statement; the statement is read into the
/// conditions' facts once and dropped with them.
pub fn attestation_evidence(
    req: &AttestationRequirement,
    v: &VerifiedAttestation,
    now: SystemTime,
) -> AttestationEvidence {
    // Only the parts of the statement some condition reads are kept (an SBOM's packages are
    // skipped when no condition names them).
    let facts = Facts::for_conditions(v.statement_json(), &v.signer_facts(), now, &req.conditions);
    let conditions = req
        .conditions
        .iter()
        .map(|c| condition_outcome(c, facts.as_ref().map_err(ToString::to_string)))
        .collect();
    AttestationEvidence {
        requirement: req.name.clone(),
        predicate_type: v.predicate_type().to_string(),
        authority: v.authority().to_string(),
        evidence: v.evidence().clone(),
        location: v.location().to_string(),
        conditions,
    }
}

fn condition_outcome(c: &Condition, facts: Result<&Facts, String>) -> ConditionOutcome {
    let result = facts.and_then(|f| c.evaluate(f).map_err(|e| crate::error_chain(&e)));
    ConditionOutcome {
        expression: c.expression().to_string(),
        message: c.message().map(str::to_string),
        passed: result == Ok(true),
        error: result.err(),
    }
}

/// Most reasons said per unsatisfied requirement (rejections or failed conditions).
const SHOWN_PER_REQUIREMENT: usize = 3;

/// Apply `rule`'s attestation requirements to `outcomes`: the evidence joins the evaluation,
/// and when the signatures held but a requirement does not, the verdict, failure class
/// (`unattested` or `condition`) and reasons say so.
pub fn evaluate_attestations(
    rule: &Rule,
    evaluation: &mut Evaluation,
    outcomes: Vec<AttestationOutcome>,
) {
    if rule.attestations.is_empty() {
        return;
    }
    let signatures_held = evaluation.failure.is_none();
    let mut per_req: Vec<Judged> = rule
        .attestations
        .iter()
        .map(|_| Judged::default())
        .collect();
    for o in outcomes {
        for (i, r) in o.results {
            if let Some(j) = per_req.get_mut(i) {
                j.add(r);
            }
        }
    }
    let mut failure = None;
    let (mut short, mut held) = (Vec::new(), Vec::new());
    for (req, judged) in rule.attestations.iter().zip(&per_req) {
        match judged.shortfall(req) {
            None => held.push(judged.satisfied_reason(req)),
            Some((class, said)) => {
                failure.get_or_insert(class);
                short.extend(said);
            }
        }
    }
    evaluation
        .attestations
        .extend(per_req.into_iter().flat_map(|j| j.verified));
    if !signatures_held {
        return;
    }
    let Some(f) = failure else {
        evaluation.reasons.extend(held);
        return;
    };
    // What failed comes first: the deny's message starts with it.
    let audit = |r: String| match rule.mode {
        Mode::Audit => format!("audit: {r}"),
        _ => r,
    };
    let signatures = std::mem::take(&mut evaluation.reasons);
    evaluation.reasons = short.into_iter().map(audit).collect();
    evaluation.reasons.extend(signatures);
    evaluation.reasons.extend(held);
    evaluation.failure = Some(f);
    evaluation.verdict = failed_verdict(rule.mode);
}

/// One requirement's candidates: the verified ones (with their conditions) and the best
/// rejections of the others.
#[derive(Default)]
struct Judged {
    verified: Vec<AttestationEvidence>,
    rejections: Vec<Rejection>,
}

impl Judged {
    fn add(&mut self, r: Result<AttestationEvidence, Rejection>) {
        match r {
            Ok(e) => self.verified.push(e),
            Err(r) => self.rejections.push(r),
        }
    }

    fn satisfied_reason(&self, req: &AttestationRequirement) -> String {
        let by = self
            .verified
            .iter()
            .find(|e| e.holds())
            .map_or("", |e| e.authority.as_str());
        let n = req.conditions.len();
        format!(
            "attestation {:?} ({}) verified by {by}{}",
            req.name,
            req.predicate_type,
            match n {
                0 => String::new(),
                1 => ", its condition held".to_string(),
                n => format!(", all {n} conditions held"),
            }
        )
    }

    /// None when some verified statement's conditions all hold; else the class and reasons.
    fn shortfall(&self, req: &AttestationRequirement) -> Option<(Failure, Vec<String>)> {
        if self.verified.iter().any(AttestationEvidence::holds) {
            return None;
        }
        let head = format!("attestation {:?} ({})", req.name, req.predicate_type);
        if !self.verified.is_empty() {
            let mut said = vec![format!(
                "{head}: {} verified statement(s), but in none did every condition hold",
                self.verified.len()
            )];
            let failed = self
                .verified
                .iter()
                .flat_map(|e| e.conditions.iter().filter(|c| !c.passed))
                .map(|c| format!("condition failed: {}", c.said()));
            said.extend(dedup(failed).into_iter().take(SHOWN_PER_REQUIREMENT));
            return Some((Failure::Condition, said));
        }
        let mut rejections: Vec<&Rejection> = self.rejections.iter().collect();
        rejections.sort_by_key(|r| std::cmp::Reverse(r.rank()));
        let first = match rejections.len() {
            0 => format!("{head}: none found"),
            n => format!("{head}: none of {n} found verified"),
        };
        let mut said = vec![first];
        said.extend(
            dedup(rejections.iter().map(|r| r.reason()))
                .into_iter()
                .take(SHOWN_PER_REQUIREMENT),
        );
        Some((Failure::Unattested, said))
    }
}

fn dedup(items: impl Iterator<Item = String>) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    items.filter(|s| seen.insert(s.clone())).collect()
}
