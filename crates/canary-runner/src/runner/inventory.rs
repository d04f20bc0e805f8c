//! A CLI's event inventory: which event types (and item / subtype / stream-event kinds) a session
//! saw, and each one's field paths with their JSON types. The runner records it beside every
//! session (`canary-runner session --inventory FILE`), the lab keeps it per case and the registry
//! per build, so that what a new CLI version prints can be compared with what the adapter reads
//! ([`Contract`]) and with what an earlier build printed ([`diff`]).
//!
//! Every bound here is for hostile output: at most [`MAX_EVENTS`] kinds, [`MAX_FIELDS`] paths a
//! kind, [`MAX_DEPTH`] levels, and names clipped to [`MAX_NAME`] characters.

use canary_contract::Provider;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

pub const MAX_EVENTS: usize = 256;
pub const MAX_FIELDS: usize = 512;
pub const MAX_DEPTH: usize = 8;
pub const MAX_NAME: usize = 80;

/// What one CLI printed over one session or more.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Inventory {
    /// `codex`, `claude-code`, `gemini`.
    pub provider: String,
    /// The CLI's `--version`.
    pub version: String,
    /// Event kind → what was seen of it.
    pub events: BTreeMap<String, EventShape>,
    /// Lines that were not JSON objects.
    #[serde(default)]
    pub not_json: u64,
    /// The flags the CLI's `--help` lists (the pre-flight's snapshot), when it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flags: Option<BTreeSet<String>>,
    /// Kinds or paths dropped by the bounds above.
    #[serde(default)]
    pub truncated: bool,
    /// What the CLI sent to the model (its request contract), when the lab's stub saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<crate::stub::requests::Requests>,
    /// The same, per suite: what a CLI sends depends on what the suite configures (an MCP
    /// server adds tools), so two builds are compared suite by suite where both have them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requests_by_suite: BTreeMap<String, crate::stub::requests::Requests>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EventShape {
    pub count: u64,
    /// Whether the adapter did not know this kind (it reported `unknown_event`).
    #[serde(default)]
    pub unknown: bool,
    /// Field path (`usage.output_tokens`, `item.content[].type`) → JSON types seen.
    pub fields: BTreeMap<String, BTreeSet<String>>,
}

/// The kind of an event line: its `type`, then `:subtype` when it has one, then `/` and the
/// `type` of its `item` (Codex) or `event` (Claude Code's stream events).
pub fn kind(v: &Value) -> String {
    let mut k = clip(v["type"].as_str().unwrap_or("(no type)"));
    if let Some(s) = v["subtype"].as_str() {
        k = format!("{k}:{}", clip(s));
    }
    for inner in ["item", "event"] {
        if let Some(t) = v[inner]["type"].as_str() {
            k = format!("{k}/{}", clip(t));
            break;
        }
    }
    k
}

pub use crate::stub::requests::json_type;

fn clip(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(MAX_NAME).collect()
}

impl Inventory {
    pub fn new(provider: &str, version: &str) -> Inventory {
        Inventory {
            provider: provider.into(),
            version: clip(version),
            ..Default::default()
        }
    }

    /// Records one line of the CLI's stdout; `unknown` when the adapter did not know it.
    pub fn observe_line(&mut self, line: &str, unknown: bool) {
        match serde_json::from_str::<Value>(line) {
            Ok(v) if v.is_object() => self.observe(&v, unknown),
            _ => self.not_json += 1,
        }
    }

    /// Records a line with the events the adapter made of it (an `unknown_event` error marks
    /// its kind unknown).
    pub fn record(&mut self, line: &str, events: &[super::events::Event]) {
        let unknown = events
            .iter()
            .any(|e| matches!(e, super::events::Event::Error { kind, .. } if kind == "unknown_event"));
        self.observe_line(line, unknown);
    }

    pub fn observe(&mut self, v: &Value, unknown: bool) {
        let k = kind(v);
        if !self.events.contains_key(&k) && self.events.len() >= MAX_EVENTS {
            self.truncated = true;
            return;
        }
        let shape = self.events.entry(k).or_default();
        shape.count += 1;
        shape.unknown |= unknown;
        let mut truncated = false;
        walk(v, "", 0, &mut shape.fields, &mut truncated);
        self.truncated |= truncated;
    }

    /// Whether both saw the same kinds, fields, types and flags (counts aside).
    pub fn same_shape(&self, other: &Inventory) -> bool {
        self.events.len() == other.events.len()
            && self.events.iter().all(|(k, s)| {
                other
                    .events
                    .get(k)
                    .is_some_and(|o| o.fields == s.fields && o.unknown == s.unknown)
            })
            && self.flags == other.flags
            && self.requests_shape() == other.requests_shape()
    }

    /// The request contracts without their request counts (which grow with every session).
    fn requests_shape(
        &self,
    ) -> (
        Option<crate::stub::requests::Requests>,
        BTreeMap<&str, crate::stub::requests::Requests>,
    ) {
        let shape = |r: &crate::stub::requests::Requests| crate::stub::requests::Requests {
            requests: 0,
            ..r.clone()
        };
        (
            self.requests.as_ref().map(shape),
            self.requests_by_suite
                .iter()
                .map(|(k, r)| (k.as_str(), shape(r)))
                .collect(),
        )
    }

    /// Adds another session's inventory of the same CLI.
    pub fn merge(&mut self, other: &Inventory) {
        for (k, s) in &other.events {
            if !self.events.contains_key(k) && self.events.len() >= MAX_EVENTS {
                self.truncated = true;
                continue;
            }
            let mine = self.events.entry(k.clone()).or_default();
            mine.count += s.count;
            mine.unknown |= s.unknown;
            for (p, types) in &s.fields {
                if !mine.fields.contains_key(p) && mine.fields.len() >= MAX_FIELDS {
                    self.truncated = true;
                    continue;
                }
                mine.fields.entry(p.clone()).or_default().extend(types.iter().cloned());
            }
        }
        self.not_json += other.not_json;
        self.truncated |= other.truncated;
        if let Some(f) = &other.flags {
            self.flags
                .get_or_insert_with(Default::default)
                .extend(f.iter().cloned());
        }
        if self.version.is_empty() {
            self.version = other.version.clone();
        }
        if let Some(r) = &other.requests {
            self.requests.get_or_insert_with(Default::default).merge(r);
        }
        for (suite, r) in &other.requests_by_suite {
            self.requests_by_suite.entry(suite.clone()).or_default().merge(r);
        }
    }

    /// Checks the inventory against what the adapter reads: unknown kinds, required kinds not
    /// seen, required fields lost or retyped. Empty when the output matches the contract.
    pub fn against(&self, contract: &Contract) -> Vec<Finding> {
        let mut out = Vec::new();
        for (k, s) in &self.events {
            if s.unknown {
                out.push(Finding::UnknownEvent(k.clone()));
            }
        }
        if self.not_json > 0 {
            out.push(Finding::NotJson(self.not_json));
        }
        for rule in contract.events {
            // A rule names a kind or a family (`result` covers `result:success`).
            let seen: Vec<&EventShape> = self
                .events
                .iter()
                .filter(|(k, _)| {
                    k.as_str() == rule.kind
                        || k.strip_prefix(rule.kind)
                            .is_some_and(|r| r.starts_with(':') || r.starts_with('/'))
                })
                .map(|(_, s)| s)
                .collect();
            match seen.is_empty() {
                true if rule.required => out.push(Finding::Missing(rule.kind.to_string())),
                true => {}
                false => {
                    let mut fields: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
                    for s in &seen {
                        for (p, t) in &s.fields {
                            fields.entry(p.as_str()).or_default().extend(t.iter().cloned());
                        }
                    }
                    for (path, ty) in rule.fields {
                        match fields.get(*path) {
                            None => out.push(Finding::LostField(rule.kind.into(), path.to_string())),
                            Some(types) if !types.contains(*ty) => out.push(Finding::Retyped {
                                kind: rule.kind.into(),
                                path: path.to_string(),
                                was: ty.to_string(),
                                now: types.iter().cloned().collect::<Vec<_>>().join("|"),
                            }),
                            Some(_) => {}
                        }
                    }
                }
            }
        }
        if let Some(flags) = &self.flags {
            for f in contract.flags {
                if !flags.contains(*f) {
                    out.push(Finding::LostFlag(f.to_string()));
                }
            }
        }
        out
    }
}

fn walk(v: &Value, path: &str, depth: usize, fields: &mut BTreeMap<String, BTreeSet<String>>, truncated: &mut bool) {
    let mut add = |p: &str, t: &str, truncated: &mut bool| {
        if !fields.contains_key(p) && fields.len() >= MAX_FIELDS {
            *truncated = true;
            return false;
        }
        fields.entry(p.to_string()).or_default().insert(t.to_string());
        true
    };
    if !path.is_empty() && !add(path, json_type(v), truncated) {
        return;
    }
    if depth >= MAX_DEPTH {
        return;
    }
    match v {
        Value::Object(o) => {
            for (k, child) in o {
                let k = clip(k);
                let p = if path.is_empty() { k } else { format!("{path}.{k}") };
                walk(child, &p, depth + 1, fields, truncated);
            }
        }
        Value::Array(a) => {
            for child in a {
                walk(child, &format!("{path}[]"), depth + 1, fields, truncated);
            }
        }
        _ => {}
    }
}

/// What an adapter relies on in its CLI's output and command line.
#[derive(Debug)]
pub struct Contract {
    pub events: &'static [Rule],
    /// The flags the runner passes (checked against the pre-flight's `--help` snapshot).
    pub flags: &'static [&'static str],
    /// The `--help` invocation that lists those flags (after the CLI's command).
    pub help: &'static [&'static str],
    /// Session features and the oldest CLI version the adapter has them for (`None`: not at all).
    pub features: &'static [(Feature, Option<&'static str>)],
}

/// What a session may ask of a CLI beyond one prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    /// Continue an earlier conversation with the CLI's own resume mechanism.
    Resume,
    /// Call tools served over MCP.
    Mcp,
}

impl Feature {
    pub fn name(self) -> &'static str {
        match self {
            Feature::Resume => "resume",
            Feature::Mcp => "mcp",
        }
    }
}

impl Contract {
    /// `Err` with the suite's words when this CLI version lacks `feature` by the adapter's
    /// contract: `skipped: resume unsupported in codex 0.120.0 (…)`. A version that does not
    /// parse is taken to have it (the session then tells).
    pub fn supports(&self, provider: &str, version: &str, feature: Feature) -> Result<(), String> {
        let floor = self.features.iter().find(|(f, _)| *f == feature).and_then(|(_, v)| *v);
        let Some(floor) = floor else {
            return Err(format!(
                "skipped: {} unsupported in {provider} {version} (the adapter's contract does not have it)",
                feature.name()
            ));
        };
        match (semver::Version::parse(version), semver::Version::parse(floor)) {
            (Ok(v), Ok(f)) if v < f => Err(format!(
                "skipped: {} unsupported in {provider} {version} (the adapter's contract has it from {floor})",
                feature.name()
            )),
            _ => Ok(()),
        }
    }
}

/// One event kind the adapter reads: whether every session must print it, and the fields (with
/// their JSON types) it reads when it does.
#[derive(Debug)]
pub struct Rule {
    pub kind: &'static str,
    pub required: bool,
    pub fields: &'static [(&'static str, &'static str)],
}

/// Each provider's contract, kept beside its adapter.
pub fn contract(p: Provider) -> &'static Contract {
    match p {
        Provider::Codex => &super::adapters::codex::CONTRACT,
        Provider::ClaudeCode => &super::adapters::claude::CONTRACT,
        Provider::Gemini => &super::adapters::gemini::CONTRACT,
    }
}

/// One way the output departs from the contract or from an earlier inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Finding {
    UnknownEvent(String),
    Missing(String),
    LostField(String, String),
    Retyped {
        kind: String,
        path: String,
        was: String,
        now: String,
    },
    NotJson(u64),
    LostFlag(String),
    NewEvent(String),
    NewField(String, String),
    /// A change in what the CLI sends to the model; `breaks` when a proxy would not forward it.
    Request {
        change: crate::stub::requests::Change,
        breaks: bool,
    },
}

impl Finding {
    /// Whether the finding breaks what the adapter reads (new kinds and fields an adapter does not
    /// read are reported but are not drift by themselves).
    pub fn breaks(&self) -> bool {
        match self {
            Finding::NewEvent(_) | Finding::NewField(..) => false,
            Finding::Request { breaks, .. } => *breaks,
            _ => true,
        }
    }

    /// The finding's class, as `canary drift --json` names it (`lost_field`, `tool_type_changed`).
    pub fn class(&self) -> String {
        match self {
            Finding::Request { change, .. } => change.class(),
            other => serde_json::to_value(other)
                .ok()
                .and_then(|v| match v {
                    serde_json::Value::String(s) => Some(s),
                    serde_json::Value::Object(o) => o.keys().next().cloned(),
                    _ => None,
                })
                .unwrap_or_default(),
        }
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Finding::UnknownEvent(k) => write!(f, "emits unknown event {k}"),
            Finding::Missing(k) => write!(f, "{k} no longer seen"),
            Finding::LostField(k, p) => write!(f, "{k} lost field {p}"),
            Finding::Retyped { kind, path, was, now } => write!(f, "{kind} field {path} is {now}, was {was}"),
            Finding::NotJson(n) => write!(f, "prints {n} line(s) that are not JSON objects"),
            Finding::LostFlag(x) => write!(f, "no longer lists flag {x}"),
            Finding::NewEvent(k) => write!(f, "emits new event {k}"),
            Finding::NewField(k, p) => write!(f, "{k} has new field {p}"),
            Finding::Request { change, .. } => write!(f, "{change}"),
        }
    }
}

/// The one line a person reads: `drift: codex 0.164.0 emits unknown event turn.done;
/// turn.completed no longer seen`. Findings that do not break the adapter are left out; `None`
/// when nothing breaks.
pub fn drift_line(provider: &str, version: &str, findings: &[Finding]) -> Option<String> {
    let breaking: Vec<String> = findings.iter().filter(|f| f.breaks()).map(|f| f.to_string()).collect();
    if breaking.is_empty() {
        return None;
    }
    let mut shown: Vec<String> = breaking.iter().take(4).cloned().collect();
    if breaking.len() > 4 {
        shown.push(format!("and {} more", breaking.len() - 4));
    }
    Some(format!("drift: {provider} {version} {}", shown.join("; ")))
}

/// What changed from `old` to `new` (two builds' inventories of one CLI): kinds and fields that
/// vanished or changed type (drift), and new ones (reported, not drift).
pub fn diff(old: &Inventory, new: &Inventory) -> Vec<Finding> {
    let mut out = Vec::new();
    for (k, s) in &new.events {
        match old.events.get(k) {
            None if s.unknown => out.push(Finding::UnknownEvent(k.clone())),
            None => out.push(Finding::NewEvent(k.clone())),
            Some(o) => {
                for (p, types) in &s.fields {
                    match o.fields.get(p) {
                        None => out.push(Finding::NewField(k.clone(), p.clone())),
                        Some(was) if was != types && !types.is_superset(was) => out.push(Finding::Retyped {
                            kind: k.clone(),
                            path: p.clone(),
                            was: was.iter().cloned().collect::<Vec<_>>().join("|"),
                            now: types.iter().cloned().collect::<Vec<_>>().join("|"),
                        }),
                        Some(_) => {}
                    }
                }
                for p in o.fields.keys().filter(|p| !s.fields.contains_key(*p)) {
                    out.push(Finding::LostField(k.clone(), p.clone()));
                }
            }
        }
    }
    for k in old.events.keys().filter(|k| !new.events.contains_key(*k)) {
        out.push(Finding::Missing(k.clone()));
    }
    if let (Some(o), Some(n)) = (&old.flags, &new.flags) {
        out.extend(o.difference(n).map(|f| Finding::LostFlag(f.clone())));
    }
    out.extend(request_findings(old, new));
    out
}

/// The request-side changes from `old` to `new`: suite by suite for the suites both ran (a
/// suite that configures an MCP server is compared with itself, not with one that does not),
/// each change once; from the whole contracts when either build has none per suite (inventories
/// recorded before they were kept so).
fn request_findings(old: &Inventory, new: &Inventory) -> Vec<Finding> {
    let pairs: Vec<(&crate::stub::requests::Requests, &crate::stub::requests::Requests)> =
        if old.requests_by_suite.is_empty() || new.requests_by_suite.is_empty() {
            old.requests.iter().zip(new.requests.iter()).collect()
        } else {
            old.requests_by_suite
                .iter()
                .filter_map(|(suite, o)| new.requests_by_suite.get(suite).map(|n| (o, n)))
                .collect()
        };
    let mut out: Vec<Finding> = Vec::new();
    for (o, n) in pairs {
        for change in crate::stub::requests::diff(o, n) {
            let f = Finding::Request {
                breaks: change.breaks(o),
                change,
            };
            if !out.contains(&f) {
                out.push(f);
            }
        }
    }
    out
}

/// The flags a `--help` text lists: every `--long` option, and `-x` short ones.
pub fn help_flags(help: &str) -> BTreeSet<String> {
    let re = regex::Regex::new(r"(?:^|[\s,\[(])(--?[A-Za-z][A-Za-z0-9-]*)").expect("regex");
    re.captures_iter(help)
        .map(|c| c[1].to_string())
        .filter(|f| f.len() <= MAX_NAME)
        .take(2000)
        .collect()
}

/// The pre-flight's answer for one CLI: its version, the flags its `--help` lists, and the flags
/// the runner relies on that it no longer lists.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Preflight {
    pub provider: String,
    pub version: String,
    pub flags: BTreeSet<String>,
    pub missing: Vec<String>,
}

impl Preflight {
    /// `drift: claude-code 2.1.330 no longer lists flag --verbose`, or `None`.
    pub fn drift_line(&self) -> Option<String> {
        let findings: Vec<Finding> = self.missing.iter().map(|f| Finding::LostFlag(f.clone())).collect();
        drift_line(&self.provider, &self.version, &findings)
    }
}

/// Runs the CLI's `--help` (the contract's invocation) and checks the flags the runner passes.
/// `Err` when the CLI cannot be run at all. The help text is read up to 1 MiB, for 30 s at most.
pub async fn preflight(p: Provider, cli: &std::path::Path) -> Result<Preflight, String> {
    let c = contract(p);
    let version = super::session::installed_version(cli)
        .await
        .unwrap_or_else(|| "unknown".into());
    let run = tokio::process::Command::new(cli)
        .args(c.help)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(30), run)
        .await
        .map_err(|_| format!("{} {} did not finish within 30s", cli.display(), c.help.join(" ")))?
        .map_err(|e| format!("cannot run {}: {e}", cli.display()))?;
    let mut text = out.stdout;
    text.extend_from_slice(&out.stderr);
    text.truncate(1 << 20);
    let flags = help_flags(&String::from_utf8_lossy(&text));
    let missing = c
        .flags
        .iter()
        .filter(|f| !flags.contains(**f))
        .map(|f| f.to_string())
        .collect();
    Ok(Preflight {
        provider: p.name().into(),
        version,
        flags,
        missing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A request contract offering these function tools (each with an empty schema).
    fn offering(names: &[&str]) -> crate::stub::requests::Requests {
        let mut r = crate::stub::requests::Requests {
            requests: 1,
            ..Default::default()
        };
        for n in names {
            r.tools.insert(
                n.to_string(),
                crate::stub::requests::ToolShape {
                    name: n.to_string(),
                    kind: "function".into(),
                    schema_hash: "h".into(),
                    schema: json!({}),
                },
            );
        }
        r
    }

    #[test]
    fn request_contracts_are_compared_suite_by_suite() {
        let of = |suites: &[(&str, &[&str])]| {
            let mut inv = Inventory::default();
            for (suite, tools) in suites {
                let one = Inventory {
                    requests: Some(offering(tools)),
                    requests_by_suite: BTreeMap::from([(suite.to_string(), offering(tools))]),
                    ..Default::default()
                };
                inv.merge(&one);
            }
            inv
        };
        // The old build also ran a suite with an MCP server; the new one only the golden path.
        let old = of(&[
            ("golden-path", &["shell"]),
            ("session-features", &["shell", "mcp__canary"]),
        ]);
        let new = of(&[("golden-path", &["shell"])]);
        assert_eq!(
            old.requests.as_ref().unwrap().tools.len(),
            2,
            "the whole contract mixes both"
        );
        assert!(diff(&old, &new).is_empty(), "{:?}", diff(&old, &new));
        // A tool gone from the golden path in both suites is one finding.
        let newer = of(&[("golden-path", &[]), ("session-features", &["mcp__canary"])]);
        let found = diff(&old, &newer);
        assert_eq!(found.len(), 1, "{found:?}");
        // Inventories without per-suite contracts are compared whole, as before.
        let whole = |tools: &[&str]| Inventory {
            requests: Some(offering(tools)),
            ..Default::default()
        };
        assert_eq!(diff(&whole(&["shell", "x"]), &whole(&["shell"])).len(), 1);
    }

    fn codex_turn(output: Value) -> Value {
        json!({"type": "turn.completed", "usage": {"input_tokens": 10, "cached_input_tokens": 0, "output_tokens": output}})
    }

    #[test]
    fn kinds_name_subtypes_items_and_stream_events() {
        assert_eq!(kind(&json!({"type": "system", "subtype": "init"})), "system:init");
        assert_eq!(
            kind(&json!({"type": "item.completed", "item": {"type": "agent_message"}})),
            "item.completed/agent_message"
        );
        assert_eq!(
            kind(&json!({"type": "stream_event", "event": {"type": "message_delta"}})),
            "stream_event/message_delta"
        );
        assert_eq!(kind(&json!({"no": "type"})), "(no type)");
    }

    #[test]
    fn fields_carry_their_types_and_arrays_merge() {
        let mut inv = Inventory::new("codex", "0.1.0");
        inv.observe(
            &json!({"type": "x", "a": {"b": 1, "c": [ {"d": "s"}, {"d": null} ]}, "f": 1.5}),
            false,
        );
        let f = &inv.events["x"].fields;
        assert_eq!(f["a.b"], BTreeSet::from(["integer".to_string()]));
        assert_eq!(f["a.c[].d"], BTreeSet::from(["string".to_string(), "null".to_string()]));
        assert_eq!(f["f"], BTreeSet::from(["number".to_string()]));
        inv.observe_line("not json", false);
        inv.observe_line("[1]", false);
        assert_eq!(inv.not_json, 2);
    }

    #[test]
    fn shape_ignores_counts_and_sees_new_types() {
        let mut a = Inventory::new("codex", "0.1.0");
        a.observe(&codex_turn(json!(5)), false);
        let mut b = a.clone();
        b.observe(&codex_turn(json!(7)), false);
        assert!(a.same_shape(&b), "a second turn of the same shape");
        b.observe(&codex_turn(json!("5")), false);
        assert!(!a.same_shape(&b), "output_tokens is now also a string");
        let mut c = a.clone();
        c.flags = Some(BTreeSet::from(["--json".to_string()]));
        assert!(!a.same_shape(&c), "a flag snapshot");
    }

    #[test]
    fn a_renamed_event_reads_as_unknown_and_no_longer_seen() {
        let mut inv = Inventory::new("codex", "0.164.0");
        inv.observe(&json!({"type": "thread.started", "thread_id": "t"}), false);
        inv.observe(&json!({"type": "turn.done", "usage": {}}), true);
        let findings = inv.against(contract(Provider::Codex));
        assert_eq!(
            drift_line("codex", "0.164.0", &findings).unwrap(),
            "drift: codex 0.164.0 emits unknown event turn.done; turn.completed no longer seen"
        );
    }

    #[test]
    fn a_dropped_or_retyped_field_is_drift_and_the_real_shape_is_not() {
        let mut inv = Inventory::new("codex", "0.163.0");
        inv.observe(&json!({"type": "thread.started", "thread_id": "t"}), false);
        inv.observe(&codex_turn(json!(5)), false);
        assert_eq!(inv.against(contract(Provider::Codex)), vec![]);
        let mut dropped = Inventory::new("codex", "0.163.0");
        dropped.observe(&json!({"type": "thread.started", "thread_id": "t"}), false);
        dropped.observe(
            &json!({"type": "turn.completed", "usage": {"input_tokens": 1, "cached_input_tokens": 0}}),
            false,
        );
        assert_eq!(
            drift_line("codex", "0.163.0", &dropped.against(contract(Provider::Codex))).unwrap(),
            "drift: codex 0.163.0 turn.completed lost field usage.output_tokens"
        );
        let mut retyped = Inventory::new("codex", "0.163.0");
        retyped.observe(&json!({"type": "thread.started", "thread_id": "t"}), false);
        retyped.observe(&codex_turn(json!("5")), false);
        assert_eq!(
            drift_line("codex", "0.163.0", &retyped.against(contract(Provider::Codex))).unwrap(),
            "drift: codex 0.163.0 turn.completed field usage.output_tokens is string, was integer"
        );
    }

    #[test]
    fn diffs_between_builds_name_what_vanished_and_what_is_new() {
        let mut old = Inventory::new("codex", "1");
        old.observe(&codex_turn(json!(1)), false);
        old.flags = Some(BTreeSet::from(["--json".to_string(), "--sandbox".to_string()]));
        let mut new = Inventory::new("codex", "2");
        new.observe(
            &json!({"type": "turn.completed", "usage": {"input_tokens": 1, "output_tokens": 2, "reasoning_tokens": 3}}),
            false,
        );
        new.observe(&json!({"type": "turn.done"}), false);
        new.flags = Some(BTreeSet::from(["--json".to_string()]));
        let d = diff(&old, &new);
        assert!(d.contains(&Finding::LostField(
            "turn.completed".into(),
            "usage.cached_input_tokens".into()
        )));
        assert!(d.contains(&Finding::NewField(
            "turn.completed".into(),
            "usage.reasoning_tokens".into()
        )));
        assert!(d.contains(&Finding::NewEvent("turn.done".into())));
        assert!(d.contains(&Finding::LostFlag("--sandbox".into())));
        assert!(diff(&old, &old).is_empty());
        // Merging sessions keeps every type seen.
        let mut m = old.clone();
        m.merge(&new);
        assert_eq!(m.events["turn.completed"].count, 2);
    }

    #[test]
    fn hostile_output_is_bounded() {
        let mut inv = Inventory::new("codex", "1");
        for i in 0..(MAX_EVENTS + 10) {
            inv.observe(&json!({"type": format!("e{i}")}), true);
        }
        assert_eq!(inv.events.len(), MAX_EVENTS);
        let wide: serde_json::Map<String, Value> = (0..2000).map(|i| (format!("k{i}"), json!(1))).collect();
        let mut v = Value::Object(wide);
        v["type"] = json!("wide");
        let mut inv = Inventory::new("codex", "1");
        inv.observe(&v, false);
        assert!(inv.events["wide"].fields.len() <= MAX_FIELDS);
        assert!(inv.truncated);
        let mut deep = json!(1);
        for _ in 0..100 {
            deep = json!({ "d": deep });
        }
        deep["type"] = json!("deep");
        inv.observe(&deep, false);
        assert!(
            inv.events["deep"]
                .fields
                .keys()
                .all(|p| p.split('.').count() <= MAX_DEPTH)
        );
    }

    #[test]
    fn features_a_version_lacks_by_its_adapters_contract_are_named() {
        let codex = contract(Provider::Codex);
        assert_eq!(codex.supports("codex", "0.163.0", Feature::Resume), Ok(()));
        assert_eq!(
            codex.supports("codex", "0.120.0", Feature::Mcp).unwrap_err(),
            "skipped: mcp unsupported in codex 0.120.0 (the adapter's contract has it from 0.133.0)"
        );
        assert_eq!(
            contract(Provider::Gemini)
                .supports("gemini", "0.40.0", Feature::Resume)
                .unwrap_err(),
            "skipped: resume unsupported in gemini 0.40.0 (the adapter's contract does not have it)"
        );
        // A version that does not parse is not skipped: the session itself tells.
        assert_eq!(codex.supports("codex", "unknown", Feature::Resume), Ok(()));
    }

    #[test]
    fn help_text_lists_long_and_short_flags() {
        let help = "Usage: claude [options]\n  -p, --print  Print\n  --output-format <format>\n  --allowedTools, --allowed-tools <tools...>";
        let f = help_flags(help);
        for x in ["-p", "--print", "--output-format", "--allowedTools", "--allowed-tools"] {
            assert!(f.contains(x), "{x} in {f:?}");
        }
    }
}
