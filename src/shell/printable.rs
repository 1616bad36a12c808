//! Client-supplied text in our logs, escaped: a `vendor` or `user_identity` comes from the
//! network, and written raw a newline in it forges a log line and terminal escape sequences
//! reach the operator's terminal. [`Printable`] shows such text with every control character
//! (and backslash) escaped as Rust's `escape_debug` does, and at most [`MAX_SHOWN`] characters.

use std::fmt;

/// Characters of a client string shown in a log line; the rest is elided.
pub const MAX_SHOWN: usize = 128;

/// `text`, escaped for a log line.
#[derive(Clone, Copy)]
pub struct Printable<'a>(pub &'a str);

impl fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut chars = self.0.chars();
        for c in chars.by_ref().take(MAX_SHOWN) {
            if c.is_control() || c == '\\' || c == '\u{7f}' || is_bidi_control(c) {
                write!(f, "{}", c.escape_default())?;
            } else {
                f.write_fmt(format_args!("{c}"))?;
            }
        }
        if chars.next().is_some() {
            f.write_str("…")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// Unicode controls that reorder how a line displays (a "Trojan Source" line).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}')
}

#[cfg(test)]
mod tests {
    use super::Printable;

    #[test]
    fn newlines_escapes_and_backslashes_are_escaped() {
        let forged = "miner\n2026-12-04T00:00:00Z  INFO block accepted\x1b[2J\\x\u{202e}";
        let shown = Printable(forged).to_string();
        assert!(!shown.contains('\n') && !shown.contains('\x1b') && !shown.contains('\u{202e}'));
        assert_eq!(
            shown,
            "miner\\n2026-12-04T00:00:00Z  INFO block accepted\\u{1b}[2J\\\\x\\u{202e}"
        );
        assert_eq!(Printable("worker.1").to_string(), "worker.1");
    }

    #[test]
    fn long_text_is_cut() {
        let long = "a".repeat(1000);
        let shown = Printable(&long).to_string();
        assert_eq!(shown.chars().count(), super::MAX_SHOWN + 1);
    }
}
