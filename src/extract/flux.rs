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
    Obj, ObjectRef, Source, Unverified, chart_version, invalid, oci_repository_url, pinned,
    semver_request,
};

pub(crate) const SOURCE_GROUP: &str = "source.toolkit.fluxcd.io";
pub(crate) const HELM_GROUP: &str = "helm.toolkit.fluxcd.io";
/// The version lookups ask for: the one the current CRDs serve (older served versions are the
/// same objects on the API server).
pub(crate) const SOURCE_API_VERSION: &str = "source.toolkit.fluxcd.io/v1";

/// A Flux source; `verify_field` is where Flux's own verification of it is set.
fn source(
    path: &str,
    artifact: Artifact,
    (flux_verify, verify_field): (Option<FluxVerify>, String),
    via: Vec<ObjectRef>,
) -> Source {
    Source {
        path: path.to_string(),
        other_paths: Vec::new(),
        artifact,
        flux_verify,
        flux: true,
        flux_verify_field: verify_field,
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
    // Looked up (a HelmRelease's chartRef): the verification is the OCIRepository's own.
    let field = if via.is_empty() {
        "spec.verify".to_string()
    } else {
        format!("spec.verify of {} {}", obj.kind, obj.display_name())
    };
    Ok(source(
        path,
        artifact,
        (verify(obj, "spec.verify")?, field),
        via,
    ))
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
    // A reference into another namespace (or, for an object whose namespace is not known, into
    // any named one) is not followed unless the lookup allows it: nothing from there is read.
    let cross = match (&target.namespace, &obj.namespace) {
        (Some(t), Some(o)) => t != o,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if cross && !lookup.cross_namespace_refs() {
        return Err(ExtractError::CrossNamespace {
            kind: obj.kind.clone(),
            name: obj.display_name(),
            field: field.to_string(),
            target: Box::new(target.clone()),
        });
    }
    lookup
        .get(target)
        .await
        .map_err(|source| ExtractError::Lookup {
            kind: obj.kind.clone(),
            name: obj.display_name(),
            field: field.to_string(),
            source: Box::new(source),
        })
}

/// The object a lookup returned, read as `target` (its namespace when it omits one).
fn found<'a>(value: &'a Value, target: &ObjectRef) -> Result<Obj<'a>, ExtractError> {
    let hints = Hints {
        api_version: target.api_version.clone(),
        kind: Some(target.kind.clone()),
        namespace: target.namespace.clone(),
        ..Hints::default()
    };
    let found = Obj::new(value, &hints)?;
    if found.kind != target.kind {
        return Err(ExtractError::NotAnObject {
            problem: format!("looking up {target} returned a {}", found.kind),
        });
    }
    Ok(found)
}

fn not_found(path: &str, target: &ObjectRef, via: Vec<ObjectRef>, problem: String) -> Source {
    source(
        path,
        invalid(&target.to_string(), problem),
        (None, String::new()),
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

/// The chart `chart` in the HelmRepository `repo` (which `referrer` names in `field`):
/// `Ok(None)` and an unverified source when the repository is not an OCI one.
fn chart_in_repository(
    repo: &Obj<'_>,
    chart: &str,
    out: &mut Extraction,
    referrer: &Obj<'_>,
    field: &str,
) -> Result<Option<String>, ExtractError> {
    let repo_type = repo.opt_str("spec.type")?.unwrap_or("default");
    if repo_type != "oci" {
        out.unverified.push(Unverified {
            path: field.to_string(),
            what: format!("HelmRepository {}", repo.display_name()),
            reason: format!(
                "{} {}: chart {chart:?} comes from HelmRepository {} of type {repo_type} \
                 (an HTTP chart index), not an OCI source: ocigate does not verify it",
                referrer.kind,
                referrer.display_name(),
                repo.display_name()
            ),
        });
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

fn non_oci(obj: &Obj<'_>, field: &str, target: &ObjectRef) -> Unverified {
    Unverified {
        path: field.to_string(),
        what: target.to_string(),
        reason: format!(
            "{} {}: {field} is {target}, not an OCI source: ocigate does not verify it",
            obj.kind,
            obj.display_name()
        ),
    }
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
            let mut u = non_oci(obj, "spec.sourceRef", &target);
            u.path = path.to_string();
            out.unverified.push(u);
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
        let problem = lookup.missing(&target);
        out.sources.push(not_found(path, &target, chain, problem));
        return Ok(());
    };
    let repo = found(&value, &target)?;
    chain.push(target);
    if let Some(chart_ref) = chart_in_repository(&repo, chart, out, obj, path)? {
        out.sources.push(source(
            path,
            chart_version(&chart_ref, version),
            (verify(obj, "spec.verify")?, "spec.verify".to_string()),
            chain,
        ));
    }
    Ok(())
}

/// The most HelmCharts of one namespace read for an admitted HelmRepository (more: denied).
const MAX_LISTED_CHARTS: usize = 1_000;

/// A HelmRepository: the chart each HelmChart of its namespace takes from it, at the URL and
/// type being admitted. The HelmCharts were checked when they were admitted, against the
/// repository as it was then; a URL (or type) changed afterwards would swap their charts with
/// no check at all. Read with the lookup's `list` (the webhook: the Kubernetes API, `list` on
/// helmcharts); a lookup that does not list leaves a note (rendered manifests: the HelmCharts
/// among them are checked themselves). A HelmChart that does not parse is another object's
/// problem, and is skipped.
pub(crate) async fn helm_repository<L: Lookup + Sync>(
    repo: &Obj<'_>,
    lookup: &L,
    out: &mut Extraction,
) -> Result<(), ExtractError> {
    let charts = ObjectRef {
        api_version: Some(SOURCE_API_VERSION.to_string()),
        kind: "HelmChart".to_string(),
        namespace: repo.namespace.clone(),
        name: "*".to_string(),
    };
    let listed = lookup
        .list(&charts, MAX_LISTED_CHARTS)
        .await
        .map_err(|source| ExtractError::Lookup {
            kind: repo.kind.clone(),
            name: repo.display_name(),
            field: "metadata.namespace".to_string(),
            source: Box::new(source),
        })?;
    let Some(listed) = listed else {
        out.notes.push(format!(
            "HelmRepository {}: checked through the HelmCharts and HelmReleases that use it",
            repo.display_name()
        ));
        return Ok(());
    };
    if listed.len() > MAX_LISTED_CHARTS {
        let problem = format!(
            "its namespace has {} HelmCharts, more than the {MAX_LISTED_CHARTS} read for one \
             HelmRepository",
            listed.len()
        );
        return Err(repo.field_error("metadata.namespace", problem));
    }
    for value in &listed {
        let Ok(chart) = found(value, &charts) else {
            continue;
        };
        let uses_repo = object_ref(&chart, "spec.sourceRef", false)
            .is_ok_and(|r| r.kind == "HelmRepository" && r.name == repo.name);
        let (true, Ok(Some(name))) = (uses_repo, chart.opt_str("spec.chart")) else {
            continue;
        };
        let version = chart.opt_str("spec.version").ok().flatten();
        let via = ObjectRef {
            name: chart.name.clone(),
            ..charts.clone()
        };
        // The field, and the HelmChart whose chart it moves (for the deny).
        let path = format!("spec.url, for HelmChart {}", chart.display_name());
        if let Some(chart_ref) = chart_in_repository(repo, name, out, &chart, &path)? {
            let verify_field = format!("spec.verify of HelmChart {}", chart.display_name());
            out.sources.push(source(
                &path,
                chart_version(&chart_ref, version),
                (verify(&chart, "spec.verify").ok().flatten(), verify_field),
                vec![via],
            ));
        }
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
            out.unverified.push(non_oci(obj, FIELD, &target));
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
        let problem = lookup.missing(&target);
        out.sources
            .push(not_found(FIELD, &target, vec![target.clone()], problem));
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
            out.unverified
                .push(non_oci(obj, "spec.chart.spec.sourceRef", &target));
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
        let problem = lookup.missing(&target);
        out.sources
            .push(not_found(PATH, &target, vec![target.clone()], problem));
        return Ok(());
    };
    let repo = found(&value, &target)?;
    let field = "spec.chart.spec.sourceRef";
    if let Some(chart_ref) = chart_in_repository(&repo, chart, out, obj, field)? {
        out.sources.push(source(
            PATH,
            chart_version(&chart_ref, version),
            (
                verify(obj, "spec.chart.spec.verify")?,
                "spec.chart.spec.verify".to_string(),
            ),
            vec![target],
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::*;
    use serde_json::json;

    const SAMPLES: &str = "gitops/fluxcd/samples/";

    /// Every document of the given corpus files, extracted with all of them as the lookup set;
    /// keyed by `Kind/name`.
    fn run(files: &[&str]) -> Option<Vec<(String, Result<Extraction, ExtractError>)>> {
        let mut docs = Vec::new();
        for f in files {
            docs.extend(corpus_docs(&format!("{SAMPLES}{f}"))?);
        }
        let results = extract_all(&docs);
        Some(
            docs.iter()
                .zip(results)
                .map(|(d, r)| {
                    let key = format!(
                        "{}/{}",
                        d["kind"].as_str().unwrap_or("?"),
                        d["metadata"]["name"].as_str().unwrap_or("?")
                    );
                    (key, r)
                })
                .collect(),
        )
    }

    fn one(files: &[&str], key: &str) -> Option<Result<Extraction, ExtractError>> {
        let all = run(files)?;
        let found = all.into_iter().find(|(k, _)| k == key);
        Some(found.unwrap_or_else(|| panic!("{key} not in {files:?}")).1)
    }

    fn semver_of(a: &Artifact) -> (String, String, Option<String>) {
        match a {
            Artifact::Semver {
                repository,
                constraint_text,
                filter,
                ..
            } => (
                repository.to_string(),
                constraint_text.clone(),
                filter.clone(),
            ),
            other => panic!("expected a semver request, got {other:?}"),
        }
    }

    fn invalid_problem(a: &Artifact) -> String {
        match a {
            Artifact::Invalid { problem, .. } => problem.clone(),
            other => panic!("expected an invalid artifact, got {other:?}"),
        }
    }

    #[test]
    fn oci_repository_samples() {
        let Some(out) = one(
            &["source-controller/config/samples/source_v1_ocirepository.yaml"],
            "OCIRepository/ocirepository-sample",
        ) else {
            return;
        };
        let out = out.unwrap();
        assert_eq!(out.sources.len(), 1);
        let s = &out.sources[0];
        assert_eq!(s.path, "spec.url");
        assert_eq!(
            reference(&s.artifact),
            "ghcr.io/stefanprodan/manifests/podinfo:6.1.6"
        );
        assert_eq!(s.flux_verify, None);
        assert!(s.via.is_empty());

        let out = one(
            &["flux2/cmd/flux/testdata/oci/export_with_complete_verification.golden"],
            "OCIRepository/podinfo",
        )
        .unwrap()
        .unwrap();
        let v = out.sources[0].flux_verify.as_ref().unwrap();
        assert!(v.is_cosign() && v.secret_ref.is_none() && v.oidc_identities == 1);

        let out = one(
            &["docs-extracted/source-controller/ocirepository-ref-semver-semverfilter.yaml"],
            "OCIRepository/podinfo",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            semver_of(&out.sources[0].artifact),
            (
                "ghcr.io/stefanprodan/manifests/podinfo".into(),
                ">= 6.1.x-0".into(),
                Some(".*-rc.*".into())
            )
        );

        // No ref at all: latest; keyless cosign with one identity.
        let out = one(
            &["docs-extracted/source-controller/ocirepository-no-ref-verify-cosign-keyless-matchoidcidentity.yaml"],
            "OCIRepository/podinfo",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            reference(&out.sources[0].artifact),
            "ghcr.io/stefanprodan/manifests/podinfo:latest"
        );

        let out = one(
            &["source-controller/config/testdata/ocirepository/signed-with-cosign-v2-key.yaml"],
            "OCIRepository/podinfo-deploy-signed-with-v2-key",
        )
        .unwrap()
        .unwrap();
        assert_eq!(semver_of(&out.sources[0].artifact).1, "6.2.x");
        assert_eq!(
            out.sources[0].flux_verify,
            Some(FluxVerify {
                provider: "cosign".into(),
                secret_ref: Some("cosign-key".into()),
                oidc_identities: 0
            })
        );

        let out = one(
            &["source-controller/config/testdata/ocirepository/signed-with-notation.yaml"],
            "OCIRepository/podinfo-deploy-signed-with-notation",
        )
        .unwrap()
        .unwrap();
        assert!(!out.sources[0].flux_verify.as_ref().unwrap().is_cosign());

        // An exact version as semver stays a semver request (Flux lists tags and matches v6.9.4 too).
        let out = one(
            &["source-controller/config/testdata/ocirepository/signed-with-cosign-v3-keyless.yaml"],
            "OCIRepository/podinfo-deploy-signed-with-v3-keyless",
        )
        .unwrap()
        .unwrap();
        assert_eq!(semver_of(&out.sources[0].artifact).1, "6.9.4");
        assert_eq!(
            out.sources[0].flux_verify.as_ref().unwrap().oidc_identities,
            1
        );

        // v1beta2 objects, one as the API server returns it.
        let out = one(
            &["docs-extracted/flux2-rfc-0003/ocirepository-v1beta2-semver-secretref-verify-cosign.yaml"],
            "OCIRepository/app-config",
        )
        .unwrap()
        .unwrap();
        assert_eq!(semver_of(&out.sources[0].artifact).1, "1.x");
        let out = one(
            &["docs-extracted/flux2-rfc-0003/ocirepository-v1beta2-full-object-with-status.yaml"],
            "OCIRepository/podinfo",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            reference(&out.sources[0].artifact),
            "ghcr.io/stefanprodan/manifests/podinfo:6.1.6"
        );

        // A tag followed by an image-automation setter comment.
        let out = one(
            &["docs-extracted/website/ocirepository-ref-tag-with-imagepolicy-setter-comment.yaml"],
            "OCIRepository/podinfo",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            reference(&out.sources[0].artifact),
            "ghcr.io/stefanprodan/manifests/podinfo:6.1.0"
        );

        // The docs' placeholder object has no url: an error naming the field.
        let e = one(
            &["docs-extracted/source-controller/ocirepository-ref-digest-placeholder.yaml"],
            "OCIRepository/<repository-name>",
        )
        .unwrap()
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "OCIRepository <repository-name>: field spec.url: missing"
        );

        // The mTLS example's Secret is noted, not checked.
        let all = run(&[
            "docs-extracted/source-controller/ocirepository-certsecretref-mtls-with-secret.yaml",
        ])
        .unwrap();
        let secret = all.iter().find(|(k, _)| k == "Secret/example-tls").unwrap();
        assert!(secret.1.as_ref().unwrap().notes[0].contains("kind Secret"));
    }

    #[test]
    fn ref_precedence_and_malformed_fields() {
        let set = DocumentSet::default();
        let repo = |spec: Value| {
            json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "OCIRepository",
                "metadata": {"name": "r", "namespace": "ns"}, "spec": spec})
        };
        let d = "sha256:9ac3ba762c373ebccecb9dd3ac1d8ca091e4bd4a101701ce99e6058c0c74eedc";
        let out = block_on(extract(
            &repo(json!({"url": "oci://ghcr.io/a/b", "ref": {"digest": d, "semver": "1.x", "tag": "t"}})),
            &set,
        ))
        .unwrap();
        assert_eq!(
            reference(&out.sources[0].artifact),
            format!("ghcr.io/a/b@{d}")
        );
        let out = block_on(extract(
            &repo(json!({"url": "oci://ghcr.io/a/b", "ref": {"semver": "1.x", "tag": "t"}})),
            &set,
        ))
        .unwrap();
        assert_eq!(semver_of(&out.sources[0].artifact).1, "1.x");

        // Values that name an artifact but cannot be checked.
        for (r, problem) in [
            (json!({"digest": "sha256:<SHA-value>"}), "digest"),
            (json!({"semver": "latest"}), "semver"),
            (
                json!({"semver": "1.x", "semverFilter": "(unclosed"}),
                "semverFilter",
            ),
            (json!({"tag": "bad tag"}), "spaces"),
        ] {
            let out = block_on(extract(
                &repo(json!({"url": "oci://ghcr.io/a/b", "ref": r})),
                &set,
            ))
            .unwrap();
            let p = invalid_problem(&out.sources[0].artifact);
            assert!(p.contains(problem), "{p}");
        }

        // Malformed objects: errors naming the field.
        for (spec, message) in [
            (
                json!({"url": 5}),
                "OCIRepository ns/r: field spec.url: expected a string, got a number",
            ),
            (
                json!({"url": "https://ghcr.io/a"}),
                "OCIRepository ns/r: field spec.url: \"https://ghcr.io/a\" must start with oci://",
            ),
            (
                json!({"url": "oci://ghcr.io/a:1.0"}),
                "OCIRepository ns/r: field spec.url: \"oci://ghcr.io/a:1.0\" must not contain a tag; set it in the ref field",
            ),
            (
                json!({"url": "oci://ghcr.io/a", "ref": "1.0"}),
                "OCIRepository ns/r: field spec.ref: expected a mapping, got a string",
            ),
            (
                json!({"url": "oci://ghcr.io/a", "verify": {"provider": "cosign", "matchOIDCIdentity": {}}}),
                "OCIRepository ns/r: field spec.verify.matchOIDCIdentity: expected a list, got a mapping",
            ),
        ] {
            let e = block_on(extract(&repo(spec), &set)).unwrap_err();
            assert_eq!(e.to_string(), message);
        }
    }

    #[test]
    fn helm_charts_from_oci_helm_repositories() {
        let Some(all) = run(&["source-controller/config/testdata/helmchart-from-oci/source.yaml"])
        else {
            return;
        };
        let get = |k: &str| {
            all.iter()
                .find(|(key, _)| key == k)
                .unwrap()
                .1
                .as_ref()
                .unwrap()
        };
        let s = &get("HelmChart/podinfo").sources[0];
        assert_eq!(s.path, "spec.chart");
        assert_eq!(
            semver_of(&s.artifact),
            (
                "ghcr.io/stefanprodan/charts/podinfo".into(),
                "6.1.*".into(),
                None
            )
        );
        assert_eq!(s.via.len(), 1);
        assert_eq!(s.via[0].kind, "HelmRepository");
        assert_eq!(s.via[0].name, "podinfo");
        assert_eq!(s.flux_verify, None);
        let s = &get("HelmChart/podinfo-keyless").sources[0];
        assert_eq!(
            reference(&s.artifact),
            "ghcr.io/stefanprodan/charts/podinfo:6.2.1"
        );
        assert!(s.flux_verify.as_ref().unwrap().is_cosign());
        assert!(get("HelmRepository/podinfo").sources.is_empty());

        let out = one(
            &["source-controller/config/testdata/helmchart-from-oci/cosign-v3.yaml"],
            "HelmChart/podinfo-cosign-v3-keyless",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            reference(&out.sources[0].artifact),
            "ghcr.io/fluxcd-testing/cosign-testing/v3/charts/podinfo:6.9.4"
        );
        assert_eq!(
            out.sources[0].flux_verify.as_ref().unwrap().oidc_identities,
            1
        );
        let out = one(
            &["source-controller/config/testdata/helmchart-from-oci/notation.yaml"],
            "HelmChart/podinfo-notation",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            out.sources[0].flux_verify.as_ref().unwrap().provider,
            "notation"
        );

        // A HelmRepository at the registry root, the chart name holding the repository path.
        let out = one(
            &[
                "source-controller/config/samples/source_v1_helmchart_helmrepository-oci.yaml",
                "source-controller/config/samples/source_v1_helmrepository-oci.yaml",
            ],
            "HelmChart/helmchart-sample-oci",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            semver_of(&out.sources[0].artifact),
            (
                "ghcr.io/stefanprodan/charts/podinfo".into(),
                ">=6.0.0 <7.0.0".into(),
                None
            )
        );
    }

    #[test]
    fn helm_releases() {
        // chartRef → OCIRepository.
        let Some(out) = one(
            &["helm-controller/config/testdata/install-from-ocirepo-source/test.yaml"],
            "HelmRelease/podinfo-from-ocirepo",
        ) else {
            return;
        };
        let out = out.unwrap();
        let s = &out.sources[0];
        assert_eq!(s.path, "spec.chartRef");
        assert_eq!(
            reference(&s.artifact),
            "ghcr.io/stefanprodan/charts/podinfo:6.6.0"
        );
        assert_eq!(s.via[0].kind, "OCIRepository");
        assert_eq!(s.via[0].name, "podinfo-ocirepo");

        // chartRef with an explicit namespace.
        let out = one(
            &["docs-extracted/helm-controller/helmrelease-chartref-ocirepository-namespaced-layerselector-copy.yaml"],
            "HelmRelease/podinfo",
        )
        .unwrap()
        .unwrap();
        assert_eq!(semver_of(&out.sources[0].artifact).1, ">= 6.0.0");
        assert_eq!(out.sources[0].via[0].namespace.as_deref(), Some("default"));

        // chartRef → HelmChart → HelmRepository: the repository is not in the file, so the
        // source is invalid (denied), not silently absent.
        let out = one(
            &["helm-controller/config/testdata/install-from-hc-source/test.yaml"],
            "HelmRelease/podinfo-from-hc",
        )
        .unwrap()
        .unwrap();
        let s = &out.sources[0];
        assert_eq!(
            invalid_problem(&s.artifact),
            "HelmRepository podinfo-oci not found"
        );
        let kinds: Vec<_> = s.via.iter().map(|v| v.kind.as_str()).collect();
        assert_eq!(kinds, ["HelmChart", "HelmRepository"]);

        // ... and with an OCI HelmRepository added, the whole chain resolves.
        let mut docs = corpus_docs(&format!(
            "{SAMPLES}helm-controller/config/testdata/install-from-hc-source/test.yaml"
        ))
        .unwrap();
        docs.push(oci_helm_repository(
            "podinfo-oci",
            "oci://ghcr.io/stefanprodan/charts",
        ));
        let set = DocumentSet::new(docs.clone());
        let out = block_on(extract(&docs[1], &set)).unwrap();
        let s = &out.sources[0];
        assert_eq!(
            reference(&s.artifact),
            "ghcr.io/stefanprodan/charts/podinfo:6.2.1"
        );
        assert_eq!(s.via.len(), 2);
        assert!(s.flux_verify.as_ref().unwrap().is_cosign());

        // chart.spec with verify, HelmRepository missing then present.
        let file = "helm-controller/config/testdata/podinfo/helmrelease-oci.yaml";
        let out = one(&[file], "HelmRelease/podinfo-oci").unwrap().unwrap();
        assert_eq!(out.sources[0].path, "spec.chart.spec.chart");
        assert_eq!(
            invalid_problem(&out.sources[0].artifact),
            "HelmRepository podinfo-oci not found"
        );
        let mut docs = corpus_docs(&format!("{SAMPLES}{file}")).unwrap();
        docs.push(oci_helm_repository(
            "podinfo-oci",
            "oci://ghcr.io/stefanprodan/charts/",
        ));
        let out = block_on(extract(&docs[0], &DocumentSet::new(docs.clone()))).unwrap();
        let s = &out.sources[0];
        assert_eq!(
            reference(&s.artifact),
            "ghcr.io/stefanprodan/charts/podinfo:6.2.1"
        );
        assert_eq!(s.flux_verify.as_ref().unwrap().provider, "cosign");

        let out = one(
            &["helm-controller/config/samples/helm_v2_helmrelease_helmrepository.yaml"],
            "HelmRelease/podinfo-helmrepository",
        )
        .unwrap()
        .unwrap();
        assert!(invalid_problem(&out.sources[0].artifact).contains("not found"));

        // v2beta2 HelmRelease from a v1beta1 HTTP HelmRepository: a note, no source.
        let out = one(
            &["agent-skills/tests/gitops-repo-audit/mixed-issues/infrastructure/nginx.yaml"],
            "HelmRelease/ingress-nginx",
        )
        .unwrap()
        .unwrap();
        assert!(out.sources.is_empty());
        assert!(
            out.unverified[0].reason.contains("of type default"),
            "{:?}",
            out.unverified
        );

        // Both chart and chartRef: Flux's CEL rule rejects it, so do we.
        let e = one(
            &["agent-skills/tests/gitops-knowledge/debug-repo/infrastructure/controllers/metrics-server/release.yaml"],
            "HelmRelease/metrics-server",
        )
        .unwrap()
        .unwrap_err();
        assert!(e.to_string().contains("both chart and chartRef"), "{e}");
    }

    fn oci_helm_repository(name: &str, url: &str) -> Value {
        json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "HelmRepository",
            "metadata": {"name": name}, "spec": {"type": "oci", "url": url}})
    }

    fn release(spec: Value) -> Value {
        json!({"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
            "metadata": {"name": "rel", "namespace": "apps"}, "spec": spec})
    }

    #[test]
    fn non_oci_sources_are_unverified_not_silent() {
        let git_chart = json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "HelmChart",
            "metadata": {"name": "c", "namespace": "apps"},
            "spec": {"chart": "./charts/x", "sourceRef": {"kind": "GitRepository", "name": "g"}}});
        let out = block_on(extract(&git_chart, &DocumentSet::default())).unwrap();
        assert!(out.sources.is_empty() && out.notes.is_empty());
        assert_eq!(
            out.unverified,
            [Unverified {
                path: "spec.chart".into(),
                what: "GitRepository apps/g".into(),
                reason: "HelmChart apps/c: spec.sourceRef is GitRepository apps/g, not an OCI \
                         source: ocigate does not verify it"
                    .into()
            }]
        );
        let http = json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "HelmRepository",
            "metadata": {"name": "h", "namespace": "apps"}, "spec": {"url": "https://charts.example.com"}});
        let rel = release(
            json!({"chart": {"spec": {"chart": "x", "sourceRef": {"kind": "HelmRepository", "name": "h"}}}}),
        );
        let out = block_on(extract(&rel, &DocumentSet::new(vec![http]))).unwrap();
        assert!(out.sources.is_empty());
        assert_eq!(out.unverified[0].path, "spec.chart.spec.sourceRef");
        assert_eq!(out.unverified[0].what, "HelmRepository apps/h");
        assert!(
            out.unverified[0]
                .reason
                .contains("HelmRepository apps/h of type default")
        );
        let ext = release(json!({"chartRef": {"kind": "ExternalArtifact", "name": "e"}}));
        let out = block_on(extract(&ext, &DocumentSet::default())).unwrap();
        assert!(out.sources.is_empty() && out.unverified[0].what == "ExternalArtifact apps/e");
        let bucket = release(
            json!({"chart": {"spec": {"chart": "x", "sourceRef": {"kind": "Bucket", "name": "b"}}}}),
        );
        let out = block_on(extract(&bucket, &DocumentSet::default())).unwrap();
        assert!(out.sources.is_empty() && out.unverified[0].what == "Bucket apps/b");
    }

    #[test]
    fn lookups_use_the_release_namespace_and_fail_closed() {
        let in_apps = json!({"apiVersion": "source.toolkit.fluxcd.io/v1beta2", "kind": "HelmRepository",
            "metadata": {"name": "repo", "namespace": "apps"}, "spec": {"type": "oci", "url": "oci://r.example/charts"}});
        let in_other = json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "HelmRepository",
            "metadata": {"name": "repo", "namespace": "other"}, "spec": {"type": "oci", "url": "oci://evil.example/charts"}});
        let set = DocumentSet::new(vec![in_other, in_apps]);
        let rel = release(json!({"chart": {"spec": {"chart": "app", "version": "^1.2",
            "sourceRef": {"kind": "HelmRepository", "name": "repo"}}}}));
        let out = block_on(extract(&rel, &set)).unwrap();
        assert_eq!(
            semver_of(&out.sources[0].artifact).0,
            "r.example/charts/app"
        );
        assert_eq!(out.sources[0].via[0].namespace.as_deref(), Some("apps"));
        // Another namespace: refused unless allowed, and nothing from there is read.
        let cross = release(json!({"chart": {"spec": {"chart": "app",
            "sourceRef": {"kind": "HelmRepository", "name": "repo", "namespace": "other"}}}}));
        let e = block_on(extract(&cross, &set)).unwrap_err();
        assert!(matches!(e, ExtractError::CrossNamespace { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            "HelmRelease apps/rel: field spec.chart.spec.sourceRef: HelmRepository other/repo is \
             in another namespace; cross-namespace references are refused (as Flux's \
             --no-cross-namespace-refs; --allow-cross-namespace-refs allows them)"
        );
        assert!(!e.to_string().contains("evil.example"));
        let chart_ref = release(
            json!({"chartRef": {"kind": "OCIRepository", "name": "o", "namespace": "other"}}),
        );
        let e = block_on(extract(&chart_ref, &set)).unwrap_err();
        assert!(matches!(e, ExtractError::CrossNamespace { .. }), "{e:?}");
        let allowed = set.clone().allow_cross_namespace_refs(true);
        let out = block_on(extract(&cross, &allowed)).unwrap();
        assert_eq!(
            semver_of(&out.sources[0].artifact),
            ("evil.example/charts/app".into(), "*".into(), None)
        );
        // The same namespace named explicitly is no cross-namespace reference.
        let same = release(json!({"chart": {"spec": {"chart": "app",
            "sourceRef": {"kind": "HelmRepository", "name": "repo", "namespace": "apps"}}}}));
        assert!(block_on(extract(&same, &set)).is_ok());

        // A lookup that fails is an error, not "nothing to check".
        struct Broken;
        impl Lookup for Broken {
            fn get(
                &self,
                r: &ObjectRef,
            ) -> impl Future<Output = Result<Option<Value>, LookupError>> + Send {
                std::future::ready(Err(LookupError::failed(r.clone(), "connection refused")))
            }
        }
        let e = block_on(extract(&rel, &Broken)).unwrap_err();
        assert!(matches!(e, ExtractError::Lookup { .. }));
        assert_eq!(
            crate::error_chain(&e),
            "HelmRelease apps/rel: field spec.chart.spec.sourceRef: looking up a referenced object: \
             looking up HelmRepository apps/repo failed: connection refused"
        );

        // A lookup answering with another kind is refused.
        struct Liar;
        impl Lookup for Liar {
            fn get(
                &self,
                _: &ObjectRef,
            ) -> impl Future<Output = Result<Option<Value>, LookupError>> + Send {
                std::future::ready(Ok(Some(
                    json!({"kind": "ConfigMap", "metadata": {"name": "x"}}),
                )))
            }
        }
        assert!(block_on(extract(&rel, &Liar)).is_err());
    }

    #[test]
    fn lookup_chains_are_bounded() {
        let rel = release(json!({}));
        let obj = Obj::new(&rel, &Hints::default()).unwrap();
        let target = |name: &str| ObjectRef {
            api_version: None,
            kind: "HelmChart".into(),
            namespace: None,
            name: name.into(),
        };
        let long: Vec<_> = (0..MAX_LOOKUP_DEPTH)
            .map(|i| target(&i.to_string()))
            .collect();
        let e = block_on(super::resolve(
            &DocumentSet::default(),
            &obj,
            "spec.chartRef",
            &target("x"),
            &long,
        ))
        .unwrap_err();
        assert!(e.to_string().contains("chains end after"), "{e}");
        let e = block_on(super::resolve(
            &DocumentSet::default(),
            &obj,
            "spec.chartRef",
            &target("0"),
            &long[..1],
        ))
        .unwrap_err();
        assert!(e.to_string().contains("refers back"), "{e}");
        // Within the bound the lookup runs.
        assert!(
            block_on(super::resolve(
                &DocumentSet::default(),
                &obj,
                "spec.chartRef",
                &target("x"),
                &long[..2]
            ))
            .unwrap()
            .is_none()
        );
    }

    #[test]
    fn malformed_releases() {
        let set = DocumentSet::default();
        for (spec, message) in [
            (
                json!({}),
                "HelmRelease apps/rel: field spec: neither chart nor chartRef is set",
            ),
            (
                json!({"chartRef": {"kind": "GitRepository", "name": "g"}}),
                "HelmRelease apps/rel: field spec.chartRef.kind: \"GitRepository\" is not OCIRepository, HelmChart or ExternalArtifact",
            ),
            (
                json!({"chartRef": {"name": "g"}}),
                "HelmRelease apps/rel: field spec.chartRef.kind: missing",
            ),
            (
                json!({"chart": {"spec": {"sourceRef": {"kind": "HelmRepository", "name": "h"}}}}),
                "HelmRelease apps/rel: field spec.chart.spec.chart: missing",
            ),
        ] {
            let e = block_on(extract(&release(spec), &set)).unwrap_err();
            assert_eq!(e.to_string(), message);
        }
    }
}
