//! `serve`'s TUF refresh: each TUF trust root of the policy in force updated on a schedule
//! (`--trust-root-refresh`, jittered; sooner when its metadata nears expiry). Must not swap
//! policies or decide: a success replaces the verified cache, which the policy watcher
//! (`reload`) sees and loads; a failure keeps the last good root, logged and counted.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::metrics::Metrics;
use crate::engine::Engine;
use crate::policy::TufRootStatus;
use crate::trust::{DEFAULT_UPDATE_TIMEOUT, TufSource, TufState};

/// The soonest a refresh runs again (a root without a usable cache, metadata about to expire).
const MIN_WAIT: Duration = Duration::from_secs(1);

/// How often the schedule is looked at again while waiting: the policy in force may have
/// changed (a root added, a mirror moved), and its roots are the ones refreshed.
const RECHECK: Duration = Duration::from_secs(30);

/// What the schedule needs of one root: whether it has a verified cache, and the earliest
/// expiry of its metadata as last verified (by the policy's load or by a refresh since).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheduled {
    /// A verified cache whose metadata expires then (Unix seconds).
    Cached(i64),
    /// The compiled-in snapshot stands in.
    Embedded,
    /// No usable root.
    Unavailable,
}

/// Refresh the policy's TUF roots every `every` (±10 %), until the process ends; each time
/// the roots of the policy in force then, looked at again at least every [`RECHECK`].
pub(super) async fn refresh_trust_roots(engine: Engine, every: Duration, metrics: Arc<Metrics>) {
    // Built at the first refresh there is something to refresh for (not at start-up).
    let mut client: Option<reqwest::Client> = None;
    // The expiry each refresh verified, by root: a refresh that changed only the timestamp
    // reloads no policy (the fingerprint is the same), so the policy's own is out of date.
    let mut refreshed: HashMap<String, i64> = HashMap::new();
    let (mut planned, mut since) = (jittered(every), Instant::now());
    loop {
        let policy = engine.policy();
        let statuses = policy.tuf_roots();
        let roots: Vec<Scheduled> = statuses.iter().map(|s| scheduled(s, &refreshed)).collect();
        for (s, r) in statuses.iter().zip(&roots) {
            if let Scheduled::Cached(expiry) = r {
                metrics.trust_root_expiry(s.source().name(), *expiry);
            }
        }
        let now = jiff::Timestamp::now().as_second();
        let due = due_in(planned, since.elapsed(), &roots, now);
        if !due.is_zero() {
            drop(policy);
            tokio::time::sleep(due.min(RECHECK)).await;
            continue;
        }
        let sources: Vec<TufSource> = statuses.iter().map(|s| s.source().clone()).collect();
        drop(policy);
        let keys: Vec<String> = sources.iter().map(key).collect();
        refreshed.retain(|k, _| keys.contains(k));
        (planned, since) = (jittered(every), Instant::now());
        if sources.is_empty() {
            continue;
        }
        let c = match &client {
            Some(c) => c.clone(),
            None => match crate::trust::http_client(DEFAULT_UPDATE_TIMEOUT) {
                Ok(c) => client.insert(c).clone(),
                Err(e) => {
                    let msg = serde_json::json!({"msg": "trust root refresh failed: no HTTP client", "error": crate::error_chain(&e)});
                    tell!("{msg}");
                    continue;
                }
            },
        };
        for source in sources {
            if let Some(state) = refresh_one(&source, &c, &metrics).await {
                refreshed.insert(key(&source), state.earliest_expiry());
            }
        }
    }
}

/// A root's key among the refreshed ones: its cache directory's name (its name and mirror).
fn key(source: &TufSource) -> String {
    source
        .cache_dir(Path::new(""))
        .to_string_lossy()
        .into_owned()
}

/// What the schedule needs of `status`, the expiry the latest refresh verified winning.
fn scheduled(status: &TufRootStatus, refreshed: &HashMap<String, i64>) -> Scheduled {
    match status {
        TufRootStatus::Cached { source, state } => {
            let later = refreshed.get(&key(source)).copied().unwrap_or(i64::MIN);
            Scheduled::Cached(state.earliest_expiry().max(later))
        }
        TufRootStatus::Embedded { .. } => Scheduled::Embedded,
        TufRootStatus::Unavailable { .. } => Scheduled::Unavailable,
    }
}

/// One root's update, on the blocking pool (it reads and writes cache files).
async fn refresh_one(
    source: &TufSource,
    client: &reqwest::Client,
    metrics: &Metrics,
) -> Option<TufState> {
    let Some(root) = crate::trust::cache_root() else {
        metrics.trust_root_refresh_failed(source.name());
        return None;
    };
    let (s, c, handle) = (
        source.clone(),
        client.clone(),
        tokio::runtime::Handle::current(),
    );
    let outcome = tokio::task::spawn_blocking(move || {
        handle.block_on(crate::trust::update(&s, &root, &c, DEFAULT_UPDATE_TIMEOUT))
    })
    .await;
    match outcome {
        Ok(Ok(state)) => {
            metrics.trust_root_expiry(source.name(), state.earliest_expiry());
            let msg = serde_json::json!({
                "msg": "trust root refreshed", "root": source.name(),
                "rootVersion": state.root.version,
                "targetsVersion": state.targets.as_ref().map(|t| t.version),
                "target": state.target_digest,
            });
            tell!("{msg}");
            return Some(state);
        }
        Ok(Err(e)) => {
            metrics.trust_root_refresh_failed(source.name());
            let msg = serde_json::json!({"msg": "trust root refresh failed; the last good root stays", "root": source.name(), "error": crate::error_chain(&e)});
            tell!("{msg}");
        }
        Err(e) => {
            metrics.trust_root_refresh_failed(source.name());
            let msg = serde_json::json!({"msg": "trust root refresh failed; the last good root stays", "root": source.name(), "error": e.to_string()});
            tell!("{msg}");
        }
    }
    None
}

/// `every` with up to 10 % jitter either way (replicas do not all ask the mirror at once).
fn jittered(every: Duration) -> Duration {
    let tenth = every.as_millis() as u64 / 10;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()));
    let jitter = if tenth == 0 { 0 } else { nanos % (2 * tenth) };
    every.saturating_sub(Duration::from_millis(tenth)) + Duration::from_millis(jitter)
}

/// How long from `now` until the next refresh, `elapsed` after the last one (whose jittered
/// interval was `planned`): sooner when cached metadata expires before that (half the time
/// left), hourly while a compiled-in snapshot stands in, every minute while a root is
/// unavailable; never sooner than [`MIN_WAIT`] after the last.
fn due_in(planned: Duration, elapsed: Duration, roots: &[Scheduled], now: i64) -> Duration {
    let mut due = planned.saturating_sub(elapsed);
    for r in roots {
        let soon = match r {
            Scheduled::Cached(expiry) => {
                Duration::from_secs(u64::try_from(expiry.saturating_sub(now)).unwrap_or(0) / 2)
            }
            Scheduled::Embedded => planned
                .min(Duration::from_secs(3600))
                .saturating_sub(elapsed),
            Scheduled::Unavailable => planned.min(Duration::from_secs(60)).saturating_sub(elapsed),
        };
        due = due.min(soon);
    }
    due.max(MIN_WAIT.saturating_sub(elapsed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_is_jittered_around_the_interval() {
        let every = Duration::from_secs(24 * 3600);
        for _ in 0..20 {
            let w = jittered(every);
            assert!(w >= every * 9 / 10 && w <= every * 11 / 10, "{w:?}");
        }
        assert_eq!(jittered(Duration::from_millis(5)), Duration::from_millis(5));
    }

    #[test]
    fn the_schedule_follows_expiry_availability_and_the_interval() {
        let day = Duration::from_secs(24 * 3600);
        let s = Duration::from_secs;
        let now = 1_000_000;
        assert_eq!(due_in(day, s(0), &[], now), day);
        assert_eq!(due_in(day, s(3600), &[], now), day - s(3600));
        assert_eq!(due_in(day, day * 2, &[], now), Duration::ZERO);
        // Metadata expiring in 10 minutes: refreshed in 5.
        let soon = [Scheduled::Cached(now + 600)];
        assert_eq!(due_in(day, s(0), &soon, now), s(300));
        // Expired already: as soon as allowed, never twice within MIN_WAIT.
        let gone = [Scheduled::Cached(now - 5)];
        assert_eq!(due_in(day, s(0), &gone, now), MIN_WAIT);
        assert_eq!(due_in(day, s(5), &gone, now), Duration::ZERO);
        assert_eq!(due_in(day, s(0), &[Scheduled::Unavailable], now), s(60));
        assert_eq!(due_in(day, s(0), &[Scheduled::Embedded], now), s(3600));
    }

    /// The refreshed expiries are kept by root (name and mirror), and one only matters for a
    /// root with a verified cache: an unavailable root stays scheduled as such. (That a
    /// refreshed expiry outlives the policy's stale one is `tuf_refresh`'s integration test.)
    #[test]
    fn refreshed_expiries_are_kept_by_root_and_only_for_cached_ones() {
        let source = TufSource::builtin("github").unwrap();
        let mut refreshed = HashMap::new();
        refreshed.insert(key(&source), 2_000_000);
        let status = TufRootStatus::Unavailable {
            source: source.clone(),
            reason: crate::trust::TufError::NoCacheDir {
                name: "github".into(),
            },
        };
        assert_eq!(scheduled(&status, &refreshed), Scheduled::Unavailable);
        let other = TufSource::builtin("public-good").unwrap();
        assert_ne!(key(&source), key(&other));
    }
}
