//! `claude -p --output-format stream-json --verbose --include-partial-messages` (seen:
//! 2.1.329). Usage is metered per message id from the streamed `message_start` (input) and
//! `message_delta` (final output) events: the usage on `assistant` lines repeats per content
//! block and is the message-start snapshot, so counting it would be wrong twice over.

use super::{Adapter, Meter, SessionInfo, changed, exit_checks, session_started, u64_at, unknown};
use crate::runner::inventory::{Contract, Feature, Rule};
use canary_contract::events::{Event, Usage};
use serde_json::Value;
use std::collections::{HashMap, HashSet};

const NAME: &str = "claude-stream-json";

/// What this adapter reads of `claude -p --output-format stream-json` and which flags the
/// runner passes it.
pub const CONTRACT: Contract = Contract {
    events: &[
        Rule {
            kind: "system:init",
            required: true,
            fields: &[("session_id", "string")],
        },
        Rule {
            kind: "result",
            required: true,
            fields: &[
                ("usage.input_tokens", "integer"),
                ("usage.output_tokens", "integer"),
                ("result", "string"),
            ],
        },
        Rule {
            kind: "stream_event/message_delta",
            required: true,
            fields: &[("event.usage.output_tokens", "integer")],
        },
        Rule {
            kind: "stream_event/message_start",
            required: false,
            fields: &[("event.message.usage.input_tokens", "integer")],
        },
    ],
    flags: &[
        "-p",
        "--output-format",
        "--verbose",
        "--include-partial-messages",
        "--model",
        "--allowedTools",
    ],
    help: &["--help"],
    // Checked in the lab (suites/session-features.yaml) from 2.1.329 on.
    features: &[(Feature::Resume, Some("2.1.329")), (Feature::Mcp, Some("2.1.329"))],
};

pub struct Claude {
    info: SessionInfo,
    session_id: Option<String>,
    meter: Meter,
    /// Input usage of the message being streamed, until its `message_delta`.
    open_message: Option<Usage>,
    saw_deltas: bool,
    metered_ids: HashSet<String>,
    commands: HashMap<String, String>,
    denied: HashSet<String>,
    cli_totals: Option<Usage>,
    result_seen: bool,
    messages: super::Messages,
}

impl Claude {
    pub fn new(info: SessionInfo) -> Claude {
        Claude {
            info,
            session_id: None,
            meter: Meter::default(),
            open_message: None,
            saw_deltas: false,
            metered_ids: HashSet::new(),
            commands: HashMap::new(),
            denied: HashSet::new(),
            cli_totals: None,
            result_seen: false,
            messages: Default::default(),
        }
    }

    fn input_usage(u: &Value) -> Option<Usage> {
        let fresh = u64_at(u, "input_tokens")?;
        let read = u64_at(u, "cache_read_input_tokens").unwrap_or(0);
        let created = u64_at(u, "cache_creation_input_tokens").unwrap_or(0);
        Some(Usage {
            input_tokens: fresh + read + created,
            cached_input_tokens: read,
            output_tokens: 0,
        })
    }

    fn block(&mut self, request_id: &str, action: &str, reason: &str) -> Vec<Event> {
        self.denied.insert(request_id.to_string());
        let risk = crate::runner::policy::risk(action).unwrap_or("needs approval under the CLI's permission mode");
        vec![
            Event::ApprovalRequired {
                request_id: request_id.into(),
                action: action.into(),
                risk: risk.into(),
            },
            Event::ActionBlocked {
                request_id: request_id.into(),
                reason: reason.into(),
            },
        ]
    }
}

/// `Exit code N` opens Claude Code's tool result for a failed command.
fn exit_code(content: &Value, is_error: bool) -> Option<i64> {
    let text = match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    };
    match text
        .strip_prefix("Exit code ")
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
    {
        Some(n) => Some(n),
        None => Some(if is_error { 1 } else { 0 }),
    }
}

impl Claude {
    /// A `stream_event` line: usage per message, counted once per message id.
    fn on_stream_event(&mut self, ev: &serde_json::Value, line: &str) -> Vec<Event> {
        match ev["type"].as_str().unwrap_or_default() {
            "message_start" => {
                let msg = &ev["message"];
                let id = msg["id"].as_str().unwrap_or_default().to_string();
                self.open_message = if self.metered_ids.insert(id) {
                    Self::input_usage(&msg["usage"])
                } else {
                    None
                };
                if self.open_message.is_none() && msg["usage"].is_object() && !msg["usage"]["input_tokens"].is_u64() {
                    return vec![changed(NAME, "message_start usage lacks input_tokens", line)];
                }
                Vec::new()
            }
            "message_delta" => {
                self.saw_deltas = true;
                let Some(out) = u64_at(&ev["usage"], "output_tokens") else {
                    return vec![changed(NAME, "message_delta usage lacks output_tokens", line)];
                };
                let Some(mut delta) = self.open_message.take() else {
                    return Vec::new();
                };
                delta.output_tokens = out;
                let id = self.session_id.clone().unwrap_or_default();
                vec![self.meter.tick(&id, delta, None)]
            }
            "content_block_start" | "content_block_delta" | "content_block_stop" | "message_stop" | "ping" => {
                Vec::new()
            }
            _ => vec![unknown(NAME, "stream event type", line)],
        }
    }

    /// The `result` line: the CLI's own totals, denials it did not announce, the final text.
    fn on_result(&mut self, v: &serde_json::Value, line: &str) -> Vec<Event> {
        self.result_seen = true;
        let mut out = Vec::new();
        match Self::input_usage(&v["usage"]) {
            Some(mut totals) => {
                totals.output_tokens = u64_at(&v["usage"], "output_tokens").unwrap_or(0);
                self.cli_totals = Some(totals);
            }
            None => out.push(changed(NAME, "result has no usage", line)),
        }
        // Denials the stream did not announce are still blocks the platform must see.
        for d in v["permission_denials"].as_array().into_iter().flatten() {
            let id = d["tool_use_id"].as_str().unwrap_or_default().to_string();
            if !self.denied.contains(&id) {
                let action = d["tool_input"]["command"].as_str().unwrap_or("tool").to_string();
                out.extend(self.block(&id, &action, "listed in permission_denials"));
            }
        }
        let is_error = v["is_error"].as_bool() == Some(true);
        if !is_error {
            match v["result"].as_str() {
                Some(text) => out.extend(self.messages.finish("claude", Some(text), false)),
                None => out.push(changed(NAME, "result has no result text", line)),
            }
        }
        if is_error {
            out.push(Event::error(
                "cli_result_error",
                v["result"]
                    .as_str()
                    .unwrap_or("claude reported an error result")
                    .to_string(),
            ));
        }
        out
    }
}

impl Adapter for Claude {
    fn name(&self) -> &'static str {
        NAME
    }

    fn on_object(&mut self, v: &Value, line: &str) -> Vec<Event> {
        match (v["type"].as_str().unwrap_or_default(), v["subtype"].as_str()) {
            ("system", Some("init")) => {
                let Some(id) = v["session_id"].as_str() else {
                    return vec![changed(NAME, "system/init has no session_id", line)];
                };
                self.session_id = Some(id.to_string());
                vec![session_started(
                    &self.info,
                    NAME,
                    canary_contract::Provider::ClaudeCode.name(),
                    id,
                    v["claude_code_version"].as_str(),
                    v["model"].as_str(),
                )]
            }
            ("system", Some("permission_denied")) => {
                let id = v["tool_use_id"].as_str().unwrap_or_default().to_string();
                let action = self
                    .commands
                    .get(&id)
                    .cloned()
                    .unwrap_or_else(|| v["tool_name"].as_str().unwrap_or("tool").to_string());
                let reason = v["decision_reason"]
                    .as_str()
                    .or(v["message"].as_str())
                    .unwrap_or("denied by the CLI's permission mode")
                    .to_string();
                self.block(&id, &action, &reason)
            }
            ("system", Some("status")) => Vec::new(),
            ("system", _) => vec![unknown(NAME, "system subtype", line)],
            ("stream_event", _) => self.on_stream_event(&v["event"], line),
            ("assistant", _) => {
                let mut out = Vec::new();
                for block in v["message"]["content"].as_array().into_iter().flatten() {
                    if block["type"] == "text" {
                        out.extend(self.messages.say(block["text"].as_str().unwrap_or_default()));
                    }
                    if block["type"] == "tool_use" {
                        let cmd = block["input"]["command"].as_str().map(String::from).unwrap_or_else(|| {
                            format!("{} {}", block["name"].as_str().unwrap_or("tool"), block["input"])
                        });
                        self.commands
                            .insert(block["id"].as_str().unwrap_or_default().to_string(), cmd);
                    }
                }
                out
            }
            ("user", _) => v["message"]["content"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|b| b["type"] == "tool_result")
                .filter_map(|b| {
                    let id = b["tool_use_id"].as_str().unwrap_or_default();
                    if self.denied.contains(id) {
                        return None;
                    }
                    let command = self.commands.get(id)?.clone();
                    Some(Event::CommandExited {
                        command,
                        exit_code: exit_code(&b["content"], b["is_error"].as_bool().unwrap_or(false)),
                    })
                })
                .collect(),
            ("result", _) => self.on_result(v, line),
            _ => vec![unknown(NAME, "event type", line)],
        }
    }

    fn on_exit(&mut self, exit_code: Option<i32>) -> Vec<Event> {
        let usage = if !self.result_seen {
            Some(Event::error("no_result", "claude printed no result event"))
        } else if !self.saw_deltas {
            Some(Event::error(
                "usage_unmetered",
                "claude streamed no message_delta events (run it with --include-partial-messages): per-turn output usage is unknown",
            ))
        } else {
            None
        };
        exit_checks("claude", "system/init", self.session_id.is_some(), usage, exit_code)
    }

    fn cli_totals(&self) -> Option<Usage> {
        self.cli_totals
    }
}
