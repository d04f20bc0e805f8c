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

/// Why a git command gave no output: it could not be started, or it failed and said why.
#[derive(Debug)]
pub enum GitError {
    NotRun(std::io::Error),
    /// Its stderr, trimmed.
    Failed(String),
}

impl std::fmt::Display for GitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GitError::NotRun(e) => write!(f, "cannot run git: {e}"),
            GitError::Failed(stderr) => f.write_str(stderr),
        }
    }
}

/// Runs a git command made by the caller; its stdout.
pub async fn git_output(mut cmd: tokio::process::Command) -> std::result::Result<String, GitError> {
    let out = cmd.output().await.map_err(GitError::NotRun)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    } else {
        Err(GitError::Failed(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}
