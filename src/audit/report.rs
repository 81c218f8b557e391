//! The audit's findings as wgpolicyk8s.io/v1alpha2 PolicyReports (one per namespace, named
//! `ocigate`; a ClusterPolicyReport for cluster-scoped objects), the format Kyverno, the Trivy
//! operator and Policy Reporter read: one result per workload and artifact, its resource the
//! workload. Pure: it builds objects, it does not write them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::{Finding, Place, by_workload};
use crate::engine::Decision;
use crate::policy::Verdict;

/// The name of every report ocigate writes.
pub(crate) const REPORT_NAME: &str = "ocigate";

/// The most results one report holds (a report is one etcd object: 1.5 MiB at most); the
/// summary still counts every result.
pub(crate) const MAX_RESULTS: usize = 1_000;

/// The most bytes the results of one report may take as JSON (etcd stores an object of at most
/// 1.5 MiB; the rest of the report is small): past it, results are left out as past
/// [`MAX_RESULTS`], failures kept first, and the summary still counts every one.
pub(crate) const MAX_RESULTS_BYTES: usize = 1 << 20;

/// The most bytes of a result's message (its reasons, joined).
/// The label on every report ocigate writes; a report of the same name without it is another
/// tool's, never emptied or replaced.
pub(crate) const MANAGED_BY: &str = "app.kubernetes.io/managed-by";

const MAX_MESSAGE: usize = 1_024;

/// The most places named in a result's `fields` property.
const MAX_PLACES: usize = 8;

/// One report to write: its namespace (`None`: the ClusterPolicyReport) and the object.
pub(crate) struct Report {
    /// The namespace it is written to.
    pub(crate) namespace: Option<String>,
    /// The PolicyReport or ClusterPolicyReport.
    pub(crate) object: Value,
}

impl Report {
    /// Where it is written (`PUT`), and its collection (`POST`).
    pub(crate) fn paths(&self) -> (String, String) {
        paths_in(self.namespace.as_deref())
    }

    /// Whether it holds no result (a namespace's report emptied).
    pub(crate) fn is_empty(&self) -> bool {
        self.object["results"].as_array().is_none_or(Vec::is_empty)
    }
}

/// Where ocigate's report in `namespace` (`None`: the ClusterPolicyReport) is, and its
/// collection.
pub(crate) fn paths_in(namespace: Option<&str>) -> (String, String) {
    let collection = match namespace {
        Some(ns) => format!("/apis/wgpolicyk8s.io/v1alpha2/namespaces/{ns}/policyreports"),
        None => "/apis/wgpolicyk8s.io/v1alpha2/clusterpolicyreports".to_string(),
    };
    (format!("{collection}/{REPORT_NAME}"), collection)
}

/// A result's outcome: a registry that could not be asked is `error`, never `fail` or `pass`.
pub(super) fn result_of(d: &Decision) -> &'static str {
    match (d.verdict, d.failure) {
        (Verdict::Allow, _) => "pass",
        (Verdict::Warn, _) => "warn",
        (Verdict::Deny, Some(f)) if f.is_unreached() => "error",
        (Verdict::Deny, _) => "fail",
    }
}

/// The reports of one audit at `now`: one per namespace with findings, and an empty one for
/// each of `also` (namespaces reported before that have none now).
pub(crate) fn reports<'a>(
    findings: &[Finding],
    now: DateTime<Utc>,
    also: impl IntoIterator<Item = &'a Option<String>>,
) -> Vec<Report> {
    let mut grouped: BTreeMap<Option<String>, Vec<Value>> = BTreeMap::new();
    for ns in also {
        grouped.entry(ns.clone()).or_default();
    }
    for (ns, workloads) in by_workload(findings) {
        let results = grouped.entry(ns).or_default();
        for (workload, artifacts) in workloads {
            for (d, places) in artifacts {
                results.push(result(d, &places, &workload, now));
            }
        }
    }
    grouped
        .into_iter()
        .map(|(namespace, results)| Report {
            object: report(namespace.as_deref(), results),
            namespace,
        })
        .collect()
}

/// One workload's artifact as a result.
fn result(d: &Decision, places: &[&Place], w: &super::Workload, now: DateTime<Utc>) -> Value {
    let mut message = d.reasons.join("; ");
    if message.is_empty() {
        message = format!("{} is {}", d.reference, result_of(d));
    }
    crate::bounded::cut_in_place(&mut message, MAX_MESSAGE);
    let mut fields: Vec<String> = places
        .iter()
        .take(MAX_PLACES)
        .map(|p| format!("{} {}", p.object, p.field))
        .collect();
    if places.len() > MAX_PLACES {
        fields.push(format!("and {} more", places.len() - MAX_PLACES));
    }
    let mut artifact = d.reference.clone();
    crate::bounded::cut_in_place(&mut artifact, MAX_MESSAGE);
    let mut fields = fields.join(", ");
    crate::bounded::cut_in_place(&mut fields, MAX_MESSAGE);
    let mut properties = json!({"artifact": artifact, "fields": fields});
    if let Some(digest) = &d.digest {
        properties["digest"] = digest.clone().into();
    }
    if let Some(f) = d.failure.filter(|_| d.verdict != Verdict::Allow) {
        properties["failure"] = f.to_string().into();
    }
    let mut resource = json!({"apiVersion": w.api_version, "kind": w.kind, "name": w.name});
    if let Some(ns) = places.first().and_then(|p| p.namespace.as_ref()) {
        resource["namespace"] = ns.clone().into();
    }
    json!({
        "source": "ocigate",
        "policy": "ocigate",
        "rule": d.rule.as_deref().unwrap_or("(no rule)"),
        "category": "Image signatures",
        "result": result_of(d),
        "message": message,
        "properties": properties,
        "resources": [resource],
        "scored": true,
        "timestamp": {"seconds": now.timestamp(), "nanos": 0},
    })
}

/// The report object around `results` (the first [`MAX_RESULTS`] within
/// [`MAX_RESULTS_BYTES`], failures first), with the summary of them all.
fn report(namespace: Option<&str>, mut results: Vec<Value>) -> Value {
    let mut summary = json!({"pass": 0, "fail": 0, "warn": 0, "error": 0, "skip": 0});
    for r in &results {
        if let Some(key) = r["result"].as_str() {
            summary[key] = (summary[key].as_u64().unwrap_or(0) + 1).into();
        }
    }
    results.sort_by_key(|r| r["result"] == "pass");
    // Every result is cut to a few KiB (see `result`), so no one result can fill the budget
    // and hide the rest: the first that no longer fits ends the report (failures come first).
    let mut bytes = 0usize;
    let kept = results
        .iter()
        .take(MAX_RESULTS)
        .take_while(|r| {
            bytes = bytes.saturating_add(r.to_string().len() + 1);
            bytes <= MAX_RESULTS_BYTES
        })
        .count();
    results.truncate(kept);
    let mut metadata = json!({
        "name": REPORT_NAME,
        "labels": {MANAGED_BY: "ocigate"},
    });
    let kind = match namespace {
        Some(ns) => {
            metadata["namespace"] = ns.into();
            "PolicyReport"
        }
        None => "ClusterPolicyReport",
    };
    json!({
        "apiVersion": "wgpolicyk8s.io/v1alpha2",
        "kind": kind,
        "metadata": metadata,
        "summary": summary,
        "results": results,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Workload;
    use crate::failure::Failure;

    fn finding(verdict: Verdict, failure: Option<Failure>, ns: &str, pod: &str) -> Finding {
        let mut decision = Decision::invalid("reg/app:v1".into(), "why".into());
        decision.verdict = verdict;
        decision.failure = failure;
        decision.rule = Some("apps".into());
        Finding {
            decision,
            places: vec![Place {
                namespace: Some(ns.into()),
                workload: Workload {
                    api_version: "apps/v1".into(),
                    kind: "Deployment".into(),
                    name: "web".into(),
                },
                object: format!("Pod {pod}"),
                field: "spec.containers[0].image".into(),
            }],
        }
    }

    #[test]
    fn one_report_per_namespace_with_results_per_workload() {
        let findings = [
            finding(Verdict::Allow, None, "a", "web-1"),
            finding(Verdict::Deny, Some(Failure::Unsigned), "b", "web-2"),
            finding(Verdict::Deny, Some(Failure::Registry), "b", "web-3"),
        ];
        let gone = Some("c".to_string());
        let reports = reports(&findings, Utc::now(), [&gone]);
        assert_eq!(reports.len(), 3);
        let b = &reports[1].object;
        assert_eq!(b["kind"], "PolicyReport");
        assert_eq!(b["metadata"]["namespace"], "b");
        assert_eq!(
            b["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "ocigate"
        );
        assert_eq!(b["summary"]["fail"], 1);
        assert_eq!(
            b["summary"]["error"], 1,
            "a registry failure is an error: {b:#}"
        );
        let r = &b["results"][0];
        assert_eq!(r["rule"], "apps");
        assert_eq!(r["resources"][0]["kind"], "Deployment");
        assert_eq!(r["resources"][0]["namespace"], "b");
        assert_eq!(r["properties"]["failure"], "unsigned");
        assert_eq!(
            reports[2].object["results"].as_array().map(Vec::len),
            Some(0)
        );
        let (put, post) = reports[2].paths();
        assert_eq!(
            put,
            "/apis/wgpolicyk8s.io/v1alpha2/namespaces/c/policyreports/ocigate"
        );
        assert!(put.starts_with(&post));
    }

    /// A namespace of a thousand failing results with long reasons and many places: the
    /// report stays well within what etcd stores (1.5 MiB), failures first, every one counted.
    #[test]
    fn a_report_stays_within_what_the_api_stores() {
        let mut findings = Vec::new();
        for i in 0..1_000 {
            let mut f = finding(Verdict::Deny, Some(Failure::Unsigned), "big", "p");
            f.decision.reasons = vec!["r".repeat(2_000)];
            let place = f.places[0].clone();
            f.places = (0..20)
                .map(|j| Place {
                    object: format!("Pod {}-{i}-{j}", "n".repeat(240)),
                    ..place.clone()
                })
                .collect();
            findings.push(f);
        }
        findings.push(finding(Verdict::Allow, None, "big", "ok"));
        let reports = reports(&findings, Utc::now(), []);
        let object = &reports[0].object;
        let size = object.to_string().len();
        assert!(size < 1_200_000, "{size} bytes");
        let results = object["results"].as_array().unwrap();
        assert!(
            !results.is_empty() && results.len() < 1_000,
            "{}",
            results.len()
        );
        assert!(results.iter().all(|r| r["result"] == "fail"));
        assert_eq!(object["summary"]["fail"], 1_000);
        assert_eq!(object["summary"]["pass"], 1);
    }

    /// An object naming a 1.2 MB image reference neither blanks its namespace's report (the
    /// results after it were dropped with it) nor makes a result past the limits: the artifact
    /// is cut like the message.
    #[test]
    fn one_huge_result_does_not_hide_the_others() {
        let mut huge = finding(Verdict::Deny, Some(Failure::Invalid), "ns", "huge");
        huge.decision.reference = "x ".repeat(600_000);
        let normal = finding(Verdict::Deny, Some(Failure::Unsigned), "ns", "normal");
        let reports = reports(&[huge, normal], Utc::now(), []);
        let results = reports[0].object["results"].as_array().unwrap().clone();
        assert_eq!(results.len(), 2, "{results:?}");
        assert!(results.iter().all(|r| r.to_string().len() < 8_000));
        assert_eq!(reports[0].object["summary"]["fail"], 2);
    }
}
