//! Image volumes (`spec.volumes[].image.reference`, Kubernetes' ImageVolume): the kubelet pulls
//! them as it pulls container images, so the webhook (through Kubernetes' own admission code),
//! `/mutate` and `verify --manifests` check and pin them like containers.

use crate::harness::*;
use crate::webhook::{
    Cluster, cluster, kube_tools_or_skip, kwhclient, kwhclient_at, start_serve, write,
};

/// A Pod that runs `container` and mounts `volume` as an image volume.
fn pod_with_image_volume(name: &str, container: &str, volume: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: apps\nspec:\n  containers:\n  - name: app\n    image: {container}\n    volumeMounts:\n    - {{name: data, mountPath: /data}}\n  volumes:\n  - name: scratch\n    emptyDir: {{}}\n  - name: data\n    image:\n      reference: {volume}\n      pullPolicy: IfNotPresent\n"
    )
}

/// A Deployment whose pod template mounts `volume` as an image volume.
fn deployment_with_image_volume(name: &str, container: &str, volume: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  namespace: apps\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n      containers:\n      - name: app\n        image: {container}\n      volumes:\n      - name: data\n        image:\n          reference: {volume}\n"
    )
}

#[test]
fn an_unsigned_image_volume_is_denied_and_a_signed_one_pinned() {
    let Some(k) = kube_tools_or_skip("an_unsigned_image_volume_is_denied_and_a_signed_one_pinned")
    else {
        return;
    };
    let Cluster {
        reg,
        dir,
        tls,
        policy,
        signed,
        unsigned,
    } = cluster();
    let server = start_serve(&policy, &tls, &reg.host(), &[]);
    let d = dir.path();

    // A signed container does not carry an unsigned image volume in.
    let bad = write(
        d,
        "bad.yaml",
        &pod_with_image_volume("bad", &signed, &unsigned),
    );
    let run = kwhclient(&k, &server, &tls, &bad, &[]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("DENIED"), "{run:?}");
    assert!(
        run.stdout.contains(&format!(
            "{unsigned} (spec.volumes[1].image.reference) [unsigned]"
        )),
        "the deny names the volume's field: {run:?}"
    );

    // The same in a workload's pod template.
    let dep = write(
        d,
        "dep.yaml",
        &deployment_with_image_volume("dep", &signed, &unsigned),
    );
    let run = kwhclient(&k, &server, &tls, &dep, &["-resource", "deployments"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout
            .contains("spec.template.spec.volumes[0].image.reference"),
        "{run:?}"
    );

    // An UPDATE that adds an unsigned image volume is checked.
    let before = write(
        d,
        "before.yaml",
        &pod_with_image_volume("p", &signed, &signed),
    );
    let after = write(
        d,
        "after.yaml",
        &pod_with_image_volume("p", &signed, &unsigned),
    );
    let run = kwhclient(
        &k,
        &server,
        &tls,
        &after,
        &["-operation", "UPDATE", "-old", before.to_str().unwrap()],
    );
    assert_eq!(run.code, 1, "{run:?}");

    // Signed everywhere: admitted, and /mutate pins the volume's tag as it pins the container's.
    let ok = write(d, "ok.yaml", &pod_with_image_volume("ok", &signed, &signed));
    let run = kwhclient(&k, &server, &tls, &ok, &[]);
    assert_eq!(run.code, 0, "{run:?}");
    let run = kwhclient_at(&k, &server, "/mutate", &tls, &ok, &["-mode", "mutating"]);
    assert_eq!(run.code, 0, "{run:?}");
    let pinned = |field: &str| {
        run.stdout.lines().any(|l| {
            l.trim_start_matches([' ', '-']).starts_with(field)
                && l.contains(&format!("{signed}@sha256:"))
        })
    };
    assert!(pinned("image:"), "container pinned: {run:?}");
    assert!(pinned("reference:"), "image volume pinned: {run:?}");
}

#[test]
fn verify_manifests_checks_image_volumes() {
    let Cluster {
        reg,
        dir,
        policy,
        signed,
        unsigned,
        ..
    } = cluster();
    let file = write(
        dir.path(),
        "rendered.yaml",
        &format!(
            "{}---\n{}",
            pod_with_image_volume("p", &signed, &signed),
            deployment_with_image_volume("d", &signed, &unsigned)
        ),
    );
    let run = ocigate(
        &[
            "verify",
            "--manifests",
            file.to_str().unwrap(),
            "--policy",
            policy.to_str().unwrap(),
            "--registry-plain-http",
            &reg.host(),
            "-o",
            "json",
        ],
        &[],
    );
    assert_eq!(run.code, 1, "{run:?}");
    let v = run.json();
    let denied: Vec<&serde_json::Value> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["verdict"] == "deny")
        .collect();
    assert_eq!(denied.len(), 1, "{v}");
    assert_eq!(denied[0]["failure"], "unsigned", "{v}");
    let found = denied[0].to_string();
    assert!(
        found.contains("spec.template.spec.volumes[0].image.reference"),
        "the result names the volume's field: {v}"
    );
    // Every place an artifact is found is named (with the object's namespace), a second path
    // of the same object included.
    let allowed = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["verdict"] == "allow")
        .unwrap_or_else(|| panic!("{v}"))
        .to_string();
    for place in [
        "Pod apps/p spec.containers[0].image",
        "Pod apps/p spec.volumes[1].image.reference",
        "Deployment apps/d spec.template.spec.containers[0].image",
    ] {
        assert!(allowed.contains(place), "{place}: {allowed}");
    }
}
