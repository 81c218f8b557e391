//! The engine's caches: decisions (keyed by repository, digest, rule, policy fingerprint and
//! credential, held compact), resolved tags and tag lists, each bounded in entries and bytes.
//! Must not decide or fetch: it keeps what the engine hands it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::EngineConfig;
use super::decision::{Decision, Timings};
use crate::failure::Failure;
use crate::policy::{AttestationEvidence, Verdict};
use crate::reference::{Digest, ImageRef};
use crate::registry::CredentialId;
use crate::verify::VerifiedSignature;

/// What a decision depends on: the repository (legacy signatures live there, and
/// `matchRepository` compares its name), the digest, the rule (its index: the fingerprint pins
/// the policy), the policy's fingerprint, and who the registry was asked as (the identity of the
/// credential for the repository: a decision reached with one namespace's pull secret is never
/// served to a request that could not reach it itself); held as the SHA-256 of the five, each
/// length-prefixed, so a key is 32 bytes however long the names are. Two different keys are
/// one only through a SHA-256 collision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct DecisionKey([u8; 32]);

impl DecisionKey {
    pub(super) fn new(
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

    /// This key for a rule whose signatures are kept in `repository`, looked up there as
    /// `who`: a decision reached with a credential for the signatures repository is served
    /// only to requests that would reach it as the same identity. (The repository itself is
    /// pinned by the rule and the policy's fingerprint already; it is hashed in as well.)
    pub(super) fn with_signatures_from(self, repository: &str, who: &CredentialId) -> Self {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        for field in [&self.0[..], repository.as_bytes(), who.as_bytes()] {
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
    attestations: Box<[AttestationEvidence]>,
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
        let evidence = if d.signatures.is_empty()
            && d.attestations.is_empty()
            && d.source.is_none()
            && d.revision.is_none()
        {
            None
        } else {
            Some(Arc::new(CachedEvidence {
                signatures: d.signatures.clone().into_boxed_slice(),
                attestations: d.attestations.clone().into_boxed_slice(),
                source: d.source.as_deref().map(Into::into),
                revision: d.revision.as_deref().map(Into::into),
            }))
        };
        let reasons: Arc<str> = pack_reasons(&d.reasons).into();
        let evidence_bytes = evidence.as_deref().map_or(0, |e| {
            64 + e.signatures.iter().map(|s| s.approx_bytes()).sum::<usize>()
                + e.attestations
                    .iter()
                    .map(|a| a.approx_bytes())
                    .sum::<usize>()
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
            needs: None,
            reasons: unpack_reasons(&self.reasons),
            signatures: evidence.map_or_else(Vec::new, |e| e.signatures.to_vec()),
            attestations: evidence.map_or_else(Vec::new, |e| e.attestations.to_vec()),
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

/// A tag resolved: its digest and what the manifest says of its origin.
#[derive(Clone)]
pub(super) struct Resolved {
    pub(super) digest: Digest,
    pub(super) source: Option<String>,
    pub(super) revision: Option<String>,
    /// When the tag names an index: the manifests it lists (for the message of a platform
    /// manifest pinned under that tag and found unsigned).
    pub(super) lists: Option<Arc<[crate::platform::IndexEntry]>>,
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

/// The engine's three caches, built once from its configuration.
pub(super) struct Caches {
    /// Bounded by `max_entries`; an expired entry is never used, and is dropped when it is met
    /// or when the cache is counted.
    decisions: quick_cache::sync::Cache<DecisionKey, Cached, CachedWeight>,
    /// Whether decisions are kept at all (`max_entries` 0: nothing is held).
    keeps_decisions: bool,
    /// What `Cached::expires` counts from.
    epoch: Instant,
    /// By who asked (the credential identity) and the reference as written.
    pub(super) resolved: moka::sync::Cache<(CredentialId, String), Resolved>,
    /// By who asked and the repository.
    pub(super) tags: moka::sync::Cache<(CredentialId, String), Arc<Vec<String>>>,
}

impl Caches {
    pub(super) fn new(config: &EngineConfig) -> Self {
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
        Caches {
            decisions,
            keeps_decisions: config.max_entries > 0,
            epoch: Instant::now(),
            resolved,
            tags,
        }
    }

    /// Nanoseconds since the epoch (the clock of `Cached::expires`).
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The decision held for `key`, given back for `reference` (resolved to `digest`) under the
    /// rule named `rule`; an expired one is dropped.
    pub(super) fn decision(
        &self,
        key: &DecisionKey,
        reference: &ImageRef,
        digest: &Digest,
        rule: &str,
    ) -> Option<Decision> {
        let hit = self.decisions.get(key)?;
        let now = self.now();
        if hit.expires > now {
            return Some(hit.decision(reference, digest, rule));
        }
        self.decisions.remove_if(key, |c| c.expires <= now);
        None
    }

    /// Keep `decision` (reached for `digest` under the rule named `rule`) for `ttl`; a zero
    /// `ttl` keeps nothing, nor does a decision that cannot be given back exactly.
    pub(super) fn remember(
        &self,
        key: DecisionKey,
        decision: &Decision,
        digest: &Digest,
        rule: &str,
        ttl: Duration,
    ) {
        if ttl.is_zero() || !self.keeps_decisions {
            return;
        }
        let ttl = u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX);
        let expires = self.now().saturating_add(ttl);
        if let Some(c) = Cached::new(decision, digest, rule, expires) {
            self.decisions.insert(key, c);
        }
    }

    /// Number of decisions held; expired ones are dropped first.
    pub(super) fn count_decisions(&self) -> u64 {
        let now = self.now();
        self.decisions.retain(|_, c| c.expires > now);
        self.decisions.len() as u64
    }
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
            needs: None,
            reasons: vec!["first".into(), "second: with a colon".into()],
            signatures: Vec::new(),
            attestations: Vec::new(),
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
        let at = |repo: &str, who: &CredentialId| base.with_signatures_from(repo, who);
        assert_eq!(at("sigs/app", &anon), at("sigs/app", &anon));
        for other in [base, at("sigs/ap", &anon), at("sigs/app", &secret("p"))] {
            assert_ne!(at("sigs/app", &anon), other);
        }
    }
}
