//! How the [`Registry`] makes one request to a remote registry: its credentials, the host's
//! gate, the deadline, bounded retries, and reading a body within its limits and the fetch
//! budget. Must not: build URLs of the API or know what a manifest is.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_TYPE, RETRY_AFTER};

use super::budget::FetchBudget;
use super::credentials::{self, Credential, CredentialError};
use super::error::{Op, RegistryError, RegistryErrorKind as Kind, Sent, Store};
use super::remote::{
    ACCEPT_MANIFESTS, Access, Cause, RepoAccess, parse_retry_after, read_body_capped, status_cause,
};
use super::request_scope::{pace_turn, remaining_deadline, request_credentials};
use super::settings::CredentialOrHelper;
use super::{Registry, gate};

/// One operation on a remote registry: where its requests go and what its errors name.
#[derive(Debug, Clone, Copy)]
pub(super) struct Call<'a> {
    pub registry: &'a str,
    pub repository: &'a str,
    pub op: Op,
    pub target: &'a str,
}

impl Call<'_> {
    /// This operation's error of `kind`.
    pub(crate) fn error(&self, kind: Kind) -> RegistryError {
        RegistryError::new(
            Store::Registry(self.registry.to_string()),
            self.op,
            self.target,
            kind,
        )
    }

    /// This operation's error for a request that failed with `cause`.
    pub(crate) fn failed(&self, cause: Cause, sent: Sent) -> RegistryError {
        self.error(Kind::of_cause(cause, sent))
    }
}

/// Retries of a read after the first attempt.
const MAX_RETRIES: u32 = 2;

/// 250 ms, 500 ms, … with ±50 % jitter, so that many clients do not retry in step.
fn backoff(attempt: u32) -> Duration {
    let base = 250u64.saturating_mul(1 << attempt.min(6));
    let mut b = [0u8; 2];
    let jitter = match aws_lc_rs::rand::fill(&mut b) {
        Ok(()) => u64::from(u16::from_le_bytes(b)) % (base + 1),
        Err(_) => base / 2,
    };
    Duration::from_millis(base / 2 + jitter)
}

/// How long to wait before asking again after `result`, if it is worth asking again: after
/// what `Retry-After` asks on 429 and 503, a short pause on other 5xx answers and on
/// connection failures (not on timeouts or certificates).
fn retry_wait(result: &Result<reqwest::Response, Cause>, attempt: u32) -> Option<Duration> {
    match result {
        Ok(resp) => match resp.status().as_u16() {
            429 | 503 => Some(
                resp.headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after)
                    .map_or_else(|| backoff(attempt), Duration::from_secs),
            ),
            500 | 502 | 504 => Some(backoff(attempt)),
            _ => None,
        },
        Err(c) if c.is_transport() && !c.is_timeout() && !c.is_certificate() => {
            Some(backoff(attempt))
        }
        Err(_) => None,
    }
}

/// The Content-Type of an answer, without its parameters.
pub(super) fn content_type(resp: &reqwest::Response) -> Option<String> {
    resp.headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or(v).trim().to_string())
}

impl Registry {
    /// One request with auth and the deadline applied; any status is returned. Reads
    /// (manifests, blobs, tag lists, referrers) are retried a bounded number of times within
    /// the deadline (see [`retry_wait`]).
    pub(super) async fn send(
        &self,
        call: Call<'_>,
        access: Access,
        url: &str,
        build: impl Fn(&reqwest::Client, reqwest::Url) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, RegistryError> {
        let creds = self
            .credentials_for(call.registry, call.repository)
            .await
            .map_err(|source| call.error(Kind::Credentials { source }))?;
        let sent = Sent::from(creds.as_ref());
        let retries = if call.op.is_read() { MAX_RETRIES } else { 0 };
        let mut attempt = 0;
        loop {
            let result = self
                .attempt(call, creds.as_ref(), access, url, &build)
                .await?;
            let wait = retry_wait(&result, attempt);
            let fits = wait.is_some_and(|w| w < remaining_time(self.settings.timeout));
            if attempt < retries && fits {
                // The answer (and the host's permit) is let go before the pause.
                drop(result);
                attempt += 1;
                tokio::time::sleep(wait.unwrap_or_default()).await;
                continue;
            }
            return match result {
                Ok(mut resp) => {
                    resp.extensions_mut().insert(sent);
                    Ok(resp)
                }
                Err(c) => Err(self.failed(call, c, sent)),
            };
        }
    }

    /// One attempt: the host's permit, waited for within the request's time, then the
    /// request. The permit goes with the response until its body has been read (or the
    /// response is dropped).
    async fn attempt(
        &self,
        call: Call<'_>,
        creds: Option<&Credential>,
        access: Access,
        url: &str,
        build: &impl Fn(&reqwest::Client, reqwest::Url) -> reqwest::RequestBuilder,
    ) -> Result<Result<reqwest::Response, Cause>, RegistryError> {
        // Its turn under the pace in scope (`audit`'s) first, within what is left of the
        // deadline; the request's own time starts after it.
        if let Some(left) = remaining_deadline() {
            if tokio::time::timeout(left, pace_turn()).await.is_err() {
                return Err(call.error(Kind::DeadlineExceeded));
            }
        } else {
            pace_turn().await;
        }
        let until = tokio::time::Instant::now() + self.request_limit();
        let fut = async {
            let permit = self.gates.acquire(call.registry).await;
            if tokio::time::Instant::now() >= until {
                // Its turn came too late: no connection is opened; the deadline says so.
                std::future::pending::<()>().await;
            }
            let in_flight = gate::InFlight::new(permit);
            let to = RepoAccess {
                settings: &self.settings,
                creds,
                registry: call.registry,
                repository: call.repository,
                access,
            };
            let mut resp = self.remote.send(&to, url, build).await?;
            if let Some(permit) = in_flight.answered() {
                resp.extensions_mut().insert(Arc::new(permit));
            }
            Ok::<_, Cause>(resp)
        };
        self.deadline(call, fut).await
    }

    /// The response if its status is a success, else the typed error.
    pub(super) async fn success(
        &self,
        call: Call<'_>,
        resp: reqwest::Response,
    ) -> Result<reqwest::Response, RegistryError> {
        if resp.status().is_success() {
            Ok(resp)
        } else {
            let sent = resp
                .extensions()
                .get::<Sent>()
                .cloned()
                .unwrap_or(Sent::Nothing);
            let cause = status_cause(resp).await;
            Err(call.failed(cause, sent))
        }
    }

    /// `fut` within the request timeout, cut to what is left of the deadline in scope (see
    /// [`super::RequestScope`]).
    async fn deadline<T>(
        &self,
        call: Call<'_>,
        fut: impl Future<Output = T>,
    ) -> Result<T, RegistryError> {
        let left = remaining_deadline();
        let limit = self.request_limit();
        tokio::time::timeout(limit, fut).await.map_err(|_| {
            if left.is_some_and(|l| l < self.settings.timeout) {
                call.error(Kind::DeadlineExceeded)
            } else {
                self.timed_out(call)
            }
        })
    }

    /// The request timeout ran out, on whichever clock saw it first: the deadline's or the
    /// client's read timeout (both are the request timeout).
    fn timed_out(&self, call: Call<'_>) -> RegistryError {
        let seconds = self.settings.timeout.as_secs();
        call.error(Kind::Timeout { seconds })
    }

    /// A request that failed with `cause`: a timeout is a timeout, never "unreachable".
    fn failed(&self, call: Call<'_>, cause: Cause, sent: Sent) -> RegistryError {
        if cause.is_timeout() {
            self.timed_out(call)
        } else {
            call.failed(cause, sent)
        }
    }

    /// The time one request may take: the request timeout, cut to what is left of the
    /// deadline in scope.
    fn request_limit(&self) -> Duration {
        remaining_deadline().map_or(self.settings.timeout, |l| l.min(self.settings.timeout))
    }

    /// The credential for `repository` on `host`, from the first source that has one (see
    /// [`super::settings`]), the request credentials in scope included; a credential helper
    /// is asked here, at most once per host per TTL.
    async fn credentials_for(
        &self,
        host: &str,
        repository: &str,
    ) -> Result<Option<Credential>, CredentialError> {
        let request = request_credentials();
        match self
            .settings
            .find_credential(host, repository, request.as_ref())?
        {
            None => Ok(None),
            Some(CredentialOrHelper::Credential(c)) => Ok(Some(c)),
            Some(CredentialOrHelper::Helper { helper, source }) => {
                let server = credentials::helper_server(host);
                let secret = self
                    .helpers
                    .get(&helper, &server, &source, self.settings.helper_ttl)
                    .await?;
                Ok(secret.map(|s| Credential::new(s, source)))
            }
        }
    }

    /// GET `url` (a manifest or a blob): `Ok(None)` on 404, else the body (see
    /// [`Registry::capped_body`]) and its Content-Type.
    pub(super) async fn fetch(
        &self,
        call: Call<'_>,
        url: &str,
        limit: usize,
        budget: Option<&FetchBudget>,
    ) -> Result<Option<(Vec<u8>, Option<String>)>, RegistryError> {
        let resp = self
            .send(call, Access::Pull, url, |c, url| {
                c.get(url).header(ACCEPT, ACCEPT_MANIFESTS)
            })
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let resp = self.success(call, resp).await?;
        let content_type = content_type(&resp);
        let body = self.capped_body(call, resp, limit, budget).await?;
        Ok(Some((body, content_type)))
    }

    /// A response body within the deadline, refused past `limit` bytes; a body that stops
    /// arriving is a timeout.
    pub(super) async fn body(
        &self,
        call: Call<'_>,
        resp: reqwest::Response,
        limit: usize,
    ) -> Result<Vec<u8>, RegistryError> {
        self.deadline(call, read_body_capped(resp, limit))
            .await?
            .map_err(|c| self.failed(call, c, Sent::Nothing))?
            .ok_or_else(|| call.error(Kind::TooLarge { limit }))
    }

    /// A body refused past `limit` bytes and, with a budget, granted from it first: an answer
    /// whose Content-Length passes `limit` is refused unread and costs nothing; a body cut
    /// off while reading costs what was granted; the rest of the grant is given back.
    pub(super) async fn capped_body(
        &self,
        call: Call<'_>,
        resp: reqwest::Response,
        limit: usize,
        budget: Option<&FetchBudget>,
    ) -> Result<Vec<u8>, RegistryError> {
        if resp.content_length().is_some_and(|n| n > limit as u64) {
            return Err(call.error(Kind::TooLarge { limit }));
        }
        let Some(budget) = budget else {
            return self.body(call, resp, limit).await;
        };
        let granted = budget.take(limit);
        let spent = || {
            call.error(Kind::BudgetSpent {
                limit: budget.limit(),
            })
        };
        if granted == 0 || resp.content_length().is_some_and(|n| n > granted as u64) {
            budget.give_back(granted);
            return Err(spent());
        }
        match self.body(call, resp, granted).await {
            Ok(body) => {
                budget.give_back(granted - body.len());
                Ok(body)
            }
            Err(e) if matches!(*e.kind, Kind::TooLarge { .. }) => {
                // Read up to the grant and cut off: charged.
                if granted < limit {
                    Err(spent())
                } else {
                    Err(e)
                }
            }
            Err(e) => {
                budget.give_back(granted);
                Err(e)
            }
        }
    }
}

/// What is left to wait in: the deadline in scope, else one request timeout.
fn remaining_time(timeout: Duration) -> Duration {
    remaining_deadline().unwrap_or(timeout)
}
