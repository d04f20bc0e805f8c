//! Session steps: the lab starts the model stub on the case container's loopback (playing the
//! step's scenario), runs `canary-runner session` against it, and keeps the stub's request log.
//! The stub runs per case, so cases share nothing and need no network at all.

use crate::engine::{Backend, ExecSpec};
use crate::report::CheckFailure;
use crate::suite::SessionSpec;
use base64::Engine as _;
use std::time::{Duration, Instant};

pub const DIR: &str = "/tmp/canary-lab";

fn sh(script: String, deadline: Instant) -> ExecSpec {
    ExecSpec {
        cmd: vec!["sh".into(), "-c".into(), script],
        env: vec![],
        workdir: crate::repos::WORKDIR.into(),
        deadline,
        stdin: None,
    }
}

/// The provider a session uses: the step's, else the case's (one of the build's CLIs).
pub fn provider(spec: &SessionSpec, case_provider: Option<&str>) -> Option<String> {
    spec.provider.clone().or_else(|| case_provider.map(String::from))
}

/// What the report shows as the step's command.
pub fn display(spec: &SessionSpec, case_provider: Option<&str>) -> String {
    format!(
        "canary-runner session --provider {} --approval {} (scenario: {} turns)",
        provider(spec, case_provider).unwrap_or_else(|| "?".into()),
        spec.approval,
        spec.scenario.turns.len()
    )
}

/// Starts the stub for step `n` and returns the runner's argv, or the reason the session cannot
/// run (a step failure, not a lab error: the image lacks a runner or a CLI).
pub async fn prepare<B: Backend>(
    backend: &B,
    container: &str,
    n: usize,
    spec: &SessionSpec,
    case_provider: Option<&str>,
    step_timeout: Duration,
) -> crate::error::Result<Result<Vec<String>, CheckFailure>> {
    let fail = |expected: &str, actual: String| {
        Ok(Err(CheckFailure {
            check: "session".into(),
            expected: expected.into(),
            actual,
        }))
    };
    let Some(provider) = provider(spec, case_provider) else {
        return fail(
            "a provider CLI in the image",
            "the image carries none: build one with `canary images build --provider ...` or set `provider:`".into(),
        );
    };
    let scenario = serde_json::to_string(&spec.scenario).expect("scenario serializes");
    let b64 = base64::engine::general_purpose::STANDARD.encode(scenario);
    let script = format!(
        "command -v canary-runner >/dev/null || {{ echo 'canary-runner is not in this image' >&2; exit 3; }}; \
         mkdir -p {DIR} && echo {b64} | base64 -d > {DIR}/scenario-{n}.json && \
         (canary-runner lab-stub --scenario {DIR}/scenario-{n}.json --log {DIR}/stub-{n}.jsonl --addr-file {DIR}/stub-{n}.addr > {DIR}/stub-{n}.err 2>&1 &) && \
         for i in $(seq 200); do [ -s {DIR}/stub-{n}.addr ] && exec cat {DIR}/stub-{n}.addr; sleep 0.05; done; cat {DIR}/stub-{n}.err >&2; exit 1"
    );
    let out = backend
        .exec(container, &sh(script, Instant::now() + Duration::from_secs(30)))
        .await?;
    if out.exit_code != Some(0) {
        return fail(
            "the model stub to start in the case container",
            format!(
                "exit {:?}: {}",
                out.exit_code,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        );
    }
    let url = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let mut argv: Vec<String> = [
        "canary-runner",
        "session",
        "--provider",
        &provider,
        "--prompt",
        &spec.prompt,
        "--model-url",
        &url,
        "--approval",
        spec.approval.as_arg(),
        "--workspace",
        crate::repos::WORKDIR,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // The runner's own deadline comes first, so it can report a hung CLI before the lab kills it.
    argv.extend([
        "--timeout".into(),
        format!("{}s", step_timeout.as_secs().saturating_sub(5).max(5)),
    ]);
    // The case container is the sandbox: unprivileged, no capabilities, no network.
    argv.extend(["--codex-sandbox".into(), "danger-full-access".into()]);
    // What the CLI printed, kind by kind, for drift (collected by `drift::collect`).
    argv.extend(["--inventory".into(), format!("{DIR}/inventory-{n}.json")]);
    if let Some(m) = &spec.model {
        argv.extend(["--model".into(), m.clone()]);
    }
    Ok(Ok(argv))
}

/// The stub's request log for step `n`: raw text and parsed entries.
pub async fn stub_log<B: Backend>(backend: &B, container: &str, n: usize) -> (Vec<u8>, Vec<serde_json::Value>) {
    let out = backend
        .exec(
            container,
            &sh(
                format!("cat {DIR}/stub-{n}.jsonl"),
                Instant::now() + Duration::from_secs(30),
            ),
        )
        .await;
    let text = out.map(|o| o.stdout).unwrap_or_default();
    let entries = String::from_utf8_lossy(&text)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    (text, entries)
}
