//! `serve --audit-interval`: the audit in the background, on the webhook's engine (its caches,
//! its single flight, the policy in force), by the one replica that holds the Lease, which
//! writes the PolicyReports; every replica counts what it sees for the metrics. Must not answer
//! admission requests nor decide anything itself.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::lease::{Elector, RETRY};
use super::report::{MANAGED_BY, REPORT_NAME, Report, paths_in, reports};
use super::{AuditOptions, Finding, by_workload, check, inventory};
use crate::engine::Engine;
use crate::kube::{KubeApi, KubeApiError, MAX_PAGES, Resource, Written};
use crate::registry::Pace;

/// Namespaces named in the results metric; the others are counted as `other`.
pub(crate) const MAX_NAMESPACE_LABELS: usize = 64;

/// What the audit did, for `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct AuditStats {
    /// Audits run to the end and reported.
    pub(crate) runs_ok: AtomicU64,
    /// Audits that could not read the cluster or write a report.
    pub(crate) runs_failed: AtomicU64,
    /// When the last audit ended well (Unix seconds; 0: never).
    pub(crate) last_success: AtomicI64,
    /// Whether this replica holds the Lease.
    pub(crate) leader: AtomicBool,
    /// The last audit's results: (namespace, result, failure class) → workloads' artifacts.
    results: Mutex<BTreeMap<(String, &'static str, String), u64>>,
}

impl AuditStats {
    /// The last audit's results by (namespace, result, failure class); namespaces past the
    /// first [`MAX_NAMESPACE_LABELS`] (by name) are `other`.
    pub(crate) fn results(&self) -> Vec<((String, &'static str, String), u64)> {
        crate::sync::lock(&self.results)
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    fn record(&self, findings: &[Finding]) {
        let mut counts = BTreeMap::new();
        for (i, (ns, workloads)) in by_workload(findings).into_iter().enumerate() {
            let ns = match ns {
                _ if i >= MAX_NAMESPACE_LABELS => "other".to_string(),
                Some(ns) => ns,
                None => String::new(),
            };
            for (d, _) in workloads.values().flatten() {
                let failure = d
                    .failure
                    .filter(|_| d.verdict != crate::policy::Verdict::Allow)
                    .map_or("none".to_string(), |f| f.to_string());
                let key = (ns.clone(), super::report::result_of(d), failure);
                *counts.entry(key).or_default() += 1;
            }
        }
        *crate::sync::lock(&self.results) = counts;
    }
}

/// The background audit's settings and what it shares with the webhook.
pub(crate) struct Periodic {
    /// The webhook's engine.
    pub(crate) engine: Engine,
    /// The cluster's API (its own client and cache).
    pub(crate) api: KubeApi,
    /// What is read, as the webhook sees it.
    pub(crate) options: AuditOptions,
    /// Time between audits.
    pub(crate) interval: Duration,
    /// The pace of the audit's registry requests.
    pub(crate) pace: Pace,
    /// Artifacts checked at once.
    pub(crate) jobs: usize,
    /// Each artifact's deadline.
    pub(crate) deadline: Duration,
    /// The Lease this replica runs for.
    pub(crate) elector: Elector,
    /// Counted for `/metrics`.
    pub(crate) stats: Arc<AuditStats>,
}

/// Until when this replica may act as the leader (its last renewal plus the renew deadline).
type Leading = Arc<Mutex<Option<Instant>>>;

/// How long after its last renewal a leader still acts (client-go's renew deadline: less than
/// the Lease's duration, so it stops before another replica may take over).
const RENEW_DEADLINE: Duration = Duration::from_secs(10);

fn leads(leading: &Leading) -> bool {
    crate::sync::lock(leading).is_some_and(|until| Instant::now() < until)
}

impl Periodic {
    /// Runs the election and the audits until the process ends.
    pub(crate) async fn run(self) {
        let leading: Leading = Arc::default();
        let this = Arc::new(self);
        let elect = tokio::spawn(this.clone().elect(leading.clone()));
        this.audit_while_leading(leading).await;
        elect.abort();
    }

    /// Every [`RETRY`]: acquire or renew the Lease.
    async fn elect(self: Arc<Self>, leading: Leading) {
        loop {
            let started = Instant::now();
            match self.elector.round(&self.api, chrono::Utc::now()).await {
                Ok(true) => *crate::sync::lock(&leading) = Some(started + RENEW_DEADLINE),
                Ok(false) => *crate::sync::lock(&leading) = None,
                Err(e) => tell!(
                    "{}",
                    serde_json::json!({"msg": "audit lease", "error": crate::error_chain(&e)})
                ),
            }
            let leader = leads(&leading);
            if !leader && self.stats.leader.load(Ordering::Relaxed) {
                // A former leader's results are the new leader's to export: not summed twice.
                crate::sync::lock(&self.stats.results).clear();
            }
            self.stats.leader.store(leader, Ordering::Relaxed);
            tokio::time::sleep(RETRY).await;
        }
    }

    /// An audit every interval while this replica leads; the namespaces reported before are
    /// remembered, so that one whose workloads are gone gets an empty report. On taking the
    /// lead, they are read from the cluster: another replica, or this one before a restart,
    /// may have written reports this process never saw.
    async fn audit_while_leading(&self, leading: Leading) {
        let mut reported: BTreeSet<Option<String>> = BTreeSet::new();
        let mut known = false;
        loop {
            while !leads(&leading) {
                known = false;
                tokio::time::sleep(RETRY).await;
            }
            if !known {
                match existing_reports(&self.api).await {
                    Ok(found) => {
                        reported.extend(found);
                        known = true;
                    }
                    Err(e) => {
                        self.stats.runs_failed.fetch_add(1, Ordering::Relaxed);
                        let e = crate::error_chain(&e);
                        tell!(
                            "{}",
                            serde_json::json!({"msg": "audit failed: reading the reports written before", "error": e})
                        );
                        tokio::time::sleep(self.interval).await;
                        continue;
                    }
                }
            }
            match self.once(&leading, &reported).await {
                Ok((now, failed)) if failed.is_empty() => {
                    reported = now;
                    self.stats.runs_ok.fetch_add(1, Ordering::Relaxed);
                    let t = chrono::Utc::now().timestamp();
                    self.stats.last_success.store(t, Ordering::Relaxed);
                }
                Ok((now, failed)) => {
                    // The other namespaces' reports were written: what is reported is known.
                    reported = now;
                    self.stats.runs_failed.fetch_add(1, Ordering::Relaxed);
                    let shown: Vec<&String> = failed.iter().take(5).collect();
                    tell!(
                        "{}",
                        serde_json::json!({"msg": "audit failed: reports not written",
                            "count": failed.len(), "errors": shown})
                    );
                }
                Err(e) => {
                    self.stats.runs_failed.fetch_add(1, Ordering::Relaxed);
                    tell!("{}", serde_json::json!({"msg": "audit failed", "error": e}));
                }
            }
            tokio::time::sleep(self.interval).await;
        }
    }

    /// One audit and its reports: the namespaces whose report holds results (or may: one whose
    /// write failed keeps what it held), and why each report that failed was not written. One
    /// namespace's failure does not keep the others' reports from being written.
    async fn once(
        &self,
        leading: &Leading,
        before: &BTreeSet<Option<String>>,
    ) -> Result<(BTreeSet<Option<String>>, Vec<String>), String> {
        let started = Instant::now();
        // The policy in force now says whether checks depend on the namespace.
        let options = self
            .options
            .clone()
            .for_policy(self.engine.policy().policy());
        let mut found = inventory(&self.api, &options)
            .await
            .map_err(|e| crate::error_chain(&e))?;
        let sources = std::mem::take(&mut found.sources);
        let pace = Some(self.pace.clone());
        let findings = check(&self.engine, sources, self.jobs, pace, self.deadline).await;
        self.stats.record(&findings);
        let reports = reports(&findings, chrono::Utc::now(), before);
        // The namespaces with results: an emptied report needs no emptying again.
        let mut holding = BTreeSet::new();
        let mut failed = Vec::new();
        for report in &reports {
            match self.write(report, leading).await {
                Ok(()) if report.is_empty() => {}
                Ok(()) => {
                    holding.insert(report.namespace.clone());
                }
                Err(e) => {
                    holding.insert(report.namespace.clone());
                    failed.push(e);
                }
            }
        }
        tell!(
            "{}",
            serde_json::json!({"msg": "audit", "artifacts": findings.len(),
                "reports": reports.len(), "ms": started.elapsed().as_millis() as u64})
        );
        Ok((holding, failed))
    }

    /// Replace the report while this replica leads (as of the `resourceVersion` read just
    /// before: the API refuses an unconditional update of a custom resource), or create it
    /// when there is none. An empty
    /// report is never created: where there is none, there is nothing to empty (and its
    /// namespace may be gone, or going: a create there would fail every audit after).
    async fn write(&self, report: &Report, leading: &Leading) -> Result<(), String> {
        let (path, collection) = report.paths();
        let failed = |e: KubeApiError| format!("{path}: {}", crate::error_chain(&e));
        let emptying = report.is_empty();
        for _ in 0..3 {
            // Asked before every write, not once per audit: a write takes seconds, and a
            // replica that lost the Lease must not overwrite the new leader's reports.
            if !leads(leading) {
                return Err(format!("{path}: not written, this replica no longer leads"));
            }
            let written = match self.api.fresh(&path).await.map_err(failed)? {
                None if emptying => return Ok(()),
                Some(current) => {
                    if !managed(&current) {
                        return Err(format!(
                            "{path}: not written, a report of that name that ocigate does not \
                             manage is there (no label {MANAGED_BY}: ocigate)"
                        ));
                    }
                    // Its metadata as it is (other tools' labels, annotations, owners and
                    // finalizers, the resourceVersion the update is conditional on).
                    let mut object = report.object.clone();
                    object["metadata"] = current["metadata"].clone();
                    object["metadata"]["labels"][MANAGED_BY] = "ocigate".into();
                    // Asked again just before the write: the read above may have taken seconds.
                    if !leads(leading) {
                        return Err(format!("{path}: not written, this replica no longer leads"));
                    }
                    self.api.replace(&path, &object).await
                }
                None => self.api.create(&collection, &report.object).await,
            };
            match written.map_err(failed)? {
                Written::Done => return Ok(()),
                // Changed or created meanwhile by another writer: read it again.
                Written::Conflict => continue,
                Written::NotFound => {
                    return Err(format!(
                        "{collection}: not served (is the PolicyReport CRD installed?)"
                    ));
                }
            }
        }
        Err(format!(
            "{path}: changed by another writer at each of three tries"
        ))
    }
}

/// Whether `report` carries [`MANAGED_BY`]`: ocigate`.
fn managed(report: &serde_json::Value) -> bool {
    report["metadata"]["labels"][MANAGED_BY] == "ocigate"
}

/// The namespaces holding a report of ocigate's (`None`: the ClusterPolicyReport), as the
/// cluster has them now: only reports named as ocigate's are listed (not every tool's), a page
/// at a time; a list that does not end within [`MAX_PAGES`] pages is an error, not a partial
/// answer.
async fn existing_reports(api: &KubeApi) -> Result<BTreeSet<Option<String>>, KubeApiError> {
    let resource = Resource {
        api_version: "wgpolicyk8s.io/v1alpha2".into(),
        kind: "PolicyReport".into(),
        plural: "policyreports".into(),
    };
    let mut found = BTreeSet::new();
    let mut next: Option<String> = None;
    let mut pages = 0;
    loop {
        let Some(page) = api
            .list_page_named(&resource, REPORT_NAME, next.as_deref())
            .await?
        else {
            // The CRD is not installed: nothing was reported (writing will say so).
            return Ok(found);
        };
        for item in page.items.iter().filter(|i| managed(i)) {
            let meta = &item["metadata"];
            if meta["name"] == REPORT_NAME {
                found.extend(meta["namespace"].as_str().map(|ns| Some(ns.to_string())));
            }
        }
        pages += 1;
        match page.next {
            Some(n) if pages < MAX_PAGES && next.as_deref() != Some(n.as_str()) => next = Some(n),
            Some(_) => {
                let url = "/apis/wgpolicyk8s.io/v1alpha2/policyreports".to_string();
                return Err(KubeApiError::Unending { url, pages });
            }
            None => break,
        }
    }
    if api
        .fresh(&paths_in(None).0)
        .await?
        .is_some_and(|r| managed(&r))
    {
        found.insert(None);
    }
    Ok(found)
}
