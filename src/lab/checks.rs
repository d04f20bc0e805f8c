//! Expectation checks: pure functions from what a step produced to the list of unmet
//! expectations, each phrased as "expected … got …".

use crate::report::CheckFailure;
use crate::suite::{DiffExpect, FileExpect, TextExpect};

/// Longest excerpt of actual output quoted in a failure message.
const EXCERPT: usize = 240;

fn fail(check: impl Into<String>, expected: impl Into<String>, actual: impl Into<String>) -> CheckFailure {
    CheckFailure {
        check: check.into(),
        expected: expected.into(),
        actual: actual.into(),
    }
}

/// The end of `text` (where errors usually are), quoted on one line.
pub fn excerpt(text: &str) -> String {
    let trimmed = text.trim_end();
    if trimmed.is_empty() {
        return "empty output".into();
    }
    let chars: Vec<char> = trimmed.chars().collect();
    let start = chars.len().saturating_sub(EXCERPT);
    let body: String = chars[start..].iter().collect();
    format!("{}{:?}", if start > 0 { "…" } else { "" }, body)
}

pub fn exit_code(expected: Option<i64>, actual: Option<i64>) -> Option<CheckFailure> {
    let expected = expected?;
    match actual {
        Some(a) if a == expected => None,
        Some(a) => Some(fail("exit_code", expected.to_string(), a.to_string())),
        None => Some(fail("exit_code", expected.to_string(), "no exit code (killed)")),
    }
}

pub fn text(check: &str, e: &TextExpect, actual: &str) -> Vec<CheckFailure> {
    let mut out = Vec::new();
    for s in &e.contains {
        if !actual.contains(s.as_str()) {
            out.push(fail(format!("{check}.contains"), format!("{s:?}"), excerpt(actual)));
        }
    }
    for re in &e.matches {
        if !re.is_match(actual) {
            out.push(fail(
                format!("{check}.matches"),
                format!("a match for /{}/", re.as_str()),
                excerpt(actual),
            ));
        }
    }
    for s in &e.excludes {
        if let Some(pos) = actual.find(s.as_str()) {
            let line = actual[..pos].matches('\n').count() + 1;
            out.push(fail(
                format!("{check}.excludes"),
                format!("no {s:?}"),
                format!("{s:?} at line {line}"),
            ));
        }
    }
    out
}

/// `content` is `None` when the file does not exist.
pub fn file(e: &FileExpect, content: Option<&str>) -> Vec<CheckFailure> {
    let name = format!("files[{}]", e.path);
    match (e.exists, content) {
        (true, None) => vec![fail(format!("{name}.exists"), "the file to exist", "no such file")],
        (false, Some(_)) => vec![fail(format!("{name}.exists"), "no such file", "the file exists")],
        (false, None) => Vec::new(),
        (true, Some(text)) => self::text(&name, &e.text, text),
    }
}

pub fn unchanged(paths: &[String], changed: &[String]) -> Vec<CheckFailure> {
    paths
        .iter()
        .filter_map(|p| {
            let hits: Vec<&String> = changed
                .iter()
                .filter(|c| c.as_str() == p || c.starts_with(&format!("{}/", p.trim_end_matches('/'))) || p == ".")
                .collect();
            (!hits.is_empty()).then(|| {
                fail(
                    format!("unchanged[{p}]"),
                    "no changes",
                    format!(
                        "changed: {}",
                        hits.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                )
            })
        })
        .collect()
}

/// The repo's changes against its pinned content.
#[derive(Debug, Clone, Default)]
pub struct RepoDiff {
    pub files: Vec<String>,
    pub patch: String,
}

pub fn diff(e: &DiffExpect, d: &RepoDiff) -> Vec<CheckFailure> {
    let mut out = Vec::new();
    let touched = if d.files.is_empty() {
        "no files".to_string()
    } else {
        d.files.join(", ")
    };
    match e.empty {
        Some(true) if !d.files.is_empty() => {
            out.push(fail("diff.empty", "an empty diff", format!("changes in {touched}")))
        }
        Some(false) if d.files.is_empty() => out.push(fail("diff.empty", "a non-empty diff", "no changes")),
        _ => {}
    }
    for t in &e.touches {
        if !d.files.iter().any(|f| f == t) {
            out.push(fail(
                "diff.touches",
                format!("changes in {t}"),
                format!("changes in {touched}"),
            ));
        }
    }
    for s in &e.contains {
        if !d.patch.contains(s.as_str()) {
            out.push(fail(
                "diff.contains",
                format!("{s:?}"),
                if d.patch.is_empty() {
                    "an empty diff".into()
                } else {
                    excerpt(&d.patch)
                },
            ));
        }
    }
    for s in &e.excludes {
        if d.patch.contains(s.as_str()) {
            out.push(fail("diff.excludes", format!("no {s:?}"), format!("{s:?} in the diff")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex::Regex;

    #[test]
    fn text_failures_say_expected_and_actual() {
        let e = TextExpect {
            contains: vec!["ok".into()],
            matches: vec![Regex::new(r"^\d+ passed").unwrap()],
            excludes: vec!["FAIL".into()],
        };
        let f = text("stdout", &e, "1 failed\nFAIL here\n");
        assert_eq!(f.len(), 3);
        assert_eq!(
            f[0].to_string(),
            "stdout.contains: expected \"ok\", got \"1 failed\\nFAIL here\""
        );
        assert_eq!(f[2].actual, "\"FAIL\" at line 2");
        assert!(text("stdout", &e, "12 passed ok").is_empty());
    }

    #[test]
    fn exit_code_any_accepts_everything() {
        assert!(exit_code(None, Some(3)).is_none());
        assert_eq!(
            exit_code(Some(0), Some(1)).unwrap().to_string(),
            "exit_code: expected 0, got 1"
        );
        assert!(exit_code(Some(0), None).is_some());
    }

    #[test]
    fn unchanged_matches_directories_and_files() {
        let changed = vec!["src/a.js".to_string(), "README.md".to_string()];
        assert_eq!(unchanged(&["src".into()], &changed).len(), 1);
        assert_eq!(unchanged(&["tests".into(), "src/b.js".into()], &changed).len(), 0);
        assert_eq!(unchanged(&["README.md".into()], &changed).len(), 1);
    }

    #[test]
    fn diff_touches_and_contains() {
        let d = RepoDiff {
            files: vec!["a.txt".into()],
            patch: "+hello\n".into(),
        };
        let e = DiffExpect {
            empty: Some(false),
            touches: vec!["a.txt".into(), "b.txt".into()],
            contains: vec!["+hello".into()],
            excludes: vec!["+bye".into()],
        };
        let f = diff(&e, &d);
        assert_eq!(f.len(), 1);
        assert_eq!(
            f[0].to_string(),
            "diff.touches: expected changes in b.txt, got changes in a.txt"
        );
    }
}
