//! cosign's legacy attestations: the tag `sha256-<hex>.att`, whose manifest has one DSSE
//! envelope layer per attestation (its predicate type, certificate, chain, Rekor bundle and
//! RFC 3161 timestamp in the layer's annotations); and envelope layers wherever they are (an
//! in-toto referrer's too). Owns selecting and fetching envelope layers; must not verify
//! anything or read `.sig` layers.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::StreamExt as _;

use super::wanted::{Fetched, LARGE_ATTESTATION_BYTES, fetch_attestation};
use super::{
    BLOB_FETCHES, BlobGroups, DiscoverError, Discovered, Order, PathTried, Place, Search, Sought,
    Tagged, WhyNotExamined, att_layer, lies_in_content,
};
use crate::candidate::{
    ATT_PREDICATE_TYPE_ANNOTATION, AttestationCandidate, AttestationForm, DSSE_ENVELOPE_MEDIA_TYPE,
};
use crate::registry::Descriptor;

/// cosign's legacy layout: the tag `sha256-<hex>.att`, one DSSE envelope layer per
/// attestation.
pub(super) async fn legacy_att_tag(s: Search<'_>) -> Result<PathTried, DiscoverError> {
    let tag = format!("{}.att", s.digest.tag_prefix());
    let path = format!("tag {tag}");
    let mut tried = PathTried::new(&path);
    tried.holds = Sought::Attestation;
    let manifest = s
        .tagged_manifest(&tag, &path, Tagged::Attestations, &mut tried)
        .await?;
    let Some(manifest) = manifest else {
        return Ok(tried);
    };
    if manifest.layers.is_empty() {
        tried.notes.push("manifest has no layers".into());
    }
    let at = Envelopes {
        path: &path,
        location: path.clone(),
        label: String::new(),
        order: &att_layer,
        unannotated: false,
    };
    at.hand_over(s, &manifest.layers, &mut tried).await?;
    Ok(tried)
}

/// DSSE envelope layers at one place: the `.att` tag's, or an in-toto referrer's.
pub(super) struct Envelopes<'p> {
    /// The place looked at, as a registry failure names it: `tag sha256-<hex>.att`,
    /// `referrers API`.
    pub path: &'p str,
    /// What each layer's location starts with: `tag sha256-<hex>.att`,
    /// `referrers API sha256:0123456789ab…`.
    pub location: String,
    /// What each layer's note starts with: nothing, or `sha256:0123456789ab… `.
    pub label: String,
    /// Where the layer at an index sits among all found.
    pub order: &'p (dyn Fn(usize) -> Order + Sync),
    /// Whether a layer without a predicate type annotation is read to learn its type: yes for
    /// an OCI 1.1 in-toto referrer (cosign's `--registry-referrers-mode=oci-1-1` writes its
    /// layers bare; the manifest's artifact type already says it is an attestation), no for
    /// the `.att` tag (cosign annotates every layer there).
    pub unannotated: bool,
}

impl Envelopes<'_> {
    /// Select the layers of wanted types, fetch each blob once and hand over an attestation
    /// per layer that names it: small blobs several at once, then large ones one at a time
    /// (each waits for its turn only when nothing fetched before it is still held here).
    pub(super) async fn hand_over(
        &self,
        s: Search<'_>,
        layers: &[Descriptor],
        tried: &mut PathTried,
    ) -> Result<(), DiscoverError> {
        let (large, small): (Vec<_>, Vec<_>) = self
            .select(s, layers, tried)
            .into_iter()
            .filter(|m| !m.is_empty())
            .partition(|m| layers[m[0]].size > LARGE_ATTESTATION_BYTES);
        let fetches = futures_util::stream::iter(small)
            .map(|members| async move {
                let fetched = fetch_attestation(s, &layers[members[0]]).await;
                (members, fetched)
            })
            .buffered(BLOB_FETCHES);
        futures_util::pin_mut!(fetches);
        while let Some((members, fetched)) = fetches.next().await {
            self.deliver(s, layers, &members, fetched, tried)?;
        }
        for members in large {
            let fetched = fetch_attestation(s, &layers[members[0]]).await;
            self.deliver(s, layers, &members, fetched, tried)?;
        }
        Ok(())
    }

    /// Hand over an attestation for each layer in `members` (they name the blob fetched), or
    /// each as not examined; then let the blob (and its turn, if it is large) go.
    fn deliver(
        &self,
        s: Search<'_>,
        layers: &[Descriptor],
        members: &[usize],
        fetched: Fetched<'_>,
        tried: &mut PathTried,
    ) -> Result<(), DiscoverError> {
        let _turn = fetched.turn;
        let envelope = match fetched.bytes {
            // Shared by the layers naming it, never copied (a blob may be tens of MiB).
            Ok(bytes) => Arc::new(bytes),
            Err(source) if lies_in_content(&source) => {
                self.not_examined_all(s, members, WhyNotExamined::Content { source }, tried);
                return Ok(());
            }
            Err(e) => return Err(s.failed_at(self.path)(e)),
        };
        // Layers that repeat an earlier one (the same blob, the same annotations) would only be
        // verified again: each distinct one is handed over once.
        let mut handed: Vec<(usize, &BTreeMap<String, String>)> = Vec::new();
        let none = BTreeMap::new();
        for &i in members {
            let same = layers[i].annotations.as_ref().unwrap_or(&none);
            if let Some((first, _)) = handed.iter().find(|(_, a)| *a == same) {
                tried.notes.push(format!(
                    "{}layer {} repeats layer {} (the same envelope and annotations)",
                    self.label,
                    i + 1,
                    first + 1
                ));
                continue;
            }
            handed.push((i, same));
            let annotations = same.clone();
            let claimed_type = annotations.get(ATT_PREDICATE_TYPE_ANNOTATION).cloned();
            let candidate = AttestationCandidate {
                location: format!("{} layer {}", self.location, i + 1),
                claimed_type,
                form: AttestationForm::Envelope {
                    envelope: Arc::clone(&envelope),
                    annotations,
                },
            };
            tried.attestations += 1;
            (s.sink)((self.order)(i), Discovered::Attestation(candidate));
        }
        Ok(())
    }

    /// The layers to fetch, grouped by the blob they name (in the order first named): DSSE
    /// envelopes whose annotated predicate type is wanted (or not annotated). Another layer
    /// gets a note; one over the attestation limit is handed over as not examined.
    fn select(
        &self,
        s: Search<'_>,
        layers: &[Descriptor],
        tried: &mut PathTried,
    ) -> Vec<Vec<usize>> {
        let limit = s.registry.max_attestation_bytes();
        let mut groups = BlobGroups::default();
        for (i, layer) in layers.iter().enumerate() {
            let what = format!("{}layer {}", self.label, i + 1);
            if layer.media_type != DSSE_ENVELOPE_MEDIA_TYPE {
                let t = &layer.media_type;
                tried
                    .notes
                    .push(format!("{what} is {t:?}, not a DSSE envelope"));
                continue;
            }
            let claimed = layer
                .annotations
                .as_ref()
                .and_then(|a| a.get(ATT_PREDICATE_TYPE_ANNOTATION));
            let read = match claimed {
                None if self.unannotated => s.wanted.attestations(),
                claimed => s.wanted.fetches(claimed.map(String::as_str)),
            };
            if !read {
                tried.notes.push(match claimed {
                    Some(t) => format!("{what} is an attestation of {t:?}, not one asked for"),
                    None => format!("{what} annotates no predicate type; not fetched"),
                });
                continue;
            }
            if layer.size > limit as u64 {
                let reason = WhyNotExamined::TooLarge {
                    media_type: layer.media_type.clone(),
                    size: layer.size,
                    limit,
                };
                self.not_examined(s, i, reason, tried);
                continue;
            }
            groups.add(i, &layer.digest);
        }
        groups.into_groups()
    }

    /// Every layer naming a blob that could not be used: the first with `reason`, the others
    /// pointing at the first.
    fn not_examined_all(
        &self,
        s: Search<'_>,
        members: &[usize],
        mut reason: WhyNotExamined,
        tried: &mut PathTried,
    ) {
        let first = members.first().copied().unwrap_or_default();
        for &i in members {
            let next = WhyNotExamined::SameBlobAs { layer: first + 1 };
            let this = std::mem::replace(&mut reason, next);
            self.not_examined(s, i, this, tried);
        }
    }

    /// The layer at `index` was not examined.
    fn not_examined(
        &self,
        s: Search<'_>,
        index: usize,
        reason: WhyNotExamined,
        tried: &mut PathTried,
    ) {
        let what = format!("{}layer {}", self.label, index + 1);
        let location = format!("{} layer {}", self.location, index + 1);
        let place = Place {
            order: (self.order)(index),
            what: &what,
            sought: Sought::Attestation,
        };
        s.not_examined_at(tried, place, location, reason);
    }
}
