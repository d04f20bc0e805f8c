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
pub mod requests;
pub mod scenario;

use crate::error::Result;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use protocols::{Protocol, Reply, Usage};
pub use scenario::{Action, Scenario, Turn};
use serde::Serialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Whether a scenario key from a request's path may name a file in the scenario folder: it
/// comes from whoever reaches the stub, so it is never joined to a path unchecked.
fn is_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 128
        && !key.starts_with('.')
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

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
    /// The request's contract: endpoint, parameters, tools, instructions, client headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<crate::stub::requests::RequestShape>,
    /// For a resumed conversation: whether the request carried every marker of the earlier
    /// turns (their prompt and answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<bool>,
}

/// What the stub knows of the conversation a resumed session continues: the tool calls made
/// before (the scenario's turns count from there) and texts its requests must carry.
#[derive(Debug, Clone, Default, serde::Deserialize, Serialize)]
pub struct Continues {
    pub calls_before: usize,
    pub markers: Vec<String>,
}

/// Whether every marker appears in some string of the request body.
fn holds_all(body: &serde_json::Value, markers: &[String]) -> bool {
    fn strings<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a str>) {
        match v {
            serde_json::Value::String(s) => out.push(s),
            serde_json::Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
            serde_json::Value::Object(o) => o.values().for_each(|x| strings(x, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    strings(body, &mut all);
    markers.iter().all(|m| all.iter().any(|s| s.contains(m.as_str())))
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
    continues: Arc<Continues>,
}

impl Stub {
    pub fn new(dir: Option<PathBuf>, log_file: Option<PathBuf>) -> Stub {
        Stub {
            inner: Arc::default(),
            dir,
            log_file,
            continues: Arc::default(),
        }
    }

    /// A stub for a resumed conversation: turns count after the earlier calls, and each
    /// request is checked for the earlier turns' markers.
    pub fn continuing(mut self, continues: Continues) -> Stub {
        self.continues = Arc::new(continues);
        self
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
        if !is_key(key) {
            return Err(format!(
                "no scenario for key `{}`: a key is 1 to 128 letters, digits, `.`, `_` or `-`, not starting with `.`",
                canary_contract::text::clean(&key.chars().take(80).collect::<String>())
            ));
        }
        let path = dir.join(format!("{key}.yaml"));
        if !path.is_file() {
            return Err(format!("no scenario for key `{key}` (no file {})", path.display()));
        }
        let s = Scenario::read(&path).map_err(|e| e.to_string())?;
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
                post(|s: State<Stub>, h: HeaderMap, b: Bytes| async move {
                    let req = Incoming::new("default".into(), None, "/v1/responses".into(), &h, b);
                    answer(s.0, Protocol::OpenaiResponses, req)
                }),
            )
            .route(
                "/v1/messages",
                post(|s: State<Stub>, h: HeaderMap, b: Bytes| async move {
                    let req = Incoming::new("default".into(), None, "/v1/messages".into(), &h, b);
                    answer(s.0, Protocol::AnthropicMessages, req)
                }),
            )
            .route(
                "/v1beta/models/{model}",
                post(
                    |s: State<Stub>, Path(model): Path<String>, h: HeaderMap, b: Bytes| async move {
                        let path = format!("/v1beta/models/{model}");
                        let req = Incoming::new("default".into(), Some(model), path, &h, b);
                        answer(s.0, Protocol::Gemini, req)
                    },
                ),
            )
            .route(
                "/s/{key}/v1/responses",
                post(
                    |s: State<Stub>, Path(key): Path<String>, h: HeaderMap, b: Bytes| async move {
                        let path = format!("/s/{key}/v1/responses");
                        answer(s.0, Protocol::OpenaiResponses, Incoming::new(key, None, path, &h, b))
                    },
                ),
            )
            .route(
                "/s/{key}/v1/messages",
                post(
                    |s: State<Stub>, Path(key): Path<String>, h: HeaderMap, b: Bytes| async move {
                        let path = format!("/s/{key}/v1/messages");
                        answer(s.0, Protocol::AnthropicMessages, Incoming::new(key, None, path, &h, b))
                    },
                ),
            )
            .route(
                "/s/{key}/v1beta/models/{model}",
                post(
                    |s: State<Stub>, Path((key, model)): Path<(String, String)>, h: HeaderMap, b: Bytes| async move {
                        let path = format!("/s/{key}/v1beta/models/{model}");
                        answer(s.0, Protocol::Gemini, Incoming::new(key, Some(model), path, &h, b))
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
        let (listener, bound) = crate::local::listen(addr).await?;
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
    continues: &Continues,
    scenario: &Scenario,
    key: &str,
    usage: Usage,
    entry: &mut LogEntry,
) -> std::result::Result<(&'static str, String), String> {
    let Some(turn) = parsed.calls_so_far.checked_sub(continues.calls_before) else {
        return Err(format!(
            "the resumed conversation holds {} tool calls, but the session it continues made {}: the CLI did not send the earlier turns",
            parsed.calls_so_far, continues.calls_before
        ));
    };
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
                    offered(parsed)
                ));
            };
            entry.reply = format!("{}: {command}", tool.name);
            let arguments = protocols::shell_arguments(tool, &command);
            Ok(call(protocol, parsed, tool, arguments, turn, usage))
        }
        Action::Tool {
            tool: wanted,
            arguments,
        } => tool_call(protocol, parsed, turn, usage, entry, &wanted, arguments),
        Action::Text(text) => {
            entry.reply = format!("text: {text}");
            Ok(protocols::render(protocol, &Reply::Text(&text), parsed, turn, usage))
        }
    }
}

/// One request as a route received it.
struct Incoming {
    key: String,
    /// Gemini's model, from the path (`gemini-2.5-pro:streamGenerateContent`).
    model: Option<String>,
    path: String,
    headers: Vec<(String, String)>,
    body: Bytes,
}

impl Incoming {
    fn new(key: String, model: Option<String>, path: String, headers: &HeaderMap, body: Bytes) -> Incoming {
        Incoming {
            key,
            model,
            path,
            headers: headers
                .iter()
                .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
                .collect(),
            body,
        }
    }

    /// The path as a contract names it: without the scenario prefix, Gemini's model folded.
    fn route(&self) -> String {
        let route = match self.path.strip_prefix("/s/") {
            Some(rest) => rest.find('/').map_or(rest, |i| &rest[i..]).to_string(),
            None => self.path.clone(),
        };
        match (&self.model, route.rfind('/')) {
            (Some(m), Some(i)) => {
                let method = m.split_once(':').map(|(_, x)| x).unwrap_or_default();
                format!("{}/{{model}}:{method}", &route[..i])
            }
            _ => route,
        }
    }
}

/// The names of the tools a request offers, for an error.
fn offered(parsed: &protocols::Parsed) -> String {
    parsed
        .tools
        .iter()
        .map(|t| t.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A call of the offered tool named `wanted`; a deferred one is first looked up with the CLI's
/// tool search, as a model would.
fn tool_call(
    protocol: Protocol,
    parsed: &protocols::Parsed,
    turn: usize,
    usage: Usage,
    entry: &mut LogEntry,
    wanted: &str,
    arguments: serde_json::Value,
) -> std::result::Result<(&'static str, String), String> {
    let Some(tool) = protocols::named_tool(&parsed.tools, wanted) else {
        if let (Some(search), true) = (protocols::search_tool(&parsed.tools), parsed.searches < 3) {
            entry.reply = format!("{}: {wanted}", search.name);
            let arguments = serde_json::json!({"query": wanted, "max_results": 5});
            // Ids stay unique: a search is not a turn of the scenario.
            let id = turn + parsed.searches + 100;
            return Ok(protocols::render(
                protocol,
                &Reply::ToolCall {
                    tool: search,
                    arguments,
                },
                parsed,
                id,
                usage,
            ));
        }
        return Err(format!(
            "turn {} calls tool {wanted}, but the CLI offered none of that name: {}",
            turn + 1,
            offered(parsed)
        ));
    };
    entry.reply = format!("{}: {arguments}", tool.name);
    Ok(call(protocol, parsed, tool, arguments, turn, usage))
}

/// The model's call of `tool` with `arguments`, in the request's protocol.
fn call(
    protocol: Protocol,
    parsed: &protocols::Parsed,
    tool: &protocols::Tool,
    arguments: serde_json::Value,
    turn: usize,
    usage: Usage,
) -> (&'static str, String) {
    protocols::render(protocol, &Reply::ToolCall { tool, arguments }, parsed, turn, usage)
}

fn answer(stub: Stub, protocol: Protocol, req: Incoming) -> Response {
    let model_name = req
        .model
        .as_deref()
        .map(|m| m.split(':').next().unwrap_or(m).to_string());
    let key = req.key.clone();
    let mut entry = LogEntry {
        ts: canary_contract::time::now(),
        key: key.clone(),
        protocol,
        path: req.path.clone(),
        model: model_name.clone().unwrap_or_default(),
        tools_offered: Vec::new(),
        tool_results: Vec::new(),
        turn: None,
        reply: String::new(),
        usage: None,
        auxiliary: false,
        unmatched: None,
        request: None,
        history: None,
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
    let json: serde_json::Value = match serde_json::from_slice(&req.body) {
        Ok(v) => v,
        Err(e) => return unmatched(&stub, entry, format!("request body is not JSON: {e}")),
    };
    let parsed = protocols::parse(protocol, &json, model_name.as_deref());
    entry.request = Some(crate::stub::requests::RequestShape::of(
        protocol,
        &req.route(),
        &json,
        &req.headers,
    ));
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
        if !stub.continues.markers.is_empty() {
            entry.history = Some(holds_all(&json, &stub.continues.markers));
        }
        match scripted(protocol, &parsed, &stub.continues, &scenario, &key, usage, &mut entry) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_scenario_key_from_a_request_never_reaches_outside_the_scenario_folder() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("scenarios");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("fix-1.yaml"), "turns:\n  - say: done\n").unwrap();
        std::fs::write(root.path().join("outside.yaml"), "turns:\n  - say: leaked\n").unwrap();
        let stub = Stub::new(Some(dir), None);
        assert_eq!(stub.scenario("fix-1").unwrap().turns.len(), 1);
        for key in ["../outside", "..", ".hidden", "a/b", "", &"k".repeat(129)] {
            let e = stub.scenario(key).unwrap_err();
            assert!(e.contains("a key is 1 to 128 letters"), "{key}: {e}");
        }
        let e = stub.scenario("missing").unwrap_err();
        assert!(e.contains("no scenario for key `missing`"), "{e}");
    }

    #[tokio::test]
    async fn each_request_is_logged_with_its_contract_and_no_secret() {
        let stub = Stub::new(None, None);
        stub.insert(
            "k",
            Scenario {
                turns: vec![Turn::Say("ok".into())],
            },
        );
        let (addr, server) = stub.clone().serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
        crate::init_tls();
        let client = reqwest::Client::new();
        let body = json!({"model": "gpt-5", "stream": false, "tools": [{"type": "function", "name": "exec_command", "parameters": {}}], "input": []});
        let r = client
            .post(format!("http://{addr}/s/k/v1/responses"))
            .header("authorization", "Bearer sk-secret")
            .header("user-agent", "codex_exec/0.163.0")
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        let gemini = json!({"contents": [], "tools": [{"functionDeclarations": [{"name": "run_shell_command", "parameters": {}}]}]});
        client
            .post(format!(
                "http://{addr}/s/k/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse"
            ))
            .body(gemini.to_string())
            .send()
            .await
            .unwrap();
        server.abort();
        let log = stub.log();
        let codex = log[0].request.as_ref().unwrap();
        assert_eq!(codex.endpoint, "POST /v1/responses (openai_responses)");
        assert_eq!(
            codex.headers.get("user-agent").map(String::as_str),
            Some("codex_exec/0.163.0")
        );
        assert!(!serde_json::to_string(&log[0]).unwrap().contains("sk-secret"));
        let g = log[1].request.as_ref().unwrap();
        assert_eq!(g.endpoint, "POST /v1beta/models/{model}:streamGenerateContent (gemini)");
        assert_eq!(g.tools[0].name, "run_shell_command");
    }
}
