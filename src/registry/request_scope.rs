//! What a registry request takes from the task it runs in instead of from its arguments: the
//! deadline, the request's own credentials, its gate group and its pace, set together by
//! [`RequestScope::run`]. Must not: decide anything with them (the readers below do).
//!
//! They are task-locals because they belong to one admission request or one verification,
//! while the [`super::Registry`] that reads them is shared by the whole process, and because
//! every registry call of the engine, discovery and signing would otherwise carry them.
//!
//! Who reads them, and what happens when one is unset:
//! - the deadline: every request ([`super::Registry`]'s `send`, `deadline`, the retry pauses)
//!   cuts its timeout to what is left and retries only when the pause fits. Unset: each
//!   request has the settings' timeout, and a retry pause must fit in one timeout.
//! - the request credentials: `Registry::credential_id` and the credential lookup of every
//!   request, after the configured credentials and before the credential files. Unset: only
//!   the process's credentials are used.
//! - the gate group: `Gates::acquire`, which serves the groups waiting for a host in turn.
//!   Unset: group 0, the one party of the CLI's requests.
//! - the pace: every request waits for its turn under the [`Pace`] (requests per second) before
//!   it is sent; `audit` sets one, so that reading a whole cluster does not flood a registry.
//!   Unset: no pace (admission requests are never slowed).
//!
//! A task spawned inside a scope does not inherit it: capture [`RequestScope::current`] and
//! run the task in it (`RequestScope::current().run(task)`), as the engine does for each
//! verification (with the verification budget as its deadline). The single setters
//! (`gate::with_group`, `with_request_credentials`, `with_deadline`) set one part each and leave
//! the others as the enclosing scope set them: the webhook sets the group and the pull secrets
//! of one admission request, the engine the deadline of one check.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Credential;

/// Credentials that belong to one request rather than to the process (an admitted Pod's
/// `imagePullSecrets`), by canonical host.
pub type RequestCredentials = Arc<BTreeMap<String, Credential>>;

tokio::task_local! {
    static DEADLINE: Option<Instant>;
    static REQUEST_CREDENTIALS: Option<RequestCredentials>;
    static GROUP: u64;
    static PACE: Option<Pace>;
}

/// At most so many registry requests per second, shared by every task given the same pace
/// (governor's GCRA limiter, bursts of one second's worth).
#[derive(Clone)]
pub struct Pace(Arc<governor::DefaultDirectRateLimiter>);

impl Pace {
    /// `per_second` requests per second.
    pub fn per_second(per_second: std::num::NonZeroU32) -> Self {
        Pace(Arc::new(governor::RateLimiter::direct(
            governor::Quota::per_second(per_second),
        )))
    }

    /// Waits until one more request fits (on tokio's timer, not governor's own thread).
    async fn turn(&self) {
        use governor::clock::Clock as _;
        while let Err(later) = self.0.check() {
            let clock = governor::clock::DefaultClock::default();
            tokio::time::sleep(later.wait_time_from(clock.now())).await;
        }
    }
}

impl std::fmt::Debug for Pace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pace")
    }
}

/// Everything a registry request takes from its task (see the module documentation).
#[derive(Debug, Clone, Default)]
pub struct RequestScope {
    /// When every request must be done by, if ever.
    pub deadline: Option<Instant>,
    /// The request's own credentials, if any.
    pub credentials: Option<RequestCredentials>,
    /// The gate group (0: none, the CLI's one party).
    pub group: u64,
    /// The pace of its registry requests, if they are paced.
    pub pace: Option<Pace>,
}

impl RequestScope {
    /// What is in scope now: to run a spawned task in the scope of its spawner.
    pub fn current() -> Self {
        RequestScope {
            deadline: DEADLINE.try_with(|d| *d).ok().flatten(),
            credentials: request_credentials(),
            group: current_group(),
            pace: PACE.try_with(Clone::clone).ok().flatten(),
        }
    }

    /// Run `f` with this scope for every registry request it makes: the one function that
    /// sets all four.
    pub fn run<F: Future>(self, f: F) -> impl Future<Output = F::Output> {
        DEADLINE.scope(
            self.deadline,
            REQUEST_CREDENTIALS.scope(
                self.credentials,
                GROUP.scope(self.group, PACE.scope(self.pace, f)),
            ),
        )
    }
}

// The setters of one part each, for callers that know only that part (the engine's deadline,
// the webhook's pull secrets and group). The other parts stay as the enclosing scope set them.

/// Run `f` with a deadline for every registry request it makes: each request's timeout is cut
/// to what is left, and no retry waits past it. The engine sets one per verification.
pub fn with_deadline<F: Future>(deadline: Instant, f: F) -> impl Future<Output = F::Output> {
    DEADLINE.scope(Some(deadline), f)
}

/// Run `f` with `credentials` available to every registry request it makes, after the
/// configured credentials and before the credential files.
pub fn with_request_credentials<F: Future>(
    credentials: RequestCredentials,
    f: F,
) -> impl Future<Output = F::Output> {
    REQUEST_CREDENTIALS.scope(Some(credentials), f)
}

/// Run `f` as gate group `group`: its registry requests queue for permits as one party.
pub(super) fn with_group<F: Future>(group: u64, f: F) -> impl Future<Output = F::Output> {
    GROUP.scope(group, f)
}

/// Run `f` with every registry request it makes waiting for its turn under `pace`.
pub fn with_pace<F: Future>(pace: Pace, f: F) -> impl Future<Output = F::Output> {
    PACE.scope(Some(pace), f)
}

/// Waits for the turn of one request under the pace in scope (at once when none is).
pub(super) async fn pace_turn() {
    if let Some(pace) = PACE.try_with(Clone::clone).ok().flatten() {
        pace.turn().await;
    }
}

/// The request credentials in scope, if any.
pub fn request_credentials() -> Option<RequestCredentials> {
    REQUEST_CREDENTIALS.try_with(|c| c.clone()).ok().flatten()
}

/// The gate group in scope (0 when none).
pub(super) fn current_group() -> u64 {
    GROUP.try_with(|g| *g).unwrap_or(0)
}

/// What is left of the deadline in scope, if one is.
pub(super) fn remaining_deadline() -> Option<Duration> {
    DEADLINE
        .try_with(|d| d.map(|d| d.saturating_duration_since(Instant::now())))
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_setter_keeps_the_rest_of_the_scope() {
        assert!(remaining_deadline().is_none());
        assert!(request_credentials().is_none());
        assert_eq!(current_group(), 0);
        let creds: RequestCredentials = Arc::new(BTreeMap::new());
        let later = Instant::now() + Duration::from_secs(60);
        with_group(7, async {
            with_request_credentials(creds, async {
                with_deadline(later, async {
                    let now = RequestScope::current();
                    assert_eq!(now.group, 7);
                    assert!(now.credentials.is_some());
                    assert_eq!(now.deadline, Some(later));
                    // A spawned task sees nothing unless run in the captured scope.
                    let bare = tokio::spawn(async { RequestScope::current() })
                        .await
                        .unwrap();
                    assert_eq!(bare.group, 0);
                    assert!(bare.credentials.is_none() && bare.deadline.is_none());
                    let carried = tokio::spawn(now.run(async { RequestScope::current() }))
                        .await
                        .unwrap();
                    assert_eq!(carried.group, 7);
                    assert_eq!(carried.deadline, Some(later));
                })
                .await
            })
            .await
        })
        .await;
    }
}
