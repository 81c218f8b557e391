//! Finding the signatures of a digest, with a note for every place looked at. No crypto here.
//!
//! Layouts read: cosign's legacy `sha256-<hex>.sig` tag (one simple-signing layer per
//! signature), and Sigstore bundles attached as OCI 1.1 referrers (cosign v3), found through
//! the referrers API or, where the registry has none, the referrers tag `sha256-<hex>`.
//! A registry failure is an error, never "no signatures".

use serde::Serialize;

use crate::candidate::{
    BundleCandidate, COSIGN_SIGN_PREDICATE, PREDICATE_TYPE_ANNOTATION, SignatureCandidate,
};
use crate::payload::{SIGNATURE_ANNOTATION, SIMPLE_SIGNING_MEDIA_TYPE};
use crate::reference::{Digest, ImageRef};
use crate::registry::{ImageManifest, Registry, RegistryError};

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
    /// Legacy cosign signatures.
    pub candidates: Vec<SignatureCandidate>,
    /// Sigstore bundles (cosign v3).
    pub bundles: Vec<BundleCandidate>,
    pub paths: Vec<PathTried>,
}

pub const BUNDLE_MEDIA_PREFIX: &str = "application/vnd.dev.sigstore.bundle";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";

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
    // Both lookups need only the digest: run them concurrently (one round trip, not two).
    let mut out = Discovery::default();
    let mut attached = Discovery::default();
    let (legacy, referred) = tokio::join!(
        legacy_sig_tag(registry, subject, digest, &mut out),
        referrers(registry, subject, digest, &mut attached)
    );
    legacy?;
    referred?;
    out.candidates.extend(attached.candidates);
    out.bundles.extend(attached.bundles);
    out.paths.extend(attached.paths);
    Ok(out)
}

async fn referrers(
    registry: &Registry,
    subject: &ImageRef,
    digest: &Digest,
    out: &mut Discovery,
) -> Result<(), DiscoverError> {
    let wrap = |path: &str| failed_at(subject, digest, path);
    let api = "referrers API".to_string();
    if let Some(descs) = registry
        .get_referrers(subject, digest)
        .await
        .map_err(wrap(&api))?
    {
        return examine(registry, subject, digest, &api, descs, out).await;
    }
    if subject.registry().is_some() {
        out.paths.push(PathTried {
            path: api,
            found: 0,
            notes: vec!["the registry has no referrers API; using the referrers tag".into()],
        });
    }
    let tag = digest.tag_prefix();
    let path = format!("referrers tag {tag}");
    let Some(index) = registry
        .get_manifest(&subject.with_tag(&tag))
        .await
        .map_err(wrap(&path))?
    else {
        out.paths.push(PathTried {
            path,
            found: 0,
            notes: vec!["not found".into()],
        });
        return Ok(());
    };
    let parsed = ImageManifest::parse(&index, &path).map_err(wrap(&path))?;
    examine(registry, subject, digest, &path, parsed.manifests, out).await
}

/// Look at each referrer; keep the Sigstore bundles that refer to `digest`.
async fn examine(
    registry: &Registry,
    subject: &ImageRef,
    digest: &Digest,
    path: &str,
    descs: Vec<crate::registry::Descriptor>,
    out: &mut Discovery,
) -> Result<(), DiscoverError> {
    let wrap = failed_at(subject, digest, path);
    let mut notes = Vec::new();
    let mut found = 0;
    for desc in descs {
        let declared = desc.artifact_type.clone().unwrap_or_default();
        if !declared.is_empty()
            && declared != OCI_EMPTY
            && !declared.starts_with(BUNDLE_MEDIA_PREFIX)
        {
            notes.push(format!(
                "{} is {declared}, not a Sigstore bundle",
                short(&desc.digest)
            ));
            continue;
        }
        let Ok(d) = Digest::parse(&desc.digest) else {
            notes.push(format!("{:?} is not a digest", desc.digest));
            continue;
        };
        let Some(m) = registry
            .get_manifest(&subject.with_digest(d.clone()))
            .await
            .map_err(&wrap)?
        else {
            notes.push(format!("{} is listed but missing", short(&desc.digest)));
            continue;
        };
        let manifest = ImageManifest::parse(&m, path).map_err(&wrap)?;
        let kind = manifest
            .artifact_type
            .clone()
            .or_else(|| manifest.config.as_ref().map(|c| c.media_type.clone()))
            .unwrap_or_default();
        if !kind.starts_with(BUNDLE_MEDIA_PREFIX) {
            notes.push(format!(
                "{} is {kind}, not a Sigstore bundle",
                short(&desc.digest)
            ));
            continue;
        }
        if manifest.subject.as_ref().map(|s| s.digest.as_str()) != Some(digest.as_str()) {
            notes.push(format!("{} refers to another image", short(&desc.digest)));
            continue;
        }
        let predicate = manifest
            .annotations
            .as_ref()
            .and_then(|a| a.get(PREDICATE_TYPE_ANNOTATION));
        if let Some(p) = predicate.filter(|p| p.as_str() != COSIGN_SIGN_PREDICATE) {
            notes.push(format!(
                "{} is an attestation ({p}), not a signature",
                short(&desc.digest)
            ));
            continue;
        }
        let Some(layer) = manifest
            .layers
            .iter()
            .find(|l| l.media_type.starts_with(BUNDLE_MEDIA_PREFIX))
        else {
            notes.push(format!("{} has no bundle layer", short(&desc.digest)));
            continue;
        };
        let bytes = registry.get_blob(subject, layer).await.map_err(&wrap)?;
        let json = String::from_utf8(bytes).map_err(|_| {
            wrap(crate::registry::RegistryError::BadManifest {
                place: path.to_string(),
                target: layer.digest.clone(),
                detail: "bundle is not UTF-8".into(),
            })
        })?;
        found += 1;
        out.bundles.push(BundleCandidate {
            location: format!("{path} {}", short(&m.digest.to_string())),
            json,
        });
    }
    out.paths.push(PathTried {
        path: path.to_string(),
        found,
        notes,
    });
    Ok(())
}

/// How a registry failure at `path` becomes a discovery error (never "no signatures").
fn failed_at(
    subject: &ImageRef,
    digest: &Digest,
    path: &str,
) -> impl Fn(RegistryError) -> DiscoverError + use<> {
    let subject = format!("{}@{digest}", subject.name());
    let path = path.to_string();
    move |source| DiscoverError::Registry {
        subject: subject.clone(),
        path: path.clone(),
        source,
    }
}

/// `sha256:0123456789ab…` for messages.
fn short(digest: &str) -> String {
    match digest.get(..19) {
        Some(s) if digest.len() > 19 => format!("{s}…"),
        _ => digest.to_string(),
    }
}

async fn legacy_sig_tag(
    registry: &Registry,
    subject: &ImageRef,
    digest: &Digest,
    out: &mut Discovery,
) -> Result<(), DiscoverError> {
    let tag = format!("{}.sig", digest.tag_prefix());
    let path = format!("tag {tag}");
    let wrap = failed_at(subject, digest, &path);
    let sig_ref = subject.with_tag(&tag);
    let Some(manifest) = registry.get_manifest(&sig_ref).await.map_err(&wrap)? else {
        out.paths.push(PathTried {
            path,
            found: 0,
            notes: vec!["not found".into()],
        });
        return Ok(());
    };
    let place = sig_ref.to_string();
    let parsed = ImageManifest::parse(&manifest, &place).map_err(&wrap)?;
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
        let payload = registry.get_blob(subject, layer).await.map_err(&wrap)?;
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
