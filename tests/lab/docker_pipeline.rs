//! `canary pipeline` end to end: a mock PyPI JSON API announces Claude Code releases (the wheels
//! themselves come through pip as always), the pipeline builds each candidate's image, runs the
//! golden path with the real CLI, records, promotes to beta, and posts its verdict to a webhook.

use crate::helpers::{Canary, require_lab, serve_on_loopback};
use axum::extract::State;
use axum::routing::{get, post};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Upstream {
    /// Whether the newer SDK release is out yet.
    released: AtomicBool,
    hooks: Mutex<Vec<serde_json::Value>>,
}

fn file(days_ago: i64) -> serde_json::Value {
    let t = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(24 * days_ago);
    serde_json::json!([{"filename": "claude_agent_sdk.whl", "upload_time_iso_8601": t.to_string(), "yanked": false}])
}

async fn sdk(State(u): State<Arc<Upstream>>) -> axum::Json<serde_json::Value> {
    let mut releases = serde_json::json!({"0.2.180": file(12)});
    if u.released.load(Ordering::SeqCst) {
        releases["0.2.186"] = file(2);
    }
    axum::Json(serde_json::json!({"info": {"name": "claude-agent-sdk"}, "releases": releases}))
}

async fn hook(State(u): State<Arc<Upstream>>, axum::Json(v): axum::Json<serde_json::Value>) -> &'static str {
    u.hooks.lock().unwrap().push(v);
    "ok"
}

async fn codex(State(u): State<Arc<Upstream>>) -> axum::Json<serde_json::Value> {
    let mut releases = serde_json::json!({"0.162.1": file(9)});
    if u.released.load(Ordering::SeqCst) {
        releases["0.163.0"] = file(3);
    }
    axum::Json(serde_json::json!({"info": {"name": "openai-codex-cli-bin"}, "releases": releases}))
}

async fn sdk_pair(State(u): State<Arc<Upstream>>) -> axum::Json<serde_json::Value> {
    let mut releases = serde_json::json!({"0.2.186": file(8)});
    if u.released.load(Ordering::SeqCst) {
        releases["0.2.187"] = file(3);
    }
    axum::Json(serde_json::json!({"info": {"name": "claude-agent-sdk"}, "releases": releases}))
}

fn start() -> (String, Arc<Upstream>) {
    let u = Arc::new(Upstream::default());
    let app = axum::Router::new()
        .route("/pypi/claude-agent-sdk/json", get(sdk))
        .route("/hook", post(hook))
        .with_state(u.clone());
    (serve_on_loopback(app), u)
}

fn pipeline(cfg: &std::path::Path, db: &std::path::Path) -> crate::helpers::Ran {
    Canary::new()
        .arg_path_flag("--config", cfg)
        .arg_path_flag("--registry", db)
        .args(["pipeline", "--json"])
        .run()
}

#[test]
fn pipeline_judges_new_versions_once_and_promotes_green_ones_to_beta() {
    require_lab();
    let (url, upstream) = start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("canary.yaml");
    std::fs::write(
        &cfg,
        format!(
            "upstream:\n  pypi_url: {url}\n  providers:\n    claude-code:\n      sources: [pypi:claude-agent-sdk]\npipeline:\n  webhook: {url}/hook\n"
        ),
    )
    .unwrap();
    let db = dir.path().join("registry.db");

    // First run: only the older release exists; it is judged and becomes beta's known-good.
    let first = pipeline(&cfg, &db);
    let first = first.code(0).json();
    let v = &first["verdicts"][0];
    assert_eq!(v["version"], "2.1.321", "{first}");
    assert_eq!(v["package_version"], "0.2.180");
    assert_eq!(v["status"], "green", "{v}");
    assert_eq!(v["promoted_to"], serde_json::json!(["beta"]));

    // A newer release appears: detected as newer than the known-good, built, run, promoted.
    upstream.released.store(true, Ordering::SeqCst);
    // The outcome owns the reports folder: keep it while the test reads the run's files.
    let second_run = pipeline(&cfg, &db).code(0);
    let second = second_run.json();
    let claude = second["watch"]["providers"][0].clone();
    assert_eq!(claude["known_good"]["beta"], "2.1.321", "{claude}");
    let verdicts = second["verdicts"].as_array().unwrap();
    assert_eq!(verdicts.len(), 1, "{second}");
    let v = &verdicts[0];
    assert_eq!(
        (v["version"].as_str(), v["status"].as_str()),
        (Some("2.1.329"), Some("green"))
    );
    assert!(
        v["changes"].as_str().unwrap().contains("claude-code 2.1.321 → 2.1.329"),
        "{v}"
    );
    assert_eq!(
        v["component_changes"],
        serde_json::json!([{"component": "claude-code", "from": "2.1.321", "to": "2.1.329"}]),
        "the candidate is beta's build with one component changed"
    );
    assert_eq!(v["summary"]["passed"], 3, "golden path on all three repos");
    let report_dir = std::path::Path::new(v["report"].as_str().unwrap())
        .parent()
        .unwrap()
        .to_path_buf();
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report_dir.join("notification.json")).unwrap()).unwrap();
    assert_eq!(written["version"], "2.1.329");

    // The webhook got both verdicts, with what to do if the promotion must be undone.
    let hooks = upstream.hooks.lock().unwrap().clone();
    assert_eq!(hooks.len(), 2);
    assert_eq!(hooks[1]["status"], "green");
    assert!(
        hooks[1]["rollback"][0]
            .as_str()
            .unwrap()
            .starts_with("canary rollback --channel beta"),
        "{}",
        hooks[1]
    );

    // Third run: nothing new, nothing re-run.
    let third = pipeline(&cfg, &db);
    let stderr = third.stderr();
    let third = third.code(0).json();
    assert!(third["verdicts"].as_array().unwrap().is_empty(), "{third}");
    assert!(stderr.contains("nothing new to judge"), "{stderr}");
    assert_eq!(upstream.hooks.lock().unwrap().len(), 2);

    // Beta now runs the newer build; the registry's status says so.
    let (status, beta) = beta_of(&db);
    let components: Vec<(String, String)> = beta["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["version"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(components.contains(&("claude-code".into(), "2.1.329".into())), "{beta}");
    assert!(
        components.iter().any(|(n, _)| n == "runner"),
        "the runner is part of the build: {beta}"
    );
    assert_eq!(status["upstream"]["claude-code"]["version"], "2.1.329");

    // The rollback line the notification gave is run as the person who read it would: through
    // the shell, as written. Beta is back on the build before the promotion.
    let line = hooks[1]["rollback"][0].as_str().unwrap().to_string();
    let undo = crate::helpers::run_as_printed(&line, &[("CANARY_REGISTRY", db.as_os_str())]);
    assert_eq!(
        undo.status.code(),
        Some(0),
        "`{line}`: {}",
        String::from_utf8_lossy(&undo.stderr)
    );
    let (_, beta) = beta_of(&db);
    assert!(
        beta["components"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "claude-code" && c["version"] == "2.1.321"),
        "`{line}` put beta back on the earlier build: {beta}"
    );
}

#[test]
fn a_red_candidate_is_not_promoted_and_not_judged_again() {
    require_lab();
    let (url, upstream) = start();
    upstream.released.store(true, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("canary.yaml");
    std::fs::write(
        &cfg,
        format!(
            "upstream:\n  pypi_url: {url}\n  providers:\n    claude-code:\n      sources: [pypi:claude-agent-sdk]\npipeline:\n  webhook: {url}/hook\n  suites: [tests/fixtures/suites/failing.yaml]\n"
        ),
    )
    .unwrap();
    let db = dir.path().join("registry.db");
    let first = pipeline(&cfg, &db).code(1).json();
    let v = &first["verdicts"][0];
    assert_eq!(
        (v["version"].as_str(), v["status"].as_str()),
        (Some("2.1.329"), Some("red")),
        "{v}"
    );
    assert_eq!(v["promoted_to"], serde_json::json!([]));
    assert!(
        v["failures"][0].as_str().unwrap().contains("stdout.contains"),
        "the first failure is named: {v}"
    );
    assert!(v["rollback"][0].as_str().unwrap().starts_with("nothing to roll back"));
    assert_eq!(upstream.hooks.lock().unwrap()[0]["status"], "red");

    // The blocked version is not run again on the next schedule; --rejudge runs it.
    let again = pipeline(&cfg, &db);
    assert!(again.stderr().contains("already judged red"), "{}", again.stderr());
    assert!(again.code(0).json()["verdicts"].as_array().unwrap().is_empty());
    let status = Canary::new()
        .arg_path_flag("--registry", &db)
        .args(["status", "--json"])
        .run()
        .code(0)
        .json();
    assert!(
        status["channels"].as_array().unwrap().is_empty(),
        "nothing was promoted anywhere: {status}"
    );
}

/// One Codex and one Claude Code release: the pipeline judges each as beta's build with that one
/// component changed, so beta ends as one build bundling both new versions.
#[test]
fn releases_of_two_clis_end_in_one_beta_build_that_bundles_both() {
    require_lab();
    let u = Arc::new(Upstream::default());
    let app = axum::Router::new()
        .route("/pypi/openai-codex-cli-bin/json", get(codex))
        .route("/pypi/claude-agent-sdk/json", get(sdk_pair))
        .route("/hook", post(hook))
        .with_state(u.clone());
    let url = serve_on_loopback(app);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("canary.yaml");
    std::fs::write(
        &cfg,
        format!(
            "upstream:\n  pypi_url: {url}\n  providers:\n    codex:\n      sources: [pypi:openai-codex-cli-bin]\n    claude-code:\n      sources: [pypi:claude-agent-sdk]\npipeline:\n  webhook: {url}/hook\n"
        ),
    )
    .unwrap();
    let db = dir.path().join("registry.db");

    // First run: beta has no build; the first build bundles the newest of each CLI.
    let first = pipeline(&cfg, &db).code(0).json();
    let verdicts = first["verdicts"].as_array().unwrap();
    assert_eq!(verdicts.len(), 1, "one first build: {first}");
    let changes: Vec<String> = verdicts[0]["component_changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["component"].as_str().unwrap().to_string())
        .collect();
    assert!(
        changes.contains(&"codex".into()) && changes.contains(&"claude-code".into()),
        "{first}"
    );

    // Both CLIs release: two candidates, each beta's build with one component changed.
    u.released.store(true, Ordering::SeqCst);
    let second = pipeline(&cfg, &db).code(0).json();
    let verdicts = second["verdicts"].as_array().unwrap();
    assert_eq!(verdicts.len(), 2, "one candidate per release: {second}");
    let mut seen = Vec::new();
    for v in verdicts {
        assert_eq!(v["status"], "green", "{v}");
        let ch = v["component_changes"].as_array().unwrap();
        assert_eq!(ch.len(), 1, "exactly one component changed: {v}");
        seen.push(ch[0]["component"].as_str().unwrap().to_string());
        assert!(
            v["changes"].as_str().unwrap().contains(" → "),
            "the notification names the change: {v}"
        );
    }
    seen.sort();
    assert_eq!(seen, vec!["claude-code".to_string(), "codex".to_string()]);
    let hooks = u.hooks.lock().unwrap().clone();
    assert_eq!(hooks.len(), 3, "one notification per candidate");

    // Beta is one build with both new versions (and the runner).
    let (_, beta) = beta_of(&db);
    let version = |name: &str| {
        beta["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .map(|c| c["version"].as_str().unwrap().to_string())
    };
    assert_eq!(version("codex").as_deref(), Some("0.163.0"), "{beta}");
    assert!(
        beta["components"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "claude-code" && c["package_version"] == "0.2.187"),
        "{beta}"
    );
    assert!(version("runner").is_some(), "{beta}");
}

/// `canary status --json` on this registry, and its beta channel.
fn beta_of(db: &std::path::Path) -> (serde_json::Value, serde_json::Value) {
    let status = Canary::new()
        .arg_path_flag("--registry", db)
        .args(["status", "--json"])
        .run()
        .code(0)
        .json();
    let beta = status["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["channel"] == "beta")
        .unwrap()
        .clone();
    (status, beta)
}
