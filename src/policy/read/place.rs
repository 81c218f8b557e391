//! Reading a rule's `signedIdentity` (with `remapPrefix`) and `signaturesRepository`: which
//! name signatures must carry and where they are kept, as raw text with positions. Must not
//! parse names or validate values.

use serde_saphyr::Spanned;

use super::Reader;
use crate::policy::tree::{Node, Value};
use crate::verify::SignedIdentity;

const SIGNED_IDENTITY_VALUES: &[&str] = &["matchRepository", "exactRepository", "ignore"];
const REMAP_FIELDS: &[&str] = &["prefix", "signedPrefix"];

/// A rule's `signedIdentity`, before its names are parsed.
pub(in crate::policy) enum RawSignedIdentity {
    /// `matchRepository`, `ignore` or `{exactRepository: NAME}`.
    Known(SignedIdentity),
    /// `{remapPrefix: {prefix, signedPrefix}}`.
    Remap {
        prefix: Spanned<String>,
        signed_prefix: Spanned<String>,
    },
}

/// Which name a rule's signatures carry and where they are kept, as the file says.
#[derive(Default)]
pub(in crate::policy) struct RawPlace {
    pub signed_identity: Option<Spanned<RawSignedIdentity>>,
    pub signatures_repository: Option<Spanned<String>>,
}

impl Reader<'_> {
    /// The rule's `signedIdentity` and `signaturesRepository` fields (either may be absent).
    pub(super) fn place(
        &mut self,
        signed_identity: Option<&Node>,
        signatures_repository: Option<&Node>,
    ) -> RawPlace {
        RawPlace {
            signed_identity: signed_identity.and_then(|n| self.signed_identity(n)),
            signatures_repository: signatures_repository
                .and_then(|n| self.text(n, "signaturesRepository")),
        }
    }

    /// `matchRepository`, `ignore`, `{exactRepository: NAME}` or
    /// `{remapPrefix: {prefix: P, signedPrefix: S}}`.
    fn signed_identity(&mut self, n: &Node) -> Option<Spanned<RawSignedIdentity>> {
        const FIELD: &str = "signedIdentity";
        let si = |v| Some(Spanned::new(v, n.at, n.defined));
        if let Value::Mapping(entries) = &n.value
            && let [(k, v)] = entries.as_slice()
        {
            match self.scalar_text(k).as_deref() {
                Some("exactRepository") => {
                    let repo = self.text(v, "signedIdentity.exactRepository")?;
                    if repo.value.is_empty() {
                        self.issue(&v.at, "signedIdentity.exactRepository is empty");
                        return None;
                    }
                    let known = SignedIdentity::ExactRepository(repo.value);
                    return si(RawSignedIdentity::Known(known));
                }
                Some("remapPrefix") => return self.remap_prefix(v).and_then(si),
                _ => {}
            }
        }
        if let Value::Mapping(entries) = &n.value {
            let keys: Vec<String> = entries
                .iter()
                .map(|(k, _)| {
                    self.scalar_text(k)
                        .map_or_else(|| "?".into(), |t| crate::policy::shown::cut_escaped(&t))
                })
                .collect();
            let msg = format!(
                "{FIELD} must be matchRepository, ignore, {{exactRepository: NAME}} or \
                 {{remapPrefix: {{prefix: P, signedPrefix: S}}}}, found a mapping with {}",
                keys.join(", ")
            );
            self.issue(&n.at, msg);
            return None;
        }
        match self.choice(n, FIELD, SIGNED_IDENTITY_VALUES)? {
            "matchRepository" => si(RawSignedIdentity::Known(SignedIdentity::MatchRepository)),
            "ignore" => si(RawSignedIdentity::Known(SignedIdentity::Ignore)),
            _ => {
                self.issue(
                    &n.at,
                    "signedIdentity: exactRepository needs the repository: \
                     {exactRepository: NAME}",
                );
                None
            }
        }
    }

    /// `{prefix: P, signedPrefix: S}`, both required.
    fn remap_prefix(&mut self, n: &Node) -> Option<RawSignedIdentity> {
        const WHAT: &str = "signedIdentity.remapPrefix";
        let f = self.fields(n, WHAT, REMAP_FIELDS)?;
        let prefix = self
            .required(&f, "prefix", WHAT)
            .and_then(|p| self.text(p, "remapPrefix.prefix"));
        let signed_prefix = self
            .required(&f, "signedPrefix", WHAT)
            .and_then(|p| self.text(p, "remapPrefix.signedPrefix"));
        Some(RawSignedIdentity::Remap {
            prefix: prefix?,
            signed_prefix: signed_prefix?,
        })
    }
}
