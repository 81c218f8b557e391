//! Pods and the pod templates of workload kinds: container images.

use serde_json::Value;

use super::{ExtractError, Extraction, Obj, Source, reference_artifact, type_name};

const CONTAINER_LISTS: [&str; 3] = ["containers", "initContainers", "ephemeralContainers"];

/// Where the pod spec of `kind` is, when `group` (None: unknown) is the kind's API group.
pub(crate) fn pod_spec_path(group: Option<&str>, kind: &str) -> Option<&'static str> {
    let (groups, path): (&[&str], _) = match kind {
        "Pod" => (&[""], "spec"),
        "PodTemplate" => (&[""], "template.spec"),
        "ReplicationController" => (&[""], "spec.template.spec"),
        "Deployment" | "ReplicaSet" | "DaemonSet" => {
            (&["apps", "extensions"], "spec.template.spec")
        }
        "StatefulSet" => (&["apps"], "spec.template.spec"),
        "Job" => (&["batch"], "spec.template.spec"),
        "CronJob" => (&["batch"], "spec.jobTemplate.spec.template.spec"),
        _ => return None,
    };
    group.is_none_or(|g| groups.contains(&g)).then_some(path)
}

/// What a pod spec names for pulling its images: the `imagePullSecrets` and the service account
/// (whose own `imagePullSecrets` the kubelet adds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullIdentity {
    pub secrets: Vec<String>,
    /// `spec.serviceAccountName`, `default` when unset (as the API server defaults it).
    pub service_account: String,
}

/// The pull identity of a Pod or a workload's pod template; None for other kinds. `api_version`
/// and `kind` are the object's (or, when it lacks them, the request's).
pub fn pull_identity(object: &Value, api_version: &str, kind: &str) -> Option<PullIdentity> {
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    let path = pod_spec_path(Some(group), kind)?;
    let spec = path.split('.').try_fold(object, |v, key| v.get(key))?;
    let secrets = spec
        .get("imagePullSecrets")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|s| s.get("name").and_then(Value::as_str))
                .filter(|n| !n.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let service_account = spec
        .get("serviceAccountName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .unwrap_or("default")
        .to_string();
    Some(PullIdentity {
        secrets,
        service_account,
    })
}

pub(crate) fn extract(obj: &Obj<'_>, out: &mut Extraction) -> Result<(), ExtractError> {
    let Some(spec_path) = pod_spec_path(obj.group().as_deref(), &obj.kind) else {
        return Ok(());
    };
    if obj.opt_map(spec_path)?.is_none() {
        return Err(obj.field_error(spec_path, "missing: there is no pod spec to read"));
    }
    let first = out.sources.len();
    for list in CONTAINER_LISTS {
        let list_path = format!("{spec_path}.{list}");
        for (i, container) in obj.list(&list_path)?.iter().enumerate() {
            let path = format!("{list_path}[{i}].image");
            let image = match container.get("image") {
                Some(Value::String(s)) if !s.trim().is_empty() => s.as_str(),
                None | Some(Value::Null) | Some(Value::String(_)) => {
                    out.notes.push(format!(
                        "{} {}: {path} is empty; a pod cannot start it",
                        obj.kind,
                        obj.display_name()
                    ));
                    continue;
                }
                Some(other) => {
                    return Err(obj.field_error(
                        &path,
                        format!("expected a string, got {}", type_name(other)),
                    ));
                }
            };
            let artifact = reference_artifact(image);
            // The same artifact however it is spelled (`nginx`, `docker.io/library/nginx`).
            if let Some(seen) = out.sources[first..]
                .iter_mut()
                .find(|s| s.artifact == artifact)
            {
                seen.other_paths.push(path);
                continue;
            }
            out.sources.push(Source {
                path,
                other_paths: Vec::new(),
                artifact,
                flux_verify: None,
                flux: false,
                via: Vec::new(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::*;
    use serde_json::json;

    /// Extract an AdmissionRequest's object, typed by the request (as the webhook will).
    fn from_request(request: &Value) -> Result<Extraction, ExtractError> {
        let k = &request["kind"];
        let group = k["group"].as_str().unwrap_or("");
        let version = k["version"].as_str().unwrap_or("");
        let hints = Hints {
            api_version: Some(if group.is_empty() {
                version.to_string()
            } else {
                format!("{group}/{version}")
            }),
            kind: k["kind"].as_str().map(str::to_string),
            namespace: request["namespace"].as_str().map(str::to_string),
        };
        block_on(extract_with(
            &request["object"],
            &hints,
            &DocumentSet::default(),
        ))
    }

    fn read_json(rel: &str) -> Option<Value> {
        let path = corpus()?.join(rel);
        let text = std::fs::read_to_string(&path).unwrap();
        Some(serde_json::from_str(&text).unwrap())
    }

    fn refs(out: &Extraction) -> Vec<(String, String)> {
        out.sources
            .iter()
            .map(|s| (s.path.clone(), reference(&s.artifact)))
            .collect()
    }

    #[test]
    fn kubewarden_requests_for_every_workload_kind() {
        let Some(dir) = corpus() else { return };
        let dir = dir.join("kubewarden-verify-image-signatures/test_data");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let request: Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let out = from_request(&request).unwrap_or_else(|e| panic!("{name}: {e}"));
            let kind = request["kind"]["kind"].as_str().unwrap();
            let expected_path = match kind {
                "Pod" => "spec.containers[0].image",
                "CronJob" => "spec.jobTemplate.spec.template.spec.containers[0].image",
                _ => "spec.template.spec.containers[0].image",
            };
            assert_eq!(out.sources[0].path, expected_path, "{name}");
            let image = reference(&out.sources[0].artifact);
            if name.ends_with("_signed.json") || name.ends_with("_unsigned.json") {
                assert!(
                    image.starts_with("ghcr.io/kubewarden/test-verify-image-signatures:"),
                    "{name}: {image}"
                );
            }
            assert!(out.notes.is_empty(), "{name}: {:?}", out.notes);
            seen += 1;
        }
        assert_eq!(seen, 20);
        let Some(req) = read_json(
            "kubewarden-verify-image-signatures/test_data/pod_creation_with_init_container.json",
        ) else {
            return;
        };
        let out = from_request(&req).unwrap();
        assert!(
            out.sources
                .iter()
                .any(|s| s.path == "spec.initContainers[0].image"),
            "{out:?}"
        );
    }

    #[test]
    fn connaisseur_admission_reviews() {
        let base = "connaisseur/test/testdata/admission_requests/";
        let Some(review) = read_json(&format!("{base}09_dply_multi_image.json")) else {
            return;
        };
        let out = from_request(&review["request"]).unwrap();
        assert!(out.sources.len() >= 2, "{out:?}");
        let review = read_json(&format!("{base}20_pod_ephemeralcontainer.json")).unwrap();
        let out = from_request(&review["request"]).unwrap();
        assert_eq!(
            refs(&out)[1],
            (
                "spec.ephemeralContainers[0].image".to_string(),
                "docker.io/library/nginx".to_string()
            )
        );
        let review = read_json(&format!("{base}19_pod_initcontainer.json")).unwrap();
        let out = from_request(&review["request"]).unwrap();
        assert!(
            out.sources
                .iter()
                .any(|s| s.path.starts_with("spec.initContainers"))
        );
        // batch/v1beta1 CronJob.
        let review = read_json(&format!("{base}04_cronjob.json")).unwrap();
        let out = from_request(&review["request"]).unwrap();
        assert!(out.sources[0].path.starts_with("spec.jobTemplate."));
        let review = read_json(&format!("{base}05_replication_controller.json")).unwrap();
        assert_eq!(from_request(&review["request"]).unwrap().sources.len(), 1);
        // A Pod without a spec is malformed: an error, not "nothing to check".
        let review = read_json(&format!("{base}12_err_pod.json")).unwrap();
        let e = from_request(&review["request"]).unwrap_err();
        assert!(e.to_string().contains("field spec: missing"), "{e}");
        // A Role has no images.
        let review = read_json(&format!("{base}11_role.json")).unwrap();
        let out = from_request(&review["request"]).unwrap();
        assert!(out.sources.is_empty() && out.notes[0].contains("kind Role"));
        // Tag and digest both kept as given.
        let review = read_json(&format!("{base}24_alice_tag_digest_dpl.json")).unwrap();
        let out = from_request(&review["request"]).unwrap();
        let image = reference(&out.sources[0].artifact);
        assert!(image.contains(':') && image.contains("@sha256:"), "{image}");
    }

    #[test]
    fn each_image_once_with_every_path() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {
                "initContainers": [{"name": "i", "image": "nginx"}],
                "containers": [
                    {"name": "a", "image": "docker.io/library/nginx"},
                    {"name": "b", "image": "ghcr.io/acme/app:1.0"},
                    {"name": "c", "image": "nginx"}],
                "ephemeralContainers": [{"name": "e", "image": "ghcr.io/acme/app:1.0"}]}});
        let out = block_on(extract(&pod, &DocumentSet::default())).unwrap();
        assert_eq!(out.sources.len(), 2, "{out:?}");
        assert_eq!(out.sources[0].path, "spec.containers[0].image");
        assert_eq!(
            out.sources[0].other_paths,
            ["spec.containers[2].image", "spec.initContainers[0].image"]
        );
        assert_eq!(
            out.sources[1].other_paths,
            ["spec.ephemeralContainers[0].image"]
        );
    }

    #[test]
    fn pull_identities() {
        let dep = serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"template": {"spec": {
            "serviceAccountName": "builder", "imagePullSecrets": [{"name": "ghcr"}, {"name": ""}, {}],
            "containers": [{"name": "a", "image": "x"}]}}}});
        assert_eq!(
            pull_identity(&dep, "apps/v1", "Deployment"),
            Some(PullIdentity {
                secrets: vec!["ghcr".into()],
                service_account: "builder".into()
            })
        );
        let pod = serde_json::json!({"spec": {"containers": []}});
        assert_eq!(
            pull_identity(&pod, "v1", "Pod").map(|p| p.service_account),
            Some("default".into())
        );
        assert_eq!(pull_identity(&pod, "v1", "ConfigMap"), None);
        assert_eq!(pull_identity(&dep, "example.com/v1", "Deployment"), None);
    }

    #[test]
    fn bad_images() {
        let pod = |image: Value| {
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "n"},
                "spec": {"containers": [{"name": "a", "image": image}]}})
        };
        let set = DocumentSet::default();
        for bad in [
            "UPPER/case",
            "oci-layout:/tmp/x",
            "ghcr.io/a:{{ .Values.tag }}",
            "a b",
        ] {
            let out = block_on(extract(&pod(json!(bad)), &set)).unwrap();
            assert!(
                matches!(&out.sources[0].artifact, Artifact::Invalid { input, .. } if input == bad),
                "{bad}: {out:?}"
            );
        }
        let e = block_on(extract(&pod(json!(42)), &set)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Pod n/p: field spec.containers[0].image: expected a string, got a number"
        );
        let out = block_on(extract(&pod(json!("")), &set)).unwrap();
        assert!(out.sources.is_empty() && out.notes[0].contains("empty"));
        let wrong = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"template": {"spec": {"containers": {"image": "nginx"}}}}});
        let e = block_on(extract(&wrong, &set)).unwrap_err();
        assert!(
            e.to_string().contains("expected a list, got a mapping"),
            "{e}"
        );
    }
}
