//! Image layers built without a Dockerfile or a registry: the layer's tar loaded as the top of an
//! image whose other layers the engine has (`docker load` of an archive that names them without
//! carrying them), or, where the engine will not take that, a container from the parent with the
//! files unpacked into it, committed.

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

/// One image layer to build: the files of `tar` unpacked at `/` (as root) over `parent`.
pub struct Layer<'a> {
    pub parent: &'a str,
    pub tar: Vec<u8>,
    /// The name the layer's image gets.
    pub reference: &'a str,
    /// A new CMD, when the layer changes it.
    pub cmd: Option<Vec<String>>,
    /// Labels over the parent's.
    pub labels: HashMap<String, String>,
}

impl DockerBackend {
    /// Commits `parent` plus the files of `tar` (unpacked at `/` as root) as `reference`, with
    /// extra labels and optionally a new CMD: one image layer, built without a Dockerfile or a
    /// registry. Returns the image id.
    pub async fn build_layer(&self, mut layer: Layer<'_>) -> Result<String> {
        layer.labels = without_owner(layer.labels);
        match self.load_layer(&layer).await {
            Ok(id) => Ok(id),
            Err(e) => {
                let reference = layer.reference;
                tracing::info!("loading layer {reference} failed ({e}); committing it from a container instead");
                self.commit_layer(layer).await
            }
        }
    }

    /// The layer as the top of an image the engine loads: the parent's config with `cmd` and
    /// `labels` over it, its layers named but not sent (the engine skips a layer it has, so only
    /// the new tar is unpacked, once, and not through a container's filesystem: on
    /// fuse-overlayfs 2.9 s for a 360 MB CLI against 9.2 s for create + copy + commit).
    async fn load_layer(&self, layer: &Layer<'_>) -> Result<String> {
        let Layer {
            parent,
            ref tar,
            reference,
            ref cmd,
            ref labels,
        } = *layer;
        let p = self
            .docker
            .inspect_image(parent)
            .await
            .map_err(docker_err("inspecting a layer's parent"))?;
        let mut layers = p.root_fs.and_then(|r| r.layers).unwrap_or_default();
        let diff_id = format!("sha256:{}", hex::encode(Sha256::digest(tar)));
        layers.push(diff_id);
        let mut config = serde_json::to_value(p.config.unwrap_or_default()).map_err(|e| LabError::Docker {
            context: "reading a layer's parent config".into(),
            message: e.to_string(),
        })?;
        let mut all_labels: std::collections::BTreeMap<String, String> =
            serde_json::from_value(config["Labels"].take()).unwrap_or_default();
        all_labels.extend(labels.clone());
        config["Labels"] = serde_json::json!(all_labels);
        if let Some(cmd) = cmd {
            config["Cmd"] = serde_json::json!(cmd);
        }
        let image = serde_json::json!({
            "architecture": p.architecture.unwrap_or_else(|| "amd64".into()),
            "os": p.os.unwrap_or_else(|| "linux".into()),
            "created": jiff::Timestamp::now().to_string(),
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": layers},
        });
        let paths: Vec<String> = (0..layers.len() - 1)
            .map(|i| format!("parent/{i}/layer.tar"))
            .chain(std::iter::once("new/layer.tar".to_string()))
            .collect();
        let manifest = serde_json::json!([{"Config": "config.json", "RepoTags": [reference], "Layers": paths}]);
        let archive = load_archive(&manifest.to_string(), &image.to_string(), tar)?;
        let mut stream = self.docker.import_image(
            bollard::query_parameters::ImportImageOptionsBuilder::default()
                .quiet(true)
                .build(),
            bollard::body_full(archive.into()),
            None,
        );
        while let Some(item) = stream.next().await {
            item.map_err(docker_err("loading a layer"))?;
        }
        let loaded = self
            .docker
            .inspect_image(reference)
            .await
            .map_err(docker_err("inspecting a loaded layer"))?;
        // The engine must hold exactly the chain named: a store that loads differently is not
        // trusted with the build.
        if loaded.root_fs.and_then(|r| r.layers).unwrap_or_default() != layers {
            return Err(LabError::Docker {
                context: "loading a layer".into(),
                message: format!("{reference} did not load as the layers it names"),
            });
        }
        loaded.id.ok_or_else(|| LabError::Docker {
            context: "loading a layer".into(),
            message: "the engine reported no image id".into(),
        })
    }

    /// The layer committed from a container of `parent` with the tar unpacked into it.
    async fn commit_layer(&self, layer: Layer<'_>) -> Result<String> {
        let Layer {
            parent,
            tar,
            reference,
            cmd,
            labels,
        } = layer;
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

/// The labels an image layer gets: the given ones, with the lab's ownership labels blanked. A
/// build container's ownership labels would pass into the image and from it into every
/// container anyone starts from it; the image is nobody's run (a commit's labels win over the
/// container's).
fn without_owner(mut labels: HashMap<String, String>) -> HashMap<String, String> {
    for key in [
        crate::engine::labels::OWNED,
        crate::engine::labels::RUN,
        crate::engine::labels::PID,
        crate::engine::labels::HOST,
    ] {
        labels.entry(key.to_string()).or_default();
    }
    labels
}

/// A `docker load` archive: its manifest, the image config, and the one new layer's tar.
fn load_archive(manifest: &str, config: &str, layer: &[u8]) -> Result<Vec<u8>> {
    let mut out = tar::Builder::new(Vec::with_capacity(layer.len() + (64 << 10)));
    for (path, data) in [
        ("manifest.json", manifest.as_bytes()),
        ("config.json", config.as_bytes()),
        ("new/layer.tar", layer),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        out.append_data(&mut h, path, data).map_err(|e| LabError::Docker {
            context: "packing a layer to load".into(),
            message: e.to_string(),
        })?;
    }
    out.into_inner().map_err(|e| LabError::Docker {
        context: "packing a layer to load".into(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_load_archive_holds_the_manifest_the_config_and_only_the_new_layer() {
        let layer = b"a layer's bytes".repeat(100);
        let a = load_archive("[{\"Layers\":[]}]", "{}", &layer).unwrap();
        let mut names = Vec::new();
        for e in tar::Archive::new(a.as_slice()).entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().display().to_string();
            let mut body = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut body).unwrap();
            if name == "new/layer.tar" {
                assert_eq!(body, layer);
            }
            names.push(name);
        }
        assert_eq!(names, ["manifest.json", "config.json", "new/layer.tar"]);
        let l = without_owner(HashMap::from([("x".to_string(), "1".to_string())]));
        assert_eq!(l[crate::engine::labels::OWNED], "");
        assert_eq!(l["x"], "1");
    }
}
