//! HTML escaping for every `.html` template (`askama.toml` names this escaper).
//!
//! Most text in notes has nothing to escape. askama's escaper looks at one byte after another
//! (a tenth of the instructions of a note page went there); this one first checks the whole
//! string for the five special characters, 32 bytes at a time, and writes it unchanged
//! when none is there. Anything with a special character goes to askama's own escaper, so the
//! escaping rules are askama's.

use std::fmt::{self, Write};

use askama::filters::Escaper;

#[derive(Clone, Copy)]
pub struct Html;

impl Escaper for Html {
    fn write_escaped_str<W: Write>(&self, mut dest: W, string: &str) -> fmt::Result {
        if has_special(string.as_bytes()) {
            askama::filters::Html.write_escaped_str(dest, string)
        } else {
            dest.write_str(string)
        }
    }

    fn write_escaped_char<W: Write>(&self, dest: W, c: char) -> fmt::Result {
        askama::filters::Html.write_escaped_char(dest, c)
    }
}

/// Whether `bytes` holds any of `< > & " '`. Each 32-byte chunk is checked whole, without an
/// early exit, so the compiler checks it with vector instructions.
fn has_special(bytes: &[u8]) -> bool {
    let special =
        |b: u8| u8::from((b == b'<') | (b == b'>') | (b == b'&') | (b == b'"') | (b == b'\''));
    let mut chunks = bytes.chunks_exact(32);
    for chunk in &mut chunks {
        let mut seen = 0u8;
        for &b in chunk {
            seen |= special(b);
        }
        if seen != 0 {
            return true;
        }
    }
    chunks.remainder().iter().any(|&b| special(b) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escape(s: &str) -> String {
        let mut out = String::new();
        Html.write_escaped_str(&mut out, s)
            .expect("writing to a String");
        out
    }

    #[test]
    fn escapes_exactly_as_askama_does() {
        let long = "plain words ".repeat(10);
        for s in [
            String::new(),
            "plain".to_owned(),
            long.clone(),
            format!("{long}<script>alert('x') & \"y\"</script>"),
            format!("<{long}>"),
            // A special character in the tail after the last whole 32-byte chunk.
            format!("{}'", "a".repeat(33)),
            format!("{}&", "a".repeat(31)),
            "naïve café — 日本".to_owned(),
        ] {
            let mut theirs = String::new();
            askama::filters::Html
                .write_escaped_str(&mut theirs, &s)
                .expect("writing to a String");
            assert_eq!(escape(&s), theirs, "for {s:?}");
        }
        assert_eq!(escape("a<b"), "a&#60;b");
    }
}
