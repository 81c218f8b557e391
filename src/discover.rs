//! Finding the signatures of a digest, with a note for every place looked at. No crypto here.
//!
//! Layouts read now: cosign's legacy `sha256-<hex>.sig` tag (one simple-signing layer per
//! signature). A registry failure is an error, never "no signatures".

use std::collections::BTreeMap;

use serde::Serialize;

use crate::payload::{SIGNATURE_ANNOTATION, SIMPLE_SIGNING_MEDIA_TYPE};
use crate::reference::{Digest, ImageRef};
use crate::registry::{ImageManifest, Registry, RegistryError};

/// One signature found, not yet verified.
#[derive(Debug, Clone)]
pub struct SignatureCandidate {
    /// Where it was found, for people: `tag sha256-<hex>.sig layer 2`.
    pub location: String,
    /// The exact signed bytes.
    pub payload: Vec<u8>,
    /// The base64 signature as stored.
    pub signature: String,
    /// The layer's annotations (certificate, chain, Rekor bundle, ...).
    pub annotations: BTreeMap<String, String>,
}

/// What one lookup path found.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PathTried {
    pub path: String,
    pub found: usize,
    /// Why nothing (or not everything) was found there.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Discovery {
    pub candidates: Vec<SignatureCandidate>,
    pub paths: Vec<PathTried>,
}

impl Discovery {
    /// "tag sha256-….sig: not found" and the like, for a deny reason.
    pub fn summary(&self) -> String {
        self.paths
            .iter()
            .map(|p| {
                if p.notes.is_empty() {
                    format!("{}: {} found", p.path, p.found)
                } else {
                    format!("{}: {}", p.path, p.notes.join("; "))
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoverError {
    #[error("discovering signatures of {subject} at {path}")]
    Registry {
        subject: String,
        path: String,
        #[source]
        source: RegistryError,
    },
}

/// Every signature of `subject` (which must carry its digest) that the known layouts hold.
pub async fn discover(
    registry: &Registry,
    subject: &ImageRef,
    digest: &Digest,
) -> Result<Discovery, DiscoverError> {
    let mut out = Discovery::default();
    legacy_sig_tag(registry, subject, digest, &mut out).await?;
    Ok(out)
}

async fn legacy_sig_tag(
    registry: &Registry,
    subject: &ImageRef,
    digest: &Digest,
    out: &mut Discovery,
) -> Result<(), DiscoverError> {
    let tag = format!("{}.sig", digest.tag_prefix());
    let path = format!("tag {tag}");
    let wrap = |source| DiscoverError::Registry {
        subject: format!("{}@{digest}", subject.name()),
        path: path.clone(),
        source,
    };
    let sig_ref = subject.with_tag(&tag);
    let Some(manifest) = registry.get_manifest(&sig_ref).await.map_err(wrap)? else {
        out.paths.push(PathTried {
            path,
            found: 0,
            notes: vec!["not found".into()],
        });
        return Ok(());
    };
    let place = sig_ref.to_string();
    let parsed = ImageManifest::parse(&manifest, &place).map_err(wrap)?;
    let mut notes = Vec::new();
    let mut found = 0;
    for (i, layer) in parsed.layers.iter().enumerate() {
        let location = format!("{path} layer {}", i + 1);
        if layer.media_type != SIMPLE_SIGNING_MEDIA_TYPE {
            notes.push(format!(
                "layer {} is {:?}, not a cosign signature",
                i + 1,
                layer.media_type
            ));
            continue;
        }
        let annotations = layer.annotations.clone().unwrap_or_default();
        let Some(signature) = annotations.get(SIGNATURE_ANNOTATION).cloned() else {
            notes.push(format!(
                "layer {} has no {SIGNATURE_ANNOTATION} annotation",
                i + 1
            ));
            continue;
        };
        let payload = registry.get_blob(subject, layer).await.map_err(wrap)?;
        found += 1;
        out.candidates.push(SignatureCandidate {
            location,
            payload,
            signature,
            annotations,
        });
    }
    if parsed.layers.is_empty() {
        notes.push("manifest has no layers".into());
    }
    out.paths.push(PathTried { path, found, notes });
    Ok(())
}
