//! Certificates of one's own (a `certificates` authority): the containers/image custom-PKI
//! fixture (RSA-4096 leaf, SAN qiwan@redhat.com, root and intermediate from the corpus) allowed
//! and refused for each reason, and leaves made here by rcgen (an expired one).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::SystemTime;

use base64::Engine as _;
use ocigate::candidate::SignatureCandidate;
use ocigate::failure::Failure;
use ocigate::payload::{SIGNATURE_ANNOTATION, SimpleSigning};
use ocigate::reference::Digest;
use ocigate::trust::{CertificateAuthorities, CertificateError, Matcher, TrustRoot};
use ocigate::verify::{
    CertificatesAuthority, Evidence, Expectation, PreparedSignature, Rejection, RejectionKind,
    SignedIdentity, VerifiedSignature, verify_certificate_signature,
};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData as _, SanType, SigningKey as _,
};

use crate::corpus::{Fixture, read_sig_layer};
use crate::harness::*;

const FIXTURE: &str = "dir-img-cosign-pki-valid";
const SAN: &str = "qiwan@redhat.com";
const CERT: &str = "dev.sigstore.cosign/certificate";
const CHAIN: &str = "dev.sigstore.cosign/chain";

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap()
}

/// The fixture's signature layer as discovery hands it over, and what it must sign.
fn fixture(fx: &Fixture) -> (SignatureCandidate, Expectation) {
    let dir = fx.dir.join(FIXTURE);
    let layer = read_sig_layer(&dir.join("signature-1"));
    let mut annotations = layer.annotations;
    let signature = annotations.remove(SIGNATURE_ANNOTATION).unwrap();
    let manifest = std::fs::read(dir.join("manifest.json")).unwrap();
    let candidate = SignatureCandidate {
        location: "tag sha256-x.sig layer 1".into(),
        payload: layer.payload,
        signature,
        annotations,
    };
    let expect = Expectation {
        digest: Digest::sha256_of(&manifest),
        repository: "localhost:5000/test".into(),
        signed_identity: SignedIdentity::MatchRepository,
        annotations: BTreeMap::new(),
    };
    (candidate, expect)
}

fn cas(fx: &Fixture, roots: &str, intermediates: Option<&str>) -> CertificateAuthorities {
    let roots = read(&fx.dir, roots);
    let inter = intermediates.map(|i| read(&fx.dir, i));
    CertificateAuthorities::from_pem(
        (&roots, "roots"),
        inter.as_deref().map(|t| (t, "intermediates")),
    )
    .unwrap()
}

fn check(
    c: &SignatureCandidate,
    cas: &CertificateAuthorities,
    identities: &[Matcher],
    log: Option<&TrustRoot>,
    expect: &Expectation,
) -> Result<VerifiedSignature, Rejection> {
    let prepared = PreparedSignature::new(c);
    let authority = CertificatesAuthority {
        name: "team-a",
        cas,
        identities,
        log,
    };
    verify_certificate_signature(&prepared, authority, expect, SystemTime::now())
}

fn exact(s: &str) -> Vec<Matcher> {
    vec![Matcher::Exact(s.into())]
}

fn untrusted_chain(r: &Rejection) -> bool {
    matches!(
        r.kind(),
        RejectionKind::Certificate { source, .. }
            if matches!(**source, CertificateError::Untrusted { .. })
    )
}

#[test]
fn the_custom_pki_fixture_verifies_and_each_fault_is_refused() {
    let Some(corpus) = corpus_or_skip("the_custom_pki_fixture_verifies_and_each_fault_is_refused")
    else {
        return;
    };
    let fx = Fixture::new(&corpus);
    let (c, expect) = fixture(&fx);
    let good = cas(&fx, "pki_root_crts.pem", Some("pki_intermediate_crts.pem"));

    // allowed: chain through the policy's intermediates (and the signature's chain annotation)
    let v = check(&c, &good, &exact(SAN), None, &expect).unwrap();
    assert_eq!(v.authority(), "team-a");
    let Evidence::Certificate {
        identity,
        log_index,
        ..
    } = v.evidence()
    else {
        panic!("{v:?}")
    };
    assert_eq!((identity.as_str(), *log_index), (SAN, None));
    // the DNS SAN and a regular expression count too
    let re = vec![Matcher::Regex(
        regex::Regex::new(r"^myhost\.example\.com$").unwrap(),
    )];
    assert!(check(&c, &good, &re, None, &expect).is_ok());
    // without the policy's intermediates: the signature's own chain annotation suffices
    let roots_only = cas(&fx, "pki_root_crts.pem", None);
    assert!(check(&c, &roots_only, &exact(SAN), None, &expect).is_ok());

    // a wrong root (the Fulcio v1 root): untrusted
    let fulcio = cas(&fx, "fulcio_v1.crt.pem", Some("pki_intermediate_crts.pem"));
    let e = check(&c, &fulcio, &exact(SAN), None, &expect).unwrap_err();
    assert!(untrusted_chain(&e), "{}", e.reason());
    assert_eq!(e.class(), Failure::Untrusted);

    // a wrong SAN: untrusted, and the message lists what the certificate says
    let e = check(&c, &good, &exact("someone@example.com"), None, &expect).unwrap_err();
    assert!(
        matches!(
            e.kind(),
            RejectionKind::Certificate { source, .. }
                if matches!(**source, CertificateError::Identity { .. })
        ),
        "{}",
        e.reason()
    );
    assert!(e.reason().contains(SAN), "{}", e.reason());
    assert_eq!(e.class(), Failure::Untrusted);

    // the intermediate missing (no chain annotation, none in the policy)
    let mut bare = c.clone();
    bare.annotations.remove(CHAIN);
    let e = check(&bare, &roots_only, &exact(SAN), None, &expect).unwrap_err();
    assert!(untrusted_chain(&e), "{}", e.reason());
    assert!(check(&bare, &good, &exact(SAN), None, &expect).is_ok());

    // a chain annotation longer than the bound: refused before any path is built
    let mut long = c.clone();
    let chain = long.annotations[CHAIN].repeat(5);
    long.annotations.insert(CHAIN.into(), chain);
    let e = check(&long, &good, &exact(SAN), None, &expect).unwrap_err();
    assert!(
        matches!(
            e.kind(),
            RejectionKind::Certificate { source, .. }
                if matches!(**source, CertificateError::LongChain { count: 10, .. })
        ),
        "{}",
        e.reason()
    );

    // a tampered payload: the leaf's key does not verify it
    let mut tampered = c.clone();
    tampered.payload = SimpleSigning::new(
        "localhost:5000/test",
        &Digest::sha256_of(b"evil"),
        &BTreeMap::new(),
    )
    .to_bytes()
    .unwrap();
    let e = check(&tampered, &good, &exact(SAN), None, &expect).unwrap_err();
    assert!(
        matches!(e.kind(), RejectionKind::BadSignature { .. }),
        "{}",
        e.reason()
    );
    assert_eq!(e.class(), Failure::Untrusted);

    // tlog required, and the signature carries no Rekor bundle: tlog
    let root = TrustRoot::embedded().unwrap();
    let e = check(&c, &good, &exact(SAN), Some(&root), &expect).unwrap_err();
    assert!(
        matches!(e.kind(), RejectionKind::NoTlogEntry { .. }),
        "{}",
        e.reason()
    );
    assert_eq!(e.class(), Failure::Tlog);

    // no certificate at all (a key signature): not for this authority
    let mut keyed = c.clone();
    keyed.annotations.remove(CERT);
    let e = check(&keyed, &good, &exact(SAN), None, &expect).unwrap_err();
    assert!(
        matches!(e.kind(), RejectionKind::NoCertificate { .. }),
        "{}",
        e.reason()
    );
    assert_eq!(e.class(), Failure::Untrusted);

    // the payload for another image: mismatch, after the certificate held
    let mut other = expect.clone();
    other.digest = Digest::sha256_of(b"another image");
    let e = check(&c, &good, &exact(SAN), None, &other).unwrap_err();
    assert_eq!(e.class(), Failure::Mismatch, "{}", e.reason());
}

/// A CA and a leaf made here: a leaf valid now verifies; an expired one does not, even though
/// its signature over the payload is good.
#[test]
fn an_expired_leaf_is_refused() {
    let now = time::OffsetDateTime::now_utc();
    let day = time::Duration::days(1);
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name
        .push(DnType::CommonName, "team-a test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    ca.not_before = now - day * 30;
    ca.not_after = now + day * 30;
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::from_params(&ca, &ca_key);
    let cas = CertificateAuthorities::from_pem((&ca_pem, "roots"), None).unwrap();

    let digest = Digest::sha256_of(b"image");
    let payload = SimpleSigning::new("r.test/app", &digest, &BTreeMap::new())
        .to_bytes()
        .unwrap();
    let expect = Expectation {
        digest,
        repository: "r.test/app".into(),
        signed_identity: SignedIdentity::MatchRepository,
        annotations: BTreeMap::new(),
    };
    let layer = |not_after: time::OffsetDateTime| {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
        leaf.subject_alt_names = vec![SanType::Rfc822Name("dev@team-a.test".try_into().unwrap())];
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf.not_before = now - day * 20;
        leaf.not_after = not_after;
        let cert = leaf.signed_by(&key, &issuer).unwrap().pem();
        let sig = key.sign(&payload).unwrap();
        SignatureCandidate {
            location: "tag sha256-x.sig layer 1".into(),
            payload: payload.clone(),
            signature: base64::engine::general_purpose::STANDARD.encode(sig),
            annotations: BTreeMap::from([(CERT.to_string(), cert)]),
        }
    };
    let ids = exact("dev@team-a.test");
    let valid = layer(now + day);
    assert!(check(&valid, &cas, &ids, None, &expect).is_ok());
    let expired = layer(now - day);
    let e = check(&expired, &cas, &ids, None, &expect).unwrap_err();
    assert!(untrusted_chain(&e), "{}", e.reason());
    assert_eq!(e.class(), Failure::Untrusted);
    assert!(e.reason().contains("does not chain"), "{}", e.reason());
}

/// `verify --ca-roots/--ca-intermediates` and `--certificate-chain` (cosign's flags), and a
/// policy's `certificates` authority, on the fixture pushed to a real registry.
#[test]
fn the_cli_and_a_policy_verify_the_custom_pki_fixture() {
    let Some(corpus) = corpus_or_skip("the_cli_and_a_policy_verify_the_custom_pki_fixture") else {
        return;
    };
    let fx = Fixture::new(&corpus);
    let reg = TestRegistry::start();
    let r = fx.push(&reg, FIXTURE, "team-a/app");
    let path = |n: &str| fx.dir.join(n).to_str().unwrap().to_string();
    let (roots, inter, chain) = (
        path("pki_root_crts.pem"),
        path("pki_intermediate_crts.pem"),
        path("pki-chain"),
    );
    let base = ["--signed-repository", "localhost:5000/test", "-o", "json"];
    let run = |extra: &[&str]| {
        let mut args: Vec<&str> = base.to_vec();
        args.extend_from_slice(extra);
        args.push(&r);
        verify(&reg, &args)
    };
    let ok = run(&[
        "--ca-roots",
        &roots,
        "--ca-intermediates",
        &inter,
        "--certificate-identity",
        SAN,
        "--insecure-ignore-tlog",
    ]);
    assert_eq!(ok.code, 0, "{ok:?}");
    assert!(
        ok.stdout.contains("\"kind\": \"certificate\"")
            || ok.stdout.contains("\"kind\":\"certificate\""),
        "{}",
        ok.stdout
    );
    let ok = run(&[
        "--certificate-chain",
        &chain,
        "--certificate-identity-regexp",
        "@redhat\\.com$",
        "--insecure-ignore-tlog",
    ]);
    assert_eq!(ok.code, 0, "{ok:?}");
    // another identity: denied, untrusted
    let no = run(&[
        "--certificate-chain",
        &chain,
        "--certificate-identity",
        "someone@example.com",
        "--insecure-ignore-tlog",
    ]);
    assert_eq!(no.code, 1, "{no:?}");
    assert!(no.stdout.contains("untrusted"), "{}", no.stdout);
    // the log required (cosign's default) and the signature has none: denied, tlog
    let no = run(&["--certificate-chain", &chain, "--certificate-identity", SAN]);
    assert_eq!(no.code, 1, "{no:?}");
    assert!(no.stdout.contains("\"tlog\""), "{}", no.stdout);
    // Fulcio claims are refused with a CA of one's own, not ignored
    let usage = run(&[
        "--certificate-chain",
        &chain,
        "--certificate-identity",
        SAN,
        "--certificate-oidc-issuer",
        "https://x",
        "--insecure-ignore-tlog",
    ]);
    assert_eq!(usage.code, 2, "{usage:?}");

    // the same through a policy file, its PEM files relative to it
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("pki")).unwrap();
    std::fs::copy(&roots, dir.path().join("pki/roots.pem")).unwrap();
    std::fs::copy(&inter, dir.path().join("pki/inter.pem")).unwrap();
    let policy = |identity: &str| {
        format!(
            "apiVersion: ocigate.dev/v1alpha1\nkind: Policy\nrules:\n  - name: team-a\n    \
             images: [\"**\"]\n    signedIdentity: {{exactRepository: localhost:5000/test}}\n    \
             authorities:\n      - name: team-a\n        certificates:\n          \
             roots: pki/roots.pem\n          intermediates: pki/inter.pem\n          \
             identities:\n            - subject: {identity}\n        tlog: skip\n"
        )
    };
    let file = dir.path().join("policy.yaml");
    std::fs::write(&file, policy(SAN)).unwrap();
    let f = file.to_str().unwrap();
    let check = ocigate(&["policy", "check", f], &[]);
    assert_eq!(check.code, 0, "{check:?}");
    let ok = verify(&reg, &["--policy", f, &r]);
    assert_eq!(ok.code, 0, "{ok:?}");
    std::fs::write(&file, policy("someone@example.com")).unwrap();
    let no = verify(&reg, &["--policy", f, "-o", "json", &r]);
    assert_eq!(no.code, 1, "{no:?}");
    assert!(no.stdout.contains("untrusted"), "{}", no.stdout);
    // an invalid PEM file: policy check names it at its line and column
    std::fs::write(&file, policy(SAN)).unwrap();
    std::fs::write(dir.path().join("pki/inter.pem"), "not a certificate\n").unwrap();
    let bad = ocigate(&["policy", "check", f], &[]);
    assert_ne!(bad.code, 0, "{bad:?}");
    assert!(
        bad.stderr.contains("policy.yaml:11:26:") && bad.stderr.contains("pki/inter.pem"),
        "{}",
        bad.stderr
    );
}

/// cosign 3.1.1 as the peer: it verifies the fixture offline with the same chain and identity
/// (`--certificate-chain`, no log, no SCT), and refuses another identity, as ocigate does.
#[test]
fn cosign_agrees_on_the_custom_pki_fixture() {
    let Some(corpus) = corpus_or_skip("cosign_agrees_on_the_custom_pki_fixture") else {
        return;
    };
    let Some(bin) = crate::cosign_peer::cosign_or_skip("cosign_agrees_on_the_custom_pki_fixture")
    else {
        return;
    };
    let fx = Fixture::new(&corpus);
    let reg = TestRegistry::start();
    let r = fx.push(&reg, FIXTURE, "team-a/app");
    let chain = fx.dir.join("pki-chain");
    let chain = chain.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cosign = |identity: &str| {
        crate::cosign_peer::cosign(
            &bin,
            dir.path(),
            &[
                "verify",
                "--certificate-chain",
                chain,
                "--certificate-identity",
                identity,
                "--certificate-oidc-issuer-regexp",
                ".*",
                "--insecure-ignore-tlog",
                "--insecure-ignore-sct",
                "--allow-insecure-registry",
                &r,
            ],
        )
    };
    let ocigate_says = |identity: &str| {
        verify(
            &reg,
            &[
                "--certificate-chain",
                chain,
                "--certificate-identity",
                identity,
                "--insecure-ignore-tlog",
                "--signed-repository",
                "localhost:5000/test",
                &r,
            ],
        )
    };
    let ok = cosign(SAN);
    assert_eq!(ok.code, 0, "{ok:?}");
    assert_eq!(ocigate_says(SAN).code, 0);
    let no = cosign("someone@example.com");
    assert_ne!(no.code, 0, "{no:?}");
    assert_eq!(ocigate_says("someone@example.com").code, 1);
}

/// A CA of one's own and a Rekor made here: the Rekor key in a trusted_root.json (no Fulcio,
/// no CT log), and legacy layers carrying a SET over a hashedrekord entry for the leaf.
struct LoggedPki {
    ca: CertificateParams,
    ca_key: KeyPair,
    cas: CertificateAuthorities,
    rekor: KeyPair,
    rogue: KeyPair,
    root: TrustRoot,
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn sha256(data: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data)
        .as_ref()
        .to_vec()
}

impl LoggedPki {
    fn new(now: time::OffsetDateTime) -> Self {
        let day = time::Duration::days(1);
        let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name = DistinguishedName::new();
        ca.distinguished_name
            .push(DnType::CommonName, "team-a logged CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        ca.not_before = now - day * 30;
        ca.not_after = now + day * 30;
        let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
        let cas = CertificateAuthorities::from_pem((&ca_pem, "roots"), None).unwrap();
        let rekor = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let spki = rekor.subject_public_key_info();
        let start: time::OffsetDateTime = now - day * 30;
        let start = start
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        let root = serde_json::json!({
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [{
                "baseUrl": "https://rekor.team-a.test",
                "hashAlgorithm": "SHA2_256",
                "publicKey": {
                    "rawBytes": B64.encode(&spki),
                    "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                    "validFor": {"start": start},
                },
                "logId": {"keyId": B64.encode(sha256(&spki))},
            }],
            "certificateAuthorities": [],
            "ctlogs": [],
            "timestampAuthorities": [],
        });
        let root = TrustRoot::from_json(&root.to_string(), "team-a rekor").unwrap();
        LoggedPki {
            ca,
            ca_key,
            cas,
            rekor,
            rogue: KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(),
            root,
        }
    }

    /// A layer signed by a leaf valid over `valid` (unix seconds), logged at `integrated`.
    fn layer(
        &self,
        payload: &[u8],
        valid: (i64, i64),
        integrated: i64,
        rogue_set: bool,
    ) -> SignatureCandidate {
        let at = |t| time::OffsetDateTime::from_unix_timestamp(t).unwrap();
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
        leaf.subject_alt_names = vec![SanType::Rfc822Name("dev@team-a.test".try_into().unwrap())];
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::CodeSigning];
        leaf.not_before = at(valid.0);
        leaf.not_after = at(valid.1);
        let issuer = Issuer::from_params(&self.ca, &self.ca_key);
        let cert = leaf.signed_by(&key, &issuer).unwrap().pem();
        let sig = key.sign(payload).unwrap();
        let body = serde_json::json!({
            "apiVersion": "0.0.1",
            "kind": "hashedrekord",
            "spec": {
                "data": {"hash": {"algorithm": "sha256", "value": hex::encode(sha256(payload))}},
                "signature": {
                    "content": B64.encode(&sig),
                    "publicKey": {"content": B64.encode(cert.as_bytes())},
                },
            },
        });
        let body = B64.encode(serde_json::to_vec(&body).unwrap());
        let log_id = hex::encode(sha256(&self.rekor.subject_public_key_info()));
        let signed = serde_json::json!({
            "body": body, "integratedTime": integrated, "logID": log_id, "logIndex": 7,
        });
        let signer = if rogue_set { &self.rogue } else { &self.rekor };
        let set = signer.sign(&serde_json::to_vec(&signed).unwrap()).unwrap();
        let bundle = serde_json::json!({
            "SignedEntryTimestamp": B64.encode(&set),
            "Payload": {"body": body, "integratedTime": integrated, "logIndex": 7, "logID": log_id},
        });
        SignatureCandidate {
            location: "tag sha256-x.sig layer 1".into(),
            payload: payload.to_vec(),
            signature: B64.encode(&sig),
            annotations: BTreeMap::from([
                (SIGNATURE_ANNOTATION.to_string(), B64.encode(&sig)),
                (CERT.to_string(), cert),
                ("dev.sigstore.cosign/bundle".to_string(), bundle.to_string()),
            ]),
        }
    }
}

/// `tlog: required`: the Rekor entry's time is when the chain must have held. A leaf that
/// expired since it was logged counts (and would not with `tlog: skip`); one that had expired
/// when it was logged, or a SET not by the root's Rekor key, does not.
#[test]
fn the_log_proves_when_the_certificate_was_used() {
    let now = time::OffsetDateTime::now_utc();
    let t = now.unix_timestamp();
    let pki = LoggedPki::new(now);
    let digest = Digest::sha256_of(b"image");
    let payload = SimpleSigning::new("r.test/app", &digest, &BTreeMap::new())
        .to_bytes()
        .unwrap();
    let expect = Expectation {
        digest,
        repository: "r.test/app".into(),
        signed_identity: SignedIdentity::MatchRepository,
        annotations: BTreeMap::new(),
    };
    let ids = exact("dev@team-a.test");
    let logged = Some(&pki.root);

    // valid for ten minutes two hours ago, logged then: allowed with the log, not without
    let c = pki.layer(&payload, (t - 7200, t - 6600), t - 7000, false);
    let v = check(&c, &pki.cas, &ids, logged, &expect).unwrap();
    let Evidence::Certificate {
        log_index,
        integrated_time,
        ..
    } = v.evidence()
    else {
        panic!("{v:?}")
    };
    assert_eq!(*log_index, Some(7));
    assert!(integrated_time.is_some());
    let e = check(&c, &pki.cas, &ids, None, &expect).unwrap_err();
    assert!(untrusted_chain(&e), "{}", e.reason());

    // logged after the leaf expired: refused by sigstore-verify's log check (its typed reason
    // is the entry's integrated time, outside the certificate's validity), so `tlog`
    let c = pki.layer(&payload, (t - 7200, t - 6600), t - 6000, false);
    let e = check(&c, &pki.cas, &ids, logged, &expect).unwrap_err();
    assert_eq!(e.class(), Failure::Tlog, "{}", e.reason());
    assert!(
        e.reason().contains("after certificate validity"),
        "{}",
        e.reason()
    );

    // a SET by another key: the log does not vouch for it (tlog)
    let c = pki.layer(&payload, (t - 7200, t + 600), t - 7000, true);
    let e = check(&c, &pki.cas, &ids, logged, &expect).unwrap_err();
    assert_eq!(e.class(), Failure::Tlog, "{}", e.reason());
}

/// A cosign v3 image-signature bundle (v0.3, DSSE over the cosign sign statement) whose
/// certificate is from a CA of one's own, without a log entry (cosign 3 with
/// `--tlog-upload=false`): allowed under `tlog: skip`, refused for another SAN, another root,
/// another image, and when the log is required.
#[test]
fn a_v03_bundle_from_a_ca_of_ones_own() {
    use ocigate::candidate::BundleCandidate;
    use ocigate::verify::{PreparedBundle, verify_attached_certificate_bundle};
    let now = time::OffsetDateTime::now_utc();
    let t = now.unix_timestamp();
    let pki = LoggedPki::new(now);
    let digest = Digest::sha256_of(b"image");
    let statement = serde_json::json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "r.test/app", "digest": {"sha256": digest.hex()}}],
        "predicateType": "https://sigstore.dev/cosign/sign/v1",
        "predicate": {},
    });
    let payload = serde_json::to_vec(&statement).unwrap();
    let payload_type = "application/vnd.in-toto+json";
    let mut pae = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    pae.extend(&payload);
    // a leaf from the CA, its key signing the envelope's PAE
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.subject_alt_names = vec![SanType::Rfc822Name("dev@team-a.test".try_into().unwrap())];
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.not_before = time::OffsetDateTime::from_unix_timestamp(t - 600).unwrap();
    leaf.not_after = time::OffsetDateTime::from_unix_timestamp(t + 600).unwrap();
    let issuer = Issuer::from_params(&pki.ca, &pki.ca_key);
    let leaf_der = leaf.signed_by(&key, &issuer).unwrap().der().to_vec();
    let sig = key.sign(&pae).unwrap();
    let bundle = serde_json::json!({
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": {
            "certificate": {"rawBytes": B64.encode(&leaf_der)},
            "tlogEntries": [],
        },
        "dsseEnvelope": {
            "payload": B64.encode(&payload),
            "payloadType": payload_type,
            "signatures": [{"sig": B64.encode(&sig), "keyid": ""}],
        },
    });
    let candidate = BundleCandidate {
        location: "referrer sha256:x".into(),
        json: bundle.to_string(),
    };
    let prepared = PreparedBundle::new(&candidate);
    let expect = Expectation {
        digest: digest.clone(),
        repository: "r.test/app".into(),
        signed_identity: SignedIdentity::MatchRepository,
        annotations: BTreeMap::new(),
    };
    let check =
        |cas: &CertificateAuthorities, san: &str, log: Option<&TrustRoot>, e: &Expectation| {
            let ids = exact(san);
            let authority = CertificatesAuthority {
                name: "team-a",
                cas,
                identities: &ids,
                log,
            };
            verify_attached_certificate_bundle(&prepared, authority, e, SystemTime::now())
        };
    let v = check(&pki.cas, "dev@team-a.test", None, &expect).unwrap();
    assert!(
        matches!(v.evidence(), Evidence::Certificate { identity, .. } if identity == "dev@team-a.test"),
        "{v:?}"
    );
    let e = check(&pki.cas, "other@team-a.test", None, &expect).unwrap_err();
    assert_eq!(e.class(), Failure::Untrusted, "{}", e.reason());
    let other = LoggedPki::new(now);
    let e = check(&other.cas, "dev@team-a.test", None, &expect).unwrap_err();
    assert!(untrusted_chain(&e), "{}", e.reason());
    let mut elsewhere = expect.clone();
    elsewhere.digest = Digest::sha256_of(b"another image");
    let e = check(&pki.cas, "dev@team-a.test", None, &elsewhere).unwrap_err();
    assert_eq!(e.class(), Failure::Mismatch, "{}", e.reason());
    let e = check(&pki.cas, "dev@team-a.test", Some(&pki.root), &expect).unwrap_err();
    assert_eq!(e.class(), Failure::Tlog, "{}", e.reason());
}
