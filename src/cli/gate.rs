//! The gate's commands: promote, pin, rollback, status, and bundle compatibility. Exit codes:
//! 0 done / allowed, 1 blocked / refused, 2 error.

use super::registry::{Who, channels, open, print_json, short};
use crate::compat;
use crate::config::LabConfig;
use crate::error::{LabError, Result, exit};
use crate::gate::{self, policy::Policy};
use crate::registry::{Audit, Registry};
use clap::{Args, Subcommand};
use std::path::PathBuf;
#[derive(Args, Debug)]
pub struct PromoteArgs {
    /// Build: image digest, digest prefix, or the image reference it ran as.
    pub build: String,
    #[arg(long)]
    pub channel: String,
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
    pub channel: Option<String>,
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
    pub channel: Option<String>,
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
pub(super) async fn promote_decision(config: &LabConfig, a: &PromoteArgs) -> Result<(String, gate::Decision, String)> {
    let policy = Policy::load(a.policy.as_deref().or(config.gate_policy.as_deref()))?;
    let bundles = a.bundles.iter().map(|b| compat::load(b)).collect::<Result<Vec<_>>>()?;
    let reg = open(config).await?;
    let request = gate::ops::Promotion {
        build: &a.build,
        channel: &a.channel,
        bundles: &bundles,
        dry_run: a.dry_run,
        actor: &a.who.actor(),
        reason: &a.who.reason,
    };
    let repos = crate::repos::Catalog::load(&config.repos_dir, &config.cache_dir)?.ids();
    let (build, decision) = gate::ops::promote(&reg, &policy, &repos, &request).await?;
    Ok((build, decision, policy.source.clone()))
}

fn print_promotion(a: &PromoteArgs, build: &str, decision: &gate::Decision, policy_source: &str) {
    if a.json {
        print_json(&serde_json::json!({"decision": decision, "dry_run": a.dry_run, "policy": policy_source}));
    } else {
        let verb = match (decision.allowed, a.dry_run) {
            (true, true) => "would be promoted",
            (true, false) => "promoted",
            (false, true) => "would be blocked",
            (false, false) => "blocked",
        };
        let prep = if decision.allowed { "to" } else { "from" };
        outln!("build {} {verb} {prep} {} ({policy_source})", short(build), a.channel);
        for u in &decision.unmet {
            outln!("  ✗ {u}");
        }
        for w in &decision.warnings {
            outln!("  ! {w}");
        }
        for c in decision.evidence.iter().filter(|c| c.status.as_deref() == Some("pass")) {
            outln!("  ✓ {}: pass (run {})", c.place(), c.run_id.as_deref().unwrap_or("?"));
        }
    }
}

pub async fn pin(config: &LabConfig, a: &PinArgs) -> Result<i32> {
    let reg = open(config).await?;
    let current = reg.pins().await?.into_iter().find(|p| p.org == a.org);
    let channel = a
        .channel
        .clone()
        .or(current.as_ref().map(|p| p.channel.clone()))
        .unwrap_or_else(|| "stable".into());
    let from = effective(&reg, current.as_ref()).await?;
    let actor = a.who.actor();
    let build = match &a.build {
        None => None,
        Some(b) => {
            let id = reg.resolve_build(b).await?;
            let known_good = reg.releases(None, 100_000).await?.iter().any(|r| r.build_id == id);
            if !known_good {
                let reason = "the build was never promoted to any channel: only known-good builds can be pinned";
                reg.audit(Audit {
                    actor: &actor,
                    action: "pin",
                    target: &format!("{} -> {id}", a.org),
                    decision: "refused",
                    reason,
                    evidence: serde_json::json!({}),
                })
                .await?;
                eprintln!("refused: {reason}");
                return Ok(exit::FAILED);
            }
            Some(id)
        }
    };
    let target = format!(
        "{} -> {}",
        a.org,
        build.clone().unwrap_or_else(|| format!("channel {channel}"))
    );
    reg.set_pin(
        &a.org,
        &channel,
        build.as_deref(),
        from.as_deref(),
        "pin",
        Audit {
            actor: &actor,
            action: "pin",
            target: &target,
            decision: "done",
            reason: &a.who.reason,
            evidence: serde_json::json!({"from": from}),
        },
    )
    .await?;
    let now = effective_of(&reg, &a.org).await?;
    if a.json {
        print_json(&serde_json::json!({"org": a.org, "channel": channel, "pinned_build": build, "runs": now}));
    } else {
        outln!(
            "org {} {} (runs {})",
            a.org,
            match &build {
                Some(b) => format!("pinned to {}", short(b)),
                None => format!("follows {channel}"),
            },
            now.as_deref().map(short).unwrap_or("nothing yet")
        );
    }
    Ok(exit::PASS)
}

async fn effective(reg: &Registry, pin: Option<&crate::registry::OrgPin>) -> Result<Option<String>> {
    let Some(p) = pin else { return Ok(None) };
    if let Some(b) = &p.pinned_build_id {
        return Ok(Some(b.clone()));
    }
    Ok(reg.known_good(&p.channel).await?.first().map(|r| r.build_id.clone()))
}

async fn effective_of(reg: &Registry, org: &str) -> Result<Option<String>> {
    let pins = reg.pins().await?;
    effective(reg, pins.iter().find(|p| p.org == org)).await
}

pub async fn rollback(config: &LabConfig, a: &RollbackArgs) -> Result<i32> {
    let reg = open(config).await?;
    let actor = a.who.actor();
    let refuse = |why: String| -> Result<i32> {
        eprintln!("refused: {why}");
        Ok(exit::FAILED)
    };
    if let Some(channel) = &a.channel {
        let history = reg.known_good(channel).await?;
        let (Some(current), Some(previous)) = (history.first(), history.get(1)) else {
            return refuse(format!(
                "channel `{channel}` has no previous known-good build to return to"
            ));
        };
        let target = format!("{channel}: {} -> {}", current.build_id, previous.build_id);
        reg.release(
            channel,
            &previous.build_id,
            "rollback",
            Audit {
                actor: &actor,
                action: "rollback",
                target: &target,
                decision: "done",
                reason: &a.who.reason,
                evidence: serde_json::json!({"from": current.build_id, "to": previous.build_id}),
            },
        )
        .await?;
        return report_rollback(a.json, channel, &current.build_id, &previous.build_id);
    }
    let org = a.org.as_deref().expect("clap requires --org or --channel");
    let pins = reg.pins().await?;
    let Some(pin) = pins.iter().find(|p| p.org == org) else {
        return Err(LabError::usage(
            format!("unknown org `{org}`"),
            "pin it first: `canary pin --org ORG --channel stable`",
        ));
    };
    let Some(current) = effective(&reg, Some(pin)).await? else {
        return refuse(format!("org `{org}` runs nothing yet"));
    };
    let history = reg.known_good(&pin.channel).await?;
    let previous = match history.iter().position(|r| r.build_id == current) {
        Some(i) => history.get(i + 1),
        None => history.first(),
    };
    let Some(previous) = previous else {
        return refuse(format!(
            "channel `{}` has no known-good build older than the one org `{org}` runs",
            pin.channel
        ));
    };
    let target = format!("{org}: {current} -> {}", previous.build_id);
    reg.set_pin(
        org,
        &pin.channel,
        Some(&previous.build_id),
        Some(&current),
        "rollback",
        Audit {
            actor: &actor,
            action: "rollback",
            target: &target,
            decision: "done",
            reason: &a.who.reason,
            evidence: serde_json::json!({"from": current, "to": previous.build_id}),
        },
    )
    .await?;
    report_rollback(a.json, org, &current, &previous.build_id)
}

fn report_rollback(json: bool, what: &str, from: &str, to: &str) -> Result<i32> {
    if json {
        print_json(&serde_json::json!({"target": what, "from": from, "to": to}));
    } else {
        outln!("{what} rolled back from {} to {}", short(from), short(to));
    }
    Ok(exit::PASS)
}

pub async fn status(config: &LabConfig, a: &StatusArgs) -> Result<i32> {
    let reg = open(config).await?;
    let v = status_json(&reg, a.org.as_deref()).await?;
    if a.json {
        print_json(&v);
        return Ok(exit::PASS);
    }
    let rows = |k: &str| v[k].as_array().cloned().unwrap_or_default();
    let (channel_rows, org_rows, available) = (rows("channels"), rows("orgs"), rows("available"));
    outln!("CHANNELS");
    for c in &channel_rows {
        outln!(
            "  {:<8} {:<14} {:<34} since {}  (previous known-good: {})",
            c["channel"].as_str().unwrap_or(""),
            short(c["build"].as_str().unwrap_or("-")),
            c["image"].as_str().unwrap_or(""),
            c["since"].as_str().unwrap_or("-"),
            c["previous_known_good"].as_str().map(short).unwrap_or("none")
        );
        for comp in c["components"].as_array().into_iter().flatten() {
            outln!(
                "           {:<12} {}",
                crate::text::clean(comp["name"].as_str().unwrap_or("")),
                crate::text::clean(comp["version"].as_str().unwrap_or(""))
            );
        }
    }
    outln!("ORGS");
    for o in &org_rows {
        let how = match o["pinned_build"].as_str() {
            Some(b) => format!("pinned to {}", short(b)),
            None => format!("follows {}", o["channel"].as_str().unwrap_or("")),
        };
        outln!(
            "  {:<16} {:<26} runs {:<14} since {}",
            o["org"].as_str().unwrap_or(""),
            how,
            o["runs"].as_str().map(short).unwrap_or("-"),
            o["since"].as_str().unwrap_or("")
        );
    }
    outln!("AVAILABLE (every recorded case passed, not current anywhere)");
    for b in &available {
        outln!(
            "  {:<14} {}",
            short(b["build"].as_str().unwrap_or("")),
            b["image"].as_str().unwrap_or("")
        );
    }
    let versions = |v: &serde_json::Value| {
        v.as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k} {}", v.as_str().unwrap_or("?")))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_else(|| "-".into())
    };
    outln!("RUNNERS (deployed, from heartbeats; known-good of their channel)");
    for r in rows("runners") {
        outln!(
            "  {:<18} {:<8} runs {:<40} known-good {:<30} last seen {}",
            crate::text::clean(r["runner_id"].as_str().unwrap_or("")),
            r["channel"].as_str().unwrap_or(""),
            versions(&r["versions"]),
            versions(&r["known_good_runtimes"]),
            r["sent_at"].as_str().unwrap_or("")
        );
    }
    outln!("UPSTREAM (newest version recorded by `canary watch`)");
    if let Some(m) = v["upstream"].as_object() {
        for (p, u) in m {
            outln!(
                "  {:<12} {:<12} {:<8} published {}",
                p,
                u["version"].as_str().unwrap_or(""),
                u["channel"].as_str().unwrap_or(""),
                u["released_at"].as_str().unwrap_or("-")
            );
        }
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
            let reg = open(config).await?;
            let id = reg.resolve_build(b).await?;
            let runner = reg
                .builds()
                .await?
                .into_iter()
                .find(|x| x.id == id)
                .map(|x| x.runner_version)
                .unwrap_or_default();
            compat::runtime_version(&runner)?
        }
        (None, None) => unreachable!("clap requires one"),
    };
    let r = compat::check(&decl, &runtime);
    if *json {
        print_json(&r);
    } else {
        outln!(
            "{}: {} with runtime {}",
            r.manifest,
            serde_json::to_value(r.verdict).expect("ser").as_str().unwrap_or(""),
            r.runtime
        );
        for why in &r.reasons {
            outln!("  ✗ {why}");
        }
        for w in &r.warnings {
            outln!("  ! {w}");
        }
    }
    Ok(if r.verdict == compat::Verdict::Blocked {
        exit::FAILED
    } else {
        exit::PASS
    })
}

/// What `canary status --json` prints (and `canary serve` answers at /v1/status): channels,
/// orgs, builds available for promotion, deployed runners (heartbeats) and upstream versions.
pub(super) async fn status_json(reg: &Registry, org: Option<&str>) -> Result<serde_json::Value> {
    let builds = reg.builds().await?;
    let image = |id: &str| {
        builds
            .iter()
            .find(|b| b.id == id)
            .map(|b| b.image_ref.clone())
            .unwrap_or_default()
    };
    let mut channel_rows = Vec::new();
    for channel in channels(reg).await? {
        let history = reg.known_good(&channel).await?;
        let releases = reg.releases(Some(&channel), 1).await?;
        let manifest = history
            .first()
            .and_then(|r| builds.iter().find(|b| b.id == r.build_id))
            .and_then(|b| b.manifest.clone());
        channel_rows.push(serde_json::json!({
            "channel": channel,
            "build": history.first().map(|r| r.build_id.clone()),
            "image": history.first().map(|r| image(&r.build_id)),
            "components": manifest.as_ref().map(|m| &m.components),
            "since": releases.first().map(|r| r.released_at.clone()),
            "previous_known_good": history.get(1).map(|r| r.build_id.clone()),
        }));
    }
    let mut org_rows = Vec::new();
    for p in reg.pins().await?.into_iter().filter(|p| org.is_none_or(|o| o == p.org)) {
        let runs = effective(reg, Some(&p)).await?;
        org_rows.push(serde_json::json!({"org": p.org, "channel": p.channel, "pinned_build": p.pinned_build_id, "runs": runs, "since": p.since}));
    }
    if let Some(org) = org {
        if org_rows.is_empty() {
            return Err(LabError::usage(
                format!("unknown org `{org}`"),
                "`canary status` lists the orgs with pins",
            ));
        }
    }
    let current: Vec<String> = channel_rows
        .iter()
        .filter_map(|c| c["build"].as_str().map(String::from))
        .collect();
    let available: Vec<_> = builds
        .iter()
        .filter(|b| !current.contains(&b.id) && b.results > 0 && b.results == b.passing)
        .map(|b| serde_json::json!({"build": b.id, "image": b.image_ref, "results": b.results}))
        .collect();
    // Deployed runners next to what they should run: the known-good of their channel.
    let mut runners = Vec::new();
    for h in reg.heartbeats().await? {
        let channel = h.channel.clone().unwrap_or_else(|| "stable".into());
        let kg = channel_rows
            .iter()
            .find(|c| c["channel"] == channel.as_str())
            .and_then(|c| c["build"].as_str().map(String::from));
        let kg_runtimes = kg
            .as_ref()
            .and_then(|id| builds.iter().find(|b| &b.id == id))
            .map(|b| b.runtime_versions.clone())
            .unwrap_or(serde_json::Value::Null);
        runners.push(serde_json::json!({
            "runner_id": h.runner_id, "org": h.org, "channel": channel, "versions": h.versions,
            "capabilities": h.capabilities, "sent_at": h.sent_at, "received_at": h.received_at,
            "known_good_build": kg, "known_good_runtimes": kg_runtimes,
        }));
    }
    // The newest upstream version the watch recorded, per provider. Claude Code releases whose
    // bundled CLI version is not known yet (`sdk-…`) are not CLI versions and never "newest".
    let mut upstream: std::collections::BTreeMap<String, serde_json::Value> = Default::default();
    for v in reg
        .versions()
        .await?
        .into_iter()
        .filter(|v| !v.version.starts_with("sdk-"))
    {
        let newer = match upstream.get(&v.provider) {
            None => true,
            Some(cur) => {
                let parse = |s: &str| crate::upstream::semver_of(s);
                match (parse(&v.version), cur["version"].as_str().and_then(parse)) {
                    (Some(a), Some(b)) => a > b,
                    _ => false,
                }
            }
        };
        if newer {
            upstream.insert(v.provider.clone(), serde_json::to_value(&v).expect("json"));
        }
    }
    Ok(serde_json::json!({
        "channels": channel_rows, "orgs": org_rows, "available": available,
        "runners": runners, "upstream": upstream,
    }))
}
