//! How to reach registries: hosts spoken to over plain HTTP, credentials by host (flags,
//! environment sets, Docker config files), and credentials that belong to one request. The
//! same settings serve the CLI, the webhook and the library.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

/// Explicit credentials for one registry host.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}:<redacted>)", self.username)
    }
}

/// How to reach registries: the same settings for the CLI, the webhook and the library.
#[derive(Debug, Clone)]
pub struct RegistrySettings {
    /// Hosts spoken to over plain HTTP.
    pub plain_http: Vec<String>,
    /// Credentials by host; hosts without use the Docker config, then anonymous access.
    pub credentials: BTreeMap<String, Credentials>,
    /// Read `~/.docker/config.json` (or `$DOCKER_CONFIG/config.json`) and its helpers.
    pub docker_config: bool,
    /// Deadline for each registry operation.
    pub timeout: Duration,
    /// Largest manifest accepted.
    pub max_manifest_bytes: usize,
    /// Largest blob fetched (signature payloads and configs are small).
    pub max_blob_bytes: usize,
}

impl Default for RegistrySettings {
    fn default() -> Self {
        RegistrySettings {
            plain_http: Vec::new(),
            credentials: BTreeMap::new(),
            docker_config: true,
            timeout: Duration::from_secs(30),
            max_manifest_bytes: 4 << 20,
            max_blob_bytes: 4 << 20,
        }
    }
}

/// A problem in the registry settings from the environment or flags.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    #[error("registry setting {name}: {problem}")]
    Invalid { name: String, problem: String },
}

impl RegistrySettings {
    /// Apply `OCIGATE_REGISTRY_[N_]HOST`, `_USERNAME`, `_PASSWORD`, `_PLAIN_HTTP` sets.
    pub fn apply_env<I, K, V>(&mut self, vars: I) -> Result<(), SettingsError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        // prefix ("OCIGATE_REGISTRY_" or "OCIGATE_REGISTRY_3_") -> field -> value
        let mut sets: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for (k, v) in vars {
            let k = k.as_ref();
            let Some(rest) = k.strip_prefix("OCIGATE_REGISTRY_") else {
                continue;
            };
            let (set, field) = match rest.split_once('_') {
                Some((n, f)) if n.chars().all(|c| c.is_ascii_digit()) && !n.is_empty() => {
                    (n.to_string(), f)
                }
                _ => (String::new(), rest),
            };
            sets.entry(set)
                .or_default()
                .insert(field.to_string(), v.as_ref().to_string());
        }
        for (set, fields) in sets {
            let name = |f: &str| {
                if set.is_empty() {
                    format!("OCIGATE_REGISTRY_{f}")
                } else {
                    format!("OCIGATE_REGISTRY_{set}_{f}")
                }
            };
            for f in fields.keys() {
                if !matches!(
                    f.as_str(),
                    "HOST" | "USERNAME" | "PASSWORD" | "PLAIN_HTTP" | "REPOSITORY"
                ) {
                    return Err(SettingsError::Invalid {
                        name: name(f),
                        problem: "unknown or not yet supported setting (supported: HOST, \
                                  USERNAME, PASSWORD, PLAIN_HTTP)"
                            .into(),
                    });
                }
            }
            let Some(host) = fields.get("HOST").filter(|h| !h.is_empty()) else {
                return Err(SettingsError::Invalid {
                    name: name("HOST"),
                    problem: "missing; every credential set names its registry host".into(),
                });
            };
            let host = &settings_host(&name("HOST"), host)?;
            if fields.contains_key("REPOSITORY") {
                return Err(SettingsError::Invalid {
                    name: name("REPOSITORY"),
                    problem: "per-repository credential sets are not supported yet".into(),
                });
            }
            match (fields.get("USERNAME"), fields.get("PASSWORD")) {
                (Some(u), Some(p)) => {
                    self.credentials.insert(
                        host.to_string(),
                        Credentials {
                            username: u.clone(),
                            password: p.clone(),
                        },
                    );
                }
                (None, None) => {}
                (Some(_), None) => {
                    return Err(SettingsError::Invalid {
                        name: name("PASSWORD"),
                        problem: "missing while USERNAME is set".into(),
                    });
                }
                (None, Some(_)) => {
                    return Err(SettingsError::Invalid {
                        name: name("USERNAME"),
                        problem: "missing while PASSWORD is set".into(),
                    });
                }
            }
            if let Some(v) = fields.get("PLAIN_HTTP") {
                match v.to_ascii_lowercase().as_str() {
                    "true" | "1" | "yes" => self.plain_http.push(host.to_string()),
                    "false" | "0" | "no" | "" => {}
                    _ => {
                        return Err(SettingsError::Invalid {
                            name: name("PLAIN_HTTP"),
                            problem: format!("{v:?} is not true or false"),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Parse `HOST=USER:PASS` as given to `--registry-creds`.
    pub fn add_credentials_flag(&mut self, arg: &str) -> Result<(), SettingsError> {
        let bad = |p: &str| SettingsError::Invalid {
            name: "--registry-creds".into(),
            problem: p.to_string(),
        };
        let (host, userpass) = arg
            .split_once('=')
            .ok_or_else(|| bad("expected HOST=USER:PASS"))?;
        let (user, pass) = userpass
            .split_once(':')
            .ok_or_else(|| bad("expected HOST=USER:PASS"))?;
        if host.is_empty() || user.is_empty() {
            return Err(bad("host and user must not be empty"));
        }
        let host = settings_host("--registry-creds", host)?;
        self.credentials.insert(
            host,
            Credentials {
                username: user.to_string(),
                password: pass.to_string(),
            },
        );
        Ok(())
    }
}

impl RegistrySettings {
    /// Credentials from a Docker config file (a mounted `kubernetes.io/dockerconfigjson` secret,
    /// `--registry-config`): `auths` entries with `auth` (base64 `user:password`) or
    /// `username`/`password`. Hosts that already have credentials keep them (flags and
    /// environment sets come first). A file that does not parse is an error naming it.
    pub fn add_docker_config_json(&mut self, file: &str, text: &str) -> Result<(), SettingsError> {
        #[derive(Deserialize)]
        struct Config {
            #[serde(default)]
            auths: BTreeMap<String, Entry>,
        }
        #[derive(Deserialize)]
        struct Entry {
            auth: Option<String>,
            username: Option<String>,
            password: Option<String>,
        }
        let bad = |problem: String| SettingsError::Invalid {
            name: format!("--registry-config {file}"),
            problem,
        };
        let config: Config =
            serde_json::from_str(text).map_err(|e| bad(format!("not a Docker config: {e}")))?;
        for (key, entry) in config.auths {
            // Keys are hosts, or URLs such as https://index.docker.io/v1/.
            let host = key
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .split('/')
                .next()
                .unwrap_or_default();
            let host = settings_host(&format!("--registry-config {file}: auths key"), host)?;
            let (username, password) = match (entry.auth, entry.username, entry.password) {
                (Some(auth), _, _) => {
                    let decoded = crate::decode_base64(&auth)
                        .ok()
                        .and_then(|b| String::from_utf8(b).ok())
                        .ok_or_else(|| bad(format!("auths[{key:?}].auth is not base64 text")))?;
                    let (u, p) = decoded
                        .split_once(':')
                        .ok_or_else(|| bad(format!("auths[{key:?}].auth is not user:password")))?;
                    (u.to_string(), p.to_string())
                }
                (None, Some(u), Some(p)) => (u, p),
                _ => continue,
            };
            if username.is_empty() {
                return Err(bad(format!("auths[{key:?}] has an empty user name")));
            }
            self.credentials
                .entry(host)
                .or_insert(Credentials { username, password });
        }
        Ok(())
    }

    /// Speak plain HTTP to `host` (as given to `--registry-plain-http`).
    pub fn add_plain_http(&mut self, host: &str) -> Result<(), SettingsError> {
        let host = settings_host("--registry-plain-http", host)?;
        if !self.plain_http.contains(&host) {
            self.plain_http.push(host);
        }
        Ok(())
    }
}

/// A host named in a setting, in the spelling references have (`GHCR.IO:443` is `ghcr.io`), so
/// that the setting applies to exactly the references it names.
fn settings_host(name: &str, host: &str) -> Result<String, SettingsError> {
    crate::reference::canonical_host(host).map_err(|problem| SettingsError::Invalid {
        name: name.to_string(),
        problem,
    })
}

/// Credentials that belong to one request rather than to the process (an admitted Pod's
/// `imagePullSecrets`), by canonical host.
pub type RequestCredentials = std::sync::Arc<BTreeMap<String, Credentials>>;

tokio::task_local! {
    static REQUEST_CREDENTIALS: RequestCredentials;
}

/// Run `f` with `credentials` available to every registry request it makes, after the
/// configured credentials and before the Docker config. A task spawned inside `f` does not see
/// them unless it is run in this scope too (the engine does so for its verifications).
pub async fn with_request_credentials<F: Future>(
    credentials: RequestCredentials,
    f: F,
) -> F::Output {
    REQUEST_CREDENTIALS.scope(credentials, f).await
}

/// The request credentials in scope, if any.
pub fn request_credentials() -> Option<RequestCredentials> {
    REQUEST_CREDENTIALS.try_with(|c| c.clone()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_credential_sets() {
        let mut s = RegistrySettings::default();
        s.apply_env([
            ("OCIGATE_REGISTRY_HOST", "a.io"),
            ("OCIGATE_REGISTRY_USERNAME", "u"),
            ("OCIGATE_REGISTRY_PASSWORD", "p"),
            ("OCIGATE_REGISTRY_2_HOST", "127.0.0.1:5000"),
            ("OCIGATE_REGISTRY_2_PLAIN_HTTP", "true"),
            ("HOME", "/root"),
        ])
        .unwrap();
        assert_eq!(s.credentials["a.io"].username, "u");
        assert_eq!(s.plain_http, vec!["127.0.0.1:5000".to_string()]);
        assert!(!format!("{:?}", s.credentials["a.io"]).contains("\"p\""));
    }

    #[test]
    fn env_errors_name_the_variable() {
        for (vars, needle) in [
            (
                vec![("OCIGATE_REGISTRY_USERNAME", "u")],
                "OCIGATE_REGISTRY_HOST",
            ),
            (
                vec![
                    ("OCIGATE_REGISTRY_1_HOST", "h"),
                    ("OCIGATE_REGISTRY_1_USERNAME", "u"),
                ],
                "OCIGATE_REGISTRY_1_PASSWORD",
            ),
            (
                vec![
                    ("OCIGATE_REGISTRY_HOST", "h"),
                    ("OCIGATE_REGISTRY_PLAIN_HTTP", "maybe"),
                ],
                "OCIGATE_REGISTRY_PLAIN_HTTP",
            ),
            (
                vec![
                    ("OCIGATE_REGISTRY_HOST", "h"),
                    ("OCIGATE_REGISTRY_BOGUS", "x"),
                ],
                "OCIGATE_REGISTRY_BOGUS",
            ),
        ] {
            let e = RegistrySettings::default().apply_env(vars).unwrap_err();
            assert!(e.to_string().contains(needle), "{e}");
        }
    }

    #[test]
    fn docker_config_json_file() {
        let mut s = RegistrySettings::default();
        s.add_credentials_flag("ghcr.io=flag:wins").unwrap();
        // base64("bot:s3cret")
        let text = r#"{"auths":{"https://index.docker.io/v1/":{"auth":"Ym90OnMzY3JldA=="},
            "GHCR.IO":{"username":"cfg","password":"x"},"r.io:5000":{"username":"u","password":"p"},
            "empty.io":{}}}"#;
        s.add_docker_config_json("cfg.json", text).unwrap();
        assert_eq!(s.credentials["docker.io"].username, "bot");
        assert_eq!(s.credentials["docker.io"].password, "s3cret");
        assert_eq!(s.credentials["ghcr.io"].username, "flag");
        assert_eq!(s.credentials["r.io:5000"].password, "p");
        assert!(!s.credentials.contains_key("empty.io"));
        for bad in [
            "not json",
            r#"{"auths":{"a.io":{"auth":"!!"}}}"#,
            r#"{"auths":{"a.io":{"auth":"bm9jb2xvbg=="}}}"#,
        ] {
            let e = RegistrySettings::default()
                .add_docker_config_json("cfg.json", bad)
                .unwrap_err();
            assert!(e.to_string().contains("cfg.json"), "{e}");
            assert!(!e.to_string().contains("s3cret"), "{e}");
        }
    }

    #[test]
    fn creds_flag() {
        let mut s = RegistrySettings::default();
        s.add_credentials_flag("r.io=me:se:cret").unwrap();
        assert_eq!(s.credentials["r.io"].password, "se:cret");
        assert!(s.add_credentials_flag("r.io").is_err());
        assert!(s.add_credentials_flag("=u:p").is_err());
        // Hosts are stored in the one spelling references have.
        s.add_credentials_flag("GHCR.IO:443=me:x").unwrap();
        assert_eq!(s.credentials["ghcr.io"].username, "me");
        assert!(s.add_credentials_flag("bad host=u:p").is_err());
        s.add_plain_http("LocalHost:5000").unwrap();
        assert_eq!(s.plain_http, vec!["localhost:5000".to_string()]);
    }
}
