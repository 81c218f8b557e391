//! `serve`'s TUF refresh: each TUF trust root of the policy in force updated on a schedule
//! (`--trust-root-refresh`, jittered; sooner when its metadata nears expiry). Must not swap
//! policies or decide: a success replaces the verified cache, which the policy watcher
//! (`reload`) sees and loads; a failure keeps the last good root, logged and counted.

use std::sync::Arc;
use std::time::Duration;

use super::metrics::Metrics;
use crate::engine::Engine;
use crate::policy::TufRootStatus;
use crate::trust::{DEFAULT_UPDATE_TIMEOUT, TufSource};

/// The soonest a refresh runs again (a root without a usable cache, metadata about to expire).
const MIN_WAIT: Duration = Duration::from_secs(1);

/// Refresh the policy's TUF roots every `every` (±10 %), until the process ends.
pub(super) async fn refresh_trust_roots(engine: Engine, every: Duration, metrics: Arc<Metrics>) {
    // Built at the first refresh there is something to refresh for (not at start-up).
    let mut client: Option<reqwest::Client> = None;
    loop {
        let policy = engine.policy();
        let statuses = policy.tuf_roots();
        for s in statuses {
            if let TufRootStatus::Cached { source, state } = s {
                metrics.trust_root_expiry(source.name(), state.earliest_expiry());
            }
        }
        tokio::time::sleep(next_wait(
            every,
            statuses,
            jiff::Timestamp::now().as_second(),
        ))
        .await;
        let sources: Vec<TufSource> = statuses.iter().map(|s| s.source().clone()).collect();
        drop(policy);
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
            refresh_one(source, &c, &metrics).await;
        }
    }
}

/// One root's update, on the blocking pool (it reads and writes cache files).
async fn refresh_one(source: TufSource, client: &reqwest::Client, metrics: &Metrics) {
    let Some(root) = crate::trust::cache_root() else {
        metrics.trust_root_refresh_failed(source.name());
        return;
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
}

/// How long until the next refresh: `every` with up to 10 % jitter either way; sooner (half
/// the time left, at least [`MIN_WAIT`]) when cached metadata expires before that, and soon
/// when a root has no usable cache.
fn next_wait(every: Duration, statuses: &[TufRootStatus], now: i64) -> Duration {
    let tenth = every.as_millis() as u64 / 10;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()));
    let jitter = if tenth == 0 { 0 } else { nanos % (2 * tenth) };
    let mut wait =
        every.saturating_sub(Duration::from_millis(tenth)) + Duration::from_millis(jitter);
    for s in statuses {
        let soon = match s {
            TufRootStatus::Cached { state, .. } => {
                let left = u64::try_from(state.earliest_expiry() - now).unwrap_or(0);
                Duration::from_secs(left / 2)
            }
            // The snapshot compiled in works meanwhile: try hourly.
            TufRootStatus::Embedded { .. } => every.min(Duration::from_secs(3600)),
            TufRootStatus::Unavailable { .. } => every.min(Duration::from_secs(60)),
        };
        wait = wait.min(soon.max(MIN_WAIT));
    }
    wait
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_is_jittered_around_the_interval() {
        let every = Duration::from_secs(24 * 3600);
        for _ in 0..20 {
            let w = next_wait(every, &[], 0);
            assert!(w >= every * 9 / 10 && w <= every * 11 / 10, "{w:?}");
        }
        assert_eq!(
            next_wait(Duration::from_millis(5), &[], 0),
            Duration::from_millis(5)
        );
    }
}
