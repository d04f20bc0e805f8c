//! `POST /otlp/v1/logs` and `/otlp/v1/metrics`: the OTLP/HTTP endpoints the CLIs' own
//! OpenTelemetry exporters (or a collector in front of them) send to, with the runner's token
//! (`OTEL_EXPORTER_OTLP_HEADERS=Authorization=Bearer <token>`). A log record is taken into the
//! session it names when that session was assigned to the token's runner; anything else is
//! rejected in the response's partial success (the exporter logs it and does not retry). What
//! the records add (tokens, cost, commands, approval gates) is what `/v1/telemetry` fills a
//! session with when its report leaves those figures out.

use super::{ControlPlane, error, unavailable};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use canary_fleet::otlp::{self, Encoding, Record};
use std::collections::BTreeSet;

pub use otlp::MAX_BODY;

/// The request's encoding and body, gunzipped and within bounds, or the response refusing it.
fn body(headers: &HeaderMap, raw: &[u8]) -> Result<(Encoding, Vec<u8>), (StatusCode, String)> {
    let value = |h: header::HeaderName| headers.get(h).and_then(|v| v.to_str().ok());
    let enc = Encoding::from_content_type(value(header::CONTENT_TYPE))
        .map_err(|e| (StatusCode::UNSUPPORTED_MEDIA_TYPE, e))?;
    let body = otlp::inflate(raw, value(header::CONTENT_ENCODING)).map_err(|e| (StatusCode::BAD_REQUEST, e))?;
    Ok((enc, body))
}

/// The token's runner, within its rate, and the request's encoding and body; or the response
/// refusing it.
async fn receive(
    cp: &ControlPlane,
    headers: &HeaderMap,
    raw: &[u8],
) -> Result<(super::Caller, Encoding, Vec<u8>), Response> {
    let caller = cp.authenticate(headers).await?;
    if let Some(resp) = cp.limit(&caller, "otlp", crate::authority::OTLP) {
        return Err(resp);
    }
    let (enc, body) = body(headers, raw).map_err(|(status, why)| error(status, &why))?;
    Ok((caller, enc, body))
}

fn answer(enc: Encoding, body: Vec<u8>) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, enc.content_type())], body).into_response()
}

/// Says why items were rejected, each reason with its count; empty when none were.
fn reasons(runner: &str, foreign: (u64, Option<&str>), no_session: u64, invalid: u64) -> String {
    let mut out = Vec::new();
    if let (n @ 1.., example) = foreign {
        out.push(format!(
            "{n} name sessions not assigned to runner {runner} (e.g. {}): ask /v1/assignment for the session first, with the same id",
            crate::text::clean(example.unwrap_or(""))
        ));
    }
    if no_session > 0 {
        out.push(format!(
            "{no_session} name no session: set OTEL_RESOURCE_ATTRIBUTES=canary.session=<session id> for the CLI"
        ));
    }
    if invalid > 0 {
        out.push(format!(
            "{invalid} carry a session that is not an id or a count or cost out of bounds"
        ));
    }
    out.join("; ")
}

/// `POST /otlp/v1/logs`: the CLIs' event log records.
pub async fn logs(State(cp): State<ControlPlane>, headers: HeaderMap, raw: axum::body::Bytes) -> Response {
    let (caller, enc, body) = match receive(&cp, &headers, &raw).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let read = match otlp::decode_logs(&body, enc).and_then(|req| otlp::read_logs(&req)) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let named: BTreeSet<&str> = read.records.iter().map(|r| r.session.as_str()).collect();
    let named: Vec<&str> = named.into_iter().collect();
    let assigned = match cp.reg.assignments(&caller.runner, &named).await {
        Ok(a) => a,
        Err(e) => return unavailable(e),
    };
    let (mine, foreign): (Vec<&Record>, Vec<&Record>) =
        read.records.iter().partition(|r| assigned.contains_key(&r.session));
    let new = match cp.reg.add_otel(&caller.runner, &mine, jiff::Timestamp::now()).await {
        Ok(n) => n,
        Err(e) => return unavailable(e),
    };
    let rejected = foreign.len() as u64 + read.no_session + read.invalid;
    cp.metrics.otlp(
        "logs",
        [
            ("accepted", new),
            ("duplicate", mine.len() as u64 - new),
            ("rejected", rejected),
        ],
    );
    let why = reasons(
        &caller.runner,
        (foreign.len() as u64, foreign.first().map(|r| r.session.as_str())),
        read.no_session,
        read.invalid,
    );
    answer(enc, otlp::logs_response(rejected, &why, enc))
}

/// `POST /otlp/v1/metrics`: checked and counted; the events already say what the CLIs' metrics
/// sum, so nothing of them is added to a session.
pub async fn metrics(State(cp): State<ControlPlane>, headers: HeaderMap, raw: axum::body::Bytes) -> Response {
    let (caller, enc, body) = match receive(&cp, &headers, &raw).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let points = match otlp::decode_metrics(&body, enc).and_then(|req| otlp::read_metrics(&req)) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let named: Vec<&str> = points.sessions.iter().map(String::as_str).collect();
    let assigned = match cp.reg.assignments(&caller.runner, &named).await {
        Ok(a) => a,
        Err(e) => return unavailable(e),
    };
    let foreign: Vec<&str> = named.iter().copied().filter(|s| !assigned.contains_key(*s)).collect();
    // A session not the runner's rejects the request's points wholesale: they are not counted
    // point by point per session, and a runner's own exporter names only its own.
    let rejected = if foreign.is_empty() {
        points.no_session
    } else {
        points.points
    };
    cp.metrics.otlp(
        "metrics",
        [
            ("accepted", points.points - rejected),
            ("duplicate", 0),
            ("rejected", rejected),
        ],
    );
    let why = reasons(
        &caller.runner,
        (foreign.len() as u64, foreign.first().copied()),
        points.no_session,
        0,
    );
    answer(enc, otlp::metrics_response(rejected, &why, enc))
}

/// Fills each session whose report left its usage out with what its OpenTelemetry said. A
/// session with none yet refuses the batch (409): the runner reports it again once the CLI's
/// exporter has sent its events, or sends the figures itself; a session is never stored as
/// having used nothing because its events had not arrived.
pub(crate) async fn fill_usage(
    cp: &ControlPlane,
    runner: &str,
    sessions: &mut [crate::telemetry::Session],
) -> Result<(), Response> {
    let wanted: Vec<&str> = sessions
        .iter()
        .filter(|s| s.usage_from_otel)
        .map(|s| s.session.as_str())
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let heard = cp.reg.otel_sessions(runner, &wanted).await.map_err(unavailable)?;
    for (i, s) in sessions.iter_mut().enumerate().filter(|(_, s)| s.usage_from_otel) {
        let Some(o) = heard.get(&s.session) else {
            return Err(error(
                StatusCode::CONFLICT,
                &format!(
                    "sessions[{i}]: session {} leaves its usage to the CLI's OpenTelemetry, and none of its events has arrived at /otlp/v1/logs yet: report it again once the exporter has sent them, or send commands, commands_failed, approvals, tokens and cost_usd",
                    s.session
                ),
            ));
        };
        crate::telemetry::fill_usage(s, &o.usage);
    }
    Ok(())
}
