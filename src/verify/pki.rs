//! A legacy cosign signature against a `certificates` authority (a CA of one's own): the leaf
//! from the certificate annotation, chained by `trust::CertificateAuthorities`. Pure: no I/O.

use std::time::SystemTime;

use std::sync::Arc;

use rustls_pki_types::CertificateDer;

use super::{
    Evidence, Expectation, PreparedBundle, PreparedSignature, Rejection, RejectionKind,
    StatementError, VerifiedSignature, attached_statement, bundle_rejection, check_payload,
    sha256_bytes,
};
use crate::bundle::{
    BundleArtifact, CERTIFICATE_ANNOTATION, CHAIN_ANNOTATION, REKOR_BUNDLE_ANNOTATION,
    verify_certificate_bundle, verify_logged_certificate,
};
use crate::trust::{
    CertificateAuthorities, CertificateError, LeafCertificate, MAX_CHAIN_INTERMEDIATES, Matcher,
    TrustRoot, parse_pem_certificates,
};

/// A `certificates` authority, as the policy names it.
#[derive(Debug, Clone, Copy)]
pub struct CertificatesAuthority<'a> {
    /// The authority's name in the policy.
    pub name: &'a str,
    /// The roots and intermediates the leaf must chain to.
    pub cas: &'a CertificateAuthorities,
    /// The SANs accepted (any one).
    pub identities: &'a [Matcher],
    /// Whose Rekor keys prove the signing time; None (`tlog: skip`): the chain is checked now.
    pub log: Option<&'a TrustRoot>,
}

/// Verify a legacy signature made with a certificate from the authority's CAs: the signature
/// over the payload with the leaf's key; the signing time (the Rekor entry's, verified under
/// `log`, or now without one); the chain to a root at that time through the authority's and the
/// signature's intermediates; a SAN among the identities; then the payload checks.
pub fn verify_certificate_signature(
    prepared: &PreparedSignature<'_>,
    authority: CertificatesAuthority<'_>,
    expect: &Expectation,
    now: SystemTime,
) -> Result<VerifiedSignature, Rejection> {
    let candidate = prepared.candidate;
    let location = candidate.location.as_str();
    let name = authority.name;
    let cert_error = |source| certificate_rejection(location, name, source);
    let Some(leaf_pem) = candidate.annotations.get(CERTIFICATE_ANNOTATION) else {
        let kind = RejectionKind::NoCertificate {
            authority: name.to_string(),
        };
        return Err(Rejection::new(location, kind));
    };
    let leaf = LeafCertificate::from_pem(leaf_pem, CERTIFICATE_ANNOTATION).map_err(cert_error)?;
    let chain = signature_chain(candidate.annotations.get(CHAIN_ANNOTATION)).map_err(cert_error)?;
    let sig = crate::decode_base64(&candidate.signature)
        .map_err(|_| Rejection::new(location, RejectionKind::SignatureEncoding))?;
    if !leaf.key.verify(&candidate.payload, &sig) {
        let kind = RejectionKind::BadSignature {
            authority: name.to_string(),
        };
        return Err(Rejection::new(location, kind));
    }
    let (times, log_index, integrated_time) = match authority.log {
        None => (vec![now], None, None),
        Some(root) => {
            if !candidate.annotations.contains_key(REKOR_BUNDLE_ANNOTATION) {
                let kind = RejectionKind::NoTlogEntry {
                    authority: name.to_string(),
                };
                return Err(Rejection::new(location, kind));
            }
            let parsed = prepared
                .bundle()
                .map_err(|e| bundle_rejection(location, name, e.clone()))?;
            let (evidence, times) = verify_logged_certificate(parsed, &candidate.payload, root)
                .map_err(|e| bundle_rejection(location, name, Arc::new(e)))?;
            (times, evidence.log_index, evidence.integrated_time)
        }
    };
    for at in times {
        authority
            .cas
            .verify_chain(&leaf.der, &chain, at)
            .map_err(cert_error)?;
    }
    let identity = matched_san(&leaf, authority.identities).map_err(cert_error)?;
    let (docker_reference, annotations) = check_payload(candidate, expect)?;
    Ok(VerifiedSignature {
        authority: name.to_string(),
        evidence: Evidence::Certificate {
            identity,
            log_index,
            integrated_time,
        },
        location: candidate.location.clone(),
        docker_reference: Some(docker_reference),
        annotations,
        signer: leaf_signer(&leaf),
    })
}

/// The signature's chain annotation (intermediates, and often the root, which counts only if
/// the authority lists it among its roots), bounded in size and count.
fn signature_chain(
    text: Option<&String>,
) -> Result<Vec<CertificateDer<'static>>, CertificateError> {
    let Some(text) = text else {
        return Ok(Vec::new());
    };
    let chain = parse_pem_certificates(text, CHAIN_ANNOTATION).map_err(CertificateError::Pem)?;
    if chain.len() > MAX_CHAIN_INTERMEDIATES {
        return Err(CertificateError::LongChain {
            count: chain.len(),
            max: MAX_CHAIN_INTERMEDIATES,
        });
    }
    Ok(chain)
}

/// Verify a Sigstore bundle attached to the image (cosign v3) made with a certificate from the
/// authority's CAs: the DSSE signature with the leaf's key (and, with `log`, the log entry
/// under its Rekor keys, whose times the chain must hold at; without, now); the chain through
/// the authority's and the bundle's intermediates; a SAN among the identities; then the
/// statement as for any attached bundle.
pub fn verify_attached_certificate_bundle(
    prepared: &PreparedBundle<'_>,
    authority: CertificatesAuthority<'_>,
    expect: &Expectation,
    now: SystemTime,
) -> Result<VerifiedSignature, Rejection> {
    let location = prepared.candidate.location.as_str();
    let name = authority.name;
    let cert_error = |source| certificate_rejection(location, name, source);
    let parsed = prepared
        .parsed
        .as_ref()
        .map_err(|e| bundle_rejection(location, name, e.clone()))?;
    let digest = sha256_bytes(&expect.digest).map_err(|e| {
        let source: Arc<StatementError> = Arc::new(e);
        let kind = RejectionKind::Statement {
            authority: name.to_string(),
            source,
        };
        Rejection::new(location, kind)
    })?;
    let max = MAX_CHAIN_INTERMEDIATES + 1;
    let found =
        verify_certificate_bundle(parsed, BundleArtifact::Sha256(digest), authority.log, max)
            .map_err(|e| bundle_rejection(location, name, Arc::new(e)))?;
    let leaf =
        LeafCertificate::from_der(CertificateDer::from(found.leaf), "the bundle's certificate")
            .map_err(cert_error)?;
    let chain: Vec<CertificateDer<'static>> =
        found.chain.into_iter().map(CertificateDer::from).collect();
    let times = if found.times.is_empty() {
        vec![now]
    } else {
        found.times
    };
    for at in times {
        authority
            .cas
            .verify_chain(&leaf.der, &chain, at)
            .map_err(cert_error)?;
    }
    let identity = matched_san(&leaf, authority.identities).map_err(cert_error)?;
    let annotations = attached_statement(prepared, parsed, name, expect)?;
    Ok(VerifiedSignature {
        authority: name.to_string(),
        evidence: Evidence::Certificate {
            identity,
            log_index: found.evidence.log_index,
            integrated_time: found.evidence.integrated_time,
        },
        location: location.to_string(),
        docker_reference: None,
        annotations,
        signer: leaf_signer(&leaf),
    })
}

/// The principal of a `certificates` leaf beyond the SAN matched: its key (a certificate with
/// two SANs is one signer, whichever an authority matched; every SAN is not taken, or a SAN a
/// CA puts on all its leaves would make all its signers one).
fn leaf_signer(leaf: &LeafCertificate) -> Vec<String> {
    vec![format!("key:{}", leaf.key.fingerprint())]
}

/// The first SAN matching one of `identities`.
fn matched_san(leaf: &LeafCertificate, identities: &[Matcher]) -> Result<String, CertificateError> {
    leaf.match_identity(identities)?;
    Ok(leaf
        .sans
        .iter()
        .find(|s| identities.iter().any(|m| m.matches(s)))
        .cloned()
        .unwrap_or_default())
}

/// Why `authority` did not accept the signature at `location`: its certificate.
fn certificate_rejection(location: &str, authority: &str, source: CertificateError) -> Rejection {
    let kind = RejectionKind::Certificate {
        authority: authority.to_string(),
        source: Arc::new(source),
    };
    Rejection::new(location, kind)
}
