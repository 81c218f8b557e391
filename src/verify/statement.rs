//! The in-toto statement an attestation signs (v0.1 and v1): its type, subjects and predicate
//! type, read without materialising the predicate; and the digests an artifact is known by. No crypto.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::IgnoredAny;

use super::StatementError;
use crate::bundle::BundleArtifact;
use crate::reference::Digest;

/// The in-toto Statement v0.1 type (cosign's legacy attestations).
pub const STATEMENT_V01: &str = "https://in-toto.io/Statement/v0.1";
/// The in-toto Statement v1 type (GitHub, npm, cosign bundles).
pub const STATEMENT_V1: &str = "https://in-toto.io/Statement/v1";

/// The algorithms a subject can name an artifact in, with their hex lengths.
const ALGORITHMS: [(&str, usize); 3] = [("sha256", 64), ("sha384", 96), ("sha512", 128)];

/// The digests an artifact is known by (an image: its manifest digest's algorithm only; a file
/// given to verify-bundle: sha256, sha384 and sha512 of its bytes), as lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactDigests {
    /// `(algorithm, lowercase hex)`, in the order of [`ALGORITHMS`].
    known: Vec<(&'static str, String)>,
}

/// A digest given as `algorithm` and hex that this verifier cannot compare.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ArtifactDigestError {
    /// Not sha256, sha384 or sha512.
    #[error("digest algorithm {0:?} is not sha256, sha384 or sha512")]
    Algorithm(String),
    /// Not hex of the algorithm's length.
    #[error("a {algorithm} digest is {length} hex characters")]
    Hex {
        /// The algorithm.
        algorithm: &'static str,
        /// The number of hex characters it has.
        length: usize,
    },
}

impl ArtifactDigests {
    /// An image (or anything named by one digest): known in that digest's algorithm only.
    pub fn of_digest(d: &Digest) -> Self {
        let known = ALGORITHMS
            .iter()
            .find(|(a, _)| *a == d.algorithm())
            .map(|(a, _)| (*a, d.hex().to_ascii_lowercase()))
            .into_iter()
            .collect();
        ArtifactDigests { known }
    }

    /// A file's bytes: known by their sha256, sha384 and sha512.
    pub fn of_bytes(b: &[u8]) -> Self {
        use aws_lc_rs::digest::{SHA256, SHA384, SHA512, digest};
        let known = vec![
            ("sha256", hex::encode(digest(&SHA256, b))),
            ("sha384", hex::encode(digest(&SHA384, b))),
            ("sha512", hex::encode(digest(&SHA512, b))),
        ];
        ArtifactDigests { known }
    }

    /// One digest given as text (`verify-bundle --digest sha512:<hex>`); hex of either case.
    pub fn from_hex(algorithm: &str, hex: &str) -> Result<Self, ArtifactDigestError> {
        let (name, length) = ALGORITHMS
            .iter()
            .find(|(a, _)| *a == algorithm)
            .ok_or_else(|| {
                ArtifactDigestError::Algorithm(crate::bounded::cut(algorithm, 64).into())
            })?;
        if hex.len() != *length || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ArtifactDigestError::Hex {
                algorithm: name,
                length: *length,
            });
        }
        Ok(ArtifactDigests {
            known: vec![(name, hex.to_ascii_lowercase())],
        })
    }

    /// The lowercase hex this artifact has in `algorithm`, if it is known in it.
    pub fn get(&self, algorithm: &str) -> Option<&str> {
        self.known
            .iter()
            .find(|(a, _)| *a == algorithm)
            .map(|(_, h)| h.as_str())
    }
}

impl fmt::Display for ArtifactDigests {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (a, h)) in self.known.iter().enumerate() {
            if i > 0 {
                f.write_str(" or ")?;
            }
            write!(f, "{a}:{h}")?;
        }
        Ok(())
    }
}

/// What of an in-toto statement verification reads: everything but the predicate.
#[derive(Debug)]
pub(crate) struct Statement {
    /// `_type`.
    pub(crate) statement_type: String,
    /// `subject`.
    pub(crate) subjects: Vec<Subject>,
    /// `predicateType`.
    pub(crate) predicate_type: String,
}

/// One subject: its digests by algorithm (the name is not bound by anything and not kept).
/// Read from a JSON object only: serde's derive would also fill it from an array, which Go's
/// decoder (cosign's) refuses.
#[derive(Debug, Deserialize)]
#[serde(try_from = "serde_json::Map<String, serde_json::Value>")]
pub(crate) struct Subject {
    digest: BTreeMap<String, String>,
}

impl TryFrom<serde_json::Map<String, serde_json::Value>> for Subject {
    type Error = serde_json::Error;

    fn try_from(
        mut object: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Self, Self::Error> {
        let digest = match object.remove("digest") {
            None | Some(serde_json::Value::Null) => BTreeMap::new(),
            Some(d) => serde_json::from_value(d)?,
        };
        Ok(Subject { digest })
    }
}

#[derive(Deserialize)]
struct Raw {
    #[serde(rename = "_type", default)]
    statement_type: String,
    #[serde(default)]
    subject: Vec<Subject>,
    #[serde(rename = "predicateType", default)]
    predicate_type: String,
    /// protojson (in-toto-golang's v1 statement) also reads the proto field name.
    #[serde(rename = "predicate_type", default)]
    snake_predicate_type: Option<IgnoredAny>,
}

impl Statement {
    /// Read a DSSE payload as an in-toto statement. Keys repeated, or equal but for case, where
    /// they bind the subject or the type are refused (Go's decoder would read them otherwise);
    /// the predicate is scanned for repeated keys and skipped, never built or copied.
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self, StatementError> {
        crate::payload::check_unambiguous_keys(bytes, &["predicate"])
            .map_err(StatementError::Ambiguous)?;
        // serde's derive fills a struct from an array too (`["<type>", [subjects], "<predicate
        // type>"]`); Go's decoder, and the in-toto format, want an object.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            use serde::de::Error as _;
            let e = serde_json::Error::custom("an in-toto statement is a JSON object");
            return Err(StatementError::NotStatement(e));
        }
        let raw: Raw = serde_json::from_slice(bytes).map_err(StatementError::NotStatement)?;
        if raw.snake_predicate_type.is_some() {
            let what = "both \"predicateType\" and \"predicate_type\"".to_string();
            return Err(StatementError::Ambiguous(what));
        }
        Ok(Statement {
            statement_type: raw.statement_type,
            subjects: raw.subject,
            predicate_type: raw.predicate_type,
        })
    }

    /// Whether the statement is of a type this verifier reads (v0.1 or v1).
    pub(crate) fn check_type(&self) -> Result<(), StatementError> {
        if self.statement_type == STATEMENT_V01 || self.statement_type == STATEMENT_V1 {
            return Ok(());
        }
        let found = crate::bounded::cut(&self.statement_type, 256).into_owned();
        Err(StatementError::StatementType { found })
    }

    /// Whether a subject names the artifact in an algorithm it is known by. Hex is compared
    /// exactly (lowercase), as cosign compares `sha256:<hex>` with the image digest and as the
    /// in-toto DigestSet requires lowercase hex.
    pub(crate) fn names(&self, artifact: &ArtifactDigests) -> bool {
        self.subjects.iter().any(|s| {
            s.digest
                .iter()
                .any(|(alg, hex)| artifact.get(alg) == Some(hex.as_str()))
        })
    }

    /// The digest sigstore-verify is handed to bind the statement to: one the statement names
    /// (sha256 or sha512, the algorithms it binds), preferring one the artifact is known by.
    /// The real binding, in every algorithm, is [`Statement::names`]'s, checked after.
    pub(crate) fn binding_artifact(
        &self,
        artifact: &ArtifactDigests,
    ) -> Option<BundleArtifact<'static>> {
        let candidates = || {
            self.subjects
                .iter()
                .flat_map(|s| s.digest.iter())
                .filter_map(|(alg, hex)| bundle_artifact(alg, hex).map(|b| (alg, hex, b)))
        };
        candidates()
            .find(|(alg, hex, _)| artifact.get(alg) == Some(hex.as_str()))
            .or_else(|| candidates().next())
            .map(|(_, _, b)| b)
    }

    /// The digests the statement names (the first few), for a mismatch's message.
    pub(crate) fn named_digests(&self) -> String {
        const SHOWN: usize = 4;
        let all: Vec<String> = self
            .subjects
            .iter()
            .flat_map(|s| s.digest.iter())
            .map(|(a, h)| {
                let a = crate::bounded::cut(a, 16);
                let h = crate::bounded::cut(h, 128);
                crate::escape_text(&format!("{a}:{h}"))
            })
            .collect();
        let mut shown = all
            .iter()
            .take(SHOWN)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if all.is_empty() {
            shown.push_str("no digest");
        } else if all.len() > SHOWN {
            shown.push_str(&format!(" and {} more", all.len() - SHOWN));
        }
        shown
    }
}

fn bundle_artifact(algorithm: &str, hex: &str) -> Option<BundleArtifact<'static>> {
    match algorithm {
        "sha256" => {
            let mut d = [0u8; 32];
            hex::decode_to_slice(hex, &mut d).ok()?;
            Some(BundleArtifact::Sha256(d))
        }
        "sha512" => {
            let mut d = [0u8; 64];
            hex::decode_to_slice(hex, &mut d).ok()?;
            Some(BundleArtifact::Sha512(d))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement(subject: &str) -> String {
        format!(
            r#"{{"_type":"{STATEMENT_V1}","subject":[{subject}],"predicateType":"https://slsa.dev/provenance/v1","predicate":{{"a":[1,2,{{"b":"c"}}]}}}}"#
        )
    }

    #[test]
    fn artifact_digests() {
        let d = Digest::sha256_of(b"image");
        let a = ArtifactDigests::of_digest(&d);
        assert_eq!(a.get("sha256"), Some(d.hex()));
        assert_eq!(a.get("sha512"), None);
        assert_eq!(a.to_string(), d.to_string());
        let f = ArtifactDigests::of_bytes(b"file");
        assert_eq!(f.get("sha384").map(str::len), Some(96));
        assert!(f.to_string().contains(" or sha512:"));
        let h = "AB".repeat(64);
        let x = ArtifactDigests::from_hex("sha512", &h).unwrap();
        assert_eq!(x.get("sha512"), Some("ab".repeat(64).as_str()));
        assert!(matches!(
            ArtifactDigests::from_hex("md5", "00"),
            Err(ArtifactDigestError::Algorithm(_))
        ));
        assert!(matches!(
            ArtifactDigests::from_hex("sha256", "zz"),
            Err(ArtifactDigestError::Hex { length: 64, .. })
        ));
    }

    #[test]
    fn subjects_name_the_artifact_in_any_known_algorithm() {
        let f = ArtifactDigests::of_bytes(b"pkg");
        for alg in ["sha256", "sha384", "sha512"] {
            let hex = f.get(alg).unwrap();
            let s = statement(&format!(
                r#"{{"name":"x","digest":{{"sha1":"00","{alg}":"{hex}"}}}}"#
            ));
            let st = Statement::parse(s.as_bytes()).unwrap();
            st.check_type().unwrap();
            assert!(st.names(&f), "{alg}");
            // known only by its sha256 (an image), a sha384/sha512 subject does not name it
            let image = ArtifactDigests::from_hex("sha256", f.get("sha256").unwrap()).unwrap();
            assert_eq!(st.names(&image), alg == "sha256", "{alg}");
            // sigstore-verify is handed a sha256/sha512 digest, never sha384
            assert_eq!(st.binding_artifact(&f).is_some(), alg != "sha384");
            // uppercase hex is not the lowercase digest (cosign compares exactly)
            let upper = statement(&format!(
                r#"{{"digest":{{"{alg}":"{}"}}}}"#,
                hex.to_ascii_uppercase()
            ));
            assert!(!Statement::parse(upper.as_bytes()).unwrap().names(&f));
        }
        let other = statement(r#"{"digest":{"sha256":"00"}}"#);
        let st = Statement::parse(other.as_bytes()).unwrap();
        assert!(!st.names(&f));
        assert_eq!(st.named_digests(), "sha256:00");
        assert!(st.binding_artifact(&f).is_none());
    }

    #[test]
    fn ambiguous_and_foreign_statements_are_refused() {
        let hex = "a".repeat(64);
        for bad in [
            statement(&format!(
                r#"{{"digest":{{"sha256":"{hex}","sha256":"{hex}"}}}}"#
            )),
            statement(&format!(
                r#"{{"digest":{{"sha256":"{hex}","SHA256":"{hex}"}}}}"#
            )),
            statement(&format!(
                r#"{{"digest":{{"sha256":"{hex}"}},"Digest":{{}}}}"#
            )),
            statement("").replace(
                "\"predicateType\"",
                "\"PredicateType\":\"x\",\"predicateType\"",
            ),
            statement("").replace("\"_type\"", "\"_Type\":\"x\",\"_type\""),
            statement("").replace("\"predicate\"", "\"Subject\":[],\"predicate\""),
            statement("").replace("\"predicate\"", "\"predicate_type\":\"x\",\"predicate\""),
            statement("").replace("{\"b\":\"c\"}", "{\"b\":\"c\",\"b\":\"d\"}"),
        ] {
            let e = Statement::parse(bad.as_bytes()).unwrap_err();
            assert!(matches!(e, StatementError::Ambiguous(_)), "{bad}: {e}");
        }
        // Case variants inside the predicate are the predicate's own business.
        let ok = statement("").replace("{\"b\":\"c\"}", "{\"b\":\"c\",\"B\":\"d\"}");
        assert!(Statement::parse(ok.as_bytes()).is_ok());
        let v01 = statement("").replace(STATEMENT_V1, STATEMENT_V01);
        assert!(
            Statement::parse(v01.as_bytes())
                .unwrap()
                .check_type()
                .is_ok()
        );
        let v2 = statement("").replace(STATEMENT_V1, "https://in-toto.io/Statement/v2");
        let e = Statement::parse(v2.as_bytes())
            .unwrap()
            .check_type()
            .unwrap_err();
        assert!(e.to_string().contains("Statement/v2"), "{e}");
        // serde's derive would read the statement, or a subject, from an array: refused, as
        // Go's decoder refuses them, even when the array holds what an object would.
        let digest = "a".repeat(64);
        let arrays = [
            "[]".to_string(),
            format!(
                "[\"{STATEMENT_V1}\",[{{\"digest\":{{\"sha256\":\"{digest}\"}}}}],\"https://spdx.dev/Document\"]"
            ),
            format!(
                "{{\"_type\":\"{STATEMENT_V1}\",\"subject\":[[{{\"sha256\":\"{digest}\"}}]],\"predicateType\":\"x\"}}"
            ),
        ];
        for array in &arrays {
            let e = Statement::parse(array.as_bytes()).unwrap_err();
            assert!(matches!(e, StatementError::NotStatement(_)), "{array}: {e}");
        }
        for garbage in ["{\"subject\":[null]}", "{\"subject\":{}}", "nope"] {
            let e = Statement::parse(garbage.as_bytes()).unwrap_err();
            assert!(
                matches!(e, StatementError::NotStatement(_)),
                "{garbage}: {e}"
            );
        }
    }
}
