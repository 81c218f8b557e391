//! Token auth: what a request carries, answering a registry's challenge (Basic, or the Bearer
//! token flow against its realm: a GET with Basic credentials, or an OAuth2 refresh-token
//! POST), and the cache of tokens per (origin, scope, credential). Must not: choose where a
//! credential goes (`Remote::send` gives each hop only its origin's).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Url;
use serde::Deserialize;

use super::{Access, Cause, Remote, read_body_capped};
use crate::registry::RegistrySettings;
use crate::registry::credentials::{Credential, CredentialId, Secret};
use crate::registry::fold;

#[derive(Clone)]
pub(super) struct Token {
    pub value: String,
    pub expires: Instant,
}

/// (origin, scope, credential): what a bearer token is for, and who obtained it.
pub(super) type TokenKey = (String, String, CredentialId);

/// Tokens (and token locks, and origins that asked for Basic auth) kept at most; expired
/// tokens go first.
pub(super) const MAX_TOKENS: usize = 4096;

/// Longest bearer-token lifetime believed, whatever `expires_in` says.
const MAX_TOKEN_LIFE_SECS: u64 = 24 * 3600;

/// Largest token response read.
const MAX_TOKEN_RESPONSE_BYTES: usize = 64 << 10;

pub(super) fn scope_for(repository: &str, access: Access) -> String {
    match access {
        Access::Pull => format!("repository:{repository}:pull"),
        Access::Push => format!("repository:{repository}:pull,push"),
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// `Bearer realm="…",service="…",scope="…"` or `Basic realm="…"`.
pub(super) fn parse_challenge(header: &str) -> Result<Challenge, Cause> {
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

/// What a request carries.
pub(super) enum Auth<'a> {
    None,
    Basic(&'a str, &'a str),
    Bearer(&'a str),
}

impl Auth<'_> {
    pub(super) fn apply(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Auth::None => req,
            Auth::Basic(u, p) => req.basic_auth(u, Some(p)),
            Auth::Bearer(t) => req.bearer_auth(t),
        }
    }
}

/// Who one hop's request is sent as: the credential for its origin (none off the registry's
/// own origin), the key of its tokens, and the token cached for it.
pub(super) struct HopAuth<'a> {
    pub creds: Option<&'a Credential>,
    pub key: TokenKey,
    pub token: Option<Token>,
}

/// A token to ask a realm for: what for, and with which credential.
pub(super) struct TokenRequest<'a> {
    pub settings: &'a RegistrySettings,
    /// The registry whose challenge named the realm (its TLS settings apply to the realm).
    pub registry: &'a str,
    pub realm: &'a str,
    pub service: Option<&'a str>,
    pub scope: &'a str,
    /// The credential for the challenging origin (none for another origin).
    pub creds: Option<&'a Credential>,
    /// Whether a plain-HTTP realm may get the credential (a registry configured plain).
    pub plain_ok: bool,
}

impl Remote {
    /// What a hop's request carries: the cached token, else a bearer token given as such,
    /// else Basic credentials where the origin asked for them.
    pub(super) fn auth_for<'a>(&self, who: &'a HopAuth<'_>) -> Auth<'a> {
        match (&who.token, who.creds.map(|c| &c.secret)) {
            (Some(t), _) => Auth::Bearer(&t.value),
            // A bearer token given as such is sent as is, to its registry only.
            (None, Some(Secret::Bearer(t))) => Auth::Bearer(t),
            (None, Some(Secret::Basic { username, password }))
                if crate::sync::lock(&self.basic).contains(&who.key.0) =>
            {
                Auth::Basic(username, password)
            }
            _ => Auth::None,
        }
    }

    /// Answer a 401's challenge `header` for `who`: `Ok(true)` when the request is to be sent
    /// again (Basic credentials to send, a token obtained, or one another request obtained
    /// meanwhile), `Ok(false)` when there is nothing to answer with.
    pub(super) async fn answer_challenge(
        &self,
        to: &super::RepoAccess<'_>,
        header: &str,
        who: HopAuth<'_>,
        plain_ok: bool,
    ) -> Result<bool, Cause> {
        match parse_challenge(header)? {
            Challenge::Basic => {
                if who.creds.and_then(Credential::basic).is_none() {
                    return Ok(false);
                }
                let mut b = crate::sync::lock(&self.basic);
                fold::bound(&mut b, MAX_TOKENS);
                b.insert(who.key.0);
                Ok(true)
            }
            Challenge::Bearer { realm, service } => {
                if matches!(who.creds.map(|c| &c.secret), Some(Secret::Bearer(_))) {
                    // The given token was refused; there is nothing to exchange.
                    return Ok(false);
                }
                // One fetch per (origin, scope, credential) at a time: whoever waited uses
                // its token.
                let lock = self.token_fetch_lock(&who.key);
                let _fetching = lock.lock().await;
                let fresh = self
                    .cached_token(&who.key)
                    .filter(|t| who.token.as_ref().is_none_or(|old| old.value != t.value));
                if fresh.is_some() {
                    return Ok(true);
                }
                let token = self
                    .fetch_token(&TokenRequest {
                        settings: to.settings,
                        registry: to.registry,
                        realm: &realm,
                        service: service.as_deref(),
                        scope: &who.key.1,
                        creds: who.creds,
                        plain_ok,
                    })
                    .await?;
                self.store_token(who.key, token);
                Ok(true)
            }
        }
    }

    pub(super) fn cached_token(&self, key: &TokenKey) -> Option<Token> {
        crate::sync::lock(&self.tokens)
            .get(key)
            .cloned()
            .filter(|t| t.expires > Instant::now())
    }

    /// Keep a token; expired ones are dropped when the cache is full (and all of them if it
    /// is still full: they are fetched again on demand).
    pub(super) fn store_token(&self, key: TokenKey, token: Token) {
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

    pub(super) fn token_fetch_lock(&self, key: &TokenKey) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = crate::sync::lock(&self.token_fetches);
        if locks.len() >= MAX_TOKENS {
            // Locks nobody holds or waits for.
            locks.retain(|_, l| Arc::strong_count(l) > 1);
        }
        locks.entry(key.clone()).or_default().clone()
    }

    /// The token flow: GET the realm (with Basic credentials, if any), or POST an identity
    /// (refresh) token to it (the OAuth2 exchange Docker and ORAS do).
    pub(super) async fn fetch_token(&self, t: &TokenRequest<'_>) -> Result<Token, Cause> {
        let realm = t.realm;
        let realm_url = Url::parse(realm).map_err(|_| Cause::Challenge(realm.to_string()))?;
        match realm_url.scheme() {
            "https" => {}
            "http" if t.plain_ok || t.creds.is_none() => {}
            "http" => {
                return Err(Cause::InsecureRealm {
                    realm: realm.to_string(),
                });
            }
            _ => return Err(Cause::Challenge(realm.to_string())),
        }
        let client = self.client(t.settings, t.registry, &realm_url, false)?;
        let req = token_request(&client, &realm_url, t)?;
        let sent = req.send().await;
        self.record(
            &realm_url,
            sent.as_ref().map(|r| r.status()).map_err(|_| ()),
        );
        crate::sync::lock(&self.token_fetch_counts).add(realm, t.scope);
        let resp = sent.map_err(|e| super::transport_cause(&realm_url, e))?;
        if !resp.status().is_success() {
            return Err(Cause::Token {
                realm: realm.to_string(),
                status: resp.status().as_u16(),
            });
        }
        read_token(resp, realm).await
    }
}

/// The request to a realm: a refresh-token POST for an identity token, else a GET with the
/// scope (and Basic credentials, if those are what the credential is).
fn token_request(
    client: &reqwest::Client,
    realm_url: &Url,
    t: &TokenRequest<'_>,
) -> Result<reqwest::RequestBuilder, Cause> {
    Ok(match t.creds.map(|c| &c.secret) {
        Some(Secret::IdentityToken(refresh)) => {
            let mut form = Url::parse("form:").map_err(|_| Cause::Challenge(t.realm.into()))?;
            {
                let mut q = form.query_pairs_mut();
                q.append_pair("grant_type", "refresh_token");
                q.append_pair("refresh_token", refresh);
                q.append_pair("client_id", "ocigate");
                q.append_pair("scope", t.scope);
                if let Some(s) = t.service {
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
                q.append_pair("scope", t.scope);
                if let Some(s) = t.service {
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
    })
}

/// The token of a realm's answer (at most [`MAX_TOKEN_RESPONSE_BYTES`]), with its lifetime
/// clamped.
async fn read_token(resp: reqwest::Response, realm: &str) -> Result<Token, Cause> {
    #[derive(Deserialize)]
    struct TokenResponse {
        token: Option<String>,
        access_token: Option<String>,
        expires_in: Option<u64>,
    }
    let unusable = || Cause::TokenBody {
        realm: realm.to_string(),
    };
    let body = read_body_capped(resp, MAX_TOKEN_RESPONSE_BYTES)
        .await?
        .ok_or_else(unusable)?;
    let parsed: TokenResponse = serde_json::from_slice(&body).map_err(|_| unusable())?;
    let value = parsed
        .token
        .or(parsed.access_token)
        .filter(|t| !t.is_empty())
        .ok_or_else(unusable)?;
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
    fn scopes() {
        assert_eq!(scope_for("a/b", Access::Pull), "repository:a/b:pull");
        assert_eq!(scope_for("a/b", Access::Push), "repository:a/b:pull,push");
    }
}
