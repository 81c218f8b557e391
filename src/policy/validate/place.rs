//! Validating a rule's `signedIdentity` (its `remapPrefix` prefixes) and `signaturesRepository`:
//! each name parsed to its canonical form, a problem at the value's line and column. No I/O.

use super::Validator;
use crate::error_chain;
use crate::policy::read::{RawPlace, RawSignedIdentity};
use crate::signature_place::{RepositoryPrefix, SignaturesRepository};
use crate::verify::SignedIdentity;

impl Validator<'_> {
    /// The rule's signed identity (default `matchRepository`) and signatures repository (None:
    /// the image's own); None for a part with a problem (reported).
    pub(super) fn place(
        &mut self,
        raw: RawPlace,
        rule: &str,
    ) -> (Option<SignedIdentity>, Option<SignaturesRepository>) {
        let identity = match raw.signed_identity.map(|s| s.value) {
            None => Some(SignedIdentity::default()),
            Some(RawSignedIdentity::Known(known)) => Some(known),
            Some(RawSignedIdentity::Remap {
                prefix,
                signed_prefix,
            }) => {
                let mut parsed = |s: &serde_saphyr::Spanned<String>, field: &str| {
                    RepositoryPrefix::parse(&s.value)
                        .map_err(|e| {
                            let msg =
                                format!("rule {rule}: remapPrefix.{field}: {}", error_chain(&e));
                            self.at(s, msg);
                        })
                        .ok()
                };
                let prefix = parsed(&prefix, "prefix");
                let signed_prefix = parsed(&signed_prefix, "signedPrefix");
                prefix.zip(signed_prefix).map(|(prefix, signed_prefix)| {
                    SignedIdentity::RemapPrefix {
                        prefix,
                        signed_prefix,
                    }
                })
            }
        };
        let repository = raw.signatures_repository.and_then(|s| {
            SignaturesRepository::parse(&s.value)
                .map_err(|e| {
                    let msg = format!("rule {rule}: signaturesRepository: {}", error_chain(&e));
                    self.at(&s, msg);
                })
                .ok()
        });
        (identity, repository)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::policy::{Policy, PolicyError};
    use crate::verify::SignedIdentity;

    const KEY: &str = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE7D2WvgqSzs9jpdJsOJ5Nl6xg8JXm\nNmo7M3bN7Ra/dTQ2dqs3tHzR/2Q4Xs5nB3hDk9wHYVdHz9jDMh5b8kC3Ng==\n-----END PUBLIC KEY-----\n";

    fn parse(rule_tail: &str) -> Result<Policy, PolicyError> {
        let text = format!(
            "apiVersion: ocigate.dev/v1alpha1\nkind: Policy\nkeys: [{{name: k, path: k.pub}}]\n\
             rules:\n  - name: r\n    images: [\"harbor.corp/**\"]\n    \
             authorities: [{{key: {{name: k}}, tlog: skip}}]\n{rule_tail}"
        );
        Policy::parse(&text, Path::new("p.yaml"), &|_| Ok(KEY.to_string()))
    }

    fn issues(rule_tail: &str) -> Vec<String> {
        match parse(rule_tail) {
            Err(PolicyError::Invalid { issues, .. }) => issues
                .iter()
                .map(|i| format!("{}:{}: {}", i.line, i.column, i.message))
                .collect(),
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn signatures_repository_and_remap_prefix_are_read_canonically() {
        let p = parse(
            "    signaturesRepository: Index.Docker.IO/acme/sigs\n    \
             signedIdentity: {remapPrefix: {prefix: Harbor.Corp/dockerhub, signedPrefix: index.docker.io}}\n",
        )
        .unwrap();
        let rule = &p.rules[0];
        assert_eq!(
            rule.signatures_repository.as_ref().map(|r| r.name()),
            Some("docker.io/acme/sigs".to_string())
        );
        match &rule.signed_identity {
            SignedIdentity::RemapPrefix {
                prefix,
                signed_prefix,
            } => {
                assert_eq!(prefix.as_str(), "harbor.corp/dockerhub");
                assert_eq!(signed_prefix.as_str(), "docker.io");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_values_are_reported_where_they_stand() {
        let got = issues(
            "    signaturesRepository: reg.example/sigs:v1\n    \
             signedIdentity: {remapPrefix: {prefix: \"harbor corp\", signedPrefix: docker.io/Up}}\n",
        );
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(
            got[0].starts_with("8:27: rule \"r\": signaturesRepository: "),
            "{got:?}"
        );
        assert!(got[0].contains("names a tag or digest"), "{got:?}");
        assert!(
            got[1].starts_with("9:44: rule \"r\": remapPrefix.prefix: "),
            "{got:?}"
        );
        assert!(
            got[2].starts_with("9:73: rule \"r\": remapPrefix.signedPrefix: "),
            "{got:?}"
        );
        let got = issues("    signedIdentity: {remapPrefix: {prefix: harbor.corp}}\n");
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].contains("missing field `signedPrefix`"), "{got:?}");
        let got = issues("    signaturesRepository: [a]\n");
        assert!(
            got[0].starts_with("8:27: signaturesRepository must be text"),
            "{got:?}"
        );
    }
}
