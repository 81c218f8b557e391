//! Writing objects through the Kubernetes API, for what `serve` keeps in the cluster: the
//! audit's PolicyReports and the Lease that elects the one replica writing them. A conflict
//! (409) and a missing object (404) are answers, not errors. Must not decide what is written.

use reqwest::Method;
use serde_json::Value;

use super::{KubeApi, KubeApiError};

/// What the API answered a write.
#[derive(Debug)]
pub(crate) enum Written {
    /// Stored.
    Done,
    /// Someone else changed it first (a stale `resourceVersion`), or it already exists.
    Conflict,
    /// There is no such object (or collection) to write to.
    NotFound,
}

impl KubeApi {
    /// `POST` `body` to the collection at `path`.
    pub(crate) async fn create(&self, path: &str, body: &Value) -> Result<Written, KubeApiError> {
        self.write(Method::POST, path, body).await
    }

    /// `PUT` `body` at the object's `path`: conditional when it carries
    /// `metadata.resourceVersion`, unconditional without.
    pub(crate) async fn replace(&self, path: &str, body: &Value) -> Result<Written, KubeApiError> {
        self.write(Method::PUT, path, body).await
    }

    async fn write(
        &self,
        method: Method,
        path: &str,
        body: &Value,
    ) -> Result<Written, KubeApiError> {
        let url = format!("{}{path}", self.server);
        let bytes =
            serde_json::to_vec(body).map_err(|_| KubeApiError::Body { url: url.clone() })?;
        let req = self
            .client
            .request(method, &url)
            .header("Accept", "application/json")
            .header("Content-Type", "application/json")
            .body(bytes);
        let resp = self.send(req, &url).await?;
        match resp.status().as_u16() {
            200 | 201 => Ok(Written::Done),
            404 => Ok(Written::NotFound),
            409 => Ok(Written::Conflict),
            status => Err(KubeApiError::Status { url, status }),
        }
    }
}
