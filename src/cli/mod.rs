//! The `canary` command line. Parsing, output and exit codes live here; the work is done by
//! the library modules. [`main`] is the one place that maps outcomes to exit codes.

/// `println!` for the command line's stdout. A reader that goes away (`canary status --json |
/// head -c 10`) ends the output, never the process: the command still finishes and exits with
/// its own code, where `println!` would panic.
macro_rules! outln {
    ($($arg:tt)*) => { $crate::cli::out(format_args!($($arg)*)) };
}

static STDOUT_CLOSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[doc(hidden)]
pub fn out(args: std::fmt::Arguments) {
    use std::io::Write;
    use std::sync::atomic::Ordering;
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut stdout = std::io::stdout().lock();
    if stdout.write_fmt(args).and_then(|()| stdout.write_all(b"\n")).is_err() {
        STDOUT_CLOSED.store(true, Ordering::Relaxed);
    }
}

mod commands;
mod fleet;
mod gate;
mod matrix;
mod registry;
mod sweeps;
mod upstream;

use crate::error::{LabError, exit};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::path::PathBuf;

const EXIT_CODES: &str = "Exit codes:\n  0  everything passed / the command did what it was asked\n  1  a case failed or timed out (the verdict is \"not good\")\n  2  the lab could not run: bad input, Docker unreachable, image missing, interrupted";

#[derive(Parser, Debug)]
#[command(name = "canary", version, about = "Compatibility lab and canary harness for AI coding-agent CLIs", after_help = EXIT_CODES)]
pub struct Cli {
    /// Lab config file (default: ./canary.yaml when present).
    #[arg(long, global = true, env = "CANARY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Folder of canary repos (overrides the lab config).
    #[arg(long, global = true)]
    pub repos_dir: Option<PathBuf>,
    /// Folder run reports are written to (overrides the lab config).
    #[arg(long, global = true)]
    pub reports_dir: Option<PathBuf>,
    /// Known-good registry: a SQLite file path or a postgres:// URL (default .canary/registry.db).
    #[arg(long, global = true, env = "CANARY_REGISTRY")]
    pub registry: Option<String>,
    /// The Docker engine to use, by its name in canary.yaml's `engines:` (default: DOCKER_HOST
    /// or the local socket).
    #[arg(long, global = true, env = "CANARY_ENGINE", value_name = "NAME")]
    pub engine: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run canary suites against canary repos in containers.
    Run(commands::RunArgs),
    /// Re-run one case of an earlier run with the same image, repo content and suite.
    Repro(commands::ReproArgs),
    /// Remove containers and networks that crashed runs left behind.
    Gc(commands::GcArgs),
    /// The lab's container engine against the backend conformance suite: large stdin and
    /// output, output limits, deadlines that kill, resource limits, uploads, no egress from a lab
    /// network, gc (exit 1 when a check fails).
    #[command(subcommand)]
    Engine(commands::EngineCommand),
    /// Build or show the lab's images.
    #[command(subcommand)]
    Images(commands::ImagesCommand),
    /// List, verify and pin the canary repos.
    #[command(subcommand)]
    Repos(commands::ReposCommand),
    /// Validate suite files without running them.
    #[command(subcommand)]
    Suites(commands::SuitesCommand),
    /// Print or check the generated JSON Schemas (suite format, JSON report).
    Schema(commands::SchemaArgs),
    /// Query the known-good registry.
    #[command(subcommand)]
    Registry(registry::RegistryCommand),
    /// Promote a build to a channel if the gate's policy is met (exit 1 when blocked).
    Promote(gate::PromoteArgs),
    /// Pin an org to a build (by digest) or make it follow a channel.
    Pin(gate::PinArgs),
    /// Switch an org or channel back to its previous known-good build.
    Rollback(gate::RollbackArgs),
    /// What each channel and org runs, since when, and what is available.
    Status(gate::StatusArgs),
    /// What changed in a build's CLI output and flags: its recorded inventory against its
    /// adapters' contracts and another build's (exit 0 no drift, 1 drift, 2 error).
    Drift(gate::DriftArgs),
    /// A suite (golden-path) across upstream versions of one CLI, one build each, in one run:
    /// the matrix as JSON, Markdown and HTML (exit 0 every version passed, 1 one did not).
    Matrix(matrix::MatrixArgs),
    /// The first bad upstream version between a good and a bad one, in about log2(n) judged
    /// versions; `--hold CHANNEL` releases the last good one's build to a channel.
    Bisect(matrix::BisectArgs),
    /// Bundle ↔ runtime compatibility (runtime_compatibility in a bundle manifest).
    #[command(subcommand)]
    Compat(gate::CompatCommand),
    /// Serve the scripted model stub (OpenAI Responses, Anthropic Messages, Gemini) until Ctrl-C.
    Stub(commands::StubArgs),
    /// Fetch real agent CLIs at exact versions into the lab's cache.
    #[command(subcommand)]
    Providers(commands::ProvidersCommand),
    /// What is new upstream (PyPI, npm, GitHub releases) under the lab's candidate policy; records
    /// new versions. Exit 0 when something is new, 1 when nothing is, 2 on error.
    Watch(upstream::WatchArgs),
    /// Watch, build each new candidate's image, run the canary suites, record, promote green
    /// ones to beta, notify. Idempotent. Exit 0 all green / nothing to do, 1 blocked, 2 error.
    Pipeline(upstream::PipelineArgs),
    /// Record a deployed runner's heartbeat from a file (`-` for stdin).
    Heartbeat(upstream::HeartbeatArgs),
    /// The control plane: runner endpoints (assignment, telemetry, heartbeats; bearer tokens),
    /// the rollout controller, status and the dashboard, over HTTP.
    Serve(upstream::ServeArgs),
    /// Staged rollouts of a build to a channel, judged on live session telemetry.
    #[command(subcommand)]
    Rollout(fleet::RolloutCommand),
    /// Runner bearer tokens for `canary serve`'s runner endpoints.
    #[command(subcommand)]
    Tokens(fleet::TokensCommand),
    /// Signing keys for the build manifests offered to customer-hosted runners.
    #[command(subcommand)]
    Keys(fleet::KeysCommand),
    /// Post-update repo sweeps: opted-in repos re-checked after a promotion to stable, fixes
    /// proposed as draft PRs under each org's policy (orgs/ORG.yaml).
    #[command(subcommand)]
    Sweeps(sweeps::SweepsCommand),
    /// Keep an org out of every rollout (its sessions run the channel's current build).
    Freeze(fleet::FreezeArgs),
    /// Let a frozen org take part in rollouts again.
    Unfreeze(fleet::FreezeArgs),
    /// Session KPIs of builds from live telemetry: start success, time to terminal, disconnects,
    /// command failures, approval gates, cost per agent-hour.
    Kpis(fleet::KpisArgs),
    /// A simulated fleet for rollout statistics and load.
    #[command(subcommand)]
    Fleet(fleet::FleetCommand),
}

/// `canary --help` lists the commands by the job they belong to, in the order a build moves:
/// the lab, the release side, the fleet and its control plane, customer-hosted runners, tools.
/// Every subcommand is in exactly one group (a test holds that).
const GROUPS: &[(&str, &[&str])] = &[
    (
        "Lab: run canaries",
        &["run", "repro", "gc", "engine", "images", "repos", "suites", "providers"],
    ),
    (
        "Release: judge and move builds",
        &[
            "watch", "pipeline", "promote", "pin", "rollback", "status", "registry", "drift", "matrix", "bisect",
            "compat",
        ],
    ),
    (
        "Fleet and control plane",
        &[
            "serve",
            "rollout",
            "freeze",
            "unfreeze",
            "kpis",
            "tokens",
            "heartbeat",
            "sweeps",
            "fleet",
        ],
    ),
    ("Customer-hosted runners", &["keys"]),
    ("Tools", &["schema", "stub"]),
];

/// The command line's definition, with its commands listed by [`GROUPS`] in `--help`.
pub fn command() -> clap::Command {
    let cmd = Cli::command();
    let width = cmd.get_subcommands().map(|c| c.get_name().len()).max().unwrap_or(0) + 2;
    let mut listing = String::new();
    for (heading, names) in GROUPS {
        listing.push_str(&format!("{heading}:\n"));
        for name in *names {
            let about = cmd
                .find_subcommand(name)
                .and_then(|c| c.get_about())
                .map(|a| a.to_string())
                .unwrap_or_default();
            listing.push_str(&format!("  {name:<width$}{}\n", summary(&about, 90)));
        }
        listing.push('\n');
    }
    let template = format!(
        "{{before-help}}{{about-with-newline}}\n{{usage-heading}} {{usage}}\n\n{listing}Options:\n{{options}}{{after-help}}"
    );
    cmd.help_template(template)
}

/// A command's description as one line of the listing: its first sentence, cut at a word
/// boundary when it is still longer than `max` characters (`canary CMD --help` has the rest).
fn summary(about: &str, max: usize) -> String {
    let first = about.split(". ").next().unwrap_or_default().trim_end_matches('.');
    if first.chars().count() <= max {
        return first.to_string();
    }
    let mut out = String::new();
    for word in first.split(' ') {
        if out.chars().count() + word.chars().count() + 1 > max - 1 {
            break;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out.trim_end_matches([',', ';', '(']).to_string() + "…"
}

/// Runs the command line and returns the process exit code.
pub fn main() -> i32 {
    let parsed = command().try_get_matches().and_then(|m| Cli::from_arg_matches(&m));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => {
            if e.use_stderr() && json_requested(std::env::args_os()) {
                // A CI job that asked for JSON gets an object even when the arguments are wrong.
                let rendered = e.render().to_string();
                let message = rendered
                    .lines()
                    .next()
                    .unwrap_or("invalid arguments")
                    .trim_start_matches("error: ")
                    .to_string();
                let usage = rendered.lines().find(|l| l.starts_with("Usage:")).map(str::to_string);
                let help = usage.map_or_else(|| "see `canary --help`".to_string(), |u| format!("{u} (see --help)"));
                outln!("{}", LabError::usage(crate::text::clean(&message), help).to_json());
            }
            let _ = e.print();
            return if e.use_stderr() { exit::ERROR } else { exit::PASS };
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("CANARY_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    // Logs are read by grep as much as by people: one message, one line, when not on a terminal.
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = miette::set_hook(Box::new(move |_| {
        Box::new(miette::MietteHandlerOpts::new().wrap_lines(tty).build())
    }));
    let json = cli.command.json();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(commands::dispatch(cli)) {
        Ok(code) => code,
        Err(e) => report_error(e, json),
    }
}

/// Whether the command line asks for JSON output (`--json` before any `--`).
pub(crate) fn json_requested(args: impl IntoIterator<Item = std::ffi::OsString>) -> bool {
    args.into_iter()
        .skip(1)
        .take_while(|a| a != "--")
        .any(|a| a == "--json")
}

/// Renders an error once: a diagnostic with source snippet on stderr, and with `--json` also a
/// machine-readable object on stdout.
fn report_error(e: LabError, json: bool) -> i32 {
    let code = e.exit_code();
    if json {
        outln!("{}", e.to_json());
    }
    eprintln!("{:?}", miette::Report::new(e));
    code
}

#[cfg(test)]
mod tests {
    use super::{GROUPS, command};

    #[test]
    fn every_command_is_listed_once_under_its_job() {
        let cmd = command();
        let all: Vec<&str> = cmd
            .get_subcommands()
            .map(|c| c.get_name())
            .filter(|n| *n != "help")
            .collect();
        for name in &all {
            let n = GROUPS.iter().filter(|(_, names)| names.contains(name)).count();
            assert_eq!(n, 1, "`canary {name}` is in {n} groups of `canary --help`");
        }
        for (heading, names) in GROUPS {
            for name in *names {
                assert!(all.contains(name), "{heading}: `{name}` is no command");
            }
        }
        let help = command().render_help().to_string();
        assert!(help.contains("Release: judge and move builds:\n  watch"), "{help}");
        assert!(help.contains("Options:\n"), "{help}");
        assert!(!help.contains("Commands:"), "the ungrouped list is gone: {help}");
        let listing = help.split("Options:").next().unwrap();
        let long: Vec<&str> = listing.lines().filter(|l| l.chars().count() > 110).collect();
        assert!(long.is_empty(), "one short line per command: {long:?}");
        assert!(help.contains("Exit codes:"), "{help}");
    }
}
