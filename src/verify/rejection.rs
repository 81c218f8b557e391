//! Why a signature did not count: [`Rejection`] (where it was found) and [`RejectionKind`] (what
//! was wrong with it, with the typed cause the failure class is derived from). No verification here.

use std::sync::Arc;

use crate::bundle::BundleError;
use crate::failure::Failure;
use crate::payload::PayloadError;

/// Why a signature did not count, for one authority: the location it was found at and what was
/// wrong with it. Display is `location: what`; the cause (a bundle's verification error, a
/// payload's parse error) stays in `source()`, and [`Rejection::reason`] joins them for people.
#[derive(Debug)]
pub struct Rejection {
    location: String,
    kind: RejectionKind,
}

/// What was wrong with a signature. Each kind says which authority it was checked for where that
/// matters; the failure class ([`Rejection::class`]) is derived from the kind and its cause.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RejectionKind {
    /// The `dev.cosignproject.cosign/signature` annotation does not decode.
    #[error("the signature annotation is not valid base64")]
    SignatureEncoding,
    /// The signature does not verify over the payload with the authority's key.
    #[error("not signed by key {authority:?} (the signature does not verify over the payload)")]
    BadSignature {
        /// The key authority's name in the policy.
        authority: String,
    },
    /// The signed payload is not a cosign simple-signing payload this verifier reads.
    #[error(transparent)]
    Payload(PayloadError),
    /// The signature binds another digest.
    #[error("signature is for another image ({signed}), not {expected}")]
    DigestMismatch {
        /// The digest (or digests) the signature names.
        signed: String,
        /// The digest being verified.
        expected: String,
    },
    /// The payload's `docker-reference` does not satisfy the rule's `signedIdentity`.
    #[error("signature names {signed:?}, but the reference is {expected:?} (signedIdentity)")]
    IdentityMismatch {
        /// The repository the signature names.
        signed: String,
        /// The repository the rule expects.
        expected: String,
    },
    /// A required annotation is missing or has another value.
    #[error(
        "annotation {key:?} is {}, the policy requires {expected:?}",
        found.as_deref().map_or_else(|| "missing".to_string(), |f| format!("{f:?}"))
    )]
    AnnotationMismatch {
        /// The annotation's key.
        key: String,
        /// The value the rule requires.
        expected: String,
        /// The value signed, if any.
        found: Option<String>,
    },
    /// The signature's Sigstore bundle (attached, or built from a legacy layer) did not verify
    /// for this authority; the cause says which check failed.
    #[error("not verified for authority {authority:?}")]
    Bundle {
        /// The authority's name in the policy.
        authority: String,
        /// Which check failed (shared by every authority the bundle was tried against).
        #[source]
        source: Arc<BundleError>,
    },
    /// An attached bundle verified, but what it signs is not a cosign image signature statement.
    #[error("not verified for authority {authority:?}")]
    Statement {
        /// The authority's name in the policy.
        authority: String,
        /// What is wrong with the statement.
        #[source]
        source: Arc<StatementError>,
    },
    /// The authority names a trust root the policy does not have (or the embedded one could not
    /// be loaded): a policy problem, not a verdict on the signature.
    #[error("trust root {root} is not available, so authority {authority:?} cannot be satisfied")]
    TrustRootUnavailable {
        /// The authority's name in the policy.
        authority: String,
        /// The trust root's name (`embedded` for the built-in one).
        root: String,
    },
    /// The authority's key or certificates came from files that changed, and the policy could
    /// not be loaded again (`serve`): it is no longer trusted. A policy problem, not a verdict
    /// on the signature.
    #[error(
        "authority {authority:?} is withdrawn: {files} changed and the policy could not be loaded again"
    )]
    Withdrawn {
        /// The authority's name in the policy.
        authority: String,
        /// The files that changed, as the policy names them (shown escaped).
        files: String,
    },
    /// A keyless authority, and the signature carries no Fulcio certificate.
    #[error(
        "carries no Fulcio certificate, so it is not a keyless signature for authority {authority:?}"
    )]
    NotKeyless {
        /// The keyless authority's name in the policy.
        authority: String,
    },
    /// A `certificates` authority, and the signature carries no certificate annotation.
    #[error("carries no certificate, so it is not signed for certificates authority {authority:?}")]
    NoCertificate {
        /// The authority's name in the policy.
        authority: String,
    },
    /// A `certificates` authority, and the signature's certificate is unreadable, does not
    /// chain to its roots, or matches none of its identities.
    #[error("not verified for certificates authority {authority:?}")]
    Certificate {
        /// The authority's name in the policy.
        authority: String,
        /// What is wrong with the certificate.
        #[source]
        source: Arc<crate::trust::CertificateError>,
    },
    /// The signature verified, but it has no transparency-log entry and the authority requires one.
    #[error("has no Rekor entry, and authority {authority:?} requires one (tlog: required)")]
    NoTlogEntry {
        /// The authority's name in the policy.
        authority: String,
    },
    /// A combination this verifier does not support yet.
    #[error("{what} is not supported yet, so authority {authority:?} cannot be satisfied")]
    NotSupported {
        /// The authority's name in the policy.
        authority: String,
        /// What is not supported.
        what: String,
    },
    /// An attestation verified, but its statement attests another predicate type.
    #[error("attests {found:?}, not {expected}")]
    PredicateTypeMismatch {
        /// The predicate type asked for.
        expected: String,
        /// The statement's predicate type.
        found: String,
    },
    /// An attestation verified, but no subject of its statement names the artifact.
    #[error("attestation is about another artifact ({subjects}), not {expected}")]
    SubjectMismatch {
        /// The digests the statement's subjects name (the first few).
        subjects: String,
        /// The digests the artifact is known by.
        expected: String,
    },
    /// Discovery could not examine this location (a limit, content that is not what it
    /// claims, a referrer the registry lists but lacks): no authority can be satisfied by it.
    #[error("not examined: {detail}")]
    NotExamined {
        /// Why it was not examined.
        detail: String,
    },
}

/// Why what an attached bundle or an attestation signs is not what was asked for: not a DSSE
/// envelope, not an in-toto statement, not a cosign image signature for the verified digest.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StatementError {
    /// A message-signature bundle: it signs bytes, not an in-toto statement about an image.
    #[error(
        "the bundle carries no DSSE envelope, so it signs no in-toto statement (not a cosign image signature or attestation)"
    )]
    NoEnvelope,
    /// The DSSE payload does not decode.
    #[error("DSSE payload is not base64")]
    NotBase64(#[source] base64::DecodeError),
    /// A key repeated in the statement (a subject's digest twice could bind another image).
    #[error("the in-toto statement is ambiguous: {0}")]
    Ambiguous(String),
    /// The DSSE payload is not an in-toto statement.
    #[error("DSSE payload is not an in-toto statement")]
    NotStatement(#[source] serde_json::Error),
    /// The statement is an attestation (another predicate type), not a signature.
    #[error("the bundle is an attestation ({predicate_type}), not a signature")]
    Attestation {
        /// The statement's predicate type.
        predicate_type: String,
    },
    /// An attestation layer that is not a DSSE envelope.
    #[error("the attestation is not a DSSE envelope")]
    Envelope(#[source] serde_json::Error),
    /// A DSSE envelope without any signature.
    #[error("the DSSE envelope carries no signature")]
    NoSignature,
    /// A DSSE envelope with more signatures than are checked.
    #[error("the DSSE envelope carries {count} signatures, more than the {max} checked")]
    TooManySignatures {
        /// How many it carries.
        count: usize,
        /// How many are checked at most.
        max: usize,
    },
    /// The envelope signs something else than an in-toto statement.
    #[error(
        "DSSE payload type {found:?} is not an in-toto statement ({})",
        crate::candidate::IN_TOTO_MEDIA_TYPE
    )]
    PayloadType {
        /// The envelope's payload type.
        found: String,
    },
    /// The statement's `_type` is neither in-toto Statement v0.1 nor v1.
    #[error("statement type {found:?} is not in-toto Statement v0.1 or v1")]
    StatementType {
        /// The statement's `_type`.
        found: String,
    },
    /// The verified digest is not SHA-256, which attached bundles sign.
    #[error("{digest} is not a sha256 digest")]
    NotSha256 {
        /// The verified digest.
        digest: String,
    },
}

impl StatementError {
    /// The refusal of [`crate::payload::check_unambiguous_keys`] as a statement error: an
    /// ambiguous key, or not a statement (not JSON that reads whole).
    pub(crate) fn of_keys(refused: crate::payload::KeysRefused) -> Self {
        match refused {
            crate::payload::KeysRefused::NotJson(e) => StatementError::NotStatement(e),
            crate::payload::KeysRefused::Ambiguous(detail) => StatementError::Ambiguous(detail),
        }
    }
}

impl Rejection {
    /// A rejection of the signature at `location`.
    pub fn new(location: impl Into<String>, kind: RejectionKind) -> Self {
        Rejection {
            location: location.into(),
            kind,
        }
    }

    /// Where the signature was found.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// What was wrong with it.
    pub fn kind(&self) -> &RejectionKind {
        &self.kind
    }

    /// The whole story for a person: the location, what was wrong, and every cause.
    pub fn reason(&self) -> String {
        crate::error_chain(self)
    }

    /// The failure class this rejection stands for when no signature satisfied the rule.
    pub fn class(&self) -> Failure {
        match &self.kind {
            RejectionKind::NoTlogEntry { .. } => Failure::Tlog,
            RejectionKind::Bundle { source, .. } => bundle_class(source),
            RejectionKind::DigestMismatch { .. }
            | RejectionKind::IdentityMismatch { .. }
            | RejectionKind::SubjectMismatch { .. } => Failure::Mismatch,
            // Verified, but of another type: no statement of the type asked for.
            RejectionKind::PredicateTypeMismatch { .. } => Failure::Unattested,
            RejectionKind::AnnotationMismatch { .. } => Failure::Annotation,
            RejectionKind::TrustRootUnavailable { .. } | RejectionKind::Withdrawn { .. } => {
                Failure::Policy
            }
            RejectionKind::NotKeyless { .. }
            | RejectionKind::NoCertificate { .. }
            | RejectionKind::Certificate { .. }
            | RejectionKind::SignatureEncoding
            | RejectionKind::BadSignature { .. }
            | RejectionKind::Statement { .. }
            | RejectionKind::NotSupported { .. }
            | RejectionKind::Payload(_) => Failure::Untrusted,
            // What discovery could not examine is the registry's content, not the artifact's
            // signature: no verdict on the artifact from it.
            RejectionKind::NotExamined { .. } => Failure::Registry,
        }
    }

    /// How telling this rejection is when a signature satisfied no authority: a signature
    /// whose crypto held but whose payload is wrong says most; one of another kind, least.
    pub fn rank(&self) -> u8 {
        match &self.kind {
            RejectionKind::NotKeyless { .. } | RejectionKind::NoCertificate { .. } => 0,
            RejectionKind::SignatureEncoding | RejectionKind::BadSignature { .. } => 1,
            // An unavailable trust root ranks as the bundle rejection it used to be reported as.
            RejectionKind::Bundle { .. }
            | RejectionKind::TrustRootUnavailable { .. }
            | RejectionKind::Withdrawn { .. }
            | RejectionKind::Statement { .. }
            | RejectionKind::NoTlogEntry { .. }
            | RejectionKind::Certificate { .. }
            | RejectionKind::NotSupported { .. } => 2,
            RejectionKind::Payload(_)
            | RejectionKind::DigestMismatch { .. }
            | RejectionKind::IdentityMismatch { .. }
            | RejectionKind::AnnotationMismatch { .. }
            | RejectionKind::SubjectMismatch { .. }
            | RejectionKind::PredicateTypeMismatch { .. } => 3,
            // The most telling: it might have been the signature that satisfies the rule.
            RejectionKind::NotExamined { .. } => 4,
        }
    }
}

/// A bundle that failed on its transparency-log proof is `tlog` (the signer may be the right one,
/// the log evidence is not); every other bundle failure leaves the signer unproven: `untrusted`.
fn bundle_class(e: &BundleError) -> Failure {
    if matches!(e, BundleError::TrustRoot(_)) {
        // As `TrustRootUnavailable`: the policy's root, not the signature.
        Failure::Policy
    } else if e.is_tlog_failure() {
        Failure::Tlog
    } else {
        Failure::Untrusted
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.location, self.kind)
    }
}

impl std::error::Error for Rejection {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sigstore_verify::{CertificateError, TransparencyLogError};

    fn bundle(source: BundleError) -> Rejection {
        let authority = "a".to_string();
        let source = Arc::new(source);
        Rejection::new("here", RejectionKind::Bundle { authority, source })
    }

    fn verify_error(source: sigstore_verify::Error) -> BundleError {
        let root = "r".to_string();
        BundleError::Verify { root, source }
    }

    /// The class comes from the cause's type: a log proof that fails is `tlog`, a certificate
    /// that fails is `untrusted`, an unavailable trust root is the policy's problem.
    #[test]
    fn the_class_follows_the_typed_cause() {
        let proof = TransparencyLogError::InclusionProof("root hash differs".into());
        let r = bundle(verify_error(proof.into()));
        assert_eq!(r.class(), Failure::Tlog);
        assert!(
            r.reason().contains("invalid inclusion proof"),
            "{}",
            r.reason()
        );
        let chain = CertificateError::ChainInvalid("not issued by the CA".into());
        assert_eq!(
            bundle(verify_error(chain.into())).class(),
            Failure::Untrusted
        );
        let signature = sigstore_verify::Error::SignatureInvalid("bad".into());
        assert_eq!(bundle(verify_error(signature)).class(), Failure::Untrusted);
        assert_eq!(bundle(BundleError::NotLogged).class(), Failure::Tlog);
        let kind = RejectionKind::TrustRootUnavailable {
            authority: "a".into(),
            root: "corp".into(),
        };
        assert_eq!(Rejection::new("here", kind).class(), Failure::Policy);
        // A root whose verifier cannot be built when first needed is the policy's too.
        let unusable = crate::trust::TrustRoot::from_json("{}", "corp").unwrap_err();
        assert_eq!(
            bundle(BundleError::TrustRoot(unusable)).class(),
            Failure::Policy
        );
    }

    /// Display says this layer; the cause is in `source()`, and `reason()` says both once.
    #[test]
    fn the_cause_stays_in_source() {
        let r = bundle(BundleError::ChainIncludesRoot);
        assert_eq!(r.to_string(), "here: not verified for authority \"a\"");
        let source = std::error::Error::source(&r).map(ToString::to_string);
        assert_eq!(source, Some(BundleError::ChainIncludesRoot.to_string()));
        assert_eq!(
            r.reason(),
            format!(
                "here: not verified for authority \"a\": {}",
                BundleError::ChainIncludesRoot
            )
        );
    }
}
