//! Request contracts: the shape of what a CLI sends to the model, as the lab's model stub saw it.
//! A platform that proxies or meters model calls breaks on this side of an upgrade (a new tool
//! type its proxy cannot forward, a new endpoint, a stream it no longer gets), so each request's
//! shape is recorded ([`RequestShape`]), merged per CLI into the build's inventory
//! ([`Requests`]), compared between builds ([`diff`]) and held to a suite's pins ([`Expect`]).
//!
//! What is kept: the endpoint and protocol; the parameters (every body key outside the
//! conversation and the tool list, with its value when it is a short scalar); each tool's name,
//! kind, canonical schema hash and schema; the instructions' length and hash; the headers that
//! identify the client. Never the conversation, never a secret header.
//!
//! Every bound is for hostile input: [`MAX_TOOLS`] tools, [`MAX_SCHEMA`] bytes of a schema kept,
//! [`MAX_PARAMS`] parameters and [`MAX_VALUES`] values each, [`MAX_HEADERS`] headers.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Digest as _;
use std::collections::{BTreeMap, BTreeSet};

pub const MAX_TOOLS: usize = 256;
pub const MAX_SCHEMA: usize = 64 << 10;
pub const MAX_PARAMS: usize = 128;
pub const MAX_VALUES: usize = 16;
pub const MAX_HEADERS: usize = 64;
const MAX_NAME: usize = 80;
/// What names a header of comma-separated flags (`anthropic-beta`, `openai-beta`): an API's
/// beta features, not a channel.
const FLAG_HEADER: &str = "beta"; // API beta flags: not a channel
const MAX_VALUE: usize = 60;

/// The body keys that carry the conversation or the tools: recorded in their own way, or not at
/// all, never as parameters.
const CONTENT_KEYS: &[&str] = &[
    "input",
    "messages",
    "contents",
    "tools",
    "instructions",
    "system",
    "systemInstruction",
];

/// Parameters whose values differ per session or per request (ids, cache keys): their presence is
/// kept, their values are not.
const VOLATILE_KEYS: &[&str] = &[
    "prompt_cache_key",
    "metadata",
    "user",
    "previous_response_id",
    "conversation",
    "session_id",
];

/// One tool a request offers the model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ToolShape {
    pub name: String,
    /// `function` for a tool described by a JSON schema the model fills (an OpenAI function, an
    /// Anthropic client tool, a Gemini function declaration); otherwise the wire `type`
    /// (`custom` for OpenAI's free-form tools, `web_search`, `computer_20250124`, …).
    pub kind: String,
    /// SHA-256 of the schema (or a free-form tool's format) as canonical JSON, keys sorted.
    pub schema_hash: String,
    /// The schema itself, or null when it is larger than [`MAX_SCHEMA`].
    pub schema: Value,
}

/// The instructions (system prompt) a request carries: length and a hash of the text with digit
/// runs folded, so dates, paths with counters and versions do not read as a new prompt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Instructions {
    pub bytes: u64,
    pub hash: String,
}

/// One request as the stub received it, reduced to its contract.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RequestShape {
    /// `POST /v1/responses (openai_responses)`: the route without the lab's scenario prefix.
    pub endpoint: String,
    /// Parameter path (`reasoning.effort`) → its value, or `<type>` when it is not a short scalar.
    pub params: BTreeMap<String, String>,
    pub tools: Vec<ToolShape>,
    pub instructions: Option<Instructions>,
    /// The headers that identify the client, lower-cased names.
    pub headers: BTreeMap<String, String>,
}

/// A CLI's request contract over every request of one session or more.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Requests {
    pub requests: u64,
    pub endpoints: BTreeSet<String>,
    pub params: BTreeMap<String, BTreeSet<String>>,
    /// Tool name → its shape (the first seen).
    pub tools: BTreeMap<String, ToolShape>,
    /// Instructions hash → bytes, for requests that offer tools (the agent's own turns).
    pub instructions: BTreeMap<String, u64>,
    pub headers: BTreeMap<String, BTreeSet<String>>,
    /// Anything dropped by the bounds.
    #[serde(default)]
    pub truncated: bool,
}

/// The JSON type of a value, as inventories name it.
pub fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_u64() || n.is_i64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn clip(s: &str, n: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(n).collect()
}

/// SHA-256 of a JSON value as canonical JSON (object keys sorted at every level).
pub fn canonical_hash(v: &Value) -> String {
    let mut v = v.clone();
    v.sort_all_objects();
    hex::encode(sha2::Sha256::digest(v.to_string().as_bytes()))
}

/// The hash of instructions text with every run of digits folded to one `0`.
fn instructions_hash(text: &str) -> String {
    let mut folded = String::with_capacity(text.len());
    let mut in_digits = false;
    for c in text.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                folded.push('0');
            }
            in_digits = true;
        } else {
            folded.push(c);
            in_digits = false;
        }
    }
    hex::encode(sha2::Sha256::digest(folded.as_bytes()))
}

/// Whether a header identifies the client (user agent, beta flags, version headers) and is
/// never a secret or a per-request id.
pub fn identifying_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    let secret = [
        "auth",
        "key",
        "token",
        "secret",
        "cookie",
        "session",
        "request-id",
        "-id",
    ];
    if secret.iter().any(|s| n.contains(s)) {
        return false;
    }
    matches!(n.as_str(), "user-agent" | "originator" | "version" | "x-app")
        || n.starts_with("x-stainless-")
        || n.contains(FLAG_HEADER)
        || n.contains("version")
        || n.contains("client")
}

/// Whether a value carries an id (a UUID, or a run of 16 or more hex digits): such values
/// differ per session and are kept as `<id>`.
fn carries_id(s: &str) -> bool {
    let mut run = 0;
    for c in s.chars() {
        if c.is_ascii_hexdigit() {
            run += 1;
            if run >= 16 {
                return true;
            }
        } else if c != '-' {
            run = 0;
        }
    }
    false
}

/// A parameter's recorded value: short scalars as they are, ids as `<id>`, everything else as
/// its type.
fn param_value(key: &str, v: &Value) -> String {
    let volatile = VOLATILE_KEYS.contains(&key);
    match v {
        Value::Bool(b) if !volatile => b.to_string(),
        Value::Number(n) if !volatile => n.to_string(),
        Value::String(s) if !volatile && carries_id(s) => "<id>".into(),
        Value::String(s) if !volatile && s.chars().count() <= MAX_VALUE => clip(s, MAX_VALUE),
        Value::Array(a) if !volatile && a.iter().all(|x| x.is_string()) && a.len() <= 8 => {
            let mut items: Vec<String> = a.iter().filter_map(Value::as_str).map(|s| clip(s, MAX_VALUE)).collect();
            items.sort();
            format!("[{}]", items.join(","))
        }
        other => format!("<{}>", json_type(other)),
    }
}

/// The parameters of a body: top-level keys outside [`CONTENT_KEYS`], and one level inside
/// objects (`reasoning.effort`, `generationConfig.maxOutputTokens`).
fn params(body: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Some(o) = body.as_object() else {
        return out;
    };
    for (k, v) in o.iter().filter(|(k, _)| !CONTENT_KEYS.contains(&k.as_str())) {
        let key = clip(k, MAX_NAME);
        match v {
            Value::Object(inner) if !VOLATILE_KEYS.contains(&k.as_str()) && !inner.is_empty() => {
                for (ik, iv) in inner {
                    out.insert(format!("{key}.{}", clip(ik, MAX_NAME)), param_value(ik, iv));
                }
            }
            _ => {
                out.insert(key.clone(), param_value(&key, v));
            }
        }
        if out.len() >= MAX_PARAMS {
            break;
        }
    }
    out
}

fn tool_shape(name: &str, kind: &str, schema: &Value) -> ToolShape {
    let kept = if schema.to_string().len() <= MAX_SCHEMA {
        schema.clone()
    } else {
        Value::Null
    };
    ToolShape {
        name: clip(name, MAX_NAME),
        kind: clip(kind, MAX_NAME),
        schema_hash: canonical_hash(schema),
        schema: kept,
    }
}

/// The tools of a body, by protocol: OpenAI `tools[{type, name, parameters | format}]`,
/// Anthropic `tools[{name, input_schema, type?}]`, Gemini `tools[{functionDeclarations[]}]`.
fn tools(protocol: super::protocols::Protocol, body: &Value) -> Vec<ToolShape> {
    use super::protocols::Protocol;
    let list = body["tools"].as_array().cloned().unwrap_or_default();
    let mut out = Vec::new();
    for t in &list {
        match protocol {
            Protocol::OpenaiResponses => {
                let kind = t["type"].as_str().unwrap_or("function");
                let name = t["name"].as_str().unwrap_or(kind);
                // A namespace (Codex's MCP servers, sub-agents) is described by its inner tools.
                let schema = t
                    .get("parameters")
                    .or_else(|| t.get("format"))
                    .or_else(|| t.get("tools"))
                    .unwrap_or(&Value::Null);
                out.push(tool_shape(name, kind, schema));
            }
            Protocol::AnthropicMessages => {
                let kind = match t["type"].as_str() {
                    None | Some("custom") => "function",
                    Some(other) => other,
                };
                let name = t["name"].as_str().unwrap_or(kind);
                out.push(tool_shape(name, kind, t.get("input_schema").unwrap_or(&Value::Null)));
            }
            Protocol::Gemini => {
                for f in t["functionDeclarations"].as_array().into_iter().flatten() {
                    let schema = f
                        .get("parametersJsonSchema")
                        .or_else(|| f.get("parameters"))
                        .unwrap_or(&Value::Null);
                    out.push(tool_shape(f["name"].as_str().unwrap_or("?"), "function", schema));
                }
                // Built-in tools (`googleSearch`, `codeExecution`) are keys of their own.
                for k in t.as_object().into_iter().flat_map(|o| o.keys()) {
                    if k != "functionDeclarations" {
                        out.push(tool_shape(k, k, &Value::Null));
                    }
                }
            }
        }
        if out.len() >= MAX_TOOLS {
            break;
        }
    }
    out
}

/// The instructions text: OpenAI `instructions`, Anthropic `system` (a string or text blocks),
/// Gemini `systemInstruction.parts[].text`.
fn instructions(body: &Value) -> Option<Instructions> {
    let text = match (&body["instructions"], &body["system"], &body["systemInstruction"]) {
        (Value::String(s), _, _) | (_, Value::String(s), _) => s.clone(),
        (_, Value::Array(blocks), _) => blocks
            .iter()
            .filter_map(|b| b["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        (_, _, Value::Object(si)) => si
            .get("parts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => return None,
    };
    Some(Instructions {
        bytes: text.len() as u64,
        hash: instructions_hash(&text),
    })
}

impl RequestShape {
    /// The contract of one request: `route` is the path without the scenario prefix.
    pub fn of(
        protocol: super::protocols::Protocol,
        route: &str,
        body: &Value,
        headers: &[(String, String)],
    ) -> RequestShape {
        let protocol_name = serde_json::to_value(protocol).expect("protocol serializes");
        RequestShape {
            endpoint: format!(
                "POST {} ({})",
                clip(route, MAX_NAME),
                protocol_name.as_str().unwrap_or("?")
            ),
            params: params(body),
            tools: tools(protocol, body),
            instructions: instructions(body),
            headers: headers
                .iter()
                .filter(|(k, _)| identifying_header(k))
                .take(MAX_HEADERS)
                .map(|(k, v)| {
                    let v = if carries_id(v) {
                        "<id>".to_string()
                    } else {
                        clip(v, 200)
                    };
                    (clip(&k.to_ascii_lowercase(), MAX_NAME), v)
                })
                .collect(),
        }
    }
}

/// Adds `value` under `key` in a bounded map of bounded sets; false when a bound dropped it.
fn add_value(map: &mut BTreeMap<String, BTreeSet<String>>, key: &str, value: &str, max_keys: usize) -> bool {
    if !map.contains_key(key) && map.len() >= max_keys {
        return false;
    }
    let set = map.entry(key.to_string()).or_default();
    if set.contains(value) {
        return true;
    }
    if set.len() >= MAX_VALUES {
        return false;
    }
    set.insert(value.to_string());
    true
}

impl Requests {
    /// Adds one request.
    pub fn observe(&mut self, r: &RequestShape) {
        self.requests += 1;
        self.endpoints.insert(r.endpoint.clone());
        for (k, v) in &r.params {
            self.truncated |= !add_value(&mut self.params, k, v, MAX_PARAMS);
        }
        for t in &r.tools {
            self.add_tool(t);
        }
        if let (Some(i), false) = (&r.instructions, r.tools.is_empty()) {
            self.add_instructions(&i.hash, i.bytes);
        }
        for (k, v) in &r.headers {
            self.truncated |= !add_value(&mut self.headers, k, v, MAX_HEADERS);
        }
    }

    fn add_tool(&mut self, t: &ToolShape) {
        if !self.tools.contains_key(&t.name) && self.tools.len() >= MAX_TOOLS {
            self.truncated = true;
            return;
        }
        self.tools.entry(t.name.clone()).or_insert_with(|| t.clone());
    }

    fn add_instructions(&mut self, hash: &str, bytes: u64) {
        if self.instructions.len() < MAX_VALUES || self.instructions.contains_key(hash) {
            self.instructions.insert(hash.to_string(), bytes);
        } else {
            self.truncated = true;
        }
    }

    /// Adds another contract of the same CLI.
    pub fn merge(&mut self, other: &Requests) {
        self.requests += other.requests;
        self.endpoints.extend(other.endpoints.iter().cloned());
        for (k, vs) in &other.params {
            for v in vs {
                self.truncated |= !add_value(&mut self.params, k, v, MAX_PARAMS);
            }
        }
        for t in other.tools.values() {
            self.add_tool(t);
        }
        for (h, b) in &other.instructions {
            self.add_instructions(h, *b);
        }
        for (k, vs) in &other.headers {
            for v in vs {
                self.truncated |= !add_value(&mut self.headers, k, v, MAX_HEADERS);
            }
        }
        self.truncated |= other.truncated;
    }

    /// The largest instructions seen, in bytes.
    pub fn max_instructions(&self) -> u64 {
        self.instructions.values().copied().max().unwrap_or(0)
    }
}

/// One request-side change between two builds of a CLI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "class", rename_all = "snake_case")]
pub enum Change {
    EndpointAdded {
        endpoint: String,
    },
    EndpointRemoved {
        endpoint: String,
    },
    ToolAdded {
        name: String,
        kind: String,
    },
    ToolRemoved {
        name: String,
    },
    ToolRenamed {
        from: String,
        to: String,
    },
    ToolTypeChanged {
        name: String,
        was: String,
        now: String,
    },
    ToolSchemaChanged {
        name: String,
    },
    InstructionsChanged {
        was_bytes: u64,
        now_bytes: u64,
    },
    ParamAdded {
        param: String,
        values: String,
    },
    ParamRemoved {
        param: String,
    },
    ParamChanged {
        param: String,
        was: String,
        now: String,
    },
    HeaderAdded {
        header: String,
        values: String,
    },
    HeaderRemoved {
        header: String,
    },
    HeaderChanged {
        header: String,
        was: String,
        now: String,
    },
    /// A comma-separated flag header (`anthropic-beta`) gained or lost flags.
    BetaFlagsChanged {
        header: String,
        added: Vec<String>,
        removed: Vec<String>,
    },
}

impl Change {
    /// The class as a suite or a report names it (`tool_type_changed`).
    pub fn class(&self) -> String {
        serde_json::to_value(self).expect("change serializes")["class"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Whether the change breaks a proxy that forwards or meters the CLI's model calls: a tool
    /// of a kind the old build never sent, a route it never used, or a change to streaming.
    /// Everything else is informational.
    pub fn breaks(&self, old: &Requests) -> bool {
        let old_kinds: BTreeSet<&str> = old.tools.values().map(|t| t.kind.as_str()).collect();
        match self {
            Change::EndpointAdded { .. } => true,
            Change::ToolTypeChanged { now, .. } | Change::ToolAdded { kind: now, .. } => {
                !old_kinds.contains(now.as_str())
            }
            Change::ParamChanged { param, .. } | Change::ParamAdded { param, .. } | Change::ParamRemoved { param } => {
                param == "stream"
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::EndpointAdded { endpoint } => write!(f, "sends to a new endpoint {endpoint}"),
            Change::EndpointRemoved { endpoint } => write!(f, "no longer sends to {endpoint}"),
            Change::ToolAdded { name, kind } => write!(f, "offers a new {kind} tool {name}"),
            Change::ToolRemoved { name } => write!(f, "no longer offers tool {name}"),
            Change::ToolRenamed { from, to } => write!(f, "renamed tool {from} to {to}"),
            Change::ToolTypeChanged { name, was, now } => write!(f, "sends tool {name} as {now}, was {was}"),
            Change::ToolSchemaChanged { name } => write!(f, "changed the schema of tool {name}"),
            Change::InstructionsChanged { was_bytes, now_bytes } => {
                write!(f, "changed its instructions ({was_bytes} → {now_bytes} bytes)")
            }
            Change::ParamAdded { param, values } => write!(f, "sends a new parameter {param} = {values}"),
            Change::ParamRemoved { param } => write!(f, "no longer sends parameter {param}"),
            Change::ParamChanged { param, was, now } => write!(f, "sends {param} = {now}, was {was}"),
            Change::HeaderAdded { header, values } => write!(f, "sends a new header {header}: {values}"),
            Change::HeaderRemoved { header } => write!(f, "no longer sends header {header}"),
            Change::HeaderChanged { header, was, now } => write!(f, "sends header {header}: {now}, was {was}"),
            Change::BetaFlagsChanged { header, added, removed } => {
                let mut parts = Vec::new();
                if !added.is_empty() {
                    parts.push(format!("adds {}", added.join(", ")));
                }
                if !removed.is_empty() {
                    parts.push(format!("drops {}", removed.join(", ")));
                }
                write!(f, "{header} {}", parts.join("; "))
            }
        }
    }
}

fn joined(set: &BTreeSet<String>) -> String {
    set.iter().cloned().collect::<Vec<_>>().join("|")
}

/// What changed in the request contract from `old` to `new`.
pub fn diff(old: &Requests, new: &Requests) -> Vec<Change> {
    let mut out = Vec::new();
    for e in new.endpoints.difference(&old.endpoints) {
        out.push(Change::EndpointAdded { endpoint: e.clone() });
    }
    for e in old.endpoints.difference(&new.endpoints) {
        out.push(Change::EndpointRemoved { endpoint: e.clone() });
    }
    tool_changes(old, new, &mut out);
    let (was, now) = (old.max_instructions(), new.max_instructions());
    let old_hashes: BTreeSet<&String> = old.instructions.keys().collect();
    let new_hashes: BTreeSet<&String> = new.instructions.keys().collect();
    if !old_hashes.is_empty() && !new_hashes.is_empty() && old_hashes.is_disjoint(&new_hashes) {
        out.push(Change::InstructionsChanged {
            was_bytes: was,
            now_bytes: now,
        });
    }
    keyed_changes(&old.params, &new.params, &mut out, true);
    let (old_flags, new_flags) = (flag_headers(&old.headers), flag_headers(&new.headers));
    let plain = |h: &BTreeMap<String, BTreeSet<String>>| -> BTreeMap<String, BTreeSet<String>> {
        h.iter()
            .filter(|(k, _)| !k.contains(FLAG_HEADER))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    keyed_changes(&plain(&old.headers), &plain(&new.headers), &mut out, false);
    for (header, now) in &new_flags {
        let was = old_flags.get(header);
        let added: Vec<String> = now
            .iter()
            .filter(|f| was.is_none_or(|w| !w.contains(*f)))
            .cloned()
            .collect();
        match was {
            None => out.push(Change::HeaderAdded {
                header: header.clone(),
                values: now.iter().cloned().collect::<Vec<_>>().join(","),
            }),
            Some(was) => {
                let removed: Vec<String> = was.difference(now).cloned().collect();
                if !added.is_empty() || !removed.is_empty() {
                    out.push(Change::BetaFlagsChanged {
                        header: header.clone(),
                        added,
                        removed,
                    });
                }
            }
        }
    }
    for header in old_flags.keys().filter(|h| !new_flags.contains_key(*h)) {
        out.push(Change::HeaderRemoved { header: header.clone() });
    }
    out
}

/// Headers that carry comma-separated flags (`anthropic-beta`, `openai-beta`), as flag sets.
fn flag_headers(headers: &BTreeMap<String, BTreeSet<String>>) -> BTreeMap<String, BTreeSet<String>> {
    headers
        .iter()
        .filter(|(k, _)| k.contains(FLAG_HEADER))
        .map(|(k, vs)| {
            let flags = vs
                .iter()
                .flat_map(|v| v.split(','))
                .map(|f| f.trim().to_string())
                .filter(|f| !f.is_empty())
                .collect();
            (k.clone(), flags)
        })
        .collect()
}

/// Tools added, removed, renamed (one gone and one new with the same kind and schema), retyped,
/// or with a new schema.
fn tool_changes(old: &Requests, new: &Requests, out: &mut Vec<Change>) {
    let mut added: Vec<&ToolShape> = new
        .tools
        .values()
        .filter(|t| !old.tools.contains_key(&t.name))
        .collect();
    for gone in old.tools.values().filter(|t| !new.tools.contains_key(&t.name)) {
        let twin = added
            .iter()
            .position(|t| t.kind == gone.kind && t.schema_hash == gone.schema_hash);
        match twin {
            Some(i) => {
                let to = added.remove(i);
                out.push(Change::ToolRenamed {
                    from: gone.name.clone(),
                    to: to.name.clone(),
                });
            }
            None => out.push(Change::ToolRemoved {
                name: gone.name.clone(),
            }),
        }
    }
    for t in added {
        out.push(Change::ToolAdded {
            name: t.name.clone(),
            kind: t.kind.clone(),
        });
    }
    for (name, t) in &new.tools {
        let Some(o) = old.tools.get(name) else { continue };
        if o.kind != t.kind {
            out.push(Change::ToolTypeChanged {
                name: name.clone(),
                was: o.kind.clone(),
                now: t.kind.clone(),
            });
        } else if o.schema_hash != t.schema_hash {
            out.push(Change::ToolSchemaChanged { name: name.clone() });
        }
    }
}

/// Parameters (`params: true`) or headers added, removed, or with other values. A header's
/// value that only moves with the CLI's version (`claude-cli/2.1.330` → `2.1.332`) is no change.
fn keyed_changes(
    old: &BTreeMap<String, BTreeSet<String>>,
    new: &BTreeMap<String, BTreeSet<String>>,
    out: &mut Vec<Change>,
    params: bool,
) {
    for (k, vs) in new {
        match old.get(k) {
            None if params => out.push(Change::ParamAdded {
                param: k.clone(),
                values: joined(vs),
            }),
            None => out.push(Change::HeaderAdded {
                header: k.clone(),
                values: joined(vs),
            }),
            Some(was) if folded(was) != folded(vs) => out.push(if params {
                Change::ParamChanged {
                    param: k.clone(),
                    was: joined(was),
                    now: joined(vs),
                }
            } else {
                Change::HeaderChanged {
                    header: k.clone(),
                    was: joined(was),
                    now: joined(vs),
                }
            }),
            Some(_) => {}
        }
    }
    for k in old.keys().filter(|k| !new.contains_key(*k)) {
        out.push(if params {
            Change::ParamRemoved { param: k.clone() }
        } else {
            Change::HeaderRemoved { header: k.clone() }
        });
    }
}

/// Values with version-like runs (`2.1.330`, `0.163.0`) folded, so a version bump alone is not
/// a change of shape.
fn folded(values: &BTreeSet<String>) -> BTreeSet<String> {
    let re = regex::Regex::new(r"\d+(\.\d+)+([-.+][0-9A-Za-z.]+)?").expect("regex");
    values.iter().map(|v| re.replace_all(v, "V").to_string()).collect()
}

/// A suite's pins on what a session sends (`expect.requests`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Expect {
    /// Tools the CLI must offer (by name).
    pub tools_include: Vec<String>,
    /// The only tool kinds allowed (`function`, `custom`, …): what the platform's proxy forwards.
    pub tool_types: Vec<String>,
    /// The largest instructions (system prompt) allowed, in bytes.
    pub max_instructions_bytes: Option<u64>,
}

impl Expect {
    /// What the session's requests break of these pins, one sentence each; empty when none.
    pub fn check(&self, seen: &Requests) -> Vec<String> {
        let mut out = Vec::new();
        if seen.requests == 0 {
            return vec!["the CLI sent no request to the model".into()];
        }
        for t in &self.tools_include {
            if !seen.tools.contains_key(t) {
                out.push(format!("does not offer tool {t}"));
            }
        }
        if !self.tool_types.is_empty() {
            for t in seen.tools.values().filter(|t| !self.tool_types.contains(&t.kind)) {
                out.push(format!(
                    "sends tool {} as {} (allowed: {})",
                    t.name,
                    t.kind,
                    self.tool_types.join(", ")
                ));
            }
        }
        if let Some(max) = self.max_instructions_bytes {
            let bytes = seen.max_instructions();
            if bytes > max {
                out.push(format!("sends {bytes} bytes of instructions (at most {max} allowed)"));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
