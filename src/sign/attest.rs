//! `ocigate attest`: sign an in-toto statement about an image's digest (DSSE) and attach it as
//! cosign 3.1.1's `attest` does, in either of its formats. It must not verify anything.
//!
//! What cosign 3.1.1 writes (read back from a registry after `cosign attest --key`, with
//! `--tlog-upload=false`, and its source):
//! - legacy (`--new-bundle-format=false`): the tag `sha256-<hex>.att` holds an OCI manifest with
//!   cosign's signature config (the same blob as `.sig`'s) and one layer per attestation, each
//!   `application/vnd.dsse.envelope.v1+json` with the annotations
//!   `dev.cosignproject.cosign/signature: ""` and `predicateType: <uri>`, and no manifest
//!   annotations. The layer is the envelope `{"payload":"<b64 statement>","payloadType":
//!   "application/vnd.in-toto+json","signatures":[{"sig":"<b64>"}]}` (no `keyid`), its
//!   signature over the DSSE PAE. A new attestation is appended to the layers already there.
//! - bundle (cosign 3.1.1's default, `--new-bundle-format`): a Sigstore bundle v0.3
//!   (`{"mediaType","verificationMaterial":{"publicKey":{"hint"}},"dsseEnvelope"}`, the same
//!   envelope) as the one layer of an OCI 1.1 referrer manifest: empty config, `artifactType`
//!   the bundle media type, the image as `subject`, annotations `dev.sigstore.bundle.content:
//!   dsse-envelope`, `dev.sigstore.bundle.predicateType: <uri>` and
//!   `org.opencontainers.image.created`; listed in the referrers tag `sha256-<hex>` where the
//!   registry has no referrers API.
//!
//! Not mirrored: cosign's legacy writer puts the bundle media type as an `artifactType` on
//! the config descriptor too, and its referrers-tag entry carries the empty config's media
//! type as `artifactType`; ocigate writes the standard form (no artifact type on the config,
//! the bundle's on the index entry), which cosign reads all the same. Neither writes a
//! transparency-log entry here (ocigate has no Rekor client).
//!
//! The same statement again adds nothing. cosign's own duplicate check never fires for
//! attestations (it compares the layer digest, and an ECDSA signature, or a `custom`
//! predicate's timestamp, differs every time; running `cosign attest` twice leaves two
//! layers). ocigate looks at the attestations already there of the same predicate type:
//! one whose statement equals this one as JSON (but for a `custom` predicate's timestamp)
//! with a signature this key made over it means nothing is written.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::statement::{Predicate, rfc3339_seconds};
use super::{
    BUNDLE_V03, BundleAnnotations, DsseEnvelope, SignError, dsse_bundle, encoding, existing_layers,
    list_referrer, pae, put_referrer, put_signature_manifest, registry_error, resolve, stored_in,
};
use crate::candidate::{
    ATT_PREDICATE_TYPE_ANNOTATION, DSSE_ENVELOPE_MEDIA_TYPE, IN_TOTO_MEDIA_TYPE,
    PREDICATE_TYPE_ANNOTATION,
};
use crate::discover::MAX_REFERRER_MANIFEST_BYTES;
use crate::payload::SIGNATURE_ANNOTATION;
use crate::reference::{Digest, ImageRef};
use crate::registry::{Descriptor, FetchBudget, ImageManifest, Manifest, Registry};
use crate::sign::key::SigningKey;
use crate::signature_place::SignaturesRepository;

/// Most referrers looked at for an equal attestation before a bundle is written.
pub const MAX_COMPARED_REFERRERS: usize = 256;
/// Most bytes read back, in all, to compare the attestations already there with the new one
/// (manifests and blobs; the envelope a [`super::statement::MAX_PREDICATE_BYTES`] predicate
/// makes, twice over). Each blob is read to no more than its descriptor declares and than
/// [`compared_limit`]; what lies past this budget is not compared (at worst an equal
/// attestation is written again).
pub const MAX_COMPARED_BYTES: usize = 96 << 20;
/// Most blobs read back to compare with the new attestation, in either format.
pub const MAX_COMPARED_BLOBS: usize = 64;

/// What comparing with the attestations already there may still read: one budget of bytes
/// and of blobs for the whole command, whatever a registry lists.
pub(super) struct Compared {
    budget: FetchBudget,
    blobs: AtomicUsize,
}

impl Compared {
    /// A fresh budget: [`MAX_COMPARED_BYTES`], [`MAX_COMPARED_BLOBS`].
    pub(super) fn new() -> Self {
        Compared {
            budget: FetchBudget::new(MAX_COMPARED_BYTES),
            blobs: AtomicUsize::new(0),
        }
    }

    /// Takes one blob from the budget; false when none is left.
    fn take_blob(&self) -> bool {
        self.blobs.fetch_add(1, Ordering::Relaxed) < MAX_COMPARED_BLOBS
    }
}

/// Where `attest` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AttestFormat {
    /// A layer of the `sha256-<hex>.att` manifest (cosign 2, `--new-bundle-format=false`).
    Legacy,
    /// A Sigstore bundle as an OCI referrer (cosign 3's default).
    Bundle,
}

/// What `attest` did.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Attested {
    /// The reference attested, as given.
    pub reference: String,
    /// The manifest digest it resolved to: the statement's subject.
    pub digest: Digest,
    /// The statement's predicate type (a URI).
    pub predicate_type: String,
    /// The format written (or found).
    pub format: AttestFormat,
    /// Where the attestation is: `tag sha256-<hex>.att`, `referrers tag sha256-<hex>`, or
    /// `referrer sha256:<manifest> (referrers API)`.
    pub stored_at: String,
    /// Entries listed there afterwards: layers of the `.att` manifest, or referrers of the
    /// image (signatures included).
    pub entries: usize,
    /// False when this key had already attested the same statement there (nothing written).
    pub added: bool,
}

/// Resolve `target`, make the statement that its digest has `predicate`, sign it with `key`
/// and attach it in `format`, unless this key's signature of the same statement is there.
pub async fn attest(
    registry: &Registry,
    key: &SigningKey,
    target: &ImageRef,
    predicate: &Predicate,
    format: AttestFormat,
    signatures: Option<&SignaturesRepository>,
) -> Result<Attested, SignError> {
    let reference = target.to_string();
    let image = resolve(registry, target).await?;
    let now = SystemTime::now();
    let statement = predicate.statement(&target.name(), &image.digest, now);
    let job = Job {
        registry,
        key,
        store: signatures.map_or(target, SignaturesRepository::reference),
        predicate,
        statement: &statement,
        reference: &reference,
        compared: Compared::new(),
    };
    let (stored_at, entries, added) = match format {
        AttestFormat::Legacy => job.legacy(&image.digest).await?,
        AttestFormat::Bundle => job.bundle(&image, now).await?,
    };
    Ok(Attested {
        predicate_type: predicate.predicate_type().to_string(),
        reference,
        digest: image.digest,
        format,
        stored_at: stored_in(stored_at, signatures),
        entries,
        added,
    })
}

/// One attestation being written (or a `sign --format bundle` signature, whose statement is
/// cosign's sign predicate: the same search for the same key's equal statement).
pub(super) struct Job<'a> {
    pub(super) registry: &'a Registry,
    pub(super) key: &'a SigningKey,
    /// Where the attestation is written: the image's repository, or the signatures repository.
    pub(super) store: &'a ImageRef,
    pub(super) predicate: &'a Predicate,
    pub(super) statement: &'a [u8],
    pub(super) reference: &'a str,
    /// What comparing with attestations already there may read.
    pub(super) compared: Compared,
}

impl Job<'_> {
    /// Append the envelope to the `.att` manifest: where, how many layers, whether added.
    async fn legacy(&self, digest: &Digest) -> Result<(String, usize, bool), SignError> {
        let tag = format!("{}.att", digest.tag_prefix());
        let att_ref = self.store.with_tag(&tag);
        let mut layers = existing_layers(
            self.registry,
            &att_ref,
            self.reference,
            &tag,
            DSSE_ENVELOPE_MEDIA_TYPE,
        )
        .await?;
        let stored_at = format!("tag {tag}");
        let envelope = DsseEnvelope::sign(self.key, self.statement, self.reference)?;
        let envelope =
            serde_json::to_vec(&envelope).map_err(encoding(self.reference, "DSSE envelope"))?;
        let limit = compared_limit(envelope.len());
        for layer in &layers {
            if self.names_our_type(layer.annotations.as_ref(), ATT_PREDICATE_TYPE_ANNOTATION)
                && self.blob_states_ours(layer, limit, Shape::Envelope).await
            {
                return Ok((stored_at, layers.len(), false));
            }
        }
        let envelope_digest = self
            .registry
            .put_blob(self.store, &envelope)
            .await
            .map_err(registry_error(self.reference))?;
        layers.push(Descriptor {
            media_type: DSSE_ENVELOPE_MEDIA_TYPE.to_string(),
            digest: envelope_digest.to_string(),
            size: envelope.len() as u64,
            annotations: Some(
                [
                    (SIGNATURE_ANNOTATION.to_string(), String::new()),
                    (
                        ATT_PREDICATE_TYPE_ANNOTATION.to_string(),
                        self.predicate.predicate_type().to_string(),
                    ),
                ]
                .into(),
            ),
            artifact_type: None,
        });
        let count = layers.len();
        put_signature_manifest(self.registry, self.store, &att_ref, layers, self.reference).await?;
        Ok((stored_at, count, true))
    }

    /// Write the bundle as a referrer of `image`: where, how many referrers, whether added.
    async fn bundle(
        &self,
        image: &Manifest,
        now: SystemTime,
    ) -> Result<(String, usize, bool), SignError> {
        let bundle = dsse_bundle(self.key, self.statement, self.reference)?;
        if let Some((stored_at, count)) = self
            .find_bundle(&image.digest, compared_limit(bundle.len()))
            .await?
        {
            return Ok((stored_at, count, false));
        }
        let annotations = BundleAnnotations::new(
            self.predicate.predicate_type().as_str(),
            Some(rfc3339_seconds(now)),
        );
        let referrer = put_referrer(
            self.registry,
            self.store,
            image,
            &bundle,
            &annotations,
            self.reference,
        )
        .await?;
        let (stored_at, count) = list_referrer(
            self.registry,
            self.store,
            &image.digest,
            referrer,
            self.reference,
        )
        .await?;
        Ok((stored_at, count, true))
    }

    /// A referrer of `digest` whose bundle is this key's signature of the same statement:
    /// where it is listed and how many referrers are listed there.
    pub(super) async fn find_bundle(
        &self,
        digest: &Digest,
        limit: usize,
    ) -> Result<Option<(String, usize)>, SignError> {
        let reg_err = registry_error(self.reference);
        let budget = &self.compared.budget;
        let (listed, tag) = match self
            .registry
            .get_referrers_budgeted(self.store, digest, budget)
            .await
            .map_err(&reg_err)?
        {
            Some(listed) => (listed.descriptors, None),
            None => {
                let tag = digest.tag_prefix();
                let tag_ref = self.store.with_tag(&tag);
                let listed = match self
                    .registry
                    .get_manifest_capped(&tag_ref, usize::MAX, budget)
                    .await
                {
                    Ok(Some(m)) => ImageManifest::parse(&m, &tag_ref.to_string())
                        .map(|index| index.manifests)
                        .unwrap_or_default(),
                    Ok(None) | Err(_) => Vec::new(),
                };
                (listed, Some(tag))
            }
        };
        for entry in listed.iter().take(MAX_COMPARED_REFERRERS) {
            if self.referrer_states_ours(entry, limit).await {
                let stored_at = match &tag {
                    Some(tag) => format!("referrers tag {tag}"),
                    None => format!("referrer {} (referrers API)", entry.digest),
                };
                return Ok(Some((stored_at, listed.len())));
            }
        }
        Ok(None)
    }

    /// Whether the referrer `entry` is a bundle of our predicate type holding this key's
    /// signature of the same statement. Entries that cannot be read do not count.
    async fn referrer_states_ours(&self, entry: &Descriptor, limit: usize) -> bool {
        use crate::discover::OCI_EMPTY;
        // The referrers API copies the manifest's annotations into its entries: a bundle of
        // another predicate type is passed over before its manifest is fetched.
        if let Some(a) = &entry.annotations
            && a.contains_key(PREDICATE_TYPE_ANNOTATION)
            && !self.names_our_type(Some(a), PREDICATE_TYPE_ANNOTATION)
        {
            return false;
        }
        if entry
            .artifact_type
            .as_deref()
            .is_some_and(|t| t != BUNDLE_V03 && t != OCI_EMPTY)
        {
            return false;
        }
        let Ok(d) = Digest::parse(&entry.digest) else {
            return false;
        };
        let manifest_ref = self.store.with_digest(d);
        let Ok(Some(m)) = self
            .registry
            .get_manifest_capped(
                &manifest_ref,
                MAX_REFERRER_MANIFEST_BYTES,
                &self.compared.budget,
            )
            .await
        else {
            return false;
        };
        let Ok(manifest) = ImageManifest::parse(&m, &manifest_ref.to_string()) else {
            return false;
        };
        if !self.names_our_type(manifest.annotations.as_ref(), PREDICATE_TYPE_ANNOTATION) {
            return false;
        }
        for layer in manifest
            .layers
            .iter()
            .filter(|l| l.media_type == BUNDLE_V03)
        {
            if self.blob_states_ours(layer, limit, Shape::Bundle).await {
                return true;
            }
        }
        false
    }

    /// Whether `annotations` name this predicate type under `key`.
    fn names_our_type(
        &self,
        annotations: Option<&std::collections::BTreeMap<String, String>>,
        key: &str,
    ) -> bool {
        annotations
            .and_then(|a| a.get(key))
            .is_some_and(|t| self.predicate.predicate_type().is(t))
    }

    /// Whether the blob `layer` (an envelope or a bundle, at most `limit` bytes) is this key's
    /// signature of a statement equal to ours. A blob that cannot be read (more than its
    /// descriptor declares, past the budget of [`Compared`]) does not count: at worst an equal
    /// attestation is written again.
    async fn blob_states_ours(&self, layer: &Descriptor, limit: usize, shape: Shape) -> bool {
        if layer.size > limit as u64 || !self.compared.take_blob() {
            return false;
        }
        let budget = &self.compared.budget;
        let Ok(blob) = self
            .registry
            .get_attestation_blob(self.store, layer, budget)
            .await
        else {
            return false;
        };
        let envelope = match shape {
            Shape::Envelope => serde_json::from_slice::<ReadEnvelope>(&blob).ok(),
            Shape::Bundle => serde_json::from_slice::<ReadBundle>(&blob)
                .ok()
                .map(|b| b.dsse_envelope),
        };
        envelope.is_some_and(|e| self.envelope_states_ours(&e))
    }

    /// Whether `e` holds a statement equal to ours with a signature by this key.
    fn envelope_states_ours(&self, e: &ReadEnvelope) -> bool {
        if e.payload_type != IN_TOTO_MEDIA_TYPE {
            return false;
        }
        let Ok(payload) = crate::decode_base64(&e.payload) else {
            return false;
        };
        if !self.predicate.same_statement(self.statement, &payload) {
            return false;
        }
        let message = pae(&payload);
        e.signatures.iter().any(|s| {
            crate::decode_base64(&s.sig)
                .is_ok_and(|sig| self.key.public_key().verify(&message, &sig))
        })
    }
}

/// Which blob a layer holds.
#[derive(Clone, Copy)]
enum Shape {
    /// A DSSE envelope (`.att` layer).
    Envelope,
    /// A Sigstore bundle with a DSSE envelope.
    Bundle,
}

/// The size past which an existing blob cannot state what a new one of `ours` bytes states:
/// the same statement written by cosign differs only in whitespace and number spelling.
pub(super) fn compared_limit(ours: usize) -> usize {
    ours.saturating_mul(2)
        .saturating_add(64 << 10)
        .min(MAX_COMPARED_BYTES)
}

#[derive(Deserialize)]
struct ReadEnvelope {
    payload: String,
    #[serde(rename = "payloadType")]
    payload_type: String,
    #[serde(default)]
    signatures: Vec<ReadSignature>,
}

#[derive(Deserialize)]
struct ReadSignature {
    sig: String,
}

#[derive(Deserialize)]
struct ReadBundle {
    #[serde(rename = "dsseEnvelope")]
    dsse_envelope: ReadEnvelope,
}
