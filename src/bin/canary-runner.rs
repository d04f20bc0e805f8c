//! `canary-runner`: the reference implementation of the Runner Contract (docs/runner-contract.md).
//! It lives in runner images beside the agent CLI; the lab drives it inside case containers.

use canary_lab::providers::Provider;
use canary_lab::runner::events::Event;
use canary_lab::runner::proxy::Approval;
use canary_lab::runner::session::{self, SessionArgs};
use clap::{Parser, Subcommand, ValueEnum};
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
    /// Run one non-interactive session; events go to stdout, one JSON object per line.
    Session {
        #[arg(long, value_enum)]
        provider: ProviderArg,
        #[arg(long)]
        prompt: String,
        /// The model API to use (the lab's model stub).
        #[arg(long)]
        model_url: String,
        #[arg(long)]
        model: Option<String>,
        #[arg(long, default_value = ".")]
        workspace: PathBuf,
        #[arg(long, value_enum, default_value = "none")]
        approval: ApprovalArg,
        #[arg(long, default_value = "10m")]
        timeout: humantime::Duration,
        /// The CLI binary (default: the provider's command on PATH).
        #[arg(long)]
        cli: Option<PathBuf>,
        /// Codex's own sandbox (`workspace-write`, or `danger-full-access` where the container
        /// is the sandbox: Codex's needs user namespaces an unprivileged container lacks).
        #[arg(long, default_value = "workspace-write")]
        codex_sandbox: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ProviderArg {
    Codex,
    ClaudeCode,
    Gemini,
}

#[derive(Clone, Copy, ValueEnum)]
enum ApprovalArg {
    Approve,
    Deny,
    None,
}

fn main() {
    let cli = Cli::parse();
    let args = match cli.command {
        Command::LabStub {
            scenario,
            log,
            addr_file,
        } => std::process::exit(lab_stub(&scenario, log, &addr_file)),
        Command::Session {
            provider,
            prompt,
            model_url,
            model,
            workspace,
            approval,
            timeout,
            cli,
            codex_sandbox,
        } => SessionArgs {
            provider: match provider {
                ProviderArg::Codex => Provider::Codex,
                ProviderArg::ClaudeCode => Provider::ClaudeCode,
                ProviderArg::Gemini => Provider::Gemini,
            },
            prompt,
            model_url,
            model,
            workspace,
            approval: match approval {
                ApprovalArg::Approve => Approval::Approve,
                ApprovalArg::Deny => Approval::Deny,
                ApprovalArg::None => Approval::None,
            },
            timeout: timeout.into(),
            cli,
            codex_sandbox,
        },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let code = runtime.block_on(async {
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
        let result = session::run(args, tx).await;
        let _ = writer.await;
        match result {
            Ok(true) => 0,
            Ok(false) => 1,
            Err(e) => {
                eprintln!("canary-runner: {e}");
                2
            }
        }
    });
    std::process::exit(code);
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
        let (addr, server) = match stub.serve("127.0.0.1:0".parse().expect("address")).await {
            Ok(x) => x,
            Err(e) => {
                eprintln!("canary-runner lab-stub: {e}");
                return 2;
            }
        };
        if let Err(e) = std::fs::write(addr_file, format!("http://{addr}\n")) {
            eprintln!("canary-runner lab-stub: {}: {e}", addr_file.display());
            return 2;
        }
        let _ = server.await;
        0
    })
}
