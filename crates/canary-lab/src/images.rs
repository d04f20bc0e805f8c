//! Images the lab runs cases in.
//!
//! The base image holds the OS, git, node, tsc, python3 and pytest. No container registry is
//! reachable where the lab must work, so the base is built from Debian packages with
//! debootstrap and imported into Docker. Its tag is a hash of everything that decides its
//! content (release, package list, the setup steps below), so an unchanged recipe is never
//! rebuilt and a changed one never reuses a stale image.

use crate::Settings;
use crate::engine::Backend;
use crate::engine::docker::DockerBackend;
use crate::error::{LabError, Result};
use crate::progress::Progress;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Debian packages of the base image, beyond debootstrap's minimal base.
pub const BASE_PACKAGES: &[&str] = &[
    "ca-certificates",
    "git",
    "nodejs",
    "node-typescript",
    "python3",
    "python3-pytest",
    "procps",
];

/// Bump when the setup below changes what ends up in the image.
const RECIPE_REVISION: &str = "base-1";

/// Image configuration applied at import time (Dockerfile instructions).
const IMAGE_CHANGES: &[&str] = &[
    "ENV LANG=C.UTF-8",
    "ENV HOME=/home/canary",
    "WORKDIR /work",
    "USER 1000:1000",
    "CMD [\"sleep\", \"infinity\"]",
];

pub const BASE_REPO: &str = "canary-lab/base";

/// The tag the base image has for this recipe: `canary-lab/base:<12 hex>`.
pub fn base_tag(config: &Settings) -> String {
    let mut h = Sha256::new();
    for part in [
        RECIPE_REVISION,
        &config.debian_release,
        &BASE_PACKAGES.join(","),
        &IMAGE_CHANGES.join("\n"),
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    format!("{BASE_REPO}:{}", &hex::encode(h.finalize())[..12])
}

/// The base image reference the lab uses: the configured one, else the built one.
pub fn base_reference(config: &Settings) -> String {
    config.base_image.clone().unwrap_or_else(|| base_tag(config))
}

#[derive(Debug, serde::Serialize)]
pub struct BaseImage {
    pub reference: String,
    pub id: String,
    pub built: bool,
}

/// Ensures the base image exists, building it when missing (or when `force`).
pub async fn ensure_base(
    engine: &DockerBackend,
    config: &Settings,
    force: bool,
    progress: &Progress,
) -> Result<BaseImage> {
    let reference = base_reference(config);
    if let Some(info) = engine.image(&reference).await? {
        if !force || config.base_image.is_some() {
            return Ok(BaseImage {
                reference,
                id: info.id,
                built: false,
            });
        }
    }
    if config.base_image.is_some() {
        return Err(LabError::ImageMissing {
            image: reference,
            hint: "the lab config names this base image: load or pull it into this engine, or remove `base_image` to build one with debootstrap".into(),
        });
    }
    // Two labs on one engine (parallel CI jobs, parallel tests) must not debootstrap into the
    // same folder: the second waits, then finds the image the first built.
    let _lock = crate::fsutil::lock(&config.cache_dir.join("base-image.lock")).await?;
    if !force {
        if let Some(info) = engine.image(&reference).await? {
            return Ok(BaseImage {
                reference,
                id: info.id,
                built: false,
            });
        }
    }
    let id = build_base(engine, config, &reference, progress).await?;
    Ok(BaseImage {
        reference,
        id,
        built: true,
    })
}

async fn build_base(engine: &DockerBackend, config: &Settings, reference: &str, progress: &Progress) -> Result<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(LabError::ImageBuild(
            "debootstrap needs root: run `canary images base` as root (or via sudo)".into(),
        ));
    }
    if which("debootstrap").is_none() {
        return Err(LabError::ImageBuild(
            "debootstrap is not installed: `apt-get install debootstrap` (the Justfile's `setup` recipe does it)"
                .into(),
        ));
    }
    let mirror = match &config.debian_mirror {
        Some(m) => m.clone(),
        None => apt_mirror().ok_or_else(|| {
            LabError::ImageBuild("no Debian mirror found in /etc/apt: set `debian_mirror` in canary.yaml".into())
        })?,
    };
    let tag = reference.rsplit_once(':').map_or("latest", |(_, t)| t);
    let rootfs = config.cache_dir.join(format!("rootfs-{tag}"));
    let _ = std::fs::remove_dir_all(&rootfs);
    std::fs::create_dir_all(&config.cache_dir).map_err(|e| LabError::write(&config.cache_dir, e))?;

    let result = async {
        debootstrap(config, &rootfs, &mirror, reference, progress).await?;
        prepare_rootfs(&rootfs)?;
        progress.line(format!("importing {reference} into the engine"));
        let spinner = progress.spinner("import");
        let mut tar = tokio::process::Command::new("tar")
            .args(["--numeric-owner", "-C"])
            .arg(&rootfs)
            .args(["-cf", "-", "."])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| LabError::ImageBuild(format!("cannot start tar: {e}")))?;
        let stream = tokio_util::io::ReaderStream::new(tar.stdout.take().expect("piped"));
        let changes = IMAGE_CHANGES.iter().map(|s| s.to_string()).collect();
        let id = engine.import_rootfs(reference, changes, stream.boxed()).await?;
        let status = tar.wait().await.map_err(|e| LabError::ImageBuild(e.to_string()))?;
        spinner.finish_and_clear();
        if !status.success() {
            return Err(LabError::ImageBuild(format!(
                "tar of the root filesystem failed ({status})"
            )));
        }
        Ok(id)
    }
    .await;
    let _ = std::fs::remove_dir_all(&rootfs);
    result
}

/// debootstrap of the base packages into `rootfs`, its progress on a spinner and the tail of
/// its output in the error when it fails.
async fn debootstrap(
    config: &Settings,
    rootfs: &Path,
    mirror: &str,
    reference: &str,
    progress: &Progress,
) -> Result<()> {
    progress.line(format!(
        "building {reference}: debootstrap {} ({} packages)",
        config.debian_release,
        BASE_PACKAGES.len()
    ));
    let spinner = progress.spinner("debootstrap");
    let mut child = tokio::process::Command::new("debootstrap")
        .args(["--variant=minbase", &format!("--include={}", BASE_PACKAGES.join(","))])
        .arg(&config.debian_release)
        .arg(rootfs)
        .arg(mirror)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| LabError::ImageBuild(format!("cannot start debootstrap: {e}")))?;
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut tail = Vec::new();
    while let Ok(Some(line)) = lines.next_line().await {
        spinner.set_message(line.clone());
        tail.push(line);
        if tail.len() > 20 {
            tail.remove(0);
        }
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| LabError::ImageBuild(e.to_string()))?;
    spinner.finish_and_clear();
    if !out.status.success() {
        return Err(LabError::ImageBuild(format!(
            "debootstrap failed ({}):\n{}\n{}",
            out.status,
            tail.join("\n"),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

/// Adds the unprivileged case user (uid/gid 1000) and the workspace, and drops what only the
/// build needed (package caches, device nodes Docker provides itself).
fn prepare_rootfs(root: &Path) -> Result<()> {
    use std::io::Write;
    let append = |rel: &str, line: &str| -> Result<()> {
        let path = root.join(rel);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| LabError::write(&path, e))?;
        writeln!(f, "{line}").map_err(|e| LabError::write(&path, e))
    };
    append("etc/passwd", "canary:x:1000:1000:Canary Lab:/home/canary:/bin/bash")?;
    append("etc/group", "canary:x:1000:")?;
    append("etc/shadow", "canary:!:19000::::::")?;
    for dir in ["home/canary", "work"] {
        let path = root.join(dir);
        std::fs::create_dir_all(&path).map_err(|e| LabError::write(&path, e))?;
        std::os::unix::fs::chown(&path, Some(1000), Some(1000)).map_err(|e| LabError::write(&path, e))?;
    }
    // git refuses repos owned by another user unless told otherwise; the lab owns /work.
    std::fs::write(
        root.join("etc/gitconfig"),
        "[safe]\n\tdirectory = *\n[init]\n\tdefaultBranch = main\n",
    )
    .map_err(|e| LabError::write(root.join("etc/gitconfig"), e))?;
    for dir in ["dev", "var/cache/apt/archives", "var/lib/apt/lists"] {
        clear_dir(&root.join(dir));
    }
    Ok(())
}

fn clear_dir(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                let _ = std::fs::remove_dir_all(&p);
            } else {
                let _ = std::fs::remove_file(&p);
            }
        }
    }
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// The first Debian archive (not the security one) in this machine's apt sources: the mirror
/// the machine already uses, so the lab never names one itself.
pub fn apt_mirror() -> Option<String> {
    let mut candidates = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut files: Vec<_> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "sources"))
            .collect();
        files.sort();
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            candidates.extend(deb822_uris(&text));
        }
    }
    if let Ok(text) = std::fs::read_to_string("/etc/apt/sources.list") {
        for line in text.lines() {
            let mut words = line.split_whitespace().filter(|w| !w.starts_with('['));
            if words.next() == Some("deb") {
                if let Some(uri) = words.next() {
                    candidates.push(uri.to_string());
                }
            }
        }
    }
    candidates
        .into_iter()
        .find(|u| u.contains("debian") && !u.contains("security"))
}

fn deb822_uris(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let enabled = !stanza.lines().any(|l| l.trim().eq_ignore_ascii_case("enabled: no"));
        let is_deb = stanza
            .lines()
            .any(|l| l.starts_with("Types:") && l.split_whitespace().any(|w| w == "deb"));
        if enabled && is_deb {
            for l in stanza.lines().filter(|l| l.starts_with("URIs:")) {
                out.extend(l["URIs:".len()..].split_whitespace().map(String::from));
            }
        }
    }
    out
}

/// Where provider CLIs live in runner builds.
pub const PROVIDERS_DIR: &str = "opt/canary-lab/providers";

/// A CLI's layer: its runtime folder under `/opt/canary-lab/providers/<name>/<version>` and its
/// command on PATH (see [`crate::builds`], which stacks these).
pub fn provider_layer(fetched: &crate::providers::Fetched) -> Result<Vec<u8>> {
    let root = fetched
        .binary
        .ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "cli"))
        .ok_or_else(|| LabError::ImageBuild("provider cache has no cli/ folder".into()))?
        .to_path_buf();
    let prefix = format!("{PROVIDERS_DIR}/{}/{}", fetched.provider.name(), fetched.cli_version);
    let inside = fetched
        .binary
        .strip_prefix(&root)
        .map_err(|_| LabError::ImageBuild("provider binary is outside its cli/ folder".into()))?
        .to_path_buf();
    provider_tar(&root, &prefix, &inside)
}

/// The provider layer: the CLI folder under `prefix`, and `usr/local/bin/<command>`, a small
/// script that execs the binary. A script rather than a symlink: the engine's archive upload
/// does not replace an existing symlink, and a build that changes a CLI must replace its
/// command. Root-owned, modes kept.
fn provider_tar(root: &Path, prefix: &str, inside: &Path) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    b.append_dir_all(prefix, root)
        .map_err(|e| LabError::ImageBuild(format!("packing {}: {e}", root.display())))?;
    let command = inside.file_name().and_then(|n| n.to_str()).unwrap_or("cli").to_string();
    let script = format!("#!/bin/sh\nexec /{prefix}/{} \"$@\"\n", inside.display());
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o755);
    h.set_size(script.len() as u64);
    h.set_mtime(content_mtime(script.as_bytes()));
    b.append_data(&mut h, format!("usr/local/bin/{command}"), script.as_bytes())
        .map_err(|e| LabError::ImageBuild(format!("linking {command}: {e}")))?;
    b.into_inner().map_err(|e| LabError::ImageBuild(e.to_string()))
}

/// A modification time derived from a file's content, for files the lab writes into layers.
/// Engines whose layer diff compares size and mtime only (fuse-overlayfs, vfs) would otherwise
/// miss a replaced file of the same size, and commit a layer without it.
pub fn content_mtime(data: &[u8]) -> u64 {
    let h = Sha256::digest(data);
    1_600_000_000 + u64::from_le_bytes(h[..8].try_into().expect("8 bytes")) % 200_000_000
}

/// Runs `<command> --version` in a container of the image, as the case user.
pub(crate) async fn verify_in_image(
    engine: &DockerBackend,
    reference: &str,
    command: &str,
    expected: &str,
) -> Result<String> {
    let run_id = format!("verify-{}", std::process::id());
    let spec = crate::engine::ContainerSpec::new(&run_id, "version", reference);
    let container = engine.start_container(&spec).await?;
    let out = engine
        .exec(
            &container,
            &crate::engine::ExecSpec {
                cmd: vec![command.into(), "--version".into()],
                env: vec!["HOME=/tmp".into()],
                workdir: "/tmp".into(),
                deadline: std::time::Instant::now() + std::time::Duration::from_secs(60),
                stdin: None,
            },
        )
        .await;
    engine.remove_container(&container).await?;
    let out = out?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.exit_code != Some(0) || !crate::providers::version_matches(&text, expected) {
        return Err(LabError::ImageBuild(format!(
            "`{command} --version` in {reference} printed `{text}` (exit {:?}; stderr: {}), expected {expected}",
            out.exit_code,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deb822_skips_disabled_and_source_stanzas() {
        let text = "Types: deb-src\nURIs: http://src.example/debian\n\nTypes: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\n\nTypes: deb\nEnabled: no\nURIs: http://off.example/debian\n";
        assert_eq!(deb822_uris(text), vec!["http://mirror.example/debian".to_string()]);
    }

    #[test]
    fn base_tag_changes_with_the_release() {
        let a = Settings::default();
        let b = Settings {
            debian_release: "trixie".into(),
            ..Settings::default()
        };
        assert_ne!(base_tag(&a), base_tag(&b));
        assert!(base_tag(&a).starts_with("canary-lab/base:"));
    }
}
