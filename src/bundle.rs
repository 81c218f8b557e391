//! Sigstore bundles (v0.1, v0.2, v0.3; message signatures and DSSE; keyless and key-based;
//! Rekor v1 and v2 entries; inclusion proofs, checkpoints, RFC 3161 timestamps). Pure: no I/O.
//!
//! The cryptographic checks are sigstore-verify's (pinned). This module adds what it leaves to
//! callers: line-wrapped base64 from Go and Python producers is normalised before parsing, a
//! chain that carries its own root is rejected, and identities are matched here (exactly or by
//! regular expression) against the identity and issuer sigstore-verify returns, never skipped.

use serde::Serialize;
use sigstore_trust_root::TrustedRoot;
use sigstore_types::{Bundle, DerPublicKey};
use sigstore_verify::{PublicKeyVerificationPolicy, VerificationPolicy, Verifier};

use crate::trust::PublicKey;
use crate::verify::Matcher;

/// A trusted root (Fulcio CAs, Rekor and CT log keys, TSAs) with the name it was loaded under.
pub struct TrustRoot {
    name: String,
    root: TrustedRoot,
}

impl std::fmt::Debug for TrustRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustRoot")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrustRootError {
    #[error("trusted root {origin}: not a valid trusted_root.json")]
    Invalid {
        origin: String,
        #[source]
        source: sigstore_trust_root::Error,
    },
}

impl TrustRoot {
    /// The Sigstore public-good root compiled into sigstore-trust-root: no network needed.
    pub fn embedded() -> Result<Self, TrustRootError> {
        Self::from_json(
            sigstore_trust_root::SIGSTORE_PRODUCTION_TRUSTED_ROOT,
            "embedded public-good",
        )
    }

    pub fn from_json(text: &str, origin: &str) -> Result<Self, TrustRootError> {
        let root = TrustedRoot::from_json(text).map_err(|source| TrustRootError::Invalid {
            origin: origin.to_string(),
            source,
        })?;
        Ok(TrustRoot {
            name: origin.to_string(),
            root,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

/// What was signed: the bytes, or only their SHA-256 digest.
#[derive(Debug, Clone, Copy)]
pub enum BundleArtifact<'a> {
    Bytes(&'a [u8]),
    Sha256([u8; 32]),
}

/// Who must have signed.
#[derive(Debug, Clone, Copy)]
pub enum BundleAuthority<'a> {
    /// A managed key; the bundle carries no certificate.
    Key(&'a PublicKey),
    /// A Fulcio certificate whose SAN and OIDC issuer match.
    Identity {
        subject: &'a Matcher,
        issuer: &'a Matcher,
    },
}

/// Evidence from a verified bundle.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BundleEvidence {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_index: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub integrated_time: Option<String>,
    pub tlog_verified: bool,
    pub certificate_verified: bool,
    pub sct_verified: bool,
    pub trust_root: String,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    #[error("bundle is not valid JSON")]
    Json(#[source] serde_json::Error),
    #[error("bundle is not a Sigstore bundle this verifier reads")]
    Parse(#[source] sigstore_types::Error),
    #[error(
        "bundle's certificate chain includes a root certificate (a bundle carries the leaf and intermediates only)"
    )]
    ChainIncludesRoot,
    #[error("bundle does not verify against trusted root {root}")]
    Verify {
        root: String,
        #[source]
        source: sigstore_verify::Error,
    },
    #[error("certificate identity {found:?} does not match {expected}")]
    Identity { found: String, expected: String },
    #[error("certificate OIDC issuer {found:?} does not match {expected}")]
    Issuer { found: String, expected: String },
    #[error("bundle's certificate carries no {what}")]
    Missing { what: &'static str },
}

/// Verify a bundle over `artifact` by `authority` under `root`.
pub fn verify_bundle(
    json: &str,
    artifact: BundleArtifact<'_>,
    authority: BundleAuthority<'_>,
    root: &TrustRoot,
) -> Result<BundleEvidence, BundleError> {
    let mut value: serde_json::Value = serde_json::from_str(json).map_err(BundleError::Json)?;
    normalise_base64(&mut value, None);
    if chain_includes_root(&value) {
        return Err(BundleError::ChainIncludesRoot);
    }
    let normalised = serde_json::to_string(&value).map_err(BundleError::Json)?;
    let bundle = Bundle::from_json(&normalised).map_err(BundleError::Parse)?;
    let artifact = match artifact {
        BundleArtifact::Bytes(b) => sigstore_types::Artifact::from_blob(b),
        BundleArtifact::Sha256(d) => {
            sigstore_types::Artifact::from_digest(sigstore_types::Sha256Hash::new(d))
        }
    };
    let verify_err = |source| BundleError::Verify {
        root: root.name.clone(),
        source,
    };
    let verifier = Verifier::new(&root.root).map_err(verify_err)?;
    let result = match authority {
        BundleAuthority::Key(key) => {
            let policy = PublicKeyVerificationPolicy::new(DerPublicKey::new(key.der().to_vec()));
            verifier
                .verify(artifact, &bundle, &policy)
                .map_err(verify_err)?
        }
        BundleAuthority::Identity { subject, issuer } => {
            // The library's identity check is exact-only; it is replaced, not skipped: the
            // identity and issuer it returns from the verified certificate are matched here.
            let policy = VerificationPolicy::any_identity();
            let result = verifier
                .verify(artifact, &bundle, &policy)
                .map_err(verify_err)?;
            if !result.certificate_verified() {
                return Err(BundleError::Missing {
                    what: "verified certificate",
                });
            }
            let found_subject = result
                .identity()
                .map(|s| s.as_str().to_string())
                .ok_or(BundleError::Missing { what: "identity" })?;
            if !subject.matches(&found_subject) {
                return Err(BundleError::Identity {
                    found: found_subject,
                    expected: subject.to_string(),
                });
            }
            let found_issuer = result
                .issuer()
                .map(str::to_string)
                .ok_or(BundleError::Missing {
                    what: "OIDC issuer",
                })?;
            if !issuer.matches(&found_issuer) {
                return Err(BundleError::Issuer {
                    found: found_issuer,
                    expected: issuer.to_string(),
                });
            }
            result
        }
    };
    let log_index = value
        .pointer("/verificationMaterial/tlogEntries/0/logIndex")
        .and_then(|v| v.as_str().and_then(|s| s.parse().ok()).or(v.as_i64()))
        .filter(|_| result.tlog_verified());
    Ok(BundleEvidence {
        identity: result.identity().map(|s| s.as_str().to_string()),
        issuer: result.issuer().map(str::to_string),
        log_index,
        integrated_time: result.integrated_time().map(|t| t.to_string()),
        tlog_verified: result.tlog_verified(),
        certificate_verified: result.certificate_verified(),
        sct_verified: result.sct_verified(),
        trust_root: root.name.clone(),
    })
}

/// Fields the bundle schema defines as base64 (protobuf `bytes`).
const BASE64_FIELDS: &[&str] = &[
    "rawBytes",
    "signature",
    "content",
    "digest",
    "payload",
    "canonicalizedBody",
    "signedEntryTimestamp",
    "signedTimestamp",
    "rootHash",
    "keyId",
    "hashes",
    "sig",
];

/// Remove line breaks and spaces inside base64 values (Go and Python wrap at 64 or 76
/// columns); other strings (checkpoint text, media types) are left as they are.
fn normalise_base64(v: &mut serde_json::Value, key: Option<&str>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                normalise_base64(child, Some(k));
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                normalise_base64(item, key);
            }
        }
        serde_json::Value::String(s)
            if key.is_some_and(|k| BASE64_FIELDS.contains(&k))
                && s.bytes().any(|b| b.is_ascii_whitespace()) =>
        {
            let compact: String = s.chars().filter(|c| !c.is_ascii_whitespace()).collect();
            let base64_alphabet = compact.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_')
            });
            if base64_alphabet {
                *s = compact;
            }
        }
        _ => {}
    }
}

/// Whether the bundle's `x509CertificateChain` ends in a self-signed (root) certificate.
fn chain_includes_root(v: &serde_json::Value) -> bool {
    use base64::Engine as _;
    use x509_cert::der::Decode as _;
    let Some(certs) = v
        .pointer("/verificationMaterial/x509CertificateChain/certificates")
        .and_then(|c| c.as_array())
    else {
        return false;
    };
    certs.iter().skip(1).any(|c| {
        c.get("rawBytes")
            .and_then(|r| r.as_str())
            .and_then(|r| base64::engine::general_purpose::STANDARD.decode(r).ok())
            .and_then(|der| x509_cert::Certificate::from_der(&der).ok())
            .is_some_and(|cert| cert.tbs_certificate.issuer == cert.tbs_certificate.subject)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_normalisation_touches_only_base64_fields() {
        let mut v = serde_json::json!({
            "signature": "AAAA\nBBBB\n",
            "envelope": "origin - 1\n42\n",
            "hashes": ["AA AA", "BB\nBB"],
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        });
        normalise_base64(&mut v, None);
        assert_eq!(v["signature"], "AAAABBBB");
        assert_eq!(v["envelope"], "origin - 1\n42\n");
        assert_eq!(v["hashes"][1], "BBBB");
        assert_eq!(v["hashes"][0], "AAAA");
    }

    #[test]
    fn embedded_root_loads_and_garbage_does_not() {
        assert!(TrustRoot::embedded().is_ok());
        let e = TrustRoot::from_json("{}", "x.json").unwrap_err();
        assert!(e.to_string().contains("x.json"), "{e}");
        let root = TrustRoot::embedded().unwrap();
        let m = Matcher::Exact("a".into());
        let e = verify_bundle(
            "not json",
            BundleArtifact::Bytes(b""),
            BundleAuthority::Identity {
                subject: &m,
                issuer: &m,
            },
            &root,
        )
        .unwrap_err();
        assert!(matches!(e, BundleError::Json(_)), "{e}");
    }
}
