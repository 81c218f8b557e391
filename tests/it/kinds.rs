//! Custom kinds that embed a pod template (`--pod-template-kind`, `--pod-template-preset`): an
//! Argo Rollout, a Knative Service and a kind whose path names a PodSpec, checked as a
//! Deployment's template by the webhook (through kube's admission client, and through
//! mini-kube-apiserver with minimal CRDs and deploy/overlays/custom-kinds applied with
//! `kubectl apply -k`) and by `verify --manifests` with the same flags.

use std::path::{Path, PathBuf};

use base64::Engine as _;

use crate::cluster::MiniCluster;
use crate::harness::*;
use crate::webhook::{Cluster, cluster, kube_tools_or_skip, kwhclient, start_serve, write};

/// A kind whose path names a PodSpec (`spec.podSpec`), defined by the tests.
const RUNNER: &str = "example.com/v1/Runner=spec.podSpec";

fn rollout(name: &str, image: &str) -> String {
    format!(
        "apiVersion: argoproj.io/v1alpha1\nkind: Rollout\nmetadata: {{name: {name}, namespace: apps}}\n\
         spec:\n  replicas: 2\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    \
         metadata: {{labels: {{app: {name}}}}}\n    spec:\n      containers:\n      \
         - {{name: app, image: \"{image}\"}}\n  strategy: {{canary: {{steps: [{{setWeight: 20}}]}}}}\n"
    )
}

fn runner(name: &str, image: &str) -> String {
    format!(
        "apiVersion: example.com/v1\nkind: Runner\nmetadata: {{name: {name}, namespace: apps}}\n\
         spec:\n  podSpec:\n    containers:\n    - {{name: app, image: \"{image}\"}}\n"
    )
}

fn knative_service(name: &str, image: &str) -> String {
    format!(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {{name: {name}, namespace: apps}}\n\
         spec:\n  template:\n    spec:\n      containers:\n      - {{image: \"{image}\"}}\n"
    )
}

#[test]
fn custom_kinds_through_kubernetes_admission_code() {
    const TEST: &str = "custom_kinds_through_kubernetes_admission_code";
    let Some(k) = kube_tools_or_skip(TEST) else {
        return;
    };
    let c: Cluster = cluster();
    let d = c.dir.path();
    let host = c.reg.host();
    let configured = start_serve(
        &c.policy,
        &c.tls,
        &host,
        &[
            "--pod-template-preset",
            "argo-rollout",
            "--pod-template-kind",
            RUNNER,
        ],
    );
    let plain = start_serve(&c.policy, &c.tls, &host, &[]);
    let send = |server, file: &Path, resource: &str| {
        kwhclient(
            &k,
            server,
            &c.tls,
            file,
            &["-unstructured", "-resource", resource],
        )
    };

    // An unsigned image in a Rollout's template: denied, naming the field.
    let bad = write(d, "bad-rollout.yaml", &rollout("bad", &c.unsigned));
    let run = send(&configured, &bad, "rollouts");
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.contains("DENIED")
            && run.stdout.contains(&format!(
                "{} (spec.template.spec.containers[0].image) [unsigned]",
                c.unsigned
            )),
        "{run:?}"
    );
    // A signed one: admitted.
    let ok = write(d, "ok-rollout.yaml", &rollout("ok", &c.signed));
    let run = send(&configured, &ok, "rollouts");
    assert_eq!(run.code, 0, "{run:?}");
    // As for a Deployment, an UPDATE checks only what the old object did not run: scaling an
    // old unsigned Rollout passes.
    let scaled = write(
        d,
        "scaled-rollout.yaml",
        &rollout("bad", &c.unsigned).replace("replicas: 2", "replicas: 1"),
    );
    let old = bad.to_str().unwrap();
    let run = kwhclient(
        &k,
        &configured,
        &c.tls,
        &scaled,
        &[
            "-unstructured",
            "-resource",
            "rollouts",
            "-operation",
            "UPDATE",
            "-old",
            old,
        ],
    );
    assert_eq!(run.code, 0, "{run:?}");
    // Without the configuration, as before: a Rollout is a kind ocigate does not read.
    let run = send(&plain, &bad, "rollouts");
    assert!(run.code == 0 && run.stdout.contains("ADMITTED"), "{run:?}");

    // A Rollout that refers to a Deployment names no image; one with neither is malformed.
    let by_ref = write(
        d,
        "ref-rollout.yaml",
        "apiVersion: argoproj.io/v1alpha1\nkind: Rollout\nmetadata: {name: r, namespace: apps}\n\
         spec:\n  workloadRef: {apiVersion: apps/v1, kind: Deployment, name: web}\n",
    );
    let run = send(&configured, &by_ref, "rollouts");
    assert_eq!(run.code, 0, "{run:?}");
    let empty = write(
        d,
        "empty-rollout.yaml",
        "apiVersion: argoproj.io/v1alpha1\nkind: Rollout\nmetadata: {name: e, namespace: apps}\nspec: {replicas: 1}\n",
    );
    let run = send(&configured, &empty, "rollouts");
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout
            .contains("field spec.template: missing: there is no pod template to read"),
        "{run:?}"
    );

    // A kind whose path names a PodSpec.
    let bad = write(d, "bad-runner.yaml", &runner("bad", &c.unsigned));
    let run = send(&configured, &bad, "runners");
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout
            .contains("(spec.podSpec.containers[0].image) [unsigned]"),
        "{run:?}"
    );
    let ok = write(d, "ok-runner.yaml", &runner("ok", &c.signed));
    assert_eq!(send(&configured, &ok, "runners").code, 0);
}

#[test]
fn verify_manifests_reads_the_same_configuration() {
    let c = cluster();
    let d = c.dir.path();
    let host = c.reg.host();
    let file = write(
        d,
        "custom.yaml",
        &format!(
            "{}---\n{}---\n{}",
            rollout("bad", &c.unsigned),
            rollout("ok", &c.signed),
            runner("job", &c.unsigned)
        ),
    );
    let verify = |extra: &[&str]| {
        let mut args = vec![
            "verify",
            "--manifests",
            file.to_str().unwrap(),
            "--policy",
            c.policy.to_str().unwrap(),
            "--registry-plain-http",
            &host,
            "-o",
            "json",
        ];
        args.extend_from_slice(extra);
        ocigate(&args, &[])
    };
    // Not configured: nothing of them is checked, as before.
    let run = verify(&[]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        run.json()["results"].as_array().unwrap().len(),
        0,
        "{run:?}"
    );
    // Configured as the webhook is: the unsigned image is denied once, found in both objects.
    let run = verify(&[
        "--pod-template-preset",
        "argo-rollout",
        "--pod-template-kind",
        RUNNER,
    ]);
    assert_eq!(run.code, 1, "{run:?}");
    let json = run.json();
    let results = json["results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "{json}");
    let bad = results
        .iter()
        .find(|r| {
            r["reference"]
                .as_str()
                .is_some_and(|s| s.contains("apps/old"))
        })
        .unwrap();
    assert_eq!(bad["failure"], "unsigned", "{json}");
    let found = bad.to_string();
    assert!(
        found.contains("Rollout apps/bad spec.template.spec.containers[0].image")
            && found.contains("Runner apps/job spec.podSpec.containers[0].image"),
        "{found}"
    );
    // A built-in kind cannot be configured; the flags need --manifests (both at parse time).
    let run = verify(&["--pod-template-kind", "apps/v1/Deployment=spec.template"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("read by ocigate itself"), "{run:?}");
    let run = ocigate(
        &[
            "verify",
            &c.signed,
            "--policy",
            c.policy.to_str().unwrap(),
            "--pod-template-preset",
            "argo-rollout",
        ],
        &[],
    );
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("required arguments were not provided")
            && run.stderr.contains("--manifests"),
        "{run:?}"
    );
}

/// A CustomResourceDefinition whose `spec` keeps whatever it is given (the projects' own
/// schemas are larger; the template's shape is what matters here).
pub(crate) fn crd(group: &str, version: &str, kind: &str, plural: &str) -> String {
    format!(
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n\
         metadata: {{name: {plural}.{group}}}\nspec:\n  group: {group}\n  scope: Namespaced\n  \
         names: {{kind: {kind}, listKind: {kind}List, plural: {plural}, singular: {singular}}}\n  \
         versions:\n  - name: {version}\n    served: true\n    storage: true\n    schema:\n      \
         openAPIV3Schema:\n        type: object\n        properties:\n          spec:\n            \
         type: object\n            x-kubernetes-preserve-unknown-fields: true\n",
        singular = plural.trim_end_matches('s'),
    )
}

/// `to` relative to the directory `from` (kustomize refuses absolute resource paths).
fn relative(from: &Path, to: &Path) -> PathBuf {
    let up = from.components().count() - 1;
    let mut p: PathBuf = std::iter::repeat_n("..", up).collect();
    p.push(to.strip_prefix("/").unwrap());
    p
}

#[test]
fn custom_kinds_through_the_admission_chain_with_the_overlay() {
    const TEST: &str = "custom_kinds_through_the_admission_chain_with_the_overlay";
    let Some(kube) = MiniCluster::start_or_skip(TEST) else {
        return;
    };
    let c = cluster();
    let d = c.dir.path();
    let host = c.reg.host();
    for (group, version, kind, plural) in [
        ("argoproj.io", "v1alpha1", "Rollout", "rollouts"),
        ("serving.knative.dev", "v1", "Service", "services"),
        ("example.com", "v1", "Runner", "runners"),
        ("example.com", "v1", "Widget", "widgets"),
    ] {
        let run = kube.apply(
            d,
            &format!("crd-{plural}.yaml"),
            &crd(group, version, kind, plural),
            &[],
        );
        assert_eq!(run.code, 0, "{run:?}");
        let established = kube.kubectl(&[
            "wait",
            "--for=condition=established",
            "--timeout=60s",
            &format!("crd/{plural}.{group}"),
        ]);
        assert_eq!(established.code, 0, "{established:?}");
    }
    kube.namespace(d, "apps");

    // `serve` as the overlay's Deployment runs it, plus the test's PodSpec-path kind.
    let overlay = repo_root().join("deploy/overlays/custom-kinds");
    let rendered = kube.kubectl(&["kustomize", overlay.to_str().unwrap()]);
    assert_eq!(rendered.code, 0, "{rendered:?}");
    let docs = ocigate::extract::parse_documents(&rendered.stdout).unwrap();
    let deployment = docs.iter().find(|o| o["kind"] == "Deployment").unwrap();
    let args: Vec<&str> = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let mut serve_args: Vec<&str> = args
        .windows(2)
        .filter(|w| w[0] == "--pod-template-preset")
        .flatten()
        .copied()
        .collect();
    assert_eq!(serve_args.len(), 12, "{args:?}");
    let kubeconfig = kube.kubeconfig().to_str().unwrap().to_string();
    serve_args.extend(["--pod-template-kind", RUNNER, "--kubeconfig", &kubeconfig]);
    let server = start_serve(&c.policy, &c.tls, &host, &serve_args);

    // The overlay applied with `kubectl apply -k`, its webhooks pointed at the server (the mini
    // API server has no Service routing) and given a rule for the test's own kind, as
    // deploy/README.md says to add one.
    let install = d.join("install");
    std::fs::create_dir_all(&install).unwrap();
    let ca = base64::engine::general_purpose::STANDARD.encode(std::fs::read(&c.tls.ca).unwrap());
    let client = |path: &str| {
        format!(
            "      - {{op: remove, path: /webhooks/0/clientConfig/service}}\n      \
             - {{op: add, path: /webhooks/0/clientConfig/url, value: \"{}\"}}\n      \
             - {{op: add, path: /webhooks/0/clientConfig/caBundle, value: \"{ca}\"}}\n",
            server.url(path)
        )
    };
    std::fs::write(
        install.join("kustomization.yaml"),
        format!(
            "resources:\n  - {}\npatches:\n  - target: {{kind: ValidatingWebhookConfiguration, name: ocigate}}\n    \
             patch: |-\n{}      - op: add\n        path: /webhooks/0/rules/-\n        value: {{apiGroups: [example.com], \
             apiVersions: [v1], operations: [CREATE, UPDATE], resources: [runners], scope: Namespaced}}\n  \
             - target: {{kind: MutatingWebhookConfiguration, name: ocigate}}\n    patch: |-\n{}",
            relative(&install, &overlay).display(),
            client("/validate"),
            client("/mutate"),
        ),
    )
    .unwrap();
    let run = kube.kubectl(&["apply", "-k", install.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .contains("validatingwebhookconfiguration.admissionregistration.k8s.io/ocigate"),
        "{run:?}"
    );

    // A Rollout with an unsigned image: denied with the field; a signed one admitted.
    let denied = kube.apply_when_hooked(d, "bad-rollout.yaml", &rollout("bad", &c.unsigned), true);
    assert!(
        denied.code != 0
            && denied.stderr.contains("(Forbidden)")
            && denied
                .stderr
                .contains("(spec.template.spec.containers[0].image) [unsigned]"),
        "{denied:?}"
    );
    let run = kube.apply(d, "ok-rollout.yaml", &rollout("ok", &c.signed), &[]);
    assert_eq!(run.code, 0, "{run:?}");
    // A Knative Service (a preset) and the PodSpec-path kind (the test's rule).
    let run = kube.apply(
        d,
        "bad-ksvc.yaml",
        &knative_service("bad", &c.unsigned),
        &[],
    );
    assert!(
        run.code != 0 && run.stderr.contains("[unsigned]"),
        "{run:?}"
    );
    let run = kube.apply(d, "ok-ksvc.yaml", &knative_service("ok", &c.signed), &[]);
    assert_eq!(run.code, 0, "{run:?}");
    let run = kube.apply(d, "bad-runner.yaml", &runner("bad", &c.unsigned), &[]);
    assert!(
        run.code != 0
            && run
                .stderr
                .contains("(spec.podSpec.containers[0].image) [unsigned]"),
        "{run:?}"
    );
    // A kind neither configured nor in the webhook's rules is admitted, as before.
    let widget = runner("w", &c.unsigned)
        .replace("kind: Runner", "kind: Widget")
        .replace("podSpec", "template");
    let run = kube.apply(d, "widget.yaml", &widget, &[]);
    assert_eq!(run.code, 0, "{run:?}");
}
