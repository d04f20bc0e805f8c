//! Upstream commands: `watch` (what is new upstream), `pipeline` (watch → build → canary →
//! record → promote → notify), `heartbeat` and `serve` (what deployed runners run).
//!
//! Exit codes: `watch` 0 = new versions found, 1 = nothing new, 2 = error; `pipeline` 0 = every
//! candidate green (or nothing to judge), 1 = a candidate was blocked (red or yellow), 2 = error;
//! `heartbeat` / `serve` 0 / 2.

use super::registry::{open, print_json, short};
use crate::config::LabConfig;
use crate::engine::Backend;
use crate::engine::docker::DockerBackend;
use crate::error::{LabError, Result, exit};
use crate::progress::Progress;
use crate::registry::{Audit, Heartbeat, Registry, Verdict};
use crate::report::{CaseStatus, RunReport};
use crate::upstream::{self, Judged, WatchOptions, WatchReport};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// Only this provider (codex, claude-code, gemini).
    #[arg(long)]
    pub provider: Option<String>,
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
    #[arg(long)]
    pub provider: Option<String>,
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
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8787")]
    pub listen: std::net::SocketAddr,
}

pub async fn watch(config: &LabConfig, a: &WatchArgs) -> Result<i32> {
    let reg = open(config).await?;
    let report = upstream::watch(
        &reg,
        &WatchOptions {
            config: &config.upstream,
            cache_dir: config.cache_dir.clone(),
            provider: a.provider.clone(),
            record: !a.no_record,
            resolve: !a.no_resolve,
        },
    )
    .await?;
    if a.json {
        print_json(&report);
    } else {
        print_watch(&report);
    }
    Ok(if report.anything_new() {
        exit::PASS
    } else {
        exit::FAILED
    })
}

fn print_watch(r: &WatchReport) {
    for p in &r.providers {
        let kg = if p.known_good.is_empty() {
            "nothing known-good yet".to_string()
        } else {
            p.known_good
                .iter()
                .map(|(c, v)| format!("{c} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let fresh = p
            .freshness
            .iter()
            .map(|(s, f)| {
                format!(
                    "{s}{}",
                    if *f == upstream::http::Freshness::NotModified {
                        " (not modified)"
                    } else {
                        ""
                    }
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        outln!(
            "{} — known-good: {kg}; upstream: {fresh}, {} versions",
            p.provider,
            p.upstream_versions
        );
        if p.newer.is_empty() {
            outln!("  no candidate newer than known-good");
        }
        let shown = if p.known_good.is_empty() { 10 } else { usize::MAX };
        outln!(
            "  {:<12} {:<8} {:<26} {:<5} SOURCE",
            "VERSION",
            "CHANNEL",
            "PUBLISHED",
            "NEW"
        );
        for j in p.newer.iter().take(shown) {
            outln!(
                "  {:<12} {:<8} {:<26} {:<5} {}{}",
                if j.release.version.starts_with("sdk-") {
                    "?"
                } else {
                    j.release.version.as_str()
                },
                j.channel.as_deref().unwrap_or("-"),
                j.release.published_at.as_deref().unwrap_or("-"),
                if p.new.contains(&j.release.version) { "new" } else { "" },
                j.release.source,
                package_note(j)
            );
        }
        if p.newer.len() > shown {
            outln!("  … and {} older candidates (--json lists all)", p.newer.len() - shown);
        }
        for j in p.skipped.iter().take(5) {
            let why = j.skipped.as_deref().unwrap_or("");
            let short_why: String = why.split(". ").next().unwrap_or(why).chars().take(100).collect();
            outln!("  {:<12} skipped: {short_why}", j.release.package_version);
        }
        if p.skipped.len() > 5 {
            outln!("  … and {} more skipped (--json has the reasons)", p.skipped.len() - 5);
        }
    }
    outln!(
        "{} new version(s){}",
        r.providers.iter().map(|p| p.new.len()).sum::<usize>(),
        if r.recorded > 0 {
            format!(", {} recorded in the registry", r.recorded)
        } else {
            String::new()
        }
    );
}

fn package_note(j: &Judged) -> String {
    if j.release.version == j.release.package_version {
        String::new()
    } else if j.release.version.starts_with("sdk-") {
        format!(
            " ({} {}; bundled version not resolved yet)",
            j.release.package, j.release.package_version
        )
    } else {
        format!(" ({} {})", j.release.package, j.release.package_version)
    }
}

/// One candidate's outcome, as the webhook receives it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Notification {
    pub event: &'static str,
    /// The changed component (the first, for a channel's first build).
    pub provider: String,
    pub version: String,
    pub package: String,
    pub package_version: String,
    /// The channel the policy made it a candidate for.
    pub candidate_for: String,
    /// `green` (passed, promoted), `yellow` (passed with flaky cases or the gate refused), `red`
    /// (a suite failed), `error` (the lab could not judge it).
    pub status: String,
    pub build: Option<String>,
    pub image: Option<String>,
    /// The candidate build's components.
    pub components: Vec<crate::builds::Component>,
    /// What changed from the channel's build, component by component.
    pub component_changes: Vec<crate::builds::Change>,
    pub run_id: Option<String>,
    pub report: Option<String>,
    pub promoted_to: Vec<String>,
    pub changes: String,
    pub summary: serde_json::Value,
    pub failures: Vec<String>,
    pub rollback: Vec<String>,
}

pub async fn pipeline(cli_prefix: &str, config: &LabConfig, a: &PipelineArgs) -> Result<i32> {
    // Stage lines go to stderr even with --json: stdout stays one JSON document.
    let progress = Progress::new(false);
    let reg = open(config).await?;
    progress.line("[watch] checking upstream");
    let watch = upstream::watch(
        &reg,
        &WatchOptions {
            config: &config.upstream,
            cache_dir: config.cache_dir.clone(),
            provider: a.provider.clone(),
            record: true,
            resolve: true,
        },
    )
    .await?;
    let verdicts = reg.verdicts().await?;
    let per_channel = config.upstream.candidates_per_channel.max(1);
    let target = config.pipeline.promote_to.clone();
    let mut newest: Vec<(String, Vec<Judged>)> = Vec::new();
    for p in &watch.providers {
        let mut list = Vec::new();
        for channel in ["stable", "beta"] {
            for j in p
                .newer
                .iter()
                .filter(|j| j.channel.as_deref() == Some(channel))
                .take(per_channel)
            {
                // A verdict of `error` means the lab could not judge it: judged again.
                let judged = verdicts.iter().find(|v| {
                    v.provider == p.provider && v.package_version == j.release.package_version && v.status != "error"
                });
                match judged {
                    Some(v) if !a.rejudge => progress.line(format!(
                        "[watch] {} {}: already judged {} on {} (--rejudge to run it again)",
                        p.provider, j.release.version, v.status, v.decided_at
                    )),
                    _ => list.push(j.clone()),
                }
            }
        }
        if !list.is_empty() {
            newest.push((p.provider.clone(), list));
        }
    }
    let has_build = !reg.known_good(&target).await?.is_empty();
    let candidates = upstream::form_candidates(has_build, newest);
    if candidates.is_empty() {
        progress.line("[watch] nothing new to judge");
    }
    let suites = if a.suites.is_empty() {
        config.pipeline.suites.clone()
    } else {
        a.suites.clone()
    };
    let webhook = a.webhook.clone().or(config.pipeline.webhook.clone());
    let mut outcomes = Vec::new();
    let mut worst = exit::PASS;
    for candidate in candidates {
        let what = candidate
            .iter()
            .map(|(p, j)| format!("{p} {}", j.release.version))
            .collect::<Vec<_>>()
            .join(" + ");
        let n = judge_candidate(
            cli_prefix,
            config,
            &reg,
            &progress,
            &suites,
            a.jobs.unwrap_or(config.pipeline.jobs),
            &target,
            &candidate,
        )
        .await;
        let n = match n {
            Ok(n) => n,
            Err(e) => {
                // The lab could not judge it: said loudly, never recorded as a verdict, so the
                // next pipeline run tries again.
                progress.line(format!("[error] {what}: {e}"));
                worst = exit::ERROR;
                outcomes.push(serde_json::json!({"candidate": what, "status": "error", "error": e.to_string()}));
                continue;
            }
        };
        let payload = serde_json::to_value(&n).expect("json");
        if let Some(run_id) = &n.run_id {
            let file = config.reports_dir.join(run_id).join("notification.json");
            let _ = std::fs::write(&file, serde_json::to_string_pretty(&payload).expect("json"));
            progress.line(format!("[notify] {}", file.display()));
        }
        if let Some(url) = &webhook {
            match post_webhook(url, &payload).await {
                Ok(()) => progress.line(format!("[notify] webhook {url}: delivered")),
                Err(e) => {
                    progress.line(format!("[notify] webhook {url}: {e}"));
                    worst = exit::ERROR;
                }
            }
        }
        for (provider, j) in &candidate {
            reg.record_verdict(
                &Verdict {
                    provider: provider.clone(),
                    package_version: j.release.package_version.clone(),
                    version: n
                        .components
                        .iter()
                        .find(|c| &c.name == provider)
                        .map_or_else(|| j.release.version.clone(), |c| c.version.clone()),
                    build_id: n.build.clone(),
                    status: n.status.clone(),
                    channel: n.promoted_to.last().cloned(),
                    summary: payload.clone(),
                    decided_at: crate::registry::now(),
                },
                Audit {
                    actor: "pipeline",
                    action: "judge",
                    target: &format!("{provider} {}", j.release.version),
                    decision: &n.status,
                    reason: &n.changes,
                    evidence: payload.clone(),
                },
            )
            .await?;
        }
        match n.status.as_str() {
            "green" => {}
            "error" => worst = exit::ERROR,
            _ if worst == exit::PASS => worst = exit::FAILED,
            _ => {}
        }
        outcomes.push(payload);
    }
    if a.json {
        print_json(&serde_json::json!({"watch": watch, "verdicts": outcomes}));
    } else {
        for o in &outcomes {
            outln!(
                "{:<12} {:<12} {:<7} {}",
                o["provider"].as_str().or(o["candidate"].as_str()).unwrap_or(""),
                o["version"].as_str().unwrap_or(""),
                o["status"].as_str().unwrap_or(""),
                o["changes"].as_str().or(o["error"].as_str()).unwrap_or("")
            );
        }
        if outcomes.is_empty() {
            outln!("nothing new to judge");
        }
    }
    Ok(worst)
}

/// The spec that fetches a judged release.
fn spec_of(provider: &str, j: &Judged) -> Result<crate::providers::ProviderSpec> {
    let text = if provider == "claude-code" && j.release.package == "claude-agent-sdk" {
        format!("claude-code@sdk-{}", j.release.package_version)
    } else {
        format!("{provider}@{}", j.release.package_version)
    };
    text.parse()
}

/// Builds the candidate (the channel's build with the candidate's change; a first build when the
/// channel has none), runs the suites for every CLI it bundles, records, promotes under the
/// gate, and says what happened.
#[allow(clippy::too_many_arguments)]
async fn judge_candidate(
    cli_prefix: &str,
    config: &LabConfig,
    reg: &Registry,
    progress: &Progress,
    suites: &[PathBuf],
    jobs: usize,
    target: &str,
    candidate: &[(String, Judged)],
) -> Result<Notification> {
    let engine = DockerBackend::connect().await?;
    let current = reg.known_good(target).await?.into_iter().next();
    let parent = match &current {
        Some(r) => reg.builds().await?.into_iter().find(|b| b.id == r.build_id),
        None => None,
    };
    let parent_manifest = parent.as_ref().and_then(|b| b.manifest.clone());
    let specs = candidate
        .iter()
        .map(|(p, j)| spec_of(p, j))
        .collect::<Result<Vec<_>>>()?;
    let parent_image = match &parent {
        Some(b) => engine.image(&b.image_ref).await?.map(|_| b.image_ref.clone()),
        None => None,
    };
    let derivable = parent_manifest
        .as_ref()
        .is_some_and(|m| specs.iter().all(|s| m.component(s.provider.name()).is_some()));
    let build = match (&parent_image, derivable) {
        (Some(image), true) => {
            progress.line(format!(
                "[build] {} with {}",
                short(&parent.as_ref().expect("parent").id),
                specs.iter().map(|s| s.provider.name()).collect::<Vec<_>>().join(", ")
            ));
            let set: Vec<crate::builds::Set> = specs.iter().cloned().map(crate::builds::Set::Cli).collect();
            crate::builds::derive(&engine, config, image, &set, progress).await?
        }
        _ => {
            // No build on the channel (or its image is not in this engine): a whole build of
            // the channel's CLIs with the candidate's versions in place.
            let mut all = specs.clone();
            if let Some(m) = &parent_manifest {
                for c in m.clis() {
                    if let Some(s) = c.spec().filter(|s| !all.iter().any(|a| a.provider == s.provider)) {
                        all.push(s);
                    }
                }
            }
            progress.line(format!(
                "[build] {}",
                all.iter().map(|s| s.provider.name()).collect::<Vec<_>>().join(" + ")
            ));
            crate::builds::ensure(&engine, config, &all, progress).await?
        }
    };
    let component_changes = build.manifest.changes_from(parent_manifest.as_ref());
    progress.line(format!(
        "[build] {} ({}): {}",
        build.reference,
        short(&build.id),
        component_changes
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let images = vec![crate::lab::plan::ImagePlan {
        reference: build.reference.clone(),
        providers: build.manifest.providers(),
    }];
    let prepared = crate::lab::prepare(config, suites, &[], None, &images)?;
    progress.line(format!("[canary] {} cases", prepared.cases.len()));
    let opts = crate::lab::RunOptions {
        run_id: crate::lab::new_run_id(),
        images: vec![build.reference.clone()],
        jobs,
        partition: None,
        keep: false,
        repro_prefix: cli_prefix.to_string(),
        rerun_failed: 0,
    };
    let (report, run_dir) = crate::lab::run(engine, config, prepared, opts, progress).await?;
    let report_path = run_dir.join(crate::report::JSON_FILE);
    let added = reg.record_run(&report, &report_path.display().to_string()).await?;
    progress.line(format!(
        "[record] {added} results for build {} ({})",
        short(&build.id),
        status_word(&report)
    ));
    let failures = first_failures(&report);
    let mut promoted_to = Vec::new();
    let mut gate_notes = Vec::new();
    let canary_green = report.summary.status() == CaseStatus::Passed;
    let mut status = match report.summary.status() {
        CaseStatus::Passed => "green",
        CaseStatus::Flaky => "yellow",
        CaseStatus::Error => "error",
        _ => "red",
    }
    .to_string();
    if canary_green {
        let mut targets = vec![target.to_string()];
        if config.pipeline.auto_stable
            && candidate.iter().all(|(_, j)| j.channel.as_deref() == Some("stable"))
            && !targets.iter().any(|t| t == "stable")
        {
            targets.push("stable".into());
        }
        let policy = crate::gate::policy::Policy::load(config.gate_policy.as_deref())?;
        let repos = crate::repos::Catalog::load(&config.repos_dir, &config.cache_dir)?.ids();
        for channel in targets {
            let reason = format!("canary green: {}", report.run_id);
            let request = crate::gate::ops::Promotion {
                build: &build.id,
                channel: &channel,
                bundles: &[],
                dry_run: false,
                actor: "pipeline",
                reason: &reason,
            };
            let (_, decision) = crate::gate::ops::promote(reg, &policy, &repos, &request).await?;
            if decision.allowed {
                progress.line(format!("[gate] promoted {} to {channel}", short(&build.id)));
                promoted_to.push(channel);
            } else {
                progress.line(format!("[gate] {channel} refused: {}", decision.unmet.join("; ")));
                gate_notes.extend(decision.unmet.iter().map(|u| format!("{channel}: {u}")));
                status = "yellow".into();
            }
        }
    } else {
        progress.line(format!("[gate] not promoted: {}", status_word(&report)));
    }
    let change_text = component_changes
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let changes = format!(
        "{change_text} (from build {}): {}",
        parent
            .as_ref()
            .map(|b| short(&b.id).to_string())
            .unwrap_or_else(|| "none".into()),
        match status.as_str() {
            "green" => format!("canary green, promoted to {}", promoted_to.join(", ")),
            "yellow" if canary_green => format!("canary green, gate refused: {}", gate_notes.join("; ")),
            "yellow" => "canary passed only on rerun (flaky); not promoted".into(),
            _ => format!("canary {}; not promoted", status_word(&report)),
        }
    );
    let mut rollback: Vec<String> = promoted_to
        .iter()
        .map(|c| format!("canary rollback --channel {c} --reason 'rolling back {change_text}'"))
        .collect();
    if rollback.is_empty() {
        rollback.push("nothing to roll back: the candidate was not promoted".into());
    }
    let (provider, j) = &candidate[0];
    Ok(Notification {
        event: "canary.verdict",
        provider: provider.clone(),
        version: build
            .manifest
            .component(provider)
            .map_or_else(|| j.release.version.clone(), |c| c.version.clone()),
        package: j.release.package.clone(),
        package_version: j.release.package_version.clone(),
        candidate_for: j.channel.clone().unwrap_or_default(),
        status,
        build: Some(build.id.clone()),
        image: Some(build.reference.clone()),
        components: build.manifest.components.clone(),
        component_changes,
        run_id: Some(report.run_id.clone()),
        report: Some(report_path.display().to_string()),
        promoted_to,
        changes,
        summary: serde_json::to_value(&report.summary).expect("json"),
        failures,
        rollback,
    })
}

fn status_word(report: &RunReport) -> String {
    let s = &report.summary;
    format!(
        "{} of {} cases passed, {} failed, {} timed out, {} flaky, {} errors",
        s.passed, s.total, s.failed, s.timed_out, s.flaky, s.error
    )
}

fn first_failures(report: &RunReport) -> Vec<String> {
    report
        .matrix
        .iter()
        .filter(|m| m.status != CaseStatus::Passed)
        .map(|m| {
            format!(
                "{} on {}{}: {}",
                m.suite,
                m.repo,
                m.provider.as_deref().map(|p| format!(" for {p}")).unwrap_or_default(),
                m.cause.as_deref().unwrap_or("failed")
            )
        })
        .take(10)
        .collect()
}

/// POSTs the payload, retrying transient failures a few times.
async fn post_webhook(url: &str, payload: &serde_json::Value) -> std::result::Result<(), String> {
    crate::init_tls();
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(15))
        .build()
        .map_err(|e| e.to_string())?;
    let mut last = String::new();
    for attempt in 0..3u32 {
        if attempt > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(500 * 2u64.pow(attempt))).await;
        }
        match client
            .post(url)
            .header("content-type", "application/json")
            .body(payload.to_string())
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) if r.status().is_client_error() && r.status().as_u16() != 429 => {
                return Err(format!("refused: {}", r.status()));
            }
            Ok(r) => last = format!("{}", r.status()),
            Err(e) => last = e.to_string(),
        }
    }
    Err(format!("not delivered after 3 attempts: {last}"))
}

/// Reads and checks a heartbeat payload; errors name the field.
pub fn parse_heartbeat(text: &str, origin: &str) -> Result<Heartbeat> {
    let bad = |why: String| {
        LabError::usage(
            format!("{origin}: invalid heartbeat: {why}"),
            "see docs/runner-contract.md (HEARTBEAT): runner_id, versions {component: version}, capabilities, ts",
        )
    };
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| bad(format!("not JSON ({e})")))?;
    if v.get("type").is_some_and(|t| t != "HEARTBEAT") {
        return Err(bad(format!("type is {}, not HEARTBEAT", v["type"])));
    }
    let runner_id = v["runner_id"]
        .as_str()
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| bad("`runner_id` is missing or empty".into()))?;
    if runner_id.len() > 128 || runner_id.chars().any(char::is_control) {
        return Err(bad(format!(
            "`runner_id` `{}` must be at most 128 characters without control characters",
            crate::text::clean(&runner_id.chars().take(128).collect::<String>())
        )));
    }
    let versions = v["versions"]
        .as_object()
        .filter(|m| !m.is_empty())
        .ok_or_else(|| bad("`versions` must be a non-empty object".into()))?;
    let mut vs = std::collections::BTreeMap::new();
    for (k, val) in versions {
        let s = val
            .as_str()
            .ok_or_else(|| bad(format!("versions.{k} must be a string")))?;
        vs.insert(k.clone(), s.to_string());
    }
    let capabilities = match &v["capabilities"] {
        serde_json::Value::Null => vec![],
        serde_json::Value::Array(a) => a
            .iter()
            .map(|c| {
                c.as_str()
                    .map(String::from)
                    .ok_or_else(|| bad("capabilities must be strings".into()))
            })
            .collect::<Result<_>>()?,
        _ => return Err(bad("`capabilities` must be a list".into())),
    };
    let sent_at = match v.get("ts").or(v.get("sent_at")) {
        None => crate::registry::now(),
        Some(t) => {
            let t = t
                .as_str()
                .ok_or_else(|| bad("`ts` must be an RFC 3339 time string".into()))?;
            let t = t
                .parse::<jiff::Timestamp>()
                .map_err(|e| bad(format!("`ts` is not an RFC 3339 time ({e})")))?;
            t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
        }
    };
    // Optional strings are strings or absent: a number or an object is an error, never
    // silently dropped.
    let optional = |key: &str| -> Result<Option<String>> {
        match v.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.clone())),
            Some(_) => Err(bad(format!("`{key}` must be a non-empty string when present"))),
        }
    };
    Ok(Heartbeat {
        runner_id: runner_id.into(),
        org: optional("org")?,
        channel: optional("channel")?,
        versions: vs,
        capabilities,
        sent_at,
        received_at: String::new(),
    })
}

pub async fn heartbeat(config: &LabConfig, a: &HeartbeatArgs) -> Result<i32> {
    let text = if a.file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s).map_err(|e| LabError::read("stdin", e))?;
        s
    } else {
        std::fs::read_to_string(&a.file).map_err(|e| LabError::read(&a.file, e))?
    };
    let h = parse_heartbeat(&text, &a.file.display().to_string())?;
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
    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::routing::{get, post};
    let reg = std::sync::Arc::new(open(config).await?);
    async fn take(
        State(reg): State<std::sync::Arc<Registry>>,
        body: String,
    ) -> (StatusCode, axum::Json<serde_json::Value>) {
        match parse_heartbeat(&body, "request body") {
            Ok(h) => match reg.record_heartbeat(&h).await {
                Ok(()) => (
                    StatusCode::ACCEPTED,
                    axum::Json(serde_json::json!({"recorded": h.runner_id})),
                ),
                Err(e) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    axum::Json(serde_json::json!({"error": e.to_string()})),
                ),
            },
            Err(e) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                axum::Json(serde_json::json!({"error": e.to_string()})),
            ),
        }
    }
    async fn status(State(reg): State<std::sync::Arc<Registry>>) -> (StatusCode, axum::Json<serde_json::Value>) {
        match super::gate::status_json(&reg, None).await {
            Ok(v) => (StatusCode::OK, axum::Json(v)),
            Err(e) => (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(serde_json::json!({"error": e.to_string()})),
            ),
        }
    }
    let app = axum::Router::new()
        .route("/v1/heartbeats", post(take))
        .route("/v1/status", get(status))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(reg);
    let listener = tokio::net::TcpListener::bind(a.listen).await.map_err(|e| {
        LabError::usage(
            format!("cannot listen on {}: {e}", a.listen),
            "pick another --listen address",
        )
    })?;
    eprintln!(
        "canary serve: listening on http://{} (POST /v1/heartbeats, GET /v1/status)",
        listener.local_addr().map(|a| a.to_string()).unwrap_or_default()
    );
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| LabError::usage(format!("serve failed: {e}"), "internal"))?;
    Ok(exit::PASS)
}
