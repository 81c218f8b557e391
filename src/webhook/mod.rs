//! `ocigate serve`: the Kubernetes validating admission webhook. It only translates: an
//! AdmissionReview (kube-core's types) → the OCI sources of the object ([`crate::extract`]) →
//! one engine check per distinct artifact ([`crate::engine`]) → an AdmissionResponse. It
//! verifies nothing itself.
//!
//! Over TLS (hyper 1 on tokio-rustls, aws-lc-rs): `POST /validate`, `POST /mutate` (digest
//! pins on verified tags), `GET /healthz`,
//! `GET /readyz`; Prometheus `GET /metrics` on a separate plain listener. The certificate and
//! the policy are re-read when the mounted files change (polled, so that a ConfigMap's `..data`
//! symlink swap is seen); the policy also when a key or trust root it names changes
//! ([`reload`]); a policy that fails to load is logged and counted, and the last good one stays. SIGTERM stops accepting and drains in-flight requests within a grace period.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use kube_core::DynamicObject;
use kube_core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;

use crate::engine::{Decision, Engine, Failure};
use crate::extract::{self, Artifact, Hints};

mod kubeapi;
mod reload;
pub mod server;
pub mod weight;
use crate::policy::Verdict;
pub use kubeapi::{KubeApi, KubeApiError};
pub use server::Limits;

/// Largest AdmissionReview accepted (the API server sends at most a few MiB).
pub const MAX_BODY_BYTES: usize = 6 << 20;

/// Most distinct artifacts one object may name (real Pods name a handful): an object naming
/// more is denied at once, before any registry is asked.
pub use crate::extract::MAX_ARTIFACTS_PER_OBJECT;

/// Most checks of one admission request running at once: the rest wait their turn, so that
/// one request naming hundreds of images neither floods the registries nor leaves hundreds
/// of verifications running after its deadline (see also [`crate::registry::gate`]).
pub const MAX_CONCURRENT_CHECKS: usize = 8;

/// Why an object's artifacts were not checked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ObjectError {
    /// The object (or an object it refers to) cannot be read.
    #[error("cannot read the object: {0}")]
    Unreadable(String),
    /// It names more distinct artifacts than [`MAX_ARTIFACTS_PER_OBJECT`].
    #[error(
        "the object names more than {max} distinct OCI artifacts (or more than {fields} image \
         fields) to check, more than one object may name; none was checked"
    )]
    TooManyArtifacts { max: usize, fields: usize },
}

/// Run synchronous work that may be heavy (parsing, converting or reading a large object) so
/// that it does not stall the other requests of this worker thread (`/healthz` included): on
/// the multi-threaded runtime the worker hands its other tasks over first.
pub(crate) fn off_the_workers<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// [`off_the_workers`] for a future that is mostly synchronous work (extraction: a Flux
/// object's lookups are the only waits).
async fn off_the_workers_async<F: std::future::Future>(f: F) -> F::Output {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| h.block_on(f))
        }
        _ => f.await,
    }
}

/// How `serve` runs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    /// The plain-HTTP metrics listener (None: no metrics endpoint).
    pub metrics_listen: Option<SocketAddr>,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    pub policy: PathBuf,
    /// How often mounted files (certificate, key, policy and the files it names) are looked at.
    pub reload_interval: Duration,
    /// How long in-flight requests may take after SIGTERM.
    pub grace: Duration,
    /// `/mutate` pins workload templates too, not only Pods (GitOps tools then see drift).
    pub pin_workloads: bool,
    /// Where to read referenced objects; None: in-cluster (service account), if in a cluster.
    pub kubeconfig: Option<PathBuf>,
    /// Follow Flux references into other namespaces (by default refused, nothing read).
    pub allow_cross_namespace_refs: bool,
    /// Connections, request time and body memory a client can hold (see [`server`]).
    pub limits: Limits,
}

/// A failure that stops the server from starting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    #[error("TLS certificate {}: {problem}", path.display())]
    Tls { path: PathBuf, problem: String },
    #[error(transparent)]
    KubeApi(#[from] KubeApiError),
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

// ---------------------------------------------------------------------------------------------
// TLS material, swapped when the mounted files change

#[derive(Debug)]
struct Certificates {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(crate::sync::read(&self.current).clone())
    }
}

fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, WebhookError> {
    let bad = |path: &Path, problem: String| WebhookError::Tls {
        path: path.to_path_buf(),
        problem,
    };
    let cert_pem = std::fs::read(cert).map_err(|e| bad(cert, format!("cannot read: {e}")))?;
    let key_pem = std::fs::read(key).map_err(|e| bad(key, format!("cannot read: {e}")))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| bad(cert, format!("not PEM certificates: {e}")))?;
    if chain.is_empty() {
        return Err(bad(cert, "holds no certificate".into()));
    }
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| bad(key, format!("not a PEM private key: {e}")))?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    CertifiedKey::from_der(chain, key_der, &provider)
        .map_err(|e| bad(cert, format!("certificate and key do not form a pair: {e}")))
}

// ---------------------------------------------------------------------------------------------
// Metrics

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    verdict: String,
    failure: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    operation: String,
    allowed: String,
}

/// A reload's outcome: `ok` or `failed`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    stage: String,
}

struct Metrics {
    registry: prometheus_client::registry::Registry,
    requests: Family<RequestLabels, Counter>,
    decisions: Family<DecisionLabels, Counter>,
    latency: Histogram,
    stages: Family<StageLabels, Histogram>,
    reloads: Family<ReloadLabels, Counter>,
    /// The counters of `decisions` and `requests` by label values, each looked up in its family
    /// once (a series appears when first counted, as before): a request then counts without
    /// building label strings or taking the family's lock.
    decision_counters: [OnceLock<Counter>; VERDICTS * FAILURE_LABELS],
    request_counters: [OnceLock<Counter>; OPERATIONS * 2],
}

const VERDICTS: usize = 3;
/// "none" and each failure class.
const FAILURE_LABELS: usize = Failure::ALL.len() + 1;
const OPERATIONS: usize = 4;

fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ]
    .into_iter()
}

/// The engine's counters, read at each scrape.
struct EngineCollector(Engine);

impl std::fmt::Debug for EngineCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EngineCollector")
    }
}

impl prometheus_client::collector::Collector for EngineCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric as _;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        let s = self.0.stats();
        let counters = [
            (
                "ocigate_cache_hits",
                "Decisions answered from the cache",
                &s.cache_hits,
            ),
            (
                "ocigate_cache_misses",
                "Decisions not in the cache",
                &s.cache_misses,
            ),
            (
                "ocigate_single_flight_joins",
                "Checks that joined a verification already running",
                &s.single_flight_joins,
            ),
            (
                "ocigate_verifications",
                "Verifications run",
                &s.verifications,
            ),
            (
                "ocigate_resolve_cache_hits",
                "Tag-to-digest resolutions answered from the cache",
                &s.resolve_hits,
            ),
            (
                "ocigate_policy_reloads",
                "Policies loaded after start",
                &s.policy_reloads,
            ),
            (
                "ocigate_policy_reload_failures",
                "Policy files that failed to load (the last good policy stayed)",
                &s.policy_reload_failures,
            ),
        ];
        for (name, help, v) in counters {
            let c = ConstCounter::new(v.load(Ordering::Relaxed));
            let m = encoder.encode_descriptor(name, help, None, c.metric_type())?;
            c.encode(m)?;
        }
        {
            let c = ConstCounter::new(0u64);
            let mut family = encoder.encode_descriptor(
                "ocigate_registry_requests",
                "HTTP requests to registries and token realms, by host (the first 32 seen; later ones as \"other\") and status class",
                None,
                c.metric_type(),
            )?;
            for (host, class, n) in self.0.registry().request_counts() {
                let labels = [("host", host), ("class", class.to_string())];
                ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
            }
        }
        let g = ConstGauge::new(self.0.cached_decisions() as i64);
        let m = encoder.encode_descriptor(
            "ocigate_cached_decisions",
            "Decisions held in the cache",
            None,
            g.metric_type(),
        )?;
        g.encode(m)
    }
}

impl Metrics {
    fn new(engine: &Engine) -> Self {
        let mut registry = prometheus_client::registry::Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let decisions = Family::<DecisionLabels, Counter>::default();
        let latency = Histogram::new(latency_buckets());
        let stages = Family::<StageLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(latency_buckets())
        });
        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "ocigate_admission_requests",
            "Admission requests by operation and answer",
            requests.clone(),
        );
        registry.register(
            "ocigate_decisions",
            "Artifact decisions by verdict and failure class",
            decisions.clone(),
        );
        registry.register(
            "ocigate_admission_duration_seconds",
            "Time to answer an admission request",
            latency.clone(),
        );
        registry.register(
            "ocigate_stage_duration_seconds",
            "Time per verification stage (resolve, discover, verify)",
            stages.clone(),
        );
        registry.register(
            "ocigate_certificate_reloads",
            "TLS certificate reloads, by outcome (ok or failed)",
            reloads.clone(),
        );
        registry.register_collector(Box::new(EngineCollector(engine.clone())));
        Metrics {
            registry,
            requests,
            decisions,
            latency,
            stages,
            reloads,
            decision_counters: std::array::from_fn(|_| OnceLock::new()),
            request_counters: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// Count a decision with this verdict and failure class.
    fn count_decision(&self, verdict: Verdict, failure: Option<Failure>) {
        let labels = || DecisionLabels {
            verdict: verdict_name(verdict).to_string(),
            failure: failure.map_or("none", Failure::as_str).to_string(),
        };
        let v = match verdict {
            Verdict::Allow => 0,
            Verdict::Deny => 1,
            Verdict::Warn => 2,
        };
        let f = match failure {
            None => Some(0),
            Some(f) => Failure::ALL.iter().position(|x| *x == f).map(|i| i + 1),
        };
        match f.and_then(|f| self.decision_counters.get(v * FAILURE_LABELS + f)) {
            Some(slot) => slot
                .get_or_init(|| self.decisions.get_or_create(&labels()).clone())
                .inc(),
            None => self.decisions.get_or_create(&labels()).inc(),
        };
    }

    /// Count an admission request of this operation and answer.
    fn count_request(&self, operation: &Operation, allowed: bool) {
        let o = match operation {
            Operation::Create => 0,
            Operation::Update => 1,
            Operation::Delete => 2,
            Operation::Connect => 3,
        };
        let labels = || RequestLabels {
            operation: operation_name(operation).to_string(),
            allowed: allowed.to_string(),
        };
        match self.request_counters.get(o * 2 + usize::from(allowed)) {
            Some(slot) => slot
                .get_or_init(|| self.requests.get_or_create(&labels()).clone())
                .inc(),
            None => self.requests.get_or_create(&labels()).inc(),
        };
    }

    fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Admission

struct State {
    engine: Engine,
    metrics: Metrics,
    log: DecisionLog,
    draining: AtomicBool,
    pin_workloads: bool,
    /// Where referenced objects are read (None: no API; such objects are denied with a reason).
    kube: Option<KubeApi>,
    /// Whether references into other namespaces are followed.
    cross_namespace_refs: bool,
}

/// One artifact's outcome for the response and the log line (fields in the log line's order).
#[derive(serde::Serialize)]
struct ArtifactOutcome {
    artifact: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    cached: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    digest: Option<String>,
    #[serde(rename = "durationMs")]
    duration_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure: Option<Failure>,
    path: String,
    reasons: Vec<String>,
    verdict: Verdict,
    /// Every field of the object that names this artifact (for digest pins).
    #[serde(skip)]
    paths: Vec<String>,
    /// Whether the artifact was named by tag only, so that a pin can be added.
    #[serde(skip)]
    unpinned: bool,
}

/// An admission request's objects as JSON, converted once, and what extraction needs to know
/// about them when they do not say it themselves.
struct Admitted<'a> {
    req: &'a AdmissionRequest<DynamicObject>,
    object: serde_json::Value,
    old_object: Option<serde_json::Value>,
    hints: Hints,
}

impl<'a> Admitted<'a> {
    fn new(req: &'a AdmissionRequest<DynamicObject>) -> Result<Self, String> {
        let value = |o: &DynamicObject| serde_json::to_value(o).map_err(|e| e.to_string());
        let object = value(
            req.object
                .as_ref()
                .ok_or_else(|| "the request carries no object".to_string())?,
        )?;
        let old_object = req.old_object.as_ref().map(value).transpose()?;
        let request_api_version = if req.kind.group.is_empty() {
            req.kind.version.clone()
        } else {
            format!("{}/{}", req.kind.group, req.kind.version)
        };
        let hints = Hints {
            api_version: Some(
                object
                    .get("apiVersion")
                    .and_then(serde_json::Value::as_str)
                    .map_or(request_api_version, str::to_string),
            ),
            kind: Some(req.kind.kind.clone()),
            namespace: req.namespace.clone(),
        };
        Ok(Admitted {
            req,
            object,
            old_object,
            hints,
        })
    }
}

async fn outcomes_for(
    state: &State,
    admitted: &Admitted<'_>,
    deadline: Instant,
) -> Result<(Vec<ArtifactOutcome>, Vec<String>), ObjectError> {
    let req = admitted.req;
    let lookup = kubeapi::ApiLookup {
        api: state.kube.as_ref(),
        namespace: req.namespace.clone(),
        cross_namespace_refs: state.cross_namespace_refs,
    };
    // Referenced objects come from the Kubernetes API: that too happens within the deadline.
    let extract_within = |object| {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let lookup = &lookup;
        async move {
            let extracting = tokio::time::timeout(
                remaining,
                extract::extract_with(object, &admitted.hints, lookup),
            );
            match off_the_workers_async(extracting).await {
                Ok(Err(extract::ExtractError::TooManyArtifacts { max, fields, .. })) => {
                    Err(ObjectError::TooManyArtifacts { max, fields })
                }
                Ok(x) => x.map_err(|e| ObjectError::Unreadable(crate::error_chain(&e))),
                Err(_) => Err(ObjectError::Unreadable(format!(
                    "timed out reading the objects it refers to from the Kubernetes API after {} s",
                    remaining.as_secs_f64()
                ))),
            }
        }
    };
    let new = extract_within(&admitted.object).await?;
    // UPDATE: only what the old object did not already run (scale, labels, status pass). If
    // the old object cannot be read, everything is checked.
    let old: BTreeSet<String> = match (&req.operation, &admitted.old_object) {
        (Operation::Update, Some(o)) => extract_within(o)
            .await
            .map(|x| x.sources.iter().map(extract::Source::key).collect())
            .unwrap_or_default(),
        _ => BTreeSet::new(),
    };
    let mut seen = BTreeSet::new();
    let mut checks = Vec::new();
    for s in new.sources {
        let key = s.key();
        if old.contains(&key) || !seen.insert(key) {
            continue;
        }
        checks.push((s.artifact.to_string(), s));
    }
    if checks.len() > MAX_ARTIFACTS_PER_OBJECT {
        return Err(ObjectError::TooManyArtifacts {
            max: MAX_ARTIFACTS_PER_OBJECT,
            fields: extract::MAX_IMAGE_FIELDS,
        });
    }
    let engine = &state.engine;
    let stages = &state.metrics.stages;
    let futures = checks.into_iter().map(|(key, s)| async move {
        let t = Instant::now();
        let remaining = deadline.saturating_duration_since(Instant::now());
        let decision: Decision = engine.check_source(&s, remaining).await;
        if !decision.cached {
            for (stage, ms) in [
                ("resolve", decision.timings.resolve_ms),
                ("discover", decision.timings.discover_ms),
                ("verify", decision.timings.verify_ms),
            ] {
                if ms > 0.0 {
                    stages
                        .get_or_create(&StageLabels {
                            stage: stage.into(),
                        })
                        .observe(ms / 1000.0);
                }
            }
        }
        let unpinned = matches!(&s.artifact, Artifact::Reference(r) if r.digest().is_none());
        let mut paths = vec![s.path.clone()];
        paths.extend(s.other_paths);
        ArtifactOutcome {
            paths,
            unpinned,
            artifact: key,
            path: s.path,
            digest: decision.digest,
            verdict: decision.verdict,
            failure: decision.failure,
            reasons: decision.reasons,
            cached: decision.cached,
            duration_ms: t.elapsed().as_secs_f64() * 1000.0,
        }
    });
    // In the object's order; a few at a time, in this request's own turn at each registry.
    use futures_util::StreamExt as _;
    let mut outcomes = crate::registry::gate::with_group(
        crate::registry::gate::new_group(),
        futures_util::stream::iter(futures)
            .buffered(MAX_CONCURRENT_CHECKS)
            .collect::<Vec<_>>(),
    )
    .await;
    outcomes.extend(new.unverified.into_iter().map(unverified_outcome));
    Ok((outcomes, new.notes))
}

/// A source the cluster fetches that is not an OCI artifact (a Flux GitRepository, Bucket,
/// ExternalArtifact or HTTP HelmRepository): allowed, as nothing here can verify it, but never
/// silently: a warn outcome, so the AdmissionResponse carries a warning and the log line says so.
fn unverified_outcome(u: extract::Unverified) -> ArtifactOutcome {
    ArtifactOutcome {
        artifact: u.what,
        cached: false,
        digest: None,
        duration_ms: 0.0,
        failure: None,
        paths: vec![u.path.clone()],
        path: u.path,
        reasons: vec![u.reason],
        verdict: Verdict::Warn,
        unpinned: false,
    }
}

/// The outcomes of an object's sources, with the registry credentials its pods would pull with
/// (its `imagePullSecrets` and its service account's) in scope; notes say what was not found.
async fn outcomes_with_pull_credentials(
    state: &State,
    admitted: &Admitted<'_>,
    deadline: Instant,
) -> Result<(Vec<ArtifactOutcome>, Vec<String>), ObjectError> {
    let identity = admitted.req.namespace.as_ref().and_then(|ns| {
        let api_version = admitted.hints.api_version.as_deref().unwrap_or_default();
        extract::pull_identity(&admitted.object, api_version, &admitted.req.kind.kind)
            .map(|p| (p, ns.clone()))
    });
    let (Some(api), Some((identity, ns))) = (&state.kube, identity) else {
        return outcomes_for(state, admitted, deadline).await;
    };
    let budget = deadline.saturating_duration_since(Instant::now()) / 4;
    let (credentials, mut pull_notes) =
        match tokio::time::timeout(budget, api.pull_credentials(&ns, &identity)).await {
            Ok(found) => found,
            Err(_) => (
                Default::default(),
                vec!["reading pull secrets timed out; registries are asked without them".into()],
            ),
        };
    let result = crate::registry::with_request_credentials(
        std::sync::Arc::new(credentials),
        outcomes_for(state, admitted, deadline),
    )
    .await;
    result.map(|(outcomes, mut notes)| {
        notes.append(&mut pull_notes);
        (outcomes, notes)
    })
}

/// The outcomes for a CREATE or UPDATE request, or why its object cannot be read.
async fn checked(
    state: &State,
    req: &AdmissionRequest<DynamicObject>,
    deadline: Instant,
) -> Result<(Vec<ArtifactOutcome>, Vec<String>), ObjectError> {
    let admitted = off_the_workers(|| Admitted::new(req)).map_err(ObjectError::Unreadable)?;
    let result = outcomes_with_pull_credentials(state, &admitted, deadline).await;
    // A large object's values are freed off the workers too.
    off_the_workers(|| drop(admitted));
    result
}

async fn validate(state: &State, req: &AdmissionRequest<DynamicObject>) -> AdmissionResponse {
    let started = Instant::now();
    let deadline = started + state.engine.config().deadline;
    let resp = AdmissionResponse::from(req);
    let (outcomes, notes, resp) = match req.operation {
        Operation::Delete | Operation::Connect => (Vec::new(), Vec::new(), resp),
        _ => match checked(state, req, deadline).await {
            Ok((outcomes, notes)) => {
                let denied: Vec<String> = outcomes
                    .iter()
                    .filter(|o| o.verdict == Verdict::Deny)
                    .map(describe)
                    .collect();
                let warned: Vec<String> = outcomes
                    .iter()
                    .filter(|o| o.verdict == Verdict::Warn)
                    .map(|o| format!("ocigate: {}", describe(o)))
                    .collect();
                let mut resp = if denied.is_empty() {
                    resp
                } else {
                    resp.deny(format!("ocigate: {}", denied.join("; ")))
                };
                if !warned.is_empty() {
                    resp.warnings = Some(warned);
                }
                (outcomes, notes, resp)
            }
            Err(problem) => (
                Vec::new(),
                Vec::new(),
                resp.deny(format!("ocigate: {problem}")),
            ),
        },
    };
    let m = &state.metrics;
    for o in &outcomes {
        m.count_decision(o.verdict, o.failure);
    }
    m.count_request(&req.operation, resp.allowed);
    m.latency.observe(started.elapsed().as_secs_f64());
    log_decision(&state.log, req, &resp, &outcomes, &notes, started.elapsed());
    resp
}

/// `/mutate`: pin each verified image named by tag to its digest (`tag@sha256:…`), on Pods and,
/// when configured, on workload templates. Never denies (the validating webhook decides) and
/// never re-pins what is already pinned.
async fn mutate(state: &State, req: &AdmissionRequest<DynamicObject>) -> AdmissionResponse {
    let resp = AdmissionResponse::from(req);
    let is_pod = req.kind.group.is_empty() && req.kind.kind == "Pod";
    if !matches!(req.operation, Operation::Create | Operation::Update)
        || !(is_pod || state.pin_workloads)
    {
        return resp;
    }
    let deadline = Instant::now() + state.engine.config().deadline;
    let Ok(admitted) = off_the_workers(|| Admitted::new(req)) else {
        return resp;
    };
    let Ok((outcomes, _)) = outcomes_with_pull_credentials(state, &admitted, deadline).await else {
        return resp;
    };
    let object = &admitted.object;
    let mut ops = Vec::new();
    for o in &outcomes {
        let (Verdict::Allow, None, true, Some(digest)) =
            (o.verdict, o.failure, o.unpinned, o.digest.as_deref())
        else {
            continue;
        };
        for path in o.paths.iter().filter(|p| extract::is_pod_image_path(p)) {
            let Some(pointer) = json_pointer(path) else {
                continue;
            };
            let Some(current) = object.pointer(&pointer).and_then(|v| v.as_str()) else {
                continue;
            };
            if current.contains('@') {
                continue;
            }
            let Ok(ptr) = json_patch::jsonptr::PointerBuf::parse(pointer.as_str()) else {
                continue;
            };
            ops.push(json_patch::PatchOperation::Replace(
                json_patch::ReplaceOperation {
                    path: ptr,
                    value: serde_json::Value::String(format!("{current}@{digest}")),
                },
            ));
        }
    }
    let pinned = ops.len();
    let resp = if ops.is_empty() {
        resp
    } else {
        match resp.clone().with_patch(json_patch::Patch(ops)) {
            Ok(r) => r,
            Err(_) => resp,
        }
    };
    state.log.line(&serde_json::json!({
        "msg": "mutation", "uid": req.uid, "namespace": req.namespace, "kind": req.kind.kind,
        "name": req.name, "pinned": pinned,
    }));
    resp
}

/// `spec.containers[0].image` → `/spec/containers/0/image`.
fn json_pointer(path: &str) -> Option<String> {
    let mut out = String::new();
    for part in path.split('.') {
        let (name, index) = match part.split_once('[') {
            Some((n, rest)) => (n, Some(rest.strip_suffix(']')?)),
            None => (part, None),
        };
        if name.is_empty() || name.contains(['/', '~']) {
            return None;
        }
        out.push('/');
        out.push_str(name);
        if let Some(i) = index {
            i.parse::<usize>().ok()?;
            out.push('/');
            out.push_str(i);
        }
    }
    Some(out)
}

fn describe(o: &ArtifactOutcome) -> String {
    let failure = o.failure.map(|f| format!(" [{f}]")).unwrap_or_default();
    format!(
        "{} ({}){failure}: {}",
        o.artifact,
        o.path,
        o.reasons.join("; ")
    )
}

/// The log line of one admission decision. Keys in alphabetical order, as the line had when
/// it was built as a `serde_json::Value` (whose maps sort their keys).
#[derive(serde::Serialize)]
struct DecisionLine<'a> {
    allowed: bool,
    artifacts: &'a [ArtifactOutcome],
    #[serde(rename = "dryRun")]
    dry_run: bool,
    #[serde(rename = "durationMs")]
    duration_ms: f64,
    kind: &'a str,
    msg: &'static str,
    name: &'a str,
    namespace: &'a Option<String>,
    notes: &'a [String],
    operation: &'static str,
    uid: &'a str,
}

fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Allow => "allow",
        Verdict::Deny => "deny",
        Verdict::Warn => "warn",
    }
}

fn operation_name(op: &Operation) -> &'static str {
    match op {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

/// One structured JSON line per admission decision, on stdout (see [`DecisionLog`]).
fn log_decision(
    log: &DecisionLog,
    req: &AdmissionRequest<DynamicObject>,
    resp: &AdmissionResponse,
    outcomes: &[ArtifactOutcome],
    notes: &[String],
    took: Duration,
) {
    let line = DecisionLine {
        allowed: resp.allowed,
        artifacts: outcomes,
        dry_run: req.dry_run,
        duration_ms: took.as_secs_f64() * 1000.0,
        kind: &req.kind.kind,
        msg: "admission",
        name: &req.name,
        namespace: &req.namespace,
        notes,
        operation: operation_name(&req.operation),
        uid: &req.uid,
    };
    log.line(&line);
}

/// The log on stdout, one JSON line per admission (and per mutation), written in batches: a
/// request appends its line to a buffer, which goes out in one write when it holds
/// [`LOG_CHUNK`] bytes, when the flusher comes by (every [`LOG_FLUSH`]) and at shutdown.
/// Lines keep their order. A write per line, every worker taking the stdout lock for it, was
/// a measurable part of a warm request; a write is also a wake-up of whatever reads stdout.
/// A line that cannot be written (stdout closed) is lost, not the answer.
#[derive(Default)]
struct DecisionLog {
    buf: std::sync::Mutex<Vec<u8>>,
}

const LOG_CHUNK: usize = 64 << 10;
const LOG_FLUSH: Duration = Duration::from_millis(50);

impl DecisionLog {
    fn line(&self, value: &impl serde::Serialize) {
        let mut line = Vec::with_capacity(512);
        if serde_json::to_writer(&mut line, value).is_err() {
            return;
        }
        line.push(b'\n');
        let mut buf = crate::sync::lock(&self.buf);
        buf.extend_from_slice(&line);
        if buf.len() >= LOG_CHUNK {
            write_out(&mut buf);
        }
    }

    fn flush(&self) {
        let mut buf = crate::sync::lock(&self.buf);
        if !buf.is_empty() {
            write_out(&mut buf);
        }
    }
}

/// Write (under the buffer's lock, so that batches keep their order) and empty the buffer.
fn write_out(buf: &mut Vec<u8>) {
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), buf);
    buf.clear();
    if buf.capacity() > 4 * LOG_CHUNK {
        buf.shrink_to(LOG_CHUNK);
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP

type Body = Full<Bytes>;

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

async fn handle(state: Arc<State>, req: Request<Incoming>, conn: server::Conn) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => {
            if state.draining.load(Ordering::Relaxed) {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
            } else {
                text(StatusCode::OK, "ready\n")
            }
        }
        (&Method::POST, path @ ("/validate" | "/mutate")) => {
            let mutating = path == "/mutate";
            let body = match conn.read_body(req, MAX_BODY_BYTES).await {
                Ok(b) => b,
                Err(e) => return e.response(),
            };
            // The bytes go once decoded; the body's budget is held until the answer, since what
            // the body decodes to (the object, its sources) is in memory as long as the review is
            // checked, and grows with the body: in-flight reviews stay bounded by the budget.
            let server::ReadBody {
                bytes,
                mut reservation,
            } = body;
            let values = off_the_workers(|| weight::json_values(&bytes));
            if values > weight::MAX_JSON_VALUES {
                return text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "the AdmissionReview holds {values} JSON values, more than the {} \
                         one review may hold\n",
                        weight::MAX_JSON_VALUES
                    ),
                );
            }
            if !reservation.grow_to(weight::decoded_bytes(bytes.len(), values)) {
                return server::BodyError::NoBudget.response();
            }
            let decoded = off_the_workers(|| review_request(&bytes));
            drop(bytes);
            let _held = reservation;
            match decoded {
                Ok(request) => {
                    let review = if mutating {
                        mutate(&state, &request).await.into_review()
                    } else {
                        validate(&state, &request).await.into_review()
                    };
                    off_the_workers(|| drop(request));
                    match serde_json::to_vec(&review) {
                        Ok(json) => {
                            let mut r = Response::new(Full::new(Bytes::from(json)));
                            r.headers_mut().insert(
                                hyper::header::CONTENT_TYPE,
                                hyper::header::HeaderValue::from_static("application/json"),
                            );
                            r
                        }
                        Err(e) => text(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            format!("cannot encode the response: {e}\n"),
                        ),
                    }
                }
                Err(msg) => text(StatusCode::BAD_REQUEST, format!("{msg}\n")),
            }
        }
        (_, "/validate" | "/mutate" | "/healthz" | "/readyz") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// An AdmissionReview v1 with a request, or why not.
pub fn review_request(body: &[u8]) -> Result<AdmissionRequest<DynamicObject>, String> {
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_slice(body).map_err(|e| format!("not an AdmissionReview: {e}"))?;
    if review.types.api_version != "admission.k8s.io/v1" || review.types.kind != "AdmissionReview" {
        return Err(format!(
            "expected apiVersion admission.k8s.io/v1, kind AdmissionReview; got {:?}, {:?}",
            review.types.api_version, review.types.kind
        ));
    }
    review
        .try_into()
        .map_err(|_| "the AdmissionReview carries no request".to_string())
}

/// The metrics listener: the same timeouts as the webhook's, at most
/// [`server::METRICS_MAX_CONNECTIONS`] connections (more are answered 503).
async fn serve_metrics(listener: tokio::net::TcpListener, state: Arc<State>, limits: Limits) {
    let config = server::ConnConfig::new(limits);
    let slots = Arc::new(tokio::sync::Semaphore::new(server::METRICS_MAX_CONNECTIONS));
    let refusal = server::Refusal::Answer(server::BUSY_503);
    let forever = std::future::pending::<()>();
    server::accept_until(&listener, slots, refusal, forever, |stream, slot| {
        let state = state.clone();
        let handle = move |req: Request<Incoming>| {
            let state = state.clone();
            async move { metrics_response(&state, &req) }
        };
        tokio::spawn(server::serve_plain(stream, slot, config.clone(), handle));
    })
    .await;
}

fn metrics_response(state: &State, req: &Request<Incoming>) -> Response<Body> {
    if req.uri().path() != "/metrics" {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    let mut r = text(StatusCode::OK, state.metrics.encode());
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
    );
    r
}

/// Re-read the certificate and the key when their bytes change (the policy: [`reload`]).
async fn watch_files(
    state: Arc<State>,
    certs: Arc<Certificates>,
    cfg: ServeConfig,
    mut last_tls: (Vec<u8>, Vec<u8>),
) {
    let mut tick = tokio::time::interval(cfg.reload_interval);
    loop {
        tick.tick().await;
        let tls = (
            std::fs::read(&cfg.tls_cert).unwrap_or_default(),
            std::fs::read(&cfg.tls_key).unwrap_or_default(),
        );
        if tls != last_tls && !tls.0.is_empty() && !tls.1.is_empty() {
            let outcome = match load_certified_key(&cfg.tls_cert, &cfg.tls_key) {
                Ok(k) => {
                    *crate::sync::write(&certs.current) = Arc::new(k);
                    eprintln!(r#"{{"msg":"certificate reloaded"}}"#);
                    "ok"
                }
                Err(e) => {
                    let msg = serde_json::json!({"msg": "certificate reload failed", "error": crate::error_chain(&e)});
                    eprintln!("{msg}");
                    "failed"
                }
            };
            state
                .metrics
                .reloads
                .get_or_create(&ReloadLabels {
                    outcome: outcome.into(),
                })
                .inc();
            last_tls = tls;
        }
    }
}

/// Run the webhook until SIGTERM (or SIGINT); then drain within `grace` and return.
pub async fn serve(engine: Engine, cfg: ServeConfig) -> Result<(), WebhookError> {
    let certified = load_certified_key(&cfg.tls_cert, &cfg.tls_key)?;
    let certs = Arc::new(Certificates {
        current: RwLock::new(Arc::new(certified)),
    });
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| WebhookError::Tls {
            path: cfg.tls_cert.clone(),
            problem: e.to_string(),
        })?
        .with_no_client_auth()
        .with_cert_resolver(certs.clone());
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

    let kube = match &cfg.kubeconfig {
        Some(f) => Some(KubeApi::from_kubeconfig(f)?),
        None => KubeApi::in_cluster()?,
    };
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| WebhookError::Listen {
            addr: cfg.listen,
            source,
        })?;
    let state = Arc::new(State {
        metrics: Metrics::new(&engine),
        log: DecisionLog::default(),
        engine,
        draining: AtomicBool::new(false),
        pin_workloads: cfg.pin_workloads,
        kube,
        cross_namespace_refs: cfg.allow_cross_namespace_refs,
    });
    if let Some(addr) = cfg.metrics_listen {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| WebhookError::Listen { addr, source })?;
        tokio::spawn(serve_metrics(l, state.clone(), cfg.limits));
    }
    let initial_tls = (
        std::fs::read(&cfg.tls_cert).unwrap_or_default(),
        std::fs::read(&cfg.tls_key).unwrap_or_default(),
    );
    {
        let state = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(LOG_FLUSH);
            loop {
                tick.tick().await;
                state.log.flush();
            }
        });
    }
    tokio::spawn(watch_files(state.clone(), certs, cfg.clone(), initial_tls));
    tokio::spawn(reload::watch_policy(
        state.engine.clone(),
        cfg.policy.clone(),
        cfg.reload_interval,
    ));
    let local = listener.local_addr().unwrap_or(cfg.listen);
    eprintln!(
        "{}",
        serde_json::json!({"msg": "serving", "listen": local.to_string(), "metrics": cfg.metrics_listen.map(|a| a.to_string())})
    );

    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let stop = async {
        match term.as_mut() {
            Some(t) => {
                tokio::select! {
                    _ = t.recv() => {},
                    _ = tokio::signal::ctrl_c() => {},
                }
            }
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    let config = server::ConnConfig::new(cfg.limits);
    let slots = Arc::new(tokio::sync::Semaphore::new(cfg.limits.max_connections));
    server::accept_until(
        &listener,
        slots,
        server::Refusal::Close,
        stop,
        |stream, slot| {
            let state = state.clone();
            let handle = move |req, conn| handle(state.clone(), req, conn);
            tokio::spawn(server::serve_tls(
                stream,
                slot,
                acceptor.clone(),
                config.clone(),
                graceful.watcher(),
                handle,
            ));
        },
    )
    .await;
    state.draining.store(true, Ordering::Relaxed);
    drop(listener);
    eprintln!(r#"{{"msg":"draining"}}"#);
    let _ = tokio::time::timeout(cfg.grace, graceful.shutdown()).await;
    state.log.flush();
    eprintln!(r#"{{"msg":"stopped"}}"#);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_pointers_for_extract_paths() {
        assert_eq!(
            json_pointer("spec.template.spec.containers[2].image").as_deref(),
            Some("/spec/template/spec/containers/2/image")
        );
        assert_eq!(
            json_pointer("spec.initContainers[0].image").as_deref(),
            Some("/spec/initContainers/0/image")
        );
        for bad in [
            "spec.containers[x].image",
            "spec..image",
            "a/b",
            "spec.containers[0",
        ] {
            assert_eq!(json_pointer(bad), None, "{bad}");
        }
    }

    #[test]
    fn reviews_that_are_not_admission_requests_are_refused() {
        for (body, needle) in [
            (&b"not json"[..], "not an AdmissionReview"),
            (
                br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
                "no request",
            ),
            (
                br#"{"apiVersion":"admission.k8s.io/v1beta2","kind":"AdmissionReview","request":{}}"#,
                "",
            ),
            (
                br#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"x"}}"#,
                "AdmissionReview",
            ),
        ] {
            let e = review_request(body).unwrap_err();
            assert!(e.contains(needle), "{e}");
        }
    }

    /// The log line is written straight from typed fields; it must stay what it was when it
    /// was built as a `serde_json::Value` (keys sorted), byte for byte.
    #[test]
    fn the_decision_line_is_the_value_it_replaced() {
        let body = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{
            "uid":"u-1","kind":{"group":"","version":"v1","kind":"Pod"},
            "resource":{"group":"","version":"v1","resource":"pods"},"name":"p","namespace":"ns",
            "operation":"UPDATE","userInfo":{"username":"me"},"dryRun":true,
            "object":{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"}}}}"#;
        let req = review_request(body).unwrap();
        let resp = AdmissionResponse::from(&req).deny("no \"quotes\" ✓");
        let outcomes = vec![
            ArtifactOutcome {
                artifact: "registry.example/app:v1".into(),
                cached: true,
                digest: Some(format!("sha256:{}", "a".repeat(64))),
                duration_ms: 0.123,
                failure: Some(Failure::Unsigned),
                path: "spec.containers[0].image".into(),
                reasons: vec!["one".into(), "two\nlines".into()],
                verdict: Verdict::Deny,
                paths: vec![],
                unpinned: true,
            },
            ArtifactOutcome {
                artifact: "registry.example/other@sha256:00".into(),
                cached: false,
                digest: None,
                duration_ms: 1.0,
                failure: None,
                path: "spec.initContainers[0].image".into(),
                reasons: vec![],
                verdict: Verdict::Allow,
                paths: vec![],
                unpinned: false,
            },
        ];
        let notes = vec!["a note".to_string()];
        let took = Duration::from_micros(1500);
        let old = serde_json::json!({
            "msg": "admission",
            "uid": req.uid,
            "namespace": req.namespace,
            "kind": req.kind.kind,
            "name": req.name,
            "operation": format!("{:?}", req.operation).to_uppercase(),
            "dryRun": req.dry_run,
            "allowed": resp.allowed,
            "artifacts": outcomes,
            "notes": notes,
            "durationMs": took.as_secs_f64() * 1000.0,
        })
        .to_string();
        let new = DecisionLine {
            allowed: resp.allowed,
            artifacts: &outcomes,
            dry_run: req.dry_run,
            duration_ms: took.as_secs_f64() * 1000.0,
            kind: &req.kind.kind,
            msg: "admission",
            name: &req.name,
            namespace: &req.namespace,
            notes: &notes,
            operation: operation_name(&req.operation),
            uid: &req.uid,
        };
        assert_eq!(serde_json::to_string(&new).unwrap(), old);
        for op in [
            Operation::Create,
            Operation::Update,
            Operation::Delete,
            Operation::Connect,
        ] {
            assert_eq!(operation_name(&op), format!("{op:?}").to_uppercase());
        }
        for v in [Verdict::Allow, Verdict::Deny, Verdict::Warn] {
            assert_eq!(verdict_name(v), format!("{v:?}").to_lowercase());
        }
    }
}
