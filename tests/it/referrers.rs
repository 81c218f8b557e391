//! The OCI 1.1 referrers API, on a registry that serves it (ferro-oci-server; docker-registry
//! 2.8 has none, so the other tests exercise the referrers-tag fallback): ocigate's and cosign
//! 3's bundle signatures are attached as referrers, no referrers tag is written, and discovery
//! finds them through the API.

use crate::harness::*;
use crate::proxy::{HttpServer, forward};

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

/// Whether `path` asks for the referrers tag of some digest (`…/manifests/sha256-<hex>`, not
/// its `.sig` or `.att` tag).
fn asks_referrers_tag(path: &str) -> bool {
    path.rsplit_once("/manifests/sha256-")
        .is_some_and(|(_, hex)| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// An image (by tag, through `front`) signed with `ocigate sign --format bundle`.
fn bundle_signed(
    reg: &TestRegistry,
    front: &HttpServer,
    repo: &str,
    key: &std::path::Path,
) -> String {
    let upstream = ocigate::reference::ImageRef::parse(&format!("{}/{repo}", reg.host())).unwrap();
    push_image(&reg.client(), &upstream, repo);
    let r = format!("{}/{repo}", front.host());
    let host = front.host();
    let args = [
        "sign",
        &r,
        "--key",
        key.to_str().unwrap(),
        "--format",
        "bundle",
    ];
    let mut args = args.to_vec();
    args.extend(["--registry-plain-http", &host]);
    let s = ocigate(&args, &[("OCIGATE_PASSWORD", PASSWORD)]);
    assert_eq!(s.code, 0, "{s:?}");
    r
}

/// On a registry not yet known to have a referrers API, the referrers tag is asked alongside
/// the API, not after its 404: a bundle on a registry without the API (docker-registry) costs
/// one round trip less. The proxy holds the API request (up to 3 s) until the tag request has
/// come; before the change the tag was asked only once the API had answered.
#[test]
fn the_referrers_tag_is_asked_alongside_the_api() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let reg = TestRegistry::start();
    let upstream = reg.host();
    let (armed, tag_asked, overlapped) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let (a, t, o) = (armed.clone(), tag_asked.clone(), overlapped.clone());
    let front = HttpServer::start(move |req| {
        if asks_referrers_tag(&req.path) {
            t.store(true, Ordering::SeqCst);
        }
        if a.load(Ordering::SeqCst) && req.path.contains("/referrers/") {
            let until = std::time::Instant::now() + std::time::Duration::from_secs(3);
            while !t.load(Ordering::SeqCst) && std::time::Instant::now() < until {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            o.store(t.load(Ordering::SeqCst), Ordering::SeqCst);
        }
        forward(&upstream, req)
    });
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = generate_keys(dir.path(), "k");
    let r = bundle_signed(&reg, &front, "ahead/app:v1", &key);
    tag_asked.store(false, Ordering::SeqCst);
    armed.store(true, Ordering::SeqCst);

    let host = front.host();
    let pk = public.to_str().unwrap();
    let args = ["verify", &r, "--key", pk, "--insecure-ignore-tlog"];
    let mut args = args.to_vec();
    args.extend(["--registry-plain-http", &host, "-o", "json"]);
    let v = ocigate(&args, &[]);
    assert_eq!(v.code, 0, "{v:?}");
    let sig = &v.json()["results"][0]["signatures"][0];
    assert!(
        sig["location"]
            .as_str()
            .unwrap()
            .starts_with("referrers tag"),
        "{v:?}"
    );
    assert!(
        overlapped.load(Ordering::SeqCst),
        "the referrers tag was not asked while the referrers API was pending"
    );
}

/// Once a registry has answered a referrers list, its referrers tag is not asked again by the
/// process: of two images checked one after another on ferro-oci-server, only the first one's
/// tag is looked up (ahead of the API's answer), and both bundles are found through the API.
#[test]
fn a_registry_with_the_referrers_api_is_remembered() {
    let Some(reg) =
        TestRegistry::start_ferro_or_skip("a_registry_with_the_referrers_api_is_remembered")
    else {
        return;
    };
    let upstream = reg.host();
    let front = HttpServer::start(move |req| forward(&upstream, req));
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = generate_keys(dir.path(), "k");
    let first = bundle_signed(&reg, &front, "known/one:v1", &key);
    let second = bundle_signed(&reg, &front, "known/two:v1", &key);
    let before = front.seen().len();

    let host = front.host();
    let pk = public.to_str().unwrap();
    let args = [
        "verify",
        &first,
        &second,
        "--key",
        pk,
        "--insecure-ignore-tlog",
    ];
    let mut args = args.to_vec();
    args.extend(["--jobs", "1", "--registry-plain-http", &host, "-o", "json"]);
    let v = ocigate(&args, &[]);
    assert_eq!(v.code, 0, "{v:?}");
    for result in v.json()["results"].as_array().unwrap() {
        let location = result["signatures"][0]["location"].as_str().unwrap();
        assert!(location.starts_with("referrers API"), "{v:?}");
    }
    let seen = front.seen();
    let tags: Vec<&str> = seen[before..]
        .iter()
        .map(|r| r.path.as_str())
        .filter(|p| asks_referrers_tag(p))
        .collect();
    assert_eq!(tags.len(), 1, "{tags:?}");
    assert!(tags[0].starts_with("/v2/known/one/"), "{tags:?}");
}
