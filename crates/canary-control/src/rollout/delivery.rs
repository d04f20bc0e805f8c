//! Rollout alerts, delivered: each pass scans new rollout events into the registry's outbox
//! (the channel's `alerts:` says where and how), raises a long hold's alert once, and posts what
//! is due, one attempt each, backing off after a failure. Everything is in the registry, so a
//! control plane killed with `kill -9` goes on where it was.

use super::alerts::{self, Alert, Alerts, Subject};
use crate::error::Result;
use crate::gate::policy::Policy;
use crate::registry::{AlertRow, EventOfRollout, NewAlert, Registry, RolloutRow};
use std::time::Duration;

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pumped {
    pub queued: usize,
    pub delivered: usize,
    pub failed: usize,
}

fn channel_alerts<'a>(policy: &'a Policy, channel: &canary_contract::Channel) -> Option<&'a Alerts> {
    policy.channels.get(channel)?.rollout.alerts.as_ref()
}

fn reasons(figures: &serde_json::Value) -> Vec<String> {
    figures["reasons"]
        .as_array()
        .map(|r| r.iter().filter_map(|x| x.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

fn queued(e: &EventOfRollout, alert: Alert, to: &Alerts) -> NewAlert {
    let subject = Subject {
        event: e.event.id,
        rollout: e.rollout,
        channel: &e.channel,
        build: &e.build,
        baseline: &e.baseline,
        step: e.event.step.unwrap_or(0).max(0) as usize,
        steps: &e.steps,
        at: &e.event.ts,
        actor: &e.event.actor,
        reasons: reasons(&e.event.figures),
    };
    NewAlert {
        event_id: e.event.id,
        alert: alert.as_str().to_string(),
        url: to.webhook.clone(),
        body: alerts::body(to.format, alert, &subject),
    }
}

/// Queues the alerts of the events since the last scan.
async fn scan(reg: &Registry, policy: &Policy) -> Result<usize> {
    let events = reg.events_to_scan(500).await?;
    let Some(last) = events.last().map(|e| e.event.id) else {
        return Ok(0);
    };
    let new: Vec<NewAlert> = events
        .iter()
        .filter_map(|e| {
            let to = channel_alerts(policy, &e.channel)?;
            let alert = alerts::alert_for(e.event.kind, &e.event.figures)?;
            Some(queued(e, alert, to))
        })
        .collect();
    reg.queue_alerts(&new, Some(last)).await?;
    Ok(new.len())
}

/// Queues the alert of a hold that has lasted the channel's `held_after` (once per hold: the
/// outbox keeps one alert per event).
async fn long_holds(reg: &Registry, policy: &Policy, now: jiff::Timestamp) -> Result<usize> {
    let mut new = Vec::new();
    for r in reg.rollouts(true, 100).await? {
        let Some(to) = channel_alerts(policy, &r.channel) else {
            continue;
        };
        if r.state != super::State::Running || !r.note.starts_with("holding") {
            continue;
        }
        let Some(hold) = reg
            .rollout_events(r.id)
            .await?
            .pop()
            .filter(|e| e.kind == super::EventKind::Hold)
        else {
            continue;
        };
        let since: jiff::Timestamp = hold.ts.parse().unwrap_or(now);
        if Duration::try_from(now.duration_since(since)).unwrap_or(Duration::ZERO) < to.held_after {
            continue;
        }
        new.push(queued(&of_rollout(&r, hold), Alert::Held, to));
    }
    let n = new.len();
    if n > 0 {
        reg.queue_alerts(&new, None).await?;
    }
    Ok(n)
}

fn of_rollout(r: &RolloutRow, event: crate::registry::RolloutEvent) -> EventOfRollout {
    EventOfRollout {
        event,
        rollout: r.id,
        channel: r.channel.clone(),
        build: r.build_id.clone(),
        baseline: r.baseline_id.clone(),
        steps: r.steps.clone(),
    }
}

/// One delivery attempt.
async fn deliver(reg: &Registry, a: &AlertRow, now: jiff::Timestamp) -> Result<bool> {
    let body: serde_json::Value = serde_json::from_str(&a.body).unwrap_or(serde_json::Value::Null);
    let outcome = crate::webhook::post_once(&a.url, &body, Duration::from_secs(10)).await;
    let ok = outcome.is_ok();
    let retry_at = alerts::retry_after(a.attempts.max(0) as u32 + 1)
        .and_then(|d| jiff::SignedDuration::try_from(d).ok())
        .map(|d| now + d);
    reg.alert_attempted(a, outcome, retry_at).await?;
    Ok(ok)
}

/// One pass: scan, long holds, deliveries due at `now`.
pub async fn pump(reg: &Registry, policy: &Policy, now: jiff::Timestamp) -> Result<Pumped> {
    let mut p = Pumped {
        queued: scan(reg, policy).await? + long_holds(reg, policy, now).await?,
        ..Pumped::default()
    };
    for a in reg.due_alerts(now, 20).await? {
        if deliver(reg, &a, now).await? {
            p.delivered += 1;
        } else {
            p.failed += 1;
        }
    }
    Ok(p)
}

/// Runs the alert passes every `every` until the task is aborted.
pub async fn run(
    reg: std::sync::Arc<Registry>,
    policy: Policy,
    every: Duration,
    replica: std::sync::Arc<crate::replica::Replica>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // One replica delivers: the controller lease's holder, so no alert goes out twice.
        if !replica.leading() {
            continue;
        }
        match pump(&reg, &policy, jiff::Timestamp::now()).await {
            Ok(p) if p.failed > 0 => eprintln!(
                "canary serve: rollout alerts: {} delivered, {} failed (tried again later)",
                p.delivered, p.failed
            ),
            Ok(_) => {}
            Err(e) => eprintln!("canary serve: rollout alerts: {e} (retrying)"),
        }
    }
}
