//! The gate's commands: promote, pin, rollback, status, and bundle compatibility. Exit codes:
//! 0 done / allowed, 1 blocked / refused, 2 error.

use super::commands::{print_view, show};
use super::registry::{Who, open, open_read, open_to_change, print_json, short};
use crate::compat;
use crate::config::LabConfig;
use crate::contract::Channel;
use crate::error::{Result, exit};
use crate::gate::{self, policy::Policy};
use crate::registry::Registry;
use clap::{Args, Subcommand};
use std::path::PathBuf;
#[derive(Args, Debug)]
pub struct PromoteArgs {
    /// Build: image digest, digest prefix, or the image reference it ran as.
    pub build: String,
    #[arg(long)]
    pub channel: Channel,
    /// Bundle manifests that must be compatible with the build's runtime version.
    #[arg(long = "bundle")]
    pub bundles: Vec<PathBuf>,
    /// Explain the decision without changing anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Policy file (default: gate_policy from canary.yaml, else ./gate.yaml, else built-in).
    #[arg(long)]
    pub policy: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub who: Who,
}

#[derive(Args, Debug)]
pub struct PinArgs {
    #[arg(long)]
    pub org: String,
    /// Pin to this build's digest (it must be known-good in some channel).
    #[arg(long, conflicts_with = "follow")]
    pub build: Option<String>,
    /// The org's channel; without --build the org follows it.
    #[arg(long)]
    pub channel: Option<Channel>,
    /// Follow the channel (drop a build pin).
    #[arg(long)]
    pub follow: bool,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub who: Who,
}

#[derive(Args, Debug)]
pub struct RollbackArgs {
    #[arg(long, required_unless_present = "channel", conflicts_with = "channel")]
    pub org: Option<String>,
    #[arg(long)]
    pub channel: Option<Channel>,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub who: Who,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[arg(long)]
    pub org: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum CompatCommand {
    /// Is a bundle manifest compatible with a runtime version (or a build's runner version)?
    Check {
        manifest: PathBuf,
        #[arg(long, required_unless_present = "build", conflicts_with = "build")]
        runtime: Option<String>,
        #[arg(long)]
        build: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

pub async fn promote(config: &LabConfig, a: &PromoteArgs) -> Result<i32> {
    let (build, decision, policy_source) = promote_decision(config, a).await?;
    print_promotion(a, &build, &decision, &policy_source);
    Ok(if decision.allowed { exit::PASS } else { exit::FAILED })
}

/// Decides a promotion under the gate's policy and, unless it is a dry run, records it (the
/// release or the refusal, audited). Returns the build id, the decision and the policy's source.
pub(super) async fn promote_decision(
    config: &LabConfig,
    a: &PromoteArgs,
) -> Result<(crate::contract::BuildId, gate::Decision, String)> {
    let policy = Policy::load(a.policy.as_deref().or(config.gate_policy.as_deref()))?;
    let bundles = a.bundles.iter().map(|b| compat::load(b)).collect::<Result<Vec<_>>>()?;
    // Every input is checked before the registry is opened.
    policy.channel(&a.channel)?;
    let reg = if a.dry_run {
        open_read(config).await?
    } else {
        open_to_change(config).await?
    };
    let request = gate::ops::Promotion {
        build: &a.build,
        channel: &a.channel,
        bundles: &bundles,
        dry_run: a.dry_run,
        actor: a.who.actor(),
        reason: &a.who.reason,
    };
    let repos = config.repo_ids()?;
    let (build, decision) = gate::ops::promote(&reg, &policy, &repos, &request).await?;
    Ok((build, decision, policy.source.clone()))
}

fn print_promotion(a: &PromoteArgs, build: &str, decision: &gate::Decision, policy_source: &str) {
    let value = serde_json::json!({"decision": decision, "dry_run": a.dry_run, "policy": policy_source});
    let lines = gate::view::decision(build, &a.channel, decision, (a.dry_run, policy_source));
    print_view(a.json, &value, lines);
}

pub async fn pin(config: &LabConfig, a: &PinArgs) -> Result<i32> {
    // Names are checked before the registry is opened: a bad one writes nothing.
    gate::ops::check_name("org", &a.org)?;
    // Pinning to a build needs the registry that recorded it; following a channel may be the
    // first thing a new registry holds.
    let reg = if a.build.is_some() {
        open_to_change(config).await?
    } else {
        open(config).await?
    };
    let request = gate::ops::PinRequest {
        org: &a.org,
        channel: a.channel.as_ref(),
        build: a.build.as_deref(),
    };
    let who = a.who.acting();
    let pinned = match gate::ops::pin(&reg, &request, who).await? {
        gate::ops::Outcome::Done(p) => p,
        gate::ops::Outcome::Refused(why) => return refused(a.json, "pin", &why),
    };
    show(a.json, &pinned, gate::view::pinned(&pinned))
}

/// A refusal: every reason on stderr, and under `--json` the refusal object on stdout. It is
/// already in the audit log. Exit 1: the rules blocked it.
pub(super) fn refused(json: bool, action: &str, why: &[String]) -> Result<i32> {
    if json {
        print_json(&serde_json::json!({"action": action, "refused": true, "reasons": why}));
    }
    if why.len() == 1 {
        eprintln!("refused: {}", why[0]);
    } else {
        eprintln!("refused:\n  - {}", why.join("\n  - "));
    }
    Ok(exit::FAILED)
}

pub async fn rollback(config: &LabConfig, a: &RollbackArgs) -> Result<i32> {
    let target = match (&a.channel, &a.org) {
        (Some(c), _) => gate::ops::RollbackTarget::Channel(c),
        (None, Some(o)) => gate::ops::RollbackTarget::Org(o),
        (None, None) => unreachable!("clap requires --org or --channel"),
    };
    if let gate::ops::RollbackTarget::Org(n) = target {
        gate::ops::check_name("org", n)?;
    }
    let reg = open_to_change(config).await?;
    let who = a.who.acting();
    match gate::ops::rollback(&reg, target, who).await? {
        gate::ops::Outcome::Done(r) => {
            let line = format!("{} rolled back from {} to {}", r.target, short(&r.from), short(&r.to));
            show(
                a.json,
                &serde_json::json!({"target": r.target, "from": r.from, "to": r.to}),
                vec![line],
            )
        }
        gate::ops::Outcome::Refused(why) => refused(a.json, "rollback", &why),
    }
}

pub async fn status(config: &LabConfig, a: &StatusArgs) -> Result<i32> {
    if let Some(org) = &a.org {
        gate::ops::check_name("org", org)?;
    }
    let reg = open_read(config).await?;
    let v = status_json(&reg, a.org.as_deref()).await?;
    if a.json {
        print_json(&v);
        return Ok(exit::PASS);
    }
    for line in crate::status::lines(&v) {
        outln!("{line}");
    }
    Ok(exit::PASS)
}

pub async fn compat_check(config: &LabConfig, cmd: &CompatCommand) -> Result<i32> {
    let CompatCommand::Check {
        manifest,
        runtime,
        build,
        json,
    } = cmd;
    let decl = compat::load(manifest)?;
    let runtime = match (runtime, build) {
        (Some(r), _) => compat::runtime_version(r)?,
        (None, Some(b)) => {
            let reg = open_read(config).await?;
            compat::runtime_version(&reg.runner_version(&reg.resolve_build(b).await?).await?)?
        }
        (None, None) => unreachable!("clap requires one"),
    };
    let r = compat::check(&decl, &runtime);
    print_view(*json, &r, r.lines());
    Ok(if r.verdict == compat::Compatibility::Blocked {
        exit::FAILED
    } else {
        exit::PASS
    })
}

/// What `canary status --json` prints (and `canary serve` answers at /v1/status): channels,
/// orgs, builds available for promotion, deployed runners (heartbeats) and upstream versions.
pub(super) async fn status_json(reg: &Registry, org: Option<&str>) -> Result<serde_json::Value> {
    crate::status::status(reg, org).await
}

#[derive(Args, Debug)]
pub struct DriftArgs {
    /// Build: image digest, digest prefix, or the image reference it ran as.
    pub build: String,
    /// The build to compare with (default: the newest earlier build whose inventory of the same
    /// CLI has another version).
    #[arg(long)]
    pub against: Option<String>,
    /// Only this CLI (`codex`, `claude-code`, `gemini`).
    #[arg(long, value_parser = <crate::contract::Provider as std::str::FromStr>::from_str)]
    pub provider: Option<crate::contract::Provider>,
    #[arg(long)]
    pub json: bool,
}

/// `canary drift BUILD [--against BUILD]`: exit 0 nothing the adapters read changed, 1 drift,
/// 2 error (unknown build, no recorded inventory).
pub async fn drift(config: &LabConfig, a: &DriftArgs) -> Result<i32> {
    let reg = open_read(config).await?;
    let reports = crate::drift::compare(&reg, &a.build, a.against.as_deref(), a.provider).await?;
    let id = reports.first().map(|r| r.build.clone());
    let drifted = reports.iter().any(|r| r.drift.is_some());
    let value = serde_json::json!({ "build": id, "drift": drifted, "clis": reports });
    show(a.json, &value, crate::drift::lines(&reports))?;
    Ok(if drifted { exit::FAILED } else { exit::PASS })
}
