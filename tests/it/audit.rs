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
    audit_with(kube, policy, host, output, &[])
}

fn audit_with(kube: &MiniCluster, policy: &Path, host: &str, output: &str, extra: &[&str]) -> Run {
    let mut args = vec![
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
    ];
    args.extend_from_slice(extra);
    ocigate(&args, &[])
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
    // A namespace labelled ocigate.dev/ignore, which the webhook's namespaceSelector leaves
    // out: its unsigned Pod is skipped, not a denial (the audit never read the label before).
    let sandbox = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: sandbox\n  \
                   labels: {ocigate.dev/ignore: \"true\"}\n";
    let objects = [
        sandbox.to_string(),
        pod("sandbox", "play", &nosig, ""),
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
    assert_eq!(s["skipped"], 2, "kube-system and sandbox: {report:#}");
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
            .any(|l| l["kind"] == "Pod" && l["objects"] == 7),
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
        "SKIP Pod sandbox/play",
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

/// A stand-in for the built-in coordination.k8s.io/v1 Lease, which mini-kube-apiserver does not
/// serve: a CRD of the same group, version and fields (a `*.k8s.io` group needs the
/// api-approved annotation).
const LEASE_CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: leases.coordination.k8s.io
  annotations: {api-approved.kubernetes.io: "unapproved, a stand-in for the built-in Lease in tests"}
spec:
  group: coordination.k8s.io
  scope: Namespaced
  names: {plural: leases, singular: lease, kind: Lease, listKind: LeaseList}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              holderIdentity: {type: string}
              leaseDurationSeconds: {type: integer, format: int32}
              acquireTime: {type: string, format: date-time}
              renewTime: {type: string, format: date-time}
              leaseTransitions: {type: integer, format: int32}
"#;

/// `kubectl get KIND NAME -n NS -o json`, if it exists.
fn get_json(kube: &MiniCluster, kind: &str, ns: &str, name: &str) -> Option<serde_json::Value> {
    let run = kube.kubectl(&["get", kind, name, "-n", ns, "-o", "json"]);
    (run.code == 0).then(|| serde_json::from_str(&run.stdout).unwrap())
}

/// Polls `f` every 250 ms for at most `seconds`.
fn within<T>(seconds: u64, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    while std::time::Instant::now() < end {
        if let Some(v) = f() {
            return Some(v);
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    None
}

/// The value of the series of `/metrics` on `port` whose line starts with `series`.
fn metric(port: u16, series: &str) -> Option<f64> {
    let text = crate::webhook::http_get(port, "/metrics");
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn serve_audits_in_the_background_and_one_replica_writes_policy_reports() {
    let Some(kube) = MiniCluster::start_or_skip(
        "serve_audits_in_the_background_and_one_replica_writes_policy_reports",
    ) else {
        return;
    };
    let reg = TestRegistry::start();
    let h = reg.host();
    let client = reg.client();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (key, public) = generate_keys(d, "k");
    let image = |repo: &str| format!("{h}/{repo}");
    for repo in ["apps/web:v1", "apps/later:v1"] {
        let r = ocigate::reference::ImageRef::parse(&image(repo)).unwrap();
        push_image(&client, &r, repo);
    }
    let s = sign(&reg, &key, &image("apps/web:v1"), &[]);
    assert_eq!(s.code, 0, "{s:?}");
    let policy = d.join("policy.yaml");
    write_key_policy(&policy, &public, "apps", &format!("{h}/**"));
    let crds = repo_root().join("../shared/corpus/gitops/policyreport");
    let run = kube.kubectl(&["apply", "-f", crds.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{run:?}");
    let run = kube.apply(d, "lease-crd.yaml", LEASE_CRD, &[]);
    assert_eq!(run.code, 0, "{run:?}");
    for ns in [
        "team-a",
        "team-b",
        "team-c",
        "team-gone",
        "team-other",
        "ocigate-system",
    ] {
        kube.namespace(d, ns);
    }
    let pods = [
        pod("team-a", "web", &image("apps/web:v1"), ""),
        pod("team-b", "later", &image("apps/later:v1"), ""),
        pod("team-c", "web", &image("apps/web:v1"), ""),
    ];
    let run = kube.apply(d, "pods.yaml", &pods.join("---\n"), &[]);
    assert_eq!(run.code, 0, "{run:?}");
    // A report written before any replica ran (an earlier deployment), in a namespace whose
    // workloads are gone: the first leader reads it from the cluster and empties it.
    let stale = "apiVersion: wgpolicyk8s.io/v1alpha2\nkind: PolicyReport\nmetadata: {name: ocigate, namespace: team-gone, labels: {app.kubernetes.io/managed-by: ocigate}}\nsummary: {pass: 0, fail: 1, warn: 0, error: 0, skip: 0}\nresults:\n- {policy: earlier, result: fail, source: ocigate, message: gone}\n";
    let run = kube.apply(d, "stale.yaml", stale, &[]);
    assert_eq!(run.code, 0, "{run:?}");
    // Another tool's report of the same name (without ocigate's label): never emptied.
    let foreign = stale
        .replace("team-gone", "team-other")
        .replace(", labels: {app.kubernetes.io/managed-by: ocigate}", "");
    let run = kube.apply(d, "foreign.yaml", &foreign, &[]);
    assert_eq!(run.code, 0, "{run:?}");

    let tls = make_tls(d);
    let args = [
        "--kubeconfig",
        kube.kubeconfig().to_str().unwrap(),
        "--audit-interval",
        "1s",
        "--leader-election-namespace",
        "ocigate-system",
    ];
    let mut replicas = vec![
        crate::webhook::start_serve(&policy, &tls, &h, &args),
        crate::webhook::start_serve(&policy, &tls, &h, &args),
    ];
    let report = |ns: &str| get_json(&kube, "policyreport", ns, "ocigate");
    let b = within(40, || {
        report("team-b").filter(|r| r["summary"]["fail"] == 1)
    })
    .unwrap_or_else(|| panic!("no failing report in team-b: {:?}", report("team-b")));
    let result = &b["results"][0];
    assert_eq!(result["result"], "fail", "{b:#}");
    assert_eq!(result["properties"]["failure"], "unsigned", "{b:#}");
    assert_eq!(result["resources"][0]["kind"], "Pod", "{b:#}");
    assert_eq!(result["resources"][0]["name"], "later", "{b:#}");
    let a = report("team-a").expect("a report in team-a");
    assert_eq!(a["summary"]["pass"], 1, "{a:#}");
    let run = kube.kubectl(&["get", "policyreports", "-A"]);
    assert!(
        run.stdout.contains("team-a") && run.stdout.contains("team-b"),
        "{run:?}"
    );
    let gone = within(20, || {
        report("team-gone").filter(|r| r["summary"]["fail"] == 0)
    })
    .unwrap_or_else(|| panic!("the stale report stayed: {:?}", report("team-gone")));
    assert_eq!(
        gone["results"].as_array().map(Vec::len),
        Some(0),
        "{gone:#}"
    );
    let other = report("team-other").expect("the other tool's report");
    assert_eq!(other["summary"]["fail"], 1, "emptied: {other:#}");

    // Exactly one replica leads; it is the Lease's holder and counts the results.
    let leading: Vec<bool> = replicas
        .iter()
        .map(|r| metric(r.metrics, "ocigate_audit_leader ") == Some(1.0))
        .collect();
    assert_eq!(leading.iter().filter(|l| **l).count(), 1, "{leading:?}");
    let leader = leading.iter().position(|l| *l).unwrap();
    let lease = get_json(&kube, "lease", "ocigate-system", "ocigate-audit").expect("the Lease");
    let first_holder = lease["spec"]["holderIdentity"]
        .as_str()
        .unwrap()
        .to_string();
    let series = r#"ocigate_audit_results{namespace="team-b",result="fail",failure="unsigned"}"#;
    assert_eq!(metric(replicas[leader].metrics, series), Some(1.0));

    // The leader stops; the other takes the Lease over once it expires and reports the image
    // signed meanwhile as passing.
    let s = sign(&reg, &key, &image("apps/later:v1"), &[]);
    assert_eq!(s.code, 0, "{s:?}");
    drop(replicas.remove(leader));
    // Deleted after the leader stopped: only the replica taking over can empty its report,
    // which it learns of from the cluster, not from an audit of its own.
    let run = kube.kubectl(&["delete", "pod", "web", "-n", "team-a", "--wait=false"]);
    assert_eq!(run.code, 0, "{run:?}");
    let b = within(45, || {
        report("team-b").filter(|r| r["summary"]["pass"] == 1)
    })
    .unwrap_or_else(|| {
        panic!(
            "the other replica did not take over: {:?}",
            report("team-b")
        )
    });
    assert_eq!(b["summary"]["fail"], 0, "{b:#}");
    let a = within(20, || {
        report("team-a").filter(|r| r["summary"]["pass"] == 0)
    })
    .unwrap_or_else(|| {
        panic!(
            "team-a's report kept a Pod that is gone: {:?}",
            report("team-a")
        )
    });
    assert_eq!(a["results"].as_array().map(Vec::len), Some(0), "{a:#}");
    let lease = get_json(&kube, "lease", "ocigate-system", "ocigate-audit").expect("the Lease");
    assert_ne!(
        lease["spec"]["holderIdentity"],
        first_holder.as_str(),
        "{lease:#}"
    );
    assert_eq!(
        metric(replicas[0].metrics, "ocigate_audit_leader "),
        Some(1.0)
    );
    // A namespace reported before whose workloads and report are then both gone (as when the
    // namespace is deleted): no empty report is created for it, and no audit fails over it.
    within(20, || {
        report("team-c").filter(|r| r["summary"]["pass"] == 1)
    })
    .unwrap_or_else(|| panic!("no report in team-c: {:?}", report("team-c")));
    let run = kube.kubectl(&["delete", "pod", "web", "-n", "team-c", "--wait=false"]);
    assert_eq!(run.code, 0, "{run:?}");
    let run = kube.kubectl(&["delete", "policyreport", "ocigate", "-n", "team-c"]);
    assert_eq!(run.code, 0, "{run:?}");
    std::thread::sleep(std::time::Duration::from_secs(4));
    assert!(report("team-c").is_none(), "{:?}", report("team-c"));
    let runs = |outcome: &str| {
        metric(
            replicas[0].metrics,
            &format!("ocigate_audit_runs_total{{outcome=\"{outcome}\"}}"),
        )
    };
    assert!(runs("ok").is_some_and(|n| n >= 1.0), "{:?}", runs("ok"));
    assert_eq!(runs("failed"), Some(0.0), "an audit failed");

    // deploy/overlays/audit applies whole (its Role for the Lease, the ClusterRole's additions).
    let overlay = repo_root().join("deploy/overlays/audit");
    let run = kube.kubectl(&["apply", "-k", overlay.to_str().unwrap(), "--dry-run=server"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .contains("role.rbac.authorization.k8s.io/ocigate-audit-lease"),
        "{run:?}"
    );
}

/// A private image: the Pod whose namespace holds the pull secret is checked with it; the same
/// image in another namespace is checked without it (an access failure, never unsigned and never
/// with the other namespace's secret).
#[test]
fn audit_checks_each_pod_with_its_own_pull_secrets() {
    let Some(kube) = MiniCluster::start_or_skip("audit_checks_each_pod_with_its_own_pull_secrets")
    else {
        return;
    };
    let reg = TestRegistry::start_with_basic_auth("puller", "s3cret");
    let h = reg.host();
    let client = reg.client_with(|s| {
        s.add_credentials_flag(&format!("{h}=puller:s3cret"))
            .unwrap()
    });
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (key, public) = generate_keys(d, "k");
    let private = format!("{h}/private/app:v1");
    push_image(
        &client,
        &ocigate::reference::ImageRef::parse(&private).unwrap(),
        "private",
    );
    let s = sign(
        &reg,
        &key,
        &private,
        &["--registry-creds", &format!("{h}=puller:s3cret")],
    );
    assert_eq!(s.code, 0, "{s:?}");
    let policy = d.join("policy.yaml");
    write_key_policy(&policy, &public, "apps", &format!("{h}/**"));
    for ns in ["team-a", "team-b"] {
        kube.namespace(d, ns);
    }
    kube.pull_secret(d, "team-a", &h, "puller", "s3cret");
    let with_secret = pod("team-a", "app", &private, "")
        .replace("spec:\n", "spec:\n  imagePullSecrets: [{name: regcred}]\n");
    let pods = [with_secret, pod("team-b", "copy", &private, "")];
    let run = kube.apply(d, "pods.yaml", &pods.join("---\n"), &[]);
    assert_eq!(run.code, 0, "{run:?}");

    let run = audit(&kube, &policy, &h, "json");
    assert_eq!(run.code, 1, "{run:?}");
    let report = run.json();
    assert_eq!(
        report["summary"]["artifacts"], 2,
        "one check per set of credentials: {report:#}"
    );
    let a = workload(&report, "team-a", "Pod", "app");
    assert_eq!(a["verdict"], "allow", "{a:#}");
    let b = workload(&report, "team-b", "Pod", "copy");
    assert_eq!(b["verdict"], "deny", "{b:#}");
    assert_eq!(b["artifacts"][0]["failure"], "auth", "{b:#}");
}

/// Rules per namespace: the same image is checked for each namespace it runs in, team A's key
/// counting only where the namespace is labelled `team: a` (its labels read from the cluster).
#[test]
fn audit_checks_an_artifact_per_namespace_under_namespace_rules() {
    let Some(kube) =
        MiniCluster::start_or_skip("audit_checks_an_artifact_per_namespace_under_namespace_rules")
    else {
        return;
    };
    let reg = TestRegistry::start();
    let h = reg.host();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (key_a, public_a) = generate_keys(d, "team-a");
    let (_, public_floor) = generate_keys(d, "floor");
    let app = format!("{h}/apps/app:v1");
    push_image(
        &reg.client(),
        &ocigate::reference::ImageRef::parse(&app).unwrap(),
        "app",
    );
    let s = sign(&reg, &key_a, &app, &[]);
    assert_eq!(s.code, 0, "{s:?}");
    let policy = d.join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "apiVersion: ocigate.dev/v1alpha1\nkind: Policy\nnoMatch: deny\n\
             keys: [{{name: team-a, path: {}}}, {{name: floor, path: {}}}]\n\
             rules:\n\
             \x20 - name: team-a\n    images: [\"{h}/**\"]\n    namespaceSelector: {{matchLabels: {{team: a}}}}\n    \
             authorities: [{{key: {{name: team-a}}, tlog: skip}}]\n\
             \x20 - name: floor\n    images: [\"{h}/**\"]\n    \
             authorities: [{{key: {{name: floor}}, tlog: skip}}]\n",
            public_a.display(),
            public_floor.display()
        ),
    )
    .unwrap();
    let check = ocigate(&["policy", "check", policy.to_str().unwrap()], &[]);
    assert_eq!(check.code, 0, "{check:?}");
    let run = kube.apply(
        d,
        "ns.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: team-a, labels: {team: a}}\n---\n\
         apiVersion: v1\nkind: Namespace\nmetadata: {name: team-b}\n",
        &[],
    );
    assert_eq!(run.code, 0, "{run:?}");
    let pods = [
        pod("team-a", "app", &app, ""),
        pod("team-b", "app", &app, ""),
    ];
    let run = kube.apply(d, "pods.yaml", &pods.join("---\n"), &[]);
    assert_eq!(run.code, 0, "{run:?}");

    let run = audit(&kube, &policy, &h, "json");
    assert_eq!(run.code, 1, "{run:?}");
    let report = run.json();
    assert_eq!(
        report["summary"]["artifacts"], 2,
        "one check per namespace: {report:#}"
    );
    let a = workload(&report, "team-a", "Pod", "app");
    assert_eq!(a["verdict"], "allow", "{a:#}");
    assert_eq!(a["artifacts"][0]["rule"], "team-a", "{a:#}");
    let b = workload(&report, "team-b", "Pod", "app");
    assert_eq!(b["verdict"], "deny", "{b:#}");
    assert_eq!(b["artifacts"][0]["rule"], "floor", "{b:#}");
    assert_eq!(b["artifacts"][0]["failure"], "untrusted", "{b:#}");
}

/// Custom kinds: a preset's (an Argo Rollout) and one given by flag whose plural comes from the
/// API's discovery are listed and their templates checked; without the flags they are not read.
#[test]
fn audit_reads_the_configured_custom_kinds() {
    let Some(kube) = MiniCluster::start_or_skip("audit_reads_the_configured_custom_kinds") else {
        return;
    };
    let reg = TestRegistry::start();
    let h = reg.host();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_, public) = generate_keys(d, "k");
    let nosig = format!("{h}/apps/nosig:v1");
    push_image(
        &reg.client(),
        &ocigate::reference::ImageRef::parse(&nosig).unwrap(),
        "n",
    );
    let policy = d.join("policy.yaml");
    write_key_policy(&policy, &public, "apps", &format!("{h}/**"));
    kube.namespace(d, "team-a");
    for (group, version, kind, plural) in [
        ("argoproj.io", "v1alpha1", "Rollout", "rollouts"),
        ("example.com", "v1", "Runner", "runners"),
    ] {
        let run = kube.apply(
            d,
            &format!("{plural}.yaml"),
            &crate::kinds::crd(group, version, kind, plural),
            &[],
        );
        assert_eq!(run.code, 0, "{run:?}");
    }
    let objects = format!(
        "apiVersion: argoproj.io/v1alpha1\nkind: Rollout\nmetadata: {{name: web, namespace: team-a}}\n\
         spec:\n  template:\n    spec:\n      containers:\n      - {{name: app, image: \"{nosig}\"}}\n\
         ---\napiVersion: example.com/v1\nkind: Runner\nmetadata: {{name: job, namespace: team-a}}\n\
         spec:\n  podSpec:\n    containers:\n    - {{name: app, image: \"{nosig}\"}}\n"
    );
    // The CRDs are served a moment after they are created.
    let created = within(20, || {
        let run = kube.apply(d, "objects.yaml", &objects, &[]);
        (run.code == 0).then_some(run)
    });
    assert!(created.is_some(), "the custom objects were not created");

    let flags = [
        "--pod-template-preset",
        "argo-rollout",
        "--pod-template-kind",
        "example.com/v1/Runner=spec.podSpec",
    ];
    let run = audit_with(&kube, &policy, &h, "json", &flags);
    assert_eq!(run.code, 1, "{run:?}");
    let report = run.json();
    let rollout = workload(&report, "team-a", "Rollout", "web");
    assert_eq!(rollout["verdict"], "deny", "{rollout:#}");
    assert_eq!(
        rollout["artifacts"][0]["failure"], "unsigned",
        "{rollout:#}"
    );
    let places = &rollout["artifacts"][0]["places"][0];
    assert_eq!(
        places["field"], "spec.template.spec.containers[0].image",
        "{rollout:#}"
    );
    let runner = workload(&report, "team-a", "Runner", "job");
    assert_eq!(
        runner["artifacts"][0]["places"][0]["field"],
        "spec.podSpec.containers[0].image"
    );
    let listed = report["listed"].as_array().unwrap();
    assert!(
        listed.iter().any(|l| l["kind"] == "Runner"
            && l["apiVersion"] == "example.com/v1"
            && l["objects"] == 1),
        "the Runner's plural comes from discovery: {report:#}"
    );

    let run = audit_with(&kube, &policy, &h, "json", &[]);
    assert_eq!(
        run.code, 0,
        "without the flags the custom kinds are not read: {run:?}"
    );
    assert_eq!(run.json()["summary"]["artifacts"], 0);
}

/// A namespace whose report cannot be written (it is being deleted: the API refuses new
/// objects in it) does not keep the namespaces after it from being reported; the audit is
/// counted as failed and says which report.
#[test]
fn a_report_that_cannot_be_written_does_not_hold_up_the_others() {
    const TEST: &str = "a_report_that_cannot_be_written_does_not_hold_up_the_others";
    let Some(kube) = MiniCluster::start_or_skip(TEST) else {
        return;
    };
    let reg = TestRegistry::start();
    let h = reg.host();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (key, public) = generate_keys(d, "k");
    let web = format!("{h}/apps/web:v1");
    push_image(
        &reg.client(),
        &ocigate::reference::ImageRef::parse(&web).unwrap(),
        "web",
    );
    let s = sign(&reg, &key, &web, &[]);
    assert_eq!(s.code, 0, "{s:?}");
    let policy = d.join("policy.yaml");
    write_key_policy(&policy, &public, "apps", &format!("{h}/**"));
    let crds = repo_root().join("../shared/corpus/gitops/policyreport");
    let run = kube.kubectl(&["apply", "-f", crds.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{run:?}");
    let run = kube.apply(d, "lease-crd.yaml", LEASE_CRD, &[]);
    assert_eq!(run.code, 0, "{run:?}");
    // `aaa-going` comes first in the reports' order; deleted with its Pod in it, it stays
    // Terminating (no namespace controller here), and the API refuses a report in it.
    for ns in ["aaa-going", "zzz", "ocigate-system"] {
        kube.namespace(d, ns);
    }
    let pods = [
        pod("aaa-going", "web", &web, ""),
        pod("zzz", "web", &web, ""),
    ];
    let run = kube.apply(d, "pods.yaml", &pods.join("---\n"), &[]);
    assert_eq!(run.code, 0, "{run:?}");
    let run = kube.kubectl(&["delete", "namespace", "aaa-going", "--wait=false"]);
    assert_eq!(run.code, 0, "{run:?}");

    let tls = make_tls(d);
    let args = [
        "--kubeconfig",
        kube.kubeconfig().to_str().unwrap(),
        "--audit-interval",
        "1s",
        "--leader-election-namespace",
        "ocigate-system",
    ];
    let server = crate::webhook::start_serve(&policy, &tls, &h, &args);
    let z = within(40, || {
        get_json(&kube, "policyreport", "zzz", "ocigate").filter(|r| r["summary"]["pass"] == 1)
    });
    assert!(z.is_some(), "zzz was never reported");
    assert!(get_json(&kube, "policyreport", "aaa-going", "ocigate").is_none());
    let failed = metric(
        server.metrics,
        r#"ocigate_audit_runs_total{outcome="failed"}"#,
    );
    assert!(failed.is_some_and(|n| n >= 1.0), "{failed:?}");
}
