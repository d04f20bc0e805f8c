//! The runner's policy point: it serves the CLI's model endpoint and forwards to the real one,
//! and every tool call in a model response passes the approval policy before the CLI sees it.
//! A blocked call is rewritten into a command that only reports the block, so its effect never
//! happens whatever the CLI itself would have done.

use super::events::Event;
use super::policy;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use std::sync::Arc;
use tokio::sync::mpsc;

/// What the runner answers when the CLI asks to run something that needs approval. One type
/// for the suite file (`approval:`), the runner's `--approval` flag and the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, schemars::JsonSchema, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Approval {
    Approve,
    Deny,
    /// No answer: the request is refused as unanswered.
    #[default]
    None,
}

impl Approval {
    /// As the runner's `--approval` flag spells it.
    pub fn as_arg(self) -> &'static str {
        match self {
            Approval::Approve => "approve",
            Approval::Deny => "deny",
            Approval::None => "none",
        }
    }
}

impl std::fmt::Display for Approval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_arg())
    }
}

struct Shared {
    upstream: String,
    approval: Approval,
    events: mpsc::UnboundedSender<Event>,
    client: reqwest::Client,
    next_request: std::sync::atomic::AtomicU64,
}

/// What a blocked command becomes: it says why and fails, touching nothing.
fn refusal(risk: &str) -> String {
    format!("echo 'canary-runner: blocked by the approval policy ({risk})' >&2; exit 126")
}

/// Commands in the tool calls of a model response (SSE or JSON, any of the three protocols).
fn commands(body: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut partial: String = String::new();
    let mut in_tool = false;
    let visit = |v: &Value, out: &mut Vec<String>| {
        // OpenAI Responses: function_call items carry JSON-encoded arguments.
        if v["type"] == "response.output_item.done" && v["item"]["type"] == "function_call" {
            if let Some(args) = v["item"]["arguments"]
                .as_str()
                .and_then(|a| serde_json::from_str::<Value>(a).ok())
            {
                out.extend(command_of(&args));
            }
        }
        if v["type"] == "function_call" {
            if let Some(args) = v["arguments"]
                .as_str()
                .and_then(|a| serde_json::from_str::<Value>(a).ok())
            {
                out.extend(command_of(&args));
            }
        }
        // Anthropic Messages (non-streaming) and Gemini: tool input objects.
        if v["type"] == "tool_use" && v["input"].is_object() {
            out.extend(command_of(&v["input"]));
        }
        if let Some(args) = v.get("functionCall").map(|f| &f["args"]) {
            out.extend(command_of(args));
        }
    };
    fn walk(v: &Value, f: &mut dyn FnMut(&Value)) {
        f(v);
        match v {
            Value::Array(a) => a.iter().for_each(|x| walk(x, f)),
            Value::Object(o) => o.values().for_each(|x| walk(x, f)),
            _ => {}
        }
    }
    let mut handle = |data: &str, out: &mut Vec<String>| {
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            return;
        };
        // Anthropic streaming: a tool_use block's input arrives as partial JSON.
        match v["type"].as_str() {
            Some("content_block_start") => {
                in_tool = v["content_block"]["type"] == "tool_use";
                partial.clear();
                return;
            }
            Some("content_block_delta") if in_tool => {
                partial.push_str(v["delta"]["partial_json"].as_str().unwrap_or_default());
                return;
            }
            Some("content_block_stop") if in_tool => {
                if let Ok(input) = serde_json::from_str::<Value>(&partial) {
                    out.extend(command_of(&input));
                }
                in_tool = false;
                return;
            }
            _ => {}
        }
        let mut found = Vec::new();
        walk(&v, &mut |x| visit(x, &mut found));
        out.extend(found);
    };
    let datas: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim)
        .collect();
    if datas.is_empty() {
        handle(body, &mut out);
    } else {
        for d in datas {
            handle(d, &mut out);
        }
    }
    out.sort();
    out.dedup();
    out
}

fn command_of(args: &Value) -> Option<String> {
    for key in ["cmd", "command"] {
        match args.get(key) {
            Some(Value::String(s)) => return Some(s.clone()),
            Some(Value::Array(parts)) => {
                let parts: Vec<&str> = parts.iter().filter_map(Value::as_str).collect();
                // `bash -lc CMD` carries the command last.
                return parts.last().map(|s| s.to_string());
            }
            _ => {}
        }
    }
    None
}

/// `s` as it appears inside a JSON string, once and twice escaped.
fn escaped(s: &str) -> (String, String) {
    let once = serde_json::to_string(s).expect("string serializes");
    let once = once[1..once.len() - 1].to_string();
    let twice = serde_json::to_string(&once).expect("string serializes");
    (once.clone(), twice[1..twice.len() - 1].to_string())
}

/// Replaces every encoded occurrence of `from` with `to` in a response body.
fn rewrite(body: &str, from: &str, to: &str) -> String {
    let (f1, f2) = escaped(from);
    let (t1, t2) = escaped(to);
    let body = if f2 != f1 {
        body.replace(&f2, &t2)
    } else {
        body.to_string()
    };
    body.replace(&f1, &t1)
}

async fn forward(State(s): State<Arc<Shared>>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let url = format!(
        "{}{}",
        s.upstream.trim_end_matches('/'),
        uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
    );
    let mut req = s.client.request(method, &url).body(body);
    for (k, v) in headers
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "host" | "content-length" | "connection" | "accept-encoding"))
    {
        req = req.header(k, v);
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => {
            let _ = s.events.send(Event::error("model_unreachable", format!("{url}: {e}")));
            return (
                StatusCode::BAD_GATEWAY,
                format!("canary-runner: model endpoint unreachable: {e}"),
            )
                .into_response();
        }
    };
    let status = resp.status();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    let mut text = resp.text().await.unwrap_or_default();
    if status.is_success() {
        for command in commands(&text) {
            let Some(risk) = policy::risk(&command) else { continue };
            let id = format!(
                "approval-{}",
                s.next_request.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1
            );
            let _ = s.events.send(Event::ApprovalRequired {
                request_id: id.clone(),
                action: command.clone(),
                risk: risk.into(),
            });
            match s.approval {
                Approval::Approve => {
                    let _ = s.events.send(Event::ActionApproved { request_id: id });
                }
                Approval::Deny | Approval::None => {
                    let reason = if s.approval == Approval::Deny {
                        format!("denied: {risk}")
                    } else {
                        format!("no approval for {risk}")
                    };
                    let _ = s.events.send(Event::ActionBlocked { request_id: id, reason });
                    text = rewrite(&text, &command, &refusal(risk));
                }
            }
        }
    }
    (
        StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY),
        [("content-type", content_type)],
        text,
    )
        .into_response()
}

/// Starts the proxy on a loopback port; returns its base URL.
pub async fn start(
    upstream: &str,
    approval: Approval,
    events: mpsc::UnboundedSender<Event>,
) -> std::io::Result<(String, tokio::task::JoinHandle<()>)> {
    let shared = Arc::new(Shared {
        upstream: upstream.to_string(),
        approval,
        events,
        client: {
            crate::init_tls();
            reqwest::Client::new()
        },
        next_request: Default::default(),
    });
    let app = axum::Router::new().fallback(forward).with_state(shared);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let handle = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((format!("http://{addr}"), handle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_and_rewrites_openai_tool_calls() {
        let args = serde_json::json!({"cmd": "rm -rf .git"}).to_string();
        let item = serde_json::json!({"type": "response.output_item.done", "item": {"type": "function_call", "name": "exec_command", "arguments": args}});
        let body = format!("event: response.output_item.done\ndata: {item}\n\n");
        assert_eq!(commands(&body), vec!["rm -rf .git".to_string()]);
        let new = rewrite(&body, "rm -rf .git", &refusal("deletes .git"));
        assert_eq!(commands(&new), vec![refusal("deletes .git")]);
    }

    #[test]
    fn finds_and_rewrites_anthropic_partial_json() {
        let input = serde_json::json!({"command": "rm -rf \"a b\"/.git", "description": "x"}).to_string();
        let events = [
            serde_json::json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "t", "name": "Bash", "input": {}}}),
            serde_json::json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": input}}),
            serde_json::json!({"type": "content_block_stop", "index": 0}),
        ];
        let body: String = events.iter().map(|e| format!("event: x\ndata: {e}\n\n")).collect();
        assert_eq!(commands(&body), vec!["rm -rf \"a b\"/.git".to_string()]);
        assert_eq!(
            commands(&rewrite(&body, "rm -rf \"a b\"/.git", "echo no")),
            vec!["echo no".to_string()]
        );
    }
}
