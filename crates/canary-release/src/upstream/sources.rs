//! The three kinds of upstream: PyPI's JSON API, an npm registry's packument, GitHub releases.
//! Each turns its registry's metadata into [`Release`]s; none decides what becomes a candidate
//! (that is the policy's job).

use super::Release;
use super::http::{Attempt, Fetcher, Freshness};
use crate::error::{LabError, Result};
use canary_contract::Provider;
use std::collections::BTreeMap;

/// A configured source: `pypi:<package>`, `npm:<package>` or `github:<owner>/<repo>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Pypi(String),
    Npm(String),
    Github(String, String),
}

impl Source {
    pub fn parse(s: &str) -> Result<Source> {
        let help = "write pypi:<package>, npm:<package> or github:<owner>/<repo>";
        let (kind, name) = s
            .split_once(':')
            .ok_or_else(|| LabError::usage(format!("invalid upstream source `{s}`"), help))?;
        // Names become parts of registry URLs: package-name characters only, so a name can
        // never add a path segment, a query or a fragment.
        let valid = |n: &str| {
            !n.is_empty()
                && n.len() <= 214
                && !n.starts_with('.')
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        };
        let valid_npm = |n: &str| match n.strip_prefix('@').and_then(|s| s.split_once('/')) {
            Some((scope, pkg)) => valid(scope) && valid(pkg),
            None => valid(n),
        };
        let s_shown = crate::text::clean(s);
        let s: &str = s_shown.as_ref();
        match kind {
            "pypi" if valid(name) => Ok(Source::Pypi(name.into())),
            "npm" if valid_npm(name) => Ok(Source::Npm(name.into())),
            "github" => match name.split_once('/') {
                Some((o, r)) if valid(o) && valid(r) && !r.contains('/') => Ok(Source::Github(o.into(), r.into())),
                _ => Err(LabError::usage(format!("invalid GitHub repository in `{s}`"), help)),
            },
            _ => Err(LabError::usage(format!("invalid upstream source `{s}`"), help)),
        }
    }

    pub fn label(&self) -> String {
        match self {
            Source::Pypi(p) => format!("pypi:{p}"),
            Source::Npm(p) => format!("npm:{p}"),
            Source::Github(o, r) => format!("github:{o}/{r}"),
        }
    }

    pub fn package(&self) -> String {
        match self {
            Source::Pypi(p) | Source::Npm(p) => p.clone(),
            Source::Github(o, r) => format!("{o}/{r}"),
        }
    }
}

/// Where each kind of registry is, after the lab config and the clients' own configuration.
#[derive(Debug, Clone, Default)]
pub struct Endpoints {
    /// Base of PyPI's JSON API (`{base}/pypi/{package}/json`).
    pub pypi: Option<String>,
    pub npm: Option<String>,
    /// GitHub REST API base; `None` is octocrab's own default.
    pub github: Option<String>,
    pub github_token: Option<String>,
}

/// One fetch: the releases and whether the registry's answer came from the cache.
pub struct Fetched {
    pub releases: Vec<Release>,
    pub freshness: Freshness,
}

fn not_found(source: &Source, url: &str) -> LabError {
    LabError::usage(
        format!(
            "unknown package: {} has no {} ({url} answered 404)",
            source.label(),
            source.package()
        ),
        "check the package name under upstream.providers in canary.yaml",
    )
}

fn malformed(source: &Source, what: &str) -> LabError {
    LabError::usage(
        format!("{}: malformed registry metadata: {what}", source.label()),
        "the registry answered JSON of an unexpected shape; nothing was recorded",
    )
}

pub async fn fetch(fetcher: &Fetcher, endpoints: &Endpoints, provider: Provider, source: &Source) -> Result<Fetched> {
    match source {
        Source::Pypi(package) => {
            let base = endpoints.pypi.as_deref().ok_or_else(|| {
                LabError::usage(
                    "no PyPI JSON API configured",
                    "set upstream.pypi_url in canary.yaml, or configure pip's index-url",
                )
            })?;
            let url = format!("{}/pypi/{package}/json", base.trim_end_matches('/'));
            let (body, freshness) = fetcher
                .get_json(&url, "application/json", &[])
                .await?
                .ok_or_else(|| not_found(source, &url))?;
            Ok(Fetched {
                releases: pypi(provider, source, &body)?,
                freshness,
            })
        }
        Source::Npm(package) => {
            let base = endpoints.npm.as_deref().ok_or_else(|| {
                LabError::usage(
                    "no npm registry configured",
                    "set upstream.npm_registry in canary.yaml, or configure npm's registry (npm config set registry …)",
                )
            })?;
            // Scoped names keep their `@` and encode the slash, as npm clients do.
            let url = format!("{}/{}", base.trim_end_matches('/'), package.replace('/', "%2f"));
            let (body, freshness) = fetcher
                .get_json(&url, "application/json", &[])
                .await?
                .ok_or_else(|| not_found(source, &url))?;
            Ok(Fetched {
                releases: npm(provider, source, &body)?,
                freshness,
            })
        }
        Source::Github(owner, repo) => github(fetcher, endpoints, provider, source, owner, repo).await,
    }
}

/// A release as a source lists it, before the registry-specific flags.
fn release(provider: Provider, source: &Source, version: &str, published_at: Option<String>) -> Release {
    Release {
        provider,
        source: source.label(),
        package: source.package(),
        package_version: version.into(),
        version: version.into(),
        published_at,
        prerelease: is_prerelease(version),
        yanked: None,
        deprecated: None,
        dist_tags: Vec::new(),
    }
}

/// A publish time to the second, RFC 3339 UTC.
fn seconds(t: jiff::Timestamp) -> String {
    t.round(jiff::Unit::Second).unwrap_or(t).to_string()
}

/// Words that mark a version as a pre-release (PEP 440 and common tags).
const PRE_RELEASE_WORDS: [&str; 7] = ["a", "b", "rc", "dev", "alpha", "beta", "pre"]; // not a channel

/// Whether a version string is a pre-release, for the PEP 440 and SemVer spellings upstreams use.
pub fn is_prerelease(v: &str) -> bool {
    if let Ok(s) = semver::Version::parse(v) {
        return !s.pre.is_empty();
    }
    let lower = v.to_ascii_lowercase();
    PRE_RELEASE_WORDS.iter().any(|m| {
        lower
            .split(['.', '-'])
            .any(|part| part.trim_start_matches(|c: char| c.is_ascii_digit()).starts_with(m))
    })
}

/// PyPI JSON API: `releases` maps each version to its files; the upload time is the earliest
/// file's, a version is yanked when every file is (PEP 592), and a version without files has no
/// timestamp.
pub fn pypi(provider: Provider, source: &Source, body: &serde_json::Value) -> Result<Vec<Release>> {
    let releases = body
        .get("releases")
        .and_then(|r| r.as_object())
        .ok_or_else(|| malformed(source, "no `releases` object"))?;
    let mut out = Vec::new();
    for (version, files) in releases {
        let files = files
            .as_array()
            .ok_or_else(|| malformed(source, &format!("releases.{version} is not a list")))?;
        let published_at = files
            .iter()
            .filter_map(|f| f.get("upload_time_iso_8601").and_then(|t| t.as_str()))
            .filter_map(|t| t.parse::<jiff::Timestamp>().ok())
            .min()
            .map(seconds);
        let yanked = (!files.is_empty() && files.iter().all(|f| f["yanked"].as_bool() == Some(true))).then(|| {
            files
                .iter()
                .find_map(|f| f["yanked_reason"].as_str())
                .unwrap_or("yanked")
                .to_string()
        });
        out.push(Release {
            yanked,
            ..release(provider, source, version, published_at)
        });
    }
    Ok(out)
}

/// npm packument: `versions` (with `deprecated`), `time` (publish times), `dist-tags`.
pub fn npm(provider: Provider, source: &Source, body: &serde_json::Value) -> Result<Vec<Release>> {
    let versions = body
        .get("versions")
        .and_then(|r| r.as_object())
        .ok_or_else(|| malformed(source, "no `versions` object"))?;
    let time = body.get("time").and_then(|t| t.as_object());
    let mut tags: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if let Some(dt) = body.get("dist-tags").and_then(|t| t.as_object()) {
        for (tag, v) in dt {
            if let Some(v) = v.as_str() {
                tags.entry(v.to_string()).or_default().push(tag.clone());
            }
        }
    }
    let mut out = Vec::new();
    for (version, meta) in versions {
        let published_at = time
            .and_then(|t| t.get(version))
            .and_then(|t| t.as_str())
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .map(seconds);
        let deprecated = match meta.get("deprecated") {
            Some(serde_json::Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(serde_json::Value::Bool(true)) => Some("deprecated".into()),
            _ => None,
        };
        out.push(Release {
            deprecated,
            dist_tags: tags.get(version).cloned().unwrap_or_default(),
            ..release(provider, source, version, published_at)
        });
    }
    Ok(out)
}

/// The version in a release tag: `v0.2.1`, `rust-v0.2.1` and `0.2.1` all give `0.2.1`.
pub fn tag_version(tag: &str) -> String {
    match tag.find(|c: char| c.is_ascii_digit()) {
        Some(i) => tag[i..].to_string(),
        None => tag.to_string(),
    }
}

/// The GitHub client: the configured API base and token, if any.
fn github_client(endpoints: &Endpoints) -> Result<octocrab::Octocrab> {
    let mut builder = octocrab::Octocrab::builder();
    if let Some(base) = &endpoints.github {
        builder = builder
            .base_uri(base.as_str())
            .map_err(|e| LabError::usage(format!("upstream.github_api `{base}`: {e}"), "write a URL"))?;
    }
    if let Some(t) = &endpoints.github_token {
        builder = builder.personal_token(t.clone());
    }
    builder
        .build()
        .map_err(|e| LabError::usage(format!("cannot build the GitHub client: {e}"), "internal"))
}

/// GitHub releases through octocrab (base URI configurable), with the same conditional-request
/// and rate-limit handling as the other sources. Drafts are dropped; prereleases are flagged.
async fn github(
    fetcher: &Fetcher,
    endpoints: &Endpoints,
    provider: Provider,
    source: &Source,
    owner: &str,
    repo: &str,
) -> Result<Fetched> {
    use http_body_util::BodyExt;
    let client = github_client(endpoints)?;
    let path = format!("/repos/{owner}/{repo}/releases?per_page=100");
    let cache = fetcher.conditional_cache(&format!("github{path}"));
    fetcher
        .retrying("GitHub", async || {
            let mut headers = http::HeaderMap::new();
            headers.insert(
                http::header::ACCEPT,
                http::HeaderValue::from_static("application/vnd.github+json"),
            );
            if let Some(v) = cache.etag().and_then(|e| http::HeaderValue::from_str(&e).ok()) {
                headers.insert(http::header::IF_NONE_MATCH, v);
            }
            let resp = match client._get_with_headers(path.as_str(), Some(headers)).await {
                Ok(r) => r,
                Err(e) => {
                    return Ok(Attempt::Retry {
                        why: format!("{}: {e}", source.label()),
                        wait: None,
                    });
                }
            };
            let status = resp.status();
            let header =
                |h: http::header::HeaderName| resp.headers().get(h).and_then(|v| v.to_str().ok()).map(String::from);
            let etag = header(http::header::ETAG);
            let wait = header(http::header::RETRY_AFTER)
                .and_then(|v| super::http::parse_retry_after(&v, jiff::Timestamp::now()));
            let why = format!("{}: GitHub answered {status}", source.label());
            if status == http::StatusCode::NOT_MODIFIED {
                return match cache.body() {
                    Some(body) => Ok(Attempt::Done(Fetched {
                        releases: github_releases(provider, source, &body)?,
                        freshness: Freshness::NotModified,
                    })),
                    None => Ok(Attempt::Retry { why, wait: None }),
                };
            }
            if status == http::StatusCode::NOT_FOUND {
                return Err(not_found(source, &path));
            }
            // GitHub's secondary rate limit is a 403 with Retry-After.
            let limited = status == http::StatusCode::TOO_MANY_REQUESTS
                || status == http::StatusCode::FORBIDDEN && wait.is_some();
            if limited || status.is_server_error() {
                return Ok(Attempt::Retry { why, wait });
            }
            if !status.is_success() {
                return Err(LabError::usage(
                    why,
                    "check the repository name and upstream.github_token_env",
                ));
            }
            match resp
                .into_body()
                .collect()
                .await
                .map(|b| serde_json::from_slice::<serde_json::Value>(&b.to_bytes()))
            {
                Ok(Ok(body)) => {
                    let releases = github_releases(provider, source, &body)?;
                    cache.store(etag, &body);
                    Ok(Attempt::Done(Fetched {
                        releases,
                        freshness: Freshness::Fetched,
                    }))
                }
                Ok(Err(e)) => Ok(Attempt::Retry {
                    why: format!("{}: the answer is not JSON ({e})", source.label()),
                    wait: None,
                }),
                Err(e) => Ok(Attempt::Retry {
                    why: format!("{}: {e}", source.label()),
                    wait: None,
                }),
            }
        })
        .await
}

/// GitHub's release list, read through octocrab's model (so a changed shape is an error).
pub fn github_releases(provider: Provider, source: &Source, body: &serde_json::Value) -> Result<Vec<Release>> {
    let list: Vec<octocrab::models::repos::Release> =
        serde_json::from_value(body.clone()).map_err(|e| malformed(source, &e.to_string()))?;
    Ok(list
        .into_iter()
        .filter(|r| !r.draft)
        .map(|r| {
            let version = tag_version(&r.tag_name);
            let published_at = r
                .published_at
                .and_then(|t| t.to_rfc3339().parse::<jiff::Timestamp>().ok())
                .map(seconds);
            let mut rel = release(provider, source, &version, published_at);
            rel.prerelease |= r.prerelease;
            rel
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prerelease_spellings() {
        for v in ["0.2.0a1", "1.0.0rc2", "1.0.0-beta.1", "0.1.0.dev3", "2.0.0-alpha"] {
            assert!(is_prerelease(v), "{v}");
        }
        for v in ["0.163.0", "2.1.329", "1.0.0.post1"] {
            assert!(!is_prerelease(v), "{v}");
        }
    }

    #[test]
    fn tags_give_versions() {
        assert_eq!(tag_version("rust-v0.63.0"), "0.63.0");
        assert_eq!(tag_version("v1.2.3-beta.1"), "1.2.3-beta.1");
    }

    #[test]
    fn sources_parse() {
        assert_eq!(
            Source::parse("npm:@openai/codex").unwrap(),
            Source::Npm("@openai/codex".into())
        );
        assert_eq!(
            Source::parse("github:google-gemini/gemini-cli").unwrap(),
            Source::Github("google-gemini".into(), "gemini-cli".into())
        );
        assert!(Source::parse("cargo:x").is_err());
        assert!(Source::parse("github:nope").is_err());
    }
}
