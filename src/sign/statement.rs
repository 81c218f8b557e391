//! The in-toto statement `ocigate attest` signs, byte for byte as cosign 3.1.1's `attest` writes
//! it (`pkg/cosign/attestation`); pure: no I/O, no signing, no registry.
//!
//! What cosign writes, measured against cosign 3.1.1 (both `--new-bundle-format` and legacy):
//! `{"_type":"https://in-toto.io/Statement/v0.1","subject":[{"name":"<registry>/<repository>",
//! "digest":{"sha256":"<hex>"}}],"predicateType":"<uri>","predicate":…}` — statement v0.1, one
//! subject named by the repository (no tag) and the resolved manifest digest, fields in this
//! order (protojson of the in-toto protobuf), the predicate's object keys sorted, its numbers
//! as Go writes float64s (`1`, `1.5`, `1e+21`, `1e-7`), no whitespace. How the predicate file
//! is embedded depends on the `--type` as given (cosign switches on the spelling, not the URI):
//! - `custom`, or the URI `https://cosign.sigstore.dev/attestation/v1`: the file's text as
//!   `{"Data":"<text>","Timestamp":"<RFC 3339, UTC, seconds>"}` (any UTF-8 text);
//! - `spdx`: the file's text as a JSON string, the statement then written by Go's
//!   `encoding/json` (keys `_type`, `predicate`, `predicateType`, `subject`; `<`, `>`, `&`,
//!   U+2028 and U+2029 escaped);
//! - `slsaprovenance`, `slsaprovenance02`, `slsaprovenance1`: the object as cosign's pass
//!   through the SLSA protobuf leaves it (`slsa.rs`: unknown fields dropped, proto3 defaults
//!   dropped, timestamps in UTC), for v1 after renaming `runDetails.metadata.invocationID`
//!   `invocationId` as cosign does;
//! - `vuln`: the object as cosign's Go struct leaves it (`vuln.rs`: every field of the struct,
//!   nothing else);
//! - `link`: the object's seven in-toto link fields, each required, nothing else;
//! - every other short name and any other URI: the JSON object as given.
//!
//! Numbers above 2^53 lose precision in cosign (float64) and are written the same way here.

use std::time::SystemTime;

use serde_json::{Map, Value};

use crate::predicate::{PredicateType, UnknownPredicateType};
use crate::reference::Digest;

/// Largest predicate file `attest` reads: real SBOMs run to tens of MiB.
pub const MAX_PREDICATE_BYTES: usize = 32 << 20;
/// The in-toto statement type cosign writes.
pub const STATEMENT_V01: &str = "https://in-toto.io/Statement/v0.1";
/// cosign's `custom` predicate type, whose predicate wraps the file's text.
pub const COSIGN_CUSTOM_PREDICATE: &str = "https://cosign.sigstore.dev/attestation/v1";

/// The fields cosign requires of a `link` predicate (in-toto's Link), and all it keeps.
const LINK_FIELDS: [&str; 7] = [
    "_type",
    "byproducts",
    "command",
    "environment",
    "materials",
    "name",
    "products",
];

/// A predicate file that cannot become a statement of its type.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PredicateError {
    /// `--type` is neither one of cosign's short names nor a URI.
    #[error("predicate: unknown type")]
    Type(#[source] UnknownPredicateType),
    /// The file is larger than [`MAX_PREDICATE_BYTES`].
    #[error("predicate: larger than {limit} bytes")]
    TooLarge {
        /// [`MAX_PREDICATE_BYTES`].
        limit: usize,
    },
    /// The file is not UTF-8 text.
    #[error("predicate: not UTF-8 text")]
    NotUtf8,
    /// A type whose predicate is JSON, and the file is not JSON.
    #[error("predicate for {predicate_type}: not JSON")]
    NotJson {
        /// The predicate type's URI.
        predicate_type: String,
        /// serde_json's error (line and column).
        #[source]
        source: serde_json::Error,
    },
    /// The file is JSON but not an object, as every predicate but `custom`'s and `spdx`'s is.
    #[error("predicate for {predicate_type}: a JSON {found}, not an object")]
    NotAnObject {
        /// The predicate type's URI.
        predicate_type: String,
        /// `array`, `string`, `number`, `boolean` or `null`.
        found: &'static str,
    },
    /// A SLSA provenance (or `vuln`) predicate with a value its schema refuses (cosign reads
    /// it through the SLSA protobuf, or its Go struct).
    #[error("predicate for {predicate_type}: {path} must be {expected}")]
    Schema {
        /// The predicate type's URI.
        predicate_type: String,
        /// Where, e.g. `runDetails.metadata.startedOn`.
        path: String,
        /// What the schema wants there, e.g. `an RFC 3339 timestamp`.
        expected: &'static str,
    },
    /// A `link` predicate without one of the fields in-toto's Link requires.
    #[error("predicate for {predicate_type}: required field {field} missing")]
    MissingField {
        /// The predicate type's URI.
        predicate_type: String,
        /// The missing field.
        field: &'static str,
    },
}

/// How the predicate is embedded in the statement.
#[derive(Debug, Clone)]
enum Body {
    /// A JSON object (already shaped for its type).
    Object(Map<String, Value>),
    /// `custom`: the text, wrapped with a timestamp when the statement is made.
    Custom(String),
    /// `spdx`: the text as a JSON string, the statement in Go's `encoding/json` form.
    Text(String),
}

/// A predicate file read for one `--type`: what `attest` puts in every statement it makes.
#[derive(Debug, Clone)]
pub struct Predicate {
    predicate_type: PredicateType,
    body: Body,
}

impl Predicate {
    /// Read `file` as the predicate of `given_type` (a cosign short name or a URI, as given to
    /// `--type`), as cosign reads it.
    pub fn parse(given_type: &str, file: &[u8]) -> Result<Predicate, PredicateError> {
        let predicate_type = PredicateType::parse(given_type).map_err(PredicateError::Type)?;
        if file.len() > MAX_PREDICATE_BYTES {
            return Err(PredicateError::TooLarge {
                limit: MAX_PREDICATE_BYTES,
            });
        }
        let text = std::str::from_utf8(file).map_err(|_| PredicateError::NotUtf8)?;
        let body = match given_type {
            "spdx" => Body::Text(text.to_string()),
            _ if predicate_type.is(COSIGN_CUSTOM_PREDICATE) => Body::Custom(text.to_string()),
            _ => Body::Object(shaped(
                given_type,
                object(text, &predicate_type)?,
                &predicate_type,
            )?),
        };
        Ok(Predicate {
            predicate_type,
            body,
        })
    }

    /// The predicate type's URI.
    pub fn predicate_type(&self) -> &PredicateType {
        &self.predicate_type
    }

    /// The statement (JSON bytes, cosign's) that the manifest `digest` of the repository `name`
    /// (`registry/repository`) has this predicate; `now` stamps a `custom` predicate.
    pub fn statement(&self, name: &str, digest: &Digest, now: SystemTime) -> Vec<u8> {
        let uri = self.predicate_type.as_str();
        let subject = format!(
            r#"[{{"name":{},"digest":{{"sha256":{}}}}}]"#,
            json_string(name),
            json_string(digest.hex())
        );
        let predicate = match &self.body {
            Body::Text(text) => {
                // Go's encoding/json of a map: keys sorted, HTML characters escaped.
                return format!(
                    r#"{{"_type":{},"predicate":{},"predicateType":{},"subject":{}}}"#,
                    go_string(STATEMENT_V01),
                    go_string(text),
                    go_string(uri),
                    go_html_escaped(&subject)
                )
                .into_bytes();
            }
            Body::Object(map) => {
                let mut out = String::new();
                write_object(map, &mut out);
                out
            }
            Body::Custom(text) => format!(
                r#"{{"Data":{},"Timestamp":{}}}"#,
                json_string(text),
                json_string(&rfc3339_seconds(now))
            ),
        };
        format!(
            r#"{{"_type":{},"subject":{subject},"predicateType":{},"predicate":{predicate}}}"#,
            json_string(STATEMENT_V01),
            json_string(uri),
        )
        .into_bytes()
    }

    /// Whether `other` (a DSSE payload found in the registry) states what
    /// [`Predicate::statement`] states for the same subject: equal as JSON (whatever the
    /// spelling of its numbers, escapes and whitespace), but for a `custom` predicate's
    /// `Timestamp`, which says only when it was made.
    pub fn same_statement(&self, ours: &[u8], other: &[u8]) -> bool {
        let read = |bytes: &[u8]| -> Option<Value> {
            let mut v: Value = serde_json::from_slice(bytes).ok()?;
            if matches!(self.body, Body::Custom(_))
                && let Some(p) = v.get_mut("predicate").and_then(Value::as_object_mut)
            {
                p.remove("Timestamp");
            }
            Some(v)
        };
        match (read(ours), read(other)) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        }
    }
}

/// The file's JSON object.
fn object(text: &str, t: &PredicateType) -> Result<Map<String, Value>, PredicateError> {
    let value: Value = serde_json::from_str(text).map_err(|source| PredicateError::NotJson {
        predicate_type: t.to_string(),
        source,
    })?;
    match value {
        Value::Object(map) => Ok(map),
        other => Err(PredicateError::NotAnObject {
            predicate_type: t.to_string(),
            found: match other {
                Value::Array(_) => "array",
                Value::String(_) => "string",
                Value::Number(_) => "number",
                Value::Bool(_) => "boolean",
                _ => "null",
            },
        }),
    }
}

/// The object as cosign shapes it for the type given.
fn shaped(
    given_type: &str,
    mut map: Map<String, Value>,
    t: &PredicateType,
) -> Result<Map<String, Value>, PredicateError> {
    use super::slsa::{SLSA_V1, SLSA_V02, normalize};
    let schema = |map: &Map<String, Value>, fields| {
        normalize(map, fields, "").map_err(|e| PredicateError::Schema {
            predicate_type: t.to_string(),
            path: e.path,
            expected: e.expected,
        })
    };
    match given_type {
        "slsaprovenance" | "slsaprovenance02" => schema(&map, SLSA_V02),
        "slsaprovenance1" => {
            if let Some(metadata) = map
                .get_mut("runDetails")
                .and_then(|r| r.get_mut("metadata"))
                .and_then(Value::as_object_mut)
                && let Some(id) = metadata.remove("invocationID")
            {
                metadata.insert("invocationId".into(), id);
            }
            schema(&map, SLSA_V1)
        }
        "vuln" => super::vuln::vuln(&map).map_err(|e| PredicateError::Schema {
            predicate_type: t.to_string(),
            path: e.path,
            expected: e.expected,
        }),
        "link" => {
            let mut kept = Map::new();
            for field in LINK_FIELDS {
                let value = map.remove(field).ok_or(PredicateError::MissingField {
                    predicate_type: t.to_string(),
                    field,
                })?;
                kept.insert(field.to_string(), value);
            }
            Ok(kept)
        }
        _ => Ok(map),
    }
}

/// `s` as a JSON string, escaped as protojson escapes it (only `"`, `\` and control
/// characters, as serde_json does).
fn json_string(s: &str) -> String {
    // Serializing a str cannot fail.
    serde_json::to_string(s).unwrap_or_default()
}

/// `s` as Go's `encoding/json` writes a string: protojson's escapes, and `<`, `>`, `&`,
/// U+2028 and U+2029 as `\uXXXX`.
fn go_string(s: &str) -> String {
    go_html_escaped(&json_string(s))
}

/// JSON text with Go's HTML escapes applied (these characters never occur in an escape).
fn go_html_escaped(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// A JSON value as protojson writes a `google.protobuf.Value`: object keys sorted, numbers as
/// float64s, no whitespace.
fn write_value(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&go_float(n.as_f64().unwrap_or(0.0))),
        Value::String(s) => out.push_str(&json_string(s)),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => write_object(map, out),
    }
}

fn write_object(map: &Map<String, Value>, out: &mut String) {
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    out.push('{');
    for (i, k) in keys.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&json_string(k));
        out.push(':');
        if let Some(v) = map.get(k) {
            write_value(v, out);
        }
    }
    out.push('}');
}

/// A float64 as Go's JSON encoders write it: the shortest form that reads back, in fixed
/// notation, or exponent notation (`1e+21`, `1e-7`) below 1e-6 and from 1e21.
fn go_float(f: f64) -> String {
    let abs = f.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let s = format!("{f:e}");
        match s.split_once('e') {
            Some((m, e)) if !e.starts_with('-') => format!("{m}e+{e}"),
            _ => s,
        }
    } else {
        format!("{f}")
    }
}

/// `t` in RFC 3339, UTC, to the second (Go's `time.RFC3339` of a UTC time).
pub(crate) fn rfc3339_seconds(t: SystemTime) -> String {
    use x509_cert::der::DateTime;
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    // DateTime covers years 1970 to 9999; a clock past that is stamped with the epoch.
    let Ok(dt) = DateTime::from_unix_duration(std::time::Duration::from_secs(since.as_secs()))
    else {
        return "1970-01-01T00:00:00Z".to_string();
    };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minutes(),
        dt.seconds()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:5ec7d9be170164069390b3d0810240435b9af5f44094df52ce97486897cdf4c1";
    const NAME: &str = "127.0.0.1:45123/app";

    fn statement(given: &str, file: &str) -> String {
        let p = Predicate::parse(given, file.as_bytes()).unwrap();
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_796_300_258);
        String::from_utf8(p.statement(NAME, &Digest::parse(DIGEST).unwrap(), at)).unwrap()
    }

    /// Each expected statement is what cosign 3.1.1 `attest` wrote for the same file and type.
    #[test]
    fn statements_are_cosigns_byte_for_byte() {
        let subject = r#""subject":[{"name":"127.0.0.1:45123/app","digest":{"sha256":"5ec7d9be170164069390b3d0810240435b9af5f44094df52ce97486897cdf4c1"}}]"#;
        let file = r#"{"b":2,"a":[1,1.5,1e21,1e-7,100000000000000000000,"<&>\u2028\u001f"],"big":12345678901234567890}"#;
        assert_eq!(
            statement("https://example.com/scan/v1", file),
            format!(
                "{{\"_type\":\"https://in-toto.io/Statement/v0.1\",{subject},\"predicateType\":\"https://example.com/scan/v1\",\"predicate\":{{\"a\":[1,1.5,1e+21,1e-7,100000000000000000000,\"<&>\u{2028}\\u001f\"],\"b\":2,\"big\":12345678901234567000}}}}"
            )
        );
        assert_eq!(
            statement("custom", "{\"x\":1}\n"),
            format!(
                "{{\"_type\":\"https://in-toto.io/Statement/v0.1\",{subject},\"predicateType\":\"https://cosign.sigstore.dev/attestation/v1\",\"predicate\":{{\"Data\":\"{{\\\"x\\\":1}}\\n\",\"Timestamp\":\"2026-12-03T12:17:38Z\"}}}}"
            )
        );
        assert_eq!(
            statement("spdx", "SPDXVersion: SPDX-2.3\n<a&b>"),
            format!(
                "{{\"_type\":\"https://in-toto.io/Statement/v0.1\",\"predicate\":\"SPDXVersion: SPDX-2.3\\n\\u003ca\\u0026b\\u003e\",\"predicateType\":\"https://spdx.dev/Document\",{subject}}}"
            )
        );
        let slsa = statement(
            "slsaprovenance1",
            r#"{"runDetails":{"metadata":{"invocationID":"x"},"builder":{"id":"b"}},"buildDefinition":{}}"#,
        );
        assert!(
            slsa.ends_with(r#""predicateType":"https://slsa.dev/provenance/v1","predicate":{"buildDefinition":{},"runDetails":{"builder":{"id":"b"},"metadata":{"invocationId":"x"}}}}"#),
            "{slsa}"
        );
    }

    #[test]
    fn refusals_and_sameness() {
        for (given, file, needle) in [
            ("slsaprovenance1", "[1]", "array, not an object"),
            ("spdxjson", "{", "not JSON"),
            ("link", r#"{"_type":"link"}"#, "byproducts missing"),
            ("sbom", "{}", "unknown type"),
        ] {
            let e = Predicate::parse(given, file.as_bytes()).unwrap_err();
            assert!(crate::error_chain(&e).contains(needle), "{given}: {e}");
        }
        assert!(matches!(
            Predicate::parse("custom", b"\xff"),
            Err(PredicateError::NotUtf8)
        ));
        let d = Digest::parse(DIGEST).unwrap();
        let p = Predicate::parse("custom", b"text").unwrap();
        let a = p.statement(NAME, &d, SystemTime::UNIX_EPOCH);
        let b = p.statement(NAME, &d, SystemTime::now());
        assert_ne!(a, b);
        assert!(p.same_statement(&a, &b));
        let q = Predicate::parse("https://x.dev/t", br#"{"a":1.0,"b":[true]}"#).unwrap();
        let ours = q.statement(NAME, &d, SystemTime::now());
        let spaced = String::from_utf8(ours.clone())
            .unwrap()
            .replace("\":", "\": ");
        assert!(q.same_statement(&ours, spaced.as_bytes()));
        let other = Predicate::parse("https://x.dev/t", br#"{"a":2}"#).unwrap();
        assert!(!q.same_statement(&ours, &other.statement(NAME, &d, SystemTime::now())));
        assert_eq!(go_float(0.1), "0.1");
        assert_eq!(go_float(1.5e-7), "1.5e-7");
        assert_eq!(go_float(-2e30), "-2e+30");
    }
}
