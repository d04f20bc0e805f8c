//! The CLIs' own OpenTelemetry into the control plane: the OTLP/HTTP exports recorded from the
//! real Claude Code and Codex (tests/fixtures/otel) posted to `canary serve` as their exporters
//! sent them, and through a real collector (the `rotel` agent, which `scripts/rotel.sh`
//! installs) forwarding to it; the records are counted, mapped onto the runner's sessions, and
//! fill a session report that leaves its usage out.

use crate::helpers::{Killed, free_port, root};
use crate::registry::{Backend, Fresh};
use crate::rollout::{GATE, Serve, canary, rt, runner_token, serve, setup_with};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(root().join("tests/fixtures/otel").join(name)).unwrap()
}

/// POSTs `body` to `url` with the headers given; the status, content type and body.
fn post(url: &str, token: Option<&str>, headers: &[(&str, &str)], body: Vec<u8>) -> (u16, String, Vec<u8>) {
    crate::rollout::request(reqwest::Method::POST, url, token, headers, body)
}

const JSON: (&str, &str) = ("content-type", "application/json");
const PROTOBUF: (&str, &str) = ("content-type", "application/x-protobuf");

fn assign(s: &Serve, token: &str, runner: &str, session: &str) -> String {
    rt().block_on(async {
        canary::init_tls();
        let r = reqwest::Client::new()
            .get(format!(
                "{}/v1/assignment?runner={runner}&org=acme&session={session}",
                s.url
            ))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let v: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        v["build"].as_str().unwrap().to_string()
    })
}

/// A finished session's report without its usage figures: the control plane takes them from
/// the session's OpenTelemetry.
fn report_without_usage(runner: &str, session: &str, build: &str) -> Vec<u8> {
    serde_json::json!({"sessions": [{
        "runner": runner, "org": "acme", "session": session, "build": build,
        "started_at": canary::contract::time::now(), "start_latency_ms": 800, "outcome": "ok",
        "approval_wait_ms": 0, "duration_ms": 4000,
    }]})
    .to_string()
    .into_bytes()
}

/// The `canary_otlp_items_total` samples of `/metrics`, as `signal/result` → value.
fn otlp_counts(s: &Serve) -> std::collections::BTreeMap<String, f64> {
    s.page("/metrics")
        .lines()
        .filter_map(|l| l.strip_prefix("canary_otlp_items_total{"))
        .map(|l| {
            let (labels, value) = l.split_once("} ").unwrap();
            let get = |k: &str| {
                labels
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(&format!("{k}=\"")))
                    .unwrap()
                    .trim_end_matches('"')
                    .to_string()
            };
            (format!("{}/{}", get("signal"), get("result")), value.parse().unwrap())
        })
        .collect()
}

fn kpis(reg: &Fresh, build: &str) -> serde_json::Value {
    let out = canary(reg)
        .args(["kpis", "--build", build, "--json"])
        .run()
        .code(0)
        .json();
    out["builds"][0]["kpis"].clone()
}

fn recorded_exports_fill_the_sessions_they_name(b: Backend) {
    let (reg, _d, policy, base, _cand) = setup_with(b, GATE);
    let s = serve(&reg, &policy, free_port());
    let (r1, r2) = (runner_token(&reg, "r1"), runner_token(&reg, "r2"));
    for session in ["s-1", "s-2", "c-1", "quiet"] {
        assert_eq!(assign(&s, &r1, "r1", session), base);
    }
    let logs = format!("{}/otlp/v1/logs", s.url);

    // Claude Code's two JSON posts: every record taken, nothing rejected (an empty response).
    for name in ["claude-code-2.1.337-logs-1.json", "claude-code-2.1.337-logs-2.json"] {
        let (code, kind, body) = post(&logs, Some(&r1), &[JSON], fixture(name));
        assert_eq!(
            (code, kind.as_str()),
            (200, "application/json"),
            "{}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
            serde_json::json!({})
        );
    }
    // An exporter's retry of the first post counts nothing twice.
    assert_eq!(
        post(&logs, Some(&r1), &[JSON], fixture("claude-code-2.1.337-logs-1.json")).0,
        200
    );
    // The protobuf export, gzipped as collectors send it, answered in protobuf.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &fixture("claude-code-2.1.337-logs.pb")).unwrap();
    let (code, kind, _) = post(
        &logs,
        Some(&r1),
        &[PROTOBUF, ("content-encoding", "gzip")],
        gz.finish().unwrap(),
    );
    assert_eq!((code, kind.as_str()), (200, "application/x-protobuf"));

    // Codex's export names c-1, which is r1's: from r2 every record is rejected, and told why.
    let (code, _, body) = post(&logs, Some(&r2), &[JSON], fixture("codex-0.163.0-logs.json"));
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["partialSuccess"]["rejectedLogRecords"], serde_json::json!(29));
    let why = v["partialSuccess"]["errorMessage"].as_str().unwrap();
    assert!(why.contains("not assigned to runner r2 (e.g. c-1)"), "{why}");
    assert_eq!(
        post(&logs, Some(&r1), &[JSON], fixture("codex-0.163.0-logs.json")).0,
        200
    );
    let (code, _, _) = post(
        &format!("{}/otlp/v1/metrics", s.url),
        Some(&r1),
        &[JSON],
        fixture("claude-code-2.1.337-metrics.json"),
    );
    assert_eq!(code, 200);

    // Hostile or wrong requests are refused before anything is read.
    assert_eq!(
        post(&logs, None, &[JSON], fixture("claude-code-2.1.337-logs-2.json")).0,
        401
    );
    assert_eq!(
        post(&logs, Some(&s.ops), &[JSON], b"{}".to_vec()).0,
        403,
        "an operator's token speaks for no runner"
    );
    assert_eq!(
        post(&logs, Some(&r1), &[("content-type", "text/plain")], b"x".to_vec()).0,
        415
    );
    assert_eq!(post(&logs, Some(&r1), &[PROTOBUF], b"\xff\xff\xff".to_vec()).0, 400);
    assert_eq!(
        post(
            &logs,
            Some(&r1),
            &[JSON, ("content-encoding", "gzip")],
            b"not gzip".to_vec()
        )
        .0,
        400
    );

    let counts = otlp_counts(&s);
    // Claude Code 14 + 14 records, Codex 29; the retried 11 as duplicates; Codex's 29 from r2.
    assert_eq!(counts["logs/accepted"], 57.0, "{counts:?}");
    assert_eq!(counts["logs/duplicate"], 11.0, "{counts:?}");
    assert_eq!(counts["logs/rejected"], 29.0, "{counts:?}");
    assert!(counts["metrics/accepted"] >= 4.0, "{counts:?}");

    // The reports leave usage out; the sessions are stored with what the CLIs' events said.
    let telemetry = format!("{}/v1/telemetry", s.url);
    for session in ["s-1", "c-1"] {
        let (code, _, body) = post(
            &telemetry,
            Some(&r1),
            &[JSON],
            report_without_usage("r1", session, &base),
        );
        assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    }
    // A session none of whose events arrived is not stored as having used nothing.
    let (code, _, body) = post(
        &telemetry,
        Some(&r1),
        &[JSON],
        report_without_usage("r1", "quiet", &base),
    );
    assert_eq!(code, 409);
    assert!(String::from_utf8_lossy(&body).contains("none of its events has arrived"));
    let k = kpis(&reg, &base);
    assert_eq!(k["sessions"], serde_json::json!(2), "{k:#}");
    // Each CLI's session used 3,423 tokens by its own count, and its two commands succeeded;
    // s-1 cost $0.007425, c-1 nothing (Codex exports no cost).
    assert_eq!(k["command_failure_rate_pct"], serde_json::json!(0.0), "{k:#}");
    assert_eq!(k["tokens"], serde_json::json!(3423 * 2), "{k:#}");
    assert_eq!(k["cost_usd"], serde_json::json!(0.007425), "{k:#}");
    drop(s);
}

#[test]
fn recorded_cli_exports_fill_the_sessions_they_name_sqlite() {
    recorded_exports_fill_the_sessions_they_name(Backend::Sqlite);
}

#[test]
fn recorded_cli_exports_fill_the_sessions_they_name_postgres() {
    recorded_exports_fill_the_sessions_they_name(Backend::Postgres);
}

/// A real OTLP collector between the CLI and the control plane: the recorded Claude Code export
/// posted to rotel's OTLP/HTTP receiver arrives at `canary serve` with the runner's token the
/// collector adds, and fills the session's report.
#[test]
fn a_collector_forwards_the_cli_export_to_the_control_plane() {
    let agent = crate::helpers::installed("rotel.sh");
    let (reg, _d, policy, base, _cand) = setup_with(Backend::Sqlite, GATE);
    let s = serve(&reg, &policy, free_port());
    let token = runner_token(&reg, "r1");
    assert_eq!(assign(&s, &token, "r1", "s-1"), base);
    let (http, grpc) = (free_port(), free_port());
    let pid = tempfile::tempdir().unwrap();
    let _rotel = Killed(
        Command::new(&agent)
            .args(["start", "--otlp-http-endpoint", &format!("127.0.0.1:{http}")])
            .args(["--otlp-grpc-endpoint", &format!("127.0.0.1:{grpc}")])
            .args(["--exporter", "otlp", "--otlp-exporter-protocol", "http"])
            .args(["--otlp-exporter-endpoint", &format!("{}/otlp", s.url)])
            .args([
                "--otlp-exporter-custom-headers",
                &format!("Authorization=Bearer {token}"),
            ])
            .args(["--pid-file", &pid.path().join("rotel.pid").to_string_lossy()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", http)).is_err() {
        assert!(Instant::now() < deadline, "rotel did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    for name in ["claude-code-2.1.337-logs-1.json", "claude-code-2.1.337-logs-2.json"] {
        let (code, _, body) = post(
            &format!("http://127.0.0.1:{http}/v1/logs"),
            None,
            &[JSON],
            fixture(name),
        );
        assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let counts = otlp_counts(&s);
        if counts.get("logs/accepted") == Some(&14.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the collector's export never arrived: {counts:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (code, _, body) = post(
        &format!("{}/v1/telemetry", s.url),
        Some(&token),
        &[JSON],
        report_without_usage("r1", "s-1", &base),
    );
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let k = kpis(&reg, &base);
    assert_eq!(k["cost_usd"], serde_json::json!(0.007425), "{k:#}");
}
