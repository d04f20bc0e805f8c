//! The lab's own configuration (`canary.yaml`, optional): where things live and what to build
//! from. Everything has a default, so a fresh checkout runs without one.

use crate::error::Result;
use schemars::JsonSchema;
use serde::Deserialize;
use std::path::{Path, PathBuf};

pub const DEFAULT_FILE: &str = "canary.yaml";

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LabConfig {
    /// Use this image as the base instead of building one with debootstrap (for users who can
    /// pull from a registry). It must provide sh, git, node, tsc, python3 and pytest.
    pub base_image: Option<String>,
    /// Debian mirror for debootstrap. Default: the first Debian source in this machine's apt
    /// configuration.
    pub debian_mirror: Option<String>,
    /// Debian release the base image is built from.
    pub debian_release: String,
    pub repos_dir: PathBuf,
    pub reports_dir: PathBuf,
    /// Downloads, checkouts and temporary root filesystems.
    pub cache_dir: PathBuf,
    /// Known-good registry: a SQLite path or a `postgres://` URL.
    pub registry: String,
    /// Promotion policy file (default `gate.yaml` when present, else the built-in policy).
    pub gate_policy: Option<PathBuf>,
    /// Upstream version sources and the candidate policy (`canary watch`, `canary pipeline`).
    pub upstream: crate::upstream::UpstreamConfig,
    /// What `canary pipeline` runs and whom it tells.
    pub pipeline: PipelineConfig,
    /// Org policies: one `ORG.yaml` per org (plan, require_signed, sweeps).
    pub orgs_dir: PathBuf,
    /// Customer-hosted runners: whom `canary serve` tells when one is behind its offered build.
    pub updates: UpdatesConfig,
    /// The lab's default runner build: one CLI at an exact version each
    /// (`canary run --default-providers`, `./lab demo`).
    pub providers: Vec<String>,
    /// Where `canary images push` publishes runner builds: `host[:port]/repository` of an OCI
    /// registry that speaks TLS (credentials come from the Docker config or
    /// CANARY_REGISTRY_USERNAME and CANARY_REGISTRY_PASSWORD, never from this file).
    pub oci_registry: Option<String>,
    /// The Docker engines the lab may use; `--engine NAME` picks one for a command (default:
    /// `DOCKER_HOST` or the local socket).
    pub engines: Vec<canary_lab::engine::endpoint::Endpoint>,
}

/// The CLIs of the default build when the lab config names none: the newest Codex and Claude
/// Code the lab has been checked with.
pub const DEFAULT_PROVIDERS: &[&str] = &["codex@0.163.0", "claude-code@sdk-0.2.187"];

/// The `updates:` section of canary.yaml.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct UpdatesConfig {
    /// Webhook that receives a JSON notice (POST) when a customer-hosted runner reports versions
    /// behind the build its channel or org pin offers; once per runner and offered build.
    pub webhook: Option<String>,
}

/// The `pipeline:` section of canary.yaml.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Suites every candidate must pass.
    pub suites: Vec<PathBuf>,
    /// Parallel cases per canary run.
    pub jobs: usize,
    /// Green candidates are promoted here (the gate's policy still applies).
    #[schemars(with = "String")]
    pub promote_to: canary_contract::Channel,
    /// Also promote green stable candidates to `stable` (default: a deliberate `canary promote`).
    pub auto_stable: bool,
    /// Webhook that receives each verdict as JSON (POST).
    pub webhook: Option<String>,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            suites: vec!["suites/golden-path.yaml".into()],
            jobs: 2,
            promote_to: canary_contract::Channel::beta(),
            auto_stable: false,
            webhook: None,
        }
    }
}

impl Default for LabConfig {
    fn default() -> Self {
        let lab = canary_lab::Settings::default();
        LabConfig {
            base_image: lab.base_image,
            debian_mirror: lab.debian_mirror,
            debian_release: lab.debian_release,
            repos_dir: lab.repos_dir,
            reports_dir: lab.reports_dir,
            cache_dir: lab.cache_dir,
            registry: crate::registry::DEFAULT_PATH.into(),
            gate_policy: None,
            upstream: Default::default(),
            pipeline: Default::default(),
            updates: Default::default(),
            orgs_dir: crate::orgs::DEFAULT_DIR.into(),
            providers: DEFAULT_PROVIDERS.iter().map(|s| s.to_string()).collect(),
            oci_registry: None,
            engines: Vec::new(),
        }
    }
}

impl LabConfig {
    /// The part of this file the lab stage reads (canary repos, reports, caches, base image).
    /// The ids of the canary repos the gate judges builds on (the catalog under `repos_dir`).
    pub fn repo_ids(&self) -> crate::error::Result<Vec<String>> {
        Ok(crate::repos::Catalog::load(&self.repos_dir, &self.cache_dir)?.ids())
    }

    pub fn lab(&self) -> canary_lab::Settings {
        canary_lab::Settings {
            base_image: self.base_image.clone(),
            debian_mirror: self.debian_mirror.clone(),
            debian_release: self.debian_release.clone(),
            repos_dir: self.repos_dir.clone(),
            reports_dir: self.reports_dir.clone(),
            cache_dir: self.cache_dir.clone(),
        }
    }

    /// The default runner build's CLIs (`providers:`), parsed.
    pub fn default_specs(&self) -> Result<Vec<crate::providers::ProviderSpec>> {
        crate::builds::parse_specs(&self.providers).map_err(|e| {
            crate::error::LabError::usage(
                format!("`providers` in the lab config: {e}"),
                "write e.g. `providers: [codex@0.163.0, claude-code@sdk-0.2.187]` in canary.yaml",
            )
        })
    }

    /// Loads `path` if given (it must exist), else `canary.yaml` if present, else defaults.
    pub fn load(path: Option<&Path>) -> Result<LabConfig> {
        let (path, required) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_FILE), false),
        };
        if !required && !path.exists() {
            return Ok(LabConfig::default());
        }
        let text = crate::fsutil::read_input(&path, "lab config", crate::fsutil::MAX_INPUT)?;
        let file = path.display().to_string();
        let fields = "keys: base_image, debian_mirror, debian_release, repos_dir, reports_dir, cache_dir, registry, gate_policy, upstream, pipeline, providers, oci_registry, engines";
        let config: LabConfig = crate::yaml::parse(&file, &text, "lab config", fields)?;
        config.check(&file, &text)?;
        Ok(config)
    }

    /// Checks every setting that names something (a CLI version, a version source, a channel,
    /// a webhook) when the file is read, so a mistake is found by any command, at its place in
    /// the file, and not by the one command that uses it.
    fn check(&self, file: &str, text: &str) -> Result<()> {
        let at = |key: &str, e: crate::error::LabError| -> crate::error::LabError {
            let (message, help) = match e {
                crate::error::LabError::Usage(m, h) => (m, h),
                other => (
                    other.to_string(),
                    "see canary.yaml's documented keys in README.md".to_string(),
                ),
            };
            // Messages name their setting (`upstream.providers.codex.sources: ...`): point there.
            let path: String = message.chars().take_while(|c| !matches!(c, ':' | ' ' | '`')).collect();
            let path = if path.starts_with(&format!("{key}.")) {
                path
            } else {
                key.to_string()
            };
            crate::yaml::located_path(file, text, &path, message, help).into()
        };
        let mut specs = Vec::new();
        for p in &self.providers {
            specs.push(
                p.parse::<crate::providers::ProviderSpec>()
                    .map_err(|e| at("providers", e))?,
            );
        }
        for (i, s) in specs.iter().enumerate() {
            if specs[..i].iter().any(|o| o.provider == s.provider) {
                return Err(at(
                    "providers",
                    crate::error::LabError::usage(
                        format!("providers: {} is named twice", s.provider.name()),
                        "a build carries each CLI once: list each provider once",
                    ),
                ));
            }
        }
        if let Some(r) = &self.oci_registry {
            canary_contract::oci::Repository::parse(r).map_err(|m| {
                at(
                    "oci_registry",
                    crate::error::LabError::usage(format!("oci_registry: {m}"), "give HOST[:PORT]/REPOSITORY"),
                )
            })?;
        }
        canary_lab::engine::endpoint::check_all(&self.engines).map_err(|e| at("engines", e))?;
        self.upstream.policy(None).map_err(|e| at("upstream", e))?;
        if self.pipeline.jobs == 0 {
            return Err(at(
                "pipeline",
                crate::error::LabError::usage("pipeline.jobs is 0, so no case would run", "use 1 or more"),
            ));
        }
        for (section, key, w) in [
            ("pipeline", "pipeline.webhook", &self.pipeline.webhook),
            ("updates", "updates.webhook", &self.updates.webhook),
        ] {
            if let Some(w) = w
                && !is_http_url(w)
            {
                return Err(at(
                    section,
                    crate::error::LabError::usage(
                        format!("{key} `{}` is not an http(s) URL", crate::text::clean(w)),
                        "write the URL that receives the notices, e.g. `https://hooks.example.invalid/canary`",
                    ),
                ));
            }
        }
        Ok(())
    }
}

pub use crate::webhook::is_http_url;
