//! Drift against fixture CLIs derived from the real ones: a wrapper around the real Codex or
//! Claude Code that renames an event, drops a field, inflates usage, blanks the final answer or
//! hides a flag from `--help`. Each case ends `drift` or `failed` with the one line that says
//! why; the unmodified CLIs pass; `canary drift` compares the builds' recorded inventories.

use crate::helpers::{Canary, docker, require_lab, root};
use crate::registry::{Backend, fresh};

/// A build of the real CLI, as `canary images build` makes it.
fn build(provider: &str) -> String {
    let out = Canary::new()
        .args(["images", "build", "--provider", provider, "--json"])
        .run()
        .code(0)
        .json();
    out["reference"].as_str().unwrap().to_string()
}

/// `base` with its `command` replaced by the fixture wrapper in `mode` (the real command kept
/// as `<command>.real`), committed as `canary-lab-fixture/<mode>:1`.
fn fixture(base: &str, command: &str, mode: &str) -> String {
    let reference = format!("canary-lab-fixture/{mode}:1");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mode"), format!("{mode}\n")).unwrap();
    let container = docker(&["create", "--label", "canary-lab.test=drift", base]);
    let bin = format!("/usr/local/bin/{command}");
    let result = std::panic::catch_unwind(|| {
        let real = dir.path().join("real");
        docker(&["cp", &format!("{container}:{bin}"), real.to_str().unwrap()]);
        docker(&["cp", real.to_str().unwrap(), &format!("{container}:{bin}.real")]);
        docker(&[
            "cp",
            dir.path().join("mode").to_str().unwrap(),
            &format!("{container}:{bin}.mode"),
        ]);
        // Executable whatever mode the checkout gave the fixture file.
        let wrapper = dir.path().join("wrapper");
        std::fs::copy(root().join("tests/fixtures/drift/wrapper.py"), &wrapper).unwrap();
        std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        docker(&["cp", wrapper.to_str().unwrap(), &format!("{container}:{bin}")]);
        docker(&["commit", &container, &reference]);
    });
    docker(&["rm", &container]);
    result.unwrap();
    reference
}

#[test]
fn docker_fixture_clis_end_as_drift_or_failed_with_one_line_and_the_real_ones_pass() {
    require_lab();
    let codex = build("codex@0.163.0");
    let claude = build("claude-code@sdk-0.2.186");
    let renamed = fixture(&codex, "codex", "rename-event");
    let dropped = fixture(&codex, "codex", "drop-field");
    let inflated = fixture(&codex, "codex", "inflate-usage");
    let blank = fixture(&claude, "claude", "blank-result");
    let no_flag = fixture(&claude, "claude", "drop-flag");
    let custom = fixture(&codex, "codex", "custom-tool");

    let reg = fresh(Backend::Sqlite);
    let mut run = Canary::new().args([
        "--registry",
        &reg.url,
        "run",
        "--suite",
        "suites/golden-path.yaml",
        "--repo",
        "python",
        "--jobs",
        "2",
        "--json",
    ]);
    for image in [
        &codex, &claude, &renamed, &dropped, &inflated, &blank, &no_flag, &custom,
    ] {
        run = run.args(["--image", image]);
    }
    let out = run.run().code(1);
    let report = out.json();
    let case = |image: &str| {
        report["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["image"] == image)
            .unwrap_or_else(|| panic!("no case for {image}: {report:#}"))
            .clone()
    };
    let cause = |image: &str| {
        report["matrix"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["image"] == image)
            .unwrap()["cause"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };

    // The unmodified CLIs pass, and their inventories carry what the adapters read.
    for image in [&codex, &claude] {
        let c = case(image);
        assert_eq!(c["status"], "passed", "{image}: {c:#}");
        assert!(c["inventory"]["events"].as_object().unwrap().len() >= 4, "{c:#}");
        assert!(c["inventory"]["flags"].as_array().unwrap().len() > 10, "{c:#}");
    }
    assert_eq!(
        case(&codex)["inventory"]["events"]["turn.completed"]["fields"]["usage.output_tokens"][0],
        "integer"
    );

    // Changed output is drift, named in one line.
    let c = case(&renamed);
    assert_eq!(c["status"], "drift", "{c:#}");
    assert_eq!(
        c["drift"],
        "drift: codex 0.163.0 emits unknown event turn.done; turn.completed no longer seen"
    );
    assert_eq!(cause(&renamed), c["drift"].as_str().unwrap());
    let c = case(&dropped);
    assert_eq!(c["status"], "drift", "{c:#}");
    assert_eq!(
        c["drift"],
        "drift: codex 0.163.0 turn.completed lost field usage.output_tokens"
    );
    // What the CLI sends changed: its shell tool is now a free-form `custom` tool, which the
    // golden path's proxy pins do not allow.
    let c = case(&custom);
    assert_eq!(c["status"], "drift", "{c:#}");
    assert_eq!(
        c["drift"],
        "drift: codex 0.163.0 sends tool exec_command as custom (allowed: function, namespace, web_search)"
    );
    assert_eq!(c["inventory"]["requests"]["tools"]["exec_command"]["kind"], "custom");
    // A vanished flag is caught by the pre-flight: no session runs.
    let c = case(&no_flag);
    assert_eq!(c["status"], "drift", "{c:#}");
    assert_eq!(
        c["drift"],
        "drift: claude-code 2.1.329 no longer lists flag --include-partial-messages"
    );
    assert!(c["steps"].as_array().unwrap().iter().all(|s| s["status"] == "skipped"));

    // Same shapes, wrong content: failed, with the expectation that caught it.
    let c = case(&inflated);
    assert_eq!(c["status"], "failed", "{c:#}");
    assert!(c["drift"].is_null());
    let why = cause(&inflated);
    assert!(
        why.starts_with("session starts: usage.output_tokens: expected "),
        "{why}"
    );
    let c = case(&blank);
    assert_eq!(c["status"], "failed", "{c:#}");
    let why = cause(&blank);
    assert!(
        why.contains("blank_result") && why.contains("final answer is blank"),
        "{why}"
    );
    assert!(!why.contains("\\\""), "no nested JSON escaping: {why}");

    // The run's summary and JUnit say drift too.
    assert_eq!(report["summary"]["drift"], 4);
    assert_eq!(report["status"], "drift");
    let junit = std::fs::read_to_string(out.run_dir().join("junit.xml")).unwrap();
    assert!(junit.contains("type=\"drift\""), "{junit}");
    assert!(junit.contains("emits unknown event turn.done"), "{junit}");

    // A developer reproduces that failed golden-path case (from a --repo subset of a suite of
    // three repos) with the line the report printed: it fails again, with the same cause.
    let line = case(&inflated)["repro"].as_str().unwrap().to_string();
    let again = crate::helpers::run_as_printed(&format!("{line} --json"), &[]);
    assert_eq!(
        again.status.code(),
        Some(1),
        "`{line}`: {}",
        String::from_utf8_lossy(&again.stderr)
    );
    let rerun: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(
        rerun["matrix"][0]["cause"].as_str(),
        Some(cause(&inflated).as_str()),
        "`{line}`: {rerun:#}"
    );

    // The registry keeps each build's inventory: `canary drift` compares them.
    let canary = || Canary::new().args(["--registry", &reg.url]);
    let same = canary().args(["drift", codex.as_str(), "--json"]).run().code(0).json();
    assert_eq!(same["drift"], false, "{same:#}");
    let d = canary()
        .args(["drift", renamed.as_str(), "--against", codex.as_str()])
        .run()
        .code(1)
        .stdout_has("drift: codex 0.163.0 emits unknown event turn.done; turn.completed no longer seen")
        .stdout();
    assert!(
        d.contains("- [drift] output missing: turn.completed no longer seen"),
        "{d}"
    );
    // Request-side drift between the builds, with its class.
    canary()
        .args(["drift", custom.as_str(), "--against", codex.as_str()])
        .run()
        .code(1)
        // The stub shapes a call from the tool's schema, which a custom tool lacks: Codex then
        // refuses the calls, so its command events vanish from the output as well.
        .stdout_has("sends tool exec_command as custom, was function")
        .stdout_has("- [drift] request tool_type_changed: sends tool exec_command as custom, was function");
    let d = canary()
        .args(["drift", no_flag.as_str(), "--against", claude.as_str(), "--json"])
        .run()
        .code(1)
        .json();
    let findings = d["clis"][0]["findings"].to_string();
    assert!(
        findings.contains("no longer lists flag --include-partial-messages"),
        "{d:#}"
    );
    // A build nothing was recorded for is an error that says what to do.
    canary()
        .args(["drift", "sha256:0000000000000000"])
        .run()
        .code(2)
        .stderr_has("unknown build");
}
