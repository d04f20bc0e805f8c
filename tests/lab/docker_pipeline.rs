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
    // the shell, as written, by an operator who has `canary` installed (a notification is read
    // away from the lab's checkout). Beta is back on the build before the promotion.
    let line = hooks[1]["rollback"][0].as_str().unwrap().to_string();
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_canary")).parent().unwrap();
    let path = std::ffi::OsString::from(format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    ));
    let undo = crate::helpers::run_as_printed(&line, &[("CANARY_REGISTRY", db.as_os_str()), ("PATH", &path)]);
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

/// The CI pipeline's journey: the example workflow's own "Run the pipeline" step, as a CI runner
/// runs it (bash -eo pipefail, the job's environment, `sudo` as a pass-through since the job is
/// root here), in a checkout-like folder; then what its upload step collects, read as a CI
/// system reads it: pipeline.json, each run's run.json and notification.json, and junit.xml
/// through a JUnit parser. A second run of the same job judges nothing again and passes.
#[test]
fn the_example_workflow_runs_the_pipeline_as_a_ci_job_does() {
    require_lab();
    let root = crate::helpers::root();
    let workflow: serde_json::Value =
        serde_saphyr::from_str(&std::fs::read_to_string(root.join(".github/workflows/canary.yml")).unwrap()).unwrap();
    let steps = workflow["jobs"]["pipeline"]["steps"].as_array().unwrap();
    let script = steps
        .iter()
        .find(|s| s["id"] == "pipeline")
        .and_then(|s| s["run"].as_str())
        .expect("the workflow has a step with id `pipeline`")
        .to_string();
    let uploads: Vec<String> = steps
        .iter()
        .find(|s| {
            s["uses"]
                .as_str()
                .is_some_and(|u| u.starts_with("actions/upload-artifact"))
        })
        .and_then(|s| s["with"]["path"].as_str())
        .expect("the workflow uploads the reports")
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();

    // A checkout: the lab's repos and suites, the lab's binary where the step calls it, a
    // `sudo` that passes through, and canary.yaml pointing upstream at a mock package index.
    let (url, upstream) = start();
    let job = tempfile::tempdir().unwrap();
    let w = job.path();
    for d in ["canary-repos", "suites"] {
        std::os::unix::fs::symlink(root.join(d), w.join(d)).unwrap();
    }
    std::fs::create_dir_all(w.join("target/debug")).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_canary"), w.join("target/debug/canary")).unwrap();
    let bin = w.join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::fs::write(
        bin.join("sudo"),
        "#!/bin/sh\nwhile [ \"${1#--preserve-env}\" != \"$1\" ]; do shift; done\nexec \"$@\"\n",
    )
    .unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(bin.join("sudo"))
        .status()
        .unwrap();
    std::fs::write(
        w.join("canary.yaml"),
        format!(
            "cache_dir: {}\nupstream:\n  pypi_url: {url}\n  providers:\n    claude-code:\n      sources: [pypi:claude-agent-sdk]\n",
            root.join(".canary/cache").display()
        ),
    )
    .unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let job_run = || {
        std::process::Command::new("bash")
            .args(["--noprofile", "--norc", "-eo", "pipefail", "-c", &script])
            .current_dir(w)
            .env_clear()
            .env("PATH", &path)
            .env("HOME", std::env::var("HOME").unwrap())
            .env("CI", "true")
            .env("CANARY_REGISTRY", "")
            .env("CANARY_WEBHOOK", format!("{url}/hook"))
            .env("GITHUB_TOKEN", "")
            .env("PROVIDER", "claude-code")
            .env("REJUDGE", "false")
            .output()
            .unwrap()
    };

    let out = job_run();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let pipeline: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(w.join("pipeline.json")).unwrap()).unwrap();
    let v = &pipeline["verdicts"][0];
    assert_eq!(
        (v["status"].as_str(), v["version"].as_str()),
        (Some("green"), Some("2.1.321")),
        "{pipeline}"
    );
    assert_eq!(upstream.hooks.lock().unwrap().len(), 1, "the webhook got the verdict");

    // What the upload step collects exists, and a CI system reads it.
    let matching = |pattern: &str| -> Vec<std::path::PathBuf> {
        let (dir, rest) = pattern.split_once("/*/").unwrap_or(("", pattern));
        if dir.is_empty() {
            return vec![w.join(pattern)].into_iter().filter(|p| p.exists()).collect();
        }
        std::fs::read_dir(w.join(dir))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.path().join(rest))
                    .filter(|p| p.exists())
                    .collect()
            })
            .unwrap_or_default()
    };
    for pattern in &uploads {
        assert!(!matching(pattern).is_empty(), "the upload step finds {pattern}");
    }
    let junit = &matching("reports/*/junit.xml")[0];
    let xml = std::fs::read_to_string(junit).unwrap();
    let doc = roxmltree::Document::parse(&xml).expect("junit.xml is XML");
    let cases: Vec<_> = doc.descendants().filter(|n| n.has_tag_name("testcase")).collect();
    assert!(!cases.is_empty(), "{xml}");
    assert!(
        cases.iter().all(|c| !c
            .children()
            .any(|f| f.has_tag_name("failure") || f.has_tag_name("error"))),
        "a green verdict has no failed test case: {xml}"
    );
    let notification: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&matching("reports/*/notification.json")[0]).unwrap()).unwrap();
    assert_eq!(notification["status"], "green");

    // A developer reproduces a case of the job's run with the line its report prints, in the
    // checkout, and gets its verdict again.
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&matching("reports/*/run.json")[0]).unwrap()).unwrap();
    let repro = run["cases"][0]["repro"].as_str().unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_canary"), bin.join("canary")).unwrap();
    let again = std::process::Command::new("sh")
        .args(["-c", repro])
        .current_dir(w)
        .env("PATH", &path)
        .env("CI", "true")
        .output()
        .unwrap();
    assert_eq!(
        again.status.code(),
        Some(0),
        "`{repro}` passes again: {}",
        String::from_utf8_lossy(&again.stderr)
    );

    // The next scheduled run: nothing new, nothing judged twice, the job passes.
    let again = job_run();
    assert_eq!(
        again.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let second: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(w.join("pipeline.json")).unwrap()).unwrap();
    assert_eq!(second["verdicts"], serde_json::json!([]), "{second}");
}

/// The release engineer's journey, as one story: a new upstream version is judged by the
/// pipeline and lands on beta; `canary status` shows it; once beta's fleet has run it, stable's
/// train starts its rollout through `canary serve` with no command typed, and it reaches 1 % of
/// stable's sessions; the dashboard shows the rollout; the fleet's telemetry turns bad, the
/// rollout is aborted and stable is back on its build; the engineer rolls beta back too.
#[test]
fn a_new_upstream_version_reaches_stable_by_itself_and_goes_back_on_a_bad_signal() {
    use crate::rollout::{GATE, canary, channel_build, drive, serve, simulate};
    require_lab();
    let (url, upstream) = start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("canary.yaml");
    std::fs::write(
        &cfg,
        format!(
            "upstream:\n  pypi_url: {url}\n  providers:\n    claude-code:\n      sources: [pypi:claude-agent-sdk]\n"
        ),
    )
    .unwrap();
    let policy = dir.path().join("gate.yaml");
    // Stable follows beta: a build beta's fleet ran for a second over 400 sessions (all those
    // the test runs there) starts its own rollout on stable.
    let train = GATE.replace(
        "    bake: 1s\n",
        "    bake: 1s\n    auto_after: {channel: beta, soak: 1s, min_sessions: 400}\n",
    );
    assert_ne!(train, GATE);
    std::fs::write(&policy, train).unwrap();
    let reg = crate::registry::fresh(crate::registry::Backend::Sqlite);
    let judge = || {
        canary(&reg)
            .arg_path_flag("--config", &cfg)
            .args(["pipeline", "--json"])
            .run()
            .code(0)
            .json()
    };
    let beta = || {
        let st = canary(&reg).args(["status", "--json"]).run().code(0).json();
        st["channels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["channel"] == "beta")
            .and_then(|c| c["build"].as_str().map(String::from))
            .unwrap_or_default()
    };

    // Stable runs the first release the pipeline judged; org beta-org follows beta.
    assert_eq!(judge()["verdicts"][0]["status"], "green");
    let first = beta();
    canary(&reg)
        .args(["promote", &first, "--channel", "stable"])
        .arg_path_flag("--policy", &policy)
        .run()
        .code(0);
    canary(&reg)
        .args(["pin", "--org", "beta-org", "--channel", "beta"])
        .run()
        .code(0);
    let s = serve(&reg, &policy, crate::helpers::free_port());
    // A new version upstream: judged, green, on beta; status says so.
    upstream.released.store(true, Ordering::SeqCst);
    let v = judge()["verdicts"][0].clone();
    assert_eq!(
        (v["status"].as_str(), v["version"].as_str()),
        (Some("green"), Some("2.1.329")),
        "{v}"
    );
    let candidate = beta();
    assert_ne!(candidate, first, "beta moved to the new build");
    assert_eq!(channel_build(&reg), first, "stable still runs the first");

    // Beta's fleet runs it; nobody types a command: the train starts stable's rollout, and the
    // candidate takes about 1 % of stable's sessions.
    let ran = simulate(&reg, &s, 400, &["*=fail:0.01,latency:900"], &["beta-org"]);
    assert_eq!(ran["by_build"][&candidate]["sessions"], 400, "{ran}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let started = loop {
        let list = canary(&reg).args(["rollout", "list", "--json"]).run().code(0).json();
        if let Some(r) = list.as_array().unwrap().iter().find(|r| r["channel"] == "stable") {
            break r.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the train never started the rollout"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(
        (started["actor"].as_str(), started["build_id"].as_str()),
        (Some("rollout-train"), Some(candidate.as_str())),
        "{started}"
    );
    let stable = simulate(&reg, &s, 6000, &["*=fail:0.01,latency:900"], &["acme", "globex"]);
    let on_candidate = stable["by_build"][&candidate]["sessions"].as_u64().unwrap_or(0);
    assert!(
        (15..=120).contains(&on_candidate),
        "{on_candidate} of 6000 stable sessions at the 1 % step: {stable}"
    );
    let short = &candidate["sha256:".len().."sha256:".len() + 12];
    let running = s.page("/");
    assert!(
        running.contains("state-running") && running.contains(short),
        "{running}"
    );

    // The candidate fails a fifth of its sessions: aborted at the first step, stable back.
    let bad = format!("{short}=fail:0.2,latency:900");
    let st = drive(&reg, &s, &policy, &[&bad, "*=fail:0.01,latency:900"], 20);
    assert_eq!(st["rollout"]["state"], "aborted", "{st}");
    assert_eq!(channel_build(&reg), first, "stable is back on its build");
    let aborted = s.page("/");
    assert!(
        aborted.contains("state-aborted") && aborted.contains("aborted: failure rate"),
        "{aborted}"
    );

    // The engineer takes beta back too: beta runs the first build again.
    canary(&reg)
        .args(["rollback", "--channel", "beta", "--reason", "failure rate on stable"])
        .run()
        .code(0);
    assert_eq!(beta(), first);
}
