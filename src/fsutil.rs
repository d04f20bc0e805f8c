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
pub fn lock_blocking(path: &Path) -> Result<std::fs::File> {
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
    // SAFETY: flock on a descriptor we own; blocks until the lock is free.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(LabError::write(path, std::io::Error::last_os_error()));
    }
    Ok(file)
}

/// [`lock_blocking`] without blocking the async runtime.
pub async fn lock(path: &Path) -> Result<std::fs::File> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || lock_blocking(&path))
        .await
        .expect("lock task")
}
