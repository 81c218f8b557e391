//! Pods and the pod templates of workload kinds: container images and image volumes.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use serde_json::Value;

use super::{
    ExtractError, Extraction, MAX_ARTIFACTS_PER_OBJECT, MAX_IMAGE_FIELDS, Obj, Source,
    reference_artifact, type_name,
};

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

/// Whether `path` (as [`Source::path`] spells it) is a pod spec's image field: a container's
/// `image` or an image volume's `image.reference`, the fields `/mutate` may pin to a digest.
pub fn is_pod_image_path(path: &str) -> bool {
    let Some((head, field)) = path.rsplit_once("].") else {
        return false;
    };
    let Some((list, index)) = head.rsplit_once('[') else {
        return false;
    };
    let list = list.rsplit('.').next().unwrap_or(list);
    index.parse::<usize>().is_ok()
        && match field {
            "image" => CONTAINER_LISTS.contains(&list),
            "image.reference" => list == "volumes",
            _ => false,
        }
}

/// What a pod spec names for pulling its images: the `imagePullSecrets` and the service account
/// (whose own `imagePullSecrets` the kubelet adds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullIdentity {
    /// `spec.imagePullSecrets[].name`, in order.
    pub secrets: Vec<String>,
    /// `spec.serviceAccountName`, `default` when unset (as the API server defaults it).
    pub service_account: String,
}

/// The pull identity of a Pod or a workload's pod template; None for other kinds. `api_version`
/// and `kind` are the object's (or, when it lacks them, the request's).
/// Configured kinds' templates: [`super::PodTemplateKinds::pull_identity`].
pub fn pull_identity(object: &Value, api_version: &str, kind: &str) -> Option<PullIdentity> {
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    pull_identity_at(object, pod_spec_path(Some(group), kind)?)
}

/// The pull identity of the pod spec at the dotted `path` of `object`; `None` when absent.
pub(crate) fn pull_identity_at(object: &Value, path: &str) -> Option<PullIdentity> {
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
    extract_pod_spec(obj, spec_path, out)
}

/// The images of the pod spec at `spec_path` of `obj` (a built-in workload's or a configured
/// kind's), each once, within the per-object limits.
pub(crate) fn extract_pod_spec(
    obj: &Obj<'_>,
    spec_path: &str,
    out: &mut Extraction,
) -> Result<(), ExtractError> {
    if obj.opt_map(spec_path)?.is_none() {
        return Err(obj.field_error(spec_path, "missing: there is no pod spec to read"));
    }
    let mut images = Images {
        obj,
        out,
        first: HashMap::new(),
        fields: 0,
    };
    for list in CONTAINER_LISTS {
        let list_path = format!("{spec_path}.{list}");
        for (i, container) in obj.list(&list_path)?.iter().enumerate() {
            images.add(format!("{list_path}[{i}].image"), container.get("image"))?;
        }
    }
    // Image volumes (`spec.volumes[].image.reference`, Kubernetes' ImageVolume): the kubelet
    // pulls them as it pulls container images, so they are checked the same way.
    let volumes_path = format!("{spec_path}.volumes");
    for (i, volume) in obj.list(&volumes_path)?.iter().enumerate() {
        let Some(image) = volume.get("image").filter(|v| !v.is_null()) else {
            continue;
        };
        let path = format!("{volumes_path}[{i}].image");
        if !image.is_object() {
            return Err(obj.field_error(
                &path,
                format!("expected a mapping, got {}", type_name(image)),
            ));
        }
        images.add(format!("{path}.reference"), image.get("reference"))?;
    }
    Ok(())
}

/// The images of one pod spec, each once: the first path where an artifact appears holds it,
/// later paths are added to that source (linear in the number of images).
struct Images<'o, 'a, 'x> {
    obj: &'o Obj<'a>,
    out: &'x mut Extraction,
    /// An artifact's canonical form → its index in `out.sources`.
    first: HashMap<String, usize>,
    /// Image fields seen so far (repeats included).
    fields: usize,
}

impl Images<'_, '_, '_> {
    /// Add the image named at `path` (`value` is the field's value, absent when missing).
    ///
    /// Past [`MAX_ARTIFACTS_PER_OBJECT`] distinct artifacts or [`MAX_IMAGE_FIELDS`] fields the
    /// extraction stops: a hostile object costs no more than that.
    fn add(&mut self, path: String, value: Option<&Value>) -> Result<(), ExtractError> {
        let obj = self.obj;
        let too_many = || ExtractError::TooManyArtifacts {
            kind: obj.kind.clone(),
            name: obj.display_name(),
            max: MAX_ARTIFACTS_PER_OBJECT,
            fields: MAX_IMAGE_FIELDS,
        };
        self.fields += 1;
        if self.fields > MAX_IMAGE_FIELDS {
            return Err(too_many());
        }
        let image = match value {
            Some(Value::String(s)) if !s.trim().is_empty() => s.as_str(),
            None | Some(Value::Null) | Some(Value::String(_)) => {
                self.out.notes.push(format!(
                    "{} {}: {path} is empty; a pod cannot start it",
                    obj.kind,
                    obj.display_name()
                ));
                return Ok(());
            }
            Some(other) => {
                return Err(obj.field_error(
                    &path,
                    format!("expected a string, got {}", type_name(other)),
                ));
            }
        };
        let source = Source {
            path,
            other_paths: Vec::new(),
            artifact: reference_artifact(image),
            flux_verify: None,
            flux: false,
            flux_verify_field: String::new(),
            via: Vec::new(),
        };
        // The same artifact however it is spelled (`nginx`, `docker.io/library/nginx`).
        let distinct = self.first.len();
        match self.first.entry(source.key()) {
            Entry::Occupied(seen) => {
                if let Some(s) = self.out.sources.get_mut(*seen.get()) {
                    s.other_paths.push(source.path);
                }
            }
            Entry::Vacant(_) if distinct >= MAX_ARTIFACTS_PER_OBJECT => {
                return Err(too_many());
            }
            Entry::Vacant(slot) => {
                slot.insert(self.out.sources.len());
                self.out.sources.push(source);
            }
        }
        Ok(())
    }
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
            ..Hints::default()
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
    fn image_volumes_are_sources_like_containers() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {
                "containers": [{"name": "a", "image": "ghcr.io/acme/app:1.0"}],
                "volumes": [
                    {"name": "cfg", "configMap": {"name": "c"}},
                    {"name": "data", "image": {"reference": "ghcr.io/acme/data:2", "pullPolicy": "Always"}},
                    {"name": "again", "image": {"reference": "ghcr.io/acme/app:1.0"}},
                    {"name": "none", "image": {}},
                    {"name": "null", "image": null}]}});
        let out = block_on(extract(&pod, &DocumentSet::default())).unwrap();
        assert_eq!(
            refs(&out),
            [
                (
                    "spec.containers[0].image".into(),
                    "ghcr.io/acme/app:1.0".into()
                ),
                (
                    "spec.volumes[1].image.reference".into(),
                    "ghcr.io/acme/data:2".into()
                ),
            ]
        );
        assert_eq!(
            out.sources[0].other_paths,
            ["spec.volumes[2].image.reference"]
        );
        assert_eq!(out.notes.len(), 1, "{:?}", out.notes);
        assert!(
            out.notes[0].contains("spec.volumes[3].image.reference is empty"),
            "{:?}",
            out.notes
        );
        // In a workload's pod template too; a volume source of the wrong type is an error.
        let dep = json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "c"},
            "spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [],
                "volumes": [{"name": "d", "image": {"reference": "registry.example/x@sha256:0000000000000000000000000000000000000000000000000000000000000000"}}]}}}}}});
        let out = block_on(extract(&dep, &DocumentSet::default())).unwrap();
        assert_eq!(
            out.sources[0].path,
            "spec.jobTemplate.spec.template.spec.volumes[0].image.reference"
        );
        let bad = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [], "volumes": [{"name": "d", "image": "nginx"}]}});
        let e = block_on(extract(&bad, &DocumentSet::default())).unwrap_err();
        assert!(
            e.to_string()
                .contains("spec.volumes[0].image: expected a mapping, got a string"),
            "{e}"
        );
    }

    #[test]
    fn many_images_are_each_kept_once_up_to_the_limits() {
        let pod = |fields: usize, distinct: usize| {
            let containers: Vec<Value> = (0..fields)
                .map(|i| json!({"name": format!("c{i}"), "image": format!("ghcr.io/acme/app:{}", i % distinct)}))
                .collect();
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "n"},
                "spec": {"containers": containers}})
        };
        // 1,024 fields naming 256 distinct images: each once, with its other paths.
        let out = block_on(extract(&pod(1024, 256), &DocumentSet::default())).unwrap();
        assert_eq!(out.sources.len(), 256);
        assert!(out.sources.iter().all(|s| s.other_paths.len() == 3));
        assert_eq!(out.sources[7].other_paths[2], "spec.containers[775].image");
        // One distinct image more, or one field more: the extraction stops.
        for (fields, distinct) in [(257, 257), (1025, 1), (40_000, 40_000)] {
            let e = block_on(extract(&pod(fields, distinct), &DocumentSet::default())).unwrap_err();
            assert!(
                matches!(
                    e,
                    ExtractError::TooManyArtifacts {
                        max: 256,
                        fields: 1024,
                        ..
                    }
                ),
                "{fields}/{distinct}: {e}"
            );
            assert!(
                e.to_string()
                    .starts_with("Pod n/p: names more than 256 distinct OCI artifacts"),
                "{e}"
            );
        }
    }

    #[test]
    fn pod_image_paths() {
        for yes in [
            "spec.containers[0].image",
            "spec.template.spec.initContainers[12].image",
            "spec.ephemeralContainers[1].image",
            "spec.volumes[3].image.reference",
            "spec.jobTemplate.spec.template.spec.volumes[0].image.reference",
        ] {
            assert!(is_pod_image_path(yes), "{yes}");
        }
        for no in [
            "spec.url",
            "spec.containers[0].name",
            "spec.containers[x].image",
            "spec.volumes[0].image",
            "spec.volumes[0].configMap.name",
            "spec.sidecars[0].image",
            "spec.chartRef",
        ] {
            assert!(!is_pod_image_path(no), "{no}");
        }
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
