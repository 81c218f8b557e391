//! `ocigate attest` against cosign 3.1.1 as the peer: what ocigate attests `cosign
//! verify-attestation` accepts, in both formats; the same statement again adds nothing (whichever
//! tool wrote it first); the statement is cosign's byte for byte. Also the helpers that run
//! `cosign attest` for other modules.

use std::path::{Path, PathBuf};

use ocigate::reference::{Digest, ImageRef};
use ocigate::registry::ImageManifest;

use crate::cosign_peer::{cosign, cosign_keys, cosign_or_skip, offline_signing_config};
use crate::harness::*;

/// The two formats `cosign attest` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CosignFormat {
    /// `--new-bundle-format=false`: a layer of the `sha256-<hex>.att` manifest.
    Legacy,
    /// cosign 3's default: a v0.3 bundle as an OCI referrer.
    Bundle,
}

/// `cosign attest --key KEY --type TYPE --predicate FILE REF` in `format`, with nothing sent to
/// a transparency log (legacy: `--tlog-upload=false`; bundle: a signing config that names no
/// service).
pub(crate) fn cosign_attest(
    bin: &Path,
    dir: &Path,
    key: &Path,
    reference: &str,
    predicate_type: &str,
    predicate: &Path,
    format: CosignFormat,
) -> Run {
    let mut args = vec![
        "attest",
        "--key",
        key.to_str().unwrap(),
        "--type",
        predicate_type,
        "--predicate",
        predicate.to_str().unwrap(),
        "--allow-insecure-registry",
        "--yes",
    ];
    let sc;
    match format {
        CosignFormat::Legacy => args.extend([
            "--use-signing-config=false",
            "--new-bundle-format=false",
            "--tlog-upload=false",
        ]),
        CosignFormat::Bundle => {
            sc = offline_signing_config(bin, dir);
            args.extend(["--signing-config", sc.to_str().unwrap()]);
        }
    }
    args.push(reference);
    cosign(bin, dir, &args)
}

/// [`cosign_attest`] in both formats, legacy first; each run must succeed.
pub(crate) fn cosign_attest_both(
    bin: &Path,
    dir: &Path,
    key: &Path,
    reference: &str,
    predicate_type: &str,
    predicate: &Path,
) -> [Run; 2] {
    [CosignFormat::Legacy, CosignFormat::Bundle].map(|format| {
        let run = cosign_attest(bin, dir, key, reference, predicate_type, predicate, format);
        assert_eq!(run.code, 0, "cosign attest ({format:?}): {run:?}");
        run
    })
}

/// `cosign verify-attestation --key PUB --type TYPE --insecure-ignore-tlog=true REF` with
/// `extra` flags.
pub(crate) fn cosign_verify_attestation(
    bin: &Path,
    dir: &Path,
    public: &Path,
    reference: &str,
    predicate_type: &str,
    extra: &[&str],
) -> Run {
    let mut args = vec![
        "verify-attestation",
        "--key",
        public.to_str().unwrap(),
        "--type",
        predicate_type,
        "--insecure-ignore-tlog=true",
        "--allow-insecure-registry",
    ];
    args.extend_from_slice(extra);
    args.push(reference);
    cosign(bin, dir, &args)
}

/// `ocigate attest` against a plain-HTTP test registry, with `extra` flags.
pub(crate) fn ocigate_attest(
    reg: &TestRegistry,
    key: &Path,
    reference: &str,
    predicate_type: &str,
    predicate: &Path,
    extra: &[&str],
) -> Run {
    let host = reg.host();
    let mut args = vec![
        "attest",
        reference,
        "--key",
        key.to_str().unwrap(),
        "--type",
        predicate_type,
        "--predicate",
        predicate.to_str().unwrap(),
        "--registry-plain-http",
        &host,
    ];
    args.extend_from_slice(extra);
    ocigate(&args, &[("OCIGATE_PASSWORD", PASSWORD)])
}

/// A SLSA v1 provenance predicate (only fields of the schema, timestamps in canonical form:
/// cosign's pass through the SLSA protobuf leaves it as it is), from `repository`.
pub(crate) fn slsa_v1_predicate(dir: &Path, name: &str, repository: &str) -> PathBuf {
    let p = serde_json::json!({
        "buildDefinition": {
            "buildType": "https://actions.github.io/buildtypes/workflow/v1",
            "externalParameters": {"workflow": {
                "ref": "refs/heads/main", "repository": repository,
                "path": ".github/workflows/release.yml"}},
            "internalParameters": {"github": {"event_name": "push", "runner_environment": "github-hosted"}},
            "resolvedDependencies": [{"uri": format!("git+{repository}@refs/heads/main"),
                                       "digest": {"gitCommit": "7b1f3d2c9e"}}]
        },
        "runDetails": {
            "builder": {"id": "https://github.com/actions/runner/github-hosted"},
            "metadata": {"invocationId": format!("{repository}/actions/runs/7/attempts/1"),
                         "startedOn": "2026-11-30T10:00:00Z"}
        }
    });
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec_pretty(&p).unwrap()).unwrap();
    path
}

/// A file `name` in `dir` holding `text`.
fn file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

const SCAN: &str = "https://example.com/acme/scan/v1";

/// The layers of `r`'s `.att` manifest (none when there is none).
fn att_layers(
    reg: &TestRegistry,
    r: &ImageRef,
    digest: &Digest,
) -> Vec<ocigate::registry::Descriptor> {
    let att = r.with_tag(&format!("{}.att", digest.tag_prefix()));
    block_on(reg.client().get_manifest(&att))
        .unwrap()
        .map(|m| ImageManifest::parse(&m, "att").unwrap().layers)
        .unwrap_or_default()
}

/// The referrers listed in `digest`'s referrers tag (docker-registry has no referrers API).
fn referrers(reg: &TestRegistry, r: &ImageRef, digest: &Digest) -> usize {
    block_on(reg.client().get_manifest(&r.with_tag(&digest.tag_prefix())))
        .unwrap()
        .map(|m| ImageManifest::parse(&m, "index").unwrap().manifests.len())
        .unwrap_or(0)
}

/// The statements (DSSE payloads) of the envelopes `cosign verify-attestation` printed.
fn verified_statements(run: &Run) -> Vec<serde_json::Value> {
    use base64::Engine as _;
    run.stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| {
            let env: serde_json::Value = serde_json::from_str(l).unwrap();
            let payload = base64::engine::general_purpose::STANDARD
                .decode(env["payload"].as_str().unwrap())
                .unwrap();
            serde_json::from_slice(&payload).unwrap()
        })
        .collect()
}

#[test]
fn ocigate_attests_and_cosign_verifies_both_formats() {
    let Some(bin) = cosign_or_skip("ocigate_attests_and_cosign_verifies_both_formats") else {
        return;
    };
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = generate_keys(dir.path(), "release");
    let (_, other) = generate_keys(dir.path(), "other");
    let slsa = slsa_v1_predicate(dir.path(), "prov.json", "https://github.com/acme/app");
    let scan = file(
        dir.path(),
        "scan.json",
        r#"{"scanner":"grype","critical":0}"#,
    );
    for (format, flag) in [
        ("legacy", "--new-bundle-format=false"),
        ("bundle", "--new-bundle-format"),
    ] {
        let r = reg.reference(&format!("att/{format}:v1"));
        let digest = push_image(&reg.client(), &r, format);
        for (t, uri, predicate) in [
            ("slsaprovenance1", "https://slsa.dev/provenance/v1", &slsa),
            (SCAN, SCAN, &scan),
        ] {
            let a = ocigate_attest(
                &reg,
                &key,
                &r.to_string(),
                t,
                predicate,
                &["--format", format, "-o", "json"],
            );
            assert_eq!(a.code, 0, "{a:?}");
            let doc = a.json();
            assert_eq!(doc["attestation"]["added"], true, "{doc}");
            assert_eq!(doc["attestation"]["predicateType"], uri, "{doc}");
            assert_eq!(doc["attestation"]["format"], format, "{doc}");
            assert_eq!(doc["attestation"]["digest"], digest.to_string(), "{doc}");
            let v =
                cosign_verify_attestation(&bin, dir.path(), &public, &r.to_string(), t, &[flag]);
            assert_eq!(v.code, 0, "{format} {t}: {v:?}");
            let statements = verified_statements(&v);
            assert_eq!(statements.len(), 1, "{v:?}");
            let s = &statements[0];
            assert_eq!(s["_type"], "https://in-toto.io/Statement/v0.1", "{s}");
            assert_eq!(s["predicateType"], uri, "{s}");
            assert_eq!(s["subject"][0]["name"], r.name(), "{s}");
            assert_eq!(s["subject"][0]["digest"]["sha256"], digest.hex(), "{s}");
            let expected: serde_json::Value =
                serde_json::from_slice(&std::fs::read(predicate).unwrap()).unwrap();
            assert_eq!(s["predicate"], expected, "{s}");
            // cosign's default (which reads both formats) accepts it too
            let v = cosign_verify_attestation(&bin, dir.path(), &public, &r.to_string(), t, &[]);
            assert_eq!(v.code, 0, "{format} {t}: {v:?}");
        }
        // the peer is really checking: another type, another key
        let v = cosign_verify_attestation(
            &bin,
            dir.path(),
            &public,
            &r.to_string(),
            "spdxjson",
            &[flag],
        );
        assert_ne!(v.code, 0, "{v:?}");
        let v = cosign_verify_attestation(
            &bin,
            dir.path(),
            &other,
            &r.to_string(),
            "slsaprovenance1",
            &[flag],
        );
        assert_ne!(v.code, 0, "{v:?}");
    }
}

#[test]
fn the_same_statement_again_adds_nothing_another_adds_one() {
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = generate_keys(dir.path(), "release");
    let (key2, _) = generate_keys(dir.path(), "second");
    let slsa = slsa_v1_predicate(dir.path(), "prov.json", "https://github.com/acme/app");
    let fork = slsa_v1_predicate(dir.path(), "fork.json", "https://github.com/evil/app");
    let note = file(dir.path(), "note.txt", "reviewed by the security team\n");
    for format in ["legacy", "bundle"] {
        let r = reg.reference(&format!("dedupe/{format}:v1"));
        let digest = push_image(&reg.client(), &r, format);
        let count = || match format {
            "legacy" => att_layers(&reg, &r, &digest).len(),
            _ => referrers(&reg, &r, &digest),
        };
        let attest = |key: &Path, t: &str, p: &Path| {
            let a = ocigate_attest(&reg, key, &r.to_string(), t, p, &["--format", format]);
            assert_eq!(a.code, 0, "{a:?}");
            a.stdout
        };
        let (name, stored_at) = match format {
            "legacy" => (r.name(), format!("tag {}.att", digest.tag_prefix())),
            _ => (r.name(), format!("referrers tag {}", digest.tag_prefix())),
        };
        assert_eq!(
            attest(&key, "slsaprovenance1", &slsa),
            format!(
                "attested {name}@{digest} (https://slsa.dev/provenance/v1) -> {stored_at} (1 entries)\n"
            )
        );
        assert_eq!(count(), 1);
        assert_eq!(
            attest(&key, "slsaprovenance1", &slsa),
            format!(
                "already attested: {name}@{digest} has this key's attestation of this statement \
                 (https://slsa.dev/provenance/v1) in {stored_at} (1 entries); nothing added\n"
            )
        );
        assert_eq!(count(), 1, "{format}");
        // a different predicate, the same predicate under another type, another key: one more each
        assert!(attest(&key, "slsaprovenance1", &fork).starts_with("attested "));
        assert_eq!(count(), 2, "{format}");
        assert!(
            attest(&key, "https://slsa.dev/provenance/v1.0-custom", &slsa).starts_with("attested ")
        );
        assert_eq!(count(), 3, "{format}");
        assert!(attest(&key2, "slsaprovenance1", &slsa).starts_with("attested "));
        assert_eq!(count(), 4, "{format}");
        // cosign's custom predicate is stamped with the time: the same text again is the same
        // statement all the same
        assert!(attest(&key, "custom", &note).starts_with("attested "));
        std::thread::sleep(std::time::Duration::from_millis(1100));
        assert!(attest(&key, "custom", &note).starts_with("already attested: "));
        assert_eq!(count(), 5, "{format}");
    }
    // the legacy layers are cosign's: DSSE envelopes with the signature and type annotations
    let r = reg.reference("dedupe/legacy:v1");
    let digest = block_on(reg.client().get_manifest(&r))
        .unwrap()
        .unwrap()
        .digest;
    let layers = att_layers(&reg, &r, &digest);
    for l in &layers {
        assert_eq!(l.media_type, "application/vnd.dsse.envelope.v1+json");
        let a = l.annotations.as_ref().unwrap();
        assert_eq!(a["dev.cosignproject.cosign/signature"], "");
        assert!(a["predicateType"].starts_with("https://"), "{a:?}");
    }
}

/// What cosign attested ocigate recognises as the same statement (nothing added for the same
/// key), and ocigate's statement for another key is cosign's byte for byte.
#[test]
fn cosign_and_ocigate_write_the_same_statement() {
    let Some(bin) = cosign_or_skip("cosign_and_ocigate_write_the_same_statement") else {
        return;
    };
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = cosign_keys(&bin, dir.path(), "cosign");
    let (ours, ours_pub) = generate_keys(dir.path(), "ocigate");
    // Predicates cosign reshapes: SLSA through its protobuf (proto names, unknown fields,
    // defaults, bytes, a timestamp with an offset), a custom type through a float64 map.
    let v1 = file(
        dir.path(),
        "v1.json",
        r#"{"buildDefinition":{"build_type":"bt","externalParameters":{"n":1.0,"z":null,"a":[]},
            "resolvedDependencies":[{"uri":"u","digest":{"sha1":"ab"},"content":"aGk","unknown":1,
            "downloadLocation":""}],"x":1},
            "run_details":{"builder":{"id":"b","version":{}},"metadata":{"invocationID":"i",
            "startedOn":"2024-01-02T03:04:05.5+02:00","finishedOn":"2024-01-02T03:04:05.123400Z"}},
            "zzz":"unknown"}"#,
    );
    let v02 = file(
        dir.path(),
        "v02.json",
        r#"{"builder":{"id":"https://github.com/x"},"buildType":"bt","invocation":{"configSource":
            {"uri":"git+x","digest":{"sha1":"a"},"entryPoint":"e"},"parameters":{},"environment":null},
            "metadata":{"buildStartedOn":"2024-01-02T03:04:05Z","completeness":{"parameters":true,
            "environment":false},"reproducible":false},"materials":[{"uri":"m","digest":{"sha256":"c"},
            "extra":1}],"unknown":{}}"#,
    );
    let scan = file(
        dir.path(),
        "scan.json",
        r#"{"z":[1,2.5,1e21],"a":{"y":"<&>","b":null}}"#,
    );
    // the Go structs of `vuln` and `link`, and `spdx`'s text in Go's encoding/json
    let vuln = file(
        dir.path(),
        "vuln.json",
        r#"{"Invocation":{"URI":"u","parameters":{"a":1},"x":1},"scanner":{"uri":"grype",
            "db":null,"result":{"critical":0,"list":[1.5]}},"metadata":{"scanStartedOn":
            "2024-01-02T03:04:05.120+00:00","scanFinishedOn":"2024-01-02T03:04:05-07:30"},"extra":true}"#,
    );
    let link = file(
        dir.path(),
        "link.json",
        r#"{"_type":"link","name":"build","materials":{"a.c":{"sha256":"ab"}},"products":null,
            "byproducts":{"stdout":"ok","rc":0},"command":["make"],"environment":{},"extra":1}"#,
    );
    let spdx = file(
        dir.path(),
        "sbom.spdx",
        "SPDXVersion: SPDX-2.3\nName: <a&b>\u{2028}\n",
    );
    let cases = [
        ("slsaprovenance1", &v1),
        ("slsaprovenance02", &v02),
        (SCAN, &scan),
        ("vuln", &vuln),
        ("link", &link),
        ("spdx", &spdx),
    ];
    let r = reg.reference("peer/attested:v1");
    let digest = push_image(&reg.client(), &r, "attested by both");
    let reference = r.to_string();
    for (t, p) in cases {
        cosign_attest_both(&bin, dir.path(), &key, &reference, t, p);
    }
    assert_eq!(att_layers(&reg, &r, &digest).len(), 6);
    assert_eq!(referrers(&reg, &r, &digest), 6);
    for format in ["legacy", "bundle"] {
        for (t, p) in cases {
            let a = ocigate_attest(&reg, &key, &reference, t, p, &["--format", format]);
            assert_eq!(a.code, 0, "{a:?}");
            assert!(
                a.stdout.starts_with("already attested: "),
                "{format} {t}: {a:?}"
            );
        }
    }
    assert_eq!(att_layers(&reg, &r, &digest).len(), 6);
    assert_eq!(referrers(&reg, &r, &digest), 6);
    // ocigate's key: added, and the statement is the bytes cosign wrote
    for (t, p) in cases {
        let a = ocigate_attest(&reg, &ours, &reference, t, p, &["--format", "legacy"]);
        assert!(a.stdout.starts_with("attested "), "{a:?}");
    }
    let layers = att_layers(&reg, &r, &digest);
    assert_eq!(layers.len(), 12);
    let payload = |l: &ocigate::registry::Descriptor| {
        use base64::Engine as _;
        let env: serde_json::Value =
            serde_json::from_slice(&block_on(reg.client().get_blob(&r, l)).unwrap()).unwrap();
        base64::engine::general_purpose::STANDARD
            .decode(env["payload"].as_str().unwrap())
            .unwrap()
    };
    for i in 0..6 {
        assert_eq!(
            String::from_utf8(payload(&layers[i])).unwrap(),
            String::from_utf8(payload(&layers[i + 6])).unwrap(),
            "layer {i}"
        );
        assert_eq!(layers[i].annotations, layers[i + 6].annotations);
    }
    // (cosign's default reads only the bundles when there are any: here those of its own key)
    let v = cosign_verify_attestation(&bin, dir.path(), &ours_pub, &reference, SCAN, &[]);
    assert_ne!(v.code, 0, "{v:?}");
    let legacy = ["--new-bundle-format=false"];
    let v = cosign_verify_attestation(&bin, dir.path(), &ours_pub, &reference, SCAN, &legacy);
    assert_eq!(v.code, 0, "{v:?}");
}

#[test]
fn attest_refuses_what_cosign_would_not_write() {
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = generate_keys(dir.path(), "release");
    let r = reg.reference("refused/app:v1");
    let digest = push_image(&reg.client(), &r, "refused");
    let reference = r.to_string();
    let not_json = file(dir.path(), "p.txt", "not json");
    let list = file(dir.path(), "list.json", "[1,2]");
    for (t, p, needle) in [
        ("slsaprovenance1", &not_json, "not JSON"),
        (SCAN, &list, "a JSON array, not an object"),
        (
            "link",
            &file(dir.path(), "link.json", "{}"),
            "required field _type missing",
        ),
    ] {
        let a = ocigate_attest(&reg, &key, &reference, t, p, &[]);
        assert_eq!(a.code, 2, "{a:?}");
        assert!(a.stderr.contains(needle), "{t}: {a:?}");
    }
    let a = ocigate_attest(&reg, &key, &reference, SCAN, &list, &["-o", "json"]);
    assert_eq!(a.code, 2, "{a:?}");
    assert_eq!(a.json()["error"]["kind"], "configuration", "{a:?}");
    let a = ocigate_attest(&reg, &key, &reference, "sbom", &list, &[]);
    assert_eq!(a.code, 2, "{a:?}");
    assert!(a.stderr.contains("slsaprovenance1"), "{a:?}");
    // an `.att` tag holding something else is not added to
    let sig = reg.reference(&format!("refused/app:{}.sig", digest.tag_prefix()));
    assert_eq!(sign(&reg, &key, &reference, &[]).code, 0);
    let body = block_on(reg.client().get_manifest(&sig))
        .unwrap()
        .unwrap()
        .bytes;
    let att = r.with_tag(&format!("{}.att", digest.tag_prefix()));
    block_on(
        reg.client()
            .put_manifest(&att, &body, "application/vnd.oci.image.manifest.v1+json"),
    )
    .unwrap();
    let a = ocigate_attest(
        &reg,
        &key,
        &reference,
        SCAN,
        &file(dir.path(), "s.json", "{}"),
        &["--format", "legacy"],
    );
    assert_eq!(a.code, 2, "{a:?}");
    assert!(
        a.stderr
            .contains("is not a manifest of application/vnd.dsse.envelope.v1+json layers"),
        "{a:?}"
    );
    // a missing image
    let empty = file(dir.path(), "empty.json", "{}");
    let a = ocigate_attest(
        &reg,
        &key,
        &reg.reference("refused/none:v1").to_string(),
        SCAN,
        &empty,
        &[],
    );
    assert_eq!(a.code, 2, "{a:?}");
}

/// Keys of every kind cosign imports (P-384, Ed25519, RSA; P-256 is the generated kind)
/// attest in ocigate, in both formats, and cosign verifies what they attested.
#[test]
fn ocigate_attests_with_every_key_kind_and_cosign_verifies() {
    use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P384_SHA384_ASN1_SIGNING, EcdsaKeyPair, Ed25519KeyPair};
    let Some(bin) = cosign_or_skip("ocigate_attests_with_every_key_kind_and_cosign_verifies")
    else {
        return;
    };
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let rng = SystemRandom::new();
    let rsa = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let p384 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_ASN1_SIGNING, &rng).unwrap();
    let ed25519 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let kinds: [(&str, Vec<u8>); 3] = [
        ("p384", p384.as_ref().to_vec()),
        ("ed25519", ed25519.as_ref().to_vec()),
        (
            "rsa",
            AsDer::<Pkcs8V1Der>::as_der(&rsa).unwrap().as_ref().to_vec(),
        ),
    ];
    let slsa = slsa_v1_predicate(dir.path(), "prov.json", "https://github.com/acme/app");
    for (name, der) in kinds {
        let pem = ocigate::sign::key::encrypt_pkcs8(&der, PASSWORD.as_bytes(), 12).unwrap();
        let key = dir.path().join(format!("{name}.key"));
        std::fs::write(&key, &pem).unwrap();
        let signing =
            ocigate::sign::key::SigningKey::from_encrypted_pem(&pem, PASSWORD.as_bytes(), name)
                .unwrap();
        let public = dir.path().join(format!("{name}.pub"));
        std::fs::write(&public, signing.public_key().to_pem()).unwrap();
        for (format, flag) in [
            ("legacy", "--new-bundle-format=false"),
            ("bundle", "--new-bundle-format"),
        ] {
            let r = reg.reference(&format!("kinds/{name}-{format}:v1"));
            push_image(&reg.client(), &r, &format!("{name} {format}"));
            let reference = r.to_string();
            let a = ocigate_attest(
                &reg,
                &key,
                &reference,
                "slsaprovenance1",
                &slsa,
                &["--format", format],
            );
            assert_eq!(a.code, 0, "{name} {format}: {a:?}");
            let v = cosign_verify_attestation(
                &bin,
                dir.path(),
                &public,
                &reference,
                "slsaprovenance1",
                &[flag],
            );
            assert_eq!(
                v.code, 0,
                "{name} {format}: cosign verify-attestation: {v:?}"
            );
        }
    }
}

/// On a registry with the referrers API the bundle goes there (no referrers tag); the same
/// statement again, from ocigate or already written by cosign, adds nothing; cosign verifies.
#[test]
fn attest_through_the_referrers_api() {
    let Some(bin) = cosign_or_skip("attest_through_the_referrers_api") else {
        return;
    };
    let Some(reg) = TestRegistry::start_ferro_or_skip("attest_through_the_referrers_api") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = cosign_keys(&bin, dir.path(), "cosign");
    let slsa = slsa_v1_predicate(dir.path(), "prov.json", "https://github.com/acme/app");
    let scan = file(dir.path(), "scan.json", r#"{"critical":0}"#);
    let r = reg.reference("api/attested:v1");
    let digest = push_image(&reg.client(), &r, "attested over the api");
    let reference = r.to_string();
    let listed = || {
        block_on(reg.client().get_referrers(&r, &digest))
            .unwrap()
            .expect("the referrers API")
            .len()
    };
    let run = cosign_attest(
        &bin,
        dir.path(),
        &key,
        &reference,
        SCAN,
        &scan,
        CosignFormat::Bundle,
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(listed(), 1);
    let a = ocigate_attest(
        &reg,
        &key,
        &reference,
        "slsaprovenance1",
        &slsa,
        &["-o", "json"],
    );
    assert_eq!(a.code, 0, "{a:?}");
    let doc = a.json();
    assert_eq!(doc["attestation"]["added"], true, "{doc}");
    assert!(
        doc["attestation"]["storedAt"]
            .as_str()
            .unwrap()
            .ends_with("(referrers API)"),
        "{doc}"
    );
    assert_eq!(listed(), 2);
    let tag = r.with_tag(&digest.tag_prefix());
    assert!(block_on(reg.client().get_manifest(&tag)).unwrap().is_none());
    for (t, p) in [("slsaprovenance1", &slsa), (SCAN, &scan)] {
        let a = ocigate_attest(&reg, &key, &reference, t, p, &[]);
        assert!(a.stdout.starts_with("already attested: "), "{t}: {a:?}");
    }
    assert_eq!(listed(), 2);
    for t in ["slsaprovenance1", SCAN] {
        let v = cosign_verify_attestation(&bin, dir.path(), &public, &reference, t, &[]);
        assert_eq!(v.code, 0, "{t}: {v:?}");
    }
    // the predicate from standard input
    let host = reg.host();
    let args = [
        "attest",
        &reference,
        "--key",
        key.to_str().unwrap(),
        "--type",
        SCAN,
        "--predicate",
        "-",
        "--registry-plain-http",
        &host,
    ];
    let a = ocigate_with_stdin(
        &args,
        &[("OCIGATE_PASSWORD", PASSWORD)],
        br#"{"critical":1}"#,
    );
    assert!(a.stdout.starts_with("attested "), "{a:?}");
    assert_eq!(listed(), 3);
}

/// Comparing with the attestations already there reads what a registry lists within bounds:
/// a layer whose descriptor understates its blob is read no further than it declares (so it
/// is not taken as the same statement, and a well-formed one is written), and at most
/// `MAX_COMPARED_BLOBS` blobs are read, however many layers of the type are planted before an
/// equal one. Before the change, both were read whole: 100 planted layers were all fetched and
/// the understated layer counted as "already attested".
#[test]
fn comparing_with_attestations_already_there_is_bounded() {
    use crate::attestation_discovery::{envelope, envelope_layer, plant_att};
    use crate::proxy::{HttpServer, forward};
    let reg = TestRegistry::start();
    let upstream = reg.host();
    let front = HttpServer::start(move |req| forward(&upstream, req));
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = generate_keys(dir.path(), "release");
    let slsa = slsa_v1_predicate(dir.path(), "prov.json", "https://github.com/acme/app");
    let direct = reg.client();
    let r = reg.reference("compared/app:v1");
    let digest = push_image(&direct, &r, "compared");
    let attest = || {
        let legacy = ["--format", "legacy"];
        let a = ocigate_attest(
            &reg,
            &key,
            &r.to_string(),
            "slsaprovenance1",
            &slsa,
            &legacy,
        );
        assert_eq!(a.code, 0, "{a:?}");
        a.stdout
    };
    assert!(attest().starts_with("attested "));
    let ours = att_layers(&reg, &r, &digest).remove(0);

    let mut understated = ours.clone();
    understated.size -= 1;
    plant_att(&direct, &r, &digest, vec![understated]);
    assert!(
        attest().starts_with("attested "),
        "the understated layer was read whole"
    );
    assert_eq!(att_layers(&reg, &r, &digest).len(), 2);

    let slsa1 = "https://slsa.dev/provenance/v1";
    let mut planted: Vec<_> = (0..100)
        .map(|i| {
            let e = envelope(600, &format!("planted {i}"));
            let d = block_on(direct.put_blob(&r, &e)).unwrap();
            envelope_layer(&d, e.len(), Some(slsa1))
        })
        .collect();
    planted.push(ours);
    plant_att(&direct, &r, &digest, planted);
    let host = front.host();
    let through = format!("{host}/compared/app:v1");
    let args = [
        "attest",
        &through,
        "--key",
        key.to_str().unwrap(),
        "--type",
        "slsaprovenance1",
    ];
    let mut args = args.to_vec();
    args.extend([
        "--predicate",
        slsa.to_str().unwrap(),
        "--registry-plain-http",
        &host,
    ]);
    let a = ocigate(&args, &[("OCIGATE_PASSWORD", PASSWORD)]);
    assert_eq!(a.code, 0, "{a:?}");
    let blobs = front
        .seen()
        .iter()
        .filter(|q| q.method == "GET" && q.path.contains("/blobs/"))
        .count();
    assert!(
        blobs <= ocigate::sign::MAX_COMPARED_BLOBS,
        "{blobs} blobs read"
    );
    assert!(a.stdout.starts_with("attested "), "{a:?}");
}
