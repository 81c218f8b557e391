//! Validation: raw shapes read from the file → a [`Policy`], every problem reported with its
//! position (trust roots and keys loaded through the caller's reader). Must not do I/O itself.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_saphyr::Spanned;

use super::model::{Authority, AuthorityKind, Policy, Rule, Tlog, TrustRootRef};
use super::pattern::{
    Pattern, Patterns, can_match_a_name, canonical_pattern, literal_prefix_len, segment_glob,
    witness_of,
};
use super::read::{RawAuthority, RawIdentity, RawPolicy, RawRule};
use super::shown::{cut_escaped, shown, shown_names};
use super::{API_VERSION, Issue, KIND};
use crate::error_chain;
use crate::trust::{Identity, Matcher, PublicKey, TrustRoot};

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
