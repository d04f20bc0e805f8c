//! `report.html`: one self-contained page per run (no script, no external file), rendered from
//! the same [`RunReport`] as the JSON and JUnit: the summary, the matrix, and per case its
//! steps with every unmet expectation as expected vs got, output tails, the diff and the repro
//! line. Every value is escaped by the template (maud) and stripped of control characters.

use super::events::Tails;
use super::{CaseReport, CaseStatus, RunReport, StepStatus};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use std::path::Path;

pub const HTML_FILE: &str = "report.html";

/// How much of a diff the page carries.
const DIFF_BYTES: u64 = 64 * 1024;

/// The page's style: status colours shared with the dashboard.
pub const STYLE: &str = r#"
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:0;color:#1b1f24;background:#f6f8fa}
header{background:#1b1f24;color:#fff;padding:14px 24px}header h1{margin:0;font-size:18px}
header .meta{color:#c9d1d9;font-size:12px}
main{padding:16px 24px;max-width:1200px}
h2{font-size:16px;margin:24px 0 8px}
table{border-collapse:collapse;background:#fff;width:100%}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eaeef2;font-weight:600}
.st{font-weight:600;border-radius:3px;padding:1px 6px;color:#fff;white-space:nowrap}
.passed,.pass{background:#1a7f37}.failed,.fail{background:#cf222e}.drift{background:#b35900}.flaky{background:#bf8700}
.timed_out{background:#8250df}.error,.infra_error{background:#57606a}.skipped{background:#8c959f}
.none{background:#d0d7de;color:#1b1f24}
details{background:#fff;border:1px solid #d0d7de;margin:8px 0;padding:6px 10px}
summary{cursor:pointer;font-weight:600}
pre{background:#0d1117;color:#e6edf3;padding:8px;overflow:auto;max-height:320px;font-size:12px;white-space:pre-wrap;word-break:break-all}
.fail-list code,td code{white-space:pre-wrap;word-break:break-all}
code{font:12px ui-monospace,SFMono-Regular,Menlo,monospace}
.fail-list{color:#cf222e;margin:4px 0 4px 18px;padding:0}
.cards{display:flex;gap:8px;flex-wrap:wrap}.card{background:#fff;border:1px solid #d0d7de;padding:8px 12px;min-width:90px}
.card b{display:block;font-size:20px}
nav a{color:#fff;margin-right:14px;text-decoration:none}nav a.on{text-decoration:underline}
"#;

/// Text as it may appear on a page: control characters (escape sequences, NULs) removed.
pub fn safe(s: &str) -> String {
    crate::text::clean(s).into_owned()
}

/// [`safe`] for blocks (output, diffs): line breaks and tabs kept.
pub fn safe_block(s: &str) -> String {
    crate::text::clean_block(s).into_owned()
}

pub fn status_badge(word: &str) -> Markup {
    html! { span class={ "st " (safe(word)) } { (safe(word)) } }
}

fn case_status(s: CaseStatus) -> &'static str {
    s.as_str()
}

fn step_status(s: StepStatus) -> &'static str {
    match s {
        StepStatus::Passed => "passed",
        StepStatus::Failed => "failed",
        StepStatus::TimedOut => "timed_out",
        StepStatus::Skipped => "skipped",
        StepStatus::Error => "error",
    }
}

fn read_bounded(path: &Path, limit: u64) -> Option<String> {
    use std::io::Read;
    let f = std::fs::File::open(path).ok()?;
    let mut buf = Vec::new();
    f.take(limit).read_to_end(&mut buf).ok()?;
    (!buf.is_empty()).then(|| String::from_utf8_lossy(&buf).into_owned())
}

fn case_section(case: &CaseReport, run_dir: &Path, tails: &Tails) -> Markup {
    let diff = read_bounded(&run_dir.join(&case.artifacts).join("diff.patch"), DIFF_BYTES);
    let open = case.status != CaseStatus::Passed;
    html! {
        details id=(safe(&case.id)) open[open] {
            summary {
                (status_badge(case_status(case.status))) " "
                code { (safe(&case.id)) }
                " — " (case.duration_ms) " ms"
                @if case.attempts > 1 { " (" (case.attempts) " attempts)" }
            }
            p {
                "image " code { (safe(&case.image)) }
                @if let Some(r) = &case.runtime { " · runtime " code { (safe(r)) } }
            }
            @if let Some(e) = &case.error { p.fail-list { "lab error: " (safe(e)) } }
            @if let Some(d) = &case.drift { p.fail-list { b { (safe(d)) } } }
            table {
                tr { th { "step" } th { "status" } th { "exit" } th { "time" } th { "expected vs got" } }
                @for step in &case.steps {
                    tr {
                        td { (safe(&step.name)) br; code { (safe(&step.command)) } }
                        td { (status_badge(step_status(step.status))) }
                        td { @if let Some(c) = step.exit_code { (c) } }
                        td { (step.duration_ms) " ms" }
                        td {
                            @if !step.failures.is_empty() {
                                ul.fail-list {
                                    @for f in &step.failures {
                                        li { b { (safe(&f.check)) } ": expected " code { (safe(&f.expected)) } ", got " code { (safe(&f.actual)) } }
                                    }
                                }
                            }
                            @if step.status != StepStatus::Passed {
                                @if let Some(out) = tails.get(step.stdout_file.as_ref()) {
                                    div { "stdout (tail)" pre { (safe_block(out)) } }
                                }
                                @if let Some(err) = tails.get(step.stderr_file.as_ref()) {
                                    div { "stderr (tail)" pre { (safe_block(err)) } }
                                }
                            }
                        }
                    }
                }
            }
            @if let Some(d) = &diff {
                details { summary { "diff against the pin" } pre { (safe_block(d)) } }
            }
            p { "repro: " code.repro { (safe(&case.repro)) } }
        }
    }
}

/// The whole page. `run_dir` is where the case artifacts the page quotes live; output tails come
/// from the run's events.
pub fn render(report: &RunReport, run_dir: &Path, tails: &Tails) -> String {
    let s = &report.summary;
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Canary Lab run " (safe(&report.run_id)) " — " (report.status.as_str()) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    h1 { "Run " (safe(&report.run_id)) " " (status_badge(report.status.as_str())) }
                    div.meta {
                        (safe(&report.started_at)) " → " (safe(&report.finished_at)) " · "
                        (report.duration_ms) " ms · " (safe(&report.engine)) " · canary " (safe(&report.lab_version))
                        " · --jobs " (report.jobs)
                        @if let Some(p) = &report.partition { " · partition " (safe(p)) }
                    }
                }
                main {
                    div.cards id="summary" {
                        div.card { b { (s.total) } "cases" }
                        div.card { b { (s.passed) } "passed" }
                        div.card { b { (s.flaky) } "flaky" }
                        div.card { b { (s.failed) } "failed" }
                        div.card { b { (s.drift) } "drift" }
                        div.card { b { (s.timed_out) } "timed out" }
                        div.card { b { (s.error) } "errors" }
                    }
                    h2 { "Images" }
                    ul {
                        @for i in &report.images {
                            li { code { (safe(&i.reference)) } " " code { (safe(&i.id)) } }
                        }
                    }
                    h2 { "Matrix" }
                    table id="matrix" {
                        tr { th { "runtime" } th { "suite" } th { "repo" } th { "provider" } th { "status" } th { "first failure" } }
                        @for m in &report.matrix {
                            tr data-status=(m.status.as_str()) {
                                td { code { (safe(&m.runtime)) } }
                                td { (safe(&m.suite)) }
                                td { (safe(&m.repo)) }
                                td { @if let Some(p) = m.provider { (p.name()) } }
                                td { (status_badge(m.status.as_str())) }
                                td { @if let Some(c) = &m.cause { (safe(c)) } }
                            }
                        }
                    }
                    h2 { "Cases" }
                    @for case in &report.cases { (case_section(case, run_dir, tails)) }
                }
            }
        }
    };
    page.into_string()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn report() -> RunReport {
        crate::report::sample()
    }

    #[test]
    fn the_page_escapes_everything_and_shows_expected_vs_got() {
        let mut tails = Tails::default();
        tails.insert("cases/demo--python/1.stdout", b"Hello <i>there</i>\x1b[2J\n");
        let page = render(&report(), Path::new("/nonexistent"), &tails);
        assert!(page.contains("stdout (tail)"), "the tail from the events is shown");
        assert!(page.contains("Hello &lt;i&gt;there&lt;/i&gt;"));
        assert!(!page.contains("<script>"), "user text is escaped");
        assert!(page.contains("&lt;script&gt;"));
        assert!(!page.contains('\u{1b}'), "escape sequences are stripped");
        assert!(page.contains("&lt;b&gt;Hello&lt;/b&gt;"));
        assert!(page.contains("canary repro r/demo--python"));
        assert!(page.contains("data-status=\"failed\""));
        assert!(
            !page.contains("<link") && !page.contains("src=\"http"),
            "self-contained"
        );
    }
}
