//! Multi-platform images: `sign --recursive`, `verify --platform`, and what a platform
//! manifest left unsigned under a signed index is told.

use crate::harness::*;

fn key_args(public: &std::path::Path) -> Vec<&str> {
    vec!["--key", public.to_str().unwrap()]
}

#[test]
fn sign_recursive_signs_each_platform_manifest_then_the_index() {
    let reg = TestRegistry::start();
    let client = reg.client();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = generate_keys(dir.path(), "release");
    let r = reg.reference("multi/app:v1");
    let (index, children) = push_index(&client, &r, &["linux/amd64", "linux/arm64/v8"]);

    let s = sign(&reg, &key, &r.to_string(), &["--recursive"]);
    assert_eq!(s.code, 0, "{s:?}");
    let lines: Vec<&str> = s.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{s:?}");
    assert!(lines[0].contains(&children[0].to_string()), "{s:?}");
    assert!(lines[1].contains(&children[1].to_string()), "{s:?}");
    // The index last: a failure part-way leaves it unsigned.
    assert!(lines[2].contains(&index.to_string()), "{s:?}");

    // Each platform manifest verifies, by --platform and by its own digest, and the index too.
    for (platform, child) in [("linux/amd64", &children[0]), ("linux/arm64", &children[1])] {
        let mut args = vec![r.to_string(), "--platform".into(), platform.into()];
        args.extend(key_args(&public).iter().map(|s| s.to_string()));
        args.extend(["-o".into(), "json".into()]);
        let v = verify(&reg, &args.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(v.code, 0, "{v:?}");
        let res = &v.json()["results"][0];
        assert_eq!(res["verdict"], "allow", "{v:?}");
        assert_eq!(res["digest"], child.to_string(), "{v:?}");
        assert_eq!(res["platform"]["platform"], platform, "{v:?}");
        assert_eq!(res["platform"]["index"], index.to_string(), "{v:?}");
        // The signature found is the platform manifest's own (its `.sig` tag names it).
        let location = res["signatures"][0]["location"].as_str().unwrap();
        assert!(location.contains(child.hex()), "{v:?}");

        let pinned = r.with_digest(child.clone()).to_string();
        let mut args = vec![pinned.as_str()];
        args.extend(key_args(&public));
        let v = verify(&reg, &args);
        assert_eq!(v.code, 0, "{v:?}");
    }
    let mut args = vec![r.to_string()];
    args.extend(key_args(&public).iter().map(|s| s.to_string()));
    let v = verify(&reg, &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(v.code, 0, "{v:?}");
    assert!(v.stdout.contains(&index.to_string()), "{v:?}");

    // Again: nothing added anywhere.
    let s = sign(&reg, &key, &r.to_string(), &["--recursive"]);
    assert_eq!(s.code, 0, "{s:?}");
    assert_eq!(s.stdout.matches("already signed").count(), 3, "{s:?}");

    // On a single manifest, --recursive signs just it.
    let single = reg.reference("multi/single:v1");
    let d = push_image(&client, &single, "one platform");
    let s = sign(&reg, &key, &single.to_string(), &["--recursive"]);
    assert_eq!(s.code, 0, "{s:?}");
    assert_eq!(s.stdout.lines().count(), 1, "{s:?}");
    assert!(s.stdout.contains(&d.to_string()), "{s:?}");
}

#[test]
fn sign_recursive_writes_bundles_too() {
    let Some(reg) = TestRegistry::start_ferro_or_skip("sign_recursive_writes_bundles_too") else {
        return;
    };
    let client = reg.client();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = generate_keys(dir.path(), "release");
    let r = reg.reference("multi/bundled:v1");
    let (_, children) = push_index(&client, &r, &["linux/amd64", "linux/arm64"]);
    let s = sign(
        &reg,
        &key,
        &r.to_string(),
        &["--recursive", "--format", "bundle"],
    );
    assert_eq!(s.code, 0, "{s:?}");
    assert_eq!(s.stdout.lines().count(), 3, "{s:?}");
    let mut args = vec![r.to_string(), "--platform".into(), "linux/arm64".into()];
    args.extend(key_args(&public).iter().map(|s| s.to_string()));
    args.extend(["-o".into(), "json".into()]);
    let v = verify(&reg, &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(v.code, 0, "{v:?}");
    let res = &v.json()["results"][0];
    assert_eq!(res["digest"], children[1].to_string(), "{v:?}");
    assert_eq!(res["signatures"].as_array().unwrap().len(), 1, "{v:?}");
}

#[test]
fn an_unsigned_platform_manifest_under_a_signed_index_says_so() {
    let reg = TestRegistry::start();
    let client = reg.client();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = generate_keys(dir.path(), "release");
    let r = reg.reference("multi/index-only:v1");
    let (index, children) = push_index(&client, &r, &["linux/amd64", "linux/arm64"]);
    // Signed as cosign signs without --recursive: the index only.
    let s = sign(&reg, &key, &r.to_string(), &[]);
    assert_eq!(s.code, 0, "{s:?}");
    assert!(s.stdout.contains(&index.to_string()), "{s:?}");

    let mut args = vec![r.to_string(), "--platform".into(), "linux/amd64".into()];
    args.extend(key_args(&public).iter().map(|s| s.to_string()));
    let text = verify(&reg, &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(text.code, 1, "{text:?}");
    assert!(text.stdout.starts_with("DENY "), "{text:?}");
    assert!(text.stdout.contains(&children[0].to_string()), "{text:?}");
    assert!(
        text.stdout
            .contains(&format!("the index {index} is signed and passes rule")),
        "{text:?}"
    );
    assert!(text.stdout.contains("sign --recursive"), "{text:?}");

    args.extend(["-o".into(), "json".into()]);
    let v = verify(&reg, &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(v.code, 1, "{v:?}");
    let res = &v.json()["results"][0];
    assert_eq!(res["verdict"], "deny");
    assert_eq!(res["failure"], "unsigned", "{v:?}");
    assert_eq!(res["digest"], children[0].to_string());
    assert_eq!(res["platform"]["index"], index.to_string());

    // Pinned by digest under the tag (`repo:tag@sha256:<platform manifest>`): the tag's
    // index is found and named.
    let pinned = r.with_digest(children[1].clone()).to_string();
    let mut args = vec![pinned.as_str()];
    args.extend(key_args(&public));
    let v = verify(&reg, &args);
    assert_eq!(v.code, 1, "{v:?}");
    assert!(
        v.stdout.contains(&format!(
            "the tag v1 names the index {index}, which lists this manifest (for linux/arm64); the index is signed and passes rule"
        )),
        "{v:?}"
    );
    // By digest alone nothing names the index: plain unsigned.
    let bare_digest = format!("{}@{}", r.name(), children[1]);
    let mut args = vec![bare_digest.as_str()];
    args.extend(key_args(&public));
    let v = verify(&reg, &args);
    assert_eq!(v.code, 1, "{v:?}");
    assert!(
        v.stdout.contains("(unsigned)") && !v.stdout.contains("is signed"),
        "{v:?}"
    );

    // Signed by another key: the index is signed, but not as this rule requires.
    let (_, stranger) = generate_keys(dir.path(), "stranger");
    let mut args = vec![r.to_string(), "--platform".into(), "linux/arm64".into()];
    args.extend(key_args(&stranger).iter().map(|s| s.to_string()));
    let v = verify(&reg, &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(v.code, 1, "{v:?}");
    assert!(
        v.stdout.contains("is signed, though not as rule") && v.stdout.contains("(untrusted)"),
        "{v:?}"
    );

    // Both unsigned: no word about the index.
    let bare = reg.reference("multi/bare:v1");
    push_index(&client, &bare, &["linux/amd64"]);
    let mut args = vec![bare.to_string(), "--platform".into(), "linux/amd64".into()];
    args.extend(key_args(&public).iter().map(|s| s.to_string()));
    let v = verify(&reg, &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(v.code, 1, "{v:?}");
    assert!(!v.stdout.contains("is signed"), "{v:?}");
}

#[test]
fn a_platform_the_index_does_not_list_is_not_found_and_a_bad_one_is_a_usage_error() {
    let reg = TestRegistry::start();
    let client = reg.client();
    let dir = tempfile::tempdir().unwrap();
    let (_, public) = generate_keys(dir.path(), "release");
    let r = reg.reference("multi/two:v1");
    push_index(&client, &r, &["linux/amd64", "linux/arm/v7"]);
    let run = |reference: &str, platform: &str| {
        let mut args = vec![reference, "--platform", platform];
        args.extend(key_args(&public));
        args.extend(["-o", "json"]);
        verify(&reg, &args)
    };

    let v = run(&r.to_string(), "linux/s390x");
    assert_eq!(v.code, 1, "{v:?}");
    let res = &v.json()["results"][0];
    assert_eq!(res["failure"], "not-found", "{v:?}");
    let reason = res["reasons"][0].as_str().unwrap();
    assert!(reason.contains("lists no linux/s390x manifest"), "{v:?}");
    assert!(reason.contains("linux/amd64, linux/arm/v7"), "{v:?}");

    let single = reg.reference("multi/single:v1");
    push_image(&client, &single, "one platform");
    let v = run(&single.to_string(), "linux/amd64");
    assert_eq!(v.code, 1, "{v:?}");
    let res = &v.json()["results"][0];
    assert_eq!(res["failure"], "not-found", "{v:?}");
    assert!(
        res["reasons"][0]
            .as_str()
            .unwrap()
            .contains("is a single manifest, not an index"),
        "{v:?}"
    );

    let v = run(&r.to_string(), "linux");
    assert_eq!(v.code, 2, "{v:?}");
    assert!(v.stderr.contains("os/arch"), "{v:?}");
}

#[test]
fn sign_recursive_refuses_indexes_nested_without_end_and_signs_nothing() {
    let reg = TestRegistry::start();
    let client = reg.client();
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = generate_keys(dir.path(), "release");
    let r = reg.reference("multi/nested:v1");
    // An index of an index of … (6 levels) of one image.
    let (mut digest, _) = push_index(&client, &r.with_tag("level-0"), &["linux/amd64"]);
    for level in 1..=6 {
        let size = block_on(client.get_manifest(&r.with_digest(digest.clone())))
            .unwrap()
            .unwrap()
            .bytes
            .len();
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": ocigate::registry::OCI_INDEX,
            "manifests": [{"mediaType": ocigate::registry::OCI_INDEX, "digest": digest.to_string(), "size": size}],
        });
        let body = serde_json::to_vec(&index).unwrap();
        digest = block_on(client.put_manifest(
            &r.with_tag(&format!("level-{level}")),
            &body,
            ocigate::registry::OCI_INDEX,
        ))
        .unwrap();
    }
    let top = r.with_tag("level-6");
    let s = sign(&reg, &key, &top.to_string(), &["--recursive"]);
    assert_eq!(s.code, 2, "{s:?}");
    assert!(
        s.stderr.contains("indexes nested more than 4 deep"),
        "{s:?}"
    );
    // Nothing was signed: the targets are all found before the first signature.
    let tags = block_on(client.list_tags(&top)).unwrap();
    assert!(!tags.iter().any(|t| t.ends_with(".sig")), "{tags:?}");

    // Four levels are followed: everything under level-3 is signed.
    let s = sign(
        &reg,
        &key,
        &r.with_tag("level-3").to_string(),
        &["--recursive"],
    );
    assert_eq!(s.code, 0, "{s:?}");
    assert_eq!(s.stdout.lines().count(), 5, "{s:?}");
}
