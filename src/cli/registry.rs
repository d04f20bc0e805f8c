//! Queries over the known-good registry (`canary registry ...`) and the pieces the gate
//! commands share with them (opening the registry, actors, output).

use crate::config::LabConfig;
use crate::error::{Result, exit};

use crate::registry::Registry;
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
        channel: Option<String>,
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

impl Who {
    pub(super) fn actor(&self) -> String {
        self.actor
            .clone()
            .or_else(|| std::env::var("USER").ok())
            .or_else(|| std::env::var("LOGNAME").ok())
            .unwrap_or_else(|| "canary".into())
    }
}

pub(super) fn print_json(v: &impl serde::Serialize) {
    outln!("{}", serde_json::to_string_pretty(v).expect("serializable"));
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
            if j.json {
                print_json(&serde_json::json!({"registry": reg.display, "schema_version": reg.schema_version()}));
            } else {
                outln!(
                    "registry {} ready (schema version {})",
                    reg.display,
                    reg.schema_version()
                );
            }
        }
        RegistryCommand::Builds(j) => {
            let rows = reg.builds().await?;
            if j.json {
                print_json(&rows);
            } else {
                outln!(
                    "{:<14} {:<34} {:<12} {:>7} {:>7}  RUNTIMES",
                    "BUILD",
                    "IMAGE",
                    "RUNNER",
                    "RESULTS",
                    "PASSING"
                );
                for b in rows {
                    outln!(
                        "{:<14} {:<34} {:<12} {:>7} {:>7}  {}",
                        short(&b.id),
                        b.image_ref,
                        b.runner_version,
                        b.results,
                        b.passing,
                        b.runtime_versions
                    );
                }
            }
        }
        RegistryCommand::Results { build, limit, json } => {
            let build = match build {
                Some(b) => Some(reg.resolve_build(b).await?),
                None => None,
            };
            let rows = reg.results(build.as_deref(), *limit).await?;
            if *json {
                print_json(&rows);
            } else {
                outln!(
                    "{:<14} {:<22} {:<28} {:<11} {:>8}  RECORDED",
                    "BUILD",
                    "RUN",
                    "CASE",
                    "STATUS",
                    "TIME"
                );
                for r in rows {
                    outln!(
                        "{:<14} {:<22} {:<28} {:<11} {:>7.1}s  {}",
                        short(&r.build_id),
                        r.run_id,
                        r.case_id,
                        r.status,
                        r.duration_ms as f64 / 1000.0,
                        r.recorded_at
                    );
                }
            }
        }
        RegistryCommand::Versions(j) => {
            let rows = reg.versions().await?;
            if j.json {
                print_json(&rows);
            } else {
                for v in rows {
                    outln!(
                        "{:<14} {:<14} {:<7} {:<24} {}",
                        v.provider,
                        v.version,
                        v.channel,
                        v.released_at.unwrap_or_else(|| "-".into()),
                        v.source
                    );
                }
            }
        }
        RegistryCommand::KnownGood { channel, json } => {
            let rows = reg.releases(channel.as_deref(), 100).await?;
            if *json {
                print_json(&rows);
            } else {
                for r in rows {
                    outln!(
                        "{:<8} {:<14} {:<34} {:<9} {} by {}",
                        r.channel,
                        short(&r.build_id),
                        r.image_ref,
                        r.kind,
                        r.released_at,
                        r.actor
                    );
                }
            }
        }
        RegistryCommand::Matrix(j) => {
            let mut rows = Vec::new();
            for b in reg.builds().await? {
                let runtimes: Vec<String> = match b.runtime_versions.as_object() {
                    Some(m) if !m.is_empty() => m
                        .iter()
                        .map(|(k, v)| format!("{k}@{}", v.as_str().unwrap_or_default()))
                        .collect(),
                    _ => vec![format!("runner@{}", b.runner_version)],
                };
                for cell in reg.latest_cells(&b.id).await? {
                    for rt in &runtimes {
                        rows.push(serde_json::json!({"runtime": rt, "build": b.id, "suite": cell.suite, "repo": cell.repo, "status": cell.status, "recorded_at": cell.recorded_at}));
                    }
                }
            }
            if j.json {
                print_json(&rows);
            } else {
                outln!(
                    "{:<28} {:<14} {:<16} {:<12} STATUS",
                    "RUNTIME",
                    "BUILD",
                    "SUITE",
                    "REPO"
                );
                for r in rows {
                    outln!(
                        "{:<28} {:<14} {:<16} {:<12} {}",
                        r["runtime"].as_str().unwrap_or(""),
                        short(r["build"].as_str().unwrap_or("")),
                        r["suite"].as_str().unwrap_or(""),
                        r["repo"].as_str().unwrap_or(""),
                        r["status"].as_str().unwrap_or("")
                    );
                }
            }
        }
        RegistryCommand::Audit { limit, json } => {
            let rows = reg.audit_log(*limit).await?;
            if *json {
                print_json(&rows);
            } else {
                for a in rows {
                    outln!(
                        "#{:<5} {} {:<10} {:<9} {:<9} {}  {}",
                        a.id,
                        a.ts,
                        a.actor,
                        a.action,
                        a.decision,
                        a.target,
                        a.reason
                    );
                }
            }
        }
        RegistryCommand::Forget { build, who, json } => {
            let actor = who.actor();
            let who = crate::gate::ops::Actor {
                name: &actor,
                reason: &who.reason,
            };
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
