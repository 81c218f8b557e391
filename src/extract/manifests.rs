//! Sets of manifest files (`verify --manifests`) and single objects (the webhook) → each distinct
//! OCI source once, with every place it was found (`Location`), under the per-object limits; the
//! objects the webhook never sees (excluded namespaces) skipped and said. Pure: the caller reads
//! and parses the files, gives the cluster's `Lookup` and checks the sources; not done here.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use super::{
    Artifact, DocumentSet, ExtractError, Extraction, Hints, Lookup, LookupError,
    MAX_ARTIFACTS_PER_OBJECT, MAX_IMAGE_FIELDS, ObjectRef, Source, Unverified, extract_kluctl_file,
    extract_with, kluctl,
};

/// An object names more distinct artifacts than [`MAX_ARTIFACTS_PER_OBJECT`] (after its repeats
/// are folded): none of them is checked. The webhook and `verify --manifests` say the same words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the object names more than {max} distinct OCI artifacts (or more than {fields} image \
     fields) to check, more than one object may name; none was checked"
)]
#[non_exhaustive]
pub struct TooManyArtifacts {
    /// [`MAX_ARTIFACTS_PER_OBJECT`].
    pub max: usize,
    /// [`MAX_IMAGE_FIELDS`].
    pub fields: usize,
}

/// The sources of one object, each artifact ([`Source::key`]) once, in the object's order: the
/// paths of a repeat are added to the first one's `other_paths`. Keys in `skip` are left out (an
/// UPDATE's old object already ran them). More than [`MAX_ARTIFACTS_PER_OBJECT`] left: an error.
pub fn distinct_sources(
    sources: Vec<Source>,
    skip: &BTreeSet<String>,
) -> Result<Vec<Source>, TooManyArtifacts> {
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    let mut out: Vec<Source> = Vec::new();
    for s in sources {
        let key = s.key();
        if skip.contains(&key) {
            continue;
        }
        match index.get(&key) {
            Some(&i) => {
                let first = &mut out[i];
                first.other_paths.push(s.path);
                first.other_paths.extend(s.other_paths);
            }
            None => {
                index.insert(key, out.len());
                out.push(s);
            }
        }
    }
    if out.len() > MAX_ARTIFACTS_PER_OBJECT {
        return Err(TooManyArtifacts {
            max: MAX_ARTIFACTS_PER_OBJECT,
            fields: MAX_IMAGE_FIELDS,
        });
    }
    Ok(out)
}

/// Where something was found: a field of a Kubernetes object in a file, or of a Kluctl project
/// file's document (no kind, namespace or name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Location {
    /// The file as given (`-` for standard input).
    pub file: String,
    /// The object's `kind`; `None` in a Kluctl project file.
    pub kind: Option<String>,
    /// The object's namespace, else the one objects without one are applied to
    /// ([`ManifestOptions::namespace`]); `None`: neither says one.
    pub namespace: Option<String>,
    /// The object's `metadata.name` (`generateName*`, `(unnamed)` when it has neither); `None`
    /// in a Kluctl project file.
    pub name: Option<String>,
    /// The field, e.g. `spec.template.spec.containers[0].image`; empty: the object or file
    /// as a whole.
    pub field_path: String,
}

impl fmt::Display for Location {
    /// `FILE KIND NS/NAME PATH` (`FILE KIND NAME PATH` without a namespace, `FILE PATH` for a
    /// Kluctl file's field).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(kind) = &self.kind {
            write!(f, " {kind}")?;
        }
        match (&self.namespace, &self.name) {
            (Some(ns), Some(name)) => write!(f, " {ns}/{name}")?,
            (None, Some(name)) => write!(f, " {name}")?,
            _ => {}
        }
        if !self.field_path.is_empty() {
            write!(f, " {}", self.field_path)?;
        }
        Ok(())
    }
}

impl Location {
    /// The object `d` of `file` as a whole, in `default_namespace` when it names none.
    fn object(file: &Path, d: &Value, default_namespace: Option<&str>) -> Self {
        let meta = |key: &str| {
            d.pointer(&format!("/metadata/{key}"))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        let name = meta("name")
            .map(str::to_string)
            .or_else(|| meta("generateName").map(|g| format!("{g}*")))
            .unwrap_or_else(|| "(unnamed)".into());
        Location {
            file: file.display().to_string(),
            kind: Some(d.get("kind").and_then(Value::as_str).unwrap_or("?").into()),
            namespace: meta("namespace").or(default_namespace).map(str::to_string),
            name: Some(name),
            field_path: String::new(),
        }
    }

    /// A Kluctl project file as a whole.
    fn file(file: &Path) -> Self {
        Location {
            file: file.display().to_string(),
            kind: None,
            namespace: None,
            name: None,
            field_path: String::new(),
        }
    }

    /// This object's or file's field `path`.
    fn at(&self, path: &str) -> Self {
        Location {
            field_path: path.to_string(),
            ..self.clone()
        }
    }
}

/// One OCI source of a set of manifests and every place it was found.
#[derive(Debug, Clone, PartialEq)]
pub struct FoundSource {
    /// Every place it was found, in the order found.
    pub found_in: Vec<Location>,
    /// The source as first found.
    pub source: Source,
}

/// An object of the manifests that is not checked because the webhook is never asked about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// The object (its `field_path` empty).
    pub object: Location,
    /// Why it is not checked, e.g. `namespace kube-system is excluded from the webhook`.
    pub reason: String,
}

/// How a set of manifests is read: as the webhook would see its objects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManifestOptions {
    /// Follow a Flux reference into another namespace (`--allow-cross-namespace-refs`).
    pub cross_namespace_refs: bool,
    /// The namespace objects without one are applied to (`--namespace`, or the cluster's
    /// default); `None`: not known, such objects are in no namespace.
    pub namespace: Option<String>,
    /// Namespaces the webhook is not called for (its `namespaceSelector`): an object in one is
    /// [`Skipped`], never checked.
    pub excluded_namespaces: BTreeSet<String>,
    /// The custom kinds whose pod templates are read, as the webhook's (`--pod-template-kind`).
    pub pod_templates: std::sync::Arc<super::PodTemplateKinds>,
}

/// What a set of manifest files makes the cluster fetch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Manifests {
    /// Each OCI source once (by [`Source::key`]), in the order first found. An object that
    /// cannot be read, or names too many artifacts, is one [`Artifact::Invalid`] source.
    pub sources: Vec<FoundSource>,
    /// What is fetched but not OCI, each with where it was found.
    pub unverified: Vec<(Location, Unverified)>,
    /// Objects naming something to check that the webhook never sees, in the order found.
    pub skipped: Vec<Skipped>,
}

impl Manifests {
    /// Adds `sources` found in `what` (an object or a file), merging each into an equal one
    /// found before.
    fn record(
        &mut self,
        index: &mut BTreeMap<String, usize>,
        what: &Location,
        sources: Vec<Source>,
    ) {
        for source in sources {
            let found_in = std::iter::once(&source.path)
                .chain(&source.other_paths)
                .map(|p| what.at(p));
            let key = source.key();
            match index.get(&key) {
                Some(&i) => self.sources[i].found_in.extend(found_in),
                None => {
                    let found_in = found_in.collect();
                    index.insert(key, self.sources.len());
                    self.sources.push(FoundSource { found_in, source });
                }
            }
        }
    }
}

/// Whether a document is a Kubernetes object (it has `apiVersion` and `kind`); other
/// documents may be Kluctl project files.
fn is_object(d: &Value) -> bool {
    d.get("apiVersion").is_some() && d.get("kind").is_some()
}

/// The documents given first, then the cluster's objects when a cluster is given; what neither
/// has is said to be missing from both.
struct DocumentsThenCluster<'a, L> {
    documents: &'a DocumentSet,
    cluster: Option<&'a L>,
}

impl<L: Lookup + Sync> Lookup for DocumentsThenCluster<'_, L> {
    fn get(
        &self,
        r: &ObjectRef,
    ) -> impl Future<Output = Result<Option<Value>, LookupError>> + Send {
        let (documents, cluster, r) = (self.documents, self.cluster, r.clone());
        async move {
            if let Some(found) = documents.get(&r).await? {
                return Ok(Some(found));
            }
            match cluster {
                Some(c) => c.get(&r).await,
                None => Ok(None),
            }
        }
    }

    fn cross_namespace_refs(&self) -> bool {
        self.documents.cross_namespace_refs()
    }

    /// The cluster's objects of that kind in that namespace (the HelmCharts a HelmRepository
    /// among the documents would give charts to), less those a document replaces: each of
    /// those is checked as itself. More than `max`: all of them, for the caller to refuse.
    /// Without a cluster: the documents' answer (they hold those HelmCharts themselves).
    fn list(
        &self,
        of: &ObjectRef,
        max: usize,
    ) -> impl Future<Output = Result<Option<Vec<Value>>, LookupError>> + Send {
        let (documents, cluster, of) = (self.documents, self.cluster, of.clone());
        async move {
            let Some(cluster) = cluster else {
                return documents.list(&of, max).await;
            };
            let Some(listed) = cluster.list(&of, max).await? else {
                return Ok(None);
            };
            if listed.len() > max {
                return Ok(Some(listed));
            }
            let mut kept = Vec::with_capacity(listed.len());
            for item in listed {
                let name = item.pointer("/metadata/name").and_then(Value::as_str);
                let replaced = match name {
                    Some(name) => {
                        let r = ObjectRef {
                            api_version: None,
                            name: name.to_string(),
                            ..of.clone()
                        };
                        documents.get(&r).await?.is_some()
                    }
                    None => false,
                };
                if !replaced {
                    kept.push(item);
                }
            }
            Ok(Some(kept))
        }
    }

    fn missing(&self, target: &ObjectRef) -> String {
        match self.cluster {
            Some(_) => {
                format!("{target} not found: neither among the documents nor in the cluster")
            }
            None => format!(
                "{target} not found: it is not among the documents given (give it with them, or \
                 --kubeconfig to read it from the cluster as the webhook does)"
            ),
        }
    }
}

/// The OCI sources of parsed manifest files, as the webhook would extract them one object at a
/// time: Kubernetes objects (Flux references followed within `files`), then the documents of
/// Kluctl project files (`deployment.yaml`, `helm-chart.yaml`; other files' non-object
/// documents have no OCI sources). Objects in an excluded namespace are skipped.
pub async fn manifest_sources(
    files: &[(PathBuf, Vec<Value>)],
    options: &ManifestOptions,
) -> Manifests {
    sources_with(files, options, None::<&DocumentSet>).await
}

/// [`manifest_sources`], reading a referenced object that is not among `files` through
/// `cluster` (the Kubernetes API, as the webhook reads it).
pub async fn manifest_sources_with<L: Lookup + Sync>(
    files: &[(PathBuf, Vec<Value>)],
    options: &ManifestOptions,
    cluster: &L,
) -> Manifests {
    sources_with(files, options, Some(cluster)).await
}

async fn sources_with<L: Lookup + Sync>(
    files: &[(PathBuf, Vec<Value>)],
    options: &ManifestOptions,
    cluster: Option<&L>,
) -> Manifests {
    let objects: Vec<(&PathBuf, &Value)> = files
        .iter()
        .flat_map(|(f, docs)| docs.iter().filter(|d| is_object(d)).map(move |d| (f, d)))
        .collect();
    let set = DocumentSet::new(objects.iter().map(|(_, d)| (*d).clone()).collect())
        .allow_cross_namespace_refs(options.cross_namespace_refs);
    let lookup = DocumentsThenCluster {
        documents: &set,
        cluster,
    };
    let hints = Hints {
        namespace: options.namespace.clone(),
        pod_templates: options.pod_templates.clone(),
        ..Hints::default()
    };
    let mut out = Manifests::default();
    let mut index = BTreeMap::new();
    let ignored = ignored_namespaces(objects.iter().map(|(_, d)| *d));
    for (file, d) in objects {
        let what = Location::object(file, d, options.namespace.as_deref());
        if let Some(reason) = what
            .namespace
            .as_ref()
            .and_then(|ns| exclusion(ns, options, &ignored))
        {
            // Only what would have been checked is said; the documents alone tell.
            if names_anything(extract_with(d, &hints, &set).await) {
                out.skipped.push(Skipped {
                    object: what,
                    reason,
                });
            }
            continue;
        }
        let (sources, unverified) = match extract_with(d, &hints, &lookup).await {
            Ok(x) => match distinct_sources(x.sources, &BTreeSet::new()) {
                Ok(sources) => (sources, x.unverified),
                Err(e) => (vec![invalid_source(&what, e.to_string())], Vec::new()),
            },
            Err(e) => (
                vec![invalid_source(&what, crate::error_chain(&e))],
                Vec::new(),
            ),
        };
        out.record(&mut index, &what, sources);
        out.unverified
            .extend(unverified.into_iter().map(|u| (what.at(&u.path), u)));
    }
    kluctl_sources(files, &mut out, &mut index);
    out
}

/// The sources of the documents of Kluctl project files (`deployment.yaml`, `helm-chart.yaml`)
/// among `files`, added to `out`.
fn kluctl_sources(
    files: &[(PathBuf, Vec<Value>)],
    out: &mut Manifests,
    index: &mut BTreeMap<String, usize>,
) {
    for (file, d) in files
        .iter()
        .flat_map(|(f, docs)| docs.iter().filter(|d| !is_object(d)).map(move |d| (f, d)))
    {
        let base = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !kluctl::is_project_file(&base) {
            continue; // values files, kustomization fragments: no OCI sources
        }
        let what = Location::file(file);
        let sources = match extract_kluctl_file(&base, d) {
            Ok(x) => distinct_sources(x.sources, &BTreeSet::new())
                .unwrap_or_else(|e| vec![invalid_source(&what, e.to_string())]),
            Err(e) => vec![invalid_source(&what, crate::error_chain(&e))],
        };
        out.record(index, &what, sources);
    }
}

/// Whether an object's extraction has something to check or warn about (or fails).
fn names_anything(x: Result<Extraction, ExtractError>) -> bool {
    x.map_or(true, |x| !x.sources.is_empty() || !x.unverified.is_empty())
}

/// The one source of `what` when none of its sources is checked: denied with `problem`.
fn invalid_source(what: &Location, problem: String) -> Source {
    Source {
        path: String::new(),
        other_paths: Vec::new(),
        artifact: Artifact::Invalid {
            input: what.to_string(),
            problem,
        },
        flux_verify: None,
        flux: false,
        flux_verify_field: String::new(),
        via: Vec::new(),
    }
}

/// The label with which a namespace opts out of the webhook (deploy/'s `namespaceSelector`:
/// `ocigate.dev/ignore NotIn ["true"]`).
pub(crate) const IGNORE_LABEL: &str = "ocigate.dev/ignore";

/// The namespaces among the documents that carry [`IGNORE_LABEL`]`: "true"`.
fn ignored_namespaces<'a>(objects: impl Iterator<Item = &'a Value>) -> BTreeSet<String> {
    objects
        .filter(|d| d["apiVersion"] == "v1" && d["kind"] == "Namespace")
        .filter(|d| d["metadata"]["labels"][IGNORE_LABEL] == "true")
        .filter_map(|d| d["metadata"]["name"].as_str().map(str::to_string))
        .collect()
}

/// Why the webhook is not called for objects in `ns`, if it is not.
fn exclusion(ns: &str, options: &ManifestOptions, ignored: &BTreeSet<String>) -> Option<String> {
    if options.excluded_namespaces.contains(ns) {
        Some(format!(
            "namespace {ns} is excluded from the webhook (its namespaceSelector; \
             --exclude-namespace), so nothing in it is checked"
        ))
    } else if ignored.contains(ns) {
        Some(format!(
            "namespace {ns} is labelled {IGNORE_LABEL}: \"true\" among the documents, which \
             the webhook's namespaceSelector excludes, so nothing in it is checked"
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn shown(found_in: &[Location]) -> Vec<String> {
        found_in.iter().map(Location::to_string).collect()
    }

    fn pod(name: &str, images: &[&str]) -> Value {
        let containers: Vec<_> = images
            .iter()
            .enumerate()
            .map(|(i, image)| json!({"name": format!("c{i}"), "image": image}))
            .collect();
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
               "spec": {"containers": containers}})
    }

    fn deployment_file(n: usize) -> Value {
        let includes: Vec<_> = (0..n)
            .map(|i| json!({"oci": {"url": format!("oci://r.example/inc{i}"), "ref": {"tag": "v1"}}}))
            .collect();
        json!({"deployments": includes})
    }

    #[test]
    fn repeats_are_folded_into_the_first_and_skipped_keys_left_out() {
        let files = [(
            PathBuf::from("k/deployment.yaml"),
            vec![json!({"deployments": [
                {"oci": {"url": "oci://r.example/a", "ref": {"tag": "v1"}}},
                {"oci": {"url": "oci://r.example/b", "ref": {"tag": "v1"}}},
                {"oci": {"url": "oci://r.example/a", "ref": {"tag": "v1"}}},
            ]})],
        )];
        let x = extract_kluctl_file("deployment.yaml", &files[0].1[0]).unwrap();
        let keys: Vec<_> = x.sources.iter().map(Source::key).collect();
        let distinct = distinct_sources(x.sources.clone(), &BTreeSet::new()).unwrap();
        assert_eq!(distinct.len(), 2);
        assert_eq!(distinct[0].path, "deployments[0].oci.url");
        assert_eq!(distinct[0].other_paths, ["deployments[2].oci.url"]);
        let skip = BTreeSet::from([keys[0].clone()]);
        let rest = distinct_sources(x.sources, &skip).unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].path, "deployments[1].oci.url");
    }

    #[test]
    fn a_source_found_twice_is_one_with_both_places() {
        let files = [
            (
                PathBuf::from("a.yaml"),
                vec![pod("one", &["r.example/app:v1", "r.example/side:v1"])],
            ),
            (
                PathBuf::from("b.yaml"),
                vec![pod("two", &["r.example/app:v1"]), json!({"values": 1})],
            ),
        ];
        let found = block_on(manifest_sources(&files, &ManifestOptions::default()));
        assert_eq!(found.sources.len(), 2, "{found:?}");
        assert_eq!(
            shown(&found.sources[0].found_in),
            [
                "a.yaml Pod one spec.containers[0].image",
                "b.yaml Pod two spec.containers[0].image"
            ]
        );
        assert!(found.unverified.is_empty());
    }

    #[test]
    fn only_kluctl_project_files_are_read_and_their_limit_is_the_webhooks() {
        let at_limit = [(
            PathBuf::from("p/deployment.yml"),
            vec![deployment_file(MAX_ARTIFACTS_PER_OBJECT)],
        )];
        let found = block_on(manifest_sources(&at_limit, &ManifestOptions::default()));
        assert_eq!(found.sources.len(), MAX_ARTIFACTS_PER_OBJECT);
        let past = [(
            PathBuf::from("p/deployment.yaml"),
            vec![deployment_file(MAX_ARTIFACTS_PER_OBJECT + 1)],
        )];
        let found = block_on(manifest_sources(&past, &ManifestOptions::default()));
        assert_eq!(found.sources.len(), 1);
        assert_eq!(shown(&found.sources[0].found_in), ["p/deployment.yaml"]);
        let Artifact::Invalid { input, problem } = &found.sources[0].source.artifact else {
            panic!("{found:?}");
        };
        assert_eq!(input, "p/deployment.yaml");
        assert!(
            problem.starts_with("the object names more than 256 distinct OCI artifacts"),
            "{problem}"
        );
        let values = [(PathBuf::from("p/values.yaml"), vec![deployment_file(3)])];
        assert_eq!(
            block_on(manifest_sources(&values, &ManifestOptions::default())),
            Manifests::default()
        );
    }

    fn in_namespace(mut object: Value, ns: &str) -> Value {
        object["metadata"]["namespace"] = json!(ns);
        object
    }

    #[test]
    fn excluded_namespaces_are_skipped_and_said_and_locations_name_the_namespace() {
        let config_map =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
        let files = [(
            PathBuf::from("all.yaml"),
            vec![
                in_namespace(pod("coredns", &["r.example/dns:v1"]), "kube-system"),
                in_namespace(config_map, "kube-system"),
                in_namespace(pod("web", &["r.example/app:v1"]), "team-a"),
                pod("bare", &["r.example/bare:v1"]),
            ],
        )];
        let options = ManifestOptions {
            excluded_namespaces: BTreeSet::from(["kube-system".into(), "ocigate-system".into()]),
            ..ManifestOptions::default()
        };
        let found = block_on(manifest_sources(&files, &options));
        // The ConfigMap names nothing to check: not said.
        assert_eq!(found.skipped.len(), 1, "{found:?}");
        assert_eq!(
            found.skipped[0].object.to_string(),
            "all.yaml Pod kube-system/coredns"
        );
        assert!(
            found.skipped[0]
                .reason
                .starts_with("namespace kube-system is excluded from the webhook"),
            "{found:?}"
        );
        let first: Vec<_> = found
            .sources
            .iter()
            .map(|s| s.found_in[0].to_string())
            .collect();
        assert_eq!(
            first,
            [
                "all.yaml Pod team-a/web spec.containers[0].image",
                "all.yaml Pod bare spec.containers[0].image"
            ]
        );
        assert_eq!(
            serde_json::to_value(&found.sources[0].found_in[0]).unwrap(),
            json!({"file": "all.yaml", "kind": "Pod", "namespace": "team-a", "name": "web",
                   "fieldPath": "spec.containers[0].image"})
        );
        // With a namespace for objects that name none, the bare Pod is in it, and excluded.
        let options = ManifestOptions {
            namespace: Some("kube-system".into()),
            ..options
        };
        let found = block_on(manifest_sources(&files, &options));
        assert_eq!(found.skipped.len(), 2, "{found:?}");
        assert_eq!(
            found.skipped[1].object.to_string(),
            "all.yaml Pod kube-system/bare"
        );
        assert_eq!(found.sources.len(), 1, "{found:?}");
    }

    #[test]
    fn a_namespace_labelled_to_be_ignored_among_the_documents_is_skipped() {
        let ns = |name: &str, ignore: &str| {
            json!({"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": name, "labels": {IGNORE_LABEL: ignore}}})
        };
        let files = [(
            PathBuf::from("all.yaml"),
            vec![
                ns("sandbox", "true"),
                ns("team-a", "false"),
                in_namespace(pod("toy", &["r.example/toy:v1"]), "sandbox"),
                in_namespace(pod("web", &["r.example/app:v1"]), "team-a"),
            ],
        )];
        let found = block_on(manifest_sources(&files, &ManifestOptions::default()));
        assert_eq!(found.skipped.len(), 1, "{found:?}");
        assert_eq!(
            found.skipped[0].object.to_string(),
            "all.yaml Pod sandbox/toy"
        );
        assert!(
            found.skipped[0]
                .reason
                .contains("labelled ocigate.dev/ignore: \"true\""),
            "{found:?}"
        );
        assert_eq!(
            found.sources.len(),
            1,
            "only team-a's Pod is checked: {found:?}"
        );
    }

    #[test]
    fn a_missing_reference_says_where_it_was_looked_for() {
        let release = json!({"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
            "metadata": {"name": "rel", "namespace": "apps"},
            "spec": {"chart": {"spec": {"chart": "c", "version": "1.0.0",
                "sourceRef": {"kind": "HelmRepository", "name": "charts"}}}}});
        let files = [(PathBuf::from("r.yaml"), vec![release])];
        let problem = |m: &Manifests| match &m.sources[0].source.artifact {
            Artifact::Invalid { problem, .. } => problem.clone(),
            other => panic!("{other:?}"),
        };
        let options = ManifestOptions::default();
        let alone = block_on(manifest_sources(&files, &options));
        assert!(
            problem(&alone).starts_with(
                "HelmRepository apps/charts not found: it is not among the documents given"
            ) && problem(&alone).contains("--kubeconfig"),
            "{alone:?}"
        );
        let empty = DocumentSet::new(Vec::new());
        let neither = block_on(manifest_sources_with(&files, &options, &empty));
        assert_eq!(
            problem(&neither),
            "HelmRepository apps/charts not found: neither among the documents nor in the cluster"
        );
        let repo = json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "HelmRepository",
            "metadata": {"name": "charts", "namespace": "apps"},
            "spec": {"type": "oci", "url": "oci://r.example/charts"}});
        let cluster = DocumentSet::new(vec![repo]);
        let found = block_on(manifest_sources_with(&files, &options, &cluster));
        assert_eq!(
            crate::extract::test_support::reference(&found.sources[0].source.artifact),
            "r.example/charts/c:1.0.0"
        );
    }
}
