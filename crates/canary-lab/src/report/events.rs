//! One stream of events from the case runner to everything that shows or keeps a run: the
//! terminal progress, the JSON, JUnit and HTML files and the registry. The runner emits; it
//! formats and stores nothing itself (as cargo-nextest's runner feeds its reporters).

use super::{CaseReport, RunReport, StepReport};
use crate::error::Result;
use futures_util::future::BoxFuture;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

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
    /// A step ran and was checked; `stdout` and `stderr` are its whole captured output (the
    /// files named in `step` hold the same bytes).
    StepFinished {
        case_id: &'a str,
        attempt: u32,
        step: &'a StepReport,
        stdout: &'a [u8],
        stderr: &'a [u8],
    },
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
/// keep their own state behind locks; an error at `RunFinished` fails the run. Reporters that
/// store (the registry) are asynchronous; the others answer at once with [`done`].
pub trait Reporter: Send + Sync {
    fn on_event<'a>(&'a self, event: &'a RunEvent<'_>) -> BoxFuture<'a, Result<()>>;
}

/// The future of a reporter that did its work synchronously.
pub fn done<'a>(result: Result<()>) -> BoxFuture<'a, Result<()>> {
    Box::pin(std::future::ready(result))
}

/// The run's reporters, called in order for every event.
#[derive(Clone, Default)]
pub struct Reporters(std::sync::Arc<Vec<Box<dyn Reporter>>>);

impl Reporters {
    pub fn new(list: Vec<Box<dyn Reporter>>) -> Reporters {
        Reporters(std::sync::Arc::new(list))
    }

    /// Sends `event` to every reporter, in order; the first error is returned after all have
    /// seen it.
    pub async fn emit(&self, event: RunEvent<'_>) -> Result<()> {
        let mut first = None;
        for r in self.0.iter() {
            if let Err(e) = r.on_event(&event).await {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// For events in the middle of a run, whose failure must not stop the cases: a reporter
    /// that fails is reported on stderr (never dropped), and the run goes on. The run's last
    /// event, whose files are the run's record, is emitted with [`Reporters::emit`] and fails it.
    pub async fn emit_or_warn(&self, event: RunEvent<'_>) {
        if let Err(e) = self.emit(event).await {
            tracing::warn!("a run reporter failed: {e}");
        }
    }
}

/// Progress lines on the terminal (bars are drawn by the pool while it runs).
pub struct Terminal(pub crate::progress::Progress);

impl Reporter for Terminal {
    fn on_event<'a>(&'a self, event: &'a RunEvent<'_>) -> BoxFuture<'a, Result<()>> {
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
                    .map(|i| canary_contract::build::short_id(i))
                    .collect::<Vec<_>>()
                    .join(" "),
                partition
                    .as_ref()
                    .map(|p| format!(", partition {p}"))
                    .unwrap_or_default()
            )),
            RunEvent::Note(text) => self.0.line(text),
            RunEvent::CaseStarted { .. } | RunEvent::StepFinished { .. } | RunEvent::RunFinished { .. } => {}
            RunEvent::CaseFinished { case, done, total } => {
                self.0.line(format!(
                    "[{done:>w$}/{total}] {:<9} {} ({:.1}s){}",
                    case.status.as_str().to_uppercase(),
                    case.id,
                    case.duration_ms as f64 / 1000.0,
                    case.engine.as_deref().map(|e| format!(" on {e}")).unwrap_or_default(),
                    w = total.to_string().len()
                ));
                // A pass with steps the CLI could not take is said so, never silently.
                for (step, note) in case.steps.iter().filter_map(|s| s.note.as_ref().map(|n| (&s.name, n))) {
                    self.0.line(format!(
                        "          step `{}` {}",
                        canary_contract::text::clean(step),
                        canary_contract::text::clean(note)
                    ));
                }
            }
            RunEvent::Rerunning { cases, attempt } => self.0.line(format!(
                "rerunning {cases} case(s) that did not pass (attempt {attempt})"
            )),
        }
        done(Ok(()))
    }
}

/// The last bytes of a step's output that reports show, keyed by the output file's path
/// relative to the run folder. Filled from `StepFinished`, so no report re-reads the files.
#[derive(Default)]
pub struct Tails(HashMap<String, String>);

impl Tails {
    pub fn get(&self, file: Option<&String>) -> Option<&str> {
        file.and_then(|f| self.0.get(f)).map(String::as_str)
    }

    pub fn insert(&mut self, file: &str, bytes: &[u8]) {
        if let Some(t) = super::junit::tail_of(bytes, file) {
            self.0.insert(file.to_string(), t);
        }
    }
}

/// The run's journal: each finished case appended to `cases.jsonl` in the run folder as it
/// finishes (a rerun's line comes later and wins), so a run killed midway keeps its verdicts
/// and `canary run --resume RUN` runs only the rest. A failed write fails the event: a verdict
/// the journal lost would be run again, never invented.
pub struct Journal {
    path: std::path::PathBuf,
    file: Mutex<Option<std::fs::File>>,
}

/// The journal's file name in a run folder.
pub const JOURNAL_FILE: &str = "cases.jsonl";

impl Journal {
    pub fn new(run_dir: &Path) -> Journal {
        Journal {
            path: run_dir.join(JOURNAL_FILE),
            file: Mutex::new(None),
        }
    }

    fn append(&self, case: &CaseReport) -> Result<()> {
        use std::io::Write as _;
        let mut file = self.file.lock().expect("journal lock");
        if file.is_none() {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .map_err(|e| crate::error::LabError::write(&self.path, e))?;
            *file = Some(f);
        }
        let f = file.as_mut().expect("opened above");
        let line = serde_json::to_string(case).expect("case serializes") + "\n";
        f.write_all(line.as_bytes())
            .and_then(|()| f.sync_data())
            .map_err(|e| crate::error::LabError::write(&self.path, e))
    }

    /// The cases a journal holds, the last line of each case id winning; lines that do not
    /// parse (a write cut by the kill) are skipped. At most 256 MiB is read.
    pub fn read(run_dir: &Path) -> Result<Vec<CaseReport>> {
        let path = run_dir.join(JOURNAL_FILE);
        let text = match crate::fsutil::read_input(&path, "the run's journal", 256 << 20) {
            Ok(t) => t,
            Err(_) if !path.exists() => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out: Vec<CaseReport> = Vec::new();
        for case in text.lines().filter_map(|l| serde_json::from_str::<CaseReport>(l).ok()) {
            match out.iter_mut().find(|c| c.id == case.id) {
                Some(old) => *old = case,
                None => out.push(case),
            }
        }
        Ok(out)
    }
}

impl Reporter for Journal {
    fn on_event<'a>(&'a self, event: &'a RunEvent<'_>) -> BoxFuture<'a, Result<()>> {
        match event {
            RunEvent::CaseFinished { case, .. } => done(self.append(case)),
            _ => done(Ok(())),
        }
    }
}

/// The report files in the run folder: `run.json`, `junit.xml`, `report.html`.
#[derive(Default)]
pub struct Files {
    tails: Mutex<Tails>,
}

impl Files {
    fn write(&self, report: &RunReport, run_dir: &Path) -> Result<()> {
        let tails = self.tails.lock().expect("tails lock");
        let json = serde_json::to_string_pretty(report).expect("report serializes");
        crate::fsutil::write_atomic(&run_dir.join(super::JSON_FILE), json.as_bytes())?;
        crate::fsutil::write_atomic(
            &run_dir.join(super::JUNIT_FILE),
            super::junit::render(report, &tails).as_bytes(),
        )?;
        crate::fsutil::write_atomic(
            &run_dir.join(super::html::HTML_FILE),
            super::html::render(report, run_dir, &tails).as_bytes(),
        )
    }
}

impl Reporter for Files {
    fn on_event<'a>(&'a self, event: &'a RunEvent<'_>) -> BoxFuture<'a, Result<()>> {
        match event {
            RunEvent::StepFinished {
                step, stdout, stderr, ..
            } => {
                let mut tails = self.tails.lock().expect("tails lock");
                if let Some(f) = &step.stdout_file {
                    tails.insert(f, stdout);
                }
                if let Some(f) = &step.stderr_file {
                    tails.insert(f, stderr);
                }
                done(Ok(()))
            }
            RunEvent::RunFinished { report, run_dir } => done(self.write(report, run_dir)),
            _ => done(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[tokio::test]
    async fn the_journal_keeps_each_case_as_it_finishes_and_the_last_attempt_wins() {
        let dir = tempfile::tempdir().unwrap();
        let report = crate::report::sample();
        let journal = Journal::new(dir.path());
        let mut first = report.cases[0].clone();
        first.status = crate::report::CaseStatus::Failed;
        for case in [&first, &report.cases[0]] {
            let event = RunEvent::CaseFinished {
                case,
                done: 1,
                total: 1,
            };
            journal.on_event(&event).await.unwrap();
        }
        // A line the kill cut short is skipped, not an error.
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(JOURNAL_FILE))
            .unwrap();
        write!(f, "{{\"id\": \"half").unwrap();
        let read = Journal::read(dir.path()).unwrap();
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].status, report.cases[0].status, "the rerun's line wins");
        assert!(Journal::read(&dir.path().join("none")).unwrap().is_empty());
    }

    struct Log(Mutex<Vec<String>>);

    impl Reporter for Log {
        fn on_event<'a>(&'a self, e: &'a RunEvent<'_>) -> BoxFuture<'a, Result<()>> {
            let name = match e {
                RunEvent::RunStarted { .. } => "run_started",
                RunEvent::Note(_) => "note",
                RunEvent::CaseStarted { .. } => "case_started",
                RunEvent::StepFinished { .. } => "step_finished",
                RunEvent::CaseFinished { .. } => "case_finished",
                RunEvent::Rerunning { .. } => "rerunning",
                RunEvent::RunFinished { .. } => "run_finished",
            };
            self.0.lock().unwrap().push(name.into());
            done(Ok(()))
        }
    }

    struct Failing;

    impl Reporter for Failing {
        fn on_event<'a>(&'a self, _: &'a RunEvent<'_>) -> BoxFuture<'a, Result<()>> {
            done(Err(crate::error::LabError::usage("disk full", "free space")))
        }
    }

    #[tokio::test]
    async fn every_reporter_sees_every_event_and_errors_are_returned() {
        let log = std::sync::Arc::new(Log(Mutex::new(Vec::new())));
        struct Shared(std::sync::Arc<Log>);
        impl Reporter for Shared {
            fn on_event<'a>(&'a self, e: &'a RunEvent<'_>) -> BoxFuture<'a, Result<()>> {
                self.0.on_event(e)
            }
        }
        let reporters = Reporters::new(vec![Box::new(Failing), Box::new(Shared(log.clone()))]);
        assert!(
            reporters.emit(RunEvent::Note("x".into())).await.is_err(),
            "the failure is returned"
        );
        reporters
            .emit(RunEvent::CaseStarted { id: "a", attempt: 1 })
            .await
            .unwrap_err();
        assert_eq!(
            *log.0.lock().unwrap(),
            vec!["note", "case_started"],
            "and the others still ran"
        );
    }

    #[tokio::test]
    async fn junit_and_html_take_output_tails_from_the_events() {
        let dir = tempfile::tempdir().unwrap();
        let report = crate::report::sample();
        let reporters = Reporters::new(vec![Box::new(Files::default())]);
        let step = &report.cases[0].steps[0];
        // The output exists only in the event: no file under the run folder holds it.
        let mut stdout = vec![b'x'; 10_000];
        stdout.extend_from_slice(b"\nthe last line the CLI printed\n");
        reporters
            .emit(RunEvent::StepFinished {
                case_id: &report.cases[0].id,
                attempt: 1,
                step,
                stdout: &stdout,
                stderr: b"",
            })
            .await
            .unwrap();
        reporters
            .emit(RunEvent::RunFinished {
                report: &report,
                run_dir: dir.path(),
            })
            .await
            .unwrap();
        let junit = std::fs::read_to_string(dir.path().join(crate::report::JUNIT_FILE)).unwrap();
        assert!(junit.contains("the last line the CLI printed"), "{junit}");
        assert!(
            junit.contains("earlier bytes in cases/demo--python/1.stdout"),
            "a cut tail says where the rest is"
        );
        assert!(!junit.contains(&"x".repeat(5000)), "only the tail rides along");
        let html = std::fs::read_to_string(dir.path().join(crate::report::html::HTML_FILE)).unwrap();
        assert!(html.contains("the last line the CLI printed"));
        assert!(dir.path().join(crate::report::JSON_FILE).exists());
    }
}
