//! A deployed runner's heartbeat (Runner Contract `HEARTBEAT`), as `canary heartbeat` and
//! `canary serve` take it: untrusted JSON from the fleet, checked field by field before anything
//! is stored or printed.

use crate::error::{LabError, Result};
use crate::registry::Heartbeat;

/// The largest heartbeat body `canary serve` reads.
pub const MAX_BODY: usize = 64 * 1024;

/// The most components a heartbeat may report versions for, and capabilities it may list.
pub const MAX_COMPONENTS: usize = 32;
pub const MAX_CAPABILITIES: usize = 64;
/// The longest version or capability string.
pub const MAX_VALUE: usize = 128;

/// A value that prints as itself: 1 to [`MAX_VALUE`] characters, none of them control characters.
fn printable(s: &str) -> bool {
    !s.trim().is_empty() && s.chars().count() <= MAX_VALUE && !s.chars().any(char::is_control)
}

/// Reads and checks a heartbeat payload; `origin` (a file, `stdin`, `request body`) and the
/// field name are in every error.
pub fn parse(text: &str, origin: &str) -> Result<Heartbeat> {
    let bad = |why: String| {
        LabError::usage(
            format!("{}: invalid heartbeat: {why}", crate::text::clean(origin)),
            "see docs/runner-contract.md (HEARTBEAT): runner_id, versions {component: version}, capabilities, ts",
        )
    };
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| bad(format!("not JSON ({e})")))?;
    if !v.is_object() {
        return Err(bad("the payload must be a JSON object".into()));
    }
    if v.get("type").is_some_and(|t| t != "HEARTBEAT") {
        return Err(bad(format!(
            "type is {}, not HEARTBEAT",
            crate::text::clean(&v["type"].to_string())
        )));
    }
    let runner_id = v["runner_id"]
        .as_str()
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| bad("`runner_id` is missing or empty".into()))?;
    if !printable(runner_id) {
        return Err(bad(format!(
            "`runner_id` `{}` must be at most {MAX_VALUE} characters without control characters",
            crate::text::clean(&runner_id.chars().take(MAX_VALUE).collect::<String>())
        )));
    }
    let vs = versions(&v["versions"], &bad)?;
    let capabilities = capabilities(&v["capabilities"], &bad)?;
    let sent_at = match v.get("ts").or(v.get("sent_at")) {
        None => crate::registry::now(),
        Some(t) => {
            let t = t
                .as_str()
                .ok_or_else(|| bad("`ts` must be an RFC 3339 time string".into()))?;
            let t = t
                .parse::<jiff::Timestamp>()
                .map_err(|e| bad(format!("`ts` is not an RFC 3339 time ({e})")))?;
            t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
        }
    };
    // Optional names are names or absent: a number, an object or an escape sequence is an
    // error, never silently dropped or stored.
    let optional = |key: &str| -> Result<Option<String>> {
        match v.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => match crate::gate::ops::check_name(key, s) {
                Ok(()) => Ok(Some(s.clone())),
                Err(_) => Err(bad(format!(
                    "`{key}` `{}` is not a name (letters, digits, `.`, `_`, `-`)",
                    crate::text::clean(s)
                ))),
            },
            Some(_) => Err(bad(format!("`{key}` must be a name string when present"))),
        }
    };
    Ok(Heartbeat {
        runner_id: runner_id.into(),
        org: optional("org")?,
        // `optional` checked it is a name, which is what a channel is.
        channel: optional("channel")?.map(|c| c.parse()).transpose().map_err(bad)?,
        versions: vs,
        capabilities,
        sent_at,
        received_at: String::new(),
    })
}

/// `versions`: 1 to [`MAX_COMPONENTS`] components, each a name with a printable version.
fn versions(
    v: &serde_json::Value,
    bad: &dyn Fn(String) -> LabError,
) -> Result<std::collections::BTreeMap<String, String>> {
    let versions = v
        .as_object()
        .filter(|m| !m.is_empty())
        .ok_or_else(|| bad("`versions` must be a non-empty object".into()))?;
    if versions.len() > MAX_COMPONENTS {
        return Err(bad(format!(
            "`versions` lists {} components, more than {MAX_COMPONENTS}",
            versions.len()
        )));
    }
    let mut vs = std::collections::BTreeMap::new();
    for (k, val) in versions {
        crate::gate::ops::check_name("component", k).map_err(|_| {
            bad(format!(
                "component name `{}` in `versions` is not a name (letters, digits, `.`, `_`, `-`)",
                crate::text::clean(k)
            ))
        })?;
        let s = val
            .as_str()
            .filter(|s| printable(s))
            .ok_or_else(|| bad(format!("versions.{k} must be a version string of printable characters")))?;
        vs.insert(k.clone(), s.to_string());
    }
    Ok(vs)
}

/// `capabilities`: absent, or at most [`MAX_CAPABILITIES`] printable strings.
fn capabilities(v: &serde_json::Value, bad: &dyn Fn(String) -> LabError) -> Result<Vec<String>> {
    Ok(match v {
        serde_json::Value::Null => vec![],
        serde_json::Value::Array(a) if a.len() > MAX_CAPABILITIES => {
            return Err(bad(format!("`capabilities` lists more than {MAX_CAPABILITIES}")));
        }
        serde_json::Value::Array(a) => a
            .iter()
            .map(|c| {
                c.as_str()
                    .filter(|s| printable(s))
                    .map(String::from)
                    .ok_or_else(|| bad("capabilities must be strings of printable characters".into()))
            })
            .collect::<Result<_>>()?,
        _ => return Err(bad("`capabilities` must be a list".into())),
    })
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn a_good_heartbeat_is_read_and_its_time_normalized() {
        let h = parse(
            r#"{"type":"HEARTBEAT","runner_id":"r-1","org":"acme","channel":"beta","versions":{"runner":"0.1.0","codex":"0.163.0"},"capabilities":["draft_pr"],"ts":"2026-11-22T10:00:00+01:00"}"#,
            "hb.json",
        )
        .unwrap();
        assert_eq!(h.sent_at, "2026-11-22T09:00:00.000Z");
        assert_eq!(h.org.as_deref(), Some("acme"));
        assert_eq!(h.versions["codex"], "0.163.0");
    }

    #[test]
    fn hostile_heartbeats_are_refused_by_field() {
        let big = format!(
            r#"{{"runner_id":"r","versions":{{{}}}}}"#,
            (0..40).map(|i| format!(r#""c{i}":"1""#)).collect::<Vec<_>>().join(",")
        );
        let cases: Vec<(&str, &str)> = vec![
            ("[1,2]", "JSON object"),
            ("{", "not JSON"),
            (r#"{"runner_id":"\u001b[2J","versions":{"a":"1"}}"#, "runner_id"),
            (r#"{"runner_id":"r","versions":{}}"#, "versions"),
            (r#"{"runner_id":"r","versions":{"a\nb":"1"}}"#, "component name"),
            (r#"{"runner_id":"r","versions":{"a":"1\u0007"}}"#, "versions.a"),
            (r#"{"runner_id":"r","versions":{"a":1}}"#, "versions.a"),
            (r#"{"runner_id":"r","versions":{"a":"1"},"org":7}"#, "`org`"),
            (r#"{"runner_id":"r","versions":{"a":"1"},"org":"a c"}"#, "`org`"),
            (
                r#"{"runner_id":"r","versions":{"a":"1"},"channel":{"x":1}}"#,
                "`channel`",
            ),
            (r#"{"runner_id":"r","versions":{"a":"1"},"ts":"yesterday"}"#, "`ts`"),
            (
                r#"{"runner_id":"r","versions":{"a":"1"},"capabilities":"all"}"#,
                "capabilities",
            ),
            (
                r#"{"type":"ERROR","runner_id":"r","versions":{"a":"1"}}"#,
                "not HEARTBEAT",
            ),
            (big.as_str(), "more than 32"),
        ];
        for (text, says) in cases {
            let e = parse(text, "hb.json").unwrap_err().to_string();
            assert!(e.contains(says), "{text}: {e}");
            assert!(!e.contains('\u{1b}'), "escape sequences are never echoed: {e:?}");
        }
    }
}
