//! `GET /metrics`: the control plane for the platform's own monitoring, in the Prometheus text
//! exposition format (version 0.0.4). This process's counters (requests and their latencies by
//! route, telemetry sessions and batches ingested) are kept here; rollouts, decisions, builds'
//! failure rates and the alert outbox are read from the registry at each scrape, so every replica
//! and a restarted one answer the same.

use crate::registry::{Registry, RolloutRow};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the request latency histogram, in seconds.
const BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// This process's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// (route, status code) → latencies.
    requests: Mutex<BTreeMap<(String, u16), Histogram>>,
    sessions: AtomicU64,
    batches: AtomicU64,
    /// (signal, result) → OTLP log records or metric points.
    otlp: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
}

impl Metrics {
    /// One answered request: the route it matched (its pattern, never the raw path, so label
    /// values stay few) and its status.
    pub fn observe(&self, route: &str, status: u16, took: Duration) {
        let mut all = self.requests.lock().expect("metrics lock");
        let h = all.entry((route.to_string(), status)).or_default();
        let secs = took.as_secs_f64();
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    /// A telemetry batch taken, with how many sessions were new.
    pub fn ingested(&self, new: usize) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.sessions.fetch_add(new as u64, Ordering::Relaxed);
    }
}

impl Metrics {
    /// OTLP items of `signal` (`logs`, `metrics`) received, by what became of them: `accepted`
    /// (new), `duplicate` (taken before) or `rejected`.
    pub fn otlp(&self, signal: &'static str, counts: [(&'static str, u64); 3]) {
        let mut all = self.otlp.lock().expect("metrics lock");
        for (result, n) in counts {
            *all.entry((signal, result)).or_default() += n;
        }
    }
}

/// Writes the exposition format: a family's `# HELP` and `# TYPE` once, then its samples, label
/// values escaped as the format says (backslash, double quote, line feed).
#[derive(Default)]
pub struct Exposition {
    out: String,
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

impl Exposition {
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            let l: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
                .collect();
            let _ = write!(self.out, "{{{}}}", l.join(","));
        }
        let _ = writeln!(self.out, " {}", number(value));
    }

    pub fn finish(self) -> String {
        self.out
    }
}

fn process_part(m: &Metrics, e: &mut Exposition) {
    e.family(
        "canary_telemetry_sessions_ingested_total",
        "counter",
        "Telemetry sessions this process stored (new ones; a batch sent again counts once).",
    );
    e.sample(
        "canary_telemetry_sessions_ingested_total",
        &[],
        m.sessions.load(Ordering::Relaxed) as f64,
    );
    e.family(
        "canary_telemetry_batches_total",
        "counter",
        "Telemetry batches this process took.",
    );
    e.sample(
        "canary_telemetry_batches_total",
        &[],
        m.batches.load(Ordering::Relaxed) as f64,
    );
    e.family(
        "canary_otlp_items_total",
        "counter",
        "OpenTelemetry the CLIs exported to /otlp: log records and metric points by result (accepted: new; duplicate: taken before; rejected: no session of the sender's, or out of bounds).",
    );
    for ((signal, result), n) in m.otlp.lock().expect("metrics lock").iter() {
        e.sample(
            "canary_otlp_items_total",
            &[("signal", signal), ("result", result)],
            *n as f64,
        );
    }
    e.family(
        "canary_http_request_duration_seconds",
        "histogram",
        "Time to answer a request, by route pattern and status code.",
    );
    let all = m.requests.lock().expect("metrics lock").clone();
    for ((route, status), h) in &all {
        let code = status.to_string();
        for (le, n) in BUCKETS.iter().zip(h.counts) {
            let le = le.to_string();
            let labels = [("route", route.as_str()), ("code", code.as_str()), ("le", le.as_str())];
            e.sample("canary_http_request_duration_seconds_bucket", &labels, n as f64);
        }
        let inf = [("route", route.as_str()), ("code", code.as_str()), ("le", "+Inf")];
        e.sample("canary_http_request_duration_seconds_bucket", &inf, h.count as f64);
        let labels = [("route", route.as_str()), ("code", code.as_str())];
        e.sample("canary_http_request_duration_seconds_sum", &labels, h.sum);
        e.sample("canary_http_request_duration_seconds_count", &labels, h.count as f64);
    }
}

async fn rollout_part(reg: &Registry, active: &[RolloutRow], e: &mut Exposition) -> crate::error::Result<()> {
    e.family(
        "canary_rollout_step",
        "gauge",
        "The step (1-based) of each active rollout.",
    );
    for r in active {
        let id = r.id.to_string();
        let labels = [
            ("rollout", id.as_str()),
            ("channel", r.channel.as_str()),
            ("build", r.build_id.as_str()),
            ("state", r.state.as_str()),
        ];
        e.sample("canary_rollout_step", &labels, (r.step + 1) as f64);
    }
    e.family(
        "canary_rollout_percent",
        "gauge",
        "The share of its channel's sessions each active rollout's candidate gets, in percent.",
    );
    for r in active {
        let id = r.id.to_string();
        let percent = r.steps.get(r.step).copied().unwrap_or(100.0);
        e.sample(
            "canary_rollout_percent",
            &[("rollout", id.as_str()), ("channel", r.channel.as_str())],
            percent,
        );
    }
    e.family(
        "canary_rollout_decisions_total",
        "counter",
        "Rollout transitions written, by kind (start, advance, hold, abort, complete, pause, resume).",
    );
    for (kind, n) in reg.rollout_event_counts().await? {
        e.sample("canary_rollout_decisions_total", &[("kind", kind.as_str())], n as f64);
    }
    e.family(
        "canary_rollout_alerts",
        "gauge",
        "Rollout alerts in the outbox, by state (pending, delivered, failed).",
    );
    for (state, n) in reg.alert_counts().await? {
        e.sample("canary_rollout_alerts", &[("state", state.as_str())], n as f64);
    }
    Ok(())
}

/// The failure rate and sessions of every build a channel or an active rollout runs, over the
/// last hour.
async fn build_part(
    reg: &Registry,
    active: &[RolloutRow],
    now: jiff::Timestamp,
    e: &mut Exposition,
) -> crate::error::Result<()> {
    let mut builds = std::collections::BTreeSet::new();
    builds.extend(reg.fleet_state().await?.channels.into_values());
    for r in active {
        builds.insert(r.build_id.clone());
        builds.insert(r.baseline_id.clone());
    }
    let since = crate::registry::rollup_second(now - jiff::SignedDuration::from_hours(1));
    let mut figures = Vec::new();
    for b in &builds {
        figures.push((b, reg.figures(b, None, &since).await?));
    }
    e.family(
        "canary_build_sessions_last_hour",
        "gauge",
        "Sessions reported in the last hour, by build.",
    );
    for (b, f) in &figures {
        e.sample(
            "canary_build_sessions_last_hour",
            &[("build", b.as_str())],
            f.sessions as f64,
        );
    }
    e.family(
        "canary_build_failure_rate_last_hour",
        "gauge",
        "Failed and timed-out sessions over sessions in the last hour, by build (absent with no session).",
    );
    for (b, f) in figures.iter().filter(|(_, f)| f.sessions > 0) {
        e.sample(
            "canary_build_failure_rate_last_hour",
            &[("build", b.as_str())],
            f.failure_rate(),
        );
    }
    Ok(())
}

/// The whole scrape.
pub async fn render(
    m: &Metrics,
    replica: &crate::replica::Replica,
    reg: &Registry,
    now: jiff::Timestamp,
) -> crate::error::Result<String> {
    let mut e = Exposition::default();
    e.family(
        "canary_controller_leader",
        "gauge",
        "1 when this replica holds the controller lease (runs rollouts, the train, alerts), else 0.",
    );
    e.sample(
        "canary_controller_leader",
        &[("replica", &replica.id)],
        f64::from(u8::from(replica.leading())),
    );
    process_part(m, &mut e);
    // The active rollouts, read once for both parts.
    let active = reg.rollouts(true, 100).await?;
    rollout_part(reg, &active, &mut e).await?;
    build_part(reg, &active, now, &mut e).await?;
    Ok(e.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_escapes_label_values_and_help() {
        let mut e = Exposition::default();
        e.family("x_total", "counter", "A help\nwith a \\ in it.");
        e.sample("x_total", &[("route", "/v1/\"q\"\n\\")], 3.0);
        e.sample("x_total", &[], f64::INFINITY);
        assert_eq!(
            e.finish(),
            "# HELP x_total A help\\nwith a \\\\ in it.\n# TYPE x_total counter\nx_total{route=\"/v1/\\\"q\\\"\\n\\\\\"} 3\nx_total +Inf\n"
        );
    }

    #[test]
    fn latencies_fall_into_cumulative_buckets() {
        let m = Metrics::default();
        m.observe("/v1/assignment", 200, Duration::from_micros(1500));
        m.observe("/v1/assignment", 200, Duration::from_millis(30));
        m.ingested(250);
        let mut e = Exposition::default();
        process_part(&m, &mut e);
        let text = e.finish();
        for line in [
            "canary_http_request_duration_seconds_bucket{route=\"/v1/assignment\",code=\"200\",le=\"0.001\"} 0",
            "canary_http_request_duration_seconds_bucket{route=\"/v1/assignment\",code=\"200\",le=\"0.0025\"} 1",
            "canary_http_request_duration_seconds_bucket{route=\"/v1/assignment\",code=\"200\",le=\"0.05\"} 2",
            "canary_http_request_duration_seconds_bucket{route=\"/v1/assignment\",code=\"200\",le=\"+Inf\"} 2",
            "canary_http_request_duration_seconds_count{route=\"/v1/assignment\",code=\"200\"} 2",
            "canary_telemetry_sessions_ingested_total 250",
            "canary_telemetry_batches_total 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line}\n{text}");
        }
    }
}
