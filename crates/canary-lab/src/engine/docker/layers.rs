//! Image layers built without a Dockerfile or a registry: a container from the parent, files
//! unpacked into it, committed.

use super::*;

/// An image as `docker images` lists it.
#[derive(Debug, Clone)]
pub struct ListedImage {
    pub id: String,
    pub tags: Vec<String>,
    pub labels: std::collections::BTreeMap<String, String>,
    /// Unix seconds.
    pub created: i64,
    pub size: i64,
}

impl DockerBackend {
    /// Commits `parent` plus the files of `tar` (unpacked at `/` as root) as `reference`, with
    /// extra labels and optionally a new CMD: one image layer, built without a Dockerfile or a
    /// registry. Returns the image id.
    pub async fn build_layer(
        &self,
        parent: &str,
        tar: Vec<u8>,
        reference: &str,
        cmd: Option<Vec<String>>,
        labels: HashMap<String, String>,
    ) -> Result<String> {
        let (repo, tag) = reference.rsplit_once(':').unwrap_or((reference, "latest"));
        let body = ContainerCreateBody {
            image: Some(parent.into()),
            labels: Some(owner_labels(&format!("layer-{tag}"))),
            network_disabled: Some(true),
            ..Default::default()
        };
        let created = self
            .docker
            .create_container(None::<bollard::query_parameters::CreateContainerOptions>, body)
            .await
            .map_err(docker_err("creating a build container"))?;
        let result = async {
            let options = UploadToContainerOptionsBuilder::default().path("/").build();
            self.docker
                .upload_to_container(&created.id, Some(options), bollard::body_full(tar.into()))
                .await
                .map_err(docker_err("uploading a layer"))?;
            let options = CommitContainerOptionsBuilder::default()
                .container(&created.id)
                .repo(repo)
                .tag(tag)
                .pause(false)
                .build();
            // The build container's ownership labels would pass into the image and from it into
            // every container anyone starts from it; the image is nobody's run (a commit's
            // labels win over the container's).
            let mut labels = labels;
            for key in [
                crate::engine::labels::OWNED,
                crate::engine::labels::RUN,
                crate::engine::labels::PID,
                crate::engine::labels::HOST,
            ] {
                labels.entry(key.to_string()).or_default();
            }
            let config = ContainerConfig {
                cmd,
                labels: Some(labels),
                ..Default::default()
            };
            self.docker
                .commit_container(options, config)
                .await
                .map_err(docker_err("committing a layer"))
        }
        .await;
        self.remove_container(&created.id).await?;
        Ok(result?.id)
    }

    /// Gives image `id` the name `reference` too (`docker tag`).
    pub async fn tag(&self, id: &str, reference: &str) -> Result<()> {
        let (repo, tag) = reference.rsplit_once(':').unwrap_or((reference, "latest"));
        let options = bollard::query_parameters::TagImageOptionsBuilder::default()
            .repo(repo)
            .tag(tag)
            .build();
        self.docker
            .tag_image(id, Some(options))
            .await
            .map_err(docker_err("tagging an image"))
    }

    /// Images carrying `label`, newest first.
    pub async fn images_with_label(&self, label: &str) -> Result<Vec<ListedImage>> {
        let filters: HashMap<String, Vec<String>> = HashMap::from([("label".into(), vec![label.to_string()])]);
        let options = bollard::query_parameters::ListImagesOptionsBuilder::default()
            .filters(&filters)
            .build();
        let mut images = self
            .docker
            .list_images(Some(options))
            .await
            .map_err(docker_err("listing images"))?;
        images.sort_by_key(|i| std::cmp::Reverse(i.created));
        Ok(images
            .into_iter()
            .map(|i| ListedImage {
                id: i.id,
                tags: i.repo_tags,
                labels: i.labels.into_iter().collect(),
                created: i.created,
                size: i.size,
            })
            .collect())
    }

    /// The image's filesystem layers, base first.
    pub async fn layers(&self, reference: &str) -> Result<Vec<String>> {
        let img = self
            .docker
            .inspect_image(reference)
            .await
            .map_err(docker_err("inspecting an image"))?;
        Ok(img.root_fs.and_then(|r| r.layers).unwrap_or_default())
    }

    /// Removes one reference (a tag or a `name@digest`); the image goes when nothing else names it.
    pub async fn remove_image(&self, reference: &str) -> Result<()> {
        match self
            .docker
            .remove_image(
                reference,
                Some(RemoveImageOptionsBuilder::default().force(true).build()),
                None,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(docker_err("removing an image")(e)),
        }
    }

    /// Removes the lab's runner-build, layer and executor images older than `older_than` that no
    /// container uses; the base image stays (it takes minutes to make). Everything removed is
    /// rebuilt on demand. Returns the removed images' names.
    pub async fn prune_lab_images(&self, older_than: std::time::Duration) -> Result<Vec<String>> {
        let in_use: std::collections::HashSet<String> = self
            .docker
            .list_containers(Some(
                bollard::query_parameters::ListContainersOptionsBuilder::default()
                    .all(true)
                    .build(),
            ))
            .await
            .map_err(docker_err("listing containers"))?
            .into_iter()
            .filter_map(|c| c.image_id)
            .collect();
        let cutoff = jiff::Timestamp::now().as_second() - older_than.as_secs() as i64;
        let mut removed = Vec::new();
        let mut images = self.images_with_label(crate::engine::labels::LAB).await?;
        // Newest first: a build goes before the layer images it was made from.
        images.sort_by_key(|i| std::cmp::Reverse(i.created));
        for image in images {
            let base = image.tags.iter().any(|t| t.starts_with("canary-lab/base:"));
            if base || in_use.contains(&image.id) || image.created > cutoff {
                continue;
            }
            match self
                .docker
                .remove_image(
                    &image.id,
                    Some(RemoveImageOptionsBuilder::default().force(true).build()),
                    None,
                )
                .await
            {
                Ok(_) => removed.push(image.tags.first().cloned().unwrap_or(image.id)),
                Err(e) if not_found(&e) => {}
                // A newer image that stays is built on this one (409): it stays too.
                Err(bollard::errors::Error::DockerResponseServerError { status_code: 409, .. }) => {}
                Err(e) => return Err(docker_err("removing an image")(e)),
            }
        }
        Ok(removed)
    }

    /// Removes a runner build from this engine: the executor images derived from it, then the
    /// image with every name it has (`canary-lab/build:…`, `canary-lab/layer:…`). Its lower layers
    /// stay while another build uses them. Returns the bytes the engine reported for the build
    /// image (its whole size, shared layers included).
    pub async fn remove_build(&self, image_id: &str) -> Result<i64> {
        let derived = self.images_with_label(&format!("{EXEC_BASE_LABEL}={image_id}")).await?;
        for image in &derived {
            self.remove_image(&image.id).await?;
        }
        let size = match self.docker.inspect_image(image_id).await {
            Ok(i) => i.size.unwrap_or(0),
            Err(e) if not_found(&e) => return Ok(0),
            Err(e) => return Err(docker_err("inspecting an image")(e)),
        };
        self.remove_image(image_id).await?;
        Ok(size)
    }

    /// Removes exec images of the same base made by earlier executor builds, but the newest. Best effort: an
    /// image a container still uses stays until a later prune.
    pub(super) async fn prune_exec_images(&self, base_id: &str, keep_id: &str) {
        let filters: HashMap<String, Vec<String>> =
            HashMap::from([("label".into(), vec![format!("{EXEC_BASE_LABEL}={base_id}")])]);
        let options = bollard::query_parameters::ListImagesOptionsBuilder::default()
            .filters(&filters)
            .build();
        let Ok(mut images) = self.docker.list_images(Some(options)).await else {
            return;
        };
        // Keep the newest other one too: release and debug builds of the lab alternate.
        images.sort_by_key(|i| std::cmp::Reverse(i.created));
        for image in images.into_iter().filter(|i| i.id != keep_id).skip(1) {
            let _ = self
                .docker
                .remove_image(&image.id, None::<bollard::query_parameters::RemoveImageOptions>, None)
                .await;
        }
    }
}
