//! Rollouts as terminal lines (`canary rollout ...`), from the same values `--json` prints.

use super::controller::Step;
use super::{Judgement, Verdict};
use crate::registry::{RolloutEvent, RolloutRow};
use canary_contract::build::short_id as short;
use canary_contract::text::clean;
use std::time::Duration;

fn bake(ms: i64) -> humantime::FormattedDuration {
    humantime::format_duration(Duration::from_millis(ms.max(0) as u64))
}

/// A rollout just started, and where to follow it.
pub fn started(r: &RolloutRow) -> Vec<String> {
    vec![
        format!(
            "rollout {} started: build {} -> {} (baseline {}), steps {} %, bake {}",
            r.id,
            short(&r.build_id),
            r.channel,
            short(&r.baseline_id),
            r.steps.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(" → "),
            bake(r.bake_ms)
        ),
        format!("  {}", clean(&r.note)),
        format!(
            "  canary serve judges it every --tick; `canary rollout status {}` shows it",
            r.id
        ),
    ]
}

/// A rollout's state in three lines.
pub fn rollout(r: &RolloutRow) -> Vec<String> {
    vec![
        format!(
            "rollout {}: build {} -> {} (baseline {})",
            r.id,
            short(&r.build_id),
            r.channel,
            short(&r.baseline_id)
        ),
        format!(
            "  {} {}at step {} of {} ({} % of sessions) since {}, bake {}, {} sessions per side",
            r.state.as_str(),
            if r.rings.is_empty() {
                String::new()
            } else {
                format!(
                    "in ring {} of {} ({}) ",
                    r.ring + 1,
                    r.rings.len() + 1,
                    clean(super::ring_name(&r.rings, r.ring))
                )
            },
            r.step + 1,
            r.steps.len(),
            r.percent(),
            r.step_started_at,
            bake(r.bake_ms),
            r.min_sessions
        ),
        format!("  {}", clean(&r.note)),
    ]
}

/// A rollout, how it is judged now (each check, and what a decision still needs), and its
/// timeline.
pub fn status(r: &RolloutRow, now: &Judgement, events: &[RolloutEvent]) -> Vec<String> {
    let mut out = rollout(r);
    let baseline_window = if r.percent() >= 100.0 {
        "since the rollout started"
    } else {
        "this step"
    };
    out.push(format!(
        "  now: candidate {} sessions this step, baseline {} {baseline_window}",
        now.candidate.sessions, now.baseline.sessions
    ));
    for c in &now.checks {
        let mark = match c.verdict {
            Verdict::Pass => "✓",
            Verdict::Fail => "✗",
            Verdict::Inconclusive => "?",
        };
        out.push(format!("    {mark} {}", c.why));
    }
    for reason in now.reasons.iter().filter(|r| r.contains("sessions a decision needs")) {
        out.push(format!("    ? {reason}"));
    }
    out.push("  timeline:".into());
    for e in events {
        out.push(format!(
            "    {}  {:<8} step {}  {}",
            e.ts,
            e.kind,
            e.step.map(|s| s + 1).unwrap_or(0),
            clean(&e.actor)
        ));
    }
    out
}

/// Every rollout, one line each.
pub fn list(all: &[RolloutRow]) -> Vec<String> {
    if all.is_empty() {
        return vec!["no rollouts yet; `canary rollout start BUILD --channel C` starts one".into()];
    }
    all.iter()
        .map(|r| {
            format!(
                "{:>4}  {:<9} {:<8} {} ← {}  step {}/{} ({} %)  {}",
                r.id,
                r.state.as_str(),
                r.channel,
                short(&r.build_id),
                short(&r.baseline_id),
                r.step + 1,
                r.steps.len(),
                r.percent(),
                clean(&r.note)
            )
        })
        .collect()
}

/// What one pass of the controller did.
pub fn tick(steps: &[Step]) -> Vec<String> {
    if steps.is_empty() {
        return vec!["no running rollout".into()];
    }
    steps
        .iter()
        .map(|s| {
            format!(
                "rollout {} on {}: {} at step {} ({} %): {}",
                s.rollout,
                s.channel,
                super::pass_word(s.action),
                s.step + 1,
                s.percent,
                clean(&s.note)
            )
        })
        .collect()
}
