//! The real Codex and Claude Code binaries, fetched from their PyPI wheels, driven fully
//! offline by the model stub on loopback. What these pin: tool names and argument shapes the
//! CLIs offer, the effects of scripted turns, the CLIs' own event lines, and usage totals that
//! reconcile with what the stub reported.

use crate::helpers::root;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const CODEX: &str = "codex@0.163.0";
pub(crate) const CLAUDE: &str = "claude-code@sdk-0.2.186";

fn canary() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_canary"));
    c.current_dir(root()).env("CI", "true");
    c
}

/// Fetches a CLI into the lab cache (once per machine) and returns its binary.
pub(crate) fn fetch(spec: &str) -> PathBuf {
    let out = canary().args(["providers", "fetch", spec, "--json"]).output().unwrap();
    assert!(
        out.status.success(),
        "fetching {spec}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let f: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    root().join(f["binary"].as_str().unwrap())
}

/// `canary stub` on a free loopback port; killed on drop.
pub(crate) struct StubProcess {
    child: Child,
    pub(crate) url: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl StubProcess {
    pub(crate) fn start(scenario: &str) -> StubProcess {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("stub.jsonl");
        let mut child = canary()
            .args([
                "stub",
                "--scenario",
                &format!("tests/fixtures/scenarios/{scenario}.yaml"),
                "--log",
            ])
            .arg(&log)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        assert!(first.starts_with("http://127.0.0.1:"), "stub printed {first:?}");
        StubProcess {
            child,
            url: first.trim().to_string(),
            log,
            _dir: dir,
        }
    }

    fn log(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for StubProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A small git repo like the canary repos: one file holding the greeting.
pub(crate) fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("greeting.js"), "export const GREETING = \"Hello\";\n").unwrap();
    for args in [
        &["init", "-q", "."][..],
        &["add", "-A"],
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@localhost",
            "commit",
            "-qm",
            "pinned",
        ],
    ] {
        assert!(
            Command::new("git")
                .args(args)
                .current_dir(dir.path())
                .status()
                .unwrap()
                .success()
        );
    }
    dir
}

fn events(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}

fn run_codex(stub: &StubProcess, repo: &Path) -> std::process::Output {
    let codex = fetch(CODEX);
    let home = tempfile::tempdir().unwrap();
    let config = format!(
        "model = \"gpt-5\"\nmodel_provider = \"stub\"\ncheck_for_update_on_startup = false\n\n[model_providers.stub]\nname = \"canary stub\"\nbase_url = \"{}/v1\"\nenv_key = \"CANARY_STUB_KEY\"\nwire_api = \"responses\"\nsupports_websockets = false\nrequest_max_retries = 0\nstream_max_retries = 0\n",
        stub.url
    );
    std::fs::write(home.path().join("config.toml"), config).unwrap();
    Command::new(codex)
        .args([
            "exec",
            "--json",
            "--skip-git-repo-check",
            "--sandbox",
            "workspace-write",
            "do the canary task",
        ])
        .current_dir(repo)
        .env("CODEX_HOME", home.path())
        .env("CANARY_STUB_KEY", "not-a-real-key")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn run_claude(stub: &StubProcess, repo: &Path) -> std::process::Output {
    let claude = fetch(CLAUDE);
    let home = tempfile::tempdir().unwrap();
    Command::new(claude)
        .args([
            "-p",
            "do the canary task",
            "--output-format",
            "stream-json",
            "--verbose",
            "--model",
            "claude-sonnet-4-5",
            "--allowedTools",
            "Bash",
        ])
        .current_dir(repo)
        .env("HOME", home.path())
        .env("CLAUDE_CONFIG_DIR", home.path())
        .env("ANTHROPIC_BASE_URL", &stub.url)
        .env("ANTHROPIC_API_KEY", "not-a-real-key")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .env("DISABLE_AUTOUPDATER", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn assert_scenario_effects(repo: &Path, stub: &StubProcess, shell_tool: &str) -> Vec<serde_json::Value> {
    assert_eq!(
        std::fs::read_to_string(repo.join("out.txt")).unwrap(),
        "canary\n",
        "turn 1 ran"
    );
    assert_eq!(
        std::fs::read_to_string(repo.join("greeting.js")).unwrap(),
        "export const GREETING = \"Howdy\";\n",
        "turn 2 edited"
    );
    let log: Vec<_> = stub.log().into_iter().filter(|e| e["auxiliary"] == false).collect();
    assert_eq!(log.len(), 3, "three scripted turns: {log:#?}");
    for (i, e) in log.iter().enumerate() {
        assert_eq!(e["turn"], i, "{e}");
        assert!(e["unmatched"].is_null(), "{e}");
        assert_eq!(
            e["tool_results"].as_array().unwrap().len(),
            i,
            "turn {i} carries the results so far"
        );
        assert!(
            e["tools_offered"].as_array().unwrap().iter().any(|t| t == shell_tool),
            "{} offered {}",
            e["protocol"],
            e["tools_offered"]
        );
    }
    log
}

#[test]
fn real_codex_plays_a_scenario_offline() {
    let stub = StubProcess::start("edit");
    let repo = workspace();
    let out = run_codex(&stub, repo.path());
    assert!(
        out.status.success(),
        "codex failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = assert_scenario_effects(repo.path(), &stub, "exec_command");
    let events = events(&out.stdout);
    let commands: Vec<_> = events
        .iter()
        .filter(|e| e["type"] == "item.completed" && e["item"]["type"] == "command_execution")
        .collect();
    assert_eq!(commands.len(), 2);
    assert!(commands.iter().all(|c| c["item"]["exit_code"] == 0), "{commands:#?}");
    assert!(
        events
            .iter()
            .any(|e| e["item"]["type"] == "agent_message" && e["item"]["text"] == "done")
    );
    // Codex reports cumulative totals; the stub reported per turn: they must agree.
    let usage = &events.iter().rfind(|e| e["type"] == "turn.completed").unwrap()["usage"];
    let sum = |k: &str| log.iter().map(|e| e["usage"][k].as_u64().unwrap()).sum::<u64>();
    assert_eq!(usage["input_tokens"].as_u64(), Some(sum("input_tokens")));
    assert_eq!(usage["cached_input_tokens"].as_u64(), Some(sum("cached_input_tokens")));
    assert_eq!(usage["output_tokens"].as_u64(), Some(sum("output_tokens")));
}

#[test]
fn real_claude_code_plays_a_scenario_offline() {
    let stub = StubProcess::start("edit");
    let repo = workspace();
    let out = run_claude(&stub, repo.path());
    assert!(
        out.status.success(),
        "claude failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = assert_scenario_effects(repo.path(), &stub, "Bash");
    let events = events(&out.stdout);
    let init = events
        .iter()
        .find(|e| e["type"] == "system" && e["subtype"] == "init")
        .expect("system/init");
    assert!(init["session_id"].is_string());
    let result = events.iter().find(|e| e["type"] == "result").expect("result event");
    assert_eq!(result["is_error"], false);
    assert!(
        result["total_cost_usd"].as_f64().unwrap() > 0.0,
        "a real model id is priced"
    );
    // Anthropic splits input into fresh and cache reads; together they are what the stub sent.
    let u = &result["usage"];
    let fresh: u64 = log
        .iter()
        .map(|e| e["usage"]["input_tokens"].as_u64().unwrap() - e["usage"]["cached_input_tokens"].as_u64().unwrap())
        .sum();
    assert_eq!(u["input_tokens"].as_u64(), Some(fresh), "{u}");
    assert_eq!(
        u["cache_read_input_tokens"].as_u64(),
        Some(
            log.iter()
                .map(|e| e["usage"]["cached_input_tokens"].as_u64().unwrap())
                .sum()
        )
    );
}

#[test]
fn a_request_the_scenario_does_not_cover_fails_loudly() {
    let stub = StubProcess::start("too-short");
    let repo = workspace();
    let out = run_codex(&stub, repo.path());
    let unmatched: Vec<_> = stub.log().into_iter().filter(|e| !e["unmatched"].is_null()).collect();
    assert_eq!(unmatched.len(), 1, "{:#?}", stub.log());
    assert_eq!(
        unmatched[0]["unmatched"],
        "the conversation already has 1 tool calls, but scenario `default` has 1 turns"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success() || stdout.contains("canary model stub"),
        "codex must not pass silently: {stdout}"
    );
}

/// The reference runner over the real CLIs: contract events in order, the policy blocking a
/// risky action before the CLI can act, usage reconciled, the diff reported.
fn runner_session(
    provider: &str,
    cli: &Path,
    scenario: &str,
    approval: &str,
) -> (std::process::Output, Vec<serde_json::Value>, tempfile::TempDir) {
    let stub = StubProcess::start(scenario);
    let repo = workspace();
    let out = Command::new(crate::helpers::runner_exe())
        .args([
            "session",
            "--provider",
            provider,
            "--prompt",
            "do the canary task",
            "--model-url",
            &stub.url,
            "--approval",
            approval,
            "--timeout",
            "2m",
            "--cli",
        ])
        .arg(cli)
        .current_dir(repo.path())
        .output()
        .unwrap();
    let events = events(&out.stdout);
    (out, events, repo)
}

fn types(events: &[serde_json::Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .filter(|t| *t != "USAGE_TICK")
        .collect()
}

fn reconcile(events: &[serde_json::Value]) -> (u64, u64, u64) {
    let ticks: Vec<_> = events.iter().filter(|e| e["type"] == "USAGE_TICK").collect();
    assert!(!ticks.is_empty());
    assert!(
        ticks.windows(2).all(|w| w[0]["seq"].as_u64() < w[1]["seq"].as_u64()),
        "seq increases"
    );
    let sum = |k: &str| ticks.iter().map(|t| t[k].as_u64().unwrap()).sum::<u64>();
    (sum("input_tokens"), sum("cached_input_tokens"), sum("output_tokens"))
}

#[test]
fn runner_blocks_risky_actions_for_both_clis() {
    for (provider, spec) in [("codex", CODEX), ("claude-code", CLAUDE)] {
        let (out, events, repo) = runner_session(provider, &fetch(spec), "risky", "none");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{provider}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(repo.path().join(".git").is_dir(), "{provider}: the effect is absent");
        let t = types(&events);
        let at = |ty: &str| {
            t.iter()
                .position(|x| *x == ty)
                .unwrap_or_else(|| panic!("{provider}: no {ty} in {t:?}"))
        };
        assert!(
            at("SESSION_STARTED") < at("APPROVAL_REQUIRED") && at("APPROVAL_REQUIRED") < at("ACTION_BLOCKED"),
            "{provider}: {t:?}"
        );
        let blocked = events.iter().find(|e| e["type"] == "APPROVAL_REQUIRED").unwrap();
        assert_eq!(
            (blocked["action"].as_str(), blocked["risk"].as_str()),
            (Some("rm -rf .git"), Some("deletes .git"))
        );
        let diff = events.iter().find(|e| e["type"] == "DIFF_READY").unwrap();
        assert_eq!(diff["files"], serde_json::json!(["safe.txt"]), "{provider}");
        assert_eq!(
            reconcile(&events),
            (3300, 1600, 123),
            "{provider}: ticks sum to the stub's usage"
        );
    }
}

#[test]
fn runner_lets_approved_actions_through() {
    let (out, events, _repo) = runner_session("codex", &fetch(CODEX), "approved", "approve");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(events.iter().any(|e| e["type"] == "ACTION_APPROVED"));
    assert!(!events.iter().any(|e| e["type"] == "ACTION_BLOCKED"));
    let ran = events
        .iter()
        .find(|e| e["type"] == "COMMAND_EXITED" && e["command"].as_str().unwrap().contains("curl"))
        .expect("the approved command ran");
    assert_ne!(ran["exit_code"], 0, "offline, curl fails: the point is that it ran");
}

#[test]
fn runner_reports_a_cli_that_cannot_start() {
    let (out, events, _repo) = runner_session("codex", Path::new("/nonexistent/codex"), "edit", "none");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "ERROR" && e["kind"] == "cli_missing"),
        "{events:#?}"
    );
}
