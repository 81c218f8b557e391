//! Finding the signatures of a digest, with a note for every place looked at. No crypto here.
//!
//! Layouts read: cosign's legacy `sha256-<hex>.sig` tag (one simple-signing layer per
//! signature), and Sigstore bundles attached as OCI 1.1 referrers (cosign v3), found through
//! the referrers API or, where the registry has none, the referrers tag `sha256-<hex>`.
//!
//! Anyone with push rights can write what these places hold, without any signing key. So what
//! is read is bounded (see the limits below and README.md, "Limits"), each candidate is handed
//! to the caller as soon as it is read (the caller verifies it and keeps the outcome, not the
//! bytes), a blob several layers name is fetched once, and a signature location whose content
//! breaks a limit or is not what it claims is handed over as [`Found::Unexamined`] with its
//! reason: it counts as a rejected candidate, so it cannot stop another signature from
//! satisfying the policy, and when nothing does, the verdict says the registry failed (never
//! "unsigned").
//!
//! A registry that fails to answer (unreachable, access denied, an HTTP error, a deadline, an
//! answer of its own API that is not what the API returns) is a [`DiscoverError`], never "no
//! signatures".

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use futures_util::StreamExt as _;
use serde::Serialize;

use crate::candidate::{
    BundleCandidate, COSIGN_SIGN_PREDICATE, PREDICATE_TYPE_ANNOTATION, SignatureCandidate,
};
use crate::error_chain;
use crate::payload::{MAX_PAYLOAD_BYTES, SIGNATURE_ANNOTATION, SIMPLE_SIGNING_MEDIA_TYPE};
use crate::reference::{Digest, ImageRef};
use crate::registry::{
    Descriptor, FetchBudget, ImageManifest, MAX_REFERRERS, ReferrersCut, Registry, RegistryError,
};

/// Most layers a signature manifest (the `.sig` tag, a referrer) may have. cosign appends one
/// layer per signature; its counts are single digits in practice.
pub const MAX_SIGNATURE_LAYERS: usize = 256;
/// Largest Sigstore bundle fetched (a keyless bundle with chain, log entry and timestamps is
/// 10–16 KiB).
pub const MAX_BUNDLE_BYTES: usize = 128 << 10;
/// Largest referrer manifest fetched (cosign's are under 1 KiB: one layer, a few annotations).
pub const MAX_REFERRER_MANIFEST_BYTES: usize = 64 << 10;
/// Most bytes one verification's discovery fetches in all: signature manifests, referrer
/// pages and manifests, payloads and bundles.
pub const MAX_DISCOVERY_BYTES: usize = 16 << 20;
/// Signature blobs (and referrer manifests) fetched at once.
const BLOB_FETCHES: usize = 4;

/// What one lookup path found.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PathTried {
    pub path: String,
    pub found: usize,
    /// Why nothing (or not everything) was found there.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl PathTried {
    fn new(path: &str) -> Self {
        PathTried {
            path: path.to_string(),
            found: 0,
            notes: Vec::new(),
        }
    }
}

/// Everything discovered, collected (for `ocigate discover`; verification takes the
/// candidates one by one from [`discover_each`]).
#[derive(Debug, Default)]
pub struct Discovery {
    /// Legacy cosign signatures.
    pub candidates: Vec<SignatureCandidate>,
    /// Sigstore bundles (cosign v3).
    pub bundles: Vec<BundleCandidate>,
    /// Signature locations not examined, with the reason.
    pub unexamined: Vec<Unexamined>,
    pub paths: Vec<PathTried>,
}

pub const BUNDLE_MEDIA_PREFIX: &str = "application/vnd.dev.sigstore.bundle";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";

impl Discovery {
    /// "tag sha256-….sig: not found" and the like, for a deny reason.
    pub fn summary(&self) -> String {
        summary(&self.paths)
    }
}

/// "tag sha256-….sig: not found" and the like, for a deny reason.
pub fn summary(paths: &[PathTried]) -> String {
    paths
        .iter()
        .map(|p| {
            if p.notes.is_empty() {
                format!("{}: {} found", p.path, p.found)
            } else {
                format!("{}: {}", p.path, p.notes.join("; "))
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// One thing discovery hands over.
#[derive(Debug)]
pub enum Found {
    Signature(SignatureCandidate),
    Bundle(BundleCandidate),
    /// A signature location whose content was not examined, and why.
    Unexamined(Unexamined),
}

/// Where a found thing sits among all found: the `.sig` tag's layers first, then the
/// referrers, each in the order listed. The lookups run concurrently and hand things over as
/// they arrive; sorting by this gives the same order every time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Order {
    path: u8,
    index: usize,
}

/// A signature location that was not examined.
#[derive(Debug)]
pub struct Unexamined {
    /// `tag sha256-<hex>.sig`, `tag sha256-<hex>.sig layer 3`, `referrers API sha256:…`.
    pub location: String,
    pub reason: Unexaminable,
}

/// Why a signature location was not examined. The texts quote what came from the registry
/// escaped (`{:?}`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Unexaminable {
    #[error("{count} layers, more than the {limit} a signature manifest may have")]
    TooManyLayers { count: usize, limit: usize },
    #[error(
        "a {media_type:?} layer of {size} bytes, more than the {limit} bytes allowed for that media type"
    )]
    TooLarge {
        media_type: String,
        size: u64,
        limit: usize,
    },
    #[error("listed as a referrer, but the registry has no manifest {digest}")]
    Missing { digest: Digest },
    #[error("the list of referrers is incomplete")]
    Cut {
        #[source]
        source: ReferrersCut,
    },
    #[error("the Sigstore bundle is not UTF-8 text")]
    NotUtf8,
    #[error("its blob is the one of layer {layer}, which could not be read")]
    SameBlobAs { layer: usize },
    #[error("its content could not be used")]
    Content {
        #[source]
        source: RegistryError,
    },
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoverError {
    #[error("discovering signatures of {subject} at {path}")]
    Registry {
        subject: String,
        path: String,
        #[source]
        source: RegistryError,
    },
}

/// Where discovery hands each thing it finds, as soon as it has it.
pub type Sink<'a> = &'a (dyn Fn(Order, Found) + Sync);

/// Every signature of `subject` (which must carry its digest) that the known layouts hold,
/// collected, within [`MAX_DISCOVERY_BYTES`].
pub async fn discover(
    registry: &Registry,
    subject: &ImageRef,
    digest: &Digest,
) -> Result<Discovery, DiscoverError> {
    let collected = Mutex::new(Vec::new());
    let budget = FetchBudget::new(MAX_DISCOVERY_BYTES);
    let sink = |order: Order, found: Found| {
        crate::sync::lock(&collected).push((order, found));
    };
    let paths = discover_each(registry, subject, digest, &budget, &sink).await?;
    let mut all = crate::sync::into_inner(collected);
    all.sort_by_key(|(order, _)| *order);
    let mut out = Discovery {
        paths,
        ..Discovery::default()
    };
    for (_, found) in all {
        match found {
            Found::Signature(c) => out.candidates.push(c),
            Found::Bundle(b) => out.bundles.push(b),
            Found::Unexamined(u) => out.unexamined.push(u),
        }
    }
    Ok(out)
}

/// Look in every known place for signatures of `subject` (which must carry its digest) and
/// hand each one found to `sink` as soon as it is read, with its [`Order`]. Fetches are
/// charged to `budget`. Returns what each place held.
pub async fn discover_each(
    registry: &Registry,
    subject: &ImageRef,
    digest: &Digest,
    budget: &FetchBudget,
    sink: Sink<'_>,
) -> Result<Vec<PathTried>, DiscoverError> {
    // Both lookups need only the digest: run them concurrently (one round trip, not two).
    let (legacy, referred) = tokio::join!(
        legacy_sig_tag(registry, subject, digest, budget, sink),
        referrers(registry, subject, digest, budget, sink)
    );
    let mut paths = vec![legacy?];
    paths.extend(referred?);
    Ok(paths)
}

/// Whether a failure lies in what one signature location holds (its size, its shape, its
/// digest, a blob or referrer it names that is missing, the budget it would take) — what
/// anyone with push rights can plant — rather than in the registry's answering.
fn lies_in_content(e: &RegistryError) -> bool {
    use crate::registry::RegistryErrorKind as K;
    matches!(
        *e.kind,
        K::TooLarge { .. }
            | K::TooMany { .. }
            | K::BudgetSpent { .. }
            | K::DigestMismatch
            | K::NotAManifest { .. }
            | K::Malformed { .. }
            | K::NotFound
    )
}

/// Record a location as not examined: a note on its path, and the sink.
fn unexamined(
    sink: Sink<'_>,
    tried: &mut PathTried,
    order: Order,
    what: &str,
    location: String,
    reason: Unexaminable,
) {
    tried
        .notes
        .push(format!("{what} not examined: {}", error_chain(&reason)));
    sink(order, Found::Unexamined(Unexamined { location, reason }));
}

async fn legacy_sig_tag(
    registry: &Registry,
    subject: &ImageRef,
    digest: &Digest,
    budget: &FetchBudget,
    sink: Sink<'_>,
) -> Result<PathTried, DiscoverError> {
    let tag = format!("{}.sig", digest.tag_prefix());
    let path = format!("tag {tag}");
    let wrap = failed_at(subject, digest, &path);
    let mut tried = PathTried::new(&path);
    let at = |index| Order { path: 0, index };
    let sig_ref = subject.with_tag(&tag);
    let manifest = match registry
        .get_manifest_capped(&sig_ref, usize::MAX, budget)
        .await
    {
        Ok(Some(m)) => m,
        Ok(None) => {
            tried.notes.push("not found".into());
            return Ok(tried);
        }
        Err(source) if lies_in_content(&source) => {
            let reason = Unexaminable::Content { source };
            unexamined(sink, &mut tried, at(0), "manifest", path.clone(), reason);
            return Ok(tried);
        }
        Err(e) => return Err(wrap(e)),
    };
    if let Some(reason) = too_many_layers(&manifest.bytes) {
        unexamined(sink, &mut tried, at(0), "manifest", path.clone(), reason);
        return Ok(tried);
    }
    let parsed = match ImageManifest::parse(&manifest, &sig_ref.to_string()) {
        Ok(p) => p,
        Err(source) => {
            let reason = Unexaminable::Content { source };
            unexamined(sink, &mut tried, at(0), "manifest", path.clone(), reason);
            return Ok(tried);
        }
    };
    drop(manifest);
    let layers = parsed.layers;
    if layers.is_empty() {
        tried.notes.push("manifest has no layers".into());
    }
    // The signature layers, grouped by the blob they name (in the order first named): each
    // blob is fetched once, verified for every layer that names it, and dropped.
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut group_of: HashMap<&str, usize> = HashMap::new();
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
            let reason = Unexaminable::TooLarge {
                media_type: layer.media_type.clone(),
                size: layer.size,
                limit: MAX_PAYLOAD_BYTES,
            };
            let what = format!("layer {n}");
            unexamined(
                sink,
                &mut tried,
                at(i),
                &what,
                format!("{path} {what}"),
                reason,
            );
            continue;
        }
        match group_of.get(layer.digest.as_str()) {
            Some(g) => groups[*g].push(i),
            None => {
                group_of.insert(layer.digest.as_str(), groups.len());
                groups.push(vec![i]);
            }
        }
    }
    // Up to BLOB_FETCHES blobs are fetched at once (a second signature costs no extra round
    // trip), and handed over in layer order; at most that many payloads are held.
    let layers_ref = &layers;
    let fetches = futures_util::stream::iter(groups.into_iter().filter(|m| !m.is_empty()))
        .map(|members| async move {
            let first = members[0];
            let fetched = registry
                .get_blob_capped(subject, &layers_ref[first], MAX_PAYLOAD_BYTES, budget)
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
                let mut reason = Unexaminable::Content { source };
                for &i in &members {
                    let what = format!("layer {}", i + 1);
                    let location = format!("{path} {what}");
                    let next = Unexaminable::SameBlobAs { layer: first + 1 };
                    let this = std::mem::replace(&mut reason, next);
                    unexamined(sink, &mut tried, at(i), &what, location, this);
                }
                continue;
            }
            Err(e) => return Err(wrap(e)),
        };
        for &i in &members {
            let layer = &layers[i];
            let annotations = layer.annotations.clone().unwrap_or_default();
            let signature = annotations
                .get(SIGNATURE_ANNOTATION)
                .cloned()
                .unwrap_or_default();
            tried.found += 1;
            sink(
                at(i),
                Found::Signature(SignatureCandidate {
                    location: format!("{path} layer {}", i + 1),
                    payload: payload.clone(),
                    signature,
                    annotations,
                }),
            );
        }
    }
    Ok(tried)
}

async fn referrers(
    registry: &Registry,
    subject: &ImageRef,
    digest: &Digest,
    budget: &FetchBudget,
    sink: Sink<'_>,
) -> Result<Vec<PathTried>, DiscoverError> {
    let wrap = |path: &str| failed_at(subject, digest, path);
    let api = "referrers API";
    // The end of the referrers' order: where a note on the list itself goes.
    let after_all = Order {
        path: 1,
        index: usize::MAX,
    };
    if let Some(list) = registry
        .get_referrers_budgeted(subject, digest, budget)
        .await
        .map_err(wrap(api))?
    {
        let mut tried = PathTried::new(api);
        if let Some(cut) = list.cut {
            let reason = Unexaminable::Cut { source: cut };
            unexamined(sink, &mut tried, after_all, "the rest", api.into(), reason);
        }
        examine(
            registry,
            subject,
            digest,
            api,
            list.descriptors,
            budget,
            sink,
            &mut tried,
        )
        .await?;
        return Ok(vec![tried]);
    }
    let mut paths = Vec::new();
    if subject.registry().is_some() {
        let mut tried = PathTried::new(api);
        tried
            .notes
            .push("the registry has no referrers API; using the referrers tag".into());
        paths.push(tried);
    }
    let tag = digest.tag_prefix();
    let path = format!("referrers tag {tag}");
    let mut tried = PathTried::new(&path);
    let tag_ref = subject.with_tag(&tag);
    let index = match registry
        .get_manifest_capped(&tag_ref, usize::MAX, budget)
        .await
    {
        Ok(Some(index)) => index,
        Ok(None) => {
            tried.notes.push("not found".into());
            paths.push(tried);
            return Ok(paths);
        }
        Err(source) if lies_in_content(&source) => {
            let reason = Unexaminable::Content { source };
            unexamined(sink, &mut tried, after_all, "index", path.clone(), reason);
            paths.push(tried);
            return Ok(paths);
        }
        Err(e) => return Err(wrap(&path)(e)),
    };
    let mut listed = match ImageManifest::parse(&index, &tag_ref.to_string()) {
        Ok(parsed) => parsed.manifests,
        Err(source) => {
            let reason = Unexaminable::Content { source };
            unexamined(sink, &mut tried, after_all, "index", path.clone(), reason);
            paths.push(tried);
            return Ok(paths);
        }
    };
    drop(index);
    if listed.len() > MAX_REFERRERS {
        listed.truncate(MAX_REFERRERS);
        let reason = Unexaminable::Cut {
            source: ReferrersCut::Entries {
                limit: MAX_REFERRERS,
            },
        };
        unexamined(
            sink,
            &mut tried,
            after_all,
            "the rest",
            path.clone(),
            reason,
        );
    }
    examine(
        registry, subject, digest, &path, listed, budget, sink, &mut tried,
    )
    .await?;
    paths.push(tried);
    Ok(paths)
}

/// Look at each referrer; hand over the Sigstore bundles that refer to `digest`.
#[allow(clippy::too_many_arguments)]
async fn examine(
    registry: &Registry,
    subject: &ImageRef,
    digest: &Digest,
    path: &str,
    descs: Vec<Descriptor>,
    budget: &FetchBudget,
    sink: Sink<'_>,
    tried: &mut PathTried,
) -> Result<(), DiscoverError> {
    let wrap = failed_at(subject, digest, path);
    let mut seen_manifests = HashSet::new();
    let mut seen_bundles = HashSet::new();
    for (i, desc) in descs.into_iter().enumerate() {
        let at = Order { path: 1, index: i };
        let Ok(d) = Digest::parse(&desc.digest) else {
            tried
                .notes
                .push(format!("{:?} is not a digest", desc.digest));
            continue;
        };
        let label = short(d.as_str());
        if !seen_manifests.insert(d.clone()) {
            tried.notes.push(format!("{label} is listed twice"));
            continue;
        }
        let declared = desc.artifact_type.unwrap_or_default();
        if !declared.is_empty()
            && declared != OCI_EMPTY
            && !declared.starts_with(BUNDLE_MEDIA_PREFIX)
        {
            tried
                .notes
                .push(format!("{label} is {declared:?}, not a Sigstore bundle"));
            continue;
        }
        let location = format!("{path} {label}");
        let fetched = registry
            .get_manifest_capped(
                &subject.with_digest(d.clone()),
                MAX_REFERRER_MANIFEST_BYTES,
                budget,
            )
            .await;
        let m = match fetched {
            Ok(Some(m)) => m,
            // The registry lists what it does not have: an inconsistency of the registry,
            // not an absence of signatures.
            Ok(None) => {
                let reason = Unexaminable::Missing { digest: d };
                unexamined(sink, tried, at, &label, location, reason);
                continue;
            }
            Err(source) if lies_in_content(&source) => {
                let reason = Unexaminable::Content { source };
                unexamined(sink, tried, at, &label, location, reason);
                continue;
            }
            Err(e) => return Err(wrap(e)),
        };
        if let Some(reason) = too_many_layers(&m.bytes) {
            unexamined(sink, tried, at, &label, location, reason);
            continue;
        }
        let manifest = match ImageManifest::parse(&m, path) {
            Ok(parsed) => parsed,
            Err(source) => {
                let reason = Unexaminable::Content { source };
                unexamined(sink, tried, at, &label, location, reason);
                continue;
            }
        };
        let kind = manifest
            .artifact_type
            .clone()
            .or_else(|| manifest.config.as_ref().map(|c| c.media_type.clone()))
            .unwrap_or_default();
        if !kind.starts_with(BUNDLE_MEDIA_PREFIX) {
            tried
                .notes
                .push(format!("{label} is {kind:?}, not a Sigstore bundle"));
            continue;
        }
        if manifest.subject.as_ref().map(|s| s.digest.as_str()) != Some(digest.as_str()) {
            tried.notes.push(format!("{label} refers to another image"));
            continue;
        }
        let predicate = manifest
            .annotations
            .as_ref()
            .and_then(|a| a.get(PREDICATE_TYPE_ANNOTATION));
        if let Some(p) = predicate.filter(|p| p.as_str() != COSIGN_SIGN_PREDICATE) {
            tried.notes.push(format!(
                "{label} is an attestation ({p:?}), not a signature"
            ));
            continue;
        }
        let Some(layer) = manifest
            .layers
            .iter()
            .find(|l| l.media_type.starts_with(BUNDLE_MEDIA_PREFIX))
        else {
            tried.notes.push(format!("{label} has no bundle layer"));
            continue;
        };
        if layer.size > MAX_BUNDLE_BYTES as u64 {
            let reason = Unexaminable::TooLarge {
                media_type: layer.media_type.clone(),
                size: layer.size,
                limit: MAX_BUNDLE_BYTES,
            };
            unexamined(sink, tried, at, &label, location, reason);
            continue;
        }
        if !seen_bundles.insert(layer.digest.clone()) {
            tried.notes.push(format!(
                "{label} holds the same bundle as an earlier referrer"
            ));
            continue;
        }
        let bytes = match registry
            .get_blob_capped(subject, layer, MAX_BUNDLE_BYTES, budget)
            .await
        {
            Ok(bytes) => bytes,
            Err(source) if lies_in_content(&source) => {
                let reason = Unexaminable::Content { source };
                unexamined(sink, tried, at, &label, location, reason);
                continue;
            }
            Err(e) => return Err(wrap(e)),
        };
        let Ok(json) = String::from_utf8(bytes) else {
            unexamined(sink, tried, at, &label, location, Unexaminable::NotUtf8);
            continue;
        };
        tried.found += 1;
        sink(
            at,
            Found::Bundle(BundleCandidate {
                location: format!("{path} {}", short(m.digest.as_str())),
                json,
            }),
        );
    }
    Ok(())
}

/// Whether a manifest lists more layers than a signature manifest may have, counted before
/// any layer is built (a manifest that does not parse is left to [`ImageManifest::parse`]).
fn too_many_layers(manifest: &[u8]) -> Option<Unexaminable> {
    #[derive(serde::Deserialize)]
    struct Count {
        #[serde(default)]
        layers: Vec<serde::de::IgnoredAny>,
    }
    let count = serde_json::from_slice::<Count>(manifest).ok()?.layers.len();
    (count > MAX_SIGNATURE_LAYERS).then_some(Unexaminable::TooManyLayers {
        count,
        limit: MAX_SIGNATURE_LAYERS,
    })
}

/// How a registry failure at `path` becomes a discovery error (never "no signatures").
fn failed_at(
    subject: &ImageRef,
    digest: &Digest,
    path: &str,
) -> impl Fn(RegistryError) -> DiscoverError + use<> {
    let subject = format!("{}@{digest}", subject.name());
    let path = path.to_string();
    move |source| DiscoverError::Registry {
        subject: subject.clone(),
        path: path.clone(),
        source,
    }
}

/// `sha256:0123456789ab…` for messages.
fn short(digest: &str) -> String {
    match digest.get(..19) {
        Some(s) if digest.len() > 19 => format!("{s}…"),
        _ => digest.to_string(),
    }
}
