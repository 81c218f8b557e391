//! The webhook's Prometheus metrics: the prometheus-client registry, the metric families and
//! what counts them, the engine's counters read at each scrape, and the metrics listener's one
//! route (`GET /metrics`, plain HTTP). Owns no decision; must not read the review or the policy.
//!
//! Every family is on `/metrics` from start-up (docs/metrics.md lists them, and a test keeps
//! the two equal). Families whose label values are a small closed set have every series at
//! zero from the start; `ocigate_decisions_total` (verdict × failure × rule × kind: thousands
//! of combinations, most impossible) and `ocigate_registry_requests_total` (hosts are only
//! known when asked) show their HELP and TYPE, and each series from its first count.
//! Beside the families: [`process`] (`process_*` from /proc/self), [`info`] (build info and the
//! certificate's expiry), [`labels`] (the bounded label values of decisions).

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::Ordering;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use kube_core::admission::Operation;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

use super::decision_log::operation_name;
use super::server::{self, Body, Limits, text};
use super::tls::Certificates;
use crate::engine::{Engine, Timings};
use crate::failure::Failure;
use crate::policy::Verdict;

mod audit;
mod info;
mod labels;
mod process;

use labels::{DecisionLabels, RuleFold};

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
    /// The rule names decisions were labelled with, bounded.
    rules: RuleFold,
    /// Time to answer an admission request.
    pub(super) latency: Histogram,
    stages: Family<StageLabels, Histogram>,
    reloads: Family<ReloadLabels, Counter>,
    /// What the background audit counts (read at each scrape).
    pub(super) audit: Arc<crate::audit::AuditStats>,
    /// The counters of `requests` by label values, each looked up in its family once: a
    /// request then counts without building label strings or taking the family's lock.
    request_counters: [OnceLock<Counter>; OPERATIONS * 2],
}

const OPERATIONS: usize = 4;
const ALL_OPERATIONS: [Operation; OPERATIONS] = [
    Operation::Create,
    Operation::Update,
    Operation::Delete,
    Operation::Connect,
];
const STAGES: [&str; 3] = ["resolve", "discover", "verify"];

fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ]
    .into_iter()
}

/// A family whose HELP and TYPE are on `/metrics` before its first series (prometheus-client
/// leaves an empty family out).
#[derive(Debug)]
struct AlwaysShown<M>(M);

impl<M: prometheus_client::encoding::EncodeMetric> prometheus_client::encoding::EncodeMetric
    for AlwaysShown<M>
{
    fn encode(
        &self,
        encoder: prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> prometheus_client::metrics::MetricType {
        self.0.metric_type()
    }
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
    /// The families, registered with the collectors of the engine, the process and the
    /// served certificate; every series of a closed label set is made at zero.
    pub(super) fn new(engine: &Engine, certificates: Arc<Certificates>) -> Self {
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
            "Artifact decisions by verdict, failure class, rule and object kind",
            AlwaysShown(decisions.clone()),
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
        registry.register_collector(Box::new(info::InfoCollector { certificates }));
        registry.register_collector(Box::new(process::ProcessCollector));
        let audit = Arc::new(crate::audit::AuditStats::default());
        registry.register_collector(Box::new(audit::AuditCollector(audit.clone())));
        let metrics = Metrics {
            audit,
            registry,
            requests,
            decisions,
            rules: RuleFold::default(),
            latency,
            stages,
            reloads,
            request_counters: std::array::from_fn(|_| OnceLock::new()),
        };
        metrics.zero_series();
        metrics
    }

    /// Make every series of the closed label sets at zero, so that the first event counts in
    /// `rate()` and `increase()` (a series that appears at 1 does not).
    fn zero_series(&self) {
        for op in &ALL_OPERATIONS {
            for allowed in [false, true] {
                self.request_counter(op, allowed);
            }
        }
        for outcome in ["ok", "failed"] {
            drop(self.reloads.get_or_create(&ReloadLabels {
                outcome: outcome.into(),
            }));
        }
        for stage in STAGES {
            drop(self.stages.get_or_create(&StageLabels {
                stage: stage.into(),
            }));
        }
    }

    /// Count a decision with this verdict and failure class, under its rule (None: no rule
    /// applied) and the kind of the object that named the artifact.
    pub(super) fn count_decision(
        &self,
        verdict: Verdict,
        failure: Option<Failure>,
        rule: Option<&str>,
        kind: &str,
    ) {
        let labels = self.rules.labels(verdict, failure, rule, kind);
        self.decisions.get_or_create(&labels).inc();
    }

    /// Count an admission request of this operation and answer.
    pub(super) fn count_request(&self, operation: &Operation, allowed: bool) {
        self.request_counter(operation, allowed).inc();
    }

    /// The counter of requests of this operation and answer (made at zero when first asked).
    fn request_counter(&self, operation: &Operation, allowed: bool) -> Counter {
        let o = match operation {
            Operation::Create => 0,
            Operation::Update => 1,
            Operation::Delete => 2,
            Operation::Connect => 3,
        };
        let make = || {
            let labels = RequestLabels {
                operation: operation_name(operation).to_string(),
                allowed: allowed.to_string(),
            };
            self.requests.get_or_create(&labels).clone()
        };
        match self.request_counters.get(o * 2 + usize::from(allowed)) {
            Some(slot) => slot.get_or_init(make).clone(),
            None => make(),
        }
    }

    /// A certificate reload, `ok` or `failed`.
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
        let ms = [timings.resolve_ms, timings.discover_ms, timings.verify_ms];
        for (stage, ms) in STAGES.into_iter().zip(ms) {
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
