//! `codex exec --json` (seen: 0.163.0). Usage arrives as cumulative thread totals on
//! `turn.completed`; ticks are the differences. Exec mode never asks for approval, and what its
//! own policy rejects appears only in what it tells the model: the runner's policy must act.

use super::{Adapter, Meter, SessionInfo, changed, exit_checks, session_started, u64_at, unknown};
use crate::runner::inventory::{Contract, Feature, Rule};
use canary_contract::events::{Event, Usage};
use serde_json::Value;

const NAME: &str = "codex-exec-json";

/// What this adapter reads of `codex exec --json` and which flags the runner passes it.
pub const CONTRACT: Contract = Contract {
    events: &[
        Rule {
            kind: "thread.started",
            required: true,
            fields: &[("thread_id", "string")],
        },
        Rule {
            kind: "turn.completed",
            required: true,
            fields: &[
                ("usage.input_tokens", "integer"),
                ("usage.cached_input_tokens", "integer"),
                ("usage.output_tokens", "integer"),
            ],
        },
        Rule {
            kind: "item.completed/agent_message",
            required: false,
            fields: &[("item.text", "string")],
        },
        Rule {
            kind: "item.completed/command_execution",
            required: false,
            fields: &[("item.command", "string")],
        },
    ],
    flags: &["--json", "--skip-git-repo-check", "--sandbox"],
    help: &["exec", "--help"],
    // Checked in the lab (suites/session-features.yaml) from 0.133.0, the oldest wheel, on.
    features: &[(Feature::Resume, Some("0.133.0")), (Feature::Mcp, Some("0.133.0"))],
};

pub struct Codex {
    info: SessionInfo,
    session_id: Option<String>,
    meter: Meter,
    cli_totals: Option<Usage>,
    messages: super::Messages,
    failed: bool,
}

impl Codex {
    pub fn new(info: SessionInfo) -> Codex {
        Codex {
            info,
            session_id: None,
            meter: Meter::default(),
            cli_totals: None,
            messages: Default::default(),
            failed: false,
        }
    }
}

impl Codex {
    /// A completed item: a command, a message, or an error that does not end the turn.
    fn on_item(&mut self, item: &serde_json::Value, line: &str) -> Vec<Event> {
        match item["type"].as_str().unwrap_or_default() {
            "command_execution" => match item["command"].as_str() {
                Some(cmd) => vec![Event::CommandExited {
                    command: cmd.into(),
                    exit_code: item["exit_code"].as_i64(),
                }],
                None => vec![changed(NAME, "command_execution has no command", line)],
            },
            // Error items do not end the turn (Codex carries on): a warning, still visible.
            "error" => vec![Event::error(
                "cli_warning",
                item["message"]
                    .as_str()
                    .unwrap_or("codex reported an error item")
                    .to_string(),
            )],
            "agent_message" => match item["text"].as_str() {
                Some(text) => self.messages.say(text),
                None => vec![changed(NAME, "agent_message has no text", line)],
            },
            "reasoning" | "file_change" | "todo_list" | "web_search" | "mcp_tool_call" => Vec::new(),
            _ => vec![unknown(NAME, "item type", line)],
        }
    }

    /// A finished turn: Codex's usage is cumulative, so the meter ticks by the difference.
    fn on_turn_completed(&mut self, u: &serde_json::Value, line: &str) -> Vec<Event> {
        let (Some(input), Some(cached), Some(output)) = (
            u64_at(u, "input_tokens"),
            u64_at(u, "cached_input_tokens"),
            u64_at(u, "output_tokens"),
        ) else {
            return vec![changed(
                NAME,
                "turn.completed lacks usage {input_tokens, cached_input_tokens, output_tokens}",
                line,
            )];
        };
        let cumulative = Usage {
            input_tokens: input,
            cached_input_tokens: cached,
            output_tokens: output,
        };
        let before = self.meter.totals;
        let (Some(di), Some(dc), Some(dout)) = (
            input.checked_sub(before.input_tokens),
            cached.checked_sub(before.cached_input_tokens),
            output.checked_sub(before.output_tokens),
        ) else {
            return vec![changed(
                NAME,
                "usage totals went down: they are no longer cumulative",
                line,
            )];
        };
        self.cli_totals = Some(cumulative);
        let id = self.session_id.clone().unwrap_or_default();
        vec![self.meter.tick(
            &id,
            Usage {
                input_tokens: di,
                cached_input_tokens: dc,
                output_tokens: dout,
            },
            None,
        )]
    }
}

impl Adapter for Codex {
    fn name(&self) -> &'static str {
        NAME
    }

    fn on_object(&mut self, v: &Value, line: &str) -> Vec<Event> {
        let kind = v["type"].as_str().unwrap_or_default();
        match kind {
            "thread.started" => match v["thread_id"].as_str() {
                Some(id) => {
                    self.session_id = Some(id.to_string());
                    vec![session_started(
                        &self.info,
                        NAME,
                        canary_contract::Provider::Codex.name(),
                        id,
                        None,
                        None,
                    )]
                }
                None => vec![changed(NAME, "thread.started has no thread_id", line)],
            },
            "turn.started" | "item.started" | "item.updated" => Vec::new(),
            "item.completed" => self.on_item(&v["item"], line),
            "turn.completed" => self.on_turn_completed(&v["usage"], line),
            "turn.failed" => {
                self.failed = true;
                vec![Event::error(
                    "turn_failed",
                    v["error"]["message"].as_str().unwrap_or("turn failed").to_string(),
                )]
            }
            "error" => vec![Event::error(
                "cli_error",
                v["message"].as_str().unwrap_or("codex reported an error").to_string(),
            )],
            _ => vec![unknown(NAME, "event type", line)],
        }
    }

    fn on_exit(&mut self, exit_code: Option<i32>) -> Vec<Event> {
        let usage = self
            .cli_totals
            .is_none()
            .then(|| Event::error("no_usage", "codex printed no turn.completed with usage"));
        let failed = self.failed || exit_code != Some(0) || usage.is_some();
        let mut out = self
            .messages
            .finish(canary_contract::Provider::Codex.name(), None, failed);
        out.extend(exit_checks(
            canary_contract::Provider::Codex.name(),
            "thread.started",
            self.session_id.is_some(),
            usage,
            exit_code,
        ));
        out
    }

    fn cli_totals(&self) -> Option<Usage> {
        self.cli_totals
    }
}
