//! `COSIGN_REPOSITORY` on the command line: read and parsed as cosign reads it, for `verify`
//! and `verify-attestation` without `--policy`, `discover`, `sign` and `attest`. Must not read
//! anything else.
//!
//! With `--policy` the variable is not used: the policy is what the webhook enforces, and a
//! rule's `signaturesRepository` says where its signatures are (policy-controller and Kyverno
//! ignore cosign's variable too: where signatures are is part of the policy there as well).

use crate::policy::Policy;
use crate::reference::ImageRef;
use crate::signature_place::{COSIGN_REPOSITORY, SignaturesRepository};

use super::CliError;

/// `COSIGN_REPOSITORY`, when set and not empty (as cosign: empty is unset); a value that is
/// not `REGISTRY/REPOSITORY` is a usage error, as it is for cosign.
pub(super) fn cosign_repository() -> Result<Option<SignaturesRepository>, CliError> {
    match std::env::var(COSIGN_REPOSITORY) {
        Ok(v) if !v.is_empty() => SignaturesRepository::parse(&v).map(Some).map_err(|e| {
            CliError::Usage(format!("${COSIGN_REPOSITORY}: {}", crate::error_chain(&e)))
        }),
        Ok(_) => Ok(None),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(CliError::Usage(format!(
            "${COSIGN_REPOSITORY} is not UTF-8 text"
        ))),
    }
}

/// `verify --policy` notes on stderr that `COSIGN_REPOSITORY`, when set, is not used.
pub(super) fn note_unused_with_policy() {
    if std::env::var_os(COSIGN_REPOSITORY).is_some_and(|v| !v.is_empty()) {
        tell!(
            "note: ${COSIGN_REPOSITORY} is not used with --policy: each rule's \
             signaturesRepository says where its signatures are"
        );
    }
}

/// `reference` and the signatures repository: the hosts `--allow-insecure-registry` and
/// `--allow-http-registry` apply to.
pub(super) fn with_signatures<'r>(
    reference: &'r ImageRef,
    signatures: &'r Option<SignaturesRepository>,
) -> Vec<&'r ImageRef> {
    std::iter::once(reference)
        .chain(signatures.as_ref().map(SignaturesRepository::reference))
        .collect()
}

/// The references given and every signatures repository the policy's rules name: the hosts
/// `--allow-insecure-registry` and `--allow-http-registry` apply to.
pub(super) fn and_policy_places<'r>(
    references: &'r [ImageRef],
    policy: &'r Policy,
) -> Vec<&'r ImageRef> {
    let places = policy
        .rules
        .iter()
        .filter_map(|r| r.signatures_repository.as_ref());
    references
        .iter()
        .chain(places.map(SignaturesRepository::reference))
        .collect()
}

/// `COSIGN_REPOSITORY` made the signatures repository of the one rule of a policy built from
/// `--key` or the keyless flags.
pub(super) fn into_ad_hoc(policy: &mut Policy) -> Result<(), CliError> {
    let signatures = cosign_repository()?;
    for rule in &mut policy.rules {
        rule.signatures_repository = signatures.clone();
    }
    Ok(())
}

/// The registry hosts of `references`.
pub(super) fn hosts(references: &[&ImageRef]) -> Vec<String> {
    references
        .iter()
        .filter_map(|r| r.registry().map(str::to_string))
        .collect()
}
