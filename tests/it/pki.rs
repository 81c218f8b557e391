//! The project's own Sigstore-like PKI: a Fulcio-like CA, a CT log key and a Rekor key made in
//! the test, their trusted_root.json, and keyless cosign signature layers whose certificate,
//! SCT, Rekor SET and entry body are each built here, so that every negative path of keyless
//! verification has a test that fails for exactly that reason.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use ocigate::candidate::SignatureCandidate;
use ocigate::payload::SimpleSigning;
use ocigate::reference::Digest;
use ocigate::trust::{GitHubWorkflow, Identity, Matcher, TrustRoot};
use ocigate::verify::{
    Expectation, KeylessAuthority, PreparedSignature, RejectionKind, SignedIdentity,
    verify_keyless_signature,
};
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData as _, SanType,
    SerialNumber, SigningKey as _,
};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const EMAIL: &str = "builder@example.test";
const OIDC_ISSUER: &str = "https://oidc.example.test";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn time_at(unix: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(unix).unwrap()
}

fn rfc3339(unix: i64) -> String {
    time_at(unix)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    d.as_ref().try_into().unwrap()
}

/// DER tag-length-value.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    if n < 128 {
        out.push(n as u8);
    } else if n < 256 {
        out.extend([0x81, n as u8]);
    } else {
        out.extend([0x82, (n >> 8) as u8, n as u8]);
    }
    out.extend_from_slice(content);
    out
}

fn key() -> KeyPair {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap()
}

/// What to break in a keyless signature.
#[derive(Default, Clone, Copy)]
struct Breakage {
    /// The leaf expires before the Rekor integrated time.
    expired_leaf: bool,
    /// The SCT is signed by a key that is not the CT log's.
    foreign_sct: bool,
    /// The SET is signed by a key that is not Rekor's.
    foreign_set: bool,
    /// The Rekor entry body records the hash of another payload.
    body_for_other_payload: bool,
}

struct TestSigstore {
    ca_key: KeyPair,
    ca_params: CertificateParams,
    ca_der: Vec<u8>,
    ct_key: KeyPair,
    rekor_key: KeyPair,
    /// Keys that belong to no one the root trusts.
    rogue_key: KeyPair,
    t0: i64,
}

impl TestSigstore {
    fn new() -> Self {
        let t0 = now() - 3600;
        let ca_key = key();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.distinguished_name = DistinguishedName::new();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "ocigate test fulcio");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca_params.not_before = time_at(t0 - 86400);
        ca_params.not_after = time_at(t0 + 86400 * 365);
        let ca_der = ca_params.self_signed(&ca_key).unwrap().der().to_vec();
        TestSigstore {
            ca_key,
            ca_params,
            ca_der,
            ct_key: key(),
            rekor_key: key(),
            rogue_key: key(),
            t0,
        }
    }

    /// trusted_root.json for this PKI; `ca_window` is the CA's validFor (start, end).
    fn trusted_root(&self, ca_window: (i64, Option<i64>)) -> TrustRoot {
        let log = |k: &KeyPair, url: &str| {
            let spki = k.subject_public_key_info();
            serde_json::json!({
                "baseUrl": url,
                "hashAlgorithm": "SHA2_256",
                "publicKey": {
                    "rawBytes": B64.encode(&spki),
                    "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                    "validFor": {"start": rfc3339(self.t0 - 86400 * 30)},
                },
                "logId": {"keyId": B64.encode(sha256(&spki))},
            })
        };
        let mut valid_for = serde_json::json!({"start": rfc3339(ca_window.0)});
        if let Some(end) = ca_window.1 {
            valid_for["end"] = serde_json::json!(rfc3339(end));
        }
        let root = serde_json::json!({
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [log(&self.rekor_key, "https://rekor.example.test")],
            "certificateAuthorities": [{
                "subject": {"organization": "ocigate test", "commonName": "ocigate test fulcio"},
                "uri": "https://fulcio.example.test",
                "certChain": {"certificates": [{"rawBytes": B64.encode(&self.ca_der)}]},
                "validFor": valid_for,
            }],
            "ctlogs": [log(&self.ct_key, "https://ctfe.example.test")],
            "timestampAuthorities": [],
        });
        TrustRoot::from_json(&root.to_string(), "test pki").unwrap()
    }

    /// A keyless cosign signature layer over `payload`, with `b` broken.
    fn keyless_layer(&self, payload: &[u8], b: Breakage) -> SignatureCandidate {
        let integrated = self.t0;
        let leaf_key = key();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::Rfc822Name(EMAIL.try_into().unwrap())];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.serial_number = Some(SerialNumber::from(vec![0x42, 0x17, 0x01]));
        params.not_before = time_at(integrated - 60);
        params.not_after = if b.expired_leaf {
            time_at(integrated - 30)
        } else {
            time_at(integrated + 540)
        };
        // Fulcio's OIDC issuer extension (1.3.6.1.4.1.57264.1.8, a DER UTF8String).
        params.custom_extensions = vec![CustomExtension::from_oid_content(
            &[1, 3, 6, 1, 4, 1, 57264, 1, 8],
            der(0x0c, OIDC_ISSUER.as_bytes()),
        )];
        let issuer = Issuer::from_params(&self.ca_params, &self.ca_key);

        // The precertificate TBS (everything but the SCT extension) is what the CT log signs.
        let precert = params.signed_by(&leaf_key, &issuer).unwrap();
        let tbs = {
            use x509_cert::der::{Decode, Encode};
            let cert = x509_cert::Certificate::from_der(precert.der()).unwrap();
            cert.tbs_certificate.to_der().unwrap()
        };
        let ts_ms = (integrated as u64 - 10) * 1000;
        let mut signed = vec![0u8, 0u8];
        signed.extend(ts_ms.to_be_bytes());
        signed.extend([0u8, 1u8]);
        signed.extend(sha256(&self.ca_key.subject_public_key_info()));
        signed.extend(&(tbs.len() as u32).to_be_bytes()[1..]);
        signed.extend(&tbs);
        signed.extend([0u8, 0u8]);
        let ct_signer = if b.foreign_sct {
            &self.rogue_key
        } else {
            &self.ct_key
        };
        let sct_sig = ct_signer.sign(&signed).unwrap();
        let mut sct = vec![0u8];
        sct.extend(sha256(&self.ct_key.subject_public_key_info()));
        sct.extend(ts_ms.to_be_bytes());
        sct.extend([0u8, 0u8]);
        sct.extend([4u8, 3u8]);
        sct.extend((sct_sig.len() as u16).to_be_bytes());
        sct.extend(&sct_sig);
        let mut list = ((sct.len() + 2) as u16).to_be_bytes().to_vec();
        list.extend((sct.len() as u16).to_be_bytes());
        list.extend(&sct);
        params
            .custom_extensions
            .push(CustomExtension::from_oid_content(
                &[1, 3, 6, 1, 4, 1, 11129, 2, 4, 2],
                der(0x04, &list),
            ));
        let leaf = params.signed_by(&leaf_key, &issuer).unwrap();
        let leaf_pem = leaf.pem();
        let chain_pem = pem::encode(&pem::Pem::new("CERTIFICATE", self.ca_der.clone()));

        let signature = leaf_key.sign(payload).unwrap();
        let hashed = if b.body_for_other_payload {
            sha256(b"another payload")
        } else {
            sha256(payload)
        };
        // Rekor's hashedrekord entry, canonical JSON (sorted keys, no spaces).
        let body = serde_json::json!({
            "apiVersion": "0.0.1",
            "kind": "hashedrekord",
            "spec": {
                "data": {"hash": {"algorithm": "sha256", "value": hex::encode(hashed)}},
                "signature": {
                    "content": B64.encode(&signature),
                    "publicKey": {"content": B64.encode(leaf_pem.as_bytes())},
                },
            },
        });
        let body_b64 = B64.encode(serde_json::to_vec(&body).unwrap());
        let log_id = hex::encode(sha256(&self.rekor_key.subject_public_key_info()));
        let set_payload = serde_json::json!({
            "body": body_b64,
            "integratedTime": integrated,
            "logID": log_id,
            "logIndex": 7,
        });
        let rekor_signer = if b.foreign_set {
            &self.rogue_key
        } else {
            &self.rekor_key
        };
        let set = rekor_signer
            .sign(&serde_json::to_vec(&set_payload).unwrap())
            .unwrap();
        let bundle = serde_json::json!({
            "SignedEntryTimestamp": B64.encode(&set),
            "Payload": {"body": body_b64, "integratedTime": integrated, "logIndex": 7, "logID": log_id},
        });
        SignatureCandidate {
            location: "test layer".into(),
            payload: payload.to_vec(),
            signature: B64.encode(&signature),
            annotations: BTreeMap::from([
                (
                    "dev.cosignproject.cosign/signature".into(),
                    B64.encode(&signature),
                ),
                ("dev.sigstore.cosign/certificate".into(), leaf_pem),
                ("dev.sigstore.cosign/chain".into(), chain_pem),
                ("dev.sigstore.cosign/bundle".into(), bundle.to_string()),
            ]),
        }
    }
}

struct Case {
    pki: TestSigstore,
    payload: Vec<u8>,
    expect: Expectation,
}

fn case() -> Case {
    let digest = Digest::sha256_of(b"the image manifest");
    let payload = SimpleSigning::new("registry.test/acme/app", &digest, &BTreeMap::new())
        .to_bytes()
        .unwrap();
    Case {
        pki: TestSigstore::new(),
        payload,
        expect: Expectation {
            digest,
            repository: "registry.test/acme/app".into(),
            signed_identity: SignedIdentity::MatchRepository,
            annotations: BTreeMap::new(),
        },
    }
}

fn identity(subject: Matcher, issuer: &str) -> Identity {
    Identity {
        subject,
        issuer: Matcher::Exact(issuer.into()),
        github: GitHubWorkflow::default(),
    }
}

/// Verify with the standard identity under `root`; the rejection's text on failure.
fn check(
    c: &Case,
    layer: &SignatureCandidate,
    root: &TrustRoot,
    ids: &[Identity],
) -> Result<(), String> {
    let authority = KeylessAuthority {
        name: "test",
        identities: ids,
        root,
    };
    match verify_keyless_signature(&PreparedSignature::new(layer), authority, &c.expect) {
        Ok(_) => Ok(()),
        Err(e) if matches!(e.kind(), RejectionKind::Bundle { .. }) => Err(e.reason()),
        Err(other) => panic!("unexpected kind of rejection: {other}"),
    }
}

fn std_ids() -> Vec<Identity> {
    vec![identity(Matcher::Exact(EMAIL.into()), OIDC_ISSUER)]
}

#[test]
fn the_test_pki_verifies_when_nothing_is_broken() {
    let c = case();
    let root = c.pki.trusted_root((c.pki.t0 - 86400 * 30, None));
    let layer = c.pki.keyless_layer(&c.payload, Breakage::default());
    check(&c, &layer, &root, &std_ids()).unwrap();
    // and by regular expression
    let re = vec![identity(
        Matcher::Regex(regex::Regex::new(r"^builder@example\.test$").unwrap()),
        OIDC_ISSUER,
    )];
    check(&c, &layer, &root, &re).unwrap();
}

#[test]
fn expired_certificate_at_integrated_time() {
    let c = case();
    let root = c.pki.trusted_root((c.pki.t0 - 86400 * 30, None));
    let layer = c.pki.keyless_layer(
        &c.payload,
        Breakage {
            expired_leaf: true,
            ..Default::default()
        },
    );
    let e = check(&c, &layer, &root, &std_ids()).unwrap_err();
    assert!(
        e.contains("certificate chain is invalid") && e.contains("CertExpired"),
        "{e}"
    );
}

#[test]
fn certificate_issued_outside_the_ca_validity_window() {
    let c = case();
    // The CA stopped being trusted for issuance a day before this certificate was made.
    let root = c
        .pki
        .trusted_root((c.pki.t0 - 86400 * 30, Some(c.pki.t0 - 86400)));
    let layer = c.pki.keyless_layer(&c.payload, Breakage::default());
    let e = check(&c, &layer, &root, &std_ids()).unwrap_err();
    assert!(
        e.contains("no trusted certificate authority is valid at"),
        "{e}"
    );
}

#[test]
fn sct_from_an_untrusted_log() {
    let c = case();
    let root = c.pki.trusted_root((c.pki.t0 - 86400 * 30, None));
    let layer = c.pki.keyless_layer(
        &c.payload,
        Breakage {
            foreign_sct: true,
            ..Default::default()
        },
    );
    let e = check(&c, &layer, &root, &std_ids()).unwrap_err();
    assert!(
        e.contains("invalid signed certificate timestamp: SCT signature verification failed"),
        "{e}"
    );
}

#[test]
fn forged_rekor_set() {
    let c = case();
    let root = c.pki.trusted_root((c.pki.t0 - 86400 * 30, None));
    let layer = c.pki.keyless_layer(
        &c.payload,
        Breakage {
            foreign_set: true,
            ..Default::default()
        },
    );
    let e = check(&c, &layer, &root, &std_ids()).unwrap_err();
    assert!(
        e.contains("invalid inclusion promise: SET verification failed"),
        "{e}"
    );
}

#[test]
fn rekor_body_for_another_payload() {
    let c = case();
    let root = c.pki.trusted_root((c.pki.t0 - 86400 * 30, None));
    let layer = c.pki.keyless_layer(
        &c.payload,
        Breakage {
            body_for_other_payload: true,
            ..Default::default()
        },
    );
    let e = check(&c, &layer, &root, &std_ids()).unwrap_err();
    assert!(
        e.contains("artifact hash mismatch for hashedrekord entry"),
        "{e}"
    );
}

#[test]
fn wrong_oidc_issuer_and_non_matching_regexp() {
    let c = case();
    let root = c.pki.trusted_root((c.pki.t0 - 86400 * 30, None));
    let layer = c.pki.keyless_layer(&c.payload, Breakage::default());
    let e = check(
        &c,
        &layer,
        &root,
        &[identity(
            Matcher::Exact(EMAIL.into()),
            "https://accounts.google.com",
        )],
    )
    .unwrap_err();
    assert!(
        e.contains("OIDC issuer \"https://oidc.example.test\" does not match"),
        "{e}"
    );
    let re = [identity(
        Matcher::Regex(regex::Regex::new(r"^builder@example\.org$").unwrap()),
        OIDC_ISSUER,
    )];
    let e = check(&c, &layer, &root, &re).unwrap_err();
    assert!(e.contains("does not match regexp"), "{e}");
}

#[test]
fn a_root_that_does_not_know_the_ca() {
    let c = case();
    let other = TestSigstore::new();
    let root = other.trusted_root((other.t0 - 86400 * 30, None));
    let layer = c.pki.keyless_layer(&c.payload, Breakage::default());
    let e = check(&c, &layer, &root, &std_ids()).unwrap_err();
    assert!(
        e.contains("does not verify against trusted root test pki"),
        "{e}"
    );
}
