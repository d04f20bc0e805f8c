//! The promotion gate: whether a build may join a channel, decided from registry evidence by
//! a pure function, so the rules are testable without a database and every decision can be
//! explained (`--dry-run`) exactly as it would be enforced.

pub mod ops;
pub mod policy;
pub mod view;

pub use crate::registry::{CellEvidence, ResultStatus, required_cells};
use policy::ChannelPolicy;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub build: canary_contract::BuildId,
    pub channel: canary_contract::Channel,
    pub allowed: bool,
    /// Every unmet condition (empty when allowed).
    pub unmet: Vec<String>,
    pub warnings: Vec<String>,
    pub evidence: Vec<CellEvidence>,
}

/// Decides from the evidence; `now` and the timestamps are RFC 3339 UTC.
pub fn decide(
    build: &canary_contract::BuildId,
    channel: &canary_contract::Channel,
    policy: &ChannelPolicy,
    evidence: Vec<CellEvidence>,
    now: jiff::Timestamp,
) -> Decision {
    let mut unmet = Vec::new();
    let mut warnings = Vec::new();
    if policy.required_suites.is_empty() {
        unmet.push("the policy requires no suites, so nothing proves the build works (fail-closed)".into());
    }
    if evidence.is_empty() {
        unmet.push("the policy selects no (suite, repo) cell, so nothing proves the build works (fail-closed)".into());
    }
    // `allow_missing` forgives some missing cells, never all of a suite: each required suite
    // needs at least one passing result for this very build.
    for suite in &policy.required_suites {
        let proven = evidence
            .iter()
            .any(|c| &c.suite == suite && matches!(c.status, Some(ResultStatus::Pass | ResultStatus::Flaky)));
        if !proven && evidence.iter().all(|c| &c.suite != suite || c.status.is_none()) {
            unmet.push(format!(
                "suite `{suite}`: no result for this build at all; run it first (no evidence is never a pass)"
            ));
        }
    }
    for cell in &evidence {
        let at = cell.place();
        match cell.status {
            None if policy.allow_missing => warnings.push(format!("{at}: no result")),
            None => unmet.push(format!("{at}: no result for this build")),
            Some(ResultStatus::Pass) => {}
            Some(ResultStatus::Flaky) if policy.allow_flaky => warnings.push(format!("{at}: flaky (passed on rerun)")),
            Some(ResultStatus::Flaky) => unmet.push(format!(
                "{at}: flaky (failed, then passed on rerun); the channel requires a clean pass"
            )),
            Some(ResultStatus::InfraError) => unmet.push(format!(
                "{at}: infra_error (the lab could not run it; rerun it, it never counts as a pass)"
            )),
            Some(other @ (ResultStatus::Fail | ResultStatus::Drift | ResultStatus::TimedOut)) => {
                unmet.push(format!("{at}: {other}"))
            }
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
        build: build.clone(),
        channel: channel.clone(),
        allowed: unmet.is_empty(),
        unmet,
        warnings,
        evidence,
    }
}

#[cfg(test)]
mod tests {
    use canary_contract::Provider;
    fn id(name: &str) -> canary_contract::BuildId {
        let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
        format!("sha256:{hex}").parse().unwrap()
    }

    use super::*;
    use std::time::Duration;

    fn policy(strict: bool) -> ChannelPolicy {
        ChannelPolicy {
            required_suites: vec!["demo".into()],
            repos: None,
            max_age: Duration::from_secs(86400),
            allow_flaky: !strict,
            allow_missing: !strict,
            rollout: Default::default(),
        }
    }

    fn cell(repo: &str, status: Option<&str>, at: &str) -> CellEvidence {
        CellEvidence {
            suite: "demo".into(),
            repo: repo.into(),
            provider: None,
            status: status.map(ResultStatus::from_word),
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
        let d = decide(
            &id("sha256:x"),
            &canary_contract::Channel::stable(),
            &policy(true),
            evidence,
            now,
        );
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
            &id("b"),
            &canary_contract::Channel::beta(),
            &policy(false),
            vec![cell("a", Some("flaky"), "2026-11-21T11:00:00Z"), cell("b", None, "")],
            now,
        );
        assert!(d.allowed);
        assert_eq!(d.warnings.len(), 2);
        let d = decide(
            &id("b"),
            &canary_contract::Channel::beta(),
            &policy(false),
            vec![cell("a", Some("fail"), "2026-11-21T11:00:00Z")],
            now,
        );
        assert!(!d.allowed, "a failure is never an exception");
    }

    fn row(suite: &str, repo: &str, provider: &str, status: &str) -> crate::registry::ResultRow {
        crate::registry::ResultRow {
            build_id: id("b"),
            run_id: "r".into(),
            suite: suite.into(),
            repo: repo.into(),
            provider: Provider::from_name(provider),
            case_id: format!("{suite}--{repo}"),
            status: ResultStatus::from_word(status),
            attempts: 1,
            duration_ms: 1,
            report_path: String::new(),
            recorded_at: "2026-11-21T11:00:00Z".into(),
        }
    }

    #[test]
    fn a_build_is_judged_on_every_cli_it_bundles() {
        let providers = [Provider::Codex, Provider::ClaudeCode];
        let results = vec![row("golden-path", "a", "codex", "pass"), row("demo", "a", "", "pass")];
        let cells = required_cells(
            &results,
            &["golden-path".into(), "demo".into()],
            &["a".into()],
            &providers,
        );
        let shown: Vec<(String, Option<&str>)> = cells
            .iter()
            .map(|c| (c.place(), c.status.map(|s| s.as_str())))
            .collect();
        assert_eq!(
            shown,
            vec![
                ("suite `golden-path` on repo `a` for codex".into(), Some("pass")),
                ("suite `golden-path` on repo `a` for claude-code".into(), None),
                ("suite `demo` on repo `a`".into(), Some("pass")),
            ]
        );
        let now: jiff::Timestamp = "2026-11-21T12:00:00Z".parse().unwrap();
        let d = decide(&id("b"), &canary_contract::Channel::stable(), &policy(true), cells, now);
        assert!(!d.allowed);
        assert_eq!(
            d.unmet,
            vec!["suite `golden-path` on repo `a` for claude-code: no result for this build"]
        );
        // A suite never run at all is missing for each CLI by name.
        let cells = required_cells(&[], &["golden-path".into()], &["a".into()], &providers);
        assert_eq!(cells.len(), 2);
    }

    #[test]
    fn no_evidence_never_promotes_even_where_missing_cells_are_allowed() {
        let now: jiff::Timestamp = "2026-11-21T12:00:00Z".parse().unwrap();
        let d = decide(
            &id("b"),
            &canary_contract::Channel::beta(),
            &policy(false),
            vec![cell("a", None, ""), cell("b", None, "")],
            now,
        );
        assert!(!d.allowed, "a build with zero results must not reach beta");
        assert!(
            d.unmet.iter().any(|u| u.contains("no result for this build at all")),
            "{:?}",
            d.unmet
        );
        let d = decide(&id("b"), &canary_contract::Channel::beta(), &policy(false), vec![], now);
        assert!(!d.allowed, "an empty selection proves nothing");
    }
}
