//! The runner's side on a customer's host. Each build lives in its own folder under
//! `<home>/builds/`; `<home>/current` and `<home>/previous` are symlinks to two of them, and the
//! switch between builds is one `rename` of a fresh symlink over `current`, so a host is always
//! on one whole build. A download goes to `<folder>.partial` and is verified by digest before it
//! becomes a build folder, so a cut download, a wrong digest or a full disk leave `current` as
//! it was. Every attempt is appended to `<home>/audit.jsonl`.

use super::{BuildManifest, Offer, Plan};
use crate::error::{LabError, Result};
use canary_contract::BuildId;
use canary_contract::Channel;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What `update init` writes: where the control plane is and what this host trusts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    pub server: String,
    pub runner_id: String,
    #[serde(default)]
    pub org: Option<String>,
    pub channel: Channel,
    /// Channels the org's plan lets this host follow.
    #[serde(default = "default_channels")]
    pub allowed_channels: Vec<Channel>,
}

impl HostConfig {
    /// Checks what `update init` was given (and what a hand-edited file says): an http(s) server
    /// without credentials, ids and names of the allowed characters.
    pub fn check(&self) -> Result<()> {
        let server = self.server.as_str();
        let rest = server
            .strip_prefix("https://")
            .or_else(|| server.strip_prefix("http://"))
            .filter(|r| !r.is_empty() && !r.starts_with('/'));
        let Some(rest) = rest else {
            return Err(LabError::usage(
                format!("server `{}` is not an http(s) URL", crate::text::clean(server)),
                "give the control plane's address, e.g. --server https://canary.example.com",
            ));
        };
        if rest.split('/').next().is_some_and(|a| a.contains('@'))
            || server.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(LabError::usage(
                "server carries credentials, spaces or control characters",
                "give the bare URL; the token goes in CANARY_RUNNER_TOKEN",
            ));
        }
        if !crate::names::is_id(&self.runner_id) {
            return Err(LabError::usage(
                format!("runner id `{}` is not an id", crate::text::clean(&self.runner_id)),
                "a runner id is 1 to 128 letters, digits, `.`, `_`, `:`, `-`",
            ));
        }
        if let Some(o) = &self.org {
            crate::names::check_name("org", o)?;
        }
        Ok(())
    }
}

fn default_channels() -> Vec<Channel> {
    Channel::built_in().to_vec()
}

/// One line of the host's audit history.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at: String,
    pub action: HostAction,
    pub from: Option<BuildId>,
    pub to: Option<BuildId>,
    pub outcome: UpgradeOutcome,
    pub reason: String,
}

/// What a host did, in its history and in its report to the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostAction {
    Upgrade,
    Rollback,
    Channel,
}

canary_contract::words!(HostAction, "a host action", { Upgrade => "upgrade", Rollback => "rollback", Channel => "channel" });

/// How an upgrade or a rollback ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpgradeOutcome {
    Done,
    UpToDate,
    /// The offered build is red, or an installed bundle excludes it.
    Blocked,
    /// Not confirmed, not signed by a trusted root, or another upgrade holds the lock.
    Refused,
    /// The install stopped; the current build stays.
    Failed,
    /// A smoke session failed; the host is back on what it ran.
    RolledBack,
}

canary_contract::words!(UpgradeOutcome, "an upgrade outcome", {
    Done => "done",
    UpToDate => "up_to_date",
    Blocked => "blocked",
    Refused => "refused",
    Failed => "failed",
    RolledBack => "rolled_back",
});

/// The longest `Retry-After` a heartbeat waits for before asking once more.
pub const HEARTBEAT_RETRY_LIMIT: Duration = Duration::from_secs(5);

pub struct Host {
    pub home: PathBuf,
}

/// A build folder's name: the digest's first 16 hex digits, never a string from the network.
pub fn folder_name(build: &str) -> Result<String> {
    let hex = build.strip_prefix("sha256:").unwrap_or(build);
    if hex.len() < 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(LabError::usage(
            format!("`{}` is not a build digest", crate::text::clean(build)),
            "the control plane offers builds by their sha256 digest",
        ));
    }
    Ok(hex[..16].to_ascii_lowercase())
}

impl Host {
    pub fn new(home: PathBuf) -> Host {
        Host { home }
    }

    fn config_path(&self) -> PathBuf {
        self.home.join("update.json")
    }

    pub fn write_config(&self, c: &HostConfig) -> Result<()> {
        crate::fsutil::write_atomic(
            &self.config_path(),
            serde_json::to_string_pretty(c).expect("json").as_bytes(),
        )
    }

    pub fn config(&self) -> Result<HostConfig> {
        let path = self.config_path();
        if !path.exists() {
            return Err(LabError::usage(
                format!("{} has no update configuration", self.home.display()),
                "run `canary-runner update init --server URL --runner-id ID` first",
            ));
        }
        let text = crate::fsutil::read_input(&path, "update configuration", 64 * 1024)?;
        let c: HostConfig = serde_json::from_str(&text).map_err(|e| {
            LabError::usage(
                format!("{}: line {}: {e}", path.display(), e.line()),
                "fix the file or write it again with `canary-runner update init`",
            )
        })?;
        c.check()?;
        Ok(c)
    }

    fn manifest_at(&self, link: &str) -> Option<BuildManifest> {
        let text = std::fs::read_to_string(self.home.join(link).join("manifest.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// The build `current` points at.
    pub fn current(&self) -> Option<BuildManifest> {
        self.manifest_at("current")
    }

    pub fn previous(&self) -> Option<BuildManifest> {
        self.manifest_at("previous")
    }

    /// Every complete build folder, newest first.
    pub fn installed(&self) -> Vec<(PathBuf, BuildManifest)> {
        let mut out: Vec<(std::time::SystemTime, PathBuf, BuildManifest)> = std::fs::read_dir(self.home.join("builds"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().contains('.'))
            .filter_map(|e| {
                let text = std::fs::read_to_string(e.path().join("manifest.json")).ok()?;
                let m = serde_json::from_str(&text).ok()?;
                let t = e.metadata().and_then(|m| m.modified()).ok()?;
                Some((t, e.path(), m))
            })
            .collect();
        out.sort_by_key(|e| std::cmp::Reverse(e.0));
        out.into_iter().map(|(_, p, m)| (p, m)).collect()
    }

    /// Bundles installed on this host: `<home>/bundles/*/manifest.yaml`.
    pub fn bundles(&self) -> Result<Vec<crate::compat::Declaration>> {
        let mut out = Vec::new();
        let Ok(entries) = std::fs::read_dir(self.home.join("bundles")) else {
            return Ok(out);
        };
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path().join("manifest.yaml")).collect();
        paths.sort();
        for p in paths.into_iter().filter(|p| p.is_file()) {
            out.push(crate::compat::load(&p)?);
        }
        Ok(out)
    }

    pub fn audit(&self, entry: &AuditEntry) -> Result<()> {
        use std::io::Write;
        let path = self.home.join("audit.jsonl");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| LabError::write(&path, e))?;
        writeln!(f, "{}", serde_json::to_string(entry).expect("json")).map_err(|e| LabError::write(&path, e))
    }

    pub fn history(&self) -> Vec<AuditEntry> {
        std::fs::read_to_string(self.home.join("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The host's upgrade lock; a second upgrade or rollback at once is refused, not queued.
    pub fn try_lock(&self) -> Result<std::fs::File> {
        let path = self.home.join("update.lock");
        crate::fsutil::try_lock(&path)?.ok_or_else(|| {
            LabError::usage(
                format!("another update is running on this host ({} is locked)", path.display()),
                "wait for it to finish; `canary-runner update status` shows the history",
            )
        })
    }

    /// Points `current` at `folder` (and `previous` at what `current` was), each by renaming a
    /// fresh symlink over the old one.
    pub fn switch(&self, folder: &Path) -> Result<()> {
        let rel = Path::new("builds").join(folder.file_name().expect("a build folder"));
        let old = std::fs::read_link(self.home.join("current")).ok();
        relink(&self.home, "current", &rel)?;
        if let Some(old) = old.filter(|o| *o != rel) {
            relink(&self.home, "previous", &old)?;
        }
        Ok(())
    }

    /// Downloads and unpacks `m` into its build folder, every artifact checked against the
    /// digest the (verified) manifest names. An existing complete folder is reused.
    pub async fn install(&self, client: &Client, m: &BuildManifest) -> Result<PathBuf> {
        let name = folder_name(&m.build)?;
        let builds = self.home.join("builds");
        let done = builds.join(&name);
        if done.join("manifest.json").is_file() {
            return Ok(done);
        }
        let partial = builds.join(format!("{name}.partial"));
        let _ = std::fs::remove_dir_all(&partial);
        std::fs::create_dir_all(partial.join("bin")).map_err(|e| LabError::write(&partial, e))?;
        for c in &m.components {
            let hex = c.digest.strip_prefix("sha256:").unwrap_or("");
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(LabError::usage(
                    format!("component {} has no artifact digest", crate::text::clean(&c.name)),
                    "this build cannot be installed on a host",
                ));
            }
            if c.name == canary_contract::build::RUNNER {
                if c.from_image() {
                    return Err(LabError::usage(
                        "the build's runner comes from a runner image",
                        "customer hosts install builds of the reference runner",
                    ));
                }
                let target = partial.join("bin/canary-runner");
                client.download(hex, &target).await?;
                set_mode(&target, 0o755)?;
            } else if let Some(p) = c.provider() {
                let wheel = partial.join(format!("{}.whl", p.name()));
                client.download(hex, &wheel).await?;
                let bytes = std::fs::read(&wheel).map_err(|e| LabError::read(&wheel, e))?;
                let (binary, _) = crate::wheel::unpack_cli(
                    p,
                    bytes,
                    &partial.join("cli").join(p.name()),
                    &format!("the {} wheel", p.name()),
                )?;
                let _ = std::fs::remove_file(&wheel);
                let rel = Path::new("..").join(binary.strip_prefix(&partial).expect("inside"));
                std::os::unix::fs::symlink(&rel, partial.join("bin").join(p.command()))
                    .map_err(|e| LabError::write(&partial, e))?;
            } else {
                return Err(LabError::usage(
                    format!("unknown component `{}`", crate::text::clean(&c.name)),
                    "this runner knows the runner and the CLIs it has adapters for",
                ));
            }
        }
        crate::fsutil::write_atomic(
            &partial.join("manifest.json"),
            serde_json::to_string_pretty(m).expect("json").as_bytes(),
        )?;
        std::fs::rename(&partial, &done).map_err(|e| LabError::write(&done, e))?;
        Ok(done)
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| LabError::write(path, e))
}

fn relink(home: &Path, name: &str, to: &Path) -> Result<()> {
    let tmp = home.join(format!("{name}.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(to, &tmp).map_err(|e| LabError::write(&tmp, e))?;
    std::fs::rename(&tmp, home.join(name)).map_err(|e| LabError::write(home.join(name), e))
}

/// The scripted model turn every smoke session gets: one plain answer.
const SMOKE_SCENARIO: &str = "turns:\n  - say: ready\n";

/// One smoke session of each CLI in `folder`, driven by the build's own runner against a model
/// stub it serves on loopback. `Err` says which CLI failed and how.
pub async fn smoke(folder: &Path, m: &BuildManifest, limit: Duration) -> std::result::Result<Vec<String>, String> {
    let runner = folder.join("bin/canary-runner");
    let work = tempfile::tempdir().map_err(|e| format!("no temporary folder: {e}"))?;
    let scenario = work.path().join("smoke.yaml");
    std::fs::write(&scenario, SMOKE_SCENARIO).map_err(|e| e.to_string())?;
    let mut passed = Vec::new();
    for c in &m.components {
        let Some(p) = c.provider() else { continue };
        let label = format!("{} {}", c.name, c.version);
        let addr_file = work.path().join(format!("{}.addr", p.name()));
        let log = work.path().join(format!("{}.stub.jsonl", p.name()));
        let (mut stub, url) = start_stub(&runner, &scenario, &log, &addr_file, &label).await?;
        let ws = work.path().join(format!("{}-ws", p.name()));
        smoke_workspace(&ws)?;
        let session = tokio::process::Command::new(&runner)
            .arg("session")
            .args([
                "--provider",
                p.name(),
                "--prompt",
                "Reply with the word ready.",
                "--model-url",
                &url,
            ])
            .arg("--cli")
            .arg(folder.join("bin").join(p.command()))
            .arg("--workspace")
            .arg(&ws)
            .args(["--timeout", &format!("{}s", limit.as_secs().max(1))])
            .args(["--codex-sandbox", "danger-full-access"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .output();
        // The session has its own timeout; this one also catches a runner that hangs.
        let out = tokio::time::timeout(limit + Duration::from_secs(10), session).await;
        let _ = stub.kill().await;
        let out = match out {
            Err(_) => {
                return Err(format!(
                    "{label}: the smoke session hung past {}s and was killed",
                    limit.as_secs()
                ));
            }
            Ok(Err(e)) => return Err(format!("{label}: the smoke session did not start: {e}")),
            Ok(Ok(o)) => o,
        };
        judge_smoke(&label, &out)?;
        passed.push(label);
    }
    if passed.is_empty() {
        // A build without a CLI (the runner alone changed) still proves its runner starts.
        passed.push(smoke_runner(&runner, m, limit).await?);
    }
    Ok(passed)
}

/// Starts the build's own model stub on loopback; returns it and its URL.
async fn start_stub(
    runner: &Path,
    scenario: &Path,
    log: &Path,
    addr_file: &Path,
    label: &str,
) -> std::result::Result<(tokio::process::Child, String), String> {
    let mut stub = tokio::process::Command::new(runner)
        .arg("lab-stub")
        .arg("--scenario")
        .arg(scenario)
        .arg("--log")
        .arg(log)
        .arg("--addr-file")
        .arg(addr_file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("{label}: the build's runner does not start: {e}"))?;
    let mut url = None;
    for _ in 0..200 {
        if let Ok(t) = std::fs::read_to_string(addr_file) {
            if !t.trim().is_empty() {
                url = Some(t.trim().to_string());
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let Some(url) = url else {
        let _ = stub.kill().await;
        return Err(format!("{label}: the model stub did not start"));
    };
    Ok((stub, url))
}

/// A one-commit git workspace: the runner diffs the workspace against its commit after a session.
fn smoke_workspace(ws: &Path) -> std::result::Result<(), String> {
    std::fs::create_dir_all(ws).map_err(|e| e.to_string())?;
    std::fs::write(ws.join("README.md"), "smoke\n").map_err(|e| e.to_string())?;
    // The runner diffs the workspace against its commit after the session.
    for args in [
        &["init", "-q", "."][..],
        &["add", "-A"],
        &[
            "-c",
            "user.name=canary",
            "-c",
            "user.email=canary@localhost",
            "commit",
            "-qm",
            "smoke",
        ],
    ] {
        let _ = std::process::Command::new("git")
            .args(args)
            .current_dir(ws)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
    Ok(())
}

/// A smoke session passes when the runner exited cleanly and printed a session and its usage,
/// with no error but the CLI's own warnings.
fn judge_smoke(label: &str, out: &std::process::Output) -> std::result::Result<(), String> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let events: Vec<serde_json::Value> = stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let errors: Vec<String> = events
        .iter()
        .filter(|e| e["type"] == "ERROR" && e["kind"] != "cli_warning")
        .map(|e| {
            format!(
                "{}: {}",
                e["kind"].as_str().unwrap_or("?"),
                e["message"].as_str().unwrap_or("")
            )
        })
        .collect();
    let started = events.iter().any(|e| e["type"] == "SESSION_STARTED");
    let usage = events.iter().any(|e| e["type"] == "USAGE_TICK");
    if !out.status.success() || !errors.is_empty() || !started || !usage {
        return Err(format!(
            "{label}: the smoke session failed (exit {}{}{})",
            out.status
                .code()
                .map(|c| c.to_string())
                .unwrap_or_else(|| "by signal".into()),
            if errors.is_empty() {
                String::new()
            } else {
                format!("; {}", crate::text::clean(&errors.join("; ")))
            },
            if !started || !usage {
                "; no session or usage events"
            } else {
                ""
            }
        ));
    }
    Ok(())
}

/// The new runner itself: it must start and report a heartbeat naming its version.
async fn smoke_runner(runner: &Path, m: &BuildManifest, limit: Duration) -> std::result::Result<String, String> {
    let version = m.runner().map(|c| c.version.clone()).unwrap_or_default();
    let label = format!("runner {version}");
    let run = tokio::process::Command::new(runner)
        .args(["heartbeat", "--runner-id", "smoke"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = match tokio::time::timeout(limit, run).await {
        Err(_) => {
            return Err(format!(
                "{label}: the runner hung past {}s and was killed",
                limit.as_secs()
            ));
        }
        Ok(Err(e)) => return Err(format!("{label}: the build's runner does not start: {e}")),
        Ok(Ok(o)) => o,
    };
    let beat: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    if !out.status.success() || beat["type"] != "HEARTBEAT" || !beat["versions"]["runner"].is_string() {
        return Err(format!(
            "{label}: the runner's smoke check failed (exit {}): it did not report a heartbeat",
            out.status
                .code()
                .map(|c| c.to_string())
                .unwrap_or_else(|| "by signal".into())
        ));
    }
    Ok(label)
}

/// The HTTP side: the control plane's update endpoints with this runner's token.
pub struct Client {
    http: reqwest::Client,
    server: String,
    token: String,
}

impl Client {
    pub fn new(server: &str, token: &str) -> Result<Client> {
        // reqwest panics when no TLS provider is installed; a library caller need not know.
        crate::init_tls();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| LabError::usage(format!("HTTP client: {e}"), "internal"))?;
        Ok(Client {
            http,
            server: server.trim_end_matches('/').to_string(),
            token: token.to_string(),
        })
    }

    fn err(&self, what: &str, e: impl std::fmt::Display) -> LabError {
        LabError::usage(
            format!("{what} at {}: {e}", self.server),
            "check the control plane's address and this runner's token (CANARY_RUNNER_TOKEN)",
        )
    }

    async fn answer(&self, r: reqwest::Response, what: &str) -> Result<Vec<u8>> {
        let status = r.status();
        let body = read_bounded(r, 4 * 1024 * 1024).await.map_err(|e| self.err(what, e))?;
        if !status.is_success() {
            let msg = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(String::from))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect());
            return Err(self.err(what, format!("{status}: {}", crate::text::clean(&msg))));
        }
        Ok(body)
    }

    /// tough's transport with this client and token.
    pub fn transport(&self) -> super::tuf::HttpTransport {
        super::tuf::HttpTransport::new(self.http.clone(), &self.token)
    }

    pub fn server(&self) -> &str {
        &self.server
    }

    fn url(&self, path: &str, runner: &str) -> Result<reqwest::Url> {
        reqwest::Url::parse_with_params(&format!("{}{path}", self.server), &[("runner", runner)])
            .map_err(|e| self.err(path, format!("not a URL: {e}")))
    }

    /// Sends a heartbeat. A control plane that says the token sent too many (429) is asked
    /// once more after the wait its `Retry-After` names (at most [`HEARTBEAT_RETRY_LIMIT`]).
    pub async fn heartbeat(&self, body: &serde_json::Value) -> Result<()> {
        let send = || {
            self.http
                .post(format!("{}/v1/heartbeats", self.server))
                .bearer_auth(&self.token)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string())
                .send()
        };
        let mut r = send().await.map_err(|e| self.err("heartbeat", e))?;
        if r.status() == reqwest::StatusCode::TOO_MANY_REQUESTS {
            let wait = r
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            if let Some(wait) = wait.filter(|w| *w <= HEARTBEAT_RETRY_LIMIT) {
                tokio::time::sleep(wait).await;
                r = send().await.map_err(|e| self.err("heartbeat", e))?;
            }
        }
        self.answer(r, "heartbeat").await.map(|_| ())
    }

    pub async fn offer(&self, runner: &str) -> Result<Offer> {
        let r = self
            .http
            .get(self.url("/v1/updates", runner)?)
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| self.err("update check", e))?;
        let body = self.answer(r, "update check").await?;
        serde_json::from_slice(&body).map_err(|e| self.err("update check", format!("not an offer: {e}")))
    }

    /// The control plane's first root (for trust on first use), bounded and not yet trusted.
    pub async fn first_root(&self) -> Result<Vec<u8>> {
        let r = self
            .http
            .get(format!("{}/v1/tuf/1.root.json", self.server))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| self.err("TUF root", e))?;
        let body = self.answer(r, "TUF root").await?;
        if body.len() as u64 > super::tuf::MAX_ROOT {
            return Err(self.err("TUF root", "larger than a root may be"));
        }
        Ok(body)
    }

    pub async fn report(&self, runner: &str, e: &AuditEntry) -> Result<()> {
        let r = self
            .http
            .post(self.url("/v1/updates/report", runner)?)
            .bearer_auth(&self.token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_string(e).expect("json"))
            .send()
            .await
            .map_err(|e| self.err("update report", e))?;
        self.answer(r, "update report").await.map(|_| ())
    }

    /// Streams an artifact to `target`, hashing as it goes; a cut download, a larger file than
    /// any artifact or a digest that differs removes the file and fails.
    pub async fn download(&self, hex: &str, target: &Path) -> Result<()> {
        use sha2::Digest;
        use tokio::io::AsyncWriteExt;
        let what = format!("artifact sha256:{}", &hex[..12]);
        let mut r = self
            .http
            .get(format!("{}/v1/artifacts/{hex}", self.server))
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(900))
            .send()
            .await
            .map_err(|e| self.err(&what, e))?;
        if !r.status().is_success() {
            return self.answer(r, &what).await.map(|_| ());
        }
        let mut file = tokio::fs::File::create(target)
            .await
            .map_err(|e| LabError::write(target, e))?;
        let mut h = sha2::Sha256::new();
        let mut len = 0u64;
        let result: Result<()> = async {
            while let Some(chunk) = r
                .chunk()
                .await
                .map_err(|e| self.err(&what, format!("download cut: {e}")))?
            {
                len += chunk.len() as u64;
                if len > super::MAX_ARTIFACT {
                    return Err(self.err(&what, "larger than any artifact"));
                }
                h.update(&chunk);
                file.write_all(&chunk).await.map_err(|e| LabError::write(target, e))?;
            }
            file.flush().await.map_err(|e| LabError::write(target, e))?;
            let got = hex::encode(h.finalize());
            if got != hex {
                return Err(self.err(&what, format!("digest mismatch: got sha256:{}", &got[..12])));
            }
            Ok(())
        }
        .await;
        if result.is_err() {
            let _ = std::fs::remove_file(target);
        }
        result
    }
}

async fn read_bounded(mut r: reqwest::Response, limit: usize) -> std::result::Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while let Some(chunk) = r.chunk().await.map_err(|e| e.to_string())? {
        if out.len() + chunk.len() > limit {
            return Err(format!("answer larger than {limit} bytes"));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// The versions a host reports in its heartbeat: its current build's components, or, before
/// the first install, the runner doing the updating.
pub fn versions(m: Option<&BuildManifest>) -> std::collections::BTreeMap<String, String> {
    match m {
        Some(m) => m
            .components
            .iter()
            .map(|c| (c.name.clone(), c.version.clone()))
            .collect(),
        None => [(
            canary_contract::build::RUNNER.to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        )]
        .into(),
    }
}

/// Whether the host is on the offered build already.
pub fn up_to_date(current: Option<&BuildManifest>, offer: &Offer) -> bool {
    current.is_some_and(|c| Some(&c.build) == offer.build.as_ref())
}

/// Plan for `offer` on this host (after the signature check).
pub fn plan_for(host: &Host, target: &BuildManifest) -> Result<Plan> {
    Ok(super::plan(host.current().as_ref(), target, &host.bundles()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each way an upgrade ends has its exit code (0 done or nothing to do, 1 held back, 2 an
    /// install that stopped), and a history line or report with another outcome does not read.
    #[test]
    fn upgrade_outcomes_map_to_exit_codes_and_unknown_ones_do_not_deserialize() {
        use UpgradeOutcome as U;
        let code = |outcome| {
            Upgrade {
                outcome,
                from: None,
                to: None,
                reason: String::new(),
                plan: None,
                smoke: vec![],
            }
            .exit_code()
        };
        assert_eq!([code(U::Done), code(U::UpToDate)], [0, 0]);
        assert_eq!([code(U::Blocked), code(U::Refused), code(U::RolledBack)], [1, 1, 1]);
        assert_eq!(code(U::Failed), 2);
        let line = |action: &str, outcome: &str| {
            serde_json::from_value::<AuditEntry>(serde_json::json!({"at": "t", "action": action,
                "from": null, "to": null, "outcome": outcome, "reason": ""}))
        };
        let e = line("upgrade", "rolled_back").unwrap();
        assert_eq!((e.action, e.outcome), (HostAction::Upgrade, U::RolledBack));
        assert!(line("upgrade", "fine").is_err());
        assert!(line("reinstall", "done").is_err());
    }

    /// A control plane on loopback that answers each heartbeat with the next of `answers`
    /// (status, `Retry-After`), and counts what it was sent.
    async fn heartbeat_server(
        answers: Vec<(u16, Option<&'static str>)>,
    ) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let seen = std::sync::Arc::new(AtomicUsize::new(0));
        let counter = seen.clone();
        let app = axum::Router::new().route(
            "/v1/heartbeats",
            axum::routing::post(move || {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let (status, retry_after) = answers[n.min(answers.len() - 1)];
                async move {
                    let mut r = axum::response::Response::new(axum::body::Body::from("{\"error\": \"slow down\"}"));
                    *r.status_mut() = axum::http::StatusCode::from_u16(status).unwrap();
                    if let Some(v) = retry_after {
                        r.headers_mut().insert("retry-after", v.parse().unwrap());
                    }
                    r
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}"), seen)
    }

    #[tokio::test]
    async fn a_heartbeat_told_to_wait_asks_once_more_and_only_within_the_limit() {
        use std::sync::atomic::Ordering;
        let body = serde_json::json!({"runner_id": "r1"});
        // Told to wait a second: it waits, asks again, and the second answer counts.
        let (server, seen) = heartbeat_server(vec![(429, Some("1")), (204, None)]).await;
        let started = std::time::Instant::now();
        Client::new(&server, "t").unwrap().heartbeat(&body).await.unwrap();
        assert_eq!(seen.load(Ordering::SeqCst), 2);
        assert!(started.elapsed() >= Duration::from_secs(1), "it waited as told");
        // Still refused after the wait: one retry only, and the refusal is the error.
        let (server, seen) = heartbeat_server(vec![(429, Some("0"))]).await;
        let e = Client::new(&server, "t").unwrap().heartbeat(&body).await.unwrap_err();
        assert!(e.to_string().contains("429"), "{e}");
        assert_eq!(seen.load(Ordering::SeqCst), 2);
        // A wait beyond the limit, or none given, or not a number of seconds: no retry.
        for retry_after in [Some("60"), None, Some("soon")] {
            let (server, seen) = heartbeat_server(vec![(429, retry_after), (204, None)]).await;
            let e = Client::new(&server, "t").unwrap().heartbeat(&body).await.unwrap_err();
            assert!(e.to_string().contains("slow down"), "{e}");
            assert_eq!(seen.load(Ordering::SeqCst), 1, "{retry_after:?}");
        }
    }

    /// A build where only the runner changed gets a smoke check of that runner, which fails
    /// when the runner does not work (it used to report "smoke sessions passed" with none run).
    #[tokio::test]
    async fn a_runner_only_build_smokes_its_runner() {
        use std::os::unix::fs::PermissionsExt;
        let m = BuildManifest {
            build: "sha256:b1".parse().unwrap(),
            image: String::new(),
            components: vec![super::super::Component {
                name: canary_contract::build::RUNNER.into(),
                version: "0.1.0+abc".into(),
                package: None,
                package_version: None,
                digest: format!("sha256:{}", "0".repeat(64)),
            }],
            evidence: super::super::Evidence {
                results: 1,
                passing: 1,
                runs: vec![],
            },
            offered_for: "stable".into(),
            statement: None,
        };
        let folder = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(folder.path().join("bin")).unwrap();
        let runner = folder.path().join("bin/canary-runner");
        let script = |body: &str| {
            std::fs::write(&runner, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&runner, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        script(r#"echo '{"type":"HEARTBEAT","runner_id":"smoke","versions":{"runner":"0.1.0"}}'"#);
        let ok = smoke(folder.path(), &m, Duration::from_secs(10)).await.unwrap();
        assert_eq!(ok, vec!["runner 0.1.0+abc".to_string()]);
        script("exit 3");
        let e = smoke(folder.path(), &m, Duration::from_secs(10)).await.unwrap_err();
        assert!(e.contains("runner 0.1.0+abc") && e.contains("exit 3"), "{e}");
    }

    #[test]
    fn build_folders_are_named_from_digests_only() {
        assert_eq!(
            folder_name(&format!("sha256:{}", "ab".repeat(32))).unwrap(),
            "abababababababab"
        );
        for bad in ["../../etc", "sha256:xyz", "", "sha256:12345"] {
            assert!(folder_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_switch_moves_current_and_keeps_previous_and_a_second_lock_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let host = Host::new(dir.path().to_path_buf());
        for b in ["aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb"] {
            std::fs::create_dir_all(dir.path().join("builds").join(b)).unwrap();
        }
        host.switch(&dir.path().join("builds/aaaaaaaaaaaaaaaa")).unwrap();
        assert!(
            std::fs::read_link(dir.path().join("previous")).is_err(),
            "nothing before the first"
        );
        host.switch(&dir.path().join("builds/bbbbbbbbbbbbbbbb")).unwrap();
        assert_eq!(
            std::fs::read_link(dir.path().join("current")).unwrap(),
            Path::new("builds/bbbbbbbbbbbbbbbb")
        );
        assert_eq!(
            std::fs::read_link(dir.path().join("previous")).unwrap(),
            Path::new("builds/aaaaaaaaaaaaaaaa")
        );
        let _held = host.try_lock().unwrap();
        let second = Host::new(dir.path().to_path_buf()).try_lock();
        assert!(second.is_err(), "two upgrades at once are refused");
    }
}

/// What a check found: the offer, the manifest once its signature is checked (or why it is
/// refused), and what the host runs now.
pub struct Checked {
    pub offer: Offer,
    pub manifest: std::result::Result<BuildManifest, String>,
    pub current: Option<BuildManifest>,
    /// The root version and metadata version the manifest was verified under.
    pub trusted: Option<(u64, u64)>,
}

impl Checked {
    /// Whether this host runs the offered build: the signed one when verified.
    pub fn up_to_date(&self) -> bool {
        match &self.manifest {
            Ok(m) => self.current.as_ref().is_some_and(|c| c.build == m.build),
            Err(_) => up_to_date(self.current.as_ref(), &self.offer),
        }
    }

    /// The traffic light to act on: the signed one when verified, else what the offer says.
    pub fn status(&self) -> super::Status {
        match &self.manifest {
            Ok(m) => m.statement.as_ref().map_or(super::Status::Red, |s| s.status),
            Err(_) => self.offer.status,
        }
    }
}

/// The host's heartbeat: what `current` holds.
fn heartbeat(cfg: &HostConfig, current: Option<&BuildManifest>) -> serde_json::Value {
    serde_json::json!({
        "type": "HEARTBEAT",
        "runner_id": cfg.runner_id,
        "org": cfg.org,
        "channel": cfg.channel,
        "versions": versions(current),
        "capabilities": ["update"],
        "sent_at": jiff::Timestamp::now().to_string(),
    })
}

/// Reports this host's versions (a heartbeat), asks for the offer (what the control plane says
/// of this runner, unsigned, for display), and reads the signed offer document through TUF.
pub async fn check(host: &Host, client: &Client, cfg: &HostConfig) -> Result<Checked> {
    let current = host.current();
    client.heartbeat(&heartbeat(cfg, current.as_ref())).await?;
    let offer = client.offer(&cfg.runner_id).await?;
    let verified = super::tuf::fetch_offer(
        &host.home,
        client.server(),
        client.transport(),
        cfg.org.as_deref(),
        &cfg.channel,
        &cfg.allowed_channels,
    )
    .await;
    let trusted = verified.as_ref().ok().map(|v| (v.root_version, v.version));
    Ok(Checked {
        offer,
        manifest: verified.map(|v| v.manifest),
        current,
        trusted,
    })
}

/// How an upgrade ended; the exit code follows it (0 done or up to date, 1 blocked, refused or
/// rolled back, 2 failed).
#[derive(Debug, Clone, Serialize)]
pub struct Upgrade {
    pub outcome: UpgradeOutcome,
    pub from: Option<BuildId>,
    pub to: Option<BuildId>,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<Plan>,
    pub smoke: Vec<String>,
}

impl Upgrade {
    pub fn exit_code(&self) -> i32 {
        match self.outcome {
            UpgradeOutcome::Done | UpgradeOutcome::UpToDate => crate::error::exit::PASS,
            UpgradeOutcome::Failed => crate::error::exit::ERROR,
            UpgradeOutcome::Blocked | UpgradeOutcome::Refused | UpgradeOutcome::RolledBack => {
                crate::error::exit::FAILED
            }
        }
    }
}

impl Host {
    /// Appends `o` to the host's history and tells the control plane (a control plane that is
    /// away does not undo what happened on the host; the history keeps it either way).
    pub async fn record(&self, client: &Client, cfg: &HostConfig, action: HostAction, o: &Upgrade) -> Result<()> {
        let entry = AuditEntry {
            at: jiff::Timestamp::now().to_string(),
            action,
            from: o.from.clone(),
            to: o.to.clone(),
            outcome: o.outcome,
            reason: o.reason.clone(),
        };
        self.audit(&entry)?;
        if let Err(e) = client.report(&cfg.runner_id, &entry).await {
            tracing::warn!("could not report the {action} to the control plane: {e}");
        }
        if o.outcome == UpgradeOutcome::Done {
            // What runs now, at once: the control plane's notice of this host being behind clears.
            if let Err(e) = client.heartbeat(&heartbeat(cfg, self.current().as_ref())).await {
                tracing::warn!("could not send the heartbeat after the {action}: {e}");
            }
        }
        Ok(())
    }
}

/// The upgrade, start to end: check, signature, plan, consent (`confirm`), install beside the
/// current build, switch, smoke every CLI, switch back on any failure. Holds the host's lock.
pub async fn upgrade(
    host: &Host,
    client: &Client,
    cfg: &HostConfig,
    smoke_limit: Duration,
    confirm: impl FnOnce(&Plan, &Offer) -> bool,
) -> Result<Upgrade> {
    let _lock = match host.try_lock() {
        Ok(l) => l,
        Err(e) => return refused_busy(host, &e),
    };
    let checked = check(host, client, cfg).await?;
    let from = checked.current.as_ref().map(|m| m.build.clone());
    let mut o = Upgrade {
        outcome: UpgradeOutcome::UpToDate,
        from: from.clone(),
        to: checked.offer.build.clone(),
        reason: String::new(),
        plan: None,
        smoke: vec![],
    };
    if checked.up_to_date() {
        o.reason = "this host runs the offered build".into();
        return Ok(o);
    }
    let end = async |mut o: Upgrade, outcome: UpgradeOutcome, reason: String| -> Result<Upgrade> {
        o.outcome = outcome;
        o.reason = reason;
        host.record(client, cfg, HostAction::Upgrade, &o).await?;
        Ok(o)
    };
    if let Ok(m) = &checked.manifest {
        o.to = Some(m.build.clone());
    }
    if checked.status() == super::Status::Red {
        return end(
            o,
            UpgradeOutcome::Blocked,
            format!("the offered build is red: {}", checked.offer.reasons.join("; ")),
        )
        .await;
    }
    let manifest = match checked.manifest {
        Ok(m) => m,
        Err(why) => {
            return end(o, UpgradeOutcome::Refused, why).await;
        }
    };
    let plan = plan_for(host, &manifest)?;
    o.plan = Some(plan.clone());
    if !plan.blocked.is_empty() {
        return end(
            o,
            UpgradeOutcome::Blocked,
            format!("installed bundles exclude the target: {}", plan.blocked.join("; ")),
        )
        .await;
    }
    if !confirm(&plan, &checked.offer) {
        return end(
            o,
            UpgradeOutcome::Refused,
            "not confirmed (pass --yes to upgrade without asking)".into(),
        )
        .await;
    }
    match install_and_smoke(host, client, &manifest, smoke_limit, from.as_deref()).await? {
        Ok(passed) => {
            o.smoke = passed;
            let o = end(
                o,
                UpgradeOutcome::Done,
                format!("switched to {} and its smoke sessions passed", manifest.build),
            )
            .await?;
            // The control plane sees the new versions at once.
            let _ = check(host, client, cfg).await;
            Ok(o)
        }
        Err((outcome, reason)) => end(o, outcome, reason).await,
    }
}

/// Installs the build beside the current one, switches to it and smokes every CLI; on a failed
/// smoke switches back to exactly what was there. `Ok(Err((outcome, reason)))` when it did not
/// end on the new build.
async fn install_and_smoke(
    host: &Host,
    client: &Client,
    manifest: &BuildManifest,
    smoke_limit: Duration,
    from: Option<&str>,
) -> Result<std::result::Result<Vec<String>, (UpgradeOutcome, String)>> {
    let folder = match host.install(client, manifest).await {
        Ok(f) => f,
        Err(e) => {
            return Ok(Err((
                UpgradeOutcome::Failed,
                format!("install stopped, the current build stays: {e}"),
            )));
        }
    };
    let before = std::fs::read_link(host.home.join("current")).ok();
    let before_prev = std::fs::read_link(host.home.join("previous")).ok();
    host.switch(&folder)?;
    match smoke(&folder, manifest, smoke_limit).await {
        Ok(passed) => Ok(Ok(passed)),
        Err(why) => {
            // Back to exactly what was there before.
            restore_links(host, before, before_prev)?;
            Ok(Err((
                UpgradeOutcome::RolledBack,
                format!("{why}; switched back to {}", from.unwrap_or("nothing")),
            )))
        }
    }
}

/// Another upgrade holds the host's lock: refused, and audited here (the lock is not ours to
/// report to the control plane).
fn refused_busy(host: &Host, e: &LabError) -> Result<Upgrade> {
    let o = Upgrade {
        outcome: UpgradeOutcome::Refused,
        from: host.current().map(|m| m.build),
        to: None,
        reason: e.to_string(),
        plan: None,
        smoke: vec![],
    };
    host.audit(&AuditEntry {
        at: jiff::Timestamp::now().to_string(),
        action: HostAction::Upgrade,
        from: o.from.clone(),
        to: None,
        outcome: o.outcome,
        reason: o.reason.clone(),
    })?;
    Ok(o)
}

/// Puts `current` and `previous` back as they were before a switch (absent stays absent).
fn restore_links(host: &Host, before: Option<PathBuf>, before_prev: Option<PathBuf>) -> Result<()> {
    match before {
        Some(b) => relink(&host.home, "current", &b)?,
        None => {
            let _ = std::fs::remove_file(host.home.join("current"));
        }
    }
    match before_prev {
        Some(p) => relink(&host.home, "previous", &p)?,
        None => {
            let _ = std::fs::remove_file(host.home.join("previous"));
        }
    }
    Ok(())
}

/// Back to the previous build, or to an installed one named by a digest prefix.
pub async fn rollback(host: &Host, client: &Client, cfg: &HostConfig, to: Option<&str>) -> Result<Upgrade> {
    let _lock = host.try_lock()?;
    let from = host.current().map(|m| m.build);
    let target = match to {
        Some(prefix) => {
            let p = prefix.trim_start_matches("sha256:");
            host.installed()
                .into_iter()
                .find(|(_, m)| m.build.trim_start_matches("sha256:").starts_with(p) && !p.is_empty())
        }
        None => host
            .previous()
            .and_then(|m| host.installed().into_iter().find(|(_, i)| i.build == m.build)),
    };
    let mut o = Upgrade {
        outcome: UpgradeOutcome::Blocked,
        from: from.clone(),
        to: None,
        reason: String::new(),
        plan: None,
        smoke: vec![],
    };
    match target {
        None => {
            o.reason = match to {
                Some(t) => format!("no installed build matches `{}`", crate::text::clean(t)),
                None => "no previous build on this host".into(),
            };
        }
        Some((folder, m)) => {
            host.switch(&folder)?;
            o.outcome = UpgradeOutcome::Done;
            o.to = Some(m.build.clone());
            o.reason = format!("switched back to {}", m.build);
        }
    }
    host.record(client, cfg, HostAction::Rollback, &o).await?;
    Ok(o)
}
