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
    fn an_error_event_reads_as_its_kind_and_message_without_escaped_json() {
        let e = serde_json::json!({"type": "ERROR", "ts": "t", "kind": "unknown_event",
            "message": "codex-exec-json: event type is not one this adapter knows: {\"type\":\"turn.done\"}"});
        let d = session::describe(&e);
        assert_eq!(
            d,
            "ERROR unknown_event: codex-exec-json: event type is not one this adapter knows: {\"type\":\"turn.done\"}"
        );
        assert!(!d.contains("\\\""), "no escaped quotes: {d}");
        let other = session::describe(&serde_json::json!({"type": "PR_OPENED", "url": "u", "ts": "t"}));
        assert_eq!(other, "PR_OPENED {\"url\":\"u\"}");
    }

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

/// Checks on a session step: its Runner Contract events (the runner's stdout) and usage
/// reconciled against the model stub's own log. `started` is when the step began.
pub mod session {
    use super::{CheckFailure, excerpt, fail};
    use crate::suite::EventsExpect;
    use serde_json::Value;

    pub fn events(stdout: &[u8]) -> (Vec<Value>, Vec<CheckFailure>) {
        let mut events = Vec::new();
        let mut failures = Vec::new();
        for line in String::from_utf8_lossy(stdout).lines().filter(|l| !l.trim().is_empty()) {
            match serde_json::from_str::<Value>(line) {
                Ok(v) if v["type"].is_string() => events.push(v),
                _ => failures.push(fail("events", "one Runner Contract event per line", excerpt(line))),
            }
        }
        (events, failures)
    }

    /// One event as a person reads it: `ERROR changed_event: codex-exec-json: …` rather than
    /// its JSON with every quote escaped.
    pub fn describe(event: &Value) -> String {
        let ty = event["type"].as_str().unwrap_or("event");
        let text = match (event["kind"].as_str(), event["message"].as_str()) {
            (Some(kind), Some(message)) => format!("{ty} {kind}: {message}"),
            _ => {
                let mut rest = event.clone();
                if let Some(o) = rest.as_object_mut() {
                    o.remove("type");
                    o.remove("ts");
                }
                format!("{ty} {rest}")
            }
        };
        let text = crate::text::clean(&text).to_string();
        if text.chars().count() > 300 {
            format!("{}…", text.chars().take(300).collect::<String>())
        } else {
            text
        }
    }

    fn types(events: &[Value]) -> String {
        let t: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
        if t.is_empty() { "no events".into() } else { t.join(", ") }
    }

    /// `TYPE` or `TYPE:kind`. A bare `ERROR` leaves out warnings (kind `cli_warning`): a CLI
    /// that reports something and carries on has not failed; `ERROR:cli_warning` names them.
    pub fn matches(event: &Value, spec: &str) -> bool {
        let (ty, kind) = match spec.split_once(':') {
            Some((t, k)) => (t, Some(k)),
            None => (spec, None),
        };
        if event["type"] != ty {
            return false;
        }
        match kind {
            Some(k) => event["kind"] == k,
            None => !(ty == "ERROR" && event["kind"] == "cli_warning"),
        }
    }

    fn first(events: &[Value], ty: &str) -> Option<usize> {
        events.iter().position(|e| matches(e, ty))
    }

    pub fn expect(e: &EventsExpect, events: &[Value], started: jiff::Timestamp) -> Vec<CheckFailure> {
        let mut out = Vec::new();
        for ty in &e.present {
            if first(events, ty).is_none() {
                out.push(fail("events.present", format!("a {ty} event"), types(events)));
            }
        }
        for ty in &e.absent {
            if let Some(i) = first(events, ty) {
                out.push(fail("events.absent", format!("no {ty} event"), describe(&events[i])));
            }
        }
        for (ty, n) in &e.count {
            let got = events.iter().filter(|x| matches(x, ty)).count() as u64;
            if got != *n {
                out.push(fail(format!("events.count.{ty}"), n.to_string(), got.to_string()));
            }
        }
        let positions: Vec<Option<usize>> = e.order.iter().map(|ty| first(events, ty)).collect();
        if positions.iter().any(Option::is_none) || positions.windows(2).any(|w| w[0] >= w[1]) {
            out.push(fail("events.order", e.order.join(" < "), types(events)));
        }
        for (ty, limit) in &e.within {
            match first(events, ty)
                .and_then(|i| events[i]["ts"].as_str())
                .and_then(|ts| ts.parse::<jiff::Timestamp>().ok())
            {
                Some(at) => {
                    let took = at.duration_since(started);
                    if took.as_secs_f64() > limit.as_secs_f64() {
                        out.push(fail(
                            format!("events.within.{ty}"),
                            format!("within {}", humantime::format_duration(*limit)),
                            format!("after {:.1}s", took.as_secs_f64()),
                        ));
                    }
                }
                None => out.push(fail(
                    format!("events.within.{ty}"),
                    format!("a {ty} event with a timestamp"),
                    types(events),
                )),
            }
        }
        out
    }

    /// USAGE_TICK deltas must sum to what the stub reported for the turns it played, with `seq`
    /// strictly increasing.
    pub fn usage(events: &[Value], stub_log: &[Value]) -> Vec<CheckFailure> {
        let ticks: Vec<&Value> = events.iter().filter(|e| e["type"] == "USAGE_TICK").collect();
        if ticks.is_empty() {
            return vec![fail("usage", "USAGE_TICK events", types(events))];
        }
        let mut out = Vec::new();
        let seqs: Vec<u64> = ticks.iter().map(|t| t["seq"].as_u64().unwrap_or(0)).collect();
        if seqs.windows(2).any(|w| w[0] >= w[1]) {
            out.push(fail("usage.seq", "strictly increasing", format!("{seqs:?}")));
        }
        let sum = |rows: &[&Value], k: &str| rows.iter().map(|r| r[k].as_u64().unwrap_or(0)).sum::<u64>();
        let played: Vec<&Value> = stub_log
            .iter()
            .filter(|e| e["usage"].is_object())
            .map(|e| &e["usage"])
            .collect();
        for k in ["input_tokens", "cached_input_tokens", "output_tokens"] {
            let (ticked, reported) = (sum(&ticks, k), sum(&played, k));
            if ticked != reported {
                out.push(fail(
                    format!("usage.{k}"),
                    format!("{reported} (the model stub's total over {} turns)", played.len()),
                    format!("{ticked} over {} ticks", ticks.len()),
                ));
            }
        }
        out
    }
}
