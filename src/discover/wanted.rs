//! What discovery looks for ([`Wanted`]), which attestation blobs that makes it fetch, how
//! they are fetched (their own budget, one large blob at a time), and how one found is named
//! for people ([`AttestationKind`], [`AttestationSummary`]). Must not: read layouts.

use tokio::sync::{Semaphore, SemaphorePermit};

use super::Search;
use std::collections::BTreeMap;

use crate::candidate::{
    AttestationCandidate, AttestationForm, ClaimedSigner, DSSE_ENVELOPE_MEDIA_TYPE,
};
use crate::predicate::PredicateType;
use crate::registry::{Descriptor, FetchBudget, RegistryError};

/// What one discovery looks for. Signatures are always looked for; attestations only when
/// asked, and their blobs only for the predicate types asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wanted {
    /// Signatures only (no `.att` lookup, no attestation fetched: exactly what a rule without
    /// attestations needs).
    Signatures,
    /// Signatures, and attestations of these predicate types: a blob whose annotated type is
    /// another is not fetched; one without a type annotation is (its statement says its type
    /// once verified). An empty list is [`Wanted::Signatures`].
    Attestations(Vec<PredicateType>),
    /// Attestations of these predicate types and no signature: the `.sig` tag is not looked
    /// at (`verify-attestation`, whose rule requires no signature; a bundle signature among
    /// the referrers is still handed over).
    OnlyAttestations(Vec<PredicateType>),
    /// Signatures and every attestation, whatever its type (`ocigate discover`).
    All,
}

impl Wanted {
    /// Whether attestations are looked for at all.
    pub fn attestations(&self) -> bool {
        match self {
            Wanted::Signatures => false,
            Wanted::Attestations(types) | Wanted::OnlyAttestations(types) => !types.is_empty(),
            Wanted::All => true,
        }
    }

    /// Whether the `.sig` tag is looked at.
    pub fn signatures(&self) -> bool {
        !matches!(self, Wanted::OnlyAttestations(_))
    }

    /// Whether an attestation whose manifest or layer annotates `claimed` as its predicate
    /// type (`None`: no annotation) is fetched. When types are asked for, only those annotated
    /// with one of them: cosign's `.att` layers, bundle referrers and `ocigate attest` are
    /// annotated, and what is not would be fetched (up to the attestation limit) only to learn
    /// its type. `discover` (every type) fetches them all. (An in-toto referrer's bare layers
    /// are the exception, decided where they are read.)
    pub fn fetches(&self, claimed: Option<&str>) -> bool {
        match (self, claimed) {
            (Wanted::Signatures, _) => false,
            (Wanted::All, _) => true,
            (Wanted::Attestations(_) | Wanted::OnlyAttestations(_), None) => false,
            (Wanted::Attestations(types) | Wanted::OnlyAttestations(types), Some(t)) => {
                types.iter().any(|w| w.is(t))
            }
        }
    }
}

/// What was looked for at a location.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Sought {
    /// A signature: the `.sig` tag, a referrer (before its manifest says it is an attestation).
    #[default]
    Signature,
    /// An attestation: the `.att` tag and its layers, an attestation referrer.
    Attestation,
}

/// How an attestation found is stored, for people and `discover`'s JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttestationKind {
    /// A DSSE envelope layer of cosign's legacy `sha256-<hex>.att` tag.
    LegacyEnvelope,
    /// A DSSE envelope layer of an OCI 1.1 referrer whose artifact type is in-toto's.
    InTotoReferrer,
    /// A Sigstore bundle referrer carrying a DSSE envelope (cosign v3, GitHub).
    Bundle,
}

impl AttestationKind {
    /// The kind of an attestation discovery found (read from its form and the location
    /// discovery gave it: the `.att` tag's locations start with `tag `).
    pub fn of(candidate: &AttestationCandidate) -> Self {
        match &candidate.form {
            AttestationForm::Bundle(_) => AttestationKind::Bundle,
            AttestationForm::Envelope { .. } if candidate.location.starts_with("tag ") => {
                AttestationKind::LegacyEnvelope
            }
            AttestationForm::Envelope { .. } => AttestationKind::InTotoReferrer,
        }
    }

    /// `cosign-legacy-attestation`, `in-toto-referrer`, `sigstore-bundle` (JSON).
    pub fn name(self) -> &'static str {
        match self {
            AttestationKind::LegacyEnvelope => "cosign-legacy-attestation",
            AttestationKind::InTotoReferrer => "in-toto-referrer",
            AttestationKind::Bundle => "sigstore-bundle",
        }
    }

    /// How `discover`'s text says it.
    pub fn describe(self) -> &'static str {
        match self {
            AttestationKind::LegacyEnvelope => "cosign legacy .att envelope",
            AttestationKind::InTotoReferrer => "in-toto referrer envelope",
            AttestationKind::Bundle => "Sigstore bundle",
        }
    }
}

/// What a listing says of one attestation found: what its manifest, layer or bundle claims,
/// unverified; none of its bytes.
#[derive(Debug, Clone)]
pub struct AttestationSummary {
    /// Where it was found (as [`AttestationCandidate::location`]).
    pub location: String,
    /// How it is stored.
    pub kind: AttestationKind,
    /// The predicate type its manifest or layer annotates, if any.
    pub claimed_type: Option<String>,
    /// The envelope's media type, or the bundle's as its JSON says.
    pub media_type: Option<String>,
    /// Who it says signed it.
    pub claimed_signer: ClaimedSigner,
    /// An envelope layer's annotations (certificate, chain, Rekor bundle, timestamp).
    pub annotations: Option<BTreeMap<String, String>>,
}

impl AttestationSummary {
    /// What a listing says of `a`.
    pub fn of(a: &AttestationCandidate) -> Self {
        let (media_type, annotations) = match &a.form {
            AttestationForm::Envelope { annotations, .. } => (
                Some(DSSE_ENVELOPE_MEDIA_TYPE.to_string()),
                Some(annotations.clone()),
            ),
            AttestationForm::Bundle(b) => (b.media_type(), None),
        };
        AttestationSummary {
            location: a.location.clone(),
            kind: AttestationKind::of(a),
            claimed_type: a.claimed_type.clone(),
            media_type,
            claimed_signer: a.claimed_signer(),
            annotations,
        }
    }
}

/// Attestation blobs one discovery fetches in all, in blobs of the largest size allowed
/// ([`crate::registry::Registry::max_attestation_bytes`]): 128 MiB with the default 32 MiB
/// limit. Charged apart from the signatures' [`super::MAX_DISCOVERY_BYTES`].
pub const ATTESTATION_BUDGET_BLOBS: usize = 4;

/// Attestation blobs declared larger than this are fetched (and handed over) one at a time per
/// discovery; smaller ones several at once, like signatures. A blob is never read past its
/// declared size, so the declaration decides.
pub const LARGE_ATTESTATION_BYTES: u64 = 1 << 20;

/// How one discovery fetches attestation blobs: charged to their own budget, one large blob
/// at a time.
#[derive(Debug)]
pub(super) struct AttestationFetches {
    budget: FetchBudget,
    large: Semaphore,
}

impl AttestationFetches {
    /// For blobs of at most `limit` bytes each.
    pub(super) fn new(limit: usize) -> Self {
        AttestationFetches {
            budget: FetchBudget::new(limit.saturating_mul(ATTESTATION_BUDGET_BLOBS)),
            large: Semaphore::new(1),
        }
    }
}

/// An attestation blob fetched, with the turn it took if it is large: the caller keeps it
/// until the blob has been handed over, so no two large blobs are held by discovery at once.
pub(super) struct Fetched<'a> {
    pub bytes: Result<Vec<u8>, RegistryError>,
    pub turn: Option<SemaphorePermit<'a>>,
}

/// Fetch the attestation blob `desc` names (its size already checked against the limit).
pub(super) async fn fetch_attestation<'a>(s: Search<'a>, desc: &Descriptor) -> Fetched<'a> {
    let fetches = s.attestations;
    let turn = if desc.size > LARGE_ATTESTATION_BYTES {
        // The semaphore is never closed: an error cannot happen, and would only mean no turn.
        fetches.large.acquire().await.ok()
    } else {
        None
    };
    let bytes = s
        .registry
        .get_attestation_blob(s.subject, desc, &fetches.budget)
        .await;
    Fetched { bytes, turn }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_fetched_for_what_is_wanted() {
        let slsa = PredicateType::parse("slsaprovenance1").unwrap();
        let wanted = Wanted::Attestations(vec![slsa.clone()]);
        assert!(wanted.attestations());
        assert!(wanted.fetches(Some(slsa.as_str())));
        assert!(!wanted.fetches(Some("https://spdx.dev/Document")));
        assert!(
            !wanted.fetches(None),
            "an unannotated one is not fetched to learn its type"
        );
        let none = Wanted::Attestations(Vec::new());
        assert!(!none.attestations() && !none.fetches(None));
        assert!(!Wanted::Signatures.attestations());
        assert!(!Wanted::Signatures.fetches(Some(slsa.as_str())));
        assert!(Wanted::All.fetches(Some("urn:anything")) && Wanted::All.fetches(None));
    }

    #[test]
    fn kinds_are_told_by_form_and_place() {
        let envelope = |location: &str| AttestationCandidate {
            location: location.into(),
            claimed_type: None,
            form: AttestationForm::Envelope {
                envelope: std::sync::Arc::new(b"{}".to_vec()),
                annotations: Default::default(),
            },
        };
        let legacy = envelope("tag sha256-00.att layer 1");
        assert_eq!(
            AttestationKind::of(&legacy),
            AttestationKind::LegacyEnvelope
        );
        let referred = envelope("referrers API sha256:0123456789ab… layer 1");
        assert_eq!(
            AttestationKind::of(&referred),
            AttestationKind::InTotoReferrer
        );
        let bundle = AttestationCandidate {
            form: AttestationForm::Bundle(crate::candidate::BundleCandidate {
                location: "referrers API sha256:0123456789ab…".into(),
                json: "{}".into(),
            }),
            ..referred
        };
        assert_eq!(AttestationKind::of(&bundle).name(), "sigstore-bundle");
    }
}
