//! Runner builds: the object that ships. A build is a base image, the runner, and one layer per
//! agent CLI at an exact version; channels, org pins, rollbacks and candidates all name whole
//! builds, so a platform's runner (which runs every CLI at once) is judged and moved as one.
//!
//! The rules live in [`BuildManifest`] (what a build holds, what one change makes of it, what
//! changed between two builds) and need no engine. [`ensure`] and [`derive`] turn manifests into
//! images:
//! - `ensure` stacks the canonical chain (base → runner → CLIs in [`Provider::ALL`] order), every
//!   prefix tagged `canary-lab/layer:<key of the prefix>`, so a build sharing a prefix with an
//!   earlier one reuses those layers as they are;
//! - `derive` makes "the same build with one component changed" as exactly one new layer on top
//!   of the parent (the new CLI folder and its command link), so no lower layer is rebuilt and no
//!   wheel is fetched twice. After [`MAX_DELTAS`] such layers the next change rebuilds the
//!   canonical chain, which bounds image depth.
//!
//! Either way the final image is tagged `canary-lab/build:<key>`, where the key hashes the base
//! and every component's digest: one component set, one tag. A build whose CLI does not report
//! the version it was built for loses its tags and is never returned (so never recorded).

use crate::Settings;
use crate::engine::Backend;
use crate::engine::docker::{DockerBackend, Layer};
use crate::error::{LabError, Result};
use crate::progress::Progress;
use crate::providers::{Fetched, Provider, ProviderSpec};
use canary_contract::BuildId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Image labels a runner image carries to describe itself (set when the image is built).
pub use canary_contract::build::labels;

/// Final build images.
pub const BUILD_REPO: &str = "canary-lab/build";
/// Canonical prefixes of builds (reused by later builds that share them).
pub const LAYER_REPO: &str = "canary-lab/layer";
/// The label holding a build's manifest (JSON).
pub const MANIFEST_LABEL: &str = "canary-lab.build";
/// Delta layers a build may stack on its canonical chain before a change rebuilds it.
pub const MAX_DELTAS: u32 = 6;
/// Bump when the layout of build layers changes; it is part of every key.
const LAYOUT: &str = "build-2";
/// Where the runner lives in a build.
pub const RUNNER_PATH: &str = "usr/local/bin/canary-runner";

pub use canary_contract::build::{Change, Component, RUNNER, RUNNER_IMAGE_PREFIX};

/// The component a fetched CLI makes.
pub fn component_of(f: &Fetched) -> Component {
    Component {
        name: f.provider.name().into(),
        version: f.cli_version.clone(),
        package: Some(f.package.clone()),
        package_version: Some(f.package_version.clone()),
        digest: f.wheel_sha256.clone(),
    }
}

/// The spec that fetches a component's CLI again (from the cache when it is there).
pub fn spec_of(c: &Component) -> Option<ProviderSpec> {
    Some(ProviderSpec {
        provider: c.provider()?,
        package_version: c.package_version.clone(),
    })
}

/// What a build holds. Components are kept in layer order: the runner first, then CLIs in
/// [`Provider::ALL`] order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildManifest {
    /// The image the build starts from (the lab's base image id, or a user's runner image).
    pub base: String,
    pub components: Vec<Component>,
    /// Layers stacked on the canonical chain by one-component changes.
    #[serde(default)]
    pub deltas: u32,
}

fn rank(name: &str) -> usize {
    if name == RUNNER {
        return 0;
    }
    Provider::from_name(name)
        .and_then(|p| Provider::ALL.iter().position(|q| *q == p))
        .map_or(usize::MAX, |i| i + 1)
}

impl BuildManifest {
    /// A manifest from components in any order; two components of one name are an error.
    pub fn new(base: &str, mut components: Vec<Component>) -> Result<BuildManifest> {
        components.sort_by(|a, b| rank(&a.name).cmp(&rank(&b.name)).then(a.name.cmp(&b.name)));
        if let Some(w) = components.windows(2).find(|w| w[0].name == w[1].name) {
            return Err(LabError::usage(
                format!(
                    "two versions of {} in one build ({} and {})",
                    w[0].name, w[0].version, w[1].version
                ),
                "a build carries each CLI once: give one --provider per CLI",
            ));
        }
        Ok(BuildManifest {
            base: base.into(),
            components,
            deltas: 0,
        })
    }

    /// The key of the first `n` components on the base: what a canonical prefix is tagged by.
    pub fn prefix_key(&self, n: usize) -> String {
        let mut h = Sha256::new();
        for part in [LAYOUT, self.base.as_str()] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        for c in &self.components[..n] {
            for part in [c.name.as_str(), c.version.as_str(), c.digest.as_str()] {
                h.update(part.as_bytes());
                h.update([0]);
            }
            h.update([1]);
        }
        hex::encode(h.finalize())[..16].to_string()
    }

    /// The build's key: one component set on one base, one key (whatever its layer history).
    pub fn key(&self) -> String {
        self.prefix_key(self.components.len())
    }

    pub fn reference(&self) -> String {
        format!("{BUILD_REPO}:{}", self.key())
    }

    pub fn component(&self, name: &str) -> Option<&Component> {
        self.components.iter().find(|c| c.name == name)
    }

    pub fn runner(&self) -> Option<&Component> {
        self.component(RUNNER)
    }

    /// The CLIs, in layer order.
    pub fn clis(&self) -> impl Iterator<Item = &Component> {
        self.components.iter().filter(|c| c.name != RUNNER)
    }

    /// Provider names the build bundles.
    pub fn providers(&self) -> Vec<String> {
        self.clis().map(|c| c.name.clone()).collect()
    }

    /// The same build with `change` in place of the component of its name. Changing a
    /// component the build lacks is an error; a change to the same digest changes nothing.
    pub fn with_change(&self, change: Component) -> Result<BuildManifest> {
        let Some(i) = self.components.iter().position(|c| c.name == change.name) else {
            return Err(LabError::usage(
                format!("the build has no component `{}`", crate::text::clean(&change.name)),
                format!(
                    "it has: {}; `canary images build --provider` makes a build with other CLIs",
                    self.components
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        };
        let mut next = self.clone();
        if next.components[i].digest != change.digest {
            next.components[i] = change;
            next.deltas += 1;
        }
        Ok(next)
    }

    /// What changed from `before` (`None`: nothing before) to this build.
    pub fn changes_from(&self, before: Option<&BuildManifest>) -> Vec<Change> {
        let mut out = Vec::new();
        for c in &self.components {
            let old = before.and_then(|b| b.component(&c.name));
            if old.is_none_or(|o| o.digest != c.digest) {
                out.push(Change {
                    component: c.name.clone(),
                    from: old.map(|o| o.version.clone()),
                    to: Some(c.version.clone()),
                });
            }
        }
        for o in before.map(|b| b.components.as_slice()).unwrap_or_default() {
            if self.component(&o.name).is_none() {
                out.push(Change {
                    component: o.name.clone(),
                    from: Some(o.version.clone()),
                    to: None,
                });
            }
        }
        out
    }

    /// The image labels a build carries: its manifest, and the summary labels the registry and
    /// older tools read (`runtimes`, `adapters`, `runner-version`).
    pub fn labels(&self) -> HashMap<String, String> {
        let mut l = HashMap::new();
        l.insert(
            MANIFEST_LABEL.into(),
            serde_json::to_string(self).expect("manifest serializes"),
        );
        l.insert(
            labels::RUNTIMES.into(),
            self.clis()
                .map(|c| format!("{}={}", c.name, c.version))
                .collect::<Vec<_>>()
                .join(","),
        );
        l.insert(
            labels::ADAPTERS.into(),
            self.clis()
                .filter_map(|c| c.provider().map(|p| p.adapter()))
                .collect::<Vec<_>>()
                .join(","),
        );
        l.insert(
            labels::RUNNER_VERSION.into(),
            self.runner()
                .map_or_else(|| "unversioned".into(), |r| r.version.clone()),
        );
        l
    }

    /// The manifest an image's labels carry, if it is a build.
    pub fn from_labels(labels: &BTreeMap<String, String>) -> Option<BuildManifest> {
        serde_json::from_str(labels.get(MANIFEST_LABEL)?).ok()
    }

    /// `runner 0.1.0+ab12, codex 0.163.0, claude-code 2.1.330`.
    pub fn summary(&self) -> String {
        self.components
            .iter()
            .map(Component::display)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The runner built beside this `canary` (`canary-runner` in the same folder) as a component:
/// its version is the crate version plus the binary's digest, so a rebuilt runner is a new
/// component version.
pub fn local_runner() -> Result<(Component, PathBuf)> {
    let path = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("canary-runner")))
        .filter(|p| p.is_file())
        .ok_or_else(|| {
            LabError::usage(
                "canary-runner is not installed next to canary",
                "build both: `cargo build --bins` (the Justfile's `build` recipe)",
            )
        })?;
    let bytes = std::fs::read(&path).map_err(|e| LabError::read(&path, e))?;
    let digest = hex::encode(Sha256::digest(&bytes));
    Ok((
        Component {
            name: RUNNER.into(),
            version: format!("{}+{}", env!("CARGO_PKG_VERSION"), &digest[..12]),
            package: None,
            package_version: None,
            digest: format!("sha256:{digest}"),
        },
        path,
    ))
}

/// What one `--set` names: the local runner, or a CLI at a version.
#[derive(Debug, Clone)]
pub enum Set {
    Runner,
    Cli(ProviderSpec),
}

impl std::str::FromStr for Set {
    type Err = LabError;
    fn from_str(s: &str) -> Result<Set> {
        if s == RUNNER || s == "runner@local" {
            return Ok(Set::Runner);
        }
        Ok(Set::Cli(s.parse()?))
    }
}

/// A build as it exists in the engine.
#[derive(Debug, Clone, Serialize)]
pub struct Build {
    pub reference: String,
    pub id: BuildId,
    pub manifest: BuildManifest,
    /// Layers this call committed, and layers it found and reused (base excluded).
    pub layers_built: usize,
    pub layers_reused: usize,
    /// What each CLI's `--version` printed inside the build.
    pub version_output: BTreeMap<String, String>,
}

/// The files of one component's layer, where they come from on the lab host.
enum Source {
    Runner(PathBuf),
    Cli(Fetched),
    /// Already in the base image (a user's runner image): the layer only records the manifest.
    InBase,
}

impl Source {
    fn tar(&self) -> Result<Vec<u8>> {
        match self {
            Source::Runner(path) => {
                let bytes = std::fs::read(path).map_err(|e| LabError::read(path, e))?;
                let mut b = tar::Builder::new(Vec::new());
                let mut h = tar::Header::new_gnu();
                h.set_mode(0o755);
                h.set_size(bytes.len() as u64);
                h.set_mtime(crate::images::content_mtime(&bytes));
                b.append_data(&mut h, RUNNER_PATH, bytes.as_slice())
                    .map_err(|e| LabError::ImageBuild(e.to_string()))?;
                b.into_inner().map_err(|e| LabError::ImageBuild(e.to_string()))
            }
            Source::Cli(f) => crate::images::provider_layer(f),
            Source::InBase => tar::Builder::new(Vec::new())
                .into_inner()
                .map_err(|e| LabError::ImageBuild(e.to_string())),
        }
    }
}

async fn fetch_all(specs: Vec<ProviderSpec>, cache: &Path, progress: &Progress) -> Result<Vec<Fetched>> {
    let mut out = Vec::new();
    for spec in specs {
        progress.line(format!(
            "fetching {}{}",
            spec.provider.name(),
            spec.package_version
                .as_deref()
                .map(|v| format!(" ({v})"))
                .unwrap_or_default()
        ));
        let cache = cache.to_path_buf();
        out.push(
            tokio::task::spawn_blocking(move || crate::providers::fetch(&spec, &cache))
                .await
                .expect("fetch task")?,
        );
    }
    Ok(out)
}

/// Refuses two specs of one CLI: a build carries each CLI once.
pub fn refuse_duplicates(specs: &[ProviderSpec]) -> Result<()> {
    for (i, s) in specs.iter().enumerate() {
        if specs[..i].iter().any(|o| o.provider == s.provider) {
            return Err(LabError::usage(
                format!("--provider names {} twice", s.provider.name()),
                "a build carries each CLI once: give one --provider per CLI",
            ));
        }
    }
    Ok(())
}

/// Builds (or finds) the build of the local runner and these CLIs on the lab's base image.
pub async fn ensure(
    engine: &DockerBackend,
    config: &Settings,
    specs: &[ProviderSpec],
    progress: &Progress,
) -> Result<Build> {
    ensure_with(engine, config, specs, &RunnerChoice::Local, progress).await
}

/// Where a build's runner comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunnerChoice {
    /// The reference `canary-runner` built beside this `canary`, on the lab's base image.
    Local,
    /// A user's runner image that implements the Runner Contract: it is the build's base, with
    /// `canary-runner` on its PATH, and its version in the label `canary-lab.runner-version`
    /// or `org.opencontainers.image.version`.
    Image(String),
}

/// The runner component of a user's runner image, and the image id the build stacks on.
pub async fn runner_from_image(engine: &DockerBackend, reference: &str) -> Result<(Component, String)> {
    let info = engine.image(reference).await?.ok_or_else(|| LabError::ImageMissing {
        image: crate::text::clean(reference).into_owned(),
        hint: "build or load the runner image into this engine first (no registry is pulled from)".into(),
    })?;
    let version = [labels::RUNNER_VERSION, "org.opencontainers.image.version"]
        .iter()
        .find_map(|k| info.labels.get(*k))
        .filter(|v| !v.trim().is_empty() && v.len() <= 128 && !v.chars().any(char::is_control))
        .cloned()
        .ok_or_else(|| {
            LabError::usage(
                format!(
                    "runner image {} does not say its version",
                    crate::text::clean(reference)
                ),
                format!(
                    "label it: `LABEL {}=1.2.3` (or org.opencontainers.image.version); `canary-runner --version` in it must print the same",
                    labels::RUNNER_VERSION
                ),
            )
        })?;
    Ok((
        Component {
            name: RUNNER.into(),
            version,
            package: Some(format!("{RUNNER_IMAGE_PREFIX}{reference}")),
            package_version: None,
            digest: info.id.clone(),
        },
        info.id,
    ))
}

/// Builds (or finds) the build of `runner` and these CLIs.
pub async fn ensure_with(
    engine: &DockerBackend,
    config: &Settings,
    specs: &[ProviderSpec],
    runner: &RunnerChoice,
    progress: &Progress,
) -> Result<Build> {
    refuse_duplicates(specs)?;
    let (base_id, runner_component, runner_source) = match runner {
        RunnerChoice::Local => {
            let base = crate::images::ensure_base(engine, config, false, progress).await?;
            let (c, path) = local_runner()?;
            (base.id, c, Source::Runner(path))
        }
        RunnerChoice::Image(reference) => {
            let (c, id) = runner_from_image(engine, reference).await?;
            (id, c, Source::InBase)
        }
    };
    let fetched = fetch_all(specs.to_vec(), &config.cache_dir, progress).await?;
    let mut components = vec![runner_component];
    components.extend(fetched.iter().map(component_of));
    let manifest = BuildManifest::new(&base_id, components)?;
    let mut sources: HashMap<String, Source> = fetched
        .into_iter()
        .map(|f| (f.provider.name().to_string(), Source::Cli(f)))
        .collect();
    sources.insert(RUNNER.into(), runner_source);
    canonical(engine, &manifest, &mut sources, progress).await
}

/// The canonical chain of `manifest`: each prefix found or built on the one below.
/// One component's files as a layer over `parent` named `reference`; its image id.
async fn component_layer(
    engine: &DockerBackend,
    parent: &str,
    source: Source,
    reference: &str,
    labels: HashMap<String, String>,
) -> Result<String> {
    let tar = tokio::task::spawn_blocking(move || source.tar())
        .await
        .expect("tar task")?;
    engine
        .build_layer(Layer {
            parent,
            tar,
            reference,
            cmd: None,
            labels,
        })
        .await
}

async fn canonical(
    engine: &DockerBackend,
    manifest: &BuildManifest,
    sources: &mut HashMap<String, Source>,
    progress: &Progress,
) -> Result<Build> {
    let manifest = BuildManifest {
        deltas: 0,
        ..manifest.clone()
    };
    let reference = manifest.reference();
    let (mut built, mut reused) = (0, 0);
    let mut parent = manifest.base.clone();
    let mut made = Vec::new();
    for n in 1..=manifest.components.len() {
        let prefix = BuildManifest {
            components: manifest.components[..n].to_vec(),
            ..manifest.clone()
        };
        let layer_ref = format!("{LAYER_REPO}:{}", manifest.prefix_key(n));
        if let Some(info) = engine.image(&layer_ref).await? {
            parent = info.id;
            reused += 1;
            continue;
        }
        let c = &manifest.components[n - 1];
        let source = sources
            .remove(&c.name)
            .ok_or_else(|| LabError::ImageBuild(format!("no source for component {}", c.name)))?;
        progress.line(format!("building layer {}: {}", n, c.display()));
        parent = component_layer(engine, &parent, source, &layer_ref, prefix.labels()).await?;
        made.push(layer_ref);
        built += 1;
    }
    engine.tag(&parent, &reference).await?;
    let build = Build {
        reference: reference.clone(),
        id: engine_build_id(parent)?,
        manifest: manifest.clone(),
        layers_built: built,
        layers_reused: reused,
        version_output: BTreeMap::new(),
    };
    verify(engine, build, manifest.components.iter().collect(), &made).await
}

/// The build `from` (an image reference or id of a build) with each `set` component changed,
/// one layer per change on top of it.
pub async fn derive(
    engine: &DockerBackend,
    config: &Settings,
    from: &str,
    set: &[Set],
    progress: &Progress,
) -> Result<Build> {
    let parent = engine.image(from).await?.ok_or_else(|| LabError::ImageMissing {
        image: from.into(),
        hint: "`canary images list` shows the lab's builds".into(),
    })?;
    let manifest = BuildManifest::from_labels(&parent.labels).ok_or_else(|| {
        LabError::usage(
            format!(
                "image {} is not a runner build (it has no {MANIFEST_LABEL} label)",
                crate::text::clean(from)
            ),
            "make one with `canary images build --provider codex@VERSION ...`",
        )
    })?;
    let mut specs = Vec::new();
    for s in set {
        if let Set::Cli(spec) = s {
            if manifest.component(spec.provider.name()).is_none() {
                // Checked before anything is fetched.
                manifest.with_change(Component {
                    name: spec.provider.name().into(),
                    version: String::new(),
                    package: None,
                    package_version: None,
                    digest: String::new(),
                })?;
            }
            specs.push(spec.clone());
        }
    }
    refuse_duplicates(&specs)?;
    let fetched = fetch_all(specs, &config.cache_dir, progress).await?;
    let mut next = manifest.clone();
    let mut changes: Vec<(Component, Source)> = Vec::new();
    for s in set {
        let (component, source) = match s {
            Set::Runner => {
                if let Some(r) = manifest.runner().filter(|r| r.from_image()) {
                    return Err(LabError::usage(
                        format!(
                            "this build's runner comes from the image {}, not from this canary",
                            crate::text::clean(
                                r.package
                                    .as_deref()
                                    .unwrap_or("")
                                    .trim_start_matches(RUNNER_IMAGE_PREFIX)
                            )
                        ),
                        "build anew on the new runner image: `canary images build --runner-image IMAGE --provider ...`",
                    ));
                }
                let (c, p) = local_runner()?;
                (c, Source::Runner(p))
            }
            Set::Cli(spec) => {
                let f = fetched
                    .iter()
                    .find(|f| f.provider == spec.provider)
                    .expect("fetched above")
                    .clone();
                (component_of(&f), Source::Cli(f))
            }
        };
        let before = next.clone();
        next = next.with_change(component.clone())?;
        if next != before {
            changes.push((component, source));
        }
    }
    apply(engine, config, &parent.id, &manifest, next, changes, progress).await
}

/// A chain deeper than [`MAX_DELTAS`] is rebuilt as one canonical image: every CLI fetched
/// again, the changed runner (or the base image's) kept.
async fn rebuild(
    engine: &DockerBackend,
    config: &Settings,
    next: &BuildManifest,
    changes: Vec<(Component, Source)>,
    progress: &Progress,
) -> Result<Build> {
    progress.line(format!(
        "{} changes stacked on this build's chain: rebuilding it canonically",
        next.deltas - 1
    ));
    let specs: Vec<ProviderSpec> = next.clis().filter_map(spec_of).collect();
    let fetched = fetch_all(specs, &config.cache_dir, progress).await?;
    let mut sources: HashMap<String, Source> = fetched
        .into_iter()
        .map(|f| (f.provider.name().to_string(), Source::Cli(f)))
        .collect();
    for (c, s) in changes {
        if c.name == RUNNER {
            sources.insert(RUNNER.into(), s);
        }
    }
    if !sources.contains_key(RUNNER) {
        let from_image = next.runner().is_some_and(Component::from_image);
        if from_image {
            sources.insert(RUNNER.into(), Source::InBase);
        } else {
            let (_, p) = local_runner()?;
            sources.insert(RUNNER.into(), Source::Runner(p));
        }
    }
    let components = next
        .components
        .iter()
        .map(|c| match sources.get(&c.name) {
            Some(Source::Cli(f)) => component_of(f),
            _ => c.clone(),
        })
        .collect();
    let rebuilt = BuildManifest::new(&next.base, components)?;
    canonical(engine, &rebuilt, &mut sources, progress).await
}

/// Makes `next` (= `manifest` with `changes`) from the image `parent_id`: found by its key,
/// stacked as delta layers, or rebuilt canonically when the chain is deep enough.
async fn apply(
    engine: &DockerBackend,
    config: &Settings,
    parent_id: &str,
    manifest: &BuildManifest,
    next: BuildManifest,
    changes: Vec<(Component, Source)>,
    progress: &Progress,
) -> Result<Build> {
    let total = next.components.len();
    if let Some(info) = engine.image(&next.reference()).await? {
        let found = BuildManifest::from_labels(&info.labels).unwrap_or(next);
        return Ok(Build {
            reference: found.reference(),
            id: engine_build_id(info.id)?,
            manifest: found,
            layers_built: 0,
            layers_reused: total,
            version_output: BTreeMap::new(),
        });
    }
    if changes.is_empty() {
        return Ok(Build {
            reference: manifest.reference(),
            id: engine_build_id(parent_id.to_string())?,
            manifest: manifest.clone(),
            layers_built: 0,
            layers_reused: total,
            version_output: BTreeMap::new(),
        });
    }
    if next.deltas > MAX_DELTAS {
        return rebuild(engine, config, &next, changes, progress).await;
    }
    let mut parent = parent_id.to_string();
    let mut step = manifest.clone();
    let mut made = Vec::new();
    let changed: Vec<Component> = changes.iter().map(|(c, _)| c.clone()).collect();
    for (component, source) in changes {
        step = step.with_change(component.clone())?;
        progress.line(format!(
            "building layer: {} on {}",
            component.display(),
            canary_contract::build::short_id(&parent)
        ));
        let layer_ref = format!("{LAYER_REPO}:{}-d{}", step.key(), step.deltas);
        parent = component_layer(engine, &parent, source, &layer_ref, step.labels()).await?;
        made.push(layer_ref);
    }
    let reference = next.reference();
    engine.tag(&parent, &reference).await?;
    let built = changed.len();
    let build = Build {
        reference,
        id: engine_build_id(parent)?,
        manifest: next,
        layers_built: built,
        layers_reused: total.saturating_sub(built),
        version_output: BTreeMap::new(),
    };
    verify(engine, build, changed.iter().collect(), &made).await
}

/// The id the engine gave a build's image, checked: a build is named by it everywhere after.
fn engine_build_id(id: String) -> Result<BuildId> {
    id.parse().map_err(LabError::ImageBuild)
}

/// Checks inside the build that each changed CLI reports its version and the runner runs; on
/// failure the build's tags (and the layers this call made) are removed and the error names the
/// component.
async fn verify(engine: &DockerBackend, mut build: Build, check: Vec<&Component>, made: &[String]) -> Result<Build> {
    for c in check {
        let result = match c.provider() {
            Some(p) => crate::images::verify_in_image(engine, &build.reference, p.command(), &c.version).await,
            None if c.name == RUNNER => {
                // The reference runner's version carries its binary's digest after `+`.
                let expected = if c.from_image() {
                    c.version.split('+').next().unwrap_or(&c.version).to_string()
                } else {
                    env!("CARGO_PKG_VERSION").to_string()
                };
                crate::images::verify_in_image(engine, &build.reference, "canary-runner", &expected).await
            }
            None => continue,
        };
        match result {
            Ok(text) => {
                build.version_output.insert(c.name.clone(), text);
            }
            Err(e) => {
                let _ = engine.remove_image(&build.reference).await;
                for r in made.iter().rev() {
                    let _ = engine.remove_image(r).await;
                }
                return Err(LabError::ImageBuild(format!(
                    "the {} layer of {} failed its version check: {e}",
                    c.display(),
                    build.reference
                )));
            }
        }
    }
    Ok(build)
}

/// What `canary images build` makes: a build derived from another with components set, or a
/// build of these CLIs on a runner.
pub enum Recipe {
    Derive {
        from: String,
        set: Vec<Set>,
    },
    Stack {
        specs: Vec<ProviderSpec>,
        runner: RunnerChoice,
    },
}

impl Recipe {
    /// The recipe `canary images build` flags describe: `--from` a build with `--set`
    /// components, else `--provider` CLIs on `--runner-image` (default: the lab's own runner).
    pub fn from_flags(
        providers: &[String],
        from: Option<&str>,
        set: &[String],
        runner_image: Option<&str>,
    ) -> Result<Recipe> {
        Ok(match from {
            Some(from) => Recipe::Derive {
                from: from.to_string(),
                set: set.iter().map(|s| s.parse()).collect::<Result<_>>()?,
            },
            None => Recipe::Stack {
                specs: parse_specs(providers)?,
                runner: match runner_image {
                    Some(r) => RunnerChoice::Image(r.to_string()),
                    None => RunnerChoice::Local,
                },
            },
        })
    }
}

/// CLI specs as a person writes them (`codex@0.163.0`), each CLI at most once.
pub fn parse_specs(values: &[String]) -> Result<Vec<ProviderSpec>> {
    let specs = values
        .iter()
        .map(|p| p.parse())
        .collect::<Result<Vec<ProviderSpec>>>()?;
    refuse_duplicates(&specs)?;
    Ok(specs)
}

/// Makes the build a recipe describes (layers shared with every other build).
pub async fn make(engine: &DockerBackend, config: &Settings, recipe: &Recipe, progress: &Progress) -> Result<Build> {
    match recipe {
        Recipe::Derive { from, set } => derive(engine, config, from, set, progress).await,
        Recipe::Stack { specs, runner } => ensure_with(engine, config, specs, runner, progress).await,
    }
}

/// The lab's builds in the engine, newest first.
pub async fn list(engine: &DockerBackend) -> Result<Vec<(crate::engine::docker::ListedImage, BuildManifest)>> {
    Ok(engine
        .images_with_label(MANIFEST_LABEL)
        .await?
        .into_iter()
        .filter(|i| i.tags.iter().any(|t| t.starts_with(BUILD_REPO)))
        .filter_map(|i| BuildManifest::from_labels(&i.labels).map(|m| (i, m)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(name: &str, version: &str) -> Component {
        Component {
            name: name.into(),
            version: version.into(),
            package: Some("pkg".into()),
            package_version: Some(version.into()),
            digest: format!("sha256:{name}-{version}"),
        }
    }

    fn runner(v: &str) -> Component {
        Component {
            name: RUNNER.into(),
            version: v.into(),
            package: None,
            package_version: None,
            digest: format!("sha256:runner-{v}"),
        }
    }

    fn build() -> BuildManifest {
        BuildManifest::new(
            "sha256:base",
            vec![cli("claude-code", "2.1.329"), runner("0.1.0"), cli("codex", "0.163.0")],
        )
        .unwrap()
    }

    #[test]
    fn layers_stack_runner_then_clis_in_a_fixed_order() {
        let names: Vec<_> = build().components.iter().map(|c| c.name.clone()).collect();
        assert_eq!(names, ["runner", "codex", "claude-code"]);
        assert_eq!(build().providers(), ["codex", "claude-code"]);
    }

    #[test]
    fn one_component_set_has_one_key_and_prefixes_are_shared() {
        let a = build();
        let b = BuildManifest::new(
            "sha256:base",
            vec![cli("codex", "0.163.0"), runner("0.1.0"), cli("claude-code", "2.1.330")],
        )
        .unwrap();
        assert_ne!(a.key(), b.key());
        assert_eq!(a.prefix_key(2), b.prefix_key(2), "runner + codex layers are shared");
        assert_ne!(a.prefix_key(3), b.prefix_key(3));
        let other_base = BuildManifest {
            base: "sha256:other".into(),
            ..a.clone()
        };
        assert_ne!(a.key(), other_base.key());
        // The key ignores how the build was made.
        let derived = a.with_change(cli("claude-code", "2.1.330")).unwrap();
        assert_eq!(derived.deltas, 1);
        assert_eq!(derived.key(), b.key());
    }

    #[test]
    fn a_change_replaces_exactly_one_component_and_says_so() {
        let a = build();
        let next = a.with_change(cli("codex", "0.164.0")).unwrap();
        assert_eq!(
            next.changes_from(Some(&a)),
            vec![Change {
                component: "codex".into(),
                from: Some("0.163.0".into()),
                to: Some("0.164.0".into())
            }]
        );
        assert_eq!(next.component("claude-code"), a.component("claude-code"));
        assert_eq!(next.changes_from(Some(&a))[0].to_string(), "codex 0.163.0 → 0.164.0");
        // The same version again changes nothing.
        assert_eq!(a.with_change(cli("codex", "0.163.0")).unwrap(), a);
        // A component the build lacks is an error, not an addition.
        let err = a.with_change(cli("gemini", "0.9.0")).unwrap_err().to_string();
        assert!(err.contains("no component `gemini`"), "{err}");
        // A first build: everything is new.
        assert_eq!(a.changes_from(None).len(), 3);
    }

    #[test]
    fn two_versions_of_one_cli_are_refused() {
        let err = BuildManifest::new("b", vec![cli("codex", "1"), cli("codex", "2")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("two versions of codex"), "{err}");
        let specs: Vec<ProviderSpec> = vec!["codex@1.0.0".parse().unwrap(), "codex@2.0.0".parse().unwrap()];
        assert!(refuse_duplicates(&specs).is_err());
    }

    #[test]
    fn labels_round_trip_and_summarise() {
        let a = build();
        let labels: BTreeMap<String, String> = a.labels().into_iter().collect();
        assert_eq!(BuildManifest::from_labels(&labels), Some(a.clone()));
        assert_eq!(labels[labels::RUNTIMES], "codex=0.163.0,claude-code=2.1.329");
        assert_eq!(labels[labels::ADAPTERS], "codex-exec-json,claude-stream-json");
        assert_eq!(labels[labels::RUNNER_VERSION], "0.1.0");
        assert!(BuildManifest::from_labels(&BTreeMap::new()).is_none());
    }

    #[test]
    fn set_parses_the_runner_or_a_cli() {
        assert!(matches!("runner".parse::<Set>().unwrap(), Set::Runner));
        assert!(matches!("codex@0.164.0".parse::<Set>().unwrap(), Set::Cli(_)));
        assert!("cursor@1".parse::<Set>().is_err());
    }
}
