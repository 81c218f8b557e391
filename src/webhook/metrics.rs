//! The webhook's Prometheus metrics: the prometheus-client registry, the metric families and
//! what counts them, the engine's counters read at each scrape, and the metrics listener's one
//! route (`GET /metrics`, plain HTTP). Owns no decision; must not read the review or the policy.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use kube_core::admission::Operation;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

use super::decision_log::{operation_name, verdict_name};
use super::server::{self, Body, Limits, text};
use crate::engine::{Engine, Timings};
use crate::failure::Failure;
use crate::policy::Verdict;

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

/// The registry and the webhook's own metric families.
pub(super) struct Metrics {
    registry: prometheus_client::registry::Registry,
    requests: Family<RequestLabels, Counter>,
    decisions: Family<DecisionLabels, Counter>,
    /// Time to answer an admission request.
    pub(super) latency: Histogram,
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
    /// The families, registered with the engine's collector.
    pub(super) fn new(engine: &Engine) -> Self {
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
    pub(super) fn count_decision(&self, verdict: Verdict, failure: Option<Failure>) {
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
    pub(super) fn count_request(&self, operation: &Operation, allowed: bool) {
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

    /// A certificate reload, `ok` or `failed` (the series appears when first counted).
    pub(super) fn count_certificate_reload(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "failed" };
        self.reloads
            .get_or_create(&ReloadLabels {
                outcome: outcome.into(),
            })
            .inc();
    }

    /// The stages of a verification that ran (a cached decision ran none).
    pub(super) fn observe_stages(&self, timings: &Timings) {
        for (stage, ms) in [
            ("resolve", timings.resolve_ms),
            ("discover", timings.discover_ms),
            ("verify", timings.verify_ms),
        ] {
            if ms > 0.0 {
                self.stages
                    .get_or_create(&StageLabels {
                        stage: stage.into(),
                    })
                    .observe(ms / 1000.0);
            }
        }
    }

    fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// The metrics listener: the same timeouts as the webhook's, at most
/// [`server::METRICS_MAX_CONNECTIONS`] connections (more are answered 503).
pub(super) async fn serve_metrics(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    limits: Limits,
) {
    let config = server::ConnConfig::new(limits);
    let slots = Arc::new(tokio::sync::Semaphore::new(server::METRICS_MAX_CONNECTIONS));
    let refusal = server::Refusal::Answer(server::BUSY_503);
    let forever = std::future::pending::<()>();
    server::accept_until(&listener, slots, refusal, forever, |stream, slot| {
        let metrics = metrics.clone();
        let handle = move |req: Request<Incoming>| {
            let metrics = metrics.clone();
            async move { metrics_response(&metrics, &req) }
        };
        tokio::spawn(server::serve_plain(stream, slot, config.clone(), handle));
    })
    .await;
}

fn metrics_response(metrics: &Metrics, req: &Request<Incoming>) -> Response<Body> {
    if req.uri().path() != "/metrics" {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    let mut r = text(StatusCode::OK, metrics.encode());
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
    );
    r
}
