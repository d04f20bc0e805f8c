//! Upstream commands: `watch` (what is new upstream), `pipeline` (watch → build → canary →
//! record → promote → notify), `heartbeat` and `serve` (what deployed runners run).
//!
//! Exit codes: `watch` 0 = new versions found, 1 = nothing new, 2 = error; `pipeline` 0 = every
//! candidate green (or nothing to judge), 1 = a candidate was blocked (red or yellow), 2 = error;
//! `heartbeat` / `serve` 0 / 2.

use super::registry::{open, print_json};
use crate::config::LabConfig;
use crate::contract::Provider;
use crate::error::{Result, exit};
use crate::progress::Progress;
use crate::upstream::{self, WatchOptions};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// Only this provider (codex, claude-code, gemini).
    #[arg(long, value_parser = <Provider as std::str::FromStr>::from_str)]
    pub provider: Option<Provider>,
    /// Show what is new without recording it in the registry.
    #[arg(long)]
    pub no_record: bool,
    /// Do not download claude-agent-sdk wheels to learn the Claude Code version they bundle.
    #[arg(long)]
    pub no_resolve: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct PipelineArgs {
    /// Only this provider.
    #[arg(long, value_parser = <Provider as std::str::FromStr>::from_str)]
    pub provider: Option<Provider>,
    /// Suites candidates must pass (default: pipeline.suites in canary.yaml, else golden-path).
    #[arg(long = "suite", short = 's')]
    pub suites: Vec<PathBuf>,
    /// Judge candidates again even when the registry has a verdict for them.
    #[arg(long)]
    pub rejudge: bool,
    /// Webhook for verdicts (overrides pipeline.webhook).
    #[arg(long)]
    pub webhook: Option<String>,
    /// Parallel cases per canary run (overrides pipeline.jobs).
    #[arg(long)]
    pub jobs: Option<usize>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct HeartbeatArgs {
    /// A heartbeat payload (JSON; `-` reads stdin), as `canary-runner heartbeat` prints it.
    pub file: PathBuf,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on. Every endpoint but /healthz takes a token (`canary tokens create`).
    #[arg(long, default_value = "127.0.0.1:8787")]
    pub listen: std::net::SocketAddr,
    /// The URL people open the dashboard at; its host joins the loopback names pages are
    /// answered for (any other `Host` is refused, which defeats DNS rebinding).
    #[arg(long)]
    pub public_url: Option<String>,
    /// How long a connection may take to send a request's headers (also the idle time of a
    /// kept-alive connection); 1s to 10m.
    #[arg(long, default_value = "10s", value_parser = crate::bounds::duration(std::time::Duration::from_secs(1), std::time::Duration::from_secs(600)))]
    pub header_timeout: std::time::Duration,
    /// How often the rollout controller judges running rollouts (100ms to 1h).
    #[arg(long, default_value = "5s", value_parser = crate::bounds::duration(std::time::Duration::from_millis(100), std::time::Duration::from_secs(3600)))]
    pub tick: std::time::Duration,
    /// How long the controller lease lasts unrenewed: replicas of `canary serve` on one
    /// PostgreSQL registry take over the rollout controller this long after its holder died
    /// (1s to 10m, at least twice --tick).
    #[arg(long, default_value = "15s", value_parser = crate::bounds::duration(std::time::Duration::from_secs(1), std::time::Duration::from_secs(600)))]
    pub lease: std::time::Duration,
    /// Gate policy for rollouts (default: gate_policy from canary.yaml, else ./gate.yaml, else built-in).
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Publish TUF update metadata for customer-hosted runners: the folder holding the root
    /// versions (`canary keys init-root`, `canary keys rotate`). Needs --online-key; without
    /// both, hosts are offered nothing they will install.
    #[arg(long, requires = "online_key")]
    pub tuf: Option<PathBuf>,
    /// The online key (`canary keys create`) the root names for targets, snapshot and timestamp.
    #[arg(long, requires = "tuf")]
    pub online_key: Option<PathBuf>,
    /// How long a published timestamp holds (republished at half its life); a host refuses
    /// metadata whose timestamp expired (a frozen control plane).
    #[arg(long, default_value = "1d", value_parser = crate::bounds::duration(std::time::Duration::from_secs(2), std::time::Duration::from_secs(30 * 24 * 3600)))]
    pub timestamp_lifetime: std::time::Duration,
    /// Tell an admin at this webhook when a customer-hosted runner is behind its offered build
    /// (default: updates.webhook from canary.yaml).
    #[arg(long)]
    pub updates_webhook: Option<String>,
    /// Sweep workers to run in this process (0: none; `canary sweeps run` works the same queue).
    #[arg(long, default_value_t = 0)]
    pub sweep_workers: usize,
    /// Lab: the model stub's scenario for sweep agents.
    #[arg(long)]
    pub sweep_scenario: Option<PathBuf>,
    /// A real model endpoint for sweep agents.
    #[arg(long)]
    pub sweep_model_url: Option<String>,
    /// Docker network of the sweep containers.
    #[arg(long, default_value = "bridge")]
    pub sweep_network: String,
}

pub async fn watch(config: &LabConfig, a: &WatchArgs) -> Result<i32> {
    let reg = open(config).await?;
    let report = upstream::watch(
        &reg,
        &WatchOptions {
            config: &config.upstream,
            cache_dir: config.cache_dir.clone(),
            provider: a.provider,
            record: !a.no_record,
            resolve: !a.no_resolve,
        },
    )
    .await?;
    if a.json {
        print_json(&report);
    } else {
        for line in upstream::view::watch(&report) {
            outln!("{line}");
        }
    }
    Ok(if report.anything_new() {
        exit::PASS
    } else {
        exit::FAILED
    })
}

pub async fn pipeline(cli_prefix: &str, config: &LabConfig, a: &PipelineArgs) -> Result<i32> {
    // Stage lines go to stderr even with --json: stdout stays one JSON document.
    let progress = Progress::new(false);
    let reg = open(config).await?;
    let opts = crate::pipeline::PipelineOptions {
        provider: a.provider,
        suites: a.suites.clone(),
        rejudge: a.rejudge,
        webhook: a.webhook.clone(),
        jobs: a.jobs,
        repro_prefix: cli_prefix.to_string(),
    };
    let outcome = crate::pipeline::run(config, &reg, &opts, &progress).await?;
    super::commands::print_view(a.json, &outcome, outcome.lines());
    Ok(outcome.exit_code)
}

/// The most a heartbeat may weigh, from a file, standard input or an HTTP body.
pub const MAX_HEARTBEAT: u64 = crate::heartbeat::MAX_BODY as u64;

pub async fn heartbeat(config: &LabConfig, a: &HeartbeatArgs) -> Result<i32> {
    let text = if a.file.as_os_str() == "-" {
        crate::fsutil::read_stream(std::io::stdin(), "stdin", MAX_HEARTBEAT)?
    } else {
        crate::fsutil::read_input(&a.file, "heartbeat", MAX_HEARTBEAT)?
    };
    let h = crate::heartbeat::parse(&text, &a.file.display().to_string())?;
    let reg = open(config).await?;
    reg.record_heartbeat(&h).await?;
    if a.json {
        print_json(&h);
    } else {
        outln!("recorded heartbeat of {}", h.runner_id);
    }
    Ok(exit::PASS)
}

/// `canary serve`: `POST /v1/heartbeats` takes a runner's heartbeat, `GET /v1/status` answers what
/// `canary status --json` prints, `GET /healthz` says it is up.
pub async fn serve(config: &LabConfig, a: &ServeArgs) -> Result<i32> {
    let options = crate::serve::ServeOptions {
        listen: a.listen,
        public_url: a.public_url.clone(),
        header_timeout: a.header_timeout,
        tick: a.tick,
        lease: a.lease,
        policy: a.policy.clone(),
        tuf: a.tuf.clone(),
        online_key: a.online_key.clone(),
        timestamp_lifetime: a.timestamp_lifetime,
        updates_webhook: a.updates_webhook.clone(),
        sweep_workers: a.sweep_workers,
        sweep_scenario: a.sweep_scenario.clone(),
        sweep_model_url: a.sweep_model_url.clone(),
        sweep_network: a.sweep_network.clone(),
    };
    crate::serve::serve(config, &options).await?;
    Ok(exit::PASS)
}
