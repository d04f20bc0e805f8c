//! YAML parse errors as located diagnostics, shared by every file the lab reads (suites, repo
//! manifests, lab config) so they all point at the same kind of line:column with a snippet.

use crate::error::SourceError;
use miette::{NamedSource, SourceSpan};
use serde_saphyr::Location;

/// The byte span of `loc` in `text`. Parser errors carry only line and column (no byte
/// offset), so the offset is computed from those when missing.
pub fn span(text: &str, loc: &Location) -> SourceSpan {
    let len = loc.span().byte_len().unwrap_or(1).max(1) as usize;
    if let Some(offset) = loc.span().byte_offset() {
        return (offset as usize, len).into();
    }
    let (line, column) = (loc.line() as usize, loc.column() as usize);
    if line == 0 {
        return (0, 1).into();
    }
    let line_start: usize = text.split_inclusive('\n').take(line - 1).map(str::len).sum();
    let line_text = text[line_start.min(text.len())..].lines().next().unwrap_or("");
    let col_bytes: usize = line_text
        .chars()
        .take(column.saturating_sub(1))
        .map(char::len_utf8)
        .sum();
    ((line_start + col_bytes).min(text.len()), 1).into()
}

/// A problem at `loc` of `file` (whose text is `text`) as a located diagnostic: every file the
/// lab reads reports its own checks (beyond what the parser catches) through this one helper.
pub fn located(file: &str, text: &str, loc: &Location, message: String, help: impl Into<String>) -> SourceError {
    SourceError {
        message,
        src: NamedSource::new(file, text.to_string()),
        span: span(text, loc),
        label: "here".into(),
        help: Some(help.into()),
        related: None,
        related_label: String::new(),
    }
}

/// A deserialization error of `file` (a `what`, e.g. "suite") as a located diagnostic.
pub fn parse_error(file: &str, text: &str, what: &str, e: &serde_saphyr::Error, fields_help: &str) -> SourceError {
    let plain = e.without_snippet().to_string();
    // The parser appends " at line L, column C"; the diagnostic shows the place itself.
    let raw = plain.rfind(" at line ").map_or(plain.as_str(), |i| &plain[..i]);
    let message = match raw {
        "expected sequence start" => "expected a list (`[a, b]` or one `- item` per line)".to_string(),
        "expected mapping start" | "expected struct mapping start" => {
            "expected a mapping (`key: value` lines)".to_string()
        }
        other => other.to_string(),
    };
    let help = if message.starts_with("unknown field") {
        Some(format!("remove the key or fix its spelling; {fields_help}"))
    } else if message.starts_with("missing field") {
        Some(format!("add the field; {fields_help}"))
    } else {
        None
    };
    let loc = e.location().unwrap_or(Location::UNKNOWN);
    SourceError {
        message: format!("invalid {what}: {message}"),
        src: NamedSource::new(file, text.to_string()),
        span: span(text, &loc),
        label: "here".into(),
        help,
        related: None,
        related_label: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_without_byte_offsets_point_at_their_line() {
        let text = "name: x\nrepos: [js-ts\nsteps: [\n";
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct S {
            name: String,
        }
        let e = serde_saphyr::from_str::<S>(text).unwrap_err();
        let err = parse_error("s.yaml", text, "suite", &e, "");
        assert_eq!(err.location(), "s.yaml:3:6");
    }
}
