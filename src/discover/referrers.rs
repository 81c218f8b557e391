//! Sigstore bundles attached as OCI 1.1 referrers (cosign v3, GitHub) and in-toto referrers:
//! the referrers API, or where the registry has none, the referrers tag schema; each referrer
//! screened on its manifest (artifact type, subject, predicate type annotation) before a blob
//! is fetched. Owns reading referrers; must not verify anything or look at the `.sig` tag.

use std::collections::HashSet;

use super::att_tag::Envelopes;
use super::wanted::fetch_attestation;
use super::{
    AFTER_ALL_REFERRERS, BUNDLE_MEDIA_PREFIX, DiscoverError, Discovered, MAX_BUNDLE_BYTES,
    MAX_REFERRER_MANIFEST_BYTES, OCI_EMPTY, Order, PathTried, Place, Search, Sought, Tagged,
    WhyNotExamined, lies_in_content, referrer, short, too_many_layers,
};
use crate::candidate::{
    AttestationCandidate, AttestationForm, BundleCandidate, COSIGN_SIGN_PREDICATE,
    IN_TOTO_MEDIA_TYPE, PREDICATE_TYPE_ANNOTATION,
};
use crate::reference::Digest;
use crate::registry::{
    Descriptor, ImageManifest, MAX_REFERRERS, Manifest, ReferrersCut, RegistryError,
};

/// Sigstore bundles attached as OCI 1.1 referrers: through the referrers API, or where the
/// registry has none, the referrers tag `sha256-<hex>`. While it is not known whether the
/// registry has the API, the tag is fetched alongside it (one round trip instead of two on a
/// registry without it); that answer is read only if the API turns out to be missing.
pub(super) async fn referrers(s: Search<'_>) -> Result<Vec<PathTried>, DiscoverError> {
    let api = "referrers API";
    let tag = s.digest.tag_prefix();
    let asked = s
        .registry
        .get_referrers_budgeted(s.subject, s.digest, s.budget);
    let (listed, ahead) = match s.registry.has_referrers_api(s.subject) {
        None => {
            let (listed, ahead) = tokio::join!(asked, s.fetch_tagged(&tag));
            (listed, Some(ahead))
        }
        Some(_) => (asked.await, None),
    };
    if let Some(list) = listed.map_err(s.failed_at(api))? {
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
    let fetched = match ahead {
        Some(fetched) => fetched,
        None => s.fetch_tagged(&tag).await,
    };
    paths.push(referrers_tag(s, &tag, fetched).await?);
    Ok(paths)
}

/// The referrers tag schema: an index under the tag `sha256-<hex>` listing the referrers,
/// as the registry answered for that tag.
async fn referrers_tag(
    s: Search<'_>,
    tag: &str,
    fetched: Result<Option<Manifest>, RegistryError>,
) -> Result<PathTried, DiscoverError> {
    let path = format!("referrers tag {tag}");
    let mut tried = PathTried::new(&path);
    let index = s.read_tagged(tag, fetched, &path, Tagged::ReferrersIndex, &mut tried)?;
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

    /// Where a note on it goes, and what was looked for there.
    fn place(&self, sought: Sought) -> Place<'_> {
        Place {
            order: self.at,
            what: &self.label,
            sought,
        }
    }
}

/// Look at each referrer; hand over the Sigstore bundles that refer to the digest, and the
/// attestations wanted.
async fn examine(
    s: Search<'_>,
    path: &str,
    descs: Vec<Descriptor>,
    tried: &mut PathTried,
) -> Result<(), DiscoverError> {
    let mut seen_manifests = HashSet::new();
    let mut seen_bundles = HashSet::new();
    for (i, desc) in descs.into_iter().enumerate() {
        let Some(r) = listed_referrer(s, path, i, desc, &mut seen_manifests, tried) else {
            continue;
        };
        let Some((manifest, at_digest)) = referrer_manifest(s, &r, tried).await? else {
            continue;
        };
        let found = match classify(&manifest, s, &r.label) {
            Ok(found) => found,
            Err(note) => {
                tried.notes.push(note);
                continue;
            }
        };
        if let Referred::InToto = found {
            let order = |layer: usize| Order {
                layer: layer + 1,
                ..r.at
            };
            let at = Envelopes {
                path: r.path,
                location: r.location(),
                label: format!("{} ", r.label),
                order: &order,
                unannotated: true,
            };
            at.hand_over(s, &manifest.layers, tried).await?;
            continue;
        }
        let (layer, bundle) = match found {
            Referred::Signature(layer) => (layer, BundleIs::Signature),
            Referred::Unannotated(layer) => (layer, BundleIs::Either),
            Referred::Attestation(layer, claimed) => (layer, BundleIs::Attestation(claimed)),
            Referred::InToto => continue,
        };
        let at = Bundled {
            r: &r,
            layer,
            manifest_digest: &at_digest,
            is: bundle,
        };
        if at.too_large(s, tried) {
            continue;
        }
        if !seen_bundles.insert(layer.digest.clone()) {
            tried.notes.push(format!(
                "{} holds the same bundle as an earlier referrer",
                r.label
            ));
            continue;
        }
        at.hand_over(s, tried).await?;
    }
    Ok(())
}

/// A listed referrer worth fetching: its digest parses, it is listed once, and its declared
/// artifact type (if any) is a Sigstore bundle's (or in-toto's, when attestations are
/// wanted). Otherwise None, with a note.
fn listed_referrer<'p>(
    s: Search<'_>,
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
    let in_toto = declared == IN_TOTO_MEDIA_TYPE && s.wanted.attestations();
    if !declared.is_empty()
        && declared != OCI_EMPTY
        && !declared.starts_with(BUNDLE_MEDIA_PREFIX)
        && !in_toto
    {
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

/// What a referrer of the digest holds, as its manifest says.
enum Referred<'m> {
    /// A bundle whose predicate type annotation is cosign's signature's.
    Signature(&'m Descriptor),
    /// A bundle without a predicate type annotation: a signature, or an attestation.
    Unannotated(&'m Descriptor),
    /// A bundle whose annotated predicate type is another, and wanted.
    Attestation(&'m Descriptor, String),
    /// An in-toto referrer (attestations wanted): DSSE envelope layers.
    InToto,
}

/// What the referrer `manifest` of `s.digest` holds that is looked for, or the note saying why
/// nothing of it is.
fn classify<'m>(
    manifest: &'m ImageManifest,
    s: Search<'_>,
    label: &str,
) -> Result<Referred<'m>, String> {
    let kind = manifest
        .artifact_type
        .clone()
        .or_else(|| manifest.config.as_ref().map(|c| c.media_type.clone()))
        .unwrap_or_default();
    let in_toto = kind == IN_TOTO_MEDIA_TYPE && s.wanted.attestations();
    if !kind.starts_with(BUNDLE_MEDIA_PREFIX) && !in_toto {
        return Err(format!("{label} is {kind:?}, not a Sigstore bundle"));
    }
    if manifest.subject.as_ref().map(|d| d.digest.as_str()) != Some(s.digest.as_str()) {
        return Err(format!("{label} refers to another image"));
    }
    if in_toto {
        return Ok(Referred::InToto);
    }
    let layer = manifest
        .layers
        .iter()
        .find(|l| l.media_type.starts_with(BUNDLE_MEDIA_PREFIX))
        .ok_or_else(|| format!("{label} has no bundle layer"));
    let predicate = manifest
        .annotations
        .as_ref()
        .and_then(|a| a.get(PREDICATE_TYPE_ANNOTATION));
    match predicate {
        None => Ok(Referred::Unannotated(layer?)),
        Some(p) if p == COSIGN_SIGN_PREDICATE => Ok(Referred::Signature(layer?)),
        Some(p) if !s.wanted.attestations() => Err(format!(
            "{label} is an attestation ({p:?}), not a signature"
        )),
        Some(p) if !s.wanted.fetches(Some(p)) => Err(format!(
            "{label} is an attestation of {p:?}, not one asked for"
        )),
        Some(p) => Ok(Referred::Attestation(layer?, p.clone())),
    }
}

/// What a bundle referrer is handed over as.
enum BundleIs {
    /// A signature candidate.
    Signature,
    /// A signature candidate, and an attestation candidate too when attestations are wanted.
    Either,
    /// An attestation candidate of this (annotated, wanted) predicate type.
    Attestation(String),
}

/// A bundle referrer to fetch and hand over.
struct Bundled<'a> {
    r: &'a Listed<'a>,
    layer: &'a Descriptor,
    manifest_digest: &'a Digest,
    is: BundleIs,
}

impl Bundled<'_> {
    /// Its limit (a signature bundle's, or an attestation's), and what was looked for.
    fn limit(&self, s: Search<'_>) -> (usize, Sought) {
        match &self.is {
            BundleIs::Attestation(_) => (s.registry.max_attestation_bytes(), Sought::Attestation),
            _ => (MAX_BUNDLE_BYTES, Sought::Signature),
        }
    }

    /// Whether its layer declares more than its limit (then it is handed over as not
    /// examined, and not fetched).
    fn too_large(&self, s: Search<'_>, tried: &mut PathTried) -> bool {
        let (limit, sought) = self.limit(s);
        if self.layer.size <= limit as u64 {
            return false;
        }
        let reason = WhyNotExamined::TooLarge {
            media_type: self.layer.media_type.clone(),
            size: self.layer.size,
            limit,
        };
        s.not_examined_at(tried, self.r.place(sought), self.r.location(), reason);
        true
    }

    /// Fetch the bundle within its limit and hand it over (or hand it over as not examined).
    async fn hand_over(self, s: Search<'_>, tried: &mut PathTried) -> Result<(), DiscoverError> {
        let r = self.r;
        let (_, sought) = self.limit(s);
        let (fetched, _turn) = match self.is {
            BundleIs::Attestation(_) => {
                let f = fetch_attestation(s, self.layer).await;
                (f.bytes, f.turn)
            }
            _ => {
                let f = s
                    .registry
                    .get_blob_capped(s.subject, self.layer, MAX_BUNDLE_BYTES, s.budget)
                    .await;
                (f, None)
            }
        };
        let bytes = match fetched {
            Ok(bytes) => bytes,
            Err(source) if lies_in_content(&source) => {
                let reason = WhyNotExamined::Content { source };
                s.not_examined_at(tried, r.place(sought), r.location(), reason);
                return Ok(());
            }
            Err(e) => return Err(s.failed_at(r.path)(e)),
        };
        let Ok(json) = String::from_utf8(bytes) else {
            let reason = WhyNotExamined::NotUtf8;
            s.not_examined_at(tried, r.place(sought), r.location(), reason);
            return Ok(());
        };
        // The full digest: a signature's location is evidence a program may fetch again.
        let bundle = BundleCandidate {
            location: format!("{} {}", r.path, self.manifest_digest),
            json,
        };
        let attestation = |bundle, claimed_type| AttestationCandidate {
            location: r.location(),
            claimed_type,
            form: AttestationForm::Bundle(bundle),
        };
        match self.is {
            BundleIs::Attestation(claimed) => {
                tried.attestations += 1;
                let a = attestation(bundle, Some(claimed));
                (s.sink)(r.at, Discovered::Attestation(a));
            }
            BundleIs::Either if s.wanted.attestations() => {
                tried.found += 1;
                tried.attestations += 1;
                let a = attestation(bundle.clone(), None);
                (s.sink)(r.at, Discovered::Bundle(bundle));
                (s.sink)(r.at, Discovered::Attestation(a));
            }
            _ => {
                tried.found += 1;
                (s.sink)(r.at, Discovered::Bundle(bundle));
            }
        }
        Ok(())
    }
}
