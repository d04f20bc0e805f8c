//! The three model APIs the CLIs speak, reduced to what a scripted model needs: which tools a
//! request offers, how far the conversation has come, and how to answer with a tool call or
//! text as server-sent events (or plain JSON when the request does not stream).

use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// OpenAI Responses API (Codex).
    OpenaiResponses,
    /// Anthropic Messages API (Claude Code).
    AnthropicMessages,
    /// Gemini generateContent (Gemini CLI).
    Gemini,
}

/// A tool the CLI offered: its name and the JSON Schema of its arguments.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Tool {
    pub name: String,
    pub schema: Value,
    /// The namespace a tool is offered in (Codex offers each MCP server's tools inside a
    /// `namespace` tool named `mcp__<server>`); a call names it beside the tool.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Token counts the stub reports for one turn (deterministic, so canaries can reconcile them).
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub cached_input_tokens: u64,
    pub output_tokens: u64,
}

impl Usage {
    pub fn for_turn(turn: usize) -> Usage {
        Usage {
            input_tokens: 1000 + 100 * turn as u64,
            cached_input_tokens: if turn == 0 { 0 } else { 800 },
            output_tokens: 40 + turn as u64,
        }
    }
}

/// Shell-like tools, most specific first; names change across CLI versions, so anything that
/// looks like a shell is taken when none of these is offered.
const SHELL_TOOLS: &[&str] = &["exec_command", "shell", "local_shell", "Bash", "run_shell_command"];

pub fn shell_tool(tools: &[Tool]) -> Option<&Tool> {
    SHELL_TOOLS
        .iter()
        .find_map(|n| tools.iter().find(|t| t.name == *n))
        .or_else(|| {
            tools.iter().find(|t| {
                let n = t.name.to_ascii_lowercase();
                n.contains("shell") || n.contains("bash") || n == "exec"
            })
        })
}

/// Tools a CLI offers to look up tools it defers (Claude Code's `ToolSearch`: MCP tools are
/// not offered until the model searches for them).
pub const SEARCH_TOOLS: &[&str] = &["ToolSearch"];

fn is_search(name: &Value) -> bool {
    name.as_str().is_some_and(|n| SEARCH_TOOLS.contains(&n))
}

/// The offered tool-search tool, if any.
pub fn search_tool(tools: &[Tool]) -> Option<&Tool> {
    tools.iter().find(|t| SEARCH_TOOLS.contains(&t.name.as_str()))
}

/// The offered tool called `name`, or the one a CLI named after it with a server prefix
/// (`mcp__canary__ticket_status`, `canary__ticket_status`).
pub fn named_tool<'a>(tools: &'a [Tool], name: &str) -> Option<&'a Tool> {
    // A tool of the server's own namespace first: a built-in of the same name is not the server's.
    let in_namespace = tools
        .iter()
        .find(|t| t.name == name && t.namespace.as_deref().is_some_and(|n| n.starts_with("mcp")));
    in_namespace
        .or_else(|| tools.iter().find(|t| t.name == name))
        .or_else(|| {
            tools.iter().find(|t| {
                t.name
                    .strip_suffix(name)
                    .is_some_and(|prefix| prefix.ends_with("__") || prefix.ends_with('.') || prefix.ends_with('/'))
            })
        })
}

/// Arguments for running `command` with `tool`, shaped by the tool's own schema: `cmd` or
/// `command`, a string or an argv array.
pub fn shell_arguments(tool: &Tool, command: &str) -> Value {
    let props = tool.schema.get("properties").cloned().unwrap_or(Value::Null);
    let key = ["cmd", "command"]
        .into_iter()
        .find(|k| props.get(*k).is_some())
        .unwrap_or("command");
    let is_array = props.get(key).and_then(|p| p.get("type")).and_then(Value::as_str) == Some("array");
    let mut args = serde_json::Map::new();
    args.insert(
        key.into(),
        if is_array {
            json!(["bash", "-lc", command])
        } else {
            json!(command)
        },
    );
    if props.get("description").is_some() {
        args.insert("description".into(), json!("canary scenario step"));
    }
    Value::Object(args)
}

/// `tools: [{name, <schema_key>: {...}}]`, as OpenAI (`parameters`) and Anthropic
/// (`input_schema`) send them.
fn named_tools(body: &Value, schema_key: &str) -> Vec<Tool> {
    let mut out = Vec::new();
    for t in body["tools"].as_array().into_iter().flatten() {
        let Some(name) = t.get("name").and_then(Value::as_str) else {
            continue;
        };
        if t["type"] == "namespace" {
            for inner in t["tools"].as_array().into_iter().flatten() {
                if let Some(n) = inner.get("name").and_then(Value::as_str) {
                    out.push(Tool {
                        name: n.to_string(),
                        schema: inner.get(schema_key).cloned().unwrap_or(Value::Null),
                        namespace: Some(name.to_string()),
                    });
                }
            }
            continue;
        }
        out.push(Tool {
            name: name.to_string(),
            schema: t.get(schema_key).cloned().unwrap_or(Value::Null),
            namespace: None,
        });
    }
    out
}

/// What the stub needs from a request.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Parsed {
    pub model: String,
    pub stream: bool,
    pub tools: Vec<Tool>,
    /// Tool calls the model already made in this conversation: the index of the next turn.
    /// Calls of a tool-search tool are not turns (the model looks a deferred tool up first).
    pub calls_so_far: usize,
    /// Calls of a tool-search tool in this conversation.
    pub searches: usize,
    /// Tool results the CLI sends back (for the log).
    pub tool_results: Vec<Value>,
}

pub fn parse(protocol: Protocol, body: &Value, model_from_path: Option<&str>) -> Parsed {
    match protocol {
        Protocol::OpenaiResponses => parse_responses(body),
        Protocol::AnthropicMessages => parse_messages(body),
        Protocol::Gemini => parse_gemini(body, model_from_path),
    }
}

/// An OpenAI Responses request.
fn parse_responses(body: &Value) -> Parsed {
    let input = body.get("input").and_then(Value::as_array).cloned().unwrap_or_default();
    Parsed {
        model: body["model"].as_str().unwrap_or_default().to_string(),
        stream: body.get("stream").and_then(Value::as_bool).unwrap_or(false),
        tools: named_tools(body, "parameters"),
        calls_so_far: input
            .iter()
            .filter(|i| {
                matches!(
                    i["type"].as_str(),
                    Some("function_call" | "local_shell_call" | "custom_tool_call")
                )
            })
            .count(),
        searches: 0,
        tool_results: input
            .iter()
            .filter(|i| {
                matches!(
                    i["type"].as_str(),
                    Some("function_call_output" | "local_shell_call_output" | "custom_tool_call_output")
                )
            })
            .cloned()
            .collect(),
    }
}

/// An Anthropic Messages request.
fn parse_messages(body: &Value) -> Parsed {
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let blocks = |role: &str, kind: &str| -> Vec<Value> {
        messages
            .iter()
            .filter(|m| m["role"] == role)
            .filter_map(|m| m["content"].as_array().cloned())
            .flatten()
            .filter(|b| b["type"] == kind)
            .collect()
    };
    Parsed {
        model: body["model"].as_str().unwrap_or_default().to_string(),
        stream: body.get("stream").and_then(Value::as_bool).unwrap_or(false),
        tools: named_tools(body, "input_schema"),
        calls_so_far: blocks("assistant", "tool_use")
            .iter()
            .filter(|b| !is_search(&b["name"]))
            .count(),
        searches: blocks("assistant", "tool_use")
            .iter()
            .filter(|b| is_search(&b["name"]))
            .count(),
        tool_results: blocks("user", "tool_result"),
    }
}

/// A Gemini generateContent request (its model is in the path).
fn parse_gemini(body: &Value, model_from_path: Option<&str>) -> Parsed {
    let contents = body
        .get("contents")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let parts: Vec<Value> = contents
        .iter()
        .filter_map(|c| c["parts"].as_array().cloned())
        .flatten()
        .collect();
    Parsed {
        model: model_from_path.unwrap_or_default().to_string(),
        stream: true,
        tools: body["tools"]
            .as_array()
            .map(|ts| {
                ts.iter()
                    .filter_map(|t| t["functionDeclarations"].as_array().cloned())
                    .flatten()
                    .filter_map(|f| {
                        let schema = f
                            .get("parametersJsonSchema")
                            .or_else(|| f.get("parameters"))
                            .cloned()
                            .unwrap_or(Value::Null);
                        Some(Tool {
                            name: f.get("name")?.as_str()?.to_string(),
                            schema,
                            namespace: None,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default(),
        calls_so_far: parts.iter().filter(|p| p.get("functionCall").is_some()).count(),
        searches: 0,
        tool_results: parts
            .iter()
            .filter(|p| p.get("functionResponse").is_some())
            .cloned()
            .collect(),
    }
}

/// The model's answer for one turn.
pub enum Reply<'a> {
    ToolCall { tool: &'a Tool, arguments: Value },
    Text(&'a str),
}

/// Renders a reply: `(content type, body)`.
pub fn render(protocol: Protocol, reply: &Reply, parsed: &Parsed, turn: usize, usage: Usage) -> (&'static str, String) {
    match protocol {
        Protocol::OpenaiResponses => openai(reply, parsed, turn, usage),
        Protocol::AnthropicMessages => anthropic(reply, parsed, turn, usage),
        Protocol::Gemini => gemini(reply, parsed, usage),
    }
}

fn sse(events: &[(&str, Value)]) -> String {
    events
        .iter()
        .map(|(name, data)| {
            if name.is_empty() {
                format!("data: {data}\n\n")
            } else {
                format!("event: {name}\ndata: {data}\n\n")
            }
        })
        .collect()
}

fn openai(reply: &Reply, p: &Parsed, turn: usize, u: Usage) -> (&'static str, String) {
    let id = format!("resp_canary_{turn}");
    let item = match reply {
        Reply::ToolCall { tool, arguments } => {
            let mut call = json!({"type": "function_call", "id": format!("fc_{turn}"), "call_id": format!("call_canary_{turn}"), "name": tool.name, "arguments": arguments.to_string(), "status": "completed"});
            if let Some(ns) = &tool.namespace {
                call["namespace"] = json!(ns);
            }
            call
        }
        Reply::Text(text) => {
            json!({"type": "message", "id": format!("msg_{turn}"), "role": "assistant", "status": "completed", "content": [{"type": "output_text", "text": text, "annotations": []}]})
        }
    };
    let usage = json!({"input_tokens": u.input_tokens, "input_tokens_details": {"cached_tokens": u.cached_input_tokens}, "output_tokens": u.output_tokens, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": u.input_tokens + u.output_tokens});
    let response = |status: &str, output: Value| json!({"id": id, "object": "response", "created_at": 1_700_000_000, "status": status, "model": p.model, "output": output});
    if !p.stream {
        let mut r = response("completed", json!([item]));
        r["usage"] = usage;
        return ("application/json", r.to_string());
    }
    let mut added = item.clone();
    added["status"] = json!("in_progress");
    let mut events = vec![
        (
            "response.created",
            json!({"type": "response.created", "response": response("in_progress", json!([]))}),
        ),
        (
            "response.output_item.added",
            json!({"type": "response.output_item.added", "output_index": 0, "item": added}),
        ),
    ];
    if let Reply::Text(text) = reply {
        events.push(("response.output_text.delta", json!({"type": "response.output_text.delta", "item_id": format!("msg_{turn}"), "output_index": 0, "content_index": 0, "delta": text})));
    }
    let mut done = response("completed", json!([item.clone()]));
    done["usage"] = usage;
    events.push((
        "response.output_item.done",
        json!({"type": "response.output_item.done", "output_index": 0, "item": item}),
    ));
    events.push((
        "response.completed",
        json!({"type": "response.completed", "response": done}),
    ));
    ("text/event-stream", sse(&events))
}

fn anthropic(reply: &Reply, p: &Parsed, turn: usize, u: Usage) -> (&'static str, String) {
    let id = format!("msg_canary_{turn}");
    let (block, stop) = match reply {
        Reply::ToolCall { tool, arguments } => (
            json!({"type": "tool_use", "id": format!("toolu_canary_{turn}"), "name": tool.name, "input": arguments}),
            "tool_use",
        ),
        Reply::Text(text) => (json!({"type": "text", "text": text}), "end_turn"),
    };
    let fresh_input = u.input_tokens - u.cached_input_tokens;
    let usage = json!({"input_tokens": fresh_input, "cache_creation_input_tokens": 0, "cache_read_input_tokens": u.cached_input_tokens, "output_tokens": u.output_tokens});
    if !p.stream {
        let body = json!({"id": id, "type": "message", "role": "assistant", "model": p.model, "content": [block], "stop_reason": stop, "stop_sequence": null, "usage": usage});
        return ("application/json", body.to_string());
    }
    let (start, delta) = match reply {
        Reply::ToolCall { .. } => {
            let mut b = block.clone();
            b["input"] = json!({});
            (
                b,
                json!({"type": "input_json_delta", "partial_json": block["input"].to_string()}),
            )
        }
        Reply::Text(text) => (
            json!({"type": "text", "text": ""}),
            json!({"type": "text_delta", "text": text}),
        ),
    };
    let mut start_usage = usage.clone();
    start_usage["output_tokens"] = json!(1);
    let events = [
        (
            "message_start",
            json!({"type": "message_start", "message": {"id": id, "type": "message", "role": "assistant", "model": p.model, "content": [], "stop_reason": null, "stop_sequence": null, "usage": start_usage}}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": start}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": delta}),
        ),
        ("content_block_stop", json!({"type": "content_block_stop", "index": 0})),
        (
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": u.output_tokens}}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ];
    ("text/event-stream", sse(&events))
}

fn gemini(reply: &Reply, p: &Parsed, u: Usage) -> (&'static str, String) {
    let part = match reply {
        Reply::ToolCall { tool, arguments } => json!({"functionCall": {"name": tool.name, "args": arguments}}),
        Reply::Text(text) => json!({"text": text}),
    };
    let chunk = json!({
        "candidates": [{"content": {"role": "model", "parts": [part]}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": u.input_tokens, "cachedContentTokenCount": u.cached_input_tokens, "candidatesTokenCount": u.output_tokens, "totalTokenCount": u.input_tokens + u.output_tokens},
        "modelVersion": p.model,
    });
    ("text/event-stream", sse(&[("", chunk)]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(name: &str, schema: Value) -> Tool {
        Tool {
            name: name.into(),
            schema,
            namespace: None,
        }
    }

    #[test]
    fn arguments_follow_the_tool_schema() {
        let codex = tool(
            "exec_command",
            json!({"properties": {"cmd": {"type": "string"}, "workdir": {"type": "string"}}}),
        );
        assert_eq!(shell_arguments(&codex, "ls"), json!({"cmd": "ls"}));
        let old_codex = tool("shell", json!({"properties": {"command": {"type": "array"}}}));
        assert_eq!(
            shell_arguments(&old_codex, "ls"),
            json!({"command": ["bash", "-lc", "ls"]})
        );
        let claude = tool(
            "Bash",
            json!({"properties": {"command": {"type": "string"}, "description": {"type": "string"}}}),
        );
        assert_eq!(shell_arguments(&claude, "ls")["command"], "ls");
    }

    #[test]
    fn shell_tool_is_found_across_renames() {
        let tools = vec![tool("Read", Value::Null), tool("Bash", Value::Null)];
        assert_eq!(shell_tool(&tools).unwrap().name, "Bash");
        let renamed = vec![tool("view_image", Value::Null), tool("unified_shell", Value::Null)];
        assert_eq!(shell_tool(&renamed).unwrap().name, "unified_shell");
        assert!(shell_tool(&[tool("Read", Value::Null)]).is_none());
    }

    #[test]
    fn conversation_position_comes_from_the_history() {
        let body = json!({"model": "m", "stream": true, "tools": [], "input": [
            {"type": "message", "role": "user", "content": []},
            {"type": "function_call", "call_id": "c1", "name": "exec_command", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "ok"}
        ]});
        let p = parse(Protocol::OpenaiResponses, &body, None);
        assert_eq!((p.calls_so_far, p.tool_results.len()), (1, 1));
        let claude = json!({"model": "m", "messages": [
            {"role": "user", "content": [{"type": "text", "text": "go"}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Bash", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}]}
        ]});
        assert_eq!(parse(Protocol::AnthropicMessages, &claude, None).calls_so_far, 1);
    }
}
