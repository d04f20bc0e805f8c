//! `canary sweeps`: opted-in repos, the sweep queue's workers, its status and the PR acceptance
//! KPI. Exit codes: 0 done, 1 a job ended dead or a repo was not found, 2 error.

use super::commands::{print_view, show};
use super::registry::{Who, open, open_read, print_json};
use crate::config::LabConfig;
use crate::error::{LabError, Result, exit};
use crate::sweeps::Commands;
use crate::sweeps::opt_in;
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum SweepsCommand {
    /// The repos orgs opted in to sweeps.
    #[command(subcommand)]
    Repos(ReposCommand),
    /// Work the queue: claim due jobs (with a lease), sweep each in a container of its build,
    /// end each as done, retried with backoff or dead. Stops when nothing is due unless --watch.
    Run(RunArgs),
    /// The queue: every job with its state, outcome and reason.
    Status {
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// Enqueue sweeps for a build by hand (a promotion to stable does it itself).
    Enqueue {
        /// Build: digest, digest prefix or image reference.
        build: String,
        #[arg(long)]
        json: bool,
    },
    /// Sweep PR acceptance: opened, merged, closed unmerged and still open, per org and per
    /// build, read back from each repo's forge.
    Kpis {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum ReposCommand {
    /// Opt a repo in: a git remote (https, http, ssh, git) on GitHub, GitHub Enterprise or any
    /// smart-HTTP forge with GitHub's pull-request API.
    Add {
        url: String,
        #[arg(long)]
        org: String,
        #[arg(long, default_value = "main")]
        branch: String,
        /// The forge's REST API base (default: the remote's origin).
        #[arg(long)]
        api: Option<String>,
        /// Environment variable holding the forge token (read by the worker, never stored).
        #[arg(long)]
        token_env: Option<String>,
        /// Commands (default: `lint`, `test`, `ci` from the repo's canary-repo.yaml).
        #[arg(long)]
        lint: Option<String>,
        #[arg(long)]
        test: Option<String>,
        #[arg(long)]
        ci: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        who: Who,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    /// Opt a repo out (its queued jobs go; finished ones stay for the KPIs).
    Remove {
        /// `owner/name`, as `list` shows it.
        id: String,
        #[command(flatten)]
        who: Who,
    },
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Workers claiming jobs at once.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// This worker's name in the queue (default: host and process id).
    #[arg(long)]
    pub worker: Option<String>,
    /// How long a claimed job is this worker's; a job whose worker died is taken again after it.
    #[arg(long, default_value = "20m", value_parser = crate::bounds::duration(std::time::Duration::from_secs(10), std::time::Duration::from_secs(86_400)))]
    pub lease: std::time::Duration,
    /// Tries before a job is dead (with the last reason).
    #[arg(long, default_value_t = 3)]
    pub max_attempts: i64,
    /// Wait before the first retry; doubled for each further one.
    #[arg(long, default_value = "30s", value_parser = crate::bounds::duration(std::time::Duration::ZERO, std::time::Duration::from_secs(86_400)))]
    pub backoff: std::time::Duration,
    /// Docker network of the sweep containers (it must reach the repos' remotes).
    #[arg(long, default_value = "bridge")]
    pub network: String,
    /// Lab: the model stub's scenario for the agent.
    #[arg(long, conflicts_with = "model_url")]
    pub scenario: Option<PathBuf>,
    /// A real model endpoint for the agent.
    #[arg(long)]
    pub model_url: Option<String>,
    /// Most time for each check command and for the agent session.
    #[arg(long, default_value = "10m", value_parser = crate::bounds::duration(std::time::Duration::from_secs(1), std::time::Duration::from_secs(86_400)))]
    pub step_timeout: std::time::Duration,
    /// Keep waiting for jobs instead of stopping when none is due.
    #[arg(long)]
    pub watch: bool,
    #[arg(long)]
    pub json: bool,
}

pub async fn sweeps(config: &LabConfig, cmd: &SweepsCommand) -> Result<i32> {
    match cmd {
        SweepsCommand::Repos(c) => repos(config, c).await,
        SweepsCommand::Run(a) => run(config, a).await,
        SweepsCommand::Status { limit, json } => {
            let reg = open_read(config).await?;
            let jobs = reg.sweep_jobs((*limit).clamp(1, 10_000)).await?;
            if *json {
                print_json(&jobs);
            } else if jobs.is_empty() {
                outln!("no sweep jobs (a promotion to stable enqueues one per opted-in repo)");
            } else {
                for j in &jobs {
                    outln!(
                        "#{} {} ({}) build {}: {}{} — {}{}",
                        j.id,
                        crate::text::clean(&j.repo_id),
                        crate::text::clean(&j.org),
                        super::registry::short(&j.build_id),
                        j.state,
                        j.outcome.map(|o| format!(" {o}")).unwrap_or_default(),
                        crate::text::clean(j.reason.as_deref().unwrap_or("")),
                        j.pr_url
                            .as_deref()
                            .map(|u| format!(" {}", crate::text::clean(u)))
                            .unwrap_or_default(),
                    );
                }
            }
            Ok(exit::PASS)
        }
        SweepsCommand::Enqueue { build, json } => {
            let reg = open(config).await?;
            let id = reg.resolve_build(build).await?;
            let n = reg.enqueue_sweeps(&id).await?;
            if *json {
                print_json(&serde_json::json!({"build": id, "enqueued": n}));
            } else {
                outln!("{n} sweep job(s) enqueued for build {id}");
            }
            Ok(exit::PASS)
        }
        SweepsCommand::Kpis { json } => kpis(config, *json).await,
    }
}

async fn repos(config: &LabConfig, cmd: &ReposCommand) -> Result<i32> {
    match cmd {
        ReposCommand::Add {
            url,
            org,
            branch,
            api,
            token_env,
            lint,
            test,
            ci,
            json,
            who,
        } => {
            let repo = opt_in::repo(&opt_in::OptIn {
                url,
                org,
                branch,
                api: api.as_deref(),
                token_env: token_env.as_deref(),
                commands: Commands {
                    lint: lint.clone(),
                    test: test.clone(),
                    ci: ci.clone(),
                },
            })?;
            let reg = open(config).await?;
            let who = who.acting();
            opt_in::add(&reg, &repo, who).await?;
            let line = format!("{} ({org}, {branch}) opted in to sweeps", repo.id);
            show(*json, &repo, vec![line])
        }
        ReposCommand::List { json } => {
            let all = open_read(config).await?.sweep_repos().await?;
            show(*json, &all, opt_in::lines(&all))
        }
        ReposCommand::Remove { id, who } => {
            let reg = open(config).await?;
            let who = who.acting();
            let removed = opt_in::remove(&reg, id, who).await?;
            if removed {
                outln!("{} opted out of sweeps", crate::text::clean(id));
                Ok(exit::PASS)
            } else {
                eprintln!("no opted-in repo {}", crate::text::clean(id));
                Ok(exit::FAILED)
            }
        }
    }
}

async fn run(config: &LabConfig, a: &RunArgs) -> Result<i32> {
    let orgs = crate::orgs::OrgPolicies::load(&config.orgs_dir)?;
    if let Some(url) = a.model_url.as_deref().filter(|u| !crate::config::is_http_url(u)) {
        return Err(LabError::usage(
            format!("--model-url `{}` is not an http(s) URL", crate::text::clean(url)),
            "give the model endpoint the CLIs should call",
        ));
    }
    let reg = open(config).await?;
    let lanes = crate::sweeps::job::lanes(config, a.workers).await?;
    let images = crate::sweeps::job::Images::new(config).await?;
    let o = crate::sweeps::job::WorkerOptions {
        worker: a
            .worker
            .clone()
            .unwrap_or_else(|| format!("{}:{}", crate::engine::hostname(), std::process::id())),
        lease: a.lease,
        max_attempts: a.max_attempts.max(1),
        backoff: a.backoff,
        network: a.network.clone(),
        scenario: a.scenario.clone(),
        model_url: a.model_url.clone(),
        step_timeout: a.step_timeout,
        drain: !a.watch,
    };
    let quiet = a.json;
    let ended = crate::sweeps::job::run(&lanes, &images, &reg, &orgs, &o, &|e| {
        if !quiet {
            eprintln!("{e}");
        }
    })
    .await?;
    if a.json {
        print_json(&ended);
    } else {
        outln!("{} sweep job(s) ended", ended.len());
    }
    Ok(if ended.iter().any(|e| e.outcome == crate::sweeps::job::TryEnd::Dead) {
        exit::FAILED
    } else {
        exit::PASS
    })
}

async fn kpis(config: &LabConfig, json: bool) -> Result<i32> {
    let reg = open(config).await?;
    let a = crate::sweeps::opt_in::acceptance(&reg).await?;
    print_view(json, &a.to_json(), a.lines());
    if !json {
        for u in &a.unreadable {
            eprintln!("could not read {}", crate::text::clean(u));
        }
    }
    Ok(exit::PASS)
}
