//! The promotion policy (`gate.yaml`): what each channel requires before a build may join it.

use crate::error::{LabError, Result};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

pub const DEFAULT_FILE: &str = "gate.yaml";

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawChannelPolicy {
    /// Suites that must be green for the build.
    #[schemars(with = "Vec<String>")]
    pub required_suites: Spanned<Vec<String>>,
    /// Canary repos each required suite must be green on (default: every canary repo).
    #[serde(default)]
    #[schemars(with = "Option<Vec<String>>")]
    pub repos: Option<Spanned<Vec<String>>>,
    /// How old a result may be, e.g. `7d`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub max_age: Option<Spanned<String>>,
    /// Whether a case that failed and then passed on rerun counts as green.
    #[serde(default)]
    pub allow_flaky: bool,
    /// Whether a required cell with no result is a warning instead of a refusal.
    #[serde(default)]
    pub allow_missing: bool,
    /// How a staged rollout to this channel runs and is judged.
    #[serde(default)]
    #[schemars(with = "Option<RawRollout>")]
    pub rollout: Option<Spanned<RawRollout>>,
}

/// `rollout:` under a channel: steps, bake and the thresholds a step is judged by.
#[derive(Debug, Default, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawRollout {
    /// Cohort percentages, increasing, ending at 100 (default [1, 10, 50, 100]).
    pub steps: Option<Vec<f64>>,
    /// How long each step must look healthy, e.g. `10m` (default).
    pub bake: Option<String>,
    /// Sessions each side needs before a step is judged (default 200).
    pub min_sessions: Option<u64>,
    /// Allowed increase of the failure rate over the baseline, absolute (default 0.02).
    pub max_failure_rate_increase: Option<f64>,
    /// Allowed increase of the disconnect rate (default 0.02).
    pub max_disconnect_rate_increase: Option<f64>,
    /// Allowed ratio of p95 session start latency to the baseline's (default 1.5).
    pub max_start_latency_p95_ratio: Option<f64>,
    /// Confidence of the always-valid intervals, at every look at once (default 0.95).
    pub confidence: Option<f64>,
    /// The rate difference the sequential test is tuned to decide fastest on (default: each
    /// rate's allowed increase, at least 0.005).
    pub mixture_sd: Option<f64>,
    /// The sample-ratio guard (default `{action: hold, alpha: 0.001, settle: 60s}`).
    pub sample_ratio: Option<RawSampleRatio>,
    /// Where the rollout's transitions are told about (default: nowhere).
    pub alerts: Option<RawAlerts>,
    /// Step percentages an operator approves before the rollout enters them, e.g. `[50, 100]`.
    pub approve_before: Option<Vec<f64>>,
    /// A build green on the channel below starts its own rollout here:
    /// `{channel: beta, soak: 24h, min_sessions: 1000}`.
    pub auto_after: Option<RawTrain>,
    /// Org groups that go through the steps one after another, e.g.
    /// `[{name: internal, orgs: [canary-staff]}, {name: free, orgs: [hobby-1, hobby-2]}]`; orgs
    /// in none go last, as `everyone else`.
    pub rings: Option<Vec<RawRing>>,
    /// What cohorts are drawn by: `conversation` (default), `session` or `org`.
    pub cohort_key: Option<String>,
    /// Metrics a step is judged on, each with the regression it allows.
    #[schemars(with = "Option<Vec<RawGuardrail>>")]
    pub guardrails: Option<Vec<Spanned<RawGuardrail>>>,
}

/// One of `rings:`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRing {
    pub name: String,
    pub orgs: Vec<String>,
}

/// `auto_after:` under a channel's `rollout:`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTrain {
    /// The channel below, whose build this one follows.
    pub channel: String,
    /// How long the build must have been the channel below's, e.g. `24h` (default).
    #[serde(default)]
    pub soak: Option<String>,
    /// Sessions it must have run there (default 1000).
    #[serde(default)]
    pub min_sessions: Option<u64>,
}

/// One entry of `guardrails:`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawGuardrail {
    /// failure_rate, disconnect_rate, p95_start_latency (the time to terminal),
    /// cost_per_session, tokens_per_session, command_failure_rate or approval_gate_rate.
    pub metric: String,
    /// Allowed regression in the metric's unit: a share for rates (0.02 is two points), USD for
    /// cost, tokens, gates per session.
    #[serde(default)]
    pub max_increase: Option<f64>,
    /// Allowed regression as a share of the baseline's value (0.25: a quarter more).
    #[serde(default)]
    pub max_relative_increase: Option<f64>,
    /// Which way is a regression: `increase` (default) or `decrease`.
    #[serde(default)]
    pub direction: Option<String>,
}

/// `alerts:` under a channel's `rollout:`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAlerts {
    /// The http(s) URL posted to: started, advanced, held too long, sample-ratio mismatch,
    /// aborted, completed.
    pub webhook: String,
    /// `slack` (`{"text": ...}`, the default) or `generic` (every field as JSON).
    #[serde(default)]
    pub format: Option<String>,
    /// A hold this long is told about, once per hold, e.g. `30m` (default).
    #[serde(default)]
    pub held_after: Option<String>,
}

/// `sample_ratio:` under a channel's `rollout:`.
#[derive(Debug, Default, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawSampleRatio {
    /// `hold` (default), `abort` or `warn` when the candidate's share of reported sessions is not
    /// the share it was assigned.
    pub action: Option<String>,
    /// Level of the always-valid test (default 0.001).
    pub alpha: Option<f64>,
    /// Sessions assigned this recently are not counted yet, e.g. `60s` (default).
    pub settle: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ChannelPolicy {
    pub required_suites: Vec<String>,
    pub repos: Option<Vec<String>>,
    pub max_age: Duration,
    pub allow_flaky: bool,
    pub allow_missing: bool,
    pub rollout: crate::rollout::RolloutPolicy,
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub channels: BTreeMap<canary_contract::Channel, ChannelPolicy>,
    pub source: String,
}

impl Policy {
    /// The built-in policy: both channels require the golden path (on every canary repo, for
    /// every CLI of the build); stable strictly (fresh, no flaky, nothing missing), beta
    /// leniently (flaky and missing cells are warnings, but never a suite with no result).
    pub fn builtin() -> Policy {
        let mut channels = BTreeMap::new();
        channels.insert(
            canary_contract::Channel::stable(),
            ChannelPolicy {
                required_suites: vec!["golden-path".into()],
                repos: None,
                max_age: Duration::from_secs(7 * 86400),
                allow_flaky: false,
                allow_missing: false,
                rollout: Default::default(),
            },
        );
        channels.insert(
            canary_contract::Channel::beta(),
            ChannelPolicy {
                required_suites: vec!["golden-path".into()],
                repos: None,
                max_age: Duration::from_secs(30 * 86400),
                allow_flaky: true,
                allow_missing: true,
                rollout: Default::default(),
            },
        );
        Policy {
            channels,
            source: "built-in policy".into(),
        }
    }

    /// `path` if given (must exist), else `gate.yaml` if present, else the built-in policy.
    pub fn load(path: Option<&Path>) -> Result<Policy> {
        let (path, required) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (Path::new(DEFAULT_FILE).to_path_buf(), false),
        };
        if !required && !path.exists() {
            return Ok(Policy::builtin());
        }
        let text = crate::fsutil::read_input(&path, "gate policy", crate::fsutil::MAX_INPUT)?;
        Policy::parse(&path.display().to_string(), &text)
    }

    /// Parses and checks a policy's text; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Policy> {
        let (file, text) = (file.to_string(), text.to_string());
        let raw: BTreeMap<String, RawChannelPolicy> = crate::yaml::parse(
            &file,
            &text,
            "gate policy",
            "each channel takes required_suites, repos, max_age, allow_flaky, allow_missing",
        )?;
        if raw.is_empty() {
            return Err(crate::yaml::located_key(
                &file,
                &text,
                canary_contract::Channel::STABLE,
                "the gate policy declares no channels, so nothing could ever be promoted".into(),
                "declare each channel with its required suites, e.g. `beta: {required_suites: [golden-path]}`",
            )
            .into());
        }
        let names_ok = regex::Regex::new(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$").expect("static regex");
        let known: std::collections::BTreeSet<String> = raw.keys().cloned().collect();
        let mut channels = BTreeMap::new();
        for (name, c) in raw {
            if !names_ok.is_match(&name) {
                return Err(crate::yaml::located(
                    &file,
                    &text,
                    &c.required_suites.referenced,
                    format!("channel name `{}` is not a valid name", crate::text::clean(&name)),
                    "a channel name is 1 to 64 letters, digits, `.`, `_` or `-`",
                )
                .into());
            }
            let at = |loc: &serde_saphyr::Location, message: String, help: &str| -> LabError {
                crate::yaml::located(&file, &text, loc, message, help).into()
            };
            let at: &At<'_> = &at;
            check_lists(&c, &name, &names_ok, at)?;
            let max_age = match &c.max_age {
                None => Duration::from_secs(7 * 86400),
                Some(s) => humantime::parse_duration(&s.value).map_err(|e| {
                    at(
                        &s.referenced,
                        format!(
                            "channel `{name}`: invalid max_age `{}`: {e}",
                            crate::text::clean(&s.value)
                        ),
                        "write e.g. `7d` or `36h`",
                    )
                })?,
            };
            let rollout = match &c.rollout {
                Some(r) => rollout_policy(r, (&name, &known), at)?,
                None => crate::rollout::RolloutPolicy::default(),
            };
            channels.insert(
                name.parse().expect("a valid name above is a channel name"),
                ChannelPolicy {
                    required_suites: c.required_suites.value,
                    repos: c.repos.map(|r| r.value),
                    max_age,
                    allow_flaky: c.allow_flaky,
                    allow_missing: c.allow_missing,
                    rollout,
                },
            );
        }
        Ok(Policy { channels, source: file })
    }

    pub fn channel(&self, name: &canary_contract::Channel) -> Result<&ChannelPolicy> {
        self.channels.get(name).ok_or_else(|| {
            LabError::usage(
                format!("unknown channel `{name}`"),
                format!(
                    "channels in {}: {}",
                    self.source,
                    self.channels.keys().map(|c| c.as_str()).collect::<Vec<_>>().join(", ")
                ),
            )
        })
    }
}

/// Makes an error located at a place in the policy file: (where, message, help).
type At<'a> = dyn Fn(&serde_saphyr::Location, String, &str) -> LabError + 'a;

/// A channel's required suites (at least one) and repos (when given, at least one): valid names.
fn check_lists(c: &RawChannelPolicy, name: &str, names_ok: &regex::Regex, at: &At<'_>) -> Result<()> {
    if c.required_suites.value.is_empty() {
        return Err(at(
            &c.required_suites.referenced,
            format!("channel `{name}`: required_suites is empty, so nothing would prove a build works"),
            "name at least one suite, e.g. `required_suites: [golden-path]`",
        ));
    }
    if let Some(bad) = c.required_suites.value.iter().find(|s| !names_ok.is_match(s)) {
        return Err(at(
            &c.required_suites.referenced,
            format!(
                "channel `{name}`: `{}` is not a valid suite name",
                crate::text::clean(bad)
            ),
            "suite names are letters, digits, `.`, `_` and `-`, as in the suite's `name:`",
        ));
    }
    if let Some(r) = c.repos.as_ref() {
        if let Some(bad) = r.value.iter().find(|s| !names_ok.is_match(s)) {
            return Err(at(
                &r.referenced,
                format!("channel `{name}`: `{}` is not a valid repo id", crate::text::clean(bad)),
                "repo ids are the folder names under canary-repos/",
            ));
        }
    }
    if let Some(r) = c.repos.as_ref().filter(|r| r.value.is_empty()) {
        return Err(at(
            &r.referenced,
            format!("channel `{name}`: repos is empty, so the gate would check nothing"),
            "list canary repos, or remove `repos` to require every canary repo",
        ));
    }
    Ok(())
}

/// `approve_before:` and `auto_after:` checked: the channel below is another of this policy's.
fn train(
    rollout: &mut crate::rollout::RolloutPolicy,
    raw: &RawRollout,
    (name, known): (&str, &std::collections::BTreeSet<String>),
) -> std::result::Result<(), String> {
    if let Some(v) = &raw.approve_before {
        if let Some(bad) = v.iter().find(|p| !(p.is_finite() && **p > 0.0 && **p <= 100.0)) {
            return Err(format!(
                "approve_before: {bad} is not a step percentage above 0 and at most 100"
            ));
        }
        rollout.approve_before = v.clone();
    }
    if let Some(t) = &raw.auto_after {
        let channel: canary_contract::Channel = t.channel.parse().map_err(|e: String| format!("auto_after: {e}"))?;
        if channel.as_str() == name {
            return Err("auto_after: a channel cannot follow itself".into());
        }
        if !known.contains(channel.as_str()) {
            return Err(format!("auto_after: channel `{channel}` is not in this policy"));
        }
        let soak = match &t.soak {
            Some(s) => {
                crate::bounds::duration(std::time::Duration::ZERO, std::time::Duration::from_secs(30 * 86_400))(s)
                    .map_err(|e| format!("auto_after soak: {e}"))?
            }
            None => std::time::Duration::from_secs(86_400),
        };
        let min_sessions = t.min_sessions.unwrap_or(1000);
        if !(1..=10_000_000).contains(&min_sessions) {
            return Err(format!(
                "auto_after min_sessions {min_sessions} is not between 1 and 10000000"
            ));
        }
        rollout.auto_after = Some(crate::rollout::Train {
            channel,
            soak,
            min_sessions,
        });
    }
    Ok(())
}

/// `rings:` checked: named, each org in one ring, at most 10 rings of 1,000 orgs.
fn checked_rings(raw: &[RawRing]) -> std::result::Result<Vec<crate::rollout::Ring>, String> {
    if raw.len() > 10 {
        return Err(format!("{} rings, more than 10", raw.len()));
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut out: Vec<crate::rollout::Ring> = Vec::new();
    for r in raw {
        crate::gate::ops::check_name("ring", &r.name).map_err(|e| e.to_string())?;
        if r.orgs.is_empty() || r.orgs.len() > 1000 {
            return Err(format!("ring `{}` has {} orgs: 1 to 1000", r.name, r.orgs.len()));
        }
        for org in &r.orgs {
            crate::gate::ops::check_name("org", org).map_err(|e| e.to_string())?;
            if !seen.insert(org.clone()) {
                return Err(format!("org `{org}` is in two rings"));
            }
        }
        if out.iter().any(|o| o.name == r.name) {
            return Err(format!("two rings are named `{}`", r.name));
        }
        out.push(crate::rollout::Ring {
            name: r.name.clone(),
            orgs: r.orgs.iter().cloned().collect(),
        });
    }
    Ok(out)
}

/// `alerts:` checked: an http(s) webhook, a known format, a bounded time.
fn alerts(raw: &RawAlerts) -> std::result::Result<crate::rollout::alerts::Alerts, String> {
    if !crate::webhook::is_http_url(&raw.webhook) {
        return Err(format!(
            "webhook `{}` is not an http(s) URL",
            crate::text::clean(&raw.webhook)
        ));
    }
    let format = match &raw.format {
        Some(f) => f.parse()?,
        None => crate::rollout::alerts::AlertFormat::Slack,
    };
    let held_after = match &raw.held_after {
        Some(h) => crate::bounds::duration(std::time::Duration::ZERO, std::time::Duration::from_secs(7 * 86_400))(h)
            .map_err(|e| format!("held_after: {e}"))?,
        None => std::time::Duration::from_secs(30 * 60),
    };
    Ok(crate::rollout::alerts::Alerts {
        webhook: raw.webhook.clone(),
        format,
        held_after,
    })
}

/// One `guardrails:` entry onto the policy: the three built-in metrics set their thresholds, the
/// others are added (each at most once).
fn guardrail(rollout: &mut crate::rollout::RolloutPolicy, raw: &RawGuardrail) -> std::result::Result<(), String> {
    use crate::rollout::guardrails::{Direction, Guardrail, Limit, Metric};
    let direction = match raw.direction.as_deref() {
        None | Some("increase") => Direction::Increase,
        Some("decrease") => Direction::Decrease,
        Some(other) => {
            return Err(format!(
                "direction `{}` is not increase or decrease",
                crate::text::clean(other)
            ));
        }
    };
    let limit = match (raw.max_increase, raw.max_relative_increase) {
        (Some(a), None) if a.is_finite() && a >= 0.0 => Limit::Absolute(a),
        (None, Some(r)) if r.is_finite() && (0.0..=10.0).contains(&r) => Limit::Relative(r),
        (Some(_), Some(_)) | (None, None) => {
            return Err(format!(
                "`{}` needs exactly one of max_increase and max_relative_increase",
                crate::text::clean(&raw.metric)
            ));
        }
        _ => return Err("max_increase must be 0 or more; max_relative_increase between 0 and 10".into()),
    };
    let built_in = |what: &str| {
        format!(
            "{what} is judged as an increase {}",
            match what {
                "p95_start_latency" => "relative to the baseline's (max_relative_increase: 0.5 is 1.5×)",
                _ => "in points (max_increase: 0.02 is two points)",
            }
        )
    };
    match (raw.metric.as_str(), limit, direction) {
        ("failure_rate", Limit::Absolute(a), Direction::Increase) if a <= 1.0 => rollout.max_failure_rate_increase = a,
        ("disconnect_rate", Limit::Absolute(a), Direction::Increase) if a <= 1.0 => {
            rollout.max_disconnect_rate_increase = a
        }
        ("p95_start_latency", Limit::Relative(r), Direction::Increase) => rollout.max_start_latency_p95_ratio = 1.0 + r,
        (m @ ("failure_rate" | "disconnect_rate" | "p95_start_latency"), _, _) => return Err(built_in(m)),
        (other, _, _) => {
            let metric: Metric = other.parse()?;
            if rollout.guardrails.iter().any(|g| g.metric == metric) {
                return Err(format!("{} is listed twice", metric.as_str()));
            }
            // Cost is kept in USD micros; people write USD.
            let limit = match (metric, limit) {
                (Metric::CostPerSession, Limit::Absolute(usd)) => Limit::Absolute(usd * 1e6),
                (_, l) => l,
            };
            rollout.guardrails.push(Guardrail {
                metric,
                direction,
                limit,
            });
        }
    }
    Ok(())
}

/// `sample_ratio:` over the guard's defaults.
fn sample_ratio(guard: &mut crate::rollout::SampleRatio, raw: &RawSampleRatio) -> std::result::Result<(), String> {
    if let Some(a) = &raw.action {
        guard.action = a.parse()?;
    }
    if let Some(a) = raw.alpha {
        guard.alpha = a;
    }
    if let Some(s) = &raw.settle {
        guard.settle = crate::bounds::duration(std::time::Duration::ZERO, std::time::Duration::from_secs(86_400))(s)
            .map_err(|e| format!("settle: {e}"))?;
    }
    Ok(())
}

/// The plain numbers of a `rollout:` over the defaults (checked with the whole policy).
fn thresholds(rollout: &mut crate::rollout::RolloutPolicy, raw: &RawRollout) {
    if let Some(v) = &raw.steps {
        rollout.steps = v.clone();
    }
    if let Some(v) = raw.min_sessions {
        rollout.min_sessions = v;
    }
    if let Some(v) = raw.max_failure_rate_increase {
        rollout.max_failure_rate_increase = v;
    }
    if let Some(v) = raw.max_disconnect_rate_increase {
        rollout.max_disconnect_rate_increase = v;
    }
    if let Some(v) = raw.max_start_latency_p95_ratio {
        rollout.max_start_latency_p95_ratio = v;
    }
    if let Some(v) = raw.confidence {
        rollout.confidence = v;
    }
    if let Some(v) = raw.mixture_sd {
        rollout.mixture_sd = Some(v);
    }
}

/// A channel's `rollout:` over the defaults, checked as a whole.
fn rollout_policy(
    r: &Spanned<RawRollout>,
    (name, known): (&str, &std::collections::BTreeSet<String>),
    at: &At<'_>,
) -> Result<crate::rollout::RolloutPolicy> {
    let mut rollout = crate::rollout::RolloutPolicy::default();
    let raw = &r.value;
    if let Some(b) = &raw.bake {
        rollout.bake = crate::bounds::duration(std::time::Duration::ZERO, std::time::Duration::from_secs(7 * 86_400))(
            b,
        )
        .map_err(|e| {
            at(
                &r.referenced,
                format!("channel `{name}`: rollout bake: {e}"),
                "write e.g. `10m` or `1h` (at most 7 days)",
            )
        })?;
    }
    thresholds(&mut rollout, raw);
    if let Some(g) = &raw.sample_ratio {
        sample_ratio(&mut rollout.sample_ratio, g).map_err(|e| {
            at(
                &r.referenced,
                format!("channel `{name}`: rollout sample_ratio: {e}"),
                "write e.g. `sample_ratio: {action: hold, alpha: 0.001, settle: 60s}`",
            )
        })?;
    }
    train(&mut rollout, raw, (name, known)).map_err(|e| {
        at(
            &r.referenced,
            format!("channel `{name}`: rollout {e}"),
            "write e.g. `auto_after: {channel: beta, soak: 24h, min_sessions: 1000}` and `approve_before: [50, 100]`",
        )
    })?;
    if let Some(rings) = &raw.rings {
        rollout.rings = checked_rings(rings).map_err(|e| {
            at(
                &r.referenced,
                format!("channel `{name}`: rollout rings: {e}"),
                "write e.g. `rings: [{name: internal, orgs: [canary-staff]}, {name: free, orgs: [hobby-1]}]`",
            )
        })?;
    }
    if let Some(k) = &raw.cohort_key {
        rollout.cohort_key = k.parse().map_err(|e: String| {
            at(
                &r.referenced,
                format!("channel `{name}`: rollout cohort_key: {e}"),
                "write `cohort_key: conversation` (the default), `session` or `org`",
            )
        })?;
    }
    for g in raw.guardrails.iter().flatten() {
        guardrail(&mut rollout, &g.value).map_err(|e| {
            at(
                &g.referenced,
                format!("channel `{name}`: rollout guardrail: {e}"),
                "write e.g. `- {metric: cost_per_session, max_relative_increase: 0.25}`",
            )
        })?;
    }
    if let Some(a) = &raw.alerts {
        rollout.alerts = Some(alerts(a).map_err(|e| {
            at(
                &r.referenced,
                format!("channel `{name}`: rollout alerts: {e}"),
                "write e.g. `alerts: {webhook: https://hooks.example.com/canary, format: slack, held_after: 30m}`",
            )
        })?);
    }
    rollout.check().map_err(|e| {
        at(
            &r.referenced,
            format!("channel `{name}`: rollout: {e}"),
            "e.g. `rollout: {steps: [1, 10, 50, 100], bake: 10m, min_sessions: 200, max_failure_rate_increase: 0.02}`",
        )
    })?;
    Ok(rollout)
}

#[cfg(test)]
mod tests {
    use super::Policy;
    use crate::rollout::MismatchAction;

    const GATE: &str = "stable:\n  required_suites: [gate]\n  rollout:\n    steps: [10, 100]\n";

    #[test]
    fn a_rollout_policy_takes_its_sequential_and_sample_ratio_settings() {
        let text =
            format!("{GATE}    mixture_sd: 0.05\n    sample_ratio: {{action: abort, alpha: 0.01, settle: 5s}}\n");
        let p = Policy::parse("gate.yaml", &text).unwrap();
        let r = &p.channel(&canary_contract::Channel::stable()).unwrap().rollout;
        assert_eq!(r.mixture_sd, Some(0.05));
        assert_eq!(r.sample_ratio.action, MismatchAction::Abort);
        assert_eq!(r.sample_ratio.alpha, 0.01);
        assert_eq!(r.sample_ratio.settle, std::time::Duration::from_secs(5));
        // Left out, the guard holds at 0.001 after a minute, and the mixture follows each limit.
        let r = Policy::parse("gate.yaml", GATE)
            .unwrap()
            .channel(&canary_contract::Channel::stable())
            .unwrap()
            .rollout
            .clone();
        assert_eq!(
            (r.sample_ratio.action, r.sample_ratio.alpha),
            (MismatchAction::Hold, 0.001)
        );
        assert_eq!(r.mixture_sd, None);
    }

    #[test]
    fn guardrails_set_the_built_in_thresholds_and_add_the_others() {
        use crate::rollout::guardrails::{Direction, Limit, Metric};
        let text = format!(
            "{GATE}    guardrails:\n      - {{metric: failure_rate, max_increase: 0.05}}\n      - {{metric: p95_start_latency, max_relative_increase: 1}}\n      - {{metric: cost_per_session, max_increase: 0.01}}\n      - {{metric: tokens_per_session, max_relative_increase: 0.3, direction: decrease}}\n"
        );
        let p = Policy::parse("gate.yaml", &text).unwrap();
        let r = &p.channel(&canary_contract::Channel::stable()).unwrap().rollout;
        assert_eq!(r.max_failure_rate_increase, 0.05);
        assert_eq!(r.max_start_latency_p95_ratio, 2.0);
        assert_eq!(r.guardrails.len(), 2);
        assert_eq!(r.guardrails[0].metric, Metric::CostPerSession);
        assert_eq!(
            r.guardrails[0].limit,
            Limit::Absolute(10_000.0),
            "USD is kept as micros"
        );
        assert_eq!(
            (r.guardrails[1].direction, r.guardrails[1].limit),
            (Direction::Decrease, Limit::Relative(0.3))
        );
        let twice = format!(
            "{GATE}    guardrails:\n      - {{metric: tokens_per_session, max_increase: 1}}\n      - {{metric: tokens_per_session, max_increase: 2}}\n"
        );
        let e = Policy::parse("gate.yaml", &twice).unwrap_err().to_string();
        assert!(
            e.contains("tokens_per_session is listed twice") && e.contains("gate.yaml:7"),
            "{e}"
        );
    }

    #[test]
    fn a_bad_sample_ratio_setting_is_refused_at_its_line() {
        for (bad, says) in [
            (
                "    sample_ratio: {action: halt}\n",
                "`halt` is not hold, abort or warn",
            ),
            ("    sample_ratio: {alpha: 0.5}\n", "sample_ratio alpha 0.5"),
            ("    sample_ratio: {settle: 3 days}\n", "settle"),
            ("    mixture_sd: 2\n", "mixture_sd 2 must be between"),
            ("    sample_ratio: {action: hold, typo: 1}\n", "typo"),
            (
                "    alerts: {webhook: 'ftp://x/'}\n",
                "webhook `ftp://x/` is not an http(s) URL",
            ),
            (
                "    alerts: {webhook: 'http://127.0.0.1:9/h', format: teams}\n",
                "`teams` is not slack or generic",
            ),
            ("    alerts: {format: slack}\n", "webhook"),
            (
                "    guardrails:\n      - {metric: cost, max_increase: 1}\n",
                "`cost` is not a guardrail metric",
            ),
            (
                "    guardrails:\n      - {metric: cost_per_session}\n",
                "needs exactly one of max_increase",
            ),
            (
                "    guardrails:\n      - {metric: failure_rate, max_relative_increase: 0.5}\n",
                "failure_rate is judged as an increase in points",
            ),
            (
                "    guardrails:\n      - {metric: tokens_per_session, max_increase: 9, direction: up}\n",
                "direction `up`",
            ),
            (
                "    guardrails:\n      - {metric: tokens_per_session, max_increase: -1}\n",
                "max_increase must be 0 or more",
            ),
            ("    cohort_key: user\n", "`user` is not session, conversation or org"),
            ("    auto_after: {channel: stable}\n", "a channel cannot follow itself"),
            (
                "    auto_after: {channel: nightly}\n",
                "channel `nightly` is not in this policy",
            ),
            (
                "    approve_before: [0]\n",
                "approve_before: 0 is not a step percentage",
            ),
            (
                "    rings: [{name: a, orgs: [x]}, {name: b, orgs: [x]}]\n",
                "org `x` is in two rings",
            ),
            ("    rings: [{name: a, orgs: []}]\n", "ring `a` has 0 orgs"),
            ("    rings: [{name: 'a b', orgs: [x]}]\n", "ring"),
        ] {
            let e = Policy::parse("gate.yaml", &format!("{GATE}{bad}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{bad}: {e}");
            assert!(e.contains("gate.yaml"), "{bad}: {e}");
        }
    }
}
