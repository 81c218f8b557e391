//! Flux sources the gate cannot verify and references it does not follow: a HelmRelease whose
//! chart comes from a GitRepository (or Bucket, ExternalArtifact, HTTP HelmRepository) is
//! admitted with a warning, never silently, through kube's own admission client; and
//! `verify --manifests` applies the webhook's rules (a warn result for such a source, a
//! cross-namespace reference denied unless `--allow-cross-namespace-refs`); a HelmRepository's
//! HelmCharts listed from mini-kube-apiserver where only v1beta2 is served, and bounded.

use crate::harness::*;
use std::path::PathBuf;

use crate::webhook::{Server, kube_tools_or_skip, kwhclient, start_serve};

fn release(name: &str, namespace: &str, source_ref: &str) -> String {
    format!(
        "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata: {{name: {name}, namespace: {namespace}}}\n\
         spec:\n  interval: 5m\n  chart:\n    spec:\n      chart: mychart\n      version: 1.0.0\n      \
         sourceRef: {source_ref}\n"
    )
}

/// kube's admission tools, a registry, and `serve` without a Kubernetes API whose policy has
/// one rule for that registry (noMatch: deny).
struct Served {
    k: PathBuf,
    reg: TestRegistry,
    dir: tempfile::TempDir,
    tls: Tls,
    server: Server,
}

fn served(test: &str) -> Option<Served> {
    let k = kube_tools_or_skip(test)?;
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_, public) = generate_keys(d, "k");
    let policy = d.join("policy.yaml");
    write_key_policy(&policy, &public, "all", &format!("{}/**", reg.host()));
    let tls = make_tls(d);
    let server = start_serve(&policy, &tls, &reg.host(), &[]);
    Some(Served {
        k,
        reg,
        dir,
        tls,
        server,
    })
}

#[test]
fn a_helm_release_from_a_git_repository_is_admitted_with_a_warning() {
    let Some(Served {
        k,
        dir,
        tls,
        server,
        ..
    }) = served("a_helm_release_from_a_git_repository_is_admitted_with_a_warning")
    else {
        return;
    };
    let d = dir.path();
    for (kind, chart_ref) in [
        ("GitRepository", false),
        ("Bucket", false),
        ("ExternalArtifact", true),
    ] {
        let text = if chart_ref {
            "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata: {name: rel, namespace: apps}\n\
             spec:\n  interval: 5m\n  chartRef: {kind: ExternalArtifact, name: src}\n"
                .to_string()
        } else {
            release("rel", "apps", &format!("{{kind: {kind}, name: src}}"))
        };
        let f = d.join(format!("{kind}.yaml"));
        std::fs::write(&f, text).unwrap();
        let run = kwhclient(&k, &server, &tls, &f, &[]);
        assert_eq!(run.code, 0, "{run:?}");
        assert!(run.stdout.contains("ADMITTED"), "{run:?}");
        let warning = run
            .stdout
            .lines()
            .find(|l| l.starts_with("WARNING:"))
            .unwrap_or_else(|| panic!("{kind}: no warning: {run:?}"));
        assert!(
            warning.contains(&format!("{kind} apps/src")) && warning.contains("not an OCI source"),
            "{warning}"
        );
    }
}

#[test]
fn verify_manifests_warns_on_git_sources_and_refuses_cross_namespace_refs() {
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
    let repo = format!(
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmRepository\nmetadata: {{name: charts, namespace: flux}}\n\
         spec: {{type: oci, url: \"oci://{h}/charts\", interval: 5m}}\n"
    );
    let verify_manifests = |name: &str, text: String, extra: &[&str]| {
        let f = d.join(name);
        std::fs::write(&f, text).unwrap();
        let mut args = vec![
            "verify",
            "--manifests",
            f.to_str().unwrap(),
            "--policy",
            policy.to_str().unwrap(),
            "--registry-plain-http",
            &h,
            "-o",
            "json",
        ];
        args.extend_from_slice(extra);
        ocigate(&args, &[])
    };

    // A chart from a GitRepository: a warn result, exit 0.
    let run = verify_manifests(
        "git.yaml",
        release("rel", "apps", "{kind: GitRepository, name: src}"),
        &[],
    );
    assert_eq!(run.code, 0, "{run:?}");
    let v = run.json();
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 1, "{v}");
    assert_eq!(results[0]["reference"], "GitRepository apps/src", "{v}");
    assert_eq!(results[0]["verdict"], "warn", "{v}");
    assert!(
        results[0]["reasons"][0]
            .as_str()
            .unwrap()
            .contains("not an OCI source"),
        "{v}"
    );

    // A release in apps using flux's repository: denied, nothing of the repository shown.
    let cross = format!(
        "{repo}---\n{}",
        release(
            "rel",
            "apps",
            "{kind: HelmRepository, name: charts, namespace: flux}"
        )
    );
    let run = verify_manifests("cross.yaml", cross.clone(), &[]);
    assert_eq!(run.code, 1, "{run:?}");
    let v = run.json();
    let r = &v["results"][0];
    assert_eq!(r["verdict"], "deny", "{v}");
    let reasons = r["reasons"].to_string();
    assert!(
        reasons.contains("cross-namespace references are refused"),
        "{v}"
    );
    assert!(!reasons.contains("/charts/mychart"), "{v}");
    // Allowed: the chart is found and verified.
    let run = verify_manifests("cross.yaml", cross, &["--allow-cross-namespace-refs"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.json()["results"][0]["verdict"], "allow", "{run:?}");
}

/// A HelmRepository is checked through the HelmCharts that use it, which needs the Kubernetes
/// API (to list them): without one, moving its URL is refused (nothing could be checked), while
/// an UPDATE that keeps its URL and type (Flux's own: a finalizer, a reconcile request) moves no
/// chart and is admitted without listing anything.
#[test]
fn a_helm_repository_update_that_keeps_its_url_lists_nothing() {
    // No --kubeconfig: no Kubernetes API to list HelmCharts with.
    let Some(Served {
        k,
        reg,
        dir,
        tls,
        server,
    }) = served("a_helm_repository_update_that_keeps_its_url_lists_nothing")
    else {
        return;
    };
    let d = dir.path();
    let repo = |url: &str, extra: &str| {
        format!(
            "apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmRepository\nmetadata: {{name: charts, \
             namespace: flux{extra}}}\nspec: {{type: oci, url: \"oci://{}/{url}\", interval: 5m}}\n",
            reg.host()
        )
    };
    let old = d.join("old.yaml");
    std::fs::write(&old, repo("charts", "")).unwrap();
    let update = |name: &str, text: String| {
        let f = d.join(name);
        std::fs::write(&f, text).unwrap();
        let old = old.to_str().unwrap();
        let args = [
            "-operation",
            "UPDATE",
            "-old",
            old,
            "-unstructured",
            "-resource",
            "helmrepositories",
        ];
        kwhclient(&k, &server, &tls, &f, &args)
    };
    let kept = update(
        "kept.yaml",
        repo("charts", ", finalizers: [finalizers.fluxcd.io]"),
    );
    assert_eq!(kept.code, 0, "{kept:?}");
    let moved = update("moved.yaml", repo("elsewhere", ""));
    assert_eq!(moved.code, 1, "{moved:?}");
    assert!(
        moved.stdout.contains("HelmChart") && moved.stdout.contains("no Kubernetes API"),
        "{moved:?}"
    );
}

/// mini-kube-apiserver, kube's admission tools, a registry holding `charts/mychart:1.0.0`
/// (signed) and `elsewhere/mychart:1.0.0` (not), and `serve` reading that cluster with a policy
/// wanting the signing key for the registry.
struct Charts {
    kube: crate::cluster::MiniCluster,
    k: PathBuf,
    reg: TestRegistry,
    dir: tempfile::TempDir,
    tls: Tls,
    server: Server,
}

fn charts_in_a_cluster(test: &str) -> Option<Charts> {
    let kube = crate::cluster::MiniCluster::start_or_skip(test)?;
    let k = kube_tools_or_skip(test)?;
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
    let tls = make_tls(d);
    let kubeconfig = kube.kubeconfig().to_str().unwrap().to_string();
    let server = start_serve(&policy, &tls, &h, &["--kubeconfig", &kubeconfig]);
    Some(Charts {
        kube,
        k,
        reg,
        dir,
        tls,
        server,
    })
}

/// HelmCharts served as v1beta2 only (Flux before 2.3): the webhook lists a HelmRepository's
/// HelmCharts there when v1 is not served, and a URL moved under one of them is checked at the
/// new URL; a namespace with more HelmCharts than are read for one HelmRepository (1,000, read
/// 100 a page) is denied, not admitted on a partial reading.
#[test]
fn helm_charts_listed_as_v1beta2_and_bounded() {
    let Some(Charts {
        kube,
        k,
        reg,
        dir,
        tls,
        server,
    }) = charts_in_a_cluster("helm_charts_listed_as_v1beta2_and_bounded")
    else {
        return;
    };
    let (h, d) = (reg.host(), dir.path());

    let crd = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n\
               metadata: {name: helmcharts.source.toolkit.fluxcd.io}\nspec:\n  \
               group: source.toolkit.fluxcd.io\n  scope: Namespaced\n  \
               names: {kind: HelmChart, listKind: HelmChartList, plural: helmcharts, singular: helmchart}\n  \
               versions:\n  - name: v1beta2\n    served: true\n    storage: true\n    \
               schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}\n";
    let run = kube.apply(d, "crd.yaml", crd, &[]);
    assert_eq!(run.code, 0, "{run:?}");
    let run = kube.kubectl(&[
        "wait",
        "--for=condition=established",
        "--timeout=60s",
        "crd/helmcharts.source.toolkit.fluxcd.io",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    let chart = |name: &str, ns: &str| {
        serde_json::json!({
            "apiVersion": "source.toolkit.fluxcd.io/v1beta2", "kind": "HelmChart",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"chart": "mychart", "version": "1.0.0", "interval": "5m",
                     "sourceRef": {"kind": "HelmRepository", "name": "charts"}},
        })
    };
    let mut many: Vec<_> = (0..1_001)
        .map(|i| chart(&format!("c{i}"), "many"))
        .collect();
    many.push(chart("podinfo", "flux"));
    for ns in ["flux", "many"] {
        kube.namespace(d, ns);
    }
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": many});
    let f = d.join("charts.json");
    std::fs::write(&f, list.to_string()).unwrap();
    let run = kube.kubectl(&["create", "-f", f.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{run:?}");

    let repo = |ns: &str, path: &str| {
        format!(
            "apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmRepository\nmetadata: {{name: charts, \
             namespace: {ns}}}\nspec: {{type: oci, url: \"oci://{h}/{path}\", interval: 5m}}\n"
        )
    };
    let moved = |ns: &str| {
        let old = d.join(format!("old-{ns}.yaml"));
        std::fs::write(&old, repo(ns, "charts")).unwrap();
        let new = d.join(format!("new-{ns}.yaml"));
        std::fs::write(&new, repo(ns, "elsewhere")).unwrap();
        let args = [
            "-operation",
            "UPDATE",
            "-old",
            old.to_str().unwrap(),
            "-unstructured",
            "-resource",
            "helmrepositories",
        ];
        kwhclient(&k, &server, &tls, &new, &args)
    };
    let run = moved("flux");
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.contains("HelmChart flux/podinfo")
            && run.stdout.contains("elsewhere/mychart:1.0.0")
            && run.stdout.contains("[unsigned]"),
        "the v1beta2 HelmChart was listed and its chart checked at the new URL: {run:?}"
    );
    let run = moved("many");
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.contains("1001 HelmCharts, more than the 1000"),
        "{run:?}"
    );
}

/// A HelmRepository read to resolve a HelmRelease is not believed later: its URL moved (an
/// UPDATE the webhook admitted, with no HelmChart yet to re-check), the HelmChart that
/// helm-controller then creates is checked at the new URL, not at the one read moments before
/// (a helper's review: a 10 s answer cache admitted it against the old one).
#[test]
fn a_helm_repository_read_earlier_is_read_again_for_its_helm_chart() {
    let Some(Charts {
        kube,
        k,
        reg,
        dir,
        tls,
        server,
    }) = charts_in_a_cluster("a_helm_repository_read_earlier_is_read_again_for_its_helm_chart")
    else {
        return;
    };
    let (h, d) = (reg.host(), dir.path());
    for (plural, kind) in [
        ("helmcharts", "HelmChart"),
        ("helmrepositories", "HelmRepository"),
    ] {
        let crd = format!(
            "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n\
             metadata: {{name: {plural}.source.toolkit.fluxcd.io}}\nspec:\n  \
             group: source.toolkit.fluxcd.io\n  scope: Namespaced\n  \
             names: {{kind: {kind}, listKind: {kind}List, plural: {plural}, singular: {}}}\n  \
             versions:\n  - name: v1\n    served: true\n    storage: true\n    \
             schema: {{openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}}}\n",
            kind.to_lowercase()
        );
        let run = kube.apply(d, &format!("{plural}.yaml"), &crd, &[]);
        assert_eq!(run.code, 0, "{run:?}");
        let crd = format!("crd/{plural}.source.toolkit.fluxcd.io");
        let run = kube.kubectl(&["wait", "--for=condition=established", "--timeout=60s", &crd]);
        assert_eq!(run.code, 0, "{run:?}");
    }
    kube.namespace(d, "flux");
    let repo = |path: &str| {
        format!(
            "apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmRepository\n\
             metadata: {{name: charts, namespace: flux}}\n\
             spec: {{type: oci, url: \"oci://{h}/{path}\", interval: 5m}}\n"
        )
    };
    let run = kube.apply(d, "repo.yaml", &repo("charts"), &[]);
    assert_eq!(run.code, 0, "{run:?}");
    let unstructured = |resource: &'static str| ["-unstructured", "-resource", resource];
    // A HelmRelease naming it: the HelmRepository is read (URL .../charts), admitted.
    let rel = d.join("rel.yaml");
    let text = release("app", "flux", "{kind: HelmRepository, name: charts}");
    std::fs::write(&rel, text).unwrap();
    let run = kwhclient(&k, &server, &tls, &rel, &unstructured("helmreleases"));
    assert_eq!(run.code, 0, "{run:?}");
    // The HelmRepository moves to .../elsewhere (no HelmChart yet to re-check).
    let run = kube.apply(d, "repo2.yaml", &repo("elsewhere"), &[]);
    assert_eq!(run.code, 0, "{run:?}");
    // helm-controller creates the HelmChart: checked at the new URL, where nothing is signed.
    let chart = d.join("chart.yaml");
    std::fs::write(
        &chart,
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmChart\n\
         metadata: {name: flux-app, namespace: flux}\n\
         spec: {chart: mychart, version: 1.0.0, interval: 5m, \
         sourceRef: {kind: HelmRepository, name: charts}}\n",
    )
    .unwrap();
    let run = kwhclient(&k, &server, &tls, &chart, &unstructured("helmcharts"));
    assert_eq!(run.code, 1, "checked at the URL read before: {run:?}");
    assert!(run.stdout.contains("elsewhere/mychart"), "{run:?}");
}
