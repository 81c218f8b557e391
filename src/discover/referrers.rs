//! Sigstore bundles attached as OCI 1.1 referrers (cosign v3): the referrers API, or where
//! the registry has none, the referrers tag schema; each referrer screened before its bundle
//! is fetched. Owns reading referrers; must not verify anything or look at the `.sig` tag.

use std::collections::HashSet;

use super::{
    AFTER_ALL_REFERRERS, BUNDLE_MEDIA_PREFIX, DiscoverError, Discovered, MAX_BUNDLE_BYTES,
    MAX_REFERRER_MANIFEST_BYTES, OCI_EMPTY, Order, PathTried, Search, Tagged, WhyNotExamined,
    lies_in_content, referrer, short, too_many_layers,
};
use crate::candidate::{BundleCandidate, COSIGN_SIGN_PREDICATE, PREDICATE_TYPE_ANNOTATION};
use crate::reference::Digest;
use crate::registry::{Descriptor, ImageManifest, MAX_REFERRERS, ReferrersCut};

/// Sigstore bundles attached as OCI 1.1 referrers: through the referrers API, or where the
/// registry has none, the referrers tag `sha256-<hex>`.
pub(super) async fn referrers(s: Search<'_>) -> Result<Vec<PathTried>, DiscoverError> {
    let api = "referrers API";
    let listed = s
        .registry
        .get_referrers_budgeted(s.subject, s.digest, s.budget)
        .await
        .map_err(s.failed_at(api))?;
    if let Some(list) = listed {
        let mut tried = PathTried::new(api);
        if let Some(cut) = list.cut {
            let reason = WhyNotExamined::Cut { source: cut };
            s.not_examined(
                &mut tried,
                AFTER_ALL_REFERRERS,
                "the rest",
                api.into(),
                reason,
            );
        }
        examine(s, api, list.descriptors, &mut tried).await?;
        return Ok(vec![tried]);
    }
    let mut paths = Vec::new();
    if s.subject.registry().is_some() {
        let mut tried = PathTried::new(api);
        tried
            .notes
            .push("the registry has no referrers API; using the referrers tag".into());
        paths.push(tried);
    }
    paths.push(referrers_tag(s).await?);
    Ok(paths)
}

/// The referrers tag schema: an index under the tag `sha256-<hex>` listing the referrers.
async fn referrers_tag(s: Search<'_>) -> Result<PathTried, DiscoverError> {
    let tag = s.digest.tag_prefix();
    let path = format!("referrers tag {tag}");
    let mut tried = PathTried::new(&path);
    let index = s
        .tagged_manifest(&tag, &path, Tagged::ReferrersIndex, &mut tried)
        .await?;
    let Some(index) = index else {
        return Ok(tried);
    };
    let mut listed = index.manifests;
    if listed.len() > MAX_REFERRERS {
        listed.truncate(MAX_REFERRERS);
        let reason = WhyNotExamined::Cut {
            source: ReferrersCut::Entries {
                limit: MAX_REFERRERS,
            },
        };
        let location = path.clone();
        s.not_examined(
            &mut tried,
            AFTER_ALL_REFERRERS,
            "the rest",
            location,
            reason,
        );
    }
    examine(s, &path, listed, &mut tried).await?;
    Ok(tried)
}

/// One listed referrer: where it is listed, its place in the order, how notes name it.
struct Listed<'p> {
    path: &'p str,
    at: Order,
    digest: Digest,
    /// `sha256:0123456789ab…`.
    label: String,
}

impl Listed<'_> {
    /// `referrers API sha256:0123456789ab…`.
    fn location(&self) -> String {
        format!("{} {}", self.path, self.label)
    }
}

/// Look at each referrer; hand over the Sigstore bundles that refer to the digest.
async fn examine(
    s: Search<'_>,
    path: &str,
    descs: Vec<Descriptor>,
    tried: &mut PathTried,
) -> Result<(), DiscoverError> {
    let mut seen_manifests = HashSet::new();
    let mut seen_bundles = HashSet::new();
    for (i, desc) in descs.into_iter().enumerate() {
        let Some(r) = listed_referrer(path, i, desc, &mut seen_manifests, tried) else {
            continue;
        };
        let Some((manifest, at_digest)) = referrer_manifest(s, &r, tried).await? else {
            continue;
        };
        let layer = match bundle_layer(&manifest, s.digest, &r.label) {
            Ok(layer) => layer,
            Err(note) => {
                tried.notes.push(note);
                continue;
            }
        };
        if layer.size > MAX_BUNDLE_BYTES as u64 {
            let reason = WhyNotExamined::TooLarge {
                media_type: layer.media_type.clone(),
                size: layer.size,
                limit: MAX_BUNDLE_BYTES,
            };
            s.not_examined(tried, r.at, &r.label, r.location(), reason);
            continue;
        }
        if !seen_bundles.insert(layer.digest.clone()) {
            tried.notes.push(format!(
                "{} holds the same bundle as an earlier referrer",
                r.label
            ));
            continue;
        }
        hand_over_bundle(s, &r, layer, &at_digest, tried).await?;
    }
    Ok(())
}

/// A listed referrer worth fetching: its digest parses, it is listed once, and its declared
/// artifact type (if any) is a Sigstore bundle's. Otherwise None, with a note.
fn listed_referrer<'p>(
    path: &'p str,
    index: usize,
    desc: Descriptor,
    seen: &mut HashSet<Digest>,
    tried: &mut PathTried,
) -> Option<Listed<'p>> {
    let Ok(digest) = Digest::parse(&desc.digest) else {
        tried
            .notes
            .push(format!("{:?} is not a digest", desc.digest));
        return None;
    };
    let label = short(digest.as_str());
    if !seen.insert(digest.clone()) {
        tried.notes.push(format!("{label} is listed twice"));
        return None;
    }
    let declared = desc.artifact_type.unwrap_or_default();
    if !declared.is_empty() && declared != OCI_EMPTY && !declared.starts_with(BUNDLE_MEDIA_PREFIX) {
        tried
            .notes
            .push(format!("{label} is {declared:?}, not a Sigstore bundle"));
        return None;
    }
    Some(Listed {
        path,
        at: referrer(index),
        digest,
        label,
    })
}

/// A referrer's manifest, fetched and parsed, with the digest it was fetched at; None (handed
/// over as not examined) when the registry does not have it or its content cannot be used.
async fn referrer_manifest(
    s: Search<'_>,
    r: &Listed<'_>,
    tried: &mut PathTried,
) -> Result<Option<(ImageManifest, Digest)>, DiscoverError> {
    let fetched = s
        .registry
        .get_manifest_capped(
            &s.subject.with_digest(r.digest.clone()),
            MAX_REFERRER_MANIFEST_BYTES,
            s.budget,
        )
        .await;
    let m = match fetched {
        Ok(Some(m)) => m,
        // The registry lists what it does not have: an inconsistency of the registry,
        // not an absence of signatures.
        Ok(None) => {
            let reason = WhyNotExamined::Missing {
                digest: r.digest.clone(),
            };
            s.not_examined(tried, r.at, &r.label, r.location(), reason);
            return Ok(None);
        }
        Err(source) if lies_in_content(&source) => {
            let reason = WhyNotExamined::Content { source };
            s.not_examined(tried, r.at, &r.label, r.location(), reason);
            return Ok(None);
        }
        Err(e) => return Err(s.failed_at(r.path)(e)),
    };
    if let Some(reason) = too_many_layers(&m.bytes) {
        s.not_examined(tried, r.at, &r.label, r.location(), reason);
        return Ok(None);
    }
    match ImageManifest::parse(&m, r.path) {
        Ok(parsed) => Ok(Some((parsed, m.digest))),
        Err(source) => {
            let reason = WhyNotExamined::Content { source };
            s.not_examined(tried, r.at, &r.label, r.location(), reason);
            Ok(None)
        }
    }
}

/// The bundle layer of a referrer that is a cosign signature bundle of `digest`, or the note
/// saying why it is not one.
fn bundle_layer<'m>(
    manifest: &'m ImageManifest,
    digest: &Digest,
    label: &str,
) -> Result<&'m Descriptor, String> {
    let kind = manifest
        .artifact_type
        .clone()
        .or_else(|| manifest.config.as_ref().map(|c| c.media_type.clone()))
        .unwrap_or_default();
    if !kind.starts_with(BUNDLE_MEDIA_PREFIX) {
        return Err(format!("{label} is {kind:?}, not a Sigstore bundle"));
    }
    if manifest.subject.as_ref().map(|s| s.digest.as_str()) != Some(digest.as_str()) {
        return Err(format!("{label} refers to another image"));
    }
    let predicate = manifest
        .annotations
        .as_ref()
        .and_then(|a| a.get(PREDICATE_TYPE_ANNOTATION));
    if let Some(p) = predicate.filter(|p| p.as_str() != COSIGN_SIGN_PREDICATE) {
        return Err(format!(
            "{label} is an attestation ({p:?}), not a signature"
        ));
    }
    manifest
        .layers
        .iter()
        .find(|l| l.media_type.starts_with(BUNDLE_MEDIA_PREFIX))
        .ok_or_else(|| format!("{label} has no bundle layer"))
}

/// Fetch a referrer's bundle and hand it over (or hand it over as not examined).
async fn hand_over_bundle(
    s: Search<'_>,
    r: &Listed<'_>,
    layer: &Descriptor,
    manifest_digest: &Digest,
    tried: &mut PathTried,
) -> Result<(), DiscoverError> {
    let bytes = match s
        .registry
        .get_blob_capped(s.subject, layer, MAX_BUNDLE_BYTES, s.budget)
        .await
    {
        Ok(bytes) => bytes,
        Err(source) if lies_in_content(&source) => {
            let reason = WhyNotExamined::Content { source };
            s.not_examined(tried, r.at, &r.label, r.location(), reason);
            return Ok(());
        }
        Err(e) => return Err(s.failed_at(r.path)(e)),
    };
    let Ok(json) = String::from_utf8(bytes) else {
        s.not_examined(tried, r.at, &r.label, r.location(), WhyNotExamined::NotUtf8);
        return Ok(());
    };
    tried.found += 1;
    let bundle = BundleCandidate {
        location: format!("{} {}", r.path, short(manifest_digest.as_str())),
        json,
    };
    (s.sink)(r.at, Discovered::Bundle(bundle));
    Ok(())
}
