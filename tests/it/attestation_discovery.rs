//! Attestations found by discovery: what cosign 3.1.1 itself writes (`cosign attest`, legacy
//! `.att` layers and `--new-bundle-format` bundle referrers, on the referrers tag schema of
//! docker-registry and the referrers API of ferro-oci-server), an in-toto referrer as cosign's
//! `WriteAttestationsReferrer` lays it out (cosign 3.1.1's `attest` has no flag that writes one),
//! listed by `ocigate discover`; blobs of unwanted types never fetched (the tests' proxy counts
//! the requests); a planted 48 MiB envelope never read; one large blob fetched at a time.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ocigate::candidate::{AttestationCandidate, AttestationForm};
use ocigate::discover::{Discovery, Sought, Wanted, WhyNotExamined, discover};
use ocigate::predicate::PredicateType;
use ocigate::reference::{Digest, ImageRef};
use ocigate::registry::{Descriptor, ImageManifest, OCI_MANIFEST, Registry, RegistrySettings};

use crate::cli_output::discover_text;
use crate::cosign_peer::{cosign, cosign_keys, cosign_or_skip};
use crate::harness::*;
use crate::proxy::{HttpServer, Request, forward};

const SLSA1: &str = "https://slsa.dev/provenance/v1";
const SPDX: &str = "https://spdx.dev/Document";
const DSSE: &str = "application/vnd.dsse.envelope.v1+json";
const IN_TOTO: &str = "application/vnd.in-toto+json";
const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";

/// A SLSA v1 predicate (what `--predicate` reads).
const PROVENANCE: &str = r#"{"buildDefinition":{"buildType":"https://actions.github.io/buildtypes/workflow/v1","externalParameters":{"workflow":{"repository":"https://github.com/acme/app","ref":"refs/heads/main"}}},"runDetails":{"builder":{"id":"https://github.com/actions/runner"}}}"#;
/// An SPDX document predicate.
const SBOM: &str =
    r#"{"spdxVersion":"SPDX-2.3","SPDXID":"SPDXRef-DOCUMENT","name":"app","packages":[]}"#;

/// cosign, its key pair and a working directory (with a signing config naming no services).
struct Peer {
    bin: PathBuf,
    dir: tempfile::TempDir,
    key: PathBuf,
    public: PathBuf,
}

impl Peer {
    fn new(test: &str) -> Option<Peer> {
        let bin = cosign_or_skip(test)?;
        let dir = tempfile::tempdir().unwrap();
        let (key, public) = cosign_keys(&bin, dir.path(), "cosign");
        std::fs::write(dir.path().join("provenance.json"), PROVENANCE).unwrap();
        std::fs::write(dir.path().join("sbom.json"), SBOM).unwrap();
        let sc = dir.path().join("signing-config.json");
        let run = cosign(
            &bin,
            dir.path(),
            &[
                "signing-config",
                "create",
                "--no-default-fulcio",
                "--no-default-oidc",
                "--no-default-rekor",
                "--no-default-tsa",
                "--out",
                sc.to_str().unwrap(),
            ],
        );
        assert_eq!(run.code, 0, "{run:?}");
        Some(Peer {
            bin,
            dir,
            key,
            public,
        })
    }

    /// `cosign attest --key … --type TYPE --predicate FILE`, key-based and logged nowhere:
    /// legacy (a `.att` layer) or `--new-bundle-format` (a bundle referrer).
    fn attest(&self, reference: &str, short_type: &str, predicate: &str, bundle: bool) {
        let sc = self.dir.path().join("signing-config.json");
        let pred = self.dir.path().join(predicate);
        let mut args = vec![
            "attest",
            "--key",
            self.key.to_str().unwrap(),
            "--type",
            short_type,
            "--predicate",
            pred.to_str().unwrap(),
            "--allow-insecure-registry",
            "--yes",
        ];
        if bundle {
            args.extend(["--new-bundle-format", "--signing-config"]);
            args.push(sc.to_str().unwrap());
        } else {
            args.extend([
                "--new-bundle-format=false",
                "--tlog-upload=false",
                "--use-signing-config=false",
            ]);
        }
        args.push(reference);
        let run = cosign(&self.bin, self.dir.path(), &args);
        assert_eq!(
            run.code, 0,
            "cosign attest {short_type} bundle={bundle}: {run:?}"
        );
    }

    /// `sha256:<hex>` of the public key's DER, as claimed signers name keys.
    fn fingerprint(&self) -> String {
        let pem = std::fs::read_to_string(&self.public).unwrap();
        ocigate::trust::PublicKey::from_pem(&pem, "cosign.pub")
            .unwrap()
            .fingerprint()
    }
}

/// A client for plain HTTP to `host`.
fn client_for(host: &str) -> Registry {
    let mut s = RegistrySettings::default();
    s.add_plain_http(host).unwrap();
    Registry::new(s)
}

/// `ocigate discover REF -o json` and its text, which must say what the JSON says.
fn discover_cli(reference: &str, host: &str) -> serde_json::Value {
    let json = ocigate(
        &[
            "discover",
            reference,
            "--registry-plain-http",
            host,
            "-o",
            "json",
        ],
        &[],
    );
    assert_eq!(json.code, 0, "{json:?}");
    let text = ocigate(&["discover", reference, "--registry-plain-http", host], &[]);
    assert_eq!(text.code, 0, "{text:?}");
    let doc = json.json();
    assert_eq!(text.stdout, discover_text(&doc), "text and JSON disagree");
    doc
}

/// (kind, predicate type, location) of each attestation `discover` listed.
fn listed(doc: &serde_json::Value) -> Vec<(String, String, String)> {
    doc["attestations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let s = |k: &str| a[k].as_str().unwrap_or("").to_string();
            (s("kind"), s("predicateType"), s("location"))
        })
        .collect()
}

/// Every note of every place looked at, a line each.
fn all_notes(found: &Discovery) -> String {
    let notes: Vec<_> = found.paths.iter().flat_map(|p| p.notes.clone()).collect();
    notes.join("\n")
}

/// GET requests seen for `digest`'s blob.
fn blob_gets(seen: &[Request], digest: &str) -> usize {
    seen.iter()
        .filter(|q| q.method == "GET" && q.path.ends_with(&format!("/blobs/{digest}")))
        .count()
}

/// Every layer (of the `.att` manifest and of the referrers in the referrers tag index or the
/// referrers API) whose predicate type (layer or manifest annotation) is `predicate_type`.
fn blobs_of_type(
    client: &Registry,
    r: &ImageRef,
    digest: &Digest,
    predicate_type: &str,
) -> Vec<String> {
    let mut out = Vec::new();
    let att = r.with_tag(&format!("{}.att", digest.tag_prefix()));
    if let Some(m) = block_on(client.get_manifest(&att)).unwrap() {
        for l in ImageManifest::parse(&m, "att").unwrap().layers {
            let t = l.annotations.as_ref().and_then(|a| a.get("predicateType"));
            if t.map(String::as_str) == Some(predicate_type) {
                out.push(l.digest);
            }
        }
    }
    let budget = ocigate::registry::FetchBudget::new(1 << 20);
    let listed = block_on(client.get_referrers_budgeted(r, digest, &budget)).unwrap();
    let descs = match listed {
        Some(list) => list.descriptors,
        None => {
            let index = block_on(client.get_manifest(&r.with_tag(&digest.tag_prefix())))
                .unwrap()
                .map(|m| ImageManifest::parse(&m, "index").unwrap().manifests);
            index.unwrap_or_default()
        }
    };
    for d in descs {
        let m = block_on(client.get_manifest(&r.with_digest(Digest::parse(&d.digest).unwrap())))
            .unwrap()
            .unwrap();
        let m = ImageManifest::parse(&m, "referrer").unwrap();
        let t = m
            .annotations
            .as_ref()
            .and_then(|a| a.get("dev.sigstore.bundle.predicateType"));
        if t.map(String::as_str) == Some(predicate_type) {
            out.extend(m.layers.into_iter().map(|l| l.digest));
        }
    }
    out
}

/// cosign 3.1.1's attestations on a registry without the referrers API: legacy `.att` layers
/// and bundle referrers on the referrers tag, of two predicate types. `ocigate discover` lists
/// all four with their types, kinds and claimed signer; discovery asked for SLSA v1 fetches
/// only the SLSA blobs (the proxy sees no request for the SBOM ones) and says why the others
/// were passed over; discovery of signatures alone does not even look at the `.att` tag.
#[test]
fn cosign_attestations_on_the_tag_schema_are_listed_and_selected_by_type() {
    let Some(peer) =
        Peer::new("cosign_attestations_on_the_tag_schema_are_listed_and_selected_by_type")
    else {
        return;
    };
    let reg = TestRegistry::start();
    let upstream = reg.host();
    let front = HttpServer::start(move |req| forward(&upstream, req));
    let r = reg.reference("att/app:v1");
    let digest = push_image(&reg.client(), &r, "attested on the tag schema");
    peer.attest(&r.to_string(), "slsaprovenance1", "provenance.json", false);
    peer.attest(&r.to_string(), "spdx", "sbom.json", false);
    peer.attest(&r.to_string(), "slsaprovenance1", "provenance.json", true);
    peer.attest(&r.to_string(), "spdxjson", "sbom.json", true);

    let doc = discover_cli(&r.to_string(), &reg.host());
    let mut all = listed(&doc);
    all.sort();
    let prefix = digest.tag_prefix();
    let kinds: Vec<(&str, &str)> = all
        .iter()
        .map(|(k, t, _)| (k.as_str(), t.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("cosign-legacy-attestation", SLSA1),
            ("cosign-legacy-attestation", SPDX),
            ("sigstore-bundle", SLSA1),
            ("sigstore-bundle", SPDX),
        ],
        "{doc:#}"
    );
    assert!(
        all[0].2.starts_with(&format!("tag {prefix}.att layer ")),
        "{all:?}"
    );
    assert!(
        all[2]
            .2
            .starts_with(&format!("referrers tag {prefix} sha256:")),
        "{all:?}"
    );
    let fingerprint = peer.fingerprint();
    for a in doc["attestations"].as_array().unwrap() {
        let signer = &a["claimedSigner"];
        assert_eq!(signer["kind"], "key", "{a:#}");
        if a["kind"] == "sigstore-bundle" {
            // A bundle names its key by a hint; a legacy layer without a log entry does not.
            assert_eq!(signer["fingerprint"], fingerprint.as_str(), "{a:#}");
        }
    }
    assert!(doc["signatures"].as_array().unwrap().is_empty(), "{doc:#}");

    // Asked for SLSA v1 only: the SBOMs are passed over before their blobs are fetched.
    let through = front.host();
    let client = client_for(&through);
    let proxied = ImageRef::parse(&format!("{through}/att/app:v1")).unwrap();
    let slsa = PredicateType::parse("slsaprovenance1").unwrap();
    let found = block_on(discover(
        &client,
        &proxied,
        &digest,
        &Wanted::Attestations(vec![slsa]),
    ))
    .unwrap();
    let types: Vec<_> = found
        .attestations
        .iter()
        .map(|a| a.claimed_type.as_deref().unwrap())
        .collect();
    assert_eq!(types, [SLSA1, SLSA1], "{found:?}");
    assert!(found.not_examined.is_empty(), "{found:?}");
    let notes = all_notes(&found);
    assert!(
        notes.contains(&format!("is an attestation of {SPDX:?}, not one asked for")),
        "{notes}"
    );
    let seen = front.seen();
    let sboms = blobs_of_type(&reg.client(), &r, &digest, SPDX);
    assert_eq!(sboms.len(), 2, "{sboms:?}");
    for blob in &sboms {
        assert_eq!(
            blob_gets(&seen, blob),
            0,
            "the SBOM blob {blob} was fetched"
        );
    }
    for blob in blobs_of_type(&reg.client(), &r, &digest, SLSA1) {
        assert_eq!(blob_gets(&seen, &blob), 1, "the provenance blob {blob}");
    }

    // Signatures only: the `.att` tag is not asked for, nothing is handed over as an attestation.
    let before = front.seen().len();
    let found = block_on(discover(&client, &proxied, &digest, &Wanted::Signatures)).unwrap();
    assert!(found.attestations.is_empty(), "{found:?}");
    let asked: Vec<_> = front.seen()[before..]
        .iter()
        .map(|q| q.path.clone())
        .collect();
    assert!(!asked.iter().any(|p| p.ends_with(".att")), "{asked:?}");
    let notes = all_notes(&found);
    assert!(
        notes.contains(&format!("is an attestation ({SLSA1:?}), not a signature")),
        "{notes}"
    );
    assert_eq!(found.paths.len(), 3, "no .att path: {:?}", found.paths);
}

/// On a registry with the referrers API: cosign's bundle attestation is found there, and an
/// in-toto referrer (artifact type `application/vnd.in-toto+json`, DSSE envelope layers) made
/// from cosign's own `.att` layer is listed as one, layer by layer: with the layer annotations,
/// and bare, as cosign's `WriteAttestationsReferrer` (`--registry-referrers-mode=oci-1-1`)
/// writes them, which is then read to learn its type even when one type is asked for.
#[test]
fn bundle_and_in_toto_referrers_through_the_referrers_api() {
    let test = "bundle_and_in_toto_referrers_through_the_referrers_api";
    let Some(peer) = Peer::new(test) else {
        return;
    };
    let Some(reg) = TestRegistry::start_ferro_or_skip(test) else {
        return;
    };
    let client = reg.client();
    let r = reg.reference("api/app:v1");
    let digest = push_image(&client, &r, "attested over the api");
    peer.attest(&r.to_string(), "slsaprovenance1", "provenance.json", true);
    peer.attest(&r.to_string(), "slsaprovenance1", "provenance.json", false);
    let att = r.with_tag(&format!("{}.att", digest.tag_prefix()));
    let layers = block_on(client.get_manifest(&att))
        .unwrap()
        .map(|m| ImageManifest::parse(&m, "att").unwrap().layers)
        .unwrap();
    assert_eq!(layers[0].media_type, DSSE, "{layers:?}");
    let referrer = plant_in_toto_referrer(&client, &r, &digest, layers.clone());

    let doc = discover_cli(&r.to_string(), &reg.host());
    let all = listed(&doc);
    let short = &referrer.as_str()[..19];
    assert!(
        all.contains(&(
            "in-toto-referrer".into(),
            SLSA1.into(),
            format!("referrers API {short}… layer 1")
        )),
        "{doc:#}"
    );
    assert!(
        all.iter().any(|(k, t, l)| k == "sigstore-bundle"
            && t == SLSA1
            && l.starts_with("referrers API sha256:")),
        "{doc:#}"
    );
    assert!(
        all.iter().any(|(k, _, _)| k == "cosign-legacy-attestation"),
        "{doc:#}"
    );
    let api = &doc["paths"].as_array().unwrap()[2];
    assert_eq!(api["path"], "referrers API", "{doc:#}");
    assert_eq!(api["attestations"], 2, "{doc:#}");

    let bare: Vec<Descriptor> = layers
        .iter()
        .map(|l| Descriptor {
            annotations: None,
            ..l.clone()
        })
        .collect();
    let bare_referrer = plant_in_toto_referrer(&client, &r, &digest, bare);
    let slsa = Wanted::Attestations(vec![PredicateType::parse(SLSA1).unwrap()]);
    let found: Discovery = block_on(discover(&client, &r, &digest, &slsa)).unwrap();
    let at = format!("referrers API {}… layer 1", &bare_referrer.as_str()[..19]);
    assert!(
        found.attestations.iter().any(|a| a.location == at),
        "{at}: {found:?}"
    );
}

/// Push an in-toto referrer of `digest` whose layers are `layers` (their blobs are in the
/// repository already); returns its digest.
fn plant_in_toto_referrer(
    client: &Registry,
    r: &ImageRef,
    digest: &Digest,
    layers: Vec<Descriptor>,
) -> Digest {
    let empty = block_on(client.put_blob(r, b"{}")).unwrap();
    let subject = block_on(client.get_manifest(r)).unwrap().unwrap();
    let mut config = desc(OCI_EMPTY, &empty, 2);
    config.artifact_type = Some(IN_TOTO.into());
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.into()),
        artifact_type: Some(IN_TOTO.into()),
        config: Some(config),
        layers,
        manifests: vec![],
        subject: Some(desc(OCI_MANIFEST, digest, subject.bytes.len())),
        annotations: Some(BTreeMap::from([(
            "org.opencontainers.image.created".to_string(),
            "2026-12-03T12:00:00Z".to_string(),
        )])),
    };
    let body = serde_json::to_vec(&manifest).unwrap();
    let at = r.with_digest(Digest::sha256_of(&body));
    block_on(client.put_manifest(&at, &body, OCI_MANIFEST)).unwrap()
}

/// A DSSE envelope of `bytes` bytes or more (its payload padded), as layers carry them.
pub(crate) fn envelope(bytes: usize, seed: &str) -> Vec<u8> {
    let payload = format!("{{\"_type\":\"https://in-toto.io/Statement/v1\",\"seed\":\"{seed}\"}}");
    let mut e = format!(
        "{{\"payloadType\":\"{IN_TOTO}\",\"payload\":\"{}\",\"signatures\":[],\"pad\":\"",
        ocigate_base64(payload.as_bytes())
    )
    .into_bytes();
    e.resize(bytes.max(e.len()), b'x');
    e.extend_from_slice(b"\"}");
    e
}

fn ocigate_base64(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// An envelope layer naming `blob` (declared `size` bytes), of `predicate_type` if any.
pub(crate) fn envelope_layer(
    blob: &Digest,
    size: usize,
    predicate_type: Option<&str>,
) -> Descriptor {
    let mut d = desc(DSSE, blob, size);
    d.annotations = Some(
        predicate_type
            .map(|t| ("predicateType".to_string(), t.to_string()))
            .into_iter()
            .chain([(
                "dev.cosignproject.cosign/signature".to_string(),
                String::new(),
            )])
            .collect(),
    );
    d
}

/// Push a `.att` manifest for `digest` with `layers` (their blobs pushed already).
pub(crate) fn plant_att(client: &Registry, r: &ImageRef, digest: &Digest, layers: Vec<Descriptor>) {
    let config = block_on(client.put_blob(r, b"{}")).unwrap();
    let body = serde_json::to_vec(&ImageManifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.into()),
        artifact_type: None,
        config: Some(desc("application/vnd.oci.image.config.v1+json", &config, 2)),
        layers,
        manifests: vec![],
        subject: None,
        annotations: None,
    })
    .unwrap();
    let tag = r.with_tag(&format!("{}.att", digest.tag_prefix()));
    block_on(client.put_manifest(&tag, &body, OCI_MANIFEST)).unwrap();
}

/// Planted beside a small wanted attestation: a 48 MiB envelope of the wanted type (over the
/// 32 MiB limit: not examined, never requested), an SBOM layer (not wanted: never requested),
/// a layer whose descriptor understates its blob (not read past what it declares), an
/// unannotated layer (fetched: its statement will say its type), and two 1.5 MiB envelopes
/// (fetched one after the other, never together). A lower limit set on the client is the one
/// applied and named.
#[test]
fn planted_attestation_layers_are_bounded_and_large_ones_fetched_one_at_a_time() {
    let reg = TestRegistry::start();
    let upstream = reg.host();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let large: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let (now, peak, watched) = (in_flight.clone(), most.clone(), large.clone());
    let front = HttpServer::start(move |req| {
        let is_large = watched
            .lock()
            .unwrap()
            .iter()
            .any(|d| req.path.ends_with(&format!("/blobs/{d}")));
        if !is_large {
            return forward(&upstream, req);
        }
        let n = now.fetch_add(1, Ordering::SeqCst) + 1;
        peak.fetch_max(n, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(400));
        let answer = forward(&upstream, req);
        now.fetch_sub(1, Ordering::SeqCst);
        answer
    });
    // Planted straight into the registry; read through the proxy.
    let direct = reg.client();
    let planted = reg.reference("planted/app:v1");
    let digest = push_image(&direct, &planted, "planted attestations");
    let push = |data: &[u8]| block_on(direct.put_blob(&planted, data)).unwrap();
    let client = client_for(&front.host());
    let r = ImageRef::parse(&format!("{}/planted/app:v1", front.host())).unwrap();
    let small = envelope(600, "small");
    let small_d = push(&small);
    let huge = envelope(48 << 20, "huge");
    let huge_d = push(&huge);
    drop(huge);
    let sbom_d = push(&envelope(700, "sbom"));
    let liar = envelope(100 << 10, "liar");
    let liar_d = push(&liar);
    let untyped = envelope(800, "untyped");
    let untyped_d = push(&untyped);
    let big1 = envelope(3 << 19, "big one");
    let big2 = envelope(3 << 19, "big two");
    let (big1_d, big2_d) = (push(&big1), push(&big2));
    large
        .lock()
        .unwrap()
        .extend([big1_d.to_string(), big2_d.to_string()]);
    plant_att(
        &direct,
        &planted,
        &digest,
        vec![
            envelope_layer(&small_d, small.len(), Some(SLSA1)),
            envelope_layer(&huge_d, (48 << 20) + 2, Some(SLSA1)),
            envelope_layer(&sbom_d, 702, Some(SPDX)),
            envelope_layer(&liar_d, 1000, Some(SLSA1)),
            envelope_layer(&untyped_d, untyped.len(), None),
            envelope_layer(&big1_d, big1.len(), Some(SLSA1)),
            envelope_layer(&big2_d, big2.len(), Some(SLSA1)),
            // Layer 1 again: verified once, not once per copy.
            envelope_layer(&small_d, small.len(), Some(SLSA1)),
        ],
    );
    let slsa = Wanted::Attestations(vec![PredicateType::parse(SLSA1).unwrap()]);
    let found: Discovery = block_on(discover(&client, &r, &digest, &slsa)).unwrap();
    let at = |n: usize| format!("tag {}.att layer {n}", digest.tag_prefix());
    let locations: Vec<_> = found
        .attestations
        .iter()
        .map(|a| a.location.clone())
        .collect();
    assert_eq!(locations, [at(1), at(6), at(7)], "{found:?}");
    // Not annotated: not fetched to learn its type. A repeated layer: handed over once.
    let notes = all_notes(&found);
    assert!(
        notes.contains("layer 5 annotates no predicate type; not fetched"),
        "{notes}"
    );
    assert!(notes.contains("layer 8 repeats layer 1"), "{notes}");
    assert!(matches!(
        &found.attestations[0],
        AttestationCandidate { form: AttestationForm::Envelope { envelope, .. }, .. } if **envelope == small[..]
    ));
    let unexamined: Vec<_> = found
        .not_examined
        .iter()
        .map(|u| {
            (
                u.location.clone(),
                u.sought,
                ocigate::error_chain(&u.reason),
            )
        })
        .collect();
    assert_eq!(unexamined.len(), 2, "{unexamined:?}");
    assert_eq!(unexamined[0].0, at(2));
    assert_eq!(unexamined[0].1, Sought::Attestation);
    assert!(
        matches!(found.not_examined[0].reason, WhyNotExamined::TooLarge { limit, .. } if limit == 32 << 20),
        "{unexamined:?}"
    );
    assert!(
        unexamined[0]
            .2
            .contains("more than the 33554432 bytes allowed"),
        "{unexamined:?}"
    );
    assert_eq!(unexamined[1].0, at(4));
    assert!(
        unexamined[1].2.contains("larger than the 1000-byte limit"),
        "{unexamined:?}"
    );
    let seen = front.seen();
    assert_eq!(
        blob_gets(&seen, huge_d.as_str()),
        0,
        "the 48 MiB envelope was requested"
    );
    assert_eq!(
        blob_gets(&seen, sbom_d.as_str()),
        0,
        "the SBOM was requested"
    );
    assert_eq!(
        blob_gets(&seen, untyped_d.as_str()),
        0,
        "the unannotated one was requested"
    );
    assert_eq!(
        blob_gets(&seen, small_d.as_str()),
        1,
        "layers 1 and 8 share one fetch"
    );
    assert_eq!(
        most.load(Ordering::SeqCst),
        1,
        "two large blobs were fetched at once"
    );

    // A lower limit (as `--max-attestation-bytes` sets it) is the one applied and named.
    let strict = client_for(&front.host()).with_max_attestation_bytes(1 << 20);
    let found = block_on(discover(&strict, &r, &digest, &Wanted::All)).unwrap();
    let over: Vec<_> = found
        .not_examined
        .iter()
        .map(|u| (u.location.clone(), ocigate::error_chain(&u.reason)))
        .filter(|(_, why)| why.contains("more than the 1048576 bytes allowed"))
        .map(|(at, _)| at)
        .collect();
    assert_eq!(over, [at(2), at(6), at(7)], "{found:?}");
    assert_eq!(
        found.attestations.len(),
        3,
        "with All, the SBOM too: {found:?}"
    );

    // The CLI lists the same, and says why the envelope was not examined.
    let doc = discover_cli(&r.to_string(), &front.host());
    assert_eq!(doc["attestations"].as_array().unwrap().len(), 5, "{doc:#}");
    let text = ocigate(
        &[
            "discover",
            &r.to_string(),
            "--registry-plain-http",
            &front.host(),
        ],
        &[],
    );
    assert!(
        text.stdout.contains(&format!("not examined: {}: a \"{DSSE}\" layer of {} bytes, more than the 33554432 bytes allowed", at(2), (48 << 20) + 2)),
        "{text:?}"
    );
    assert_eq!(blob_gets(&front.seen(), huge_d.as_str()), 0);
    let lower = ocigate(
        &[
            "discover",
            &r.to_string(),
            "--registry-plain-http",
            &front.host(),
            "--max-attestation-bytes",
            "1048576",
        ],
        &[],
    );
    assert!(
        lower.stdout.contains(&format!(
            "not examined: {}: a \"{DSSE}\" layer of {} bytes, more than the 1048576 bytes allowed",
            at(6),
            big1.len()
        )),
        "{lower:?}"
    );
}

/// Push a bundle referrer of `digest` laid out as GitHub's `attest` actions push one (and
/// cosign v3): artifact type bundle v0.3, the bundle as its one layer, the content and
/// predicate type annotations; returns its digest.
fn plant_bundle_referrer(
    client: &Registry,
    r: &ImageRef,
    digest: &Digest,
    bundle: &[u8],
    predicate_type: &str,
) -> Digest {
    const BUNDLE_V03: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
    let empty = block_on(client.put_blob(r, b"{}")).unwrap();
    let layer = block_on(client.put_blob(r, bundle)).unwrap();
    let subject = block_on(client.get_manifest(r)).unwrap().unwrap();
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.into()),
        artifact_type: Some(BUNDLE_V03.into()),
        config: Some(desc(OCI_EMPTY, &empty, 2)),
        layers: vec![desc(BUNDLE_V03, &layer, bundle.len())],
        manifests: vec![],
        subject: Some(desc(OCI_MANIFEST, digest, subject.bytes.len())),
        annotations: Some(BTreeMap::from([
            ("dev.sigstore.bundle.content".into(), "dsse-envelope".into()),
            (
                "dev.sigstore.bundle.predicateType".into(),
                predicate_type.into(),
            ),
        ])),
    };
    let body = serde_json::to_vec(&manifest).unwrap();
    let at = r.with_digest(Digest::sha256_of(&body));
    block_on(client.put_manifest(&at, &body, OCI_MANIFEST)).unwrap()
}

/// Real GitHub Actions provenance (sigstore-js's SLSA v1 bundle, keyless, public-good) and
/// cosign's keyless OCI attestation bundle, attached as GitHub pushes attestations: listed
/// with their annotated types and the certificate identity they claim (unverified: these
/// statements are about other artifacts, which discovery does not look at).
#[test]
fn github_pushed_attestations_are_listed_with_their_claimed_signers() {
    let test = "github_pushed_attestations_are_listed_with_their_claimed_signers";
    let Some(corpus) = corpus_or_skip(test) else {
        return;
    };
    let Some(reg) = TestRegistry::start_ferro_or_skip(test) else {
        return;
    };
    let client = reg.client();
    let r = reg.reference("gh/app:v1");
    let digest = push_image(&client, &r, "pushed attestations");
    let github =
        std::fs::read(corpus.join(
            "sigstore-go/pkg/testing/data/bundles/sigstore.js@2.0.0-provenance.sigstore.json",
        ))
        .unwrap();
    let cosign =
        std::fs::read(corpus.join("cosign/pkg/cosign/testdata/oci-attestation.sigstore.json"))
            .unwrap();
    plant_bundle_referrer(&client, &r, &digest, &github, SLSA1);
    let custom = "https://cosign.sigstore.dev/attestation/v1";
    plant_bundle_referrer(&client, &r, &digest, &cosign, custom);

    let doc = discover_cli(&r.to_string(), &reg.host());
    let mut seen: Vec<(String, String, String, String)> = doc["attestations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let s = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
            (
                s(&a["kind"]),
                s(&a["predicateType"]),
                s(&a["claimedSigner"]["identity"]),
                s(&a["claimedSigner"]["issuer"]),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            (
                "sigstore-bundle".to_string(),
                custom.to_string(),
                "cody@soyland.com".to_string(),
                "https://github.com/login/oauth".to_string(),
            ),
            (
                "sigstore-bundle".to_string(),
                SLSA1.to_string(),
                "https://github.com/sigstore/sigstore-js/.github/workflows/release.yml@refs/heads/main"
                    .to_string(),
                "https://token.actions.githubusercontent.com".to_string(),
            ),
        ],
        "{doc:#}"
    );
}
