//! The OCI distribution HTTP API, on reqwest (rustls with aws-lc-rs).
//!
//! Why not oci-client: measured on a cold `verify` (BENCHMARKS.md), its client construction
//! always builds a second, default reqwest client that loads the platform CA store (a fifth of
//! the process's CPU, even for plain-HTTP registries), and on anonymous registries it re-probes
//! `GET /v2/` before every request, doubling the load on the registry. It also has no per-host
//! CA or client-certificate settings, which ocigate's registry settings need. What is here is the
//! small part of the protocol the gate needs: challenge-driven auth (Bearer token flow with a
//! token cache, Basic), manifests and blobs with size caps, monolithic blob uploads.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::Url;
use reqwest::header::{HeaderValue, LOCATION, WWW_AUTHENTICATE};

mod auth;
mod cause;
use auth::{Auth, HopAuth, Token, TokenKey, scope_for};
use cause::transport_cause;
pub use cause::{Cause, read_body_capped};
pub(crate) use cause::{parse_retry_after, status_cause};

use super::RegistrySettings;
use super::credentials::{Credential, CredentialId};
use super::fold::{FoldedCounts, MAX_NAMED_HOSTS, MAX_NAMED_SCOPES};
use super::settings::{Scheme, SchemeChoice};

/// What a request needs the token to allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Reading.
    Pull,
    /// Reading and writing.
    Push,
}

/// The repository a request is for, with the access it needs and the credential for the
/// registry's own origin.
pub(crate) struct RepoAccess<'a> {
    /// How hosts are reached.
    pub settings: &'a RegistrySettings,
    /// Sent only to the registry's own origin (and the realm its challenge names).
    pub creds: Option<&'a Credential>,
    /// The registry, as references name it.
    pub registry: &'a str,
    /// The repository on it (the token's scope).
    pub repository: &'a str,
    /// What the request needs the token to allow.
    pub access: Access,
}

/// Redirects followed for one request (each hop is checked: no downgrade, credentials only to
/// the registry's own origin).
pub(crate) const MAX_REDIRECTS: usize = 5;

/// One client for all remote registries of a run (shared across concurrent requests).
///
/// Where credentials go: a registry's credentials are attached only to requests whose URL has
/// the registry's own origin (scheme, host, port), and to the token realm that origin names in
/// its own challenge. Redirects are followed here, not by reqwest, so that each hop is checked:
/// a hop to another origin is sent without credentials, and a challenge from it is answered
/// anonymously; a token is sent back only to the origin whose challenge obtained it.
pub(crate) struct Remote {
    /// One HTTP client per distinct transport (plain HTTP, or TLS with its CA, client
    /// certificate and verification settings), built on first use.
    clients: Mutex<HashMap<Transport, Result<reqwest::Client, String>>>,
    /// (origin, scope, credential) -> bearer token obtained with that credential (or
    /// anonymously) in answer to that origin's challenge: a token is never sent on behalf of
    /// another credential (another namespace's pull secret, or none).
    tokens: Mutex<HashMap<TokenKey, Token>>,
    /// One token fetch in flight per (origin, scope, credential): concurrent requests wait.
    token_fetches: Mutex<HashMap<TokenKey, Arc<tokio::sync::Mutex<()>>>>,
    /// Origins that asked for Basic auth.
    basic: Mutex<HashSet<String>>,
    /// The scheme that worked, per host reached HTTPS-then-HTTP (at most [`MAX_SCHEMES`]).
    schemes: Mutex<HashMap<String, Scheme>>,
    /// HTTP requests sent, by host and status class (`2xx` … `5xx`, or `error`); hosts past
    /// [`super::fold::MAX_NAMED_HOSTS`] are counted as `other`.
    requests: Mutex<FoldedCounts>,
    /// Token responses received, by realm and scope (both folded likewise).
    token_fetch_counts: Mutex<FoldedCounts>,
    /// CA, client certificate and key files read again since the settings were made (by
    /// path): their content is used for clients built from then on.
    reloaded: Mutex<HashMap<PathBuf, Arc<[u8]>>>,
}

/// What distinguishes one HTTP client from another.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Transport {
    plain: bool,
    /// TLS that trusts no certificate: only to learn whether a host speaks TLS at all,
    /// without loading the platform's CA store (see [`Remote::send`]).
    probe: bool,
    insecure: bool,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

/// The TLS settings of a host as a client is built from them: the files' current content.
#[derive(Default)]
struct TlsParts {
    insecure: bool,
    ca: Option<(PathBuf, Arc<[u8]>)>,
    cert: Option<(PathBuf, Arc<[u8]>)>,
    key: Option<(PathBuf, Arc<[u8]>)>,
}

/// Whether CA, client certificate and key contents can be used together: the CAs parse, and
/// the certificate and key parse and form a pair. A renewed file that fails this is not put in
/// force (see [`super::Registry::reload_tls_files`]).
pub(crate) fn tls_usable(
    ca: Option<&[u8]>,
    cert: Option<&[u8]>,
    key: Option<&[u8]>,
) -> Result<(), String> {
    use tokio_rustls::rustls::pki_types::CertificateDer;
    use tokio_rustls::rustls::pki_types::pem::PemObject as _;
    if let Some(ca) = ca {
        // Each certificate parsed as a trust anchor (reqwest only decodes the PEM here).
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(ca)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("CA file: {e}"))?;
        for c in &certs {
            webpki::anchor_from_trusted_cert(c).map_err(|e| format!("CA file: {e}"))?;
        }
    }
    let (Some(cert), Some(key)) = (cert, key) else {
        return Ok(());
    };
    super::certified_key(cert, key)
        .map(|_| ())
        .map_err(|e| format!("client certificate: {}", crate::error_chain(&e)))
}

/// A client with `settings`' timeouts and pool, no redirects, and `tls` (None: plain HTTP, or
/// a TLS probe: no TLS server is trusted).
fn build_client(
    settings: &RegistrySettings,
    tls: Option<&TlsParts>,
) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .user_agent(concat!("ocigate/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
        .read_timeout(settings.timeout)
        // No more idle connections kept per host than may be busy with it at once.
        .pool_max_idle_per_host(settings.max_connections_per_host)
        .redirect(reqwest::redirect::Policy::none());
    let Some(t) = tls else {
        // This client speaks plain HTTP, or probes TLS: it trusts no TLS server.
        return b
            .tls_certs_only(Vec::<reqwest::Certificate>::new())
            .build()
            .map_err(|e| crate::error_chain(&e));
    };
    if t.insecure {
        // Nothing is verified: no CA store to load.
        b = b
            .tls_certs_only(Vec::<reqwest::Certificate>::new())
            .tls_danger_accept_invalid_certs(true);
    } else if let Some((ca, ca_pem)) = &t.ca {
        let certs = reqwest::Certificate::from_pem_bundle(ca_pem)
            .map_err(|e| format!("CA file {}: {}", ca.display(), crate::error_chain(&e)))?;
        b = b.tls_certs_merge(certs);
    }
    if let (Some((cert, cert_pem)), Some((key, key_pem))) = (&t.cert, &t.key) {
        let mut pem = cert_pem.to_vec();
        pem.push(b'\n');
        pem.extend_from_slice(key_pem);
        let id = reqwest::Identity::from_pem(&pem).map_err(|e| {
            let (c, k) = (cert.display(), key.display());
            format!(
                "client certificate {c} with key {k}: {}",
                crate::error_chain(&e)
            )
        })?;
        b = b.identity(id);
    }
    b.build().map_err(|e| crate::error_chain(&e))
}

/// Hosts whose working scheme is remembered at most (all are forgotten when it is full).
const MAX_SCHEMES: usize = 1024;

impl Remote {
    pub(crate) fn new() -> Self {
        Remote {
            clients: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
            token_fetches: Mutex::new(HashMap::new()),
            basic: Mutex::new(HashSet::new()),
            schemes: Mutex::new(HashMap::new()),
            requests: Mutex::new(FoldedCounts::new(MAX_NAMED_HOSTS, 8)),
            token_fetch_counts: Mutex::new(FoldedCounts::new(MAX_NAMED_HOSTS, MAX_NAMED_SCOPES)),
            reloaded: Mutex::new(HashMap::new()),
        }
    }

    /// The content of a TLS file now: as read again, or as the settings read it.
    pub(crate) fn tls_content(&self, file: &super::settings::PemFile) -> Arc<[u8]> {
        crate::sync::lock(&self.reloaded)
            .get(&file.path)
            .cloned()
            .unwrap_or_else(|| file.pem.clone())
    }

    /// Use `changed` (path, content) for the clients built from now on: those built before
    /// are dropped (requests under way keep theirs).
    pub(crate) fn reload_tls(&self, changed: Vec<(PathBuf, Arc<[u8]>)>) {
        if changed.is_empty() {
            return;
        }
        // Lock order: clients, then reloaded (as `client` takes them).
        let mut clients = crate::sync::lock(&self.clients);
        crate::sync::lock(&self.reloaded).extend(changed);
        clients.clear();
    }

    /// The scheme that worked for a host reached HTTPS-then-HTTP, if one has.
    fn remembered(&self, registry: &str) -> Option<Scheme> {
        crate::sync::lock(&self.schemes).get(registry).copied()
    }

    fn remember(&self, registry: &str, scheme: Scheme) {
        let mut m = crate::sync::lock(&self.schemes);
        if m.len() >= MAX_SCHEMES && !m.contains_key(registry) {
            m.clear();
        }
        m.insert(registry.to_string(), scheme);
    }

    /// Token fetches so far: (realm, scope, count); realms and scopes past their bounds are
    /// `other`.
    pub(crate) fn token_fetches(&self) -> Vec<(String, String, u64)> {
        crate::sync::lock(&self.token_fetch_counts)
            .iter()
            .map(|(a, b, n)| (a.to_string(), b.to_string(), n))
            .collect()
    }

    /// Count one request to `url` by its answer.
    fn record(&self, url: &Url, answer: Result<StatusCode, ()>) {
        let class = match answer.map(|s| s.as_u16() / 100) {
            Ok(2) => "2xx",
            Ok(3) => "3xx",
            Ok(4) => "4xx",
            Ok(5) => "5xx",
            Ok(_) => "other",
            Err(()) => "error",
        };
        let host = host_of(url);
        crate::sync::lock(&self.requests).add(&host, class);
    }

    /// HTTP requests sent so far: (host, status class, count); hosts past the first
    /// [`MAX_NAMED_HOSTS`] are `other`.
    pub(crate) fn request_counts(&self) -> Vec<(String, String, u64)> {
        self.requests
            .lock()
            .map(|r| {
                r.iter()
                    .map(|(h, c, n)| (h.to_string(), c.to_string(), n))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The API endpoint for a registry name (Docker Hub's API lives elsewhere).
    pub(crate) fn api_host(registry: &str) -> &str {
        if registry == crate::reference::DOCKER_HUB {
            "registry-1.docker.io"
        } else {
            registry
        }
    }

    /// `scheme://host` of a registry's API: the scheme set for it, or for a host reached
    /// HTTPS-then-HTTP the one that worked (HTTPS until one has).
    pub(crate) fn base_url(&self, settings: &RegistrySettings, registry: &str) -> String {
        let scheme = match settings.scheme_choice(registry) {
            SchemeChoice::Http => "http",
            SchemeChoice::Https => "https",
            SchemeChoice::HttpsThenHttp => match self.remembered(registry) {
                Some(Scheme::Http) => "http",
                _ => "https",
            },
        };
        format!("{scheme}://{}", Self::api_host(registry))
    }

    /// The client for `url`: plain HTTP, or TLS with the settings of the URL's host (the
    /// registry's own when the URL is on its API host). Built on first use and kept: a
    /// plain-HTTP-only run never loads a CA store. Redirects are never followed by the client
    /// (see [`Remote::send`]).
    fn client(
        &self,
        settings: &RegistrySettings,
        registry: &str,
        url: &Url,
        probe: bool,
    ) -> Result<reqwest::Client, Cause> {
        let host = host_of(url);
        let host_key = if host == Self::api_host(registry) {
            registry
        } else {
            host.as_str()
        };
        let h = settings.host(host_key);
        let plain = url.scheme() == "http";
        let probe = probe && !plain;
        let transport = Transport {
            plain,
            probe,
            insecure: !plain && h.is_some_and(|h| h.insecure_skip_tls_verify || h.allow_insecure),
            ca: h
                .filter(|_| !plain)
                .and_then(|h| h.ca.as_ref().map(|f| f.path.clone())),
            cert: h
                .filter(|_| !plain)
                .and_then(|h| h.cert.as_ref().map(|f| f.path.clone())),
            key: h
                .filter(|_| !plain)
                .and_then(|h| h.key.as_ref().map(|f| f.path.clone())),
        };
        // The files' content is read under the clients' lock: a reload that swaps it in then
        // clears the clients after this one is built, never before (a client built from the
        // old content would otherwise be kept).
        let mut clients = crate::sync::lock(&self.clients);
        let tls = match h {
            _ if plain || probe => None,
            Some(h) => Some(TlsParts {
                insecure: h.insecure_skip_tls_verify || h.allow_insecure,
                ca: h.ca.as_ref().map(|f| (f.path.clone(), self.tls_content(f))),
                cert: h
                    .cert
                    .as_ref()
                    .map(|f| (f.path.clone(), self.tls_content(f))),
                key: h
                    .key
                    .as_ref()
                    .map(|f| (f.path.clone(), self.tls_content(f))),
            }),
            // No settings for the host: the platform's CA store.
            None => Some(TlsParts::default()),
        };
        let built = clients
            .entry(transport.clone())
            .or_insert_with(|| build_client(settings, tls.as_ref()));
        built.clone().map_err(Cause::Client)
    }

    /// Send a request for `to`'s repository to `url` (normally on the registry itself; a
    /// `Link` or `Location` the registry returned may point elsewhere), following redirects
    /// and answering one auth challenge per origin. `build` makes the request for a URL
    /// (again, for each hop and retry). Returns the final response whatever its status.
    pub(crate) async fn send(
        &self,
        to: &RepoAccess<'_>,
        url: &str,
        build: impl Fn(&reqwest::Client, Url) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, Cause> {
        let mut hop = self.first_hop(to, url)?;
        let scope = scope_for(to.repository, to.access);
        let mut redirects = 0;
        let mut challenged: Vec<String> = Vec::new();
        loop {
            let origin = origin_of(&hop.url);
            let own = origin == hop.home;
            // The registry's credentials go to its own origin only.
            let creds = if own { to.creds } else { None };
            let key = (origin.clone(), scope.clone(), CredentialId::of(creds));
            let token = self.cached_token(&key);
            let who = HopAuth { creds, key, token };
            let auth = self.auth_for(&who);
            let resp = match self.try_hop(to, &mut hop, own, &auth, &build).await? {
                Attempt::Answer(resp) => resp,
                Attempt::Again => continue,
            };
            if let Some(next) = redirect(&resp, &hop.url, &mut redirects)? {
                hop.url = next;
                continue;
            }
            if resp.status() != StatusCode::UNAUTHORIZED || challenged.contains(&origin) {
                return Ok(resp);
            }
            let Some(challenge) = resp
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
            else {
                return Ok(resp);
            };
            challenged.push(origin);
            // Plain-HTTP realms get credentials only for a registry configured plain.
            let plain_ok = own && hop.home_url.scheme() == "http";
            if !self.answer_challenge(to, &challenge, who, plain_ok).await? {
                return Ok(resp);
            }
        }
    }

    /// Where a request to `url` starts: checked against the registry's own URL (no
    /// downgrade), and moved to the scheme the registry is now reached on.
    fn first_hop(&self, to: &RepoAccess<'_>, url: &str) -> Result<Hop, Cause> {
        let (settings, registry) = (to.settings, to.registry);
        let home_url = parse_http_url("registry URL", &self.base_url(settings, registry))?;
        let mut url = parse_http_url("URL", url)?;
        check_no_downgrade("a registry-supplied URL", &home_url, &url)?;
        // HTTPS then plain HTTP (loopback and --allow-insecure-registry hosts): until a scheme
        // has worked for the host, a request to it on HTTPS that fails as if the host did not
        // speak TLS is sent again on plain HTTP, and the scheme that worked is remembered.
        let choice = settings.scheme_choice(registry);
        let probing = choice == SchemeChoice::HttpsThenHttp && self.remembered(registry).is_none();
        // An --allow-insecure-registry host's own client verifies nothing: it is its own probe,
        // and a certificate failure cannot come from it.
        let insecure_probe = settings.host(registry).is_some_and(|h| h.allow_insecure);
        // A URL built on the registry before its scheme was found (a retry's) goes where the
        // registry now is reached.
        if choice == SchemeChoice::HttpsThenHttp
            && url.scheme() != home_url.scheme()
            && url.host_str() == home_url.host_str()
            && url.port() == home_url.port()
            && url.set_scheme(home_url.scheme()).is_err()
        {
            return Err(Cause::BadUrl {
                what: "URL",
                target: url.to_string(),
            });
        }
        Ok(Hop {
            home: origin_of(&home_url),
            home_url,
            url,
            probing,
            insecure_probe,
        })
    }

    /// Send to the hop's URL once. While the scheme is not known, a verified host is first
    /// asked with a client that trusts nothing: a host without TLS answers as cheaply, and one
    /// with TLS fails on its certificate and is asked again with the real client
    /// ([`Attempt::Again`], as after switching to plain HTTP).
    async fn try_hop(
        &self,
        to: &RepoAccess<'_>,
        hop: &mut Hop,
        own: bool,
        auth: &Auth<'_>,
        build: &impl Fn(&reqwest::Client, Url) -> reqwest::RequestBuilder,
    ) -> Result<Attempt, Cause> {
        let probe_tls = hop.probing && own && hop.url.scheme() == "https";
        let client = self.client(
            to.settings,
            to.registry,
            &hop.url,
            probe_tls && !hop.insecure_probe,
        )?;
        let sent = auth.apply(build(&client, hop.url.clone())).send().await;
        self.record(&hop.url, sent.as_ref().map(|r| r.status()).map_err(|_| ()));
        let resp = match sent.map_err(|e| transport_cause(&hop.url, e)) {
            Ok(resp) => resp,
            Err(cause) if probe_tls && cause.is_certificate() && !hop.insecure_probe => {
                // It speaks TLS: from now on with the real client (its verdict counts).
                hop.probing = false;
                self.remember(to.registry, Scheme::Https);
                return Ok(Attempt::Again);
            }
            Err(cause) if probe_tls && cause.may_be_plain_http() => {
                if hop.url.set_scheme("http").is_err() || hop.home_url.set_scheme("http").is_err() {
                    return Err(cause);
                }
                hop.home = origin_of(&hop.home_url);
                return Ok(Attempt::Again);
            }
            Err(cause) => return Err(cause),
        };
        // Whatever answered, the scheme works (remembered only once it has).
        if hop.probing && own {
            hop.probing = false;
            let scheme = if hop.url.scheme() == "http" {
                Scheme::Http
            } else {
                Scheme::Https
            };
            self.remember(to.registry, scheme);
        }
        Ok(Attempt::Answer(resp))
    }
}

/// Where one request is: this hop's URL, the registry's own URL and origin (its scheme may
/// still change), and whether the scheme is still being probed.
struct Hop {
    url: Url,
    home_url: Url,
    home: String,
    probing: bool,
    /// An --allow-insecure-registry host: its own client verifies nothing and is its own probe.
    insecure_probe: bool,
}

/// What one send to a hop gave.
enum Attempt {
    Answer(reqwest::Response),
    /// Ask the same hop again (another scheme, or the real TLS client).
    Again,
}

/// The next hop of a redirect, checked (no downgrade, at most [`MAX_REDIRECTS`]); `None`
/// when `resp` is not one.
fn redirect(resp: &reqwest::Response, url: &Url, hops: &mut usize) -> Result<Option<Url>, Cause> {
    let Some(location) = resp
        .headers()
        .get(LOCATION)
        .filter(|_| resp.status().is_redirection())
    else {
        return Ok(None);
    };
    *hops += 1;
    if *hops > MAX_REDIRECTS {
        return Err(Cause::TooManyRedirects);
    }
    let next = resolve_url("redirect", url, location)?;
    check_no_downgrade("a redirect", url, &next)?;
    Ok(Some(next))
}

/// `host[:port]` of a URL, in the spelling settings use (no default port).
fn host_of(url: &Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        (None, _) => String::new(),
    }
}

impl Default for Remote {
    fn default() -> Self {
        Self::new()
    }
}

/// `scheme://host:port`, the unit credentials are bound to.
pub(crate) fn origin_of(url: &Url) -> String {
    url.origin().ascii_serialization()
}

fn parse_http_url(what: &'static str, s: &str) -> Result<Url, Cause> {
    Url::parse(s)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
        .ok_or_else(|| Cause::BadUrl {
            what,
            target: s.to_string(),
        })
}

/// Resolve a `Location` or `Link` target (absolute or relative) against the URL that sent it.
pub(crate) fn resolve_url(
    what: &'static str,
    base: &Url,
    target: &HeaderValue,
) -> Result<Url, Cause> {
    let text = target.to_str().map_err(|_| Cause::BadUrl {
        what,
        target: String::from_utf8_lossy(target.as_bytes()).into_owned(),
    })?;
    let joined = base.join(text.trim()).map_err(|_| Cause::BadUrl {
        what,
        target: text.to_string(),
    })?;
    parse_http_url(what, joined.as_str())
}

/// From HTTPS to plain HTTP is never followed: it would expose whatever the next hop gets.
fn check_no_downgrade(what: &'static str, from: &Url, to: &Url) -> Result<(), Cause> {
    if from.scheme() == "https" && to.scheme() != "https" {
        return Err(Cause::Downgrade {
            what,
            from: origin_of(from),
            to: origin_of(to),
        });
    }
    Ok(())
}

pub(crate) const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

#[cfg(test)]
mod tests {
    use super::*;

    /// A renewed certificate is put in force only with its own key (a helper's review: a
    /// certificate read with the old key, or one whose blocks do not parse, replaced the working
    /// pair).
    #[test]
    fn tls_contents_must_be_usable_together() {
        let pair = || {
            let key = rcgen::KeyPair::generate().unwrap();
            let params = rcgen::CertificateParams::new(vec!["client".into()]).unwrap();
            let cert = params.self_signed(&key).unwrap();
            (cert.pem().into_bytes(), key.serialize_pem().into_bytes())
        };
        let ((cert, key), (other_cert, _)) = (pair(), pair());
        assert_eq!(tls_usable(None, Some(&cert), Some(&key)), Ok(()));
        assert_eq!(tls_usable(Some(&cert), None, None), Ok(()));
        let mismatched = tls_usable(None, Some(&other_cert), Some(&key)).unwrap_err();
        assert!(mismatched.contains("do not form a pair"), "{mismatched}");
        let garbled = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(tls_usable(None, Some(garbled), Some(&key)).is_err());
        assert!(tls_usable(Some(garbled), None, None).is_err());
    }

    #[test]
    fn origins_and_downgrades() {
        let https = Url::parse("https://ghcr.io/v2/a/referrers/x").unwrap();
        let same = Url::parse("https://ghcr.io:443/other").unwrap();
        let http = Url::parse("http://ghcr.io/v2/").unwrap();
        assert_eq!(origin_of(&https), origin_of(&same));
        assert_ne!(origin_of(&https), origin_of(&http));
        assert_ne!(
            origin_of(&https),
            origin_of(&Url::parse("https://ghcr.io:8443/").unwrap())
        );
        let e = check_no_downgrade("a redirect", &https, &http).unwrap_err();
        assert!(e.to_string().contains("downgrade"), "{e}");
        assert!(check_no_downgrade("a redirect", &http, &https).is_ok());
        assert!(check_no_downgrade("a redirect", &https, &same).is_ok());
    }

    #[test]
    fn scopes_and_hosts() {
        assert_eq!(Remote::api_host("docker.io"), "registry-1.docker.io");
        let base = Url::parse("http://127.0.0.1:5000/v2/a/blobs/uploads/").unwrap();
        let loc = HeaderValue::from_static("/v2/a/blobs/uploads/123?_state=x");
        assert_eq!(
            resolve_url("upload", &base, &loc).unwrap().as_str(),
            "http://127.0.0.1:5000/v2/a/blobs/uploads/123?_state=x"
        );
        let other = HeaderValue::from_static("file:///etc/passwd");
        assert!(resolve_url("upload", &base, &other).is_err());
    }
}
