//! Adapters: each turns one CLI's native JSON stream into Runner Contract events. They are pure
//! (a line in, events out), so recorded real output pins them in tests.
//!
//! Whatever an adapter does not recognise becomes an `ERROR` event naming the line: a CLI that
//! renamed an event or a field must fail the canary, never pass it silently.

pub mod claude;
pub mod codex;
pub mod gemini;

use super::events::{Event, Usage};
use serde_json::Value;

/// What the runner knows before the CLI prints anything.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub runner_version: String,
    pub provider_version: String,
    pub model: String,
}

pub trait Adapter: Send {
    fn name(&self) -> &'static str;
    /// Events for one line of the CLI's stdout: a JSON object goes to [`Adapter::on_object`],
    /// anything else is an error event.
    fn on_line(&mut self, line: &str) -> Vec<Event> {
        match object(self.name(), line) {
            Ok(v) => self.on_object(&v, line),
            Err(e) => vec![*e],
        }
    }
    /// Events for one JSON object the CLI printed (`line` is its text, for messages).
    fn on_object(&mut self, v: &Value, line: &str) -> Vec<Event>;
    /// Events once the CLI has exited (missing results, failures).
    fn on_exit(&mut self, exit_code: Option<i32>) -> Vec<Event>;
    /// The CLI's own final usage totals, when it reported them.
    fn cli_totals(&self) -> Option<Usage>;
}

/// Parses a line as a JSON object, or says why not (boxed: the error is the rare path).
fn object(adapter: &str, line: &str) -> Result<Value, Box<Event>> {
    match serde_json::from_str::<Value>(line) {
        Ok(v) if v.is_object() => Ok(v),
        Ok(_) => Err(Box::new(Event::error(
            "not_an_object",
            format!("{adapter}: a line is JSON but not an object: {}", clip(line)),
        ))),
        Err(_) => Err(Box::new(Event::error(
            "not_json",
            format!("{adapter}: a line is not JSON: {}", clip(line)),
        ))),
    }
}

fn clip(s: &str) -> String {
    let s = s.trim();
    if s.chars().count() > 200 {
        format!("{}…", s.chars().take(200).collect::<String>())
    } else {
        s.to_string()
    }
}

fn unknown(adapter: &str, what: &str, line: &str) -> Event {
    Event::error(
        "unknown_event",
        format!("{adapter}: {what} is not one this adapter knows: {}", clip(line)),
    )
}

fn changed(adapter: &str, what: &str, line: &str) -> Event {
    Event::error("changed_event", format!("{adapter}: {what}: {}", clip(line)))
}

fn u64_at(v: &Value, key: &str) -> Option<u64> {
    v.get(key).and_then(Value::as_u64)
}

/// What every adapter checks when its CLI exits: the session was announced (by
/// `session_event`), usage was reported (`usage` is the error when it was not), exit code 0.
fn exit_checks(
    cli: &str,
    session_event: &str,
    session_seen: bool,
    usage: Option<Event>,
    exit_code: Option<i32>,
) -> Vec<Event> {
    let mut out = Vec::new();
    if !session_seen {
        out.push(Event::error("no_session", format!("{cli} printed no {session_event}")));
    }
    out.extend(usage);
    if exit_code != Some(0) {
        out.push(Event::error("cli_exit", format!("{cli} exited with {exit_code:?}")));
    }
    out
}

/// SESSION_STARTED from what the runner knew and what the CLI announced.
fn session_started(
    info: &SessionInfo,
    adapter: &str,
    provider: &str,
    session_id: &str,
    provider_version: Option<&str>,
    model: Option<&str>,
) -> Event {
    Event::SessionStarted {
        session_id: session_id.into(),
        runner_version: info.runner_version.clone(),
        adapter: adapter.into(),
        provider: provider.into(),
        provider_version: provider_version.unwrap_or(&info.provider_version).to_string(),
        model: model.unwrap_or(&info.model).to_string(),
    }
}

/// Numbers USAGE_TICK events of one session.
#[derive(Default)]
struct Meter {
    seq: u64,
    totals: Usage,
}

impl Meter {
    fn tick(&mut self, session_id: &str, delta: Usage, cost_usd: Option<f64>) -> Event {
        self.seq += 1;
        self.totals.add(&delta);
        Event::UsageTick {
            session_id: session_id.to_string(),
            seq: self.seq,
            input_tokens: delta.input_tokens,
            cached_input_tokens: delta.cached_input_tokens,
            output_tokens: delta.output_tokens,
            cost_usd,
            totals: self.totals,
        }
    }
}

/// The agent's messages of one session, and the final answer once the CLI is done.
#[derive(Default)]
struct Messages {
    last: Option<String>,
}

impl Messages {
    /// One message the CLI reported (empty ones are not messages).
    fn say(&mut self, text: &str) -> Vec<Event> {
        if text.trim().is_empty() {
            return Vec::new();
        }
        self.last = Some(text.to_string());
        vec![Event::AgentMessage {
            text: text.to_string(),
            is_final: false,
        }]
    }

    /// The final answer: `text` when the CLI names one (else the last message), or an error
    /// when it is blank. A CLI that already failed (`failed`) gets no second error.
    fn finish(&mut self, cli: &str, text: Option<&str>, failed: bool) -> Vec<Event> {
        let text = text.map(String::from).or_else(|| self.last.clone()).unwrap_or_default();
        if text.trim().is_empty() {
            if failed {
                return Vec::new();
            }
            return vec![Event::error("blank_result", format!("{cli}'s final answer is blank"))];
        }
        vec![Event::AgentMessage { text, is_final: true }]
    }
}

/// Runs every line of a recorded stream through an adapter (tests and `canary` tooling).
pub fn replay(adapter: &mut dyn Adapter, text: &str, exit_code: Option<i32>) -> Vec<Event> {
    let mut out: Vec<Event> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .flat_map(|l| adapter.on_line(l))
        .collect();
    out.extend(adapter.on_exit(exit_code));
    out
}
