//! Text from outside the lab (runner ids, upstream metadata, file contents, user arguments) on
//! its way to a terminal or a log line: control characters are shown, never obeyed, so an
//! escape sequence in a heartbeat cannot clear or rewrite the operator's screen.

use std::borrow::Cow;

/// `s` with every control character (C0, DEL, C1) replaced by its `\u{..}` escape; unchanged
/// (borrowed) when there is none.
pub fn clean(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(
        s.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_unicode().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

/// [`clean`] for a block of text (command output, a diff): line breaks and tabs are kept,
/// every other control character is shown escaped.
pub fn clean_block(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\t')) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(
        s.split('\n')
            .map(|l| clean(l).replace("\\u{9}", "\t"))
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_are_shown_not_obeyed() {
        assert_eq!(clean("eu-1"), "eu-1");
        assert!(matches!(clean("eu-1"), Cow::Borrowed(_)));
        let hostile = "runner\u{1b}[2J\u{1b}[H\r\nfake line\u{9b}31m";
        let shown = clean(hostile);
        assert!(!shown.chars().any(char::is_control), "{shown}");
        assert_eq!(shown, "runner\\u{1b}[2J\\u{1b}[H\\u{d}\\u{a}fake line\\u{9b}31m");
        assert_eq!(clean("Grüße ✓"), "Grüße ✓");
        assert_eq!(clean_block("a\tb\nc\u{1b}[2J\r"), "a\tb\nc\\u{1b}[2J\\u{d}");
    }
}
