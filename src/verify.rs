//! Verifying one signature candidate against one authority. Pure: no I/O, no policy.
//! Success is evidence ([`VerifiedSignature`], which only this module can make); failure is a
//! typed [`Rejection`] whose Display a person can act on.

use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::bundle::{
    BundleArtifact, BundleAuthority, BundleError, BundleEvidence, CERTIFICATE_ANNOTATION,
    ParsedBundle, REKOR_BUNDLE_ANNOTATION, verify_bundle,
};
use crate::candidate::{BundleCandidate, COSIGN_SIGN_PREDICATE, SignatureCandidate};
use crate::payload::SimpleSigning;
use crate::reference::Digest;
use crate::signature_place::{RepositoryPrefix, remap};
use crate::trust::{Identity, PublicKey, TrustRoot};

mod attestation;
mod pki;
mod rejection;
mod statement;
pub use attestation::{
    AttestationExpectation, MAX_ENVELOPE_SIGNATURES, PreparedAttestation,
    RFC3161_TIMESTAMP_ANNOTATION, VerifiedAttestation, verify_attestation,
};
pub use pki::{
    CertificatesAuthority, verify_attached_certificate_bundle, verify_certificate_signature,
};
pub use rejection::{Rejection, RejectionKind, StatementError};
pub use statement::{ArtifactDigestError, ArtifactDigests, STATEMENT_V01, STATEMENT_V1};

/// A legacy signature candidate, prepared to be checked against several authorities: its
/// bundle form (for Rekor and certificate checks) is built and parsed at most once.
pub struct PreparedSignature<'c> {
    candidate: &'c SignatureCandidate,
    bundle: OnceCell<Result<ParsedBundle, Arc<BundleError>>>,
}

impl<'c> PreparedSignature<'c> {
    /// Prepare `candidate`; nothing is parsed until an authority needs it.
    pub fn new(candidate: &'c SignatureCandidate) -> Self {
        PreparedSignature {
            candidate,
            bundle: OnceCell::new(),
        }
    }

    /// The signature being checked.
    pub fn candidate(&self) -> &'c SignatureCandidate {
        self.candidate
    }

    fn bundle(&self) -> Result<&ParsedBundle, &Arc<BundleError>> {
        self.bundle
            .get_or_init(|| {
                let c = self.candidate;
                ParsedBundle::from_legacy(&c.payload, &c.signature, &c.annotations)
                    .map_err(Arc::new)
            })
            .as_ref()
    }
}

/// An attached Sigstore bundle, parsed once for every authority it is checked against; its
/// in-toto statement is read once, after the first successful verification.
pub struct PreparedBundle<'c> {
    candidate: &'c BundleCandidate,
    parsed: Result<ParsedBundle, Arc<BundleError>>,
    statement: OnceCell<Result<Statement, Arc<StatementError>>>,
}

impl<'c> PreparedBundle<'c> {
    /// Parse `candidate` once (a parse failure is every authority's rejection).
    pub fn new(candidate: &'c BundleCandidate) -> Self {
        PreparedBundle {
            candidate,
            parsed: ParsedBundle::parse(&candidate.json).map_err(Arc::new),
            statement: OnceCell::new(),
        }
    }

    /// The bundle being checked.
    pub fn candidate(&self) -> &'c BundleCandidate {
        self.candidate
    }

    /// Whether the bundle carries transparency-log entries (false when it does not parse).
    pub fn has_tlog_entries(&self) -> bool {
        self.parsed
            .as_ref()
            .is_ok_and(ParsedBundle::has_tlog_entries)
    }
}

/// How the payload's `docker-reference` must relate to the reference being verified.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum SignedIdentity {
    /// The signed repository (tag ignored) equals the verified reference's repository.
    #[default]
    MatchRepository,
    /// The signed repository equals this one (mirrors, air-gapped copies, OCI layouts).
    ExactRepository(String),
    /// No check of `docker-reference` (cosign's own default); the digest is still bound.
    Ignore,
    /// containers/image's `remapIdentity`: for a reference under `prefix` (on path-segment
    /// boundaries), the signed repository must be the reference's with `prefix` replaced by
    /// `signed_prefix` (a proxy cache keeping the upstream's signatures); any other reference
    /// is checked as [`SignedIdentity::MatchRepository`].
    RemapPrefix {
        /// The prefix of the names verified (`harbor.corp/dockerhub`).
        prefix: RepositoryPrefix,
        /// What signatures name instead (`docker.io`).
        signed_prefix: RepositoryPrefix,
    },
}

/// What a signature must say to count for this reference.
#[derive(Debug, Clone)]
pub struct Expectation {
    /// The digest being verified.
    pub digest: Digest,
    /// The verified reference's repository name (`registry/repository` or `oci-layout:PATH`).
    pub repository: String,
    /// How the payload's `docker-reference` must relate to `repository`.
    pub signed_identity: SignedIdentity,
    /// Payload annotations that must be present with these values.
    pub annotations: BTreeMap<String, String>,
}

/// A key authority, as the policy names it.
#[derive(Debug, Clone, Copy)]
pub struct KeyAuthority<'a> {
    /// The authority's name in the policy.
    pub name: &'a str,
    /// The key that must have signed.
    pub key: &'a PublicKey,
}

/// Evidence that a signature verified: which authority, which key, where it was found.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifiedSignature {
    authority: String,
    #[serde(flatten)]
    evidence: Evidence,
    location: String,
    /// The repository the signature claims (legacy payloads); bundles sign the digest only.
    #[serde(skip_serializing_if = "Option::is_none")]
    docker_reference: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
    /// Who made it beyond what the evidence says: a `certificates` leaf's key and every SAN
    /// (see [`VerifiedSignature::signer`]).
    #[serde(skip)]
    signer: Vec<String>,
}

/// How a signature was tied to its authority.
#[derive(Debug, Clone, Serialize)]
#[serde(
    tag = "kind",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
#[non_exhaustive]
pub enum Evidence {
    /// Signed by a public key named in the policy (with its Rekor entry when one was checked).
    Key {
        /// `sha256:<hex>` of the key's DER.
        key_fingerprint: String,
        /// The Rekor log index, when an entry was verified.
        #[serde(skip_serializing_if = "Option::is_none")]
        log_index: Option<i64>,
    },
    /// Signed with a Fulcio certificate for this identity, logged in Rekor.
    Keyless {
        /// The certificate's SAN.
        identity: String,
        /// The certificate's OIDC issuer.
        issuer: String,
        /// The Rekor log index.
        #[serde(skip_serializing_if = "Option::is_none")]
        log_index: Option<i64>,
        /// When Rekor integrated the entry (the signing time the certificate was checked at).
        #[serde(skip_serializing_if = "Option::is_none")]
        integrated_time: Option<String>,
        /// The trust root the certificate chains to.
        trust_root: String,
    },
    /// Signed with a certificate from a `certificates` authority's CAs (a CA of one's own).
    Certificate {
        /// The certificate's SAN that matched the authority's identities.
        identity: String,
        /// The Rekor log index, when an entry was verified.
        #[serde(skip_serializing_if = "Option::is_none")]
        log_index: Option<i64>,
        /// When Rekor integrated the entry (the time the chain was checked at).
        #[serde(skip_serializing_if = "Option::is_none")]
        integrated_time: Option<String>,
    },
}

impl Evidence {
    /// How a verified bundle tied its signature to `who`: the key's fingerprint, or the
    /// certificate's identity and issuer; with the log entry and the trust root it names.
    fn of_bundle(who: BundleAuthority<'_>, e: BundleEvidence) -> Evidence {
        match who {
            BundleAuthority::Key(key) | BundleAuthority::KeyWithoutTlog(key) => Evidence::Key {
                key_fingerprint: key.fingerprint(),
                log_index: e.log_index,
            },
            BundleAuthority::Identities(_) => Evidence::Keyless {
                identity: e.identity.unwrap_or_default(),
                issuer: e.issuer.unwrap_or_default(),
                log_index: e.log_index,
                integrated_time: e.integrated_time,
                trust_root: e.trust_root,
            },
        }
    }
}

impl VerifiedSignature {
    /// The authority (its name in the policy) this signature satisfied.
    pub fn authority(&self) -> &str {
        &self.authority
    }
    /// How the signature was tied to the authority.
    pub fn evidence(&self) -> &Evidence {
        &self.evidence
    }
    /// Where the signature was found.
    pub fn location(&self) -> &str {
        &self.location
    }
    /// The repository a legacy payload names (bundles name none).
    pub fn docker_reference(&self) -> Option<&str> {
        self.docker_reference.as_deref()
    }
    /// The signed annotations.
    pub fn annotations(&self) -> &BTreeMap<String, String> {
        &self.annotations
    }

    /// Who made the signature, as principals: `key:<fingerprint>` for a key (a `certificates`
    /// leaf's key included), `san:<SAN>` for the SAN a `certificates` authority matched,
    /// `id:<issuer> <SAN>` for a keyless identity. Two signatures sharing a principal are one
    /// signer, which a threshold counts once.
    pub fn signer(&self) -> Vec<String> {
        let mut out = match &self.evidence {
            Evidence::Key {
                key_fingerprint, ..
            } => vec![format!("key:{key_fingerprint}")],
            Evidence::Keyless {
                identity, issuer, ..
            } => vec![format!("id:{issuer}\0{identity}")],
            Evidence::Certificate { identity, .. } => vec![format!("san:{identity}")],
        };
        out.extend(self.signer.iter().cloned());
        out
    }

    /// Cut what the signed content and the registry control (the location, the claimed
    /// repository, the certificate's identity and issuer, payload annotations) to `max` bytes
    /// each, and keep at most `max_annotations` annotations (the first by key).
    pub fn bound(&mut self, max: usize, max_annotations: usize) {
        use crate::bounded::cut_in_place;
        cut_in_place(&mut self.location, max);
        if let Some(r) = &mut self.docker_reference {
            cut_in_place(r, max);
        }
        match &mut self.evidence {
            Evidence::Keyless {
                identity, issuer, ..
            } => {
                cut_in_place(identity, max);
                cut_in_place(issuer, max);
            }
            Evidence::Certificate { identity, .. } => cut_in_place(identity, max),
            Evidence::Key { .. } => {}
        }
        let over = self.annotations.len() > max_annotations
            || self
                .annotations
                .iter()
                .any(|(k, v)| k.len() > max || v.len() > max);
        if over {
            let all = std::mem::take(&mut self.annotations);
            let dropped = all.len().saturating_sub(max_annotations);
            self.annotations = all
                .into_iter()
                .take(max_annotations)
                .map(|(k, v)| {
                    (
                        crate::bounded::cut(&k, max).into_owned(),
                        crate::bounded::cut(&v, max).into_owned(),
                    )
                })
                .collect();
            if dropped > 0 {
                self.annotations.insert(
                    "ocigate.cut".into(),
                    format!("{dropped} more annotations, not kept"),
                );
            }
        }
    }

    /// About how many bytes this holds (for cache weights).
    pub fn approx_bytes(&self) -> usize {
        let evidence = match &self.evidence {
            Evidence::Key {
                key_fingerprint, ..
            } => key_fingerprint.len(),
            Evidence::Keyless {
                identity,
                issuer,
                integrated_time,
                trust_root,
                ..
            } => {
                identity.len()
                    + issuer.len()
                    + trust_root.len()
                    + integrated_time.as_ref().map_or(0, String::len)
            }
            Evidence::Certificate {
                identity,
                integrated_time,
                ..
            } => identity.len() + integrated_time.as_ref().map_or(0, String::len),
        };
        let annotations: usize = self
            .annotations
            .iter()
            .map(|(k, v)| k.len() + v.len() + 64)
            .sum();
        160 + self.authority.len()
            + evidence
            + self.location.len()
            + self.docker_reference.as_ref().map_or(0, String::len)
            + annotations
    }
}

/// Verify `candidate` as a signature by `authority` over `expect.digest`.
///
/// Order matters: the signature is checked over the exact payload bytes before anything in the
/// payload is believed; then the digest binding, the signed identity and the annotations.
pub fn verify_key_signature(
    candidate: &SignatureCandidate,
    authority: KeyAuthority<'_>,
    expect: &Expectation,
) -> Result<VerifiedSignature, Rejection> {
    let location = candidate.location.clone();
    let sig = crate::decode_base64(&candidate.signature)
        .map_err(|_| Rejection::new(location.clone(), RejectionKind::SignatureEncoding))?;
    if !authority.key.verify(&candidate.payload, &sig) {
        let authority = authority.name.to_string();
        return Err(Rejection::new(
            location,
            RejectionKind::BadSignature { authority },
        ));
    }
    let (docker_reference, annotations) = check_payload(candidate, expect)?;
    Ok(VerifiedSignature {
        authority: authority.name.to_string(),
        evidence: Evidence::Key {
            key_fingerprint: authority.key.fingerprint(),
            log_index: None,
        },
        location,
        docker_reference: Some(docker_reference),
        annotations,
        signer: Vec::new(),
    })
}

/// As [`verify_key_signature`], and the signature's Rekor entry (the layer's SET and body)
/// must verify under `root` and match this signature, key and payload.
pub fn verify_key_signature_logged(
    prepared: &PreparedSignature<'_>,
    authority: KeyAuthority<'_>,
    root: &TrustRoot,
    expect: &Expectation,
) -> Result<VerifiedSignature, Rejection> {
    let candidate = prepared.candidate;
    let mut verified = verify_key_signature(candidate, authority, expect)?;
    if !candidate.annotations.contains_key(REKOR_BUNDLE_ANNOTATION) {
        let authority = authority.name.to_string();
        return Err(Rejection::new(
            candidate.location.clone(),
            RejectionKind::NoTlogEntry { authority },
        ));
    }
    let evidence = bundle_check(
        prepared,
        authority.name,
        BundleAuthority::Key(authority.key),
        root,
    )?;
    verified.evidence = Evidence::Key {
        key_fingerprint: authority.key.fingerprint(),
        log_index: evidence.log_index,
    };
    Ok(verified)
}

/// A keyless authority: certificates from `root`'s Fulcio CAs for one of `identities`.
#[derive(Debug, Clone, Copy)]
pub struct KeylessAuthority<'a> {
    /// The authority's name in the policy.
    pub name: &'a str,
    /// The identities accepted (any one).
    pub identities: &'a [Identity],
    /// The trust root whose Fulcio CAs and Rekor logs count.
    pub root: &'a TrustRoot,
}

/// Verify a keyless legacy signature: the certificate chains to a Fulcio CA of the root and was
/// valid at the Rekor integrated time, its SCT and the Rekor SET verify, the Rekor body matches
/// signature, certificate and payload hash, the identity matches; then the payload checks.
pub fn verify_keyless_signature(
    prepared: &PreparedSignature<'_>,
    authority: KeylessAuthority<'_>,
    expect: &Expectation,
) -> Result<VerifiedSignature, Rejection> {
    let candidate = prepared.candidate;
    if !candidate.annotations.contains_key(CERTIFICATE_ANNOTATION) {
        let authority = authority.name.to_string();
        return Err(Rejection::new(
            candidate.location.clone(),
            RejectionKind::NotKeyless { authority },
        ));
    }
    let evidence = bundle_check(
        prepared,
        authority.name,
        BundleAuthority::Identities(authority.identities),
        authority.root,
    )?;
    let (docker_reference, annotations) = check_payload(candidate, expect)?;
    let who = BundleAuthority::Identities(authority.identities);
    Ok(VerifiedSignature {
        authority: authority.name.to_string(),
        evidence: Evidence::of_bundle(who, evidence),
        location: candidate.location.clone(),
        docker_reference: Some(docker_reference),
        annotations,
        signer: Vec::new(),
    })
}

/// Verify a Sigstore bundle attached to the image (cosign v3): the bundle over the image digest
/// (its DSSE in-toto statement must name the digest) by `who` under `root`; then the statement
/// must be a cosign signature (predicate `https://sigstore.dev/cosign/sign/v1`) carrying the
/// required annotations. Such bundles claim no repository, so `signedIdentity` has nothing to
/// compare; the digest binding is what they sign.
pub fn verify_attached_bundle(
    prepared: &PreparedBundle<'_>,
    authority: &str,
    who: BundleAuthority<'_>,
    root: &TrustRoot,
    expect: &Expectation,
) -> Result<VerifiedSignature, Rejection> {
    let location = prepared.candidate.location.clone();
    let statement_error = |source| statement_rejection(&location, authority, source);
    let parsed = prepared
        .parsed
        .as_ref()
        .map_err(|e| bundle_rejection(&location, authority, e.clone()))?;
    let digest = sha256_bytes(&expect.digest).map_err(|e| statement_error(Arc::new(e)))?;
    let evidence = verify_bundle(parsed, BundleArtifact::Sha256(digest), who, root)
        .map_err(|e| bundle_rejection(&location, authority, Arc::new(e)))?;
    let annotations = attached_statement(prepared, parsed, authority, expect)?;
    let evidence = Evidence::of_bundle(who, evidence);
    Ok(VerifiedSignature {
        authority: authority.to_string(),
        evidence,
        location,
        docker_reference: None,
        annotations,
        signer: Vec::new(),
    })
}

/// Why `authority` did not accept the bundle at `location`: its statement.
fn statement_rejection(location: &str, authority: &str, source: Arc<StatementError>) -> Rejection {
    let authority = authority.to_string();
    Rejection::new(location, RejectionKind::Statement { authority, source })
}

/// A verified attached bundle's statement: a cosign signature (predicate
/// `https://sigstore.dev/cosign/sign/v1`) of the digest, carrying the required annotations
/// (which are returned).
fn attached_statement(
    prepared: &PreparedBundle<'_>,
    parsed: &ParsedBundle,
    authority: &str,
    expect: &Expectation,
) -> Result<BTreeMap<String, String>, Rejection> {
    let location = prepared.candidate.location.clone();
    let statement_error = |source| statement_rejection(&location, authority, source);
    let statement = prepared
        .statement
        .get_or_init(|| dsse_statement(parsed).map_err(Arc::new))
        .as_ref()
        .map_err(|e| statement_error(e.clone()))?;
    if statement.predicate_type != COSIGN_SIGN_PREDICATE {
        let predicate_type = statement.predicate_type.clone();
        let e = StatementError::Attestation { predicate_type };
        return Err(statement_error(Arc::new(e)));
    }
    let subject = statement.subject_for(&expect.digest).ok_or_else(|| {
        let kind = RejectionKind::DigestMismatch {
            signed: statement.signed_digests(),
            expected: expect.digest.to_string(),
        };
        Rejection::new(location.clone(), kind)
    })?;
    let annotations = subject.annotations.clone();
    check_annotations(&location, expect, &annotations)?;
    Ok(annotations)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Statement {
    #[serde(default)]
    subject: Vec<StatementSubject>,
    #[serde(default)]
    predicate_type: String,
}

#[derive(Deserialize)]
struct StatementSubject {
    #[serde(default)]
    digest: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

impl Statement {
    /// The subject naming `digest` (SHA-256), if any.
    fn subject_for(&self, digest: &Digest) -> Option<&StatementSubject> {
        self.subject
            .iter()
            .find(|s| s.digest.get("sha256").map(String::as_str) == Some(digest.hex()))
    }

    /// Every SHA-256 digest the statement names, for a mismatch's message.
    fn signed_digests(&self) -> String {
        self.subject
            .iter()
            .filter_map(|s| s.digest.get("sha256"))
            .map(|h| format!("sha256:{h}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The 32 bytes of a SHA-256 digest (attached bundles sign SHA-256 digests only).
fn sha256_bytes(digest: &Digest) -> Result<[u8; 32], StatementError> {
    let mut bytes = [0u8; 32];
    if digest.algorithm() != "sha256" || hex::decode_to_slice(digest.hex(), &mut bytes).is_err() {
        let digest = digest.to_string();
        return Err(StatementError::NotSha256 { digest });
    }
    Ok(bytes)
}

/// The in-toto statement inside a bundle's DSSE envelope (read after the envelope verified):
/// the envelope's payload type in-toto's, the statement read as attestations are (an object of
/// `_type` v0.1 or v1, subjects objects, no ambiguous key: a subject's digest twice could bind
/// to another image for cosign), then its subjects' annotations.
fn dsse_statement(parsed: &ParsedBundle) -> Result<Statement, StatementError> {
    let bytes = parsed.dsse_payload().ok_or(StatementError::NoEnvelope)?;
    let payload_type = parsed.dsse_payload_type().unwrap_or_default();
    if payload_type != crate::candidate::IN_TOTO_MEDIA_TYPE {
        let found = crate::bounded::cut(payload_type, 256).into_owned();
        return Err(StatementError::PayloadType { found });
    }
    statement::Statement::parse(bytes)?.check_type()?;
    serde_json::from_slice(bytes).map_err(StatementError::NotStatement)
}

/// A bundle that did not verify for `authority`. One that verified but carries no log entry
/// the authority requires says so as plainly as a legacy signature without one does.
fn bundle_rejection(location: &str, authority: &str, source: Arc<BundleError>) -> Rejection {
    let authority = authority.to_string();
    let kind = if matches!(*source, BundleError::NotLogged) {
        RejectionKind::NoTlogEntry { authority }
    } else {
        RejectionKind::Bundle { authority, source }
    };
    Rejection::new(location, kind)
}

/// The layer as a bundle, verified over the payload bytes.
fn bundle_check(
    prepared: &PreparedSignature<'_>,
    authority: &str,
    who: BundleAuthority<'_>,
    root: &TrustRoot,
) -> Result<BundleEvidence, Rejection> {
    let candidate = prepared.candidate;
    let location = candidate.location.as_str();
    let parsed = prepared
        .bundle()
        .map_err(|e| bundle_rejection(location, authority, e.clone()))?;
    verify_bundle(parsed, BundleArtifact::Bytes(&candidate.payload), who, root)
        .map_err(|e| bundle_rejection(location, authority, Arc::new(e)))
}

/// Every annotation the policy requires, present with its value among the signed ones.
fn check_annotations(
    location: &str,
    expect: &Expectation,
    signed: &BTreeMap<String, String>,
) -> Result<(), Rejection> {
    for (k, v) in &expect.annotations {
        let found = signed.get(k);
        if found != Some(v) {
            let kind = RejectionKind::AnnotationMismatch {
                key: k.clone(),
                expected: v.clone(),
                found: found.cloned(),
            };
            return Err(Rejection::new(location, kind));
        }
    }
    Ok(())
}

/// What the signed payload must say: the verified digest, the signed identity, the annotations.
/// Only called once the signature over these exact bytes has been checked.
fn check_payload(
    candidate: &SignatureCandidate,
    expect: &Expectation,
) -> Result<(String, BTreeMap<String, String>), Rejection> {
    let location = candidate.location.clone();
    let payload = SimpleSigning::parse(&candidate.payload)
        .map_err(|e| Rejection::new(location.clone(), RejectionKind::Payload(e)))?;
    let signed_digest = &payload.critical.image.docker_manifest_digest;
    if signed_digest != expect.digest.as_str() {
        let kind = RejectionKind::DigestMismatch {
            signed: signed_digest.clone(),
            expected: expect.digest.to_string(),
        };
        return Err(Rejection::new(location, kind));
    }
    let docker_reference = payload.critical.identity.docker_reference.clone();
    check_identity(&docker_reference, expect).map_err(|expected| {
        let signed = docker_reference.clone();
        Rejection::new(
            location.clone(),
            RejectionKind::IdentityMismatch { signed, expected },
        )
    })?;
    let annotations = payload.annotations();
    check_annotations(&location, expect, &annotations)?;
    Ok((docker_reference, annotations))
}

/// `Err(expected)` when the signed reference does not satisfy the identity rule.
fn check_identity(signed: &str, expect: &Expectation) -> Result<(), String> {
    let signed_repo = repository_of(signed);
    match &expect.signed_identity {
        SignedIdentity::Ignore => Ok(()),
        SignedIdentity::MatchRepository => {
            if signed_repo == repository_of(&expect.repository) {
                Ok(())
            } else {
                Err(expect.repository.clone())
            }
        }
        SignedIdentity::RemapPrefix {
            prefix,
            signed_prefix,
        } => {
            let name = repository_of(&expect.repository);
            let want = remap(&name, prefix, signed_prefix).unwrap_or(name);
            if signed_repo == want {
                Ok(())
            } else {
                Err(want)
            }
        }
        SignedIdentity::ExactRepository(want) => {
            if signed_repo == repository_of(want) {
                Ok(())
            } else {
                Err(want.clone())
            }
        }
    }
}

/// `registry/repo[:tag][@digest]` → `registry/repo`, with the host in its one spelling (see
/// [`crate::reference::canonical_host`]); a reference that does not parse is compared as written.
fn repository_of(reference: &str) -> String {
    if let Ok(r) = crate::reference::ImageRef::parse(reference) {
        return r.name();
    }
    let no_digest = reference.split('@').next().unwrap_or(reference);
    let last_slash = no_digest.rfind('/');
    let no_tag = match no_digest.rfind(':') {
        Some(c) if last_slash.is_none_or(|s| c > s) => &no_digest[..c],
        _ => no_digest,
    };
    normalize_hub(no_tag)
}

fn normalize_hub(repo: &str) -> String {
    for prefix in ["index.docker.io/", "registry-1.docker.io/"] {
        if let Some(rest) = repo.strip_prefix(prefix) {
            return format!("docker.io/{rest}");
        }
    }
    repo.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::key::SigningKey;
    use base64::Engine as _;

    fn setup() -> (SigningKey, Digest, Expectation) {
        let key = SigningKey::generate().unwrap();
        let digest = Digest::sha256_of(b"image");
        let expect = Expectation {
            digest: digest.clone(),
            repository: "r.io/acme/app".into(),
            signed_identity: SignedIdentity::MatchRepository,
            annotations: BTreeMap::new(),
        };
        (key, digest, expect)
    }

    fn candidate(key: &SigningKey, payload: Vec<u8>) -> SignatureCandidate {
        let sig = key.sign(&payload).unwrap();
        SignatureCandidate {
            location: "tag x.sig layer 1".into(),
            payload,
            signature: base64::engine::general_purpose::STANDARD.encode(sig),
            annotations: BTreeMap::new(),
        }
    }

    fn payload(repo: &str, d: &Digest, ann: &[(&str, &str)]) -> Vec<u8> {
        let a = ann
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        SimpleSigning::new(repo, d, &a).to_bytes().unwrap()
    }

    #[test]
    fn valid_signature_gives_evidence() {
        let (key, d, expect) = setup();
        let c = candidate(&key, payload("r.io/acme/app", &d, &[]));
        let auth = KeyAuthority {
            name: "release",
            key: key.public_key(),
        };
        let v = verify_key_signature(&c, auth, &expect).unwrap();
        assert_eq!(v.authority(), "release");
        assert_eq!(v.docker_reference(), Some("r.io/acme/app"));
        let Evidence::Key {
            key_fingerprint, ..
        } = v.evidence()
        else {
            panic!("{v:?}")
        };
        assert_eq!(key_fingerprint, &key.public_key().fingerprint());
        // a tag in the signed reference is fine for matchRepository
        let c = candidate(&key, payload("r.io/acme/app:v1", &d, &[]));
        assert!(verify_key_signature(&c, auth, &expect).is_ok());
    }

    #[test]
    fn each_failure_has_its_own_rejection() {
        let (key, d, mut expect) = setup();
        let other = SigningKey::generate().unwrap();
        let auth = KeyAuthority {
            name: "release",
            key: key.public_key(),
        };
        // wrong key
        let c = candidate(&other, payload("r.io/acme/app", &d, &[]));
        assert!(matches!(
            verify_key_signature(&c, auth, &expect),
            Err(e) if matches!(e.kind(), RejectionKind::BadSignature { .. })
        ));
        // tampered payload
        let mut c = candidate(&key, payload("r.io/acme/app", &d, &[]));
        c.payload = payload("r.io/acme/app", &Digest::sha256_of(b"evil"), &[]);
        assert!(matches!(
            verify_key_signature(&c, auth, &expect),
            Err(e) if matches!(e.kind(), RejectionKind::BadSignature { .. })
        ));
        // tampered signature
        let mut c = candidate(&key, payload("r.io/acme/app", &d, &[]));
        c.signature = base64::engine::general_purpose::STANDARD.encode([1u8; 70]);
        assert!(matches!(
            verify_key_signature(&c, auth, &expect),
            Err(e) if matches!(e.kind(), RejectionKind::BadSignature { .. })
        ));
        // line-wrapped base64 is the same signature
        let mut wrapped = candidate(&key, payload("r.io/acme/app", &d, &[]));
        let b64 = wrapped.signature.clone();
        wrapped.signature = format!("{}\n{}\n", &b64[..40], &b64[40..]);
        assert!(verify_key_signature(&wrapped, auth, &expect).is_ok());
        c.signature = "%%%".into();
        assert!(matches!(
            verify_key_signature(&c, auth, &expect),
            Err(e) if matches!(e.kind(), RejectionKind::SignatureEncoding)
        ));
        // replayed: valid signature for another digest
        let c = candidate(
            &key,
            payload("r.io/acme/app", &Digest::sha256_of(b"other"), &[]),
        );
        let e = verify_key_signature(&c, auth, &expect).unwrap_err();
        assert!(
            matches!(e.kind(), RejectionKind::DigestMismatch { .. }),
            "{e}"
        );
        assert!(e.to_string().contains("another image"));
        // identity
        let c = candidate(&key, payload("r.io/acme/other", &d, &[]));
        let e = verify_key_signature(&c, auth, &expect).unwrap_err();
        assert!(
            matches!(e.kind(), RejectionKind::IdentityMismatch { .. }),
            "{e}"
        );
        expect.signed_identity = SignedIdentity::Ignore;
        assert!(verify_key_signature(&c, auth, &expect).is_ok());
        expect.signed_identity = SignedIdentity::ExactRepository("r.io/acme/other".into());
        assert!(verify_key_signature(&c, auth, &expect).is_ok());
        // remapPrefix: r.io/acme/app is under r.io/acme, signed as upstream.io/acme/app
        let remap = |prefix: &str, signed: &str| SignedIdentity::RemapPrefix {
            prefix: RepositoryPrefix::parse(prefix).unwrap(),
            signed_prefix: RepositoryPrefix::parse(signed).unwrap(),
        };
        let upstream = candidate(&key, payload("upstream.io/acme/app:1", &d, &[]));
        expect.signed_identity = remap("r.io/acme", "upstream.io/acme");
        assert!(verify_key_signature(&upstream, auth, &expect).is_ok());
        // the reference's own name no longer counts under the prefix
        let own = candidate(&key, payload("r.io/acme/app", &d, &[]));
        assert!(verify_key_signature(&own, auth, &expect).is_err());
        // not under the prefix (segment boundary): checked as matchRepository
        expect.signed_identity = remap("r.io/ac", "upstream.io/acme");
        assert!(verify_key_signature(&upstream, auth, &expect).is_err());
        assert!(verify_key_signature(&own, auth, &expect).is_ok());
        expect.signed_identity = SignedIdentity::MatchRepository;
        // annotations
        expect.annotations.insert("env".into(), "prod".into());
        let c = candidate(&key, payload("r.io/acme/app", &d, &[("env", "dev")]));
        let e = verify_key_signature(&c, auth, &expect).unwrap_err();
        assert!(
            matches!(e.kind(), RejectionKind::AnnotationMismatch { .. }),
            "{e}"
        );
        let c = candidate(&key, payload("r.io/acme/app", &d, &[]));
        assert!(verify_key_signature(&c, auth, &expect).is_err());
        let c = candidate(
            &key,
            payload("r.io/acme/app", &d, &[("env", "prod"), ("x", "y")]),
        );
        assert!(verify_key_signature(&c, auth, &expect).is_ok());
        // signed garbage
        let c = candidate(&key, b"not json".to_vec());
        assert!(matches!(
            verify_key_signature(&c, auth, &expect),
            Err(e) if matches!(e.kind(), RejectionKind::Payload(_))
        ));
    }

    #[test]
    fn repository_of_strips_tag_and_digest() {
        assert_eq!(repository_of("r.io:5000/a/b:v1"), "r.io:5000/a/b");
        assert_eq!(repository_of("r.io:5000/a/b"), "r.io:5000/a/b");
        assert_eq!(
            repository_of("index.docker.io/a/b@sha256:00"),
            "docker.io/a/b"
        );
    }

    /// An attached bundle signs with what cosign and sigstore-go accept only: an in-toto payload
    /// type, an object of `_type` v0.1 or v1, no ambiguity hidden behind an unreadable member.
    /// Each of these was accepted before (only the predicate type and the subject were read).
    #[test]
    fn attached_bundles_are_in_toto_statements() {
        const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
        let (key, d, expect) = setup();
        let hex = d.hex();
        let subject = format!(r#""subject":[{{"digest":{{"sha256":"{hex}"}}}}]"#);
        let sign_type = format!(r#""predicateType":"{COSIGN_SIGN_PREDICATE}""#);
        let v1 = r#""_type":"https://in-toto.io/Statement/v1""#;
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let other = format!(
            r#""Subject":[{{"digest":{{"sha256":"{}"}}}}]"#,
            "0".repeat(64)
        );
        let in_toto = crate::candidate::IN_TOTO_MEDIA_TYPE;
        let cases = [
            (
                "text/plain",
                format!("{{{v1},{subject},{sign_type}}}"),
                false,
            ),
            (
                in_toto,
                format!(r#"[[{{"digest":{{"sha256":"{hex}"}}}}],"{COSIGN_SIGN_PREDICATE}"]"#),
                false,
            ),
            (
                in_toto,
                format!(r#"{{"_type":"https://example.com/x",{subject},{sign_type}}}"#),
                false,
            ),
            (
                in_toto,
                format!(r#"{{"x":{deep},{v1},{subject},{other},{sign_type}}}"#),
                false,
            ),
            (in_toto, format!("{{{v1},{subject},{sign_type}}}"), true),
        ];
        let root = TrustRoot::embedded_shared().unwrap();
        for (payload_type, payload, good) in cases {
            let mut message = format!(
                "DSSEv1 {} {payload_type} {} ",
                payload_type.len(),
                payload.len()
            )
            .into_bytes();
            message.extend_from_slice(payload.as_bytes());
            let sig = key.sign(&message).unwrap();
            let hint =
                aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.public_key().der());
            let json = serde_json::json!({
                "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
                "verificationMaterial": {"publicKey": {"hint": B64.encode(hint.as_ref())}},
                "dsseEnvelope": {"payload": B64.encode(&payload), "payloadType": payload_type,
                    "signatures": [{"sig": B64.encode(sig)}]},
            })
            .to_string();
            let c = BundleCandidate {
                location: "referrer".into(),
                json,
            };
            let p = PreparedBundle::new(&c);
            let authority = BundleAuthority::KeyWithoutTlog(key.public_key());
            let r = verify_attached_bundle(&p, "a", authority, root, &expect);
            assert_eq!(
                r.is_ok(),
                good,
                "{payload_type} {payload}: {:?}",
                r.err().map(|e| e.reason())
            );
        }
    }
}
