//! Lists a remote registry pages through: the tags of a repository and the OCI 1.1 referrers
//! of a digest, each bounded in pages, entries and bytes. Must not: decide what a referrer
//! means (discovery does) or follow a page link except through `send`'s checks.

use reqwest::StatusCode;
use reqwest::header::{ACCEPT, LINK};
use serde::Deserialize;

use super::budget::FetchBudget;
use super::error::{Op, RegistryError, RegistryErrorKind as Kind};
use super::manifest::{Descriptor, ImageManifest, OCI_INDEX};
use super::remote::{Access, Cause};
use super::request::{Call, content_type};
use super::{Registry, layout};
use crate::reference::{Digest, ImageRef, Location};

/// Most pages of a tag list followed.
pub const MAX_TAG_PAGES: usize = 20;
/// Most tags accepted.
pub const MAX_TAGS: usize = 20_000;
/// Most pages of referrers followed for one digest. What lies beyond is reported as not
/// examined (see [`ReferrersCut`]), never silently dropped.
pub const MAX_REFERRER_PAGES: usize = 16;
/// Most referrers accepted for one digest (see [`MAX_REFERRER_PAGES`]).
pub const MAX_REFERRERS: usize = 1024;

/// Registries remembered as having a referrers API or none, at most.
const MAX_REFERRERS_API_HOSTS: usize = 1024;

/// The referrers a registry lists for a digest, as far as the limits allowed reading them.
#[derive(Debug)]
pub struct Referrers {
    /// The descriptors listed, in the registry's order.
    pub descriptors: Vec<Descriptor>,
    /// Why the list may be incomplete (a limit); `None` when every page was read.
    pub cut: Option<ReferrersCut>,
}

/// Why a list of referrers was not read to its end.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReferrersCut {
    /// More entries than [`MAX_REFERRERS`].
    #[error("more than {limit} referrers listed; those past the first {limit} were not examined")]
    Entries {
        /// The limit.
        limit: usize,
    },
    /// More pages than [`MAX_REFERRER_PAGES`].
    #[error("more than {limit} pages of referrers; later pages were not read")]
    Pages {
        /// The limit.
        limit: usize,
    },
    /// A page too large for the limits or the budget.
    #[error("a page of referrers was refused; it and later pages were not read")]
    Page {
        /// The refusal, of kind [`TooLarge`](Kind::TooLarge) or [`BudgetSpent`](Kind::BudgetSpent).
        #[source]
        source: RegistryError,
    },
}

/// What one page of referrers gave.
enum Page {
    /// Its entries, and the link to the next page.
    Read(Vec<Descriptor>, Option<String>),
    /// Refused for its size: the list is cut here.
    Cut(ReferrersCut),
}

impl Registry {
    /// The tags of `r`'s repository (`GET /v2/<name>/tags/list`, pages followed). Bounded: at
    /// most [`MAX_TAG_PAGES`] pages and [`MAX_TAGS`] tags, each page at most the manifest
    /// limit. An OCI layout's tags are its index.json `ref.name` annotations.
    pub async fn list_tags(&self, r: &ImageRef) -> Result<Vec<String>, RegistryError> {
        let (registry, repository) = match r.location() {
            Location::Layout { path } => return layout::list_tags(path, r),
            Location::Registry {
                registry,
                repository,
            } => (registry, repository),
        };
        let target = format!("tags of {}", r.name());
        let call = Call {
            registry,
            repository,
            op: Op::ListTags,
            target: &target,
        };
        let base = self.remote.base_url(&self.settings, registry);
        let mut url = format!("{base}/v2/{repository}/tags/list?n=1000");
        let mut tags = Vec::new();
        for _ in 0..MAX_TAG_PAGES {
            let resp = self
                .send(call, Access::Pull, &url, |c, url| {
                    c.get(url).header(ACCEPT, "application/json")
                })
                .await?;
            if resp.status() == StatusCode::NOT_FOUND {
                return Err(call.error(Kind::NotFound));
            }
            let resp = self.success(call, resp).await?;
            let next = next_link_of(&resp);
            let body = self
                .body(call, resp, self.settings.max_manifest_bytes)
                .await?;
            #[derive(Deserialize)]
            struct TagList {
                #[serde(default)]
                tags: Option<Vec<String>>,
            }
            let page: TagList = serde_json::from_slice(&body).map_err(|e| {
                call.error(Kind::Malformed {
                    detail: format!("tag list: {e}"),
                })
            })?;
            tags.extend(page.tags.unwrap_or_default());
            if tags.len() > MAX_TAGS {
                return Err(call.error(Kind::TooMany {
                    limit: MAX_TAGS,
                    what: "tags",
                }));
            }
            match next {
                Some(n) => {
                    url = next_page(&url, &n, "tag list page link")
                        .map_err(|c| call.failed(c, super::Sent::Nothing))?;
                }
                None => return Ok(tags),
            }
        }
        Err(call.error(Kind::TooMany {
            limit: MAX_TAG_PAGES,
            what: "pages of tags",
        }))
    }

    /// The OCI 1.1 referrers of `digest` in `r`'s repository. `Ok(None)` when the registry
    /// has no referrers API (it answers 404, or 400/405), so the caller falls back to the
    /// referrers tag. Pages (`Link: <…>; rel="next"`) are followed. Unbounded by a budget,
    /// and what lies past the limits is dropped: for signing, which only needs to know what
    /// is there.
    pub async fn get_referrers(
        &self,
        r: &ImageRef,
        digest: &Digest,
    ) -> Result<Option<Vec<Descriptor>>, RegistryError> {
        Ok(self
            .referrers(r, digest, None)
            .await?
            .map(|found| found.descriptors))
    }

    /// [`Registry::get_referrers`] for verification: at most [`MAX_REFERRER_PAGES`] pages
    /// and [`MAX_REFERRERS`] entries, each page charged to `budget`. What lies past a limit,
    /// or past a page refused for its size, is not dropped silently: [`Referrers::cut`] says
    /// so. An answer that is not an image index is [`Kind::NotAManifest`].
    pub async fn get_referrers_budgeted(
        &self,
        r: &ImageRef,
        digest: &Digest,
        budget: &FetchBudget,
    ) -> Result<Option<Referrers>, RegistryError> {
        self.referrers(r, digest, Some(budget)).await
    }

    /// Whether `r`'s registry is known to have a referrers API (`Some(true)`), known to
    /// have none (`Some(false)`), or not known yet: it is known once it answered the first
    /// page of a referrers request. An OCI layout has none.
    pub fn has_referrers_api(&self, r: &ImageRef) -> Option<bool> {
        match r.location() {
            Location::Layout { .. } => Some(false),
            Location::Registry { registry, .. } => self.referrers_api_of(registry),
        }
    }

    fn referrers_api_of(&self, registry: &str) -> Option<bool> {
        crate::sync::lock(&self.referrers_api)
            .get(registry)
            .copied()
    }

    /// Remembers what `registry` answered the first page of a referrers request.
    fn remember_referrers_api(&self, registry: &str, has: bool) {
        let mut hosts = crate::sync::lock(&self.referrers_api);
        if !hosts.contains_key(registry) && hosts.len() >= MAX_REFERRERS_API_HOSTS {
            hosts.clear();
        }
        hosts.insert(registry.to_string(), has);
    }

    async fn referrers(
        &self,
        r: &ImageRef,
        digest: &Digest,
        budget: Option<&FetchBudget>,
    ) -> Result<Option<Referrers>, RegistryError> {
        let (registry, repository) = match r.location() {
            Location::Layout { .. } => return Ok(None),
            Location::Registry {
                registry,
                repository,
            } => (registry, repository),
        };
        if self.referrers_api_of(registry) == Some(false) {
            return Ok(None);
        }
        let target = format!("referrers of {}@{digest}", r.name());
        let call = Call {
            registry,
            repository,
            op: Op::ListReferrers,
            target: &target,
        };
        let base = self.remote.base_url(&self.settings, registry);
        let mut url = format!("{base}/v2/{repository}/referrers/{digest}");
        let mut out = Vec::new();
        let mut pages = 0;
        let cut = loop {
            if pages == MAX_REFERRER_PAGES {
                break Some(ReferrersCut::Pages {
                    limit: MAX_REFERRER_PAGES,
                });
            }
            pages += 1;
            let Some(page) = self.referrers_page(call, &url, pages == 1, budget).await? else {
                return Ok(None);
            };
            let (entries, next) = match page {
                Page::Read(entries, next) => (entries, next),
                Page::Cut(cut) => break Some(cut),
            };
            let room = MAX_REFERRERS - out.len();
            if entries.len() > room {
                out.extend(entries.into_iter().take(room));
                break Some(ReferrersCut::Entries {
                    limit: MAX_REFERRERS,
                });
            }
            out.extend(entries);
            // The next page is fetched through `send`: another origin gets no credentials, and
            // an HTTPS registry's link to plain HTTP is refused.
            match next {
                Some(n) => {
                    url = next_page(&url, &n, "referrers page link")
                        .map_err(|c| call.failed(c, super::Sent::Nothing))?;
                }
                None => break None,
            }
        };
        Ok(Some(Referrers {
            descriptors: out,
            cut,
        }))
    }

    /// One page of referrers at `url`. `Ok(None)` when the `first` page says the registry
    /// has no referrers API (remembered for the registry).
    async fn referrers_page(
        &self,
        call: Call<'_>,
        url: &str,
        first: bool,
        budget: Option<&FetchBudget>,
    ) -> Result<Option<Page>, RegistryError> {
        let resp = self
            .send(call, Access::Pull, url, |c, url| {
                c.get(url).header(ACCEPT, OCI_INDEX)
            })
            .await?;
        // The spec says 404 for "no referrers API"; some registries answer 400 or 405 for
        // an endpoint they do not know. Falling back to the referrers tag only adds a lookup.
        let unsupported = matches!(
            resp.status(),
            StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST | StatusCode::METHOD_NOT_ALLOWED
        );
        if unsupported && first {
            self.remember_referrers_api(call.registry, false);
            return Ok(None);
        }
        let resp = self.success(call, resp).await?;
        if first {
            self.remember_referrers_api(call.registry, true);
        }
        let next = next_link_of(&resp);
        let content_type = content_type(&resp);
        let limit = self.settings.max_manifest_bytes;
        let body = match self.capped_body(call, resp, limit, budget).await {
            Ok(body) => body,
            // A page too large for the limits: what was read so far stands, the rest is
            // reported as cut.
            Err(source)
                if matches!(
                    *source.kind,
                    Kind::TooLarge { .. } | Kind::BudgetSpent { .. }
                ) =>
            {
                return Ok(Some(Page::Cut(ReferrersCut::Page { source })));
            }
            Err(e) => return Err(e),
        };
        let index = referrers_index(&body, content_type.as_deref())
            .map_err(|detail| call.error(Kind::NotAManifest { detail }))?;
        Ok(Some(Page::Read(index.manifests, next)))
    }
}

/// A page of referrers read as the image index it must be; `Err` says why it is not one.
fn referrers_index(body: &[u8], content_type: Option<&str>) -> Result<ImageManifest, String> {
    if let Some(t) = content_type.filter(|t| *t != OCI_INDEX && *t != "application/json") {
        return Err(format!("served as {t:?}, not as an image index"));
    }
    let index: ImageManifest = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    if index.schema_version != 2 {
        return Err(format!("schemaVersion {}, not 2", index.schema_version));
    }
    if let Some(t) = index.media_type.as_deref().filter(|t| *t != OCI_INDEX) {
        return Err(format!("mediaType {t:?}, not an image index"));
    }
    Ok(index)
}

/// The `Link: <…>; rel="next"` target of an answer, if any.
fn next_link_of(resp: &reqwest::Response) -> Option<String> {
    resp.headers()
        .get(LINK)
        .and_then(|v| v.to_str().ok())
        .and_then(next_link)
}

/// The URL of the next page: a `Link` target resolved against the page that named it. Where
/// it may lead is `send`'s to decide (no credentials to another origin, no downgrade).
fn next_page(current: &str, link: &str, what: &'static str) -> Result<String, Cause> {
    reqwest::Url::parse(current)
        .and_then(|u| u.join(link))
        .map(|u| u.to_string())
        .map_err(|_| Cause::BadUrl {
            what,
            target: link.to_string(),
        })
}

/// The target of `Link: <url>; rel="next"`.
fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params
            .split(';')
            .any(|p| p.trim().replace(' ', "") == "rel=\"next\"")
            .then(|| {
                url.trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_string()
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_header() {
        assert_eq!(
            next_link(r#"</v2/a/referrers/sha256:x?n=1&last=b>; rel="next""#).as_deref(),
            Some("/v2/a/referrers/sha256:x?n=1&last=b")
        );
        assert_eq!(
            next_link(r#"<https://x/y>; rel="next""#).as_deref(),
            Some("https://x/y")
        );
        assert_eq!(next_link(r#"<https://x/y>; rel="prev""#), None);
    }
}
