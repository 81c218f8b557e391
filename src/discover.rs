//! Finding the signatures and attestations of a digest, with a note for every place looked at.
//! No crypto here.
//!
//! Layouts read: cosign's legacy `sha256-<hex>.sig` tag (one simple-signing layer per
//! signature), and Sigstore bundles attached as OCI 1.1 referrers (cosign v3), found through
//! the referrers API or, where the registry has none, the referrers tag `sha256-<hex>`. When
//! attestations are [`Wanted`]: cosign's legacy `sha256-<hex>.att` tag (one DSSE envelope layer
//! per attestation), bundle referrers whose predicate type is not cosign's signature's (cosign
//! v3, GitHub), and in-toto referrers (DSSE envelope layers). An attestation blob is fetched
//! only when the predicate type its manifest or layer annotates is wanted, within its own
//! limits (see [`ATTESTATION_BUDGET_BLOBS`] and [`MAX_ATTESTATION_BYTES`]).
//!
//! Anyone with push rights can write what these places hold, without any signing key. So what
//! is read is bounded (see the limits below and README.md, "Limits"), each candidate is handed
//! to the caller as soon as it is read (the caller verifies it and keeps the outcome, not the
//! bytes), a blob several layers name is fetched once, and a signature location whose content
//! breaks a limit or is not what it claims is handed over as [`Discovered::NotExamined`] with its
//! reason: it counts as a rejected candidate, so it cannot stop another signature from
//! satisfying the policy, and when nothing does, the verdict says the registry failed (never
//! "unsigned").
//!
//! A registry that fails to answer (unreachable, access denied, an HTTP error, a deadline, an
//! answer of its own API that is not what the API returns) is a [`DiscoverError`], never "no
//! signatures".

use std::sync::Mutex;

use serde::Serialize;

use crate::candidate::{AttestationCandidate, BundleCandidate, SignatureCandidate};
use crate::error_chain;
use crate::reference::{Digest, ImageRef};
pub use crate::registry::MAX_ATTESTATION_BYTES;
use crate::registry::{
    FetchBudget, ImageManifest, Manifest, ReferrersCut, Registry, RegistryError,
};

mod att_tag;
mod referrers;
mod sig_tag;
mod wanted;

use att_tag::legacy_att_tag;
use referrers::referrers;
use sig_tag::legacy_sig_tag;
use wanted::AttestationFetches;
pub use wanted::{
    ATTESTATION_BUDGET_BLOBS, AttestationKind, AttestationSummary, LARGE_ATTESTATION_BYTES, Sought,
    Wanted,
};

/// Most layers a signature or attestation manifest (the `.sig` or `.att` tag, a referrer) may
/// have. cosign appends one layer per signature; its counts are single digits in practice.
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
    /// The place, as notes and deny reasons name it: `tag sha256-<hex>.sig`,
    /// `tag sha256-<hex>.att`, `referrers API` or `referrers tag sha256-<hex>`.
    pub path: String,
    /// Signature candidates handed over from there (one per `.sig` layer, one per bundle);
    /// locations not examined are not counted.
    pub found: usize,
    /// Attestation candidates handed over from there (one per envelope layer, one per bundle).
    #[serde(skip_serializing_if = "is_zero")]
    pub attestations: usize,
    /// Why nothing (or not everything) was found there.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// What the place holds: signatures (and, for referrers, attestations too), or only
    /// attestations (the `.att` tag: `"holds": "attestation"`; not written otherwise).
    #[serde(skip_serializing_if = "Sought::is_signature")]
    pub holds: Sought,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Sought {
    fn is_signature(&self) -> bool {
        *self == Sought::Signature
    }
}

impl PathTried {
    fn new(path: &str) -> Self {
        PathTried {
            path: path.to_string(),
            found: 0,
            attestations: 0,
            notes: Vec::new(),
            holds: Sought::Signature,
        }
    }

    /// What was handed over from there, for people: `2 signature(s)`, `1 attestation(s)`,
    /// `1 signature(s), 3 attestation(s)`.
    pub fn counts(&self) -> String {
        match (self.holds, self.found, self.attestations) {
            (Sought::Attestation, _, a) => format!("{a} attestation(s)"),
            (Sought::Signature, f, 0) => format!("{f} signature(s)"),
            (Sought::Signature, 0, a) => format!("{a} attestation(s)"),
            (Sought::Signature, f, a) => format!("{f} signature(s), {a} attestation(s)"),
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
    /// Attestations of the wanted types (envelopes and bundles), not verified.
    pub attestations: Vec<AttestationCandidate>,
    /// Signature and attestation locations not examined, with the reason.
    pub not_examined: Vec<NotExamined>,
    /// Every place looked at: the `.sig` tag first, the `.att` tag when attestations are
    /// wanted, then the referrers API, the referrers tag, or both (the API with a note that
    /// the registry has none).
    pub paths: Vec<PathTried>,
}

/// Prefix of every Sigstore bundle media type (`….bundle.v0.3+json` and the others): what a
/// referrer's artifact type (or config media type) and its bundle layer must start with.
pub const BUNDLE_MEDIA_PREFIX: &str = "application/vnd.dev.sigstore.bundle";
/// The OCI 1.1 empty descriptor's media type: the config of cosign 3's bundle referrers, and an
/// artifact type a listed referrer may declare and still be fetched.
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
                format!("{}: {} found", p.path, p.found + p.attestations)
            } else {
                format!("{}: {}", p.path, p.notes.join("; "))
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// One thing discovery hands over: a signature or a bundle to verify, an attestation (only
/// when [`Wanted`]), or a location it could not examine.
#[derive(Debug)]
pub enum Discovered {
    /// One simple-signing layer of the `.sig` tag: its payload blob and signature annotation.
    Signature(SignatureCandidate),
    /// The JSON of a Sigstore bundle from a referrer whose subject is the digest.
    Bundle(BundleCandidate),
    /// An attestation of a wanted predicate type (as annotated; or not annotated at all): a
    /// DSSE envelope layer of the `.att` tag or an in-toto referrer, or a bundle referrer.
    Attestation(AttestationCandidate),
    /// A location whose content was not examined, and why.
    NotExamined(NotExamined),
}

/// Where a found thing sits among all found: the `.sig` tag's layers first, then the `.att`
/// tag's, then the referrers (and their layers), each in the order listed. The lookups run
/// concurrently and hand things over as they arrive; sorting by this gives the same order
/// every time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Order {
    path: u8,
    index: usize,
    layer: usize,
}

/// A signature or attestation location that was not examined.
#[derive(Debug)]
pub struct NotExamined {
    /// `tag sha256-<hex>.sig`, `tag sha256-<hex>.att layer 3`, `referrers API sha256:…`.
    pub location: String,
    /// Why; the verdict counts a signature location as a rejected candidate (a registry
    /// failure, never "unsigned").
    pub reason: WhyNotExamined,
    /// What was looked for there: a signature (also a referrer not yet known to be either), or
    /// an attestation (the `.att` tag, an attestation referrer, an envelope layer).
    pub sought: Sought,
}

/// Why a location was not examined. The texts quote what came from the registry escaped
/// (`{:?}`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WhyNotExamined {
    /// The `.sig` manifest or a referrer's manifest lists more than [`MAX_SIGNATURE_LAYERS`]
    /// layers (counted before the manifest is parsed).
    #[error("{count} layers, more than the {limit} a signature manifest may have")]
    TooManyLayers {
        /// Entries in the manifest's `layers`.
        count: usize,
        /// [`MAX_SIGNATURE_LAYERS`].
        limit: usize,
    },
    /// A layer's declared size is over the limit for its kind; its blob was not fetched.
    #[error(
        "a {media_type:?} layer of {size} bytes, more than the {limit} bytes allowed for that media type"
    )]
    TooLarge {
        /// The layer's `mediaType` as the manifest declares it (simple signing or a bundle).
        media_type: String,
        /// The layer descriptor's `size`, in bytes, as declared (not measured).
        size: u64,
        /// In bytes: [`MAX_PAYLOAD_BYTES`](crate::payload::MAX_PAYLOAD_BYTES) for a `.sig`
        /// layer, [`MAX_BUNDLE_BYTES`] for a signature bundle layer,
        /// [`Registry::max_attestation_bytes`] for an attestation.
        limit: usize,
    },
    /// A referrer is listed (API or referrers tag) but the registry has no manifest at its
    /// digest: the registry is inconsistent, which is not an absence of signatures.
    #[error("listed as a referrer, but the registry has no manifest {digest}")]
    Missing {
        /// The digest the listing gives for the referrer.
        digest: Digest,
    },
    /// The list of referrers was not read to its end; the referrers past the cut are unseen.
    #[error("the list of referrers is incomplete")]
    Cut {
        /// Which limit cut it: too many entries, too many pages, or a page refused.
        #[source]
        source: ReferrersCut,
    },
    /// A bundle blob was fetched within its limit but is not UTF-8, so it cannot be bundle JSON.
    #[error("the Sigstore bundle is not UTF-8 text")]
    NotUtf8,
    /// A `.sig` or envelope layer naming the same blob as an earlier layer whose fetch failed
    /// on its content; the blob is fetched once and the earlier layer's reason carries the
    /// cause.
    #[error("its blob is the one of layer {layer}, which could not be read")]
    SameBlobAs {
        /// That earlier layer, counted from 1 (as notes and locations count layers).
        layer: usize,
    },
    /// What the location holds breaks a limit or is not what it claims: too large, too many
    /// entries, over the discovery budget, a digest mismatch, not a manifest, malformed, gone.
    #[error("its content could not be used")]
    Content {
        /// The registry error, of a kind anyone with push rights can cause (not a failure to
        /// answer, which is a [`DiscoverError`]).
        #[source]
        source: RegistryError,
    },
}

/// A registry that failed to answer while signatures were looked for: the verdict says the
/// registry failed, never "no signatures".
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoverError {
    /// A request at one place failed (unreachable, access denied, an HTTP error, a deadline,
    /// an answer of the registry's API that is not what the API returns).
    #[error("discovering signatures of {subject} at {path}")]
    Registry {
        /// The signed image as `registry/repository@sha256:<hex>`.
        subject: String,
        /// The place being read: `tag sha256-<hex>.sig`, `referrers API` or
        /// `referrers tag sha256-<hex>`.
        path: String,
        /// The registry's failure.
        #[source]
        source: RegistryError,
    },
}

/// Where discovery hands each thing it finds, as soon as it has it.
pub type Sink<'a> = &'a (dyn Fn(Order, Discovered) + Sync);

/// Every signature of `subject` (which must carry its digest) that the known layouts hold,
/// and the attestations `wanted`, collected, within [`MAX_DISCOVERY_BYTES`] (and the
/// attestations' own limits). Everything found is held: for a listing, not for verifying.
pub async fn discover(
    registry: &Registry,
    subject: &ImageRef,
    digest: &Digest,
    wanted: &Wanted,
) -> Result<Discovery, DiscoverError> {
    let (mut out, attestations) = collect(registry, subject, digest, wanted, |a| a).await?;
    out.attestations = attestations;
    Ok(out)
}

/// What `ocigate discover` lists: every signature, and a summary of every attestation (of
/// any type), read as each is found: no attestation's bytes are kept, so the listing holds
/// no more than verifying does. [`Discovery::attestations`] is left empty.
pub async fn list(
    registry: &Registry,
    subject: &ImageRef,
    digest: &Digest,
) -> Result<(Discovery, Vec<AttestationSummary>), DiscoverError> {
    collect(registry, subject, digest, &Wanted::All, |a| {
        AttestationSummary::of(&a)
    })
    .await
}

/// Everything discovered, in [`Order`]; each attestation made into what `keep` makes of it as
/// soon as it is found.
async fn collect<T: Send>(
    registry: &Registry,
    subject: &ImageRef,
    digest: &Digest,
    wanted: &Wanted,
    keep: impl Fn(AttestationCandidate) -> T + Sync,
) -> Result<(Discovery, Vec<T>), DiscoverError> {
    let collected = Mutex::new(Vec::new());
    let kept = Mutex::new(Vec::new());
    let budget = FetchBudget::new(MAX_DISCOVERY_BYTES);
    let sink = |order: Order, found: Discovered| match found {
        Discovered::Attestation(a) => crate::sync::lock(&kept).push((order, keep(a))),
        other => crate::sync::lock(&collected).push((order, other)),
    };
    let paths = discover_each(registry, subject, digest, &budget, wanted, &sink).await?;
    let mut all = crate::sync::into_inner(collected);
    all.sort_by_key(|(order, _)| *order);
    let mut out = Discovery {
        paths,
        ..Discovery::default()
    };
    for (_, found) in all {
        match found {
            Discovered::Signature(c) => out.candidates.push(c),
            Discovered::Bundle(b) => out.bundles.push(b),
            Discovered::Attestation(a) => out.attestations.push(a),
            Discovered::NotExamined(u) => out.not_examined.push(u),
        }
    }
    let mut attestations = crate::sync::into_inner(kept);
    attestations.sort_by_key(|(order, _)| *order);
    Ok((out, attestations.into_iter().map(|(_, a)| a).collect()))
}

/// Look in every known place for signatures of `subject` (which must carry its digest), and
/// for the attestations `wanted`, and hand each one found to `sink` as soon as it is read,
/// with its [`Order`]. Manifests, signature blobs and signature bundles are charged to
/// `budget`; attestation blobs to a budget of their own for this call (see
/// [`ATTESTATION_BUDGET_BLOBS`]), at most one blob over [`LARGE_ATTESTATION_BYTES`] fetched
/// or held at a time. With [`Wanted::Signatures`], no attestation is looked for. Returns what
/// each place held.
pub async fn discover_each(
    registry: &Registry,
    subject: &ImageRef,
    digest: &Digest,
    budget: &FetchBudget,
    wanted: &Wanted,
    sink: Sink<'_>,
) -> Result<Vec<PathTried>, DiscoverError> {
    let fetches = AttestationFetches::new(registry.max_attestation_bytes());
    let search = Search {
        registry,
        subject,
        digest,
        budget,
        sink,
        wanted,
        attestations: &fetches,
    };
    // Every lookup needs only the digest: run them concurrently (one round trip, not three).
    let att = async {
        if wanted.attestations() {
            legacy_att_tag(search).await.map(Some)
        } else {
            Ok(None)
        }
    };
    let sig = async {
        if wanted.signatures() {
            legacy_sig_tag(search).await.map(Some)
        } else {
            Ok(None)
        }
    };
    let (legacy, att, referred) = tokio::join!(sig, att, referrers(search));
    let mut paths: Vec<PathTried> = legacy?.into_iter().collect();
    paths.extend(att?);
    paths.extend(referred?);
    Ok(paths)
}

/// Layers grouped by the blob they name, in the order first named: a blob several layers
/// name is fetched once and handed over for each (the `.sig` and `.att` tags).
#[derive(Default)]
struct BlobGroups<'l> {
    groups: Vec<Vec<usize>>,
    index: std::collections::HashMap<&'l str, usize>,
}

impl<'l> BlobGroups<'l> {
    /// Layer `i`, naming the blob `digest`.
    fn add(&mut self, i: usize, digest: &'l str) {
        match self.index.get(digest) {
            Some(g) => self.groups[*g].push(i),
            None => {
                self.index.insert(digest, self.groups.len());
                self.groups.push(vec![i]);
            }
        }
    }

    /// The groups, each the layers naming one blob.
    fn into_groups(self) -> Vec<Vec<usize>> {
        self.groups
    }
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

/// One search for the signatures of a digest: where to look, the budget every fetch is charged
/// to, and where each thing found goes.
#[derive(Clone, Copy)]
struct Search<'a> {
    registry: &'a Registry,
    /// The signed image (its repository is where signatures are looked for).
    subject: &'a ImageRef,
    digest: &'a Digest,
    budget: &'a FetchBudget,
    sink: Sink<'a>,
    /// Which attestations are looked for.
    wanted: &'a Wanted,
    /// How attestation blobs are fetched: their budget, one large at a time.
    attestations: &'a AttestationFetches,
}

/// Places of the `.sig` tag's layers (before the `.att` tag's and the referrers').
fn sig_layer(index: usize) -> Order {
    Order {
        path: 0,
        index,
        layer: 0,
    }
}

/// Places of the `.att` tag's layers (before the referrers').
fn att_layer(index: usize) -> Order {
    Order {
        path: 1,
        index,
        layer: 0,
    }
}

/// The place of the `index`th referrer listed.
fn referrer(index: usize) -> Order {
    Order {
        path: 2,
        index,
        layer: 0,
    }
}

/// The end of the referrers' order: where a note on the list itself goes.
const AFTER_ALL_REFERRERS: Order = Order {
    path: 2,
    index: usize::MAX,
    layer: 0,
};

/// What a tag looked at holds.
#[derive(Clone, Copy)]
enum Tagged {
    /// cosign's `.sig` manifest: one layer per signature (their count is bounded).
    Signatures,
    /// cosign's `.att` manifest: one layer per attestation (their count is bounded).
    Attestations,
    /// The referrers tag's index.
    ReferrersIndex,
}

impl Tagged {
    /// How notes name it.
    fn what(self) -> &'static str {
        match self {
            Tagged::Signatures | Tagged::Attestations => "manifest",
            Tagged::ReferrersIndex => "index",
        }
    }

    /// Where a note on it goes among the things found.
    fn order(self) -> Order {
        match self {
            Tagged::Signatures => sig_layer(0),
            Tagged::Attestations => att_layer(0),
            Tagged::ReferrersIndex => AFTER_ALL_REFERRERS,
        }
    }

    /// What a location of it that cannot be examined was looked at for.
    fn sought(self) -> Sought {
        match self {
            Tagged::Signatures | Tagged::ReferrersIndex => Sought::Signature,
            Tagged::Attestations => Sought::Attestation,
        }
    }
}

impl Search<'_> {
    /// Record a signature location as not examined: a note on its path, and the sink.
    fn not_examined(
        &self,
        tried: &mut PathTried,
        order: Order,
        what: &str,
        location: String,
        reason: WhyNotExamined,
    ) {
        let place = Place {
            order,
            what,
            sought: Sought::Signature,
        };
        self.not_examined_at(tried, place, location, reason);
    }

    /// Record a location as not examined: a note on its path, and the sink.
    fn not_examined_at(
        &self,
        tried: &mut PathTried,
        place: Place<'_>,
        location: String,
        reason: WhyNotExamined,
    ) {
        tried.notes.push(format!(
            "{} not examined: {}",
            place.what,
            error_chain(&reason)
        ));
        let sought = place.sought;
        (self.sink)(
            place.order,
            Discovered::NotExamined(NotExamined {
                location,
                reason,
                sought,
            }),
        );
    }

    /// How a registry failure at `path` becomes a discovery error (never "no signatures").
    fn failed_at(&self, path: &str) -> impl Fn(RegistryError) -> DiscoverError + use<> {
        failed_at(self.subject, self.digest, path)
    }

    /// What the tag `tag` holds, fetched and parsed, or None (with a note, or handed over as
    /// not examined) when there is nothing or its content cannot be used.
    async fn tagged_manifest(
        &self,
        tag: &str,
        path: &str,
        holds: Tagged,
        tried: &mut PathTried,
    ) -> Result<Option<ImageManifest>, DiscoverError> {
        let fetched = self.fetch_tagged(tag).await;
        self.read_tagged(tag, fetched, path, holds, tried)
    }

    /// What the registry answers for the tag `tag`, not yet looked at: nothing is recorded
    /// until [`Search::read_tagged`] reads it (an answer fetched ahead may go unread).
    async fn fetch_tagged(&self, tag: &str) -> Result<Option<Manifest>, RegistryError> {
        let tagged = self.subject.with_tag(tag);
        self.registry
            .get_manifest_capped(&tagged, usize::MAX, self.budget)
            .await
    }

    /// [`Search::tagged_manifest`] of an answer already fetched.
    fn read_tagged(
        &self,
        tag: &str,
        fetched: Result<Option<Manifest>, RegistryError>,
        path: &str,
        holds: Tagged,
        tried: &mut PathTried,
    ) -> Result<Option<ImageManifest>, DiscoverError> {
        let place = Place {
            order: holds.order(),
            what: holds.what(),
            sought: holds.sought(),
        };
        let tagged = self.subject.with_tag(tag);
        let manifest = match fetched {
            Ok(Some(m)) => m,
            Ok(None) => {
                tried.notes.push("not found".into());
                return Ok(None);
            }
            Err(source) if lies_in_content(&source) => {
                let reason = WhyNotExamined::Content { source };
                self.not_examined_at(tried, place, path.into(), reason);
                return Ok(None);
            }
            Err(e) => return Err(self.failed_at(path)(e)),
        };
        let layered = matches!(holds, Tagged::Signatures | Tagged::Attestations);
        if let (true, Some(reason)) = (layered, too_many_layers(&manifest.bytes)) {
            self.not_examined_at(tried, place, path.into(), reason);
            return Ok(None);
        }
        match ImageManifest::parse(&manifest, &tagged.to_string()) {
            Ok(parsed) => Ok(Some(parsed)),
            Err(source) => {
                let reason = WhyNotExamined::Content { source };
                self.not_examined_at(tried, place, path.into(), reason);
                Ok(None)
            }
        }
    }
}

/// Where a location sits, how notes name it, and what was looked for there.
#[derive(Clone, Copy)]
struct Place<'w> {
    order: Order,
    what: &'w str,
    sought: Sought,
}

/// Whether a manifest lists more layers than a signature manifest may have, counted before
/// any layer is built (a manifest that does not parse is left to [`ImageManifest::parse`]).
fn too_many_layers(manifest: &[u8]) -> Option<WhyNotExamined> {
    #[derive(serde::Deserialize)]
    struct Count {
        #[serde(default)]
        layers: Vec<serde::de::IgnoredAny>,
    }
    let count = serde_json::from_slice::<Count>(manifest).ok()?.layers.len();
    (count > MAX_SIGNATURE_LAYERS).then_some(WhyNotExamined::TooManyLayers {
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
