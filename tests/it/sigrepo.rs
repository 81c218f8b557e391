//! Signatures kept in another repository (issue #20 point 5): cosign 3.1.1's `COSIGN_REPOSITORY`
//! both ways, a rule's `signaturesRepository`, the referrers API of that repository (ferro),
//! a signatures registry that is down, credentials per origin, and a proxied copy accepted
//! through `signedIdentity: {remapPrefix}`.

use std::path::Path;
use std::process::Command;

use ocigate::reference::ImageRef;
use ocigate::registry::{ImageManifest, Registry};

use crate::cosign_peer::{cosign_keys, cosign_or_skip, offline_signing_config};
use crate::harness::*;
use crate::proxy::proxy;

/// cosign with `COSIGN_REPOSITORY` (or without, for `None`), kept off the network and out of
/// the user's state as the other peer tests keep it.
fn cosign_at(bin: &Path, dir: &Path, repository: Option<&str>, args: &[&str]) -> Run {
    let mut c = Command::new(bin);
    c.args(args)
        .current_dir(dir)
        .env("COSIGN_PASSWORD", PASSWORD)
        .env("HOME", dir)
        .env("DOCKER_CONFIG", dir.join("docker"))
        .env("TUF_ROOT", dir.join("tuf"))
        .env("SIGSTORE_NO_CACHE", "true")
        .env_remove("COSIGN_REPOSITORY");
    if let Some(r) = repository {
        c.env("COSIGN_REPOSITORY", r);
    }
    let out = c.output().expect("run cosign");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// cosign 2's format (`.sig` tag), key-based, no Rekor upload.
fn cosign_sign_legacy(bin: &Path, dir: &Path, key: &Path, r: &str, repository: &str) -> Run {
    let args = [
        "sign",
        "--key",
        key.to_str().unwrap(),
        "--use-signing-config=false",
        "--new-bundle-format=false",
        "--tlog-upload=false",
        "--allow-insecure-registry",
        "--yes",
        r,
    ];
    cosign_at(bin, dir, Some(repository), &args)
}

fn cosign_verify(bin: &Path, dir: &Path, public: &Path, r: &str, repository: Option<&str>) -> Run {
    let args = [
        "verify",
        "--key",
        public.to_str().unwrap(),
        "--insecure-ignore-tlog",
        "--allow-insecure-registry",
        r,
    ];
    cosign_at(bin, dir, repository, &args)
}

/// A policy with one rule over `pattern`, satisfied by `public` without a log entry, with the
/// rule's extra lines `tail` (indented as rule fields).
fn write_policy(path: &Path, public: &Path, pattern: &str, tail: &str) {
    std::fs::write(
        path,
        format!(
            "apiVersion: ocigate.dev/v1alpha1\nkind: Policy\nnoMatch: deny\n\
             keys: [{{name: release, path: {}}}]\n\
             rules:\n  - name: apps\n    images: [\"{pattern}\"]\n    \
             authorities: [{{key: {{name: release}}, tlog: skip}}]\n{tail}",
            public.display()
        ),
    )
    .expect("write policy");
}

/// `ocigate verify` against plain-HTTP registries `hosts`, with `env`.
fn verify_at(hosts: &[&str], args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut all = vec!["verify"];
    for h in hosts {
        all.extend(["--registry-plain-http", h]);
    }
    all.extend_from_slice(args);
    ocigate(&all, env)
}

#[test]
fn cosign_signs_into_a_signatures_repository_and_ocigate_finds_it_there() {
    let Some(bin) = cosign_or_skip("cosign_signs_into_a_signatures_repository") else {
        return;
    };
    let reg = TestRegistry::start();
    let host = reg.host();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = cosign_keys(&bin, dir.path(), "cosign");
    let r = reg.reference("apps/api:v1");
    let digest = push_image(&reg.client(), &r, "signatures elsewhere");
    let sigs = format!("{host}/signatures/api");
    let s = cosign_sign_legacy(&bin, dir.path(), &key, &r.to_string(), &sigs);
    assert_eq!(s.code, 0, "{s:?}");
    // Nothing beside the image: the signature is in the other repository only.
    let beside = r.with_tag(&format!("{}.sig", digest.tag_prefix()));
    assert!(
        block_on(reg.client().get_manifest(&beside))
            .unwrap()
            .is_none()
    );
    let elsewhere = ImageRef::parse(&sigs)
        .unwrap()
        .with_tag(&format!("{}.sig", digest.tag_prefix()));
    assert!(
        block_on(reg.client().get_manifest(&elsewhere))
            .unwrap()
            .is_some()
    );

    // A rule's signaturesRepository.
    let policy = dir.path().join("policy.yaml");
    write_policy(
        &policy,
        &public,
        &format!("{host}/apps/**"),
        &format!("    signaturesRepository: {sigs}\n"),
    );
    let p = policy.to_str().unwrap();
    let v = verify_at(
        &[&host],
        &[&r.to_string(), "--policy", p, "-o", "json"],
        &[],
    );
    assert_eq!(v.code, 0, "{v:?}");
    let res = &v.json()["results"][0];
    assert_eq!(res["digest"], digest.to_string());
    // the signature names the image, not the repository it is kept in
    assert_eq!(res["signatures"][0]["dockerReference"], r.name());
    let looked = res["discovery"][0]["path"].as_str().unwrap().to_string();
    assert!(looked.ends_with(&format!(".sig in {sigs}")), "{looked}");

    // Without it: unsigned, as before; and COSIGN_REPOSITORY does not change a policy's rule.
    write_policy(&policy, &public, &format!("{host}/apps/**"), "");
    let env = [("COSIGN_REPOSITORY", sigs.as_str())];
    let v = verify_at(
        &[&host],
        &[&r.to_string(), "--policy", p, "-o", "json"],
        &env,
    );
    assert_eq!(v.code, 1, "{v:?}");
    assert_eq!(v.json()["results"][0]["failure"], "unsigned", "{v:?}");
    assert!(
        v.stderr
            .contains("COSIGN_REPOSITORY is not used with --policy"),
        "{v:?}"
    );

    // COSIGN_REPOSITORY with --key, as cosign reads it.
    let pubkey = public.to_str().unwrap();
    let v = verify_at(&[&host], &[&r.to_string(), "--key", pubkey], &env);
    assert_eq!(v.code, 0, "{v:?}");
    let v = verify_at(&[&host], &[&r.to_string(), "--key", pubkey], &[]);
    assert_eq!(v.code, 1, "{v:?}");
    // discover lists it there too
    let d = ocigate(
        &[
            "discover",
            &r.to_string(),
            "--registry-plain-http",
            &host,
            "-o",
            "json",
        ],
        &env,
    );
    assert_eq!(d.code, 0, "{d:?}");
    assert!(d.stdout.contains(&r.name()), "{d:?}");
    assert_eq!(
        d.json()["signatures"].as_array().map(Vec::len),
        Some(1),
        "{d:?}"
    );
    // a value cosign would refuse is a usage error
    let bad = [("COSIGN_REPOSITORY", "Not A Repository")];
    let v = verify_at(&[&host], &[&r.to_string(), "--key", pubkey], &bad);
    assert_eq!(v.code, 2, "{v:?}");
    assert!(v.stderr.contains("$COSIGN_REPOSITORY"), "{v:?}");
}

#[test]
fn ocigate_signs_into_a_signatures_repository_and_cosign_verifies_there() {
    let Some(bin) = cosign_or_skip("ocigate_signs_into_a_signatures_repository") else {
        return;
    };
    let reg = TestRegistry::start();
    let host = reg.host();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = generate_keys(dir.path(), "release");
    let r = reg.reference("apps/web:v1");
    push_image(&reg.client(), &r, "signed by ocigate elsewhere");
    let sigs = format!("{host}/signatures/web");
    let env = [
        ("OCIGATE_PASSWORD", PASSWORD),
        ("COSIGN_REPOSITORY", sigs.as_str()),
    ];
    let k = key.to_str().unwrap();
    let s = ocigate(
        &[
            "sign",
            &r.to_string(),
            "--key",
            k,
            "--registry-plain-http",
            &host,
        ],
        &env,
    );
    assert_eq!(s.code, 0, "{s:?}");
    assert!(s.stdout.contains(&format!("in {sigs}")), "{s:?}");
    let v = cosign_verify(&bin, dir.path(), &public, &r.to_string(), Some(&sigs));
    assert_eq!(v.code, 0, "{v:?}");
    let v = cosign_verify(&bin, dir.path(), &public, &r.to_string(), None);
    assert_ne!(v.code, 0, "the signature is not beside the image: {v:?}");

    // attest writes there too, and ocigate's attestation rule finds it
    let predicate = dir.path().join("predicate.json");
    std::fs::write(&predicate, r#"{"buildType":"x"}"#).unwrap();
    let a = ocigate(
        &[
            "attest",
            &r.to_string(),
            "--key",
            k,
            "--predicate",
            predicate.to_str().unwrap(),
            "--type",
            "custom",
            "--registry-plain-http",
            &host,
        ],
        &env,
    );
    assert_eq!(a.code, 0, "{a:?}");
    let v = cosign_at(
        &bin,
        dir.path(),
        Some(&sigs),
        &[
            "verify-attestation",
            "--key",
            public.to_str().unwrap(),
            "--type",
            "custom",
            "--insecure-ignore-tlog",
            "--allow-insecure-registry",
            &r.to_string(),
        ],
    );
    assert_eq!(v.code, 0, "{v:?}");
}

/// cosign 3's bundles with `COSIGN_REPOSITORY` go to the referrers of the digest in that
/// repository; ferro-oci-server serves the referrers API there.
#[test]
fn bundles_in_a_signatures_repository_through_the_referrers_api() {
    let Some(bin) = cosign_or_skip("bundles_in_a_signatures_repository") else {
        return;
    };
    let Some(reg) = TestRegistry::start_ferro_or_skip("bundles_in_a_signatures_repository") else {
        return;
    };
    let host = reg.host();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = cosign_keys(&bin, dir.path(), "cosign");
    let r = reg.reference("apps/v3:v1");
    let digest = push_image(&reg.client(), &r, "v3 elsewhere");
    let sigs = format!("{host}/signatures/v3");
    let sc = offline_signing_config(&bin, dir.path());
    let s = cosign_at(
        &bin,
        dir.path(),
        Some(&sigs),
        &[
            "sign",
            "--key",
            key.to_str().unwrap(),
            "--signing-config",
            sc.to_str().unwrap(),
            "--allow-insecure-registry",
            "--yes",
            &r.to_string(),
        ],
    );
    assert_eq!(s.code, 0, "{s:?}");
    let env = [("COSIGN_REPOSITORY", sigs.as_str())];
    let pubkey = public.to_str().unwrap();
    let v = verify_at(
        &[&host],
        &[&r.to_string(), "--key", pubkey, "-o", "json"],
        &env,
    );
    assert_eq!(v.code, 0, "{v:?}");
    let res = &v.json()["results"][0];
    assert_eq!(res["digest"], digest.to_string());
    assert!(
        res["discovery"].to_string().contains("referrers API"),
        "{res}"
    );
    // not beside the image
    let v = verify_at(&[&host], &[&r.to_string(), "--key", pubkey], &[]);
    assert_eq!(v.code, 1, "{v:?}");

    // ocigate's bundle into the signatures repository, verified by cosign there
    let (okey, opub) = generate_keys(dir.path(), "ours");
    let r2 = reg.reference("apps/v3b:v1");
    push_image(&reg.client(), &r2, "v3 by ocigate elsewhere");
    let s = ocigate(
        &[
            "sign",
            &r2.to_string(),
            "--key",
            okey.to_str().unwrap(),
            "--format",
            "bundle",
            "--registry-plain-http",
            &host,
        ],
        &[("OCIGATE_PASSWORD", PASSWORD), ("COSIGN_REPOSITORY", &sigs)],
    );
    assert_eq!(s.code, 0, "{s:?}");
    let v = cosign_verify(&bin, dir.path(), &opub, &r2.to_string(), Some(&sigs));
    assert_eq!(v.code, 0, "{v:?}");
}

/// A signatures repository on a registry that does not answer: the verdict says the registry
/// failed, never that the image is unsigned.
#[test]
fn a_signatures_registry_that_is_down_is_a_registry_failure() {
    let reg = TestRegistry::start();
    let host = reg.host();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = generate_keys(dir.path(), "release");
    let r = reg.reference("apps/down:v1");
    push_image(&reg.client(), &r, "signatures registry down");
    assert_eq!(sign(&reg, &key, &r.to_string(), &[]).code, 0);
    let down = format!("127.0.0.1:{}", free_port());
    let policy = dir.path().join("policy.yaml");
    write_policy(
        &policy,
        &public,
        &format!("{host}/apps/**"),
        &format!("    signaturesRepository: {down}/signatures/down\n"),
    );
    let p = policy.to_str().unwrap();
    let v = verify_at(
        &[&host, &down],
        &[&r.to_string(), "--policy", p, "-o", "json"],
        &[],
    );
    assert_eq!(v.code, 1, "{v:?}");
    let res = &v.json()["results"][0];
    assert_eq!(res["failure"], "registry", "{res}");
    assert!(res["reasons"].to_string().contains("cannot tell"), "{res}");
}

/// The image's credential goes to the image's registry only; the signatures registry gets its
/// own (or none).
#[test]
fn the_image_credential_is_not_sent_to_the_signatures_registry() {
    const USER: &str = "image-user";
    const SECRET: &str = "image-secret-never-elsewhere";
    const SIG_USER: &str = "sig-user";
    const SIG_SECRET: &str = "sig-secret";
    let image_reg = TestRegistry::start_with_basic_auth(USER, SECRET);
    let sig_reg = TestRegistry::start_with_basic_auth(SIG_USER, SIG_SECRET);
    let front = proxy(sig_reg.host(), |_, resp| resp);
    let (ihost, shost) = (image_reg.host(), front.host());
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = generate_keys(dir.path(), "release");
    let client = image_reg.client_with(|s| {
        s.add_credentials_flag(&format!("{ihost}={USER}:{SECRET}"))
            .unwrap()
    });
    let r = image_reg.reference("private/app:v1");
    push_image(&client, &r, "credentials per origin");
    let sigs = format!("{shost}/signatures/app");
    let image_creds = format!("{ihost}={USER}:{SECRET}");
    let sig_creds = format!("{shost}={SIG_USER}:{SIG_SECRET}");
    let creds = |both: bool| {
        let mut v = vec!["--registry-creds", image_creds.as_str()];
        if both {
            v.extend(["--registry-creds", sig_creds.as_str()]);
        }
        v
    };
    let k = key.to_str().unwrap();
    let rs = r.to_string();
    let mut args = vec!["sign", rs.as_str(), "--key", k];
    args.extend([
        "--registry-plain-http",
        &ihost,
        "--registry-plain-http",
        &shost,
    ]);
    args.extend(creds(true));
    let env = [
        ("OCIGATE_PASSWORD", PASSWORD),
        ("COSIGN_REPOSITORY", sigs.as_str()),
    ];
    let s = ocigate(&args, &env);
    assert_eq!(s.code, 0, "{s:?}");
    let pubkey = public.to_str().unwrap();
    let mut vargs = vec![rs.as_str(), "--key", pubkey, "-o", "json"];
    vargs.extend(creds(true));
    let v = verify_at(&[&ihost, &shost], &vargs, &env);
    assert_eq!(v.code, 0, "{v:?}");
    // Only the image's credential: the signatures registry refuses, an `auth` failure.
    let mut vargs = vec![rs.as_str(), "--key", pubkey, "-o", "json"];
    vargs.extend(creds(false));
    let v = verify_at(&[&ihost, &shost], &vargs, &env);
    assert_eq!(v.code, 1, "{v:?}");
    assert_eq!(v.json()["results"][0]["failure"], "auth", "{v:?}");
    let seen = front.seen();
    assert!(!seen.is_empty(), "the signatures registry was never asked");
    let image_basic = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{SECRET}"))
    };
    for req in &seen {
        let auth = req.header("authorization").unwrap_or("");
        assert!(
            !auth.contains(&image_basic) && !auth.contains(SECRET),
            "the image's credential went to the signatures registry: {} {} {auth:?}",
            req.method,
            req.path
        );
    }
}

/// Copy the manifest `from` names (and its blobs) to `to`, as a proxy cache or a mirror would.
fn copy(client: &Registry, from: &ImageRef, to: &ImageRef) {
    block_on(async {
        let m = client.get_manifest(from).await.unwrap().expect("manifest");
        let parsed = ImageManifest::parse(&m, &from.to_string()).unwrap();
        for d in parsed.config.iter().chain(&parsed.layers) {
            let blob = client.get_blob(from, d).await.unwrap();
            client.put_blob(to, &blob).await.unwrap();
        }
        client
            .put_manifest(to, &m.bytes, &m.media_type)
            .await
            .unwrap();
    });
}

/// A proxied copy keeps the signature made for the upstream name: denied under
/// `matchRepository`, accepted through `remapPrefix` for every repository under the prefix.
#[test]
fn a_proxied_copy_is_accepted_through_remap_prefix() {
    let reg = TestRegistry::start();
    let host = reg.host();
    let client = reg.client();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = generate_keys(dir.path(), "release");
    let upstream = reg.reference("library/nginx:1.27");
    let digest = push_image(&client, &upstream, "upstream nginx");
    assert_eq!(sign(&reg, &key, &upstream.to_string(), &[]).code, 0);
    let proxied = reg.reference("dockerhub/library/nginx:1.27");
    copy(&client, &upstream, &proxied);
    let sig_tag = format!("{}.sig", digest.tag_prefix());
    copy(
        &client,
        &upstream.with_tag(&sig_tag),
        &proxied.with_tag(&sig_tag),
    );

    let policy = dir.path().join("policy.yaml");
    let p = policy.to_str().unwrap();
    let pattern = format!("{host}/dockerhub/**");
    write_policy(&policy, &public, &pattern, "");
    let v = verify_at(
        &[&host],
        &[&proxied.to_string(), "--policy", p, "-o", "json"],
        &[],
    );
    assert_eq!(v.code, 1, "{v:?}");
    assert_eq!(v.json()["results"][0]["failure"], "mismatch", "{v:?}");

    let remap = format!(
        "    signedIdentity: {{remapPrefix: {{prefix: {host}/dockerhub, signedPrefix: {host}}}}}\n"
    );
    write_policy(&policy, &public, &pattern, &remap);
    let v = verify_at(
        &[&host],
        &[&proxied.to_string(), "--policy", p, "-o", "json"],
        &[],
    );
    assert_eq!(v.code, 0, "{v:?}");
    assert_eq!(
        v.json()["results"][0]["signatures"][0]["dockerReference"],
        upstream.name()
    );
    // the prefix ends at a segment boundary: a look-alike repository is not remapped
    let lookalike = reg.reference("dockerhubx/library/nginx:1.27");
    copy(&client, &upstream, &lookalike);
    copy(
        &client,
        &upstream.with_tag(&sig_tag),
        &lookalike.with_tag(&sig_tag),
    );
    write_policy(&policy, &public, &format!("{host}/dockerhub*/**"), &remap);
    let v = verify_at(
        &[&host],
        &[&lookalike.to_string(), "--policy", p, "-o", "json"],
        &[],
    );
    assert_eq!(v.code, 1, "{v:?}");
    assert_eq!(v.json()["results"][0]["failure"], "mismatch", "{v:?}");
}

/// On the webhook a Pod's pull secrets are the request credentials: the one for the signatures
/// registry is used there, and a decision reached with it is not served to a request that
/// could not reach that registry (the decision key holds the signatures repository's
/// credential as well as the image's).
#[test]
fn pull_secrets_reach_the_signatures_registry_and_decisions_stay_with_them() {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use ocigate::engine::{Engine, EngineConfig};
    use ocigate::failure::Failure;
    use ocigate::policy::{CompiledPolicy, Verdict};
    use ocigate::registry::{Credential, RegistrySettings, RequestCredentials, Secret};

    const SIG_USER: &str = "sig-user";
    const SIG_SECRET: &str = "sig-secret-of-the-pod";
    let image_reg = TestRegistry::start();
    let sig_reg = TestRegistry::start_with_basic_auth(SIG_USER, SIG_SECRET);
    let front = proxy(sig_reg.host(), |_, resp| resp);
    let (ihost, shost) = (image_reg.host(), front.host());
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = generate_keys(dir.path(), "release");
    let r = image_reg.reference("apps/pod:v1");
    push_image(&image_reg.client(), &r, "pull secrets elsewhere");
    let sigs = format!("{shost}/signatures/pod");
    let rs = r.to_string();
    let sig_creds = format!("{shost}={SIG_USER}:{SIG_SECRET}");
    let s = ocigate(
        &[
            "sign",
            &rs,
            "--key",
            key.to_str().unwrap(),
            "--registry-plain-http",
            &ihost,
            "--registry-plain-http",
            &shost,
            "--registry-creds",
            &sig_creds,
        ],
        &[
            ("OCIGATE_PASSWORD", PASSWORD),
            ("COSIGN_REPOSITORY", sigs.as_str()),
        ],
    );
    assert_eq!(s.code, 0, "{s:?}");
    let policy = dir.path().join("policy.yaml");
    write_policy(
        &policy,
        &public,
        &format!("{ihost}/apps/**"),
        &format!("    signaturesRepository: {sigs}\n"),
    );
    // The engine has no credentials of its own, as the webhook in a cluster.
    let mut settings = RegistrySettings::default();
    settings.add_plain_http(&ihost).unwrap();
    settings.add_plain_http(&shost).unwrap();
    let engine = Engine::new(
        Registry::new(settings),
        CompiledPolicy::from_file(&policy).unwrap(),
        EngineConfig::default(),
    );
    let pull_secret = |host: &str, password: &str| -> RequestCredentials {
        Arc::new(BTreeMap::from([(
            host.to_string(),
            Credential::new(
                Secret::Basic {
                    username: SIG_USER.into(),
                    password: password.into(),
                },
                "imagePullSecret team-a/regcred",
            ),
        )]))
    };
    let as_pod = |creds: RequestCredentials| {
        block_on(ocigate::registry::with_request_credentials(
            creds,
            engine.check(&r),
        ))
    };
    let d = as_pod(pull_secret(&shost, SIG_SECRET));
    assert_eq!(d.verdict, Verdict::Allow, "{d:?}");
    // Without it: not the cached allow, but the signatures registry's refusal.
    let d = block_on(engine.check(&r));
    assert_eq!(d.verdict, Verdict::Deny, "{d:?}");
    assert_eq!(d.failure, Some(Failure::Auth), "{d:?}");
    assert!(!d.cached, "{d:?}");
    // A pull secret for the image's registry only is not sent to the signatures registry.
    let before = front.seen().len();
    let d = as_pod(pull_secret(&ihost, "image-only-secret"));
    assert_eq!(d.failure, Some(Failure::Auth), "{d:?}");
    let image_only = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(format!("{SIG_USER}:image-only-secret"))
    };
    let seen = front.seen();
    assert!(seen.len() > before, "the signatures registry was not asked");
    for req in &seen[before..] {
        let auth = req.header("authorization").unwrap_or("");
        assert!(
            !auth.contains(&image_only),
            "{} {} {auth:?}",
            req.method,
            req.path
        );
    }
    // And the pod with the secret is served from the cache again.
    let d = as_pod(pull_secret(&shost, SIG_SECRET));
    assert_eq!(d.verdict, Verdict::Allow, "{d:?}");
    assert!(d.cached, "{d:?}");
}
