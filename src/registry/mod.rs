//! Fetching and pushing manifests and blobs: remote registries through [`remote`] (the
//! distribution HTTP API on reqwest: token and basic auth, HTTPS then HTTP where allowed), and
//! OCI image layout directories on disk. Nothing here interprets
//! signatures. "Not found" is an `Ok(None)`; every other failure is an error, never an absence.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_TYPE, LOCATION};
use serde::{Deserialize, Serialize};

pub mod credentials;
pub mod fold;
pub mod gate;
mod remote;
pub mod settings;
pub use credentials::{Credential, CredentialError, CredentialId, Secret};
pub use remote::Cause;
/// A response body, refused past a size (`Ok(None)`); for other API clients of this crate.
pub use remote::read_capped as read_body_capped;
use remote::{ACCEPT_MANIFESTS, Access, Remote, read_capped, resolve_url, status_cause};
pub use settings::{
    Found, RegistrySettings, RequestCredentials, SchemeChoice, SettingsError, TlsFile,
    request_credentials, with_request_credentials,
};

use crate::reference::{Digest, ImageRef, Location};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Most pages of a tag list followed, and most tags accepted.
pub const MAX_TAG_PAGES: usize = 20;
pub const MAX_TAGS: usize = 20_000;
/// Most pages of referrers followed, and most referrers accepted, for one digest. What lies
/// beyond is reported as not examined (see [`ReferrersCut`]), never silently dropped.
pub const MAX_REFERRER_PAGES: usize = 16;
pub const MAX_REFERRERS: usize = 1024;

/// What one verification may fetch in all (manifests, referrer pages, blobs), shared by the
/// lookups that run concurrently. A fetch that would pass it is refused with
/// [`RegistryError::BudgetSpent`]; bytes a fetch did not use are given back.
#[derive(Debug)]
pub struct FetchBudget {
    limit: usize,
    left: std::sync::atomic::AtomicUsize,
}

impl FetchBudget {
    pub fn new(limit: usize) -> Self {
        FetchBudget {
            limit,
            left: std::sync::atomic::AtomicUsize::new(limit),
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes charged so far.
    pub fn spent(&self) -> usize {
        self.limit
            .saturating_sub(self.left.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Take up to `want` bytes; how many were granted (0: nothing left).
    fn take(&self, want: usize) -> usize {
        use std::sync::atomic::Ordering;
        let mut granted = 0;
        let _ = self
            .left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                granted = left.min(want);
                Some(left - granted)
            });
        granted
    }

    fn give_back(&self, n: usize) {
        self.left.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }
}

/// What a registry operation was doing, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    ListTags,
    FetchManifest,
    FetchBlob,
    PushBlob,
    PushManifest,
}

impl Op {
    /// Reads may be retried; writes are not.
    fn is_read(self) -> bool {
        matches!(self, Op::ListTags | Op::FetchManifest | Op::FetchBlob)
    }
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Op::ListTags => "listing",
            Op::FetchManifest => "fetching manifest",
            Op::FetchBlob => "fetching blob",
            Op::PushBlob => "pushing blob",
            Op::PushManifest => "pushing manifest",
        })
    }
}

/// A registry or layout failure. Display says where and what; the cause is in `source()`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    #[error("registry {host}: access denied while {op} {target}; {sent}")]
    Denied {
        host: String,
        op: Op,
        target: String,
        sent: Box<Sent>,
        #[source]
        source: Cause,
    },
    #[error("registry {host}: credentials cannot be obtained")]
    Credentials {
        host: String,
        #[source]
        source: CredentialError,
    },
    #[error("registry {host}: the deadline ran out while {op} {target}")]
    DeadlineExceeded {
        host: String,
        op: Op,
        target: String,
    },
    #[error("registry {host}: unreachable while {op} {target}")]
    Unreachable {
        host: String,
        op: Op,
        target: String,
        #[source]
        source: Cause,
    },
    #[error("registry {host}: no answer within {seconds}s while {op} {target}")]
    Timeout {
        host: String,
        op: Op,
        target: String,
        seconds: u64,
    },
    #[error("registry {host}: {op} {target} failed")]
    Protocol {
        host: String,
        op: Op,
        target: String,
        #[source]
        source: Cause,
    },
    #[error("registry {host}: {target} not found")]
    NotFound { host: String, target: String },
    #[error("{place}: {target} is larger than the {limit}-byte limit")]
    TooLarge {
        place: String,
        target: String,
        limit: usize,
    },
    #[error(
        "{place}: fetching {target} would pass the {limit}-byte limit on what one verification fetches"
    )]
    BudgetSpent {
        place: String,
        target: String,
        limit: usize,
    },
    #[error("{place}: content of {target} does not match its digest")]
    DigestMismatch { place: String, target: String },
    #[error("{place}: manifest {target} is not a JSON OCI/Docker manifest ({detail})")]
    BadManifest {
        place: String,
        target: String,
        detail: String,
    },
    #[error("OCI layout {path}: {what}")]
    Layout {
        path: PathBuf,
        what: String,
        #[source]
        source: Option<std::io::Error>,
    },
    #[error("OCI layout {path}: {what}")]
    LayoutIndex {
        path: PathBuf,
        what: String,
        #[source]
        source: serde_json::Error,
    },
}

/// A manifest as fetched: its exact bytes, their digest and its media type.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub bytes: Vec<u8>,
    pub digest: Digest,
    pub media_type: String,
}

/// The referrers a registry lists for a digest, as far as the limits allowed reading them.
#[derive(Debug)]
pub struct Referrers {
    pub descriptors: Vec<Descriptor>,
    /// Why the list may be incomplete (a limit); `None` when every page was read.
    pub cut: Option<ReferrersCut>,
}

/// Why a list of referrers was not read to its end.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReferrersCut {
    #[error("more than {limit} referrers listed; those past the first {limit} were not examined")]
    Entries { limit: usize },
    #[error("more than {limit} pages of referrers; later pages were not read")]
    Pages { limit: usize },
    #[error("a page of referrers was refused; it and later pages were not read")]
    Page {
        #[source]
        source: RegistryError,
    },
}

/// A descriptor inside a manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
}

/// The subset of an image manifest / index we read and write.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Descriptor>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

impl ImageManifest {
    pub fn parse(m: &Manifest, place: &str) -> Result<Self, RegistryError> {
        let parsed: ImageManifest =
            serde_json::from_slice(&m.bytes).map_err(|e| RegistryError::BadManifest {
                place: place.to_string(),
                target: m.digest.to_string(),
                detail: e.to_string(),
            })?;
        if parsed.schema_version != 2 {
            return Err(RegistryError::BadManifest {
                place: place.to_string(),
                target: m.digest.to_string(),
                detail: format!("schemaVersion {}", parsed.schema_version),
            });
        }
        Ok(parsed)
    }
}

/// The one client for all artifact stores: remote registries and OCI layouts.
pub struct Registry {
    remote: Remote,
    helpers: credentials::Helpers,
    settings: RegistrySettings,
    /// Requests in flight per host, bounded process-wide and shared fairly.
    gates: gate::Gates,
    /// Hosts that answered "no referrers API": not asked again by this process.
    no_referrers_api: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl Registry {
    pub fn new(settings: RegistrySettings) -> Self {
        Registry {
            remote: Remote::new(),
            helpers: credentials::Helpers::default(),
            gates: gate::Gates::new(settings.max_connections_per_host),
            settings,
            no_referrers_api: std::sync::Mutex::new(std::collections::HashSet::new()),
        }
    }

    fn knows_no_referrers_api(&self, registry: &str) -> bool {
        crate::sync::lock(&self.no_referrers_api).contains(registry)
    }

    pub fn settings(&self) -> &RegistrySettings {
        &self.settings
    }

    /// Who a request for `r` would be made as, with the request credentials in scope (see
    /// [`RegistrySettings::credential_id`]); anonymous for an OCI layout.
    pub fn credential_id(&self, r: &ImageRef) -> CredentialId {
        match r.location() {
            Location::Layout { .. } => CredentialId::ANONYMOUS,
            Location::Registry {
                registry,
                repository,
            } => self
                .settings
                .credential_id(registry, repository, request_credentials().as_ref()),
        }
    }

    /// HTTP requests sent to registries (and token realms) so far: (host, status class, count).
    pub fn request_counts(&self) -> Vec<(String, String, u64)> {
        self.remote.request_counts()
    }

    /// Token fetches so far: (realm, scope, count).
    pub fn token_fetches(&self) -> Vec<(String, String, u64)> {
        self.remote.token_fetches()
    }

    /// Fetch the manifest `r` names (its digest if it has one, else its tag, else `latest`).
    /// `Ok(None)` when the registry says it does not exist. What is not a manifest (another
    /// Content-Type, not a JSON object with `schemaVersion` 2, a `mediaType` that is not a
    /// manifest's) is [`RegistryError::BadManifest`], never taken for one.
    pub async fn get_manifest(&self, r: &ImageRef) -> Result<Option<Manifest>, RegistryError> {
        self.manifest(r, self.settings.max_manifest_bytes, None)
            .await
    }

    /// [`Registry::get_manifest`] refused past `cap` bytes (and the manifest limit of the
    /// settings), charged to `budget`.
    pub async fn get_manifest_within(
        &self,
        r: &ImageRef,
        cap: usize,
        budget: &FetchBudget,
    ) -> Result<Option<Manifest>, RegistryError> {
        let cap = cap.min(self.settings.max_manifest_bytes);
        self.manifest(r, cap, Some(budget)).await
    }

    async fn manifest(
        &self,
        r: &ImageRef,
        limit: usize,
        budget: Option<&FetchBudget>,
    ) -> Result<Option<Manifest>, RegistryError> {
        let (registry, repository) = match r.location() {
            Location::Layout { path } => return layout_get_manifest(path, r, limit),
            Location::Registry {
                registry,
                repository,
            } => (registry, repository),
        };
        let target = r.to_string();
        let part = r.reference_part().unwrap_or_else(|| "latest".to_string());
        let url = format!(
            "{}/v2/{repository}/manifests/{part}",
            self.remote.base_url(&self.settings, registry)
        );
        let fetched = self
            .fetch(
                registry,
                repository,
                Op::FetchManifest,
                &target,
                &url,
                limit,
                budget,
            )
            .await?;
        let Some((bytes, header_type)) = fetched else {
            return Ok(None);
        };
        let place = format!("registry {registry}");
        // The digest is what we compute from the bytes, never what a header claims.
        let digest = Digest::sha256_of(&bytes);
        let media_type =
            manifest_media_type(&bytes, header_type.as_deref(), true).map_err(|detail| {
                RegistryError::BadManifest {
                    place: place.clone(),
                    target: target.clone(),
                    detail,
                }
            })?;
        if let Some(want) = r.digest()
            && !want.matches(&bytes)
        {
            return Err(RegistryError::DigestMismatch { place, target });
        }
        Ok(Some(Manifest {
            bytes,
            digest,
            media_type,
        }))
    }

    /// Fetch a blob of `r`'s repository and check it against its digest.
    pub async fn get_blob(
        &self,
        r: &ImageRef,
        desc: &Descriptor,
    ) -> Result<Vec<u8>, RegistryError> {
        self.blob(r, desc, self.settings.max_blob_bytes, None).await
    }

    /// [`Registry::get_blob`] refused past `cap` bytes (and the blob limit of the settings):
    /// before any request when the descriptor admits it, else while reading; charged to
    /// `budget`.
    pub async fn get_blob_within(
        &self,
        r: &ImageRef,
        desc: &Descriptor,
        cap: usize,
        budget: &FetchBudget,
    ) -> Result<Vec<u8>, RegistryError> {
        let cap = cap.min(self.settings.max_blob_bytes);
        self.blob(r, desc, cap, Some(budget)).await
    }

    async fn blob(
        &self,
        r: &ImageRef,
        desc: &Descriptor,
        limit: usize,
        budget: Option<&FetchBudget>,
    ) -> Result<Vec<u8>, RegistryError> {
        let digest = Digest::parse(&desc.digest).map_err(|_| RegistryError::BadManifest {
            place: r.name(),
            target: format!("{:?}", desc.digest),
            detail: "descriptor digest is malformed".into(),
        })?;
        let (registry, repository) = match r.location() {
            Location::Layout { path } => {
                if desc.size > limit as u64 {
                    return Err(RegistryError::TooLarge {
                        place: format!("OCI layout {}", path.display()),
                        target: digest.to_string(),
                        limit,
                    });
                }
                return layout_read_blob(path, &digest, limit)?.ok_or_else(|| {
                    RegistryError::Layout {
                        path: path.clone(),
                        what: format!("blob {digest} is missing"),
                        source: None,
                    }
                });
            }
            Location::Registry {
                registry,
                repository,
            } => (registry, repository),
        };
        let place = format!("registry {registry}");
        let target = format!("{}@{digest}", r.name());
        if desc.size > limit as u64 {
            return Err(RegistryError::TooLarge {
                place,
                target,
                limit,
            });
        }
        let url = format!(
            "{}/v2/{repository}/blobs/{digest}",
            self.remote.base_url(&self.settings, registry)
        );
        let fetched = self
            .fetch(
                registry,
                repository,
                Op::FetchBlob,
                &target,
                &url,
                limit,
                budget,
            )
            .await?;
        let Some((data, _)) = fetched else {
            return Err(RegistryError::NotFound {
                host: registry.clone(),
                target,
            });
        };
        if !digest.matches(&data) {
            return Err(RegistryError::DigestMismatch { place, target });
        }
        Ok(data)
    }

    /// Store a blob in `r`'s repository; returns its digest.
    pub async fn put_blob(&self, r: &ImageRef, data: &[u8]) -> Result<Digest, RegistryError> {
        let digest = Digest::sha256_of(data);
        let (registry, repository) = match r.location() {
            Location::Layout { path } => {
                layout_write_blob(path, &digest, data)?;
                return Ok(digest);
            }
            Location::Registry {
                registry,
                repository,
            } => (registry, repository),
        };
        let target = format!("{}@{digest}", r.name());
        let base = self.remote.base_url(&self.settings, registry);
        let start = format!("{base}/v2/{repository}/blobs/uploads/");
        let resp = self
            .send(
                registry,
                repository,
                Access::Push,
                Op::PushBlob,
                &target,
                &start,
                |c, url| c.post(url).header(reqwest::header::CONTENT_LENGTH, 0),
            )
            .await?;
        let resp = self.success(registry, Op::PushBlob, &target, resp).await?;
        // The upload URL is the registry's to choose; `send` decides what it may receive
        // (no credentials to another origin, no downgrade to plain HTTP).
        let mut url = resp
            .headers()
            .get(LOCATION)
            .ok_or(Cause::Upload)
            .and_then(|l| resolve_url("upload Location", resp.url(), l))
            .map_err(|c| classify(registry, Op::PushBlob, &target, c))?;
        url.query_pairs_mut().append_pair("digest", digest.as_str());
        let resp = self
            .send(
                registry,
                repository,
                Access::Push,
                Op::PushBlob,
                &target,
                url.as_str(),
                |c, url| {
                    c.put(url)
                        .header(CONTENT_TYPE, "application/octet-stream")
                        .body(data.to_vec())
                },
            )
            .await?;
        self.success(registry, Op::PushBlob, &target, resp).await?;
        Ok(digest)
    }

    /// Store a manifest under `r`'s tag (all referenced blobs must be stored first).
    pub async fn put_manifest(
        &self,
        r: &ImageRef,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<Digest, RegistryError> {
        let digest = Digest::sha256_of(bytes);
        let (registry, repository) = match r.location() {
            Location::Layout { path } => {
                layout_write_blob(path, &digest, bytes)?;
                // Untagged manifests (referrers) are blobs only; index.json lists tags.
                if r.tag().is_some() && r.digest().is_none() {
                    layout_set_tag(path, r.tag(), &digest, bytes.len() as u64, media_type)?;
                }
                return Ok(digest);
            }
            Location::Registry {
                registry,
                repository,
            } => (registry, repository),
        };
        let target = r.to_string();
        let part = r.reference_part().unwrap_or_else(|| digest.to_string());
        let url = format!(
            "{}/v2/{repository}/manifests/{part}",
            self.remote.base_url(&self.settings, registry)
        );
        let resp = self
            .send(
                registry,
                repository,
                Access::Push,
                Op::PushManifest,
                &target,
                &url,
                |c, url| {
                    c.put(url)
                        .header(CONTENT_TYPE, media_type)
                        .body(bytes.to_vec())
                },
            )
            .await?;
        self.success(registry, Op::PushManifest, &target, resp)
            .await?;
        Ok(digest)
    }

    /// The tags of `r`'s repository (`GET /v2/<name>/tags/list`, pages followed). Bounded: at
    /// most [`MAX_TAG_PAGES`] pages and [`MAX_TAGS`] tags, each page at most the manifest limit.
    /// An OCI layout's tags are its index.json `ref.name` annotations.
    pub async fn list_tags(&self, r: &ImageRef) -> Result<Vec<String>, RegistryError> {
        let (registry, repository) = match r.location() {
            Location::Layout { path } => {
                let index = layout_index(path)?;
                return Ok(index
                    .manifests
                    .iter()
                    .filter_map(|m| m.annotations.as_ref()?.get(REF_NAME).cloned())
                    .collect());
            }
            Location::Registry {
                registry,
                repository,
            } => (registry, repository),
        };
        let target = format!("tags of {}", r.name());
        let base = self.remote.base_url(&self.settings, registry);
        let mut url = format!("{base}/v2/{repository}/tags/list?n=1000");
        let mut tags = Vec::new();
        for _ in 0..MAX_TAG_PAGES {
            let resp = self
                .send(
                    registry,
                    repository,
                    Access::Pull,
                    Op::ListTags,
                    &target,
                    &url,
                    |c, url| c.get(url).header(ACCEPT, "application/json"),
                )
                .await?;
            if resp.status() == StatusCode::NOT_FOUND {
                return Err(RegistryError::NotFound {
                    host: registry.clone(),
                    target,
                });
            }
            let resp = self.success(registry, Op::ListTags, &target, resp).await?;
            let next = resp
                .headers()
                .get(reqwest::header::LINK)
                .and_then(|v| v.to_str().ok())
                .and_then(next_link);
            let limit = self.settings.max_manifest_bytes;
            let body = self
                .body(registry, Op::ListTags, &target, resp, limit)
                .await?;
            #[derive(Deserialize)]
            struct TagList {
                #[serde(default)]
                tags: Option<Vec<String>>,
            }
            let page: TagList =
                serde_json::from_slice(&body).map_err(|e| RegistryError::BadManifest {
                    place: format!("registry {registry}"),
                    target: target.clone(),
                    detail: format!("tag list: {e}"),
                })?;
            tags.extend(page.tags.unwrap_or_default());
            if tags.len() > MAX_TAGS {
                return Err(RegistryError::TooLarge {
                    place: format!("registry {registry}"),
                    target: format!("{target} (more than {MAX_TAGS} tags)"),
                    limit: MAX_TAGS,
                });
            }
            match next {
                Some(n) => {
                    url = next_page(&url, &n, "tag list page link")
                        .map_err(|c| classify(registry, Op::ListTags, &target, c))?;
                }
                None => return Ok(tags),
            }
        }
        Err(RegistryError::TooLarge {
            place: format!("registry {registry}"),
            target: format!("{target} (more than {MAX_TAG_PAGES} pages)"),
            limit: MAX_TAG_PAGES,
        })
    }

    /// The OCI 1.1 referrers of `digest` in `r`'s repository. `Ok(None)` when the registry has
    /// no referrers API (it answers 404, or 400/405), so the caller falls back to the referrers
    /// tag. Pages (`Link: <…>; rel="next"`) are followed. Unbounded by a budget, and what lies
    /// past the limits is dropped: for signing, which only needs to know what is there.
    pub async fn get_referrers(
        &self,
        r: &ImageRef,
        digest: &Digest,
    ) -> Result<Option<Vec<Descriptor>>, RegistryError> {
        Ok(self
            .referrers(r, digest, None)
            .await?
            .map(|found| found.descriptors))
    }

    /// [`Registry::get_referrers`] for verification: at most [`MAX_REFERRER_PAGES`] pages and
    /// [`MAX_REFERRERS`] entries, each page charged to `budget`. What lies past a limit, or past
    /// a page refused for its size, is not dropped silently: [`Referrers::cut`] says so.
    /// An answer that is not an image index is [`RegistryError::BadManifest`].
    pub async fn get_referrers_within(
        &self,
        r: &ImageRef,
        digest: &Digest,
        budget: &FetchBudget,
    ) -> Result<Option<Referrers>, RegistryError> {
        self.referrers(r, digest, Some(budget)).await
    }

    async fn referrers(
        &self,
        r: &ImageRef,
        digest: &Digest,
        budget: Option<&FetchBudget>,
    ) -> Result<Option<Referrers>, RegistryError> {
        let (registry, repository) = match r.location() {
            Location::Layout { .. } => return Ok(None),
            Location::Registry {
                registry,
                repository,
            } => (registry, repository),
        };
        if self.knows_no_referrers_api(registry) {
            return Ok(None);
        }
        let target = format!("referrers of {}@{digest}", r.name());
        let place = format!("registry {registry}");
        let base = self.remote.base_url(&self.settings, registry);
        let mut url = format!("{base}/v2/{repository}/referrers/{digest}");
        let mut out = Vec::new();
        let mut pages = 0;
        let cut = loop {
            if pages == MAX_REFERRER_PAGES {
                break Some(ReferrersCut::Pages {
                    limit: MAX_REFERRER_PAGES,
                });
            }
            pages += 1;
            let resp = self
                .send(
                    registry,
                    repository,
                    Access::Pull,
                    Op::FetchManifest,
                    &target,
                    &url,
                    |c, url| c.get(url).header(ACCEPT, OCI_INDEX),
                )
                .await?;
            // The spec says 404 for "no referrers API"; some registries answer 400 or 405 for
            // an endpoint they do not know. Falling back to the referrers tag only adds a lookup.
            let unsupported = matches!(
                resp.status(),
                StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST | StatusCode::METHOD_NOT_ALLOWED
            );
            if unsupported && pages == 1 {
                let mut hosts = crate::sync::lock(&self.no_referrers_api);
                fold::bound(&mut hosts, 1024);
                hosts.insert(registry.clone());
                return Ok(None);
            }
            let resp = self
                .success(registry, Op::FetchManifest, &target, resp)
                .await?;
            let next = resp
                .headers()
                .get(reqwest::header::LINK)
                .and_then(|v| v.to_str().ok())
                .and_then(next_link);
            let content_type = resp
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.split(';').next().unwrap_or(v).trim().to_string());
            let limit = self.settings.max_manifest_bytes;
            let body = match self
                .capped_body(registry, Op::FetchManifest, &target, resp, limit, budget)
                .await
            {
                Ok(body) => body,
                // A page too large for the limits: what was read so far stands, the rest is
                // reported as cut.
                Err(
                    source @ (RegistryError::TooLarge { .. } | RegistryError::BudgetSpent { .. }),
                ) => {
                    break Some(ReferrersCut::Page { source });
                }
                Err(e) => return Err(e),
            };
            let bad = |detail: String| RegistryError::BadManifest {
                place: place.clone(),
                target: target.clone(),
                detail,
            };
            if let Some(t) = content_type
                .as_deref()
                .filter(|t| *t != OCI_INDEX && *t != "application/json")
            {
                return Err(bad(format!("served as {t:?}, not as an image index")));
            }
            let index: ImageManifest =
                serde_json::from_slice(&body).map_err(|e| bad(e.to_string()))?;
            if index.schema_version != 2 {
                return Err(bad(format!(
                    "schemaVersion {}, not 2",
                    index.schema_version
                )));
            }
            if let Some(t) = index.media_type.as_deref().filter(|t| *t != OCI_INDEX) {
                return Err(bad(format!("mediaType {t:?}, not an image index")));
            }
            let room = MAX_REFERRERS - out.len();
            if index.manifests.len() > room {
                out.extend(index.manifests.into_iter().take(room));
                break Some(ReferrersCut::Entries {
                    limit: MAX_REFERRERS,
                });
            }
            out.extend(index.manifests);
            // The next page is fetched through `send`: another origin gets no credentials, and
            // an HTTPS registry's link to plain HTTP is refused.
            match next {
                Some(n) => {
                    url = next_page(&url, &n, "referrers page link")
                        .map_err(|c| classify(registry, Op::FetchManifest, &target, c))?;
                }
                None => break None,
            }
        };
        Ok(Some(Referrers {
            descriptors: out,
            cut,
        }))
    }

    /// A body refused past `limit` bytes and, with a budget, granted from it first: an answer
    /// whose Content-Length passes `limit` is refused unread and costs nothing; a body cut off
    /// while reading costs what was granted; the rest of the grant is given back.
    async fn capped_body(
        &self,
        registry: &str,
        op: Op,
        target: &str,
        resp: reqwest::Response,
        limit: usize,
        budget: Option<&FetchBudget>,
    ) -> Result<Vec<u8>, RegistryError> {
        if resp.content_length().is_some_and(|n| n > limit as u64) {
            return Err(RegistryError::TooLarge {
                place: format!("registry {registry}"),
                target: target.to_string(),
                limit,
            });
        }
        let Some(budget) = budget else {
            return self.body(registry, op, target, resp, limit).await;
        };
        let granted = budget.take(limit);
        let spent = || RegistryError::BudgetSpent {
            place: format!("registry {registry}"),
            target: target.to_string(),
            limit: budget.limit(),
        };
        if granted == 0 || resp.content_length().is_some_and(|n| n > granted as u64) {
            budget.give_back(granted);
            return Err(spent());
        }
        match self.body(registry, op, target, resp, granted).await {
            Ok(body) => {
                budget.give_back(granted - body.len());
                Ok(body)
            }
            // Read up to the grant and cut off: charged.
            Err(RegistryError::TooLarge { .. }) if granted < limit => Err(spent()),
            Err(e @ RegistryError::TooLarge { .. }) => Err(e),
            Err(e) => {
                budget.give_back(granted);
                Err(e)
            }
        }
    }

    /// GET `url` (a manifest or a blob): `Ok(None)` on 404, else the body (see
    /// [`Registry::capped_body`]) and its Content-Type.
    #[allow(clippy::too_many_arguments)]
    async fn fetch(
        &self,
        registry: &str,
        repository: &str,
        op: Op,
        target: &str,
        url: &str,
        limit: usize,
        budget: Option<&FetchBudget>,
    ) -> Result<Option<(Vec<u8>, Option<String>)>, RegistryError> {
        let resp = self
            .send(
                registry,
                repository,
                Access::Pull,
                op,
                target,
                url,
                |c, url| c.get(url).header(ACCEPT, ACCEPT_MANIFESTS),
            )
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let resp = self.success(registry, op, target, resp).await?;
        let content_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_string());
        let body = self
            .capped_body(registry, op, target, resp, limit, budget)
            .await?;
        Ok(Some((body, content_type)))
    }

    /// A response body within the deadline, refused past `limit` bytes.
    async fn body(
        &self,
        registry: &str,
        op: Op,
        target: &str,
        resp: reqwest::Response,
        limit: usize,
    ) -> Result<Vec<u8>, RegistryError> {
        self.deadline(registry, op, target, read_capped(resp, limit))
            .await?
            .map_err(|c| classify(registry, op, target, c))?
            .ok_or_else(|| RegistryError::TooLarge {
                place: format!("registry {registry}"),
                target: target.to_string(),
                limit,
            })
    }

    /// One request with auth and the deadline applied; any status is returned. Reads (manifests,
    /// blobs, tag lists, referrers) are retried a bounded number of times within the deadline:
    /// on 429 and 503 after what `Retry-After` asks (when the deadline allows it), on other
    /// 5xx answers and on connection failures after a short, jittered pause.
    #[allow(clippy::too_many_arguments)]
    async fn send(
        &self,
        registry: &str,
        repository: &str,
        access: Access,
        op: Op,
        target: &str,
        url: &str,
        build: impl Fn(&reqwest::Client, reqwest::Url) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, RegistryError> {
        let creds = self
            .credentials_for(registry, repository)
            .await
            .map_err(|source| RegistryError::Credentials {
                host: registry.to_string(),
                source,
            })?;
        let sent = Sent::from(creds.as_ref());
        let retries = if op.is_read() { MAX_RETRIES } else { 0 };
        let mut attempt = 0;
        loop {
            // The host's permit is waited for within the request's time, and goes with the
            // response until its body has been read (or the response is dropped).
            let until = tokio::time::Instant::now() + self.request_limit();
            let fut = async {
                let permit = self.gates.acquire(registry).await;
                if tokio::time::Instant::now() >= until {
                    // Its turn came too late: no connection is opened; the deadline says so.
                    std::future::pending::<()>().await;
                }
                let in_flight = gate::InFlight::new(permit);
                let mut resp = self
                    .remote
                    .send(
                        &self.settings,
                        creds.as_ref(),
                        registry,
                        repository,
                        access,
                        url,
                        &build,
                    )
                    .await?;
                if let Some(permit) = in_flight.answered() {
                    resp.extensions_mut().insert(Arc::new(permit));
                }
                Ok::<_, Cause>(resp)
            };
            let result = self.deadline(registry, op, target, fut).await?;
            let wait = match &result {
                Ok(resp) => match resp.status().as_u16() {
                    429 | 503 => Some(
                        resp.headers()
                            .get(reqwest::header::RETRY_AFTER)
                            .and_then(|v| v.to_str().ok())
                            .and_then(remote::parse_retry_after)
                            .map_or_else(|| backoff(attempt), Duration::from_secs),
                    ),
                    500 | 502 | 504 => Some(backoff(attempt)),
                    _ => None,
                },
                Err(c) if c.is_transport() && !c.is_timeout() && !c.is_certificate() => {
                    Some(backoff(attempt))
                }
                Err(_) => None,
            };
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
                Err(c) if c.is_timeout() => Err(RegistryError::Timeout {
                    host: registry.to_string(),
                    op,
                    target: target.to_string(),
                    seconds: self.settings.timeout.as_secs(),
                }),
                Err(c) => Err(classify_sent(registry, op, target, c, sent)),
            };
        }
    }

    /// The response if its status is a success, else the typed error.
    async fn success(
        &self,
        registry: &str,
        op: Op,
        target: &str,
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
            Err(classify_sent(registry, op, target, cause, sent))
        }
    }

    /// `fut` within the request timeout, cut to what is left of the verification's deadline
    /// (see [`with_deadline`]).
    async fn deadline<T>(
        &self,
        host: &str,
        op: Op,
        target: &str,
        fut: impl Future<Output = T>,
    ) -> Result<T, RegistryError> {
        let left = remaining_deadline();
        let limit = self.request_limit();
        tokio::time::timeout(limit, fut).await.map_err(|_| {
            if left.is_some_and(|l| l < self.settings.timeout) {
                RegistryError::DeadlineExceeded {
                    host: host.to_string(),
                    op,
                    target: target.to_string(),
                }
            } else {
                RegistryError::Timeout {
                    host: host.to_string(),
                    op,
                    target: target.to_string(),
                    seconds: self.settings.timeout.as_secs(),
                }
            }
        })
    }

    /// The time one request may take: the request timeout, cut to what is left of the
    /// deadline in scope.
    fn request_limit(&self) -> Duration {
        remaining_deadline().map_or(self.settings.timeout, |l| l.min(self.settings.timeout))
    }

    /// The credential for `repository` on `host`, from the first source that has one (see
    /// [`settings`]); a credential helper is asked here, at most once per host per TTL.
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
            Some(Found::Credential(c)) => Ok(Some(c)),
            Some(Found::Helper { helper, source }) => {
                let server = credentials::helper_server(host);
                let secret = self
                    .helpers
                    .get(&helper, &server, &source, self.settings.helper_ttl)
                    .await?;
                Ok(secret.map(|s| Credential::new(s, source)))
            }
        }
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

tokio::task_local! {
    static DEADLINE: Instant;
}

/// Run `f` with a deadline for every registry request it makes: each request's timeout is cut
/// to what is left, and no retry waits past it. The engine sets one per verification.
pub async fn with_deadline<F: Future>(deadline: Instant, f: F) -> F::Output {
    DEADLINE.scope(deadline, f).await
}

/// What is left of the deadline in scope, if one is.
fn remaining_deadline() -> Option<Duration> {
    DEADLINE
        .try_with(|d| d.saturating_duration_since(Instant::now()))
        .ok()
}

/// What is left to wait in: the deadline in scope, else one request timeout.
fn remaining_time(timeout: Duration) -> Duration {
    remaining_deadline().unwrap_or(timeout)
}

/// Whether credentials went with a request, and from where: said when access is denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    Nothing,
    From(Arc<str>),
}

impl Sent {
    fn from(c: Option<&Credential>) -> Self {
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

/// The URL of the next page: a `Link` target resolved against the page that named it. Where it
/// may lead is `send`'s to decide (no credentials to another origin, no downgrade).
fn next_page(current: &str, link: &str, what: &'static str) -> Result<String, Cause> {
    reqwest::Url::parse(current)
        .and_then(|u| u.join(link))
        .map(|u| u.to_string())
        .map_err(|_| Cause::BadUrl {
            what,
            target: link.to_string(),
        })
}

/// The target of `Link: <url>; rel="next"`.
fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params
            .split(';')
            .any(|p| p.trim().replace(' ', "") == "rel=\"next\"")
            .then(|| {
                url.trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_string()
            })
    })
}

/// The media types a manifest is served as. `application/json` is what some registries and
/// static mirrors send for any JSON; the body's own shape decides then.
const MANIFEST_MEDIA_TYPES: [&str; 4] = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

fn is_manifest_media_type(t: &str) -> bool {
    MANIFEST_MEDIA_TYPES.contains(&t)
}

/// Whether `bytes` are a manifest, and its media type: its own `mediaType` field, else what
/// the registry or the layout's index declared for it, else its shape (`manifests` makes an
/// index). `Err` says why it is not one (escaped: the text comes from the registry). With
/// `served`, `declared` is the answer's Content-Type and must be a manifest's (or
/// `application/json`, or absent).
fn manifest_media_type(
    bytes: &[u8],
    declared: Option<&str>,
    served: bool,
) -> Result<String, String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Shape {
        schema_version: Option<u64>,
        media_type: Option<String>,
        #[serde(default)]
        manifests: Option<serde::de::IgnoredAny>,
    }
    if served
        && let Some(t) = declared
        && !is_manifest_media_type(t)
        && t != "application/json"
    {
        return Err(format!(
            "served as {t:?}, which is not a manifest media type"
        ));
    }
    let shape: Shape = serde_json::from_slice(bytes).map_err(|e| {
        let what = if bytes.trim_ascii_start().first() == Some(&b'<') {
            "markup, not JSON"
        } else {
            "not a JSON manifest object"
        };
        format!("{what}: {e}")
    })?;
    match shape.schema_version {
        Some(2) => {}
        Some(v) => return Err(format!("schemaVersion {v}, not 2")),
        None => return Err("no schemaVersion".into()),
    }
    if let Some(t) = &shape.media_type
        && !is_manifest_media_type(t)
    {
        return Err(format!("mediaType {t:?} is not a manifest media type"));
    }
    let declared = declared.filter(|t| is_manifest_media_type(t));
    Ok(shape
        .media_type
        .or(declared.map(str::to_string))
        .unwrap_or_else(|| {
            if shape.manifests.is_some() {
                OCI_INDEX
            } else {
                OCI_MANIFEST
            }
            .to_string()
        }))
}

fn classify(host: &str, op: Op, target: &str, cause: Cause) -> RegistryError {
    classify_sent(host, op, target, cause, Sent::Nothing)
}

fn classify_sent(host: &str, op: Op, target: &str, cause: Cause, sent: Sent) -> RegistryError {
    let (host, target) = (host.to_string(), target.to_string());
    if matches!(cause.status(), Some(401 | 403)) {
        RegistryError::Denied {
            host,
            op,
            target,
            sent: Box::new(sent),
            source: cause,
        }
    } else if cause.is_transport() {
        RegistryError::Unreachable {
            host,
            op,
            target,
            source: cause,
        }
    } else {
        RegistryError::Protocol {
            host,
            op,
            target,
            source: cause,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// OCI image layout (https://github.com/opencontainers/image-spec/blob/main/image-layout.md)

fn layout_err(
    path: &Path,
    what: impl Into<String>,
    source: Option<std::io::Error>,
) -> RegistryError {
    RegistryError::Layout {
        path: path.to_path_buf(),
        what: what.into(),
        source,
    }
}

fn layout_index(path: &Path) -> Result<ImageManifest, RegistryError> {
    let marker = path.join("oci-layout");
    if !marker.is_file() {
        return Err(layout_err(
            path,
            "not an OCI image layout (no oci-layout file)",
            None,
        ));
    }
    let bytes = std::fs::read(path.join("index.json"))
        .map_err(|e| layout_err(path, "cannot read index.json", Some(e)))?;
    serde_json::from_slice(&bytes).map_err(|source| RegistryError::LayoutIndex {
        path: path.to_path_buf(),
        what: "index.json is not a valid image index".into(),
        source,
    })
}

fn blob_path(path: &Path, digest: &Digest) -> PathBuf {
    path.join("blobs")
        .join(digest.algorithm())
        .join(digest.hex())
}

fn layout_read_blob(
    path: &Path,
    digest: &Digest,
    limit: usize,
) -> Result<Option<Vec<u8>>, RegistryError> {
    let p = blob_path(path, digest);
    let meta = match std::fs::metadata(&p) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(layout_err(
                path,
                format!("cannot read blob {digest}"),
                Some(e),
            ));
        }
    };
    if meta.len() > limit as u64 {
        return Err(RegistryError::TooLarge {
            place: format!("OCI layout {}", path.display()),
            target: digest.to_string(),
            limit,
        });
    }
    let data = std::fs::read(&p)
        .map_err(|e| layout_err(path, format!("cannot read blob {digest}"), Some(e)))?;
    if !digest.matches(&data) {
        return Err(RegistryError::DigestMismatch {
            place: format!("OCI layout {}", path.display()),
            target: digest.to_string(),
        });
    }
    Ok(Some(data))
}

fn layout_get_manifest(
    path: &Path,
    r: &ImageRef,
    limit: usize,
) -> Result<Option<Manifest>, RegistryError> {
    let index = layout_index(path)?;
    let entry = match (r.digest(), r.tag()) {
        (Some(d), _) => index
            .manifests
            .iter()
            .find(|m| m.digest == d.as_str())
            .cloned()
            .or_else(|| {
                // Not listed in index.json (e.g. a child of a listed index): read by digest.
                Some(Descriptor {
                    media_type: String::new(),
                    digest: d.to_string(),
                    size: 0,
                    annotations: None,
                    artifact_type: None,
                })
            }),
        (None, Some(tag)) => index
            .manifests
            .iter()
            .find(|m| {
                m.annotations
                    .as_ref()
                    .and_then(|a| a.get(REF_NAME))
                    .is_some_and(|n| n == tag)
            })
            .cloned(),
        (None, None) => {
            let untagged_or_images: Vec<&Descriptor> = index
                .manifests
                .iter()
                .filter(|m| {
                    !m.annotations
                        .as_ref()
                        .and_then(|a| a.get(REF_NAME))
                        .is_some_and(|n| n.starts_with("sha256-"))
                })
                .collect();
            match untagged_or_images.as_slice() {
                [one] => Some((*one).clone()),
                [] => None,
                _ => {
                    return Err(layout_err(
                        path,
                        "holds several images; name one with :TAG or @DIGEST",
                        None,
                    ));
                }
            }
        }
    };
    let Some(entry) = entry else {
        return Ok(None);
    };
    let digest = Digest::parse(&entry.digest).map_err(|_| {
        layout_err(
            path,
            format!("index.json lists a malformed digest {:?}", entry.digest),
            None,
        )
    })?;
    let Some(bytes) = layout_read_blob(path, &digest, limit)? else {
        return Ok(None);
    };
    let declared = Some(entry.media_type).filter(|t| !t.is_empty());
    // index.json's own media type for the entry is not a served Content-Type: only the
    // manifest's shape is checked.
    let media_type = manifest_media_type(&bytes, declared.as_deref(), false).map_err(|detail| {
        RegistryError::BadManifest {
            place: format!("OCI layout {}", path.display()),
            target: digest.to_string(),
            detail,
        }
    })?;
    Ok(Some(Manifest {
        bytes,
        digest,
        media_type,
    }))
}

/// Write `data` to a temporary file beside `dest` and rename it into place.
fn write_atomic(dest: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        dest.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, dest)
}

fn layout_write_blob(path: &Path, digest: &Digest, data: &[u8]) -> Result<(), RegistryError> {
    layout_index(path)?; // refuse to write into something that is not a layout
    let p = blob_path(path, digest);
    if p.is_file() {
        return Ok(());
    }
    write_atomic(&p, data)
        .map_err(|e| layout_err(path, format!("cannot write blob {digest}"), Some(e)))
}

fn layout_set_tag(
    path: &Path,
    tag: Option<&str>,
    digest: &Digest,
    size: u64,
    media_type: &str,
) -> Result<(), RegistryError> {
    let mut index = layout_index(path)?;
    let mut annotations = BTreeMap::new();
    if let Some(tag) = tag {
        index.manifests.retain(|m| {
            m.annotations
                .as_ref()
                .and_then(|a| a.get(REF_NAME))
                .is_none_or(|n| n != tag)
        });
        annotations.insert(REF_NAME.to_string(), tag.to_string());
    }
    index.manifests.push(Descriptor {
        media_type: media_type.to_string(),
        digest: digest.to_string(),
        size,
        annotations: Some(annotations).filter(|a| !a.is_empty()),
        artifact_type: None,
    });
    let bytes = serde_json::to_vec_pretty(&index).map_err(|source| RegistryError::LayoutIndex {
        path: path.to_path_buf(),
        what: "cannot encode index.json".into(),
        source,
    })?;
    write_atomic(&path.join("index.json"), &bytes)
        .map_err(|e| layout_err(path, "cannot write index.json", Some(e)))
}

/// Create an empty OCI image layout at `path` (used to build examples and test fixtures).
pub fn init_layout(path: &Path) -> Result<(), RegistryError> {
    std::fs::create_dir_all(path.join("blobs").join("sha256"))
        .map_err(|e| layout_err(path, "cannot create the layout", Some(e)))?;
    write_atomic(
        &path.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .map_err(|e| layout_err(path, "cannot write oci-layout", Some(e)))?;
    if !path.join("index.json").is_file() {
        write_atomic(
            &path.join("index.json"),
            br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#,
        )
        .map_err(|e| layout_err(path, "cannot write index.json", Some(e)))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_header() {
        assert_eq!(
            next_link(r#"</v2/a/referrers/sha256:x?n=1&last=b>; rel="next""#).as_deref(),
            Some("/v2/a/referrers/sha256:x?n=1&last=b")
        );
        assert_eq!(next_link(r#"<https://x/y>; rel="prev""#), None);
    }

    #[test]
    fn what_is_not_a_manifest_is_refused() {
        let m = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}"#;
        let check = |b: &[u8], t: Option<&str>| manifest_media_type(b, t, true);
        assert_eq!(check(m, Some(OCI_MANIFEST)).unwrap(), OCI_MANIFEST);
        assert_eq!(check(m, Some("application/json")).unwrap(), OCI_MANIFEST);
        assert_eq!(check(m, None).unwrap(), OCI_MANIFEST);
        let index = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert_eq!(check(index, None).unwrap(), OCI_INDEX);
        assert_eq!(check(index, Some(DOCKER_LIST)).unwrap(), DOCKER_LIST);
        let html = b"<html><body>maintenance\x1b[31m</body></html>";
        let e = check(html, Some("text/html")).unwrap_err();
        assert_eq!(
            e,
            r#"served as "text/html", which is not a manifest media type"#
        );
        let e = check(html, Some("application/json")).unwrap_err();
        assert!(e.starts_with("markup, not JSON"), "{e}");
        let e = check(br#"{"schemaVersion":1,"fsLayers":[]}"#, None).unwrap_err();
        assert_eq!(e, "schemaVersion 1, not 2");
        let e = check(br#"{"layers":[]}"#, None).unwrap_err();
        assert_eq!(e, "no schemaVersion");
        let e = check(
            br#"{"schemaVersion":2,"mediaType":"text/html\u001b"}"#,
            None,
        )
        .unwrap_err();
        assert_eq!(
            e,
            r#"mediaType "text/html\u{1b}" is not a manifest media type"#
        );
        let e = check(b"[1,2]", None).unwrap_err();
        assert!(e.starts_with("not a JSON manifest object"), "{e}");
        // an OCI layout's index.json entry type is not a Content-Type: only the shape counts
        assert_eq!(
            manifest_media_type(m, Some("application/x-anything"), false).unwrap(),
            OCI_MANIFEST
        );
    }

    #[test]
    fn a_budget_grants_what_is_left_and_takes_back_what_was_not_used() {
        let b = FetchBudget::new(100);
        assert_eq!(b.take(60), 60);
        assert_eq!(b.take(60), 40);
        assert_eq!(b.take(1), 0);
        b.give_back(30);
        assert_eq!(b.spent(), 70);
        assert_eq!(b.take(usize::MAX), 30);
        assert_eq!(b.limit(), 100);
    }

    #[test]
    fn layout_round_trip_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lay");
        let reg = Registry::new(RegistrySettings::default());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let r = ImageRef::parse(&format!("oci-layout:{}:v1", p.display())).unwrap();
        // not a layout yet
        let e = rt.block_on(reg.get_manifest(&r)).unwrap_err();
        assert!(e.to_string().contains("not an OCI image layout"), "{e}");
        init_layout(&p).unwrap();
        assert!(rt.block_on(reg.get_manifest(&r)).unwrap().is_none());
        let body = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}"#;
        let d = rt
            .block_on(reg.put_manifest(&r, body, OCI_MANIFEST))
            .unwrap();
        let m = rt.block_on(reg.get_manifest(&r)).unwrap().unwrap();
        assert_eq!(m.digest, d);
        assert_eq!(m.media_type, OCI_MANIFEST);
        // tampered blob is detected
        std::fs::write(blob_path(&p, &d), b"{}").unwrap();
        let e = rt.block_on(reg.get_manifest(&r)).unwrap_err();
        assert!(matches!(e, RegistryError::DigestMismatch { .. }), "{e}");
    }
}
