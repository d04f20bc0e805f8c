//! `canary kpis`: the fleet's KPIs per build from rolled-up telemetry, for a build, a channel's
//! current build and rollout candidate, or every channel.

use crate::error::{LabError, Result};
use crate::registry::Registry;
use canary_contract::BuildId;
use canary_contract::build::short_id as short;
use serde::Serialize;
use std::time::Duration;

/// One build's KPIs and why it is listed (`stable (current)`, `beta (rollout 3 candidate)`).
#[derive(Debug, Serialize)]
pub struct BuildKpis {
    pub build: BuildId,
    pub role: String,
    pub kpis: serde_json::Value,
}

#[derive(Debug, Serialize)]
pub struct Kpis {
    pub since: String,
    pub builds: Vec<BuildKpis>,
}

async fn rows(reg: &Registry, build: Option<&str>, only: Option<&str>) -> Result<Vec<(BuildId, String)>> {
    if let Some(b) = build {
        return Ok(vec![(reg.resolve_build(b).await?, "build".into())]);
    }
    let state = reg.fleet_state().await?;
    let mut rows = Vec::new();
    for (channel, build) in &state.channels {
        if only.is_none_or(|c| *channel == *c) {
            rows.push((build.clone(), format!("{channel} (current)")));
        }
    }
    for (channel, r) in &state.rollouts {
        if only.is_none_or(|c| *channel == *c) {
            rows.push((r.build.clone(), format!("{channel} (rollout {} candidate)", r.id)));
        }
    }
    if let Some(c) = only {
        if rows.is_empty() {
            return Err(LabError::usage(
                format!("channel {c} has no build"),
                "`canary status` lists the channels",
            ));
        }
    }
    Ok(rows)
}

/// The KPIs of the builds asked for, from telemetry since `since` ago.
pub async fn kpis(reg: &Registry, build: Option<&str>, channel: Option<&str>, since: Duration) -> Result<Kpis> {
    let since_ts = jiff::Timestamp::now()
        .checked_sub(jiff::SignedDuration::try_from(since).unwrap_or(jiff::SignedDuration::MAX))
        .unwrap_or(jiff::Timestamp::MIN);
    let from = crate::registry::rollup_second(since_ts);
    let mut builds = Vec::new();
    for (build, role) in rows(reg, build, channel).await? {
        let (sums, start, approval) = reg.telemetry_sums(&build, &from).await?;
        let kpis = serde_json::to_value(crate::telemetry::kpis(&sums, &start, &approval)).expect("json");
        builds.push(BuildKpis { build, role, kpis });
    }
    Ok(Kpis {
        since: since_ts.to_string(),
        builds,
    })
}

/// The KPIs as terminal lines (`–` where a figure has no data yet).
pub fn lines(k: &Kpis, since: Duration) -> Vec<String> {
    let f = |v: &serde_json::Value, unit: &str| match v.as_f64() {
        Some(x) => format!("{x}{unit}"),
        None => "–".into(),
    };
    let mut out = vec![format!(
        "KPIs since {} ({})",
        k.since,
        humantime::format_duration(since)
    )];
    for row in &k.builds {
        let k = &row.kpis;
        out.push(format!("{} {}", short(&row.build), row.role));
        out.push(format!("  sessions                 {}", k["sessions"]));
        out.push(format!(
            "  session start success    {}",
            f(&k["session_start_success_pct"], " %")
        ));
        out.push(format!(
            "  time to terminal         avg {}, p95 {}",
            f(&k["avg_time_to_terminal_ms"], " ms"),
            f(&k["p95_time_to_terminal_ms"], " ms")
        ));
        for (label, key) in [
            ("failure rate", "failure_rate_pct"),
            ("disconnect rate", "disconnect_rate_pct"),
            ("command failure rate", "command_failure_rate_pct"),
        ] {
            out.push(format!("  {label:<25}{}", f(&k[key], " %")));
        }
        out.push(format!(
            "  approval gates           {} (median resolution {})",
            k["approval_gates"],
            f(&k["median_approval_resolution_ms"], " ms")
        ));
        out.push(format!(
            "  cost per agent-hour      {}",
            f(&k["cost_per_agent_hour_usd"], " USD")
        ));
    }
    out
}
