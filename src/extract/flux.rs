//! Flux sources: OCIRepository, HelmChart (from an OCI HelmRepository) and HelmRelease.
//!
//! Resolution follows the controllers: OCIRepository `spec.ref` precedence is digest > semver >
//! tag > `latest` (source-controller `getArtifactRef`); a HelmChart's chart in an OCI
//! HelmRepository is `<repository URL without oci://>/<spec.chart>` at `spec.version` (default
//! `*`); a HelmRelease names its chart either inline (`spec.chart.spec`, from which
//! helm-controller makes a HelmChart) or by `spec.chartRef` (an OCIRepository or HelmChart).

use serde_json::Value;

use super::{
    Artifact, ExtractError, Extraction, FluxVerify, Hints, Lookup, MAX_LOOKUP_DEPTH, OCI_SCHEME,
    Obj, ObjectRef, Source, chart_version, invalid, oci_repository_url, pinned, semver_request,
};

pub(crate) const SOURCE_GROUP: &str = "source.toolkit.fluxcd.io";
pub(crate) const HELM_GROUP: &str = "helm.toolkit.fluxcd.io";
/// The version lookups ask for: the one the current CRDs serve (older served versions are the
/// same objects on the API server).
const SOURCE_API_VERSION: &str = "source.toolkit.fluxcd.io/v1";

fn source(
    path: &str,
    artifact: Artifact,
    flux_verify: Option<FluxVerify>,
    via: Vec<ObjectRef>,
) -> Source {
    Source {
        path: path.to_string(),
        other_paths: Vec::new(),
        artifact,
        flux_verify,
        via,
    }
}

/// An OCIRepository's artifact; `path` is the field of the object the caller was given.
pub(crate) fn oci_repository(
    obj: &Obj<'_>,
    path: &str,
    via: Vec<ObjectRef>,
) -> Result<Source, ExtractError> {
    let url = obj.req_str("spec.url")?;
    let repo = oci_repository_url(url).map_err(|p| obj.field_error("spec.url", p))?;
    obj.opt_map("spec.ref")?;
    let digest = obj.opt_str("spec.ref.digest")?;
    let semver = obj.opt_str("spec.ref.semver")?;
    let filter = obj.opt_str("spec.ref.semverFilter")?;
    let tag = obj.opt_str("spec.ref.tag")?;
    let artifact = match (digest, semver, tag) {
        (Some(d), _, _) => pinned(repo, None, Some(d)),
        (None, Some(s), _) => semver_request(repo, s, filter),
        (None, None, Some(t)) => pinned(repo, Some(t), None),
        (None, None, None) => pinned(repo, Some("latest"), None),
    };
    Ok(source(path, artifact, verify(obj, "spec.verify")?, via))
}

/// `spec.verify` (or HelmRelease's `spec.chart.spec.verify`); provider defaults to cosign.
fn verify(obj: &Obj<'_>, path: &str) -> Result<Option<FluxVerify>, ExtractError> {
    if obj.opt_map(path)?.is_none() {
        return Ok(None);
    }
    let provider = obj
        .opt_str(&format!("{path}.provider"))?
        .unwrap_or("cosign")
        .to_string();
    obj.opt_map(&format!("{path}.secretRef"))?;
    let secret_ref = obj
        .opt_str(&format!("{path}.secretRef.name"))?
        .map(str::to_string);
    let oidc_identities = obj.list(&format!("{path}.matchOIDCIdentity"))?.len();
    Ok(Some(FluxVerify {
        provider,
        secret_ref,
        oidc_identities,
    }))
}

/// Fetch `target`, which `obj` names in `field`, unless the chain is already too long.
async fn resolve<L: Lookup + Sync>(
    lookup: &L,
    obj: &Obj<'_>,
    field: &str,
    target: &ObjectRef,
    via: &[ObjectRef],
) -> Result<Option<Value>, ExtractError> {
    if via.len() >= MAX_LOOKUP_DEPTH {
        return Err(obj.field_error(
            field,
            format!(
                "{target} would be lookup number {}; chains end after {MAX_LOOKUP_DEPTH}",
                via.len() + 1
            ),
        ));
    }
    if via.contains(target) {
        return Err(obj.field_error(field, format!("{target} refers back to itself")));
    }
    lookup
        .get(target)
        .await
        .map_err(|source| ExtractError::Lookup {
            kind: obj.kind.clone(),
            name: obj.display_name(),
            field: field.to_string(),
            source,
        })
}

/// The object a lookup returned, read as `target` (its namespace when it omits one).
fn found<'a>(value: &'a Value, target: &ObjectRef) -> Result<Obj<'a>, ExtractError> {
    let hints = Hints {
        api_version: target.api_version.clone(),
        kind: Some(target.kind.clone()),
        namespace: target.namespace.clone(),
    };
    let found = Obj::new(value, &hints)?;
    if found.kind != target.kind {
        return Err(ExtractError::NotAnObject {
            problem: format!("looking up {target} returned a {}", found.kind),
        });
    }
    Ok(found)
}

fn not_found(path: &str, target: &ObjectRef, via: Vec<ObjectRef>) -> Source {
    source(
        path,
        invalid(&target.to_string(), format!("{target} not found")),
        None,
        via,
    )
}

/// A `sourceRef` / `chartRef`: kind, name and namespace (default: the referring object's).
fn object_ref(obj: &Obj<'_>, field: &str, namespaced: bool) -> Result<ObjectRef, ExtractError> {
    obj.opt_map(field)?
        .ok_or_else(|| obj.field_error(field, "missing"))?;
    let kind = obj.req_str(&format!("{field}.kind"))?.to_string();
    let name = obj.req_str(&format!("{field}.name"))?.to_string();
    let namespace = if namespaced {
        obj.opt_str(&format!("{field}.namespace"))?
            .map(str::to_string)
            .or_else(|| obj.namespace.clone())
    } else {
        obj.namespace.clone()
    };
    let api_version = match kind.as_str() {
        "HelmChart" | "HelmRepository" | "OCIRepository" | "GitRepository" | "Bucket" => {
            Some(SOURCE_API_VERSION.to_string())
        }
        _ => obj
            .opt_str(&format!("{field}.apiVersion"))?
            .map(str::to_string),
    };
    Ok(ObjectRef {
        api_version,
        kind,
        namespace,
        name,
    })
}

/// The chart `chart` in the HelmRepository `repo`: `Ok(None)` and a note when the repository is
/// not an OCI one.
fn chart_in_repository(
    repo: &Obj<'_>,
    chart: &str,
    notes: &mut Vec<String>,
    referrer: &Obj<'_>,
) -> Result<Option<String>, ExtractError> {
    let repo_type = repo.opt_str("spec.type")?.unwrap_or("default");
    if repo_type != "oci" {
        notes.push(format!(
            "{} {}: chart {chart:?} comes from HelmRepository {} of type {repo_type} \
             (an HTTP chart index), not an OCI source",
            referrer.kind,
            referrer.display_name(),
            repo.display_name()
        ));
        return Ok(None);
    }
    let url = repo.req_str("spec.url")?;
    let base = url
        .strip_prefix(OCI_SCHEME)
        .ok_or_else(|| {
            repo.field_error(
                "spec.url",
                format!("{url:?} must start with {OCI_SCHEME} for type oci"),
            )
        })?
        .trim_end_matches('/');
    Ok(Some(format!("{base}/{}", chart.trim_start_matches('/'))))
}

fn non_oci_note(obj: &Obj<'_>, field: &str, target: &ObjectRef) -> String {
    format!(
        "{} {}: {field} is {target}, not an OCI source",
        obj.kind,
        obj.display_name()
    )
}

/// A HelmChart's chart. `path` is the field of the object the caller was given (`spec.chart`
/// when it is this HelmChart); `via` the lookups that led here.
pub(crate) async fn helm_chart<L: Lookup + Sync>(
    obj: &Obj<'_>,
    lookup: &L,
    path: &str,
    via: Vec<ObjectRef>,
    out: &mut Extraction,
) -> Result<(), ExtractError> {
    let chart = obj.req_str("spec.chart")?;
    let version = obj.opt_str("spec.version")?;
    // LocalHelmChartSourceReference: same namespace as the HelmChart.
    let target = object_ref(obj, "spec.sourceRef", false)?;
    match target.kind.as_str() {
        "HelmRepository" => {}
        "GitRepository" | "Bucket" => {
            out.notes.push(non_oci_note(obj, "spec.sourceRef", &target));
            return Ok(());
        }
        other => {
            return Err(obj.field_error(
                "spec.sourceRef.kind",
                format!("{other:?} is not HelmRepository, GitRepository or Bucket"),
            ));
        }
    }
    let mut chain = via;
    let Some(value) = resolve(lookup, obj, "spec.sourceRef", &target, &chain).await? else {
        chain.push(target.clone());
        out.sources.push(not_found(path, &target, chain));
        return Ok(());
    };
    let repo = found(&value, &target)?;
    chain.push(target);
    if let Some(chart_ref) = chart_in_repository(&repo, chart, &mut out.notes, obj)? {
        out.sources.push(source(
            path,
            chart_version(&chart_ref, version),
            verify(obj, "spec.verify")?,
            chain,
        ));
    }
    Ok(())
}

pub(crate) async fn helm_release<L: Lookup + Sync>(
    obj: &Obj<'_>,
    lookup: &L,
    out: &mut Extraction,
) -> Result<(), ExtractError> {
    let chart = obj.opt_map("spec.chart")?;
    let chart_ref = obj.opt_map("spec.chartRef")?;
    match (chart, chart_ref) {
        (Some(_), Some(_)) => Err(obj.field_error(
            "spec",
            "both chart and chartRef are set; Flux accepts exactly one",
        )),
        (None, None) => Err(obj.field_error("spec", "neither chart nor chartRef is set")),
        (None, Some(_)) => release_chart_ref(obj, lookup, out).await,
        (Some(_), None) => release_chart_template(obj, lookup, out).await,
    }
}

async fn release_chart_ref<L: Lookup + Sync>(
    obj: &Obj<'_>,
    lookup: &L,
    out: &mut Extraction,
) -> Result<(), ExtractError> {
    const FIELD: &str = "spec.chartRef";
    let target = object_ref(obj, FIELD, true)?;
    match target.kind.as_str() {
        "OCIRepository" | "HelmChart" => {}
        "ExternalArtifact" => {
            out.notes.push(non_oci_note(obj, FIELD, &target));
            return Ok(());
        }
        other => {
            return Err(obj.field_error(
                "spec.chartRef.kind",
                format!("{other:?} is not OCIRepository, HelmChart or ExternalArtifact"),
            ));
        }
    }
    let Some(value) = resolve(lookup, obj, FIELD, &target, &[]).await? else {
        out.sources
            .push(not_found(FIELD, &target, vec![target.clone()]));
        return Ok(());
    };
    let referenced = found(&value, &target)?;
    let via = vec![target.clone()];
    if target.kind == "OCIRepository" {
        out.sources.push(oci_repository(&referenced, FIELD, via)?);
        Ok(())
    } else {
        helm_chart(&referenced, lookup, FIELD, via, out).await
    }
}

async fn release_chart_template<L: Lookup + Sync>(
    obj: &Obj<'_>,
    lookup: &L,
    out: &mut Extraction,
) -> Result<(), ExtractError> {
    const PATH: &str = "spec.chart.spec.chart";
    let chart = obj.req_str(PATH)?;
    let version = obj.opt_str("spec.chart.spec.version")?;
    let target = object_ref(obj, "spec.chart.spec.sourceRef", true)?;
    match target.kind.as_str() {
        "HelmRepository" => {}
        "GitRepository" | "Bucket" => {
            out.notes
                .push(non_oci_note(obj, "spec.chart.spec.sourceRef", &target));
            return Ok(());
        }
        other => {
            return Err(obj.field_error(
                "spec.chart.spec.sourceRef.kind",
                format!("{other:?} is not HelmRepository, GitRepository or Bucket"),
            ));
        }
    }
    let Some(value) = resolve(lookup, obj, "spec.chart.spec.sourceRef", &target, &[]).await? else {
        out.sources
            .push(not_found(PATH, &target, vec![target.clone()]));
        return Ok(());
    };
    let repo = found(&value, &target)?;
    if let Some(chart_ref) = chart_in_repository(&repo, chart, &mut out.notes, obj)? {
        out.sources.push(source(
            PATH,
            chart_version(&chart_ref, version),
            verify(obj, "spec.chart.spec.verify")?,
            vec![target],
        ));
    }
    Ok(())
}
