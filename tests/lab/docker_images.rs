//! Candidate images with the real CLIs: built from PyPI wheels on the offline base, their
//! `--version` checked inside, layered so a new CLI version adds only its own layer.

use crate::helpers::{Canary, require_lab};
use std::process::Command;

fn build(spec: &str) -> serde_json::Value {
    Canary::new()
        .args(["images", "build", "--provider", spec, "--json"])
        .run()
        .code(0)
        .json()
}

fn layers(reference: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args(["image", "inspect", "--format", "{{json .RootFS.Layers}}", reference])
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn candidate_images_carry_the_real_clis() {
    require_lab();
    let codex = build("codex@0.163.0");
    assert_eq!(codex["cli_version"], "0.163.0");
    assert_eq!(codex["version_output"], "codex-cli 0.163.0");
    let claude = build("claude-code@sdk-0.2.186");
    assert_eq!(claude["cli_version"], "2.1.329");
    assert!(
        claude["version_output"].as_str().unwrap().starts_with("2.1.329"),
        "{claude}"
    );

    // Same inputs, same image; another Codex version reuses every lower layer.
    assert_eq!(build("codex@0.163.0")["id"], codex["id"]);
    let older = build("codex@0.162.0");
    assert_eq!(older["version_output"], "codex-cli 0.162.0");
    let (new_layers, old_layers, base_layers) = (
        layers(codex["reference"].as_str().unwrap()),
        layers(older["reference"].as_str().unwrap()),
        layers(codex["base"].as_str().unwrap()),
    );
    assert_eq!(new_layers.len(), base_layers.len() + 1, "one layer on the base");
    assert_eq!(new_layers[..base_layers.len()], base_layers[..]);
    assert_eq!(old_layers[..base_layers.len()], base_layers[..]);
    assert_ne!(new_layers.last(), old_layers.last());
}

#[test]
fn a_missing_version_lists_what_exists() {
    let out = Canary::new()
        .args(["images", "build", "--provider", "codex@0.0.999"])
        .run()
        .code(2);
    assert!(
        out.stderr()
            .contains("available versions of openai-codex-cli-bin: 0.163.0"),
        "{}",
        out.stderr()
    );
}

#[test]
fn runs_on_a_candidate_image_record_its_runtime() {
    require_lab();
    let image = build("codex@0.163.0");
    let dir = tempfile::tempdir().unwrap();
    let suite = dir.path().join("cli.yaml");
    std::fs::write(&suite, "name: cli-present\nrepos: [js-ts]\nsteps:\n  - name: codex runs\n    exec: codex --version\n    expect:\n      stdout:\n        contains: ['codex-cli 0.163.0']\n").unwrap();
    let registry = dir.path().join("registry.db");
    let reg = registry.display().to_string();
    Canary::new()
        .args([
            "--registry",
            &reg,
            "run",
            "--image",
            image["reference"].as_str().unwrap(),
            "-s",
        ])
        .arg_path(&suite)
        .run()
        .code(0);
    let matrix = Canary::new()
        .args(["--registry", &reg, "registry", "matrix", "--json"])
        .run()
        .code(0)
        .json();
    assert_eq!(matrix[0]["runtime"], "codex@0.163.0", "{matrix}");
    assert_eq!(matrix[0]["status"], "pass");
}

#[test]
fn golden_path_passes_for_both_real_clis() {
    require_lab();
    for spec in ["codex@0.163.0", "claude-code@sdk-0.2.186"] {
        let image = build(spec);
        let out = Canary::new()
            .args([
                "run",
                "-s",
                "suites/golden-path.yaml",
                "--image",
                image["reference"].as_str().unwrap(),
                "--jobs",
                "2",
                "--json",
                "--no-record",
            ])
            .run()
            .code(0);
        let report = out.json();
        assert_eq!(report["summary"]["passed"], 3, "{spec}: {}", report["summary"]);
        for case in report["cases"].as_array().unwrap() {
            assert_eq!(
                case["steps"].as_array().unwrap().len(),
                7,
                "{spec}: the six checks as seven testcases (tests before and after a breaking edit)"
            );
        }
        let run_dir = out.run_dir();
        // The draft PR as the forge received it: a draft, on the branch, with the edit's diff.
        let forge = std::fs::read_to_string(
            run_dir.join("cases/golden-path--python/steps/04-draft-pr-on-the-lab-forge.forge.jsonl"),
        )
        .unwrap();
        let pr: serde_json::Value = forge
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|r| !r["pull_request"].is_null())
            .unwrap_or_else(|| panic!("{spec}: no pull request in {forge}"));
        assert_eq!(pr["status"], 201, "{spec}");
        assert_eq!(pr["body"]["draft"], true, "{spec}: octocrab sent draft: true");
        assert_eq!(pr["pull_request"]["head"], "canary/howdy", "{spec}");
        assert!(
            pr["pull_request"]["patch"]
                .as_str()
                .unwrap()
                .contains("+GREETING = \"Howdy\""),
            "{spec}: {}",
            pr["pull_request"]["patch"]
        );
        let stub_log = std::fs::read_to_string(
            run_dir.join("cases/golden-path--python/steps/07-risky-action-is-blocked.stub.jsonl"),
        )
        .unwrap();
        assert!(
            stub_log.contains("rm -rf .git"),
            "{spec}: the stub asked for the risky action"
        );
        let events =
            std::fs::read_to_string(run_dir.join("cases/golden-path--python/steps/07-risky-action-is-blocked.stdout"))
                .unwrap();
        assert!(events.contains("\"type\":\"ACTION_BLOCKED\""), "{spec}: {events}");
        let junit = std::fs::read_to_string(run_dir.join("junit.xml")).unwrap();
        assert!(junit.contains("name=\"risky action is blocked\""), "{spec}");
    }
}

#[test]
fn a_session_the_scenario_does_not_cover_fails_with_the_stub_log() {
    require_lab();
    let image = build("codex@0.163.0");
    let out = Canary::new()
        .args([
            "run",
            "-s",
            "tests/fixtures/suites/session-unmatched.yaml",
            "--image",
            image["reference"].as_str().unwrap(),
            "--json",
            "--no-record",
        ])
        .run()
        .code(1);
    let step = &out.json()["cases"][0]["steps"][0];
    let failures = step["failures"].as_array().unwrap();
    assert!(
        failures
            .iter()
            .any(|f| f["check"] == "model stub"
                && f["actual"].as_str().unwrap().contains("scenario `default` has 1 turns")),
        "{failures:#?}"
    );
}

/// Several images in one run: the JSON report's matrix compares them, a failing one says why,
/// and the registry records each case against its own build.
#[test]
fn one_run_compares_cli_versions_in_a_matrix() {
    require_lab();
    let new = build("codex@0.163.0");
    let old = build("codex@0.162.0");
    let base = new["base"].as_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let reg = dir.path().join("registry.db").display().to_string();
    let mut args = vec![
        "--registry".to_string(),
        reg.clone(),
        "run".into(),
        "-s".into(),
        "tests/fixtures/suites/session-start.yaml".into(),
        "--jobs".into(),
        "2".into(),
        "--json".into(),
    ];
    for img in [
        new["reference"].as_str().unwrap(),
        old["reference"].as_str().unwrap(),
        &base,
    ] {
        args.extend(["--image".to_string(), img.to_string()]);
    }
    let report = Canary::new().args(&args).run().code(1).json();
    assert_eq!(report["images"].as_array().unwrap().len(), 3);
    let matrix = report["matrix"].as_array().unwrap();
    let row = |runtime: &str| {
        matrix
            .iter()
            .find(|r| r["runtime"] == runtime)
            .unwrap_or_else(|| panic!("no {runtime} in {matrix:#?}"))
    };
    assert_eq!(row("codex@0.163.0")["status"], "passed");
    assert_eq!(row("codex@0.162.0")["status"], "passed");
    let bare = row(&base);
    assert_eq!(bare["status"], "failed");
    assert!(
        bare["cause"].as_str().unwrap().contains("the image carries none"),
        "{bare}"
    );
    let ids: Vec<&str> = report["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.iter().all(|id| id.starts_with("session-start--js-ts--")) && ids.len() == 3,
        "{ids:?}"
    );
    let recorded = Canary::new()
        .args(["--registry", &reg, "registry", "matrix", "--json"])
        .run()
        .code(0)
        .json();
    let runtimes: Vec<&str> = recorded
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["runtime"].as_str().unwrap())
        .collect();
    assert!(
        runtimes.contains(&"codex@0.163.0") && runtimes.contains(&"codex@0.162.0"),
        "{runtimes:?}"
    );
}
