//! The CLI's output, line for line: `sign`'s lines, `discover`'s text against what its JSON
//! document says (so that the text cannot drift from the data), `verify-bundle`'s answers; on an
//! OCI layout.

use serde_json::Value;

use crate::examples::copy_dir;
use crate::harness::*;

/// How `discover`'s text names the signer the JSON document describes.
fn claimed(signer: &Value) -> String {
    let shown = |v: &Value| v.as_str().unwrap_or("(none)").to_string();
    match signer["kind"].as_str() {
        Some("key") => match signer["fingerprint"].as_str() {
            Some(fp) => format!("key {fp} (unverified)"),
            None => "a key the signature does not name (unverified)".into(),
        },
        _ => format!(
            "certificate for {} from issuer {} (unverified)",
            shown(&signer["identity"]),
            shown(&signer["issuer"])
        ),
    }
}

/// `discover`'s text as its JSON document `doc` says it.
pub(crate) fn discover_text(doc: &Value) -> String {
    let s = |v: &Value| v.as_str().unwrap().to_string();
    let mut want = format!(
        "{} resolves to {}\n",
        s(&doc["reference"]),
        s(&doc["digest"])
    );
    for p in doc["paths"].as_array().unwrap() {
        let notes: Vec<String> = p["notes"]
            .as_array()
            .map(|n| n.iter().map(s).collect())
            .unwrap_or_default();
        let notes = if notes.is_empty() {
            String::new()
        } else {
            format!(" ({})", notes.join("; "))
        };
        let attestations = p["attestations"].as_u64().unwrap_or(0);
        let counts = match (
            p["holds"].as_str(),
            p["found"].as_u64().unwrap(),
            attestations,
        ) {
            (Some("attestation"), _, a) => format!("{a} attestation(s)"),
            (_, f, 0) => format!("{f} signature(s)"),
            (_, 0, a) => format!("{a} attestation(s)"),
            (_, f, a) => format!("{f} signature(s), {a} attestation(s)"),
        };
        want.push_str(&format!("  {}: {counts}{notes}\n", s(&p["path"])));
    }
    let signatures = doc["signatures"].as_array().unwrap();
    for sig in signatures.iter().filter(|x| x["kind"] == "cosign-legacy") {
        want.push_str(&format!(
            "  cosign legacy signature at {}: by {}\n",
            s(&sig["location"]),
            claimed(&sig["claimedSigner"])
        ));
    }
    for sig in signatures.iter().filter(|x| x["kind"] == "sigstore-bundle") {
        want.push_str(&format!(
            "  Sigstore bundle ({}) at {}: by {}\n",
            sig["mediaType"].as_str().unwrap_or("no media type"),
            s(&sig["location"]),
            claimed(&sig["claimedSigner"])
        ));
    }
    for a in doc["attestations"].as_array().unwrap() {
        let typed = match a["predicateType"].as_str() {
            Some(t) => format!("of type {t} (as annotated)"),
            None => "of a type not annotated".into(),
        };
        let kind = match a["kind"].as_str().unwrap() {
            "cosign-legacy-attestation" => "cosign legacy .att envelope",
            "in-toto-referrer" => "in-toto referrer envelope",
            _ => "Sigstore bundle",
        };
        want.push_str(&format!(
            "  attestation {typed}, {kind} at {}: by {}\n",
            s(&a["location"]),
            claimed(&a["claimedSigner"])
        ));
    }
    for u in doc["unexamined"].as_array().unwrap() {
        want.push_str(&format!(
            "  not examined: {}: {}\n",
            s(&u["location"]),
            s(&u["reason"])
        ));
    }
    want
}

#[test]
fn sign_discover_and_verify_bundle_say_exactly_this() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("layout");
    copy_dir(&repo_root().join("examples/signed-layout"), &copy);
    let (key, public) = generate_keys(dir.path(), "k");
    let name = format!("oci-layout:{}", copy.display());
    let reference = format!("{name}:v1");
    let discover = |extra: &[&str]| {
        let mut args = vec!["discover", reference.as_str()];
        args.extend(extra);
        let run = ocigate(&args, &[]);
        assert_eq!(run.code, 0, "{run:?}");
        run
    };
    let digest = discover(&["-o", "json"]).json()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let prefix = digest.replace(':', "-");
    let sign = |extra: &[&str]| {
        let mut args = vec!["sign", reference.as_str(), "--key", key.to_str().unwrap()];
        args.extend(extra);
        let run = ocigate(&args, &[("OCIGATE_PASSWORD", PASSWORD)]);
        assert_eq!(run.code, 0, "{run:?}");
        run.stdout
    };
    assert_eq!(
        sign(&[]),
        format!("signed {name}@{digest} -> tag {prefix}.sig (2 signature(s))\n")
    );
    assert_eq!(
        sign(&[]),
        format!(
            "already signed: {name}@{digest} has this key's signature of this payload in tag \
             {prefix}.sig (2 signature(s)); nothing added\n"
        )
    );
    assert_eq!(
        sign(&["--format", "bundle"]),
        format!("signed {name}@{digest} -> referrers tag {prefix} (1 signature(s))\n")
    );

    let doc = discover(&["-o", "json"]).json();
    assert_eq!(doc["signatures"].as_array().unwrap().len(), 3, "{doc}");
    assert_eq!(discover(&[]).stdout, discover_text(&doc));

    // verify-bundle's answers for the bundle just written, over the image's digest.
    let blob = |digest: &str| copy.join("blobs/sha256").join(&digest[7..]);
    let read = |digest: &str| -> Value {
        serde_json::from_slice(&std::fs::read(blob(digest)).unwrap()).unwrap()
    };
    let layout: Value =
        serde_json::from_slice(&std::fs::read(copy.join("index.json")).unwrap()).unwrap();
    let referrers = layout["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == prefix.as_str())
        .unwrap();
    let index = read(referrers["digest"].as_str().unwrap());
    let manifest = read(index["manifests"][0]["digest"].as_str().unwrap());
    let bundle = blob(manifest["layers"][0]["digest"].as_str().unwrap());
    let verify_bundle = |extra: &[&str]| {
        let mut args = vec![
            "verify-bundle",
            "--bundle",
            bundle.to_str().unwrap(),
            "--key",
            public.to_str().unwrap(),
            "--insecure-ignore-tlog",
            digest.as_str(),
        ];
        args.extend(extra);
        let run = ocigate(&args, &[]);
        assert_eq!(run.code, 0, "{run:?}");
        run.stdout
    };
    assert_eq!(
        verify_bundle(&[]),
        format!("OK: {} signed by the given key\n", bundle.display())
    );
    assert_eq!(
        verify_bundle(&["-o", "json"]),
        "{\n  \"tlogVerified\": false,\n  \"certificateVerified\": false,\n  \
         \"sctVerified\": false,\n  \"trustRoot\": \"embedded public-good\"\n}\n"
    );
}
