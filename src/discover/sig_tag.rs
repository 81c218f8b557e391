//! cosign's legacy layout: the tag `sha256-<hex>.sig`, whose manifest has one simple-signing
//! layer per signature (the signature in an annotation, the payload in the blob).
//! Owns reading that tag's layers and blobs; must not verify anything or look at referrers.

use futures_util::StreamExt as _;

use super::{
    BLOB_FETCHES, BlobGroups, DiscoverError, Discovered, PathTried, Search, Tagged, WhyNotExamined,
    lies_in_content, sig_layer,
};
use crate::candidate::SignatureCandidate;
use crate::payload::{MAX_PAYLOAD_BYTES, SIGNATURE_ANNOTATION, SIMPLE_SIGNING_MEDIA_TYPE};
use crate::registry::Descriptor;

/// cosign's legacy layout: the tag `sha256-<hex>.sig`, one simple-signing layer per signature.
pub(super) async fn legacy_sig_tag(s: Search<'_>) -> Result<PathTried, DiscoverError> {
    let tag = format!("{}.sig", s.digest.tag_prefix());
    let path = format!("tag {tag}");
    let mut tried = PathTried::new(&path);
    let manifest = s
        .tagged_manifest(&tag, &path, Tagged::Signatures, &mut tried)
        .await?;
    let Some(manifest) = manifest else {
        return Ok(tried);
    };
    let layers = manifest.layers;
    if layers.is_empty() {
        tried.notes.push("manifest has no layers".into());
    }
    let blobs = signature_blobs(s, &path, &layers, &mut tried);
    hand_over_signatures(s, &path, &layers, blobs, &mut tried).await?;
    Ok(tried)
}

/// The signature layers, grouped by the blob they name (in the order first named), so that
/// each blob is fetched once and verified for every layer that names it. A layer that is not
/// a signature gets a note; one too large is handed over as not examined.
fn signature_blobs(
    s: Search<'_>,
    path: &str,
    layers: &[Descriptor],
    tried: &mut PathTried,
) -> Vec<Vec<usize>> {
    let mut groups = BlobGroups::default();
    for (i, layer) in layers.iter().enumerate() {
        let n = i + 1;
        if layer.media_type != SIMPLE_SIGNING_MEDIA_TYPE {
            tried.notes.push(format!(
                "layer {n} is {:?}, not a cosign signature",
                layer.media_type
            ));
            continue;
        }
        if !layer
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(SIGNATURE_ANNOTATION))
        {
            tried.notes.push(format!(
                "layer {n} has no {SIGNATURE_ANNOTATION} annotation"
            ));
            continue;
        }
        if layer.size > MAX_PAYLOAD_BYTES as u64 {
            let reason = WhyNotExamined::TooLarge {
                media_type: layer.media_type.clone(),
                size: layer.size,
                limit: MAX_PAYLOAD_BYTES,
            };
            let what = format!("layer {n}");
            let location = format!("{path} {what}");
            s.not_examined(tried, sig_layer(i), &what, location, reason);
            continue;
        }
        groups.add(i, &layer.digest);
    }
    groups.into_groups()
}

/// Fetch each signature blob and hand over a candidate for every layer that names it. Up to
/// [`BLOB_FETCHES`] blobs are fetched at once (a second signature costs no extra round trip),
/// and handed over in layer order; at most that many payloads are held.
async fn hand_over_signatures(
    s: Search<'_>,
    path: &str,
    layers: &[Descriptor],
    blobs: Vec<Vec<usize>>,
    tried: &mut PathTried,
) -> Result<(), DiscoverError> {
    let fetches = futures_util::stream::iter(blobs.into_iter().filter(|m| !m.is_empty()))
        .map(|members| async move {
            let first = members[0];
            let fetched = s
                .registry
                .get_blob_capped(s.subject, &layers[first], MAX_PAYLOAD_BYTES, s.budget)
                .await;
            (members, fetched)
        })
        .buffered(BLOB_FETCHES);
    futures_util::pin_mut!(fetches);
    while let Some((members, fetched)) = fetches.next().await {
        let first = members[0];
        let payload = match fetched {
            Ok(p) => p,
            Err(source) if lies_in_content(&source) => {
                let mut reason = WhyNotExamined::Content { source };
                for &i in &members {
                    let what = format!("layer {}", i + 1);
                    let location = format!("{path} {what}");
                    let next = WhyNotExamined::SameBlobAs { layer: first + 1 };
                    let this = std::mem::replace(&mut reason, next);
                    s.not_examined(tried, sig_layer(i), &what, location, this);
                }
                continue;
            }
            Err(e) => return Err(s.failed_at(path)(e)),
        };
        for &i in &members {
            let annotations = layers[i].annotations.clone().unwrap_or_default();
            let signature = annotations
                .get(SIGNATURE_ANNOTATION)
                .cloned()
                .unwrap_or_default();
            tried.found += 1;
            let candidate = SignatureCandidate {
                location: format!("{path} layer {}", i + 1),
                payload: payload.clone(),
                signature,
                annotations,
            };
            (s.sink)(sig_layer(i), Discovered::Signature(candidate));
        }
    }
    Ok(())
}
