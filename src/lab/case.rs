//! One case, start to finish: a fresh container, the pinned repo uploaded and recorded as a git
//! baseline, the steps run under their deadlines, expectations checked, artifacts written, and
//! the container removed whatever happened.

use super::checks::{self, RepoDiff};
use super::plan::Case;
use crate::engine::{Backend, ContainerSpec, ExecOutcome, ExecSpec};
use crate::error::{LabError, Result};
use crate::repos::WORKDIR;
use crate::report::{CaseReport, CaseStatus, CaseTimings, CheckFailure, StepReport, StepStatus};
use crate::suite::{Step, StepAction};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Everything a case needs that is shared by the run.
pub struct CaseContext {
    pub run_id: String,
    pub run_dir: PathBuf,
    pub image_id: String,
    pub network: Option<String>,
    /// Upload tar of each repo, by id.
    pub repo_tars: std::collections::BTreeMap<String, Arc<Vec<u8>>>,
    /// The repo manifests' `test` / `ci` commands, by id.
    pub repo_commands: std::collections::BTreeMap<String, (String, Option<String>)>,
    pub keep: bool,
    /// Prefix of the repro command (`canary` plus any non-default directory flags).
    pub repro_prefix: String,
}

/// Deadline for the lab's own helper execs (baseline, diff, file reads).
const HELPER_TIMEOUT: Duration = Duration::from_secs(30);
const DIFF_SEPARATOR: &str = "\0--canary-diff--\0";

/// The tag of the commit that records the uploaded content: the baseline for diffs and
/// `unchanged`, whatever commits or branches the steps make afterwards.
pub const BASELINE_TAG: &str = "canary-lab/pinned";

const BASELINE: &str = "git init -q . && git add -A && git -c user.name=canary-lab -c user.email=canary-lab@localhost commit -q --no-verify -m pinned && git tag canary-lab/pinned";

/// Lists changed paths and prints the patch against the baseline without touching the repo's
/// own index (a temporary index sees untracked files too).
const DIFF: &str = "set -e; i=$(mktemp); cp .git/index \"$i\"; export GIT_INDEX_FILE=\"$i\"; git add -A; \
git diff --cached --name-only -z --no-renames canary-lab/pinned; printf '\\0--canary-diff--\\0'; \
git diff --cached --no-color --no-ext-diff --binary --no-renames canary-lab/pinned; rm -f \"$i\"";

pub async fn run_case<B: Backend>(backend: &B, cx: &CaseContext, case: &Case) -> CaseReport {
    let started = Instant::now();
    let case_dir_rel = format!("cases/{}", case.id);
    let case_dir = cx.run_dir.join(&case_dir_rel);
    let mut report = CaseReport {
        id: case.id.clone(),
        suite: case.suite.name.clone(),
        repo: case.repo.clone(),
        status: CaseStatus::Passed,
        duration_ms: 0,
        timings: CaseTimings::default(),
        steps: Vec::new(),
        artifacts: case_dir_rel.clone(),
        repro: format!("{} repro {}/{}", cx.repro_prefix, cx.run_id, case.id),
        error: None,
    };
    let _ = std::fs::create_dir_all(case_dir.join("steps"));
    let _ = std::fs::write(case_dir.join("repro.sh"), format!("#!/bin/sh\n# Re-runs this case with the same image, repo and suite.\n{}\n", report.repro));

    let deadline = started + case.suite.timeout;
    let mut spec = ContainerSpec::new(&cx.run_id, &case.id, &cx.image_id);
    spec.network = cx.network.clone();
    spec.keep = cx.keep;
    let t = Instant::now();
    let container = match backend.start_container(&spec).await {
        Ok(id) => id,
        Err(e) => return finish_error(report, started, e),
    };
    report.timings.container_ms = ms(t.elapsed());

    let outcome = drive(backend, cx, case, &container, deadline, &case_dir, &mut report).await;
    let t = Instant::now();
    if let Err(e) = outcome {
        report.status = CaseStatus::Error;
        report.error = Some(e.to_string());
    }
    if !cx.keep {
        if let Err(e) = backend.remove_container(&container).await {
            tracing::warn!("could not remove container {container}: {e}");
        }
    } else {
        let _ = std::fs::write(case_dir.join("container"), format!("{container}\n"));
    }
    report.timings.teardown_ms += ms(t.elapsed());
    report.duration_ms = ms(started.elapsed());
    report
}

fn finish_error(mut report: CaseReport, started: Instant, e: LabError) -> CaseReport {
    report.status = CaseStatus::Error;
    report.error = Some(e.to_string());
    report.duration_ms = ms(started.elapsed());
    report
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

async fn drive<B: Backend>(backend: &B, cx: &CaseContext, case: &Case, container: &str, deadline: Instant, case_dir: &Path, report: &mut CaseReport) -> Result<()> {
    let t = Instant::now();
    let tar = cx.repo_tars.get(&case.repo).ok_or_else(|| LabError::usage(format!("no content for repo {}", case.repo), "internal"))?;
    backend.upload(container, tar.as_ref().clone()).await?;
    let base = helper(backend, container, BASELINE, deadline).await?;
    if base.exit_code != Some(0) {
        return Err(LabError::Docker {
            context: "recording the repo baseline".into(),
            message: format!("git exited {:?}: {}", base.exit_code, String::from_utf8_lossy(&base.stderr).trim()),
        });
    }
    report.timings.setup_ms = ms(t.elapsed());

    let mut stop = false;
    for (i, step) in case.suite.steps.iter().enumerate() {
        let command = resolve(cx, case, step);
        if stop || Instant::now() >= deadline {
            report.steps.push(skipped(step, &command));
            continue;
        }
        let step_deadline = (Instant::now() + step.timeout).min(deadline);
        let case_deadline_binds = step_deadline == deadline;
        let mut env = vec![format!("CANARY_RUN={}", cx.run_id), format!("CANARY_CASE={}", case.id), format!("CANARY_REPO={}", case.repo)];
        env.extend(step.env.iter().map(|(k, v)| format!("{k}={v}")));
        let exec = ExecSpec { cmd: vec!["sh".into(), "-c".into(), command.clone()], env, workdir: WORKDIR.into(), deadline: step_deadline };
        let t = Instant::now();
        let out = backend.exec(container, &exec).await?;
        report.timings.steps_ms += ms(t.elapsed());

        let stem = format!("steps/{:02}-{}", i + 1, slug(&step.name));
        let rel = |ext: &str| format!("{}/{stem}.{ext}", report.artifacts);
        let _ = std::fs::write(case_dir.join(format!("{stem}.stdout")), &out.stdout);
        let _ = std::fs::write(case_dir.join(format!("{stem}.stderr")), &out.stderr);
        let mut sr = StepReport {
            name: step.name.clone(),
            command,
            status: StepStatus::Passed,
            exit_code: out.exit_code,
            duration_ms: ms(out.duration),
            kill_latency_ms: out.kill_latency.map(ms),
            failures: Vec::new(),
            stdout_file: Some(rel("stdout")),
            stderr_file: Some(rel("stderr")),
            output_truncated: out.truncated,
        };
        if out.timed_out {
            let limit = if case_deadline_binds { format!("the case deadline ({})", humantime::format_duration(case.suite.timeout)) } else { format!("{}", humantime::format_duration(step.timeout)) };
            sr.status = StepStatus::TimedOut;
            sr.failures.push(CheckFailure { check: "timeout".into(), expected: format!("to finish within {limit}"), actual: format!("killed after {:.1}s", out.duration.as_secs_f64()) });
            report.steps.push(sr);
            report.status = CaseStatus::TimedOut;
            stop = true;
            continue;
        }
        let t = Instant::now();
        sr.failures = check_step(backend, container, step, &out, deadline).await?;
        report.timings.checks_ms += ms(t.elapsed());
        if !sr.failures.is_empty() {
            sr.status = StepStatus::Failed;
            if report.status == CaseStatus::Passed {
                report.status = CaseStatus::Failed;
            }
        }
        report.steps.push(sr);
    }

    // The final diff is an artifact of every case, whatever its steps checked.
    let t = Instant::now();
    if let Ok(d) = repo_diff(backend, container, Instant::now() + HELPER_TIMEOUT).await {
        let _ = std::fs::write(case_dir.join("diff.patch"), d.patch);
    }
    report.timings.teardown_ms += ms(t.elapsed());
    Ok(())
}

fn resolve(cx: &CaseContext, case: &Case, step: &Step) -> String {
    match &step.action {
        StepAction::Exec(cmd) => cmd.clone(),
        StepAction::RepoCommand(rc) => {
            let (test, ci) = cx.repo_commands.get(&case.repo).cloned().unwrap_or_default();
            match rc {
                crate::suite::RepoCommand::Test => test,
                // The planner refuses a suite whose repo has no `ci`, so this is never empty.
                crate::suite::RepoCommand::Ci => ci.unwrap_or_default(),
            }
        }
    }
}

fn skipped(step: &Step, command: &str) -> StepReport {
    StepReport {
        name: step.name.clone(),
        command: command.to_string(),
        status: StepStatus::Skipped,
        exit_code: None,
        duration_ms: 0,
        kill_latency_ms: None,
        failures: Vec::new(),
        stdout_file: None,
        stderr_file: None,
        output_truncated: false,
    }
}

async fn check_step<B: Backend>(backend: &B, container: &str, step: &Step, out: &ExecOutcome, deadline: Instant) -> Result<Vec<CheckFailure>> {
    let e = &step.expect;
    let mut failures = Vec::new();
    failures.extend(checks::exit_code(e.exit_code, out.exit_code));
    failures.extend(checks::text("stdout", &e.stdout, &String::from_utf8_lossy(&out.stdout)));
    failures.extend(checks::text("stderr", &e.stderr, &String::from_utf8_lossy(&out.stderr)));
    let helper_deadline = (Instant::now() + HELPER_TIMEOUT).min(deadline.max(Instant::now() + Duration::from_secs(5)));
    for f in &e.files {
        let read = helper(backend, container, &format!("cat -- {}", shell_quote(&f.path)), helper_deadline).await?;
        let content = (read.exit_code == Some(0)).then(|| String::from_utf8_lossy(&read.stdout).to_string());
        failures.extend(checks::file(f, content.as_deref()));
    }
    if !e.unchanged.is_empty() || e.diff.is_some() {
        match repo_diff(backend, container, helper_deadline).await {
            Ok(d) => {
                failures.extend(checks::unchanged(&e.unchanged, &d.files));
                if let Some(de) = &e.diff {
                    failures.extend(checks::diff(de, &d));
                }
            }
            Err(why) => failures.push(CheckFailure { check: "diff".into(), expected: "a diff against the pinned repo".into(), actual: why }),
        }
    }
    Ok(failures)
}

async fn helper<B: Backend>(backend: &B, container: &str, script: &str, deadline: Instant) -> Result<ExecOutcome> {
    let spec = ExecSpec { cmd: vec!["sh".into(), "-c".into(), script.into()], env: vec![], workdir: WORKDIR.into(), deadline };
    backend.exec(container, &spec).await
}

/// The repo's diff against its baseline; `Err` with git's words when it cannot be computed
/// (e.g. a step deleted `.git`).
async fn repo_diff<B: Backend>(backend: &B, container: &str, deadline: Instant) -> std::result::Result<RepoDiff, String> {
    let out = helper(backend, container, DIFF, deadline).await.map_err(|e| e.to_string())?;
    if out.exit_code != Some(0) {
        return Err(format!("git failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let (names, patch) = text.split_once(DIFF_SEPARATOR).unwrap_or((&text, ""));
    Ok(RepoDiff { files: names.split('\0').filter(|s| !s.is_empty()).map(String::from).collect(), patch: patch.to_string() })
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn slug(name: &str) -> String {
    let s: String = name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    let s = s.split('-').filter(|p| !p.is_empty()).collect::<Vec<_>>().join("-");
    s.chars().take(48).collect()
}
