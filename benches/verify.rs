//! CPU per signature verification (pure: no I/O in the measured loop), on real signatures
//! from ../shared/corpus with the embedded public-good root:
//! - a keyless cosign legacy layer (Fulcio chain, SCT, Rekor SET and body, identity);
//! - a key-based legacy layer (ECDSA P-256 over the payload);
//! - a Sigstore v0.3 bundle (conformance happy-path-v0.3);
//!
//! and the rule matching every check starts with: one cluster-wide rule, against a floor and
//! 50 namespace-scoped rules (issue #20), for a check in a namespace.
//!
//! Run: `cargo bench --bench verify` (figures in BENCHMARKS.md).

use std::collections::BTreeMap;
use std::path::PathBuf;

use base64::Engine as _;
use criterion::{Criterion, criterion_group, criterion_main};
use ocigate::bundle::{BundleArtifact, BundleAuthority, ParsedBundle, verify_bundle};
use ocigate::candidate::SignatureCandidate;
use ocigate::reference::Digest;
use ocigate::trust::{GitHubWorkflow, Identity, Matcher, PublicKey, TrustRoot};
use ocigate::verify::{
    Expectation, KeyAuthority, KeylessAuthority, PreparedSignature, SignedIdentity,
    verify_key_signature, verify_keyless_signature,
};

fn corpus() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus");
    p.is_dir().then_some(p)
}

fn layer(path: PathBuf) -> SignatureCandidate {
    let raw = std::fs::read(path).expect("signature file");
    let v: serde_json::Value =
        serde_json::from_slice(raw.strip_prefix(b"\x00sigstore-json\n").expect("header"))
            .expect("json");
    let annotations: BTreeMap<String, String> =
        serde_json::from_value(v["annotations"].clone()).expect("annotations");
    SignatureCandidate {
        location: "bench".into(),
        payload: base64::engine::general_purpose::STANDARD
            .decode(v["payload"].as_str().expect("payload"))
            .expect("base64"),
        signature: annotations["dev.cosignproject.cosign/signature"].clone(),
        annotations,
    }
}

fn expectation(manifest: PathBuf) -> Expectation {
    Expectation {
        digest: Digest::sha256_of(&std::fs::read(manifest).expect("manifest")),
        repository: String::new(),
        signed_identity: SignedIdentity::Ignore,
        annotations: BTreeMap::new(),
    }
}

fn benches(c: &mut Criterion) {
    let Some(corpus) = corpus() else {
        eprintln!("SKIPPED: ../shared/corpus not found; no verification benchmark ran");
        return;
    };
    let root = TrustRoot::embedded().expect("embedded root");
    let fx = corpus.join("containers-image/signature/fixtures");

    let keyless = layer(fx.join("dir-img-cosign-fulcio-rekor-valid/signature-1"));
    let keyless_expect = expectation(fx.join("dir-img-cosign-fulcio-rekor-valid/manifest.json"));
    let identities = [Identity {
        subject: Matcher::Exact("mitr@redhat.com".into()),
        issuer: Matcher::Exact("https://github.com/login/oauth".into()),
        github: GitHubWorkflow::default(),
    }];
    let authority = KeylessAuthority {
        name: "keyless",
        identities: &identities,
        root: &root,
    };
    // Each iteration prepares the candidate afresh (its bundle form built and parsed), as the
    // engine does once per candidate; the root's verifier was built once, with the root.
    let keyless_once = || {
        verify_keyless_signature(
            &PreparedSignature::new(&keyless),
            authority,
            &keyless_expect,
        )
    };
    keyless_once().expect("keyless verifies");
    c.bench_function(
        "keyless legacy signature (chain, SCT, SET, body, identity)",
        |b| b.iter(keyless_once),
    );

    let keyed = layer(fx.join("dir-img-cosign-valid/signature-1"));
    let keyed_expect = expectation(fx.join("dir-img-cosign-valid/manifest.json"));
    let pem = std::fs::read_to_string(fx.join("cosign.pub")).expect("key");
    let key = PublicKey::from_pem(&pem, "cosign.pub").expect("key parses");
    let ka = KeyAuthority {
        name: "key",
        key: &key,
    };
    verify_key_signature(&keyed, ka, &keyed_expect).expect("key signature verifies");
    c.bench_function("key-based legacy signature (ECDSA P-256)", |b| {
        b.iter(|| verify_key_signature(&keyed, ka, &keyed_expect))
    });

    let case = corpus.join("sigstore-conformance/test/assets/bundle-verify");
    let json =
        std::fs::read_to_string(case.join("happy-path-v0.3/bundle.sigstore.json")).expect("bundle");
    let artifact = std::fs::read(case.join("a.txt")).expect("artifact");
    let ids = [Identity {
        subject: Matcher::Exact("https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/.github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main".into()),
        issuer: Matcher::Exact("https://token.actions.githubusercontent.com".into()),
        github: GitHubWorkflow::default(),
    }];
    let bundle_once = || {
        let parsed = ParsedBundle::parse(&json)?;
        verify_bundle(
            &parsed,
            BundleArtifact::Bytes(&artifact),
            BundleAuthority::Identities(&ids),
            &root,
        )
    };
    bundle_once().expect("bundle verifies");
    c.bench_function(
        "Sigstore bundle v0.3 (keyless, inclusion proof, checkpoint)",
        |b| b.iter(bundle_once),
    );
}

/// A policy with a cluster-wide floor and `scoped` namespace-scoped rules over the same images
/// (each of team-N and team-N-*, every other one also by a label selector).
fn policy_with(scoped: usize) -> ocigate::policy::Policy {
    let mut text = String::from(
        "apiVersion: ocigate.dev/v1alpha1\nkind: Policy\nkeys: [{name: k, path: k.pub}]\n\
         rules:\n  - name: floor\n    images: [\"ghcr.io/acme/**\"]\n    \
         authorities: [{key: {name: k}}]\n",
    );
    for i in 0..scoped {
        let selector = if i % 2 == 0 {
            format!("\n    namespaceSelector: {{matchLabels: {{team: t{i}}}}}")
        } else {
            String::new()
        };
        text.push_str(&format!(
            "  - name: team-{i}\n    images: [\"ghcr.io/acme/**\"]\n    \
             namespaces: [\"team-{i}\", \"team-{i}-*\"]{selector}\n    \
             authorities: [{{key: {{name: k}}}}]\n"
        ));
    }
    let pem = ocigate::sign::key::SigningKey::generate()
        .expect("key")
        .public_key()
        .to_pem();
    let read = |_: &std::path::Path| Ok(pem.clone());
    ocigate::policy::Policy::parse(&text, std::path::Path::new("p.yaml"), &read).expect("policy")
}

fn matching(c: &mut Criterion) {
    use ocigate::policy::{NamespaceContext, RuleMatch};
    let labels = [("team".to_string(), "t48".to_string())].into();
    let ns = NamespaceContext::with_labels("team-48-web", labels);
    for scoped in [0, 50] {
        let policy = policy_with(scoped);
        let name = "ghcr.io/acme/payments/api";
        let want = if scoped == 0 { "floor" } else { "team-48" };
        assert!(
            matches!(policy.match_rule_in(name, Some(&ns)), RuleMatch::Rule(_, r) if r.name == want)
        );
        c.bench_function(
            &format!("rule matching, floor + {scoped} namespace-scoped rules"),
            |b| b.iter(|| policy.match_rule_in(std::hint::black_box(name), Some(&ns))),
        );
    }
}

criterion_group!(verify, benches, matching);
criterion_main!(verify);
