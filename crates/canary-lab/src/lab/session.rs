//! Session steps: the lab starts the model stub on the case container's loopback (playing the
//! step's scenario), runs `canary-runner session` against it, and keeps the stub's request log.
//! The stub runs per case, so cases share nothing and need no network at all.

use crate::engine::{Backend, ExecSpec};
use crate::providers::Provider;
use crate::report::CheckFailure;
use crate::suite::SessionSpec;
use base64::Engine as _;
use std::time::{Duration, Instant};

pub const DIR: &str = "/tmp/canary-lab";

/// The most of a step's model-stub log the lab reads back (each entry carries the request's
/// tool schemas, tens of KiB for a CLI with many tools).
const MAX_STUB_LOG: usize = 32 << 20;

fn sh(script: String, deadline: Instant) -> ExecSpec {
    ExecSpec {
        cmd: vec!["sh".into(), "-c".into(), script],
        env: vec![],
        workdir: crate::repos::WORKDIR.into(),
        deadline,
        stdin: None,
    }
}

/// The provider a session uses: the step's, else the case's (one of the build's CLIs).
pub fn provider(spec: &SessionSpec, case_provider: Option<Provider>) -> Option<Provider> {
    spec.provider.or(case_provider)
}

/// What the report shows as the step's command.
pub fn display(spec: &SessionSpec, case_provider: Option<Provider>) -> String {
    format!(
        "canary-runner session --provider {} --approval {} (scenario: {} turns)",
        provider(spec, case_provider).map_or("?", Provider::name),
        spec.approval,
        spec.scenario.turns.len()
    )
}

/// Starts the stub for step `n` and returns the runner's argv, or the reason the session cannot
/// run (a step failure, not a lab error: the image lacks a runner or a CLI).
pub async fn prepare<B: Backend>(
    backend: &B,
    container: &str,
    n: usize,
    spec: &SessionSpec,
    case_provider: Option<Provider>,
    step_timeout: Duration,
    resumed: Option<&Conversation>,
) -> crate::error::Result<Result<Vec<String>, CheckFailure>> {
    let fail = |expected: &str, actual: String| {
        Ok(Err(CheckFailure {
            check: "session".into(),
            expected: expected.into(),
            actual,
        }))
    };
    let Some(provider) = provider(spec, case_provider) else {
        return fail(
            "a provider CLI in the image",
            "the image carries none: build one with `canary images build --provider ...` or set `provider:`".into(),
        );
    };
    if spec.resume.is_some() && resumed.and_then(|c| c.session_id.as_ref()).is_none() {
        return fail(
            "the session it resumes to have reported its session id",
            "none: that session did not start (see its step)".into(),
        );
    }
    let url = match start_stub(backend, container, n, spec, resumed).await? {
        Ok(url) => url,
        Err(why) => return fail("the model stub to start in the case container", why),
    };
    let mut argv: Vec<String> = [
        "canary-runner",
        "session",
        "--provider",
        provider.name(),
        "--prompt",
        &spec.prompt,
        "--model-url",
        &url,
        "--approval",
        spec.approval.as_arg(),
        "--workspace",
        crate::repos::WORKDIR,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    session_flags(n, spec, step_timeout, resumed, &mut argv);
    Ok(Ok(match spec.interrupt {
        Some(i) => interrupted(&argv, n, i),
        None => argv,
    }))
}

/// Where session step `n`'s CLI keeps its home (config and conversations).
pub fn home_of(n: usize) -> String {
    format!("{DIR}/home-{n}")
}

/// Starts step `n`'s model stub in the case container (playing the step's scenario, and knowing
/// the conversation a resumed session continues); its URL, or why it did not start.
async fn start_stub<B: Backend>(
    backend: &B,
    container: &str,
    n: usize,
    spec: &SessionSpec,
    resumed: Option<&Conversation>,
) -> crate::error::Result<Result<String, String>> {
    let b64 = |v: String| base64::engine::general_purpose::STANDARD.encode(v);
    let scenario = b64(serde_json::to_string(&spec.scenario).expect("scenario serializes"));
    let continues = match resumed {
        Some(c) => {
            let text = serde_json::json!({"calls_before": c.calls, "markers": c.markers}).to_string();
            format!("echo {} | base64 -d > {DIR}/continues-{n}.json && ", b64(text))
        }
        None => String::new(),
    };
    let continues_flag = if resumed.is_some() {
        format!(" --continues {DIR}/continues-{n}.json")
    } else {
        String::new()
    };
    let script = format!(
        "command -v canary-runner >/dev/null || {{ echo 'canary-runner is not in this image' >&2; exit 3; }}; \
         mkdir -p {DIR} && echo {scenario} | base64 -d > {DIR}/scenario-{n}.json && {continues}\
         (canary-runner lab-stub --scenario {DIR}/scenario-{n}.json --log {DIR}/stub-{n}.jsonl --addr-file {DIR}/stub-{n}.addr{continues_flag} > {DIR}/stub-{n}.err 2>&1 &) && \
         for i in $(seq 200); do [ -s {DIR}/stub-{n}.addr ] && exec cat {DIR}/stub-{n}.addr; sleep 0.05; done; cat {DIR}/stub-{n}.err >&2; exit 1"
    );
    let out = backend
        .exec(container, &sh(script, Instant::now() + Duration::from_secs(30)))
        .await?;
    if out.exit_code != Some(0) {
        return Ok(Err(format!(
            "exit {:?}: {}",
            out.exit_code,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(Ok(String::from_utf8_lossy(&out.stdout).trim().to_string()))
}

/// The runner's flags after the essentials: its deadline, the sandbox, the inventory, the model,
/// the CLI's home, the conversation it resumes and the MCP fixture.
fn session_flags(
    n: usize,
    spec: &SessionSpec,
    step_timeout: Duration,
    resumed: Option<&Conversation>,
    argv: &mut Vec<String>,
) {
    // The runner's own deadline comes first, so it can report a hung CLI before the lab kills it.
    argv.extend([
        "--timeout".into(),
        format!("{}s", step_timeout.as_secs().saturating_sub(5).max(5)),
    ]);
    // The case container is the sandbox: unprivileged, no capabilities, no network.
    argv.extend(["--codex-sandbox".into(), "danger-full-access".into()]);
    // What the CLI printed, kind by kind, for drift (collected by `drift::collect`).
    argv.extend(["--inventory".into(), format!("{DIR}/inventory-{n}.json")]);
    if let Some(m) = &spec.model {
        argv.extend(["--model".into(), m.clone()]);
    }
    // The CLI's home stays after the session, so a later step can resume its conversation.
    let home = resumed.map_or_else(|| home_of(n), |c| c.home.clone());
    argv.extend(["--home".into(), home]);
    if let Some(id) = resumed.and_then(|c| c.session_id.clone()) {
        argv.extend(["--resume".into(), id]);
    }
    if spec.uses_mcp() {
        argv.extend(["--mcp-log".into(), format!("{DIR}/mcp-{n}.jsonl")]);
    }
}

/// What a later step needs of an earlier session to resume its conversation.
#[derive(Debug, Clone, Default)]
pub struct Conversation {
    /// The session id its SESSION_STARTED carried.
    pub session_id: Option<String>,
    /// The tool calls the model made in the conversation so far.
    pub calls: usize,
    /// Texts of the earlier turns every resumed request must carry (their prompts).
    pub markers: Vec<String>,
    pub home: String,
}

impl Conversation {
    /// The conversation after session step `n` ran (`events` its output), continuing `before`.
    pub fn after(
        n: usize,
        spec: &SessionSpec,
        events: &[serde_json::Value],
        before: Option<&Conversation>,
    ) -> Conversation {
        let session_id = events
            .iter()
            .find(|e| e["type"] == "SESSION_STARTED")
            .and_then(|e| e["session_id"].as_str())
            .map(String::from);
        let calls = spec
            .scenario
            .turns
            .iter()
            .filter(|t| !matches!(t, crate::stub::Turn::Say(_)))
            .count();
        let mut markers = before.map(|b| b.markers.clone()).unwrap_or_default();
        markers.push(spec.prompt.clone());
        Conversation {
            session_id,
            calls: before.map_or(0, |b| b.calls) + calls,
            markers,
            home: before.map_or_else(|| home_of(n), |b| b.home.clone()),
        }
    }
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The runner's command line wrapped the way a platform's stop button acts: once the model
/// stub has answered `after_turn` turns (and a second for the CLI to act on the last), SIGINT
/// to the runner, then SIGTERM after the grace period if it still runs. Polls, so nothing of
/// the wrapper outlives the runner.
fn interrupted(argv: &[String], n: usize, i: crate::suite::Interrupt) -> Vec<String> {
    let runner: Vec<String> = argv.iter().map(|a| quote(a)).collect();
    let ticks = (i.grace.as_millis() / 100).max(1);
    let script = format!(
        "{runner} & pid=$!\n\
         while kill -0 $pid 2>/dev/null; do c=$(grep -c '\"turn\":[0-9]' {DIR}/stub-{n}.jsonl 2>/dev/null); [ \"${{c:-0}}\" -ge {after} ] && break; sleep 0.1; done\n\
         sleep 1; kill -INT $pid 2>/dev/null\n\
         t=0; while kill -0 $pid 2>/dev/null && [ $t -lt {ticks} ]; do sleep 0.1; t=$((t+1)); done\n\
         kill -TERM $pid 2>/dev/null\n\
         wait $pid",
        runner = runner.join(" "),
        after = i.after_turn,
    );
    vec!["sh".into(), "-c".into(), script]
}

/// A process listing of the container that leaves out the listing itself: `PID ARGS` lines.
pub const PROCESSES: &str = r#"anc=" $$ "; p=$$; while [ "$p" -gt 1 ]; do p=$(cut -d' ' -f4 /proc/$p/stat); anc="$anc$p "; done; for d in /proc/[0-9]*; do pid=${d#/proc/}; case "$anc" in *" $pid "*) continue;; esac; a=$(tr '\0' ' ' < $d/cmdline 2>/dev/null); [ -n "$a" ] && echo "$pid $a"; done; true"#;

/// The processes in a listing that were not in `before` (by pid).
pub fn new_processes(before: &str, after: &str) -> Vec<String> {
    let pids: std::collections::BTreeSet<&str> = before.lines().filter_map(|l| l.split(' ').next()).collect();
    after
        .lines()
        .filter(|l| l.split(' ').next().is_some_and(|p| !pids.contains(p)))
        .map(|l| l.trim().to_string())
        .collect()
}

/// An interrupted session's checks: a terminal `ERROR interrupted` (only DIFF_READY after it),
/// no process of the session left (`leftover`), and a working tree git can read (`tree`: the
/// output of `git status` and `git fsck`, `Err` with git's words).
pub fn interrupt_checks(
    events: &[serde_json::Value],
    leftover: &[String],
    tree: Result<(), String>,
) -> Vec<CheckFailure> {
    let mut out = Vec::new();
    let last = events
        .iter()
        .rposition(|e| e["type"] == "ERROR" && e["kind"] == "interrupted");
    let after: Vec<&str> = last
        .map(|i| events[i + 1..].iter().filter_map(|e| e["type"].as_str()).collect())
        .unwrap_or_default();
    if last.is_none() || after.iter().any(|t| *t != "DIFF_READY") {
        out.push(CheckFailure {
            check: "interrupt".into(),
            expected: "the session to end with ERROR `interrupted` (then only DIFF_READY)".into(),
            actual: match last {
                None => "no ERROR `interrupted` event".into(),
                Some(_) => format!("events after it: {}", after.join(", ")),
            },
        });
    }
    if !leftover.is_empty() {
        out.push(CheckFailure {
            check: "interrupt".into(),
            expected: "no process of the session left in the container".into(),
            actual: leftover.iter().take(5).cloned().collect::<Vec<_>>().join("; "),
        });
    }
    if let Err(why) = tree {
        out.push(CheckFailure {
            check: "interrupt".into(),
            expected: "a working tree git can read (no lock left, objects whole)".into(),
            actual: why,
        });
    }
    out
}

/// The stub's request log for step `n`: raw text and parsed entries.
pub async fn stub_log<B: Backend>(backend: &B, container: &str, n: usize) -> (Vec<u8>, Vec<serde_json::Value>) {
    let out = backend
        .exec(
            container,
            &sh(
                format!("head -c {MAX_STUB_LOG} {DIR}/stub-{n}.jsonl"),
                Instant::now() + Duration::from_secs(30),
            ),
        )
        .await;
    let text = out.map(|o| o.stdout).unwrap_or_default();
    let entries = String::from_utf8_lossy(&text)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    (text, entries)
}

/// The working tree after an interrupt: no lock git left behind, a status git can compute, and
/// every object reachable.
pub const TREE_CHECK: &str = "if [ -e .git/index.lock ]; then echo 'git left .git/index.lock behind'; exit 1; fi; \
    git status --porcelain >/dev/null && git fsck --no-progress --connectivity-only >/dev/null";

/// A resumed session's checks: the CLI sent the earlier turns with its first request to the
/// model, and its events continue the earlier session id.
pub fn resume_checks(
    before: &Conversation,
    events: &[serde_json::Value],
    stub: &[serde_json::Value],
) -> Vec<CheckFailure> {
    let mut out = Vec::new();
    let first = stub.iter().find(|e| !e["history"].is_null());
    if first.is_none_or(|e| e["history"] != true) {
        out.push(CheckFailure {
            check: "resume".into(),
            expected: "the CLI to send the earlier turns of the conversation to the model".into(),
            actual: match first {
                None => "no request of the resumed session reached the model".into(),
                Some(_) => "its first request lacks the earlier prompt".into(),
            },
        });
    }
    let id = events
        .iter()
        .find(|e| e["type"] == "SESSION_STARTED")
        .and_then(|e| e["session_id"].as_str());
    if id != before.session_id.as_deref() {
        out.push(CheckFailure {
            check: "resume".into(),
            expected: format!(
                "events under the resumed session id {}",
                before.session_id.as_deref().unwrap_or("?")
            ),
            actual: format!("session id {}", id.unwrap_or("(no SESSION_STARTED)")),
        });
    }
    out
}

/// An MCP session's checks: each `mcp` turn reached the fixture with its arguments, and the
/// fixture's answer reached the model (in a tool result the CLI sent back).
pub fn mcp_checks(scenario: &crate::stub::Scenario, log: &[u8], stub: &[serde_json::Value]) -> Vec<CheckFailure> {
    use crate::runner::mcp;
    let calls = mcp::calls(log);
    let results: String = stub.iter().map(|e| e["tool_results"].to_string()).collect();
    let mut out = Vec::new();
    for turn in &scenario.turns {
        let crate::stub::Turn::Mcp { tool, arguments } = turn else {
            continue;
        };
        if !calls.iter().any(|c| &c.tool == tool && &c.arguments == arguments) {
            out.push(CheckFailure {
                check: "mcp".into(),
                expected: format!("a call of {tool} with {arguments} at the MCP fixture"),
                actual: match calls.first() {
                    None => "the fixture received no call".into(),
                    Some(_) => calls
                        .iter()
                        .map(|c| format!("{} {}", c.tool, c.arguments))
                        .collect::<Vec<_>>()
                        .join("; "),
                },
            });
            continue;
        }
        let answer = mcp::answer(arguments);
        // Tool results arrive as JSON text, so the answer may be escaped once more.
        let escaped = serde_json::to_string(&answer).expect("string serializes");
        if !results.contains(&answer) && !results.contains(escaped.trim_matches('"')) {
            out.push(CheckFailure {
                check: "mcp".into(),
                expected: format!("the fixture's answer `{answer}` to reach the model"),
                actual: "no tool result the CLI sent carries it".into(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(prompt: &str, turns: Vec<crate::stub::Turn>) -> SessionSpec {
        SessionSpec {
            provider: None,
            prompt: prompt.into(),
            scenario: crate::stub::Scenario { turns },
            approval: Default::default(),
            model: None,
            resume: None,
            interrupt: None,
        }
    }

    #[test]
    fn a_resumed_conversation_must_carry_the_earlier_turns_under_the_same_id() {
        use crate::stub::Turn;
        let first = spec(
            "Remember kiwi.",
            vec![Turn::Run("echo".into()), Turn::Say("ready".into())],
        );
        let events = vec![json!({"type": "SESSION_STARTED", "session_id": "s-1"})];
        let conv = Conversation::after(1, &first, &events, None);
        assert_eq!(
            (conv.calls, conv.markers.clone(), conv.home.as_str()),
            (1, vec!["Remember kiwi.".to_string()], "/tmp/canary-lab/home-1")
        );
        let good_stub = vec![json!({"auxiliary": true, "history": null}), json!({"history": true})];
        assert!(resume_checks(&conv, &events, &good_stub).is_empty());
        let forgot = resume_checks(
            &conv,
            &[json!({"type": "SESSION_STARTED", "session_id": "s-2"})],
            &[json!({"history": false})],
        );
        assert_eq!(forgot.len(), 2);
        assert_eq!(forgot[0].actual, "its first request lacks the earlier prompt");
        assert_eq!(forgot[1].actual, "session id s-2");
        assert_eq!(
            resume_checks(&conv, &events, &[])[0].actual,
            "no request of the resumed session reached the model"
        );
        // A second resume counts the calls of the whole conversation.
        let again = Conversation::after(
            2,
            &spec("Which word?", vec![Turn::Run("ls".into()), Turn::Say("kiwi".into())]),
            &events,
            Some(&conv),
        );
        assert_eq!(
            (again.calls, again.markers.len(), again.home.as_str()),
            (2, 2, "/tmp/canary-lab/home-1")
        );
    }

    #[test]
    fn an_mcp_call_must_reach_the_fixture_and_its_answer_the_model() {
        let scenario = crate::stub::Scenario {
            turns: vec![
                crate::stub::Turn::Mcp {
                    tool: "ticket_status".into(),
                    arguments: json!({"ticket": "LAB-7"}),
                },
                crate::stub::Turn::Say("green".into()),
            ],
        };
        let log = br#"{"ts":"t","tool":"ticket_status","arguments":{"ticket":"LAB-7"},"answer":"ticket LAB-7: status canary-green-5"}"#;
        let stub = vec![
            json!({"tool_results": [{"type": "function_call_output", "output": "{\"content\":[{\"text\":\"ticket LAB-7: status canary-green-5\"}]}"}]}),
        ];
        assert!(mcp_checks(&scenario, log, &stub).is_empty());
        let lost = mcp_checks(&scenario, log, &[json!({"tool_results": []})]);
        assert_eq!(
            lost[0].expected,
            "the fixture's answer `ticket LAB-7: status canary-green-5` to reach the model"
        );
        let wrong = br#"{"ts":"t","tool":"ticket_status","arguments":{"ticket":"LAB-8"},"answer":null}"#;
        assert_eq!(
            mcp_checks(&scenario, wrong, &stub)[0].actual,
            "ticket_status {\"ticket\":\"LAB-8\"}"
        );
        assert_eq!(
            mcp_checks(&scenario, b"", &stub)[0].actual,
            "the fixture received no call"
        );
    }

    #[test]
    fn an_interrupt_needs_a_terminal_event_no_leftover_and_a_readable_tree() {
        let ended = vec![
            json!({"type": "SESSION_STARTED"}),
            json!({"type": "ERROR", "kind": "interrupted"}),
            json!({"type": "DIFF_READY"}),
        ];
        assert!(interrupt_checks(&ended, &[], Ok(())).is_empty());
        let before = "1 sleep infinity\n40 canary-runner lab-stub --scenario x\n";
        let after = "1 sleep infinity\n40 canary-runner lab-stub --scenario x\n77 sleep 600\n";
        let left = new_processes(before, after);
        assert_eq!(left, vec!["77 sleep 600".to_string()]);
        let bad = interrupt_checks(&ended[..1], &left, Err("git left .git/index.lock behind".into()));
        let actual: Vec<&str> = bad.iter().map(|f| f.actual.as_str()).collect();
        assert_eq!(
            actual,
            vec![
                "no ERROR `interrupted` event",
                "77 sleep 600",
                "git left .git/index.lock behind"
            ]
        );
        let more = vec![
            json!({"type": "ERROR", "kind": "interrupted"}),
            json!({"type": "AGENT_MESSAGE"}),
        ];
        assert_eq!(
            interrupt_checks(&more, &[], Ok(()))[0].actual,
            "events after it: AGENT_MESSAGE"
        );
    }

    #[test]
    fn the_stop_button_wrapper_quotes_the_runner_and_escalates() {
        let argv = vec!["canary-runner".to_string(), "--prompt".into(), "it's long".into()];
        let w = interrupted(
            &argv,
            4,
            crate::suite::Interrupt {
                after_turn: 1,
                grace: Duration::from_secs(5),
            },
        );
        assert_eq!(w[..2], ["sh".to_string(), "-c".to_string()]);
        assert!(
            w[2].starts_with("'canary-runner' '--prompt' 'it'\\''s long' & pid=$!"),
            "{}",
            w[2]
        );
        assert!(w[2].contains("/tmp/canary-lab/stub-4.jsonl") && w[2].contains("-ge 1 ]"));
        assert!(w[2].contains("kill -INT $pid") && w[2].contains("[ $t -lt 50 ]") && w[2].contains("kill -TERM $pid"));
        let ok = std::process::Command::new("sh")
            .arg("-n")
            .arg("-c")
            .arg(&w[2])
            .status()
            .unwrap();
        assert!(ok.success(), "the wrapper is valid shell");
    }
}
