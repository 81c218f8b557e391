//! Why signing or attesting failed: one error type for every step of `sign` and `attest`,
//! each variant naming the reference being signed.

use crate::reference::Digest;
use crate::registry::RegistryError;

/// Why signing a reference failed; nothing points at a half-written signature then.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The reference names no manifest.
    #[error("sign {reference}: the image was not found")]
    NotFound {
        /// The reference as given, or under `--recursive` an index entry pinned by digest.
        reference: String,
    },
    /// A registry request failed (the cause says which).
    #[error("sign {reference}: registry operation failed")]
    Registry {
        /// The reference being signed, as given.
        reference: String,
        /// The failed operation: reading the image, the `.sig` tag or the referrers, or
        /// pushing a blob, a manifest or the referrers index.
        #[source]
        source: Box<RegistryError>,
    },
    /// The `.sig` (or `.att`) tag holds something else than cosign's signature (or
    /// attestation) manifest: an index, a manifest without a config, or one with other layers.
    #[error("sign {reference}: the existing manifest {tag} is not a manifest of {expected} layers")]
    ForeignManifest {
        /// The reference being signed, as given.
        reference: String,
        /// `sha256-<hex>.sig` or `sha256-<hex>.att`, whose manifest has a foreign layer.
        tag: String,
        /// The media type every layer there must have: simple signing, or a DSSE envelope.
        expected: &'static str,
    },
    /// The signature (its annotations) would be larger than a verifier reads: it would be
    /// pushed and never examined.
    #[error(
        "sign {reference}: the {what} is {bytes} bytes, more than the {limit} a verifier reads"
    )]
    TooLarge {
        /// The reference being signed, as given.
        reference: String,
        /// `simple-signing payload` ([`crate::payload::MAX_PAYLOAD_BYTES`]) or `bundle`
        /// ([`crate::discover::MAX_BUNDLE_BYTES`]).
        what: &'static str,
        /// Its size.
        bytes: usize,
        /// What a verifier reads of it.
        limit: usize,
    },
    /// A payload, bundle or manifest could not be encoded. Blobs (and, for the referrers index,
    /// the referrer manifest) may have been pushed already; no tag was moved.
    #[error("sign {reference}: the {what} cannot be encoded")]
    Encode {
        /// The reference being signed, as given.
        reference: String,
        /// `simple-signing payload`, `signature config`, `signature manifest`, `in-toto
        /// statement`, `bundle`, `referrer manifest` or `referrers index`.
        what: &'static str,
        /// serde_json's error.
        #[source]
        source: serde_json::Error,
    },
    /// An index `--recursive` follows cannot be read.
    #[error("sign {reference}: the index {index} cannot be read for --recursive")]
    Index {
        /// The reference given to `--recursive`.
        reference: String,
        /// Digest of the index (the top one or a nested one) whose entries could not be read.
        index: Digest,
        /// Why its content is not a readable index.
        #[source]
        source: crate::platform::IndexError,
    },
    /// `--recursive` found more than [`super::MAX_RECURSIVE_MANIFESTS`].
    #[error("sign {reference}: --recursive found more than {limit} manifests")]
    TooManyManifests {
        /// The reference given to `--recursive`.
        reference: String,
        /// [`super::MAX_RECURSIVE_MANIFESTS`]: distinct entries below the top index.
        limit: usize,
    },
    /// `--recursive` found indexes nested deeper than [`super::MAX_INDEX_DEPTH`].
    #[error("sign {reference}: --recursive found indexes nested more than {limit} deep")]
    TooDeep {
        /// The reference given to `--recursive`.
        reference: String,
        /// [`super::MAX_INDEX_DEPTH`].
        limit: usize,
    },
    /// The private key could not sign.
    #[error("sign {reference}: signing failed")]
    Key {
        /// The reference being signed.
        reference: String,
        /// The crypto provider's failure ([`key::PrivateKeyError::Crypto`]).
        #[source]
        source: super::key::PrivateKeyError,
    },
}
