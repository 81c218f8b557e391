//! Rules per namespace (issue #20 point 1): team A's key counts only in team A's namespaces,
//! with a cluster-wide floor (the platform key) everywhere. Through kube's admission client
//! (`kwhclient -namespace`, `-namespace-label` for the webhook configuration's own selector),
//! through mini-kube-apiserver with real labelled Namespaces (the webhook reads the labels with
//! `get`, cached 10 s: a label change counts once that has passed), and through `verify`
//! (`--namespace`, `--namespace-label`, `--manifests` with Namespace documents).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cluster::MiniCluster;
use crate::harness::*;
use crate::webhook::{kube_tools_or_skip, kwhclient, start_serve, write};

/// Images: one signed by team A's key only, one by the platform key only.
struct Teams {
    reg: TestRegistry,
    dir: tempfile::TempDir,
    team_a_signed: String,
    platform_signed: String,
    team_a_pub: PathBuf,
    platform_pub: PathBuf,
}

fn teams() -> Teams {
    let reg = TestRegistry::start();
    let client = reg.client();
    let dir = tempfile::tempdir().unwrap();
    let (team_a_key, team_a_pub) = generate_keys(dir.path(), "team-a");
    let (platform_key, platform_pub) = generate_keys(dir.path(), "platform");
    let team_a_signed = reg.reference("apps/team-a-web:v1");
    let platform_signed = reg.reference("apps/ingress:v1");
    for (r, key) in [
        (&team_a_signed, &team_a_key),
        (&platform_signed, &platform_key),
    ] {
        push_image(&client, r, &r.to_string());
        let s = sign(&reg, key, &r.to_string(), &[]);
        assert_eq!(s.code, 0, "{s:?}");
    }
    Teams {
        team_a_signed: team_a_signed.to_string(),
        platform_signed: platform_signed.to_string(),
        reg,
        dir,
        team_a_pub,
        platform_pub,
    }
}

impl Teams {
    /// The policy of docs/policy.md's example: `team-a` (team A's key or the platform's) where
    /// `scope` says, and the `floor` (the platform key) everywhere else.
    fn policy(&self, scope: &str) -> PathBuf {
        let h = self.reg.host();
        let text = format!(
            "apiVersion: ocigate.dev/v1alpha1\nkind: Policy\nnoMatch: deny\n\
             keys:\n  - {{name: platform, path: {}}}\n  - {{name: team-a, path: {}}}\n\
             rules:\n  - name: floor\n    images: [\"{h}/apps/**\"]\n    \
             authorities: [{{key: {{name: platform}}, tlog: skip}}]\n  \
             - name: team-a\n    images: [\"{h}/apps/**\"]\n    {scope}\n    \
             authorities:\n      - {{key: {{name: team-a}}, tlog: skip}}\n      \
             - {{key: {{name: platform}}, tlog: skip}}\n",
            self.platform_pub.display(),
            self.team_a_pub.display()
        );
        write(self.dir.path(), "policy.yaml", &text)
    }

    fn pod(&self, name: &str, ns: &str, image: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}}}\n\
             spec:\n  containers:\n  - {{name: app, image: \"{image}\"}}\n"
        )
    }
}

#[test]
fn team_a_key_counts_only_in_team_a_namespaces_through_the_admission_client() {
    let test = "team_a_key_counts_only_in_team_a_namespaces_through_the_admission_client";
    let Some(k) = kube_tools_or_skip(test) else {
        return;
    };
    let t = teams();
    let d = t.dir.path();
    let policy = t.policy("namespaces: [\"team-a\", \"team-a-*\"]");
    let check = ocigate(&["policy", "check", policy.to_str().unwrap()], &[]);
    assert_eq!(check.code, 0, "{check:?}");
    let tls = make_tls(d);
    let server = start_serve(&policy, &tls, &t.reg.host(), &[]);
    let pod = write(d, "a.yaml", &t.pod("web", "team-a", &t.team_a_signed));
    for ns in ["team-a", "team-a-dev"] {
        let run = kwhclient(&k, &server, &tls, &pod, &["-namespace", ns]);
        assert_eq!(run.code, 0, "team A's key in {ns}: {run:?}");
    }
    for ns in ["team-b", "default"] {
        let run = kwhclient(&k, &server, &tls, &pod, &["-namespace", ns]);
        assert_eq!(run.code, 1, "team A's key in {ns}: {run:?}");
        assert!(run.stdout.contains("[untrusted]"), "{run:?}");
        assert!(run.stdout.contains("floor"), "the floor decided: {run:?}");
    }
    // The floor holds everywhere, team A's namespaces included.
    let platform = write(d, "p.yaml", &t.pod("ingress", "team-b", &t.platform_signed));
    for ns in ["team-a", "team-b"] {
        let run = kwhclient(&k, &server, &tls, &platform, &["-namespace", ns]);
        assert_eq!(run.code, 0, "platform key in {ns}: {run:?}");
    }
    // deploy/'s webhook configuration leaves out a namespace labelled ocigate.dev/ignore=true:
    // its own selector, decided by the API server before ocigate is asked.
    let config = webhook_config(d, &server, &tls);
    let hooked = [
        "-webhook-config",
        config.to_str().unwrap(),
        "-namespace",
        "team-b",
    ];
    let run = kwhclient(&k, &server, &tls, &pod, &hooked);
    assert_eq!(run.code, 1, "{run:?}");
    let ignored = [
        &hooked[..],
        &["-namespace-label", "ocigate.dev/ignore=true"],
    ]
    .concat();
    let run = kwhclient(&k, &server, &tls, &pod, &ignored);
    assert_eq!(run.code, 0, "an ignored namespace is never sent: {run:?}");
}

/// deploy/base's ValidatingWebhookConfiguration pointed at `server`.
fn webhook_config(d: &Path, server: &crate::webhook::Server, tls: &Tls) -> PathBuf {
    use base64::Engine as _;
    let text =
        std::fs::read_to_string(repo_root().join("deploy/base/validatingwebhook.yaml")).unwrap();
    let mut config = ocigate::extract::parse_documents(&text).unwrap().remove(0);
    let ca = base64::engine::general_purpose::STANDARD.encode(std::fs::read(&tls.ca).unwrap());
    for hook in config["webhooks"].as_array_mut().unwrap() {
        hook["clientConfig"] = serde_json::json!({"url": server.url("/validate"), "caBundle": ca});
    }
    write(d, "vwc.json", &config.to_string())
}

#[test]
fn a_selector_without_a_kubernetes_api_denies_rather_than_falls_back() {
    let test = "a_selector_without_a_kubernetes_api_denies_rather_than_falls_back";
    let Some(k) = kube_tools_or_skip(test) else {
        return;
    };
    let t = teams();
    let d = t.dir.path();
    let policy = t.policy("namespaceSelector: {matchLabels: {team: a}}");
    let tls = make_tls(d);
    let server = start_serve(&policy, &tls, &t.reg.host(), &[]);
    // Even an image the floor accepts: which rule applies depends on the labels.
    let pod = write(d, "p.yaml", &t.pod("ingress", "team-a", &t.platform_signed));
    let run = kwhclient(&k, &server, &tls, &pod, &["-namespace", "team-a"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout
            .contains("cannot read the labels of namespace team-a")
            && run.stdout.contains("no Kubernetes API"),
        "{run:?}"
    );
}

/// The webhook reads a namespace's labels only when the policy in force selects by label. A
/// policy that gains a selector between that read and the check (a reload) leaves the check
/// without labels: a rule that selects by label may apply, so the check is denied (failure
/// `policy`), never decided by the floor alone; with the labels read, the rules decide.
#[test]
fn a_selector_reloaded_during_a_check_denies_rather_than_falls_back() {
    use std::collections::BTreeMap;

    use ocigate::engine::{Engine, EngineConfig};
    use ocigate::failure::Failure;
    use ocigate::policy::{CompiledPolicy, NamespaceContext, Verdict};
    use ocigate::reference::ImageRef;

    let t = teams();
    let d = t.dir.path();
    let h = t.reg.host();
    let floor = format!(
        "apiVersion: ocigate.dev/v1alpha1\nkind: Policy\nnoMatch: deny\n\
         keys:\n  - {{name: platform, path: {}}}\n  - {{name: team-a, path: {}}}\n\
         rules:\n  - name: floor\n    images: [\"{h}/apps/**\"]\n    \
         authorities: [{{key: {{name: platform}}, tlog: skip}}]\n",
        t.platform_pub.display(),
        t.team_a_pub.display()
    );
    // Production namespaces (by label) accept team A's key only: stricter than the floor.
    let prod = format!(
        "{floor}  - name: prod\n    images: [\"{h}/apps/**\"]\n    \
         namespaceSelector: {{matchLabels: {{tier: prod}}}}\n    \
         authorities: [{{key: {{name: team-a}}, tlog: skip}}]\n"
    );
    let load = |name: &str, text: &str| CompiledPolicy::from_file(&write(d, name, text)).unwrap();
    let engine = Engine::new(
        t.reg.client(),
        load("floor.yaml", &floor),
        EngineConfig::default(),
    );
    let image = ImageRef::parse(&t.platform_signed).unwrap();
    let check = |ns: &NamespaceContext| {
        block_on(engine.check_in(&image, Some(ns), Duration::from_secs(20)))
    };
    // What the webhook reads under the floor alone: the name, no labels.
    assert!(!engine.policy().policy().needs_namespace_labels());
    let unread = NamespaceContext::named("payments");
    let before = check(&unread);
    assert_eq!(before.verdict, Verdict::Allow, "{before:?}");
    engine.set_policy(load("prod.yaml", &prod));
    let during = check(&unread);
    assert_eq!(during.verdict, Verdict::Deny, "{during:?}");
    assert_eq!(during.failure, Some(Failure::Policy), "{during:?}");
    let reason = during.reasons.join("\n");
    assert!(
        reason.contains("labels of the namespace were not read")
            && reason.contains("\"prod\"")
            && reason.contains("namespace payments"),
        "{reason}"
    );
    // With its labels read, the rules decide: prod's key in a prod namespace, else the floor.
    let labelled = |tier: &str| {
        let labels = BTreeMap::from([("tier".to_string(), tier.to_string())]);
        NamespaceContext::with_labels("payments", labels)
    };
    let in_prod = check(&labelled("prod"));
    assert_eq!(in_prod.verdict, Verdict::Deny, "{in_prod:?}");
    assert_ne!(in_prod.failure, Some(Failure::Policy), "{in_prod:?}");
    let in_dev = check(&labelled("dev"));
    assert_eq!(in_dev.verdict, Verdict::Allow, "{in_dev:?}");
}

#[test]
fn labelled_namespaces_in_a_cluster_and_a_label_change_after_the_cache() {
    let test = "labelled_namespaces_in_a_cluster_and_a_label_change_after_the_cache";
    let Some(kube) = MiniCluster::start_or_skip(test) else {
        return;
    };
    let Some(k) = kube_tools_or_skip(test) else {
        return;
    };
    let t = teams();
    let d = t.dir.path();
    let policy = t.policy("namespaceSelector: {matchLabels: {team: a}}");
    let tls = make_tls(d);
    let kubeconfig = kube.kubeconfig().to_str().unwrap().to_string();
    let server = start_serve(&policy, &tls, &t.reg.host(), &["--kubeconfig", &kubeconfig]);
    for (ns, team) in [("payments", "a"), ("search", "b"), ("ocigate-system", "x")] {
        let yaml = format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels: {{team: {team}}}\n"
        );
        let run = kube.apply(d, &format!("ns-{ns}.yaml"), &yaml, &[]);
        assert_eq!(run.code, 0, "{run:?}");
    }
    kube.install_webhook(d, &server, &tls.ca);
    let a_in = |ns: &str, name: &str| t.pod(name, ns, &t.team_a_signed);
    // Team A's key in a namespace labelled team=b: the floor denies it (once the webhook
    // configuration is seen).
    let run = kube.apply_when_hooked(d, "b1.yaml", &a_in("search", "web1"), true);
    assert_ne!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("untrusted"), "{run:?}");
    // In the namespace labelled team=a it is admitted.
    let run = kube.apply(d, "a1.yaml", &a_in("payments", "web1"), &[]);
    assert_eq!(run.code, 0, "{run:?}");
    // The platform key passes the floor in either.
    let platform = t.pod("ingress", "search", &t.platform_signed);
    let run = kube.apply(d, "p1.yaml", &platform, &[]);
    assert_eq!(run.code, 0, "{run:?}");
    // A namespace that does not exist (sent directly: the API server itself refuses objects
    // in one) is denied, never decided by the cluster-wide rules alone.
    let ghost = write(d, "ghost.yaml", &a_in("ghost", "web"));
    let run = kwhclient(&k, &server, &tls, &ghost, &["-namespace", "ghost"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.contains("the Namespace does not exist"),
        "{run:?}"
    );
    // Relabel search as team A's: within the cache's 10 s (and a margin) it counts.
    let run = kube.kubectl(&["label", "namespace", "search", "team=a", "--overwrite"]);
    assert_eq!(run.code, 0, "{run:?}");
    let relabelled = Instant::now();
    let run = loop {
        let run = kube.apply(d, "b2.yaml", &a_in("search", "web2"), &[]);
        if run.code == 0 || relabelled.elapsed() > Duration::from_secs(25) {
            break run;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(run.code, 0, "the new label never counted: {run:?}");
}

#[test]
fn verify_evaluates_as_for_a_namespace() {
    let t = teams();
    let policy = t.policy("namespaceSelector: {matchLabels: {team: a}}");
    let p = policy.to_str().unwrap();
    let image = t.team_a_signed.as_str();
    // Without --namespace only the cluster-wide floor applies.
    let run = verify(&t.reg, &["--policy", p, image]);
    assert_eq!(run.code, 1, "{run:?}");
    let labelled = ["--namespace", "payments", "--namespace-label", "team=a"];
    let run = verify(
        &t.reg,
        &[&["--policy", p, "-o", "json", image], &labelled[..]].concat(),
    );
    assert_eq!(run.code, 0, "{run:?}");
    let json = run.json();
    let result = &json["results"][0];
    assert_eq!(result["namespace"], "payments", "{json}");
    assert_eq!(result["rule"], "team-a", "{json}");
    // The namespace's name alone: the selector does not hold, the floor decides.
    let run = verify(&t.reg, &["--policy", p, "--namespace", "payments", image]);
    assert_eq!(run.code, 1, "{run:?}");
    // A bad label is refused at parse time.
    let run = verify(
        &t.reg,
        &[
            "--policy",
            p,
            "--namespace",
            "x",
            "--namespace-label",
            "a b=c",
            image,
        ],
    );
    assert_eq!(run.code, 2, "{run:?}");
}

#[test]
fn verify_manifests_uses_each_objects_namespace_and_namespace_documents() {
    let t = teams();
    let d = t.dir.path();
    let policy = t.policy("namespaceSelector: {matchLabels: {team: a}}");
    let p = policy.to_str().unwrap();
    let manifests = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: payments, labels: {{team: a}}}}\n---\n{}---\n{}",
        t.pod("web", "payments", &t.team_a_signed),
        t.pod("web", "search", &t.team_a_signed)
    );
    let file = write(d, "all.yaml", &manifests);
    let args = [
        "--policy",
        p,
        "-o",
        "json",
        "--manifests",
        file.to_str().unwrap(),
    ];
    let run = verify(&t.reg, &args);
    assert_eq!(run.code, 1, "search has no Namespace document: {run:?}");
    let json = run.json();
    let results = json["results"].as_array().unwrap();
    let by_ns = |ns: &str| {
        results
            .iter()
            .find(|r| r["namespace"] == ns)
            .unwrap_or_else(|| panic!("no result for {ns}: {json}"))
    };
    // One image, two namespaces: checked once in each.
    assert_eq!(by_ns("payments")["verdict"], "allow", "{json}");
    let search = by_ns("search");
    assert_eq!(search["verdict"], "deny", "{json}");
    assert_eq!(search["failure"], "policy", "{json}");
    assert!(
        search["reasons"][0]
            .as_str()
            .unwrap()
            .contains("labels of namespace search"),
        "{json}"
    );
    // Labelled by its document, search is team B's: the floor decides.
    let labelled = format!(
        "{manifests}---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: search, labels: {{team: b}}}}\n"
    );
    write(d, "all.yaml", &labelled);
    let run = verify(&t.reg, &args);
    assert_eq!(run.code, 1, "{run:?}");
    let json = run.json();
    let search = json["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["namespace"] == "search")
        .cloned()
        .unwrap();
    assert_eq!(search["failure"], "untrusted", "{json}");
    assert_eq!(search["rule"], "floor", "{json}");
}
