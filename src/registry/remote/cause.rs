//! [`Cause`]: why a request failed below the registry layer (a status with the registry's
//! error codes, a transport or certificate failure, a refused redirect or token), and reading
//! answers within a size. Must not: decide what a cause means for a verification (the kind of
//! a `RegistryError` does).

use reqwest::Url;
use reqwest::header::RETRY_AFTER;
use serde::Deserialize;

use super::{MAX_REDIRECTS, host_of};

/// Why a request failed below the registry layer: the `source()` of a `RegistryError`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Cause {
    /// The registry answered with a status other than 2xx (after redirects and one auth
    /// challenge per origin).
    #[error("HTTP {status}{}{}", render_codes(codes), render_retry(*retry_after))]
    Status {
        /// The HTTP status code of the final answer.
        status: u16,
        /// The body's OCI `errors[]` as `CODE: message` (at most 8, each escaped and cut to
        /// 200 characters); empty when the body is not that JSON or is over 16 KiB.
        codes: Vec<String>,
        /// What `Retry-After` asked for (429, 503), in seconds.
        retry_after: Option<u32>,
    },
    /// No answer: connecting, TLS, sending or reading the body failed (a timeout included),
    /// other than the two cases below.
    #[error("transport failure")]
    Transport(#[source] reqwest::Error),
    #[error(
        "{host} answered a TLS handshake in plain HTTP: if it serves plain HTTP, say so with \
         --registry-plain-http {host} (or OCIGATE_REGISTRY_*_PLAIN_HTTP=true)"
    )]
    /// An HTTPS request whose TLS handshake met a plain-HTTP answer (rustls'
    /// `InvalidContentType`).
    PlainHttpPeer {
        /// `host[:port]` of the URL, in the spelling of the settings (no default port).
        host: String,
        /// The failed request.
        #[source]
        source: reqwest::Error,
    },
    #[error(
        "the TLS certificate of {host} {problem}: give its CA with --registry-ca-file \
         {host}=FILE, or accept it unverified with --allow-insecure-registry (or \
         --registry-insecure-skip-tls-verify {host})"
    )]
    /// rustls refused the server's certificate (unknown CA, expired, wrong name, ...).
    Certificate {
        /// `host[:port]` of the URL, in the spelling of the settings (no default port).
        host: String,
        /// What is wrong with it (`is issued by an unknown certificate authority`).
        problem: String,
        /// The failed request, with the rustls error in its chain.
        #[source]
        source: reqwest::Error,
    },
    /// The token service (the Bearer challenge's realm) answered a token request with a
    /// status other than 2xx.
    #[error("token service {realm} answered HTTP {status}")]
    Token {
        /// The realm URL from the registry's `WWW-Authenticate` challenge.
        realm: String,
        /// The token service's HTTP status code.
        status: u16,
    },
    /// The token service answered 2xx, but its body is over 64 KiB, not JSON, or has neither a
    /// non-empty `token` nor `access_token`.
    #[error("token service {realm} sent no usable token")]
    TokenBody {
        /// The realm URL from the registry's `WWW-Authenticate` challenge.
        realm: String,
    },
    /// A `WWW-Authenticate` that is neither Basic nor a Bearer with a `realm`, or whose realm
    /// is not an http(s) URL.
    #[error("authentication challenge not understood: {0:?}")]
    Challenge(
        /// The header as received, or the realm alone when that is what was unusable.
        String,
    ),
    /// A Bearer realm on plain HTTP while there are credentials to send, and the challenge did
    /// not come from the registry itself reached on plain HTTP.
    #[error("refusing to send credentials to token service {realm} over plain HTTP")]
    InsecureRealm {
        /// The realm URL, as the challenge gave it.
        realm: String,
    },
    /// A blob upload's POST answered 2xx without a `Location` header to PUT the blob to.
    #[error("upload session has no usable Location header")]
    Upload,
    /// A redirect, or a URL the registry supplied (a `Link`, an upload `Location`), that goes
    /// from HTTPS to plain HTTP; never followed.
    #[error("refusing to follow {what} from {from} to {to}: a downgrade from HTTPS to plain HTTP")]
    Downgrade {
        /// What pointed there: `a redirect` or `a registry-supplied URL`.
        what: &'static str,
        /// The HTTPS origin it came from (`scheme://host[:port]`).
        from: String,
        /// The plain-HTTP origin it pointed to (`scheme://host[:port]`).
        to: String,
    },
    /// A URL that does not parse, does not resolve against its base, is not UTF-8, or is not
    /// http(s) with a host.
    #[error("{what} {target:?} is not a usable http(s) URL")]
    BadUrl {
        /// Where the URL came from (`registry URL`, `redirect`, `upload Location`, ...).
        what: &'static str,
        /// The URL text as received (lossily decoded when it was not UTF-8).
        target: String,
    },
    /// More than `MAX_REDIRECTS` (5) redirects for one request.
    #[error("more than {MAX_REDIRECTS} redirects")]
    TooManyRedirects,
    /// The HTTP client for a host could not be built: its CA file or client certificate and
    /// key do not load (kept per transport, so every later request fails the same way).
    #[error("the HTTP client could not be built: {0}")]
    Client(
        /// The error chain, naming the file at fault.
        String,
    ),
}

impl Cause {
    /// No answer: the connection (or its TLS) failed.
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
    pub(super) fn may_be_plain_http(&self) -> bool {
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
    /// The HTTP status of the registry's or its token service's answer, if that is the cause.
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

/// A transport failure; a TLS handshake that met plain HTTP says so, and so does a
/// certificate that was not accepted.
pub(super) fn transport_cause(url: &Url, e: reqwest::Error) -> Cause {
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

/// How long the body of an error answer is waited for (its OCI error codes), past its headers.
pub(crate) const ERROR_BODY_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Read a body, refusing more than `limit` bytes: `Ok(None)` when it is larger.
pub async fn read_body_capped(
    mut resp: reqwest::Response,
    limit: usize,
) -> Result<Option<Vec<u8>>, Cause> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Ok(None);
    }
    // The declared length (within the limit) is reserved once, so a large body is not copied
    // as it grows; a body without one grows as it arrives. Never more than `limit` is held.
    let declared = resp
        .content_length()
        .map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX));
    let mut out = Vec::with_capacity(declared.min(limit));
    while let Some(chunk) = resp.chunk().await.map_err(Cause::Transport)? {
        if out.len() + chunk.len() > limit {
            return Ok(None);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Some(out))
}

/// The OCI error codes and messages of an error response, for the cause's Display (its
/// body waited for at most [`ERROR_BODY_WAIT`]).
pub(crate) async fn status_cause(resp: reqwest::Response) -> Cause {
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
    // The body only adds the registry's words to the status: it is read for a short while,
    // not for as long as a registry trickling bytes keeps the connection alive.
    let body = tokio::time::timeout(ERROR_BODY_WAIT, read_body_capped(resp, 16 << 10)).await;
    let codes = match body.unwrap_or(Ok(None)) {
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
pub(crate) fn parse_retry_after(v: &str) -> Option<u64> {
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
}
