//! How results look: text for people, JSON documents for programs, the progress line, the
//! version text. Formatting only: it must not decide a verdict or an exit code.

use std::io::Write as _;
use std::process::ExitCode;

use super::CliError;
use super::args::Output;
use crate::discover::{AttestationSummary, Discovery};
use crate::engine::Decision;
use crate::error_chain;
use crate::extract::{Location, Skipped};
use crate::policy::Verdict;
use crate::reference::{Digest, ImageRef};

/// Write `text` to standard output; a closed pipe (`ocigate … | head -0`) or a full disk is an
/// error (exit 2), never a panic as `print!` would make it.
pub(crate) fn say(text: impl std::fmt::Display) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    write!(out, "{text}")
        .and_then(|()| out.flush())
        .map_err(|source| CliError::Io {
            what: "writing to standard output".into(),
            source,
        })
}

/// `-o json`'s answer to a usage or configuration error: a JSON document too, and still exit 2
/// (said on stderr instead when standard output is closed, as a text run says it).
pub(crate) fn json_error(e: &CliError) -> Result<ExitCode, CliError> {
    let doc = serde_json::json!({
        "schemaVersion": JSON_SCHEMA_VERSION,
        "error": {"kind": e.kind(), "message": error_chain(e)},
        "results": [],
    });
    let written = say(format_args!(
        "{}\n",
        serde_json::to_string_pretty(&doc).unwrap_or_default()
    ));
    match written {
        Ok(()) => Ok(ExitCode::from(2)),
        Err(w) => {
            tell!("error: {}", error_chain(e));
            Err(w)
        }
    }
}

/// A progress line on stderr while references are checked (only when it is a terminal and the
/// output is text): `[3/10] checked`, rewritten in place and cleared before each result.
pub(crate) struct Progress {
    on: bool,
    total: usize,
    done: std::sync::atomic::AtomicUsize,
}

impl Progress {
    pub(crate) fn new(on: bool, total: usize) -> Self {
        Progress {
            on: on && total > 1,
            total,
            done: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    pub(crate) fn one_done(&self) {
        self.done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.redraw();
    }

    pub(crate) fn redraw(&self) {
        if self.on {
            let done = self.done.load(std::sync::atomic::Ordering::Relaxed);
            tell_part!("\r\x1b[K[{done}/{}] checked", self.total);
        }
    }

    pub(crate) fn clear(&self) {
        if self.on {
            tell_part!("\r\x1b[K");
        }
    }
}

/// The version of `verify -o json`'s document; fields may be added, never renamed.
pub(super) const JSON_SCHEMA_VERSION: u32 = 1;

/// A decision with every place `verify --manifests` found what it is about (none for a
/// reference given on the command line).
pub(crate) struct Reported {
    /// The decision.
    pub(crate) decision: Decision,
    /// Where it was found, in the order found.
    pub(crate) found_in: Vec<Location>,
}

impl Reported {
    /// A decision about something found in `found_in`; "found in …" is its last reason.
    pub(crate) fn found(mut decision: Decision, found_in: Vec<Location>) -> Self {
        if !found_in.is_empty() {
            let places: Vec<String> = found_in.iter().map(Location::to_string).collect();
            decision
                .reasons
                .push(format!("found in {}", places.join(", ")));
        }
        Reported { decision, found_in }
    }
}

impl From<Decision> for Reported {
    fn from(decision: Decision) -> Self {
        Reported {
            decision,
            found_in: Vec::new(),
        }
    }
}

/// One result of `-o json`: the decision's fields, and `locations` when it was found in
/// manifests.
#[derive(serde::Serialize)]
struct ResultJson<'a> {
    #[serde(flatten)]
    decision: &'a Decision,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    locations: &'a [Location],
}

/// Results, and the objects `--manifests` skipped (text: `SKIP` lines; JSON: `skipped`).
pub(crate) fn print_decisions(
    decisions: &[Reported],
    skipped: &[Skipped],
    output: Output,
) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    let io = |source| CliError::Io {
        what: "writing the result".into(),
        source,
    };
    match output {
        Output::Json => {
            #[derive(serde::Serialize)]
            #[serde(rename_all = "camelCase")]
            struct Results<'a> {
                schema_version: u32,
                results: Vec<ResultJson<'a>>,
                #[serde(skip_serializing_if = "<[_]>::is_empty")]
                skipped: &'a [Skipped],
            }
            let results = decisions
                .iter()
                .map(|r| ResultJson {
                    decision: &r.decision,
                    locations: &r.found_in,
                })
                .collect();
            let doc = Results {
                schema_version: JSON_SCHEMA_VERSION,
                results,
                skipped,
            };
            serde_json::to_writer_pretty(&mut out, &doc)
                .map_err(|e| io(std::io::Error::other(e)))?;
            writeln!(out).map_err(io)?;
        }
        Output::Text => {
            for s in skipped {
                write!(out, "{}", text_skipped(s)).map_err(io)?;
            }
            for d in decisions {
                write!(out, "{}", text_decision(&d.decision)).map_err(io)?;
            }
        }
    }
    Ok(())
}

/// An object not checked: `SKIP KIND NS/NAME`, why, and the file.
fn text_skipped(s: &Skipped) -> String {
    let o = &s.object;
    let object = Location {
        file: String::new(),
        ..o.clone()
    };
    format!(
        "SKIP{}\n  {}\n  found in {}\n",
        crate::escape_text(&object.to_string()),
        crate::escape_text(&s.reason),
        crate::escape_text(&o.file)
    )
}

/// One decision for a person: a headline (`ALLOW`/`DENY`/`WARN`, the reference with its
/// digest, the rule, the failure class), then each reason on its own indented line, said once.
/// Everything that came from a registry or a file is escaped.
pub(super) fn text_decision(d: &Decision) -> String {
    let word = match d.verdict {
        Verdict::Allow => "ALLOW",
        Verdict::Deny => "DENY",
        Verdict::Warn => "WARN",
    };
    let target = match &d.digest {
        Some(dg) if !d.reference.contains('@') => format!("{}@{dg}", d.reference),
        _ => d.reference.clone(),
    };
    let mut s = format!("{word} {}", crate::escape_text(&target));
    if let Some(r) = &d.rule {
        s.push_str(&format!(" [rule {}]", crate::escape_text(r)));
    }
    if let Some(f) = d.failure.filter(|_| d.verdict != Verdict::Allow) {
        s.push_str(&format!(" ({f})"));
    }
    s.push('\n');
    let mut said = std::collections::HashSet::new();
    for r in &d.reasons {
        if said.insert(r.as_str()) {
            s.push_str(&format!("  {}\n", crate::escape_text(r)));
        }
    }
    if let (Some(rule), Some(needs)) = (&d.rule, &d.needs) {
        s.push_str(&format!(
            "  rule {} needs {}\n",
            crate::escape_text(rule),
            crate::escape_text(needs)
        ));
    }
    for sig in &d.signatures {
        let by = match sig.evidence() {
            crate::verify::Evidence::Key {
                key_fingerprint,
                log_index,
            } => {
                let log = log_index.map_or_else(
                    || " (no transparency-log entry checked)".to_string(),
                    |i| format!(", Rekor log index {i}"),
                );
                format!("key {key_fingerprint}{log}")
            }
            crate::verify::Evidence::Keyless {
                identity,
                issuer,
                log_index,
                ..
            } => {
                let log = log_index.map_or_else(String::new, |i| format!(", Rekor log index {i}"));
                format!("certificate for {identity} from {issuer}{log}")
            }
            crate::verify::Evidence::Certificate {
                identity,
                log_index,
                ..
            } => {
                let log = log_index.map_or_else(String::new, |i| format!(", Rekor log index {i}"));
                format!("certificate for {identity} from the authority's CAs{log}")
            }
        };
        s.push_str(&format!(
            "  signed: authority {} by {} at {}\n",
            crate::escape_text(sig.authority()),
            crate::escape_text(&by),
            crate::escape_text(sig.location())
        ));
    }
    match (&d.source, &d.revision) {
        (Some(src), Some(rev)) => s.push_str(&format!(
            "  source {} @ {}\n",
            crate::escape_text(src),
            crate::escape_text(rev)
        )),
        (Some(src), None) => s.push_str(&format!("  source {}\n", crate::escape_text(src))),
        _ => {}
    }
    s
}

/// `ocigate VERSION (commit C)` and the validity windows of the embedded trust root, by kind
/// (what an air-gapped cluster relies on until it is given a newer root).
pub(crate) fn version_text() -> String {
    let mut out = format!(
        "ocigate {} (commit {})\n",
        env!("CARGO_PKG_VERSION"),
        env!("OCIGATE_COMMIT")
    );
    let root = match serde_json::from_str::<RootWindows>(
        sigstore_trust_root::SIGSTORE_PRODUCTION_TRUSTED_ROOT,
    ) {
        Ok(r) => r,
        Err(e) => {
            out.push_str(&format!("embedded trust root: unreadable ({e})\n"));
            return out;
        }
    };
    let window = |ranges: &[Window]| {
        let ranges: Vec<_> = ranges.iter().map(|w| w.valid_for.as_ref()).collect();
        let starts = ranges.iter().flatten().map(|r| r.start.to_string());
        let from = starts.min().unwrap_or_else(|| "?".into());
        let until = if ranges.iter().any(|r| r.is_none_or(|r| r.end.is_none())) {
            "the newest without an end date".to_string()
        } else {
            let last = ranges
                .iter()
                .flatten()
                .filter_map(|r| r.end.map(|e| e.to_string()))
                .max()
                .unwrap_or_else(|| "?".into());
            format!("until {last}")
        };
        format!("{} (valid from {from}; {until})", ranges.len())
    };
    let keys = |logs: &[KeyWindow]| logs.iter().map(|l| l.public_key).collect::<Vec<_>>();
    out.push_str("embedded trust root (Sigstore public-good):\n");
    out.push_str(&format!(
        "  Fulcio certificate authorities: {}\n",
        window(&root.certificate_authorities)
    ));
    out.push_str(&format!(
        "  Rekor transparency logs: {}\n",
        window(&keys(&root.tlogs))
    ));
    out.push_str(&format!(
        "  certificate transparency logs: {}\n",
        window(&keys(&root.ctlogs))
    ));
    out.push_str(&format!(
        "  timestamp authorities: {}\n",
        window(&root.timestamp_authorities)
    ));
    out
}

/// The validity windows of a trusted_root.json and nothing else, as
/// `sigstore_trust_root::TrustedRoot` reads them: `version` runs on every start of a CI job's
/// gate, and need not decode every certificate and key of the root to print them.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RootWindows {
    #[serde(default)]
    tlogs: Vec<KeyWindow>,
    #[serde(default)]
    certificate_authorities: Vec<Window>,
    #[serde(default)]
    ctlogs: Vec<KeyWindow>,
    #[serde(default)]
    timestamp_authorities: Vec<Window>,
}

/// A transparency log's key, whose `validFor` is the log's window.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct KeyWindow {
    public_key: Window,
}

#[derive(serde::Deserialize, Clone, Copy)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Window {
    #[serde(default)]
    valid_for: Option<sigstore_types::TimeRange>,
}

/// What `discover` found for `r` (resolved to `digest`): every signature, every place looked and
/// what was not examined.
pub(crate) fn print_discovery(
    r: &ImageRef,
    digest: &Digest,
    (found, attestations): (&Discovery, &[AttestationSummary]),
    output: Output,
) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    let io = |source| CliError::Io {
        what: "writing the result".into(),
        source,
    };
    match output {
        Output::Json => {
            serde_json::to_writer_pretty(&mut out, &discovery_json(r, digest, found, attestations))
                .map_err(|e| io(std::io::Error::other(e)))?;
            writeln!(out).map_err(io)?;
        }
        Output::Text => out
            .write_all(discovery_text(r, digest, found, attestations).as_bytes())
            .map_err(io)?,
    }
    Ok(())
}

fn discovery_json(
    r: &ImageRef,
    digest: &Digest,
    found: &Discovery,
    attestations: &[AttestationSummary],
) -> serde_json::Value {
    let legacy = found.candidates.iter().map(|c| {
        serde_json::json!({
            "location": c.location,
            "kind": "cosign-legacy",
            "mediaType": crate::payload::SIMPLE_SIGNING_MEDIA_TYPE,
            "claimedSigner": c.claimed_signer(),
            "payload": String::from_utf8_lossy(&c.payload),
            "annotations": c.annotations,
        })
    });
    let bundles = found.bundles.iter().map(|b| {
        serde_json::json!({
            "location": b.location,
            "kind": "sigstore-bundle",
            "mediaType": b.media_type(),
            "claimedSigner": b.claimed_signer(),
        })
    });
    let sigs: Vec<_> = legacy.chain(bundles).collect();
    let attestations: Vec<_> = attestations.iter().map(attestation_json).collect();
    let not_examined: Vec<_> = found
        .not_examined
        .iter()
        .map(|u| {
            serde_json::json!({
                "location": u.location,
                "reason": error_chain(&u.reason),
            })
        })
        .collect();
    serde_json::json!({
        "reference": r.to_string(),
        "digest": digest.to_string(),
        "signatures": sigs,
        "attestations": attestations,
        "unexamined": not_examined,
        "paths": found.paths,
    })
}

/// One attestation `discover` found: what its manifest or layer claims, unverified.
fn attestation_json(a: &AttestationSummary) -> serde_json::Value {
    serde_json::json!({
        "location": a.location,
        "kind": a.kind.name(),
        "predicateType": a.claimed_type,
        "mediaType": a.media_type,
        "claimedSigner": a.claimed_signer,
        "annotations": a.annotations,
    })
}

fn discovery_text(
    r: &ImageRef,
    digest: &Digest,
    found: &Discovery,
    attestations: &[AttestationSummary],
) -> String {
    let mut s = format!("{r} resolves to {digest}\n");
    for p in &found.paths {
        let notes = if p.notes.is_empty() {
            String::new()
        } else {
            format!(" ({})", p.notes.join("; "))
        };
        s.push_str(&format!("  {}: {}{notes}\n", p.path, p.counts()));
    }
    for c in &found.candidates {
        s.push_str(&format!(
            "  cosign legacy signature at {}: by {}\n",
            crate::escape_text(&c.location),
            c.claimed_signer()
        ));
    }
    for b in &found.bundles {
        s.push_str(&format!(
            "  Sigstore bundle ({}) at {}: by {}\n",
            crate::escape_text(b.media_type().as_deref().unwrap_or("no media type")),
            crate::escape_text(&b.location),
            b.claimed_signer()
        ));
    }
    for a in attestations {
        let claimed = a.claimed_type.as_deref().map_or_else(
            || "of a type not annotated".to_string(),
            |t| format!("of type {} (as annotated)", crate::escape_text(t)),
        );
        s.push_str(&format!(
            "  attestation {claimed}, {} at {}: by {}\n",
            a.kind.describe(),
            crate::escape_text(&a.location),
            a.claimed_signer
        ));
    }
    for u in &found.not_examined {
        s.push_str(&format!(
            "  not examined: {}: {}\n",
            u.location,
            error_chain(&u.reason)
        ));
    }
    s
}

/// `verify-bundle`'s answer when the bundle verified.
pub(crate) fn print_bundle_verified(
    bundle: &std::path::Path,
    evidence: &crate::bundle::BundleEvidence,
    output: Output,
) -> Result<(), CliError> {
    match output {
        Output::Json => say(format_args!(
            "{}\n",
            serde_json::to_string_pretty(evidence).unwrap_or_default()
        )),
        Output::Text => {
            let who = match (&evidence.identity, &evidence.issuer) {
                (Some(i), Some(iss)) => format!("identity {i} (issuer {iss})"),
                _ => "the given key".to_string(),
            };
            let log = evidence
                .log_index
                .map(|i| format!(", transparency log index {i}"))
                .unwrap_or_default();
            say(format_args!(
                "OK: {} signed by {who}{log}\n",
                bundle.display()
            ))
        }
    }
}

/// `verify-bundle --type`'s result: the verified attestation and each condition's outcome.
pub(crate) fn print_attestation_verified(
    bundle: &std::path::Path,
    evidence: &crate::policy::AttestationEvidence,
    output: Output,
) -> Result<(), CliError> {
    if output == Output::Json {
        return say(format_args!(
            "{}\n",
            serde_json::to_string_pretty(evidence).unwrap_or_default()
        ));
    }
    let head = if evidence.holds() { "OK" } else { "FAILED" };
    let mut text = format!(
        "{head}: {} is an attestation ({}) signed by {}\n",
        bundle.display(),
        crate::escape_text(&evidence.predicate_type),
        crate::escape_text(&signer_text(&evidence.evidence)),
    );
    for c in &evidence.conditions {
        let mark = if c.passed { "held" } else { "FAILED" };
        text.push_str(&format!(
            "  condition {mark}: {}\n",
            crate::escape_text(&c.said())
        ));
    }
    say(text)
}

/// Who signed, as a verified signature's evidence says it.
fn signer_text(e: &crate::verify::Evidence) -> String {
    match e {
        crate::verify::Evidence::Key {
            key_fingerprint, ..
        } => format!("key {key_fingerprint}"),
        crate::verify::Evidence::Keyless {
            identity, issuer, ..
        } => format!("{identity} (issuer {issuer})"),
        crate::verify::Evidence::Certificate { identity, .. } => {
            format!("{identity} (the authority's CAs)")
        }
    }
}

/// `sign`'s line for one target.
pub(crate) fn print_signed(
    target: &ImageRef,
    signed: &crate::sign::Signed,
) -> Result<(), CliError> {
    if signed.added {
        say(format_args!(
            "signed {}@{} -> {} ({} signature(s))\n",
            target.name(),
            signed.digest,
            signed.stored_at,
            signed.signatures
        ))
    } else {
        say(format_args!(
            "already signed: {}@{} has this key's signature of this payload in {} ({} signature(s)); nothing added\n",
            target.name(),
            signed.digest,
            signed.stored_at,
            signed.signatures
        ))
    }
}

/// `attest`'s line (or, with `-o json`, its document).
pub(crate) fn print_attested(
    target: &ImageRef,
    a: &crate::sign::Attested,
    output: Output,
) -> Result<(), CliError> {
    if output == Output::Json {
        let doc = serde_json::json!({"schemaVersion": JSON_SCHEMA_VERSION, "attestation": a});
        return say(format_args!(
            "{}\n",
            serde_json::to_string_pretty(&doc).unwrap_or_default()
        ));
    }
    if a.added {
        say(format_args!(
            "attested {}@{} ({}) -> {} ({} entries)\n",
            target.name(),
            a.digest,
            a.predicate_type,
            a.stored_at,
            a.entries
        ))
    } else {
        say(format_args!(
            "already attested: {}@{} has this key's attestation of this statement ({}) in {} ({} entries); nothing added\n",
            target.name(),
            a.digest,
            a.predicate_type,
            a.stored_at,
            a.entries
        ))
    }
}

#[cfg(test)]
mod tests {
    /// `version`'s reading of the embedded roots has the windows the verifier's reading has.
    #[test]
    fn root_windows_match_the_trusted_root() {
        for json in [
            sigstore_trust_root::SIGSTORE_PRODUCTION_TRUSTED_ROOT,
            sigstore_trust_root::SIGSTORE_STAGING_TRUSTED_ROOT,
        ] {
            let full = sigstore_trust_root::TrustedRoot::from_json(json).unwrap();
            let windows: super::RootWindows = serde_json::from_str(json).unwrap();
            let w = |ws: &[super::Window]| ws.iter().map(|w| w.valid_for).collect::<Vec<_>>();
            let k = |ks: &[super::KeyWindow]| {
                ks.iter()
                    .map(|k| k.public_key.valid_for)
                    .collect::<Vec<_>>()
            };
            assert_eq!(
                w(&windows.certificate_authorities),
                full.certificate_authorities
                    .iter()
                    .map(|c| c.valid_for)
                    .collect::<Vec<_>>()
            );
            assert_eq!(
                k(&windows.tlogs),
                full.tlogs
                    .iter()
                    .map(|t| t.public_key.valid_for)
                    .collect::<Vec<_>>()
            );
            assert_eq!(
                k(&windows.ctlogs),
                full.ctlogs
                    .iter()
                    .map(|t| t.public_key.valid_for)
                    .collect::<Vec<_>>()
            );
            assert_eq!(
                w(&windows.timestamp_authorities),
                full.timestamp_authorities
                    .iter()
                    .map(|t| t.valid_for)
                    .collect::<Vec<_>>()
            );
            assert!(!windows.tlogs.is_empty() && !windows.certificate_authorities.is_empty());
        }
    }
}
