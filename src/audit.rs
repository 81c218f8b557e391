//! What is running now (`ocigate audit`): every object of the audited kinds listed from the
//! cluster a page at a time, read as the webhook reads an admitted object, each distinct OCI
//! source checked once by the engine (caches, single flight, a pace for registry requests), and
//! where each was found: namespace, owning workload, object, field. Must not print (the CLI
//! does) nor write to the cluster.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use futures_util::StreamExt as _;
use serde::Serialize;
use serde_json::Value;

use crate::engine::{Decision, Engine};
use crate::extract::{Location, ManifestOptions, Skipped, Source, Unverified};
use crate::kube::{ApiLookup, KubeApi, KubeApiError, MAX_PAGES, Resource};
use crate::registry::{Pace, with_pace};

mod lease;
mod owner;
mod periodic;
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
    /// Listing a kind failed.
    #[error("audit: cannot list {kind}")]
    List {
        /// The kind.
        kind: String,
        /// Why.
        #[source]
        source: KubeApiError,
    },
    /// A kind had more pages than [`MAX_PAGES`].
    #[error("audit: {kind} has more than {MAX_PAGES} pages; not read to the end")]
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

/// What the cluster runs: each OCI source once with every place found, what is fetched but not
/// OCI, the objects skipped, and what was listed.
#[derive(Debug, Default)]
pub(crate) struct Inventory {
    /// Each source once, with every place.
    pub(crate) sources: Vec<(Source, Vec<Place>)>,
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
    let mut owners = owner::Owners::default();
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
            let read = list_kind(api, &resource, options, &mut owners, &mut out, &mut index);
            if let Some(n) = read.await? {
                listed.api_version = Some((*version).into());
                listed.objects = n;
                break;
            }
        }
        out.listed.push(listed);
    }
    Ok(out)
}

/// Every page of `resource`, each read as manifests and merged into `out`; `None` when the
/// cluster does not serve it.
async fn list_kind(
    api: &KubeApi,
    resource: &Resource,
    options: &AuditOptions,
    owners: &mut owner::Owners,
    out: &mut Inventory,
    index: &mut HashMap<String, usize>,
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
            owners.learn(api, pod).await;
        }
        let at = (resource.api_version.as_str(), page.items);
        read_page(api, at, options, owners, out, index).await;
        next = page.next;
        if next.is_none() {
            return Ok(Some(objects));
        }
    }
    Err(AuditError::TooManyPages {
        kind: resource.kind.clone(),
    })
}

/// One page's objects read as the webhook reads them (`extract`'s manifests reading, with the
/// cluster for referenced objects), merged into `out` by source.
async fn read_page(
    api: &KubeApi,
    (api_version, items): (&str, Vec<Value>),
    options: &AuditOptions,
    owners: &owner::Owners,
    out: &mut Inventory,
    index: &mut HashMap<String, usize>,
) {
    let manifest_options = ManifestOptions {
        cross_namespace_refs: options.cross_namespace_refs,
        namespace: None,
        excluded_namespaces: options.excluded_namespaces.clone(),
        // The kinds listed (AUDITED) are none of the configured custom kinds.
        pod_templates: Default::default(),
    };
    let cluster = ApiLookup {
        api: Some(api),
        namespace: None,
        cross_namespace_refs: options.cross_namespace_refs,
    };
    let files = [(PathBuf::from("cluster"), items)];
    let found = crate::extract::manifest_sources_with(&files, &manifest_options, &cluster).await;
    for f in found.sources {
        let places = f.found_in.iter().map(|l| owners.place(l, api_version));
        match index.get(&f.source.key()) {
            Some(&i) => out.sources[i].1.extend(places),
            None => {
                index.insert(f.source.key(), out.sources.len());
                out.sources.push((f.source, places.collect()));
            }
        }
    }
    out.unverified.extend(
        found
            .unverified
            .into_iter()
            .map(|(l, u)| (owners.place(&l, api_version), u)),
    );
    out.skipped.extend(found.skipped);
}

/// Checks each source once, `jobs` at once, every registry request under `pace`; the findings
/// in the inventory's order.
pub(crate) async fn check(
    engine: &Engine,
    sources: Vec<(Source, Vec<Place>)>,
    jobs: usize,
    pace: Option<Pace>,
    deadline: Duration,
) -> Vec<Finding> {
    let checks = sources.into_iter().map(|(source, places)| {
        let (engine, pace) = (engine.clone(), pace.clone());
        async move {
            let run = engine.check_source(&source, deadline);
            let decision = match pace {
                Some(p) => with_pace(p, run).await,
                None => run.await,
            };
            Finding { decision, places }
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
