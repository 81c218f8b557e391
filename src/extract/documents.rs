//! Rendered manifests (`kustomize build`, `helm template`, `kubectl get -o yaml|json`) → objects,
//! and a [`Lookup`] over them for `verify --manifests`.

use serde_json::Value;

use super::{ExtractError, Lookup, LookupError, ObjectRef, get_path};

/// The most documents [`parse_documents`] returns (List items included). The caller caps bytes.
pub const MAX_DOCUMENTS: usize = 10_000;

/// Every object in `text`: YAML documents separated by `---` (empty ones skipped) or JSON (one
/// value or several concatenated); `kind: List` (and typed `*List`) objects are replaced by their
/// `items`.
pub fn parse_documents(text: &str) -> Result<Vec<Value>, ExtractError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let parsed = match json_values(text) {
        Some(values) => values,
        None => yaml_values(text)?,
    };
    let mut out = Vec::new();
    for doc in parsed {
        push_expanded(doc, &mut out, 0)?;
    }
    Ok(out)
}

/// JSON when the text starts like JSON and parses completely as JSON; otherwise `None` (YAML).
fn json_values(text: &str) -> Option<Vec<Value>> {
    if !text.trim_start().starts_with(['{', '[']) {
        return None;
    }
    let mut values = Vec::new();
    for v in serde_json::Deserializer::from_str(text).into_iter::<Value>() {
        values.push(v.ok()?);
        if values.len() > MAX_DOCUMENTS {
            // Let the count check below report it.
            break;
        }
    }
    Some(values)
}

fn yaml_values(text: &str) -> Result<Vec<Value>, ExtractError> {
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_documents: MAX_DOCUMENTS,
            // Rendered manifests are large; the caller bounds the bytes.
            max_nodes: 50_000_000,
            max_events: 100_000_000,
        },
    };
    serde_saphyr::from_multiple_with_options::<Value>(text, options).map_err(|e| {
        match e.without_snippet() {
            serde_saphyr::Error::Budget {
                breach: serde_saphyr::budget::BudgetBreach::Documents { .. },
                ..
            } => ExtractError::TooManyDocuments { max: MAX_DOCUMENTS },
            _ => ExtractError::Yaml {
                source: Box::new(e),
            },
        }
    })
}

fn is_list(doc: &Value) -> bool {
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("");
    (kind == "List" || (kind.ends_with("List") && doc.get("spec").is_none()))
        && doc.get("items").is_some_and(Value::is_array)
}

fn push_expanded(doc: Value, out: &mut Vec<Value>, depth: usize) -> Result<(), ExtractError> {
    if doc.is_null() {
        return Ok(());
    }
    if depth < 4 && is_list(&doc) {
        if let Value::Object(mut map) = doc
            && let Some(Value::Array(items)) = map.remove("items")
        {
            for item in items {
                push_expanded(item, out, depth + 1)?;
            }
        }
        return Ok(());
    }
    if out.len() >= MAX_DOCUMENTS {
        return Err(ExtractError::TooManyDocuments { max: MAX_DOCUMENTS });
    }
    out.push(doc);
    Ok(())
}

/// A [`Lookup`] over a set of objects, e.g. everything given to `verify --manifests`.
///
/// A reference matches an object of the same kind and name, of the same API group when both say
/// one, in the same namespace; an object or reference without a namespace (manifests applied to
/// "the current namespace") matches any namespace, but only when no object matches exactly.
/// Two different objects matching equally well are [`LookupError::Ambiguous`].
///
/// A reference into another namespace than the referring object's is refused unless
/// [`DocumentSet::allow_cross_namespace_refs`] says otherwise, as in the webhook.
#[derive(Debug, Clone, Default)]
pub struct DocumentSet {
    docs: Vec<Value>,
    cross_namespace_refs: bool,
}

impl DocumentSet {
    /// A lookup over `docs`.
    pub fn new(docs: Vec<Value>) -> Self {
        DocumentSet {
            docs,
            cross_namespace_refs: false,
        }
    }

    /// Follow references into other namespaces too (`--allow-cross-namespace-refs`).
    pub fn allow_cross_namespace_refs(mut self, allow: bool) -> Self {
        self.cross_namespace_refs = allow;
        self
    }

    /// The documents.
    pub fn documents(&self) -> &[Value] {
        &self.docs
    }

    fn find(&self, r: &ObjectRef) -> Result<Option<Value>, LookupError> {
        let group = |api: &str| api.rsplit_once('/').map_or("", |(g, _)| g).to_string();
        let want_group = r.api_version.as_deref().map(group);
        let (mut exact, mut loose) = (Vec::new(), Vec::new());
        for doc in &self.docs {
            let text = |p: &str| get_path(doc, p).and_then(Value::as_str);
            if text("kind") != Some(r.kind.as_str()) || text("metadata.name") != Some(&r.name) {
                continue;
            }
            if let (Some(want), Some(api)) = (&want_group, text("apiVersion"))
                && *want != group(api)
            {
                continue;
            }
            match (r.namespace.as_deref(), text("metadata.namespace")) {
                (Some(a), Some(b)) if a != b => {}
                (a, b) if a == b => exact.push(doc),
                _ => loose.push(doc),
            }
        }
        let candidates = if exact.is_empty() { loose } else { exact };
        let Some(first) = candidates.first() else {
            return Ok(None);
        };
        let distinct = candidates.iter().filter(|d| **d != *first).count();
        if distinct > 0 {
            return Err(LookupError::Ambiguous {
                object: r.clone(),
                count: distinct + 1,
            });
        }
        Ok(Some((*first).clone()))
    }
}

impl Lookup for DocumentSet {
    fn get(
        &self,
        r: &ObjectRef,
    ) -> impl Future<Output = Result<Option<Value>, LookupError>> + Send {
        std::future::ready(self.find(r))
    }

    fn cross_namespace_refs(&self) -> bool {
        self.cross_namespace_refs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn yaml_streams_skip_empty_documents_and_expand_lists() {
        let text = "---\n# only a comment\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n---\n\
                    apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Pod\n  metadata: {name: p}\n\
                    - apiVersion: v1\n  kind: Secret\n  metadata: {name: s}\n...\n";
        let docs = parse_documents(text).unwrap();
        let kinds: Vec<_> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["ConfigMap", "Pod", "Secret"]);
    }

    #[test]
    fn json_input() {
        let docs = parse_documents(
            r#"{"apiVersion":"v1","kind":"PodList","items":[{"kind":"Pod"},{"kind":"Pod"}]}"#,
        )
        .unwrap();
        assert_eq!(docs.len(), 2);
        let docs = parse_documents("{\"kind\":\"A\"}\n{\"kind\":\"B\"}\n").unwrap();
        assert_eq!(docs.len(), 2);
        // A YAML flow mapping is not JSON, and still parses.
        let docs = parse_documents("{kind: A, metadata: {name: x}}").unwrap();
        assert_eq!(docs[0]["kind"], "A");
    }

    #[test]
    fn document_count_is_bounded() {
        let many = "kind: A\n---\n".repeat(MAX_DOCUMENTS + 1);
        let e = parse_documents(&many).unwrap_err();
        assert!(
            matches!(e, ExtractError::TooManyDocuments { .. }),
            "{}",
            crate::error_chain(&e)
        );
        let items = vec![json!({"kind": "Pod"}); MAX_DOCUMENTS + 1];
        let list = json!({"kind": "List", "items": items}).to_string();
        let e = parse_documents(&list).unwrap_err();
        assert!(matches!(e, ExtractError::TooManyDocuments { .. }), "{e}");
        assert_eq!(
            parse_documents(&"kind: A\n---\n".repeat(100))
                .unwrap()
                .len(),
            100
        );
    }

    #[test]
    fn bad_yaml_is_an_error() {
        let e = parse_documents("a: [1, 2\nb: c").unwrap_err();
        assert!(matches!(e, ExtractError::Yaml { .. }), "{e}");
        assert_eq!(e.to_string(), "YAML could not be parsed");
    }

    fn r(kind: &str, ns: Option<&str>, name: &str) -> ObjectRef {
        ObjectRef {
            api_version: Some("source.toolkit.fluxcd.io/v1".into()),
            kind: kind.into(),
            namespace: ns.map(str::to_string),
            name: name.into(),
        }
    }

    #[test]
    fn document_set_lookup_rules() {
        let a = json!({"apiVersion": "source.toolkit.fluxcd.io/v1beta2", "kind": "HelmRepository",
            "metadata": {"name": "repo", "namespace": "a"}, "spec": {"url": "oci://a"}});
        let b = json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "HelmRepository",
            "metadata": {"name": "repo", "namespace": "b"}, "spec": {"url": "oci://b"}});
        let bare = json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "HelmRepository",
            "metadata": {"name": "bare"}});
        let other_group = json!({"apiVersion": "example.com/v1", "kind": "HelmRepository",
            "metadata": {"name": "bare", "namespace": "a"}});
        let set = DocumentSet::new(vec![a.clone(), b, bare.clone(), other_group]);
        // Groups, not versions, are compared.
        assert_eq!(
            set.find(&r("HelmRepository", Some("a"), "repo")).unwrap(),
            Some(a)
        );
        assert_eq!(
            set.find(&r("HelmRepository", Some("c"), "repo")).unwrap(),
            None
        );
        assert!(matches!(
            set.find(&r("HelmRepository", None, "repo")),
            Err(LookupError::Ambiguous { count: 2, .. })
        ));
        assert_eq!(
            set.find(&r("HelmRepository", Some("a"), "bare")).unwrap(),
            Some(bare)
        );
        assert_eq!(
            set.find(&r("OCIRepository", Some("a"), "repo")).unwrap(),
            None
        );
    }
}
