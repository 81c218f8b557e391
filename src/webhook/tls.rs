//! The webhook's TLS material: the certificate and key read from their files, the rustls
//! acceptor, and the resolver that swaps them when the mounted files change.
//! Owns reading the PEM files (always off the async workers); must not know about HTTP or admission.
//!
//! Unlike kubert, which reads the files for every connection, the files are polled every
//! reload interval and a handshake only clones an `Arc` from the resolver: a client opening
//! many short connections costs no file reads, and a certificate half-written by its mount is
//! never served (the last good one stays, and the failure is counted).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;

use super::metrics::Metrics;
use super::workers::blocking;

/// Why the TLS certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file cannot be read.
    #[error("TLS certificate {}: cannot read", path.display())]
    Read {
        /// The certificate or key file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The certificate file is not PEM certificates.
    #[error("TLS certificate {}: not PEM certificates", path.display())]
    NotCertificates {
        /// The certificate file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The certificate file holds no certificate.
    #[error("TLS certificate {}: holds no certificate", path.display())]
    NoCertificate {
        /// The certificate file.
        path: PathBuf,
    },
    /// The key file is not a PEM private key.
    #[error("TLS certificate {}: not a PEM private key", path.display())]
    NotAKey {
        /// The key file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The certificate and the key are not a pair (or the key is of no supported kind).
    #[error("TLS certificate {}: certificate and key do not form a pair", path.display())]
    NotAPair {
        /// The certificate file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rustls::Error,
    },
    /// The TLS configuration cannot be built.
    #[error("TLS certificate {}", path.display())]
    Config {
        /// The certificate file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rustls::Error,
    },
}

/// The certificate in force, swapped by [`watch_certificates`]; every handshake takes the
/// current one.
#[derive(Debug)]
pub(super) struct Certificates {
    current: RwLock<Arc<CertifiedKey>>,
    /// The files' bytes the first load parsed: the reload watcher's baseline (read again
    /// later, a rotation between the load and the watcher's start would never be served).
    first: PemFiles,
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(crate::sync::read(&self.current).clone())
    }
}

/// The certificate and key files, as read once.
#[derive(Clone, PartialEq, Eq)]
struct PemFiles {
    cert: Vec<u8>,
    key: Vec<u8>,
}

/// The key's bytes are never printed.
impl std::fmt::Debug for PemFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PemFiles")
            .field("cert_bytes", &self.cert.len())
            .field("key_bytes", &self.key.len())
            .finish()
    }
}

impl PemFiles {
    /// Both files as they are now (a file that cannot be read is empty).
    fn read_now(cert: &Path, key: &Path) -> Self {
        PemFiles {
            cert: std::fs::read(cert).unwrap_or_default(),
            key: std::fs::read(key).unwrap_or_default(),
        }
    }
}

/// Read and pair the certificate chain and key: the pair and the bytes it was made from.
/// Blocking: call it off the async workers.
fn load_certified_key(cert: &Path, key: &Path) -> Result<(CertifiedKey, PemFiles), TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    let pem = PemFiles {
        cert: read(cert)?,
        key: read(key)?,
    };
    Ok((certified_from(&pem, cert, key)?, pem))
}

/// The certificate chain and key of `pem` paired (`cert` and `key` name them in errors).
fn certified_from(pem: &PemFiles, cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    use crate::registry::PairError;
    let (cert, key) = (cert.to_path_buf(), key.to_path_buf());
    crate::registry::certified_key(&pem.cert, &pem.key).map_err(|e| match e {
        PairError::NotCertificates(source) => TlsError::NotCertificates { path: cert, source },
        PairError::NoCertificate => TlsError::NoCertificate { path: cert },
        PairError::NotAKey(source) => TlsError::NotAKey { path: key, source },
        PairError::NotAPair(source) => TlsError::NotAPair { path: cert, source },
    })
}

impl Certificates {
    /// When the certificate being served expires (its leaf's `notAfter`), in seconds since the
    /// Unix epoch; None if the leaf does not parse as X.509 (rustls accepted it as DER only).
    pub(super) fn not_after(&self) -> Option<u64> {
        let current = crate::sync::read(&self.current).clone();
        let leaf = current.cert.first()?;
        crate::trust::validity(leaf.as_ref()).map(|(_, not_after)| not_after.as_secs())
    }

    /// The certificate and key of these files, read off the async workers.
    pub(super) async fn load(cert: &Path, key: &Path) -> Result<Arc<Self>, TlsError> {
        let (cert, key) = (cert.to_path_buf(), key.to_path_buf());
        let (certified, first) = blocking(move || load_certified_key(&cert, &key)).await?;
        Ok(Arc::new(Certificates {
            current: RwLock::new(Arc::new(certified)),
            first,
        }))
    }
}

/// The acceptor of the webhook's listener: TLS 1.2 and 1.3 (aws-lc-rs), HTTP/1.1, the
/// certificate from `certs` at each handshake; a client certificate asked for and checked
/// against `clients`' CAs when given.
pub(super) fn acceptor(
    certs: Arc<Certificates>,
    clients: Option<Arc<super::client_auth::ClientAuth>>,
    cert: &Path,
) -> Result<TlsAcceptor, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Config {
            path: cert.to_path_buf(),
            source,
        })?;
    let resumable = clients.is_none();
    let tls = match clients {
        Some(c) => tls.with_client_cert_verifier(c),
        None => tls.with_no_client_auth(),
    };
    let mut tls = tls.with_cert_resolver(certs);
    if !resumable {
        // A resumed session carries the certificate its first handshake verified, unchecked
        // (reviews check it again, but a full handshake is what a CA change should meet).
        tls.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        tls.send_tls13_tickets = 0;
    }
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(tls)))
}

/// Where the certificate comes from and how reloads are counted.
pub(super) struct CertificateFiles {
    /// The certificate chain (PEM).
    pub(super) cert: PathBuf,
    /// The private key (PEM).
    pub(super) key: PathBuf,
    /// How often the files are looked at.
    pub(super) interval: Duration,
    /// Where reloads are counted.
    pub(super) metrics: Arc<Metrics>,
}

/// Re-read the certificate and the key when their bytes change (a mount's `..data` symlink
/// swap included): the bytes the first load parsed are the baseline, and the returned task
/// compares the files with them every interval, forever. Every read happens on the blocking pool. A pair that fails
/// to load is logged and counted, and the last good one stays.
pub(super) async fn watch_certificates(
    certs: Arc<Certificates>,
    files: CertificateFiles,
) -> impl Future<Output = ()> + Send + 'static {
    let files = Arc::new(files);
    let mut last = certs.first.clone();
    async move {
        let mut tick = tokio::time::interval(files.interval);
        loop {
            tick.tick().await;
            let (f, c) = (files.clone(), certs.clone());
            last = blocking(move || reload_if_changed(&c, &f, last)).await;
        }
    }
}

/// One tick of [`watch_certificates`]: the files as read now.
fn reload_if_changed(certs: &Certificates, files: &CertificateFiles, last: PemFiles) -> PemFiles {
    let now = PemFiles::read_now(&files.cert, &files.key);
    if now == last || now.cert.is_empty() || now.key.is_empty() {
        return last;
    }
    // The bytes compared are the bytes loaded: a file replaced between the two reads is not
    // taken for the one already served.
    match certified_from(&now, &files.cert, &files.key) {
        Ok(k) => {
            *crate::sync::write(&certs.current) = Arc::new(k);
            tell!(r#"{{"msg":"certificate reloaded"}}"#);
            files.metrics.count_certificate_reload(true);
        }
        Err(e) => {
            let msg = serde_json::json!({"msg": "certificate reload failed", "error": crate::error_chain(&e)});
            tell!("{msg}");
            files.metrics.count_certificate_reload(false);
        }
    }
    now
}
