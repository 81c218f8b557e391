//! Bounds on what registries control before it is kept: a manifest's annotations, a signed
//! payload's fields, error text, tag names. What the engine remembers (the resolve cache, the
//! tag cache, the decision cache) holds strings cut to these bounds, marked as cut, so that an
//! artifact carrying a 4 MiB annotation costs its cache entry a few hundred bytes, not 4 MiB.

/// Most bytes kept of one registry-controlled string (an annotation, a signature's location,
/// identity or payload annotation).
pub const MAX_KEPT_STRING: usize = 512;

/// Most bytes kept of one reason of a decision.
pub const MAX_REASON_BYTES: usize = 1024;

/// Most reasons kept of one decision; the rest are counted in a last one.
pub const MAX_REASONS: usize = 64;

/// Most verified signatures a decision lists as evidence; the rest are counted in a reason.
pub const MAX_SIGNATURES: usize = 16;

/// Most annotations of one verified signature kept.
pub const MAX_SIGNATURE_ANNOTATIONS: usize = 32;

/// `s` cut to at most `max` bytes, on a character boundary, ending with a marker that says how
/// long it was (`…[4194304 bytes, cut]`); as it is when it fits.
pub fn cut(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= max {
        return std::borrow::Cow::Borrowed(s);
    }
    let marker = format!("…[{} bytes, cut]", s.len());
    let mut end = max.saturating_sub(marker.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = String::with_capacity(end + marker.len());
    out.push_str(&s[..end]);
    if out.len() + marker.len() <= max {
        out.push_str(&marker);
    }
    std::borrow::Cow::Owned(out)
}

/// [`cut`] in place.
pub fn cut_in_place(s: &mut String, max: usize) {
    if s.len() > max {
        *s = cut(s, max).into_owned();
    }
}

/// Reasons cut to [`MAX_REASON_BYTES`] each and [`MAX_REASONS`] in all.
pub fn bound_reasons(reasons: &mut Vec<String>) {
    if reasons.len() > MAX_REASONS {
        let more = reasons.len() - (MAX_REASONS - 1);
        reasons.truncate(MAX_REASONS - 1);
        reasons.push(format!("and {more} more reasons, not kept"));
    }
    for r in reasons.iter_mut() {
        cut_in_place(r, MAX_REASON_BYTES);
    }
}

/// The JSON values of `body` (array elements and object members, counted by the commas,
/// brackets and braces outside strings): one pass, no allocation, so that a document of many
/// small values (an AdmissionReview, a bundle) is refused before it is built into a tree many
/// times its size. Not a validation: what is not JSON is refused by the decoder after this.
pub(crate) fn json_values(body: &[u8]) -> usize {
    let (mut n, mut in_string, mut escaped) = (0usize, false, false);
    for &b in body {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else {
            match b {
                b'"' => in_string = true,
                b',' | b'[' | b'{' => n += 1,
                _ => {}
            }
        }
    }
    n + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_on_a_char_boundary_and_says_so() {
        assert_eq!(cut("short", 512), "short");
        let exact = "x".repeat(512);
        assert_eq!(cut(&exact, 512), exact);
        let long = "é".repeat(4 << 20);
        let c = cut(&long, 512);
        assert!(c.len() <= 512, "{}", c.len());
        assert!(c.ends_with(&format!("…[{} bytes, cut]", long.len())), "{c}");
        assert!(c.starts_with("éé"));
        // Every byte length lands on a boundary, for 1- to 4-byte characters.
        for ch in ["a", "é", "€", "𝄞"] {
            let s = ch.repeat(1000);
            for max in 0..600 {
                let c = cut(&s, max);
                assert!(c.len() <= max, "{ch} {max}");
            }
        }
    }

    #[test]
    fn reasons_are_bounded_in_number_and_size() {
        let mut reasons: Vec<String> = (0..100)
            .map(|i| format!("{i}{}", "r".repeat(5000)))
            .collect();
        bound_reasons(&mut reasons);
        assert_eq!(reasons.len(), MAX_REASONS);
        assert!(reasons.iter().all(|r| r.len() <= MAX_REASON_BYTES));
        assert_eq!(reasons[MAX_REASONS - 1], "and 37 more reasons, not kept");
        assert!(reasons[0].starts_with("0rrr"));
    }
}
