//! How values from a policy file appear in its error messages: cut to a readable length, with
//! control characters escaped. Must not decide what is an error.

/// How many characters of a value from the file an error message shows.
const SHOWN_CHARS: usize = 120;

/// At most `max` characters of `s`, with an ellipsis when some were cut.
pub(super) fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// A value from the file inside a message, unquoted (for `backticks`): see [`shown`].
pub(super) fn cut_escaped(s: &str) -> String {
    render(s, false)
}

/// A value from the file inside a message, quoted: control characters and bidirectional
/// overrides escaped, cut to [`SHOWN_CHARS`] characters as shown (the ellipsis and the full
/// length follow the closing quote).
pub(super) fn shown(s: &str) -> String {
    render(s, true)
}

fn render(s: &str, quoted: bool) -> String {
    let mut out = String::new();
    let mut width = 0;
    for c in s.chars() {
        let piece = if quoted {
            crate::escape_text(&c.escape_debug().to_string())
        } else {
            crate::escape_text(c.encode_utf8(&mut [0; 4]))
        };
        let w = piece.chars().count();
        if width + w > SHOWN_CHARS {
            let total = s.chars().count();
            return if quoted {
                format!("\"{out}\"… ({total} characters)")
            } else {
                format!("{out}… ({total} characters)")
            };
        }
        width += w;
        out.push_str(&piece);
    }
    if quoted { format!("\"{out}\"") } else { out }
}

/// Names from the file in a message: each shown, at most ten, then how many more.
pub(super) fn shown_names<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let names: Vec<&String> = names.collect();
    let mut out: Vec<String> = names.iter().take(10).map(|n| shown(n)).collect();
    if names.len() > 10 {
        out.push(format!("and {} more", names.len() - 10));
    }
    format!("[{}]", out.join(", "))
}
