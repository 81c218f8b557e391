//! Manifests as the registry layer hands them out: the fetched bytes with their digest and
//! media type, descriptors, and the recognition of what is a manifest at all. Must not: do
//! I/O or interpret signatures.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::error::{Op, RegistryError, RegistryErrorKind, Store};
use crate::reference::Digest;

/// An OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// An OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// A Docker schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// A Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// A manifest as fetched: its exact bytes, their digest and its media type.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The bytes as served (what the digest is of).
    pub bytes: Vec<u8>,
    /// The digest computed from the bytes, never a header's claim.
    pub digest: Digest,
    /// Its media type (see `manifest_media_type`).
    pub media_type: String,
}

/// A descriptor inside a manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// What the content is.
    pub media_type: String,
    /// Its digest as written (parsed where it is used).
    pub digest: String,
    /// Its size in bytes, as the manifest claims it.
    pub size: u64,
    /// `annotations` as written (cosign's signature, certificate and bundle on a signature
    /// layer; `org.opencontainers.image.ref.name` in a layout's index); `None` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// The artifact type of a referrer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
}

/// The subset of an image manifest / index we read and write.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    /// Always 2 for what is accepted.
    pub schema_version: u32,
    /// Its own `mediaType` field; `None` when absent (optional in OCI: the served type or its
    /// shape decides then, see [`Manifest::media_type`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// OCI 1.1 `artifactType` (a Sigstore bundle's media type); `None`: the config's media
    /// type stands for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// An image manifest's `config` descriptor; `None` for an index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Descriptor>,
    /// An image manifest's layers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<Descriptor>,
    /// An index's manifests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub manifests: Vec<Descriptor>,
    /// What a referrer refers to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    /// The manifest's own `annotations` (`org.opencontainers.image.source` and `.revision`
    /// are kept in decisions); `None` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

impl ImageManifest {
    /// `m` read as an image manifest or index (schema version 2); errors name `place`, where
    /// the caller got it.
    pub fn parse(m: &Manifest, place: &str) -> Result<Self, RegistryError> {
        let error = |detail: String| {
            RegistryError::new(
                Store::Named(place.to_string()),
                Op::ReadManifest,
                m.digest.to_string(),
                RegistryErrorKind::NotAManifest { detail },
            )
        };
        let parsed: ImageManifest =
            serde_json::from_slice(&m.bytes).map_err(|e| error(e.to_string()))?;
        if parsed.schema_version != 2 {
            return Err(error(format!("schemaVersion {}", parsed.schema_version)));
        }
        Ok(parsed)
    }
}

/// The media types a manifest is served as. `application/json` is what some registries and
/// static mirrors send for any JSON; the body's own shape decides then.
const MANIFEST_MEDIA_TYPES: [&str; 4] = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

fn is_manifest_media_type(t: &str) -> bool {
    MANIFEST_MEDIA_TYPES.contains(&t)
}

/// Whether `bytes` are a manifest, and its media type: its own `mediaType` field, else what
/// the registry or the layout's index declared for it, else its shape (`manifests` makes an
/// index). `Err` says why it is not one (escaped: the text comes from the registry). With
/// `served`, `declared` is the answer's Content-Type and must be a manifest's (or
/// `application/json`, or absent).
pub(super) fn manifest_media_type(
    bytes: &[u8],
    declared: Option<&str>,
    served: bool,
) -> Result<String, String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Shape {
        schema_version: Option<u64>,
        media_type: Option<String>,
        #[serde(default)]
        manifests: Option<serde::de::IgnoredAny>,
    }
    if served
        && let Some(t) = declared
        && !is_manifest_media_type(t)
        && t != "application/json"
    {
        return Err(format!(
            "served as {t:?}, which is not a manifest media type"
        ));
    }
    let shape: Shape = serde_json::from_slice(bytes).map_err(|e| {
        let what = if bytes.trim_ascii_start().first() == Some(&b'<') {
            "markup, not JSON"
        } else {
            "not a JSON manifest object"
        };
        format!("{what}: {e}")
    })?;
    match shape.schema_version {
        Some(2) => {}
        Some(v) => return Err(format!("schemaVersion {v}, not 2")),
        None => return Err("no schemaVersion".into()),
    }
    if let Some(t) = &shape.media_type
        && !is_manifest_media_type(t)
    {
        return Err(format!("mediaType {t:?} is not a manifest media type"));
    }
    let declared = declared.filter(|t| is_manifest_media_type(t));
    Ok(shape
        .media_type
        .or(declared.map(str::to_string))
        .unwrap_or_else(|| {
            if shape.manifests.is_some() {
                OCI_INDEX
            } else {
                OCI_MANIFEST
            }
            .to_string()
        }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_not_a_manifest_is_refused() {
        let m = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}"#;
        let check = |b: &[u8], t: Option<&str>| manifest_media_type(b, t, true);
        assert_eq!(check(m, Some(OCI_MANIFEST)).unwrap(), OCI_MANIFEST);
        assert_eq!(check(m, Some("application/json")).unwrap(), OCI_MANIFEST);
        assert_eq!(check(m, None).unwrap(), OCI_MANIFEST);
        let index = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert_eq!(check(index, None).unwrap(), OCI_INDEX);
        assert_eq!(check(index, Some(DOCKER_LIST)).unwrap(), DOCKER_LIST);
        let html = b"<html><body>maintenance\x1b[31m</body></html>";
        let e = check(html, Some("text/html")).unwrap_err();
        assert_eq!(
            e,
            r#"served as "text/html", which is not a manifest media type"#
        );
        let e = check(html, Some("application/json")).unwrap_err();
        assert!(e.starts_with("markup, not JSON"), "{e}");
        let e = check(br#"{"schemaVersion":1,"fsLayers":[]}"#, None).unwrap_err();
        assert_eq!(e, "schemaVersion 1, not 2");
        let e = check(br#"{"layers":[]}"#, None).unwrap_err();
        assert_eq!(e, "no schemaVersion");
        let e = check(
            br#"{"schemaVersion":2,"mediaType":"text/html\u001b"}"#,
            None,
        )
        .unwrap_err();
        assert_eq!(
            e,
            r#"mediaType "text/html\u{1b}" is not a manifest media type"#
        );
        let e = check(b"[1,2]", None).unwrap_err();
        assert!(e.starts_with("not a JSON manifest object"), "{e}");
        // an OCI layout's index.json entry type is not a Content-Type: only the shape counts
        assert_eq!(
            manifest_media_type(m, Some("application/x-anything"), false).unwrap(),
            OCI_MANIFEST
        );
    }
}
