//! Verifying one attestation candidate (a DSSE envelope from cosign's `.att` tag, or a Sigstore
//! bundle carrying one) against one authority. Pure: no I/O, no policy, no CEL conditions.

use std::borrow::Cow;
use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;

use super::statement::{ArtifactDigests, Statement};
use super::{Evidence, Rejection, RejectionKind, StatementError, bundle_rejection};
use crate::bundle::{
    BundleArtifact, BundleAuthority, BundleError, BundleEvidence, CERTIFICATE_ANNOTATION,
    ParsedBundle, REKOR_BUNDLE_ANNOTATION, verify_bundle,
};
use crate::candidate::{AttestationCandidate, AttestationForm, IN_TOTO_MEDIA_TYPE};
use crate::predicate::PredicateType;
use crate::trust::{GitHubWorkflow, PublicKey, TrustRoot};

/// The layer annotation cosign puts an RFC 3161 timestamp of the signature in.
pub const RFC3161_TIMESTAMP_ANNOTATION: &str = "dev.sigstore.cosign/rfc3161timestamp";
/// The most signatures of one DSSE envelope checked (each one hashes the whole payload).
pub const MAX_ENVELOPE_SIGNATURES: usize = 8;

/// What an attestation must say to count: a subject naming the artifact, the predicate type.
#[derive(Debug, Clone, Copy)]
pub struct AttestationExpectation<'a> {
    /// The digests the artifact is known by.
    pub digests: &'a ArtifactDigests,
    /// The predicate type asked for.
    pub predicate_type: &'a PredicateType,
}

/// An attestation candidate parsed at most once for all the authorities it is checked against:
/// the envelope (its payload decoded once, into the buffer that is signed), or the bundle; its
/// statement, and a legacy envelope's bundle form, when first needed.
pub struct PreparedAttestation<'c> {
    candidate: &'c AttestationCandidate,
    content: Result<Content<'c>, Unreadable>,
    statement: OnceCell<Result<Statement, Arc<StatementError>>>,
    envelope_bundle: OnceCell<Result<ParsedBundle, Arc<BundleError>>>,
    bundle_payload: OnceCell<Signed>,
}

/// Why a candidate cannot be read at all (every authority's rejection).
enum Unreadable {
    Statement(Arc<StatementError>),
    Bundle(Arc<BundleError>),
}

enum Content<'c> {
    Envelope(Envelope<'c>),
    Bundle(ParsedBundle),
}

/// A DSSE envelope, borrowing the candidate's bytes; only the payload is decoded.
struct Envelope<'c> {
    payload_type: Cow<'c, str>,
    payload_b64: Cow<'c, str>,
    signatures: Vec<Cow<'c, str>>,
    signed: Signed,
    annotations: &'c BTreeMap<String, String>,
}

/// The signed payload, shared with the evidence without a copy: for an envelope, the PAE
/// buffer with the payload at `start`; for a bundle, the payload alone.
#[derive(Clone)]
struct Signed {
    buf: Arc<Vec<u8>>,
    start: usize,
}

impl Signed {
    fn payload(&self) -> &[u8] {
        self.buf.get(self.start..).unwrap_or_default()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEnvelope<'a> {
    #[serde(borrow)]
    payload_type: Cow<'a, str>,
    #[serde(borrow)]
    payload: Cow<'a, str>,
    #[serde(borrow, default)]
    signatures: Vec<RawSignature<'a>>,
}

#[derive(Deserialize)]
struct RawSignature<'a> {
    #[serde(borrow)]
    sig: Cow<'a, str>,
}

impl<'c> PreparedAttestation<'c> {
    /// Parse `candidate` once (a parse failure is every authority's rejection).
    pub fn new(candidate: &'c AttestationCandidate) -> Self {
        let content = match &candidate.form {
            AttestationForm::Envelope {
                envelope,
                annotations,
            } => parse_envelope(envelope, annotations)
                .map(Content::Envelope)
                .map_err(|e| Unreadable::Statement(Arc::new(e))),
            AttestationForm::Bundle(b) => ParsedBundle::parse_attestation(&b.json)
                .map(Content::Bundle)
                .map_err(|e| Unreadable::Bundle(Arc::new(e))),
        };
        PreparedAttestation {
            candidate,
            content,
            statement: OnceCell::new(),
            envelope_bundle: OnceCell::new(),
            bundle_payload: OnceCell::new(),
        }
    }

    /// The attestation being checked.
    pub fn candidate(&self) -> &AttestationCandidate {
        self.candidate
    }

    /// Whether it carries transparency-log entries (a legacy layer: a Rekor bundle annotation),
    /// to decide what a `tlog: optional` key authority requires; false when it does not parse.
    pub fn has_tlog_entries(&self) -> bool {
        match &self.content {
            Ok(Content::Envelope(e)) => e.annotations.contains_key(REKOR_BUNDLE_ANNOTATION),
            Ok(Content::Bundle(b)) => b.has_tlog_entries(),
            Err(_) => false,
        }
    }

    fn location(&self) -> &str {
        &self.candidate.location
    }

    /// The statement, read once (not believed before a signature over it verified).
    fn statement(&self, authority: &str) -> Result<&Statement, Rejection> {
        let payload = match &self.content {
            Ok(Content::Envelope(e)) => Some(e.signed.payload()),
            Ok(Content::Bundle(b)) => b.dsse_payload(),
            Err(_) => None,
        };
        let read = || match payload {
            Some(bytes) => Statement::parse(bytes).map_err(Arc::new),
            None => Err(Arc::new(StatementError::NoEnvelope)),
        };
        self.statement
            .get_or_init(read)
            .as_ref()
            .map_err(|e| self.statement_rejection(authority, e.clone()))
    }

    fn statement_rejection(&self, authority: &str, source: Arc<StatementError>) -> Rejection {
        let authority = authority.to_string();
        Rejection::new(
            self.location(),
            RejectionKind::Statement { authority, source },
        )
    }

    fn rejection(&self, kind: RejectionKind) -> Rejection {
        Rejection::new(self.location(), kind)
    }

    /// The digest sigstore-verify binds the statement to (see [`Statement::binding_artifact`]).
    fn binding(
        &self,
        authority: &str,
        expect: &AttestationExpectation<'_>,
    ) -> Result<BundleArtifact<'static>, Rejection> {
        self.statement(authority)?
            .binding_artifact(expect.digests)
            .ok_or_else(|| {
                self.rejection(RejectionKind::NotSupported {
                    authority: authority.to_string(),
                    what: "an attestation whose subjects name no sha256 or sha512 digest, \
                           verified with a transparency log or a certificate (sigstore-verify \
                           binds those two only),"
                        .into(),
                })
            })
    }
}

/// Verify attestation `p` by `who` (the authority named `authority`) under `root`: the DSSE
/// signature, the log entry and certificate rules of `who` as signatures have them; then the
/// in-toto statement (v0.1 or v1) must name the artifact in a subject and attest
/// `expect.predicate_type`.
///
/// The signature is checked over the exact payload bytes before anything in the statement is
/// believed. A key without a log is checked here (DSSE PAE); a key with a log, and every
/// certificate, go through sigstore-verify, a legacy envelope as the bundle that carries the
/// same material (as signatures' legacy layers do).
pub fn verify_attestation(
    p: &PreparedAttestation<'_>,
    authority: &str,
    who: BundleAuthority<'_>,
    root: &TrustRoot,
    expect: &AttestationExpectation<'_>,
) -> Result<VerifiedAttestation, Rejection> {
    let location = p.location();
    let content = p.content.as_ref().map_err(|e| match e {
        Unreadable::Statement(s) => p.statement_rejection(authority, s.clone()),
        Unreadable::Bundle(b) => bundle_rejection(location, authority, b.clone()),
    })?;
    let (bundle_evidence, signed) = match content {
        Content::Envelope(env) => {
            let evidence = verify_envelope(p, env, authority, who, root, expect)?;
            (evidence, env.signed.clone())
        }
        Content::Bundle(parsed) => {
            let artifact = p.binding(authority, expect)?;
            let evidence = verify_bundle(parsed, artifact, who, root)
                .map_err(|e| bundle_rejection(location, authority, Arc::new(e)))?;
            let signed = p.bundle_payload.get_or_init(|| Signed {
                buf: Arc::new(parsed.dsse_payload().unwrap_or_default().to_vec()),
                start: 0,
            });
            (evidence, signed.clone())
        }
    };
    let payload_type = match content {
        Content::Envelope(env) => Some(env.payload_type.as_ref()),
        Content::Bundle(parsed) => parsed.dsse_payload_type(),
    };
    let statement = check_statement(p, authority, payload_type, expect)?;
    let (evidence, github) = evidence_for(who, bundle_evidence);
    Ok(VerifiedAttestation {
        authority: authority.to_string(),
        evidence,
        location: location.to_string(),
        predicate_type: statement.predicate_type.clone(),
        github,
        statement: signed,
    })
}

/// What the verified statement must be: in-toto, of a known type, naming the artifact, of the
/// predicate type asked for.
fn check_statement<'p>(
    p: &'p PreparedAttestation<'_>,
    authority: &str,
    payload_type: Option<&str>,
    expect: &AttestationExpectation<'_>,
) -> Result<&'p Statement, Rejection> {
    let wrong = |e: StatementError| p.statement_rejection(authority, Arc::new(e));
    let payload_type = payload_type.ok_or_else(|| wrong(StatementError::NoEnvelope))?;
    if payload_type != IN_TOTO_MEDIA_TYPE {
        let found = crate::bounded::cut(payload_type, 256).into_owned();
        return Err(wrong(StatementError::PayloadType { found }));
    }
    let statement = p.statement(authority)?;
    statement.check_type().map_err(wrong)?;
    if !statement.names(expect.digests) {
        return Err(p.rejection(RejectionKind::SubjectMismatch {
            subjects: statement.named_digests(),
            expected: expect.digests.to_string(),
        }));
    }
    if !expect.predicate_type.is(&statement.predicate_type) {
        let found = crate::bounded::cut(&statement.predicate_type, 1024).into_owned();
        return Err(p.rejection(RejectionKind::PredicateTypeMismatch {
            expected: expect.predicate_type.to_string(),
            found: crate::escape_text(&found),
        }));
    }
    Ok(statement)
}

/// A legacy envelope by `who`: a key without a log checks the PAE here; a key with a log checks
/// it too, then the envelope's bundle form with its Rekor entry; a certificate needs the form.
fn verify_envelope(
    p: &PreparedAttestation<'_>,
    env: &Envelope<'_>,
    authority: &str,
    who: BundleAuthority<'_>,
    root: &TrustRoot,
    expect: &AttestationExpectation<'_>,
) -> Result<BundleEvidence, Rejection> {
    let name = || authority.to_string();
    match who {
        BundleAuthority::KeyWithoutTlog(key) => {
            signed_by(env, key, p, authority)?;
            Ok(BundleEvidence::unlogged_key(root))
        }
        BundleAuthority::Key(key) => {
            signed_by(env, key, p, authority)?;
            if !env.annotations.contains_key(REKOR_BUNDLE_ANNOTATION) {
                return Err(p.rejection(RejectionKind::NoTlogEntry { authority: name() }));
            }
            envelope_bundle_check(p, env, authority, who, root, expect)
        }
        BundleAuthority::Identities(_) => {
            if !env.annotations.contains_key(CERTIFICATE_ANNOTATION) {
                return Err(p.rejection(RejectionKind::NotKeyless { authority: name() }));
            }
            envelope_bundle_check(p, env, authority, who, root, expect)
        }
    }
}

/// Any of the envelope's signatures verifies over the PAE with `key`.
fn signed_by(
    env: &Envelope<'_>,
    key: &PublicKey,
    p: &PreparedAttestation<'_>,
    authority: &str,
) -> Result<(), Rejection> {
    let signed = env
        .signatures
        .iter()
        .filter_map(|s| decode_base64_any(s).ok())
        .any(|sig| key.verify(&env.signed.buf, &sig));
    if signed {
        return Ok(());
    }
    let authority = authority.to_string();
    Err(p.rejection(RejectionKind::BadSignature { authority }))
}

/// The envelope as a bundle (built and parsed once), verified by sigstore-verify.
fn envelope_bundle_check(
    p: &PreparedAttestation<'_>,
    env: &Envelope<'_>,
    authority: &str,
    who: BundleAuthority<'_>,
    root: &TrustRoot,
    expect: &AttestationExpectation<'_>,
) -> Result<BundleEvidence, Rejection> {
    let location = p.location();
    if env.signatures.len() != 1 {
        return Err(p.rejection(RejectionKind::NotSupported {
            authority: authority.to_string(),
            what: format!(
                "a DSSE envelope with {} signatures, verified with a transparency log or a \
                 certificate,",
                env.signatures.len()
            ),
        }));
    }
    let artifact = p.binding(authority, expect)?;
    let parsed = p
        .envelope_bundle
        .get_or_init(|| envelope_bundle(env).map_err(Arc::new))
        .as_ref()
        .map_err(|e| bundle_rejection(location, authority, e.clone()))?;
    verify_bundle(parsed, artifact, who, root)
        .map_err(|e| bundle_rejection(location, authority, Arc::new(e)))
}

/// The evidence as signatures say it, and the certificate's GitHub workflow claims.
fn evidence_for(who: BundleAuthority<'_>, mut e: BundleEvidence) -> (Evidence, GitHubWorkflow) {
    let github = match who {
        BundleAuthority::Identities(_) => std::mem::take(&mut e.github_workflow),
        _ => GitHubWorkflow::default(),
    };
    (Evidence::of_bundle(who, e), github)
}

/// Parse a DSSE envelope's JSON, borrowing its strings, and decode the payload once, straight
/// into the PAE buffer that is signed (no second copy of a large payload).
fn parse_envelope<'c>(
    bytes: &'c [u8],
    annotations: &'c BTreeMap<String, String>,
) -> Result<Envelope<'c>, StatementError> {
    // `payload` twice, or `Payload` beside it (one field to Go's decoder), is refused.
    crate::payload::check_unambiguous_keys(bytes, &[]).map_err(|refused| match refused {
        crate::payload::KeysRefused::NotJson(e) => StatementError::Envelope(e),
        other => StatementError::of_keys(other),
    })?;
    let raw: RawEnvelope<'c> = serde_json::from_slice(bytes).map_err(StatementError::Envelope)?;
    match raw.signatures.len() {
        0 => return Err(StatementError::NoSignature),
        count if count > MAX_ENVELOPE_SIGNATURES => {
            let max = MAX_ENVELOPE_SIGNATURES;
            return Err(StatementError::TooManySignatures { count, max });
        }
        _ => {}
    }
    let signed = pae(&raw.payload_type, &raw.payload)?;
    Ok(Envelope {
        payload_type: raw.payload_type,
        payload_b64: raw.payload,
        signatures: raw.signatures.into_iter().map(|s| s.sig).collect(),
        signed,
        annotations,
    })
}

/// DSSE pre-authentication encoding, `DSSEv1 <len(type)> <type> <len(body)> <body>`, with the
/// body decoded from base64 (standard, or URL-safe as Go's DSSE library also reads) in place.
fn pae(payload_type: &str, b64: &str) -> Result<Signed, StatementError> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};
    let compact = if b64.bytes().any(|b| b.is_ascii_whitespace()) {
        Cow::Owned(crate::compact_base64(b64))
    } else {
        Cow::Borrowed(b64)
    };
    let s = compact.as_bytes();
    let padding = s.iter().rev().take(2).take_while(|b| **b == b'=').count();
    let len = (s.len() - padding) * 3 / 4;
    let header = format!("DSSEv1 {} {payload_type} {len} ", payload_type.len());
    let start = header.len();
    // Room for the decoder's estimate, so that decoding never reallocates the buffer.
    let mut buf = Vec::with_capacity(start + s.len().div_ceil(4) * 3);
    buf.extend_from_slice(header.as_bytes());
    if STANDARD.decode_vec(s, &mut buf).is_err() {
        buf.truncate(start);
        URL_SAFE
            .decode_vec(s, &mut buf)
            .map_err(StatementError::NotBase64)?;
    }
    if buf.len() != start + len {
        let e = base64::DecodeError::InvalidLength(s.len());
        return Err(StatementError::NotBase64(e));
    }
    let buf = Arc::new(buf);
    Ok(Signed { buf, start })
}

fn decode_base64_any(s: &str) -> Result<Vec<u8>, base64::DecodeError> {
    use base64::Engine as _;
    crate::decode_base64(s)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(crate::compact_base64(s)))
}

/// A cosign `.att` layer (envelope, certificate, chain, Rekor entry, RFC 3161 timestamp) as the
/// v0.1 Sigstore bundle that carries the same material (see [`crate::bundle::legacy_to_bundle`]).
fn envelope_bundle(env: &Envelope<'_>) -> Result<ParsedBundle, BundleError> {
    let a = env.annotations;
    let mut vm = crate::bundle::legacy_material(a)?;
    if let Some(ts) = a.get(RFC3161_TIMESTAMP_ANNOTATION) {
        vm["timestampVerificationData"] = rfc3161(ts)?;
    }
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Wire<'a> {
        media_type: &'a str,
        verification_material: &'a serde_json::Value,
        dsse_envelope: WireEnvelope<'a>,
    }
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct WireEnvelope<'a> {
        payload: &'a str,
        payload_type: &'a str,
        signatures: [serde_json::Value; 1],
    }
    let sig = env.signatures.first().map_or("", |s| s.as_ref());
    let wire = Wire {
        media_type: "application/vnd.dev.sigstore.bundle+json;version=0.1",
        verification_material: &vm,
        dsse_envelope: WireEnvelope {
            payload: &env.payload_b64,
            payload_type: &env.payload_type,
            signatures: [serde_json::json!({"sig": sig})],
        },
    };
    let json = serde_json::to_string(&wire).map_err(BundleError::Json)?;
    ParsedBundle::parse(&json)
}

/// cosign's RFC 3161 annotation (`{"SignedRFC3161Timestamp": base64 DER}`) as bundle material.
fn rfc3161(annotation: &str) -> Result<serde_json::Value, BundleError> {
    #[derive(Deserialize)]
    struct Annotation {
        #[serde(rename = "SignedRFC3161Timestamp")]
        signed: String,
    }
    let t: Annotation = serde_json::from_str(annotation).map_err(|e| BundleError::Legacy {
        what: format!("{RFC3161_TIMESTAMP_ANNOTATION} is malformed: {e}"),
    })?;
    Ok(serde_json::json!({"rfc3161Timestamps": [{"signedTimestamp": t.signed}]}))
}

/// Evidence that an attestation verified: which authority, how, where, and the verified
/// statement's bytes. Only this module can make one.
#[derive(Clone)]
pub struct VerifiedAttestation {
    authority: String,
    evidence: Evidence,
    location: String,
    predicate_type: String,
    github: GitHubWorkflow,
    statement: Signed,
}

impl VerifiedAttestation {
    /// The authority (its name in the policy) whose signature verified.
    pub fn authority(&self) -> &str {
        &self.authority
    }
    /// How the signature was tied to the authority.
    pub fn evidence(&self) -> &Evidence {
        &self.evidence
    }
    /// Where the attestation was found.
    pub fn location(&self) -> &str {
        &self.location
    }
    /// The verified statement's predicate type (the one asked for).
    pub fn predicate_type(&self) -> &str {
        &self.predicate_type
    }
    /// The verified DSSE payload: the in-toto statement's JSON, exactly as signed.
    pub fn statement_json(&self) -> &[u8] {
        self.statement.payload()
    }
    /// The certificate's GitHub workflow claims (empty for keys and other certificates).
    pub fn github_workflow(&self) -> &GitHubWorkflow {
        &self.github
    }

    /// The verified signer as conditions see it (`signer`): `{"authority", "kind": "key",
    /// "keyFingerprint"}` or `{"authority", "kind": "keyless", "identity", "issuer", "github":
    /// {the certificate's GitHub workflow claims that are present}}`.
    pub fn signer_facts(&self) -> serde_json::Value {
        match &self.evidence {
            Evidence::Key {
                key_fingerprint, ..
            } => serde_json::json!({
                "authority": self.authority,
                "kind": "key",
                "keyFingerprint": key_fingerprint,
            }),
            Evidence::Keyless {
                identity, issuer, ..
            } => serde_json::json!({
                "authority": self.authority,
                "kind": "keyless",
                "identity": identity,
                "issuer": issuer,
                "github": serde_json::to_value(&self.github)
                    .unwrap_or_else(|_| serde_json::json!({})),
            }),
            Evidence::Certificate { identity, .. } => serde_json::json!({
                "authority": self.authority,
                "kind": "certificate",
                "identity": identity,
            }),
        }
    }
}

impl std::fmt::Debug for VerifiedAttestation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedAttestation")
            .field("authority", &self.authority)
            .field("evidence", &self.evidence)
            .field("location", &self.location)
            .field("predicate_type", &self.predicate_type)
            .field("github", &self.github)
            .field("statement_bytes", &self.statement_json().len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::candidate::BundleCandidate;
    use crate::failure::Failure;
    use crate::reference::Digest;
    use crate::sign::key::SigningKey;
    use base64::Engine as _;

    const SLSA1: &str = "https://slsa.dev/provenance/v1";
    const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

    fn statement(version: &str, subject: &str, predicate_type: &str) -> Vec<u8> {
        format!(
            r#"{{"_type":"https://in-toto.io/Statement/{version}","subject":[{subject}],"predicateType":"{predicate_type}","predicate":{{"builder":{{"id":"ci"}}}}}}"#
        )
        .into_bytes()
    }

    fn subject(alg: &str, hex: &str) -> String {
        format!(r#"{{"name":"x","digest":{{"{alg}":"{hex}"}}}}"#)
    }

    fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
        let mut m = format!(
            "DSSEv1 {} {payload_type} {} ",
            payload_type.len(),
            payload.len()
        )
        .into_bytes();
        m.extend_from_slice(payload);
        m
    }

    fn envelope_json(keys: &[&SigningKey], payload_type: &str, payload: &[u8]) -> String {
        let sigs: Vec<_> = keys
            .iter()
            .map(|k| serde_json::json!({"keyid": "", "sig": B64.encode(k.sign(&pae(payload_type, payload)).unwrap())}))
            .collect();
        serde_json::json!({"payloadType": payload_type, "payload": B64.encode(payload), "signatures": sigs})
            .to_string()
    }

    fn envelope(json: String, annotations: &[(&str, &str)]) -> AttestationCandidate {
        AttestationCandidate {
            location: "tag sha256-x.att layer 1".into(),
            claimed_type: Some(SLSA1.into()),
            form: AttestationForm::Envelope {
                envelope: Arc::new(json.into_bytes()),
                annotations: annotations
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            },
        }
    }

    /// A cosign v3 bundle without a log entry (`--tlog-upload=false`).
    fn bundle(key: &SigningKey, payload: &[u8]) -> AttestationCandidate {
        let sig = key.sign(&pae(IN_TOTO_MEDIA_TYPE, payload)).unwrap();
        let hint = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.public_key().der());
        let json = serde_json::json!({
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": {"publicKey": {"hint": B64.encode(hint.as_ref())}},
            "dsseEnvelope": {
                "payload": B64.encode(payload),
                "payloadType": IN_TOTO_MEDIA_TYPE,
                "signatures": [{"sig": B64.encode(sig)}],
            },
        });
        AttestationCandidate {
            location: "referrer sha256:abc".into(),
            claimed_type: None,
            form: AttestationForm::Bundle(BundleCandidate {
                location: "referrer sha256:abc".into(),
                json: json.to_string(),
            }),
        }
    }

    fn verify(
        c: &AttestationCandidate,
        who: BundleAuthority<'_>,
        digests: &ArtifactDigests,
        predicate_type: &str,
    ) -> Result<VerifiedAttestation, Rejection> {
        let root = TrustRoot::embedded_shared().unwrap();
        let predicate_type = PredicateType::parse(predicate_type).unwrap();
        let expect = AttestationExpectation {
            digests,
            predicate_type: &predicate_type,
        };
        verify_attestation(&PreparedAttestation::new(c), "release", who, root, &expect)
    }

    fn image() -> (Digest, ArtifactDigests) {
        let d = Digest::sha256_of(b"image");
        let a = ArtifactDigests::of_digest(&d);
        (d, a)
    }

    #[test]
    fn key_signed_envelopes_and_bundles_verify() {
        let key = SigningKey::generate().unwrap();
        let (d, digests) = image();
        for version in ["v0.1", "v1"] {
            let payload = statement(version, &subject("sha256", d.hex()), SLSA1);
            let env = envelope(envelope_json(&[&key], IN_TOTO_MEDIA_TYPE, &payload), &[]);
            let b = bundle(&key, &payload);
            for c in [&env, &b] {
                let who = BundleAuthority::KeyWithoutTlog(key.public_key());
                let v = verify(c, who, &digests, "slsaprovenance1").unwrap();
                assert_eq!(v.statement_json(), payload.as_slice());
                assert_eq!(v.predicate_type(), SLSA1);
                assert_eq!(v.authority(), "release");
                assert_eq!(v.location(), c.location);
                let facts = v.signer_facts();
                assert_eq!(facts["kind"], "key");
                assert_eq!(facts["authority"], "release");
                assert_eq!(facts["keyFingerprint"], key.public_key().fingerprint());
                assert!(format!("{v:?}").contains("statement_bytes"));
            }
        }
    }

    #[test]
    fn subjects_in_every_known_algorithm() {
        let key = SigningKey::generate().unwrap();
        let who = BundleAuthority::KeyWithoutTlog(key.public_key());
        let file = ArtifactDigests::of_bytes(b"package.tgz");
        let other = ArtifactDigests::of_bytes(b"other.tgz");
        for alg in ["sha256", "sha384", "sha512"] {
            let payload = statement("v1", &subject(alg, file.get(alg).unwrap()), SLSA1);
            let env = envelope(envelope_json(&[&key], IN_TOTO_MEDIA_TYPE, &payload), &[]);
            assert!(verify(&env, who, &file, SLSA1).is_ok(), "{alg}");
            let e = verify(&env, who, &other, SLSA1).unwrap_err();
            assert!(
                matches!(e.kind(), RejectionKind::SubjectMismatch { .. }),
                "{e}"
            );
            assert_eq!(e.class(), Failure::Mismatch);
            // a bundle hands sigstore-verify a sha256/sha512 subject; sha384 alone it cannot bind
            let b = bundle(&key, &payload);
            match verify(&b, who, &file, SLSA1) {
                Ok(_) => assert_ne!(alg, "sha384"),
                Err(e) => {
                    assert_eq!(alg, "sha384", "{e}");
                    assert!(
                        matches!(e.kind(), RejectionKind::NotSupported { .. }),
                        "{e}"
                    );
                }
            }
        }
    }

    #[test]
    fn wrong_type_subject_key_and_statement_are_rejected() {
        let key = SigningKey::generate().unwrap();
        let other_key = SigningKey::generate().unwrap();
        let who = BundleAuthority::KeyWithoutTlog(key.public_key());
        let (d, digests) = image();
        let good = statement("v1", &subject("sha256", d.hex()), SLSA1);
        let env = |p: &[u8]| envelope(envelope_json(&[&key], IN_TOTO_MEDIA_TYPE, p), &[]);
        // another predicate type
        let e = verify(&env(&good), who, &digests, "spdx").unwrap_err();
        assert!(
            matches!(e.kind(), RejectionKind::PredicateTypeMismatch { .. }),
            "{e}"
        );
        assert_eq!(e.class(), Failure::Unattested);
        assert!(e.to_string().contains("https://spdx.dev/Document"), "{e}");
        // an attestation of another image (copied under this one's .att tag)
        let copied = statement(
            "v1",
            &subject("sha256", Digest::sha256_of(b"x").hex()),
            SLSA1,
        );
        let e = verify(&env(&copied), who, &digests, SLSA1).unwrap_err();
        assert!(
            matches!(e.kind(), RejectionKind::SubjectMismatch { .. }),
            "{e}"
        );
        assert!(e.to_string().contains("another artifact"), "{e}");
        // signed by another key; one of two signatures by the key is enough
        let by_other = envelope(envelope_json(&[&other_key], IN_TOTO_MEDIA_TYPE, &good), &[]);
        let e = verify(&by_other, who, &digests, SLSA1).unwrap_err();
        assert!(
            matches!(e.kind(), RejectionKind::BadSignature { .. }),
            "{e}"
        );
        let both = envelope(
            envelope_json(&[&other_key, &key], IN_TOTO_MEDIA_TYPE, &good),
            &[],
        );
        assert!(verify(&both, who, &digests, SLSA1).is_ok());
        let e = verify(&bundle(&other_key, &good), who, &digests, SLSA1).unwrap_err();
        assert_eq!(e.class(), Failure::Untrusted, "{e}");
        // not an in-toto payload; an unknown statement type; an ambiguous subject
        let e = verify(
            &envelope(envelope_json(&[&key], "text/plain", &good), &[]),
            who,
            &digests,
            SLSA1,
        )
        .unwrap_err();
        assert!(
            e.reason().contains("is not an in-toto statement"),
            "{}",
            e.reason()
        );
        let v2 = statement("v2", &subject("sha256", d.hex()), SLSA1);
        let e = verify(&env(&v2), who, &digests, SLSA1).unwrap_err();
        assert!(
            e.reason().contains("not in-toto Statement v0.1 or v1"),
            "{}",
            e.reason()
        );
        let twice = format!(
            r#"{{"name":"x","digest":{{"sha256":"{0}","SHA256":"{0}"}}}}"#,
            d.hex()
        );
        let e = verify(&env(&statement("v1", &twice, SLSA1)), who, &digests, SLSA1).unwrap_err();
        assert!(e.reason().contains("appears twice"), "{}", e.reason());
        assert_eq!(e.class(), Failure::Untrusted);
        // a message-signature bundle signs no statement
        let json = crate::bundle::legacy_to_bundle(b"{}", "AAAA", &BTreeMap::new()).unwrap();
        let mut message = bundle(&key, &good);
        message.form = AttestationForm::Bundle(BundleCandidate {
            location: "referrer".into(),
            json,
        });
        let e = verify(&message, who, &digests, SLSA1).unwrap_err();
        assert!(e.reason().contains("no DSSE envelope"), "{}", e.reason());
    }

    #[test]
    fn tlog_and_keyless_rules_are_the_signatures_ones() {
        let key = SigningKey::generate().unwrap();
        let other_key = SigningKey::generate().unwrap();
        let (d, digests) = image();
        let payload = statement("v0.1", &subject("sha256", d.hex()), SLSA1);
        let env = envelope(envelope_json(&[&key], IN_TOTO_MEDIA_TYPE, &payload), &[]);
        let logged = BundleAuthority::Key(key.public_key());
        let e = verify(&env, logged, &digests, SLSA1).unwrap_err();
        assert!(matches!(e.kind(), RejectionKind::NoTlogEntry { .. }), "{e}");
        assert_eq!(e.class(), Failure::Tlog);
        // a wrong key is said to be a wrong key, not a missing entry
        let e = verify(
            &env,
            BundleAuthority::Key(other_key.public_key()),
            &digests,
            SLSA1,
        )
        .unwrap_err();
        assert!(
            matches!(e.kind(), RejectionKind::BadSignature { .. }),
            "{e}"
        );
        let b = bundle(&key, &payload);
        assert!(!PreparedAttestation::new(&b).has_tlog_entries());
        let e = verify(&b, logged, &digests, SLSA1).unwrap_err();
        assert!(matches!(e.kind(), RejectionKind::NoTlogEntry { .. }), "{e}");
        let e = verify(&env, BundleAuthority::Identities(&[]), &digests, SLSA1).unwrap_err();
        assert!(matches!(e.kind(), RejectionKind::NotKeyless { .. }), "{e}");
        // a Rekor annotation that is not one is the bundle form's error, not an accept
        let broken = envelope(
            envelope_json(&[&key], IN_TOTO_MEDIA_TYPE, &payload),
            &[(REKOR_BUNDLE_ANNOTATION, "{}")],
        );
        assert!(PreparedAttestation::new(&broken).has_tlog_entries());
        let e = verify(&broken, logged, &digests, SLSA1).unwrap_err();
        assert!(matches!(e.kind(), RejectionKind::Bundle { .. }), "{e}");
        assert!(e.reason().contains("is malformed"), "{}", e.reason());
    }

    #[test]
    fn envelopes_are_read_as_go_reads_them() {
        let key = SigningKey::generate().unwrap();
        let who = BundleAuthority::KeyWithoutTlog(key.public_key());
        let (d, digests) = image();
        let payload = statement("v1", &subject("sha256", d.hex()), SLSA1);
        let json = envelope_json(&[&key], IN_TOTO_MEDIA_TYPE, &payload);
        // line-wrapped and URL-safe base64 are the same payload
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let b64 = v["payload"].as_str().unwrap();
        let wrapped = json.replace(b64, &format!("{}\\n{}", &b64[..40], &b64[40..]));
        assert!(verify(&envelope(wrapped, &[]), who, &digests, SLSA1).is_ok());
        let url = base64::engine::general_purpose::URL_SAFE.encode(&payload);
        let url_safe = json.replace(b64, &url);
        assert!(verify(&envelope(url_safe, &[]), who, &digests, SLSA1).is_ok());
        let cases = [
            ("not json".to_string(), "not a DSSE envelope"),
            (json.replace("\"payload\":", "\"Payload\":\"e30=\",\"payload\":"), "appears twice"),
            (
                serde_json::json!({"payloadType": IN_TOTO_MEDIA_TYPE, "payload": b64, "signatures": []}).to_string(),
                "carries no signature",
            ),
            (json.replace(b64, "%%%%"), "not base64"),
        ];
        for (bad, needle) in cases {
            let e = verify(&envelope(bad, &[]), who, &digests, SLSA1).unwrap_err();
            assert!(e.reason().contains(needle), "{needle}: {}", e.reason());
            assert_eq!(e.class(), Failure::Untrusted);
        }
        let many = vec![&key; MAX_ENVELOPE_SIGNATURES + 1];
        let e = verify(
            &envelope(envelope_json(&many, IN_TOTO_MEDIA_TYPE, &payload), &[]),
            who,
            &digests,
            SLSA1,
        )
        .unwrap_err();
        assert!(
            e.reason().contains("more than the 8 checked"),
            "{}",
            e.reason()
        );
    }
}
