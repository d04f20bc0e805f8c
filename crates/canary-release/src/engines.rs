//! The engines a command works on: every engine of `engines:` in canary.yaml, unless
//! `--engine` picked one or none are named (then the one engine `DOCKER_HOST` or the local socket
//! gives). A run places its cases on them; `canary gc` cleans each.

use crate::config::LabConfig;
use crate::engine::docker::DockerBackend;
use crate::engine::endpoint::{self, Endpoint};
use crate::engine::{Backend, GcScope};
use crate::error::{LabError, Result};
use crate::lab::{self, Prepared, RunOptions};
use crate::progress::Progress;
use crate::registry::Registry;
use crate::report::RunReport;
use std::path::PathBuf;
use std::time::Duration;

/// The named engines a command spreads over, or `None` for the one default engine.
pub fn spread(config: &LabConfig) -> Option<&[Endpoint]> {
    (!config.engines.is_empty() && endpoint::selected().is_none()).then_some(&config.engines[..])
}

/// Connects to each engine; one that cannot be reached is its error, beside the others.
pub async fn connect_each(endpoints: &[Endpoint]) -> Vec<(String, Result<DockerBackend>)> {
    let mut out = Vec::new();
    for e in endpoints {
        out.push((e.name.clone(), DockerBackend::connect_to(e).await));
    }
    out
}

/// What `canary gc` removed from the engines it works on.
pub struct Cleaned {
    /// One engine's object, or (over `engines:`) a list with each engine's name.
    pub value: serde_json::Value,
    pub lines: Vec<String>,
    /// An engine of `engines:` could not be reached (the others were cleaned).
    pub unreachable: bool,
}

/// Removes what the lab left on each engine: containers and networks as `scope` says, and,
/// given `images`, lab images made longer ago than it.
pub async fn gc(config: &LabConfig, scope: GcScope, images: Option<Duration>) -> Result<Cleaned> {
    let Some(endpoints) = spread(config) else {
        let (value, lines) = gc_one(&DockerBackend::connect().await?, scope, images).await?;
        return Ok(Cleaned {
            value,
            lines,
            unreachable: false,
        });
    };
    let (mut values, mut lines, mut unreachable) = (Vec::new(), Vec::new(), false);
    for (name, engine) in connect_each(endpoints).await {
        match engine {
            Ok(engine) => {
                let (mut value, more) = gc_one(&engine, scope.clone(), images).await?;
                value["engine"] = name.clone().into();
                values.push(value);
                lines.extend(more.into_iter().map(|l| format!("{name}: {l}")));
            }
            Err(e) => {
                unreachable = true;
                lines.push(format!("{name}: not cleaned: {e}"));
                values.push(serde_json::json!({"engine": name, "error": e.to_string()}));
            }
        }
    }
    Ok(Cleaned {
        value: values.into(),
        lines,
        unreachable,
    })
}

/// What gc removes from one engine, as JSON and as lines.
async fn gc_one(
    engine: &DockerBackend,
    scope: GcScope,
    images: Option<Duration>,
) -> Result<(serde_json::Value, Vec<String>)> {
    let r = engine.gc(scope).await?;
    let removed = match images {
        Some(older_than) => engine.prune_lab_images(older_than).await?,
        None => Vec::new(),
    };
    let lines = canary_lab::view::gc(&r, images.map(|_| &removed[..]));
    let value = serde_json::json!({"containers": r.containers, "networks": r.networks, "skipped_live": r.skipped_live, "images": removed});
    Ok((value, lines))
}

/// Runs prepared cases: on `home` alone, or spread over every engine of `engines:` (the
/// build made on `home` reaches the others through the image registry). `canary run`, `matrix`
/// and `pipeline` all run through here.
pub async fn run(
    config: &LabConfig,
    home: DockerBackend,
    prepared: Prepared,
    opts: RunOptions,
    progress: &Progress,
) -> Result<(RunReport, PathBuf)> {
    match spread(config) {
        None => lab::run(home, &config.lab(), prepared, opts, progress).await,
        Some(endpoints) => {
            let placed = place(config, &home, endpoints, &opts.images, opts.jobs, progress).await?;
            lab::run_on(placed, &config.lab(), prepared, opts, progress).await
        }
    }
}

/// Every engine of `engines:` ready for a run: connected, and holding the run's images.
async fn place(
    config: &LabConfig,
    home: &DockerBackend,
    endpoints: &[Endpoint],
    images: &[String],
    jobs: usize,
    progress: &Progress,
) -> Result<Vec<lab::placement::Engine<DockerBackend>>> {
    let mut placed = Vec::new();
    for e in endpoints {
        let backend = DockerBackend::connect_to(e).await?;
        for reference in images {
            for line in ensure(config, home, &backend, &e.name, reference).await? {
                progress.line(line);
            }
        }
        placed.push(lab::placement::Engine {
            name: Some(e.name.clone()),
            backend,
            slots: e.slots.unwrap_or(jobs).max(1),
        });
    }
    Ok(placed)
}

/// Makes engine `name` hold `reference`: there already, or pulled by digest from where it was
/// pushed. A build never pushed is pushed first from `home` (the engine builds are made on)
/// when `oci_registry:` says where; otherwise this is an error that says so. Returns what was
/// done, a line each.
pub async fn ensure(
    config: &LabConfig,
    home: &DockerBackend,
    engine: &DockerBackend,
    name: &str,
    reference: &str,
) -> Result<Vec<String>> {
    if engine.image(reference).await?.is_some() {
        return Ok(Vec::new());
    }
    let mut lines = Vec::new();
    let pulled = match crate::publish::fetch_missing(config, engine, reference).await? {
        Some(p) => p,
        None => {
            let repository = crate::publish::repository(config, None).map_err(|_| {
                LabError::usage(
                    format!("engine {name} does not have {reference}, and it was never pushed"),
                    "set oci_registry: in canary.yaml (the run pushes the build there for the other engines), or `canary images push` it",
                )
            })?;
            let reg = Registry::open(&config.registry).await?;
            let p = crate::publish::push_from(home, &reg, reference, &repository).await?;
            lines.push(format!("pushed build {} as {}", p.build.short(), p.pushed));
            crate::publish::fetch_missing(config, engine, reference)
                .await?
                .ok_or_else(|| {
                    LabError::usage(
                        format!("engine {name} could not take {reference} from its registry"),
                        "check `canary images pull` on that engine",
                    )
                })?
        }
    };
    lines.push(format!("engine {name}: {}", crate::publish::pulled_line(&pulled)));
    Ok(lines)
}
