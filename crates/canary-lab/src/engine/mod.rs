//! Where cases run. The lab talks to a [`Backend`]; [`docker::DockerBackend`] is the one
//! implementation today (and the only module that imports bollard). A Kubernetes backend would
//! implement the same trait without touching suites, reports or the registry.
//!
//! Invariants every backend keeps:
//! - everything it creates carries the lab's labels (run id, owning process, host, and
//!   `canary-lab.owned=1`), so that `canary gc` can find and remove what a crashed run left
//!   behind; an image the lab builds carries `canary-lab.owned` empty, so a container someone
//!   else starts from it (a platform's runner) is never taken for the lab's;
//! - an exec never outlives its deadline: when the deadline passes, every process the case user
//!   owns in the container is killed, and the outcome says `timed_out`.

pub mod conformance;
pub mod credentials;
pub mod docker;
pub mod endpoint;
pub mod protocol;

use crate::error::Result;
use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

/// Label keys put on every container and network the lab creates.
pub mod labels {
    pub const LAB: &str = "canary-lab";
    pub const RUN: &str = "canary-lab.run";
    pub const CASE: &str = "canary-lab.case";
    pub const PID: &str = "canary-lab.pid";
    pub const HOST: &str = "canary-lab.host";
    pub const KEEP: &str = "canary-lab.keep";
    /// "1" on the containers and networks the lab creates, and only there: containers inherit
    /// their image's labels, so every other lab label may also sit on a container started from a
    /// lab image by someone else. The lab's images carry it empty.
    pub const OWNED: &str = "canary-lab.owned";
}

/// What a case container looks like. Resource limits are the lab's defaults unless a suite
/// says otherwise.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    pub run_id: String,
    pub case_id: String,
    pub image: String,
    /// A lab network to join; `None` means no network at all.
    pub network: Option<String>,
    pub env: Vec<String>,
    pub memory_bytes: i64,
    pub pids_limit: i64,
    pub nano_cpus: i64,
    /// Left running after the run (`canary repro --keep`); `canary gc` still finds it.
    pub keep: bool,
    /// The image carries `canary-exec` (see [`Backend::prepare_image`]): run it as PID 1 and
    /// send commands to it instead of using the engine's exec.
    pub executor: bool,
    /// The command to run instead of the idle init (a lab service such as the forge).
    pub cmd: Option<Vec<String>>,
    /// Names other members of `network` reach this container by.
    pub aliases: Vec<String>,
    /// DNS servers the network's resolver forwards outside names to (the lab's own DNS).
    pub dns: Vec<String>,
    /// Lets the container's unprivileged user bind ports below 1024 (the lab DNS on port 53).
    pub low_ports: bool,
}

impl ContainerSpec {
    pub fn new(run_id: &str, case_id: &str, image: &str) -> Self {
        ContainerSpec {
            run_id: run_id.into(),
            case_id: case_id.into(),
            image: image.into(),
            network: None,
            // Python's bytecode cache is keyed by the source's size and mtime in whole seconds:
            // an edit of the same length within the second a test ran would be masked by the
            // stale .pyc. Canary steps must see every edit, so no bytecode is cached.
            env: vec!["PYTHONDONTWRITEBYTECODE=1".into()],
            memory_bytes: 2 << 30,
            pids_limit: 1024,
            nano_cpus: 2_000_000_000,
            keep: false,
            executor: false,
            cmd: None,
            aliases: Vec::new(),
            dns: Vec::new(),
            low_ports: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ExecSpec {
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub workdir: String,
    /// The exec is killed when this instant passes.
    pub deadline: Instant,
    /// Bytes for the command's stdin (executor backends only; engine execs get none).
    pub stdin: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Default)]
pub struct ExecOutcome {
    /// `None` when the process was killed before it reported one.
    pub exit_code: Option<i64>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub timed_out: bool,
    /// Output beyond the capture limit was dropped.
    pub truncated: bool,
    pub duration: Duration,
    /// Time from the deadline to the moment the process was gone (timed-out execs only).
    pub kill_latency: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct ImageInfo {
    pub id: String,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct PreparedImage {
    pub id: String,
    pub executor: bool,
    /// Why the executor is not used, when it is not.
    pub note: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct GcReport {
    pub containers: Vec<String>,
    pub networks: Vec<String>,
    /// Lab objects left alone because their run is still alive.
    pub skipped_live: usize,
}

/// Which leftovers `gc` removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GcScope {
    /// Objects whose owning `canary` process is gone (default; safe next to running runs).
    Orphaned,
    /// Every lab object, including those of runs still in progress and kept containers.
    All,
    /// The objects of one run, except containers it was asked to keep (a run's own cleanup).
    Run(String),
}

impl GcScope {
    /// Whether an object with these labels is removed under this scope.
    pub fn selects(&self, l: &std::collections::HashMap<String, String>) -> bool {
        if l.get(labels::OWNED).map(String::as_str) != Some("1") {
            return false;
        }
        let kept = l.contains_key(labels::KEEP);
        match self {
            GcScope::All => true,
            GcScope::Orphaned => !kept && !owner_alive(l),
            GcScope::Run(id) => !kept && l.get(labels::RUN) == Some(id),
        }
    }
}

/// Most output a step keeps per stream; beyond it the report says "truncated".
pub const OUTPUT_LIMIT: usize = 8 << 20;

pub trait Backend: Send + Sync + 'static {
    /// A short description of the engine (for reports), or why it cannot be reached.
    fn describe(&self) -> impl Future<Output = Result<String>> + Send;
    fn image(&self, reference: &str) -> impl Future<Output = Result<Option<ImageInfo>>> + Send;
    /// The image cases should run in for `image_id`: a derived image with the in-container
    /// executor when it can be built and runs there (`executor: true`), else the image itself.
    fn prepare_image(&self, image_id: &str) -> impl Future<Output = Result<PreparedImage>> + Send;
    fn create_network(&self, run_id: &str) -> impl Future<Output = Result<String>> + Send;
    fn remove_network(&self, name: &str) -> impl Future<Output = Result<()>> + Send;
    /// Creates and starts a case container; returns its id.
    fn start_container(&self, spec: &ContainerSpec) -> impl Future<Output = Result<String>> + Send;
    /// The container's address on `network`.
    fn container_ip(&self, container: &str, network: &str) -> impl Future<Output = Result<String>> + Send;
    /// Unpacks a tar archive at `/` in the container.
    fn upload(&self, container: &str, tar: Vec<u8>) -> impl Future<Output = Result<()>> + Send;
    fn exec(&self, container: &str, spec: &ExecSpec) -> impl Future<Output = Result<ExecOutcome>> + Send;
    fn remove_container(&self, container: &str) -> impl Future<Output = Result<()>> + Send;
    fn gc(&self, scope: GcScope) -> impl Future<Output = Result<GcReport>> + Send;
}

/// Labels for an object owned by this process in `run_id`.
pub fn owner_labels(run_id: &str) -> std::collections::HashMap<String, String> {
    let mut l = std::collections::HashMap::new();
    l.insert(labels::LAB.into(), "1".into());
    l.insert(labels::OWNED.into(), "1".into());
    l.insert(labels::RUN.into(), run_id.into());
    l.insert(labels::PID.into(), std::process::id().to_string());
    l.insert(labels::HOST.into(), hostname());
    l
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Whether the process that labelled an object is still alive (same host only).
pub fn owner_alive(labels: &std::collections::HashMap<String, String>) -> bool {
    if labels.get(labels::HOST).map(String::as_str) != Some(hostname().as_str()) {
        // Another machine's run: we cannot tell, so it is treated as alive.
        return true;
    }
    let Some(pid) = labels.get(labels::PID).and_then(|p| p.parse::<u32>().ok()) else {
        return false;
    };
    // A pid can be reused: only a live process that is still a canary counts as the owner.
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains("canary"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gc_takes_only_what_the_lab_created() {
        let mut lab = owner_labels("run-1");
        // A pid no process has: the run is gone.
        lab.insert(labels::PID.into(), "4194305".into());
        assert!(GcScope::Orphaned.selects(&lab));
        assert!(GcScope::Run("run-1".into()).selects(&lab));
        assert!(!GcScope::Run("run-2".into()).selects(&lab));
        // A container someone started from a lab image: the image's lab labels, owned empty.
        let mut inherited = lab.clone();
        inherited.insert(labels::OWNED.into(), String::new());
        for scope in [GcScope::Orphaned, GcScope::All, GcScope::Run("run-1".into())] {
            assert!(!scope.selects(&inherited), "{scope:?}");
        }
        // Kept containers stay unless everything is asked for.
        lab.insert(labels::KEEP.into(), "1".into());
        assert!(!GcScope::Orphaned.selects(&lab));
        assert!(GcScope::All.selects(&lab));
    }
}
