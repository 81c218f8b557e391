//! `ocigate trust-root update|show` and `--refresh-trust-root`: which TUF roots (a mirror of
//! one's own, a policy's, the built-in ones), their update, and what is in force, printed.
//! Must not verify signatures or speak TUF itself (`trust::update` and `load_cached` do).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::args::{Output, TrustRootSelect, TrustRootShowArgs, TrustRootUpdateArgs};
use super::output::say;
use super::{CliError, boxed};
use crate::policy::{CompiledPolicy, TufRootStatus};
use crate::trust::{TrustRoot, TufError, TufMirror, TufSource, TufState};

/// The TUF roots `select` names; `builtins` when it names none.
fn sources(select: &TrustRootSelect, builtins: &[&str]) -> Result<Vec<TufSource>, CliError> {
    if let (Some(mirror), Some(root)) = (&select.mirror, &select.root) {
        let mirror = TufMirror::parse(mirror, Path::new("")).map_err(boxed)?;
        let bootstrap = std::fs::read(root).map_err(|source| CliError::Io {
            what: format!("TUF root {}: cannot read", root.display()),
            source,
        })?;
        // A relative mirror is the working directory's.
        let source = TufSource::new(&select.name, mirror, bootstrap).map_err(boxed)?;
        return Ok(vec![source.with_base(Path::new(""))]);
    }
    if let Some(p) = &select.policy {
        let policy = CompiledPolicy::from_file(p).map_err(boxed)?;
        let found: Vec<_> = policy
            .tuf_roots()
            .iter()
            .map(|s| s.source().clone())
            .collect();
        if found.is_empty() {
            return Err(CliError::Usage(format!(
                "policy {} names no TUF trust root",
                p.display()
            )));
        }
        return Ok(found);
    }
    Ok(builtins
        .iter()
        .filter_map(|n| TufSource::builtin(n))
        .collect())
}

fn cache_root() -> Result<PathBuf, CliError> {
    crate::trust::cache_root().ok_or_else(|| {
        CliError::Usage("no TUF cache directory: give --tuf-cache-dir (or set HOME)".into())
    })
}

/// Update each root of `sources` within `timeout`; every failure is said, the first returned.
async fn update_all(
    sources: &[TufSource],
    timeout: std::time::Duration,
) -> Result<Vec<(TufSource, TufState)>, CliError> {
    let root = cache_root()?;
    let client = crate::trust::http_client(timeout).map_err(boxed)?;
    let mut done = Vec::new();
    let mut first_err = None;
    for s in sources {
        match crate::trust::update(s, &root, &client, timeout).await {
            Ok(state) => done.push((s.clone(), state)),
            Err(e) => {
                if first_err.is_some() {
                    tell!("error: {}", crate::error_chain(&e));
                }
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        None => Ok(done),
        Some(e) => {
            for (s, _) in &done {
                tell!("updated TUF root {}", crate::escape_text(s.name()));
            }
            Err(boxed(e))
        }
    }
}

/// `ocigate trust-root update`.
pub(crate) async fn update(a: TrustRootUpdateArgs) -> Result<ExitCode, CliError> {
    let sources = sources(&a.select, &["public-good"])?;
    let done = update_all(&sources, a.timeout).await?;
    let shown: Vec<Shown> = done
        .into_iter()
        .map(|(source, state)| Shown::new(source, Ok(state)))
        .collect();
    print(&shown, a.output, "updated")
}

/// `--refresh-trust-root`: update the policy's TUF roots (or public-good) before a check.
pub(crate) async fn refresh(policy: Option<&Path>) -> Result<(), CliError> {
    let select = TrustRootSelect {
        mirror: None,
        root: None,
        name: String::new(),
        policy: policy.map(Path::to_path_buf),
    };
    let sources = match sources(&select, &["public-good"]) {
        // A policy without TUF roots has nothing to refresh.
        Err(CliError::Usage(_)) if policy.is_some() => return Ok(()),
        other => other?,
    };
    update_all(&sources, crate::trust::DEFAULT_UPDATE_TIMEOUT)
        .await
        .map(|_| ())
}

/// The public-good root from its verified cache, when there is one (no network, no message
/// when there is none): what `verify --key` / `--certificate-identity` and `verify-bundle` use
/// instead of the embedded snapshot.
pub(crate) fn cached_public_good() -> Option<TrustRoot> {
    let source = TufSource::builtin("public-good")?;
    let state = crate::trust::load_cached(&source, &crate::trust::cache_root()?).ok()?;
    state.trust_root("public-good").ok()
}

/// [`cached_public_good`] as the trust root of an ad-hoc policy.
pub(crate) fn cached_public_good_ref() -> Option<crate::policy::TrustRootRef> {
    cached_public_good().map(|root| crate::policy::TrustRootRef {
        name: "public-good".into(),
        root: std::sync::Arc::new(root),
        file: None,
    })
}

/// `ocigate trust-root show`.
pub(crate) fn show(a: TrustRootShowArgs) -> Result<ExitCode, CliError> {
    let shown: Vec<Shown> = match &a.select.policy {
        Some(p) => {
            let policy = CompiledPolicy::from_file(p).map_err(boxed)?;
            policy.tuf_roots().iter().map(Shown::of_status).collect()
        }
        None => {
            let root = crate::trust::cache_root();
            sources(&a.select, &crate::trust::BUILTIN_TUF_ROOTS)?
                .into_iter()
                .map(|s| {
                    let loaded = match &root {
                        Some(r) => crate::trust::load_cached(&s, r),
                        None => Err(TufError::NoCacheDir {
                            name: s.name().to_string(),
                        }),
                    };
                    Shown::new(s, loaded)
                })
                .collect()
        }
    };
    print(&shown, a.output, "")
}

/// One root as shown.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Shown {
    name: String,
    mirror: String,
    /// `cache`, `embedded` or `unavailable`.
    source: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<TufState>,
    authorities: Vec<Window>,
}

/// A CA's, log's or TSA's validity window in the trusted root.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Window {
    kind: &'static str,
    id: String,
    valid_from: Option<String>,
    valid_until: Option<String>,
}

impl Shown {
    fn new(source: TufSource, loaded: Result<TufState, TufError>) -> Self {
        let (kind, reason, metadata, json) = match loaded {
            Ok(state) => {
                let json = state.trusted_root_json.clone();
                ("cache", None, Some(state), Some(json))
            }
            Err(e) => {
                let snapshot = source.embedded_snapshot();
                let kind = if snapshot.is_some() {
                    "embedded"
                } else {
                    "unavailable"
                };
                let reason = Some(crate::error_chain(&e));
                (kind, reason, None, snapshot.map(String::from))
            }
        };
        Shown {
            name: source.name().to_string(),
            mirror: source.mirror().to_string(),
            source: kind,
            reason,
            metadata,
            authorities: json.as_deref().map(windows).unwrap_or_default(),
        }
    }

    fn of_status(status: &TufRootStatus) -> Self {
        let source = status.source().clone();
        match status {
            TufRootStatus::Cached { state, .. } => Shown::new(source, Ok(state.clone())),
            TufRootStatus::Embedded { reason, .. } | TufRootStatus::Unavailable { reason, .. } => {
                let mut s = Shown::new(
                    source,
                    Err(TufError::NoCacheDir {
                        name: String::new(),
                    }),
                );
                s.reason = Some(crate::error_chain(reason));
                s
            }
        }
    }
}

/// The validity windows of a trusted_root.json's CAs, logs and TSAs.
fn windows(json: &str) -> Vec<Window> {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(json) else {
        return Vec::new();
    };
    let text = |v: &serde_json::Value| v.as_str().map(crate::escape_text);
    let mut out = Vec::new();
    let parts: [(&str, &str, &str, &[&str]); 4] = [
        ("ca", "certificateAuthorities", "uri", &["validFor"]),
        ("tlog", "tlogs", "baseUrl", &["publicKey", "validFor"]),
        ("ctlog", "ctlogs", "baseUrl", &["publicKey", "validFor"]),
        ("tsa", "timestampAuthorities", "uri", &["validFor"]),
    ];
    for (kind, list, id, path) in parts {
        for item in v[list].as_array().into_iter().flatten() {
            let range = path.iter().fold(item, |acc, k| &acc[*k]);
            out.push(Window {
                kind,
                id: text(&item[id]).unwrap_or_default(),
                valid_from: text(&range["start"]),
                valid_until: text(&range["end"]),
            });
        }
    }
    out
}

fn print(shown: &[Shown], output: Output, verb: &str) -> Result<ExitCode, CliError> {
    if output == Output::Json {
        let doc = serde_json::json!({"schemaVersion": 1, "trustRoots": shown});
        return say(format!("{doc:#}\n")).map(|()| ExitCode::SUCCESS);
    }
    let mut out = String::new();
    for s in shown {
        let name = crate::escape_text(&s.name);
        let head = if verb.is_empty() {
            name
        } else {
            format!("{verb} {name}")
        };
        out.push_str(&format!("{head}: {} (from {})\n", s.mirror, s.source));
        if let Some(r) = &s.reason {
            out.push_str(&format!("  why not the cache: {}\n", crate::escape_text(r)));
        }
        if let Some(m) = &s.metadata {
            out.push_str(&format!(
                "  root v{} expires {}\n",
                m.root.version, m.root.expires
            ));
            for (role, r) in [
                ("timestamp", &m.timestamp),
                ("snapshot", &m.snapshot),
                ("targets", &m.targets),
            ] {
                if let Some(r) = r {
                    out.push_str(&format!("  {role} v{} expires {}\n", r.version, r.expires));
                }
            }
            out.push_str(&format!(
                "  {} {}\n",
                crate::trust::TRUSTED_ROOT_TARGET,
                m.target_digest
            ));
        }
        for w in &s.authorities {
            let from = w.valid_from.as_deref().unwrap_or("-");
            let until = w.valid_until.as_deref().unwrap_or("(open)");
            out.push_str(&format!("  {:5} {} {from} .. {until}\n", w.kind, w.id));
        }
    }
    say(out).map(|()| ExitCode::SUCCESS)
}
