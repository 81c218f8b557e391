//! Trust material, parsed once: public keys (PEM SubjectPublicKeyInfo: ECDSA P-256/P-384,
//! Ed25519, RSA), trusted roots (each with its sigstore-verify verifier built once), and the
//! certificate identities a keyless authority accepts. Parsing only; files are read by callers.

use std::sync::{Arc, OnceLock};

use serde::Serialize;
use sigstore_crypto::{KeyAlgorithm, SigningScheme, VerificationKey};
use sigstore_trust_root::TrustedRoot;
use sigstore_types::{DerPublicKey, SignatureBytes};
use sigstore_verify::Verifier;

mod pki;
mod tuf;
pub use pki::{
    CertificateAuthorities, CertificateError, LeafCertificate, MAX_CHAIN_INTERMEDIATES,
    MAX_PEM_BYTES, MAX_PEM_CERTIFICATES, PemCertificatesError, parse_pem_certificates, validity,
};
pub use tuf::{
    ArchiveError, BUILTIN_TUF_ROOTS, DEFAULT_UPDATE_TIMEOUT, MAX_ARCHIVE_BYTES,
    MAX_ARCHIVE_ENTRIES, RoleState, TRUSTED_ROOT_TARGET, TufError, TufMirror, TufRole, TufSource,
    TufState, cache_root, default_cache_root, http_client, load_cached, set_cache_root, update,
};

/// A public key that cannot be used; Display names where it came from.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Not PEM at all.
    #[error("public key {origin}: not a PEM \"PUBLIC KEY\" block")]
    NotPem {
        /// Where the key came from (a file, a policy's key name).
        origin: String,
        /// What the PEM parser said.
        #[source]
        source: pem::PemError,
    },
    /// PEM, of something else (a private key, a certificate).
    #[error("public key {origin}: PEM block is {found:?}, expected \"PUBLIC KEY\"")]
    WrongPemTag {
        /// Where the key came from.
        origin: String,
        /// The PEM block's tag.
        found: String,
    },
    /// A SubjectPublicKeyInfo of a key type or curve that is not supported, or malformed.
    #[error("public key {origin}: unsupported or malformed key")]
    Unsupported {
        /// Where the key came from.
        origin: String,
        /// What the key parser said.
        #[source]
        source: sigstore_crypto::Error,
    },
}

/// A parsed public key, ready to verify signatures.
#[derive(Debug, Clone)]
pub struct PublicKey {
    der: DerPublicKey,
    algorithm: KeyAlgorithm,
}

impl PublicKey {
    /// Parse a PEM `PUBLIC KEY` block. `origin` names the input in errors (a path, a policy key).
    pub fn from_pem(pem_text: &str, origin: &str) -> Result<Self, KeyError> {
        let block = pem::parse(pem_text.trim()).map_err(|source| KeyError::NotPem {
            origin: origin.to_string(),
            source,
        })?;
        if block.tag() != "PUBLIC KEY" {
            return Err(KeyError::WrongPemTag {
                origin: origin.to_string(),
                found: block.tag().to_string(),
            });
        }
        Self::from_der(block.contents(), origin)
    }

    /// Parse a DER SubjectPublicKeyInfo.
    pub fn from_der(der: &[u8], origin: &str) -> Result<Self, KeyError> {
        let der = DerPublicKey::new(der.to_vec());
        let algorithm = KeyAlgorithm::from_spki(&der).map_err(|source| KeyError::Unsupported {
            origin: origin.to_string(),
            source,
        })?;
        // Build one verification key now so a malformed point or modulus fails here, not later.
        VerificationKey::from_spki(&der).map_err(|source| KeyError::Unsupported {
            origin: origin.to_string(),
            source,
        })?;
        Ok(PublicKey { der, algorithm })
    }

    /// The DER SubjectPublicKeyInfo.
    pub fn der(&self) -> &[u8] {
        self.der.as_bytes()
    }

    /// The key's type and signature scheme.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// `sha256:<hex>` of the DER key: a stable name for evidence and logs.
    pub fn fingerprint(&self) -> String {
        crate::reference::Digest::sha256_of(self.der.as_bytes()).to_string()
    }

    /// The key as a PEM `PUBLIC KEY` block (as `cosign public-key` writes it).
    pub fn to_pem(&self) -> String {
        self.der.to_pem()
    }

    /// Whether `signature` is a valid signature by this key over exactly `message`.
    /// cosign signs with SHA-256 whatever the key type; P-384 signatures made with the curve's
    /// own SHA-384 are accepted too.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let schemes: &[SigningScheme] = match self.algorithm {
            KeyAlgorithm::EcdsaP256 => &[SigningScheme::EcdsaP256Sha256],
            KeyAlgorithm::EcdsaP384 => &[
                SigningScheme::EcdsaP384Sha256,
                SigningScheme::EcdsaP384Sha384,
            ],
            KeyAlgorithm::Ed25519 => &[SigningScheme::Ed25519],
            KeyAlgorithm::Rsa => &[SigningScheme::RsaPkcs1Sha256, SigningScheme::RsaPssSha256],
            _ => &[],
        };
        let sig = SignatureBytes::new(signature.to_vec());
        schemes.iter().any(|scheme| {
            VerificationKey::from_spki_with_scheme(&self.der, *scheme)
                .is_ok_and(|k| k.verify(message, &sig).is_ok())
        })
    }
}

/// A trusted root (Fulcio CAs, Rekor and CT log keys, TSAs) with the name it was loaded under,
/// and the verifier built from it: keys and certificate anchors are prepared once per root, not
/// once per signature.
pub struct TrustRoot {
    name: String,
    verifier: Prepared,
}

/// A root's verifier: built when the root is read (a file's root, refused at load time when
/// unusable), or for the embedded root on first use: a key without a log never needs it, so a
/// `--key` check does not parse the public-good root (about 230,000 instructions per process).
enum Prepared {
    /// Built from the root as it was read.
    Built(Verifier),
    /// The embedded public-good root's, built once on first use.
    Embedded(OnceLock<Verifier>),
}

impl std::fmt::Debug for TrustRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustRoot")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A trusted root that cannot be used; Display names where it came from.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrustRootError {
    /// Not a `trusted_root.json` sigstore-trust-root reads.
    #[error("trusted root {origin}: not a valid trusted_root.json")]
    Invalid {
        /// Where the root came from (a file, `embedded`).
        origin: String,
        /// What sigstore-trust-root said.
        #[source]
        source: sigstore_trust_root::Error,
    },
    /// Valid JSON, but a verifier cannot be built from it.
    #[error("trusted root {origin}: its keys or certificates cannot be used")]
    Unusable {
        /// Where the root came from.
        origin: String,
        /// What sigstore-verify said.
        #[source]
        source: sigstore_verify::Error,
    },
}

impl TrustRoot {
    /// The Sigstore public-good root compiled into sigstore-trust-root: no network needed.
    pub fn embedded() -> Result<Self, TrustRootError> {
        Self::from_json(
            sigstore_trust_root::SIGSTORE_PRODUCTION_TRUSTED_ROOT,
            EMBEDDED_NAME,
        )
    }

    /// The embedded public-good root, parsed once per process and shared (its verifier built
    /// now, so that a policy naming it learns at load time whether it can be used).
    pub fn embedded_shared() -> Result<&'static Arc<Self>, TrustRootError> {
        let root = Self::embedded_deferred();
        root.verifier()?;
        Ok(root)
    }

    /// The embedded public-good root, shared, with its verifier built on first use (by
    /// [`TrustRoot::verifier`]): what an authority that names no root gets.
    pub(crate) fn embedded_deferred() -> &'static Arc<Self> {
        static EMBEDDED: OnceLock<Arc<TrustRoot>> = OnceLock::new();
        EMBEDDED.get_or_init(|| {
            Arc::new(TrustRoot {
                name: EMBEDDED_NAME.to_string(),
                verifier: Prepared::Embedded(OnceLock::new()),
            })
        })
    }

    /// Parse a trusted_root.json and prepare its verifier; a root whose keys or certificates
    /// cannot be used is an error here, at load time, not a failed verification later.
    pub fn from_json(text: &str, origin: &str) -> Result<Self, TrustRootError> {
        Ok(TrustRoot {
            name: origin.to_string(),
            verifier: Prepared::Built(verifier_of(text, origin)?),
        })
    }

    /// The root's name in evidence and messages (the policy's name for it, or `embedded`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The root's verifier; the embedded root's is built here the first time (an unusable
    /// one is an error each time it is asked for, as [`TrustRoot::embedded_shared`] is).
    pub(crate) fn verifier(&self) -> Result<&Verifier, TrustRootError> {
        match &self.verifier {
            Prepared::Built(v) => Ok(v),
            Prepared::Embedded(cell) => {
                if let Some(v) = cell.get() {
                    return Ok(v);
                }
                let built = verifier_of(
                    sigstore_trust_root::SIGSTORE_PRODUCTION_TRUSTED_ROOT,
                    EMBEDDED_NAME,
                )?;
                Ok(cell.get_or_init(|| built))
            }
        }
    }
}

/// The name evidence and messages give the embedded public-good root.
const EMBEDDED_NAME: &str = "embedded public-good";

/// A trusted_root.json parsed and its verifier prepared.
fn verifier_of(text: &str, origin: &str) -> Result<Verifier, TrustRootError> {
    let root = TrustedRoot::from_json(text).map_err(|source| TrustRootError::Invalid {
        origin: origin.to_string(),
        source,
    })?;
    Verifier::new(&root).map_err(|source| TrustRootError::Unusable {
        origin: origin.to_string(),
        source,
    })
}

/// An exact string or a regular expression (unanchored, as cosign's `-regexp` flags: anchor
/// with `^…$` to match the whole value).
#[derive(Debug, Clone)]
pub enum Matcher {
    /// The whole value, exactly.
    Exact(String),
    /// A regular expression, unanchored.
    Regex(regex::Regex),
}

impl Matcher {
    /// Whether `value` matches.
    pub fn matches(&self, value: &str) -> bool {
        match self {
            Matcher::Exact(e) => e == value,
            Matcher::Regex(r) => r.is_match(value),
        }
    }
}

impl std::fmt::Display for Matcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Matcher::Exact(e) => write!(f, "{e:?}"),
            Matcher::Regex(r) => write!(f, "regexp {:?}", r.as_str()),
        }
    }
}

/// An acceptable certificate identity: SAN and OIDC issuer, and optionally the GitHub workflow
/// claims Fulcio recorded (each an exact match).
#[derive(Debug, Clone)]
pub struct Identity {
    /// The certificate's SAN (email or URI).
    pub subject: Matcher,
    /// The certificate's OIDC issuer.
    pub issuer: Matcher,
    /// GitHub workflow claims that must match exactly (those set).
    pub github: GitHubWorkflow,
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "subject {} from issuer {}", self.subject, self.issuer)?;
        for (name, value) in self.github.fields() {
            if let Some(v) = value {
                write!(f, ", {name} {v:?}")?;
            }
        }
        Ok(())
    }
}

/// GitHub Actions claims of a Fulcio certificate: the legacy extensions
/// 1.3.6.1.4.1.57264.1.2–.6, or where absent their current equivalents (.1.20 trigger, .1.13
/// source digest, .1.12 source repository, .1.14 source ref).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GitHubWorkflow {
    /// The event that triggered the workflow (`push`, `release`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    /// The commit the workflow ran on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha: Option<String>,
    /// The workflow's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The repository (`owner/name`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// The git ref (`refs/heads/main`, `refs/tags/v1`).
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
}

impl GitHubWorkflow {
    fn fields(&self) -> [(&'static str, &Option<String>); 5] {
        [
            ("githubWorkflowTrigger", &self.trigger),
            ("githubWorkflowSha", &self.sha),
            ("githubWorkflowName", &self.name),
            ("githubWorkflowRepository", &self.repository),
            ("githubWorkflowRef", &self.git_ref),
        ]
    }

    /// Whether no claim is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    pub(crate) fn from_claims(c: &sigstore_crypto::FulcioCiClaims) -> Self {
        let d = &c.deprecated_github;
        GitHubWorkflow {
            trigger: d
                .workflow_trigger
                .clone()
                .or_else(|| c.build_trigger.clone()),
            sha: d
                .workflow_sha
                .clone()
                .or_else(|| c.source_repository_digest.clone()),
            name: d.workflow_name.clone(),
            repository: d.workflow_repository.clone().or_else(|| {
                c.source_repository_uri
                    .as_deref()
                    .map(|u| u.trim_start_matches("https://github.com/").to_string())
            }),
            git_ref: d
                .workflow_ref
                .clone()
                .or_else(|| c.source_repository_ref.clone()),
        }
    }

    /// The first claim this constraint sets that `found` does not carry with the same value.
    pub(crate) fn mismatch(
        &self,
        found: &GitHubWorkflow,
    ) -> Option<(&'static str, String, Option<String>)> {
        self.fields().into_iter().zip(found.fields()).find_map(
            |((name, want), (_, got))| match want {
                Some(w) if got.as_ref() != Some(w) => Some((name, w.clone(), got.clone())),
                _ => None,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P256: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEusIAt6EJ3YrTHdg2qkWVS0KuotWQ
wHDtyaXlq7Nhj8279+1u/l5pZhXJPW8PnGRRLdO5NbsuM6aT7pOcP100uw==
-----END PUBLIC KEY-----";

    /// The embedded root is one shared root: named at once, its verifier built on first use
    /// (or by `embedded_shared`, which checks it can be used), and then kept.
    #[test]
    fn the_embedded_root_is_shared_and_built_once() {
        let deferred = TrustRoot::embedded_deferred();
        assert_eq!(deferred.name(), "embedded public-good");
        let shared = TrustRoot::embedded_shared().unwrap();
        assert!(Arc::ptr_eq(deferred, shared));
        let first: *const Verifier = deferred.verifier().unwrap();
        let again: *const Verifier = shared.verifier().unwrap();
        assert_eq!(first, again);
    }

    #[test]
    fn matchers() {
        let e = Matcher::Exact("a@b.c".into());
        assert!(e.matches("a@b.c") && !e.matches("xa@b.c"));
        let r = Matcher::Regex(regex::Regex::new(r"^https://github\.com/acme/").unwrap());
        assert!(
            r.matches("https://github.com/acme/x") && !r.matches("https://github.com/evil/acme/")
        );
        assert_eq!(r.to_string(), "regexp \"^https://github\\\\.com/acme/\"");
    }

    #[test]
    fn parses_p256() {
        let k = PublicKey::from_pem(P256, "alice").unwrap();
        assert_eq!(k.algorithm(), KeyAlgorithm::EcdsaP256);
        assert!(k.fingerprint().starts_with("sha256:"));
        assert!(!k.verify(b"x", b"not a signature"));
    }

    #[test]
    fn bad_keys_name_their_origin() {
        let e = PublicKey::from_pem("hello", "keys/a.pub").unwrap_err();
        assert!(e.to_string().contains("keys/a.pub"));
        let e = PublicKey::from_pem(
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----",
            "k",
        )
        .unwrap_err();
        assert!(e.to_string().contains("PRIVATE KEY"), "{e}");
        let e = PublicKey::from_pem(
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----",
            "k",
        )
        .unwrap_err();
        assert!(matches!(e, KeyError::Unsupported { .. }), "{e}");
    }
}
