//! Certificate authorities of one's own (a `certificates` authority): CA roots and intermediates
//! read from PEM (bounded), chains checked by rustls-webpki, a leaf's key and SANs. No file I/O.
//!
//! Why rustls-webpki: it is the path builder sigstore-verify itself uses for Fulcio chains, it is
//! already in the tree (rustls), and it checks what a hand-written builder would have to: each
//! certificate's validity at the given time, CA basic constraints and path length, the issuer's
//! signature, name constraints, and a key-usage policy. sigstore-verify does not expose a chain
//! check against anchors other than a trusted root's Fulcio CAs (and would also require
//! Fulcio's profile: an OIDC issuer, SCTs), so webpki is used directly with code signing
//! required only when the leaf lists extended key usages at all (as Go's x509 does for cosign).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use x509_cert::der::{Decode as _, Encode as _};

use super::{KeyError, Matcher, PublicKey};

/// The largest PEM text read for roots, intermediates, a certificate or a chain (1 MiB).
pub const MAX_PEM_BYTES: usize = 1 << 20;
/// The most certificates one PEM text may hold.
pub const MAX_PEM_CERTIFICATES: usize = 64;
/// The most intermediates a signature's chain annotation may bring.
pub const MAX_CHAIN_INTERMEDIATES: usize = 8;

/// extKeyUsage codeSigning, 1.3.6.1.5.5.7.3.3 (DER content of the OID).
const CODE_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03];

/// PEM certificates that cannot be used; Display names where they came from.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PemCertificatesError {
    /// More bytes than [`MAX_PEM_BYTES`].
    #[error("certificates {origin}: {size} bytes, more than the {max} allowed")]
    TooLarge {
        /// Where the text came from.
        origin: String,
        /// Its size.
        size: usize,
        /// The bound.
        max: usize,
    },
    /// Not PEM.
    #[error("certificates {origin}: not PEM")]
    NotPem {
        /// Where the text came from.
        origin: String,
        /// What the PEM parser said.
        #[source]
        source: pem::PemError,
    },
    /// No certificate at all.
    #[error("certificates {origin}: no \"CERTIFICATE\" block")]
    Empty {
        /// Where the text came from.
        origin: String,
    },
    /// More certificates than allowed.
    #[error("certificates {origin}: {count} certificates, more than the {max} allowed")]
    TooMany {
        /// Where the text came from.
        origin: String,
        /// How many there are.
        count: usize,
        /// The bound.
        max: usize,
    },
    /// A PEM block of something else.
    #[error("certificates {origin}: block {index} is {tag:?}, expected \"CERTIFICATE\"")]
    WrongTag {
        /// Where the text came from.
        origin: String,
        /// Which block (from 1).
        index: usize,
        /// Its tag.
        tag: String,
    },
    /// A block that is not an X.509 certificate.
    #[error("certificates {origin}: block {index} is not an X.509 certificate")]
    NotX509 {
        /// Where the text came from.
        origin: String,
        /// Which block (from 1).
        index: usize,
        /// What the DER parser said.
        #[source]
        source: x509_cert::der::Error,
    },
    /// A root certificate that cannot be a trust anchor.
    #[error("certificates {origin}: block {index} cannot be a trust anchor")]
    NotAnchor {
        /// Where the text came from.
        origin: String,
        /// Which block (from 1).
        index: usize,
        /// What webpki said.
        #[source]
        source: webpki::Error,
    },
}

/// Why a signature's certificate does not count for a `certificates` authority.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertificateError {
    /// The certificate or chain annotation cannot be read.
    #[error("certificate annotation")]
    Pem(#[source] PemCertificatesError),
    /// More than one certificate in the certificate annotation.
    #[error("the certificate annotation holds {count} certificates, not one")]
    NotOne {
        /// How many.
        count: usize,
    },
    /// The chain annotation brings too many intermediates.
    #[error("the chain annotation holds {count} certificates, more than the {max} allowed")]
    LongChain {
        /// How many.
        count: usize,
        /// The bound.
        max: usize,
    },
    /// The leaf's public key cannot verify anything.
    #[error("the certificate's public key cannot be used")]
    Key(#[source] KeyError),
    /// The leaf does not chain to a root at the time checked (expired, unknown issuer,
    /// a missing intermediate, a bad signature, a CA constraint).
    #[error("the certificate does not chain to the authority's roots at {at}")]
    Untrusted {
        /// The time the chain was checked at (RFC 3339).
        at: String,
        /// webpki's reason.
        #[source]
        source: webpki::Error,
    },
    /// The leaf chains only to a root that is not valid at the time checked (expired, or not
    /// yet valid): a retired root's key must not issue certificates that verify.
    #[error("the certificate chains only to a root that is not valid at {at}")]
    RootNotValid {
        /// The time the chain was checked at (RFC 3339).
        at: String,
    },
    /// The chain holds, but no SAN matches an identity.
    #[error("certificate SANs {found:?} match none of: {expected}")]
    Identity {
        /// The leaf's SANs (email, URI, DNS).
        found: Vec<String>,
        /// The identities accepted.
        expected: String,
    },
}

/// The roots and intermediates of a `certificates` authority, parsed once.
#[derive(Debug, Clone)]
pub struct CertificateAuthorities {
    roots: Vec<Root>,
    intermediates: Vec<CertificateDer<'static>>,
}

/// A root as a trust anchor, with the validity its certificate states (a webpki trust
/// anchor keeps none).
#[derive(Debug, Clone)]
struct Root {
    anchor: TrustAnchor<'static>,
    /// notBefore and notAfter, since the Unix epoch.
    valid: (Duration, Duration),
}

/// A certificate's validity, `notBefore` and `notAfter` since the Unix epoch; None when its
/// DER does not parse as X.509.
pub fn validity(der: &[u8]) -> Option<(Duration, Duration)> {
    use x509_cert::der::Decode as _;
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    let v = &cert.tbs_certificate.validity;
    Some((
        v.not_before.to_unix_duration(),
        v.not_after.to_unix_duration(),
    ))
}

impl Root {
    fn of(der: &CertificateDer<'_>) -> Result<Self, webpki::Error> {
        let anchor = webpki::anchor_from_trusted_cert(der)?.to_owned();
        let valid = validity(der.as_ref()).ok_or(webpki::Error::BadDer)?;
        Ok(Root { anchor, valid })
    }

    fn valid_at(&self, since: Duration) -> bool {
        self.valid.0 <= since && since <= self.valid.1
    }
}

impl CertificateAuthorities {
    /// Roots (at least one) and optional intermediates, each a PEM text with its origin.
    pub fn from_pem(
        roots: (&str, &str),
        intermediates: Option<(&str, &str)>,
    ) -> Result<Self, PemCertificatesError> {
        let (text, origin) = roots;
        let anchors = parse_pem_certificates(text, origin)?
            .iter()
            .enumerate()
            .map(|(i, der)| {
                Root::of(der).map_err(|source| PemCertificatesError::NotAnchor {
                    origin: origin.to_string(),
                    index: i + 1,
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let intermediates = match intermediates {
            Some((text, origin)) => parse_pem_certificates(text, origin)?,
            None => Vec::new(),
        };
        Ok(CertificateAuthorities {
            roots: anchors,
            intermediates,
        })
    }

    /// One PEM chain as cosign's `--certificate-chain` reads it: intermediates, then the root
    /// (the last certificate).
    pub fn from_chain_pem(text: &str, origin: &str) -> Result<Self, PemCertificatesError> {
        let mut all = parse_pem_certificates(text, origin)?;
        let root = all.pop().ok_or_else(|| PemCertificatesError::Empty {
            origin: origin.to_string(),
        })?;
        let anchor = Root::of(&root).map_err(|source| PemCertificatesError::NotAnchor {
            origin: origin.to_string(),
            index: all.len() + 1,
            source,
        })?;
        Ok(CertificateAuthorities {
            roots: vec![anchor],
            intermediates: all,
        })
    }

    /// How many roots and intermediates, for messages.
    pub fn counts(&self) -> (usize, usize) {
        (self.roots.len(), self.intermediates.len())
    }

    /// Whether `leaf` chains to a root at `at` through the authority's intermediates and
    /// `chain` (a signature's own), with code signing if the leaf lists extended key usages.
    pub fn verify_chain(
        &self,
        leaf: &CertificateDer<'_>,
        chain: &[CertificateDer<'static>],
        at: SystemTime,
    ) -> Result<(), CertificateError> {
        let since = at.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        let untrusted = |source| CertificateError::Untrusted {
            at: rfc3339(since),
            source,
        };
        let end = webpki::EndEntityCert::try_from(leaf).map_err(untrusted)?;
        let mut intermediates = self.intermediates.clone();
        intermediates.extend(chain.iter().cloned());
        let verify = |roots: &[TrustAnchor<'static>]| {
            end.verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                roots,
                &intermediates,
                UnixTime::since_unix_epoch(since),
                webpki::KeyUsage::required_if_present(CODE_SIGNING),
                None,
                None,
            )
            .map(|_| ())
        };
        let anchors = |all: bool| -> Vec<TrustAnchor<'static>> {
            let roots = self.roots.iter().filter(|r| all || r.valid_at(since));
            roots.map(|r| r.anchor.clone()).collect()
        };
        let refused = match verify(&anchors(false)) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        // Said as such when only a root outside its validity would have anchored it.
        if self.roots.iter().any(|r| !r.valid_at(since)) && verify(&anchors(true)).is_ok() {
            return Err(CertificateError::RootNotValid { at: rfc3339(since) });
        }
        Err(untrusted(refused))
    }
}

fn rfc3339(since: Duration) -> String {
    x509_cert::der::DateTime::from_unix_duration(since)
        .map_or_else(|_| format!("{}s", since.as_secs()), |t| t.to_string())
}

/// Every certificate of a PEM text, bounded in bytes and count, each parsed as X.509.
pub fn parse_pem_certificates(
    text: &str,
    origin: &str,
) -> Result<Vec<CertificateDer<'static>>, PemCertificatesError> {
    let origin_s = || origin.to_string();
    if text.len() > MAX_PEM_BYTES {
        return Err(PemCertificatesError::TooLarge {
            origin: origin_s(),
            size: text.len(),
            max: MAX_PEM_BYTES,
        });
    }
    let blocks = pem::parse_many(text).map_err(|source| PemCertificatesError::NotPem {
        origin: origin_s(),
        source,
    })?;
    if blocks.is_empty() {
        return Err(PemCertificatesError::Empty { origin: origin_s() });
    }
    if blocks.len() > MAX_PEM_CERTIFICATES {
        return Err(PemCertificatesError::TooMany {
            origin: origin_s(),
            count: blocks.len(),
            max: MAX_PEM_CERTIFICATES,
        });
    }
    blocks
        .into_iter()
        .enumerate()
        .map(|(i, block)| {
            if block.tag() != "CERTIFICATE" {
                return Err(PemCertificatesError::WrongTag {
                    origin: origin_s(),
                    index: i + 1,
                    tag: block.tag().to_string(),
                });
            }
            x509_cert::Certificate::from_der(block.contents()).map_err(|source| {
                PemCertificatesError::NotX509 {
                    origin: origin_s(),
                    index: i + 1,
                    source,
                }
            })?;
            Ok(CertificateDer::from(block.into_contents()))
        })
        .collect()
}

/// What a leaf certificate says: its public key and its SANs (email, URI, DNS).
#[derive(Debug, Clone)]
pub struct LeafCertificate {
    /// The certificate, DER.
    pub der: CertificateDer<'static>,
    /// Its subject public key.
    pub key: PublicKey,
    /// Its email, URI and DNS SANs, in order.
    pub sans: Vec<String>,
}

impl LeafCertificate {
    /// Read a signature's certificate annotation (exactly one certificate).
    pub fn from_pem(text: &str, origin: &str) -> Result<Self, CertificateError> {
        let mut all = parse_pem_certificates(text, origin).map_err(CertificateError::Pem)?;
        if all.len() != 1 {
            return Err(CertificateError::NotOne { count: all.len() });
        }
        Self::from_der(all.remove(0), origin)
    }

    /// A leaf certificate from its DER (a bundle's).
    pub fn from_der(der: CertificateDer<'static>, origin: &str) -> Result<Self, CertificateError> {
        let cert = x509_cert::Certificate::from_der(der.as_ref()).map_err(|source| {
            CertificateError::Pem(PemCertificatesError::NotX509 {
                origin: origin.to_string(),
                index: 1,
                source,
            })
        })?;
        let spki = cert
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(|source| {
                CertificateError::Pem(PemCertificatesError::NotX509 {
                    origin: origin.to_string(),
                    index: 1,
                    source,
                })
            })?;
        let key = PublicKey::from_der(&spki, origin).map_err(CertificateError::Key)?;
        Ok(LeafCertificate {
            sans: sans_of(&cert),
            der,
            key,
        })
    }

    /// Whether a SAN matches one of `identities`; the error lists what was found.
    pub fn match_identity(&self, identities: &[Matcher]) -> Result<(), CertificateError> {
        if self
            .sans
            .iter()
            .any(|s| identities.iter().any(|m| m.matches(s)))
        {
            return Ok(());
        }
        let expected: Vec<String> = identities.iter().map(ToString::to_string).collect();
        Err(CertificateError::Identity {
            found: self.sans.clone(),
            expected: expected.join(", "),
        })
    }
}

/// The email, URI and DNS names of a certificate's subjectAltName extension.
fn sans_of(cert: &x509_cert::Certificate) -> Vec<String> {
    use x509_cert::ext::pkix::SubjectAltName;
    use x509_cert::ext::pkix::name::GeneralName;
    let Some(ext) = cert
        .tbs_certificate
        .extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id == x509_cert::der::oid::db::rfc5280::ID_CE_SUBJECT_ALT_NAME)
    else {
        return Vec::new();
    };
    let Ok(san) = SubjectAltName::from_der(ext.extn_value.as_bytes()) else {
        return Vec::new();
    };
    san.0
        .iter()
        .filter_map(|n| match n {
            GeneralName::Rfc822Name(s)
            | GeneralName::DnsName(s)
            | GeneralName::UniformResourceIdentifier(s) => Some(s.as_str().to_string()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca_pem() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn pem_texts_are_bounded_and_checked() {
        let one = ca_pem();
        assert_eq!(parse_pem_certificates(&one, "r").unwrap().len(), 1);
        let big = " ".repeat(MAX_PEM_BYTES + 1);
        assert!(matches!(
            parse_pem_certificates(&big, "r"),
            Err(PemCertificatesError::TooLarge { .. })
        ));
        let many = one.repeat(MAX_PEM_CERTIFICATES + 1);
        assert!(matches!(
            parse_pem_certificates(&many, "r"),
            Err(PemCertificatesError::TooMany { .. })
        ));
        let e = parse_pem_certificates("hello", "roots.pem").unwrap_err();
        assert!(matches!(e, PemCertificatesError::Empty { .. }), "{e}");
        assert!(e.to_string().contains("roots.pem"), "{e}");
        let key = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
        assert!(matches!(
            parse_pem_certificates(key, "r"),
            Err(PemCertificatesError::WrongTag { .. })
        ));
        let junk = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            parse_pem_certificates(junk, "r"),
            Err(PemCertificatesError::NotX509 { .. })
        ));
        assert!(CertificateAuthorities::from_pem((&one, "r"), None).is_ok());
        assert!(CertificateAuthorities::from_chain_pem(&one, "c").is_ok());
    }

    #[test]
    fn a_leaf_needs_exactly_one_certificate() {
        let two = ca_pem() + &ca_pem();
        assert!(matches!(
            LeafCertificate::from_pem(&two, "cert"),
            Err(CertificateError::NotOne { count: 2 })
        ));
    }

    /// A root past its notAfter anchors nothing (a helper's review: webpki's trust anchors
    /// keep no validity, so a retired root's key could issue a leaf that verified today).
    #[test]
    fn a_root_outside_its_validity_anchors_nothing() {
        let issue = |root_from: i32, root_to: i32| {
            let ca_key = rcgen::KeyPair::generate().unwrap();
            let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            ca.not_before = rcgen::date_time_ymd(root_from, 1, 1);
            ca.not_after = rcgen::date_time_ymd(root_to, 1, 1);
            let ca_cert = ca.self_signed(&ca_key).unwrap();
            let issuer = rcgen::Issuer::new(ca, &ca_key);
            let leaf_key = rcgen::KeyPair::generate().unwrap();
            let mut leaf = rcgen::CertificateParams::new(vec!["a.example".into()]).unwrap();
            leaf.not_before = rcgen::date_time_ymd(2020, 1, 1);
            leaf.not_after = rcgen::date_time_ymd(2090, 1, 1);
            let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
            let cas =
                CertificateAuthorities::from_pem((&ca_cert.pem(), "roots.pem"), None).unwrap();
            cas.verify_chain(leaf_cert.der(), &[], SystemTime::now())
        };
        assert!(issue(2000, 2090).is_ok());
        assert!(matches!(
            issue(2000, 2001),
            Err(CertificateError::RootNotValid { .. })
        ));
        assert!(matches!(
            issue(2080, 2090),
            Err(CertificateError::RootNotValid { .. })
        ));
    }
}
