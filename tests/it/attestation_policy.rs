//! Attestations as the policy and `verify-attestation` use them, with cosign 3.1.1 as the
//! writer: `cosign attest` (legacy `.att` and `--new-bundle-format`) verified with CEL
//! conditions true and false; an attestation copied under another image's tag; a planted
//! oversized envelope beside a valid one; a runaway condition; a DSSE envelope signed by the keys
//! of two authorities (conditions tried with each); the policy through Kubernetes'
//! admission client; and real npm / cosign provenance bundles from the corpus.

use std::path::{Path, PathBuf};

use ocigate::reference::ImageRef;
use ocigate::registry::Descriptor;

use crate::attest::{CosignFormat, cosign_attest};
use crate::harness::*;
use crate::webhook::{kube_tools_or_skip, kwhclient, start_serve, write};

const PROVENANCE: &str = r#"{"buildDefinition":{"buildType":"https://actions.github.io/buildtypes/workflow/v1","externalParameters":{"workflow":{"ref":"refs/tags/v1.2.3","repository":"https://github.com/acme/app","path":".github/workflows/release.yml"}}},"runDetails":{"builder":{"id":"https://github.com/actions/runner/github-hosted"}}}"#;
const FROM_ACME: &str = r#"predicate.buildDefinition.externalParameters.workflow.repository == "https://github.com/acme/app""#;
const FROM_ELSEWHERE: &str = r#"predicate.buildDefinition.externalParameters.workflow.repository == "https://github.com/evil/app""#;
const SLSA1: &str = "https://slsa.dev/provenance/v1";

/// A registry with images attested by cosign itself: `legacy` (the `.att` tag) and `bundle`
/// (`--new-bundle-format`, a referrer), both also signed by `ocigate sign`; `plain` signed
/// only. Keys made by `ocigate generate-key-pair` (cosign reads them).
struct Attested {
    reg: TestRegistry,
    dir: tempfile::TempDir,
    cosign: PathBuf,
    key: PathBuf,
    public: PathBuf,
    legacy: String,
    bundle: String,
    plain: String,
}

fn attested(test: &str) -> Option<Attested> {
    let cosign = crate::cosign_peer::cosign_or_skip(test)?;
    let reg = TestRegistry::start();
    let client = reg.client();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = generate_keys(dir.path(), "k");
    let predicate = write(dir.path(), "provenance.json", PROVENANCE);
    let mut refs = Vec::new();
    for (repo, seed) in [
        ("apps/legacy:v1", "att legacy"),
        ("apps/bundle:v1", "att bundle"),
        ("apps/plain:v1", "att plain"),
    ] {
        let r = reg.reference(repo);
        push_image(&client, &r, seed);
        let s = sign(&reg, &key, &r.to_string(), &[]);
        assert_eq!(s.code, 0, "{s:?}");
        refs.push(r.to_string());
    }
    for (r, format) in [
        (&refs[0], CosignFormat::Legacy),
        (&refs[1], CosignFormat::Bundle),
    ] {
        let run = cosign_attest(
            &cosign,
            dir.path(),
            &key,
            r,
            "slsaprovenance1",
            &predicate,
            format,
        );
        assert_eq!(run.code, 0, "{run:?}");
    }
    let [legacy, bundle, plain] = <[String; 3]>::try_from(refs).unwrap();
    Some(Attested {
        reg,
        dir,
        cosign,
        key,
        public,
        legacy,
        bundle,
        plain,
    })
}

/// `ocigate verify-attestation REF --key PUB --insecure-ignore-tlog -o json` with `extra`.
fn verify_attestation(
    a: &Attested,
    reference: &str,
    public: &Path,
    extra: &[&str],
) -> (Run, serde_json::Value) {
    let host = a.reg.host();
    let mut args = vec![
        "verify-attestation",
        reference,
        "--key",
        public.to_str().unwrap(),
        "--insecure-ignore-tlog",
        "--registry-plain-http",
        &host,
        "-o",
        "json",
    ];
    args.extend_from_slice(extra);
    let run = ocigate(&args, &[]);
    let json = run.json();
    (run, json["results"][0].clone())
}

#[test]
fn cosign_attestations_verify_with_their_conditions() {
    let Some(a) = attested("cosign_attestations_verify_with_their_conditions") else {
        return;
    };
    for r in [&a.legacy, &a.bundle] {
        let (run, result) = verify_attestation(
            &a,
            r,
            &a.public,
            &["--type", "slsaprovenance1", "--condition", FROM_ACME],
        );
        assert_eq!(run.code, 0, "{run:?}");
        assert_eq!(result["verdict"], "allow", "{result}");
        let att = &result["attestations"][0];
        assert_eq!(att["predicateType"], SLSA1, "{result}");
        assert_eq!(att["conditions"][0]["passed"], true, "{result}");
        assert_eq!(att["kind"], "key", "{result}");

        // A false condition: verified, but the condition says no.
        let (run, result) = verify_attestation(
            &a,
            r,
            &a.public,
            &[
                "--type",
                SLSA1,
                "--condition",
                FROM_ACME,
                "--condition",
                FROM_ELSEWHERE,
            ],
        );
        assert_eq!(run.code, 1, "{run:?}");
        assert_eq!(result["failure"], "condition", "{result}");
        let reasons = result["reasons"].to_string();
        assert!(
            reasons.contains("evil/app"),
            "the failed condition is named: {reasons}"
        );
        assert_eq!(
            result["attestations"][0]["conditions"][0]["passed"], true,
            "{result}"
        );
        assert_eq!(
            result["attestations"][0]["conditions"][1]["passed"], false,
            "{result}"
        );

        // No statement of that type.
        let (run, result) = verify_attestation(&a, r, &a.public, &["--type", "spdx"]);
        assert_eq!(run.code, 1, "{run:?}");
        assert_eq!(result["failure"], "unattested", "{result}");
    }
    // Another key did not sign them; the signed-only image has none.
    let (_, other) = generate_keys(a.dir.path(), "other");
    let (run, result) = verify_attestation(&a, &a.legacy, &other, &["--type", "slsaprovenance1"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(result["failure"], "unattested", "{result}");
    let (run, result) = verify_attestation(&a, &a.plain, &a.public, &["--type", "slsaprovenance1"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(result["failure"], "unattested", "{result}");
    let _ = (&a.cosign, &a.key);
}

/// The raw manifest at `tag` of `repo`, and its media type.
fn raw_manifest(reg: &TestRegistry, repo_tag: &str) -> (Vec<u8>, String) {
    let r = reg.reference(repo_tag);
    let m = block_on(reg.client().get_manifest(&r))
        .unwrap()
        .expect("manifest");
    (m.bytes, m.media_type)
}

fn put_manifest(reg: &TestRegistry, repo_tag: &str, body: &[u8], media_type: &str) {
    let r = reg.reference(repo_tag);
    block_on(reg.client().put_manifest(&r, body, media_type)).expect("put manifest");
}

fn att_tag(reg: &TestRegistry, reference: &str) -> String {
    let r = block_on(
        reg.client()
            .get_manifest(&ImageRef::parse(reference).unwrap()),
    )
    .unwrap()
    .expect("image");
    format!("{}.att", r.digest.tag_prefix())
}

#[test]
fn an_attestation_copied_under_another_image_is_denied() {
    let Some(a) = attested("an_attestation_copied_under_another_image_is_denied") else {
        return;
    };
    // The legacy image's `.att` manifest put under the signed-only image's `.att` tag (its
    // layers' blobs copied into that repository).
    let from = att_tag(&a.reg, &a.legacy);
    let to = att_tag(&a.reg, &a.plain);
    let (body, media_type) = raw_manifest(&a.reg, &format!("apps/legacy:{from}"));
    let m: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let legacy_repo = a.reg.reference("apps/legacy:x");
    let plain_repo = a.reg.reference("apps/plain:x");
    let client = a.reg.client();
    let mut descriptors = vec![m["config"].clone()];
    descriptors.extend(m["layers"].as_array().unwrap().iter().cloned());
    for d in descriptors {
        let d: Descriptor = serde_json::from_value(d).unwrap();
        let blob = block_on(client.get_blob(&legacy_repo, &d)).unwrap();
        block_on(client.put_blob(&plain_repo, &blob)).unwrap();
    }
    put_manifest(&a.reg, &format!("apps/plain:{to}"), &body, &media_type);
    let (run, result) = verify_attestation(&a, &a.plain, &a.public, &["--type", "slsaprovenance1"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(result["failure"], "unattested", "{result}");
    let reasons = result["reasons"].to_string();
    assert!(
        reasons.contains("sha256:"),
        "the subject that was attested is said: {reasons}"
    );
}

#[test]
fn a_planted_oversized_envelope_beside_a_valid_one_is_left_alone() {
    let Some(a) = attested("a_planted_oversized_envelope_beside_a_valid_one_is_left_alone") else {
        return;
    };
    let tag = att_tag(&a.reg, &a.legacy);
    let (body, media_type) = raw_manifest(&a.reg, &format!("apps/legacy:{tag}"));
    let mut m: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let planted = vec![b'{'; 48 << 20];
    let repo = a.reg.reference("apps/legacy:x");
    let d = block_on(a.reg.client().put_blob(&repo, &planted)).unwrap();
    let layer = serde_json::json!({
        "mediaType": "application/vnd.dsse.envelope.v1+json",
        "digest": d.to_string(),
        "size": planted.len(),
        "annotations": {"predicateType": SLSA1, "dev.cosignproject.cosign/signature": ""},
    });
    m["layers"].as_array_mut().unwrap().insert(0, layer);
    put_manifest(
        &a.reg,
        &format!("apps/legacy:{tag}"),
        &serde_json::to_vec(&m).unwrap(),
        &media_type,
    );
    let (run, result) = verify_attestation(
        &a,
        &a.legacy,
        &a.public,
        &["--type", "slsaprovenance1", "--condition", FROM_ACME],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(result["verdict"], "allow", "{result}");
    assert_eq!(
        result["attestations"][0]["conditions"][0]["passed"], true,
        "{result}"
    );
}

#[test]
fn a_runaway_condition_is_refused_not_allowed() {
    let Some(a) = attested("a_runaway_condition_is_refused_not_allowed") else {
        return;
    };
    let list: Vec<u32> = (0..20_000).collect();
    let predicate = write(
        a.dir.path(),
        "big.json",
        &serde_json::json!({ "a": list }).to_string(),
    );
    let run = cosign_attest(
        &a.cosign,
        a.dir.path(),
        &a.key,
        &a.plain,
        "https://example.com/list/v1",
        &predicate,
        CosignFormat::Legacy,
    );
    assert_eq!(run.code, 0, "{run:?}");
    let (run, result) = verify_attestation(
        &a,
        &a.plain,
        &a.public,
        &[
            "--type",
            "https://example.com/list/v1",
            "--deadline",
            "20",
            "--condition",
            "predicate.a.all(x, predicate.a.all(y, x == y))",
        ],
    );
    assert_eq!(run.code, 1, "{run:?}");
    // Refused by the cost limit, not cut by the deadline: the class is the condition's.
    assert_eq!(result["failure"], "condition", "{result}");
    let conditions = result["attestations"][0]["conditions"].to_string();
    assert!(
        conditions.contains("cost"),
        "the reason names the cost limit: {conditions}"
    );
}

#[test]
fn attestation_rules_through_kubernetes_admission() {
    let Some(k) = kube_tools_or_skip("attestation_rules_through_kubernetes_admission") else {
        return;
    };
    let Some(a) = attested("attestation_rules_through_kubernetes_admission") else {
        return;
    };
    let d = a.dir.path();
    let host = a.reg.host();
    let policy = write(
        d,
        "policy.yaml",
        &format!(
            "apiVersion: ocigate.dev/v1alpha1\nkind: Policy\nkeys: [{{name: release, path: {}}}]\nrules:\n  \
             - name: apps\n    images: [\"{host}/apps/**\"]\n    authorities: [{{key: {{name: release}}, tlog: skip}}]\n    \
             attestations:\n      - name: provenance\n        predicateType: https://slsa.dev/provenance/v1\n        \
             conditions:\n          - expression: '{FROM_ACME}'\n            message: built from acme/app\n",
            a.public.display()
        ),
    );
    let strict = write(
        d,
        "strict.yaml",
        &std::fs::read_to_string(&policy)
            .unwrap()
            .replace(FROM_ACME, FROM_ELSEWHERE)
            .replace("built from acme/app", "built from evil/app"),
    );
    let tls = make_tls(d);
    let pod = |name: &str, image: &str| {
        write(
            d,
            &format!("{name}.yaml"),
            &format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: apps\nspec:\n  containers:\n  - name: app\n    image: {image}\n"
            ),
        )
    };
    let server = start_serve(&policy, &tls, &host, &[]);
    for (name, image) in [("legacy", &a.legacy), ("bundle", &a.bundle)] {
        let run = kwhclient(&k, &server, &tls, &pod(name, image), &[]);
        assert_eq!(run.code, 0, "{name}: {run:?}");
    }
    let run = kwhclient(&k, &server, &tls, &pod("plain", &a.plain), &[]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("[unattested]"), "{run:?}");
    assert!(
        run.stdout.contains("provenance"),
        "the deny names the attestation: {run:?}"
    );
    drop(server);
    let server = start_serve(&strict, &tls, &host, &[]);
    let run = kwhclient(&k, &server, &tls, &pod("legacy2", &a.legacy), &[]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("[condition]"), "{run:?}");
    assert!(
        run.stdout.contains("built from evil/app"),
        "the deny says the message: {run:?}"
    );
}

/// Real GitHub Actions provenance for npm packages (sha512 subjects) and cosign's OCI
/// attestation bundle, verified offline with true and false conditions.
#[test]
fn corpus_provenance_bundles_with_conditions() {
    let Some(c) = corpus_or_skip("corpus_provenance_bundles_with_conditions") else {
        return;
    };
    let sigstore_js =
        "https://github.com/sigstore/sigstore-js/.github/workflows/release.yml@refs/heads/main";
    let actions = "https://token.actions.githubusercontent.com";
    let cases = [
        (
            c.join("sigstore-go/examples/bundle-provenance.json"),
            "slsaprovenance",
            "sha512:76176ffa33808b54602c7c35de5c6e9a4deb96066dba6533f50ac234f4f1f4c6b3527515dc17c06fbe2860030f410eee69ea20079bd3a2c6f3dcf3b329b10751",
            sigstore_js,
            actions,
            r#"predicate.invocation.configSource.entryPoint == ".github/workflows/release.yml""#,
        ),
        (
            c.join(
                "sigstore-go/pkg/testing/data/bundles/sigstore.js@2.0.0-provenance.sigstore.json",
            ),
            "slsaprovenance1",
            "sha512:46d4e2f74c4877316640000a6fdf8a8b59f1e0847667973e9859f774dd31b8f1e0937813b777fb66a2ac67d50540fe34640966eee9fc2ccca387082b4c85cd3c",
            sigstore_js,
            actions,
            r#"predicate.buildDefinition.externalParameters.workflow.repository == "https://github.com/sigstore/sigstore-js" && signer.github.repository == "sigstore/sigstore-js""#,
        ),
        (
            c.join("cosign/pkg/cosign/testdata/oci-attestation.sigstore.json"),
            "custom",
            "sha256:732112270d7e59418a8c080b134b24cabd67d250d0d0147a97ed95ba5c280aa4",
            "cody@soyland.com",
            "https://github.com/login/oauth",
            r#"subject[0].name == "127.0.0.1:60943/repo""#,
        ),
    ];
    for (bundle, kind, digest, identity, issuer, condition) in cases {
        let args = |condition: &str, digest: &str| {
            vec![
                "verify-bundle".to_string(),
                "--bundle".into(),
                bundle.display().to_string(),
                "--type".into(),
                kind.into(),
                "--certificate-identity".into(),
                identity.into(),
                "--certificate-oidc-issuer".into(),
                issuer.into(),
                "--condition".into(),
                condition.into(),
                digest.into(),
            ]
        };
        let run_with = |condition: &str, digest: &str| {
            let a = args(condition, digest);
            ocigate(&a.iter().map(String::as_str).collect::<Vec<_>>(), &[])
        };
        let run = run_with(condition, digest);
        assert_eq!(run.code, 0, "{}: {run:?}", bundle.display());
        assert!(run.stdout.contains("condition held"), "{run:?}");
        let run = run_with(&format!("!({condition})"), digest);
        assert_eq!(run.code, 1, "{}: {run:?}", bundle.display());
        assert!(run.stdout.contains("condition FAILED"), "{run:?}");
        // Another artifact: no subject names it.
        let other = format!("{}0", &digest[..digest.len() - 1]);
        let other = if other == digest {
            format!("{}1", &digest[..digest.len() - 1])
        } else {
            other
        };
        let run = run_with(condition, &other);
        assert_eq!(run.code, 1, "{}: {run:?}", bundle.display());
    }
}

/// `verify-attestation`'s own inputs: a type that is neither a URI nor one of cosign's names,
/// and a condition that does not compile, are usage errors (exit 2) saying what and where,
/// before any registry is asked.
#[test]
fn verify_attestation_refuses_bad_types_and_conditions() {
    let dir = tempfile::tempdir().unwrap();
    let (_, public) = generate_keys(dir.path(), "k");
    let key = public.to_str().unwrap();
    let run = ocigate(
        &[
            "verify-attestation",
            "127.0.0.1:1/a:v1",
            "--type",
            "sbom",
            "--key",
            key,
        ],
        &[],
    );
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("\"sbom\" is not a predicate type"),
        "{run:?}"
    );
    let run = ocigate(
        &[
            "verify-attestation",
            "127.0.0.1:1/a:v1",
            "--type",
            "slsaprovenance1",
            "--key",
            key,
            "--condition",
            "predicateType == 'x'",
            "--condition",
            "predicate.a &&",
        ],
        &[],
    );
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("--condition 2 (1:"), "{run:?}");
}

/// `envelope` (a DSSE envelope's JSON) with a second signature, by `key`, over the same PAE.
fn countersigned(envelope: &[u8], key: &Path) -> Vec<u8> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut env: serde_json::Value = serde_json::from_slice(envelope).unwrap();
    let payload_type = env["payloadType"].as_str().unwrap().to_string();
    let payload = b64.decode(env["payload"].as_str().unwrap()).unwrap();
    let mut pae = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    pae.extend_from_slice(&payload);
    let pem = std::fs::read_to_string(key).unwrap();
    let signer =
        ocigate::sign::key::SigningKey::from_encrypted_pem(&pem, PASSWORD.as_bytes(), "k2")
            .unwrap();
    let sig = b64.encode(signer.sign(&pae).unwrap());
    env["signatures"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"keyid": "", "sig": sig}));
    serde_json::to_vec(&env).unwrap()
}

/// One DSSE envelope signed by two keys, each the key of one authority of the rule: both
/// authorities verify it, and the conditions see `signer.authority`, so the one a condition
/// names must be tried even when the other verified first (a false deny otherwise); a
/// condition no authority satisfies still denies as `condition`.
#[test]
fn conditions_are_tried_with_every_authority_that_verifies() {
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (key1, public1) = generate_keys(d, "k1");
    let (key2, public2) = generate_keys(d, "k2");
    let r = reg.reference("apps/two:v1");
    push_image(&reg.client(), &r, "two authorities");
    let reference = r.to_string();
    let s = sign(&reg, &key1, &reference, &[]);
    assert_eq!(s.code, 0, "{s:?}");
    let predicate = write(d, "provenance.json", PROVENANCE);
    let run = crate::attest::ocigate_attest(
        &reg,
        &key1,
        &reference,
        SLSA1,
        &predicate,
        &["--format", "legacy"],
    );
    assert_eq!(run.code, 0, "{run:?}");
    // The `.att` layer's envelope countersigned by k2, put back in its place.
    let tag = format!("apps/two:{}", att_tag(&reg, &reference));
    let (body, media_type) = raw_manifest(&reg, &tag);
    let mut m: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let layer = &mut m["layers"][0];
    let old: Descriptor = serde_json::from_value(layer.clone()).unwrap();
    let client = reg.client();
    let envelope = block_on(client.get_blob(&r, &old)).unwrap();
    let both = countersigned(&envelope, &key2);
    let new = block_on(client.put_blob(&r, &both)).unwrap();
    layer["digest"] = new.to_string().into();
    layer["size"] = both.len().into();
    put_manifest(&reg, &tag, &serde_json::to_vec(&m).unwrap(), &media_type);

    let host = reg.host();
    let policy = |wanted: &str| {
        write(
            d,
            &format!("{wanted}.yaml"),
            &format!(
                "apiVersion: ocigate.dev/v1alpha1\nkind: Policy\nkeys:\n  \
                 - {{name: k1, path: {}}}\n  - {{name: k2, path: {}}}\nrules:\n  \
                 - name: apps\n    images: [\"{host}/apps/**\"]\n    authorities:\n      \
                 - {{name: first, key: {{name: k1}}, tlog: skip}}\n      \
                 - {{name: second, key: {{name: k2}}, tlog: skip}}\n    \
                 attestations:\n      - name: provenance\n        predicateType: {SLSA1}\n        \
                 conditions:\n          - expression: 'signer.authority == \"{wanted}\"'\n            \
                 message: attested by {wanted}\n",
                public1.display(),
                public2.display()
            ),
        )
    };
    let verify = |p: &Path| {
        let run = ocigate(
            &[
                "verify",
                &reference,
                "--policy",
                p.to_str().unwrap(),
                "--registry-plain-http",
                &host,
                "-o",
                "json",
            ],
            &[],
        );
        let result = run.json()["results"][0].clone();
        (run, result)
    };
    for wanted in ["first", "second"] {
        let (run, result) = verify(&policy(wanted));
        assert_eq!(run.code, 0, "{wanted}: {run:?}");
        assert_eq!(result["verdict"], "allow", "{result}");
        let att = &result["attestations"][0];
        assert_eq!(att["authority"], wanted, "{result}");
        assert_eq!(att["conditions"][0]["passed"], true, "{result}");
    }
    let (run, result) = verify(&policy("third"));
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(result["failure"], "condition", "{result}");
    assert!(
        result["reasons"].to_string().contains("attested by third"),
        "{result}"
    );
}
