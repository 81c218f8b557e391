//! Registries that misbehave (issue #8, point 4): the tests' own proxy sits in front of the
//! real registry and injects rate limits, server errors, dropped connections, slow answers and
//! endless referrer pages. Each test asserts the verdict, the failure class, the message and a
//! generous bound on the elapsed time (never a tight timing).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ocigate::reference::ImageRef;

use crate::harness::*;
use crate::proxy::{DROP, HttpServer, Request, Response, STALL_BODY_MS, proxy};

struct Setup {
    _reg: TestRegistry,
    front: HttpServer,
    reference: String,
    public: std::path::PathBuf,
    dir: tempfile::TempDir,
}

/// A signed image behind a proxy whose answers `rewrite` may change once it is signed (signed
/// through the proxy, so that the signature names the proxy's host).
fn behind(rewrite: impl Fn(&Request, Response) -> Response + Send + Sync + 'static) -> Setup {
    let reg = TestRegistry::start();
    let armed = Arc::new(AtomicBool::new(false));
    let a = armed.clone();
    let front = proxy(reg.host(), move |req, resp| {
        if a.load(Ordering::SeqCst) {
            rewrite(req, resp)
        } else {
            resp
        }
    });
    let reference = format!("{}/acme/app:v1", front.host());
    let r = ImageRef::parse(&reference).unwrap();
    let client = reg.client_with(|s| s.add_plain_http(&front.host()).unwrap());
    push_image(&client, &r, "faults");
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = generate_keys(dir.path(), "k");
    let s = ocigate(
        &["sign", &reference, "--key", key.to_str().unwrap()],
        &[("OCIGATE_PASSWORD", PASSWORD)],
    );
    assert_eq!(s.code, 0, "{s:?}");
    armed.store(true, Ordering::SeqCst);
    Setup {
        _reg: reg,
        front,
        reference,
        public,
        dir,
    }
}

fn verify_timed(s: &Setup, extra: &[&str]) -> (Run, Duration) {
    let mut args = vec![
        "verify",
        &s.reference,
        "--key",
        s.public.to_str().unwrap(),
        "-o",
        "json",
    ];
    args.extend_from_slice(extra);
    let t = Instant::now();
    let v = ocigate(&args, &[]);
    (v, t.elapsed())
}

fn is_tag_manifest(req: &Request) -> bool {
    req.path.ends_with("/manifests/v1")
}

#[test]
fn retry_after_is_honoured_and_transient_failures_are_retried() {
    // The tag answers 503 "Retry-After: 1" once, then a dropped connection, then works.
    let n = Arc::new(AtomicUsize::new(0));
    let c = n.clone();
    let s = behind(move |req, resp| {
        if !is_tag_manifest(req) {
            return resp;
        }
        match c.fetch_add(1, Ordering::SeqCst) {
            0 => Response::new(503).header("Retry-After", "1"),
            1 => Response::new(DROP),
            _ => resp,
        }
    });
    let (v, took) = verify_timed(&s, &[]);
    assert_eq!(v.code, 0, "{v:?}");
    assert_eq!(n.load(Ordering::SeqCst), 3, "two retries of the tag");
    assert!(
        took >= Duration::from_millis(900),
        "Retry-After was not waited: {took:?}"
    );
    assert!(took < Duration::from_secs(20), "{took:?}");
}

#[test]
fn a_rate_limit_beyond_the_deadline_is_reported_not_waited_for() {
    let s = behind(|req, resp| {
        if is_tag_manifest(req) {
            Response::new(429)
                .header("Retry-After", "120")
                .header("Content-Type", "application/json")
                .body(r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}"#)
        } else {
            resp
        }
    });
    let (v, took) = verify_timed(&s, &["--deadline", "10"]);
    assert_eq!(v.code, 1, "{v:?}");
    let res = &v.json()["results"][0];
    assert_eq!(res["failure"], "rate-limited", "{v:?}");
    let reason = res["reasons"][0].as_str().unwrap();
    assert!(
        reason.contains("HTTP 429") && reason.contains("retry after 120 s"),
        "{reason}"
    );
    assert!(took < Duration::from_secs(8), "{took:?}");
}

#[test]
fn server_errors_are_retried_a_bounded_number_of_times() {
    let n = Arc::new(AtomicUsize::new(0));
    let c = n.clone();
    let s = behind(move |req, resp| {
        if is_tag_manifest(req) {
            c.fetch_add(1, Ordering::SeqCst);
            Response::new(500)
        } else {
            resp
        }
    });
    let (v, took) = verify_timed(&s, &[]);
    assert_eq!(v.code, 1, "{v:?}");
    assert_eq!(v.json()["results"][0]["failure"], "registry", "{v:?}");
    assert_eq!(n.load(Ordering::SeqCst), 3, "one try and two retries");
    assert!(took < Duration::from_secs(20), "{took:?}");
}

#[test]
fn a_slow_answer_is_a_timeout_not_unreachable() {
    let s = behind(|req, resp| {
        if is_tag_manifest(req) {
            std::thread::sleep(Duration::from_secs(4));
        }
        resp
    });
    let (v, took) = verify_timed(&s, &["--registry-timeout", "1"]);
    assert_eq!(v.code, 1, "{v:?}");
    let res = &v.json()["results"][0];
    assert_eq!(res["failure"], "timeout", "{v:?}");
    let reason = res["reasons"][0].as_str().unwrap();
    assert!(reason.contains("no answer within 1s"), "{reason}");
    assert!(!reason.contains("unreachable"), "{reason}");
    assert!(took < Duration::from_secs(15), "{took:?}");
}

/// Headers on time, then a body that stops arriving: the registry timed out, it is not
/// unreachable (class `timeout`, not `registry`).
#[test]
fn a_body_that_stops_arriving_is_a_timeout_not_unreachable() {
    let s = behind(|req, resp| {
        if is_tag_manifest(req) {
            resp.header(STALL_BODY_MS, "4000")
        } else {
            resp
        }
    });
    let (v, took) = verify_timed(&s, &["--registry-timeout", "1"]);
    assert_eq!(v.code, 1, "{v:?}");
    let res = &v.json()["results"][0];
    assert_eq!(res["failure"], "timeout", "{v:?}");
    let reason = res["reasons"][0].as_str().unwrap();
    assert!(!reason.contains("unreachable"), "{reason}");
    assert!(took < Duration::from_secs(15), "{took:?}");
}

#[test]
fn endless_slow_referrer_pages_cannot_stretch_a_verification_past_its_deadline() {
    // The registry "has" a referrers API whose pages each take 1.5 s and always link a next.
    let s = behind(|req, resp| {
        if req.path.contains("/referrers/") {
            std::thread::sleep(Duration::from_millis(1500));
            let page: usize = req
                .path
                .split("page=")
                .nth(1)
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            let base = req.path.split('?').next().unwrap_or_default().to_string();
            return Response::new(200)
                .header("Content-Type", "application/vnd.oci.image.index.v1+json")
                .header("Link", &format!("<{base}?page={}>; rel=\"next\"", page + 1))
                .body(r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#);
        }
        resp
    });
    let (v, took) = verify_timed(&s, &["--deadline", "4", "--registry-timeout", "5"]);
    assert_eq!(v.code, 1, "{v:?}");
    let res = &v.json()["results"][0];
    assert_eq!(res["failure"], "timeout", "{v:?}");
    let reason = res["reasons"][0].as_str().unwrap();
    assert!(
        reason.contains("timed out") && reason.contains("after 4 s"),
        "{reason}"
    );
    assert!(took < Duration::from_secs(12), "{took:?}");
    assert!(
        s.front.seen().len() < 20,
        "{} requests",
        s.front.seen().len()
    );
}

/// A registry slower than the webhook's deadline: `/mutate` cannot verify the tag in time and
/// refuses the Pod (failure `timeout`, counted), rather than let it through unpinned for
/// `/validate` to admit once the verification, which runs on in the background, has filled the
/// cache. A retry after that is answered from the cache and pinned.
#[test]
fn a_pod_mutate_cannot_verify_in_time_is_refused_not_admitted_unpinned() {
    let test = "a_pod_mutate_cannot_verify_in_time_is_refused_not_admitted_unpinned";
    let Some(k) = crate::webhook::kube_tools_or_skip(test) else {
        return;
    };
    // The signature manifest is slow: the tag resolves at once, the verification started for it
    // outlives the request's deadline.
    let s = behind(|req, resp| {
        if req.path.ends_with(".sig") {
            std::thread::sleep(Duration::from_millis(1500));
        }
        resp
    });
    let d = s.dir.path();
    let policy = d.join("policy.yaml");
    write_key_policy(
        &policy,
        &s.public,
        "apps",
        &format!("{}/acme/**", s.front.host()),
    );
    let tls = make_tls(d);
    let server = crate::webhook::start_serve(&policy, &tls, &s.front.host(), &["--deadline", "1s"]);
    let pod = crate::webhook::write(
        d,
        "pod.yaml",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: app, namespace: apps}}\n\
             spec:\n  containers:\n  - {{name: app, image: \"{}\"}}\n",
            s.reference
        ),
    );
    let mutate =
        || crate::webhook::kwhclient_at(&k, &server, "/mutate", &tls, &pod, &["-mode", "mutating"]);
    let first = mutate();
    assert_eq!(first.code, 1, "{first:?}");
    assert!(first.stdout.contains("[timeout]"), "{first:?}");
    assert!(!first.stdout.contains("@sha256:"), "{first:?}");
    let metrics = crate::webhook::http_get(server.metrics, "/metrics");
    assert!(
        metrics.contains(
            "ocigate_decisions_total{verdict=\"deny\",failure=\"timeout\",rule=\"apps\",kind=\"Pod\"} 1"
        ),
        "{metrics}"
    );
    // The verification finishes in the background; a retry is then answered and pinned.
    let mut retry = mutate();
    for _ in 0..40 {
        if retry.code == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
        retry = mutate();
    }
    assert_eq!(retry.code, 0, "{retry:?}");
    assert!(
        retry.stdout.contains(&format!("{}@sha256:", s.reference)),
        "{retry:?}"
    );
}

/// An error answer whose body trickles (headers on time, then nothing for a minute) does not
/// hold a command for as long as the registry keeps the connection alive: its body is waited
/// for a short while, and the status is the error. `sign` has no overall deadline, so before
/// the change it waited the whole minute.
#[test]
fn a_trickling_error_body_does_not_hold_a_push() {
    let s = behind(|req, resp| {
        if req.method == "POST" {
            Response::new(403)
                .header("Content-Type", "application/json")
                .body(format!(
                    r#"{{"errors":[{{"code":"DENIED","message":"{}"}}]}}"#,
                    "x".repeat(8000)
                ))
                .header(STALL_BODY_MS, "60000")
        } else {
            resp
        }
    });
    let key = s.dir.path().join("k.key");
    let t = Instant::now();
    let run = ocigate(
        &[
            "sign",
            &s.reference,
            "--key",
            key.to_str().unwrap(),
            "-a",
            "again=yes",
        ],
        &[("OCIGATE_PASSWORD", PASSWORD)],
    );
    let took = t.elapsed();
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("HTTP 403"), "{run:?}");
    assert!(took < Duration::from_secs(30), "{took:?}");
}
