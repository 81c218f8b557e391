//! Registry credentials: what a secret is, where it came from (for messages: never the secret
//! itself), Docker-format credential files (Docker's config.json, podman's auth.json, Helm's
//! registry config, a mounted `kubernetes.io/dockerconfigjson` secret), and credential helpers
//! (`docker-credential-<name> get`), run as child processes without blocking the async threads.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;

/// A registry secret. Debug never shows it.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// User name and password, sent as Basic auth (to the registry, or to its token realm).
    Basic {
        /// Never empty from a credential file's `auths`; a helper's `Username` is taken as is.
        username: String,
        /// May be empty (`auth` of `user:`); never shown by Debug or in messages.
        password: String,
    },
    /// An OAuth2 refresh token (Docker's `identitytoken`, ACR's and others'), exchanged at the
    /// token realm the registry names.
    IdentityToken(String),
    /// A registry bearer token, sent as is.
    Bearer(String),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Basic { username, .. } => write!(f, "Basic({username}:<redacted>)"),
            Secret::IdentityToken(_) => f.write_str("IdentityToken(<redacted>)"),
            Secret::Bearer(_) => f.write_str("Bearer(<redacted>)"),
        }
    }
}

/// A secret and the place it came from (`--registry-creds`, `OCIGATE_REGISTRY_2_*`,
/// `~/.docker/config.json (credsStore: ecr-login)`, `imagePullSecret ns/name`).
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// What is sent (as Basic auth, a bearer token, or exchanged at the token realm).
    pub secret: Secret,
    /// Where the secret came from, for messages and Debug; never contains the secret.
    pub source: Arc<str>,
}

impl Credential {
    /// A secret with the label of its origin (see [`Credential::source`]).
    pub fn new(secret: Secret, source: impl Into<Arc<str>>) -> Self {
        Credential {
            secret,
            source: source.into(),
        }
    }

    /// User name and password, when the secret is of that kind.
    pub fn basic(&self) -> Option<(&str, &str)> {
        match &self.secret {
            Secret::Basic { username, password } => Some((username, password)),
            _ => None,
        }
    }
}

/// Who a registry request is made as, for cache keys (bearer tokens, resolutions, decisions):
/// an HMAC-SHA256, under a key drawn at random once per process, of the secret (or of the
/// credential helper that would supply one), or [`CredentialId::ANONYMOUS`]. Never the secret
/// itself: a key that is logged or dumped shows nothing that could be tried against it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CredentialId([u8; 32]);

impl CredentialId {
    /// No credential: anonymous access.
    pub const ANONYMOUS: CredentialId = CredentialId([0; 32]);

    /// The identity of a secret.
    pub fn of_secret(secret: &Secret) -> Self {
        match secret {
            Secret::Basic { username, password } => {
                Self::keyed(&[b"basic", username.as_bytes(), password.as_bytes()])
            }
            Secret::IdentityToken(t) => Self::keyed(&[b"identity-token", t.as_bytes()]),
            Secret::Bearer(t) => Self::keyed(&[b"bearer", t.as_bytes()]),
        }
    }

    /// The identity of a credential, or anonymous.
    pub fn of(credential: Option<&Credential>) -> Self {
        credential.map_or(Self::ANONYMOUS, |c| Self::of_secret(&c.secret))
    }

    /// The identity of a credential helper named by a file (what it answers is the process's,
    /// the same for every request).
    pub fn of_helper(helper: &str, source: &str) -> Self {
        Self::keyed(&[b"helper", helper.as_bytes(), source.as_bytes()])
    }

    /// A credential source that cannot be used (its lookup failed): its own identity, so that
    /// nothing obtained otherwise is served to it.
    pub fn of_unusable(problem: &str) -> Self {
        Self::keyed(&[b"unusable", problem.as_bytes()])
    }

    /// The 32 bytes, for a larger key.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn keyed(fields: &[&[u8]]) -> Self {
        use aws_lc_rs::hmac;
        static KEY: std::sync::OnceLock<hmac::Key> = std::sync::OnceLock::new();
        let key = KEY.get_or_init(|| {
            // The kernel's randomness first: aws-lc's generator costs about 40 ms of CPU on its
            // first use in a process (measured on a cold `verify` with credentials).
            let mut bytes = [0u8; 32];
            let kernel = std::fs::File::open("/dev/urandom")
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes));
            if kernel.is_err() && aws_lc_rs::rand::fill(&mut bytes).is_err() {
                // No system randomness: the process's start time and id still differ between
                // processes; the HMAC still hides the secret's bytes.
                let seed = format!(
                    "{:?}{:?}{}",
                    SystemTime::now(),
                    Instant::now(),
                    std::process::id()
                );
                let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, seed.as_bytes());
                bytes.copy_from_slice(d.as_ref());
            }
            hmac::Key::new(hmac::HMAC_SHA256, &bytes)
        });
        let mut ctx = hmac::Context::with_key(key);
        for field in fields {
            ctx.update(&(field.len() as u64).to_be_bytes());
            ctx.update(field);
        }
        let mut out = [0u8; 32];
        for (o, b) in out.iter_mut().zip(ctx.sign().as_ref()) {
            *o = *b;
        }
        CredentialId(out)
    }
}

impl std::fmt::Debug for CredentialId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if *self == Self::ANONYMOUS {
            return f.write_str("CredentialId(anonymous)");
        }
        write!(f, "CredentialId(")?;
        for b in &self.0[..4] {
            write!(f, "{b:02x}")?;
        }
        f.write_str("…)")
    }
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} from {}", self.secret, self.source)
    }
}

/// Credentials that could not be obtained: a file that does not parse, a helper that is
/// missing or fails. Never a reason to go on anonymously.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// A credential file over 4 MiB, unreadable (other than absent), or not a valid Docker
    /// config (bad JSON, an `auths` key or entry that does not decode, a bad helper name).
    #[error("credentials file {file}: {problem}")]
    File {
        /// The file's label (`~/.docker/config.json`, `--registry-config PATH`), not its path.
        file: String,
        /// What is wrong, naming the entry but never quoting a secret.
        problem: String,
    },
    /// Spawning `docker-credential-<helper>` failed with "not found".
    #[error(
        "credential helper docker-credential-{helper} (named by {file}) is not installed or not on PATH"
    )]
    HelperMissing {
        /// The helper's name, without the `docker-credential-` prefix.
        helper: String,
        /// The file label and key that named it: `~/.docker/config.json (credsStore: NAME)`.
        file: String,
    },
    /// The helper could not be started, took over 20 s, wrote over 64 KiB to stdout or
    /// stderr, exited non-zero (other than "credentials not found"), or answered other JSON.
    #[error("credential helper docker-credential-{helper} (named by {file}) failed: {detail}")]
    Helper {
        /// The helper's name, without the `docker-credential-` prefix.
        helper: String,
        /// The file label and key that named it: `~/.docker/config.json (credsStore: NAME)`.
        file: String,
        /// Why: the first line of its stderr (else stdout), escaped; else its exit status.
        detail: String,
    },
}

/// A Docker-format credential file, parsed: `auths` (keys are hosts, `host/namespace`, or URLs
/// such as `https://index.docker.io/v1/`), `credHelpers` by host, and `credsStore`.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    auths: Vec<AuthEntry>,
    cred_helpers: BTreeMap<String, String>,
    creds_store: Option<String>,
}

#[derive(Debug, Clone)]
struct AuthEntry {
    host: String,
    /// A namespace within the host (podman's `quay.io/org` keys): matches that repository path
    /// and everything below it; the longest match wins.
    namespace: Option<String>,
    secret: Secret,
}

/// What a Docker-format credential file answers for one repository ([`AuthConfig::lookup`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigAnswer {
    /// A secret of its `auths`.
    Secret(Secret),
    /// Ask this helper (`credHelpers` for the host, or `credsStore`).
    Helper {
        /// Its name (`docker-credential-NAME`).
        helper: String,
        /// Which key named it: `credHelpers` or `credsStore`.
        from: &'static str,
    },
    /// Nothing for this repository.
    Nothing,
}

impl AuthConfig {
    /// Parse a Docker-format file. Errors name the entry but never carry a secret.
    pub fn parse(text: &str) -> Result<Self, String> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Raw {
            #[serde(default)]
            auths: BTreeMap<String, RawEntry>,
            #[serde(default)]
            cred_helpers: BTreeMap<String, String>,
            #[serde(default)]
            creds_store: Option<String>,
        }
        #[derive(Deserialize)]
        struct RawEntry {
            auth: Option<String>,
            username: Option<String>,
            password: Option<String>,
            identitytoken: Option<String>,
            registrytoken: Option<String>,
        }
        let raw: Raw = serde_json::from_str(text).map_err(|e| {
            // serde_json's message quotes no input values, only positions and kinds.
            format!("not a Docker config file ({e})")
        })?;
        let mut auths = Vec::new();
        for (key, e) in raw.auths {
            let (host, namespace) = auth_key(&key)?;
            let non_empty = |s: Option<String>| s.filter(|s| !s.is_empty());
            let secret = if let Some(t) = non_empty(e.identitytoken) {
                Secret::IdentityToken(t)
            } else if let Some(t) = non_empty(e.registrytoken) {
                Secret::Bearer(t)
            } else if let Some(auth) = non_empty(e.auth) {
                let decoded = crate::decode_base64(&auth)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| format!("auths[{key:?}].auth is not base64 text"))?;
                let (u, p) = decoded
                    .split_once(':')
                    .ok_or_else(|| format!("auths[{key:?}].auth is not user:password"))?;
                if u.is_empty() {
                    return Err(format!("auths[{key:?}] has an empty user name"));
                }
                Secret::Basic {
                    username: u.to_string(),
                    password: p.to_string(),
                }
            } else {
                match (non_empty(e.username), e.password) {
                    (Some(username), Some(password)) => Secret::Basic { username, password },
                    // `{}` entries: docker login with a credsStore writes these.
                    _ => continue,
                }
            };
            auths.push(AuthEntry {
                host,
                namespace,
                secret,
            });
        }
        let mut cred_helpers = BTreeMap::new();
        for (key, helper) in raw.cred_helpers {
            let (host, _) = auth_key(&key)?;
            check_helper_name(&helper)?;
            cred_helpers.insert(host, helper);
        }
        let creds_store = raw.creds_store.filter(|s| !s.is_empty());
        if let Some(s) = &creds_store {
            check_helper_name(s)?;
        }
        Ok(AuthConfig {
            auths,
            cred_helpers,
            creds_store,
        })
    }

    /// What this file holds for `repository` on `host` (canonical): a helper named for the
    /// host first (as Docker does), then the most specific `auths` entry, then `credsStore`.
    pub fn lookup(&self, host: &str, repository: &str) -> ConfigAnswer {
        if let Some(h) = self.cred_helpers.get(host) {
            return ConfigAnswer::Helper {
                helper: h.clone(),
                from: "credHelpers",
            };
        }
        let best = self
            .auths
            .iter()
            .filter(|e| e.host == host)
            .filter(|e| match &e.namespace {
                None => true,
                Some(ns) => {
                    repository == ns
                        || repository
                            .strip_prefix(ns.as_str())
                            .is_some_and(|rest| rest.starts_with('/'))
                }
            })
            .max_by_key(|e| e.namespace.as_ref().map_or(0, |n| n.len() + 1));
        if let Some(e) = best {
            return ConfigAnswer::Secret(e.secret.clone());
        }
        match &self.creds_store {
            Some(s) => ConfigAnswer::Helper {
                helper: s.clone(),
                from: "credsStore",
            },
            None => ConfigAnswer::Nothing,
        }
    }

    /// Every secret the file holds by host (no helpers): an image pull secret's credentials.
    pub fn secrets(&self) -> impl Iterator<Item = (&str, &Secret)> {
        self.auths
            .iter()
            .filter(|e| e.namespace.is_none())
            .map(|e| (e.host.as_str(), &e.secret))
    }
}

/// An `auths` key: `host`, `host/namespace`, or a URL (whose path is not a namespace: Docker
/// writes `https://index.docker.io/v1/`).
fn auth_key(key: &str) -> Result<(String, Option<String>), String> {
    let (url_form, rest) = match key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
    {
        Some(rest) => (true, rest),
        None => (false, key),
    };
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host = crate::reference::canonical_host(host)
        .map_err(|problem| format!("key {key:?}: {problem}"))?;
    let path = path.trim_matches('/');
    let namespace = (!url_form && !path.is_empty()).then(|| path.to_string());
    Ok((host, namespace))
}

fn check_helper_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!("{name:?} is not a credential helper name"))
    }
}

/// A credential file on disk, read once, and (when watched, for `serve`) read again when its
/// modification time or size changes: a mounted Secret is swapped in place by the kubelet.
#[derive(Debug)]
pub struct AuthFile {
    path: PathBuf,
    /// How messages name it: `~/.docker/config.json`, `--registry-config /etc/ocigate/x`.
    label: String,
    watch: bool,
    state: Mutex<FileState>,
}

#[derive(Debug)]
struct FileState {
    checked: Instant,
    stamp: Option<(SystemTime, u64)>,
    /// `Ok(None)`: the file does not exist (no credentials from it).
    config: Result<Option<Arc<AuthConfig>>, CredentialError>,
}

/// How often a watched file is looked at again.
const RECHECK: Duration = Duration::from_secs(2);

impl AuthFile {
    /// Read `path` now (a missing file is kept as "no credentials", a bad one as its error);
    /// with `watch`, [`AuthFile::config`] re-reads it when its mtime or size changes (looked
    /// at every 2 s at most).
    pub fn open(path: PathBuf, label: String, watch: bool) -> Self {
        let (stamp, config) = load(&path, &label);
        AuthFile {
            path,
            label,
            watch,
            state: Mutex::new(FileState {
                checked: Instant::now(),
                stamp,
                config,
            }),
        }
    }

    /// How messages and credential sources name the file (not necessarily its path).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The path it is read from, as given to [`AuthFile::open`].
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The parsed file (`None`: it does not exist), or why it cannot be used.
    pub fn config(&self) -> Result<Option<Arc<AuthConfig>>, CredentialError> {
        let mut st = crate::sync::lock(&self.state);
        if self.watch && st.checked.elapsed() >= RECHECK {
            st.checked = Instant::now();
            if stamp_of(&self.path) != st.stamp {
                let (stamp, config) = load(&self.path, &self.label);
                st.stamp = stamp;
                st.config = config;
            }
        }
        st.config.clone()
    }
}

fn stamp_of(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Largest credential file read.
const MAX_FILE_BYTES: u64 = 4 << 20;

type Loaded = (
    Option<(SystemTime, u64)>,
    Result<Option<Arc<AuthConfig>>, CredentialError>,
);

fn load(path: &Path, label: &str) -> Loaded {
    let stamp = stamp_of(path);
    let bad = |problem: String| CredentialError::File {
        file: label.to_string(),
        problem,
    };
    if stamp.is_some_and(|(_, len)| len > MAX_FILE_BYTES) {
        return (
            stamp,
            Err(bad(format!("larger than {MAX_FILE_BYTES} bytes"))),
        );
    }
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (stamp, Ok(None)),
        Err(e) => return (stamp, Err(bad(format!("cannot be read: {e}")))),
    };
    let config = AuthConfig::parse(&text)
        .map(|c| Some(Arc::new(c)))
        .map_err(bad);
    (stamp, config)
}

/// Runs credential helpers, at most once per (helper, server) per TTL (failures are kept for
/// a shorter time), at most [`HELPERS_AT_ONCE`] at a time, as child processes awaited on the
/// runtime (never blocking an async thread), each within a time limit. A lookup waits only
/// for a run of its own (helper, server): a helper that hangs holds up nothing else, cached
/// answers least of all.
#[derive(Debug)]
pub(crate) struct Helpers {
    /// Each (helper, server)'s last answer and when it came, behind a lock of its own.
    slots: Mutex<HashMap<(String, String), Arc<HelperSlot>>>,
    /// Helper processes running at once.
    running: tokio::sync::Semaphore,
}

type HelperAnswer = Result<Option<Secret>, CredentialError>;
type HelperSlot = tokio::sync::Mutex<Option<(Instant, HelperAnswer)>>;

/// Helper processes run at once at most.
const HELPERS_AT_ONCE: usize = 4;

impl Default for Helpers {
    fn default() -> Self {
        Helpers {
            slots: Mutex::default(),
            running: tokio::sync::Semaphore::new(HELPERS_AT_ONCE),
        }
    }
}

/// How long a helper may take.
const HELPER_TIMEOUT: Duration = Duration::from_secs(20);
/// Most bytes read from a credential helper's stdout or stderr (an answer is a few hundred).
const HELPER_OUTPUT_LIMIT: usize = 64 * 1024;
/// How long a failed helper run is remembered (a fixed helper is picked up soon).
const HELPER_FAILURE_TTL: Duration = Duration::from_secs(10);
/// Entries kept at most; older ones are dropped.
const HELPER_CACHE_ENTRIES: usize = 1024;

impl Helpers {
    /// Ask `helper` for `server`'s secret; `file` names the file that named the helper.
    pub(crate) async fn get(
        &self,
        helper: &str,
        server: &str,
        file: &str,
        ttl: Duration,
    ) -> Result<Option<Secret>, CredentialError> {
        let key = (helper.to_string(), server.to_string());
        let slot = {
            let mut slots = crate::sync::lock(&self.slots);
            if slots.len() >= HELPER_CACHE_ENTRIES && !slots.contains_key(&key) {
                slots.clear();
            }
            slots.entry(key).or_default().clone()
        };
        let mut entry = slot.lock().await;
        if let Some((at, answer)) = entry.as_ref() {
            let life = if answer.is_ok() {
                ttl
            } else {
                HELPER_FAILURE_TTL.min(ttl)
            };
            if at.elapsed() < life {
                return answer.clone();
            }
        }
        let answer = {
            // The semaphore is never closed; were it, the helper would run all the same.
            let _turn = self.running.acquire().await.ok();
            run_helper(helper, server, file).await
        };
        *entry = Some((Instant::now(), answer.clone()));
        answer
    }
}

/// The credential-helper protocol: `docker-credential-<helper> get`, the server on stdin,
/// `{"ServerURL","Username","Secret"}` on stdout; "credentials not found" means none.
async fn run_helper(helper: &str, server: &str, file: &str) -> HelperAnswer {
    use tokio::io::AsyncWriteExt as _;
    let program = format!("docker-credential-{helper}");
    let failed = |detail: String| CredentialError::Helper {
        helper: helper.to_string(),
        file: file.to_string(),
        detail,
    };
    let mut child = match tokio::process::Command::new(&program)
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CredentialError::HelperMissing {
                helper: helper.to_string(),
                file: file.to_string(),
            });
        }
        Err(e) => return Err(failed(format!("cannot be started: {e}"))),
    };
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading its input is judged by its answer below.
        let _ = stdin.write_all(server.as_bytes()).await;
        let _ = stdin.shutdown().await;
    }
    let output = helper_output(child).await.map_err(failed)?;
    helper_secret(&output).map_err(failed)
}

/// A helper's exit status and output, within [`HELPER_TIMEOUT`]. At most
/// [`HELPER_OUTPUT_LIMIT`] bytes of each stream are read: a helper that writes more is killed
/// (kill_on_drop) and its answer refused. `Err` says what went wrong.
async fn helper_output(mut child: tokio::process::Child) -> Result<std::process::Output, String> {
    use tokio::io::AsyncReadExt as _;
    let mut out_pipe = child.stdout.take();
    let mut err_pipe = child.stderr.take();
    enum Read {
        Io(std::io::Error),
        TooLong,
    }
    async fn capped(
        pipe: Option<&mut (impl tokio::io::AsyncRead + Unpin)>,
    ) -> Result<Vec<u8>, Read> {
        let mut buf = Vec::new();
        if let Some(p) = pipe {
            p.take(HELPER_OUTPUT_LIMIT as u64 + 1)
                .read_to_end(&mut buf)
                .await
                .map_err(Read::Io)?;
        }
        if buf.len() > HELPER_OUTPUT_LIMIT {
            return Err(Read::TooLong);
        }
        Ok(buf)
    }
    let running = async {
        // The first stream past the limit ends the wait (the other may never close).
        let (stdout, stderr) =
            tokio::try_join!(capped(out_pipe.as_mut()), capped(err_pipe.as_mut()))?;
        let status = child.wait().await.map_err(Read::Io)?;
        Ok::<_, Read>(std::process::Output {
            status,
            stdout,
            stderr,
        })
    };
    match tokio::time::timeout(HELPER_TIMEOUT, running).await {
        Err(_) => Err(format!("no answer within {} s", HELPER_TIMEOUT.as_secs())),
        Ok(Err(Read::Io(e))) => Err(format!("cannot be run: {e}")),
        Ok(Err(Read::TooLong)) => Err(format!(
            "its answer is longer than {HELPER_OUTPUT_LIMIT} bytes"
        )),
        Ok(Ok(output)) => Ok(output),
    }
}

/// The secret a helper's output gives: `Ok(None)` for "credentials not found" or an empty
/// secret; `Err` says why the answer is a failure (escaped: it quotes the helper).
fn helper_secret(output: &std::process::Output) -> Result<Option<Secret>, String> {
    let said = |bytes: &[u8]| {
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(512)]);
        crate::escape_text(text.lines().next().unwrap_or("").trim())
    };
    if !output.status.success() {
        let out = String::from_utf8_lossy(&output.stdout).to_ascii_lowercase();
        let err = String::from_utf8_lossy(&output.stderr).to_ascii_lowercase();
        if out.contains("credentials not found") || err.contains("credentials not found") {
            return Ok(None);
        }
        return Err(match (said(&output.stderr), said(&output.stdout)) {
            (e, _) if !e.is_empty() => e,
            (_, o) if !o.is_empty() => o,
            _ => format!("exit status {}", output.status),
        });
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Answer {
        #[serde(default)]
        username: String,
        #[serde(default)]
        secret: String,
    }
    let answer: Answer = serde_json::from_slice(&output.stdout)
        .map_err(|_| "its answer is not the credential-helper JSON".to_string())?;
    if answer.secret.is_empty() {
        return Ok(None);
    }
    // Helpers answer `<token>` as the user name for identity (refresh) tokens.
    Ok(Some(if answer.username == "<token>" {
        Secret::IdentityToken(answer.secret)
    } else {
        Secret::Basic {
            username: answer.username,
            password: answer.secret,
        }
    }))
}

/// The server a credential helper is asked about for a canonical host.
pub(crate) fn helper_server(host: &str) -> String {
    if host == crate::reference::DOCKER_HUB {
        "https://index.docker.io/v1/".to_string()
    } else {
        host.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind_of_entry_and_keeps_secrets_out_of_errors() {
        // base64("bot:s3cret")
        let text = r#"{"auths":{
            "https://index.docker.io/v1/":{"auth":"Ym90OnMzY3JldA=="},
            "GHCR.IO":{"username":"u","password":"p"},
            "quay.io/org":{"username":"org","password":"x"},
            "quay.io/org/team":{"username":"team","password":"y"},
            "acr.io":{"identitytoken":"refresh"},
            "tok.io":{"registrytoken":"bearer"},
            "store.io":{}},
            "credHelpers":{"ecr.aws":"ecr-login"},
            "credsStore":"desktop"}"#;
        let c = AuthConfig::parse(text).unwrap();
        let basic = |u: &str, p: &str| {
            ConfigAnswer::Secret(Secret::Basic {
                username: u.into(),
                password: p.into(),
            })
        };
        assert_eq!(
            c.lookup("docker.io", "library/nginx"),
            basic("bot", "s3cret")
        );
        assert_eq!(c.lookup("ghcr.io", "a/b"), basic("u", "p"));
        assert_eq!(c.lookup("quay.io", "org/app"), basic("org", "x"));
        assert_eq!(c.lookup("quay.io", "org/team/app"), basic("team", "y"));
        assert_eq!(
            c.lookup("acr.io", "x"),
            ConfigAnswer::Secret(Secret::IdentityToken("refresh".into()))
        );
        assert_eq!(
            c.lookup("tok.io", "x"),
            ConfigAnswer::Secret(Secret::Bearer("bearer".into()))
        );
        // not under the namespace, an empty entry, an unknown host: the store
        for (host, repo) in [
            ("quay.io", "organisation/app"),
            ("store.io", "x"),
            ("x.io", "y"),
        ] {
            assert_eq!(
                c.lookup(host, repo),
                ConfigAnswer::Helper {
                    helper: "desktop".into(),
                    from: "credsStore"
                },
                "{host}/{repo}"
            );
        }
        assert_eq!(
            c.lookup("ecr.aws", "x"),
            ConfigAnswer::Helper {
                helper: "ecr-login".into(),
                from: "credHelpers"
            }
        );
        assert!(!format!("{c:?}").contains("s3cret"));
        for bad in [
            "not json",
            r#"{"auths":{"a.io":{"auth":"!!"}}}"#,
            r#"{"auths":{"a.io":{"auth":"bm9jb2xvbg=="}}}"#,
            r#"{"auths":{"bad host":{"auth":"Ym90OnMzY3JldA=="}}}"#,
            r#"{"credsStore":"../../bin/sh"}"#,
        ] {
            let e = AuthConfig::parse(bad).unwrap_err();
            assert!(!e.contains("s3cret"), "{e}");
        }
    }

    #[test]
    fn a_watched_file_is_read_again_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let f = AuthFile::open(path.clone(), "test file".into(), true);
        assert!(f.config().unwrap().is_none(), "absent: no credentials");
        std::fs::write(
            &path,
            r#"{"auths":{"a.io":{"username":"u","password":"p"}}}"#,
        )
        .unwrap();
        // The recheck interval has not passed yet.
        assert!(f.config().unwrap().is_none());
        f.state.lock().unwrap().checked -= RECHECK;
        let c = f.config().unwrap().unwrap();
        assert!(matches!(c.lookup("a.io", "r"), ConfigAnswer::Secret(_)));
        std::fs::write(&path, "garbage").unwrap();
        f.state.lock().unwrap().checked -= RECHECK;
        let e = f.config().unwrap_err();
        assert!(
            e.to_string().starts_with("credentials file test file:"),
            "{e}"
        );
        // An unwatched file is read once.
        let once = AuthFile::open(path.clone(), "once".into(), false);
        std::fs::write(&path, r#"{"auths":{}}"#).unwrap();
        once.state.lock().unwrap().checked -= RECHECK;
        assert!(once.config().is_err());
    }
}
