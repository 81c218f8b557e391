//! Listing every object of one kind across the cluster, a page at a time (`limit` and
//! `continue`, as kubectl does), for `audit` and a HelmRepository's HelmCharts: each page
//! bounded in bytes (a page too large is asked again smaller), the pages in number.
//! Must not keep a page once the caller has read it, nor know what the objects mean.

use std::time::Duration;

use serde_json::Value;

use super::{KubeApi, KubeApiError};

/// Objects asked for per page.
pub(crate) const PAGE_OBJECTS: usize = 100;

/// The most bytes one page may hold (100 Pods of about 40 KiB each). A page is parsed into
/// JSON values, about ten times its size for Pods with sidecars (an 11 MiB page of 500 such
/// Pods took 147 MiB), in a webhook replica whose memory limit is 256 MiB: pages stay small.
pub(crate) const MAX_PAGE_BYTES: usize = 4 << 20;

/// The most pages read of one kind (a million objects): a server that keeps answering
/// `continue` cannot hold the audit forever.
pub(crate) const MAX_PAGES: usize = 10_000;

/// The page sizes asked for, largest first: a page over [`MAX_PAGE_BYTES`] (objects of 40 KiB
/// and more, such as HelmReleases with large inline values) is asked again smaller, from the
/// same place; two objects always fit (etcd stores an object of at most 1.5 MiB).
const PAGE_SIZES: [usize; 3] = [PAGE_OBJECTS, 20, 2];

/// How long one page may take (a page of Pods from a busy API server can take seconds).
const PAGE_TIMEOUT: Duration = Duration::from_secs(60);

/// A kind as the API serves it: where it is listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resource {
    /// `v1` for the core group, else `group/version`.
    pub(crate) api_version: String,
    /// The kind each listed object is.
    pub(crate) kind: String,
    /// The resource's plural name in its URL, e.g. `pods`, `ocirepositories`.
    pub(crate) plural: String,
}

impl Resource {
    /// The path listing it in every namespace, or in `namespace` (a name the caller checked).
    fn path(&self, namespace: Option<&str>) -> String {
        let base = match self.api_version.contains('/') {
            true => format!("/apis/{}", self.api_version),
            false => format!("/api/{}", self.api_version),
        };
        match namespace {
            Some(ns) => format!("{base}/namespaces/{ns}/{}", self.plural),
            None => format!("{base}/{}", self.plural),
        }
    }
}

/// One page of a list: its objects (each with `apiVersion` and `kind` set, which a list's items
/// lack) and the token of the next page.
pub(crate) struct Page {
    /// The objects, in the server's order.
    pub(crate) items: Vec<Value>,
    /// Where the next page starts; `None`: this was the last.
    pub(crate) next: Option<String>,
}

impl KubeApi {
    /// One page of `resource` in every namespace, from `from` (a previous page's `next`);
    /// `Ok(None)` when the API does not serve the resource (its CRD is not installed).
    pub(crate) async fn list_page(
        &self,
        resource: &Resource,
        from: Option<&str>,
    ) -> Result<Option<Page>, KubeApiError> {
        self.page_at(resource, None, None, from).await
    }

    /// [`KubeApi::list_page`] of the objects named `name` only (`fieldSelector=metadata.name`):
    /// ocigate's own reports among everyone's.
    pub(crate) async fn list_page_named(
        &self,
        resource: &Resource,
        name: &str,
        from: Option<&str>,
    ) -> Result<Option<Page>, KubeApiError> {
        let selector = format!("metadata.name={name}");
        self.page_at(resource, None, Some(&selector), from).await
    }

    /// Every object of `resource` in `namespace`, a page at a time: at most `max` and one more
    /// (the caller says what too many is), within [`MAX_PAGES`]; `Ok(None)` when the API does
    /// not serve the resource.
    pub(crate) async fn list_in(
        &self,
        resource: &Resource,
        namespace: &str,
        max: usize,
    ) -> Result<Option<Vec<Value>>, KubeApiError> {
        super::namespace_name(namespace)?;
        let mut items = Vec::new();
        let mut next: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let Some(page) = self
                .page_at(resource, Some(namespace), None, next.as_deref())
                .await?
            else {
                return Ok(None);
            };
            items.extend(page.items);
            match page.next {
                // The same page again would be read until the bound: refused at once.
                Some(n) if next.as_deref() == Some(n.as_str()) => break,
                Some(n) if items.len() <= max => next = Some(n),
                _ => {
                    items.truncate(max.saturating_add(1));
                    return Ok(Some(items));
                }
            }
        }
        // A list read only in part is not the list: never taken for the whole of it.
        Err(KubeApiError::Unending {
            url: format!("{}{}", self.server, resource.path(Some(namespace))),
            pages: MAX_PAGES,
        })
    }

    async fn page_at(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        field_selector: Option<&str>,
        from: Option<&str>,
    ) -> Result<Option<Page>, KubeApiError> {
        let url = format!("{}{}", self.server, resource.path(namespace));
        for limit in PAGE_SIZES {
            let mut target =
                reqwest::Url::parse(&url).map_err(|_| KubeApiError::Body { url: url.clone() })?;
            target
                .query_pairs_mut()
                .append_pair("limit", &limit.to_string())
                .extend_pairs(field_selector.map(|f| ("fieldSelector", f)))
                .extend_pairs(from.map(|t| ("continue", t)));
            let req = self
                .client
                .get(target)
                .timeout(PAGE_TIMEOUT)
                .header("Accept", "application/json");
            let resp = self.send(req, &url).await?;
            match resp.status().as_u16() {
                200 => {}
                // Not served from the first page on; gone in the middle of a list, the list
                // read so far is not the list (a version removed while it was read).
                404 if from.is_none() => return Ok(None),
                status => return Err(KubeApiError::Status { url, status }),
            }
            match crate::registry::read_body_capped(resp, MAX_PAGE_BYTES).await {
                Ok(Some(body)) => {
                    return page_of(resource, &body)
                        .ok_or(KubeApiError::Body { url })
                        .map(Some);
                }
                // Too large at this size: the same page, smaller.
                Ok(None) => {}
                Err(_) => return Err(KubeApiError::Body { url }),
            }
        }
        Err(KubeApiError::Body { url })
    }
}

/// A list's body as a [`Page`]; `None` when it is not a list.
fn page_of(resource: &Resource, body: &[u8]) -> Option<Page> {
    let mut list: Value = serde_json::from_slice(body).ok()?;
    let next = list
        .pointer("/metadata/continue")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .map(str::to_string);
    let Value::Array(items) = list.get_mut("items")?.take() else {
        return None;
    };
    let items = items
        .into_iter()
        .filter_map(|mut item| {
            let map = item.as_object_mut()?;
            // The server's field bookkeeping, often larger than the object: nothing reads it.
            if let Some(metadata) = map.get_mut("metadata").and_then(Value::as_object_mut) {
                metadata.remove("managedFields");
            }
            map.insert("apiVersion".into(), resource.api_version.clone().into());
            map.insert("kind".into(), resource.kind.clone().into());
            Some(item)
        })
        .collect();
    Some(Page { items, next })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods() -> Resource {
        Resource {
            api_version: "v1".into(),
            kind: "Pod".into(),
            plural: "pods".into(),
        }
    }

    #[test]
    fn paths_of_core_and_group_resources() {
        assert_eq!(pods().path(None), "/api/v1/pods");
        assert_eq!(pods().path(Some("apps")), "/api/v1/namespaces/apps/pods");
        let r = Resource {
            api_version: "source.toolkit.fluxcd.io/v1".into(),
            kind: "OCIRepository".into(),
            plural: "ocirepositories".into(),
        };
        assert_eq!(
            r.path(None),
            "/apis/source.toolkit.fluxcd.io/v1/ocirepositories"
        );
        assert_eq!(
            r.path(Some("flux")),
            "/apis/source.toolkit.fluxcd.io/v1/namespaces/flux/ocirepositories"
        );
    }

    #[test]
    fn a_page_gives_its_items_their_kind_and_the_next_token() {
        let body = br#"{"kind":"PodList","apiVersion":"v1","metadata":{"continue":"abc"},
            "items":[{"metadata":{"name":"a","namespace":"x"}},"not an object"]}"#;
        let page = page_of(&pods(), body).unwrap();
        assert_eq!(page.next.as_deref(), Some("abc"));
        assert_eq!(page.items.len(), 1);
        assert_eq!(page.items[0]["kind"], "Pod");
        assert_eq!(page.items[0]["apiVersion"], "v1");
        let last = br#"{"metadata":{"continue":""},"items":[]}"#;
        assert!(page_of(&pods(), last).unwrap().next.is_none());
        assert!(page_of(&pods(), b"{}").is_none());
        assert!(page_of(&pods(), b"[1]").is_none());
    }

    #[test]
    fn managed_fields_are_dropped_from_each_object() {
        let body = br#"{"items":[{"metadata":{"name":"a","managedFields":[{"manager":"m"}]}}]}"#;
        let page = page_of(&pods(), body).unwrap();
        assert_eq!(page.items[0]["metadata"], serde_json::json!({"name": "a"}));
    }

    /// A 404 for the first page says the kind is not served; for a later page (a version
    /// removed while it was listed), the pages read so far are not the list: an error, never
    /// the end of it (the reports of namespaces not reached were emptied).
    #[test]
    fn a_404_after_the_first_page_is_an_error_not_the_end() {
        // Nothing is served: every request is answered 404.
        let api = super::super::fake::api(4, |_| ("404 Not Found", r#"{"kind":"Status"}"#.into()))
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        assert!(rt.block_on(api.list_page(&pods(), None)).unwrap().is_none());
        let later = rt.block_on(api.list_page(&pods(), Some("token")));
        assert!(matches!(
            later,
            Err(KubeApiError::Status { status: 404, .. })
        ));
    }
}
