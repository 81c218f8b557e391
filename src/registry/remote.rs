//! The OCI distribution HTTP API, on reqwest (rustls with aws-lc-rs).
//!
//! Why not oci-client: measured on a cold `verify` (BENCHMARKS.md), its client construction
//! always builds a second, default reqwest client that loads the platform CA store (a fifth of
//! the process's CPU, even for plain-HTTP registries), and on anonymous registries it re-probes
//! `GET /v2/` before every request, doubling the load on the registry. It also has no per-host
//! CA or client-certificate settings, which ocigate's registry settings need. What is here is the
//! small part of the protocol the gate needs: challenge-driven auth (Bearer token flow with a
//! token cache, Basic), manifests and blobs with size caps, monolithic blob uploads.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::Url;
use reqwest::header::{HeaderValue, LOCATION, RETRY_AFTER, WWW_AUTHENTICATE};
use serde::Deserialize;

use super::RegistrySettings;
use super::credentials::{Credential, CredentialId, Secret};
use super::fold::{FoldedCounts, MAX_NAMED_HOSTS, MAX_NAMED_SCOPES};
use super::settings::{Scheme, SchemeChoice};

/// Why a request failed below the registry layer: the `source()` of a `RegistryError`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Cause {
    #[error("HTTP {status}{}{}", render_codes(codes), render_retry(*retry_after))]
    Status {
        status: u16,
        codes: Vec<String>,
        /// What `Retry-After` asked for (429, 503), in seconds.
        retry_after: Option<u32>,
    },
    #[error("transport failure")]
    Transport(#[source] reqwest::Error),
    #[error(
        "{host} answered a TLS handshake in plain HTTP: if it serves plain HTTP, say so with \
         --registry-plain-http {host} (or OCIGATE_REGISTRY_*_PLAIN_HTTP=true)"
    )]
    PlainHttpPeer {
        host: String,
        #[source]
        source: reqwest::Error,
    },
    #[error(
        "the TLS certificate of {host} {problem}: give its CA with --registry-ca-file \
         {host}=FILE, or accept it unverified with --allow-insecure-registry (or \
         --registry-insecure-skip-tls-verify {host})"
    )]
    Certificate {
        host: String,
        /// What is wrong with it (`is issued by an unknown certificate authority`).
        problem: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("token service {realm} answered HTTP {status}")]
    Token { realm: String, status: u16 },
    #[error("token service {realm} sent no usable token")]
    TokenBody { realm: String },
    #[error("authentication challenge not understood: {0:?}")]
    Challenge(String),
    #[error("refusing to send credentials to token service {realm} over plain HTTP")]
    InsecureRealm { realm: String },
    #[error("upload session has no usable Location header")]
    Upload,
    #[error("refusing to follow {what} from {from} to {to}: a downgrade from HTTPS to plain HTTP")]
    Downgrade {
        what: &'static str,
        from: String,
        to: String,
    },
    #[error("{what} {target:?} is not a usable http(s) URL")]
    BadUrl { what: &'static str, target: String },
    #[error("more than {MAX_REDIRECTS} redirects")]
    TooManyRedirects,
    #[error("the HTTP client could not be built: {0}")]
    Client(String),
}

impl Cause {
    pub fn is_transport(&self) -> bool {
        matches!(
            self,
            Cause::Transport(_) | Cause::PlainHttpPeer { .. } | Cause::Certificate { .. }
        )
    }

    /// A TLS certificate that was not accepted: asking again does not change it.
    pub fn is_certificate(&self) -> bool {
        matches!(self, Cause::Certificate { .. })
    }

    /// Whether a failed HTTPS request says the host may speak plain HTTP: it answered the TLS
    /// handshake in plain HTTP, or the connection failed other than on a certificate or a
    /// timeout (go-containerregistry falls back on any error; a certificate shows a TLS
    /// server, and a timeout would only be waited for twice).
    fn may_be_plain_http(&self) -> bool {
        match self {
            Cause::PlainHttpPeer { .. } => true,
            Cause::Transport(e) => !e.is_timeout(),
            _ => false,
        }
    }

    /// A transport failure that is a timeout (no answer in time), not unreachability.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Cause::Transport(e) if e.is_timeout())
    }

    /// What `Retry-After` asked for, in seconds.
    pub fn retry_after(&self) -> Option<u32> {
        match self {
            Cause::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
    pub fn status(&self) -> Option<u16> {
        match self {
            Cause::Status { status, .. } | Cause::Token { status, .. } => Some(*status),
            _ => None,
        }
    }
}

fn render_retry(after: Option<u32>) -> String {
    after.map_or_else(String::new, |s| format!(", asked to retry after {s} s"))
}

fn render_codes(codes: &[String]) -> String {
    if codes.is_empty() {
        String::new()
    } else {
        format!(" ({})", codes.join("; "))
    }
}

/// What a request needs the token to allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Pull,
    Push,
}

#[derive(Clone)]
struct Token {
    value: String,
    expires: Instant,
}

/// Redirects followed for one request (each hop is checked: no downgrade, credentials only to
/// the registry's own origin).
pub const MAX_REDIRECTS: usize = 5;

/// One client for all remote registries of a run (shared across concurrent requests).
///
/// Where credentials go: a registry's credentials are attached only to requests whose URL has
/// the registry's own origin (scheme, host, port), and to the token realm that origin names in
/// its own challenge. Redirects are followed here, not by reqwest, so that each hop is checked:
/// a hop to another origin is sent without credentials, and a challenge from it is answered
/// anonymously; a token is sent back only to the origin whose challenge obtained it.
pub struct Remote {
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
}

/// (origin, scope, credential): what a bearer token is for, and who obtained it.
type TokenKey = (String, String, CredentialId);

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

/// Tokens (and token locks) kept at most; expired ones go first.
const MAX_TOKENS: usize = 4096;

/// Hosts whose working scheme is remembered at most (all are forgotten when it is full).
const MAX_SCHEMES: usize = 1024;

impl Remote {
    pub fn new() -> Self {
        Remote {
            clients: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
            token_fetches: Mutex::new(HashMap::new()),
            basic: Mutex::new(HashSet::new()),
            schemes: Mutex::new(HashMap::new()),
            requests: Mutex::new(FoldedCounts::new(MAX_NAMED_HOSTS, 8)),
            token_fetch_counts: Mutex::new(FoldedCounts::new(MAX_NAMED_HOSTS, MAX_NAMED_SCOPES)),
        }
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
    pub fn token_fetches(&self) -> Vec<(String, String, u64)> {
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
    pub fn request_counts(&self) -> Vec<(String, String, u64)> {
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
    pub fn api_host(registry: &str) -> &str {
        if registry == crate::reference::DOCKER_HUB {
            "registry-1.docker.io"
        } else {
            registry
        }
    }

    /// `scheme://host` of a registry's API: the scheme set for it, or for a host reached
    /// HTTPS-then-HTTP the one that worked (HTTPS until one has).
    pub fn base_url(&self, settings: &RegistrySettings, registry: &str) -> String {
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
        let mut clients = crate::sync::lock(&self.clients);
        let built = clients.entry(transport.clone()).or_insert_with(|| {
            let mut b = reqwest::Client::builder()
                .user_agent(concat!("ocigate/", env!("CARGO_PKG_VERSION")))
                .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
                .read_timeout(settings.timeout)
                // No more idle connections kept per host than may be busy with it at once.
                .pool_max_idle_per_host(settings.max_connections_per_host)
                .redirect(reqwest::redirect::Policy::none());
            if plain || probe {
                // This client speaks plain HTTP, or probes TLS: it trusts no TLS server.
                b = b.tls_certs_only(Vec::<reqwest::Certificate>::new());
            } else if let Some(h) = h {
                let insecure = h.insecure_skip_tls_verify || h.allow_insecure;
                if insecure {
                    // Nothing is verified: no CA store to load.
                    b = b.tls_certs_only(Vec::<reqwest::Certificate>::new());
                } else if let Some(ca) = &h.ca {
                    let certs = reqwest::Certificate::from_pem_bundle(&ca.pem).map_err(|e| {
                        format!("CA file {}: {}", ca.path.display(), crate::error_chain(&e))
                    })?;
                    b = b.tls_certs_merge(certs);
                }
                if let (Some(cert), Some(key)) = (&h.cert, &h.key) {
                    let mut pem = cert.pem.to_vec();
                    pem.push(b'\n');
                    pem.extend_from_slice(&key.pem);
                    let id = reqwest::Identity::from_pem(&pem).map_err(|e| {
                        format!(
                            "client certificate {} with key {}: {}",
                            cert.path.display(),
                            key.path.display(),
                            crate::error_chain(&e)
                        )
                    })?;
                    b = b.identity(id);
                }
                if insecure {
                    b = b.tls_danger_accept_invalid_certs(true);
                }
            }
            b.build().map_err(|e| crate::error_chain(&e))
        });
        built.clone().map_err(Cause::Client)
    }

    /// Send a request for `repository` on `registry` to `url` (normally on the registry itself;
    /// a `Link` or `Location` the registry returned may point elsewhere), following redirects
    /// and answering one auth challenge per origin. `build` makes the request for a URL (again,
    /// for each hop and retry). Returns the final response whatever its status.
    #[allow(clippy::too_many_arguments)]
    pub async fn send(
        &self,
        settings: &RegistrySettings,
        creds: Option<&Credential>,
        registry: &str,
        repository: &str,
        access: Access,
        url: &str,
        build: impl Fn(&reqwest::Client, Url) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, Cause> {
        let mut home_url = parse_http_url("registry URL", &self.base_url(settings, registry))?;
        let mut home = origin_of(&home_url);
        let mut url = parse_http_url("URL", url)?;
        check_no_downgrade("a registry-supplied URL", &home_url, &url)?;
        // HTTPS then plain HTTP (loopback and --allow-insecure-registry hosts): until a scheme
        // has worked for the host, a request to it on HTTPS that fails as if the host did not
        // speak TLS is sent again on plain HTTP, and the scheme that worked is remembered.
        let choice = settings.scheme_choice(registry);
        let mut probing =
            choice == SchemeChoice::HttpsThenHttp && self.remembered(registry).is_none();
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
        let scope = scope_for(repository, access);
        let mut hops = 0;
        let mut challenged: Vec<String> = Vec::new();
        loop {
            let origin = origin_of(&url);
            let own = origin == home;
            // The registry's credentials go to its own origin only.
            let creds_here = if own { creds } else { None };
            let key = (origin.clone(), scope.clone(), CredentialId::of(creds_here));
            let token = self.cached_token(&key);
            let auth = match (&token, creds_here.map(|c| &c.secret)) {
                (Some(t), _) => Auth::Bearer(&t.value),
                // A bearer token given as such is sent as is, to its registry only.
                (None, Some(Secret::Bearer(t))) => Auth::Bearer(t),
                (None, Some(Secret::Basic { username, password }))
                    if crate::sync::lock(&self.basic).contains(&key.0) =>
                {
                    Auth::Basic(username, password)
                }
                _ => Auth::None,
            };
            // While the scheme is not known, a verified host is first asked with a client that
            // trusts nothing: a host without TLS answers as cheaply, and one with TLS fails on
            // its certificate and is asked again with the real client.
            let probe_tls = probing && own && url.scheme() == "https";
            let client = self.client(settings, registry, &url, probe_tls && !insecure_probe)?;
            let sent = auth.apply(build(&client, url.clone())).send().await;
            self.record(&url, sent.as_ref().map(|r| r.status()).map_err(|_| ()));
            let resp = match sent.map_err(|e| transport_cause(&url, e)) {
                Ok(resp) => resp,
                Err(cause) if probe_tls && cause.is_certificate() && !insecure_probe => {
                    // It speaks TLS: from now on with the real client (its verdict counts).
                    probing = false;
                    self.remember(registry, Scheme::Https);
                    continue;
                }
                Err(cause) if probe_tls && cause.may_be_plain_http() => {
                    if url.set_scheme("http").is_err() || home_url.set_scheme("http").is_err() {
                        return Err(cause);
                    }
                    home = origin_of(&home_url);
                    continue;
                }
                Err(cause) => return Err(cause),
            };
            // Whatever answered, the scheme works (remembered only once it has).
            if probing && own {
                probing = false;
                let scheme = if url.scheme() == "http" {
                    Scheme::Http
                } else {
                    Scheme::Https
                };
                self.remember(registry, scheme);
            }
            let status = resp.status();
            if status.is_redirection()
                && let Some(location) = resp.headers().get(LOCATION)
            {
                hops += 1;
                if hops > MAX_REDIRECTS {
                    return Err(Cause::TooManyRedirects);
                }
                let next = resolve_url("redirect", &url, location)?;
                check_no_downgrade("a redirect", &url, &next)?;
                url = next;
                continue;
            }
            if status != StatusCode::UNAUTHORIZED || challenged.contains(&origin) {
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
            match parse_challenge(&challenge)? {
                Challenge::Basic => {
                    if creds_here.and_then(Credential::basic).is_none() {
                        return Ok(resp);
                    }
                    let mut b = crate::sync::lock(&self.basic);
                    super::fold::bound(&mut b, MAX_TOKENS);
                    b.insert(key.0);
                }
                Challenge::Bearer { realm, service } => {
                    if matches!(creds_here.map(|c| &c.secret), Some(Secret::Bearer(_))) {
                        // The given token was refused; there is nothing to exchange.
                        return Ok(resp);
                    }
                    // One fetch per (origin, scope, credential) at a time: whoever waited uses
                    // its token.
                    let lock = self.token_fetch_lock(&key);
                    let _fetching = lock.lock().await;
                    let fresh = self
                        .cached_token(&key)
                        .filter(|t| token.as_ref().is_none_or(|old| old.value != t.value));
                    if fresh.is_some() {
                        continue;
                    }
                    // Plain-HTTP realms get credentials only for a registry configured plain.
                    let plain_ok = own && home_url.scheme() == "http";
                    let token = self
                        .fetch_token(
                            settings,
                            registry,
                            &realm,
                            service.as_deref(),
                            &scope,
                            creds_here,
                            plain_ok,
                        )
                        .await?;
                    self.store_token(key, token);
                }
            }
        }
    }

    fn cached_token(&self, key: &TokenKey) -> Option<Token> {
        crate::sync::lock(&self.tokens)
            .get(key)
            .cloned()
            .filter(|t| t.expires > Instant::now())
    }

    /// Keep a token; expired ones are dropped when the cache is full (and all of them if it
    /// is still full: they are fetched again on demand).
    fn store_token(&self, key: TokenKey, token: Token) {
        let mut t = crate::sync::lock(&self.tokens);
        if t.len() >= MAX_TOKENS {
            let now = Instant::now();
            t.retain(|_, v| v.expires > now);
            if t.len() >= MAX_TOKENS {
                t.clear();
            }
        }
        t.insert(key, token);
    }

    fn token_fetch_lock(&self, key: &TokenKey) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = crate::sync::lock(&self.token_fetches);
        if locks.len() >= MAX_TOKENS {
            // Locks nobody holds or waits for.
            locks.retain(|_, l| Arc::strong_count(l) > 1);
        }
        locks.entry(key.clone()).or_default().clone()
    }

    /// The token flow: GET the realm (with Basic credentials, if any), or POST an identity
    /// (refresh) token to it (the OAuth2 exchange Docker and ORAS do).
    #[allow(clippy::too_many_arguments)]
    async fn fetch_token(
        &self,
        settings: &RegistrySettings,
        registry: &str,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        creds: Option<&Credential>,
        plain_ok: bool,
    ) -> Result<Token, Cause> {
        let realm_url =
            reqwest::Url::parse(realm).map_err(|_| Cause::Challenge(realm.to_string()))?;
        match realm_url.scheme() {
            "https" => {}
            "http" if plain_ok || creds.is_none() => {}
            "http" => {
                return Err(Cause::InsecureRealm {
                    realm: realm.to_string(),
                });
            }
            _ => return Err(Cause::Challenge(realm.to_string())),
        }
        let client = self.client(settings, registry, &realm_url, false)?;
        let req = match creds.map(|c| &c.secret) {
            Some(Secret::IdentityToken(refresh)) => {
                let mut form = Url::parse("form:").map_err(|_| Cause::Challenge(realm.into()))?;
                {
                    let mut q = form.query_pairs_mut();
                    q.append_pair("grant_type", "refresh_token");
                    q.append_pair("refresh_token", refresh);
                    q.append_pair("client_id", "ocigate");
                    q.append_pair("scope", scope);
                    if let Some(s) = service {
                        q.append_pair("service", s);
                    }
                }
                client
                    .post(realm_url.clone())
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded",
                    )
                    .body(form.query().unwrap_or_default().to_string())
            }
            other => {
                let mut url = realm_url.clone();
                {
                    let mut q = url.query_pairs_mut();
                    q.append_pair("scope", scope);
                    if let Some(s) = service {
                        q.append_pair("service", s);
                    }
                }
                let req = client.get(url);
                match other {
                    Some(Secret::Basic { username, password }) => {
                        req.basic_auth(username, Some(password))
                    }
                    _ => req,
                }
            }
        };
        let sent = req.send().await;
        self.record(
            &realm_url,
            sent.as_ref().map(|r| r.status()).map_err(|_| ()),
        );
        crate::sync::lock(&self.token_fetch_counts).add(realm, scope);
        let resp = sent.map_err(|e| transport_cause(&realm_url, e))?;
        if !resp.status().is_success() {
            return Err(Cause::Token {
                realm: realm.to_string(),
                status: resp.status().as_u16(),
            });
        }
        #[derive(Deserialize)]
        struct TokenResponse {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let body = read_capped(resp, 64 << 10)
            .await?
            .ok_or_else(|| Cause::TokenBody {
                realm: realm.to_string(),
            })?;
        let parsed: TokenResponse =
            serde_json::from_slice(&body).map_err(|_| Cause::TokenBody {
                realm: realm.to_string(),
            })?;
        let value = parsed
            .token
            .or(parsed.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Cause::TokenBody {
                realm: realm.to_string(),
            })?;
        // Distribution's default lifetime is 60 s; renew a little early. A registry controls
        // this number: clamp it (a day at most) so that no value can overflow the clock.
        let life = parsed
            .expires_in
            .unwrap_or(60)
            .clamp(10, MAX_TOKEN_LIFE_SECS);
        let now = Instant::now();
        Ok(Token {
            value,
            expires: now
                .checked_add(Duration::from_secs(life - 5))
                .unwrap_or(now),
        })
    }
}

/// What a request carries.
enum Auth<'a> {
    None,
    Basic(&'a str, &'a str),
    Bearer(&'a str),
}

impl Auth<'_> {
    fn apply(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Auth::None => req,
            Auth::Basic(u, p) => req.basic_auth(u, Some(p)),
            Auth::Bearer(t) => req.bearer_auth(t),
        }
    }
}

/// `host[:port]` of a URL, in the spelling settings use (no default port).
fn host_of(url: &Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        (None, _) => String::new(),
    }
}

/// A transport failure; a TLS handshake that met plain HTTP says so, and so does a
/// certificate that was not accepted.
fn transport_cause(url: &Url, e: reqwest::Error) -> Cause {
    if url.scheme() == "https" && format!("{e:?}").contains("InvalidContentType") {
        return Cause::PlainHttpPeer {
            host: host_of(url),
            source: e,
        };
    }
    if let Some(problem) = certificate_problem(&e) {
        return Cause::Certificate {
            host: host_of(url),
            problem,
            source: e,
        };
    }
    Cause::Transport(e)
}

/// What rustls found wrong with the server's certificate, if that is why `e` failed.
fn certificate_problem(e: &reqwest::Error) -> Option<String> {
    use tokio_rustls::rustls::{CertificateError as C, Error as TlsError};
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        if let Some(TlsError::InvalidCertificate(c)) = err.downcast_ref::<TlsError>() {
            return Some(match c {
                C::UnknownIssuer => "is issued by an unknown certificate authority".to_string(),
                C::Expired | C::ExpiredContext { .. } => "has expired".to_string(),
                C::NotValidYet | C::NotValidYetContext { .. } => "is not valid yet".to_string(),
                C::NotValidForName | C::NotValidForNameContext { .. } => {
                    "is not valid for this host name".to_string()
                }
                C::Revoked => "is revoked".to_string(),
                // A self-signed certificate (webpki: CaUsedAsEndEntity) is one of these.
                C::Other(other) => format!("is not trusted ({other})"),
                _ => "was not accepted".to_string(),
            });
        }
        // An io::Error's source() skips the error it wraps: look inside it.
        next = match err.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    None
}

impl Default for Remote {
    fn default() -> Self {
        Self::new()
    }
}

fn scope_for(repository: &str, access: Access) -> String {
    match access {
        Access::Pull => format!("repository:{repository}:pull"),
        Access::Push => format!("repository:{repository}:pull,push"),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// `Bearer realm="…",service="…",scope="…"` or `Basic realm="…"`.
fn parse_challenge(header: &str) -> Result<Challenge, Cause> {
    let (scheme, rest) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Ok(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Cause::Challenge(header.to_string()));
    }
    let mut params: BTreeMap<String, String> = BTreeMap::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let Some((k, after)) = s.split_once('=') else {
            break;
        };
        let k = k.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (v, tail) = if let Some(q) = after.strip_prefix('"') {
            match q.find('"') {
                Some(end) => (&q[..end], &q[end + 1..]),
                None => return Err(Cause::Challenge(header.to_string())),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        params.insert(k, v.to_string());
        s = tail.trim_start().trim_start_matches(',').trim_start();
    }
    let realm = params
        .remove("realm")
        .ok_or_else(|| Cause::Challenge(header.to_string()))?;
    Ok(Challenge::Bearer {
        realm,
        service: params.remove("service"),
    })
}

/// Read a body, refusing more than `limit` bytes: `Ok(None)` when it is larger.
pub async fn read_capped(
    mut resp: reqwest::Response,
    limit: usize,
) -> Result<Option<Vec<u8>>, Cause> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Ok(None);
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(Cause::Transport)? {
        if out.len() + chunk.len() > limit {
            return Ok(None);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Some(out))
}

/// The OCI error codes and messages of an error response, for the cause's Display.
pub async fn status_cause(resp: reqwest::Response) -> Cause {
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after)
        .map(|s| u32::try_from(s).unwrap_or(u32::MAX));
    #[derive(Deserialize)]
    struct Envelope {
        #[serde(default)]
        errors: Vec<OciError>,
    }
    #[derive(Deserialize)]
    struct OciError {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let codes = match read_capped(resp, 16 << 10).await {
        Ok(Some(body)) => serde_json::from_slice::<Envelope>(&body)
            .map(|e| {
                e.errors
                    .into_iter()
                    .take(8)
                    .map(|e| {
                        // Registry text: escaped for terminals and cut to a readable length.
                        let text = if e.message.is_empty() {
                            e.code
                        } else {
                            format!("{}: {}", e.code, e.message)
                        };
                        let mut shown: String =
                            crate::escape_text(&text).chars().take(200).collect();
                        if shown.len() < text.len() && text.chars().count() > 200 {
                            shown.push('…');
                        }
                        shown
                    })
                    .collect()
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    Cause::Status {
        status,
        codes,
        retry_after,
    }
}

/// `Retry-After`: delta-seconds, or an HTTP date (seconds from now, 0 if past). A registry
/// controls this number; the caller bounds the wait by its deadline.
pub fn parse_retry_after(v: &str) -> Option<u64> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(secs);
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .map_or(0, |d| d.as_secs()),
    )
}

/// Longest bearer-token lifetime believed, whatever `expires_in` says.
const MAX_TOKEN_LIFE_SECS: u64 = 24 * 3600;

/// `scheme://host:port`, the unit credentials are bound to.
pub fn origin_of(url: &Url) -> String {
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
pub fn resolve_url(what: &'static str, base: &Url, target: &HeaderValue) -> Result<Url, Cause> {
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

pub const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn registry_error_text_is_escaped_and_cut() {
        let long = "x".repeat(500);
        let body = format!(
            r#"{{"errors":[{{"code":"DENIED","message":"\u001b[2J\u001b[32mALLOW"}},{{"code":"{long}"}}]}}"#
        );
        let resp = reqwest::Response::from(
            hyper::Response::builder()
                .status(403)
                .header("Retry-After", "7")
                .body(body)
                .unwrap(),
        );
        let cause = status_cause(resp).await;
        let text = cause.to_string();
        assert!(!text.contains('\x1b'), "{text:?}");
        assert!(text.contains("DENIED: \\u{1b}[2J"), "{text}");
        assert!(text.contains('…') && text.len() < 400, "{text}");
        assert_eq!(cause.retry_after(), Some(7));
    }

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge("Basic realm=\"x\"").unwrap(),
            Challenge::Basic
        );
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull""#
            )
            .unwrap(),
            Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into())
            }
        );
        assert_eq!(
            parse_challenge("bearer realm=https://r.io/t, service=r.io").unwrap(),
            Challenge::Bearer {
                realm: "https://r.io/t".into(),
                service: Some("r.io".into())
            }
        );
        assert!(parse_challenge("Negotiate abc").is_err());
        assert!(parse_challenge("Bearer service=\"x\"").is_err());
        assert!(parse_challenge("Bearer realm=\"unterminated").is_err());
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
        assert_eq!(scope_for("a/b", Access::Pull), "repository:a/b:pull");
        assert_eq!(scope_for("a/b", Access::Push), "repository:a/b:pull,push");
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
