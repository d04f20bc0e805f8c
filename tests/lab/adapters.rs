//! Adapters over recorded real output: what each CLI printed becomes the right Runner Contract
//! events, usage reconciles with the CLI's own totals, and drift becomes ERROR events.

use crate::helpers::root;
use canary::runner::adapters::{Adapter, SessionInfo, claude::Claude, codex::Codex, gemini::Gemini, replay};
use canary::runner::events::{Event, Usage, reconcile};

fn info() -> SessionInfo {
    SessionInfo {
        runner_version: "0.1.0".into(),
        provider_version: "test".into(),
        model: "m".into(),
    }
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(root().join("tests/fixtures/cli-output").join(name)).unwrap()
}

fn names(events: &[Event]) -> Vec<&'static str> {
    events.iter().map(Event::name).collect()
}

fn errors(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| {
            if let Event::Error { kind, message } = e {
                Some(format!("{kind}: {message}"))
            } else {
                None
            }
        })
        .collect()
}

const EDIT_TOTALS: Usage = Usage {
    input_tokens: 3300,
    cached_input_tokens: 1600,
    output_tokens: 123,
};

#[test]
fn codex_edit_session() {
    let mut a = Codex::new(info());
    let events = replay(&mut a, &fixture("codex-0.163.0-edit.jsonl"), Some(0));
    assert_eq!(
        names(&events),
        [
            "SESSION_STARTED",
            "ERROR",
            "COMMAND_EXITED",
            "COMMAND_EXITED",
            "AGENT_MESSAGE",
            "USAGE_TICK",
            "AGENT_MESSAGE"
        ]
    );
    assert!(
        matches!(events.last(), Some(Event::AgentMessage { is_final: true, text }) if !text.trim().is_empty()),
        "the final answer closes the session: {:?}",
        events.last()
    );
    assert_eq!(
        errors(&events),
        [
            "cli_warning: Model metadata for `gpt-5` not found. Defaulting to fallback metadata; this can degrade performance and cause issues."
        ]
    );
    assert!(
        matches!(&events[2], Event::CommandExited { command, exit_code: Some(0) } if command == "/bin/bash -lc 'echo canary > out.txt'")
    );
    assert_eq!(a.cli_totals(), Some(EDIT_TOTALS));
    assert_eq!(reconcile(&events, &a.cli_totals().unwrap()), Ok(EDIT_TOTALS));
}

/// Codex 0.163 refuses `rm -rf` itself and says so only to the model: nothing on its stream.
/// This pins that gap; the runner's own policy is what must report the block.
#[test]
fn codex_hides_its_own_rejections() {
    let mut a = Codex::new(info());
    let events = replay(&mut a, &fixture("codex-0.163.0-risky.jsonl"), Some(0));
    let commands: Vec<_> = events
        .iter()
        .filter(|e| matches!(e, Event::CommandExited { .. }))
        .collect();
    assert_eq!(commands.len(), 1, "the rejected rm -rf leaves no event: {events:#?}");
    assert!(matches!(commands[0], Event::CommandExited { exit_code: Some(1), .. }));
    assert!(!events.iter().any(|e| matches!(e, Event::ActionBlocked { .. })));
}

#[test]
fn claude_edit_session_meters_each_message_once() {
    let mut a = Claude::new(info());
    let events = replay(&mut a, &fixture("claude-2.1.329-edit-partial.jsonl"), Some(0));
    assert!(errors(&events).is_empty(), "{:?}", errors(&events));
    assert!(matches!(&events[0], Event::SessionStarted { provider_version, .. } if provider_version == "2.1.329"));
    let ticks: Vec<_> = events.iter().filter(|e| matches!(e, Event::UsageTick { .. })).collect();
    assert_eq!(ticks.len(), 3, "one tick per model turn");
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, Event::CommandExited { exit_code: Some(0), .. }))
            .count(),
        2
    );
    assert_eq!(a.cli_totals(), Some(EDIT_TOTALS));
    assert_eq!(reconcile(&events, &EDIT_TOTALS), Ok(EDIT_TOTALS));
}

#[test]
fn claude_without_partial_messages_says_usage_is_unmetered() {
    let mut a = Claude::new(info());
    let events = replay(&mut a, &fixture("claude-2.1.329-edit.jsonl"), Some(0));
    assert!(
        errors(&events).iter().any(|e| e.starts_with("usage_unmetered")),
        "{events:#?}"
    );
    assert!(reconcile(&events, &EDIT_TOTALS).is_err(), "no ticks, no reconciliation");
}

#[test]
fn claude_denials_become_approval_required_then_blocked() {
    let mut a = Claude::new(info());
    let events = replay(&mut a, &fixture("claude-2.1.329-denied.jsonl"), Some(0));
    let blocked: Vec<_> = events
        .iter()
        .filter(|e| matches!(e, Event::ApprovalRequired { .. } | Event::ActionBlocked { .. }))
        .collect();
    assert_eq!(blocked.len(), 4, "{blocked:#?}");
    assert!(
        matches!(blocked[2], Event::ApprovalRequired { action, risk, .. } if action == "rm -rf .git" && risk == "deletes .git")
    );
    assert!(
        matches!(blocked[3], Event::ActionBlocked { reason, .. } if reason.contains(".git which is a sensitive file"))
    );
    assert!(
        !events.iter().any(|e| matches!(e, Event::CommandExited { .. })),
        "denied commands did not run"
    );
}

#[test]
fn gemini_documented_session() {
    let mut a = Gemini::new(info());
    let events = replay(&mut a, &fixture("gemini-documented.jsonl"), Some(0));
    assert_eq!(
        names(&events),
        [
            "SESSION_STARTED",
            "COMMAND_EXITED",
            "APPROVAL_REQUIRED",
            "ACTION_BLOCKED",
            "AGENT_MESSAGE",
            "USAGE_TICK",
            "AGENT_MESSAGE"
        ]
    );
    assert_eq!(reconcile(&events, &EDIT_TOTALS), Ok(EDIT_TOTALS));
}

/// Known drift (the reason the canary exists) turns into ERROR events, never a silent pass.
#[test]
fn format_drift_becomes_error_events() {
    let mut codex = Codex::new(info());
    // Codex before 0.44 said `item_type` / `assistant_message`.
    let old = r#"{"type":"item.completed","item":{"id":"i","item_type":"assistant_message","text":"hi"}}"#;
    assert!(errors(&codex.on_line(old))[0].starts_with("unknown_event"));
    let renamed_usage = r#"{"type":"turn.completed","usage":{"prompt_tokens":1,"completion_tokens":2}}"#;
    assert!(errors(&codex.on_line(renamed_usage))[0].starts_with("changed_event"));
    assert!(errors(&codex.on_line("Error: stream disconnected"))[0].starts_with("not_json"));
    let mut claude = Claude::new(info());
    assert!(errors(&claude.on_line(r#"{"type":"system","subtype":"hook_started"}"#))[0].starts_with("unknown_event"));
    assert!(
        errors(&claude.on_line(r#"{"type":"result","subtype":"success","is_error":false,"total_cost":0.1}"#))
            .iter()
            .any(|e| e.starts_with("changed_event"))
    );
}

#[test]
fn reconciliation_catches_double_counting_and_bad_sequences() {
    let tick = |seq, input| Event::UsageTick {
        session_id: "s".into(),
        seq,
        input_tokens: input,
        cached_input_tokens: 0,
        output_tokens: 0,
        cost_usd: None,
        totals: Usage::default(),
    };
    let totals = Usage {
        input_tokens: 100,
        cached_input_tokens: 0,
        output_tokens: 0,
    };
    assert!(reconcile(&[tick(1, 100)], &totals).is_ok());
    assert!(
        reconcile(&[tick(1, 100), tick(2, 100)], &totals)
            .unwrap_err()
            .contains("the CLI reported")
    );
    assert!(
        reconcile(&[tick(2, 50), tick(1, 50)], &totals)
            .unwrap_err()
            .contains("does not increase")
    );
}

#[test]
fn a_blank_final_answer_is_an_error_for_every_cli() {
    // Claude Code: a stream-json `result` whose text is blank (a real regression class).
    let blank = fixture("claude-2.1.329-edit-partial.jsonl")
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            if v["type"] == "result" {
                v["result"] = serde_json::json!("  ");
            }
            v.to_string()
        })
        .collect::<Vec<_>>()
        .join("\n");
    let events = replay(&mut Claude::new(info()), &blank, Some(0));
    assert!(
        errors(&events).iter().any(|e| e.starts_with("blank_result")),
        "{:?}",
        errors(&events)
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::AgentMessage { is_final: true, .. }))
    );
    let good = replay(
        &mut Claude::new(info()),
        &fixture("claude-2.1.329-edit-partial.jsonl"),
        Some(0),
    );
    assert!(
        good.iter()
            .any(|e| matches!(e, Event::AgentMessage { is_final: true, text } if !text.trim().is_empty()))
    );
    // Codex: a session whose agent never says anything.
    let silent = fixture("codex-0.163.0-edit.jsonl")
        .lines()
        .filter(|l| !l.contains("\"agent_message\""))
        .collect::<Vec<_>>()
        .join("\n");
    let events = replay(&mut Codex::new(info()), &silent, Some(0));
    assert!(
        errors(&events).iter().any(|e| e.starts_with("blank_result")),
        "{:?}",
        errors(&events)
    );
}
