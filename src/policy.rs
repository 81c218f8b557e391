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
    patterns: Vec<(String, GlobMatcher)>,
    excludes: Vec<GlobMatcher>,
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
        if self.excludes.iter().any(|g| g.is_match(name)) {
            return None;
        }
        self.patterns
            .iter()
            .filter(|(_, g)| g.is_match(name))
            .map(|(p, _)| literal_prefix_len(p))
            .max()
    }

    pub fn patterns(&self) -> impl Iterator<Item = &str> {
        self.patterns.iter().map(|(p, _)| p.as_str())
    }
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
        let raw: RawPolicy = serde_saphyr::from_str(text).map_err(|e| {
            let loc = e.location();
            let msg = e.without_snippet().to_string();
            PolicyError::Invalid {
                file: file.to_path_buf(),
                issues: vec![Issue {
                    line: loc.map_or(1, |l| l.line()),
                    column: loc.map_or(1, |l| l.column()),
                    message: strip_location_suffix(&msg),
                }],
            }
        })?;
        let mut v = Validator {
            issues: Vec::new(),
            read,
        };
        let policy = v.policy(raw);
        if v.issues.is_empty() {
            Ok(policy)
        } else {
            v.issues.sort_by_key(|i| (i.line, i.column));
            Err(PolicyError::Invalid {
                file: file.to_path_buf(),
                issues: v.issues,
            })
        }
    }

    /// A policy of one rule over every reference with one authority: what `verify --key` and
    /// `verify --certificate-identity … --certificate-oidc-issuer …` stand for.
    pub fn single_authority(
        name: &str,
        kind: AuthorityKind,
        trust_roots: Vec<TrustRootRef>,
        annotations: BTreeMap<String, String>,
        signed_identity: SignedIdentity,
    ) -> Policy {
        let patterns = segment_glob("**")
            .map(|g| vec![("**".to_string(), g)])
            .unwrap_or_default();
        Policy {
            no_match: NoMatch::Deny,
            trust_roots,
            rules: vec![Rule {
                name: name.to_string(),
                position: (0, 0),
                patterns,
                excludes: Vec::new(),
                mode: Mode::Enforce,
                threshold: 1,
                authorities: vec![Authority {
                    name: name.to_string(),
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

/// serde-saphyr's plain message ends with " at line L, column C"; the position is ours to print.
fn strip_location_suffix(msg: &str) -> String {
    let first = msg.lines().next().unwrap_or(msg);
    match first.rfind(" at line ") {
        Some(i) => first[..i].to_string(),
        None => first.to_string(),
    }
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

fn literal_prefix_len(pattern: &str) -> usize {
    pattern.find(['*', '?', '[', '{']).unwrap_or(pattern.len())
}

// ---------------------------------------------------------------------------------------------
// Raw YAML shapes

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawPolicy {
    api_version: Spanned<String>,
    kind: Spanned<String>,
    #[serde(default)]
    no_match: NoMatch,
    #[serde(default)]
    trust_roots: Vec<Spanned<RawTrustRoot>>,
    #[serde(default)]
    keys: Vec<Spanned<RawKey>>,
    rules: Spanned<Vec<Spanned<RawRule>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawTrustRoot {
    name: Spanned<String>,
    trusted_root: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    name: Spanned<String>,
    #[serde(default)]
    path: Option<Spanned<String>>,
    #[serde(default)]
    pem: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawRule {
    name: Spanned<String>,
    images: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    exclude: Vec<Spanned<String>>,
    #[serde(default)]
    mode: Mode,
    #[serde(default)]
    threshold: Option<Spanned<u64>>,
    authorities: Spanned<Vec<Spanned<RawAuthority>>>,
    #[serde(default)]
    signed_identity: SignedIdentity,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    flux_verification: FluxVerification,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawAuthority {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    key: Option<Spanned<RawKeyRef>>,
    #[serde(default)]
    keyless: Option<Spanned<RawKeyless>>,
    #[serde(default)]
    tlog: Option<Tlog>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawKeyRef {
    name: Spanned<String>,
    /// The root whose Rekor keys check this key's log entries (tlog: optional/required).
    #[serde(default)]
    trust_root: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawKeyless {
    #[serde(default)]
    trust_root: Option<Spanned<String>>,
    identities: Spanned<Vec<Spanned<RawIdentity>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawIdentity {
    #[serde(default)]
    issuer: Option<String>,
    #[serde(default)]
    issuer_reg_exp: Option<Spanned<String>>,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    subject_reg_exp: Option<Spanned<String>>,
    #[serde(default)]
    github_workflow_trigger: Option<String>,
    #[serde(default)]
    github_workflow_sha: Option<String>,
    #[serde(default)]
    github_workflow_name: Option<String>,
    #[serde(default)]
    github_workflow_repository: Option<String>,
    #[serde(default)]
    github_workflow_ref: Option<String>,
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
            line: s.referenced.line(),
            column: s.referenced.column(),
            message: message.into(),
        });
    }

    fn policy(&mut self, raw: RawPolicy) -> Policy {
        if raw.api_version.value != API_VERSION {
            let msg = format!(
                "apiVersion is {:?}; this ocigate reads {API_VERSION:?}",
                raw.api_version.value
            );
            self.at(&raw.api_version, msg);
        }
        if raw.kind.value != KIND {
            let msg = format!("kind is {:?}; expected {KIND:?}", raw.kind.value);
            self.at(&raw.kind, msg);
        }

        let mut trust_roots = Vec::new();
        let mut root_names = BTreeSet::new();
        for tr in &raw.trust_roots {
            let name = tr.value.name.value.clone();
            if !root_names.insert(name.clone()) {
                self.at(
                    &tr.value.name,
                    format!("trust root {name:?} is defined twice"),
                );
            }
            let root = if tr.value.trusted_root.value == "embedded" {
                TrustRoot::embedded_shared()
                    .map_err(|e| self.at(&tr.value.trusted_root, error_chain(&e)))
                    .ok()
            } else {
                let p = PathBuf::from(&tr.value.trusted_root.value);
                match (self.read)(&p) {
                    Ok(text) => TrustRoot::from_json(&text, &name)
                        .map(Arc::new)
                        .map_err(|e| self.at(&tr.value.trusted_root, error_chain(&e)))
                        .ok(),
                    Err(e) => {
                        let msg = format!("trustedRoot file {}: {e}", p.display());
                        self.at(&tr.value.trusted_root, msg);
                        None
                    }
                }
            };
            if let Some(root) = root {
                trust_roots.push(TrustRootRef { name, root });
            }
        }

        let mut keys: BTreeMap<String, PublicKey> = BTreeMap::new();
        for k in &raw.keys {
            let name = k.value.name.value.clone();
            if keys.contains_key(&name) {
                self.at(&k.value.name, format!("key {name:?} is defined twice"));
                continue;
            }
            let (text, origin, span_line, span_col) = match (&k.value.path, &k.value.pem) {
                (Some(p), None) => match (self.read)(Path::new(&p.value)) {
                    Ok(t) => (
                        t,
                        p.value.clone(),
                        p.referenced.line(),
                        p.referenced.column(),
                    ),
                    Err(e) => {
                        self.at(p, format!("key {name:?}: cannot read {}: {e}", p.value));
                        continue;
                    }
                },
                (None, Some(pem)) => (
                    pem.value.clone(),
                    format!("{name:?} (inline pem)"),
                    pem.referenced.line(),
                    pem.referenced.column(),
                ),
                _ => {
                    self.at(
                        &k.value.name,
                        format!("key {name:?}: give exactly one of path or pem"),
                    );
                    continue;
                }
            };
            match PublicKey::from_pem(&text, &origin) {
                Ok(pk) => {
                    keys.insert(name, pk);
                }
                Err(e) => self.issues.push(Issue {
                    line: span_line,
                    column: span_col,
                    message: error_chain(&e),
                }),
            }
        }
        let key_names: BTreeSet<String> = raw
            .keys
            .iter()
            .map(|k| k.value.name.value.clone())
            .collect();

        if raw.rules.value.is_empty() {
            self.at(
                &raw.rules,
                "rules is empty: a policy needs at least one rule",
            );
        }
        let mut rules = Vec::new();
        let mut rule_names = BTreeSet::new();
        for r in raw.rules.value {
            if !rule_names.insert(r.value.name.value.clone()) {
                let msg = format!("rule {:?} is defined twice", r.value.name.value);
                self.at(&r.value.name, msg);
            }
            if let Some(rule) = self.rule(r, &keys, &key_names, &root_names) {
                rules.push(rule);
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
    /// `**` across): the pattern as matched, and its matcher.
    fn glob(&mut self, s: &Spanned<String>, rule: &str) -> Option<(String, GlobMatcher)> {
        if s.value.is_empty() {
            self.at(s, format!("rule {rule:?}: empty image pattern"));
            return None;
        }
        if s.value.contains('@') {
            self.at(
                s,
                format!(
                    "rule {rule:?}: pattern {:?} names a digest; patterns match repository names",
                    s.value
                ),
            );
            return None;
        }
        let canonical = match canonical_pattern(&s.value) {
            Ok(c) => c,
            Err(problem) => {
                self.at(
                    s,
                    format!("rule {rule:?}: pattern {:?}: {problem}", s.value),
                );
                return None;
            }
        };
        match segment_glob(&canonical) {
            Ok(g) => Some((canonical, g)),
            Err(e) => {
                self.at(s, format!("rule {rule:?}: bad pattern {:?}: {e}", s.value));
                None
            }
        }
    }

    fn rule(
        &mut self,
        r: Spanned<RawRule>,
        keys: &BTreeMap<String, PublicKey>,
        key_names: &BTreeSet<String>,
        roots: &BTreeSet<String>,
    ) -> Option<Rule> {
        let raw = r.value;
        let name = raw.name.value.clone();
        let before = self.issues.len();
        if raw.images.value.is_empty() {
            self.at(&raw.images, format!("rule {name:?}: images is empty"));
        }
        let mut patterns = Vec::new();
        for p in &raw.images.value {
            if let Some(compiled) = self.glob(p, &name) {
                patterns.push(compiled);
            }
        }
        let mut excludes = Vec::new();
        for p in &raw.exclude {
            if let Some((_, g)) = self.glob(p, &name) {
                excludes.push(g);
            }
        }
        if raw.authorities.value.is_empty() {
            self.at(
                &raw.authorities,
                format!("rule {name:?}: authorities is empty; a rule needs at least one"),
            );
        }
        let mut authorities = Vec::new();
        for (i, a) in raw.authorities.value.iter().enumerate() {
            if let Some(auth) = self.authority(a, i, &name, keys, key_names, roots) {
                authorities.push(auth);
            }
        }
        let threshold = match &raw.threshold {
            None => 1,
            Some(t) => {
                let n = raw.authorities.value.len() as u64;
                if t.value == 0 || t.value > n.max(1) {
                    self.at(
                        t,
                        format!(
                            "rule {name:?}: threshold {} must be between 1 and the number of authorities ({n})",
                            t.value
                        ),
                    );
                }
                t.value as usize
            }
        };
        if let SignedIdentity::ExactRepository(repo) = &raw.signed_identity
            && repo.is_empty()
        {
            self.at(
                &raw.name,
                format!("rule {name:?}: signedIdentity.exactRepository is empty"),
            );
        }
        if self.issues.len() > before {
            return None;
        }
        Some(Rule {
            name,
            position: (raw.name.referenced.line(), raw.name.referenced.column()),
            patterns,
            excludes,
            mode: raw.mode,
            threshold,
            authorities,
            signed_identity: raw.signed_identity,
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
                let kname = &k.value.name.value;
                let name = a.value.name.clone().unwrap_or_else(|| kname.clone());
                let trust_root = self.root_ref(&k.value.trust_root, rule, roots);
                match keys.get(kname) {
                    Some(key) => Some(Authority {
                        name,
                        kind: AuthorityKind::Key {
                            key: key.clone(),
                            tlog: a.value.tlog.unwrap_or(Tlog::Skip),
                            trust_root,
                        },
                    }),
                    None => {
                        if !key_names.contains(kname) {
                            let known: Vec<&String> = keys.keys().collect();
                            self.at(
                                &k.value.name,
                                format!(
                                    "rule {rule:?}: unknown key {kname:?} (keys defined: {known:?})"
                                ),
                            );
                        }
                        None
                    }
                }
            }
            (None, Some(kl)) => {
                let root = self.root_ref(&kl.value.trust_root, rule, roots);
                if kl.value.identities.value.is_empty() {
                    self.at(
                        &kl.value.identities,
                        format!("rule {rule:?}: keyless authority needs at least one identity"),
                    );
                }
                let mut identities = Vec::new();
                for id in &kl.value.identities.value {
                    if let Some(i) = self.identity(id, rule) {
                        identities.push(i);
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
            _ => {
                self.at(
                    a,
                    format!(
                        "rule {rule:?}: authority {} needs exactly one of key or keyless",
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
            self.at(
                r,
                format!("rule {rule:?}: unknown trust root {:?}", r.value),
            );
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
                    let first = e
                        .to_string()
                        .lines()
                        .last()
                        .unwrap_or("")
                        .trim()
                        .to_string();
                    self.at(r, format!("rule {rule:?}: {what}RegExp {:?} is not a valid regular expression: {first}", r.value));
                    None
                }
            },
            (None, None) => {
                self.at(
                    at,
                    format!("rule {rule:?}: identity needs {what} or {what}RegExp"),
                );
                None
            }
            (Some(_), Some(r)) => {
                self.at(
                    r,
                    format!("rule {rule:?}: give {what} or {what}RegExp, not both"),
                );
                None
            }
        }
    }

    /// Two rules with equally specific patterns that can match the same name are ambiguous.
    fn check_overlaps(&mut self, rules: &[Rule]) {
        for (i, a) in rules.iter().enumerate() {
            for b in &rules[i + 1..] {
                for (pa, _) in &a.patterns {
                    for (pb, _) in &b.patterns {
                        if literal_prefix_len(pa) != literal_prefix_len(pb) {
                            continue;
                        }
                        let witness = [witness_of(pa), witness_of(pb)].into_iter().find(|w| {
                            a.specificity(w).is_some()
                                && b.specificity(w).is_some()
                                && a.specificity(w) == b.specificity(w)
                        });
                        if let Some(w) = witness {
                            self.issues.push(Issue {
                                line: b.position.0,
                                column: b.position.1,
                                message: format!(
                                    "rules {:?} and {:?} are equally specific and both match {w:?} \
                                     (patterns {pa:?} and {pb:?}); make one more specific or exclude",
                                    a.name, b.name
                                ),
                            });
                            return;
                        }
                    }
                }
            }
        }
    }
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
            failures.push(b.to_string());
        }
    }
    let fail_reasons = |mut reasons: Vec<String>| -> Vec<String> {
        reasons.extend(failures.iter().cloned());
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

    fn first_issue(text: &str) -> (u64, u64, String) {
        match parse(text) {
            Err(PolicyError::Invalid { issues, .. }) => {
                let i = &issues[0];
                (i.line, i.column, i.message.clone())
            }
            other => panic!("expected invalid, got {other:?}"),
        }
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
            let (l, c, msg) = first_issue(text);
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
            patterns: vec![],
            excludes: vec![],
            mode,
            threshold,
            authorities: vec![auth("a"), auth("b")],
            signed_identity: SignedIdentity::MatchRepository,
            annotations: BTreeMap::new(),
            flux_verification: FluxVerification::Optional,
        }
    }

    fn bad(loc: &str) -> Rejection {
        Rejection::BadSignature {
            location: loc.into(),
            authority: "a".into(),
        }
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
}
