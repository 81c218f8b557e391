//! ocigate: a signing and verification gate for OCI artifacts, cosign-compatible.
//!
//! The pipeline runs in one direction (see docs/architecture.md): [`reference`] → [`policy`] rule →
//! [`registry`] digest → [`discover`] signatures → [`verify`] evidence → [`policy`] verdict,
//! orchestrated by [`engine`]; [`extract`] turns Kubernetes objects and Kluctl files into
//! references; [`cli`] and [`webhook`] only translate.
#![forbid(unsafe_code)]

/// `eprintln!` that never panics: a message to standard error that cannot be written (stderr
/// closed, a full pipe) is dropped, as a log line would be, instead of aborting the command.
macro_rules! tell {
    ($($arg:tt)*) => {
        $crate::write_stderr(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `eprint!` that never panics (see `tell!`): the progress line's partial writes.
macro_rules! tell_part {
    ($($arg:tt)*) => {
        $crate::write_stderr(format_args!($($arg)*))
    };
}

pub(crate) mod audit;
pub mod bounded;
pub mod bundle;
pub mod candidate;
pub mod cli;
pub mod condition;
pub mod discover;
pub mod engine;
pub mod extract;
pub mod failure;
pub(crate) mod kube;
pub mod payload;
pub mod platform;
pub mod policy;
pub mod predicate;
pub mod reference;
pub mod registry;
pub mod sign;
mod sync;
pub mod trust;
pub mod verify;
pub mod webhook;

/// Write to standard error, ignoring failure (what `tell!` and `tell_part!` expand to).
pub(crate) fn write_stderr(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut err = std::io::stderr().lock();
    let _ = err.write_fmt(args).and_then(|()| err.flush());
}

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

/// Text a registry, a helper or a cluster controls, made safe for a terminal: control
/// characters (C0, DEL, C1: the escape sequences that clear a screen or fake a line) and
/// bidirectional overrides are written as `\u{…}` escapes; everything else is kept.
pub fn escape_text(s: &str) -> String {
    let unsafe_char =
        |c: char| c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    if !s.chars().any(unsafe_char) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if unsafe_char(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn escape_text_neutralises_terminal_controls_only() {
        assert_eq!(super::escape_text("plain ü/:@"), "plain ü/:@");
        assert_eq!(
            super::escape_text("a\x1b[2Jb\r\n\u{202e}c\u{9b}"),
            "a\\u{1b}[2Jb\\u{d}\\u{a}\\u{202e}c\\u{9b}"
        );
    }
}
