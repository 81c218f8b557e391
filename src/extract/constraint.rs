//! Semantic version constraints as Flux evaluates them: Masterminds/semver v3 (`NewConstraint`,
//! `Check`) with tags parsed as Flux's `version.ParseVersion` does (strict SemVer 2.0 after one
//! optional leading `v`). The grammar is Masterminds' own regular expressions, so what Flux
//! accepts parses here and what it rejects is rejected.
//!
//! Rules worth knowing (all from Masterminds v3.4):
//! - `||` separates OR groups; inside a group, constraints separated by spaces or commas all
//!   apply (AND). `1.2 - 1.4.5` is rewritten to `>= 1.2, <= 1.4.5`.
//! - `x`, `X` and `*` are wildcards; a missing minor or patch is a wildcard too (`1.2` = `1.2.x`).
//!   A plain (or `=`) constraint with a wildcard is a tilde range: `1.2.x` = `~1.2`.
//! - `~1.2.3` = `>=1.2.3 <1.3.0`; `~1` = `>=1 <2`; `^1.2.3` = `>=1.2.3 <2`; `^0.2.3` =
//!   `>=0.2.3 <0.3`; `^0.0.3` = `>=0.0.3 <0.0.4`.
//! - A pre-release version matches only when some constraint of its OR group names a pre-release
//!   (`>= 1.2.3-0`); `*` alone never matches a pre-release.
//! - Build metadata is ignored when comparing.

use std::cmp::Ordering;
use std::fmt;
use std::sync::LazyLock;

use regex::Regex;
use semver::{Prerelease, Version};

/// Masterminds' `cvRegex`: a loose version with optional wildcards, pre-release and metadata.
const CV: &str = r"v?([0-9|x|X|\*]+)(\.[0-9|x|X|\*]+)?(\.[0-9|x|X|\*]+)?(-([0-9A-Za-z\-]+(\.[0-9A-Za-z\-]+)*))?(\+([0-9A-Za-z\-]+(\.[0-9A-Za-z\-]+)*))?";
/// Masterminds' operator alternation, in its order (the order decides which alternative wins).
const OPS: &str = r"=||!=|>|<|>=|=>|<=|=<|~|~>|\^";

fn compile(pattern: String) -> Regex {
    // The patterns are constants of this module: a failure is a bug caught by every test run.
    #[allow(clippy::expect_used)]
    Regex::new(&pattern).expect("constant semver constraint pattern compiles")
}

static CONSTRAINT: LazyLock<Regex> =
    LazyLock::new(|| compile(format!(r"^\s*({OPS})\s*({CV})\s*$")));
static RANGE: LazyLock<Regex> = LazyLock::new(|| compile(format!(r"\s*({CV})\s+-\s+({CV})\s*")));
static FIND: LazyLock<Regex> = LazyLock::new(|| compile(format!(r"({OPS})\s*({CV})")));
static VALID: LazyLock<Regex> = LazyLock::new(|| {
    compile(format!(
        r"^(\s*({OPS})\s*({CV})\s*)((?:\s+|,\s*)({OPS})\s*({CV})\s*)*$"
    ))
});

/// A constraint that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("improper semver constraint {constraint:?}: {problem}")]
pub struct ConstraintError {
    /// The constraint as written.
    pub constraint: String,
    /// What is wrong with it.
    pub problem: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    TildeOrEqual,
    NotEqual,
    Greater,
    Less,
    GreaterEqual,
    LessEqual,
    Tilde,
    Caret,
}

impl Op {
    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "" | "=" => Op::TildeOrEqual,
            "!=" => Op::NotEqual,
            ">" => Op::Greater,
            "<" => Op::Less,
            ">=" | "=>" => Op::GreaterEqual,
            "<=" | "=<" => Op::LessEqual,
            "~" | "~>" => Op::Tilde,
            "^" => Op::Caret,
            _ => return None,
        })
    }
}

/// One comparison, e.g. `>=1.2.x`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Comparator {
    op: Op,
    /// The version compared against, wildcards filled with 0 (`1.x` → `1.0.0`).
    con: Version,
    /// A wildcard somewhere (`*`, `1.x`, `1.2.x`, `1`, `1.2`).
    dirty: bool,
    /// The minor part is a wildcard (`1.x`, `1`).
    minor_dirty: bool,
    /// The patch part is a wildcard (`1.2.x`, `1.2`).
    patch_dirty: bool,
}

/// A parsed Masterminds/semver constraint (see the module documentation for the rules).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SemverConstraint {
    text: String,
    /// OR groups of AND-ed comparators, each with whether it names a pre-release.
    groups: Vec<(Vec<Comparator>, bool)>,
}

impl fmt::Display for SemverConstraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn is_x(s: &str) -> bool {
    matches!(s, "x" | "X" | "*")
}

/// Masterminds' `rewriteRange`: `A - B` becomes `>= A, <= B `.
fn rewrite_ranges(input: &str) -> String {
    let mut out = input.to_string();
    for caps in RANGE.captures_iter(input) {
        let (Some(whole), Some(from), Some(to)) = (caps.get(0), caps.get(1), caps.get(11)) else {
            continue;
        };
        let replacement = format!(">= {}, <= {} ", from.as_str(), to.as_str());
        out = out.replacen(whole.as_str(), &replacement, 1);
    }
    out
}

impl SemverConstraint {
    /// Parse a constraint as Masterminds' `NewConstraint` does.
    pub fn parse(text: &str) -> Result<Self, ConstraintError> {
        let err = |problem: &str| ConstraintError {
            constraint: text.to_string(),
            problem: problem.to_string(),
        };
        if text.len() > 1024 {
            return Err(err("longer than 1024 characters"));
        }
        let rewritten = rewrite_ranges(text);
        let mut groups = Vec::new();
        for segment in rewritten.split("||") {
            if !VALID.is_match(segment) {
                return Err(err(&format!(
                    "{:?} is not a list of comparisons like \">= 1.2.0, < 2.0.0\"",
                    segment.trim()
                )));
            }
            let mut comparators = Vec::new();
            let mut has_pre = false;
            for m in FIND.find_iter(segment) {
                let c = parse_comparator(m.as_str()).map_err(|p| err(&p))?;
                has_pre |= !c.con.pre.is_empty();
                comparators.push(c);
            }
            if comparators.is_empty() {
                return Err(err("no comparison found"));
            }
            groups.push((comparators, has_pre));
        }
        Ok(SemverConstraint {
            text: text.to_string(),
            groups,
        })
    }

    /// The constraint as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `v` satisfies the constraint (Masterminds' `Check`).
    pub fn matches(&self, v: &Version) -> bool {
        self.groups
            .iter()
            .any(|(comparators, has_pre)| comparators.iter().all(|c| c.check(v, *has_pre)))
    }
}

fn parse_number(part: &str) -> Result<u64, String> {
    if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{part:?} is not a number"));
    }
    part.parse::<u64>()
        .map_err(|_| format!("{part:?} is too large"))
}

fn parse_comparator(s: &str) -> Result<Comparator, String> {
    let caps = CONSTRAINT
        .captures(s)
        .ok_or_else(|| format!("{s:?} is not a comparison"))?;
    let group = |i: usize| caps.get(i).map_or("", |m| m.as_str());
    let op = Op::parse(group(1)).ok_or_else(|| format!("unknown operator {:?}", group(1)))?;
    let (major, minor, patch) = (group(3), group(4), group(5));
    let minor = minor.strip_prefix('.').unwrap_or(minor);
    let patch = patch.strip_prefix('.').unwrap_or(patch);
    let pre = group(7);
    let (mut dirty, mut minor_dirty, mut patch_dirty) = (false, false, false);
    let (ma, mi, pa) = if is_x(major) {
        dirty = true;
        (0, 0, 0)
    } else if is_x(minor) || minor.is_empty() {
        dirty = true;
        minor_dirty = true;
        (parse_number(major)?, 0, 0)
    } else if is_x(patch) || patch.is_empty() {
        dirty = true;
        patch_dirty = true;
        (parse_number(major)?, parse_number(minor)?, 0)
    } else {
        (
            parse_number(major)?,
            parse_number(minor)?,
            parse_number(patch)?,
        )
    };
    let mut con = Version::new(ma, mi, pa);
    if !pre.is_empty() {
        con.pre = Prerelease::new(pre).map_err(|e| format!("pre-release {pre:?}: {e}"))?;
    }
    Ok(Comparator {
        op,
        con,
        dirty,
        minor_dirty,
        patch_dirty,
    })
}

/// SemVer precedence: major, minor, patch, then pre-release (none ranks above any); build
/// metadata is ignored.
fn precedence(a: &Version, b: &Version) -> Ordering {
    (a.major, a.minor, a.patch, &a.pre).cmp(&(b.major, b.minor, b.patch, &b.pre))
}

impl Comparator {
    fn check(&self, v: &Version, include_pre: bool) -> bool {
        if !v.pre.is_empty() && !include_pre {
            return false;
        }
        let c = &self.con;
        match self.op {
            Op::TildeOrEqual => {
                if self.dirty {
                    self.tilde(v)
                } else {
                    precedence(v, c) == Ordering::Equal
                }
            }
            Op::Tilde => self.tilde(v),
            Op::NotEqual => {
                if self.dirty {
                    if c.major != v.major {
                        return true;
                    }
                    if c.minor != v.minor && !self.minor_dirty {
                        return true;
                    } else if self.minor_dirty {
                        return false;
                    } else if c.patch != v.patch && !self.patch_dirty {
                        return true;
                    } else if self.patch_dirty {
                        if !v.pre.is_empty() || !c.pre.is_empty() {
                            return v.pre != c.pre;
                        }
                        return false;
                    }
                }
                precedence(v, c) != Ordering::Equal
            }
            Op::Greater => {
                if !self.dirty {
                    return precedence(v, c) == Ordering::Greater;
                }
                if v.major > c.major {
                    true
                } else if v.major < c.major || self.minor_dirty {
                    false
                } else if self.patch_dirty {
                    v.minor > c.minor
                } else {
                    precedence(v, c) == Ordering::Greater
                }
            }
            Op::Less => precedence(v, c) == Ordering::Less,
            Op::GreaterEqual => precedence(v, c) != Ordering::Less,
            Op::LessEqual => {
                if !self.dirty {
                    return precedence(v, c) != Ordering::Greater;
                }
                !(v.major > c.major
                    || (v.major == c.major && v.minor > c.minor && !self.minor_dirty))
            }
            Op::Caret => self.caret(v),
        }
    }

    fn tilde(&self, v: &Version) -> bool {
        let c = &self.con;
        if precedence(v, c) == Ordering::Less {
            return false;
        }
        // ~0.0.0 (also `*`) accepts everything at or above it.
        if c.major == 0 && c.minor == 0 && c.patch == 0 && !self.minor_dirty && !self.patch_dirty {
            return true;
        }
        if v.major != c.major {
            return false;
        }
        v.minor == c.minor || self.minor_dirty
    }

    fn caret(&self, v: &Version) -> bool {
        let c = &self.con;
        if precedence(v, c) == Ordering::Less {
            return false;
        }
        if c.major > 0 || self.minor_dirty {
            return v.major == c.major;
        }
        if v.major > 0 {
            return false;
        }
        if c.minor > 0 || self.patch_dirty {
            return v.minor == c.minor;
        }
        if v.minor > 0 {
            return false;
        }
        v.patch == c.patch
    }
}

/// A tag as Flux reads it (`version.ParseVersion`): strict SemVer 2.0 after one optional
/// leading `v`; anything else is not a version and is ignored.
pub fn parse_tag(tag: &str) -> Option<Version> {
    Version::parse(tag.strip_prefix('v').unwrap_or(tag)).ok()
}

/// The tag Flux would pick: the highest version satisfying `constraint` among `tags` that match
/// `filter` (Flux's `semverFilter`, applied to the tag string first). Returns the tag as listed.
/// Equal versions (`1.0.0` and `v1.0.0`) keep the first listed; [`highest_tags`] gives them all.
pub fn pick_highest(
    tags: &[String],
    constraint: &SemverConstraint,
    filter: Option<&Regex>,
) -> Option<String> {
    highest_tags(tags, constraint, filter).into_iter().next()
}

/// Every tag of the highest version satisfying `constraint` (after `filter`), as listed: more
/// than one when versions of equal precedence tie (`1.0.0` and `v1.0.0`). Flux sorts them with
/// an unstable sort, so which of them it pulls cannot be told: each must be checked.
pub fn highest_tags(
    tags: &[String],
    constraint: &SemverConstraint,
    filter: Option<&Regex>,
) -> Vec<String> {
    highest_by(tags, constraint, filter, parse_tag)
}

/// [`highest_tags`] over a chart's tags as Helm's registry client lists them (Flux's
/// source-controller picks among those): `_` read as `+`, strict SemVer only, so neither
/// `v1.0.0` nor `1.x` is a version there. Returns the tags as the registry spells them.
pub fn highest_helm_tags(tags: &[String], constraint: &SemverConstraint) -> Vec<String> {
    highest_by(tags, constraint, None, parse_helm_tag)
}

/// A chart's tag as Helm lists it: `_` as `+`, then strict SemVer.
pub fn parse_helm_tag(tag: &str) -> Option<Version> {
    Version::parse(&tag.replace('_', "+")).ok()
}

fn highest_by(
    tags: &[String],
    constraint: &SemverConstraint,
    filter: Option<&Regex>,
    parse: fn(&str) -> Option<Version>,
) -> Vec<String> {
    let mut best: Option<Version> = None;
    let mut tied: Vec<&String> = Vec::new();
    for tag in tags {
        if filter.is_some_and(|f| !f.is_match(tag)) {
            continue;
        }
        let Some(v) = parse(tag) else { continue };
        if !constraint.matches(&v) {
            continue;
        }
        match best.as_ref().map(|b| precedence(&v, b)) {
            None | Some(Ordering::Greater) => {
                best = Some(v);
                tied = vec![tag];
            }
            Some(Ordering::Equal) if !tied.contains(&tag) => tied.push(tag),
            _ => {}
        }
    }
    tied.into_iter().cloned().collect()
}

/// How many of `tags` (those that match `filter`) are versions at all, as [`pick_highest`]
/// reads them: cosign's `sha256-….sig` tags and `latest` are not.
pub fn count_versions(tags: &[String], filter: Option<&Regex>) -> usize {
    tags.iter()
        .filter(|t| filter.is_none_or(|f| f.is_match(t)))
        .filter(|t| parse_tag(t).is_some())
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(constraint: &str, version: &str) -> bool {
        let c = SemverConstraint::parse(constraint)
            .unwrap_or_else(|e| panic!("{constraint:?} should parse: {e}"));
        let v = parse_tag(version).unwrap_or_else(|| panic!("{version:?} should parse"));
        c.matches(&v)
    }

    #[test]
    fn masterminds_cases() {
        // (constraint, version, expected), many from Masterminds' own constraints_test.go.
        let cases = [
            ("*", "1.2.3", true),
            ("*", "1.2.3-alpha.1", false),
            ("=2.0.0", "2.0.0", true),
            ("2.0.0", "2.0.1", false),
            ("1.2.3", "v1.2.3", true),
            ("v1.2.3", "1.2.3", true),
            ("!=4.1.0", "4.1.0", false),
            ("!=4.1.0", "4.1.1", true),
            ("!=4.1", "4.1.0", false),
            ("!=4.1", "4.1.1", false),
            ("!=4.1", "5.1.0-alpha.1", false),
            ("!=4.1-alpha", "4.1.0", true),
            ("!=4.x", "5.1.0", true),
            ("!=4.x", "4.1.0", false),
            ("!=4.1.x", "4.2.0", true),
            ("!=4.2.x", "4.2.3", false),
            (">1.1", "1.2.0", true),
            (">1.1", "1.1.9", false),
            (">11", "11.1.0", false),
            (">11", "12.0.0", true),
            (">1.1.1", "1.1.2", true),
            ("<1.x", "1.1.1", false),
            ("<1.x", "0.1.1", true),
            ("<1.x", "2.0.0", false),
            ("<=1.1", "1.1.9", true),
            ("<=1.1", "1.2.0", false),
            ("<=1.x", "1.9.9", true),
            ("<=1.x", "2.0.0", false),
            (">=1.1", "1.1.0", true),
            ("=>1.1", "1.0.9", false),
            ("=<1.1", "1.1.0", true),
            ("~1.2.3", "1.2.4", true),
            ("~1.2.3", "1.3.0", false),
            ("~1.2", "1.2.9", true),
            ("~1", "1.9.0", true),
            ("~1", "2.0.0", false),
            ("~1.x", "1.9.0", true),
            ("~*", "2.1.1", true),
            ("~>1.2.3", "1.2.9", true),
            ("1.2.x", "1.2.7", true),
            ("1.2.x", "1.3.0", false),
            ("1.x", "1.9.9", true),
            ("1.x", "2.0.0", false),
            ("1.2", "1.2.5", true),
            ("^1.2.3", "1.9.9", true),
            ("^1.2.3", "2.0.0", false),
            ("^1.2.3", "1.2.2", false),
            ("^1.2", "1.2.0", true),
            ("^1", "1.9.0", true),
            ("^1.x", "1.0.0", true),
            ("^0.2.3", "0.2.9", true),
            ("^0.2.3", "0.3.0", false),
            ("^0.2", "0.2.0", true),
            ("^0.2", "0.3.0", false),
            ("^0.0.3", "0.0.3", true),
            ("^0.0.3", "0.0.4", false),
            ("^0.0", "0.0.9", true),
            ("^0.0", "0.1.0", false),
            ("^0", "0.9.9", true),
            ("^0", "1.0.0", false),
        ];
        for (c, v, want) in cases {
            assert_eq!(check(c, v), want, "{c:?} vs {v:?}");
        }
    }

    #[test]
    fn and_or_and_hyphen_ranges() {
        assert!(check(">=1.0.0 <2.0.0", "1.5.0"));
        assert!(!check(">=1.0.0 <2.0.0", "2.0.0"));
        assert!(check(">=1.0, <2.0", "1.9.9"));
        assert!(!check(">=1.0, <2.0", "0.9.0"));
        assert!(check(">= 1.0.0, < 2.0.0", "1.0.0"));
        assert!(check("^1.2 || ^3.0", "3.4.0"));
        assert!(!check("^1.2 || ^3.0", "2.4.0"));
        assert!(check("1.2.3 - 1.4.5", "1.4.5"));
        assert!(!check("1.2.3 - 1.4.5", "1.4.6"));
        assert!(!check("1.2.3 - 1.4.5", "1.2.2"));
        assert!(check("1.2 - 1.4.5 || 3.x", "3.1.0"));
        assert!(check(">=6.0.0 <7.0.0", "6.9.4"));
        assert!(check(">= 6.0.0", "7.0.0"));
    }

    #[test]
    fn prereleases_need_a_prerelease_in_their_group() {
        assert!(!check(">=1.0.0", "1.5.0-rc.1"));
        assert!(check(">=1.0.0-0", "1.5.0-rc.1"));
        // The whole AND group opts in, not only the comparator naming the pre-release.
        assert!(check(">=1.0.0-0 <2.0.0", "1.5.0-rc.1"));
        // ... but not another OR group.
        assert!(!check(">=3.0.0-0 || >=1.0.0", "1.5.0-rc.1"));
        // Flux's documented example (ocirepositories.md): ">= 6.1.x-0".
        assert!(check(">= 6.1.x-0", "6.1.5-rc.1"));
        assert!(check(">= 6.1.x-0", "6.2.0"));
        assert!(!check(">= 6.1.x-0", "6.0.9"));
        // Pre-release ordering is SemVer's: numeric identifiers compare as numbers.
        assert!(check(">1.0.0-rc.2", "1.0.0-rc.10"));
        assert!(!check("<1.0.0", "1.0.0-rc.1"));
        assert!(check("<1.0.0-0", "0.9.0"));
    }

    #[test]
    fn build_metadata_is_ignored() {
        assert!(check("=1.2.3", "1.2.3+build.5"));
        assert!(check("1.2.3+other", "1.2.3"));
    }

    #[test]
    fn improper_constraints_are_rejected() {
        for bad in [
            "",
            "   ",
            "foo",
            ">=1.0.0 garbage",
            "1.2.3.4",
            "~",
            ">=a.b",
            "1||",
        ] {
            assert!(
                SemverConstraint::parse(bad).is_err(),
                "{bad:?} should not parse"
            );
        }
        let e = SemverConstraint::parse("latest").unwrap_err();
        assert!(e.to_string().contains("latest"), "{e}");
    }

    #[test]
    fn tags_are_parsed_as_flux_does() {
        assert!(parse_tag("v1.2.3").is_some());
        assert!(parse_tag("1.2.3-rc.1+meta").is_some());
        for not_semver in [
            "latest",
            "1.2",
            "v1",
            "vv1.2.3",
            "01.2.3",
            "1.2.3.4",
            "sha256-abc.sig",
        ] {
            assert!(parse_tag(not_semver).is_none(), "{not_semver:?}");
        }
    }

    #[test]
    fn pick_highest_returns_the_original_tag() {
        let tags: Vec<String> = [
            "latest",
            "v6.1.0",
            "6.1.6",
            "6.2.0-rc.1",
            "v6.1.8",
            "6.0.0",
            "main-abc123",
            "7.0.0",
        ]
        .map(String::from)
        .to_vec();
        let c = SemverConstraint::parse("6.1.x").unwrap();
        assert_eq!(pick_highest(&tags, &c, None).as_deref(), Some("v6.1.8"));
        let c = SemverConstraint::parse(">=6.0.0 <7.0.0").unwrap();
        assert_eq!(pick_highest(&tags, &c, None).as_deref(), Some("v6.1.8"));
        let c = SemverConstraint::parse(">= 6.1.x-0").unwrap();
        assert_eq!(pick_highest(&tags, &c, None).as_deref(), Some("7.0.0"));
        // semverFilter is applied to the tag string before the constraint.
        let rc = Regex::new(".*-rc.*").unwrap();
        assert_eq!(
            pick_highest(&tags, &c, Some(&rc)).as_deref(),
            Some("6.2.0-rc.1")
        );
        let c = SemverConstraint::parse("*").unwrap();
        assert_eq!(pick_highest(&tags, &c, None).as_deref(), Some("7.0.0"));
        let c = SemverConstraint::parse("^8").unwrap();
        assert_eq!(pick_highest(&tags, &c, None), None);
        // Equal versions: the first listed wins.
        let twins: Vec<String> = ["v1.0.0", "1.0.0"].map(String::from).to_vec();
        let c = SemverConstraint::parse("1.0.0").unwrap();
        assert_eq!(pick_highest(&twins, &c, None).as_deref(), Some("v1.0.0"));
        // ...and all of them are the highest: Flux's unstable sort may pull either.
        let c = SemverConstraint::parse("*").unwrap();
        let tags: Vec<String> = ["0.9.0", "v1.0.0", "1.0.0", "1.0.0-rc.1", "1.0.0"]
            .map(String::from)
            .to_vec();
        assert_eq!(highest_tags(&tags, &c, None), ["v1.0.0", "1.0.0"]);
        assert!(highest_tags(&tags, &SemverConstraint::parse("^2").unwrap(), None).is_empty());
        // A chart's tags as Helm lists them: no `v`, `_` as `+` (build metadata ties).
        let chart: Vec<String> = ["v2.0.0", "1.0.0", "1.0.1_b", "1.0.1_a", "1.x"]
            .map(String::from)
            .to_vec();
        assert_eq!(highest_helm_tags(&chart, &c), ["1.0.1_b", "1.0.1_a"]);
        let with_signatures: Vec<String> = [
            "1.0.0",
            "latest",
            "sha256-ab.sig",
            "sha256-ab.att",
            "v2.0.0",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(count_versions(&with_signatures, None), 2);
        let rc = Regex::new("^v").unwrap();
        assert_eq!(count_versions(&with_signatures, Some(&rc)), 1);
    }
}
