//! A loaded policy's TUF trust roots: each resolved from its verified cache (no network), else
//! the embedded snapshot of a built-in root, else left out (rules naming it fail `policy`).
//! Must not fetch anything: updating is `ocigate trust-root update`'s and `serve`'s refresher's.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::compiled::PolicySource;
use super::model::{Policy, TrustRootRef};
use super::{Issue, PolicyError};
use crate::reference::Digest;
use crate::trust::{TrustRoot, TufError, TufSource, TufState};

/// What one TUF trust root of a policy trusts after the load.
#[derive(Debug)]
#[non_exhaustive]
pub enum TufRootStatus {
    /// The verified cache's trusted root.
    Cached {
        /// The root (its relative mirror joined to the policy's directory).
        source: TufSource,
        /// The cache's verified state.
        state: TufState,
    },
    /// A built-in root without a usable cache: the snapshot compiled into ocigate.
    Embedded {
        /// The root.
        source: TufSource,
        /// Why the cache was not used.
        reason: TufError,
    },
    /// A root of one's own without a usable cache: not available (rules naming it fail with
    /// failure class `policy` until `ocigate trust-root update` succeeds).
    Unavailable {
        /// The root.
        source: TufSource,
        /// Why.
        reason: TufError,
    },
}

impl TufRootStatus {
    /// The root this status is about.
    pub fn source(&self) -> &TufSource {
        match self {
            TufRootStatus::Cached { source, .. }
            | TufRootStatus::Embedded { source, .. }
            | TufRootStatus::Unavailable { source, .. } => source,
        }
    }
}

/// Resolve `policy`'s TUF roots into its trust roots (relative local mirrors joined to `base`),
/// record the cache files each depends on in `named` (so that `serve` reloads the policy when
/// a refresh replaces them), and return what the fingerprint must add (each root's version)
/// with each root's status. `None` when the policy has no TUF root. A bootstrap root.json
/// that is not signed by its own keys makes the policy invalid (`file` names it).
pub(super) fn resolve(
    policy: &mut Policy,
    file: &Path,
    base: &Path,
    named: &mut Vec<(PathBuf, PolicySource)>,
) -> Result<(Option<String>, Vec<TufRootStatus>), PolicyError> {
    if policy.tuf_roots.is_empty() {
        return Ok((None, Vec::new()));
    }
    let cache_root = crate::trust::cache_root();
    let mut key = String::from("tuf");
    let mut statuses = Vec::new();
    for source in std::mem::take(&mut policy.tuf_roots) {
        let source = source.with_base(base);
        let name = source.name().to_string();
        if let Some(root) = &cache_root {
            let dir = source.cache_dir(root);
            for f in ["root.json", "targets.json", "targets/trusted_root.json"] {
                let p = dir.join(f);
                named.push((p.clone(), PolicySource::hash_now(&p)));
            }
        }
        let bootstrap = source.bootstrap_file().map(Path::to_path_buf);
        let status = status_of(source, cache_root.as_deref());
        let (version, root) = match &status {
            TufRootStatus::Cached { state, .. } => (state.version_key(), state.trust_root(&name)),
            TufRootStatus::Embedded { source, .. } => {
                let json = source.embedded_snapshot().unwrap_or_default();
                let root = TrustRoot::from_json(json, &name).map_err(|e| TufError::TrustedRoot {
                    name: name.clone(),
                    source: Some(Box::new(e)),
                });
                (
                    format!("embedded {}", Digest::sha256_of(json.as_bytes())),
                    root,
                )
            }
            TufRootStatus::Unavailable { .. } => ("unavailable".to_string(), Err(no_root(&name))),
        };
        key.push_str(&format!("\0{name}\0{version}"));
        if let Ok(root) = root {
            // Withdrawn (serve) when its bootstrap changes and the policy cannot load.
            policy.trust_roots.push(TrustRootRef {
                name,
                root: Arc::new(root),
                file: bootstrap,
            });
        }
        statuses.push(status);
    }
    bootstrap_issues(file, &statuses)?;
    policy.tuf_roots = statuses.iter().map(|s| s.source().clone()).collect();
    Ok((Some(key), statuses))
}

/// The policy's error when a root's bootstrap is not self-signed TUF root metadata.
fn bootstrap_issues(file: &Path, statuses: &[TufRootStatus]) -> Result<(), PolicyError> {
    let issues: Vec<Issue> = statuses
        .iter()
        .filter_map(|s| match s {
            TufRootStatus::Embedded { source, reason }
            | TufRootStatus::Unavailable { source, reason }
                if matches!(reason, TufError::Bootstrap { .. }) =>
            {
                let (line, column) = source.declaration().unwrap_or((1, 1));
                let message = crate::error_chain(reason);
                Some(Issue {
                    line,
                    column,
                    message,
                })
            }
            _ => None,
        })
        .collect();
    if issues.is_empty() {
        return Ok(());
    }
    Err(PolicyError::Invalid {
        file: file.to_path_buf(),
        issues,
    })
}

fn no_root(name: &str) -> TufError {
    TufError::NoCacheDir {
        name: name.to_string(),
    }
}

/// One root's status: its cache when that verifies now, else the embedded snapshot or nothing.
fn status_of(source: TufSource, cache_root: Option<&Path>) -> TufRootStatus {
    let loaded = match cache_root {
        Some(root) => crate::trust::load_cached(&source, root),
        None => Err(no_root(source.name())),
    };
    // Without a cache, nothing has checked the bootstrap's signatures yet.
    let loaded = match loaded {
        Err(TufError::NoCache { .. } | TufError::NoCacheDir { .. }) => {
            source.check_bootstrap().and(loaded)
        }
        other => other,
    };
    match loaded {
        Ok(state) => TufRootStatus::Cached { source, state },
        // The build-time snapshot only where nothing newer was ever fetched: a cache that no
        // longer verifies (its timestamp expired while the mirror was kept out of reach, a
        // changed file) is not replaced by an older root, which may still trust what the
        // updates since then closed (TUF's freeze attack).
        Err(reason @ (TufError::NoCache { .. } | TufError::NoCacheDir { .. }))
            if source.embedded_snapshot().is_some() =>
        {
            TufRootStatus::Embedded { source, reason }
        }
        Err(reason) => TufRootStatus::Unavailable { source, reason },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(p: &Path) -> std::io::Result<String> {
        match p.to_str() {
            Some("roots/github-root.json") => Ok(String::from_utf8_lossy(
                sigstore_trust_root::SigstoreInstance::GitHub.tuf_root(),
            )
            .into_owned()),
            Some("roots/garbage.json") => Ok("{\"signed\": 1}".into()),
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such file",
            )),
        }
    }

    fn parse(roots: &str, authority_root: &str) -> Result<Policy, PolicyError> {
        let text = format!(
            "apiVersion: ocigate.dev/v1alpha1\nkind: Policy\ntrustRoots:\n{roots}rules:\n  - name: r\n    images: [\"**\"]\n    authorities:\n      - keyless:\n          trustRoot: {authority_root}\n          identities: [{{issuer: https://i, subject: s}}]\n"
        );
        Policy::parse(&text, Path::new("p.yaml"), &reader)
    }

    #[test]
    fn the_tuf_form_as_the_issue_writes_it() {
        let p = parse(
            "  - name: corp\n    tuf:\n      mirror: https://tuf.corp.example\n      root: roots/github-root.json\n",
            "corp",
        )
        .unwrap();
        assert_eq!(p.tuf_roots.len(), 1);
        assert_eq!(p.tuf_roots[0].name(), "corp");
        assert!(
            p.trust_roots.is_empty(),
            "resolved by the loader, not the parser"
        );
    }

    #[test]
    fn built_in_names_need_no_definition() {
        let p = parse("  []\n", "github").unwrap_or_else(|e| panic!("{}", e.lines().join("\n")));
        assert_eq!(p.tuf_roots.len(), 1);
        assert_eq!(p.tuf_roots[0].name(), "github");
        assert!(p.tuf_roots[0].embedded_snapshot().is_some());
    }

    #[test]
    fn problems_are_at_their_line_and_column() {
        let e = parse(
            "  - name: corp\n    tuf:\n      mirror: \"https://\"\n      root: roots/missing.json\n",
            "corp",
        )
        .unwrap_err();
        let lines = e.lines().join("\n");
        assert!(
            lines.contains("p.yaml:6:15:") && lines.contains("not a valid URL"),
            "{lines}"
        );
        assert!(
            lines.contains("p.yaml:7:13:") && lines.contains("no such file"),
            "{lines}"
        );
        let e = parse(
            "  - name: corp\n    tuf: {mirror: /srv/tuf, root: roots/garbage.json}\n",
            "corp",
        )
        .unwrap_err();
        assert!(e.lines().join("\n").contains("bootstrap root.json"), "{e}");
        let e = parse(
            "  - name: corp\n    trustedRoot: embedded\n    tuf: {mirror: /srv/tuf, root: roots/github-root.json}\n",
            "corp",
        )
        .unwrap_err();
        assert!(e.lines().join("\n").contains("not both"), "{e}");
    }

    /// A built-in root uses its compiled-in snapshot only where nothing was ever fetched: a
    /// cache that exists and no longer verifies makes it unavailable (TUF's freeze rule).
    #[test]
    fn a_built_in_root_falls_back_only_where_nothing_was_fetched() {
        let cache = tempfile::tempdir().unwrap();
        let source = TufSource::builtin("github").unwrap();
        let status = status_of(source.clone(), Some(cache.path()));
        assert!(
            matches!(status, TufRootStatus::Embedded { .. }),
            "{status:?}"
        );
        assert!(matches!(
            status_of(source.clone(), None),
            TufRootStatus::Embedded { .. }
        ));
        let dir = source.cache_dir(cache.path());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("timestamp.json"), "{\"signed\": {}}").unwrap();
        let status = status_of(source, Some(cache.path()));
        let TufRootStatus::Unavailable { reason, .. } = &status else {
            panic!("a cache that does not verify fell back: {status:?}");
        };
        assert!(matches!(reason, TufError::Cached { .. }), "{reason:?}");
    }
}
