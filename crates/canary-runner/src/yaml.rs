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

/// A located error at a byte span of `text`.
fn at_span(file: &str, text: &str, at: (usize, usize), message: String, help: impl Into<String>) -> SourceError {
    SourceError {
        message,
        src: NamedSource::new(file, text.to_string()),
        span: at.into(),
        label: "here".into(),
        help: Some(help.into()),
        related: None,
        related_label: String::new(),
    }
}

/// [`located`] at a top-level key's value (`key: value` at the start of a line), for checks
/// made after parsing on fields that carry no location; the file's start when the key is absent.
pub fn located_key(file: &str, text: &str, key: &str, message: String, help: impl Into<String>) -> SourceError {
    let prefix = format!("{key}:");
    let mut offset = 0;
    let mut at = (0, 0);
    for line in text.split_inclusive('\n') {
        if let Some(rest) = line.strip_prefix(&prefix) {
            let value = rest.trim_end_matches(['\r', '\n']);
            let lead = value.len() - value.trim_start().len();
            let start = offset + prefix.len() + lead;
            at = (start, value.trim().len().max(1));
            break;
        }
        offset += line.len();
    }
    at_span(file, text, at, message, help)
}

/// [`located_key`] for a dotted path of block-mapping keys (`upstream.providers.codex.sources`):
/// each key is looked for below the previous one, indented deeper; the deepest key found is
/// where the error points.
pub fn located_path(file: &str, text: &str, path: &str, message: String, help: impl Into<String>) -> SourceError {
    let mut offset = 0;
    let mut at = (0usize, 0usize);
    let mut keys = path.split('.').peekable();
    let mut min_indent = 0usize;
    let mut first = true;
    for line in text.split_inclusive('\n') {
        let Some(key) = keys.peek() else { break };
        let body = line.trim_start_matches(' ');
        let indent = line.len() - body.len();
        if (first && indent == 0 || !first && indent >= min_indent) && body.starts_with(&format!("{key}:")) {
            let value = body[key.len() + 1..].trim_end_matches(['\r', '\n']);
            let lead = value.len() - value.trim_start().len();
            let start = offset + indent + key.len() + 1 + lead;
            at = if value.trim().is_empty() {
                (offset + indent, key.len())
            } else {
                (start, value.trim().len())
            };
            keys.next();
            min_indent = indent + 1;
            first = false;
        } else if !first && !body.trim().is_empty() && !body.starts_with('#') && indent < min_indent {
            // Left the block of the last key found.
            break;
        }
        offset += line.len();
    }
    at_span(file, text, at, message, help)
}

/// A deserialization error of `file` (a `what`, e.g. "suite") as a located diagnostic.
/// Reads `text` (the file `file`) as a `T`; a mistake becomes a located error that names what
/// the file is and which keys it takes (`fields_help`).
pub fn parse<T: serde::de::DeserializeOwned>(
    file: &str,
    text: &str,
    what: &str,
    fields_help: &str,
) -> Result<T, crate::error::LabError> {
    serde_saphyr::from_str(text).map_err(|e| parse_error(file, text, what, &e, fields_help).into())
}

pub fn parse_error(file: &str, text: &str, what: &str, e: &serde_saphyr::Error, fields_help: &str) -> SourceError {
    let plain = e.without_snippet().to_string();
    // The parser appends " at line L, column C"; the diagnostic shows the place itself.
    let raw = plain.rfind(" at line ").map_or(plain.as_str(), |i| &plain[..i]);
    let message = match raw {
        "expected sequence start" => "expected a list (`[a, b]` or one `- item` per line)".to_string(),
        "expected mapping start" | "expected struct mapping start" => {
            "expected a mapping (`key: value` lines)".to_string()
        }
        other if other.starts_with("duplicate mapping key: ") => {
            let key = other["duplicate mapping key: ".len()..]
                .split(", set ")
                .next()
                .unwrap_or("");
            format!("duplicate key `{}`", crate::text::clean(key))
        }
        other if other.starts_with("budget breached") || other.starts_with("recursion limit exceeded") => {
            // The parser's resource budget: say what it means, not how it is spelled inside.
            let what = if other.contains("Depth") || other.starts_with("recursion") {
                "nested more deeply"
            } else if other.contains("Alias") || other.contains("Anchor") {
                "expands more aliases"
            } else {
                "holds more YAML nodes"
            };
            format!("the file {what} than the lab reads in one file")
        }
        other => other.to_string(),
    };
    let help = if message.starts_with("duplicate key") {
        Some("each key may appear once in a mapping: remove or merge the second".to_string())
    } else if message.starts_with("the file ") && message.ends_with("in one file") {
        Some("split it into smaller files; YAML aliases that expand into huge documents are refused".to_string())
    } else if message.starts_with("unknown field") {
        Some(format!("remove the key or fix its spelling; {fields_help}"))
    } else if message.starts_with("missing field") {
        Some(format!("add the field; {fields_help}"))
    } else if message.starts_with("expected") || message.starts_with("invalid type") {
        Some(format!("give the value the type the field takes; {fields_help}"))
    } else {
        Some(format!(
            "check the YAML here (indentation, quoting, brackets, duplicate keys); {fields_help}"
        ))
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

/// A boolean written as one: `true` or `false`, never `"yes"`, `1` or `on`. For flags whose
/// misreading changes what is allowed (`require_signed`), a near miss is an error.
pub fn strict_bool<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    struct V;
    impl serde::de::Visitor<'_> for V {
        type Value = bool;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("true or false (unquoted)")
        }
        fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<bool, E> {
            Ok(v)
        }
    }
    d.deserialize_any(V)
}

/// [`strict_bool`] for an optional key.
pub fn strict_opt_bool<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    strict_bool(d).map(Some)
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

    #[test]
    fn dotted_paths_point_at_the_deepest_key_present() {
        let text = "registry: x\nupstream:\n  providers:\n    codex:\n      sources: [ftp:x]\n    claude-code:\n      sources: []\npipeline:\n  jobs: 0\n";
        let at = |p: &str| located_path("c.yaml", text, p, "m".into(), "h").location();
        assert_eq!(at("upstream.providers.codex.sources"), "c.yaml:5:16");
        assert_eq!(at("upstream.providers.claude-code.sources"), "c.yaml:7:16");
        assert_eq!(at("upstream.providers.gemini"), "c.yaml:3:3");
        assert_eq!(at("pipeline.jobs"), "c.yaml:9:9");
    }
}
