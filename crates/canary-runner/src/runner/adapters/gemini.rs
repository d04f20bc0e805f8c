//! `gemini -p -o stream-json` (from the documented format; npm-only, not run here). Usage comes
//! only in the final `result.stats`, so a session has exactly one tick.

use super::{Adapter, Meter, SessionInfo, changed, exit_checks, session_started, u64_at, unknown};
use crate::runner::inventory::{Contract, Feature, Rule};
use canary_contract::events::{Event, Usage};
use serde_json::Value;
use std::collections::HashMap;

const NAME: &str = "gemini-stream-json";

/// What this adapter reads of `gemini -o stream-json` and which flags the runner passes it.
pub const CONTRACT: Contract = Contract {
    events: &[
        Rule {
            kind: "init",
            required: true,
            fields: &[("session_id", "string")],
        },
        Rule {
            kind: "result",
            required: true,
            fields: &[("stats.input_tokens", "integer"), ("stats.output_tokens", "integer")],
        },
    ],
    flags: &["-p", "-o", "-m", "--approval-mode"],
    help: &["--help"],
    // The lab cannot run Gemini CLI (npm only): nothing beyond single sessions is claimed.
    features: &[(Feature::Resume, None), (Feature::Mcp, None)],
};

pub struct Gemini {
    info: SessionInfo,
    session_id: Option<String>,
    meter: Meter,
    commands: HashMap<String, String>,
    cli_totals: Option<Usage>,
    messages: super::Messages,
    /// Assistant text since the last tool call.
    pending: String,
}

impl Gemini {
    pub fn new(info: SessionInfo) -> Gemini {
        Gemini {
            info,
            session_id: None,
            meter: Meter::default(),
            commands: HashMap::new(),
            cli_totals: None,
            messages: Default::default(),
            pending: String::new(),
        }
    }
}

impl Gemini {
    /// A tool's result: a command that ran, or one the CLI's policy refused (a block the platform sees).
    fn on_tool_result(&mut self, v: &serde_json::Value) -> Vec<Event> {
        let id = v["tool_id"].as_str().unwrap_or_default();
        let command = self.commands.get(id).cloned().unwrap_or_else(|| "tool".into());
        match v["error"]["type"].as_str() {
            Some(kind @ ("policy_violation" | "tool_not_registered")) => {
                let risk = crate::runner::policy::risk(&command).unwrap_or("not allowed by the CLI's policy");
                vec![
                    Event::ApprovalRequired {
                        request_id: id.into(),
                        action: command,
                        risk: risk.into(),
                    },
                    Event::ActionBlocked {
                        request_id: id.into(),
                        reason: format!("{kind}: {}", v["error"]["message"].as_str().unwrap_or_default()),
                    },
                ]
            }
            _ => vec![Event::CommandExited {
                command,
                exit_code: Some(if v["status"] == "success" { 0 } else { 1 }),
            }],
        }
    }

    /// The result line: the CLI's totals, the last message, and the session's status.
    fn on_result(&mut self, v: &serde_json::Value, line: &str) -> Vec<Event> {
        let stats = &v["stats"];
        let (Some(input), Some(output)) = (u64_at(stats, "input_tokens"), u64_at(stats, "output_tokens")) else {
            return vec![changed(NAME, "result.stats lacks input_tokens / output_tokens", line)];
        };
        let totals = Usage {
            input_tokens: input,
            cached_input_tokens: u64_at(stats, "cached").unwrap_or(0),
            output_tokens: output,
        };
        self.cli_totals = Some(totals);
        let id = self.session_id.clone().unwrap_or_default();
        let said = std::mem::take(&mut self.pending);
        let mut out = self.messages.say(&said);
        out.push(self.meter.tick(&id, totals, None));
        out.extend(
            self.messages
                .finish(canary_contract::Provider::Gemini.name(), None, v["status"] != "success"),
        );
        if v["status"] != "success" {
            out.push(Event::error(
                "cli_result_error",
                format!("gemini result status {}", v["status"]),
            ));
        }
        out
    }
}

impl Adapter for Gemini {
    fn name(&self) -> &'static str {
        NAME
    }

    fn on_object(&mut self, v: &Value, line: &str) -> Vec<Event> {
        match v["type"].as_str().unwrap_or_default() {
            "init" => {
                let Some(id) = v["session_id"].as_str() else {
                    return vec![changed(NAME, "init has no session_id", line)];
                };
                self.session_id = Some(id.to_string());
                vec![session_started(
                    &self.info,
                    NAME,
                    canary_contract::Provider::Gemini.name(),
                    id,
                    None,
                    v["model"].as_str(),
                )]
            }
            // Assistant text arrives in pieces (`delta`); a tool call or the result ends a message.
            "message" => {
                if v["role"] == "assistant" {
                    self.pending.push_str(v["content"].as_str().unwrap_or_default());
                }
                Vec::new()
            }
            "tool_use" => {
                let said = std::mem::take(&mut self.pending);
                let out = self.messages.say(&said);
                let cmd = v["parameters"]["command"]
                    .as_str()
                    .map(String::from)
                    .unwrap_or_else(|| format!("{} {}", v["tool_name"].as_str().unwrap_or("tool"), v["parameters"]));
                self.commands
                    .insert(v["tool_id"].as_str().unwrap_or_default().to_string(), cmd);
                out
            }
            "tool_result" => self.on_tool_result(v),
            "error" => vec![Event::error(
                "cli_error",
                v["message"].as_str().unwrap_or("gemini reported an error").to_string(),
            )],
            "result" => self.on_result(v, line),
            _ => vec![unknown(NAME, "event type", line)],
        }
    }

    fn on_exit(&mut self, exit_code: Option<i32>) -> Vec<Event> {
        let usage = self
            .cli_totals
            .is_none()
            .then(|| Event::error("no_usage", "gemini printed no result with stats"));
        exit_checks(
            canary_contract::Provider::Gemini.name(),
            "init",
            self.session_id.is_some(),
            usage,
            exit_code,
        )
    }

    fn cli_totals(&self) -> Option<Usage> {
        self.cli_totals
    }
}
