//! One verification, as a flight runs it: discover (reading a pinned reference's manifest
//! meanwhile), verify each candidate as discovery hands it over, decide, and keep the decision.
//! Must not plan or resolve (the check did, and hands over the rule and the digest).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::cache::{DecisionKey, Resolved};
use super::decision::{Decision, Timings, bound_decision};
use super::flight::Stage;
use super::{Engine, Planned, found, manifest_trace, ms_of};
use crate::discover::{
    DiscoverError, Discovered, MAX_DISCOVERY_BYTES, NotExamined, Order, PathTried, Sought, Wanted,
    discover_each, summary,
};
use crate::error_chain;
use crate::failure::Failure;
use crate::policy::{
    AttestationOutcome, CandidateOutcome, CompiledPolicy, Rule, Verdict, evaluate,
    evaluate_attestations, failed_verdict,
};
use crate::reference::ImageRef;
use crate::registry::FetchBudget;
use crate::signature_place::signatures_of;
use crate::verify::{ArtifactDigests, Expectation};

/// What verifying candidates as they were found has gathered.
#[derive(Default)]
struct Verified {
    outcomes: Vec<(Order, CandidateOutcome)>,
    /// What each attestation candidate gave for the rule's `attestations:`.
    attestations: Vec<(Order, AttestationOutcome)>,
    /// The reasons of the signature locations not examined.
    not_examined: Vec<String>,
    /// The reasons of the attestation locations not examined.
    attestations_not_examined: Vec<String>,
    /// Time spent verifying.
    time: Duration,
}

/// What discovery found, if it could look: every place looked, and what was there.
type Looked = Result<Vec<PathTried>, DiscoverError>;

impl Engine {
    /// Discover, verify and decide for a digest under the planned rule; fills the cache and
    /// leaves the in-flight map (also when it panics).
    pub(super) async fn verify_digest(
        self,
        planned: Planned,
        reference: ImageRef,
        resolved: Resolved,
        key: DecisionKey,
        stage: Arc<AtomicU8>,
    ) -> Arc<Decision> {
        // Declared first, dropped last: the flight lands once the decision is kept (or when
        // the verification panics).
        let _landing = self.inner.flights.landing(key);
        self.inner
            .stats
            .verifications
            .fetch_add(1, Ordering::Relaxed);
        let digest = resolved.digest.clone();
        let mut decision = self
            .run_verification(&planned, &reference, resolved, &stage)
            .await;
        // What the registry and the signatures control is cut before it is kept.
        bound_decision(&mut decision);
        let decision = Arc::new(decision);
        let ttl = self.ttl_of(&decision);
        let rule = &planned.rule().name;
        self.inner
            .caches
            .remember(key, &decision, &digest, rule, ttl);
        decision
    }

    /// How long a decision is kept: allows and denies on the artifact itself by their TTLs,
    /// one the registry prevented by the failure TTL (zero by default: not at all).
    fn ttl_of(&self, decision: &Decision) -> Duration {
        let config = &self.inner.config;
        match decision.failure {
            None => config.positive_ttl,
            Some(f) if f.is_unreached() => config.failure_ttl,
            Some(_) if decision.verdict == Verdict::Allow => config.positive_ttl,
            Some(_) => config.negative_ttl,
        }
    }

    async fn run_verification(
        &self,
        planned: &Planned,
        reference: &ImageRef,
        resolved: Resolved,
        stage: &AtomicU8,
    ) -> Decision {
        let rule = planned.rule();
        let digest = resolved.digest.clone();
        let pinned = reference.with_digest(digest.clone());
        let t1 = Instant::now();
        stage.store(Stage::Discover as u8, Ordering::Relaxed);
        let expect = Expectation {
            digest: digest.clone(),
            repository: reference.name(),
            signed_identity: rule.signed_identity.clone(),
            annotations: rule.annotations.clone(),
        };
        // Only discovery moves to a rule's signatures repository; the digest is the image's.
        let signatures_at = signatures_of(reference, &digest, rule.signatures_repository.as_ref());
        let ((found, verified), manifest) = tokio::join!(
            self.discover_and_verify(&planned.policy, rule, &signatures_at, &expect),
            self.manifest_while_discovering(reference, &pinned, &resolved)
        );
        let (source, revision) = match manifest {
            Ok(trace) => trace,
            Err((reason, failure)) => {
                return Decision::failed_under(reference, rule, reason, failure);
            }
        };
        let mut decision = Decision {
            reference: reference.to_string(),
            digest: Some(digest.to_string()),
            verdict: Verdict::Deny,
            rule: Some(rule.name.clone()),
            needs: None,
            reasons: Vec::new(),
            signatures: Vec::new(),
            attestations: Vec::new(),
            failure: None,
            source,
            revision,
            discovery: Vec::new(),
            timings: Timings {
                discover_ms: ms_of(t1.elapsed().saturating_sub(verified.time)),
                ..Timings::default()
            },
            cached: false,
            platform: None,
        };
        let paths = match found {
            Ok(paths) => in_repository(paths, rule),
            Err(e) => {
                decision.verdict = failed_verdict(rule.mode);
                decision.failure = Some(discover_failure(&e));
                decision.reasons = vec![format!(
                    "cannot tell whether {reference} is signed: {}",
                    error_chain(&e)
                )];
                return decision;
            }
        };
        stage.store(Stage::Verify as u8, Ordering::Relaxed);
        judge(&mut decision, rule, reference, paths, verified);
        decision
    }

    /// Discovery of `pinned`'s signatures, each candidate verified against `rule` as it is
    /// handed over (pure, quick): its outcome is kept, its bytes are not.
    async fn discover_and_verify(
        &self,
        policy: &CompiledPolicy,
        rule: &Rule,
        pinned: &ImageRef,
        expect: &Expectation,
    ) -> (Looked, Verified) {
        let verified = Mutex::new(Verified::default());
        let digests = ArtifactDigests::of_digest(&expect.digest);
        let now = SystemTime::now();
        let sink = |order: Order, found: Discovered| {
            let t = Instant::now();
            let said = |u: &NotExamined| {
                format!("{}: not examined: {}", u.location, error_chain(&u.reason))
            };
            match &found {
                // Verified and its conditions evaluated here: the statement's bytes go with it.
                Discovered::Attestation(c) => {
                    let outcome =
                        off_the_worker(|| policy.attestation_outcome(rule, &digests, c, now));
                    let mut v = crate::sync::lock(&verified);
                    v.attestations.push((order, outcome));
                    v.time += t.elapsed();
                }
                Discovered::NotExamined(u) if u.sought == Sought::Attestation => {
                    let mut v = crate::sync::lock(&verified);
                    v.attestations_not_examined.push(said(u));
                }
                _ => {
                    let outcome = policy.outcome(rule, expect, &found);
                    let mut v = crate::sync::lock(&verified);
                    if let Discovered::NotExamined(u) = &found {
                        v.not_examined.push(said(u));
                    }
                    v.outcomes.push((order, outcome));
                    v.time += t.elapsed();
                }
            }
        };
        let budget = FetchBudget::new(MAX_DISCOVERY_BYTES);
        let registry = &self.inner.registry;
        let wanted = if rule.attestations.is_empty() {
            Wanted::Signatures
        } else {
            let types = rule.attestations.iter().map(|a| a.predicate_type.clone());
            match rule.threshold {
                // No signature is required (verify-attestation): the `.sig` tag is not read.
                0 => Wanted::OnlyAttestations(types.collect()),
                _ => Wanted::Attestations(types.collect()),
            }
        };
        let found = discover_each(registry, pinned, &expect.digest, &budget, &wanted, &sink).await;
        (found, crate::sync::into_inner(verified))
    }

    /// The manifest's source annotations: a tag's from its resolution; a pinned reference's
    /// manifest is read (it must exist) while the signatures are looked for, not before.
    async fn manifest_while_discovering(
        &self,
        reference: &ImageRef,
        pinned: &ImageRef,
        resolved: &Resolved,
    ) -> Result<(Option<String>, Option<String>), (String, Failure)> {
        if reference.digest().is_none() {
            return Ok((resolved.source.clone(), resolved.revision.clone()));
        }
        let m = found(reference, self.inner.registry.get_manifest(pinned).await)?;
        Ok(manifest_trace(&m, &reference.name()))
    }
}

/// The rule's verdict on the candidates found at `paths`, and their evidence.
fn judge(
    decision: &mut Decision,
    rule: &Rule,
    reference: &ImageRef,
    paths: Vec<PathTried>,
    verified: Verified,
) {
    let t2 = Instant::now();
    let Verified {
        mut outcomes,
        mut attestations,
        not_examined,
        attestations_not_examined,
        time: verifying,
    } = verified;
    outcomes.sort_by_key(|(order, _)| *order);
    attestations.sort_by_key(|(order, _)| *order);
    let looked = summary(&paths);
    decision.discovery = paths;
    let mut eval = evaluate(
        rule,
        outcomes.into_iter().map(|(_, o)| o).collect(),
        &looked,
    );
    let attested = attestations.into_iter().map(|(_, o)| o).collect();
    evaluate_attestations(rule, &mut eval, attested);
    decision.timings.verify_ms = ms_of(verifying + t2.elapsed());
    decision.verdict = eval.verdict;
    decision.reasons = eval.reasons;
    decision.signatures = eval.evidence;
    decision.attestations = eval.attestations;
    decision.failure = eval.failure;
    // Once the signatures held, only the attestations' locations could change the verdict.
    let on_attestations = matches!(
        decision.failure,
        Some(Failure::Unattested | Failure::Condition)
    );
    if on_attestations {
        note_not_examined(
            decision,
            reference,
            attestations_not_examined,
            Sought::Attestation,
        );
        list_not_examined(decision, not_examined, "signature");
    } else {
        note_not_examined(decision, reference, not_examined, Sought::Signature);
        list_not_examined(decision, attestations_not_examined, "attestation");
    }
}

/// Locations discovery could not examine: when the rule failed on what they hold (`sought`:
/// the signatures, or the attestations once the signatures held), they might have satisfied it
/// (the registry's content stood in the way of a verdict); otherwise they are still said.
fn note_not_examined(
    decision: &mut Decision,
    reference: &ImageRef,
    not_examined: Vec<String>,
    sought: Sought,
) {
    let (noun, verb) = match sought {
        Sought::Attestation => ("attestation", "attested"),
        _ => ("signature", "signed"),
    };
    if not_examined.is_empty() {
        return;
    }
    if decision.failure.is_some() {
        decision.failure = Some(Failure::Registry);
        decision.reasons.insert(
            0,
            format!(
                "cannot tell whether {reference} is {verb}: {} {noun} location(s) could not \
                 be examined, and nothing else satisfied the rule",
                not_examined.len()
            ),
        );
    } else {
        list_not_examined(decision, not_examined, noun);
    }
}

/// The first few locations not examined, as rejected candidates (the discovery notes name
/// every one).
fn list_not_examined(decision: &mut Decision, not_examined: Vec<String>, noun: &str) {
    const LISTED: usize = 8;
    let more = not_examined.len().saturating_sub(LISTED);
    decision
        .reasons
        .extend(not_examined.into_iter().take(LISTED));
    if more > 0 {
        decision.reasons.push(format!(
            "and {more} more {noun} location(s) not examined (see the discovery notes)"
        ));
    }
}

/// Verifying an attestation (a statement of tens of MiB) and evaluating its conditions (up to
/// the CEL cost limit, tenths of a second) is long synchronous work: on the multi-threaded
/// runtime (the webhook) the worker hands its other tasks over first.
fn off_the_worker<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Each place looked at named with the rule's signatures repository, when it has one (the
/// notes and the deny reasons say where the signatures were looked for).
fn in_repository(mut paths: Vec<PathTried>, rule: &Rule) -> Vec<PathTried> {
    if let Some(repository) = &rule.signatures_repository {
        for p in &mut paths {
            p.path = format!("{} in {repository}", p.path);
        }
    }
    paths
}

fn discover_failure(e: &DiscoverError) -> Failure {
    match e {
        DiscoverError::Registry { source, .. } => source.failure(),
    }
}
