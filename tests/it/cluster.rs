//! The webhook in a (small) cluster: mini-kube-apiserver (k8s.io/apiserver with the real
//! admission chain and CRDs, on etcd; ../shared/tools/kube) calls `ocigate serve` through the
//! webhook configurations that `deploy/` renders (patched to `clientConfig.url`: the mini
//! server has no Service routing), and `kubectl apply` reaches it as in a cluster. The webhook
//! reads a HelmRelease's HelmRepository back from that API.
//!
//! Where the mini server differs from kube-apiserver: built-in kinds are neither defaulted nor
//! validated (every field the webhook reads is set here), namespaces do not get their
//! `kubernetes.io/metadata.name` label automatically (set here, as kube-apiserver would), and
//! authorization is AlwaysAllow (the RBAC of deploy/ is not exercised).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;

use crate::harness::make_tls;
use crate::harness::*;
use crate::webhook::start_serve;

pub(crate) struct MiniCluster {
    pub(crate) kubeconfig: PathBuf,
    k: PathBuf,
    run: tempfile::TempDir,
    kubectl: PathBuf,
}

impl Drop for MiniCluster {
    fn drop(&mut self) {
        let _ = Command::new(repo_root().join("../shared/tools/kube/run.sh"))
            .arg("stop")
            .env("K", &self.k)
            .env("RUN", self.run.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl MiniCluster {
    pub(crate) fn start_or_skip(test: &str) -> Option<Self> {
        let k = std::env::var_os("OCIGATE_TEST_KUBE")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/ocigate-kube"))
            })?;
        let kubectl = [
            std::env::var_os("OCIGATE_TEST_KUBECTL").map(PathBuf::from),
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/ocigate-tools/venv/bin/kubectl")),
        ]
        .into_iter()
        .flatten()
        .find(|p| p.is_file());
        let ready = k.join("bin/mini-kube-apiserver").is_file();
        let (true, Some(kubectl)) = (ready, kubectl) else {
            if strict() {
                panic!(
                    "{test}: mini-kube-apiserver or kubectl missing; scripts/test.sh provides both"
                );
            }
            eprintln!(
                "SKIPPED {test}: mini-kube-apiserver or kubectl not available; these cluster checks did NOT run"
            );
            return None;
        };
        let run = tempfile::tempdir().unwrap();
        let out = Command::new(repo_root().join("../shared/tools/kube/run.sh"))
            .arg("start")
            .env("K", &k)
            .env("RUN", run.path())
            .stderr(Stdio::null())
            .output()
            .expect("run.sh start");
        let kubeconfig = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .map(PathBuf::from)
            .filter(|p| p.is_file())
            .unwrap_or_else(|| panic!("mini-kube-apiserver did not start: {out:?}"));
        Some(MiniCluster {
            kubeconfig,
            k,
            run,
            kubectl,
        })
    }

    /// The kubeconfig of the running API server.
    pub(crate) fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The kubectl the cluster is driven with.
    pub(crate) fn kubectl_path(&self) -> &Path {
        &self.kubectl
    }

    pub(crate) fn kubectl(&self, args: &[&str]) -> Run {
        let out = Command::new(&self.kubectl)
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(Stdio::null())
            .output()
            .expect("kubectl");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// deploy/'s webhook configurations (validating and mutating: the base installs both),
    /// pointed at `server`.
    pub(crate) fn install_webhook(&self, d: &Path, server: &crate::webhook::Server, ca: &Path) {
        let rendered = self.kubectl(&["kustomize", repo_root().join("deploy").to_str().unwrap()]);
        assert_eq!(rendered.code, 0, "{rendered:?}");
        let docs = ocigate::extract::parse_documents(&rendered.stdout).unwrap();
        let ca = base64::engine::general_purpose::STANDARD.encode(std::fs::read(ca).unwrap());
        for (kind, path) in [
            ("MutatingWebhookConfiguration", "/mutate"),
            ("ValidatingWebhookConfiguration", "/validate"),
        ] {
            let mut config = docs
                .iter()
                .find(|doc| doc["kind"] == kind)
                .unwrap_or_else(|| panic!("deploy/ renders a {kind}"))
                .clone();
            for hook in config["webhooks"].as_array_mut().unwrap() {
                hook["clientConfig"] = serde_json::json!({"url": server.url(path), "caBundle": ca});
            }
            let run = self.apply(d, &format!("{kind}.json"), &config.to_string(), &[]);
            assert_eq!(run.code, 0, "{run:?}");
        }
    }

    /// A `kubernetes.io/dockerconfigjson` Secret `regcred` in `ns` with `user:secret` for `host`.
    pub(crate) fn pull_secret(&self, d: &Path, ns: &str, host: &str, user: &str, secret: &str) {
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}"));
        let config = base64::engine::general_purpose::STANDARD
            .encode(format!(r#"{{"auths":{{"{host}":{{"auth":"{auth}"}}}}}}"#));
        let run = self.apply(
            d,
            &format!("secret-{ns}.yaml"),
            &format!(
                "apiVersion: v1\nkind: Secret\nmetadata: {{name: regcred, namespace: {ns}}}\n\
                 type: kubernetes.io/dockerconfigjson\ndata: {{.dockerconfigjson: {config}}}\n"
            ),
            &[],
        );
        assert_eq!(run.code, 0, "{run:?}");
    }

    pub(crate) fn namespace(&self, d: &Path, ns: &str) {
        let run = self.apply(
            d,
            &format!("ns-{ns}.yaml"),
            &format!(
                "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels: {{kubernetes.io/metadata.name: {ns}}}\n"
            ),
            &[],
        );
        assert_eq!(run.code, 0, "{run:?}");
    }

    /// Apply until the webhook answers (the admission plugin sees a new configuration after a
    /// moment): at most 10 s.
    pub(crate) fn apply_when_hooked(&self, d: &Path, name: &str, yaml: &str, denied: bool) -> Run {
        let mut run = self.apply(d, name, yaml, &[]);
        for _ in 0..50 {
            if (run.code != 0) == denied {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
            let _ = self.kubectl(&[
                "delete",
                "-f",
                d.join(name).to_str().unwrap(),
                "--wait=false",
            ]);
            run = self.apply(d, name, yaml, &[]);
        }
        run
    }

    pub(crate) fn apply(&self, dir: &Path, name: &str, yaml: &str, extra: &[&str]) -> Run {
        let f = dir.join(name);
        std::fs::write(&f, yaml).unwrap();
        let mut args = vec!["apply", "-f", f.to_str().unwrap()];
        args.extend_from_slice(extra);
        self.kubectl(&args)
    }
}

#[test]
fn kubectl_apply_reaches_the_webhook_through_the_admission_chain() {
    let Some(kube) =
        MiniCluster::start_or_skip("kubectl_apply_reaches_the_webhook_through_the_admission_chain")
    else {
        return;
    };
    let Some(corpus) =
        corpus_or_skip("kubectl_apply_reaches_the_webhook_through_the_admission_chain")
    else {
        return;
    };
    // Registry: signed and unsigned images and charts.
    let reg = TestRegistry::start();
    let h = reg.host();
    let client = reg.client();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (key, public) = generate_keys(d, "k");
    for (r, signed) in [
        ("apps/web:v1", true),
        ("apps/old:v1", false),
        ("charts/mychart:1.0.0", true),
        ("charts/other:1.0.0", false),
        ("elsewhere/mychart:1.0.0", false),
    ] {
        let reference = reg.reference(r);
        push_image(&client, &reference, r);
        if signed {
            let s = sign(&reg, &key, &reference.to_string(), &[]);
            assert_eq!(s.code, 0, "{s:?}");
        }
    }
    let policy = d.join("policy.yaml");
    write_key_policy(&policy, &public, "all", &format!("{h}/**"));
    let tls = make_tls(d);
    let server = start_serve(
        &policy,
        &tls,
        &h,
        &["--kubeconfig", kube.kubeconfig.to_str().unwrap()],
    );

    // The Flux CRDs from the corpus, and the namespaces.
    let crds = corpus.join("gitops/fluxcd/crds");
    for crd in [
        "source.toolkit.fluxcd.io_helmrepositories.yaml",
        "source.toolkit.fluxcd.io_helmcharts.yaml",
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
        "crd/helmcharts.source.toolkit.fluxcd.io",
        "crd/helmreleases.helm.toolkit.fluxcd.io",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    for ns in ["apps", "flux", "ocigate-system"] {
        kube.namespace(d, ns);
    }

    kube.install_webhook(d, &server, &tls.ca);

    let pod = |name: &str, ns: &str, image: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}}}\n\
             spec:\n  containers:\n  - {{name: app, image: \"{image}\"}}\n"
        )
    };
    // The webhook configuration takes a moment to be seen by the admission plugin.
    let mut admitted = kube.apply(
        d,
        "ok.yaml",
        &pod("ok", "apps", &format!("{h}/apps/web:v1")),
        &[],
    );
    let mut denied = kube.apply(
        d,
        "bad.yaml",
        &pod("bad", "apps", &format!("{h}/apps/old:v1")),
        &[],
    );
    for _ in 0..50 {
        if denied.code != 0 {
            break;
        }
        let _ = kube.kubectl(&["delete", "pod", "bad", "-n", "apps", "--wait=false"]);
        std::thread::sleep(std::time::Duration::from_millis(200));
        denied = kube.apply(
            d,
            "bad.yaml",
            &pod("bad", "apps", &format!("{h}/apps/old:v1")),
            &[],
        );
    }
    if admitted.code != 0 {
        admitted = kube.apply(
            d,
            "ok.yaml",
            &pod("ok", "apps", &format!("{h}/apps/web:v1")),
            &[],
        );
    }
    assert_eq!(admitted.code, 0, "{admitted:?}");
    assert_ne!(denied.code, 0, "{denied:?}");
    // deploy/'s mutating webhook pinned the admitted Pod's tag to the digest it verified: the
    // kubelet pulls what was checked, not what the tag names later.
    let stored = kube.kubectl(&[
        "get",
        "pod",
        "ok",
        "-n",
        "apps",
        "-o",
        "jsonpath={.spec.containers[0].image}",
    ]);
    assert!(
        stored
            .stdout
            .starts_with(&format!("{h}/apps/web:v1@sha256:")),
        "{stored:?}"
    );
    assert!(
        denied.stderr.contains("Error from server (Forbidden)")
            && denied.stderr.contains("denied the request")
            && denied.stderr.contains("[unsigned]")
            && denied
                .stderr
                .contains("rule \"all\" needs a signature by key \"release\""),
        "{denied:?}"
    );
    // Server-side dry run: the same verdict.
    let dry = kube.apply(
        d,
        "dry.yaml",
        &pod("dry", "apps", &format!("{h}/apps/old:v1")),
        &["--dry-run=server"],
    );
    assert_ne!(dry.code, 0, "{dry:?}");
    // ocigate's own namespace is excluded by deploy/'s namespaceSelector.
    let own = kube.apply(
        d,
        "own.yaml",
        &pod("own", "ocigate-system", &format!("{h}/apps/old:v1")),
        &[],
    );
    assert_eq!(own.code, 0, "{own:?}");
    // So is a namespace labelled ocigate.dev/ignore: "true"; labelled "false", it is checked.
    for (ns, ignore) in [("sandbox", "true"), ("team-b", "false")] {
        let run = kube.apply(
            d,
            &format!("ns-{ns}.yaml"),
            &format!(
                "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels: \
                 {{ocigate.dev/ignore: \"{ignore}\"}}\n"
            ),
            &[],
        );
        assert_eq!(run.code, 0, "{run:?}");
    }
    let ignored = kube.apply(
        d,
        "ignored.yaml",
        &pod("toy", "sandbox", &format!("{h}/apps/old:v1")),
        &[],
    );
    assert_eq!(ignored.code, 0, "{ignored:?}");
    let checked = kube.apply(
        d,
        "checked.yaml",
        &pod("toy", "team-b", &format!("{h}/apps/old:v1")),
        &[],
    );
    assert!(
        checked.code != 0 && checked.stderr.contains("(Forbidden)"),
        "{checked:?}"
    );

    // A HelmRelease: the webhook reads its HelmRepository from the API.
    let repo = format!(
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmRepository\nmetadata: {{name: charts, namespace: flux}}\n\
         spec: {{type: oci, url: \"oci://{h}/charts\", interval: 5m}}\n"
    );
    let run = kube.apply(d, "repo.yaml", &repo, &[]);
    assert_eq!(run.code, 0, "{run:?}");
    let release = |name: &str, chart: &str| {
        format!(
            "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata: {{name: {name}, namespace: flux}}\n\
             spec:\n  interval: 5m\n  chart:\n    spec:\n      chart: {chart}\n      version: 1.0.0\n      \
             sourceRef: {{kind: HelmRepository, name: charts}}\n"
        )
    };
    let run = kube.apply(d, "rel-ok.yaml", &release("good", "mychart"), &[]);
    assert_eq!(run.code, 0, "{run:?}");
    let run = kube.apply(d, "rel-bad.yaml", &release("bad", "other"), &[]);
    assert_ne!(run.code, 0, "{run:?}");
    assert!(
        run.stderr.contains("charts/other:1.0.0") && run.stderr.contains("[unsigned]"),
        "{run:?}"
    );
    // A HelmRelease whose repository does not exist is refused, not passed.
    let orphan = release("orphan", "mychart").replace("name: charts", "name: missing");
    let run = kube.apply(d, "rel-orphan.yaml", &orphan, &[]);
    assert_ne!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("not found"), "{run:?}");

    // The repository's URL cannot be moved under an admitted HelmChart: its chart at the new
    // URL is checked (the webhook lists the namespace's HelmCharts), unsigned there: refused.
    let chart = "apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmChart\nmetadata: {name: podinfo, namespace: flux}\n\
         spec: {chart: mychart, version: 1.0.0, interval: 5m, sourceRef: {kind: HelmRepository, name: charts}}\n";
    let run = kube.apply(d, "chart.yaml", chart, &[]);
    assert_eq!(run.code, 0, "{run:?}");
    let moved = repo.replace("/charts\"", "/elsewhere\"");
    let run = kube.apply(d, "repo-moved.yaml", &moved, &[]);
    assert_ne!(run.code, 0, "{run:?}");
    assert!(
        run.stderr.contains("elsewhere/mychart:1.0.0")
            && run.stderr.contains("[unsigned]")
            && run.stderr.contains("HelmChart flux/podinfo"),
        "{run:?}"
    );
    let run = kube.apply(d, "repo-again.yaml", &repo, &[]);
    assert_eq!(run.code, 0, "the same URL again: {run:?}");
}

/// A private registry (basic auth) that ocigate has no credentials for: a Pod is checked with its
/// own `imagePullSecrets`, or its service account's, read from the API; without them the
/// answer is an access failure, never "unsigned".
#[test]
fn pull_secrets_of_the_pod_and_its_service_account() {
    const USER: &str = "puller";
    const SECRET: &str = "pull-pass";
    let Some(kube) = MiniCluster::start_or_skip("pull_secrets_of_the_pod_and_its_service_account")
    else {
        return;
    };
    let reg = TestRegistry::start_with_basic_auth(USER, SECRET);
    let h = reg.host();
    let client = reg.client_with(|s| {
        s.add_credentials_flag(&format!("{h}={USER}:{SECRET}"))
            .unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (key, public) = generate_keys(d, "k");
    let image = reg.reference("private/app:v1");
    push_image(&client, &image, "private");
    let creds = format!("{h}={USER}:{SECRET}");
    let s = sign(
        &reg,
        &key,
        &image.to_string(),
        &["--registry-creds", &creds],
    );
    assert_eq!(s.code, 0, "{s:?}");
    let policy = d.join("policy.yaml");
    write_key_policy(&policy, &public, "all", &format!("{h}/**"));
    let tls = make_tls(d);
    // No registry credentials of its own.
    let server = start_serve(
        &policy,
        &tls,
        &h,
        &["--kubeconfig", kube.kubeconfig.to_str().unwrap()],
    );
    kube.namespace(d, "apps");
    kube.install_webhook(d, &server, &tls.ca);
    kube.pull_secret(d, "apps", &h, USER, SECRET);
    let run = kube.apply(
        d,
        "sa.yaml",
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: builder, namespace: apps}\n\
         imagePullSecrets: [{name: regcred}]\n",
        &[],
    );
    assert_eq!(run.code, 0, "{run:?}");
    let pod = |name: &str, extra: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: apps}}\n\
             spec:\n{extra}  containers:\n  - {{name: app, image: \"{image}\"}}\n"
        )
    };
    // Without pull secrets: access denied, not unsigned.
    let run = kube.apply_when_hooked(d, "bare.yaml", &pod("bare", ""), true);
    assert_ne!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("[auth]"), "{run:?}");
    assert!(!run.stderr.contains("[unsigned]"), "{run:?}");
    // The Pod's own imagePullSecrets.
    let run = kube.apply(
        d,
        "own.yaml",
        &pod("own", "  imagePullSecrets: [{name: regcred}]\n"),
        &[],
    );
    assert_eq!(run.code, 0, "{run:?}");
    // Its service account's.
    let run = kube.apply(
        d,
        "sa-pod.yaml",
        &pod("via-sa", "  serviceAccountName: builder\n"),
        &[],
    );
    assert_eq!(run.code, 0, "{run:?}");
}

/// What the webhook asks the Kubernetes API: a HelmRelease's reference into another namespace
/// is refused (nothing read from there, nothing of it in the deny) unless `serve` is told
/// `--allow-cross-namespace-refs`; a pull secret named `..` is never asked for (it would be
/// read as `/namespaces/apps/`) and the decision log says why. Sent by kwhclient; the webhook
/// reads from mini-kube-apiserver.
#[test]
fn cross_namespace_flux_references_and_invalid_names() {
    const TEST: &str = "cross_namespace_flux_references_and_invalid_names";
    let Some(kube) = MiniCluster::start_or_skip(TEST) else {
        return;
    };
    let Some(k) = crate::webhook::kube_tools_or_skip(TEST) else {
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
    for r in ["charts/mychart:1.0.0", "apps/web:v1"] {
        let reference = reg.reference(r);
        push_image(&client, &reference, r);
        let s = sign(&reg, &key, &reference.to_string(), &[]);
        assert_eq!(s.code, 0, "{s:?}");
    }
    let policy = d.join("policy.yaml");
    write_key_policy(&policy, &public, "all", &format!("{h}/**"));
    let crd = corpus.join("gitops/fluxcd/crds/source.toolkit.fluxcd.io_helmrepositories.yaml");
    let run = kube.kubectl(&["apply", "-f", crd.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{run:?}");
    let run = kube.kubectl(&[
        "wait",
        "--for=condition=established",
        "--timeout=60s",
        "crd/helmrepositories.source.toolkit.fluxcd.io",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    for ns in ["apps", "flux"] {
        kube.namespace(d, ns);
    }
    let repo = format!(
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmRepository\nmetadata: {{name: charts, namespace: flux}}\n\
         spec: {{type: oci, url: \"oci://{h}/charts\", interval: 5m}}\n"
    );
    let run = kube.apply(d, "repo.yaml", &repo, &[]);
    assert_eq!(run.code, 0, "{run:?}");

    let tls = make_tls(d);
    let kubeconfig = ["--kubeconfig", kube.kubeconfig.to_str().unwrap()];
    let strict = start_serve(&policy, &tls, &h, &kubeconfig);
    let allowing = start_serve(
        &policy,
        &tls,
        &h,
        &[kubeconfig[0], kubeconfig[1], "--allow-cross-namespace-refs"],
    );
    let release = |ns: &str, source_ns: &str| {
        let f = d.join(format!("rel-{ns}-{source_ns}.yaml"));
        std::fs::write(
            &f,
            format!(
                "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata: {{name: rel, namespace: {ns}}}\n\
                 spec:\n  interval: 5m\n  chart:\n    spec:\n      chart: mychart\n      version: 1.0.0\n      \
                 sourceRef: {{kind: HelmRepository, name: charts, namespace: {source_ns}}}\n"
            ),
        )
        .unwrap();
        f
    };
    let hooks = |server: &crate::webhook::Server, f: &Path| {
        crate::webhook::kwhclient(
            &k,
            server,
            &tls,
            f,
            &["-unstructured", "-resource", "helmreleases"],
        )
    };
    // apps → flux: refused by default, and nothing read from flux shows.
    let cross = release("apps", "flux");
    let run = hooks(&strict, &cross);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout
            .contains("cross-namespace references are refused"),
        "{run:?}"
    );
    assert!(
        !run.stdout.contains(&h),
        "the repository's URL leaked: {run:?}"
    );
    // With the flag it is read, and the chart is verified.
    let run = hooks(&allowing, &cross);
    assert_eq!(run.code, 0, "{run:?}");
    // In its own namespace (named explicitly), the default server reads it too.
    let run = hooks(&strict, &release("flux", "flux"));
    assert_eq!(run.code, 0, "{run:?}");

    // A pull secret named `..` or `.`: never asked for, the Pod checked without it.
    let pod = d.join("pod.yaml");
    std::fs::write(
        &pod,
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p, namespace: apps}}\n\
             spec:\n  imagePullSecrets: [{{name: \"..\"}}, {{name: \".\"}}]\n  \
             containers:\n  - {{name: app, image: \"{}\"}}\n",
            reg.reference("apps/web:v1")
        ),
    )
    .unwrap();
    let run = crate::webhook::kwhclient(&k, &strict, &tls, &pod, &[]);
    assert_eq!(run.code, 0, "{run:?}");
    drop(allowing);
    let log = strict.stop_and_read_log();
    let notes: Vec<String> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["kind"] == "Pod")
        .flat_map(|v| {
            v["notes"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|n| n.as_str().map(str::to_string))
        })
        .collect();
    for name in ["..", "."] {
        let want = format!("pull secret {name:?} is not a valid Kubernetes object name");
        assert!(
            notes.iter().any(|n| n.starts_with(&want)),
            "{want}: {notes:?}\n{log}"
        );
    }
    assert!(
        !notes.iter().any(|n| n.contains("not a registry secret")),
        "something was read for an invalid name: {notes:?}"
    );
}

/// Issue #15, point 6, through the admission chain: namespace `victim` has a pull secret for a
/// private registry (token auth), namespace `attacker` has none. (i) After victim's Pod was
/// admitted, attacker's Pod naming the same private tag carries none of victim's tokens to the
/// registry and is denied as an access failure, without learning the digest. (ii) Attacker's
/// anonymous attempt first does not get victim's valid secret refused afterwards.
#[test]
fn pull_secrets_are_not_lent_to_another_namespace() {
    use crate::token::{SECRET, TokenServer, USER, bearer_tokens, strict_front};
    let Some(kube) = MiniCluster::start_or_skip("pull_secrets_are_not_lent_to_another_namespace")
    else {
        return;
    };
    let tokens = TokenServer::start();
    let reg = TestRegistry::start_with_token_auth(&tokens.realm(), &tokens.cert_pem);
    let front = strict_front(reg.host());
    let h = front.host();
    let creds = format!("{h}={USER}:{SECRET}");
    let mut settings = ocigate::registry::RegistrySettings::default();
    settings.add_plain_http(&h).unwrap();
    settings.add_credentials_flag(&creds).unwrap();
    let client = ocigate::registry::Registry::new(settings);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (key, public) = generate_keys(d, "k");
    let image = |repo: &str| ocigate::reference::ImageRef::parse(&format!("{h}/{repo}")).unwrap();
    let mut digests = Vec::new();
    for repo in ["private/app:v1", "private/other:v1"] {
        digests.push(push_image(&client, &image(repo), repo));
        let s = ocigate(
            &[
                "sign",
                &image(repo).to_string(),
                "--key",
                key.to_str().unwrap(),
                "--registry-plain-http",
                &h,
                "--registry-creds",
                &creds,
            ],
            &[("OCIGATE_PASSWORD", PASSWORD)],
        );
        assert_eq!(s.code, 0, "{s:?}");
    }
    push_image(&client, &image("public/nosig:v1"), "public unsigned");
    let policy = d.join("policy.yaml");
    write_key_policy(&policy, &public, "all", &format!("{h}/**"));
    let tls = make_tls(d);
    let server = start_serve(
        &policy,
        &tls,
        &h,
        &["--kubeconfig", kube.kubeconfig.to_str().unwrap()],
    );
    for ns in ["victim", "attacker"] {
        kube.namespace(d, ns);
    }
    kube.install_webhook(d, &server, &tls.ca);
    kube.pull_secret(d, "victim", &h, USER, SECRET);
    let pod = |ns: &str, name: &str, repo: &str| {
        let secret = if ns == "victim" {
            "  imagePullSecrets: [{name: regcred}]\n"
        } else {
            ""
        };
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}}}\n\
             spec:\n{secret}  containers:\n  - {{name: app, image: \"{}\"}}\n",
            image(repo)
        )
    };
    // The webhook is in the chain once an unsigned public image is denied.
    let run = kube.apply_when_hooked(
        d,
        "probe.yaml",
        &pod("attacker", "probe", "public/nosig:v1"),
        true,
    );
    assert!(run.stderr.contains("[unsigned]"), "{run:?}");

    // (i) victim, then attacker, for the same private tag.
    let before = front.seen().len();
    let run = kube.apply(d, "v1.yaml", &pod("victim", "v1", "private/app:v1"), &[]);
    assert_eq!(run.code, 0, "{run:?}");
    let victim_tokens = bearer_tokens(&front, before);
    assert!(!victim_tokens.is_empty(), "victim's check used no token");
    let before = front.seen().len();
    let run = kube.apply(d, "a1.yaml", &pod("attacker", "a1", "private/app:v1"), &[]);
    assert_ne!(run.code, 0, "attacker's Pod was admitted: {run:?}");
    assert!(run.stderr.contains("[auth]"), "{run:?}");
    assert!(!run.stderr.contains(digests[0].as_str()), "{run:?}");
    assert!(
        front.seen().len() > before,
        "attacker was answered from victim's cache"
    );
    assert!(
        bearer_tokens(&front, before)
            .iter()
            .all(|t| !victim_tokens.contains(t)),
        "attacker's requests carried victim's token"
    );

    // (ii) attacker first, then victim, for another private tag.
    let run = kube.apply(
        d,
        "a2.yaml",
        &pod("attacker", "a2", "private/other:v1"),
        &[],
    );
    assert_ne!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("[auth]"), "{run:?}");
    let run = kube.apply(d, "v2.yaml", &pod("victim", "v2", "private/other:v1"), &[]);
    assert_eq!(run.code, 0, "victim's valid secret was refused: {run:?}");
}
