//! Counters by label whose values a registry or an admitted object chooses (hosts, token
//! realms, scopes), kept bounded: the first values seen keep their name, later ones are
//! counted under [`OTHER`]. A Pod naming 400 hosts once made 402 metric series; with a bound
//! the series (and the maps behind them) stay what the bound allows, whatever is admitted.

use std::collections::{BTreeMap, HashSet};

/// The label value of everything past the bound.
pub const OTHER: &str = "other";

/// Hosts (and token realms) that keep their own label value.
pub const MAX_NAMED_HOSTS: usize = 32;

/// Token scopes that keep their own label value.
pub const MAX_NAMED_SCOPES: usize = 64;

/// The first `max` distinct values keep their name; the rest are [`OTHER`].
#[derive(Debug)]
pub struct LabelFold {
    named: HashSet<String>,
    max: usize,
}

impl LabelFold {
    /// A fold that names at most `max` values.
    pub fn new(max: usize) -> Self {
        LabelFold {
            named: HashSet::new(),
            max,
        }
    }

    /// `value`'s label: itself if it is (or can become) one of the named, else [`OTHER`].
    pub fn fold<'a>(&mut self, value: &'a str) -> &'a str {
        if value == OTHER || self.named.contains(value) {
            return value;
        }
        if self.named.len() < self.max {
            self.named.insert(value.to_string());
            value
        } else {
            OTHER
        }
    }
}

/// Counts by two labels, each folded: at most `(max_first + 1) × (max_second + 1)` entries.
#[derive(Debug)]
pub struct FoldedCounts {
    first: LabelFold,
    second: LabelFold,
    counts: BTreeMap<(String, String), u64>,
}

impl FoldedCounts {
    /// Counts naming at most `max_first` values of the first label and `max_second` of the
    /// second.
    pub fn new(max_first: usize, max_second: usize) -> Self {
        FoldedCounts {
            first: LabelFold::new(max_first),
            second: LabelFold::new(max_second),
            counts: BTreeMap::new(),
        }
    }

    /// Count one event with these label values.
    pub fn add(&mut self, first: &str, second: &str) {
        let key = (
            self.first.fold(first).to_string(),
            self.second.fold(second).to_string(),
        );
        *self.counts.entry(key).or_insert(0) += 1;
    }

    /// Every (first, second, count), in label order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, u64)> {
        self.counts
            .iter()
            .map(|((a, b), n)| (a.as_str(), b.as_str(), *n))
    }
}

/// Clear `set` when it holds `max` values, before one more goes in: for sets that only save
/// work (an origin known to want Basic auth, a registry known to lack the referrers API), so
/// that forgetting costs a request, never a wrong answer.
pub fn bound<T>(set: &mut HashSet<T>, max: usize) {
    if set.len() >= max {
        set.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_past_the_bound_are_counted_as_other() {
        let mut c = FoldedCounts::new(3, 8);
        for i in 0..400 {
            c.add(&format!("host{i}.example"), "2xx");
        }
        c.add("host1.example", "5xx");
        let hosts: std::collections::BTreeSet<&str> = c.iter().map(|(h, _, _)| h).collect();
        assert_eq!(
            hosts.into_iter().collect::<Vec<_>>(),
            ["host0.example", "host1.example", "host2.example", "other"]
        );
        let other: u64 = c.iter().filter(|(h, _, _)| *h == OTHER).map(|x| x.2).sum();
        assert_eq!(other, 397, "every event is still counted");
        assert!(
            c.iter().any(|x| x == ("host1.example", "5xx", 1)),
            "named stay named"
        );
        assert_eq!(c.iter().count(), 5);
    }

    #[test]
    fn both_labels_are_bounded() {
        let mut c = FoldedCounts::new(2, 2);
        for i in 0..50 {
            for j in 0..50 {
                c.add(&format!("realm{i}"), &format!("repository:r{j}:pull"));
            }
        }
        assert!(c.iter().count() <= 9, "{}", c.iter().count());
        assert_eq!(c.iter().map(|x| x.2).sum::<u64>(), 2500);
    }

    #[test]
    fn a_value_spelled_other_is_not_a_named_one() {
        let mut f = LabelFold::new(1);
        assert_eq!(f.fold(OTHER), OTHER);
        assert_eq!(f.fold("a"), "a");
        assert_eq!(f.fold("b"), OTHER);
        assert_eq!(f.fold("a"), "a");
    }

    #[test]
    fn bounded_sets_start_again_when_full() {
        let mut s: HashSet<u32> = (0..4).collect();
        bound(&mut s, 5);
        assert_eq!(s.len(), 4);
        s.insert(4);
        bound(&mut s, 5);
        assert!(s.is_empty());
    }
}
