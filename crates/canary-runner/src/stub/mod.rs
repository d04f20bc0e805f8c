//! The model stub: a loopback / lab-network HTTP server that plays scripted scenarios to the
//! real agent CLIs in their own protocols, so a canary failure points at the CLI or the adapter,
//! never at model randomness. Zero tokens spent.
//!
//! Stateless per request: the turn to play is the number of tool calls already present in the
//! conversation the CLI sends back, so retries and auxiliary requests (titles, token counts)
//! cannot desynchronise the script. Requests that offer no tools are auxiliary: they get a
//! short text answer and do not advance the scenario.
//!
//! Routes (`{key}` selects the scenario; without `/s/{key}` the key is `default`):
//! `POST /s/{key}/v1/responses` (OpenAI Responses), `POST /s/{key}/v1/messages` (Anthropic
//! Messages), `POST /s/{key}/v1beta/models/{model}:streamGenerateContent` (Gemini).

pub mod protocols;
pub mod scenario;

use crate::error::{LabError, Result};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use protocols::{Protocol, Reply, Usage};
pub use scenario::{Action, Scenario, Turn};
use serde::Serialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// One request as the stub saw and answered it: the case's evidence of what the CLI asked.
#[derive(Debug, Clone, Serialize)]
pub struct LogEntry {
    pub ts: String,
    pub key: String,
    pub protocol: Protocol,
    pub path: String,
    pub model: String,
    pub tools_offered: Vec<String>,
    pub tool_results: Vec<serde_json::Value>,
    /// The turn played (`None` for auxiliary and unmatched requests).
    pub turn: Option<usize>,
    pub reply: String,
    pub usage: Option<Usage>,
    pub auxiliary: bool,
    /// Why the request could not be answered from the scenario.
    pub unmatched: Option<String>,
}

#[derive(Default)]
struct Inner {
    scenarios: HashMap<String, Scenario>,
    log: Vec<LogEntry>,
}

/// Shared state: scenarios by key, a folder to load more from, and the request log.
#[derive(Clone, Default)]
pub struct Stub {
    inner: Arc<Mutex<Inner>>,
    /// Scenarios not registered are read from `<dir>/<key>.yaml` when first asked for.
    dir: Option<PathBuf>,
    log_file: Option<PathBuf>,
}

impl Stub {
    pub fn new(dir: Option<PathBuf>, log_file: Option<PathBuf>) -> Stub {
        Stub {
            inner: Arc::default(),
            dir,
            log_file,
        }
    }

    pub fn insert(&self, key: &str, scenario: Scenario) {
        self.inner
            .lock()
            .expect("stub lock")
            .scenarios
            .insert(key.to_string(), scenario);
    }

    pub fn log(&self) -> Vec<LogEntry> {
        self.inner.lock().expect("stub lock").log.clone()
    }

    fn scenario(&self, key: &str) -> std::result::Result<Scenario, String> {
        if let Some(s) = self.inner.lock().expect("stub lock").scenarios.get(key) {
            return Ok(s.clone());
        }
        let Some(dir) = &self.dir else {
            return Err(format!("no scenario for key `{key}`"));
        };
        let path = dir.join(format!("{key}.yaml"));
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("no scenario for key `{key}` ({}: {e})", path.display()))?;
        let s = Scenario::parse(&path.display().to_string(), &text).map_err(|e| e.to_string())?;
        self.insert(key, s.clone());
        Ok(s)
    }

    fn record(&self, entry: LogEntry) {
        if let Some(path) = &self.log_file {
            use std::io::Write;
            if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
                let _ = writeln!(f, "{}", serde_json::to_string(&entry).expect("log entry serializes"));
            }
        }
        self.inner.lock().expect("stub lock").log.push(entry);
    }

    pub fn router(self) -> Router {
        Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route(
                "/v1/responses",
                post(|s: State<Stub>, b: Bytes| async move {
                    answer(
                        s.0,
                        Protocol::OpenaiResponses,
                        "default".into(),
                        None,
                        "/v1/responses".into(),
                        b,
                    )
                }),
            )
            .route(
                "/v1/messages",
                post(|s: State<Stub>, b: Bytes| async move {
                    answer(
                        s.0,
                        Protocol::AnthropicMessages,
                        "default".into(),
                        None,
                        "/v1/messages".into(),
                        b,
                    )
                }),
            )
            .route(
                "/v1beta/models/{model}",
                post(|s: State<Stub>, Path(model): Path<String>, b: Bytes| async move {
                    let path = format!("/v1beta/models/{model}");
                    answer(s.0, Protocol::Gemini, "default".into(), Some(model), path, b)
                }),
            )
            .route(
                "/s/{key}/v1/responses",
                post(|s: State<Stub>, Path(key): Path<String>, b: Bytes| async move {
                    let path = format!("/s/{key}/v1/responses");
                    answer(s.0, Protocol::OpenaiResponses, key, None, path, b)
                }),
            )
            .route(
                "/s/{key}/v1/messages",
                post(|s: State<Stub>, Path(key): Path<String>, b: Bytes| async move {
                    let path = format!("/s/{key}/v1/messages");
                    answer(s.0, Protocol::AnthropicMessages, key, None, path, b)
                }),
            )
            .route(
                "/s/{key}/v1beta/models/{model}",
                post(
                    |s: State<Stub>, Path((key, model)): Path<(String, String)>, b: Bytes| async move {
                        let path = format!("/s/{key}/v1beta/models/{model}");
                        answer(s.0, Protocol::Gemini, key, Some(model), path, b)
                    },
                ),
            )
            .fallback(|uri: axum::http::Uri| async move {
                (StatusCode::NOT_FOUND, format!("the model stub has no route {uri}"))
            })
            .with_state(self)
    }

    /// Serves on `addr` until the returned handle is dropped or aborted; returns the bound
    /// address (port 0 picks a free one).
    pub async fn serve(self, addr: SocketAddr) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| LabError::usage(format!("cannot listen on {addr}: {e}"), "pick another --listen address"))?;
        let bound = listener
            .local_addr()
            .map_err(|e| LabError::usage(e.to_string(), "internal"))?;
        let app = self.router();
        let handle = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok((bound, handle))
    }
}

fn error_body(protocol: Protocol, message: &str) -> String {
    match protocol {
        Protocol::OpenaiResponses => serde_json::json!({"error": {"message": message, "type": "invalid_request_error", "code": "canary_stub_unmatched"}}),
        Protocol::AnthropicMessages => serde_json::json!({"type": "error", "error": {"type": "invalid_request_error", "message": message}}),
        Protocol::Gemini => serde_json::json!({"error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}}),
    }
    .to_string()
}

/// The scenario's reply for this turn of the conversation: its shell command as a call of the
/// CLI's shell tool, or its text; `Err` says why the request does not match the scenario.
fn scripted(
    protocol: Protocol,
    parsed: &protocols::Parsed,
    scenario: &Scenario,
    key: &str,
    usage: Usage,
    entry: &mut LogEntry,
) -> std::result::Result<(&'static str, String), String> {
    let turn = parsed.calls_so_far;
    let Some(step) = scenario.turns.get(turn) else {
        return Err(format!(
            "the conversation already has {turn} tool calls, but scenario `{key}` has {} turns",
            scenario.turns.len()
        ));
    };
    entry.turn = Some(turn);
    entry.usage = Some(usage);
    match step.action() {
        Action::Shell(command) => {
            let Some(tool) = protocols::shell_tool(&parsed.tools) else {
                return Err(format!(
                    "turn {} needs a shell tool, but the CLI offered none of: {}",
                    turn + 1,
                    parsed
                        .tools
                        .iter()
                        .map(|t| t.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            };
            entry.reply = format!("{}: {command}", tool.name);
            let arguments = protocols::shell_arguments(tool, &command);
            Ok(protocols::render(
                protocol,
                &Reply::ToolCall { tool, arguments },
                parsed,
                turn,
                usage,
            ))
        }
        Action::Text(text) => {
            entry.reply = format!("text: {text}");
            Ok(protocols::render(protocol, &Reply::Text(&text), parsed, turn, usage))
        }
    }
}

fn answer(stub: Stub, protocol: Protocol, key: String, model: Option<String>, path: String, body: Bytes) -> Response {
    let model_name = model.as_deref().map(|m| m.split(':').next().unwrap_or(m).to_string());
    let mut entry = LogEntry {
        ts: canary_contract::time::now(),
        key: key.clone(),
        protocol,
        path,
        model: model_name.clone().unwrap_or_default(),
        tools_offered: Vec::new(),
        tool_results: Vec::new(),
        turn: None,
        reply: String::new(),
        usage: None,
        auxiliary: false,
        unmatched: None,
    };
    let unmatched = |stub: &Stub, mut entry: LogEntry, why: String| -> Response {
        entry.unmatched = Some(why.clone());
        stub.record(entry);
        (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "application/json")],
            error_body(protocol, &format!("canary model stub: {why}")),
        )
            .into_response()
    };
    let json: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return unmatched(&stub, entry, format!("request body is not JSON: {e}")),
    };
    let parsed = protocols::parse(protocol, &json, model_name.as_deref());
    entry.model = parsed.model.clone();
    entry.tools_offered = parsed.tools.iter().map(|t| t.name.clone()).collect();
    entry.tool_results = parsed.tool_results.clone();
    let scenario = match stub.scenario(&key) {
        Ok(s) => s,
        Err(why) => return unmatched(&stub, entry, why),
    };
    let usage = Usage::for_turn(parsed.calls_so_far);
    let (content_type, text) = if parsed.tools.is_empty() {
        entry.auxiliary = true;
        entry.reply = "text: auxiliary answer".into();
        protocols::render(protocol, &Reply::Text("ok"), &parsed, parsed.calls_so_far, usage)
    } else {
        match scripted(protocol, &parsed, &scenario, &key, usage, &mut entry) {
            Ok(reply) => reply,
            Err(why) => return unmatched(&stub, entry, why),
        }
    };
    stub.record(entry);
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        text,
    )
        .into_response()
}
