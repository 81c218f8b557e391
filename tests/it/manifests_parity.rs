//! `verify --manifests` agrees with the webhook (issue #18, point 6): the webhook's excluded
//! namespaces are skipped and said, never denied; "found in" names the object's namespace and
//! JSON carries structured locations and full digests in signature locations; a HelmRelease's
//! HelmRepository that is not among the documents is read from the cluster with `--kubeconfig`
//! (mini-kube-apiserver), or said to be missing from the documents; and the webhook keeps a
//! "not found" for at most a couple of seconds.

use std::path::Path;

use crate::cluster::MiniCluster;
use crate::harness::*;

/// `verify --manifests FILE --policy P -o FORMAT EXTRA…` against `reg`.
fn verify_manifests(reg: &TestRegistry, policy: &Path, file: &Path, extra: &[&str]) -> Run {
    let h = reg.host();
    let mut args = vec![
        "verify",
        "--manifests",
        file.to_str().unwrap(),
        "--policy",
        policy.to_str().unwrap(),
        "--registry-plain-http",
        &h,
    ];
    args.extend_from_slice(extra);
    ocigate(&args, &[])
}

fn pod(name: &str, namespace: Option<&str>, image: &str) -> String {
    let ns = namespace.map_or(String::new(), |ns| format!(", namespace: {ns}"));
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}{ns}}}\n\
         spec:\n  containers:\n  - {{name: app, image: \"{image}\"}}\n"
    )
}

fn deployment(name: &str, namespace: &str, image: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: {namespace}}}\n\
         spec:\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    \
         spec:\n      containers:\n      - {{name: app, image: \"{image}\"}}\n"
    )
}

fn skipped_names(v: &serde_json::Value) -> Vec<String> {
    v["skipped"]
        .as_array()
        .map(|s| {
            s.iter()
                .map(|s| format!("{}/{}", s["object"]["namespace"], s["object"]["name"]))
                .map(|s| s.replace('"', ""))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn excluded_namespaces_are_skipped_and_locations_are_structured() {
    let reg = TestRegistry::start();
    let h = reg.host();
    let client = reg.client();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (key, public) = generate_keys(d, "k");
    let web = reg.reference("apps/web:v1");
    let old = reg.reference("apps/old:v1");
    push_image(&client, &web, "web");
    push_image(&client, &old, "old");
    // A cosign v3 bundle referrer: its location names the referrer manifest.
    let s = sign(&reg, &key, &web.to_string(), &["--format", "bundle"]);
    assert_eq!(s.code, 0, "{s:?}");
    let policy = d.join("policy.yaml");
    write_key_policy(&policy, &public, "all", &format!("{h}/**"));
    // What `kubectl get pods,deployments -A` shows: the control plane's Pod and ocigate's own
    // Deployment run unsigned images in the namespaces the webhook never sees.
    let all = d.join("all.yaml");
    let text = [
        pod("coredns", Some("kube-system"), &old.to_string()),
        deployment("ocigate", "ocigate-system", &old.to_string()),
        deployment("web", "team-a", &web.to_string()),
        pod("bare", None, &web.to_string()),
    ]
    .join("---\n");
    std::fs::write(&all, text).unwrap();

    let run = verify_manifests(&reg, &policy, &all, &["-o", "json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let v = run.json();
    assert_eq!(
        skipped_names(&v),
        ["kube-system/coredns", "ocigate-system/ocigate"],
        "{v:#}"
    );
    for s in v["skipped"].as_array().unwrap() {
        let ns = s["object"]["namespace"].as_str().unwrap();
        assert!(
            s["reason"]
                .as_str()
                .unwrap()
                .starts_with(&format!("namespace {ns} is excluded from the webhook")),
            "{v:#}"
        );
        assert_eq!(s["object"]["file"], all.to_str().unwrap(), "{v:#}");
    }
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 1, "one source, found twice: {v:#}");
    let r = &results[0];
    assert_eq!(r["verdict"], "allow", "{v:#}");
    let file = all.to_str().unwrap();
    assert_eq!(
        r["locations"],
        serde_json::json!([
            {"file": file, "kind": "Deployment", "namespace": "team-a", "name": "web",
             "fieldPath": "spec.template.spec.containers[0].image"},
            {"file": file, "kind": "Pod", "namespace": null, "name": "bare",
             "fieldPath": "spec.containers[0].image"},
        ]),
        "{v:#}"
    );
    // The signature's location names the referrer by its full digest (`referrers tag
    // sha256-<hex> sha256:<hex>` here: the registry has no referrers API).
    let location = r["signatures"][0]["location"].as_str().unwrap();
    let digest = location.rsplit(' ').next().unwrap();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71 && !location.contains('…'),
        "{location}"
    );

    // Text: each skipped object said, "found in" with the namespace.
    let run = verify_manifests(&reg, &policy, &all, &[]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .contains("SKIP Pod kube-system/coredns\n  namespace kube-system is excluded"),
        "{run:?}"
    );
    assert!(
        run.stdout.contains(&format!(
            "found in {file} Deployment team-a/web spec.template.spec.containers[0].image, \
             {file} Pod bare spec.containers[0].image"
        )),
        "{run:?}"
    );

    // Only kube-system excluded: ocigate's own Deployment is checked, and denied.
    let run = verify_manifests(
        &reg,
        &policy,
        &all,
        &["-o", "json", "--exclude-namespace", "kube-system"],
    );
    assert_eq!(run.code, 1, "{run:?}");
    let v = run.json();
    assert_eq!(skipped_names(&v), ["kube-system/coredns"], "{v:#}");
    // None excluded: both denied, nothing skipped.
    let run = verify_manifests(
        &reg,
        &policy,
        &all,
        &["-o", "json", "--exclude-namespace", ""],
    );
    assert_eq!(run.code, 1, "{run:?}");
    let v = run.json();
    assert!(v.get("skipped").is_none(), "{v:#}");
    let denied = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["verdict"] == "deny")
        .unwrap_or_else(|| panic!("{v:#}"));
    let namespaces: Vec<_> = denied["locations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(namespaces, ["kube-system", "ocigate-system"], "{v:#}");
    // Objects without a namespace take --namespace's: the bare Pod is in kube-system.
    let run = verify_manifests(
        &reg,
        &policy,
        &all,
        &["-o", "json", "--namespace", "kube-system"],
    );
    assert_eq!(run.code, 0, "{run:?}");
    let v = run.json();
    assert_eq!(
        skipped_names(&v),
        [
            "kube-system/coredns",
            "ocigate-system/ocigate",
            "kube-system/bare"
        ],
        "{v:#}"
    );
    // Not a namespace name: a usage error.
    let run = verify_manifests(&reg, &policy, &all, &["--exclude-namespace", "a/b"]);
    assert_eq!(run.code, 2, "{run:?}");
}

/// The Flux CRDs a HelmRelease and its HelmRepository need, established.
fn flux_crds(kube: &MiniCluster, corpus: &Path) {
    let crds = corpus.join("gitops/fluxcd/crds");
    for crd in [
        "source.toolkit.fluxcd.io_helmrepositories.yaml",
        "helm.toolkit.fluxcd.io_helmreleases.yaml",
    ] {
        let run = kube.kubectl(&["apply", "-f", crds.join(crd).to_str().unwrap()]);
        assert_eq!(run.code, 0, "{run:?}");
    }
    let run = kube.kubectl(&[
        "wait",
        "--for=condition=established",
        "--timeout=60s",
        "crd/helmrepositories.source.toolkit.fluxcd.io",
        "crd/helmreleases.helm.toolkit.fluxcd.io",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
}

fn helm_repository(name: &str, h: &str) -> String {
    format!(
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmRepository\nmetadata: {{name: {name}, namespace: flux}}\n\
         spec: {{type: oci, url: \"oci://{h}/charts\", interval: 5m}}\n"
    )
}

fn helm_release(name: &str, repository: &str) -> String {
    format!(
        "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata: {{name: {name}, namespace: flux}}\n\
         spec:\n  interval: 5m\n  chart:\n    spec:\n      chart: mychart\n      version: 1.0.0\n      \
         sourceRef: {{kind: HelmRepository, name: {repository}}}\n"
    )
}

/// A HelmRelease whose HelmRepository is only in the cluster: without `--kubeconfig` the CLI
/// says it is not among the documents; with it, it reads it as the webhook does and allows the
/// signed chart. The webhook denies a HelmRelease whose HelmRepository does not exist yet, and
/// admits it again soon after the HelmRepository is created (a "not found" is kept 2 s).
#[test]
fn helm_repositories_in_the_cluster_and_short_lived_not_found() {
    const TEST: &str = "helm_repositories_in_the_cluster_and_short_lived_not_found";
    let Some(kube) = MiniCluster::start_or_skip(TEST) else {
        return;
    };
    let Some(corpus) = corpus_or_skip(TEST) else {
        return;
    };
    let reg = TestRegistry::start();
    let h = reg.host();
    let client = reg.client();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (key, public) = generate_keys(d, "k");
    let chart = reg.reference("charts/mychart:1.0.0");
    push_image(&client, &chart, "chart");
    let s = sign(&reg, &key, &chart.to_string(), &[]);
    assert_eq!(s.code, 0, "{s:?}");
    let policy = d.join("policy.yaml");
    write_key_policy(&policy, &public, "all", &format!("{h}/**"));
    flux_crds(&kube, &corpus);
    kube.namespace(d, "flux");
    let run = kube.apply(d, "repo.yaml", &helm_repository("charts", &h), &[]);
    assert_eq!(run.code, 0, "{run:?}");

    // The CLI, with the release alone.
    let release = d.join("release.yaml");
    std::fs::write(&release, helm_release("rel", "charts")).unwrap();
    let run = verify_manifests(&reg, &policy, &release, &["-o", "json"]);
    assert_eq!(run.code, 1, "{run:?}");
    let reasons = run.json()["results"][0]["reasons"].to_string();
    assert!(
        reasons.contains("HelmRepository flux/charts not found: it is not among the documents")
            && reasons.contains("--kubeconfig"),
        "{run:?}"
    );
    let kubeconfig = kube.kubeconfig.to_str().unwrap();
    let run = verify_manifests(
        &reg,
        &policy,
        &release,
        &["-o", "json", "--kubeconfig", kubeconfig],
    );
    assert_eq!(run.code, 0, "{run:?}");
    let v = run.json();
    assert_eq!(v["results"][0]["verdict"], "allow", "{v:#}");
    assert!(
        v["results"][0]["reference"]
            .as_str()
            .unwrap()
            .contains("/charts/mychart:1.0.0"),
        "{v:#}"
    );
    // Read from the cluster and not there either: said so.
    std::fs::write(&release, helm_release("rel", "nowhere")).unwrap();
    let run = verify_manifests(&reg, &policy, &release, &["--kubeconfig", kubeconfig]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.contains(
            "HelmRepository flux/nowhere not found: neither among the documents nor in the cluster"
        ),
        "{run:?}"
    );

    // The webhook: denied while the repository does not exist…
    let tls = make_tls(d);
    let server = crate::webhook::start_serve(&policy, &tls, &h, &["--kubeconfig", kubeconfig]);
    kube.install_webhook(d, &server, &tls.ca);
    let late = helm_release("late", "late");
    let run = kube.apply_when_hooked(d, "late.yaml", &late, true);
    assert_ne!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("not found"), "{run:?}");
    // …and admitted soon after it is created: the "not found" is not kept for long.
    let run = kube.apply(d, "late-repo.yaml", &helm_repository("late", &h), &[]);
    assert_eq!(run.code, 0, "{run:?}");
    let created = std::time::Instant::now();
    let mut admitted = None;
    for _ in 0..60 {
        let run = kube.apply(d, "late.yaml", &late, &[]);
        if run.code == 0 {
            admitted = Some(created.elapsed());
            break;
        }
        assert!(run.stderr.contains("not found"), "{run:?}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let admitted = admitted.expect("the HelmRelease was never admitted");
    eprintln!("admitted {admitted:?} after the HelmRepository was created");
    // Kept 2 s (it was 10 s): a generous bound, well under the old lifetime.
    assert!(
        admitted < std::time::Duration::from_secs(8),
        "admitted only after {admitted:?}"
    );
}

/// A HelmRepository among the documents whose URL moves under a HelmChart of the cluster: with
/// `--kubeconfig` the CLI lists the namespace's HelmCharts as the webhook does and checks each
/// one's chart at the new URL (unsigned there: denied); a HelmChart among the documents with
/// the same name replaces the cluster's and is checked as itself; without `--kubeconfig` only
/// the documents' HelmCharts are checked (as the documented note says).
#[test]
fn a_moved_helm_repository_is_checked_through_the_clusters_helm_charts() {
    const TEST: &str = "a_moved_helm_repository_is_checked_through_the_clusters_helm_charts";
    let Some(kube) = MiniCluster::start_or_skip(TEST) else {
        return;
    };
    let Some(corpus) = corpus_or_skip(TEST) else {
        return;
    };
    let reg = TestRegistry::start();
    let h = reg.host();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (key, public) = generate_keys(d, "k");
    for (r, signed) in [
        ("charts/mychart:1.0.0", true),
        ("elsewhere/mychart:1.0.0", false),
    ] {
        let reference = reg.reference(r);
        push_image(&reg.client(), &reference, r);
        if signed {
            let s = sign(&reg, &key, &reference.to_string(), &[]);
            assert_eq!(s.code, 0, "{s:?}");
        }
    }
    let policy = d.join("policy.yaml");
    write_key_policy(&policy, &public, "all", &format!("{h}/**"));
    flux_crds(&kube, &corpus);
    let crd = corpus.join("gitops/fluxcd/crds/source.toolkit.fluxcd.io_helmcharts.yaml");
    let run = kube.kubectl(&["apply", "-f", crd.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{run:?}");
    let run = kube.kubectl(&[
        "wait",
        "--for=condition=established",
        "--timeout=60s",
        "crd/helmcharts.source.toolkit.fluxcd.io",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    kube.namespace(d, "flux");
    let chart = |repository: &str| {
        format!(
            "apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmChart\nmetadata: {{name: podinfo, namespace: flux}}\n\
             spec: {{chart: mychart, version: 1.0.0, interval: 5m, sourceRef: {{kind: HelmRepository, name: {repository}}}}}\n"
        )
    };
    let run = kube.apply(d, "repo.yaml", &helm_repository("charts", &h), &[]);
    assert_eq!(run.code, 0, "{run:?}");
    let run = kube.apply(d, "chart.yaml", &chart("charts"), &[]);
    assert_eq!(run.code, 0, "{run:?}");

    let moved = d.join("moved.yaml");
    std::fs::write(
        &moved,
        helm_repository("charts", &h).replace("/charts\"", "/elsewhere\""),
    )
    .unwrap();
    let kubeconfig = kube.kubeconfig.to_str().unwrap();
    let run = verify_manifests(&reg, &policy, &moved, &["--kubeconfig", kubeconfig]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.contains("elsewhere/mychart:1.0.0")
            && run.stdout.contains("(unsigned)")
            && run.stdout.contains("spec.url, for HelmChart flux/podinfo"),
        "{run:?}"
    );
    // Without the cluster: nothing to list (the documents' HelmCharts are checked as
    // themselves, and there are none).
    let run = verify_manifests(&reg, &policy, &moved, &[]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!run.stdout.contains("elsewhere"), "{run:?}");
    // The documents' own HelmChart of that name, from another repository, replaces the
    // cluster's: it is checked as itself, and the moved URL gives it nothing.
    let both = d.join("both.yaml");
    let signed = helm_repository("signed", &h);
    std::fs::write(
        &both,
        format!(
            "{}---\n{signed}---\n{}",
            std::fs::read_to_string(&moved).unwrap(),
            chart("signed")
        ),
    )
    .unwrap();
    let run = verify_manifests(&reg, &policy, &both, &["--kubeconfig", kubeconfig]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains("charts/mychart:1.0.0") && !run.stdout.contains("elsewhere"),
        "{run:?}"
    );

    // 500 HelmCharts of 70 KiB each: a page of 100 is over the 4 MiB a page may hold, so it
    // is asked again smaller, and every chart is checked (before: the list failed).
    kube.namespace(d, "big");
    let pad = "x".repeat(70 << 10);
    let items: Vec<serde_json::Value> = (0..500)
        .map(|i| {
            serde_json::json!({
                "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "HelmChart",
                "metadata": {"name": format!("c{i}"), "namespace": "big",
                             "annotations": {"example.com/pad": pad}},
                "spec": {"chart": "mychart", "version": "1.0.0", "interval": "5m",
                         "sourceRef": {"kind": "HelmRepository", "name": "charts"}},
            })
        })
        .collect();
    let list = d.join("big.json");
    std::fs::write(
        &list,
        serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string(),
    )
    .unwrap();
    let run = kube.kubectl(&["create", "-f", list.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let big = d.join("big.yaml");
    std::fs::write(
        &big,
        std::fs::read_to_string(&moved)
            .unwrap()
            .replace("namespace: flux", "namespace: big"),
    )
    .unwrap();
    let run = verify_manifests(
        &reg,
        &policy,
        &big,
        &["--kubeconfig", kubeconfig, "-o", "json"],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    let v = run.json();
    let result = &v["results"][0];
    assert_eq!(result["failure"], "unsigned", "{result}");
    let found = result["locations"].as_array().map_or(0, Vec::len);
    assert_eq!(found, 500, "every HelmChart was read: {result}");
}
