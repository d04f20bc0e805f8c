//! `canary-runner`: the reference implementation of the Runner Contract (docs/runner-contract.md).
//! It lives in runner images beside the agent CLI; the lab drives it inside case containers.

use canary_runner::Provider;
use canary_runner::runner::events::Event;
use canary_runner::runner::pr::{self, PrArgs};
use canary_runner::runner::proxy::Approval;
use canary_runner::runner::session::{self, SessionArgs};
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
        /// For a resumed conversation: JSON `{calls_before, markers}` (the earlier session's
        /// tool calls, and texts every request must carry).
        #[arg(long)]
        continues: Option<PathBuf>,
    },
    /// Lab tool carried in runner images: answer every DNS query "no such name" at once, so
    /// outside names fail fast on the lab's internal network (its own names still resolve).
    LabDns {
        #[arg(long, default_value = "0.0.0.0:53")]
        listen: std::net::SocketAddr,
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
    Pr(PrOpts),
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
    Agent(AgentOpts),
    /// Updates on a customer's host: check, plan, upgrade (with consent, smoke sessions and an
    /// automatic switch back), rollback, status, channel. Exit 0 up to date / done, 1 update
    /// available, blocked, refused or rolled back, 2 error.
    Update {
        /// The install folder: builds/, current, previous, audit.jsonl, update.json, bundles/.
        #[arg(long, env = "CANARY_RUNNER_HOME", default_value = "/opt/canary-runner")]
        home: PathBuf,
        /// This runner's bearer token (`canary tokens create --runner ID`).
        #[arg(long, env = "CANARY_RUNNER_TOKEN", hide_env_values = true)]
        token: Option<String>,
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        action: UpdateAction,
    },
    /// Before any session: run the CLI's `--help` and check the flags the runner passes it.
    /// Prints JSON (version, flags listed, flags missing); exit 0 all there, 1 a flag vanished,
    /// 2 the CLI cannot run.
    Preflight {
        #[arg(long, value_enum)]
        provider: Provider,
        /// The CLI binary (default: the provider's command on PATH).
        #[arg(long)]
        cli: Option<PathBuf>,
    },
    /// Lab tool carried in runner images: the MCP server fixture over stdio (one tool,
    /// `ticket_status`), which `session --mcp-log` configures into the CLI.
    McpFixture {
        /// Append each tool call here (JSON lines).
        #[arg(long)]
        log: Option<PathBuf>,
    },
    /// Run one non-interactive session; events go to stdout, one JSON object per line.
    /// SIGINT and SIGTERM are passed on to the CLI and end the session with ERROR `interrupted`.
    Session {
        #[command(flatten)]
        session: SessionOpts,
    },
}

#[derive(clap::Args)]
struct AgentOpts {
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
    build: canary_contract::BuildId,
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
    /// Ask the control plane whether an update is offered at start and then this often;
    /// an available one is logged (and the admin notified), never installed. `0s`: never.
    #[arg(long, default_value = "1h", value_parser = canary_runner::bounds::duration(std::time::Duration::ZERO, std::time::Duration::from_secs(7 * 86_400)))]
    update_check: std::time::Duration,
}

#[derive(clap::Args)]
struct PrOpts {
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
}

#[derive(Subcommand)]
enum UpdateAction {
    /// Write the host's update configuration.
    Init {
        /// Base URL of `canary serve`.
        #[arg(long)]
        server: String,
        #[arg(long)]
        runner_id: String,
        #[arg(long)]
        org: Option<String>,
        #[arg(long, default_value = canary_contract::Channel::STABLE)]
        channel: canary_contract::Channel,
        /// The control plane's TUF root (`1.root.json` or a newer one, from its admin): the only
        /// keys this host trusts. Without it (or --trust-on-first-use), upgrades are refused.
        #[arg(long, conflicts_with = "trust_on_first_use")]
        root: Option<PathBuf>,
        /// Trust the root the control plane serves now (`1.root.json`), printing its key ids to
        /// compare with its admin: safe only over a network path you trust.
        #[arg(long)]
        trust_on_first_use: bool,
        /// Channels this host may follow (the org's plan), repeatable.
        #[arg(long = "allow-channel")]
        allowed_channels: Vec<canary_contract::Channel>,
    },
    /// What is installed, what the control plane recommends, green / yellow / red.
    Check,
    /// The components that change, the bundle compatibility check, the smoke sessions, the
    /// rollback point.
    Plan,
    /// Install the offered build beside the current one, switch, smoke-test, switch back on failure.
    Upgrade {
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        /// How long each CLI's smoke session may take.
        #[arg(long, default_value = "120s")]
        smoke_timeout: humantime::Duration,
    },
    /// Switch back to the previous build, or to an installed one (`--to DIGEST-PREFIX`).
    Rollback {
        #[arg(long)]
        to: Option<String>,
    },
    /// The installed builds, the current and previous one, and the update history.
    Status,
    /// Follow another channel (`stable` or `beta`), when the org's plan and pin allow it.
    Channel { name: canary_contract::Channel },
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
    /// Write the session's inventory of the CLI's output (event kinds, fields, JSON types) here.
    #[arg(long)]
    inventory: Option<PathBuf>,
    /// The CLI's home (config and conversations), kept so a later session can `--resume`;
    /// default: a fresh directory removed after the session.
    #[arg(long)]
    home: Option<PathBuf>,
    /// Continue an earlier conversation by its session id (SESSION_STARTED's), with the CLI's
    /// own resume mechanism; give the same `--home`.
    #[arg(long)]
    resume: Option<String>,
    /// Configure the lab's MCP server fixture into the CLI and log its calls to this file.
    #[arg(long)]
    mcp_log: Option<PathBuf>,
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
            inventory: self.inventory,
            home: self.home,
            resume: self.resume,
            mcp_log: self.mcp_log,
        }
    }
}

fn main() {
    canary_runner::init_tls();
    let cli = Cli::parse();
    let args = match cli.command {
        Command::LabStub {
            scenario,
            log,
            addr_file,
            continues,
        } => std::process::exit(lab_stub(&scenario, log, &addr_file, continues.as_deref())),
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
        Command::LabDns { listen } => {
            if let Err(e) = canary_runner::dns::serve(listen) {
                eprintln!("canary-runner lab-dns: {listen}: {e}");
                std::process::exit(2);
            }
            std::process::exit(0)
        }
        Command::Update {
            home,
            token,
            json,
            action,
        } => std::process::exit(update(home, token, json, action)),
        Command::Agent(o) => std::process::exit(agent(o)),
        Command::Pr(o) => std::process::exit(open_pr(o)),
        Command::Preflight { provider, cli } => std::process::exit(preflight(provider, cli)),
        Command::McpFixture { log } => match canary_runner::runner::mcp::serve(log.as_deref()) {
            Ok(()) => std::process::exit(0),
            Err(e) => {
                eprintln!("canary-runner mcp-fixture: {e}");
                std::process::exit(2)
            }
        },
        Command::Session { session } => session.into_args(),
    };
    std::process::exit(emit(|tx| session::run(args, tx)));
}

/// `canary-runner agent`: exit 0 after its sessions, 2 when it could not run.
fn agent(o: AgentOpts) -> i32 {
    let o = canary_runner::runner::agent::AgentOptions {
        server: o.server,
        token: o.token,
        runner: o.runner_id,
        org: o.org,
        build: o.build,
        sessions: o.sessions,
        session: o.session.into_args(),
        spool: o.spool,
        spool_max: o.spool_max,
        batch: o.batch.clamp(1, 2000),
        update_every: (!o.update_check.is_zero()).then_some(o.update_check),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match runtime.block_on(canary_runner::runner::agent::run(&o)) {
        Ok(r) => {
            out(&serde_json::to_string(&r).expect("json"));
            0
        }
        Err(e) => {
            eprintln!("canary-runner agent: {e}");
            2
        }
    }
}

/// `canary-runner pr`: its events on stdout.
fn open_pr(o: PrOpts) -> i32 {
    let args = PrArgs {
        workspace: o.workspace,
        remote: o.remote,
        api_url: o.api_url,
        repo: o.repo,
        branch: o.branch,
        base: o.base,
        title: o.title,
        body: o.body,
        token: o.token,
        ready: o.ready,
    };
    emit(|tx| async move { Ok(pr::run(args, tx).await) })
}

fn preflight(provider: Provider, cli: Option<PathBuf>) -> i32 {
    let cli = cli.unwrap_or_else(|| PathBuf::from(provider.command()));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match runtime.block_on(canary_runner::runner::inventory::preflight(provider, &cli)) {
        Ok(p) => {
            out(&serde_json::to_string(&p).expect("json"));
            if p.missing.is_empty() { 0 } else { 1 }
        }
        Err(e) => {
            eprintln!("error: {e}");
            2
        }
    }
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
                    .insert("ts".into(), canary_contract::time::now().into());
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
        let v = canary_runner::runner::heartbeat(&runner_id, org.as_deref(), channel.as_deref()).await;
        out(&v.to_string());
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
        let forge = canary_runner::forge::Forge::new(root.clone());
        if let Some(url) = &public_url {
            forge.set_public_url(url);
        }
        // The lab waits for the ready file before any case pushes.
        serve_announced("lab-forge", forge.serve(listen).await, &root.join("ready")).await
    })
}

/// `canary-runner update ...` on a customer's host: the host's folder, the runner's token and
/// how to answer (JSON or text cleaned of control characters), with one method per action.
struct UpdateCli {
    host: canary_runner::update::host::Host,
    token: Option<String>,
    json: bool,
}

impl UpdateCli {
    /// What the control plane said reaches the admin's terminal only without control characters.
    fn say(&self, value: serde_json::Value, text: String) {
        if self.json {
            out(&value.to_string());
        } else {
            out(&canary_runner::text::clean_block(&text));
        }
    }

    async fn init(&self, action: UpdateAction) -> canary_runner::error::Result<i32> {
        use canary_runner::update::host::{self, HostConfig};
        let UpdateAction::Init {
            server,
            runner_id,
            org,
            channel,
            root,
            trust_on_first_use,
            allowed_channels,
        } = action
        else {
            unreachable!("init is called for init")
        };
        use canary_runner::update::tuf;
        let cfg = HostConfig {
            server,
            runner_id,
            org,
            channel,
            allowed_channels: if allowed_channels.is_empty() {
                canary_contract::Channel::built_in().to_vec()
            } else {
                allowed_channels
            },
        };
        cfg.check()?;
        let root_text = match (&root, trust_on_first_use) {
            (Some(path), _) => Some(canary_runner::fsutil::read_input(path, "TUF root", tuf::MAX_ROOT)?.into_bytes()),
            (None, true) => {
                let token = self.token.clone().ok_or_else(|| {
                    canary_runner::error::LabError::usage(
                        "no runner token to fetch the root with",
                        "set CANARY_RUNNER_TOKEN (or --token) to this runner's token from `canary tokens create`",
                    )
                })?;
                Some(host::Client::new(&cfg.server, &token)?.first_root().await?)
            }
            (None, false) => None,
        };
        let pinned = match &root_text {
            Some(t) => Some(tuf::pin_root(&self.host.home, t).map_err(|m| {
                canary_runner::error::LabError::usage(
                    format!("the root is refused: {m}"),
                    "use the root.json the control plane's admin gave you (canary keys init-root wrote it)",
                )
            })?),
            None => None,
        };
        self.host.write_config(&cfg)?;
        let ids = pinned.as_ref().map(tuf::root_key_ids).unwrap_or_default();
        let text = match &pinned {
            Some(r) => format!(
                "configured {}\ntrusted root version {} (threshold {} of root keys {})",
                self.host.home.display(),
                r.signed.version,
                r.signed
                    .roles
                    .get(&tough::schema::RoleType::Root)
                    .map_or(0, |k| k.threshold.get()),
                ids.iter().map(|i| &i[..16]).collect::<Vec<_>>().join(", ")
            ),
            None if tuf::has_root(&self.host.home) => {
                format!("configured {} (the trusted root stays)", self.host.home.display())
            }
            None => format!(
                "configured {}\nno trusted root: `update upgrade` refuses until you pin one with `--root root.json` (from the control plane's admin)",
                self.host.home.display()
            ),
        };
        self.say(
            serde_json::json!({"configured": cfg, "root_key_ids": ids, "trusted_root": tuf::has_root(&self.host.home)}),
            text,
        );
        Ok(0)
    }

    fn status(&self, cfg: &canary_runner::update::host::HostConfig) -> canary_runner::error::Result<i32> {
        let installed: Vec<serde_json::Value> = self
            .host
            .installed()
            .iter()
            .map(|(p, m)| serde_json::json!({"folder": p, "build": m.build, "components": m.components}))
            .collect();
        let current = self.host.current();
        let previous = self.host.previous();
        let history = self.host.history();
        let mut text = format!(
            "current   {}\nprevious  {}\nchannel   {}\n",
            current
                .as_ref()
                .map(summary)
                .unwrap_or_else(|| "(nothing installed)".into()),
            previous.as_ref().map(summary).unwrap_or_else(|| "-".into()),
            cfg.channel
        );
        for e in history.iter().rev().take(10) {
            text.push_str(&format!(
                "{}  {:<8} {:<11} {}\n",
                e.at,
                e.action,
                e.outcome,
                canary_runner::text::clean(&e.reason)
            ));
        }
        self.say(
            serde_json::json!({"current": current, "previous": previous, "installed": installed, "channel": cfg.channel, "history": history}),
            text.trim_end().to_string(),
        );
        Ok(0)
    }

    /// The control plane's client, with this runner's token.
    fn client(
        &self,
        cfg: &canary_runner::update::host::HostConfig,
    ) -> canary_runner::error::Result<canary_runner::update::host::Client> {
        let token = self.token.clone().ok_or_else(|| {
            canary_runner::error::LabError::usage(
                "no runner token",
                "set CANARY_RUNNER_TOKEN (or --token) to this runner's token from `canary tokens create`",
            )
        })?;
        canary_runner::update::host::Client::new(&cfg.server, &token)
    }
    async fn check(
        &self,
        client: &canary_runner::update::host::Client,
        cfg: &canary_runner::update::host::HostConfig,
    ) -> canary_runner::error::Result<i32> {
        use canary_runner::update::host;
        let c = host::check(&self.host, client, cfg).await?;
        let refused = c.manifest.as_ref().err().cloned();
        let code = if c.up_to_date() && refused.is_none() { 0 } else { 1 };
        let mut text = format!(
            "installed  {}\noffered    {} ({}, {} {})\nstatus     {}: {}\n",
            c.current.as_ref().map(summary).unwrap_or_else(|| "(nothing)".into()),
            c.manifest
                .as_ref()
                .ok()
                .map(|m| m.build.as_str())
                .or(c.offer.build.as_deref())
                .unwrap_or("(none)"),
            c.offer.source,
            c.offer.channel,
            c.offer.org.as_deref().unwrap_or(""),
            c.offer.status.as_str(),
            c.offer.reasons.join("; ")
        );
        for ch in &c.offer.changes {
            text.push_str(&format!("  {ch}\n"));
        }
        if let Some((root, version)) = c.trusted {
            text.push_str(&format!(
                "signed     verified (TUF root v{root}, metadata v{version})\n"
            ));
        }
        if let Some(r) = &refused {
            text.push_str(&format!("refused    {r}\n"));
        } else if !c.up_to_date() {
            text.push_str("an update is available: `canary-runner update plan`, then `update upgrade`\n");
        }
        self.say(
            serde_json::json!({
                "up_to_date": c.up_to_date(),
                "offer": c.offer,
                "signed": c.manifest.as_ref().ok(),
                "trusted_root_version": c.trusted.map(|t| t.0),
                "metadata_version": c.trusted.map(|t| t.1),
                "installed": c.current,
                "refused": refused,
            }),
            text.trim_end().to_string(),
        );
        Ok(code)
    }
    async fn plan(
        &self,
        client: &canary_runner::update::host::Client,
        cfg: &canary_runner::update::host::HostConfig,
    ) -> canary_runner::error::Result<i32> {
        use canary_runner::update::host;
        let c = host::check(&self.host, client, cfg).await?;
        let status = c.status();
        let m = match c.manifest {
            Ok(m) => m,
            Err(why) => {
                self.say(serde_json::json!({"refused": why}), format!("refused: {why}"));
                return Ok(1);
            }
        };
        let plan = host::plan_for(&self.host, &m)?;
        let blocked = !plan.blocked.is_empty() || status == canary_runner::update::Status::Red;
        let mut text = format!(
            "{} → {} ({})\n",
            plan.from.as_deref().unwrap_or("(nothing)"),
            plan.to,
            status.as_str()
        );
        for ch in &plan.changes {
            text.push_str(&format!("  change   {ch}\n"));
        }
        for b in &plan.blocked {
            text.push_str(&format!("  BLOCKED  {}\n", canary_runner::text::clean(b)));
        }
        for w in &plan.warnings {
            text.push_str(&format!("  warning  {}\n", canary_runner::text::clean(w)));
        }
        for s in &plan.smoke {
            text.push_str(&format!("  smoke    {s}\n"));
        }
        text.push_str(&format!(
            "  rollback {}\n",
            plan.rollback_point.as_deref().unwrap_or("(none: first install)")
        ));
        self.say(
            serde_json::json!({"plan": plan, "status": c.offer.status, "blocked": blocked}),
            text.trim_end().to_string(),
        );
        Ok(if blocked { 1 } else { 0 })
    }
    async fn upgrade(
        &self,
        client: &canary_runner::update::host::Client,
        cfg: &canary_runner::update::host::HostConfig,
        yes: bool,
        smoke_timeout: std::time::Duration,
    ) -> canary_runner::error::Result<i32> {
        use canary_runner::update::host;
        let interactive = std::io::IsTerminal::is_terminal(&std::io::stdin());
        let o = host::upgrade(&self.host, client, cfg, smoke_timeout, |plan, offer| {
            if yes {
                return true;
            }
            if !interactive {
                return false;
            }
            let clean = canary_runner::text::clean;
            eprintln!(
                "upgrade {} → {} ({}):",
                clean(plan.from.as_deref().unwrap_or("(nothing)")),
                clean(&plan.to),
                offer.status.as_str()
            );
            for ch in &plan.changes {
                eprintln!("  {}", clean(&ch.to_string()));
            }
            eprint!("proceed? [y/N] ");
            let mut answer = String::new();
            let _ = std::io::stdin().read_line(&mut answer);
            matches!(answer.trim(), "y" | "Y" | "yes")
        })
        .await?;
        self.say(
            serde_json::to_value(&o).expect("json"),
            format!(
                "{}: {}{}",
                o.outcome,
                canary_runner::text::clean(&o.reason),
                if o.smoke.is_empty() {
                    String::new()
                } else {
                    format!(" (smoke: {})", o.smoke.join(", "))
                }
            ),
        );
        Ok(o.exit_code())
    }
    async fn rollback(
        &self,
        client: &canary_runner::update::host::Client,
        cfg: &canary_runner::update::host::HostConfig,
        to: Option<&str>,
    ) -> canary_runner::error::Result<i32> {
        use canary_runner::update::host;
        let o = host::rollback(&self.host, client, cfg, to).await?;
        self.say(
            serde_json::to_value(&o).expect("json"),
            format!("{}: {}", o.outcome, canary_runner::text::clean(&o.reason)),
        );
        Ok(o.exit_code())
    }
    async fn channel(
        &self,
        client: &canary_runner::update::host::Client,
        cfg: &canary_runner::update::host::HostConfig,
        name: canary_contract::Channel,
    ) -> canary_runner::error::Result<i32> {
        use canary_runner::update::host;
        let mut cfg = cfg.clone();
        if !cfg.allowed_channels.contains(&name) {
            self.say(
                serde_json::json!({"refused": "channel not allowed"}),
                format!(
                    "refused: this host's plan allows channels {}",
                    cfg.allowed_channels
                        .iter()
                        .map(|c| c.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
            return Ok(1);
        }
        let c = host::check(&self.host, client, &cfg).await?;
        if c.offer.source == canary_runner::update::OfferSource::Pin {
            self.say(
                serde_json::json!({"refused": "the org is pinned"}),
                "refused: the org is pinned to a build; its admin unpins it with `canary pin`".into(),
            );
            return Ok(1);
        }
        cfg.channel = name.clone();
        self.host.write_config(&cfg)?;
        let _ = host::check(&self.host, client, &cfg).await;
        self.say(serde_json::json!({"channel": name}), format!("following {name}"));
        Ok(0)
    }
}

fn update(home: PathBuf, token: Option<String>, json: bool, action: UpdateAction) -> i32 {
    let cli = UpdateCli {
        host: canary_runner::update::host::Host::new(home),
        token,
        json,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let result: canary_runner::error::Result<i32> = runtime.block_on(async {
        if let UpdateAction::Init { .. } = action {
            return cli.init(action).await;
        }
        let cfg = cli.host.config()?;
        if let UpdateAction::Status = action {
            return cli.status(&cfg);
        }
        let client = cli.client(&cfg)?;
        match action {
            UpdateAction::Init { .. } | UpdateAction::Status => unreachable!("handled above"),
            UpdateAction::Check => cli.check(&client, &cfg).await,
            UpdateAction::Plan => cli.plan(&client, &cfg).await,
            UpdateAction::Upgrade { yes, smoke_timeout } => cli.upgrade(&client, &cfg, yes, smoke_timeout.into()).await,
            UpdateAction::Rollback { to } => cli.rollback(&client, &cfg, to.as_deref()).await,
            UpdateAction::Channel { name } => cli.channel(&client, &cfg, name).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("canary-runner update: {}", canary_runner::text::clean(&e.to_string()));
            2
        }
    }
}

fn summary(m: &canary_runner::update::BuildManifest) -> String {
    format!(
        "{} ({})",
        m.build.get(..19).unwrap_or(&m.build),
        m.components
            .iter()
            .map(|c| format!("{} {}", c.name, c.version))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn lab_stub(
    scenario: &std::path::Path,
    log: PathBuf,
    addr_file: &std::path::Path,
    continues: Option<&std::path::Path>,
) -> i32 {
    let read = |p: &std::path::Path| {
        let text = canary_runner::fsutil::read_input(p, "continues file", canary_runner::fsutil::MAX_INPUT)
            .map_err(|e| e.to_string())?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))
    };
    let continues = match continues.map(read) {
        None => Default::default(),
        Some(Ok(c)) => c,
        Some(Err(e)) => {
            eprintln!("canary-runner lab-stub: --continues: {e}");
            return 2;
        }
    };
    let parsed = match canary_runner::stub::Scenario::read(scenario) {
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
        let stub = canary_runner::stub::Stub::new(None, Some(log)).continuing(continues);
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
    served: canary_runner::error::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)>,
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

/// One line on stdout; a reader that went away (`| head`, a closed pipe) is not an error worth
/// a panic: the line is dropped.
fn out(line: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
}
