//! The namespace each `verify` check is evaluated in: `--namespace` for references (labels
//! from `--namespace-label` or `--kubeconfig`), each object's for `--manifests` (labels from
//! Namespace documents among them, the flags, or the cluster). Part of the plan: it must not
//! check anything (beyond handing a source to the engine) or print.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::args::VerifyArgs;
use super::{CliError, boxed};
use crate::engine::{Decision, Engine};
use crate::extract::FoundSource;
use crate::failure::Failure;
use crate::kube::KubeApi;
use crate::policy::{NamespaceContext, Policy, Verdict};

/// The label the API server sets on every Namespace (its name), so a selector may use it.
pub(crate) const NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// A source `--manifests` found, to be checked in one namespace: the places found in it.
pub(crate) struct NamespacedSource {
    /// The source and the places in this namespace where it was found.
    pub(crate) found: FoundSource,
    /// The namespace (None: the objects name none and no `--namespace` was given, or the
    /// policy names no namespace, so it does not matter).
    pub(crate) namespace: Option<NamespaceContext>,
    /// Why the namespace's labels, which a rule's namespaceSelector needs, are not known: the
    /// check is then a deny with this reason, never a fall back to the cluster-wide rules.
    pub(crate) labels_unknown: Option<String>,
}

impl NamespacedSource {
    /// Its decision: the engine's check in its namespace, or the deny for unknown labels.
    pub(crate) async fn check(&self, engine: &Engine, deadline: Duration) -> Decision {
        let source = &self.found.source;
        match &self.labels_unknown {
            Some(reason) => Decision::without_signatures(
                source.artifact.to_string(),
                None,
                Verdict::Deny,
                None,
                reason.clone(),
                Some(Failure::Policy),
            ),
            None => {
                engine
                    .check_source_in(source, self.namespace.as_ref(), deadline)
                    .await
            }
        }
    }
}

/// A namespace known by name, with the label the API server gives every Namespace (the
/// labels a command line states: more come from the flags, the documents or the cluster).
fn named(name: &str) -> NamespaceContext {
    let labels = BTreeMap::from([(NAME_LABEL.to_string(), name.to_string())]);
    NamespaceContext::with_labels(name, labels)
}

/// `--namespace` for the references given: None without it (or without references); its
/// labels from `--namespace-label`, else (when a rule selects by label) read with
/// `--kubeconfig`.
pub(crate) async fn for_references(
    a: &VerifyArgs,
    references: &[crate::reference::ImageRef],
    policy: &Policy,
) -> Result<Option<NamespaceContext>, CliError> {
    let (Some(name), false) = (&a.namespace, references.is_empty()) else {
        return Ok(None);
    };
    let mut ns = named(name);
    if !a.namespace_label.is_empty() {
        ns.labels
            .get_or_insert_default()
            .extend(a.namespace_label.iter().cloned());
        return Ok(Some(ns));
    }
    if let (Some(file), true) = (&a.kubeconfig, policy.needs_namespace_labels()) {
        let api = KubeApi::from_kubeconfig(file).map_err(boxed)?;
        match api.namespace_labels(name).await.map_err(boxed)? {
            Some(labels) => ns.labels = Some(labels),
            None => {
                return Err(CliError::Usage(format!(
                    "--namespace {name}: the cluster of --kubeconfig has no such Namespace"
                )));
            }
        }
    }
    Ok(Some(ns))
}

/// The labels of the Namespace documents among the manifests, by name (the first of a name).
pub(crate) fn documented(parsed: &[(std::path::PathBuf, Vec<Value>)]) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for doc in parsed.iter().flat_map(|(_, docs)| docs) {
        let is_namespace = doc.get("apiVersion").and_then(Value::as_str) == Some("v1")
            && doc.get("kind").and_then(Value::as_str) == Some("Namespace");
        let name = doc.pointer("/metadata/name").and_then(Value::as_str);
        if let (true, Some(name)) = (is_namespace, name) {
            out.entry(name.to_string()).or_insert_with(|| doc.clone());
        }
    }
    out
}

/// Each source once per namespace it was found in (in the order found), with that namespace
/// and its labels, when the policy names namespaces; otherwise each source once, as before.
pub(crate) async fn split(
    found: Vec<FoundSource>,
    documents: &BTreeMap<String, Value>,
    a: &VerifyArgs,
    api: Option<&KubeApi>,
    policy: &Policy,
) -> Vec<NamespacedSource> {
    if !policy.has_namespace_rules() {
        let whole = |found| NamespacedSource {
            found,
            namespace: None,
            labels_unknown: None,
        };
        return found.into_iter().map(whole).collect();
    }
    let mut contexts: BTreeMap<String, Result<NamespaceContext, String>> = BTreeMap::new();
    let mut out = Vec::new();
    for FoundSource { found_in, source } in found {
        let mut groups: Vec<(Option<String>, Vec<_>)> = Vec::new();
        for place in found_in {
            match groups.iter_mut().find(|(ns, _)| *ns == place.namespace) {
                Some((_, places)) => places.push(place),
                None => groups.push((place.namespace.clone(), vec![place])),
            }
        }
        for (ns, places) in groups {
            let context = match &ns {
                None => Ok(None),
                Some(name) => {
                    if !contexts.contains_key(name) {
                        let c = context(name, documents, a, api, policy).await;
                        contexts.insert(name.clone(), c);
                    }
                    contexts
                        .get(name)
                        .cloned()
                        .map_or(Ok(None), |c| c.map(Some))
                }
            };
            let (namespace, labels_unknown) = match context {
                Ok(c) => (c, None),
                Err(reason) => (ns.as_deref().map(named), Some(reason)),
            };
            out.push(NamespacedSource {
                found: FoundSource {
                    found_in: places,
                    source: source.clone(),
                },
                namespace,
                labels_unknown,
            });
        }
    }
    out
}

/// One namespace of the manifests: its name, and its labels when a rule needs them (from its
/// Namespace document, `--namespace-label` for `--namespace`, or the cluster); `Err` says why
/// they are not known.
async fn context(
    name: &str,
    documents: &BTreeMap<String, Value>,
    a: &VerifyArgs,
    api: Option<&KubeApi>,
    policy: &Policy,
) -> Result<NamespaceContext, String> {
    let mut ns = named(name);
    if let Some(doc) = documents.get(name) {
        ns.labels
            .get_or_insert_default()
            .extend(crate::kube::labels_of(doc));
        return Ok(ns);
    }
    if a.namespace.as_deref() == Some(name) && !a.namespace_label.is_empty() {
        ns.labels
            .get_or_insert_default()
            .extend(a.namespace_label.iter().cloned());
        return Ok(ns);
    }
    if !policy.needs_namespace_labels() {
        return Ok(ns);
    }
    let Some(api) = api else {
        return Err(format!(
            "the labels of namespace {name}, which the policy's namespaceSelector needs, are \
             not known: give its Namespace document, --namespace-label (for --namespace), or \
             --kubeconfig"
        ));
    };
    match api.namespace_labels(name).await {
        Ok(Some(labels)) => {
            ns.labels = Some(labels);
            Ok(ns)
        }
        Ok(None) => Err(format!(
            "namespace {name}, whose labels the policy's namespaceSelector needs, does not \
             exist in the cluster of --kubeconfig"
        )),
        Err(e) => Err(format!(
            "cannot read the labels of namespace {name}, which the policy's namespaceSelector \
             needs: {}",
            crate::error_chain(&e)
        )),
    }
}
