//! TUF-updated trusted roots: where a root's TUF repository is (`TufMirror`, `TufSource`), an
//! update through sigstore-tuf into a staged cache swapped in only when all of it verified, and
//! the cached root loaded offline (re-verified). Must not parse policies or verify signatures.
//!
//! The TUF client is sigstore-tuf's `Updater` (what sigstore-trust-root's `tuf` feature runs):
//! root chaining, rollback and freeze checks, length limits (`UpdaterConfig::default()`: root
//! 512,000 bytes, timestamp 16,384, snapshot 2,000,000, targets 5,000,000, a target 50,000,000,
//! 32 root rotations, 32 delegations). ocigate supplies the transport (its own HTTP client with
//! no redirects and timeouts, a directory, a .tar.gz) and the cache discipline: sigstore-tuf
//! writes each file to its store as it verifies it, so an update that fails half-way would leave
//! a cache that no longer verifies as a whole (a new timestamp beside the old snapshot); the
//! update therefore runs on a copy and replaces the cache only after the target verified and
//! parsed as a usable trusted root.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt as _;
use sigstore_tuf::{FileStore, Repository, TrustedMetadataSet, Updater};

use super::{TrustRoot, TrustRootError};
use crate::reference::Digest;

mod staging;
mod transport;
use staging::{staging_dir, swap_in};
pub use transport::{ArchiveError, MAX_ARCHIVE_BYTES, MAX_ARCHIVE_ENTRIES, TufRole};
use transport::{CacheRepository, DirRepository, HttpMirror, Recording};

/// The target a TUF trust root reads.
pub const TRUSTED_ROOT_TARGET: &str = sigstore_trust_root::TRUSTED_ROOT_TARGET;

/// The default time an update may take, all fetches included.
pub const DEFAULT_UPDATE_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a TUF repository is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TufMirror {
    /// An `http://` or `https://` base URL (metadata at its top, targets under `targets/`).
    Http(String),
    /// A local directory (air-gapped).
    Directory(PathBuf),
    /// A local `.tar.gz` of a repository (air-gapped).
    Archive(PathBuf),
}

/// The mirror as said in messages, logs and `trust-root show`: a URL's password is left out
/// (it is sent to the mirror as Basic auth, never printed).
impl std::fmt::Display for TufMirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TufMirror::Http(u) => f.write_str(&crate::escape_text(&without_password(u))),
            TufMirror::Directory(_) | TufMirror::Archive(_) => f.write_str(&self.identity()),
        }
    }
}

/// A local mirror's path in one spelling, whichever way it was written (relative to the working
/// directory or to a policy file, `./`, a trailing `/`): the cache is named after it, so
/// `trust-root update --mirror` and a policy naming the same directory share one cache.
fn local_path(p: &Path) -> PathBuf {
    let absolute = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    absolute.components().collect()
}

/// `url` with its password, if it has one, replaced by `REDACTED`.
pub(crate) fn without_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            // Only a URL that cannot have a password fails this, and it has none.
            let _ = u.set_password(Some("REDACTED"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

impl TufMirror {
    /// The mirror as written, password included: what tells one cache from another.
    fn identity(&self) -> String {
        match self {
            TufMirror::Http(u) => crate::escape_text(u),
            TufMirror::Directory(p) | TufMirror::Archive(p) => {
                crate::escape_text(&p.display().to_string())
            }
        }
    }

    /// Read a mirror as a policy or the command line writes it: an http(s) URL (checked), a
    /// path ending in `.tar.gz` or `.tgz`, or a directory; relative paths are joined to `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Self, TufError> {
        let lower = text.to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            let url = reqwest::Url::parse(text).map_err(|source| TufError::MirrorUrl {
                mirror: crate::bounded::cut(text, 256).to_string(),
                source,
            })?;
            if url.host_str().is_none_or(str::is_empty) {
                return Err(TufError::MirrorUrl {
                    mirror: crate::bounded::cut(text, 256).to_string(),
                    source: url::ParseError::EmptyHost,
                });
            }
            return Ok(TufMirror::Http(url.to_string()));
        }
        if lower.contains("://") {
            return Err(TufError::MirrorScheme {
                mirror: crate::bounded::cut(text, 256).to_string(),
            });
        }
        let path = local_path(&base.join(text));
        if lower.ends_with(".tar.gz") || lower.ends_with(".tgz") {
            Ok(TufMirror::Archive(path))
        } else {
            Ok(TufMirror::Directory(path))
        }
    }
}

/// A TUF trust root: its name, mirror and the bootstrap root.json trust begins with.
#[derive(Debug, Clone)]
pub struct TufSource {
    name: String,
    mirror: TufMirror,
    bootstrap: Arc<[u8]>,
    embedded: Option<&'static str>,
    /// Where a policy declared it: (line, column).
    declared_at: Option<(u64, u64)>,
}

/// The built-in TUF trust roots: `public-good` and `github`.
pub const BUILTIN_TUF_ROOTS: [&str; 2] = ["public-good", "github"];

impl TufSource {
    /// A TUF root of one's own. The bootstrap must be TUF root metadata (checked here); its
    /// signatures are checked where trust begins from it, once per load: by the cache load
    /// and the update (sigstore-tuf's `Updater` verifies it), or by
    /// [`TufSource::check_bootstrap`] where neither runs.
    pub fn new(name: &str, mirror: TufMirror, bootstrap: Vec<u8>) -> Result<Self, TufError> {
        sigstore_tuf::Metadata::<sigstore_tuf::Root>::from_slice(&bootstrap)
            .map_err(|e| bootstrap_err(name, e))?;
        Ok(TufSource {
            name: name.to_string(),
            mirror,
            bootstrap: bootstrap.into(),
            embedded: None,
            declared_at: None,
        })
    }

    /// The same root, noted as declared at `line` and `column` of a policy (for its messages).
    pub fn declared_at(mut self, line: u64, column: u64) -> Self {
        self.declared_at = Some((line, column));
        self
    }

    /// Where a policy declared it (line, column), when one did.
    pub fn declaration(&self) -> Option<(u64, u64)> {
        self.declared_at
    }

    /// Whether the bootstrap is signed by its own threshold of keys, for a load that reads no
    /// cache (a cache load checks it itself).
    pub fn check_bootstrap(&self) -> Result<(), TufError> {
        TrustedMetadataSet::from_root(&self.bootstrap)
            .map(|_| ())
            .map_err(|e| bootstrap_err(&self.name, e))
    }

    /// `public-good` (Sigstore's mirror) or `github` (GitHub's instance), with the bootstrap
    /// root and the trusted root snapshot sigstore-trust-root embeds.
    pub fn builtin(name: &str) -> Option<Self> {
        use sigstore_trust_root::SigstoreInstance;
        let (instance, snapshot) = match name {
            "public-good" => (
                SigstoreInstance::PublicGood,
                sigstore_trust_root::SIGSTORE_PRODUCTION_TRUSTED_ROOT,
            ),
            "github" => (
                SigstoreInstance::GitHub,
                sigstore_trust_root::SIGSTORE_GITHUB_TRUSTED_ROOT,
            ),
            _ => return None,
        };
        Some(TufSource {
            name: name.to_string(),
            mirror: TufMirror::Http(instance.tuf_url().to_string()),
            bootstrap: instance.tuf_root().into(),
            embedded: Some(snapshot),
            declared_at: None,
        })
    }

    /// The same root with a relative local mirror joined to `base` (the policy's directory).
    pub fn with_base(mut self, base: &Path) -> Self {
        match &mut self.mirror {
            TufMirror::Directory(p) | TufMirror::Archive(p) if p.is_relative() => {
                *p = local_path(&base.join(&*p));
            }
            _ => {}
        }
        self
    }

    /// The name authorities refer to it by.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its mirror.
    pub fn mirror(&self) -> &TufMirror {
        &self.mirror
    }

    /// The trusted root compiled into ocigate for a built-in root (used while no verified
    /// cache exists); `None` for a root of one's own.
    pub fn embedded_snapshot(&self) -> Option<&'static str> {
        self.embedded
    }

    /// This root's cache directory under `cache_root`: its name and a digest of its mirror and
    /// bootstrap root, so that a changed mirror or bootstrap starts a new cache.
    pub fn cache_dir(&self, cache_root: &Path) -> PathBuf {
        let mut id = self.mirror.identity().into_bytes();
        id.push(0);
        id.extend_from_slice(&self.bootstrap);
        let digest = Digest::sha256_of(&id);
        let hex = digest.as_str().trim_start_matches("sha256:");
        let safe: String = self
            .name
            .chars()
            .take(64)
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        cache_root.join(format!("{safe}-{}", &hex[..16]))
    }
}

/// The cache root this process was told to use (`--tuf-cache-dir`), set once at start-up.
static CACHE_ROOT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Use `dir` as this process's TUF cache root (the first call wins; later ones are ignored).
pub fn set_cache_root(dir: PathBuf) {
    let _ = CACHE_ROOT.set(dir);
}

/// The TUF cache root: what [`set_cache_root`] set, else [`default_cache_root`].
pub fn cache_root() -> Option<PathBuf> {
    CACHE_ROOT.get().cloned().or_else(default_cache_root)
}

/// The default cache root: `$XDG_CACHE_HOME/ocigate/tuf`, else `$HOME/.cache/ocigate/tuf`.
pub fn default_cache_root() -> Option<PathBuf> {
    let nonempty = |v: &str| {
        std::env::var_os(v)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
    };
    nonempty("XDG_CACHE_HOME")
        .or_else(|| nonempty("HOME").map(|h| h.join(".cache")))
        .map(|c| c.join("ocigate").join("tuf"))
}

/// A TUF metadata file's version and expiry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RoleState {
    /// Its version.
    pub version: u64,
    /// When it expires (RFC 3339).
    pub expires: String,
    /// The same, in seconds since the epoch.
    #[serde(skip)]
    pub expires_unix: i64,
}

impl RoleState {
    fn new(version: u64, expires: jiff::Timestamp) -> Self {
        RoleState {
            version,
            expires: expires.to_string(),
            expires_unix: expires.as_second(),
        }
    }
}

/// A verified TUF state: the metadata in force and the `trusted_root.json` it pins.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TufState {
    /// root.json.
    pub root: RoleState,
    /// timestamp.json.
    pub timestamp: Option<RoleState>,
    /// snapshot.json.
    pub snapshot: Option<RoleState>,
    /// targets.json.
    pub targets: Option<RoleState>,
    /// `sha256:<hex>` of the trusted_root.json target.
    pub target_digest: String,
    /// The target's text.
    #[serde(skip)]
    pub trusted_root_json: String,
}

impl TufState {
    fn of(updater: &Updater, target: Vec<u8>, name: &str) -> Result<Self, TufError> {
        let t = updater.trusted();
        let target_digest = Digest::sha256_of(&target).to_string();
        let trusted_root_json = String::from_utf8(target).map_err(|_| TufError::TrustedRoot {
            name: name.to_string(),
            source: None,
        })?;
        Ok(TufState {
            root: RoleState::new(t.root().version, t.root().expires),
            timestamp: t.timestamp().map(|m| RoleState::new(m.version, m.expires)),
            snapshot: t.snapshot().map(|m| RoleState::new(m.version, m.expires)),
            targets: t
                .targets_role("targets")
                .map(|m| RoleState::new(m.version, m.expires)),
            target_digest,
            trusted_root_json,
        })
    }

    /// What a decision made under this root depends on: the target's digest and the root and
    /// targets versions (timestamp and snapshot change daily without changing what is trusted).
    pub fn version_key(&self) -> String {
        format!(
            "{} root {} targets {}",
            self.target_digest,
            self.root.version,
            self.targets.as_ref().map_or(0, |t| t.version)
        )
    }

    /// The earliest expiry of the metadata in force (seconds since the epoch).
    pub fn earliest_expiry(&self) -> i64 {
        [&self.timestamp, &self.snapshot, &self.targets]
            .into_iter()
            .flatten()
            .map(|r| r.expires_unix)
            .fold(self.root.expires_unix, i64::min)
    }

    /// The trusted root it pins, with its verifier, named `name`.
    pub fn trust_root(&self, name: &str) -> Result<TrustRoot, TufError> {
        TrustRoot::from_json(&self.trusted_root_json, name).map_err(|e| TufError::TrustedRoot {
            name: name.to_string(),
            source: Some(Box::new(e)),
        })
    }
}

/// A TUF trust root that cannot be updated or loaded; Display names the root, and the mirror
/// and TUF role where there is one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TufError {
    /// The bootstrap root.json is not TUF root metadata that verifies against itself.
    #[error("TUF root {name}: the bootstrap root.json is not valid, self-signed TUF root metadata")]
    Bootstrap {
        /// The trust root's name.
        name: String,
        /// What sigstore-tuf said.
        #[source]
        source: Box<sigstore_tuf::Error>,
    },
    /// An http(s) mirror that is not a URL.
    #[error("TUF mirror {mirror:?}: not a valid URL")]
    MirrorUrl {
        /// The mirror as written (cut).
        mirror: String,
        /// What the URL parser said.
        #[source]
        source: url::ParseError,
    },
    /// A URL of another scheme.
    #[error("TUF mirror {mirror:?}: only http, https, a directory or a .tar.gz are read")]
    MirrorScheme {
        /// The mirror as written (cut).
        mirror: String,
    },
    /// The mirror answered, but what it served did not verify (or could not be fetched).
    #[error("TUF root {name}: {role} from mirror {mirror} refused")]
    Refresh {
        /// The trust root's name.
        name: String,
        /// The mirror.
        mirror: String,
        /// The role being fetched or verified.
        role: TufRole,
        /// What sigstore-tuf said.
        #[source]
        source: Box<sigstore_tuf::Error>,
    },
    /// The update did not finish within its time.
    #[error("TUF root {name}: mirror {mirror} did not answer for {role} within {after:?}")]
    Timeout {
        /// The trust root's name.
        name: String,
        /// The mirror.
        mirror: String,
        /// The role being fetched.
        role: TufRole,
        /// The time allowed.
        after: Duration,
    },
    /// A `.tar.gz` mirror that cannot be read.
    #[error("TUF root {name}: mirror archive unusable")]
    Archive {
        /// The trust root's name.
        name: String,
        /// Why.
        #[source]
        source: ArchiveError,
    },
    /// No verified cache (never updated, or no cache directory).
    #[error(
        "TUF root {name}: no cached metadata in {} (run `ocigate trust-root update`)",
        dir.display()
    )]
    NoCache {
        /// The trust root's name.
        name: String,
        /// Where the cache was looked for.
        dir: PathBuf,
    },
    /// The cache exists but no longer verifies (expired metadata, a changed file).
    #[error(
        "TUF root {name}: the cached {role} metadata in {} does not verify (run `ocigate trust-root update`)",
        dir.display()
    )]
    Cached {
        /// The trust root's name.
        name: String,
        /// The cache directory.
        dir: PathBuf,
        /// The role that failed.
        role: TufRole,
        /// What sigstore-tuf said.
        #[source]
        source: Box<sigstore_tuf::Error>,
    },
    /// The cache directory cannot be prepared or replaced.
    #[error("TUF root {name}: cache {} cannot be written", dir.display())]
    CacheWrite {
        /// The trust root's name.
        name: String,
        /// The directory.
        dir: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The verified target is not a usable trusted_root.json.
    #[error("TUF root {name}: the verified {TRUSTED_ROOT_TARGET} cannot be used")]
    TrustedRoot {
        /// The trust root's name.
        name: String,
        /// Why (none: not UTF-8).
        #[source]
        source: Option<Box<TrustRootError>>,
    },
    /// No cache directory is known (no `--tuf-cache-dir`, `XDG_CACHE_HOME` or `HOME`).
    #[error("TUF root {name}: no cache directory (give --tuf-cache-dir)")]
    NoCacheDir {
        /// The trust root's name.
        name: String,
    },
}

/// The HTTP client an update fetches with: no redirects (a mirror that redirects elsewhere
/// fails), a connect timeout and a total timeout per request.
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .timeout(timeout)
        .user_agent(concat!("ocigate/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Fetch, verify and cache `source`'s trusted root under `cache_root`, within `timeout`. The
/// previous cache (its root chain and versions: rollback protection) is the starting point;
/// it is replaced only when everything verified, so a failed update keeps the last good root.
pub async fn update(
    source: &TufSource,
    cache_root: &Path,
    client: &reqwest::Client,
    timeout: Duration,
) -> Result<TufState, TufError> {
    let name = source.name.clone();
    let repo: Box<dyn Repository> = match &source.mirror {
        TufMirror::Http(url) => Box::new(
            HttpMirror::new(url, client.clone())
                .map_err(|e| refresh_err(source, TufRole::Root, e))?,
        ),
        TufMirror::Directory(dir) => Box::new(DirRepository::new(dir)),
        TufMirror::Archive(path) => {
            let path = path.clone();
            let repo = tokio::task::spawn_blocking(move || transport::archive_repository(&path))
                .await
                .map_err(|e| cache_write(source, cache_root, std::io::Error::other(e)))?
                .map_err(|source| TufError::Archive {
                    name: name.clone(),
                    source,
                })?;
            Box::new(repo)
        }
    };
    let (repo, last) = Recording::new(repo);
    let final_dir = source.cache_dir(cache_root);
    let staging =
        staging_dir(cache_root, &final_dir).map_err(|e| cache_write(source, cache_root, e))?;
    let run = fetch(source, repo, &staging, &last);
    let outcome = match tokio::time::timeout(timeout, run).await {
        Ok(r) => r,
        Err(_) => Err(TufError::Timeout {
            name,
            mirror: source.mirror.to_string(),
            role: crate::sync::lock(&last).clone(),
            after: timeout,
        }),
    };
    match outcome {
        Ok(state) => {
            swap_in(&staging, &final_dir).map_err(|e| cache_write(source, &final_dir, e))?;
            Ok(state)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            Err(e)
        }
    }
}

/// The TUF workflow on the staged cache, then the target, checked to be a usable root.
async fn fetch(
    source: &TufSource,
    repo: Recording<Box<dyn Repository>>,
    staging: &Path,
    last: &Arc<Mutex<TufRole>>,
) -> Result<TufState, TufError> {
    let role = || crate::sync::lock(last).clone();
    let now = jiff::Timestamp::now();
    let mut updater = Updater::new(repo, &source.bootstrap)
        .map_err(|e| bootstrap_err(&source.name, e))?
        .with_store(FileStore::new(staging));
    updater
        .refresh(now)
        .await
        .map_err(|e| refresh_err(source, role(), e))?;
    let target = updater
        .get_target(TRUSTED_ROOT_TARGET, now)
        .await
        .map_err(|e| refresh_err(source, TufRole::Target(TRUSTED_ROOT_TARGET.into()), e))?;
    let state = TufState::of(&updater, target, &source.name)?;
    state.trust_root(&source.name)?;
    Ok(state)
}

/// The trusted root cached for `source`, re-verified from the cache alone (no network), at
/// the current time: expired metadata is refused (TUF's freeze protection). Writes nothing.
/// An update that replaces the cache while it is read (this process's refresh, another
/// replica's, a `trust-root update` beside `serve`) can show it old files and new: a load that
/// fails while the cache directory was swapped is made again (at most three times in all).
pub fn load_cached(source: &TufSource, cache_root: &Path) -> Result<TufState, TufError> {
    let dir = source.cache_dir(cache_root);
    let mut tries = 0;
    loop {
        let before = dir_identity(&dir);
        match load_cached_once(source, &dir) {
            Err(_) if tries < 2 && dir_identity(&dir) != before => tries += 1,
            done => return done,
        }
    }
}

/// Which directory `dir` is now (device and inode): a swap in makes it another.
#[cfg(unix)]
fn dir_identity(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(dir).ok().map(|m| (m.dev(), m.ino()))
}

/// Which directory `dir` is now (its creation time where there are no inodes).
#[cfg(not(unix))]
fn dir_identity(dir: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(dir).ok().and_then(|m| m.created().ok())
}

fn load_cached_once(source: &TufSource, dir: &Path) -> Result<TufState, TufError> {
    let dir = dir.to_path_buf();
    if !dir.join("timestamp.json").is_file() {
        return Err(TufError::NoCache {
            name: source.name.clone(),
            dir,
        });
    }
    let (repo, last) = Recording::new(CacheRepository::new(&dir));
    let cached = |source_err| TufError::Cached {
        name: source.name.clone(),
        dir: dir.clone(),
        role: crate::sync::lock(&last).clone(),
        source: Box::new(source_err),
    };
    let now = jiff::Timestamp::now();
    // No store: the cache is the repository, and each file is verified once.
    let mut updater =
        Updater::new(repo, &source.bootstrap).map_err(|e| bootstrap_err(&source.name, e))?;
    // Every fetch is from the cache directory and ready at once (CacheRepository answers
    // with a ready future), so this async workflow runs to completion on first poll; no
    // runtime is needed, and the policy load that calls this stays synchronous.
    let work = async {
        updater.refresh(now).await?;
        updater.get_target(TRUSTED_ROOT_TARGET, now).await
    };
    let target = match work.now_or_never() {
        Some(r) => r.map_err(cached)?,
        None => {
            return Err(cached(sigstore_tuf::Error::transport(
                "cache read did not complete synchronously",
            )));
        }
    };
    TufState::of(&updater, target, &source.name)
}

fn bootstrap_err(name: &str, e: sigstore_tuf::Error) -> TufError {
    TufError::Bootstrap {
        name: name.to_string(),
        source: Box::new(e),
    }
}

fn refresh_err(source: &TufSource, role: TufRole, e: sigstore_tuf::Error) -> TufError {
    TufError::Refresh {
        name: source.name.clone(),
        mirror: source.mirror.to_string(),
        role,
        source: Box::new(e),
    }
}

fn cache_write(source: &TufSource, dir: &Path, e: std::io::Error) -> TufError {
    TufError::CacheWrite {
        name: source.name.clone(),
        dir: dir.to_path_buf(),
        source: e,
    }
}

#[cfg(test)]
mod tests;
