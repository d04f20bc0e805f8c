//! One session of the reference runner: the CLI started against the policy proxy, its stdout
//! translated by the adapter, proxy decisions merged in order, a deadline that kills, and the
//! workspace's diff at the end.

use super::adapters::{Adapter, SessionInfo, claude::Claude, codex::Codex, gemini::Gemini};
use super::events::Event;
use super::proxy::{self, Approval};
use canary_contract::Provider;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

#[derive(Clone)]
pub struct SessionArgs {
    pub provider: Provider,
    pub prompt: String,
    pub model_url: String,
    pub model: Option<String>,
    pub workspace: PathBuf,
    pub approval: Approval,
    pub timeout: Duration,
    /// The CLI command (default: the provider's, from PATH).
    pub cli: Option<PathBuf>,
    /// Codex's own sandbox mode. Its Linux sandbox needs unprivileged user namespaces, which an
    /// unprivileged container does not have; there the container is the sandbox.
    pub codex_sandbox: String,
    /// Where to write the session's event inventory of the CLI (JSON), if anywhere.
    pub inventory: Option<PathBuf>,
    /// The CLI's home (its config and conversation store), kept after the session so a later
    /// one can resume it; default: a fresh directory removed afterwards.
    pub home: Option<PathBuf>,
    /// Continue this earlier conversation (the session id its SESSION_STARTED carried) with the
    /// CLI's own resume mechanism; needs the same `home`.
    pub resume: Option<String>,
    /// Configure the lab's MCP server fixture into the CLI, logging its calls here.
    pub mcp_log: Option<PathBuf>,
}

fn default_model(p: Provider) -> &'static str {
    match p {
        Provider::Codex => "gpt-5",
        Provider::ClaudeCode => "claude-sonnet-4-5",
        Provider::Gemini => "gemini-2.5-pro",
    }
}

/// The version of a CLI on PATH, or `None` when it is not installed.
pub async fn installed_version(command: impl AsRef<std::ffi::OsStr>) -> Option<String> {
    let o = tokio::process::Command::new(command)
        .arg("--version")
        .output()
        .await
        .ok()?;
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .map(String::from)
}

/// The CLI's `--version`, for SESSION_STARTED.
async fn cli_version(cli: &Path) -> String {
    installed_version(cli).await.unwrap_or_else(|| "unknown".into())
}

/// Runs the session, sending every event to `out` in order; returns whether it was clean.
pub async fn run(args: SessionArgs, out: mpsc::UnboundedSender<Event>) -> std::io::Result<bool> {
    // The id comes from a CLI's own output and goes back to a CLI as an argument: an id only.
    if let Some(id) = args.resume.as_deref().filter(|id| !crate::names::is_id(id)) {
        let _ = out.send(Event::error(
            "bad_argument",
            format!("--resume {:?} is not a session id", crate::text::clean(id)),
        ));
        return Ok(false);
    }
    let model = args
        .model
        .clone()
        .unwrap_or_else(|| default_model(args.provider).into());
    let cli = args
        .cli
        .clone()
        .unwrap_or_else(|| PathBuf::from(args.provider.command()));
    let info = SessionInfo {
        runner_version: env!("CARGO_PKG_VERSION").into(),
        provider_version: cli_version(&cli).await,
        model: model.clone(),
    };
    let mut inventory = super::inventory::Inventory::new(args.provider.name(), &info.provider_version);
    let mut adapter: Box<dyn Adapter> = match args.provider {
        Provider::Codex => Box::new(Codex::new(info)),
        Provider::ClaudeCode => Box::new(Claude::new(info)),
        Provider::Gemini => Box::new(Gemini::new(info)),
    };
    let (proxy_url, proxy) = proxy::start(&args.model_url, args.approval, out.clone()).await?;
    let scratch = tempfile::tempdir()?;
    let home = match &args.home {
        Some(h) => {
            std::fs::create_dir_all(h)?;
            h.clone()
        }
        None => scratch.path().to_path_buf(),
    };
    let mut cmd = tokio::process::Command::new(&cli);
    cmd.current_dir(&args.workspace)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so an interrupt or a deadline reaches every tool it started.
        .process_group(0)
        .kill_on_drop(true);
    configure(&mut cmd, &args, &model, &proxy_url, &home)?;
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let _ = out.send(Event::error(
                "cli_missing",
                format!("cannot start {}: {e}", cli.display()),
            ));
            proxy.abort();
            return Ok(false);
        }
    };
    let mut clean = follow(&mut child, adapter.as_mut(), &mut inventory, &out, args.timeout).await;
    proxy.abort();
    if let Some(path) = &args.inventory {
        let text = serde_json::to_vec_pretty(&inventory).expect("inventory serializes");
        if let Err(e) = std::fs::write(path, text) {
            let _ = out.send(Event::error(
                "error",
                format!("cannot write the inventory to {}: {e}", path.display()),
            ));
        }
    }
    match diff(&args.workspace).await {
        Ok((files, patch)) => {
            let _ = out.send(Event::DiffReady { files, patch });
        }
        Err(e) => {
            let _ = out.send(Event::error("no_diff", e));
            clean = false;
        }
    }
    Ok(clean)
}

/// Each CLI's own way of being pointed at the runner's proxy, headless, with its JSON output.
fn configure(
    cmd: &mut tokio::process::Command,
    args: &SessionArgs,
    model: &str,
    proxy_url: &str,
    home: &Path,
) -> std::io::Result<()> {
    let launch = Launch {
        args,
        model,
        proxy_url,
        home,
    };
    match args.provider {
        Provider::Codex => configure_codex(cmd, &launch),
        Provider::ClaudeCode => configure_claude(cmd, &launch),
        Provider::Gemini => {
            if let Some(log) = &args.mcp_log {
                std::fs::create_dir_all(home.join(".gemini"))?;
                std::fs::write(home.join(".gemini/settings.json"), claude_mcp(log)?)?;
            }
            if let Some(id) = &args.resume {
                cmd.args(["--resume", id.as_str()]);
            }
            cmd.args([
                "-p",
                &args.prompt,
                "-o",
                "stream-json",
                "-m",
                model,
                "--approval-mode",
                "yolo",
            ])
            .env("HOME", home)
            .env("GOOGLE_GEMINI_BASE_URL", proxy_url)
            .env("GEMINI_API_KEY", "lab")
            .env("GEMINI_CLI_TRUST_WORKSPACE", "true");
            Ok(())
        }
    }
}

/// What a CLI is started with: the session, the model id, the proxy's URL and the CLI's home.
#[derive(Clone, Copy)]
struct Launch<'a> {
    args: &'a SessionArgs,
    model: &'a str,
    proxy_url: &'a str,
    home: &'a Path,
}

/// Codex: a private CODEX_HOME whose config.toml selects the runner's proxy as a custom provider
/// (and the MCP fixture when asked); `exec resume ID` continues a conversation.
fn configure_codex(cmd: &mut tokio::process::Command, l: &Launch) -> std::io::Result<()> {
    let (args, model, proxy_url, home) = (l.args, l.model, l.proxy_url, l.home);
    let config = format!(
        "model = \"{model}\"\nmodel_provider = \"lab\"\ncheck_for_update_on_startup = false\n\n[model_providers.lab]\nname = \"lab model\"\nbase_url = \"{proxy_url}/v1\"\nenv_key = \"CANARY_RUNNER_MODEL_KEY\"\nwire_api = \"responses\"\nsupports_websockets = false\nrequest_max_retries = 0\nstream_max_retries = 0\n"
    );
    let config = match &args.mcp_log {
        Some(log) => config + &codex_mcp(log)?,
        None => config,
    };
    std::fs::write(home.join("config.toml"), config)?;
    cmd.args([
        "exec",
        "--json",
        "--skip-git-repo-check",
        "--sandbox",
        &args.codex_sandbox,
    ]);
    if let Some(id) = &args.resume {
        cmd.args(["resume", id.as_str()]);
    }
    cmd.arg(&args.prompt)
        .env("CODEX_HOME", home)
        .env("CANARY_RUNNER_MODEL_KEY", "lab");
    Ok(())
}

/// Claude Code: the proxy as its base URL, stream-json output, `--resume ID` to continue, and
/// the MCP fixture through `--mcp-config` with its tool allowed.
fn configure_claude(cmd: &mut tokio::process::Command, l: &Launch) -> std::io::Result<()> {
    let (args, model, proxy_url, home) = (l.args, l.model, l.proxy_url, l.home);
    // The runner's proxy is the approval point, so the CLI may run its shell tool.
    cmd.args([
        "-p",
        &args.prompt,
        "--output-format",
        "stream-json",
        "--verbose",
        "--include-partial-messages",
        "--model",
        model,
    ]);
    if let Some(id) = &args.resume {
        cmd.args(["--resume", id.as_str()]);
    }
    match &args.mcp_log {
        Some(log) => {
            let config = home.join("canary-mcp.json");
            std::fs::write(&config, claude_mcp(log)?)?;
            let tool = format!("mcp__{}__{}", super::mcp::SERVER, super::mcp::TOOL);
            cmd.arg("--mcp-config").arg(&config).arg("--strict-mcp-config");
            cmd.args(["--allowedTools", &format!("Bash,{tool}")]);
        }
        None => {
            cmd.args(["--allowedTools", "Bash"]);
        }
    }
    cmd.env("HOME", home)
        .env("CLAUDE_CONFIG_DIR", home)
        .env("ANTHROPIC_BASE_URL", proxy_url)
        .env("ANTHROPIC_API_KEY", "lab")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .env("DISABLE_AUTOUPDATER", "1");
    Ok(())
}

/// Codex's `[mcp_servers.canary]` table for the lab's MCP fixture.
fn codex_mcp(log: &Path) -> std::io::Result<String> {
    let (command, args) = super::mcp::command(log)?;
    let quote = |s: &str| serde_json::to_string(s).expect("string serializes");
    let args: Vec<String> = args.iter().map(|a| quote(a)).collect();
    Ok(format!(
        "\n[mcp_servers.{}]\ncommand = {}\nargs = [{}]\nstartup_timeout_sec = 20\n",
        super::mcp::SERVER,
        quote(&command.display().to_string()),
        args.join(", ")
    ))
}

/// The `mcpServers` JSON that Claude Code (`--mcp-config`) and Gemini CLI (settings) read.
fn claude_mcp(log: &Path) -> std::io::Result<String> {
    let (command, args) = super::mcp::command(log)?;
    let mut servers = serde_json::Map::new();
    servers.insert(
        super::mcp::SERVER.into(),
        serde_json::json!({"type": "stdio", "command": command, "args": args}),
    );
    Ok(serde_json::json!({ "mcpServers": servers }).to_string())
}

/// Sends `signal` to the CLI's process group (the CLI and every tool it started); a group that
/// is already gone is no error.
fn signal_group(pgid: Option<u32>, signal: i32) {
    if let Some(pgid) = pgid.and_then(|p| i32::try_from(p).ok()) {
        // SAFETY: killpg only sends a signal; the group is the one this runner created.
        unsafe {
            libc::killpg(pgid, signal);
        }
    }
}

/// Set once the runner received SIGINT or SIGTERM: a long-lived runner (`agent`) stops after
/// the session under way.
pub static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// How long the CLI has to exit after SIGTERM before its group is killed.
const TERM_GRACE: Duration = Duration::from_secs(5);

/// An interrupt the runner received, as the platform's stop button sends it: SIGINT, then
/// SIGTERM after the platform's grace period. Each is passed on to the CLI's process group.
struct Interrupt {
    first: &'static str,
    at: std::time::Instant,
}

/// Translates the CLI's stdout line by line until it exits, the deadline kills it, or an
/// interrupt ends it; then its exit (with the tail of its stderr when it failed). Whatever the
/// CLI left running in its process group is killed. Returns whether the session was clean.
async fn follow(
    child: &mut tokio::process::Child,
    adapter: &mut dyn Adapter,
    inventory: &mut super::inventory::Inventory,
    out: &mpsc::UnboundedSender<Event>,
    timeout: Duration,
) -> bool {
    use tokio::signal::unix::{SignalKind, signal};
    let pgid = child.id();
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut stderr = child.stderr.take().expect("piped");
    let stderr_task = tokio::spawn(async move {
        let mut buf = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut stderr, &mut buf).await;
        buf
    });
    let (Ok(mut sigint), Ok(mut sigterm)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
        let _ = out.send(Event::error("error", "cannot listen for interrupts"));
        signal_group(pgid, libc::SIGKILL);
        return false;
    };
    let mut clean = true;
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let hard_stop = tokio::time::sleep(Duration::MAX / 4);
    tokio::pin!(hard_stop);
    let mut timed_out = false;
    let mut interrupt: Option<Interrupt> = None;
    let mut status = None;
    loop {
        tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(l)) if l.trim().is_empty() => {}
                Ok(Some(l)) => {
                    let events = adapter.on_line(&l);
                    inventory.record(&l, &events);
                    for e in events {
                        clean &= !matches!(&e, Event::Error { kind, .. } if kind != "cli_warning");
                        let _ = out.send(e);
                    }
                }
                _ => break,
            },
            st = child.wait(), if status.is_none() => {
                status = Some(st.ok());
                // The CLI is gone: nothing it started outlives it (and holds its stdout open).
                signal_group(pgid, libc::SIGKILL);
            }
            _ = sigint.recv() => {
                STOP.store(true, std::sync::atomic::Ordering::SeqCst);
                interrupt.get_or_insert(Interrupt { first: "SIGINT", at: std::time::Instant::now() });
                signal_group(pgid, libc::SIGINT);
            }
            _ = sigterm.recv() => {
                STOP.store(true, std::sync::atomic::Ordering::SeqCst);
                interrupt.get_or_insert(Interrupt { first: "SIGTERM", at: std::time::Instant::now() });
                signal_group(pgid, libc::SIGTERM);
                hard_stop.as_mut().reset(tokio::time::Instant::now() + TERM_GRACE);
            }
            _ = &mut hard_stop => signal_group(pgid, libc::SIGKILL),
            _ = &mut deadline => {
                timed_out = true;
                signal_group(pgid, libc::SIGKILL);
                break;
            }
        }
    }
    let status = match status {
        Some(s) => s,
        None if timed_out => None,
        None => child.wait().await.ok(),
    };
    signal_group(pgid, libc::SIGKILL);
    let stderr = stderr_task.await.unwrap_or_default();
    let ended = Ended {
        status,
        timed_out,
        interrupt,
    };
    clean & ended.report(adapter, &stderr, out, timeout)
}

/// How the CLI's run ended.
struct Ended {
    status: Option<std::process::ExitStatus>,
    timed_out: bool,
    interrupt: Option<Interrupt>,
}

impl Ended {
    /// The session's last events but DIFF_READY: the timeout, the interrupt, or the adapter's
    /// word on the exit. Returns whether they were clean.
    fn report(
        self,
        adapter: &mut dyn Adapter,
        stderr: &[u8],
        out: &mpsc::UnboundedSender<Event>,
        timeout: Duration,
    ) -> bool {
        let Ended {
            status,
            timed_out,
            interrupt,
        } = self;
        if timed_out {
            let _ = out.send(Event::error(
                "timeout",
                format!("the CLI did not finish within {}", humantime::format_duration(timeout)),
            ));
            return false;
        }
        if let Some(i) = interrupt {
            // The platform stopped the session: what the CLI says about its own exit is expected,
            // the one terminal word is the interrupt.
            let code = status
                .and_then(|s| s.code())
                .map_or("a signal".to_string(), |c| format!("exit {c}"));
            let _ = out.send(Event::error(
                "interrupted",
                format!(
                    "the session was interrupted ({}); the CLI ended with {code} after {:.1}s",
                    i.first,
                    i.at.elapsed().as_secs_f64()
                ),
            ));
            return false;
        }
        exit_events(adapter, status.and_then(|s| s.code()), stderr, out)
    }
}

/// The adapter's events once the CLI exited (a failed exit carries the tail of its stderr);
/// whether they were clean.
fn exit_events(
    adapter: &mut dyn Adapter,
    code: Option<i32>,
    stderr: &[u8],
    out: &mpsc::UnboundedSender<Event>,
) -> bool {
    let mut clean = true;
    for e in adapter.on_exit(code) {
        if let Event::Error { kind, message } = &e {
            clean = false;
            if kind == "cli_exit" {
                let tail = stderr_tail(stderr, 5);
                let _ = out.send(Event::error(kind, format!("{message}; stderr: {tail}")));
                continue;
            }
        }
        let _ = out.send(e);
    }
    clean
}

/// The last `n` lines of a CLI's stderr, joined on one line.
fn stderr_tail(stderr: &[u8], n: usize) -> String {
    let text = String::from_utf8_lossy(stderr);
    let mut tail: Vec<&str> = text.lines().rev().take(n).collect();
    tail.reverse();
    tail.join(" | ")
}

/// The workspace's changes against HEAD, untracked files included, without touching its index.
async fn diff(workspace: &Path) -> Result<(Vec<String>, String), String> {
    let index = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
    let git = |args: &[&str]| {
        let mut c = tokio::process::Command::new("git");
        c.args(args).current_dir(workspace).env("GIT_INDEX_FILE", index.path());
        c
    };
    let read_tree = git(&["read-tree", "HEAD"]).output().await.map_err(|e| e.to_string())?;
    if !read_tree.status.success() {
        return Err(format!(
            "git read-tree failed: {}",
            String::from_utf8_lossy(&read_tree.stderr).trim()
        ));
    }
    git(&["add", "-A"]).output().await.map_err(|e| e.to_string())?;
    let names = git(&["diff", "--cached", "--name-only", "-z", "HEAD"])
        .output()
        .await
        .map_err(|e| e.to_string())?;
    let patch = git(&["diff", "--cached", "--no-color", "--binary", "HEAD"])
        .output()
        .await
        .map_err(|e| e.to_string())?;
    let files = String::from_utf8_lossy(&names.stdout)
        .split('\0')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    Ok((files, String::from_utf8_lossy(&patch.stdout).to_string()))
}
