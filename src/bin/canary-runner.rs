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
    let Command::Session {
        provider,
        prompt,
        model_url,
        model,
        workspace,
        approval,
        timeout,
        cli,
    } = cli.command;
    let args = SessionArgs {
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
