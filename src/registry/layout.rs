//! The OCI image layout backend (`oci-layout:` directories,
//! <https://github.com/opencontainers/image-spec/blob/main/image-layout.md>): manifests, blobs
//! and tags on disk. Must not: speak HTTP or interpret signatures.

use std::path::{Path, PathBuf};

use super::error::{Op, RegistryError, RegistryErrorKind as Kind, Store};
use super::manifest::{Descriptor, ImageManifest, Manifest, manifest_media_type};
use crate::reference::{Digest, ImageRef};

/// The annotation that names a tag in `index.json`.
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// The error of `op` on `target` in the layout at `path`.
fn at(path: &Path, op: Op, target: impl Into<String>) -> impl FnOnce(Kind) -> RegistryError {
    let (store, target) = (Store::Layout(path.to_path_buf()), target.into());
    move |kind| RegistryError::new(store, op, target, kind)
}

fn io(doing: impl Into<String>) -> impl FnOnce(std::io::Error) -> Kind {
    let doing = doing.into();
    move |source| Kind::Io { doing, source }
}

fn index(path: &Path) -> Result<ImageManifest, Kind> {
    let bytes = index_bytes(path)?;
    serde_json::from_slice(&bytes).map_err(|source| Kind::LayoutIndex { source })
}

/// The bytes of the layout's `index.json`.
fn index_bytes(path: &Path) -> Result<Vec<u8>, Kind> {
    if !path.join("oci-layout").is_file() {
        return Err(Kind::NotALayout);
    }
    std::fs::read(path.join("index.json")).map_err(io("read index.json"))
}

pub(super) fn blob_path(path: &Path, digest: &Digest) -> PathBuf {
    path.join("blobs")
        .join(digest.algorithm())
        .join(digest.hex())
}

/// A blob checked against its digest; `Ok(None)` when it is not there.
fn read_blob(path: &Path, digest: &Digest, limit: usize) -> Result<Option<Vec<u8>>, Kind> {
    let p = blob_path(path, digest);
    let meta = match std::fs::metadata(&p) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(format!("read blob {digest}"))(e)),
    };
    if meta.len() > limit as u64 {
        return Err(Kind::TooLarge { limit });
    }
    let data = std::fs::read(&p).map_err(io(format!("read blob {digest}")))?;
    if !digest.matches(&data) {
        return Err(Kind::DigestMismatch);
    }
    Ok(Some(data))
}

fn tag_of(d: &Descriptor) -> Option<&String> {
    d.annotations.as_ref()?.get(REF_NAME)
}

/// The `index.json` entry `r` names: by digest (listed or not: a child of a listed index is
/// read by digest), by tag, or the only image when `r` names neither.
fn entry_for(index: &ImageManifest, r: &ImageRef) -> Result<Option<Descriptor>, Kind> {
    if let Some(d) = r.digest() {
        let listed = index.manifests.iter().find(|m| m.digest == d.as_str());
        return Ok(Some(listed.cloned().unwrap_or_else(|| Descriptor {
            media_type: String::new(),
            digest: d.to_string(),
            size: 0,
            annotations: None,
            artifact_type: None,
        })));
    }
    if let Some(tag) = r.tag() {
        return Ok(index
            .manifests
            .iter()
            .find(|m| tag_of(m).is_some_and(|n| n == tag))
            .cloned());
    }
    let untagged_or_images: Vec<&Descriptor> = index
        .manifests
        .iter()
        .filter(|m| !tag_of(m).is_some_and(|n| n.starts_with("sha256-")))
        .collect();
    match untagged_or_images.as_slice() {
        [one] => Ok(Some((*one).clone())),
        [] => Ok(None),
        _ => Err(Kind::AmbiguousLayout),
    }
}

/// The manifest `r` names in the layout at `path`, refused past `limit` bytes.
pub(super) fn get_manifest(
    path: &Path,
    r: &ImageRef,
    limit: usize,
) -> Result<Option<Manifest>, RegistryError> {
    let entry = index(path)
        .and_then(|index| entry_for(&index, r))
        .map_err(at(path, Op::FetchManifest, r.to_string()))?;
    let Some(entry) = entry else {
        return Ok(None);
    };
    let digest = Digest::parse(&entry.digest).map_err(|_| {
        at(path, Op::FetchManifest, r.to_string())(Kind::BadIndexEntry {
            digest: entry.digest.clone(),
        })
    })?;
    let at_digest = || at(path, Op::FetchManifest, digest.to_string());
    let Some(bytes) = read_blob(path, &digest, limit).map_err(at_digest())? else {
        return Ok(None);
    };
    let declared = Some(entry.media_type).filter(|t| !t.is_empty());
    // index.json's own media type for the entry is not a served Content-Type: only the
    // manifest's shape is checked.
    let media_type = manifest_media_type(&bytes, declared.as_deref(), false)
        .map_err(|detail| at_digest()(Kind::NotAManifest { detail }))?;
    Ok(Some(Manifest {
        bytes,
        digest,
        media_type,
    }))
}

/// The blob `desc` names (of `size` bytes by its descriptor), refused past `limit` bytes.
pub(super) fn get_blob(
    path: &Path,
    digest: &Digest,
    size: u64,
    limit: usize,
) -> Result<Vec<u8>, RegistryError> {
    let error = || at(path, Op::FetchBlob, digest.to_string());
    if size > limit as u64 {
        return Err(error()(Kind::TooLarge { limit }));
    }
    read_blob(path, digest, limit)
        .map_err(error())?
        .ok_or_else(|| error()(Kind::MissingBlob))
}

/// The tags of the layout: its index.json `ref.name` annotations.
pub(super) fn list_tags(path: &Path, r: &ImageRef) -> Result<Vec<String>, RegistryError> {
    let index = index(path).map_err(at(path, Op::ListTags, format!("tags of {}", r.name())))?;
    Ok(index.manifests.iter().filter_map(tag_of).cloned().collect())
}

/// Write `data` to a temporary file beside `dest` and rename it into place.
fn write_atomic(dest: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        dest.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, dest)
}

fn write_blob(path: &Path, digest: &Digest, data: &[u8]) -> Result<(), Kind> {
    index(path)?; // refuse to write into something that is not a layout
    let p = blob_path(path, digest);
    if p.is_file() {
        return Ok(());
    }
    write_atomic(&p, data).map_err(io(format!("write blob {digest}")))
}

/// Store a blob; returns its digest.
pub(super) fn put_blob(path: &Path, r: &ImageRef, data: &[u8]) -> Result<Digest, RegistryError> {
    let digest = Digest::sha256_of(data);
    write_blob(path, &digest, data).map_err(at(
        path,
        Op::PushBlob,
        format!("{}@{digest}", r.name()),
    ))?;
    Ok(digest)
}

/// Store a manifest, and list it in index.json under `r`'s tag if `r` has one (untagged
/// manifests, referrers, are blobs only).
pub(super) fn put_manifest(
    path: &Path,
    r: &ImageRef,
    bytes: &[u8],
    media_type: &str,
) -> Result<Digest, RegistryError> {
    let digest = Digest::sha256_of(bytes);
    let error = || at(path, Op::PushManifest, r.to_string());
    write_blob(path, &digest, bytes).map_err(error())?;
    if let Some(tag) = r.tag().filter(|_| r.digest().is_none()) {
        set_tag(path, tag, &digest, bytes.len() as u64, media_type).map_err(error())?;
    }
    Ok(digest)
}

/// Point `tag` at `digest` in `index.json`: the entry that had the tag is dropped and the
/// new one appended; every other entry, and every field ocigate does not model (a `platform`,
/// `urls`, the index's own annotations), is written back as it was read.
fn set_tag(
    path: &Path,
    tag: &str,
    digest: &Digest,
    size: u64,
    media_type: &str,
) -> Result<(), Kind> {
    let bytes = index_bytes(path)?;
    // Read as the index it must be (the errors of every other reading), then edited as JSON.
    serde_json::from_slice::<ImageManifest>(&bytes)
        .map_err(|source| Kind::LayoutIndex { source })?;
    let mut index: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|source| Kind::LayoutIndex { source })?;
    let entry = serde_json::json!({
        "mediaType": media_type,
        "digest": digest.to_string(),
        "size": size,
        "annotations": {REF_NAME: tag},
    });
    let Some(object) = index.as_object_mut() else {
        use serde::de::Error as _;
        let source = serde_json::Error::custom("index.json is not a JSON object");
        return Err(Kind::LayoutIndex { source });
    };
    let manifests = object
        .entry("manifests")
        .or_insert_with(|| serde_json::Value::Array(Vec::new()));
    match manifests.as_array_mut() {
        Some(manifests) => {
            manifests.retain(|m| m["annotations"][REF_NAME].as_str() != Some(tag));
            manifests.push(entry);
        }
        None => *manifests = serde_json::Value::Array(vec![entry]),
    }
    let bytes = serde_json::to_vec_pretty(&index)
        .map_err(|e| io("encode index.json")(std::io::Error::other(e)))?;
    write_atomic(&path.join("index.json"), &bytes).map_err(io("write index.json"))
}

/// Create an empty OCI image layout at `path` (used to build examples and test fixtures).
pub fn init_layout(path: &Path) -> Result<(), RegistryError> {
    let error = || at(path, Op::CreateLayout, "");
    std::fs::create_dir_all(path.join("blobs").join("sha256"))
        .map_err(|e| error()(io("create the layout")(e)))?;
    write_atomic(
        &path.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .map_err(|e| error()(io("write oci-layout")(e)))?;
    if !path.join("index.json").is_file() {
        write_atomic(
            &path.join("index.json"),
            br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#,
        )
        .map_err(|e| error()(io("write index.json")(e)))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{OCI_MANIFEST, Registry, RegistrySettings};

    #[test]
    fn layout_round_trip_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lay");
        let reg = Registry::new(RegistrySettings::default());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let r = ImageRef::parse(&format!("oci-layout:{}:v1", p.display())).unwrap();
        // not a layout yet
        let e = rt.block_on(reg.get_manifest(&r)).unwrap_err();
        assert!(e.to_string().contains("not an OCI image layout"), "{e}");
        init_layout(&p).unwrap();
        assert!(rt.block_on(reg.get_manifest(&r)).unwrap().is_none());
        let body = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}"#;
        let d = rt
            .block_on(reg.put_manifest(&r, body, OCI_MANIFEST))
            .unwrap();
        let m = rt.block_on(reg.get_manifest(&r)).unwrap().unwrap();
        assert_eq!(m.digest, d);
        assert_eq!(m.media_type, OCI_MANIFEST);
        // tampered blob is detected
        std::fs::write(blob_path(&p, &d), b"{}").unwrap();
        let e = rt.block_on(reg.get_manifest(&r)).unwrap_err();
        assert!(matches!(*e.kind, Kind::DigestMismatch), "{e}");
    }

    /// Tagging writes back what it does not model: an entry's `platform` and `urls`, the
    /// index's own annotations (they were dropped, the index re-encoded from ocigate's types).
    #[test]
    fn tagging_keeps_what_the_index_says_besides() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lay");
        init_layout(&p).unwrap();
        let d = Digest::sha256_of(b"x");
        let index = serde_json::json!({
            "schemaVersion": 2,
            "annotations": {"org.example/owner": "team"},
            "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": d.to_string(), "size": 1,
                 "platform": {"architecture": "arm64", "os": "linux"},
                 "urls": ["https://example.com/x"],
                 "annotations": {REF_NAME: "arm"}},
                {"mediaType": OCI_MANIFEST, "digest": d.to_string(), "size": 1,
                 "annotations": {REF_NAME: "v1"}}
            ]
        });
        std::fs::write(p.join("index.json"), index.to_string()).unwrap();
        set_tag(&p, "v1", &d, 1, OCI_MANIFEST).unwrap();
        let bytes = std::fs::read(p.join("index.json")).unwrap();
        let after: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(after["annotations"], index["annotations"]);
        assert_eq!(after["manifests"][0], index["manifests"][0]);
        assert_eq!(after["manifests"].as_array().unwrap().len(), 2);
        assert_eq!(after["manifests"][1]["annotations"][REF_NAME], "v1");
        // An index.json that is not an index object is an error, never rewritten.
        for bad in ["[]", "[2, [], null]", "\"index\""] {
            std::fs::write(p.join("index.json"), bad).unwrap();
            let e = set_tag(&p, "v1", &d, 1, OCI_MANIFEST).unwrap_err();
            assert!(matches!(e, Kind::LayoutIndex { .. }), "{bad}: {e:?}");
            assert_eq!(std::fs::read_to_string(p.join("index.json")).unwrap(), bad);
        }
    }
}
