//! The bounds on an expression's text checked before cel-core's recursive parser and checker see
//! it: length, bracket nesting, operator count (each deepens the parser's or evaluator's stack).

use super::{CompileError, CompileErrorKind};

/// Longest expression accepted, in bytes.
pub const MAX_EXPRESSION_BYTES: usize = 16 << 10;

/// Deepest nesting of `(`, `[` and `{` accepted. cel-core's parser recurses through every
/// precedence level per bracket: on a 2 MiB thread stack an unoptimised build overflows near 90
/// levels, an optimised one above 400.
pub const MAX_NESTING: usize = 24;

/// Most operators (unary, binary, ternary, `.` selection) accepted. Chains of them nest the AST
/// (the checker and evaluator recurse on it): with [`MAX_NESTING`] brackets on top, 550 still fit
/// an unoptimised build's 2 MiB stack.
pub const MAX_OPERATORS: usize = 256;

/// Refuse an expression over the bounds, at the position where it crosses one.
pub(super) fn check(expression: &str) -> Result<(), CompileError> {
    if expression.len() > MAX_EXPRESSION_BYTES {
        return Err(CompileError::at(
            expression,
            0,
            CompileErrorKind::TooLong {
                len: expression.len(),
                limit: MAX_EXPRESSION_BYTES,
            },
        ));
    }
    let bytes = expression.as_bytes();
    let (mut depth, mut operators, mut i) = (0usize, 0usize, 0usize);
    while i < bytes.len() {
        let b = bytes[i];
        let next = bytes.get(i + 1).copied();
        match b {
            b'"' | b'\'' => {
                i = skip_string(bytes, i);
                continue;
            }
            b'/' if next == Some(b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'(' | b'[' | b'{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    let kind = CompileErrorKind::TooDeep { limit: MAX_NESTING };
                    return Err(CompileError::at(expression, i, kind));
                }
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            b'!' | b'-' | b'+' | b'*' | b'/' | b'%' | b'<' | b'>' | b'?' | b'.' | b'=' | b'&'
            | b'|' => {
                // A two-character operator counts once.
                if matches!(
                    (b, next),
                    (b'&', Some(b'&')) | (b'|', Some(b'|')) | (_, Some(b'='))
                ) && b != b'.'
                {
                    i += 1;
                }
                operators += 1;
            }
            b'i' if next == Some(b'n') && is_word(bytes, i, 2) => operators += 1,
            _ => {}
        }
        if operators > MAX_OPERATORS {
            let kind = CompileErrorKind::TooManyOperators {
                limit: MAX_OPERATORS,
            };
            return Err(CompileError::at(expression, i, kind));
        }
        i += 1;
    }
    Ok(())
}

/// Whether the `len` bytes at `i` are a word of their own (the `in` operator).
fn is_word(bytes: &[u8], i: usize, len: usize) -> bool {
    let ident = |b: &u8| b.is_ascii_alphanumeric() || *b == b'_';
    let before = i.checked_sub(1).and_then(|j| bytes.get(j));
    !before.is_some_and(ident) && !bytes.get(i + len).is_some_and(ident)
}

/// The offset after the string literal whose opening quote is at `start` (single, double or
/// triple quoted; in all but raw strings a backslash escapes the next byte).
fn skip_string(bytes: &[u8], start: usize) -> usize {
    let quote = bytes[start];
    let raw = is_raw(bytes, start);
    let triple = bytes.get(start + 1) == Some(&quote) && bytes.get(start + 2) == Some(&quote);
    let mut i = start + if triple { 3 } else { 1 };
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'\\' && !raw {
            i += 2;
            continue;
        }
        if b == quote {
            if !triple {
                return i + 1;
            }
            if bytes.get(i + 1) == Some(&quote) && bytes.get(i + 2) == Some(&quote) {
                return i + 3;
            }
        }
        if b == b'\n' && !triple {
            return i + 1;
        }
        i += 1;
    }
    i
}

/// Whether the quote at `quote` opens a raw string: its prefix (the identifier characters just
/// before it) is `r` or `br` in any case and order.
fn is_raw(bytes: &[u8], quote: usize) -> bool {
    let mut start = quote;
    while start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_') {
        start -= 1;
    }
    let prefix = bytes[start..quote].to_ascii_lowercase();
    matches!(prefix.as_slice(), b"r" | b"br" | b"rb")
}

/// 1-based line and column (in characters) of byte offset `at` in `text`.
pub(super) fn line_column(text: &str, at: usize) -> (usize, usize) {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |p| p + 1);
    (line, before[line_start..].chars().count() + 1)
}
