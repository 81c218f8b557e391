//! The workload that owns a Pod, as people name it: a ReplicaSet's Deployment, a Job's CronJob,
//! else the Pod's controller, else the Pod (read through `kube`'s cached `get`). Must not list
//! anything, nor judge.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::Value;

use super::{Place, object_of};
use crate::extract::Location;
use crate::kube::KubeApi;

/// A workload: `Deployment web`, `CronJob backup`, or an object that nothing owns.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Workload {
    /// Its apiVersion.
    pub(crate) api_version: String,
    /// Its kind.
    pub(crate) kind: String,
    /// Its name.
    pub(crate) name: String,
}

/// The kinds whose own controller is the workload people name (apps/v1 and batch/v1).
const ONE_LEVEL_UP: [(&str, &str, &str); 2] = [
    ("ReplicaSet", "apps/v1", "replicasets"),
    ("Job", "batch/v1", "jobs"),
];

/// What is known of each Pod's workload, and of the controllers looked up to find them.
#[derive(Default)]
pub(crate) struct Owners {
    /// (namespace, Pod name) → its workload.
    pods: HashMap<(String, String), Workload>,
    /// (namespace, kind, name) of a ReplicaSet or Job → its controller, if it has one.
    controllers: HashMap<(String, String, String), Option<Workload>>,
}

impl Owners {
    /// Finds `pod`'s workload (a ReplicaSet or Job read once each).
    pub(crate) async fn learn(&mut self, api: &KubeApi, pod: &Value) {
        let meta = &pod["metadata"];
        let (Some(ns), Some(name)) = (meta["namespace"].as_str(), meta["name"].as_str()) else {
            return;
        };
        let workload = match controller(pod) {
            None => return,
            Some(c) => self.up(api, ns, c).await,
        };
        self.pods.insert((ns.into(), name.into()), workload);
    }

    /// `c` (a Pod's controller), or its own controller for a ReplicaSet or Job that has one.
    async fn up(&mut self, api: &KubeApi, ns: &str, w: Workload) -> Workload {
        let Some((_, api_version, plural)) = ONE_LEVEL_UP
            .iter()
            .find(|(k, v, _)| *k == w.kind && *v == w.api_version)
        else {
            return w;
        };
        let key = (ns.to_string(), w.kind.clone(), w.name.clone());
        if let Some(known) = self.controllers.get(&key) {
            return known.clone().unwrap_or(w);
        }
        let path = format!("/apis/{api_version}/namespaces/{ns}/{plural}/{}", w.name);
        // Not readable (RBAC, gone): the ReplicaSet or Job itself is the workload.
        let above = match crate::kube::object_name("owner", &w.name) {
            Ok(_) => api.get(&path).await.ok().flatten(),
            Err(_) => None,
        };
        let found = above.as_ref().and_then(controller);
        self.controllers.insert(key, found.clone());
        found.unwrap_or(w)
    }

    /// The place of a location of the manifests reading of objects of `api_version`: a Pod's
    /// under its workload, any other object its own workload.
    pub(crate) fn place(&self, l: &Location, api_version: &str) -> Place {
        let object = object_of(l);
        let own = Workload {
            api_version: api_version.to_string(),
            kind: l.kind.clone().unwrap_or_default(),
            name: l.name.clone().unwrap_or_default(),
        };
        let workload = match (&l.namespace, &l.name, l.kind.as_deref()) {
            (Some(ns), Some(name), Some("Pod")) => self
                .pods
                .get(&(ns.clone(), name.clone()))
                .cloned()
                .unwrap_or(own),
            _ => own,
        };
        Place {
            namespace: l.namespace.clone(),
            workload,
            object,
            field: l.field_path.clone(),
        }
    }
}

/// An object's controller (the owner reference with `controller: true`).
fn controller(object: &Value) -> Option<Workload> {
    object["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["controller"] == true)
        .and_then(|r| {
            Some(Workload {
                api_version: r["apiVersion"].as_str()?.to_string(),
                kind: r["kind"].as_str()?.to_string(),
                name: r["name"].as_str()?.to_string(),
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_controller_is_the_owner_marked_so() {
        let pod = json!({"metadata": {"ownerReferences": [
            {"apiVersion": "v1", "kind": "Node", "name": "n1"},
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d9", "controller": true}
        ]}});
        let w = controller(&pod).unwrap();
        assert_eq!(w.api_version, "apps/v1");
        assert_eq!(
            (w.kind.as_str(), w.name.as_str()),
            ("ReplicaSet", "web-5d9")
        );
        assert!(controller(&json!({"metadata": {}})).is_none());
    }

    #[test]
    fn a_pod_nothing_owns_is_its_own_workload() {
        let owners = Owners::default();
        let l = Location {
            file: "cluster".into(),
            kind: Some("Pod".into()),
            namespace: Some("a".into()),
            name: Some("solo".into()),
            field_path: "spec.containers[0].image".into(),
        };
        let p = owners.place(&l, "v1");
        assert_eq!(p.workload.api_version, "v1");
        assert_eq!(p.workload.kind, "Pod");
        assert_eq!(p.workload.name, "solo");
        assert_eq!(p.object, "Pod solo");
        assert_eq!(p.field, "spec.containers[0].image");
    }
}
