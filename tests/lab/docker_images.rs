//! Runner builds with the real CLIs: built from PyPI wheels on the offline base, their
//! `--version` checked inside, layered so a changed CLI adds only its own layer.

use crate::helpers::{Canary, require_lab, two_cli_build};
use std::process::Command;

/// A build of the runner and one CLI.
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
fn a_build_bundles_the_runner_and_every_cli_and_a_change_adds_one_layer() {
    require_lab();
    let both = two_cli_build();
    let names: Vec<&str> = both["manifest"]["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["runner", "codex", "claude-code"], "{both}");
    let reference = both["reference"].as_str().unwrap().to_string();

    // Claude Code changes: every other layer is reused as it is, one layer is added.
    let next = Canary::new()
        .args([
            "images",
            "build",
            "--from",
            &reference,
            "--set",
            "claude-code@sdk-0.2.187",
            "--json",
        ])
        .run()
        .code(0)
        .json();
    // Another test may have built the same chain already (layers are shared by content): then
    // every layer is reused and the CLI is asked in the image instead of at build time.
    let claude_version = match next["version_output"]["claude-code"].as_str() {
        Some(v) => v.to_string(),
        None => {
            let out = Command::new("docker")
                .args([
                    "run",
                    "--rm",
                    next["reference"].as_str().unwrap(),
                    "claude",
                    "--version",
                ])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        }
    };
    assert_eq!(claude_version, "2.1.330 (Claude Code)", "{next}");
    let (built, reused) = (
        next["layers_built"].as_u64().unwrap(),
        next["layers_reused"].as_u64().unwrap(),
    );
    assert!(built <= 1 && reused >= 2 && built + reused == 3, "{next}");
    let (old_layers, new_layers) = (layers(&reference), layers(next["reference"].as_str().unwrap()));
    if next["manifest"]["deltas"].as_u64().unwrap_or(0) > 0 {
        // Stacked on the parent's chain: built now, or by another test (layers are shared by
        // content), it is one layer more, and every layer below it is the parent's own.
        assert_eq!(new_layers.len(), old_layers.len() + 1, "one new layer: {next}");
        assert_eq!(new_layers[..old_layers.len()], old_layers[..], "no lower layer rebuilt");
    } else {
        // The same components were built before as base → runner → codex → claude-code 2.1.330:
        // that image is reused whole, and it shares every layer below the CLI that changed.
        assert_eq!(built, 0, "{next}");
        let shared = old_layers.len() - 1;
        assert_eq!(new_layers.len(), old_layers.len(), "{next}");
        assert_eq!(new_layers[..shared], old_layers[..shared], "no lower layer rebuilt");
    }
    let codex = |image: &str| {
        Command::new("docker")
            .args(["run", "--rm", image, "codex", "--version"])
            .output()
            .unwrap()
            .stdout
    };
    assert_eq!(codex(next["reference"].as_str().unwrap()), b"codex-cli 0.163.0\n");

    // Bad input: nothing built.
    Canary::new()
        .args(["images", "build", "--from", &reference, "--set", "gemini@0.9.0"])
        .run()
        .code(2);
    Canary::new()
        .args([
            "images",
            "build",
            "--provider",
            "codex@0.163.0",
            "--provider",
            "codex@0.162.0",
        ])
        .run()
        .code(2)
        .stderr_has("names codex twice");
    let listed = Canary::new().args(["images", "list", "--json"]).run().code(0).json();
    assert!(
        listed.as_array().unwrap().iter().any(|b| b["id"] == next["id"]),
        "{listed}"
    );
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

fn channel(reg: &str, name: &str) -> serde_json::Value {
    let status = Canary::new()
        .args(["--registry", reg, "status", "--json"])
        .run()
        .code(0)
        .json();
    status["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["channel"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no {name} in {status}"))
}

fn versions(channel: &serde_json::Value) -> Vec<String> {
    channel["components"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"] != "runner")
        .map(|c| format!("{}@{}", c["name"].as_str().unwrap(), c["version"].as_str().unwrap()))
        .collect()
}

/// The acceptance of runner builds: one build with both real CLIs runs the golden path for each
/// of them on every canary repo; a candidate changing only Claude Code joins beta as a whole
/// build; rollback returns to the previous build with both CLIs.
#[test]
fn golden_path_passes_for_both_clis_of_one_build_and_channels_move_whole_builds() {
    require_lab();
    let dir = tempfile::tempdir().unwrap();
    let reg = dir.path().join("registry.db").display().to_string();
    let out = Canary::new()
        .args([
            "--registry",
            &reg,
            "run",
            "-s",
            "suites/golden-path.yaml",
            "--provider",
            "codex@0.163.0",
            "--provider",
            "claude-code@sdk-0.2.186",
            "--jobs",
            "2",
            "--json",
            "--promote",
            "beta",
        ])
        .run();
    let stderr = out.stderr();
    let out = out.code(0);
    let report = out.json();
    assert!(stderr.contains("promoted to beta"), "{stderr}");
    assert_eq!(report["summary"]["passed"], 6, "{}", report["summary"]);
    let mut cells: Vec<String> = report["matrix"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| format!("{} {}", m["repo"].as_str().unwrap(), m["runtime"].as_str().unwrap()))
        .collect();
    cells.sort();
    assert_eq!(
        cells,
        [
            "ci-enabled claude-code@2.1.329",
            "ci-enabled codex@0.163.0",
            "js-ts claude-code@2.1.329",
            "js-ts codex@0.163.0",
            "python claude-code@2.1.329",
            "python codex@0.163.0"
        ]
    );
    for case in report["cases"].as_array().unwrap() {
        assert_eq!(case["steps"].as_array().unwrap().len(), 7, "{}", case["id"]);
    }
    let run_dir = out.run_dir();
    for provider in ["codex", "claude-code"] {
        // The draft PR as the forge received it: a draft, on the branch, with the edit's diff.
        let forge = std::fs::read_to_string(run_dir.join(format!(
            "cases/golden-path--python--{provider}/steps/04-draft-pr-on-the-lab-forge.forge.jsonl"
        )))
        .unwrap();
        let pr: serde_json::Value = forge
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|r| !r["pull_request"].is_null())
            .unwrap_or_else(|| panic!("{provider}: no pull request in {forge}"));
        assert_eq!(pr["body"]["draft"], true, "{provider}: octocrab sent draft: true");
        assert!(
            pr["pull_request"]["patch"]
                .as_str()
                .unwrap()
                .contains("+GREETING = \"Howdy\""),
            "{provider}"
        );
        let events = std::fs::read_to_string(run_dir.join(format!(
            "cases/golden-path--python--{provider}/steps/07-risky-action-is-blocked.stdout"
        )))
        .unwrap();
        assert!(events.contains("\"type\":\"ACTION_BLOCKED\""), "{provider}: {events}");
    }
    let junit = std::fs::read_to_string(run_dir.join("junit.xml")).unwrap();
    assert!(
        junit.contains("golden-path × python × claude-code"),
        "JUnit names the provider"
    );
    let first = channel(&reg, "beta");
    assert_eq!(versions(&first), ["codex@0.163.0", "claude-code@2.1.329"]);

    // A candidate changing Claude Code only, judged and promoted: beta is one build, both CLIs.
    let image = report["images"][0]["reference"].as_str().unwrap().to_string();
    let next = Canary::new()
        .args([
            "images",
            "build",
            "--from",
            &image,
            "--set",
            "claude-code@sdk-0.2.187",
            "--json",
        ])
        .run()
        .code(0)
        .json();
    let next_ref = next["reference"].as_str().unwrap();
    let promoted = Canary::new()
        .args([
            "--registry",
            &reg,
            "run",
            "-s",
            "suites/golden-path.yaml",
            "--image",
            next_ref,
            "--jobs",
            "2",
            "--promote",
            "beta",
        ])
        .run()
        .code(0);
    // The same CLIs as the README's demo: what it shows the demo ending with is what this prints.
    crate::shown::assert_shows("demo-promoted", &promoted.stdout());
    let beta = channel(&reg, "beta");
    assert_eq!(versions(&beta), ["codex@0.163.0", "claude-code@2.1.330"], "{beta}");
    assert_eq!(beta["previous_known_good"], first["build"]);

    // Rollback returns the previous build, with both CLIs, never another provider's image.
    Canary::new()
        .args(["--registry", &reg, "rollback", "--channel", "beta"])
        .run()
        .code(0);
    let back = channel(&reg, "beta");
    assert_eq!(back["build"], first["build"]);
    assert_eq!(versions(&back), ["codex@0.163.0", "claude-code@2.1.329"]);
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
    let base = new["manifest"]["base"].as_str().unwrap().to_string();
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

/// A platform's own runner image (here: the lab's base with a wrapper around the reference
/// runner, labelled with its version) as the build's runner: the CLIs stack on it, the build
/// records it as the runner component, and a golden-path case runs through it.
#[test]
fn a_users_runner_image_is_the_runner_of_a_build() {
    require_lab();
    let base = Canary::new().args(["images", "base", "--json"]).run().code(0).json();
    let base_ref = base["reference"].as_str().unwrap().to_string();
    let ctx = tempfile::tempdir().unwrap();
    let runner = std::path::Path::new(crate::helpers::runner_exe());
    std::fs::copy(runner, ctx.path().join("canary-runner-real")).unwrap();
    // The wrapper leaves a mark, so the test can tell this runner ran and not the lab's own.
    std::fs::write(
        ctx.path().join("canary-runner"),
        "#!/bin/sh\necho \"$@\" >> /tmp/platform-runner.log\nexec /opt/platform/canary-runner-real \"$@\"\n",
    )
    .unwrap();
    for f in ["canary-runner", "canary-runner-real"] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(ctx.path().join(f), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM {base_ref}\nLABEL canary-lab.runner-version=0.1.0\nCOPY canary-runner-real /opt/platform/canary-runner-real\nCOPY canary-runner /usr/local/bin/canary-runner\n"
        ),
    )
    .unwrap();
    let tag = format!("canary-lab-test/platform-runner:{}", std::process::id());
    let built = Command::new("docker")
        .args(["build", "-q", "-t", &tag])
        .arg(ctx.path())
        .output()
        .unwrap();
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));

    let b = Canary::new()
        .args([
            "images",
            "build",
            "--runner-image",
            &tag,
            "--provider",
            "claude-code@sdk-0.2.187",
            "--json",
        ])
        .run()
        .code(0)
        .json();
    let runner_c = &b["manifest"]["components"][0];
    assert_eq!(runner_c["name"], "runner", "{b}");
    assert_eq!(runner_c["version"], "0.1.0");
    assert_eq!(runner_c["package"], format!("image:{tag}"));
    let reference = b["reference"].as_str().unwrap().to_string();
    let mine = layers(&tag);
    assert_eq!(
        layers(&reference)[..mine.len()],
        mine[..],
        "the build stacks on the runner image"
    );

    // --set runner would swap in the lab's runner: refused, the image is the runner.
    Canary::new()
        .args(["images", "build", "--from", &reference, "--set", "runner"])
        .run()
        .code(2)
        .stderr_has("comes from the image");

    // A session through the build, then a look at the mark the platform's runner left.
    let (_d, suite) = crate::helpers::write_temp(
        "platform-runner.yaml",
        "name: platform-runner\nrepos: [python]\nsteps:\n  - name: session starts\n    session:\n      prompt: Say that you are ready.\n      scenario:\n        - say: ready\n    timeout: 2m\n    expect:\n      events:\n        present: [SESSION_STARTED]\n        absent: [ERROR]\n  - name: the platform's runner ran it\n    exec: grep -c '^session ' /tmp/platform-runner.log\n    expect:\n      stdout:\n        contains: ['1']\n",
    );
    // `run` names the same build by its parts: the runner image and the CLI; it is found, not
    // rebuilt.
    let run = Canary::new()
        .args([
            "run",
            "--no-record",
            "--runner-image",
            &tag,
            "--provider",
            "claude-code@sdk-0.2.187",
            "--json",
            "--suite",
        ])
        .arg_path(&suite)
        .run();
    let report = run.json();
    assert_eq!(report["summary"]["passed"], 1, "{report}");
    assert_eq!(report["image"]["reference"], reference.as_str(), "the same build ran");
    let _ = Command::new("docker")
        .args(["image", "rm", "-f", &reference, &tag])
        .output();
}
