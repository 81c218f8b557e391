//! Day one (issue #18): denials as Kubernetes users read them (403 Forbidden, the rule and what
//! it needs, audit annotations, the decision log's who/when/which policy), and the documented
//! ConfigMap commands shipping every file a policy names.

use std::path::Path;

use crate::cluster::MiniCluster;
use crate::harness::*;
use crate::webhook::{cluster, kube_tools_or_skip, kwhclient, start_serve, write};

fn pod(name: &str, image: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: apps\nspec:\n  \
         containers:\n  - name: app\n    image: {image}\n"
    )
}

/// The `AUDIT-ANNOTATION:` lines kwhclient printed, as (key, value).
fn audit_annotations(out: &str) -> Vec<(String, String)> {
    out.lines()
        .filter_map(|l| l.strip_prefix("AUDIT-ANNOTATION:"))
        .filter_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            Some((k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

#[test]
fn a_deny_is_forbidden_names_the_rule_and_is_audited_and_logged() {
    let test = "a_deny_is_forbidden_names_the_rule_and_is_audited_and_logged";
    let Some(k) = kube_tools_or_skip(test) else {
        return;
    };
    let c = cluster();
    let server = start_serve(&c.policy, &c.tls, &c.reg.host(), &[]);
    let d = c.dir.path();
    let public = d.join("k.pub");
    let fingerprint =
        ocigate::trust::PublicKey::from_pem(&std::fs::read_to_string(&public).unwrap(), "k.pub")
            .unwrap()
            .fingerprint();

    let bad = write(d, "bad.yaml", &pod("bad", &c.unsigned));
    let run = kwhclient(&k, &server, &c.tls, &bad, &["-user", "alice"]);
    assert_eq!(run.code, 1, "{run:?}");
    // kube's admission plugin turns the status into the API error kubectl prints.
    assert!(run.stdout.contains("DENIED (HTTP 403"), "{run:?}");
    assert!(
        run.stdout.contains("[unsigned]: no signatures found")
            && run.stdout.contains(&format!(
                "rule \"apps\" needs a signature by key \"release\" ({fingerprint})"
            )),
        "the deny names the rule and the key it needs: {run:?}"
    );
    let notes = audit_annotations(&run.stdout);
    let artifact = notes
        .iter()
        .find(|(k, _)| k.ends_with("artifact-0"))
        .unwrap_or_else(|| panic!("an audit annotation per artifact: {run:?}"));
    let a: serde_json::Value = serde_json::from_str(&artifact.1).unwrap();
    assert_eq!(a["artifact"], c.unsigned.as_str(), "{a}");
    assert_eq!(a["rule"], "apps", "{a}");
    assert_eq!(a["verdict"], "deny", "{a}");
    assert_eq!(a["failure"], "unsigned", "{a}");
    let policy = notes
        .iter()
        .find(|(k, _)| k.ends_with("/policy"))
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("the policy fingerprint is audited: {run:?}"));

    let ok = write(d, "ok.yaml", &pod("ok", &c.signed));
    let run = kwhclient(&k, &server, &c.tls, &ok, &["-user", "bob"]);
    assert_eq!(run.code, 0, "{run:?}");
    let notes = audit_annotations(&run.stdout);
    let a: serde_json::Value = serde_json::from_str(
        &notes
            .iter()
            .find(|(k, _)| k.ends_with("artifact-0"))
            .unwrap_or_else(|| panic!("{run:?}"))
            .1,
    )
    .unwrap();
    assert_eq!(a["verdict"], "allow", "{a}");
    assert!(a.get("failure").is_none(), "{a}");
    assert!(a["digest"].as_str().unwrap().starts_with("sha256:"), "{a}");

    // The decision log: when, who, which rule, under which policy.
    let log = server.stop_and_read_log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v["msg"] == "admission")
        .collect();
    let denied = lines
        .iter()
        .find(|v| v["user"] == "alice")
        .unwrap_or_else(|| panic!("a line for alice's request: {log}"));
    assert_eq!(denied["allowed"], false, "{denied}");
    assert_eq!(denied["artifacts"][0]["rule"], "apps", "{denied}");
    assert_eq!(denied["policy"], policy.as_str(), "{denied}");
    let time = denied["time"].as_str().unwrap();
    assert!(
        time.len() == 24 && time.ends_with('Z') && time.starts_with("20"),
        "RFC 3339 UTC with milliseconds: {time}"
    );
    assert!(
        lines
            .iter()
            .any(|v| v["user"] == "bob" && v["allowed"] == true)
    );
}

/// The line of deploy/README.md that creates the policy ConfigMap from a directory, with its
/// continuation, as a user would paste it.
fn documented_configmap_command() -> String {
    let readme = std::fs::read_to_string(repo_root().join("deploy/README.md")).unwrap();
    let mut lines = readme.lines();
    let mut command = String::new();
    while let Some(l) = lines.next() {
        if l.starts_with("kubectl -n ocigate-system create configmap ocigate-policy --from-file=") {
            command.push_str(l);
            while command.ends_with('\\') {
                command.pop();
                command.push_str(lines.next().unwrap_or_default());
            }
            return command;
        }
    }
    panic!(
        "deploy/README.md documents `kubectl -n ocigate-system create configmap ocigate-policy --from-file=…`"
    );
}

/// What the kubelet would put in the Deployment's `policy` volume: every key of the ConfigMap,
/// or only the volume's `items` (each at its path).
fn project_policy_volume(kube: &MiniCluster, into: &Path) {
    let rendered = kube.kubectl(&["kustomize", repo_root().join("deploy").to_str().unwrap()]);
    assert_eq!(rendered.code, 0, "{rendered:?}");
    let docs = ocigate::extract::parse_documents(&rendered.stdout).unwrap();
    let deployment = docs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("deploy/ renders a Deployment");
    let volume = deployment["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "policy")
        .expect("a policy volume")
        .clone();
    let cm = kube.kubectl(&[
        "-n",
        "ocigate-system",
        "get",
        "configmap",
        "ocigate-policy",
        "-o",
        "json",
    ]);
    assert_eq!(cm.code, 0, "{cm:?}");
    let cm: serde_json::Value = serde_json::from_str(&cm.stdout).unwrap();
    let data = cm["data"].as_object().unwrap();
    let items: Vec<(String, String)> = match volume["configMap"]["items"].as_array() {
        Some(items) => items
            .iter()
            .map(|i| {
                (
                    i["key"].as_str().unwrap().into(),
                    i["path"].as_str().unwrap().into(),
                )
            })
            .collect(),
        None => data.keys().map(|k| (k.clone(), k.clone())).collect(),
    };
    for (key, path) in items {
        let file = into.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, data[&key].as_str().unwrap()).unwrap();
    }
}

#[test]
fn the_documented_configmap_command_ships_every_file_the_policy_names() {
    let test = "the_documented_configmap_command_ships_every_file_the_policy_names";
    let Some(kube) = MiniCluster::start_or_skip(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A policy directory as docs/policy.md writes one: the policy and a key it names.
    let policy_dir = d.join("my-policy");
    std::fs::create_dir_all(&policy_dir).unwrap();
    let (_, public) = generate_keys(d, "release");
    std::fs::copy(&public, policy_dir.join("release.pub")).unwrap();
    write_key_policy(
        &policy_dir.join("policy.yaml"),
        Path::new("release.pub"),
        "ours",
        "registry.example.com/**",
    );
    let run = kube.kubectl(&["create", "namespace", "ocigate-system"]);
    assert_eq!(run.code, 0, "{run:?}");

    let command = documented_configmap_command();
    let kubectl_dir = kube.kubectl_path().parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        kubectl_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = std::process::Command::new("sh")
        .args(["-c", &command])
        .current_dir(d)
        .env("PATH", path)
        .env("KUBECONFIG", kube.kubeconfig())
        .output()
        .unwrap();
    assert!(out.status.success(), "{command}: {out:?}");

    let mounted = d.join("etc-ocigate-policy");
    project_policy_volume(&kube, &mounted);
    let check = ocigate_exact(
        &[
            "policy",
            "check",
            mounted.join("policy.yaml").to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(
        check.code, 0,
        "the policy and its key reach the server: {check:?}"
    );
    assert!(check.stdout.contains("ok (1 rule)"), "{check:?}");
}

/// The commands of README.md's offline cosign block, continuation lines joined.
fn readme_cosign_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let start = readme
        .find("<!-- cosign-offline:start -->")
        .expect("README.md has the offline cosign block");
    let end = readme[start..].find("<!-- cosign-offline:end -->").unwrap() + start;
    let mut commands = Vec::new();
    let mut current = String::new();
    for line in readme[start..end].lines() {
        let line = line.trim();
        if line.is_empty()
            || line.starts_with('#')
            || line.starts_with("```")
            || line.starts_with("<!--")
        {
            continue;
        }
        current.push_str(line.trim_end_matches('\\'));
        current.push(' ');
        if !line.ends_with('\\') {
            commands.push(std::mem::take(&mut current));
        }
    }
    commands
}

#[test]
fn the_readme_cosign_commands_sign_what_ocigate_verifies_offline() {
    let test = "the_readme_cosign_commands_sign_what_ocigate_verifies_offline";
    let Some(cosign) = crate::cosign_peer::cosign_or_skip(test) else {
        return;
    };
    let reg = TestRegistry::start();
    let client = reg.client();
    for tag in ["v1", "v2"] {
        push_image(&client, &reg.reference(&format!("acme/app:{tag}")), tag);
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    crate::cosign_peer::cosign_keys(&cosign, d, "cosign");
    let commands = readme_cosign_commands();
    assert!(commands.len() >= 4, "{commands:?}");
    for command in commands {
        let command = command.replace("localhost:5000", &reg.host());
        let words: Vec<&str> = command.split_whitespace().collect();
        let run = match words[0] {
            "cosign" => crate::cosign_peer::cosign(&cosign, d, &words[1..]),
            "ocigate" => ocigate_in(Some(d), &words[1..], &[]),
            other => panic!("README's block runs cosign and ocigate only, not {other}"),
        };
        assert_eq!(run.code, 0, "{command}: {run:?}");
        if words[0] == "ocigate" {
            assert_eq!(run.stdout.matches("ALLOW ").count(), 2, "{run:?}");
        }
    }
}

#[test]
fn the_documented_key_fingerprint_command_gives_what_ocigate_prints() {
    let dir = tempfile::tempdir().unwrap();
    let (_, public) = generate_keys(dir.path(), "k");
    let docs = std::fs::read_to_string(repo_root().join("docs/policy.md")).unwrap();
    let command = "openssl pkey -pubin -in cosign.pub -outform DER | sha256sum";
    assert!(
        docs.contains(command),
        "docs/policy.md explains fingerprints"
    );
    let out = std::process::Command::new("sh")
        .args([
            "-c",
            &command.replace("cosign.pub", public.to_str().unwrap()),
        ])
        .output()
        .unwrap();
    if !out.status.success() {
        if strict() {
            panic!("openssl is part of Debian's ca-certificates: {out:?}");
        }
        eprintln!("SKIPPED the_documented_key_fingerprint_command…: no openssl; NOT checked");
        return;
    }
    let hex = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let ours = ocigate::trust::PublicKey::from_pem(&std::fs::read_to_string(&public).unwrap(), "k")
        .unwrap()
        .fingerprint();
    assert_eq!(ours, format!("sha256:{hex}"));
}
