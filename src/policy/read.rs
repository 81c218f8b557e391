//! Reading a policy file into its raw shapes, reporting every structural problem (unknown,
//! repeated or missing fields, wrong types, values outside a field's choices) with its position
//! instead of stopping at the first. The shapes are taken from the tree of positioned nodes
//! ([`super::tree`]) by hand, so that one problem does not hide the next. Must not validate values.

use std::collections::BTreeMap;

use serde_saphyr::{Location, Spanned};

use super::Issue;
use super::model::{FluxVerification, Mode, NoMatch, Tlog};
use super::shown::shown;
use super::tree::{Node, Typed, Value};

mod attestation;
mod certificates;
mod namespace;
mod place;
pub(super) use attestation::{RawAttestation, RawCondition};
pub(super) use certificates::{RawCertIdentity, RawCertificates};
pub(super) use namespace::{RawNamespaces, RawRequirement, RawSelector};
pub(super) use place::{RawPlace, RawSignedIdentity};

// ---------------------------------------------------------------------------------------------
// Raw shapes: what the file says, before validation. A field that is absent or was reported
// as malformed is None (or its default); `broken` marks an item with a reported problem, so
// that checks across its fields do not repeat it.

pub(super) struct RawPolicy {
    pub api_version: Option<Spanned<String>>,
    pub kind: Option<Spanned<String>>,
    pub no_match: NoMatch,
    pub trust_roots: Vec<RawTrustRoot>,
    pub keys: Vec<RawKey>,
    pub rules: Option<Spanned<Vec<RawRule>>>,
}

pub(super) struct RawTrustRoot {
    pub name: Spanned<String>,
    pub trusted_root: Option<Spanned<String>>,
    /// `tuf: {mirror, root}`: exactly one of `trustedRoot` and `tuf` is given.
    pub tuf: Option<RawTuf>,
}

/// A trust root's `tuf:` form.
pub(super) struct RawTuf {
    pub mirror: Spanned<String>,
    /// The bootstrap root.json, relative to the policy file.
    pub root: Spanned<String>,
}

pub(super) struct RawKey {
    pub name: Spanned<String>,
    pub path: Option<Spanned<String>>,
    pub pem: Option<Spanned<String>>,
    pub broken: bool,
}

pub(super) struct RawRule {
    pub name: Spanned<String>,
    pub images: Option<Spanned<Vec<Spanned<String>>>>,
    /// None when it was malformed (absent is empty).
    pub exclude: Option<Vec<Spanned<String>>>,
    pub mode: Mode,
    pub threshold: Option<Spanned<u64>>,
    pub authorities: Option<Spanned<Vec<Spanned<RawAuthority>>>>,
    /// `signedIdentity` and `signaturesRepository`.
    pub place: RawPlace,
    pub annotations: BTreeMap<String, String>,
    pub flux_verification: FluxVerification,
    pub attestations: Vec<RawAttestation>,
    pub namespaces: RawNamespaces,
}

pub(super) struct RawAuthority {
    pub name: Option<String>,
    pub key: Option<RawKeyRef>,
    pub keyless: Option<RawKeyless>,
    pub certificates: Option<RawCertificates>,
    pub tlog: Option<Tlog>,
    pub broken: bool,
}

pub(super) struct RawKeyRef {
    pub name: Spanned<String>,
    /// The root whose Rekor keys check this key's log entries (tlog: optional/required).
    pub trust_root: Option<Spanned<String>>,
}

pub(super) struct RawKeyless {
    pub trust_root: Option<Spanned<String>>,
    pub identities: Option<Spanned<Vec<Spanned<RawIdentity>>>>,
}

pub(super) struct RawIdentity {
    pub issuer: Option<String>,
    pub issuer_reg_exp: Option<Spanned<String>>,
    pub subject: Option<String>,
    pub subject_reg_exp: Option<Spanned<String>>,
    pub github_workflow_trigger: Option<String>,
    pub github_workflow_sha: Option<String>,
    pub github_workflow_name: Option<String>,
    pub github_workflow_repository: Option<String>,
    pub github_workflow_ref: Option<String>,
    pub broken: bool,
}

// ---------------------------------------------------------------------------------------------
// The reader

const POLICY_FIELDS: &[&str] = &[
    "apiVersion",
    "kind",
    "noMatch",
    "trustRoots",
    "keys",
    "rules",
];
const TRUST_ROOT_FIELDS: &[&str] = &["name", "trustedRoot", "tuf"];
const TUF_FIELDS: &[&str] = &["mirror", "root"];
const KEY_FIELDS: &[&str] = &["name", "path", "pem"];
const RULE_FIELDS: &[&str] = &[
    "name",
    "images",
    "exclude",
    "mode",
    "threshold",
    "authorities",
    "signedIdentity",
    "signaturesRepository",
    "annotations",
    "fluxVerification",
    "attestations",
    "namespaces",
    "namespaceSelector",
];
const AUTHORITY_FIELDS: &[&str] = &["name", "key", "keyless", "certificates", "tlog"];
const KEY_REF_FIELDS: &[&str] = &["name", "trustRoot"];
const KEYLESS_FIELDS: &[&str] = &["trustRoot", "identities"];
const IDENTITY_FIELDS: &[&str] = &[
    "issuer",
    "issuerRegExp",
    "subject",
    "subjectRegExp",
    "githubWorkflowTrigger",
    "githubWorkflowSha",
    "githubWorkflowName",
    "githubWorkflowRepository",
    "githubWorkflowRef",
];
const NO_MATCH_VALUES: &[&str] = &["deny", "allow", "warn"];
const MODE_VALUES: &[&str] = &["enforce", "warn", "audit"];
const TLOG_VALUES: &[&str] = &["skip", "optional", "required"];
const FLUX_VALUES: &[&str] = &["optional", "required"];

/// A mapping's known fields, each given once.
struct Fields<'n> {
    at: Location,
    found: BTreeMap<&'static str, &'n Node>,
    /// Known fields an unknown one was reported as a likely misspelling of: their absence
    /// is that same mistake, not another.
    suggested: Vec<&'static str>,
    /// Whether an unknown field was reported: checks across the mapping's fields (one of
    /// path or pem, key or keyless, subject or subjectRegExp) would repeat that mistake.
    had_unknown: bool,
}

impl<'n> Fields<'n> {
    fn get(&self, name: &str) -> Option<&'n Node> {
        self.found.get(name).copied()
    }
}

/// Reads the raw shapes out of a tree, collecting every problem.
pub(super) struct Reader<'s> {
    source: &'s str,
    pub issues: Vec<Issue>,
}

impl<'s> Reader<'s> {
    pub(crate) fn new(source: &'s str) -> Reader<'s> {
        Reader {
            source,
            issues: Vec::new(),
        }
    }

    fn issue(&mut self, at: &Location, message: impl Into<String>) {
        self.issues.push(Issue {
            line: at.line().max(1),
            column: at.column().max(1),
            message: message.into(),
        });
    }

    /// The text of a scalar as a field that wants text reads it; None for other nodes.
    fn scalar_text(&self, n: &Node) -> Option<String> {
        match &n.value {
            Value::Text(s) => Some(s.clone()),
            Value::Typed(_) => {
                let span = n.defined.span();
                let start = usize::try_from(span.byte_offset()?).ok()?;
                let len = usize::try_from(span.byte_len()?).ok()?;
                let raw = self.source.get(start..start.checked_add(len)?)?;
                Some(raw.trim().to_string())
            }
            _ => None,
        }
    }

    fn describe(&self, n: &Node) -> String {
        match &n.value {
            Value::Null => "nothing".into(),
            Value::Text(s) => format!("text {}", shown(s)),
            Value::Typed(t) => {
                let what = match t {
                    Typed::Bool => "the boolean",
                    Typed::Unsigned(_) | Typed::Other => "the number",
                };
                match self.scalar_text(n) {
                    Some(text) => format!("{what} {}", super::shown::cut_escaped(&text)),
                    None => what.trim_start_matches("the ").to_string(),
                }
            }
            Value::List(_) => "a list".into(),
            Value::Mapping(_) => "a mapping".into(),
        }
    }

    /// A mapping's fields: a problem for a node that is not a mapping, for each field not in
    /// `known` and for each field given twice.
    fn fields<'n>(
        &mut self,
        n: &'n Node,
        what: &str,
        known: &'static [&'static str],
    ) -> Option<Fields<'n>> {
        let Value::Mapping(entries) = &n.value else {
            let msg = format!("{what} must be a mapping, found {}", self.describe(n));
            self.issue(&n.at, msg);
            return None;
        };
        let mut found = BTreeMap::new();
        let mut suggested = Vec::new();
        let mut had_unknown = false;
        for (k, v) in entries {
            let Some(name) = self.scalar_text(k) else {
                let msg = format!(
                    "{what}: a field name must be text, found {}",
                    self.describe(k)
                );
                self.issue(&k.at, msg);
                continue;
            };
            match known.iter().find(|f| **f == name) {
                None => {
                    had_unknown = true;
                    let msg = match known.iter().find(|f| close(f, &name)) {
                        Some(f) => {
                            suggested.push(*f);
                            format!(
                                "unknown field `{}` in {what}; did you mean `{f}`?",
                                super::shown::cut_escaped(&name)
                            )
                        }
                        None => format!(
                            "unknown field `{}` in {what}, expected {}",
                            super::shown::cut_escaped(&name),
                            one_of(known)
                        ),
                    };
                    self.issue(&k.at, msg);
                }
                Some(f) if found.contains_key(f) => {
                    self.issue(&k.at, format!("field `{f}` is given twice in {what}"));
                }
                Some(f) => {
                    found.insert(*f, v);
                }
            }
        }
        Some(Fields {
            at: n.at,
            found,
            suggested,
            had_unknown,
        })
    }

    /// A field that must be there.
    fn required<'n>(&mut self, f: &Fields<'n>, name: &str, what: &str) -> Option<&'n Node> {
        let n = f.get(name);
        if n.is_none() && !f.suggested.contains(&name) {
            self.issue(&f.at, format!("missing field `{name}` in {what}"));
        }
        n
    }

    fn text(&mut self, n: &Node, field: &str) -> Option<Spanned<String>> {
        match self.scalar_text(n) {
            Some(t) => Some(Spanned::new(t, n.at, n.defined)),
            None => {
                let msg = format!("{field} must be text, found {}", self.describe(n));
                self.issue(&n.at, msg);
                None
            }
        }
    }

    /// An optional text field; `broken` is set when it is there but not text.
    fn opt_text(&mut self, f: &Fields, name: &str, broken: &mut bool) -> Option<Spanned<String>> {
        let n = f.get(name)?;
        let t = self.text(n, name);
        *broken |= t.is_none();
        t
    }

    /// A list field read item by item with `item`, each kept with its position; an item that
    /// `item` refuses (having said why) is left out.
    pub(super) fn spanned_list<T>(
        &mut self,
        n: &Node,
        field: &str,
        mut item: impl FnMut(&mut Self, &Node) -> Option<T>,
    ) -> Option<Spanned<Vec<Spanned<T>>>> {
        let items = self.list(n, field)?;
        let list = items
            .iter()
            .filter_map(|i| item(self, i).map(|raw| Spanned::new(raw, i.at, i.defined)))
            .collect();
        Some(Spanned::new(list, n.at, n.defined))
    }

    fn list<'n>(&mut self, n: &'n Node, field: &str) -> Option<&'n [Node]> {
        match &n.value {
            Value::List(items) => Some(items),
            _ => {
                let msg = format!("{field} must be a list, found {}", self.describe(n));
                self.issue(&n.at, msg);
                None
            }
        }
    }

    /// A list of text; None (after a problem for each bad entry) unless every entry is text.
    fn texts(&mut self, n: &Node, field: &str) -> Option<Spanned<Vec<Spanned<String>>>> {
        let items = self.list(n, field)?;
        let mut out = Vec::new();
        let mut ok = true;
        for item in items {
            match self.text(item, &format!("an entry of {field}")) {
                Some(t) => out.push(t),
                None => ok = false,
            }
        }
        ok.then(|| Spanned::new(out, n.at, n.defined))
    }

    /// One of a field's fixed values.
    fn choice(
        &mut self,
        n: &Node,
        field: &str,
        values: &'static [&'static str],
    ) -> Option<&'static str> {
        let t = self.text(n, field)?;
        let found = values.iter().find(|v| **v == t.value).copied();
        if found.is_none() {
            let msg = format!(
                "{field}: unknown variant `{}`, expected {}",
                super::shown::cut_escaped(&t.value),
                one_of(values)
            );
            self.issue(&n.at, msg);
        }
        found
    }

    // --- the shapes

    pub(crate) fn policy(&mut self, root: &Node) -> Option<RawPolicy> {
        let f = self.fields(root, "the policy", POLICY_FIELDS)?;
        let api_version = self
            .required(&f, "apiVersion", "the policy")
            .and_then(|n| self.text(n, "apiVersion"));
        let kind = self
            .required(&f, "kind", "the policy")
            .and_then(|n| self.text(n, "kind"));
        let no_match = match f.get("noMatch") {
            None => NoMatch::default(),
            Some(n) => match self.choice(n, "noMatch", NO_MATCH_VALUES) {
                Some("allow") => NoMatch::Allow,
                Some("warn") => NoMatch::Warn,
                _ => NoMatch::Deny,
            },
        };
        let mut trust_roots = Vec::new();
        if let Some(n) = f.get("trustRoots")
            && let Some(items) = self.list(n, "trustRoots")
        {
            for item in items {
                if let Some(r) = self.trust_root(item) {
                    trust_roots.push(r);
                }
            }
        }
        let mut keys = Vec::new();
        if let Some(n) = f.get("keys")
            && let Some(items) = self.list(n, "keys")
        {
            for item in items {
                if let Some(k) = self.key(item) {
                    keys.push(k);
                }
            }
        }
        let rules = match self.required(&f, "rules", "the policy") {
            Some(n) => self.list(n, "rules").map(|items| {
                let rules = items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, item)| self.rule(item, i))
                    .collect();
                Spanned::new(rules, n.at, n.defined)
            }),
            None => None,
        };
        Some(RawPolicy {
            api_version,
            kind,
            no_match,
            trust_roots,
            keys,
            rules,
        })
    }

    fn trust_root(&mut self, n: &Node) -> Option<RawTrustRoot> {
        const WHAT: &str = "a trust root";
        let f = self.fields(n, WHAT, TRUST_ROOT_FIELDS)?;
        let name = self.required(&f, "name", WHAT);
        let name = name.and_then(|n| self.text(n, "name"));
        let mut broken = false;
        let trusted_root = self.opt_text(&f, "trustedRoot", &mut broken);
        let tuf_node = f.get("tuf");
        let tuf = tuf_node.and_then(|t| self.tuf(t));
        match (f.get("trustedRoot"), tuf_node) {
            (Some(_), Some(t)) => {
                self.issue(
                    &t.at,
                    "a trust root has either trustedRoot or tuf, not both",
                );
            }
            (None, None) => self.issue(&n.at, "a trust root needs trustedRoot or tuf"),
            _ => {}
        }
        Some(RawTrustRoot {
            name: name?,
            trusted_root,
            tuf,
        })
    }

    /// `tuf: {mirror: URL|DIR|FILE.tar.gz, root: FILE}`.
    fn tuf(&mut self, n: &Node) -> Option<RawTuf> {
        const WHAT: &str = "a trust root's tuf";
        let f = self.fields(n, WHAT, TUF_FIELDS)?;
        let mirror = self.required(&f, "mirror", WHAT);
        let mirror = mirror.and_then(|n| self.text(n, "mirror"));
        let root = self.required(&f, "root", WHAT);
        let root = root.and_then(|n| self.text(n, "root"));
        Some(RawTuf {
            mirror: mirror?,
            root: root?,
        })
    }

    fn key(&mut self, n: &Node) -> Option<RawKey> {
        const WHAT: &str = "a key";
        let f = self.fields(n, WHAT, KEY_FIELDS)?;
        let mut broken = f.had_unknown;
        let name = self.required(&f, "name", WHAT);
        let name = name.and_then(|n| self.text(n, "name"));
        let path = self.opt_text(&f, "path", &mut broken);
        let pem = self.opt_text(&f, "pem", &mut broken);
        Some(RawKey {
            name: name?,
            path,
            pem,
            broken,
        })
    }

    fn rule(&mut self, n: &Node, index: usize) -> Option<RawRule> {
        const WHAT: &str = "a rule";
        let f = self.fields(n, WHAT, RULE_FIELDS)?;
        let name = self
            .required(&f, "name", WHAT)
            .and_then(|n| self.text(n, "name"))
            .unwrap_or_else(|| Spanned::new(format!("rules[{index}]"), f.at, f.at));
        let images = self
            .required(&f, "images", WHAT)
            .and_then(|n| self.texts(n, "images"));
        let exclude = match f.get("exclude") {
            Some(n) => self.texts(n, "exclude").map(|l| l.value),
            None => Some(Vec::new()),
        };
        let mode = match f.get("mode") {
            None => Mode::default(),
            Some(n) => match self.choice(n, "mode", MODE_VALUES) {
                Some("warn") => Mode::Warn,
                Some("audit") => Mode::Audit,
                _ => Mode::Enforce,
            },
        };
        let threshold = f.get("threshold").and_then(|n| match n.value {
            Value::Typed(Typed::Unsigned(u)) => Some(Spanned::new(u, n.at, n.defined)),
            _ => {
                let msg = format!(
                    "threshold must be a whole number, found {}",
                    self.describe(n)
                );
                self.issue(&n.at, msg);
                None
            }
        });
        let authorities = self.required(&f, "authorities", WHAT).and_then(|n| {
            let items = self.list(n, "authorities")?;
            let list = items
                .iter()
                .filter_map(|a| {
                    self.authority(a)
                        .map(|raw| Spanned::new(raw, a.at, a.defined))
                })
                .collect();
            Some(Spanned::new(list, n.at, n.defined))
        });
        let place = self.place(f.get("signedIdentity"), f.get("signaturesRepository"));
        let annotations = f
            .get("annotations")
            .map(|n| self.annotations(n))
            .unwrap_or_default();
        let flux_verification = match f.get("fluxVerification") {
            None => FluxVerification::default(),
            Some(n) => match self.choice(n, "fluxVerification", FLUX_VALUES) {
                Some("required") => FluxVerification::Required,
                _ => FluxVerification::Optional,
            },
        };
        let attestations = f
            .get("attestations")
            .and_then(|n| self.attestations(n))
            .unwrap_or_default();
        let namespaces = self.rule_namespaces(&f);
        Some(RawRule {
            name,
            images,
            exclude,
            mode,
            threshold,
            authorities,
            place,
            annotations,
            flux_verification,
            attestations,
            namespaces,
        })
    }

    fn annotations(&mut self, n: &Node) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let Value::Mapping(entries) = &n.value else {
            let msg = format!("annotations must be a mapping, found {}", self.describe(n));
            self.issue(&n.at, msg);
            return out;
        };
        for (k, v) in entries {
            let Some(key) = self.text(k, "an annotation name") else {
                continue;
            };
            let Some(value) = self.text(v, &format!("annotation {}", shown(&key.value))) else {
                continue;
            };
            if out.contains_key(&key.value) {
                let msg = format!("annotation {} is given twice", shown(&key.value));
                self.issue(&k.at, msg);
                continue;
            }
            out.insert(key.value, value.value);
        }
        out
    }

    fn authority(&mut self, n: &Node) -> Option<RawAuthority> {
        const WHAT: &str = "an authority";
        let f = self.fields(n, WHAT, AUTHORITY_FIELDS)?;
        let mut broken = f.had_unknown;
        let name = self.opt_text(&f, "name", &mut broken).map(|s| s.value);
        let key = f.get("key").and_then(|k| {
            let r = self.key_ref(k);
            broken |= r.is_none();
            r
        });
        let keyless = f.get("keyless").and_then(|k| {
            let r = self.keyless(k);
            broken |= r.is_none();
            r
        });
        let certificates = f.get("certificates").and_then(|c| {
            let r = self.certificates(c);
            broken |= r.is_none();
            r
        });
        let tlog = f.get("tlog").and_then(|t| {
            let r = match self.choice(t, "tlog", TLOG_VALUES) {
                Some("skip") => Some(Tlog::Skip),
                Some("optional") => Some(Tlog::Optional),
                Some("required") => Some(Tlog::Required),
                _ => None,
            };
            broken |= r.is_none();
            r
        });
        Some(RawAuthority {
            name,
            key,
            keyless,
            certificates,
            tlog,
            broken,
        })
    }

    fn key_ref(&mut self, n: &Node) -> Option<RawKeyRef> {
        const WHAT: &str = "an authority's key";
        let f = self.fields(n, WHAT, KEY_REF_FIELDS)?;
        let mut broken = false;
        let name = self.required(&f, "name", WHAT);
        let name = name.and_then(|n| self.text(n, "key.name"));
        let trust_root = self.opt_text(&f, "trustRoot", &mut broken);
        if broken {
            return None;
        }
        Some(RawKeyRef {
            name: name?,
            trust_root,
        })
    }

    fn keyless(&mut self, n: &Node) -> Option<RawKeyless> {
        const WHAT: &str = "a keyless authority";
        let f = self.fields(n, WHAT, KEYLESS_FIELDS)?;
        let mut broken = false;
        let trust_root = self.opt_text(&f, "trustRoot", &mut broken);
        let identities = self
            .required(&f, "identities", WHAT)
            .and_then(|n| self.spanned_list(n, "identities", Self::identity));
        if broken {
            return None;
        }
        Some(RawKeyless {
            trust_root,
            identities,
        })
    }

    fn identity(&mut self, n: &Node) -> Option<RawIdentity> {
        let f = self.fields(n, "an identity", IDENTITY_FIELDS)?;
        let mut broken = f.had_unknown;
        let mut text = |r: &mut Self, name| r.opt_text(&f, name, &mut broken);
        let issuer = text(self, "issuer").map(|s| s.value);
        let issuer_reg_exp = text(self, "issuerRegExp");
        let subject = text(self, "subject").map(|s| s.value);
        let subject_reg_exp = text(self, "subjectRegExp");
        let github_workflow_trigger = text(self, "githubWorkflowTrigger").map(|s| s.value);
        let github_workflow_sha = text(self, "githubWorkflowSha").map(|s| s.value);
        let github_workflow_name = text(self, "githubWorkflowName").map(|s| s.value);
        let github_workflow_repository = text(self, "githubWorkflowRepository").map(|s| s.value);
        let github_workflow_ref = text(self, "githubWorkflowRef").map(|s| s.value);
        Some(RawIdentity {
            issuer,
            issuer_reg_exp,
            subject,
            subject_reg_exp,
            github_workflow_trigger,
            github_workflow_sha,
            github_workflow_name,
            github_workflow_repository,
            github_workflow_ref,
            broken,
        })
    }
}

/// "`a`, `b` or `c`"
fn one_of(values: &[&str]) -> String {
    match values {
        [] => "nothing".into(),
        [one] => format!("`{one}`"),
        [init @ .., last] => format!(
            "one of {} or `{last}`",
            init.iter()
                .map(|v| format!("`{v}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Whether an unknown field name is likely a misspelling of `known`: the same but for case,
/// or one edit away (names of three or four characters) or two (longer names).
fn close(known: &str, name: &str) -> bool {
    if known.eq_ignore_ascii_case(name) {
        return true;
    }
    let (a, b): (Vec<char>, Vec<char>) = (known.chars().collect(), name.chars().collect());
    let most = match b.len() {
        0..=2 | 65.. => return false,
        3 | 4 => 1,
        _ => 2,
    };
    if a.len().abs_diff(b.len()) > most {
        return false;
    }
    // Edit distance with transpositions (optimal string alignment): `paht` is one edit from
    // `path`.
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()] <= most
}
