//! Kluctl: the `KluctlDeployment` custom resource and the project files `deployment.yaml` (OCI
//! includes) and `helm-chart.yaml` (charts from OCI registries).
//!
//! Kluctl's rules (docs/kluctl/deployments/deployment-yml.md, helm.md, and pkg/helm/chart.go):
//! an OCI URL uses `oci://` and carries no tag or digest (`ref: {tag | digest}` does; no ref is
//! `latest`; a digest wins over a tag); for an `oci://` Helm repo the URL *is* the chart and
//! `chartName` is an error; `chartVersion` is an exact version.

use serde_json::Value;

use super::{
    Artifact, ExtractError, Extraction, OCI_SCHEME, Obj, Source, Unverified, invalid,
    oci_repository_url, parse_tag, pinned,
};

pub(crate) const GROUP: &str = "gitops.kluctl.io";

const DEPLOYMENT_YAML: &str = "deployment.yaml";
const DEPLOYMENT_YML: &str = "deployment.yml";
const HELM_CHART_YAML: &str = "helm-chart.yaml";
const HELM_CHART_YML: &str = "helm-chart.yml";

/// Whether a file's base name is a Kluctl project file with OCI sources (`deployment.yaml`,
/// `helm-chart.yaml`, or `.yml`); others (values files, kustomization fragments) have none.
pub(crate) fn is_project_file(base_name: &str) -> bool {
    [
        DEPLOYMENT_YAML,
        DEPLOYMENT_YML,
        HELM_CHART_YAML,
        HELM_CHART_YML,
    ]
    .contains(&base_name)
}

fn source(path: String, artifact: Artifact) -> Source {
    Source {
        path,
        other_paths: Vec::new(),
        artifact,
        flux_verify: None,
        flux: false,
        flux_verify_field: String::new(),
        via: Vec::new(),
    }
}

/// `{url, ref: {tag | digest}}` at `at` (e.g. `spec.source.oci`), as a source at `at.url`.
fn oci_ref(obj: &Obj<'_>, at: &str) -> Result<Source, ExtractError> {
    let url_path = format!("{at}.url");
    let url = obj.req_str(&url_path)?;
    let repo = oci_repository_url(url).map_err(|p| obj.field_error(&url_path, p))?;
    obj.opt_map(&format!("{at}.ref"))?;
    let digest = obj.opt_str(&format!("{at}.ref.digest"))?;
    let tag = obj.opt_str(&format!("{at}.ref.tag"))?;
    let artifact = match (digest, tag) {
        (Some(d), _) => pinned(repo, None, Some(d)),
        (None, Some(t)) => pinned(repo, Some(t), None),
        (None, None) => pinned(repo, Some("latest"), None),
    };
    Ok(source(url_path, artifact))
}

pub(crate) fn kluctl_deployment(obj: &Obj<'_>, out: &mut Extraction) -> Result<(), ExtractError> {
    if obj.opt_map("spec.source")?.is_none() {
        return Err(obj.field_error("spec.source", "missing"));
    }
    let who = format!("{} {}", obj.kind, obj.display_name());
    if obj.opt_map("spec.source.oci")?.is_some() {
        out.sources.push(oci_ref(obj, "spec.source.oci")?);
        out.notes.push(format!(
            "{who}: the project's own OCI includes and Helm charts are checked only when its \
             deployment.yaml and helm-chart.yaml files are given"
        ));
    } else if obj.opt_map("spec.source.git")?.is_some() {
        let url = obj.opt_str("spec.source.git.url")?.unwrap_or("?");
        out.unverified.push(Unverified {
            path: "spec.source.git".into(),
            what: format!("Git repository {url:?}"),
            reason: format!(
                "{who}: spec.source.git is a Git source, not OCI: ocigate does not verify it"
            ),
        });
    } else if let Some(url) = obj.opt_str("spec.source.url")? {
        // The deprecated flat form, which Kluctl always clones with Git.
        out.unverified.push(Unverified {
            path: "spec.source.url".into(),
            what: format!("Git repository {url:?}"),
            reason: format!(
                "{who}: spec.source.url {url:?} (deprecated flat form) is a Git source, not \
                 OCI: ocigate does not verify it"
            ),
        });
    } else {
        return Err(obj.field_error("spec.source", "none of oci, git or url is set"));
    }
    source_overrides(obj, &who, out)
}

/// `spec.sourceOverrides`: kluctl-controller serves a repository key's content (the verified
/// `spec.source.oci` itself, or an include) from another URL. An `oci://` one is an artifact
/// ocigate cannot tell the version of (denied); any other (Git, a source-override proxy) is
/// unverified content, said like a Git source.
fn source_overrides(obj: &Obj<'_>, who: &str, out: &mut Extraction) -> Result<(), ExtractError> {
    for (i, o) in obj.list("spec.sourceOverrides")?.iter().enumerate() {
        let at = format!("spec.sourceOverrides[{i}]");
        let text = |field: &str| o.get(field).and_then(Value::as_str).unwrap_or("?");
        let (key, url) = (text("repoKey"), text("url"));
        let scheme = url.get(..OCI_SCHEME.len());
        if scheme.is_some_and(|s| s.eq_ignore_ascii_case(OCI_SCHEME)) {
            let problem = format!(
                "{at} serves repository {key:?} from {url}, whose tag or digest is not named: \
                 ocigate cannot tell which artifact Kluctl pulls"
            );
            out.sources
                .push(source(format!("{at}.url"), invalid(url, problem)));
        } else {
            out.unverified.push(Unverified {
                path: at.clone(),
                what: format!("source override {url:?}"),
                reason: format!(
                    "{who}: {at} serves repository {key:?} from {url:?}, not a verified OCI \
                     artifact: ocigate does not verify it"
                ),
            });
        }
    }
    Ok(())
}

/// The OCI sources of a Kluctl project file: `deployment.yaml` or `helm-chart.yaml` (also
/// `.yml`), told apart by the base name of `file_name`, which is otherwise only used in messages.
pub fn extract_kluctl_file(file_name: &str, doc: &Value) -> Result<Extraction, ExtractError> {
    let base = file_name.rsplit(['/', '\\']).next().unwrap_or(file_name);
    let obj = Obj {
        value: doc,
        api_version: None,
        kind: "Kluctl project file".into(),
        namespace: None,
        name: file_name.to_string(),
    };
    if !doc.is_object() {
        return Err(obj.field_error("(document)", "expected a mapping"));
    }
    let mut out = Extraction::default();
    match base {
        DEPLOYMENT_YAML | DEPLOYMENT_YML => deployment_file(&obj, &mut out)?,
        HELM_CHART_YAML | HELM_CHART_YML => helm_chart_file(&obj, &mut out)?,
        _ => {
            return Err(ExtractError::UnknownKluctlFile {
                file: file_name.to_string(),
            });
        }
    }
    Ok(out)
}

fn deployment_file(obj: &Obj<'_>, out: &mut Extraction) -> Result<(), ExtractError> {
    for (i, item) in obj.list("deployments")?.iter().enumerate() {
        let at = format!("deployments[{i}]");
        if !item.is_object() {
            return Err(obj.field_error(&at, "expected a mapping"));
        }
        if obj.opt_map(&format!("{at}.oci"))?.is_some() {
            out.sources.push(oci_ref(obj, &format!("{at}.oci"))?);
        } else if let Some(git) = obj.get(&format!("{at}.git")) {
            let url = git
                .as_str()
                .or_else(|| git.get("url").and_then(Value::as_str))
                .unwrap_or("?");
            out.notes.push(format!(
                "{}: {at}.git {url:?} is a Git include, not OCI",
                obj.name
            ));
        }
    }
    Ok(())
}

fn helm_chart_file(obj: &Obj<'_>, out: &mut Extraction) -> Result<(), ExtractError> {
    if obj.opt_map("helmChart")?.is_none() {
        return Err(obj.field_error("helmChart", "missing"));
    }
    let name = &obj.name;
    if let Some(repo) = obj.opt_str("helmChart.repo")? {
        if !repo.starts_with(OCI_SCHEME) {
            out.notes.push(format!(
                "{name}: helmChart.repo {repo:?} is a Helm chart index, not OCI"
            ));
            return Ok(());
        }
        let chart = oci_repository_url(repo).map_err(|p| obj.field_error("helmChart.repo", p))?;
        let artifact = if obj.opt_str("helmChart.chartName")?.is_some() {
            invalid(
                repo,
                "helmChart.chartName can't be set with an oci:// repo (the repo URL is the chart)",
            )
        } else {
            match obj.opt_str("helmChart.chartVersion")? {
                None => invalid(repo, "helmChart.chartVersion is missing"),
                Some(v) if parse_tag(v).is_some() => {
                    pinned(chart, Some(&v.replace('+', "_")), None)
                }
                Some(v) => invalid(
                    &format!("{repo} {v}"),
                    "helmChart.chartVersion must be an exact semantic version",
                ),
            }
        };
        out.sources.push(source("helmChart.repo".into(), artifact));
    } else if let Some(path) = obj.opt_str("helmChart.path")? {
        out.notes.push(format!(
            "{name}: helmChart.path {path:?} is a chart inside the project, not OCI"
        ));
    } else if obj.get("helmChart.git").is_some() {
        out.notes
            .push(format!("{name}: helmChart.git is a Git source, not OCI"));
    } else {
        return Err(obj.field_error("helmChart", "none of repo, path or git is set"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::*;
    use serde_json::json;

    const K: &str = "gitops/kluctl/";

    fn file(rel: &str, as_name: &str) -> Option<Result<Extraction, ExtractError>> {
        let docs = corpus_docs(&format!("{K}{rel}"))?;
        assert_eq!(docs.len(), 1, "{rel}");
        Some(extract_kluctl_file(as_name, &docs[0]))
    }

    #[test]
    fn deployment_yaml_oci_includes() {
        let Some(out) = file(
            "docs-extracted/deployment-yml/deployment-oci-include-ref-tag.yaml",
            "deployment.yaml",
        ) else {
            return;
        };
        let out = out.unwrap();
        assert_eq!(out.sources[0].path, "deployments[0].oci.url");
        assert_eq!(
            reference(&out.sources[0].artifact),
            "ghcr.io/kluctl/kluctl-examples/simple:latest"
        );
        let out = file(
            "docs-extracted/deployment-yml/deployment-oci-include-ref-digest.yaml",
            "project/deployment.yml",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            reference(&out.sources[0].artifact),
            "ghcr.io/kluctl/kluctl-examples/simple@sha256:9ac3ba762c373ebccecb9dd3ac1d8ca091e4bd4a101701ce99e6058c0c74eedc"
        );
        for rel in [
            "deployment-oci-include-url-only.yaml",
            "deployment-oci-include-subdir.yaml",
        ] {
            let out = file(
                &format!("docs-extracted/deployment-yml/{rel}"),
                "deployment.yaml",
            )
            .unwrap()
            .unwrap();
            assert_eq!(
                reference(&out.sources[0].artifact),
                "ghcr.io/kluctl/kluctl-examples/simple:latest",
                "{rel}"
            );
        }
        // Mixed items: path, include, git, oci (with Jinja elsewhere in the file).
        let out = file(
            "docs-extracted/deployment-yml/deployment-example-path-include-git-oci.yaml",
            "deployment.yaml",
        )
        .unwrap()
        .unwrap();
        assert_eq!(out.sources.len(), 1);
        assert_eq!(out.sources[0].path, "deployments[4].oci.url");
        assert_eq!(out.notes.len(), 1);
        assert!(
            out.notes[0].contains("deployments[3].git"),
            "{:?}",
            out.notes
        );
        let out = file(
            "docs-extracted/deployment-yml/deployment-git-include-ref-branch-subdir.yaml",
            "deployment.yaml",
        )
        .unwrap()
        .unwrap();
        assert!(out.sources.is_empty() && out.notes.len() == 1);
    }

    #[test]
    fn helm_chart_yaml() {
        let Some(out) = file(
            "docs-extracted/helm/helm-chart-oci-repo-chartversion.yaml",
            "helm-chart.yaml",
        ) else {
            return;
        };
        let out = out.unwrap();
        // For oci:// repos the URL is the chart; chartName is not appended.
        assert_eq!(out.sources[0].path, "helmChart.repo");
        assert_eq!(
            reference(&out.sources[0].artifact),
            "r.myreg.io/mycharts/pepper:1.2.3"
        );
        let out = file(
            "kluctl-examples/blog/2023-02-28-managing-helm-with-kluctl/apps/podinfo/helm-chart.yaml",
            "apps/podinfo/helm-chart.yaml",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            reference(&out.sources[0].artifact),
            "ghcr.io/stefanprodan/charts/podinfo:6.3.4"
        );
        let out = file(
            "docs-extracted/helm/helm-chart-https-repo-chartname-updateconstraints.yaml",
            "helm-chart.yaml",
        )
        .unwrap()
        .unwrap();
        assert!(out.sources.is_empty());
        assert!(out.notes[0].contains("not OCI"));
    }

    #[test]
    fn helm_chart_yaml_edge_cases() {
        let chart = |c: Value| extract_kluctl_file("helm-chart.yaml", &json!({"helmChart": c}));
        let problem = |c: Value| match &chart(c).unwrap().sources[0].artifact {
            Artifact::Invalid { problem, .. } => problem.clone(),
            other => panic!("{other:?}"),
        };
        // Kluctl's older docs show chartName with an oci:// repo; Kluctl rejects it.
        assert!(
            problem(json!({"repo": "oci://r.myreg.io/mycharts/pepper", "chartName": "pepper", "chartVersion": "1.2.3"}))
                .contains("chartName")
        );
        assert!(problem(json!({"repo": "oci://r.io/c"})).contains("chartVersion is missing"));
        assert!(problem(json!({"repo": "oci://r.io/c", "chartVersion": "~1.2"})).contains("exact"));
        assert_eq!(
            reference(
                &chart(json!({"repo": "oci://r.io/c", "chartVersion": "1.2.3+g1"}))
                    .unwrap()
                    .sources[0]
                    .artifact
            ),
            "r.io/c:1.2.3_g1"
        );
        let e = chart(json!({"repo": "oci://r.io/c", "chartVersion": 1.2})).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Kluctl project file helm-chart.yaml: field helmChart.chartVersion: expected a string, got a number"
        );
        let out = chart(json!({"path": "../charts/local"})).unwrap();
        assert!(out.sources.is_empty() && out.notes[0].contains("inside the project"));
        assert!(chart(json!({})).is_err());
        assert!(extract_kluctl_file("helm-chart.yaml", &json!({"other": 1})).is_err());
        let e = extract_kluctl_file("kustomization.yaml", &json!({})).unwrap_err();
        assert!(matches!(e, ExtractError::UnknownKluctlFile { .. }));
    }

    #[test]
    fn deployment_yaml_edge_cases() {
        let dep =
            |items: Value| extract_kluctl_file("deployment.yaml", &json!({"deployments": items}));
        let out = dep(json!([{"oci": {"url": "oci://ghcr.io/{{ args.org }}/x"}}])).unwrap();
        assert!(
            matches!(&out.sources[0].artifact, Artifact::Invalid { problem, .. } if problem.contains("template"))
        );
        let e = dep(json!([{"oci": {"url": "oci://ghcr.io/a/b:v1"}}])).unwrap_err();
        assert!(
            e.to_string().contains("deployments[0].oci.url")
                && e.to_string().contains("must not contain a tag"),
            "{e}"
        );
        let e = dep(json!([{"oci": {"ref": {"tag": "v1"}}}])).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("field deployments[0].oci.url: missing"),
            "{e}"
        );
        let e = dep(json!({"oci": {}})).unwrap_err();
        assert!(e.to_string().contains("expected a list"), "{e}");
        // No deployments at all (a vars-only project file) is fine.
        assert!(
            extract_kluctl_file("deployment.yaml", &json!({"vars": []}))
                .unwrap()
                .sources
                .is_empty()
        );
    }

    #[test]
    fn kluctl_deployments() {
        let Some(dir) = corpus() else { return };
        // The docs' example ends with a "  ..." line that is not YAML; without it, it parses.
        let rel =
            "docs-extracted/kluctldeployment/kluctldeployment-source-oci-ref-tag-credentials.yaml";
        let text = std::fs::read_to_string(dir.join(K).join(rel)).unwrap();
        let text = text.trim_end().strip_suffix("...").unwrap();
        let docs = parse_documents(text).unwrap();
        let out = block_on(extract(&docs[0], &DocumentSet::default())).unwrap();
        assert_eq!(out.sources[0].path, "spec.source.oci.url");
        assert_eq!(
            reference(&out.sources[0].artifact),
            "ghcr.io/kluctl/kluctl-examples/simple:latest"
        );
        assert_eq!(out.sources[0].flux_verify, None);
        for rel in [
            "docs-extracted/kluctldeployment/kluctldeployment-source-git-example.yaml",
            "docs-extracted/kluctldeployment/kluctldeployment-legacy-flat-source-url.yaml",
            "kluctl-examples/gitops-deployment/clusters/prod.example.com/app1.yaml",
        ] {
            let docs = corpus_docs(&format!("{K}{rel}")).unwrap();
            let out = block_on(extract(&docs[0], &DocumentSet::default())).unwrap();
            assert!(out.sources.is_empty(), "{rel}");
            assert!(
                out.unverified[0].reason.contains("Git source"),
                "{rel}: {:?}",
                out.unverified
            );
        }
        let kd = |source: Value| {
            json!({"apiVersion": "gitops.kluctl.io/v1beta1", "kind": "KluctlDeployment",
                "metadata": {"name": "k", "namespace": "ns"}, "spec": {"source": source}})
        };
        let d = "sha256:9ac3ba762c373ebccecb9dd3ac1d8ca091e4bd4a101701ce99e6058c0c74eedc";
        let out = block_on(extract(
            &kd(json!({"oci": {"url": "oci://r.io/p", "ref": {"tag": "v1", "digest": d}}})),
            &DocumentSet::default(),
        ))
        .unwrap();
        assert_eq!(reference(&out.sources[0].artifact), format!("r.io/p@{d}"));
        let e = block_on(extract(&kd(json!({})), &DocumentSet::default())).unwrap_err();
        assert_eq!(
            e.to_string(),
            "KluctlDeployment ns/k: field spec.source: none of oci, git or url is set"
        );
    }

    /// `spec.sourceOverrides` is never silently ignored (a helper's review: an override of the
    /// verified source's repository key was admitted without a word): an `oci://` one is
    /// denied, any other said unverified.
    #[test]
    fn source_overrides_are_denied_or_said() {
        let kd = json!({"apiVersion": "gitops.kluctl.io/v1beta1", "kind": "KluctlDeployment",
            "metadata": {"name": "k", "namespace": "ns"},
            "spec": {"source": {"oci": {"url": "oci://r.io/p", "ref": {"tag": "v1"}}},
                     "sourceOverrides": [
                        {"repoKey": "r.io/p", "url": "OCI://evil.io/p"},
                        {"repoKey": "r.io/p", "url": "https://git.example/p.git"}]}});
        let out = block_on(extract(&kd, &DocumentSet::default())).unwrap();
        assert_eq!(reference(&out.sources[0].artifact), "r.io/p:v1");
        assert_eq!(out.sources[1].path, "spec.sourceOverrides[0].url");
        assert!(
            matches!(&out.sources[1].artifact, Artifact::Invalid { problem, .. } if problem.contains("cannot tell")),
            "{:?}",
            out.sources[1]
        );
        assert_eq!(out.unverified.len(), 1, "{:?}", out.unverified);
        assert!(out.unverified[0].reason.contains("sourceOverrides[1]"));
    }
}
