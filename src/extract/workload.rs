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
                via: Vec::new(),
            });
        }
    }
    Ok(())
}
