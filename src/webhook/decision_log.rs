//! The decision log: one JSON line per admission decision (and per mutation) on stdout,
//! written in batches. Owns the line's shape and the names of verdicts and operations in it
//! and in the metrics' labels; must not decide anything or change what a review is answered.

use std::time::Duration;

use kube_core::DynamicObject;
use kube_core::admission::{AdmissionRequest, AdmissionResponse, Operation};

use super::admission::ArtifactOutcome;
use crate::policy::Verdict;

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
    /// The fingerprint of the policy in force (part of every cached decision's key).
    policy: &'a str,
    /// When the answer was given: RFC 3339, UTC, milliseconds.
    time: String,
    uid: &'a str,
    /// Who asked (the request's `userInfo.username`).
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
}

/// What one decision's log line says besides the request and the response.
pub(super) struct Logged<'a> {
    /// Each artifact's outcome.
    pub(super) outcomes: &'a [ArtifactOutcome],
    /// What was not found or not checked.
    pub(super) notes: &'a [String],
    /// The fingerprint of the policy the answer was given under.
    pub(super) policy: &'a str,
    /// How long the answer took.
    pub(super) took: Duration,
}

/// Now, as the log line spells time: RFC 3339 in UTC with milliseconds.
fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A verdict as the log and the metrics spell it.
pub(super) fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Allow => "allow",
        Verdict::Deny => "deny",
        Verdict::Warn => "warn",
    }
}

/// An operation as the log and the metrics spell it.
pub(super) fn operation_name(op: &Operation) -> &'static str {
    match op {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

/// One structured JSON line per admission decision, on stdout (see [`DecisionLog`]).
pub(super) fn log_decision(
    log: &DecisionLog,
    req: &AdmissionRequest<DynamicObject>,
    resp: &AdmissionResponse,
    logged: &Logged<'_>,
) {
    let line = DecisionLine {
        allowed: resp.allowed,
        artifacts: logged.outcomes,
        dry_run: req.dry_run,
        duration_ms: logged.took.as_secs_f64() * 1000.0,
        kind: &req.kind.kind,
        msg: "admission",
        name: &req.name,
        namespace: &req.namespace,
        notes: logged.notes,
        operation: operation_name(&req.operation),
        policy: logged.policy,
        time: now_rfc3339(),
        uid: &req.uid,
        user: req.user_info.username.as_deref(),
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
pub(super) struct DecisionLog {
    buf: std::sync::Mutex<Vec<u8>>,
}

const LOG_CHUNK: usize = 64 << 10;
/// How often the flusher writes out what is buffered.
const LOG_FLUSH: Duration = Duration::from_millis(50);

impl DecisionLog {
    /// Append one line (written out with its batch).
    pub(super) fn line(&self, value: &impl serde::Serialize) {
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

    /// Write out what is buffered.
    pub(super) fn flush(&self) {
        let mut buf = crate::sync::lock(&self.buf);
        if !buf.is_empty() {
            write_out(&mut buf);
        }
    }
}

impl DecisionLog {
    /// Write out what is buffered every [`LOG_FLUSH`], forever.
    pub(super) async fn flush_periodically(&self) {
        let mut tick = tokio::time::interval(LOG_FLUSH);
        loop {
            tick.tick().await;
            self.flush();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::Failure;
    use crate::webhook::admission::review_request;

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
                rule: Some("acme".into()),
                verdict: Verdict::Deny,
                needs: Some("not logged".into()),
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
                rule: None,
                verdict: Verdict::Allow,
                needs: None,
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
            "policy": "sha256:fp",
            "time": "2026-12-03T10:00:00.000Z",
            "user": "me",
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
            policy: "sha256:fp",
            time: "2026-12-03T10:00:00.000Z".into(),
            uid: &req.uid,
            user: req.user_info.username.as_deref(),
        };
        assert_eq!(serde_json::to_string(&new).unwrap(), old);
        let stamp = now_rfc3339();
        assert!(
            stamp.len() == 24 && stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T',
            "{stamp}"
        );
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
