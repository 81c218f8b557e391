//! [`FetchBudget`]: the bytes one verification may fetch in all, shared by its concurrent
//! lookups. Must not: fetch anything itself (the registry charges it).

use std::sync::atomic::{AtomicUsize, Ordering};

/// What one verification may fetch in all (manifests, referrer pages, blobs), shared by the
/// lookups that run concurrently. A fetch that would pass it is refused with
/// [`super::RegistryErrorKind::BudgetSpent`]; bytes a fetch did not use are given back.
#[derive(Debug)]
pub struct FetchBudget {
    limit: usize,
    left: AtomicUsize,
}

impl FetchBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Self {
        FetchBudget {
            limit,
            left: AtomicUsize::new(limit),
        }
    }

    /// The budget, in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes charged so far.
    pub fn spent(&self) -> usize {
        self.limit.saturating_sub(self.left.load(Ordering::Relaxed))
    }

    /// Take up to `want` bytes; how many were granted (0: nothing left).
    pub(super) fn take(&self, want: usize) -> usize {
        let mut granted = 0;
        let _ = self
            .left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                granted = left.min(want);
                Some(left - granted)
            });
        granted
    }

    pub(super) fn give_back(&self, n: usize) {
        self.left.fetch_add(n, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_grants_what_is_left_and_takes_back_what_was_not_used() {
        let b = FetchBudget::new(100);
        assert_eq!(b.take(60), 60);
        assert_eq!(b.take(60), 40);
        assert_eq!(b.take(1), 0);
        b.give_back(30);
        assert_eq!(b.spent(), 70);
        assert_eq!(b.take(usize::MAX), 30);
        assert_eq!(b.limit(), 100);
    }
}
