//! Where a rule applies: the namespace of the admitted object ([`NamespaceContext`]), a rule's
//! `namespaces` globs and `namespaceSelector` (Kubernetes' LabelSelector semantics), and whether
//! two rules' conditions can both hold. Must not read files or look anything up.

use std::collections::{BTreeMap, BTreeSet};

/// The namespace an object is admitted (or checked) in: its name and, when they were read,
/// its labels. A check without one (a cluster-scoped object, `verify REF` without
/// `--namespace`) sees only rules that name no namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct NamespaceContext {
    /// The namespace's name (a DNS-1123 label).
    pub name: String,
    /// Its labels; None when they were not read (the policy that was in force when the check
    /// began selected no namespace by label). A rule with a `namespaceSelector` cannot be
    /// decided without them: see [`Scoped::LabelsNotRead`].
    pub labels: Option<BTreeMap<String, String>>,
}

impl NamespaceContext {
    /// A namespace known by name only: its labels not read.
    pub fn named(name: impl Into<String>) -> NamespaceContext {
        NamespaceContext {
            name: name.into(),
            labels: None,
        }
    }

    /// A namespace with the labels read for it (empty: it has none).
    pub fn with_labels(name: impl Into<String>, labels: BTreeMap<String, String>) -> Self {
        NamespaceContext {
            name: name.into(),
            labels: Some(labels),
        }
    }
}

/// Whether a rule's namespace conditions hold for a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scoped {
    /// They hold (a cluster-wide rule always does).
    Holds,
    /// They do not.
    Fails,
    /// Its `namespaces` hold, or it gives none, but its `namespaceSelector` needs the labels
    /// of a namespace whose labels were not read: the check cannot say, and must not fall back
    /// to the rules that remain (a policy reloaded with a selector while a check was under way).
    LabelsNotRead,
}

/// A `matchExpressions` operator, as Kubernetes spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// The label is there and its value is one of the values.
    In,
    /// The label is absent, or its value is none of the values.
    NotIn,
    /// The label is there (any value).
    Exists,
    /// The label is absent.
    DoesNotExist,
}

/// One requirement of a selector: a label key, an operator and its values (a `matchLabels`
/// entry is `In` with one value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// The label key.
    pub key: String,
    /// How the key relates to the values.
    pub operator: Operator,
    /// The values (empty for `Exists` and `DoesNotExist`).
    pub values: BTreeSet<String>,
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            Operator::In => value.is_some_and(|v| self.values.contains(v)),
            Operator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }

    /// The values the key may have under this requirement: None for any (or absent), Some(set)
    /// when it must be present with one of them (an empty set when it must be present with any
    /// value is expressed as `present` instead).
    fn constraint(&self) -> KeyConstraint {
        match self.operator {
            Operator::In => KeyConstraint::OneOf(self.values.clone()),
            Operator::NotIn => KeyConstraint::NoneOf(self.values.clone()),
            Operator::Exists => KeyConstraint::Present,
            Operator::DoesNotExist => KeyConstraint::Absent,
        }
    }
}

/// What a selector says about one key, for the disjointness check.
enum KeyConstraint {
    OneOf(BTreeSet<String>),
    NoneOf(BTreeSet<String>),
    Present,
    Absent,
}

/// A rule's `namespaceSelector`: every requirement must hold (`matchLabels` and
/// `matchExpressions` ANDed); an empty selector matches every namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    /// The requirements, `matchLabels` first (each as `In` with one value).
    pub requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// Whether a namespace with these labels is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Whether no set of labels can satisfy both selectors (a conservative answer: false when
    /// unsure). Per key, the two selectors' requirements together must leave no possibility.
    fn disjoint(&self, other: &LabelSelector) -> bool {
        let keys: BTreeSet<&str> = self
            .requirements
            .iter()
            .chain(&other.requirements)
            .map(|r| r.key.as_str())
            .collect();
        keys.into_iter().any(|key| {
            let on_key = self
                .requirements
                .iter()
                .chain(&other.requirements)
                .filter(|r| r.key == key)
                .map(Requirement::constraint);
            unsatisfiable(on_key)
        })
    }
}

/// Whether constraints on one key cannot all hold.
fn unsatisfiable(constraints: impl Iterator<Item = KeyConstraint>) -> bool {
    let (mut present, mut absent) = (false, false);
    let mut allowed: Option<BTreeSet<String>> = None;
    let mut refused = BTreeSet::new();
    for c in constraints {
        match c {
            KeyConstraint::OneOf(values) => {
                present = true;
                allowed = Some(match allowed {
                    Some(a) => a.intersection(&values).cloned().collect(),
                    None => values,
                });
            }
            KeyConstraint::NoneOf(values) => refused.extend(values),
            KeyConstraint::Present => present = true,
            KeyConstraint::Absent => absent = true,
        }
    }
    let no_value_left = allowed.is_some_and(|a| a.iter().all(|v| refused.contains(v)));
    (present && absent) || no_value_left
}

/// A `namespaces` glob: `*` any run of characters, `?` one; otherwise a namespace name.
/// Matched by hand over bytes (no regex): every check tries each scoped rule's globs, and a
/// namespace name is at most 63 characters of a small alphabet.
#[derive(Debug, Clone)]
pub struct NamespaceGlob {
    /// The glob as the file gives it.
    pub text: String,
}

impl NamespaceGlob {
    /// A glob over namespace names, or why it is not one: only lower-case letters, digits,
    /// `-`, `*` and `?`, at most 63 characters, and a name without wildcards must be a
    /// DNS-1123 label.
    pub fn new(text: &str) -> Result<NamespaceGlob, String> {
        if text.is_empty() {
            return Err("an empty namespace pattern".into());
        }
        if text.len() > crate::extract::names::MAX_LABEL {
            return Err("longer than a namespace name can be (63 characters)".into());
        }
        if let Some(c) = text
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || "-*?".contains(*c)))
        {
            return Err(format!(
                "{c:?} cannot be in a namespace name (lower-case letters, digits and `-`; \
                 `*` and `?` as wildcards)"
            ));
        }
        if !text.contains(['*', '?']) && !crate::extract::names::is_dns1123_label(text) {
            return Err("not a namespace name (a DNS-1123 label)".into());
        }
        Ok(NamespaceGlob {
            text: text.to_string(),
        })
    }

    /// Whether the namespace `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        glob_match(self.text.as_bytes(), name.as_bytes())
    }

    /// Whether some name matches both globs (wildcards `*` and `?` over the same alphabet).
    fn overlaps(&self, other: &NamespaceGlob) -> bool {
        globs_intersect(self.text.as_bytes(), other.text.as_bytes())
    }
}

/// Whether `name` matches a glob of literals, `?` (one byte) and `*` (any run): the usual
/// greedy walk, going back only to the last `*` (linear in practice, quadratic at worst).
fn glob_match(glob: &[u8], name: &[u8]) -> bool {
    let (mut g, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match glob.get(g) {
            Some(b'*') => {
                star = Some((g, n));
                g += 1;
            }
            Some(&c) if c == b'?' || c == name[n] => {
                g += 1;
                n += 1;
            }
            _ => match star {
                Some((sg, sn)) => {
                    star = Some((sg, sn + 1));
                    g = sg + 1;
                    n = sn + 1;
                }
                None => return false,
            },
        }
    }
    glob[g..].iter().all(|&c| c == b'*')
}

/// Whether two globs of literals, `?` and `*` match a common string: reachability over pairs
/// of positions (a `*` may match nothing or eat what the other side consumes).
fn globs_intersect(a: &[u8], b: &[u8]) -> bool {
    let mut seen = vec![vec![false; b.len() + 1]; a.len() + 1];
    let mut todo = vec![(0usize, 0usize)];
    while let Some((i, j)) = todo.pop() {
        if std::mem::replace(&mut seen[i][j], true) {
            continue;
        }
        if i == a.len() && j == b.len() {
            return true;
        }
        let (x, y) = (a.get(i).copied(), b.get(j).copied());
        if x == Some(b'*') {
            todo.push((i + 1, j));
        }
        if y == Some(b'*') {
            todo.push((i, j + 1));
        }
        match (x, y) {
            (Some(b'*'), Some(b'*')) | (None, _) | (_, None) => {}
            (Some(b'*'), Some(_)) => todo.push((i, j + 1)),
            (Some(_), Some(b'*')) => todo.push((i + 1, j)),
            (Some(p), Some(q)) if p == q || p == b'?' || q == b'?' => todo.push((i + 1, j + 1)),
            _ => {}
        }
    }
    false
}

/// Where a rule applies: its `namespaces` (any one matching the name) and its
/// `namespaceSelector` (the labels), both when both are given. A rule with neither is
/// cluster-wide.
#[derive(Debug, Clone, Default)]
pub struct NamespaceScope {
    /// `namespaces`: None when the rule does not give it.
    pub globs: Option<Vec<NamespaceGlob>>,
    /// `namespaceSelector`: None when the rule does not give it.
    pub selector: Option<LabelSelector>,
}

impl NamespaceScope {
    /// Whether the rule names no namespace (applies everywhere, to cluster-scoped objects too).
    pub fn is_cluster_wide(&self) -> bool {
        self.globs.is_none() && self.selector.is_none()
    }

    /// Whether a check in `namespace` (None: a cluster-scoped object) falls under the rule.
    pub fn admits(&self, namespace: Option<&NamespaceContext>) -> Scoped {
        if self.is_cluster_wide() {
            return Scoped::Holds;
        }
        let Some(ns) = namespace else {
            return Scoped::Fails;
        };
        let named = self
            .globs
            .as_ref()
            .is_none_or(|g| g.iter().any(|g| g.matches(&ns.name)));
        let labelled = match (&self.selector, &ns.labels) {
            (None, _) => Some(true),
            (Some(s), Some(labels)) => Some(s.matches(labels)),
            (Some(_), None) => None,
        };
        match (named, labelled) {
            (false, _) | (true, Some(false)) => Scoped::Fails,
            (true, Some(true)) => Scoped::Holds,
            (true, None) => Scoped::LabelsNotRead,
        }
    }

    /// Whether both scopes may admit the same namespace: globs that overlap (or a rule without
    /// globs), and selectors not provably disjoint. Conservative: true when unsure.
    pub fn may_overlap(&self, other: &NamespaceScope) -> bool {
        let names = match (&self.globs, &other.globs) {
            (Some(a), Some(b)) => a.iter().any(|x| b.iter().any(|y| x.overlaps(y))),
            _ => true,
        };
        let labels = match (&self.selector, &other.selector) {
            (Some(a), Some(b)) => !a.disjoint(b),
            _ => true,
        };
        names && labels
    }

    /// Whether any part of the scope looks at labels (then the labels must be looked up).
    pub fn needs_labels(&self) -> bool {
        self.selector.is_some()
    }
}

/// Whether `key` is a Kubernetes label key: an optional DNS-1123 subdomain prefix and `/`,
/// then a name of at most 63 characters (alphanumerics, `-`, `_`, `.`, starting and ending
/// alphanumeric). Otherwise why not.
pub fn check_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && (p.is_empty() || !crate::extract::names::is_dns1123_subdomain(p))
    {
        return Err("its prefix (before `/`) must be a DNS-1123 subdomain".into());
    }
    if name.is_empty() {
        return Err("its name (after any prefix) is empty".into());
    }
    check_label_value(name).map_err(|_| {
        "its name must be at most 63 alphanumerics, `-`, `_` or `.`, starting and ending \
         with an alphanumeric"
            .to_string()
    })
}

/// Whether `value` is a Kubernetes label value: empty, or at most 63 alphanumerics, `-`, `_`
/// or `.`, starting and ending with an alphanumeric.
pub fn check_label_value(value: &str) -> Result<(), String> {
    let b = value.as_bytes();
    let alnum = |c: &u8| c.is_ascii_alphanumeric();
    let ok = b.is_empty()
        || (b.len() <= 63
            && b.first().is_some_and(alnum)
            && b.last().is_some_and(alnum)
            && b.iter().all(|c| alnum(c) || b"-_.".contains(c)));
    if ok {
        Ok(())
    } else {
        Err(
            "a label value is at most 63 alphanumerics, `-`, `_` or `.`, starting and ending \
             with an alphanumeric"
                .into(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn req(key: &str, operator: Operator, values: &[&str]) -> Requirement {
        Requirement {
            key: key.into(),
            operator,
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    fn sel(reqs: Vec<Requirement>) -> LabelSelector {
        LabelSelector { requirements: reqs }
    }

    #[test]
    fn operators_as_kubernetes_reads_them() {
        let l = labels(&[("team", "a"), ("tier", "prod")]);
        let none = labels(&[]);
        assert!(req("team", Operator::In, &["a", "b"]).matches(&l));
        assert!(!req("team", Operator::In, &["b"]).matches(&l));
        assert!(!req("team", Operator::In, &["a"]).matches(&none));
        assert!(!req("team", Operator::NotIn, &["a"]).matches(&l));
        assert!(req("team", Operator::NotIn, &["b"]).matches(&l));
        // NotIn holds for a namespace without the label, as in apimachinery.
        assert!(req("team", Operator::NotIn, &["a"]).matches(&none));
        assert!(req("team", Operator::Exists, &[]).matches(&l));
        assert!(!req("team", Operator::Exists, &[]).matches(&none));
        assert!(req("team", Operator::DoesNotExist, &[]).matches(&none));
        assert!(!req("team", Operator::DoesNotExist, &[]).matches(&l));
        // Requirements are ANDed; the empty selector matches everything.
        let both = sel(vec![
            req("team", Operator::In, &["a"]),
            req("tier", Operator::NotIn, &["dev"]),
        ]);
        assert!(both.matches(&l));
        assert!(!both.matches(&labels(&[("team", "a"), ("tier", "dev")])));
        assert!(sel(vec![]).matches(&none));
        assert!(sel(vec![]).matches(&l));
    }

    #[test]
    fn scopes_and_cluster_scoped_objects() {
        let cluster = NamespaceScope::default();
        assert!(cluster.is_cluster_wide());
        assert_eq!(cluster.admits(None), Scoped::Holds);
        let team_a = NamespaceScope {
            globs: Some(vec![NamespaceGlob::new("team-a-*").unwrap()]),
            selector: None,
        };
        assert_eq!(team_a.admits(None), Scoped::Fails);
        let web = NamespaceContext::named("team-a-web");
        assert_eq!(team_a.admits(Some(&web)), Scoped::Holds);
        let other = NamespaceContext::named("team-b-web");
        assert_eq!(team_a.admits(Some(&other)), Scoped::Fails);
        let everywhere = NamespaceScope {
            globs: None,
            selector: Some(LabelSelector::default()),
        };
        assert!(!everywhere.is_cluster_wide());
        assert_eq!(everywhere.admits(None), Scoped::Fails);
        let x = NamespaceContext::with_labels("x", BTreeMap::new());
        assert_eq!(everywhere.admits(Some(&x)), Scoped::Holds);
        // A selector over labels that were not read cannot be decided, not even `{}`.
        let unread = NamespaceContext::named("x");
        assert_eq!(everywhere.admits(Some(&unread)), Scoped::LabelsNotRead);
        // Both parts ANDed.
        let both = NamespaceScope {
            globs: Some(vec![NamespaceGlob::new("team-a-*").unwrap()]),
            selector: Some(sel(vec![req("env", Operator::In, &["prod"])])),
        };
        let mut ns = NamespaceContext::with_labels("team-a-web", BTreeMap::new());
        assert_eq!(both.admits(Some(&ns)), Scoped::Fails);
        ns.labels = Some(labels(&[("env", "prod")]));
        assert_eq!(both.admits(Some(&ns)), Scoped::Holds);
        // The names decide first: a namespace they exclude needs no labels.
        assert_eq!(both.admits(Some(&web)), Scoped::LabelsNotRead);
        assert_eq!(both.admits(Some(&other)), Scoped::Fails);
    }

    #[test]
    fn globs_are_namespace_names() {
        for bad in [
            "",
            "Team",
            "a/b",
            "a.b",
            "-a",
            "a_b",
            &"a".repeat(64),
            "[ab]",
        ] {
            assert!(NamespaceGlob::new(bad).is_err(), "{bad:?}");
        }
        for ok in ["*", "team-a", "team-?", "*-prod", "a*b*c"] {
            assert!(NamespaceGlob::new(ok).is_ok(), "{ok:?}");
        }
        let g = NamespaceGlob::new("team-?").unwrap();
        assert!(g.matches("team-a") && !g.matches("team-ab"));
        let m = |g: &str, n: &str| NamespaceGlob::new(g).unwrap().matches(n);
        assert!(m("*", "a") && m("team-a-*", "team-a-") && m("team-a-*", "team-a-web"));
        assert!(m("a*b*c", "abc") && m("a*b*c", "axxbyyc") && m("*-prod", "web-prod"));
        assert!(!m("a*b*c", "axxbyy") && !m("team-a", "team-ab") && !m("*-prod", "prod"));
        assert!(m("a*a*a", "aaa") && !m("a*a*a", "aa") && m("??", "ab") && !m("??", "a"));
    }

    #[test]
    fn glob_overlaps() {
        let o = |a: &str, b: &str| globs_intersect(a.as_bytes(), b.as_bytes());
        assert!(o("team-*", "*-a"));
        assert!(o("team-a", "team-?"));
        assert!(o("*", "x"));
        assert!(o("a*b", "*"));
        assert!(!o("team-a-*", "team-b-*"));
        assert!(!o("team-a", "team-b"));
        assert!(!o("a?", "a"));
        assert!(o("a*", "a"));
        assert!(!o("*-a", "*-b"));
    }

    #[test]
    fn selector_disjointness() {
        let a = sel(vec![req("team", Operator::In, &["a"])]);
        let b = sel(vec![req("team", Operator::In, &["b"])]);
        let ab = sel(vec![req("team", Operator::In, &["a", "b"])]);
        let not_a = sel(vec![req("team", Operator::NotIn, &["a"])]);
        let absent = sel(vec![req("team", Operator::DoesNotExist, &[])]);
        let tier = sel(vec![req("tier", Operator::In, &["prod"])]);
        assert!(a.disjoint(&b));
        assert!(!a.disjoint(&ab));
        assert!(a.disjoint(&not_a));
        assert!(!ab.disjoint(&not_a));
        assert!(a.disjoint(&absent));
        assert!(!not_a.disjoint(&absent));
        assert!(!a.disjoint(&tier));
        assert!(!a.disjoint(&LabelSelector::default()));
    }

    #[test]
    fn label_keys_and_values() {
        for ok in [
            "team",
            "ocigate.dev/enforce",
            "a_b.c-d",
            "kubernetes.io/metadata.name",
        ] {
            assert!(check_label_key(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/a",
            "a/",
            "Bad_Prefix/x",
            "-a",
            "a b",
            &"a".repeat(64),
            "a/b/c",
        ] {
            assert!(check_label_key(bad).is_err(), "{bad:?}");
        }
        assert!(check_label_value("").is_ok());
        assert!(check_label_value("v1.2_3").is_ok());
        assert!(check_label_value("-v").is_err());
    }

    const KEY: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEusIAt6EJ3YrTHdg2qkWVS0KuotWQ
wHDtyaXlq7Nhj8279+1u/l5pZhXJPW8PnGRRLdO5NbsuM6aT7pOcP100uw==
-----END PUBLIC KEY-----
";

    fn parse(rules: &str) -> Result<crate::policy::Policy, Vec<String>> {
        let text = format!(
            "apiVersion: ocigate.dev/v1alpha1\nkind: Policy\nkeys:\n  - {{name: k, path: k.pub}}\n  \
             - {{name: j, path: j.pub}}\nrules:\n{rules}"
        );
        let read = |_: &std::path::Path| Ok(KEY.to_string());
        crate::policy::Policy::parse(&text, std::path::Path::new("p.yaml"), &read)
            .map_err(|e| e.lines())
    }

    fn rule_name(p: &crate::policy::Policy, image: &str, ns: Option<&NamespaceContext>) -> String {
        match p.match_rule_in(image, ns) {
            crate::policy::RuleMatch::Rule(_, r) => r.name.clone(),
            crate::policy::RuleMatch::NoMatch(_) => "(none)".into(),
            crate::policy::RuleMatch::Ambiguous(a, b) => format!("{}|{}", a.name, b.name),
            crate::policy::RuleMatch::LabelsNotRead(r) => format!("labels? {}", r.name),
        }
    }

    const TEAMS: &str = "  - name: floor
    images: [\"ghcr.io/acme/**\"]
    authorities: [{key: {name: k}}]
  - name: team-a
    images: [\"ghcr.io/acme/**\"]
    namespaces: [\"team-a\", \"team-a-*\"]
    authorities: [{key: {name: j}}]
  - name: team-b
    images: [\"ghcr.io/acme/**\"]
    namespaces: [\"payments\"]
    namespaceSelector: {matchLabels: {team: b}}
    authorities: [{key: {name: j}}]
  - name: api
    images: [\"ghcr.io/acme/api\"]
    authorities: [{key: {name: k}}]
";

    #[test]
    fn a_scoped_rule_wins_where_it_applies_and_only_there() {
        let p = parse(TEAMS).unwrap();
        let img = "ghcr.io/acme/web";
        assert_eq!(rule_name(&p, img, None), "floor");
        assert_eq!(
            rule_name(&p, img, Some(&NamespaceContext::named("team-a"))),
            "team-a"
        );
        assert_eq!(
            rule_name(&p, img, Some(&NamespaceContext::named("team-a-dev"))),
            "team-a"
        );
        assert_eq!(
            rule_name(&p, img, Some(&NamespaceContext::named("team-c"))),
            "floor"
        );
        let mut b = NamespaceContext::with_labels("payments", BTreeMap::new());
        assert_eq!(rule_name(&p, img, Some(&b)), "floor");
        b.labels = Some(labels(&[("team", "b")]));
        assert_eq!(rule_name(&p, img, Some(&b)), "team-b");
        // A more specific image pattern still wins over a namespace-scoped rule.
        assert_eq!(rule_name(&p, "ghcr.io/acme/api", Some(&b)), "api");
        // Labels not read: team-b might apply, so the floor must not decide alone; where a
        // more specific rule wins anyway, or team-b's names exclude the namespace, no labels
        // are needed.
        let unread = NamespaceContext::named("payments");
        assert_eq!(rule_name(&p, img, Some(&unread)), "labels? team-b");
        assert_eq!(rule_name(&p, "ghcr.io/acme/api", Some(&unread)), "api");
        let elsewhere = NamespaceContext::named("team-c");
        assert_eq!(rule_name(&p, img, Some(&elsewhere)), "floor");
        assert!(p.needs_namespace_labels() && p.has_namespace_rules());
    }

    #[test]
    fn overlaps_that_cannot_be_ordered_are_errors() {
        let overlap = "  - name: a
    images: [\"ghcr.io/acme/**\"]
    namespaces: [\"team-*\"]
    authorities: [{key: {name: k}}]
  - name: b
    images: [\"ghcr.io/**/app\"]
    namespaces: [\"*-prod\"]
    authorities: [{key: {name: j}}]
";
        // Equally specific? ghcr.io/acme/** (13) and ghcr.io/**/app (8) are not: no tie.
        assert!(parse(overlap).is_ok());
        let tie = overlap.replace("ghcr.io/**/app", "ghcr.io/acme/**");
        let e = parse(&tie).unwrap_err();
        assert!(e[0].starts_with("p.yaml:11:11:"), "{e:?}");
        assert!(e[0].contains("cannot both hold"), "{e:?}");
        // Globs no name matches both: ordered by the namespace.
        assert!(parse(&tie.replace("*-prod", "web-*")).is_ok());
        // Any selector without a provable difference may overlap.
        let sel = tie.replace(
            "namespaces: [\"*-prod\"]",
            "namespaceSelector: {matchLabels: {tier: prod}}",
        );
        assert!(parse(&sel).is_err());
        let sel2 = sel.replace(
            "namespaces: [\"team-*\"]",
            "namespaceSelector: {matchLabels: {tier: dev}}",
        );
        assert!(parse(&sel2).is_ok(), "{:?}", parse(&sel2).err());
    }

    #[test]
    fn selector_problems_at_their_position() {
        let bad = "  - name: a
    images: [\"ghcr.io/acme/**\"]
    namespaceSelector:
      matchLabels: {\"Bad Key\": x, ok: \"-v\"}
      matchExpressions:
        - {key: team, operator: Among, values: [a]}
        - {key: team, operator: Exists, values: [a]}
        - {key: team, operator: In, values: []}
        - {key: team, operator: NotIn}
    authorities: [{key: {name: k}}]
  - name: b
    images: [\"ghcr.io/acme/x\"]
    namespaces: []
    authorities: [{key: {name: k}}]
  - name: c
    images: [\"ghcr.io/acme/y\"]
    namespaces: [\"Team_A\"]
    authorities: [{key: {name: k}}]
";
        let e = parse(bad).unwrap_err();
        let want = [
            ("p.yaml:10:21:", "label key \"Bad Key\" is invalid"),
            ("p.yaml:10:39:", "label value \"-v\""),
            ("p.yaml:12:33:", "unknown variant `Among`"),
            ("p.yaml:13:49:", "takes no values"),
            ("p.yaml:14:45:", "empty values"),
            ("p.yaml:15:11:", "needs values"),
            ("p.yaml:19:17:", "namespaces is empty"),
            ("p.yaml:23:18:", "namespace \"Team_A\""),
        ];
        for (at, what) in want {
            assert!(
                e.iter().any(|l| l.starts_with(at) && l.contains(what)),
                "{at} {what}: {e:#?}"
            );
        }
    }
}
