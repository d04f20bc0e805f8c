//! Seeded simulations of a rollout step judged at every controller pass: the error rates the
//! sequential statistics promise, measured (no database, no fleet). The figures they print are
//! the ones `docs/rollouts.md` quotes (`cargo nextest run -p canary-fleet simulation
//! --no-capture`).

use super::stats::{self, Proportion};
use super::{Figures, RolloutPolicy, Verdict, judge};
use crate::rng::SplitMix64 as Rng;

/// One step's traffic: sessions per controller pass, the candidate's share, each side's failure
/// rate, and the share of the candidate's sessions its runners never report.
#[derive(Clone, Copy)]
struct Traffic {
    per_tick: u32,
    share: f64,
    baseline_fail: f64,
    candidate_fail: f64,
    candidate_drop: f64,
}

/// What happened to one simulated step over `ticks` passes.
#[derive(Default)]
struct Outcome {
    /// The pass and the candidate's sessions at the first fail (an abort), if any.
    aborted_at: Option<(u32, u64)>,
    /// Whether the old fixed-level interval would have aborted at some pass.
    fixed_aborted: bool,
    /// The first pass held by the sample-ratio guard, if any.
    ratio_held_at: Option<u32>,
}

fn side(sessions: u64, failed: u64) -> Figures {
    Figures {
        sessions,
        failed,
        disconnected: 0,
        p95_start_ms: Some(900),
        ..Figures::default()
    }
}

fn run(policy: &RolloutPolicy, t: Traffic, ticks: u32, seed: u64) -> Outcome {
    let mut rng = Rng(seed);
    let (mut c, mut b) = (side(0, 0), side(0, 0));
    let mut out = Outcome::default();
    let z = stats::z_for(policy.confidence);
    for tick in 1..=ticks {
        for _ in 0..t.per_tick {
            let candidate = rng.unit() < t.share;
            let (fig, fail) = if candidate {
                (&mut c, t.candidate_fail)
            } else {
                (&mut b, t.baseline_fail)
            };
            fig.assigned += 1;
            let failed = rng.unit() < fail;
            if candidate && t.candidate_drop > 0.0 && rng.unit() < t.candidate_drop {
                continue;
            }
            fig.reported += 1;
            fig.sessions += 1;
            fig.failed += failed as u64;
        }
        let j = judge(policy, &c, &b);
        if j.verdict == Verdict::Fail && out.aborted_at.is_none() {
            out.aborted_at = Some((tick, c.sessions));
        }
        if out.ratio_held_at.is_none()
            && j.checks
                .iter()
                .any(|k| k.metric == "sample ratio" && k.verdict != Verdict::Pass)
        {
            out.ratio_held_at = Some(tick);
        }
        // The controller before: Newcombe's fixed-level interval, re-tested at every pass.
        if c.sessions >= policy.min_sessions && b.sessions >= policy.min_sessions {
            let (lo, _) = stats::difference_interval(
                Proportion::new(c.failed, c.sessions),
                Proportion::new(b.failed, b.sessions),
                z,
            );
            out.fixed_aborted |= lo > policy.max_failure_rate_increase;
        }
    }
    out
}

const RUNS: u64 = 1000;
const TICKS: u32 = 240;

fn runs(policy: &RolloutPolicy, t: Traffic) -> Vec<Outcome> {
    (0..RUNS).map(|i| run(policy, t, TICKS, 0x5EED_0000 + i)).collect()
}

fn rate(n: usize) -> f64 {
    n as f64 / RUNS as f64
}

const AA: Traffic = Traffic {
    per_tick: 200,
    share: 0.10,
    baseline_fail: 0.05,
    candidate_fail: 0.05,
    candidate_drop: 0.0,
};

#[test]
fn a_build_as_good_as_its_baseline_is_aborted_at_most_alpha_of_the_time_however_often_it_is_judged() {
    // The strictest policy: no increase at all is allowed, so the null sits on the limit.
    let policy = RolloutPolicy {
        max_failure_rate_increase: 0.0,
        ..RolloutPolicy::default()
    };
    let out = runs(&policy, AA);
    let sequential = rate(out.iter().filter(|o| o.aborted_at.is_some()).count());
    let fixed = rate(out.iter().filter(|o| o.fixed_aborted).count());
    println!(
        "A/A, {RUNS} runs of {TICKS} passes, 200 sessions a pass at 10 %, 5 % failure, no increase allowed: false aborts {:.1} % (always-valid, alpha 5 %) vs {:.1} % (fixed 95 % interval re-tested every pass)",
        sequential * 100.0,
        fixed * 100.0
    );
    assert!(sequential <= 0.05, "false aborts {sequential}");
    // What peeking does to the fixed interval: the reason for the change.
    assert!(
        fixed > 2.0 * sequential.max(0.025),
        "fixed {fixed}, sequential {sequential}"
    );
    // The default policy (two points allowed) aborts a healthy build practically never.
    let out = runs(&RolloutPolicy::default(), AA);
    assert_eq!(out.iter().filter(|o| o.aborted_at.is_some()).count(), 0);
    // Nor does an honest fleet trip the sample-ratio guard.
    let held = out.iter().filter(|o| o.ratio_held_at.is_some()).count();
    println!("A/A: sample-ratio holds {held} of {RUNS}");
    assert!(rate(held) <= 0.01, "{held}");
}

#[test]
fn a_build_five_points_worse_is_aborted_in_nearly_every_run_and_the_median_sessions_are_reported() {
    let t = Traffic {
        candidate_fail: 0.10,
        ..AA
    };
    let out = runs(&RolloutPolicy::default(), t);
    let mut at: Vec<u64> = out.iter().filter_map(|o| o.aborted_at.map(|(_, n)| n)).collect();
    at.sort_unstable();
    let aborted = rate(at.len());
    let median = at.get(at.len() / 2).copied().unwrap_or(0);
    println!(
        "A/B +5 points (10 % vs 5 %), two points allowed: aborted in {:.1} % of {RUNS} runs, median {median} candidate sessions to the abort",
        aborted * 100.0
    );
    assert!(aborted >= 0.95, "aborted {aborted}");
}

#[test]
fn a_candidate_whose_runners_drop_a_third_of_its_sessions_is_held_by_the_sample_ratio_guard() {
    let t = Traffic {
        candidate_drop: 0.30,
        ..AA
    };
    let policy = RolloutPolicy::default();
    let out = runs(&policy, t);
    // Held within the bake (10 minutes of 5-second passes), so the step never advances on a
    // biased comparison.
    let bake_ticks = (policy.bake.as_secs() / 5) as u32;
    let mut held: Vec<u32> = out
        .iter()
        .filter_map(|o| o.ratio_held_at.filter(|t| *t <= bake_ticks))
        .collect();
    held.sort_unstable();
    println!(
        "candidate drops 30 %: held by the sample-ratio guard within the bake in {} of {RUNS} runs (median pass {})",
        held.len(),
        held.get(held.len() / 2).copied().unwrap_or(0)
    );
    assert!(rate(held.len()) >= 0.95, "{}", held.len());
}
