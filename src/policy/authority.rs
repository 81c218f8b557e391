//! A compiled policy's authorities applied to what discovery found: each candidate against each
//! authority of a rule, with the trust root the authority names. Pure; must not do I/O.

use std::time::SystemTime;

use super::CompiledPolicy;
use super::evaluate::CandidateOutcome;
use super::model::{Authority, AuthorityKind, Rule, Tlog};
use crate::bundle::{BundleAuthority, REKOR_BUNDLE_ANNOTATION};
use crate::discover::Discovered;
use crate::error_chain;
use crate::trust::TrustRoot;
use crate::verify::{
    CertificatesAuthority, Expectation, KeyAuthority, KeylessAuthority, PreparedBundle,
    PreparedSignature, Rejection, RejectionKind, VerifiedSignature, verify_attached_bundle,
    verify_attached_certificate_bundle, verify_certificate_signature, verify_key_signature,
    verify_key_signature_logged, verify_keyless_signature,
};

impl CompiledPolicy {
    /// A trust root the policy names (parsed when the policy was read), or for an authority
    /// that names none the embedded public-good root (parsed once per process, when a
    /// verification first needs it: a key without a log does not).
    fn root(&self, name: Option<&str>) -> Option<&TrustRoot> {
        match name {
            Some(n) => self
                .policy()
                .trust_roots
                .iter()
                .find(|tr| tr.name == n)
                .map(|tr| tr.root.as_ref()),
            None => Some(TrustRoot::embedded_deferred().as_ref()),
        }
    }

    /// The trust root an authority names, or why it cannot be had (the policy's problem, not
    /// the candidate's: see [`RejectionKind::TrustRootUnavailable`]).
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

    /// Who must have signed a bundle or attestation for authority `a`, and under which root:
    /// a key authority's `tlog` decides whether the log entry is required (`optional` requires
    /// it only when the bundle carries one); a keyless authority needs the log.
    pub(super) fn bundle_authority<'a>(
        &'a self,
        a: &'a Authority,
        logged: bool,
        location: &str,
    ) -> Result<(BundleAuthority<'a>, &'a TrustRoot), Rejection> {
        let (who, trust_root) = match &a.kind {
            AuthorityKind::Key {
                key,
                tlog,
                trust_root,
            } => {
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
                keyless_needs_tlog(*tlog, location, &a.name)?;
                (BundleAuthority::Identities(identities), trust_root)
            }
            // Attestations (DSSE envelopes, bundles carrying them) with a certificate from a CA
            // of one's own are not verified yet (attached signature bundles are: see
            // `verify_one_bundle`).
            AuthorityKind::Certificates { .. } => {
                let kind = RejectionKind::NotSupported {
                    authority: a.name.clone(),
                    what: "an attestation signed with a certificates authority's certificate"
                        .into(),
                };
                return Err(Rejection::new(location, kind));
            }
            AuthorityKind::Withdrawn { files, .. } => return Err(withdrawn(a, files, location)),
        };
        Ok((who, self.root_for(trust_root, location, &a.name)?))
    }

    /// A `certificates` authority as verification takes it: its `tlog` decides whether the
    /// log (under the trust root it names) proves the signing time; `optional` only when the
    /// signature carries a log entry (`logged`).
    fn certificates_authority<'a>(
        &'a self,
        a: &'a Authority,
        logged: bool,
        location: &str,
    ) -> Result<CertificatesAuthority<'a>, Rejection> {
        let AuthorityKind::Certificates {
            cas,
            identities,
            tlog,
            trust_root,
        } = &a.kind
        else {
            let kind = RejectionKind::NotSupported {
                authority: a.name.clone(),
                what: "a key or keyless authority as a certificates authority".into(),
            };
            return Err(Rejection::new(location, kind));
        };
        let log = match (tlog, logged) {
            (Tlog::Required, _) | (Tlog::Optional, true) => {
                Some(self.root_for(trust_root, location, &a.name)?)
            }
            _ => None,
        };
        Ok(CertificatesAuthority {
            name: &a.name,
            cas,
            identities,
            log,
        })
    }

    /// One attached Sigstore bundle against one authority.
    fn verify_one_bundle(
        &self,
        c: &PreparedBundle<'_>,
        a: &Authority,
        expect: &Expectation,
    ) -> Result<VerifiedSignature, Rejection> {
        let location = &c.candidate().location;
        if let AuthorityKind::Certificates { .. } = &a.kind {
            let authority = self.certificates_authority(a, c.has_tlog_entries(), location)?;
            return verify_attached_certificate_bundle(c, authority, expect, SystemTime::now());
        }
        let (who, root) = self.bundle_authority(a, c.has_tlog_entries(), location)?;
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
                let authority = KeylessAuthority {
                    name: &a.name,
                    identities,
                    root,
                };
                verify_keyless_signature(p, authority, expect)
            }
            AuthorityKind::Certificates { .. } => {
                let logged = c.annotations.contains_key(REKOR_BUNDLE_ANNOTATION);
                let authority = self.certificates_authority(a, logged, &c.location)?;
                verify_certificate_signature(p, authority, expect, SystemTime::now())
            }
            AuthorityKind::Withdrawn { files, .. } => Err(withdrawn(a, files, &c.location)),
        }
    }

    /// Verify one thing discovery found against every authority of `rule` (pure: no I/O).
    /// A candidate is prepared (its bundle form parsed) once, for all the authorities; a
    /// location discovery could not examine is rejected by each, with its reason.
    pub(crate) fn outcome(
        &self,
        rule: &Rule,
        expect: &Expectation,
        found: &Discovered,
    ) -> CandidateOutcome {
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
            // Not a signature: no authority of the signature requirement is satisfied by it.
            Discovered::Attestation(a) => CandidateOutcome {
                location: a.location.clone(),
                results: rule
                    .authorities
                    .iter()
                    .map(|_| {
                        let detail = "an attestation, not a signature".to_string();
                        let kind = RejectionKind::NotExamined { detail };
                        Err(Rejection::new(a.location.clone(), kind))
                    })
                    .collect(),
            },
            Discovered::NotExamined(u) => {
                let detail = error_chain(&u.reason);
                CandidateOutcome {
                    location: u.location.clone(),
                    results: rule
                        .authorities
                        .iter()
                        .map(|_| {
                            let detail = detail.clone();
                            let kind = RejectionKind::NotExamined { detail };
                            Err(Rejection::new(u.location.clone(), kind))
                        })
                        .collect(),
                }
            }
        }
    }
}

/// Why a withdrawn authority accepts nothing at `location`.
fn withdrawn(a: &Authority, files: &[std::path::PathBuf], location: &str) -> Rejection {
    let files = files
        .iter()
        .map(|f| crate::policy::shown::cut_escaped(&f.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(", ");
    let authority = a.name.clone();
    Rejection::new(location, RejectionKind::Withdrawn { authority, files })
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::candidate::SignatureCandidate;
    use crate::failure::Failure;
    use crate::policy::{Policy, evaluate};
    use crate::reference::Digest;
    use crate::trust::{GitHubWorkflow, Identity, Matcher};
    use crate::verify::SignedIdentity;

    /// An authority whose trust root cannot be had is the policy's problem, not the
    /// signature's: the refusal says so, and the rule fails as `policy`, not `untrusted`.
    #[test]
    fn an_unavailable_trust_root_is_a_policy_failure() {
        let identity = Identity {
            subject: Matcher::Exact("https://github.com/acme/app".into()),
            issuer: Matcher::Exact("https://token.actions.githubusercontent.com".into()),
            github: GitHubWorkflow::default(),
        };
        let kind = AuthorityKind::Keyless {
            trust_root: Some("private".into()),
            identities: vec![identity],
            tlog: Tlog::Required,
        };
        let policy = Policy::single_authority(
            "apps",
            "ci",
            kind,
            Vec::new(),
            BTreeMap::new(),
            SignedIdentity::MatchRepository,
        );
        let policy = CompiledPolicy::new(policy, "test".into());
        let rule = &policy.policy().rules[0];
        let digest = Digest::sha256_of(b"image");
        let expect = Expectation {
            digest,
            repository: "registry.example/app".into(),
            signed_identity: SignedIdentity::MatchRepository,
            annotations: BTreeMap::new(),
        };
        let found = Discovered::Signature(SignatureCandidate {
            location: "tag sha256-x.sig layer 1".into(),
            payload: b"{}".to_vec(),
            signature: "AAAA".into(),
            annotations: BTreeMap::new(),
        });
        let outcome = policy.outcome(rule, &expect, &found);
        let rejection = outcome.results[0].as_ref().unwrap_err();
        assert!(
            matches!(rejection.kind(), RejectionKind::TrustRootUnavailable { root, .. } if root == "private"),
            "{rejection:?}"
        );
        assert_eq!(rejection.class(), Failure::Policy);
        assert_eq!(
            rejection.reason(),
            "tag sha256-x.sig layer 1: trust root private is not available, so authority \"ci\" \
             cannot be satisfied"
        );
        let e = evaluate(rule, vec![outcome], "t");
        assert_eq!(e.failure, Some(Failure::Policy), "{:?}", e.reasons);
    }

    /// One signature by a certificate with two SANs is one signer: it satisfies one of two
    /// `certificates` authorities that each want one of the SANs, not both (a helper's review:
    /// it allowed `threshold: 2`). Two signatures by that certificate's key do no better.
    #[test]
    fn one_certificate_with_two_sans_is_one_signer() {
        use base64::Engine as _;
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, &ca_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let mut leaf = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        leaf.subject_alt_names = vec![
            rcgen::SanType::Rfc822Name("build@corp.example".try_into().unwrap()),
            rcgen::SanType::Rfc822Name("security@corp.example".try_into().unwrap()),
        ];
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
        let signer =
            crate::sign::key::SigningKey::from_pkcs8(&leaf_key.serialize_der(), "leaf").unwrap();
        let roots = ca_cert.pem();
        let text = "apiVersion: ocigate.dev/v1alpha1\nkind: Policy\nrules:\n  - name: production\n    \
            images: [\"registry.example/prod/**\"]\n    threshold: 2\n    authorities:\n      \
            - name: build\n        certificates: {roots: ca.pem, identities: [{subject: build@corp.example}]}\n        tlog: skip\n      \
            - name: security\n        certificates: {roots: ca.pem, identities: [{subject: security@corp.example}]}\n        tlog: skip\n";
        let parsed = Policy::parse(text, std::path::Path::new("p.yaml"), &|_| Ok(roots.clone()));
        let policy = CompiledPolicy::new(parsed.unwrap(), "t".into());
        let rule = &policy.policy().rules[0];
        let digest = Digest::sha256_of(b"image");
        let payload = crate::payload::SimpleSigning::new(
            "registry.example/prod/app",
            &digest,
            &BTreeMap::new(),
        )
        .to_bytes()
        .unwrap();
        let cert = (
            crate::bundle::CERTIFICATE_ANNOTATION.to_string(),
            leaf_cert.pem(),
        );
        let expect = Expectation {
            digest: digest.clone(),
            repository: "registry.example/prod/app".into(),
            signed_identity: SignedIdentity::MatchRepository,
            annotations: BTreeMap::new(),
        };
        let signature = |i: usize| {
            let found = Discovered::Signature(SignatureCandidate {
                location: format!("l{i}"),
                signature: base64::engine::general_purpose::STANDARD
                    .encode(signer.sign(&payload).unwrap()),
                payload: payload.clone(),
                annotations: BTreeMap::from([cert.clone()]),
            });
            policy.outcome(rule, &expect, &found)
        };
        let one = evaluate(rule, vec![signature(0)], "t");
        assert_eq!(
            one.verdict,
            crate::policy::Verdict::Deny,
            "{:?}",
            one.reasons
        );
        assert_eq!(one.failure, Some(Failure::Untrusted));
        assert!(
            one.reasons[1].contains("one signer counts once"),
            "{:?}",
            one.reasons
        );
        let two = evaluate(rule, vec![signature(0), signature(1)], "t");
        assert_eq!(
            two.verdict,
            crate::policy::Verdict::Deny,
            "{:?}",
            two.reasons
        );
    }
}
