//! Kubernetes object names, checked before any of them goes into an API path: a name that is
//! not one (`.`, `..`, `a/b`, an upper-case letter) is never asked for. The rules are
//! apimachinery's `IsDNS1123Label` (namespaces) and `IsDNS1123Subdomain` (names of Secrets,
//! ServiceAccounts and the Flux sources), which also exclude `.` and `..`, the names the API
//! server refuses as path segments.

/// The longest DNS-1123 label (a namespace name).
pub const MAX_LABEL: usize = 63;
/// The longest DNS-1123 subdomain (most object names).
pub const MAX_SUBDOMAIN: usize = 253;

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters: a namespace name.
pub fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && b.len() <= MAX_LABEL
        && b.first().is_some_and(alnum)
        && b.last().is_some_and(alnum)
        && b.iter().all(|c| alnum(c) || *c == b'-')
}

/// Labels joined by `.`, at most 253 characters: an object name (Secret, ServiceAccount,
/// HelmRepository, ...).
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= MAX_SUBDOMAIN && s.split('.').all(is_label_part)
}

/// A label within a subdomain (the 63-character bound applies to the whole name only, as in
/// apimachinery's subdomain regexp).
fn is_label_part(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    b.first().is_some_and(alnum)
        && b.last().is_some_and(alnum)
        && b.iter().all(|c| alnum(c) || *c == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_subdomains() {
        for ok in ["a", "flux-system", "a1", "0", &"a".repeat(63)] {
            assert!(is_dns1123_label(ok), "{ok}");
            assert!(is_dns1123_subdomain(ok), "{ok}");
        }
        for ok in ["ghcr-pull.1", "a.b.c", &format!("{}.b", "a".repeat(100))] {
            assert!(!is_dns1123_label(ok) || !ok.contains('.'), "{ok}");
            assert!(is_dns1123_subdomain(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a..b",
            ".a",
            "a.",
            "-a",
            "a-",
            "A",
            "a/b",
            "../x",
            "a_b",
            "a b",
            "a%2fb",
            "é",
            &"a".repeat(254),
        ] {
            assert!(!is_dns1123_subdomain(bad), "{bad:?}");
            assert!(!is_dns1123_label(bad), "{bad:?}");
        }
        assert!(!is_dns1123_label(&"a".repeat(64)));
        assert!(!is_dns1123_label("a.b"));
    }
}
