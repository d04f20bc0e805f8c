//! Guardrails beyond failures, disconnects and start latency, listed in a channel's rollout
//! policy: cost and tokens per session, the command failure rate, approval gates per session.
//! Each names which way is a regression and how much of it is allowed (absolute, or relative to
//! the baseline), and is judged with the same always-valid interval as the rates (see
//! [`super::stats`]): per-session means from the rollups' sums and sums of squares, the command
//! failure rate as a proportion of commands.

use super::stats::{self, Proportion};
use super::{Check, Figures, Moments, Verdict};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    CostPerSession,
    TokensPerSession,
    CommandFailureRate,
    /// Approval gates per session.
    ApprovalGateRate,
}

impl Metric {
    pub const ALL: [Metric; 4] = [
        Metric::CostPerSession,
        Metric::TokensPerSession,
        Metric::CommandFailureRate,
        Metric::ApprovalGateRate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Metric::CostPerSession => "cost_per_session",
            Metric::TokensPerSession => "tokens_per_session",
            Metric::CommandFailureRate => "command_failure_rate",
            Metric::ApprovalGateRate => "approval_gate_rate",
        }
    }

    /// As a person reads it in a note.
    pub fn label(self) -> &'static str {
        match self {
            Metric::CostPerSession => "cost per session",
            Metric::TokensPerSession => "tokens per session",
            Metric::CommandFailureRate => "command failure rate",
            Metric::ApprovalGateRate => "approval gates per session",
        }
    }

    /// A value of this metric as a person reads it.
    fn show(self, v: f64) -> String {
        match self {
            Metric::CostPerSession => format!("${:.4}", v / 1e6),
            Metric::TokensPerSession => format!("{v:.0}"),
            Metric::CommandFailureRate => format!("{:.2} %", v * 100.0),
            Metric::ApprovalGateRate => format!("{v:.3}"),
        }
    }
}

impl std::str::FromStr for Metric {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Metric::ALL.into_iter().find(|m| m.as_str() == s).ok_or_else(|| {
            format!(
                "`{}` is not a guardrail metric: one of failure_rate, disconnect_rate, p95_start_latency, {}",
                canary_contract::text::clean(s),
                Metric::ALL.map(Metric::as_str).join(", ")
            )
        })
    }
}

/// Which way is a regression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Increase,
    Decrease,
}

/// How much regression is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    /// In the metric's unit (USD micros for cost, a share for the command failure rate).
    Absolute(f64),
    /// A share of the baseline's value (0.25: a quarter of it).
    Relative(f64),
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Guardrail {
    pub metric: Metric,
    pub direction: Direction,
    pub limit: Limit,
}

/// One side's estimate of a metric and the variance of that estimate; `None` for the variance
/// when the spread is unknown.
fn estimate(metric: Metric, f: &Figures) -> (f64, Option<f64>, u64) {
    let mean = |m: Moments| -> (f64, Option<f64>, u64) {
        let n = f.sessions as f64;
        if f.sessions < 2 {
            return (if n > 0.0 { m.sum / n } else { 0.0 }, None, f.sessions);
        }
        let avg = m.sum / n;
        let var = (m.sq - m.sum * avg) / (n - 1.0);
        // Sums of squares below what the sums allow come from rows kept before squares were.
        let known = var >= -1e-9 * m.sq.abs().max(1.0);
        (avg, known.then_some(var.max(0.0) / n), f.sessions)
    };
    match metric {
        Metric::CostPerSession => mean(f.cost),
        Metric::TokensPerSession => mean(f.tokens),
        Metric::ApprovalGateRate => mean(f.approvals),
        Metric::CommandFailureRate => {
            let p = Proportion::new(f.commands_failed, f.commands);
            let s = (p.hits as f64 + 0.5) / (p.n as f64 + 1.0);
            let var = (p.n > 0).then(|| s * (1.0 - s) / p.n as f64);
            (p.rate(), var, p.n)
        }
    }
}

/// Judges one guardrail: a fail when the whole always-valid interval of the regression is above
/// what is allowed, a pass when it is all within it, inconclusive otherwise (and when a side has
/// nothing to measure or its spread is unknown).
pub fn check(g: &Guardrail, alpha: f64, candidate: &Figures, baseline: &Figures) -> Check {
    let (c, c_var, c_n) = estimate(g.metric, candidate);
    let (b, b_var, b_n) = estimate(g.metric, baseline);
    let allowed = match g.limit {
        Limit::Absolute(a) => a,
        Limit::Relative(r) => r * b.abs(),
    };
    let (worse, sign) = match g.direction {
        Direction::Increase => ("more", 1.0),
        Direction::Decrease => ("less", -1.0),
    };
    let head = format!(
        "{} {} vs baseline {}",
        g.metric.label(),
        g.metric.show(c),
        g.metric.show(b)
    );
    let limit_text = match g.limit {
        Limit::Absolute(_) => g.metric.show(allowed),
        Limit::Relative(r) => format!("{:.0} % ({})", r * 100.0, g.metric.show(allowed)),
    };
    let (verdict, why) = match (c_var, b_var) {
        _ if c_n == 0 || b_n == 0 => (
            Verdict::Inconclusive,
            format!("{}: nothing to measure on one side yet", g.metric.label()),
        ),
        (Some(cv), Some(bv)) => {
            let regression = sign * (c - b);
            // Tuned to the allowed regression; a floor keeps a zero allowance testable.
            let tau = allowed.abs().max(1e-6 * b.abs().max(1e-6));
            let r = stats::mixture_radius(cv + bv, alpha, tau);
            if regression - r > allowed {
                let why = format!(
                    "{head}: at least {} {worse}, more than the {limit_text} allowed",
                    g.metric.show(regression - r)
                );
                (Verdict::Fail, why)
            } else if regression + r <= allowed {
                (Verdict::Pass, format!("{head}: within {limit_text}"))
            } else {
                (
                    Verdict::Inconclusive,
                    format!("{head}: cannot tell yet whether it is within {limit_text}"),
                )
            }
        }
        _ => (
            Verdict::Inconclusive,
            format!(
                "{}: its spread is unknown for sessions stored before the registry kept it",
                g.metric.label()
            ),
        ),
    };
    Check {
        metric: g.metric.label().into(),
        candidate: c,
        baseline: b,
        limit: allowed,
        verdict,
        why,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` sessions, each costing one of `costs` in turn (USD).
    fn costing(n: u64, costs: &[f64]) -> Figures {
        let mut f = Figures {
            sessions: n,
            ..Figures::default()
        };
        for i in 0..n as usize {
            let micros = costs[i % costs.len()] * 1e6;
            f.cost.sum += micros;
            f.cost.sq += micros * micros;
        }
        f
    }

    fn cost(limit: Limit) -> Guardrail {
        Guardrail {
            metric: Metric::CostPerSession,
            direction: Direction::Increase,
            limit,
        }
    }

    #[test]
    fn a_candidate_costing_twice_as_much_fails_and_one_costing_the_same_passes() {
        let base = costing(2000, &[0.02, 0.05, 0.08]);
        let double = costing(300, &[0.04, 0.10, 0.16]);
        let c = check(&cost(Limit::Relative(0.25)), 0.05, &double, &base);
        assert_eq!(c.verdict, Verdict::Fail, "{c:?}");
        assert!(
            c.why
                .starts_with("cost per session $0.1000 vs baseline $0.0500: at least $0."),
            "{}",
            c.why
        );
        assert!(c.why.ends_with("more than the 25 % ($0.0125) allowed"), "{}", c.why);
        let same = costing(2000, &[0.05, 0.02, 0.08]);
        assert_eq!(
            check(&cost(Limit::Relative(0.25)), 0.05, &same, &base).verdict,
            Verdict::Pass
        );
        // Few sessions and a close call: wait for more.
        let close = costing(20, &[0.03, 0.06, 0.09]);
        assert_eq!(
            check(&cost(Limit::Relative(0.25)), 0.05, &close, &base).verdict,
            Verdict::Inconclusive
        );
    }

    #[test]
    fn the_direction_says_which_way_is_worse_and_an_unknown_spread_is_never_a_pass() {
        let base = costing(2000, &[0.02, 0.05, 0.08]);
        let cheaper = costing(2000, &[0.01, 0.025, 0.04]);
        let mut g = cost(Limit::Absolute(5_000.0));
        assert_eq!(check(&g, 0.05, &cheaper, &base).verdict, Verdict::Pass);
        g.direction = Direction::Decrease;
        assert_eq!(check(&g, 0.05, &cheaper, &base).verdict, Verdict::Fail);
        // Rows from before sums of squares were kept: sums without squares.
        let mut old = costing(2000, &[0.05]);
        old.cost.sq = 0.0;
        let c = check(&cost(Limit::Relative(0.25)), 0.05, &old, &base);
        assert_eq!(c.verdict, Verdict::Inconclusive);
        assert!(c.why.contains("spread is unknown"), "{}", c.why);
    }

    #[test]
    fn the_command_failure_rate_is_a_share_of_commands() {
        let f = |commands, failed| Figures {
            sessions: 1000,
            commands,
            commands_failed: failed,
            ..Figures::default()
        };
        let g = Guardrail {
            metric: Metric::CommandFailureRate,
            direction: Direction::Increase,
            limit: Limit::Absolute(0.02),
        };
        let c = check(&g, 0.05, &f(8000, 1600), &f(8000, 160));
        assert_eq!(c.verdict, Verdict::Fail, "{c:?}");
        assert!(
            c.why.starts_with("command failure rate 20.00 % vs baseline 2.00 %"),
            "{}",
            c.why
        );
        assert_eq!(check(&g, 0.05, &f(8000, 170), &f(8000, 160)).verdict, Verdict::Pass);
        assert_eq!(check(&g, 0.05, &f(0, 0), &f(8000, 160)).verdict, Verdict::Inconclusive);
        assert!("cost".parse::<Metric>().unwrap_err().contains("cost_per_session"));
    }

    #[test]
    fn sides_without_any_spread_are_still_judged() {
        // Every session costs the same, or no session has an approval gate: no variance at all.
        let flat = |n: u64, usd: f64| costing(n, &[usd]);
        let g = cost(Limit::Relative(0.25));
        assert_eq!(
            check(&g, 0.05, &flat(100_000, 0.04), &flat(900_000, 0.04)).verdict,
            Verdict::Pass
        );
        assert_eq!(
            check(&g, 0.05, &flat(1_000, 0.08), &flat(9_000, 0.04)).verdict,
            Verdict::Fail
        );
        let gates = Guardrail {
            metric: Metric::ApprovalGateRate,
            direction: Direction::Increase,
            limit: Limit::Absolute(0.1),
        };
        let none = Figures {
            sessions: 500,
            ..Figures::default()
        };
        assert_eq!(check(&gates, 0.05, &none, &none).verdict, Verdict::Pass);
    }
}
