//! One function per subcommand.

use super::{Cli, Command};
use crate::config::LabConfig;
use crate::contract::Channel;
use crate::engine::GcScope;
use crate::engine::docker::DockerBackend;
use crate::error::{LabError, Result, exit};
use crate::lab;
use crate::lab::plan::Partition;
use crate::progress::Progress;
use crate::report::RunReport;
use crate::repos::Catalog;
use crate::view;
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Suite file(s) to run.
    #[arg(long = "suite", short = 's', required_unless_present = "resume")]
    pub suites: Vec<PathBuf>,
    /// Run again only the cases of run RUN that have no verdict (it was killed or interrupted,
    /// or a case ended in a lab error), into the same folder and report, with the same suites,
    /// repos and images.
    #[arg(long, value_name = "RUN", conflicts_with_all = ["suites", "repos", "images", "providers", "default_providers", "runner_image", "partition"])]
    pub resume: Option<String>,
    /// Only these canary repos (default: every repo each suite names).
    #[arg(long = "repo", short = 'r')]
    pub repos: Vec<String>,
    /// Image to run cases in (default: the lab's base image). Repeat it to run every case in
    /// each image: the JSON report's `matrix` then compares them (e.g. several CLI versions).
    #[arg(long = "image", conflicts_with = "providers")]
    pub images: Vec<String>,
    /// Run in the runner build of these CLIs (`--provider codex@0.163.0 --provider
    /// claude-code@latest`), built first when this engine lacks it.
    #[arg(long = "provider")]
    pub providers: Vec<String>,
    /// Run in the lab's default runner build (`providers:` in canary.yaml), built when missing.
    #[arg(long, conflicts_with_all = ["providers", "images"])]
    pub default_providers: bool,
    /// With --provider or --default-providers: build on your own runner image (it implements
    /// the Runner Contract) instead of the reference runner on the lab's base image.
    #[arg(long, conflicts_with = "images")]
    pub runner_image: Option<String>,
    /// When every case passed, promote the run's build to this channel under the gate's policy
    /// and show the channel's build (exit 1 when the gate refuses).
    #[arg(long, value_name = "CHANNEL")]
    pub promote: Option<Channel>,
    /// Cases run at once.
    #[arg(long, short = 'j', default_value_t = 1)]
    pub jobs: usize,
    /// Run only slice i of n of the cases (`--partition 2/4`), for CI matrices.
    #[arg(long)]
    pub partition: Option<String>,
    /// Print the JSON report on stdout instead of the summary table.
    #[arg(long)]
    pub json: bool,
    /// Rerun cases that did not pass up to N times; one that then passes is `flaky`.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub rerun_failed: u32,
    /// Do not record the verdicts in the known-good registry.
    #[arg(long)]
    pub no_record: bool,
}

#[derive(Args, Debug)]
pub struct ReproArgs {
    /// `<run-id>/<case-id>`, as printed by `canary run`.
    pub target: String,
    /// Leave the container running for inspection (remove it later with `canary gc --all`).
    #[arg(long)]
    pub keep: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct StubArgs {
    /// Scenario served under the key `default` (routes without `/s/<key>`).
    #[arg(long)]
    pub scenario: Option<PathBuf>,
    /// Folder of `<key>.yaml` scenarios, served under `/s/<key>/...` (a key is 1 to 128
    /// letters, digits, `.`, `_` or `-`, not starting with `.`).
    #[arg(long)]
    pub scenarios: Option<PathBuf>,
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: std::net::SocketAddr,
    /// Append every request, as a JSON line, to this file.
    #[arg(long)]
    pub log: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum ProvidersCommand {
    /// Fetch a CLI (`codex@0.163.0`, `claude-code@latest`, `claude-code@sdk-0.1.9`) and check its --version.
    Fetch {
        spec: String,
        #[arg(long)]
        json: bool,
    },
    /// Versions the package index offers for a provider's package.
    Versions { provider: String },
}

#[derive(Args, Debug)]
pub struct GcArgs {
    /// Also remove objects of runs still in progress and containers kept by `repro --keep`.
    #[arg(long)]
    pub all: bool,
    /// Also remove the lab's runner-build, layer and executor images no container uses (not the
    /// base image); they are rebuilt when next needed. Each lab version makes its own, so they pile up.
    #[arg(long)]
    pub images: bool,
    /// With --images: keep images made more recently than this.
    #[arg(long, default_value = "0s", value_parser = crate::bounds::duration(std::time::Duration::ZERO, std::time::Duration::from_secs(366 * 86_400)))]
    pub older_than: std::time::Duration,
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum EngineCommand {
    /// Run the conformance suite against the local Docker engine (the base image must exist).
    Check {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum ImagesCommand {
    /// Build a runner build: the base image, the runner, and one layer per CLI
    /// (`--provider codex@0.163.0 --provider claude-code@latest`), each CLI's --version checked
    /// inside. `--from BUILD --set codex@0.164.0` makes the same build with one component
    /// changed (`--set runner` takes the runner built beside this canary), adding one layer.
    Build {
        /// A CLI at a version; repeat it for each CLI of the build.
        #[arg(long = "provider", required_unless_present = "from", conflicts_with = "from")]
        providers: Vec<String>,
        /// The build to change (image reference or id).
        #[arg(long, requires = "set")]
        from: Option<String>,
        /// The component to change in --from.
        #[arg(long = "set", requires = "from")]
        set: Vec<String>,
        /// A runner image of your own that implements the Runner Contract (`canary-runner` on
        /// its PATH, its version in the label `canary-lab.runner-version`): the build stacks the
        /// CLIs on it instead of on the lab's base image with the reference runner.
        #[arg(long, conflicts_with = "from")]
        runner_image: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// The lab's runner builds in this engine, newest first, with their components.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Publish a runner build to an OCI registry (TLS; credentials from the Docker config or
    /// CANARY_REGISTRY_USERNAME/PASSWORD) and record the pushed reference `host/repo@sha256:…`
    /// with the build: channels, pins, rollouts, assignments and update offers carry it. Layers
    /// the registry already has are not sent again.
    Push {
        /// The build: an image this engine has, or a build id, prefix or reference the registry knows.
        build: String,
        /// The registry and repository, `HOST[:PORT]/REPOSITORY` (default: `oci_registry:` in canary.yaml).
        #[arg(long, value_name = "HOST[:PORT]/REPOSITORY")]
        to: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Take a build from the registry it was pushed to, by digest; an image that is not the
    /// recorded build is refused and removed. `canary run --image BUILD` does this by itself.
    Pull {
        /// A build id, prefix or reference the registry knows.
        build: String,
        #[arg(long)]
        json: bool,
    },
    /// Build the offline base image (Debian via debootstrap) unless it already exists.
    Base {
        /// Rebuild even when the image exists.
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum ReposCommand {
    /// List the canary repos and whether their content matches its pin.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Write each repo's current content digest into its manifest.
    Pin {
        /// Repo ids (default: all).
        ids: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum SuitesCommand {
    /// Parse and validate suite files; exit 2 on the first error.
    Check {
        files: Vec<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
pub struct SchemaArgs {
    #[arg(value_enum)]
    pub which: SchemaKind,
    /// Compare with this checked-in file instead of printing; exit 1 when it differs.
    #[arg(long)]
    pub check: Option<PathBuf>,
    /// Write to this file.
    #[arg(long, conflicts_with = "check")]
    pub write: Option<PathBuf>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum SchemaKind {
    Suite,
    Report,
}

impl Command {
    pub fn json(&self) -> bool {
        match self {
            Command::Run(a) => a.json,
            Command::Repro(a) => a.json,
            Command::Gc(a) => a.json,
            Command::Images(ImagesCommand::Base { json, .. }) => *json,
            Command::Images(ImagesCommand::Build { json, .. }) => *json,
            Command::Images(ImagesCommand::Push { json, .. }) => *json,
            Command::Images(ImagesCommand::Pull { json, .. }) => *json,
            Command::Repos(ReposCommand::List { json }) => *json,
            Command::Suites(SuitesCommand::Check { json, .. }) => *json,
            Command::Promote(a) => a.json,
            Command::Pin(a) => a.json,
            Command::Rollback(a) => a.json,
            Command::Status(a) => a.json,
            Command::Drift(a) => a.json,
            Command::Matrix(a) => a.json,
            Command::Bisect(a) => a.json,
            Command::Compat(super::gate::CompatCommand::Check { json, .. }) => *json,
            Command::Watch(a) => a.json,
            Command::Pipeline(a) => a.json,
            Command::Heartbeat(a) => a.json,
            // Every other command's flag is spelled the same way.
            _ => super::json_requested(std::env::args_os()),
        }
    }
}

fn config(cli: &Cli) -> Result<LabConfig> {
    let mut c = LabConfig::load(cli.config.as_deref())?;
    if let Some(d) = &cli.repos_dir {
        c.repos_dir = d.clone();
    }
    if let Some(d) = &cli.reports_dir {
        c.reports_dir = d.clone();
    }
    if let Some(r) = &cli.registry {
        c.registry = r.clone();
    }
    if let Some(name) = &cli.engine {
        crate::engine::endpoint::select(&c.engines, name)?;
    }
    Ok(c)
}

/// How a printed repro line starts, with the global flags this command was given.
fn repro_prefix(cli: &Cli) -> String {
    crate::lab::repro::prefix(cli.config.as_deref(), cli.reports_dir.as_deref())
}

/// `--provider` values as specs: each parsed, no CLI twice.
fn print_json(value: &impl serde::Serialize) {
    outln!("{}", serde_json::to_string_pretty(value).expect("serializable"));
}

/// A value as JSON, or its view's lines.
pub(super) fn print_view(json: bool, value: &impl serde::Serialize, lines: Vec<String>) {
    if json {
        print_json(value);
    } else {
        for line in lines {
            outln!("{line}");
        }
    }
}

/// A value as JSON, or its view's lines; exit 0.
pub(super) fn show(json: bool, value: &impl serde::Serialize, lines: Vec<String>) -> Result<i32> {
    print_view(json, value, lines);
    Ok(exit::PASS)
}

pub async fn dispatch(cli: Cli) -> Result<i32> {
    let config = config(&cli)?;
    match &cli.command {
        Command::Run(a) => run(&cli, &config, a).await,
        Command::Watch(a) => super::upstream::watch(&config, a).await,
        Command::Pipeline(a) => super::upstream::pipeline(&repro_prefix(&cli), &config, a).await,
        Command::Heartbeat(a) => super::upstream::heartbeat(&config, a).await,
        Command::Serve(a) => super::upstream::serve(&config, a).await,
        Command::Rollout(c) => super::fleet::rollout(&config, c).await,
        Command::Tokens(c) => super::fleet::tokens(&config, c).await,
        Command::Keys(c) => super::fleet::keys(c).await,
        Command::Sweeps(c) => super::sweeps::sweeps(&config, c).await,
        Command::Freeze(a) => super::fleet::freeze(&config, a, true).await,
        Command::Unfreeze(a) => super::fleet::freeze(&config, a, false).await,
        Command::Kpis(a) => super::fleet::kpis(&config, a).await,
        Command::Fleet(c) => super::fleet::fleet(&config, c).await,
        Command::Repro(a) => repro(&cli, &config, a).await,
        Command::Gc(a) => gc(&config, a).await,
        Command::Engine(EngineCommand::Check { json }) => engine_check(&config, *json).await,
        Command::Images(c) => images(&config, c).await,
        Command::Repos(c) => repos(&config, c),
        Command::Suites(c) => suites(&config, c),
        Command::Schema(a) => schema(a),
        Command::Registry(c) => super::registry::registry(&config, c).await,
        Command::Promote(a) => super::gate::promote(&config, a).await,
        Command::Pin(a) => super::gate::pin(&config, a).await,
        Command::Rollback(a) => super::gate::rollback(&config, a).await,
        Command::Status(a) => super::gate::status(&config, a).await,
        Command::Compat(c) => super::gate::compat_check(&config, c).await,
        Command::Drift(a) => super::gate::drift(&config, a).await,
        Command::Matrix(a) => super::matrix::matrix(&repro_prefix(&cli), &config, a).await,
        Command::Bisect(a) => super::matrix::bisect(&repro_prefix(&cli), &config, a).await,
        Command::Stub(a) => stub(a).await,
        Command::Providers(c) => providers(&config, c).await,
    }
}

/// `canary images`: the base image, runner builds, the builds in the engine.
async fn images(config: &LabConfig, c: &ImagesCommand) -> Result<i32> {
    match c {
        ImagesCommand::Base { force, json } => {
            let engine = DockerBackend::connect().await?;
            let progress = Progress::new(false);
            let img = crate::images::ensure_base(&engine, &config.lab(), *force, &progress).await?;
            show(*json, &img, view::base_image(&img))
        }
        ImagesCommand::Build {
            providers,
            from,
            set,
            runner_image,
            json,
        } => {
            let recipe = crate::builds::Recipe::from_flags(providers, from.as_deref(), set, runner_image.as_deref())?;
            let engine = DockerBackend::connect().await?;
            let build = crate::builds::make(&engine, &config.lab(), &recipe, &Progress::new(false)).await?;
            show(*json, &build, view::build(&build))
        }
        ImagesCommand::Push { build, to, json } => {
            let p = crate::publish::push(config, build, to.as_deref()).await?;
            show(*json, &p, view::published(&p))
        }
        ImagesCommand::Pull { build, json } => {
            let p = crate::publish::pull(config, build).await?;
            show(*json, &p, vec![crate::publish::pulled_line(&p)])
        }
        ImagesCommand::List { json } => {
            let engine = DockerBackend::connect().await?;
            let builds = crate::builds::list(&engine).await?;
            show(*json, &view::builds_json(&builds), view::builds(&builds))
        }
    }
}

/// `canary repos`: list the canary repos, or pin their content digests.
fn repos(config: &LabConfig, c: &ReposCommand) -> Result<i32> {
    match c {
        ReposCommand::List { json } => repos_list(config, *json),
        ReposCommand::Pin { ids } => {
            let catalog = Catalog::load(&config.repos_dir, &config.cache_dir)?;
            catalog.pin_all(ids, |line| outln!("{line}"))?;
            Ok(exit::PASS)
        }
    }
}

/// `canary suites check`.
fn suites(config: &LabConfig, c: &SuitesCommand) -> Result<i32> {
    match c {
        SuitesCommand::Check { files, json } => {
            let catalog = Catalog::load(&config.repos_dir, &config.cache_dir)?;
            let checked = crate::suite::check_files(files, &catalog)?;
            show(*json, &checked, view::suites(&checked))
        }
    }
}

/// `canary providers`: fetch a CLI into the cache, list its versions.
async fn providers(config: &LabConfig, c: &ProvidersCommand) -> Result<i32> {
    match c {
        ProvidersCommand::Fetch { spec, json } => {
            let spec: crate::providers::ProviderSpec = spec.parse()?;
            let cache = config.cache_dir.clone();
            let fetched = tokio::task::spawn_blocking(move || crate::providers::fetch(&spec, &cache))
                .await
                .expect("fetch task")?;
            let version = crate::providers::verify_version(&fetched.binary, &fetched.cli_version)?;
            show(*json, &fetched, view::fetched(&fetched, &version))
        }
        ProvidersCommand::Versions { provider } => {
            let spec: crate::providers::ProviderSpec = format!("{provider}@latest").parse()?;
            let package = spec.provider.package().expect("pip package");
            for v in crate::providers::available_versions(package)? {
                outln!("{v}");
            }
            Ok(exit::PASS)
        }
    }
}

async fn run(cli: &Cli, config: &LabConfig, a: &RunArgs) -> Result<i32> {
    let progress = Progress::new(false);
    let ran = match &a.resume {
        Some(run_id) => crate::run::resume(config, run_id, repro_prefix(cli), &progress).await?,
        None => crate::run::run(config, request(cli, config, a)?, &progress).await?,
    };
    let mut code = finish(&ran.report, &ran.run_dir, a.json)?;
    if let Some((reg, added)) = &ran.recorded {
        let builds: Vec<&str> = ran.report.images.iter().map(|i| lab::short_id(&i.id)).collect();
        progress.line(format!(
            "recorded {added} results for build {} in {}",
            builds.join(", "),
            reg.display
        ));
        if let (Some(channel), exit::PASS) = (&a.promote, code) {
            let (decisions, source) = crate::run::promote(config, reg, &ran.report, channel).await?;
            code = promoted(reg, (channel, &source), &decisions, a.json).await?;
        }
    }
    Ok(code)
}

/// The run a `canary run` command line asks for, checked before anything runs.
fn request(cli: &Cli, config: &LabConfig, a: &RunArgs) -> Result<crate::run::Request> {
    let specs = if a.default_providers {
        config.default_specs()?
    } else {
        crate::builds::parse_specs(&a.providers)?
    };
    let request = crate::run::Request {
        suites: a.suites.clone(),
        repos: a.repos.clone(),
        partition: a.partition.as_deref().map(str::parse::<Partition>).transpose()?,
        jobs: a.jobs,
        specs,
        runner_image: a.runner_image.clone(),
        images: a.images.clone(),
        record: !a.no_record,
        rerun_failed: a.rerun_failed,
        repro_prefix: repro_prefix(cli),
    };
    crate::run::check(&request, a.promote.is_some())?;
    Ok(request)
}

/// Says what `run --promote` decided, then which build the channel runs (on stderr under
/// --json, whose stdout is the report).
async fn promoted(
    reg: &crate::registry::Registry,
    (channel, source): (&canary_contract::Channel, &str),
    decisions: &[crate::gate::Decision],
    json: bool,
) -> Result<i32> {
    for line in crate::run::promoted_lines(reg, (channel, source), decisions).await? {
        if json {
            eprintln!("{line}");
        } else {
            outln!("{line}");
        }
    }
    Ok(if decisions.iter().all(|d| d.allowed) {
        exit::PASS
    } else {
        exit::FAILED
    })
}

fn finish(report: &RunReport, run_dir: &std::path::Path, json: bool) -> Result<i32> {
    if json {
        print_json(report);
    } else {
        let text = crate::report::terminal::render(report, run_dir);
        outln!("{}", text.strip_suffix('\n').unwrap_or(&text));
    }
    Ok(report.exit_code())
}

async fn repro(cli: &Cli, config: &LabConfig, a: &ReproArgs) -> Result<i32> {
    let progress = Progress::new(false);
    let r = lab::repro::rerun(&config.lab(), &a.target, a.keep, repro_prefix(cli), &progress).await?;
    let code = finish(&r.report, &r.run_dir, a.json)?;
    if let Some(name) = r.kept {
        eprintln!(
            "\nThe container is still running. Enter it with:\n  docker exec -it -w /work {name} bash\nRemove it with:\n  docker rm -f {name}   (or `canary gc --all`)"
        );
    }
    Ok(code)
}

async fn stub(a: &StubArgs) -> Result<i32> {
    let stub = crate::stub::Stub::new(a.scenarios.clone(), a.log.clone());
    if let Some(path) = &a.scenario {
        stub.insert("default", crate::stub::Scenario::read(path)?);
    }
    let (addr, server) = stub.serve(a.listen).await?;
    // The first line is for scripts: they read the address from it.
    outln!("http://{addr}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = server => {}
    }
    Ok(exit::PASS)
}

async fn gc(config: &LabConfig, a: &GcArgs) -> Result<i32> {
    let scope = if a.all { GcScope::All } else { GcScope::Orphaned };
    let cleaned = crate::engines::gc(config, scope, a.images.then_some(a.older_than)).await?;
    print_view(a.json, &cleaned.value, cleaned.lines);
    Ok(if cleaned.unreachable { exit::ERROR } else { exit::PASS })
}

async fn engine_check(config: &LabConfig, json: bool) -> Result<i32> {
    let image = crate::images::base_reference(&config.lab());
    let r = crate::engine::conformance::check_docker(&image).await?;
    print_view(json, &r, view::conformance(&r));
    Ok(if r.passed() { exit::PASS } else { exit::FAILED })
}

fn repos_list(config: &LabConfig, json: bool) -> Result<i32> {
    let rows = Catalog::load(&config.repos_dir, &config.cache_dir)?.statuses()?;
    show(json, &rows, view::repos(&rows))?;
    Ok(if rows.iter().all(|r| r.pinned) {
        exit::PASS
    } else {
        exit::FAILED
    })
}

fn schema(a: &SchemaArgs) -> Result<i32> {
    let (text, which) = match a.which {
        SchemaKind::Suite => (crate::suite::json_schema(), "suite"),
        SchemaKind::Report => (crate::report::json_schema(), "report"),
    };
    if let Some(path) = &a.check {
        let current = std::fs::read_to_string(path).map_err(|e| LabError::read(path, e))?;
        if current != text {
            eprintln!(
                "{} is out of date: regenerate it with `canary schema {which} --write {}`",
                path.display(),
                path.display()
            );
            return Ok(exit::FAILED);
        }
        outln!("{} is up to date", path.display());
    } else if let Some(path) = &a.write {
        crate::fsutil::write_atomic(path, text.as_bytes())?;
    } else {
        outln!("{}", text.strip_suffix('\n').unwrap_or(&text));
    }
    Ok(exit::PASS)
}
