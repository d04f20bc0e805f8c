//! The CLIs' own OpenTelemetry, received over OTLP/HTTP (`POST /otlp/v1/logs`, `/otlp/v1/metrics`):
//! untrusted bodies (protobuf or JSON, plain or gzip) decoded within bounds, and each log record
//! read as one event of one session with what it adds to that session's usage.
//!
//! Both CLIs export events as log records. Claude Code names them `claude_code.<event>` (body
//! and `event.name`), Codex `codex.<event>` (`event.name`). A record belongs to the session named
//! by its `canary.session` attribute (the runner sets it with `OTEL_RESOURCE_ATTRIBUTES`), else by
//! the CLI's own `session.id` (Claude Code) or `conversation.id` (Codex), record attributes before
//! resource attributes. What a record adds:
//!
//! | event | adds |
//! |---|---|
//! | `api_request` | a request; tokens (input + cache read + cache creation + output); cost (`cost_usd_micros`, else `cost_usd`); an API error when its status is 400 or more or it carries `error.message` |
//! | `api_error` | an API error |
//! | `sse_event` of kind `response.completed` with token counts (Codex) | tokens (input + output) |
//! | `tool_result` | a command; a failed one unless `success` is true |
//! | `tool_decision` | a decision; an approval gate when a user made it (`source` user…); a rejection when it rejected, denied or aborted |
//!
//! Every other event counts as a record only. Metrics (`claude_code.cost.usage` and friends)
//! repeat what the events say, so they are checked and counted, never added to a session twice.

use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use prost::Message;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::io::Read;

/// The largest body, before and after gzip, and the most records (or metric points) one request
/// may carry.
pub const MAX_BODY: usize = 4 * 1024 * 1024;
pub const MAX_RECORDS: usize = 20_000;
/// The most a single record may add: tokens and dollars.
const MAX_TOKENS: u64 = 100_000_000;
const MAX_COST_MICROS: u64 = 10_000 * 1_000_000;

/// How a body is encoded, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    /// OTLP/HTTP's two encodings; anything else is refused (415).
    pub fn from_content_type(content_type: Option<&str>) -> Result<Encoding, String> {
        let essence = content_type
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "application/x-protobuf" => Ok(Encoding::Protobuf),
            "application/json" => Ok(Encoding::Json),
            other => Err(format!(
                "Content-Type {:?} is not OTLP/HTTP: send application/x-protobuf or application/json",
                crate::text::clean(other)
            )),
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

/// The body as sent, or gunzipped (`Content-Encoding: gzip`) to at most [`MAX_BODY`] bytes.
pub fn inflate(raw: &[u8], content_encoding: Option<&str>) -> Result<Vec<u8>, String> {
    if raw.len() > MAX_BODY {
        return Err(format!("the body is {} bytes, more than {MAX_BODY}", raw.len()));
    }
    match content_encoding.map(|e| e.trim().to_ascii_lowercase()).as_deref() {
        None | Some("" | "identity") => Ok(raw.to_vec()),
        Some("gzip") => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(raw)
                .take(MAX_BODY as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| format!("the gzip body does not inflate: {e}"))?;
            if out.len() > MAX_BODY {
                return Err(format!("the body inflates to more than {MAX_BODY} bytes"));
            }
            Ok(out)
        }
        Some(other) => Err(format!(
            "Content-Encoding {:?} is not supported: send gzip or none",
            crate::text::clean(other)
        )),
    }
}

fn decode<T: Message + Default + serde::de::DeserializeOwned>(
    body: &[u8],
    enc: Encoding,
    what: &str,
) -> Result<T, String> {
    match enc {
        Encoding::Protobuf => T::decode(body).map_err(|e| format!("not an OTLP {what} request (protobuf): {e}")),
        Encoding::Json => serde_json::from_slice(body).map_err(|e| {
            format!(
                "not an OTLP {what} request (JSON): {}",
                crate::text::clean(&e.to_string())
            )
        }),
    }
}

pub fn decode_logs(body: &[u8], enc: Encoding) -> Result<ExportLogsServiceRequest, String> {
    decode(body, enc, "logs")
}

pub fn decode_metrics(body: &[u8], enc: Encoding) -> Result<ExportMetricsServiceRequest, String> {
    decode(body, enc, "metrics")
}

/// What one or more events add to a session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub records: u64,
    pub api_requests: u64,
    pub api_errors: u64,
    pub commands: u64,
    pub commands_failed: u64,
    pub decisions: u64,
    pub approvals: u64,
    pub rejections: u64,
    pub tokens: u64,
    pub cost_micros: u64,
}

impl Usage {
    pub fn add(&mut self, o: &Usage) {
        self.records += o.records;
        self.api_requests += o.api_requests;
        self.api_errors += o.api_errors;
        self.commands += o.commands;
        self.commands_failed += o.commands_failed;
        self.decisions += o.decisions;
        self.approvals += o.approvals;
        self.rejections += o.rejections;
        self.tokens = self.tokens.saturating_add(o.tokens);
        self.cost_micros = self.cost_micros.saturating_add(o.cost_micros);
    }
}

/// One log record, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub session: String,
    /// The exporting CLI (`service.name`), e.g. `claude-code`, `codex_exec`.
    pub service: String,
    /// SHA-256 of the session and the record's encoding: a record sent twice (an exporter's
    /// retry, a collector's replay) counts once.
    pub digest: String,
    pub usage: Usage,
}

/// Why a record is not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unread {
    /// No `canary.session`, `session.id` or `conversation.id`.
    NoSession,
    /// The session attribute is not an id, or a number is out of bounds.
    Invalid,
}

/// A logs request, read: the records that name a session, and those that cannot be taken.
#[derive(Debug, Default)]
pub struct Logs {
    pub records: Vec<Record>,
    pub no_session: u64,
    pub invalid: u64,
}

const SESSION_KEYS: [&str; 3] = ["canary.session", "session.id", "conversation.id"];

fn find<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn text(v: &Value) -> Option<&str> {
    match v {
        Value::StringValue(s) => Some(s),
        _ => None,
    }
}

/// A number the exporters send as an int, a double or a string (Claude Code sends
/// `duration_ms` as a string, Codex every number).
fn number(v: &Value) -> Option<f64> {
    match v {
        Value::IntValue(i) => Some(*i as f64),
        Value::DoubleValue(d) => Some(*d),
        Value::StringValue(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn truthy(v: Option<&Value>) -> bool {
    match v {
        Some(Value::BoolValue(b)) => *b,
        Some(Value::StringValue(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

/// The event's name without the CLI's prefix: `claude_code.api_request` and `codex.api_request`
/// are both `api_request`.
fn event_name<'a>(attrs: &'a [KeyValue], body: Option<&'a AnyValue>, event_name: &'a str) -> &'a str {
    let named = find(attrs, "event.name")
        .and_then(text)
        .or_else(|| body.and_then(|b| b.value.as_ref()).and_then(text))
        .unwrap_or(event_name);
    named.rsplit('.').next().unwrap_or(named)
}

/// A count from `keys` summed, each a non-negative whole number within bounds.
fn count(attrs: &[KeyValue], keys: &[&str]) -> Result<u64, Unread> {
    let mut sum = 0u64;
    for key in keys {
        if let Some(v) = find(attrs, key) {
            let n = number(v).ok_or(Unread::Invalid)?;
            if !(n.is_finite() && (0.0..=MAX_TOKENS as f64).contains(&n)) {
                return Err(Unread::Invalid);
            }
            sum += n as u64;
        }
    }
    Ok(sum)
}

fn cost_micros(attrs: &[KeyValue]) -> Result<u64, Unread> {
    let micros = match (find(attrs, "cost_usd_micros"), find(attrs, "cost_usd")) {
        (Some(v), _) => number(v),
        (None, Some(v)) => number(v).map(|usd| usd * 1e6),
        (None, None) => Some(0.0),
    }
    .ok_or(Unread::Invalid)?;
    if !(micros.is_finite() && (0.0..=MAX_COST_MICROS as f64).contains(&micros)) {
        return Err(Unread::Invalid);
    }
    Ok(micros.round() as u64)
}

/// What an event adds (see the module's table).
fn usage_of(name: &str, attrs: &[KeyValue]) -> Result<Usage, Unread> {
    let mut u = Usage {
        records: 1,
        ..Usage::default()
    };
    match name {
        "api_request" => {
            u.api_requests = 1;
            u.tokens = count(
                attrs,
                &[
                    "input_tokens",
                    "cache_read_tokens",
                    "cache_creation_tokens",
                    "output_tokens",
                ],
            )?;
            u.cost_micros = cost_micros(attrs)?;
            let status = find(attrs, "http.response.status_code").and_then(number);
            if status.is_some_and(|s| s >= 400.0) || find(attrs, "error.message").is_some() {
                u.api_errors = 1;
            }
        }
        "api_error" => u.api_errors = 1,
        "sse_event" => {
            let completed = find(attrs, "event.kind").and_then(text) == Some("response.completed");
            if completed && find(attrs, "input_token_count").is_some() {
                u.tokens = count(attrs, &["input_token_count", "output_token_count"])?;
            }
        }
        "tool_result" => {
            u.commands = 1;
            u.commands_failed = u64::from(!truthy(find(attrs, "success")));
        }
        "tool_decision" => {
            u.decisions = 1;
            let source = find(attrs, "source").and_then(text).unwrap_or("").to_ascii_lowercase();
            u.approvals = u64::from(source.starts_with("user"));
            let decision = find(attrs, "decision")
                .and_then(text)
                .unwrap_or("")
                .to_ascii_lowercase();
            u.rejections = u64::from(["reject", "denied", "abort"].iter().any(|d| decision.contains(d)));
        }
        _ => {}
    }
    Ok(u)
}

/// A record's identity: its session, times, name and attributes in key order, doubles to ten
/// significant digits (OTLP/JSON carries doubles as decimal text, so a record relayed through a
/// JSON hop may come back a last bit off).
fn digest(session: &str, record: &opentelemetry_proto::tonic::logs::v1::LogRecord) -> String {
    let mut h = Sha256::new();
    h.update(session.as_bytes());
    h.update(record.time_unix_nano.to_le_bytes());
    h.update(record.observed_time_unix_nano.to_le_bytes());
    h.update(record.event_name.as_bytes());
    if let Some(body) = &record.body {
        h.update(body.encode_to_vec());
    }
    let mut attrs: Vec<&KeyValue> = record.attributes.iter().collect();
    attrs.sort_by(|a, b| a.key.cmp(&b.key));
    for kv in attrs {
        h.update([0]);
        h.update(kv.key.as_bytes());
        h.update([1]);
        match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
            Some(Value::DoubleValue(d)) => h.update(format!("{d:.9e}").as_bytes()),
            Some(v) => h.update(AnyValue { value: Some(v.clone()) }.encode_to_vec()),
            None => {}
        }
    }
    hex::encode(&h.finalize()[..16])
}

/// Reads every record of a logs request. Err when it carries more than [`MAX_RECORDS`].
pub fn read_logs(req: &ExportLogsServiceRequest) -> Result<Logs, String> {
    let total: usize = req
        .resource_logs
        .iter()
        .flat_map(|r| &r.scope_logs)
        .map(|s| s.log_records.len())
        .sum();
    if total > MAX_RECORDS {
        return Err(format!("{total} log records in one request, more than {MAX_RECORDS}"));
    }
    let mut out = Logs::default();
    for rl in &req.resource_logs {
        let resource: &[KeyValue] = rl.resource.as_ref().map_or(&[], |r| &r.attributes);
        let service = find(resource, "service.name").and_then(text).unwrap_or("unknown");
        for record in rl.scope_logs.iter().flat_map(|s| &s.log_records) {
            let session = SESSION_KEYS
                .iter()
                .find_map(|k| find(&record.attributes, k).or_else(|| find(resource, k)).and_then(text));
            let Some(session) = session else {
                out.no_session += 1;
                continue;
            };
            if !canary_runner::names::is_id(session) {
                out.invalid += 1;
                continue;
            }
            let name = event_name(&record.attributes, record.body.as_ref(), &record.event_name);
            let usage = match usage_of(name, &record.attributes) {
                Ok(u) => u,
                Err(_) => {
                    out.invalid += 1;
                    continue;
                }
            };
            out.records.push(Record {
                session: session.to_string(),
                service: crate::text::clean(service).chars().take(64).collect(),
                digest: digest(session, record),
                usage,
            });
        }
    }
    Ok(out)
}

/// A metrics request, checked: its data points, and the sessions they name.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Points {
    pub points: u64,
    pub sessions: std::collections::BTreeSet<String>,
    pub no_session: u64,
}

/// Counts a metrics request's data points by the session each names (same keys as logs).
pub fn read_metrics(req: &ExportMetricsServiceRequest) -> Result<Points, String> {
    let mut out = Points::default();
    for rm in &req.resource_metrics {
        let resource: &[KeyValue] = rm.resource.as_ref().map_or(&[], |r| &r.attributes);
        for metric in rm.scope_metrics.iter().flat_map(|s| &s.metrics) {
            let attrs: Vec<&[KeyValue]> = match &metric.data {
                Some(Data::Sum(s)) => s.data_points.iter().map(|p| p.attributes.as_slice()).collect(),
                Some(Data::Gauge(g)) => g.data_points.iter().map(|p| p.attributes.as_slice()).collect(),
                Some(Data::Histogram(h)) => h.data_points.iter().map(|p| p.attributes.as_slice()).collect(),
                Some(Data::ExponentialHistogram(h)) => h.data_points.iter().map(|p| p.attributes.as_slice()).collect(),
                Some(Data::Summary(s)) => s.data_points.iter().map(|p| p.attributes.as_slice()).collect(),
                None => Vec::new(),
            };
            for point in attrs {
                out.points += 1;
                if out.points > MAX_RECORDS as u64 {
                    return Err(format!("more than {MAX_RECORDS} metric points in one request"));
                }
                let session = SESSION_KEYS
                    .iter()
                    .find_map(|k| find(point, k).or_else(|| find(resource, k)).and_then(text))
                    .filter(|s| canary_runner::names::is_id(s));
                match session {
                    Some(s) => {
                        out.sessions.insert(s.to_string());
                    }
                    None => out.no_session += 1,
                }
            }
        }
    }
    Ok(out)
}

/// The logs response: empty when everything was taken, else a partial success that says how
/// many records were rejected and why (OTLP/HTTP: the exporter does not retry these).
/// A response in the request's encoding; in JSON an absent partial success is left out, not
/// `null`.
fn encode<T: Message + Serialize>(resp: &T, enc: Encoding) -> Vec<u8> {
    match enc {
        Encoding::Protobuf => resp.encode_to_vec(),
        Encoding::Json => {
            let mut v = serde_json::to_value(resp).expect("json");
            if let Some(o) = v.as_object_mut() {
                o.retain(|_, x| !x.is_null());
            }
            serde_json::to_vec(&v).expect("json")
        }
    }
}

pub fn logs_response(rejected: u64, message: &str, enc: Encoding) -> Vec<u8> {
    let partial = (rejected > 0).then(|| ExportLogsPartialSuccess {
        rejected_log_records: rejected as i64,
        error_message: message.to_string(),
    });
    encode(
        &ExportLogsServiceResponse {
            partial_success: partial,
        },
        enc,
    )
}

pub fn metrics_response(rejected: u64, message: &str, enc: Encoding) -> Vec<u8> {
    let partial = (rejected > 0).then(|| ExportMetricsPartialSuccess {
        rejected_data_points: rejected as i64,
        error_message: message.to_string(),
    });
    encode(
        &ExportMetricsServiceResponse {
            partial_success: partial,
        },
        enc,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/otel");

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!("{FIXTURES}/{name}")).expect("fixture")
    }

    fn by_session(logs: &Logs) -> BTreeMap<String, Usage> {
        let mut out: BTreeMap<String, Usage> = BTreeMap::new();
        for r in &logs.records {
            out.entry(r.session.clone()).or_default().add(&r.usage);
        }
        out
    }

    /// The recorded Claude Code 2.1.337 session (three model requests, two shell commands) as
    /// its own exporter sent it: what the CLI printed as its result totals, the events sum to.
    #[test]
    fn a_recorded_claude_code_export_sums_to_the_cli_s_own_totals() {
        let mut all = Usage::default();
        let mut services = std::collections::BTreeSet::new();
        for name in ["claude-code-2.1.337-logs-1.json", "claude-code-2.1.337-logs-2.json"] {
            let req = decode_logs(&fixture(name), Encoding::Json).expect("decodes");
            let logs = read_logs(&req).expect("reads");
            assert_eq!((logs.no_session, logs.invalid), (0, 0));
            for r in &logs.records {
                services.insert(r.service.clone());
            }
            let sessions = by_session(&logs);
            assert_eq!(
                sessions.keys().collect::<Vec<_>>(),
                ["s-1"],
                "canary.session wins over session.id"
            );
            all.add(&sessions["s-1"]);
        }
        assert_eq!(services.into_iter().collect::<Vec<_>>(), ["claude-code"]);
        // The CLI's result line: input 1700 + cache read 1600 + output 123; $0.007425.
        assert_eq!(all.tokens, 1700 + 1600 + 123);
        assert_eq!(all.cost_micros, 7425);
        assert_eq!((all.api_requests, all.api_errors), (3, 0));
        assert_eq!((all.commands, all.commands_failed), (2, 0));
        assert_eq!(
            (all.decisions, all.approvals, all.rejections),
            (2, 0, 0),
            "allowed by config, no gate"
        );
        assert_eq!(all.records, 14);
    }

    #[test]
    fn the_protobuf_export_of_the_same_session_reads_the_same() {
        let req = decode_logs(&fixture("claude-code-2.1.337-logs.pb"), Encoding::Protobuf).expect("decodes");
        let logs = read_logs(&req).expect("reads");
        let sessions = by_session(&logs);
        let u = sessions["s-2"];
        assert_eq!(
            (u.tokens, u.cost_micros, u.api_requests, u.commands),
            (3423, 7425, 3, 2)
        );
        // Encoded again, the digests are those of the JSON path: the encoding is not identity.
        let json = serde_json::to_vec(&req).expect("json");
        let again = read_logs(&decode_logs(&json, Encoding::Json).expect("decodes")).expect("reads");
        let a: Vec<_> = logs.records.iter().map(|r| &r.digest).collect();
        let b: Vec<_> = again.records.iter().map(|r| &r.digest).collect();
        assert_eq!(a, b);
    }

    #[test]
    fn a_recorded_codex_export_reads_tokens_from_its_completed_responses() {
        let req = decode_logs(&fixture("codex-0.163.0-logs.json"), Encoding::Json).expect("decodes");
        let logs = read_logs(&req).expect("reads");
        // Every record, the metrics client's own "flushing" line too, carries the resource's
        // `canary.session`.
        assert_eq!((logs.no_session, logs.invalid, logs.records.len()), (0, 0, 29));
        let sessions = by_session(&logs);
        let u = sessions["c-1"];
        // `turn.completed` said input 3300 (1600 cached) and output 123.
        assert_eq!(u.tokens, 3300 + 123);
        assert_eq!((u.api_requests, u.api_errors, u.cost_micros), (3, 0, 0));
        assert_eq!((u.commands, u.commands_failed, u.decisions, u.approvals), (2, 0, 2, 0));
    }

    fn kv(key: &str, v: Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..KeyValue::default()
        }
    }

    #[test]
    fn failures_gates_and_errors_are_counted_and_bad_numbers_refuse_the_record() {
        let s = |x: &str| Value::StringValue(x.into());
        let failed = usage_of("tool_result", &[kv("success", s("false"))]).unwrap();
        assert_eq!((failed.commands, failed.commands_failed), (1, 1));
        let gate = usage_of(
            "tool_decision",
            &[kv("source", s("user_reject")), kv("decision", s("reject"))],
        )
        .unwrap();
        assert_eq!((gate.approvals, gate.rejections), (1, 1));
        let codex_gate = usage_of("tool_decision", &[kv("source", s("User")), kv("decision", s("denied"))]).unwrap();
        assert_eq!((codex_gate.approvals, codex_gate.rejections), (1, 1));
        let err = usage_of("api_request", &[kv("http.response.status_code", s("503"))]).unwrap();
        assert_eq!((err.api_requests, err.api_errors), (1, 1));
        for bad in [
            kv("cost_usd", Value::DoubleValue(f64::NAN)),
            kv("cost_usd", Value::DoubleValue(-1.0)),
            kv("cost_usd", Value::DoubleValue(1e9)),
            kv("input_tokens", Value::IntValue(-5)),
            kv("input_tokens", s("lots")),
        ] {
            assert_eq!(
                usage_of("api_request", std::slice::from_ref(&bad)),
                Err(Unread::Invalid),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn hostile_bodies_are_refused_with_a_reason() {
        assert!(
            Encoding::from_content_type(Some("text/plain"))
                .unwrap_err()
                .contains("application/x-protobuf")
        );
        assert_eq!(
            Encoding::from_content_type(Some("application/json; charset=utf-8")),
            Ok(Encoding::Json)
        );
        assert!(decode_logs(b"\xff\xff\xff", Encoding::Protobuf).is_err());
        assert!(decode_logs(b"{\"resourceLogs\": 3}", Encoding::Json).is_err());
        // A gzip bomb inflates no further than the bound.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut gz, &vec![0u8; MAX_BODY + 10]).unwrap();
        let bomb = gz.finish().unwrap();
        assert!(bomb.len() < 100_000);
        assert!(
            inflate(&bomb, Some("gzip"))
                .unwrap_err()
                .contains("inflates to more than")
        );
        assert!(inflate(b"x", Some("br")).unwrap_err().contains("not supported"));
        assert!(inflate(&vec![0; MAX_BODY + 1], None).is_err());
        // A session attribute that is not an id is not taken.
        let mut req = decode_logs(&fixture("claude-code-2.1.337-logs-2.json"), Encoding::Json).unwrap();
        for r in req
            .resource_logs
            .iter_mut()
            .flat_map(|r| &mut r.scope_logs)
            .flat_map(|s| &mut s.log_records)
        {
            r.attributes.retain(|kv| kv.key != "canary.session");
            r.attributes
                .push(kv("canary.session", Value::StringValue("../etc/passwd".into())));
        }
        let logs = read_logs(&req).unwrap();
        assert_eq!((logs.records.len(), logs.invalid), (0, 3));
    }

    #[test]
    fn the_recorded_metrics_name_their_session_and_the_response_says_what_was_rejected() {
        let req = decode_metrics(&fixture("claude-code-2.1.337-metrics.json"), Encoding::Json).expect("decodes");
        let points = read_metrics(&req).expect("reads");
        assert!(points.points >= 4, "{points:?}");
        assert_eq!(points.sessions.iter().collect::<Vec<_>>(), ["s-1"]);
        let body = logs_response(3, "3 records name no session", Encoding::Json);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["partialSuccess"]["rejectedLogRecords"], serde_json::json!(3));
        let empty = logs_response(0, "", Encoding::Protobuf);
        assert!(
            ExportLogsServiceResponse::decode(empty.as_slice())
                .unwrap()
                .partial_success
                .is_none()
        );
    }
}
