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
//! ([`reload`]); a policy that fails to load is logged and counted, and the last good one
//! stays. SIGTERM stops accepting and drains in-flight requests within a grace period.
//!
//! The rooms, shaped like kubert's server: [`server`] (bind → accept → connection, drain),
//! [`tls`] (the certificate and the resolver that swaps it), [`reload`] (the policy),
//! [`metrics`], [`admission`] (review → checks → response), [`decision_log`],
//! [`weight`] and [`workers`] (where blocking and heavy work runs). This file
//! holds only [`serve`], its configuration and the wiring.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::engine::Engine;

mod admission;
mod answer;
mod client_auth;
mod decision_log;
mod metrics;
mod reload;
mod server;
mod tls;
mod trust_refresh;
mod weight;
mod workers;

pub use crate::kube::{KubeApiError, KubeconfigError};
pub use admission::{NamespaceLabelsError, ObjectError};
pub use server::Limits;
pub use tls::TlsError;

use crate::kube::KubeApi;
/// Most distinct artifacts one object may name (real Pods name a handful): an object naming
/// more is denied at once, before any registry is asked.
use admission::State;
use metrics::Metrics;

/// How `serve` runs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The TLS listener's address.
    pub listen: SocketAddr,
    /// The plain-HTTP metrics listener (None: no metrics endpoint).
    pub metrics_listen: Option<SocketAddr>,
    /// The certificate chain (PEM).
    pub tls_cert: PathBuf,
    /// The certificate's private key (PEM).
    pub tls_key: PathBuf,
    /// CA certificates (PEM) a client certificate must chain to for reviews (None: any
    /// client may ask).
    pub client_ca: Option<PathBuf>,
    /// Names (subject CN or DNS SAN) one of which that certificate must carry; empty: any.
    pub client_names: Vec<String>,
    /// The policy file.
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
    /// Connections, request time and body memory a client can hold (see [`Limits`]).
    pub limits: Limits,
    /// How often the policy's TUF trust roots are refreshed (jittered; sooner near expiry).
    pub trust_root_refresh: Duration,
    /// The custom kinds whose pod templates are checked as a Deployment's
    /// (`--pod-template-kind`, `--pod-template-preset`); empty: none.
    pub pod_templates: Arc<crate::extract::PodTemplateKinds>,
    /// The background audit; None: off.
    pub audit: Option<AuditConfig>,
}

/// `serve --audit-interval`: what runs is audited in the background and reported.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// Time between audits.
    pub interval: Duration,
    /// Registry requests per second.
    pub registry_qps: std::num::NonZeroU32,
    /// Namespaces skipped.
    pub excluded_namespaces: std::collections::BTreeSet<String>,
    /// The Lease's namespace; None: the API's own (service account or kubeconfig context).
    pub lease_namespace: Option<String>,
}

/// A failure that stops the server from starting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// The certificate or key cannot be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The Kubernetes API configuration cannot be used.
    #[error(transparent)]
    KubeApi(#[from] KubeApiError),
    /// A listener cannot be bound.
    #[error("cannot listen on {addr}")]
    Listen {
        /// Its address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `--audit-interval` without a Kubernetes API (not in a cluster, no `--kubeconfig`).
    #[error("--audit-interval needs the Kubernetes API: run in a cluster or give --kubeconfig")]
    AuditWithoutApi,
}

/// Run the webhook until SIGTERM (or SIGINT); then drain within `grace` and return.
pub async fn serve(engine: Engine, cfg: ServeConfig) -> Result<(), WebhookError> {
    let certs = tls::Certificates::load(&cfg.tls_cert, &cfg.tls_key).await?;
    let client_auth = match cfg.client_ca.clone() {
        Some(ca) => {
            let names = cfg.client_names.clone();
            let auth = workers::blocking(move || client_auth::ClientAuth::load(&ca, names));
            Some(Arc::new(auth.await?))
        }
        None => None,
    };
    let acceptor = tls::acceptor(certs.clone(), client_auth.clone(), &cfg.tls_cert)?;
    let kube = kube_api(cfg.kubeconfig.clone()).await?;
    let listener = server::bind(cfg.listen).await?;
    let state = Arc::new(State {
        metrics: Arc::new(Metrics::new(&engine, certs.clone())),
        log: decision_log::DecisionLog::default(),
        engine,
        draining: AtomicBool::new(false),
        pin_workloads: cfg.pin_workloads,
        kube,
        cross_namespace_refs: cfg.allow_cross_namespace_refs,
        pod_templates: cfg.pod_templates.clone(),
        client_auth,
    });
    if let Some(addr) = cfg.metrics_listen {
        let l = server::bind(addr).await?;
        tokio::spawn(metrics::serve_metrics(l, state.metrics.clone(), cfg.limits));
    }
    spawn_watchers(&state, certs, &cfg).await;
    if let Some(audit) = &cfg.audit {
        spawn_audit(&state, audit, &cfg).await?;
    }
    let local = listener.local_addr().unwrap_or(cfg.listen);
    tell!(
        "{}",
        serde_json::json!({"msg": "serving", "listen": local.to_string(), "metrics": cfg.metrics_listen.map(|a| a.to_string())})
    );

    let stop = server::termination();
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let config = server::ConnConfig::new(cfg.limits);
    let slots = Arc::new(tokio::sync::Semaphore::new(cfg.limits.max_connections));
    server::accept_until(
        &listener,
        slots,
        server::Refusal::Close,
        stop,
        |stream, slot| {
            let state = state.clone();
            let handle = move |req, conn| admission::handle(state.clone(), req, conn);
            let watcher = graceful.watcher();
            let conn = server::serve_tls(
                stream,
                slot,
                acceptor.clone(),
                config.clone(),
                watcher,
                handle,
            );
            tokio::spawn(conn);
        },
    )
    .await;
    state.draining.store(true, Ordering::Relaxed);
    drop(listener);
    tell!(r#"{{"msg":"draining"}}"#);
    server::drain(graceful, cfg.grace).await;
    state.log.flush();
    tell!(r#"{{"msg":"stopped"}}"#);
    Ok(())
}

/// The Kubernetes API to read referenced objects from: the kubeconfig's, else the cluster's
/// this runs in, if any. Its files are read on the blocking pool.
async fn kube_api(kubeconfig: Option<PathBuf>) -> Result<Option<KubeApi>, KubeApiError> {
    workers::blocking(move || match kubeconfig {
        Some(f) => KubeApi::from_kubeconfig(&f).map(Some),
        None => KubeApi::in_cluster(),
    })
    .await
}

/// The background audit, on the webhook's engine with its own client of the API (the API is
/// required: without one `serve` does not start).
async fn spawn_audit(
    state: &Arc<State>,
    audit: &AuditConfig,
    cfg: &ServeConfig,
) -> Result<(), WebhookError> {
    let api = kube_api(cfg.kubeconfig.clone())
        .await?
        .ok_or(WebhookError::AuditWithoutApi)?;
    let namespace = audit
        .lease_namespace
        .clone()
        .or_else(|| api.namespace().map(str::to_string))
        .unwrap_or_else(|| "ocigate-system".into());
    let periodic = crate::audit::Periodic {
        engine: state.engine.clone(),
        api,
        options: crate::audit::AuditOptions {
            excluded_namespaces: audit.excluded_namespaces.clone(),
            cross_namespace_refs: cfg.allow_cross_namespace_refs,
            pod_templates: cfg.pod_templates.clone(),
            ..crate::audit::AuditOptions::default()
        },
        interval: audit.interval,
        pace: crate::registry::Pace::per_second(audit.registry_qps),
        jobs: 8,
        deadline: Duration::from_secs(60),
        elector: crate::audit::Elector::new(namespace, "ocigate-audit".into()),
        stats: state.metrics.audit.clone(),
    };
    tokio::spawn(periodic.run());
    Ok(())
}

/// The tasks that run beside the listener until the process ends: the decision log's
/// flusher, the certificate's and the policy's reloads.
async fn spawn_watchers(state: &Arc<State>, certs: Arc<tls::Certificates>, cfg: &ServeConfig) {
    let log = state.clone();
    tokio::spawn(async move { log.log.flush_periodically().await });
    let files = tls::CertificateFiles {
        cert: cfg.tls_cert.clone(),
        key: cfg.tls_key.clone(),
        interval: cfg.reload_interval,
        metrics: state.metrics.clone(),
    };
    tokio::spawn(tls::watch_certificates(certs, files).await);
    if let Some(auth) = &state.client_auth {
        let (a, m) = (auth.clone(), state.metrics.clone());
        tokio::spawn(client_auth::watch(a, cfg.reload_interval, m));
    }
    tokio::spawn(reload::watch_policy(
        state.engine.clone(),
        cfg.policy.clone(),
        cfg.reload_interval,
    ));
    tokio::spawn(reload::watch_registry_tls(
        state.engine.clone(),
        cfg.reload_interval,
    ));
    // Never awaited before serving: readiness does not wait on a mirror.
    tokio::spawn(trust_refresh::refresh_trust_roots(
        state.engine.clone(),
        cfg.trust_root_refresh,
        state.metrics.clone(),
    ));
}
