//! Kluctl: the `KluctlDeployment` custom resource and the project files `deployment.yaml` (OCI
//! includes) and `helm-chart.yaml` (charts from OCI registries).
//!
//! Kluctl's rules (docs/kluctl/deployments/deployment-yml.md, helm.md, and pkg/helm/chart.go):
//! an OCI URL uses `oci://` and carries no tag or digest (`ref: {tag | digest}` does; no ref is
//! `latest`; a digest wins over a tag); for an `oci://` Helm repo the URL *is* the chart and
//! `chartName` is an error; `chartVersion` is an exact version.

use serde_json::Value;

use super::{
    Artifact, ExtractError, Extraction, OCI_SCHEME, Obj, Source, invalid, oci_repository_url,
    parse_tag, pinned,
};

pub(crate) const GROUP: &str = "gitops.kluctl.io";

fn source(path: String, artifact: Artifact) -> Source {
    Source {
        path,
        other_paths: Vec::new(),
        artifact,
        flux_verify: None,
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
        out.notes
            .push(format!("{who}: spec.source.git is a Git source, not OCI"));
    } else if let Some(url) = obj.opt_str("spec.source.url")? {
        // The deprecated flat form, which Kluctl always clones with Git.
        out.notes.push(format!(
            "{who}: spec.source.url {url:?} (deprecated flat form) is a Git source, not OCI"
        ));
    } else {
        return Err(obj.field_error("spec.source", "none of oci, git or url is set"));
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
        "deployment.yaml" | "deployment.yml" => deployment_file(&obj, &mut out)?,
        "helm-chart.yaml" | "helm-chart.yml" => helm_chart_file(&obj, &mut out)?,
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
