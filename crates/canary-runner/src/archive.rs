//! Unpacking archives someone else made: every wheel the lab fetches and every artifact a
//! customer's host downloads goes through [`unpack_zip`], and nothing else writes archive entries
//! to disk.
//!
//! An archive is hostile until proven otherwise. An entry's name is a relative path of plain
//! components (no leading `/`, no `..` or `.`, no empty component, no backslash, no control
//! character); it is a regular file or a folder (no symlink, device or FIFO); no name appears twice;
//! the entry count and the bytes written are bounded, counted as they are written rather than
//! taken from the archive's own headers. One bad entry refuses the whole archive, before anything
//! is visible at the destination: entries are written under a fresh folder beside it, which is
//! renamed into place only when every entry is in.

use crate::error::{LabError, Result};
use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};

/// What one archive may hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_entries: usize,
    pub max_entry_bytes: u64,
    pub max_total_bytes: u64,
}

impl Limits {
    /// For the CLIs' wheels: the largest real one (Claude Code's SDK) unpacks to about 230 MB.
    pub const WHEEL: Limits = Limits {
        max_entries: 20_000,
        max_entry_bytes: 1 << 30,
        max_total_bytes: 2 << 30,
    };
}

/// Why an archive was refused: the entry and the rule it broke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub entry: String,
    pub why: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "entry `{}` {}", crate::text::clean(&self.entry), self.why)
    }
}

/// Checks one entry name and returns it as a relative path of plain components.
pub fn entry_path(name: &str) -> std::result::Result<PathBuf, String> {
    if name.is_empty() {
        return Err("has an empty name".into());
    }
    if name.len() > 1024 {
        return Err("has a name longer than 1024 bytes".into());
    }
    if name.chars().any(char::is_control) {
        return Err("has a control character in its name".into());
    }
    if name.contains('\\') {
        return Err("has a backslash in its name".into());
    }
    if name.starts_with('/') {
        return Err("is an absolute path".into());
    }
    // A folder entry ends with one `/`; every other component must be a plain name.
    let trimmed = name.strip_suffix('/').unwrap_or(name);
    let mut path = PathBuf::new();
    for part in trimmed.split('/') {
        match part {
            "" => return Err("has an empty path component (`//`)".into()),
            "." | ".." => return Err(format!("has a `{part}` path component")),
            p if p.len() == 2 && p.ends_with(':') => return Err("names a drive".into()),
            p => path.push(p),
        }
    }
    Ok(path)
}

/// What a caller keeps of an archive: for each entry's checked path, `Some(dest-relative path)`
/// to write it there, `None` to leave it out.
pub type Select<'a> = &'a dyn Fn(&Path) -> Option<PathBuf>;

/// One entry written, and its permission bits as the archive gave them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub path: PathBuf,
    pub mode: u32,
}

/// Unpacks the zip archive `bytes` into `dest` (replaced whole, or left as it was when the archive
/// is refused). `select` picks and places entries; every entry is checked, selected or not.
/// `name` names the archive in errors.
pub fn unpack_zip(bytes: &[u8], dest: &Path, select: Select<'_>, limits: Limits, name: &str) -> Result<Vec<Written>> {
    let refuse = |r: Refused| {
        LabError::usage(
            format!("{name} is refused: {r}"),
            "the archive is malformed or hostile; nothing was written. Fetch it again from a source you trust",
        )
    };
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| LabError::usage(format!("{name} is not a zip archive: {e}"), "delete it and fetch again"))?;
    if zip.len() > limits.max_entries {
        return Err(refuse(Refused {
            entry: format!("#{}", limits.max_entries),
            why: format!("is past the limit of {} entries", limits.max_entries),
        }));
    }
    let stage = staging(dest)?;
    let mut seen = BTreeSet::new();
    let mut placed = BTreeSet::new();
    let mut written = Vec::new();
    let mut total = 0u64;
    for i in 0..zip.len() {
        let mut entry = zip
            .by_index(i)
            .map_err(|e| LabError::usage(format!("{name}: entry {i}: {e}"), "delete it and fetch again"))?;
        let raw = String::from_utf8_lossy(entry.name_raw()).into_owned();
        let bad = |why: String| Refused {
            entry: raw.clone(),
            why,
        };
        let rel = entry_path(&raw).map_err(|w| refuse(bad(w)))?;
        let kind = entry.unix_mode().map(|m| m & 0o170_000).unwrap_or(0);
        let is_dir = entry.is_dir();
        if entry.is_symlink() || !(kind == 0 || kind == 0o100_000 || (kind == 0o040_000 && is_dir)) {
            return Err(refuse(bad(
                "is not a regular file or folder (links and devices are refused)".into(),
            )));
        }
        if !seen.insert(rel.clone()) {
            return Err(refuse(bad("appears twice".into())));
        }
        if is_dir {
            continue;
        }
        let Some(target_rel) = select(&rel) else {
            continue;
        };
        let target_rel = entry_path(&target_rel.to_string_lossy())
            .map_err(|w| refuse(bad(format!("is placed where it may not be: {w}"))))?;
        if !placed.insert(target_rel.clone()) {
            return Err(refuse(bad("is placed where another entry already is".into())));
        }
        let target = stage.path().join(&target_rel);
        if let Some(dir) = target.parent() {
            std::fs::create_dir_all(dir).map_err(|e| LabError::write(dir, e))?;
        }
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&target)
            .map_err(|e| LabError::write(&target, e))?;
        let budget = limits.max_entry_bytes.min(limits.max_total_bytes - total);
        let n = std::io::copy(&mut (&mut entry).take(budget + 1), &mut out).map_err(|e| LabError::write(&target, e))?;
        if n > budget {
            return Err(refuse(bad(format!(
                "unpacks past the limit ({} bytes per entry, {} in all)",
                limits.max_entry_bytes, limits.max_total_bytes
            ))));
        }
        total += n;
        written.push(Written {
            path: target_rel,
            mode: entry.unix_mode().unwrap_or(0o644) & 0o777,
        });
    }
    replace(stage, dest)?;
    Ok(written)
}

/// A fresh folder beside `dest` (same file system, so the finished unpack moves in whole).
fn staging(dest: &Path) -> Result<tempfile::TempDir> {
    let parent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| LabError::write(parent, e))?;
    tempfile::Builder::new()
        .prefix(".unpacking-")
        .tempdir_in(parent)
        .map_err(|e| LabError::write(parent, e))
}

/// Puts the finished stage where `dest` was.
fn replace(stage: tempfile::TempDir, dest: &Path) -> Result<()> {
    if dest.exists() {
        std::fs::remove_dir_all(dest).map_err(|e| LabError::write(dest, e))?;
    }
    let stage = stage.keep();
    std::fs::rename(&stage, dest).map_err(|e| {
        let _ = std::fs::remove_dir_all(&stage);
        LabError::write(dest, e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use zip::write::SimpleFileOptions;

    /// A zip of `(name, contents, unix mode)`; a mode of 0o120777 writes a symlink.
    fn zip_of(entries: &[(&str, &[u8], u32)]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        for (name, body, mode) in entries {
            if mode & 0o170_000 == 0o120_000 {
                w.add_symlink(*name, std::str::from_utf8(body).unwrap(), SimpleFileOptions::default())
                    .unwrap();
            } else if name.ends_with('/') {
                w.add_directory(*name, SimpleFileOptions::default()).unwrap();
            } else {
                w.start_file(*name, SimpleFileOptions::default().unix_permissions(*mode))
                    .unwrap();
                std::io::Write::write_all(&mut w, body).unwrap();
            }
        }
        w.finish().unwrap().into_inner()
    }

    fn keep_all(p: &Path) -> Option<PathBuf> {
        Some(p.to_path_buf())
    }

    #[test]
    fn entry_names_are_plain_relative_paths() {
        for ok in ["a", "a/b/c.txt", "dir/", "codex_cli_bin/bin/codex", "a..b/c"] {
            assert!(entry_path(ok).is_ok(), "{ok}");
        }
        let cases = [
            ("", "empty name"),
            ("/etc/passwd", "absolute"),
            ("codex_cli_bin//etc/cron.d/x", "empty path component"),
            ("a/../../b", "`..`"),
            ("..", "`..`"),
            ("./a", "`.`"),
            ("a\\..\\b", "backslash"),
            ("C:/x", "drive"),
            ("a\u{1b}[2J", "control"),
            ("a\nb", "control"),
        ];
        for (name, says) in cases {
            let e = entry_path(name).unwrap_err();
            assert!(e.contains(says), "{name:?}: {e}");
        }
    }

    /// Each hostile archive is refused whole: nothing at the destination, nothing outside it,
    /// the destination's old content kept.
    #[test]
    fn hostile_archives_write_nothing_anywhere() {
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        let abs = format!("pkg//{}", victim.display().to_string().trim_start_matches('/'));
        let big = vec![b'x'; 4096];
        let table: Vec<(&str, Vec<u8>, &str)> = vec![
            (
                "absolute via an empty component",
                zip_of(&[("pkg/ok", b"1", 0o644), (&abs, b"pwned", 0o644)]),
                "empty path component",
            ),
            (
                "absolute",
                zip_of(&[(&victim.display().to_string(), b"pwned", 0o644)]),
                "absolute",
            ),
            ("dot-dot", zip_of(&[("pkg/../../victim", b"pwned", 0o644)]), "`..`"),
            (
                "symlink",
                zip_of(&[("pkg/link", victim.display().to_string().as_bytes(), 0o120_777)]),
                "links and devices",
            ),
            (
                "duplicate",
                zip_of(&[("pkg/a", b"1", 0o644), ("pkg/a/", b"", 0o755)]),
                "twice",
            ),
            ("too large", zip_of(&[("pkg/big", &big, 0o644)]), "past the limit"),
            (
                "control character",
                zip_of(&[("pkg/\u{1b}]0;x\u{7}", b"1", 0o644)]),
                "control",
            ),
        ];
        let limits = Limits {
            max_entries: 10,
            max_entry_bytes: 1024,
            max_total_bytes: 2048,
        };
        for (what, bytes, says) in table {
            let home = tempfile::tempdir().unwrap();
            let dest = home.path().join("cli");
            std::fs::create_dir(&dest).unwrap();
            std::fs::write(dest.join("old"), "kept").unwrap();
            let e = unpack_zip(&bytes, &dest, &keep_all, limits, "evil.whl")
                .unwrap_err()
                .to_string();
            assert!(e.contains(says) && e.contains("evil.whl is refused"), "{what}: {e}");
            assert!(!victim.exists(), "{what}: wrote outside the destination");
            assert_eq!(std::fs::read_to_string(dest.join("old")).unwrap(), "kept", "{what}");
            let left: Vec<_> = std::fs::read_dir(home.path())
                .unwrap()
                .flatten()
                .map(|e| e.file_name())
                .collect();
            assert_eq!(
                left,
                vec![std::ffi::OsString::from("cli")],
                "{what}: a staging folder was left"
            );
        }
    }

    #[test]
    fn too_many_entries_and_too_many_bytes_in_all_are_refused() {
        let limits = Limits {
            max_entries: 2,
            max_entry_bytes: 100,
            max_total_bytes: 150,
        };
        let dest = tempfile::tempdir().unwrap();
        let many = zip_of(&[("a", b"1", 0o644), ("b", b"1", 0o644), ("c", b"1", 0o644)]);
        let e = unpack_zip(&many, &dest.path().join("x"), &keep_all, limits, "w").unwrap_err();
        assert!(e.to_string().contains("limit of 2 entries"), "{e}");
        let body = [b'y'; 80];
        let total = zip_of(&[("a", &body, 0o644), ("b", &body, 0o644)]);
        let e = unpack_zip(&total, &dest.path().join("x"), &keep_all, limits, "w").unwrap_err();
        assert!(e.to_string().contains("past the limit"), "{e}");
        assert!(!dest.path().join("x").exists());
    }

    #[test]
    fn a_good_archive_replaces_the_destination_with_only_the_selected_entries() {
        let bytes = zip_of(&[
            ("pkg/", b"", 0o755),
            ("pkg/bin/tool", b"#!/bin/sh\n", 0o755),
            ("pkg/__init__.py", b"", 0o644),
            ("other/file", b"x", 0o644),
        ]);
        let home = tempfile::tempdir().unwrap();
        let dest = home.path().join("cli");
        std::fs::create_dir(&dest).unwrap();
        std::fs::write(dest.join("stale"), "old").unwrap();
        let select = |p: &Path| {
            let rel = p.strip_prefix("pkg").ok()?;
            (rel.extension().is_none_or(|e| e != "py")).then(|| rel.to_path_buf())
        };
        let written = unpack_zip(&bytes, &dest, &select, Limits::WHEEL, "good.whl").unwrap();
        assert_eq!(
            written,
            vec![Written {
                path: "bin/tool".into(),
                mode: 0o755
            }]
        );
        assert_eq!(std::fs::read_to_string(dest.join("bin/tool")).unwrap(), "#!/bin/sh\n");
        assert!(!dest.join("stale").exists(), "the old content is replaced whole");
        assert!(!dest.join("__init__.py").exists());
    }
}
