//! Hostile and broken registry content: anyone with push rights can write a signature manifest
//! (no signing key needed), and a misconfigured proxy can answer anything. The registry is the
//! real docker-registry; what a pusher can plant is pushed to it, and what only a broken
//! registry or proxy sends is changed on the wire by the tests' own proxy (tests/it/proxy.rs).
//!
//! Each test asserts the verdict, the failure class and the reason's text, and where the point
//! is the cost, a generous upper bound on the elapsed time and the peak RSS of the `ocigate`
//! process (read by GNU time). The limits checked here are documented in README.md ("Limits").

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ocigate::reference::{Digest, ImageRef};
use ocigate::registry::{Descriptor, ImageManifest, OCI_INDEX, OCI_MANIFEST, Registry};

use crate::harness::*;
use crate::proxy::{HttpServer, Request, Response, proxy};

const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
const SIGNATURE: &str = "dev.cosignproject.cosign/signature";
const BUNDLE_V03: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
const FOUR_MIB: usize = 4 << 20;
/// Peak RSS allowed to one `ocigate verify` here: far above what it needs (about 10 MiB), far
/// below what unbounded fetching took (1.2 GB for 300 layers naming one 4 MiB blob).
const PEAK_KIB: u64 = 128 << 10;
/// Wall time allowed to one `ocigate verify` here (it needs well under a second).
const WALL: Duration = Duration::from_secs(30);

/// What one measured run gave.
#[derive(Debug)]
struct Measured {
    run: Run,
    wall: Duration,
    /// Peak RSS in KiB, from GNU time; None when /usr/bin/time is missing (said loudly).
    peak_kib: Option<u64>,
}

impl Measured {
    fn result(&self) -> serde_json::Value {
        self.run.json()["results"][0].clone()
    }

    fn reasons(&self) -> String {
        self.result()["reasons"].to_string()
    }

    /// The elapsed time and peak RSS are under the generous bounds.
    fn within_bounds(&self, what: &str) {
        eprintln!(
            "{what}: {:?}, peak RSS {} KiB",
            self.wall,
            self.peak_kib.map_or("?".into(), |k| k.to_string())
        );
        assert!(
            self.wall < WALL,
            "{what}: took {:?} (bound {WALL:?})",
            self.wall
        );
        match self.peak_kib {
            Some(kib) => assert!(
                kib < PEAK_KIB,
                "{what}: peak RSS {} MiB (bound {} MiB)",
                kib >> 10,
                PEAK_KIB >> 10
            ),
            None if strict() => panic!("{what}: /usr/bin/time (GNU time) is missing in CI"),
            None => eprintln!(
                "NOT CHECKED {what}: /usr/bin/time (GNU time) is missing; the peak-memory bound did NOT run"
            ),
        }
    }
}

/// `ocigate ARGS` with the harness's isolated environment, under GNU time when it is there.
fn measured(args: &[&str]) -> Measured {
    let gnu_time = Path::new("/usr/bin/time");
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("time");
    let mut cmd = if gnu_time.is_file() {
        let mut c = Command::new(gnu_time);
        c.arg("-f")
            .arg("%M")
            .arg("-o")
            .arg(&report)
            .arg(env!("CARGO_BIN_EXE_ocigate"));
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_ocigate"))
    };
    cmd.args(with_ignored_tlog(args)).stdin(Stdio::null());
    for (k, _) in std::env::vars() {
        if k.starts_with("OCIGATE_") || k.starts_with("COSIGN_") || k == "DOCKER_CONFIG" {
            cmd.env_remove(k);
        }
    }
    cmd.env("DOCKER_CONFIG", "/nonexistent-ocigate-test");
    let started = Instant::now();
    let out = cmd.output().expect("run ocigate");
    let wall = started.elapsed();
    let peak_kib = std::fs::read_to_string(&report)
        .ok()
        .and_then(|t| t.lines().last().and_then(|l| l.trim().parse().ok()));
    Measured {
        run: Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        },
        wall,
        peak_kib,
    }
}

/// A fault the front proxy injects: the answer to send instead of the registry's, or None.
type Fault = Box<dyn Fn(&Request) -> Option<Response> + Send + Sync>;

/// A registry behind the tests' proxy (everything, pushes and signing included, goes through
/// the proxy, so signatures name its host), a key pair, and where to put files.
struct Fixture {
    reg: TestRegistry,
    front: HttpServer,
    fault: Arc<Mutex<Option<Fault>>>,
    dir: tempfile::TempDir,
    key: PathBuf,
    public: PathBuf,
}

fn fixture() -> Fixture {
    let reg = TestRegistry::start();
    let fault: Arc<Mutex<Option<Fault>>> = Arc::new(Mutex::new(None));
    let injected = fault.clone();
    let front = proxy(reg.host(), move |req, resp| {
        let fault = injected.lock().unwrap();
        match fault.as_ref().and_then(|f| f(req)) {
            Some(answer) => answer,
            None => resp,
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = generate_keys(dir.path(), "k");
    Fixture {
        reg,
        front,
        fault,
        dir,
        key,
        public,
    }
}

impl Fixture {
    fn host(&self) -> String {
        self.front.host()
    }

    fn client(&self) -> Registry {
        let mut s = ocigate::registry::RegistrySettings::default();
        s.add_plain_http(&self.host()).unwrap();
        Registry::new(s)
    }

    fn reference(&self, repo_tag: &str) -> ImageRef {
        ImageRef::parse(&format!("{}/{repo_tag}", self.host())).unwrap()
    }

    /// From now on, answer what `fault` answers instead of the registry.
    fn inject(&self, fault: impl Fn(&Request) -> Option<Response> + Send + Sync + 'static) {
        *self.fault.lock().unwrap() = Some(Box::new(fault));
    }

    fn heal(&self) {
        *self.fault.lock().unwrap() = None;
    }

    /// Sign `r` with `key` (`format`: "legacy" or "bundle").
    fn sign(&self, key: &Path, r: &ImageRef, format: &str) {
        let s = ocigate(
            &[
                "sign",
                &r.to_string(),
                "--key",
                key.to_str().unwrap(),
                "--format",
                format,
                "--registry-plain-http",
                &self.host(),
            ],
            &[("OCIGATE_PASSWORD", PASSWORD)],
        );
        assert_eq!(s.code, 0, "{s:?}");
    }

    /// Push a small image at `repo_tag` and sign it (`format`: "legacy", "bundle" or "none").
    fn image(&self, repo_tag: &str, format: &str) -> (ImageRef, Digest) {
        let r = self.reference(repo_tag);
        let digest = push_image(&self.client(), &r, repo_tag);
        if format != "none" {
            self.sign(&self.key, &r, format);
        }
        (r, digest)
    }

    /// `ocigate verify REF --key PUB -o json`.
    fn verify_with(&self, r: &ImageRef, public: &Path) -> Measured {
        measured(&[
            "verify",
            &r.to_string(),
            "--key",
            public.to_str().unwrap(),
            "--registry-plain-http",
            &self.host(),
            "-o",
            "json",
        ])
    }

    fn verify(&self, r: &ImageRef) -> Measured {
        self.verify_with(r, &self.public)
    }

    /// Requests the proxy received so far.
    fn seen(&self) -> Vec<Request> {
        self.front.seen()
    }
}

fn push_blob(client: &Registry, r: &ImageRef, data: &[u8]) -> Digest {
    block_on(client.put_blob(r, data)).expect("push blob")
}

/// A legacy signature layer naming `blob` (of `size` bytes), its signature garbage.
fn sig_layer(blob: &Digest, size: usize) -> Descriptor {
    Descriptor {
        media_type: SIMPLE_SIGNING.into(),
        digest: blob.to_string(),
        size: size as u64,
        annotations: Some(BTreeMap::from([(
            SIGNATURE.to_string(),
            "MEUCIQDhostile".to_string(),
        )])),
        artifact_type: None,
    }
}

fn manifest_with(layers: Vec<Descriptor>, config: Descriptor) -> Vec<u8> {
    serde_json::to_vec(&ImageManifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.into()),
        artifact_type: None,
        config: Some(config),
        layers,
        manifests: vec![],
        subject: None,
        annotations: None,
    })
    .unwrap()
}

/// Push a `.sig` manifest for `digest` with `layers` (their blobs must be pushed already).
fn plant_sig(client: &Registry, r: &ImageRef, digest: &Digest, layers: Vec<Descriptor>) {
    let config = b"{}";
    let cd = push_blob(client, r, config);
    let body = manifest_with(
        layers,
        desc("application/vnd.oci.image.config.v1+json", &cd, 2),
    );
    let tag = r.with_tag(&format!("{}.sig", digest.tag_prefix()));
    block_on(client.put_manifest(&tag, &body, OCI_MANIFEST)).expect("push .sig manifest");
}

/// The layers of the `.sig` manifest ocigate signed for `digest`.
fn sig_layers(client: &Registry, r: &ImageRef, digest: &Digest) -> Vec<Descriptor> {
    let tag = r.with_tag(&format!("{}.sig", digest.tag_prefix()));
    let m = block_on(client.get_manifest(&tag)).unwrap().unwrap();
    ImageManifest::parse(&m, "t").unwrap().layers
}

/// GET requests the proxy forwarded for `digest`'s blob.
fn blob_gets(seen: &[Request], digest: &Digest) -> usize {
    seen.iter()
        .filter(|q| q.method == "GET" && q.path.ends_with(&format!("/blobs/{digest}")))
        .count()
}

/// An image whose only legacy signature manifest is 300 layers all naming one 4 MiB blob took
/// 1.2 GB to verify (every layer fetched and held). Now the manifest is rejected for its layer
/// count before any blob is fetched: a rejected candidate with its reason. A valid bundle
/// signature still allows the image; without one the image is denied as a registry failure,
/// never "unsigned".
#[test]
fn a_planted_sig_of_300_layers_on_one_4_mib_blob() {
    let f = fixture();
    let client = f.client();
    let big = vec![b'x'; FOUR_MIB];
    for (repo, format) in [("acme/signed:v1", "bundle"), ("acme/unsigned:v1", "none")] {
        let (r, digest) = f.image(repo, format);
        let blob = push_blob(&client, &r, &big);
        plant_sig(&client, &r, &digest, vec![sig_layer(&blob, FOUR_MIB); 300]);
        let v = f.verify(&r);
        v.within_bounds(repo);
        let reasons = v.reasons();
        let expected = format!(
            "tag {}.sig: not examined: 300 layers, more than the 256 a signature manifest may have",
            digest.tag_prefix()
        );
        assert!(reasons.contains(&expected), "{repo}: {v:?}");
        if format == "bundle" {
            assert_eq!(v.run.code, 0, "{v:?}");
            assert_eq!(v.result()["verdict"], "allow", "{v:?}");
        } else {
            assert_eq!(v.run.code, 1, "{v:?}");
            assert_eq!(v.result()["verdict"], "deny", "{v:?}");
            assert_eq!(v.result()["failure"], "registry", "{v:?}");
            assert!(reasons.contains("cannot tell whether"), "{v:?}");
        }
        assert_eq!(blob_gets(&f.seen(), &blob), 0, "the 4 MiB blob was fetched");
    }
}

/// 18,000 layers aborted the process. Now: refused by count, in bounded time and memory.
#[test]
fn eighteen_thousand_layers_are_refused_unread() {
    let f = fixture();
    let client = f.client();
    let (r, digest) = f.image("acme/many:v1", "bundle");
    let big = vec![b'y'; FOUR_MIB];
    let blob = push_blob(&client, &r, &big);
    plant_sig(
        &client,
        &r,
        &digest,
        vec![sig_layer(&blob, FOUR_MIB); 18_000],
    );
    let v = f.verify(&r);
    v.within_bounds("18,000 layers");
    assert_eq!(v.run.code, 0, "{v:?}");
    assert!(
        v.reasons()
            .contains("not examined: 18000 layers, more than the 256"),
        "{v:?}"
    );
}

/// Layers beside a valid signature that name a blob larger than a simple-signing payload may
/// be (64 KiB) are rejected from their descriptors, without fetching the blob; the valid
/// signature allows the image, and the rejected layers are named with their reason (the
/// first few in the reasons, every one in the discovery notes).
#[test]
fn oversized_signature_layers_beside_a_valid_one_are_rejected_unfetched() {
    let f = fixture();
    let client = f.client();
    let (r, digest) = f.image("acme/app:v1", "legacy");
    let big = vec![b'z'; FOUR_MIB];
    let blob = push_blob(&client, &r, &big);
    let mut layers = sig_layers(&client, &r, &digest);
    assert_eq!(layers.len(), 1);
    layers.extend(vec![sig_layer(&blob, FOUR_MIB); 200]);
    plant_sig(&client, &r, &digest, layers);

    let v = f.verify(&r);
    v.within_bounds("200 oversized layers");
    assert_eq!(v.run.code, 0, "{v:?}");
    let res = v.result();
    assert_eq!(res["verdict"], "allow", "{v:?}");
    let reasons = v.reasons();
    let rejected = format!(
        "tag {}.sig layer 2: not examined: a \\\"{SIMPLE_SIGNING}\\\" layer of 4194304 bytes, \
         more than the 65536 bytes allowed for that media type",
        digest.tag_prefix()
    );
    assert!(reasons.contains(&rejected), "{reasons}");
    assert!(
        reasons.contains("and 192 more signature location(s) not examined"),
        "{reasons}"
    );
    assert!(
        res["discovery"][0]
            .to_string()
            .contains("layer 201 not examined"),
        "{v:?}"
    );
    assert_eq!(blob_gets(&f.seen(), &blob), 0, "the 4 MiB blob was fetched");
}

/// Several layers naming one payload blob: it is fetched once. Two keys signing the same image
/// write the same payload (two layers, one blob); a `.sig` manifest whose 200 layers name one
/// 4 MiB blob and claim it is 300 bytes (the proxy serves it in place of the real one) costs
/// one request, cut off at the 64 KiB limit, and each layer is a rejected candidate.
#[test]
fn a_blob_named_by_many_layers_is_fetched_once() {
    let f = fixture();
    let client = f.client();
    let (r, digest) = f.image("acme/twice:v1", "legacy");
    let (other_key, other_public) = generate_keys(f.dir.path(), "other");
    f.sign(&other_key, &r, "legacy");
    let layers = sig_layers(&client, &r, &digest);
    assert_eq!(layers.len(), 2);
    assert_eq!(layers[0].digest, layers[1].digest, "one payload for both");
    let payload = Digest::parse(&layers[0].digest).unwrap();
    let before = f.seen().len();
    let v = f.verify_with(&r, &other_public);
    assert_eq!(v.run.code, 0, "{v:?}");
    assert_eq!(blob_gets(&f.seen()[before..], &payload), 1);

    let (r2, digest2) = f.image("acme/lying:v1", "none");
    let big = vec![b'w'; FOUR_MIB];
    let blob = push_blob(&client, &r2, &big);
    let config = push_blob(&client, &r2, b"{}");
    let lying = manifest_with(
        vec![sig_layer(&blob, 300); 200],
        desc("application/vnd.oci.image.config.v1+json", &config, 2),
    );
    let sig_path = format!("/manifests/{}.sig", digest2.tag_prefix());
    f.inject(move |req| {
        req.path.ends_with(&sig_path).then(|| {
            Response::new(200)
                .header("Content-Type", OCI_MANIFEST)
                .body(lying.clone())
        })
    });
    let v = f.verify(&r2);
    v.within_bounds("200 layers lying about their size");
    assert_eq!(v.run.code, 1, "{v:?}");
    assert_eq!(v.result()["failure"], "registry", "{v:?}");
    let reasons = v.reasons();
    assert!(
        reasons.contains("layer 1: not examined: its content could not be used")
            && reasons.contains("is larger than the 65536-byte limit"),
        "{reasons}"
    );
    assert!(
        reasons.contains("layer 2: not examined: its blob is the one of layer 1"),
        "{reasons}"
    );
    // 200 rejections are not 200 lines: the rest are counted.
    assert!(
        reasons.contains("… and 195 more rejected signature(s)") && !reasons.contains("layer 200"),
        "{reasons}"
    );
    assert_eq!(blob_gets(&f.seen(), &blob), 1);
}

/// An HTML page answered with 200 for a tag was hashed, taken for the manifest and the image
/// reported "no signatures found". It is a registry failure, whatever Content-Type it claims;
/// what the registry sent is quoted escaped.
#[test]
fn an_html_page_for_a_tag_is_a_registry_failure_not_unsigned() {
    let f = fixture();
    let (r, digest) = f.image("acme/app:v1", "bundle");
    let page = "<html><body>\u{1b}[31mmaintenance</body></html>";
    let serve = |path: String, content_type: &'static str, body: &'static str| {
        move |req: &Request| {
            req.path.ends_with(&path).then(|| {
                Response::new(200)
                    .header("Content-Type", content_type)
                    .body(body)
            })
        }
    };
    for content_type in ["text/html", "application/json"] {
        f.inject(serve("/manifests/v1".into(), content_type, page));
        let v = f.verify(&r);
        assert_eq!(v.run.code, 1, "{v:?}");
        let res = v.result();
        assert_eq!(res["verdict"], "deny", "{v:?}");
        assert_eq!(res["failure"], "registry", "{v:?}");
        let reasons = v.reasons();
        assert!(
            reasons.contains("cannot resolve")
                && reasons.contains("is not a JSON OCI/Docker manifest"),
            "{reasons}"
        );
        let why = match content_type {
            "text/html" => "served as \\\"text/html\\\", which is not a manifest media type",
            _ => "markup, not JSON",
        };
        assert!(reasons.contains(why), "{reasons}");
        assert!(!reasons.contains("no signatures"), "{reasons}");
    }

    // A JSON body naming a media type that is no manifest's: quoted escaped on a terminal.
    let fake = "{\"schemaVersion\":2,\"mediaType\":\"text/html\\u001b[2J\"}";
    f.inject(serve("/manifests/v1".into(), "application/json", fake));
    let text = ocigate(
        &[
            "verify",
            &r.to_string(),
            "--key",
            f.public.to_str().unwrap(),
            "--registry-plain-http",
            &f.host(),
        ],
        &[],
    );
    assert_eq!(text.code, 1, "{text:?}");
    assert!(
        text.stdout
            .contains(r#"mediaType "text/html\u{1b}[2J" is not a manifest media type"#),
        "{text:?}"
    );
    assert!(!text.stdout.contains('\u{1b}'), "{text:?}");

    // An HTML page for the `.sig` tag: a rejected candidate. The bundle still allows the image.
    f.inject(serve(
        format!("/manifests/{}.sig", digest.tag_prefix()),
        "text/html",
        page,
    ));
    let v = f.verify(&r);
    assert_eq!(v.run.code, 0, "{v:?}");
    assert!(
        v.reasons().contains(&format!(
            "tag {}.sig: not examined: its content could not be used",
            digest.tag_prefix()
        )),
        "{v:?}"
    );
    // Without the bundle: denied as a registry failure, not "unsigned".
    f.heal();
    let (u, ud) = f.image("acme/unsigned:v1", "none");
    f.inject(serve(
        format!("/manifests/{}.sig", ud.tag_prefix()),
        "text/html",
        page,
    ));
    let v = f.verify(&u);
    assert_eq!(v.run.code, 1, "{v:?}");
    assert_eq!(v.result()["failure"], "registry", "{v:?}");
}

/// A registry whose referrers API answers with something that is not an image index has
/// failed: denied as a registry failure, never "unsigned" (docker-registry has no referrers
/// API; the proxy answers for it).
#[test]
fn a_referrers_answer_that_is_not_an_index_is_a_registry_failure() {
    let f = fixture();
    let (r, _) = f.image("acme/app:v1", "legacy");
    f.inject(|req| {
        req.path.contains("/referrers/").then(|| {
            Response::new(200)
                .header("Content-Type", "text/html")
                .body("<html>login</html>")
        })
    });
    let v = f.verify(&r);
    assert_eq!(v.run.code, 1, "{v:?}");
    assert_eq!(v.result()["failure"], "registry", "{v:?}");
    let reasons = v.reasons();
    assert!(
        reasons.contains("at referrers API")
            && reasons.contains("served as \\\"text/html\\\", not as an image index"),
        "{reasons}"
    );
}

/// Referrers listed but missing are an inconsistency of the registry, not an absence of
/// signatures: the referrers tag still lists a bundle manifest that was deleted, and a
/// referrers API lists a digest the registry does not have.
#[test]
fn a_listed_referrer_that_is_missing_is_a_registry_inconsistency() {
    let f = fixture();
    let client = f.client();
    let (r, digest) = f.image("acme/app:v1", "bundle");
    let tag = r.with_tag(&digest.tag_prefix());
    let index = block_on(client.get_manifest(&tag)).unwrap().unwrap();
    let listed = ImageManifest::parse(&index, "t").unwrap().manifests;
    assert_eq!(listed.len(), 1);
    let referrer = listed[0].digest.clone();
    let url = format!("http://{}/v2/acme/app/manifests/{referrer}", f.reg.host());
    let deleted = reqwest::blocking::Client::new()
        .delete(&url)
        .send()
        .unwrap();
    assert_eq!(deleted.status().as_u16(), 202, "{deleted:?}");
    let v = f.verify(&r);
    assert_eq!(v.run.code, 1, "{v:?}");
    assert_eq!(v.result()["failure"], "registry", "{v:?}");
    let reasons = v.reasons();
    assert!(
        reasons.contains(&format!(
            "listed as a referrer, but the registry has no manifest {referrer}"
        )),
        "{reasons}"
    );
    assert!(!reasons.contains("no signatures"), "{reasons}");

    // Through a referrers API (the proxy answers for docker-registry).
    let (u, _) = f.image("acme/other:v1", "none");
    let ghost = Digest::sha256_of(b"a referrer nobody pushed");
    let page = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": ghost.to_string(), "size": 500,
                       "artifactType": BUNDLE_V03}],
    })
    .to_string();
    f.inject(move |req| {
        req.path.contains("/referrers/").then(|| {
            Response::new(200)
                .header("Content-Type", OCI_INDEX)
                .body(page.clone())
        })
    });
    let v = f.verify(&u);
    assert_eq!(v.run.code, 1, "{v:?}");
    assert_eq!(v.result()["failure"], "registry", "{v:?}");
    assert!(
        v.reasons().contains(&format!(
            "referrers API {}…: not examined: listed as a referrer, but the registry has no manifest {ghost}",
            &ghost.as_str()[..19]
        )),
        "{v:?}"
    );
}

/// Referrer pages without end were read up to 16 pages and the rest dropped silently (an
/// unsigned verdict could hide signatures on page 17), and any number of referrers was
/// accepted. Now at most 16 pages and 1,024 referrers are read, and the cut is said as a
/// rejected candidate: beside a valid signature the image is allowed and the reason names the
/// cut; with nothing valid it is a registry failure. What the registry named is escaped.
#[test]
fn endless_referrer_pages_and_too_many_referrers_are_cut_and_said() {
    let f = fixture();
    let (signed, _) = f.image("acme/signed:v1", "legacy");
    let (unsigned, _) = f.image("acme/unsigned:v1", "none");
    let entries = |n: usize| -> Vec<serde_json::Value> {
        (0..n)
            .map(|i| {
                serde_json::json!({"mediaType": OCI_MANIFEST,
                    "digest": Digest::sha256_of(format!("sbom {i}").as_bytes()).to_string(),
                    "size": 400, "artifactType": "application/spdx+json\u{1b}[2J"})
            })
            .collect()
    };
    let pages = Arc::new(AtomicUsize::new(0));
    let endless = {
        let pages = pages.clone();
        let all = entries(16 * 3 + 3);
        move |req: &Request| {
            if !req.path.contains("/referrers/") {
                return None;
            }
            let page = pages.fetch_add(1, Ordering::SeqCst) % 16;
            let body = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX,
                "manifests": all[page * 3..page * 3 + 3]})
            .to_string();
            let base = req.path.split('?').next().unwrap_or_default();
            Some(
                Response::new(200)
                    .header("Content-Type", OCI_INDEX)
                    .header("Link", &format!("<{base}?page={}>; rel=\"next\"", page + 1))
                    .body(body),
            )
        }
    };
    f.inject(endless);
    check_cut(&f, &signed, &unsigned, "more than 16 pages of referrers");
    assert_eq!(pages.load(Ordering::SeqCst), 3 * 16, "16 pages per run");

    let many = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": entries(2000)})
    .to_string();
    f.inject(move |req| {
        req.path.contains("/referrers/").then(|| {
            Response::new(200)
                .header("Content-Type", OCI_INDEX)
                .body(many.clone())
        })
    });
    check_cut(&f, &signed, &unsigned, "more than 1024 referrers listed");
}

/// `signed` is allowed and `unsigned` denied as a registry failure, both saying `said`; the
/// notes of `ocigate discover` quote the registry's text escaped.
fn check_cut(f: &Fixture, signed: &ImageRef, unsigned: &ImageRef, said: &str) {
    let v = f.verify(signed);
    v.within_bounds(said);
    assert_eq!(v.run.code, 0, "{v:?}");
    assert!(
        v.reasons().contains(&format!(
            "referrers API: not examined: the list of referrers is incomplete: {said}"
        )),
        "{v:?}"
    );
    let v = f.verify(unsigned);
    assert_eq!(v.run.code, 1, "{v:?}");
    assert_eq!(v.result()["failure"], "registry", "{v:?}");
    assert!(v.reasons().contains(said), "{v:?}");
    let text = ocigate(
        &[
            "discover",
            &unsigned.to_string(),
            "--registry-plain-http",
            &f.host(),
        ],
        &[],
    );
    assert_eq!(text.code, 0, "{text:?}");
    assert!(text.stdout.contains(said), "{text:?}");
    assert!(
        text.stdout.contains(r#"application/spdx+json\u{1b}[2J"#),
        "{text:?}"
    );
    assert!(!text.stdout.contains('\u{1b}'), "{text:?}");
}

/// A manifest larger than 4 MiB is refused unread (its Content-Length says so): for the
/// `.sig` tag a rejected candidate beside a valid bundle.
#[test]
fn a_huge_manifest_is_refused_unread() {
    let f = fixture();
    let (r, digest) = f.image("acme/app:v1", "bundle");
    let huge = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_MANIFEST}\",\"annotations\":{{\"x\":\"{}\"}}}}",
        "a".repeat(6 << 20)
    );
    let sig_path = format!("/manifests/{}.sig", digest.tag_prefix());
    f.inject(move |req| {
        req.path.ends_with(&sig_path).then(|| {
            Response::new(200)
                .header("Content-Type", OCI_MANIFEST)
                .body(huge.clone())
        })
    });
    let v = f.verify(&r);
    v.within_bounds("a 6 MiB .sig manifest");
    assert_eq!(v.run.code, 0, "{v:?}");
    let reasons = v.reasons();
    assert!(
        reasons.contains(&format!(
            "tag {}.sig: not examined: its content could not be used",
            digest.tag_prefix()
        )) && reasons.contains("is larger than the 4194304-byte limit"),
        "{reasons}"
    );
}

/// What one verification fetches in all is bounded (16 MiB): a `.sig` manifest of 3.5 MiB
/// whose 255 planted layers each name a distinct 64 KiB payload passes it. A valid signature
/// in its first layer (fetched first) allows the image; the layers past the budget are
/// rejected candidates saying so. Without the valid signature: a registry failure.
#[test]
fn the_fetch_budget_bounds_one_verification() {
    let f = fixture();
    let client = f.client();
    for (repo, format) in [("acme/signed:v1", "legacy"), ("acme/unsigned:v1", "none")] {
        let (r, digest) = f.image(repo, format);
        let mut layers = if format == "legacy" {
            sig_layers(&client, &r, &digest)
        } else {
            Vec::new()
        };
        let mut i = 0;
        while layers.len() < 256 {
            let mut payload = format!("{repo} planted payload {i} ").into_bytes();
            payload.resize(64 << 10, b'.');
            let d = push_blob(&client, &r, &payload);
            let mut layer = sig_layer(&d, payload.len());
            if let Some(a) = layer.annotations.as_mut() {
                a.insert("padding".into(), "p".repeat(14 << 10));
            }
            layers.push(layer);
            i += 1;
        }
        plant_sig(&client, &r, &digest, layers);
        let v = f.verify(&r);
        v.within_bounds(repo);
        let notes = v.result()["discovery"].to_string();
        assert!(
            notes.contains("would pass the 16777216-byte limit on what one verification fetches"),
            "{repo}: {notes}"
        );
        if format == "legacy" {
            assert_eq!(v.run.code, 0, "{v:?}");
            assert_eq!(v.result()["verdict"], "allow", "{v:?}");
        } else {
            assert_eq!(v.run.code, 1, "{v:?}");
            assert_eq!(v.result()["failure"], "registry", "{v:?}");
        }
    }
}

/// A referrer whose bundle layer is larger than a bundle may be (128 KiB) is rejected from its
/// descriptor, unfetched; a referrer manifest larger than 64 KiB is refused. Beside a valid
/// legacy signature the image is allowed and both are named; with nothing valid it is a
/// registry failure.
#[test]
fn oversized_referrers_are_rejected_candidates() {
    let f = fixture();
    let client = f.client();
    for (repo, format) in [("acme/signed:v1", "legacy"), ("acme/unsigned:v1", "none")] {
        let (r, digest) = f.image(repo, format);
        let subject = desc(OCI_MANIFEST, &digest, 100);
        let config = push_blob(&client, &r, b"{}");
        let referrer = |layer: Descriptor, padding: usize| {
            let mut annotations = BTreeMap::new();
            if padding > 0 {
                annotations.insert("padding".to_string(), "p".repeat(padding));
            }
            serde_json::to_vec(&ImageManifest {
                schema_version: 2,
                media_type: Some(OCI_MANIFEST.into()),
                artifact_type: Some(BUNDLE_V03.into()),
                config: Some(desc("application/vnd.oci.empty.v1+json", &config, 2)),
                layers: vec![layer],
                manifests: vec![],
                subject: Some(subject.clone()),
                annotations: Some(annotations),
            })
            .unwrap()
        };
        let big = vec![b'{'; 1 << 20];
        let big_bundle = push_blob(&client, &r, &big);
        let small = push_blob(&client, &r, b"{\"not\":\"a bundle\"}");
        let manifests = [
            referrer(desc(BUNDLE_V03, &big_bundle, big.len()), 0),
            referrer(desc(BUNDLE_V03, &small, 18), 100 << 10),
        ];
        let mut listed = Vec::new();
        for m in &manifests {
            let d = Digest::sha256_of(m);
            block_on(client.put_manifest(&r.with_digest(d.clone()), m, OCI_MANIFEST)).unwrap();
            let mut entry = desc(OCI_MANIFEST, &d, m.len());
            entry.artifact_type = Some(BUNDLE_V03.into());
            listed.push(entry);
        }
        let index = serde_json::to_vec(&ImageManifest {
            schema_version: 2,
            media_type: Some(OCI_INDEX.into()),
            artifact_type: None,
            config: None,
            layers: vec![],
            manifests: listed.clone(),
            subject: None,
            annotations: None,
        })
        .unwrap();
        block_on(client.put_manifest(&r.with_tag(&digest.tag_prefix()), &index, OCI_INDEX))
            .unwrap();

        let v = f.verify(&r);
        v.within_bounds(repo);
        let reasons = v.reasons();
        let short = |d: &str| format!("{}…", &d[..19]);
        assert!(
            reasons.contains(&format!(
                "referrers tag {} {}: not examined: a \\\"{BUNDLE_V03}\\\" layer of 1048576 bytes, \
                 more than the 131072 bytes allowed for that media type",
                digest.tag_prefix(),
                short(&listed[0].digest)
            )),
            "{reasons}"
        );
        assert!(
            reasons.contains(&format!(
                "referrers tag {} {}: not examined: its content could not be used",
                digest.tag_prefix(),
                short(&listed[1].digest)
            )) && reasons.contains("is larger than the 65536-byte limit"),
            "{reasons}"
        );
        assert_eq!(
            blob_gets(&f.seen(), &big_bundle),
            0,
            "the 1 MiB bundle was fetched"
        );
        if format == "legacy" {
            assert_eq!(v.run.code, 0, "{v:?}");
        } else {
            assert_eq!(v.run.code, 1, "{v:?}");
            assert_eq!(v.result()["failure"], "registry", "{v:?}");
        }
    }
}
