//! Drift in the lab: a pre-flight per image and CLI (its `--help` against the flags the runner
//! passes) before any case, each session's inventory collected from the case container, and a
//! case whose failure comes from changed CLI output judged `drift` with one line that says what
//! changed. The rules themselves live in [`crate::runner::inventory`].

use super::case::CaseImage;
use crate::engine::{Backend, ContainerSpec, ExecSpec};
use crate::providers::Provider;
use crate::report::{CaseReport, CaseStatus, CheckFailure};
use crate::runner::inventory::{self, Inventory, Preflight};
use crate::stub::requests::{self, RequestShape, Requests};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The check name of a breach of `expect.requests`.
pub const REQUESTS_CHECK: &str = "requests";

/// The most of an inventory file the lab reads back.
const MAX_INVENTORY: usize = 4 << 20;

/// Runs `canary-runner preflight` for each provider in one short-lived container of the image.
/// A provider whose pre-flight cannot run is left out with a note (its sessions then tell).
pub async fn preflight<B: Backend>(
    backend: &B,
    run_id: &str,
    index: usize,
    image: &CaseImage,
    providers: &[Provider],
) -> (BTreeMap<Provider, Preflight>, Vec<String>) {
    let mut found = BTreeMap::new();
    let mut notes = Vec::new();
    let mut spec = ContainerSpec::new(run_id, &format!("preflight-{index}"), &image.id);
    spec.executor = image.executor;
    let container = match backend.start_container(&spec).await {
        Ok(c) => c,
        Err(e) => {
            notes.push(format!("pre-flight not run for {}: {e}", image.reference));
            return (found, notes);
        }
    };
    for &p in providers {
        let exec = ExecSpec {
            cmd: vec![
                "canary-runner".into(),
                "preflight".into(),
                "--provider".into(),
                p.name().into(),
            ],
            env: vec![],
            workdir: "/".into(),
            deadline: Instant::now() + Duration::from_secs(45),
            stdin: None,
        };
        match backend.exec(&container, &exec).await {
            Ok(out) if matches!(out.exit_code, Some(0 | 1)) => match serde_json::from_slice::<Preflight>(&out.stdout) {
                Ok(pf) => {
                    found.insert(p, pf);
                }
                Err(e) => notes.push(format!(
                    "pre-flight of {p} in {}: unreadable answer: {e}",
                    image.reference
                )),
            },
            Ok(out) => notes.push(format!(
                "pre-flight of {p} in {} not run: exit {:?}: {}",
                image.reference,
                out.exit_code,
                String::from_utf8_lossy(&out.stderr)
                    .trim()
                    .chars()
                    .take(200)
                    .collect::<String>()
            )),
            Err(e) => notes.push(format!("pre-flight of {p} in {} not run: {e}", image.reference)),
        }
    }
    if let Err(e) = backend.remove_container(&container).await {
        tracing::warn!("could not remove pre-flight container {container}: {e}");
    }
    (found, notes)
}

/// Reads session `n`'s inventory from the case container: the raw text (an artifact) and the
/// parsed inventory, if the runner wrote one.
pub async fn collect<B: Backend>(backend: &B, container: &str, dir: &str, n: usize) -> (Vec<u8>, Option<Inventory>) {
    let exec = ExecSpec {
        cmd: vec![
            "sh".into(),
            "-c".into(),
            format!("head -c {MAX_INVENTORY} {dir}/inventory-{n}.json 2>/dev/null"),
        ],
        env: vec![],
        workdir: "/".into(),
        deadline: Instant::now() + Duration::from_secs(30),
        stdin: None,
    };
    let text = backend
        .exec(container, &exec)
        .await
        .map(|o| o.stdout)
        .unwrap_or_default();
    let inv = serde_json::from_slice(&text).ok();
    (text, inv)
}

/// Adds a session's inventory to the case's (sessions of another CLI than the first are kept
/// only as artifacts).
pub fn add(report: &mut CaseReport, inv: Inventory) {
    match &mut report.inventory {
        None => report.inventory = Some(inv),
        Some(mine) if mine.provider == inv.provider => mine.merge(&inv),
        Some(_) => {}
    }
}

/// The request contract of one session, from the model stub's log entries.
pub fn requests(stub_log: &[serde_json::Value]) -> Requests {
    let mut out = Requests::default();
    for shape in stub_log
        .iter()
        .filter_map(|e| serde_json::from_value::<RequestShape>(e["request"].clone()).ok())
    {
        out.observe(&shape);
    }
    out
}

/// A session's breaches of the suite's `expect.requests` pins, one check failure each (the check
/// is named `requests`, which [`judge`] reads as drift).
pub fn check_requests(pins: &requests::Expect, seen: &Requests) -> Vec<CheckFailure> {
    pins.check(seen)
        .into_iter()
        .map(|actual| CheckFailure {
            check: REQUESTS_CHECK.into(),
            expected: "what the CLI sends to the model to match the suite's `expect.requests`".into(),
            actual,
        })
        .collect()
}

/// A case the pre-flight already condemned: its CLI no longer lists a flag the runner passes.
/// Its steps are not run (each session would fail on the flag); the case is `drift`.
pub fn condemn(report: &mut CaseReport, pf: &Preflight) -> bool {
    let Some(line) = pf.drift_line() else {
        return false;
    };
    report.status = CaseStatus::Drift;
    report.drift = Some(line);
    true
}

/// After the steps: a failed case whose CLI output departs from what its adapter reads is
/// `drift`, with the line naming the change. A passing case stays passed.
pub fn judge(report: &mut CaseReport) {
    if !matches!(report.status, CaseStatus::Failed | CaseStatus::TimedOut) {
        return;
    }
    let Some(inv) = &report.inventory else {
        return;
    };
    // What the CLI sends broke the suite's pins: a proxy in front of the model would refuse it.
    let sent: Vec<String> = report
        .steps
        .iter()
        .flat_map(|s| &s.failures)
        .filter(|f| f.check == REQUESTS_CHECK)
        .map(|f| f.actual.clone())
        .collect();
    if !sent.is_empty() {
        let mut shown: Vec<String> = sent.iter().take(3).cloned().collect();
        if sent.len() > 3 {
            shown.push(format!("and {} more", sent.len() - 3));
        }
        report.status = CaseStatus::Drift;
        report.drift = Some(format!("drift: {} {} {}", inv.provider, inv.version, shown.join("; ")));
        return;
    }
    let Some(provider) = Provider::from_name(&inv.provider) else {
        return;
    };
    let findings = inv.against(inventory::contract(provider));
    if let Some(line) = inventory::drift_line(&inv.provider, &inv.version, &findings) {
        report.status = CaseStatus::Drift;
        report.drift = Some(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn report(status: CaseStatus) -> CaseReport {
        serde_json::from_value(json!({
            "id": "golden-path--python", "suite": "golden-path", "repo": "python", "status": status,
            "attempts": 1, "duration_ms": 1, "timings": {"container_ms": 0, "setup_ms": 0, "steps_ms": 0, "checks_ms": 0, "teardown_ms": 0},
            "steps": [], "artifacts": "cases/x", "repro": "canary repro x", "error": null
        }))
        .unwrap()
    }

    fn codex(turn_kind: &str, unknown: bool) -> Inventory {
        let mut inv = Inventory::new("codex", "0.164.0");
        inv.observe(&json!({"type": "thread.started", "thread_id": "t"}), false);
        inv.observe(
            &json!({"type": turn_kind, "usage": {"input_tokens": 1, "cached_input_tokens": 0, "output_tokens": 1}}),
            unknown,
        );
        inv
    }

    #[test]
    fn a_failure_from_changed_output_is_drift_and_other_failures_are_not() {
        let mut r = report(CaseStatus::Failed);
        add(&mut r, codex("turn.done", true));
        judge(&mut r);
        assert_eq!(r.status, CaseStatus::Drift);
        assert_eq!(
            r.drift.as_deref(),
            Some("drift: codex 0.164.0 emits unknown event turn.done; turn.completed no longer seen")
        );
        // The same output shape as the adapter reads: a failure stays a failure.
        let mut r = report(CaseStatus::Failed);
        add(&mut r, codex("turn.completed", false));
        judge(&mut r);
        assert_eq!(r.status, CaseStatus::Failed);
        // A passing case is never turned into drift, and no inventory decides nothing.
        let mut r = report(CaseStatus::Passed);
        add(&mut r, codex("turn.done", true));
        judge(&mut r);
        assert_eq!(r.status, CaseStatus::Passed);
        let mut r = report(CaseStatus::Failed);
        judge(&mut r);
        assert_eq!(r.status, CaseStatus::Failed);
    }

    #[test]
    fn a_breach_of_the_request_pins_is_drift_with_one_line() {
        let stub = vec![
            json!({"request": {"endpoint": "POST /v1/responses (openai_responses)", "params": {}, "tools": [
            {"name": "exec_command", "kind": "custom", "schema_hash": "h", "schema": null}
        ], "instructions": null, "headers": {}}}),
            json!({"auxiliary": true}),
        ];
        let seen = requests(&stub);
        assert_eq!(seen.requests, 1);
        let pins = requests::Expect {
            tool_types: vec!["function".into()],
            ..Default::default()
        };
        let mut r = report(CaseStatus::Failed);
        r.steps = serde_json::from_value(json!([{"name": "edit", "command": "c", "status": "failed", "exit_code": 0,
            "duration_ms": 1, "kill_latency_ms": null, "failures": [], "stdout_file": null, "stderr_file": null, "output_truncated": false}])).unwrap();
        r.steps[0].failures = check_requests(&pins, &seen);
        add(&mut r, codex("turn.completed", false));
        judge(&mut r);
        assert_eq!(r.status, CaseStatus::Drift);
        assert_eq!(
            r.drift.as_deref(),
            Some("drift: codex 0.164.0 sends tool exec_command as custom (allowed: function)")
        );
    }

    #[test]
    fn a_vanished_flag_condemns_the_case() {
        let pf = Preflight {
            provider: "claude-code".into(),
            version: "2.1.400".into(),
            flags: Default::default(),
            missing: vec!["--include-partial-messages".into()],
        };
        let mut r = report(CaseStatus::Passed);
        assert!(condemn(&mut r, &pf));
        assert_eq!(r.status, CaseStatus::Drift);
        assert_eq!(
            r.drift.as_deref(),
            Some("drift: claude-code 2.1.400 no longer lists flag --include-partial-messages")
        );
        let ok = Preflight { missing: vec![], ..pf };
        let mut r = report(CaseStatus::Passed);
        assert!(!condemn(&mut r, &ok));
        assert_eq!(r.status, CaseStatus::Passed);
    }
}
