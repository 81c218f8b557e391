//! Work is bounded process-wide (issue #15, point 3): an object naming too many artifacts is
//! denied before any registry is asked; a registry host that never answers receives at most
//! `--registry-max-connections` connections however many requests are waiting, work that
//! outlived its request included; and a small request is served in its turn while a large
//! one occupies the host.

use std::io::Read as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::proxy::{HttpServer, Response, forward};
use crate::webhook::{kube_tools_or_skip, kwhclient, start_serve};

/// A Pod whose containers name `images`.
fn pod_with(name: &str, images: &[String]) -> String {
    let mut y = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: apps\nspec:\n  containers:\n"
    );
    for (i, image) in images.iter().enumerate() {
        y.push_str(&format!("  - name: c{i}\n    image: {image}\n"));
    }
    y
}

fn images(host: &str, n: usize, prefix: &str) -> Vec<String> {
    (0..n)
        .map(|i| format!("{host}/apps/{prefix}{i}:v1"))
        .collect()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// A key policy over `host/apps/**`, and the webhook's TLS material, in `dir`.
fn setup(dir: &Path, host: &str) -> (PathBuf, Tls) {
    let (_, public) = generate_keys(dir, "k");
    let policy = dir.join("policy.yaml");
    write_key_policy(&policy, &public, "apps", &format!("{host}/apps/**"));
    (policy, make_tls(dir))
}

const LIMIT_SAID: &str = "names more than 256 distinct OCI artifacts (or more than 1024 image fields) to check, more than one object may name; none was checked";

#[test]
fn an_object_naming_more_than_256_artifacts_is_denied_before_any_registry_is_asked() {
    let recorder = HttpServer::start(|_| Response::new(404));
    let host = recorder.host();
    let dir = tempfile::tempdir().unwrap();
    let (policy, tls) = setup(dir.path(), &host);
    let too_many = write(
        dir.path(),
        "pod.yaml",
        &pod_with("many", &images(&host, 257, "app")),
    );

    // verify --manifests: the object is one invalid result with the reason.
    let run = ocigate(
        &[
            "verify",
            "--manifests",
            too_many.to_str().unwrap(),
            "--policy",
            policy.to_str().unwrap(),
            "--registry-plain-http",
            &host,
            "-o",
            "json",
        ],
        &[],
    );
    assert_eq!(run.code, 1, "{run:?}");
    let results = run.json()["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 1, "{run:?}");
    assert_eq!(results[0]["failure"], "invalid", "{run:?}");
    let reasons = results[0]["reasons"].to_string();
    assert!(reasons.contains(LIMIT_SAID), "{reasons}");
    assert!(recorder.seen().is_empty(), "{:?}", recorder.seen());

    // The webhook, called by Kubernetes' admission code.
    let Some(k) = kube_tools_or_skip("an_object_naming_more_than_256_artifacts_is_denied") else {
        return;
    };
    let server = start_serve(&policy, &tls, &host, &[]);
    let run = kwhclient(&k, &server, &tls, &too_many, &[]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("DENIED"), "{run:?}");
    assert!(run.stdout.contains(LIMIT_SAID), "{run:?}");
    assert!(recorder.seen().is_empty(), "{:?}", recorder.seen());
    // 256 are checked (the host answers "not found" for each).
    let at_limit = write(
        dir.path(),
        "256.yaml",
        &pod_with("limit", &images(&host, 256, "app")),
    );
    let run = kwhclient(&k, &server, &tls, &at_limit, &[]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(!run.stdout.contains(LIMIT_SAID), "{run:?}");
    assert!(run.stdout.contains("[not-found]"), "{run:?}");
}

/// A host that accepts connections and never answers; it counts the connections open at once.
struct BlackHole {
    port: u16,
    open: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl BlackHole {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (open, peak, accepted, stop) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (o, p, a, s) = (open.clone(), peak.clone(), accepted.clone(), stop.clone());
        std::thread::spawn(move || {
            let until = Instant::now() + Duration::from_secs(300);
            while !s.load(Ordering::Relaxed) && Instant::now() < until {
                let Ok((mut stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                };
                a.fetch_add(1, Ordering::Relaxed);
                let now = o.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(now, Ordering::SeqCst);
                let (o, s) = (o.clone(), s.clone());
                std::thread::spawn(move || {
                    // Read whatever comes, answer nothing, until the client closes.
                    stream.set_nonblocking(false).ok();
                    stream
                        .set_read_timeout(Some(Duration::from_millis(200)))
                        .ok();
                    let mut buf = [0u8; 4096];
                    let until = Instant::now() + Duration::from_secs(300);
                    while !s.load(Ordering::Relaxed) && Instant::now() < until {
                        match stream.read(&mut buf) {
                            Ok(0) => break,
                            Ok(_) => {}
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                                ) => {}
                            Err(_) => break,
                        }
                    }
                    o.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        BlackHole {
            port,
            open,
            peak,
            accepted,
            stop,
        }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[test]
fn a_host_that_never_answers_gets_at_most_the_cap_of_connections() {
    let Some(k) = kube_tools_or_skip("a_host_that_never_answers_gets_at_most_the_cap") else {
        return;
    };
    let hole = BlackHole::start();
    let host = hole.host();
    let dir = tempfile::tempdir().unwrap();
    let (policy, tls) = setup(dir.path(), &host);
    const CAP: usize = 3;
    let server = start_serve(
        &policy,
        &tls,
        &host,
        &[
            "--registry-max-connections",
            &CAP.to_string(),
            "--deadline",
            "2s",
            "--registry-timeout",
            "20",
        ],
    );
    // Four Pods of 40 images each, at once: all denied at their deadline, and their
    // verifications go on afterwards (they count against the cap too).
    let runs: Vec<Run> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|p| {
                let object = write(
                    dir.path(),
                    &format!("p{p}.yaml"),
                    &pod_with(&format!("p{p}"), &images(&host, 40, &format!("p{p}-"))),
                );
                let (k, server, tls) = (&k, &server, &tls);
                s.spawn(move || kwhclient(k, server, tls, &object, &[]))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for run in &runs {
        assert_eq!(run.code, 1, "{run:?}");
        assert!(run.stdout.contains("[timeout]"), "{run:?}");
    }
    // The work that outlived the requests keeps at most CAP connections too.
    std::thread::sleep(Duration::from_secs(2));
    let peak = hole.peak.load(Ordering::SeqCst);
    eprintln!(
        "peak {peak} connections at once, {} accepted in all, {} open now",
        hole.accepted.load(Ordering::SeqCst),
        hole.open.load(Ordering::SeqCst)
    );
    assert!(peak <= CAP, "{peak} connections at once (cap {CAP})");
    assert_eq!(
        peak, CAP,
        "the host was never saturated: the test proves nothing"
    );
    drop(server);
}

#[test]
fn a_small_request_is_served_while_large_ones_occupy_the_host() {
    let Some(k) = kube_tools_or_skip("a_small_request_is_served_while_large_ones_occupy") else {
        return;
    };
    let reg = TestRegistry::start();
    // Every answer from the registry comes 250 ms late once `slow` is set.
    let slow = Arc::new(AtomicBool::new(false));
    let upstream = reg.host();
    let front = {
        let slow = slow.clone();
        HttpServer::start(move |req| {
            if slow.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(250));
            }
            forward(&upstream, req)
        })
    };
    let host = front.host();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = generate_keys(dir.path(), "k");
    let policy = dir.path().join("policy.yaml");
    write_key_policy(&policy, &public, "apps", &format!("{host}/apps/**"));
    let tls = make_tls(dir.path());
    let mut s = ocigate::registry::RegistrySettings::default();
    s.add_plain_http(&host).unwrap();
    let client = ocigate::registry::Registry::new(s);
    let small = ocigate::reference::ImageRef::parse(&format!("{host}/apps/small:v1")).unwrap();
    push_image(&client, &small, "small");
    let signed = ocigate(
        &[
            "sign",
            &small.to_string(),
            "--key",
            key.to_str().unwrap(),
            "--registry-plain-http",
            &host,
        ],
        &[("OCIGATE_PASSWORD", PASSWORD)],
    );
    assert_eq!(signed.code, 0, "{signed:?}");
    slow.store(true, Ordering::Relaxed);

    let server = start_serve(
        &policy,
        &tls,
        &host,
        &["--registry-max-connections", "2", "--deadline", "6s"],
    );
    let small_pod = write(
        dir.path(),
        "small.yaml",
        &pod_with("small", &[small.to_string()]),
    );
    let done = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for p in 0..2 {
            let object = write(
                dir.path(),
                &format!("large{p}.yaml"),
                &pod_with(&format!("large{p}"), &images(&host, 200, &format!("l{p}-"))),
            );
            let (k, server, tls, done) = (&k, &server, &tls, &done);
            s.spawn(move || {
                let run = kwhclient(k, server, tls, &object, &[]);
                done.lock().unwrap().push(("large", Instant::now(), run));
            });
        }
        // The large ones have filled the host's queue by now.
        std::thread::sleep(Duration::from_millis(1500));
        let run = kwhclient(&k, &server, &tls, &small_pod, &[]);
        done.lock().unwrap().push(("small", Instant::now(), run));
    });
    let done = done.into_inner().unwrap();
    let small_run = done.iter().find(|(w, _, _)| *w == "small").unwrap();
    assert_eq!(
        small_run.2.code, 0,
        "the small request was starved: {:?}",
        small_run.2
    );
    // ... while the large ones were still waiting for the host (they time out).
    for (_, at, run) in done.iter().filter(|(w, _, _)| *w == "large") {
        assert!(*at > small_run.1, "a large request ended first: {run:?}");
        assert_eq!(run.code, 1, "{run:?}");
    }
}

/// Issue #15, point 4: a manifest's annotations are cut before the engine keeps them (in the
/// resolve cache for a tag, in the decision for a digest), and so before they are reported.
#[test]
fn a_huge_source_annotation_is_cut_before_it_is_kept() {
    let reg = TestRegistry::start();
    let client = reg.client();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = generate_keys(dir.path(), "k");
    let source = format!("https://example.com/{}", "s".repeat(3 << 20));
    let revision = "é".repeat(256 << 10);
    let annotations = std::collections::BTreeMap::from([
        (
            "org.opencontainers.image.source".to_string(),
            source.clone(),
        ),
        (
            "org.opencontainers.image.revision".to_string(),
            revision.clone(),
        ),
    ]);
    let tagged = reg.reference("apps/huge:v1");
    let digest = push_image_with(&client, &tagged, "huge", annotations);
    let s = sign(&reg, &key, &tagged.to_string(), &[]);
    assert_eq!(s.code, 0, "{s:?}");
    let pinned = format!("{}/apps/huge@{digest}", reg.host());
    let run = verify(
        &reg,
        &[
            &tagged.to_string(),
            &pinned,
            "--key",
            public.to_str().unwrap(),
            "--insecure-ignore-tlog",
            "-o",
            "json",
        ],
    );
    assert_eq!(run.code, 0, "{}", &run.stderr);
    assert!(
        run.stdout.len() < 64 << 10,
        "{} bytes of output",
        run.stdout.len()
    );
    let json = run.json();
    for result in json["results"].as_array().unwrap() {
        assert_eq!(result["verdict"], "allow", "{result}");
        for (field, full) in [("source", &source), ("revision", &revision)] {
            let kept = result[field].as_str().unwrap();
            assert!(kept.len() <= 512, "{field}: {} bytes", kept.len());
            assert!(
                kept.ends_with(&format!("…[{} bytes, cut]", full.len())),
                "{field}: {kept}"
            );
            let prefix = kept.split('…').next().unwrap();
            assert!(full.starts_with(prefix) && !prefix.is_empty(), "{field}");
        }
    }
}
