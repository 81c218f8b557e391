//! The registry credentials each audited Pod would pull with (its `imagePullSecrets` and its
//! service account's, through `kube`'s cached `get`), so that each artifact is checked with the
//! credentials of the Pods that run it and never with another namespace's. Must not list
//! anything, nor judge.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use crate::extract::Location;
use crate::kube::KubeApi;
use crate::registry::RequestCredentials;

/// The pull credentials of the Pods read so far, by the secrets that give them.
#[derive(Default)]
pub(crate) struct Pulls {
    /// (namespace, Pod name) → the key of its credentials.
    pods: HashMap<(String, String), String>,
    /// Key (`namespace/service account/secrets`) → the credentials; none for a Pod with no
    /// secret at all.
    credentials: HashMap<String, Option<RequestCredentials>>,
}

impl Pulls {
    /// Reads `pod`'s pull credentials, once per namespace, service account and secret list.
    pub(crate) async fn learn(&mut self, api: &KubeApi, pod: &Value) {
        let meta = &pod["metadata"];
        let (Some(ns), Some(name)) = (meta["namespace"].as_str(), meta["name"].as_str()) else {
            return;
        };
        let Some(identity) = crate::extract::pull_identity(pod, "v1", "Pod") else {
            return;
        };
        let key = format!(
            "{ns}/{}/{}",
            identity.service_account,
            identity.secrets.join(",")
        );
        if !self.credentials.contains_key(&key) {
            // Notes (a secret not found, not readable) are the webhook's to say; here the
            // registry's answer says what was missing.
            let (found, _notes) = api.pull_credentials(ns, &identity).await;
            let found = (!found.is_empty()).then(|| Arc::new(found));
            self.credentials.insert(key.clone(), found);
        }
        self.pods.insert((ns.into(), name.into()), key);
    }

    /// The key and credentials of the Pod at `l` (`None` for what is not a Pod, or a Pod
    /// without pull credentials: those share one check).
    pub(crate) fn of(&self, l: &Location) -> Option<(&str, &RequestCredentials)> {
        if l.kind.as_deref() != Some("Pod") {
            return None;
        }
        let key = self.pods.get(&(l.namespace.clone()?, l.name.clone()?))?;
        let credentials = self.credentials.get(key)?.as_ref()?;
        Some((key.as_str(), credentials))
    }
}
