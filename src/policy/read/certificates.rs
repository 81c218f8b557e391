//! Reading an authority's `certificates: {roots, intermediates, identities}` (a CA of one's
//! own) into raw shapes, with positions. Must not read the PEM files or validate values.

use serde_saphyr::Spanned;

use super::Reader;
use crate::policy::tree::Node;

const CERTIFICATES_FIELDS: &[&str] = &["roots", "intermediates", "identities", "trustRoot"];
const CERT_IDENTITY_FIELDS: &[&str] = &["subject", "subjectRegExp"];

/// An authority's `certificates:`.
pub(in crate::policy) struct RawCertificates {
    /// The PEM file of CA roots, relative to the policy.
    pub roots: Option<Spanned<String>>,
    /// The PEM file of intermediates, if any.
    pub intermediates: Option<Spanned<String>>,
    /// The root whose Rekor keys prove the signing time (tlog: optional/required).
    pub trust_root: Option<Spanned<String>>,
    /// The SANs accepted.
    pub identities: Option<Spanned<Vec<Spanned<RawCertIdentity>>>>,
}

/// One SAN accepted: exactly or by regular expression.
pub(in crate::policy) struct RawCertIdentity {
    pub subject: Option<String>,
    pub subject_reg_exp: Option<Spanned<String>>,
    pub broken: bool,
}

impl Reader<'_> {
    pub(super) fn certificates(&mut self, n: &Node) -> Option<RawCertificates> {
        const WHAT: &str = "a certificates authority";
        let f = self.fields(n, WHAT, CERTIFICATES_FIELDS)?;
        let mut broken = f.had_unknown;
        let roots = self
            .required(&f, "roots", WHAT)
            .and_then(|r| self.text(r, "certificates.roots"));
        broken |= roots.is_none();
        let intermediates = self.opt_text(&f, "intermediates", &mut broken);
        let trust_root = self.opt_text(&f, "trustRoot", &mut broken);
        let identities = self
            .required(&f, "identities", WHAT)
            .and_then(|n| self.spanned_list(n, "identities", Self::cert_identity));
        broken |= identities.is_none();
        if broken {
            return None;
        }
        Some(RawCertificates {
            roots,
            intermediates,
            trust_root,
            identities,
        })
    }

    fn cert_identity(&mut self, n: &Node) -> Option<RawCertIdentity> {
        let f = self.fields(n, "a certificate identity", CERT_IDENTITY_FIELDS)?;
        let mut broken = f.had_unknown;
        let subject = self.opt_text(&f, "subject", &mut broken).map(|s| s.value);
        let subject_reg_exp = self.opt_text(&f, "subjectRegExp", &mut broken);
        Some(RawCertIdentity {
            subject,
            subject_reg_exp,
            broken,
        })
    }
}
