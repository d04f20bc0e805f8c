//! Validation of a parsed suite into [`Suite`], the form the planner and engine consume.

use super::raw::{RawEventsExpect, RawExpect, RawNetwork, RawRepoCommand, RawStep, RawSuite, RawTextExpect};
use crate::error::{LabError, Result, SourceError};
use crate::providers::Provider;
use miette::NamedSource;
use regex::Regex;
use serde_saphyr::{Location, Spanned};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_CASE_TIMEOUT: Duration = Duration::from_secs(600);

/// A validated suite. `source` is the exact text it was compiled from, so that a report can
/// carry it and `canary repro` can run the very same suite later.
#[derive(Debug, Clone)]
pub struct Suite {
    pub name: String,
    pub description: Option<String>,
    pub file: String,
    pub source: String,
    pub digest: String,
    pub repos: Vec<String>,
    pub timeout: Duration,
    pub network: Network,
    /// The providers the suite names (`providers:`), if it names any.
    pub providers: Option<Vec<Provider>>,
    pub steps: Vec<Step>,
}

impl Suite {
    /// Whether a case of this suite runs once per provider of its build: it names providers,
    /// or a session step leaves the provider to the build.
    pub fn per_provider(&self) -> bool {
        self.providers.is_some()
            || self
                .steps
                .iter()
                .any(|s| matches!(&s.action, StepAction::Session(spec) if spec.provider.is_none()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    None,
    Lab,
}

#[derive(Debug, Clone)]
pub struct Step {
    pub name: String,
    pub timeout: Duration,
    pub env: BTreeMap<String, String>,
    pub action: StepAction,
    pub expect: Expect,
    /// Where the step's action is written in the suite file, for errors found later (against
    /// a repo's manifest).
    pub action_span: miette::SourceSpan,
}

/// What a step does. Agent session steps join this enum; they do not get a format of their own.
#[derive(Debug, Clone)]
pub enum StepAction {
    /// A shell command run with `sh -c` in the repo's folder.
    Exec(String),
    /// The repo manifest's own command, resolved per case.
    RepoCommand(RepoCommand),
    /// An agent session through the image's runner.
    Session(SessionSpec),
    /// The runner proposes the repo's changes as a pull request on the lab forge.
    DraftPr(DraftPrSpec),
}

#[derive(Debug, Clone)]
pub struct DraftPrSpec {
    pub title: String,
    pub branch: String,
    pub base: String,
    pub body: Option<String>,
}

/// Checks on the pull request the lab forge received.
#[derive(Debug, Clone, Default)]
pub struct PullRequestExpect {
    pub draft: Option<bool>,
    pub branch: Option<String>,
    pub base: Option<String>,
    pub title: Option<String>,
    pub diff_matches: bool,
}

#[derive(Debug, Clone)]
pub struct SessionSpec {
    pub provider: Option<Provider>,
    pub prompt: String,
    pub scenario: crate::stub::Scenario,
    /// `approve`, `deny` or `none`.
    pub approval: crate::runner::proxy::Approval,
    pub model: Option<String>,
    /// The earlier session step whose conversation this one continues.
    pub resume: Option<String>,
    pub interrupt: Option<Interrupt>,
}

/// When and how a session is stopped while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interrupt {
    pub after_turn: usize,
    pub grace: Duration,
}

impl SessionSpec {
    /// Whether the scenario calls the lab's MCP fixture.
    pub fn uses_mcp(&self) -> bool {
        self.scenario
            .turns
            .iter()
            .any(|t| matches!(t, crate::stub::Turn::Mcp { .. }))
    }
}

#[derive(Debug, Clone, Default)]
pub struct EventsExpect {
    pub present: Vec<String>,
    pub absent: Vec<String>,
    pub count: Vec<(String, u64)>,
    pub order: Vec<String>,
    pub within: Vec<(String, Duration)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepoCommand {
    Test,
    Ci,
}

canary_contract::words!(RepoCommand, "a repo command", { Test => "test", Ci => "ci" });

#[derive(Debug, Clone, Default)]
pub struct Expect {
    /// `None` accepts any exit code.
    pub exit_code: Option<i64>,
    pub stdout: TextExpect,
    pub stderr: TextExpect,
    pub files: Vec<FileExpect>,
    pub unchanged: Vec<String>,
    pub diff: Option<DiffExpect>,
    pub events: Option<EventsExpect>,
    pub usage_reconciled: bool,
    pub pull_request: Option<PullRequestExpect>,
    /// Session steps: checks on what the agent said.
    pub messages: Option<TextExpect>,
    /// Session steps: pins on what the CLI sends to the model.
    pub requests: Option<crate::stub::requests::Expect>,
}

#[derive(Debug, Clone, Default)]
pub struct TextExpect {
    pub contains: Vec<String>,
    pub matches: Vec<Regex>,
    pub excludes: Vec<String>,
}

impl TextExpect {
    pub fn is_empty(&self) -> bool {
        self.contains.is_empty() && self.matches.is_empty() && self.excludes.is_empty()
    }
}

#[derive(Debug, Clone)]
pub struct FileExpect {
    pub path: String,
    pub exists: bool,
    pub text: TextExpect,
}

#[derive(Debug, Clone, Default)]
pub struct DiffExpect {
    pub empty: Option<bool>,
    pub touches: Vec<String>,
    pub contains: Vec<String>,
    pub excludes: Vec<String>,
}

impl Suite {
    /// A located error about this suite's text at `span`.
    pub fn error_at(&self, span: miette::SourceSpan, message: String, label: &str, help: String) -> LabError {
        SourceError {
            message,
            src: NamedSource::new(self.file.clone(), self.source.clone()),
            span,
            label: label.into(),
            help: Some(help),
            related: None,
            related_label: String::new(),
        }
        .into()
    }

    /// This suite as it runs on `repo`: its variables substituted, and every step the repo's
    /// manifest must support checked (a `repo_command: ci` needs the repo's `ci:`).
    pub fn for_repo_checked(&self, repo: &crate::repos::Repo, known_repos: &[String]) -> Result<Suite> {
        let s = self.for_repo(&repo.manifest.id, &repo.manifest.vars, known_repos)?;
        if repo.manifest.ci.is_none() {
            if let Some(step) = s
                .steps
                .iter()
                .find(|st| matches!(st.action, StepAction::RepoCommand(RepoCommand::Ci)))
            {
                // Spans of the substituted text may be shifted: the unsubstituted step's is used.
                let span = self
                    .steps
                    .iter()
                    .find(|st| st.name == step.name)
                    .map_or(step.action_span, |st| st.action_span);
                return Err(self.error_at(
                    span,
                    format!(
                        "step `{}` runs the repo's CI command, but repo `{}` has none",
                        step.name, repo.manifest.id
                    ),
                    "needs `ci:` in the repo's manifest",
                    format!(
                        "add `ci:` to {} or drop the repo from the suite",
                        repo.manifest_path.display()
                    ),
                ));
            }
        }
        Ok(s)
    }

    /// This suite with `{{repo.NAME}}` replaced by the repo's variables, compiled again. The
    /// digest stays the suite file's: the variables are part of the repo's pinned content.
    pub fn for_repo(&self, repo: &str, vars: &BTreeMap<String, String>, known_repos: &[String]) -> Result<Suite> {
        if !self.source.contains("{{") {
            return Ok(self.clone());
        }
        if let Some(m) = super::vars::missing(&self.source, vars) {
            return Err(SourceError {
                message: format!("repo `{repo}` has no variable `{}`", m.name),
                src: NamedSource::new(self.file.clone(), self.source.clone()),
                span: (m.start, m.len).into(),
                label: "used here".into(),
                help: Some(format!(
                    "add it under `vars:` in canary-repos/{repo}/canary-repo.yaml (it has: {})",
                    vars.keys().cloned().collect::<Vec<_>>().join(", ")
                )),
                related: None,
                related_label: String::new(),
            }
            .into());
        }
        // Values, not YAML: see `vars`. The text stays line for line the suite's own, so an
        // error still points at the user's line.
        let text = super::vars::substitute(&self.source, vars);
        let mut s = compile(&self.file, text, known_repos)?;
        s.source = self.source.clone();
        s.digest = self.digest.clone();
        Ok(s)
    }
}

/// Reads and compiles a suite file. `known_repos` is the catalog of canary repo ids.
pub fn load(path: &Path, known_repos: &[String]) -> Result<Suite> {
    let text = crate::fsutil::read_input(path, "suite", crate::fsutil::MAX_INPUT)?;
    compile(&path.display().to_string(), text, known_repos)
}

/// Reads and compiles the copy of a suite a run kept (`reports/<run>/suites/`): the repos it
/// names are the catalog, since the run checked them against the lab's when it ran and the copy
/// keeps only the repos of the cases it ran.
pub fn load_snapshot(path: &Path) -> Result<Suite> {
    let text = crate::fsutil::read_input(path, "suite", crate::fsutil::MAX_INPUT)?;
    let file = path.display().to_string();
    let cx = Cx {
        file: &file,
        text: &text,
    };
    let raw: RawSuite = serde_saphyr::from_str(&text).map_err(|e| cx.yaml_error(&e))?;
    let own: Vec<String> = raw.repos.value.iter().map(|r| r.value.clone()).collect();
    cx.suite(raw, &own)
}

/// Parses and compiles suite text; `file` names it in errors.
pub fn compile(file: &str, text: String, known_repos: &[String]) -> Result<Suite> {
    let cx = Cx { file, text: &text };
    let raw: RawSuite = serde_saphyr::from_str(&text).map_err(|e| cx.yaml_error(&e))?;
    let suite = cx.suite(raw, known_repos)?;
    Ok(suite)
}

/// Compilation context: knows the source so every error can point into it.
struct Cx<'a> {
    file: &'a str,
    text: &'a str,
}

impl Cx<'_> {
    fn error(&self, loc: &Location, message: String, label: &str, help: Option<String>) -> LabError {
        SourceError {
            message,
            src: NamedSource::new(self.file, self.text.to_string()),
            span: crate::yaml::span(self.text, loc),
            label: label.to_string(),
            help,
            related: None,
            related_label: String::new(),
        }
        .into()
    }

    fn yaml_error(&self, e: &serde_saphyr::Error) -> LabError {
        crate::yaml::parse_error(self.file, self.text, "suite", e, "suites/schema.json lists every field").into()
    }

    fn suite(&self, raw: RawSuite, known_repos: &[String]) -> Result<Suite> {
        let name = raw.name.value.clone();
        let name_ok = Regex::new(r"^[A-Za-z0-9][A-Za-z0-9._-]*$").expect("static regex");
        if !name_ok.is_match(&name) {
            return Err(self.error(
                &raw.name.referenced,
                format!("invalid suite name `{}`", crate::text::clean(&name)),
                "not a valid name",
                Some("use letters, digits, `.`, `_` and `-`; it names report files".into()),
            ));
        }

        let repos = self.repos(&raw.repos, known_repos)?;

        let timeout = self.duration(raw.timeout.as_ref(), DEFAULT_CASE_TIMEOUT)?;
        let network = match raw.network.map(|n| n.value) {
            Some(RawNetwork::Lab) => Network::Lab,
            _ => Network::None,
        };

        let steps = self.steps(raw.steps, network)?;

        let digest = format!("sha256:{}", hex::encode(Sha256::digest(self.text.as_bytes())));
        let providers = raw.providers.as_ref().map(|p| self.providers(p)).transpose()?;
        Ok(Suite {
            name,
            description: raw.description,
            file: self.file.to_string(),
            source: self.text.to_string(),
            digest,
            repos,
            timeout,
            network,
            providers,
            steps,
        })
    }

    fn step(&self, raw: RawStep) -> Result<Step> {
        let mut actions: Vec<(&'static str, serde_saphyr::Location)> = Vec::new();
        if let Some(c) = &raw.exec {
            actions.push(("exec", c.referenced));
        }
        if let Some(c) = &raw.repo_command {
            actions.push(("repo_command", c.referenced));
        }
        if let Some(c) = &raw.session {
            actions.push(("session", c.referenced));
        }
        if let Some(c) = &raw.draft_pr {
            actions.push(("draft_pr", c.referenced));
        }
        if actions.len() > 1 {
            return Err(self.error(
                &actions[1].1,
                format!(
                    "step `{}` has two actions ({} and {})",
                    raw.name.value, actions[0].0, actions[1].0
                ),
                "second action",
                Some("a step does one thing: keep one of `exec`, `repo_command`, `session`, `draft_pr`".into()),
            ));
        }
        let action = if let Some(cmd) = raw.exec {
            if cmd.value.trim().is_empty() {
                return Err(self.error(
                    &cmd.referenced,
                    "`exec` is empty".into(),
                    "empty command",
                    Some("write the shell command the step runs, e.g. `exec: make test`".into()),
                ));
            }
            StepAction::Exec(cmd.value)
        } else if let Some(rc) = raw.repo_command {
            StepAction::RepoCommand(match rc.value {
                RawRepoCommand::Test => RepoCommand::Test,
                RawRepoCommand::Ci => RepoCommand::Ci,
            })
        } else if let Some(session) = raw.session {
            self.session_action(&session)?
        } else if let Some(pr) = raw.draft_pr {
            self.draft_pr_action(&pr)?
        } else {
            return Err(self.error(
                &raw.name.referenced,
                format!("step `{}` has no action", raw.name.value),
                "this step",
                Some(
                    "add `exec: <shell command>`, `repo_command: test|ci`, `session: {...}` or `draft_pr: {...}`"
                        .into(),
                ),
            ));
        };
        let timeout = self.duration(raw.timeout.as_ref(), DEFAULT_STEP_TIMEOUT)?;
        let session = matches!(action, StepAction::Session(_) | StepAction::DraftPr(_));
        let raw_expect = raw.expect.unwrap_or_default();
        let exit_code_given = raw_expect.exit_code.is_some();
        let mut expect = self.expect(raw_expect, session)?;
        // An interrupted session ends as the interrupt makes it; its own checks judge it.
        if matches!(&action, StepAction::Session(s) if s.interrupt.is_some()) && !exit_code_given {
            expect.exit_code = None;
        }
        let action_span = match actions.first() {
            Some((_, loc)) => crate::yaml::span(self.text, loc),
            None => crate::yaml::span(self.text, &raw.name.referenced),
        };
        Ok(Step {
            name: raw.name.value,
            timeout,
            env: raw.env,
            action,
            expect,
            action_span,
        })
    }

    /// `session`: whether the step is an agent session (events and usage exist only there).
    fn expect(&self, raw: RawExpect, session: bool) -> Result<Expect> {
        let exit_code = self.exit_code(raw.exit_code.as_ref())?;
        let mut files = Vec::new();
        for f in raw.files {
            let path = self.repo_path(&f.path)?;
            files.push(crate::suite::FileExpect {
                path,
                exists: f.exists.unwrap_or(true),
                text: self.text_expect(RawTextExpect {
                    contains: f.contains,
                    matches: f.matches,
                    excludes: f.excludes,
                })?,
            });
        }
        let unchanged = raw
            .unchanged
            .iter()
            .map(|p| self.repo_path(p))
            .collect::<Result<Vec<_>>>()?;
        Ok(Expect {
            exit_code,
            stdout: self.text_expect(raw.stdout.unwrap_or_default())?,
            stderr: self.text_expect(raw.stderr.unwrap_or_default())?,
            files,
            unchanged,
            diff: raw.diff.map(|d| DiffExpect {
                empty: d.empty,
                touches: d.touches,
                contains: d.contains,
                excludes: d.excludes,
            }),
            messages: match raw.messages {
                None => None,
                Some(m) if !session => {
                    return Err(self.error(
                        &m.referenced,
                        "`expect.messages` on a step that is not a session: only sessions have an agent that speaks"
                            .into(),
                        "never checked here",
                        Some("move the check to a `session` step, or remove it".into()),
                    ));
                }
                Some(m) => Some(self.text_expect(m.value)?),
            },
            events: match raw.events {
                None => None,
                Some(e) if !session => {
                    return Err(self.error(
                        &e.referenced,
                        "`expect.events` on a step that is not a session: only sessions emit runner events".into(),
                        "never checked here",
                        Some("move the check to a `session` step, or remove it".into()),
                    ));
                }
                Some(e) => Some(self.events(e.value)?),
            },
            pull_request: raw.pull_request.map(|p| self.pull_request(p)).transpose()?,
            usage_reconciled: self.usage(raw.usage, session)?,
            requests: self.requests(raw.requests, session)?,
        })
    }

    /// The suite's repos, each one the lab knows, in order, once each.
    fn repos(&self, raw: &Spanned<Vec<Spanned<String>>>, known_repos: &[String]) -> Result<Vec<String>> {
        let mut repos = Vec::new();
        if raw.value.is_empty() {
            return Err(self.error(
                &raw.referenced,
                "`repos` is empty".into(),
                "no repos",
                Some("list at least one canary repo id".into()),
            ));
        }
        for repo in &raw.value {
            if !known_repos.contains(&repo.value) {
                return Err(self.error(
                    &repo.referenced,
                    format!("unknown canary repo `{}`", repo.value),
                    "no such repo",
                    Some(format!("known repos: {}", known_repos.join(", "))),
                ));
            }
            if !repos.contains(&repo.value) {
                repos.push(repo.value.clone());
            }
        }
        Ok(repos)
    }

    /// The suite's steps: at least one, each name once, a draft PR only on the lab network.
    fn steps(&self, raw: Spanned<Vec<RawStep>>, network: Network) -> Result<Vec<Step>> {
        if raw.value.is_empty() {
            return Err(self.error(
                &raw.referenced,
                "`steps` is empty".into(),
                "no steps",
                Some("add at least one step".into()),
            ));
        }
        let mut seen: HashMap<String, Location> = HashMap::new();
        let mut steps = Vec::new();
        for step in raw.value {
            let n = &step.name.value;
            if n.trim().is_empty() || n.chars().count() > 200 || n.chars().any(char::is_control) {
                return Err(self.error(
                    &step.name.referenced,
                    format!("invalid step name `{}`", crate::text::clean(n)),
                    "not a valid name",
                    Some("a step name is one line of 1 to 200 printable characters: it names a JUnit testcase and a line in the terminal".into()),
                ));
            }
            if let Some(first) = seen.get(&step.name.value) {
                let err = SourceError {
                    message: format!("duplicate step name `{}`", step.name.value),
                    src: NamedSource::new(self.file, self.text.to_string()),
                    span: crate::yaml::span(self.text, &step.name.referenced),
                    label: "used again here".into(),
                    help: Some("step names must be unique within a suite: they name JUnit testcases".into()),
                    related: Some(crate::yaml::span(self.text, first)),
                    related_label: "first used here".into(),
                };
                return Err(err.into());
            }
            seen.insert(step.name.value.clone(), step.name.referenced);
            self.check_resume(&step, &steps)?;
            if let (Some(pr), Network::None) = (&step.draft_pr, network) {
                return Err(self.error(
                    &pr.referenced,
                    format!(
                        "step `{}` opens a pull request, but the suite has no network",
                        step.name.value
                    ),
                    "needs the lab forge",
                    Some("add `network: lab` to the suite: the lab forge lives on the run's private network".into()),
                ));
            }
            steps.push(self.step(step)?);
        }
        Ok(steps)
    }

    /// `session.resume:` names an earlier session step of the same CLI.
    fn check_resume(&self, raw: &RawStep, earlier: &[Step]) -> Result<()> {
        let Some(session) = &raw.session else { return Ok(()) };
        let Some(name) = &session.value.resume else {
            return Ok(());
        };
        let target = earlier.iter().find(|s| s.name == name.value);
        let problem = match target.map(|s| &s.action) {
            None => format!("`resume: {}` names no earlier step", crate::text::clean(&name.value)),
            Some(StepAction::Session(spec))
                if spec.provider != session.value.provider.as_deref().and_then(Provider::from_name) =>
            {
                format!(
                    "`resume: {}` continues a session of another CLI",
                    crate::text::clean(&name.value)
                )
            }
            Some(StepAction::Session(_)) => return Ok(()),
            Some(_) => format!(
                "`resume: {}` names a step that is not a session",
                crate::text::clean(&name.value)
            ),
        };
        Err(self.error(
            &name.referenced,
            problem,
            "resume",
            Some("name an earlier `session` step of this suite, with the same provider".into()),
        ))
    }

    /// `providers:`, when given: known CLIs, each once, at least one.
    fn providers(&self, list: &Spanned<Vec<Spanned<String>>>) -> Result<Vec<Provider>> {
        if list.value.is_empty() {
            return Err(self.error(
                &list.referenced,
                "`providers` is empty, so the suite would run for no CLI".into(),
                "here",
                Some(
                    "name providers (codex, claude-code, gemini), or remove the key to run for every CLI of the build"
                        .into(),
                ),
            ));
        }
        let mut named: Vec<Provider> = Vec::new();
        for p in &list.value {
            let Some(provider) = Provider::from_name(&p.value) else {
                return Err(self.error(
                    &p.referenced,
                    format!("unknown provider `{}`", crate::text::clean(&p.value)),
                    "here",
                    Some("providers: codex, claude-code, gemini".into()),
                ));
            };
            if named.contains(&provider) {
                return Err(self.error(
                    &p.referenced,
                    format!("provider `{provider}` is listed twice"),
                    "here",
                    Some("list each provider once".into()),
                ));
            }
            named.push(provider);
        }
        Ok(named)
    }

    /// A `session:` step: a valid scenario and a known provider.
    fn session_action(&self, session: &Spanned<super::raw::RawSession>) -> Result<StepAction> {
        let scenario = crate::stub::Scenario {
            turns: session.value.scenario.clone(),
        };
        if let Err(e) = scenario.validate() {
            return Err(self.error(
                &session.referenced,
                format!("invalid scenario: {e}"),
                "this session",
                Some("turns are run / edit / attempt / say, with say last".into()),
            ));
        }
        let provider = match &session.value.provider {
            None => None,
            Some(p) => Some(Provider::from_name(p).ok_or_else(|| {
                self.error(
                    &session.referenced,
                    format!("unknown provider `{}`", crate::text::clean(p)),
                    "this session",
                    Some("providers: codex, claude-code, gemini".into()),
                )
            })?),
        };
        let interrupt = session
            .value
            .interrupt
            .as_ref()
            .map(|i| self.interrupt(i, &scenario, session.referenced))
            .transpose()?;
        Ok(StepAction::Session(SessionSpec {
            provider,
            prompt: session.value.prompt.clone(),
            scenario,
            approval: session.value.approval.unwrap_or_default(),
            model: session.value.model.clone(),
            resume: session.value.resume.as_ref().map(|r| r.value.clone()),
            interrupt,
        }))
    }

    /// `interrupt:`: a turn the scenario has, and a grace period.
    fn interrupt(
        &self,
        raw: &super::raw::RawInterrupt,
        scenario: &crate::stub::Scenario,
        at: Location,
    ) -> Result<Interrupt> {
        let after_turn = raw.after_turn.as_ref().map_or(1, |a| a.value);
        let grace = self.duration(raw.grace.as_ref(), Duration::from_secs(5))?;
        if after_turn == 0 || after_turn >= scenario.turns.len() {
            return Err(self.error(
                &raw.after_turn.as_ref().map(|a| a.referenced).unwrap_or(at),
                format!(
                    "`interrupt.after_turn: {after_turn}` but the scenario has {} turns, the last of which ends the session",
                    scenario.turns.len()
                ),
                "interrupt",
                Some("interrupt after a turn that runs something long, e.g. `- run: sleep 600` before the final `say`".into()),
            ));
        }
        Ok(Interrupt { after_turn, grace })
    }

    /// A `draft_pr:` step: valid branch names and a title.
    fn draft_pr_action(&self, pr: &Spanned<super::raw::RawDraftPr>) -> Result<StepAction> {
        for (what, branch) in [("branch", Some(&pr.value.branch)), ("base", pr.value.base.as_ref())] {
            if let Some(b) = branch.filter(|b| !valid_branch(&b.value)) {
                return Err(self.error(
                    &b.referenced,
                    format!("invalid {what} name `{}`", crate::text::clean(&b.value)),
                    "not a branch name",
                    Some(
                        "use a git branch name such as `canary/edit`: no spaces, `..`, `~^:?*[\\` or leading `-`"
                            .into(),
                    ),
                ));
            }
        }
        if pr.value.title.trim().is_empty() {
            return Err(self.error(
                &pr.referenced,
                "`title` is empty".into(),
                "this pull request",
                Some("give the pull request a title: it is also the commit message".into()),
            ));
        }
        Ok(StepAction::DraftPr(DraftPrSpec {
            title: pr.value.title.clone(),
            branch: pr.value.branch.value.clone(),
            base: pr
                .value
                .base
                .as_ref()
                .map_or_else(|| "main".into(), |b| b.value.clone()),
            body: pr.value.body.clone(),
        }))
    }

    /// `exit_code:` 0 to 255, or `any` (`None`); 0 when absent.
    fn exit_code(&self, raw: Option<&Spanned<String>>) -> Result<Option<i64>> {
        Ok(match raw {
            None => Some(0),
            Some(code) if code.value.trim() == "any" => None,
            Some(code) => match code.value.trim().parse::<i64>() {
                Ok(n) if (0..=255).contains(&n) => Some(n),
                Ok(n) => {
                    return Err(self.error(
                        &code.referenced,
                        format!("exit_code {n} can never happen: a process exits with 0 to 255"),
                        "out of range",
                        Some("write a code from 0 to 255 (a signal shows as 128 + its number), or `any`".into()),
                    ));
                }
                Err(_) => {
                    return Err(self.error(
                        &code.referenced,
                        format!("invalid exit_code `{}`", code.value),
                        "not an integer",
                        Some("write an integer such as `0` or `1`, or `any`".into()),
                    ));
                }
            },
        })
    }

    /// `expect.requests`: only a session sends model requests.
    fn requests(
        &self,
        raw: Option<Spanned<crate::stub::requests::Expect>>,
        session: bool,
    ) -> Result<Option<crate::stub::requests::Expect>> {
        match raw {
            Some(r) if !session => Err(self.error(
                &r.referenced,
                "`expect.requests` on a step that is not a session: only sessions send model requests".into(),
                "never checked here",
                Some("move the check to a `session` step, or remove it".into()),
            )),
            other => Ok(other.map(|r| r.value)),
        }
    }

    /// `expect.pull_request`: the one diff check is `matches`.
    fn pull_request(&self, p: super::raw::RawPullRequestExpect) -> Result<PullRequestExpect> {
        Ok(PullRequestExpect {
            draft: p.draft,
            branch: p.branch,
            base: p.base,
            title: p.title,
            diff_matches: match p.diff {
                None => false,
                Some(d) if d.value == "matches" => true,
                Some(d) => {
                    return Err(self.error(
                        &d.referenced,
                        format!("unknown pull_request.diff check `{}`", d.value),
                        "here",
                        Some("the one diff check is `matches`".into()),
                    ));
                }
            },
        })
    }

    /// `expect.usage: reconciled`, on session steps only.
    fn usage(&self, raw: Option<Spanned<String>>, session: bool) -> Result<bool> {
        Ok(match raw {
            None => false,
            Some(u) if !session => {
                return Err(self.error(
                    &u.referenced,
                    "`expect.usage` on a step that is not a session: only sessions report usage".into(),
                    "never checked here",
                    Some("move the check to a `session` step, or remove it".into()),
                ));
            }
            Some(u) if u.value == "reconciled" => true,
            Some(u) => {
                return Err(self.error(
                    &u.referenced,
                    format!("unknown usage check `{}`", u.value),
                    "here",
                    Some("the one usage check is `reconciled`".into()),
                ));
            }
        })
    }

    fn events(&self, raw: RawEventsExpect) -> Result<EventsExpect> {
        let check = |name: &Spanned<String>| -> Result<String> {
            match event_spec_problem(&name.value) {
                None => Ok(name.value.clone()),
                Some((message, help)) => Err(self.error(&name.referenced, message, "here", Some(help))),
            }
        };
        // Map keys carry no location of their own: an error points at the key's value.
        let check_key = |key: &str, at: &Location| -> Result<String> {
            match event_spec_problem(key) {
                None => Ok(key.to_string()),
                Some((message, help)) => Err(self.error(at, message, "for this event type", Some(help))),
            }
        };
        let mut within = Vec::new();
        for (name, d) in raw.within {
            let name = check_key(&name, &d.referenced)?;
            let d = self.duration(Some(&d), Duration::ZERO)?;
            within.push((name, d));
        }
        Ok(EventsExpect {
            present: raw.present.iter().map(check).collect::<Result<_>>()?,
            absent: raw.absent.iter().map(check).collect::<Result<_>>()?,
            count: raw
                .count
                .into_iter()
                .map(|(n, c)| check_key(&n, &c.referenced).map(|n| (n, c.value)))
                .collect::<Result<_>>()?,
            order: raw.order.iter().map(check).collect::<Result<_>>()?,
            within,
        })
    }

    fn text_expect(&self, raw: RawTextExpect) -> Result<TextExpect> {
        let mut matches = Vec::new();
        for m in raw.matches {
            match Regex::new(&m.value) {
                Ok(re) => matches.push(re),
                Err(e) => {
                    let detail = e.to_string();
                    let last = detail.lines().last().unwrap_or("").trim().to_string();
                    return Err(self.error(
                        &m.referenced,
                        format!("invalid regex `{}`: {}", m.value, last.trim_start_matches("error: ")),
                        "invalid regex",
                        Some("the syntax is Rust's `regex` crate; escape literal characters with `\\`".into()),
                    ));
                }
            }
        }
        Ok(TextExpect {
            contains: raw.contains,
            matches,
            excludes: raw.excludes,
        })
    }

    /// A path inside the repo: relative, no `..`, so a suite cannot point outside the workspace.
    fn repo_path(&self, p: &Spanned<String>) -> Result<String> {
        let path = Path::new(&p.value);
        let escapes = path.is_absolute() || path.components().any(|c| matches!(c, std::path::Component::ParentDir));
        if p.value.is_empty() || escapes {
            return Err(self.error(
                &p.referenced,
                format!("path `{}` is not inside the repo", p.value),
                "outside the repo",
                Some("paths are relative to the repo root and may not use `..`".into()),
            ));
        }
        Ok(p.value.clone())
    }

    fn duration(&self, raw: Option<&Spanned<String>>, default: Duration) -> Result<Duration> {
        let Some(raw) = raw else { return Ok(default) };
        match humantime::parse_duration(raw.value.trim()) {
            Ok(d) if d > MAX_DURATION => Err(self.error(
                &raw.referenced,
                format!("`{}` is longer than the lab's limit of 24h", raw.value.trim()),
                "too long",
                Some("a case or step that needs more than a day is not a canary; use at most `24h`".into()),
            )),
            Ok(d) if !d.is_zero() => Ok(d),
            Ok(_) => Err(self.error(
                &raw.referenced,
                "a timeout of zero never lets a step run".into(),
                "zero",
                Some("use a positive duration such as `30s`".into()),
            )),
            Err(e) => Err(self.error(
                &raw.referenced,
                format!("invalid duration `{}`: {e}", raw.value),
                "not a duration",
                Some("write a number with a unit: `500ms`, `30s`, `5m`, `1h`".into()),
            )),
        }
    }
}

/// The longest timeout or deadline a suite may set: longer ones would overflow deadlines.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// What is wrong with an event spec (`TYPE` or `ERROR:kind`), with help; `None` when it can
/// match an event the runner emits. A check that can never match would pass vacuously.
pub fn event_spec_problem(spec: &str) -> Option<(String, String)> {
    let (ty, kind) = match spec.split_once(':') {
        Some((t, k)) => (t, Some(k)),
        None => (spec, None),
    };
    let types = crate::runner::events::Event::types();
    if !types.iter().any(|t| t == ty) {
        return Some((
            format!("unknown event type `{}`", crate::text::clean(ty)),
            format!("event types: {}", types.join(", ")),
        ));
    }
    match kind {
        None => None,
        Some(_) if ty != "ERROR" => Some((
            format!("`{}`: only ERROR events have a kind", crate::text::clean(spec)),
            format!("write `{ty}` alone"),
        )),
        Some(k) if !crate::runner::events::ERROR_KINDS.contains(&k) => Some((
            format!(
                "unknown ERROR kind `{}`: no event ever has it, so the check would be vacuous",
                crate::text::clean(k)
            ),
            format!("ERROR kinds: {}", crate::runner::events::ERROR_KINDS.join(", ")),
        )),
        Some(_) => None,
    }
}

/// A branch name git and the forge accept (a subset of `git check-ref-format --branch`).
fn valid_branch(b: &str) -> bool {
    !b.is_empty()
        && !b.starts_with('-')
        && !b.starts_with('/')
        && !b.ends_with('/')
        && !b.ends_with(".lock")
        && !b.ends_with('.')
        && !b.contains("..")
        && !b.contains("//")
        && !b.contains("@{")
        && b.chars().all(|c| !c.is_control() && !" ~^:?*[\\".contains(c))
}

#[cfg(test)]
mod tests {
    use super::event_spec_problem;

    /// Every event the runner emits can be expected, AGENT_MESSAGE included (it was missing from
    /// a hand-kept list); what it cannot emit is refused with the list.
    #[test]
    fn every_contract_event_type_may_be_expected_and_others_not() {
        for t in crate::runner::events::Event::types() {
            assert_eq!(event_spec_problem(t), None, "{t}");
        }
        assert_eq!(event_spec_problem("AGENT_MESSAGE"), None);
        assert_eq!(event_spec_problem("ERROR:timeout"), None);
        let (msg, help) = event_spec_problem("NOPE").unwrap();
        assert!(msg.contains("unknown event type `NOPE`"), "{msg}");
        assert!(help.contains("AGENT_MESSAGE"), "{help}");
        assert!(event_spec_problem("AGENT_MESSAGE:x").is_some(), "only ERROR has kinds");
    }
}
