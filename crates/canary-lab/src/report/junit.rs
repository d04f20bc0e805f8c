//! JUnit XML: one `<testsuite>` per case (suite × repo), one `<testcase>` per step. A failed
//! step's message lists every unmet expectation as "expected … got …"; its output tails ride
//! along as system-out / system-err so a CI page shows them without opening artifacts.

use super::events::Tails;
use super::{CaseStatus, RunReport, StepStatus};
use canary_contract::Provider;
use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
use std::time::Duration;

/// How much of each output stream a testcase carries.
const TAIL_BYTES: usize = 4096;

/// The JUnit file of `report`; failed steps carry the output tails the run's events delivered.
pub fn render(report: &RunReport, tails: &Tails) -> String {
    let mut junit = Report::new(format!("canary-lab {}", report.run_id));
    junit.set_time(Duration::from_millis(report.duration_ms));
    for case in &report.cases {
        let mut name = format!("{} × {}", case.suite, case.repo);
        if let Some(p) = &case.provider {
            name = format!("{name} × {p}");
        }
        if report.images.len() > 1 || case.provider.is_some() {
            name = format!("{name} @ {}", case.runtime.as_deref().unwrap_or(&case.image));
        }
        let mut suite = TestSuite::new(name);
        suite.set_time(Duration::from_millis(case.duration_ms));
        if case.status == CaseStatus::Error && case.steps.is_empty() {
            let mut status = TestCaseStatus::non_success(NonSuccessKind::Error);
            status.set_message(case.error.clone().unwrap_or_else(|| "lab error".into()));
            status.set_type("infra_error");
            let mut tc = TestCase::new("setup", status);
            tc.set_classname(classname(&case.suite, &case.repo, case.provider.map(Provider::name)));
            suite.add_test_case(tc);
        }
        if let Some(line) = &case.drift {
            // Drift first: the CLI changed, and the failing steps below follow from it.
            let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
            status.set_message(line.clone());
            status.set_type("drift");
            let mut tc = TestCase::new("cli output and flags", status);
            tc.set_classname(classname(&case.suite, &case.repo, case.provider.map(Provider::name)));
            suite.add_test_case(tc);
        }
        for step in &case.steps {
            let status = step_status(case, step);
            let mut tc = TestCase::new(step.name.clone(), status);
            tc.set_classname(classname(&case.suite, &case.repo, case.provider.map(Provider::name)));
            tc.set_time(Duration::from_millis(step.duration_ms));
            if step.status != StepStatus::Passed {
                if let Some(out) = tails.get(step.stdout_file.as_ref()) {
                    tc.set_system_out(out);
                }
                if let Some(err) = tails.get(step.stderr_file.as_ref()) {
                    tc.set_system_err(err);
                }
            }
            suite.add_test_case(tc);
        }
        junit.add_test_suite(suite);
    }
    junit.to_string().expect("JUnit serializes to memory")
}

/// A step's JUnit status: its failures as "expected … got …", why it was skipped, or the lab
/// error that stopped it.
fn step_status(case: &super::CaseReport, step: &super::StepReport) -> TestCaseStatus {
    match step.status {
        StepStatus::Passed => TestCaseStatus::success(),
        StepStatus::Skipped => {
            let mut s = TestCaseStatus::skipped();
            s.set_message(
                if case.drift.is_some() && case.steps.iter().all(|s| s.status == StepStatus::Skipped) {
                    "not run: the pre-flight found drift"
                } else {
                    "not run: an earlier step timed out or the case deadline passed"
                },
            );
            s
        }
        StepStatus::Failed => {
            let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
            s.set_message(failures_line(step));
            s.set_type("expectation");
            s.set_description(format!(
                "command: {}\n{}",
                step.command,
                step.failures
                    .iter()
                    .map(|f| format!("- {f}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            ));
            s
        }
        StepStatus::TimedOut => {
            let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
            s.set_message(failures_line(step));
            s.set_type("timed_out");
            s
        }
        StepStatus::Error => {
            let mut s = TestCaseStatus::non_success(NonSuccessKind::Error);
            s.set_message(case.error.clone().unwrap_or_else(|| "lab error".into()));
            s.set_type("infra_error");
            s
        }
    }
}

/// Every unmet expectation of a step, on one line.
fn failures_line(step: &super::StepReport) -> String {
    step.failures
        .iter()
        .map(|f| f.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

fn classname(suite: &str, repo: &str, provider: Option<&str>) -> String {
    match provider {
        Some(p) => format!("{suite}.{repo}.{p}"),
        None => format!("{suite}.{repo}"),
    }
}

/// The last [`TAIL_BYTES`] of an output stream as text a report can carry (XML 1.0 cannot
/// carry most control characters, and CLI output sometimes has them); `None` when empty.
pub(crate) fn tail_of(bytes: &[u8], file: &str) -> Option<String> {
    if bytes.is_empty() {
        return None;
    }
    let start = bytes.len().saturating_sub(TAIL_BYTES);
    let text: String = String::from_utf8_lossy(&bytes[start..])
        .chars()
        .filter(|c| !c.is_control() || matches!(c, '\n' | '\t' | '\r'))
        .collect();
    Some(if start > 0 {
        format!("[… {start} earlier bytes in {file}]\n{text}")
    } else {
        text
    })
}
