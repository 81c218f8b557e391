//! Validating an authority's `certificates:`: its PEM files read through the caller's reader
//! and parsed (each problem at the file's line and column), its identities compiled. No I/O itself.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use serde_saphyr::Spanned;

use super::Validator;
use crate::error_chain;
use crate::policy::model::{Authority, AuthorityKind, Tlog};
use crate::policy::read::{RawAuthority, RawCertIdentity, RawCertificates};
use crate::policy::shown::cut_escaped;
use crate::trust::{CertificateAuthorities, MAX_PEM_BYTES, Matcher};

impl Validator<'_> {
    /// An authority with `certificates:` (and neither `key` nor `keyless`), named
    /// `certificates[I]` when the file gives no name.
    pub(super) fn certificates_authority(
        &mut self,
        v: &RawAuthority,
        c: &RawCertificates,
        index: usize,
        rule: &str,
        roots: &BTreeSet<String>,
    ) -> Option<Authority> {
        let trust_root = self.root_ref(&c.trust_root, rule, roots);
        let kind = self.certificates_kind(c, v.tlog, trust_root, rule)?;
        let name = v.name.clone();
        let name = name.unwrap_or_else(|| format!("certificates[{index}]"));
        let files = [&c.roots, &c.intermediates]
            .into_iter()
            .flatten()
            .map(|f| std::path::PathBuf::from(&f.value))
            .collect();
        Some(Authority { name, kind, files })
    }

    /// A `certificates` authority's kind: roots (and intermediates) read and parsed, identities
    /// compiled; None when any part is unusable (each problem reported).
    fn certificates_kind(
        &mut self,
        c: &RawCertificates,
        tlog: Option<Tlog>,
        trust_root: Option<String>,
        rule: &str,
    ) -> Option<AuthorityKind> {
        let roots = c.roots.as_ref().and_then(|r| self.pem_file(r, "roots"));
        let intermediates = match &c.intermediates {
            Some(i) => Some(self.pem_file(i, "intermediates")?),
            None => None,
        };
        let identities = self.cert_identities(c, rule);
        let (roots_at, roots) = (c.roots.as_ref()?, roots?);
        let origin = cut_escaped(&roots_at.value);
        let inter = intermediates.as_ref().zip(c.intermediates.as_ref());
        let inter_origin = inter.map(|(_, at)| cut_escaped(&at.value));
        let cas = CertificateAuthorities::from_pem(
            (&roots, &origin),
            inter
                .zip(inter_origin.as_deref())
                .map(|((text, _), o)| (text.as_str(), o)),
        );
        let cas = match cas {
            Ok(cas) => cas,
            Err(e) => {
                // Say it at the file that holds the problem.
                let at = match (&c.intermediates, error_chain(&e).contains(&origin)) {
                    (Some(i), false) => i,
                    _ => roots_at,
                };
                self.at(at, format!("rule {rule}: {}", error_chain(&e)));
                return None;
            }
        };
        Some(AuthorityKind::Certificates {
            cas: Arc::new(cas),
            identities: identities?,
            tlog: tlog.unwrap_or(Tlog::Required),
            trust_root,
        })
    }

    /// A PEM file's text, bounded; an unreadable or oversized file is reported at its field.
    fn pem_file(&mut self, path: &Spanned<String>, field: &str) -> Option<String> {
        match (self.read)(Path::new(&path.value)) {
            Ok(text) if text.len() > MAX_PEM_BYTES => {
                let msg = format!(
                    "certificates.{field} {}: {} bytes, more than the {MAX_PEM_BYTES} allowed",
                    cut_escaped(&path.value),
                    text.len()
                );
                self.at(path, msg);
                None
            }
            Ok(text) => Some(text),
            Err(e) => {
                let msg = format!(
                    "certificates.{field}: cannot read {}: {e}",
                    cut_escaped(&path.value)
                );
                self.at(path, msg);
                None
            }
        }
    }

    fn cert_identities(&mut self, c: &RawCertificates, rule: &str) -> Option<Vec<Matcher>> {
        let ids = c.identities.as_ref()?;
        if ids.value.is_empty() {
            let msg = format!("rule {rule}: certificates authority needs at least one identity");
            self.at(ids, msg);
            return None;
        }
        let all: Vec<Option<Matcher>> = ids
            .value
            .iter()
            .map(|id| self.cert_identity(id, rule))
            .collect();
        all.into_iter().collect()
    }

    fn cert_identity(&mut self, id: &Spanned<RawCertIdentity>, rule: &str) -> Option<Matcher> {
        let v = &id.value;
        self.matcher(
            (&v.subject, &v.subject_reg_exp),
            (id, v.broken),
            rule,
            "subject",
        )
    }
}
