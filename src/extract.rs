//! Kubernetes objects and Kluctl project files → the OCI sources that must be verified.
//!
//! Pure: reads only what it is given. Objects that refer to others (a Flux `HelmRelease` naming a
//! `HelmRepository`) are resolved through [`Lookup`], which the caller implements (a Kubernetes
//! client in the webhook, [`DocumentSet`] for `verify --manifests`).
//!
//! What is extracted:
//! - Pods and the pod templates of Deployment, ReplicaSet, StatefulSet, DaemonSet, Job, CronJob,
//!   ReplicationController and PodTemplate: every distinct image of `containers`,
//!   `initContainers` and `ephemeralContainers` and of image volumes (`volumes[].image.reference`),
//!   once, at the first path where it appears.
//! - Flux `OCIRepository`, `HelmChart` (from an OCI `HelmRepository`) and `HelmRelease`
//!   (`spec.chart.spec` or `spec.chartRef`), with the verification Flux itself performs.
//! - Kluctl `KluctlDeployment` (`spec.source.oci`) and project files (`deployment.yaml` OCI
//!   includes, `helm-chart.yaml` OCI charts) through [`extract_kluctl_file`].
//! - Custom resources configured in [`Hints::pod_templates`] ([`PodTemplateKinds`]: an Argo
//!   Rollout's `spec.template`, …): their pod template exactly as a Deployment's.
//!
//! A source that cannot be checked (an unparsable image, a `HelmRepository` that does not exist)
//! is an [`Artifact::Invalid`] so the caller denies with its reason; a malformed object (a URL
//! that is not a string) is an [`ExtractError`]; everything that is not an OCI source (Git
//! sources, unknown kinds) is a note.

use std::fmt;

use serde::Serialize;
use serde_json::Value;

use crate::reference::{Digest, ImageRef, LAYOUT_PREFIX};

mod constraint;
mod custom;
mod documents;
mod flux;
pub(crate) use flux::SOURCE_API_VERSION;
mod kluctl;
mod manifests;
pub mod names;
mod workload;

pub use constraint::{
    ConstraintError, SemverConstraint, count_versions, highest_helm_tags, highest_tags,
    parse_helm_tag, parse_tag, pick_highest,
};
pub use custom::{
    MAX_PATH_FIELDS, MAX_POD_TEMPLATE_KINDS, PodTemplateKind, PodTemplateKindError,
    PodTemplateKinds, Preset,
};
pub use documents::{DocumentSet, MAX_DOCUMENTS, parse_documents};
pub use kluctl::extract_kluctl_file;
pub(crate) use manifests::IGNORE_LABEL;
pub use manifests::{
    FoundSource, Location, ManifestOptions, Manifests, Skipped, TooManyArtifacts, distinct_sources,
    manifest_sources, manifest_sources_with,
};
pub use workload::{PullIdentity, is_pod_image_path, pull_identity};

/// Most distinct artifacts one object may name (real Pods name a handful): extraction stops
/// past it ([`ExtractError::TooManyArtifacts`]), so a hostile object costs no more than this.
pub const MAX_ARTIFACTS_PER_OBJECT: usize = 256;

/// Most image fields one pod spec may have (containers and image volumes, repeats included).
pub const MAX_IMAGE_FIELDS: usize = 1024;

/// How many objects a lookup chain may visit (HelmRelease → HelmChart → HelmRepository is 2).
pub const MAX_LOOKUP_DEPTH: usize = 3;

/// The `oci://` scheme Flux and Kluctl put in front of repository URLs.
pub const OCI_SCHEME: &str = "oci://";

/// A Kubernetes object by type and name. `api_version` may be `group/version` or, for lookups,
/// the group's current version (`source.toolkit.fluxcd.io/v1`): servers holding an older served
/// version answer for the same object, and [`DocumentSet`] compares groups only.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct ObjectRef {
    /// `group/version` (`v1` for the core group); `None`: not said (a `sourceRef` without
    /// `apiVersion`), any group matches and the webhook asks `source.toolkit.fluxcd.io/v1`.
    pub api_version: Option<String>,
    /// The object's `kind`, e.g. `HelmRepository` from a `sourceRef.kind`.
    pub kind: String,
    /// The reference's `namespace`, else the referring object's; `None`: neither says one
    /// ([`DocumentSet`] then matches any namespace, the webhook the admitted object's).
    pub namespace: Option<String>,
    /// `metadata.name` of the object (a reference's `name`).
    pub name: String,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// One OCI artifact an object makes the cluster pull.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Source {
    /// The field of the given object (not of a looked-up one) the source comes from, e.g.
    /// `spec.containers[0].image`, `spec.url`, `spec.chartRef`, `deployments[2].oci.url`.
    pub path: String,
    /// Further paths where the same image appears in the same object.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub other_paths: Vec<String>,
    /// What to verify: a reference, a semver request to resolve against the tag list, or an
    /// input that cannot be checked (the caller denies it).
    pub artifact: Artifact,
    /// The verification Flux itself performs before using the artifact (`spec.verify`); `None`
    /// when it performs none or the kind has no such setting.
    pub flux_verify: Option<FluxVerify>,
    /// Whether Flux fetches this artifact (OCIRepository, HelmChart, HelmRelease), so that a
    /// rule's `fluxVerification: required` applies to it.
    pub flux: bool,
    /// Where Flux's own verification of it is set, for messages: `spec.verify`, a
    /// HelmRelease's `spec.chart.spec.verify`, or `spec.verify of OCIRepository ns/name` for
    /// a referenced object; empty when Flux does not fetch it.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub flux_verify_field: String,
    /// The objects looked up to find the artifact, in order, e.g. HelmChart then HelmRepository.
    pub via: Vec<ObjectRef>,
}

impl Source {
    /// What makes two sources the same check: the artifact (a semver request with its filter),
    /// and for Flux sources whether Flux verifies it with cosign itself (a rule with
    /// `fluxVerification: required` answers those two differently). The webhook and
    /// `verify --manifests` check each key once.
    pub fn key(&self) -> String {
        let artifact = match &self.artifact {
            Artifact::Semver {
                repository,
                constraint_text,
                filter,
                ..
            } => format!("{repository} semver {constraint_text:?} filter {filter:?}"),
            Artifact::Invalid { input, problem } => format!("invalid {input:?} {problem:?}"),
            Artifact::Reference(r) => r.to_string(),
        };
        let flux_verifies = self.flux_verify.as_ref().is_some_and(FluxVerify::is_cosign);
        format!("{artifact} flux={} cosign={flux_verifies}", self.flux)
    }
}

impl fmt::Display for Artifact {
    /// As a person reads it: the reference, `repo (semver C)`, or the invalid input.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Artifact::Reference(r) => write!(f, "{r}"),
            Artifact::Semver {
                repository,
                constraint_text,
                ..
            } => write!(f, "{repository} (semver {constraint_text})"),
            Artifact::Invalid { input, .. } => f.write_str(input),
        }
    }
}

/// What to verify.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Artifact {
    /// A reference with its tag and/or digest as given.
    Reference(#[serde(serialize_with = "display")] ImageRef),
    /// The highest tag of `repository` matching `constraint` (after `filter`, a regex on the tag
    /// string): the caller lists tags and picks with [`pick_highest`].
    Semver {
        /// The repository whose tags are listed (no tag, no digest), e.g. from an `oci://` URL.
        #[serde(serialize_with = "display")]
        repository: ImageRef,
        /// `constraint_text` parsed with Flux's (Masterminds) semver rules.
        #[serde(skip)]
        constraint: SemverConstraint,
        /// The constraint as written (`spec.ref.semver`, a chart `version`; `*` when empty).
        constraint_text: String,
        /// Flux's `spec.ref.semverFilter`, already checked to compile; `None`: every tag.
        filter: Option<String>,
        /// The tags are read as Helm's registry client lists a chart's (Flux's source-controller
        /// picks among those): `_` as `+`, strict SemVer only (no leading `v`), rather than as
        /// Flux reads an OCIRepository's.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        helm_tags: bool,
    },
    /// Something that names an artifact but cannot be checked; the caller denies with `problem`.
    Invalid {
        /// The text as found (a reference, `repo constraint`, a filter regex), for messages.
        input: String,
        /// Why it cannot be checked, e.g. "contains a template; render it first".
        problem: String,
    },
}

fn display<T: fmt::Display, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// Flux's own verification of a source (`spec.verify` of OCIRepository and HelmChart,
/// `spec.chart.spec.verify` of HelmRelease).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FluxVerify {
    /// `cosign` or `notation`.
    pub provider: String,
    /// The Secret holding public keys (cosign) or trust policy (notation); none = keyless.
    pub secret_ref: Option<String>,
    /// How many `matchOIDCIdentity` entries restrict keyless signatures (0 = any identity).
    pub oidc_identities: usize,
}

impl FluxVerify {
    /// Whether Flux verifies a cosign signature itself.
    pub fn is_cosign(&self) -> bool {
        self.provider == "cosign"
    }
}

/// The result of reading one object or file.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Extraction {
    /// The OCI sources to verify, in the object's order; a workload's repeated image is one
    /// source (with `other_paths`), Flux sources are not merged (see [`distinct_sources`]).
    pub sources: Vec<Source>,
    /// What was seen and deliberately not checked (kinds without images, ...).
    pub notes: Vec<String>,
    /// What the cluster will fetch and run that is not an OCI artifact, so that nothing here
    /// verifies it (a Flux GitRepository, Bucket or ExternalArtifact, an HTTP HelmRepository, a
    /// KluctlDeployment's Git source):
    /// the webhook answers each with an AdmissionResponse warning, `verify --manifests` with a
    /// warn result.
    pub unverified: Vec<Unverified>,
}

/// A source the cluster fetches that ocigate cannot verify (see [`Extraction::unverified`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unverified {
    /// The field of the given object that leads to it, e.g. `spec.chart.spec.sourceRef`.
    pub path: String,
    /// What it is, e.g. `GitRepository apps/podinfo`.
    pub what: String,
    /// Why it is not verified.
    pub reason: String,
}

/// A failure of the caller's [`Lookup`] (not "not found", which is `Ok(None)`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LookupError {
    /// The object could not be fetched; the cause says why.
    #[error("looking up {object} failed")]
    Failed {
        /// The reference that was being looked up.
        object: ObjectRef,
        /// The lookup's own error (the Kubernetes API's answer, no API configured, ...).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Several different objects answer to the same reference.
    #[error("{object} is ambiguous: {count} different objects match")]
    Ambiguous {
        /// The reference that matched more than one object.
        object: ObjectRef,
        /// How many objects matched equally well (at least 2; copies equal to the first found
        /// are not counted).
        count: usize,
    },
}

impl LookupError {
    /// [`LookupError::Failed`] for `object`, with any error or message (`&str`) as the cause.
    pub fn failed(
        object: ObjectRef,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        LookupError::Failed {
            object,
            source: source.into(),
        }
    }
}

/// Why an object or file could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExtractError {
    /// A field of an object is missing, of the wrong type, or has a value its controller rejects.
    #[error("{kind} {name}: field {field}: {problem}")]
    Field {
        /// The object's `kind`.
        kind: String,
        /// `namespace/name` or `name` (`generateName*`, `(unnamed)` when it has none).
        name: String,
        /// Dotted path of the field in the object, e.g. `spec.ref.tag`, `spec.chartRef`.
        field: String,
        /// What is wrong: `missing`, `expected a string, got a number`, a controller's rule.
        problem: String,
    },
    /// Looking up an object referred to by `field` failed.
    #[error("{kind} {name}: field {field}: looking up a referenced object")]
    Lookup {
        /// The referring object's `kind`.
        kind: String,
        /// The referring object as `namespace/name` or `name`.
        name: String,
        /// The reference's path, e.g. `spec.chart.spec.sourceRef` or `spec.chartRef`.
        field: String,
        /// The caller's [`Lookup`] failure (not "not found", which is an [`Artifact::Invalid`]).
        #[source]
        source: Box<LookupError>,
    },
    /// The input is not a Kubernetes object (no `kind`, not a mapping).
    #[error("not a Kubernetes object: {problem}")]
    NotAnObject {
        /// What is wrong, e.g. `it has no kind`, `apiVersion is a number, not a string`, or a
        /// lookup that returned another kind than asked for.
        problem: String,
    },
    /// YAML text could not be parsed.
    #[error("YAML could not be parsed")]
    Yaml {
        /// The parser's error, with the position in the text.
        #[source]
        source: Box<serde_saphyr::Error>,
    },
    /// JSON text could not be parsed.
    #[error("JSON could not be parsed")]
    Json {
        /// The parser's error, with line and column.
        #[source]
        source: serde_json::Error,
    },
    /// A pod spec names more than [`MAX_ARTIFACTS_PER_OBJECT`] distinct artifacts, or has more
    /// than [`MAX_IMAGE_FIELDS`] image fields: extraction stopped there.
    #[error(
        "{kind} {name}: names more than {max} distinct OCI artifacts (or more than {fields} image \
         fields) to check, more than one object may name; none was checked"
    )]
    TooManyArtifacts {
        /// The object's `kind`.
        kind: String,
        /// The object as `namespace/name` or `name`.
        name: String,
        /// The distinct-artifact limit, [`MAX_ARTIFACTS_PER_OBJECT`].
        max: usize,
        /// The image-field limit, [`MAX_IMAGE_FIELDS`] (whichever was broken, both are given).
        fields: usize,
    },
    /// More documents than [`MAX_DOCUMENTS`].
    #[error("more than {max} documents (List items included); split the input")]
    TooManyDocuments {
        /// The limit, [`MAX_DOCUMENTS`]; the items of `kind: List` documents count one each.
        max: usize,
    },
    /// A reference to an object in another namespace, which the [`Lookup`] does not follow.
    #[error(
        "{kind} {name}: field {field}: {target} is in another namespace; cross-namespace \
         references are refused (as Flux's --no-cross-namespace-refs; \
         --allow-cross-namespace-refs allows them)"
    )]
    CrossNamespace {
        /// The referring object's `kind`.
        kind: String,
        /// The referring object as `namespace/name` or `name`.
        name: String,
        /// The reference's path, e.g. `spec.chart.spec.sourceRef`.
        field: String,
        /// The object referred to, with the other namespace (not looked up).
        target: Box<ObjectRef>,
    },
    /// A file name that is not a Kluctl project file this module reads.
    #[error("{file}: not a Kluctl deployment.yaml or helm-chart.yaml")]
    UnknownKluctlFile {
        /// The file name given to [`extract_kluctl_file`] (only `deployment.y[a]ml` and
        /// `helm-chart.y[a]ml` are read).
        file: String,
    },
}

/// Fetches objects an object refers to. `Ok(None)`: no such object.
pub trait Lookup {
    /// The object `r` names.
    fn get(&self, r: &ObjectRef)
    -> impl Future<Output = Result<Option<Value>, LookupError>> + Send;

    /// Whether a reference may name an object in another namespace than the referring
    /// object's. By default not, as Flux with `--no-cross-namespace-refs`: such a reference is
    /// an [`ExtractError::CrossNamespace`] and nothing is looked up.
    fn cross_namespace_refs(&self) -> bool {
        false
    }

    /// Why the source naming `target` cannot be checked when `get` answered `Ok(None)` (no
    /// such object): by default `KIND ns/name not found`.
    fn missing(&self, target: &ObjectRef) -> String {
        format!("{target} not found")
    }

    /// Every object of `of`'s kind in its namespace (`of.name` is not used), at most `max` and
    /// one more (the caller says what too many is): the HelmCharts that may take their charts
    /// from an admitted HelmRepository. `Ok(None)`: this lookup does not list (the default:
    /// rendered manifests hold those HelmCharts themselves, and each is checked as it is found).
    fn list(
        &self,
        of: &ObjectRef,
        max: usize,
    ) -> impl Future<Output = Result<Option<Vec<Value>>, LookupError>> + Send {
        let _ = (of, max);
        std::future::ready(Ok(None))
    }
}

/// What the caller knows about an object besides its content: an AdmissionRequest gives the
/// kind and namespace separately, and its `object` may omit them. The object's own fields win.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hints {
    /// Used when the object has no `apiVersion` (the webhook gives the request's
    /// `kind.group`/`kind.version`); with neither, workload kinds match in any group and Flux
    /// and Kluctl kinds not at all.
    pub api_version: Option<String>,
    /// Used when the object has no `kind` (the request's `kind.kind`); `None` and no `kind`
    /// field is [`ExtractError::NotAnObject`].
    pub kind: Option<String>,
    /// Used when `metadata.namespace` is absent (the AdmissionRequest's `namespace`); it is the
    /// default namespace of the object's references.
    pub namespace: Option<String>,
    /// The custom kinds whose pod templates are read (`--pod-template-kind`,
    /// `--pod-template-preset`); empty by default: such kinds are noted, not checked.
    pub pod_templates: std::sync::Arc<PodTemplateKinds>,
}

/// The OCI sources of one Kubernetes object, which must carry `apiVersion` and `kind`.
pub async fn extract<L: Lookup + Sync>(
    object: &Value,
    lookup: &L,
) -> Result<Extraction, ExtractError> {
    extract_with(object, &Hints::default(), lookup).await
}

/// Whether an UPDATE from `old` to `new` can change no source, so that neither needs to be
/// extracted: a HelmRepository that keeps its URL and type (Flux's own updates: its finalizer,
/// a reconcile request) moves no HelmChart's chart, and its namespace's HelmCharts are not
/// listed for it. False for every other kind (the sources of both are compared instead).
pub fn update_moves_nothing(old: &Value, new: &Value, hints: &Hints) -> bool {
    let Ok(obj) = Obj::new(new, hints) else {
        return false;
    };
    obj.group().as_deref() == Some(flux::SOURCE_GROUP)
        && obj.kind == "HelmRepository"
        && ["/spec/url", "/spec/type"]
            .iter()
            .all(|f| new.pointer(f) == old.pointer(f))
}

/// [`extract`] for objects whose type or namespace are known from elsewhere (AdmissionRequests).
pub async fn extract_with<L: Lookup + Sync>(
    object: &Value,
    hints: &Hints,
    lookup: &L,
) -> Result<Extraction, ExtractError> {
    let obj = Obj::new(object, hints)?;
    let group = obj.group();
    let mut out = Extraction::default();
    match (group.as_deref(), obj.kind.as_str()) {
        (_, kind) if workload::pod_spec_path(group.as_deref(), kind).is_some() => {
            workload::extract(&obj, &mut out)?;
        }
        (Some(flux::SOURCE_GROUP), "OCIRepository") => {
            let source = flux::oci_repository(&obj, "spec.url", Vec::new())?;
            out.sources.push(source);
        }
        (Some(flux::SOURCE_GROUP), "HelmChart") => {
            flux::helm_chart(&obj, lookup, "spec.chart", Vec::new(), &mut out).await?;
        }
        (Some(flux::HELM_GROUP), "HelmRelease") => {
            flux::helm_release(&obj, lookup, &mut out).await?;
        }
        (Some(flux::SOURCE_GROUP), "HelmRepository") => {
            flux::helm_repository(&obj, lookup, &mut out).await?;
        }
        (Some(kluctl::GROUP), "KluctlDeployment") => {
            kluctl::kluctl_deployment(&obj, &mut out)?;
        }
        (_, kind) => {
            if let Some(read) = custom::extract(&obj, &hints.pod_templates, &mut out) {
                read?;
                return Ok(out);
            }
            let api = obj.api_version.as_deref().unwrap_or("(no apiVersion)");
            out.notes.push(format!(
                "kind {kind} ({api}) is not checked: it has no images or OCI sources ocigate reads"
            ));
        }
    }
    Ok(out)
}

/// An object being read, with what errors need to name it.
pub(crate) struct Obj<'a> {
    pub(crate) value: &'a Value,
    pub(crate) api_version: Option<String>,
    pub(crate) kind: String,
    pub(crate) namespace: Option<String>,
    pub(crate) name: String,
}

impl<'a> Obj<'a> {
    pub(crate) fn new(value: &'a Value, hints: &Hints) -> Result<Self, ExtractError> {
        let map = value.as_object().ok_or_else(|| ExtractError::NotAnObject {
            problem: format!("expected a mapping, got {}", type_name(value)),
        })?;
        let text = |key: &str| -> Result<Option<String>, ExtractError> {
            match map.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if s.is_empty() => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(ExtractError::NotAnObject {
                    problem: format!("{key} is {}, not a string", type_name(other)),
                }),
            }
        };
        let api_version = text("apiVersion")?.or_else(|| hints.api_version.clone());
        let kind = text("kind")?
            .or_else(|| hints.kind.clone())
            .ok_or_else(|| ExtractError::NotAnObject {
                problem: "it has no kind".into(),
            })?;
        let metadata = map.get("metadata");
        let meta_text = |key: &str| match metadata.and_then(|m| m.get(key)) {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            _ => None,
        };
        let namespace = meta_text("namespace").or_else(|| hints.namespace.clone());
        let name = meta_text("name")
            .or_else(|| meta_text("generateName").map(|g| format!("{g}*")))
            .unwrap_or_else(|| "(unnamed)".into());
        Ok(Obj {
            value,
            api_version,
            kind,
            namespace,
            name,
        })
    }

    /// The API group: `apps` for `apps/v1`, `` for the core `v1`.
    pub(crate) fn group(&self) -> Option<String> {
        self.api_version
            .as_deref()
            .map(|a| a.rsplit_once('/').map_or("", |(g, _)| g).to_string())
    }

    /// `ns/name` or `name`, as errors and notes print it.
    pub(crate) fn display_name(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{ns}/{}", self.name),
            None => self.name.clone(),
        }
    }

    pub(crate) fn field_error(&self, field: &str, problem: impl Into<String>) -> ExtractError {
        ExtractError::Field {
            kind: self.kind.clone(),
            name: self.display_name(),
            field: field.to_string(),
            problem: problem.into(),
        }
    }

    /// The value at a dotted path (`spec.ref.tag`); `None` when absent or null.
    pub(crate) fn get(&self, path: &str) -> Option<&'a Value> {
        get_path(self.value, path)
    }

    /// A string field; absent, null and "" are `None` (as Go controllers read them).
    pub(crate) fn opt_str(&self, path: &str) -> Result<Option<&'a str>, ExtractError> {
        match self.get(path) {
            None => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => {
                Err(self.field_error(path, format!("expected a string, got {}", type_name(other))))
            }
        }
    }

    pub(crate) fn req_str(&self, path: &str) -> Result<&'a str, ExtractError> {
        self.opt_str(path)?
            .ok_or_else(|| self.field_error(path, "missing"))
    }

    /// A mapping field; absent and null are `None`.
    pub(crate) fn opt_map(&self, path: &str) -> Result<Option<&'a Value>, ExtractError> {
        match self.get(path) {
            None => Ok(None),
            Some(v @ Value::Object(_)) => Ok(Some(v)),
            Some(other) => Err(self.field_error(
                path,
                format!("expected a mapping, got {}", type_name(other)),
            )),
        }
    }

    /// A list field; absent and null are empty.
    pub(crate) fn list(&self, path: &str) -> Result<&'a [Value], ExtractError> {
        match self.get(path) {
            None => Ok(&[]),
            Some(Value::Array(items)) => Ok(items),
            Some(other) => {
                Err(self.field_error(path, format!("expected a list, got {}", type_name(other))))
            }
        }
    }
}

/// The value at `a.b[2].c`; `None` when absent or null.
pub(crate) fn get_path<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = value;
    for segment in path.split('.') {
        let (key, index) = match segment.strip_suffix(']').and_then(|s| s.split_once('[')) {
            Some((key, i)) => (key, Some(i.parse::<usize>().ok()?)),
            None => (segment, None),
        };
        if !key.is_empty() {
            cur = cur.get(key)?;
        }
        if let Some(i) = index {
            cur = cur.get(i)?;
        }
    }
    (!cur.is_null()).then_some(cur)
}

pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// An artifact for a reference written by a user, or the reason it cannot be checked.
pub(crate) fn reference_artifact(input: &str) -> Artifact {
    if input.contains("{{") || input.contains("{%") {
        return invalid(input, "contains a template; render it first");
    }
    if input.trim_start().starts_with(LAYOUT_PREFIX) {
        return invalid(input, "an oci-layout: path is not a registry reference");
    }
    match ImageRef::parse(input) {
        Ok(r) => Artifact::Reference(r),
        Err(e) => invalid(input, crate::error_chain(&e)),
    }
}

pub(crate) fn invalid(input: &str, problem: impl Into<String>) -> Artifact {
    Artifact::Invalid {
        input: input.to_string(),
        problem: problem.into(),
    }
}

/// The repository named by an `oci://` URL, which must carry neither tag nor digest (Flux and
/// Kluctl both reject them; the ref fields say which version). `Err` is the problem to report.
pub(crate) fn oci_repository_url(url: &str) -> Result<&str, String> {
    let rest = url
        .strip_prefix(OCI_SCHEME)
        .ok_or_else(|| format!("{url:?} must start with {OCI_SCHEME}"))?;
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() {
        return Err(format!("{url:?} names no repository"));
    }
    if rest.contains('@') {
        return Err(format!(
            "{url:?} must not contain a digest; set it in the ref field"
        ));
    }
    let after_host = rest.split_once('/').map_or("", |(_, p)| p);
    if after_host.contains(':') {
        return Err(format!(
            "{url:?} must not contain a tag; set it in the ref field"
        ));
    }
    Ok(rest)
}

/// `repository` at `tag` and/or `digest`, or why that is not a valid reference.
pub(crate) fn pinned(repository: &str, tag: Option<&str>, digest: Option<&str>) -> Artifact {
    let mut text = repository.to_string();
    if let Some(t) = tag {
        text.push(':');
        text.push_str(t);
    }
    if let Some(d) = digest {
        if let Err(e) = Digest::parse(d) {
            return invalid(&format!("{repository}@{d}"), crate::error_chain(&e));
        }
        text.push('@');
        text.push_str(d);
    }
    reference_artifact(&text)
}

/// A semver request on `repository`, or why it cannot be checked.
pub(crate) fn semver_request(repository: &str, constraint: &str, filter: Option<&str>) -> Artifact {
    let repo = match reference_artifact(repository) {
        Artifact::Reference(r) => r,
        other => return other,
    };
    let parsed = match SemverConstraint::parse(constraint) {
        Ok(c) => c,
        Err(e) => return invalid(&format!("{repository} {constraint}"), e.to_string()),
    };
    if let Some(f) = filter
        && let Err(e) = regex::Regex::new(f)
    {
        return invalid(
            f,
            format!("semverFilter is not a valid regular expression: {e}"),
        );
    }
    Artifact::Semver {
        repository: repo,
        constraint: parsed,
        constraint_text: constraint.to_string(),
        filter: filter.map(str::to_string),
        helm_tags: false,
    }
}

/// A Helm chart version as Flux's source-controller reads it: an exact SemVer version, with or
/// without a leading `v` (`version.ParseVersion`), is the tag spelled so (Helm writes `+` as
/// `_` in OCI tags); anything else a constraint over the tags as Helm lists them (see
/// [`Artifact::Semver`]'s `helm_tags`; no tag spelled as a constraint is among them, so
/// source-controller's exact-match step never applies); empty means `*`.
pub(crate) fn chart_version(chart: &str, version: Option<&str>) -> Artifact {
    // Not trimmed: source-controller does not trim either, so ` 1.0.1` is no version to it but a
    // constraint (which `1.0.1+anything` also meets), and must be one here.
    let version = version.filter(|v| !v.trim().is_empty()).unwrap_or("*");
    if parse_tag(version).is_some() {
        return pinned(chart, Some(&version.replace('+', "_")), None);
    }
    let mut artifact = semver_request(chart, version, None);
    if let Artifact::Semver { helm_tags, .. } = &mut artifact {
        *helm_tags = true;
    }
    artifact
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use std::path::PathBuf;

    /// `CARGO_MANIFEST_DIR/../shared/corpus`, or `None` (after printing SKIPPED) when it is
    /// absent outside CI. In CI its absence fails the test.
    pub(crate) fn corpus() -> Option<PathBuf> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus");
        if dir.is_dir() {
            return Some(dir);
        }
        assert!(
            std::env::var_os("CI").is_none(),
            "corpus {} is missing (CI is set)",
            dir.display()
        );
        eprintln!("SKIPPED: corpus {} is missing", dir.display());
        None
    }

    /// The parsed documents of a corpus file, or `None` when the corpus is absent.
    pub(crate) fn corpus_docs(rel: &str) -> Option<Vec<Value>> {
        let path = corpus()?.join(rel);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Some(parse_documents(&text).unwrap_or_else(|e| panic!("{rel}: {e}")))
    }

    /// Run a future to completion on a current-thread runtime.
    pub(crate) fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    pub(crate) fn extract_all(docs: &[Value]) -> Vec<Result<Extraction, ExtractError>> {
        let set = DocumentSet::new(docs.to_vec());
        docs.iter().map(|d| block_on(extract(d, &set))).collect()
    }

    pub(crate) fn reference(a: &Artifact) -> String {
        match a {
            Artifact::Reference(r) => r.to_string(),
            other => panic!("expected a reference, got {other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_kinds_are_noted() {
        let set = DocumentSet::new(vec![]);
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}});
        let out = block_on(extract(&cm, &set)).unwrap();
        assert!(out.sources.is_empty());
        assert_eq!(out.notes.len(), 1);
        assert!(out.notes[0].contains("kind ConfigMap"), "{:?}", out.notes);
        // A Deployment of another API group is not a workload.
        let crd = json!({"apiVersion": "example.com/v1", "kind": "Deployment",
            "spec": {"template": {"spec": {"containers": [{"image": "nginx"}]}}}});
        let out = block_on(extract(&crd, &set)).unwrap();
        assert!(out.sources.is_empty() && out.notes[0].contains("Deployment"));
    }

    #[test]
    fn not_objects_are_errors() {
        let set = DocumentSet::new(vec![]);
        for bad in [json!([1]), json!({"apiVersion": "v1"}), json!({"kind": 3})] {
            let e = block_on(extract(&bad, &set)).unwrap_err();
            assert!(matches!(e, ExtractError::NotAnObject { .. }), "{e}");
        }
    }

    #[test]
    fn hints_supply_kind_and_namespace() {
        let set = DocumentSet::new(vec![]);
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"image": "nginx"}]}});
        let hints = Hints {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some("team".into()),
            ..Hints::default()
        };
        let out = block_on(extract_with(&pod, &hints, &set)).unwrap();
        assert_eq!(
            reference(&out.sources[0].artifact),
            "docker.io/library/nginx"
        );
    }

    #[test]
    fn oci_urls() {
        assert_eq!(oci_repository_url("oci://ghcr.io/a/b"), Ok("ghcr.io/a/b"));
        assert_eq!(oci_repository_url("oci://ghcr.io/"), Ok("ghcr.io"));
        assert_eq!(
            oci_repository_url("oci://localhost:5000/a"),
            Ok("localhost:5000/a")
        );
        for bad in [
            "https://ghcr.io/a",
            "ghcr.io/a",
            "oci://",
            "oci://ghcr.io/a:1.0",
            "oci://ghcr.io/a@sha256:00",
        ] {
            assert!(oci_repository_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn chart_versions() {
        assert_eq!(
            reference(&chart_version("ghcr.io/c/podinfo", Some("6.2.1"))),
            "ghcr.io/c/podinfo:6.2.1"
        );
        assert_eq!(
            reference(&chart_version("ghcr.io/c/podinfo", Some("1.0.0+build.1"))),
            "ghcr.io/c/podinfo:1.0.0_build.1"
        );
        for (v, text) in [(None, "*"), (Some(""), "*"), (Some("6.1.*"), "6.1.*")] {
            match chart_version("ghcr.io/c/podinfo", v) {
                Artifact::Semver {
                    constraint_text, ..
                } => assert_eq!(constraint_text, text),
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(
            chart_version("ghcr.io/c/podinfo", Some("latest")),
            Artifact::Invalid { .. }
        ));
        // As Flux's version.ParseVersion: one leading `v` and it is a version, the tag as spelled.
        assert_eq!(
            reference(&chart_version("ghcr.io/c/podinfo", Some("v6.2.1"))),
            "ghcr.io/c/podinfo:v6.2.1"
        );
        // Whitespace around a version makes it a constraint, as in source-controller.
        assert!(matches!(
            chart_version("ghcr.io/c/podinfo", Some(" 1.0.1\n")),
            Artifact::Semver {
                helm_tags: true,
                ..
            }
        ));
        // A constraint picks among the tags as Helm lists them.
        for v in ["1.x", "1.2", "^1.2", "~1.2"] {
            match chart_version("ghcr.io/c/podinfo", Some(v)) {
                Artifact::Semver { helm_tags, .. } => assert!(helm_tags, "{v}"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn errors_name_their_layer() {
        let e = ExtractError::Lookup {
            kind: "HelmRelease".into(),
            name: "ns/x".into(),
            field: "spec.chartRef".into(),
            source: Box::new(LookupError::failed(
                ObjectRef {
                    api_version: None,
                    kind: "HelmChart".into(),
                    namespace: Some("ns".into()),
                    name: "c".into(),
                },
                "connection refused",
            )),
        };
        assert_eq!(
            crate::error_chain(&e),
            "HelmRelease ns/x: field spec.chartRef: looking up a referenced object: \
             looking up HelmChart ns/c failed: connection refused"
        );
    }
}
