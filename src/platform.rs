//! Multi-platform images: an index (OCI image index or Docker manifest list) lists one
//! manifest per platform. `verify --platform os/arch` picks one of them, and
//! `sign --recursive` signs each. Pure: parsing and choosing only.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::reference::Digest;

/// Most entries of an index that are read: an index from a registry is bounded like every
/// other list it controls (real ones list a few platforms, plus attestations).
pub const MAX_INDEX_ENTRIES: usize = 256;

/// A platform as `docker --platform` and `cosign --platform` write it: `os/arch[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// The operating system (`linux`).
    pub os: String,
    /// The CPU architecture (`amd64`, `arm64`).
    pub architecture: String,
    /// The architecture's variant (`v7` of `arm`), when the platform names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// `os/arch[/variant]`, each part non-empty and free of whitespace.
    pub fn parse(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok =
            |p: &&str| !p.is_empty() && !p.chars().any(|c| c.is_whitespace() || c.is_control());
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: None,
            }),
            [os, arch, variant] if ok(os) && ok(arch) && ok(variant) => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: Some(variant.to_string()),
            }),
            _ => Err(format!(
                "{:?} is not a platform: write os/arch or os/arch/variant (linux/amd64, linux/arm64/v8)",
                crate::escape_text(s)
            )),
        }
    }

    /// Whether an entry's platform is this one. A variant left out matches any variant; the
    /// variant `arm64` images mostly carry (`v8`) is the same as none.
    fn matches(&self, entry: &Platform) -> bool {
        if self.os != entry.os || self.architecture != entry.architecture {
            return false;
        }
        let normal = |v: Option<&str>| match (self.architecture.as_str(), v) {
            ("arm64", Some("v8")) => None,
            (_, v) => v.map(str::to_string),
        };
        match &self.variant {
            None => true,
            Some(v) => normal(Some(v)) == normal(entry.variant.as_deref()),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// One manifest an index lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    /// The entry's media type (a manifest, or an index in an index of indexes).
    pub media_type: String,
    /// The entry's digest.
    pub digest: Digest,
    /// The platform the entry declares, if any (attestation manifests declare `unknown/unknown`).
    pub platform: Option<Platform>,
}

impl IndexEntry {
    /// Whether this entry is an image index itself (an index of indexes).
    pub fn is_index(&self) -> bool {
        is_index_media_type(&self.media_type)
    }
}

/// Whether `media_type` names an index: an OCI image index or a Docker manifest list.
pub fn is_index_media_type(media_type: &str) -> bool {
    media_type == crate::registry::OCI_INDEX || media_type == crate::registry::DOCKER_LIST
}

/// Why an index's entries cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum IndexError {
    /// Not JSON of an image index.
    #[error("the index is not valid JSON of an image index")]
    Json {
        /// What the JSON parser said.
        detail: String,
    },
    /// Over [`MAX_INDEX_ENTRIES`].
    #[error("the index lists more than {limit} manifests")]
    TooMany {
        /// The limit.
        limit: usize,
    },
    /// An entry whose digest does not parse.
    #[error("index entry {position} has no valid digest ({digest:?})")]
    Digest {
        /// The entry's position in the index (from 0).
        position: usize,
        /// The digest as written.
        digest: String,
    },
}

/// The entries of an index, or `None` when `bytes` (served as `media_type`) is a single
/// manifest. An index is recognised by its media type, or, when that says nothing, by a
/// `manifests` list without `layers`.
pub fn index_entries(
    media_type: &str,
    bytes: &[u8],
) -> Result<Option<Vec<IndexEntry>>, IndexError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct RawEntry {
        #[serde(default)]
        media_type: String,
        #[serde(default)]
        digest: String,
        #[serde(default)]
        platform: Option<Platform>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct RawIndex {
        #[serde(default)]
        media_type: Option<String>,
        #[serde(default)]
        manifests: Option<Vec<RawEntry>>,
        #[serde(default)]
        layers: Option<serde::de::IgnoredAny>,
    }
    // The manifest's size is bounded when it is fetched; so is the list parsed here.
    let raw: RawIndex = serde_json::from_slice(bytes).map_err(|e| IndexError::Json {
        detail: e.to_string(),
    })?;
    let declared = raw.media_type.as_deref().unwrap_or(media_type);
    let is_index = is_index_media_type(declared)
        || is_index_media_type(media_type)
        || (raw.manifests.is_some() && raw.layers.is_none());
    if !is_index {
        return Ok(None);
    }
    let manifests = raw.manifests.unwrap_or_default();
    if manifests.len() > MAX_INDEX_ENTRIES {
        return Err(IndexError::TooMany {
            limit: MAX_INDEX_ENTRIES,
        });
    }
    manifests
        .into_iter()
        .enumerate()
        .map(|(position, e)| {
            let digest = Digest::parse(&e.digest).map_err(|_| IndexError::Digest {
                position,
                digest: crate::escape_text(&e.digest.chars().take(80).collect::<String>()),
            })?;
            Ok(IndexEntry {
                media_type: e.media_type,
                digest,
                platform: e.platform,
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// The entry for `platform`: among the entries whose platform matches, the first one without
/// a variant when none was asked for, else the first.
pub fn select<'a>(entries: &'a [IndexEntry], platform: &Platform) -> Option<&'a IndexEntry> {
    let mut matching = entries.iter().filter(|e| {
        e.platform
            .as_ref()
            .is_some_and(|p| platform.matches(p) && !e.is_index())
    });
    let first = matching.clone().next()?;
    if platform.variant.is_none()
        && let Some(plain) =
            matching.find(|e| e.platform.as_ref().is_some_and(|p| p.variant.is_none()))
    {
        return Some(plain);
    }
    Some(first)
}

/// The platforms an index lists, for a message (`linux/amd64, linux/arm64/v8`); entries
/// without one, and the `unknown/unknown` of attestation manifests, are left out.
pub fn listed_platforms(entries: &[IndexEntry]) -> String {
    let names: Vec<String> = entries
        .iter()
        .filter_map(|e| e.platform.as_ref())
        .filter(|p| p.os != "unknown")
        .map(|p| crate::escape_text(&p.to_string()))
        .collect();
    if names.is_empty() {
        "no platforms".to_string()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const C: &str = "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";

    fn index(entries: &str) -> Vec<u8> {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{entries}]}}"#
        )
        .into_bytes()
    }

    fn entry(digest: &str, platform: &str) -> String {
        format!(
            r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{digest}","size":1,"platform":{platform}}}"#
        )
    }

    #[test]
    fn platforms_parse_as_docker_writes_them() {
        let p = Platform::parse("linux/arm64/v8").unwrap();
        assert_eq!(p.variant.as_deref(), Some("v8"));
        assert_eq!(p.to_string(), "linux/arm64/v8");
        assert_eq!(
            Platform::parse("linux/amd64").unwrap().to_string(),
            "linux/amd64"
        );
        for bad in [
            "linux",
            "linux/",
            "/amd64",
            "linux/amd64/v1/x",
            "linux/am d64",
            "",
        ] {
            assert!(Platform::parse(bad).is_err(), "{bad:?}");
        }
        assert!(
            Platform::parse("linux/\x1b[2J")
                .unwrap_err()
                .contains("\\u{1b}")
        );
    }

    #[test]
    fn an_index_lists_its_platforms_and_a_manifest_is_not_an_index() {
        let bytes = index(
            &[
                entry(A, r#"{"os":"linux","architecture":"amd64"}"#),
                entry(B, r#"{"os":"linux","architecture":"arm64","variant":"v8"}"#),
                entry(C, r#"{"os":"unknown","architecture":"unknown"}"#),
            ]
            .join(","),
        );
        let entries = index_entries(crate::registry::OCI_INDEX, &bytes)
            .unwrap()
            .unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(listed_platforms(&entries), "linux/amd64, linux/arm64/v8");

        let manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}"#;
        assert_eq!(
            index_entries(crate::registry::OCI_MANIFEST, manifest).unwrap(),
            None
        );
        // A Docker list served under a generic type is still an index (by its shape).
        let list = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert_eq!(
            index_entries("application/json", list).unwrap(),
            Some(vec![])
        );
    }

    #[test]
    fn hostile_indexes_are_refused_not_trusted() {
        let many = vec![entry(A, "null"); MAX_INDEX_ENTRIES + 1].join(",");
        assert_eq!(
            index_entries(crate::registry::OCI_INDEX, &index(&many)),
            Err(IndexError::TooMany {
                limit: MAX_INDEX_ENTRIES
            })
        );
        let bad = index(&entry("sha256:zz", "null"));
        assert!(matches!(
            index_entries(crate::registry::OCI_INDEX, &bad),
            Err(IndexError::Digest { position: 0, .. })
        ));
        assert!(matches!(
            index_entries(crate::registry::OCI_INDEX, b"<html>"),
            Err(IndexError::Json { .. })
        ));
    }

    #[test]
    fn select_picks_the_platform_and_prefers_no_variant_when_none_is_asked() {
        let bytes = index(
            &[
                entry(A, r#"{"os":"linux","architecture":"arm","variant":"v6"}"#),
                entry(B, r#"{"os":"linux","architecture":"arm","variant":"v7"}"#),
                entry(C, r#"{"os":"linux","architecture":"arm64","variant":"v8"}"#),
            ]
            .join(","),
        );
        let entries = index_entries(crate::registry::OCI_INDEX, &bytes)
            .unwrap()
            .unwrap();
        let pick =
            |p: &str| select(&entries, &Platform::parse(p).unwrap()).map(|e| e.digest.to_string());
        assert_eq!(pick("linux/arm/v7").as_deref(), Some(B));
        assert_eq!(pick("linux/arm").as_deref(), Some(A));
        // arm64 with v8 and without a variant are the same platform.
        assert_eq!(pick("linux/arm64").as_deref(), Some(C));
        assert_eq!(pick("linux/arm64/v8").as_deref(), Some(C));
        assert_eq!(pick("linux/amd64"), None);
        assert_eq!(pick("windows/arm"), None);
        assert_eq!(pick("linux/arm/v8"), None);

        let plain_first = index(
            &[
                entry(A, r#"{"os":"linux","architecture":"amd64","variant":"v3"}"#),
                entry(B, r#"{"os":"linux","architecture":"amd64"}"#),
            ]
            .join(","),
        );
        let entries = index_entries(crate::registry::OCI_INDEX, &plain_first)
            .unwrap()
            .unwrap();
        let got = select(&entries, &Platform::parse("linux/amd64").unwrap()).unwrap();
        assert_eq!(got.digest.to_string(), B);
    }
}
