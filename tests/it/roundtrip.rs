//! sign → verify on a real registry, and every way a signature must fail to count.

use std::collections::BTreeMap;

use base64::Engine as _;
use ocigate::payload::{SIGNATURE_ANNOTATION, SimpleSigning};
use ocigate::reference::Digest;
use ocigate::registry::{ImageManifest, OCI_MANIFEST};

use crate::harness::*;

#[test]
fn sign_then_verify_allows_with_evidence() {
    let reg = TestRegistry::start();
    let client = reg.client();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = generate_keys(dir.path(), "release");
    let r = reg.reference("acme/app:v1");
    let digest = push_image(&client, &r, "app v1");

    let s = sign(&reg, &key, &r.to_string(), &[]);
    assert_eq!(s.code, 0, "{s:?}");
    assert!(s.stdout.contains(&digest.to_string()), "{s:?}");

    let v = verify(&reg, &[&r.to_string(), "--key", public.to_str().unwrap()]);
    assert_eq!(v.code, 0, "{v:?}");
    assert!(v.stdout.starts_with("ALLOW "), "{v:?}");
    assert!(v.stdout.contains(&digest.to_string()), "{v:?}");

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
    let doc = v.json();
    let res = &doc["results"][0];
    assert_eq!(res["verdict"], "allow");
    assert_eq!(res["digest"], digest.to_string());
    assert_eq!(res["reference"], r.to_string());
    let sig = &res["signatures"][0];
    assert_eq!(sig["kind"], "key");
    assert!(
        sig["keyFingerprint"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert_eq!(sig["dockerReference"], r.name());
    // The authority is named by its key file, not by the flag.
    assert_eq!(
        sig["authority"],
        format!("key {}", public.display()),
        "{v:?}"
    );
}

#[test]
fn signing_again_appends_a_layer_and_both_verify() {
    let reg = TestRegistry::start();
    let client = reg.client();
    let dir = tempfile::tempdir().unwrap();
    let (k1, p1) = generate_keys(dir.path(), "one");
    let (k2, p2) = generate_keys(dir.path(), "two");
    let r = reg.reference("acme/app:v1");
    push_image(&client, &r, "append");
    assert_eq!(sign(&reg, &k1, &r.to_string(), &[]).code, 0);
    let s = sign(&reg, &k2, &r.to_string(), &[]);
    assert_eq!(s.code, 0, "{s:?}");
    assert!(s.stdout.contains("(2 signature(s))"), "{s:?}");
    for p in [&p1, &p2] {
        let v = verify(&reg, &[&r.to_string(), "--key", p.to_str().unwrap()]);
        assert_eq!(v.code, 0, "{v:?}");
    }
    let host = reg.host();
    let d = ocigate(
        &["discover", &r.to_string(), "--registry-plain-http", &host],
        &[],
    );
    assert_eq!(d.code, 0, "{d:?}");
    assert!(d.stdout.contains(".sig: 2 signature(s)"), "{d:?}");
}

#[test]
fn wrong_key_is_denied() {
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = generate_keys(dir.path(), "signer");
    let (_, other_pub) = generate_keys(dir.path(), "other");
    let r = reg.reference("acme/app:v1");
    push_image(&reg.client(), &r, "wrong key");
    assert_eq!(sign(&reg, &key, &r.to_string(), &[]).code, 0);
    let v = verify(
        &reg,
        &[&r.to_string(), "--key", other_pub.to_str().unwrap()],
    );
    assert_eq!(v.code, 1, "{v:?}");
    assert!(v.stdout.starts_with("DENY "), "{v:?}");
    assert!(v.stdout.contains("not signed by key"), "{v:?}");
}

#[test]
fn missing_signature_is_reported_as_unsigned() {
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let (_, public) = generate_keys(dir.path(), "k");
    let r = reg.reference("acme/unsigned:v1");
    let d = push_image(&reg.client(), &r, "unsigned");
    let v = verify(&reg, &[&r.to_string(), "--key", public.to_str().unwrap()]);
    assert_eq!(v.code, 1, "{v:?}");
    assert!(v.stdout.contains("no signatures found"), "{v:?}");
    assert!(
        v.stdout
            .contains(&format!("{}.sig: not found", d.tag_prefix())),
        "{v:?}"
    );
    assert!(!v.stdout.contains("mismatch"), "{v:?}");
}

/// Rewrite the `.sig` manifest of `digest` in `repo` with `edit` applied to each layer's
/// (payload, signature annotation).
fn rewrite_sig(
    reg: &TestRegistry,
    repo: &str,
    digest: &Digest,
    edit: impl Fn(Vec<u8>, String) -> (Vec<u8>, String),
) {
    let client = reg.client();
    let sig_ref = reg.reference(&format!("{repo}:{}.sig", digest.tag_prefix()));
    block_on(async {
        let m = client.get_manifest(&sig_ref).await.unwrap().unwrap();
        let mut parsed = ImageManifest::parse(&m, "test").unwrap();
        for layer in &mut parsed.layers {
            let payload = client.get_blob(&sig_ref, layer).await.unwrap();
            let ann = layer.annotations.clone().unwrap();
            let (p, s) = edit(payload, ann[SIGNATURE_ANNOTATION].clone());
            let d = client.put_blob(&sig_ref, &p).await.unwrap();
            layer.digest = d.to_string();
            layer.size = p.len() as u64;
            layer.annotations = Some(BTreeMap::from([(SIGNATURE_ANNOTATION.to_string(), s)]));
        }
        let body = serde_json::to_vec(&parsed).unwrap();
        client
            .put_manifest(&sig_ref, &body, OCI_MANIFEST)
            .await
            .unwrap();
    });
}

#[test]
fn tampered_payload_and_tampered_signature_are_denied() {
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = generate_keys(dir.path(), "k");
    let r = reg.reference("acme/app:v1");
    let d = push_image(&reg.client(), &r, "tamper");
    assert_eq!(sign(&reg, &key, &r.to_string(), &[]).code, 0);

    // Payload edited after signing (an annotation added): the signature no longer covers it.
    rewrite_sig(&reg, "acme/app", &d, |p, s| {
        let mut parsed = SimpleSigning::parse(&p).unwrap();
        parsed.optional = Some([("env".to_string(), serde_json::json!("prod"))].into());
        (parsed.to_bytes().unwrap(), s)
    });
    let v = verify(&reg, &[&r.to_string(), "--key", public.to_str().unwrap()]);
    assert_eq!(v.code, 1, "{v:?}");
    assert!(
        v.stdout
            .contains("signature does not verify over the payload"),
        "{v:?}"
    );

    // Signature bytes flipped.
    assert_eq!(sign(&reg, &key, &r.to_string(), &[]).code, 0);
    rewrite_sig(&reg, "acme/app", &d, |p, s| {
        let mut raw = base64::engine::general_purpose::STANDARD.decode(s).unwrap();
        let n = raw.len();
        raw[n - 3] ^= 0x55;
        (p, base64::engine::general_purpose::STANDARD.encode(raw))
    });
    let v = verify(&reg, &[&r.to_string(), "--key", public.to_str().unwrap()]);
    assert_eq!(v.code, 1, "{v:?}");
    assert!(v.stdout.contains("not signed by key"), "{v:?}");
}

#[test]
fn replayed_signature_of_another_image_is_denied() {
    let reg = TestRegistry::start();
    let client = reg.client();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = generate_keys(dir.path(), "k");
    let a = reg.reference("acme/app:a");
    let b = reg.reference("acme/app:b");
    let da = push_image(&client, &a, "image a");
    let db = push_image(&client, &b, "image b");
    assert_eq!(sign(&reg, &key, &a.to_string(), &[]).code, 0);
    // Copy a's .sig manifest to b's .sig tag.
    block_on(async {
        let sa = client
            .get_manifest(&reg.reference(&format!("acme/app:{}.sig", da.tag_prefix())))
            .await
            .unwrap()
            .unwrap();
        client
            .put_manifest(
                &reg.reference(&format!("acme/app:{}.sig", db.tag_prefix())),
                &sa.bytes,
                OCI_MANIFEST,
            )
            .await
            .unwrap();
    });
    let v = verify(&reg, &[&b.to_string(), "--key", public.to_str().unwrap()]);
    assert_eq!(v.code, 1, "{v:?}");
    assert!(v.stdout.contains("signature is for another image"), "{v:?}");
    assert!(v.stdout.contains(&da.to_string()), "{v:?}");
}

#[test]
fn identity_mismatch_is_denied_unless_the_copy_is_declared() {
    let reg = TestRegistry::start();
    let client = reg.client();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = generate_keys(dir.path(), "k");
    let orig = reg.reference("acme/app:v1");
    let copy = reg.reference("mirror/app:v1");
    let d = push_image(&client, &orig, "copied");
    assert_eq!(sign(&reg, &key, &orig.to_string(), &[]).code, 0);
    // Same bytes under another repository, signature included (what `cosign copy` does).
    push_image(&client, &copy, "copied");
    block_on(async {
        let s = client
            .get_manifest(&reg.reference(&format!("acme/app:{}.sig", d.tag_prefix())))
            .await
            .unwrap()
            .unwrap();
        let parsed = ImageManifest::parse(&s, "t").unwrap();
        for l in parsed.layers.iter().chain(parsed.config.iter()) {
            let data = client.get_blob(&orig, l).await.unwrap();
            client.put_blob(&copy, &data).await.unwrap();
        }
        client
            .put_manifest(
                &reg.reference(&format!("mirror/app:{}.sig", d.tag_prefix())),
                &s.bytes,
                OCI_MANIFEST,
            )
            .await
            .unwrap();
    });
    let v = verify(
        &reg,
        &[&copy.to_string(), "--key", public.to_str().unwrap()],
    );
    assert_eq!(v.code, 1, "{v:?}");
    assert!(v.stdout.contains("signature names"), "{v:?}");
    assert!(v.stdout.contains("signedIdentity"), "{v:?}");
    let v = verify(
        &reg,
        &[
            &copy.to_string(),
            "--key",
            public.to_str().unwrap(),
            "--signed-repository",
            &orig.name(),
        ],
    );
    assert_eq!(v.code, 0, "{v:?}");
}

#[test]
fn tag_moved_after_signing_is_denied() {
    let reg = TestRegistry::start();
    let client = reg.client();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = generate_keys(dir.path(), "k");
    let r = reg.reference("acme/app:latest");
    push_image(&client, &r, "first");
    assert_eq!(sign(&reg, &key, &r.to_string(), &[]).code, 0);
    let moved = push_image(&client, &r, "second, pushed over the tag");
    let v = verify(&reg, &[&r.to_string(), "--key", public.to_str().unwrap()]);
    assert_eq!(v.code, 1, "{v:?}");
    assert!(v.stdout.contains(&moved.to_string()), "{v:?}");
    assert!(v.stdout.contains("no signatures found"), "{v:?}");
}

#[test]
fn annotations_are_signed_and_required() {
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = generate_keys(dir.path(), "k");
    let r = reg.reference("acme/app:v1");
    push_image(&reg.client(), &r, "annotated");
    assert_eq!(
        sign(&reg, &key, &r.to_string(), &["-a", "env=prod"]).code,
        0
    );
    let pubs = public.to_str().unwrap();
    let v = verify(&reg, &[&r.to_string(), "--key", pubs, "-a", "env=prod"]);
    assert_eq!(v.code, 0, "{v:?}");
    let v = verify(&reg, &[&r.to_string(), "--key", pubs, "-a", "env=dev"]);
    assert_eq!(v.code, 1, "{v:?}");
    assert!(
        v.stdout
            .contains("annotation \"env\" is \"prod\", the policy requires \"dev\""),
        "{v:?}"
    );
}

#[test]
fn registry_down_is_an_error_not_unsigned() {
    let dir = tempfile::tempdir().unwrap();
    let (_, public) = generate_keys(dir.path(), "k");
    let host = format!("127.0.0.1:{}", free_port());
    let r = format!("{host}/acme/app:v1");
    let v = ocigate(
        &[
            "verify",
            &r,
            "--key",
            public.to_str().unwrap(),
            "--registry-plain-http",
            &host,
            "-o",
            "json",
        ],
        &[],
    );
    assert_eq!(v.code, 1, "{v:?}");
    let res = &v.json()["results"][0];
    assert_eq!(res["verdict"], "deny");
    assert_eq!(res["failure"], "registry");
    let reason = res["reasons"][0].as_str().unwrap();
    assert!(reason.contains("unreachable"), "{reason}");
    assert!(!reason.contains("no signatures"), "{reason}");
}

#[test]
fn failed_sign_leaves_the_registry_as_it_was() {
    let reg = TestRegistry::start();
    let client = reg.client();
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = generate_keys(dir.path(), "k");
    let r = reg.reference("acme/app:v1");
    let d = push_image(&client, &r, "untouched");
    // wrong password
    let host = reg.host();
    let s = ocigate(
        &[
            "sign",
            &r.to_string(),
            "--key",
            key.to_str().unwrap(),
            "--registry-plain-http",
            &host,
        ],
        &[("OCIGATE_PASSWORD", "not the password")],
    );
    assert_eq!(s.code, 2, "{s:?}");
    assert!(s.stderr.contains("wrong password"), "{s:?}");
    // image that does not exist
    let missing = reg.reference("acme/app:nope");
    let s = sign(&reg, &key, &missing.to_string(), &[]);
    assert_eq!(s.code, 2, "{s:?}");
    assert!(s.stderr.contains("not found"), "{s:?}");
    let sig_ref = reg.reference(&format!("acme/app:{}.sig", d.tag_prefix()));
    assert!(block_on(client.get_manifest(&sig_ref)).unwrap().is_none());
}

#[test]
fn bad_input_gives_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (_, public) = generate_keys(dir.path(), "k");
    let pubs = public.to_str().unwrap();
    let v = ocigate(&["verify", "Bad/Ref", "--key", pubs], &[]);
    assert_eq!(v.code, 2, "{v:?}");
    // The bad reference is a result of its own (the others would still be verified).
    assert!(
        v.stdout.starts_with("DENY Bad/Ref (invalid)")
            && v.stdout.contains("\"Bad/Ref\"")
            && v.stdout.contains("lowercase"),
        "{v:?}"
    );
    assert_eq!(v.stdout.trim().lines().count(), 2, "{v:?}");

    let bogus_key = dir.path().join("bogus.pub");
    std::fs::write(&bogus_key, "not a key").unwrap();
    let v = ocigate(
        &["verify", "r.io/a:b", "--key", bogus_key.to_str().unwrap()],
        &[],
    );
    assert_eq!(v.code, 2, "{v:?}");
    assert!(
        v.stderr.contains("bogus.pub") && v.stderr.contains("PEM"),
        "{v:?}"
    );

    let v = ocigate(&["verify", "r.io/a:b"], &[]);
    assert_eq!(v.code, 2, "{v:?}");
    assert!(
        v.stderr.contains("--policy") && v.stderr.contains("--key"),
        "{v:?}"
    );

    let v = ocigate(
        &["verify", "r.io/a:b", "--key", pubs],
        &[("OCIGATE_REGISTRY_USERNAME", "u")],
    );
    assert_eq!(v.code, 2, "{v:?}");
    assert!(v.stderr.contains("OCIGATE_REGISTRY_HOST"), "{v:?}");
}

#[test]
fn generate_key_pair_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = generate_keys(dir.path(), "k");
    let pem = std::fs::read_to_string(&key).unwrap();
    assert!(pem.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----"));
    assert!(
        std::fs::read_to_string(&public)
            .unwrap()
            .starts_with("-----BEGIN PUBLIC KEY-----")
    );
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let prefix = dir.path().join("k");
    let again = ocigate(
        &[
            "generate-key-pair",
            "--output-key-prefix",
            prefix.to_str().unwrap(),
        ],
        &[("COSIGN_PASSWORD", "x")],
    );
    assert_eq!(again.code, 2, "{again:?}");
    assert!(again.stderr.contains("already exists"), "{again:?}");
    assert_eq!(std::fs::read_to_string(&key).unwrap(), pem);
}

/// `--force` over an existing key: the new private key is 0600 whatever the old file's mode, a
/// symlink at the target path is replaced and not followed, and a dangling symlink counts as
/// an existing file.
#[test]
fn generate_key_pair_force_writes_a_new_private_file() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let gen_at = |prefix: &std::path::Path, force: bool| {
        let mut args = vec![
            "generate-key-pair",
            "--output-key-prefix",
            prefix.to_str().unwrap(),
        ];
        if force {
            args.push("--force");
        }
        ocigate(&args, &[("COSIGN_PASSWORD", "x")])
    };
    let prefix = dir.path().join("k");
    let key = dir.path().join("k.key");
    std::fs::write(&key, "old").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let v = gen_at(&prefix, true);
    assert_eq!(v.code, 0, "{v:?}");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(
        std::fs::read_to_string(&key)
            .unwrap()
            .contains("ENCRYPTED SIGSTORE PRIVATE KEY")
    );

    // A symlink planted at the key's path, pointing at a file of someone else's.
    let victim = dir.path().join("victim.txt");
    std::fs::write(&victim, "do not overwrite").unwrap();
    let linked = dir.path().join("l");
    std::os::unix::fs::symlink(&victim, dir.path().join("l.key")).unwrap();
    let v = gen_at(&linked, false);
    assert_eq!(v.code, 2, "{v:?}");
    let v = gen_at(&linked, true);
    assert_eq!(v.code, 0, "{v:?}");
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "do not overwrite"
    );
    let meta = std::fs::symlink_metadata(dir.path().join("l.key")).unwrap();
    assert!(meta.file_type().is_file() && meta.permissions().mode() & 0o777 == 0o600);
    // A dangling symlink is an existing path, too.
    std::os::unix::fs::symlink(dir.path().join("nowhere"), dir.path().join("d.pub")).unwrap();
    let v = gen_at(&dir.path().join("d"), false);
    assert_eq!(v.code, 2, "{v:?}");
    assert!(!dir.path().join("nowhere").exists());
    // No temporary files are left behind.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn oversized_registry_content_is_refused() {
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = generate_keys(dir.path(), "k");
    let r = reg.reference("acme/app:v1");
    let d = push_image(&reg.client(), &r, "size limits");
    assert_eq!(sign(&reg, &key, &r.to_string(), &[]).code, 0);
    let small = reg.client_with(|s| {
        s.max_manifest_bytes = 100;
        s.max_blob_bytes = 100;
    });
    let e = block_on(small.get_manifest(&r)).unwrap_err();
    assert!(
        e.to_string().contains("larger than the 100-byte limit"),
        "{e}"
    );
    // a blob whose descriptor admits it is large is refused before fetching
    let sig_ref = reg.reference(&format!("acme/app:{}.sig", d.tag_prefix()));
    let m = block_on(reg.client().get_manifest(&sig_ref))
        .unwrap()
        .unwrap();
    let layer = ImageManifest::parse(&m, "t").unwrap().layers[0].clone();
    let e = block_on(small.get_blob(&sig_ref, &layer)).unwrap_err();
    assert!(
        e.to_string().contains("larger than the 100-byte limit"),
        "{e}"
    );
    // and one whose descriptor lies about its size is cut off while reading
    let mut lying = layer.clone();
    lying.size = 10;
    let e = block_on(small.get_blob(&sig_ref, &lying)).unwrap_err();
    assert!(
        e.to_string().contains("larger than the 100-byte limit"),
        "{e}"
    );
}

/// A payload with `critical` and `Critical`, signed by the right key: ocigate read the first
/// (this image) while cosign (Go, case-insensitive fields, last one wins) reads the second
/// (another image). Such a payload binds to nothing: it is refused.
#[test]
fn a_payload_cosign_would_read_differently_is_refused() {
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = generate_keys(dir.path(), "k");
    let r = reg.reference("acme/app:v1");
    let d = push_image(&reg.client(), &r, "ambiguous");
    assert_eq!(sign(&reg, &key, &r.to_string(), &[]).code, 0);
    let signing = ocigate::sign::key::SigningKey::from_encrypted_pem(
        &std::fs::read_to_string(&key).unwrap(),
        PASSWORD.as_bytes(),
        "test key",
    )
    .unwrap();
    let other = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    rewrite_sig(&reg, "acme/app", &d, |p, _| {
        let text = String::from_utf8(p).unwrap();
        let ours = &text[..text.len() - 1];
        let payload = format!(
            r#"{ours},"Critical":{{"identity":{{"docker-reference":"{}/acme/app"}},"image":{{"docker-manifest-digest":"{other}"}},"type":"cosign container image signature"}}}}"#,
            reg.host()
        )
        .into_bytes();
        let sig = signing.sign(&payload).unwrap();
        (
            payload,
            base64::engine::general_purpose::STANDARD.encode(sig),
        )
    });
    let v = verify(&reg, &[&r.to_string(), "--key", public.to_str().unwrap()]);
    assert_eq!(v.code, 1, "{v:?}");
    assert!(
        v.stdout.contains("payload is ambiguous") && v.stdout.contains("\"Critical\""),
        "{v:?}"
    );
}

/// The text output: a headline per reference, reasons on indented lines, and nothing from the
/// registry reaches the terminal unescaped (an image's source annotation cannot clear the
/// screen and print a fake ALLOW). JSON: a schema version, a failure class on every non-allow,
/// and a bad reference among good ones is its own result (exit 2), the others still verified.
#[test]
fn output_a_person_can_read_and_a_program_can_parse() {
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = generate_keys(dir.path(), "k");
    let r = reg.reference("acme/app:v1");
    let hostile = "\u{1b}[2J\u{1b}[H\u{1b}[32mALLOW everything\u{1b}[0m";
    push_image_with(
        &reg.client(),
        &r,
        "output",
        BTreeMap::from([(
            "org.opencontainers.image.source".to_string(),
            hostile.to_string(),
        )]),
    );
    assert_eq!(sign(&reg, &key, &r.to_string(), &[]).code, 0);
    let unsigned = reg.reference("acme/unsigned:v1");
    push_image(&reg.client(), &unsigned, "unsigned");
    let pk = public.to_str().unwrap();
    let v = verify(&reg, &[&r.to_string(), &unsigned.to_string(), "--key", pk]);
    assert_eq!(v.code, 1, "{v:?}");
    assert!(!v.stdout.contains('\u{1b}'), "{:?}", v.stdout);
    assert!(v.stdout.contains("source \\u{1b}[2J"), "{}", v.stdout);
    let lines: Vec<&str> = v.stdout.lines().collect();
    assert!(
        lines[0].starts_with(&format!("ALLOW {}@sha256:", r)),
        "{}",
        v.stdout
    );
    assert!(
        lines[1..]
            .iter()
            .take_while(|l| l.starts_with("  "))
            .count()
            >= 2,
        "{}",
        v.stdout
    );
    let deny = lines.iter().position(|l| l.starts_with("DENY ")).unwrap();
    assert!(lines[deny].ends_with("(unsigned)"), "{}", v.stdout);
    assert!(lines[deny + 1].starts_with("  "), "{}", v.stdout);
    assert_eq!(
        lines.iter().filter(|l| !l.starts_with("  ")).count(),
        2,
        "one headline per reference: {}",
        v.stdout
    );

    let v = verify(
        &reg,
        &["nope://x", &r.to_string(), "--key", pk, "-o", "json"],
    );
    assert_eq!(v.code, 2, "{v:?}");
    let j = v.json();
    assert_eq!(j["schemaVersion"], 1, "{j}");
    assert_eq!(j["results"][0]["failure"], "invalid", "{j}");
    assert_eq!(j["results"][1]["verdict"], "allow", "{j}");
    assert!(
        j["results"][1]["digest"].as_str().unwrap().len() == 71,
        "{j}"
    );
    // A configuration error with -o json is a JSON document on stdout, exit 2.
    let v = verify(
        &reg,
        &[&r.to_string(), "--key", "/nonexistent.pub", "-o", "json"],
    );
    assert_eq!(v.code, 2, "{v:?}");
    let j = v.json();
    assert_eq!(j["schemaVersion"], 1, "{j}");
    assert!(
        j["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/nonexistent.pub"),
        "{j}"
    );
}

/// On a terminal (a PTY from util-linux `script`), a progress line on stderr is rewritten in
/// place and cleared before each result; results come in input order. Not on a terminal:
/// nothing extra.
#[test]
fn progress_line_on_a_terminal_only() {
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(!strict(), "util-linux `script` is missing");
        eprintln!(
            "SKIPPED progress_line_on_a_terminal_only: no `script`; this PTY check did NOT run"
        );
        return;
    }
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = generate_keys(dir.path(), "k");
    let refs: Vec<String> = (0..3)
        .map(|i| {
            let r = reg.reference(&format!("acme/p{i}:v1"));
            push_image(&reg.client(), &r, &format!("progress {i}"));
            assert_eq!(sign(&reg, &key, &r.to_string(), &[]).code, 0);
            r.to_string()
        })
        .collect();
    let mut args = vec![
        "verify".to_string(),
        "--key".into(),
        public.display().to_string(),
        "--jobs".into(),
        "2".into(),
        "--insecure-ignore-tlog".into(),
    ];
    args.extend(refs.iter().cloned());
    let plain = ocigate(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    assert_eq!(plain.code, 0, "{plain:?}");
    assert!(
        plain.stderr.is_empty(),
        "nothing extra off a terminal: {plain:?}"
    );
    let order: Vec<usize> = refs
        .iter()
        .map(|r| plain.stdout.find(&format!("ALLOW {r}@")).unwrap())
        .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "input order: {}",
        plain.stdout
    );

    let command = std::iter::once(env!("CARGO_BIN_EXE_ocigate").to_string())
        .chain(args.iter().cloned())
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let out = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("DOCKER_CONFIG", "/nonexistent-ocigate-test")
        .env("HOME", "/nonexistent-ocigate-home")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let tty = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{tty}");
    assert!(tty.contains("\r\u{1b}[K[1/3] checked"), "{tty:?}");
    assert!(tty.contains("[3/3] checked"), "{tty:?}");
    for r in &refs {
        assert!(tty.contains(&format!("ALLOW {r}@")), "{tty:?}");
    }
}

/// `verify --key` requires a transparency-log entry unless told otherwise, as `cosign verify
/// --key` does: a signature made without Rekor is denied (class `tlog`) with the way out named,
/// and accepted with `--insecure-ignore-tlog`.
#[test]
fn key_verification_requires_a_log_entry_by_default() {
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = generate_keys(dir.path(), "k");
    let r = reg.reference("acme/app:v1");
    push_image(&reg.client(), &r, "tlog default");
    assert_eq!(sign(&reg, &key, &r.to_string(), &[]).code, 0);
    let reference = r.to_string();
    let pk = public.to_str().unwrap();
    let v = ocigate_exact(&["verify", &reference, "--key", pk, "-o", "json"], &[]);
    assert_eq!(v.code, 1, "{v:?}");
    let res = &v.json()["results"][0];
    assert_eq!(res["failure"], "tlog", "{v:?}");
    assert!(
        res["reasons"].to_string().contains("has no Rekor entry"),
        "{v:?}"
    );
    let v = ocigate_exact(
        &["verify", &reference, "--key", pk, "--insecure-ignore-tlog"],
        &[],
    );
    assert_eq!(v.code, 0, "{v:?}");
    assert!(
        v.stdout.contains("no transparency-log entry checked"),
        "{v:?}"
    );
    // The same for a policy: a key authority without `tlog` requires an entry.
    let policy = dir.path().join("p.yaml");
    std::fs::write(
        &policy,
        format!(
            "apiVersion: ocigate.dev/v1alpha1\nkind: Policy\nkeys: [{{name: k, path: {pk}}}]\n\
             rules:\n  - name: r\n    images: [\"{}/**\"]\n    authorities: [{{key: {{name: k}}}}]\n",
            reg.host()
        ),
    )
    .unwrap();
    let v = ocigate_exact(
        &["verify", &reference, "--policy", policy.to_str().unwrap()],
        &[],
    );
    assert_eq!(v.code, 1, "{v:?}");
    assert!(v.stdout.contains("(tlog)"), "{v:?}");
}

/// `sign` refuses what it would write past what a verifier reads (annotations making the
/// payload larger than 64 KiB, or a bundle larger than 128 KiB: pushed, then never examined),
/// and does not replace a `.sig` tag holding an index (no layers of another type to object to,
/// but not a signature manifest either). Before the change all three were written.
#[test]
fn sign_refuses_what_no_verifier_reads_and_what_is_not_its_own() {
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = generate_keys(dir.path(), "k");
    let r = reg.reference("refused/sign:v1");
    let digest = push_image(&reg.client(), &r, "refused sign");
    let note = format!("note={}", "n".repeat(120_000));
    for extra in [vec!["-a", &note], vec!["-a", &note, "--format", "bundle"]] {
        let s = sign(&reg, &key, &r.to_string(), &extra);
        assert_eq!(s.code, 2, "{s:?}");
        assert!(s.stderr.contains("a verifier reads"), "{s:?}");
    }
    let sig = r.with_tag(&format!("{}.sig", digest.tag_prefix()));
    assert!(block_on(reg.client().get_manifest(&sig)).unwrap().is_none());

    let image = block_on(reg.client().get_manifest(&r)).unwrap().unwrap();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": image.digest.to_string(),
                       "size": image.bytes.len()}]
    });
    let index = serde_json::to_vec(&index).unwrap();
    let index_type = "application/vnd.oci.image.index.v1+json";
    block_on(reg.client().put_manifest(&sig, &index, index_type)).unwrap();
    let s = sign(&reg, &key, &r.to_string(), &[]);
    assert_eq!(s.code, 2, "{s:?}");
    assert!(s.stderr.contains("is not a manifest of"), "{s:?}");
    let kept = block_on(reg.client().get_manifest(&sig)).unwrap().unwrap();
    assert_eq!(kept.bytes, index);
}
