//! The OCI 1.1 referrers API, on a registry that serves it (ferro-oci-server; docker-registry
//! 2.8 has none, so the other tests exercise the referrers-tag fallback): ocigate's and cosign
//! 3's bundle signatures are attached as referrers, no referrers tag is written, and discovery
//! finds them through the API.

use crate::harness::*;

#[test]
fn bundle_signatures_through_the_referrers_api() {
    let Some(reg) =
        TestRegistry::start_ferro_or_skip("bundle_signatures_through_the_referrers_api")
    else {
        return;
    };
    let client = reg.client();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = generate_keys(dir.path(), "k");
    let r = reg.reference("api/app:v1");
    let digest = push_image(&client, &r, "referrers api");

    let s = sign(
        &reg,
        &key,
        &r.to_string(),
        &["--format", "bundle", "-a", "env=prod"],
    );
    assert_eq!(s.code, 0, "{s:?}");
    assert!(s.stdout.contains("(referrers API)"), "{s:?}");
    // No fallback tag was written: the registry indexes the referrer from its subject.
    let tag = reg.reference(&format!("api/app:{}", digest.tag_prefix()));
    assert!(block_on(client.get_manifest(&tag)).unwrap().is_none());

    let host = reg.host();
    let d = ocigate(
        &["discover", &r.to_string(), "--registry-plain-http", &host],
        &[],
    );
    assert_eq!(d.code, 0, "{d:?}");
    assert!(d.stdout.contains("referrers API: 1 signature(s)"), "{d:?}");
    assert!(!d.stdout.contains("referrers tag"), "{d:?}");

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
            .starts_with("referrers API"),
        "{v:?}"
    );
    let (_, other) = generate_keys(dir.path(), "other");
    let v = verify(&reg, &[&r.to_string(), "--key", other.to_str().unwrap()]);
    assert_eq!(v.code, 1, "{v:?}");
    assert!(v.stdout.contains("not signed by this key"), "{v:?}");

    // Legacy signatures on the same registry sit beside the referrers.
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
    assert_eq!(
        v.json()["results"][0]["signatures"]
            .as_array()
            .unwrap()
            .len(),
        2,
        "{v:?}"
    );
}

/// The referrers API behind authentication (nginx basic auth in front of the registry):
/// without credentials the lookup is denied and reported as a registry failure, never as
/// "unsigned"; with them the bundle is found through the API.
#[test]
fn referrers_api_behind_basic_auth() {
    let Some(reg) = TestRegistry::start_ferro_or_skip("referrers_api_behind_basic_auth") else {
        return;
    };
    let Some(proxy) =
        AuthProxy::start_or_skip("referrers_api_behind_basic_auth", &reg, "bot", "pw-123")
    else {
        return;
    };
    let host = proxy.host();
    let creds = format!("{host}=bot:pw-123");
    let mut settings = ocigate::registry::RegistrySettings::default();
    settings.add_plain_http(&host).unwrap();
    settings.add_credentials_flag(&creds).unwrap();
    let client = ocigate::registry::Registry::new(settings);
    let r = ocigate::reference::ImageRef::parse(&format!("{host}/private/app:v1")).unwrap();
    push_image(&client, &r, "behind auth");
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = generate_keys(dir.path(), "k");
    let s = ocigate(
        &[
            "sign",
            &r.to_string(),
            "--key",
            key.to_str().unwrap(),
            "--format",
            "bundle",
            "--registry-plain-http",
            &host,
            "--registry-creds",
            &creds,
        ],
        &[("OCIGATE_PASSWORD", PASSWORD)],
    );
    assert_eq!(s.code, 0, "{s:?}");
    assert!(s.stdout.contains("(referrers API)"), "{s:?}");

    let pk = public.to_str().unwrap();
    let reference = r.to_string();
    let base = [
        "verify",
        &reference,
        "--key",
        pk,
        "--registry-plain-http",
        &host,
        "-o",
        "json",
    ];
    let v = ocigate(&base, &[]);
    assert_eq!(v.code, 1, "{v:?}");
    let res = &v.json()["results"][0];
    assert_eq!(res["failure"], "auth", "{v:?}");
    assert!(
        res["reasons"][0]
            .as_str()
            .unwrap()
            .contains("access denied"),
        "{v:?}"
    );

    let wrong = format!("{host}=bot:nope");
    let mut args = base.to_vec();
    args.extend(["--registry-creds", &wrong]);
    let v = ocigate(&args, &[]);
    assert_eq!(v.code, 1, "{v:?}");
    assert_eq!(v.json()["results"][0]["failure"], "auth", "{v:?}");

    let mut args = base.to_vec();
    args.extend(["--registry-creds", &creds]);
    let v = ocigate(&args, &[]);
    assert_eq!(v.code, 0, "{v:?}");
    let sig = &v.json()["results"][0]["signatures"][0];
    assert!(
        sig["location"]
            .as_str()
            .unwrap()
            .starts_with("referrers API"),
        "{v:?}"
    );
}
