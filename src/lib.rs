//! ocigate: a signing and verification gate for OCI artifacts, cosign-compatible.
//!
//! The pipeline runs in one direction (see DESIGN.md): [`reference`] → [`policy`] rule →
//! [`registry`] digest → [`discover`] signatures → [`verify`] evidence → [`policy`] verdict,
//! orchestrated by [`engine`]; [`extract`] turns Kubernetes objects and Kluctl files into
//! references; [`cli`] and [`webhook`] only translate.
#![forbid(unsafe_code)]

pub mod bundle;
pub mod candidate;
pub mod cli;
pub mod discover;
pub mod engine;
pub mod extract;
pub mod failure;
pub mod payload;
pub mod policy;
pub mod reference;
pub mod registry;
pub mod sign;
pub mod trust;
pub mod verify;
pub mod webhook;

/// An error and all its causes, `outer: inner: innermost`, skipping a cause whose text the
/// outer message already contains. How the CLI prints errors and how reasons are written.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}

/// Base64 as producers write it: Go and Python wrap it at 64 or 76 columns, so whitespace is
/// dropped; it is never part of the value.
pub(crate) fn compact_base64(s: &str) -> String {
    s.chars().filter(|c| !c.is_ascii_whitespace()).collect()
}

/// Decode standard base64, ignoring line breaks and spaces (see [`compact_base64`]).
pub(crate) fn decode_base64(s: &str) -> Result<Vec<u8>, base64::DecodeError> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(compact_base64(s))
}
