//! In-toto predicate types: cosign's short names (`slsaprovenance1`, `spdx`, …) and the URIs
//! they stand for, read the way `cosign attest --type` and `cosign verify-attestation --type`
//! read them. A leaf module: no I/O, nothing of the pipeline.

use std::fmt;

/// cosign's short names and their URIs (cosign's `options.PredicateTypeMap`). `slsaprovenance`
/// is SLSA v0.2, as in cosign; `spdx` and `spdxjson` are the same SPDX document type.
pub const SHORT_NAMES: [(&str, &str); 10] = [
    ("slsaprovenance", "https://slsa.dev/provenance/v0.2"),
    ("slsaprovenance02", "https://slsa.dev/provenance/v0.2"),
    ("slsaprovenance1", "https://slsa.dev/provenance/v1"),
    ("spdx", "https://spdx.dev/Document"),
    ("spdxjson", "https://spdx.dev/Document"),
    ("cyclonedx", "https://cyclonedx.org/bom"),
    ("vuln", "https://cosign.sigstore.dev/attestation/vuln/v1"),
    ("openvex", "https://openvex.dev/ns"),
    ("link", "https://in-toto.io/Link/v1"),
    ("custom", "https://cosign.sigstore.dev/attestation/v1"),
];

/// Longest predicate type accepted (real ones are under 100 bytes).
pub const MAX_PREDICATE_TYPE_BYTES: usize = 1024;

/// A predicate type as a URI: what statements carry and what is compared.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PredicateType(String);

/// A `--type` or `predicateType:` that is neither a short name nor a URI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{given:?} is not a predicate type: use a URI (https://slsa.dev/provenance/v1) or one of \
     cosign's names ({names})",
    names = short_names_list()
)]
#[non_exhaustive]
pub struct UnknownPredicateType {
    /// What was given (cut to [`MAX_PREDICATE_TYPE_BYTES`]).
    pub given: String,
}

fn short_names_list() -> String {
    SHORT_NAMES.map(|(n, _)| n).join(", ")
}

impl PredicateType {
    /// Read `given` as cosign does: a short name is its URI; anything else must be an absolute
    /// URI (`scheme:rest`, the scheme a letter then letters, digits, `+`, `-` or `.`) with no
    /// whitespace or control characters.
    pub fn parse(given: &str) -> Result<PredicateType, UnknownPredicateType> {
        if let Some((_, uri)) = SHORT_NAMES.iter().find(|(name, _)| *name == given) {
            return Ok(PredicateType((*uri).to_string()));
        }
        if is_absolute_uri(given) && given.len() <= MAX_PREDICATE_TYPE_BYTES {
            return Ok(PredicateType(given.to_string()));
        }
        Err(UnknownPredicateType {
            given: crate::bounded::cut(given, MAX_PREDICATE_TYPE_BYTES).into_owned(),
        })
    }

    /// The URI.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether a statement's `predicateType` is this type (exact comparison of URIs, as
    /// cosign compares them).
    pub fn is(&self, statement_type: &str) -> bool {
        self.0 == statement_type
    }

    /// cosign's short name for this type, when it has one (the first in [`SHORT_NAMES`]).
    pub fn short_name(&self) -> Option<&'static str> {
        SHORT_NAMES
            .iter()
            .find(|(_, uri)| *uri == self.0)
            .map(|(name, _)| *name)
    }
}

impl fmt::Display for PredicateType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn is_absolute_uri(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    let scheme_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    scheme_ok && !rest.is_empty() && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosign_short_names_and_uris() {
        let t = |s: &str| PredicateType::parse(s).map(|p| p.as_str().to_string());
        assert_eq!(
            t("slsaprovenance").unwrap(),
            "https://slsa.dev/provenance/v0.2"
        );
        assert_eq!(
            t("slsaprovenance02").unwrap(),
            "https://slsa.dev/provenance/v0.2"
        );
        assert_eq!(
            t("slsaprovenance1").unwrap(),
            "https://slsa.dev/provenance/v1"
        );
        assert_eq!(t("spdxjson").unwrap(), "https://spdx.dev/Document");
        assert_eq!(
            t("custom").unwrap(),
            "https://cosign.sigstore.dev/attestation/v1"
        );
        assert_eq!(
            t("https://example.com/x/v1").unwrap(),
            "https://example.com/x/v1"
        );
        assert_eq!(t("urn:acme:scan").unwrap(), "urn:acme:scan");
        for bad in [
            "",
            "SPDX",
            "slsa",
            "https:",
            "1http://x",
            "https://a b",
            "a\u{1b}:x",
        ] {
            assert!(t(bad).is_err(), "{bad:?}");
        }
        let e = PredicateType::parse("sbom").unwrap_err().to_string();
        assert!(
            e.contains("slsaprovenance1") && e.contains("\"sbom\""),
            "{e}"
        );
        let p = PredicateType::parse("https://spdx.dev/Document").unwrap();
        assert_eq!(p.short_name(), Some("spdx"));
        assert!(p.is("https://spdx.dev/Document") && !p.is("https://spdx.dev/document"));
    }
}
