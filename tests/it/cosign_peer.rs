//! cosign 3.1.1 (Debian unstable's package, fetched by scripts/fetch-cosign.sh) as the peer:
//! what cosign signs ocigate verifies, what ocigate signs cosign verifies, and each reads the
//! other's keys.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::*;

/// The cosign binary: $OCIGATE_TEST_COSIGN, else the fetch script's cache; a loud skip (a
/// failure in CI) when neither exists.
pub(crate) fn cosign_or_skip(test: &str) -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("OCIGATE_TEST_COSIGN").map(PathBuf::from),
        Some(repo_root().join(".cache/cosign/root/usr/bin/cosign")),
    ];
    if let Some(p) = candidates.into_iter().flatten().find(|p| p.is_file()) {
        return Some(p);
    }
    if strict() {
        panic!("{test}: cosign not found; run scripts/fetch-cosign.sh (scripts/test.sh does)");
    }
    eprintln!(
        "SKIPPED {test}: cosign not found (run scripts/fetch-cosign.sh); these peer checks did NOT run"
    );
    None
}

pub(crate) fn cosign(bin: &Path, dir: &Path, args: &[&str]) -> Run {
    let out = Command::new(bin)
        .args(args)
        .current_dir(dir)
        .env("COSIGN_PASSWORD", PASSWORD)
        // keep cosign off the network and out of the user's state
        .env("HOME", dir)
        .env("DOCKER_CONFIG", dir.join("docker"))
        .env("TUF_ROOT", dir.join("tuf"))
        .env("SIGSTORE_NO_CACHE", "true")
        .output()
        .expect("run cosign");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub(crate) fn cosign_keys(bin: &Path, dir: &Path, prefix: &str) -> (PathBuf, PathBuf) {
    let run = cosign(
        bin,
        dir,
        &["generate-key-pair", "--output-key-prefix", prefix],
    );
    assert_eq!(run.code, 0, "{run:?}");
    (
        dir.join(format!("{prefix}.key")),
        dir.join(format!("{prefix}.pub")),
    )
}

fn cosign_sign_legacy(bin: &Path, dir: &Path, key: &Path, reference: &str) -> Run {
    cosign_sign_legacy_with(bin, dir, key, reference, &[])
}

/// cosign 2's format (a `.sig` layer, no Rekor upload), with `extra` flags.
fn cosign_sign_legacy_with(
    bin: &Path,
    dir: &Path,
    key: &Path,
    reference: &str,
    extra: &[&str],
) -> Run {
    let mut args = vec![
        "sign",
        "--key",
        key.to_str().unwrap(),
        "--use-signing-config=false",
        "--new-bundle-format=false",
        "--tlog-upload=false",
        "--allow-insecure-registry",
        "--yes",
    ];
    args.extend_from_slice(extra);
    args.push(reference);
    cosign(bin, dir, &args)
}

/// cosign 3's own format: a v0.3 bundle as a referrer, signed with a signing config that names
/// no Fulcio, Rekor or TSA (nothing leaves the machine).
fn cosign_sign_v3(bin: &Path, dir: &Path, key: &Path, reference: &str, extra: &[&str]) -> Run {
    let sc = offline_signing_config(bin, dir);
    let mut args = vec![
        "sign",
        "--key",
        key.to_str().unwrap(),
        "--signing-config",
        sc.to_str().unwrap(),
        "--allow-insecure-registry",
        "--yes",
    ];
    args.extend_from_slice(extra);
    args.push(reference);
    cosign(bin, dir, &args)
}

/// `dir/signing-config.json`, made once: a cosign signing config that names no Fulcio, Rekor
/// or TSA, so that cosign 3's bundle format signs with nothing leaving the machine.
pub(crate) fn offline_signing_config(bin: &Path, dir: &Path) -> PathBuf {
    let sc = dir.join("signing-config.json");
    if !sc.exists() {
        let run = cosign(
            bin,
            dir,
            &[
                "signing-config",
                "create",
                "--no-default-fulcio",
                "--no-default-oidc",
                "--no-default-rekor",
                "--no-default-tsa",
                "--out",
                sc.to_str().unwrap(),
            ],
        );
        assert_eq!(run.code, 0, "{run:?}");
    }
    sc
}

fn cosign_verify(bin: &Path, dir: &Path, public: &Path, reference: &str) -> Run {
    cosign(
        bin,
        dir,
        &[
            "verify",
            "--key",
            public.to_str().unwrap(),
            "--insecure-ignore-tlog",
            "--allow-insecure-registry",
            reference,
        ],
    )
}

#[test]
fn cosign_signs_ocigate_verifies() {
    let Some(bin) = cosign_or_skip("cosign_signs_ocigate_verifies") else {
        return;
    };
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = cosign_keys(&bin, dir.path(), "cosign");
    let r = reg.reference("peer/by-cosign:v1");
    let digest = push_image(&reg.client(), &r, "signed by cosign");
    let s = cosign_sign_legacy(&bin, dir.path(), &key, &r.to_string());
    assert_eq!(s.code, 0, "{s:?}");
    let v = verify(
        &reg,
        &[
            &r.to_string(),
            "--key",
            public.to_str().unwrap(),
            "-o",
            "json",
        ],
    );
    assert_eq!(v.code, 0, "{v:?}");
    let res = &v.json()["results"][0];
    assert_eq!(res["digest"], digest.to_string());
    assert_eq!(res["signatures"][0]["dockerReference"], r.name());
    // and a key of ocigate's does not verify cosign's signature
    let (_, other) = generate_keys(dir.path(), "other");
    let v = verify(&reg, &[&r.to_string(), "--key", other.to_str().unwrap()]);
    assert_eq!(v.code, 1, "{v:?}");
}

#[test]
fn ocigate_signs_cosign_verifies() {
    let Some(bin) = cosign_or_skip("ocigate_signs_cosign_verifies") else {
        return;
    };
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = generate_keys(dir.path(), "release");
    let r = reg.reference("peer/by-ocigate:v1");
    push_image(&reg.client(), &r, "signed by ocigate");
    assert_eq!(
        sign(&reg, &key, &r.to_string(), &["-a", "env=prod"]).code,
        0
    );
    let v = cosign_verify(&bin, dir.path(), &public, &r.to_string());
    assert_eq!(v.code, 0, "{v:?}");
    assert!(v.stdout.contains("\"env\":\"prod\""), "{v:?}");
    // cosign checks the annotation we wrote
    let v = cosign(
        &bin,
        dir.path(),
        &[
            "verify",
            "--key",
            public.to_str().unwrap(),
            "--insecure-ignore-tlog",
            "--allow-insecure-registry",
            "-a",
            "env=dev",
            &r.to_string(),
        ],
    );
    assert_ne!(v.code, 0, "{v:?}");
    // an unsigned image fails in cosign too (the peer is really checking)
    let u = reg.reference("peer/unsigned:v1");
    push_image(&reg.client(), &u, "unsigned");
    let v = cosign_verify(&bin, dir.path(), &public, &u.to_string());
    assert_ne!(v.code, 0, "{v:?}");
}

#[test]
fn keys_cross_over() {
    let Some(bin) = cosign_or_skip("keys_cross_over") else {
        return;
    };
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    // ocigate signs with a key cosign generated; cosign verifies
    let (cosign_key, cosign_pub) = cosign_keys(&bin, dir.path(), "from-cosign");
    let a = reg.reference("peer/a:v1");
    push_image(&reg.client(), &a, "a");
    let s = sign(&reg, &cosign_key, &a.to_string(), &[]);
    assert_eq!(s.code, 0, "{s:?}");
    let v = cosign_verify(&bin, dir.path(), &cosign_pub, &a.to_string());
    assert_eq!(v.code, 0, "{v:?}");
    // cosign signs with a key ocigate generated; ocigate verifies
    let (our_key, our_pub) = generate_keys(dir.path(), "from-ocigate");
    let b = reg.reference("peer/b:v1");
    push_image(&reg.client(), &b, "b");
    let s = cosign_sign_legacy(&bin, dir.path(), &our_key, &b.to_string());
    assert_eq!(s.code, 0, "{s:?}");
    let v = verify(&reg, &[&b.to_string(), "--key", our_pub.to_str().unwrap()]);
    assert_eq!(v.code, 0, "{v:?}");
    // both signatures on one image, one from each tool, each verifying with its own key
    let s = sign(&reg, &our_key, &a.to_string(), &[]);
    assert_eq!(s.code, 0, "{s:?}");
    assert!(s.stdout.contains("(2 signature(s))"), "{s:?}");
    let v = cosign_verify(&bin, dir.path(), &our_pub, &a.to_string());
    assert_eq!(v.code, 0, "{v:?}");
}

/// cosign 3's own format: a v0.3 DSSE bundle attached as a referrer. docker-registry 2.8 has no
/// referrers API, so cosign writes the referrers tag `sha256-<hex>`; ocigate finds it there.
#[test]
fn cosign_v3_bundle_signatures_are_found_and_verified() {
    let Some(bin) = cosign_or_skip("cosign_v3_bundle_signatures_are_found_and_verified") else {
        return;
    };
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = cosign_keys(&bin, dir.path(), "cosign");
    let r = reg.reference("v3/by-cosign:v1");
    let digest = push_image(&reg.client(), &r, "cosign v3");
    let s = cosign_sign_v3(&bin, dir.path(), &key, &r.to_string(), &["-a", "env=prod"]);
    assert_eq!(s.code, 0, "{s:?}");

    let host = reg.host();
    let d = ocigate(
        &["discover", &r.to_string(), "--registry-plain-http", &host],
        &[],
    );
    assert_eq!(d.code, 0, "{d:?}");
    assert!(d.stdout.contains("no referrers API"), "{d:?}");
    assert!(
        d.stdout.contains(&format!(
            "referrers tag {}: 1 signature(s)",
            digest.tag_prefix()
        )),
        "{d:?}"
    );
    // The bundle is listed with its kind, media type and the key it names (unverified).
    let fingerprint = ocigate::trust::PublicKey::from_pem(
        &std::fs::read_to_string(&public).unwrap(),
        "cosign.pub",
    )
    .unwrap()
    .fingerprint();
    assert!(
        d.stdout.contains(
            "Sigstore bundle (application/vnd.dev.sigstore.bundle.v0.3+json) at referrers tag"
        ) && d
            .stdout
            .contains(&format!("by key {fingerprint} (unverified)")),
        "{d:?}"
    );
    let j = ocigate(
        &[
            "discover",
            &r.to_string(),
            "--registry-plain-http",
            &host,
            "-o",
            "json",
        ],
        &[],
    )
    .json();
    let sig = &j["signatures"][0];
    assert_eq!(sig["kind"], "sigstore-bundle", "{j}");
    assert_eq!(
        sig["mediaType"], "application/vnd.dev.sigstore.bundle.v0.3+json",
        "{j}"
    );
    assert_eq!(sig["claimedSigner"]["kind"], "key", "{j}");
    assert_eq!(sig["claimedSigner"]["fingerprint"], fingerprint, "{j}");

    let v = verify(
        &reg,
        &[
            &r.to_string(),
            "--key",
            public.to_str().unwrap(),
            "-a",
            "env=prod",
            "-o",
            "json",
        ],
    );
    assert_eq!(v.code, 0, "{v:?}");
    let sig = &v.json()["results"][0]["signatures"][0];
    assert!(
        sig["location"]
            .as_str()
            .unwrap()
            .starts_with("referrers tag"),
        "{v:?}"
    );
    assert_eq!(sig["annotations"]["env"], "prod");
    let v = verify(
        &reg,
        &[
            &r.to_string(),
            "--key",
            public.to_str().unwrap(),
            "-a",
            "env=dev",
        ],
    );
    assert_eq!(v.code, 1, "{v:?}");
    assert!(v.stdout.contains("annotation \"env\" is \"prod\""), "{v:?}");
    let (_, other) = generate_keys(dir.path(), "other");
    let v = verify(&reg, &[&r.to_string(), "--key", other.to_str().unwrap()]);
    assert_eq!(v.code, 1, "{v:?}");
    assert!(v.stdout.contains("not signed by this key"), "{v:?}");

    // Without --insecure-ignore-tlog the key authority requires a log entry, which this bundle
    // (signed without Rekor) lacks: `tlog`, said as for a legacy signature, not `untrusted`.
    let (reference, host) = (r.to_string(), reg.host());
    let exact = |key: &Path| {
        let key = key.to_str().unwrap();
        let args = ["verify", "--registry-plain-http", &host, &reference];
        let args = [&args[..], &["--key", key, "-o", "json"]].concat();
        ocigate_exact(&args, &[])
    };
    let v = exact(&public);
    assert_eq!(v.code, 1, "{v:?}");
    let res = &v.json()["results"][0];
    assert_eq!(res["failure"], "tlog", "{v:?}");
    assert!(
        res["reasons"].to_string().contains("has no Rekor entry"),
        "{v:?}"
    );
    // Another key is still another key, log entry or not.
    let v = exact(&other);
    assert_eq!(v.code, 1, "{v:?}");
    let res = &v.json()["results"][0];
    assert_eq!(res["failure"], "untrusted", "{v:?}");
    assert!(
        res["reasons"]
            .to_string()
            .contains("not signed by this key"),
        "{v:?}"
    );
}

#[test]
fn ocigate_bundle_signatures_verify_in_cosign_and_both_formats_are_reported() {
    let Some(bin) =
        cosign_or_skip("ocigate_bundle_signatures_verify_in_cosign_and_both_formats_are_reported")
    else {
        return;
    };
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = generate_keys(dir.path(), "release");
    let r = reg.reference("v3/by-ocigate:v1");
    push_image(&reg.client(), &r, "ocigate v3");
    let s = sign(
        &reg,
        &key,
        &r.to_string(),
        &["--format", "bundle", "-a", "team=platform"],
    );
    assert_eq!(s.code, 0, "{s:?}");
    let v = cosign_verify(&bin, dir.path(), &public, &r.to_string());
    assert_eq!(v.code, 0, "{v:?}");
    assert!(v.stdout.contains("\"team\":\"platform\""), "{v:?}");
    // a second bundle signature is appended to the referrers tag index
    let (key2, public2) = generate_keys(dir.path(), "second");
    let s = sign(&reg, &key2, &r.to_string(), &["--format", "bundle"]);
    assert_eq!(s.code, 0, "{s:?}");
    assert!(s.stdout.contains("(2 signature(s))"), "{s:?}");
    assert_eq!(
        cosign_verify(&bin, dir.path(), &public2, &r.to_string()).code,
        0
    );
    // and a legacy one beside them: ocigate reports both formats
    assert_eq!(sign(&reg, &key, &r.to_string(), &[]).code, 0);
    let v = verify(
        &reg,
        &[
            &r.to_string(),
            "--key",
            public.to_str().unwrap(),
            "-o",
            "json",
        ],
    );
    assert_eq!(v.code, 0, "{v:?}");
    let sigs = v.json()["results"][0]["signatures"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(sigs.len(), 2, "{v:?}");
    let mut places: Vec<String> = sigs
        .iter()
        .map(|s| {
            s["location"]
                .as_str()
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    places.sort();
    assert_eq!(places, ["referrers", "tag"], "{v:?}");
    assert!(
        sigs.iter().any(|s| s["dockerReference"].is_null()),
        "bundles claim no repository"
    );
}

/// On a registry with the referrers API, cosign 3 attaches its bundle there (no referrers tag)
/// and ocigate finds it; cosign verifies the bundle ocigate attached there.
#[test]
fn cosign_v3_and_ocigate_through_the_referrers_api() {
    let Some(bin) = cosign_or_skip("cosign_v3_and_ocigate_through_the_referrers_api") else {
        return;
    };
    let Some(reg) =
        TestRegistry::start_ferro_or_skip("cosign_v3_and_ocigate_through_the_referrers_api")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (ckey, cpub) = cosign_keys(&bin, dir.path(), "cosign");
    let r = reg.reference("api/both:v1");
    let digest = push_image(&reg.client(), &r, "cosign over the api");
    let s = cosign_sign_v3(&bin, dir.path(), &ckey, &r.to_string(), &[]);
    assert_eq!(s.code, 0, "{s:?}");
    let tag = reg.reference(&format!("api/both:{}", digest.tag_prefix()));
    assert!(
        block_on(reg.client().get_manifest(&tag)).unwrap().is_none(),
        "cosign used the API"
    );
    let v = verify(
        &reg,
        &[
            &r.to_string(),
            "--key",
            cpub.to_str().unwrap(),
            "-o",
            "json",
        ],
    );
    assert_eq!(v.code, 0, "{v:?}");
    assert!(
        v.json()["results"][0]["signatures"][0]["location"]
            .as_str()
            .unwrap()
            .starts_with("referrers API")
    );

    let (okey, opub) = generate_keys(dir.path(), "ours");
    assert_eq!(
        sign(&reg, &okey, &r.to_string(), &["--format", "bundle"]).code,
        0
    );
    let v = cosign_verify(&bin, dir.path(), &opub, &r.to_string());
    assert_eq!(v.code, 0, "{v:?}");
}

/// Keys of every kind cosign imports (P-384, Ed25519, RSA; P-256 is the generated kind) sign
/// in ocigate, and cosign verifies what they signed.
#[test]
fn ocigate_signs_with_every_key_kind_and_cosign_verifies() {
    use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P384_SHA384_ASN1_SIGNING, EcdsaKeyPair, Ed25519KeyPair};
    let Some(bin) = cosign_or_skip("ocigate_signs_with_every_key_kind_and_cosign_verifies") else {
        return;
    };
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let rng = SystemRandom::new();
    let rsa = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa3072).unwrap();
    let kinds: Vec<(&str, Vec<u8>)> = vec![
        (
            "p384",
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_ASN1_SIGNING, &rng)
                .unwrap()
                .as_ref()
                .to_vec(),
        ),
        (
            "ed25519",
            Ed25519KeyPair::generate_pkcs8(&rng)
                .unwrap()
                .as_ref()
                .to_vec(),
        ),
        (
            "rsa",
            AsDer::<Pkcs8V1Der>::as_der(&rsa).unwrap().as_ref().to_vec(),
        ),
    ];
    for (name, der) in kinds {
        let pem = ocigate::sign::key::encrypt_pkcs8(&der, PASSWORD.as_bytes(), 12).unwrap();
        let key = dir.path().join(format!("{name}.key"));
        std::fs::write(&key, &pem).unwrap();
        let signing =
            ocigate::sign::key::SigningKey::from_encrypted_pem(&pem, PASSWORD.as_bytes(), name)
                .unwrap();
        let public = dir.path().join(format!("{name}.pub"));
        std::fs::write(&public, signing.public_key().to_pem()).unwrap();
        let r = reg.reference(&format!("peer/{name}:v1"));
        push_image(&reg.client(), &r, name);
        let s = sign(&reg, &key, &r.to_string(), &[]);
        assert_eq!(s.code, 0, "{name}: {s:?}");
        let v = cosign_verify(&bin, dir.path(), &public, &r.to_string());
        assert_eq!(v.code, 0, "{name}: cosign verify: {v:?}");
        let v = verify(&reg, &[&r.to_string(), "--key", public.to_str().unwrap()]);
        assert_eq!(v.code, 0, "{name}: {v:?}");
    }
}

/// Signing the same digest with the same key and annotations again adds nothing (as cosign's
/// duplicate detection does); other annotations are another signature.
#[test]
fn signing_twice_adds_no_duplicate_layer() {
    let Some(bin) = cosign_or_skip("signing_twice_adds_no_duplicate_layer") else {
        return;
    };
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = generate_keys(dir.path(), "k");
    let r = reg.reference("peer/twice:v1");
    let digest = push_image(&reg.client(), &r, "twice");
    let layers = || {
        let sig = reg.reference(&format!("peer/twice:{}.sig", digest.tag_prefix()));
        block_on(async {
            let m = reg.client().get_manifest(&sig).await.unwrap().unwrap();
            ocigate::registry::ImageManifest::parse(&m, "t")
                .unwrap()
                .layers
                .len()
        })
    };
    assert_eq!(
        sign(&reg, &key, &r.to_string(), &["-a", "env=prod"]).code,
        0
    );
    let again = sign(&reg, &key, &r.to_string(), &["-a", "env=prod"]);
    assert_eq!(again.code, 0, "{again:?}");
    assert!(again.stdout.contains("already signed"), "{again:?}");
    assert_eq!(layers(), 1);
    assert_eq!(sign(&reg, &key, &r.to_string(), &["-a", "env=dev"]).code, 0);
    assert_eq!(layers(), 2);
    // Another key signing the same payload is another signature.
    let (other, _) = generate_keys(dir.path(), "other");
    assert_eq!(
        sign(&reg, &other, &r.to_string(), &["-a", "env=prod"]).code,
        0
    );
    assert_eq!(layers(), 3);
    // cosign signing what ocigate signed: cosign's detector sees ocigate's layer as its own.
    let v = cosign(
        &bin,
        dir.path(),
        &[
            "sign",
            "--key",
            key.to_str().unwrap(),
            "--tlog-upload=false",
            "--use-signing-config=false",
            "--allow-insecure-registry",
            "--new-bundle-format=false",
            "-a",
            "env=prod",
            "-y",
            &r.to_string(),
        ],
    );
    assert_eq!(v.code, 0, "{v:?}");
    assert_eq!(
        layers(),
        3,
        "cosign added a duplicate of ocigate's signature"
    );
    let v = cosign_verify(&bin, dir.path(), &public, &r.to_string());
    assert_eq!(v.code, 0, "{v:?}");
}

/// The bundle format too: a signature is randomised, so the same key's bundle of the same
/// statement has another digest each time; signing again still adds no referrer.
#[test]
fn signing_twice_as_bundles_adds_no_duplicate_referrer() {
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = generate_keys(dir.path(), "k");
    let r = reg.reference("peer/twice-bundle:v1");
    let digest = push_image(&reg.client(), &r, "twice bundle");
    let referrers = || {
        let tag = r.with_tag(&digest.tag_prefix());
        block_on(reg.client().get_manifest(&tag))
            .unwrap()
            .map(|m| {
                ocigate::registry::ImageManifest::parse(&m, "index")
                    .unwrap()
                    .manifests
                    .len()
            })
            .unwrap_or(0)
    };
    let bundle = |key: &Path, env: &str| {
        let a = format!("env={env}");
        sign(&reg, key, &r.to_string(), &["--format", "bundle", "-a", &a])
    };
    assert_eq!(bundle(&key, "prod").code, 0);
    assert_eq!(referrers(), 1);
    let again = bundle(&key, "prod");
    assert_eq!(again.code, 0, "{again:?}");
    assert!(again.stdout.contains("already signed"), "{again:?}");
    assert_eq!(referrers(), 1);
    assert_eq!(bundle(&key, "dev").code, 0);
    assert_eq!(referrers(), 2);
    let (other, _) = generate_keys(dir.path(), "other");
    assert_eq!(bundle(&other, "prod").code, 0);
    assert_eq!(referrers(), 3);
}

#[test]
fn recursive_signatures_agree_with_cosign_both_ways() {
    let Some(bin) = cosign_or_skip("recursive_signatures_agree_with_cosign_both_ways") else {
        return;
    };
    let reg = TestRegistry::start();
    let client = reg.client();
    let dir = tempfile::tempdir().unwrap();

    // cosign --recursive; ocigate verifies each platform manifest.
    let (key, public) = cosign_keys(&bin, dir.path(), "cosign");
    let r = reg.reference("peer/multi-by-cosign:v1");
    let (_, children) = push_index(&client, &r, &["linux/amd64", "linux/arm64"]);
    let target = r.to_string();
    let s = cosign_sign_legacy_with(&bin, dir.path(), &key, &target, &["--recursive"]);
    assert_eq!(s.code, 0, "{s:?}");
    for (platform, child) in [("linux/amd64", &children[0]), ("linux/arm64", &children[1])] {
        let v = verify(
            &reg,
            &[
                &target,
                "--platform",
                platform,
                "--key",
                public.to_str().unwrap(),
                "-o",
                "json",
            ],
        );
        assert_eq!(v.code, 0, "{v:?}");
        assert_eq!(v.json()["results"][0]["digest"], child.to_string(), "{v:?}");
    }

    // ocigate --recursive; cosign verifies each platform manifest by digest, and the index.
    let (key, public) = generate_keys(dir.path(), "release");
    let r = reg.reference("peer/multi-by-ocigate:v1");
    let (index, children) = push_index(&client, &r, &["linux/amd64", "linux/arm64"]);
    let s = sign(&reg, &key, &r.to_string(), &["--recursive"]);
    assert_eq!(s.code, 0, "{s:?}");
    for d in children.iter().chain([&index]) {
        let pinned = r.with_digest(d.clone()).to_string();
        let v = cosign_verify(&bin, dir.path(), &public, &pinned);
        assert_eq!(v.code, 0, "{pinned}: {v:?}");
    }
    // Without --recursive only the index is signed: cosign, too, finds no signature on a
    // platform manifest.
    let r = reg.reference("peer/index-only:v1");
    let (_, children) = push_index(&client, &r, &["linux/amd64"]);
    assert_eq!(sign(&reg, &key, &r.to_string(), &[]).code, 0);
    let pinned = r.with_digest(children[0].clone()).to_string();
    let v = cosign_verify(&bin, dir.path(), &public, &pinned);
    assert_ne!(v.code, 0, "{v:?}");
}

/// `--allow-insecure-registry` means the same to both against a plain-HTTP registry: HTTPS
/// tried first, then plain HTTP (issue #15, point 10). Both verify the signed image and both
/// refuse the unsigned one, with no other scheme flag.
#[test]
fn allow_insecure_registry_agrees_with_cosign_on_plain_http() {
    let Some(bin) = cosign_or_skip("allow_insecure_registry_agrees_with_cosign_on_plain_http")
    else {
        return;
    };
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = cosign_keys(&bin, dir.path(), "cosign");
    let signed = reg.reference("peer/insecure:v1");
    push_image(&reg.client(), &signed, "insecure signed");
    let s = cosign_sign_legacy(&bin, dir.path(), &key, &signed.to_string());
    assert_eq!(s.code, 0, "{s:?}");
    let unsigned = reg.reference("peer/insecure-unsigned:v1");
    push_image(&reg.client(), &unsigned, "insecure unsigned");
    let pk = public.to_str().unwrap();
    for (r, want) in [(&signed, true), (&unsigned, false)] {
        let r = r.to_string();
        let c = cosign_verify(&bin, dir.path(), &public, &r);
        let o = ocigate(
            &["verify", &r, "--key", pk, "--allow-insecure-registry"],
            &[],
        );
        assert_eq!(c.code == 0, want, "cosign on {r}: {c:?}");
        assert_eq!(o.code == 0, want, "ocigate on {r}: {o:?}");
    }
}
