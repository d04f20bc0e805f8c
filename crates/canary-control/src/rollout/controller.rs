//! The rollout controller over the registry: start (under the gate), one pass of judging every
//! running rollout (`tick`, which `canary serve` runs on a timer), pause, resume, abort. Every
//! transition is conditional on the revision it was decided from, so a controller restarted
//! after `kill -9`, or two of them, never makes one twice.

use super::{Action, EventKind, Judgement, RolloutPolicy, State, judge, next_action, pass_word};
use crate::error::{LabError, Result};
use crate::gate::ops::{Actor, Outcome, Promotion};
use crate::gate::policy::Policy;
use crate::registry::{Audit, Registry, RolloutRow, Transition, rollup_second};
use canary_contract::Channel;
use std::time::Duration;

/// A request to roll a build out to a channel.
pub struct StartRequest<'a> {
    pub build: &'a str,
    pub channel: &'a Channel,
    /// Overrides of the channel's `rollout:` policy.
    pub steps: Option<Vec<f64>>,
    pub bake: Option<Duration>,
    pub min_sessions: Option<u64>,
}

impl StartRequest<'_> {
    /// Refuses a channel the policy does not name or steps that are not a rollout's, before
    /// the registry is opened.
    pub fn check(&self, policy: &Policy) -> Result<()> {
        policy.channel(self.channel)?;
        if let Some(s) = &self.steps {
            crate::rollout::RolloutPolicy::check_steps(s)
                .map_err(|e| crate::error::LabError::usage(format!("--steps: {e}"), "e.g. --steps 1,10,50,100"))?;
        }
        Ok(())
    }
}

impl StartRequest<'_> {
    /// The channel's rollout policy with this request's steps, bake and sample size, checked.
    fn policy(&self, policy: &Policy) -> Result<RolloutPolicy> {
        let mut rp = policy.channel(self.channel)?.rollout.clone();
        if let Some(s) = &self.steps {
            rp.steps = s.clone();
        }
        if let Some(b) = self.bake {
            rp.bake = b;
        }
        if let Some(m) = self.min_sessions {
            rp.min_sessions = m;
        }
        rp.check()
            .map_err(|e| LabError::usage(format!("rollout: {e}"), "e.g. --steps 1,10,50,100 --min-sessions 200"))?;
        Ok(rp)
    }
}

/// The channel's current build, which a rollout of `build` is compared with; `Err` says why
/// there can be no rollout (no build yet, one in progress, the build already there).
async fn baseline(
    reg: &Registry,
    channel: &Channel,
    build: &canary_contract::BuildId,
) -> Result<std::result::Result<canary_contract::BuildId, String>> {
    let Some(baseline) = reg.known_good(channel).await?.first().map(|r| r.build_id.clone()) else {
        return Ok(Err(format!(
            "channel {} has no build yet, so there is no baseline to compare with: promote a first build with `canary promote`",
            channel
        )));
    };
    if let Some(r) = reg
        .rollouts(true, 100)
        .await?
        .into_iter()
        .find(|r| r.channel == *channel)
    {
        return Ok(Err(format!(
            "channel {} has rollout {} in progress ({}): finish or abort it first",
            channel,
            r.id,
            r.state.as_str()
        )));
    }
    if baseline == *build {
        return Ok(Err(format!("the build is already channel {channel}'s build")));
    }
    Ok(Ok(baseline))
}

/// A new rollout at its first step.
fn new_row(
    channel: &str,
    build: &canary_contract::BuildId,
    baseline: &canary_contract::BuildId,
    rp: &RolloutPolicy,
    actor: &str,
) -> Result<RolloutRow> {
    Ok(RolloutRow {
        id: 0,
        channel: channel
            .parse()
            .map_err(|e: String| crate::error::LabError::usage(e, "e.g. --channel stable"))?,
        build_id: build.clone(),
        baseline_id: baseline.clone(),
        steps: rp.steps.clone(),
        step: 0,
        state: State::Running,
        bake_ms: rp.bake.as_millis() as i64,
        min_sessions: rp.min_sessions as i64,
        started_at: String::new(),
        step_started_at: String::new(),
        updated_at: String::new(),
        revision: 1,
        note: match rp.rings.first() {
            None => format!("step 1 of {}: {} % of sessions", rp.steps.len(), rp.steps[0]),
            Some(first) => format!(
                "ring 1 of {} ({}), step 1 of {}: {} % of sessions",
                rp.rings.len() + 1,
                first.name,
                rp.steps.len(),
                rp.steps[0]
            ),
        },
        actor: actor.to_string(),
        cohort_key: rp.cohort_key,
        ring: 0,
        rings: rp.rings.clone(),
    })
}

/// Starts a rollout of a build the gate accepts for the channel, against the channel's current
/// build. A build the gate refuses is refused here too, audited.
pub async fn start(
    reg: &Registry,
    policy: &Policy,
    all_repos: &[String],
    req: &StartRequest<'_>,
    who: Actor<'_>,
) -> Result<Outcome<RolloutRow>> {
    crate::gate::ops::check_name("channel", req.channel)?;
    let rp = req.policy(policy)?;
    let build = reg.resolve_build(req.build).await?;
    let target = format!("{build} -> {}", req.channel);
    let refuse = |reason: String| async {
        reg.audit(Audit {
            actor: who.name,
            action: "rollout start",
            target: &target,
            decision: "refused",
            reason: &reason,
            evidence: serde_json::json!({}),
        })
        .await?;
        Ok::<_, LabError>(Outcome::Refused(vec![reason]))
    };
    let baseline = match baseline(reg, req.channel, &build).await? {
        Ok(b) => b,
        Err(why) => return refuse(why).await,
    };
    let (_, decision) = crate::gate::ops::promote(
        reg,
        policy,
        all_repos,
        &Promotion {
            build: &build,
            channel: req.channel,
            bundles: &[],
            dry_run: true,
            actor: who.name,
            reason: who.reason,
        },
    )
    .await?;
    if !decision.allowed {
        reg.audit(Audit {
            actor: who.name,
            action: "rollout start",
            target: &target,
            decision: "blocked",
            reason: &decision.unmet.join("; "),
            evidence: serde_json::to_value(&decision).expect("json"),
        })
        .await?;
        return Ok(Outcome::Refused(decision.unmet));
    }
    let row = new_row(req.channel, &build, &baseline, &rp, who.name)?;
    let figures = serde_json::json!({"policy": rp, "gate": decision});
    let reason = if who.reason.is_empty() {
        format!("green under {}", policy.source)
    } else {
        who.reason.to_string()
    };
    let id = reg
        .create_rollout(
            &row,
            figures.clone(),
            Audit {
                actor: who.name,
                action: "rollout start",
                target: &target,
                decision: "started",
                reason: &reason,
                evidence: figures,
            },
        )
        .await?;
    Ok(Outcome::Done(reg.rollout(id).await?.expect("just created")))
}

/// The policy a stored rollout is judged by: the channel's thresholds with the rollout's own
/// steps, bake and sample size.
fn policy_of(policy: &Policy, r: &RolloutRow) -> RolloutPolicy {
    let mut rp = policy
        .channels
        .get(&r.channel)
        .map(|c| c.rollout.clone())
        .unwrap_or_default();
    rp.steps = r.steps.clone();
    rp.bake = Duration::from_millis(r.bake_ms.max(0) as u64);
    rp.min_sessions = r.min_sessions.max(1) as u64;
    rp
}

fn second_of(ts: &str) -> String {
    ts.parse::<jiff::Timestamp>()
        .map(rollup_second)
        .unwrap_or_else(|_| ts.chars().take(19).collect())
}

/// Judges a rollout's current step at `now`: the candidate's sessions against the baseline's
/// of the same orgs (the rollout's cohort: its current ring, without pinned or frozen orgs) over
/// the same window, the step's (a provider incident or the time of day moves both sides
/// alike), with the sample-ratio guard's counts over that window less its settle time. A step
/// of 100 % leaves no baseline running beside the candidate (frozen orgs aside): there the
/// baseline is its sessions since the rollout started, the last it ran.
pub async fn judge_rollout(reg: &Registry, policy: &Policy, r: &RolloutRow, now: jiff::Timestamp) -> Result<Judgement> {
    let rp = policy_of(policy, r);
    let step_start = second_of(&r.step_started_at);
    let baseline_since = if r.percent() >= 100.0 {
        second_of(&r.started_at)
    } else {
        step_start.clone()
    };
    let settled = rollup_second(now - jiff::SignedDuration::try_from(rp.sample_ratio.settle).unwrap_or_default());
    // Both sides from the orgs the rollout is judging: its cohort's sessions only.
    let cohort = crate::rollout::cohort_label(r.id, r.ring);
    let c = Some(cohort.as_str());
    let (mut candidate, mut baseline, c_arm, b_arm) = tokio::try_join!(
        reg.figures(&r.build_id, c, &step_start),
        reg.figures(&r.baseline_id, c, &baseline_since),
        reg.assigned_and_reported(&r.build_id, c, &step_start, &settled),
        reg.assigned_and_reported(&r.baseline_id, c, &step_start, &settled),
    )?;
    (candidate.assigned, candidate.reported) = c_arm;
    (baseline.assigned, baseline.reported) = b_arm;
    if !rp.guardrails.is_empty() {
        tokio::try_join!(
            reg.add_guardrail_sums(&mut candidate, &r.build_id, c, &step_start),
            reg.add_guardrail_sums(&mut baseline, &r.baseline_id, c, &baseline_since),
        )?;
    }
    Ok(judge(&rp, &candidate, &baseline))
}

/// What one pass did to one rollout.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Step {
    pub rollout: i64,
    pub channel: canary_contract::Channel,
    /// The kind of event the pass's action makes; `None`: it waits (written as `wait`).
    #[serde(serialize_with = "action_word")]
    pub action: Option<EventKind>,
    pub step: usize,
    pub ring: usize,
    pub percent: f64,
    pub note: String,
    /// Whether a transition was written (false for waits, repeated holds, and lost races).
    pub changed: bool,
}

fn action_word<S: serde::Serializer>(action: &Option<EventKind>, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(pass_word(*action))
}

/// What an action writes.
struct Plan {
    /// The event the pass makes; `None` for a wait, which writes nothing.
    kind: Option<EventKind>,
    state: State,
    step: usize,
    ring: usize,
    note: String,
    /// The channel is released to the build.
    release: bool,
    /// The step's clock restarts.
    restart: bool,
}

/// Where a rollout stands, in words: its ring (when it has rings), step and share.
fn place(r: &RolloutRow, ring: usize, step: usize) -> String {
    let at = format!(
        "step {} of {}: {} % of sessions",
        step + 1,
        r.steps.len(),
        r.steps.get(step).copied().unwrap_or(100.0)
    );
    if r.rings.is_empty() {
        at
    } else {
        let name = super::ring_name(&r.rings, ring);
        format!("ring {} of {} ({name}), {at}", ring + 1, r.rings.len() + 1)
    }
}

fn planned(action: &Action, r: &RolloutRow) -> Plan {
    let stay = |kind, state, note| Plan {
        kind,
        state,
        step: r.step,
        ring: r.ring,
        note,
        release: false,
        restart: false,
    };
    match action {
        Action::Wait(why) => stay(None, State::Running, why.clone()),
        Action::Hold(why) => stay(
            Some(EventKind::Hold),
            State::Running,
            format!("holding: {}", why.join("; ")),
        ),
        Action::Advance { to_step } => Plan {
            step: *to_step,
            restart: true,
            ..stay(Some(EventKind::Advance), State::Running, place(r, r.ring, *to_step))
        },
        Action::NextRing { ring } => Plan {
            step: 0,
            ring: *ring,
            restart: true,
            ..stay(Some(EventKind::Advance), State::Running, place(r, *ring, 0))
        },
        Action::Complete => Plan {
            release: true,
            ..stay(
                Some(EventKind::Complete),
                State::Completed,
                format!("completed: the build is channel {}'s build", r.channel),
            )
        },
        Action::Abort(why) => stay(
            Some(EventKind::Abort),
            State::Aborted,
            format!("aborted: {}", why.join("; ")),
        ),
    }
}

/// The last step of a ring, passed, starts the next ring when there is one.
fn next_ring(action: Action, r: &RolloutRow) -> Action {
    match action {
        Action::Complete if r.ring < r.rings.len() => Action::NextRing { ring: r.ring + 1 },
        other => other,
    }
}

/// One pass of the controller over every running rollout at `now`.
pub async fn tick(reg: &Registry, policy: &Policy, now: jiff::Timestamp) -> Result<Vec<Step>> {
    let mut out = Vec::new();
    for r in reg.rollouts(true, 100).await? {
        if r.state != State::Running {
            continue;
        }
        let j = judge_rollout(reg, policy, &r, now).await?;
        let started: jiff::Timestamp = r.step_started_at.parse().unwrap_or(now);
        let elapsed = Duration::try_from(now.duration_since(started)).unwrap_or(Duration::ZERO);
        let rp = policy_of(policy, &r);
        let action = next_action(&j, r.step, r.steps.len(), elapsed, rp.bake);
        let action = super::train::gate_on_approval(reg, &rp, &r, next_ring(action, &r)).await?;
        let figures = serde_json::to_value(&j).expect("json");
        let target = format!("rollout {} ({} -> {})", r.id, r.build_id, r.channel);
        let Plan {
            kind,
            state,
            step,
            ring,
            note,
            release,
            restart,
        } = planned(&action, &r);
        // A wait changes nothing. A hold is an event once per reason; while it lasts, only the
        // note's figures are kept current (no event, no audit entry on every pass).
        let shape = |n: &str| n.chars().filter(|c| !c.is_ascii_digit()).collect::<String>();
        let event = match kind {
            Some(EventKind::Hold) if shape(&r.note) == shape(&note) => {
                if r.note != note {
                    reg.rollout_note(r.id, r.revision, &note).await?;
                }
                None
            }
            other => other,
        };
        let mut changed = false;
        if let Some(event) = event {
            let decision = match event {
                EventKind::Abort => "rolled back",
                EventKind::Hold => "held",
                other => other.as_str(),
            };
            changed = reg
                .transition(Transition {
                    id: r.id,
                    revision: r.revision,
                    state,
                    step,
                    ring,
                    restart_step: restart,
                    note: &note,
                    kind: event,
                    figures: figures.clone(),
                    release,
                    audit: Audit {
                        actor: "rollout-controller",
                        action: "rollout",
                        target: &target,
                        decision,
                        reason: &note,
                        evidence: figures,
                    },
                })
                .await?;
        }
        out.push(Step {
            rollout: r.id,
            channel: r.channel.clone(),
            action: kind,
            step,
            ring,
            percent: r.steps.get(step).copied().unwrap_or(100.0),
            note,
            changed,
        });
    }
    Ok(out)
}

/// An operator's transition: pause, resume or abort the active rollout of a channel (or by id).
pub async fn operate(reg: &Registry, which: Which<'_>, op: Op, who: Actor<'_>) -> Result<Outcome<RolloutRow>> {
    let r = find(reg, which).await?;
    let (ok_from, state, kind) = match op {
        Op::Pause => (State::Running, State::Paused, EventKind::Pause),
        Op::Resume => (State::Paused, State::Running, EventKind::Resume),
        Op::Abort => (r.state, State::Aborted, EventKind::Abort),
    };
    if !r.state.active() || r.state != ok_from {
        let done = match op {
            Op::Pause => "paused",
            Op::Resume => "resumed",
            Op::Abort => "aborted",
        };
        return Ok(Outcome::Refused(vec![format!(
            "rollout {} is {}, so it cannot be {done}",
            r.id,
            r.state.as_str(),
        )]));
    }
    let note = match op {
        Op::Pause => format!("paused by {}: {}", who.name, who.reason),
        Op::Resume => format!("resumed: step {} of {}", r.step + 1, r.steps.len()),
        Op::Abort => format!("aborted by {}: {}", who.name, who.reason),
    };
    let applied = reg
        .transition(Transition {
            id: r.id,
            revision: r.revision,
            state,
            step: r.step,
            ring: r.ring,
            // A resumed step bakes again from the start: the pause may have hidden a problem.
            restart_step: op == Op::Resume,
            note: &note,
            kind,
            figures: serde_json::json!({}),
            release: false,
            audit: Audit {
                actor: who.name,
                action: &format!("rollout {kind}"),
                target: &format!("rollout {} ({} -> {})", r.id, r.build_id, r.channel),
                decision: "done",
                reason: who.reason,
                evidence: serde_json::json!({}),
            },
        })
        .await?;
    if !applied {
        return Ok(Outcome::Refused(vec![format!(
            "rollout {} changed while this command ran; look at `canary rollout status` and try again",
            r.id
        )]));
    }
    Ok(Outcome::Done(reg.rollout(r.id).await?.expect("exists")))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Pause,
    Resume,
    Abort,
}

#[derive(Debug, Clone, Copy)]
pub enum Which<'a> {
    Id(i64),
    /// The channel's active rollout, or its latest one.
    Channel(&'a str),
    Latest,
}

/// A rollout as `canary rollout status` shows it: the value `--json` prints, its lines, and
/// whether it was aborted.
pub struct Status {
    pub value: serde_json::Value,
    pub lines: Vec<String>,
    pub aborted: bool,
}

/// The rollout `which` names, judged now on the registry's telemetry, with its timeline and
/// where its candidate was published.
pub async fn status(reg: &Registry, policy: &Policy, which: Which<'_>) -> Result<Status> {
    let r = find(reg, which).await?;
    let judgement = judge_rollout(reg, policy, &r, jiff::Timestamp::now()).await?;
    let events = reg.rollout_events(r.id).await?;
    let pushed = reg.pushed_ref(&r.build_id).await?.map(|p| p.to_string());
    let mut lines = super::view::status(&r, &judgement, &events);
    if let Some(p) = &pushed {
        let line = format!("  candidate published as {}", canary_contract::text::clean(p));
        lines.insert(1.min(lines.len()), line);
    }
    Ok(Status {
        aborted: r.state == State::Aborted,
        value: serde_json::json!({"rollout": r, "percent": r.percent(), "pushed": pushed, "now": judgement, "events": events}),
        lines,
    })
}

pub async fn find(reg: &Registry, which: Which<'_>) -> Result<RolloutRow> {
    let found = match which {
        Which::Id(id) => reg.rollout(id).await?,
        Which::Channel(c) => {
            let all = reg.rollouts(false, 1000).await?;
            let active = all.iter().find(|r| r.channel == c && r.state.active()).cloned();
            active.or_else(|| all.into_iter().find(|r| r.channel == c))
        }
        Which::Latest => reg.rollouts(false, 1).await?.into_iter().next(),
    };
    found.ok_or_else(|| {
        LabError::usage(
            match which {
                Which::Id(id) => format!("no rollout {id}"),
                Which::Channel(c) => format!("no rollout on channel {}", crate::text::clean(c)),
                Which::Latest => "no rollout yet".into(),
            },
            "`canary rollout list` shows the rollouts; `canary rollout start BUILD --channel C` starts one",
        )
    })
}

/// Keeps an org out of every rollout (its sessions run their channel's current build), or lets
/// it take part again; audited. Whether anything changed.
pub async fn freeze(reg: &Registry, org: &str, frozen: bool, who: Actor<'_>) -> Result<Frozen> {
    crate::gate::ops::check_name("org", org)?;
    let audit = crate::registry::Audit {
        actor: who.name,
        action: if frozen { "freeze" } else { "unfreeze" },
        target: &format!("org {org}"),
        decision: "done",
        reason: who.reason,
        evidence: serde_json::json!({}),
    };
    let changed = reg.set_freeze(org, frozen, who.reason, audit).await?;
    Ok(Frozen {
        org: org.to_string(),
        frozen,
        changed,
    })
}

/// An org kept out of rollouts, or let back in; `changed` is false when it already was so.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Frozen {
    pub org: String,
    pub frozen: bool,
    pub changed: bool,
}

impl Frozen {
    pub fn lines(&self) -> Vec<String> {
        vec![if self.frozen {
            format!(
                "org {} is kept out of every rollout: its sessions run their channel's current build",
                self.org
            )
        } else {
            format!("org {} takes part in rollouts again", self.org)
        }]
    }
}
