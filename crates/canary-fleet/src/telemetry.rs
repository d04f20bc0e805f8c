//! Session telemetry from the fleet (`POST /v1/telemetry`): untrusted JSON, checked field by
//! field before anything is stored; the rollups decisions and KPIs read; the KPIs themselves.

use canary_contract::BuildId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The largest telemetry body, and the most sessions one batch may carry.
pub const MAX_BODY: usize = 1024 * 1024;
pub const MAX_SESSIONS: usize = 2000;
/// How far a runner's `started_at` may lie in the future of the control plane's clock before it
/// is bounded to it, and how far in the past.
pub const MAX_SKEW_AHEAD: std::time::Duration = std::time::Duration::from_secs(300);
pub const MAX_AGE: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionEnd {
    Ok,
    Failed,
    Disconnected,
    TimedOut,
}

canary_contract::words!(SessionEnd, "a session end", {
    Ok => "ok",
    Failed => "failed",
    Disconnected => "disconnected",
    TimedOut => "timed_out",
});

/// One finished session as a runner reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionReport {
    pub runner: String,
    pub org: String,
    pub session: String,
    pub build: String,
    pub started_at: String,
    /// Until the session's terminal was ready; absent or null when it never started.
    pub start_latency_ms: Option<u64>,
    pub outcome: SessionEnd,
    /// The usage figures (`commands`, `commands_failed`, `approvals`, `tokens`, `cost_usd`):
    /// all given, or all left out, in which case the control plane takes them from the CLI's
    /// own OpenTelemetry events for the session (`/otlp/v1/logs`).
    pub commands: Option<u64>,
    pub commands_failed: Option<u64>,
    pub approvals: Option<u64>,
    pub approval_wait_ms: u64,
    pub tokens: Option<u64>,
    pub cost_usd: Option<f64>,
    pub duration_ms: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch {
    sessions: Vec<SessionReport>,
}

/// A checked session, as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Session {
    pub runner: String,
    pub org: String,
    pub session: String,
    pub build: BuildId,
    /// The runner's start time, bounded to [received − 7 days, received + 5 min] and then to
    /// at most `received_at`.
    pub started_at: String,
    pub start_latency_ms: Option<i64>,
    pub outcome: SessionEnd,
    #[serde(flatten)]
    pub usage: SessionUsage,
    /// The report left its usage out: `commands`, `commands_failed`, `approvals`, `tokens` and
    /// `cost_micros` are zero until filled from the session's OpenTelemetry ([`fill_usage`]).
    pub usage_from_otel: bool,
    /// The comparison its assignment put it in (`rollout::cohort_label`), or `""`: set by the
    /// control plane from the recorded assignment, never by the runner.
    pub cohort: String,
}

/// What sessions used: one session's figures, or the sum of many ([`Sums`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionUsage {
    pub commands: i64,
    pub commands_failed: i64,
    pub approvals: i64,
    pub approval_wait_ms: i64,
    pub tokens: i64,
    pub cost_micros: i64,
    pub duration_ms: i64,
}

impl SessionUsage {
    pub fn add(&mut self, o: &SessionUsage) {
        self.commands += o.commands;
        self.commands_failed += o.commands_failed;
        self.approvals += o.approvals;
        self.approval_wait_ms += o.approval_wait_ms;
        self.tokens += o.tokens;
        self.cost_micros += o.cost_micros;
        self.duration_ms += o.duration_ms;
    }
}

/// Why a batch was refused: the first bad session and field, so the runner's log says which.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BatchError {
    /// Index of the session in `sessions`, when the fault is in one.
    pub index: Option<usize>,
    pub field: Option<String>,
    pub message: String,
}

impl std::fmt::Display for BatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.index, &self.field) {
            (Some(i), Some(field)) => write!(f, "sessions[{i}].{field}: {}", self.message),
            (Some(i), None) => write!(f, "sessions[{i}]: {}", self.message),
            _ => f.write_str(&self.message),
        }
    }
}

pub use canary_runner::names::is_id;

const LIMITS: [(&str, u64); 7] = [
    ("start_latency_ms", 86_400_000),
    ("commands", 1_000_000),
    ("commands_failed", 1_000_000),
    ("approvals", 100_000),
    ("approval_wait_ms", 7 * 86_400_000),
    ("tokens", 1_000_000_000_000),
    ("duration_ms", 7 * 86_400_000),
];

/// Parses and checks a batch received at `now`. All or nothing: one bad session refuses the
/// batch, so a runner never half-sends; it is told which session and field.
pub fn parse_batch(body: &[u8], now: jiff::Timestamp) -> Result<Vec<Session>, BatchError> {
    let whole = |message: String| BatchError {
        index: None,
        field: None,
        message,
    };
    if body.len() > MAX_BODY {
        return Err(whole(format!("the body is {} bytes, more than {MAX_BODY}", body.len())));
    }
    let batch: Batch = serde_json::from_slice(body).map_err(|e| {
        whole(format!(
            "not a telemetry batch ({}); send {{\"sessions\": [...]}}",
            crate::text::clean(&e.to_string())
        ))
    })?;
    if batch.sessions.len() > MAX_SESSIONS {
        return Err(whole(format!(
            "{} sessions in one batch, more than {MAX_SESSIONS}",
            batch.sessions.len()
        )));
    }
    let earliest = now - jiff::SignedDuration::try_from(MAX_AGE).expect("small");
    let latest = now + jiff::SignedDuration::try_from(MAX_SKEW_AHEAD).expect("small");
    let mut out = Vec::with_capacity(batch.sessions.len());
    let mut seen = std::collections::BTreeSet::new();
    for (i, s) in batch.sessions.into_iter().enumerate() {
        let bad = |field: &str, message: String| BatchError {
            index: Some(i),
            field: Some(field.to_string()),
            message,
        };
        let (started, build) =
            check_session(&s, now, (earliest, latest)).map_err(|(field, message)| bad(field, message))?;
        if !seen.insert((s.runner.clone(), s.session.clone())) {
            return Err(bad(
                "session",
                "appears twice in the batch; a session is reported once, with its final outcome".into(),
            ));
        }
        if s.outcome == SessionEnd::Ok && s.start_latency_ms.is_none() {
            return Err(bad(
                "start_latency_ms",
                "is null for an ok session: a session that never started cannot end ok".into(),
            ));
        }
        let (usage_from_otel, (commands, commands_failed), cost_usd) =
            check_usage(&s).map_err(|(field, message)| bad(field, message))?;
        out.push(Session {
            runner: s.runner,
            org: s.org,
            session: s.session,
            build,
            started_at: canary_contract::time::format_ts(started),
            start_latency_ms: s.start_latency_ms.map(|v| v as i64),
            outcome: s.outcome,
            usage: SessionUsage {
                commands: commands as i64,
                commands_failed: commands_failed as i64,
                approvals: s.approvals.unwrap_or(0) as i64,
                approval_wait_ms: s.approval_wait_ms as i64,
                tokens: s.tokens.unwrap_or(0) as i64,
                cost_micros: (cost_usd * 1e6).round() as i64,
                duration_ms: s.duration_ms as i64,
            },
            usage_from_otel,
            cohort: String::new(),
        });
    }
    Ok(out)
}

/// A field at fault, and why.
type FieldError = (&'static str, String);

/// A report's usage figures: whether they are left out (for the CLI's OpenTelemetry), the
/// commands run and failed, and the cost; or the field at fault and why.
fn check_usage(s: &SessionReport) -> Result<(bool, (u64, u64), f64), FieldError> {
    let left_out = usage_left_out(s).map_err(|field| {
        (
            field,
            "is left out while other usage figures are given: send all of commands, commands_failed, approvals, tokens and cost_usd, or none (to take them from the CLI's OpenTelemetry)".to_string(),
        )
    })?;
    let (commands, failed) = (s.commands.unwrap_or(0), s.commands_failed.unwrap_or(0));
    if failed > commands {
        return Err(("commands_failed", format!("{failed} failed of {commands} commands")));
    }
    let cost_usd = s.cost_usd.unwrap_or(0.0);
    if !(cost_usd.is_finite() && (0.0..=10_000.0).contains(&cost_usd)) {
        return Err(("cost_usd", format!("{cost_usd} is not between 0 and 10000")));
    }
    Ok((left_out, (commands, failed), cost_usd))
}

/// Whether a report leaves its usage figures out (all of them), or the first one left out of
/// some.
fn usage_left_out(s: &SessionReport) -> Result<bool, &'static str> {
    let given = [
        ("commands", s.commands.is_some()),
        ("commands_failed", s.commands_failed.is_some()),
        ("approvals", s.approvals.is_some()),
        ("tokens", s.tokens.is_some()),
        ("cost_usd", s.cost_usd.is_some()),
    ];
    match given.iter().filter(|(_, g)| *g).count() {
        0 => Ok(true),
        5 => Ok(false),
        _ => Err(given
            .iter()
            .find(|(_, g)| !g)
            .map(|(f, _)| *f)
            .expect("one is left out")),
    }
}

/// Fills a session whose report left its usage out with what the CLI's OpenTelemetry said.
pub fn fill_usage(s: &mut Session, u: &crate::otlp::Usage) {
    let n = |v: u64| v.min(i64::MAX as u64) as i64;
    s.usage.commands = n(u.commands);
    s.usage.commands_failed = n(u.commands_failed.min(u.commands));
    s.usage.approvals = n(u.approvals);
    s.usage.tokens = n(u.tokens);
    s.usage.cost_micros = n(u.cost_micros);
}

/// One session's ids (its build a build id), org, start time (within `window`) and numbers (within [`LIMITS`]);
/// returns its start bounded to `now` and its build, or the field at fault and why.
fn check_session(
    s: &SessionReport,
    now: jiff::Timestamp,
    (earliest, latest): (jiff::Timestamp, jiff::Timestamp),
) -> Result<(jiff::Timestamp, BuildId), (&'static str, String)> {
    for (field, v) in [("runner", &s.runner), ("session", &s.session)] {
        if !is_id(v) {
            return Err((
                field,
                format!(
                    "`{}` is not an id (1 to 128 letters, digits, `.`, `_`, `:`, `-`)",
                    crate::text::clean(&v.chars().take(64).collect::<String>())
                ),
            ));
        }
    }
    if canary_runner::names::check_name("org", &s.org).is_err() {
        return Err((
            "org",
            format!(
                "`{}` is not an org name (1 to 64 letters, digits, `.`, `_`, `-`)",
                crate::text::clean(&s.org.chars().take(64).collect::<String>())
            ),
        ));
    }
    let started: jiff::Timestamp = s.started_at.parse().map_err(|_| {
        (
            "started_at",
            format!(
                "`{}` is not an RFC 3339 time",
                crate::text::clean(&s.started_at.chars().take(64).collect::<String>())
            ),
        )
    })?;
    if started < earliest || started > latest {
        return Err((
            "started_at",
            format!(
                "{started} is more than 7 days before or 5 minutes after the control plane's clock ({now}); check the runner's clock"
            ),
        ));
    }
    let numbers = [
        s.start_latency_ms.unwrap_or(0),
        s.commands.unwrap_or(0),
        s.commands_failed.unwrap_or(0),
        s.approvals.unwrap_or(0),
        s.approval_wait_ms,
        s.tokens.unwrap_or(0),
        s.duration_ms,
    ];
    for ((field, max), v) in LIMITS.iter().zip(numbers) {
        if v > *max {
            return Err((field, format!("{v} is more than {max}")));
        }
    }
    let build: BuildId = s.build.parse().map_err(|e| ("build", e))?;
    // A runner a little ahead of us is bounded to our clock: history never runs backwards.
    Ok((started.min(now), build))
}

/// Sums of one build over a window: one rollup row, or many added up.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sums {
    pub sessions: i64,
    pub started: i64,
    pub ok: i64,
    pub failed: i64,
    pub disconnected: i64,
    pub timed_out: i64,
    #[serde(flatten)]
    pub usage: SessionUsage,
    pub start_latency_ms: i64,
    /// Sums of squares of each session's cost (micros), tokens and approvals: with the sums,
    /// the variances the guardrails on per-session means are judged with.
    #[serde(default)]
    pub cost_sq: f64,
    #[serde(default)]
    pub tokens_sq: f64,
    #[serde(default)]
    pub approvals_sq: f64,
}

impl Sums {
    pub fn add(&mut self, s: &Session) {
        self.sessions += 1;
        if let Some(l) = s.start_latency_ms {
            self.started += 1;
            self.start_latency_ms += l;
        }
        match s.outcome {
            SessionEnd::Ok => self.ok += 1,
            SessionEnd::Failed => self.failed += 1,
            SessionEnd::Disconnected => self.disconnected += 1,
            SessionEnd::TimedOut => self.timed_out += 1,
        }
        self.usage.add(&s.usage);
        self.cost_sq += (s.usage.cost_micros as f64).powi(2);
        self.tokens_sq += (s.usage.tokens as f64).powi(2);
        self.approvals_sq += (s.usage.approvals as f64).powi(2);
    }
}

/// Histogram buckets are powers of 1.05 (5 % wide): bucket 0 holds 0 ms, bucket `b` holds
/// (1.05^(b-1), 1.05^b].
pub fn hist_bucket(ms: i64) -> i64 {
    if ms <= 0 {
        0
    } else {
        ((ms as f64).ln() / 1.05f64.ln()).ceil().max(0.0) as i64 + 1
    }
}

/// The upper bound of a bucket, in ms.
pub fn hist_upper(bucket: i64) -> u64 {
    if bucket <= 0 {
        0
    } else {
        1.05f64.powi((bucket - 1) as i32).ceil() as u64
    }
}

/// The `q` quantile (0.95) of a histogram given as (bucket, count); `None` when empty.
pub fn quantile(hist: &BTreeMap<i64, i64>, q: f64) -> Option<u64> {
    let total: i64 = hist.values().sum();
    if total <= 0 {
        return None;
    }
    let rank = (q * total as f64).ceil().max(1.0) as i64;
    let mut seen = 0;
    for (b, n) in hist {
        seen += n;
        if seen >= rank {
            return Some(hist_upper(*b));
        }
    }
    hist.keys().last().map(|b| hist_upper(*b))
}

/// Per build: the sums and the `start` / `approval` histograms of a set of sessions.
/// Sums and histograms per (build, cohort).
pub type Rollup = BTreeMap<(BuildId, String), (Sums, BTreeMap<(&'static str, i64), i64>)>;

pub fn rollup<'a>(sessions: impl IntoIterator<Item = &'a Session>) -> Rollup {
    let mut out: Rollup = BTreeMap::new();
    for s in sessions {
        let (sums, hist) = out.entry((s.build.clone(), s.cohort.clone())).or_default();
        sums.add(s);
        if let Some(l) = s.start_latency_ms {
            *hist.entry(("start", hist_bucket(l))).or_default() += 1;
        }
        if s.usage.approvals > 0 {
            *hist
                .entry(("approval", hist_bucket(s.usage.approval_wait_ms / s.usage.approvals)))
                .or_default() += 1;
        }
    }
    out
}

/// The seed's KPIs (§10) of a build or channel over a window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Kpis {
    pub sessions: i64,
    /// Sessions whose terminal became ready, of all.
    pub session_start_success_pct: Option<f64>,
    /// Mean start latency of the sessions that started.
    pub avg_time_to_terminal_ms: Option<f64>,
    pub p95_time_to_terminal_ms: Option<u64>,
    pub failure_rate_pct: Option<f64>,
    pub disconnect_rate_pct: Option<f64>,
    pub command_failure_rate_pct: Option<f64>,
    pub approval_gates: i64,
    pub median_approval_resolution_ms: Option<u64>,
    pub tokens: i64,
    pub cost_usd: f64,
    pub cost_per_agent_hour_usd: Option<f64>,
}

fn share(a: i64, b: i64) -> Option<f64> {
    (b > 0).then(|| (a as f64 * 10_000.0 / b as f64).round() / 100.0)
}

pub fn kpis(s: &Sums, start_hist: &BTreeMap<i64, i64>, approval_hist: &BTreeMap<i64, i64>) -> Kpis {
    let u = &s.usage;
    let hours = u.duration_ms as f64 / 3_600_000.0;
    Kpis {
        sessions: s.sessions,
        session_start_success_pct: share(s.started, s.sessions),
        avg_time_to_terminal_ms: (s.started > 0).then(|| (s.start_latency_ms as f64 / s.started as f64).round()),
        p95_time_to_terminal_ms: quantile(start_hist, 0.95),
        failure_rate_pct: share(s.failed + s.timed_out, s.sessions),
        disconnect_rate_pct: share(s.disconnected, s.sessions),
        command_failure_rate_pct: share(u.commands_failed, u.commands),
        approval_gates: u.approvals,
        median_approval_resolution_ms: quantile(approval_hist, 0.5),
        tokens: u.tokens,
        cost_usd: u.cost_micros as f64 / 1e6,
        cost_per_agent_hour_usd: (hours > 0.0).then(|| ((u.cost_micros as f64 / 1e6) / hours * 100.0).round() / 100.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> jiff::Timestamp {
        "2026-11-22T12:00:00Z".parse().unwrap()
    }

    fn one(extra: &str) -> String {
        format!(
            r#"{{"sessions": [{{"runner": "r-1", "org": "acme", "session": "s-1", "build": "sha256:ab", "started_at": "2026-11-22T11:59:00Z", "start_latency_ms": 900, "outcome": "ok", "commands": 4, "commands_failed": 1, "approvals": 2, "approval_wait_ms": 3000, "tokens": 1200, "cost_usd": 0.25, "duration_ms": 60000{extra}}}]}}"#
        )
    }

    #[test]
    fn a_good_batch_parses() {
        let s = parse_batch(one("").as_bytes(), now()).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].usage.cost_micros, s[0].start_latency_ms), (250_000, Some(900)));
    }

    #[test]
    fn bad_sessions_are_refused_with_their_index_and_field() {
        let cases = [
            (one(", \"extra\": 1"), "unknown field"),
            (one("").replace("\"r-1\"", "\"r\\u001b[2J\""), "sessions[0].runner"),
            (one("").replace("\"acme\"", "\"../etc\""), "sessions[0].org"),
            (one("").replace("sha256:ab", "latest"), "sessions[0].build"),
            (one("").replace("\"ok\"", "\"great\""), "unknown variant"),
            (
                one("").replace("\"commands_failed\": 1", "\"commands_failed\": 9"),
                "sessions[0].commands_failed",
            ),
            (one("").replace("0.25", "-1"), "sessions[0].cost_usd"),
            (
                one("").replace("2026-11-22T11:59:00Z", "2026-11-22T13:00:00Z"),
                "sessions[0].started_at",
            ),
            (
                one("").replace("2026-11-22T11:59:00Z", "yesterday"),
                "sessions[0].started_at",
            ),
            (one("").replace("\"commands\": 4", "\"commands\": -4"), "invalid value"),
            ("[]".to_string(), "not a telemetry batch"),
        ];
        for (body, says) in cases {
            let e = parse_batch(body.as_bytes(), now()).unwrap_err().to_string();
            assert!(e.contains(says), "{says}: {e}");
        }
        let big = format!(r#"{{"sessions": [{}]}}"#, vec!["{}"; MAX_SESSIONS + 1].join(","));
        assert!(parse_batch(big.as_bytes(), now()).is_err());
    }

    #[test]
    fn a_runner_slightly_ahead_is_bounded_to_our_clock() {
        let s = parse_batch(
            one("")
                .replace("2026-11-22T11:59:00Z", "2026-11-22T12:03:00Z")
                .as_bytes(),
            now(),
        )
        .unwrap();
        assert_eq!(s[0].started_at, "2026-11-22T12:00:00.000Z");
    }

    #[test]
    fn quantiles_come_within_a_bucket() {
        let sessions: Vec<Session> = (1..=1000)
            .map(|i| {
                let mut s = parse_batch(one("").as_bytes(), now()).unwrap().remove(0);
                s.start_latency_ms = Some(i);
                s
            })
            .collect();
        let r = rollup(&sessions);
        let (sums, hist) = &r[&("sha256:ab".parse().unwrap(), String::new())];
        assert_eq!(sums.sessions, 1000);
        let start: BTreeMap<i64, i64> = hist
            .iter()
            .filter(|((m, _), _)| *m == "start")
            .map(|((_, b), n)| (*b, *n))
            .collect();
        let p95 = quantile(&start, 0.95).unwrap() as f64;
        assert!((p95 - 950.0).abs() <= 950.0 * 0.06, "{p95}");
        let k = kpis(sums, &start, &BTreeMap::new());
        assert_eq!(k.command_failure_rate_pct, Some(25.0));
        assert_eq!(k.cost_per_agent_hour_usd, Some(15.0));
    }
}
