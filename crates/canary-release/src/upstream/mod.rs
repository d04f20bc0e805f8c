//! Upstream watching: which agent-CLI versions exist (PyPI, npm, GitHub releases), which of them
//! the lab's policy makes candidates (and for which channel), and which are new to the registry.
//!
//! Registry URLs come from the lab config (`upstream:` in canary.yaml) or from the ecosystem
//! clients' own configuration (pip's effective index URL, npm's `registry`); none is written in
//! the lab's code.

pub mod http;
pub mod sources;
pub mod view;

use crate::error::{LabError, Result};
use canary_contract::{Channel, Provider};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sources::{Endpoints, Source};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One version as an upstream registry describes it.
#[derive(Debug, Clone, Serialize)]
pub struct Release {
    pub provider: Provider,
    /// `pypi:<package>`, `npm:<package>` or `github:<owner>/<repo>`.
    pub source: String,
    pub package: String,
    pub package_version: String,
    /// The CLI's version. For Claude Code from `claude-agent-sdk`, the version the SDK bundles
    /// once known (see [`resolve_bundled`]); until then the SDK's own version.
    pub version: String,
    pub published_at: Option<String>,
    pub prerelease: bool,
    /// Why the registry withdrew it (PyPI yanks).
    pub yanked: Option<String>,
    /// npm's deprecation message.
    pub deprecated: Option<String>,
    /// npm dist-tags pointing at it.
    pub dist_tags: Vec<String>,
}

/// The `upstream:` section of canary.yaml.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// Base URL of PyPI's JSON API (`<base>/pypi/<package>/json`). Default: derived from pip's
    /// effective index URL (its `/simple` suffix removed).
    pub pypi_url: Option<String>,
    /// npm registry URL. Default: `npm config get registry`, else `npm_config_registry`.
    pub npm_registry: Option<String>,
    /// GitHub REST API base URL (GitHub Enterprise, a mirror). Default: octocrab's.
    pub github_api: Option<String>,
    /// Environment variable holding a GitHub token for release listings.
    pub github_token_env: String,
    /// Versions younger than this are not candidates yet, e.g. `24h`; `0s` turns it off.
    /// A version without a publish time is never a candidate (fail closed).
    pub min_release_age: String,
    /// Per-request timeout, e.g. `20s`.
    pub timeout: String,
    /// Retries after a timeout, 429 or 5xx answer (with exponential backoff).
    pub retries: u32,
    /// The longest `Retry-After` honoured before giving up, e.g. `60s`.
    pub max_wait: String,
    /// Newest candidates per provider and channel that `canary pipeline` judges.
    pub candidates_per_channel: usize,
    /// Providers to watch. Default: codex (`pypi:openai-codex-cli-bin`) and claude-code
    /// (`pypi:claude-agent-sdk`). Gemini CLI is npm-only: add it with `sources: [npm:@google/gemini-cli]`
    /// where an npm registry is reachable.
    pub providers: BTreeMap<String, ProviderPolicy>,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ProviderPolicy {
    /// Where its versions come from: `pypi:<package>`, `npm:<package>`, `github:<owner>/<repo>`.
    pub sources: Vec<String>,
    /// SemVer requirement a candidate must meet, e.g. `>=0.150.0`.
    pub include: Option<String>,
    /// SemVer requirements that exclude versions, e.g. `["=0.160.1", ">=1.0.0-0, <1.0.0"]`.
    pub exclude: Vec<String>,
    /// Overrides the section's `min_release_age` for this provider.
    pub min_release_age: Option<String>,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            pypi_url: None,
            npm_registry: None,
            github_api: None,
            github_token_env: "GITHUB_TOKEN".into(),
            min_release_age: "24h".into(),
            timeout: "20s".into(),
            retries: 3,
            max_wait: "60s".into(),
            candidates_per_channel: 1,
            providers: default_providers(),
        }
    }
}

pub fn default_providers() -> BTreeMap<String, ProviderPolicy> {
    let p = |s: &str| ProviderPolicy {
        sources: vec![s.into()],
        ..Default::default()
    };
    BTreeMap::from([
        (
            canary_contract::Provider::Codex.name().to_string(),
            p("pypi:openai-codex-cli-bin"),
        ),
        (
            canary_contract::Provider::ClaudeCode.name().to_string(),
            p("pypi:claude-agent-sdk"),
        ),
    ])
}

fn duration(field: &str, s: &str) -> Result<Duration> {
    humantime::parse_duration(s).map_err(|e| {
        LabError::usage(
            format!("upstream.{field}: invalid duration `{s}`: {e}"),
            "write e.g. `24h` or `30s`",
        )
    })
}

/// The policy, checked: sources parsed, requirements compiled, durations read.
#[derive(Debug, Clone)]
pub struct Policy {
    pub providers: BTreeMap<String, CompiledProvider>,
    pub candidates_per_channel: usize,
}

#[derive(Debug, Clone)]
pub struct CompiledProvider {
    pub provider: Provider,
    pub sources: Vec<Source>,
    pub include: Option<semver::VersionReq>,
    pub exclude: Vec<semver::VersionReq>,
    pub min_release_age: Duration,
}

impl UpstreamConfig {
    pub fn policy(&self, only: Option<Provider>) -> Result<Policy> {
        let default_age = duration("min_release_age", &self.min_release_age)?;
        let mut providers = BTreeMap::new();
        if let Some(p) = only {
            if !self.providers.contains_key(p.name()) {
                return Err(LabError::usage(
                    format!("provider `{p}` is not watched"),
                    format!(
                        "watched providers: {} (upstream.providers in canary.yaml)",
                        self.providers.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        }
        for (name, p) in &self.providers {
            // The canonical name only (not the `claude` shorthand): the key is what reports show.
            let Some(provider) = Provider::from_name(name).filter(|x| x.name() == name) else {
                return Err(LabError::usage(
                    format!("upstream.providers: unknown provider `{}`", crate::text::clean(name)),
                    format!("providers: {}", Provider::ALL.map(Provider::name).join(", ")),
                ));
            };
            if only.is_some_and(|o| o != provider) {
                continue;
            }
            let req = |r: &str| {
                semver::VersionReq::parse(r).map_err(|e| {
                    LabError::usage(
                        format!("upstream.providers.{name}: invalid version requirement `{r}`: {e}"),
                        "write SemVer requirements such as `>=0.150.0` or `=0.160.1`",
                    )
                })
            };
            if p.sources.is_empty() {
                return Err(LabError::usage(
                    format!("upstream.providers.{name}.sources is empty: the provider has no sources"),
                    "list at least one of pypi:<package>, npm:<package>, github:<owner>/<repo>",
                ));
            }
            providers.insert(
                name.clone(),
                CompiledProvider {
                    provider,
                    sources: p
                        .sources
                        .iter()
                        .map(|s| {
                            Source::parse(s).map_err(|e| match e {
                                LabError::Usage(m, h) => {
                                    LabError::Usage(format!("upstream.providers.{name}.sources: {m}"), h)
                                }
                                other => other,
                            })
                        })
                        .collect::<Result<_>>()?,
                    include: p.include.as_deref().map(req).transpose()?,
                    exclude: p.exclude.iter().map(|r| req(r)).collect::<Result<_>>()?,
                    min_release_age: match &p.min_release_age {
                        Some(a) => duration(&format!("providers.{name}.min_release_age"), a)?,
                        None => default_age,
                    },
                },
            );
        }
        Ok(Policy {
            providers,
            candidates_per_channel: self.candidates_per_channel.max(1),
        })
    }

    /// Registry URLs: the lab config first, then the clients' own configuration.
    pub fn endpoints(&self) -> Endpoints {
        Endpoints {
            pypi: self.pypi_url.clone().or_else(pip_json_base),
            npm: self.npm_registry.clone().or_else(npm_registry),
            github: self.github_api.clone(),
            github_token: std::env::var(&self.github_token_env).ok().filter(|t| !t.is_empty()),
        }
    }

    pub fn fetcher(&self, cache_dir: &Path) -> Result<http::Fetcher> {
        let mut f = http::Fetcher::new(cache_dir.join("upstream"), duration("timeout", &self.timeout)?)?;
        f.retries = self.retries;
        f.max_wait = duration("max_wait", &self.max_wait)?;
        Ok(f)
    }
}

/// pip's effective index URL (its configuration files and PIP_INDEX_URL, as pip resolves them),
/// turned into the base of the JSON API that index's host serves.
pub fn pip_json_base() -> Option<String> {
    let script = "from pip._internal.commands.download import DownloadCommand\n\
                  c = DownloadCommand('download', '')\n\
                  o, _ = c.parse_args([])\n\
                  print(o.index_url)";
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .output()
        .ok()?;
    let url = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || url.is_empty() {
        return None;
    }
    let url = url.trim_end_matches('/');
    Some(url.strip_suffix("/simple").unwrap_or(url).to_string())
}

/// npm's configured registry (`npm config get registry`), or `npm_config_registry`.
pub fn npm_registry() -> Option<String> {
    if let Ok(v) = std::env::var("npm_config_registry") {
        if !v.is_empty() {
            return Some(v);
        }
    }
    let out = std::process::Command::new("npm")
        .args(["config", "get", "registry"])
        .output()
        .ok()?;
    let url = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && url.starts_with("http")).then_some(url)
}

/// What the policy made of one release.
#[derive(Debug, Clone, Serialize)]
pub struct Judged {
    #[serde(flatten)]
    pub release: Release,
    /// `stable` or `beta` for candidates; `None` when skipped.
    pub channel: Option<Channel>,
    /// Why it is not a candidate.
    pub skipped: Option<String>,
}

/// A version string as SemVer, accepting PEP 440 pre-releases (`0.2.0a1` → `0.2.0-a1`).
pub fn semver_of(v: &str) -> Option<semver::Version> {
    if let Ok(s) = semver::Version::parse(v) {
        return Some(s);
    }
    let split = v.find(|c: char| c.is_ascii_alphabetic())?;
    let (core, pre) = v.split_at(split);
    let pre = pre.trim_start_matches(['.', '-']);
    semver::Version::parse(&format!("{}-{pre}", core.trim_end_matches('.'))).ok()
}

pub fn judge(r: Release, p: &CompiledProvider, now: jiff::Timestamp) -> Judged {
    let skip = |release: Release, why: String| Judged {
        release,
        channel: None,
        skipped: Some(why),
    };
    let Some(v) = semver_of(&r.package_version) else {
        return skip(r, "not a SemVer version".into());
    };
    if let Some(why) = &r.yanked {
        let why = format!("yanked: {why}");
        return skip(r, why);
    }
    if let Some(why) = &r.deprecated {
        let why = format!("deprecated: {why}");
        return skip(r, why);
    }
    // Ranges name release lines: a pre-release is in a range when its release would be (SemVer
    // requirements alone never match pre-releases of other versions).
    let line = semver::Version::new(v.major, v.minor, v.patch);
    let within = |req: &semver::VersionReq| req.matches(&v) || req.matches(&line);
    if let Some(req) = p.include.as_ref().filter(|req| !within(req)) {
        return skip(r, format!("outside include `{req}`"));
    }
    if let Some(req) = p.exclude.iter().find(|req| req.matches(&v)) {
        return skip(r, format!("excluded by `{req}`"));
    }
    let Some(published) = r
        .published_at
        .as_deref()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
    else {
        return skip(
            r,
            "no publish time in the registry (a minimum release age cannot be shown)".into(),
        );
    };
    let age = now.duration_since(published);
    let min = jiff::SignedDuration::try_from(p.min_release_age).unwrap_or(jiff::SignedDuration::MAX);
    if age < min {
        let ready = published.checked_add(min).map(|t| t.to_string()).unwrap_or_default();
        return skip(r, format!("too new: published {published}, a candidate from {ready}"));
    }
    let beta =
        r.prerelease || !v.pre.is_empty() || (!r.dist_tags.is_empty() && !r.dist_tags.iter().any(|t| t == "latest"));
    Judged {
        release: r,
        channel: Some(if beta { Channel::beta() } else { Channel::stable() }),
        skipped: None,
    }
}

/// The CLI version a claude-agent-sdk release bundles, from the lab's provider cache, fetching
/// the wheel (through pip) when `download` is set and it is not cached.
pub async fn resolve_bundled(cache_dir: &Path, sdk_version: &str, download: bool) -> Result<Option<String>> {
    let meta = cache_dir
        .join("providers")
        .join(canary_contract::Provider::ClaudeCode.name())
        .join(sdk_version)
        .join("provider.json");
    if let Some(v) = std::fs::read(&meta)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|j| j["cli_version"].as_str().map(String::from))
    {
        return Ok(Some(v));
    }
    if !download {
        return Ok(None);
    }
    let spec = crate::providers::ProviderSpec {
        provider: crate::providers::Provider::ClaudeCode,
        package_version: Some(sdk_version.to_string()),
    };
    let cache = cache_dir.to_path_buf();
    let fetched = tokio::task::spawn_blocking(move || crate::providers::fetch(&spec, &cache))
        .await
        .expect("fetch task")?;
    Ok(Some(fetched.cli_version))
}

/// The claude-agent-sdk release that bundles `cli_version`, from the provider cache.
pub fn bundled_by(cache_dir: &Path, cli_version: &str) -> Option<String> {
    let dir = cache_dir
        .join("providers")
        .join(canary_contract::Provider::ClaudeCode.name());
    std::fs::read_dir(dir).ok()?.flatten().find_map(|e| {
        let j: serde_json::Value = serde_json::from_slice(&std::fs::read(e.path().join("provider.json")).ok()?).ok()?;
        (j["cli_version"].as_str() == Some(cli_version)).then(|| j["package_version"].as_str().map(String::from))?
    })
}

/// One provider's view for `canary watch`.
#[derive(Debug, Clone, Serialize)]
pub struct ProviderWatch {
    pub provider: Provider,
    pub sources: Vec<String>,
    /// How each source answered (`fetched`, `not_modified`).
    pub freshness: BTreeMap<String, http::Freshness>,
    /// The newest runtime version of a build that is known-good on a channel, per channel.
    pub known_good: BTreeMap<String, String>,
    /// Candidates newer than the newest known-good (all candidates when nothing is known-good),
    /// newest first.
    pub newer: Vec<Judged>,
    /// Candidates the registry had not recorded before this watch.
    pub new: Vec<String>,
    /// Versions newer than known-good that the policy skipped, with the reason.
    pub skipped: Vec<Judged>,
    /// Total versions upstream lists.
    pub upstream_versions: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct WatchReport {
    pub checked_at: String,
    pub providers: Vec<ProviderWatch>,
    /// Versions recorded in the registry by this watch.
    pub recorded: usize,
}

impl WatchReport {
    pub fn anything_new(&self) -> bool {
        self.providers.iter().any(|p| !p.new.is_empty())
    }
}

pub struct WatchOptions<'a> {
    pub config: &'a UpstreamConfig,
    pub cache_dir: PathBuf,
    pub provider: Option<Provider>,
    /// Record new versions in the registry.
    pub record: bool,
    /// Download claude-agent-sdk wheels to learn the CLI version they bundle (newest candidates).
    pub resolve: bool,
}

fn newest_first(a: &Release, b: &Release) -> std::cmp::Ordering {
    match (semver_of(&a.package_version), semver_of(&b.package_version)) {
        (Some(x), Some(y)) => y.cmp(&x),
        // A total order: SemVer versions first, the rest by publish time.
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => b.published_at.cmp(&a.published_at),
    }
}

/// The newest runtime version of each CLI that each channel has had as known-good:
/// provider → channel → version.
async fn known_good_runtimes(reg: &crate::registry::Registry) -> Result<BTreeMap<String, BTreeMap<String, String>>> {
    let builds = reg.builds().await?;
    let mut known_good: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for channel in reg.channels().await? {
        for release in reg.known_good(&channel).await? {
            let Some(b) = builds.iter().find(|b| b.id == release.build_id) else {
                continue;
            };
            if let Some(map) = b.runtime_versions.as_object() {
                for (prov, ver) in map {
                    let Some(ver) = ver.as_str() else { continue };
                    // The newest runtime version the channel has had as known-good.
                    let slot = known_good.entry(prov.clone()).or_default();
                    let newer = match slot.get(channel.as_str()) {
                        None => true,
                        Some(cur) => matches!((semver_of(ver), semver_of(cur)), (Some(a), Some(b)) if a > b),
                    };
                    if newer {
                        slot.insert(channel.to_string(), ver.to_string());
                    }
                }
            }
        }
    }

    Ok(known_good)
}

/// Every release the sources list, newest first, one per package version (two sources may list
/// the same release); each source's freshness; how many the sources listed in all.
async fn fetch_all(
    fetcher: &http::Fetcher,
    endpoints: &sources::Endpoints,
    provider: Provider,
    from: &[Source],
) -> Result<(Vec<Release>, BTreeMap<String, http::Freshness>, usize)> {
    let mut releases = Vec::new();
    let mut freshness = BTreeMap::new();
    for source in from {
        let fetched = sources::fetch(fetcher, endpoints, provider, source).await?;
        freshness.insert(source.label(), fetched.freshness);
        releases.extend(fetched.releases);
    }
    let listed = releases.len();
    releases.sort_by(newest_first);
    let mut seen = std::collections::HashSet::new();
    releases.retain(|r| seen.insert(r.package_version.clone()));
    Ok((releases, freshness, listed))
}

/// The candidates the registry has not recorded yet (by CLI version or package version), as
/// the rows that record them.
fn unrecorded(
    provider: Provider,
    newer: &[Judged],
    recorded: &[crate::registry::VersionRow],
) -> Vec<crate::registry::VersionRow> {
    newer
        .iter()
        .filter(|j| {
            !recorded.iter().any(|r| {
                r.provider == provider
                    && (r.version == j.release.version
                        || r.package_version.as_deref() == Some(&j.release.package_version))
            })
        })
        .map(|j| crate::registry::VersionRow {
            provider,
            version: j.release.version.clone(),
            released_at: j.release.published_at.clone(),
            source: j.release.source.clone(),
            channel: j.channel.as_ref().map(Channel::to_string).unwrap_or_default(),
            package: Some(j.release.package.clone()),
            package_version: Some(j.release.package_version.clone()),
        })
        .collect()
}

/// The newest known-good version, as the upstream lists versions. Claude Code versions are CLI
/// versions; its upstream lists SDK versions: compare by the SDK release that bundles the
/// known-good CLI.
fn known_good_package(
    provider: Provider,
    kg: &BTreeMap<String, String>,
    claude_sdk: bool,
    recorded_versions: &[crate::registry::VersionRow],
    cache_dir: &Path,
) -> Option<semver::Version> {
    let newest_kg = kg.values().filter_map(|v| semver_of(v)).max();
    match (&newest_kg, claude_sdk) {
        (Some(v), true) => recorded_versions
            .iter()
            .find(|r| r.provider == provider && r.version == v.to_string())
            .and_then(|r| r.package_version.clone())
            .or_else(|| bundled_by(cache_dir, &v.to_string()))
            .and_then(|pv| semver_of(&pv)),
        (v, false) => v.clone(),
        (None, true) => None,
    }
}

/// A beta candidate older than the newest stable release is history: skipped, with the reason.
fn demote_old_prerelease(j: &mut Judged, newest_stable: Option<&semver::Version>) {
    if !j.channel.as_ref().is_some_and(Channel::is_beta) {
        return;
    }
    if let (Some(stable), Some(v)) = (newest_stable, semver_of(&j.release.package_version)) {
        if v < *stable {
            j.channel = None;
            j.skipped = Some(format!(
                "pre-release older than the newest stable release {stable}: not a candidate"
            ));
        }
    }
}

impl CompiledProvider {
    /// Whether this is Claude Code read through the SDK wheels that bundle it.
    fn claude_sdk(&self) -> bool {
        self.provider == Provider::ClaudeCode
            && self
                .sources
                .iter()
                .any(|s| matches!(s, Source::Pypi(pk) if pk == "claude-agent-sdk"))
    }
}

impl Judged {
    /// The registry's row for a version the watch skipped.
    fn skipped_row(&self, seen_at: &str) -> crate::registry::SkippedVersion {
        crate::registry::SkippedVersion {
            provider: self.release.provider,
            package_version: self.release.package_version.clone(),
            version: self.release.version.clone(),
            source: self.release.source.clone(),
            released_at: self.release.published_at.clone(),
            reason: self.skipped.clone().unwrap_or_default(),
            seen_at: seen_at.to_string(),
        }
    }
}

/// Fetches every configured source, judges each version, compares with the registry and (when
/// asked) records the new candidates in one transaction. A source that fails fails the watch
/// before anything is recorded.
pub async fn watch(reg: &crate::registry::Registry, o: &WatchOptions<'_>) -> Result<WatchReport> {
    let policy = o.config.policy(o.provider)?;
    let endpoints = o.config.endpoints();
    let fetcher = o.config.fetcher(&o.cache_dir)?;
    let now = jiff::Timestamp::now();
    let recorded_versions = reg.versions().await?;
    let known_good = known_good_runtimes(reg).await?;

    let mut providers = Vec::new();
    let mut to_record = Vec::new();
    let mut to_skip = Vec::new();
    for p in policy.providers.values() {
        let provider = p.provider;
        let (releases, freshness, upstream_versions) = fetch_all(&fetcher, &endpoints, provider, &p.sources).await?;

        let kg = known_good.get(provider.name()).cloned().unwrap_or_default();
        let claude_sdk = p.claude_sdk();
        let kg_package = known_good_package(provider, &kg, claude_sdk, &recorded_versions, &o.cache_dir);
        // A pre-release older than the newest stable release is history, not a candidate.
        let newest_stable = releases
            .iter()
            .filter(|r| !r.prerelease)
            .filter_map(|r| semver_of(&r.package_version))
            .filter(|v| v.pre.is_empty())
            .max();
        let mut newer = Vec::new();
        let mut skipped = Vec::new();
        let mut resolved = 0;
        for r in releases {
            let is_newer = match (&kg_package, semver_of(&r.package_version)) {
                (Some(k), Some(v)) => v > *k,
                (Some(_), None) => false,
                (None, _) => true,
            };
            if !is_newer {
                continue;
            }
            let mut j = judge(r, p, now);
            demote_old_prerelease(&mut j, newest_stable.as_ref());
            if claude_sdk && j.channel.is_some() {
                // The newest candidates get their bundled CLI version (cached, or fetched when
                // asked); the rest show it when the cache knows it.
                let download = o.resolve && resolved < policy.candidates_per_channel;
                match resolve_bundled(&o.cache_dir, &j.release.package_version, download).await? {
                    Some(cli) => {
                        j.release.version = cli;
                        resolved += 1;
                    }
                    // Never an SDK version posing as a CLI version.
                    None => j.release.version = format!("sdk-{}", j.release.package_version),
                }
            }
            if j.channel.is_some() {
                newer.push(j);
            } else {
                skipped.push(j);
            }
        }
        let rows = unrecorded(provider, &newer, &recorded_versions);
        let new: Vec<String> = rows.iter().map(|r| r.version.clone()).collect();
        to_record.extend(rows);
        let seen_at = crate::registry::format_ts(now);
        to_skip.extend(skipped.iter().map(|j| j.skipped_row(&seen_at)));
        providers.push(ProviderWatch {
            provider,
            sources: p.sources.iter().map(Source::label).collect(),
            freshness,
            known_good: kg,
            newer,
            new,
            skipped,
            upstream_versions,
        });
    }
    let recorded = if o.record {
        reg.record_skipped(&to_skip).await?;
        reg.record_versions(&to_record).await?
    } else {
        0
    };
    Ok(WatchReport {
        checked_at: now.to_string(),
        providers,
        recorded,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(v: &str, published: Option<&str>) -> Release {
        Release {
            provider: Provider::Codex,
            source: "pypi:x".into(),
            package: "x".into(),
            package_version: v.into(),
            version: v.into(),
            published_at: published.map(String::from),
            prerelease: sources::is_prerelease(v),
            yanked: None,
            deprecated: None,
            dist_tags: vec![],
        }
    }

    #[test]
    fn the_policy_decides_channels_and_skips_with_reasons() {
        let p = CompiledProvider {
            provider: Provider::Codex,
            sources: vec![],
            include: Some(semver::VersionReq::parse(">=0.100.0").unwrap()),
            exclude: vec![semver::VersionReq::parse("=0.150.1").unwrap()],
            min_release_age: Duration::from_secs(86400),
        };
        let now: jiff::Timestamp = "2026-11-21T00:00:00Z".parse().unwrap();
        let old = Some("2026-11-01T00:00:00Z");
        assert_eq!(
            judge(release("0.150.0", old), &p, now).channel.as_deref(),
            Some("stable")
        );
        assert_eq!(
            judge(release("0.151.0a1", old), &p, now).channel.as_deref(),
            Some("beta")
        );
        let why = |v: &str, t: Option<&str>| judge(release(v, t), &p, now).skipped.unwrap();
        assert!(why("0.150.1", old).starts_with("excluded"));
        assert!(why("0.99.0", old).starts_with("outside include"));
        assert!(why("0.152.0", Some("2026-11-20T12:00:00Z")).starts_with("too new"));
        assert!(why("0.152.0", None).starts_with("no publish time"));
        assert_eq!(why("nightly", old), "not a SemVer version");
        let mut tagged = release("0.153.0", old);
        tagged.dist_tags = vec!["next".into()];
        assert_eq!(judge(tagged, &p, now).channel.as_deref(), Some("beta"));
    }

    #[test]
    fn pep440_prereleases_read_as_semver() {
        assert_eq!(semver_of("0.2.0a1").unwrap().to_string(), "0.2.0-a1");
        assert_eq!(semver_of("1.0.0rc2").unwrap().to_string(), "1.0.0-rc2");
        assert!(semver_of("2024.1").is_none());
    }
}

/// What the pipeline judges: each candidate is the channel's current build with exactly one
/// component changed; a channel with no build yet gets one first build with the newest eligible
/// version of each configured provider. `newest` holds, per provider, its candidates (newest
/// first).
pub fn form_candidates(has_build: bool, newest: Vec<(Provider, Vec<Judged>)>) -> Vec<Vec<(Provider, Judged)>> {
    if has_build {
        return newest
            .into_iter()
            .flat_map(|(p, js)| js.into_iter().map(move |j| vec![(p, j)]))
            .collect();
    }
    let first: Vec<(Provider, Judged)> = newest
        .into_iter()
        .filter_map(|(p, js)| js.into_iter().next().map(|j| (p, j)))
        .collect();
    if first.is_empty() { vec![] } else { vec![first] }
}

#[cfg(test)]
mod candidate_tests {
    use super::*;

    fn judged(v: &str) -> Judged {
        Judged {
            release: Release {
                provider: Provider::Codex,
                version: v.into(),
                package: "pkg".into(),
                package_version: v.into(),
                source: "pypi:pkg".into(),
                published_at: None,
                prerelease: false,
                yanked: None,
                deprecated: None,
                dist_tags: vec![],
            },
            channel: Some(Channel::stable()),
            skipped: None,
        }
    }

    #[test]
    fn candidates_change_one_component_unless_the_channel_is_empty() {
        let newest = || {
            vec![
                (Provider::Codex, vec![judged("0.164.0"), judged("0.163.5")]),
                (Provider::ClaudeCode, vec![judged("2.1.330")]),
            ]
        };
        let each = form_candidates(true, newest());
        assert_eq!(each.len(), 3);
        assert!(each.iter().all(|c| c.len() == 1), "one change per candidate");
        let first = form_candidates(false, newest());
        assert_eq!(first.len(), 1, "one first build");
        let versions: Vec<_> = first[0]
            .iter()
            .map(|(p, j)| format!("{p}@{}", j.release.version))
            .collect();
        assert_eq!(
            versions,
            ["codex@0.164.0", "claude-code@2.1.330"],
            "the newest of each provider"
        );
        assert!(form_candidates(false, vec![]).is_empty());
    }
}
