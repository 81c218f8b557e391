//! cosign's pass of a SLSA provenance predicate (v0.2 and v1) through the in-toto protobuf
//! schema (protojson, unknown fields discarded, then back to JSON); pure, no I/O.
//!
//! What the pass does, so that `ocigate attest` writes the predicate cosign writes: fields are
//! read by their JSON name or their proto name and written by the JSON name; fields the schema
//! does not know are dropped; empty strings, `false`, empty maps and lists, and `null` are
//! dropped (proto3 defaults), a message or `Struct` that is present stays even when empty;
//! bytes are written as standard padded base64; timestamps as UTC with 0, 3, 6 or 9
//! fractional digits. A value of the wrong JSON type is refused, as cosign refuses it.

use base64::Engine as _;
use serde_json::{Map, Value};

/// What a field holds.
pub(super) enum Kind {
    /// `string`.
    Str,
    /// `bool`.
    Bool,
    /// `bytes` (base64 in JSON).
    Bytes,
    /// `map<string, string>`.
    StrMap,
    /// `google.protobuf.Struct`: any JSON object, kept as it is.
    Struct,
    /// `google.protobuf.Timestamp` (RFC 3339).
    Timestamp,
    /// A message.
    Message(&'static [Field]),
    /// `repeated` message.
    List(&'static [Field]),
}

/// A field of a message: its JSON (lowerCamelCase) and proto (snake_case) names.
pub(super) struct Field(&'static str, &'static str, Kind);

const RESOURCE_DESCRIPTOR: &[Field] = &[
    Field("name", "name", Kind::Str),
    Field("uri", "uri", Kind::Str),
    Field("digest", "digest", Kind::StrMap),
    Field("content", "content", Kind::Bytes),
    Field("downloadLocation", "download_location", Kind::Str),
    Field("mediaType", "media_type", Kind::Str),
    Field("annotations", "annotations", Kind::Struct),
];

/// `https://slsa.dev/provenance/v1` (in-toto's `predicates/provenance/v1`).
pub(super) const SLSA_V1: &[Field] = &[
    Field(
        "buildDefinition",
        "build_definition",
        Kind::Message(&[
            Field("buildType", "build_type", Kind::Str),
            Field("externalParameters", "external_parameters", Kind::Struct),
            Field("internalParameters", "internal_parameters", Kind::Struct),
            Field(
                "resolvedDependencies",
                "resolved_dependencies",
                Kind::List(RESOURCE_DESCRIPTOR),
            ),
        ]),
    ),
    Field(
        "runDetails",
        "run_details",
        Kind::Message(&[
            Field(
                "builder",
                "builder",
                Kind::Message(&[
                    Field("id", "id", Kind::Str),
                    Field("version", "version", Kind::StrMap),
                    Field(
                        "builderDependencies",
                        "builder_dependencies",
                        Kind::List(RESOURCE_DESCRIPTOR),
                    ),
                ]),
            ),
            Field(
                "metadata",
                "metadata",
                Kind::Message(&[
                    Field("invocationId", "invocation_id", Kind::Str),
                    Field("startedOn", "started_on", Kind::Timestamp),
                    Field("finishedOn", "finished_on", Kind::Timestamp),
                ]),
            ),
            Field("byproducts", "byproducts", Kind::List(RESOURCE_DESCRIPTOR)),
        ]),
    ),
];

/// `https://slsa.dev/provenance/v0.2` (in-toto's `predicates/provenance/v0_2`).
pub(super) const SLSA_V02: &[Field] = &[
    Field(
        "builder",
        "builder",
        Kind::Message(&[Field("id", "id", Kind::Str)]),
    ),
    Field("buildType", "build_type", Kind::Str),
    Field(
        "invocation",
        "invocation",
        Kind::Message(&[
            Field(
                "configSource",
                "config_source",
                Kind::Message(&[
                    Field("uri", "uri", Kind::Str),
                    Field("digest", "digest", Kind::StrMap),
                    Field("entryPoint", "entry_point", Kind::Str),
                ]),
            ),
            Field("parameters", "parameters", Kind::Struct),
            Field("environment", "environment", Kind::Struct),
        ]),
    ),
    Field("buildConfig", "build_config", Kind::Struct),
    Field(
        "metadata",
        "metadata",
        Kind::Message(&[
            Field("buildInvocationId", "build_invocation_id", Kind::Str),
            Field("buildStartedOn", "build_started_on", Kind::Timestamp),
            Field("buildFinishedOn", "build_finished_on", Kind::Timestamp),
            Field(
                "completeness",
                "completeness",
                Kind::Message(&[
                    Field("parameters", "parameters", Kind::Bool),
                    Field("environment", "environment", Kind::Bool),
                    Field("materials", "materials", Kind::Bool),
                ]),
            ),
            Field("reproducible", "reproducible", Kind::Bool),
        ]),
    ),
    Field(
        "materials",
        "materials",
        Kind::List(&[
            Field("uri", "uri", Kind::Str),
            Field("digest", "digest", Kind::StrMap),
        ]),
    ),
];

/// A value the schema refuses: where (a JSON path such as `runDetails.metadata.startedOn`) and
/// what was expected there.
#[derive(Debug)]
pub(super) struct SchemaError {
    pub(super) path: String,
    pub(super) expected: &'static str,
}

/// `object` as cosign's protobuf pass leaves it, for the message `fields`.
pub(super) fn normalize(
    object: &Map<String, Value>,
    fields: &[Field],
    path: &str,
) -> Result<Map<String, Value>, SchemaError> {
    let mut out = Map::new();
    for Field(json, proto, kind) in fields {
        let here = if path.is_empty() {
            (*json).to_string()
        } else {
            format!("{path}.{json}")
        };
        let value = match (object.get(*json), object.get(*proto)) {
            (Some(_), Some(_)) if json != proto => {
                return Err(SchemaError {
                    path: here,
                    expected: "one spelling of the field, not both",
                });
            }
            (Some(v), _) | (None, Some(v)) => v,
            (None, None) => continue,
        };
        if let Some(v) = field(value, kind, &here)? {
            out.insert((*json).to_string(), v);
        }
    }
    Ok(out)
}

/// One field's value after the pass; `None` when protobuf leaves it out.
fn field(value: &Value, kind: &Kind, path: &str) -> Result<Option<Value>, SchemaError> {
    let refuse = |expected| SchemaError {
        path: path.to_string(),
        expected,
    };
    if value.is_null() {
        return Ok(None);
    }
    Ok(match kind {
        Kind::Str => {
            let s = value.as_str().ok_or_else(|| refuse("a string"))?;
            (!s.is_empty()).then(|| value.clone())
        }
        Kind::Bool => value
            .as_bool()
            .ok_or_else(|| refuse("a boolean"))?
            .then_some(Value::Bool(true)),
        Kind::Bytes => {
            let s = value.as_str().ok_or_else(|| refuse("base64"))?;
            let bytes = decode_any_base64(s).ok_or_else(|| refuse("base64"))?;
            let b64 = base64::engine::general_purpose::STANDARD;
            (!bytes.is_empty()).then(|| Value::String(b64.encode(bytes)))
        }
        Kind::StrMap => {
            let map = value
                .as_object()
                .ok_or_else(|| refuse("an object of strings"))?;
            if map.values().any(|v| !v.is_string()) {
                return Err(refuse("an object of strings"));
            }
            (!map.is_empty()).then(|| value.clone())
        }
        Kind::Struct => Some(
            value
                .as_object()
                .map(|_| value.clone())
                .ok_or_else(|| refuse("an object"))?,
        ),
        Kind::Timestamp => {
            let s = value
                .as_str()
                .ok_or_else(|| refuse("an RFC 3339 timestamp"))?;
            Some(Value::String(
                timestamp(s).ok_or_else(|| refuse("an RFC 3339 timestamp"))?,
            ))
        }
        Kind::Message(fields) => {
            let object = value.as_object().ok_or_else(|| refuse("an object"))?;
            Some(Value::Object(normalize(object, fields, path)?))
        }
        Kind::List(fields) => {
            let items = value.as_array().ok_or_else(|| refuse("an array"))?;
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let here = format!("{path}[{i}]");
                let object = item.as_object().ok_or_else(|| SchemaError {
                    path: here.clone(),
                    expected: "an object",
                })?;
                out.push(Value::Object(normalize(object, fields, &here)?));
            }
            (!out.is_empty()).then_some(Value::Array(out))
        }
    })
}

/// Base64 as protojson reads `bytes`: standard or URL-safe alphabet, padded or not.
fn decode_any_base64(s: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|e| e.decode(s).ok())
}

/// An RFC 3339 timestamp as protojson writes it: UTC, `Z`, and 0, 3, 6 or 9 fractional
/// digits; `None` when it is not one (or, with an offset, not between 1970 and 9999).
fn timestamp(s: &str) -> Option<String> {
    let t = Rfc3339::parse(s)?;
    let (year, month, day, hour, minute, second) = utc(t.date, t.time, t.offset_minutes)?;
    let fraction = match t.nanos {
        0 => String::new(),
        n if n % 1_000_000 == 0 => format!(".{:03}", n / 1_000_000),
        n if n % 1_000 == 0 => format!(".{:06}", n / 1_000),
        n => format!(".{n:09}"),
    };
    Some(format!(
        "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}{fraction}Z"
    ))
}

/// An RFC 3339 date and time, read strictly (`T`, `Z` or `±hh:mm`, at most 9 fractional
/// digits, a day that exists).
pub(super) struct Rfc3339 {
    /// Year, month, day.
    pub(super) date: (u32, u32, u32),
    /// Hour, minute, second.
    pub(super) time: (u32, u32, u32),
    /// Nanoseconds.
    pub(super) nanos: u32,
    /// The offset from UTC.
    pub(super) offset_minutes: i64,
}

impl Rfc3339 {
    /// `s` read, or `None`.
    pub(super) fn parse(s: &str) -> Option<Rfc3339> {
        let b = s.as_bytes();
        let num = |from: usize, len: usize| -> Option<u32> {
            let part = s.get(from..from + len)?;
            part.bytes()
                .all(|c| c.is_ascii_digit())
                .then(|| part.parse().ok())?
        };
        let shape = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
        if b.len() < 20 || shape.iter().any(|(i, c)| b[*i] != *c) {
            return None;
        }
        let date = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
        let time = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
        let mut rest = &s[19..];
        let mut nanos = 0u32;
        if let Some(frac) = rest.strip_prefix('.') {
            let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 || digits > 9 {
                return None;
            }
            nanos = frac[..digits].parse::<u32>().ok()? * 10u32.pow(9 - digits as u32);
            rest = &frac[digits..];
        }
        let offset_minutes: i64 = match rest {
            "Z" => 0,
            _ => {
                let sign = match rest.as_bytes().first()? {
                    b'+' => 1,
                    b'-' => -1,
                    _ => return None,
                };
                if rest.len() != 6 || rest.as_bytes()[3] != b':' {
                    return None;
                }
                let at = s.len() - 6;
                let (h, m) = (num(at + 1, 2)?, num(at + 4, 2)?);
                if h > 23 || m > 59 {
                    return None;
                }
                sign * i64::from(h * 60 + m)
            }
        };
        let (year, month, day) = date;
        let valid = (1..=12).contains(&month)
            && day >= 1
            && day <= days_in(year, month)
            && time.0 < 24
            && time.1 < 60
            && time.2 < 60;
        valid.then_some(Rfc3339 {
            date,
            time,
            nanos,
            offset_minutes,
        })
    }
}

/// The UTC date and time of a local one `offset_minutes` ahead of UTC.
fn utc(
    (year, month, day): (u32, u32, u32),
    (hour, minute, second): (u32, u32, u32),
    offset_minutes: i64,
) -> Option<(u32, u32, u32, u32, u32, u32)> {
    use x509_cert::der::DateTime;
    if !(1..=9999).contains(&year) {
        return None;
    }
    if offset_minutes == 0 {
        return Some((year, month, day, hour, minute, second));
    }
    let narrow = |v: u32| u8::try_from(v).ok();
    let local = DateTime::new(
        u16::try_from(year).ok()?,
        narrow(month)?,
        narrow(day)?,
        narrow(hour)?,
        narrow(minute)?,
        narrow(second)?,
    )
    .ok()?;
    let secs = i64::try_from(local.unix_duration().as_secs()).ok()? - offset_minutes * 60;
    let t = DateTime::from_unix_duration(std::time::Duration::from_secs(u64::try_from(secs).ok()?))
        .ok()?;
    Some((
        u32::from(t.year()),
        u32::from(t.month()),
        u32::from(t.day()),
        u32::from(t.hour()),
        u32::from(t.minutes()),
        u32::from(t.seconds()),
    ))
}

fn days_in(year: u32, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_as_protojson_writes_them() {
        for (given, written) in [
            ("2024-01-02T03:04:05Z", Some("2024-01-02T03:04:05Z")),
            ("2024-01-02T03:04:05.000Z", Some("2024-01-02T03:04:05Z")),
            ("2024-01-02T03:04:05.1Z", Some("2024-01-02T03:04:05.100Z")),
            (
                "2024-01-02T03:04:05.1234Z",
                Some("2024-01-02T03:04:05.123400Z"),
            ),
            (
                "2024-01-02T03:04:05.123456789Z",
                Some("2024-01-02T03:04:05.123456789Z"),
            ),
            ("2024-01-02T01:04:05+02:30", Some("2024-01-01T22:34:05Z")),
            ("2024-12-31T23:00:00-01:00", Some("2025-01-01T00:00:00Z")),
            ("2024-02-30T00:00:00Z", None),
            ("2024-01-02 03:04:05Z", None),
            ("2024-01-02T03:04:05", None),
            ("2024-01-02T03:04:05.Z", None),
        ] {
            assert_eq!(timestamp(given).as_deref(), written, "{given}");
        }
    }

    #[test]
    fn the_schema_keeps_its_fields_only() {
        let given: Value = serde_json::json!({
            "build_definition": {"buildType": "", "externalParameters": {}, "x": 1,
                "resolvedDependencies": [{"uri": "git+x", "digest": {}, "content": "aGk"}]},
            "runDetails": {"builder": {}, "metadata": {"started_on": "2024-01-02T03:04:05.5+00:00"}},
            "unknown": true
        });
        let out = normalize(given.as_object().unwrap(), SLSA_V1, "").unwrap();
        assert_eq!(
            Value::Object(out),
            serde_json::json!({
                "buildDefinition": {"externalParameters": {},
                    "resolvedDependencies": [{"uri": "git+x", "content": "aGk="}]},
                "runDetails": {"builder": {}, "metadata": {"startedOn": "2024-01-02T03:04:05.500Z"}}
            })
        );
        let bad = serde_json::json!({"metadata": {"completeness": {"parameters": "yes"}}});
        let e = normalize(bad.as_object().unwrap(), SLSA_V02, "").unwrap_err();
        assert_eq!(
            (e.path.as_str(), e.expected),
            ("metadata.completeness.parameters", "a boolean")
        );
    }
}
