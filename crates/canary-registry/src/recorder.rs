//! The registry as a consumer of the lab's run events: a finished run's verdicts are recorded
//! once the files reporter has written the `run.json` they point at.

use crate::error::Result;
use crate::report::events::{Reporter, RunEvent, done};
use futures_util::future::BoxFuture;

/// Records a finished run's results in the known-good registry (after [`Files`] wrote the
/// `run.json` the results point at). How many results were added is kept for the caller.
pub struct Recorder {
    registry: super::Registry,
    added: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Recorder {
    /// The recorder and a handle to read how many results it added.
    pub fn new(registry: super::Registry) -> (Recorder, std::sync::Arc<std::sync::atomic::AtomicU64>) {
        let added = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        (
            Recorder {
                registry,
                added: added.clone(),
            },
            added,
        )
    }
}

impl Reporter for Recorder {
    fn on_event<'a>(&'a self, event: &'a RunEvent<'_>) -> BoxFuture<'a, Result<()>> {
        match event {
            RunEvent::RunFinished { report, run_dir } => Box::pin(async move {
                let path = run_dir.join(crate::report::JSON_FILE).display().to_string();
                let n = self.registry.record_run(report, &path).await?;
                self.added.store(n as u64, std::sync::atomic::Ordering::SeqCst);
                Ok(())
            }),
            _ => done(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::events::{Files, Reporters};

    #[tokio::test]
    async fn the_recorder_stores_each_case_of_a_finished_run_after_the_files_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let report = crate::report::sample();
        let registry = crate::Registry::open(&format!("sqlite://{}", dir.path().join("r.db").display()))
            .await
            .unwrap();
        let (recorder, added) = Recorder::new(registry.clone());
        let reporters = Reporters::new(vec![Box::new(Files::default()), Box::new(recorder)]);
        reporters
            .emit(RunEvent::RunFinished {
                report: &report,
                run_dir: dir.path(),
            })
            .await
            .unwrap();
        assert!(dir.path().join(crate::report::JSON_FILE).exists());
        assert_eq!(added.load(std::sync::atomic::Ordering::SeqCst), 1);
        let rows = registry.results(None, 10).await.unwrap();
        assert_eq!(rows.len(), 1, "the recorder stored the case");
        assert_eq!(rows[0].case_id, "demo--python");
        assert!(rows[0].report_path.ends_with("run.json"));
    }

    #[tokio::test]
    async fn a_report_that_does_not_say_which_build_each_case_ran_in_is_refused_and_nothing_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let registry = crate::Registry::open(&format!("sqlite://{}", dir.path().join("r.db").display()))
            .await
            .unwrap();
        let mut not_a_digest = crate::report::sample();
        not_a_digest.image.id = "../not-a-digest".into();
        let mut unlisted = crate::report::sample();
        unlisted.cases[0].image = "canary-lab/build:other".into();
        for (report, says) in [
            (not_a_digest, "is not a build id"),
            (
                unlisted,
                "ran in image canary-lab/build:other, which the report does not list",
            ),
        ] {
            let e = registry.record_run(&report, "run.json").await.unwrap_err();
            assert!(e.to_string().contains(says), "{e}");
            assert!(registry.builds().await.unwrap().is_empty(), "no build was recorded");
            assert!(
                registry.results(None, 10).await.unwrap().is_empty(),
                "no result was recorded"
            );
        }
    }
}
