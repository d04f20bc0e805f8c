//! Runner Contract v1 events (docs/runner-contract.md): what any runner writes, one JSON
//! object per line, and what canary suites assert on.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Token counts. `input_tokens` counts every input token, cached ones included.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Usage {
    pub input_tokens: u64,
    pub cached_input_tokens: u64,
    pub output_tokens: u64,
}

impl Usage {
    pub fn add(&mut self, o: &Usage) {
        self.input_tokens += o.input_tokens;
        self.cached_input_tokens += o.cached_input_tokens;
        self.output_tokens += o.output_tokens;
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Event {
    SessionStarted {
        session_id: String,
        runner_version: String,
        adapter: String,
        provider: String,
        provider_version: String,
        model: String,
    },
    /// One per model turn at least; `seq` strictly increases; deltas sum to `totals`.
    UsageTick {
        session_id: String,
        seq: u64,
        input_tokens: u64,
        cached_input_tokens: u64,
        output_tokens: u64,
        cost_usd: Option<f64>,
        totals: Usage,
    },
    ApprovalRequired {
        request_id: String,
        action: String,
        risk: String,
    },
    ActionBlocked {
        request_id: String,
        reason: String,
    },
    ActionApproved {
        request_id: String,
    },
    CommandExited {
        command: String,
        exit_code: Option<i64>,
    },
    DiffReady {
        files: Vec<String>,
        patch: String,
    },
    PrOpened {
        url: String,
        draft: bool,
        branch: String,
    },
    /// What the agent said: each message as the CLI reports it, and its last word once more
    /// with `final: true` (a blank final answer is an ERROR instead).
    AgentMessage {
        text: String,
        #[serde(rename = "final")]
        is_final: bool,
    },
    Heartbeat {
        versions: std::collections::BTreeMap<String, String>,
        capabilities: Vec<String>,
    },
    /// Anything unexpected: a CLI that failed, output that is not JSON, an unknown or changed
    /// event shape. Never dropped silently.
    Error {
        kind: String,
        message: String,
    },
}

/// Every `kind` an ERROR event can carry: what the runner, its adapters, its pull-request step
/// and the lab emit. Suites may name only these (`ERROR:timeout`); a test keeps the list whole.
pub const ERROR_KINDS: &[&str] = &[
    "bad_argument",
    "blank_result",
    "changed_event",
    "cli_error",
    "cli_exit",
    "cli_missing",
    "cli_result_error",
    "cli_warning",
    "error",
    "interrupted",
    "model_unreachable",
    "no_commit",
    "no_diff",
    "no_result",
    "no_session",
    "no_usage",
    "not_an_object",
    "not_json",
    "nothing_to_propose",
    "pr_failed",
    "push_failed",
    "timeout",
    "turn_failed",
    "unknown_event",
    "usage_unmetered",
];

impl Event {
    /// Every event type's name (`SESSION_STARTED`, ...), read off the type's own JSON Schema, so
    /// a new variant is known to suites the moment it exists; no list is kept by hand.
    pub fn types() -> &'static [String] {
        static TYPES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
        TYPES.get_or_init(|| {
            let schema = serde_json::to_value(schemars::schema_for!(Event)).expect("schema serializes");
            let mut out: Vec<String> = schema["oneOf"]
                .as_array()
                .expect("a tagged enum's schema is a oneOf")
                .iter()
                .filter_map(|v| {
                    let t = &v["properties"]["type"];
                    t["const"].as_str().or_else(|| t["enum"][0].as_str()).map(String::from)
                })
                .collect();
            out.dedup();
            out
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Event::SessionStarted { .. } => "SESSION_STARTED",
            Event::UsageTick { .. } => "USAGE_TICK",
            Event::ApprovalRequired { .. } => "APPROVAL_REQUIRED",
            Event::ActionBlocked { .. } => "ACTION_BLOCKED",
            Event::ActionApproved { .. } => "ACTION_APPROVED",
            Event::CommandExited { .. } => "COMMAND_EXITED",
            Event::DiffReady { .. } => "DIFF_READY",
            Event::PrOpened { .. } => "PR_OPENED",
            Event::AgentMessage { .. } => "AGENT_MESSAGE",
            Event::Heartbeat { .. } => "HEARTBEAT",
            Event::Error { .. } => "ERROR",
        }
    }

    pub fn error(kind: &str, message: impl Into<String>) -> Event {
        Event::Error {
            kind: kind.into(),
            message: message.into(),
        }
    }
}

/// Sum of a session's USAGE_TICK deltas vs the CLI's own final totals: `Err` names the
/// difference (double counting shows as ticks above the totals).
pub fn reconcile(events: &[Event], cli_totals: &Usage) -> Result<Usage, String> {
    let mut sum = Usage::default();
    let mut last_seq = None;
    for e in events {
        if let Event::UsageTick {
            seq,
            input_tokens,
            cached_input_tokens,
            output_tokens,
            ..
        } = e
        {
            if last_seq.is_some_and(|l| *seq <= l) {
                return Err(format!(
                    "USAGE_TICK seq {seq} does not increase (previous {})",
                    last_seq.unwrap_or_default()
                ));
            }
            last_seq = Some(*seq);
            sum.add(&Usage {
                input_tokens: *input_tokens,
                cached_input_tokens: *cached_input_tokens,
                output_tokens: *output_tokens,
            });
        }
    }
    if last_seq.is_none() {
        return Err("no USAGE_TICK events".into());
    }
    if sum != *cli_totals {
        return Err(format!(
            "USAGE_TICK deltas sum to {sum:?}, the CLI reported {cli_totals:?}"
        ));
    }
    Ok(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The derived list names every variant, exactly as it serializes.
    #[test]
    fn every_event_type_is_known_by_its_wire_name() {
        let samples = [
            Event::error("timeout", "x"),
            Event::AgentMessage {
                text: "hi".into(),
                is_final: true,
            },
            Event::ActionApproved { request_id: "r".into() },
        ];
        for e in &samples {
            let wire = serde_json::to_value(e).unwrap();
            assert_eq!(wire["type"], e.name());
            assert!(Event::types().iter().any(|t| t == e.name()), "{}", e.name());
        }
        assert_eq!(Event::types().len(), 11, "{:?}", Event::types());
        assert!(Event::types().iter().any(|t| t == "AGENT_MESSAGE"));
    }
}
