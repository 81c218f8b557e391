//! The pipeline, in one direction: reference → rule → digest → signatures → verification →
//! verdict. The only place that calls the registry, the verifier and the policy together.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Instant;

use serde::Serialize;

use crate::bundle::{
    BundleAuthority, REKOR_BUNDLE_ANNOTATION, TrustRoot, TrustRootError, has_tlog_entries,
};
use crate::discover::{BundleCandidate, PathTried, SignatureCandidate, discover};
use crate::policy::{
    Authority, AuthorityKind, CandidateOutcome, NoMatch, Policy, Rule, RuleMatch, Tlog, Verdict,
    evaluate, failed_verdict,
};
use crate::reference::ImageRef;
use crate::registry::{ImageManifest, Registry};
use crate::verify::{
    Expectation, KeyAuthority, KeylessAuthority, Rejection, VerifiedSignature,
    verify_attached_bundle, verify_key_signature, verify_key_signature_logged,
    verify_keyless_signature,
};

const SOURCE_ANNOTATION: &str = "org.opencontainers.image.source";
const REVISION_ANNOTATION: &str = "org.opencontainers.image.revision";

/// Why a verdict was reached without a full verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Failure {
    /// The registry could not be asked (down, denied, timed out): not "unsigned".
    Registry,
    /// The reference does not exist.
    NotFound,
    /// The policy cannot decide (two rules equally specific).
    Policy,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Timings {
    pub resolve_ms: f64,
    pub discover_ms: f64,
    pub verify_ms: f64,
}

/// One verdict with the reasons and evidence behind it.
#[derive(Debug, Serialize)]
pub struct Decision {
    pub reference: String,
    pub digest: Option<String>,
    pub verdict: Verdict,
    pub rule: Option<String>,
    pub reasons: Vec<String>,
    pub signatures: Vec<VerifiedSignature>,
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
}

impl Decision {
    fn early(reference: &ImageRef, verdict: Verdict, rule: Option<&Rule>, reason: String) -> Self {
        Decision {
            reference: reference.to_string(),
            digest: reference.digest().map(|d| d.to_string()),
            verdict,
            rule: rule.map(|r| r.name.clone()),
            reasons: vec![reason],
            signatures: Vec::new(),
            failure: None,
            source: None,
            revision: None,
            discovery: Vec::new(),
            timings: Timings::default(),
        }
    }
}

use crate::error_chain;

pub struct Gate {
    registry: Registry,
    policy: Policy,
    /// The policy's named trust roots, parsed once.
    roots: HashMap<String, TrustRoot>,
    /// The embedded public-good root, parsed on first use.
    embedded: OnceLock<Option<TrustRoot>>,
}

impl Gate {
    /// A gate for `policy`; its trust roots are parsed here, so a bad trusted_root.json is a
    /// configuration error at start-up, not a denial later. Nothing is fetched.
    pub fn new(registry: Registry, policy: Policy) -> Result<Self, TrustRootError> {
        let mut roots = HashMap::new();
        for tr in &policy.trust_roots {
            let root = match &tr.json {
                Some(json) => TrustRoot::from_json(json, &tr.name)?,
                None => TrustRoot::embedded()?,
            };
            roots.insert(tr.name.clone(), root);
        }
        Ok(Gate {
            registry,
            policy,
            roots,
            embedded: OnceLock::new(),
        })
    }

    fn root(&self, name: Option<&str>) -> Option<&TrustRoot> {
        match name {
            Some(n) => self.roots.get(n),
            None => self
                .embedded
                .get_or_init(|| TrustRoot::embedded().ok())
                .as_ref(),
        }
    }

    /// The trust root an authority names, or why it cannot be had.
    fn root_for(
        &self,
        name: &Option<String>,
        location: &str,
        authority: &str,
    ) -> Result<&TrustRoot, Rejection> {
        self.root(name.as_deref()).ok_or_else(|| Rejection::Bundle {
            location: location.to_string(),
            authority: authority.to_string(),
            detail: format!(
                "trust root {} is not available",
                name.as_deref().unwrap_or("embedded")
            ),
        })
    }

    /// One attached Sigstore bundle against one authority.
    fn verify_one_bundle(
        &self,
        c: &BundleCandidate,
        a: &Authority,
        expect: &Expectation,
    ) -> Result<VerifiedSignature, Rejection> {
        let (who, trust_root) = match &a.kind {
            AuthorityKind::Key {
                key,
                tlog,
                trust_root,
            } => {
                let logged = has_tlog_entries(&c.json);
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
                keyless_needs_tlog(*tlog, &c.location, &a.name)?;
                (BundleAuthority::Identities(identities), trust_root)
            }
        };
        let root = self.root_for(trust_root, &c.location, &a.name)?;
        verify_attached_bundle(c, &a.name, who, root, expect)
    }

    /// One candidate against one authority.
    fn verify_one(
        &self,
        c: &SignatureCandidate,
        a: &Authority,
        expect: &Expectation,
    ) -> Result<VerifiedSignature, Rejection> {
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
                        verify_key_signature_logged(c, authority, root, expect)
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
                    c,
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

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Decide on one reference.
    pub async fn check(&self, reference: &ImageRef) -> Decision {
        let name = reference.name();
        let rule = match self.policy.match_rule(&name) {
            RuleMatch::Rule(r) => r,
            RuleMatch::NoMatch(nm) => {
                let verdict = match nm {
                    NoMatch::Deny => Verdict::Deny,
                    NoMatch::Allow => Verdict::Allow,
                    NoMatch::Warn => Verdict::Warn,
                };
                let word = format!("{nm:?}").to_lowercase();
                return Decision::early(
                    reference,
                    verdict,
                    None,
                    format!("no rule of the policy matches {name} (noMatch: {word})"),
                );
            }
            RuleMatch::Ambiguous(a, b) => {
                let mut d = Decision::early(
                    reference,
                    Verdict::Deny,
                    None,
                    format!(
                        "policy error: rules {:?} and {:?} are equally specific for {name}",
                        a.name, b.name
                    ),
                );
                d.failure = Some(Failure::Policy);
                return d;
            }
        };

        let t0 = Instant::now();
        let manifest = match self.registry.get_manifest(reference).await {
            Ok(Some(m)) => m,
            Ok(None) => {
                let mut d = Decision::early(
                    reference,
                    failed_verdict(rule.mode),
                    Some(rule),
                    format!("{reference} was not found"),
                );
                d.failure = Some(Failure::NotFound);
                return d;
            }
            Err(e) => {
                let mut d = Decision::early(
                    reference,
                    failed_verdict(rule.mode),
                    Some(rule),
                    format!("cannot resolve {reference}: {}", error_chain(&e)),
                );
                d.failure = Some(Failure::Registry);
                return d;
            }
        };
        let resolve_ms = ms(t0);
        let digest = manifest.digest.clone();
        let (source, revision) = match ImageManifest::parse(&manifest, &name) {
            Ok(m) => {
                let a = m.annotations.unwrap_or_default();
                (
                    a.get(SOURCE_ANNOTATION).cloned(),
                    a.get(REVISION_ANNOTATION).cloned(),
                )
            }
            Err(_) => (None, None),
        };
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
                resolve_ms,
                ..Timings::default()
            },
        };

        let t1 = Instant::now();
        let found = match discover(&self.registry, reference, &digest).await {
            Ok(f) => f,
            Err(e) => {
                decision.verdict = failed_verdict(rule.mode);
                decision.failure = Some(Failure::Registry);
                decision.reasons = vec![format!(
                    "cannot tell whether {reference} is signed: {}",
                    error_chain(&e)
                )];
                return decision;
            }
        };
        decision.timings.discover_ms = ms(t1);
        decision.discovery = found.paths.clone();

        let t2 = Instant::now();
        let expect = Expectation {
            digest,
            repository: name,
            signed_identity: rule.signed_identity.clone(),
            annotations: rule.annotations.clone(),
        };
        let legacy = found.candidates.iter().map(|c| CandidateOutcome {
            location: c.location.clone(),
            results: rule
                .authorities
                .iter()
                .map(|a| self.verify_one(c, a, &expect))
                .collect(),
        });
        let bundles = found.bundles.iter().map(|c| CandidateOutcome {
            location: c.location.clone(),
            results: rule
                .authorities
                .iter()
                .map(|a| self.verify_one_bundle(c, a, &expect))
                .collect(),
        });
        let outcomes = legacy.chain(bundles).collect();
        let eval = evaluate(rule, outcomes, &found.summary());
        decision.timings.verify_ms = ms(t2);
        decision.verdict = eval.verdict;
        decision.reasons = eval.reasons;
        decision.signatures = eval.evidence;
        decision
    }
}

/// Keyless verification needs the log: without it nothing proves when the short-lived
/// certificate was used.
fn keyless_needs_tlog(tlog: Tlog, location: &str, authority: &str) -> Result<(), Rejection> {
    if tlog == Tlog::Skip {
        return Err(Rejection::NotSupported {
            location: location.to_string(),
            authority: authority.to_string(),
            what: "keyless verification without a transparency log (tlog: skip)".into(),
        });
    }
    Ok(())
}

fn ms(t: Instant) -> f64 {
    (t.elapsed().as_secs_f64() * 1000.0 * 100.0).round() / 100.0
}
