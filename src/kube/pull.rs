//! A Pod's pull credentials read from the Kubernetes API (its `imagePullSecrets` and its service
//! account's, with `get` by name), for the webhook and `audit`: `PullSecretError`. Must not `list`
//! or `watch`, nor read a secret of another namespace than the Pod's.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{KubeApi, namespace_name, object_name};
use crate::registry::AuthConfig;
use crate::registry::Credential;

impl KubeApi {
    /// The registry credentials a Pod would pull with: its own `imagePullSecrets` and its
    /// service account's (as the kubelet merges them), read with `get` by name. A secret or
    /// service account that does not exist is skipped with a note, as the kubelet does; one the
    /// API refuses or that does not parse is a note too, and its registry is then asked without
    /// it (an access failure is reported as such, never as "unsigned").
    pub(crate) async fn pull_credentials(
        &self,
        namespace: &str,
        identity: &crate::extract::PullIdentity,
    ) -> (BTreeMap<String, Credential>, Vec<String>) {
        let mut notes = Vec::new();
        let namespace = match namespace_name(namespace) {
            Ok(ns) => ns,
            Err(e) => return (BTreeMap::new(), vec![e.to_string()]),
        };
        let mut names = identity.secrets.clone();
        match object_name("service account", &identity.service_account) {
            Ok(account) => {
                let path = format!("/api/v1/namespaces/{namespace}/serviceaccounts/{account}");
                match self.get(&path).await {
                    Ok(Some(sa)) => names.extend(
                        sa.get("imagePullSecrets")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                            .filter_map(|s| s.get("name").and_then(Value::as_str))
                            .map(str::to_string),
                    ),
                    Ok(None) => {
                        notes.push(format!("service account {namespace}/{account} not found"))
                    }
                    Err(e) => notes.push(crate::error_chain(&e)),
                }
            }
            Err(e) => notes.push(e.to_string()),
        }
        let mut out = BTreeMap::new();
        names.sort();
        names.dedup();
        for name in names.iter().take(MAX_PULL_SECRETS) {
            let name = match object_name("pull secret", name) {
                Ok(n) => n,
                Err(e) => {
                    notes.push(e.to_string());
                    continue;
                }
            };
            let path = format!("/api/v1/namespaces/{namespace}/secrets/{name}");
            let secret = match self.get(&path).await {
                Ok(Some(s)) => s,
                Ok(None) => {
                    notes.push(format!("pull secret {namespace}/{name} not found"));
                    continue;
                }
                Err(e) => {
                    notes.push(crate::error_chain(&e));
                    continue;
                }
            };
            match docker_credentials(&secret, &format!("imagePullSecret {namespace}/{name}")) {
                Ok(creds) => {
                    for (host, c) in creds {
                        out.entry(host).or_insert(c);
                    }
                }
                Err(e) => notes.push(crate::error_chain(&e)),
            }
        }
        (out, notes)
    }
}

/// Most pull secrets read for one object.
const MAX_PULL_SECRETS: usize = 16;

/// Why a pull secret's registry credentials cannot be used. Each names the secret (never a
/// secret value).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum PullSecretError {
    /// A data entry is not base64 of UTF-8 text.
    #[error("{secret}: data[{key:?}] is not base64 text")]
    NotBase64Text { secret: String, key: &'static str },
    /// The entry its type calls for is missing.
    #[error("{secret}: no {key}")]
    Missing { secret: String, key: &'static str },
    /// A legacy `.dockercfg` that is not JSON.
    #[error("{secret}: .dockercfg is not JSON")]
    LegacyNotJson {
        secret: String,
        #[source]
        source: serde_json::Error,
    },
    /// Not of a registry secret's type.
    #[error("{secret}: type {kind} is not a registry secret")]
    NotARegistrySecret { secret: String, kind: String },
    /// The Docker config it holds does not parse.
    #[error("{secret}: {problem}")]
    Config { secret: String, problem: String },
}

/// The registry credentials of a `kubernetes.io/dockerconfigjson` (or legacy
/// `kubernetes.io/dockercfg`) secret, `label` naming it in errors and as the credentials'
/// source.
fn docker_credentials(
    secret: &Value,
    label: &str,
) -> Result<BTreeMap<String, Credential>, PullSecretError> {
    let data = |key: &'static str| {
        let b64 = secret
            .pointer(&format!(
                "/data/{}",
                key.replace('~', "~0").replace('/', "~1")
            ))
            .and_then(Value::as_str)
            .ok_or_else(|| PullSecretError::Missing {
                secret: label.to_string(),
                key,
            })?;
        crate::decode_base64(b64)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| PullSecretError::NotBase64Text {
                secret: label.to_string(),
                key,
            })
    };
    let text = match secret.get("type").and_then(Value::as_str) {
        Some("kubernetes.io/dockerconfigjson") => data(".dockerconfigjson")?,
        Some("kubernetes.io/dockercfg") => {
            let legacy = data(".dockercfg")?;
            let auths: Value =
                serde_json::from_str(&legacy).map_err(|source| PullSecretError::LegacyNotJson {
                    secret: label.to_string(),
                    source,
                })?;
            serde_json::json!({ "auths": auths }).to_string()
        }
        other => {
            return Err(PullSecretError::NotARegistrySecret {
                secret: label.to_string(),
                kind: other.unwrap_or("(none)").to_string(),
            });
        }
    };
    let config = AuthConfig::parse(&text).map_err(|problem| PullSecretError::Config {
        secret: label.to_string(),
        problem,
    })?;
    let source: std::sync::Arc<str> = label.into();
    let mut out = BTreeMap::new();
    for (host, secret) in config.secrets() {
        out.entry(host.to_string()).or_insert_with(|| Credential {
            secret: secret.clone(),
            source: source.clone(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names that are not Kubernetes names never reach the API: `.` and `..` would be read
    /// as `/secrets/` (a list) and `/namespaces/apps/`.
    #[test]
    fn invalid_pull_secret_names_are_never_asked_for() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let api = KubeApi::new(
            format!("http://127.0.0.1:{port}"),
            None,
            crate::kube::Token::None,
        )
        .unwrap();
        let identity = crate::extract::PullIdentity {
            secrets: vec![".".into(), "..".into(), "a/../b".into(), "Regcred".into()],
            service_account: "..".into(),
        };
        let (creds, notes) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(api.pull_credentials("apps", &identity));
        assert!(creds.is_empty());
        assert_eq!(notes.len(), 5, "{notes:?}");
        assert!(
            notes
                .iter()
                .all(|n| n.contains("is not a valid Kubernetes")),
            "{notes:?}"
        );
        assert!(notes[0].starts_with("service account \"..\""), "{notes:?}");
        let e = listener.accept().map(|_| ()).unwrap_err();
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::WouldBlock,
            "the API was called"
        );
        // An invalid namespace: nothing is asked either.
        let ok = crate::extract::PullIdentity {
            secrets: vec!["regcred".into()],
            service_account: "default".into(),
        };
        let (_, notes) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(api.pull_credentials("..", &ok));
        assert!(notes[0].contains("namespace \"..\""), "{notes:?}");
        let e = listener.accept().map(|_| ()).unwrap_err();
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::WouldBlock,
            "the API was called"
        );
    }

    #[test]
    fn registry_secrets() {
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let cfg = r#"{"auths":{"GHCR.IO":{"username":"bot","password":"pw"}}}"#;
        let secret = serde_json::json!({"type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": b64(cfg)}});
        let c = docker_credentials(&secret, "secret a/b").unwrap();
        assert_eq!(c["ghcr.io"].basic().unwrap().0, "bot");
        let legacy = serde_json::json!({"type": "kubernetes.io/dockercfg",
            "data": {".dockercfg": b64(r#"{"r.io":{"auth":"dTpw"}}"#)}});
        assert_eq!(
            docker_credentials(&legacy, "s").unwrap()["r.io"]
                .basic()
                .unwrap()
                .1,
            "p"
        );
        for bad in [
            serde_json::json!({"type": "Opaque", "data": {}}),
            serde_json::json!({"type": "kubernetes.io/dockerconfigjson", "data": {}}),
            serde_json::json!({"type": "kubernetes.io/dockerconfigjson",
                "data": {".dockerconfigjson": "!!"}}),
            serde_json::json!({"type": "kubernetes.io/dockerconfigjson",
                "data": {".dockerconfigjson": b64("{not json")}}),
        ] {
            let e = crate::error_chain(&docker_credentials(&bad, "secret a/b").unwrap_err());
            assert!(e.contains("secret a/b"), "{e}");
            assert!(!e.contains("pw"), "{e}");
        }
    }
}
