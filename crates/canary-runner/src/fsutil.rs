//! Small file-system helpers shared by the writers of reports, manifests and schemas.

use crate::error::{LabError, Result};
use std::path::Path;

/// Writes via a temporary file and a rename, so a reader never sees a half-written file.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent).map_err(|e| LabError::write(parent, e))?;
        }
    }
    let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
    std::fs::write(&tmp, data).map_err(|e| LabError::write(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| LabError::write(path, e))
}

/// An exclusive advisory lock on `path`, held until the returned file is dropped; blocks.
/// Writes `data` to `path`, which must not exist yet, with permissions `mode`: an existing file
/// is refused ("PATH exists: `exists`", with `help`) and left as it was.
pub fn write_new(path: &Path, data: &[u8], mode: u32, exists: &str, help: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                LabError::usage(format!("{} exists: {exists}", path.display()), help)
            } else {
                LabError::write(path, e)
            }
        })?;
    f.write_all(data).map_err(|e| LabError::write(path, e))
}

pub fn lock_blocking(path: &Path) -> Result<std::fs::File> {
    flock(path, true).map(|f| f.expect("a blocking lock is always taken"))
}

/// [`lock_blocking`] that does not wait: `None` when another holder has it.
pub fn try_lock(path: &Path) -> Result<Option<std::fs::File>> {
    flock(path, false)
}

fn flock(path: &Path, wait: bool) -> Result<Option<std::fs::File>> {
    use std::os::fd::AsRawFd;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| LabError::write(dir, e))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| LabError::write(path, e))?;
    let op = if wait {
        libc::LOCK_EX
    } else {
        libc::LOCK_EX | libc::LOCK_NB
    };
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), op) } != 0 {
        let e = std::io::Error::last_os_error();
        if !wait && e.kind() == std::io::ErrorKind::WouldBlock {
            return Ok(None);
        }
        return Err(LabError::write(path, e));
    }
    Ok(Some(file))
}

/// [`lock_blocking`] without blocking the async runtime.
pub async fn lock(path: &Path) -> Result<std::fs::File> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || lock_blocking(&path))
        .await
        .expect("lock task")
}

/// The most the lab reads of a file the user names (suite, manifest, policy, config, bundle,
/// heartbeat): larger inputs are refused, not read until memory runs out.
pub const MAX_INPUT: u64 = 16 * 1024 * 1024;

/// Reads a user's text file, bounded: it must be a regular file (a FIFO would block forever, a
/// device would never end) of at most `limit` bytes, in UTF-8. `what` names it in errors.
pub fn read_input(path: &Path, what: &str, limit: u64) -> Result<String> {
    use std::io::Read;
    let meta = std::fs::metadata(path).map_err(|e| LabError::read(path, e))?;
    if !meta.is_file() {
        return Err(LabError::usage(
            format!("{}: the {what} is not a regular file", path.display()),
            "name a file: pipes, devices and folders are not read",
        ));
    }
    if meta.len() > limit {
        return Err(too_big(path, what, limit));
    }
    let file = std::fs::File::open(path).map_err(|e| LabError::read(path, e))?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // The file may grow after the size check: never read more than the limit.
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| LabError::read(path, e))?;
    if bytes.len() as u64 > limit {
        return Err(too_big(path, what, limit));
    }
    String::from_utf8(bytes).map_err(|e| {
        LabError::usage(
            format!(
                "{}: the {what} is not UTF-8 text (invalid byte at offset {})",
                path.display(),
                e.utf8_error().valid_up_to()
            ),
            "save the file as UTF-8",
        )
    })
}

/// Reads at most `limit` bytes of a stream (standard input), in UTF-8.
pub fn read_stream(mut r: impl std::io::Read, what: &str, limit: u64) -> Result<String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    (&mut r)
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| LabError::read(what, e))?;
    if bytes.len() as u64 > limit {
        return Err(LabError::usage(
            format!("{what}: more than {} bytes", limit),
            "the input is larger than the lab reads; check what is being piped in",
        ));
    }
    String::from_utf8(bytes).map_err(|_| LabError::usage(format!("{what}: not UTF-8 text"), "send UTF-8 text"))
}

fn too_big(path: &Path, what: &str, limit: u64) -> LabError {
    LabError::usage(
        format!(
            "{}: the {what} is larger than {} MiB",
            path.display(),
            limit / (1024 * 1024)
        ),
        "the lab reads inputs of bounded size; check that the path names the right file",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_bounded_regular_utf8_files() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("ok.yaml");
        std::fs::write(&ok, "name: x\n").unwrap();
        assert_eq!(read_input(&ok, "suite", 100).unwrap(), "name: x\n");
        let big = dir.path().join("big.yaml");
        std::fs::write(&big, vec![b'a'; 101]).unwrap();
        assert!(
            read_input(&big, "suite", 100)
                .unwrap_err()
                .to_string()
                .contains("larger than")
        );
        let bin = dir.path().join("bin.yaml");
        std::fs::write(&bin, [b'a', 0xff, 0xfe]).unwrap();
        assert!(
            read_input(&bin, "suite", 100)
                .unwrap_err()
                .to_string()
                .contains("not UTF-8")
        );
        // A device never ends and a folder is not text: refused before any read.
        for p in [Path::new("/dev/zero"), dir.path()] {
            assert!(
                read_input(p, "suite", 100)
                    .unwrap_err()
                    .to_string()
                    .contains("not a regular file")
            );
        }
        // A FIFO would block the open forever.
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo on a path we own, in a temporary folder.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(
            read_input(&fifo, "suite", 100)
                .unwrap_err()
                .to_string()
                .contains("not a regular file")
        );
        assert!(read_stream(&[b'x'; 101][..], "stdin", 100).is_err());
        assert_eq!(read_stream(&b"{}"[..], "stdin", 100).unwrap(), "{}");
    }
}
