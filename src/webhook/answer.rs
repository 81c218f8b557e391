//! The answer to a validating review, as Kubernetes users and auditors read it: a deny is
//! `403 Forbidden` naming each denied artifact, its failure class, its reasons and what its rule
//! needs; warnings for warned ones; audit annotations with rule, verdict and failure class per
//! artifact. Must not decide anything: the outcomes are given.

use kube_core::admission::AdmissionResponse;
use kube_core::response::StatusSummary;

use super::admission::ArtifactOutcome;
use super::decision_log::verdict_name;
use crate::policy::Verdict;

/// At most this many artifacts get audit annotations of their own (an object names at most
/// [`crate::extract::MAX_ARTIFACTS_PER_OBJECT`]); the rest are counted in `artifacts-omitted`.
const MAX_ANNOTATED: usize = 32;

/// The response to outcomes: each denied one a deny reason, each warned one a warning, each
/// one an audit annotation.
pub(super) fn answer(
    resp: AdmissionResponse,
    outcomes: &[ArtifactOutcome],
    policy: &str,
) -> AdmissionResponse {
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
        forbid(resp, format!("ocigate: {}", denied.join("; ")))
    };
    if !warned.is_empty() {
        resp.warnings = Some(warned);
    }
    annotate(&mut resp, outcomes, policy);
    resp
}

/// Deny with `message`, as Kubernetes' own authorization denials read: status `Failure`, code
/// 403, reason `Forbidden` (kubectl prints `Error from server (Forbidden): …`). Without a code
/// the API server answers 400 with no reason.
pub(super) fn forbid(resp: AdmissionResponse, message: String) -> AdmissionResponse {
    let mut resp = resp.deny(message);
    resp.result.status = Some(StatusSummary::Failure);
    resp.result.code = 403;
    resp.result.reason = "Forbidden".to_string();
    resp
}

/// One outcome in a deny or warning: the artifact, where the object names it, the failure
/// class, the reasons, and what the rule needs.
fn describe(o: &ArtifactOutcome) -> String {
    let failure = o.failure.map(|f| format!(" [{f}]")).unwrap_or_default();
    let mut s = format!(
        "{} ({}){failure}: {}",
        o.artifact,
        o.path,
        o.reasons.join("; ")
    );
    match (&o.rule, &o.needs) {
        (Some(rule), Some(needs)) => s.push_str(&format!("; rule {rule:?} needs {needs}")),
        (Some(rule), None) if o.verdict != Verdict::Allow => {
            s.push_str(&format!(" (rule {rule:?})"));
        }
        _ => {}
    }
    s
}

/// The audit annotations (the API server prefixes each key with the webhook's name): for
/// each artifact `artifact-N` = `{"artifact","digest","rule","verdict","failure"}` as compact
/// JSON, and `policy` = the policy's fingerprint. Keys are qualified names as Kubernetes
/// requires; values carry only what the outcome does (references are bounded by extraction).
fn annotate(resp: &mut AdmissionResponse, outcomes: &[ArtifactOutcome], policy: &str) {
    #[derive(serde::Serialize)]
    struct Annotation<'a> {
        artifact: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        digest: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        rule: Option<&'a str>,
        verdict: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        failure: Option<&'static str>,
    }
    if outcomes.is_empty() {
        return;
    }
    let notes = &mut resp.audit_annotations;
    for (i, o) in outcomes.iter().take(MAX_ANNOTATED).enumerate() {
        let a = Annotation {
            artifact: &o.artifact,
            digest: o.digest.as_deref(),
            rule: o.rule.as_deref(),
            verdict: verdict_name(o.verdict),
            failure: o.failure.map(|f| f.as_str()),
        };
        if let Ok(json) = serde_json::to_string(&a) {
            notes.insert(format!("artifact-{i}"), json);
        }
    }
    if outcomes.len() > MAX_ANNOTATED {
        let omitted = outcomes.len() - MAX_ANNOTATED;
        notes.insert("artifacts-omitted".to_string(), omitted.to_string());
    }
    notes.insert("policy".to_string(), policy.to_string());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::Failure;
    use crate::webhook::admission::review_request;

    fn outcome(verdict: Verdict, failure: Option<Failure>) -> ArtifactOutcome {
        ArtifactOutcome {
            artifact: "registry.example/app:v1".into(),
            cached: false,
            digest: Some(format!("sha256:{}", "a".repeat(64))),
            duration_ms: 1.0,
            failure,
            path: "spec.containers[0].image".into(),
            reasons: vec!["no signatures found".into()],
            rule: Some("acme".into()),
            verdict,
            needs: (verdict != Verdict::Allow).then(|| "a signature by key \"k\"".into()),
            paths: vec![],
            unpinned: false,
        }
    }

    fn request() -> kube_core::admission::AdmissionRequest<kube_core::DynamicObject> {
        let body = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{
            "uid":"u-1","kind":{"group":"","version":"v1","kind":"Pod"},
            "resource":{"group":"","version":"v1","resource":"pods"},"name":"p","namespace":"ns",
            "operation":"CREATE","userInfo":{"username":"me"},
            "object":{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"}}}}"#;
        review_request(body).unwrap()
    }

    #[test]
    fn a_deny_is_forbidden_names_the_rule_and_what_it_needs() {
        let resp = answer(
            AdmissionResponse::from(&request()),
            &[
                outcome(Verdict::Deny, Some(Failure::Unsigned)),
                outcome(Verdict::Allow, None),
            ],
            "sha256:fp",
        );
        assert!(!resp.allowed);
        assert_eq!(resp.result.code, 403);
        assert_eq!(resp.result.reason, "Forbidden");
        assert_eq!(
            resp.result.message,
            "ocigate: registry.example/app:v1 (spec.containers[0].image) [unsigned]: no \
             signatures found; rule \"acme\" needs a signature by key \"k\""
        );
        let a0: serde_json::Value =
            serde_json::from_str(&resp.audit_annotations["artifact-0"]).unwrap();
        assert_eq!(a0["rule"], "acme");
        assert_eq!(a0["verdict"], "deny");
        assert_eq!(a0["failure"], "unsigned");
        let a1: serde_json::Value =
            serde_json::from_str(&resp.audit_annotations["artifact-1"]).unwrap();
        assert_eq!(a1["verdict"], "allow");
        assert!(a1.get("failure").is_none());
        assert_eq!(resp.audit_annotations["policy"], "sha256:fp");
    }

    #[test]
    fn an_allow_has_no_status_code_and_many_artifacts_are_counted_not_listed() {
        let many: Vec<ArtifactOutcome> = (0..40).map(|_| outcome(Verdict::Allow, None)).collect();
        let resp = answer(AdmissionResponse::from(&request()), &many, "fp");
        assert!(resp.allowed);
        assert_eq!(resp.result.code, 0);
        assert_eq!(resp.audit_annotations.len(), MAX_ANNOTATED + 2);
        assert_eq!(resp.audit_annotations["artifacts-omitted"], "8");
    }
}
