//! The promotion gate: whether a build may join a channel, decided from registry evidence by
//! a pure function, so the rules are testable without a database and every decision can be
//! explained (`--dry-run`) exactly as it would be enforced.

pub mod policy;

use policy::ChannelPolicy;
use serde::Serialize;

/// The latest result of one (suite, repo) cell for the build.
#[derive(Debug, Clone, Serialize)]
pub struct CellEvidence {
    pub suite: String,
    pub repo: String,
    /// `None` when the build has no result for the cell.
    pub status: Option<String>,
    pub recorded_at: Option<String>,
    pub run_id: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub build: String,
    pub channel: String,
    pub allowed: bool,
    /// Every unmet condition (empty when allowed).
    pub unmet: Vec<String>,
    pub warnings: Vec<String>,
    pub evidence: Vec<CellEvidence>,
}

/// Decides from the evidence; `now` and the timestamps are RFC 3339 UTC.
pub fn decide(
    build: &str,
    channel: &str,
    policy: &ChannelPolicy,
    evidence: Vec<CellEvidence>,
    now: jiff::Timestamp,
) -> Decision {
    let mut unmet = Vec::new();
    let mut warnings = Vec::new();
    if policy.required_suites.is_empty() {
        unmet.push("the policy requires no suites, so nothing proves the build works (fail-closed)".into());
    }
    for cell in &evidence {
        let at = format!("suite `{}` on repo `{}`", cell.suite, cell.repo);
        match cell.status.as_deref() {
            None if policy.allow_missing => warnings.push(format!("{at}: no result")),
            None => unmet.push(format!("{at}: no result for this build")),
            Some("pass") => {}
            Some("flaky") if policy.allow_flaky => warnings.push(format!("{at}: flaky (passed on rerun)")),
            Some("flaky") => unmet.push(format!(
                "{at}: flaky (failed, then passed on rerun); the channel requires a clean pass"
            )),
            Some("infra_error") => unmet.push(format!(
                "{at}: infra_error (the lab could not run it; rerun it, it never counts as a pass)"
            )),
            Some(other) => unmet.push(format!("{at}: {other}")),
        }
        if let Some(ts) = cell.recorded_at.as_deref() {
            match ts.parse::<jiff::Timestamp>() {
                Ok(t) => {
                    let age = now.duration_since(t);
                    if age.as_secs() as u64 > policy.max_age.as_secs() {
                        unmet.push(format!(
                            "{at}: result is {} old, older than max_age {}",
                            humantime::format_duration(std::time::Duration::from_secs(age.as_secs() as u64)),
                            humantime::format_duration(policy.max_age)
                        ));
                    }
                }
                Err(_) => unmet.push(format!("{at}: result has an unreadable timestamp `{ts}`")),
            }
        }
    }
    Decision {
        build: build.into(),
        channel: channel.into(),
        allowed: unmet.is_empty(),
        unmet,
        warnings,
        evidence,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn policy(strict: bool) -> ChannelPolicy {
        ChannelPolicy {
            required_suites: vec!["demo".into()],
            repos: None,
            max_age: Duration::from_secs(86400),
            allow_flaky: !strict,
            allow_missing: !strict,
        }
    }

    fn cell(repo: &str, status: Option<&str>, at: &str) -> CellEvidence {
        CellEvidence {
            suite: "demo".into(),
            repo: repo.into(),
            status: status.map(String::from),
            recorded_at: status.map(|_| at.to_string()),
            run_id: None,
        }
    }

    #[test]
    fn stable_lists_every_unmet_condition() {
        let now: jiff::Timestamp = "2026-11-21T12:00:00Z".parse().unwrap();
        let evidence = vec![
            cell("a", Some("pass"), "2026-11-21T11:00:00Z"),
            cell("b", Some("flaky"), "2026-11-21T11:00:00Z"),
            cell("c", Some("infra_error"), "2026-11-21T11:00:00Z"),
            cell("d", None, ""),
            cell("e", Some("pass"), "2026-11-18T11:00:00Z"),
        ];
        let d = decide("sha256:x", "stable", &policy(true), evidence, now);
        assert!(!d.allowed);
        assert_eq!(d.unmet.len(), 4, "{:#?}", d.unmet);
        assert!(d.unmet[0].contains("flaky"));
        assert!(d.unmet[1].contains("infra_error") && d.unmet[1].contains("never counts as a pass"));
        assert!(d.unmet[2].contains("no result"));
        assert!(d.unmet[3].contains("older than max_age"));
    }

    #[test]
    fn beta_turns_flaky_and_missing_into_warnings() {
        let now: jiff::Timestamp = "2026-11-21T12:00:00Z".parse().unwrap();
        let d = decide(
            "b",
            "beta",
            &policy(false),
            vec![cell("a", Some("flaky"), "2026-11-21T11:00:00Z"), cell("b", None, "")],
            now,
        );
        assert!(d.allowed);
        assert_eq!(d.warnings.len(), 2);
        let d = decide(
            "b",
            "beta",
            &policy(false),
            vec![cell("a", Some("fail"), "2026-11-21T11:00:00Z")],
            now,
        );
        assert!(!d.allowed, "a failure is never an exception");
    }
}
