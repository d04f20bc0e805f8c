//! One sweep, in a container of the promoted build: clone the repo at its branch, run its checks,
//! let an agent session with the build's CLI fix what fails, check again, and when the checks
//! improved open a draft pull request through the runner's `pr` command. And the worker loop
//! that claims jobs from the registry's queue, judges them against the org's policy, and ends
//! each as done, retried with backoff, or dead with the reason.

use super::{Check, Commands};
use crate::engine::docker::DockerBackend;
use crate::engine::{Backend, ContainerSpec, ExecSpec};
use crate::error::{LabError, Result};
use crate::orgs::{OrgPolicies, OrgPolicy};
use crate::registry::{JobState, Registry, SweepJob, SweepOutcome, SweepRepo};
use serde::Serialize;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const DIR: &str = "/tmp/sweep";
const REPO: &str = "/tmp/sweep/repo";
const CHECK: &str = "/tmp/sweep/check";

/// How workers run sweeps.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// This worker's name in the queue (leases are held in its name).
    pub worker: String,
    /// How long a claimed job is this worker's; past it another worker may take the job.
    pub lease: Duration,
    /// Tries before a job is dead.
    pub max_attempts: i64,
    /// The first retry's wait; each further one doubles.
    pub backoff: Duration,
    /// The Docker network sweep containers join (it must reach the repos' remotes).
    pub network: String,
    /// In the lab: the scenario the model stub plays to the agent.
    pub scenario: Option<PathBuf>,
    /// Elsewhere: a real model endpoint for the agent.
    pub model_url: Option<String>,
    /// Most time for one check command and for the agent session.
    pub step_timeout: Duration,
    /// Stop when the queue has nothing due (else wait for more).
    pub drain: bool,
}

/// What one job came to (the registry keeps it; `sweeps status` shows it).
#[derive(Debug, Clone, Serialize)]
pub struct Ended {
    pub job: i64,
    pub repo: String,
    pub org: String,
    pub build: canary_contract::BuildId,
    pub outcome: TryEnd,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pr_url: Option<String>,
    /// The engine it ran on, when a run has several (`engines:` in canary.yaml).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
}

impl std::fmt::Display for Ended {
    /// `[sweep] #12 acme/app (acme): pr_opened — why URL`, every field from outside cleaned.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use canary_contract::text::clean;
        write!(
            f,
            "[sweep] #{} {} ({}): {} — {}",
            self.job,
            clean(&self.repo),
            clean(&self.org),
            self.outcome,
            clean(&self.reason)
        )?;
        if let Some(u) = &self.pr_url {
            write!(f, " {}", clean(u))?;
        }
        match &self.engine {
            Some(e) => write!(f, " [engine {}]", clean(e)),
            None => Ok(()),
        }
    }
}

/// How one worker's try of a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryEnd {
    /// Finished, as the registry recorded it.
    Done(SweepOutcome),
    /// Failed; it is tried again later.
    Retry,
    /// Failed its last try.
    Dead,
    /// The lease ran out and another worker has the job.
    Lost,
    /// Its engine went away; the job was given back for a worker on another engine.
    Moved,
}

impl TryEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            TryEnd::Done(o) => o.as_str(),
            TryEnd::Retry => "retry",
            TryEnd::Dead => "dead",
            TryEnd::Lost => "lost",
            TryEnd::Moved => "moved",
        }
    }
}

impl std::fmt::Display for TryEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for TryEnd {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A sweep's result before the registry records it.
struct Done {
    outcome: SweepOutcome,
    reason: String,
    detail: serde_json::Value,
    pr: Option<(i64, String)>,
}

fn exec(cmd: Vec<String>, env: Vec<String>, workdir: &str, limit: Duration) -> ExecSpec {
    ExecSpec {
        cmd,
        env,
        workdir: workdir.into(),
        deadline: Instant::now() + limit,
        stdin: None,
    }
}

fn argv(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().collect();
    let keep = &lines[lines.len().saturating_sub(20)..];
    keep.iter()
        .map(|l| crate::text::clean(l))
        .collect::<Vec<_>>()
        .join("\n")
        .chars()
        .take(4000)
        .collect()
}

/// The repo's token, from the worker's environment (`--token-env`), as git and the runner take
/// it: in the environment, never on a command line.
fn token_env(repo: &SweepRepo) -> Vec<String> {
    let Some(token) = repo.token_env.as_deref().and_then(|v| std::env::var(v).ok()) else {
        return vec![];
    };
    vec![
        "GIT_CONFIG_COUNT=1".into(),
        "GIT_CONFIG_KEY_0=http.extraHeader".into(),
        format!("GIT_CONFIG_VALUE_0=Authorization: Bearer {token}"),
        format!("GITHUB_TOKEN={token}"),
    ]
}

/// Runs one sweep of `repo` with `build` (its image) in a fresh container, removed after.
async fn sweep<B: Backend>(
    backend: &B,
    reg: &Registry,
    policy: &OrgPolicy,
    job: &SweepJob,
    repo: &SweepRepo,
    o: &WorkerOptions,
) -> Result<Done> {
    let row = reg.build_row(&job.build_id).await?.ok_or_else(|| {
        LabError::usage(
            format!("build {} is not in the registry", job.build_id),
            "it was forgotten",
        )
    })?;
    let manifest = row.manifest.clone().ok_or_else(|| {
        LabError::usage(
            format!("build {} has no manifest of components", job.build_id),
            "sweeps need a runner build",
        )
    })?;
    let provider = manifest.clis().next().map(|c| c.name.clone()).ok_or_else(|| {
        LabError::usage(
            format!("build {} has no CLI to sweep with", job.build_id),
            "promote a build with a CLI",
        )
    })?;
    let components = manifest
        .clis()
        .map(|c| format!("{} {}", c.name, c.version))
        .collect::<Vec<_>>()
        .join(", ");
    let run_id = format!("sweep-{}-{}", job.id, std::process::id());
    let mut spec = ContainerSpec::new(&run_id, "sweep", &row.image_ref);
    spec.network = Some(o.network.clone());
    let container = backend.start_container(&spec).await?;
    let mut git_env = vec![
        "GIT_TERMINAL_PROMPT=0".to_string(),
        "GIT_ALLOW_PROTOCOL=https:http:ssh:git".into(),
    ];
    git_env.extend(token_env(repo));
    let inside = InContainer {
        backend,
        container: &container,
        policy,
        job,
        repo,
        o,
        provider: &provider,
        components: &components,
        git_env,
    };
    let result = inside.sweep().await;
    let _ = backend.remove_container(&container).await;
    result
}

/// One sweep inside its container: what it works with, and its steps as methods.
struct InContainer<'a, B: Backend> {
    backend: &'a B,
    container: &'a str,
    policy: &'a OrgPolicy,
    job: &'a SweepJob,
    repo: &'a SweepRepo,
    o: &'a WorkerOptions,
    /// The CLI the build sweeps with, and its components in words.
    provider: &'a str,
    components: &'a str,
    /// git's environment: no prompts, the repo's token if it has one.
    git_env: Vec<String>,
}

/// A step's failure: what it was doing, its exit code and the tail of what it said.
fn fail(what: &str, out: &crate::engine::ExecOutcome) -> LabError {
    let said = if out.stderr.is_empty() {
        &out.stdout
    } else {
        &out.stderr
    };
    LabError::usage(
        format!("{what}: exit {:?}: {}", out.exit_code, tail(said)),
        "the job is retried; `canary sweeps status` shows each try",
    )
}

fn nothing(reason: String, detail: serde_json::Value) -> Done {
    Done {
        outcome: SweepOutcome::NothingToPropose,
        reason,
        detail,
        pr: None,
    }
}

impl<B: Backend> InContainer<'_, B> {
    async fn run(
        &self,
        cmd: Vec<String>,
        env: Vec<String>,
        dir: &str,
        limit: Duration,
    ) -> Result<crate::engine::ExecOutcome> {
        self.backend.exec(self.container, &exec(cmd, env, dir, limit)).await
    }

    /// Runs a command that must succeed, or fails saying what it was doing.
    async fn must(
        &self,
        what: &str,
        cmd: Vec<String>,
        env: Vec<String>,
        dir: &str,
        limit: Duration,
    ) -> Result<crate::engine::ExecOutcome> {
        let out = self.run(cmd, env, dir, limit).await?;
        if out.exit_code == Some(0) {
            Ok(out)
        } else {
            Err(fail(what, &out))
        }
    }

    /// The sweep folder and the repo's clone (the URL and branch were checked when the repo was
    /// added; `--` ends options).
    async fn clone_repo(&self) -> Result<()> {
        self.must(
            "preparing the sweep folder",
            argv(&["mkdir", "-p", DIR]),
            vec![],
            "/",
            Duration::from_secs(30),
        )
        .await?;
        let r = self.repo;
        let cmd = argv(&[
            "git",
            "clone",
            "--quiet",
            "--single-branch",
            "--branch",
            &r.branch,
            "--",
            &r.url,
            REPO,
        ]);
        let what = format!("cloning {} at {}", r.url, r.branch);
        self.must(&what, cmd, self.git_env.clone(), DIR, Duration::from_secs(300))
            .await?;
        Ok(())
    }

    /// The commands: those given when the repo was added, then the repo's manifest.
    async fn commands(&self) -> Result<Commands> {
        let manifest = self
            .run(
                argv(&["cat", "canary-repo.yaml"]),
                vec![],
                REPO,
                Duration::from_secs(30),
            )
            .await?;
        let given: Commands = serde_json::from_value(self.repo.commands.clone()).unwrap_or_default();
        Ok(
            given.or(if manifest.exit_code == Some(0) && manifest.stdout.len() < 1 << 20 {
                Commands::from_manifest(&String::from_utf8_lossy(&manifest.stdout))
            } else {
                Commands::default()
            }),
        )
    }

    /// The repo's checks, in a copy, so what they leave behind (caches, build output) never
    /// reaches the agent's workspace or the pull request.
    async fn checks(&self, label: &str, commands: &Commands) -> Result<Vec<Check>> {
        let copy = argv(&["sh", "-c", &format!("rm -rf {CHECK} && cp -a {REPO} {CHECK}")]);
        self.must(
            "copying the repo for its checks",
            copy,
            vec![],
            DIR,
            Duration::from_secs(120),
        )
        .await?;
        let mut out = Vec::new();
        for (name, command) in commands.list() {
            let r = self
                .run(argv(&["sh", "-c", command]), vec![], CHECK, self.o.step_timeout)
                .await?;
            tracing::info!("sweep {label}: {name} exit {:?}", r.exit_code);
            out.push(Check {
                name: name.into(),
                command: command.into(),
                exit_code: r.exit_code,
                tail: tail(&[r.stdout, r.stderr].concat()),
            });
        }
        Ok(out)
    }

    /// The model the agent talks to: the one given, or the lab's stub started in the container
    /// with the given scenario.
    async fn model_url(&self) -> Result<String> {
        match (&self.o.scenario, &self.o.model_url) {
            (_, Some(url)) => Ok(url.clone()),
            (Some(scenario), None) => {
                let text = crate::fsutil::read_input(scenario, "stub scenario", crate::fsutil::MAX_INPUT)?;
                self.backend
                    .upload(self.container, one_file_tar("tmp/sweep/scenario.yaml", text.as_bytes()))
                    .await?;
                let script = format!(
                    "({runner} lab-stub --scenario {DIR}/scenario.yaml --log {DIR}/stub.jsonl --addr-file {DIR}/stub.addr >{DIR}/stub.err 2>&1 &); \
                     for i in $(seq 200); do [ -s {DIR}/stub.addr ] && cat {DIR}/stub.addr && exit 0; sleep 0.05; done; cat {DIR}/stub.err >&2; exit 1",
                    runner = crate::engine::docker::RUNNER_PATH
                );
                let out = self
                    .must(
                        "starting the model stub",
                        argv(&["sh", "-c", &script]),
                        vec![],
                        DIR,
                        Duration::from_secs(30),
                    )
                    .await?;
                Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
            }
            (None, None) => Err(LabError::usage(
                "no model for the sweep's agent",
                "give `canary sweeps run` a --scenario (the lab's model stub) or a --model-url",
            )),
        }
    }

    /// The agent, with the build's CLI, asked to make the failing checks pass.
    async fn agent(&self, before: &[Check], model_url: &str) -> Result<crate::engine::ExecOutcome> {
        let failing: Vec<String> = before
            .iter()
            .filter(|c| !c.passed())
            .map(|c| format!("`{}` ({}) fails:\n{}", c.name, c.command, c.tail))
            .collect();
        let mut prompt = format!(
            "This repository's checks fail after a tooling update. Fix the code so they pass; change nothing else.\n\n{}",
            failing.join("\n\n")
        );
        let sweeps = &self.policy.sweeps;
        if sweeps.dependency_suggestions {
            prompt.push_str(
                "\n\nWhere a dependency pin causes a failure, update the pin in the repository's own manifest.",
            );
        }
        let approval = if sweeps.risky_actions_approved {
            "approve"
        } else {
            "none"
        };
        let o = self.o;
        let timeout = format!("{}s", o.step_timeout.as_secs().saturating_sub(5).max(5));
        let cmd = argv(&[
            crate::engine::docker::RUNNER_PATH,
            "session",
            "--provider",
            self.provider,
            "--prompt",
            &prompt,
            "--model-url",
            model_url,
            "--approval",
            approval,
            "--workspace",
            REPO,
            "--timeout",
            &timeout,
            "--codex-sandbox",
            "danger-full-access",
        ]);
        self.run(cmd, vec![], REPO, o.step_timeout + Duration::from_secs(30))
            .await
    }

    /// The paths the agent changed.
    async fn changed(&self) -> Result<Vec<String>> {
        let cmd = argv(&["git", "status", "--porcelain", "-z", "--untracked-files=all"]);
        let status = self.run(cmd, vec![], REPO, Duration::from_secs(60)).await?;
        Ok(String::from_utf8_lossy(&status.stdout)
            .split('\0')
            .filter(|e| e.len() > 3)
            .map(|e| e[3..].to_string())
            .collect())
    }

    /// The pull request: one per repo and build, found again if a lost worker opened it.
    async fn pull_request(
        &self,
        checks: (&[Check], &[Check]),
        changed: &[String],
        detail: serde_json::Value,
    ) -> Result<Done> {
        let (before, after) = checks;
        let (job, repo) = (self.job, self.repo);
        let branch = super::branch_for(&job.build_id);
        if let Some((number, url)) = existing_pr(repo, &branch).await? {
            return Ok(Done {
                outcome: SweepOutcome::PrOpened,
                reason: format!("draft PR #{number} was opened by an earlier try"),
                detail,
                pr: Some((number, url)),
            });
        }
        let body = super::pr_body(&job.build_id, self.components, before, changed, after);
        let title = format!("Canary sweep: fix {} after {}", failing_names(before), self.components);
        let mut cmd = argv(&[
            crate::engine::docker::RUNNER_PATH,
            "pr",
            "--workspace",
            REPO,
            "--remote",
            &repo.url,
            "--api-url",
            &repo.api_url,
            "--repo",
            &repo.id,
            "--branch",
            &branch,
            "--base",
            &repo.branch,
            "--title",
            &title,
            "--body",
            &body,
        ]);
        if self.policy.sweeps.auto_merge && after.iter().all(Check::passed) {
            // Enterprise policy: ready for review when every check passes. Never merged here.
            cmd.push("--ready".into());
        }
        // The same commit on every try (fixed dates), so a retry's push is the same branch tip.
        let mut env = self.git_env.clone();
        env.push(format!("GIT_AUTHOR_DATE={}", job.created_at));
        env.push(format!("GIT_COMMITTER_DATE={}", job.created_at));
        let pr = self.run(cmd, env, REPO, Duration::from_secs(300)).await?;
        let opened = String::from_utf8_lossy(&pr.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|e| e["type"] == "PR_OPENED")
            .and_then(|e| e["url"].as_str().map(String::from));
        match opened {
            Some(url) => {
                let number = url.rsplit('/').next().and_then(|n| n.parse().ok()).unwrap_or(0);
                Ok(Done {
                    outcome: SweepOutcome::PrOpened,
                    reason: format!("draft PR #{number} on {branch}"),
                    detail,
                    pr: Some((number, url)),
                })
            }
            None => Err(fail("opening the pull request", &pr)),
        }
    }

    /// The sweep: clone, checks before, the agent, what changed against the org's policy, checks
    /// after, and a pull request only when the checks improved.
    async fn sweep(&self) -> Result<Done> {
        self.clone_repo().await?;
        let commands = self.commands().await?;
        if commands.list().is_empty() {
            let why = "the repo names no lint, test or CI command (canary-repo.yaml) and none was given";
            return Ok(nothing(why.into(), serde_json::json!({})));
        }
        let before = self.checks("before", &commands).await?;
        if before.iter().all(Check::passed) {
            let detail = serde_json::json!({"before": before});
            return Ok(nothing("every check passes before any change".into(), detail));
        }
        let model_url = self.model_url().await?;
        let session = self.agent(&before, &model_url).await?;
        let changed = self.changed().await?;
        let provider = self.provider;
        let mut detail = serde_json::json!({
            "before": before, "changed": changed, "provider": provider,
            "session_exit": session.exit_code, "session_tail": tail(&session.stderr),
        });
        if changed.is_empty() {
            return Ok(nothing(format!("the agent ({provider}) changed nothing"), detail));
        }
        let refused = super::refused_paths(self.policy, &changed);
        if !refused.is_empty() {
            let paths: Vec<_> = refused.iter().map(|p| crate::text::clean(p)).collect();
            return Ok(Done {
                outcome: SweepOutcome::Dropped,
                reason: format!(
                    "the change touches path(s) org {}'s policy protects: {}; dropped, nothing pushed",
                    self.policy.org,
                    paths.join(", ")
                ),
                detail,
                pr: None,
            });
        }
        let after = self.checks("after", &commands).await?;
        detail["after"] = serde_json::to_value(&after).expect("json");
        if !super::improved(&before, &after) {
            return Ok(nothing("the agent's change did not improve the checks".into(), detail));
        }
        self.pull_request((&before, &after), &changed, detail).await
    }
}

fn failing_names(before: &[Check]) -> String {
    before
        .iter()
        .filter(|c| !c.passed())
        .map(|c| c.name.as_str())
        .collect::<Vec<_>>()
        .join(" and ")
}

fn one_file_tar(path: &str, data: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, path, data).expect("in memory");
    b.into_inner().expect("in memory")
}

/// An API answer, at most 8 MiB.
async fn body(mut r: reqwest::Response) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(chunk) = r
        .chunk()
        .await
        .map_err(|e| LabError::usage(format!("reading the forge's answer: {e}"), "is the forge reachable?"))?
    {
        if out.len() + chunk.len() > 8 << 20 {
            return Err(LabError::usage(
                "the forge's answer is larger than 8 MiB",
                "not a GitHub-API answer",
            ));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

fn http() -> Result<reqwest::Client> {
    crate::init_tls();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| LabError::usage(format!("HTTP client: {e}"), "internal"))
}

/// GET on the repo's forge API with its token (from the worker's environment); the answer's
/// bytes, bounded, or why there are none.
async fn forge_get(repo: &SweepRepo, url: &str) -> Result<Vec<u8>> {
    let mut req = http()?.get(url);
    if let Some(t) = repo.token_env.as_deref().and_then(|v| std::env::var(v).ok()) {
        req = req.bearer_auth(t);
    }
    let r = req
        .send()
        .await
        .map_err(|e| LabError::usage(format!("{url}: {e}"), "is the forge reachable?"))?;
    if !r.status().is_success() {
        return Err(LabError::usage(
            format!("{url}: {}", r.status()),
            "check the repo's token (--token-env) and API URL",
        ));
    }
    body(r).await
}

/// A pull request of `branch` in `repo`, open or closed, as its forge's API lists it.
async fn existing_pr(repo: &SweepRepo, branch: &str) -> Result<Option<(i64, String)>> {
    let owner = repo.id.split('/').next().unwrap_or("");
    let url = reqwest::Url::parse_with_params(
        &format!("{}/repos/{}/pulls", repo.api_url.trim_end_matches('/'), repo.id),
        &[("state", "all"), ("head", &format!("{owner}:{branch}"))],
    )
    .map_err(|e| LabError::usage(format!("the repo's API URL: {e}"), "check --api"))?;
    let list: Vec<serde_json::Value> = serde_json::from_slice(&forge_get(repo, url.as_str()).await?).map_err(|e| {
        LabError::usage(
            format!("listing pull requests at {url}: {e}"),
            "not a GitHub-API answer",
        )
    })?;
    Ok(list
        .iter()
        .find(|p| p["head"]["ref"] == branch)
        .and_then(|p| Some((p["number"].as_i64()?, p["html_url"].as_str()?.to_string()))))
}

/// A sweep PR's state as its forge reports it: `open`, `closed` or `merged`.
pub async fn pr_state(repo: &SweepRepo, number: i64) -> Result<String> {
    let url = format!(
        "{}/repos/{}/pulls/{number}",
        repo.api_url.trim_end_matches('/'),
        repo.id
    );
    let v: serde_json::Value = serde_json::from_slice(&forge_get(repo, &url).await?)
        .map_err(|e| LabError::usage(format!("{url}: {e}"), "not a GitHub-API answer"))?;
    Ok(if v["merged"] == true || !v["merged_at"].is_null() {
        "merged".into()
    } else {
        v["state"].as_str().unwrap_or("open").to_string()
    })
}

/// An engine sweep workers run on: its name in `engines:` (`None` for the one default
/// engine), its backend and how many workers it takes.
pub struct Lane {
    pub name: Option<String>,
    pub backend: DockerBackend,
    pub workers: usize,
}

/// The lanes of a sweep run: one per engine of `engines:` in canary.yaml (each taking its
/// `slots`, else `workers`), or the one default engine with `workers`.
pub async fn lanes(config: &crate::config::LabConfig, workers: usize) -> Result<Vec<Lane>> {
    let Some(endpoints) = crate::engines::spread(config) else {
        return Ok(vec![Lane {
            name: None,
            backend: DockerBackend::connect().await?,
            workers: workers.max(1),
        }]);
    };
    let mut lanes = Vec::new();
    for e in endpoints {
        lanes.push(Lane {
            name: Some(e.name.clone()),
            backend: DockerBackend::connect_to(e).await?,
            workers: e.slots.unwrap_or(workers).max(1),
        });
    }
    Ok(lanes)
}

/// Where a job's build comes from on an engine that lacks it: the lab's configuration (its
/// image registry) and the engine builds are made on. One engine fetches at a time, so a build
/// is pushed once.
pub struct Images<'a> {
    config: &'a crate::config::LabConfig,
    home: DockerBackend,
    one_at_a_time: tokio::sync::Mutex<()>,
}

impl<'a> Images<'a> {
    pub async fn new(config: &'a crate::config::LabConfig) -> Result<Images<'a>> {
        Ok(Images {
            config,
            home: DockerBackend::connect().await?,
            one_at_a_time: tokio::sync::Mutex::new(()),
        })
    }
}

/// Claims and runs jobs until none is due (with `drain`) or forever, on every lane at once:
/// each worker under its own name, holding its own leases. A worker whose engine goes away
/// gives its job back (the try not counted) and stops; the others take the job. `on_end` hears
/// of every job as it ends.
pub async fn run(
    lanes: &[Lane],
    images: &Images<'_>,
    reg: &Registry,
    orgs: &OrgPolicies,
    o: &WorkerOptions,
    on_end: &(dyn Fn(&Ended) + Sync),
) -> Result<Vec<Ended>> {
    let named = lanes.len() > 1 || lanes.iter().any(|l| l.workers > 1);
    let loops = lanes.iter().flat_map(|lane| {
        (0..lane.workers.max(1)).map(move |k| {
            let mut o = o.clone();
            if named {
                o.worker = match &lane.name {
                    Some(n) => format!("{}@{n}#{k}", o.worker),
                    None => format!("{}#{k}", o.worker),
                };
            }
            worker(lane, images, reg, orgs, o, on_end)
        })
    });
    let mut all = Vec::new();
    for r in futures_util::future::join_all(loops).await {
        all.extend(r?);
    }
    all.sort_by_key(|e| e.job);
    let lost: Vec<String> = all
        .iter()
        .filter(|e| e.outcome == TryEnd::Moved)
        .filter_map(|e| e.engine.clone())
        .collect();
    if o.drain && !lost.is_empty() && reg.sweeps_pending().await? > 0 {
        return Err(LabError::usage(
            format!(
                "engine(s) {} went away and no worker is left for {} queued sweep job(s)",
                lost.join(", "),
                reg.sweeps_pending().await?
            ),
            "bring the engine back (or name others in canary.yaml's engines:) and run `canary sweeps run` again",
        ));
    }
    Ok(all)
}

/// One worker's loop on its lane.
async fn worker(
    lane: &Lane,
    images: &Images<'_>,
    reg: &Registry,
    orgs: &OrgPolicies,
    o: WorkerOptions,
    on_end: &(dyn Fn(&Ended) + Sync),
) -> Result<Vec<Ended>> {
    let mut ended = Vec::new();
    loop {
        match one(lane, images, reg, orgs, &o).await? {
            Some(e) => {
                on_end(&e);
                let gone = e.outcome == TryEnd::Moved;
                ended.push(e);
                if gone {
                    return Ok(ended);
                }
            }
            // Draining ends when no job is left to end: one waiting for its retry or held by a
            // worker that may have died is waited for.
            None if o.drain && reg.sweeps_pending().await? == 0 => return Ok(ended),
            None => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

/// How long an engine may take to answer before it counts as gone.
const ALIVE_WITHIN: Duration = Duration::from_secs(5);

/// Whether the lane's engine is gone: it does not answer within [`ALIVE_WITHIN`].
async fn gone(lane: &Lane) -> bool {
    !matches!(
        tokio::time::timeout(ALIVE_WITHIN, lane.backend.describe()).await,
        Ok(Ok(_))
    )
}

/// Makes the lane's engine hold `image` (a build made elsewhere is pulled by its digest).
async fn ready(lane: &Lane, images: &Images<'_>, image: &str) -> Result<()> {
    if lane.name.is_none() {
        return Ok(());
    }
    let name = lane.name.as_deref().unwrap_or("?");
    let _one = images.one_at_a_time.lock().await;
    for line in crate::engines::ensure(images.config, &images.home, &lane.backend, name, image).await? {
        eprintln!("{line}");
    }
    Ok(())
}

/// Claims one due job and runs it to its end. `None`: nothing is due.
pub async fn one(
    lane: &Lane,
    images: &Images<'_>,
    reg: &Registry,
    orgs: &OrgPolicies,
    o: &WorkerOptions,
) -> Result<Option<Ended>> {
    let now = jiff::Timestamp::now();
    let Some(job) = reg.claim_sweep(&o.worker, o.lease, o.max_attempts, now).await? else {
        return Ok(None);
    };
    let ended = |outcome, reason, pr_url| Ended {
        job: job.id,
        repo: job.repo_id.clone(),
        org: job.org.clone(),
        build: job.build_id.clone(),
        outcome,
        reason,
        pr_url,
        engine: lane.name.clone(),
    };
    let policy = orgs.get(&job.org);
    let repo = reg.sweep_repos().await?.into_iter().find(|r| r.id == job.repo_id);
    let since = crate::registry::format_ts(now - jiff::SignedDuration::from_hours(24));
    let refusal = match &repo {
        None => Some("the repo was removed from sweeps".to_string()),
        Some(_) => super::admit(&policy, &reg.sweep_quota_counts(&job, &since).await?).err(),
    };
    let (Some(repo), None) = (repo, &refusal) else {
        let reason = refusal.unwrap_or_default();
        let skipped = SweepOutcome::Skipped;
        reg.finish_sweep(job.id, &o.worker, skipped, &reason, &serde_json::json!({}), None)
            .await?;
        return Ok(Some(ended(TryEnd::Done(skipped), reason, None)));
    };
    // The lease bounds the whole job: past it another worker may start it again.
    let limit = o
        .lease
        .saturating_sub(Duration::from_secs(5))
        .max(Duration::from_secs(5));
    let work = async {
        ready(lane, images, job.build_id.as_str()).await?;
        sweep(&lane.backend, reg, &policy, &job, &repo, o).await
    };
    let result = match tokio::time::timeout(limit, work).await {
        Ok(r) => r,
        Err(_) => Err(LabError::usage(
            format!("the sweep took longer than its lease ({:?})", o.lease),
            "raise --lease or --step-timeout",
        )),
    };
    let (outcome, reason, pr_url) = record(lane, reg, o, &job, now, result).await?;
    Ok(Some(ended(outcome, reason, pr_url)))
}

/// Records how a claimed job's try ended: done, given back (its engine went away), or retried
/// (dead after its last try).
async fn record(
    lane: &Lane,
    reg: &Registry,
    o: &WorkerOptions,
    job: &SweepJob,
    now: jiff::Timestamp,
    result: Result<Done>,
) -> Result<(TryEnd, String, Option<String>)> {
    Ok(match result {
        Err(e) if gone(lane).await => {
            // Not the repo's fault nor the build's: the job goes back, its try not counted.
            let reason = format!(
                "engine {} went away ({e}); the job goes to another worker",
                lane.name.as_deref().unwrap_or("(default)")
            );
            reg.release_sweep(job.id, &o.worker, &reason).await?;
            (TryEnd::Moved, reason, None)
        }
        Ok(mut done) => {
            if let (Some(name), Some(detail)) = (&lane.name, done.detail.as_object_mut()) {
                detail.insert("engine".into(), name.clone().into());
            }
            let pr = done.pr.as_ref().map(|(n, u)| (*n, u.as_str()));
            let kept = reg
                .finish_sweep(job.id, &o.worker, done.outcome, &done.reason, &done.detail, pr)
                .await?;
            let end = if kept { TryEnd::Done(done.outcome) } else { TryEnd::Lost };
            (end, done.reason, done.pr.map(|p| p.1))
        }
        Err(e) => {
            let reason = e.to_string();
            let next =
                now + jiff::SignedDuration::try_from(super::backoff(o.backoff, job.attempts)).unwrap_or_default();
            reg.retry_sweep(job.id, &o.worker, &reason, next, o.max_attempts)
                .await?;
            let state = reg.sweep_job(job.id).await?.map(|j| j.state);
            let end = if state == Some(JobState::Dead) {
                TryEnd::Dead
            } else {
                TryEnd::Retry
            };
            (end, reason, None)
        }
    })
}
