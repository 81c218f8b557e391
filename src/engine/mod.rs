//! The engine: the only orchestrator of the pipeline, shared by every front end (the CLI's
//! `verify`, the admission webhook). One `Engine` serves concurrent requests (`&self`, Send +
//! Sync): registry clients and token cache, trust roots parsed once per policy, the compiled
//! policy (swapped atomically on reload), a bounded decision cache and single-flight.
//!
//! Stages of one check: plan (the rule, before any I/O) → resolve (tag → digest, cached
//! briefly) → [decision cache] → join or start the verification of that digest: discover (the
//! `.sig` tag and the referrers lookups run concurrently, within one fetch budget) → verify
//! (pure; each candidate as discovery hands it over, keeping the outcome, not the bytes) →
//! decide (the policy's evaluation). Every decision carries a [`Failure`] class when it is not a
//! plain allow. Planning hands out the rule with the policy snapshot it belongs to; every later
//! step uses that snapshot, whatever [`Engine::set_policy`] does meanwhile.

mod artifact;
mod cache;
mod decision;
mod flight;
mod platform;
mod verification;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::failure::Failure;
pub use decision::{Decision, PlatformPick, Timings};
pub use flight::Stage;

use crate::error_chain;
use crate::policy::{CompiledPolicy, NamespaceContext, NoMatch, Rule, RuleId, RuleMatch, Verdict};
use crate::reference::ImageRef;
use crate::registry::{ImageManifest, Registry, RegistryError, RequestScope};
use cache::{Caches, DecisionKey, Resolved};
use decision::for_reference;
use flight::{Boarded, Flights};

const SOURCE_ANNOTATION: &str = "org.opencontainers.image.source";
const REVISION_ANNOTATION: &str = "org.opencontainers.image.revision";

/// A manifest fetched for `reference`, or why not as a reason and its failure class: absent is
/// `not-found` (the reference itself), a registry failure its own class.
fn found(
    reference: &ImageRef,
    fetched: Result<Option<crate::registry::Manifest>, RegistryError>,
) -> Result<crate::registry::Manifest, (String, Failure)> {
    match fetched {
        Ok(Some(m)) => Ok(m),
        Ok(None) => Err((format!("{reference} was not found"), Failure::NotFound)),
        Err(e) => Err((
            format!("cannot resolve {reference}: {}", error_chain(&e)),
            e.failure(),
        )),
    }
}

/// Most bytes each of the engine's caches holds by default (`serve --cache-max-mib`).
pub const DEFAULT_CACHE_BYTES: u64 = 32 << 20;

/// Entries of a resolved index's manifest list kept for the platform note; a larger index is
/// resolved without it.
const MAX_KEPT_INDEX_ENTRIES: usize = 1024;

/// Tuning of the engine; the defaults suit the webhook, the CLI sets its own deadline.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// One deadline per check, covering every stage.
    pub deadline: Duration,
    /// How long an allow is remembered.
    pub positive_ttl: Duration,
    /// How long a deny on the artifact itself (unsigned, untrusted, ...) is remembered.
    pub negative_ttl: Duration,
    /// How long a decision that the registry prevented is remembered (zero: not at all).
    pub failure_ttl: Duration,
    /// How long a tag's digest is believed.
    pub resolve_ttl: Duration,
    /// Most decisions (and resolved tags) held.
    pub max_entries: u64,
    /// Most bytes each cache (decisions, resolved tags, tag lists) holds, about; what a
    /// registry controls is cut before it is kept (see [`crate::bounded`]).
    pub max_cache_bytes: u64,
    /// How long a verification may run in all, even after its askers' deadlines have passed
    /// (it then still fills the cache, so that a retry is answered at once).
    pub verification_budget: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            deadline: Duration::from_secs(8),
            positive_ttl: Duration::from_secs(600),
            negative_ttl: Duration::from_secs(30),
            failure_ttl: Duration::ZERO,
            resolve_ttl: Duration::from_secs(30),
            max_entries: 100_000,
            max_cache_bytes: DEFAULT_CACHE_BYTES,
            verification_budget: Duration::from_secs(30),
        }
    }
}

/// Counters a front end can export (metrics) or print (benchmarks).
#[derive(Debug, Default)]
pub struct EngineStats {
    /// Checks answered from the decision cache.
    pub cache_hits: AtomicU64,
    /// Checks the decision cache could not answer.
    pub cache_misses: AtomicU64,
    /// Checks that joined a verification already in flight for the same key.
    pub single_flight_joins: AtomicU64,
    /// Verifications actually run (discover + verify + decide).
    pub verifications: AtomicU64,
    /// Tags resolved from the resolve cache.
    pub resolve_hits: AtomicU64,
    /// Policies swapped in by [`Engine::set_policy`].
    pub policy_reloads: AtomicU64,
    /// Reloads that failed (see [`Engine::policy_reload_failed`]).
    pub policy_reload_failures: AtomicU64,
}

struct Inner {
    registry: Registry,
    policy: RwLock<Arc<CompiledPolicy>>,
    config: EngineConfig,
    caches: Caches,
    flights: Flights,
    stats: EngineStats,
}

/// The engine; cheap to clone (a handle on shared state).
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

/// The rule a check runs under: its identity, held with the policy snapshot it belongs to, so
/// that every later step (the verification, the Flux requirement) reads that very rule.
#[derive(Clone)]
struct Planned {
    policy: Arc<CompiledPolicy>,
    id: RuleId,
}

impl Planned {
    fn rule(&self) -> &Rule {
        self.policy.policy().rule(self.id)
    }
}

/// One check under way: its rule, its reference, and its deadline.
struct Check<'a> {
    planned: &'a Planned,
    reference: &'a ImageRef,
    started: Instant,
    deadline: Duration,
}

impl Check<'_> {
    /// What is left of the deadline.
    fn remaining(&self) -> Duration {
        self.deadline.saturating_sub(self.started.elapsed())
    }

    fn expired(&self) -> bool {
        self.started.elapsed() >= self.deadline
    }

    /// The rule's failed verdict, for a reason found before any signature was looked at.
    fn failed(&self, reason: String, failure: Failure) -> Decision {
        Decision::failed_under(self.reference, self.planned.rule(), reason, failure)
    }

    /// The deadline ran out at `stage`: said with the stage and the registry host.
    fn timed_out(&self, stage: Stage) -> Decision {
        let reference = self.reference;
        let host = reference
            .registry()
            .map_or_else(|| reference.name(), str::to_string);
        let reason = format!(
            "timed out {} {reference} (registry {host}) after {} s",
            stage.doing(),
            self.deadline.as_secs_f64()
        );
        self.failed(reason, Failure::Timeout)
    }
}

impl Engine {
    /// An engine asking `registry`, deciding under `policy`, tuned by `config`.
    pub fn new(registry: Registry, policy: CompiledPolicy, config: EngineConfig) -> Self {
        Engine {
            inner: Arc::new(Inner {
                registry,
                policy: RwLock::new(Arc::new(policy)),
                caches: Caches::new(&config),
                config,
                flights: Flights::default(),
                stats: EngineStats::default(),
            }),
        }
    }

    /// The registry client every check uses.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// The engine's tuning.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// The engine's counters.
    pub fn stats(&self) -> &EngineStats {
        &self.inner.stats
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<CompiledPolicy> {
        crate::sync::read(&self.inner.policy).clone()
    }

    /// Swap in a new policy; checks already running finish under the old one. Cached decisions
    /// of the old policy are not used again (the fingerprint is part of their key).
    pub fn set_policy(&self, policy: impl Into<Arc<CompiledPolicy>>) {
        let policy = policy.into();
        *crate::sync::write(&self.inner.policy) = policy;
        self.inner
            .stats
            .policy_reloads
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Record a reload that failed (the last good policy stays).
    pub fn policy_reload_failed(&self) {
        self.inner
            .stats
            .policy_reload_failures
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Number of decisions held in the cache (for metrics and benchmarks); expired ones are
    /// dropped first.
    pub fn cached_decisions(&self) -> u64 {
        self.inner.caches.count_decisions()
    }

    /// Decide on one reference within the configured deadline.
    pub async fn check(&self, reference: &ImageRef) -> Decision {
        self.check_with_deadline(reference, self.inner.config.deadline)
            .await
    }

    /// Decide on one reference within `deadline`. When the deadline runs out the answer is a
    /// deny (under enforce) naming the stage and host; the verification goes on in the
    /// background and fills the cache, so that a retry is answered at once.
    ///
    /// A platform manifest pinned under a tag that names a signed index
    /// (`repo:tag@sha256:<platform manifest>`) and found unsigned says so.
    pub async fn check_with_deadline(&self, reference: &ImageRef, deadline: Duration) -> Decision {
        self.check_in(reference, None, deadline).await
    }

    /// [`Engine::check_with_deadline`] for a check in `namespace` (its name and labels):
    /// rules whose namespace conditions hold there apply besides the cluster-wide ones; None
    /// (a cluster-scoped object, no `--namespace`) sees only rules that name no namespace.
    pub async fn check_in(
        &self,
        reference: &ImageRef,
        namespace: Option<&NamespaceContext>,
        deadline: Duration,
    ) -> Decision {
        match self.plan(reference, namespace) {
            Ok(planned) => self.check_planned(&planned, reference, deadline).await,
            Err(d) => *d,
        }
    }

    /// Plan: the rule for a reference checked in `namespace` in the policy in force, before
    /// any I/O; `Err` is the decision when there is none.
    fn plan(
        &self,
        reference: &ImageRef,
        namespace: Option<&NamespaceContext>,
    ) -> Result<Planned, Box<Decision>> {
        let policy = self.policy();
        let name = reference.name();
        // Where the check was, for the reasons below (made only when one is needed).
        let place = || match namespace {
            Some(ns) => format!(" in namespace {}", ns.name),
            None if policy.policy().has_namespace_rules() => " outside any namespace".into(),
            None => String::new(),
        };
        let id = match policy.policy().match_rule_in(&name, namespace) {
            RuleMatch::Rule(id, _) => id,
            RuleMatch::NoMatch(nm) => {
                let (verdict, failure) = match nm {
                    NoMatch::Deny => (Verdict::Deny, Some(Failure::NoMatch)),
                    NoMatch::Allow => (Verdict::Allow, None),
                    NoMatch::Warn => (Verdict::Warn, Some(Failure::NoMatch)),
                };
                let word = format!("{nm:?}").to_lowercase();
                let reason = format!(
                    "no rule of the policy matches {name}{} (noMatch: {word})",
                    place()
                );
                let d = Decision::early(reference, verdict, None, reason, failure);
                return Err(Box::new(d));
            }
            RuleMatch::Ambiguous(a, b) => {
                let reason = format!(
                    "policy error: rules {:?} and {:?} are equally specific for {name}{}",
                    a.name,
                    b.name,
                    place()
                );
                return Err(policy_error(reference, reason));
            }
            RuleMatch::LabelsNotRead(rule) => {
                let reason = format!(
                    "the labels of the namespace were not read, and rule {:?} selects \
                     namespaces by label: it may apply to {name}{}, so no rule can be chosen \
                     (the policy changed while this check began); retry",
                    rule.name,
                    place()
                );
                return Err(policy_error(reference, reason));
            }
        };
        Ok(Planned { policy, id })
    }

    /// The steps of one check under its planned rule: resolve → decision cache → join the
    /// verification in flight for that key, or start one. A decision that is not an allow
    /// says what the rule needs.
    async fn decide(
        &self,
        planned: &Planned,
        reference: &ImageRef,
        deadline: Duration,
    ) -> Decision {
        let mut d = self.decide_steps(planned, reference, deadline).await;
        d.say_needs(planned.rule());
        d
    }

    /// [`Engine::decide`]'s steps.
    async fn decide_steps(
        &self,
        planned: &Planned,
        reference: &ImageRef,
        deadline: Duration,
    ) -> Decision {
        let check = Check {
            planned,
            reference,
            started: Instant::now(),
            deadline,
        };
        let t0 = Instant::now();
        let resolved = match self.resolve_within(&check).await {
            Ok(r) => r,
            Err(d) => return *d,
        };
        let resolve_ms = ms(t0);
        let key = DecisionKey::new(
            &reference.name(),
            &resolved.digest,
            planned.id.index(),
            planned.policy.fingerprint(),
            &self.inner.registry.credential_id(reference),
        );
        let key = match &planned.rule().signatures_repository {
            Some(repository) => {
                let at = repository.of(&resolved.digest);
                let who = self.inner.registry.credential_id(&at);
                key.with_signatures_from(&repository.name(), &who)
            }
            None => key,
        };
        let rule = &planned.rule().name;
        if let Some(hit) = self
            .inner
            .caches
            .decision(&key, reference, &resolved.digest, rule)
        {
            self.inner.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
            return hit;
        }
        self.inner
            .stats
            .cache_misses
            .fetch_add(1, Ordering::Relaxed);
        let boarded = self.board(key, planned, reference, &resolved);
        let mut d = self.await_flight(&check, boarded).await;
        d.timings.resolve_ms = resolve_ms;
        d
    }

    /// Resolve: the digest (a pinned reference needs no registry call here), within the check's
    /// deadline; `Err` is the decision when it cannot be had.
    async fn resolve_within(&self, check: &Check<'_>) -> Result<Resolved, Box<Decision>> {
        let reference = check.reference;
        if let Some(d) = reference.digest() {
            return Ok(Resolved {
                digest: d.clone(),
                source: None,
                revision: None,
                lists: None,
            });
        }
        let resolving =
            crate::registry::with_deadline(check.started + check.deadline, self.resolve(reference));
        match tokio::time::timeout(check.remaining(), resolving).await {
            Err(_) => Err(Box::new(check.timed_out(Stage::Resolve))),
            // The registry's requests were cut at the same deadline.
            Ok(Err((_, Failure::Timeout))) if check.expired() => {
                Err(Box::new(check.timed_out(Stage::Resolve)))
            }
            Ok(Err((reason, failure))) => Err(Box::new(check.failed(reason, failure))),
            Ok(Ok(r)) => Ok(r),
        }
    }

    /// Single flight: one verification per key, whoever asks; it runs to the end even when
    /// every asker has given up, and fills the cache.
    fn board(
        &self,
        key: DecisionKey,
        planned: &Planned,
        reference: &ImageRef,
        resolved: &Resolved,
    ) -> Boarded {
        let boarded = self.inner.flights.board(key, |stage| {
            let verification = self.clone().verify_digest(
                planned.clone(),
                reference.clone(),
                resolved.clone(),
                key,
                stage,
            );
            // The verification runs in its first asker's request scope (the asker's pull
            // secrets, its turn at each registry host), with one deadline for all its registry
            // requests: the verification budget.
            let scope = RequestScope {
                deadline: Some(Instant::now() + self.inner.config.verification_budget),
                ..RequestScope::current()
            };
            let task = tokio::spawn(scope.run(verification));
            flight::follow(task, reference.to_string(), planned.rule().name.clone())
        });
        if boarded.joined {
            self.inner
                .stats
                .single_flight_joins
                .fetch_add(1, Ordering::Relaxed);
        }
        boarded
    }

    /// The flight's decision as this asker sees it, or the deadline's.
    async fn await_flight(&self, check: &Check<'_>, boarded: Boarded) -> Decision {
        let Boarded {
            flight,
            stage,
            joined,
        } = boarded;
        let stage_now = || Stage::from_u8(stage.load(Ordering::Relaxed));
        match tokio::time::timeout(check.remaining(), flight).await {
            // The verification's requests were cut at the same moment (the CLI's budget is
            // its deadline): say it as the deadline, with the stage.
            Ok(d) if d.failure == Some(Failure::Timeout) && check.expired() => {
                check.timed_out(stage_now())
            }
            Ok(d) => for_reference(&d, check.reference, joined),
            Err(_) => check.timed_out(stage_now()),
        }
    }

    /// Tag → digest (and the manifest's source annotations), cached for `resolve_ttl` per
    /// credential identity (what one namespace's pull secret resolved is not another's to
    /// learn). `Err` carries the reason and the failure class.
    async fn resolve(&self, reference: &ImageRef) -> Result<Resolved, (String, Failure)> {
        let key = (
            self.inner.registry.credential_id(reference),
            reference.to_string(),
        );
        if let Some(r) = self.inner.caches.resolved.get(&key) {
            self.inner
                .stats
                .resolve_hits
                .fetch_add(1, Ordering::Relaxed);
            return Ok(r);
        }
        let manifest = found(reference, self.inner.registry.get_manifest(reference).await)?;
        let (source, revision) = manifest_trace(&manifest, &reference.name());
        let lists = crate::platform::index_entries(&manifest.media_type, &manifest.bytes)
            .ok()
            .flatten()
            .filter(|l| l.len() <= MAX_KEPT_INDEX_ENTRIES)
            .map(Arc::from);
        let r = Resolved {
            digest: manifest.digest.clone(),
            source,
            revision,
            lists,
        };
        if !self.inner.config.resolve_ttl.is_zero() {
            self.inner.caches.resolved.insert(key, r.clone());
        }
        Ok(r)
    }
}

/// The deny of a check no rule can be chosen for because of the policy (failure `policy`).
fn policy_error(reference: &ImageRef, reason: String) -> Box<Decision> {
    let d = Decision::early(
        reference,
        Verdict::Deny,
        None,
        reason,
        Some(Failure::Policy),
    );
    Box::new(d)
}

/// Registry requests `fut` within `deadline` (each request cut to what is left). A failure
/// is "timed out {doing} after N s" or "cannot {step}: why", with its class.
async fn registry_step<T>(
    deadline: Duration,
    doing: &str,
    step: &str,
    fut: impl Future<Output = Result<T, RegistryError>>,
) -> Result<T, (String, Failure)> {
    let fut = crate::registry::with_deadline(Instant::now() + deadline, fut);
    match tokio::time::timeout(deadline, fut).await {
        Err(_) => Err((
            format!("timed out {doing} after {} s", deadline.as_secs_f64()),
            Failure::Timeout,
        )),
        Ok(Err(e)) => Err((format!("cannot {step}: {}", error_chain(&e)), e.failure())),
        Ok(Ok(v)) => Ok(v),
    }
}

/// The manifest's source and revision annotations, cut to what may be kept.
fn manifest_trace(m: &crate::registry::Manifest, place: &str) -> (Option<String>, Option<String>) {
    match ImageManifest::parse(m, place) {
        Ok(m) => {
            let a = m.annotations.unwrap_or_default();
            let kept = |key: &str| {
                a.get(key)
                    .map(|v| crate::bounded::cut(v, crate::bounded::MAX_KEPT_STRING).into_owned())
            };
            (kept(SOURCE_ANNOTATION), kept(REVISION_ANNOTATION))
        }
        Err(_) => (None, None),
    }
}

fn ms(t: Instant) -> f64 {
    ms_of(t.elapsed())
}

fn ms_of(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 100.0).round() / 100.0
}
