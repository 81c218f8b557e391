//! `verify --manifests`: rendered Kubernetes YAML and Kluctl project files checked with the same
//! extraction and engine as the webhook, against the real registry; Flux semver references
//! resolved the way Flux picks a tag (the highest match), also through the webhook.

use std::path::Path;

use crate::harness::*;

struct Repo {
    reg: TestRegistry,
    dir: tempfile::TempDir,
    public: std::path::PathBuf,
    policy: std::path::PathBuf,
}

/// apps/web:v1 signed, apps/old:v1 unsigned, charts/app with v1.0.0 (signed), v1.2.0
/// (unsigned), 2.0.0 (signed), charts/mychart:1.0.0 (signed).
fn repo() -> Repo {
    let reg = TestRegistry::start();
    let client = reg.client();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = generate_keys(dir.path(), "k");
    for (r, signed) in [
        ("apps/web:v1", true),
        ("apps/old:v1", false),
        ("charts/app:v1.0.0", true),
        ("charts/app:v1.2.0", false),
        ("charts/app:2.0.0", true),
        ("charts/app:not-semver", true),
        ("charts/mychart:1.0.0", true),
    ] {
        let reference = reg.reference(r);
        push_image(&client, &reference, r);
        if signed {
            let s = sign(&reg, &key, &reference.to_string(), &[]);
            assert_eq!(s.code, 0, "{s:?}");
        }
    }
    let policy = dir.path().join("policy.yaml");
    write_key_policy(&policy, &public, "all", &format!("{}/**", reg.host()));
    Repo {
        reg,
        dir,
        public,
        policy,
    }
}

fn verify_manifests(r: &Repo, path: &str) -> Run {
    let host = r.reg.host();
    ocigate(
        &[
            "verify",
            "--manifests",
            path,
            "--policy",
            r.policy.to_str().unwrap(),
            "--registry-plain-http",
            &host,
            "-o",
            "json",
        ],
        &[],
    )
}

fn result_for<'a>(v: &'a serde_json::Value, needle: &str) -> &'a serde_json::Value {
    v["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["reference"].as_str().is_some_and(|s| s.contains(needle)))
        .unwrap_or_else(|| panic!("no result for {needle}: {v}"))
}

#[test]
fn rendered_manifests_and_kluctl_files_are_checked_like_the_webhook_would() {
    let r = repo();
    let _ = &r.public;
    let h = r.reg.host();
    let project = r.dir.path().join("project");
    std::fs::create_dir_all(project.join("apps")).unwrap();
    std::fs::write(
        project.join("apps/rendered.yaml"),
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: apps}}\n\
             spec:\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    \
             spec:\n      containers:\n      - {{name: web, image: {h}/apps/web:v1}}\n---\n\
             apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmRepository\nmetadata: {{name: charts, namespace: flux}}\n\
             spec: {{type: oci, url: oci://{h}/charts, interval: 5m}}\n---\n\
             apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata: {{name: mychart, namespace: flux}}\n\
             spec:\n  interval: 5m\n  chart:\n    spec:\n      chart: mychart\n      version: 1.0.0\n      \
             sourceRef: {{kind: HelmRepository, name: charts}}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        project.join("deployment.yaml"),
        format!("deployments:\n- oci:\n    url: oci://{h}/apps/web\n    ref:\n      tag: v1\n"),
    )
    .unwrap();
    let v = verify_manifests(&r, project.to_str().unwrap());
    assert_eq!(v.code, 0, "{v:?}");
    let json = v.json();
    assert_eq!(result_for(&json, "apps/web:v1")["verdict"], "allow");
    assert_eq!(
        result_for(&json, "charts/mychart:1.0.0")["verdict"],
        "allow"
    );
    // Found twice (the Deployment and the Kluctl include), checked once.
    let web = result_for(&json, "apps/web:v1")["reasons"].to_string();
    assert!(
        web.contains("rendered.yaml") && web.contains("deployment.yaml"),
        "{web}"
    );
    assert_eq!(json["results"].as_array().unwrap().len(), 2, "{json}");

    // An unsigned Pod piped in on stdin... is a file here (the harness closes stdin).
    let pod = r.dir.path().join("pod.yaml");
    std::fs::write(
        &pod,
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: old}}\nspec:\n  containers:\n  - {{name: a, image: {h}/apps/old:v1}}\n"
        ),
    )
    .unwrap();
    let v = verify_manifests(&r, pod.to_str().unwrap());
    assert_eq!(v.code, 1, "{v:?}");
    assert_eq!(result_for(&v.json(), "apps/old:v1")["failure"], "unsigned");

    // A HelmRelease whose HelmRepository is not among the documents is not passed unchecked.
    let orphan = r.dir.path().join("orphan.yaml");
    std::fs::write(
        &orphan,
        "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata: {name: x, namespace: flux}\n\
         spec:\n  interval: 5m\n  chart:\n    spec:\n      chart: c\n      sourceRef: {kind: HelmRepository, name: missing}\n",
    )
    .unwrap();
    let v = verify_manifests(&r, orphan.to_str().unwrap());
    assert_eq!(v.code, 1, "{v:?}");
    let res = &v.json()["results"][0];
    assert_eq!(res["failure"], "invalid", "{v:?}");
    assert!(res["reasons"].to_string().contains("not found"), "{v:?}");

    // Broken YAML is an error naming the file (exit 2).
    let broken = r.dir.path().join("broken.yaml");
    std::fs::write(&broken, "kind: [unclosed\n").unwrap();
    let v = verify_manifests(&r, broken.to_str().unwrap());
    assert_eq!(v.code, 2, "{v:?}");
    // With -o json the error is a JSON document on stdout.
    assert!(
        v.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("broken.yaml"),
        "{v:?}"
    );
}

fn oci_repository(h: &str, semver: &str) -> String {
    format!(
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: OCIRepository\nmetadata: {{name: app, namespace: flux}}\n\
         spec:\n  interval: 5m\n  url: oci://{h}/charts/app\n  ref:\n    semver: \"{semver}\"\n"
    )
}

#[test]
fn flux_semver_picks_the_highest_match_and_that_one_must_be_signed() {
    let r = repo();
    let h = r.reg.host();
    let f = r.dir.path().join("ocirepo.yaml");
    // The highest match of >=1.0.0 <2.0.0 is v1.2.0, which is unsigned: denied, although
    // v1.0.0 (also a match) is signed.
    std::fs::write(&f, oci_repository(&h, ">=1.0.0 <2.0.0")).unwrap();
    let v = verify_manifests(&r, f.to_str().unwrap());
    assert_eq!(v.code, 1, "{v:?}");
    let res = &v.json()["results"][0];
    assert_eq!(res["reference"], format!("{h}/charts/app:v1.2.0"), "{v:?}");
    assert_eq!(res["failure"], "unsigned", "{v:?}");
    assert!(
        res["reasons"][0]
            .as_str()
            .unwrap()
            .contains("picks tag v1.2.0 (the highest match among 3 version tags)"),
        "signature tags and not-semver are not versions: {v:?}"
    );
    // ~1.0 picks v1.0.0: signed.
    std::fs::write(&f, oci_repository(&h, "~1.0")).unwrap();
    let v = verify_manifests(&r, f.to_str().unwrap());
    assert_eq!(v.code, 0, "{v:?}");
    // Nothing matches: not found, never "unsigned" and never allow.
    std::fs::write(&f, oci_repository(&h, ">=9")).unwrap();
    let v = verify_manifests(&r, f.to_str().unwrap());
    assert_eq!(v.code, 1, "{v:?}");
    assert_eq!(v.json()["results"][0]["failure"], "not-found", "{v:?}");
}

#[test]
fn flux_ocirepository_semver_through_the_webhook() {
    use crate::harness::make_tls;
    use crate::webhook::{start_serve, tls_client};
    let r = repo();
    let h = r.reg.host();
    let tls = make_tls(r.dir.path());
    let server = start_serve(&r.policy, &tls, &h, &[]);
    let client = tls_client(&tls);
    let object: serde_json::Value = {
        let docs =
            ocigate::extract::parse_documents(&oci_repository(&h, ">=1.0.0 <2.0.0")).unwrap();
        docs.into_iter().next().unwrap()
    };
    let review = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "flux-1",
            "kind": {"group": "source.toolkit.fluxcd.io", "version": "v1", "kind": "OCIRepository"},
            "resource": {"group": "source.toolkit.fluxcd.io", "version": "v1", "resource": "ocirepositories"},
            "name": "app", "namespace": "flux", "operation": "CREATE",
            "userInfo": {"username": "flux"}, "object": object,
        }
    });
    let out: serde_json::Value = client
        .post(server.url("/validate"))
        .json(&review)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(out["response"]["allowed"], false, "{out}");
    let msg = out["response"]["status"]["message"].as_str().unwrap();
    assert!(
        msg.contains("v1.2.0") && msg.contains("[unsigned]"),
        "{msg}"
    );
}

#[test]
fn a_rule_can_require_flux_to_verify_its_sources_too() {
    let r = repo();
    let h = r.reg.host();
    let policy = r.dir.path().join("flux-policy.yaml");
    std::fs::write(
        &policy,
        std::fs::read_to_string(&r.policy).unwrap().replace(
            "    authorities:",
            "    fluxVerification: required\n    authorities:",
        ),
    )
    .unwrap();
    let run = |yaml: &str| {
        let f = r.dir.path().join("flux.yaml");
        std::fs::write(&f, yaml).unwrap();
        ocigate(
            &[
                "verify",
                "--manifests",
                f.to_str().unwrap(),
                "--policy",
                policy.to_str().unwrap(),
                "--registry-plain-http",
                &h,
                "-o",
                "json",
            ],
            &[],
        )
    };
    let repo = |verify: &str| {
        format!(
            "apiVersion: source.toolkit.fluxcd.io/v1\nkind: OCIRepository\nmetadata: {{name: app, namespace: flux}}\n\
             spec:\n  interval: 5m\n  url: oci://{h}/charts/app\n  ref: {{tag: v1.0.0}}\n{verify}"
        )
    };
    // Signed, but Flux would not verify it itself: the rule fails.
    let v = run(&repo(""));
    assert_eq!(v.code, 1, "{v:?}");
    let res = &v.json()["results"][0];
    assert_eq!(res["failure"], "flux-verify", "{v:?}");
    assert!(
        res["reasons"]
            .to_string()
            .contains("set spec.verify with provider: cosign"),
        "{v:?}"
    );
    // A HelmRelease's own verification is its chart template's: the hint names that field.
    let v = run(&format!(
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmRepository\nmetadata: {{name: charts, namespace: flux}}\n\
         spec: {{type: oci, url: \"oci://{h}/charts\", interval: 5m}}\n---\n\
         apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata: {{name: app, namespace: flux}}\n\
         spec:\n  interval: 5m\n  chart:\n    spec:\n      chart: app\n      version: v1.0.0\n      \
         sourceRef: {{kind: HelmRepository, name: charts}}\n"
    ));
    assert_eq!(v.code, 1, "{v:?}");
    let reasons = v.json()["results"][0]["reasons"].to_string();
    assert!(
        reasons.contains("set spec.chart.spec.verify with provider: cosign"),
        "{v:?}"
    );
    // With Flux's own cosign verification: allowed.
    let v = run(&repo("  verify: {provider: cosign}\n"));
    assert_eq!(v.code, 0, "{v:?}");
    // Notation is not cosign.
    let v = run(&repo("  verify: {provider: notation}\n"));
    assert_eq!(v.code, 1, "{v:?}");
    // A Pod is not a Flux source: the option does not apply to it.
    let v = run(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n  containers:\n  - {{name: a, image: {h}/charts/app:v1.0.0}}\n"
    ));
    assert_eq!(v.code, 0, "{v:?}");
}

/// A tag list that is not one (an HTML page, as a misconfigured proxy serves) is a registry
/// failure, never "no tag matches" and never allow.
#[test]
fn a_garbage_tag_list_is_a_registry_failure() {
    let r = repo();
    let front = crate::proxy::proxy(r.reg.host(), |req, resp| {
        if req.path.contains("/tags/list") {
            crate::proxy::Response::new(200)
                .header("Content-Type", "text/html")
                .body("<html>maintenance</html>")
        } else {
            resp
        }
    });
    let f = r.dir.path().join("ocirepo.yaml");
    std::fs::write(&f, oci_repository(&front.host(), ">=1.0.0 <2.0.0")).unwrap();
    let policy = r.dir.path().join("front.yaml");
    write_key_policy(&policy, &r.public, "all", &format!("{}/**", front.host()));
    let v = ocigate(
        &[
            "verify",
            "--manifests",
            f.to_str().unwrap(),
            "--policy",
            policy.to_str().unwrap(),
            "--registry-plain-http",
            &front.host(),
            "-o",
            "json",
        ],
        &[],
    );
    assert_eq!(v.code, 1, "{v:?}");
    let res = &v.json()["results"][0];
    assert_eq!(res["failure"], "registry", "{v:?}");
    assert!(res["reasons"].to_string().contains("tag list"), "{v:?}");
}

/// The tags of `charts/app` on a new registry, those marked signed signed with a new key, and
/// a policy wanting that key for the registry: (registry, dir, policy).
fn tagged(tags: &[(&str, bool)]) -> (TestRegistry, tempfile::TempDir, std::path::PathBuf) {
    let reg = TestRegistry::start();
    let client = reg.client();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = generate_keys(dir.path(), "k");
    for (t, signed) in tags {
        let reference = reg.reference(&format!("charts/app:{t}"));
        push_image(&client, &reference, t);
        if *signed {
            let s = sign(&reg, &key, &reference.to_string(), &[]);
            assert_eq!(s.code, 0, "{s:?}");
        }
    }
    let policy = dir.path().join("policy.yaml");
    write_key_policy(&policy, &public, "all", &format!("{}/**", reg.host()));
    (reg, dir, policy)
}

/// `verify --manifests` of `text`: its first result's (verdict, reference, first reason).
fn first_result(
    reg: &TestRegistry,
    dir: &Path,
    policy: &Path,
    text: &str,
) -> (String, String, String) {
    let f = dir.join("manifests.yaml");
    std::fs::write(&f, text).unwrap();
    let h = reg.host();
    let v = ocigate(
        &[
            "verify",
            "--manifests",
            f.to_str().unwrap(),
            "--policy",
            policy.to_str().unwrap(),
            "--registry-plain-http",
            &h,
            "-o",
            "json",
        ],
        &[],
    );
    let r = &v.json()["results"][0];
    let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    (s(&r["verdict"]), s(&r["reference"]), s(&r["reasons"][0]))
}

/// A Helm chart `version` is read as Flux's source-controller reads it, over the tags as Helm's
/// registry client lists them (`_` as `+`, strict SemVer only): `v1.0.0` is the tag spelled so;
/// a constraint never picks a `v`-tag or `1.x`, and does pick `1.0.1_evil` (a helper's review:
/// each of these was decided on another tag than the one Flux pulls).
#[test]
fn a_helm_chart_version_names_the_tag_flux_pulls() {
    // (tags, signed or not; the chart's version; the tag Flux pulls; the verdict)
    type Case<'a> = (&'a [(&'a str, bool)], &'a str, &'a str, &'a str);
    let cases: [Case; 6] = [
        (
            &[("1.0.0", true), ("v1.0.0", false)],
            "v1.0.0",
            "v1.0.0",
            "deny",
        ),
        (&[("1.0.0", true), ("1.x", false)], "1.x", "1.0.0", "allow"),
        (
            &[("1.0.0", true), ("v1.0.0", false)],
            "1.0.0",
            "1.0.0",
            "allow",
        ),
        (&[("1.9.0", false), ("v2.0.0", true)], "*", "1.9.0", "deny"),
        (
            &[("1.0.0", true), ("1.0.1_evil", false)],
            "*",
            "1.0.1_evil",
            "deny",
        ),
        // Spaces make it a constraint to source-controller, which 1.0.1+evil meets too.
        (
            &[("1.0.1", true), ("1.0.1_evil", false)],
            " 1.0.1",
            "1.0.1_evil",
            "deny",
        ),
    ];
    for (tags, version, tag, want) in cases {
        let (reg, dir, policy) = tagged(tags);
        let h = reg.host();
        let text = format!(
            "apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmRepository\n\
             metadata: {{name: charts, namespace: flux}}\n\
             spec: {{type: oci, url: \"oci://{h}/charts\", interval: 5m}}\n---\n\
             apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmChart\n\
             metadata: {{name: app, namespace: flux}}\n\
             spec:\n  interval: 5m\n  chart: app\n  version: \"{version}\"\n  \
             sourceRef: {{kind: HelmRepository, name: charts}}\n"
        );
        let (verdict, reference, reason) = first_result(&reg, dir.path(), &policy, &text);
        assert!(
            reference.ends_with(&format!("charts/app:{tag}"))
                || reason.contains(&format!("tag {tag} ")),
            "{version} over {tags:?}: {reference}: {reason}"
        );
        assert_eq!(verdict, want, "{version} over {tags:?}: {reason}");
    }
}

/// Tags of equal precedence at the top of a semver match (`2.0.0` and `v2.0.0`): Flux's
/// unstable sort may pull either, so each is checked (a helper's review: only the first listed
/// was, and Flux's sort, run on 14 tags, picked the other).
#[test]
fn equally_high_semver_tags_are_each_checked() {
    let mut tags: Vec<(String, bool)> = (0..=11).map(|i| (format!("1.0.{i}"), false)).collect();
    tags.push(("2.0.0".into(), true));
    tags.push(("v2.0.0".into(), false));
    let tags: Vec<(&str, bool)> = tags.iter().map(|(t, s)| (t.as_str(), *s)).collect();
    let (reg, dir, policy) = tagged(&tags);
    let h = reg.host();
    let (verdict, reference, reason) =
        first_result(&reg, dir.path(), &policy, &oci_repository(&h, ">=1.0.0"));
    assert_eq!(verdict, "deny", "{reference}: {reason}");
    assert!(reference.ends_with("charts/app:v2.0.0"), "{reference}");
    assert!(reason.contains("equally high tags"), "{reason}");
}
