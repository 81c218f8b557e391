//! Image patterns: canonical hosts, `*`/`**` globs, specificity, and the index that tries a
//! name only against the patterns that can match it. Must not know about rules or files.

use std::collections::{BTreeMap, BTreeSet};

use globset::GlobMatcher;

/// An image pattern as matched (canonical host), compiled.
#[derive(Debug, Clone)]
pub(super) struct Pattern {
    pub(super) text: String,
    pub(super) glob: GlobMatcher,
    /// The length of its literal prefix: the longer, the more specific.
    pub(super) specificity: usize,
}

/// A rule's patterns, indexed by the literal text every name they match starts with, so that
/// a name is tried only against the patterns that can match it (many patterns stay cheap).
#[derive(Debug, Clone, Default)]
pub(super) struct Patterns {
    pub(super) list: Vec<Pattern>,
    by_prefix: BTreeMap<String, Vec<usize>>,
    prefix_lengths: BTreeSet<usize>,
}

impl Patterns {
    pub(super) fn new(list: Vec<Pattern>) -> Patterns {
        let mut by_prefix: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        let mut prefix_lengths = BTreeSet::new();
        for (i, p) in list.iter().enumerate() {
            let prefix = required_prefix(&p.text);
            prefix_lengths.insert(prefix.len());
            by_prefix.entry(prefix.to_string()).or_default().push(i);
        }
        Patterns {
            list,
            by_prefix,
            prefix_lengths,
        }
    }

    /// The patterns that match `name`.
    pub(super) fn matching<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Pattern> + 'a {
        self.prefix_lengths
            .iter()
            .filter_map(move |&n| name.get(..n))
            .filter_map(|prefix| self.by_prefix.get(prefix))
            .flatten()
            .filter_map(|&i| self.list.get(i))
            .filter(move |p| p.glob.is_match(name))
    }
}

/// The text every name a pattern matches starts with: the pattern up to its first wildcard,
/// class, alternation or escape (a `/` before `**` stays a literal `/` in the match).
fn required_prefix(pattern: &str) -> &str {
    &pattern[..pattern
        .find(['*', '?', '[', '{', '\\'])
        .unwrap_or(pattern.len())]
}

/// A pattern over repository names: `*` stays within one path segment, `**` crosses them.
pub(super) fn segment_glob(pattern: &str) -> Result<GlobMatcher, globset::Error> {
    globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map(|g| g.compile_matcher())
}

/// A pattern's registry host in the one spelling that references have (see
/// [`crate::reference::canonical_host`]), so that `GHCR.IO/acme/**` and `ghcr.io:443/acme/**`
/// mean what `ghcr.io/acme/**` means. An alternation of hosts is made of canonical hosts too
/// (`{index.docker.io,quay.io}` is `{docker.io,quay.io}`: references name Docker Hub
/// `docker.io`, so the first spelling would never match it). A host with other wildcards is only
/// lowercased.
pub(super) fn canonical_pattern(pattern: &str) -> Result<String, String> {
    if pattern.starts_with(crate::reference::LAYOUT_PREFIX) {
        return Ok(pattern.to_string());
    }
    match pattern.split_once('/') {
        Some((first, rest)) if crate::reference::is_host_component(first) => {
            let balanced = first.matches('{').count() == first.matches('}').count();
            let host = if first.contains('{') && balanced {
                canonical_alternation(first)?
            } else if first.contains(['*', '?', '[', '{']) {
                // An alternation that spans a `/`, or wildcards: lowercased only.
                first.to_ascii_lowercase()
            } else {
                crate::reference::canonical_host(first)?
            };
            Ok(format!("{host}/{rest}"))
        }
        _ => Ok(pattern.to_string()),
    }
}

/// A host with one `{a,b,…}` alternation (and literal text around it) as an alternation of the
/// whole hosts it spells, each canonical: `registry.{A,b}.io:443` is `{registry.a.io,registry.b.io}`
/// (one with `*`, `?` or `[` is only lowercased, as a host with wildcards is).
fn canonical_alternation(host: &str) -> Result<String, String> {
    let nested = || format!("{host:?}: one alternation of hosts, without nesting, is supported");
    let (before, rest) = host.split_once('{').ok_or_else(nested)?;
    let (inside, after) = rest.split_once('}').ok_or_else(nested)?;
    if inside.contains('{') || after.contains(['{', '}']) || before.contains('}') {
        return Err(nested());
    }
    let mut hosts: Vec<String> = Vec::new();
    for alternative in inside.split(',') {
        let whole = format!("{before}{alternative}{after}");
        let whole = if whole.contains(['*', '?', '[']) {
            whole.to_ascii_lowercase()
        } else {
            crate::reference::canonical_host(&whole)?
        };
        if !hosts.contains(&whole) {
            hosts.push(whole);
        }
    }
    Ok(match hosts.as_slice() {
        [one] => one.clone(),
        _ => format!("{{{}}}", hosts.join(",")),
    })
}

/// Whether a pattern can match a repository name at all: names are `host/repository` (the
/// host has a `.` or a `:` or is `localhost`) or `oci-layout:PATH`, so a pattern like `nginx`
/// or `acme/app` (Docker Hub short forms) would silently match nothing.
pub(super) fn can_match_a_name(pattern: &str) -> bool {
    if pattern.starts_with(crate::reference::LAYOUT_PREFIX) {
        return true;
    }
    let first = pattern.split('/').next().unwrap_or(pattern);
    first.contains(['*', '?', '[', '{'])
        || (pattern.contains('/') && crate::reference::is_host_component(first))
}

pub(super) fn literal_prefix_len(pattern: &str) -> usize {
    pattern.find(['*', '?', '[', '{']).unwrap_or(pattern.len())
}

// ---------------------------------------------------------------------------------------------
// Validation

/// A name a pattern matches: wildcards filled in.
pub(super) fn witness_of(pattern: &str) -> String {
    pattern.replace("**", "x/x").replace(['*', '?'], "x")
}
