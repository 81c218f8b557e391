//! cosign's simple-signing payload (`application/vnd.dev.cosign.simplesigning.v1+json`):
//! `{"critical":{"identity":{"docker-reference"},"image":{"docker-manifest-digest"},"type"},"optional"}`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::reference::Digest;

/// The media type of a cosign signature layer (and of its payload).
pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The layer annotation that carries the base64 signature over the payload.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The payload's `critical.type` for an image signature.
pub const COSIGN_SIGNATURE_TYPE: &str = "cosign container image signature";

/// The largest payload accepted (cosign's are a few hundred bytes).
pub const MAX_PAYLOAD_BYTES: usize = 64 << 10;

/// A simple-signing payload: what cosign signs for an image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimpleSigning {
    /// What the signature binds: the repository, the manifest digest and the payload type.
    pub critical: Critical,
    /// Free-form annotations (`cosign sign -a k=v`); only string values are annotations.
    #[serde(default)]
    pub optional: Option<BTreeMap<String, serde_json::Value>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
/// The payload's `critical` section.
pub struct Critical {
    /// The repository the signer named.
    pub identity: Identity,
    /// The manifest digest signed.
    pub image: Image,
    /// The payload type ([`COSIGN_SIGNATURE_TYPE`] for an image signature).
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
/// `critical.identity`.
pub struct Identity {
    /// The repository (possibly with a tag) the signer named.
    #[serde(rename = "docker-reference")]
    pub docker_reference: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
/// `critical.image`.
pub struct Image {
    /// The manifest digest signed (`sha256:<hex>`).
    #[serde(rename = "docker-manifest-digest")]
    pub docker_manifest_digest: String,
}

/// Why a payload is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// Over [`MAX_PAYLOAD_BYTES`].
    #[error("payload is {size} bytes, over the {MAX_PAYLOAD_BYTES}-byte limit")]
    TooLarge {
        /// The payload's size in bytes.
        size: usize,
    },
    /// Not JSON of a simple-signing payload.
    #[error("payload is not a cosign simple-signing document: {detail}")]
    Malformed {
        /// What the JSON parser said.
        detail: String,
    },
    /// Another payload type than an image signature.
    #[error("payload type is {found:?}, expected {COSIGN_SIGNATURE_TYPE:?}")]
    WrongType {
        /// The `critical.type` found.
        found: String,
    },
    /// A key repeated, which another reader could resolve otherwise.
    #[error("payload is ambiguous: {detail} (cosign could read it as another document)")]
    Ambiguous {
        /// The repeated key.
        detail: String,
    },
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

    /// The payload's JSON, as cosign writes it.
    pub fn to_bytes(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    /// Parse the exact bytes that were signed.
    pub fn parse(bytes: &[u8]) -> Result<Self, PayloadError> {
        if bytes.len() > MAX_PAYLOAD_BYTES {
            return Err(PayloadError::TooLarge { size: bytes.len() });
        }
        check_unambiguous_keys(bytes, &["optional"]).map_err(|refused| match refused {
            KeysRefused::Ambiguous(detail) => PayloadError::Ambiguous { detail },
            KeysRefused::NotJson(e) => PayloadError::Malformed {
                detail: e.to_string(),
            },
        })?;
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

/// A key as Go's encoding/json compares struct field names (`bytes.EqualFold`, Unicode simple
/// folding): lower case, and the long s `ſ` (U+017F) as `s` (the Kelvin sign `K` lowercases to
/// `k` already). Those are the two letters outside ASCII that fold to an ASCII one, and every
/// field name that binds anything is ASCII.
fn go_fold(key: &str) -> String {
    key.chars()
        .map(|c| if c == '\u{017F}' { 's' } else { c })
        .collect::<String>()
        .to_lowercase()
}

/// Refuse JSON that two parsers could read differently: a key repeated in one object (serde
/// keeps one, another parser the other), or — outside the `free_form` members of the top-level
/// object, which Go reads as maps — two keys equal but for case: Go's encoding/json, which
/// cosign uses, matches struct fields case-insensitively, so `critical` and `Critical` would be
/// one field there and two here. JSON this walk cannot read is refused too, as not JSON (a
/// string that is not UTF-8, a lone surrogate, a number out of range, nesting past
/// serde_json's limit): the typed parsers that read the same bytes next skip unknown members
/// without checking any of that, so such a member ahead of an ambiguous key would otherwise
/// hide it from this check.
pub fn check_unambiguous_keys(bytes: &[u8], free_form: &[&str]) -> Result<(), KeysRefused> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let walk = Walk {
        free_form,
        top: true,
        exact: false,
    };
    match serde::de::DeserializeSeed::deserialize(walk, &mut de).and_then(|()| de.end()) {
        Ok(()) => Ok(()),
        Err(e) if e.is_data() => Err(KeysRefused::Ambiguous(e.to_string())),
        Err(e) => Err(KeysRefused::NotJson(e)),
    }
}

/// Why [`check_unambiguous_keys`] refused a document.
#[derive(Debug)]
#[non_exhaustive]
pub enum KeysRefused {
    /// A key repeated, or two equal but for case where they bind a field: what and where.
    Ambiguous(String),
    /// Not JSON that can be read whole (see [`check_unambiguous_keys`]).
    NotJson(serde_json::Error),
}

#[derive(Clone, Copy)]
struct Walk<'a> {
    free_form: &'a [&'a str],
    top: bool,
    /// Keys compared exactly (inside a map that Go reads as a map).
    exact: bool,
}

impl<'de> serde::de::DeserializeSeed<'de> for Walk<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JSON")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        use serde::de::Error as _;
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let folded = if self.exact {
                key.clone()
            } else {
                go_fold(&key)
            };
            if !seen.insert(folded) {
                let how = if self.exact { "" } else { " (ignoring case)" };
                let shown: String = crate::escape_text(&key).chars().take(64).collect();
                return Err(A::Error::custom(format!(
                    "key {shown:?} appears twice in one object{how}"
                )));
            }
            let child = Walk {
                free_form: self.free_form,
                top: false,
                exact: self.exact || (self.top && self.free_form.contains(&key.as_str())),
            };
            map.next_value_seed(child)?;
        }
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let child = Walk { top: false, ..self };
        while seq.next_element_seed(child)?.is_some() {}
        Ok(())
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
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
        assert_eq!(String::from_utf8(p.to_bytes().unwrap()).unwrap(), want);
        let back = SimpleSigning::parse(want.as_bytes()).unwrap();
        assert_eq!(back.critical.image.docker_manifest_digest, d.as_str());
    }

    #[test]
    fn annotations_round_trip() {
        let d = Digest::sha256_of(b"x");
        let mut a = BTreeMap::new();
        a.insert("env".to_string(), "prod".to_string());
        let p = SimpleSigning::parse(&SimpleSigning::new("r.io/a", &d, &a).to_bytes().unwrap())
            .unwrap();
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

    #[test]
    fn ambiguous_payloads_are_refused() {
        let d = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
        let body = |extra: &str| {
            format!(
                r#"{{"critical":{{"identity":{{"docker-reference":"r.io/a"}},"image":{{"docker-manifest-digest":"{d}"}},"type":"cosign container image signature"}}{extra}}}"#
            )
        };
        assert!(SimpleSigning::parse(body("").as_bytes()).is_ok());
        for (extra, needle) in [
            // cosign (Go) would read the second, case-variant `Critical` into the same field.
            (
                r#","Critical":{"identity":{"docker-reference":"r.io/b"},"image":{"docker-manifest-digest":"sha256:1"},"type":"cosign container image signature"}"#,
                "\"Critical\" appears twice in one object (ignoring case)",
            ),
            (r#","critical":{}"#, "\"critical\" appears twice"),
            (
                r#","optional":{"a":"1","a":"2"}"#,
                "\"a\" appears twice in one object at",
            ),
        ] {
            let e = SimpleSigning::parse(body(extra).as_bytes()).unwrap_err();
            assert!(matches!(e, PayloadError::Ambiguous { .. }), "{e}");
            assert!(e.to_string().contains(needle), "{e}");
        }
        // Annotation keys are a map in Go: two that differ in case are two annotations.
        assert!(
            SimpleSigning::parse(body(r#","optional":{"env":"1","Env":"2"}"#).as_bytes()).is_ok()
        );
        // An in-toto statement's subject digest map repeating a key.
        let st = br#"{"subject":[{"digest":{"sha256":"aa","sha256":"bb"}}],"predicateType":"x"}"#;
        assert!(check_unambiguous_keys(st, &["predicate"]).is_err());
        // Go folds the long s (U+017F) to `s` and the Kelvin sign (U+212A) to `k`: a second
        // subject or digest spelt with them is the same field to cosign.
        for twice in [
            "{\"subject\":[],\"\u{017F}ubject\":[],\"predicateType\":\"x\"}",
            "{\"subject\":[{\"digest\":{},\"dige\u{017F}t\":{}}],\"predicateType\":\"x\"}",
            "{\"predicateType\":\"x\",\"link\":1,\"lin\u{212A}\":2}",
        ] {
            let e = check_unambiguous_keys(twice.as_bytes(), &["predicate"]);
            assert!(e.is_err(), "{twice}");
        }
    }
}
