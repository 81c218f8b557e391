//! The decision: a verdict with its reasons, evidence, failure class and timings, as every
//! front end reports it; and what may be kept of one. Must not decide anything itself.

use serde::Serialize;

use crate::discover::PathTried;
use crate::failure::Failure;
use crate::policy::{AttestationEvidence, Rule, Verdict};
use crate::reference::ImageRef;
use crate::verify::VerifiedSignature;

/// How long each stage took.
#[derive(Debug, Clone, Copy, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Timings {
    /// Resolving the tag to a digest (0 for a pinned reference or a cache hit).
    pub resolve_ms: f64,
    /// Looking for signatures, less the time spent verifying what was found meanwhile.
    pub discover_ms: f64,
    /// Verifying the candidates and evaluating the rule.
    pub verify_ms: f64,
}

/// One verdict with the reasons and evidence behind it.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    /// The reference as the asker wrote it.
    pub reference: String,
    /// The digest decided on, once resolved.
    pub digest: Option<String>,
    /// Allow, deny or warn.
    pub verdict: Verdict,
    /// The name of the rule that applied (None: no rule did).
    pub rule: Option<String>,
    /// What that rule needs ([`Rule::needs`]), when the verdict is not allow: the deny or warn
    /// says what would have passed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub needs: Option<String>,
    /// Why, for people: the first reason is the main one.
    pub reasons: Vec<String>,
    /// The evidence: every signature that satisfied an authority.
    pub signatures: Vec<VerifiedSignature>,
    /// Every attestation that verified for one of the rule's `attestations:`, with what each of
    /// its conditions gave.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attestations: Vec<AttestationEvidence>,
    /// Why this is not a plain allow (see [`Failure`]); also set on a warn or audit allow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    /// `org.opencontainers.image.source` of the verified manifest (e.g. from `flux push artifact`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// `org.opencontainers.image.revision` of the verified manifest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Every place signatures were looked for, and what was there.
    pub discovery: Vec<PathTried>,
    /// How long each stage took.
    pub timings: Timings,
    /// Whether this decision came from the cache (or joined a verification already running).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cached: bool,
    /// With `--platform`: the platform asked for and the index whose entry was verified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<PlatformPick>,
}

/// Which entry of an index a decision is about (`verify --platform`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlatformPick {
    /// As asked: `os/arch[/variant]`.
    pub platform: String,
    /// The index's digest; the decision's `digest` is the platform manifest's.
    pub index: String,
}

impl Decision {
    /// A decision reached without looking at a signature: one reason, no evidence.
    pub fn without_signatures(
        reference: String,
        digest: Option<String>,
        verdict: Verdict,
        rule: Option<String>,
        reason: String,
        failure: Option<Failure>,
    ) -> Self {
        Decision {
            reference,
            digest,
            verdict,
            rule,
            needs: None,
            reasons: vec![reason],
            signatures: Vec::new(),
            attestations: Vec::new(),
            failure,
            source: None,
            revision: None,
            discovery: Vec::new(),
            timings: Timings::default(),
            cached: false,
            platform: None,
        }
    }

    /// A decision reached before any signature was looked at, under `rule` when one applies.
    pub(super) fn early(
        reference: &ImageRef,
        verdict: Verdict,
        rule: Option<&Rule>,
        reason: String,
        failure: Option<Failure>,
    ) -> Self {
        let mut d = Self::without_signatures(
            reference.to_string(),
            reference.digest().map(|d| d.to_string()),
            verdict,
            rule.map(|r| r.name.clone()),
            reason,
            failure,
        );
        if let Some(rule) = rule {
            d.say_needs(rule);
        }
        d
    }

    /// Say what `rule` (the rule this was decided under) needs, unless the verdict is allow or
    /// it is said already.
    pub(super) fn say_needs(&mut self, rule: &Rule) {
        if self.verdict != Verdict::Allow && self.needs.is_none() {
            self.needs = Some(rule.needs());
        }
    }

    /// `rule`'s failed verdict (deny under `enforce`), for a `failure` found before any
    /// signature was looked at.
    pub(super) fn failed_under(
        reference: &ImageRef,
        rule: &Rule,
        reason: String,
        failure: Failure,
    ) -> Self {
        let verdict = crate::policy::failed_verdict(rule.mode);
        Self::early(reference, verdict, Some(rule), reason, Some(failure))
    }

    /// An artifact that names nothing that can be checked (an unparsable reference): denied,
    /// `invalid`, under no rule.
    pub fn invalid(input: String, problem: String) -> Self {
        let failure = Some(Failure::Invalid);
        Self::without_signatures(input, None, Verdict::Deny, None, problem, failure)
    }
}

/// A shared decision as one requester sees it: its own spelling of the reference.
pub(super) fn for_reference(d: &Decision, reference: &ImageRef, cached: bool) -> Decision {
    let mut out = d.clone();
    out.reference = reference.to_string();
    out.cached = cached;
    out
}

/// A decision cut to what may be kept (see [`crate::bounded`]): reasons, evidence and the
/// manifest's annotations.
pub(super) fn bound_decision(d: &mut Decision) {
    use crate::bounded::{MAX_KEPT_STRING, MAX_SIGNATURE_ANNOTATIONS, MAX_SIGNATURES};
    if d.signatures.len() > MAX_SIGNATURES {
        let more = d.signatures.len() - MAX_SIGNATURES;
        d.signatures.truncate(MAX_SIGNATURES);
        d.reasons
            .push(format!("and {more} more verified signatures, not listed"));
    }
    for s in &mut d.signatures {
        s.bound(MAX_KEPT_STRING, MAX_SIGNATURE_ANNOTATIONS);
    }
    if d.attestations.len() > MAX_SIGNATURES {
        let more = d.attestations.len() - MAX_SIGNATURES;
        d.attestations.truncate(MAX_SIGNATURES);
        d.reasons
            .push(format!("and {more} more verified attestations, not listed"));
    }
    for a in &mut d.attestations {
        a.bound(MAX_KEPT_STRING);
    }
    crate::bounded::bound_reasons(&mut d.reasons);
    for x in [&mut d.source, &mut d.revision].into_iter().flatten() {
        crate::bounded::cut_in_place(x, MAX_KEPT_STRING);
    }
}
