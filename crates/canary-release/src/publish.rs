//! `canary images push` and `pull`, and the run's fetch of a build it lacks: a runner build
//! published to an OCI registry and its reference recorded with the build, so that channels,
//! pins, rollouts, assignments and update offers carry it and any engine can take the build by
//! digest.

use crate::config::LabConfig;
use crate::distribution::{self, Published, Pulled};
use crate::engine::Backend;
use crate::engine::docker::DockerBackend;
use crate::error::{LabError, Result};
use crate::registry::{BuildInfo, Registry};
use canary_contract::BuildId;
use canary_contract::oci::Repository;

/// The repository to push to: `--to`, else `oci_registry:` in canary.yaml.
pub fn repository(config: &LabConfig, to: Option<&str>) -> Result<Repository> {
    let Some(address) = to.or(config.oci_registry.as_deref()) else {
        return Err(LabError::usage(
            "no image registry to push to",
            "give --to HOST[:PORT]/REPOSITORY, or set oci_registry: in canary.yaml",
        ));
    };
    Repository::parse(address).map_err(|m| {
        let from = if to.is_some() {
            "--to"
        } else {
            "oci_registry: in canary.yaml"
        };
        LabError::usage(
            format!("{from}: {m}"),
            "give HOST[:PORT]/REPOSITORY of a registry that speaks TLS",
        )
    })
}

/// Pushes `build` (an image this engine has, or a build the registry names) and records where.
/// Everything about the input is checked before the engine or the registry is touched.
pub async fn push(config: &LabConfig, build: &str, to: Option<&str>) -> Result<Published> {
    let repository = repository(config, to)?;
    let engine = DockerBackend::connect().await?;
    let reg = Registry::open(&config.registry).await?;
    push_from(&engine, &reg, build, &repository).await
}

/// Pushes `build` from `engine` and records where, in `reg`.
pub async fn push_from(
    engine: &DockerBackend,
    reg: &Registry,
    build: &str,
    repository: &Repository,
) -> Result<Published> {
    let image = match engine.image(build).await? {
        Some(i) => i.id,
        None => reg.resolve_build(build).await?.as_str().to_string(),
    };
    let published = distribution::push(engine, &image, repository).await?;
    let labels = engine
        .image(published.build.as_str())
        .await?
        .map(|i| i.labels)
        .unwrap_or_default();
    reg.record_build(&BuildInfo::from_image(&published.build, &published.reference, &labels))
        .await?;
    reg.record_push(&published.build, &published.pushed).await?;
    Ok(published)
}

/// Takes `build` (a name the registry resolves) from where it was pushed, by digest.
pub async fn pull(config: &LabConfig, build: &str) -> Result<Pulled> {
    let reg = Registry::open_existing(&config.registry).await?;
    let id = reg.resolve_build(build).await?;
    let pushed = reg.pushed_ref(&id).await?.ok_or_else(|| never_pushed(&id))?;
    let engine = DockerBackend::connect().await?;
    distribution::pull(&engine, &id, &pushed).await
}

fn never_pushed(id: &BuildId) -> LabError {
    LabError::usage(
        format!("build {} was never pushed to an image registry", id.short()),
        format!("run `canary images push {}` on a lab whose engine has it", id.short()),
    )
}

/// For an image `engine` lacks (the caller has looked): when the registry knows the build and
/// where it was pushed, pull it by digest. `Ok(None)`: nothing to take (the run reports the
/// missing image with how to build it); a pull that fails or is refused is an error.
pub async fn fetch_missing(config: &LabConfig, engine: &DockerBackend, reference: &str) -> Result<Option<Pulled>> {
    let Ok(reg) = Registry::open_existing(&config.registry).await else {
        return Ok(None);
    };
    let Ok(id) = reg.resolve_build(reference).await else {
        return Ok(None);
    };
    match reg.pushed_ref(&id).await? {
        Some(pushed) => distribution::pull(engine, &id, &pushed).await.map(Some),
        None => Ok(None),
    }
}

/// How a run says it took a build from its registry.
pub fn pulled_line(p: &crate::distribution::Pulled) -> String {
    match &p.transfer {
        Some(t) => format!(
            "pulled build {} from {} ({} layers fetched, {} already here)",
            p.build.short(),
            p.pushed,
            t.layers_moved,
            t.layers_present
        ),
        None => format!("build {} is already in this engine", p.build.short()),
    }
}
