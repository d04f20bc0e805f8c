//! One model of a run's results, [`RunReport`], and its renderings: JSON (the model itself,
//! schema at `docs/report.schema.json`), JUnit XML and the terminal summary. Renderers only read
//! the model; the engine never formats anything.

pub mod events;
pub mod html;
pub mod junit;
pub mod terminal;

use canary_contract::Provider;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Bump when a field changes meaning or disappears; adding fields does not bump it.
pub const SCHEMA_VERSION: u32 = 1;

pub const JSON_FILE: &str = "run.json";
pub const JUNIT_FILE: &str = "junit.xml";

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "Canary Lab run report")]
pub struct RunReport {
    pub schema_version: u32,
    pub run_id: String,
    pub lab_version: String,
    /// RFC 3339 UTC.
    pub started_at: String,
    pub finished_at: String,
    pub duration_ms: u64,
    /// Engine description, e.g. `docker 20.10.24 (API 1.41)`.
    pub engine: String,
    /// The first image of the run (the only one unless several were given).
    pub image: ImageRef,
    /// Every image the run used; cases name theirs.
    #[serde(default)]
    pub images: Vec<ImageRef>,
    /// Runtime (or image) × suite × repo → status, with the first failure as the cause.
    #[serde(default)]
    pub matrix: Vec<MatrixRow>,
    pub jobs: usize,
    /// `i/n` when only a slice of the cases ran.
    pub partition: Option<String>,
    pub suites: Vec<SuiteRef>,
    pub repos: Vec<RepoRef>,
    pub cases: Vec<CaseReport>,
    pub summary: Summary,
    /// `passed` when every case passed.
    pub status: CaseStatus,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ImageRef {
    /// What the user named (tag or id).
    pub reference: String,
    /// The image's content id (`sha256:...`); `canary repro` runs exactly this.
    pub id: String,
    /// The image's labels (a runner image names its runner version, adapters and CLIs here).
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct MatrixRow {
    /// What the case tests (`codex@0.163.0`), or the image reference when it does not say.
    pub runtime: String,
    pub image: String,
    /// The case's CLI, for suites that run per provider.
    #[serde(default)]
    pub provider: Option<Provider>,
    pub suite: String,
    pub repo: String,
    pub status: CaseStatus,
    /// The first unmet expectation (`step: check: expected …, got …`) or lab error.
    pub cause: Option<String>,
}

impl MatrixRow {
    pub fn of(c: &CaseReport) -> MatrixRow {
        let cause = c.error.clone().or_else(|| c.drift.clone()).or_else(|| {
            c.steps.iter().find(|s| !s.failures.is_empty()).map(|s| {
                // The root cause first: what the runner or CLI reported (an ERROR event) says
                // more than the exit code that follows from it.
                let rank = |f: &CheckFailure| match f.check.as_str() {
                    "events.absent" => 0,
                    "exit_code" => 2,
                    _ => 1,
                };
                let f = s.failures.iter().min_by_key(|f| rank(f)).expect("not empty");
                format!("{}: {f}", s.name)
            })
        });
        MatrixRow {
            runtime: c.runtime.clone().unwrap_or_else(|| c.image.clone()),
            image: c.image.clone(),
            provider: c.provider,
            suite: c.suite.clone(),
            repo: c.repo.clone(),
            status: c.status,
            cause,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SuiteRef {
    pub name: String,
    pub file: String,
    /// `sha256:` of the suite text; the text itself is kept at `suites/<name>.yaml` in the run folder.
    pub digest: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RepoRef {
    pub id: String,
    /// Pinned content digest; the uploaded content is kept at `repos/<id>.tar` in the run folder.
    pub digest: String,
    /// The manifest's test command (`repo_command: test`).
    pub test: String,
    /// The manifest's CI command (`repo_command: ci`), if it has one.
    pub ci: Option<String>,
    /// The manifest's variables, as suites saw them.
    #[serde(default)]
    pub vars: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CaseStatus {
    Passed,
    /// Failed, then passed when rerun (`--rerun-failed`).
    Flaky,
    Failed,
    /// Failed because the CLI's output or flags changed from what its adapter reads (an unknown
    /// event, a lost field, a vanished flag): `drift` names what changed.
    Drift,
    TimedOut,
    /// The lab could not run the case (engine failure); says nothing about the candidate.
    Error,
}

canary_contract::words!(CaseStatus, "a case status", {
    Passed => "passed",
    Flaky => "flaky",
    Failed => "failed",
    Drift => "drift",
    TimedOut => "timed_out",
    Error => "error",
});

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Passed,
    Failed,
    TimedOut,
    /// Not run: an earlier step timed out or the case deadline passed.
    Skipped,
    Error,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CaseReport {
    /// `<suite>--<repo>`; with the run id it names the case for `canary repro`.
    pub id: String,
    pub suite: String,
    pub repo: String,
    pub status: CaseStatus,
    /// How many times the case ran (more than 1 with `--rerun-failed`).
    pub attempts: u32,
    /// The image the case ran in, as the user named it.
    #[serde(default)]
    pub image: String,
    /// What the case tests, e.g. `codex@0.163.0`: its provider at the version the build
    /// bundles (or everything an image without a build manifest carries).
    #[serde(default)]
    pub runtime: Option<String>,
    /// The CLI of the build the case ran (suites that run per provider); `None` for suites that
    /// test the build as a whole.
    #[serde(default)]
    pub provider: Option<Provider>,
    pub duration_ms: u64,
    pub timings: CaseTimings,
    pub steps: Vec<StepReport>,
    /// Folder with step outputs, the diff and the repro command, relative to the run folder.
    pub artifacts: String,
    /// One line that re-runs this case with the same image, repo and suite.
    pub repro: String,
    /// Why the lab could not run the case (status `error`).
    pub error: Option<String>,
    /// What changed in the CLI's output or flags, in one line (status `drift`), e.g. `drift:
    /// codex 0.164.0 emits unknown event turn.done; turn.completed no longer seen`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<String>,
    /// What the case's CLI printed over its sessions: event kinds, fields and their JSON types,
    /// and the flags its `--help` lists (`canary drift` compares builds by these).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory: Option<crate::runner::inventory::Inventory>,
    /// The engine the case ran on (`engines:` in canary.yaml), when the run had several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
}

/// Where a case's time went, for the lab's own overhead budget.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct CaseTimings {
    /// Creating and starting the container. It starts while the previous case runs, so this
    /// time is not part of the case's `duration_ms`.
    pub container_ms: u64,
    /// Uploading the repo and recording its pinned state.
    pub setup_ms: u64,
    /// The steps' own commands.
    pub steps_ms: u64,
    /// Expectation checks that needed the container (files, diff).
    pub checks_ms: u64,
    /// Collecting artifacts and removing the container.
    pub teardown_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct StepReport {
    pub name: String,
    /// The shell command run (`sh -c`).
    pub command: String,
    pub status: StepStatus,
    pub exit_code: Option<i64>,
    pub duration_ms: u64,
    /// How long after its deadline a timed-out step was gone.
    pub kill_latency_ms: Option<u64>,
    pub failures: Vec<CheckFailure>,
    /// Paths of the captured output, relative to the run folder.
    pub stdout_file: Option<String>,
    pub stderr_file: Option<String>,
    /// Output beyond the capture limit was dropped.
    pub output_truncated: bool,
    /// Why a step was skipped when no earlier failure skipped it (`skipped: resume unsupported
    /// in codex 0.120.0 …`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One unmet expectation: what was checked, what was expected, what was found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CheckFailure {
    pub check: String,
    pub expected: String,
    pub actual: String,
}

impl std::fmt::Display for CheckFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: expected {}, got {}", self.check, self.expected, self.actual)
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct Summary {
    pub total: usize,
    pub passed: usize,
    pub flaky: usize,
    pub failed: usize,
    #[serde(default)]
    pub drift: usize,
    pub timed_out: usize,
    pub error: usize,
}

impl Summary {
    pub fn of(cases: &[CaseReport]) -> Summary {
        let count = |s: CaseStatus| cases.iter().filter(|c| c.status == s).count();
        Summary {
            total: cases.len(),
            passed: count(CaseStatus::Passed),
            flaky: count(CaseStatus::Flaky),
            failed: count(CaseStatus::Failed),
            drift: count(CaseStatus::Drift),
            timed_out: count(CaseStatus::TimedOut),
            error: count(CaseStatus::Error),
        }
    }

    /// The run's overall status: errors first (the verdict is incomplete), then failures.
    pub fn status(&self) -> CaseStatus {
        if self.error > 0 {
            CaseStatus::Error
        } else if self.timed_out > 0 {
            CaseStatus::TimedOut
        } else if self.drift > 0 {
            CaseStatus::Drift
        } else if self.failed > 0 {
            CaseStatus::Failed
        } else if self.flaky > 0 {
            CaseStatus::Flaky
        } else {
            CaseStatus::Passed
        }
    }
}

impl RunReport {
    pub fn case(&self, id: &str) -> Option<&CaseReport> {
        self.cases.iter().find(|c| c.id == id)
    }

    /// The exit code for this verdict: 0 all passed (flaky cases passed on rerun), 1 a case
    /// failed or timed out, 2 the lab could not run a case.
    pub fn exit_code(&self) -> i32 {
        use crate::error::exit;
        match self.status {
            CaseStatus::Passed | CaseStatus::Flaky => exit::PASS,
            CaseStatus::Failed | CaseStatus::Drift | CaseStatus::TimedOut => exit::FAILED,
            CaseStatus::Error => exit::ERROR,
        }
    }
}

/// The JSON Schema of the JSON report, as checked in at `docs/report.schema.json`.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(RunReport);
    let mut text = serde_json::to_string_pretty(&schema).expect("schema serializes");
    text.push('\n');
    text
}

/// A one-case failed run with markup and escape sequences in its text: the fixture every
/// consumer of the model (reporters here, the registry and the dashboard elsewhere) is tested on.
#[doc(hidden)]
pub fn sample() -> RunReport {
    let case = CaseReport {
        id: "demo--python".into(),
        suite: "demo".into(),
        repo: "python".into(),
        status: CaseStatus::Failed,
        attempts: 1,
        image: "canary-lab/build:x".into(),
        runtime: None,
        provider: None,
        engine: None,
        duration_ms: 12,
        timings: CaseTimings::default(),
        steps: vec![StepReport {
            name: "greets <script>alert(1)</script>".into(),
            command: "echo \u{1b}[2J".into(),
            status: StepStatus::Failed,
            exit_code: Some(1),
            duration_ms: 3,
            kill_latency_ms: None,
            failures: vec![CheckFailure {
                check: "stdout.contains".into(),
                expected: "\"Howdy\"".into(),
                actual: "<b>Hello</b>".into(),
            }],
            stdout_file: Some("cases/demo--python/1.stdout".into()),
            stderr_file: None,
            output_truncated: false,
            note: None,
        }],
        artifacts: "cases/demo--python".into(),
        repro: "canary repro r/demo--python".into(),
        error: None,
        drift: None,
        inventory: None,
    };
    let cases = vec![case];
    RunReport {
        schema_version: 1,
        run_id: "r".into(),
        lab_version: "0.1.0".into(),
        started_at: "2026-11-22T00:00:00Z".into(),
        finished_at: "2026-11-22T00:00:01Z".into(),
        duration_ms: 1000,
        engine: "docker".into(),
        image: ImageRef {
            reference: "canary-lab/build:x".into(),
            id: "sha256:1".into(),
            labels: Default::default(),
        },
        images: vec![],
        matrix: cases.iter().map(MatrixRow::of).collect(),
        jobs: 1,
        partition: None,
        suites: vec![],
        repos: vec![],
        summary: Summary::of(&cases),
        cases,
        status: CaseStatus::Failed,
    }
}
