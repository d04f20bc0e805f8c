//! Queries over the known-good registry (`canary registry ...`) and the pieces the gate
//! commands share with them (opening the registry, actors, output).

use crate::config::LabConfig;
use crate::contract::Channel;
use crate::error::{Result, exit};

use crate::registry::{Registry, view};
use clap::{Args, Subcommand};

#[derive(Subcommand, Debug)]
pub enum RegistryCommand {
    /// Create the registry, or bring its schema up to date (every command that writes does this
    /// too; read-only commands never do).
    Init(JsonFlag),
    /// Builds the registry has results for.
    Builds(JsonFlag),
    /// Recorded case results, newest first.
    Results {
        /// Only this build (digest, prefix or image reference).
        #[arg(long)]
        build: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// Upstream runtime versions the registry has seen.
    Versions(JsonFlag),
    /// Each channel's known-good history (newest first).
    KnownGood {
        #[arg(long)]
        channel: Option<Channel>,
        #[arg(long)]
        json: bool,
    },
    /// Compatibility matrix: provider version × suite × repo → latest status.
    Matrix(JsonFlag),
    /// The append-only audit log, newest first.
    Audit {
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// Delete a build and its results; refused for builds a channel keeps or an org runs.
    Forget {
        build: String,
        #[command(flatten)]
        who: Who,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
pub struct JsonFlag {
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct Who {
    /// Who is acting (default: $USER).
    #[arg(long)]
    pub actor: Option<String>,
    /// Why; goes into the audit log.
    #[arg(long, default_value = "")]
    pub reason: String,
}

/// Who acts when `--actor` is not given: the login name, else `canary`.
static LOGIN: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "canary".into())
});

impl Who {
    pub(super) fn actor(&self) -> &str {
        self.actor.as_deref().unwrap_or(&LOGIN)
    }

    /// The actor and reason, as the audit log takes them.
    pub(super) fn acting(&self) -> crate::gate::ops::Actor<'_> {
        crate::gate::ops::Actor {
            name: self.actor(),
            reason: &self.reason,
        }
    }
}

pub(super) fn print_json(v: &impl serde::Serialize) {
    outln!("{}", serde_json::to_string_pretty(v).expect("serializable"));
}

/// Rows as JSON, or as the lines their view makes.
fn show_rows<T: serde::Serialize>(json: bool, rows: &[T], view: fn(&[T]) -> Vec<String>) {
    if json {
        print_json(&rows);
    } else {
        for line in view(rows) {
            outln!("{line}");
        }
    }
}

pub(super) fn short(id: &str) -> &str {
    crate::lab::short_id(id)
}

/// Opens the registry for a command that writes (creating it on first use).
pub async fn open(config: &LabConfig) -> Result<Registry> {
    Registry::open(&config.registry).await
}

/// Opens an existing registry for a command that changes recorded builds: nothing is created.
pub async fn open_to_change(config: &LabConfig) -> Result<Registry> {
    Registry::open_to_change(&config.registry).await
}

/// Opens an existing registry for a command that only reads: nothing is created.
pub async fn open_read(config: &LabConfig) -> Result<Registry> {
    Registry::open_existing(&config.registry).await
}

pub async fn registry(config: &LabConfig, cmd: &RegistryCommand) -> Result<i32> {
    let reg = match cmd {
        RegistryCommand::Init(_) => open(config).await?,
        RegistryCommand::Forget { .. } => open_to_change(config).await?,
        _ => open_read(config).await?,
    };
    match cmd {
        RegistryCommand::Init(j) => {
            let (display, version) = (&reg.display, reg.schema_version());
            let value = serde_json::json!({"registry": display, "schema_version": version});
            let line = format!("registry {display} ready (schema version {version})");
            super::commands::print_view(j.json, &value, vec![line]);
        }
        RegistryCommand::Builds(j) => show_rows(j.json, &reg.builds().await?, view::builds),
        RegistryCommand::Results { build, limit, json } => {
            let build = match build {
                Some(b) => Some(reg.resolve_build(b).await?),
                None => None,
            };
            show_rows(*json, &reg.results(build.as_deref(), *limit).await?, view::results)
        }
        RegistryCommand::Versions(j) => show_rows(j.json, &reg.versions().await?, view::versions),
        RegistryCommand::KnownGood { channel, json } => {
            show_rows(*json, &reg.releases(channel.as_ref(), 100).await?, view::known_good)
        }
        RegistryCommand::Matrix(j) => show_rows(j.json, &reg.matrix_cells().await?, view::matrix),
        RegistryCommand::Audit { limit, json } => show_rows(*json, &reg.audit_log(*limit).await?, view::audit),
        RegistryCommand::Forget { build, who, json } => {
            let who = who.acting();
            match crate::gate::ops::forget(&reg, build, who).await? {
                crate::gate::ops::Outcome::Done(f) => {
                    if *json {
                        print_json(&f);
                    } else {
                        outln!("forgot build {} and {} results", short(&f.build), f.results);
                    }
                }
                crate::gate::ops::Outcome::Refused(why) => {
                    return super::gate::refused(*json, "forget", &why);
                }
            }
        }
    }
    Ok(exit::PASS)
}
