//! What discovery hands to verification: signatures found, not yet verified. Plain data, no
//! I/O, so that `verify` depends on these types and not on the code that fetches them.

use std::collections::BTreeMap;

/// The annotation naming a bundle's in-toto predicate type on its referrer manifest.
pub const PREDICATE_TYPE_ANNOTATION: &str = "dev.sigstore.bundle.predicateType";
/// The predicate of a cosign v3 image signature (as opposed to an attestation).
pub const COSIGN_SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";

/// One signature found, not yet verified.
#[derive(Debug, Clone)]
pub struct SignatureCandidate {
    /// Where it was found, for people: `tag sha256-<hex>.sig layer 2`.
    pub location: String,
    /// The exact signed bytes.
    pub payload: Vec<u8>,
    /// The base64 signature as stored.
    pub signature: String,
    /// The layer's annotations (certificate, chain, Rekor bundle, ...).
    pub annotations: BTreeMap<String, String>,
}

/// A Sigstore bundle attached to the digest, not yet verified.
#[derive(Debug, Clone)]
pub struct BundleCandidate {
    /// Where it was found: the path looked at and the referrer, as
    /// `referrers tag sha256-<hex> sha256:<the referrer manifest's full digest>`.
    pub location: String,
    /// The bundle's JSON, as stored (at most the discovery size limit).
    pub json: String,
}

/// The media type of a DSSE envelope layer (cosign's `.att` tag, in-toto referrers).
pub const DSSE_ENVELOPE_MEDIA_TYPE: &str = "application/vnd.dsse.envelope.v1+json";
/// The layer annotation cosign's `.att` tag names a layer's predicate type with.
pub const ATT_PREDICATE_TYPE_ANNOTATION: &str = "predicateType";
/// The artifact type (and DSSE payload type) of in-toto statements.
pub const IN_TOTO_MEDIA_TYPE: &str = "application/vnd.in-toto+json";

/// One attestation found, not yet verified: a DSSE envelope (cosign's `.att` tag, an in-toto
/// referrer) or a Sigstore bundle carrying one (cosign v3, GitHub).
#[derive(Debug, Clone)]
pub struct AttestationCandidate {
    /// Where it was found, for people: `tag sha256-<hex>.att layer 2`, or the referrer.
    pub location: String,
    /// The predicate type the manifest or layer annotates: unverified, it only chose what to
    /// fetch; the verified statement's own type is what counts.
    pub claimed_type: Option<String>,
    /// The envelope or bundle.
    pub form: AttestationForm,
}

/// How an attestation is stored.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum AttestationForm {
    /// A DSSE envelope's JSON as stored (at most the attestation size limit), with the layer's
    /// annotations (certificate, chain, Rekor bundle, RFC 3161 timestamp) where it has them.
    Envelope {
        /// The envelope's JSON bytes.
        envelope: std::sync::Arc<Vec<u8>>,
        /// The layer's annotations.
        annotations: BTreeMap<String, String>,
    },
    /// A Sigstore bundle whose DSSE envelope carries the statement.
    Bundle(BundleCandidate),
}

/// Who a signature says signed it — read from the signature itself, not verified: a
/// certificate's identity and issuer, or a key's fingerprint where the signature names one.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(
    tag = "kind",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum ClaimedSigner {
    /// A Fulcio-style certificate: its SAN and OIDC issuer as written.
    Certificate {
        /// The certificate's SAN (email or URI), if it has one.
        identity: Option<String>,
        /// The certificate's OIDC issuer extension, if it has one.
        issuer: Option<String>,
    },
    /// A public key: `sha256:<hex>` of its DER when the signature names it (a bundle's key
    /// hint, the key in a Rekor entry), else unknown until a key verifies it.
    Key {
        /// `sha256:<hex>` of the key's DER, when the signature names the key.
        fingerprint: Option<String>,
    },
}

impl std::fmt::Display for ClaimedSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |s: &Option<String>| {
            s.as_deref()
                .map_or_else(|| "(none)".to_string(), crate::escape_text)
        };
        match self {
            ClaimedSigner::Certificate { identity, issuer } => write!(
                f,
                "certificate for {} from issuer {} (unverified)",
                shown(identity),
                shown(issuer)
            ),
            ClaimedSigner::Key {
                fingerprint: Some(fp),
            } => write!(f, "key {fp} (unverified)"),
            ClaimedSigner::Key { fingerprint: None } => {
                f.write_str("a key the signature does not name (unverified)")
            }
        }
    }
}

fn certificate_signer(der: &[u8]) -> ClaimedSigner {
    let info = sigstore_crypto::x509::parse_certificate_info(&sigstore_types::DerCertificate::new(
        der.to_vec(),
    ));
    match info {
        Ok(i) => ClaimedSigner::Certificate {
            identity: i.identity.map(|s| s.as_str().to_string()),
            issuer: i.issuer,
        },
        Err(_) => ClaimedSigner::Certificate {
            identity: None,
            issuer: None,
        },
    }
}

/// Where a Rekor entry's body names the signing key (the base64 of a PEM key): hashedrekord
/// (signatures), intoto v0.0.2 and dsse (attestations).
const REKOR_BODY_KEYS: [&str; 3] = [
    "/spec/signature/publicKey/content",
    "/spec/content/envelope/signatures/0/publicKey",
    "/spec/signatures/0/verifier",
];

/// The signer cosign's layer annotations claim: the certificate's, else the key in the Rekor
/// entry of the bundle annotation.
fn annotated_signer(annotations: &BTreeMap<String, String>) -> ClaimedSigner {
    if let Some(pem_text) = annotations.get("dev.sigstore.cosign/certificate") {
        return match pem::parse(pem_text.trim()) {
            Ok(block) => certificate_signer(block.contents()),
            Err(_) => ClaimedSigner::Certificate {
                identity: None,
                issuer: None,
            },
        };
    }
    let fingerprint = annotations
        .get("dev.sigstore.cosign/bundle")
        .and_then(|b| serde_json::from_str::<serde_json::Value>(b).ok())
        .and_then(|v| {
            v.pointer("/Payload/body")
                .and_then(|b| b.as_str())
                .map(str::to_string)
        })
        .and_then(|b| crate::decode_base64(&b).ok())
        .and_then(|body| serde_json::from_slice::<serde_json::Value>(&body).ok())
        .and_then(|v| {
            REKOR_BODY_KEYS
                .iter()
                .find_map(|at| v.pointer(at).and_then(|c| c.as_str()).map(str::to_string))
        })
        .and_then(|c| crate::decode_base64(&c).ok())
        .and_then(|pem_bytes| String::from_utf8(pem_bytes).ok())
        .and_then(|p| crate::trust::PublicKey::from_pem(&p, "rekor entry").ok())
        .map(|k| k.fingerprint());
    ClaimedSigner::Key { fingerprint }
}

impl SignatureCandidate {
    /// The signer this layer claims: its certificate's, else the key in its Rekor entry.
    pub fn claimed_signer(&self) -> ClaimedSigner {
        annotated_signer(&self.annotations)
    }
}

impl AttestationCandidate {
    /// The signer this attestation claims, unverified: an envelope layer's certificate, else
    /// the key in its Rekor entry; a bundle's certificate, else its key hint.
    pub fn claimed_signer(&self) -> ClaimedSigner {
        match &self.form {
            AttestationForm::Envelope { annotations, .. } => annotated_signer(annotations),
            AttestationForm::Bundle(b) => b.claimed_signer(),
        }
    }
}

impl BundleCandidate {
    /// The bundle's media type, as written.
    pub fn media_type(&self) -> Option<String> {
        serde_json::from_str::<serde_json::Value>(&self.json)
            .ok()?
            .get("mediaType")?
            .as_str()
            .map(str::to_string)
    }

    /// The signer this bundle claims: its certificate's, else its key hint.
    pub fn claimed_signer(&self) -> ClaimedSigner {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&self.json) else {
            return ClaimedSigner::Key { fingerprint: None };
        };
        let vm = v.get("verificationMaterial");
        let cert = vm
            .and_then(|m| {
                m.pointer("/certificate/rawBytes")
                    .or_else(|| m.pointer("/x509CertificateChain/certificates/0/rawBytes"))
            })
            .and_then(|c| c.as_str())
            .and_then(|c| crate::decode_base64(c).ok());
        if let Some(der) = cert {
            return certificate_signer(&der);
        }
        // cosign's hint is the base64 of the SHA-256 of the key's DER.
        let fingerprint = vm
            .and_then(|m| m.pointer("/publicKey/hint"))
            .and_then(|h| h.as_str())
            .and_then(|h| crate::decode_base64(h).ok())
            .filter(|h| h.len() == 32)
            .map(|h| format!("sha256:{}", hex::encode(h)));
        ClaimedSigner::Key { fingerprint }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claimed_signers_are_read_but_not_trusted() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![rcgen::SanType::Rfc822Name(
            "dev@example.com".try_into().unwrap(),
        )];
        let cert = params.self_signed(&key).unwrap();
        let legacy = SignatureCandidate {
            location: "tag sha256-x.sig layer 1".into(),
            payload: Vec::new(),
            signature: String::new(),
            annotations: BTreeMap::from([(
                "dev.sigstore.cosign/certificate".to_string(),
                cert.pem(),
            )]),
        };
        let s = legacy.claimed_signer();
        assert_eq!(
            s,
            ClaimedSigner::Certificate {
                identity: Some("dev@example.com".into()),
                issuer: None
            }
        );
        assert_eq!(
            s.to_string(),
            "certificate for dev@example.com from issuer (none) (unverified)"
        );
        let keyed = SignatureCandidate {
            annotations: BTreeMap::new(),
            ..legacy
        };
        assert_eq!(
            keyed.claimed_signer(),
            ClaimedSigner::Key { fingerprint: None }
        );
        let hint = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
        let bundle = BundleCandidate {
            location: "referrer".into(),
            json: format!(
                r#"{{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json","verificationMaterial":{{"publicKey":{{"hint":"{hint}"}}}}}}"#
            ),
        };
        assert_eq!(
            bundle.media_type().as_deref(),
            Some("application/vnd.dev.sigstore.bundle.v0.3+json")
        );
        assert_eq!(
            bundle.claimed_signer(),
            ClaimedSigner::Key {
                fingerprint: Some(
                    "sha256:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
                        .into()
                )
            }
        );
    }

    #[test]
    fn attestations_claim_signers_as_their_forms_say() {
        use base64::Engine as _;
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let key = rcgen::KeyPair::generate().unwrap();
        let pem = key.public_key_pem();
        let fingerprint = crate::trust::PublicKey::from_pem(&pem, "t")
            .unwrap()
            .fingerprint();
        // cosign's `.att` layer of a logged attestation: a dsse entry names its verifier.
        let body = format!(
            r#"{{"spec":{{"signatures":[{{"verifier":"{}"}}]}}}}"#,
            b64(pem.as_bytes())
        );
        let rekor = format!(r#"{{"Payload":{{"body":"{}"}}}}"#, b64(body.as_bytes()));
        let envelope = |annotations: BTreeMap<String, String>| AttestationCandidate {
            location: "tag sha256-x.att layer 1".into(),
            claimed_type: Some("https://slsa.dev/provenance/v1".into()),
            form: AttestationForm::Envelope {
                envelope: std::sync::Arc::new(b"{}".to_vec()),
                annotations,
            },
        };
        let logged = envelope(BTreeMap::from([(
            "dev.sigstore.cosign/bundle".to_string(),
            rekor,
        )]));
        assert_eq!(
            logged.claimed_signer(),
            ClaimedSigner::Key {
                fingerprint: Some(fingerprint)
            }
        );
        let keyless = envelope(BTreeMap::from([(
            "dev.sigstore.cosign/certificate".to_string(),
            "not a certificate".to_string(),
        )]));
        assert_eq!(
            keyless.claimed_signer(),
            ClaimedSigner::Certificate {
                identity: None,
                issuer: None
            }
        );
        let bundle = AttestationCandidate {
            form: AttestationForm::Bundle(BundleCandidate {
                location: "referrer".into(),
                json: r#"{"verificationMaterial":{}}"#.into(),
            }),
            ..logged
        };
        assert_eq!(
            bundle.claimed_signer(),
            ClaimedSigner::Key { fingerprint: None }
        );
    }
}
