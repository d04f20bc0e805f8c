//! The summary a person reads at the end of `canary run`: one row per case, then what failed
//! and how to reproduce it.

use super::{CaseStatus, RunReport, StepStatus};
use std::fmt::Write;

pub fn render(report: &RunReport, run_dir: &std::path::Path) -> String {
    let mut out = String::new();
    let w_case = report.cases.iter().map(|c| c.id.len()).max().unwrap_or(4).max(4);
    let _ = writeln!(
        out,
        "{:<w_case$}  {:<9}  {:>5}  {:>8}  NOTE",
        "CASE", "STATUS", "STEPS", "TIME"
    );
    for c in &report.cases {
        let passed = c.steps.iter().filter(|s| s.status == StepStatus::Passed).count();
        // The case's root cause (lab error, drift, then the most telling failure).
        let note = match c.status {
            CaseStatus::Passed => c.steps.iter().find_map(|s| s.note.clone()).unwrap_or_default(),
            _ => super::MatrixRow::of(c).cause.unwrap_or_default(),
        };
        let _ = writeln!(
            out,
            "{:<w_case$}  {:<9}  {:>5}  {:>7.1}s  {}",
            c.id,
            c.status.as_str(),
            format!("{passed}/{}", c.steps.len()),
            c.duration_ms as f64 / 1000.0,
            one_line(&note, 160)
        );
    }
    let s = &report.summary;
    let _ = writeln!(
        out,
        "\n{} cases: {} passed, {} failed, {} drift, {} timed out, {} errors in {:.1}s (run {})",
        s.total,
        s.passed,
        s.failed,
        s.drift,
        s.timed_out,
        s.error,
        report.duration_ms as f64 / 1000.0,
        report.run_id
    );
    let failing: Vec<_> = report.cases.iter().filter(|c| c.status != CaseStatus::Passed).collect();
    if !failing.is_empty() {
        let _ = writeln!(out, "\nTo reproduce:");
        for c in failing {
            let _ = writeln!(out, "  {}", c.repro);
        }
    }
    let _ = writeln!(
        out,
        "\nReports: {}  {}  {}",
        run_dir.join(super::html::HTML_FILE).display(),
        run_dir.join(super::JUNIT_FILE).display(),
        run_dir.join(super::JSON_FILE).display()
    );
    out
}

fn one_line(text: &str, max: usize) -> String {
    let flat = text.replace('\n', " ");
    if flat.chars().count() > max {
        format!("{}…", flat.chars().take(max).collect::<String>())
    } else {
        flat
    }
}
