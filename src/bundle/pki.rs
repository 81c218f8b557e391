//! Bundles and legacy layers signed with a certificate from a CA of one's own (a
//! `certificates` authority): the signature and its log entry checked here, the chain left to
//! the caller (`trust::CertificateAuthorities`), since sigstore-verify chains to Fulcio CAs only.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use sigstore_verify::VerificationPolicy;

use super::{
    BundleArtifact, BundleError, BundleEvidence, Checked, ParsedBundle, TLOG_ENTRIES,
    has_log_or_timestamp, non_empty_array, verify_dsse_with_key,
};
use crate::trust::{PublicKey, TrustRoot};

/// What a bundle signed with a certificate of one's own showed: the certificates it carries
/// (leaf first, DER), every verified signing time (none without a log entry or timestamp),
/// and the evidence.
#[derive(Debug)]
pub struct CertificateBundle {
    /// The leaf certificate, DER.
    pub leaf: Vec<u8>,
    /// The bundle's other certificates (intermediates), DER.
    pub chain: Vec<Vec<u8>>,
    /// The verified signing times; empty when the bundle was checked without its log.
    pub times: Vec<SystemTime>,
    /// What was verified.
    pub evidence: BundleEvidence,
}

fn system_times(result: &sigstore_verify::VerificationResult) -> Vec<SystemTime> {
    result
        .verified_timestamps()
        .iter()
        .map(|t| UNIX_EPOCH + Duration::from_secs(u64::try_from(t.as_second()).unwrap_or(0)))
        .collect()
}

/// The certificates a bundle carries, leaf first (v0.3 `certificate`, or v0.1/v0.2
/// `x509CertificateChain`), at most `max` of them.
fn bundle_certificates(v: &serde_json::Value, max: usize) -> Result<Vec<Vec<u8>>, BundleError> {
    let raw: Vec<&serde_json::Value> = match v.pointer("/verificationMaterial/certificate/rawBytes")
    {
        Some(one) => vec![one],
        None => v
            .pointer("/verificationMaterial/x509CertificateChain/certificates")
            .and_then(|c| c.as_array())
            .map(|a| a.iter().map(|c| &c["rawBytes"]).collect())
            .unwrap_or_default(),
    };
    if raw.is_empty() {
        return Err(BundleError::Missing {
            what: "certificate",
        });
    }
    if raw.len() > max {
        let what = format!("{} certificates, more than the {max} allowed", raw.len());
        return Err(BundleError::Legacy { what });
    }
    raw.iter()
        .map(|r| {
            r.as_str()
                .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
                .ok_or(BundleError::Missing {
                    what: "readable certificate",
                })
        })
        .collect()
}

/// A bundle signed with a certificate of one's own. With `log` (the authority's `tlog`
/// requires the log, or `optional` and the bundle has an entry): sigstore-verify checks the
/// signature, the log entry under `log`'s Rekor keys and the entry's time against the
/// certificate, the chain skipped. Without: the DSSE signature is checked with the leaf's key
/// and no time is verified (the caller checks the chain now).
pub fn verify_certificate_bundle(
    parsed: &ParsedBundle,
    artifact: BundleArtifact<'_>,
    log: Option<&TrustRoot>,
    max_certificates: usize,
) -> Result<CertificateBundle, BundleError> {
    let mut certs = bundle_certificates(&parsed.value, max_certificates)?;
    let leaf = certs.remove(0);
    let BundleArtifact::Sha256(digest) = artifact else {
        let what = "a certificates authority verifies image bundles (a SHA-256 digest)";
        return Err(BundleError::Dsse { what: what.into() });
    };
    let Some(root) = log else {
        let key = leaf_key(&leaf)?;
        verify_dsse_with_key(parsed, &key, true)?;
        return Ok(CertificateBundle {
            leaf,
            chain: certs,
            times: Vec::new(),
            evidence: BundleEvidence::unlogged_certificate(),
        });
    };
    if !has_log_or_timestamp(&parsed.value) {
        return Err(BundleError::NotLogged);
    }
    let checked = Checked {
        root,
        bundle: &parsed.bundle,
    };
    let artifact = sigstore_types::Artifact::from_digest(sigstore_types::Sha256Hash::new(digest));
    let policy = VerificationPolicy::any_identity().skip_certificate_chain();
    let result = checked.verify(artifact, &policy)?;
    Ok(CertificateBundle {
        leaf,
        chain: certs,
        times: system_times(&result),
        evidence: BundleEvidence::of(&parsed.value, &result, root),
    })
}

fn leaf_key(der: &[u8]) -> Result<PublicKey, BundleError> {
    use x509_cert::der::{Decode as _, Encode as _};
    let bad = |_| BundleError::Missing {
        what: "readable certificate",
    };
    let cert = x509_cert::Certificate::from_der(der).map_err(bad)?;
    let spki = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(bad)?;
    PublicKey::from_der(&spki, "the bundle's certificate").map_err(|_| BundleError::Missing {
        what: "usable public key",
    })
}

/// A legacy signature whose certificate is from a CA of one's own (a `certificates` authority):
/// its transparency-log entry under `root`'s Rekor keys and the signature over `payload` are
/// verified here; the certificate's chain is the caller's (sigstore-verify checks chains against
/// a trusted root's Fulcio CAs only). Returns the evidence and every verified signing time, at
/// each of which the caller must check the chain.
pub fn verify_logged_certificate(
    parsed: &ParsedBundle,
    payload: &[u8],
    root: &TrustRoot,
) -> Result<(BundleEvidence, Vec<SystemTime>), BundleError> {
    if !non_empty_array(&parsed.value, TLOG_ENTRIES) {
        return Err(BundleError::NotLogged);
    }
    let checked = Checked {
        root,
        bundle: &parsed.bundle,
    };
    let policy = VerificationPolicy::any_identity().skip_certificate_chain();
    let result = checked.verify(sigstore_types::Artifact::from_blob(payload), &policy)?;
    Ok((
        BundleEvidence::of(&parsed.value, &result, root),
        system_times(&result),
    ))
}
