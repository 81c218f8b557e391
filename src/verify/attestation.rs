//! STUB (lead's branch only; helper statement's module replaces it).
#![allow(missing_docs, unreachable_pub, dead_code)]

use super::{Evidence, Rejection};
use crate::bundle::BundleAuthority;
use crate::candidate::AttestationCandidate;
use crate::predicate::PredicateType;
use crate::reference::Digest;
use crate::trust::TrustRoot;

#[derive(Debug, Clone)]
pub struct ArtifactDigests;
impl ArtifactDigests {
    pub fn of_digest(_d: &Digest) -> Self {
        ArtifactDigests
    }
    pub fn of_bytes(_b: &[u8]) -> Self {
        ArtifactDigests
    }
    pub fn from_hex(_a: &str, _h: &str) -> Result<Self, super::StatementError> {
        Ok(ArtifactDigests)
    }
}
pub struct AttestationExpectation<'a> {
    pub digests: &'a ArtifactDigests,
    pub predicate_type: &'a PredicateType,
}
pub struct PreparedAttestation<'c> {
    c: &'c AttestationCandidate,
}
impl<'c> PreparedAttestation<'c> {
    pub fn new(c: &'c AttestationCandidate) -> Self {
        PreparedAttestation { c }
    }
    pub fn candidate(&self) -> &'c AttestationCandidate {
        self.c
    }
    pub fn has_tlog_entries(&self) -> bool {
        false
    }
}
#[derive(Debug)]
pub struct VerifiedAttestation {
    authority: String,
    evidence: Evidence,
    location: String,
    predicate_type: String,
    statement: Vec<u8>,
}
impl VerifiedAttestation {
    pub fn authority(&self) -> &str {
        &self.authority
    }
    pub fn evidence(&self) -> &Evidence {
        &self.evidence
    }
    pub fn location(&self) -> &str {
        &self.location
    }
    pub fn predicate_type(&self) -> &str {
        &self.predicate_type
    }
    pub fn statement_json(&self) -> &[u8] {
        &self.statement
    }
    pub fn signer_facts(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
}
pub fn verify_attestation(
    p: &PreparedAttestation<'_>,
    authority: &str,
    _who: BundleAuthority<'_>,
    _root: &TrustRoot,
    _expect: &AttestationExpectation<'_>,
) -> Result<VerifiedAttestation, Rejection> {
    Err(Rejection::new(
        p.c.location.clone(),
        super::RejectionKind::NotKeyless {
            authority: authority.into(),
        },
    ))
}
