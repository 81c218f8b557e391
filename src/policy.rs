//! The policy file (`apiVersion: ocigate.dev/v1alpha1`, `kind: Policy`): parsing and validation
//! with file:line:column errors, matching a reference to its rule, and turning verification
//! outcomes into a verdict. No crypto and no I/O: files are read through a caller's closure.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use globset::GlobMatcher;

use crate::failure::Failure;
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

mod read;
use read::{RawAuthority, RawIdentity, RawPolicy, RawRule};

use crate::error_chain;
pub use crate::trust::Matcher;
use crate::trust::{PublicKey, TrustRoot};
use crate::verify::{Rejection, SignedIdentity, VerifiedSignature};

pub const API_VERSION: &str = "ocigate.dev/v1alpha1";
pub const KIND: &str = "Policy";

/// One problem in a policy file, at a position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub line: u64,
    pub column: u64,
    pub message: String,
}

/// A policy that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    #[error("policy {}: cannot read the file", file.display())]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", render_issues(file, issues))]
    Invalid { file: PathBuf, issues: Vec<Issue> },
}

impl PolicyError {
    /// Every problem as `file:line:column: message`, one per line.
    pub fn lines(&self) -> Vec<String> {
        match self {
            PolicyError::Read { .. } => vec![crate::error_chain(self)],
            PolicyError::Invalid { file, issues } => issues
                .iter()
                .map(|i| format!("{}:{}:{}: {}", file.display(), i.line, i.column, i.message))
                .collect(),
        }
    }
}

fn render_issues(file: &Path, issues: &[Issue]) -> String {
    match issues {
        [] => format!("{}: invalid policy", file.display()),
        [first, rest @ ..] => {
            let mut s = format!(
                "{}:{}:{}: {}",
                file.display(),
                first.line,
                first.column,
                first.message
            );
            if !rest.is_empty() {
                s.push_str(&format!(" (and {} more problems)", rest.len()));
            }
            s
        }
    }
}

/// What to do with references no rule matches (decided before any registry call).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NoMatch {
    #[default]
    Deny,
    Allow,
    Warn,
}

/// What a failed rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Deny.
    #[default]
    Enforce,
    /// Allow with a warning.
    Warn,
    /// Allow; the failure is only recorded.
    Audit,
}

/// Whether a Flux source (OCIRepository, HelmChart, a HelmRelease's chart) must also be
/// verified by Flux itself (`spec.verify` with provider cosign). Admission checks the artifact
/// once; Flux's own verification keeps checking each new revision it pulls afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FluxVerification {
    /// Flux's own verification is not required.
    #[default]
    Optional,
    /// A Flux source without `verify: {provider: cosign}` fails the rule.
    Required,
}

/// Transparency-log requirement of an authority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tlog {
    Skip,
    Optional,
    Required,
}

/// The verdict on one reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Allow,
    Deny,
    Warn,
}

pub use crate::trust::Identity;

/// How an authority is tied to signatures. `trust_root` names one of the policy's
/// `trustRoots`; None is the embedded public-good root.
#[derive(Debug, Clone)]
pub enum AuthorityKind {
    Key {
        key: PublicKey,
        tlog: Tlog,
        trust_root: Option<String>,
    },
    Keyless {
        trust_root: Option<String>,
        identities: Vec<Identity>,
        tlog: Tlog,
    },
}

#[derive(Debug, Clone)]
pub struct Authority {
    pub name: String,
    pub kind: AuthorityKind,
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    /// Where the rule's name stands in the policy file (line, column).
    position: (u64, u64),
    patterns: Patterns,
    excludes: Patterns,
    pub mode: Mode,
    pub threshold: usize,
    pub authorities: Vec<Authority>,
    pub signed_identity: SignedIdentity,
    pub annotations: BTreeMap<String, String>,
    /// Whether Flux sources must carry Flux's own cosign verification too.
    pub flux_verification: FluxVerification,
}

impl Rule {
    /// The specificity of this rule for `name` (longest literal prefix of a matching pattern),
    /// or None when it does not apply.
    fn specificity(&self, name: &str) -> Option<usize> {
        if self.excludes.matching(name).next().is_some() {
            return None;
        }
        self.patterns.matching(name).map(|p| p.specificity).max()
    }

    pub fn patterns(&self) -> impl Iterator<Item = &str> {
        self.patterns.list.iter().map(|p| p.text.as_str())
    }
}

/// An image pattern as matched (canonical host), compiled.
#[derive(Debug, Clone)]
struct Pattern {
    text: String,
    glob: GlobMatcher,
    /// The length of its literal prefix: the longer, the more specific.
    specificity: usize,
}

/// A rule's patterns, indexed by the literal text every name they match starts with, so that
/// a name is tried only against the patterns that can match it (many patterns stay cheap).
#[derive(Debug, Clone, Default)]
struct Patterns {
    list: Vec<Pattern>,
    by_prefix: BTreeMap<String, Vec<usize>>,
    prefix_lengths: BTreeSet<usize>,
}

impl Patterns {
    fn new(list: Vec<Pattern>) -> Patterns {
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
    fn matching<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Pattern> + 'a {
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

/// A trust root the policy names, parsed (with its verifier) once when the policy is read.
#[derive(Debug, Clone)]
pub struct TrustRootRef {
    pub name: String,
    pub root: Arc<TrustRoot>,
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub no_match: NoMatch,
    pub trust_roots: Vec<TrustRootRef>,
    pub rules: Vec<Rule>,
}

/// The rule a reference falls under.
#[derive(Debug)]
pub enum RuleMatch<'a> {
    Rule(&'a Rule),
    NoMatch(NoMatch),
    /// Two rules are equally specific for this reference: a policy error.
    Ambiguous(&'a Rule, &'a Rule),
}

impl Policy {
    /// Read and validate a policy file; key files are read relative to its directory.
    pub fn from_file(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        Policy::parse(&text, path, &|p: &Path| {
            std::fs::read_to_string(base.join(p))
        })
    }

    /// Parse and validate policy text. `read` loads files named by the policy (relative paths
    /// are the reader's to resolve); `file` only names the policy in errors.
    pub fn parse(
        text: &str,
        file: &Path,
        read: &dyn Fn(&Path) -> std::io::Result<String>,
    ) -> Result<Policy, PolicyError> {
        let invalid = |mut issues: Vec<Issue>| {
            issues.sort_by_key(|i| (i.line, i.column));
            PolicyError::Invalid {
                file: file.to_path_buf(),
                issues,
            }
        };
        let tree = read::tree(text).map_err(|i| invalid(vec![i]))?;
        let mut reader = read::Reader::new(text);
        let raw = reader.policy(&tree);
        let mut v = Validator {
            issues: reader.issues,
            read,
        };
        match raw.map(|raw| v.policy(raw)) {
            Some(policy) if v.issues.is_empty() => Ok(policy),
            _ => Err(invalid(v.issues)),
        }
    }

    /// A policy of one rule over every reference with one authority: what `verify --key` and
    /// `verify --certificate-identity … --certificate-oidc-issuer …` stand for.
    /// `rule` names the rule (the flag it came from), `authority` the signer as a person knows
    /// it (the key file, the identity).
    pub fn single_authority(
        rule: &str,
        authority: &str,
        kind: AuthorityKind,
        trust_roots: Vec<TrustRootRef>,
        annotations: BTreeMap<String, String>,
        signed_identity: SignedIdentity,
    ) -> Policy {
        let patterns = segment_glob("**")
            .map(|glob| {
                vec![Pattern {
                    text: "**".to_string(),
                    glob,
                    specificity: 0,
                }]
            })
            .unwrap_or_default();
        Policy {
            no_match: NoMatch::Deny,
            trust_roots,
            rules: vec![Rule {
                name: rule.to_string(),
                position: (0, 0),
                patterns: Patterns::new(patterns),
                excludes: Patterns::default(),
                mode: Mode::Enforce,
                threshold: 1,
                authorities: vec![Authority {
                    name: authority.to_string(),
                    kind,
                }],
                signed_identity,
                annotations,
                flux_verification: FluxVerification::Optional,
            }],
        }
    }

    /// The rule for a repository name (`registry/repository` or `oci-layout:PATH`).
    pub fn match_rule(&self, name: &str) -> RuleMatch<'_> {
        let mut best: Option<(usize, &Rule)> = None;
        let mut tie: Option<&Rule> = None;
        for rule in &self.rules {
            let Some(s) = rule.specificity(name) else {
                continue;
            };
            match best {
                Some((b, _)) if s < b => {}
                Some((b, _)) if s == b => tie = Some(rule),
                _ => {
                    best = Some((s, rule));
                    tie = None;
                }
            }
        }
        match (best, tie) {
            (Some((_, a)), Some(b)) => RuleMatch::Ambiguous(a, b),
            (Some((_, r)), None) => RuleMatch::Rule(r),
            (None, _) => RuleMatch::NoMatch(self.no_match),
        }
    }
}

/// How many characters of a value from the file an error message shows.
const SHOWN_CHARS: usize = 120;

/// At most `max` characters of `s`, with an ellipsis when some were cut.
fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// A value from the file inside a message, unquoted (for `backticks`): see [`shown`].
fn cut_escaped(s: &str) -> String {
    render(s, false)
}

/// A value from the file inside a message, quoted: control characters and bidirectional
/// overrides escaped, cut to [`SHOWN_CHARS`] characters as shown (the ellipsis and the full
/// length follow the closing quote).
fn shown(s: &str) -> String {
    render(s, true)
}

fn render(s: &str, quoted: bool) -> String {
    let mut out = String::new();
    let mut width = 0;
    for c in s.chars() {
        let piece = if quoted {
            crate::escape_text(&c.escape_debug().to_string())
        } else {
            crate::escape_text(c.encode_utf8(&mut [0; 4]))
        };
        let w = piece.chars().count();
        if width + w > SHOWN_CHARS {
            let total = s.chars().count();
            return if quoted {
                format!("\"{out}\"… ({total} characters)")
            } else {
                format!("{out}… ({total} characters)")
            };
        }
        width += w;
        out.push_str(&piece);
    }
    if quoted { format!("\"{out}\"") } else { out }
}

/// A pattern over repository names: `*` stays within one path segment, `**` crosses them.
fn segment_glob(pattern: &str) -> Result<GlobMatcher, globset::Error> {
    globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map(|g| g.compile_matcher())
}

/// A pattern's registry host in the one spelling that references have (see
/// [`crate::reference::canonical_host`]), so that `GHCR.IO/acme/**` and `ghcr.io:443/acme/**`
/// mean what `ghcr.io/acme/**` means. A host with wildcards is only lowercased.
fn canonical_pattern(pattern: &str) -> Result<String, String> {
    if pattern.starts_with(crate::reference::LAYOUT_PREFIX) {
        return Ok(pattern.to_string());
    }
    match pattern.split_once('/') {
        Some((first, rest)) if crate::reference::is_host_component(first) => {
            let host = if first.contains(['*', '?', '[', '{']) {
                first.to_ascii_lowercase()
            } else {
                crate::reference::canonical_host(first)?
            };
            Ok(format!("{host}/{rest}"))
        }
        _ => Ok(pattern.to_string()),
    }
}

/// Whether a pattern can match a repository name at all: names are `host/repository` (the
/// host has a `.` or a `:` or is `localhost`) or `oci-layout:PATH`, so a pattern like `nginx`
/// or `acme/app` (Docker Hub short forms) would silently match nothing.
fn can_match_a_name(pattern: &str) -> bool {
    if pattern.starts_with(crate::reference::LAYOUT_PREFIX) {
        return true;
    }
    let first = pattern.split('/').next().unwrap_or(pattern);
    first.contains(['*', '?', '[', '{'])
        || (pattern.contains('/') && crate::reference::is_host_component(first))
}

fn literal_prefix_len(pattern: &str) -> usize {
    pattern.find(['*', '?', '[', '{']).unwrap_or(pattern.len())
}

// ---------------------------------------------------------------------------------------------
// Validation

struct Validator<'r> {
    issues: Vec<Issue>,
    read: &'r dyn Fn(&Path) -> std::io::Result<String>,
}

impl Validator<'_> {
    fn at<T>(&mut self, s: &Spanned<T>, message: impl Into<String>) {
        self.issues.push(Issue {
            line: s.referenced.line().max(1),
            column: s.referenced.column().max(1),
            message: message.into(),
        });
    }

    fn policy(&mut self, raw: RawPolicy) -> Policy {
        if let Some(v) = &raw.api_version
            && v.value != API_VERSION
        {
            let msg = format!(
                "apiVersion is {}; this ocigate reads {API_VERSION:?}",
                shown(&v.value)
            );
            self.at(v, msg);
        }
        if let Some(k) = &raw.kind
            && k.value != KIND
        {
            let msg = format!("kind is {}; expected {KIND:?}", shown(&k.value));
            self.at(k, msg);
        }

        let mut trust_roots = Vec::new();
        let mut root_names = BTreeSet::new();
        for tr in &raw.trust_roots {
            let name = tr.name.value.clone();
            if !root_names.insert(name.clone()) {
                self.at(
                    &tr.name,
                    format!("trust root {} is defined twice", shown(&name)),
                );
            }
            let Some(trusted_root) = &tr.trusted_root else {
                continue;
            };
            let root = if trusted_root.value == "embedded" {
                TrustRoot::embedded_shared()
                    .map(Arc::clone)
                    .map_err(|e| self.at(trusted_root, error_chain(&e)))
                    .ok()
            } else {
                let p = PathBuf::from(&trusted_root.value);
                match (self.read)(&p) {
                    // The root keeps its name as given (evidence names it); the message shows
                    // it cut.
                    Ok(text) => TrustRoot::from_json(&text, &name)
                        .map(Arc::new)
                        .map_err(|e| {
                            let msg = error_chain(&e).replace(&name, &cut_escaped(&name));
                            self.at(trusted_root, msg)
                        })
                        .ok(),
                    Err(e) => {
                        let msg =
                            format!("trustedRoot file {}: {e}", cut_escaped(&trusted_root.value));
                        self.at(trusted_root, msg);
                        None
                    }
                }
            };
            if let Some(root) = root {
                trust_roots.push(TrustRootRef { name, root });
            }
        }

        let mut keys: BTreeMap<String, PublicKey> = BTreeMap::new();
        let mut key_names = BTreeSet::new();
        for k in &raw.keys {
            let name = k.name.value.clone();
            if !key_names.insert(name.clone()) {
                self.at(&k.name, format!("key {} is defined twice", shown(&name)));
                continue;
            }
            let (text, origin, at) = match (&k.path, &k.pem) {
                _ if k.broken => continue,
                (Some(p), None) => match (self.read)(Path::new(&p.value)) {
                    Ok(t) => (t, cut_escaped(&p.value), p),
                    Err(e) => {
                        let msg = format!(
                            "key {}: cannot read {}: {e}",
                            shown(&name),
                            cut_escaped(&p.value)
                        );
                        self.at(p, msg);
                        continue;
                    }
                },
                (None, Some(pem)) => (
                    pem.value.clone(),
                    format!("{} (inline pem)", shown(&name)),
                    pem,
                ),
                _ => {
                    let msg = format!("key {}: give exactly one of path or pem", shown(&name));
                    self.at(&k.name, msg);
                    continue;
                }
            };
            match PublicKey::from_pem(&text, &origin) {
                Ok(pk) => {
                    keys.insert(name, pk);
                }
                Err(e) => self.at(at, error_chain(&e)),
            }
        }

        let mut rules = Vec::new();
        if let Some(raw_rules) = raw.rules {
            if raw_rules.value.is_empty() {
                self.at(
                    &raw_rules,
                    "rules is empty: a policy needs at least one rule",
                );
            }
            let mut rule_names = BTreeSet::new();
            for r in raw_rules.value {
                if !rule_names.insert(r.name.value.clone()) {
                    let msg = format!("rule {} is defined twice", shown(&r.name.value));
                    self.at(&r.name, msg);
                }
                if let Some(rule) = self.rule(r, &keys, &key_names, &root_names) {
                    rules.push(rule);
                }
            }
        }
        self.check_overlaps(&rules);
        Policy {
            no_match: raw.no_match,
            trust_roots,
            rules,
        }
    }

    /// An image pattern, validated, canonicalised and compiled (`*` within one path segment,
    /// `**` across).
    fn glob(&mut self, s: &Spanned<String>, rule: &str) -> Option<Pattern> {
        if s.value.is_empty() {
            self.at(s, format!("rule {rule}: empty image pattern"));
            return None;
        }
        if s.value.contains('@') {
            self.at(
                s,
                format!(
                    "rule {rule}: pattern {} names a digest; patterns match repository names",
                    shown(&s.value)
                ),
            );
            return None;
        }
        let canonical = match canonical_pattern(&s.value) {
            Ok(c) => c,
            Err(problem) => {
                self.at(
                    s,
                    format!("rule {rule}: pattern {}: {problem}", shown(&s.value)),
                );
                return None;
            }
        };
        match segment_glob(&canonical) {
            Ok(_) if !can_match_a_name(&canonical) => {
                self.at(
                    s,
                    format!(
                        "rule {rule}: pattern {} cannot match any reference: names are matched as \
                         registry/repository (Docker Hub's as docker.io/library/NAME) or \
                         oci-layout:PATH",
                        shown(&s.value)
                    ),
                );
                None
            }
            Ok(glob) => Some(Pattern {
                specificity: literal_prefix_len(&canonical),
                text: canonical,
                glob,
            }),
            Err(e) => {
                // globset's message repeats the pattern: keep only what is wrong with it.
                let kind = e.kind().to_string();
                self.at(
                    s,
                    format!("rule {rule}: bad pattern {}: {kind}", shown(&s.value)),
                );
                None
            }
        }
    }

    fn rule(
        &mut self,
        raw: RawRule,
        keys: &BTreeMap<String, PublicKey>,
        key_names: &BTreeSet<String>,
        roots: &BTreeSet<String>,
    ) -> Option<Rule> {
        let name = raw.name.value.clone();
        // The rule's name as messages show it.
        let label = shown(&name);
        let before = self.issues.len();
        let mut patterns = Vec::new();
        if let Some(images) = &raw.images {
            if images.value.is_empty() {
                self.at(images, format!("rule {label}: images is empty"));
            }
            for p in &images.value {
                if let Some(compiled) = self.glob(p, &label) {
                    patterns.push(compiled);
                }
            }
        }
        let mut excludes = Vec::new();
        for p in raw.exclude.iter().flatten() {
            if let Some(compiled) = self.glob(p, &label) {
                excludes.push(compiled);
            }
        }
        // Whether the rule matches what the file says it matches (the overlap check needs
        // that, even if another part of the rule is wrong).
        let patterns_ok =
            self.issues.len() == before && raw.images.is_some() && raw.exclude.is_some();
        let mut authorities = Vec::new();
        if let Some(raw_authorities) = &raw.authorities {
            if raw_authorities.value.is_empty() {
                self.at(
                    raw_authorities,
                    format!("rule {label}: authorities is empty; a rule needs at least one"),
                );
            }
            // One key counts once toward the threshold: the same key twice (under one name
            // or two) would let one signer stand for two.
            let mut key_authorities: BTreeMap<String, String> = BTreeMap::new();
            for (i, a) in raw_authorities.value.iter().enumerate() {
                let Some(auth) = self.authority(a, i, &label, keys, key_names, roots) else {
                    continue;
                };
                if let AuthorityKind::Key { key, .. } = &auth.kind {
                    match key_authorities.get(&key.fingerprint()) {
                        Some(first) => {
                            let msg = format!(
                                "rule {label}: authority {} has the same key as authority {}; \
                                 each authority of a rule needs its own key",
                                shown(&auth.name),
                                shown(first)
                            );
                            self.at(a, msg);
                        }
                        None => {
                            key_authorities.insert(key.fingerprint(), auth.name.clone());
                        }
                    }
                }
                authorities.push(auth);
            }
        }
        let threshold = match (&raw.threshold, &raw.authorities) {
            (None, _) => 1,
            (Some(t), authorities) => {
                if let Some(a) = authorities {
                    let n = a.value.len() as u64;
                    if t.value == 0 || t.value > n.max(1) {
                        self.at(
                            t,
                            format!(
                                "rule {label}: threshold {} must be between 1 and the number of authorities ({n})",
                                t.value
                            ),
                        );
                    }
                }
                usize::try_from(t.value).unwrap_or(usize::MAX)
            }
        };
        // A rule with another problem is still returned, for the overlap check: the policy
        // as a whole is refused anyway.
        if !patterns_ok {
            return None;
        }
        Some(Rule {
            name,
            position: (raw.name.referenced.line(), raw.name.referenced.column()),
            patterns: Patterns::new(patterns),
            excludes: Patterns::new(excludes),
            mode: raw.mode,
            threshold,
            authorities,
            signed_identity: raw.signed_identity.map(|s| s.value).unwrap_or_default(),
            annotations: raw.annotations,
            flux_verification: raw.flux_verification,
        })
    }

    fn authority(
        &mut self,
        a: &Spanned<RawAuthority>,
        index: usize,
        rule: &str,
        keys: &BTreeMap<String, PublicKey>,
        key_names: &BTreeSet<String>,
        roots: &BTreeSet<String>,
    ) -> Option<Authority> {
        match (&a.value.key, &a.value.keyless) {
            (Some(k), None) => {
                let kname = &k.name.value;
                let name = a.value.name.clone().unwrap_or_else(|| kname.clone());
                let trust_root = self.root_ref(&k.trust_root, rule, roots);
                match keys.get(kname) {
                    Some(key) => Some(Authority {
                        name,
                        kind: AuthorityKind::Key {
                            key: key.clone(),
                            tlog: a.value.tlog.unwrap_or(Tlog::Required),
                            trust_root,
                        },
                    }),
                    None => {
                        if !key_names.contains(kname) {
                            let msg = format!(
                                "rule {rule}: unknown key {} (keys defined: {})",
                                shown(kname),
                                shown_names(keys.keys())
                            );
                            self.at(&k.name, msg);
                        }
                        None
                    }
                }
            }
            (None, Some(kl)) => {
                let root = self.root_ref(&kl.trust_root, rule, roots);
                let mut identities = Vec::new();
                if let Some(ids) = &kl.identities {
                    if ids.value.is_empty() {
                        self.at(
                            ids,
                            format!("rule {rule}: keyless authority needs at least one identity"),
                        );
                    }
                    for id in &ids.value {
                        if let Some(i) = self.identity(id, rule) {
                            identities.push(i);
                        }
                    }
                }
                Some(Authority {
                    name: a
                        .value
                        .name
                        .clone()
                        .unwrap_or_else(|| format!("keyless[{index}]")),
                    kind: AuthorityKind::Keyless {
                        trust_root: root,
                        identities,
                        tlog: a.value.tlog.unwrap_or(Tlog::Required),
                    },
                })
            }
            // Its key or keyless part was malformed, and said so.
            _ if a.value.broken => None,
            _ => {
                self.at(
                    a,
                    format!(
                        "rule {rule}: authority {} needs exactly one of key or keyless",
                        index + 1
                    ),
                );
                None
            }
        }
    }

    /// A reference to a trust root by name; `embedded` always exists.
    fn root_ref(
        &mut self,
        r: &Option<Spanned<String>>,
        rule: &str,
        roots: &BTreeSet<String>,
    ) -> Option<String> {
        let r = r.as_ref()?;
        if r.value == "embedded" && !roots.contains("embedded") {
            return None;
        }
        if !roots.contains(&r.value) {
            let msg = format!(
                "rule {rule}: unknown trust root {} (trust roots defined: {})",
                shown(&r.value),
                shown_names(roots.iter())
            );
            self.at(r, msg);
        }
        Some(r.value.clone())
    }

    fn identity(&mut self, id: &Spanned<RawIdentity>, rule: &str) -> Option<Identity> {
        let v = &id.value;
        let issuer = self.matcher(&v.issuer, &v.issuer_reg_exp, id, rule, "issuer");
        let subject = self.matcher(&v.subject, &v.subject_reg_exp, id, rule, "subject");
        Some(Identity {
            issuer: issuer?,
            subject: subject?,
            github: crate::trust::GitHubWorkflow {
                trigger: v.github_workflow_trigger.clone(),
                sha: v.github_workflow_sha.clone(),
                name: v.github_workflow_name.clone(),
                repository: v.github_workflow_repository.clone(),
                git_ref: v.github_workflow_ref.clone(),
            },
        })
    }

    fn matcher(
        &mut self,
        exact: &Option<String>,
        re: &Option<Spanned<String>>,
        at: &Spanned<RawIdentity>,
        rule: &str,
        what: &str,
    ) -> Option<Matcher> {
        match (exact, re) {
            (Some(e), None) => Some(Matcher::Exact(e.clone())),
            (None, Some(r)) => match regex::Regex::new(&r.value) {
                Ok(re) => Some(Matcher::Regex(re)),
                Err(e) => {
                    // The last line says what is wrong; the lines before repeat the pattern.
                    let why = e.to_string();
                    let why = cut_escaped(why.lines().last().unwrap_or("").trim());
                    self.at(
                        r,
                        format!(
                            "rule {rule}: {what}RegExp {} is not a valid regular expression: {why}",
                            shown(&r.value)
                        ),
                    );
                    None
                }
            },
            // A field was malformed, and said so.
            (None, None) if at.value.broken => None,
            (None, None) => {
                self.at(
                    at,
                    format!("rule {rule}: identity needs {what} or {what}RegExp"),
                );
                None
            }
            (Some(_), Some(r)) => {
                self.at(
                    r,
                    format!("rule {rule}: give {what} or {what}RegExp, not both"),
                );
                None
            }
        }
    }

    /// Two rules with equally specific patterns that can match the same name are ambiguous;
    /// each such pair of rules is reported once. The candidates are the names the patterns
    /// themselves match (wildcards filled in) whose specificity both rules have: per pair of
    /// rules, one lookup per pattern in each rule, each trying only the patterns whose literal
    /// prefix the name starts with.
    fn check_overlaps(&mut self, rules: &[Rule]) {
        let specificities = |r: &Rule| -> BTreeSet<usize> {
            r.patterns.list.iter().map(|p| p.specificity).collect()
        };
        let all: Vec<BTreeSet<usize>> = rules.iter().map(specificities).collect();
        let witnesses: Vec<Vec<(usize, String)>> = rules
            .iter()
            .map(|r| {
                r.patterns
                    .list
                    .iter()
                    .map(|p| (p.specificity, witness_of(&p.text)))
                    .collect()
            })
            .collect();
        for (i, a) in rules.iter().enumerate() {
            for (j, b) in rules.iter().enumerate().skip(i + 1) {
                let candidates = witnesses[i]
                    .iter()
                    .filter(|(s, _)| all[j].contains(s))
                    .chain(witnesses[j].iter().filter(|(s, _)| all[i].contains(s)));
                let found = candidates.map(|(_, w)| w).find_map(|w| {
                    let sa = a.specificity(w)?;
                    (b.specificity(w)? == sa).then_some((w, sa))
                });
                let Some((w, s)) = found else {
                    continue;
                };
                let pattern_of = |r: &Rule| {
                    r.patterns
                        .matching(w)
                        .find(|p| p.specificity == s)
                        .map_or_else(String::new, |p| shown(&p.text))
                };
                let message = format!(
                    "rules {} and {} are equally specific and both match {} \
                     (patterns {} and {}); make one more specific or exclude",
                    shown(&a.name),
                    shown(&b.name),
                    shown(w),
                    pattern_of(a),
                    pattern_of(b),
                );
                self.issues.push(Issue {
                    line: b.position.0,
                    column: b.position.1,
                    message,
                });
            }
        }
    }
}

/// Names from the file in a message: each shown, at most ten, then how many more.
fn shown_names<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let names: Vec<&String> = names.collect();
    let mut out: Vec<String> = names.iter().take(10).map(|n| shown(n)).collect();
    if names.len() > 10 {
        out.push(format!("and {} more", names.len() - 10));
    }
    format!("[{}]", out.join(", "))
}

/// A name a pattern matches: wildcards filled in.
fn witness_of(pattern: &str) -> String {
    pattern.replace("**", "x/x").replace(['*', '?'], "x")
}

// ---------------------------------------------------------------------------------------------
// Evaluation

/// What verifying one candidate against each of a rule's authorities gave.
#[derive(Debug)]
pub struct CandidateOutcome {
    pub location: String,
    /// Indexed like `Rule::authorities`.
    pub results: Vec<Result<VerifiedSignature, Rejection>>,
}

/// The policy's judgement on the verification outcomes.
#[derive(Debug)]
pub struct Evaluation {
    pub verdict: Verdict,
    pub reasons: Vec<String>,
    pub evidence: Vec<VerifiedSignature>,
    /// Why the rule was not satisfied (None when it was).
    pub failure: Option<Failure>,
}

/// Most rejected signatures named in a decision's reasons (the rest are counted).
pub const MAX_REJECTIONS_SHOWN: usize = 5;

/// Apply `rule` to the outcomes. `looked` describes where signatures were looked for.
pub fn evaluate(rule: &Rule, outcomes: Vec<CandidateOutcome>, looked: &str) -> Evaluation {
    let mut evidence = Vec::new();
    let mut satisfied = BTreeSet::new();
    let mut failures = Vec::new();
    let mut most_telling: Option<(u8, Failure)> = None;
    let n_candidates = outcomes.len();
    for c in outcomes {
        let mut best: Option<Rejection> = None;
        let mut any_ok = false;
        for (i, r) in c.results.into_iter().enumerate() {
            match r {
                Ok(v) => {
                    satisfied.insert(i);
                    evidence.push(v);
                    any_ok = true;
                }
                Err(rej) => {
                    let better = best.as_ref().is_none_or(|b| rej.rank() > b.rank());
                    if better {
                        best = Some(rej);
                    }
                }
            }
        }
        if !any_ok && let Some(b) = best {
            if most_telling.is_none_or(|(rank, _)| b.rank() > rank) {
                most_telling = Some((b.rank(), b.class()));
            }
            failures.push((b.rank(), b.reason()));
        }
    }
    // The most telling rejections first, each said once, at most MAX_REJECTIONS_SHOWN of them:
    // a registry can plant any number of signatures.
    failures.sort_by_key(|f| std::cmp::Reverse(f.0));
    let mut said = BTreeSet::new();
    failures.retain(|(_, text)| said.insert(text.clone()));
    let fail_reasons = |mut reasons: Vec<String>| -> Vec<String> {
        let shown = failures.len().min(MAX_REJECTIONS_SHOWN);
        reasons.extend(failures[..shown].iter().map(|(_, text)| text.clone()));
        if failures.len() > shown {
            reasons.push(format!(
                "… and {} more rejected signature(s) (ocigate discover lists them)",
                failures.len() - shown
            ));
        }
        reasons
    };
    let ok = satisfied.len() >= rule.threshold;
    let reasons = if ok {
        let names: Vec<&str> = satisfied
            .iter()
            .map(|i| rule.authorities[*i].name.as_str())
            .collect();
        vec![format!(
            "verified by {} of {} required authorities: {}",
            satisfied.len(),
            rule.threshold,
            names.join(", ")
        )]
    } else if n_candidates == 0 {
        vec![format!("no signatures found ({looked})")]
    } else if satisfied.is_empty() {
        fail_reasons(vec![format!(
            "none of {n_candidates} signature(s) satisfied an authority of rule {:?}",
            rule.name
        )])
    } else {
        let missing: Vec<&str> = rule
            .authorities
            .iter()
            .enumerate()
            .filter(|(i, _)| !satisfied.contains(i))
            .map(|(_, a)| a.name.as_str())
            .collect();
        fail_reasons(vec![format!(
            "{} of {} required authorities verified; missing: {}",
            satisfied.len(),
            rule.threshold,
            missing.join(", ")
        )])
    };
    let verdict = match (ok, rule.mode) {
        (true, _) => Verdict::Allow,
        (false, Mode::Enforce) => Verdict::Deny,
        (false, Mode::Warn) => Verdict::Warn,
        (false, Mode::Audit) => Verdict::Allow,
    };
    let reasons = if !ok && rule.mode == Mode::Audit {
        reasons.into_iter().map(|r| format!("audit: {r}")).collect()
    } else {
        reasons
    };
    let failure = if ok {
        None
    } else if n_candidates == 0 {
        Some(Failure::Unsigned)
    } else if satisfied.is_empty() {
        Some(most_telling.map_or(Failure::Untrusted, |(_, f)| f))
    } else {
        // Some authorities verified, not enough of them.
        Some(Failure::Untrusted)
    };
    Evaluation {
        verdict,
        reasons,
        evidence,
        failure,
    }
}

/// The verdict when verification could not be carried out (registry down, access denied):
/// never "unsigned", and never allow under `enforce`.
pub fn failed_verdict(mode: Mode) -> Verdict {
    match mode {
        Mode::Enforce => Verdict::Deny,
        Mode::Warn => Verdict::Warn,
        Mode::Audit => Verdict::Allow,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::RejectionKind;

    const KEY: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEusIAt6EJ3YrTHdg2qkWVS0KuotWQ
wHDtyaXlq7Nhj8279+1u/l5pZhXJPW8PnGRRLdO5NbsuM6aT7pOcP100uw==
-----END PUBLIC KEY-----
";

    fn reader(p: &Path) -> std::io::Result<String> {
        match p.to_str() {
            Some("keys/release.pub") => Ok(KEY.to_string()),
            Some("roots/trusted_root.json") => Ok("{}".into()),
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such file",
            )),
        }
    }

    fn parse(text: &str) -> Result<Policy, PolicyError> {
        Policy::parse(text, Path::new("p.yaml"), &reader)
    }

    const GOOD: &str = r#"apiVersion: ocigate.dev/v1alpha1
kind: Policy
noMatch: deny
trustRoots:
  - name: public-good
    trustedRoot: embedded
keys:
  - name: release
    path: keys/release.pub
rules:
  - name: our-apps
    images: ["ghcr.io/acme/**", "registry.example.com/apps/*"]
    exclude: ["ghcr.io/acme/sandbox/**"]
    mode: enforce
    threshold: 1
    authorities:
      - key: {name: release}
        tlog: skip
      - keyless:
          trustRoot: public-good
          identities:
            - issuer: https://token.actions.githubusercontent.com
              subjectRegExp: '^https://github\.com/acme/.+$'
    signedIdentity: matchRepository
    annotations: {env: prod}
  - name: api
    images: ["ghcr.io/acme/api"]
    authorities:
      - key: {name: release}
    signedIdentity: {exactRepository: "mirror.local/acme/api"}
"#;

    #[test]
    fn host_spellings_do_not_dodge_a_rule() {
        let text = "apiVersion: ocigate.dev/v1alpha1\nkind: Policy\nnoMatch: allow\n\
                    keys: [{name: k, path: keys/release.pub}]\nrules:\n  - name: acme\n    \
                    images: [\"GHCR.io:443/acme/**\", \"index.docker.io/library/nginx\"]\n    \
                    authorities: [{key: {name: k}}]\n";
        let p = parse(text).unwrap();
        for input in [
            "ghcr.io/acme/app",
            "GHCR.IO/acme/app",
            "Ghcr.Io/acme/app",
            "ghcr.io:443/acme/app",
            "ghcr.io./acme/app",
            "DOCKER.IO/library/nginx",
            "nginx",
            "registry-1.docker.io/library/nginx:1.27",
        ] {
            let r = crate::reference::ImageRef::parse(input).unwrap();
            match p.match_rule(&r.name()) {
                RuleMatch::Rule(rule) => assert_eq!(rule.name, "acme", "{input}"),
                other => panic!("{input} dodged the rule: {other:?}"),
            }
        }
        // A pattern with a host that no reference can have is an error, not a silent no-match.
        let bad = text.replace("GHCR.io:443", "ghcr.io:99999");
        let e = parse(&bad).unwrap_err().to_string();
        assert!(e.contains("not a port number"), "{e}");
    }

    #[test]
    fn design_example_parses_and_matches() {
        let p = parse(GOOD).unwrap();
        assert_eq!(p.rules.len(), 2);
        match p.match_rule("ghcr.io/acme/web/frontend") {
            RuleMatch::Rule(r) => assert_eq!(r.name, "our-apps"),
            other => panic!("{other:?}"),
        }
        // the more specific rule wins
        match p.match_rule("ghcr.io/acme/api") {
            RuleMatch::Rule(r) => {
                assert_eq!(r.name, "api");
                assert_eq!(
                    r.signed_identity,
                    SignedIdentity::ExactRepository("mirror.local/acme/api".into())
                );
            }
            other => panic!("{other:?}"),
        }
        // * is one segment
        assert!(matches!(
            p.match_rule("registry.example.com/apps/a"),
            RuleMatch::Rule(_)
        ));
        assert!(matches!(
            p.match_rule("registry.example.com/apps/a/b"),
            RuleMatch::NoMatch(NoMatch::Deny)
        ));
        // excluded
        assert!(matches!(
            p.match_rule("ghcr.io/acme/sandbox/x"),
            RuleMatch::NoMatch(_)
        ));
    }

    fn issues(text: &str) -> Vec<Issue> {
        match parse(text) {
            Err(PolicyError::Invalid { issues, .. }) => issues,
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    /// Every issue of `text` as `line:column: message`.
    fn issue_lines(issues: &[Issue]) -> Vec<String> {
        issues
            .iter()
            .map(|i| format!("{}:{}: {}", i.line, i.column, i.message))
            .collect()
    }

    fn first_issue(text: &str) -> (u64, u64, String) {
        let i = &issues(text)[0];
        (i.line, i.column, i.message.clone())
    }

    /// The problem whose message contains `needle` (the first problem if none does).
    fn issue_with(text: &str, needle: &str) -> (u64, u64, String) {
        let all = issues(text);
        let i = all
            .iter()
            .find(|i| i.message.contains(needle))
            .unwrap_or(&all[0]);
        (i.line, i.column, i.message.clone())
    }

    #[test]
    fn broken_policies_point_at_the_problem() {
        let cases: &[(&str, &str, u64)] = &[
            ("rules:\n  - name: a\n", "missing field `images`", 2),
            (
                "apiVersion: ocigate.dev/v1alpha1\nkind: Policy\nrules: []\nbogus: 1\n",
                "bogus",
                4,
            ),
            (
                "apiVersion: ocigate.dev/v2\nkind: Policy\nrules:\n  - name: a\n    images: [x]\n    authorities: [{key: {name: k}}]\nkeys: [{name: k, path: keys/release.pub}]\n",
                "apiVersion is",
                1,
            ),
            (
                "apiVersion: ocigate.dev/v1alpha1\nkind: Policy\nrules:\n  - name: a\n    images: [x]\n    authorities: []\n",
                "authorities is empty",
                6,
            ),
            (
                "apiVersion: ocigate.dev/v1alpha1\nkind: Policy\nkeys:\n  - name: k\n    path: keys/missing.pub\nrules:\n  - name: a\n    images: [x]\n    authorities: [{key: {name: k}}]\n",
                "cannot read keys/missing.pub",
                5,
            ),
            (
                "apiVersion: ocigate.dev/v1alpha1\nkind: Policy\nrules:\n  - name: a\n    images: [x]\n    authorities:\n      - keyless:\n          identities:\n            - issuer: https://x\n",
                "identity needs subject or subjectRegExp",
                9,
            ),
            (
                "apiVersion: ocigate.dev/v1alpha1\nkind: Policy\nrules:\n  - name: a\n    images: [x]\n    authorities:\n      - keyless:\n          identities:\n            - issuer: https://x\n              subjectRegExp: '(unclosed'\n",
                "not a valid regular expression",
                10,
            ),
            (
                "apiVersion: ocigate.dev/v1alpha1\nkind: Policy\nrules:\n  - name: a\n    images: [x]\n    authorities: [{key: {name: nope}}]\n",
                "unknown key",
                6,
            ),
            (
                "apiVersion: ocigate.dev/v1alpha1\nkind: Policy\nkeys: [{name: k, path: keys/release.pub}]\nrules:\n  - name: a\n    images: [x]\n    threshold: 2\n    authorities: [{key: {name: k}}]\n",
                "threshold 2",
                7,
            ),
            (
                "apiVersion: ocigate.dev/v1alpha1\nkind: Policy\nkeys: [{name: k, path: keys/release.pub}]\nrules:\n  - name: a\n    images: [x]\n    mode: strict\n    authorities: [{key: {name: k}}]\n",
                "strict",
                7,
            ),
            (
                "apiVersion: ocigate.dev/v1alpha1\nkind: Policy\nkeys: [{name: k, path: keys/release.pub}]\nrules:\n  - name: a\n    images: [x]\n    fluxVerification: always\n    authorities: [{key: {name: k}}]\n",
                "always",
                7,
            ),
            (
                "apiVersion: ocigate.dev/v1alpha1\nkind: Policy\nkeys: [{name: k, pem: 'garbage'}]\nrules:\n  - name: a\n    images: [x]\n    authorities: [{key: {name: k}}]\n",
                "not a PEM",
                3,
            ),
            (
                "apiVersion: ocigate.dev/v1alpha1\nkind: Policy\nkeys: [{name: k, path: keys/release.pub}]\nrules:\n  - name: a\n    images: [\"a/[\"]\n    authorities: [{key: {name: k}}]\n",
                "bad pattern",
                6,
            ),
            (
                "apiVersion: ocigate.dev/v1alpha1\nkind: Policy\nkeys: [{name: k, path: keys/release.pub}]\nrules:\n  - name: a\n    images: [x]\n    authorities: [{key: {name: k}, keyless: {identities: []}}]\n",
                "exactly one of key or keyless",
                7,
            ),
            ("{{{", "", 1),
        ];
        let mut wrong = Vec::new();
        for (text, needle, line) in cases {
            let (l, c, msg) = issue_with(text, needle);
            if !msg.contains(needle) || l != *line {
                wrong.push(format!("{text:?}\n  => {l}:{c}: {msg}"));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn equally_specific_rules_are_an_error() {
        let text = "apiVersion: ocigate.dev/v1alpha1\nkind: Policy\nkeys: [{name: k, path: keys/release.pub}]\nrules:\n  - name: a\n    images: [\"r.io/acme/*\"]\n    authorities: [{key: {name: k}}]\n  - name: b\n    images: [\"r.io/acme/**\"]\n    authorities: [{key: {name: k}}]\n";
        let (_, _, msg) = first_issue(text);
        assert!(msg.contains("equally specific"), "{msg}");
    }

    /// Many patterns per rule (2 rules x 800 patterns took minutes when the overlap check was
    /// cubic): the policy is accepted, and an overlap among them is still found. The times are
    /// printed for the record only: performance is measured by benchmarks, not asserted here
    /// (a timed bound failed on a busy 2-core machine).
    #[test]
    fn overlap_check_scales_to_many_patterns() {
        let n: usize = std::env::var("OCIGATE_OVERLAP_N")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(800);
        let policy = |extra: &str| {
            let mut text = String::from(
                "apiVersion: ocigate.dev/v1alpha1\nkind: Policy\nkeys: [{name: k, path: keys/release.pub}]\nrules:\n",
            );
            for team in ["a", "b"] {
                text.push_str(&format!("  - name: team-{team}\n    images:\n"));
                for i in 0..n {
                    text.push_str(&format!("      - \"r.io/team-{team}/app-{i}/**\"\n"));
                }
                if team == "b" {
                    text.push_str(extra);
                }
                text.push_str("    authorities: [{key: {name: k}}]\n");
            }
            text
        };
        let timed = |text: &str| {
            let start = std::time::Instant::now();
            let p = parse(text);
            (p, start.elapsed())
        };
        let (p, took) = timed(&policy(""));
        eprintln!("policy of 2 rules x {n} patterns checked in {took:?}");
        assert!(p.is_ok(), "{:?}", p.err().map(|e| e.lines()));

        let last = n - 1;
        let (p, took) = timed(&policy(&format!("      - \"r.io/team-a/app-{last}/*\"\n")));
        eprintln!("the same with one overlap checked in {took:?}");
        let lines = p.unwrap_err().lines();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].contains(&format!(
                "rules \"team-a\" and \"team-b\" are equally specific and both match \
                 \"r.io/team-a/app-{last}/x\" (patterns \"r.io/team-a/app-{last}/**\" and \
                 \"r.io/team-a/app-{last}/*\")"
            )),
            "{lines:?}"
        );
    }

    /// Structural problems (unknown fields, values outside a field's choices, wrong types,
    /// missing fields, repeated fields) and semantic ones (a bad regex, an unknown key, a key
    /// file that cannot be read) in one file: every one is reported, each where it stands.
    #[test]
    fn every_problem_in_a_file_is_reported() {
        let text = "\
apiVersion: ocigate.dev/v1alpha1
kind: Policy
noMatch: maybe
colour: blue
keys:
  - name: release
    path: keys/release.pub
  - name: missing
    path: keys/missing.pub
rules:
  - name: a
    images: [\"ghcr.io/acme/**\"]
    mode: bogus
    imagez: [\"x\"]
    threshold: two
    authorities:
      - key: {name: relase}
        tlog: sometimes
  - name: b
    images: \"ghcr.io/other/**\"
    authorities:
      - keyless:
          identities:
            - issuer: https://token.actions.githubusercontent.com
              subjectRegExp: '(unclosed'
              subjct: x
    fluxVerification: always
    signedIdentity: {exactRepository: x, extra: y}
  - name: c
    images: [\"ghcr.io/c/**\"]
    images: [\"ghcr.io/d/**\"]
    authorities: [{key: {name: release}}]
  - images: [\"ghcr.io/e/**\"]
";
        let all = issues(text);
        let got = issue_lines(&all);
        let want: &[(&str, &str)] = &[
            (
                "3:10",
                "noMatch: unknown variant `maybe`, expected one of `deny`, `allow` or `warn`",
            ),
            ("4:1", "unknown field `colour` in the policy"),
            ("9:11", "cannot read keys/missing.pub"),
            ("13:11", "mode: unknown variant `bogus`"),
            ("14:5", "unknown field `imagez` in a rule"),
            (
                "15:16",
                "threshold must be a whole number, found text \"two\"",
            ),
            (
                "17:21",
                "unknown key \"relase\" (keys defined: [\"release\"])",
            ),
            ("18:15", "tlog: unknown variant `sometimes`"),
            (
                "20:13",
                "images must be a list, found text \"ghcr.io/other/**\"",
            ),
            ("25:30", "is not a valid regular expression"),
            ("26:15", "unknown field `subjct` in an identity"),
            ("27:23", "fluxVerification: unknown variant `always`"),
            (
                "28:21",
                "signedIdentity must be matchRepository, ignore or {exactRepository: NAME}",
            ),
            ("31:5", "field `images` is given twice in a rule"),
            ("33:5", "missing field `name` in a rule"),
            ("33:5", "missing field `authorities` in a rule"),
        ];
        let mut missing = Vec::new();
        for (pos, needle) in want {
            if !got
                .iter()
                .any(|g| g.starts_with(&format!("{pos}: ")) && g.contains(needle))
            {
                missing.push(format!("{pos}: {needle}"));
            }
        }
        assert!(
            missing.is_empty(),
            "not reported:\n{}\nreported:\n{}",
            missing.join("\n"),
            got.join("\n")
        );
        assert_eq!(got.len(), want.len(), "{}", got.join("\n"));
        // In file order, and the error's text says how many more there are.
        let positions: Vec<(u64, u64)> = all.iter().map(|i| (i.line, i.column)).collect();
        let mut sorted = positions.clone();
        sorted.sort();
        assert_eq!(positions, sorted);
        let e = parse(text).unwrap_err();
        assert_eq!(e.lines().len(), want.len());
        assert!(e.lines()[0].starts_with("p.yaml:3:10: "), "{:?}", e.lines());
        assert!(
            e.to_string()
                .ends_with(&format!("(and {} more problems)", want.len() - 1)),
            "{e}"
        );
    }

    /// A misspelt field is one mistake: the field it was meant to be is not also reported
    /// missing.
    #[test]
    fn a_misspelt_field_is_one_problem() {
        let text = "apiVersion: ocigate.dev/v1alpha1\nkind: Policy\nkeys: [{name: k, path: keys/release.pub}]\nrules:\n  - name: a\n    imagez: [\"r.io/**\"]\n    Authorities: [{key: {name: k}}]\n";
        let got = issue_lines(&issues(text));
        assert_eq!(
            got,
            [
                "6:5: unknown field `imagez` in a rule; did you mean `images`?",
                "7:5: unknown field `Authorities` in a rule; did you mean `authorities`?",
            ]
        );
    }

    /// A pattern no reference name can have (a Docker Hub short form, a host alone) is an
    /// error, not a rule that silently never applies.
    #[test]
    fn patterns_without_a_registry_host_are_errors() {
        for bad in [
            "nginx",
            "library/nginx",
            "acme/app/**",
            "ghcr.io",
            "localhost",
        ] {
            let text = format!(
                "apiVersion: ocigate.dev/v1alpha1\nkind: Policy\nkeys: [{{name: k, path: keys/release.pub}}]\nrules:\n  - name: a\n    images: [\"{bad}\"]\n    authorities: [{{key: {{name: k}}}}]\n"
            );
            let (l, c, msg) = first_issue(&text);
            assert_eq!((l, c), (6, 14), "{bad}: {msg}");
            assert!(msg.contains("cannot match any reference"), "{bad}: {msg}");
        }
        for good in [
            "docker.io/library/nginx",
            "localhost/x",
            "localhost:5000/**",
            "*/acme/**",
            "**",
            "**/nginx",
            "{ghcr.io,quay.io}/acme/*",
            "oci-layout:examples/**",
            "10.0.0.1/x",
        ] {
            let text = format!(
                "apiVersion: ocigate.dev/v1alpha1\nkind: Policy\nkeys: [{{name: k, path: keys/release.pub}}]\nrules:\n  - name: a\n    images: [\"{good}\"]\n    authorities: [{{key: {{name: k}}}}]\n"
            );
            assert!(parse(&text).is_ok(), "{good}: {:?}", parse(&text).err());
        }
    }

    /// One key cannot stand for two authorities of a rule (threshold counts authorities).
    #[test]
    fn a_key_is_one_authority_of_a_rule() {
        let text = format!(
            "apiVersion: ocigate.dev/v1alpha1\nkind: Policy\nkeys:\n  - {{name: k, path: keys/release.pub}}\n  - name: copy\n    pem: |\n{}\nrules:\n  - name: a\n    images: [\"r.io/**\"]\n    threshold: 2\n    authorities:\n      - key: {{name: k}}\n      - key: {{name: copy}}\n      - key: {{name: k}}\n        name: again\n",
            KEY.lines()
                .map(|l| format!("      {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        let got = issue_lines(&issues(&text));
        assert_eq!(
            got,
            [
                "17:9: rule \"a\": authority \"copy\" has the same key as authority \"k\"; each authority of a rule needs its own key",
                "18:9: rule \"a\": authority \"again\" has the same key as authority \"k\"; each authority of a rule needs its own key",
            ]
        );
    }

    /// An unknown field is the one problem of its mapping: the checks across its fields
    /// (path or pem, key or keyless, subject or subjectRegExp) do not repeat it.
    #[test]
    fn an_unknown_field_is_not_reported_again_as_a_missing_choice() {
        let text = "apiVersion: ocigate.dev/v1alpha1\nkind: Policy\nkeys: [{name: k, paht: keys/release.pub}]\nrules:\n  - name: a\n    images: [\"r.io/**\"]\n    authorities:\n      - kee: {name: k}\n      - keyless:\n          identities: [{issuer: x, subjct: y}]\n";
        let got = issue_lines(&issues(text));
        assert_eq!(
            got,
            [
                "3:18: unknown field `paht` in a key; did you mean `path`?",
                "8:9: unknown field `kee` in an authority; did you mean `key`?",
                "10:36: unknown field `subjct` in an identity; did you mean `subject`?",
            ]
        );
    }

    /// The prefix index only skips patterns that cannot match: for every pattern and name,
    /// the indexed lookup finds exactly the patterns that trying each one finds.
    #[test]
    fn indexed_matching_equals_trying_every_pattern() {
        let patterns = [
            "r.io/acme/*",
            "r.io/acme/**",
            "r.io/acme/x",
            "r.io/acme/?*",
            "r.io/acme/**/x",
            "r.io/**/x",
            "r.io/a\\*b/*",
            "r.io/a[bc]/x",
            "r.io/a[!b]/x",
            "r.io/{acme,other}/*",
            "r.io/acme{,-dev}/**",
            "**",
            "**/x",
            "*/acme/*",
            "*.io/acme/x",
            "r.io/ü/*",
            "oci-layout:examples/**",
            "oci-layout:./x",
        ];
        let names = [
            "r.io/acme",
            "r.io/acme/",
            "r.io/acme/x",
            "r.io/acme/xy",
            "r.io/acme/x/y",
            "r.io/acme/y/x",
            "r.io/acme-dev/x",
            "r.io/other/x",
            "r.io/a*b/x",
            "r.io/ab/x",
            "r.io/ac/x",
            "r.io/ad/x",
            "r.io/ü/x",
            "q.io/acme/x",
            "x",
            "",
            "oci-layout:examples/signed-layout",
            "oci-layout:./x",
        ];
        let list: Vec<Pattern> = patterns
            .iter()
            .map(|p| Pattern {
                text: p.to_string(),
                glob: segment_glob(p).unwrap(),
                specificity: literal_prefix_len(p),
            })
            .collect();
        let indexed = Patterns::new(list.clone());
        for name in names {
            let mut want: Vec<&str> = list
                .iter()
                .filter(|p| p.glob.is_match(name))
                .map(|p| p.text.as_str())
                .collect();
            let mut got: Vec<&str> = indexed.matching(name).map(|p| p.text.as_str()).collect();
            want.sort();
            got.sort();
            assert_eq!(got, want, "{name}");
        }
    }

    /// Values the file gives are echoed cut to a readable length, with control characters
    /// escaped: a pattern, a regex, a name, an unknown field.
    #[test]
    fn echoed_values_are_cut_and_escaped() {
        let long = format!("ghcr.io/{}\u{1b}[2J", "a".repeat(5000));
        let long_re = format!("({}", "b".repeat(5000));
        // (YAML keeps a plain key under 1024 characters)
        let long_field = "f".repeat(1000);
        let text = format!(
            "apiVersion: ocigate.dev/v1alpha1\nkind: Policy\nrules:\n  - name: \"{name}\"\n    images: [\"{long}@sha256:00\"]\n    {long_field}: 1\n    authorities:\n      - keyless:\n          identities: [{{issuer: x, subjectRegExp: '{long_re}'}}]\n      - key: {{name: \"{name}\"}}\n",
            name = "n\u{7}".repeat(3000),
        )
        .replace('\u{1b}', "\\e")
        .replace('\u{7}', "\\a");
        let all = issues(&text);
        assert_eq!(all.len(), 4, "{all:?}");
        for i in &all {
            assert!(
                i.message.chars().count() < 700,
                "{} characters: {}",
                i.message.chars().count(),
                i.message
            );
            assert!(!i.message.chars().any(|c| c.is_control()), "{}", i.message);
            assert!(i.message.contains('…'), "{}", i.message);
        }
        assert!(
            all.iter()
                .any(|i| i.message.contains("\\u{7}") && i.message.contains("(6000 characters)")),
            "{all:?}"
        );
    }

    /// Plain scalars YAML would read as booleans or numbers keep their text where a field
    /// wants text (as serde's typed reading did): `on`, `1.10`, `0x1F`, `.inf`.
    #[test]
    fn plain_scalars_keep_their_text() {
        let text = "apiVersion: ocigate.dev/v1alpha1\nkind: Policy\nkeys: [{name: k, path: keys/release.pub}]\nrules:\n  - name: 1.10\n    images: [\"r.io/**\"]\n    authorities: [{key: {name: k}}]\n    annotations: {on: yes, version: 1.10, hex: 0x1F, big: 123456789012345678901234567890, inf: .inf, neg: -0}\n";
        let p = parse(text).unwrap();
        let r = &p.rules[0];
        assert_eq!(r.name, "1.10");
        let want: BTreeMap<String, String> = [
            ("on", "yes"),
            ("version", "1.10"),
            ("hex", "0x1F"),
            ("big", "123456789012345678901234567890"),
            ("inf", ".inf"),
            ("neg", "-0"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(r.annotations, want);
    }

    /// Every pair of equally specific rules is reported, not only the first.
    #[test]
    fn every_ambiguous_pair_of_rules_is_reported() {
        let mut text = String::from(
            "apiVersion: ocigate.dev/v1alpha1\nkind: Policy\nkeys: [{name: k, path: keys/release.pub}]\nrules:\n",
        );
        let rules = [
            ("a", "r.io/acme/*"),
            ("b", "r.io/acme/**"),
            ("c", "r.io/acme/x"),
            ("d", "r.io/acme/?*"),
        ];
        for (name, pattern) in rules {
            text.push_str(&format!(
                "  - name: {name}\n    images: [\"{pattern}\", \"q.io/{name}\"]\n    authorities: [{{key: {{name: k}}}}]\n"
            ));
        }
        let all = issues(&text);
        let got = issue_lines(&all);
        assert_eq!(got.len(), 3, "{got:#?}");
        // "r.io/acme/x" is more specific than the others' patterns: c is not ambiguous.
        for (g, want) in got.iter().zip([
            "8:11: rules \"a\" and \"b\" are equally specific and both match \"r.io/acme/x\" \
             (patterns \"r.io/acme/*\" and \"r.io/acme/**\")",
            "14:11: rules \"a\" and \"d\" are equally specific",
            "14:11: rules \"b\" and \"d\" are equally specific",
        ]) {
            assert!(g.starts_with(want), "{g}\n  expected {want}");
        }
    }

    fn rule_with(threshold: usize, mode: Mode) -> Rule {
        let key = PublicKey::from_pem(KEY, "t").unwrap();
        let auth = |n: &str| Authority {
            name: n.into(),
            kind: AuthorityKind::Key {
                key: key.clone(),
                tlog: Tlog::Skip,
                trust_root: None,
            },
        };
        Rule {
            name: "r".into(),
            position: (1, 1),
            patterns: Patterns::default(),
            excludes: Patterns::default(),
            mode,
            threshold,
            authorities: vec![auth("a"), auth("b")],
            signed_identity: SignedIdentity::MatchRepository,
            annotations: BTreeMap::new(),
            flux_verification: FluxVerification::Optional,
        }
    }

    fn bad(loc: &str) -> Rejection {
        let authority = "a".into();
        Rejection::new(loc, RejectionKind::BadSignature { authority })
    }

    #[test]
    fn evaluation_unsigned_and_modes() {
        let e = evaluate(&rule_with(1, Mode::Enforce), vec![], "tag x.sig: not found");
        assert_eq!(e.verdict, Verdict::Deny);
        assert!(
            e.reasons[0].contains("no signatures found"),
            "{:?}",
            e.reasons
        );
        let e = evaluate(&rule_with(1, Mode::Warn), vec![], "t");
        assert_eq!(e.verdict, Verdict::Warn);
        let e = evaluate(&rule_with(1, Mode::Audit), vec![], "t");
        assert_eq!(e.verdict, Verdict::Allow);
        assert!(e.reasons[0].starts_with("audit:"));
        let outcomes = vec![CandidateOutcome {
            location: "l1".into(),
            results: vec![Err(bad("l1")), Err(bad("l1"))],
        }];
        let e = evaluate(&rule_with(1, Mode::Enforce), outcomes, "t");
        assert_eq!(e.verdict, Verdict::Deny);
        assert!(
            e.reasons.iter().any(|r| r.contains("not signed by key")),
            "{:?}",
            e.reasons
        );
        assert_eq!(failed_verdict(Mode::Enforce), Verdict::Deny);
    }

    /// A registry can plant any number of signatures: a deny names the most telling
    /// rejections first, each once, and counts the rest.
    #[test]
    fn rejections_are_ranked_said_once_and_capped() {
        let mut outcomes: Vec<CandidateOutcome> = (0..20)
            .map(|i| CandidateOutcome {
                location: format!("layer {i}"),
                results: vec![
                    Err(bad(&format!("layer {i}"))),
                    Err(bad(&format!("layer {i}"))),
                ],
            })
            .collect();
        // Twice the same rejection (the same location): said once.
        outcomes.push(CandidateOutcome {
            location: "layer 3".into(),
            results: vec![Err(bad("layer 3"))],
        });
        let mismatch = || {
            let kind = RejectionKind::DigestMismatch {
                signed: "sha256:aa".into(),
                expected: "sha256:bb".into(),
            };
            Rejection::new("layer 20", kind)
        };
        outcomes.push(CandidateOutcome {
            location: "layer 20".into(),
            results: vec![Err(bad("layer 20")), Err(mismatch())],
        });
        let e = evaluate(&rule_with(1, Mode::Enforce), outcomes, "t");
        assert_eq!(e.failure, Some(Failure::Mismatch));
        assert!(
            e.reasons[0].contains("none of 22 signature(s)"),
            "{:?}",
            e.reasons
        );
        assert_eq!(e.reasons[1], mismatch().reason(), "{:?}", e.reasons);
        assert_eq!(
            e.reasons.len(),
            1 + MAX_REJECTIONS_SHOWN + 1,
            "{:?}",
            e.reasons
        );
        assert_eq!(
            e.reasons.last().map(String::as_str),
            Some("… and 16 more rejected signature(s) (ocigate discover lists them)")
        );
        // Under the cap nothing is counted.
        let few = (0..3)
            .map(|i| CandidateOutcome {
                location: format!("l{i}"),
                results: vec![Err(bad(&format!("l{i}")))],
            })
            .collect();
        let e = evaluate(&rule_with(1, Mode::Enforce), few, "t");
        assert_eq!(e.reasons.len(), 4, "{:?}", e.reasons);
    }
}
