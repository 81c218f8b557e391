//! Who may ask for reviews. With `serve --client-ca FILE`, `/validate` and `/mutate` answer
//! only a connection whose client certificate chains to one of the CAs in FILE (and, with
//! `--client-name`, names one of those names as its subject CN or a DNS SAN): the certificate
//! kube-apiserver presents from the kubeconfig its AdmissionConfiguration gives for the
//! webhook. Without it anyone who can reach the Service could send reviews of their own,
//! naming another namespace, and have ocigate resolve private images with that namespace's
//! pull secrets. The probes (`/healthz`, `/readyz`) stay open: the kubelet has no client
//! certificate, so the certificate is asked for at the handshake but not required there.
//! FILE is re-read when it changes, as the serving certificate is; unlike a serving
//! certificate it is a trust decision, so a changed file that does not load (or is gone, or
//! stays empty) trusts no client until it does: a CA removed from it must not stay trusted.
//! For the same reason a connection's certificate is checked again against the CAs in force
//! before each review (once per connection and CA change, and again when it expires), not
//! only at the handshake: a kept-alive connection outlives a rotation. Owns the TLS client
//! verifier; must not know about admission.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::HandshakeSignatureValid;
use tokio_rustls::rustls::crypto::WebPkiSupportedAlgorithms;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, UnixTime};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use tokio_rustls::rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use hyper::StatusCode;

use super::metrics::Metrics;
use super::tls::TlsError;
use super::workers::blocking;

/// The most names (`--client-name`) a client certificate is matched against, and the most it
/// is read for: a certificate is the caller's, and bounded like any input.
const MAX_NAMES: usize = 64;

/// `serve --client-ca` and `--client-name`: the CAs in force and the names accepted.
#[derive(Debug)]
pub(super) struct ClientAuth {
    path: PathBuf,
    /// The CAs' verifier; None: the file changed and did not load, no client is trusted.
    current: RwLock<Option<Arc<dyn ClientCertVerifier>>>,
    /// Bumped whenever `current` is replaced: a connection's certificate verified under an
    /// older one is verified again.
    generation: AtomicU64,
    /// The handshake signatures a client certificate's key may make.
    algorithms: WebPkiSupportedAlgorithms,
    /// The bytes the first load parsed: the reload watcher's baseline.
    first: Vec<u8>,
    /// Accepted subject CNs and DNS SANs; empty: any certificate the CAs issued.
    names: Vec<String>,
}

/// The CA certificates of `pem` as a verifier that asks for a client certificate and checks
/// any it is given, but lets a connection without one through (the probes).
fn verifier_from(pem: &[u8], path: &Path) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|source| TlsError::NotCertificates {
            path: path.to_path_buf(),
            source,
        })?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::Config {
            path: path.to_path_buf(),
            source: rustls::Error::General(e.to_string()),
        })
}

impl ClientAuth {
    /// The CAs of `path` (read now, blocking) and the names accepted.
    pub(super) fn load(path: &Path, names: Vec<String>) -> Result<Self, TlsError> {
        let first = std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        Ok(ClientAuth {
            current: RwLock::new(Some(verifier_from(&first, path)?)),
            generation: AtomicU64::new(0),
            algorithms: provider.signature_verification_algorithms,
            path: path.to_path_buf(),
            first,
            names,
        })
    }

    /// One tick of [`watch`]: the file as it is now against `last`. Changed bytes are loaded
    /// in place of the CAs in force; bytes that do not load, a file that is gone or cannot be
    /// read, or one empty on two ticks running (not a rewrite caught half way) trust no client.
    fn reload_if_changed(&self, last: Seen, metrics: &Metrics) -> Seen {
        let now = match std::fs::read(&self.path) {
            Ok(b) if b.is_empty() => Seen::Empty,
            Ok(b) => Seen::Bytes(b),
            Err(_) => Seen::Gone,
        };
        match (&now, &last) {
            (Seen::Empty, Seen::EmptyOnce) => {
                return self.install(Err("the file is empty".into()), metrics, Seen::Empty);
            }
            (Seen::Empty, Seen::Empty) => return last,
            // Emptied just now (perhaps a rewrite caught half way): looked at again next tick.
            (Seen::Empty, _) => return Seen::EmptyOnce,
            _ if now == last => return last,
            _ => {}
        }
        let loaded = match &now {
            Seen::Bytes(b) => verifier_from(b, &self.path).map_err(|e| crate::error_chain(&e)),
            _ => Err("the file cannot be read".into()),
        };
        self.install(loaded, metrics, now)
    }

    /// Put `loaded` in force (an error: no client is trusted), say so, count it.
    fn install(
        &self,
        loaded: Result<Arc<dyn ClientCertVerifier>, String>,
        metrics: &Metrics,
        seen: Seen,
    ) -> Seen {
        let msg = match &loaded {
            Ok(_) => serde_json::json!({"msg": "client CA reloaded"}),
            Err(e) => {
                serde_json::json!({"msg": "client CA reload failed; no client is trusted until it loads", "error": e})
            }
        };
        metrics.count_certificate_reload(loaded.is_ok());
        *crate::sync::write(&self.current) = loaded.ok();
        self.generation.fetch_add(1, Ordering::AcqRel);
        tell!("{msg}");
        seen
    }

    /// Whether a connection whose handshake verified `peer` (None: no certificate) may ask
    /// for reviews; if not, the status and the reason to answer with. The certificate is
    /// verified again against the CAs in force when they changed since it last was, or when
    /// it has expired since.
    pub(super) fn admits(&self, peer: Option<&Peer>) -> Result<(), (StatusCode, &'static str)> {
        const NOT_NOW: &str = "the client certificate is not issued by a CA of --client-ca now\n";
        let Some(peer) = peer else {
            let why = "reviews need a client certificate issued by a CA of --client-ca\n";
            return Err((StatusCode::UNAUTHORIZED, why));
        };
        let generation = self.generation.load(Ordering::Acquire);
        let now = SystemTime::now();
        let expired = peer.not_after.is_none_or(|t| now >= t);
        if expired || peer.verified_under.load(Ordering::Acquire) != generation {
            let unauthorized = (StatusCode::UNAUTHORIZED, NOT_NOW);
            let (leaf, rest) = peer.chain.split_first().ok_or(unauthorized)?;
            let verified = self
                .verifier()
                .map(|v| v.verify_client_cert(leaf, rest, UnixTime::now()));
            if !matches!(verified, Some(Ok(_))) {
                return Err(unauthorized);
            }
            peer.verified_under.store(generation, Ordering::Release);
        }
        if self.names.is_empty() || peer.names.iter().any(|n| self.names.contains(n)) {
            return Ok(());
        }
        let why = "the client certificate names none of --client-name\n";
        Err((StatusCode::FORBIDDEN, why))
    }

    fn verifier(&self) -> Option<Arc<dyn ClientCertVerifier>> {
        crate::sync::read(&self.current).clone()
    }
}

/// Re-read `auth`'s CA file every `interval`, forever, on the blocking pool; reloads are
/// counted with the certificate's.
pub(super) async fn watch(auth: Arc<ClientAuth>, interval: Duration, metrics: Arc<Metrics>) {
    let mut last = Seen::Bytes(auth.first.clone());
    let mut tick = tokio::time::interval(interval);
    loop {
        tick.tick().await;
        let (a, m) = (auth.clone(), metrics.clone());
        last = blocking(move || a.reload_if_changed(last, &m)).await;
    }
}

/// What the CA file held at the last tick.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    /// These bytes.
    Bytes(Vec<u8>),
    /// Nothing, first seen at that tick.
    EmptyOnce,
    /// Nothing, on two ticks running or more.
    Empty,
    /// No file, or one that cannot be read.
    Gone,
}

/// A client certificate a connection's handshake verified, kept to be verified again.
#[derive(Debug)]
pub(crate) struct Peer {
    chain: Vec<CertificateDer<'static>>,
    names: Vec<String>,
    not_after: Option<SystemTime>,
    /// The CAs' generation it last verified under (`u64::MAX`: not yet, after the handshake).
    verified_under: AtomicU64,
}

impl Peer {
    /// The chain a handshake verified (leaf first); None for an empty one.
    pub(super) fn of(chain: &[CertificateDer<'_>]) -> Option<Peer> {
        use x509_cert::der::Decode as _;
        let leaf = chain.first()?;
        let cert = x509_cert::Certificate::from_der(leaf.as_ref()).ok();
        let not_after = crate::trust::validity(leaf.as_ref())
            .map(|(_, not_after)| SystemTime::UNIX_EPOCH + not_after);
        Some(Peer {
            chain: chain.iter().map(|c| c.clone().into_owned()).collect(),
            names: cert.as_ref().map(names_of).unwrap_or_default(),
            not_after,
            verified_under: AtomicU64::new(u64::MAX),
        })
    }
}

/// The subject CN and DNS SANs of a certificate (at most [`MAX_NAMES`]).
fn names_of(cert: &x509_cert::Certificate) -> Vec<String> {
    use x509_cert::ext::pkix::SubjectAltName;
    use x509_cert::ext::pkix::name::GeneralName;
    let tbs = &cert.tbs_certificate;
    let cn = tbs
        .subject
        .0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .filter_map(|atv| {
            (atv.oid == x509_cert::der::oid::db::rfc4519::CN)
                .then(|| directory_string(&atv.value))
                .flatten()
        });
    let sans = tbs
        .get::<SubjectAltName>()
        .ok()
        .flatten()
        .map(|(_, san)| san.0);
    let dns = sans.into_iter().flatten().filter_map(|n| match n {
        GeneralName::DnsName(d) => Some(d.as_str().to_string()),
        _ => None,
    });
    cn.chain(dns).take(MAX_NAMES).collect()
}

/// A name attribute's text: UTF8String or PrintableString, the two a CN is written in.
fn directory_string(value: &x509_cert::der::Any) -> Option<String> {
    use x509_cert::der::asn1::{PrintableStringRef, Utf8StringRef};
    if let Ok(s) = Utf8StringRef::try_from(value) {
        return Some(s.as_str().to_string());
    }
    PrintableStringRef::try_from(value)
        .ok()
        .map(|s| s.as_str().to_string())
}

impl ClientCertVerifier for ClientAuth {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    /// No hints: a client then sends the certificate it has (Go's TLS client, kube-apiserver's,
    /// picks its one certificate against an empty list).
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        match self.verifier() {
            Some(v) => v.verify_client_cert(end_entity, intermediates, now),
            None => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
