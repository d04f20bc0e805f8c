//! Canary repos: small real projects the suites run against, each pinned by a content digest.
//!
//! A repo lives in `canary-repos/<id>/` with a `canary-repo.yaml` manifest. Its content is either
//! vendored in that folder or fetched from an upstream git URL at a fixed commit. Either way the
//! lab hashes the content and refuses to run a repo whose hash is not the pinned one, so a case's
//! verdict always refers to exactly known inputs.

use crate::error::{LabError, Result};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const MANIFEST: &str = "canary-repo.yaml";
/// Owner of the uploaded files: the unprivileged user the case containers run as.
pub const CONTAINER_UID: u64 = 1000;
/// Where the repo is unpacked inside a case container.
pub const WORKDIR: &str = "/work";

/// Names never part of a repo's content: VCS data, manifests, caches a test run leaves behind.
const IGNORED: &[&str] = &[".git", MANIFEST, "node_modules", "__pycache__", ".pytest_cache"];

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub id: String,
    pub language: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Shell command that runs the repo's tests (`repo_command: test`).
    pub test: String,
    /// Shell command that runs the repo's CI entrypoint (`repo_command: ci`).
    #[serde(default)]
    pub ci: Option<String>,
    /// `sha256:<hex>` of the content; see [`Repo::content_digest`].
    #[schemars(with = "String")]
    pub digest: Spanned<String>,
    #[serde(default)]
    pub upstream: Option<Upstream>,
    /// Values suites refer to as `{{repo.NAME}}` (file paths, strings an edit task changes).
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// A git URL: `https://`, `http://`, `ssh://`, `git://` or `file://`.
    #[schemars(with = "String")]
    pub url: Spanned<String>,
    /// The full commit id (40 or 64 hex digits).
    #[schemars(with = "String")]
    pub commit: Spanned<String>,
}

/// URL schemes an upstream may use. Anything else (a leading `-` that git would read as an
/// option, `ext::` remote helpers that run commands, scp-like paths) is refused before git
/// ever sees it.
const GIT_SCHEMES: &[&str] = &["https", "http", "ssh", "git", "file"];

impl Upstream {
    /// Checks the URL and commit before either reaches a process or a path.
    fn validate(&self, file: &str, text: &str) -> Result<()> {
        let url = self.url.value.as_str();
        let scheme_ok = url
            .split_once("://")
            .is_some_and(|(scheme, rest)| GIT_SCHEMES.contains(&scheme) && !rest.is_empty());
        if !scheme_ok || url.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(crate::yaml::located(
                file,
                text,
                &self.url.referenced,
                format!("upstream.url `{}` is not an allowed git URL", crate::text::clean(url)),
                format!(
                    "write a URL with one of the schemes {}, without spaces",
                    GIT_SCHEMES.join(", ")
                ),
            )
            .into());
        }
        let commit = self.commit.value.as_str();
        if !matches!(commit.len(), 40 | 64) || !commit.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(crate::yaml::located(
                file,
                text,
                &self.commit.referenced,
                format!("upstream.commit `{}` is not a full commit id", crate::text::clean(commit)),
                "write the commit's full id (40 hex digits, or 64 for SHA-256 repositories); branch and tag names move, a pin must not",
            )
            .into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct Repo {
    pub manifest: Manifest,
    pub manifest_path: PathBuf,
    manifest_text: String,
    /// Folder the manifest lives in (vendored content lives here too).
    pub dir: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Catalog {
    pub root: PathBuf,
    pub repos: BTreeMap<String, Repo>,
    /// Where upstream checkouts are cached.
    cache: PathBuf,
}

impl Catalog {
    /// Reads every `<root>/<id>/canary-repo.yaml`.
    pub fn load(root: &Path, cache: &Path) -> Result<Catalog> {
        let entries = std::fs::read_dir(root).map_err(|e| LabError::read(root, e))?;
        let mut repos = BTreeMap::new();
        let mut dirs: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.join(MANIFEST).is_file())
            .collect();
        dirs.sort();
        for dir in dirs {
            let manifest_path = dir.join(MANIFEST);
            let text = crate::fsutil::read_input(&manifest_path, "repo manifest", crate::fsutil::MAX_INPUT)?;
            let folder = dir
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            let manifest = parse_manifest(&manifest_path, &text, &folder)?;
            repos.insert(
                manifest.id.clone(),
                Repo {
                    manifest,
                    manifest_path,
                    manifest_text: text,
                    dir,
                },
            );
        }
        Ok(Catalog {
            root: root.to_path_buf(),
            repos,
            cache: cache.to_path_buf(),
        })
    }
}

/// Parses and checks a repo manifest's text; `folder` is the repo's folder name, which its id
/// must equal. Every error is located in `path`.
pub fn parse_manifest(path: &Path, text: &str, folder: &str) -> Result<Manifest> {
    let file = path.display().to_string();
    let manifest: Manifest = serde_saphyr::from_str(text).map_err(|e| manifest_error(path, text, &e))?;
    if let Some(up) = &manifest.upstream {
        up.validate(&file, text)?;
    }
    if manifest.id != folder {
        return Err(crate::yaml::located_key(
            &file,
            text,
            "id",
            format!(
                "id `{}` does not match its folder `{}`",
                crate::text::clean(&manifest.id),
                crate::text::clean(folder)
            ),
            "a repo's id is its folder name; rename one of them",
        )
        .into());
    }
    for (what, cmd) in [("test", Some(&manifest.test)), ("ci", manifest.ci.as_ref())] {
        if cmd.is_some_and(|c| c.trim().is_empty()) {
            return Err(crate::yaml::located_key(
                &file,
                text,
                what,
                format!("`{what}` is empty"),
                format!("write the shell command that runs the repo's {what}, e.g. `make {what}`"),
            )
            .into());
        }
    }
    Ok(manifest)
}

impl Catalog {
    pub fn ids(&self) -> Vec<String> {
        self.repos.keys().cloned().collect()
    }

    pub fn get(&self, id: &str) -> Result<&Repo> {
        self.repos.get(id).ok_or_else(|| LabError::UnknownRepo {
            id: id.to_string(),
            known: self.ids().join(", "),
        })
    }

    /// The repo's content, verified against its pin.
    pub fn pinned_content(&self, id: &str) -> Result<Content> {
        let repo = self.get(id)?;
        let content = repo.read_content(&self.cache)?;
        let pinned = repo.manifest.digest.value.trim();
        if content.digest != pinned {
            return Err(LabError::RepoPinMismatch {
                id: id.to_string(),
                pinned: pinned.to_string(),
                actual: content.digest,
            });
        }
        Ok(content)
    }

    /// Each repo with its pin's state (`canary repos list`); a content that differs from its
    /// pin is reported, any other error ends the listing.
    pub fn statuses(&self) -> Result<Vec<RepoStatus>> {
        let mut out = Vec::new();
        for (id, repo) in &self.repos {
            let (status, pinned) = match self.pinned_content(id) {
                Ok(_) => ("pinned".to_string(), true),
                Err(LabError::RepoPinMismatch { actual, .. }) => (format!("MISMATCH (content is {actual})"), false),
                Err(e) => return Err(e),
            };
            let m = &repo.manifest;
            out.push(RepoStatus {
                id: id.clone(),
                language: m.language.clone(),
                digest: m.digest.value.clone(),
                test: m.test.clone(),
                ci: m.ci.clone(),
                status,
                pinned,
            });
        }
        Ok(out)
    }

    /// Pins `ids` (every repo when empty), telling `said` for each, as it is pinned, what its
    /// digest became.
    pub fn pin_all(&self, ids: &[String], mut said: impl FnMut(String)) -> Result<()> {
        let ids = if ids.is_empty() { self.ids() } else { ids.to_vec() };
        for id in ids {
            let (old, new) = self.pin(&id)?;
            let change = if old == new {
                format!("{new} (unchanged)")
            } else {
                format!("{old} -> {new}")
            };
            said(format!("{id}: {change}"));
        }
        Ok(())
    }

    /// Rewrites the manifest's digest to the current content (`canary repos pin`).
    pub fn pin(&self, id: &str) -> Result<(String, String)> {
        let repo = self.get(id)?;
        let content = repo.read_content(&self.cache)?;
        let old = repo.manifest.digest.value.clone();
        let start = repo.manifest.digest.referenced.span().byte_offset().unwrap_or(0) as usize;
        let len = repo.manifest.digest.referenced.span().byte_len().unwrap_or(0) as usize;
        let mut text = repo.manifest_text.clone();
        text.replace_range(start..start + len, &content.digest);
        crate::fsutil::write_atomic(&repo.manifest_path, text.as_bytes())?;
        Ok((old, content.digest))
    }
}

/// A canary repo and whether its content matches its pin.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RepoStatus {
    pub id: String,
    pub language: String,
    pub digest: String,
    pub test: String,
    pub ci: Option<String>,
    /// `pinned`, or `MISMATCH (content is …)`.
    pub status: String,
    #[serde(skip)]
    pub pinned: bool,
}

fn manifest_error(path: &Path, text: &str, e: &serde_saphyr::Error) -> LabError {
    let fields = "fields: id, language, description, test, ci, digest, upstream {url, commit}, vars";
    crate::yaml::parse_error(&path.display().to_string(), text, "repo manifest", e, fields).into()
}

/// A repo's files, in a canonical order, with their digest.
#[derive(Debug, Clone)]
pub struct Content {
    pub files: Vec<FileEntry>,
    pub digest: String,
}

#[derive(Debug, Clone)]
pub struct FileEntry {
    pub path: String,
    pub executable: bool,
    pub data: Vec<u8>,
}

/// What the pin covers beside the files: the commands and values the lab runs the repo with,
/// so changing `test:` to `"true"` is a change the lab refuses until it is pinned.
#[derive(Debug, Clone, Copy)]
pub struct RunWith<'a> {
    pub test: &'a str,
    pub ci: Option<&'a str>,
    pub vars: &'a BTreeMap<String, String>,
}

impl Repo {
    fn run_with(&self) -> RunWith<'_> {
        RunWith {
            test: &self.manifest.test,
            ci: self.manifest.ci.as_deref(),
            vars: &self.manifest.vars,
        }
    }

    fn read_content(&self, cache: &Path) -> Result<Content> {
        let root = match &self.manifest.upstream {
            None => self.dir.clone(),
            Some(up) => checkout(up, cache)?,
        };
        let mut files = Vec::new();
        collect(&root, &root, &mut files)?;
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(Content {
            digest: digest(&files, self.run_with()),
            files,
        })
    }
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<FileEntry>) -> Result<()> {
    collect_filtered(root, dir, out, IGNORED)
}

/// The largest file a canary repo may hold, and the most all of its files may weigh: canary
/// repos are small samples, and their content is held in memory to hash and upload.
pub const MAX_REPO_FILE: u64 = 8 * 1024 * 1024;
pub const MAX_REPO_TOTAL: u64 = 32 * 1024 * 1024;

fn collect_filtered(root: &Path, dir: &Path, out: &mut Vec<FileEntry>, ignored: &[&str]) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| LabError::read(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| LabError::read(dir, e))?;
        let name = entry.file_name().to_string_lossy().to_string();
        if ignored.contains(&name.as_str()) {
            continue;
        }
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path).map_err(|e| LabError::read(&path, e))?;
        let refuse =
            |what: &str, help: &str| Err(LabError::usage(format!("{}: {what}", path.display()), help.to_string()));
        if meta.file_type().is_symlink() {
            // Skipping it would test a repo other than the one on disk; following it could
            // read outside the repo.
            return refuse(
                "a canary repo may not hold symbolic links",
                "replace the link with the file it points to, or remove it, then `canary repos pin`",
            );
        }
        if meta.is_dir() {
            collect_filtered(root, &path, out, ignored)?;
        } else if !meta.is_file() {
            return refuse(
                "a canary repo holds regular files and folders only (this is a pipe, socket or device)",
                "remove it from the repo",
            );
        } else if meta.len() > MAX_REPO_FILE {
            return refuse(
                &format!("the file is larger than {} MiB", MAX_REPO_FILE / (1024 * 1024)),
                "canary repos are small pinned samples: keep large files out of them",
            );
        } else {
            let total: u64 = out.iter().map(|f| f.data.len() as u64).sum::<u64>() + meta.len();
            if total > MAX_REPO_TOTAL {
                return refuse(
                    &format!(
                        "the repo's files weigh more than {} MiB together",
                        MAX_REPO_TOTAL / (1024 * 1024)
                    ),
                    "canary repos are small pinned samples: keep large files out of them",
                );
            }
            use std::os::unix::fs::PermissionsExt;
            let rel = path
                .strip_prefix(root)
                .expect("below root")
                .to_string_lossy()
                .replace('\\', "/");
            let data = std::fs::read(&path).map_err(|e| LabError::read(&path, e))?;
            out.push(FileEntry {
                path: rel,
                executable: meta.permissions().mode() & 0o111 != 0,
                data,
            });
        }
    }
    Ok(())
}

/// `sha256` over (path, executable bit, length, bytes) of every file in path order, so renames,
/// mode changes and edits all change the digest; then the commands and variables the repo runs
/// with, each length-prefixed so no two different manifests hash alike.
fn digest(files: &[FileEntry], with: RunWith) -> String {
    let mut h = Sha256::new();
    for f in files {
        h.update(f.path.as_bytes());
        h.update([0, f.executable as u8, 0]);
        h.update((f.data.len() as u64).to_le_bytes());
        h.update(&f.data);
    }
    let mut field = |s: &str| {
        h.update((s.len() as u64).to_le_bytes());
        h.update(s.as_bytes());
    };
    field("manifest-v1");
    field(with.test);
    field(with.ci.unwrap_or("\u{0}none"));
    for (k, v) in with.vars {
        field(k);
        field(v);
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

impl Content {
    /// Reads back a tar made by [`Content::to_tar`] (as kept in a run folder), recomputing the
    /// digest from the bytes, so a tampered or truncated archive cannot pass as pinned content.
    pub fn from_tar(data: &[u8], with: RunWith) -> std::io::Result<Content> {
        let mut archive = tar::Archive::new(data);
        let mut files = Vec::new();
        for entry in archive.entries()? {
            let mut entry = entry?;
            if entry.header().entry_type() != tar::EntryType::Regular {
                continue;
            }
            let path = entry.path()?.to_string_lossy().to_string();
            let rel = path.strip_prefix("work/").unwrap_or(&path).to_string();
            let executable = entry.header().mode()? & 0o111 != 0;
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data)?;
            files.push(FileEntry {
                path: rel,
                executable,
                data,
            });
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(Content {
            digest: digest(&files, with),
            files,
        })
    }

    /// The upload for a case: the content plus a `.git` whose single commit, tagged
    /// `canary-lab/pinned`, records it. Built once per run with the host's git (fixed author
    /// and dates, so the same content always gives the same commit), instead of four git
    /// processes in every case container.
    pub fn baseline_tar(&self) -> Result<Vec<u8>> {
        let dir = tempfile::tempdir().map_err(|e| LabError::write(std::env::temp_dir(), e))?;
        for f in &self.files {
            let path = dir.path().join(&f.path);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| LabError::write(parent, e))?;
            }
            std::fs::write(&path, &f.data).map_err(|e| LabError::write(&path, e))?;
            if f.executable {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                    .map_err(|e| LabError::write(&path, e))?;
            }
        }
        let script = "git init -q --template= -b main . && git add -A && git commit -q --no-verify -m pinned && git tag canary-lab/pinned";
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script])
            .current_dir(dir.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", "canary-lab")
            .env("GIT_AUTHOR_EMAIL", "canary-lab@localhost")
            .env("GIT_COMMITTER_NAME", "canary-lab")
            .env("GIT_COMMITTER_EMAIL", "canary-lab@localhost")
            .env("GIT_AUTHOR_DATE", "2023-11-14T22:13:20Z")
            .env("GIT_COMMITTER_DATE", "2023-11-14T22:13:20Z");
        run_git(cmd, |stderr| {
            LabError::usage(
                format!("recording the repo baseline failed: {stderr}"),
                "check the host's git",
            )
        })?;
        let mut files = Vec::new();
        collect_filtered(dir.path(), dir.path(), &mut files, &[])?;
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(Content {
            digest: self.digest.clone(),
            files,
        }
        .to_tar())
    }

    /// A tar of the content below `work/`, owned by the container user, for upload at `/`.
    pub fn to_tar(&self) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut dirs = std::collections::BTreeSet::new();
        dirs.insert(String::new());
        for f in &self.files {
            let mut p = Path::new(&f.path).parent();
            while let Some(d) = p {
                if d.as_os_str().is_empty() {
                    break;
                }
                dirs.insert(d.to_string_lossy().to_string());
                p = d.parent();
            }
        }
        for d in &dirs {
            let mut h = header(tar::EntryType::Directory, 0o755, 0);
            let path = if d.is_empty() {
                "work/".to_string()
            } else {
                format!("work/{d}/")
            };
            builder
                .append_data(&mut h, path, std::io::empty())
                .expect("in-memory tar");
        }
        for f in &self.files {
            let mut h = header(
                tar::EntryType::Regular,
                if f.executable { 0o755 } else { 0o644 },
                f.data.len() as u64,
            );
            builder
                .append_data(&mut h, format!("work/{}", f.path), f.data.as_slice())
                .expect("in-memory tar");
        }
        builder.into_inner().expect("in-memory tar")
    }
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(CONTAINER_UID);
    h.set_gid(CONTAINER_UID);
    // A fixed time keeps the upload byte-identical across runs.
    h.set_mtime(1_700_000_000);
    h
}

/// Clones `up.url` at `up.commit` into the cache once; later calls reuse the checkout. The
/// cache folder's name is a digest of the URL and commit, never the user's strings, and git
/// gets `--` before them and may use only the allowed transports.
/// Runs a git command made by the caller; when git fails, `failed` makes the error from what it
/// said (cleaned for the terminal).
fn run_git(mut cmd: Command, failed: impl FnOnce(String) -> LabError) -> Result<()> {
    let out = cmd
        .output()
        .map_err(|e| LabError::usage(format!("cannot run git on the lab host: {e}"), "install git"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(failed(
        crate::text::clean(String::from_utf8_lossy(&out.stderr).trim()).into_owned(),
    ))
}

fn checkout(up: &Upstream, cache: &Path) -> Result<PathBuf> {
    let (url, commit) = (up.url.value.as_str(), up.commit.value.as_str());
    let key = hex::encode(Sha256::digest(format!("{url}\0{commit}").as_bytes()));
    let dir = cache.join("repos").join(&key[..24]);
    if dir.join(".git").is_dir() {
        return Ok(dir);
    }
    let tmp = cache.join("repos").join(format!(".{}.partial", &key[..24]));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| LabError::write(&tmp, e))?;
    let git = |args: &[&str]| -> Result<()> {
        let mut cmd = Command::new("git");
        cmd.args(args)
            .current_dir(&tmp)
            .env("GIT_ALLOW_PROTOCOL", GIT_SCHEMES.join(":"))
            .env("GIT_TERMINAL_PROMPT", "0");
        run_git(cmd, |stderr| {
            LabError::usage(
                format!(
                    "fetching upstream {} failed: git {}: {stderr}",
                    crate::text::clean(url),
                    crate::text::clean(&args.join(" "))
                ),
                format!("check that the URL is reachable and has commit {commit}"),
            )
        })
    };
    let fetched = git(&["init", "-q", "."])
        .and_then(|()| {
            git(&["fetch", "-q", "--depth", "1", "--", url, commit]).or_else(|_| git(&["fetch", "-q", "--", url]))
        })
        .and_then(|()| {
            git(&[
                "-c",
                "advice.detachedHead=false",
                "checkout",
                "-q",
                "--detach",
                commit,
                "--",
            ])
        });
    if let Err(e) = fetched {
        // A failed fetch leaves nothing behind: not the partial checkout, not empty folders.
        let _ = std::fs::remove_dir_all(&tmp);
        let _ = std::fs::remove_dir(cache.join("repos"));
        let _ = std::fs::remove_dir(cache);
        return Err(e);
    }
    std::fs::rename(&tmp, &dir).map_err(|e| LabError::write(&dir, e))?;
    Ok(dir)
}
