//! The suite file exactly as written: serde types with every unknown key rejected and every
//! value that a later check may complain about kept with its source location.
//!
//! Nothing here is validated beyond its YAML shape; [`super::compile`] turns these into a plan.
//! The JSON Schema at `suites/schema.json` is generated from these types, so a field documented
//! here is documented for editors too.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::collections::BTreeMap;

/// A canary suite: steps run in order in one container per canary repo.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Canary Lab suite")]
pub struct RawSuite {
    /// Suite name; used in report names, so keep it short (letters, digits, `-`, `_`, `.`).
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// What the suite checks, for humans.
    #[serde(default)]
    pub description: Option<String>,
    /// Canary repo ids (folders under `canary-repos/`) the suite runs against.
    #[schemars(with = "Vec<String>")]
    pub repos: Spanned<Vec<Spanned<String>>>,
    /// Deadline for a whole case (all steps on one repo), e.g. `5m`. Default `10m`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Spanned<String>>,
    /// Network of the case container: `none` (default) or `lab` (the run's private network,
    /// with no route outside, where the model stub and lab forge live).
    #[serde(default)]
    #[schemars(with = "Option<RawNetwork>")]
    pub network: Option<Spanned<RawNetwork>>,
    /// Providers the suite runs for (`[codex, claude-code]`); each must be in the build. Default:
    /// a suite with a `session` step that names no `provider` runs once for every CLI the build
    /// bundles; a suite without one runs once.
    #[serde(default)]
    #[schemars(with = "Option<Vec<String>>")]
    pub providers: Option<Spanned<Vec<Spanned<String>>>>,
    /// Steps, run in order; a failed step does not stop later steps unless it timed out.
    #[schemars(with = "Vec<RawStep>")]
    pub steps: Spanned<Vec<RawStep>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RawNetwork {
    None,
    Lab,
}

/// One step. Exactly one action key (`exec`, `repo_command`, `session` or `draft_pr`) must be
/// present.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawStep {
    /// Step name, unique within the suite; it becomes the JUnit testcase name.
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// Deadline for this step, e.g. `30s`. Default `60s`. The step's processes are killed when
    /// it passes and the case is marked `timed_out`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Spanned<String>>,
    /// Extra environment variables for the step.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Action: a shell command (`sh -c`) run in the repo's folder.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub exec: Option<Spanned<String>>,
    /// Action: run the repo's own command from its manifest: `test` or `ci`.
    #[serde(default)]
    #[schemars(with = "Option<RawRepoCommand>")]
    pub repo_command: Option<Spanned<RawRepoCommand>>,
    /// Action: an agent session through the runner in the image (`canary-runner session`),
    /// against the model stub playing `scenario`.
    #[serde(default)]
    #[schemars(with = "Option<RawSession>")]
    pub session: Option<Spanned<RawSession>>,
    /// Action: propose the repo's changes as a pull request on the lab forge through the runner
    /// in the image (`canary-runner pr`): commit on `branch`, push it, open a draft PR. The
    /// suite needs `network: lab`, where the forge lives.
    #[serde(default)]
    #[schemars(with = "Option<RawDraftPr>")]
    pub draft_pr: Option<Spanned<RawDraftPr>>,
    /// What must hold after the step. Without it, the step must exit 0.
    #[serde(default)]
    pub expect: Option<RawExpect>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSession {
    /// `codex`, `claude-code` or `gemini`; default: the CLI the image carries.
    #[serde(default)]
    pub provider: Option<String>,
    /// The task given to the agent.
    pub prompt: String,
    /// What the scripted model does, turn by turn (`run`, `edit`, `attempt`, `say`).
    pub scenario: Vec<crate::stub::Turn>,
    /// The decision for risky actions: `approve`, `deny` or `none` (default: no approver).
    #[serde(default)]
    pub approval: Option<crate::runner::proxy::Approval>,
    /// Model id the CLI is told to use.
    #[serde(default)]
    pub model: Option<String>,
    /// Continue the conversation of an earlier session step of this suite (its name) with the
    /// CLI's own resume mechanism; the lab checks that the CLI sends the earlier turns and that
    /// the events continue under the same session id.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub resume: Option<Spanned<String>>,
    /// Stop the session while it runs, as a platform's stop button does: SIGINT to the runner
    /// once the model has answered `after_turn` turns, SIGTERM `grace` later. The lab checks
    /// for a terminal event, that no process of the session is left, and a consistent tree.
    #[serde(default)]
    pub interrupt: Option<RawInterrupt>,
}

#[derive(Debug, Default, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawInterrupt {
    /// Interrupt once the model stub has answered this many turns (default 1): put a
    /// long-running command at that turn, e.g. `run: sleep 600`.
    #[schemars(with = "Option<usize>")]
    pub after_turn: Option<Spanned<usize>>,
    /// Between SIGINT and SIGTERM (default 5s).
    #[schemars(with = "Option<String>")]
    pub grace: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawDraftPr {
    /// Title of the pull request (also the commit message).
    pub title: String,
    /// Branch the changes are pushed to, e.g. `canary/edit`.
    #[schemars(with = "String")]
    pub branch: Spanned<String>,
    /// Branch the pull request targets; the lab forge holds the pinned repo there. Default `main`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub base: Option<Spanned<String>>,
    /// Description of the pull request.
    #[serde(default)]
    pub body: Option<String>,
}

/// Checks on the pull request the lab forge received for this case.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawPullRequestExpect {
    /// Whether it must be a draft.
    pub draft: Option<bool>,
    /// Its head branch.
    pub branch: Option<String>,
    /// Its base branch.
    pub base: Option<String>,
    /// Its title.
    pub title: Option<String>,
    /// `matches`: the diff the forge computed from what was pushed equals the repo's diff
    /// against its pinned content, as the lab sees it in the case container.
    #[schemars(with = "Option<String>")]
    pub diff: Option<Spanned<String>>,
}

/// Checks on a session's Runner Contract events: types like `SESSION_STARTED`, or `TYPE:kind`
/// (`ERROR:timeout`). A bare `ERROR` does not match warnings (`ERROR:cli_warning`).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawEventsExpect {
    /// Event types that must appear.
    #[schemars(with = "Vec<String>")]
    pub present: Vec<Spanned<String>>,
    /// Event types that must not appear.
    #[schemars(with = "Vec<String>")]
    pub absent: Vec<Spanned<String>>,
    /// Exact counts per event type.
    #[schemars(with = "BTreeMap<String, u64>")]
    pub count: BTreeMap<String, Spanned<u64>>,
    /// Event types whose first occurrences must come in this order.
    #[schemars(with = "Vec<String>")]
    pub order: Vec<Spanned<String>>,
    /// Deadlines from the step's start for an event type's first occurrence, e.g. `30s`.
    #[schemars(with = "BTreeMap<String, String>")]
    pub within: BTreeMap<String, Spanned<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RawRepoCommand {
    Test,
    Ci,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawExpect {
    /// Expected exit code (an integer), or `any`. Default `0`.
    #[schemars(with = "Option<ExitCodeSchema>")]
    pub exit_code: Option<Spanned<String>>,
    pub stdout: Option<RawTextExpect>,
    pub stderr: Option<RawTextExpect>,
    /// Files in the repo, checked after the step.
    pub files: Vec<RawFileExpect>,
    /// Paths (git pathspecs, relative to the repo) that must be exactly as the repo was pinned:
    /// not modified, not deleted, no new files below them.
    #[schemars(with = "Vec<String>")]
    pub unchanged: Vec<Spanned<String>>,
    /// The repo's diff against its pinned content, after the step.
    pub diff: Option<RawDiffExpect>,
    /// Session steps: checks on the runner's events.
    #[schemars(with = "Option<RawEventsExpect>")]
    pub events: Option<Spanned<RawEventsExpect>>,
    /// Session steps: `reconciled` requires USAGE_TICK deltas to sum to the usage the model stub
    /// reported, with strictly increasing `seq`.
    #[schemars(with = "Option<String>")]
    pub usage: Option<Spanned<String>>,
    /// `draft_pr` steps: the pull request as the lab forge received it.
    pub pull_request: Option<RawPullRequestExpect>,
    /// Session steps: what the agent said (its AGENT_MESSAGE texts, the final answer included).
    #[schemars(with = "Option<RawTextExpect>")]
    pub messages: Option<Spanned<RawTextExpect>>,
    /// Session steps: pins on what the CLI sends to the model (the tools it offers, their
    /// kinds, the size of its instructions), as the model stub received it.
    #[schemars(with = "Option<crate::stub::requests::Expect>")]
    pub requests: Option<Spanned<crate::stub::requests::Expect>>,
}

/// Schema-only view of `exit_code`: a number or the word `any`.
#[derive(JsonSchema)]
#[allow(dead_code)]
#[serde(untagged)]
pub enum ExitCodeSchema {
    Code(i64),
    Any(AnyWord),
}

#[derive(JsonSchema)]
#[allow(dead_code)]
#[serde(rename_all = "lowercase")]
pub enum AnyWord {
    Any,
}

/// Checks on a captured output stream.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawTextExpect {
    /// Substrings that must all appear.
    pub contains: Vec<String>,
    /// Regular expressions (Rust `regex` syntax) that must all match.
    #[schemars(with = "Vec<String>")]
    pub matches: Vec<Spanned<String>>,
    /// Substrings that must not appear.
    pub excludes: Vec<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawFileExpect {
    /// Path relative to the repo root.
    #[schemars(with = "String")]
    pub path: Spanned<String>,
    /// Whether the file must exist (default) or must be absent.
    #[serde(default)]
    pub exists: Option<bool>,
    #[serde(default)]
    pub contains: Vec<String>,
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub matches: Vec<Spanned<String>>,
    #[serde(default)]
    pub excludes: Vec<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawDiffExpect {
    /// The diff must be empty (`true`) or non-empty (`false`).
    pub empty: Option<bool>,
    /// Paths the diff must touch (exact repo-relative paths).
    pub touches: Vec<String>,
    /// Substrings the unified diff must contain (e.g. `+export const GREETING = "Hi"`).
    pub contains: Vec<String>,
    /// Substrings the unified diff must not contain.
    pub excludes: Vec<String>,
}
