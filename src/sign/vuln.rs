//! cosign's `vuln` predicate as its Go struct (`attestation.CosignVulnPredicate`) leaves it:
//! decoded by `encoding/json`, encoded again; pure, no I/O.
//!
//! Every field of the struct is written, an absent one as its empty value (`""`, `null`, the
//! zero time `0001-01-01T00:00:00Z`); keys the struct does not have are dropped; a key matches
//! its field regardless of case, as Go matches it (when several spellings of one field are
//! given, Go keeps the last in the document, ocigate the exact spelling, else the first in
//! sorted order); times are written as Go writes them (RFC 3339, fraction without trailing
//! zeros, the offset kept, `Z` for UTC). A value of the wrong JSON type is refused, as Go's
//! decoder refuses it.

use serde_json::{Map, Value};

use super::slsa::{Rfc3339, SchemaError};

/// The type of a Go struct field.
enum GoKind {
    /// `string`: `null` leaves it empty.
    Str,
    /// `interface{}`: any JSON value.
    Any,
    /// `time.Time`.
    Time,
    /// A nested struct.
    Struct(&'static [(&'static str, GoKind)]),
}

/// `CosignVulnPredicate`, by JSON field name.
const VULN: &[(&str, GoKind)] = &[
    (
        "invocation",
        GoKind::Struct(&[
            ("parameters", GoKind::Any),
            ("uri", GoKind::Str),
            ("event_id", GoKind::Str),
            ("builder.id", GoKind::Str),
        ]),
    ),
    (
        "scanner",
        GoKind::Struct(&[
            ("uri", GoKind::Str),
            ("version", GoKind::Str),
            (
                "db",
                GoKind::Struct(&[("uri", GoKind::Str), ("version", GoKind::Str)]),
            ),
            ("result", GoKind::Any),
        ]),
    ),
    (
        "metadata",
        GoKind::Struct(&[
            ("scanStartedOn", GoKind::Time),
            ("scanFinishedOn", GoKind::Time),
        ]),
    ),
];

/// Go's zero `time.Time`, as it writes it.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// A `vuln` predicate as cosign writes it.
pub(super) fn vuln(object: &Map<String, Value>) -> Result<Map<String, Value>, SchemaError> {
    decode(object, VULN, "")
}

fn decode(
    object: &Map<String, Value>,
    fields: &[(&'static str, GoKind)],
    path: &str,
) -> Result<Map<String, Value>, SchemaError> {
    let mut out = Map::new();
    for (name, kind) in fields {
        let here = if path.is_empty() {
            (*name).to_string()
        } else {
            format!("{path}.{name}")
        };
        let found = object.get(*name).or_else(|| {
            let folded = name.to_lowercase();
            object
                .iter()
                .find(|(k, _)| k.to_lowercase() == folded)
                .map(|(_, v)| v)
        });
        let value = found.unwrap_or(&Value::Null);
        out.insert((*name).to_string(), field(value, kind, &here)?);
    }
    Ok(out)
}

fn field(value: &Value, kind: &GoKind, path: &str) -> Result<Value, SchemaError> {
    let refuse = |expected| SchemaError {
        path: path.to_string(),
        expected,
    };
    Ok(match (kind, value) {
        (GoKind::Any, v) => v.clone(),
        (GoKind::Str, Value::Null) => Value::String(String::new()),
        (GoKind::Str, Value::String(_)) => value.clone(),
        (GoKind::Str, _) => return Err(refuse("a string")),
        (GoKind::Time, Value::Null) => Value::String(ZERO_TIME.into()),
        (GoKind::Time, Value::String(s)) => {
            Value::String(go_time(s).ok_or_else(|| refuse("an RFC 3339 timestamp"))?)
        }
        (GoKind::Time, _) => return Err(refuse("an RFC 3339 timestamp")),
        (GoKind::Struct(fields), Value::Null) => Value::Object(decode(&Map::new(), fields, path)?),
        (GoKind::Struct(fields), Value::Object(o)) => Value::Object(decode(o, fields, path)?),
        (GoKind::Struct(_), _) => return Err(refuse("an object")),
    })
}

/// `s` as Go's `time.Time` writes it back (`RFC3339Nano`).
fn go_time(s: &str) -> Option<String> {
    let t = Rfc3339::parse(s)?;
    let ((y, mo, d), (h, mi, sec)) = (t.date, t.time);
    let mut fraction = if t.nanos == 0 {
        String::new()
    } else {
        format!(".{:09}", t.nanos)
    };
    while fraction.ends_with('0') {
        fraction.pop();
    }
    let zone = match t.offset_minutes {
        0 => "Z".to_string(),
        m => format!(
            "{}{:02}:{:02}",
            if m < 0 { '-' } else { '+' },
            m.abs() / 60,
            m.abs() % 60
        ),
    };
    Some(format!(
        "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{sec:02}{fraction}{zone}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_go_struct_shape() {
        let given = serde_json::json!({
            "Invocation": {"URI": "u", "parameters": {"a": 1}, "x": 1},
            "scanner": {"uri": "grype", "db": null, "result": {"critical": 0}},
            "metadata": {"scanStartedOn": "2024-01-02T03:04:05.120+00:00",
                         "scanFinishedOn": "2024-01-02T03:04:05-07:30"},
            "extra": true
        });
        let out = vuln(given.as_object().unwrap()).unwrap();
        assert_eq!(
            Value::Object(out),
            serde_json::json!({
                "invocation": {"parameters": {"a": 1}, "uri": "u", "event_id": "", "builder.id": ""},
                "scanner": {"uri": "grype", "version": "", "db": {"uri": "", "version": ""},
                            "result": {"critical": 0}},
                "metadata": {"scanStartedOn": "2024-01-02T03:04:05.12Z",
                             "scanFinishedOn": "2024-01-02T03:04:05-07:30"}
            })
        );
        let empty = vuln(&Map::new()).unwrap();
        assert_eq!(empty["metadata"]["scanStartedOn"], ZERO_TIME);
        let bad = serde_json::json!({"scanner": {"version": 3}});
        let e = vuln(bad.as_object().unwrap()).unwrap_err();
        assert_eq!(
            (e.path.as_str(), e.expected),
            ("scanner.version", "a string")
        );
    }
}
