//! The shared engine against the real registry: one verification for many concurrent asks of a
//! cold key (single flight), the cache, and the deadline (the tests' proxy stalls the registry).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ocigate::engine::{Engine, EngineConfig};
use ocigate::failure::Failure;
use ocigate::policy::CompiledPolicy;
use ocigate::policy::{AuthorityKind, Policy, Tlog, Verdict};
use ocigate::reference::ImageRef;
use ocigate::registry::{Registry, RegistrySettings};
use ocigate::trust::PublicKey;
use ocigate::verify::SignedIdentity;

use crate::harness::*;
use crate::proxy::proxy;

pub(crate) fn key_policy(public: &std::path::Path) -> CompiledPolicy {
    let pem = std::fs::read_to_string(public).unwrap();
    let key = PublicKey::from_pem(&pem, "test key").unwrap();
    let kind = AuthorityKind::Key {
        key,
        tlog: Tlog::Skip,
        trust_root: None,
    };
    let policy = Policy::single_authority(
        "k",
        "k",
        kind,
        Vec::new(),
        Default::default(),
        SignedIdentity::MatchRepository,
    );
    CompiledPolicy::new(policy, "test".into())
}

fn plain(host: &str) -> Registry {
    let mut s = RegistrySettings::default();
    s.add_plain_http(host).unwrap();
    Registry::new(s)
}

/// A registry behind a counting proxy that delays every answer by `delay_ms` (shared, settable).
struct Slow {
    reg: TestRegistry,
    front: crate::proxy::HttpServer,
    delay_ms: Arc<AtomicU64>,
}

fn slow_registry() -> Slow {
    let reg = TestRegistry::start();
    let delay_ms = Arc::new(AtomicU64::new(0));
    let d = delay_ms.clone();
    let front = proxy(reg.host(), move |_, resp| {
        std::thread::sleep(Duration::from_millis(d.load(Ordering::SeqCst)));
        resp
    });
    Slow {
        reg,
        front,
        delay_ms,
    }
}

#[test]
fn many_concurrent_checks_of_a_cold_image_verify_once() {
    let s = slow_registry();
    let _ = &s.reg;
    let r = ImageRef::parse(&format!("{}/acme/app:v1", s.front.host())).unwrap();
    push_image(&plain(&s.front.host()), &r, "single flight");
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = generate_keys(dir.path(), "k");
    let signed = ocigate(
        &[
            "sign",
            &r.to_string(),
            "--key",
            key.to_str().unwrap(),
            "--registry-plain-http",
            &s.front.host(),
        ],
        &[("OCIGATE_PASSWORD", PASSWORD)],
    );
    assert_eq!(signed.code, 0, "{signed:?}");
    // Slow enough that all asks arrive while the first verification runs.
    s.delay_ms.store(150, Ordering::SeqCst);
    let engine = Engine::new(
        plain(&s.front.host()),
        key_policy(&public),
        EngineConfig::default(),
    );
    let pinned = {
        let before = s.front.seen().len();
        let d = block_on(engine.check(&r));
        assert_eq!(d.verdict, Verdict::Allow, "{d:?}");
        assert!(s.front.seen().len() > before);
        r.with_digest(ocigate::reference::Digest::parse(d.digest.as_deref().unwrap()).unwrap())
    };
    // A second engine, cold: 200 concurrent asks for the same pinned image.
    let engine = Engine::new(
        plain(&s.front.host()),
        key_policy(&public),
        EngineConfig::default(),
    );
    let before = s.front.seen().len();
    let decisions = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let tasks: Vec<_> = (0..200)
                .map(|_| {
                    let (e, p) = (engine.clone(), pinned.clone());
                    tokio::spawn(async move { e.check(&p).await })
                })
                .collect();
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.unwrap());
            }
            out
        });
    assert!(decisions.iter().all(|d| d.verdict == Verdict::Allow));
    let stats = engine.stats();
    assert_eq!(stats.verifications.load(Ordering::Relaxed), 1, "{stats:?}");
    assert_eq!(
        stats.single_flight_joins.load(Ordering::Relaxed)
            + stats.cache_hits.load(Ordering::Relaxed),
        199,
        "{stats:?}"
    );
    let requests = s.front.seen().len() - before;
    // One verification's requests: manifest, .sig manifest, referrers, referrers tag, blob.
    assert!(requests <= 6, "{requests} registry requests for one image");
    // Warm: no registry request at all.
    let before = s.front.seen().len();
    let d = block_on(engine.check(&pinned));
    assert!(d.cached, "{d:?}");
    assert_eq!(s.front.seen().len(), before);
}

#[test]
fn the_deadline_names_stage_and_host_and_the_late_result_fills_the_cache() {
    let s = slow_registry();
    let r = ImageRef::parse(&format!("{}/acme/slow:v1", s.front.host())).unwrap();
    let digest = push_image(&plain(&s.front.host()), &r, "deadline");
    let dir = tempfile::tempdir().unwrap();
    let (_key, public) = generate_keys(dir.path(), "k");
    let engine = Engine::new(
        plain(&s.front.host()),
        key_policy(&public),
        EngineConfig {
            deadline: Duration::from_millis(300),
            ..EngineConfig::default()
        },
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Resolving a tag hangs past the deadline.
    s.delay_ms.store(1500, Ordering::SeqCst);
    let d = rt.block_on(engine.check(&r));
    assert_eq!(d.verdict, Verdict::Deny, "{d:?}");
    assert_eq!(d.failure, Some(Failure::Timeout), "{d:?}");
    let reason = &d.reasons[0];
    assert!(
        reason.contains("timed out resolving") && reason.contains(&s.front.host()),
        "{reason}"
    );
    // Pinned: discovery hangs; the answer comes at the deadline, not when the registry answers.
    let pinned = r.with_digest(digest);
    let t = std::time::Instant::now();
    let d = rt.block_on(engine.check(&pinned));
    assert!(
        t.elapsed() < Duration::from_millis(1400),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(d.failure, Some(Failure::Timeout), "{d:?}");
    assert!(d.reasons[0].contains("discovering signatures"), "{d:?}");
    // The verification went on and filled the cache: the retry answers from it.
    s.delay_ms.store(0, Ordering::SeqCst);
    let mut retried = None;
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(100));
        if engine.stats().verifications.load(Ordering::Relaxed) >= 1
            && engine.cached_decisions() > 0
        {
            retried = Some(rt.block_on(engine.check(&pinned)));
            break;
        }
    }
    let d = retried.expect("the late verification never filled the cache");
    assert!(d.cached, "{d:?}");
    assert_eq!(d.failure, Some(Failure::Unsigned), "{d:?}");
}

/// A decision as a later asker compares it: what the cache keeps (everything but the asker's
/// discovery notes, timings and the `cached` flag).
fn content(d: &ocigate::engine::Decision) -> serde_json::Value {
    let mut v = serde_json::to_value(d).unwrap();
    let o = v.as_object_mut().unwrap();
    for k in ["discovery", "timings", "cached"] {
        o.remove(k);
    }
    v
}

#[test]
fn a_cache_hit_gives_back_the_decision_of_the_miss_that_filled_it() {
    let reg = TestRegistry::start();
    let client = plain(&reg.host());
    let signed = reg.reference("acme/signed:v1");
    let annotations = [
        (
            "org.opencontainers.image.source",
            "https://example.com/acme",
        ),
        ("org.opencontainers.image.revision", "0123abcd"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let digest = push_image_with(&client, &signed, "cache content", annotations);
    let unsigned = reg.reference("acme/unsigned:v1");
    push_image(&client, &unsigned, "cache content, unsigned");
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = generate_keys(dir.path(), "k");
    let run = sign(&reg, &key, &signed.to_string(), &[]);
    assert_eq!(run.code, 0, "{run:?}");
    let missing = reg
        .reference("acme/missing:v1")
        .with_digest(ocigate::reference::Digest::sha256_of(b"not pushed"));
    let engine = Engine::new(
        client,
        key_policy(&public),
        EngineConfig {
            negative_ttl: Duration::from_secs(3600),
            failure_ttl: Duration::from_secs(3600),
            ..EngineConfig::default()
        },
    );
    let pinned = signed.with_digest(digest);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for (r, verdict, failure) in [
        (&signed, Verdict::Allow, None),
        (&unsigned, Verdict::Deny, Some(Failure::Unsigned)),
        (&missing, Verdict::Deny, Some(Failure::NotFound)),
    ] {
        let miss = rt.block_on(engine.check(r));
        assert!(!miss.cached, "{miss:?}");
        assert_eq!((miss.verdict, miss.failure), (verdict, failure), "{miss:?}");
        let hit = rt.block_on(engine.check(r));
        assert!(hit.cached, "{hit:?}");
        assert_eq!(content(&hit), content(&miss), "{r}");
    }
    // The allow carries its evidence and the manifest's annotations through the cache.
    let hit = rt.block_on(engine.check(&signed));
    assert_eq!(hit.signatures.len(), 1, "{hit:?}");
    assert_eq!(hit.source.as_deref(), Some("https://example.com/acme"));
    assert_eq!(hit.revision.as_deref(), Some("0123abcd"));
    // Another spelling of the same digest is the same decision, for that spelling.
    let other = rt.block_on(engine.check(&pinned));
    assert!(other.cached, "{other:?}");
    assert_eq!(other.reference, pinned.to_string());
    let mut expected = content(&hit);
    expected["reference"] = pinned.to_string().into();
    assert_eq!(content(&other), expected);
}
