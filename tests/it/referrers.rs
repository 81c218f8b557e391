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
