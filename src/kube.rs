//! Reading single objects from the Kubernetes API (a HelmRelease's HelmRepository, a Pod's pull
//! secrets) for the webhook and `verify --manifests --kubeconfig`: `get` by name, answers cached
//! briefly (an object that was not there for at most [`NOT_FOUND_TTL`]) except the objects a
//! reference names ([`ApiLookup`]: a source's URL decides what is checked, so it is read
//! now); `list` only in `list`,
//! for `audit`. Must not follow a reference into another namespace unless the caller allows it,
//! nor know what the objects mean.
//!
//! Not the `kube` client crate: what is needed is one authenticated GET with the cluster's CA,
//! which the reqwest stack the registry code already uses (rustls on aws-lc-rs) does; `kube`
//! would bring a second HTTP stack and its own TLS set-up for that.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::extract::names::{is_dns1123_label, is_dns1123_subdomain};
use crate::extract::{Lookup, LookupError, ObjectRef, SOURCE_API_VERSION};

mod config;
#[cfg(test)]
pub(crate) mod fake;
mod list;
mod pull;
mod write;

pub(crate) use list::{MAX_PAGES, Resource};
pub(crate) use write::Written;

/// How long an object read from the API is believed.
pub(crate) const FOUND_TTL: Duration = Duration::from_secs(10);

/// How long "no such object" is believed: briefly, since it is created any moment (a
/// HelmRepository applied just after the HelmRelease that names it is admitted within this).
pub(crate) const NOT_FOUND_TTL: Duration = Duration::from_secs(2);

const SERVICE_ACCOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Why the API could not be asked, or answered an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KubeApiError {
    /// The kubeconfig file cannot be used.
    #[error("kubeconfig {}", file.display())]
    Kubeconfig {
        /// The file.
        file: PathBuf,
        /// What is wrong with it.
        #[source]
        problem: KubeconfigError,
    },
    /// The in-cluster service account's CA cannot be read.
    #[error("Kubernetes API: {SERVICE_ACCOUNT}/ca.crt")]
    ServiceAccountCa(#[source] std::io::Error),
    /// The cluster's CA is not PEM certificates.
    #[error("Kubernetes API: the cluster CA is not PEM")]
    CaNotPem(#[source] reqwest::Error),
    /// The HTTP client cannot be built.
    #[error("Kubernetes API: HTTP client")]
    Client(#[source] reqwest::Error),
    /// The API answered an error status.
    #[error("Kubernetes API {url}: HTTP {status}")]
    Status {
        /// What was asked.
        url: String,
        /// The status.
        status: u16,
    },
    /// The request did not get an answer.
    #[error("Kubernetes API {url}: request failed")]
    Transport {
        /// What was asked.
        url: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// The answer is not a JSON object (or larger than 4 MiB).
    #[error("Kubernetes API {url}: the answer is not a JSON object")]
    Body {
        /// What was asked.
        url: String,
    },
    /// A list that had more pages than are read ([`list::MAX_PAGES`]), or the same page again.
    #[error("Kubernetes API {url}: the list did not end within {pages} pages")]
    Unending {
        /// What was listed.
        url: String,
        /// The pages read.
        pages: usize,
    },
    /// A referenced kind this webhook does not read.
    #[error("no Kubernetes API resource is known for kind {kind} ({api_version})")]
    UnknownKind {
        /// The kind.
        kind: String,
        /// Its apiVersion as the reference gave it.
        api_version: String,
    },
    /// A name or namespace that is not a valid Kubernetes name: it is never asked for.
    #[error("{what} {value:?} is not a valid Kubernetes {rule}; the API was not asked")]
    InvalidName {
        /// What the name names.
        what: &'static str,
        /// The name (its first 80 characters).
        value: String,
        /// The rule it breaks.
        rule: &'static str,
    },
}

/// What is wrong with a kubeconfig file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KubeconfigError {
    /// It cannot be read.
    #[error("cannot read")]
    Read(#[source] std::io::Error),
    /// It is not a kubeconfig.
    #[error("not a kubeconfig")]
    NotAKubeconfig(#[source] Box<serde_saphyr::Error>),
    /// It has no context.
    #[error("no context")]
    NoContext,
    /// Its context names a cluster it does not have.
    #[error("no cluster {0:?}")]
    NoCluster(String),
    /// Its `current-context` names a context it does not have (kubectl refuses it too).
    #[error("current-context {0:?} is not among its contexts")]
    NoCurrentContext(String),
    /// Its server is plain HTTP on another host than this one, and it has a token: the token
    /// would cross the network (and any HTTP proxy) in clear text.
    #[error(
        "server {0:?} is plain HTTP and not on this host; a bearer token is sent only over HTTPS"
    )]
    TokenOverHttp(String),
    /// `certificate-authority-data` is not base64.
    #[error("certificate-authority-data is not base64")]
    CaDataNotBase64,
    /// The `certificate-authority` file cannot be read.
    #[error("certificate-authority {path}")]
    CaFile {
        /// As the kubeconfig names it.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// `value` as a namespace (DNS-1123 label), or why it cannot be one.
pub(crate) fn namespace_name(value: &str) -> Result<&str, KubeApiError> {
    if is_dns1123_label(value) {
        return Ok(value);
    }
    Err(KubeApiError::InvalidName {
        what: "namespace",
        value: value.chars().take(80).collect(),
        rule: "namespace name (DNS-1123 label)",
    })
}

/// `value` as an object name (DNS-1123 subdomain), or why it cannot be one.
pub(crate) fn object_name<'v>(what: &'static str, value: &'v str) -> Result<&'v str, KubeApiError> {
    if is_dns1123_subdomain(value) {
        return Ok(value);
    }
    Err(KubeApiError::InvalidName {
        what,
        value: value.chars().take(80).collect(),
        rule: "object name (DNS-1123 subdomain)",
    })
}

impl KubeApi {
    /// The labels of the Namespace `name` (a `get`, cached as every answer is), None when
    /// there is no such Namespace. A name that is not a namespace name is never asked for.
    pub(crate) async fn namespace_labels(
        &self,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, KubeApiError> {
        let name = namespace_name(name)?;
        let found = self.get(&format!("/api/v1/namespaces/{name}")).await?;
        Ok(found.as_ref().map(labels_of))
    }
}

/// An object's `metadata.labels` (entries whose value is not text left out).
pub(crate) fn labels_of(object: &Value) -> BTreeMap<String, String> {
    object
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) enum Token {
    /// A service-account token file, re-read for each request (bound tokens rotate).
    File(PathBuf),
    Static(String),
    None,
}

/// A reader of single objects from the Kubernetes API.
pub(crate) struct KubeApi {
    server: String,
    token: Token,
    client: reqwest::Client,
    /// The kubeconfig context's namespace, where objects that name none are applied.
    namespace: Option<String>,
    cache: moka::sync::Cache<String, Option<Value>>,
}

/// Each answer's lifetime in the cache: [`FOUND_TTL`] for an object, [`NOT_FOUND_TTL`] for
/// "no such object".
struct ByAnswer;

/// The most bytes (of JSON text, and the paths) the answers cached at once may weigh: a
/// Secret may be 1 MiB and a Pod names up to 16 of them, so a count of entries bounds nothing.
const CACHE_BYTES: u64 = 16 << 20;

/// An answer's weight in the cache: its path and its JSON text's length.
fn cache_weight(path: &str, found: &Option<Value>) -> u32 {
    let body = found.as_ref().map_or(0, json_len);
    u32::try_from(path.len().saturating_add(body)).unwrap_or(u32::MAX)
}

/// How many bytes `v` is as JSON text (counted, not kept).
fn json_len(v: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 = self.0.saturating_add(b.len());
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut n = Count(0);
    // Writing to a counter cannot fail; a value that could not be written weighs the most.
    match serde_json::to_writer(&mut n, v) {
        Ok(()) => n.0,
        Err(_) => usize::MAX,
    }
}

impl ByAnswer {
    fn ttl(found: &Option<Value>) -> Duration {
        if found.is_some() {
            FOUND_TTL
        } else {
            NOT_FOUND_TTL
        }
    }
}

impl moka::Expiry<String, Option<Value>> for ByAnswer {
    fn expire_after_create(
        &self,
        _: &String,
        found: &Option<Value>,
        _: Instant,
    ) -> Option<Duration> {
        Some(Self::ttl(found))
    }

    fn expire_after_update(
        &self,
        _: &String,
        found: &Option<Value>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(Self::ttl(found))
    }
}

impl KubeApi {
    /// The API of the cluster this runs in (service account token and CA), if it runs in one.
    /// Reads files: call it off the async workers.
    pub(crate) fn in_cluster() -> Result<Option<Self>, KubeApiError> {
        let (Ok(host), Ok(port)) = (
            std::env::var("KUBERNETES_SERVICE_HOST"),
            std::env::var("KUBERNETES_SERVICE_PORT"),
        ) else {
            return Ok(None);
        };
        let sa = Path::new(SERVICE_ACCOUNT);
        let ca = std::fs::read(sa.join("ca.crt")).map_err(KubeApiError::ServiceAccountCa)?;
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        let namespace = std::fs::read_to_string(sa.join("namespace"))
            .ok()
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty());
        let api = Self::new(
            format!("https://{host}:{port}"),
            Some(&ca),
            Token::File(sa.join("token")),
        )?;
        Ok(Some(KubeApi { namespace, ..api }))
    }

    /// The namespace of the kubeconfig's context (in a cluster: the service account's), where
    /// `kubectl apply` puts an object that names none.
    pub(crate) fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    pub(crate) fn new(
        server: String,
        ca_pem: Option<&[u8]>,
        token: Token,
    ) -> Result<Self, KubeApiError> {
        let mut b = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none());
        if let Some(pem) = ca_pem {
            let certs =
                reqwest::Certificate::from_pem_bundle(pem).map_err(KubeApiError::CaNotPem)?;
            b = b.tls_certs_only(certs);
        }
        let client = b.build().map_err(KubeApiError::Client)?;
        Ok(KubeApi {
            server: server.trim_end_matches('/').to_string(),
            token,
            client,
            namespace: None,
            cache: moka::sync::Cache::builder()
                .max_capacity(CACHE_BYTES)
                .weigher(|path: &String, found| cache_weight(path, found))
                .expire_after(ByAnswer)
                .build(),
        })
    }

    /// One object by its API path; `None` when it does not exist.
    pub(crate) async fn get(&self, path: &str) -> Result<Option<Value>, KubeApiError> {
        if let Some(hit) = self.cache.get(path) {
            return Ok(hit);
        }
        let found = self.fresh(path).await?;
        self.cache.insert(path.to_string(), found.clone());
        Ok(found)
    }

    /// One object by its API path, asked now (never from the cache: a Lease must be read as
    /// it is); `None` when it does not exist.
    pub(crate) async fn fresh(&self, path: &str) -> Result<Option<Value>, KubeApiError> {
        let url = format!("{}{path}", self.server);
        let resp = self
            .send(
                self.client.get(&url).header("Accept", "application/json"),
                &url,
            )
            .await?;
        match resp.status().as_u16() {
            404 => Ok(None),
            200 => object_of(resp, url).await.map(Some),
            status => Err(KubeApiError::Status { url, status }),
        }
    }

    /// `req` sent with the bearer token; a request that got no answer is `Transport` for `url`.
    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<reqwest::Response, KubeApiError> {
        self.authorized(req)
            .await
            .send()
            .await
            .map_err(|source| KubeApiError::Transport {
                url: url.to_string(),
                source,
            })
    }

    /// `req` with the bearer token, if there is one (a token file is read on the blocking
    /// pool each time: the kubelet rotates it).
    async fn authorized(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let token = match &self.token {
            Token::Static(t) => Some(t.clone()),
            // Read on the blocking pool: a request must not hold an async worker on a file.
            Token::File(f) => {
                let f = f.clone();
                tokio::task::spawn_blocking(move || std::fs::read_to_string(f))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .map(|t| t.trim().to_string())
                    .filter(|t| !t.is_empty())
            }
            Token::None => None,
        };
        match token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }
}

/// An answer's body as a JSON object (at most 4 MiB).
async fn object_of(resp: reqwest::Response, url: String) -> Result<Value, KubeApiError> {
    let body = crate::registry::read_body_capped(resp, 4 << 20)
        .await
        .ok()
        .flatten()
        .ok_or_else(|| KubeApiError::Body { url: url.clone() })?;
    serde_json::from_slice(&body)
        .ok()
        .filter(Value::is_object)
        .ok_or(KubeApiError::Body { url })
}

/// The URL name of a kind a lookup may read.
fn plural_of(r: &ObjectRef) -> Result<&'static str, KubeApiError> {
    match r.kind.as_str() {
        "HelmRepository" => Ok("helmrepositories"),
        "HelmChart" => Ok("helmcharts"),
        "OCIRepository" => Ok("ocirepositories"),
        "ExternalArtifact" => Ok("externalartifacts"),
        _ => Err(KubeApiError::UnknownKind {
            kind: r.kind.clone(),
            api_version: r.api_version.clone().unwrap_or_default(),
        }),
    }
}

/// The version Flux served its sources as before 2.3.
const FLUX_SOURCE_V1BETA2: &str = "source.toolkit.fluxcd.io/v1beta2";

/// The API path of a Flux source object.
fn object_path(r: &ObjectRef, namespace: &str) -> Result<String, KubeApiError> {
    let plural = plural_of(r)?;
    let api_version = r
        .api_version
        .clone()
        .unwrap_or_else(|| SOURCE_API_VERSION.into());
    // group/version: DNS labels and a version, nothing that could change the path.
    let ok = |s: &str| {
        !s.is_empty()
            && s.split('/').count() == 2
            && s.split('/')
                .all(|part| part.split('.').all(is_dns1123_label))
    };
    if !ok(&api_version) {
        return Err(KubeApiError::InvalidName {
            what: "apiVersion",
            value: api_version.chars().take(80).collect(),
            rule: "group/version",
        });
    }
    namespace_name(namespace)?;
    object_name("object name", &r.name)?;
    Ok(format!(
        "/apis/{api_version}/namespaces/{namespace}/{plural}/{}",
        r.name
    ))
}

/// Lookups for one admission request: referenced objects from the API (or a clear refusal when
/// no API is configured), in the request's namespace unless the reference names one.
pub(crate) struct ApiLookup<'a> {
    /// The API; None: none is configured.
    pub(crate) api: Option<&'a KubeApi>,
    /// The admitted object's namespace.
    pub(crate) namespace: Option<String>,
    /// Whether references into other namespaces are followed (`--allow-cross-namespace-refs`).
    pub(crate) cross_namespace_refs: bool,
}

impl Lookup for ApiLookup<'_> {
    fn get(
        &self,
        r: &ObjectRef,
    ) -> impl Future<Output = Result<Option<Value>, LookupError>> + Send {
        let r = r.clone();
        let namespace = r.namespace.clone().or_else(|| self.namespace.clone());
        let api = self.api;
        async move {
            let Some(api) = api else {
                return Err(LookupError::failed(
                    r,
                    "no Kubernetes API is configured (not in a cluster, no --kubeconfig)",
                ));
            };
            let Some(ns) = namespace else {
                return Err(LookupError::failed(r, "the reference names no namespace"));
            };
            let path = object_path(&r, &ns).map_err(|e| LookupError::failed(r.clone(), e))?;
            // Read now, never from the answer cache: what a source says (a HelmRepository's
            // URL) decides what is checked, and it may have changed since the last review
            // read it, on this replica or another (a cache could not be told of that).
            api.fresh(&path)
                .await
                .map_err(|e| LookupError::failed(r.clone(), e))
        }
    }

    fn cross_namespace_refs(&self) -> bool {
        self.cross_namespace_refs
    }

    fn list(
        &self,
        of: &ObjectRef,
        max: usize,
    ) -> impl Future<Output = Result<Option<Vec<Value>>, LookupError>> + Send {
        let of = of.clone();
        let namespace = of.namespace.clone().or_else(|| self.namespace.clone());
        let api = self.api;
        async move {
            let Some(api) = api else {
                let why = "no Kubernetes API is configured (not in a cluster, no --kubeconfig)";
                return Err(LookupError::failed(of, why));
            };
            let Some(ns) = namespace else {
                return Err(LookupError::failed(of, "the object names no namespace"));
            };
            let plural = match plural_of(&of) {
                Ok(plural) => plural,
                Err(e) => return Err(LookupError::failed(of, e)),
            };
            let first = of
                .api_version
                .clone()
                .unwrap_or_else(|| SOURCE_API_VERSION.into());
            // Flux before 2.3 serves its sources as v1beta2 only: asked next when v1 is not.
            let older = (first == SOURCE_API_VERSION).then(|| FLUX_SOURCE_V1BETA2.to_string());
            for api_version in std::iter::once(first).chain(older) {
                let resource = Resource {
                    api_version,
                    kind: of.kind.clone(),
                    plural: plural.into(),
                };
                match api.list_in(&resource, &ns, max).await {
                    Ok(Some(found)) => return Ok(Some(found)),
                    Ok(None) => {}
                    Err(e) => return Err(LookupError::failed(of, e)),
                }
            }
            // A kind whose CRD is not installed has no objects.
            Ok(Some(Vec::new()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_paths() {
        let r = ObjectRef {
            api_version: None,
            kind: "HelmRepository".into(),
            namespace: None,
            name: "charts".into(),
        };
        assert_eq!(
            object_path(&r, "flux").unwrap(),
            "/apis/source.toolkit.fluxcd.io/v1/namespaces/flux/helmrepositories/charts"
        );
        let evil = ObjectRef {
            name: "../../secrets/x".into(),
            ..r.clone()
        };
        assert!(object_path(&evil, "flux").is_err());
        let unknown = ObjectRef {
            kind: "Secret".into(),
            ..r.clone()
        };
        assert!(object_path(&unknown, "flux").is_err());
        for name in [".", "..", "a/b", "A", "", "%2e%2e"] {
            let bad = ObjectRef {
                name: name.into(),
                ..r.clone()
            };
            let e = object_path(&bad, "flux").unwrap_err();
            assert!(
                matches!(e, KubeApiError::InvalidName { .. }),
                "{name:?}: {e}"
            );
            assert!(object_path(&r, name).is_err(), "namespace {name:?}");
        }
        assert!(object_path(&r, "flux.x").is_err(), "a namespace is a label");
        let odd_version = ObjectRef {
            api_version: Some("source.toolkit.fluxcd.io/../v1".into()),
            ..r.clone()
        };
        assert!(object_path(&odd_version, "flux").is_err());
    }

    #[test]
    fn kubeconfig_current_context() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("config");
        std::fs::write(
            &f,
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: \"https://127.0.0.1:6443\"}\n\
             users:\n- name: u\n  user: {token: abc}\ncontexts:\n- name: x\n  context: {cluster: c, user: u, namespace: team}\ncurrent-context: x\n",
        )
        .unwrap();
        let api = KubeApi::from_kubeconfig(&f).unwrap();
        assert_eq!(api.server, "https://127.0.0.1:6443");
        assert_eq!(api.namespace(), Some("team"));
        assert!(matches!(api.token, Token::Static(ref t) if t == "abc"));
        std::fs::write(&f, "clusters: [").unwrap();
        let e = KubeApi::from_kubeconfig(&f).err().unwrap().to_string();
        assert!(e.contains("config"), "{e}");
        // The text the CLI prints: each layer's words, then its cause.
        let e = crate::error_chain(&KubeApi::from_kubeconfig(&f).err().unwrap());
        let start = format!("kubeconfig {}: not a kubeconfig: ", f.display());
        assert!(e.starts_with(&start), "{e}");
        let e = crate::error_chain(
            &KubeApi::from_kubeconfig(&dir.path().join("none"))
                .err()
                .unwrap(),
        );
        assert!(e.contains("/none: cannot read: No such file"), "{e}");
    }

    /// "Not found" is believed briefly (it is created any moment), an object longer.
    #[test]
    fn not_found_is_kept_briefly() {
        use moka::Expiry as _;
        let now = Instant::now();
        let key = String::from("/apis/x");
        let found = Some(serde_json::json!({"kind": "HelmRepository"}));
        assert_eq!(
            ByAnswer.expire_after_create(&key, &None, now),
            Some(NOT_FOUND_TTL)
        );
        assert_eq!(
            ByAnswer.expire_after_create(&key, &found, now),
            Some(FOUND_TTL)
        );
        // An answer that replaces another gets its own lifetime, not the old one's.
        let long = Some(FOUND_TTL);
        assert_eq!(
            ByAnswer.expire_after_update(&key, &None, now, long),
            Some(NOT_FOUND_TTL)
        );
        assert!(NOT_FOUND_TTL <= Duration::from_secs(2));
    }

    #[test]
    fn a_current_context_that_is_not_there_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("config");
        std::fs::write(
            &f,
            "clusters:\n- name: c\n  cluster: {server: \"https://127.0.0.1:6443\"}\n\
             contexts:\n- name: x\n  context: {cluster: c}\ncurrent-context: gone\n",
        )
        .unwrap();
        let e = crate::error_chain(&KubeApi::from_kubeconfig(&f).err().unwrap());
        assert!(e.contains("current-context \"gone\" is not among"), "{e}");
    }

    #[test]
    fn a_token_goes_over_plain_http_only_to_this_host() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("config");
        let config = |server: &str, user: &str| {
            format!(
                "clusters:\n- name: c\n  cluster: {{server: \"{server}\"}}\n\
                 users:\n- name: u\n  user: {user}\n\
                 contexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n"
            )
        };
        for (server, user, refused) in [
            ("http://api.example:8080", "{token: abc}", true),
            ("http://10.0.0.1:8080", "{tokenFile: /t}", true),
            ("http://api.example:8080", "{}", false),
            ("http://127.0.0.1:8080", "{token: abc}", false),
            ("http://[::1]:8080", "{token: abc}", false),
            ("http://localhost:8080", "{token: abc}", false),
            ("https://api.example:6443", "{token: abc}", false),
        ] {
            std::fs::write(&f, config(server, user)).unwrap();
            let got = KubeApi::from_kubeconfig(&f);
            assert_eq!(got.is_err(), refused, "{server} {user}");
            if let Err(e) = got {
                assert!(crate::error_chain(&e).contains("plain HTTP"), "{e}");
            }
        }
    }

    /// The answers cached at once weigh at most [`CACHE_BYTES`], however large each is.
    #[test]
    fn the_answer_cache_is_bounded_in_bytes() {
        let api = KubeApi::new("https://127.0.0.1:6443".into(), None, Token::None).unwrap();
        let big = serde_json::json!({"data": "x".repeat(1 << 20)});
        assert!(cache_weight("/p", &Some(big.clone())) > 1 << 20);
        for i in 0..64 {
            api.cache.insert(
                format!("/api/v1/namespaces/a/secrets/s{i}"),
                Some(big.clone()),
            );
        }
        api.cache.run_pending_tasks();
        assert!(
            api.cache.weighted_size() <= CACHE_BYTES,
            "{} > {CACHE_BYTES}",
            api.cache.weighted_size()
        );
        assert!(api.cache.entry_count() < 64);
    }
}
