//! A fluent helper around the `canary` binary, so that a test reads like a usage example:
//! `Canary::new().args(["run", "-s", "suites/demo.yaml"]).run().code(0)`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A command that names neither a registry nor a config would use the lab's default registry,
/// `.canary/registry.db` in the checkout: tests get one under cargo's test scratch folder
/// instead, shared by the tests that rely on the default as they shared that one.
fn isolate_registry(cmd: &mut Command) {
    let named = cmd.get_args().any(|a| {
        a.to_str().is_some_and(|a| {
            a == "--registry" || a == "--config" || a.starts_with("--registry=") || a.starts_with("--config=")
        })
    });
    let set = cmd.get_envs().any(|(k, _)| k == "CANARY_REGISTRY");
    if !named && !set {
        cmd.env(
            "CANARY_REGISTRY",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("default-registry.db"),
        );
    }
}

/// The runner crate's binaries (`canary-runner`, `canary-exec`) beside `canary`, where the lab
/// looks for them. Cargo builds only this package's binaries for its tests, so the first call in
/// a test process builds them (a no-op when they are fresh), unless `CANARY_RUNNER_BUILT` says
/// the caller did (`just test` builds the workspace's binaries first).
pub fn ensure_runner_built() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("CANARY_RUNNER_BUILT").is_some() {
            return;
        }
        let canary = Path::new(env!("CARGO_BIN_EXE_canary"));
        let release = canary
            .parent()
            .and_then(|d| d.file_name())
            .is_some_and(|n| n == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-q", "-p", "canary-runner", "--bins"])
            .current_dir(root());
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("cargo build -p canary-runner --bins");
        assert!(status.success(), "cargo build -p canary-runner --bins failed");
    });
}

/// The `canary-runner` binary beside `canary`, built if needed.
pub fn runner_exe() -> &'static str {
    static PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ensure_runner_built();
    PATH.get_or_init(|| {
        let p = Path::new(env!("CARGO_BIN_EXE_canary")).with_file_name("canary-runner");
        assert!(
            p.is_file(),
            "{} is missing: cargo build --workspace --bins",
            p.display()
        );
        p.display().to_string()
    })
}

/// Serves `app` on a loopback port from a thread of its own; returns its base URL.
pub fn serve_on_loopback(app: axum::Router) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    format!("http://{}", rx.recv().unwrap())
}

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub struct Canary {
    cmd: Command,
    pub reports: tempfile::TempDir,
}

pub struct Ran {
    pub out: Output,
    pub reports: tempfile::TempDir,
}

impl Canary {
    /// `canary` in the repo root, with reports going to a fresh temporary folder.
    pub fn new() -> Canary {
        ensure_runner_built();
        let reports = tempfile::tempdir().expect("tempdir");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_canary"));
        cmd.current_dir(root())
            .arg("--reports-dir")
            .arg(reports.path())
            .env_remove("CANARY_CONFIG")
            .env("CI", "true");
        Canary { cmd, reports }
    }

    pub fn args<I, S>(mut self, args: I) -> Canary
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.cmd.args(args);
        self
    }

    pub fn arg_path(mut self, p: &Path) -> Canary {
        self.cmd.arg(p);
        self
    }

    pub fn arg_path_flag(mut self, flag: &str, p: &Path) -> Canary {
        self.cmd.arg(flag).arg(p);
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Canary {
        self.cmd.env(k, v);
        self
    }

    pub fn command(mut self) -> (Command, tempfile::TempDir) {
        isolate_registry(&mut self.cmd);
        (self.cmd, self.reports)
    }

    pub fn run(mut self) -> Ran {
        isolate_registry(&mut self.cmd);
        let out = self.cmd.output().expect("canary runs");
        Ran {
            out,
            reports: self.reports,
        }
    }
}

impl Ran {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).to_string()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).to_string()
    }

    /// Asserts the exit code, showing both streams when it differs.
    pub fn code(self, expected: i32) -> Ran {
        assert_eq!(
            self.out.status.code(),
            Some(expected),
            "exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout(),
            self.stderr()
        );
        self
    }

    pub fn stderr_has(self, needle: &str) -> Ran {
        assert!(
            self.stderr().contains(needle),
            "stderr lacks {needle:?}:\n{}",
            self.stderr()
        );
        self
    }

    pub fn stdout_has(self, needle: &str) -> Ran {
        assert!(
            self.stdout().contains(needle),
            "stdout lacks {needle:?}:\n{}",
            self.stdout()
        );
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.out.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout()))
    }

    /// The one run folder this invocation wrote.
    pub fn run_dir(&self) -> PathBuf {
        let dirs: Vec<_> = std::fs::read_dir(self.reports.path())
            .expect("reports dir")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        assert_eq!(dirs.len(), 1, "expected one run folder, found {dirs:?}");
        dirs[0].clone()
    }

    pub fn report_dirs(&self) -> usize {
        std::fs::read_dir(self.reports.path()).map(|d| d.count()).unwrap_or(0)
    }
}

/// Writes `text` to a fresh file and returns its path (kept alive by the returned dir).
pub fn write_temp(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write");
    (dir, path)
}

/// Docker-backed tests must run for real: a missing engine or base image is a failure that
/// says how to fix it, never a skip.
pub fn require_lab() {
    ensure_runner_built();
    let info = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output();
    match info {
        Ok(o) if o.status.success() => {}
        _ => panic!(
            "the Docker engine is not reachable: these tests need it. Start it (`dockerd &`) or run `bash .ci/run`, which does"
        ),
    }
    let tag = Command::new(env!("CARGO_BIN_EXE_canary"))
        .args(["images", "base", "--json"])
        .current_dir(root())
        .output()
        .expect("canary images base");
    assert!(
        tag.status.success(),
        "the base image is missing and could not be built (`just setup` builds it):\n{}",
        String::from_utf8_lossy(&tag.stderr)
    );
}

/// Containers and networks carrying `label`, as the docker CLI sees them.
pub fn lab_objects(label: &str) -> (usize, usize) {
    let count = |args: &[&str]| {
        let o = Command::new("docker").args(args).output().expect("docker CLI");
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count()
    };
    (
        count(&["ps", "-aq", "--filter", &format!("label={label}")]),
        count(&["network", "ls", "-q", "--filter", &format!("label={label}")]),
    )
}

pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("read json")).expect("valid json")
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs the docker CLI; its trimmed stdout, or the test fails with docker's stderr.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Runs a line the lab printed for a person (a repro line, a rollback command) as that person
/// would: through `sh`, from the checkout, with the PATH they have.
pub fn run_as_printed(line: &str, env: &[(&str, &std::ffi::OsStr)]) -> std::process::Output {
    // PATH as the user has it: the printed line must name the program in a way that runs
    // without `canary` on PATH (a fresh clone has it only in target/).
    let mut cmd = Command::new("sh");
    cmd.args(["-c", line]).current_dir(root()).env("CI", "true");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("sh runs")
}

/// The documents a person reads: the README, then docs/*.md in name order.
pub fn doc_files() -> Vec<PathBuf> {
    let root = root();
    let mut docs: Vec<_> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    docs.insert(0, root.join("README.md"));
    docs
}

/// A webhook receiver on loopback (an admin's, an on-call channel's): every JSON body posted to
/// it, in order.
pub fn webhook() -> (String, std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hooks/canary", listener.local_addr().unwrap());
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = got.clone();
    use std::io::{BufRead, Read, Write};
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut r = std::io::BufReader::new(stream.try_clone().unwrap());
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; len];
            if r.read_exact(&mut body).is_ok()
                && let Ok(v) = serde_json::from_slice(&body)
            {
                sink.lock().unwrap().push(v);
            }
            let mut s = stream;
            let _ = s.write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (url, got)
}

/// A child process killed (SIGKILL) and reaped when the guard drops.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The path a `scripts/<name>.sh` installer prints (it installs the tool when missing), or a
/// panic that says why it could not.
pub fn installed(script: &str) -> String {
    let out = Command::new(root().join("scripts").join(script)).output().unwrap();
    assert!(
        out.status.success(),
        "scripts/{script} could not provide its tool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The lab's usual two-CLI build (Codex 0.163.0, Claude Code of SDK 0.2.186): `images build
/// --json`'s answer, built once per engine and found after that.
pub fn two_cli_build() -> serde_json::Value {
    Canary::new()
        .args([
            "images",
            "build",
            "--provider",
            "codex@0.163.0",
            "--provider",
            "claude-code@sdk-0.2.186",
            "--json",
        ])
        .run()
        .code(0)
        .json()
}

/// Starts a prepared command with both streams captured (for a run a test acts on meanwhile).
pub fn spawn_captured(mut cmd: Command) -> std::process::Child {
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("canary starts")
}
