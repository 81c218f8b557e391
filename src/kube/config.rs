//! A kubeconfig file's current context as the client of [`KubeApi`]: its server, CA and
//! bearer token, refused where kubectl would refuse it or where the token would cross the
//! network in clear text. Reads files; knows nothing of what is asked of the API.

use std::path::Path;

use serde::Deserialize;

use super::{KubeApi, KubeApiError, KubeconfigError, Token};

impl KubeApi {
    /// The current context of a kubeconfig file (server, CA, bearer token). Reads files: call
    /// it off the async workers.
    pub(crate) fn from_kubeconfig(file: &Path) -> Result<Self, KubeApiError> {
        let bad = |problem: KubeconfigError| KubeApiError::Kubeconfig {
            file: file.to_path_buf(),
            problem,
        };
        let text = std::fs::read_to_string(file).map_err(|e| bad(KubeconfigError::Read(e)))?;
        let cfg: Kubeconfig = serde_saphyr::from_str(&text)
            .map_err(|e| bad(KubeconfigError::NotAKubeconfig(Box::new(e))))?;
        let ctx = match cfg.current_context.as_deref().filter(|c| !c.is_empty()) {
            Some(current) => cfg
                .contexts
                .iter()
                .find(|c| c.name == current)
                .ok_or_else(|| bad(KubeconfigError::NoCurrentContext(current.to_string())))?,
            None => cfg
                .contexts
                .first()
                .ok_or_else(|| bad(KubeconfigError::NoContext))?,
        };
        let cluster = cfg
            .clusters
            .iter()
            .find(|c| c.name == ctx.context.cluster)
            .ok_or_else(|| bad(KubeconfigError::NoCluster(ctx.context.cluster.clone())))?;
        let user = cfg
            .users
            .iter()
            .find(|u| Some(&u.name) == ctx.context.user.as_ref());
        let base = file.parent().unwrap_or(Path::new("."));
        let ca = match (
            &cluster.cluster.certificate_authority_data,
            &cluster.cluster.certificate_authority,
        ) {
            (Some(data), _) => Some(
                crate::decode_base64(data).map_err(|_| bad(KubeconfigError::CaDataNotBase64))?,
            ),
            (None, Some(path)) => Some(std::fs::read(base.join(path)).map_err(|source| {
                bad(KubeconfigError::CaFile {
                    path: path.clone(),
                    source,
                })
            })?),
            (None, None) => None,
        };
        let token = match user.map(|u| &u.user) {
            Some(UserEntry { token: Some(t), .. }) => Token::Static(t.clone()),
            Some(UserEntry {
                token_file: Some(f),
                ..
            }) => Token::File(base.join(f)),
            _ => Token::None,
        };
        let server = &cluster.cluster.server;
        if !matches!(token, Token::None) && plain_http_elsewhere(server) {
            return Err(bad(KubeconfigError::TokenOverHttp(server.clone())));
        }
        let api = Self::new(server.clone(), ca.as_deref(), token)?;
        let namespace = ctx.context.namespace.clone().filter(|n| !n.is_empty());
        Ok(KubeApi { namespace, ..api })
    }
}

/// Whether `server` is plain HTTP to a host other than this one (loopback).
fn plain_http_elsewhere(server: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(server) else {
        return false;
    };
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    url.scheme() == "http" && !loopback
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Kubeconfig {
    #[serde(default)]
    clusters: Vec<ClusterEntry>,
    #[serde(default)]
    users: Vec<UserNamed>,
    #[serde(default)]
    contexts: Vec<ContextEntry>,
    current_context: Option<String>,
}

#[derive(Deserialize)]
struct ClusterEntry {
    name: String,
    cluster: Cluster,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Cluster {
    server: String,
    certificate_authority: Option<String>,
    certificate_authority_data: Option<String>,
}

#[derive(Deserialize)]
struct UserNamed {
    name: String,
    user: UserEntry,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UserEntry {
    token: Option<String>,
    token_file: Option<String>,
}

#[derive(Deserialize)]
struct ContextEntry {
    name: String,
    context: Context,
}

#[derive(Deserialize)]
struct Context {
    cluster: String,
    user: Option<String>,
    namespace: Option<String>,
}
