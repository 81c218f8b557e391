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

mod mirror;
mod staging;
mod transport;
pub use mirror::TufMirror;
use mirror::{local_path, without_password};
use staging::{staging_dir, swap_in};
pub use transport::{ArchiveError, MAX_ARCHIVE_BYTES, MAX_ARCHIVE_ENTRIES, TufRole};
use transport::{CacheRepository, DirRepository, HttpMirror, Recording};

/// The target a TUF trust root reads.
pub const TRUSTED_ROOT_TARGET: &str = sigstore_trust_root::TRUSTED_ROOT_TARGET;

/// The default time an update may take, all fetches included.
pub const DEFAULT_UPDATE_TIMEOUT: Duration = Duration::from_secs(30);

/// A TUF trust root: its name, mirror and the bootstrap root.json trust begins with.
#[derive(Debug, Clone)]
pub struct TufSource {
    name: String,
    mirror: TufMirror,
    bootstrap: Arc<[u8]>,
    embedded: Option<&'static str>,
    /// Where a policy declared it: (line, column).
    declared_at: Option<(u64, u64)>,
    /// The bootstrap root.json's file, as the policy names it (None: built in).
    bootstrap_file: Option<PathBuf>,
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
            bootstrap_file: None,
        })
    }

    /// The same root, noted as declared at `line` and `column` of a policy (for its messages).
    pub fn declared_at(mut self, line: u64, column: u64) -> Self {
        self.declared_at = Some((line, column));
        self
    }

    /// The same root, its bootstrap read from `file` (as the policy names it).
    pub fn read_from(mut self, file: PathBuf) -> Self {
        self.bootstrap_file = Some(file);
        self
    }

    /// The file its bootstrap was read from, as the policy names it; None for a built-in root.
    pub fn bootstrap_file(&self) -> Option<&Path> {
        self.bootstrap_file.as_deref()
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
            bootstrap_file: None,
        })
    }

    /// The same root with a relative local mirror joined to `base` (the policy's directory;
    /// `""`: the working directory), made absolute: the spelling its cache is named after.
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
mod tests {
    use super::*;

    #[test]
    fn mirrors_are_read_by_form() {
        let base = Path::new("/etc/ocigate");
        assert_eq!(
            TufMirror::parse("https://tuf.corp.example", base).unwrap(),
            TufMirror::Http("https://tuf.corp.example/".into())
        );
        assert_eq!(
            TufMirror::parse("mirror.tar.gz", base).unwrap(),
            TufMirror::Archive(base.join("mirror.tar.gz"))
        );
        assert_eq!(
            TufMirror::parse("/srv/tuf", base).unwrap(),
            TufMirror::Directory("/srv/tuf".into())
        );
        // One spelling of a local mirror, however it was written: one cache.
        for same in ["/srv/tuf/", "/srv/./tuf", "tuf"] {
            assert_eq!(
                TufMirror::parse(same, Path::new("/srv")).unwrap(),
                TufMirror::Directory("/srv/tuf".into()),
                "{same}"
            );
        }
        let bootstrap = TufSource::builtin("github").unwrap().bootstrap.to_vec();
        let local = |text: &str, base: &str| {
            let mirror = TufMirror::parse(text, Path::new("")).unwrap();
            let source = TufSource::new("corp", mirror, bootstrap.clone()).unwrap();
            source.with_base(Path::new(base)).mirror().clone()
        };
        // The command line's relative path is the working directory's…
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            local("mirror/", ""),
            TufMirror::Directory(cwd.join("mirror"))
        );
        // …and a policy's is the policy's directory's.
        assert_eq!(
            local("./mirror/", "/etc/ocigate"),
            TufMirror::Directory("/etc/ocigate/mirror".into())
        );
        assert!(matches!(
            TufMirror::parse("https://", base),
            Err(TufError::MirrorUrl { .. })
        ));
        assert!(matches!(
            TufMirror::parse("ftp://x/y", base),
            Err(TufError::MirrorScheme { .. })
        ));
    }

    /// A mirror URL's password goes to the mirror, never into a message: not the mirror's
    /// display, not a failed update's error chain (reqwest's errors name their URL).
    #[test]
    fn a_mirror_password_is_never_said() {
        let text = "http://u:SECRET@127.0.0.1:1/tuf";
        let mirror = TufMirror::parse(text, Path::new("/")).unwrap();
        let shown = mirror.to_string();
        assert!(
            !shown.contains("SECRET") && shown.contains("u:REDACTED@"),
            "{shown}"
        );
        let other = TufMirror::parse("http://u:other@127.0.0.1:1/tuf", Path::new("/")).unwrap();
        let bootstrap = TufSource::builtin("github").unwrap().bootstrap.to_vec();
        let source = TufSource::new("corp", mirror, bootstrap.clone()).unwrap();
        let again = TufSource::new("corp", other, bootstrap).unwrap();
        assert_ne!(
            source.cache_dir(Path::new("")),
            again.cache_dir(Path::new("")),
            "the cache is told apart by the mirror as written"
        );
        let cache = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = http_client(Duration::from_secs(5)).unwrap();
        let e = rt
            .block_on(update(
                &source,
                cache.path(),
                &client,
                Duration::from_secs(5),
            ))
            .unwrap_err();
        let said = crate::error_chain(&e);
        assert!(
            !said.contains("SECRET") && said.contains("REDACTED"),
            "{said}"
        );
    }

    /// An archive larger than the bound is refused before anything is decompressed (a file of
    /// empty deflate blocks expands to nothing, so the expanded bound alone would not end it).
    #[test]
    fn an_oversized_archive_is_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mirror.tar.gz");
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(MAX_ARCHIVE_BYTES + 1).unwrap();
        let e = transport::archive_repository(&path).err().unwrap();
        assert!(matches!(e, ArchiveError::TooLarge { .. }), "{e:?}");
    }

    #[test]
    fn builtins_bootstrap_from_embedded_roots() {
        for n in BUILTIN_TUF_ROOTS {
            let s = TufSource::builtin(n).unwrap();
            assert!(TrustedMetadataSet::from_root(&s.bootstrap).is_ok(), "{n}");
            assert!(s.embedded_snapshot().is_some());
        }
        assert!(TufSource::builtin("corp").is_none());
        let e = TufSource::new("corp", TufMirror::Http("https://x/".into()), b"{}".to_vec());
        assert!(matches!(e, Err(TufError::Bootstrap { .. })));
    }

    #[test]
    fn a_cache_load_checks_the_bootstrap_signatures_first() {
        let genuine = sigstore_trust_root::SigstoreInstance::GitHub
            .tuf_root()
            .to_vec();
        let mut forged: serde_json::Value = serde_json::from_slice(&genuine).unwrap();
        forged["signed"]["expires"] = "2099-01-01T00:00:00Z".into();
        let forged = serde_json::to_vec(&forged).unwrap();
        let mirror = || TufMirror::Http("https://tuf.example/".into());
        let cache = tempfile::tempdir().unwrap();
        for (bootstrap, forged) in [(genuine, false), (forged, true)] {
            // Parsed as root metadata when made; signatures are checked where trust starts.
            let s = TufSource::new("corp", mirror(), bootstrap).unwrap();
            assert_eq!(
                matches!(s.check_bootstrap(), Err(TufError::Bootstrap { .. })),
                forged
            );
            let dir = s.cache_dir(cache.path());
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("timestamp.json"), b"{}").unwrap();
            match load_cached(&s, cache.path()) {
                Err(TufError::Bootstrap { .. }) => assert!(forged),
                Err(TufError::Cached { .. }) => assert!(!forged, "the timestamp is garbage"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_cache_is_read_back_under_the_names_sigstore_tuf_asks_for() {
        assert_eq!(
            transport::without_hash_prefix(&format!("{}.trusted_root.json", "a".repeat(64))),
            "trusted_root.json"
        );
        assert_eq!(
            transport::without_hash_prefix(&format!("d/{}.x.json", "0".repeat(128))),
            "d/x.json"
        );
        assert_eq!(
            transport::without_hash_prefix("abc.trusted_root.json"),
            "abc.trusted_root.json"
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("root_history")).unwrap();
        for (name, body) in [
            ("root_history/2.root.json", "root 2"),
            ("2.root.json", "role 2.root"),
            ("snapshot.json", "snapshot"),
            ("3.targets.json", "targets 3"),
        ] {
            std::fs::write(dir.path().join(name), body).unwrap();
        }
        let repo = CacheRepository::new(dir.path());
        let get = |name: &str| {
            repo.fetch_metadata(name, 100)
                .now_or_never()
                .unwrap()
                .unwrap()
                .map(|b| String::from_utf8(b).unwrap())
        };
        assert_eq!(get("2.root.json").as_deref(), Some("root 2"));
        assert_eq!(get("3.root.json"), None);
        assert_eq!(get("timestamp.json"), None);
        // Past the root chain, `N.root.json` is a delegated role's file.
        assert_eq!(get("2.root.json").as_deref(), Some("role 2.root"));
        assert_eq!(get("7.snapshot.json").as_deref(), Some("snapshot"));
        assert_eq!(get("3.targets.json").as_deref(), Some("targets 3"));
        let unsafe_path = repo
            .fetch_metadata("../x.json", 100)
            .now_or_never()
            .unwrap();
        assert!(unsafe_path.is_err());
    }

    #[test]
    fn no_cache_is_its_own_error() {
        let dir = tempfile::tempdir().unwrap();
        let s = TufSource::builtin("github").unwrap();
        let e = load_cached(&s, dir.path()).unwrap_err();
        assert!(matches!(e, TufError::NoCache { .. }), "{e}");
        assert!(s.cache_dir(dir.path()).starts_with(dir.path()));
    }
}
