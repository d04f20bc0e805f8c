//! `canary fleet simulate`: a fleet of runners over real HTTP. Each simulated session asks
//! `canary serve` for its assignment, lives out the profile of the build it was given (failure,
//! disconnect and start-latency rates), and is reported in telemetry batches with retry and
//! backoff, as `canary-runner agent` reports real ones. Deterministic for a seed.

use crate::error::{LabError, Result};
use canary_fleet::rng::SplitMix64 as Rng;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// How sessions of builds matching a selector behave.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Profile {
    /// A build id prefix (with or without `sha256:`), or `*` for every build.
    pub selector: String,
    pub fail: f64,
    pub disconnect: f64,
    /// Median start latency; each session's is log-normal around it.
    pub latency_ms: f64,
    /// Share of sessions the runner runs but never reports (a runner that loses them).
    pub drop: f64,
    /// Each session's cost times this (2: twice as dear).
    pub cost: f64,
}

impl Profile {
    pub fn default_for_all() -> Profile {
        Profile {
            selector: "*".into(),
            fail: 0.01,
            disconnect: 0.005,
            latency_ms: 900.0,
            drop: 0.0,
            cost: 1.0,
        }
    }

    /// `SELECTOR=fail:0.2,disconnect:0.01,latency:900`.
    pub fn parse(s: &str) -> Result<Profile> {
        let help = "write e.g. --profile 'sha256:ab12=fail:0.2,latency:1500' or --profile '*=fail:0.01'";
        let (sel, rest) = s
            .split_once('=')
            .ok_or_else(|| LabError::usage(format!("profile `{}` names no build", crate::text::clean(s)), help))?;
        let mut p = Profile {
            selector: sel.trim().to_string(),
            ..Profile::default_for_all()
        };
        if p.selector != "*" && !crate::telemetry::is_id(&p.selector) {
            return Err(LabError::usage(
                format!(
                    "profile selector `{}` is not a build id prefix",
                    crate::text::clean(&p.selector)
                ),
                help,
            ));
        }
        for part in rest.split(',').filter(|x| !x.trim().is_empty()) {
            let (k, v) = part.split_once(':').ok_or_else(|| {
                LabError::usage(
                    format!("profile part `{}` is not key:value", crate::text::clean(part)),
                    help,
                )
            })?;
            let v: f64 = v.trim().parse().map_err(|_| {
                LabError::usage(
                    format!("profile value `{}` is not a number", crate::text::clean(v)),
                    help,
                )
            })?;
            match k.trim() {
                "fail" if (0.0..=1.0).contains(&v) => p.fail = v,
                "disconnect" if (0.0..=1.0).contains(&v) => p.disconnect = v,
                "latency" if (1.0..=600_000.0).contains(&v) => p.latency_ms = v,
                "drop" if (0.0..=1.0).contains(&v) => p.drop = v,
                "cost" if (0.0..=100.0).contains(&v) => p.cost = v,
                other => {
                    return Err(LabError::usage(
                        format!(
                            "profile `{}`: `{}` is unknown or out of range",
                            crate::text::clean(s),
                            crate::text::clean(other)
                        ),
                        "fail, disconnect and drop are rates from 0 to 1; latency is milliseconds; cost multiplies each session's cost (0 to 100)",
                    ));
                }
            }
        }
        Ok(p)
    }

    fn matches(&self, build: &str) -> bool {
        self.selector == "*"
            || build.starts_with(&self.selector)
            || build
                .strip_prefix("sha256:")
                .is_some_and(|b| b.starts_with(&self.selector))
    }
}

/// One simulation run: the fleet asked for, with the runner tokens issued for it.
pub struct Options<'a> {
    pub fleet: &'a Fleet,
    /// runner id → bearer token.
    pub runners: Vec<(String, String)>,
    /// Prefix of session ids, so that runs do not collide.
    pub run_id: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct BuildTally {
    pub sessions: u64,
    pub failed: u64,
    pub disconnected: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub sessions: u64,
    pub by_build: BTreeMap<String, BuildTally>,
    /// Sessions by why they ran their build (candidate, baseline, pin, ...).
    pub by_source: BTreeMap<String, u64>,
    pub batches: u64,
    pub retries: u64,
    /// Sessions the server had no build for (nothing posted for them).
    pub unassigned: u64,
    /// Sessions run but not reported, as the profiles' `drop` says.
    pub dropped: u64,
    pub seconds: f64,
}

impl Report {
    /// The simulation's outcome as terminal lines: the rate, then sessions by build and by why
    /// they ran it.
    pub fn lines(&self, runners: usize) -> Vec<String> {
        let mut out = Vec::new();
        out.push(format!(
            "{} sessions from {} runners in {:.1} s ({:.0}/s), {} batches, {} retries",
            self.sessions,
            runners,
            self.seconds,
            self.sessions as f64 / self.seconds.max(1e-9),
            self.batches,
            self.retries
        ));
        for (b, t) in &self.by_build {
            out.push(format!(
                "  {}  {} sessions, {} failed, {} disconnected",
                canary_contract::build::short_id(b),
                t.sessions,
                t.failed,
                t.disconnected
            ));
        }
        for (s, n) in &self.by_source {
            out.push(format!("  {s}: {n}"));
        }
        if self.unassigned > 0 {
            out.push(format!(
                "  {} sessions had no build to run (no channel build yet)",
                self.unassigned
            ));
        }
        if self.dropped > 0 {
            out.push(format!(
                "  {} sessions run but not reported (the profiles' drop)",
                self.dropped
            ));
        }
        out
    }
}

/// How long a 429 says to wait (at most 10 s).
fn retry_after(r: &reqwest::Response) -> Duration {
    let secs = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(1);
    Duration::from_secs(secs.clamp(1, 10))
}

/// Posts a batch, retrying with backoff on errors and 5xx; a 4xx is the caller's fault and final.
pub async fn post_batch(
    client: &reqwest::Client,
    server: &str,
    token: &str,
    body: &serde_json::Value,
    retries: &mut u64,
) -> Result<()> {
    let url = format!("{}/v1/telemetry", server.trim_end_matches('/'));
    let mut wait = Duration::from_millis(100);
    for attempt in 0..6 {
        if attempt > 0 {
            *retries += 1;
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
        }
        match client
            .post(&url)
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => return Ok(()),
            // Over the token's rate: wait as told, then again.
            Ok(r) if r.status().as_u16() == 429 => {
                wait = retry_after(&r).max(wait);
                continue;
            }
            Ok(r) if r.status().is_client_error() => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                return Err(LabError::usage(
                    format!("{url} refused telemetry ({status}): {}", crate::text::clean(&text)),
                    "the message says which session and field",
                ));
            }
            _ => continue,
        }
    }
    Err(LabError::usage(
        format!("{url} did not take telemetry after 6 tries"),
        "is `canary serve` running and its registry reachable?",
    ))
}

/// Asks for a session's assignment, waiting out 429s and retrying a failed connection or a 5xx
/// (a replica that died behind a load balancer) up to six times with backoff, all counted in
/// `retries`; `None` when the session is not assigned (404). Asking again is safe: the latest
/// answer is the session's assignment.
async fn assignment(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    retries: &mut u64,
) -> Result<Option<serde_json::Value>> {
    let mut wait = Duration::from_millis(100);
    let mut failures = 0;
    let r = loop {
        let sent = client.get(url).bearer_auth(token).send().await;
        let why = match sent {
            Ok(r) if r.status().as_u16() == 429 => {
                *retries += 1;
                tokio::time::sleep(retry_after(&r)).await;
                continue;
            }
            Ok(r) if !r.status().is_server_error() => break r,
            Ok(r) => format!("answered {}", r.status()),
            Err(e) => e.to_string(),
        };
        failures += 1;
        if failures >= 6 {
            return Err(LabError::usage(
                format!("{url}: {why} (6 tries)"),
                "is `canary serve` running?",
            ));
        }
        *retries += 1;
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(5));
    };
    if r.status().as_u16() == 404 {
        return Ok(None);
    }
    if !r.status().is_success() {
        let status = r.status();
        return Err(LabError::usage(
            format!(
                "{url} answered {status}: {}",
                crate::text::clean(&r.text().await.unwrap_or_default())
            ),
            "check the runner's token (`canary tokens list`)",
        ));
    }
    let body = r
        .bytes()
        .await
        .map_err(|e| LabError::usage(format!("{url}: {e}"), "internal"))?;
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| LabError::usage(format!("{url}: not JSON: {e}"), "internal"))
}

async fn one_runner(
    o: &Options<'_>,
    index: usize,
    runner: &str,
    token: &str,
    quota: u64,
    start: tokio::time::Instant,
    interval: Option<Duration>,
) -> Result<Report> {
    let client = reqwest::Client::new();
    let mut rng = Rng(o.fleet.seed ^ ((index as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D)));
    let mut report = Report::default();
    let mut pending = Vec::new();
    let base = format!("{}/v1/assignment", o.fleet.server.trim_end_matches('/'));
    for k in 0..quota {
        if let Some(iv) = interval {
            // Session k of this runner starts at its slot in the fleet's schedule.
            let slot = start + iv * (k as u32 * o.runners.len() as u32 + index as u32);
            tokio::time::sleep_until(slot).await;
        }
        let org = &o.fleet.orgs[(k as usize + index) % o.fleet.orgs.len()];
        let session = format!("{}-{runner}-{k}", o.run_id);
        // Runner, org and session ids are of URL-safe characters only (checked before use).
        let url = format!("{base}?runner={runner}&org={org}&session={session}");
        let Some(a) = assignment(&client, &url, token, &mut report.retries).await? else {
            report.unassigned += 1;
            continue;
        };
        let build = a["build"].as_str().unwrap_or_default().to_string();
        *report
            .by_source
            .entry(a["source"].as_str().unwrap_or("?").to_string())
            .or_default() += 1;
        let p = o
            .fleet
            .profiles
            .iter()
            .find(|p| p.matches(&build))
            .cloned()
            .unwrap_or_else(Profile::default_for_all);
        let roll = rng.unit();
        let outcome = if roll < p.fail {
            "failed"
        } else if roll < p.fail + p.disconnect {
            "disconnected"
        } else {
            "ok"
        };
        let latency = (p.latency_ms * (0.3 * rng.normal()).exp()).round().max(1.0) as u64;
        let commands = 1 + rng.next_u64() % 12;
        let approvals = rng.next_u64() % 3;
        let duration = 20_000 + rng.next_u64() % 600_000;
        let tally = report.by_build.entry(build.clone()).or_default();
        tally.sessions += 1;
        tally.failed += (outcome == "failed") as u64;
        tally.disconnected += (outcome == "disconnected") as u64;
        report.sessions += 1;
        // Drawn only for a profile that drops, so a seed's sessions are the same as before.
        if p.drop > 0.0 && rng.unit() < p.drop {
            report.dropped += 1;
            continue;
        }
        pending.push(serde_json::json!({
            "runner": runner, "org": org, "session": session, "build": build,
            "started_at": crate::registry::now(), "start_latency_ms": latency, "outcome": outcome,
            "commands": commands, "commands_failed": if outcome == "ok" { 0 } else { 1 },
            "approvals": approvals, "approval_wait_ms": approvals * (2_000 + rng.next_u64() % 30_000),
            "tokens": 2_000 + rng.next_u64() % 50_000, "cost_usd": p.cost * ((rng.next_u64() % 5_000) as f64) / 10_000.0,
            "duration_ms": duration,
        }));
        if pending.len() >= o.fleet.batch {
            let body = serde_json::json!({"sessions": std::mem::take(&mut pending)});
            post_batch(&client, &o.fleet.server, token, &body, &mut report.retries).await?;
            report.batches += 1;
        }
    }
    if !pending.is_empty() {
        let body = serde_json::json!({"sessions": pending});
        post_batch(&client, &o.fleet.server, token, &body, &mut report.retries).await?;
        report.batches += 1;
    }
    Ok(report)
}

/// Runs the simulated fleet: every runner concurrently, the sessions shared out among them.
pub async fn run(o: &Options<'_>) -> Result<Report> {
    if o.runners.is_empty() || o.fleet.orgs.is_empty() {
        return Err(LabError::usage(
            "a fleet needs at least one runner and one org",
            "--runners N --org ORG",
        ));
    }
    let began = std::time::Instant::now();
    let start = tokio::time::Instant::now();
    let interval = (o.fleet.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / o.fleet.rate));
    let n = o.runners.len() as u64;
    let tasks = o.runners.iter().enumerate().map(|(i, (runner, token))| {
        let quota = o.fleet.sessions / n + u64::from((i as u64) < o.fleet.sessions % n);
        one_runner(o, i, runner, token, quota, start, interval)
    });
    let mut total = Report::default();
    for r in futures_util::future::join_all(tasks).await {
        let r = r?;
        total.sessions += r.sessions;
        total.batches += r.batches;
        total.retries += r.retries;
        total.unassigned += r.unassigned;
        total.dropped += r.dropped;
        for (b, t) in r.by_build {
            let e = total.by_build.entry(b).or_default();
            e.sessions += t.sessions;
            e.failed += t.failed;
            e.disconnected += t.disconnected;
        }
        for (s, c) in r.by_source {
            *total.by_source.entry(s).or_default() += c;
        }
    }
    total.seconds = began.elapsed().as_secs_f64();
    Ok(total)
}

/// What `canary fleet simulate` asks for: `runners` simulated runners named `PREFIX-1..N`, each
/// with a runner token issued for the run (and revoked after it, whatever happened).
pub struct Fleet {
    pub server: String,
    pub runners: usize,
    pub prefix: String,
    pub orgs: Vec<String>,
    pub sessions: u64,
    /// Sessions per second across the fleet (0: as fast as the server answers).
    pub rate: f64,
    pub batch: usize,
    pub profiles: Vec<Profile>,
    pub seed: u64,
}

/// Who the simulation's tokens are issued and revoked as in the audit log.
const ACTOR: &str = "fleet-simulate";

impl Fleet {
    /// Refuses a fleet that cannot be simulated, saying which flag to change.
    pub fn check(&self) -> Result<()> {
        for o in &self.orgs {
            crate::gate::ops::check_name("org", o)?;
        }
        if !crate::telemetry::is_id(&self.prefix) || self.prefix.len() > 64 {
            return Err(LabError::usage(
                "--prefix is not an id",
                "letters, digits, `.`, `_`, `-`",
            ));
        }
        if self.runners == 0 || self.runners > 10_000 || self.batch == 0 || self.batch > crate::telemetry::MAX_SESSIONS
        {
            return Err(LabError::usage(
                "--runners must be 1 to 10000 and --batch 1 to 2000",
                "e.g. --runners 20 --batch 200",
            ));
        }
        if !(self.rate.is_finite() && self.rate >= 0.0) {
            return Err(LabError::usage(
                "--rate must be 0 or more sessions per second",
                "e.g. --rate 500",
            ));
        }
        if !(self.server.starts_with("http://") || self.server.starts_with("https://")) {
            return Err(LabError::usage(
                format!("--server {} is not an http(s) URL", crate::text::clean(&self.server)),
                "e.g. --server http://127.0.0.1:8787",
            ));
        }
        Ok(())
    }
}

/// Issues the fleet's runner tokens, runs the simulation against `canary serve`, and revokes
/// the tokens it issued. The simulation's runner ids are its own: a real runner holding one of
/// them is never touched (and the simulation does not run).
pub async fn run_fleet(reg: &crate::registry::Registry, f: &Fleet) -> Result<Report> {
    f.check()?;
    let ids: Vec<String> = (1..=f.runners).map(|i| format!("{}-{i}", f.prefix)).collect();
    let taken = reg
        .tokens()
        .await?
        .into_iter()
        .filter(|t| t.revoked_at.is_none() && t.actor != ACTOR)
        .find_map(|t| match t.principal {
            crate::tokens::Principal::Runner { runner, .. } if ids.contains(&runner) => Some(runner),
            _ => None,
        });
    if let Some(r) = taken {
        return Err(LabError::usage(
            format!(
                "runner {} has a live token not issued by fleet simulate: the simulation would speak for a real runner",
                crate::text::clean(&r)
            ),
            "pick another --prefix (runner ids are PREFIX-1..N)",
        ));
    }
    let mut fleet = Vec::new();
    let mut issued = Vec::new();
    for id in &ids {
        let t = crate::tokens::issue_runner(id, &f.orgs)?;
        let target = format!("runner {id} token {}", t.id);
        reg.add_token(&t, audit("token create", &target, "simulated fleet"))
            .await?;
        issued.push(t.id.clone());
        fleet.push((id.clone(), t.token));
    }
    let options = Options {
        fleet: f,
        runners: fleet,
        run_id: format!("sim{}", jiff::Timestamp::now().as_millisecond()),
    };
    // Server-side caches see new tokens within a second.
    tokio::time::sleep(crate::control::CACHE_TTL + Duration::from_millis(100)).await;
    let result = run(&options).await;
    for (id, token_id) in ids.iter().zip(&issued) {
        let target = format!("runner {id} token {token_id}");
        reg.revoke_tokens(
            Some(token_id),
            None,
            audit("token revoke", &target, "simulated fleet finished"),
        )
        .await?;
    }
    result
}

fn audit<'a>(action: &'a str, target: &'a str, reason: &'a str) -> crate::registry::Audit<'a> {
    crate::registry::Audit {
        actor: ACTOR,
        action,
        target,
        decision: "done",
        reason,
        evidence: serde_json::json!({}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_parse_and_refuse_nonsense() {
        let p = Profile::parse("sha256:ab12=fail:0.2,latency:1500").unwrap();
        assert_eq!((p.fail, p.latency_ms), (0.2, 1500.0));
        assert!(p.matches("sha256:ab12ff") && !p.matches("sha256:cd"));
        assert!(Profile::parse("ab12=fail:0.2").unwrap().matches("sha256:ab12ff"));
        for bad in ["fail:0.2", "x=fail:2", "x=speed:1", "x=fail:lots", "a b=fail:0.1"] {
            assert!(Profile::parse(bad).is_err(), "{bad}");
        }
    }
}
