//! Staged rollouts: which build a session runs, and whether a rollout step may advance. Pure
//! functions over figures the registry sums up, so every rule is testable without a database or
//! a fleet; the `canary` crate's controller applies them to the registry, `canary serve` runs it.

pub mod alerts;
pub mod guardrails;
#[cfg(test)]
mod simulation;
pub mod stats;

use canary_contract::oci::PushedRef;
use canary_contract::{BuildId, Channel};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Buckets a session id falls into: a step of `p` % takes the buckets below `p × 100`.
pub const BUCKETS: u32 = 10_000;

/// The bucket of a session id: stable across processes, versions and machines (SHA-256).
pub fn bucket(session: &str) -> u32 {
    use sha2::Digest;
    let d = sha2::Sha256::digest(session.as_bytes());
    let mut head = [0u8; 8];
    head.copy_from_slice(&d[..8]);
    (u64::from_be_bytes(head) % BUCKETS as u64) as u32
}

/// Whether a session belongs to the cohort of a step of `percent` %.
pub fn in_cohort(session: &str, percent: f64) -> bool {
    bucket(session) < basis_points(percent)
}

fn basis_points(percent: f64) -> u32 {
    (percent.clamp(0.0, 100.0) * 100.0).round() as u32
}

/// One ring of a rollout: orgs that go through the steps together, before the next ring.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ring {
    pub name: String,
    pub orgs: BTreeSet<String>,
}

/// The ring an org is in: its position among `rings`, or `rings.len()` (everyone else) when it
/// is in none.
pub fn ring_of(rings: &[Ring], org: &str) -> usize {
    rings.iter().position(|r| r.orgs.contains(org)).unwrap_or(rings.len())
}

/// A ring's name: its own, or `everyone else` for the last.
pub fn ring_name(rings: &[Ring], ring: usize) -> &str {
    rings.get(ring).map_or("everyone else", |r| r.name.as_str())
}

/// What a rollout's cohorts are drawn by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CohortKey {
    /// Each session on its own.
    Session,
    /// A session's conversation when it names one (its session otherwise): every turn of a
    /// conversation is in the same cohort, and one resumed at a later step keeps its build.
    #[default]
    Conversation,
    /// The whole org at once.
    Org,
}

impl CohortKey {
    pub fn as_str(self) -> &'static str {
        match self {
            CohortKey::Session => "session",
            CohortKey::Conversation => "conversation",
            CohortKey::Org => "org",
        }
    }
}

impl std::str::FromStr for CohortKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [CohortKey::Session, CohortKey::Conversation, CohortKey::Org]
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "`{}` is not session, conversation or org",
                    canary_contract::text::clean(s)
                )
            })
    }
}

/// How a channel's rollouts are run and judged (`rollout:` under a channel in gate.yaml).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RolloutPolicy {
    /// Cohort percentages, increasing, the last 100.
    pub steps: Vec<f64>,
    /// How long a step must look healthy before the next one.
    #[serde(with = "humantime_serde_ms")]
    pub bake: Duration,
    /// Sessions each side (candidate, baseline) needs before a step is judged at all.
    pub min_sessions: u64,
    /// How much the candidate's failure rate may exceed the baseline's (absolute, 0.02 = 2 points).
    pub max_failure_rate_increase: f64,
    /// The same for the disconnect rate.
    pub max_disconnect_rate_increase: f64,
    /// The candidate's p95 session start latency may be at most this times the baseline's.
    pub max_start_latency_p95_ratio: f64,
    /// Confidence of the always-valid intervals the rates are compared with (0.95: 95 %): at
    /// every look at once, so the controller may look as often as it likes.
    pub confidence: f64,
    /// The standard deviation of the mixing normal of the sequential test (see [`stats`]): the
    /// size of rate difference it is tuned to decide fastest on. `None`: each rate's allowed
    /// increase (at least half a point), the difference a decision turns on.
    pub mixture_sd: Option<f64>,
    /// The sample-ratio guard: whether the candidate's share of the sessions reported is the
    /// share it was assigned.
    pub sample_ratio: SampleRatio,
    /// Where transitions are told about; `None`: nowhere.
    pub alerts: Option<alerts::Alerts>,
    /// Guardrails beyond the failure rate, disconnect rate and p95 start latency above.
    pub guardrails: Vec<guardrails::Guardrail>,
    /// What cohorts are drawn by.
    pub cohort_key: CohortKey,
    /// Step percentages an operator must approve before the rollout enters them
    /// (`canary rollout approve`).
    pub approve_before: Vec<f64>,
    /// When set, a build green on the channel below starts its own rollout here.
    pub auto_after: Option<Train>,
    /// Org groups that go through the steps one after another; orgs in none go last.
    pub rings: Vec<Ring>,
}

/// `auto_after:` a build that has been the channel below's for `soak`, over at least
/// `min_sessions` sessions there, starts its own rollout on this channel (the gate still
/// decides).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Train {
    pub channel: Channel,
    #[serde(with = "humantime_serde_ms")]
    pub soak: Duration,
    pub min_sessions: u64,
}

/// What the controller does when the candidate's share of reported sessions is not the share
/// it was assigned (its runners drop or hand back sessions, so the comparison is biased).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MismatchAction {
    /// Hold the step and say why (the default).
    Hold,
    /// Abort the rollout.
    Abort,
    /// Say so in the note and judge the step anyway.
    Warn,
}

impl std::str::FromStr for MismatchAction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "hold" => Ok(MismatchAction::Hold),
            "abort" => Ok(MismatchAction::Abort),
            "warn" => Ok(MismatchAction::Warn),
            other => Err(format!(
                "`{}` is not hold, abort or warn",
                canary_contract::text::clean(other)
            )),
        }
    }
}

/// The sample-ratio guard's settings (`sample_ratio:` in a channel's `rollout:`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SampleRatio {
    pub action: MismatchAction,
    /// Level of the always-valid test (0.001: a false alarm in at most one rollout step in a
    /// thousand, however often it is looked at).
    pub alpha: f64,
    /// Sessions assigned this recently are not counted yet: they may still be running.
    #[serde(with = "humantime_serde_ms")]
    pub settle: Duration,
}

impl Default for SampleRatio {
    fn default() -> Self {
        SampleRatio {
            action: MismatchAction::Hold,
            alpha: 0.001,
            settle: Duration::from_secs(60),
        }
    }
}

mod humantime_serde_ms {
    pub fn serialize<S: serde::Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}

impl Default for RolloutPolicy {
    fn default() -> Self {
        RolloutPolicy {
            steps: vec![1.0, 10.0, 50.0, 100.0],
            bake: Duration::from_secs(600),
            min_sessions: 200,
            max_failure_rate_increase: 0.02,
            max_disconnect_rate_increase: 0.02,
            max_start_latency_p95_ratio: 1.5,
            confidence: 0.95,
            mixture_sd: None,
            sample_ratio: SampleRatio::default(),
            alerts: None,
            guardrails: Vec::new(),
            cohort_key: CohortKey::default(),
            approve_before: Vec::new(),
            auto_after: None,
            rings: Vec::new(),
        }
    }
}

impl RolloutPolicy {
    /// Why a list of steps cannot be a rollout, if it cannot.
    pub fn check_steps(steps: &[f64]) -> Result<(), String> {
        if steps.is_empty() {
            return Err("no steps".into());
        }
        if steps.len() > 20 {
            return Err(format!("{} steps, more than 20", steps.len()));
        }
        if let Some(bad) = steps.iter().find(|s| !s.is_finite() || **s <= 0.0 || **s > 100.0) {
            return Err(format!("step {bad} is not a percentage above 0 and at most 100"));
        }
        if steps.windows(2).any(|w| w[1] <= w[0]) {
            return Err("steps must increase".into());
        }
        if steps.last() != Some(&100.0) {
            return Err("the last step must be 100, or the build would never reach the whole channel".into());
        }
        if steps.iter().any(|s| basis_points(*s) == 0) {
            return Err("a step below 0.01 % holds no session".into());
        }
        Ok(())
    }

    /// Why a threshold is out of range, if one is.
    pub fn check(&self) -> Result<(), String> {
        Self::check_steps(&self.steps)?;
        // Bounded like the command line's --min-sessions and --bake: stored as signed 64-bit.
        if !(1..=10_000_000).contains(&self.min_sessions) {
            return Err(format!(
                "min_sessions {} is out of bounds: between 1 and 10000000",
                self.min_sessions
            ));
        }
        if self.bake > std::time::Duration::from_secs(7 * 86_400) {
            return Err("bake is out of bounds: at most 7 days".into());
        }
        for (name, v) in [
            ("max_failure_rate_increase", self.max_failure_rate_increase),
            ("max_disconnect_rate_increase", self.max_disconnect_rate_increase),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("{name} {v} is not between 0 and 1 (0.02 is two points)"));
            }
        }
        if !(self.max_start_latency_p95_ratio.is_finite() && self.max_start_latency_p95_ratio >= 1.0) {
            return Err(format!(
                "max_start_latency_p95_ratio {} must be at least 1",
                self.max_start_latency_p95_ratio
            ));
        }
        if !(0.5..=0.9999).contains(&self.confidence) {
            return Err(format!("confidence {} must be between 0.5 and 0.9999", self.confidence));
        }
        if let Some(sd) = self.mixture_sd.filter(|sd| !(0.001..=0.5).contains(sd)) {
            return Err(format!(
                "mixture_sd {sd} must be between 0.001 and 0.5 (0.02 is two points)"
            ));
        }
        if !(1e-6..=0.2).contains(&self.sample_ratio.alpha) {
            return Err(format!(
                "sample_ratio alpha {} must be between 0.000001 and 0.2",
                self.sample_ratio.alpha
            ));
        }
        if self.sample_ratio.settle > Duration::from_secs(86_400) {
            return Err("sample_ratio settle is out of bounds: at most 1 day".into());
        }
        Ok(())
    }
}

/// What one side of a comparison did in the window judged: sums from the telemetry rollups.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    pub sessions: u64,
    /// `failed` and `timed_out` sessions.
    pub failed: u64,
    pub disconnected: u64,
    /// p95 start latency, from the histogram; `None` when no session started.
    pub p95_start_ms: Option<u64>,
    /// Sessions assigned in the sample-ratio guard's window (the step's, less its settle time)
    /// and how many of them were reported; 0 and 0 when not measured.
    #[serde(default)]
    pub assigned: u64,
    #[serde(default)]
    pub reported: u64,
    /// Commands run and failed, for the command failure rate.
    #[serde(default)]
    pub commands: u64,
    #[serde(default)]
    pub commands_failed: u64,
    /// Per-session cost (USD micros), tokens and approval gates: sums and sums of squares.
    #[serde(default)]
    pub cost: Moments,
    #[serde(default)]
    pub tokens: Moments,
    #[serde(default)]
    pub approvals: Moments,
}

/// The sum and the sum of squares of a per-session value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Moments {
    pub sum: f64,
    pub sq: f64,
}

impl Figures {
    pub fn failure_rate(&self) -> f64 {
        ratio(self.failed, self.sessions)
    }
    pub fn disconnect_rate(&self) -> f64 {
        ratio(self.disconnected, self.sessions)
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

pub use canary_contract::Verdict;

/// One metric's comparison, with the figures and limit that decided it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub metric: String,
    pub candidate: f64,
    pub baseline: f64,
    pub limit: f64,
    pub verdict: Verdict,
    pub why: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Judgement {
    pub verdict: Verdict,
    pub candidate: Figures,
    pub baseline: Figures,
    pub checks: Vec<Check>,
    /// Every reason it is not a pass (empty on a pass).
    pub reasons: Vec<String>,
}

fn pct(x: f64) -> String {
    format!("{:.2} %", x * 100.0)
}

fn points(x: f64) -> String {
    format!("{:+.2} points", x * 100.0)
}

/// One rate compared (candidate against baseline): a fail when the whole always-valid interval
/// of the difference is above the allowed increase, a pass when it is all within it,
/// inconclusive otherwise.
fn rate_check(
    metric: &str,
    (c, b): (stats::Proportion, stats::Proportion),
    limit: f64,
    policy: &RolloutPolicy,
) -> Check {
    let tau = policy.mixture_sd.unwrap_or(limit.max(0.005));
    let (lo, hi) = stats::sequential_difference(c, b, 1.0 - policy.confidence, tau);
    let head = format!("{metric} {} vs baseline {}", pct(c.rate()), pct(b.rate()));
    let (verdict, why) = if lo > limit {
        let why = format!(
            "{head}: at least {}, more than the {} allowed",
            points(lo),
            points(limit)
        );
        (Verdict::Fail, why)
    } else if hi <= limit {
        (
            Verdict::Pass,
            format!("{head}: at most {}, within {}", points(hi), points(limit)),
        )
    } else {
        let why = format!(
            "{head}: between {} and {}, cannot tell yet whether it is within {}",
            points(lo),
            points(hi),
            points(limit)
        );
        (Verdict::Inconclusive, why)
    };
    Check {
        metric: metric.into(),
        candidate: c.rate(),
        baseline: b.rate(),
        limit,
        verdict,
        why,
    }
}

/// p95 start latency: at most `max_start_latency_p95_ratio` times the baseline's; unknown on
/// either side is inconclusive.
fn latency_check(policy: &RolloutPolicy, candidate: Option<u64>, baseline: Option<u64>) -> Check {
    let ratio = policy.max_start_latency_p95_ratio;
    let (verdict, why) = match (candidate, baseline) {
        (Some(c), Some(b)) => {
            let allowed = (b as f64 * ratio).max(b as f64 + 1.0);
            let head = format!("p95 start latency {c} ms vs baseline {b} ms");
            if c as f64 > allowed {
                (Verdict::Fail, format!("{head}: more than {ratio:.1}× the baseline"))
            } else {
                (Verdict::Pass, format!("{head}: within {ratio:.1}×"))
            }
        }
        (c, b) => {
            let side = match (c, b) {
                (None, None) => "candidate or the baseline",
                (None, _) => "candidate",
                _ => "baseline",
            };
            let why = format!("p95 start latency unknown: no started session reported for the {side}");
            (Verdict::Inconclusive, why)
        }
    };
    Check {
        metric: "p95 start latency".into(),
        candidate: candidate.unwrap_or(0) as f64,
        baseline: baseline.unwrap_or(0) as f64,
        limit: ratio,
        verdict,
        why,
    }
}

/// The sample-ratio guard: the candidate's share of the sessions reported against its share of
/// the sessions assigned, over the same window, by the always-valid test at the guard's level
/// (tuned to a 30 % relative change of the candidate's share). `None` until both arms have
/// sessions assigned and reported.
pub fn sample_ratio_check(guard: &SampleRatio, candidate: &Figures, baseline: &Figures) -> Option<Check> {
    let assigned = candidate.assigned + baseline.assigned;
    let reported = candidate.reported + baseline.reported;
    if candidate.assigned == 0 || baseline.assigned == 0 || reported == 0 {
        return None;
    }
    let expected = candidate.assigned as f64 / assigned as f64;
    let observed = stats::Proportion::new(candidate.reported, reported);
    let tau = (0.3 * expected * (1.0 - expected)).max(1e-4);
    let mismatch = stats::share_mismatch(observed, expected, guard.alpha, tau);
    let head = format!(
        "sample ratio: the candidate has {} of the sessions reported ({} of {}) but {} of those assigned ({} of {})",
        pct(observed.rate()),
        candidate.reported,
        reported,
        pct(expected),
        candidate.assigned,
        assigned
    );
    let (verdict, why) = match (mismatch, guard.action) {
        (false, _) => (Verdict::Pass, format!("{head}: in line")),
        (true, MismatchAction::Hold) => (
            Verdict::Inconclusive,
            format!(
                "{head}: a mismatch, so the comparison is biased; holding (do the candidate's runners drop or hand back sessions?)"
            ),
        ),
        (true, MismatchAction::Abort) => (
            Verdict::Fail,
            format!("{head}: a mismatch; aborting as the policy says"),
        ),
        (true, MismatchAction::Warn) => (Verdict::Pass, format!("{head}: a mismatch (warn only: judged anyway)")),
    };
    Some(Check {
        metric: "sample ratio".into(),
        candidate: observed.rate(),
        baseline: expected,
        limit: guard.alpha,
        verdict,
        why,
    })
}

/// Judges a step: the candidate's cohort against the baseline on failure rate, disconnect rate
/// (a difference of proportions with an always-valid interval at the policy's confidence: a
/// fail when the whole interval is above the allowed increase, a pass when it is all within it)
/// and p95 start latency (at most `max_start_latency_p95_ratio` times the baseline's). Fewer than
/// `min_sessions` on either side, or no latency at all, is inconclusive.
pub fn judge(policy: &RolloutPolicy, candidate: &Figures, baseline: &Figures) -> Judgement {
    let mut reasons = Vec::new();
    let mut checks: Vec<Check> = sample_ratio_check(&policy.sample_ratio, candidate, baseline)
        .into_iter()
        .collect();
    if let Some(c) = checks.first().filter(|c| c.verdict != Verdict::Pass) {
        // A biased comparison decides nothing: the guard's hold or abort stands alone.
        return Judgement {
            verdict: c.verdict,
            candidate: candidate.clone(),
            baseline: baseline.clone(),
            reasons: vec![c.why.clone()],
            checks,
        };
    }
    for (side, f) in [("candidate", candidate), ("baseline", baseline)] {
        if f.sessions < policy.min_sessions {
            reasons.push(format!(
                "the {side} has {} of the {} sessions a decision needs",
                f.sessions, policy.min_sessions
            ));
        }
    }
    if !reasons.is_empty() {
        return Judgement {
            verdict: Verdict::Inconclusive,
            candidate: candidate.clone(),
            baseline: baseline.clone(),
            checks,
            reasons,
        };
    }
    let rates = [
        (
            "failure rate",
            candidate.failed,
            baseline.failed,
            policy.max_failure_rate_increase,
        ),
        (
            "disconnect rate",
            candidate.disconnected,
            baseline.disconnected,
            policy.max_disconnect_rate_increase,
        ),
    ];
    for (metric, c_hits, b_hits, limit) in rates {
        let c = stats::Proportion::new(c_hits, candidate.sessions);
        let b = stats::Proportion::new(b_hits, baseline.sessions);
        checks.push(rate_check(metric, (c, b), limit, policy));
    }
    checks.push(latency_check(policy, candidate.p95_start_ms, baseline.p95_start_ms));
    for g in &policy.guardrails {
        checks.push(guardrails::check(g, 1.0 - policy.confidence, candidate, baseline));
    }
    let verdict = if checks.iter().any(|c| c.verdict == Verdict::Fail) {
        Verdict::Fail
    } else if checks.iter().any(|c| c.verdict == Verdict::Inconclusive) {
        Verdict::Inconclusive
    } else {
        Verdict::Pass
    };
    let reasons = checks
        .iter()
        .filter(|c| c.verdict == verdict && verdict != Verdict::Pass)
        .map(|c| c.why.clone())
        .collect();
    Judgement {
        verdict,
        candidate: candidate.clone(),
        baseline: baseline.clone(),
        checks,
        reasons,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Running,
    Paused,
    Completed,
    Aborted,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Paused => "paused",
            State::Completed => "completed",
            State::Aborted => "aborted",
        }
    }
    pub fn from_word(w: &str) -> State {
        match w {
            "running" => State::Running,
            "paused" => State::Paused,
            "completed" => State::Completed,
            // Unknown reads as aborted: a rollout the controller does not understand sends no
            // session to its candidate.
            _ => State::Aborted,
        }
    }
    /// Whether the candidate still gets its cohort.
    pub fn active(self) -> bool {
        matches!(self, State::Running | State::Paused)
    }
}

/// What a rollout's event records (`rollout_events.kind` of a rollout's rows): each transition
/// the controller or an operator makes, and an approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Start,
    Advance,
    Hold,
    Pause,
    Resume,
    Abort,
    Complete,
    Approve,
}

canary_contract::words!(EventKind, "a rollout event", {
    Start => "start", Advance => "advance", Hold => "hold", Pause => "pause", Resume => "resume",
    Abort => "abort", Complete => "complete", Approve => "approve",
});

/// What one pass of the controller did to a rollout, in words: the kind of event its action
/// makes (written or, for a hold that goes on, not), or `wait` for none.
pub fn pass_word(action: Option<EventKind>) -> &'static str {
    action.map_or("wait", EventKind::as_str)
}

/// What the controller does with a running rollout after judging its step.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Healthy so far; the step has not baked long enough.
    Wait(String),
    /// Hold at this step and say why (too few sessions, missing telemetry).
    Hold(Vec<String>),
    Advance {
        to_step: usize,
    },
    /// The last step of a ring baked healthy and another ring follows: it starts at the first
    /// step.
    NextRing {
        ring: usize,
    },
    /// The last step of the last ring baked healthy: the build becomes the channel's.
    Complete,
    /// Worse than the baseline: every session back to the baseline at once.
    Abort(Vec<String>),
}

/// The next action for a rollout at `step` of `steps` whose step started `elapsed` ago.
pub fn next_action(judgement: &Judgement, step: usize, steps: usize, elapsed: Duration, bake: Duration) -> Action {
    match judgement.verdict {
        Verdict::Fail => Action::Abort(judgement.reasons.clone()),
        Verdict::Inconclusive => Action::Hold(judgement.reasons.clone()),
        Verdict::Pass if elapsed < bake => Action::Wait(format!(
            "healthy; baking {} of {}",
            humantime::format_duration(Duration::from_secs(elapsed.as_secs())),
            humantime::format_duration(bake)
        )),
        Verdict::Pass if step + 1 >= steps => Action::Complete,
        Verdict::Pass => Action::Advance { to_step: step + 1 },
    }
}

/// A rollout as assignment needs it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActiveRollout {
    pub id: i64,
    pub build: BuildId,
    pub baseline: BuildId,
    pub step: usize,
    pub percent: f64,
    pub key: CohortKey,
    /// The ring in progress, of `rings` (and everyone else after them).
    pub ring: usize,
    pub rings: Vec<Ring>,
}

/// What assignment reads, loaded from the registry and cached by `canary serve`.
#[derive(Debug, Clone, Default)]
pub struct FleetState {
    /// Each channel's current known-good build.
    pub channels: BTreeMap<Channel, BuildId>,
    /// org → (channel it follows, pinned build).
    pub orgs: BTreeMap<String, (Channel, Option<BuildId>)>,
    pub frozen: BTreeSet<String>,
    /// channel → its active rollout.
    pub rollouts: BTreeMap<Channel, ActiveRollout>,
    /// Where builds were published (`canary images push`): what a runner pulls a build by.
    pub pushed: BTreeMap<BuildId, PushedRef>,
}

/// Why a session runs the build it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The org is pinned to a build.
    Pin,
    /// The org is frozen out of rollouts: the channel's current build.
    Frozen,
    /// In the cohort of a rollout's step.
    Candidate,
    /// Outside the cohort: the channel's current build.
    Baseline,
    /// No rollout: the channel's build.
    Channel,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Assignment {
    pub build: BuildId,
    pub channel: Channel,
    pub source: Source,
    pub rollout: Option<i64>,
    /// The rollout step (index) and its percentage.
    pub step: Option<usize>,
    pub percent: Option<f64>,
    /// The conversation keeps the build it was given earlier in the rollout.
    pub sticky: bool,
    /// The comparison the session's telemetry counts in ([`cohort_label`]): set for a session of
    /// the ring the rollout is judging, on either side; absent for pinned, frozen and channel
    /// sessions and for orgs of other rings, whose sessions would compare other orgs.
    #[serde(skip)]
    pub cohort: Option<String>,
    /// Where the build was published (`host/repository@sha256:…`): the runner pulls it by this
    /// digest. Absent for a build that was never pushed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<PushedRef>,
}

/// The label a rollout's judged sessions carry in the rollups: its id and ring. Candidate and
/// baseline are both read under it, so they are drawn from the same orgs over the same window.
pub fn cohort_label(rollout: i64, ring: usize) -> String {
    format!("{rollout}:{ring}")
}

/// Who asks for a build: the org, the session, the conversation it continues (if any), and the
/// build that conversation was given earlier in the rollout (if it was).
#[derive(Debug, Clone, Copy)]
pub struct Asking<'a> {
    pub org: &'a str,
    pub session: &'a str,
    pub conversation: Option<&'a str>,
    pub remembered: Option<&'a BuildId>,
}

/// The build a session of `org` runs; `None` when its channel has no build yet. An org without a
/// pin follows `stable`.
pub fn assign(state: &FleetState, org: &str, session: &str) -> Option<Assignment> {
    assign_to(
        state,
        &Asking {
            org,
            session,
            conversation: None,
            remembered: None,
        },
    )
}

/// The channel an org follows (`stable` unless it says otherwise) and the build it is pinned to.
fn channel_of(state: &FleetState, org: &str) -> (Channel, Option<BuildId>) {
    state
        .orgs
        .get(org)
        .cloned()
        .unwrap_or_else(|| (Channel::stable(), None))
}

/// The active rollout of the channel an org follows, if any.
pub fn rollout_of<'a>(state: &'a FleetState, org: &str) -> Option<&'a ActiveRollout> {
    state.rollouts.get(&channel_of(state, org).0)
}

/// The build a session runs: a pin wins, then a freeze; during a rollout, a conversation keeps
/// the build it was given while that build is still the rollout's candidate or baseline, and is
/// otherwise placed by the rollout's cohort key.
pub fn assign_to(state: &FleetState, a: &Asking<'_>) -> Option<Assignment> {
    place(state, a).map(|mut placed| {
        placed.image = state.pushed.get(&placed.build).cloned();
        placed
    })
}

fn place(state: &FleetState, a: &Asking<'_>) -> Option<Assignment> {
    let (channel, pinned) = channel_of(state, a.org);
    let fixed = |build, source| Assignment {
        build,
        channel: channel.clone(),
        source,
        rollout: None,
        step: None,
        percent: None,
        sticky: false,
        cohort: None,
        image: None,
    };
    if let Some(build) = pinned {
        return Some(fixed(build, Source::Pin));
    }
    let current = state.channels.get(&channel).cloned();
    let Some(r) = state.rollouts.get(&channel) else {
        return current.map(|build| fixed(build, Source::Channel));
    };
    let remembered = a.remembered.filter(|b| **b == r.build || **b == r.baseline);
    let key = match r.key {
        CohortKey::Session => a.session,
        CohortKey::Conversation => a.conversation.unwrap_or(a.session),
        CohortKey::Org => a.org,
    };
    let frozen = state.frozen.contains(a.org);
    let judged = !frozen && ring_of(&r.rings, a.org) == r.ring;
    let (build, source) = if frozen {
        (r.baseline.clone(), Source::Frozen)
    } else if let Some(b) = remembered {
        let source = if *b == r.build {
            Source::Candidate
        } else {
            Source::Baseline
        };
        (b.clone(), source)
    } else if ring_of(&r.rings, a.org) != r.ring {
        // A ring that went through every step runs the candidate; one still to come, the baseline.
        if ring_of(&r.rings, a.org) < r.ring {
            (r.build.clone(), Source::Candidate)
        } else {
            (r.baseline.clone(), Source::Baseline)
        }
    } else if in_cohort(key, r.percent) {
        (r.build.clone(), Source::Candidate)
    } else {
        (r.baseline.clone(), Source::Baseline)
    };
    Some(Assignment {
        build,
        channel: channel.clone(),
        source,
        rollout: Some(r.id),
        step: Some(r.step),
        percent: Some(r.percent),
        sticky: remembered.is_some() && source != Source::Frozen,
        cohort: judged.then(|| cohort_label(r.id, r.ring)),
        image: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(sessions: u64, failed: u64, p95: u64) -> Figures {
        Figures {
            sessions,
            failed,
            disconnected: 0,
            p95_start_ms: Some(p95),
            ..Figures::default()
        }
    }

    #[test]
    fn cohorts_hold_their_share_and_a_session_always_gets_the_same_answer() {
        for percent in [1.0, 10.0, 50.0] {
            let n = 100_000;
            let hits = (0..n).filter(|i| in_cohort(&format!("s-{i}"), percent)).count();
            let share = hits as f64 * 100.0 / n as f64;
            assert!((share - percent).abs() <= 0.5, "{percent} %: {share} %");
        }
        assert!((0..1000).all(|i| in_cohort(&format!("s-{i}"), 100.0)));
        assert_eq!(bucket("session-42"), bucket("session-42"));
        // Cohorts nest: a session in the 1 % cohort stays in every larger one.
        let small: Vec<_> = (0..20_000).filter(|i| in_cohort(&format!("x{i}"), 1.0)).collect();
        assert!(small.iter().all(|i| in_cohort(&format!("x{i}"), 10.0)));
    }

    #[test]
    fn a_build_failing_a_fifth_of_its_sessions_fails_and_a_good_one_passes() {
        let p = RolloutPolicy::default();
        let bad = judge(&p, &figures(200, 40, 900), &figures(2000, 20, 900));
        assert_eq!(bad.verdict, Verdict::Fail, "{bad:?}");
        assert!(
            bad.reasons[0].starts_with("failure rate 20.00 % vs baseline 1.00 %"),
            "{:?}",
            bad.reasons
        );
        let good = judge(&p, &figures(2000, 20, 900), &figures(4000, 40, 880));
        assert_eq!(good.verdict, Verdict::Pass, "{good:?}");
    }

    #[test]
    fn too_few_sessions_or_no_latency_is_inconclusive_never_a_pass() {
        let p = RolloutPolicy::default();
        let j = judge(&p, &figures(37, 0, 900), &figures(2000, 20, 900));
        assert_eq!(j.verdict, Verdict::Inconclusive);
        assert_eq!(
            j.reasons,
            vec!["the candidate has 37 of the 200 sessions a decision needs"]
        );
        let none = judge(&p, &Figures::default(), &Figures::default());
        assert_eq!(none.verdict, Verdict::Inconclusive);
        let mut no_latency = figures(2000, 20, 0);
        no_latency.p95_start_ms = None;
        let j = judge(&p, &no_latency, &figures(2000, 20, 900));
        assert_eq!(j.verdict, Verdict::Inconclusive);
        assert!(j.reasons[0].contains("no started session reported for the candidate"));
        // A close call on few sessions waits for more.
        let close = judge(&p, &figures(200, 4, 900), &figures(200, 2, 900));
        assert_eq!(close.verdict, Verdict::Inconclusive, "{close:?}");
    }

    #[test]
    fn a_sample_ratio_mismatch_holds_aborts_or_warns_as_the_policy_says() {
        let mut p = RolloutPolicy::default();
        // 10 % assigned to the candidate, but only 7 % of the reported sessions are its.
        let mut c = figures(700, 7, 900);
        let mut b = figures(9300, 93, 900);
        (c.assigned, c.reported, b.assigned, b.reported) = (1000, 700, 9000, 9300);
        let j = judge(&p, &c, &b);
        assert_eq!(j.verdict, Verdict::Inconclusive, "{j:?}");
        assert!(j.reasons[0].starts_with("sample ratio: the candidate has 7.00 % of the sessions reported (700 of 10000) but 10.00 % of those assigned"), "{:?}", j.reasons);
        assert!(matches!(
            next_action(&j, 0, 4, Duration::from_secs(3600), p.bake),
            Action::Hold(_)
        ));
        p.sample_ratio.action = MismatchAction::Abort;
        assert_eq!(judge(&p, &c, &b).verdict, Verdict::Fail);
        p.sample_ratio.action = MismatchAction::Warn;
        let j = judge(&p, &c, &b);
        assert_eq!(j.verdict, Verdict::Pass, "{j:?}");
        assert!(j.checks[0].why.contains("warn only"), "{:?}", j.checks);
        // In line: judged as usual, the guard's check passes.
        (c.reported, c.sessions) = (990, 990);
        let j = judge(&RolloutPolicy::default(), &c, &b);
        assert_eq!(j.checks[0].metric, "sample ratio");
        assert_eq!(j.checks[0].verdict, Verdict::Pass, "{:?}", j.checks[0]);
        // Nothing assigned to one side (the 100 % step): no guard.
        b.assigned = 0;
        assert!(sample_ratio_check(&p.sample_ratio, &c, &b).is_none());
    }

    #[test]
    fn slow_starts_fail_on_the_ratio() {
        let p = RolloutPolicy::default();
        let j = judge(&p, &figures(2000, 20, 2000), &figures(2000, 20, 900));
        assert_eq!(j.verdict, Verdict::Fail);
        assert!(j.reasons[0].contains("p95 start latency 2000 ms vs baseline 900 ms"));
    }

    #[test]
    fn actions_follow_the_verdict_and_the_bake() {
        let p = RolloutPolicy::default();
        let pass = judge(&p, &figures(2000, 20, 900), &figures(4000, 40, 880));
        let m = Duration::from_secs(60);
        assert!(matches!(next_action(&pass, 0, 4, m, 10 * m), Action::Wait(_)));
        assert_eq!(next_action(&pass, 0, 4, 10 * m, 10 * m), Action::Advance { to_step: 1 });
        assert_eq!(next_action(&pass, 3, 4, 10 * m, 10 * m), Action::Complete);
        let fail = judge(&p, &figures(200, 40, 900), &figures(2000, 20, 900));
        // A failure aborts at once, baked or not.
        assert!(matches!(
            next_action(&fail, 0, 4, Duration::ZERO, 10 * m),
            Action::Abort(_)
        ));
        let none = judge(&p, &Figures::default(), &Figures::default());
        assert!(matches!(next_action(&none, 0, 4, 100 * m, 10 * m), Action::Hold(_)));
    }

    #[test]
    fn rings_go_in_order_and_orgs_in_none_go_last() {
        let id = |hex: &str| -> BuildId { format!("sha256:{hex}").parse().unwrap() };
        let (base, cand) = (id("ba5e"), id("ca4d"));
        let ring = |name: &str, org: &str| Ring {
            name: name.into(),
            orgs: [org.to_string()].into(),
        };
        let rings = vec![ring("internal", "canary-staff"), ring("free", "hobby")];
        let mut s = FleetState::default();
        s.channels.insert(Channel::stable(), base.clone());
        let at = |ring: usize, percent: f64| ActiveRollout {
            id: 1,
            build: cand.clone(),
            baseline: base.clone(),
            step: 0,
            percent,
            key: CohortKey::Session,
            ring,
            rings: rings.clone(),
        };
        let build = |s: &FleetState, org: &str| assign(s, org, "s1").unwrap().build;
        // The first ring at 100 %: its orgs run the candidate, the later rings do not.
        s.rollouts.insert(Channel::stable(), at(0, 100.0));
        assert_eq!(build(&s, "canary-staff"), cand);
        assert_eq!(build(&s, "hobby"), base);
        assert_eq!(build(&s, "acme"), base);
        // Everyone else's turn at 0.01 %: the rings before run the candidate whatever the cohort.
        s.rollouts.insert(Channel::stable(), at(2, 0.01));
        assert_eq!(build(&s, "canary-staff"), cand);
        assert_eq!(build(&s, "hobby"), cand);
        let others = (0..1000)
            .filter(|i| assign(&s, "acme", &format!("s{i}")).unwrap().build == cand)
            .count();
        assert!(others < 10, "{others}");
        assert_eq!((ring_of(&rings, "hobby"), ring_of(&rings, "acme")), (1, 2));
        assert_eq!(ring_name(&rings, 2), "everyone else");
    }

    #[test]
    fn steps_are_checked() {
        assert!(RolloutPolicy::check_steps(&[1.0, 10.0, 50.0, 100.0]).is_ok());
        for bad in [
            &[][..],
            &[10.0, 5.0, 100.0],
            &[1.0, 50.0],
            &[0.0, 100.0],
            &[f64::NAN, 100.0],
            &[0.001, 100.0],
        ] {
            assert!(RolloutPolicy::check_steps(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn pins_freezes_and_cohorts_decide_the_build() {
        let id = |hex: &str| -> BuildId { format!("sha256:{hex}").parse().unwrap() };
        let (base, old, cand) = (id("ba5e"), id("01d"), id("ca4d"));
        let mut s = FleetState::default();
        s.channels.insert(Channel::stable(), base.clone());
        s.orgs.insert("acme".into(), (Channel::stable(), Some(old.clone())));
        s.orgs.insert("ice".into(), (Channel::stable(), None));
        s.frozen.insert("ice".into());
        assert_eq!(assign(&s, "anyone", "s1").unwrap().source, Source::Channel);
        s.rollouts.insert(
            Channel::stable(),
            ActiveRollout {
                id: 1,
                build: cand.clone(),
                baseline: base.clone(),
                step: 3,
                percent: 100.0,
                key: CohortKey::Conversation,
                ring: 0,
                rings: Vec::new(),
            },
        );
        let a = assign(&s, "anyone", "s1").unwrap();
        assert_eq!((a.build, a.source), (cand, Source::Candidate));
        // Judged sessions carry the rollout's cohort; pinned and frozen ones none.
        assert_eq!(a.cohort.as_deref(), Some("1:0"));
        let pinned = assign(&s, "acme", "s1").unwrap();
        assert_eq!((pinned.build, pinned.cohort), (old, None));
        let f = assign(&s, "ice", "s1").unwrap();
        assert_eq!((f.build, f.source, f.cohort), (base.clone(), Source::Frozen, None));
        // With rings, only the ring being judged: the one before runs the candidate whole and
        // the one after the baseline, outside the comparison.
        let ring = |name: &str, org: &str| Ring {
            name: name.into(),
            orgs: [org.to_string()].into(),
        };
        let r = s.rollouts.get_mut(&Channel::stable()).unwrap();
        (r.ring, r.percent, r.rings) = (1, 10.0, vec![ring("staff", "early"), ring("free", "mid")]);
        let cohort = |org: &str| assign(&s, org, "s1").unwrap().cohort;
        assert_eq!(cohort("early"), None);
        assert_eq!(cohort("mid"), Some("1:1".into()));
        assert_eq!(cohort("anyone"), None);
        s.channels.clear();
        s.rollouts.clear();
        assert!(assign(&s, "anyone", "s1").is_none());
    }

    #[test]
    fn an_assignment_names_where_its_build_was_published() {
        let id = |hex: &str| -> BuildId { format!("sha256:{hex}").parse().unwrap() };
        let (base, pinned) = (id("ba5e"), id("01d"));
        let mut s = FleetState::default();
        s.channels.insert(Channel::stable(), base.clone());
        s.orgs.insert("acme".into(), (Channel::stable(), Some(pinned)));
        let pushed: PushedRef = format!("reg.internal:5443/canary/builds@sha256:{}", "ab".repeat(32))
            .parse()
            .unwrap();
        s.pushed.insert(base, pushed.clone());
        let a = assign(&s, "anyone", "s1").unwrap();
        assert_eq!(a.image.as_ref(), Some(&pushed));
        assert_eq!(serde_json::to_value(&a).unwrap()["image"], pushed.to_string());
        // A build never pushed: no reference, and the field is left out rather than empty.
        let p = assign(&s, "acme", "s1").unwrap();
        assert_eq!(p.image, None);
        assert!(serde_json::to_value(&p).unwrap().get("image").is_none());
    }
}
