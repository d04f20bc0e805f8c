//! The session features a platform relies on, with the real CLIs in Docker: a conversation
//! resumed with each CLI's own mechanism, a tool served over MCP by the lab's fixture, and a
//! session stopped while it runs; and what each CLI sends to the model, recorded as its request
//! contract.

use crate::helpers::{Canary, require_lab, two_cli_build};
use crate::registry::{Backend, fresh};

fn case<'a>(report: &'a serde_json::Value, provider: &str) -> &'a serde_json::Value {
    report["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"].as_str().unwrap().ends_with(&format!("--{provider}")))
        .unwrap_or_else(|| panic!("no {provider} case: {report:#}"))
}

fn step<'a>(case: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    case["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name}: {case:#}"))
}

fn lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn docker_resume_mcp_and_interrupt_pass_for_both_clis() {
    require_lab();
    let build = two_cli_build();
    let image = build["reference"].as_str().unwrap();
    let reg = fresh(Backend::Sqlite);
    let out = Canary::new()
        .args([
            "--registry",
            &reg.url,
            "run",
            "--suite",
            "suites/session-features.yaml",
            "--image",
            image,
            "--json",
        ])
        .run()
        .code(0);
    let report = out.json();
    let run = out.run_dir();
    for provider in ["codex", "claude-code"] {
        let c = case(&report, provider);
        assert_eq!(c["status"], "passed", "{provider}: {c:#}");
        let dir = run.join(c["artifacts"].as_str().unwrap());

        // Resume: the second session carries the first one's prompt and continues its id.
        let first = lines(&dir.join("steps/01-first-turn.stdout"));
        let second = lines(&dir.join("steps/02-resumed-conversation.stdout"));
        let id = |events: &[serde_json::Value]| {
            events.iter().find(|e| e["type"] == "SESSION_STARTED").unwrap()["session_id"].clone()
        };
        assert_eq!(id(&first), id(&second), "{provider}: one conversation");
        let resumed = lines(&dir.join("steps/02-resumed-conversation.stub.jsonl"));
        assert!(resumed.iter().any(|e| e["history"] == true), "{provider}: {resumed:?}");

        // MCP: the fixture got the scenario's arguments, and the model got its answer.
        let calls = lines(&dir.join("steps/03-tool-over-mcp.mcp.jsonl"));
        assert_eq!(calls[0]["tool"], "ticket_status", "{provider}");
        assert_eq!(
            calls[0]["arguments"],
            serde_json::json!({"ticket": "LAB-7"}),
            "{provider}"
        );
        let stub = std::fs::read_to_string(dir.join("steps/03-tool-over-mcp.stub.jsonl")).unwrap();
        assert!(
            stub.contains("canary-green-5"),
            "{provider}: the answer reached the model"
        );

        // Interrupt: a terminal ERROR interrupted, then only the diff; nothing left running.
        let stopped = lines(&dir.join("steps/04-stopped-while-it-runs.stdout"));
        let last: Vec<&str> = stopped
            .iter()
            .rev()
            .take(2)
            .map(|e| e["type"].as_str().unwrap())
            .collect();
        assert_eq!(last, ["DIFF_READY", "ERROR"], "{provider}: {stopped:?}");
        assert_eq!(stopped[stopped.len() - 2]["kind"], "interrupted", "{provider}");
        assert_eq!(step(c, "stopped while it runs")["status"], "passed", "{provider}");

        // What the CLI sent is the case's request contract: its endpoint, tools and headers.
        let requests = &c["inventory"]["requests"];
        let endpoint = requests["endpoints"][0].as_str().unwrap();
        let (route, shell) = match provider {
            "codex" => ("POST /v1/responses (openai_responses)", "exec_command"),
            _ => ("POST /v1/messages (anthropic_messages)", "Bash"),
        };
        assert_eq!(endpoint, route, "{provider}: {requests:#}");
        assert_eq!(requests["tools"][shell]["kind"], "function", "{provider}");
        assert_eq!(requests["tools"][shell]["schema_hash"].as_str().unwrap().len(), 64);
        assert!(requests["headers"]["user-agent"].is_array(), "{provider}: {requests:#}");
        assert!(
            !requests.to_string().contains("authorization"),
            "no secret header is kept"
        );
    }

    // The registry keeps the request contracts with the build's inventory: compared with itself,
    // nothing changed.
    let drift = Canary::new()
        .args(["--registry", &reg.url, "drift", image, "--json"])
        .run()
        .code(0)
        .json();
    assert_eq!(drift["drift"], false, "{drift:#}");
}

/// A real Claude Code older than the adapter's contract for resume and MCP (2.1.321, from SDK
/// 0.2.180): those steps are skipped with why, in the report and on the terminal, never
/// passed silently; the steps it can take (a session, an interrupt) still run and pass.
#[test]
fn docker_a_cli_older_than_a_feature_skips_its_steps_saying_why() {
    require_lab();
    let build = Canary::new()
        .args(["images", "build", "--provider", "claude-code@sdk-0.2.180", "--json"])
        .run()
        .code(0)
        .json();
    assert_eq!(
        build["version_output"]["claude-code"], "2.1.321 (Claude Code)",
        "{build}"
    );
    let reg = fresh(Backend::Sqlite);
    let ran = Canary::new()
        .args(["--registry", &reg.url, "run", "-s", "suites/session-features.yaml"])
        .args(["--image", build["reference"].as_str().unwrap(), "--json"])
        .env("CI", "true")
        .run();
    let terminal = ran.stderr();
    let report = ran.code(0).json();
    let c = case(&report, "claude-code");
    assert_eq!(c["status"], "passed", "{c:#}");
    for (name, feature) in [("resumed conversation", "resume"), ("tool over MCP", "mcp")] {
        let s = step(c, name);
        let why = format!(
            "skipped: {feature} unsupported in claude-code 2.1.321 (the adapter's contract has it from 2.1.329)"
        );
        assert_eq!(
            (s["status"].as_str(), s["note"].as_str()),
            (Some("skipped"), Some(why.as_str())),
            "{s:#}"
        );
        assert!(terminal.contains(&format!("step `{name}` {why}")), "{terminal}");
    }
    for name in ["first turn", "stopped while it runs", "the tree is intact"] {
        assert_eq!(step(c, name)["status"], "passed", "{c:#}");
    }
}
