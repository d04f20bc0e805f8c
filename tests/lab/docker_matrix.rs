//! `canary matrix` and `canary bisect` over upstream versions a mock PyPI JSON API lists (the
//! wheels come through pip as always, from the lab's cache when they are there): one build per
//! version, one run, the matrix as JSON, Markdown, HTML and in a README; the first bad version
//! found by halving, and a channel held below it.

use crate::helpers::{Canary, require_lab, serve_on_loopback};
use axum::routing::get;

fn file() -> serde_json::Value {
    serde_json::json!([{"filename": "claude_agent_sdk.whl", "upload_time_iso_8601": "2026-11-01T00:00:00Z", "yanked": false}])
}

async fn sdk() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({"info": {"name": "claude-agent-sdk"}, "releases": {
        "0.2.179": file(), "0.2.180": file(), "0.2.186": file(), "0.2.187": file(), "0.2.188rc1": file()
    }}))
}

#[test]
fn docker_matrix_and_bisect_judge_upstream_versions() {
    require_lab();
    let url = serve_on_loopback(axum::Router::new().route("/pypi/claude-agent-sdk/json", get(sdk)));
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("canary.yaml");
    let gate = dir.path().join("gate.yaml");
    std::fs::write(
        &gate,
        "beta:\n  required_suites: [cli-version]\n  repos: [python]\n  max_age: 1d\n  allow_flaky: false\n",
    )
    .unwrap();
    std::fs::write(
        &cfg,
        format!("upstream:\n  pypi_url: {url}\ngate_policy: {}\n", gate.display()),
    )
    .unwrap();
    let db = dir.path().join("registry.db");
    let canary = || {
        Canary::new()
            .arg_path_flag("--config", &cfg)
            .arg_path_flag("--registry", &db)
    };

    // The matrix: the two newest stable versions (the release candidate is left out).
    let readme = dir.path().join("README.md");
    std::fs::write(
        &readme,
        "# x\n<!-- canary matrix: claude-code -->\nold table\n<!-- /canary matrix: claude-code -->\nend\n",
    )
    .unwrap();
    let out_dir = dir.path().join("matrix");
    let ran = canary()
        .args([
            "matrix",
            "--provider",
            "claude-code",
            "--versions",
            "0.2.186..",
            "--repo",
            "python",
            "--jobs",
            "2",
            "--json",
        ])
        .arg_path_flag("--out", &out_dir)
        .arg_path_flag("--readme", &readme)
        .run()
        .code(0);
    let m = ran.json();
    let rows = m["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{m:#}");
    assert_eq!(rows[0]["version"], "sdk-0.2.186");
    assert_eq!(rows[0]["cli_version"], "2.1.329");
    assert_eq!(rows[1]["cli_version"], "2.1.330");
    for r in rows {
        assert_eq!(r["status"], "passed", "{r}");
        assert_eq!(r["passed"], 1);
    }
    for f in ["matrix.json", "matrix.md", "matrix.html"] {
        assert!(out_dir.join(f).is_file(), "{f}");
    }
    // Each version's case of the matrix run reproduces from its folder's repro.sh.
    let cases = ran.run_dir().join("cases");
    let mut reproduced = 0;
    for entry in std::fs::read_dir(&cases).unwrap().flatten() {
        let script = entry.path().join("repro.sh");
        let out = crate::helpers::run_as_printed(&format!("sh {} --json", script.display()), &[]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{} passes again: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let again: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(again["summary"]["passed"], 1, "{again:#}");
        reproduced += 1;
    }
    assert_eq!(reproduced, 2, "one case per version");
    let text = std::fs::read_to_string(&readme).unwrap();
    assert!(text.contains("| sdk-0.2.187 | 2.1.330 | passed | 1/1 |"), "{text}");
    assert!(
        !text.contains("old table") && text.ends_with("<!-- /canary matrix: claude-code -->\nend\n"),
        "{text}"
    );

    // Bisect: 0.2.180 (Claude Code 2.1.321) is good, 0.2.187 bad; one judged version decides.
    let b = canary()
        .args([
            "bisect",
            "--provider",
            "claude-code",
            "--good",
            "0.2.180",
            "--bad",
            "0.2.187",
            "--suite",
            "tests/fixtures/suites/cli-version.yaml",
            "--hold",
            "beta",
            "--json",
        ])
        .run()
        .code(0)
        .json();
    assert_eq!(b["first_bad"], "sdk-0.2.186", "{b:#}");
    assert_eq!(b["last_good"], "sdk-0.2.180");
    assert_eq!(b["judged"], serde_json::json!([["sdk-0.2.186", false]]));
    assert!(
        b["held"]
            .as_str()
            .unwrap()
            .starts_with("beta holds claude-code sdk-0.2.180"),
        "{b:#}"
    );
    let status = canary().args(["status", "--json"]).run().code(0).stdout();
    assert!(status.contains("2.1.321"), "beta runs the last good version: {status}");

    // A disk-bounded matrix: one version per run, each build removed once judged unless a
    // channel holds it (beta holds 0.2.180 now). 0.2.179 is judged here only.
    let bounded = canary()
        .args([
            "matrix",
            "--provider",
            "claude-code",
            "--versions",
            "0.2.179,0.2.180",
            "--batch",
            "1",
            "--release-judged",
            "--suite",
            "tests/fixtures/suites/cli-version.yaml",
            "--repo",
            "python",
            "--no-record",
            "--json",
        ])
        .run()
        .code(0);
    let m = bounded.json();
    let rows = m["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{m:#}");
    assert!(rows.iter().all(|r| r["status"] == "passed"), "{m:#}");
    let exists = |image: &serde_json::Value| {
        std::process::Command::new("docker")
            .args(["image", "inspect", image.as_str().unwrap()])
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(!exists(&rows[0]["image"]), "0.2.179's build is gone once judged: {m:#}");
    assert!(exists(&rows[1]["image"]), "beta's build stays");
    let lines = bounded.stderr();
    assert!(
        lines.contains("claude-code sdk-0.2.179: judged; build removed"),
        "{lines}"
    );
    assert!(
        lines.contains("claude-code sdk-0.2.180: build kept (it is one of the last two known-good builds of `beta`"),
        "{lines}"
    );
    assert!(
        !crate::helpers::root()
            .join(".canary/cache/providers/claude-code/0.2.179")
            .exists()
    );

    // Bad input is refused before anything is built.
    canary()
        .args([
            "bisect",
            "--provider",
            "claude-code",
            "--good",
            "0.2.187",
            "--bad",
            "0.2.180",
        ])
        .run()
        .code(2)
        .stderr_has("is not older than");
    canary()
        .args(["matrix", "--provider", "gemini", "--versions", "all"])
        .run()
        .code(2)
        .stderr_has("npm-only");
}
