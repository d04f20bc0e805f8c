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
