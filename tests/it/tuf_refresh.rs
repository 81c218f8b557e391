//! `serve`'s TUF refresh schedule against a python-tuf repository on loopback: a refresh that
//! renews only the timestamp (which reloads no policy: its fingerprint is the same) schedules
//! the next one by the new expiry, not by the policy's stale one; and a cache swapped in while
//! it is read does not fail the load.

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

/// A cache swapped in while it is being read (a refresh beside a load: another replica's on a
/// shared volume, `trust-root update` beside `serve`) can show a load the old timestamp and
/// the new snapshot; such a load is made again, so none fails for it. Forty swaps of two
/// verified caches (the second of newer targets, snapshot and timestamp), 100 ms apart, under loads one after
/// another.
#[test]
fn a_load_beside_a_swap_of_the_cache_does_not_fail() {
    let test = "a_load_beside_a_swap_of_the_cache_does_not_fail";
    let (Some(python), Some(corpus)) = (tuf_python_or_skip(test), corpus_or_skip(test)) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let (full, _) = roots(&corpus, work.path());
    let repo = Repo::new(python.clone(), &full);
    let served = serve_dir(&python, &repo.repo());
    let boot = repo.bootstrap();
    let (first, second) = (work.path().join("first"), work.path().join("second"));
    for cache in [&first, &second] {
        let r = ocigate_exact(
            &[
                "trust-root",
                "update",
                "--mirror",
                &served.url,
                "--root",
                boot.to_str().unwrap(),
                "--name",
                "corp",
                "--tuf-cache-dir",
                cache.to_str().unwrap(),
            ],
            &[],
        );
        assert_eq!(r.code, 0, "{r:?}");
        repo.step(&["set-target", full.to_str().unwrap()]);
    }
    let mirror = ocigate::trust::TufMirror::parse(&served.url, work.path()).unwrap();
    let source =
        ocigate::trust::TufSource::new("corp", mirror, std::fs::read(&boot).unwrap()).unwrap();
    let (live, spare) = (source.cache_dir(&first), source.cache_dir(&second));
    assert!(live.is_dir() && spare.is_dir());
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..40 {
                std::thread::sleep(Duration::from_millis(100));
                rustix::fs::renameat_with(
                    rustix::fs::CWD,
                    &live,
                    rustix::fs::CWD,
                    &spare,
                    rustix::fs::RenameFlags::EXCHANGE,
                )
                .unwrap();
            }
            done.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        let mut loads = 0;
        while !done.load(std::sync::atomic::Ordering::Relaxed) {
            if let Err(e) = ocigate::trust::load_cached(&source, &first) {
                panic!("load {loads} failed: {}", ocigate::error_chain(&e));
            }
            loads += 1;
        }
        eprintln!("{loads} loads beside 40 swaps");
    });
}
