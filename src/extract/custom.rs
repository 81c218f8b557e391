//! Custom resources that embed a pod template (`--pod-template-kind`, `--pod-template-preset`):
//! their configuration, checked when given, and their extraction as a Deployment's template.
//! Must not look anything up, nor let a configured kind replace a kind ocigate reads itself.
//!
//! A configured kind is `GROUP/VERSION/KIND=PATH`: the object's field at the dotted `PATH` is a
//! PodTemplateSpec (`spec.template`: the pod spec is at `PATH.spec`), or, when `PATH`'s last
//! field is `spec` or ends in `Spec` (`spec.template.spec`, `spec.podSpec`), a PodSpec itself.
//! The object must have that shape: a template holding pod-spec fields (`containers`, …) or a
//! pod spec holding a `spec` is refused, never read half, so a wrong `PATH` denies rather than
//! passes. A missing or non-mapping field at `PATH` is a malformed object (denied), except for
//! an Argo Rollout that references a Deployment (`spec.workloadRef`): the Deployment is checked
//! when it is admitted, so the Rollout itself names nothing to check.

use std::fmt;
use std::str::FromStr;

use serde_json::Value;

use super::{ExtractError, Extraction, Obj, flux, kluctl, names, type_name, workload};

/// Most kinds one configuration may list (presets included).
pub const MAX_POD_TEMPLATE_KINDS: usize = 64;

/// Most fields in a configured path (`spec.jobTargetRef.template` has 3).
pub const MAX_PATH_FIELDS: usize = 16;

/// Pod-spec fields a PodTemplateSpec never has at its top level.
const POD_SPEC_FIELDS: [&str; 4] = [
    "containers",
    "initContainers",
    "ephemeralContainers",
    "volumes",
];

/// A configured kind whose objects embed a pod template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodTemplateKind {
    /// The API group, e.g. `argoproj.io` (never the core group).
    pub group: String,
    /// The API version, e.g. `v1alpha1`.
    pub version: String,
    /// The kind, e.g. `Rollout`.
    pub kind: String,
    /// The dotted path of the embedded PodTemplateSpec or PodSpec, e.g. `spec.template`.
    pub path: String,
    /// The plural resource name, when known (presets: `rollouts`); `None`: ask the API's
    /// discovery (a kind given with `--pod-template-kind`).
    pub resource: Option<String>,
    /// A field that, present instead of `path`, makes the object refer to a built-in workload
    /// that is checked on its own (an Argo Rollout's `spec.workloadRef`).
    pub reference_field: Option<String>,
}

impl PodTemplateKind {
    /// `group/version`, as the object's `apiVersion` spells it.
    pub fn api_version(&self) -> String {
        format!("{}/{}", self.group, self.version)
    }

    /// Whether `path` names a PodSpec (its last field is `spec` or ends in `Spec`) rather than
    /// a PodTemplateSpec.
    pub fn names_pod_spec(&self) -> bool {
        let last = self.path.rsplit('.').next().unwrap_or(&self.path);
        last == "spec" || last.ends_with("Spec")
    }

    /// The pod spec's path: `path` for a PodSpec, `path.spec` for a template.
    pub fn pod_spec_path(&self) -> String {
        if self.names_pod_spec() {
            self.path.clone()
        } else {
            format!("{}.spec", self.path)
        }
    }
}

impl fmt::Display for PodTemplateKind {
    /// `GROUP/VERSION/KIND=PATH`, as `--pod-template-kind` takes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}={}",
            self.group, self.version, self.kind, self.path
        )
    }
}

/// Why a configured kind cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PodTemplateKindError {
    /// Not `GROUP/VERSION/KIND=PATH`.
    #[error("pod template kind {given:?}: expected GROUP/VERSION/KIND=PATH")]
    Format {
        /// The text given.
        given: String,
    },
    /// A part that is not what Kubernetes allows there.
    #[error("pod template kind {given:?}: {part} {value:?} {problem}")]
    Part {
        /// The text given.
        given: String,
        /// `group`, `version`, `kind` or `path`.
        part: &'static str,
        /// The part as given.
        value: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// A kind ocigate reads itself (a workload, Flux, Kluctl): it cannot be configured.
    #[error(
        "pod template kind {given:?}: {kind} of {group:?} is read by ocigate itself and cannot \
         be configured"
    )]
    BuiltIn {
        /// The text given.
        given: String,
        /// The group.
        group: String,
        /// The kind.
        kind: String,
    },
    /// The same kind and version configured with two paths.
    #[error("pod template kind {first} and {second}: the same kind with two paths")]
    Conflict {
        /// The first configuration.
        first: String,
        /// The other.
        second: String,
    },
    /// More than [`MAX_POD_TEMPLATE_KINDS`] kinds.
    #[error("more than {max} pod template kinds configured")]
    TooMany {
        /// [`MAX_POD_TEMPLATE_KINDS`].
        max: usize,
    },
    /// A preset name that is not one of [`Preset::ALL`].
    #[error("pod template preset {given:?}: expected one of {known}")]
    UnknownPreset {
        /// The name given.
        given: String,
        /// The presets' names, comma-separated.
        known: String,
    },
}

impl FromStr for PodTemplateKind {
    type Err = PodTemplateKindError;

    /// `GROUP/VERSION/KIND=PATH`, each part checked (a group with a dot, as CRDs have; a
    /// DNS-1035 version; a CamelCase kind; a path of at most [`MAX_PATH_FIELDS`] field names).
    fn from_str(given: &str) -> Result<Self, Self::Err> {
        let format = || PodTemplateKindError::Format {
            given: given.to_string(),
        };
        let (gvk, path) = given.split_once('=').ok_or_else(format)?;
        let mut parts = gvk.split('/');
        let (Some(group), Some(version), Some(kind), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(format());
        };
        let part = |part, value: &str, problem| PodTemplateKindError::Part {
            given: given.to_string(),
            part,
            value: value.to_string(),
            problem,
        };
        if is_read_by_ocigate(group, kind) {
            return Err(PodTemplateKindError::BuiltIn {
                given: given.to_string(),
                group: group.to_string(),
                kind: kind.to_string(),
            });
        }
        if !group.contains('.') || !names::is_dns1123_subdomain(group) {
            return Err(part(
                "group",
                group,
                "is not an API group (a DNS name with a dot)",
            ));
        }
        if !is_version(version) {
            return Err(part(
                "version",
                version,
                "is not an API version (e.g. v1alpha1)",
            ));
        }
        if !is_kind(kind) {
            return Err(part(
                "kind",
                kind,
                "is not a kind (CamelCase letters and digits)",
            ));
        }
        if !is_path(path) {
            return Err(part(
                "path",
                path,
                "is not a dotted path of field names (e.g. spec.template)",
            ));
        }
        Ok(PodTemplateKind {
            group: group.to_string(),
            version: version.to_string(),
            kind: kind.to_string(),
            path: path.to_string(),
            resource: None,
            reference_field: None,
        })
    }
}

/// A DNS-1035 label: `[a-z]([-a-z0-9]*[a-z0-9])?`, as Kubernetes validates versions.
fn is_version(s: &str) -> bool {
    names::is_dns1123_label(s) && s.starts_with(|c: char| c.is_ascii_lowercase())
}

/// `[A-Z][A-Za-z0-9]*`, at most 63 characters.
fn is_kind(s: &str) -> bool {
    s.len() <= names::MAX_LABEL
        && s.starts_with(|c: char| c.is_ascii_uppercase())
        && s.chars().all(|c| c.is_ascii_alphanumeric())
}

/// Field names (`[A-Za-z_][A-Za-z0-9_-]*`) joined by `.`, no indexes, at most
/// [`MAX_PATH_FIELDS`] of them and 253 characters.
fn is_path(s: &str) -> bool {
    let field = |f: &str| {
        f.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && f.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    s.len() <= names::MAX_SUBDOMAIN
        && s.split('.').count() <= MAX_PATH_FIELDS
        && s.split('.').all(field)
}

/// Whether ocigate reads `kind` of `group` itself (workloads, Flux, Kluctl).
fn is_read_by_ocigate(group: &str, kind: &str) -> bool {
    workload::pod_spec_path(Some(group), kind).is_some()
        || matches!(
            (group, kind),
            (
                flux::SOURCE_GROUP,
                "OCIRepository" | "HelmChart" | "HelmRepository"
            ) | (flux::HELM_GROUP, "HelmRelease")
                | (kluctl::GROUP, "KluctlDeployment")
        )
}

/// The custom kinds read for pod templates; empty by default. Built from the flags with
/// [`PodTemplateKinds::new`]; the webhook, `verify --manifests` and `audit` read the same one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodTemplateKinds {
    kinds: Vec<PodTemplateKind>,
}

impl PodTemplateKinds {
    /// The kinds given and those of the presets, each once (the same kind twice with the same
    /// path is one; with two paths a [`PodTemplateKindError::Conflict`]); each kind is checked
    /// as [`PodTemplateKind::from_str`] checks it.
    pub fn new(
        kinds: impl IntoIterator<Item = PodTemplateKind>,
        presets: &[Preset],
    ) -> Result<Self, PodTemplateKindError> {
        let mut out: Vec<PodTemplateKind> = Vec::new();
        let all = presets.iter().flat_map(|p| p.kinds()).chain(kinds);
        for k in all {
            // Built field by field, a kind is checked as the flag's value is.
            k.to_string().parse::<PodTemplateKind>()?;
            let same = |o: &&PodTemplateKind| {
                o.group == k.group && o.version == k.version && o.kind == k.kind
            };
            match out.iter().find(same) {
                Some(o) if o.path == k.path => continue,
                Some(o) => {
                    return Err(PodTemplateKindError::Conflict {
                        first: o.to_string(),
                        second: k.to_string(),
                    });
                }
                None if out.len() >= MAX_POD_TEMPLATE_KINDS => {
                    return Err(PodTemplateKindError::TooMany {
                        max: MAX_POD_TEMPLATE_KINDS,
                    });
                }
                None => out.push(k),
            }
        }
        Ok(PodTemplateKinds { kinds: out })
    }

    /// Whether no kind is configured.
    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty()
    }

    /// The configured kinds, presets first, in the order given.
    pub fn iter(&self) -> impl Iterator<Item = &PodTemplateKind> {
        self.kinds.iter()
    }

    /// The configuration of `kind` of `api_version` (`group/version`), if configured.
    pub fn get(&self, api_version: &str, kind: &str) -> Option<&PodTemplateKind> {
        let (group, version) = api_version.rsplit_once('/')?;
        self.kinds
            .iter()
            .find(|k| k.kind == kind && k.group == group && k.version == version)
    }

    /// A configured kind of `group` in another version than `version` (an object of a version
    /// not configured, whose path may differ: it is refused).
    fn other_version(&self, group: &str, version: &str, kind: &str) -> Option<&PodTemplateKind> {
        self.kinds
            .iter()
            .find(|k| k.kind == kind && k.group == group && k.version != version)
    }

    /// The pull identity (pull secrets, service account) of a built-in workload's or a
    /// configured kind's pod template; `None` for other kinds or when there is no pod spec.
    pub fn pull_identity(
        &self,
        object: &Value,
        api_version: &str,
        kind: &str,
    ) -> Option<workload::PullIdentity> {
        if let Some(identity) = workload::pull_identity(object, api_version, kind) {
            return Some(identity);
        }
        let k = self.get(api_version, kind)?;
        workload::pull_identity_at(object, &k.pod_spec_path())
    }
}

/// A documented kind of a known project, by name (`--pod-template-preset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Preset {
    /// Argo Rollouts' `argoproj.io/v1alpha1` Rollout, `spec.template` (a Rollout with
    /// `spec.workloadRef` instead refers to a Deployment, which is checked on its own).
    ArgoRollout,
    /// Knative Serving's `serving.knative.dev/v1` Service, `spec.template`.
    KnativeService,
    /// KEDA's `keda.sh/v1alpha1` ScaledJob, `spec.jobTargetRef.template`.
    KedaScaledJob,
    /// OpenKruise's `apps.kruise.io/v1alpha1` CloneSet, `spec.template`.
    OpenKruiseCloneSet,
    /// OpenKruise's Advanced StatefulSet, `apps.kruise.io` `v1beta1` and `v1alpha1`
    /// StatefulSet, `spec.template`.
    OpenKruiseStatefulSet,
    /// OpenKruise's Advanced DaemonSet, `apps.kruise.io/v1alpha1` DaemonSet, `spec.template`.
    OpenKruiseDaemonSet,
}

impl Preset {
    /// Every preset.
    pub const ALL: [Preset; 6] = [
        Preset::ArgoRollout,
        Preset::KnativeService,
        Preset::KedaScaledJob,
        Preset::OpenKruiseCloneSet,
        Preset::OpenKruiseStatefulSet,
        Preset::OpenKruiseDaemonSet,
    ];

    /// Its name on the command line, e.g. `argo-rollout`.
    pub fn name(self) -> &'static str {
        match self {
            Preset::ArgoRollout => "argo-rollout",
            Preset::KnativeService => "knative-service",
            Preset::KedaScaledJob => "keda-scaledjob",
            Preset::OpenKruiseCloneSet => "openkruise-cloneset",
            Preset::OpenKruiseStatefulSet => "openkruise-statefulset",
            Preset::OpenKruiseDaemonSet => "openkruise-daemonset",
        }
    }

    /// `(group, versions, kind, resource, path)` as the project documents them.
    fn spec(
        self,
    ) -> (
        &'static str,
        &'static [&'static str],
        &'static str,
        &'static str,
        &'static str,
    ) {
        match self {
            Preset::ArgoRollout => (
                "argoproj.io",
                &["v1alpha1"],
                "Rollout",
                "rollouts",
                "spec.template",
            ),
            Preset::KnativeService => (
                "serving.knative.dev",
                &["v1"],
                "Service",
                "services",
                "spec.template",
            ),
            Preset::KedaScaledJob => (
                "keda.sh",
                &["v1alpha1"],
                "ScaledJob",
                "scaledjobs",
                "spec.jobTargetRef.template",
            ),
            Preset::OpenKruiseCloneSet => (
                "apps.kruise.io",
                &["v1alpha1"],
                "CloneSet",
                "clonesets",
                "spec.template",
            ),
            Preset::OpenKruiseStatefulSet => (
                "apps.kruise.io",
                &["v1beta1", "v1alpha1"],
                "StatefulSet",
                "statefulsets",
                "spec.template",
            ),
            Preset::OpenKruiseDaemonSet => (
                "apps.kruise.io",
                &["v1alpha1"],
                "DaemonSet",
                "daemonsets",
                "spec.template",
            ),
        }
    }

    /// The kinds it configures (one per served version).
    pub fn kinds(self) -> Vec<PodTemplateKind> {
        let (group, versions, kind, resource, path) = self.spec();
        let reference_field = (self == Preset::ArgoRollout).then(|| "spec.workloadRef".to_string());
        versions
            .iter()
            .map(|version| PodTemplateKind {
                group: group.into(),
                version: (*version).into(),
                kind: kind.into(),
                path: path.into(),
                resource: Some(resource.into()),
                reference_field: reference_field.clone(),
            })
            .collect()
    }
}

impl FromStr for Preset {
    type Err = PodTemplateKindError;

    fn from_str(given: &str) -> Result<Self, Self::Err> {
        Preset::ALL
            .into_iter()
            .find(|p| p.name() == given)
            .ok_or_else(|| PodTemplateKindError::UnknownPreset {
                given: given.to_string(),
                known: Preset::ALL.map(Preset::name).join(", "),
            })
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether `obj` is of a configured kind (or of a configured group and kind in a version not
/// configured, which is refused); then its pod template is read into `out`.
pub(crate) fn extract(
    obj: &Obj<'_>,
    kinds: &PodTemplateKinds,
    out: &mut Extraction,
) -> Option<Result<(), ExtractError>> {
    let api_version = obj.api_version.as_deref()?;
    let (group, version) = api_version.rsplit_once('/')?;
    let Some(k) = kinds.get(api_version, &obj.kind) else {
        let other = kinds.other_version(group, version, &obj.kind)?;
        return Some(Err(obj.field_error(
            "apiVersion",
            format!(
                "{} is configured as a pod template kind in {} only; configure {api_version} too",
                obj.kind,
                other.api_version()
            ),
        )));
    };
    Some(template(obj, k, out))
}

/// The pod template of `obj` at `k`'s path, read as a Deployment's.
fn template(obj: &Obj<'_>, k: &PodTemplateKind, out: &mut Extraction) -> Result<(), ExtractError> {
    let Some(value) = obj.get(&k.path) else {
        if let Some(field) = &k.reference_field
            && obj.get(field).is_some()
        {
            out.notes.push(format!(
                "{} {}: {field} refers to a workload, whose pod template is checked when it is \
                 admitted; the {} itself names no image",
                obj.kind,
                obj.display_name(),
                obj.kind
            ));
            return Ok(());
        }
        return Err(obj.field_error(
            &k.path,
            format!("missing: there is no pod template to read (pod template kind {k})"),
        ));
    };
    let Some(map) = value.as_object() else {
        return Err(obj.field_error(
            &k.path,
            format!("expected a mapping, got {}", type_name(value)),
        ));
    };
    if k.names_pod_spec() {
        if map.contains_key("spec") {
            return Err(obj.field_error(
                &k.path,
                format!("has a spec: a pod template, not the pod spec pod template kind {k} names"),
            ));
        }
    } else if let Some(f) = POD_SPEC_FIELDS.iter().find(|f| map.contains_key(**f)) {
        return Err(obj.field_error(
            &k.path,
            format!("has {f}: a pod spec, not the pod template pod template kind {k} names"),
        ));
    }
    workload::extract_pod_spec(obj, &k.pod_spec_path(), out)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::*;
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    fn configured(kinds: &[&str], presets: &[Preset]) -> Hints {
        let kinds = kinds.iter().map(|k| k.parse().unwrap());
        Hints {
            pod_templates: Arc::new(PodTemplateKinds::new(kinds, presets).unwrap()),
            ..Hints::default()
        }
    }

    fn run(obj: &Value, hints: &Hints) -> Result<Extraction, ExtractError> {
        block_on(extract_with(obj, hints, &DocumentSet::default()))
    }

    fn rollout(spec: Value) -> Value {
        json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
            "metadata": {"name": "r", "namespace": "apps"}, "spec": spec})
    }

    #[test]
    fn kinds_are_checked_when_given() {
        let k: PodTemplateKind = "argoproj.io/v1alpha1/Rollout=spec.template"
            .parse()
            .unwrap();
        assert_eq!(k.pod_spec_path(), "spec.template.spec");
        assert_eq!(k.to_string(), "argoproj.io/v1alpha1/Rollout=spec.template");
        let k: PodTemplateKind = "example.com/v1/Thing=spec.podSpec".parse().unwrap();
        assert_eq!(k.pod_spec_path(), "spec.podSpec");
        for (bad, needle) in [
            (
                "argoproj.io/v1alpha1/Rollout",
                "expected GROUP/VERSION/KIND=PATH",
            ),
            ("argoproj.io/Rollout=spec.template", "expected GROUP"),
            ("a/b/c/d=e", "expected GROUP"),
            ("argoproj/v1/Rollout=spec.template", "group \"argoproj\""),
            ("/v1/Rollout=spec.template", "group"),
            ("Argo.io/v1/Rollout=spec.template", "group"),
            ("argoproj.io/V1/Rollout=spec.template", "version \"V1\""),
            ("argoproj.io/1/Rollout=spec.template", "version"),
            ("argoproj.io/v1/rollout=spec.template", "kind \"rollout\""),
            ("argoproj.io/v1/Roll-out=spec.template", "kind"),
            ("argoproj.io/v1/Rollout=", "path \"\""),
            ("argoproj.io/v1/Rollout=spec..template", "path"),
            ("argoproj.io/v1/Rollout=spec.containers[0]", "path"),
            ("argoproj.io/v1/Rollout=.spec", "path"),
            ("apps/v1/Deployment=spec.template", "read by ocigate itself"),
            ("apps/v1/Foo=spec.template", "group \"apps\""),
            (
                "extensions.example/v1/X=a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q",
                "path",
            ),
            (
                "source.toolkit.fluxcd.io/v1/OCIRepository=spec",
                "read by ocigate itself",
            ),
            (
                "gitops.kluctl.io/v1beta1/KluctlDeployment=spec",
                "read by ocigate itself",
            ),
        ] {
            let e = bad.parse::<PodTemplateKind>().unwrap_err().to_string();
            assert!(e.contains(needle), "{bad}: {e}");
        }
        // Built-in kinds are not configurable even where the group is theirs under another name.
        let e = "batch.example/v1/Job=spec.template".parse::<PodTemplateKind>();
        assert!(e.is_ok(), "another group's Job is another kind");
        assert!(
            "nope"
                .parse::<Preset>()
                .unwrap_err()
                .to_string()
                .contains("argo-rollout")
        );
        assert_eq!(
            "keda-scaledjob".parse::<Preset>(),
            Ok(Preset::KedaScaledJob)
        );
    }

    #[test]
    fn configurations_merge_and_conflict() {
        let same: PodTemplateKind = "argoproj.io/v1alpha1/Rollout=spec.template"
            .parse()
            .unwrap();
        let kinds = PodTemplateKinds::new([same], &Preset::ALL).unwrap();
        assert_eq!(kinds.iter().count(), 7);
        let rollout = kinds.get("argoproj.io/v1alpha1", "Rollout").unwrap();
        assert_eq!(rollout.resource.as_deref(), Some("rollouts"));
        assert!(kinds.get("apps.kruise.io/v1beta1", "StatefulSet").is_some());
        let other: PodTemplateKind = "argoproj.io/v1alpha1/Rollout=spec.other".parse().unwrap();
        let e = PodTemplateKinds::new([other], &[Preset::ArgoRollout]).unwrap_err();
        assert!(matches!(e, PodTemplateKindError::Conflict { .. }), "{e}");
        let mut built_in = Preset::ArgoRollout.kinds().remove(0);
        built_in.group = "apps".into();
        built_in.kind = "Deployment".into();
        let e = PodTemplateKinds::new([built_in], &[]).unwrap_err();
        assert!(matches!(e, PodTemplateKindError::BuiltIn { .. }), "{e}");
        let many = (0..=MAX_POD_TEMPLATE_KINDS).map(|i| {
            format!("example.com/v1/K{i}=spec.template")
                .parse()
                .unwrap()
        });
        assert!(matches!(
            PodTemplateKinds::new(many, &[]),
            Err(PodTemplateKindError::TooMany { .. })
        ));
    }

    #[test]
    fn a_rollout_is_read_as_a_deployment() {
        let hints = configured(&[], &[Preset::ArgoRollout]);
        let r = rollout(json!({"template": {"metadata": {}, "spec": {
            "serviceAccountName": "sa", "imagePullSecrets": [{"name": "pull"}],
            "initContainers": [{"name": "i", "image": "ghcr.io/acme/init:1"}],
            "containers": [{"name": "a", "image": "ghcr.io/acme/app:1"}],
            "volumes": [{"name": "v", "image": {"reference": "ghcr.io/acme/data:1"}}]}}}));
        let out = run(&r, &hints).unwrap();
        let paths: Vec<_> = out.sources.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "spec.template.spec.containers[0].image",
                "spec.template.spec.initContainers[0].image",
                "spec.template.spec.volumes[0].image.reference"
            ]
        );
        let identity = hints
            .pod_templates
            .pull_identity(&r, "argoproj.io/v1alpha1", "Rollout")
            .unwrap();
        assert_eq!(
            (identity.secrets, identity.service_account.as_str()),
            (vec!["pull".to_string()], "sa")
        );
        // Not configured: as today, a note and nothing checked.
        let out = run(&r, &Hints::default()).unwrap();
        assert!(
            out.sources.is_empty() && out.notes[0].contains("kind Rollout"),
            "{out:?}"
        );
        assert_eq!(
            PodTemplateKinds::default().pull_identity(&r, "argoproj.io/v1alpha1", "Rollout"),
            None
        );
        // The same limits as a Deployment's.
        let containers: Vec<Value> = (0..300)
            .map(|i| json!({"name": format!("c{i}"), "image": format!("ghcr.io/acme/app:{i}")}))
            .collect();
        let e = run(
            &rollout(json!({"template": {"spec": {"containers": containers}}})),
            &hints,
        )
        .unwrap_err();
        assert!(matches!(e, ExtractError::TooManyArtifacts { .. }), "{e}");
    }

    #[test]
    fn malformed_objects_of_configured_kinds_are_errors() {
        let hints = configured(&[], &[Preset::ArgoRollout, Preset::KedaScaledJob]);
        for (spec, needle) in [
            (
                json!({}),
                "field spec.template: missing: there is no pod template to read",
            ),
            (
                json!({"template": "x"}),
                "field spec.template: expected a mapping, got a string",
            ),
            (
                json!({"template": {"containers": [{"image": "nginx"}]}}),
                "has containers: a pod spec",
            ),
            (
                json!({"template": {"metadata": {}}}),
                "field spec.template.spec: missing",
            ),
            (
                json!({"template": {"spec": {"containers": [{"image": 3}]}}}),
                "expected a string",
            ),
        ] {
            let e = run(&rollout(spec), &hints).unwrap_err().to_string();
            assert!(e.starts_with("Rollout apps/r: field spec.template"), "{e}");
            assert!(e.contains(needle), "{e}");
        }
        // A Rollout referring to a Deployment names no image itself.
        let out = run(&rollout(json!({"workloadRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d"}})), &hints).unwrap();
        assert!(
            out.sources.is_empty()
                && out.notes[0].contains("spec.workloadRef refers to a workload"),
            "{out:?}"
        );
        // A version not configured is refused, not passed.
        let mut r = rollout(json!({"template": {"spec": {"containers": []}}}));
        r["apiVersion"] = json!("argoproj.io/v1beta1");
        let e = run(&r, &hints).unwrap_err().to_string();
        assert!(
            e.contains("configured as a pod template kind in argoproj.io/v1alpha1 only"),
            "{e}"
        );
        let job = json!({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob", "metadata": {"name": "j"},
            "spec": {"jobTargetRef": {"template": {"spec": {"containers": [{"name": "a", "image": "nginx"}]}}}}});
        assert_eq!(
            run(&job, &hints).unwrap().sources[0].path,
            "spec.jobTargetRef.template.spec.containers[0].image"
        );
    }

    #[test]
    fn a_pod_spec_path_is_read_as_a_pod_spec() {
        let hints = configured(&["example.com/v1/Runner=spec.podSpec"], &[]);
        let obj = |pod_spec: Value| {
            json!({"apiVersion": "example.com/v1", "kind": "Runner",
            "metadata": {"name": "x"}, "spec": {"podSpec": pod_spec}})
        };
        let out = run(
            &obj(json!({"containers": [{"name": "a", "image": "nginx"}]})),
            &hints,
        )
        .unwrap();
        assert_eq!(out.sources[0].path, "spec.podSpec.containers[0].image");
        let e = run(&obj(json!({"spec": {"containers": []}})), &hints).unwrap_err();
        assert!(e.to_string().contains("has a spec: a pod template"), "{e}");
    }
}

#[cfg(test)]
mod deploy_tests {
    use super::*;

    /// deploy/overlays/custom-kinds gives `serve` every preset and the validating webhook a
    /// rule for each kind a preset configures (group, version, plural resource).
    #[test]
    fn the_overlay_lists_every_preset_and_its_rules() {
        let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("deploy/overlays/custom-kinds/kustomization.yaml");
        let text = std::fs::read_to_string(file).unwrap();
        let k: Value = serde_saphyr::from_str(&text).unwrap();
        let mut args = Vec::new();
        let mut rules = Vec::new();
        for patch in k["patches"].as_array().unwrap() {
            let ops: Value = serde_saphyr::from_str(patch["patch"].as_str().unwrap()).unwrap();
            for op in ops.as_array().unwrap() {
                match op["path"].as_str().unwrap() {
                    "/spec/template/spec/containers/0/args/-" => {
                        args.push(op["value"].as_str().unwrap().to_string())
                    }
                    "/webhooks/0/rules/-" => rules.push(op["value"].clone()),
                    other => panic!("unexpected patch path {other}"),
                }
            }
        }
        let given: Vec<&str> = args
            .chunks(2)
            .map(|pair| {
                assert_eq!(pair[0], "--pod-template-preset");
                pair[1].as_str()
            })
            .collect();
        assert_eq!(given, Preset::ALL.map(Preset::name));
        let covers = |k: &PodTemplateKind| {
            rules.iter().any(|r| {
                let has =
                    |field: &str, v: &str| r[field].as_array().unwrap().iter().any(|x| x == v);
                has("apiGroups", &k.group)
                    && has("apiVersions", &k.version)
                    && has("resources", k.resource.as_deref().unwrap())
                    && has("operations", "CREATE")
                    && has("operations", "UPDATE")
            })
        };
        for k in Preset::ALL.iter().flat_map(|p| p.kinds()) {
            assert!(covers(&k), "no webhook rule for {k}");
        }
    }
}
