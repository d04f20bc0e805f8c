//! `canary-runner`: the reference implementation of the Runner Contract (docs/runner-contract.md).
//! It lives in runner images beside the agent CLI; the lab drives it inside case containers.

use canary_lab::providers::Provider;
use canary_lab::runner::events::Event;
use canary_lab::runner::pr::{self, PrArgs};
use canary_lab::runner::proxy::Approval;
use canary_lab::runner::session::{self, SessionArgs};
use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "canary-runner",
    version,
    about = "Reference runner: drives one agent CLI and writes Runner Contract events"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Lab tool carried in runner images: serve the scripted model stub on this container's
    /// loopback (the lab starts it for a case; it is not part of the contract).
    LabStub {
        #[arg(long)]
        scenario: PathBuf,
        #[arg(long)]
        log: PathBuf,
        /// File that receives the stub's URL once it listens.
        #[arg(long)]
        addr_file: PathBuf,
    },
    /// Lab tool carried in runner images: serve the lab forge (bare git remotes over HTTP and
    /// the pull-request API) from `--root`; the lab starts it in its own container.
    LabForge {
        #[arg(long, default_value = "0.0.0.0:8080")]
        listen: std::net::SocketAddr,
        #[arg(long)]
        root: PathBuf,
        /// The URL clients reach the forge at (put into API answers).
        #[arg(long)]
        public_url: Option<String>,
    },
    /// Propose the workspace's changes: commit them on `--branch` (HEAD and the index stay as
    /// they are), push the branch and open a draft pull request through the GitHub REST API at
    /// `--api-url`. Writes DIFF_READY and PR_OPENED, or ERROR.
    Pr {
        #[arg(long, default_value = ".")]
        workspace: PathBuf,
        /// Git remote URL to push the branch to.
        #[arg(long)]
        remote: String,
        /// Base URI of the GitHub REST API (the lab forge, GitHub, GitHub Enterprise).
        #[arg(long)]
        api_url: String,
        /// Repository on the API, `owner/name`.
        #[arg(long)]
        repo: String,
        #[arg(long)]
        branch: String,
        #[arg(long, default_value = "main")]
        base: String,
        #[arg(long)]
        title: String,
        #[arg(long)]
        body: Option<String>,
        /// API token (also read from GITHUB_TOKEN).
        #[arg(long, env = "GITHUB_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Open the pull request ready for review instead of as a draft.
        #[arg(long)]
        ready: bool,
    },
    /// Report what this runner runs: one HEARTBEAT line (runner and CLI versions, capabilities),
    /// printed and, with --post, sent to `canary serve` (POST /v1/heartbeats).
    Heartbeat {
        #[arg(long)]
        runner_id: String,
        #[arg(long)]
        org: Option<String>,
        #[arg(long)]
        channel: Option<String>,
        /// Base URL of `canary serve`.
        #[arg(long)]
        post: Option<String>,
        /// This runner's bearer token for `canary serve` (`canary tokens create --runner ID`).
        #[arg(long, env = "CANARY_RUNNER_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Run as a fleet runner: ask `canary serve` which build each session runs, run the ones
    /// assigned to this runner's build, report telemetry through a bounded spool. Prints a JSON
    /// summary; exit 0, or 2 when it could not run.
    Agent {
        /// Base URL of `canary serve`.
        #[arg(long)]
        server: String,
        /// This runner's bearer token (`canary tokens create --runner ID`).
        #[arg(long, env = "CANARY_RUNNER_TOKEN", hide_env_values = true)]
        token: String,
        /// This runner's id: the token's runner.
        #[arg(long)]
        runner_id: String,
        /// The org whose sessions this runner runs.
        #[arg(long)]
        org: String,
        /// This runner's build (its image digest).
        #[arg(long, env = "CANARY_BUILD")]
        build: String,
        /// Sessions to handle before stopping.
        #[arg(long, default_value_t = 10)]
        sessions: u64,
        #[command(flatten)]
        session: SessionOpts,
        /// Where unsent telemetry waits (kept across restarts).
        #[arg(long, default_value = "/var/tmp/canary-runner/telemetry.jsonl")]
        spool: PathBuf,
        /// The most sessions the spool keeps; past it new ones are dropped and counted.
        #[arg(long, default_value_t = 10_000)]
        spool_max: usize,
        #[arg(long, default_value_t = 20)]
        batch: usize,
    },
    /// Run one non-interactive session; events go to stdout, one JSON object per line.
    Session {
        #[command(flatten)]
        session: SessionOpts,
    },
}

/// One session's settings, for `session` and for each session of `agent`.
#[derive(clap::Args)]
struct SessionOpts {
    #[arg(long, value_enum)]
    provider: Provider,
    #[arg(long)]
    prompt: String,
    /// The model API to use (the lab's model stub).
    #[arg(long)]
    model_url: String,
    #[arg(long)]
    model: Option<String>,
    /// The workspace (for `agent`: a template, copied afresh for each session).
    #[arg(long, default_value = ".")]
    workspace: PathBuf,
    #[arg(long, value_enum, default_value = "none")]
    approval: Approval,
    #[arg(long, default_value = "10m")]
    timeout: humantime::Duration,
    /// The CLI binary (default: the provider's command on PATH).
    #[arg(long)]
    cli: Option<PathBuf>,
    /// Codex's own sandbox (`workspace-write`, or `danger-full-access` where the container
    /// is the sandbox: Codex's needs user namespaces an unprivileged container lacks).
    #[arg(long, default_value = "workspace-write")]
    codex_sandbox: String,
}

impl SessionOpts {
    fn into_args(self) -> SessionArgs {
        SessionArgs {
            provider: self.provider,
            prompt: self.prompt,
            model_url: self.model_url,
            model: self.model,
            workspace: self.workspace,
            approval: self.approval,
            timeout: self.timeout.into(),
            cli: self.cli,
            codex_sandbox: self.codex_sandbox,
        }
    }
}

fn main() {
    canary_lab::init_tls();
    let cli = Cli::parse();
    let args = match cli.command {
        Command::LabStub {
            scenario,
            log,
            addr_file,
        } => std::process::exit(lab_stub(&scenario, log, &addr_file)),
        Command::Heartbeat {
            runner_id,
            org,
            channel,
            post,
            token,
        } => std::process::exit(heartbeat(runner_id, org, channel, post, token)),
        Command::LabForge {
            listen,
            root,
            public_url,
        } => std::process::exit(lab_forge(listen, root, public_url)),
        Command::Agent {
            server,
            token,
            runner_id,
            org,
            build,
            sessions,
            session,
            spool,
            spool_max,
            batch,
        } => {
            let o = canary_lab::runner::agent::AgentOptions {
                server,
                token,
                runner: runner_id,
                org,
                build,
                sessions,
                session: session.into_args(),
                spool,
                spool_max,
                batch: batch.clamp(1, 2000),
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("runtime");
            std::process::exit(match runtime.block_on(canary_lab::runner::agent::run(&o)) {
                Ok(r) => {
                    println!("{}", serde_json::to_string(&r).expect("json"));
                    0
                }
                Err(e) => {
                    eprintln!("canary-runner agent: {e}");
                    2
                }
            })
        }
        Command::Pr {
            workspace,
            remote,
            api_url,
            repo,
            branch,
            base,
            title,
            body,
            token,
            ready,
        } => {
            let args = PrArgs {
                workspace,
                remote,
                api_url,
                repo,
                branch,
                base,
                title,
                body,
                token,
                ready,
            };
            std::process::exit(emit(|tx| async move { Ok(pr::run(args, tx).await) }))
        }
        Command::Session { session } => session.into_args(),
    };
    std::process::exit(emit(|tx| session::run(args, tx)));
}

/// Runs `work` with an event channel whose events are written to stdout as JSON lines; the exit
/// code is 0 for a clean run, 1 when it wrote an ERROR, 2 when the runner itself failed.
fn emit<F, Fut>(work: F) -> i32
where
    F: FnOnce(tokio::sync::mpsc::UnboundedSender<Event>) -> Fut,
    Fut: std::future::Future<Output = std::io::Result<bool>>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
        let writer = tokio::spawn(async move {
            let mut stdout = std::io::stdout();
            while let Some(e) = rx.recv().await {
                let mut v = serde_json::to_value(&e).expect("event serializes");
                v.as_object_mut()
                    .expect("events are objects")
                    .insert("ts".into(), canary_lab::registry::now().into());
                let _ = writeln!(stdout, "{v}");
                let _ = stdout.flush();
            }
        });
        let result = work(tx).await;
        let _ = writer.await;
        match result {
            Ok(true) => 0,
            Ok(false) => 1,
            Err(e) => {
                eprintln!("canary-runner: {e}");
                2
            }
        }
    })
}

fn heartbeat(
    runner_id: String,
    org: Option<String>,
    channel: Option<String>,
    post: Option<String>,
    token: Option<String>,
) -> i32 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut versions = std::collections::BTreeMap::new();
        versions.insert("runner".to_string(), env!("CARGO_PKG_VERSION").to_string());
        let mut capabilities = vec!["session".to_string(), "pr".to_string()];
        for (provider, command) in [("codex", "codex"), ("claude-code", "claude"), ("gemini", "gemini")] {
            if let Some(v) = session::installed_version(command).await {
                versions.insert(provider.to_string(), v);
                capabilities.push(format!("provider:{provider}"));
            }
        }
        let event = Event::Heartbeat { versions, capabilities };
        let mut v = serde_json::to_value(&event).expect("event serializes");
        let o = v.as_object_mut().expect("events are objects");
        o.insert("ts".into(), canary_lab::registry::now().into());
        o.insert("runner_id".into(), runner_id.into());
        if let Some(org) = org {
            o.insert("org".into(), org.into());
        }
        if let Some(c) = channel {
            o.insert("channel".into(), c.into());
        }
        println!("{v}");
        if let Some(url) = post {
            let url = format!("{}/v1/heartbeats", url.trim_end_matches('/'));
            let Some(token) = token else {
                eprintln!("canary-runner heartbeat: --post needs this runner's token (--token or CANARY_RUNNER_TOKEN)");
                return 2;
            };
            let sent = reqwest::Client::new()
                .post(&url)
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body(v.to_string())
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => {
                    eprintln!(
                        "canary-runner heartbeat: {url} answered {}: {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    );
                    return 2;
                }
                Err(e) => {
                    eprintln!("canary-runner heartbeat: {url}: {e}");
                    return 2;
                }
            }
        }
        0
    })
}

fn lab_forge(listen: std::net::SocketAddr, root: PathBuf, public_url: Option<String>) -> i32 {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let forge = canary_lab::forge::Forge::new(root.clone());
        if let Some(url) = &public_url {
            forge.set_public_url(url);
        }
        // The lab waits for the ready file before any case pushes.
        serve_announced("lab-forge", forge.serve(listen).await, &root.join("ready")).await
    })
}

fn lab_stub(scenario: &std::path::Path, log: PathBuf, addr_file: &std::path::Path) -> i32 {
    let text = match std::fs::read_to_string(scenario) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("canary-runner lab-stub: {}: {e}", scenario.display());
            return 2;
        }
    };
    let parsed = match canary_lab::stub::Scenario::parse(&scenario.display().to_string(), &text) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("canary-runner lab-stub: {e}");
            return 2;
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let stub = canary_lab::stub::Stub::new(None, Some(log));
        stub.insert("default", parsed);
        serve_announced(
            "lab-stub",
            stub.serve("127.0.0.1:0".parse().expect("address")).await,
            addr_file,
        )
        .await
    })
}

/// Writes a lab server's URL to `addr_file` once it listens, then serves until it stops.
async fn serve_announced(
    name: &str,
    served: canary_lab::error::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)>,
    addr_file: &std::path::Path,
) -> i32 {
    let (addr, server) = match served {
        Ok(x) => x,
        Err(e) => {
            eprintln!("canary-runner {name}: {e}");
            return 2;
        }
    };
    if let Err(e) = std::fs::write(addr_file, format!("http://{addr}\n")) {
        eprintln!("canary-runner {name}: {}: {e}", addr_file.display());
        return 2;
    }
    let _ = server.await;
    0
}
