//! Who may ask for reviews. With `serve --client-ca FILE`, `/validate` and `/mutate` answer
//! only a connection whose client certificate chains to one of the CAs in FILE (and, with
//! `--client-name`, names one of those names as its subject CN or a DNS SAN): the certificate
//! kube-apiserver presents from the kubeconfig its AdmissionConfiguration gives for the
//! webhook. Without it anyone who can reach the Service could send reviews of their own,
//! naming another namespace, and have ocigate resolve private images with that namespace's
//! pull secrets. The probes (`/healthz`, `/readyz`) stay open: the kubelet has no client
//! certificate, so the certificate is asked for at the handshake but not required there.
//! FILE is re-read when it changes, as the serving certificate is; unlike a serving
//! certificate it is a trust decision, so a changed file that does not load trusts no client
//! until it does (a CA removed from it must not stay trusted). Owns the TLS client verifier;
//! must not know about admission.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::HandshakeSignatureValid;
use tokio_rustls::rustls::crypto::WebPkiSupportedAlgorithms;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, UnixTime};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use tokio_rustls::rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

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
            algorithms: provider.signature_verification_algorithms,
            path: path.to_path_buf(),
            first,
            names,
        })
    }

    /// One tick of [`watch`]: the file as read now, loaded in place of the CAs in force when
    /// it differs from `last` (a file that does not load trusts no client until one does).
    fn reload_if_changed(&self, last: Vec<u8>, metrics: &Metrics) -> Vec<u8> {
        let now = std::fs::read(&self.path).unwrap_or_default();
        if now == last || now.is_empty() {
            return last;
        }
        let loaded = verifier_from(&now, &self.path);
        let ok = loaded.is_ok();
        let msg = match &loaded {
            Ok(_) => serde_json::json!({"msg": "client CA reloaded"}),
            Err(e) => {
                serde_json::json!({"msg": "client CA reload failed; no client is trusted until it loads", "error": crate::error_chain(e)})
            }
        };
        *crate::sync::write(&self.current) = loaded.ok();
        tell!("{msg}");
        metrics.count_certificate_reload(ok);
        now
    }

    /// Whether a connection whose handshake verified `peer` (None: no certificate) may ask
    /// for reviews; if not, the status and the reason to answer with.
    pub(super) fn admits(&self, peer: Option<&[String]>) -> Result<(), (u16, String)> {
        let Some(names) = peer else {
            let why = "reviews need a client certificate issued by a CA of --client-ca\n";
            return Err((401, why.into()));
        };
        if self.names.is_empty() || names.iter().any(|n| self.names.contains(n)) {
            return Ok(());
        }
        Err((
            403,
            "the client certificate names none of --client-name\n".into(),
        ))
    }

    fn verifier(&self) -> Option<Arc<dyn ClientCertVerifier>> {
        crate::sync::read(&self.current).clone()
    }
}

/// Re-read `auth`'s CA file every `interval`, forever, on the blocking pool; reloads are
/// counted with the certificate's.
pub(super) async fn watch(auth: Arc<ClientAuth>, interval: Duration, metrics: Arc<Metrics>) {
    let mut last = auth.first.clone();
    let mut tick = tokio::time::interval(interval);
    loop {
        tick.tick().await;
        let (a, m) = (auth.clone(), metrics.clone());
        last = blocking(move || a.reload_if_changed(last, &m)).await;
    }
}

/// The subject CN and DNS SANs of a verified client certificate (at most [`MAX_NAMES`]); an
/// empty list when it does not parse as X.509 (rustls accepted it as DER).
pub(super) fn names_of(leaf: &CertificateDer<'_>) -> Vec<String> {
    use x509_cert::der::Decode as _;
    use x509_cert::ext::pkix::SubjectAltName;
    use x509_cert::ext::pkix::name::GeneralName;
    let Ok(cert) = x509_cert::Certificate::from_der(leaf.as_ref()) else {
        return Vec::new();
    };
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
