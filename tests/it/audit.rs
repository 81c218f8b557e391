//! `ocigate audit` against mini-kube-apiserver: Pods (owned by a ReplicaSet of a Deployment,
//! by a Job of a CronJob, or by nothing) whose images are signed, unsigned, or on a registry
//! that is down, created through the API (no kubelet is needed to list them); the report per
//! namespace and workload in JSON and text; a namespace the webhook excludes skipped; a re-run
//! after the key is revoked reports the workloads that no longer pass.

use std::path::Path;

use crate::cluster::MiniCluster;
use crate::harness::*;

/// An object owned by `owner` (`KIND/NAME` of `api_version`), as its controller.
fn owned(api_version: &str, owner: &str) -> String {
    let (kind, name) = owner.split_once('/').unwrap();
    format!(
        "  ownerReferences: [{{apiVersion: {api_version}, kind: {kind}, name: {name}, \
         uid: 00000000-0000-0000-0000-000000000001, controller: true}}]\n"
    )
}

fn pod(ns: &str, name: &str, image: &str, owner: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n{owner}\
         spec:\n  containers:\n  - {{name: app, image: \"{image}\"}}\n"
    )
}

fn replica_set(ns: &str, name: &str, deployment: &str, image: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: {name}\n  namespace: {ns}\n{}\
         spec:\n  selector: {{matchLabels: {{app: x}}}}\n  template:\n    metadata: {{labels: {{app: x}}}}\n    \
         spec:\n      containers:\n      - {{name: app, image: \"{image}\"}}\n",
        owned("apps/v1", &format!("Deployment/{deployment}"))
    )
}

fn audit(kube: &MiniCluster, policy: &Path, host: &str, output: &str) -> Run {
    ocigate(
        &[
            "audit",
            "--policy",
            policy.to_str().unwrap(),
            "--kubeconfig",
            kube.kubeconfig().to_str().unwrap(),
            "--registry-plain-http",
            host,
            "--registry-timeout",
            "2",
            "-o",
            output,
        ],
        &[],
    )
}

/// The workload `kind name` of namespace `ns` in a JSON report.
fn workload<'a>(
    report: &'a serde_json::Value,
    ns: &str,
    kind: &str,
    name: &str,
) -> &'a serde_json::Value {
    report["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["namespace"] == ns)
        .and_then(|n| {
            n["workloads"]
                .as_array()
                .unwrap()
                .iter()
                .find(|w| w["kind"] == kind && w["name"] == name)
        })
        .unwrap_or_else(|| panic!("no {kind} {name} in {ns}: {report:#}"))
}

#[test]
fn audit_reports_what_runs_per_namespace_and_workload() {
    let Some(kube) =
        MiniCluster::start_or_skip("audit_reports_what_runs_per_namespace_and_workload")
    else {
        return;
    };
    let reg = TestRegistry::start();
    let h = reg.host();
    let client = reg.client();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (key, public) = generate_keys(d, "k");
    let image = |repo: &str| ocigate::reference::ImageRef::parse(&format!("{h}/{repo}")).unwrap();
    for repo in ["apps/web:v1", "apps/backup:v1", "apps/nosig:v1"] {
        push_image(&client, &image(repo), repo);
    }
    for repo in ["apps/web:v1", "apps/backup:v1"] {
        let s = sign(&reg, &key, &image(repo).to_string(), &[]);
        assert_eq!(s.code, 0, "{s:?}");
    }
    let down = "127.0.0.1:1/apps/gone:v1";
    let policy = d.join("policy.yaml");
    let key_file = d.join("release.pub");
    std::fs::copy(&public, &key_file).unwrap();
    std::fs::write(
        &policy,
        format!(
            "apiVersion: ocigate.dev/v1alpha1\nkind: Policy\nnoMatch: deny\n\
             keys: [{{name: release, path: {}}}]\n\
             rules:\n  - name: apps\n    images: [\"{h}/**\", \"127.0.0.1:1/**\"]\n    \
             authorities: [{{key: {{name: release}}, tlog: skip}}]\n",
            key_file.display()
        ),
    )
    .unwrap();
    for ns in ["team-a", "team-b"] {
        kube.namespace(d, ns);
    }
    let web = image("apps/web:v1").to_string();
    let backup = image("apps/backup:v1").to_string();
    let nosig = image("apps/nosig:v1").to_string();
    let rs = owned("apps/v1", "ReplicaSet/web-5d9");
    let job = owned("batch/v1", "Job/backup-28001");
    let objects = [
        replica_set("team-a", "web-5d9", "web", &web),
        pod("team-a", "web-5d9-aaaaa", &web, &rs),
        pod("team-a", "web-5d9-bbbbb", &web, &rs),
        format!(
            "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: backup-28001\n  namespace: team-a\n{}\
             spec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      \
             - {{name: app, image: \"{backup}\"}}\n",
            owned("batch/v1", "CronJob/backup")
        ),
        pod("team-a", "backup-28001-x", &backup, &job),
        pod("team-b", "adhoc", &nosig, ""),
        pod("team-b", "gone", down, ""),
        pod("kube-system", "sys", &nosig, ""),
    ];
    let run = kube.apply(d, "objects.yaml", &objects.join("---\n"), &[]);
    assert_eq!(run.code, 0, "{run:?}");

    let run = audit(&kube, &policy, &h, "json");
    assert_eq!(run.code, 1, "a denied artifact is exit 1: {run:?}");
    let report = run.json();
    let s = &report["summary"];
    assert_eq!(s["artifacts"], 4, "{report:#}");
    assert_eq!(
        (s["allowed"].as_u64(), s["denied"].as_u64()),
        (Some(2), Some(2)),
        "{report:#}"
    );
    assert_eq!(s["failures"]["unsigned"], 1, "{report:#}");
    assert_eq!(s["failures"]["registry"], 1, "{report:#}");
    assert_eq!(s["skipped"], 1, "kube-system is excluded: {report:#}");
    let w = workload(&report, "team-a", "Deployment", "web");
    assert_eq!(w["verdict"], "allow");
    let places = w["artifacts"][0]["places"].as_array().unwrap();
    assert_eq!(places.len(), 2, "both Pods of the Deployment: {w:#}");
    assert_eq!(places[0]["object"], "Pod web-5d9-aaaaa");
    assert_eq!(places[0]["field"], "spec.containers[0].image");
    assert_eq!(
        workload(&report, "team-a", "CronJob", "backup")["verdict"],
        "allow"
    );
    let adhoc = workload(&report, "team-b", "Pod", "adhoc");
    assert_eq!(adhoc["verdict"], "deny");
    assert_eq!(adhoc["artifacts"][0]["failure"], "unsigned");
    let gone = workload(&report, "team-b", "Pod", "gone");
    assert_eq!(
        gone["artifacts"][0]["failure"], "registry",
        "never unsigned: {gone:#}"
    );
    let listed = report["listed"].as_array().unwrap();
    assert!(
        listed
            .iter()
            .any(|l| l["kind"] == "Pod" && l["objects"] == 6),
        "{report:#}"
    );
    assert!(
        listed
            .iter()
            .any(|l| l["kind"] == "OCIRepository" && l["apiVersion"].is_null()),
        "no Flux CRDs in this cluster: {report:#}"
    );

    let run = audit(&kube, &policy, &h, "text");
    assert_eq!(run.code, 1, "{run:?}");
    if std::env::var_os("OCIGATE_SHOW_AUDIT").is_some() {
        eprintln!("{}", run.stdout);
    }
    for line in [
        "namespace team-a",
        "  ALLOW Deployment web",
        "  ALLOW CronJob backup",
        "namespace team-b",
        "  DENY Pod adhoc",
        "runs in Pod web-5d9-aaaaa spec.containers[0].image, Pod web-5d9-bbbbb",
        "SKIP Pod kube-system/sys",
        "audit: 4 artifacts in 4 workloads of 2 namespaces: 2 allowed, 2 denied",
    ] {
        assert!(
            run.stdout.contains(line),
            "{line:?} missing:\n{}",
            run.stdout
        );
    }

    // The key is revoked (its file now holds another key): the next audit says who no longer
    // passes.
    let (_, other) = generate_keys(d, "other");
    std::fs::copy(&other, &key_file).unwrap();
    let run = audit(&kube, &policy, &h, "json");
    assert_eq!(run.code, 1, "{run:?}");
    let report = run.json();
    let w = workload(&report, "team-a", "Deployment", "web");
    assert_eq!(w["verdict"], "deny", "{w:#}");
    assert_eq!(w["artifacts"][0]["failure"], "untrusted", "{w:#}");
    assert_eq!(report["summary"]["allowed"], 0, "{report:#}");
}
