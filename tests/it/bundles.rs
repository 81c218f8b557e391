//! The sigstore-conformance bundle-verify table (../shared/corpus/sigstore-conformance), run
//! through `ocigate verify-bundle` as the conformance client protocol describes: every case in
//! artifact-path and in sha256-digest mode; a case passes when both runs behave as its name
//! says (`_fail` must fail). Cases without a trusted_root.json use the embedded public-good root.

use std::path::Path;

use crate::harness::*;

const DEFAULT_IDENTITY: &str = "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/.github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main";
const DEFAULT_ISSUER: &str = "https://token.actions.githubusercontent.com";

fn read_trimmed(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

#[test]
fn sigstore_conformance_bundle_verify_table() {
    let Some(corpus) = corpus_or_skip("sigstore_conformance_bundle_verify_table") else {
        return;
    };
    let base = corpus.join("sigstore-conformance/test/assets/bundle-verify");
    let mut cases: Vec<_> = std::fs::read_dir(&base)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("bundle.sigstore.json").is_file())
        .collect();
    cases.sort();
    let (mut cases_ok, mut runs_ok) = (0, 0);
    let mut mismatches = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap().to_str().unwrap().to_string();
        let expect_ok = !name.ends_with("_fail");
        let artifact = if case.join("artifact").is_file() {
            case.join("artifact")
        } else {
            base.join("a.txt")
        };
        let digest = ocigate::reference::Digest::sha256_of(&std::fs::read(&artifact).unwrap());
        let bundle = case.join("bundle.sigstore.json");
        let mut args: Vec<String> = vec![
            "verify-bundle".into(),
            "--bundle".into(),
            bundle.display().to_string(),
        ];
        if case.join("key.pub").is_file() {
            args.extend(["--key".into(), case.join("key.pub").display().to_string()]);
        } else {
            let identity =
                read_trimmed(&case.join("identity")).unwrap_or_else(|| DEFAULT_IDENTITY.into());
            let issuer =
                read_trimmed(&case.join("issuer")).unwrap_or_else(|| DEFAULT_ISSUER.into());
            args.extend([
                "--certificate-identity".into(),
                identity,
                "--certificate-oidc-issuer".into(),
                issuer,
            ]);
        }
        if case.join("trusted_root.json").is_file() {
            args.extend([
                "--trusted-root".into(),
                case.join("trusted_root.json").display().to_string(),
            ]);
        }
        let mut both = true;
        for input in [artifact.display().to_string(), digest.to_string()] {
            let mut a: Vec<&str> = args.iter().map(String::as_str).collect();
            a.push(&input);
            let run = ocigate(&a, &[]);
            // 1: verification failed; 2: an input (key, bundle, root) is malformed. Never a crash.
            assert!(matches!(run.code, 0..=2), "{name}: {run:?}");
            if (run.code == 0) == expect_ok {
                runs_ok += 1;
            } else {
                both = false;
                let mode = if input.starts_with("sha256:") {
                    "digest"
                } else {
                    "path"
                };
                mismatches.push(format!(
                    "{name} ({mode}): expected {}, got {}",
                    if expect_ok { "success" } else { "failure" },
                    if run.code == 0 {
                        run.stdout.trim().to_string()
                    } else {
                        run.stderr.trim().to_string()
                    }
                ));
            }
        }
        if both {
            cases_ok += 1;
        }
    }
    println!(
        "sigstore-conformance bundle-verify: {cases_ok}/{} cases, {runs_ok}/{} runs behave as their names say",
        cases.len(),
        2 * cases.len()
    );
    assert!(cases.len() >= 70, "only {} cases found", cases.len());
    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

/// The three things ocigate adds on top of sigstore-verify, each through the whole CLI path.
#[test]
fn bundle_gaps_closed() {
    let Some(corpus) = corpus_or_skip("bundle_gaps_closed") else {
        return;
    };
    let base = corpus.join("sigstore-conformance/test/assets/bundle-verify");
    let artifact = base.join("a.txt");
    let a = artifact.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();

    // 1. Line-wrapped base64 (as Go and Python encoders emit) in the bundle's byte fields.
    let text = std::fs::read_to_string(base.join("happy-path-v0.3/bundle.sigstore.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let sig = v["messageSignature"]["signature"]
        .as_str()
        .unwrap()
        .to_string();
    let wrapped: String = sig
        .as_bytes()
        .chunks(64)
        .map(|c| format!("{}\n", std::str::from_utf8(c).unwrap()))
        .collect();
    assert_ne!(wrapped, sig);
    v["messageSignature"]["signature"] = serde_json::json!(wrapped);
    let cert = v["verificationMaterial"]["certificate"]["rawBytes"]
        .as_str()
        .unwrap()
        .to_string();
    let cert_wrapped: String = cert
        .as_bytes()
        .chunks(76)
        .map(|c| format!("{}\r\n", std::str::from_utf8(c).unwrap()))
        .collect();
    v["verificationMaterial"]["certificate"]["rawBytes"] = serde_json::json!(cert_wrapped);
    let wrapped_bundle = dir.path().join("wrapped.json");
    std::fs::write(&wrapped_bundle, serde_json::to_vec(&v).unwrap()).unwrap();
    let b = wrapped_bundle.to_str().unwrap();
    let run = ocigate(
        &[
            "verify-bundle",
            "--bundle",
            b,
            "--certificate-identity",
            DEFAULT_IDENTITY,
            "--certificate-oidc-issuer",
            DEFAULT_ISSUER,
            a,
        ],
        &[],
    );
    assert_eq!(run.code, 0, "{run:?}");

    // 2. Regular expressions for identity and issuer; a non-matching one fails for that reason.
    let ok = ocigate(
        &[
            "verify-bundle",
            "--bundle",
            b,
            "--certificate-identity-regexp",
            r"^https://github\.com/sigstore-conformance/.+@refs/heads/main$",
            "--certificate-oidc-issuer-regexp",
            r"^https://token\.actions\.githubusercontent\.com$",
            a,
        ],
        &[],
    );
    assert_eq!(ok.code, 0, "{ok:?}");
    let wrong = ocigate(
        &[
            "verify-bundle",
            "--bundle",
            b,
            "--certificate-identity-regexp",
            r"^https://github\.com/sigstore-conformance/.+@refs/tags/v.*$",
            "--certificate-oidc-issuer",
            DEFAULT_ISSUER,
            a,
        ],
        &[],
    );
    assert_eq!(wrong.code, 1, "{wrong:?}");
    assert!(wrong.stderr.contains("does not match regexp"), "{wrong:?}");
    let wrong_issuer = ocigate(
        &[
            "verify-bundle",
            "--bundle",
            b,
            "--certificate-identity",
            DEFAULT_IDENTITY,
            "--certificate-oidc-issuer",
            "https://accounts.google.com",
            a,
        ],
        &[],
    );
    assert_eq!(wrong_issuer.code, 1, "{wrong_issuer:?}");
    assert!(
        wrong_issuer.stderr.contains("OIDC issuer"),
        "{wrong_issuer:?}"
    );

    // 3. A chain that carries its own root is refused, and says so.
    let case = base.join("bundle-with-root-cert_fail");
    let run = ocigate(
        &[
            "verify-bundle",
            "--bundle",
            case.join("bundle.sigstore.json").to_str().unwrap(),
            "--certificate-identity",
            DEFAULT_IDENTITY,
            "--certificate-oidc-issuer",
            DEFAULT_ISSUER,
            case.join("artifact").to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("includes a root certificate"),
        "{run:?}"
    );
}

/// Real bundles from cosign's and sigstore-rs's test data: a keyless OCI attestation (email
/// identity) and a GitHub Actions release signature with workflow claims.
#[test]
fn corpus_bundles_verify_with_their_identities_and_claims() {
    let Some(corpus) = corpus_or_skip("corpus_bundles_verify_with_their_identities_and_claims")
    else {
        return;
    };
    let cosign_bundle = corpus.join("cosign/pkg/cosign/testdata/oci-attestation.sigstore.json");
    let cosign_root = corpus.join("cosign/pkg/cosign/testdata/trusted_root_pgi.json");
    let cosign_digest = "sha256:732112270d7e59418a8c080b134b24cabd67d250d0d0147a97ed95ba5c280aa4";
    for root in [None, Some(cosign_root.to_str().unwrap())] {
        let mut args = vec![
            "verify-bundle",
            "--bundle",
            cosign_bundle.to_str().unwrap(),
            "--certificate-identity",
            "cody@soyland.com",
            "--certificate-oidc-issuer",
            "https://github.com/login/oauth",
        ];
        if let Some(r) = root {
            args.extend(["--trusted-root", r]);
        }
        args.push(cosign_digest);
        let run = ocigate(&args, &[]);
        assert_eq!(run.code, 0, "{run:?}");
        assert!(
            run.stdout.contains("transparency log index 175508996"),
            "{run:?}"
        );
    }
    let wrong = ocigate(
        &[
            "verify-bundle",
            "--bundle",
            cosign_bundle.to_str().unwrap(),
            "--certificate-identity",
            "someone@soyland.com",
            "--certificate-oidc-issuer",
            "https://github.com/login/oauth",
            cosign_digest,
        ],
        &[],
    );
    assert_eq!(wrong.code, 1, "{wrong:?}");

    let rs_bundle = corpus.join("sigstore-rs/tests/data/bundle_v03.json");
    let rs_digest = "sha256:c811d58de79c92f03214e63aa339484e488d694ae8a6283b5f3f17a9faf50172";
    let base = [
        "verify-bundle",
        "--bundle",
        rs_bundle.to_str().unwrap(),
        "--certificate-identity-regexp",
        r"^https://github\.com/kubewarden/kubewarden-controller/\.github/workflows/release\.yml@refs/tags/v",
        "--certificate-oidc-issuer",
        "https://token.actions.githubusercontent.com",
    ];
    let with = |extra: &[&str]| {
        let mut a = base.to_vec();
        a.extend_from_slice(extra);
        a.extend(["-o", "json", rs_digest]);
        ocigate(&a, &[])
    };
    let ok = with(&[
        "--certificate-github-workflow-trigger",
        "push",
        "--certificate-github-workflow-sha",
        "2a6b879b7a5ef59d7fb348d0b5d14314538ac0a6",
        "--certificate-github-workflow-name",
        "Release",
        "--certificate-github-workflow-repository",
        "kubewarden/kubewarden-controller",
        "--certificate-github-workflow-ref",
        "refs/tags/v1.34.0",
    ]);
    assert_eq!(ok.code, 0, "{ok:?}");
    let evidence: serde_json::Value = serde_json::from_str(&ok.stdout).unwrap();
    assert_eq!(evidence["logIndex"], 1261105807);
    assert_eq!(
        evidence["githubWorkflow"]["repository"],
        "kubewarden/kubewarden-controller"
    );
    for (flag, value, claim) in [
        (
            "--certificate-github-workflow-ref",
            "refs/tags/v1.33.0",
            "githubWorkflowRef",
        ),
        (
            "--certificate-github-workflow-trigger",
            "release",
            "githubWorkflowTrigger",
        ),
        (
            "--certificate-github-workflow-repository",
            "evil/kubewarden-controller",
            "githubWorkflowRepository",
        ),
        (
            "--certificate-github-workflow-sha",
            "0000000000000000000000000000000000000000",
            "githubWorkflowSha",
        ),
        (
            "--certificate-github-workflow-name",
            "CI",
            "githubWorkflowName",
        ),
    ] {
        let run = with(&[flag, value]);
        assert_eq!(run.code, 1, "{flag}: {run:?}");
        assert!(
            run.stderr.contains(&format!("certificate claim {claim}")),
            "{flag}: {run:?}"
        );
    }
}

#[test]
fn malformed_trusted_root_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("trusted_root.json");
    std::fs::write(&root, "{\"mediaType\": 42}").unwrap();
    let bundle = dir.path().join("b.json");
    std::fs::write(&bundle, "{}").unwrap();
    let run = ocigate(
        &[
            "verify-bundle",
            "--bundle",
            bundle.to_str().unwrap(),
            "--certificate-identity",
            "a",
            "--certificate-oidc-issuer",
            "b",
            "--trusted-root",
            root.to_str().unwrap(),
            "sha256:00",
        ],
        &[],
    );
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr
            .contains("trusted_root.json: not a valid trusted_root.json"),
        "{run:?}"
    );
    let run = ocigate(
        &[
            "verify",
            "r.io/a:b",
            "--certificate-identity",
            "a",
            "--certificate-oidc-issuer",
            "b",
            "--trusted-root",
            root.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("not a valid trusted_root.json"),
        "{run:?}"
    );
}
