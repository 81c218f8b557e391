//! How many requests go to one registry host at once, process-wide, and who gets the next one.
//!
//! Every request to a registry (and the reading of its answer) holds a permit of that host's
//! `Gate`: at most `cap` at a time, so at most `cap` connections are busy with one host
//! whoever asked — a verification that outlived the admission request that started it
//! included. Waiters are served fairly: each admission request is a *group* (see
//! [`with_group`]), and a freed permit goes to the groups with waiters in turn, so that one
//! request naming 200 images on a host cannot make a request naming one wait behind all 200.
//! Within a group, first come, first served. A waiter that gives up (its deadline passed)
//! leaves the queue and never holds a connection.
//!
//! The map of hosts is bounded ([`MAX_GATED_HOSTS`]): an idle host's gate is dropped when the
//! map is full, and when every gate is busy the hosts beyond share one more gate of `cap`.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

/// Concurrent requests to one registry host, by default (`--registry-max-connections`).
pub const DEFAULT_MAX_CONNECTIONS_PER_HOST: u16 = 16;

/// Registry hosts with a gate of their own at most; the rest share one.
pub const MAX_GATED_HOSTS: usize = 1024;

static NEXT_GROUP: AtomicU64 = AtomicU64::new(1);

/// A new group id (one per admission request).
pub fn new_group() -> u64 {
    NEXT_GROUP.fetch_add(1, Ordering::Relaxed)
}

/// Run `f` as group `group`: its registry requests queue for permits as one party (the group
/// of the [`super::RequestScope`]). A task spawned inside `f` is not in it unless it is run in
/// this scope too (the engine does so for its verifications).
pub fn with_group<F: Future>(group: u64, f: F) -> impl Future<Output = F::Output> {
    super::request_scope::with_group(group, f)
}

/// The group in scope (0 when none: the CLI, whose requests all belong to one party).
pub fn current_group() -> u64 {
    super::request_scope::current_group()
}

/// The permits of one host.
#[derive(Debug)]
struct Gate {
    cap: usize,
    state: Mutex<GateState>,
}

#[derive(Debug, Default)]
struct GateState {
    in_use: usize,
    /// Waiters by group; `order` is the turn of the groups that have any.
    waiting: HashMap<u64, VecDeque<oneshot::Sender<()>>>,
    order: VecDeque<u64>,
}

impl Gate {
    fn new(cap: usize) -> Self {
        Gate {
            cap: cap.max(1),
            state: Mutex::new(GateState::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, GateState> {
        crate::sync::lock(&self.state)
    }

    fn is_idle(&self) -> bool {
        let s = self.lock();
        s.in_use == 0 && s.order.is_empty()
    }

    /// Give a permit back: to the next group's first waiter still waiting, else to the pool.
    fn release(&self) {
        let mut s = self.lock();
        while let Some(group) = s.order.pop_front() {
            let Some(queue) = s.waiting.get_mut(&group) else {
                continue;
            };
            let next = queue.pop_front();
            if queue.is_empty() {
                s.waiting.remove(&group);
            } else {
                s.order.push_back(group);
            }
            // A waiter that gave up has closed its end: the permit goes on to the next.
            if let Some(tx) = next
                && tx.send(()).is_ok()
            {
                return;
            }
        }
        s.in_use = s.in_use.saturating_sub(1);
    }
}

/// One request's right to talk to a host; given back when dropped.
#[derive(Debug)]
pub struct Permit {
    gate: Arc<Gate>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.gate.release();
    }
}

/// How long the permit of a request abandoned before its answer came (a timeout, a cancelled
/// check) is held on: the abandoned connection is closed by the HTTP client's own task, and
/// the next request must not open its connection before that.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_millis(50);

/// The permit of a request in flight. Taken back with [`InFlight::answered`] once the answer
/// came; dropped before that, its release waits `CLOSE_GRACE`.
#[derive(Debug)]
pub struct InFlight(Option<Permit>);

impl InFlight {
    /// A request is being sent under `permit`.
    pub fn new(permit: Permit) -> Self {
        InFlight(Some(permit))
    }

    /// The answer came: the permit goes with it (until its body has been read).
    pub fn answered(mut self) -> Option<Permit> {
        self.0.take()
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let Some(permit) = self.0.take() else {
            return;
        };
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                tokio::time::sleep(CLOSE_GRACE).await;
                drop(permit);
            });
        }
    }
}

/// A place in a gate's queue; leaving it (dropped before its turn came, or after it came but
/// before it was taken) passes the permit on.
struct Waiting {
    gate: Arc<Gate>,
    rx: oneshot::Receiver<()>,
    taken: bool,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if self.taken {
            return;
        }
        self.rx.close();
        if self.rx.try_recv().is_ok() {
            self.gate.release();
        }
    }
}

async fn acquire(gate: Arc<Gate>, group: u64) -> Permit {
    let rx = {
        let mut s = gate.lock();
        if s.in_use < gate.cap && s.order.is_empty() {
            s.in_use += 1;
            drop(s);
            return Permit { gate };
        }
        let (tx, rx) = oneshot::channel();
        let queue = s.waiting.entry(group).or_default();
        // Places left by waiters that gave up are cleared now and then, not only when a
        // permit comes by.
        if queue.len() >= 64 && queue.len().is_power_of_two() {
            queue.retain(|tx| !tx.is_closed());
        }
        let first = queue.is_empty();
        queue.push_back(tx);
        if first && !s.order.contains(&group) {
            s.order.push_back(group);
        }
        rx
    };
    let mut waiting = Waiting {
        gate: gate.clone(),
        rx,
        taken: false,
    };
    // The sender is dropped only by `release` after a send, or with the gate (never while
    // this holds an Arc on it).
    let _ = (&mut waiting.rx).await;
    waiting.taken = true;
    Permit { gate }
}

/// The gates of every registry host of a process.
#[derive(Debug)]
pub struct Gates {
    cap: usize,
    hosts: Mutex<HashMap<String, Arc<Gate>>>,
    overflow: Arc<Gate>,
}

impl Gates {
    /// Gates of `cap` permits per host (at least 1).
    pub fn new(cap: usize) -> Self {
        Gates {
            cap: cap.max(1),
            hosts: Mutex::new(HashMap::new()),
            overflow: Arc::new(Gate::new(cap)),
        }
    }

    /// Permits per host.
    pub fn cap(&self) -> usize {
        self.cap
    }

    fn gate(&self, host: &str) -> Arc<Gate> {
        let mut hosts = crate::sync::lock(&self.hosts);
        if let Some(g) = hosts.get(host) {
            return g.clone();
        }
        if hosts.len() >= MAX_GATED_HOSTS {
            // Idle gates (no permit out, nobody waiting, nobody about to ask) are dropped.
            hosts.retain(|_, g| Arc::strong_count(g) > 1 || !g.is_idle());
        }
        if hosts.len() >= MAX_GATED_HOSTS {
            return self.overflow.clone();
        }
        let g = Arc::new(Gate::new(self.cap));
        hosts.insert(host.to_string(), g.clone());
        g
    }

    /// Wait for a permit to talk to `host`, in the turn of the group in scope.
    pub async fn acquire(&self, host: &str) -> Permit {
        acquire(self.gate(host), current_group()).await
    }

    /// Hosts with a gate of their own (for tests and metrics).
    pub fn hosts(&self) -> usize {
        crate::sync::lock(&self.hosts).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn at_most_cap_permits_and_a_dropped_waiter_passes_its_turn() {
        rt().block_on(async {
            let gates = Gates::new(2);
            let a = gates.acquire("h").await;
            let _b = gates.acquire("h").await;
            // A third waits; one that gives up leaves no permit behind.
            let gave_up = tokio::time::timeout(Duration::from_millis(20), gates.acquire("h")).await;
            assert!(gave_up.is_err());
            let waiter = tokio::spawn({
                let gate = gates.gate("h");
                async move { acquire(gate, 0).await }
            });
            tokio::task::yield_now().await;
            drop(a);
            let c = tokio::time::timeout(Duration::from_secs(1), waiter)
                .await
                .expect("the waiter got the freed permit")
                .unwrap();
            assert_eq!(gates.gate("h").lock().in_use, 2);
            drop(c);
            assert_eq!(gates.gate("h").lock().in_use, 1);
        });
    }

    #[test]
    fn permits_go_to_groups_in_turn() {
        rt().block_on(async {
            let gates = Arc::new(Gates::new(1));
            let held = gates.acquire("h").await;
            let served = Arc::new(Mutex::new(Vec::new()));
            let mut tasks = Vec::new();
            // Group 1 queues ten, then group 2 one: group 2 is served second, not eleventh.
            for (group, n) in [(1u64, 10), (2, 1)] {
                for i in 0..n {
                    let (gates, served) = (gates.clone(), served.clone());
                    tasks.push(tokio::spawn(with_group(group, async move {
                        let _p = gates.acquire("h").await;
                        served.lock().unwrap().push((group, i));
                        tokio::task::yield_now().await;
                    })));
                    tokio::task::yield_now().await;
                }
            }
            drop(held);
            for t in tasks {
                t.await.unwrap();
            }
            let served = served.lock().unwrap().clone();
            assert_eq!(served.len(), 11);
            assert_eq!(served[0], (1, 0));
            assert_eq!(served[1], (2, 0), "{served:?}");
        });
    }

    #[test]
    fn the_map_of_hosts_is_bounded() {
        rt().block_on(async {
            let gates = Gates::new(1);
            let held: Vec<Permit> = futures_util::future::join_all(
                (0..MAX_GATED_HOSTS).map(|i| gates.acquire_owned_for_test(i)),
            )
            .await;
            // Every gate busy: a new host shares the overflow gate.
            let extra = gates.acquire("another").await;
            assert_eq!(gates.hosts(), MAX_GATED_HOSTS);
            drop(extra);
            drop(held);
            // All idle now: a new host replaces them.
            let _p = gates.acquire("one-more").await;
            assert_eq!(gates.hosts(), 1);
        });
    }

    impl Gates {
        async fn acquire_owned_for_test(&self, i: usize) -> Permit {
            self.acquire(&format!("host-{i}")).await
        }
    }
}
