//! `canary watch` against local mock registries: a PyPI JSON API, an npm registry and GitHub's
//! releases API, served on loopback with the faults real registries have (429 with Retry-After,
//! ETag revalidation, 500s, malformed JSON, unknown packages).

use super::helpers::*;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Mock {
    codex_requests: AtomicUsize,
    not_modified: AtomicUsize,
    log: Mutex<Vec<String>>,
}

fn days_ago(d: i64) -> String {
    (jiff::Timestamp::now() - jiff::SignedDuration::from_hours(24 * d)).to_string()
}

fn pypi_file(published: &str, yanked: Option<&str>) -> serde_json::Value {
    serde_json::json!({"filename": "x.whl", "upload_time_iso_8601": published, "yanked": yanked.is_some(), "yanked_reason": yanked})
}

async fn pypi(State(m): State<Arc<Mock>>, Path(package): Path<String>, headers: HeaderMap) -> Response {
    m.log.lock().unwrap().push(format!("pypi {package}"));
    match package.as_str() {
        "openai-codex-cli-bin" => {
            // The first request is rate limited; later ones revalidate with the ETag.
            if m.codex_requests.fetch_add(1, Ordering::SeqCst) == 0 {
                return (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")], "slow down").into_response();
            }
            if headers.get("if-none-match").and_then(|v| v.to_str().ok()) == Some("\"codex-v1\"") {
                m.not_modified.fetch_add(1, Ordering::SeqCst);
                return StatusCode::NOT_MODIFIED.into_response();
            }
            let body = serde_json::json!({
                "info": {"name": "openai-codex-cli-bin"},
                "releases": {
                    "0.150.0": [pypi_file(&days_ago(60), None)],
                    "0.160.1": [pypi_file(&days_ago(10), None)],
                    "0.161.0": [pypi_file(&days_ago(9), Some("broken wheel")), pypi_file(&days_ago(9), Some("broken wheel"))],
                    "0.162.0": [],
                    "0.163.0": [pypi_file(&days_ago(5), None), pypi_file(&days_ago(4), None)],
                    "0.164.0": [pypi_file(&jiff::Timestamp::now().to_string(), None)],
                    "0.165.0a1": [pypi_file(&days_ago(3), None)],
                    "nightly-2026": [pypi_file(&days_ago(3), None)],
                }
            });
            (
                [("etag", "\"codex-v1\""), ("content-type", "application/json")],
                body.to_string(),
            )
                .into_response()
        }
        "broken" => ([("content-type", "application/json")], "{\"releases\": {not json").into_response(),
        "down" => (StatusCode::INTERNAL_SERVER_ERROR, "upstream down").into_response(),
        "slow" => {
            tokio::time::sleep(std::time::Duration::from_secs(3)).await;
            axum::Json(serde_json::json!({"releases": {}})).into_response()
        }
        _ => (StatusCode::NOT_FOUND, "{\"message\": \"Not Found\"}").into_response(),
    }
}

async fn npm(State(m): State<Arc<Mock>>, Path(package): Path<String>) -> Response {
    m.log.lock().unwrap().push(format!("npm {package}"));
    if package != "@google/gemini-cli" {
        return (StatusCode::NOT_FOUND, "{}").into_response();
    }
    let body = serde_json::json!({
        "name": "@google/gemini-cli",
        "dist-tags": {"latest": "1.0.0", "preview": "1.1.0-preview.0"},
        "versions": {
            "0.9.0": {"deprecated": "use 1.x"},
            "1.0.0": {},
            "1.0.1": {},
            "1.1.0-preview.0": {},
        },
        "time": {"0.9.0": days_ago(40), "1.0.0": days_ago(20), "1.1.0-preview.0": days_ago(2)},
    });
    axum::Json(body).into_response()
}

fn gh_release(id: u64, tag: &str, draft: bool, prerelease: bool, published: &str) -> serde_json::Value {
    let base = "http://127.0.0.1/repos/openai/codex/releases";
    serde_json::json!({
        "url": format!("{base}/{id}"), "html_url": format!("{base}/tag/{tag}"),
        "assets_url": format!("{base}/{id}/assets"), "upload_url": format!("{base}/{id}/assets{{?name,label}}"),
        "tarball_url": null, "zipball_url": null, "id": id, "node_id": format!("RE_{id}"),
        "tag_name": tag, "target_commitish": "main", "name": tag, "body": "", "draft": draft,
        "prerelease": prerelease, "created_at": published, "published_at": if draft { serde_json::Value::Null } else { published.into() },
        "author": null, "assets": [],
    })
}

async fn github(State(m): State<Arc<Mock>>, Path((owner, repo)): Path<(String, String)>) -> Response {
    m.log.lock().unwrap().push(format!("github {owner}/{repo}"));
    let body = serde_json::json!([
        gh_release(3, "rust-v0.170.0", true, false, &days_ago(1)),
        gh_release(2, "rust-v0.169.0-alpha.1", false, true, &days_ago(2)),
        gh_release(1, "rust-v0.168.0", false, false, &days_ago(3)),
    ]);
    ([("etag", "W/\"gh-1\"")], axum::Json(body)).into_response()
}

fn start_mock() -> (String, Arc<Mock>) {
    let mock = Arc::new(Mock::default());
    let app = axum::Router::new()
        .route("/pypi/{package}/json", get(pypi))
        .route("/npm/{*package}", get(npm))
        .route("/repos/{owner}/{repo}/releases", get(github))
        .with_state(mock.clone());
    (serve_on_loopback(app), mock)
}

fn config(dir: &std::path::Path, url: &str, providers: &str) -> std::path::PathBuf {
    let path = dir.join("canary.yaml");
    std::fs::write(
        &path,
        format!(
            "cache_dir: {cache}\nupstream:\n  pypi_url: {url}\n  npm_registry: {url}/npm\n  github_api: {url}\n  retries: 2\n  timeout: 5s\n  min_release_age: 24h\n  providers:\n{providers}",
            cache = dir.join("cache").display()
        ),
    )
    .unwrap();
    path
}

const PROVIDERS: &str = "    codex:\n      sources: [pypi:openai-codex-cli-bin, github:openai/codex]\n      exclude: ['=0.160.1']\n    gemini:\n      sources: ['npm:@google/gemini-cli']\n";

fn watch(cfg: &std::path::Path, db: &std::path::Path, extra: &[&str]) -> Ran {
    Canary::new()
        .arg_path_flag("--config", cfg)
        .arg_path_flag("--registry", db)
        .args(["watch", "--json", "--no-resolve"])
        .args(extra)
        .run()
}

fn provider<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["provider"] == name)
        .unwrap_or_else(|| panic!("no {name} in {report}"))
}

fn versions(list: &serde_json::Value) -> Vec<(String, String)> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|j| {
            (
                j["package_version"].as_str().unwrap().to_string(),
                j["channel"]
                    .as_str()
                    .or(j["skipped"].as_str())
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect()
}

#[test]
fn watch_reads_mock_registries_under_the_policy() {
    let (url, mock) = start_mock();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &url, PROVIDERS);
    let db = dir.path().join("registry.db");

    let started = std::time::Instant::now();
    let out = watch(&cfg, &db, &[]).code(0);
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(1),
        "the 429's Retry-After: 1 was honoured"
    );
    let report = out.json();
    let codex = provider(&report, "codex");
    let newer = versions(&codex["newer"]);
    assert_eq!(
        newer,
        vec![
            ("0.169.0-alpha.1".to_string(), "beta".to_string()),
            ("0.168.0".into(), "stable".into()),
            ("0.163.0".into(), "stable".into()),
            ("0.150.0".into(), "stable".into()),
        ],
        "drafts dropped, pre-releases beta only (never one older than the newest stable release), two sources merged newest first"
    );
    let skipped = versions(&codex["skipped"]);
    let reason = |v: &str| {
        skipped
            .iter()
            .find(|(x, _)| x == v)
            .map(|(_, r)| r.clone())
            .unwrap_or_else(|| panic!("{v} not skipped: {skipped:?}"))
    };
    assert!(reason("0.164.0").starts_with("too new"), "{skipped:?}");
    assert!(reason("0.162.0").starts_with("no publish time"), "fail closed");
    assert_eq!(reason("0.161.0"), "yanked: broken wheel");
    assert!(reason("0.160.1").starts_with("excluded by"));
    assert_eq!(reason("nightly-2026"), "not a SemVer version");
    assert!(
        reason("0.165.0a1").starts_with("pre-release older than the newest stable release 0.168.0"),
        "{skipped:?}"
    );
    assert_eq!(codex["upstream_versions"], 10);

    let gemini = provider(&report, "gemini");
    assert_eq!(
        versions(&gemini["newer"]),
        vec![
            ("1.1.0-preview.0".to_string(), "beta".to_string()),
            ("1.0.0".into(), "stable".into())
        ],
        "a non-latest dist-tag is beta only"
    );
    let g_skipped = versions(&gemini["skipped"]);
    assert!(
        g_skipped.contains(&("0.9.0".into(), "deprecated: use 1.x".into())),
        "{g_skipped:?}"
    );
    assert!(
        g_skipped
            .iter()
            .any(|(v, r)| v == "1.0.1" && r.starts_with("no publish time"))
    );
    assert_eq!(report["recorded"], 6, "candidates only: the old pre-release is not one");

    // Second watch: the PyPI answer revalidates (304), nothing is new, exit 1.
    let again = watch(&cfg, &db, &[]).code(1).json();
    assert_eq!(
        provider(&again, "codex")["freshness"]["pypi:openai-codex-cli-bin"],
        "not_modified"
    );
    assert_eq!(mock.not_modified.load(Ordering::SeqCst), 1);
    assert_eq!(again["recorded"], 0);
    assert!(provider(&again, "codex")["new"].as_array().unwrap().is_empty());

    // The registry holds the candidates with where they came from.
    let rows = Canary::new()
        .arg_path_flag("--registry", &db)
        .args(["registry", "versions", "--json"])
        .run()
        .code(0)
        .json();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 6);
    let beta = rows.iter().find(|r| r["version"] == "0.169.0-alpha.1").unwrap();
    assert_eq!(beta["channel"], "beta");
    assert_eq!(beta["source"], "github:openai/codex");

    // And what it skipped, with the reason, for the dashboard's Upstream page.
    let skipped = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let reg = canary::registry::Registry::open_existing(db.to_str().unwrap())
                .await
                .unwrap();
            canary::dashboard::upstream_data(&reg, &Default::default(), jiff::Timestamp::now())
                .await
                .unwrap()
        });
    let yanked = skipped["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["provider"] == "codex" && r["package_version"] == "0.161.0")
        .cloned();
    assert_eq!(
        yanked.map(|r| r["reason"].clone()),
        Some("yanked: broken wheel".into()),
        "{skipped}"
    );
    let page = canary::dashboard::upstream(&skipped).into_string();
    assert!(page.contains("Skipped by the candidate policy") && page.contains("deprecated: use 1.x"));
}

#[test]
fn failing_registries_are_clear_errors_and_record_nothing() {
    let (url, _mock) = start_mock();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("registry.db");
    let cases = [
        ("broken", "the answer is not JSON"),
        ("down", "500 Internal Server Error"),
        (
            "no-such-package",
            "unknown package: pypi:no-such-package has no no-such-package",
        ),
        ("slow", "timed out"),
    ];
    for (package, message) in cases {
        // A good source next to the bad one: the watch fails as a whole, recording nothing.
        let providers = format!(
            "    gemini:\n      sources: ['npm:@google/gemini-cli']\n    codex:\n      sources: [pypi:{package}]\n"
        );
        let cfg = config(dir.path(), &url, &providers);
        // The slow registry answers after 3 s; the watch gives each request 1 s.
        let text = std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("timeout: 5s", "timeout: 1s");
        std::fs::write(&cfg, text).unwrap();
        let out = watch(&cfg, &db, &[]).code(2);
        let err = out.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(err.contains(message), "{package}: {err}");
        if package != "no-such-package" {
            assert!(err.contains("after 3 attempts"), "{package} was retried: {err}");
        }
    }
    let rows = Canary::new()
        .arg_path_flag("--registry", &db)
        .args(["registry", "versions", "--json"])
        .run()
        .code(0)
        .json();
    assert_eq!(rows.as_array().unwrap().len(), 0, "nothing recorded half-way");

    let cfg = config(dir.path(), &url, PROVIDERS);
    watch(&cfg, &db, &["--provider", "cursor"])
        .code(2)
        .stderr_has("unknown provider `cursor`");
    let bad = config(dir.path(), &url, "    codex:\n      sources: [cargo:codex]\n");
    watch(&bad, &db, &[])
        .code(2)
        .stderr_has("invalid upstream source `cargo:codex`");
}

#[test]
fn runner_heartbeats_reach_status_from_a_file_and_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("registry.db");
    let runner = crate::helpers::runner_exe();
    let out = std::process::Command::new(runner)
        .args(["heartbeat", "--runner-id", "eu-1", "--org", "acme", "--channel", "beta"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let file = dir.path().join("hb.json");
    std::fs::write(&file, &out.stdout).unwrap();
    Canary::new()
        .arg_path_flag("--registry", &db)
        .args(["heartbeat"])
        .arg_path(&file)
        .run()
        .code(0)
        .stdout_has("recorded heartbeat of eu-1");

    // A payload without a runner id is refused, naming the field.
    std::fs::write(
        &file,
        r#"{"type":"HEARTBEAT","runner_id":"","versions":{"runner":"0.1.0"}}"#,
    )
    .unwrap();
    Canary::new()
        .arg_path_flag("--registry", &db)
        .args(["heartbeat"])
        .arg_path(&file)
        .run()
        .code(2)
        .stderr_has("`runner_id` is missing or empty");

    // Over HTTP: `canary serve` takes heartbeats and answers status.
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let (mut cmd, _reports) = Canary::new()
        .arg_path_flag("--registry", &db)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .command();
    let mut serve = cmd.stderr(std::process::Stdio::null()).spawn().unwrap();
    let token = Canary::new()
        .arg_path_flag("--registry", &db)
        .args(["tokens", "create", "--runner", "us-2", "--org", "acme", "--json"])
        .run()
        .code(0)
        .json()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let ops = Canary::new()
        .arg_path_flag("--registry", &db)
        .args(["tokens", "create", "--operator", "ops", "--role", "viewer", "--json"])
        .run()
        .code(0)
        .json()["token"]
        .as_str()
        .unwrap()
        .to_string();
    // The server sees a new token within a second.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let result = rt.block_on(async {
        canary::init_tls();
        let client = reqwest::Client::new();
        for _ in 0..100 {
            if client.get(format!("{url}/healthz")).send().await.is_ok() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let posted = tokio::process::Command::new(runner)
            .args([
                "heartbeat",
                "--runner-id",
                "us-2",
                "--channel",
                "stable",
                "--post",
                &url,
            ])
            .env("CANARY_RUNNER_TOKEN", &token)
            .output()
            .await
            .unwrap();
        assert!(posted.status.success(), "{}", String::from_utf8_lossy(&posted.stderr));
        let anonymous = client
            .post(format!("{url}/v1/heartbeats"))
            .body("{\"runner_id\": \"us-2\"}")
            .send()
            .await
            .unwrap();
        assert_eq!(anonymous.status().as_u16(), 401, "runner endpoints need a token");
        let bad = client
            .post(format!("{url}/v1/heartbeats"))
            .bearer_auth(&token)
            .body("{\"runner_id\": \"us-2\"}")
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status().as_u16(), 422);
        let body = bad.text().await.unwrap();
        assert!(body.contains("versions"), "{body}");
        // A host's update report goes into the audit log under the runner (reports a host
        // cannot have made are refused: tests/fixtures/hostile/control-plane.yaml).
        let report = serde_json::json!({"at": "2026-12-07T10:00:00Z", "action": "upgrade", "from": null,
            "to": null, "outcome": "rolled_back", "reason": "smoke failed"});
        let reported = client
            .post(format!("{url}/v1/updates/report?runner=us-2"))
            .bearer_auth(&token)
            .body(report.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(reported.status().as_u16(), 202);
        // Status is for operators: the runner's token is refused, an operator's answered.
        let by_runner = client
            .get(format!("{url}/v1/status"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(by_runner.status().as_u16(), 403);
        client
            .get(format!("{url}/v1/status"))
            .bearer_auth(&ops)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    let result: serde_json::Value = serde_json::from_str(&result).unwrap();
    let _ = serve.kill();
    let _ = serve.wait();
    let runners = result["runners"].as_array().unwrap();
    let ids: Vec<&str> = runners.iter().map(|r| r["runner_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["eu-1", "us-2"]);
    assert_eq!(runners[0]["org"], "acme");
    assert_eq!(runners[1]["versions"]["runner"], env!("CARGO_PKG_VERSION"));

    // The host's report is in the audit log, as the host's typed outcome.
    let audit = Canary::new()
        .arg_path_flag("--registry", &db)
        .args(["registry", "audit", "--json"])
        .run()
        .code(0)
        .json();
    let reported: Vec<_> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "runner.upgrade")
        .collect();
    assert_eq!(reported.len(), 1, "{audit}");
    assert_eq!(
        (reported[0]["actor"].as_str(), reported[0]["decision"].as_str()),
        (Some("runner:us-2"), Some("rolled_back"))
    );

    // `canary status` shows them beside what their channel's known-good is.
    Canary::new()
        .arg_path_flag("--registry", &db)
        .args(["status"])
        .run()
        .code(0)
        .stdout_has("RUNNERS")
        .stdout_has("us-2");
}
