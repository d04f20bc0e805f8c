//! A hands-free train where the channel's policy allows it: a build green on the channel below
//! (its build there for `soak`, over `min_sessions` sessions) starts its own rollout, and an
//! operator's approval is asked before the steps the policy names (`approve_before`). Without
//! `auto_after` nothing starts by itself; the gate decides every start.

use super::controller::{StartRequest, Which, find, start};
use super::{Action, EventKind, RolloutPolicy};
use crate::error::Result;
use crate::gate::ops::{Actor, Outcome};
use crate::gate::policy::Policy;
use crate::registry::{Audit, Registry, RolloutRow, Transition};
use canary_contract::{BuildId, Channel};
use std::collections::BTreeSet;
use std::time::Duration;

fn approved(events: &[crate::registry::RolloutEvent], step: usize) -> bool {
    events
        .iter()
        .any(|e| e.kind == EventKind::Approve && e.figures["step"].as_u64() == Some(step as u64))
}

/// An advance into a step the policy gates on an approval nobody gave yet becomes a hold that
/// says how to give it.
pub async fn gate_on_approval(reg: &Registry, rp: &RolloutPolicy, r: &RolloutRow, action: Action) -> Result<Action> {
    let Action::Advance { to_step } = action else {
        return Ok(action);
    };
    let percent = r.steps.get(to_step).copied().unwrap_or(100.0);
    if !rp.approve_before.contains(&percent) || approved(&reg.rollout_events(r.id).await?, to_step) {
        return Ok(action);
    }
    Ok(Action::Hold(vec![format!(
        "awaiting an operator's approval to go to {percent} % (step {} of {}): `canary rollout approve --channel {}`",
        to_step + 1,
        r.steps.len(),
        r.channel
    )]))
}

/// `canary rollout approve`: lets the rollout enter its next step, which its channel's policy
/// gates on an approval; audited.
pub async fn approve(reg: &Registry, policy: &Policy, which: Which<'_>, who: Actor<'_>) -> Result<Outcome<RolloutRow>> {
    let r = find(reg, which).await?;
    let rp = policy
        .channels
        .get(&r.channel)
        .map(|c| c.rollout.clone())
        .unwrap_or_default();
    let next = r.step + 1;
    let refuse = |why: String| Ok(Outcome::Refused(vec![why]));
    if !r.state.active() {
        return refuse(format!(
            "rollout {} is {}: there is nothing to approve",
            r.id,
            r.state.as_str()
        ));
    }
    let Some(percent) = r.steps.get(next).copied() else {
        return refuse(format!(
            "rollout {} is at its last step: there is nothing to approve",
            r.id
        ));
    };
    if !rp.approve_before.contains(&percent) {
        return refuse(format!(
            "step {} of rollout {} ({percent} %) needs no approval under {}",
            next + 1,
            r.id,
            policy.source
        ));
    }
    if approved(&reg.rollout_events(r.id).await?, next) {
        return refuse(format!("step {} of rollout {} is already approved", next + 1, r.id));
    }
    let note = format!(
        "approved by {}: step {} ({percent} %) starts once step {} has baked healthy",
        who.name,
        next + 1,
        r.step + 1
    );
    let applied = reg
        .transition(Transition {
            id: r.id,
            revision: r.revision,
            state: r.state,
            step: r.step,
            ring: r.ring,
            restart_step: false,
            note: &note,
            kind: EventKind::Approve,
            figures: serde_json::json!({"step": next, "percent": percent}),
            release: false,
            audit: Audit {
                actor: who.name,
                action: "rollout approve",
                target: &format!("rollout {} ({} -> {})", r.id, r.build_id, r.channel),
                decision: "approved",
                reason: who.reason,
                evidence: serde_json::json!({"step": next, "percent": percent}),
            },
        })
        .await?;
    if !applied {
        return refuse(format!(
            "rollout {} changed while this command ran; look at `canary rollout status` and try again",
            r.id
        ));
    }
    Ok(Outcome::Done(reg.rollout(r.id).await?.expect("exists")))
}

/// Why a channel's train does not start a rollout now, or the build it starts.
async fn due(
    reg: &Registry,
    channel: &Channel,
    rp: &RolloutPolicy,
    now: jiff::Timestamp,
) -> Result<Option<(BuildId, String)>> {
    let Some(t) = &rp.auto_after else {
        return Ok(None);
    };
    let Some(below) = reg.known_good(&t.channel).await?.into_iter().next() else {
        return Ok(None);
    };
    let here = reg.known_good(channel).await?.into_iter().next();
    if here.is_some_and(|h| h.build_id == below.build_id) {
        return Ok(None);
    }
    // A build rolled out here before (aborted, say) is not tried again by itself.
    let tried = reg
        .rollouts(false, 1000)
        .await?
        .into_iter()
        .any(|r| r.channel == *channel && (r.state.active() || r.build_id == below.build_id));
    if tried {
        return Ok(None);
    }
    let Ok(since) = below.released_at.parse::<jiff::Timestamp>() else {
        return Ok(None);
    };
    let soaked = Duration::try_from(now.duration_since(since)).unwrap_or(Duration::ZERO);
    if soaked < t.soak {
        return Ok(None);
    }
    let sessions = reg
        .figures(&below.build_id, None, &crate::registry::rollup_second(since))
        .await?
        .sessions;
    if sessions < t.min_sessions {
        return Ok(None);
    }
    let why = format!(
        "green on {} for {} over {sessions} sessions (auto_after: soak {}, min_sessions {})",
        t.channel,
        humantime::format_duration(Duration::from_secs(soaked.as_secs())),
        humantime::format_duration(t.soak),
        t.min_sessions
    );
    Ok(Some((below.build_id, why)))
}

/// One pass of the train over every channel whose policy has `auto_after`: starts the rollouts
/// that are due, under the gate. A build the gate refuses is remembered in `refused` (and
/// audited once by the start), so it is not asked about again every pass.
pub async fn train(
    reg: &Registry,
    policy: &Policy,
    repos: &[String],
    now: jiff::Timestamp,
    refused: &mut BTreeSet<(Channel, BuildId)>,
) -> Result<Vec<String>> {
    let mut said = Vec::new();
    for (channel, c) in &policy.channels {
        let Some((build, why)) = due(reg, channel, &c.rollout, now).await? else {
            continue;
        };
        if refused.contains(&(channel.clone(), build.clone())) {
            continue;
        }
        let req = StartRequest {
            build: build.as_str(),
            channel,
            steps: None,
            bake: None,
            min_sessions: None,
        };
        let who = Actor {
            name: "rollout-train",
            reason: &why,
        };
        match start(reg, policy, repos, &req, who).await? {
            Outcome::Done(r) => said.push(format!(
                "rollout {} of {} to {channel} started: {why}",
                r.id, r.build_id
            )),
            Outcome::Refused(reasons) => {
                said.push(format!(
                    "{build} is not rolled out to {channel}: {}",
                    reasons.join("; ")
                ));
                refused.insert((channel.clone(), build));
            }
        }
    }
    Ok(said)
}
