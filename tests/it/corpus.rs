//! Real signatures made by others (../shared/corpus): containers/image (skopeo) fixtures and
//! Connaisseur's captured Docker Hub registry, pushed into the test registry and verified through
//! the CLI. Only the image layer blobs the captures do not hold are seeded as placeholders.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use ocigate::candidate::SignatureCandidate;
use ocigate::payload::SIGNATURE_ANNOTATION;
use ocigate::reference::Digest;
use ocigate::registry::{Descriptor, ImageManifest, Manifest, OCI_MANIFEST};
use ocigate::trust::PublicKey;
use ocigate::verify::{
    Expectation, KeyAuthority, RejectionKind, SignedIdentity, verify_key_signature,
};

use crate::harness::*;

const CI_REPO: &str = "192.168.64.2:5000/cosign-signed-single-sample";

/// Push a captured manifest's exact bytes, seeding the blobs it references.
fn push_captured_manifest(reg: &TestRegistry, repo: &str, tag: &str, bytes: &[u8]) -> Digest {
    let v: serde_json::Value = serde_json::from_slice(bytes).unwrap();
    let media_type = v["mediaType"].as_str().unwrap_or(OCI_MANIFEST).to_string();
    let mut digests = vec![v["config"]["digest"].as_str().unwrap().to_string()];
    for l in v["layers"].as_array().unwrap() {
        digests.push(l["digest"].as_str().unwrap().to_string());
    }
    for d in &digests {
        reg.seed_blob_placeholder(repo, d);
    }
    let r = reg.reference(&format!("{repo}:{tag}"));
    block_on(reg.client().put_manifest(&r, bytes, &media_type)).unwrap()
}

/// One signature layer as containers/image stores it: "\0sigstore-json\n" + JSON.
pub(crate) struct SigLayer {
    pub(crate) mime: String,
    pub(crate) payload: Vec<u8>,
    pub(crate) annotations: BTreeMap<String, String>,
}

pub(crate) fn read_sig_layer(path: &Path) -> SigLayer {
    let raw = std::fs::read(path).unwrap();
    let json = raw
        .strip_prefix(b"\x00sigstore-json\n")
        .expect("sigstore-json header");
    let v: serde_json::Value = serde_json::from_slice(json).unwrap();
    SigLayer {
        mime: v["mimeType"].as_str().unwrap().to_string(),
        payload: base64::engine::general_purpose::STANDARD
            .decode(v["payload"].as_str().unwrap())
            .unwrap(),
        annotations: serde_json::from_value(v["annotations"].clone()).unwrap(),
    }
}

/// Attach `layers` as the cosign `.sig` manifest of `digest` in `repo`.
fn attach(reg: &TestRegistry, repo: &str, digest: &Digest, layers: &[SigLayer]) {
    let client = reg.client();
    let r = reg.reference(&format!("{repo}:{}.sig", digest.tag_prefix()));
    block_on(async {
        let mut descs = Vec::new();
        for l in layers {
            let d = client.put_blob(&r, &l.payload).await.unwrap();
            descs.push(Descriptor {
                media_type: l.mime.clone(),
                digest: d.to_string(),
                size: l.payload.len() as u64,
                annotations: Some(l.annotations.clone()),
                artifact_type: None,
            });
        }
        let config = ocigate::sign::cosign_config(&descs).unwrap();
        let cd = client.put_blob(&r, &config).await.unwrap();
        let m = ImageManifest {
            schema_version: 2,
            media_type: Some(OCI_MANIFEST.into()),
            artifact_type: None,
            config: Some(desc(
                "application/vnd.oci.image.config.v1+json",
                &cd,
                config.len(),
            )),
            layers: descs,
            manifests: vec![],
            subject: None,
            annotations: None,
        };
        client
            .put_manifest(&r, &serde_json::to_vec(&m).unwrap(), OCI_MANIFEST)
            .await
            .unwrap();
    });
}

pub(crate) struct Fixture {
    pub(crate) dir: PathBuf,
}

impl Fixture {
    pub(crate) fn new(corpus: &Path) -> Self {
        Fixture {
            dir: corpus.join("containers-image/signature/fixtures"),
        }
    }
    fn key(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_string()
    }
    /// Push `name`'s manifest and signatures into `repo`; returns the reference by tag.
    pub(crate) fn push(&self, reg: &TestRegistry, name: &str, repo: &str) -> String {
        let d = self.dir.join(name);
        let manifest = std::fs::read(d.join("manifest.json")).unwrap();
        let digest = push_captured_manifest(reg, repo, "v1", &manifest);
        let mut sigs: Vec<PathBuf> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .starts_with("signature-")
            })
            .collect();
        sigs.sort();
        let layers: Vec<SigLayer> = sigs.iter().map(|p| read_sig_layer(p)).collect();
        attach(reg, repo, &digest, &layers);
        format!("{}/{repo}:v1", reg.host())
    }
}

#[test]
fn containers_image_valid_signatures_verify() {
    let Some(corpus) = corpus_or_skip("containers_image_valid_signatures_verify") else {
        return;
    };
    let fx = Fixture::new(&corpus);
    let reg = TestRegistry::start();
    for (name, repo) in [
        ("dir-img-cosign-valid", "ci/valid"),
        ("dir-img-cosign-valid-2", "ci/valid2"),
        ("dir-img-cosign-mixed", "ci/mixed"),
    ] {
        let r = fx.push(&reg, name, repo);
        let v = verify(
            &reg,
            &[
                &r,
                "--key",
                &fx.key("cosign.pub"),
                "--signed-repository",
                CI_REPO,
                "-o",
                "json",
            ],
        );
        assert_eq!(v.code, 0, "{name}: {v:?}");
        let res = &v.json()["results"][0];
        assert_eq!(
            res["digest"],
            "sha256:634a8f35b5f16dcf4aaa0822adc0b1964bb786fca12f6831de8ddc45e5986a00"
        );
        let n = res["signatures"].as_array().unwrap().len();
        let want = if name == "dir-img-cosign-valid-2" {
            2
        } else {
            1
        };
        assert_eq!(n, want, "{name}: {v:?}");
    }
    // a docker-reference with a tag (skopeo) still names the repository
    let r = fx.push(&reg, "dir-img-cosign-valid-with-tag", "ci/with-tag");
    let v = verify(
        &reg,
        &[
            &r,
            "--key",
            &fx.key("cosign.pub"),
            "--signed-repository",
            "192.168.64.2:5000/skopeo-signed",
        ],
    );
    assert_eq!(v.code, 0, "{v:?}");
    // key + Rekor SET, verified by key with the entry ignored (--insecure-ignore-tlog)
    let r = fx.push(&reg, "dir-img-cosign-key-rekor-valid", "ci/key-rekor");
    let v = verify(
        &reg,
        &[
            &r,
            "--key",
            &fx.key("cosign2.pub"),
            "--signed-repository",
            "192.168.64.2:5000/cosign-signed/key-1",
        ],
    );
    assert_eq!(v.code, 0, "{v:?}");
    // By default (as cosign) the Rekor entry is required, and checked offline against the
    // embedded public-good root: this signature has one, so it verifies, with its log index.
    let host = reg.host();
    let key = fx.key("cosign2.pub");
    let v = ocigate_exact(
        &[
            "verify",
            &r,
            "--key",
            &key,
            "--signed-repository",
            "192.168.64.2:5000/cosign-signed/key-1",
            "--registry-plain-http",
            &host,
        ],
        &[],
    );
    assert_eq!(v.code, 0, "{v:?}");
    assert!(v.stdout.contains("Rekor log index"), "{v:?}");
}

#[test]
fn containers_image_negative_fixtures_are_denied() {
    let Some(corpus) = corpus_or_skip("containers_image_negative_fixtures_are_denied") else {
        return;
    };
    let fx = Fixture::new(&corpus);
    let reg = TestRegistry::start();
    let key = fx.key("cosign.pub");
    let deny = |r: &str, args: &[&str], needle: &str| {
        let mut all = vec![r, "--key", &key];
        all.extend_from_slice(args);
        let v = verify(&reg, &all);
        assert_eq!(v.code, 1, "{r}: {v:?}");
        assert!(
            v.stdout.contains(needle),
            "{r}: expected {needle:?} in {v:?}"
        );
    };
    let ident = ["--signed-repository", CI_REPO];
    // valid signature, manifest changed after signing
    let r = fx.push(&reg, "dir-img-cosign-modified-manifest", "neg/modified");
    deny(&r, &ident, "signature is for another image");
    // A schema-1 manifest no registry accepts any more: checked with the pure verifier.
    let d = fx.dir.join("dir-img-cosign-manifest-digest-error");
    let digest = Digest::sha256_of(&std::fs::read(d.join("manifest.json")).unwrap());
    let layer = read_sig_layer(&d.join("signature-1"));
    let candidate = SignatureCandidate {
        location: "signature-1".into(),
        payload: layer.payload,
        signature: layer.annotations[SIGNATURE_ANNOTATION].clone(),
        annotations: layer.annotations,
    };
    let public =
        PublicKey::from_pem(&std::fs::read_to_string(&key).unwrap(), "cosign.pub").unwrap();
    let expect = Expectation {
        digest,
        repository: CI_REPO.into(),
        signed_identity: SignedIdentity::MatchRepository,
        annotations: BTreeMap::new(),
    };
    let auth = KeyAuthority {
        name: "cosign.pub",
        key: &public,
    };
    let e = verify_key_signature(&candidate, auth, &expect).unwrap_err();
    assert!(
        matches!(e.kind(), RejectionKind::DigestMismatch { .. }),
        "{e}"
    );
    // only a text/plain attachment: unsigned, and discovery says why
    let r = fx.push(&reg, "dir-img-cosign-other-attachment", "neg/other");
    deny(&r, &ident, "not a cosign signature");
    deny(&r, &ident, "no signatures found");
    // the valid image, but the reference is another repository
    let r = fx.push(&reg, "dir-img-cosign-valid", "neg/valid-other-repo");
    deny(
        &r,
        &[],
        "signature names \"192.168.64.2:5000/cosign-signed-single-sample\"",
    );
    // a signature by an unknown key
    let unknown = read_sig_layer(&fx.dir.join("unknown-cosign-key.signature"));
    let manifest = std::fs::read(fx.dir.join("dir-img-cosign-valid/manifest.json")).unwrap();
    let d = push_captured_manifest(&reg, "neg/unknown-key", "v1", &manifest);
    attach(&reg, "neg/unknown-key", &d, &[unknown]);
    deny(
        &format!("{}/neg/unknown-key:v1", reg.host()),
        &ident,
        "not signed by key",
    );
    // keyless and custom-PKI signatures carry no signature by this key
    let r = fx.push(&reg, "dir-img-cosign-fulcio-rekor-valid", "neg/fulcio");
    deny(
        &r,
        &[
            "--signed-repository",
            "192.168.64.2:5000/cosign-signed/fulcio-rekor-1",
        ],
        "not signed by key",
    );
    let r = fx.push(&reg, "dir-img-cosign-pki-valid", "neg/pki");
    deny(
        &r,
        &["--signed-repository", "localhost:5000/test"],
        "not signed by key",
    );
    // the key+Rekor signature with the other key
    let r = fx.push(&reg, "dir-img-cosign-key-rekor-valid", "neg/key-rekor");
    deny(
        &r,
        &[
            "--signed-repository",
            "192.168.64.2:5000/cosign-signed/key-1",
        ],
        "not signed by key",
    );
    // a signature whose image is absent: nothing to verify
    let sig = read_sig_layer(&fx.dir.join("dir-img-cosign-no-manifest/signature-1"));
    let d =
        Digest::parse("sha256:634a8f35b5f16dcf4aaa0822adc0b1964bb786fca12f6831de8ddc45e5986a00")
            .unwrap();
    attach(&reg, "neg/no-manifest", &d, &[sig]);
    deny(
        &format!("{}/neg/no-manifest@{d}", reg.host()),
        &ident,
        "was not found",
    );
}

/// A policy file in `dir` with one rule per (repository, authorities YAML).
fn policy_file(dir: &Path, keys: &str, rules: &[(&str, &str)]) -> PathBuf {
    let mut text =
        format!("apiVersion: ocigate.dev/v1alpha1\nkind: Policy\nkeys: [{keys}]\nrules:\n");
    for (i, (image, authorities)) in rules.iter().enumerate() {
        text.push_str(&format!(
            "- name: r{i}\n  images: [\"{image}\"]\n  signedIdentity: ignore\n  authorities:\n{authorities}"
        ));
    }
    let p = dir.join(format!("p{}.yaml", rules.len()));
    std::fs::write(&p, text).unwrap();
    p
}

const MITR_KEYLESS: &str = "    - keyless:\n        identities: [{issuer: https://github.com/login/oauth, subject: mitr@redhat.com}]\n";

#[test]
fn keyless_legacy_signatures_verify_offline_with_the_embedded_root() {
    let Some(corpus) =
        corpus_or_skip("keyless_legacy_signatures_verify_offline_with_the_embedded_root")
    else {
        return;
    };
    let fx = Fixture::new(&corpus);
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let host = reg.host();
    let r = fx.push(&reg, "dir-img-cosign-fulcio-rekor-valid", "kl/fulcio");
    let rules = [(format!("{host}/kl/fulcio"), MITR_KEYLESS.to_string())];
    let rules: Vec<(&str, &str)> = rules
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let p = policy_file(dir.path(), "", &rules);
    let v = verify(&reg, &[&r, "--policy", p.to_str().unwrap(), "-o", "json"]);
    assert_eq!(v.code, 0, "{v:?}");
    let sig = &v.json()["results"][0]["signatures"][0];
    assert_eq!(sig["kind"], "keyless");
    assert_eq!(sig["identity"], "mitr@redhat.com");
    assert_eq!(sig["issuer"], "https://github.com/login/oauth");
    assert_eq!(sig["logIndex"], 11605770);
    assert_eq!(sig["trustRoot"], "embedded public-good");

    // regexp identities, and identities that must not match
    for (authorities, ok, needle) in [
        (
            "    - keyless:\n        identities: [{issuer: https://github.com/login/oauth, subjectRegExp: '^mitr@redhat\\.com$'}]\n",
            true,
            "",
        ),
        (
            "    - keyless:\n        identities: [{issuer: https://github.com/login/oauth, subject: someone@redhat.com}]\n",
            false,
            "does not match \"someone@redhat.com\"",
        ),
        (
            "    - keyless:\n        identities: [{issuer: https://accounts.google.com, subject: mitr@redhat.com}]\n",
            false,
            "OIDC issuer \"https://github.com/login/oauth\" does not match",
        ),
        (
            "    - keyless:\n        identities: [{issuer: https://github.com/login/oauth, subjectRegExp: '^mitr@redhat\\.org$'}]\n",
            false,
            "does not match regexp",
        ),
        (
            "    - keyless:\n        identities: [{issuer: https://github.com/login/oauth, subject: mitr@redhat.com}]\n      tlog: skip\n",
            false,
            "not supported yet",
        ),
    ] {
        let image = format!("{host}/kl/fulcio");
        let p = policy_file(dir.path(), "", &[(image.as_str(), authorities)]);
        let v = verify(&reg, &[&r, "--policy", p.to_str().unwrap()]);
        assert_eq!(v.code == 0, ok, "{authorities}: {v:?}");
        assert!(
            v.stdout.contains(needle),
            "{authorities}: expected {needle:?} in {v:?}"
        );
    }

    // A tampered Rekor SET, and a certificate from another keyless signature: both refused.
    let d = fx.dir.join("dir-img-cosign-fulcio-rekor-valid");
    let manifest = std::fs::read(d.join("manifest.json")).unwrap();
    let digest = push_captured_manifest(&reg, "kl/tampered", "v1", &manifest);
    let mut layer = read_sig_layer(&d.join("signature-1"));
    let set: serde_json::Value =
        serde_json::from_str(&layer.annotations["dev.sigstore.cosign/bundle"]).unwrap();
    let mut forged = set.clone();
    forged["Payload"]["integratedTime"] =
        serde_json::json!(set["Payload"]["integratedTime"].as_i64().unwrap() + 60);
    layer
        .annotations
        .insert("dev.sigstore.cosign/bundle".into(), forged.to_string());
    attach(&reg, "kl/tampered", &digest, &[layer]);
    let image = format!("{host}/kl/tampered");
    let p = policy_file(dir.path(), "", &[(image.as_str(), MITR_KEYLESS)]);
    let v = verify(
        &reg,
        &[&format!("{image}:v1"), "--policy", p.to_str().unwrap()],
    );
    assert_eq!(v.code, 1, "{v:?}");
    assert!(v.stdout.contains("not verified for authority"), "{v:?}");
    assert!(v.stdout.contains("SET verification failed"), "{v:?}");
}

#[test]
fn key_signatures_with_tlog_required_check_the_rekor_entry() {
    let Some(corpus) = corpus_or_skip("key_signatures_with_tlog_required_check_the_rekor_entry")
    else {
        return;
    };
    let fx = Fixture::new(&corpus);
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let host = reg.host();
    let logged = fx.push(&reg, "dir-img-cosign-key-rekor-valid", "tl/logged");
    let unlogged = fx.push(&reg, "dir-img-cosign-valid", "tl/unlogged");
    let keys = format!(
        "{{name: k2, path: {}}}, {{name: k1, path: {}}}",
        fx.key("cosign2.pub"),
        fx.key("cosign.pub")
    );
    let a = format!("{host}/tl/logged");
    let b = format!("{host}/tl/unlogged");
    let p = policy_file(
        dir.path(),
        &keys,
        &[
            (a.as_str(), "    - key: {name: k2}\n      tlog: required\n"),
            (b.as_str(), "    - key: {name: k1}\n      tlog: required\n"),
        ],
    );
    let v = verify(
        &reg,
        &[
            &logged,
            &unlogged,
            "--policy",
            p.to_str().unwrap(),
            "-o",
            "json",
        ],
    );
    assert_eq!(v.code, 1, "{v:?}");
    let doc = v.json();
    let ok = &doc["results"][0];
    assert_eq!(ok["verdict"], "allow", "{v:?}");
    assert_eq!(ok["signatures"][0]["logIndex"], 11608800);
    let denied = &doc["results"][1];
    assert_eq!(denied["verdict"], "deny");
    assert!(
        denied["reasons"].to_string().contains("has no Rekor entry"),
        "{v:?}"
    );
}

struct Connaisseur {
    dir: PathBuf,
}

impl Connaisseur {
    fn new(corpus: &Path) -> Self {
        Connaisseur {
            dir: corpus.join("connaisseur/test/testdata/cosign"),
        }
    }
    fn key(&self, who: &str) -> PathBuf {
        self.dir.join(format!("{who}.key"))
    }
    fn image_dir(&self) -> PathBuf {
        self.dir.join("securesystemsengineering/testimage")
    }
    /// Push image `tag` and (when `with_sig`) its captured `.sig` manifest byte-for-byte.
    fn push(&self, reg: &TestRegistry, repo: &str, tag: &str, with_sig: bool) -> Digest {
        let m = std::fs::read(self.image_dir().join(format!("manifests/{tag}.json"))).unwrap();
        let digest = push_captured_manifest(reg, repo, tag, &m);
        if with_sig {
            let sig_tag = format!("{}.sig", digest.tag_prefix());
            let bytes =
                std::fs::read(self.image_dir().join(format!("manifests/{sig_tag}.json"))).unwrap();
            let parsed = ImageManifest::parse(
                &Manifest {
                    bytes: bytes.clone(),
                    digest: Digest::sha256_of(&bytes),
                    media_type: OCI_MANIFEST.into(),
                },
                "corpus",
            )
            .unwrap();
            let client = reg.client();
            let r = reg.reference(&format!("{repo}:{sig_tag}"));
            block_on(async {
                for l in &parsed.layers {
                    let blob =
                        std::fs::read(self.image_dir().join(format!("blobs/{}.json", l.digest)))
                            .unwrap();
                    assert_eq!(client.put_blob(&r, &blob).await.unwrap().as_str(), l.digest);
                }
                // cosign's config blob was not captured; ocigate writes the same bytes.
                let config = ocigate::sign::cosign_config(&parsed.layers).unwrap();
                let cd = client.put_blob(&r, &config).await.unwrap();
                assert_eq!(
                    Some(cd.to_string()),
                    parsed.config.as_ref().map(|c| c.digest.clone()),
                    "ocigate's cosign config differs from the one cosign wrote for {sig_tag}"
                );
                client.put_manifest(&r, &bytes, OCI_MANIFEST).await.unwrap();
            });
        }
        digest
    }
}

const HUB_REPO: &str = "docker.io/securesystemsengineering/testimage";

#[test]
fn connaisseur_alice_bob_charlie() {
    let Some(corpus) = corpus_or_skip("connaisseur_alice_bob_charlie") else {
        return;
    };
    let c = Connaisseur::new(&corpus);
    let reg = TestRegistry::start();
    let repo = "securesystemsengineering/testimage";
    c.push(&reg, repo, "multi-cosigned-alice", true);
    c.push(&reg, repo, "multi-cosigned-alice-bob-charlie", true);
    c.push(&reg, "unsigned/testimage", "multi-cosigned-alice", false);
    let host = reg.host();
    let alice = format!("{host}/{repo}:multi-cosigned-alice");
    let abc = format!("{host}/{repo}:multi-cosigned-alice-bob-charlie");
    let unsigned = format!("{host}/unsigned/testimage:multi-cosigned-alice");

    let key = |who: &str| c.key(who).to_str().unwrap().to_string();
    let by_key = |reference: &str, who: &str| {
        verify(
            &reg,
            &[
                reference,
                "--key",
                &key(who),
                "--signed-repository",
                HUB_REPO,
            ],
        )
    };
    let v = by_key(&alice, "alice");
    assert_eq!(v.code, 0, "{v:?}");
    let v = by_key(&alice, "bob");
    assert_eq!(v.code, 1, "{v:?}");
    assert!(v.stdout.contains("not signed by key"), "{v:?}");
    for who in ["alice", "bob", "charlie"] {
        let v = by_key(&abc, who);
        assert_eq!(v.code, 0, "{who}: {v:?}");
    }
    let v = by_key(&unsigned, "alice");
    assert_eq!(v.code, 1, "{v:?}");
    assert!(v.stdout.contains("no signatures found"), "{v:?}");

    // Threshold policies over the same images.
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("p.yaml");
    std::fs::write(
        &policy,
        format!(
            "apiVersion: ocigate.dev/v1alpha1\nkind: Policy\nkeys:\n\
             - {{name: alice, path: {a}}}\n- {{name: bob, path: {b}}}\n- {{name: charlie, path: {ch}}}\n- {{name: default, path: {d}}}\n\
             rules:\n\
             - name: all-three\n  images: [\"{host}/{repo}\"]\n  threshold: 3\n  signedIdentity: {{exactRepository: {HUB_REPO}}}\n\
             \x20 authorities: [{{key: {{name: alice}}, tlog: skip}}, {{key: {{name: bob}}, tlog: skip}}, {{key: {{name: charlie}}, tlog: skip}}]\n\
             - name: needs-default\n  images: [\"{host}/unsigned/**\"]\n  threshold: 2\n  signedIdentity: {{exactRepository: {HUB_REPO}}}\n\
             \x20 authorities: [{{key: {{name: alice}}, tlog: skip}}, {{key: {{name: default}}, tlog: skip}}]\n",
            a = key("alice"),
            b = key("bob"),
            ch = key("charlie"),
            d = key("default"),
        ),
    )
    .unwrap();
    let p = policy.to_str().unwrap();
    let v = verify(&reg, &[&abc, "--policy", p, "-o", "json"]);
    assert_eq!(v.code, 0, "{v:?}");
    let doc = v.json();
    let mut who: Vec<&str> = doc["results"][0]["signatures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["authority"].as_str().unwrap())
        .collect();
    who.sort();
    assert_eq!(who, ["alice", "bob", "charlie"]);
    let v = verify(&reg, &[&alice, "--policy", p]);
    assert_eq!(v.code, 1, "{v:?}");
    assert!(
        v.stdout
            .contains("1 of 3 required authorities verified; missing: bob, charlie"),
        "{v:?}"
    );
    let v = verify(&reg, &[&unsigned, "--policy", p]);
    assert_eq!(v.code, 1, "{v:?}");
    assert!(
        v.stdout.contains("[rule needs-default]") && v.stdout.contains("no signatures found"),
        "{v:?}"
    );
}

#[test]
fn connaisseur_keyless_image_verifies_with_its_identity() {
    let Some(corpus) = corpus_or_skip("connaisseur_keyless_image_verifies_with_its_identity")
    else {
        return;
    };
    let c = Connaisseur::new(&corpus);
    let reg = TestRegistry::start();
    c.push(&reg, "phbelitz/rekor-test", "keyless", true);
    let r = format!("{}/phbelitz/rekor-test:keyless", reg.host());
    let dir = tempfile::tempdir().unwrap();
    let image = format!("{}/phbelitz/rekor-test", reg.host());
    for (subject, ok) in [
        ("philipp.belitz@securesystems.de", true),
        ("alice@securesystems.de", false),
    ] {
        let authorities = format!(
            "    - keyless:\n        identities: [{{issuer: https://github.com/login/oauth, subject: {subject}}}]\n"
        );
        let p = policy_file(dir.path(), "", &[(image.as_str(), authorities.as_str())]);
        let v = verify(&reg, &[&r, "--policy", p.to_str().unwrap(), "-o", "json"]);
        assert_eq!(v.code == 0, ok, "{subject}: {v:?}");
        if ok {
            assert_eq!(
                v.json()["results"][0]["signatures"][0]["logIndex"],
                98235800
            );
        }
    }
}

#[test]
fn connaisseur_keyless_image_is_not_allowed_by_a_key() {
    let Some(corpus) = corpus_or_skip("connaisseur_keyless_image_is_not_allowed_by_a_key") else {
        return;
    };
    let c = Connaisseur::new(&corpus);
    let reg = TestRegistry::start();
    c.push(&reg, "phbelitz/rekor-test", "keyless", true);
    let r = format!("{}/phbelitz/rekor-test:keyless", reg.host());
    let v = verify(
        &reg,
        &[
            &r,
            "--key",
            c.key("alice").to_str().unwrap(),
            "--signed-repository",
            "docker.io/phbelitz/rekor-test",
        ],
    );
    assert_eq!(v.code, 1, "{v:?}");
    assert!(v.stdout.contains("not signed by key"), "{v:?}");
}

#[test]
fn keyless_flags_on_verify() {
    let Some(corpus) = corpus_or_skip("keyless_flags_on_verify") else {
        return;
    };
    let fx = Fixture::new(&corpus);
    let reg = TestRegistry::start();
    let r = fx.push(&reg, "dir-img-cosign-fulcio-rekor-valid", "flags/fulcio");
    let signed = "192.168.64.2:5000/cosign-signed/fulcio-rekor-1";
    let good_root = corpus.join("sigstore-root-signing/targets/trusted_root.json");
    let other_root = corpus.join(
        "sigstore-conformance/test/assets/bundle-verify/intoto-with-custom-trust-root/trusted_root.json",
    );
    let base = [
        r.as_str(),
        "--certificate-identity",
        "mitr@redhat.com",
        "--certificate-oidc-issuer",
        "https://github.com/login/oauth",
        "--signed-repository",
        signed,
    ];
    let v = verify(&reg, &base);
    assert_eq!(v.code, 0, "{v:?}");
    let mut with_root = base.to_vec();
    with_root.extend(["--trusted-root", good_root.to_str().unwrap()]);
    assert_eq!(verify(&reg, &with_root).code, 0);
    let mut wrong_root = base.to_vec();
    wrong_root.extend(["--trusted-root", other_root.to_str().unwrap()]);
    let v = verify(&reg, &wrong_root);
    assert_eq!(v.code, 1, "{v:?}");
    assert!(
        v.stdout.contains("does not verify against trusted root"),
        "{v:?}"
    );
    let v = verify(
        &reg,
        &[
            &r,
            "--certificate-identity-regexp",
            "@redhat\\.com$",
            "--certificate-oidc-issuer",
            "https://github.com/login/oauth",
            "--signed-repository",
            signed,
        ],
    );
    assert_eq!(v.code, 0, "{v:?}");
    let v = verify(
        &reg,
        &[
            &r,
            "--certificate-identity",
            "mitr@redhat.com",
            "--signed-repository",
            signed,
        ],
    );
    assert_eq!(v.code, 2, "{v:?}");
    assert!(v.stderr.contains("--certificate-oidc-issuer"), "{v:?}");
}
