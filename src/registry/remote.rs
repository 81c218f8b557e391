//! The OCI distribution HTTP API, on reqwest (rustls with aws-lc-rs).
//!
//! Why not oci-client: measured on a cold `verify` (BENCHMARKS.md), its client construction
//! always builds a second, default reqwest client that loads the platform CA store (a fifth of
//! the process's CPU, even for plain-HTTP registries), and on anonymous registries it re-probes
//! `GET /v2/` before every request, doubling the load on the registry. It also has no per-host
//! CA or client-certificate settings, which DESIGN.md section 2 requires. What is here is the
//! small part of the protocol the gate needs: challenge-driven auth (Bearer token flow with a
//! token cache, Basic), manifests and blobs with size caps, monolithic blob uploads.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::Url;
use reqwest::header::{HeaderValue, LOCATION, WWW_AUTHENTICATE};
use serde::Deserialize;

use super::RegistrySettings;

/// Why a request failed below the registry layer: the `source()` of a `RegistryError`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Cause {
    #[error("HTTP {status}{}", render_codes(codes))]
    Status { status: u16, codes: Vec<String> },
    #[error("transport failure")]
    Transport(#[source] reqwest::Error),
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
        matches!(self, Cause::Transport(_))
    }
    pub fn status(&self) -> Option<u16> {
        match self {
            Cause::Status { status, .. } | Cause::Token { status, .. } => Some(*status),
            _ => None,
        }
    }
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
    tls: OnceLock<Result<reqwest::Client, String>>,
    plain: OnceLock<Result<reqwest::Client, String>>,
    /// (origin, scope) -> bearer token obtained in answer to that origin's challenge.
    tokens: Mutex<HashMap<(String, String), Token>>,
    /// Origins that asked for Basic auth.
    basic: Mutex<HashSet<String>>,
    /// HTTP requests sent, by host and status class (`2xx` … `5xx`, or `error`).
    requests: Mutex<BTreeMap<(String, &'static str), u64>>,
}

impl Remote {
    pub fn new() -> Self {
        Remote {
            tls: OnceLock::new(),
            plain: OnceLock::new(),
            tokens: Mutex::new(HashMap::new()),
            basic: Mutex::new(HashSet::new()),
            requests: Mutex::new(BTreeMap::new()),
        }
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
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => String::new(),
        };
        if let Ok(mut r) = self.requests.lock() {
            *r.entry((host, class)).or_insert(0) += 1;
        }
    }

    /// HTTP requests sent so far: (host, status class, count).
    pub fn request_counts(&self) -> Vec<(String, &'static str, u64)> {
        self.requests
            .lock()
            .map(|r| r.iter().map(|((h, c), n)| (h.clone(), *c, *n)).collect())
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

    fn is_plain(settings: &RegistrySettings, registry: &str) -> bool {
        settings.plain_http.iter().any(|h| h == registry)
    }

    pub fn base_url(settings: &RegistrySettings, registry: &str) -> String {
        let scheme = if Self::is_plain(settings, registry) {
            "http"
        } else {
            "https"
        };
        format!("{scheme}://{}", Self::api_host(registry))
    }

    /// HTTP clients are built on first use, one per URL scheme: a plain-HTTP-only run never
    /// loads a CA store. Redirects are never followed by the client (see [`Remote::send`]).
    fn client(&self, settings: &RegistrySettings, url: &Url) -> Result<&reqwest::Client, Cause> {
        let plain = url.scheme() == "http";
        let cell = if plain { &self.plain } else { &self.tls };
        let built = cell.get_or_init(|| {
            let mut b = reqwest::Client::builder()
                .user_agent(concat!("ocigate/", env!("CARGO_PKG_VERSION")))
                .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
                .read_timeout(settings.timeout)
                .redirect(reqwest::redirect::Policy::none());
            if plain {
                // This client only speaks plain HTTP; it trusts no TLS server at all.
                b = b.tls_certs_only(Vec::<reqwest::Certificate>::new());
            }
            b.build().map_err(|e| e.to_string())
        });
        built.as_ref().map_err(|e| Cause::Client(e.clone()))
    }

    /// Send a request for `repository` on `registry` to `url` (normally on the registry itself;
    /// a `Link` or `Location` the registry returned may point elsewhere), following redirects
    /// and answering one auth challenge per origin. `build` makes the request for a URL (again,
    /// for each hop and retry). Returns the final response whatever its status.
    #[allow(clippy::too_many_arguments)]
    pub async fn send(
        &self,
        settings: &RegistrySettings,
        creds: Option<(&str, &str)>,
        registry: &str,
        repository: &str,
        access: Access,
        url: &str,
        build: impl Fn(&reqwest::Client, Url) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, Cause> {
        let home_url = parse_http_url("registry URL", &Self::base_url(settings, registry))?;
        let home = origin_of(&home_url);
        let mut url = parse_http_url("URL", url)?;
        check_no_downgrade("a registry-supplied URL", &home_url, &url)?;
        let scope = scope_for(repository, access);
        let mut hops = 0;
        let mut challenged: Vec<String> = Vec::new();
        loop {
            let origin = origin_of(&url);
            let own = origin == home;
            // The registry's credentials go to its own origin only.
            let creds_here = if own { creds } else { None };
            let key = (origin.clone(), scope.clone());
            let token = self
                .tokens
                .lock()
                .ok()
                .and_then(|t| t.get(&key).cloned())
                .filter(|t| t.expires > Instant::now());
            let basic =
                creds_here.filter(|_| self.basic.lock().ok().is_some_and(|b| b.contains(&key.0)));
            let client = self.client(settings, &url)?;
            let sent = with_auth(build(client, url.clone()), token.as_ref(), basic)
                .send()
                .await;
            self.record(&url, sent.as_ref().map(|r| r.status()).map_err(|_| ()));
            let resp = sent.map_err(Cause::Transport)?;
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
                    if creds_here.is_none() {
                        return Ok(resp);
                    }
                    if let Ok(mut b) = self.basic.lock() {
                        b.insert(key.0);
                    }
                }
                Challenge::Bearer { realm, service } => {
                    // Plain-HTTP realms get credentials only for a registry configured plain.
                    let plain_ok = own && Self::is_plain(settings, registry);
                    let token = self
                        .fetch_token(
                            settings,
                            &realm,
                            service.as_deref(),
                            &scope,
                            creds_here,
                            plain_ok,
                        )
                        .await?;
                    if let Ok(mut t) = self.tokens.lock() {
                        t.insert(key, token);
                    }
                }
            }
        }
    }

    /// The token flow: GET the realm (with the credentials, if any, as Basic auth).
    async fn fetch_token(
        &self,
        settings: &RegistrySettings,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        creds: Option<(&str, &str)>,
        plain_ok: bool,
    ) -> Result<Token, Cause> {
        let mut realm_url =
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
        {
            let mut q = realm_url.query_pairs_mut();
            q.append_pair("scope", scope);
            if let Some(s) = service {
                q.append_pair("service", s);
            }
        }
        let client = self.client(settings, &realm_url)?;
        let mut req = client.get(realm_url.clone());
        if let Some((u, p)) = creds {
            req = req.basic_auth(u, Some(p));
        }
        let sent = req.send().await;
        self.record(
            &realm_url,
            sent.as_ref().map(|r| r.status()).map_err(|_| ()),
        );
        let resp = sent.map_err(Cause::Transport)?;
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

fn with_auth(
    req: reqwest::RequestBuilder,
    token: Option<&Token>,
    basic: Option<(&str, &str)>,
) -> reqwest::RequestBuilder {
    match (token, basic) {
        (Some(t), _) => req.bearer_auth(&t.value),
        (None, Some((u, p))) => req.basic_auth(u, Some(p)),
        (None, None) => req,
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
                    .map(|e| {
                        if e.message.is_empty() {
                            e.code
                        } else {
                            format!("{}: {}", e.code, e.message)
                        }
                    })
                    .collect()
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    Cause::Status { status, codes }
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
