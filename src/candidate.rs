//! What discovery hands to verification: signatures found, not yet verified. Plain data, no
//! I/O, so that `verify` depends on these types and not on the code that fetches them.

use std::collections::BTreeMap;

/// The annotation naming a bundle's in-toto predicate type on its referrer manifest.
pub const PREDICATE_TYPE_ANNOTATION: &str = "dev.sigstore.bundle.predicateType";
/// The predicate of a cosign v3 image signature (as opposed to an attestation).
pub const COSIGN_SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";

/// One signature found, not yet verified.
#[derive(Debug, Clone)]
pub struct SignatureCandidate {
    /// Where it was found, for people: `tag sha256-<hex>.sig layer 2`.
    pub location: String,
    /// The exact signed bytes.
    pub payload: Vec<u8>,
    /// The base64 signature as stored.
    pub signature: String,
    /// The layer's annotations (certificate, chain, Rekor bundle, ...).
    pub annotations: BTreeMap<String, String>,
}

/// A Sigstore bundle attached to the digest, not yet verified.
#[derive(Debug, Clone)]
pub struct BundleCandidate {
    /// Where it was found: `referrers tag sha256-<hex> → sha256:<manifest>`.
    pub location: String,
    pub json: String,
}
