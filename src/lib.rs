//! ocigate: a signing and verification gate for OCI artifacts, cosign-compatible.
//!
//! The pipeline runs in one direction (see DESIGN.md): [`reference`] → [`policy`] rule →
//! [`registry`] digest → [`discover`] signatures → [`verify`] evidence → [`policy`] verdict,
//! orchestrated by [`gate`]; [`cli`] only translates.
#![forbid(unsafe_code)]

pub mod bundle;
pub mod cli;
pub mod discover;
pub mod gate;
pub mod payload;
pub mod policy;
pub mod reference;
pub mod registry;
pub mod sign;
pub mod trust;
pub mod verify;

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
