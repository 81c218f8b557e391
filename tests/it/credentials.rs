//! Credentials stay with their registry. A real registry with basic auth (or the token flow)
//! sits behind the tests' own proxy, which makes its answers point at a second loopback origin
//! (a referrers `Link`, an upload `Location`, a 307 redirect); that origin records everything it
//! receives, and no credential of the registry may ever arrive there.
//!
//! Not covered here: an HTTPS registry whose `Link`/`Location`/redirect downgrades to plain HTTP
//! (refused; unit-tested in `registry::remote`), because the test registries speak plain HTTP.

use ocigate::registry::{Registry, RegistrySettings};

use crate::harness::*;
use crate::proxy::{HttpServer, Request, Response, proxy};

const USER: &str = "leak-test";
const SECRET: &str = "do-not-leak-me";
const OTHER_TOKEN: &str = "token-from-the-other-origin";
const EMPTY_INDEX: &str =
    r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;

/// The second origin: a Bearer challenge naming its own realm, a token from that realm, and
/// `ok` for requests that carry its token.
fn recorder(ok: impl Fn(&Request) -> Response + Send + Sync + 'static) -> HttpServer {
    let realm_port = std::sync::Arc::new(std::sync::OnceLock::<String>::new());
    let realm = realm_port.clone();
    let server = HttpServer::start(move |req| {
        let realm = realm.get().cloned().unwrap_or_default();
        if req.path.starts_with("/token") {
            return Response::new(200)
                .header("Content-Type", "application/json")
                .body(format!(r#"{{"token":"{OTHER_TOKEN}","expires_in":300}}"#));
        }
        if req.header("authorization") == Some(&format!("Bearer {OTHER_TOKEN}")) {
            return ok(req);
        }
        Response::new(401).header(
            "WWW-Authenticate",
            &format!(r#"Bearer realm="{realm}",service="other""#),
        )
    });
    let _ = realm_port.set(server.url("/token"));
    server
}

/// No request to `rec` carried the registry's credentials; only its own token, if anything.
fn assert_nothing_leaked(rec: &HttpServer) {
    let seen = rec.seen();
    assert!(
        !seen.is_empty(),
        "the other origin was never asked: the test proved nothing"
    );
    for r in &seen {
        let auth = r.header("authorization").unwrap_or("");
        assert!(
            auth.is_empty() || auth == format!("Bearer {OTHER_TOKEN}"),
            "credential sent to the other origin: {} {} with {auth:?}",
            r.method,
            r.path
        );
        assert!(
            !String::from_utf8_lossy(&r.body).contains(SECRET),
            "secret in a body sent to the other origin"
        );
    }
}

/// A token handed out by the other origin's realm never goes to the registry.
fn assert_token_not_sent_back(front: &HttpServer) {
    for r in front.seen() {
        assert!(
            !r.header("authorization")
                .is_some_and(|a| a.contains(OTHER_TOKEN)),
            "the other origin's token was sent to the registry: {} {}",
            r.method,
            r.path
        );
    }
}

struct Setup {
    _reg: TestRegistry,
    front: HttpServer,
    reference: String,
    key: std::path::PathBuf,
    public: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Setup {
    fn creds_flag(&self) -> String {
        format!("{}={USER}:{SECRET}", self.front.host())
    }

    fn run(&self, args: &[&str]) -> Run {
        let host = self.front.host();
        let creds = self.creds_flag();
        let mut all = args.to_vec();
        all.extend(["--registry-plain-http", &host, "--registry-creds", &creds]);
        ocigate(&all, &[("OCIGATE_PASSWORD", PASSWORD)])
    }
}

/// A basic-auth registry behind a proxy whose answers `rewrite` may change once `hostile` is
/// set, holding one image signed (legacy format) through the proxy.
fn setup(
    rewrite: impl Fn(&Request, Response) -> Response + Send + Sync + 'static,
    hostile: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Setup {
    let reg = TestRegistry::start_with_basic_auth(USER, SECRET);
    let front = proxy(reg.host(), move |req, resp| {
        if hostile.load(std::sync::atomic::Ordering::SeqCst) {
            rewrite(req, resp)
        } else {
            resp
        }
    });
    let mut settings = RegistrySettings::default();
    settings.add_plain_http(&front.host()).unwrap();
    settings
        .add_credentials_flag(&format!("{}={USER}:{SECRET}", front.host()))
        .unwrap();
    let client = Registry::new(settings);
    let r = ocigate::reference::ImageRef::parse(&format!("{}/private/app:v1", front.host()))
        .expect("reference");
    push_image(&client, &r, "credentials");
    let dir = tempfile::tempdir().expect("tempdir");
    let (key, public) = generate_keys(dir.path(), "k");
    let s = Setup {
        _reg: reg,
        front,
        reference: r.to_string(),
        key,
        public,
        _dir: dir,
    };
    let signed = s.run(&["sign", &s.reference, "--key", s.key.to_str().unwrap()]);
    assert_eq!(signed.code, 0, "{signed:?}");
    s
}

fn flag() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false))
}

#[test]
fn referrers_link_to_another_origin_gets_no_credentials() {
    let rec = recorder(|_| {
        Response::new(200)
            .header("Content-Type", "application/vnd.oci.image.index.v1+json")
            .body(EMPTY_INDEX)
    });
    let next = rec.url("/v2/collect?n=1");
    let hostile = flag();
    // docker-registry 2.8 has no referrers API (404); the proxy answers for it with a page of
    // referrers whose next page lives on the other origin.
    let s = setup(
        move |req, resp| {
            if req.path.contains("/referrers/") {
                Response::new(200)
                    .header("Content-Type", "application/vnd.oci.image.index.v1+json")
                    .header("Link", &format!("<{next}>; rel=\"next\""))
                    .body(EMPTY_INDEX)
            } else {
                resp
            }
        },
        hostile.clone(),
    );
    hostile.store(true, std::sync::atomic::Ordering::SeqCst);
    let v = s.run(&[
        "verify",
        &s.reference,
        "--key",
        s.public.to_str().unwrap(),
        "-o",
        "json",
    ]);
    // The legacy signature still verifies: the next page was followed, anonymously.
    assert_eq!(v.code, 0, "{v:?}");
    assert!(
        rec.seen().iter().any(|r| r.path.starts_with("/v2/collect")),
        "the Link was not followed: {:?}",
        rec.seen()
    );
    assert_nothing_leaked(&rec);
    assert_token_not_sent_back(&s.front);
}

#[test]
fn upload_location_on_another_origin_gets_no_credentials() {
    let rec = HttpServer::start(|_| {
        Response::new(401).header("WWW-Authenticate", "Basic realm=\"other\"")
    });
    let upload = rec.url("/upload/session-1?_state=x");
    let hostile = flag();
    let s = setup(
        move |req, resp| {
            if req.method == "POST" && req.path.contains("/blobs/uploads/") {
                resp.header("Location", &upload)
            } else {
                resp
            }
        },
        hostile.clone(),
    );
    hostile.store(true, std::sync::atomic::Ordering::SeqCst);
    // A second signature needs new blobs; the upload goes where the registry said, bare.
    let run = s.run(&[
        "sign",
        &s.reference,
        "--key",
        s.key.to_str().unwrap(),
        "-a",
        "attempt=2",
    ]);
    assert_ne!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("access denied"), "{run:?}");
    assert!(
        rec.seen().iter().any(|r| r.method == "PUT"),
        "the upload never reached the other origin: {:?}",
        rec.seen()
    );
    for r in rec.seen() {
        assert!(
            r.header("authorization").is_none(),
            "credential sent with the upload: {r:?}"
        );
    }
}

#[test]
fn redirect_to_another_origin_answers_its_challenge_anonymously() {
    let rec = recorder(|_| Response::new(404));
    let target = rec.url("");
    let hostile = flag();
    let s = setup(
        move |req, resp| {
            if req.method == "GET" && req.path.contains("/blobs/sha256:") {
                Response::new(307).header("Location", &format!("{target}{}", req.path))
            } else {
                resp
            }
        },
        hostile.clone(),
    );
    hostile.store(true, std::sync::atomic::Ordering::SeqCst);
    let v = s.run(&[
        "verify",
        &s.reference,
        "--key",
        s.public.to_str().unwrap(),
        "-o",
        "json",
    ]);
    // The blob cannot be had: a registry failure, not "unsigned", and no credential leaked.
    assert_eq!(v.code, 1, "{v:?}");
    assert_eq!(v.json()["results"][0]["failure"], "registry", "{v:?}");
    assert!(
        rec.seen().iter().any(|r| r.path.starts_with("/token")),
        "the other origin's challenge was not answered: {:?}",
        rec.seen()
    );
    assert!(
        rec.seen()
            .iter()
            .filter(|r| r.path.starts_with("/token"))
            .all(|r| r.header("authorization").is_none()),
        "credentials sent to the other origin's token realm"
    );
    assert_nothing_leaked(&rec);
    assert_token_not_sent_back(&s.front);
}

#[test]
fn host_spellings_do_not_dodge_a_rule() {
    let reg = TestRegistry::start();
    let port = reg.host().rsplit_once(':').unwrap().1.to_string();
    let client = reg.client();
    push_image(&client, &reg.reference("acme/app:v1"), "spellings");
    let dir = tempfile::tempdir().unwrap();
    let (_key, public) = generate_keys(dir.path(), "k");
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "apiVersion: ocigate.dev/v1alpha1\nkind: Policy\nnoMatch: allow\n\
             keys: [{{name: k, path: {}}}]\n\
             rules:\n  - name: acme\n    images: [\"localhost:{port}/acme/**\"]\n    \
             authorities: [{{key: {{name: k}}, tlog: skip}}]\n",
            public.display()
        ),
    )
    .unwrap();
    // The plain-HTTP setting is spelled differently from every reference, on purpose.
    let plain = format!("LocalHost:{port}");
    for spelling in [
        format!("localhost:{port}/acme/app:v1"),
        format!("LOCALHOST:{port}/acme/app:v1"),
        format!("LocalHost:{port}/acme/app:v1"),
        format!("localhost.:{port}/acme/app:v1"),
    ] {
        let v = ocigate(
            &[
                "verify",
                &spelling,
                "--policy",
                policy.to_str().unwrap(),
                "--registry-plain-http",
                &plain,
                "-o",
                "json",
            ],
            &[],
        );
        // The image is unsigned: the rule applies and denies; "no rule matches" would allow.
        assert_eq!(v.code, 1, "{spelling}: {v:?}");
        let res = &v.json()["results"][0];
        assert_eq!(res["verdict"], "deny", "{spelling}: {v:?}");
        assert_eq!(res["rule"], "acme", "{spelling}: {v:?}");
        assert_eq!(
            res["reference"],
            format!("localhost:{port}/acme/app:v1"),
            "{spelling}: the canonical reference"
        );
    }
}
