//! cosign's simple-signing payload (`application/vnd.dev.cosign.simplesigning.v1+json`):
//! `{"critical":{"identity":{"docker-reference"},"image":{"docker-manifest-digest"},"type"},"optional"}`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::reference::Digest;

pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
pub const COSIGN_SIGNATURE_TYPE: &str = "cosign container image signature";

/// The largest payload accepted (cosign's are a few hundred bytes).
pub const MAX_PAYLOAD_BYTES: usize = 64 << 10;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimpleSigning {
    pub critical: Critical,
    #[serde(default)]
    pub optional: Option<BTreeMap<String, serde_json::Value>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Critical {
    pub identity: Identity,
    pub image: Image,
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Identity {
    #[serde(rename = "docker-reference")]
    pub docker_reference: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Image {
    #[serde(rename = "docker-manifest-digest")]
    pub docker_manifest_digest: String,
}

/// Why a payload is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    #[error("payload is {size} bytes, over the {MAX_PAYLOAD_BYTES}-byte limit")]
    TooLarge { size: usize },
    #[error("payload is not a cosign simple-signing document: {detail}")]
    Malformed { detail: String },
    #[error("payload type is {found:?}, expected {COSIGN_SIGNATURE_TYPE:?}")]
    WrongType { found: String },
}

impl SimpleSigning {
    /// The payload cosign writes for `digest` of repository `docker_reference`.
    pub fn new(
        docker_reference: &str,
        digest: &Digest,
        annotations: &BTreeMap<String, String>,
    ) -> Self {
        SimpleSigning {
            critical: Critical {
                identity: Identity {
                    docker_reference: docker_reference.to_string(),
                },
                image: Image {
                    docker_manifest_digest: digest.to_string(),
                },
                kind: COSIGN_SIGNATURE_TYPE.to_string(),
            },
            optional: if annotations.is_empty() {
                None
            } else {
                Some(
                    annotations
                        .iter()
                        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                        .collect(),
                )
            },
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising plain strings and maps cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parse the exact bytes that were signed.
    pub fn parse(bytes: &[u8]) -> Result<Self, PayloadError> {
        if bytes.len() > MAX_PAYLOAD_BYTES {
            return Err(PayloadError::TooLarge { size: bytes.len() });
        }
        let p: SimpleSigning =
            serde_json::from_slice(bytes).map_err(|e| PayloadError::Malformed {
                detail: e.to_string(),
            })?;
        if p.critical.kind != COSIGN_SIGNATURE_TYPE {
            return Err(PayloadError::WrongType {
                found: p.critical.kind,
            });
        }
        Ok(p)
    }

    /// `optional` as strings (non-string values are rendered as JSON).
    pub fn annotations(&self) -> BTreeMap<String, String> {
        self.optional
            .iter()
            .flatten()
            .map(|(k, v)| {
                let s = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), s)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_cosign_bytes() {
        // The exact payload cosign v2 wrote for connaisseur's keyless test image.
        let want = r#"{"critical":{"identity":{"docker-reference":"index.docker.io/phbelitz/rekor-test"},"image":{"docker-manifest-digest":"sha256:31dc72a13a0c34b40eb95419d2b2fd67320c856baf3b72da518023ee8d370aee"},"type":"cosign container image signature"},"optional":null}"#;
        let d = Digest::parse(
            "sha256:31dc72a13a0c34b40eb95419d2b2fd67320c856baf3b72da518023ee8d370aee",
        )
        .unwrap();
        let p = SimpleSigning::new("index.docker.io/phbelitz/rekor-test", &d, &BTreeMap::new());
        assert_eq!(String::from_utf8(p.to_bytes()).unwrap(), want);
        let back = SimpleSigning::parse(want.as_bytes()).unwrap();
        assert_eq!(back.critical.image.docker_manifest_digest, d.as_str());
    }

    #[test]
    fn annotations_round_trip() {
        let d = Digest::sha256_of(b"x");
        let mut a = BTreeMap::new();
        a.insert("env".to_string(), "prod".to_string());
        let p = SimpleSigning::parse(&SimpleSigning::new("r.io/a", &d, &a).to_bytes()).unwrap();
        assert_eq!(p.annotations(), a);
    }

    #[test]
    fn rejects_bad_payloads() {
        assert!(matches!(
            SimpleSigning::parse(b"{}"),
            Err(PayloadError::Malformed { .. })
        ));
        let wrong = br#"{"critical":{"identity":{"docker-reference":"a"},"image":{"docker-manifest-digest":"b"},"type":"atomic container signature"}}"#;
        assert!(matches!(
            SimpleSigning::parse(wrong),
            Err(PayloadError::WrongType { .. })
        ));
        let big = vec![b' '; MAX_PAYLOAD_BYTES + 1];
        assert!(matches!(
            SimpleSigning::parse(&big),
            Err(PayloadError::TooLarge { .. })
        ));
    }
}
