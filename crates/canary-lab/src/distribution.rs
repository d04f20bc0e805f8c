//! Runner builds published to an OCI registry and taken back by digest: the rules of the lab's
//! side (what may be pushed, what a pulled image must be), over the engine's push and pull.
//! Recording the pushed reference with the build is the registry's part (`canary-release`).

use crate::builds::BuildManifest;
use crate::engine::Backend;
use crate::engine::credentials;
use crate::engine::docker::{DockerBackend, Transfer};
use crate::error::{LabError, Result};
use canary_contract::BuildId;
use canary_contract::oci::{PushedRef, Repository};
use serde::Serialize;

/// A build pushed: the reference every engine pulls it by, and what moved.
#[derive(Debug, Clone, Serialize)]
pub struct Published {
    pub build: BuildId,
    /// The lab's local reference (`canary-lab/build:KEY`).
    pub reference: String,
    pub pushed: PushedRef,
    pub manifest: BuildManifest,
    pub transfer: Transfer,
    /// Where the credentials came from (`None`: the registry was asked without any).
    pub credentials: Option<String>,
}

/// A build taken from its registry (or found already present).
#[derive(Debug, Clone, Serialize)]
pub struct Pulled {
    pub build: BuildId,
    pub pushed: PushedRef,
    /// The lab's local reference the image was tagged with.
    pub reference: String,
    /// `None`: the engine already had it, nothing moved.
    pub transfer: Option<Transfer>,
}

/// Pushes the runner build `image` (a reference or id in this engine) to `repository`, tagged
/// by its build key. An image that is not a runner build is refused before anything moves.
pub async fn push(engine: &DockerBackend, image: &str, repository: &Repository) -> Result<Published> {
    let info = engine.image(image).await?.ok_or_else(|| LabError::ImageMissing {
        image: crate::text::clean(image).to_string(),
        hint: "push a build this engine has: `canary images list` shows them, `canary images pull BUILD` takes one from its registry".into(),
    })?;
    let labels = info.labels.into_iter().collect();
    let manifest = BuildManifest::from_labels(&labels).ok_or_else(|| {
        LabError::usage(
            format!(
                "`{}` is not a runner build (it carries no build manifest)",
                crate::text::clean(image)
            ),
            "push what `canary images build` made: `canary images list` shows them",
        )
    })?;
    let build: BuildId = info
        .id
        .parse()
        .map_err(|m: String| LabError::usage(m, "the engine reported an image id the lab cannot read"))?;
    let creds = credentials::for_host(repository.host())?;
    // The push needs the registry's name on the image; the lab's own name stays, so taking the
    // registry's off afterwards leaves the build as it was.
    engine.tag(build.as_str(), &manifest.reference()).await?;
    let pushed_tag = format!("{}:{}", repository.name(), manifest.key());
    let result = engine
        .push_image(build.as_str(), repository, &manifest.key(), creds.as_ref())
        .await;
    engine.remove_image(&pushed_tag).await?;
    let (pushed, transfer) = result?;
    Ok(Published {
        build,
        reference: manifest.reference(),
        pushed,
        manifest,
        transfer,
        credentials: creds.map(|c| c.source),
    })
}

/// Makes `build` present in this engine from `pushed`, by digest; an image whose id is not the
/// build's is removed and refused (a registry that serves another image under the recorded
/// reference, a row someone changed). The image is tagged with the build's local reference.
pub async fn pull(engine: &DockerBackend, build: &BuildId, pushed: &PushedRef) -> Result<Pulled> {
    let present = engine.image(build.as_str()).await?;
    let transfer = match present {
        Some(_) => None,
        None => {
            let creds = credentials::for_host(pushed.repository().host())?;
            let (id, transfer) = engine.pull_image(pushed, creds.as_ref()).await?;
            if id != build.as_str() {
                engine.remove_image(&pushed.to_string()).await?;
                return Err(refused(build, pushed, &id));
            }
            Some(transfer)
        }
    };
    let labels = engine
        .image(build.as_str())
        .await?
        .map(|i| i.labels.into_iter().collect())
        .unwrap_or_default();
    let manifest = BuildManifest::from_labels(&labels).ok_or_else(|| {
        LabError::usage(
            format!("{pushed} is not a runner build (it carries no build manifest)"),
            "the registry's image is not one the lab pushed; push the build again",
        )
    })?;
    let reference = manifest.reference();
    engine.tag(build.as_str(), &reference).await?;
    Ok(Pulled {
        build: build.clone(),
        pushed: pushed.clone(),
        reference,
        transfer,
    })
}

fn refused(build: &BuildId, pushed: &PushedRef, got: &str) -> LabError {
    LabError::ImageRegistry {
        registry: pushed.repository().host().to_string(),
        message: format!(
            "{pushed} is image {}, not build {}: refused and removed",
            canary_contract::build::short_id(got),
            build.short()
        ),
        hint: "the registry's content under the recorded reference is not the build that was judged; push the build again from a lab that has it (`canary images push`)".into(),
    }
}
