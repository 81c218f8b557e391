//! Single flight: one verification per decision key, whoever asks; later askers join it. A
//! verification that fails as a task (panics) is an internal failure. Must not verify itself.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicU8;
use std::sync::{Arc, Mutex};

use futures_util::FutureExt as _;
use futures_util::future::Shared;
use tokio::task::{JoinError, JoinHandle};

use super::cache::DecisionKey;
use super::decision::Decision;
use crate::failure::Failure;
use crate::policy::Verdict;

/// Where a running check is, for the deadline's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Stage {
    /// Finding the rule.
    Plan = 0,
    /// Resolving the tag to a digest.
    Resolve = 1,
    /// Looking for signatures.
    Discover = 2,
    /// Verifying them and evaluating the rule.
    Verify = 3,
}

impl Stage {
    pub(super) fn from_u8(v: u8) -> Stage {
        match v {
            1 => Stage::Resolve,
            2 => Stage::Discover,
            3 => Stage::Verify,
            _ => Stage::Plan,
        }
    }

    pub(super) fn doing(self) -> &'static str {
        match self {
            Stage::Plan => "planning",
            Stage::Resolve => "resolving",
            Stage::Discover => "discovering signatures of",
            Stage::Verify => "verifying",
        }
    }
}

/// A verification in flight, as every asker awaits it.
pub(super) type Flight = Shared<Pin<Box<dyn Future<Output = Arc<Decision>> + Send>>>;

/// A flight as one asker has it: the flight, the stage it is at, and whether the asker joined
/// it (rather than started it).
pub(super) struct Boarded {
    pub(super) flight: Flight,
    pub(super) stage: Arc<AtomicU8>,
    pub(super) joined: bool,
}

/// The verifications in flight, by decision key.
#[derive(Default)]
pub(super) struct Flights(Mutex<HashMap<DecisionKey, (Flight, Arc<AtomicU8>)>>);

impl Flights {
    /// Join the flight for `key`, or start one with `start` (given the stage it is to keep up
    /// to date) when there is none.
    pub(super) fn board(
        &self,
        key: DecisionKey,
        start: impl FnOnce(Arc<AtomicU8>) -> Flight,
    ) -> Boarded {
        let mut inflight = crate::sync::lock(&self.0);
        if let Some((flight, stage)) = inflight.get(&key) {
            return Boarded {
                flight: flight.clone(),
                stage: stage.clone(),
                joined: true,
            };
        }
        let stage = Arc::new(AtomicU8::new(Stage::Discover as u8));
        let flight = start(stage.clone());
        inflight.insert(key, (flight.clone(), stage.clone()));
        Boarded {
            flight,
            stage,
            joined: false,
        }
    }

    /// A guard that lands the flight for `key` when dropped: when its verification ends (its
    /// decision is then in the cache, or is not to be kept), and also when it panics, so that
    /// the next asker starts a new verification instead of joining the failed one for ever.
    pub(super) fn landing(&self, key: DecisionKey) -> Landing<'_> {
        Landing { flights: self, key }
    }
}

/// See [`Flights::landing`].
pub(super) struct Landing<'a> {
    flights: &'a Flights,
    key: DecisionKey,
}

impl Drop for Landing<'_> {
    fn drop(&mut self) {
        crate::sync::lock(&self.flights.0).remove(&self.key);
    }
}

/// The flight of a spawned verification task. Should the task fail (panic, or be cancelled),
/// its askers get [`lost`]'s decision about `reference` under the rule named `rule`.
pub(super) fn follow(task: JoinHandle<Arc<Decision>>, reference: String, rule: String) -> Flight {
    let fut: Pin<Box<dyn Future<Output = Arc<Decision>> + Send>> = Box::pin(async move {
        match task.await {
            Ok(d) => d,
            Err(e) => Arc::new(lost(reference, rule, &e)),
        }
    });
    fut.shared()
}

/// The decision when the verification task itself failed: ocigate's own fault (a bug), not the
/// policy's nor the artifact's; a deny whatever the rule's mode.
fn lost(reference: String, rule: String, e: &JoinError) -> Decision {
    Decision::without_signatures(
        reference,
        None,
        Verdict::Deny,
        Some(rule),
        format!("internal error: the verification task failed: {e}"),
        Some(Failure::Internal),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A verification task that panics is an internal failure, denied, for every asker.
    #[tokio::test]
    async fn a_verification_that_panics_is_an_internal_failure() {
        let task = tokio::spawn(async {
            if std::hint::black_box(true) {
                panic!("a bug in a verification");
            }
            Arc::new(Decision::without_signatures(
                String::new(),
                None,
                Verdict::Allow,
                None,
                String::new(),
                None,
            ))
        });
        let flight = follow(task, "registry.example/app:v1".into(), "apps".into());
        let (first, second) = tokio::join!(flight.clone(), flight);
        for d in [first, second] {
            assert_eq!(d.failure, Some(Failure::Internal), "{d:?}");
            assert_eq!(d.verdict, Verdict::Deny);
            assert_eq!(d.rule.as_deref(), Some("apps"));
            assert!(
                d.reasons[0].starts_with("internal error: the verification task failed"),
                "{:?}",
                d.reasons
            );
        }
    }

    /// A verification that panics lands its flight too: the next asker starts a new one.
    #[tokio::test]
    async fn a_flight_whose_verification_panics_lands() {
        let flights = Arc::new(Flights::default());
        let key = DecisionKey::new(
            "registry.example/app",
            &crate::reference::Digest::sha256_of(b"image"),
            0,
            "policy",
            &crate::registry::CredentialId::ANONYMOUS,
        );
        let boarded = flights.board(key, |_| {
            let flights = flights.clone();
            let task = tokio::spawn(async move {
                let _landing = flights.landing(key);
                if std::hint::black_box(true) {
                    panic!("a bug in a verification");
                }
                Arc::new(Decision::without_signatures(
                    String::new(),
                    None,
                    Verdict::Allow,
                    None,
                    String::new(),
                    None,
                ))
            });
            follow(task, "registry.example/app:v1".into(), "apps".into())
        });
        assert!(!boarded.joined);
        let d = boarded.flight.await;
        assert_eq!(d.failure, Some(Failure::Internal), "{d:?}");
        let again = flights.board(key, |_| futures_util::future::pending().boxed().shared());
        assert!(!again.joined, "the failed flight was joined again");
    }
}
