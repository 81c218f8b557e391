//! Real attestations made by others (../shared/corpus), verified with `verify::verify_attestation`
//! against the embedded public-good root: npm provenance from GitHub Actions (sha512 subjects,
//! intoto entries) as bundles and as the `.att` layers cosign would write from the same
//! material, cosign's keyless OCI attestation bundle; and what cosign 3.1.1 `attest-blob` writes.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use ocigate::bundle::{BundleAuthority, BundleError};
use ocigate::candidate::{AttestationCandidate, AttestationForm, BundleCandidate};
use ocigate::failure::Failure;
use ocigate::predicate::PredicateType;
use ocigate::trust::{GitHubWorkflow, Identity, Matcher, TrustRoot};
use ocigate::verify::{
    ArtifactDigests, AttestationExpectation, Evidence, PreparedAttestation, Rejection,
    RejectionKind, VerifiedAttestation, verify_attestation,
};

use crate::harness::{PASSWORD, corpus_or_skip, repo_root, strict};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const GITHUB_ISSUER: &str = "https://token.actions.githubusercontent.com";
const SIGSTORE_JS: &str =
    "https://github.com/sigstore/sigstore-js/.github/workflows/release.yml@refs/heads/main";
/// sigstore@1.3.0's tarball (the v0.2 provenance's subject).
const V02_SHA512: &str = "76176ffa33808b54602c7c35de5c6e9a4deb96066dba6533f50ac234f4f1f4c6b3527515dc17c06fbe2860030f410eee69ea20079bd3a2c6f3dcf3b329b10751";
/// sigstore@2.0.0's tarball (the v1 provenance's subject).
const V1_SHA512: &str = "46d4e2f74c4877316640000a6fdf8a8b59f1e0847667973e9859f774dd31b8f1e0937813b777fb66a2ac67d50540fe34640966eee9fc2ccca387082b4c85cd3c";

fn identity(subject: &str, issuer: &str) -> Vec<Identity> {
    vec![Identity {
        subject: Matcher::Exact(subject.into()),
        issuer: Matcher::Exact(issuer.into()),
        github: GitHubWorkflow::default(),
    }]
}

fn bundle_candidate(path: &Path) -> AttestationCandidate {
    let json = std::fs::read_to_string(path).unwrap();
    AttestationCandidate {
        location: path.display().to_string(),
        claimed_type: None,
        form: AttestationForm::Bundle(BundleCandidate {
            location: path.display().to_string(),
            json,
        }),
    }
}

/// The `.att` layer cosign writes for the same material: the envelope as the layer, the leaf
/// and the chain (with its root, as cosign writes it) as PEM, the log entry as a Rekor bundle.
fn legacy_layer(path: &Path) -> AttestationCandidate {
    let b: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let vm = &b["verificationMaterial"];
    let leaf = vm.get("certificate").map(std::slice::from_ref);
    let certs: Vec<String> = vm["x509CertificateChain"]["certificates"]
        .as_array()
        .map(Vec::as_slice)
        .or(leaf)
        .into_iter()
        .flatten()
        .map(|c| {
            let der = B64.decode(c["rawBytes"].as_str().unwrap()).unwrap();
            pem::encode(&pem::Pem::new("CERTIFICATE", der))
        })
        .collect();
    let entry = &vm["tlogEntries"][0];
    let log_id = B64
        .decode(entry["logId"]["keyId"].as_str().unwrap())
        .unwrap();
    let rekor = serde_json::json!({
        "SignedEntryTimestamp": entry["inclusionPromise"]["signedEntryTimestamp"],
        "Payload": {
            "body": entry["canonicalizedBody"],
            "integratedTime": entry["integratedTime"].as_str().unwrap().parse::<i64>().unwrap(),
            "logIndex": entry["logIndex"].as_str().unwrap().parse::<i64>().unwrap(),
            "logID": hex::encode(log_id),
        },
    });
    let mut annotations = BTreeMap::from([
        ("dev.sigstore.cosign/bundle".to_string(), rekor.to_string()),
        ("predicateType".to_string(), "from the corpus".to_string()),
    ]);
    if let Some(leaf) = certs.first() {
        annotations.insert("dev.sigstore.cosign/certificate".into(), leaf.clone());
    }
    if certs.len() > 1 {
        annotations.insert("dev.sigstore.cosign/chain".into(), certs[1..].concat());
    }
    AttestationCandidate {
        location: format!("{} as a .att layer", path.display()),
        claimed_type: None,
        form: AttestationForm::Envelope {
            envelope: Arc::new(b["dsseEnvelope"].to_string().into_bytes()),
            annotations,
        },
    }
}

fn verify(
    c: &AttestationCandidate,
    who: BundleAuthority<'_>,
    digests: &ArtifactDigests,
    predicate_type: &str,
) -> Result<VerifiedAttestation, Rejection> {
    let root = TrustRoot::embedded_shared().unwrap();
    let predicate_type = PredicateType::parse(predicate_type).unwrap();
    let expect = AttestationExpectation {
        digests,
        predicate_type: &predicate_type,
    };
    verify_attestation(&PreparedAttestation::new(c), "npm", who, root, &expect)
}

fn assert_sigstore_js(v: &VerifiedAttestation, predicate_type: &str) {
    assert_eq!(v.predicate_type(), predicate_type);
    let facts = v.signer_facts();
    assert_eq!(facts["kind"], "keyless", "{facts}");
    assert_eq!(facts["identity"], SIGSTORE_JS, "{facts}");
    assert_eq!(facts["issuer"], GITHUB_ISSUER, "{facts}");
    assert_eq!(
        facts["github"]["repository"], "sigstore/sigstore-js",
        "{facts}"
    );
    assert_eq!(facts["github"]["ref"], "refs/heads/main", "{facts}");
    let statement: serde_json::Value = serde_json::from_slice(v.statement_json()).unwrap();
    assert_eq!(statement["predicateType"], predicate_type);
    assert!(
        matches!(
            v.evidence(),
            Evidence::Keyless {
                log_index: Some(_),
                ..
            }
        ),
        "{v:?}"
    );
}

#[test]
fn npm_provenance_verifies_with_sha512_subjects() {
    let Some(corpus) = corpus_or_skip("npm_provenance_verifies_with_sha512_subjects") else {
        return;
    };
    let go = corpus.join("sigstore-go");
    let v1 = go.join("pkg/testing/data/bundles/sigstore.js@2.0.0-provenance.sigstore.json");
    let v02 = go.join("examples/bundle-provenance.json");
    let ids = identity(SIGSTORE_JS, GITHUB_ISSUER);
    let who = BundleAuthority::Identities(&ids);
    let v1_digest = ArtifactDigests::from_hex("sha512", V1_SHA512).unwrap();
    let v02_digest = ArtifactDigests::from_hex("sha512", V02_SHA512).unwrap();

    // SLSA v1, as the bundle npm serves and as a legacy layer: same statement, same signer.
    for c in [bundle_candidate(&v1), legacy_layer(&v1)] {
        let v = verify(&c, who, &v1_digest, "slsaprovenance1").unwrap();
        assert_sigstore_js(&v, "https://slsa.dev/provenance/v1");
        // another package's digest, another type, another identity: refused, each as itself
        let e = verify(&c, who, &v02_digest, "slsaprovenance1").unwrap_err();
        assert!(
            matches!(e.kind(), RejectionKind::SubjectMismatch { .. }),
            "{e}"
        );
        assert_eq!(e.class(), Failure::Mismatch);
        let e = verify(&c, who, &v1_digest, "slsaprovenance").unwrap_err();
        assert!(
            matches!(e.kind(), RejectionKind::PredicateTypeMismatch { .. }),
            "{e}"
        );
        assert_eq!(e.class(), Failure::Unattested);
        let others = identity(
            "https://github.com/evil/fork/.github/workflows/release.yml@refs/heads/main",
            GITHUB_ISSUER,
        );
        let e = verify(
            &c,
            BundleAuthority::Identities(&others),
            &v1_digest,
            "slsaprovenance1",
        )
        .unwrap_err();
        assert!(e.reason().contains("does not match"), "{}", e.reason());
        assert_eq!(e.class(), Failure::Untrusted);
    }

    // SLSA v0.2 (sigstore-js 1.3.0): its bundle's chain carries the Fulcio root, which
    // `verify-bundle` refuses (sigstore-conformance bundle-with-root-cert_fail) but an
    // attestation's bundle drops, as sigstore-go does: the chain must still end in a CA of the
    // trusted root. The same material as cosign's .att layer verifies too.
    let v = verify(&bundle_candidate(&v02), who, &v02_digest, "slsaprovenance").unwrap();
    assert_sigstore_js(&v, "https://slsa.dev/provenance/v0.2");
    assert!(matches!(
        ocigate::bundle::ParsedBundle::parse(&std::fs::read_to_string(&v02).unwrap()),
        Err(BundleError::ChainIncludesRoot)
    ));
    let v = verify(&legacy_layer(&v02), who, &v02_digest, "slsaprovenance02").unwrap();
    assert_sigstore_js(&v, "https://slsa.dev/provenance/v0.2");

    // An artifact known by its bytes matches by sha512 only when those are the package's.
    let e = verify(
        &bundle_candidate(&v1),
        who,
        &ArtifactDigests::of_bytes(b"x"),
        "slsaprovenance1",
    )
    .unwrap_err();
    assert!(
        matches!(e.kind(), RejectionKind::SubjectMismatch { .. }),
        "{e}"
    );
}

#[test]
fn cosign_oci_attestation_bundle_verifies() {
    let Some(corpus) = corpus_or_skip("cosign_oci_attestation_bundle_verifies") else {
        return;
    };
    let path = corpus.join("cosign/pkg/cosign/testdata/oci-attestation.sigstore.json");
    let ids = identity("cody@soyland.com", "https://github.com/login/oauth");
    let who = BundleAuthority::Identities(&ids);
    let image = ocigate::reference::Digest::parse(
        "sha256:732112270d7e59418a8c080b134b24cabd67d250d0d0147a97ed95ba5c280aa4",
    )
    .unwrap();
    let digests = ArtifactDigests::of_digest(&image);
    let other = ArtifactDigests::of_digest(&ocigate::reference::Digest::sha256_of(b"other"));
    // As the bundle cosign attaches, and as the .att layer of the same material (a dsse entry).
    for c in [bundle_candidate(&path), legacy_layer(&path)] {
        let v = verify(&c, who, &digests, "custom").unwrap();
        assert_eq!(
            v.predicate_type(),
            "https://cosign.sigstore.dev/attestation/v1"
        );
        assert!(
            matches!(
                v.evidence(),
                Evidence::Keyless {
                    log_index: Some(175508996),
                    ..
                }
            ),
            "{v:?}"
        );
        let facts = v.signer_facts();
        assert_eq!(facts["identity"], "cody@soyland.com");
        assert_eq!(facts["github"], serde_json::json!({}));
        // Copied under another image: the statement names 7321…, not this digest.
        let e = verify(&c, who, &other, "custom").unwrap_err();
        assert!(
            matches!(e.kind(), RejectionKind::SubjectMismatch { .. }),
            "{e}"
        );
        assert!(e.to_string().contains("732112270d7e"), "{e}");
    }
}

/// npm's publish attestation: signed by the registry's key, logged as an intoto entry. With
/// `tlog: required` the entry must verify and bind this key; without, the key's PAE signature.
#[test]
fn npm_publish_attestation_verifies_with_its_key_and_entry() {
    let Some(corpus) = corpus_or_skip("npm_publish_attestation_verifies_with_its_key_and_entry")
    else {
        return;
    };
    let examples = corpus.join("sigstore-go/examples");
    let pem = std::fs::read_to_string(examples.join("publish_key.pub")).unwrap();
    let key = ocigate::trust::PublicKey::from_pem(&pem, "publish_key.pub").unwrap();
    let other = ocigate::sign::key::SigningKey::generate().unwrap();
    let publish = "https://github.com/npm/attestation/tree/main/specs/publish/v0.1";
    let digests = ArtifactDigests::from_hex("sha512", V02_SHA512).unwrap();
    let path = examples.join("bundle-publish.json");
    for c in [bundle_candidate(&path), legacy_layer(&path)] {
        assert!(PreparedAttestation::new(&c).has_tlog_entries());
        let v = verify(&c, BundleAuthority::Key(&key), &digests, publish).unwrap();
        assert!(
            matches!(
                v.evidence(),
                Evidence::Key {
                    log_index: Some(18300940),
                    ..
                }
            ),
            "{v:?}"
        );
        assert_eq!(v.signer_facts()["keyFingerprint"], key.fingerprint());
        assert!(verify(&c, BundleAuthority::KeyWithoutTlog(&key), &digests, publish).is_ok());
        let wrong = BundleAuthority::Key(other.public_key());
        let e = verify(&c, wrong, &digests, publish).unwrap_err();
        assert_eq!(e.class(), Failure::Untrusted, "{e}");
    }
    // A layer's RFC 3161 timestamp is verified like a bundle's: one that is not one refuses it.
    let with_timestamp = |value: String| {
        let mut c = legacy_layer(&path);
        if let AttestationForm::Envelope { annotations, .. } = &mut c.form {
            annotations.insert("dev.sigstore.cosign/rfc3161timestamp".into(), value);
        }
        verify(&c, BundleAuthority::Key(&key), &digests, publish).unwrap_err()
    };
    let e = with_timestamp("{}".into());
    assert!(
        e.reason().contains("rfc3161timestamp is malformed"),
        "{}",
        e.reason()
    );
    let bogus = serde_json::json!({"SignedRFC3161Timestamp": B64.encode(b"not DER")});
    let e = with_timestamp(bogus.to_string());
    assert!(matches!(e.kind(), RejectionKind::Bundle { .. }), "{e}");
}

/// cosign 3.1.1 ($OCIGATE_TEST_COSIGN or the fetch script's cache); a loud skip otherwise.
fn cosign_or_skip(test: &str) -> Option<std::path::PathBuf> {
    let found = [
        std::env::var_os("OCIGATE_TEST_COSIGN").map(std::path::PathBuf::from),
        Some(repo_root().join(".cache/cosign/root/usr/bin/cosign")),
    ]
    .into_iter()
    .flatten()
    .find(|p| p.is_file());
    if found.is_none() {
        assert!(
            !strict(),
            "{test}: cosign not found; run scripts/fetch-cosign.sh"
        );
        eprintln!("SKIPPED {test}: cosign not found; these peer checks did NOT run");
    }
    found
}

fn cosign(bin: &Path, dir: &Path, args: &[&str]) {
    let out = std::process::Command::new(bin)
        .args(args)
        .current_dir(dir)
        .env("COSIGN_PASSWORD", PASSWORD)
        .env("HOME", dir)
        .env("TUF_ROOT", dir.join("tuf"))
        .env("SIGSTORE_NO_CACHE", "true")
        .output()
        .expect("run cosign");
    assert!(
        out.status.success(),
        "cosign {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// cosign's key-signed attestations without a log, in both of its formats (the DSSE envelope a
/// `.att` layer holds, and a v0.3 bundle), verified over the blob's digests.
#[test]
fn cosign_attest_blob_envelopes_and_bundles_verify() {
    let Some(bin) = cosign_or_skip("cosign_attest_blob_envelopes_and_bundles_verify") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    cosign(&bin, d, &["generate-key-pair", "--output-key-prefix", "k"]);
    std::fs::write(d.join("blob"), b"the artifact").unwrap();
    let predicate = r#"{"buildDefinition":{"externalParameters":{"workflow":{"repository":"https://github.com/acme/app"}}}}"#;
    std::fs::write(d.join("predicate.json"), predicate).unwrap();
    let common = [
        "attest-blob",
        "--key",
        "k.key",
        "--predicate",
        "predicate.json",
        "--type",
        "slsaprovenance1",
        "--tlog-upload=false",
        "--use-signing-config=false",
        "--yes",
    ];
    let legacy = [
        &common[..],
        &[
            "--new-bundle-format=false",
            "--output-signature",
            "env.json",
            "blob",
        ],
    ]
    .concat();
    cosign(&bin, d, &legacy);
    let bundle = [
        &common[..],
        &["--new-bundle-format", "--bundle", "b.json", "blob"],
    ]
    .concat();
    cosign(&bin, d, &bundle);

    let pem = std::fs::read_to_string(d.join("k.pub")).unwrap();
    let key = ocigate::trust::PublicKey::from_pem(&pem, "k.pub").unwrap();
    let envelope = AttestationCandidate {
        location: "env.json".into(),
        claimed_type: None,
        form: AttestationForm::Envelope {
            envelope: Arc::new(std::fs::read(d.join("env.json")).unwrap()),
            annotations: BTreeMap::new(),
        },
    };
    let digests = ArtifactDigests::of_bytes(b"the artifact");
    let other = ArtifactDigests::of_bytes(b"another artifact");
    for c in [envelope, bundle_candidate(&d.join("b.json"))] {
        let v = verify(
            &c,
            BundleAuthority::KeyWithoutTlog(&key),
            &digests,
            "slsaprovenance1",
        )
        .unwrap();
        let statement: serde_json::Value = serde_json::from_slice(v.statement_json()).unwrap();
        assert_eq!(
            statement["predicate"],
            serde_json::from_str::<serde_json::Value>(predicate).unwrap()
        );
        let e = verify(&c, BundleAuthority::Key(&key), &digests, "slsaprovenance1").unwrap_err();
        assert!(matches!(e.kind(), RejectionKind::NoTlogEntry { .. }), "{e}");
        let e = verify(
            &c,
            BundleAuthority::KeyWithoutTlog(&key),
            &other,
            "slsaprovenance1",
        )
        .unwrap_err();
        assert!(
            matches!(e.kind(), RejectionKind::SubjectMismatch { .. }),
            "{e}"
        );
        let e = verify(&c, BundleAuthority::KeyWithoutTlog(&key), &digests, "spdx").unwrap_err();
        assert!(
            matches!(e.kind(), RejectionKind::PredicateTypeMismatch { .. }),
            "{e}"
        );
    }
}
