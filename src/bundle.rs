//! Sigstore bundles (v0.1, v0.2, v0.3; message signatures and DSSE; keyless and key-based;
//! Rekor v1 and v2 entries; inclusion proofs, checkpoints, RFC 3161 timestamps). Pure: no I/O.
//!
//! The cryptographic checks are sigstore-verify's (pinned). This module adds what it leaves to
//! callers: line-wrapped base64 from Go and Python producers is normalised before parsing, a
//! chain that carries its own root is rejected, and identities are matched here (exactly or by
//! regular expression) against the identity and issuer sigstore-verify returns, never skipped.

use serde::Serialize;
use sigstore_types::{Bundle, DerPublicKey};
use sigstore_verify::{PublicKeyVerificationPolicy, VerificationPolicy};

use crate::trust::{GitHubWorkflow, Identity, PublicKey, TrustRoot};

mod pki;
pub use pki::{CertificateBundle, verify_certificate_bundle, verify_logged_certificate};

/// What was signed: the bytes, or only their SHA-256 digest.
#[derive(Debug, Clone, Copy)]
pub enum BundleArtifact<'a> {
    /// The signed bytes (a legacy payload, a blob).
    Bytes(&'a [u8]),
    /// The SHA-256 digest of what was signed (an image manifest).
    Sha256([u8; 32]),
    /// The SHA-512 digest of what was signed (npm provenance names its packages so).
    Sha512([u8; 64]),
}

/// Who must have signed.
#[derive(Debug, Clone, Copy)]
pub enum BundleAuthority<'a> {
    /// A managed key; the bundle carries no certificate. Its transparency-log entry must verify.
    Key(&'a PublicKey),
    /// A managed key, with no transparency-log requirement (`tlog: skip`).
    KeyWithoutTlog(&'a PublicKey),
    /// A Fulcio certificate matching any of these identities.
    Identities(&'a [Identity]),
}

/// Evidence from a verified bundle.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BundleEvidence {
    /// The certificate's SAN (keyless bundles).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// The certificate's OIDC issuer (keyless bundles).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// The index of the verified transparency-log entry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_index: Option<i64>,
    /// The verified signing time (log integration or RFC 3161 timestamp).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub integrated_time: Option<String>,
    /// Whether a transparency-log entry was verified.
    pub tlog_verified: bool,
    /// Whether a certificate was verified against the root's CAs.
    pub certificate_verified: bool,
    /// Whether the certificate's SCT was verified.
    pub sct_verified: bool,
    /// The trust root's name.
    pub trust_root: String,
    /// GitHub Actions claims of the certificate, when it has any.
    #[serde(skip_serializing_if = "GitHubWorkflow::is_empty")]
    pub github_workflow: GitHubWorkflow,
}

/// Most JSON values a bundle may hold. A Sigstore bundle, even one carrying a large SBOM (its
/// statement is one base64 string), has a few hundred; a 32 MiB document of small values would
/// take about a gigabyte as the tree it is read into, before any signature is checked.
pub const MAX_BUNDLE_VALUES: usize = 100_000;

/// Why a bundle did not verify: Display says which check failed, the library's error stays in
/// `source()`; [`BundleError::is_tlog_failure`] tells a log problem from a signer problem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// Not JSON.
    #[error("bundle is not valid JSON")]
    Json(#[source] serde_json::Error),
    /// More JSON values than a bundle has ([`MAX_BUNDLE_VALUES`]): refused before it is built
    /// into a tree, whose size is many times the text's for many small values.
    #[error("bundle has more than {max} JSON values; a Sigstore bundle has a few hundred")]
    TooManyValues {
        /// [`MAX_BUNDLE_VALUES`].
        max: usize,
    },
    /// JSON, but not a Sigstore bundle sigstore-types reads.
    #[error("bundle is not a Sigstore bundle this verifier reads")]
    Parse(#[source] sigstore_types::Error),
    /// The bundle carries a self-signed (root) certificate, which must come from the trust root.
    #[error(
        "bundle's certificate chain includes a root certificate (a bundle carries the leaf and intermediates only)"
    )]
    ChainIncludesRoot,
    /// sigstore-verify refused it (signature, certificate, log, timestamp).
    #[error("bundle does not verify against trusted root {root}")]
    Verify {
        /// The trust root's name.
        root: String,
        /// sigstore-verify's typed reason.
        #[source]
        source: sigstore_verify::Error,
    },
    /// The trust root's verifier could not be built (the embedded root's is built on first
    /// use); the root is the policy's problem, not the bundle's.
    #[error("bundle not verified: its trusted root cannot be used")]
    TrustRoot(#[source] crate::trust::TrustRootError),
    /// One accepted identity, and the certificate's SAN is another.
    #[error("certificate identity {found:?} does not match {expected}")]
    Identity {
        /// The certificate's SAN.
        found: String,
        /// The identity accepted.
        expected: String,
    },
    /// One accepted identity, and the certificate's issuer is another.
    #[error("certificate OIDC issuer {found:?} does not match {expected}")]
    Issuer {
        /// The certificate's issuer.
        found: String,
        /// The issuer accepted.
        expected: String,
    },
    /// Several accepted identities, none matching.
    #[error("certificate identity {subject:?} from issuer {issuer:?} matches none of: {expected}")]
    NoIdentity {
        /// The certificate's SAN.
        subject: String,
        /// The certificate's issuer.
        issuer: String,
        /// The identities accepted.
        expected: String,
    },
    /// One accepted identity, and a GitHub workflow claim differs.
    #[error(
        "certificate claim {claim} is {}, expected {expected:?}",
        found.as_deref().map_or_else(|| "absent".to_string(), |f| format!("{f:?}"))
    )]
    Claim {
        /// The claim's name (`githubWorkflowRepository`).
        claim: &'static str,
        /// The value required.
        expected: String,
        /// The certificate's value, if it has one.
        found: Option<String>,
    },
    /// A legacy signature layer that cannot be read as a bundle.
    #[error("cosign signature layer: {what}")]
    Legacy {
        /// What is wrong with it.
        what: String,
    },
    /// A DSSE envelope checked here (no log, no timestamp) that is malformed or not by the key.
    #[error("DSSE envelope: {what}")]
    Dsse {
        /// What is wrong with it.
        what: String,
    },
    /// A verified certificate without what a keyless authority needs.
    #[error("bundle's certificate carries no {what}")]
    Missing {
        /// What is missing (`identity`, `OIDC issuer`).
        what: &'static str,
    },
    /// The key's signature verified, but the bundle has no transparency-log entry and the
    /// authority requires one.
    #[error("bundle has no transparency-log entry")]
    NotLogged,
}

impl BundleError {
    /// Whether the bundle failed on its transparency-log evidence (missing, or a proof, promise,
    /// checkpoint or entry that does not verify) rather than on who signed it.
    pub fn is_tlog_failure(&self) -> bool {
        matches!(
            self,
            BundleError::NotLogged
                | BundleError::Verify {
                    source: sigstore_verify::Error::TransparencyLog(_),
                    ..
                }
        )
    }
}

/// A bundle parsed once, to be verified against any number of authorities: base64 normalised,
/// a chain carrying its own root refused, and sigstore-verify's model built.
#[derive(Debug)]
pub struct ParsedBundle {
    value: serde_json::Value,
    bundle: Bundle,
}

impl ParsedBundle {
    /// Parse a bundle's JSON; a chain that carries its own root is refused (as
    /// sigstore-conformance's `bundle-with-root-cert` requires of `verify-bundle`).
    pub fn parse(json: &str) -> Result<Self, BundleError> {
        Self::parse_with(json, false)
    }

    /// Parse an attestation's bundle: a self-signed certificate in its chain is dropped, not
    /// refused. npm's provenance bundles from sigstore-js 1.x carry the Fulcio root in the
    /// chain, and sigstore-go (GitHub's and npm's verifier) accepts them; dropping the root is
    /// what cosign's legacy chain annotation gets too: the chain must still end in a CA of the
    /// trusted root, so nothing the bundle carries is trusted for being there.
    pub fn parse_attestation(json: &str) -> Result<Self, BundleError> {
        Self::parse_with(json, true)
    }

    fn parse_with(json: &str, drop_root: bool) -> Result<Self, BundleError> {
        if crate::bounded::json_values(json.as_bytes()) > MAX_BUNDLE_VALUES {
            return Err(BundleError::TooManyValues {
                max: MAX_BUNDLE_VALUES,
            });
        }
        let mut value: serde_json::Value = serde_json::from_str(json).map_err(BundleError::Json)?;
        normalise_base64(&mut value, None);
        if drop_root {
            drop_self_signed(&mut value);
        } else if chain_includes_root(&value) {
            return Err(BundleError::ChainIncludesRoot);
        }
        // Read from the tree already built: no second serialised copy of a large bundle.
        let bundle = <Bundle as serde::Deserialize>::deserialize(&value)
            .map_err(|e| BundleError::Parse(sigstore_types::Error::Json(e)))?;
        // The envelope's payload is decoded in `bundle`; its base64 (a third of a large
        // attestation's size again) is not kept twice.
        if let Some(p) = value.pointer_mut("/dsseEnvelope/payload") {
            *p = serde_json::Value::Null;
        }
        Ok(ParsedBundle { value, bundle })
    }

    /// A cosign legacy signature layer in its bundle form (see [`legacy_to_bundle`]).
    pub fn from_legacy(
        payload: &[u8],
        signature_b64: &str,
        annotations: &std::collections::BTreeMap<String, String>,
    ) -> Result<Self, BundleError> {
        Self::parse(&legacy_to_bundle(payload, signature_b64, annotations)?)
    }

    /// Whether the bundle carries transparency-log entries (to decide what a `tlog: optional`
    /// authority requires before verifying).
    pub fn has_tlog_entries(&self) -> bool {
        non_empty_array(&self.value, TLOG_ENTRIES)
    }

    /// The payload of the bundle's DSSE envelope (decoded), when it has one. Not verified by
    /// itself: believe it only after [`verify_bundle`] succeeded.
    pub fn dsse_payload(&self) -> Option<&[u8]> {
        self.dsse().map(|e| e.payload.as_bytes())
    }

    /// The payload type of the bundle's DSSE envelope, when it has one (unverified).
    pub fn dsse_payload_type(&self) -> Option<&str> {
        self.dsse().map(|e| e.payload_type.as_str())
    }

    fn dsse(&self) -> Option<&sigstore_types::DsseEnvelope> {
        match &self.bundle.content {
            sigstore_types::SignatureContent::DsseEnvelope(e) => Some(e),
            _ => None,
        }
    }
}

/// Verify a parsed bundle over `artifact` by `authority` under `root`.
///
/// A key authority that requires a log entry is told apart from a wrong key: a bundle without
/// any entry is checked with the key first, and only a bundle the key signed is refused as
/// [`BundleError::NotLogged`].
pub fn verify_bundle(
    parsed: &ParsedBundle,
    artifact: BundleArtifact<'_>,
    authority: BundleAuthority<'_>,
    root: &TrustRoot,
) -> Result<BundleEvidence, BundleError> {
    let ParsedBundle { value, bundle } = parsed;
    let artifact = match artifact {
        BundleArtifact::Bytes(b) => sigstore_types::Artifact::from_blob(b),
        BundleArtifact::Sha256(d) => {
            sigstore_types::Artifact::from_digest(sigstore_types::Sha256Hash::new(d))
        }
        BundleArtifact::Sha512(d) => sigstore_types::ArtifactDigest::new(
            sigstore_types::HashAlgorithm::Sha2512,
            sigstore_types::Sha512Hash::new(d),
        )
        .map(sigstore_types::Artifact::from_digest)
        .map_err(BundleError::Parse)?,
    };
    let checked = Checked { root, bundle };
    let result = match authority {
        BundleAuthority::Key(key) if !non_empty_array(value, TLOG_ENTRIES) => {
            verify_key_unlogged(parsed, &checked, artifact, key)?;
            return Err(BundleError::NotLogged);
        }
        BundleAuthority::Key(key) => checked.verify(artifact, &key_policy(key))?,
        BundleAuthority::KeyWithoutTlog(key) if !has_log_or_timestamp(value) => {
            verify_dsse_with_key(parsed, key, artifact.digest().is_some())?;
            return Ok(BundleEvidence::unlogged_key(root));
        }
        BundleAuthority::KeyWithoutTlog(key) => {
            checked.verify(artifact, &key_policy(key).skip_tlog_unsafe())?
        }
        BundleAuthority::Identities(identities) => {
            let result = checked.verify(artifact, &VerificationPolicy::any_identity())?;
            match_identity(&result, identities)?;
            result
        }
    };
    Ok(BundleEvidence::of(value, &result, root))
}

/// A bundle and the trust root it is verified under.
struct Checked<'a> {
    root: &'a TrustRoot,
    bundle: &'a Bundle,
}

impl Checked<'_> {
    /// sigstore-verify's verification under one policy, its error said with the root's name.
    fn verify(
        &self,
        artifact: sigstore_types::Artifact<'_>,
        policy: &dyn sigstore_verify::Policy,
    ) -> Result<sigstore_verify::VerificationResult, BundleError> {
        self.root
            .verifier()
            .map_err(BundleError::TrustRoot)?
            .verify(artifact, self.bundle, policy)
            .map_err(|source| BundleError::Verify {
                root: self.root.name().to_string(),
                source,
            })
    }
}

fn key_policy(key: &PublicKey) -> PublicKeyVerificationPolicy {
    PublicKeyVerificationPolicy::new(DerPublicKey::new(key.der().to_vec()))
}

/// The key's signature on a bundle that carries no log entry (which the caller then refuses):
/// as `tlog: skip` would check it, so that a wrong key is still said to be a wrong key.
fn verify_key_unlogged(
    parsed: &ParsedBundle,
    checked: &Checked<'_>,
    artifact: sigstore_types::Artifact<'_>,
    key: &PublicKey,
) -> Result<(), BundleError> {
    if has_log_or_timestamp(&parsed.value) {
        checked.verify(artifact, &key_policy(key).skip_tlog_unsafe())?;
    } else {
        verify_dsse_with_key(parsed, key, artifact.digest().is_some())?;
    }
    Ok(())
}

/// The identity and issuer sigstore-verify read from the verified certificate, matched against
/// the authority's identities (exactly or by pattern), with their GitHub workflow claims.
fn match_identity(
    result: &sigstore_verify::VerificationResult,
    identities: &[Identity],
) -> Result<(), BundleError> {
    // The library's identity check is exact-only; it is replaced, not skipped.
    if !result.certificate_verified() {
        return Err(BundleError::Missing {
            what: "verified certificate",
        });
    }
    let subject = result
        .identity()
        .map(|s| s.as_str().to_string())
        .ok_or(BundleError::Missing { what: "identity" })?;
    let issuer = result
        .issuer()
        .map(str::to_string)
        .ok_or(BundleError::Missing {
            what: "OIDC issuer",
        })?;
    let workflow = workflow_of(result);
    let matched = identities.iter().any(|i| {
        i.subject.matches(&subject)
            && i.issuer.matches(&issuer)
            && i.github.mismatch(&workflow).is_none()
    });
    if matched {
        Ok(())
    } else {
        Err(identity_mismatch(identities, subject, issuer, &workflow))
    }
}

fn workflow_of(result: &sigstore_verify::VerificationResult) -> GitHubWorkflow {
    result
        .certificate()
        .map(|c| GitHubWorkflow::from_claims(&c.ci_claims))
        .unwrap_or_default()
}

impl BundleEvidence {
    /// A key's DSSE signature on a bundle with neither log entry nor timestamp. sigstore-verify
    /// refuses such a bundle outright; cosign 3 writes exactly that when signing without Rekor
    /// (and verifies it with --insecure-ignore-tlog), so the envelope is checked here, per the
    /// DSSE specification, and the statement is read by the caller.
    pub(crate) fn unlogged_key(root: &TrustRoot) -> Self {
        Self::unlogged(root.name().to_string())
    }

    /// A DSSE signature by a certificate of one's own, checked without log or timestamp.
    pub(crate) fn unlogged_certificate() -> Self {
        Self::unlogged(String::new())
    }

    /// Nothing verified but the envelope's signature (no log, certificate chain of Fulcio's,
    /// SCT or GitHub claims), under `trust_root`'s name.
    fn unlogged(trust_root: String) -> Self {
        BundleEvidence {
            identity: None,
            issuer: None,
            log_index: None,
            integrated_time: None,
            tlog_verified: false,
            certificate_verified: false,
            sct_verified: false,
            trust_root,
            github_workflow: GitHubWorkflow::default(),
        }
    }

    /// What sigstore-verify established, with the log index of a verified entry.
    fn of(
        value: &serde_json::Value,
        result: &sigstore_verify::VerificationResult,
        root: &TrustRoot,
    ) -> Self {
        let log_index = value
            .pointer("/verificationMaterial/tlogEntries/0/logIndex")
            .and_then(|v| v.as_str().and_then(|s| s.parse().ok()).or(v.as_i64()))
            .filter(|_| result.tlog_verified());
        BundleEvidence {
            identity: result.identity().map(|s| s.as_str().to_string()),
            issuer: result.issuer().map(str::to_string),
            log_index,
            integrated_time: result.integrated_time().map(|t| t.to_string()),
            tlog_verified: result.tlog_verified(),
            certificate_verified: result.certificate_verified(),
            sct_verified: result.sct_verified(),
            trust_root: root.name().to_string(),
            github_workflow: workflow_of(result),
        }
    }
}

fn non_empty_array(v: &serde_json::Value, pointer: &str) -> bool {
    v.pointer(pointer)
        .and_then(|a| a.as_array())
        .is_some_and(|a| !a.is_empty())
}

fn has_log_or_timestamp(v: &serde_json::Value) -> bool {
    non_empty_array(v, TLOG_ENTRIES)
        || non_empty_array(
            v,
            "/verificationMaterial/timestampVerificationData/rfc3161Timestamps",
        )
}

const TLOG_ENTRIES: &str = "/verificationMaterial/tlogEntries";

/// A DSSE envelope signed by `key`. Message-signature bundles are not image signatures and
/// are refused here. (A bundle's envelope holds one signature: sigstore-types refuses others.)
fn verify_dsse_with_key(
    parsed: &ParsedBundle,
    key: &PublicKey,
    digest_only: bool,
) -> Result<(), BundleError> {
    let malformed = |what: &str| BundleError::Dsse {
        what: what.to_string(),
    };
    let env = parsed
        .dsse()
        .ok_or_else(|| malformed("no DSSE envelope (only DSSE bundles are image signatures)"))?;
    if !digest_only {
        return Err(malformed("expected to be verified over a digest"));
    }
    if key.verify(&env.pae(), env.signature.sig.as_bytes()) {
        Ok(())
    } else {
        Err(BundleError::Dsse {
            what: "not signed by this key".into(),
        })
    }
}

/// The most telling mismatch: with one identity, which of subject and issuer differs.
fn identity_mismatch(
    identities: &[Identity],
    subject: String,
    issuer: String,
    workflow: &GitHubWorkflow,
) -> BundleError {
    match identities {
        [one] if !one.subject.matches(&subject) => BundleError::Identity {
            found: subject,
            expected: one.subject.to_string(),
        },
        [one] if !one.issuer.matches(&issuer) => BundleError::Issuer {
            found: issuer,
            expected: one.issuer.to_string(),
        },
        [one] if let Some((claim, expected, found)) = one.github.mismatch(workflow) => {
            BundleError::Claim {
                claim,
                expected,
                found,
            }
        }
        many => BundleError::NoIdentity {
            subject,
            issuer,
            expected: many
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        },
    }
}

/// The legacy layer annotation carrying the signing certificate (PEM).
pub const CERTIFICATE_ANNOTATION: &str = "dev.sigstore.cosign/certificate";
/// The legacy layer annotation carrying the certificate's chain (PEM, cosign includes the root).
pub const CHAIN_ANNOTATION: &str = "dev.sigstore.cosign/chain";
/// The legacy layer annotation carrying the Rekor entry and its SET.
pub const REKOR_BUNDLE_ANNOTATION: &str = "dev.sigstore.cosign/bundle";

/// A cosign legacy signature layer (payload, signature, certificate, chain, Rekor SET) as the
/// v0.1 Sigstore bundle that carries exactly the same material, so that one audited verifier
/// checks both formats. Self-signed certificates in the chain annotation (cosign includes the
/// Fulcio root) are dropped: the root must come from the trusted root. Without a certificate the
/// bundle names the key only by hint (key-based signatures with a Rekor entry).
pub fn legacy_to_bundle(
    payload: &[u8],
    signature_b64: &str,
    annotations: &std::collections::BTreeMap<String, String>,
) -> Result<String, BundleError> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let signature = crate::compact_base64(signature_b64);
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, payload);
    let vm = legacy_material(annotations)?;
    let bundle = serde_json::json!({
        "mediaType": "application/vnd.dev.sigstore.bundle+json;version=0.1",
        "verificationMaterial": vm,
        "messageSignature": {
            "messageDigest": {"algorithm": "SHA2_256", "digest": b64.encode(digest.as_ref())},
            "signature": signature,
        },
    });
    serde_json::to_string(&bundle).map_err(BundleError::Json)
}

/// A cosign legacy layer's certificate, chain (without self-signed certificates) and Rekor
/// entry as a bundle's `verificationMaterial`: what [`legacy_to_bundle`] and an `.att`
/// layer's bundle form both carry. Without a certificate the key is named only by hint.
pub(crate) fn legacy_material(
    annotations: &std::collections::BTreeMap<String, String>,
) -> Result<serde_json::Value, BundleError> {
    let mut vm = match annotations.get(CERTIFICATE_ANNOTATION) {
        Some(leaf_pem) => certificate_chain(leaf_pem, annotations.get(CHAIN_ANNOTATION))?,
        None => serde_json::json!({"publicKey": {"hint": ""}}),
    };
    let tlog_entries = match annotations.get(REKOR_BUNDLE_ANNOTATION) {
        Some(set) => vec![rekor_entry(set)?],
        None => Vec::new(),
    };
    vm["tlogEntries"] = serde_json::Value::Array(tlog_entries);
    Ok(vm)
}

fn legacy(what: String) -> BundleError {
    BundleError::Legacy { what }
}

/// The layer's certificate and chain as bundle verification material, without self-signed
/// certificates (the root must come from the trusted root).
fn certificate_chain(
    leaf_pem: &str,
    chain_pem: Option<&String>,
) -> Result<serde_json::Value, BundleError> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let leaf = pem::parse(leaf_pem.trim()).map_err(|e| {
        legacy(format!(
            "{CERTIFICATE_ANNOTATION} is not a PEM certificate: {e}"
        ))
    })?;
    let mut certs = vec![serde_json::json!({"rawBytes": b64.encode(leaf.contents())})];
    if let Some(chain) = chain_pem {
        let blocks = pem::parse_many(chain)
            .map_err(|e| legacy(format!("{CHAIN_ANNOTATION} is not PEM: {e}")))?;
        for block in blocks.iter().filter(|b| !is_self_signed(b.contents())) {
            certs.push(serde_json::json!({"rawBytes": b64.encode(block.contents())}));
        }
    }
    Ok(serde_json::json!({"x509CertificateChain": {"certificates": certs}}))
}

/// The layer's Rekor bundle annotation (SET and entry) as a bundle's transparency-log entry.
fn rekor_entry(set: &str) -> Result<serde_json::Value, BundleError> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct RekorBundle {
        signed_entry_timestamp: String,
        payload: RekorPayload,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct RekorPayload {
        body: String,
        integrated_time: i64,
        log_index: i64,
        #[serde(rename = "logID")]
        log_id: String,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Body {
        api_version: String,
        kind: String,
    }
    let rb: RekorBundle = serde_json::from_str(set)
        .map_err(|e| legacy(format!("{REKOR_BUNDLE_ANNOTATION} is malformed: {e}")))?;
    let body_bytes = b64
        .decode(rb.payload.body.trim())
        .map_err(|e| legacy(format!("Rekor entry body is not base64: {e}")))?;
    let body: Body = serde_json::from_slice(&body_bytes)
        .map_err(|e| legacy(format!("Rekor entry body is malformed: {e}")))?;
    let log_id = hex::decode(&rb.payload.log_id)
        .map_err(|e| legacy(format!("Rekor logID is not hex: {e}")))?;
    Ok(serde_json::json!({
        "logIndex": rb.payload.log_index.to_string(),
        "logId": {"keyId": b64.encode(log_id)},
        "kindVersion": {"kind": body.kind, "version": body.api_version},
        "integratedTime": rb.payload.integrated_time.to_string(),
        "inclusionPromise": {"signedEntryTimestamp": rb.signed_entry_timestamp},
        "canonicalizedBody": rb.payload.body,
    }))
}

fn is_self_signed(der: &[u8]) -> bool {
    use x509_cert::der::Decode as _;
    x509_cert::Certificate::from_der(der)
        .is_ok_and(|c| c.tbs_certificate.issuer == c.tbs_certificate.subject)
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
            let compact = crate::compact_base64(s);
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

/// Drop the self-signed certificates after the leaf of the bundle's `x509CertificateChain`.
fn drop_self_signed(v: &mut serde_json::Value) {
    use base64::Engine as _;
    let certs = v
        .pointer_mut("/verificationMaterial/x509CertificateChain/certificates")
        .and_then(|c| c.as_array_mut());
    if let Some(certs) = certs {
        let mut index = 0;
        certs.retain(|c| {
            index += 1;
            index == 1
                || !c
                    .get("rawBytes")
                    .and_then(|r| r.as_str())
                    .and_then(|r| base64::engine::general_purpose::STANDARD.decode(r).ok())
                    .is_some_and(|der| is_self_signed(&der))
        });
    }
}

/// Whether the bundle's `x509CertificateChain` ends in a self-signed (root) certificate.
fn chain_includes_root(v: &serde_json::Value) -> bool {
    use base64::Engine as _;
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
            .is_some_and(|der| is_self_signed(&der))
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
    fn malformed_legacy_annotations_say_which() {
        use std::collections::BTreeMap;
        let cases = [
            (
                CERTIFICATE_ANNOTATION,
                "not a certificate",
                "is not a PEM certificate",
            ),
            (REKOR_BUNDLE_ANNOTATION, "{}", "is malformed"),
            (
                REKOR_BUNDLE_ANNOTATION,
                r#"{"SignedEntryTimestamp":"AA==","Payload":{"body":"%%","integratedTime":1,"logIndex":1,"logID":"00"}}"#,
                "not base64",
            ),
            (
                REKOR_BUNDLE_ANNOTATION,
                r#"{"SignedEntryTimestamp":"AA==","Payload":{"body":"e30=","integratedTime":1,"logIndex":1,"logID":"zz"}}"#,
                "is malformed",
            ),
        ];
        for (key, value, needle) in cases {
            let ann = BTreeMap::from([(key.to_string(), value.to_string())]);
            let e = legacy_to_bundle(b"payload", "AAAA", &ann).unwrap_err();
            assert!(e.to_string().contains(needle), "{key}: {e}");
            assert!(e.to_string().starts_with("cosign signature layer:"), "{e}");
        }
    }

    #[test]
    fn embedded_root_loads_and_garbage_does_not() {
        assert!(TrustRoot::embedded().is_ok());
        let e = TrustRoot::from_json("{}", "x.json").unwrap_err();
        assert!(e.to_string().contains("x.json"), "{e}");
        let e = ParsedBundle::parse("not json").unwrap_err();
        assert!(matches!(e, BundleError::Json(_)), "{e}");
    }

    #[test]
    fn one_parsed_bundle_serves_several_authorities() {
        use crate::trust::Matcher;
        // The legacy form of a key-signed layer without a log entry: parsed once, then checked
        // against two keyless identities; both fail on the missing certificate, not on parsing.
        let parsed = ParsedBundle::from_legacy(b"{}", "AAAA", &Default::default()).unwrap();
        assert!(!parsed.has_tlog_entries());
        assert!(parsed.dsse_payload().is_none());
        let root = TrustRoot::embedded_shared().unwrap();
        for subject in ["a", "b"] {
            let ids = [Identity {
                subject: Matcher::Exact(subject.into()),
                issuer: Matcher::Exact("i".into()),
                github: GitHubWorkflow::default(),
            }];
            let e = verify_bundle(
                &parsed,
                BundleArtifact::Bytes(b"{}"),
                BundleAuthority::Identities(&ids),
                root,
            )
            .unwrap_err();
            assert!(matches!(e, BundleError::Verify { .. }), "{e}");
        }
    }

    /// A bundle of many small values is refused from its text, before it is built into a tree
    /// (a 32 MiB one took about 1 GB); a bundle's strings, however long, are one value each.
    #[test]
    fn a_bundle_of_many_small_values_is_refused_unbuilt() {
        let many = format!("{{\"x\":[{}0]}}", "0,".repeat(MAX_BUNDLE_VALUES));
        let e = ParsedBundle::parse_attestation(&many).unwrap_err();
        assert!(matches!(e, BundleError::TooManyValues { .. }), "{e}");
        let long_string = format!("{{\"x\":\"{}\\\",[{{\"}}", ",[{".repeat(MAX_BUNDLE_VALUES));
        assert!(crate::bounded::json_values(long_string.as_bytes()) <= 10);
        assert!(crate::bounded::json_values(b"[1,2,3]") > 2);
    }
}
