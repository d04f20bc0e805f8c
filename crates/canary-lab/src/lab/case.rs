//! One case, start to finish: a fresh container, the pinned repo uploaded and recorded as a git
//! baseline, the steps run under their deadlines, expectations checked, artifacts written, and
//! the container removed whatever happened.

use super::checks::{self, RepoDiff};
use super::plan::Case;
use crate::engine::{Backend, ContainerSpec, ExecOutcome, ExecSpec};
use crate::error::{LabError, Result};
use crate::providers::Provider;
use crate::report::{CaseReport, CaseStatus, CaseTimings, CheckFailure, StepReport, StepStatus};
use crate::repos::WORKDIR;
use crate::suite::{Step, StepAction};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Everything a case needs that is shared by the run.
pub struct CaseContext {
    pub run_id: String,
    pub run_dir: PathBuf,
    /// The run's images; a case runs in `images[case.image]`.
    pub images: Vec<CaseImage>,
    pub network: Option<String>,
    /// The lab DNS's address, when the run has a lab network (outside names fail fast).
    pub dns: Option<String>,
    /// The run's lab forge container, when a suite opens pull requests.
    pub forge: Option<String>,
    /// Upload tar of each repo, by id.
    pub repo_tars: std::collections::BTreeMap<String, Arc<Vec<u8>>>,
    /// The repo manifests' `test` / `ci` commands, by id.
    pub repo_commands: std::collections::BTreeMap<String, (String, Option<String>)>,
    pub keep: bool,
    /// Prefix of the repro command (`canary` plus any non-default directory flags).
    pub repro_prefix: String,
    /// Container removals still in flight; the run awaits them before it ends.
    pub removals: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// The run's event stream; each checked step goes out on it with its output.
    pub events: crate::report::events::Reporters,
    /// Each image's (by index) and CLI's pre-flight: the flags its `--help` lists.
    pub preflight: std::collections::BTreeMap<(usize, Provider), crate::runner::inventory::Preflight>,
}

/// One image of a run, ready for cases.
pub struct CaseImage {
    /// What the user named.
    pub reference: String,
    /// The image containers start from (the named one, or it plus the executor layer).
    pub id: String,
    /// Whether `id` carries the in-container executor.
    pub executor: bool,
    /// Labels of the named image (which CLI it carries, for session steps).
    pub labels: std::collections::BTreeMap<String, String>,
}

impl CaseImage {
    /// What a case tests in this image, e.g. `codex@0.163.0`: the case's provider at the
    /// version the image bundles, or everything the image carries (from its labels).
    pub fn runtime(&self, provider: Option<Provider>) -> Option<String> {
        let r = self.labels.get(crate::builds::labels::RUNTIMES)?;
        let pairs = r.split(',').map(|p| p.replacen('=', "@", 1));
        match provider {
            Some(p) => pairs
                .clone()
                .find(|x| x.starts_with(&format!("{}@", p.name())))
                .or_else(|| Some(p.name().to_string())),
            None => Some(pairs.collect::<Vec<_>>().join(",")),
        }
    }
}

/// Deadline for the lab's own helper execs (baseline, diff, file reads).
const HELPER_TIMEOUT: Duration = Duration::from_secs(30);

/// Changed paths and the patch against the baseline tag in one git call: `--patch-with-raw -z`
/// prints NUL-separated raw records, an extra NUL, then the patch.
const DIFF_ARGS: &[&str] = &[
    "diff",
    "--cached",
    "--patch-with-raw",
    "-z",
    "--no-renames",
    "--no-color",
    "--no-ext-diff",
    "--binary",
    "canary-lab/pinned",
];
const SCRATCH_INDEX: &str = "/tmp/.canary-lab-index";

/// A case container, started ahead of its case so that container start-up overlaps with the
/// previous case's steps.
pub struct Started {
    container: Result<String>,
    took: Duration,
}

/// The container's case label (and name part): attempts after the first get a suffix.
fn attempt_id(case: &Case, attempt: u32) -> String {
    if attempt <= 1 {
        case.id.clone()
    } else {
        format!("{}.a{attempt}", case.id)
    }
}

pub async fn start<B: Backend>(backend: &B, cx: &CaseContext, case: &Case, attempt: u32) -> Started {
    let image = &cx.images[case.image];
    let mut spec = ContainerSpec::new(&cx.run_id, &attempt_id(case, attempt), &image.id);
    spec.network = cx.network.clone();
    spec.dns = cx.dns.iter().cloned().collect();
    spec.keep = cx.keep;
    spec.executor = image.executor;
    let t = Instant::now();
    let container = backend.start_container(&spec).await;
    Started {
        container,
        took: t.elapsed(),
    }
}

/// Runs a case in its started container. Its duration counts from here: the container start
/// (in `timings.container_ms`) overlapped with the case before it.
/// The pre-flight of the case's CLI in its image, recorded as the start of its inventory.
fn preflight_of<'a>(
    cx: &'a CaseContext,
    case: &Case,
    report: &mut CaseReport,
) -> Option<&'a crate::runner::inventory::Preflight> {
    let pf = case
        .provider
        .as_ref()
        .and_then(|p| cx.preflight.get(&(case.image, *p)))?;
    let mut inv = crate::runner::inventory::Inventory::new(&pf.provider, &pf.version);
    inv.flags = Some(pf.flags.clone());
    report.inventory = Some(inv);
    Some(pf)
}

pub async fn run_case<B: Backend + Clone>(
    backend: &B,
    cx: &CaseContext,
    case: &Case,
    started_container: Started,
    attempt: u32,
) -> CaseReport {
    let started = Instant::now();
    // Reruns keep their own artifacts beside the first attempt's.
    let case_dir_rel = if attempt <= 1 {
        format!("cases/{}", case.id)
    } else {
        format!("cases/{}/attempt-{attempt}", case.id)
    };
    let case_dir = cx.run_dir.join(&case_dir_rel);
    let mut report = CaseReport {
        id: case.id.clone(),
        suite: case.suite.name.clone(),
        repo: case.repo.clone(),
        status: CaseStatus::Passed,
        attempts: attempt,
        image: cx.images[case.image].reference.clone(),
        runtime: cx.images[case.image].runtime(case.provider),
        provider: case.provider,
        duration_ms: 0,
        timings: CaseTimings::default(),
        steps: Vec::new(),
        artifacts: case_dir_rel.clone(),
        repro: format!("{} repro {}/{}", cx.repro_prefix, cx.run_id, case.id),
        error: None,
        drift: None,
        inventory: None,
        engine: None,
    };
    let mut files = CaseFiles::new(case_dir);
    files.create_dir("steps");
    files.write(
        "repro.sh",
        format!(
            "#!/bin/sh\n# Re-runs this case with the same image, repo and suite; flags pass through\n# (`sh repro.sh --keep` leaves its container running, `--json` prints the report).\n{} \"$@\"\n",
            report.repro
        ),
    );

    let deadline = started + case.suite.timeout;
    report.timings.container_ms = ms(started_container.took);
    let container = match started_container.container {
        Ok(id) => id,
        Err(e) => return files.settle(finish_error(report, started, e)),
    };

    let preflight = preflight_of(cx, case, &mut report);
    let outcome = if preflight.is_some_and(|pf| super::drift::condemn(&mut report, pf)) {
        // Every session would fail on the vanished flag: the steps are not run.
        for step in &case.suite.steps {
            let command = resolve(cx, case, step);
            report.steps.push(skipped(step, &command));
        }
        Ok(())
    } else {
        drive(backend, cx, case, &container, deadline, &mut files, &mut report).await
    };
    super::drift::judge(&mut report);
    let t = Instant::now();
    if let Err(e) = outcome {
        report.status = CaseStatus::Error;
        report.error = Some(e.to_string());
    }
    if !cx.keep {
        // Removal takes the engine a while and decides nothing about the verdict: it runs
        // beside the next case, and the run waits for it before it ends.
        let (backend, container) = (backend.clone(), container.clone());
        let removal = tokio::spawn(async move {
            if let Err(e) = backend.remove_container(&container).await {
                tracing::warn!("could not remove container {container}: {e}");
            }
        });
        cx.removals.lock().expect("removals lock").push(removal);
    } else {
        files.write("container", format!("{container}\n"));
    }
    report.timings.teardown_ms += ms(t.elapsed());
    report.duration_ms = ms(started.elapsed());
    files.settle(report)
}

/// Writes a case's artifacts into its folder and keeps the first write that failed. The files
/// are the case's evidence (the report points at them), so a case whose evidence is not on disk
/// does not pass: [`CaseFiles::settle`] turns it into an error that names the file.
struct CaseFiles {
    dir: PathBuf,
    failed: Option<String>,
}

impl CaseFiles {
    fn new(dir: PathBuf) -> CaseFiles {
        CaseFiles { dir, failed: None }
    }

    fn create_dir(&mut self, name: &str) {
        let path = self.dir.join(name);
        if let Err(e) = std::fs::create_dir_all(&path) {
            self.fail(&path, &e);
        }
    }

    fn write(&mut self, name: &str, data: impl AsRef<[u8]>) {
        let path = self.dir.join(name);
        if let Err(e) = std::fs::write(&path, data) {
            self.fail(&path, &e);
        }
    }

    fn fail(&mut self, path: &Path, e: &std::io::Error) {
        if self.failed.is_none() {
            self.failed = Some(format!("could not write the case artifact {}: {e}", path.display()));
        }
    }

    /// A passed (or flaky) case whose artifacts could not all be written ends as an error; a
    /// case that failed keeps its verdict, and the write failure joins its error.
    fn settle(self, mut report: CaseReport) -> CaseReport {
        let Some(failed) = self.failed else {
            return report;
        };
        if matches!(report.status, CaseStatus::Passed | CaseStatus::Flaky) {
            report.status = CaseStatus::Error;
        }
        report.error = Some(match report.error.take() {
            Some(e) => format!("{e}; {failed}"),
            None => failed,
        });
        report
    }
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

/// What a case's steps act on: the backend, the run, the case and its started container.
struct InCase<'a, B> {
    backend: &'a B,
    cx: &'a CaseContext,
    case: &'a Case,
    container: &'a str,
    forge_repo: String,
    /// Each session step's conversation (by step name), for a later step that resumes it.
    conversations: std::sync::Mutex<std::collections::HashMap<String, super::session::Conversation>>,
    /// The container's processes before an interrupted session started.
    before_interrupt: std::sync::Mutex<String>,
}

async fn drive<B: Backend>(
    backend: &B,
    cx: &CaseContext,
    case: &Case,
    container: &str,
    deadline: Instant,
    files: &mut CaseFiles,
    report: &mut CaseReport,
) -> Result<()> {
    let t = Instant::now();
    let tar = cx
        .repo_tars
        .get(&case.repo)
        .ok_or_else(|| LabError::usage(format!("no content for repo {}", case.repo), "internal"))?;
    backend.upload(container, tar.as_ref().clone()).await?;
    report.timings.setup_ms = ms(t.elapsed());

    let at = InCase {
        backend,
        cx,
        case,
        container,
        forge_repo: super::forge::repo_name(&case.id, container),
        conversations: Default::default(),
        before_interrupt: Default::default(),
    };
    let mut stop = false;
    for (i, step) in case.suite.steps.iter().enumerate() {
        let command = resolve(cx, case, step);
        if stop || Instant::now() >= deadline {
            report.steps.push(skipped(step, &command));
            continue;
        }
        let step_deadline = (Instant::now() + step.timeout).min(deadline);
        let stem = stem(i, step);
        let rel = |ext: &str| format!("{}/{stem}.{ext}", report.artifacts);
        let cmd = match at.argv(i, step, &command).await? {
            Ok(argv) => argv,
            Err(failure) => {
                not_started(report, step, &command, failure);
                continue;
            }
        };
        let exec = ExecSpec {
            stdin: None,
            cmd,
            env: step_env(cx, case, step),
            workdir: WORKDIR.into(),
            deadline: step_deadline,
        };
        let step_started = jiff::Timestamp::now();
        let t = Instant::now();
        let out = backend.exec(container, &exec).await?;
        report.timings.steps_ms += ms(t.elapsed());

        files.write(&format!("{stem}.stdout"), &out.stdout);
        files.write(&format!("{stem}.stderr"), &out.stderr);
        let mut sr = step_report(step, command, &out, rel("stdout"), rel("stderr"));
        if out.timed_out {
            sr.status = StepStatus::TimedOut;
            sr.failures.push(timed_out(case, step, step_deadline == deadline, &out));
            report.steps.push(sr);
            step_finished(cx, report, &out).await;
            report.status = CaseStatus::TimedOut;
            stop = true;
            continue;
        }
        let t = Instant::now();
        sr.failures = check_step(backend, container, step, &out, deadline).await?;
        // Runner steps write Runner Contract events; each kind then has checks of its own.
        if matches!(step.action, StepAction::Session(_) | StepAction::DraftPr(_)) {
            let failures = at.runner_checks(i, step, &out, step_started, files, report).await?;
            sr.failures.extend(failures);
        }
        report.timings.checks_ms += ms(t.elapsed());
        if !sr.failures.is_empty() {
            sr.status = StepStatus::Failed;
            if report.status == CaseStatus::Passed {
                report.status = CaseStatus::Failed;
            }
        }
        report.steps.push(sr);
        step_finished(cx, report, &out).await;
    }

    // The final diff is an artifact of every case, whatever its steps checked.
    let t = Instant::now();
    if let Ok(d) = repo_diff(backend, container, Instant::now() + HELPER_TIMEOUT).await {
        files.write("diff.patch", d.patch);
    }
    report.timings.teardown_ms += ms(t.elapsed());
    Ok(())
}

/// What every step's process sees of the run, then the step's own variables.
fn step_env(cx: &CaseContext, case: &Case, step: &Step) -> Vec<String> {
    let mut env = vec![
        format!("CANARY_RUN={}", cx.run_id),
        format!("CANARY_CASE={}", case.id),
        format!("CANARY_REPO={}", case.repo),
    ];
    env.extend(step.env.iter().map(|(k, v)| format!("{k}={v}")));
    env
}

/// A step that ran, passed until its checks say otherwise.
fn step_report(
    step: &Step,
    command: String,
    out: &ExecOutcome,
    stdout_file: String,
    stderr_file: String,
) -> StepReport {
    StepReport {
        name: step.name.clone(),
        command,
        status: StepStatus::Passed,
        exit_code: out.exit_code,
        duration_ms: ms(out.duration),
        kill_latency_ms: out.kill_latency.map(ms),
        failures: Vec::new(),
        stdout_file: Some(stdout_file),
        stderr_file: Some(stderr_file),
        output_truncated: out.truncated,
        note: None,
    }
}

/// Where step `i`'s artifacts go in the case folder (without extension).
fn stem(i: usize, step: &Step) -> String {
    format!("steps/{:02}-{}", i + 1, slug(&step.name))
}

/// The failure of a step the deadline killed, naming the limit that bound (the step's own or
/// the case's).
fn timed_out(case: &Case, step: &Step, case_deadline_binds: bool, out: &ExecOutcome) -> CheckFailure {
    let limit = if case_deadline_binds {
        format!("the case deadline ({})", humantime::format_duration(case.suite.timeout))
    } else {
        format!("{}", humantime::format_duration(step.timeout))
    };
    CheckFailure {
        check: "timeout".into(),
        expected: format!("to finish within {limit}"),
        actual: format!("killed after {:.1}s", out.duration.as_secs_f64()),
    }
}

impl<B: Backend> InCase<'_, B> {
    /// The step's command line: a runner session or draft PR prepared in the container, or the
    /// shell command; `Ok(Err(_))` when it cannot start (the step fails without running).
    async fn argv(
        &self,
        i: usize,
        step: &Step,
        command: &str,
    ) -> Result<std::result::Result<Vec<String>, CheckFailure>> {
        let (backend, container) = (self.backend, self.container);
        Ok(match &step.action {
            StepAction::Session(spec) => {
                if let Some(why) = self.unsupported(spec) {
                    return Ok(Err(CheckFailure {
                        check: UNSUPPORTED.into(),
                        expected: "a feature the CLI has".into(),
                        actual: why,
                    }));
                }
                let resumed = self.conversation(spec.resume.as_deref());
                let argv = super::session::prepare(
                    backend,
                    container,
                    i + 1,
                    spec,
                    self.case.provider,
                    step.timeout,
                    resumed.as_ref(),
                )
                .await?;
                if spec.interrupt.is_some() {
                    let ps = helper(
                        backend,
                        container,
                        super::session::PROCESSES,
                        Instant::now() + HELPER_TIMEOUT,
                    )
                    .await?;
                    *self.before_interrupt.lock().expect("lock") = String::from_utf8_lossy(&ps.stdout).into();
                }
                argv
            }
            StepAction::DraftPr(spec) => match &self.cx.forge {
                Some(_) => super::forge::prepare(backend, container, &self.forge_repo, spec).await?,
                None => Err(crate::report::CheckFailure {
                    check: "lab forge".into(),
                    expected: "the run's lab forge".into(),
                    actual: "none was started (the suite needs `network: lab`)".into(),
                }),
            },
            _ => Ok(vec!["sh".into(), "-c".into(), command.to_string()]),
        })
    }

    /// A runner step's own checks: its events and messages, and for a session the model stub's
    /// log and the CLI's inventory, for a draft PR what reached the forge.
    async fn runner_checks(
        &self,
        i: usize,
        step: &Step,
        out: &ExecOutcome,
        step_started: jiff::Timestamp,
        files: &mut CaseFiles,
        report: &mut CaseReport,
    ) -> Result<Vec<CheckFailure>> {
        let (backend, container) = (self.backend, self.container);
        let stem = stem(i, step);
        let (events, mut failures) = checks::session::events(&out.stdout);
        if let Some(e) = &step.expect.events {
            failures.extend(checks::session::expect(e, &events, step_started));
        }
        if let Some(m) = &step.expect.messages {
            let said: Vec<&str> = events
                .iter()
                .filter(|e| e["type"] == "AGENT_MESSAGE")
                .filter_map(|e| e["text"].as_str())
                .collect();
            failures.extend(checks::text("messages", m, &said.join("\n")));
        }
        if matches!(step.action, StepAction::Session(_)) {
            let (raw, stub) = super::session::stub_log(backend, container, i + 1).await;
            files.write(&format!("{stem}.stub.jsonl"), raw);
            let (raw, inventory) = super::drift::collect(backend, container, super::session::DIR, i + 1).await;
            files.write(&format!("{stem}.inventory.json"), raw);
            let requests = super::drift::requests(&stub);
            if let Some(pins) = &step.expect.requests {
                failures.extend(super::drift::check_requests(pins, &requests));
            }
            if let Some(mut inv) = inventory {
                inv.requests_by_suite
                    .insert(self.case.suite.name.clone(), requests.clone());
                inv.requests = Some(requests);
                super::drift::add(report, inv);
            }
            if step.expect.usage_reconciled {
                failures.extend(checks::session::usage(&events, &stub));
            }
            if let StepAction::Session(spec) = &step.action {
                failures.extend(self.session_checks(i, step, spec, &events, &stub, files).await?);
            }
            if let Some(unmatched) = stub.iter().find(|e| !e["unmatched"].is_null()) {
                failures.push(CheckFailure {
                    check: "model stub".into(),
                    expected: "every request to match the scenario".into(),
                    actual: unmatched["unmatched"].as_str().unwrap_or_default().to_string(),
                });
            }
        }
        if let (StepAction::DraftPr(_), Some(pe), Some(forge)) =
            (&step.action, &step.expect.pull_request, &self.cx.forge)
        {
            let records = super::forge::records(backend, forge).await?;
            let records_json: String = super::forge::for_repo(&records, &self.forge_repo)
                .into_iter()
                .filter_map(|r| serde_json::to_string(r).ok())
                .map(|l| l + "\n")
                .collect();
            files.write(&format!("{stem}.forge.jsonl"), records_json);
            let lab_diff = repo_diff(backend, container, Instant::now() + HELPER_TIMEOUT).await;
            failures.extend(super::forge::check(
                pe,
                &self.forge_repo,
                &records,
                lab_diff.as_ref().map_err(String::as_str),
            ));
        }
        Ok(failures)
    }
}

/// The check name of a step its CLI does not support: the step is skipped, not failed.
const UNSUPPORTED: &str = "unsupported";

impl<B: Backend> InCase<'_, B> {
    /// Why the session's CLI version lacks a feature the step asks for, by its adapter's
    /// contract and the version the pre-flight found; `None` when it has them all.
    fn unsupported(&self, spec: &crate::suite::SessionSpec) -> Option<String> {
        use crate::runner::inventory::Feature;
        let provider = super::session::provider(spec, self.case.provider)?;
        let pf = self.cx.preflight.get(&(self.case.image, provider))?;
        let contract = crate::runner::inventory::contract(provider);
        let wanted = [
            (spec.resume.is_some(), Feature::Resume),
            (spec.uses_mcp(), Feature::Mcp),
        ];
        wanted
            .iter()
            .filter(|(asked, _)| *asked)
            .find_map(|(_, f)| contract.supports(provider.name(), &pf.version, *f).err())
    }

    /// The conversation an earlier session step left, by its name.
    fn conversation(&self, step: Option<&str>) -> Option<super::session::Conversation> {
        step.and_then(|s| self.conversations.lock().expect("lock").get(s).cloned())
    }

    /// A session's own checks beyond its events: that a resumed conversation continued, that
    /// MCP calls reached the fixture and back, that an interrupt left nothing behind. Records
    /// the conversation for later steps.
    async fn session_checks(
        &self,
        i: usize,
        step: &Step,
        spec: &crate::suite::SessionSpec,
        events: &[serde_json::Value],
        stub: &[serde_json::Value],
        files: &mut CaseFiles,
    ) -> Result<Vec<CheckFailure>> {
        use super::session as s;
        let resumed = self.conversation(spec.resume.as_deref());
        let mut failures = Vec::new();
        if let Some(before) = &resumed {
            failures.extend(s::resume_checks(before, events, stub));
        }
        let now = s::Conversation::after(i + 1, spec, events, resumed.as_ref());
        self.conversations.lock().expect("lock").insert(step.name.clone(), now);
        if spec.uses_mcp() {
            let log = helper(
                self.backend,
                self.container,
                &format!("head -c 1048576 {}/mcp-{}.jsonl", s::DIR, i + 1),
                Instant::now() + HELPER_TIMEOUT,
            )
            .await?;
            files.write(&format!("{}.mcp.jsonl", stem(i, step)), &log.stdout);
            failures.extend(s::mcp_checks(&spec.scenario, &log.stdout, stub));
        }
        if spec.interrupt.is_some() {
            let deadline = Instant::now() + HELPER_TIMEOUT;
            let ps = helper(self.backend, self.container, s::PROCESSES, deadline).await?;
            let before = self.before_interrupt.lock().expect("lock").clone();
            let leftover = s::new_processes(&before, &String::from_utf8_lossy(&ps.stdout));
            let git = helper(self.backend, self.container, s::TREE_CHECK, deadline).await?;
            let tree = match git.exit_code {
                Some(0) => Ok(()),
                _ => Err(format!(
                    "{}{}",
                    String::from_utf8_lossy(&git.stdout).trim(),
                    String::from_utf8_lossy(&git.stderr).trim()
                )),
            };
            failures.extend(s::interrupt_checks(events, &leftover, tree));
        }
        Ok(failures)
    }
}

/// The step just pushed goes out on the run's events with its whole output.
async fn step_finished(cx: &CaseContext, report: &CaseReport, out: &ExecOutcome) {
    if let Some(step) = report.steps.last() {
        cx.events
            .emit_or_warn(crate::report::events::RunEvent::StepFinished {
                case_id: &report.id,
                attempt: report.attempts,
                step,
                stdout: &out.stdout,
                stderr: &out.stderr,
            })
            .await;
    }
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
        StepAction::Session(spec) => super::session::display(spec, case.provider),
        StepAction::DraftPr(spec) => format!(
            "canary-runner pr --branch {} --base {} --title {}",
            spec.branch,
            spec.base,
            shell_quote(&spec.title)
        ),
    }
}

/// A step whose action could not start (no CLI in the image, no forge): failed, with why. One
/// its CLI does not support by the adapter's contract is skipped, with why, and fails nothing.
fn not_started(report: &mut CaseReport, step: &Step, command: &str, failure: CheckFailure) {
    let mut sr = skipped(step, command);
    if failure.check == UNSUPPORTED {
        sr.note = Some(failure.actual);
        report.steps.push(sr);
        return;
    }
    sr.status = StepStatus::Failed;
    sr.failures.push(failure);
    report.steps.push(sr);
    if report.status == CaseStatus::Passed {
        report.status = CaseStatus::Failed;
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
        note: None,
    }
}

async fn check_step<B: Backend>(
    backend: &B,
    container: &str,
    step: &Step,
    out: &ExecOutcome,
    deadline: Instant,
) -> Result<Vec<CheckFailure>> {
    let e = &step.expect;
    let mut failures = Vec::new();
    failures.extend(checks::exit_code(e.exit_code, out.exit_code));
    failures.extend(checks::text("stdout", &e.stdout, &String::from_utf8_lossy(&out.stdout)));
    failures.extend(checks::text("stderr", &e.stderr, &String::from_utf8_lossy(&out.stderr)));
    let helper_deadline = (Instant::now() + HELPER_TIMEOUT).min(deadline.max(Instant::now() + Duration::from_secs(5)));
    for f in &e.files {
        let read = helper(
            backend,
            container,
            &format!("cat -- {}", shell_quote(&f.path)),
            helper_deadline,
        )
        .await?;
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
            Err(why) => failures.push(CheckFailure {
                check: "diff".into(),
                expected: "a diff against the pinned repo".into(),
                actual: why,
            }),
        }
    }
    Ok(failures)
}

async fn helper<B: Backend>(backend: &B, container: &str, script: &str, deadline: Instant) -> Result<ExecOutcome> {
    let spec = ExecSpec {
        stdin: None,
        cmd: vec!["sh".into(), "-c".into(), script.into()],
        env: vec![],
        workdir: WORKDIR.into(),
        deadline,
    };
    backend.exec(container, &spec).await
}

/// The repo's diff against its baseline; `Err` with git's words when it cannot be computed
/// (e.g. a step deleted `.git`).
async fn repo_diff<B: Backend>(
    backend: &B,
    container: &str,
    deadline: Instant,
) -> std::result::Result<RepoDiff, String> {
    // A scratch index outside the repo sees untracked files without touching the repo's own
    // index; it persists across the case's diffs, so git re-hashes only what changed.
    let env = vec![format!("GIT_INDEX_FILE={SCRATCH_INDEX}")];
    let git = |args: &[&str]| ExecSpec {
        cmd: std::iter::once("git")
            .chain(args.iter().copied())
            .map(String::from)
            .collect(),
        env: env.clone(),
        workdir: WORKDIR.into(),
        deadline,
        stdin: None,
    };
    for args in [&["add", "-A"][..], DIFF_ARGS] {
        let out = backend.exec(container, &git(args)).await.map_err(|e| e.to_string())?;
        if out.exit_code != Some(0) {
            return Err(format!(
                "git {} failed: {}",
                args[0],
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        if args == DIFF_ARGS {
            return Ok(parse_raw_patch(&out.stdout));
        }
    }
    unreachable!("the loop returns after the diff")
}

/// Splits `git diff --patch-with-raw -z` output into the changed paths and the patch.
fn parse_raw_patch(out: &[u8]) -> RepoDiff {
    let mut files = Vec::new();
    let mut rest = out;
    while rest.first() == Some(&b':') {
        let mut fields = rest.splitn(3, |b| *b == 0);
        let (Some(_meta), Some(path)) = (fields.next(), fields.next()) else {
            break;
        };
        files.push(String::from_utf8_lossy(path).to_string());
        rest = fields.next().unwrap_or_default();
    }
    if rest.first() == Some(&0) {
        rest = &rest[1..];
    }
    RepoDiff {
        files,
        patch: String::from_utf8_lossy(rest).to_string(),
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn slug(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let s = s.split('-').filter(|p| !p.is_empty()).collect::<Vec<_>>().join("-");
    s.chars().take(48).collect()
}

#[cfg(test)]
mod tests {
    use super::{CaseFiles, parse_raw_patch};
    use crate::report::CaseStatus;

    #[test]
    fn a_case_whose_evidence_cannot_be_written_does_not_pass() {
        let dir = tempfile::tempdir().unwrap();
        let report = crate::report::sample().cases.remove(0);

        let mut files = CaseFiles::new(dir.path().join("case"));
        files.create_dir("steps");
        files.write("1.stdout", "hello");
        let mut passed = report.clone();
        passed.status = CaseStatus::Passed;
        let kept = files.settle(passed);
        assert_eq!(
            kept.status,
            CaseStatus::Passed,
            "every write succeeded: {:?}",
            kept.error
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("case/1.stdout")).unwrap(),
            "hello"
        );

        // A file where the case folder should be: every write under it fails.
        std::fs::write(dir.path().join("blocked"), "").unwrap();
        let mut files = CaseFiles::new(dir.path().join("blocked"));
        files.write("1.stdout", "hello");
        files.write("2.stdout", "again");
        let mut passed = report.clone();
        passed.status = CaseStatus::Passed;
        let settled = files.settle(passed);
        assert_eq!(settled.status, CaseStatus::Error);
        let error = settled.error.unwrap();
        assert!(
            error.contains("could not write the case artifact") && error.contains("1.stdout"),
            "{error}"
        );
        assert!(!error.contains("2.stdout"), "the first failure is named once: {error}");

        // A failed case keeps its verdict; the write failure joins its error.
        let mut files = CaseFiles::new(dir.path().join("blocked"));
        files.write("diff.patch", "x");
        let mut failed = report;
        failed.status = CaseStatus::Failed;
        failed.error = Some("the CLI exited 1".into());
        let settled = files.settle(failed);
        assert_eq!(settled.status, CaseStatus::Failed);
        assert!(settled.error.unwrap().starts_with("the CLI exited 1; could not write"));
    }

    #[test]
    fn raw_records_then_patch() {
        let out =
            b":100644 000000 61 00 D\0b.txt\0:000000 100644 00 3e A\0sp ace.txt\0\0diff --git a/b.txt b/b.txt\n-b\n";
        let d = parse_raw_patch(out);
        assert_eq!(d.files, vec!["b.txt", "sp ace.txt"]);
        assert_eq!(d.patch, "diff --git a/b.txt b/b.txt\n-b\n");
        assert!(parse_raw_patch(b"").files.is_empty());
    }
}
