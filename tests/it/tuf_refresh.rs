//! `serve`'s TUF refresh schedule against a python-tuf repository on loopback: a refresh that
//! renews only the timestamp (which reloads no policy: its fingerprint is the same) schedules
//! the next one by the new expiry, not by the policy's stale one.

use std::time::{Duration, Instant};

use crate::harness::*;
use crate::tuf::{Repo, key_rekor_policy, roots, scrape, serve_dir, tuf_python_or_skip};

/// The expiry gauge of root `corp` on `port`, in Unix seconds.
fn expiry(port: u16) -> Option<f64> {
    scrape(port).lines().find_map(|l| {
        l.strip_prefix("ocigate_trust_root_expiry_timestamp_seconds{root=\"corp\"} ")
            .and_then(|v| v.trim().parse().ok())
    })
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The cached timestamp expires in 12 s, the mirror already has one that lasts a day, and
/// `serve` refreshes hourly: one refresh, soon (half the time left), then the schedule goes
/// by the day-long expiry it verified. Before, the policy's own expiry (never reloaded: only
/// the timestamp changed) passed and a refresh ran every second, the gauge flapping between
/// the stale expiry and the new one.
#[test]
fn a_timestamp_only_refresh_schedules_by_its_own_expiry() {
    let test = "a_timestamp_only_refresh_schedules_by_its_own_expiry";
    let (Some(python), Some(corpus)) = (tuf_python_or_skip(test), corpus_or_skip(test)) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let (full, _) = roots(&corpus, work.path());
    let repo = Repo::new(python.clone(), &full);
    repo.step(&["timestamp", "--expires", "12"]);
    let served = serve_dir(&python, &repo.repo());
    let policy = key_rekor_policy(work.path(), &served.url, &repo.bootstrap(), &corpus);
    let cache = repo.cache();
    let r = ocigate_exact(
        &[
            "trust-root",
            "update",
            "--policy",
            policy.to_str().unwrap(),
            "--tuf-cache-dir",
            &cache,
        ],
        &[],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let stale = unix_now() + 12.0;
    repo.step(&["timestamp", "--expires", "86400"]);
    let reg = TestRegistry::start();
    let tls = make_tls(work.path());
    let server = crate::webhook::start_serve(
        &policy,
        &tls,
        &reg.host(),
        &["--tuf-cache-dir", &cache, "--trust-root-refresh", "1h"],
    );
    // The refresh comes within the stale timestamp's life.
    let start = Instant::now();
    while expiry(server.metrics).is_none_or(|e| e < unix_now() + 3600.0) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no refresh: {:?}",
            expiry(server.metrics)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Past the stale expiry, the gauge stays at the verified one.
    while unix_now() < stale + 4.0 {
        let e = expiry(server.metrics);
        assert!(
            e.is_some_and(|e| e > unix_now() + 3600.0),
            "the stale expiry came back: {e:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
