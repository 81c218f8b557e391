//! A threshold counts signers, not signatures: `threshold: 2` needs two authorities each
//! satisfied by a different signer. One signature that two authorities accept (a certificate
//! with two SANs, overlapping keyless identities), or two signatures by the same key or the
//! same identity, stand for one signer and satisfy one authority. Pure.

use std::collections::{BTreeSet, HashMap};

/// One verified candidate: the authorities (indexes into `Rule::authorities`) it satisfied,
/// and who made it (see [`crate::verify::VerifiedSignature::signer`]).
pub(super) struct Verified {
    pub(super) authorities: Vec<usize>,
    pub(super) signer: Vec<String>,
}

/// The authorities counted towards a threshold: as many as can each be given a signer of its
/// own (a maximum matching of authorities to signers); signatures sharing any principal are
/// one signer.
pub(super) fn counted(verified: &[Verified]) -> BTreeSet<usize> {
    // Signers: the candidates joined by a shared principal.
    let mut parent: Vec<usize> = (0..verified.len()).collect();
    let mut first: HashMap<&str, usize> = HashMap::new();
    for (i, v) in verified.iter().enumerate() {
        for p in &v.signer {
            match first.get(p.as_str()) {
                Some(&j) => union(&mut parent, i, j),
                None => {
                    first.insert(p, i);
                }
            }
        }
    }
    // Each signer, and the authorities any of its signatures satisfied.
    let mut by_signer: HashMap<usize, BTreeSet<usize>> = HashMap::new();
    for (i, v) in verified.iter().enumerate() {
        let root = find(&mut parent, i);
        by_signer.entry(root).or_default().extend(&v.authorities);
    }
    let mut edges: HashMap<usize, Vec<usize>> = HashMap::new();
    for (signer, authorities) in &by_signer {
        for a in authorities {
            edges.entry(*a).or_default().push(*signer);
        }
    }
    let mut owner: HashMap<usize, usize> = HashMap::new();
    let mut authorities: Vec<usize> = edges.keys().copied().collect();
    authorities.sort_unstable();
    for a in &authorities {
        let mut seen = BTreeSet::new();
        augment(*a, &edges, &mut owner, &mut seen);
    }
    owner.values().copied().collect()
}

/// Kuhn's step: give authority `a` a signer, moving others along where that frees one.
fn augment(
    a: usize,
    edges: &HashMap<usize, Vec<usize>>,
    owner: &mut HashMap<usize, usize>,
    seen: &mut BTreeSet<usize>,
) -> bool {
    for s in edges.get(&a).into_iter().flatten() {
        if !seen.insert(*s) {
            continue;
        }
        let free = match owner.get(s).copied() {
            None => true,
            Some(other) => augment(other, edges, owner, seen),
        };
        if free {
            owner.insert(*s, a);
            return true;
        }
    }
    false
}

fn find(parent: &mut [usize], i: usize) -> usize {
    let mut r = i;
    while parent[r] != r {
        r = parent[r];
    }
    let mut j = i;
    while parent[j] != r {
        let next = parent[j];
        parent[j] = r;
        j = next;
    }
    r
}

fn union(parent: &mut [usize], a: usize, b: usize) {
    let (ra, rb) = (find(parent, a), find(parent, b));
    if ra != rb {
        parent[ra] = rb;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(authorities: &[usize], signer: &[&str]) -> Verified {
        Verified {
            authorities: authorities.to_vec(),
            signer: signer.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn one_signer_counts_once_whatever_it_signed() {
        // One signature two authorities accept: one.
        assert_eq!(counted(&[v(&[0, 1], &["san:a", "san:b"])]).len(), 1);
        // Two signatures by one key, each accepted by another authority: one.
        assert_eq!(
            counted(&[v(&[0], &["key:k"]), v(&[1], &["key:k"])]).len(),
            1
        );
        // A certificate's SAN shared with another signature joins them.
        let joined = [v(&[0], &["key:x", "san:a"]), v(&[1], &["san:a"])];
        assert_eq!(counted(&joined).len(), 1);
        // Two signers: two, even when the first could serve both authorities.
        let two = [v(&[0, 1], &["key:x"]), v(&[0], &["key:y"])];
        assert_eq!(counted(&two), BTreeSet::from([0, 1]));
        // Nothing verified: nothing counted.
        assert!(counted(&[]).is_empty());
    }
}
