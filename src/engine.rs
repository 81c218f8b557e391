//! The engine: the only orchestrator of the pipeline, shared by every front end (the CLI's
//! `verify`, the admission webhook). One `Engine` serves concurrent requests (`&self`, Send +
//! Sync): registry clients and token cache, trust roots parsed once per policy, the compiled
//! policy (swapped atomically on reload), a bounded decision cache and single-flight.
//!
//! Stages of one check: plan (the rule, before any I/O) → resolve (tag → digest, cached
//! briefly) → [decision cache] → discover (the `.sig` tag and the referrers lookups run
//! concurrently, within one fetch budget) → verify (pure; each candidate as discovery hands it
//! over, keeping the outcome, not the bytes) → decide (the policy's evaluation). Every decision
//! carries a [`Failure`] class when it is not a plain allow.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures_util::FutureExt as _;
use futures_util::future::Shared;
use serde::Serialize;

use crate::bundle::{BundleAuthority, REKOR_BUNDLE_ANNOTATION};
use crate::discover::{
    DiscoverError, Discovered, MAX_DISCOVERY_BYTES, Order, PathTried, discover_each, summary,
};
use crate::extract::{Artifact, Source};
pub use crate::failure::Failure;
use crate::platform::Platform;
use crate::policy::{
    Authority, AuthorityKind, CandidateOutcome, FluxVerification, NoMatch, Policy, Rule, RuleMatch,
    Tlog, Verdict, evaluate, failed_verdict,
};
use crate::reference::{Digest, ImageRef};
use crate::registry::{CredentialId, FetchBudget, ImageManifest, Registry, RegistryError};
use crate::trust::TrustRoot;
use crate::verify::{
    Expectation, KeyAuthority, KeylessAuthority, PreparedBundle, PreparedSignature, Rejection,
    RejectionKind, VerifiedSignature, verify_attached_bundle, verify_key_signature,
    verify_key_signature_logged, verify_keyless_signature,
};

const SOURCE_ANNOTATION: &str = "org.opencontainers.image.source";
const REVISION_ANNOTATION: &str = "org.opencontainers.image.revision";

/// How long each stage took.
#[derive(Debug, Clone, Copy, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Timings {
    pub resolve_ms: f64,
    pub discover_ms: f64,
    pub verify_ms: f64,
}

/// One verdict with the reasons and evidence behind it.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub reference: String,
    pub digest: Option<String>,
    pub verdict: Verdict,
    pub rule: Option<String>,
    pub reasons: Vec<String>,
    pub signatures: Vec<VerifiedSignature>,
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
            reasons: vec![reason],
            signatures: Vec::new(),
            failure,
            source: None,
            revision: None,
            discovery: Vec::new(),
            timings: Timings::default(),
            cached: false,
            platform: None,
        }
    }

    fn early(
        reference: &ImageRef,
        verdict: Verdict,
        rule: Option<&Rule>,
        reason: String,
        failure: Option<Failure>,
    ) -> Self {
        Self::without_signatures(
            reference.to_string(),
            reference.digest().map(|d| d.to_string()),
            verdict,
            rule.map(|r| r.name.clone()),
            reason,
            failure,
        )
    }
}

use crate::error_chain;

/// The class of a registry failure.
pub fn registry_failure(e: &RegistryError) -> Failure {
    e.failure()
}

fn discover_failure(e: &DiscoverError) -> Failure {
    match e {
        DiscoverError::Registry { source, .. } => registry_failure(source),
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

/// The largest file a policy load reads: the policy itself, a key, a `trusted_root.json`
/// (real ones are a few KiB). A larger file is a load error, not read on.
pub const MAX_POLICY_FILE_BYTES: u64 = 4 << 20;

/// One file a policy load read: the path it opened (relative paths joined to the policy's
/// directory; symlinks, such as a ConfigMap mount's `..data`, not resolved) and the SHA-256 of
/// the bytes it read, `None` when it could not be read. `serve` re-hashes exactly these paths to
/// see whether the policy must be loaded again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySource {
    /// The path as opened.
    pub path: std::path::PathBuf,
    /// The SHA-256 of its bytes; `None`: it could not be read (missing, too large, ...).
    pub digest: Option<Digest>,
}

impl PolicySource {
    /// Read `path` now (at most [`MAX_POLICY_FILE_BYTES`]) and record its digest.
    pub fn hash_now(path: &std::path::Path) -> Self {
        PolicySource {
            path: path.to_path_buf(),
            digest: read_policy_file(path).ok().map(|b| Digest::sha256_of(&b)),
        }
    }
}

/// Read a file a policy names, refusing one over [`MAX_POLICY_FILE_BYTES`].
pub fn read_policy_file(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_POLICY_FILE_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_POLICY_FILE_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {MAX_POLICY_FILE_BYTES} bytes"),
        ));
    }
    Ok(bytes)
}

/// A policy load: the compiled policy or why not, and every file the load read (the policy
/// first), from the same read.
pub struct PolicyLoad {
    /// The policy, or why it cannot be used.
    pub policy: Result<CompiledPolicy, PolicyLoadError>,
    /// Every file read, in the order read, each once.
    pub sources: Vec<PolicySource>,
}

/// The fingerprint of a policy load: the policy text's digest, then each file it named (as
/// named) with the digest of its content, separated so that no two loads run together.
fn fingerprint_of(policy: &Digest, named: &[(std::path::PathBuf, PolicySource)]) -> String {
    let mut log = policy.as_str().as_bytes().to_vec();
    for (p, s) in named {
        log.push(0);
        log.extend_from_slice(p.as_os_str().as_encoded_bytes());
        log.push(0);
        log.extend_from_slice(s.digest.as_ref().map_or("-", |d| d.as_str()).as_bytes());
    }
    Digest::sha256_of(&log).to_string()
}

/// A policy with its trust roots parsed (each with its verifier) and a fingerprint of all of it.
pub struct CompiledPolicy {
    policy: Policy,
    /// sha256 over the policy text and every file it read (keys, trust roots).
    fingerprint: Arc<str>,
    /// The files it was loaded from, as read (empty for a policy not loaded from files).
    sources: Arc<[PolicySource]>,
}

impl CompiledPolicy {
    /// Compile a parsed policy; its trust roots were parsed by [`Policy::parse`], so a bad
    /// trusted_root.json is a configuration error at start-up (or at reload), not a denial
    /// later. Nothing is fetched. `fingerprint` identifies the policy's content (see
    /// [`CompiledPolicy::from_file`]).
    pub fn new(policy: Policy, fingerprint: String) -> Self {
        CompiledPolicy {
            policy,
            fingerprint: fingerprint.into(),
            sources: Arc::new([]),
        }
    }

    /// Read, validate and compile a policy file; the fingerprint covers the file and every file
    /// it names, so a changed key or trust root is a new policy for the cache.
    pub fn from_file(path: &std::path::Path) -> Result<Self, PolicyLoadError> {
        Self::load(path).policy
    }

    /// [`CompiledPolicy::from_file`], with every file the load read (also when it failed: a
    /// file that was missing is then watched for too).
    pub fn load(path: &std::path::Path) -> PolicyLoad {
        let text = match read_policy_file(path) {
            Ok(t) => t,
            Err(source) => {
                return PolicyLoad {
                    policy: Err(PolicyLoadError::Policy(crate::policy::PolicyError::Read {
                        file: path.to_path_buf(),
                        source,
                    })),
                    sources: vec![PolicySource {
                        path: path.to_path_buf(),
                        digest: None,
                    }],
                };
            }
        };
        let policy_digest = Digest::sha256_of(&text);
        // (path as named, path as opened, digest) of every file the policy names, as read.
        let named = std::cell::RefCell::new(Vec::<(std::path::PathBuf, PolicySource)>::new());
        let base = path.parent().unwrap_or(std::path::Path::new("."));
        let policy = match String::from_utf8(text) {
            Err(_) => Err(PolicyLoadError::NotUtf8 {
                file: path.to_path_buf(),
            }),
            Ok(text) => Policy::parse(&text, path, &|p: &std::path::Path| {
                let opened = base.join(p);
                let read = read_policy_file(&opened);
                named.borrow_mut().push((
                    p.to_path_buf(),
                    PolicySource {
                        path: opened,
                        digest: read.as_ref().ok().map(|b| Digest::sha256_of(b)),
                    },
                ));
                String::from_utf8(read?).map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text")
                })
            })
            .map_err(PolicyLoadError::Policy),
        };
        let named = named.into_inner();
        let fingerprint = fingerprint_of(&policy_digest, &named);
        let mut sources = vec![PolicySource {
            path: path.to_path_buf(),
            digest: Some(policy_digest),
        }];
        for (_, s) in named {
            if !sources.contains(&s) {
                sources.push(s);
            }
        }
        PolicyLoad {
            policy: policy.map(|policy| CompiledPolicy {
                policy,
                fingerprint: fingerprint.into(),
                sources: sources.clone().into(),
            }),
            sources,
        }
    }

    /// The files this policy was loaded from, with their digests as read.
    pub fn sources(&self) -> &[PolicySource] {
        &self.sources
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// A trust root the policy names (parsed when the policy was read), or for an authority
    /// that names none the embedded public-good root (parsed once per process).
    fn root(&self, name: Option<&str>) -> Option<&TrustRoot> {
        match name {
            Some(n) => self
                .policy
                .trust_roots
                .iter()
                .find(|tr| tr.name == n)
                .map(|tr| tr.root.as_ref()),
            None => TrustRoot::embedded_shared().ok().map(|r| r.as_ref()),
        }
    }

    /// The trust root an authority names, or why it cannot be had.
    fn root_for(
        &self,
        name: &Option<String>,
        location: &str,
        authority: &str,
    ) -> Result<&TrustRoot, Rejection> {
        self.root(name.as_deref()).ok_or_else(|| {
            let kind = RejectionKind::TrustRootUnavailable {
                authority: authority.to_string(),
                root: name.as_deref().unwrap_or("embedded").to_string(),
            };
            Rejection::new(location, kind)
        })
    }

    /// One attached Sigstore bundle against one authority.
    fn verify_one_bundle(
        &self,
        c: &PreparedBundle<'_>,
        a: &Authority,
        expect: &Expectation,
    ) -> Result<VerifiedSignature, Rejection> {
        let (who, trust_root) = match &a.kind {
            AuthorityKind::Key {
                key,
                tlog,
                trust_root,
            } => {
                let logged = c.has_tlog_entries();
                let who = match (tlog, logged) {
                    (Tlog::Required, _) | (Tlog::Optional, true) => BundleAuthority::Key(key),
                    _ => BundleAuthority::KeyWithoutTlog(key),
                };
                (who, trust_root)
            }
            AuthorityKind::Keyless {
                trust_root,
                identities,
                tlog,
            } => {
                keyless_needs_tlog(*tlog, &c.candidate().location, &a.name)?;
                (BundleAuthority::Identities(identities), trust_root)
            }
        };
        let location = &c.candidate().location;
        let root = self.root_for(trust_root, location, &a.name)?;
        verify_attached_bundle(c, &a.name, who, root, expect)
    }

    /// One legacy candidate against one authority.
    fn verify_one(
        &self,
        p: &PreparedSignature<'_>,
        a: &Authority,
        expect: &Expectation,
    ) -> Result<VerifiedSignature, Rejection> {
        let c = p.candidate();
        match &a.kind {
            AuthorityKind::Key {
                key,
                tlog,
                trust_root,
            } => {
                let authority = KeyAuthority { name: &a.name, key };
                let logged = c.annotations.contains_key(REKOR_BUNDLE_ANNOTATION);
                match (tlog, logged) {
                    (Tlog::Required, _) | (Tlog::Optional, true) => {
                        let root = self.root_for(trust_root, &c.location, &a.name)?;
                        verify_key_signature_logged(p, authority, root, expect)
                    }
                    _ => verify_key_signature(c, authority, expect),
                }
            }
            AuthorityKind::Keyless {
                trust_root,
                identities,
                tlog,
            } => {
                keyless_needs_tlog(*tlog, &c.location, &a.name)?;
                let root = self.root_for(trust_root, &c.location, &a.name)?;
                verify_keyless_signature(
                    p,
                    KeylessAuthority {
                        name: &a.name,
                        identities,
                        root,
                    },
                    expect,
                )
            }
        }
    }

    /// Verify one thing discovery found against every authority of `rule` (pure: no I/O).
    /// A candidate is prepared (its bundle form parsed) once, for all the authorities; a
    /// location discovery could not examine is rejected by each, with its reason.
    fn outcome(&self, rule: &Rule, expect: &Expectation, found: &Discovered) -> CandidateOutcome {
        match found {
            Discovered::Signature(c) => {
                let prepared = PreparedSignature::new(c);
                CandidateOutcome {
                    location: c.location.clone(),
                    results: rule
                        .authorities
                        .iter()
                        .map(|a| self.verify_one(&prepared, a, expect))
                        .collect(),
                }
            }
            Discovered::Bundle(c) => {
                let prepared = PreparedBundle::new(c);
                CandidateOutcome {
                    location: c.location.clone(),
                    results: rule
                        .authorities
                        .iter()
                        .map(|a| self.verify_one_bundle(&prepared, a, expect))
                        .collect(),
                }
            }
            Discovered::Unexamined(u) => {
                let detail = error_chain(&u.reason);
                CandidateOutcome {
                    location: u.location.clone(),
                    results: rule
                        .authorities
                        .iter()
                        .map(|_| {
                            let detail = detail.clone();
                            let kind = RejectionKind::Unexamined { detail };
                            Err(Rejection::new(u.location.clone(), kind))
                        })
                        .collect(),
                }
            }
        }
    }
}

/// A policy file that could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyLoadError {
    #[error(transparent)]
    Policy(crate::policy::PolicyError),
    #[error("policy {}: the file is not UTF-8 text", file.display())]
    NotUtf8 { file: std::path::PathBuf },
}

/// What a decision depends on: the repository (legacy signatures live there, and
/// `matchRepository` compares its name), the digest, the rule (its index: the fingerprint pins
/// the policy), the policy's fingerprint, and who the registry was asked as (the identity of the
/// credential for the repository: a decision reached with one namespace's pull secret is never
/// served to a request that could not reach it itself); held as the SHA-256 of the five, each
/// length-prefixed, so a key is 32 bytes however long the names are. Two different keys are
/// one only through a SHA-256 collision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct DecisionKey([u8; 32]);

impl DecisionKey {
    fn new(
        repository: &str,
        digest: &Digest,
        rule: usize,
        policy: &str,
        who: &CredentialId,
    ) -> Self {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        let rule = (rule as u64).to_be_bytes();
        for field in [
            repository.as_bytes(),
            digest.as_str().as_bytes(),
            &rule[..],
            policy.as_bytes(),
            who.as_bytes(),
        ] {
            ctx.update(&(field.len() as u64).to_be_bytes());
            ctx.update(field);
        }
        let mut key = [0u8; 32];
        for (k, b) in key.iter_mut().zip(ctx.finish().as_ref()) {
            *k = *b;
        }
        DecisionKey(key)
    }
}

/// A cached decision, compact: what a later asker gets back, not what belonged to the asker
/// that filled it (its spelling of the reference, timings, discovery notes). The digest and
/// the rule's name are not held (the key pins both; the asker knows them), the reasons are one
/// string, and the evidence is behind one pointer that is empty for a decision without any.
/// Cloning it (every hit) copies two pointers.
#[derive(Clone)]
struct Cached {
    /// When the entry stops being used, in nanoseconds since the engine's `epoch`.
    expires: u64,
    /// About how many bytes it holds (its weight in the cache).
    bytes: u64,
    verdict: Verdict,
    failure: Option<Failure>,
    /// Whether the decision named the digest, and the rule.
    has_digest: bool,
    has_rule: bool,
    /// The reasons, packed (see [`pack_reasons`]).
    reasons: Arc<str>,
    /// Signatures and the manifest's source annotations; None when there are none.
    evidence: Option<Arc<CachedEvidence>>,
}

struct CachedEvidence {
    signatures: Box<[VerifiedSignature]>,
    source: Option<Box<str>>,
    revision: Option<Box<str>>,
}

impl Cached {
    /// The compact form of `d`, decided for `digest` under the rule named `rule`; None when it
    /// cannot be given back exactly (a decision naming another digest or rule: not cached).
    fn new(d: &Decision, digest: &Digest, rule: &str, expires: u64) -> Option<Self> {
        if d.digest.as_deref().is_some_and(|x| x != digest.as_str())
            || d.rule.as_deref().is_some_and(|r| r != rule)
        {
            return None;
        }
        let evidence = if d.signatures.is_empty() && d.source.is_none() && d.revision.is_none() {
            None
        } else {
            Some(Arc::new(CachedEvidence {
                signatures: d.signatures.clone().into_boxed_slice(),
                source: d.source.as_deref().map(Into::into),
                revision: d.revision.as_deref().map(Into::into),
            }))
        };
        let reasons: Arc<str> = pack_reasons(&d.reasons).into();
        let evidence_bytes = evidence.as_deref().map_or(0, |e| {
            64 + e.signatures.iter().map(|s| s.approx_bytes()).sum::<usize>()
                + e.source.as_deref().map_or(0, str::len)
                + e.revision.as_deref().map_or(0, str::len)
        });
        Some(Cached {
            expires,
            bytes: (96 + reasons.len() + evidence_bytes) as u64,
            verdict: d.verdict,
            failure: d.failure,
            has_digest: d.digest.is_some(),
            has_rule: d.rule.is_some(),
            reasons,
            evidence,
        })
    }

    /// The decision again, for `reference` (resolved to `digest`) under the rule named `rule`.
    fn decision(&self, reference: &ImageRef, digest: &Digest, rule: &str) -> Decision {
        let evidence = self.evidence.as_deref();
        Decision {
            reference: reference.to_string(),
            digest: self.has_digest.then(|| digest.to_string()),
            verdict: self.verdict,
            rule: self.has_rule.then(|| rule.to_string()),
            reasons: unpack_reasons(&self.reasons),
            signatures: evidence.map_or_else(Vec::new, |e| e.signatures.to_vec()),
            failure: self.failure,
            source: evidence.and_then(|e| e.source.as_deref().map(str::to_string)),
            revision: evidence.and_then(|e| e.revision.as_deref().map(str::to_string)),
            discovery: Vec::new(),
            timings: Timings::default(),
            cached: true,
            platform: None,
        }
    }
}

/// Reasons as one string: each as its length in bytes (decimal), `:`, and its text.
fn pack_reasons(reasons: &[String]) -> String {
    let mut out = String::with_capacity(reasons.iter().map(|r| r.len() + 4).sum());
    for r in reasons {
        out.push_str(&r.len().to_string());
        out.push(':');
        out.push_str(r);
    }
    out
}

/// The reasons [`pack_reasons`] packed. Anything it did not write is one reason, as it is.
fn unpack_reasons(packed: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = packed;
    while !rest.is_empty() {
        let one = rest.split_once(':').and_then(|(len, tail)| {
            let n = len.parse::<usize>().ok()?;
            Some((tail.get(..n)?, tail.get(n..)?))
        });
        match one {
            Some((reason, tail)) => {
                out.push(reason.to_string());
                rest = tail;
            }
            None => {
                out.push(rest.to_string());
                break;
            }
        }
    }
    out
}

/// The weight of a cached decision: its bytes, and at least the floor (the cache's bytes over
/// its most entries), so that the cache is bounded in entries too.
#[derive(Clone, Copy)]
struct CachedWeight(u64);

impl quick_cache::Weighter<DecisionKey, Cached> for CachedWeight {
    fn weight(&self, _: &DecisionKey, v: &Cached) -> u64 {
        v.bytes.max(self.0)
    }
}

#[derive(Clone)]
struct Resolved {
    digest: Digest,
    source: Option<String>,
    revision: Option<String>,
    /// When the tag names an index: the manifests it lists (for the message of a platform
    /// manifest pinned under that tag and found unsigned).
    lists: Option<Arc<[crate::platform::IndexEntry]>>,
}

impl Resolved {
    /// About how many bytes it holds (its weight in the resolve cache).
    fn approx_bytes(&self) -> usize {
        let text = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        let lists = self.lists.as_deref().map_or(0, |l| {
            l.iter()
                .map(|e| {
                    let p = e.platform.as_ref().map_or(0, |p| {
                        p.os.len() + p.architecture.len() + text(&p.variant) + 72
                    });
                    160 + e.media_type.len() + p
                })
                .sum()
        });
        160 + text(&self.source) + text(&self.revision) + lists
    }
}

/// Where a running check is, for the deadline's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Stage {
    Plan = 0,
    Resolve = 1,
    Discover = 2,
    Verify = 3,
}

impl Stage {
    fn from_u8(v: u8) -> Stage {
        match v {
            1 => Stage::Resolve,
            2 => Stage::Discover,
            3 => Stage::Verify,
            _ => Stage::Plan,
        }
    }
    fn doing(self) -> &'static str {
        match self {
            Stage::Plan => "planning",
            Stage::Resolve => "resolving",
            Stage::Discover => "discovering signatures of",
            Stage::Verify => "verifying",
        }
    }
}

type Flight = Shared<Pin<Box<dyn Future<Output = Arc<Decision>> + Send>>>;

/// Counters a front end can export (metrics) or print (benchmarks).
#[derive(Debug, Default)]
pub struct EngineStats {
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    /// Checks that joined a verification already in flight for the same key.
    pub single_flight_joins: AtomicU64,
    /// Verifications actually run (discover + verify + decide).
    pub verifications: AtomicU64,
    pub resolve_hits: AtomicU64,
    pub policy_reloads: AtomicU64,
    pub policy_reload_failures: AtomicU64,
}

struct Inner {
    registry: Registry,
    policy: RwLock<Arc<CompiledPolicy>>,
    config: EngineConfig,
    /// Bounded by `max_entries`; an expired entry is never used, and is dropped when it is met
    /// or when the cache is counted.
    decisions: quick_cache::sync::Cache<DecisionKey, Cached, CachedWeight>,
    /// What `Cached::expires` counts from.
    epoch: Instant,
    /// By who asked (the credential identity) and the reference as written.
    resolved: moka::sync::Cache<(CredentialId, String), Resolved>,
    /// By who asked and the repository.
    tags: moka::sync::Cache<(CredentialId, String), Arc<Vec<String>>>,
    inflight: Mutex<HashMap<DecisionKey, (Flight, Arc<AtomicU8>)>>,
    stats: EngineStats,
}

/// The engine; cheap to clone (a handle on shared state).
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl Engine {
    pub fn new(registry: Registry, policy: CompiledPolicy, config: EngineConfig) -> Self {
        // One shard: the bound is exact (shards split it evenly, so one shard would fill and
        // evict while others had room), and a hit takes the shard's lock for reading only.
        // Bounded in bytes and in entries: each entry weighs its bytes, and at least an equal
        // share of the bytes per entry allowed.
        let max = usize::try_from(config.max_entries.max(1)).unwrap_or(usize::MAX);
        let bytes = config.max_cache_bytes.max(1 << 16);
        let floor = (bytes / config.max_entries.max(1)).max(1);
        let weigher = CachedWeight(floor);
        let decisions = quick_cache::OptionsBuilder::new()
            .estimated_items_capacity(max.min(1 << 20))
            .weight_capacity(bytes)
            .shards(1)
            .build()
            .map(|options| {
                quick_cache::sync::Cache::with_options(
                    options,
                    weigher,
                    quick_cache::DefaultHashBuilder::default(),
                    quick_cache::sync::DefaultLifecycle::default(),
                )
            })
            .unwrap_or_else(|_| quick_cache::sync::Cache::with_weighter(max, bytes, weigher));
        let weight = move |n: usize| u32::try_from((n as u64).max(floor)).unwrap_or(u32::MAX);
        let resolved = moka::sync::Cache::builder()
            .max_capacity(bytes)
            .weigher(move |k: &(CredentialId, String), r: &Resolved| {
                weight(64 + k.1.len() + r.approx_bytes())
            })
            .time_to_live(config.resolve_ttl.max(Duration::from_millis(1)))
            .build();
        let tag_floor = (bytes / config.max_entries.clamp(1, 10_000)).max(1);
        let tags = moka::sync::Cache::builder()
            .max_capacity(bytes)
            .weigher(move |k: &(CredentialId, String), t: &Arc<Vec<String>>| {
                let n = k.1.len() + 128 + t.iter().map(|x| x.len() + 24).sum::<usize>();
                u32::try_from((n as u64).max(tag_floor)).unwrap_or(u32::MAX)
            })
            .time_to_live(config.resolve_ttl.max(Duration::from_millis(1)))
            .build();
        Engine {
            inner: Arc::new(Inner {
                registry,
                policy: RwLock::new(Arc::new(policy)),
                config,
                decisions,
                epoch: Instant::now(),
                resolved,
                tags,
                inflight: Mutex::new(HashMap::new()),
                stats: EngineStats::default(),
            }),
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    pub fn stats(&self) -> &EngineStats {
        &self.inner.stats
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<CompiledPolicy> {
        crate::sync::read(&self.inner.policy).clone()
    }

    /// Swap in a new policy; checks already running finish under the old one. Cached decisions
    /// of the old policy are not used again (the fingerprint is part of their key).
    pub fn set_policy(&self, policy: CompiledPolicy) {
        let policy = Arc::new(policy);
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
        let now = self.now();
        self.inner.decisions.retain(|_, c| c.expires > now);
        self.inner.decisions.len() as u64
    }

    /// Nanoseconds since the engine's epoch (the clock of `Cached::expires`).
    fn now(&self) -> u64 {
        u64::try_from(self.inner.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Decide on one reference within the configured deadline.
    pub async fn check(&self, reference: &ImageRef) -> Decision {
        self.check_within(reference, self.inner.config.deadline)
            .await
    }

    /// Decide on one reference within `deadline`. When the deadline runs out the answer is a
    /// deny (under enforce) naming the stage and host; the verification goes on in the
    /// background and fills the cache, so that a retry is answered at once.
    ///
    /// A platform manifest pinned under a tag that names a signed index
    /// (`repo:tag@sha256:<platform manifest>`) and found unsigned says so.
    pub async fn check_within(&self, reference: &ImageRef, deadline: Duration) -> Decision {
        let started = Instant::now();
        let mut d = self.decide(reference, deadline).await;
        if d.failure == Some(Failure::Unsigned)
            && let (Some(tag), Some(digest)) = (reference.tag(), reference.digest())
        {
            let by_tag = reference.with_tag(tag);
            let resolving =
                crate::registry::with_deadline(started + deadline, self.resolve(&by_tag));
            let remaining = deadline.saturating_sub(started.elapsed());
            if let Ok(Ok(index)) = tokio::time::timeout(remaining, resolving).await
                && index.digest != *digest
                && let Some(entry) = index
                    .lists
                    .as_deref()
                    .and_then(|l| l.iter().find(|e| e.digest == *digest))
            {
                let listed = entry
                    .platform
                    .as_ref()
                    .map_or_else(String::new, |p| format!(" (for {p})"));
                let index_ref = reference.with_digest(index.digest.clone());
                let lead = format!(
                    "the tag {tag} names the index {}, which lists this manifest{listed}; the index",
                    index.digest
                );
                let remaining = deadline.saturating_sub(started.elapsed());
                if let Some(note) = self.signed_index_note(&index_ref, &lead, remaining).await {
                    d.reasons.push(note);
                }
            }
        }
        d
    }

    /// If the index `index_ref` (pinned) has signatures, why they do not help a platform
    /// manifest it lists: `lead` names the index, then "is signed …".
    async fn signed_index_note(
        &self,
        index_ref: &ImageRef,
        lead: &str,
        deadline: Duration,
    ) -> Option<String> {
        let of_index = self.decide(index_ref, deadline).await;
        let rule = of_index.rule.as_deref().unwrap_or("?");
        let how = match of_index.failure {
            None if of_index.verdict == Verdict::Allow => {
                format!("is signed and passes rule {rule}")
            }
            Some(
                f @ (Failure::Untrusted | Failure::Mismatch | Failure::Annotation | Failure::Tlog),
            ) => {
                format!(
                    "is signed, though not as rule {rule} requires ({})",
                    f.as_str()
                )
            }
            _ => return None,
        };
        Some(format!(
            "{lead} {how}, but a signature on an index does not cover the platform manifests it \
             lists: verify the index, or sign each platform manifest too (ocigate sign --recursive)"
        ))
    }

    /// [`Engine::check_within`] without the note on a signed index.
    async fn decide(&self, reference: &ImageRef, deadline: Duration) -> Decision {
        let started = Instant::now();
        let policy = self.policy();
        let name = reference.name();
        let rule = match plan(&policy, reference) {
            Ok(r) => r,
            Err(d) => return *d,
        };
        let host = reference
            .registry()
            .map_or_else(|| name.clone(), str::to_string);
        let timed_out = |stage: Stage| {
            Decision::early(
                reference,
                failed_verdict(rule.mode),
                Some(rule),
                format!(
                    "timed out {} {reference} (registry {host}) after {} s",
                    stage.doing(),
                    deadline.as_secs_f64()
                ),
                Some(Failure::Timeout),
            )
        };

        // Resolve: the digest (a pinned reference needs no registry call here).
        let t0 = Instant::now();
        let resolved = match reference.digest() {
            Some(d) => Resolved {
                digest: d.clone(),
                source: None,
                revision: None,
                lists: None,
            },
            None => {
                let remaining = deadline.saturating_sub(started.elapsed());
                let resolving =
                    crate::registry::with_deadline(started + deadline, self.resolve(reference));
                match tokio::time::timeout(remaining, resolving).await {
                    Err(_) => return timed_out(Stage::Resolve),
                    // The registry's requests were cut at the same deadline.
                    Ok(Err((_, Failure::Timeout))) if started.elapsed() >= deadline => {
                        return timed_out(Stage::Resolve);
                    }
                    Ok(Err((reason, failure))) => {
                        return Decision::early(
                            reference,
                            failed_verdict(rule.mode),
                            Some(rule),
                            reason,
                            Some(failure),
                        );
                    }
                    Ok(Ok(r)) => r,
                }
            }
        };
        let resolve_ms = ms(t0);

        let key = DecisionKey::new(
            &name,
            &resolved.digest,
            policy
                .policy
                .rules
                .iter()
                .position(|r| std::ptr::eq(r, rule))
                .unwrap_or(usize::MAX),
            &policy.fingerprint,
            &self.inner.registry.credential_id(reference),
        );
        if let Some(hit) = self.inner.decisions.get(&key) {
            let now = self.now();
            if hit.expires > now {
                self.inner.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
                return hit.decision(reference, &resolved.digest, &rule.name);
            }
            self.inner.decisions.remove_if(&key, |c| c.expires <= now);
        }
        self.inner
            .stats
            .cache_misses
            .fetch_add(1, Ordering::Relaxed);

        // Single flight: one verification per key, whoever asks; it runs to the end even when
        // every asker has given up, and fills the cache.
        let (flight, stage, joined) = {
            let mut inflight = crate::sync::lock(&self.inner.inflight);
            match inflight.get(&key) {
                Some((f, s)) => (f.clone(), s.clone(), true),
                None => {
                    let stage = Arc::new(AtomicU8::new(Stage::Discover as u8));
                    let verification = self.clone().verify_digest(
                        policy.clone(),
                        rule.name.clone(),
                        reference.clone(),
                        resolved.clone(),
                        key,
                        stage.clone(),
                    );
                    // The asker's request credentials (pull secrets) go with the verification,
                    // and its registry requests share one deadline: the verification budget.
                    let credentials = crate::registry::request_credentials();
                    let budget = self.inner.config.verification_budget;
                    let verification =
                        crate::registry::with_deadline(Instant::now() + budget, verification);
                    // It queues for registry hosts in its first asker's turn.
                    let group = crate::registry::gate::current_group();
                    let task = tokio::spawn(crate::registry::gate::with_group(group, async move {
                        match credentials {
                            Some(c) => {
                                crate::registry::with_request_credentials(c, verification).await
                            }
                            None => verification.await,
                        }
                    }));
                    let rule_name = rule.name.clone();
                    let fallback_ref = reference.to_string();
                    let fut: Pin<Box<dyn Future<Output = Arc<Decision>> + Send>> =
                        Box::pin(async move {
                            match task.await {
                                Ok(d) => d,
                                Err(e) => Arc::new(Decision::without_signatures(
                                    fallback_ref,
                                    None,
                                    Verdict::Deny,
                                    Some(rule_name),
                                    format!("internal error: the verification task failed: {e}"),
                                    Some(Failure::Policy),
                                )),
                            }
                        });
                    let shared = fut.shared();
                    inflight.insert(key, (shared.clone(), stage.clone()));
                    (shared, stage, false)
                }
            }
        };
        if joined {
            self.inner
                .stats
                .single_flight_joins
                .fetch_add(1, Ordering::Relaxed);
        }
        let remaining = deadline.saturating_sub(started.elapsed());
        match tokio::time::timeout(remaining, flight).await {
            // The verification's requests were cut at the same moment (the CLI's budget is
            // its deadline): say it as the deadline, with the stage.
            Ok(d) if d.failure == Some(Failure::Timeout) && started.elapsed() >= deadline => {
                timed_out(Stage::from_u8(stage.load(Ordering::Relaxed)))
            }
            Ok(d) => {
                let mut out = for_reference(&d, reference, joined);
                out.timings.resolve_ms = resolve_ms;
                out
            }
            Err(_) => timed_out(Stage::from_u8(stage.load(Ordering::Relaxed))),
        }
    }

    /// Decide on the manifest an index lists for `platform` (`verify --platform`): the index
    /// is fetched, its entry for the platform chosen, and that manifest checked as
    /// [`Engine::check_within`] does. A platform manifest found unsigned while the index is
    /// signed says so: a signature on an index does not cover the manifests it lists.
    pub async fn check_platform(
        &self,
        reference: &ImageRef,
        platform: &Platform,
        deadline: Duration,
    ) -> Decision {
        let started = Instant::now();
        let policy = self.policy();
        let rule = match plan(&policy, reference) {
            Ok(r) => r,
            Err(d) => return *d,
        };
        let fail = |reason: String, failure: Failure| {
            Decision::early(
                reference,
                failed_verdict(rule.mode),
                Some(rule),
                reason,
                Some(failure),
            )
        };
        let fetching = self.inner.registry.get_manifest(reference);
        let (doing, step) = (
            format!("resolving {reference}"),
            format!("resolve {reference}"),
        );
        let index = match registry_step(deadline, &doing, &step, fetching).await {
            Err((reason, failure)) => return fail(reason, failure),
            Ok(None) => return fail(format!("{reference} was not found"), Failure::NotFound),
            Ok(Some(m)) => m,
        };
        let entries = match crate::platform::index_entries(&index.media_type, &index.bytes) {
            Ok(Some(entries)) => entries,
            Ok(None) => {
                return fail(
                    format!(
                        "{reference} ({}) is a single manifest, not an index of platforms: there \
                         is no {platform} entry to pick; verify it without --platform",
                        index.digest
                    ),
                    Failure::NotFound,
                );
            }
            Err(e) => {
                return fail(
                    format!("the index {reference} ({}): {e}", index.digest),
                    Failure::Registry,
                );
            }
        };
        let Some(entry) = crate::platform::select(&entries, platform) else {
            return fail(
                format!(
                    "the index {reference} ({}) lists no {platform} manifest; it lists {}",
                    index.digest,
                    crate::platform::listed_platforms(&entries)
                ),
                Failure::NotFound,
            );
        };
        let child = reference.with_digest(entry.digest.clone());
        let mut d = self
            .decide(&child, deadline.saturating_sub(started.elapsed()))
            .await;
        d.reasons.insert(
            0,
            format!(
                "platform {platform}: the manifest {} listed by the index {}",
                entry.digest, index.digest
            ),
        );
        if d.failure == Some(Failure::Unsigned) {
            let lead = format!("the index {}", index.digest);
            let index_ref = reference.with_digest(index.digest.clone());
            let remaining = deadline.saturating_sub(started.elapsed());
            if let Some(note) = self.signed_index_note(&index_ref, &lead, remaining).await {
                d.reasons.push(note);
            }
        }
        d.platform = Some(PlatformPick {
            platform: platform.to_string(),
            index: index.digest.to_string(),
        });
        d
    }

    /// Decide on one source found by [`crate::extract`]: its artifact (see
    /// [`Engine::check_artifact`]) and, for a Flux source under a rule with
    /// `fluxVerification: required`, whether Flux verifies it itself too.
    pub async fn check_source(&self, source: &Source, deadline: Duration) -> Decision {
        let mut d = self.check_artifact(&source.artifact, deadline).await;
        if !source.flux {
            return d;
        }
        let policy = self.policy();
        let Some(rule) = d
            .rule
            .as_deref()
            .and_then(|n| policy.policy.rules.iter().find(|r| r.name == n))
        else {
            return d;
        };
        let flux_verifies = source.flux_verify.as_ref().is_some_and(|v| v.is_cosign());
        if rule.flux_verification == FluxVerification::Required && !flux_verifies {
            d.reasons.push(format!(
                "rule {:?} requires Flux to verify this source itself (spec.verify with provider \
                 cosign at {}), and it does not",
                rule.name, source.path
            ));
            if d.failure.is_none() {
                d.failure = Some(Failure::FluxVerify);
            }
            d.verdict = match (d.verdict, failed_verdict(rule.mode)) {
                (Verdict::Deny, _) | (_, Verdict::Deny) => Verdict::Deny,
                (Verdict::Warn, _) | (_, Verdict::Warn) => Verdict::Warn,
                _ => Verdict::Allow,
            };
        }
        d
    }

    /// Decide on one artifact found by [`crate::extract`] (the webhook and `verify --manifests`
    /// share this): a reference as it is; a Flux semver reference resolved to the tag Flux would
    /// pick (the highest match among the repository's tags), then checked; an invalid one denied.
    pub async fn check_artifact(&self, artifact: &Artifact, deadline: Duration) -> Decision {
        let started = Instant::now();
        let (repository, constraint, constraint_text, filter) = match artifact {
            Artifact::Reference(r) => return self.check_within(r, deadline).await,
            Artifact::Invalid { input, problem } => {
                return Decision {
                    reference: input.clone(),
                    digest: None,
                    verdict: Verdict::Deny,
                    rule: None,
                    reasons: vec![problem.clone()],
                    signatures: Vec::new(),
                    failure: Some(Failure::Invalid),
                    source: None,
                    revision: None,
                    discovery: Vec::new(),
                    timings: Timings::default(),
                    cached: false,
                    platform: None,
                };
            }
            Artifact::Semver {
                repository,
                constraint,
                constraint_text,
                filter,
            } => (repository, constraint, constraint_text, filter),
        };
        let policy = self.policy();
        let rule = match plan(&policy, repository) {
            Ok(r) => r,
            Err(d) => return *d,
        };
        let fail = |reason: String, failure: Failure| {
            Decision::early(
                repository,
                failed_verdict(rule.mode),
                Some(rule),
                reason,
                Some(failure),
            )
        };
        let filter = match filter.as_deref().map(regex::Regex::new).transpose() {
            Ok(f) => f,
            Err(e) => {
                return fail(
                    format!("semverFilter is not a regular expression: {e}"),
                    Failure::Invalid,
                );
            }
        };
        let listing = self.tags(repository);
        let (doing, step) = (
            format!("listing the tags of {repository}"),
            format!("list the tags of {repository}"),
        );
        let tags = match registry_step(deadline, &doing, &step, listing).await {
            Err((reason, failure)) => return fail(reason, failure),
            Ok(tags) => tags,
        };
        let Some(tag) = crate::extract::pick_highest(&tags, constraint, filter.as_ref()) else {
            return fail(
                format!(
                    "no tag of {repository} matches semver {constraint_text:?} ({} tags)",
                    tags.len()
                ),
                Failure::NotFound,
            );
        };
        let chosen = repository.with_tag(&tag);
        let mut d = self
            .check_within(&chosen, deadline.saturating_sub(started.elapsed()))
            .await;
        d.reasons.insert(
            0,
            format!(
                "semver {constraint_text:?} picks tag {tag} (the highest of {} tags)",
                tags.len()
            ),
        );
        d
    }

    /// The tags of a repository, cached for `resolve_ttl` per credential identity.
    async fn tags(&self, repository: &ImageRef) -> Result<Arc<Vec<String>>, RegistryError> {
        let key = (
            self.inner.registry.credential_id(repository),
            repository.name(),
        );
        if let Some(t) = self.inner.tags.get(&key) {
            return Ok(t);
        }
        let mut tags = self.inner.registry.list_tags(repository).await?;
        // What is not a tag cannot be picked (and is not kept).
        tags.retain(|t| crate::reference::is_valid_tag(t));
        let tags = Arc::new(tags);
        if !self.inner.config.resolve_ttl.is_zero() {
            self.inner.tags.insert(key, tags.clone());
        }
        Ok(tags)
    }

    /// Tag → digest (and the manifest's source annotations), cached for `resolve_ttl` per
    /// credential identity (what one namespace's pull secret resolved is not another's to
    /// learn). `Err` carries the reason and the failure class.
    async fn resolve(&self, reference: &ImageRef) -> Result<Resolved, (String, Failure)> {
        let key = (
            self.inner.registry.credential_id(reference),
            reference.to_string(),
        );
        if let Some(r) = self.inner.resolved.get(&key) {
            self.inner
                .stats
                .resolve_hits
                .fetch_add(1, Ordering::Relaxed);
            return Ok(r);
        }
        let manifest = match self.inner.registry.get_manifest(reference).await {
            Ok(Some(m)) => m,
            Ok(None) => {
                return Err((format!("{reference} was not found"), Failure::NotFound));
            }
            Err(e) => {
                return Err((
                    format!("cannot resolve {reference}: {}", error_chain(&e)),
                    registry_failure(&e),
                ));
            }
        };
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
            self.inner.resolved.insert(key, r.clone());
        }
        Ok(r)
    }

    /// Discover, verify and decide for a digest; fills the cache and leaves the in-flight map.
    async fn verify_digest(
        self,
        policy: Arc<CompiledPolicy>,
        rule_name: String,
        reference: ImageRef,
        resolved: Resolved,
        key: DecisionKey,
        stage: Arc<AtomicU8>,
    ) -> Arc<Decision> {
        self.inner
            .stats
            .verifications
            .fetch_add(1, Ordering::Relaxed);
        let resolved_digest = resolved.digest.clone();
        let mut decision = self
            .run_verification(&policy, &rule_name, &reference, resolved, &stage)
            .await;
        // What the registry and the signatures control is cut before it is kept.
        bound_decision(&mut decision);
        let decision = Arc::new(decision);
        let ttl = match decision.failure {
            None => self.inner.config.positive_ttl,
            Some(f) if f.is_unreached() => self.inner.config.failure_ttl,
            Some(_) if decision.verdict == Verdict::Allow => self.inner.config.positive_ttl,
            Some(_) => self.inner.config.negative_ttl,
        };
        // (max_entries 0: nothing is held, as with the bounded cache before.)
        if !ttl.is_zero() && self.inner.config.max_entries > 0 {
            let ttl = u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX);
            let expires = self.now().saturating_add(ttl);
            if let Some(c) = Cached::new(&decision, &resolved_digest, &rule_name, expires) {
                self.inner.decisions.insert(key, c);
            }
        }
        crate::sync::lock(&self.inner.inflight).remove(&key);
        decision
    }

    async fn run_verification(
        &self,
        policy: &CompiledPolicy,
        rule_name: &str,
        reference: &ImageRef,
        resolved: Resolved,
        stage: &AtomicU8,
    ) -> Decision {
        let Some(rule) = policy.policy.rules.iter().find(|r| r.name == rule_name) else {
            return Decision::early(
                reference,
                Verdict::Deny,
                None,
                format!("internal error: rule {rule_name:?} vanished"),
                Some(Failure::Policy),
            );
        };
        let digest = resolved.digest.clone();
        let pinned = reference.with_digest(digest.clone());
        let name = reference.name();
        let t1 = Instant::now();
        stage.store(Stage::Discover as u8, Ordering::Relaxed);
        // A pinned reference's manifest is read (it must exist; its source annotations are
        // reported) while the signatures are looked for, not before.
        let manifest = async {
            if reference.digest().is_none() {
                return Ok((resolved.source.clone(), resolved.revision.clone()));
            }
            match self.inner.registry.get_manifest(&pinned).await {
                Ok(Some(m)) => Ok(manifest_trace(&m, &name)),
                Ok(None) => Err((format!("{reference} was not found"), Failure::NotFound)),
                Err(e) => Err((
                    format!("cannot resolve {reference}: {}", error_chain(&e)),
                    registry_failure(&e),
                )),
            }
        };
        let expect = Expectation {
            digest: digest.clone(),
            repository: name.clone(),
            signed_identity: rule.signed_identity.clone(),
            annotations: rule.annotations.clone(),
        };
        // Each candidate is verified as discovery hands it over (pure, quick); its outcome is
        // kept, its bytes are not.
        let verified = Mutex::new(Verified::default());
        let sink = |order: Order, found: Discovered| {
            let t = Instant::now();
            let outcome = policy.outcome(rule, &expect, &found);
            let mut v = crate::sync::lock(&verified);
            if let Discovered::Unexamined(u) = &found {
                v.unexamined.push(format!(
                    "{}: not examined: {}",
                    u.location,
                    error_chain(&u.reason)
                ));
            }
            v.outcomes.push((order, outcome));
            v.time += t.elapsed();
        };
        let budget = FetchBudget::new(MAX_DISCOVERY_BYTES);
        let (found, manifest) = tokio::join!(
            discover_each(&self.inner.registry, &pinned, &digest, &budget, &sink),
            manifest
        );
        let (source, revision) = match manifest {
            Ok(trace) => trace,
            Err((reason, failure)) => {
                return Decision::early(
                    reference,
                    failed_verdict(rule.mode),
                    Some(rule),
                    reason,
                    Some(failure),
                );
            }
        };
        let Verified {
            mut outcomes,
            unexamined,
            time: verifying,
        } = crate::sync::into_inner(verified);
        let mut decision = Decision {
            reference: reference.to_string(),
            digest: Some(digest.to_string()),
            verdict: Verdict::Deny,
            rule: Some(rule.name.clone()),
            reasons: Vec::new(),
            signatures: Vec::new(),
            failure: None,
            source,
            revision,
            discovery: Vec::new(),
            timings: Timings {
                discover_ms: ms_of(t1.elapsed().saturating_sub(verifying)),
                ..Timings::default()
            },
            cached: false,
            platform: None,
        };
        let paths = match found {
            Ok(paths) => paths,
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
        let t2 = Instant::now();
        outcomes.sort_by_key(|(order, _)| *order);
        let looked = summary(&paths);
        decision.discovery = paths;
        let eval = evaluate(
            rule,
            outcomes.into_iter().map(|(_, o)| o).collect(),
            &looked,
        );
        decision.timings.verify_ms = ms_of(verifying + t2.elapsed());
        decision.verdict = eval.verdict;
        decision.reasons = eval.reasons;
        decision.signatures = eval.evidence;
        decision.failure = eval.failure;
        if !unexamined.is_empty() {
            if decision.failure.is_some() {
                // What could not be examined might have satisfied the rule: the registry's
                // content stood in the way of a verdict on the artifact (the reasons name it).
                decision.failure = Some(Failure::Registry);
                decision.reasons.insert(
                    0,
                    format!(
                        "cannot tell whether {reference} is signed: {} signature location(s) \
                         could not be examined, and nothing else satisfied the rule",
                        unexamined.len()
                    ),
                );
            } else {
                // Satisfied without it; still said, as rejected candidates (the first few:
                // the discovery notes name every one).
                const LISTED: usize = 8;
                let more = unexamined.len().saturating_sub(LISTED);
                decision.reasons.extend(unexamined.into_iter().take(LISTED));
                if more > 0 {
                    decision.reasons.push(format!(
                        "and {more} more signature location(s) not examined (see the discovery notes)"
                    ));
                }
            }
        }
        decision
    }
}

/// What verifying candidates as they were found has gathered.
#[derive(Default)]
struct Verified {
    outcomes: Vec<(Order, CandidateOutcome)>,
    /// The reasons of the locations not examined.
    unexamined: Vec<String>,
    /// Time spent verifying.
    time: Duration,
}

/// Plan: the rule for a reference, before any I/O; `Err` is the decision when there is none.
fn plan<'p>(policy: &'p CompiledPolicy, reference: &ImageRef) -> Result<&'p Rule, Box<Decision>> {
    let name = reference.name();
    match policy.policy.match_rule(&name) {
        RuleMatch::Rule(r) => Ok(r),
        RuleMatch::NoMatch(nm) => {
            let (verdict, failure) = match nm {
                NoMatch::Deny => (Verdict::Deny, Some(Failure::NoMatch)),
                NoMatch::Allow => (Verdict::Allow, None),
                NoMatch::Warn => (Verdict::Warn, Some(Failure::NoMatch)),
            };
            let word = format!("{nm:?}").to_lowercase();
            Err(Box::new(Decision::early(
                reference,
                verdict,
                None,
                format!("no rule of the policy matches {name} (noMatch: {word})"),
                failure,
            )))
        }
        RuleMatch::Ambiguous(a, b) => Err(Box::new(Decision::early(
            reference,
            Verdict::Deny,
            None,
            format!(
                "policy error: rules {:?} and {:?} are equally specific for {name}",
                a.name, b.name
            ),
            Some(Failure::Policy),
        ))),
    }
}

/// A shared decision as one requester sees it: its own spelling of the reference.
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
        Ok(Err(e)) => Err((
            format!("cannot {step}: {}", error_chain(&e)),
            registry_failure(&e),
        )),
        Ok(Ok(v)) => Ok(v),
    }
}

fn for_reference(d: &Decision, reference: &ImageRef, cached: bool) -> Decision {
    let mut out = d.clone();
    out.reference = reference.to_string();
    out.cached = cached;
    out
}

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

/// A decision cut to what may be kept (see [`crate::bounded`]): reasons, evidence and the
/// manifest's annotations.
fn bound_decision(d: &mut Decision) {
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
    crate::bounded::bound_reasons(&mut d.reasons);
    for x in [&mut d.source, &mut d.revision].into_iter().flatten() {
        crate::bounded::cut_in_place(x, MAX_KEPT_STRING);
    }
}

/// Keyless verification needs the log: without it nothing proves when the short-lived
/// certificate was used.
fn keyless_needs_tlog(tlog: Tlog, location: &str, authority: &str) -> Result<(), Rejection> {
    if tlog == Tlog::Skip {
        let kind = RejectionKind::NotSupported {
            authority: authority.to_string(),
            what: "keyless verification without a transparency log (tlog: skip)".into(),
        };
        return Err(Rejection::new(location, kind));
    }
    Ok(())
}

fn ms(t: Instant) -> f64 {
    ms_of(t.elapsed())
}

fn ms_of(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_reasons_come_back_as_they_were() {
        let cases: Vec<Vec<String>> = vec![
            vec![],
            vec![String::new()],
            vec!["one".into()],
            vec!["".into(), "12:not a length".into(), "a:b:c".into()],
            vec!["line\nbreak".into(), "ünïcødé ✓".into(), "0:".into()],
            vec!["x".repeat(1000), "9".into()],
        ];
        for reasons in cases {
            assert_eq!(unpack_reasons(&pack_reasons(&reasons)), reasons);
        }
    }

    fn decision(digest: Option<&str>, rule: Option<&str>) -> Decision {
        Decision {
            reference: "registry.example/app:v1".into(),
            digest: digest.map(str::to_string),
            verdict: Verdict::Deny,
            rule: rule.map(str::to_string),
            reasons: vec!["first".into(), "second: with a colon".into()],
            signatures: Vec::new(),
            failure: Some(Failure::Untrusted),
            source: Some("https://example.com/src".into()),
            revision: None,
            discovery: Vec::new(),
            timings: Timings::default(),
            cached: false,
            platform: None,
        }
    }

    #[test]
    fn a_cached_decision_is_the_decision_it_was_made_from() {
        let digest = Digest::sha256_of(b"image");
        let reference = ImageRef::parse("registry.example/app:v1").unwrap();
        for (d, r) in [
            (Some(digest.as_str()), Some("rule")),
            (None, Some("rule")),
            (Some(digest.as_str()), None),
            (None, None),
        ] {
            let miss = decision(d, r);
            let cached = Cached::new(&miss, &digest, "rule", 1).unwrap();
            let hit = cached.decision(&reference, &digest, "rule");
            assert!(hit.cached);
            let json = |d: &Decision| {
                let mut v = serde_json::to_value(d).unwrap();
                v.as_object_mut().unwrap().remove("cached");
                v
            };
            assert_eq!(json(&hit), json(&miss));
        }
    }

    #[test]
    fn a_decision_for_another_digest_or_rule_is_not_cached() {
        let digest = Digest::sha256_of(b"image");
        let other = Digest::sha256_of(b"other");
        assert!(Cached::new(&decision(Some(other.as_str()), None), &digest, "r", 1).is_none());
        assert!(Cached::new(&decision(None, Some("other")), &digest, "r", 1).is_none());
    }

    #[test]
    fn keys_differ_in_each_part() {
        let d = Digest::sha256_of(b"a");
        let anon = CredentialId::ANONYMOUS;
        let base = DecisionKey::new("reg/app", &d, 0, "policy", &anon);
        assert_eq!(base, DecisionKey::new("reg/app", &d, 0, "policy", &anon));
        let secret = |p: &str| {
            CredentialId::of_secret(&crate::registry::Secret::Basic {
                username: "u".into(),
                password: p.into(),
            })
        };
        assert_eq!(secret("p"), secret("p"));
        for other in [
            DecisionKey::new("reg/ap", &d, 0, "policy", &anon),
            DecisionKey::new("reg/app", &Digest::sha256_of(b"b"), 0, "policy", &anon),
            DecisionKey::new("reg/app", &d, 1, "policy", &anon),
            DecisionKey::new("reg/app", &d, 0, "policy2", &anon),
            DecisionKey::new("reg/app", &d, 0, "policy", &secret("p")),
            DecisionKey::new("reg/app", &d, 0, "policy", &secret("q")),
        ] {
            assert_ne!(base, other);
        }
    }
}
