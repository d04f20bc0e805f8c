//! One stream of events from the case runner to everything that shows or keeps a run: the
//! terminal progress, the JSON, JUnit and HTML files. The runner emits; it formats nothing
//! itself (as cargo-nextest's runner feeds its reporters).

use super::{CaseReport, RunReport};
use crate::error::Result;
use std::path::Path;

/// What happened in a run, in order per case.
#[derive(Debug)]
pub enum RunEvent<'a> {
    /// The run's cases are planned and its images ready.
    RunStarted {
        run_id: &'a str,
        cases: usize,
        images: &'a [String],
        image_ids: Vec<String>,
        jobs: usize,
        partition: Option<String>,
    },
    /// Something the operator should read (leftovers removed, a fallback taken).
    Note(String),
    /// A case's container is up and its steps begin.
    CaseStarted { id: &'a str, attempt: u32 },
    /// A case is done; `done` of `total` in this pass.
    CaseFinished {
        case: &'a CaseReport,
        done: usize,
        total: usize,
    },
    /// Cases that did not pass run again.
    Rerunning { cases: usize, attempt: u32 },
    /// Every case is done and the report model is complete.
    RunFinished { report: &'a RunReport, run_dir: &'a Path },
}

/// A consumer of the stream. Called from the case tasks as events happen, so implementations
/// keep their own state behind locks; an error at `RunFinished` fails the run.
pub trait Reporter: Send + Sync {
    fn on_event(&self, event: &RunEvent<'_>) -> Result<()>;
}

/// The run's reporters, called in order for every event.
#[derive(Clone, Default)]
pub struct Reporters(std::sync::Arc<Vec<Box<dyn Reporter>>>);

impl Reporters {
    pub fn new(list: Vec<Box<dyn Reporter>>) -> Reporters {
        Reporters(std::sync::Arc::new(list))
    }

    /// Sends `event` to every reporter; the first error is returned after all have seen it.
    pub fn emit(&self, event: RunEvent<'_>) -> Result<()> {
        let mut first = None;
        for r in self.0.iter() {
            if let Err(e) = r.on_event(&event) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

/// Progress lines on the terminal (bars are drawn by the pool while it runs).
pub struct Terminal(pub crate::progress::Progress);

impl Reporter for Terminal {
    fn on_event(&self, event: &RunEvent<'_>) -> Result<()> {
        match event {
            RunEvent::RunStarted {
                run_id,
                cases,
                images,
                image_ids,
                jobs,
                partition,
            } => self.0.line(format!(
                "run {run_id}: {cases} cases, image {} ({}), --jobs {jobs}{}",
                images.join(" "),
                image_ids
                    .iter()
                    .map(|i| crate::lab::short_id(i))
                    .collect::<Vec<_>>()
                    .join(" "),
                partition
                    .as_ref()
                    .map(|p| format!(", partition {p}"))
                    .unwrap_or_default()
            )),
            RunEvent::Note(text) => self.0.line(text),
            RunEvent::CaseStarted { .. } | RunEvent::RunFinished { .. } => {}
            RunEvent::CaseFinished { case, done, total } => self.0.line(format!(
                "[{done:>w$}/{total}] {:<9} {} ({:.1}s)",
                case.status.as_str().to_uppercase(),
                case.id,
                case.duration_ms as f64 / 1000.0,
                w = total.to_string().len()
            )),
            RunEvent::Rerunning { cases, attempt } => self.0.line(format!(
                "rerunning {cases} case(s) that did not pass (attempt {attempt})"
            )),
        }
        Ok(())
    }
}

/// The report files in the run folder: `run.json`, `junit.xml`, `report.html`.
pub struct Files;

impl Reporter for Files {
    fn on_event(&self, event: &RunEvent<'_>) -> Result<()> {
        if let RunEvent::RunFinished { report, run_dir } = event {
            let json = serde_json::to_string_pretty(report).expect("report serializes");
            crate::fsutil::write_atomic(&run_dir.join(super::JSON_FILE), json.as_bytes())?;
            crate::fsutil::write_atomic(
                &run_dir.join(super::JUNIT_FILE),
                super::junit::render(report, run_dir).as_bytes(),
            )?;
            crate::fsutil::write_atomic(
                &run_dir.join(super::html::HTML_FILE),
                super::html::render(report, run_dir).as_bytes(),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct Log(Mutex<Vec<String>>);

    impl Reporter for Log {
        fn on_event(&self, e: &RunEvent<'_>) -> Result<()> {
            let name = match e {
                RunEvent::RunStarted { .. } => "run_started",
                RunEvent::Note(_) => "note",
                RunEvent::CaseStarted { .. } => "case_started",
                RunEvent::CaseFinished { .. } => "case_finished",
                RunEvent::Rerunning { .. } => "rerunning",
                RunEvent::RunFinished { .. } => "run_finished",
            };
            self.0.lock().unwrap().push(name.into());
            Ok(())
        }
    }

    struct Failing;

    impl Reporter for Failing {
        fn on_event(&self, _: &RunEvent<'_>) -> Result<()> {
            Err(crate::error::LabError::usage("disk full", "free space"))
        }
    }

    #[test]
    fn every_reporter_sees_every_event_and_errors_are_returned() {
        let log = std::sync::Arc::new(Log(Mutex::new(Vec::new())));
        struct Shared(std::sync::Arc<Log>);
        impl Reporter for Shared {
            fn on_event(&self, e: &RunEvent<'_>) -> Result<()> {
                self.0.on_event(e)
            }
        }
        let reporters = Reporters::new(vec![Box::new(Failing), Box::new(Shared(log.clone()))]);
        assert!(
            reporters.emit(RunEvent::Note("x".into())).is_err(),
            "the failure is returned"
        );
        reporters
            .emit(RunEvent::CaseStarted { id: "a", attempt: 1 })
            .unwrap_err();
        assert_eq!(
            *log.0.lock().unwrap(),
            vec!["note", "case_started"],
            "and the others still ran"
        );
    }
}
