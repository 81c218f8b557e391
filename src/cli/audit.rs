//! `ocigate audit`: its plan (policy, registry client, engine, the cluster's API), the run
//! (`audit::inventory` then `audit::check` under the registry pace) and its report, per
//! namespace and workload, as text or JSON. Must not decide or read the cluster itself.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::args::{AuditArgs, Output};
use super::output::{JSON_SCHEMA_VERSION, text_decision};
use super::{CliError, boxed};
use crate::audit::{AuditOptions, Finding, Inventory, Listed, Place, Workload};
use crate::engine::{Decision, Engine, EngineConfig};
use crate::extract::Skipped;
use crate::kube::KubeApi;
use crate::policy::{CompiledPolicy, Verdict};
use crate::registry::Pace;

/// What `audit` needs before it reads the cluster.
pub(crate) struct AuditPlan {
    engine: Engine,
    api: KubeApi,
    options: AuditOptions,
    jobs: usize,
    pace: Pace,
    deadline: Duration,
    output: Output,
}

impl AuditPlan {
    /// The policy, the registry client and the cluster's API, in that order.
    pub(crate) fn build(a: AuditArgs) -> Result<Self, CliError> {
        let policy = CompiledPolicy::from_file(&a.policy).map_err(boxed)?;
        let registry = super::registry::registry_with(&a.registry, false, &[])?;
        let deadline = Duration::from_secs(a.deadline);
        let config = EngineConfig {
            deadline,
            verification_budget: deadline,
            ..EngineConfig::default()
        };
        let api = cluster_api(a.kubeconfig)?;
        let per_second = NonZeroU32::new(a.registry_qps).unwrap_or(NonZeroU32::MIN);
        let engine = Engine::new(registry, policy, config);
        Ok(AuditPlan {
            api,
            options: AuditOptions {
                excluded_namespaces: a
                    .exclude_namespace
                    .into_iter()
                    .filter(|n| !n.is_empty())
                    .collect(),
                cross_namespace_refs: a.allow_cross_namespace_refs,
                pod_templates: a.pod_templates.kinds()?,
                ..AuditOptions::default()
            }
            .for_policy(engine.policy().policy()),
            engine,
            jobs: a.jobs,
            pace: Pace::per_second(per_second),
            deadline,
            output: a.output,
        })
    }
}

/// As kubectl finds its cluster: `--kubeconfig`, else `$KUBECONFIG` (its first file), else
/// `~/.kube/config` when there is one, else the in-cluster service account (a CI Pod that
/// names another cluster in `$KUBECONFIG` audits that cluster, not its own).
fn cluster_api(kubeconfig: Option<PathBuf>) -> Result<KubeApi, CliError> {
    let from_env = std::env::var_os("KUBECONFIG")
        .and_then(|v| std::env::split_paths(&v).find(|p| !p.as_os_str().is_empty()));
    if let Some(f) = kubeconfig.or(from_env) {
        return KubeApi::from_kubeconfig(&f).map_err(boxed);
    }
    let home = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".kube/config"));
    if let Some(f) = home.filter(|f| f.is_file()) {
        return KubeApi::from_kubeconfig(&f).map_err(boxed);
    }
    KubeApi::in_cluster().map_err(boxed)?.ok_or_else(|| {
        CliError::Usage(
            "audit: no cluster: give --kubeconfig, set KUBECONFIG, or run in a cluster".into(),
        )
    })
}

/// Reads the cluster, checks each artifact once, reports; exit 1 when one is denied.
pub(crate) async fn run(plan: AuditPlan) -> Result<ExitCode, CliError> {
    let mut inventory = crate::audit::inventory(&plan.api, &plan.options)
        .await
        .map_err(boxed)?;
    let sources = std::mem::take(&mut inventory.sources);
    let findings = crate::audit::check(
        &plan.engine,
        sources,
        plan.jobs,
        Some(plan.pace.clone()),
        plan.deadline,
    )
    .await;
    let requests = plan
        .engine
        .registry()
        .request_counts()
        .iter()
        .map(|(_, _, n)| n)
        .sum();
    let summary = summary(&findings, &inventory, requests);
    match plan.output {
        Output::Text => print_text(&findings, &inventory, &summary)?,
        Output::Json => print_json(&findings, &inventory, summary)?,
    }
    let denied = findings.iter().any(|f| f.decision.verdict == Verdict::Deny);
    Ok(if denied {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The counts a report ends with.
#[derive(serde::Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct Summary {
    namespaces: usize,
    workloads: usize,
    artifacts: usize,
    allowed: usize,
    denied: usize,
    warned: usize,
    /// Denied and warned artifacts by failure class.
    failures: BTreeMap<String, usize>,
    unverified: usize,
    skipped: usize,
    /// HTTP requests made to registries (and their token services), all checks together.
    registry_requests: u64,
}

fn summary(findings: &[Finding], inventory: &Inventory, registry_requests: u64) -> Summary {
    let grouped = crate::audit::by_workload(findings);
    let mut s = Summary {
        namespaces: grouped.keys().filter(|k| k.is_some()).count(),
        workloads: grouped.values().map(BTreeMap::len).sum(),
        artifacts: findings.len(),
        unverified: inventory.unverified.len(),
        skipped: inventory.skipped.len(),
        registry_requests,
        ..Summary::default()
    };
    for f in findings {
        match f.decision.verdict {
            Verdict::Allow => s.allowed += 1,
            Verdict::Deny => s.denied += 1,
            Verdict::Warn => s.warned += 1,
        }
        if let Some(class) = f
            .decision
            .failure
            .filter(|_| f.decision.verdict != Verdict::Allow)
        {
            *s.failures.entry(class.to_string()).or_default() += 1;
        }
    }
    s
}

/// The worst verdict of a workload's artifacts.
fn worst<'a>(verdicts: impl Iterator<Item = &'a Decision>) -> Verdict {
    verdicts.fold(Verdict::Allow, |w, d| match (w, d.verdict) {
        (Verdict::Deny, _) | (_, Verdict::Deny) => Verdict::Deny,
        (Verdict::Warn, _) | (_, Verdict::Warn) => Verdict::Warn,
        _ => Verdict::Allow,
    })
}

fn io_error(source: std::io::Error) -> CliError {
    CliError::Io {
        what: "writing the audit".into(),
        source,
    }
}

/// Per namespace, each workload with its worst verdict, then each artifact (reasons for those
/// that fail) and where it runs; then what was not OCI, what was skipped, and the counts.
fn print_text(
    findings: &[Finding],
    inventory: &Inventory,
    summary: &Summary,
) -> Result<(), CliError> {
    let mut out = String::new();
    for (ns, workloads) in crate::audit::by_workload(findings) {
        match &ns {
            Some(ns) => out.push_str(&format!("namespace {}\n", crate::escape_text(ns))),
            None => out.push_str("cluster-scoped\n"),
        }
        for (w, artifacts) in &workloads {
            let verdict = worst(artifacts.iter().map(|(d, _)| *d));
            out.push_str(&format!(
                "  {} {} {}\n",
                verdict_word(verdict),
                crate::escape_text(&w.kind),
                crate::escape_text(&w.name)
            ));
            for (d, places) in artifacts {
                // An allowed artifact in one line; a failing one with its reasons.
                let text = text_decision(d);
                let shown = match d.verdict {
                    Verdict::Allow => text.lines().next().unwrap_or_default(),
                    _ => &text,
                };
                out.push_str(&indent(shown, "    "));
                out.push_str(&format!("      runs in {}\n", places_text(places)));
            }
        }
    }
    for (place, u) in &inventory.unverified {
        out.push_str(&format!(
            "WARN {} (not OCI: nothing verifies it) in {} {}\n",
            crate::escape_text(&u.what),
            crate::escape_text(&place.object),
            crate::escape_text(&place.field)
        ));
    }
    for s in &inventory.skipped {
        let o = &s.object;
        out.push_str(&format!(
            "SKIP {} {}/{}: {}\n",
            crate::escape_text(o.kind.as_deref().unwrap_or("?")),
            crate::escape_text(o.namespace.as_deref().unwrap_or("")),
            crate::escape_text(o.name.as_deref().unwrap_or("")),
            crate::escape_text(&s.reason)
        ));
    }
    out.push_str(&summary_text(summary, &inventory.listed));
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(out.as_bytes()).map_err(io_error)
}

fn verdict_word(v: Verdict) -> &'static str {
    match v {
        Verdict::Allow => "ALLOW",
        Verdict::Deny => "DENY",
        Verdict::Warn => "WARN",
    }
}

fn indent(text: &str, by: &str) -> String {
    text.lines().map(|l| format!("{by}{l}\n")).collect()
}

/// `Pod web-1 spec.containers[0].image, …` (the first three, then how many more).
fn places_text(places: &[&Place]) -> String {
    let mut said: Vec<String> = places
        .iter()
        .take(3)
        .map(|p| crate::escape_text(&format!("{} {}", p.object, p.field)))
        .collect();
    if places.len() > 3 {
        said.push(format!("and {} more", places.len() - 3));
    }
    said.join(", ")
}

fn summary_text(s: &Summary, listed: &[Listed]) -> String {
    let failures: Vec<String> = s.failures.iter().map(|(k, n)| format!("{k} {n}")).collect();
    let read: Vec<String> = listed
        .iter()
        .map(|l| match &l.api_version {
            Some(v) => format!("{} {} ({v})", l.objects, l.kind),
            None => format!("{} not served", l.kind),
        })
        .collect();
    let mut t = format!(
        "audit: {} artifacts in {} workloads of {} namespaces: {} allowed, {} denied, {} warned",
        s.artifacts, s.workloads, s.namespaces, s.allowed, s.denied, s.warned
    );
    if !failures.is_empty() {
        t.push_str(&format!(" ({})", failures.join(", ")));
    }
    t.push_str(&format!(
        "; {} not OCI, {} objects skipped; read {}; {} registry requests\n",
        s.unverified,
        s.skipped,
        read.join(", "),
        s.registry_requests
    ));
    t
}

/// One workload in the JSON report.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct WorkloadJson<'a> {
    #[serde(flatten)]
    workload: Workload,
    verdict: Verdict,
    artifacts: Vec<ArtifactJson<'a>>,
}

/// One artifact of a workload: the decision and where it runs in that workload.
#[derive(serde::Serialize)]
struct ArtifactJson<'a> {
    #[serde(flatten)]
    decision: &'a Decision,
    places: Vec<&'a Place>,
}

fn print_json(
    findings: &[Finding],
    inventory: &Inventory,
    summary: Summary,
) -> Result<(), CliError> {
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Namespace<'a> {
        namespace: Option<String>,
        workloads: Vec<WorkloadJson<'a>>,
    }
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Report<'a> {
        schema_version: u32,
        summary: Summary,
        listed: &'a [Listed],
        namespaces: Vec<Namespace<'a>>,
        unverified: Vec<serde_json::Value>,
        skipped: &'a [Skipped],
    }
    let namespaces = crate::audit::by_workload(findings)
        .into_iter()
        .map(|(namespace, workloads)| Namespace {
            namespace,
            workloads: workloads
                .into_iter()
                .map(|(w, artifacts)| workload_json(w, artifacts))
                .collect(),
        })
        .collect();
    let unverified = inventory
        .unverified
        .iter()
        .map(|(p, u)| serde_json::json!({"place": p, "what": u.what, "reason": u.reason}))
        .collect();
    let report = Report {
        schema_version: JSON_SCHEMA_VERSION,
        summary,
        listed: &inventory.listed,
        namespaces,
        unverified,
        skipped: &inventory.skipped,
    };
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut stdout, &report)
        .map_err(|e| io_error(std::io::Error::other(e)))?;
    writeln!(stdout).map_err(io_error)
}

fn workload_json<'a>(
    workload: Workload,
    artifacts: Vec<(&'a Decision, Vec<&'a Place>)>,
) -> WorkloadJson<'a> {
    WorkloadJson {
        workload,
        verdict: worst(artifacts.iter().map(|(d, _)| *d)),
        artifacts: artifacts
            .into_iter()
            .map(|(decision, places)| ArtifactJson { decision, places })
            .collect(),
    }
}
