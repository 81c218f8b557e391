//! The arguments of the commands that run against a cluster: `serve` (the webhook, its
//! background audit and trust-root refresh) and `audit`, and the pod-template kinds both read.
//! Must not read files or build anything from the values (as the rest of `args`).

use std::path::PathBuf;
use std::time::Duration;

use clap::builder::TypedValueParser as _;

use super::{
    Output, RegistryArgs, WEBHOOK_EXCLUDED_NAMESPACES, excluded_namespace, namespace,
    parse_duration,
};

#[derive(clap::Args, Debug)]
pub(crate) struct ServeArgs {
    /// Policy file; re-read when it changes (a mounted ConfigMap's swap is seen).
    #[arg(long)]
    pub(crate) policy: PathBuf,
    /// TLS certificate chain (PEM); re-read when it changes.
    #[arg(long)]
    pub(crate) tls_cert: PathBuf,
    /// TLS private key (PEM).
    #[arg(long)]
    pub(crate) tls_key: PathBuf,
    /// CA certificates (PEM): /validate and /mutate answer only clients with a certificate
    /// they issued (the API server's, from its AdmissionConfiguration); re-read when it
    /// changes. The probes stay open.
    #[arg(long, value_name = "FILE")]
    pub(crate) client_ca: Option<PathBuf>,
    /// With --client-ca: the client certificate must name this as its subject CN or a DNS SAN
    /// (repeatable; any one).
    #[arg(long, value_name = "NAME", requires = "client_ca")]
    pub(crate) client_name: Vec<String>,
    /// Address of the HTTPS listener (/validate, /mutate, /healthz, /readyz).
    #[arg(long, default_value = "0.0.0.0:8443")]
    pub(crate) listen: std::net::SocketAddr,
    /// Plain-HTTP listener for /metrics ("off" for none).
    #[arg(long, default_value = "0.0.0.0:9090", value_parser = metrics_listen)]
    pub(crate) metrics_listen: MetricsListen,
    /// Deadline for each admission request, e.g. 8s or 500ms (keep it under the webhook's
    /// timeoutSeconds).
    #[arg(long, default_value = "8s", value_parser = parse_duration)]
    pub(crate) deadline: Duration,
    /// How long an allow is remembered.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub(crate) cache_ttl: Duration,
    /// How often the policy's TUF trust roots are refreshed, e.g. 24h (jittered by 10 %; sooner
    /// when cached metadata nears expiry). A failed refresh keeps the last good root.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub(crate) trust_root_refresh: Duration,
    /// How long a deny on the artifact itself is remembered.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub(crate) negative_cache_ttl: Duration,
    /// How long a tag's digest is believed.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub(crate) resolve_ttl: Duration,
    /// How long a decision the registry prevented (unreachable, denied, not found, timed out)
    /// is remembered; default: not at all.
    #[arg(long, value_parser = parse_duration)]
    pub(crate) failure_cache_ttl: Option<Duration>,
    /// Most memory each cache (decisions, resolved tags, tag lists) holds, in MiB; what a
    /// registry controls is cut to a few hundred bytes before it is kept.
    #[arg(
        long,
        value_name = "MIB",
        default_value_t = crate::engine::DEFAULT_CACHE_BYTES >> 20,
        value_parser = clap::value_parser!(u64).range(1..=4096),
    )]
    pub(crate) cache_max_mib: u64,
    /// How often mounted files are looked at for changes.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub(crate) reload_interval: Duration,
    /// How long in-flight requests may take after SIGTERM.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub(crate) grace: Duration,
    /// TLS connections served at once; one more is closed as soon as it is accepted.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub(crate) max_connections: u32,
    /// The TLS handshake, the headers and the whole body of a request must arrive within this
    /// (a late body is answered 408 and its connection closed; an idle connection is closed
    /// after it).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(crate) request_timeout: Duration,
    /// MiB that the bodies of all requests being received or checked may hold together (a body
    /// that would pass it is answered 503 with Retry-After); at least one largest body (6 MiB).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(6..=4096))]
    pub(crate) max_body_memory_mib: u32,
    /// /mutate pins workload templates too, not only Pods (GitOps tools then report drift).
    #[arg(long)]
    pub(crate) pin_workloads: bool,
    /// Read referenced objects (a HelmRelease's HelmRepository) through this kubeconfig's
    /// current context; default: the in-cluster service account.
    #[arg(long)]
    pub(crate) kubeconfig: Option<PathBuf>,
    /// Follow a Flux reference (a HelmRelease's `sourceRef.namespace` or `chartRef.namespace`)
    /// into another namespace than the object's. By default such an object is denied and
    /// nothing is read from the other namespace, as Flux's `--no-cross-namespace-refs` does.
    #[arg(long)]
    pub(crate) allow_cross_namespace_refs: bool,
    /// Audit what runs (as `ocigate audit`) every D, e.g. 10m, and write a PolicyReport per
    /// namespace; one replica writes, elected with a coordination.k8s.io Lease. Off by default.
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    pub(crate) audit_interval: Option<Duration>,
    /// At most this many registry requests per second for the audit (admission requests are
    /// never paced).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 20,
        value_parser = clap::value_parser!(u32).range(1..=100_000),
    )]
    pub(crate) audit_registry_qps: u32,
    /// A namespace the audit skips (the webhook's namespaceSelector excludes it). Repeatable;
    /// the names given replace the default; `''` skips none.
    #[arg(
        long,
        value_name = "NS",
        default_values_t = WEBHOOK_EXCLUDED_NAMESPACES.map(String::from),
        value_parser = excluded_namespace,
    )]
    pub(crate) audit_exclude_namespace: Vec<String>,
    /// The namespace of the audit's Lease (`ocigate-audit`). Default: the service account's
    /// in a cluster, else the kubeconfig context's, else ocigate-system.
    #[arg(long, value_name = "NS", value_parser = namespace)]
    pub(crate) leader_election_namespace: Option<String>,
    #[command(flatten)]
    pub(crate) pod_templates: PodTemplateArgs,
    #[command(flatten)]
    pub(crate) registry: RegistryArgs,
}

#[derive(clap::Args, Debug)]
pub(crate) struct AuditArgs {
    /// The policy file the cluster is checked against (the webhook's).
    #[arg(long)]
    pub(crate) policy: PathBuf,
    /// The cluster of this kubeconfig's current context; default: the in-cluster service
    /// account, else $KUBECONFIG, else ~/.kube/config.
    #[arg(long, value_name = "FILE")]
    pub(crate) kubeconfig: Option<PathBuf>,
    /// A namespace the webhook is not called for; its objects are skipped, each said.
    /// Repeatable; the names given replace the default (deploy/'s list); `''` excludes none.
    #[arg(
        long,
        value_name = "NS",
        default_values_t = WEBHOOK_EXCLUDED_NAMESPACES.map(String::from),
        value_parser = excluded_namespace,
    )]
    pub(crate) exclude_namespace: Vec<String>,
    /// Follow a Flux reference into another namespace, as the webhook's flag of that name.
    #[arg(long)]
    pub(crate) allow_cross_namespace_refs: bool,
    /// How many artifacts are checked at once.
    #[arg(
        long,
        default_value_t = 16,
        value_name = "N",
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=256),
    )]
    pub(crate) jobs: usize,
    /// At most this many registry requests per second, all registries together.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 50,
        value_parser = clap::value_parser!(u32).range(1..=100_000),
    )]
    pub(crate) registry_qps: u32,
    /// text for people (namespace, workload, then each failing artifact), or json.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    pub(crate) output: Output,
    /// Deadline for each artifact's whole check, in seconds (the registry pace included).
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 60,
        value_parser = clap::value_parser!(u64).range(1..=3600),
    )]
    pub(crate) deadline: u64,
    #[command(flatten)]
    pub(crate) pod_templates: PodTemplateArgs,
    #[command(flatten)]
    pub(crate) registry: RegistryArgs,
}

// The custom kinds whose pod templates are checked, shared by `serve` and `verify --manifests`
// (a plain comment, as for `GitHubArgs`). Each value is checked here; the set (the same kind
// twice with two paths, too many) when the plan is built (`PodTemplateArgs::kinds`).
#[derive(clap::Args, Debug, Default)]
pub(crate) struct PodTemplateArgs {
    /// A custom kind whose objects embed a pod template, checked as a Deployment's:
    /// GROUP/VERSION/KIND=PATH (repeatable), e.g. argoproj.io/v1alpha1/Rollout=spec.template.
    /// PATH is the dotted path of a PodTemplateSpec, or of a PodSpec when its last field is
    /// `spec` or ends in `Spec` (spec.podSpec). An object without it is denied. Kinds ocigate
    /// reads itself cannot be configured. The webhook's rules must list the kind too
    /// (deploy/overlays/custom-kinds).
    #[arg(long = "pod-template-kind", value_name = "GROUP/VERSION/KIND=PATH", value_parser = pod_template_kind)]
    pub(crate) kinds: Vec<crate::extract::PodTemplateKind>,
    /// A documented custom kind by name (repeatable): argo-rollout (argoproj.io/v1alpha1
    /// Rollout, spec.template), knative-service (serving.knative.dev/v1 Service, spec.template),
    /// keda-scaledjob (keda.sh/v1alpha1 ScaledJob, spec.jobTargetRef.template),
    /// openkruise-cloneset (apps.kruise.io/v1alpha1 CloneSet), openkruise-statefulset
    /// (apps.kruise.io v1beta1 and v1alpha1 StatefulSet), openkruise-daemonset
    /// (apps.kruise.io/v1alpha1 DaemonSet), the last three at spec.template.
    #[arg(
        long = "pod-template-preset",
        value_name = "NAME",
        value_parser = clap::builder::PossibleValuesParser::new(
            crate::extract::Preset::ALL.map(crate::extract::Preset::name)
        ).try_map(|s| s.parse::<crate::extract::Preset>()),
    )]
    pub(crate) presets: Vec<crate::extract::Preset>,
}

impl PodTemplateArgs {
    /// The kinds given and the presets', each once: the check of the set (each value was
    /// checked when parsed). The same kind with two paths, or too many, is a usage error.
    pub(crate) fn kinds(
        &self,
    ) -> Result<std::sync::Arc<crate::extract::PodTemplateKinds>, crate::cli::CliError> {
        crate::extract::PodTemplateKinds::new(self.kinds.iter().cloned(), &self.presets)
            .map(std::sync::Arc::new)
            .map_err(|e| crate::cli::CliError::Usage(e.to_string()))
    }
}

/// `GROUP/VERSION/KIND=PATH`, each part checked.
fn pod_template_kind(s: &str) -> Result<crate::extract::PodTemplateKind, String> {
    s.parse()
        .map_err(|e: crate::extract::PodTemplateKindError| {
            // The flag names the value; the error need not repeat it.
            match e {
                crate::extract::PodTemplateKindError::Part {
                    part,
                    value,
                    problem,
                    ..
                } => format!("{part} {value:?} {problem}"),
                other => other.to_string(),
            }
        })
}

/// `--metrics-listen`: an address, or none (`off`, ``).
#[derive(Debug, Clone, Copy)]
pub(crate) struct MetricsListen(pub(crate) Option<std::net::SocketAddr>);

fn metrics_listen(s: &str) -> Result<MetricsListen, String> {
    match s {
        "off" | "" => Ok(MetricsListen(None)),
        addr => addr
            .parse()
            .map(|a| MetricsListen(Some(a)))
            .map_err(|e| format!("{addr:?}: {e} (an address such as 0.0.0.0:9090, or off)")),
    }
}
