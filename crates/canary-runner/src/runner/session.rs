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
    let home = tempfile::tempdir()?;
    let mut cmd = tokio::process::Command::new(&cli);
    cmd.current_dir(&args.workspace)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    configure(&mut cmd, &args, &model, &proxy_url, home.path())?;
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
    match args.provider {
        Provider::Codex => {
            let config = format!(
                "model = \"{model}\"\nmodel_provider = \"lab\"\ncheck_for_update_on_startup = false\n\n[model_providers.lab]\nname = \"lab model\"\nbase_url = \"{proxy_url}/v1\"\nenv_key = \"CANARY_RUNNER_MODEL_KEY\"\nwire_api = \"responses\"\nsupports_websockets = false\nrequest_max_retries = 0\nstream_max_retries = 0\n"
            );
            std::fs::write(home.join("config.toml"), config)?;
            cmd.args([
                "exec",
                "--json",
                "--skip-git-repo-check",
                "--sandbox",
                &args.codex_sandbox,
                &args.prompt,
            ])
            .env("CODEX_HOME", home)
            .env("CANARY_RUNNER_MODEL_KEY", "lab");
        }
        Provider::ClaudeCode => {
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
                "--allowedTools",
                "Bash",
            ])
            .env("HOME", home)
            .env("CLAUDE_CONFIG_DIR", home)
            .env("ANTHROPIC_BASE_URL", proxy_url)
            .env("ANTHROPIC_API_KEY", "lab")
            .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
            .env("DISABLE_AUTOUPDATER", "1");
        }
        Provider::Gemini => {
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
        }
    }
    Ok(())
}

/// Translates the CLI's stdout line by line until it exits or the deadline kills it, then its
/// exit (with the tail of its stderr when it failed); returns whether the session was clean.
async fn follow(
    child: &mut tokio::process::Child,
    adapter: &mut dyn Adapter,
    inventory: &mut super::inventory::Inventory,
    out: &mpsc::UnboundedSender<Event>,
    timeout: Duration,
) -> bool {
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut stderr = child.stderr.take().expect("piped");
    let stderr_task = tokio::spawn(async move {
        let mut buf = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut stderr, &mut buf).await;
        buf
    });
    let mut clean = true;
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut timed_out = false;
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
            _ = &mut deadline => {
                timed_out = true;
                let _ = child.kill().await;
                break;
            }
        }
    }
    let status = if timed_out { None } else { child.wait().await.ok() };
    let stderr = stderr_task.await.unwrap_or_default();
    if timed_out {
        let _ = out.send(Event::error(
            "timeout",
            format!("the CLI did not finish within {}", humantime::format_duration(timeout)),
        ));
        clean = false;
    }
    for e in adapter.on_exit(status.and_then(|s| s.code())) {
        if let Event::Error { kind, message } = &e {
            clean = false;
            if kind == "cli_exit" {
                let tail = stderr_tail(&stderr, 5);
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
