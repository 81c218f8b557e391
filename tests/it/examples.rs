//! The README's promises: the quick start, the shipped example, every example policy, and a
//! broken-policy table whose files say where and what the error is.

use std::path::Path;

use crate::harness::*;

/// The README's quick start: exactly two command lines, and .ci/run runs the second.
#[test]
fn readme_quick_start_is_the_contract() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let start = readme.find("## Quick start").expect("Quick start section");
    let block = &readme[start..];
    let open = block.find("```sh\n").expect("sh block") + 6;
    let close = open + block[open..].find("```").expect("closed block");
    let lines: Vec<&str> = block[open..close]
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].contains("verify oci-layout:examples/signed-layout"),
        "{lines:?}"
    );
    let ci = std::fs::read_to_string(repo_root().join(".ci/run")).unwrap();
    assert!(
        ci.lines().any(|l| l.trim() == lines[1]),
        ".ci/run must run {:?}",
        lines[1]
    );
}

#[test]
fn shipped_example_verifies_offline() {
    let run = ocigate_in(
        Some(&repo_root()),
        &[
            "verify",
            "oci-layout:examples/signed-layout",
            "--policy",
            "policy-examples/key-based.yaml",
        ],
        &[],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .starts_with("ALLOW oci-layout:examples/signed-layout@sha256:"),
        "{run:?}"
    );
    assert!(run.stdout.contains("[rule shipped-example]"), "{run:?}");
    assert!(
        run.stdout.contains("source https://example.com/acme/hello"),
        "{run:?}"
    );
}

#[test]
fn tampered_layout_copy_is_denied() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("layout");
    copy_dir(&repo_root().join("examples/signed-layout"), &copy);
    let reference = format!("oci-layout:{}", copy.display());
    let key = repo_root().join("keys-example/cosign.pub");
    let ok = ocigate(
        &[
            "verify",
            &reference,
            "--key",
            key.to_str().unwrap(),
            "--signed-repository",
            "oci-layout:examples/signed-layout",
        ],
        &[],
    );
    assert_eq!(ok.code, 0, "{ok:?}");
    // The copy under another path is another repository name: matchRepository denies it.
    let other = ocigate(&["verify", &reference, "--key", key.to_str().unwrap()], &[]);
    assert_eq!(other.code, 1, "{other:?}");
    assert!(
        other
            .stdout
            .contains("signature names \"oci-layout:examples/signed-layout\""),
        "{other:?}"
    );
    // Overwrite the signature payload blob: the layout's content check catches it.
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(copy.join("index.json")).unwrap()).unwrap();
    let sig = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap()
                .ends_with(".sig")
        })
        .unwrap();
    let sig_hex = sig["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:");
    let sig_manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(copy.join("blobs/sha256").join(sig_hex)).unwrap(),
    )
    .unwrap();
    let payload_hex = sig_manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:");
    std::fs::write(copy.join("blobs/sha256").join(payload_hex), b"{\"evil\":1}").unwrap();
    let bad = ocigate(
        &[
            "verify",
            &reference,
            "--key",
            key.to_str().unwrap(),
            "--signed-repository",
            "oci-layout:examples/signed-layout",
        ],
        &[],
    );
    assert_eq!(bad.code, 1, "{bad:?}");
    assert!(bad.stdout.contains("does not match its digest"), "{bad:?}");
    assert!(!bad.stdout.contains("no signatures"), "{bad:?}");
}

#[test]
fn sign_and_verify_an_oci_layout() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("layout");
    copy_dir(&repo_root().join("examples/signed-layout"), &copy);
    let (key, public) = generate_keys(dir.path(), "k");
    let reference = format!("oci-layout:{}:v1", copy.display());
    let s = ocigate(
        &["sign", &reference, "--key", key.to_str().unwrap()],
        &[("OCIGATE_PASSWORD", PASSWORD)],
    );
    assert_eq!(s.code, 0, "{s:?}");
    assert!(s.stdout.contains("(2 signature(s))"), "{s:?}");
    let v = ocigate(
        &["verify", &reference, "--key", public.to_str().unwrap()],
        &[],
    );
    assert_eq!(v.code, 0, "{v:?}");
}

#[test]
fn every_example_policy_passes_check() {
    let dir = repo_root().join("policy-examples");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .map(|p| p.to_str().unwrap().to_string())
        .collect();
    files.sort();
    assert!(files.len() >= 3, "{files:?}");
    let mut args = vec!["policy", "check"];
    args.extend(files.iter().map(String::as_str));
    let run = ocigate(&args, &[]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout.matches(": ok").count(), files.len(), "{run:?}");
}

/// Each file in tests/broken-policies starts with `# expect: LINE:COLUMN: text`.
#[test]
fn broken_policies_fail_where_they_say() {
    let dir = repo_root().join("tests/broken-policies");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue; // files the policies refer to
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} has no '# expect:' line", path.display()));
        let run = ocigate(&["policy", "check", path.to_str().unwrap()], &[]);
        assert_eq!(run.code, 2, "{}: {run:?}", path.display());
        let (pos, text) = expect.split_at(expect.find(": ").unwrap());
        let want_prefix = format!("{}:{pos}: ", path.display());
        let line = run.stderr.lines().next().unwrap_or("");
        assert!(
            line.starts_with(&want_prefix),
            "{line}\n  expected prefix {want_prefix}"
        );
        assert!(
            line.contains(&text[2..]),
            "{line}\n  expected {:?}",
            &text[2..]
        );
        n += 1;
    }
    assert!(n >= 8, "only {n} broken policies");
}

pub(crate) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// A signature path whose manifest is not a manifest (its digest is right, so only parsing can
/// catch it): the legacy `.sig` tag, and the referrers tag of cosign v3. Either is a registry
/// error that denies, never "unsigned".
#[test]
fn malformed_signature_manifests_are_errors_not_unsigned() {
    for path in ["sig", "referrers"] {
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("layout");
        copy_dir(&repo_root().join("examples/signed-layout"), &copy);
        let garbage = b"this is not a manifest";
        let d = ocigate::reference::Digest::sha256_of(garbage);
        std::fs::write(copy.join("blobs/sha256").join(d.hex()), garbage).unwrap();
        let index_path = copy.join("index.json");
        let mut index: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&index_path).unwrap()).unwrap();
        let entries = index["manifests"].as_array_mut().unwrap();
        let tag_of = |m: &serde_json::Value| {
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap()
                .to_string()
        };
        let image = entries.iter().find(|m| tag_of(m) == "v1").unwrap()["digest"]
            .as_str()
            .unwrap()
            .replace(':', "-");
        let garbage_entry = |tag: &str| {
            serde_json::json!({
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "digest": d.to_string(),
                "size": garbage.len(),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            })
        };
        let (tag, place) = match path {
            "sig" => (format!("{image}.sig"), "tag"),
            _ => (image.clone(), "referrers tag"),
        };
        entries.retain(|m| tag_of(m) != tag);
        entries.push(garbage_entry(&tag));
        std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();

        let key = repo_root().join("keys-example/cosign.pub");
        let reference = format!("oci-layout:{}", copy.display());
        let v = ocigate(
            &[
                "verify",
                &reference,
                "--key",
                key.to_str().unwrap(),
                "-o",
                "json",
            ],
            &[],
        );
        assert_eq!(v.code, 1, "{path}: {v:?}");
        let res = &v.json()["results"][0];
        assert_eq!(res["failure"], "registry", "{path}: {v:?}");
        // A rejected candidate, with its reason; nothing else satisfied the rule.
        let first = res["reasons"][0].as_str().unwrap();
        assert!(first.contains("cannot tell whether"), "{first}");
        let reasons = res["reasons"].to_string();
        assert!(
            reasons.contains(&format!("{place} {tag}: not examined"))
                && reasons.contains("is not a JSON OCI/Docker manifest"),
            "{reasons}"
        );
    }
}

#[test]
fn bundle_signatures_in_an_oci_layout() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("layout");
    copy_dir(&repo_root().join("examples/signed-layout"), &copy);
    let (key, public) = generate_keys(dir.path(), "k");
    let reference = format!("oci-layout:{}:v1", copy.display());
    let s = ocigate(
        &[
            "sign",
            &reference,
            "--key",
            key.to_str().unwrap(),
            "--format",
            "bundle",
        ],
        &[("OCIGATE_PASSWORD", PASSWORD)],
    );
    assert_eq!(s.code, 0, "{s:?}");
    let v = ocigate(
        &[
            "verify",
            &reference,
            "--key",
            public.to_str().unwrap(),
            "-o",
            "json",
        ],
        &[],
    );
    assert_eq!(v.code, 0, "{v:?}");
    let sig = &v.json()["results"][0]["signatures"][0];
    assert!(
        sig["location"]
            .as_str()
            .unwrap()
            .starts_with("referrers tag sha256-"),
        "{v:?}"
    );
    // the untagged referrer manifest did not make the layout ambiguous
    let plain = format!("oci-layout:{}", copy.display());
    let v = ocigate(
        &[
            "verify",
            &plain,
            "--key",
            public.to_str().unwrap(),
            "--signed-repository",
            "x",
        ],
        &[],
    );
    assert_eq!(v.code, 0, "{v:?}");
}

#[test]
fn version_names_the_commit_and_the_embedded_roots_validity_and_completions_are_generated() {
    for args in [&["version"][..], &["--version"][..]] {
        let v = ocigate(args, &[]);
        assert_eq!(v.code, 0, "{v:?}");
        assert!(v.stdout.starts_with("ocigate "), "{v:?}");
        assert!(v.stdout.contains("(commit "), "{v:?}");
        assert!(
            v.stdout.contains("Fulcio certificate authorities: ")
                && v.stdout.contains("valid from 20"),
            "{v:?}"
        );
    }
    for (shell, needle) in [
        ("bash", "_ocigate()"),
        ("zsh", "#compdef ocigate"),
        ("fish", "complete -c ocigate"),
    ] {
        let v = ocigate(&["completion", shell], &[]);
        assert_eq!(v.code, 0, "{v:?}");
        assert!(
            v.stdout.contains(needle),
            "{shell}: {}",
            &v.stdout[..v.stdout.len().min(200)]
        );
        assert!(v.stdout.contains("verify-bundle"), "{shell}");
    }
    let v = ocigate(&["completion", "tcsh"], &[]);
    assert_eq!(v.code, 2, "{v:?}");
}

#[test]
fn policy_check_says_why_a_file_cannot_be_read() {
    let v = ocigate(&["policy", "check", "/nonexistent/policy.yaml"], &[]);
    assert_eq!(v.code, 2, "{v:?}");
    assert!(
        v.stderr
            .contains("cannot read the file: No such file or directory"),
        "{v:?}"
    );
}

/// `policy check` reads a policy as `verify` and `serve` do: a file over the size bound, or a key
/// file it names over it, fails the check as it would fail the server.
#[test]
fn policy_check_applies_the_size_bound_the_server_does() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.yaml");
    let mut text = String::from("apiVersion: ocigate.dev/v1alpha1\nkind: Policy\nrules: []\n");
    text.push_str(&"# padding\n".repeat(500_000));
    std::fs::write(&big, &text).unwrap();
    let v = ocigate(&["policy", "check", big.to_str().unwrap()], &[]);
    assert_eq!(v.code, 2, "{v:?}");
    assert!(v.stderr.contains("larger than 4194304 bytes"), "{v:?}");
    let key = dir.path().join("big.pub");
    std::fs::write(&key, "#".repeat(5 << 20)).unwrap();
    let policy = dir.path().join("p.yaml");
    std::fs::write(
        &policy,
        "apiVersion: ocigate.dev/v1alpha1\nkind: Policy\nkeys: [{name: k, path: big.pub}]\n\
         rules:\n  - name: r\n    images: [\"r.example/**\"]\n    authorities: [{key: {name: k}}]\n",
    )
    .unwrap();
    let v = ocigate(&["policy", "check", policy.to_str().unwrap()], &[]);
    assert_eq!(v.code, 2, "{v:?}");
    assert!(v.stderr.contains("larger than 4194304 bytes"), "{v:?}");
}

/// `policy check` reports every problem of a file, each as FILE:LINE:COLUMN: message, and
/// goes on to the next file.
#[test]
fn policy_check_reports_every_problem_in_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let key = repo_root().join("keys-example/cosign.pub");
    let broken = dir.path().join("broken.yaml");
    std::fs::write(
        &broken,
        format!(
            "apiVersion: ocigate.dev/v1alpha1
kind: Policy
noMatch: maybe
keys:
  - name: release
    path: {}
rules:
  - name: a
    images: [\"ghcr.io/acme/**\"]
    mode: bogus
    colour: blue
    authorities:
      - key: {{name: relase}}
  - name: b
    images: [\"ghcr.io/acme/*\"]
    authorities:
      - keyless:
          identities:
            - issuer: https://token.actions.githubusercontent.com
              subjectRegExp: '(unclosed'
",
            key.display()
        ),
    )
    .unwrap();
    let good = repo_root().join("policy-examples/key-based.yaml");
    let run = ocigate(
        &[
            "policy",
            "check",
            broken.to_str().unwrap(),
            good.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(run.code, 2, "{run:?}");
    let f = broken.display().to_string();
    let want = [
        format!("{f}:3:10: noMatch: unknown variant `maybe`"),
        format!("{f}:10:11: mode: unknown variant `bogus`"),
        format!("{f}:11:5: unknown field `colour` in a rule"),
        format!("{f}:13:21: rule \"a\": unknown key \"relase\""),
        format!("{f}:14:11: rules \"a\" and \"b\" are equally specific"),
        format!(
            "{f}:20:30: rule \"b\": subjectRegExp \"(unclosed\" is not a valid regular expression"
        ),
    ];
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), want.len(), "{}", run.stderr);
    for (line, want) in lines.iter().zip(&want) {
        assert!(line.starts_with(want.as_str()), "{line}\n  expected {want}");
    }
    assert!(
        run.stdout.contains(&format!("{}: ok", good.display())),
        "{run:?}"
    );
}

/// Every ```yaml block of docs/policy.md is a complete policy that `policy check` accepts, so
/// the document cannot drift from the code. The files a block names (keys, trusted roots) are
/// made beside it: a fresh key for each key path, the public-good trusted_root.json for each
/// trustedRoot path.
#[test]
fn every_policy_in_the_docs_passes_check() {
    let doc = std::fs::read_to_string(repo_root().join("docs/policy.md")).unwrap();
    let mut blocks = Vec::new();
    let mut rest = doc.as_str();
    while let Some(start) = rest.find("```yaml\n") {
        let body = &rest[start + 8..];
        let end = body.find("```").expect("closed yaml block");
        blocks.push(&body[..end]);
        rest = &body[end + 3..];
    }
    assert!(blocks.len() >= 12, "only {} yaml blocks", blocks.len());
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (i, block) in blocks.iter().enumerate() {
        let here = dir.path().join(format!("example-{i}"));
        let doc: serde_json::Value = serde_saphyr::from_str(block)
            .unwrap_or_else(|e| panic!("block {i} is not YAML: {e}\n{block}"));
        let write = |relative: &str, content: &str| {
            let path = here.join(relative);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        };
        for k in doc["keys"].as_array().into_iter().flatten() {
            if let Some(p) = k["path"].as_str() {
                let key = ocigate::sign::key::SigningKey::generate().unwrap();
                write(p, &key.public_key().to_pem());
            }
        }
        for r in doc["trustRoots"].as_array().into_iter().flatten() {
            match r["trustedRoot"].as_str() {
                Some("embedded") | None => {}
                Some(p) => write(p, sigstore_trust_root::SIGSTORE_PRODUCTION_TRUSTED_ROOT),
            }
            // A TUF root's bootstrap root.json: the public-good one ocigate embeds.
            if let Some(p) = r["tuf"]["root"].as_str() {
                let root = sigstore_trust_root::SigstoreInstance::PublicGood.tuf_root();
                write(p, std::str::from_utf8(root).unwrap());
            }
        }
        // A certificates authority's PEM files: a fresh self-signed CA for each.
        for rule in doc["rules"].as_array().into_iter().flatten() {
            for a in rule["authorities"].as_array().into_iter().flatten() {
                let c = &a["certificates"];
                for p in [&c["roots"], &c["intermediates"]]
                    .iter()
                    .filter_map(|v| v.as_str())
                {
                    let key = rcgen::KeyPair::generate().unwrap();
                    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
                    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
                    write(p, &ca.self_signed(&key).unwrap().pem());
                }
            }
        }
        write("policy.yaml", block);
        files.push(here.join("policy.yaml").to_str().unwrap().to_string());
    }
    let mut args = vec!["policy", "check"];
    args.extend(files.iter().map(String::as_str));
    let run = ocigate(&args, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout.matches(": ok").count(), files.len(), "{run:?}");
}

/// The README and `--help` send readers to the policy format that the repository has.
#[test]
fn readme_and_help_point_at_the_policy_format() {
    assert!(repo_root().join("docs/policy.md").is_file());
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let section = &readme[readme
        .find("## Policy files")
        .expect("Policy files section")..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    assert!(section.contains("docs/policy.md"), "{section}");
    assert!(!readme.contains("DESIGN.md"), "README.md names DESIGN.md");
    let help = ocigate(&["verify", "--help"], &[]);
    assert_eq!(help.code, 0, "{help:?}");
    assert!(help.stdout.contains("docs/policy.md"), "{}", help.stdout);
    assert!(!help.stdout.contains("DESIGN.md"), "{}", help.stdout);
}

/// The sample policy that `kubectl apply -k deploy/` installs passes `policy check`.
#[test]
fn deploy_sample_policy_passes_check() {
    let text =
        std::fs::read_to_string(repo_root().join("deploy/base/policy-configmap.yaml")).unwrap();
    let cm: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    assert!(cm["data"]["policy.yaml"].is_string(), "data.policy.yaml");
    // Every key is a file of the mounted directory, as the Deployment's volume projects them.
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in cm["data"].as_object().unwrap() {
        std::fs::write(dir.path().join(name), text.as_str().unwrap()).unwrap();
    }
    let path = dir.path().join("policy.yaml");
    let run = ocigate(&["policy", "check", path.to_str().unwrap()], &[]);
    assert_eq!(run.code, 0, "{run:?}");
}
