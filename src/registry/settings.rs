//! How to reach registries, the same for the CLI, the webhook and the library: the transport
//! per host (plain HTTP, TLS with extra CAs, client certificates, or unverified TLS) and one
//! chain of credential sources.
//!
//! Credential precedence, first match wins:
//! 1. flags: `--registry-creds HOST=USER:PASS`, `--registry-creds-file FILE` (or `-`, stdin);
//! 2. the `OCIGATE_REGISTRY_[N_]*` environment sets (a set with `REPOSITORY` before one
//!    without, on the same host);
//! 3. credentials of the request (an admitted Pod's `imagePullSecrets`, in the webhook);
//! 4. Docker's config.json (`DOCKER_CONFIG`), podman's auth.json (`REGISTRY_AUTH_FILE`, else
//!    `$XDG_RUNTIME_DIR/containers/auth.json`), Helm's registry config
//!    (`HELM_REGISTRY_CONFIG`, else `~/.config/helm/registry/config.json`), then each
//!    `--registry-config FILE` (a mounted `kubernetes.io/dockerconfigjson` secret), in that
//!    order; in each: `credHelpers` for the host, the most specific `auths` entry, `credsStore`.
//!
//! Anything else is anonymous. A source that exists but cannot be used (a file that does not
//! parse, a helper that is missing or fails) is an error naming it, never anonymous access.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::credentials::{
    AuthFile, ConfigAnswer, Credential, CredentialError, CredentialId, Secret,
};
pub(super) use super::pem_file::PemFile;
pub use super::pem_file::TlsFile;
use super::pem_file::read_pem;
use super::request_scope::RequestCredentials;

/// How to reach registries: the same settings for the CLI, the webhook and the library.
#[derive(Debug, Clone)]
pub struct RegistrySettings {
    hosts: BTreeMap<String, HostSettings>,
    /// `--registry-creds` and `--registry-creds-file`, in the order given.
    flag_credentials: Vec<CredentialEntry>,
    /// The environment sets, unindexed first, then by index.
    env_credentials: Vec<CredentialEntry>,
    /// Docker-format files, in precedence order.
    files: Vec<Arc<AuthFile>>,
    /// Deadline for each registry request.
    pub timeout: Duration,
    /// Largest manifest accepted.
    pub max_manifest_bytes: usize,
    /// Largest blob fetched (signature payloads and configs are small).
    pub max_blob_bytes: usize,
    /// How long a credential helper's answer is used.
    pub helper_ttl: Duration,
    /// Requests in flight to one registry host at most, process-wide (see
    /// [`super::gate`]): each holds one connection.
    pub max_connections_per_host: usize,
}

impl Default for RegistrySettings {
    /// No credentials and no files: anonymous access, HTTPS (plain HTTP for loopback hosts).
    fn default() -> Self {
        RegistrySettings {
            hosts: BTreeMap::new(),
            flag_credentials: Vec::new(),
            env_credentials: Vec::new(),
            files: Vec::new(),
            timeout: Duration::from_secs(30),
            max_manifest_bytes: 4 << 20,
            max_blob_bytes: 4 << 20,
            helper_ttl: Duration::from_secs(300),
            max_connections_per_host: usize::from(super::gate::DEFAULT_MAX_CONNECTIONS_PER_HOST),
        }
    }
}

/// The scheme a host is spoken to with, when set explicitly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP: an `http://` host prefix, `--registry-plain-http` or `PLAIN_HTTP=true`.
    Http,
    /// HTTPS only: an `https://` host prefix (never falls back to plain HTTP).
    Https,
}

/// How a host is first reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemeChoice {
    /// Plain HTTP only.
    Http,
    /// HTTPS only.
    Https,
    /// HTTPS, and plain HTTP when the host does not speak TLS (the TLS handshake fails other
    /// than on its certificate), as Docker and go-containerregistry do for loopback and
    /// insecure registries; the scheme that worked is remembered per host.
    HttpsThenHttp,
}

/// The transport settings of one host.
#[derive(Debug, Clone, Default)]
pub struct HostSettings {
    /// The scheme set for the host; `None`: [`RegistrySettings::scheme_choice`] decides.
    pub scheme: Option<Scheme>,
    /// `--registry-insecure-skip-tls-verify` or `INSECURE_SKIP_TLS_VERIFY`: HTTPS (a TLS
    /// setting, so no plain-HTTP fallback) with any certificate accepted.
    pub insecure_skip_tls_verify: bool,
    /// cosign's `--allow-insecure-registry`: HTTPS without verifying the certificate, then
    /// plain HTTP if the host does not speak TLS. Unlike `insecure_skip_tls_verify` it is no
    /// TLS setting: an explicit plain-HTTP setting for the host wins.
    pub allow_insecure: bool,
    /// Extra CA certificates (added to the platform's roots).
    pub ca: Option<PemFile>,
    /// Client certificate and key (mTLS).
    pub cert: Option<PemFile>,
    /// The private key of `cert` (any `*PRIVATE KEY` PEM block); [`RegistrySettings::validate`]
    /// refuses one without the other.
    pub key: Option<PemFile>,
}

impl HostSettings {
    fn wants_tls(&self) -> bool {
        self.insecure_skip_tls_verify
            || self.ca.is_some()
            || self.cert.is_some()
            || self.key.is_some()
    }
}

#[derive(Debug, Clone)]
struct CredentialEntry {
    host: String,
    repository: Option<globset::GlobMatcher>,
    credential: Credential,
}

impl CredentialEntry {
    fn matches(&self, host: &str, repository: &str) -> bool {
        self.host == host
            && self
                .repository
                .as_ref()
                .is_none_or(|g| g.is_match(repository))
    }
}

/// A problem in the registry settings from the environment, flags or files.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// A flag, file line or environment variable with a bad value, or settings that conflict.
    #[error("registry setting {name}: {problem}")]
    Invalid {
        /// What holds it: a flag (`--registry-ca-file`), a variable (`OCIGATE_REGISTRY_2_HOST`),
        /// a line (`--registry-creds-file FILE line 3`), or a set (`OCIGATE_REGISTRY_2_*`).
        name: String,
        /// What is wrong with it.
        problem: String,
    },
}

pub(super) fn invalid(name: &str, problem: impl Into<String>) -> SettingsError {
    SettingsError::Invalid {
        name: name.to_string(),
        problem: problem.into(),
    }
}

/// What the first credential source that applies to a request has: the credential itself,
/// or the credential helper to ask for it.
#[derive(Debug, Clone)]
pub enum CredentialOrHelper {
    /// The credential, with where it came from.
    Credential(Credential),
    /// A credential helper to ask.
    Helper {
        /// Its name (`docker-credential-NAME`).
        helper: String,
        /// The file that named the helper, with how (`~/.docker/config.json (credsStore:
        /// ecr-login)`), for the credential's source and for errors.
        source: String,
    },
}

/// Every field an environment set may have.
const ENV_FIELDS: &[&str] = &[
    "HOST",
    "REPOSITORY",
    "USERNAME",
    "PASSWORD",
    "IDENTITY_TOKEN",
    "TOKEN",
    "INSECURE_SKIP_TLS_VERIFY",
    "PLAIN_HTTP",
    "CERT_FILE",
    "KEY_FILE",
    "CA_FILE",
];

/// One `OCIGATE_REGISTRY_[N_]*` set of environment variables.
struct EnvSet {
    /// `OCIGATE_REGISTRY_` or `OCIGATE_REGISTRY_N_`.
    prefix: String,
    /// Field (`HOST`) -> value.
    fields: BTreeMap<String, String>,
}

impl EnvSet {
    /// The sets among `vars`, by index (the unindexed set first).
    fn collect<I, K, V>(vars: I) -> Result<Vec<EnvSet>, SettingsError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        // set index (None: unindexed) -> field -> value
        let mut sets: BTreeMap<Option<u32>, BTreeMap<String, String>> = BTreeMap::new();
        for (k, v) in vars {
            let k = k.as_ref();
            let Some(rest) = k.strip_prefix("OCIGATE_REGISTRY_") else {
                continue;
            };
            let (set, field) = match rest.split_once('_') {
                Some((n, f)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
                    let index = n
                        .parse()
                        .map_err(|_| invalid(k, "set index is too large"))?;
                    (Some(index), f)
                }
                _ => (None, rest),
            };
            sets.entry(set)
                .or_default()
                .insert(field.to_string(), v.as_ref().to_string());
        }
        Ok(sets
            .into_iter()
            .map(|(set, fields)| EnvSet {
                prefix: match set {
                    Some(n) => format!("OCIGATE_REGISTRY_{n}_"),
                    None => "OCIGATE_REGISTRY_".to_string(),
                },
                fields,
            })
            .collect())
    }

    /// The variable of field `f`.
    fn name(&self, f: &str) -> String {
        format!("{}{f}", self.prefix)
    }

    /// What credentials from this set say they come from.
    fn source(&self) -> String {
        format!("{}*", self.prefix)
    }

    /// Field `f`, if set and not empty.
    fn field(&self, f: &str) -> Option<&String> {
        self.fields.get(f).filter(|v| !v.is_empty())
    }

    /// A true/false field (absent: false).
    fn flag(&self, f: &str) -> Result<bool, SettingsError> {
        match self.field(f).map(|v| v.to_ascii_lowercase()) {
            None => Ok(false),
            Some(v) if matches!(v.as_str(), "true" | "1" | "yes") => Ok(true),
            Some(v) if matches!(v.as_str(), "false" | "0" | "no") => Ok(false),
            Some(v) => Err(invalid(
                &self.name(f),
                format!("{v:?} is not true or false"),
            )),
        }
    }

    /// `REPOSITORY`, a glob on the repository path.
    fn repository(&self) -> Result<Option<globset::GlobMatcher>, SettingsError> {
        let Some(pattern) = self.field("REPOSITORY") else {
            return Ok(None);
        };
        let glob = globset::GlobBuilder::new(pattern.trim_matches('/'))
            .literal_separator(false)
            .build()
            .map_err(|e| invalid(&self.name("REPOSITORY"), e.kind().to_string()))?;
        Ok(Some(glob.compile_matcher()))
    }

    /// The credential: `USERNAME` + `PASSWORD`, `IDENTITY_TOKEN` or `TOKEN`.
    fn secret(&self) -> Result<Option<Secret>, SettingsError> {
        let field = |f| self.field(f);
        Ok(
            match (
                field("USERNAME"),
                field("PASSWORD"),
                field("IDENTITY_TOKEN"),
                field("TOKEN"),
            ) {
                (None, None, None, None) => None,
                (Some(u), Some(p), None, None) => Some(Secret::Basic {
                    username: u.clone(),
                    password: p.clone(),
                }),
                (_, None, Some(t), None) => Some(Secret::IdentityToken(t.clone())),
                (None, None, None, Some(t)) => Some(Secret::Bearer(t.clone())),
                (Some(_), None, None, None) => {
                    return Err(invalid(
                        &self.name("PASSWORD"),
                        "missing while USERNAME is set",
                    ));
                }
                (None, Some(_), None, None) => {
                    return Err(invalid(
                        &self.name("USERNAME"),
                        "missing while PASSWORD is set",
                    ));
                }
                _ => {
                    return Err(invalid(
                        &self.source(),
                        "give one of USERNAME+PASSWORD, IDENTITY_TOKEN or TOKEN",
                    ));
                }
            },
        )
    }
}

impl RegistrySettings {
    /// Every CA, client certificate and key file the settings name, each once, with what it
    /// must hold.
    pub(crate) fn tls_files(&self) -> Vec<(PemFile, TlsFile)> {
        let mut out: Vec<(PemFile, TlsFile)> = Vec::new();
        for files in self.tls_hosts() {
            let named = files
                .into_iter()
                .zip([TlsFile::Ca, TlsFile::Cert, TlsFile::Key]);
            for (f, which) in named.filter_map(|(f, w)| Some((f?, w))) {
                if !out.iter().any(|(p, _)| p.path == f.path) {
                    out.push((f.clone(), which));
                }
            }
        }
        out
    }

    /// The CA, client certificate and key file of each host that names any.
    pub(crate) fn tls_hosts(&self) -> Vec<[Option<&PemFile>; 3]> {
        self.hosts
            .values()
            .map(|h| [h.ca.as_ref(), h.cert.as_ref(), h.key.as_ref()])
            .filter(|files| files.iter().any(Option::is_some))
            .collect()
    }

    /// The transport settings for `host` (canonical).
    pub fn host(&self, host: &str) -> Option<&HostSettings> {
        self.hosts.get(host)
    }

    /// Whether `host` is spoken to over plain HTTP only (set so).
    pub fn is_plain_http(&self, host: &str) -> bool {
        self.scheme_choice(host) == SchemeChoice::Http
    }

    /// How `host` is reached: as set (`http://`, `https://`, plain HTTP); HTTPS only when it
    /// has a TLS setting (a CA, a client certificate, unverified TLS); HTTPS then plain HTTP
    /// when it was named by `--allow-insecure-registry` or is a loopback host (`localhost`,
    /// `127.0.0.0/8`, `[::1]`), as Docker, cosign and crane do; else HTTPS.
    pub fn scheme_choice(&self, host: &str) -> SchemeChoice {
        let h = self.hosts.get(host);
        match h.and_then(|h| h.scheme) {
            Some(Scheme::Http) => return SchemeChoice::Http,
            Some(Scheme::Https) => return SchemeChoice::Https,
            None => {}
        }
        if h.is_some_and(HostSettings::wants_tls) {
            SchemeChoice::Https
        } else if h.is_some_and(|h| h.allow_insecure) || is_loopback(host) {
            SchemeChoice::HttpsThenHttp
        } else {
            SchemeChoice::Https
        }
    }

    fn host_mut(&mut self, host: &str) -> &mut HostSettings {
        self.hosts.entry(host.to_string()).or_default()
    }

    /// Speak plain HTTP to `host` (as given to `--registry-plain-http`).
    pub fn add_plain_http(&mut self, host: &str) -> Result<(), SettingsError> {
        let (host, scheme) = settings_host("--registry-plain-http", host)?;
        if scheme == Some(Scheme::Https) {
            return Err(invalid(
                "--registry-plain-http",
                format!("{host}: an https:// host cannot be plain HTTP"),
            ));
        }
        self.host_mut(&host).scheme = Some(Scheme::Http);
        Ok(())
    }

    /// Accept any TLS certificate from `host` (`--registry-insecure-skip-tls-verify`).
    pub fn add_insecure_skip_tls_verify(&mut self, host: &str) -> Result<(), SettingsError> {
        let name = "--registry-insecure-skip-tls-verify";
        let (host, scheme) = settings_host(name, host)?;
        let h = self.host_mut(&host);
        h.insecure_skip_tls_verify = true;
        if scheme.is_some() {
            h.scheme = scheme;
        }
        Ok(())
    }

    /// cosign's `--allow-insecure-registry` for `host`: HTTPS without verifying the
    /// certificate, then plain HTTP when the host does not speak TLS. An explicit scheme or
    /// plain-HTTP setting for the host still decides.
    pub fn add_allow_insecure(&mut self, host: &str) -> Result<(), SettingsError> {
        let (host, scheme) = settings_host("--allow-insecure-registry", host)?;
        let h = self.host_mut(&host);
        h.allow_insecure = true;
        if scheme.is_some() {
            h.scheme = scheme;
        }
        Ok(())
    }

    /// `HOST=FILE` for `--registry-ca-file`, `--registry-cert-file`, `--registry-key-file`:
    /// the file is read (and checked to be PEM) now, so that a wrong path is an error at start.
    pub fn add_tls_file(&mut self, flag: TlsFile, arg: &str) -> Result<(), SettingsError> {
        let name = flag.flag();
        let (host, file) = arg
            .split_once('=')
            .filter(|(h, f)| !h.is_empty() && !f.is_empty())
            .ok_or_else(|| invalid(name, "expected HOST=FILE"))?;
        let (host, scheme) = settings_host(name, host)?;
        self.set_tls_file(flag, &host, scheme, Path::new(file), name)
    }

    fn set_tls_file(
        &mut self,
        which: TlsFile,
        host: &str,
        scheme: Option<Scheme>,
        file: &Path,
        name: &str,
    ) -> Result<(), SettingsError> {
        if scheme == Some(Scheme::Http) {
            return Err(invalid(
                name,
                format!("{host}: TLS files for an http:// host would never be used"),
            ));
        }
        let pem = read_pem(file, which, name)?;
        let h = self.host_mut(host);
        match which {
            TlsFile::Ca => h.ca = Some(pem),
            TlsFile::Cert => h.cert = Some(pem),
            TlsFile::Key => h.key = Some(pem),
        }
        if scheme.is_some() {
            h.scheme = scheme;
        }
        Ok(())
    }

    /// Check what only the whole set of settings shows: a client certificate needs its key.
    pub fn validate(&self) -> Result<(), SettingsError> {
        for (host, h) in &self.hosts {
            match (&h.cert, &h.key) {
                (Some(_), None) => {
                    return Err(invalid(
                        "--registry-key-file",
                        format!("{host} has a client certificate but no key"),
                    ));
                }
                (None, Some(_)) => {
                    return Err(invalid(
                        "--registry-cert-file",
                        format!("{host} has a client key but no certificate"),
                    ));
                }
                _ => {}
            }
            if h.scheme == Some(Scheme::Http) && h.wants_tls() {
                return Err(invalid(
                    "--registry-plain-http",
                    format!("{host} is set to plain HTTP and has TLS settings too"),
                ));
            }
        }
        Ok(())
    }

    /// Apply the `OCIGATE_REGISTRY_[N_]*` sets: `HOST` (required; an `http://` or `https://`
    /// prefix sets the scheme), `REPOSITORY` (a glob on the repository path: `org/*`),
    /// `USERNAME` + `PASSWORD`, `IDENTITY_TOKEN`, `TOKEN`, `INSECURE_SKIP_TLS_VERIFY`,
    /// `PLAIN_HTTP`, `CERT_FILE`, `KEY_FILE`, `CA_FILE`.
    pub fn apply_env<I, K, V>(&mut self, vars: I) -> Result<(), SettingsError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        for set in EnvSet::collect(vars)? {
            self.apply_env_set(&set)?;
        }
        // Within the environment, a set for a repository comes before one for the whole host.
        self.env_credentials.sort_by_key(|e| e.repository.is_none());
        Ok(())
    }

    /// Apply one environment set: its host's transport settings, and its credential.
    fn apply_env_set(&mut self, set: &EnvSet) -> Result<(), SettingsError> {
        if let Some(f) = set
            .fields
            .keys()
            .find(|f| !ENV_FIELDS.contains(&f.as_str()))
        {
            return Err(invalid(
                &set.name(f),
                format!("unknown setting (known: {})", ENV_FIELDS.join(", ")),
            ));
        }
        let Some(host) = set.field("HOST") else {
            return Err(invalid(
                &set.name("HOST"),
                "missing; every set names its registry host",
            ));
        };
        let (host, mut scheme) = settings_host(&set.name("HOST"), host)?;
        if set.flag("PLAIN_HTTP")? {
            if scheme == Some(Scheme::Https) {
                return Err(invalid(
                    &set.name("PLAIN_HTTP"),
                    "the HOST says https:// and PLAIN_HTTP says plain HTTP",
                ));
            }
            scheme = Some(Scheme::Http);
        }
        for (f, which) in [
            ("CA_FILE", TlsFile::Ca),
            ("CERT_FILE", TlsFile::Cert),
            ("KEY_FILE", TlsFile::Key),
        ] {
            if let Some(file) = set.field(f) {
                self.set_tls_file(which, &host, scheme, Path::new(file), &set.name(f))?;
            }
        }
        if set.flag("INSECURE_SKIP_TLS_VERIFY")? {
            self.host_mut(&host).insecure_skip_tls_verify = true;
        }
        if let Some(s) = scheme {
            self.host_mut(&host).scheme = Some(s);
        }
        let repository = set.repository()?;
        if let Some(secret) = set.secret()? {
            self.env_credentials.push(CredentialEntry {
                host,
                repository,
                credential: Credential::new(secret, set.source()),
            });
        } else if repository.is_some() {
            return Err(invalid(
                &set.name("REPOSITORY"),
                "a set with REPOSITORY needs credentials",
            ));
        }
        Ok(())
    }

    /// Parse `HOST=USER:PASS` as given to `--registry-creds`.
    pub fn add_credentials_flag(&mut self, arg: &str) -> Result<(), SettingsError> {
        self.add_credentials_line(arg, "--registry-creds", "--registry-creds")
    }

    /// `HOST=USER:PASS` lines (blank lines and `#` comments skipped) from a file or from
    /// stdin, so that no password is on a command line; `origin` names it in messages.
    pub fn add_credentials_text(&mut self, text: &str, origin: &str) -> Result<(), SettingsError> {
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = format!("{origin} line {}", n + 1);
            self.add_credentials_line(line, &at, origin)?;
        }
        Ok(())
    }

    fn add_credentials_line(
        &mut self,
        arg: &str,
        name: &str,
        source: &str,
    ) -> Result<(), SettingsError> {
        let bad = || invalid(name, "expected HOST=USER:PASS");
        let (host, userpass) = arg.split_once('=').ok_or_else(bad)?;
        let (user, pass) = userpass.split_once(':').ok_or_else(bad)?;
        if host.is_empty() || user.is_empty() {
            return Err(invalid(name, "host and user must not be empty"));
        }
        let (host, scheme) = settings_host(name, host)?;
        if let Some(s) = scheme {
            self.host_mut(&host).scheme = Some(s);
        }
        // A later flag for the same host replaces an earlier one.
        self.flag_credentials.retain(|e| e.host != host);
        self.flag_credentials.push(CredentialEntry {
            host,
            repository: None,
            credential: Credential::new(
                Secret::Basic {
                    username: user.to_string(),
                    password: pass.to_string(),
                },
                source,
            ),
        });
        Ok(())
    }

    /// Add a Docker-format credential file (after those added before). `label` names it in
    /// messages; `watch` re-reads it when it changes (for `serve`). A missing file gives no
    /// credentials; one that does not parse is an error when a registry needs it.
    pub fn add_auth_file(&mut self, path: PathBuf, label: String, watch: bool) -> &AuthFile {
        self.files
            .push(Arc::new(AuthFile::open(path, label, watch)));
        // Just pushed.
        &self.files[self.files.len() - 1]
    }

    /// The user's own credential files, as Docker, podman and Helm find them from `env`:
    /// Docker's config.json, podman's auth.json, Helm's registry config.
    pub fn add_user_auth_files(&mut self, env: &dyn Fn(&str) -> Option<String>, watch: bool) {
        let home = env("HOME").filter(|h| !h.is_empty());
        let docker = match env("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
            Some(d) => Some((
                PathBuf::from(&d).join("config.json"),
                format!("$DOCKER_CONFIG/config.json ({d}/config.json)"),
            )),
            None => home.as_ref().map(|h| {
                (
                    PathBuf::from(h).join(".docker/config.json"),
                    "~/.docker/config.json".to_string(),
                )
            }),
        };
        let podman = match env("REGISTRY_AUTH_FILE").filter(|f| !f.is_empty()) {
            Some(f) => Some((PathBuf::from(&f), format!("$REGISTRY_AUTH_FILE ({f})"))),
            None => env("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()).map(|d| {
                (
                    PathBuf::from(&d).join("containers/auth.json"),
                    "$XDG_RUNTIME_DIR/containers/auth.json".to_string(),
                )
            }),
        };
        let helm = match env("HELM_REGISTRY_CONFIG").filter(|f| !f.is_empty()) {
            Some(f) => Some((PathBuf::from(&f), format!("$HELM_REGISTRY_CONFIG ({f})"))),
            None => home.as_ref().map(|h| {
                (
                    PathBuf::from(h).join(".config/helm/registry/config.json"),
                    "~/.config/helm/registry/config.json".to_string(),
                )
            }),
        };
        for (path, label) in [docker, podman, helm].into_iter().flatten() {
            self.add_auth_file(path, label, watch);
        }
    }

    /// Where the credential for `repository` on `host` (canonical) comes from, following the
    /// precedence in the module's documentation; `request` are the request's own credentials.
    pub fn find_credential(
        &self,
        host: &str,
        repository: &str,
        request: Option<&RequestCredentials>,
    ) -> Result<Option<CredentialOrHelper>, CredentialError> {
        let entry = self
            .flag_credentials
            .iter()
            .chain(&self.env_credentials)
            .find(|e| e.matches(host, repository));
        if let Some(e) = entry {
            return Ok(Some(CredentialOrHelper::Credential(e.credential.clone())));
        }
        if let Some(c) = request.and_then(|r| r.get(host)) {
            return Ok(Some(CredentialOrHelper::Credential(c.clone())));
        }
        for file in &self.files {
            let Some(config) = file.config()? else {
                continue;
            };
            match config.lookup(host, repository) {
                ConfigAnswer::Secret(secret) => {
                    return Ok(Some(CredentialOrHelper::Credential(Credential::new(
                        secret,
                        file.label(),
                    ))));
                }
                ConfigAnswer::Helper { helper, from } => {
                    let source = format!("{} ({from}: {helper})", file.label());
                    return Ok(Some(CredentialOrHelper::Helper { helper, source }));
                }
                ConfigAnswer::Nothing => {}
            }
        }
        Ok(None)
    }
}

impl RegistrySettings {
    /// Who a request for `repository` on `host` (canonical) is made as, with `request`'s
    /// credentials in scope: the identity of the credential [`RegistrySettings::find_credential`]
    /// finds (a helper's by the helper and the file naming it), anonymous when none. What is
    /// obtained with one identity (a token, a resolution, a decision) is served only to
    /// requests of the same identity.
    pub fn credential_id(
        &self,
        host: &str,
        repository: &str,
        request: Option<&RequestCredentials>,
    ) -> CredentialId {
        match self.find_credential(host, repository, request) {
            Ok(None) => CredentialId::ANONYMOUS,
            Ok(Some(CredentialOrHelper::Credential(c))) => CredentialId::of_secret(&c.secret),
            Ok(Some(CredentialOrHelper::Helper { helper, source })) => {
                CredentialId::of_helper(&helper, &source)
            }
            Err(e) => CredentialId::of_unusable(&e.to_string()),
        }
    }
}

/// `localhost`, `127.0.0.0/8` and `[::1]`, with or without a port.
pub(crate) fn is_loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => return rest.split(']').next() == Some("::1"),
        None => host.rsplit_once(':').map_or(host, |(n, _)| n),
    };
    name == "localhost"
        || name
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|a| a.is_loopback())
}

/// A host named in a setting, in the spelling references have (`GHCR.IO:443` is `ghcr.io`), so
/// that the setting applies to exactly the references it names. An `http://` or `https://`
/// prefix sets the scheme; any other scheme, or a path, is refused.
fn settings_host(name: &str, host: &str) -> Result<(String, Option<Scheme>), SettingsError> {
    let (scheme, rest) = if let Some(r) = host.strip_prefix("https://") {
        (Some(Scheme::Https), r)
    } else if let Some(r) = host.strip_prefix("http://") {
        (Some(Scheme::Http), r)
    } else if host.contains("://") {
        return Err(invalid(
            name,
            format!("{host:?}: only http:// or https:// may prefix a host"),
        ));
    } else {
        (None, host)
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('/') {
        return Err(invalid(
            name,
            format!("{host:?}: a host, not a URL with a path"),
        ));
    }
    let canonical = crate::reference::canonical_host(rest).map_err(|p| invalid(name, p))?;
    Ok((canonical, scheme))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(s: &RegistrySettings, host: &str, repo: &str) -> Option<(String, String, String)> {
        match s.find_credential(host, repo, None).unwrap()? {
            CredentialOrHelper::Credential(c) => {
                let (u, p) = c.basic()?;
                Some((u.to_string(), p.to_string(), c.source.to_string()))
            }
            CredentialOrHelper::Helper { .. } => None,
        }
    }

    #[test]
    fn env_credential_sets() {
        let mut s = RegistrySettings::default();
        s.apply_env([
            ("OCIGATE_REGISTRY_HOST", "a.io"),
            ("OCIGATE_REGISTRY_USERNAME", "u"),
            ("OCIGATE_REGISTRY_PASSWORD", "p"),
            ("OCIGATE_REGISTRY_2_HOST", "127.0.0.1:5000"),
            ("OCIGATE_REGISTRY_2_PLAIN_HTTP", "true"),
            ("OCIGATE_REGISTRY_3_HOST", "GHCR.io"),
            ("OCIGATE_REGISTRY_3_REPOSITORY", "org-b/*"),
            ("OCIGATE_REGISTRY_3_USERNAME", "b"),
            ("OCIGATE_REGISTRY_3_PASSWORD", "pb"),
            ("OCIGATE_REGISTRY_10_HOST", "ghcr.io"),
            ("OCIGATE_REGISTRY_10_USERNAME", "any"),
            ("OCIGATE_REGISTRY_10_PASSWORD", "pa"),
            ("OCIGATE_REGISTRY_4_HOST", "tok.io"),
            ("OCIGATE_REGISTRY_4_TOKEN", "t"),
            ("OCIGATE_REGISTRY_5_HOST", "https://localhost:5001"),
            ("HOME", "/root"),
        ])
        .unwrap();
        assert_eq!(
            basic(&s, "a.io", "x"),
            Some(("u".into(), "p".into(), "OCIGATE_REGISTRY_*".into()))
        );
        assert!(s.is_plain_http("127.0.0.1:5000"));
        // Two sets on one host: the repository's set first, whatever the indexes.
        assert_eq!(
            basic(&s, "ghcr.io", "org-b/app").unwrap().2,
            "OCIGATE_REGISTRY_3_*"
        );
        assert_eq!(basic(&s, "ghcr.io", "org-b/x/y").unwrap().0, "b");
        assert_eq!(
            basic(&s, "ghcr.io", "org-a/app").unwrap().2,
            "OCIGATE_REGISTRY_10_*"
        );
        match s.find_credential("tok.io", "r", None).unwrap() {
            Some(CredentialOrHelper::Credential(c)) => {
                assert_eq!(c.secret, Secret::Bearer("t".into()))
            }
            other => panic!("{other:?}"),
        }
        // Loopback is HTTPS, then plain HTTP, unless set otherwise.
        assert_eq!(
            s.scheme_choice("localhost:5002"),
            SchemeChoice::HttpsThenHttp
        );
        assert_eq!(s.scheme_choice("localhost:5001"), SchemeChoice::Https);
        assert_eq!(s.scheme_choice("a.io"), SchemeChoice::Https);
        assert!(!s.is_plain_http("a.io"));
        assert!(!format!("{s:?}").contains("\"p\""));
    }

    #[test]
    fn env_errors_name_the_variable() {
        for (vars, needle) in [
            (
                vec![("OCIGATE_REGISTRY_USERNAME", "u")],
                "OCIGATE_REGISTRY_HOST",
            ),
            (
                vec![
                    ("OCIGATE_REGISTRY_1_HOST", "h"),
                    ("OCIGATE_REGISTRY_1_USERNAME", "u"),
                ],
                "OCIGATE_REGISTRY_1_PASSWORD",
            ),
            (
                vec![
                    ("OCIGATE_REGISTRY_HOST", "h"),
                    ("OCIGATE_REGISTRY_PLAIN_HTTP", "maybe"),
                ],
                "OCIGATE_REGISTRY_PLAIN_HTTP",
            ),
            (
                vec![
                    ("OCIGATE_REGISTRY_HOST", "h"),
                    ("OCIGATE_REGISTRY_BOGUS", "x"),
                ],
                "OCIGATE_REGISTRY_BOGUS",
            ),
            (
                vec![
                    ("OCIGATE_REGISTRY_2_HOST", "h"),
                    ("OCIGATE_REGISTRY_2_TOKEN", "t"),
                    ("OCIGATE_REGISTRY_2_PASSWORD", "p"),
                ],
                "OCIGATE_REGISTRY_2_*",
            ),
            (
                vec![
                    ("OCIGATE_REGISTRY_HOST", "h"),
                    ("OCIGATE_REGISTRY_CA_FILE", "/nonexistent/ca.pem"),
                ],
                "OCIGATE_REGISTRY_CA_FILE",
            ),
            (
                vec![("OCIGATE_REGISTRY_HOST", "ftp://h")],
                "OCIGATE_REGISTRY_HOST",
            ),
        ] {
            let e = RegistrySettings::default().apply_env(vars).unwrap_err();
            assert!(e.to_string().contains(needle), "{e}");
        }
    }

    #[test]
    fn creds_flags_and_files() {
        let mut s = RegistrySettings::default();
        s.add_credentials_flag("r.io=me:se:cret").unwrap();
        assert_eq!(basic(&s, "r.io", "x").unwrap().1, "se:cret");
        assert!(s.add_credentials_flag("r.io").is_err());
        assert!(s.add_credentials_flag("=u:p").is_err());
        // Hosts are stored in the one spelling references have.
        s.add_credentials_flag("GHCR.IO:443=me:x").unwrap();
        assert_eq!(basic(&s, "ghcr.io", "x").unwrap().0, "me");
        assert!(s.add_credentials_flag("bad host=u:p").is_err());
        s.add_plain_http("LocalHost:5000").unwrap();
        assert!(s.is_plain_http("localhost:5000"));
        s.add_plain_http("http://r2.io").unwrap();
        assert!(s.is_plain_http("r2.io"));
        let e = s.add_plain_http("https://r3.io").unwrap_err();
        assert!(e.to_string().contains("https://"), "{e}");
        assert!(s.add_plain_http("r.io/path").is_err());

        s.add_credentials_text("# comment\n\nq.io=u:p w\n", "--registry-creds-file c.txt")
            .unwrap();
        assert_eq!(
            basic(&s, "q.io", "x").unwrap(),
            (
                "u".into(),
                "p w".into(),
                "--registry-creds-file c.txt".into()
            )
        );
        let e = s
            .add_credentials_text("q.io=u:p\nnonsense\n", "--registry-creds-file c.txt")
            .unwrap_err();
        assert!(e.to_string().contains("c.txt line 2"), "{e}");
        assert!(!e.to_string().contains("u:p"), "{e}");
    }

    #[test]
    fn files_come_after_flags_env_and_the_request_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, body: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, body).unwrap();
            p
        };
        let docker = write(
            "docker.json",
            r#"{"auths":{"a.io":{"username":"docker","password":"1"}},"credHelpers":{"h.io":"x"}}"#,
        );
        let podman = write(
            "auth.json",
            r#"{"auths":{"a.io":{"username":"podman","password":"2"},"b.io":{"username":"podman","password":"2"}}}"#,
        );
        let mut s = RegistrySettings::default();
        s.add_auth_file(docker, "docker".into(), false);
        s.add_auth_file(podman, "podman".into(), false);
        s.add_auth_file(dir.path().join("absent.json"), "absent".into(), false);
        assert_eq!(basic(&s, "a.io", "r").unwrap().2, "docker");
        assert_eq!(basic(&s, "b.io", "r").unwrap().2, "podman");
        match s.find_credential("h.io", "r", None).unwrap() {
            Some(CredentialOrHelper::Helper { helper, source }) => {
                assert_eq!(helper, "x");
                assert_eq!(source, "docker (credHelpers: x)");
            }
            other => panic!("{other:?}"),
        }
        let request: RequestCredentials = Arc::new(BTreeMap::from([(
            "a.io".to_string(),
            Credential::new(
                Secret::Basic {
                    username: "pull".into(),
                    password: "3".into(),
                },
                "imagePullSecret ns/s",
            ),
        )]));
        match s.find_credential("a.io", "r", Some(&request)).unwrap() {
            Some(CredentialOrHelper::Credential(c)) => {
                assert_eq!(&*c.source, "imagePullSecret ns/s")
            }
            other => panic!("{other:?}"),
        }
        s.add_credentials_flag("a.io=flag:4").unwrap();
        assert_eq!(basic(&s, "a.io", "r").unwrap().0, "flag");
        assert!(s.find_credential("c.io", "r", None).unwrap().is_none());

        let broken = write("broken.json", "{not json");
        let mut s = RegistrySettings::default();
        s.add_auth_file(broken, "--registry-config broken.json".into(), false);
        let e = s.find_credential("c.io", "r", None).unwrap_err();
        assert!(e.to_string().contains("broken.json"), "{e}");
    }

    #[test]
    fn tls_files_are_checked_when_named() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(
            &ca,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let mut s = RegistrySettings::default();
        s.add_tls_file(TlsFile::Ca, &format!("127.0.0.1:5000={}", ca.display()))
            .unwrap();
        // A loopback host with a CA speaks TLS, only.
        assert_eq!(s.scheme_choice("127.0.0.1:5000"), SchemeChoice::Https);
        let e = s
            .add_tls_file(TlsFile::Key, &format!("r.io={}", ca.display()))
            .unwrap_err();
        assert!(e.to_string().contains("private key"), "{e}");
        let e = s.add_tls_file(TlsFile::Ca, "r.io").unwrap_err();
        assert!(e.to_string().contains("HOST=FILE"), "{e}");
        let e = s
            .add_tls_file(TlsFile::Ca, &format!("http://r.io={}", ca.display()))
            .unwrap_err();
        assert!(e.to_string().contains("http://"), "{e}");
        s.add_tls_file(TlsFile::Cert, &format!("m.io={}", ca.display()))
            .unwrap();
        let e = s.validate().unwrap_err();
        assert!(e.to_string().contains("no key"), "{e}");
    }

    #[test]
    fn allow_insecure_tries_https_then_http_and_yields_to_plain_http() {
        let mut s = RegistrySettings::default();
        s.add_allow_insecure("r.io").unwrap();
        assert_eq!(s.scheme_choice("r.io"), SchemeChoice::HttpsThenHttp);
        // With OCIGATE_REGISTRY_PLAIN_HTTP for the same host: plain HTTP, not a usage error.
        s.apply_env([
            ("OCIGATE_REGISTRY_HOST", "r.io"),
            ("OCIGATE_REGISTRY_PLAIN_HTTP", "true"),
        ])
        .unwrap();
        s.add_allow_insecure("r.io").unwrap();
        s.validate().unwrap();
        assert_eq!(s.scheme_choice("r.io"), SchemeChoice::Http);
        // An https:// prefix keeps it on HTTPS (unverified).
        s.add_allow_insecure("https://q.io").unwrap();
        assert_eq!(s.scheme_choice("q.io"), SchemeChoice::Https);
        assert!(s.host("q.io").is_some_and(|h| h.allow_insecure));
    }

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1",
            "127.1.2.3:80",
            "[::1]:5000",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in ["localhost.example", "128.0.0.1", "[::2]", "ghcr.io"] {
            assert!(!is_loopback(h), "{h}");
        }
    }
}
