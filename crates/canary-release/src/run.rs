//! `canary run` as a library call: suites over runner builds (built from CLI specs, or images
//! given), each case's events recorded in the known-good registry as they come, and a green
//! run's builds released to a channel through the gate.

use crate::config::LabConfig;
use crate::engine::Backend;
use crate::engine::docker::DockerBackend;
use crate::error::{LabError, Result};
use crate::gate::Decision;
use crate::lab::{self, RunOptions, plan::Partition};
use crate::progress::Progress;
use crate::providers::ProviderSpec;
use crate::registry::Registry;
use crate::report::RunReport;
use std::path::PathBuf;

/// What to run. Builds come from `specs` (stacked on `runner_image` when given), else from
/// `images`, else the lab's base image.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub suites: Vec<PathBuf>,
    pub repos: Vec<String>,
    pub partition: Option<Partition>,
    pub jobs: usize,
    pub specs: Vec<ProviderSpec>,
    pub runner_image: Option<String>,
    pub images: Vec<String>,
    /// Record the run in the registry (opened before anything runs).
    pub record: bool,
    pub rerun_failed: u32,
    /// How the printed repro lines start (`canary` and the global flags this run was given).
    pub repro_prefix: String,
}

/// A finished run: its report and folder, and the registry it was recorded in with how many
/// results went in.
pub struct Ran {
    pub report: RunReport,
    pub run_dir: PathBuf,
    pub recorded: Option<(Registry, u64)>,
}

/// Refuses flag combinations that cannot do what they say, before anything runs.
pub fn check(r: &Request, promote: bool) -> Result<()> {
    if promote && !r.record {
        return Err(LabError::usage(
            "--promote needs the run's results in the registry",
            "drop --no-record",
        ));
    }
    if r.runner_image.is_some() && r.specs.is_empty() {
        return Err(LabError::usage(
            "--runner-image needs the CLIs to stack on it",
            "add --provider SPEC (or --default-providers)",
        ));
    }
    Ok(())
}

/// What a run folder keeps of its request (`request.json`), so `canary run --resume RUN` runs
/// the same plan: the suites by name (their copies are in the folder), the images as resolved.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Saved {
    suites: Vec<String>,
    repos: Vec<String>,
    partition: Option<String>,
    jobs: usize,
    images: Vec<String>,
    record: bool,
    rerun_failed: u32,
}

const REQUEST_FILE: &str = "request.json";

/// Writes `request.json` once the run has started (its images found, its engines ready): a run
/// refused before that leaves no folder.
struct SaveRequest {
    path: PathBuf,
    saved: Saved,
}

impl crate::report::events::Reporter for SaveRequest {
    fn on_event<'a>(
        &'a self,
        event: &'a crate::report::events::RunEvent<'_>,
    ) -> futures_util::future::BoxFuture<'a, Result<()>> {
        let result = match event {
            crate::report::events::RunEvent::RunStarted { .. } => crate::fsutil::write_atomic(
                &self.path,
                serde_json::to_string_pretty(&self.saved)
                    .expect("request serializes")
                    .as_bytes(),
            ),
            _ => Ok(()),
        };
        crate::report::events::done(result)
    }
}

/// Runs the request. Every error in the user's files comes before any engine or registry is
/// touched; an unreachable registry is an error before anything runs, not a lost verdict.
pub async fn run(config: &LabConfig, r: Request, progress: &Progress) -> Result<Ran> {
    run_as(config, r, (lab::new_run_id(), Vec::new()), progress).await
}

/// Runs again the cases of an earlier run `run_id` that have no verdict (killed or interrupted
/// before they finished, or ended by a lab error), into the same folder and report: the same
/// suites (the folder's copies), repos, partition and images.
pub async fn resume(config: &LabConfig, run_id: &str, repro_prefix: String, progress: &Progress) -> Result<Ran> {
    let valid =
        !run_id.is_empty() && run_id.len() <= 64 && run_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    let dir = config.reports_dir.join(run_id);
    if !valid || !dir.join(REQUEST_FILE).is_file() {
        return Err(LabError::usage(
            format!(
                "no run `{}` to resume in {}",
                crate::text::clean(run_id),
                config.reports_dir.display()
            ),
            "name a run id as `canary run` printed it (a run started by this version of the lab)",
        ));
    }
    let text = crate::fsutil::read_input(&dir.join(REQUEST_FILE), "the run's request", 1 << 20)?;
    let saved: Saved = serde_json::from_str(&text).map_err(|e| {
        LabError::usage(
            format!("{}: {e}", dir.join(REQUEST_FILE).display()),
            "the run folder is damaged: start a new run",
        )
    })?;
    let judged: Vec<_> = crate::report::events::Journal::read(&dir)?
        .into_iter()
        .filter(|c| c.status != crate::report::CaseStatus::Error)
        .collect();
    progress.line(format!("resuming run {run_id}: {} cases already judged", judged.len()));
    let r = Request {
        suites: saved
            .suites
            .iter()
            .map(|s| dir.join("suites").join(format!("{s}.yaml")))
            .collect(),
        repos: saved.repos,
        partition: saved.partition.as_deref().map(str::parse).transpose()?,
        jobs: saved.jobs,
        images: saved.images,
        record: saved.record,
        rerun_failed: saved.rerun_failed,
        repro_prefix,
        ..Default::default()
    };
    run_as(config, r, (run_id.to_string(), judged), progress).await
}

async fn run_as(
    config: &LabConfig,
    r: Request,
    (run_id, judged): (String, Vec<crate::report::CaseReport>),
    progress: &Progress,
) -> Result<Ran> {
    lab::load_suites(&config.lab(), &r.suites, &r.repos)?;
    let engine = DockerBackend::connect().await?;
    let images = if !r.specs.is_empty() {
        let runner = match &r.runner_image {
            Some(i) => crate::builds::RunnerChoice::Image(i.clone()),
            None => crate::builds::RunnerChoice::Local,
        };
        let build = crate::builds::ensure_with(&engine, &config.lab(), &r.specs, &runner, progress).await?;
        progress.line(format!("build {}: {}", build.reference, build.manifest.summary()));
        vec![build.reference]
    } else if r.images.is_empty() {
        vec![crate::images::base_reference(&config.lab())]
    } else {
        r.images.clone()
    };
    let mut plans = Vec::new();
    for reference in &images {
        let mut image = engine.image(reference).await?;
        // A build this engine lacks is taken from where it was pushed, by digest.
        if image.is_none()
            && let Some(p) = crate::publish::fetch_missing(config, &engine, reference).await?
        {
            progress.line(crate::publish::pulled_line(&p));
            image = engine.image(reference).await?;
        }
        // A missing image is reported by the run itself, with how to build it.
        let labels = image.map(|i| i.labels).unwrap_or_default();
        plans.push(lab::plan::ImagePlan::from_labels(reference, &labels));
    }
    let prepared = lab::prepare(&config.lab(), &r.suites, &r.repos, r.partition, &plans)?;
    let registry = if r.record {
        Some(Registry::open(&config.registry).await?)
    } else {
        None
    };
    // The registry records the run as one more consumer of its events.
    let (mut reporters, added): (Vec<Box<dyn crate::report::events::Reporter>>, _) = match &registry {
        Some(reg) => {
            let (recorder, added) = crate::registry::Recorder::new(reg.clone());
            (vec![Box::new(recorder)], Some(added))
        }
        None => (Vec::new(), None),
    };
    reporters.push(Box::new(SaveRequest {
        path: config.reports_dir.join(&run_id).join(REQUEST_FILE),
        saved: Saved {
            suites: prepared.suites.iter().map(|s| s.name.clone()).collect(),
            repos: r.repos.clone(),
            partition: r.partition.map(|p| p.to_string()),
            jobs: r.jobs,
            images: images.clone(),
            record: r.record,
            rerun_failed: r.rerun_failed,
        },
    }));
    let opts = RunOptions {
        run_id,
        images,
        jobs: r.jobs,
        partition: r.partition,
        keep: false,
        repro_prefix: r.repro_prefix,
        rerun_failed: r.rerun_failed,
        reporters,
        judged,
    };
    let (report, run_dir) = crate::engines::run(config, engine, prepared, opts, progress).await?;
    let recorded = match (registry, added) {
        (Some(reg), Some(added)) => Some((reg, added.load(std::sync::atomic::Ordering::SeqCst))),
        _ => None,
    };
    Ok(Ran {
        report,
        run_dir,
        recorded,
    })
}

/// `canary run --promote`: each image of a green run goes to `channel` under the gate's policy;
/// the decisions, and where the policy came from.
pub async fn promote(
    config: &LabConfig,
    reg: &Registry,
    report: &RunReport,
    channel: &canary_contract::Channel,
) -> Result<(Vec<Decision>, String)> {
    let policy = crate::gate::policy::Policy::load(config.gate_policy.as_deref())?;
    let actor = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let reason = format!("canary run {} green", report.run_id);
    let who = crate::gate::ops::Actor {
        name: &actor,
        reason: &reason,
    };
    let builds: Vec<&str> = report.images.iter().map(|i| i.id.as_str()).collect();
    let decisions = crate::gate::ops::release(
        reg,
        &policy,
        &config.repo_ids()?,
        (&builds, std::slice::from_ref(channel)),
        who,
    )
    .await?;
    Ok((decisions, policy.source))
}

/// What `run --promote` decided, one line per build (and each unmet condition), then which
/// build the channel runs now.
pub async fn promoted_lines(
    reg: &Registry,
    (channel, source): (&canary_contract::Channel, &str),
    decisions: &[Decision],
) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for d in decisions {
        let verb = if d.allowed { "promoted to" } else { "blocked from" };
        out.push(format!("build {} {verb} {channel} ({source})", lab::short_id(&d.build)));
        out.extend(d.unmet.iter().map(|u| format!("  ✗ {u}")));
    }
    if let Some(current) = reg.known_good(channel).await?.first() {
        let row = reg.build_row(&current.build_id).await?;
        out.push(format!(
            "{channel} is build {} since {}: {}",
            lab::short_id(&current.build_id),
            current.released_at,
            row.and_then(|b| b.manifest.map(|m| m.summary()))
                .unwrap_or_else(|| current.image_ref.clone())
        ));
    }
    Ok(out)
}
