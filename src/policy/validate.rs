//! Validation: raw shapes read from the file → a [`Policy`], every problem reported with its
//! position (trust roots and keys loaded through the caller's reader). Must not do I/O itself.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_saphyr::Spanned;

use super::model::{Authority, AuthorityKind, Policy, Rule, Tlog, TrustRootRef};
use super::pattern::{
    Pattern, Patterns, can_match_a_name, canonical_pattern, literal_prefix_len, segment_glob,
    witness_of,
};
use super::read::{RawAuthority, RawIdentity, RawKey, RawPolicy, RawRule, RawTrustRoot, RawTuf};
use super::shown::{cut_escaped, shown, shown_names};
use super::{API_VERSION, Issue, KIND};
use crate::error_chain;
use crate::trust::{
    BUILTIN_TUF_ROOTS, Identity, Matcher, PublicKey, TrustRoot, TufMirror, TufSource,
};

mod attestation;
mod certificates;
mod namespace;
mod place;

/// The policy's keys: those parsed by name, and every name defined (a key that could not be
/// read is reported once, not again by each rule naming it).
#[derive(Default)]
struct Keys {
    /// Each key, with the file it was read from (None: inline PEM).
    parsed: BTreeMap<String, (PublicKey, Option<PathBuf>)>,
    names: BTreeSet<String>,
}

pub(super) struct Validator<'r> {
    pub(super) issues: Vec<Issue>,
    read: &'r dyn Fn(&Path) -> std::io::Result<String>,
}

impl<'r> Validator<'r> {
    pub(super) fn new(
        issues: Vec<Issue>,
        read: &'r dyn Fn(&Path) -> std::io::Result<String>,
    ) -> Self {
        Validator { issues, read }
    }

    fn at<T>(&mut self, s: &Spanned<T>, message: impl Into<String>) {
        self.issues.push(Issue {
            line: s.referenced.line().max(1),
            column: s.referenced.column().max(1),
            message: message.into(),
        });
    }

    pub(super) fn policy(&mut self, raw: RawPolicy) -> Policy {
        self.header(&raw);
        let (trust_roots, mut tuf_roots, root_names) = self.trust_roots(&raw.trust_roots);
        let keys = self.keys(&raw.keys);
        // The built-in TUF roots can be named without being defined.
        let mut known = root_names.clone();
        known.extend(BUILTIN_TUF_ROOTS.iter().map(|n| n.to_string()));
        let rules = match raw.rules {
            Some(raw_rules) => self.rules(raw_rules, &keys, &known),
            None => Vec::new(),
        };
        self.check_overlaps(&rules);
        for builtin in BUILTIN_TUF_ROOTS {
            if !root_names.contains(builtin) && names_root(&rules, builtin) {
                tuf_roots.extend(TufSource::builtin(builtin));
            }
        }
        Policy {
            no_match: raw.no_match,
            trust_roots,
            tuf_roots,
            rules,
        }
    }

    /// `apiVersion` and `kind`, when given, are the ones this ocigate reads.
    fn header(&mut self, raw: &RawPolicy) {
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
    }

    /// The trust roots, each parsed (with its verifier), and the names defined (also those of
    /// roots that could not be read, so that rules naming them are not reported again).
    fn trust_roots(
        &mut self,
        raw: &[RawTrustRoot],
    ) -> (Vec<TrustRootRef>, Vec<TufSource>, BTreeSet<String>) {
        let mut trust_roots = Vec::new();
        let mut tuf_roots = Vec::new();
        let mut root_names = BTreeSet::new();
        for tr in raw {
            let name = tr.name.value.clone();
            if !root_names.insert(name.clone()) {
                self.at(
                    &tr.name,
                    format!("trust root {} is defined twice", shown(&name)),
                );
            }
            if let Some(tuf) = &tr.tuf {
                tuf_roots.extend(self.tuf_root(tuf, &name));
            }
            let Some(trusted_root) = &tr.trusted_root else {
                continue;
            };
            if let Some(root) = self.trust_root(trusted_root, &name) {
                let file =
                    (trusted_root.value != "embedded").then(|| PathBuf::from(&trusted_root.value));
                trust_roots.push(TrustRootRef { name, root, file });
            }
        }
        (trust_roots, tuf_roots, root_names)
    }

    /// A `tuf:` trust root: its mirror (a URL checked here; a local path relative to the
    /// policy, joined by the loader) and its bootstrap root.json, read through the reader and
    /// checked to be TUF root metadata (its signatures are checked by the loader, which starts
    /// trust from it). What it trusts is loaded by the caller.
    fn tuf_root(&mut self, tuf: &RawTuf, name: &str) -> Option<TufSource> {
        let mirror = TufMirror::parse(&tuf.mirror.value, Path::new(""))
            .map_err(|e| self.at(&tuf.mirror, error_chain(&e)))
            .ok();
        let bootstrap = match (self.read)(Path::new(&tuf.root.value)) {
            Ok(text) => text.into_bytes(),
            Err(e) => {
                let msg = format!("tuf root file {}: {e}", cut_escaped(&tuf.root.value));
                self.at(&tuf.root, msg);
                return None;
            }
        };
        let at = (
            tuf.root.referenced.line().max(1),
            tuf.root.referenced.column().max(1),
        );
        TufSource::new(name, mirror?, bootstrap)
            .map(|s| {
                s.declared_at(at.0, at.1)
                    .read_from(PathBuf::from(&tuf.root.value))
            })
            .map_err(|e| {
                let msg = error_chain(&e).replace(name, &cut_escaped(name));
                self.at(&tuf.root, msg)
            })
            .ok()
    }

    /// One trust root: `embedded`, or a `trusted_root.json` read through the reader.
    fn trust_root(&mut self, trusted_root: &Spanned<String>, name: &str) -> Option<Arc<TrustRoot>> {
        if trusted_root.value == "embedded" {
            return TrustRoot::embedded_shared()
                .map(Arc::clone)
                .map_err(|e| self.at(trusted_root, error_chain(&e)))
                .ok();
        }
        let p = PathBuf::from(&trusted_root.value);
        match (self.read)(&p) {
            // The root keeps its name as given (evidence names it); the message shows it cut.
            Ok(text) => TrustRoot::from_json(&text, name)
                .map(Arc::new)
                .map_err(|e| {
                    let msg = error_chain(&e).replace(name, &cut_escaped(name));
                    self.at(trusted_root, msg)
                })
                .ok(),
            Err(e) => {
                let msg = format!("trustedRoot file {}: {e}", cut_escaped(&trusted_root.value));
                self.at(trusted_root, msg);
                None
            }
        }
    }

    /// The keys, each read and parsed, and every name defined.
    fn keys(&mut self, raw: &[RawKey]) -> Keys {
        let mut keys = Keys::default();
        for k in raw {
            let name = k.name.value.clone();
            if !keys.names.insert(name.clone()) {
                self.at(&k.name, format!("key {} is defined twice", shown(&name)));
                continue;
            }
            let (text, origin, at) = match (&k.path, &k.pem) {
                _ if k.broken => continue,
                (Some(p), None) => match (self.read)(Path::new(&p.value)) {
                    Ok(t) => (t, Some(p), p),
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
                (None, Some(pem)) => (pem.value.clone(), None, pem),
                _ => {
                    let msg = format!("key {}: give exactly one of path or pem", shown(&name));
                    self.at(&k.name, msg);
                    continue;
                }
            };
            let shown_as = match origin {
                Some(p) => cut_escaped(&p.value),
                None => format!("{} (inline pem)", shown(&name)),
            };
            match PublicKey::from_pem(&text, &shown_as) {
                Ok(pk) => {
                    let file = origin.map(|p| PathBuf::from(&p.value));
                    keys.parsed.insert(name, (pk, file));
                }
                Err(e) => self.at(at, error_chain(&e)),
            }
        }
        keys
    }

    /// The rules, each validated; a policy needs one at least, and each name once.
    fn rules(
        &mut self,
        raw_rules: Spanned<Vec<RawRule>>,
        keys: &Keys,
        roots: &BTreeSet<String>,
    ) -> Vec<Rule> {
        if raw_rules.value.is_empty() {
            self.at(
                &raw_rules,
                "rules is empty: a policy needs at least one rule",
            );
        }
        let mut rules = Vec::new();
        let mut rule_names = BTreeSet::new();
        for r in raw_rules.value {
            if !rule_names.insert(r.name.value.clone()) {
                let msg = format!("rule {} is defined twice", shown(&r.name.value));
                self.at(&r.name, msg);
            }
            if let Some(rule) = self.rule(r, keys, roots) {
                rules.push(rule);
            }
        }
        rules
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

    fn rule(&mut self, mut raw: RawRule, keys: &Keys, roots: &BTreeSet<String>) -> Option<Rule> {
        let name = raw.name.value.clone();
        // The rule's name as messages show it.
        let label = shown(&name);
        let before = self.issues.len();
        if let Some(images) = &raw.images
            && images.value.is_empty()
        {
            self.at(images, format!("rule {label}: images is empty"));
        }
        let patterns = self.globs(raw.images.iter().flat_map(|i| &i.value), &label);
        let excludes = self.globs(raw.exclude.iter().flatten(), &label);
        // Whether the rule matches what the file says it matches (the overlap check needs
        // that, even if another part of the rule is wrong).
        let namespaces = self.namespace_scope(&raw.namespaces, &label);
        let patterns_ok = self.issues.len() == before
            && raw.images.is_some()
            && raw.exclude.is_some()
            && namespaces.is_some();
        let authorities = match &raw.authorities {
            Some(raw_authorities) => self.authorities(raw_authorities, &label, keys, roots),
            None => Vec::new(),
        };
        let threshold = self.threshold(&raw, &label);
        let attestations =
            self.attestations(std::mem::take(&mut raw.attestations), &authorities, &label);
        let (signed_identity, signatures_repository) =
            self.place(std::mem::take(&mut raw.place), &label);
        // A rule with another problem is still returned, for the overlap check: the policy
        // as a whole is refused anyway.
        let (true, Some(namespaces)) = (patterns_ok, namespaces) else {
            return None;
        };
        Some(Rule {
            name,
            position: (raw.name.referenced.line(), raw.name.referenced.column()),
            patterns: Patterns::new(patterns),
            excludes: Patterns::new(excludes),
            namespaces,
            mode: raw.mode,
            threshold,
            authorities,
            signed_identity: signed_identity.unwrap_or_default(),
            signatures_repository,
            annotations: raw.annotations,
            flux_verification: raw.flux_verification,
            attestations,
        })
    }

    /// Image patterns, each compiled (see [`Validator::glob`]); those with a problem left out.
    fn globs<'p>(
        &mut self,
        raw: impl Iterator<Item = &'p Spanned<String>>,
        rule: &str,
    ) -> Vec<Pattern> {
        raw.filter_map(|p| self.glob(p, rule)).collect()
    }

    /// A rule's authorities, each validated. One key counts once toward the threshold: the
    /// same key twice (under one name or two) would let one signer stand for two.
    fn authorities(
        &mut self,
        raw: &Spanned<Vec<Spanned<RawAuthority>>>,
        label: &str,
        keys: &Keys,
        roots: &BTreeSet<String>,
    ) -> Vec<Authority> {
        if raw.value.is_empty() {
            self.at(
                raw,
                format!("rule {label}: authorities is empty; a rule needs at least one"),
            );
        }
        let mut authorities: Vec<Authority> = Vec::new();
        let mut key_authorities: BTreeMap<String, String> = BTreeMap::new();
        for (i, a) in raw.value.iter().enumerate() {
            let Some(auth) = self.authority(a, i, label, keys, roots) else {
                continue;
            };
            // Attestations' `authorities` and a condition's `signer.authority` name them.
            let named_twice = authorities.iter().any(|b| b.name == auth.name);
            let same_key = match &auth.kind {
                AuthorityKind::Key { key, .. } => match key_authorities.entry(key.fingerprint()) {
                    Entry::Occupied(first) => Some(first.get().clone()),
                    Entry::Vacant(slot) => {
                        slot.insert(auth.name.clone());
                        None
                    }
                },
                _ => None,
            };
            if let Some(first) = same_key {
                let msg = format!(
                    "rule {label}: authority {} has the same key as authority {}; \
                     each authority of a rule needs its own key",
                    shown(&auth.name),
                    shown(&first)
                );
                self.at(a, msg);
            } else if named_twice {
                let msg = format!(
                    "rule {label}: authority {} is given twice; give each authority of a rule \
                     its own name",
                    shown(&auth.name)
                );
                self.at(a, msg);
            }
            authorities.push(auth);
        }
        authorities
    }

    /// The rule's threshold: 1 by default, else between 1 and the number of authorities.
    fn threshold(&mut self, raw: &RawRule, label: &str) -> usize {
        let Some(t) = &raw.threshold else {
            return 1;
        };
        if let Some(a) = &raw.authorities {
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

    fn authority(
        &mut self,
        a: &Spanned<RawAuthority>,
        index: usize,
        rule: &str,
        keys: &Keys,
        roots: &BTreeSet<String>,
    ) -> Option<Authority> {
        let v = &a.value;
        match (&v.key, &v.keyless, &v.certificates) {
            (None, None, Some(c)) => self.certificates_authority(v, c, index, rule, roots),
            (Some(k), None, None) => {
                let kname = &k.name.value;
                let name = a.value.name.clone().unwrap_or_else(|| kname.clone());
                let trust_root = self.root_ref(&k.trust_root, rule, roots);
                match keys.parsed.get(kname) {
                    Some((key, file)) => Some(Authority {
                        name,
                        kind: AuthorityKind::Key {
                            key: key.clone(),
                            tlog: a.value.tlog.unwrap_or(Tlog::Required),
                            trust_root,
                        },
                        files: file.iter().cloned().collect(),
                    }),
                    None => {
                        if !keys.names.contains(kname) {
                            let msg = format!(
                                "rule {rule}: unknown key {} (keys defined: {})",
                                shown(kname),
                                shown_names(keys.parsed.keys())
                            );
                            self.at(&k.name, msg);
                        }
                        None
                    }
                }
            }
            (None, Some(kl), None) => {
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
                    files: Vec::new(),
                })
            }
            // Its key or keyless part was malformed, and said so.
            _ if a.value.broken => None,
            _ => {
                let n = index + 1;
                let msg = format!(
                    "rule {rule}: authority {n} needs exactly one of key or keyless or certificates"
                );
                self.at(a, msg);
                None
            }
        }
    }

    /// A reference to a trust root by name; `embedded` always exists.
    pub(super) fn root_ref(
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
        let at = (id, v.broken);
        let issuer = self.matcher((&v.issuer, &v.issuer_reg_exp), at, rule, "issuer");
        let subject = self.matcher((&v.subject, &v.subject_reg_exp), at, rule, "subject");
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

    /// An identity's `{what}` or `{what}RegExp` (exactly one of them) as a matcher; `at` is the
    /// identity, `broken` whether a field of it was malformed (and said so already).
    pub(super) fn matcher<T>(
        &mut self,
        (exact, re): (&Option<String>, &Option<Spanned<String>>),
        (at, broken): (&Spanned<T>, bool),
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
            (None, None) if broken => None,
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
                let (sa, sb) = (&a.namespaces, &b.namespaces);
                // A namespace-scoped rule wins over a cluster-wide one; two scoped ones tie
                // only where both may apply.
                if sa.is_cluster_wide() != sb.is_cluster_wide() || !sa.may_overlap(sb) {
                    continue;
                }
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
                let mut message = format!(
                    "rules {} and {} are equally specific and both match {} \
                     (patterns {} and {}); make one more specific or exclude",
                    shown(&a.name),
                    shown(&b.name),
                    shown(w),
                    pattern_of(a),
                    pattern_of(b),
                );
                if !sa.is_cluster_wide() {
                    message.push_str(
                        ", or give them namespace conditions that cannot both hold \
                         (namespaces that no name matches both, or selectors that \
                         require different values of one label)",
                    );
                }
                self.issues.push(Issue {
                    line: b.position.0,
                    column: b.position.1,
                    message,
                });
            }
        }
    }
}

/// Whether an authority of `rules` names the trust root `name`.
fn names_root(rules: &[Rule], name: &str) -> bool {
    rules.iter().flat_map(|r| &r.authorities).any(|a| {
        let root = match &a.kind {
            AuthorityKind::Key { trust_root, .. }
            | AuthorityKind::Keyless { trust_root, .. }
            | AuthorityKind::Certificates { trust_root, .. } => trust_root,
            AuthorityKind::Withdrawn { .. } => &None,
        };
        root.as_deref() == Some(name)
    })
}
