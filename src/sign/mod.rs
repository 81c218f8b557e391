//! Signing: cosign key pairs, and attaching legacy cosign signatures (`sha256-<hex>.sig`) or
//! cosign v3's Sigstore bundles as OCI referrers, and attestations (`attest`: in-toto
//! statements in DSSE, `.att` layers or bundle referrers). It must not verify anything.
//!
//! What is written is byte-for-byte the shape cosign writes: the simple-signing payload as a
//! layer, the signature in its annotation, and cosign's config blob listing the layers.
//! Blobs are pushed first and the manifest last, so a failed `sign` never changes the tag.

mod attest;
mod error;
pub mod key;
mod slsa;
mod statement;
mod vuln;

pub use attest::{
    AttestFormat, Attested, MAX_COMPARED_BLOBS, MAX_COMPARED_BYTES, MAX_COMPARED_REFERRERS, attest,
};
pub use error::SignError;
pub use statement::{
    COSIGN_CUSTOM_PREDICATE, MAX_PREDICATE_BYTES, Predicate, PredicateError, STATEMENT_V01,
};

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::Serialize;

use crate::payload::{
    MAX_PAYLOAD_BYTES, SIGNATURE_ANNOTATION, SIMPLE_SIGNING_MEDIA_TYPE, SimpleSigning,
};
use crate::reference::{Digest, ImageRef};
use crate::registry::{Descriptor, ImageManifest, Manifest, OCI_MANIFEST, Registry, RegistryError};
use crate::signature_place::SignaturesRepository;
use key::SigningKey;

const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// The error of encoding `what` for `reference` (no tag is moved then).
pub(crate) fn encoding(
    reference: &str,
    what: &'static str,
) -> impl FnOnce(serde_json::Error) -> SignError {
    let reference = reference.to_string();
    move |source| SignError::Encode {
        reference,
        what,
        source,
    }
}

/// What `sign` did.
#[derive(Debug, Clone, Serialize)]
pub struct Signed {
    /// The reference signed, as given (`--recursive` gives each manifest pinned by digest).
    pub reference: String,
    /// The manifest digest the reference resolved to: what the signature covers.
    pub digest: Digest,
    /// Where the signature went: `tag sha256-<hex>.sig`, `referrers tag sha256-<hex>`, or
    /// `referrer sha256:<manifest> (referrers API)`.
    pub stored_at: String,
    /// Signatures stored there after this one was added: layers of the `.sig` manifest, or
    /// (bundles) entries of the referrers-tag index, or those the referrers API lists (at least 1).
    pub signatures: usize,
    /// False when the same key had already signed the same payload there (nothing was added,
    /// as cosign does).
    pub added: bool,
}

/// The manifest `target` names; not finding it is an error when signing.
pub(crate) async fn resolve(registry: &Registry, target: &ImageRef) -> Result<Manifest, SignError> {
    registry
        .get_manifest(target)
        .await
        .map_err(registry_error(&target.to_string()))?
        .ok_or_else(|| SignError::NotFound {
            reference: target.to_string(),
        })
}

/// Most distinct manifests below the top index that `sign --recursive` signs for one reference
/// (the top index is signed as well, so at most one more in all).
pub const MAX_RECURSIVE_MANIFESTS: usize = 1024;
/// Most levels below the top reference `sign --recursive` descends (an index's entries are
/// level 1; an index of indexes is rare, and a registry that nests them without end is hostile):
/// any new entry, index or not, at the next level is [`SignError::TooDeep`].
pub const MAX_INDEX_DEPTH: usize = 4;

/// What `sign --recursive` signs for `target`, each pinned to its digest: every manifest its
/// index lists (and, for an index of indexes, theirs), each once, then the index itself — the
/// index last, so that a failure part-way leaves the index unsigned. A single manifest is
/// just itself.
pub async fn recursive_targets(
    registry: &Registry,
    target: &ImageRef,
) -> Result<Vec<ImageRef>, SignError> {
    let reference = target.to_string();
    let top = resolve(registry, target).await?;
    let mut seen = std::collections::HashSet::from([top.digest.clone()]);
    let mut out = Vec::new();
    let mut level = vec![top.clone()];
    for depth in 0..=MAX_INDEX_DEPTH {
        let mut next = Vec::new();
        for index in &level {
            let entries = crate::platform::index_entries(&index.media_type, &index.bytes).map_err(
                |source| SignError::Index {
                    reference: reference.clone(),
                    index: index.digest.clone(),
                    source,
                },
            )?;
            for entry in entries.into_iter().flatten() {
                if !seen.insert(entry.digest.clone()) {
                    continue;
                }
                if depth == MAX_INDEX_DEPTH {
                    return Err(SignError::TooDeep {
                        reference,
                        limit: MAX_INDEX_DEPTH,
                    });
                }
                if out.len() >= MAX_RECURSIVE_MANIFESTS {
                    return Err(SignError::TooManyManifests {
                        reference,
                        limit: MAX_RECURSIVE_MANIFESTS,
                    });
                }
                let child = target.with_digest(entry.digest.clone());
                if entry.is_index() {
                    next.push(resolve(registry, &child).await?);
                }
                out.push(child);
            }
        }
        if next.is_empty() {
            break;
        }
        level = next;
    }
    out.push(target.with_digest(top.digest));
    Ok(out)
}

/// The error of a registry operation for `reference`.
pub(crate) fn registry_error(reference: &str) -> impl Fn(RegistryError) -> SignError + '_ {
    move |source| SignError::Registry {
        reference: reference.to_string(),
        source: Box::new(source),
    }
}

/// `key`'s signature over `message`.
fn signature(key: &SigningKey, message: &[u8], reference: &str) -> Result<Vec<u8>, SignError> {
    key.sign(message).map_err(|source| SignError::Key {
        reference: reference.to_string(),
        source,
    })
}

/// Resolve `target` to its digest and attach a legacy cosign signature made with `key`: in
/// `target`'s repository, or in `signatures` (cosign's `COSIGN_REPOSITORY`) when given.
pub async fn sign(
    registry: &Registry,
    key: &SigningKey,
    target: &ImageRef,
    annotations: &BTreeMap<String, String>,
    signatures: Option<&SignaturesRepository>,
) -> Result<Signed, SignError> {
    let store = signatures.map_or(target, SignaturesRepository::reference);
    let reference = target.to_string();
    let digest = resolve(registry, target).await?.digest;
    let payload = SimpleSigning::new(&target.name(), &digest, annotations)
        .to_bytes()
        .map_err(encoding(&reference, "simple-signing payload"))?;
    readable(
        &reference,
        "simple-signing payload",
        &payload,
        MAX_PAYLOAD_BYTES,
    )?;
    let signature_b64 =
        base64::engine::general_purpose::STANDARD.encode(signature(key, &payload, &reference)?);
    let tag = format!("{}.sig", digest.tag_prefix());
    let sig_ref = store.with_tag(&tag);
    let mut layers = existing_layers(
        registry,
        &sig_ref,
        &reference,
        &tag,
        SIMPLE_SIGNING_MEDIA_TYPE,
    )
    .await?;
    let mut signed = Signed {
        reference,
        digest,
        stored_at: stored_in(format!("tag {tag}"), signatures),
        signatures: layers.len(),
        added: false,
    };
    // The same payload (digest, identity and annotations) already signed by this key: signing
    // again would only add a duplicate layer.
    if already_signed(&layers, &payload, key) {
        return Ok(signed);
    }
    let payload_digest = registry
        .put_blob(store, &payload)
        .await
        .map_err(registry_error(&signed.reference))?;
    layers.push(Descriptor {
        media_type: SIMPLE_SIGNING_MEDIA_TYPE.to_string(),
        digest: payload_digest.to_string(),
        size: payload.len() as u64,
        annotations: Some(BTreeMap::from([(
            SIGNATURE_ANNOTATION.to_string(),
            signature_b64,
        )])),
        artifact_type: None,
    });
    signed.signatures = layers.len();
    put_signature_manifest(registry, store, &sig_ref, layers, &signed.reference).await?;
    signed.added = true;
    Ok(signed)
}

/// Where something was written, naming the signatures repository when it is not the image's.
pub(crate) fn stored_in(at: String, signatures: Option<&SignaturesRepository>) -> String {
    match signatures {
        Some(repository) => format!("{at} in {repository}"),
        None => at,
    }
}

/// The layers of the signature (or attestation) manifest at `sig_ref` (none when there is
/// none yet); a manifest there with layers of another media type than `media_type` is not
/// ours to add to.
pub(crate) async fn existing_layers(
    registry: &Registry,
    sig_ref: &ImageRef,
    reference: &str,
    tag: &str,
    media_type: &'static str,
) -> Result<Vec<Descriptor>, SignError> {
    let reg_err = registry_error(reference);
    let Some(existing) = registry.get_manifest(sig_ref).await.map_err(&reg_err)? else {
        return Ok(Vec::new());
    };
    let parsed = ImageManifest::parse(&existing, &sig_ref.to_string()).map_err(&reg_err)?;
    // An index, or a manifest without a config, is not a signature manifest to replace.
    let not_a_manifest = !parsed.manifests.is_empty()
        || parsed.config.is_none()
        || parsed
            .media_type
            .as_deref()
            .is_some_and(|t| t.contains("index") || t.contains("list"));
    if not_a_manifest || parsed.layers.iter().any(|l| l.media_type != media_type) {
        return Err(SignError::ForeignManifest {
            reference: reference.to_string(),
            tag: tag.to_string(),
            expected: media_type,
        });
    }
    Ok(parsed.layers)
}

/// `Ok` when `bytes` (the `what` of a signature of `reference`) is no larger than a verifier
/// reads of it, `limit`.
fn readable(
    reference: &str,
    what: &'static str,
    bytes: &[u8],
    limit: usize,
) -> Result<(), SignError> {
    if bytes.len() <= limit {
        return Ok(());
    }
    Err(SignError::TooLarge {
        reference: reference.to_string(),
        what,
        bytes: bytes.len(),
        limit,
    })
}

/// Whether one of `layers` is `payload` with a signature by `key`.
fn already_signed(layers: &[Descriptor], payload: &[u8], key: &SigningKey) -> bool {
    let payload_hash = Digest::sha256_of(payload).to_string();
    layers.iter().any(|l| {
        l.digest == payload_hash
            && l.annotations
                .as_ref()
                .and_then(|a| a.get(SIGNATURE_ANNOTATION))
                .and_then(|s| crate::decode_base64(s).ok())
                .is_some_and(|sig| key.public_key().verify(payload, &sig))
    })
}

/// Push cosign's config blob for `layers`, then the signature manifest to `sig_ref` (the tag
/// moves only once everything it points at is there).
pub(crate) async fn put_signature_manifest(
    registry: &Registry,
    target: &ImageRef,
    sig_ref: &ImageRef,
    layers: Vec<Descriptor>,
    reference: &str,
) -> Result<(), SignError> {
    let reg_err = registry_error(reference);
    let config = cosign_config(&layers).map_err(encoding(reference, "signature config"))?;
    let config_digest = registry.put_blob(target, &config).await.map_err(&reg_err)?;
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.to_string()),
        artifact_type: None,
        config: Some(Descriptor {
            media_type: OCI_CONFIG.to_string(),
            digest: config_digest.to_string(),
            size: config.len() as u64,
            annotations: None,
            artifact_type: None,
        }),
        layers,
        manifests: Vec::new(),
        subject: None,
        annotations: None,
    };
    let body = serde_json::to_vec(&manifest).map_err(encoding(reference, "signature manifest"))?;
    registry
        .put_manifest(sig_ref, &body, OCI_MANIFEST)
        .await
        .map_err(&reg_err)?;
    Ok(())
}

/// The config blob cosign writes for a signature manifest: an empty image config whose
/// rootfs lists the signature layers.
pub fn cosign_config(layers: &[Descriptor]) -> Result<Vec<u8>, serde_json::Error> {
    #[derive(Serialize)]
    struct History {
        created: &'static str,
    }
    #[derive(Serialize)]
    struct RootFs<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        diff_ids: Vec<&'a str>,
    }
    #[derive(Serialize)]
    struct Config<'a> {
        architecture: &'static str,
        created: &'static str,
        history: Vec<History>,
        os: &'static str,
        rootfs: RootFs<'a>,
        config: BTreeMap<String, String>,
    }
    let c = Config {
        architecture: "",
        created: "0001-01-01T00:00:00Z",
        history: layers
            .iter()
            .map(|_| History {
                created: "0001-01-01T00:00:00Z",
            })
            .collect(),
        os: "",
        rootfs: RootFs {
            kind: "layers",
            diff_ids: layers.iter().map(|l| l.digest.as_str()).collect(),
        },
        config: BTreeMap::new(),
    };
    serde_json::to_vec(&c)
}

const BUNDLE_V03: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
const IN_TOTO: &str = crate::candidate::IN_TOTO_MEDIA_TYPE;
const BUNDLE_CONTENT_ANNOTATION: &str = "dev.sigstore.bundle.content";
const CREATED_ANNOTATION: &str = "org.opencontainers.image.created";
const EMPTY_CONFIG: &[u8] = b"{}";

/// Resolve `target` and attach a Sigstore bundle (v0.3, DSSE, predicate
/// `https://sigstore.dev/cosign/sign/v1`) as an OCI 1.1 referrer, as cosign 3 does: found through
/// the referrers API, and where the registry has none, listed in the referrers tag
/// `sha256-<hex>`. The signature has no Rekor entry (`cosign verify --insecure-ignore-tlog`).
/// A bundle of this key over the same statement already there is not written again.
pub async fn sign_bundle(
    registry: &Registry,
    key: &SigningKey,
    target: &ImageRef,
    annotations: &BTreeMap<String, String>,
    signatures: Option<&SignaturesRepository>,
) -> Result<Signed, SignError> {
    use crate::candidate::COSIGN_SIGN_PREDICATE;
    let store = signatures.map_or(target, SignaturesRepository::reference);
    let reference = target.to_string();
    let image = resolve(registry, target).await?;
    let payload = sign_statement(&image.digest, annotations, &reference)?;
    let bundle = dsse_bundle(key, &payload, &reference)?;
    readable(
        &reference,
        "bundle",
        &bundle,
        crate::discover::MAX_BUNDLE_BYTES,
    )?;
    // The same key's signature of the same statement already there: nothing is added (a
    // signature is randomised, so the bundle's digest says nothing; its statement and key do).
    if let Ok(predicate) = Predicate::parse(COSIGN_SIGN_PREDICATE, b"{}") {
        let job = attest::Job {
            registry,
            key,
            store,
            predicate: &predicate,
            statement: &payload,
            reference: &reference,
            compared: attest::Compared::new(),
        };
        let limit = attest::compared_limit(bundle.len());
        if let Some((stored_at, count)) = job.find_bundle(&image.digest, limit).await? {
            return Ok(Signed {
                reference,
                digest: image.digest,
                stored_at: stored_in(stored_at, signatures),
                signatures: count,
                added: false,
            });
        }
    }
    let referrer = put_referrer(
        registry,
        store,
        &image,
        &bundle,
        &BundleAnnotations::new(COSIGN_SIGN_PREDICATE, None),
        &reference,
    )
    .await?;
    let (stored_at, count) =
        list_referrer(registry, store, &image.digest, referrer, &reference).await?;
    Ok(Signed {
        reference,
        digest: image.digest,
        stored_at: stored_in(stored_at, signatures),
        signatures: count,
        added: true,
    })
}

/// cosign's in-toto statement that `digest` is signed, with `annotations` on its subject.
fn sign_statement(
    digest: &Digest,
    annotations: &BTreeMap<String, String>,
    reference: &str,
) -> Result<Vec<u8>, SignError> {
    use crate::candidate::COSIGN_SIGN_PREDICATE;
    #[derive(Serialize)]
    struct Subject<'a> {
        digest: BTreeMap<&'static str, &'a str>,
        annotations: &'a BTreeMap<String, String>,
    }
    #[derive(Serialize)]
    struct Statement<'a> {
        #[serde(rename = "_type")]
        kind: &'static str,
        subject: [Subject<'a>; 1],
        #[serde(rename = "predicateType")]
        predicate_type: &'static str,
        predicate: BTreeMap<String, String>,
    }
    let statement = Statement {
        kind: "https://in-toto.io/Statement/v1",
        subject: [Subject {
            digest: BTreeMap::from([("sha256", digest.hex())]),
            annotations,
        }],
        predicate_type: COSIGN_SIGN_PREDICATE,
        predicate: BTreeMap::new(),
    };
    serde_json::to_vec(&statement).map_err(encoding(reference, "in-toto statement"))
}

/// The DSSE pre-authentication encoding of an in-toto `payload`: what its signature signs.
pub(crate) fn pae(payload: &[u8]) -> Vec<u8> {
    let mut pae = format!("DSSEv1 {} {IN_TOTO} {} ", IN_TOTO.len(), payload.len()).into_bytes();
    pae.extend_from_slice(payload);
    pae
}

/// A DSSE envelope as cosign writes it (Go's encoding of the protobuf envelope: these fields in
/// this order, no `keyid`).
#[derive(Serialize)]
pub(crate) struct DsseEnvelope {
    /// The in-toto statement, base64.
    pub(crate) payload: String,
    /// Always [`IN_TOTO`].
    #[serde(rename = "payloadType")]
    pub(crate) payload_type: &'static str,
    /// The one signature.
    pub(crate) signatures: [DsseSignature; 1],
}

/// One signature of a [`DsseEnvelope`].
#[derive(Serialize)]
pub(crate) struct DsseSignature {
    /// The signature over [`pae`], base64.
    pub(crate) sig: String,
}

impl DsseEnvelope {
    /// `key`'s envelope of the in-toto `payload`.
    pub(crate) fn sign(
        key: &SigningKey,
        payload: &[u8],
        reference: &str,
    ) -> Result<Self, SignError> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let sig = signature(key, &pae(payload), reference)?;
        Ok(DsseEnvelope {
            payload: b64.encode(payload),
            payload_type: IN_TOTO,
            signatures: [DsseSignature {
                sig: b64.encode(sig),
            }],
        })
    }
}

/// The bundle (JSON, in cosign's field order) of `key`'s DSSE signature over the in-toto
/// statement `payload`.
pub(crate) fn dsse_bundle(
    key: &SigningKey,
    payload: &[u8],
    reference: &str,
) -> Result<Vec<u8>, SignError> {
    #[derive(Serialize)]
    struct Hint {
        hint: String,
    }
    #[derive(Serialize)]
    struct Material {
        #[serde(rename = "publicKey")]
        public_key: Hint,
    }
    #[derive(Serialize)]
    struct Bundle {
        #[serde(rename = "mediaType")]
        media_type: &'static str,
        #[serde(rename = "verificationMaterial")]
        verification_material: Material,
        #[serde(rename = "dsseEnvelope")]
        dsse_envelope: DsseEnvelope,
    }
    let hint = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.public_key().der());
    let bundle = Bundle {
        media_type: BUNDLE_V03,
        verification_material: Material {
            public_key: Hint {
                hint: base64::engine::general_purpose::STANDARD.encode(hint.as_ref()),
            },
        },
        dsse_envelope: DsseEnvelope::sign(key, payload, reference)?,
    };
    serde_json::to_vec(&bundle).map_err(encoding(reference, "bundle"))
}

/// The annotations of a bundle's referrer manifest.
pub(crate) struct BundleAnnotations<'a> {
    /// `dev.sigstore.bundle.predicateType`.
    predicate_type: &'a str,
    /// `org.opencontainers.image.created` (RFC 3339), which `cosign attest` writes.
    created: Option<String>,
}

impl<'a> BundleAnnotations<'a> {
    /// For a bundle of a statement of `predicate_type`, created at `created` if given.
    pub(crate) fn new(predicate_type: &'a str, created: Option<String>) -> Self {
        BundleAnnotations {
            predicate_type,
            created,
        }
    }
}

/// Push the blobs, then the referrer manifest whose subject is `image` (by digest): a failure
/// leaves nothing that points at a half-written signature. Its descriptor, for the index.
pub(crate) async fn put_referrer(
    registry: &Registry,
    target: &ImageRef,
    image: &Manifest,
    bundle: &[u8],
    annotations: &BundleAnnotations<'_>,
    reference: &str,
) -> Result<Descriptor, SignError> {
    let reg_err = registry_error(reference);
    let config_digest = registry
        .put_blob(target, EMPTY_CONFIG)
        .await
        .map_err(&reg_err)?;
    let bundle_digest = registry.put_blob(target, bundle).await.map_err(&reg_err)?;
    let manifest = referrer_manifest(
        image,
        &config_digest,
        &bundle_digest,
        bundle.len(),
        annotations,
    );
    let body = serde_json::to_vec(&manifest).map_err(encoding(reference, "referrer manifest"))?;
    let manifest_digest = Digest::sha256_of(&body);
    registry
        .put_manifest(
            &target.with_digest(manifest_digest.clone()),
            &body,
            OCI_MANIFEST,
        )
        .await
        .map_err(&reg_err)?;
    Ok(Descriptor {
        media_type: OCI_MANIFEST.to_string(),
        digest: manifest_digest.to_string(),
        size: body.len() as u64,
        annotations: None,
        artifact_type: Some(BUNDLE_V03.to_string()),
    })
}

/// The OCI 1.1 manifest cosign 3 writes for a bundle: the empty config, the bundle as its one
/// layer, `image` as its subject.
fn referrer_manifest(
    image: &Manifest,
    config_digest: &Digest,
    bundle_digest: &Digest,
    bundle_len: usize,
    annotations: &BundleAnnotations<'_>,
) -> ImageManifest {
    use crate::candidate::PREDICATE_TYPE_ANNOTATION;
    let mut manifest_annotations = BTreeMap::from([
        (
            BUNDLE_CONTENT_ANNOTATION.to_string(),
            "dsse-envelope".to_string(),
        ),
        (
            PREDICATE_TYPE_ANNOTATION.to_string(),
            annotations.predicate_type.to_string(),
        ),
    ]);
    if let Some(created) = &annotations.created {
        manifest_annotations.insert(CREATED_ANNOTATION.to_string(), created.clone());
    }
    ImageManifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.to_string()),
        artifact_type: Some(BUNDLE_V03.to_string()),
        config: Some(Descriptor {
            media_type: crate::discover::OCI_EMPTY.to_string(),
            digest: config_digest.to_string(),
            size: EMPTY_CONFIG.len() as u64,
            annotations: None,
            artifact_type: None,
        }),
        layers: vec![Descriptor {
            media_type: BUNDLE_V03.to_string(),
            digest: bundle_digest.to_string(),
            size: bundle_len as u64,
            annotations: None,
            artifact_type: None,
        }],
        manifests: Vec::new(),
        subject: Some(Descriptor {
            media_type: image.media_type.clone(),
            digest: image.digest.to_string(),
            size: image.bytes.len() as u64,
            annotations: None,
            artifact_type: None,
        }),
        annotations: Some(manifest_annotations),
    }
}

/// Make `referrer` findable from `digest`: a registry with the referrers API indexes it itself
/// from the subject; otherwise it is added to the referrers tag `sha256-<hex>`. Where it is
/// listed, and how many referrers are listed there.
pub(crate) async fn list_referrer(
    registry: &Registry,
    target: &ImageRef,
    digest: &Digest,
    referrer: Descriptor,
    reference: &str,
) -> Result<(String, usize), SignError> {
    let reg_err = registry_error(reference);
    let tag = digest.tag_prefix();
    if let Some(existing) = registry
        .get_referrers(target, digest)
        .await
        .map_err(&reg_err)?
    {
        let stored_at = format!("referrer {} (referrers API)", referrer.digest);
        return Ok((stored_at, existing.len().max(1)));
    }
    let tag_ref = target.with_tag(&tag);
    let mut index = match registry.get_manifest(&tag_ref).await.map_err(&reg_err)? {
        Some(m) => ImageManifest::parse(&m, &tag_ref.to_string()).map_err(&reg_err)?,
        None => ImageManifest {
            schema_version: 2,
            media_type: Some(crate::registry::OCI_INDEX.to_string()),
            artifact_type: None,
            config: None,
            layers: Vec::new(),
            manifests: Vec::new(),
            subject: None,
            annotations: None,
        },
    };
    if !index.manifests.iter().any(|m| m.digest == referrer.digest) {
        index.manifests.push(referrer);
    }
    let body = serde_json::to_vec(&index).map_err(encoding(reference, "referrers index"))?;
    registry
        .put_manifest(&tag_ref, &body, crate::registry::OCI_INDEX)
        .await
        .map_err(&reg_err)?;
    Ok((format!("referrers tag {tag}"), index.manifests.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_matches_cosign() {
        // connaisseur's captured alice .sig manifest: config sha256:a0b0cbfe... of 233 bytes
        let layer = Descriptor {
            media_type: SIMPLE_SIGNING_MEDIA_TYPE.into(),
            digest: "sha256:d8ee807d96efe7441b132967ad94eaffbc0172a763e69f2cd8df8f583f0ba0d4"
                .into(),
            size: 266,
            annotations: None,
            artifact_type: None,
        };
        let c = cosign_config(&[layer]).unwrap();
        assert_eq!(c.len(), 233);
        assert_eq!(
            Digest::sha256_of(&c).as_str(),
            "sha256:a0b0cbfeefd8a1d546d9759f06eee4e013259575abb768b8f593e553da2ece4a"
        );
    }
}
