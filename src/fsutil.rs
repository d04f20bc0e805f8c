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
