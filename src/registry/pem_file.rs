//! The PEM files registry settings name (`--registry-ca-file`, `--registry-cert-file`,
//! `--registry-key-file` and their variables): read and checked to hold only the expected PEM
//! blocks when named, and again when `serve` reloads them; a certificate chain paired with its
//! key (also the webhook's serving certificate). Must not build TLS clients.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::sign::CertifiedKey;

use super::settings::{SettingsError, invalid};

/// A PEM file named in the settings, read when it was named. Debug shows the path only.
#[derive(Clone)]
pub struct PemFile {
    /// The path as given in the flag or variable (not resolved), for messages.
    pub path: PathBuf,
    /// The whole file as read when it was named, checked to hold only the expected PEM
    /// blocks. `serve` reads it again when it changes ([`super::Registry::reload_tls_files`]);
    /// elsewhere a later change on disk is not seen.
    pub pem: Arc<[u8]>,
}

impl std::fmt::Debug for PemFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PemFile({})", self.path.display())
    }
}

/// Which TLS file a flag or setting names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFile {
    /// `--registry-ca-file` or `CA_FILE`: CA certificates added to the platform's roots.
    Ca,
    /// `--registry-cert-file` or `CERT_FILE`: the client certificate (chain) for mTLS.
    Cert,
    /// `--registry-key-file` or `KEY_FILE`: the client certificate's private key.
    Key,
}

impl TlsFile {
    pub(super) fn flag(self) -> &'static str {
        match self {
            TlsFile::Ca => "--registry-ca-file",
            TlsFile::Cert => "--registry-cert-file",
            TlsFile::Key => "--registry-key-file",
        }
    }
}

/// `file` read again, checked to hold what `which` must (blocking).
pub(crate) fn reread_pem(file: &Path, which: TlsFile) -> Result<Arc<[u8]>, SettingsError> {
    read_pem(file, which, which.flag()).map(|f| f.pem)
}

pub(super) fn read_pem(file: &Path, which: TlsFile, name: &str) -> Result<PemFile, SettingsError> {
    let bytes = std::fs::read(file)
        .map_err(|e| invalid(name, format!("{}: cannot be read: {e}", file.display())))?;
    let want = match which {
        TlsFile::Ca | TlsFile::Cert => "a PEM certificate",
        TlsFile::Key => "a PEM private key",
    };
    let ok = pem::parse_many(&bytes).is_ok_and(|blocks| {
        !blocks.is_empty()
            && blocks.iter().all(|b| match which {
                TlsFile::Ca | TlsFile::Cert => b.tag() == "CERTIFICATE",
                TlsFile::Key => b.tag().ends_with("PRIVATE KEY"),
            })
    });
    if !ok {
        return Err(invalid(name, format!("{} is not {want}", file.display())));
    }
    Ok(PemFile {
        path: file.to_path_buf(),
        pem: bytes.into(),
    })
}

/// Why a certificate chain and a private key (both PEM) cannot be paired.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PairError {
    /// The certificate text is not PEM certificates.
    #[error("not PEM certificates")]
    NotCertificates(#[source] rustls::pki_types::pem::Error),
    /// The certificate text holds no certificate.
    #[error("holds no certificate")]
    NoCertificate,
    /// The key text is not a PEM private key.
    #[error("not a PEM private key")]
    NotAKey(#[source] rustls::pki_types::pem::Error),
    /// The certificate and the key are not a pair (or the key is of no supported kind).
    #[error("certificate and key do not form a pair")]
    NotAPair(#[source] rustls::Error),
}

/// The certificate chain of `cert_pem` paired with the key of `key_pem` (checked to match).
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, PairError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(PairError::NotCertificates)?;
    if chain.is_empty() {
        return Err(PairError::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(PairError::NotAKey)?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    CertifiedKey::from_der(chain, key, &provider).map_err(PairError::NotAPair)
}
