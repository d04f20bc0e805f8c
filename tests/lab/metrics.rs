//! `GET /metrics` for the platform's own monitoring: a real Prometheus (Debian's package, which
//! `scripts/prometheus.sh` installs) scrapes `canary serve` with an operator's token while a
//! simulated fleet takes part in a rollout, and `promtool` checks the exposition.

use crate::helpers::{Killed, free_port};
use crate::registry::Backend;
use crate::rollout::{GATE, runner_token, serve, setup_with, simulate, start_rollout};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn tool(name: &str) -> String {
    which(name).unwrap_or_else(|| {
        panic!("{name} is not installed: run scripts/prometheus.sh (`just test` does) to install Debian's prometheus package")
    })
}

fn which(name: &str) -> Option<String> {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn get(url: &str, token: Option<&str>) -> (u16, String, String) {
    let (code, kind, body) = crate::rollout::request(reqwest::Method::GET, url, token, &[], Vec::new());
    (code, kind, String::from_utf8(body).unwrap())
}

/// Asks Prometheus for an instant query until it has a sample, and returns the samples.
fn query(prom: &str, q: &str, deadline: Instant) -> Vec<serde_json::Value> {
    loop {
        let url = format!("{prom}/api/v1/query?query={}", urlencode(q));
        if let Ok((200, _, body)) = std::panic::catch_unwind(|| get(&url, None)) {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            let result = v["data"]["result"].as_array().cloned().unwrap_or_default();
            if !result.is_empty() {
                return result;
            }
        }
        assert!(Instant::now() < deadline, "Prometheus never had a sample of {q}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn prometheus_scrapes_the_rollout_and_fleet_metrics_with_an_operators_token() {
    let prometheus = tool("prometheus");
    let promtool = tool("promtool");
    let (reg, _d, policy, _base, cand) = setup_with(Backend::Sqlite, GATE);
    // Issued before the control plane starts, which reads tokens at start and then now and then.
    let runner = runner_token(&reg, "r-metrics");
    let s = serve(&reg, &policy, free_port());
    start_rollout(&reg, &policy, &cand, &["--steps", "10,100", "--bake", "1h"]);
    simulate(&reg, &s, 2000, &["*=fail:0.02,latency:900"], &["acme"]);

    // Only an operator's token reads it.
    let metrics = format!("{}/metrics", s.url);
    assert_eq!(get(&metrics, None).0, 401);
    assert_eq!(
        get(&metrics, Some(&runner)).0,
        403,
        "a runner's token never reads /metrics"
    );
    let (code, kind, body) = get(&metrics, Some(&s.ops));
    assert_eq!(code, 200, "{body}");
    assert_eq!(kind, "text/plain; version=0.0.4; charset=utf-8");
    for line in [
        "canary_rollout_percent{rollout=\"1\",channel=\"stable\"} 10",
        "canary_rollout_step{rollout=\"1\",channel=\"stable\",build=\"sha256:bbbb",
        "canary_telemetry_sessions_ingested_total 2000",
        "canary_rollout_decisions_total{kind=\"start\"} 1",
        "canary_http_request_duration_seconds_count{route=\"/v1/assignment\",code=\"200\"} 2000",
    ] {
        assert!(body.lines().any(|l| l.starts_with(line)), "{line}\n{body}");
    }
    assert!(
        body.lines()
            .any(|l| l.starts_with("canary_build_failure_rate_last_hour{build=\"sha256:aaaa")),
        "{body}"
    );

    // promtool lints the exposition as Prometheus reads it.
    let mut check = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(check.stdin.as_mut().unwrap(), body.as_bytes()).unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // A real Prometheus scrapes it with the operator's token.
    let dir = tempfile::tempdir().unwrap();
    let port = s.url.rsplit(':').next().unwrap().to_string();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s}}\nscrape_configs:\n  - job_name: canary\n    authorization: {{type: Bearer, credentials: '{}'}}\n    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n",
            s.ops
        ),
    )
    .unwrap();
    let web = free_port();
    let _prom = Killed(
        Command::new(&prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{web}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let prom = format!("http://127.0.0.1:{web}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let up = query(&prom, "up{job=\"canary\"} == 1", deadline);
    assert_eq!(up[0]["value"][1], "1", "{up:?}");
    let percent = query(&prom, "canary_rollout_percent", deadline);
    assert_eq!(percent[0]["metric"]["channel"], "stable", "{percent:?}");
    assert_eq!(percent[0]["value"][1], "10", "{percent:?}");
    let ingested = query(&prom, "canary_telemetry_sessions_ingested_total", deadline);
    assert_eq!(ingested[0]["value"][1], "2000", "{ingested:?}");
}
