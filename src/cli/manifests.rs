//! What `verify --manifests` reads: the files parsed, their objects extracted as the webhook
//! would (its excluded namespaces, `--namespace`, references from the documents, then with
//! `--kubeconfig` from the cluster through `kube`). Part of the plan: it must not check or print.

use std::path::PathBuf;

use super::args::VerifyArgs;
use super::namespace::{NamespacedSource, documented, split};
use super::output::Reported;
use super::{CliError, boxed};
use crate::engine::Decision;
use crate::error_chain;
use crate::extract::{Location, ManifestOptions, Skipped};
use crate::kube::{ApiLookup, KubeApi};
use crate::policy::{Policy, Verdict};

/// What `--manifests` found: each OCI source once with every place it was found; a warn result
/// for each source the cluster would fetch that is not OCI (nothing verifies it); the objects
/// skipped.
pub(crate) struct FoundManifests {
    /// Each OCI source once (once per namespace when the policy names namespaces), with
    /// every place it was found.
    pub(crate) sources: Vec<NamespacedSource>,
    /// A warn result for each source that is not OCI.
    pub(crate) unverified: Vec<Reported>,
    /// The objects in excluded namespaces.
    pub(crate) skipped: Vec<Skipped>,
}

/// `--manifests`, when given: the files read (see [`read`]); what is not OCI goes to `settled`.
pub(crate) async fn read_all(
    a: &VerifyArgs,
    policy: &Policy,
    settled: &mut Vec<Reported>,
) -> Result<(Vec<NamespacedSource>, Vec<Skipped>), CliError> {
    if a.manifests.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let files = super::files::read_manifests(&a.manifests)?;
    let found = read(files, a, policy).await?;
    settled.extend(found.unverified);
    Ok((found.sources, found.skipped))
}

/// The manifest files read as the webhook would read their objects: its excluded namespaces,
/// objects without a namespace in `--namespace` (or the kubeconfig's), referenced objects
/// from the documents, then with `--kubeconfig` from the cluster; each source is checked in
/// the namespace of the objects naming it.
pub(crate) async fn read(
    files: Vec<(PathBuf, String)>,
    a: &VerifyArgs,
    policy: &Policy,
) -> Result<FoundManifests, CliError> {
    let mut parsed = Vec::with_capacity(files.len());
    for (file, text) in files {
        let docs = crate::extract::parse_documents(&text).map_err(|e| {
            CliError::Usage(format!(
                "--manifests {}: {}",
                file.display(),
                error_chain(&e)
            ))
        })?;
        parsed.push((file, docs));
    }
    let api = match &a.kubeconfig {
        Some(f) => Some(KubeApi::from_kubeconfig(f).map_err(boxed)?),
        None => None,
    };
    let namespace = a.namespace.clone().or_else(|| {
        api.as_ref()
            .map(|api| api.namespace().unwrap_or("default").to_string())
    });
    let options = ManifestOptions {
        cross_namespace_refs: a.allow_cross_namespace_refs,
        namespace: namespace.clone(),
        excluded_namespaces: a
            .exclude_namespace
            .iter()
            .filter(|n| !n.is_empty())
            .cloned()
            .collect(),
        pod_templates: a.pod_templates.kinds()?,
    };
    let found = match &api {
        Some(api) => {
            let cluster = ApiLookup {
                api: Some(api),
                namespace,
                cross_namespace_refs: a.allow_cross_namespace_refs,
            };
            crate::extract::manifest_sources_with(&parsed, &options, &cluster).await
        }
        None => crate::extract::manifest_sources(&parsed, &options).await,
    };
    let unverified = found
        .unverified
        .into_iter()
        .map(|(found_in, u)| unverified_decision(found_in, u))
        .collect();
    let documents = documented(&parsed);
    let sources = split(found.sources, &documents, a, api.as_ref(), policy).await;
    Ok(FoundManifests {
        sources,
        unverified,
        skipped: found.skipped,
    })
}

/// A warn result for a source the cluster would fetch that is not OCI: nothing verifies it.
fn unverified_decision(found_in: Location, u: crate::extract::Unverified) -> Reported {
    let d = Decision::without_signatures(u.what, None, Verdict::Warn, None, u.reason, None);
    Reported::found(d, vec![found_in])
}
