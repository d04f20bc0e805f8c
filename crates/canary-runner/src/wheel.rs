//! A CLI out of its wheel, the one way both the lab and a customer's host install one.

use crate::error::{LabError, Result};
use canary_contract::Provider;
use std::path::{Path, PathBuf};

/// Unpacks the CLI of `provider` from a wheel's bytes into `root` (replaced whole) and returns
/// its binary and the opened wheel. Only the CLI's own folder is written, through
/// [`crate::archive::unpack_zip`], which refuses the whole wheel when any entry is hostile; a
/// wheel without the CLI is refused too: the package layout changed. `name` names the wheel in
/// errors.
pub fn unpack_cli(
    provider: Provider,
    wheel_bytes: Vec<u8>,
    root: &Path,
    name: &str,
) -> Result<(PathBuf, zip::ZipArchive<std::io::Cursor<Vec<u8>>>)> {
    let (folder, inside, _) = provider.layout();
    if folder.is_empty() {
        return Err(LabError::usage(
            format!("{} has no wheel to unpack", provider.name()),
            "only CLIs published as wheels install this way",
        ));
    }
    let select = |p: &Path| {
        let rel = p.strip_prefix(folder.trim_end_matches('/')).ok()?;
        let text = rel.to_str()?;
        (!text.is_empty() && !text.ends_with(".py") && !text.contains("__pycache__")).then(|| rel.to_path_buf())
    };
    let written = crate::archive::unpack_zip(&wheel_bytes, root, &select, crate::archive::Limits::WHEEL, name)?;
    if !written.iter().any(|w| w.path == Path::new(inside)) {
        let _ = std::fs::remove_dir_all(root);
        return Err(LabError::usage(
            format!("{name} has no {folder}{inside}: the package layout changed"),
            "the canary caught a packaging change upstream",
        ));
    }
    use std::os::unix::fs::PermissionsExt;
    for w in &written {
        let target = root.join(&w.path);
        let mode = if w.path == Path::new(inside) {
            0o755
        } else {
            w.mode.max(0o644)
        };
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))
            .map_err(|e| LabError::write(&target, e))?;
    }
    let zip = zip::ZipArchive::new(std::io::Cursor::new(wheel_bytes))
        .map_err(|e| LabError::usage(format!("{name} is not a wheel: {e}"), "delete it and fetch again"))?;
    Ok((root.join(inside), zip))
}
