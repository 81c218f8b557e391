//! Fetching and pushing manifests and blobs: remote registries through `remote` (the
//! distribution HTTP API on reqwest: token and basic auth, HTTPS then HTTP where allowed), and
//! OCI image layout directories on disk (`layout`). Nothing here interprets signatures.
//! "Not found" is an `Ok(None)`; every other failure is a [`RegistryError`], never an absence.
//!
//! Rooms: `Registry`'s client API (this file); `request` (one request: credentials, gate,
//! deadline, retries, bodies within limits); `listing` (tags and referrers, paged);
//! `manifest` (manifests and descriptors); `layout`; `remote` (HTTP, redirects, token auth);
//! `error`; `budget`; `request_scope` (what a request takes from its task).

use reqwest::header::{CONTENT_TYPE, LOCATION};

mod budget;
mod credentials;
mod error;
pub mod fold;
pub mod gate;
mod layout;
mod listing;
mod manifest;
mod pem_file;
mod remote;
mod request;
mod request_scope;
mod settings;
pub use budget::FetchBudget;
pub use credentials::{AuthConfig, Credential, CredentialError, CredentialId, Secret};
pub use error::{Op, RegistryError, RegistryErrorKind, Sent, Store};
pub use layout::init_layout;
pub use listing::{
    MAX_REFERRER_PAGES, MAX_REFERRERS, MAX_TAG_PAGES, MAX_TAGS, Referrers, ReferrersCut,
};
pub use manifest::{
    DOCKER_LIST, DOCKER_MANIFEST, Descriptor, ImageManifest, Manifest, OCI_INDEX, OCI_MANIFEST,
};
pub use pem_file::{PairError, certified_key};
pub use remote::Cause;
/// A response body, refused past a size (`Ok(None)`); for other API clients of this crate.
pub use remote::read_body_capped;
use remote::{Access, Remote, resolve_url};
use request::Call;
pub use request_scope::{
    Pace, RequestCredentials, RequestScope, request_credentials, with_deadline, with_pace,
    with_request_credentials,
};
pub use settings::{CredentialOrHelper, RegistrySettings, SchemeChoice, SettingsError, TlsFile};

use crate::reference::{Digest, ImageRef, Location};

/// The one client for all artifact stores: remote registries and OCI layouts.
pub struct Registry {
    remote: Remote,
    helpers: credentials::Helpers,
    settings: RegistrySettings,
    /// Requests in flight per host, bounded process-wide and shared fairly.
    gates: gate::Gates,
    /// What hosts answered the first page of a referrers request: `false` for "no referrers
    /// API" (not asked again by this process), `true` for a list.
    referrers_api: std::sync::Mutex<std::collections::HashMap<String, bool>>,
    /// Largest attestation blob fetched (see [`MAX_ATTESTATION_BYTES`]).
    max_attestation_bytes: usize,
}

/// What [`Registry::reload_tls_files`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TlsReload {
    /// Files whose new content is used from now on.
    pub changed: Vec<std::path::PathBuf>,
    /// Files that cannot be read or used now (their content before stays), with why.
    pub failed: Vec<(std::path::PathBuf, String)>,
}

/// Largest attestation blob fetched by default (a DSSE envelope layer or a Sigstore bundle
/// carrying one): SBOMs of large images run to tens of MiB. Its own limit, not the blob limit
/// of the settings; see [`Registry::with_max_attestation_bytes`].
pub const MAX_ATTESTATION_BYTES: usize = 32 << 20;

/// Where a reference's manifests and blobs are: the store of its errors.
fn store_of(r: &ImageRef) -> Store {
    match r.location() {
        Location::Layout { path } => Store::Layout(path.clone()),
        Location::Registry { registry, .. } => Store::Registry(registry.clone()),
    }
}

impl Registry {
    /// A client with these settings; nothing is connected until a request needs it.
    pub fn new(settings: RegistrySettings) -> Self {
        Registry {
            remote: Remote::new(),
            helpers: credentials::Helpers::default(),
            gates: gate::Gates::new(settings.max_connections_per_host),
            settings,
            referrers_api: std::sync::Mutex::new(std::collections::HashMap::new()),
            max_attestation_bytes: MAX_ATTESTATION_BYTES,
        }
    }

    /// This client with another limit on attestation blobs (`--max-attestation-bytes`).
    pub fn with_max_attestation_bytes(mut self, limit: usize) -> Self {
        self.max_attestation_bytes = limit;
        self
    }

    /// The largest attestation blob this client fetches.
    pub fn max_attestation_bytes(&self) -> usize {
        self.max_attestation_bytes
    }

    /// Read the CA, client certificate and key files of the settings again (blocking; `serve`
    /// does every reload interval): each whose content changed and still holds what it must
    /// is used for the connections made from now on, so a rotated registry CA or client
    /// certificate (a renewed cert-manager Secret) takes effect without a restart. One that
    /// cannot be read or used is reported, and the content before it stays.
    pub fn reload_tls_files(&self) -> TlsReload {
        let mut out = TlsReload::default();
        let mut changed = Vec::new();
        for (file, which) in self.settings.tls_files() {
            match pem_file::reread_pem(&file.path, which) {
                Ok(pem) if pem == self.remote.tls_content(&file) => {}
                Ok(pem) => {
                    out.changed.push(file.path.clone());
                    changed.push((file.path, pem));
                }
                Err(e) => out.failed.push((file.path, crate::error_chain(&e))),
            }
        }
        // A host's files are put in force together, and only if they can be used together (a
        // certificate renewed without its key, or one read half way through a swap, waits);
        // again until no host holds back a file (a file two hosts share waits for both).
        while self.hold_back_unusable(&mut changed, &mut out) {}
        self.remote.reload_tls(changed);
        out
    }

    /// Take out of `changed` the files of the first host whose files, with those changes,
    /// cannot be used together; whether one was.
    fn hold_back_unusable(
        &self,
        changed: &mut Vec<(std::path::PathBuf, std::sync::Arc<[u8]>)>,
        out: &mut TlsReload,
    ) -> bool {
        for files in self.settings.tls_hosts() {
            let changed_now = |f: &&settings::PemFile| changed.iter().any(|(p, _)| *p == f.path);
            if !files.iter().flatten().any(changed_now) {
                continue;
            }
            let content = |f: Option<&settings::PemFile>| {
                f.map(|f| match changed.iter().find(|(p, _)| *p == f.path) {
                    Some((_, pem)) => pem.clone(),
                    None => self.remote.tls_content(f),
                })
            };
            let [ca, cert, key] = files.map(content);
            if let Err(why) = remote::tls_usable(ca.as_deref(), cert.as_deref(), key.as_deref()) {
                for f in files.iter().flatten() {
                    changed.retain(|(p, _)| *p != f.path);
                    out.changed.retain(|p| *p != f.path);
                    if !out.failed.iter().any(|(p, _)| *p == f.path) {
                        out.failed.push((f.path.clone(), why.clone()));
                    }
                }
                return true;
            }
        }
        false
    }

    /// The settings it was built with.
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
    /// manifest's) is [`RegistryErrorKind::NotAManifest`], never taken for one.
    pub async fn get_manifest(&self, r: &ImageRef) -> Result<Option<Manifest>, RegistryError> {
        self.manifest(r, self.settings.max_manifest_bytes, None)
            .await
    }

    /// [`Registry::get_manifest`] refused past `max_bytes` (and the manifest limit of the
    /// settings), charged to `budget`.
    pub async fn get_manifest_capped(
        &self,
        r: &ImageRef,
        max_bytes: usize,
        budget: &FetchBudget,
    ) -> Result<Option<Manifest>, RegistryError> {
        let limit = max_bytes.min(self.settings.max_manifest_bytes);
        self.manifest(r, limit, Some(budget)).await
    }

    async fn manifest(
        &self,
        r: &ImageRef,
        limit: usize,
        budget: Option<&FetchBudget>,
    ) -> Result<Option<Manifest>, RegistryError> {
        let (registry, repository) = match r.location() {
            Location::Layout { path } => return layout::get_manifest(path, r, limit),
            Location::Registry {
                registry,
                repository,
            } => (registry, repository),
        };
        let target = r.to_string();
        let call = Call {
            registry,
            repository,
            op: Op::FetchManifest,
            target: &target,
        };
        let part = r.reference_part().unwrap_or_else(|| "latest".to_string());
        let url = format!(
            "{}/v2/{repository}/manifests/{part}",
            self.remote.base_url(&self.settings, registry)
        );
        let Some((bytes, header_type)) = self.fetch(call, &url, limit, budget).await? else {
            return Ok(None);
        };
        // The digest is what we compute from the bytes, never what a header claims.
        let digest = Digest::sha256_of(&bytes);
        let media_type = manifest::manifest_media_type(&bytes, header_type.as_deref(), true)
            .map_err(|detail| call.error(RegistryErrorKind::NotAManifest { detail }))?;
        if let Some(want) = r.digest()
            && !want.matches(&bytes)
        {
            return Err(call.error(RegistryErrorKind::DigestMismatch));
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

    /// [`Registry::get_blob`] refused past `max_bytes` (and the blob limit of the settings):
    /// before any request when the descriptor admits it, else while reading; charged to
    /// `budget`.
    pub async fn get_blob_capped(
        &self,
        r: &ImageRef,
        desc: &Descriptor,
        max_bytes: usize,
        budget: &FetchBudget,
    ) -> Result<Vec<u8>, RegistryError> {
        let limit = max_bytes.min(self.settings.max_blob_bytes);
        self.blob(r, desc, limit, Some(budget)).await
    }

    /// An attestation blob (a DSSE envelope, a Sigstore bundle carrying one), refused past
    /// [`Registry::max_attestation_bytes`] (not the blob limit of the settings) and past the
    /// size its descriptor declares: before any request when the descriptor admits it, else
    /// while reading (a descriptor that understates is not believed); charged to `budget`.
    pub async fn get_attestation_blob(
        &self,
        r: &ImageRef,
        desc: &Descriptor,
        budget: &FetchBudget,
    ) -> Result<Vec<u8>, RegistryError> {
        // Over the limit, the refusal names the limit; within it, the read stops at the size
        // declared.
        let declared = usize::try_from(desc.size).unwrap_or(usize::MAX);
        let cap = declared.min(self.max_attestation_bytes);
        self.blob(r, desc, cap, Some(budget)).await
    }

    async fn blob(
        &self,
        r: &ImageRef,
        desc: &Descriptor,
        limit: usize,
        budget: Option<&FetchBudget>,
    ) -> Result<Vec<u8>, RegistryError> {
        let digest = Digest::parse(&desc.digest).map_err(|_| {
            RegistryError::new(
                store_of(r),
                Op::FetchBlob,
                format!("{:?}", desc.digest),
                RegistryErrorKind::Malformed {
                    detail: "descriptor digest is malformed".into(),
                },
            )
        })?;
        let (registry, repository) = match r.location() {
            Location::Layout { path } => {
                return layout::get_blob(path, &digest, desc.size, limit);
            }
            Location::Registry {
                registry,
                repository,
            } => (registry, repository),
        };
        let target = format!("{}@{digest}", r.name());
        let call = Call {
            registry,
            repository,
            op: Op::FetchBlob,
            target: &target,
        };
        if desc.size > limit as u64 {
            return Err(call.error(RegistryErrorKind::TooLarge { limit }));
        }
        let url = format!(
            "{}/v2/{repository}/blobs/{digest}",
            self.remote.base_url(&self.settings, registry)
        );
        let Some((data, _)) = self.fetch(call, &url, limit, budget).await? else {
            return Err(call.error(RegistryErrorKind::NotFound));
        };
        if !digest.matches(&data) {
            return Err(call.error(RegistryErrorKind::DigestMismatch));
        }
        Ok(data)
    }

    /// Store a blob in `r`'s repository; returns its digest.
    pub async fn put_blob(&self, r: &ImageRef, data: &[u8]) -> Result<Digest, RegistryError> {
        let (registry, repository) = match r.location() {
            Location::Layout { path } => return layout::put_blob(path, r, data),
            Location::Registry {
                registry,
                repository,
            } => (registry, repository),
        };
        let digest = Digest::sha256_of(data);
        let target = format!("{}@{digest}", r.name());
        let call = Call {
            registry,
            repository,
            op: Op::PushBlob,
            target: &target,
        };
        let base = self.remote.base_url(&self.settings, registry);
        let start = format!("{base}/v2/{repository}/blobs/uploads/");
        let resp = self
            .send(call, Access::Push, &start, |c, url| {
                c.post(url).header(reqwest::header::CONTENT_LENGTH, 0)
            })
            .await?;
        let resp = self.success(call, resp).await?;
        // The upload URL is the registry's to choose; `send` decides what it may receive
        // (no credentials to another origin, no downgrade to plain HTTP).
        let mut url = resp
            .headers()
            .get(LOCATION)
            .ok_or(Cause::Upload)
            .and_then(|l| resolve_url("upload Location", resp.url(), l))
            .map_err(|c| call.failed(c, Sent::Nothing))?;
        url.query_pairs_mut().append_pair("digest", digest.as_str());
        let resp = self
            .send(call, Access::Push, url.as_str(), |c, url| {
                c.put(url)
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .body(data.to_vec())
            })
            .await?;
        self.success(call, resp).await?;
        Ok(digest)
    }

    /// Store a manifest under `r`'s tag (all referenced blobs must be stored first).
    pub async fn put_manifest(
        &self,
        r: &ImageRef,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<Digest, RegistryError> {
        let (registry, repository) = match r.location() {
            Location::Layout { path } => {
                return layout::put_manifest(path, r, bytes, media_type);
            }
            Location::Registry {
                registry,
                repository,
            } => (registry, repository),
        };
        let digest = Digest::sha256_of(bytes);
        let target = r.to_string();
        let call = Call {
            registry,
            repository,
            op: Op::PushManifest,
            target: &target,
        };
        let part = r.reference_part().unwrap_or_else(|| digest.to_string());
        let url = format!(
            "{}/v2/{repository}/manifests/{part}",
            self.remote.base_url(&self.settings, registry)
        );
        let resp = self
            .send(call, Access::Push, &url, |c, url| {
                c.put(url)
                    .header(CONTENT_TYPE, media_type)
                    .body(bytes.to_vec())
            })
            .await?;
        self.success(call, resp).await?;
        Ok(digest)
    }
}
