//! The PEM files registry settings name (`--registry-ca-file`, `--registry-cert-file`,
//! `--registry-key-file` and their variables): read and checked to hold only the expected PEM
//! blocks when named, and again when `serve` reloads them. Must not build TLS clients.

use std::path::{Path, PathBuf};
use std::sync::Arc;

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
