//! What is running now (`ocigate audit`): every object of the audited kinds listed from the
//! cluster a page at a time, read as the webhook reads an admitted object, each distinct OCI
//! source checked once by the engine (caches, single flight, a pace for registry requests), and
//! where each was found: namespace, owning workload, object, field. Must not print (the CLI
//! does) nor write to the cluster.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use serde::Serialize;
use serde_json::Value;

use crate::engine::{Decision, Engine};
use crate::extract::{
    IGNORE_LABEL, Location, ManifestOptions, PodTemplateKind, PodTemplateKinds, Skipped, Source,
    Unverified,
};
use crate::kube::{ApiLookup, KubeApi, KubeApiError, MAX_PAGES, Resource};
use crate::policy::NamespaceContext;
use crate::registry::{Pace, RequestCredentials, with_pace, with_request_credentials};

mod lease;
mod owner;
mod periodic;
mod pull;
mod report;

pub(crate) use lease::Elector;
pub(crate) use owner::Workload;
pub(crate) use periodic::{AuditStats, Periodic};

/// The kinds audited, each with the versions tried in turn (a cluster may still serve only an
/// older one): Pods, and the Flux and Kluctl sources the webhook checks.
const AUDITED: [(&str, &str, &[&str]); 5] = [
    ("Pod", "pods", &["v1"]),
    (
        "OCIRepository",
        "ocirepositories",
        &[
            "source.toolkit.fluxcd.io/v1",
            "source.toolkit.fluxcd.io/v1beta2",
        ],
    ),
    (
        "HelmChart",
        "helmcharts",
        &[
            "source.toolkit.fluxcd.io/v1",
            "source.toolkit.fluxcd.io/v1beta2",
        ],
    ),
    (
        "HelmRelease",
        "helmreleases",
        &[
            "helm.toolkit.fluxcd.io/v2",
            "helm.toolkit.fluxcd.io/v2beta2",
            "helm.toolkit.fluxcd.io/v2beta1",
        ],
    ),
    (
        "KluctlDeployment",
        "kluctldeployments",
        &["gitops.kluctl.io/v1beta1"],
    ),
];

/// Why the cluster could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum AuditError {
    /// A namespace's labels, which a rule's `namespaceSelector` needs, could not be read.
    #[error("audit: cannot read the labels of namespace {namespace}")]
    Labels {
        /// The namespace.
        namespace: String,
        /// Why.
        #[source]
        source: KubeApiError,
    },
    /// Listing a kind failed.
    #[error("audit: cannot list {kind}")]
    List {
        /// The kind.
        kind: String,
        /// Why.
        #[source]
        source: KubeApiError,
    },
    /// A kind had more pages than [`MAX_PAGES`], or the API answered the same page again.
    #[error("audit: {kind} did not end within {MAX_PAGES} pages; not read to the end")]
    TooManyPages {
        /// The kind.
        kind: String,
    },
}

/// How the cluster is read: as the webhook would see its objects.
#[derive(Debug, Clone, Default)]
pub(crate) struct AuditOptions {
    /// Namespaces the webhook is not called for: their objects are [`Skipped`].
    pub(crate) excluded_namespaces: BTreeSet<String>,
    /// Follow Flux references into other namespaces.
    pub(crate) cross_namespace_refs: bool,
    /// Check each artifact per namespace it runs in (the policy has namespace-scoped rules).
    pub(crate) by_namespace: bool,
    /// Read each namespace's labels (a rule has a `namespaceSelector`).
    pub(crate) namespace_labels: bool,
    /// Custom kinds whose pod templates are read (`--pod-template-kind`, `--pod-template-preset`):
    /// listed too, and read as the webhook reads them.
    pub(crate) pod_templates: Arc<PodTemplateKinds>,
}

impl AuditOptions {
    /// Whether checks must know their namespace (and its labels) under `policy`.
    pub(crate) fn for_policy(mut self, policy: &crate::policy::Policy) -> Self {
        self.by_namespace = policy.has_namespace_rules();
        self.namespace_labels = policy.needs_namespace_labels();
        self
    }
}

/// One place a source was found: the namespace, the workload that owns the object (the object
/// itself when nothing does), the object and its field.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Place {
    /// The namespace; `None` for a cluster-scoped object.
    pub(crate) namespace: Option<String>,
    /// The owning workload.
    pub(crate) workload: Workload,
    /// The object, `KIND NAME`.
    pub(crate) object: String,
    /// The field, e.g. `spec.containers[0].image`.
    pub(crate) field: String,
}

/// How many objects of one kind were read; `api_version: None` when the cluster serves none of
/// its versions (the CRD is not installed).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Listed {
    /// The kind.
    pub(crate) kind: String,
    /// The version read.
    pub(crate) api_version: Option<String>,
    /// Objects read.
    pub(crate) objects: usize,
}

/// One source to check: every place it was found, and the pull credentials of the Pods there
/// (one check per set of credentials: a namespace's secrets serve only its own Pods).
#[derive(Debug)]
pub(crate) struct Audited {
    /// The source.
    pub(crate) source: Source,
    /// Where it was found.
    pub(crate) places: Vec<Place>,
    /// The Pods' pull credentials; `None`: only the audit's own.
    pub(crate) credentials: Option<RequestCredentials>,
    /// The namespace it is checked for, when the policy's rules depend on it.
    pub(crate) namespace: Option<NamespaceContext>,
}

/// What the cluster runs: each OCI source once (per set of pull credentials) with every place
/// found, what is fetched but not OCI, the objects skipped, and what was listed.
#[derive(Debug, Default)]
pub(crate) struct Inventory {
    /// Each source once per set of pull credentials, with every place.
    pub(crate) sources: Vec<Audited>,
    /// What is fetched but not OCI (nothing verifies it).
    pub(crate) unverified: Vec<(Place, Unverified)>,
    /// Objects in namespaces the webhook is not called for.
    pub(crate) skipped: Vec<Skipped>,
    /// What was listed, kind by kind.
    pub(crate) listed: Vec<Listed>,
}

/// One source checked: the decision, and every place it runs.
pub(crate) struct Finding {
    /// The engine's decision.
    pub(crate) decision: Decision,
    /// Where it was found.
    pub(crate) places: Vec<Place>,
}

/// Reads every audited kind from the cluster.
pub(crate) async fn inventory(
    api: &KubeApi,
    options: &AuditOptions,
) -> Result<Inventory, AuditError> {
    let mut out = Inventory::default();
    let mut index = HashMap::new();
    let mut pods = Pods::default();
    for (kind, plural, versions) in AUDITED {
        let mut listed = Listed {
            kind: kind.into(),
            api_version: None,
            objects: 0,
        };
        for version in versions {
            let resource = Resource {
                api_version: (*version).into(),
                kind: kind.into(),
                plural: plural.into(),
            };
            let read = list_kind_anew(api, &resource, options, &mut pods, &mut out, &mut index);
            if let Some(n) = read.await? {
                listed.api_version = Some((*version).into());
                listed.objects = n;
                break;
            }
        }
        out.listed.push(listed);
    }
    for kind in options.pod_templates.iter() {
        let mut listed = Listed {
            kind: kind.kind.clone(),
            api_version: None,
            objects: 0,
        };
        if let Some(resource) = custom_resource(api, kind).await? {
            let read = list_kind_anew(api, &resource, options, &mut pods, &mut out, &mut index);
            if let Some(n) = read.await? {
                listed.api_version = Some(resource.api_version);
                listed.objects = n;
            }
        }
        out.listed.push(listed);
    }
    Ok(out)
}

/// Where a custom kind is listed: its preset's plural, else the one the API's discovery names
/// for it; `None` when the API does not serve its group and version.
async fn custom_resource(
    api: &KubeApi,
    kind: &PodTemplateKind,
) -> Result<Option<Resource>, AuditError> {
    let api_version = kind.api_version();
    let plural = match &kind.resource {
        Some(plural) => Some(plural.clone()),
        None => {
            let failed = |source| AuditError::List {
                kind: kind.kind.clone(),
                source,
            };
            let found = api
                .fresh(&format!("/apis/{api_version}"))
                .await
                .map_err(failed)?;
            found.as_ref().and_then(|list| plural_of(list, &kind.kind))
        }
    };
    Ok(plural.map(|plural| Resource {
        api_version,
        kind: kind.kind.clone(),
        plural,
    }))
}

/// The resource of `kind` in a discovery document (an APIResourceList), not a subresource.
fn plural_of(list: &Value, kind: &str) -> Option<String> {
    list["resources"]
        .as_array()?
        .iter()
        .filter(|r| r["kind"] == kind)
        .filter_map(|r| r["name"].as_str())
        .find(|name| !name.contains('/'))
        .map(str::to_string)
}

/// Times a kind's list is started again after its continue token expired.
const MAX_LIST_RESTARTS: usize = 2;

/// [`list_kind`], started again from its first page (what it had merged into `out` taken
/// back) when the API says its continue token expired (HTTP 410, as client-go's pager does:
/// etcd compacted the revision the list was reading), at most [`MAX_LIST_RESTARTS`] times.
async fn list_kind_anew(
    api: &KubeApi,
    resource: &Resource,
    options: &AuditOptions,
    pods: &mut Pods,
    out: &mut Inventory,
    index: &mut HashMap<(String, String, String), usize>,
) -> Result<Option<usize>, AuditError> {
    let mut restarts = 0;
    loop {
        let mark = out.mark();
        match list_kind(api, resource, options, pods, out, index).await {
            Err(AuditError::List {
                source: KubeApiError::Status { status: 410, .. },
                ..
            }) if restarts < MAX_LIST_RESTARTS => {
                out.roll_back(mark, index);
                restarts += 1;
            }
            read => return read,
        }
    }
}

/// How far an [`Inventory`] had grown: what [`Inventory::roll_back`] returns it to.
struct Mark {
    sources: usize,
    places: Vec<usize>,
    unverified: usize,
    skipped: usize,
}

impl Inventory {
    fn mark(&self) -> Mark {
        Mark {
            sources: self.sources.len(),
            places: self.sources.iter().map(|s| s.places.len()).collect(),
            unverified: self.unverified.len(),
            skipped: self.skipped.len(),
        }
    }

    /// Back to `mark`: the sources, places and notes added since taken out of `self` and of
    /// `index`.
    fn roll_back(&mut self, mark: Mark, index: &mut HashMap<(String, String, String), usize>) {
        self.sources.truncate(mark.sources);
        for (source, places) in self.sources.iter_mut().zip(mark.places) {
            source.places.truncate(places);
        }
        self.unverified.truncate(mark.unverified);
        self.skipped.truncate(mark.skipped);
        index.retain(|_, i| *i < mark.sources);
    }
}

/// Every page of `resource`, each read as manifests and merged into `out`; `None` when the
/// cluster does not serve it.
async fn list_kind(
    api: &KubeApi,
    resource: &Resource,
    options: &AuditOptions,
    pods: &mut Pods,
    out: &mut Inventory,
    index: &mut HashMap<(String, String, String), usize>,
) -> Result<Option<usize>, AuditError> {
    let failed = |source| AuditError::List {
        kind: resource.kind.clone(),
        source,
    };
    let mut next: Option<String> = None;
    let mut objects = 0;
    for _ in 0..MAX_PAGES {
        let Some(page) = api
            .list_page(resource, next.as_deref())
            .await
            .map_err(failed)?
        else {
            return Ok(None);
        };
        objects += page.items.len();
        for pod in page.items.iter().filter(|o| o["kind"] == "Pod") {
            pods.owners.learn(api, pod).await;
            pods.pulls.learn(api, pod).await;
        }
        pods.learn_namespaces(api, &page.items, options).await?;
        let at = (resource.api_version.as_str(), page.items);
        read_page(api, at, options, pods, out, index).await;
        match page.next {
            None => return Ok(Some(objects)),
            // The same page again would be read until the bound: refused at once.
            Some(n) if next.as_deref() == Some(n.as_str()) => break,
            Some(n) => next = Some(n),
        }
    }
    Err(AuditError::TooManyPages {
        kind: resource.kind.clone(),
    })
}

/// What is known of the objects read: Pods' workloads and pull credentials, and the namespaces
/// checks are made for.
#[derive(Default)]
struct Pods {
    owners: owner::Owners,
    pulls: pull::Pulls,
    namespaces: HashMap<String, NamespaceContext>,
    /// Namespaces whose labels were read (or could not be, where no rule needs them).
    looked_at: BTreeSet<String>,
    /// Namespaces labelled `ocigate.dev/ignore: "true"`: the webhook's namespaceSelector
    /// leaves them out, so the audit does too.
    ignored: BTreeSet<String>,
}

impl Pods {
    /// The namespaces of `items` as checks see them (with their labels when a rule needs
    /// them), each read once; those labelled [`IGNORE_LABEL`] are left out as the webhook's
    /// namespaceSelector leaves them out. Labels that cannot be read are an error only when a
    /// rule needs them (else the namespace counts as not ignored).
    async fn learn_namespaces(
        &mut self,
        api: &KubeApi,
        items: &[Value],
        options: &AuditOptions,
    ) -> Result<(), AuditError> {
        for ns in items
            .iter()
            .filter_map(|o| o["metadata"]["namespace"].as_str())
        {
            if !self.looked_at.insert(ns.to_string()) {
                continue;
            }
            let labels = match api.namespace_labels(ns).await {
                Ok(labels) => labels.unwrap_or_default(),
                Err(source) if options.namespace_labels => {
                    let namespace = ns.to_string();
                    return Err(AuditError::Labels { namespace, source });
                }
                Err(_) => BTreeMap::new(),
            };
            if labels.get(IGNORE_LABEL).is_some_and(|v| v == "true") {
                self.ignored.insert(ns.to_string());
            }
            if options.by_namespace {
                let mut context = NamespaceContext::named(ns);
                context.labels = options.namespace_labels.then_some(labels);
                self.namespaces.insert(ns.to_string(), context);
            }
        }
        Ok(())
    }

    /// The namespace a check of what was found at `l` is made for.
    fn namespace_of(&self, l: &Location) -> Option<&NamespaceContext> {
        self.namespaces.get(l.namespace.as_ref()?)
    }
}

/// One page's objects read as the webhook reads them (`extract`'s manifests reading, with the
/// cluster for referenced objects), merged into `out` by source and pull credentials.
async fn read_page(
    api: &KubeApi,
    (api_version, items): (&str, Vec<Value>),
    options: &AuditOptions,
    pods: &Pods,
    out: &mut Inventory,
    index: &mut HashMap<(String, String, String), usize>,
) {
    let manifest_options = ManifestOptions {
        cross_namespace_refs: options.cross_namespace_refs,
        namespace: None,
        excluded_namespaces: options
            .excluded_namespaces
            .union(&pods.ignored)
            .cloned()
            .collect(),
        pod_templates: options.pod_templates.clone(),
    };
    let cluster = ApiLookup {
        api: Some(api),
        namespace: None,
        cross_namespace_refs: options.cross_namespace_refs,
    };
    let files = [(PathBuf::from("cluster"), items)];
    let found = crate::extract::manifest_sources_with(&files, &manifest_options, &cluster).await;
    for f in found.sources {
        for l in &f.found_in {
            let place = pods.owners.place(l, api_version);
            let pull = pods.pulls.of(l);
            let namespace = pods.namespace_of(l);
            let key = (
                f.source.key(),
                pull.map_or(String::new(), |(k, _)| k.to_string()),
                namespace.map_or(String::new(), |n| n.name.clone()),
            );
            match index.get(&key) {
                Some(&i) => out.sources[i].places.push(place),
                None => {
                    index.insert(key, out.sources.len());
                    out.sources.push(Audited {
                        source: f.source.clone(),
                        places: vec![place],
                        credentials: pull.map(|(_, c)| c.clone()),
                        namespace: namespace.cloned(),
                    });
                }
            }
        }
    }
    out.unverified.extend(
        found
            .unverified
            .into_iter()
            .map(|(l, u)| (pods.owners.place(&l, api_version), u)),
    );
    out.skipped.extend(found.skipped);
}

/// Checks each source once, `jobs` at once, every registry request under `pace`; the findings
/// in the inventory's order.
pub(crate) async fn check(
    engine: &Engine,
    sources: Vec<Audited>,
    jobs: usize,
    pace: Option<Pace>,
    deadline: Duration,
) -> Vec<Finding> {
    let checks = sources.into_iter().map(|a| {
        let (engine, pace) = (engine.clone(), pace.clone());
        async move {
            let run = async {
                let check = engine.check_source_in(&a.source, a.namespace.as_ref(), deadline);
                match a.credentials {
                    Some(c) => with_request_credentials(c, check).await,
                    None => check.await,
                }
            };
            let decision = match pace {
                Some(p) => with_pace(p, run).await,
                None => run.await,
            };
            Finding {
                decision,
                places: a.places,
            }
        }
    });
    futures_util::stream::iter(checks)
        .buffered(jobs.max(1))
        .collect()
        .await
}

/// Each workload's artifacts: the decision and the workload's own places it was found in.
pub(crate) type WorkloadFindings<'a> = Vec<(&'a Decision, Vec<&'a Place>)>;

/// The findings grouped by namespace (`None`: cluster-scoped) then workload, each workload's
/// findings with only its own places.
pub(crate) fn by_workload(
    findings: &[Finding],
) -> BTreeMap<Option<String>, BTreeMap<Workload, WorkloadFindings<'_>>> {
    let mut out: BTreeMap<_, BTreeMap<_, Vec<_>>> = BTreeMap::new();
    for f in findings {
        let mut mine: BTreeMap<(&Option<String>, &Workload), Vec<&Place>> = BTreeMap::new();
        for p in &f.places {
            mine.entry((&p.namespace, &p.workload)).or_default().push(p);
        }
        for ((ns, w), places) in mine {
            out.entry(ns.clone())
                .or_default()
                .entry(w.clone())
                .or_default()
                .push((&f.decision, places));
        }
    }
    out
}

/// A location of the manifests reading as the workload's object: `KIND NAME`.
fn object_of(l: &Location) -> String {
    format!(
        "{} {}",
        l.kind.as_deref().unwrap_or("?"),
        l.name.as_deref().unwrap_or("?")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// An API server serving two pages of Pods whose second page answers 410 Gone the first
    /// time it is asked; everything else is not served.
    fn expiring_pages() -> Result<KubeApi, Box<dyn std::error::Error>> {
        let second_asked = AtomicUsize::new(0);
        let pod = |name: &str| {
            format!(
                r#"{{"metadata":{{"name":"{name}","namespace":"a"}},"spec":{{"containers":[{{"name":"c","image":"reg.example/{name}:1"}}]}}}}"#
            )
        };
        crate::kube::fake::api(64, move |request| {
            if !request.starts_with("GET /api/v1/pods?") {
                ("404 Not Found", r#"{"kind":"Status"}"#.to_string())
            } else if !request.contains("continue=") {
                let items = pod("one");
                (
                    "200 OK",
                    format!(r#"{{"metadata":{{"continue":"tok"}},"items":[{items}]}}"#),
                )
            } else if second_asked.fetch_add(1, Ordering::SeqCst) == 0 {
                (
                    "410 Gone",
                    r#"{"kind":"Status","reason":"Expired"}"#.to_string(),
                )
            } else {
                (
                    "200 OK",
                    format!(r#"{{"metadata":{{}},"items":[{}]}}"#, pod("two")),
                )
            }
        })
    }

    /// A continue token that expired (410) starts the kind's list again, and what its first
    /// pages had added is taken back first: each Pod is found once. Before, the run failed.
    #[test]
    fn an_expired_continue_token_starts_the_list_again() {
        let api = expiring_pages().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let inventory = rt
            .block_on(inventory(&api, &AuditOptions::default()))
            .unwrap();
        assert_eq!(inventory.sources.len(), 2, "{:?}", inventory.sources);
        assert!(inventory.sources.iter().all(|s| s.places.len() == 1));
        assert_eq!(inventory.listed[0].objects, 2);
    }
}
