//! Standard output closed before ocigate writes (`ocigate … | head -0`): every command says so on
//! stderr and exits 2, as `verify` does; none panics.

use std::process::{Command, Stdio};

use crate::harness::*;

/// Run `ocigate args` in the repository with a stdout pipe whose reading end is already closed.
fn with_closed_stdout(args: &[&str]) -> Run {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_ocigate"))
        .args(args)
        .current_dir(repo_root())
        .env("DOCKER_CONFIG", "/nonexistent-ocigate-test")
        .env("HOME", "/nonexistent-ocigate-home")
        .env("OCIGATE_PASSWORD", PASSWORD)
        .stdin(Stdio::null())
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .expect("run ocigate");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::new(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn assert_exit_2_without_panic(what: &str, run: &Run) {
    assert_eq!(run.code, 2, "{what}: {run:?}");
    assert!(!run.stderr.contains("panicked"), "{what}: {run:?}");
    assert!(
        run.stderr.contains("writing to standard output") || run.stderr.contains("writing the"),
        "{what}: the error is named: {run:?}"
    );
}

#[test]
fn a_closed_stdout_is_exit_2_for_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let policy = repo_root().join("policy-examples/key-based.yaml");
    let policy = policy.to_str().unwrap();
    for args in [
        vec!["policy", "check", policy],
        vec!["version"],
        vec!["--version"],
        vec!["completion", "bash"],
        // A usage error reported as a JSON document.
        vec!["verify", "-o", "json", "UPPER/case:x", "--policy", policy],
        vec![
            "verify",
            "oci-layout:examples/signed-layout",
            "--policy",
            "policy-examples/key-based.yaml",
        ],
    ] {
        let run = with_closed_stdout(&args);
        assert_exit_2_without_panic(&args.join(" "), &run);
    }

    // sign, against a real registry.
    let reg = TestRegistry::start();
    let image = reg.reference("apps/pipe:v1");
    push_image(&reg.client(), &image, "closed pipe");
    let (key, _) = generate_keys(dir.path(), "k");
    let image = image.to_string();
    let host = reg.host();
    let run = with_closed_stdout(&[
        "sign",
        &image,
        "--key",
        key.to_str().unwrap(),
        "--registry-plain-http",
        &host,
    ]);
    assert_exit_2_without_panic("sign", &run);

    // verify-bundle, on a conformance bundle that verifies.
    let Some(corpus) = corpus_or_skip("a_closed_stdout_is_exit_2_for_every_command") else {
        return;
    };
    let base = corpus.join("sigstore-conformance/test/assets/bundle-verify");
    let bundle = base.join("happy-path-v0.3/bundle.sigstore.json");
    for output in ["text", "json"] {
        let run = with_closed_stdout(&[
            "verify-bundle",
            "--bundle",
            bundle.to_str().unwrap(),
            "--certificate-identity",
            "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/.github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main",
            "--certificate-oidc-issuer",
            "https://token.actions.githubusercontent.com",
            "-o",
            output,
            base.join("a.txt").to_str().unwrap(),
        ]);
        assert_exit_2_without_panic(&format!("verify-bundle -o {output}"), &run);
    }
}

/// Standard error closed too (`ocigate … 2>&-` under a supervisor that closed it): an error that
/// cannot be said is still exit 2, never a panic (exit 101).
#[test]
fn a_closed_stderr_is_not_a_panic() {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_ocigate"))
        .args(["policy", "check", "/nonexistent/policy.yaml"])
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(writer))
        .status()
        .expect("run ocigate");
    assert_eq!(out.code(), Some(2), "{out:?}");
}
