//! JUnit XML: one `<testsuite>` per case (suite × repo), one `<testcase>` per step. A failed
//! step's message lists every unmet expectation as "expected … got …"; its output tails ride
//! along as system-out / system-err so a CI page shows them without opening artifacts.

use super::{CaseStatus, RunReport, StepStatus};
use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
use std::path::Path;
use std::time::Duration;

/// How much of each output stream a testcase carries.
const TAIL_BYTES: u64 = 4096;

pub fn render(report: &RunReport, run_dir: &Path) -> String {
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
            tc.set_classname(classname(&case.suite, &case.repo, case.provider.as_deref()));
            suite.add_test_case(tc);
        }
        for step in &case.steps {
            let status = match step.status {
                StepStatus::Passed => TestCaseStatus::success(),
                StepStatus::Skipped => {
                    let mut s = TestCaseStatus::skipped();
                    s.set_message("not run: an earlier step timed out or the case deadline passed");
                    s
                }
                StepStatus::Failed => {
                    let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                    s.set_message(
                        step.failures
                            .iter()
                            .map(|f| f.to_string())
                            .collect::<Vec<_>>()
                            .join("; "),
                    );
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
                    s.set_message(
                        step.failures
                            .iter()
                            .map(|f| f.to_string())
                            .collect::<Vec<_>>()
                            .join("; "),
                    );
                    s.set_type("timed_out");
                    s
                }
                StepStatus::Error => {
                    let mut s = TestCaseStatus::non_success(NonSuccessKind::Error);
                    s.set_message(case.error.clone().unwrap_or_else(|| "lab error".into()));
                    s.set_type("infra_error");
                    s
                }
            };
            let mut tc = TestCase::new(step.name.clone(), status);
            tc.set_classname(classname(&case.suite, &case.repo, case.provider.as_deref()));
            tc.set_time(Duration::from_millis(step.duration_ms));
            if step.status != StepStatus::Passed {
                if let Some(out) = step.stdout_file.as_ref().and_then(|f| tail(&run_dir.join(f))) {
                    tc.set_system_out(out);
                }
                if let Some(err) = step.stderr_file.as_ref().and_then(|f| tail(&run_dir.join(f))) {
                    tc.set_system_err(err);
                }
            }
            suite.add_test_case(tc);
        }
        junit.add_test_suite(suite);
    }
    junit.to_string().expect("JUnit serializes to memory")
}

fn classname(suite: &str, repo: &str, provider: Option<&str>) -> String {
    match provider {
        Some(p) => format!("{suite}.{repo}.{p}"),
        None => format!("{suite}.{repo}"),
    }
}

pub(crate) fn tail(path: &Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    if len == 0 {
        return None;
    }
    f.seek(SeekFrom::Start(len.saturating_sub(TAIL_BYTES))).ok()?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).ok()?;
    // XML 1.0 cannot carry most control characters; CLI output sometimes has them.
    let text: String = String::from_utf8_lossy(&buf)
        .chars()
        .filter(|c| !c.is_control() || matches!(c, '\n' | '\t' | '\r'))
        .collect();
    Some(if len > TAIL_BYTES {
        format!("[… {} earlier bytes in {}]\n{text}", len - TAIL_BYTES, path.display())
    } else {
        text
    })
}
