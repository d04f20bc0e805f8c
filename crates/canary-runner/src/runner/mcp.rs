//! The lab's MCP server fixture (`canary-runner mcp-fixture`): a Model Context Protocol server
//! over stdio (JSON-RPC 2.0, one message per line) with one tool, `ticket_status`, whose answer
//! is a pure function of its arguments. The runner configures it into each CLI for a session that
//! asks for it; the lab's stub makes the model call it; the fixture logs every call, so the lab
//! can check that the call reached the server with the scenario's arguments and that the answer
//! reached the model.

use serde_json::{Value, json};
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// The server's name as each CLI is told it (tools appear as `mcp__canary__ticket_status` in
/// Claude Code, under the server's name in Codex).
pub const SERVER: &str = "canary";
/// The fixture's one tool.
pub const TOOL: &str = "ticket_status";
/// Protocol revisions the fixture speaks; a client asking for another gets the newest.
const VERSIONS: &[&str] = &["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];
/// The longest message line read; a longer one is answered with a parse error.
const MAX_LINE: usize = 1 << 20;

/// What the tool answers for `arguments`: the text the model must receive.
pub fn answer(arguments: &Value) -> String {
    let ticket = arguments["ticket"].as_str().unwrap_or("(none)");
    format!("ticket {ticket}: status canary-green-{}", ticket.len())
}

fn tool_list() -> Value {
    json!({"tools": [{
        "name": TOOL,
        "description": "Looks up the status of a ticket in the canary lab's tracker.",
        "inputSchema": {"type": "object", "properties": {"ticket": {"type": "string", "description": "The ticket id"}}, "required": ["ticket"]},
        "annotations": {"readOnlyHint": true, "openWorldHint": false}
    }]})
}

/// One line of the fixture's log: a call as the server received it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Call {
    pub ts: String,
    pub tool: String,
    pub arguments: Value,
    pub answer: Option<String>,
}

/// The reply to one JSON-RPC message (`None` for notifications), and the call it made, if any.
pub fn handle(msg: &Value) -> (Option<Value>, Option<Call>) {
    let Some(id) = msg.get("id").cloned() else {
        return (None, None);
    };
    let ok = |result: Value| Some(json!({"jsonrpc": "2.0", "id": id.clone(), "result": result}));
    let err = |code: i64, message: String| {
        Some(json!({"jsonrpc": "2.0", "id": id.clone(), "error": {"code": code, "message": message}}))
    };
    match msg["method"].as_str().unwrap_or_default() {
        "initialize" => {
            let asked = msg["params"]["protocolVersion"].as_str().unwrap_or_default();
            let version = VERSIONS
                .iter()
                .find(|v| **v == asked)
                .unwrap_or(&VERSIONS[VERSIONS.len() - 1]);
            (
                ok(
                    json!({"protocolVersion": version, "capabilities": {"tools": {"listChanged": false}}, "serverInfo": {"name": SERVER, "version": env!("CARGO_PKG_VERSION")}}),
                ),
                None,
            )
        }
        "ping" => (ok(json!({})), None),
        "tools/list" => (ok(tool_list()), None),
        "resources/list" => (ok(json!({"resources": []})), None),
        "resources/templates/list" => (ok(json!({"resourceTemplates": []})), None),
        "prompts/list" => (ok(json!({"prompts": []})), None),
        "tools/call" => {
            let name = msg["params"]["name"].as_str().unwrap_or_default().to_string();
            let arguments = msg["params"]["arguments"].clone();
            let mut call = Call {
                ts: canary_contract::time::now(),
                tool: name.chars().take(80).collect(),
                arguments: arguments.clone(),
                answer: None,
            };
            if name != TOOL {
                return (err(-32602, format!("unknown tool {}", call.tool)), Some(call));
            }
            let text = answer(&arguments);
            call.answer = Some(text.clone());
            (
                ok(json!({"content": [{"type": "text", "text": text}], "isError": false})),
                Some(call),
            )
        }
        other => (
            err(
                -32601,
                format!("method not found: {}", other.chars().take(80).collect::<String>()),
            ),
            None,
        ),
    }
}

/// Serves stdin → stdout until stdin closes, appending each call to `log`.
pub fn serve(log: Option<&Path>) -> std::io::Result<()> {
    use std::io::BufRead as _;
    let stdin = std::io::stdin();
    let mut reader = stdin.lock();
    let mut out = std::io::stdout().lock();
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = std::io::Read::take(&mut reader, MAX_LINE as u64 + 1).read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(());
        }
        let reply = if line.len() > MAX_LINE && !line.ends_with(b"\n") {
            // Skip the rest of the oversized line.
            let mut rest = Vec::new();
            reader.read_until(b'\n', &mut rest)?;
            Some(json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": "message too long"}}))
        } else {
            match serde_json::from_slice::<Value>(&line) {
                Ok(msg) => {
                    let (reply, call) = handle(&msg);
                    if let (Some(path), Some(call)) = (log, call) {
                        append(path, &call)?;
                    }
                    reply
                }
                Err(_) if line.iter().all(u8::is_ascii_whitespace) => None,
                Err(e) => Some(
                    json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": format!("parse error: {e}")}}),
                ),
            }
        };
        if let Some(r) = reply {
            writeln!(out, "{r}")?;
            out.flush()?;
        }
    }
}

fn append(path: &Path, call: &Call) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    writeln!(f, "{}", serde_json::to_string(call).expect("call serializes"))
}

/// How a CLI starts the fixture: this runner's own executable with `mcp-fixture --log LOG`.
pub fn command(log: &Path) -> std::io::Result<(PathBuf, Vec<String>)> {
    Ok((
        std::env::current_exe()?,
        vec!["mcp-fixture".into(), "--log".into(), log.display().to_string()],
    ))
}

/// The fixture's calls from its log text (unreadable lines skipped).
pub fn calls(text: &[u8]) -> Vec<Call> {
    String::from_utf8_lossy(text)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixture_speaks_mcp_and_logs_calls() {
        let (init, _) = handle(
            &json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "codex"}}}),
        );
        assert_eq!(init.unwrap()["result"]["protocolVersion"], "2025-06-18");
        let (newer, _) = handle(&json!({"id": 1, "method": "initialize", "params": {"protocolVersion": "2099-01-01"}}));
        assert_eq!(newer.unwrap()["result"]["protocolVersion"], "2025-11-25");
        assert_eq!(
            handle(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"})),
            (None, None)
        );
        let (list, _) = handle(&json!({"id": 2, "method": "tools/list"}));
        assert_eq!(list.unwrap()["result"]["tools"][0]["name"], TOOL);
        let (reply, call) = handle(
            &json!({"id": "c", "method": "tools/call", "params": {"name": TOOL, "arguments": {"ticket": "LAB-7"}}}),
        );
        let reply = reply.unwrap();
        assert_eq!(reply["id"], "c");
        assert_eq!(
            reply["result"]["content"][0]["text"],
            "ticket LAB-7: status canary-green-5"
        );
        let call = call.unwrap();
        assert_eq!(
            (call.tool.as_str(), &call.arguments),
            (TOOL, &json!({"ticket": "LAB-7"}))
        );
        let (unknown, call) =
            handle(&json!({"id": 3, "method": "tools/call", "params": {"name": "rm", "arguments": {}}}));
        assert_eq!(unknown.unwrap()["error"]["code"], -32602);
        assert!(
            call.unwrap().answer.is_none(),
            "an unknown tool is logged, not answered"
        );
        let (nope, _) = handle(&json!({"id": 4, "method": "sampling/createMessage"}));
        assert_eq!(nope.unwrap()["error"]["code"], -32601);
    }
}
