//! Where a TUF repository is: an http(s) URL, a directory or a `.tar.gz`, each in one
//! spelling (the cache is named after it), and said without a URL's password.

use std::path::{Path, PathBuf};

use super::TufError;

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
/// [`TufSource::with_base`](super::TufSource::with_base) makes it so, once the base is known.
pub(super) fn local_path(p: &Path) -> PathBuf {
    let absolute = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    absolute.components().collect()
}

/// `url` with its password, if it has one, replaced by `REDACTED`.
pub(super) fn without_password(url: &str) -> String {
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
    pub(super) fn identity(&self) -> String {
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
        // Without `./` or a trailing `/`; a relative path stays relative until its base is
        // known (a policy's directory: `TufSource::with_base`).
        let path: PathBuf = base.join(text).components().collect();
        if lower.ends_with(".tar.gz") || lower.ends_with(".tgz") {
            Ok(TufMirror::Archive(path))
        } else {
            Ok(TufMirror::Directory(path))
        }
    }
}
