//! How sigstore-tuf reaches a mirror: over HTTP with our client, a local directory or a .tar.gz
//! (read into memory within bounds), a verified cache read back, and the recorder that names the TUF role a failure is about.
//! Must not verify metadata (sigstore-tuf's `Updater` does) or write any cache.

use std::collections::HashMap;
use std::io::Read as _;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use sigstore_tuf::transport::FetchFuture;
use sigstore_tuf::{MemoryStore, MetadataStore, Repository, StoreRepository};

/// The most a `.tar.gz` mirror may hold once decompressed (real Sigstore repositories are well
/// under 1 MiB; sigstore-tuf's own limit for one target is 50 MB).
pub const MAX_ARCHIVE_BYTES: u64 = 64 << 20;

/// The most entries a `.tar.gz` mirror may hold.
pub const MAX_ARCHIVE_ENTRIES: usize = 4096;

/// Which TUF role (or target) a fetch was for: the file name sigstore-tuf asked for, never an
/// error's text.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TufRole {
    /// `N.root.json`: the root chain.
    Root,
    /// `timestamp.json`.
    Timestamp,
    /// `snapshot.json` (or `N.snapshot.json`).
    Snapshot,
    /// `targets.json` (or a delegated targets role).
    Targets,
    /// A target file (`trusted_root.json`).
    Target(String),
}

impl std::fmt::Display for TufRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TufRole::Root => f.write_str("root"),
            TufRole::Timestamp => f.write_str("timestamp"),
            TufRole::Snapshot => f.write_str("snapshot"),
            TufRole::Targets => f.write_str("targets"),
            TufRole::Target(t) => write!(f, "target {t}"),
        }
    }
}

impl TufRole {
    fn of_metadata(name: &str) -> Self {
        if name.ends_with("root.json") {
            TufRole::Root
        } else if name.ends_with("timestamp.json") {
            TufRole::Timestamp
        } else if name.ends_with("snapshot.json") {
            TufRole::Snapshot
        } else {
            TufRole::Targets
        }
    }
}

/// A repository that remembers what was asked for last: when the update fails, that is the
/// role it failed on (sigstore-tuf verifies each file right after fetching it).
pub(super) struct Recording<R> {
    inner: R,
    last: Arc<Mutex<TufRole>>,
}

impl<R> Recording<R> {
    pub(super) fn new(inner: R) -> (Self, Arc<Mutex<TufRole>>) {
        let last = Arc::new(Mutex::new(TufRole::Root));
        (
            Recording {
                inner,
                last: Arc::clone(&last),
            },
            last,
        )
    }

    fn note(&self, role: TufRole) {
        *crate::sync::lock(&self.last) = role;
    }
}

impl<R: Repository> Repository for Recording<R> {
    fn fetch_metadata<'a>(&'a self, name: &'a str, max_length: u64) -> FetchFuture<'a> {
        self.note(TufRole::of_metadata(name));
        self.inner.fetch_metadata(name, max_length)
    }

    fn fetch_target<'a>(&'a self, path: &'a str, max_length: u64) -> FetchFuture<'a> {
        self.note(TufRole::Target(super::TRUSTED_ROOT_TARGET.to_string()));
        self.inner.fetch_target(path, max_length)
    }
}

/// A TUF repository in a local directory: metadata at its top (as Sigstore's mirrors lay it
/// out) or under `metadata/` (as python-tuf writes one), targets under `targets/`. Each file is
/// read at most the length sigstore-tuf allows for it.
pub(super) struct DirRepository {
    metadata: PathBuf,
    targets: PathBuf,
}

impl DirRepository {
    pub(super) fn new(dir: &Path) -> Self {
        let nested = dir.join("metadata");
        DirRepository {
            metadata: if nested.is_dir() {
                nested
            } else {
                dir.to_path_buf()
            },
            targets: dir.join("targets"),
        }
    }
}

/// A file under `base`, at most `max` bytes; `None` when there is none.
fn read_bounded(base: &Path, name: &str, max: u64) -> sigstore_tuf::Result<Option<Vec<u8>>> {
    let rel = Path::new(name);
    if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(sigstore_tuf::Error::Malformed(format!(
            "unsafe repository path {name:?}"
        )));
    }
    let path = base.join(rel);
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(sigstore_tuf::Error::io(
                format!("opening {}", path.display()),
                e,
            ));
        }
    };
    let mut bytes = Vec::new();
    file.take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| sigstore_tuf::Error::io(format!("reading {}", path.display()), e))?;
    if bytes.len() as u64 > max {
        return Err(sigstore_tuf::Error::transport(format!(
            "{} exceeds max length {max}",
            path.display()
        )));
    }
    Ok(Some(bytes))
}

impl Repository for DirRepository {
    fn fetch_metadata<'a>(&'a self, name: &'a str, max_length: u64) -> FetchFuture<'a> {
        let res = read_bounded(&self.metadata, name, max_length);
        Box::pin(async move { res })
    }

    fn fetch_target<'a>(&'a self, path: &'a str, max_length: u64) -> FetchFuture<'a> {
        let res = read_bounded(&self.targets, path, max_length);
        Box::pin(async move { res })
    }
}

/// A TUF repository over HTTP(S), fetched with the caller's client (its timeouts, no
/// redirects): metadata at the mirror's top, targets under `targets/`. 404 and 403 are "no
/// such file" (object stores answer 403), as sigstore-tuf's own `HttpRepository` does; that
/// one builds a client of its own each time it is made, loading the system's certificates.
pub(super) struct HttpMirror {
    base: url::Url,
    client: reqwest::Client,
}

/// `url` as an error says it: without its password.
fn said(url: &url::Url) -> String {
    super::without_password(url.as_str())
}

impl HttpMirror {
    pub(super) fn new(mirror: &str, client: reqwest::Client) -> sigstore_tuf::Result<Self> {
        let with_slash = if mirror.ends_with('/') {
            mirror.to_string()
        } else {
            format!("{mirror}/")
        };
        let base = url::Url::parse(&with_slash).map_err(|e| {
            let mirror = super::without_password(mirror);
            sigstore_tuf::Error::transport_with_source(format!("invalid mirror URL {mirror:?}"), e)
        })?;
        Ok(HttpMirror { base, client })
    }

    async fn get(&self, path: &str, max: u64) -> sigstore_tuf::Result<Option<Vec<u8>>> {
        use sigstore_tuf::Error;
        let url = self
            .base
            .join(path)
            .map_err(|e| Error::transport_with_source(format!("invalid URL {path:?}"), e))?;
        let resp = self.client.get(url.clone()).send().await.map_err(|e| {
            Error::transport_with_source(format!("GET {} failed", said(&url)), e.without_url())
        })?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND || status == reqwest::StatusCode::FORBIDDEN {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(Error::transport(format!(
                "GET {} returned status {status}",
                said(&url)
            )));
        }
        let limit = usize::try_from(max).unwrap_or(usize::MAX);
        match crate::registry::read_body_capped(resp, limit).await {
            Ok(Some(body)) => Ok(Some(body)),
            Ok(None) => Err(Error::transport(format!(
                "{}: larger than {max} bytes",
                said(&url)
            ))),
            Err(e) => Err(Error::transport_with_source(
                format!("reading {} failed", said(&url)),
                match e {
                    // reqwest's error names the URL, password and all.
                    crate::registry::Cause::Transport(e) => {
                        crate::registry::Cause::Transport(e.without_url())
                    }
                    other => other,
                },
            )),
        }
    }
}

impl Repository for HttpMirror {
    fn fetch_metadata<'a>(&'a self, name: &'a str, max_length: u64) -> FetchFuture<'a> {
        Box::pin(self.get(name, max_length))
    }

    fn fetch_target<'a>(&'a self, path: &'a str, max_length: u64) -> FetchFuture<'a> {
        Box::pin(async move { self.get(&format!("targets/{path}"), max_length).await })
    }
}

/// Why a `.tar.gz` mirror could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    /// Not readable, not gzip, not tar.
    #[error("TUF mirror archive {}: cannot be read", path.display())]
    Read {
        /// The archive.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// Over [`MAX_ARCHIVE_BYTES`] or [`MAX_ARCHIVE_ENTRIES`].
    #[error(
        "TUF mirror archive {}: larger than {MAX_ARCHIVE_BYTES} bytes or {MAX_ARCHIVE_ENTRIES} entries",
        path.display()
    )]
    TooLarge {
        /// The archive.
        path: PathBuf,
    },
}

/// A `.tar.gz` TUF repository read into memory (the same layouts as [`DirRepository`]), served
/// through sigstore-tuf's own store-backed repository: metadata by name, targets under
/// `targets/`. Blocking: call it off the async workers.
pub(super) fn archive_repository(
    path: &Path,
) -> Result<StoreRepository<MemoryStore>, ArchiveError> {
    let read_err = |source| ArchiveError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    // The compressed bytes are bounded too, not only what they expand to: a stream of empty
    // deflate blocks expands to nothing and would be read without end.
    let size = file.metadata().map_err(read_err)?.len();
    if size > MAX_ARCHIVE_BYTES {
        return Err(ArchiveError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    let gz =
        flate2::read::GzDecoder::new(file.take(MAX_ARCHIVE_BYTES + 1)).take(MAX_ARCHIVE_BYTES + 1);
    let mut archive = tar::Archive::new(gz);
    let mut files: HashMap<String, Vec<u8>> = HashMap::new();
    let mut total = 0u64;
    for (n, entry) in archive.entries().map_err(read_err)?.enumerate() {
        let mut entry = entry.map_err(read_err)?;
        if n >= MAX_ARCHIVE_ENTRIES {
            return Err(ArchiveError::TooLarge {
                path: path.to_path_buf(),
            });
        }
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry.path().map_err(read_err)?.into_owned();
        let parts: Vec<String> = name
            .components()
            .filter_map(|c| match c {
                Component::Normal(p) => Some(p.to_string_lossy().into_owned()),
                _ => None,
            })
            .collect();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).map_err(read_err)?;
        total += bytes.len() as u64;
        if total > MAX_ARCHIVE_BYTES {
            return Err(ArchiveError::TooLarge {
                path: path.to_path_buf(),
            });
        }
        let key = match parts.first().map(String::as_str) {
            Some("metadata") => parts[1..].join("/"),
            _ => parts.join("/"),
        };
        files.insert(key, bytes);
    }
    let store = MemoryStore::new();
    for (name, bytes) in files {
        // MemoryStore's store never fails.
        let _ = store.store(&name, &bytes);
    }
    Ok(StoreRepository::new(store))
}

/// A cache directory sigstore-tuf wrote (through its `FileStore`), read back as a repository,
/// so that loading it verifies each file once: a cache-only load needs no store besides (a
/// store would be seeded from the same files and verified a second time). Root versions come
/// from `root_history/`; a version-prefixed name (`3.snapshot.json`) from that file, else from
/// the unprefixed copy the cache keeps (`snapshot.json`: sigstore-tuf checks the version the
/// timestamp or snapshot pins); a target (`<hash>.trusted_root.json`) from `targets/` by its
/// name (sigstore-tuf checks its length and hashes). Nothing is written.
pub(super) struct CacheRepository {
    dir: PathBuf,
    /// Set once sigstore-tuf asks for anything but `N.root.json`: the root chain is walked
    /// first, so a later `N.root.json` is a delegated role's file, not a root version.
    past_roots: AtomicBool,
}

impl CacheRepository {
    pub(super) fn new(dir: &Path) -> Self {
        CacheRepository {
            dir: dir.to_path_buf(),
            past_roots: AtomicBool::new(false),
        }
    }

    fn metadata(&self, name: &str, max: u64) -> sigstore_tuf::Result<Option<Vec<u8>>> {
        let unprefixed = name
            .split_once('.')
            .filter(|(v, _)| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
            .map(|(_, rest)| rest);
        if unprefixed == Some("root.json") && !self.past_roots.load(Ordering::Relaxed) {
            return read_bounded(&self.dir.join("root_history"), name, max);
        }
        self.past_roots.store(true, Ordering::Relaxed);
        match (read_bounded(&self.dir, name, max)?, unprefixed) {
            (None, Some(rest)) => read_bounded(&self.dir, rest, max),
            (found, _) => Ok(found),
        }
    }
}

/// `path` without the hash a consistent-snapshot repository prefixes to its file name.
pub(super) fn without_hash_prefix(path: &str) -> String {
    let (dir, file) = path.rsplit_once('/').map_or(("", path), |(d, f)| (d, f));
    let file = match file.split_once('.') {
        Some((h, rest))
            if matches!(h.len(), 64 | 128) && h.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            rest
        }
        _ => file,
    };
    if dir.is_empty() {
        file.to_string()
    } else {
        format!("{dir}/{file}")
    }
}

impl Repository for CacheRepository {
    fn fetch_metadata<'a>(&'a self, name: &'a str, max_length: u64) -> FetchFuture<'a> {
        let res = self.metadata(name, max_length);
        Box::pin(async move { res })
    }

    fn fetch_target<'a>(&'a self, path: &'a str, max_length: u64) -> FetchFuture<'a> {
        let res = read_bounded(
            &self.dir.join("targets"),
            &without_hash_prefix(path),
            max_length,
        );
        Box::pin(async move { res })
    }
}
