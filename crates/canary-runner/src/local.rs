//! What the lab's local services (the model stub, the forge) and the runner share: listening on
//! an address and running git.

use crate::error::{LabError, Result};
use std::net::SocketAddr;

/// Listens on `addr` (port 0 picks a free one); the listener and the address it got.
pub async fn listen(addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| LabError::usage(format!("cannot listen on {addr}: {e}"), "pick another --listen address"))?;
    let bound = listener
        .local_addr()
        .map_err(|e| LabError::usage(e.to_string(), "internal"))?;
    Ok((listener, bound))
}

/// Runs a git command made by the caller; its stdout, or `Err` with its stderr (trimmed).
pub async fn git_output(mut cmd: tokio::process::Command) -> std::result::Result<String, String> {
    let out = cmd.output().await.map_err(|e| format!("cannot run git: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}
