//! What a registry or OCI layout failure is: [`RegistryError`] says where (the store), what
//! (the operation and its target) and why ([`RegistryErrorKind`], with its typed cause), and
//! [`RegistryError::failure`] derives the failure class from the kind. No I/O and no HTTP here.

use std::path::PathBuf;
use std::sync::Arc;

use super::credentials::{Credential, CredentialError};
use super::remote::Cause;
use crate::failure::Failure;

/// Where a failed operation went: a remote registry, an OCI layout directory, or (for a
/// manifest parsed after it was fetched) the name its caller gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Store {
    /// A remote registry, by the name references use (`ghcr.io`, `localhost:5000`).
    Registry(String),
    /// An `oci-layout:` directory.
    Layout(PathBuf),
    /// Where a manifest came from, as the caller of [`super::ImageManifest::parse`] names it.
    Named(String),
}

impl std::fmt::Display for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Store::Registry(host) => write!(f, "registry {host}"),
            Store::Layout(path) => write!(f, "OCI layout {}", path.display()),
            Store::Named(name) => f.write_str(name),
        }
    }
}

/// What a registry operation was doing, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Op {
    /// `GET /v2/<name>/tags/list`, or an OCI layout's `ref.name` annotations.
    ListTags,
    /// `GET /v2/<name>/referrers/<digest>`.
    ListReferrers,
    /// A manifest by tag or digest.
    FetchManifest,
    /// A blob by digest.
    FetchBlob,
    /// Storing a blob.
    PushBlob,
    /// Storing a manifest (and, in an OCI layout, its tag).
    PushManifest,
    /// Reading a manifest already fetched as an image manifest or index.
    ReadManifest,
    /// Creating an OCI layout directory.
    CreateLayout,
}

impl Op {
    /// Reads may be retried; writes are not.
    pub(super) fn is_read(self) -> bool {
        matches!(
            self,
            Op::ListTags | Op::ListReferrers | Op::FetchManifest | Op::FetchBlob
        )
    }
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Op::ListTags | Op::ListReferrers => "listing",
            Op::FetchManifest => "fetching manifest",
            Op::FetchBlob => "fetching blob",
            Op::PushBlob => "pushing blob",
            Op::PushManifest => "pushing manifest",
            Op::ReadManifest => "reading manifest",
            Op::CreateLayout => "creating the layout",
        })
    }
}

/// Whether credentials went with a request, and from where: said when access is denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// The request went anonymously.
    Nothing,
    /// Credentials from this source (a flag, an environment set, a file) went with it.
    From(Arc<str>),
}

impl Sent {
    pub(super) fn from(c: Option<&Credential>) -> Self {
        c.map_or(Sent::Nothing, |c| Sent::From(c.source.clone()))
    }
}

impl std::fmt::Display for Sent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sent::Nothing => f.write_str("no credentials were sent: none are configured for it"),
            Sent::From(s) => write!(f, "credentials from {s} were sent"),
        }
    }
}

/// Why a registry or layout operation failed. The HTTP, transport, credential or file error
/// underneath is the `source()`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryErrorKind {
    /// 401 or 403 (from the registry or its token service).
    #[error("access denied; {sent}")]
    AccessDenied {
        /// Whether credentials went with the request, and from where.
        sent: Sent,
        /// The 401/403 answer: a [`Cause::Status`] from the registry or a [`Cause::Token`].
        #[source]
        source: Cause,
    },
    /// The credentials for the registry could not be obtained (never a reason to go on
    /// anonymously).
    #[error("credentials cannot be obtained")]
    Credentials {
        /// The credential file or helper that failed, by its label.
        #[source]
        source: CredentialError,
    },
    /// 429 (from the registry or its token service).
    #[error("rate limited")]
    RateLimited {
        /// What `Retry-After` asked for, in seconds.
        retry_after: Option<u32>,
        /// The 429 answer (a [`Cause::Status`], or a [`Cause::Token`] without `Retry-After`).
        #[source]
        source: Cause,
    },
    /// Any other HTTP status that is not a success.
    #[error("failed")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The answer, with the registry's error codes (or a token service's status).
        #[source]
        source: Cause,
    },
    /// A failure of the protocol: an unusable URL, redirect, challenge, token or upload.
    #[error("failed")]
    Protocol {
        /// What was refused; also [`Cause::Client`], a CA or client certificate that does not
        /// load.
        #[source]
        source: Cause,
    },
    /// No connection (refused, reset, DNS, TLS).
    #[error("unreachable")]
    Unreachable {
        /// A [`Cause::Transport`], [`Cause::PlainHttpPeer`] or [`Cause::Certificate`].
        #[source]
        source: Cause,
    },
    /// No answer within the request timeout.
    #[error("no answer within {seconds}s")]
    Timeout {
        /// The request timeout.
        seconds: u64,
    },
    /// The deadline of the verification ran out first.
    #[error("the deadline ran out")]
    DeadlineExceeded,
    /// The registry does not have what a manifest names (not the reference itself, which is
    /// `Ok(None)`).
    #[error("not found")]
    NotFound,
    /// A blob a manifest names is missing from an OCI layout.
    #[error("the blob is missing")]
    MissingBlob,
    /// Larger than a limit of bytes.
    #[error("it is larger than the {limit}-byte limit")]
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// More entries than a limit allows.
    #[error("more than {limit} {what}")]
    TooMany {
        /// The limit.
        limit: usize,
        /// What was counted (`tags`, `pages`).
        what: &'static str,
    },
    /// What one verification may fetch in all would be passed (see [`super::FetchBudget`]).
    #[error("it would pass the {limit}-byte limit on what one verification fetches")]
    BudgetSpent {
        /// The budget, in bytes.
        limit: usize,
    },
    /// Content that does not match the digest it was asked by.
    #[error("the content does not match its digest")]
    DigestMismatch,
    /// Content that is not a manifest (or not an image index, for referrers). `detail` is
    /// escaped: it may quote the registry.
    #[error("it is not a JSON OCI/Docker manifest ({detail})")]
    NotAManifest {
        /// Why not.
        detail: String,
    },
    /// Something else malformed: a tag list, a descriptor's or an index entry's digest.
    #[error("it is malformed ({detail})")]
    Malformed {
        /// What is wrong.
        detail: String,
    },
    /// A directory without an `oci-layout` file.
    #[error("not an OCI image layout (no oci-layout file)")]
    NotALayout,
    /// An OCI layout whose `index.json` lists an entry with a malformed digest.
    #[error("index.json lists a malformed digest {digest:?}")]
    BadIndexEntry {
        /// The digest as listed.
        digest: String,
    },
    /// An OCI layout with several images, named without a tag or digest.
    #[error("it holds several images; name one with :TAG or @DIGEST")]
    AmbiguousLayout,
    /// An OCI layout's `index.json` that does not parse.
    #[error("index.json is not a valid image index")]
    LayoutIndex {
        /// Where and why the JSON of `index.json` does not parse.
        #[source]
        source: serde_json::Error,
    },
    /// A file of an OCI layout that cannot be read or written.
    #[error("cannot {doing}")]
    Io {
        /// What was being done (`read index.json`).
        doing: String,
        /// The OS error (a missing blob is [`RegistryErrorKind::MissingBlob`], not this).
        #[source]
        source: std::io::Error,
    },
}

impl RegistryErrorKind {
    /// The failure class: refused access and missing credentials are `auth`, 429 is
    /// `rate-limited`, a timeout or the deadline is `timeout`, everything else `registry`. A
    /// blob or manifest that a manifest names but the registry lacks is an inconsistency of
    /// the registry: `not-found` is for the reference itself, which the registry layer
    /// reports as `Ok(None)` and its caller classifies.
    pub fn failure(&self) -> Failure {
        use RegistryErrorKind as K;
        match self {
            K::AccessDenied { .. } | K::Credentials { .. } => Failure::Auth,
            K::RateLimited { .. } => Failure::RateLimited,
            K::Timeout { .. } | K::DeadlineExceeded => Failure::Timeout,
            K::Status { .. }
            | K::Protocol { .. }
            | K::Unreachable { .. }
            | K::NotFound
            | K::MissingBlob
            | K::TooLarge { .. }
            | K::TooMany { .. }
            | K::BudgetSpent { .. }
            | K::DigestMismatch
            | K::NotAManifest { .. }
            | K::Malformed { .. }
            | K::NotALayout
            | K::BadIndexEntry { .. }
            | K::AmbiguousLayout
            | K::LayoutIndex { .. }
            | K::Io { .. } => Failure::Registry,
        }
    }

    /// The kind of a request that failed with `cause`, sent with `sent`: 401 and 403 are
    /// access denied, 429 rate limited, a transport failure unreachable.
    pub(super) fn of_cause(cause: Cause, sent: Sent) -> Self {
        match cause.status() {
            Some(401 | 403) => RegistryErrorKind::AccessDenied {
                sent,
                source: cause,
            },
            Some(429) => RegistryErrorKind::RateLimited {
                retry_after: cause.retry_after(),
                source: cause,
            },
            Some(status) => RegistryErrorKind::Status {
                status,
                source: cause,
            },
            None if cause.is_transport() => RegistryErrorKind::Unreachable { source: cause },
            None => RegistryErrorKind::Protocol { source: cause },
        }
    }
}

/// A registry or layout failure: `{store}: {op} {target}: {kind}`; the cause underneath the
/// kind is the `source()`.
#[derive(Debug)]
pub struct RegistryError {
    /// The registry or layout.
    pub store: Store,
    /// What was being done.
    pub op: Op,
    /// What it was done to: a reference, `name@digest`, `tags of name`, `referrers of …`
    /// (empty when the operation is about the store itself).
    pub target: String,
    /// Why it failed (boxed: an error stays small on the success path).
    pub kind: Box<RegistryErrorKind>,
}

impl RegistryError {
    /// `op` on `target` in `store` failed for `kind`.
    pub fn new(store: Store, op: Op, target: impl Into<String>, kind: RegistryErrorKind) -> Self {
        RegistryError {
            store,
            op,
            target: target.into(),
            kind: Box::new(kind),
        }
    }

    /// The failure class, derived from the kind (see [`RegistryErrorKind::failure`]).
    pub fn failure(&self) -> Failure {
        self.kind.failure()
    }
}

impl std::fmt::Display for RegistryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.store, self.op)?;
        if !self.target.is_empty() {
            write!(f, " {}", self.target)?;
        }
        write!(f, ": {}", self.kind)
    }
}

impl std::error::Error for RegistryError {
    /// The kind's cause: the kind itself is part of this error's Display.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&*self.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RegistryErrorKind as K;

    fn status(code: u16) -> Cause {
        Cause::Status {
            status: code,
            codes: Vec::new(),
            retry_after: None,
        }
    }

    fn class_of_status(code: u16) -> Failure {
        K::of_cause(status(code), Sent::Nothing).failure()
    }

    /// A real transport failure: a connection to a port nobody listens on.
    fn transport_error() -> reqwest::Error {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            reqwest::Client::new()
                .get(format!("http://127.0.0.1:{port}/v2/"))
                .send()
                .await
                .unwrap_err()
        })
    }

    #[test]
    fn statuses_map_to_their_classes() {
        assert_eq!(class_of_status(401), Failure::Auth);
        assert_eq!(class_of_status(403), Failure::Auth);
        assert_eq!(class_of_status(429), Failure::RateLimited);
        assert_eq!(class_of_status(500), Failure::Registry);
        assert_eq!(class_of_status(503), Failure::Registry);
        // A 404 the layer turns into an error (a blob a manifest names, a repository without
        // tags) is the registry's inconsistency; a missing reference is `Ok(None)`.
        assert_eq!(class_of_status(404), Failure::Registry);
        assert_eq!(K::NotFound.failure(), Failure::Registry);
        // A token service's answer counts as the registry's.
        let token = |status| Cause::Token {
            realm: "https://auth.example/token".into(),
            status,
        };
        let kind = K::of_cause(token(401), Sent::Nothing);
        assert!(matches!(kind, K::AccessDenied { .. }), "{kind:?}");
        assert_eq!(
            K::of_cause(token(429), Sent::Nothing).failure(),
            Failure::RateLimited
        );
        let kind = K::of_cause(status(502), Sent::Nothing);
        assert!(matches!(kind, K::Status { status: 502, .. }), "{kind:?}");
    }

    #[test]
    fn transport_and_protocol_failures_are_registry_failures() {
        let kind = K::of_cause(Cause::Transport(transport_error()), Sent::Nothing);
        assert!(matches!(kind, K::Unreachable { .. }), "{kind:?}");
        assert_eq!(kind.failure(), Failure::Registry);
        let kind = K::of_cause(Cause::TooManyRedirects, Sent::Nothing);
        assert!(matches!(kind, K::Protocol { .. }), "{kind:?}");
        assert_eq!(kind.failure(), Failure::Registry);
    }

    #[test]
    fn every_kind_has_its_class() {
        let io = || std::io::Error::other("disk");
        let json = || serde_json::from_slice::<u8>(b"x").unwrap_err();
        let cases: Vec<(RegistryErrorKind, Failure)> = vec![
            (
                K::AccessDenied {
                    sent: Sent::From("a file".into()),
                    source: status(403),
                },
                Failure::Auth,
            ),
            (
                K::Credentials {
                    source: CredentialError::HelperMissing {
                        helper: "x".into(),
                        file: "f".into(),
                    },
                },
                Failure::Auth,
            ),
            (
                K::RateLimited {
                    retry_after: Some(5),
                    source: status(429),
                },
                Failure::RateLimited,
            ),
            (
                K::Status {
                    status: 500,
                    source: status(500),
                },
                Failure::Registry,
            ),
            (
                K::Protocol {
                    source: Cause::Upload,
                },
                Failure::Registry,
            ),
            (
                K::Unreachable {
                    source: Cause::Transport(transport_error()),
                },
                Failure::Registry,
            ),
            (K::Timeout { seconds: 5 }, Failure::Timeout),
            (K::DeadlineExceeded, Failure::Timeout),
            (K::NotFound, Failure::Registry),
            (K::MissingBlob, Failure::Registry),
            (K::TooLarge { limit: 1 }, Failure::Registry),
            (
                K::TooMany {
                    limit: 1,
                    what: "tags",
                },
                Failure::Registry,
            ),
            (K::BudgetSpent { limit: 1 }, Failure::Registry),
            (K::DigestMismatch, Failure::Registry),
            (
                K::NotAManifest {
                    detail: "no schemaVersion".into(),
                },
                Failure::Registry,
            ),
            (
                K::Malformed {
                    detail: "tag list".into(),
                },
                Failure::Registry,
            ),
            (K::NotALayout, Failure::Registry),
            (
                K::BadIndexEntry {
                    digest: "sha256:x".into(),
                },
                Failure::Registry,
            ),
            (K::AmbiguousLayout, Failure::Registry),
            (K::LayoutIndex { source: json() }, Failure::Registry),
            (
                K::Io {
                    doing: "read index.json".into(),
                    source: io(),
                },
                Failure::Registry,
            ),
        ];
        for (kind, class) in cases {
            let e = RegistryError::new(
                Store::Registry("r.example".into()),
                Op::FetchManifest,
                "r.example/a:v1",
                kind,
            );
            assert_eq!(e.failure(), class, "{e}");
        }
    }

    #[test]
    fn display_names_the_layer_and_the_source_carries_the_cause() {
        let e = RegistryError::new(
            Store::Registry("r.example".into()),
            Op::FetchManifest,
            "r.example/a:v1",
            K::of_cause(status(401), Sent::From("--registry-creds".into())),
        );
        assert_eq!(
            e.to_string(),
            "registry r.example: fetching manifest r.example/a:v1: access denied; \
             credentials from --registry-creds were sent"
        );
        assert_eq!(
            crate::error_chain(&e),
            format!("{e}: HTTP 401"),
            "the cause follows once"
        );
        let e = RegistryError::new(
            Store::Layout("/tmp/lay".into()),
            Op::CreateLayout,
            "",
            K::Io {
                doing: "write oci-layout".into(),
                source: std::io::Error::other("disk full"),
            },
        );
        assert_eq!(
            crate::error_chain(&e),
            "OCI layout /tmp/lay: creating the layout: cannot write oci-layout: disk full"
        );
    }
}
