//! Alerts about a rollout's transitions: which ones a person is told about, and the message, as a
//! Slack-compatible body (`{"text": ...}`, for an incoming webhook) or a generic JSON one. Pure;
//! `canary serve` keeps them in an outbox in the registry and delivers it
//! (`canary-control`'s `rollout::alerts`).

use super::EventKind;
use canary_contract::{BuildId, Channel};
use serde::Serialize;
use std::time::Duration;

/// What a person is told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Alert {
    Started,
    Advanced,
    /// Holding longer than the policy's `held_after`.
    Held,
    /// The sample-ratio guard found the candidate's sessions going missing.
    SampleRatio,
    Aborted,
    Completed,
}

canary_contract::words!(Alert, "an alert", {
    Started => "started",
    Advanced => "advanced",
    Held => "held",
    SampleRatio => "sample_ratio",
    Aborted => "aborted",
    Completed => "completed",
});

/// The body a webhook receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertFormat {
    /// `{"text": "..."}`, with `&`, `<` and `>` escaped as Slack asks.
    Slack,
    /// Every field as JSON (`type`, `id`, `rollout`, `channel`, `build`, ...).
    Generic,
}

impl std::str::FromStr for AlertFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "slack" => Ok(AlertFormat::Slack),
            "generic" => Ok(AlertFormat::Generic),
            other => Err(format!(
                "`{}` is not slack or generic",
                canary_contract::text::clean(other)
            )),
        }
    }
}

/// `alerts:` in a channel's `rollout:`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alerts {
    /// An http(s) URL.
    pub webhook: String,
    pub format: AlertFormat,
    /// A hold this long is told about (once per hold).
    #[serde(with = "super::humantime_serde_ms")]
    pub held_after: Duration,
}

/// The alert a stored rollout event raises at once, if any. A hold raises one only when the
/// sample-ratio guard caused it; a long hold is raised by time (`Alert::Held`).
pub fn alert_for(kind: EventKind, figures: &serde_json::Value) -> Option<Alert> {
    match kind {
        EventKind::Start => Some(Alert::Started),
        EventKind::Advance => Some(Alert::Advanced),
        EventKind::Complete => Some(Alert::Completed),
        EventKind::Abort => Some(Alert::Aborted),
        EventKind::Hold => figures["checks"]
            .as_array()?
            .iter()
            .any(|c| c["metric"] == "sample ratio" && c["verdict"] != "pass")
            .then_some(Alert::SampleRatio),
        EventKind::Pause | EventKind::Resume | EventKind::Approve => None,
    }
}

/// What an alert is about.
#[derive(Debug, Clone)]
pub struct Subject<'a> {
    /// The rollout event it comes from: with the alert, its identity (receivers may dedupe on it).
    pub event: i64,
    pub rollout: i64,
    pub channel: &'a Channel,
    pub build: &'a BuildId,
    pub baseline: &'a BuildId,
    /// The step (index) of the event and the rollout's steps.
    pub step: usize,
    pub steps: &'a [f64],
    pub at: &'a str,
    pub actor: &'a str,
    /// Why (the judgement's reasons; empty for an operator's action).
    pub reasons: Vec<String>,
}

fn short(b: &BuildId) -> &str {
    canary_contract::build::short_id(b.as_str())
}

/// One line for a person.
pub fn text(alert: Alert, s: &Subject<'_>) -> String {
    let percent = s.steps.get(s.step).copied().unwrap_or(100.0);
    let head = format!("Rollout {} of {} to {}", s.rollout, short(s.build), s.channel);
    let at_step = format!("step {} of {} ({percent} % of sessions)", s.step + 1, s.steps.len());
    let why = if s.reasons.is_empty() {
        String::new()
    } else {
        format!(": {}", s.reasons.join("; "))
    };
    match alert {
        Alert::Started => format!(
            "{head} started at {at_step}, against {} (by {})",
            short(s.baseline),
            s.actor
        ),
        Alert::Advanced => format!("{head} advanced to {at_step}{why}"),
        Alert::Held => format!("{head} is holding at {at_step}{why}"),
        Alert::SampleRatio => format!("{head} holds at {at_step}: sample-ratio mismatch{why}"),
        Alert::Aborted if s.reasons.is_empty() => format!("{head} aborted at {at_step} by {}", s.actor),
        Alert::Aborted => format!(
            "{head} aborted at {at_step}{why}; every session is back on {}",
            short(s.baseline)
        ),
        Alert::Completed => format!("{head} completed: {} is channel {}'s build", short(s.build), s.channel),
    }
}

/// Slack's escaping of message text: `&`, `<` and `>` (its link and mention syntax).
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The JSON posted for an alert.
pub fn body(format: AlertFormat, alert: Alert, s: &Subject<'_>) -> serde_json::Value {
    let line = text(alert, s);
    match format {
        AlertFormat::Slack => serde_json::json!({ "text": slack_escape(&line) }),
        AlertFormat::Generic => serde_json::json!({
            "type": format!("canary.rollout.{}", alert.as_str()),
            "id": format!("{}-{}", s.event, alert.as_str()),
            "rollout": s.rollout,
            "channel": s.channel,
            "build": s.build,
            "baseline": s.baseline,
            "step": s.step,
            "percent": s.steps.get(s.step).copied().unwrap_or(100.0),
            "at": s.at,
            "actor": s.actor,
            "reasons": s.reasons,
            "text": line,
        }),
    }
}

/// When a failed delivery is tried again: 5 s doubling per attempt, at most 10 minutes; `None`
/// after the last attempt (8).
pub fn retry_after(attempts: u32) -> Option<Duration> {
    const ATTEMPTS: u32 = 8;
    (attempts < ATTEMPTS).then(|| Duration::from_secs((5u64 << attempts.min(16)).min(600)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject<'a>(channel: &'a Channel, build: &'a BuildId, base: &'a BuildId, steps: &'a [f64]) -> Subject<'a> {
        Subject {
            event: 42,
            rollout: 3,
            channel,
            build,
            baseline: base,
            step: 1,
            steps,
            at: "2026-12-06T10:00:00.000Z",
            actor: "rollout-controller",
            reasons: vec!["failure rate 9.00 % vs baseline 1.00 % <&>".into()],
        }
    }

    #[test]
    fn transitions_raise_their_alert_and_a_hold_only_for_a_sample_ratio_mismatch() {
        assert_eq!(
            alert_for(EventKind::Start, &serde_json::json!({})),
            Some(Alert::Started)
        );
        assert_eq!(
            alert_for(EventKind::Advance, &serde_json::json!({})),
            Some(Alert::Advanced)
        );
        assert_eq!(
            alert_for(EventKind::Abort, &serde_json::json!({})),
            Some(Alert::Aborted)
        );
        assert_eq!(
            alert_for(EventKind::Complete, &serde_json::json!({})),
            Some(Alert::Completed)
        );
        assert_eq!(alert_for(EventKind::Pause, &serde_json::json!({})), None);
        let few = serde_json::json!({"checks": [], "reasons": ["the candidate has 3 of the 200 sessions"]});
        assert_eq!(alert_for(EventKind::Hold, &few), None);
        let srm = serde_json::json!({"checks": [{"metric": "sample ratio", "verdict": "inconclusive"}]});
        assert_eq!(alert_for(EventKind::Hold, &srm), Some(Alert::SampleRatio));
        for &a in Alert::ALL {
            assert_eq!(a.as_str().parse::<Alert>(), Ok(a));
        }
    }

    #[test]
    fn bodies_say_what_happened_and_slack_text_is_escaped() {
        let c = Channel::stable();
        let b: BuildId = format!("sha256:{}", "ab".repeat(32)).parse().unwrap();
        let base: BuildId = format!("sha256:{}", "cd".repeat(32)).parse().unwrap();
        let steps = [1.0, 10.0, 50.0, 100.0];
        let s = subject(&c, &b, &base, &steps);
        let slack = body(AlertFormat::Slack, Alert::Aborted, &s);
        let t = slack["text"].as_str().unwrap();
        assert!(
            t.starts_with(
                "Rollout 3 of abababababab to stable aborted at step 2 of 4 (10 % of sessions): failure rate 9.00 %"
            ),
            "{t}"
        );
        assert!(t.contains("&lt;&amp;&gt;") && !t.contains("<&>"), "{t}");
        assert_eq!(slack.as_object().unwrap().len(), 1);
        let g = body(AlertFormat::Generic, Alert::Advanced, &s);
        assert_eq!(g["type"], "canary.rollout.advanced");
        assert_eq!(g["id"], "42-advanced");
        assert_eq!(g["percent"], 10.0);
        assert_eq!(g["build"], b.as_str());
        assert!(
            g["text"].as_str().unwrap().contains("<&>"),
            "generic JSON carries the text as it is"
        );
        let done = text(Alert::Completed, &s);
        assert_eq!(
            done,
            "Rollout 3 of abababababab to stable completed: abababababab is channel stable's build"
        );
    }

    #[test]
    fn deliveries_back_off_and_give_up() {
        assert_eq!(retry_after(0), Some(Duration::from_secs(5)));
        assert_eq!(retry_after(3), Some(Duration::from_secs(40)));
        assert_eq!(retry_after(7), Some(Duration::from_secs(600)));
        assert_eq!(retry_after(8), None);
        assert!("teams".parse::<AlertFormat>().is_err());
    }
}
