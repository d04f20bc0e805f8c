//! `canary-runner agent`: a fleet runner. For each session it asks `canary serve` which build the
//! session runs, runs the sessions assigned to its own build with the real CLI (sessions of
//! another build belong to that build's runners and are handed back), and reports every finished
//! session through a bounded spool, in batches with retry and backoff. While the control plane is
//! down it keeps running its current build and keeps the telemetry until the bound.

use super::events::Event;
use super::session::{self, SessionArgs};
use crate::spool::Spool;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub struct AgentOptions {
    pub server: String,
    pub token: String,
    pub runner: String,
    pub org: String,
    /// The build this runner is (its image digest).
    pub build: canary_contract::BuildId,
    pub sessions: u64,
    /// The session to run; its workspace is a template copied afresh for each session.
    pub session: SessionArgs,
    pub spool: PathBuf,
    pub spool_max: usize,
    pub batch: usize,
    /// How often to ask the control plane whether an update is offered (at start, then at this
    /// interval); `None`: never. The agent only says so: it never installs anything itself.
    pub update_every: Option<Duration>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct AgentReport {
    pub ran: u64,
    pub ok: u64,
    /// Sessions assigned to another build (that build's runners run them).
    pub handed_off: u64,
    /// Assignments the control plane did not answer (the current build ran them; their
    /// telemetry is not sent, since the control plane takes only sessions it assigned).
    pub unassigned: u64,
    pub sent: u64,
    /// Still in the spool when the agent stopped.
    pub waiting: u64,
    pub dropped: u64,
    /// Update checks made, and the build offered when it is not this runner's.
    pub update_checks: u64,
    pub update_available: Option<canary_contract::BuildId>,
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let dest = to.join(entry.file_name());
        if kind.is_dir() {
            copy_dir(&entry.path(), &dest)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &dest)?;
        } else {
            std::fs::copy(entry.path(), &dest)?;
        }
    }
    Ok(())
}

/// The build the control plane assigns a session, or why there is none.
async fn assignment(client: &reqwest::Client, o: &AgentOptions, session: &str) -> Result<Option<String>, String> {
    // Runner, org and session ids are URL-safe by construction (checked at start).
    let url = format!(
        "{}/v1/assignment?runner={}&org={}&session={session}",
        o.server.trim_end_matches('/'),
        o.runner,
        o.org
    );
    let r = client
        .get(&url)
        .bearer_auth(&o.token)
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    match r.status().as_u16() {
        200 => {
            let body = r.bytes().await.map_err(|e| e.to_string())?;
            let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
            Ok(v["build"].as_str().map(String::from))
        }
        404 => Ok(None),
        s => Err(format!("{url} answered {s}")),
    }
}

async fn post(client: &reqwest::Client, o: &AgentOptions, body: serde_json::Value) -> Result<(), String> {
    let url = format!("{}/v1/telemetry", o.server.trim_end_matches('/'));
    let r = client
        .post(&url)
        .bearer_auth(&o.token)
        .header("content-type", "application/json")
        .timeout(Duration::from_secs(10))
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if r.status().is_success() {
        Ok(())
    } else {
        Err(format!(
            "{url} answered {}: {}",
            r.status(),
            crate::text::clean(&r.text().await.unwrap_or_default())
        ))
    }
}

/// Runs one session and describes it as telemetry.
async fn one(o: &AgentOptions, id: &str) -> std::io::Result<(serde_json::Value, bool)> {
    let work = tempfile::tempdir()?;
    let workspace = work.path().join("workspace");
    copy_dir(&o.session.workspace, &workspace)?;
    let args = SessionArgs {
        workspace,
        ..o.session.clone()
    };
    let started_at = canary_contract::time::now();
    let begin = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
    let run = tokio::spawn(session::run(args, tx));
    let (mut start_latency, mut commands, mut failed_commands, mut approvals) = (None, 0u64, 0u64, 0u64);
    let (mut tokens, mut cost, mut timed_out) = (0u64, 0f64, false);
    while let Some(e) = rx.recv().await {
        match e {
            Event::SessionStarted { .. } => start_latency = Some(begin.elapsed().as_millis() as u64),
            Event::CommandExited { exit_code, .. } => {
                commands += 1;
                failed_commands += u64::from(exit_code != Some(0));
            }
            Event::ApprovalRequired { .. } => approvals += 1,
            Event::UsageTick { totals, cost_usd, .. } => {
                tokens = totals.input_tokens + totals.output_tokens;
                cost += cost_usd.unwrap_or(0.0);
            }
            Event::Error { kind, .. } if kind.contains("timeout") => timed_out = true,
            _ => {}
        }
    }
    let clean = matches!(run.await, Ok(Ok(true)));
    let outcome = if clean {
        "ok"
    } else if timed_out {
        "timed_out"
    } else {
        "failed"
    };
    let t = serde_json::json!({
        "runner": o.runner, "org": o.org, "session": id, "build": o.build, "started_at": started_at,
        "start_latency_ms": start_latency, "outcome": outcome, "commands": commands,
        "commands_failed": failed_commands.min(commands), "approvals": approvals, "approval_wait_ms": 0,
        "tokens": tokens, "cost_usd": cost.clamp(0.0, 10_000.0),
        "duration_ms": begin.elapsed().as_millis() as u64,
    });
    Ok((t, clean))
}

/// Reports this runner's versions (a heartbeat, from which the control plane tells the admin when
/// it is behind) and asks what it is offered. `Some(line)`: an update is available, said in one
/// line with how to take it; nothing is installed here.
pub async fn update_check(o: &AgentOptions) -> crate::error::Result<Option<(canary_contract::BuildId, String)>> {
    let client = crate::update::host::Client::new(&o.server, &o.token)?;
    client
        .heartbeat(&super::heartbeat(&o.runner, Some(&o.org), None).await)
        .await?;
    let offer = client.offer(&o.runner).await?;
    let Some(build) = offer.build.clone() else {
        return Ok(None);
    };
    if build == o.build || offer.status == crate::update::Status::Red {
        return Ok(None);
    }
    let changes: Vec<String> = offer.changes.iter().map(|c| c.to_string()).collect();
    let line = format!(
        "update available: {} {} offers build {build} ({}){}; this runner runs {}. Install it on the host with `canary-runner update plan` and `canary-runner update upgrade` (the agent never upgrades itself)",
        offer.source,
        crate::text::clean(&offer.channel),
        offer.status.as_str(),
        if changes.is_empty() {
            String::new()
        } else {
            format!(": {}", crate::text::clean(&changes.join(", ")))
        },
        o.build
    );
    Ok(Some((build, line)))
}

/// Runs the agent until `sessions` sessions were handled; telemetry left unsent stays in the spool.
pub async fn run(o: &AgentOptions) -> crate::error::Result<AgentReport> {
    if !crate::names::is_id(&o.runner) {
        return Err(crate::error::LabError::usage(
            "--runner is not an id",
            "letters, digits, `.`, `_`, `:`, `-`",
        ));
    }
    crate::names::check_name("org", &o.org)?;
    let client = reqwest::Client::new();
    let mut spool = Spool::open(&o.spool, o.spool_max)?;
    let mut report = AgentReport::default();
    let mut backoff = Duration::ZERO;
    let mut next_try = Instant::now();
    let stamp = jiff::Timestamp::now().as_millisecond();
    // At start, then every `update_every` between sessions.
    let mut next_check = Instant::now();
    let mut check_updates = async |report: &mut AgentReport| {
        let Some(every) = o.update_every.filter(|_| Instant::now() >= next_check) else {
            return;
        };
        next_check = Instant::now() + every;
        report.update_checks += 1;
        match update_check(o).await {
            Ok(Some((build, line))) => {
                eprintln!("canary-runner agent: {line}");
                report.update_available = Some(build);
            }
            Ok(None) => report.update_available = None,
            Err(e) => eprintln!("canary-runner agent: update check failed ({e}); running the current build"),
        }
    };
    check_updates(&mut report).await;
    stop_on_signals();
    for k in 0..o.sessions {
        // SIGINT or SIGTERM (`docker stop`): the session under way was interrupted; no new one.
        if super::session::STOP.load(std::sync::atomic::Ordering::SeqCst) {
            eprintln!(
                "canary-runner agent: stopping on a signal after {} sessions",
                report.ran
            );
            break;
        }
        if k > 0 {
            check_updates(&mut report).await;
        }
        let id = format!("{}-{stamp}-{k}", o.runner);
        let Some(assigned) = assigned(&client, o, &id, &mut report).await else {
            continue;
        };
        let (t, clean) = one(o, &id).await.map_err(|e| {
            crate::error::LabError::usage(format!("session {id}: {e}"), "check --workspace and the CLI")
        })?;
        report.ran += 1;
        report.ok += u64::from(clean);
        if assigned && !spool.push(&t)? {
            eprintln!(
                "canary-runner agent: the telemetry spool {} is full ({} sessions): session {id} is not kept",
                o.spool.display(),
                o.spool_max
            );
        }
        if spool.pending()?.len() >= o.batch && Instant::now() >= next_try {
            let f = spool.flush(o.batch, |b| post(&client, o, b)).await?;
            report.sent += f.sent as u64;
            if let Some(e) = f.error {
                backoff = (backoff * 2).clamp(Duration::from_millis(500), Duration::from_secs(60));
                next_try = Instant::now() + backoff;
                eprintln!(
                    "canary-runner agent: telemetry not sent ({e}); {} sessions wait in the spool, next try in {:?}",
                    f.left, backoff
                );
            } else {
                backoff = Duration::ZERO;
            }
        }
    }
    drain(&mut spool, &client, o, &mut report).await?;
    report.waiting = spool.pending()?.len() as u64;
    report.dropped = spool.dropped;
    Ok(report)
}

/// Between sessions a signal only marks the agent to stop (a session under way passes it on
/// to its CLI and ends interrupted); the telemetry already gathered is still sent.
fn stop_on_signals() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
        return;
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            super::session::STOP.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    });
}

/// Whether this session's telemetry counts for this runner's build: `Some(true)` assigned to
/// it, `Some(false)` run unassigned (not judged), `None` handed off to another build.
async fn assigned(client: &reqwest::Client, o: &AgentOptions, id: &str, report: &mut AgentReport) -> Option<bool> {
    match assignment(client, o, id).await {
        Ok(Some(b)) if b != o.build => {
            report.handed_off += 1;
            None
        }
        Ok(Some(_)) => Some(true),
        Ok(None) => {
            report.unassigned += 1;
            Some(false)
        }
        Err(e) => {
            report.unassigned += 1;
            eprintln!(
                "canary-runner agent: no assignment ({e}); running the current build (its telemetry is not judged)"
            );
            Some(false)
        }
    }
}

/// The last sends before the agent stops, with backoff; what is still unsent stays spooled.
async fn drain(
    spool: &mut Spool,
    client: &reqwest::Client,
    o: &AgentOptions,
    report: &mut AgentReport,
) -> crate::error::Result<()> {
    let mut wait = Duration::from_millis(500);
    for attempt in 0..5 {
        let f = spool.flush(o.batch, |b| post(client, o, b)).await?;
        report.sent += f.sent as u64;
        if f.error.is_none() || attempt == 4 {
            break;
        }
        tokio::time::sleep(wait).await;
        wait *= 2;
    }
    Ok(())
}
