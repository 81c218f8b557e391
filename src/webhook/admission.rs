//! Admission: an AdmissionReview decoded → the sources of its object ([`crate::extract`]) →
//! one engine check per distinct artifact, with the Pod's pull secrets in scope → an
//! AdmissionResponse (deny reasons and warnings on `/validate`, a JSON patch of digest pins on
//! `/mutate`), counted and logged. Owns the webhook's routes; must not verify anything itself,
//! read files, or know how connections are served.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use kube_core::DynamicObject;
use kube_core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};

use super::answer::{answer, forbid};
use super::decision_log::{DecisionLog, Logged, log_decision};
use super::metrics::Metrics;
use super::server::{self, Body, text};
use super::weight;
use super::workers::{Work, off_the_workers, off_the_workers_async};
use crate::engine::{Decision, Engine};
use crate::extract::{self, Artifact, Hints};
use crate::failure::Failure;
use crate::kube::{ApiLookup, KubeApi};
use crate::policy::{NamespaceContext, Verdict};

/// Largest AdmissionReview accepted (the API server sends at most a few MiB).
pub(crate) const MAX_BODY_BYTES: usize = 6 << 20;

/// Most checks of one admission request running at once: the rest wait their turn, so that
/// one request naming hundreds of images neither floods the registries nor leaves hundreds
/// of verifications running after its deadline (see also [`crate::registry::gate`]).
pub(crate) const MAX_CONCURRENT_CHECKS: usize = 8;

/// Why an object's artifacts were not checked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ObjectError {
    /// The request carries no object.
    #[error("cannot read the object: the request carries no object")]
    NoObject,
    /// The object (or the old object) cannot be converted to JSON.
    #[error("cannot read the object")]
    NotJson(#[source] serde_json::Error),
    /// Its sources cannot be extracted (an object it refers to cannot be read, among others).
    #[error("cannot read the object")]
    Extract(#[source] extract::ExtractError),
    /// The objects it refers to were not read from the Kubernetes API in time.
    #[error(
        "cannot read the object: timed out reading the objects it refers to from the \
         Kubernetes API after {} s",
        after.as_secs_f64()
    )]
    LookupTimeout {
        /// The time that was left.
        after: Duration,
    },
    /// It names more distinct artifacts than [`extract::MAX_ARTIFACTS_PER_OBJECT`].
    #[error(transparent)]
    TooManyArtifacts(#[from] extract::TooManyArtifacts),
    /// The labels of its namespace, which a rule's `namespaceSelector` needs, are not known:
    /// never a silent fall back to the cluster-wide rules.
    #[error(
        "cannot read the labels of namespace {namespace}, which the policy's \
         namespaceSelector needs"
    )]
    NamespaceLabels {
        /// The namespace of the request.
        namespace: String,
        /// Why not.
        #[source]
        problem: NamespaceLabelsError,
    },
}

/// Why a namespace's labels are not known.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NamespaceLabelsError {
    /// The webhook runs without a Kubernetes API (not in a cluster, no kubeconfig).
    #[error("the webhook has no Kubernetes API to read them from")]
    NoApi,
    /// The API says there is no such Namespace (believed for 2 s: one created just now
    /// counts on a retry).
    #[error("the Namespace does not exist")]
    NotFound,
    /// The API could not be asked, or answered an error.
    #[error("reading the Namespace failed")]
    Api(#[source] crate::kube::KubeApiError),
}

/// Why a request body is not an AdmissionReview to answer (400).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ReviewError {
    /// Not JSON, or not the shape of an AdmissionReview.
    #[error("not an AdmissionReview")]
    NotAReview(#[source] serde_json::Error),
    /// Another apiVersion or kind.
    #[error(
        "expected apiVersion admission.k8s.io/v1, kind AdmissionReview; got {api_version:?}, \
         {kind:?}"
    )]
    WrongType { api_version: String, kind: String },
    /// A review without its request.
    #[error("the AdmissionReview carries no request")]
    NoRequest,
}

/// What every request of the webhook shares.
pub(super) struct State {
    pub(super) engine: Engine,
    pub(super) metrics: Arc<Metrics>,
    pub(super) log: DecisionLog,
    /// Set at SIGTERM: `/readyz` answers 503.
    pub(super) draining: AtomicBool,
    /// `/mutate` pins workload templates too.
    pub(super) pin_workloads: bool,
    /// Where referenced objects are read (None: no API; such objects are denied with a reason).
    pub(super) kube: Option<KubeApi>,
    /// Whether references into other namespaces are followed.
    pub(super) cross_namespace_refs: bool,
    /// The custom kinds whose pod templates are checked (`--pod-template-kind`).
    pub(super) pod_templates: Arc<extract::PodTemplateKinds>,
    /// Who may ask for reviews (`--client-ca`); None: anyone who reaches the listener.
    pub(super) client_auth: Option<Arc<super::client_auth::ClientAuth>>,
}

/// One artifact's outcome for the response and the log line (fields in the log line's order).
#[derive(serde::Serialize)]
pub(super) struct ArtifactOutcome {
    pub(super) artifact: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(super) cached: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) digest: Option<String>,
    #[serde(rename = "durationMs")]
    pub(super) duration_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) failure: Option<Failure>,
    pub(super) path: String,
    pub(super) reasons: Vec<String>,
    /// The rule it was decided under (None: no rule applied).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) rule: Option<String>,
    pub(super) verdict: Verdict,
    /// What that rule needs, when the verdict is not allow (said in the deny or warning).
    #[serde(skip)]
    pub(super) needs: Option<String>,
    /// Every field of the object that names this artifact (for digest pins).
    #[serde(skip)]
    pub(super) paths: Vec<String>,
    /// Whether the artifact was named by tag only, so that a pin can be added.
    #[serde(skip)]
    pub(super) unpinned: bool,
}

/// The outcomes of an object's checks, and notes on what was not found or not checked.
#[derive(Default)]
struct Checked {
    outcomes: Vec<ArtifactOutcome>,
    notes: Vec<String>,
}

/// An admission request's objects as JSON, converted once, and what extraction needs to know
/// about them when they do not say it themselves.
struct Admitted<'a> {
    req: &'a AdmissionRequest<DynamicObject>,
    object: serde_json::Value,
    old_object: Option<serde_json::Value>,
    hints: Hints,
    /// How heavy converting and extracting it is (from the review's size).
    work: Work,
}

impl<'a> Admitted<'a> {
    fn new(
        req: &'a AdmissionRequest<DynamicObject>,
        work: Work,
        pod_templates: &Arc<extract::PodTemplateKinds>,
    ) -> Result<Self, ObjectError> {
        let value = |o: &DynamicObject| serde_json::to_value(o).map_err(ObjectError::NotJson);
        let object = value(req.object.as_ref().ok_or(ObjectError::NoObject)?)?;
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
            pod_templates: pod_templates.clone(),
        };
        Ok(Admitted {
            req,
            object,
            old_object,
            hints,
            work,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// What to check, and checking it

/// The outcomes for a CREATE or UPDATE request: its objects converted to JSON (and freed) off
/// the workers, checked with its pull secrets; or why its object cannot be read.
async fn check_request(
    state: &State,
    req: &AdmissionRequest<DynamicObject>,
    work: Work,
    deadline: Instant,
) -> Result<Checked, ObjectError> {
    let admitted = off_the_workers(work, || Admitted::new(req, work, &state.pod_templates))?;
    let result = check_with_pull_secrets(state, &admitted, deadline).await;
    // A large object's values are freed off the workers too.
    off_the_workers(work, || drop(admitted));
    result
}

/// [`check_sources`] with the registry credentials the object's pods would pull with (its
/// `imagePullSecrets` and its service account's) in scope; notes say what was not found.
async fn check_with_pull_secrets(
    state: &State,
    admitted: &Admitted<'_>,
    deadline: Instant,
) -> Result<Checked, ObjectError> {
    let identity = admitted.req.namespace.as_ref().and_then(|ns| {
        let api_version = admitted.hints.api_version.as_deref().unwrap_or_default();
        (admitted.hints.pod_templates)
            .pull_identity(&admitted.object, api_version, &admitted.req.kind.kind)
            .map(|p| (p, ns.clone()))
    });
    let (Some(api), Some((identity, ns))) = (&state.kube, identity) else {
        return check_sources(state, admitted, deadline).await;
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
        Arc::new(credentials),
        check_sources(state, admitted, deadline),
    )
    .await;
    result.map(|mut checked| {
        checked.notes.append(&mut pull_notes);
        checked
    })
}

/// Extract the object's sources, leave out what an UPDATE's old object already ran, and check
/// each distinct one with the engine; the sources nothing here can verify become warnings.
async fn check_sources(
    state: &State,
    admitted: &Admitted<'_>,
    deadline: Instant,
) -> Result<Checked, ObjectError> {
    if let (Operation::Update, Some(old)) = (&admitted.req.operation, &admitted.old_object)
        && extract::update_moves_nothing(old, &admitted.object, &admitted.hints)
    {
        return Ok(Checked::default());
    }
    let lookup = ApiLookup {
        api: state.kube.as_ref(),
        namespace: admitted.req.namespace.clone(),
        cross_namespace_refs: state.cross_namespace_refs,
    };
    let new = extract_within(&admitted.object, admitted, &lookup, deadline).await?;
    // UPDATE: only what the old object did not already run (scale, labels, status pass). If
    // the old object cannot be read, everything is checked.
    let old: BTreeSet<String> = match (&admitted.req.operation, &admitted.old_object) {
        (Operation::Update, Some(o)) => extract_within(o, admitted, &lookup, deadline)
            .await
            .map(|x| x.sources.iter().map(extract::Source::key).collect())
            .unwrap_or_default(),
        _ => BTreeSet::new(),
    };
    // Each source once, leaving out what the old object ran; the limit `verify --manifests` applies.
    let sources = extract::distinct_sources(new.sources, &old)?;
    let namespace = namespace_context(state, admitted, deadline).await?;
    let mut outcomes = check_each(state, sources, namespace.as_ref(), deadline).await;
    outcomes.extend(new.unverified.into_iter().map(unverified_outcome));
    Ok(Checked {
        outcomes,
        notes: new.notes,
    })
}

/// The namespace the object is admitted in (None for a cluster-scoped object), with its
/// labels when a rule of the policy selects namespaces by label (a `get` on the Namespace,
/// cached as the other lookups); a namespace whose labels cannot be had is an error.
async fn namespace_context(
    state: &State,
    admitted: &Admitted<'_>,
    deadline: Instant,
) -> Result<Option<NamespaceContext>, ObjectError> {
    let Some(name) = admitted.req.namespace.as_deref().filter(|n| !n.is_empty()) else {
        return Ok(None);
    };
    let mut ns = NamespaceContext::named(name);
    if !state.engine.policy().policy().needs_namespace_labels() {
        return Ok(Some(ns));
    }
    let failed = |problem| ObjectError::NamespaceLabels {
        namespace: name.to_string(),
        problem,
    };
    let Some(api) = &state.kube else {
        return Err(failed(NamespaceLabelsError::NoApi));
    };
    let remaining = deadline.saturating_duration_since(Instant::now());
    match tokio::time::timeout(remaining, api.namespace_labels(name)).await {
        Err(_) => Err(ObjectError::LookupTimeout { after: remaining }),
        Ok(Err(e)) => Err(failed(NamespaceLabelsError::Api(e))),
        Ok(Ok(None)) => Err(failed(NamespaceLabelsError::NotFound)),
        Ok(Ok(Some(labels))) => {
            ns.labels = Some(labels);
            Ok(Some(ns))
        }
    }
}

/// The sources of `object`, reading the objects it refers to from the Kubernetes API within
/// the deadline.
async fn extract_within(
    object: &serde_json::Value,
    admitted: &Admitted<'_>,
    lookup: &ApiLookup<'_>,
    deadline: Instant,
) -> Result<extract::Extraction, ObjectError> {
    let remaining = deadline.saturating_duration_since(Instant::now());
    let extract = extract::extract_with(object, &admitted.hints, lookup);
    let extracting = tokio::time::timeout(remaining, extract);
    match off_the_workers_async(admitted.work, extracting).await {
        Ok(Err(extract::ExtractError::TooManyArtifacts { max, fields, .. })) => {
            Err(extract::TooManyArtifacts { max, fields }.into())
        }
        Ok(x) => x.map_err(ObjectError::Extract),
        Err(_) => Err(ObjectError::LookupTimeout { after: remaining }),
    }
}

/// Check each source with the engine, in the object's order; [`MAX_CONCURRENT_CHECKS`] at a
/// time, in this request's own turn at each registry.
async fn check_each(
    state: &State,
    sources: Vec<extract::Source>,
    namespace: Option<&NamespaceContext>,
    deadline: Instant,
) -> Vec<ArtifactOutcome> {
    use futures_util::StreamExt as _;
    let checks = sources
        .into_iter()
        .map(|s| check_one(state, s, namespace, deadline));
    crate::registry::gate::with_group(
        crate::registry::gate::new_group(),
        futures_util::stream::iter(checks)
            .buffered(MAX_CONCURRENT_CHECKS)
            .collect::<Vec<_>>(),
    )
    .await
}

/// One source's engine check, its stages timed in the metrics.
async fn check_one(
    state: &State,
    s: extract::Source,
    namespace: Option<&NamespaceContext>,
    deadline: Instant,
) -> ArtifactOutcome {
    let t = Instant::now();
    let artifact = s.artifact.to_string();
    let remaining = deadline.saturating_duration_since(Instant::now());
    let decision: Decision = state.engine.check_source_in(&s, namespace, remaining).await;
    if !decision.cached {
        state.metrics.observe_stages(&decision.timings);
    }
    let unpinned = matches!(&s.artifact, Artifact::Reference(r) if r.digest().is_none());
    let mut paths = vec![s.path.clone()];
    paths.extend(s.other_paths);
    ArtifactOutcome {
        paths,
        unpinned,
        artifact,
        path: s.path,
        digest: decision.digest,
        verdict: decision.verdict,
        failure: decision.failure,
        reasons: decision.reasons,
        rule: decision.rule,
        needs: decision.needs,
        cached: decision.cached,
        duration_ms: t.elapsed().as_secs_f64() * 1000.0,
    }
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
        rule: None,
        needs: None,
        verdict: Verdict::Warn,
        unpinned: false,
    }
}

// ---------------------------------------------------------------------------------------------
// Answers

/// `/validate`: denied outcomes deny the request, warned ones become warnings.
async fn validate(
    state: &State,
    req: &AdmissionRequest<DynamicObject>,
    work: Work,
) -> AdmissionResponse {
    let started = Instant::now();
    let deadline = started + state.engine.config().deadline;
    let resp = AdmissionResponse::from(req);
    let policy = state.engine.policy();
    let fingerprint = policy.fingerprint();
    let (checked, resp) = match req.operation {
        Operation::Delete | Operation::Connect => (None, resp),
        _ => match check_request(state, req, work, deadline).await {
            Ok(checked) => {
                let resp = answer(resp, &checked.outcomes, fingerprint);
                (Some(checked), resp)
            }
            Err(problem) => (
                None,
                forbid(resp, format!("ocigate: {}", crate::error_chain(&problem))),
            ),
        },
    };
    let checked = checked.unwrap_or_default();
    record(state, req, &resp, &checked, fingerprint, started);
    resp
}

/// Count a request's decisions and log its line: once per request, by the webhook that answers
/// it last (`/validate`, or `/mutate` when it refuses: then `/validate` is never called).
fn record(
    state: &State,
    req: &AdmissionRequest<DynamicObject>,
    resp: &AdmissionResponse,
    checked: &Checked,
    fingerprint: &str,
    started: Instant,
) {
    let m = &state.metrics;
    for o in &checked.outcomes {
        m.count_decision(o.verdict, o.failure, o.rule.as_deref(), &req.kind.kind);
    }
    m.count_request(&req.operation, resp.allowed);
    m.latency.observe(started.elapsed().as_secs_f64());
    let line = Logged {
        outcomes: &checked.outcomes,
        notes: &checked.notes,
        policy: fingerprint,
        took: started.elapsed(),
    };
    log_decision(&state.log, req, resp, &line);
}

/// `/mutate`: pin each verified image named by tag to its digest (`tag@sha256:…`), on Pods and,
/// when configured, on workload templates; never re-pins what is already pinned. A verdict on
/// the image (unsigned, no rule, …) is left to `/validate`, which sees the object after every
/// mutating webhook (one that rewrites images to a mirror may run after this one). What it could
/// not decide in time (a deadline run out, a verification that failed, an object whose lookups
/// failed) it refuses, as `/validate` would at that moment: letting it through would let
/// `/validate` admit it later, still named by tag, once the verification running on in the
/// background has filled the cache. A refusal is counted and logged here, since `/validate`
/// never sees the request.
async fn mutate(
    state: &State,
    req: &AdmissionRequest<DynamicObject>,
    work: Work,
) -> AdmissionResponse {
    let started = Instant::now();
    let resp = AdmissionResponse::from(req);
    let is_pod = req.kind.group.is_empty() && req.kind.kind == "Pod";
    if !matches!(req.operation, Operation::Create | Operation::Update)
        || !(is_pod || state.pin_workloads)
    {
        return resp;
    }
    let deadline = started + state.engine.config().deadline;
    let policy = state.engine.policy();
    let fingerprint = policy.fingerprint();
    let refuse = |problem: ObjectError| {
        let resp = forbid(
            resp.clone(),
            format!("ocigate: {}", crate::error_chain(&problem)),
        );
        record(state, req, &resp, &Checked::default(), fingerprint, started);
        resp
    };
    let admitted = match off_the_workers(work, || Admitted::new(req, work, &state.pod_templates)) {
        Ok(admitted) => admitted,
        Err(problem) => return refuse(problem),
    };
    let checked = match check_with_pull_secrets(state, &admitted, deadline).await {
        Ok(checked) => checked,
        Err(problem) => return refuse(problem),
    };
    let undecided = |o: &ArtifactOutcome| {
        o.verdict == Verdict::Deny
            && matches!(o.failure, Some(Failure::Timeout | Failure::Internal))
    };
    if checked.outcomes.iter().any(undecided) {
        let resp = answer(resp, &checked.outcomes, fingerprint);
        record(state, req, &resp, &checked, fingerprint, started);
        return resp;
    }
    let ops = digest_pins(&admitted.object, &checked.outcomes);
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

/// The JSON patch that pins each allowed, verified artifact named by tag, in every pod image
/// field of `object` that names it without a digest.
fn digest_pins(
    object: &serde_json::Value,
    outcomes: &[ArtifactOutcome],
) -> Vec<json_patch::PatchOperation> {
    let mut ops = Vec::new();
    for o in outcomes {
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
    ops
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

// ---------------------------------------------------------------------------------------------
// Routes

/// The webhook listener's routes: `POST /validate`, `POST /mutate`, `GET /healthz`,
/// `GET /readyz`.
pub(super) async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
    conn: server::Conn,
) -> Response<Body> {
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
            if let Some(Err((status, why))) =
                state.client_auth.as_ref().map(|a| a.admits(conn.peer()))
            {
                return text(status, why);
            }
            let mutating = path == "/mutate";
            review(&state, req, &conn, mutating).await
        }
        (_, "/validate" | "/mutate" | "/healthz" | "/readyz") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// One review: its body read within the budget, weighed, decoded, answered.
async fn review(
    state: &State,
    req: Request<Incoming>,
    conn: &server::Conn,
    mutating: bool,
) -> Response<Body> {
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
    let work = Work::of_body(bytes.len());
    let values = off_the_workers(work, || crate::bounded::json_values(&bytes));
    if values > weight::MAX_JSON_VALUES {
        let why = format!(
            "the AdmissionReview holds {values} JSON values, more than the {} one review may \
             hold: not checked",
            weight::MAX_JSON_VALUES
        );
        // A deny, not an HTTP error: under failurePolicy: Ignore an error would admit an
        // object anyone can make this large, unchecked.
        return match off_the_workers(work, || uid_of(&bytes)) {
            Some(uid) => json_response(&too_large(uid, why)),
            None => text(StatusCode::PAYLOAD_TOO_LARGE, format!("{why}\n")),
        };
    }
    if !reservation.grow_to(weight::decoded_bytes(bytes.len(), values)) {
        return server::BodyError::NoBudget.response();
    }
    let decoded = off_the_workers(work, || review_request(&bytes));
    drop(bytes);
    let _held = reservation;
    let request = match decoded {
        Ok(request) => request,
        Err(e) => {
            let msg = crate::error_chain(&e);
            return text(StatusCode::BAD_REQUEST, format!("{msg}\n"));
        }
    };
    let review = if mutating {
        mutate(state, &request, work).await.into_review()
    } else {
        validate(state, &request, work).await.into_review()
    };
    off_the_workers(work, || drop(request));
    json_response(&review)
}

/// The uid of an AdmissionReview v1's request, read without building its values (serde skips
/// them); None when it is not one.
fn uid_of(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Review {
        #[serde(rename = "apiVersion")]
        api_version: String,
        request: Request,
    }
    #[derive(serde::Deserialize)]
    struct Request {
        uid: String,
    }
    let r: Review = serde_json::from_slice(body).ok()?;
    (r.api_version == "admission.k8s.io/v1").then_some(r.request.uid)
}

/// The denial of a review ocigate will not check (`why`), for the request `uid`.
fn too_large(uid: String, why: String) -> AdmissionReview<DynamicObject> {
    let mut resp = forbid(AdmissionResponse::invalid(""), format!("ocigate: {why}"));
    resp.uid = uid;
    resp.into_review()
}

/// `review` as the JSON answer.
fn json_response<T: serde::Serialize>(review: &T) -> Response<Body> {
    match serde_json::to_vec(review) {
        Ok(json) => {
            let mut r = Response::new(Body::new(Bytes::from(json)));
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

/// An AdmissionReview v1 with a request, or why not.
pub(crate) fn review_request(body: &[u8]) -> Result<AdmissionRequest<DynamicObject>, ReviewError> {
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_slice(body).map_err(ReviewError::NotAReview)?;
    if review.types.api_version != "admission.k8s.io/v1" || review.types.kind != "AdmissionReview" {
        return Err(ReviewError::WrongType {
            api_version: review.types.api_version,
            kind: review.types.kind,
        });
    }
    review.try_into().map_err(|_| ReviewError::NoRequest)
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
            let e = crate::error_chain(&review_request(body).unwrap_err());
            assert!(e.contains(needle), "{e}");
        }
    }
}
