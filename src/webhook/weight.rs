//! What a review body will cost once decoded, known before it is decoded.
//!
//! A body of 6 MiB can decode to far more than 6 MiB: each JSON value becomes a
//! `serde_json::Value` (32 bytes, a map's entry and its index more), and the object is held
//! twice while it is checked (kube's `DynamicObject` and the JSON the extraction reads). So the
//! body's values are counted by one pass over its bytes ([`crate::bounded::json_values`]); a body with more than
//! [`MAX_JSON_VALUES`] is refused, and the budget of in-flight reviews is charged
//! [`decoded_bytes`], not the body's length.

/// Most JSON values (array elements, object members) one AdmissionReview may hold. A Pod's
/// review holds a few hundred to a few thousand; a 40,000-container Pod, about 120,000.
pub(crate) const MAX_JSON_VALUES: usize = 100_000;

/// Bytes charged per JSON value: its `Value` twice, with map entries and strings' headers
/// (measured: a review of 40,000 containers, 120,000 values, held about 62 MB decoded).
const BYTES_PER_VALUE: usize = 512;

/// What a body of `len` bytes holding `values` JSON values is charged while its review is
/// decoded and checked.
pub(crate) fn decoded_bytes(len: usize, values: usize) -> usize {
    len.saturating_mul(2)
        .saturating_add(values.saturating_mul(BYTES_PER_VALUE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bounded::json_values;

    #[test]
    fn values_are_counted_outside_strings_only() {
        assert_eq!(json_values(b"1"), 1);
        assert_eq!(json_values(br#"{"a":1,"b":[1,2,3]}"#), 6);
        // Commas, brackets, braces and escaped quotes inside strings are text.
        assert_eq!(json_values(br#"{"a":"x,[{\",y"}"#), 2);
        let many = format!("[{}0]", "0,".repeat(200_000));
        assert_eq!(json_values(many.as_bytes()), 200_002);
        assert!(json_values(many.as_bytes()) > MAX_JSON_VALUES);
        assert_eq!(decoded_bytes(10, 2), 20 + 2 * BYTES_PER_VALUE);
        assert_eq!(decoded_bytes(usize::MAX, 1), usize::MAX);
    }
}
