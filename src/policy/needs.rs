//! What a rule needs, said in one line for a person who was denied (the webhook's message, the
//! CLI's `needs:` line): its signers by key fingerprint or certificate identity, its threshold,
//! its attestations. Must not evaluate anything.

use super::model::{AuthorityKind, Rule};

/// How many authorities, identities and attestations one line names before "and N more".
const SHOWN: usize = 3;

impl Rule {
    /// What this rule needs, e.g. `a signature by key "release" (sha256:…)` or `signatures by
    /// 2 of: …; an attestation "provenance" (https://slsa.dev/provenance/v1) by …`. Key
    /// fingerprints are the SHA-256 of the public key's DER (as `ocigate discover` and the
    /// evidence print them).
    pub fn needs(&self) -> String {
        let signers: Vec<String> = self.authorities.iter().map(describe_authority).collect();
        let mut out = match (self.threshold, signers.len()) {
            (0, _) => String::new(),
            (1, 1) => format!("a signature by {}", signers[0]),
            (1, _) => format!("a signature by one of: {}", listed(&signers)),
            (t, n) if t == n => format!("signatures by all of: {}", listed(&signers)),
            (t, _) => format!("signatures by {t} of: {}", listed(&signers)),
        };
        let attestations: Vec<String> = self
            .attestations
            .iter()
            .map(|a| {
                let by: Vec<&str> = a
                    .authorities
                    .iter()
                    .filter_map(|i| self.authorities.get(*i))
                    .map(|a| a.name.as_str())
                    .collect();
                let conditions = match a.conditions.len() {
                    0 => String::new(),
                    1 => " meeting its condition".to_string(),
                    n => format!(" meeting its {n} conditions"),
                };
                format!(
                    "{:?} ({}) signed by {}{conditions}",
                    a.name,
                    a.predicate_type,
                    by.join(" or ")
                )
            })
            .collect();
        if !attestations.is_empty() {
            if !out.is_empty() {
                out.push_str("; and ");
            }
            let noun = if attestations.len() == 1 {
                "an attestation"
            } else {
                "attestations"
            };
            out.push_str(&format!("{noun} {}", listed(&attestations)));
        }
        if out.is_empty() {
            out.push_str("nothing (threshold 0, no attestations)");
        } else if let Some(repository) = &self.signatures_repository {
            out.push_str(&format!(", kept in {repository}"));
        }
        out
    }
}

/// One authority: its kind, name, and the key fingerprint or the identities it accepts.
fn describe_authority(a: &super::model::Authority) -> String {
    match &a.kind {
        AuthorityKind::Key { key, .. } => format!("key {:?} ({})", a.name, key.fingerprint()),
        AuthorityKind::Keyless { identities, .. } => {
            let shown: Vec<String> = identities.iter().map(ToString::to_string).collect();
            let or = if shown.len() > 1 { "one of: " } else { "" };
            format!("keyless {:?} ({or}{})", a.name, listed(&shown))
        }
        AuthorityKind::Certificates { identities, .. } => {
            let shown: Vec<String> = identities.iter().map(|m| format!("SAN {m}")).collect();
            let or = if shown.len() > 1 { "one of: " } else { "" };
            format!("certificates {:?} ({or}{})", a.name, listed(&shown))
        }
        AuthorityKind::Withdrawn { was, .. } => format!("{was} {:?} (withdrawn)", a.name),
    }
}

/// At most [`SHOWN`] items, comma-separated, then how many more.
fn listed(items: &[String]) -> String {
    let mut s = items[..items.len().min(SHOWN)].join(", ");
    if items.len() > SHOWN {
        s.push_str(&format!(" and {} more", items.len() - SHOWN));
    }
    s
}

#[cfg(test)]
mod tests {
    use crate::policy::CompiledPolicy;

    fn rule_of(yaml: &str) -> crate::policy::Rule {
        let dir = tempfile::tempdir().unwrap();
        let key = include_str!("../../keys-example/cosign.pub");
        std::fs::write(dir.path().join("k.pub"), key).unwrap();
        let path = dir.path().join("p.yaml");
        std::fs::write(&path, yaml).unwrap();
        let p = CompiledPolicy::from_file(&path).unwrap();
        p.policy().rules[0].clone()
    }

    #[test]
    fn a_rule_says_its_signers_threshold_and_attestations() {
        let fp =
            crate::trust::PublicKey::from_pem(include_str!("../../keys-example/cosign.pub"), "k")
                .unwrap()
                .fingerprint();
        let one = rule_of(
            "apiVersion: ocigate.dev/v1alpha1\nkind: Policy\nkeys: [{name: release, path: k.pub}]\n\
             rules:\n- name: acme\n  images: ['**']\n  authorities:\n  - key: {name: release}\n    \
             tlog: skip\n",
        );
        assert_eq!(
            one.needs(),
            format!("a signature by key \"release\" ({fp})")
        );
        let elsewhere = rule_of(
            "apiVersion: ocigate.dev/v1alpha1\nkind: Policy\nkeys: [{name: release, path: k.pub}]\n\
             rules:\n- name: acme\n  images: ['**']\n  signaturesRepository: reg.example/sigs\n  \
             authorities:\n  - key: {name: release}\n    tlog: skip\n",
        );
        assert_eq!(
            elsewhere.needs(),
            format!("a signature by key \"release\" ({fp}), kept in reg.example/sigs")
        );
        let two = rule_of(
            "apiVersion: ocigate.dev/v1alpha1\nkind: Policy\nkeys: [{name: release, path: k.pub}]\n\
             rules:\n- name: acme\n  images: ['**']\n  threshold: 2\n  authorities:\n  \
             - key: {name: release}\n    tlog: skip\n  - name: ci\n    keyless:\n      \
             identities:\n      - {subject: a@example.com, issuer: https://accounts.example}\n      \
             - {subjectRegExp: '^b@', issuer: https://accounts.example}\n  attestations:\n  \
             - name: provenance\n    predicateType: slsaprovenance1\n    authorities: [ci]\n    \
             conditions:\n    - expression: 'true'\n",
        );
        let needs = two.needs();
        assert!(
            needs.starts_with(&format!(
                "signatures by all of: key \"release\" ({fp}), keyless \"ci\" (one of: subject \
                 \"a@example.com\" from issuer \"https://accounts.example\", subject regexp \"^b@\""
            )),
            "{needs}"
        );
        assert!(
            needs.ends_with(
                "; and an attestation \"provenance\" (https://slsa.dev/provenance/v1) signed by \
                 ci meeting its condition"
            ),
            "{needs}"
        );
    }
}
