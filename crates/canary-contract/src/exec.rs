//! The wire format between the lab and `canary-exec`, the executor that runs as PID 1 inside a
//! case container. One JSON object per line each way; requests are answered in order.

use serde::{Deserialize, Serialize};

/// Where the executor is placed in case containers.
pub const EXECUTOR_PATH: &str = "/usr/local/lib/canary-lab/canary-exec";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecRequest {
    pub id: u64,
    pub cmd: Vec<String>,
    /// `KEY=VALUE`, added to the container's environment.
    pub env: Vec<String>,
    pub cwd: String,
    /// Milliseconds from receipt until every process but the executor is killed.
    pub timeout_ms: u64,
    /// Most bytes kept per output stream.
    pub output_limit: usize,
    /// Base64 of bytes fed to the command's stdin (closed after them); none: stdin is empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExecResponse {
    pub id: u64,
    pub exit_code: Option<i64>,
    /// Base64 of the captured bytes.
    pub stdout: String,
    pub stderr: String,
    pub truncated: bool,
    pub timed_out: bool,
    pub duration_ms: u64,
    pub kill_latency_ms: Option<u64>,
    /// The command could not be started (not found, bad cwd, ...).
    pub error: Option<String>,
}
