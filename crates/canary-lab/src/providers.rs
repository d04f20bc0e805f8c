//! The real agent CLIs at exact upstream versions, fetched the ordinary way (`pip download`,
//! which takes its index from pip's own configuration) and cached by version.
//!
//! Codex ships in `openai-codex-cli-bin` (package version = CLI version). Claude Code ships
//! inside `claude-agent-sdk`; each SDK release bundles one CLI, whose version the wheel records
//! in `_bundled/claude.version`. Gemini CLI is npm-only (see `images/gemini/`).

use crate::error::{LabError, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

pub use canary_contract::Provider;

/// `codex@0.163.0`, `claude-code@latest` (the newest SDK's CLI), `claude-code@sdk-0.1.9`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderSpec {
    pub provider: Provider,
    /// The package version to fetch; `None` for the newest.
    pub package_version: Option<String>,
}

/// As a person types it: `codex@0.163.0`, `claude-code@sdk-0.2.187`, `codex@latest` (what
/// [`FromStr`](std::str::FromStr) reads back).
impl std::fmt::Display for ProviderSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.package_version, self.provider) {
            (None, p) => write!(f, "{}@latest", p.name()),
            (Some(v), Provider::ClaudeCode) => write!(f, "{}@sdk-{v}", Provider::ClaudeCode.name()),
            (Some(v), p) => write!(f, "{}@{v}", p.name()),
        }
    }
}

impl std::str::FromStr for ProviderSpec {
    type Err = LabError;
    fn from_str(s: &str) -> Result<ProviderSpec> {
        let help = "write codex@<version>, claude-code@sdk-<claude-agent-sdk version>, or <provider>@latest";
        let (name, version) = s
            .split_once('@')
            .ok_or_else(|| LabError::usage(format!("invalid provider `{}`", crate::text::clean(s)), help))?;
        if version.is_empty()
            || version.len() > 64
            || !version
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+' | '!'))
        {
            return Err(LabError::usage(
                format!("invalid version in provider `{}`", crate::text::clean(s)),
                "a version is letters, digits and . - _ + ! (e.g. codex@0.163.0)",
            ));
        }
        let provider = Provider::from_name(name).ok_or_else(|| {
            LabError::usage(
                format!("unknown provider `{}`", crate::text::clean(name)),
                "providers: codex, claude-code, gemini",
            )
        })?;
        let package_version = match (provider, version) {
            (_, "latest") => None,
            (Provider::ClaudeCode, v) => Some(
                v.strip_prefix("sdk-")
                    .ok_or_else(|| {
                        LabError::usage(
                            format!("`{s}`: Claude Code versions are chosen by the claude-agent-sdk release that bundles them"),
                            "write claude-code@sdk-<sdk version> or claude-code@latest; `canary providers fetch` prints the CLI version it bundles",
                        )
                    })?
                    .to_string(),
            ),
            (_, v) => Some(v.to_string()),
        };
        if provider == Provider::Gemini {
            return Err(LabError::usage(
                "Gemini CLI ships only through npm, which this lab cannot reach",
                "build images/gemini/Dockerfile where npm is reachable, then run suites with --image",
            ));
        }
        Ok(ProviderSpec {
            provider,
            package_version,
        })
    }
}

/// Revision of the cache layout and metadata; entries of another revision are fetched again.
const CACHE_FORMAT: u32 = 2;

/// A CLI binary in the cache, with where it came from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fetched {
    #[serde(default)]
    pub format: u32,
    pub provider: Provider,
    pub package: String,
    pub package_version: String,
    /// The CLI's own version (for Claude Code, the one its SDK release bundles).
    pub cli_version: String,
    pub binary: PathBuf,
    pub command: String,
    pub wheel_sha256: String,
}

fn pip() -> Command {
    let mut c = Command::new("python3");
    c.args(["-m", "pip"]);
    c
}

/// Versions the index offers (newest first), from pip itself.
pub fn available_versions(package: &str) -> Result<Vec<String>> {
    let out = pip()
        .args(["index", "versions", package])
        .output()
        .map_err(|e| LabError::usage(format!("cannot run pip: {e}"), "install python3-pip"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("Available versions:"))
        .unwrap_or("");
    Ok(line
        .split_once(':')
        .map(|(_, v)| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default())
}

/// Fetches (or finds in the cache) the CLI binary for `spec`.
pub fn fetch(spec: &ProviderSpec, cache: &Path) -> Result<Fetched> {
    let package = spec
        .provider
        .package()
        .expect("npm-only providers are refused when parsed");
    // Parallel fetches of one package (tests, CI jobs) take turns; the second finds the cache.
    let _lock = crate::fsutil::lock_blocking(&cache.join("wheels").join(format!("{package}.lock")))?;
    if let Some(v) = &spec.package_version {
        let meta = cache
            .join("providers")
            .join(spec.provider.name())
            .join(v)
            .join("provider.json");
        if let Some(f) = std::fs::read(&meta)
            .ok()
            .and_then(|b| serde_json::from_slice::<Fetched>(&b).ok())
            .filter(|f| f.format == CACHE_FORMAT && f.binary.is_file())
        {
            return Ok(f);
        }
    }
    let wheels = cache.join("wheels").join(package);
    std::fs::create_dir_all(&wheels).map_err(|e| LabError::write(&wheels, e))?;
    let requirement = match &spec.package_version {
        Some(v) => format!("{package}=={v}"),
        None => package.to_string(),
    };
    let out = pip()
        .args([
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "--platform",
            "manylinux_2_17_x86_64",
            "--python-version",
            "3.11",
            "-d",
        ])
        .arg(&wheels)
        .arg(&requirement)
        .output()
        .map_err(|e| LabError::usage(format!("cannot run pip: {e}"), "install python3-pip"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let versions = available_versions(package).unwrap_or_default();
        let shown = versions.iter().take(15).cloned().collect::<Vec<_>>().join(", ");
        return Err(LabError::usage(
            format!(
                "pip could not fetch {requirement}: {}",
                stderr
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("no output")
                    .trim()
            ),
            if versions.is_empty() {
                "check pip's index configuration (pip config list)".to_string()
            } else {
                format!(
                    "available versions of {package}: {shown}{}",
                    if versions.len() > 15 { ", …" } else { "" }
                )
            },
        ));
    }
    let wheel = newest_wheel(&wheels, package, spec.package_version.as_deref())?;
    let package_version = wheel_version(&wheel)
        .ok_or_else(|| LabError::usage(format!("cannot read the version of {}", wheel.display()), "internal"))?;
    extract(spec.provider, package, &package_version, &wheel, cache)
}

fn newest_wheel(dir: &Path, package: &str, version: Option<&str>) -> Result<PathBuf> {
    let stem = package.replace('-', "_");
    let mut wheels: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| LabError::read(dir, e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{stem}-")) && n.ends_with(".whl"))
        })
        .filter(|p| version.is_none_or(|v| wheel_version(p).as_deref() == Some(v)))
        .collect();
    wheels.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    wheels.pop().ok_or_else(|| {
        LabError::usage(
            format!("pip reported success but no {package} wheel is in {}", dir.display()),
            "internal",
        )
    })
}

fn wheel_version(path: &Path) -> Option<String> {
    path.file_name()?.to_str()?.split('-').nth(1).map(String::from)
}

pub use canary_runner::wheel::unpack_cli;

fn extract(provider: Provider, package: &str, package_version: &str, wheel: &Path, cache: &Path) -> Result<Fetched> {
    let wheel_bytes = std::fs::read(wheel).map_err(|e| LabError::read(wheel, e))?;
    let wheel_sha256 = format!("sha256:{}", hex::encode(Sha256::digest(&wheel_bytes)));
    let (_, _, command) = provider.layout();
    let dir = cache.join("providers").join(provider.name()).join(package_version);
    let root = dir.join("cli");
    let (binary, mut zip) = unpack_cli(provider, wheel_bytes, &root, &wheel.display().to_string())?;
    let cli_version = match provider {
        Provider::ClaudeCode => bundled_claude_version(&mut zip).ok_or_else(|| {
            LabError::usage(
                format!("{} does not record the Claude Code version it bundles", wheel.display()),
                "looked for _bundled/claude.version and _cli_version.py: the package layout changed",
            )
        })?,
        _ => package_version.to_string(),
    };
    let fetched = Fetched {
        format: CACHE_FORMAT,
        provider,
        package: package.into(),
        package_version: package_version.into(),
        cli_version,
        binary,
        command: command.into(),
        wheel_sha256,
    };
    crate::fsutil::write_atomic(
        &dir.join("provider.json"),
        serde_json::to_string_pretty(&fetched).expect("json").as_bytes(),
    )?;
    Ok(fetched)
}

/// The Claude Code version a claude-agent-sdk wheel bundles. Releases record it differently:
/// `_bundled/claude.version` (`2.1.329 (Claude Code)`, seen in 0.2.186) or `_cli_version.py`
/// (`__cli_version__ = "2.1.321"`, seen in 0.2.180).
fn bundled_claude_version<R: std::io::Read + std::io::Seek>(zip: &mut zip::ZipArchive<R>) -> Option<String> {
    let mut read = |name: &str| -> Option<String> {
        let mut s = String::new();
        zip.by_name(name).ok()?.read_to_string(&mut s).ok()?;
        Some(s)
    };
    if let Some(text) = read("claude_agent_sdk/_bundled/claude.version") {
        return text.split_whitespace().next().map(String::from);
    }
    let text = read("claude_agent_sdk/_cli_version.py")?;
    let line = text.lines().find(|l| l.trim_start().starts_with("__cli_version__"))?;
    Some(line.split(['"', '\'']).nth(1)?.to_string())
}

/// Whether a CLI's `--version` output names `expected` (the package's version). PyPI writes
/// pre-releases the PEP 440 way (`0.137.0a4`), the CLIs the SemVer way (`0.137.0-alpha.4`):
/// both are compared as release numbers plus pre-release kind and number.
pub fn version_matches(printed: &str, expected: &str) -> bool {
    if printed
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .any(|w| w == expected)
    {
        return true;
    }
    let Some(want) = release_and_pre(expected) else {
        return false;
    };
    printed
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .filter_map(|w| release_and_pre(w.trim_start_matches('v')))
        .any(|got| got == want)
}

/// Release numbers without trailing zeros, and the pre-release kind (`a`, `b`, `c`) and number.
type ReleaseAndPre = (Vec<u64>, Option<(char, u64)>);

/// (release numbers without trailing zeros, pre-release kind and number) of a PEP 440 or SemVer
/// version string.
fn release_and_pre(v: &str) -> Option<ReleaseAndPre> {
    let trim = |mut r: Vec<u64>| {
        while r.len() > 1 && r.last() == Some(&0) {
            r.pop();
        }
        r
    };
    if let Ok(s) = semver::Version::parse(v) {
        let pre = if s.pre.is_empty() {
            None
        } else {
            let text = s.pre.as_str();
            let (kind, rest) = text.split_once('.').unwrap_or((text, "0"));
            let kind = match kind {
                "alpha" | "a" => 'a',
                "beta" | "b" => 'b', // a pre-release word, not a channel
                "rc" | "c" => 'c',
                _ => return None,
            };
            Some((kind, rest.parse().ok()?))
        };
        return Some((trim(vec![s.major, s.minor, s.patch]), pre));
    }
    let p: pep440_rs::Version = v.parse().ok()?;
    if p.is_post() || p.is_dev() || p.is_local() {
        return None;
    }
    let pre = p.pre().map(|pre| {
        let kind = match pre.kind {
            pep440_rs::PrereleaseKind::Alpha => 'a',
            pep440_rs::PrereleaseKind::Beta => 'b',
            pep440_rs::PrereleaseKind::Rc => 'c',
        };
        (kind, pre.number)
    });
    Some((trim(p.release().to_vec()), pre))
}

/// Runs `<binary> --version` and checks that it names `expected`.
pub fn verify_version(binary: &Path, expected: &str) -> Result<String> {
    let out = Command::new(binary).arg("--version").output().map_err(|e| {
        LabError::usage(
            format!("cannot run {}: {e}", binary.display()),
            "the binary may not run on this system",
        )
    })?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || !version_matches(&text, expected) {
        return Err(LabError::usage(
            format!("{} --version printed `{text}`, expected {expected}", binary.display()),
            "the package does not carry the CLI version it claims",
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wheel(files: &[(&str, &str)]) -> zip::ZipArchive<std::io::Cursor<Vec<u8>>> {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        for (name, text) in files {
            w.start_file(*name, zip::write::SimpleFileOptions::default()).unwrap();
            std::io::Write::write_all(&mut w, text.as_bytes()).unwrap();
        }
        zip::ZipArchive::new(std::io::Cursor::new(w.finish().unwrap().into_inner())).unwrap()
    }

    #[test]
    fn both_recorded_claude_version_layouts_are_read() {
        let mut new = wheel(&[("claude_agent_sdk/_bundled/claude.version", "2.1.329 (Claude Code)\n")]);
        assert_eq!(bundled_claude_version(&mut new).as_deref(), Some("2.1.329"));
        let mut old = wheel(&[(
            "claude_agent_sdk/_cli_version.py",
            "\"\"\"Bundled Claude Code CLI version.\"\"\"\n\n__cli_version__ = \"2.1.321\"\n",
        )]);
        assert_eq!(bundled_claude_version(&mut old).as_deref(), Some("2.1.321"));
        assert_eq!(bundled_claude_version(&mut wheel(&[("other", "")])), None);
    }

    fn wheel_bytes(files: &[(&str, &str)]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        for (name, text) in files {
            w.start_file(*name, zip::write::SimpleFileOptions::default()).unwrap();
            std::io::Write::write_all(&mut w, text.as_bytes()).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    /// The wheel entry `codex_cli_bin//<absolute path>` passed the old `..` check and
    /// `Path::join` wrote it at the absolute path.
    #[test]
    fn a_wheel_entry_with_an_absolute_path_inside_the_cli_folder_writes_nothing() {
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        let evil = format!("codex_cli_bin/{}", victim.display());
        let bytes = wheel_bytes(&[("codex_cli_bin/bin/codex", "#!/bin/sh\n"), (&evil, "pwned")]);
        let home = tempfile::tempdir().unwrap();
        let e = unpack_cli(Provider::Codex, bytes, &home.path().join("cli"), "evil.whl").unwrap_err();
        assert!(e.to_string().contains("empty path component"), "{e}");
        assert!(!victim.exists(), "wrote outside the cache");
        assert!(!home.path().join("cli").exists());
        let good = wheel_bytes(&[
            ("codex_cli_bin/bin/codex", "#!/bin/sh\n"),
            ("codex_cli_bin/__init__.py", ""),
        ]);
        let (binary, _) = unpack_cli(Provider::Codex, good, &home.path().join("cli"), "good.whl").unwrap();
        assert_eq!(binary, home.path().join("cli/bin/codex"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&binary).unwrap().permissions().mode() & 0o777, 0o755);
        let missing = wheel_bytes(&[("codex_cli_bin/README", "x")]);
        let e = unpack_cli(Provider::Codex, missing, &home.path().join("cli"), "w.whl").unwrap_err();
        assert!(e.to_string().contains("package layout changed"), "{e}");
    }

    #[test]
    fn pep440_pre_releases_match_the_clis_semver() {
        assert!(version_matches("codex-cli 0.137.0-alpha.4", "0.137.0a4"));
        assert!(version_matches("codex-cli 0.163.0", "0.163.0"));
        assert!(version_matches("2.1.329 (Claude Code)", "2.1.329"));
        assert!(version_matches("codex-cli 0.164.0-rc.1", "0.164.0rc1"));
        assert!(!version_matches("codex-cli 0.137.0-alpha.5", "0.137.0a4"));
        assert!(!version_matches("codex-cli 0.137.0-beta.4", "0.137.0a4"));
        assert!(!version_matches("codex-cli 0.137.0", "0.137.0a4"));
        assert!(!version_matches("codex-cli 0.163.1", "0.163.0"));
        assert!(
            !version_matches("codex-cli 10.163.0", "0.163.0"),
            "no substring matches"
        );
    }

    #[test]
    fn specs_parse_with_clear_errors() {
        assert!("codex@--upload-pack=x".parse::<ProviderSpec>().is_err());
        assert!("codex@".parse::<ProviderSpec>().is_err());
        let c: ProviderSpec = "codex@0.163.0".parse().unwrap();
        assert_eq!(
            (c.provider, c.package_version.as_deref()),
            (Provider::Codex, Some("0.163.0"))
        );
        let l: ProviderSpec = "claude-code@latest".parse().unwrap();
        assert_eq!(l.package_version, None);
        let s: ProviderSpec = "claude-code@sdk-0.1.9".parse().unwrap();
        assert_eq!(s.package_version.as_deref(), Some("0.1.9"));
        // Printed as typed, so a printed command reads back as the same spec.
        for typed in ["codex@0.163.0", "claude-code@sdk-0.1.9", "claude-code@latest"] {
            assert_eq!(typed.parse::<ProviderSpec>().unwrap().to_string(), typed);
        }
        assert!(
            "claude-code@2.1.0"
                .parse::<ProviderSpec>()
                .unwrap_err()
                .to_string()
                .contains("claude-agent-sdk release")
        );
        assert!(
            "gemini@0.9.0"
                .parse::<ProviderSpec>()
                .unwrap_err()
                .to_string()
                .contains("npm")
        );
        assert!("cursor@1".parse::<ProviderSpec>().is_err());
    }
}
