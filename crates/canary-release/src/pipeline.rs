//! The pipeline: watch → candidates → build → canary → record → gate → promote → notify. The
//! command line (`canary pipeline`) and any scheduler call [`run`]; it decides and records
//! everything, the caller only renders the outcome.

use crate::config::LabConfig;
use crate::engine::Backend;
use crate::engine::docker::DockerBackend;
use crate::error::{Result, exit};
use crate::progress::Progress;
use crate::registry::{Audit, Light, PipelineVerdict, Registry};
use crate::report::{CaseStatus, RunReport};
use crate::upstream::{self, Judged, WatchOptions, WatchReport};
use canary_contract::{BuildId, Channel, Provider};
use std::path::PathBuf;

fn short(id: &str) -> &str {
    crate::lab::short_id(id)
}

/// One candidate's outcome, as the webhook receives it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Notification {
    pub event: &'static str,
    /// The changed component (the first, for a channel's first build).
    pub provider: Provider,
    pub version: String,
    pub package: String,
    pub package_version: String,
    /// The channel the policy made it a candidate for.
    pub candidate_for: String,
    pub status: Light,
    pub build: Option<BuildId>,
    pub image: Option<String>,
    /// The candidate build's components.
    pub components: Vec<crate::builds::Component>,
    /// What changed from the channel's build, component by component.
    pub component_changes: Vec<crate::builds::Change>,
    pub run_id: Option<String>,
    pub report: Option<String>,
    pub promoted_to: Vec<Channel>,
    pub changes: String,
    pub summary: serde_json::Value,
    pub failures: Vec<String>,
    pub rollback: Vec<String>,
}

/// What one pipeline run is asked to do.
#[derive(Debug, Clone, Default)]
pub struct PipelineOptions {
    /// Only this provider.
    pub provider: Option<Provider>,
    /// Suites candidates must pass (empty: the lab config's `pipeline.suites`).
    pub suites: Vec<PathBuf>,
    /// Judge candidates again even when the registry has a verdict for them.
    pub rejudge: bool,
    /// Where verdicts are posted (none: the lab config's `pipeline.webhook`).
    pub webhook: Option<String>,
    /// Parallel cases per canary run (none: the lab config's `pipeline.jobs`).
    pub jobs: Option<usize>,
    /// How a case's repro line starts (`canary --registry ...`).
    pub repro_prefix: String,
}

/// What a pipeline run did: the watch, one verdict per candidate, and the exit code it means
/// (0 all green or nothing to judge, 1 a candidate blocked, 2 a candidate could not be judged
/// or a notification failed).
#[derive(Debug, Clone, serde::Serialize)]
pub struct PipelineOutcome {
    pub watch: WatchReport,
    pub verdicts: Vec<serde_json::Value>,
    #[serde(skip)]
    pub exit_code: i32,
}

impl PipelineOutcome {
    /// One line per verdict (CLI, version, status, what changed or the error), or "nothing new".
    pub fn lines(&self) -> Vec<String> {
        use canary_contract::text::clean;
        if self.verdicts.is_empty() {
            return vec!["nothing new to judge".into()];
        }
        self.verdicts
            .iter()
            .map(|o| {
                format!(
                    "{:<12} {:<12} {:<7} {}",
                    clean(o["provider"].as_str().or(o["candidate"].as_str()).unwrap_or("")),
                    clean(o["version"].as_str().unwrap_or("")),
                    o["status"].as_str().unwrap_or(""),
                    clean(o["changes"].as_str().or(o["error"].as_str()).unwrap_or(""))
                )
            })
            .collect()
    }
}

/// Watch, form candidates (each the channel's build with one component changed), judge each
/// (build, canary, record, gate, promote), notify, and record the verdicts. Idempotent: a
/// candidate with a verdict is not judged again unless `rejudge`; one the lab could not judge
/// is judged again on the next run.
pub async fn run(
    config: &LabConfig,
    reg: &Registry,
    a: &PipelineOptions,
    progress: &Progress,
) -> Result<PipelineOutcome> {
    let cli_prefix = a.repro_prefix.as_str();
    progress.line("[watch] checking upstream");
    let watch = upstream::watch(
        reg,
        &WatchOptions {
            config: &config.upstream,
            cache_dir: config.cache_dir.clone(),
            provider: a.provider,
            record: true,
            resolve: true,
        },
    )
    .await?;
    let target = config.pipeline.promote_to.clone();
    let newest = unjudged(&watch, &reg.verdicts().await?, config, a.rejudge, progress);
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
        let judging = Candidate {
            cli_prefix,
            config,
            reg,
            progress,
            suites: &suites,
            jobs: a.jobs.unwrap_or(config.pipeline.jobs),
            target: &target,
            changes: &candidate,
        };
        let n = judging.judge().await;
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
        let (payload, code) = deliver(config, reg, webhook.as_deref(), &candidate, &n, progress).await?;
        worst = worst.max(code);
        outcomes.push(payload);
    }
    Ok(PipelineOutcome {
        watch,
        verdicts: outcomes,
        exit_code: worst,
    })
}

/// The spec that fetches a judged release.
fn spec_of(provider: Provider, j: &Judged) -> Result<crate::providers::ProviderSpec> {
    let text = if provider == Provider::ClaudeCode && j.release.package == "claude-agent-sdk" {
        format!("claude-code@sdk-{}", j.release.package_version)
    } else {
        format!("{provider}@{}", j.release.package_version)
    };
    text.parse()
}

/// The newest versions of each CLI, per built-in channel, that have no verdict yet (or only
/// `error`, which means the lab could not judge them); all of them again with `rejudge`.
fn unjudged(
    watch: &WatchReport,
    verdicts: &[PipelineVerdict],
    config: &LabConfig,
    rejudge: bool,
    progress: &Progress,
) -> Vec<(Provider, Vec<Judged>)> {
    let per_channel = config.upstream.candidates_per_channel.max(1);
    let mut newest = Vec::new();
    for p in &watch.providers {
        let mut list = Vec::new();
        for channel in Channel::built_in() {
            let newer = p.newer.iter().filter(|j| j.channel.as_ref() == Some(&channel));
            for j in newer.take(per_channel) {
                let judged = verdicts.iter().find(|v| {
                    v.provider == p.provider
                        && v.package_version == j.release.package_version
                        && v.status != Light::Error
                });
                match judged {
                    Some(v) if !rejudge => progress.line(format!(
                        "[watch] {} {}: already judged {} on {} (--rejudge to run it again)",
                        p.provider, j.release.version, v.status, v.decided_at
                    )),
                    _ => list.push(j.clone()),
                }
            }
        }
        if !list.is_empty() {
            newest.push((p.provider, list));
        }
    }
    newest
}

/// Tells of a verdict (notification.json beside the run, the webhook) and records it for each
/// changed component; the verdict as JSON and the exit code it calls for (a notification that
/// could not be written or delivered is an error, never dropped).
async fn deliver(
    config: &LabConfig,
    reg: &Registry,
    webhook: Option<&str>,
    candidate: &[(Provider, Judged)],
    n: &Notification,
    progress: &Progress,
) -> Result<(serde_json::Value, i32)> {
    let payload = serde_json::to_value(n).expect("json");
    let mut code = match n.status {
        Light::Green => exit::PASS,
        Light::Error => exit::ERROR,
        _ => exit::FAILED,
    };
    if let Some(run_id) = &n.run_id {
        let file = config.reports_dir.join(run_id).join("notification.json");
        match crate::fsutil::write_atomic(&file, serde_json::to_string_pretty(&payload).expect("json").as_bytes()) {
            Ok(()) => progress.line(format!("[notify] {}", file.display())),
            Err(e) => {
                progress.line(format!("[notify] {e}"));
                code = exit::ERROR;
            }
        }
    }
    if let Some(url) = webhook {
        match crate::webhook::post(url, &payload).await {
            Ok(()) => progress.line(format!("[notify] webhook {url}: delivered")),
            Err(e) => {
                progress.line(format!("[notify] webhook {url}: {e}"));
                code = exit::ERROR;
            }
        }
    }
    for (provider, j) in candidate {
        let version = n
            .components
            .iter()
            .find(|c| c.name == provider.name())
            .map_or_else(|| j.release.version.clone(), |c| c.version.clone());
        let verdict = PipelineVerdict {
            provider: *provider,
            package_version: j.release.package_version.clone(),
            version,
            build_id: n.build.clone(),
            status: n.status,
            channel: n.promoted_to.last().cloned(),
            summary: payload.clone(),
            decided_at: crate::registry::now(),
        };
        let audit = Audit {
            actor: "pipeline",
            action: "judge",
            target: &format!("{provider} {}", j.release.version),
            decision: n.status.as_str(),
            reason: &n.changes,
            evidence: payload.clone(),
        };
        reg.record_verdict(&verdict, audit).await?;
    }
    Ok((payload, code))
}

/// What judging one candidate works with: the pipeline's settings and the candidate itself
/// (each changed component with the release it comes from).
struct Candidate<'a> {
    cli_prefix: &'a str,
    config: &'a LabConfig,
    reg: &'a Registry,
    progress: &'a Progress,
    suites: &'a [PathBuf],
    jobs: usize,
    /// The channel the policy made it a candidate for.
    target: &'a Channel,
    changes: &'a [(Provider, Judged)],
}

/// What the gate made of a canary run: the verdict, the channels it went to, and each refusal.
struct Gated {
    status: Light,
    promoted_to: Vec<Channel>,
    notes: Vec<String>,
}

impl Candidate<'_> {
    /// The candidate build: the channel's build with the candidate's change (derived, layers
    /// shared), or a whole build of the channel's CLIs when the channel has none or its image is
    /// not in this engine. Also the channel's build it was made from.
    async fn build(&self, engine: &DockerBackend) -> Result<(crate::builds::Build, Option<crate::registry::BuildRow>)> {
        let (config, progress) = (self.config, self.progress);
        let current = self.reg.known_good(self.target).await?.into_iter().next();
        let parent = match &current {
            Some(r) => self.reg.build_row(&r.build_id).await?,
            None => None,
        };
        let parent_manifest = parent.as_ref().and_then(|b| b.manifest.clone());
        let specs = self
            .changes
            .iter()
            .map(|(p, j)| spec_of(*p, j))
            .collect::<Result<Vec<_>>>()?;
        let parent_image = match &parent {
            Some(b) => engine.image(&b.image_ref).await?.map(|_| b.image_ref.clone()),
            None => None,
        };
        let derivable = parent_manifest
            .as_ref()
            .is_some_and(|m| specs.iter().all(|s| m.component(s.provider.name()).is_some()));
        let names = |specs: &[crate::providers::ProviderSpec], sep: &str| {
            specs.iter().map(|s| s.provider.name()).collect::<Vec<_>>().join(sep)
        };
        let build = match (&parent_image, &parent, derivable) {
            (Some(image), Some(p), true) => {
                progress.line(format!("[build] {} with {}", short(&p.id), names(&specs, ", ")));
                let set: Vec<crate::builds::Set> = specs.iter().cloned().map(crate::builds::Set::Cli).collect();
                crate::builds::derive(engine, &config.lab(), image, &set, progress).await?
            }
            _ => {
                let mut all = specs.clone();
                if let Some(m) = &parent_manifest {
                    for c in m.clis() {
                        if let Some(s) =
                            crate::builds::spec_of(c).filter(|s| !all.iter().any(|a| a.provider == s.provider))
                        {
                            all.push(s);
                        }
                    }
                }
                progress.line(format!("[build] {}", names(&all, " + ")));
                crate::builds::ensure(engine, &config.lab(), &all, progress).await?
            }
        };
        Ok((build, parent))
    }

    /// The canary: the suites on the build, every case's events recorded in the registry.
    async fn canary(&self, engine: DockerBackend, build: &crate::builds::Build) -> Result<(RunReport, PathBuf)> {
        let (config, progress) = (self.config, self.progress);
        let images = vec![crate::lab::plan::ImagePlan::new(
            &build.reference,
            &build.manifest.providers(),
        )];
        let prepared = crate::lab::prepare(&config.lab(), self.suites, &[], None, &images)?;
        progress.line(format!("[canary] {} cases", prepared.cases.len()));
        // The registry records the verdict's evidence as a consumer of the run's events.
        let (recorder, added) = crate::registry::Recorder::new(self.reg.clone());
        let opts = crate::lab::RunOptions {
            run_id: crate::lab::new_run_id(),
            images: vec![build.reference.clone()],
            jobs: self.jobs,
            partition: None,
            keep: false,
            repro_prefix: self.cli_prefix.to_string(),
            rerun_failed: 0,
            reporters: vec![Box::new(recorder)],
            judged: Vec::new(),
        };
        let (report, run_dir) = crate::engines::run(config, engine, prepared, opts, progress).await?;
        let added = added.load(std::sync::atomic::Ordering::SeqCst);
        progress.line(format!(
            "[record] {added} results for build {} ({})",
            short(&build.id),
            status_word(&report)
        ));
        Ok((report, run_dir.join(crate::report::JSON_FILE)))
    }

    /// The gate: a green canary goes to the target channel (and to stable too when the policy
    /// says so and every change is a stable release); a refusal makes the verdict yellow.
    async fn gate(&self, build: &crate::builds::Build, report: &RunReport) -> Result<Gated> {
        let (config, progress) = (self.config, self.progress);
        let mut g = Gated {
            status: match report.summary.status() {
                CaseStatus::Passed => Light::Green,
                CaseStatus::Flaky => Light::Yellow,
                CaseStatus::Error => Light::Error,
                _ => Light::Red,
            },
            promoted_to: Vec::new(),
            notes: Vec::new(),
        };
        if report.summary.status() != CaseStatus::Passed {
            progress.line(format!("[gate] not promoted: {}", status_word(report)));
            return Ok(g);
        }
        let mut targets = vec![self.target.clone()];
        if config.pipeline.auto_stable
            && self
                .changes
                .iter()
                .all(|(_, j)| j.channel.as_ref().is_some_and(Channel::is_stable))
            && !self.target.is_stable()
        {
            targets.push(Channel::stable());
        }
        let policy = crate::gate::policy::Policy::load(config.gate_policy.as_deref())?;
        let reason = format!("canary green: {}", report.run_id);
        let who = crate::gate::ops::Actor {
            name: "pipeline",
            reason: &reason,
        };
        let decisions =
            crate::gate::ops::release(self.reg, &policy, &config.repo_ids()?, (&[&build.id], &targets), who).await?;
        for d in decisions {
            let channel = d.channel;
            if d.allowed {
                progress.line(format!("[gate] promoted {} to {channel}", short(&build.id)));
                g.promoted_to.push(channel);
            } else {
                progress.line(format!("[gate] {channel} refused: {}", d.unmet.join("; ")));
                g.notes.extend(d.unmet.iter().map(|u| format!("{channel}: {u}")));
                g.status = Light::Yellow;
            }
        }
        Ok(g)
    }

    /// Builds the candidate, runs the suites for every CLI it bundles, records, promotes under
    /// the gate, and says what happened.
    async fn judge(&self) -> Result<Notification> {
        let engine = DockerBackend::connect().await?;
        let (build, parent) = self.build(&engine).await?;
        let component_changes = build
            .manifest
            .changes_from(parent.as_ref().and_then(|b| b.manifest.as_ref()));
        let change_text = component_changes
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        self.progress.line(format!(
            "[build] {} ({}): {change_text}",
            build.reference,
            short(&build.id)
        ));
        let (report, report_path) = self.canary(engine, &build).await?;
        let Gated {
            status,
            promoted_to,
            notes,
        } = self.gate(&build, &report).await?;
        let canary_green = report.summary.status() == CaseStatus::Passed;
        let changes = format!(
            "{change_text} (from build {}): {}",
            parent
                .as_ref()
                .map(|b| short(&b.id).to_string())
                .unwrap_or_else(|| "none".into()),
            match status {
                Light::Green => format!("canary green, promoted to {}", promoted_to.join(", ")),
                Light::Yellow if canary_green => format!("canary green, gate refused: {}", notes.join("; ")),
                Light::Yellow => "canary passed only on rerun (flaky); not promoted".into(),
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
        let (provider, j) = &self.changes[0];
        Ok(Notification {
            event: "canary.verdict",
            provider: *provider,
            version: build
                .manifest
                .component(provider.name())
                .map_or_else(|| j.release.version.clone(), |c| c.version.clone()),
            package: j.release.package.clone(),
            package_version: j.release.package_version.clone(),
            candidate_for: j.channel.as_ref().map(Channel::to_string).unwrap_or_default(),
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
            failures: first_failures(&report),
            rollback,
        })
    }
}

fn status_word(report: &RunReport) -> String {
    let s = &report.summary;
    format!(
        "{} of {} cases passed, {} failed, {} drift, {} timed out, {} flaky, {} errors",
        s.passed, s.total, s.failed, s.drift, s.timed_out, s.flaky, s.error
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
                m.provider.map(|p| format!(" for {p}")).unwrap_or_default(),
                m.cause.as_deref().unwrap_or("failed")
            )
        })
        .take(10)
        .collect()
}
