//! Writing a run's verdicts: the build it judged, then each case in its own transaction, so a
//! crash mid-record leaves whole cases or none.

use super::{Registry, db_err, now};
use crate::error::{LabError, Result};
use crate::report::{CaseStatus, RunReport};
use canary_contract::BuildId;
use serde::Serialize;
use std::collections::BTreeMap;

/// Image labels a runner image carries to describe itself (kept with the builds that set them).
pub use crate::builds::labels;

/// A runner build as the registry knows it: identified by its image digest.
#[derive(Debug, Clone, Serialize)]
pub struct BuildInfo {
    pub id: BuildId,
    pub image_ref: String,
    pub runner_version: String,
    pub adapters: Vec<String>,
    pub runtime_versions: BTreeMap<String, String>,
    /// The build's components, when the image is a runner build.
    pub manifest: Option<crate::builds::BuildManifest>,
}

impl BuildInfo {
    /// From an image's id, the name it was run by, and its labels.
    pub fn from_image(id: &BuildId, reference: &str, image_labels: &BTreeMap<String, String>) -> BuildInfo {
        let list = |key: &str| -> Vec<String> {
            image_labels
                .get(key)
                .map(|s| {
                    s.split(',')
                        .map(|p| p.trim().to_string())
                        .filter(|p| !p.is_empty())
                        .collect()
                })
                .unwrap_or_default()
        };
        BuildInfo {
            id: id.clone(),
            image_ref: reference.to_string(),
            runner_version: image_labels
                .get(labels::RUNNER_VERSION)
                .cloned()
                .unwrap_or_else(|| "unversioned".into()),
            adapters: list(labels::ADAPTERS),
            runtime_versions: list(labels::RUNTIMES)
                .into_iter()
                .filter_map(|p| p.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
                .collect(),
            manifest: crate::builds::BuildManifest::from_labels(image_labels),
        }
    }
}

/// A recorded result's status: one type for the registry's column, its queries and the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResultStatus {
    Pass,
    /// Failed, then passed when rerun.
    Flaky,
    Fail,
    /// Failed because the CLI's output or flags changed (see [`crate::runner::inventory`]).
    Drift,
    TimedOut,
    /// The lab could not run the case: says nothing about the build, never a pass.
    InfraError,
}

impl ResultStatus {
    /// The registry's word (the `compat_results.status` column allows exactly these).
    pub fn as_str(self) -> &'static str {
        match self {
            ResultStatus::Pass => "pass",
            ResultStatus::Flaky => "flaky",
            ResultStatus::Fail => "fail",
            ResultStatus::Drift => "drift",
            ResultStatus::TimedOut => "timed_out",
            ResultStatus::InfraError => "infra_error",
        }
    }

    /// A stored word; anything unknown reads as an infra error, which never counts as a pass.
    pub fn from_word(word: &str) -> ResultStatus {
        match word {
            "pass" => ResultStatus::Pass,
            "flaky" => ResultStatus::Flaky,
            "fail" => ResultStatus::Fail,
            "drift" => ResultStatus::Drift,
            "timed_out" => ResultStatus::TimedOut,
            _ => ResultStatus::InfraError,
        }
    }
}

impl From<CaseStatus> for ResultStatus {
    fn from(s: CaseStatus) -> Self {
        match s {
            CaseStatus::Passed => ResultStatus::Pass,
            CaseStatus::Failed => ResultStatus::Fail,
            CaseStatus::Drift => ResultStatus::Drift,
            CaseStatus::Flaky => ResultStatus::Flaky,
            CaseStatus::TimedOut => ResultStatus::TimedOut,
            CaseStatus::Error => ResultStatus::InfraError,
        }
    }
}

impl std::fmt::Display for ResultStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Registry {
    /// Bulk-loads results in one transaction (benchmarks and imports; `canary run` records
    /// through [`Registry::record_run`], one transaction per case).
    #[doc(hidden)]
    pub async fn seed_results(&self, build: &BuildInfo, rows: &[(String, String, String, &str)]) -> Result<()> {
        self.record_build(build).await?;
        let mut tx = self.write_tx().await?;
        for (run_id, suite, repo, status) in rows {
            sqlx::query(
                "INSERT INTO compat_results (build_id, run_id, suite, repo, case_id, status, attempts, duration_ms, session_start_ms, metrics, report_path, recorded_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, 1, 1000, NULL, '{}', '', $7)",
            )
            .bind(build.id.as_str())
            .bind(run_id)
            .bind(suite)
            .bind(repo)
            .bind(format!("{suite}--{repo}"))
            .bind(*status)
            .bind(now())
            .execute(&mut *tx)
            .await
            .map_err(db_err(&self.display))?;
        }
        tx.commit().await.map_err(db_err(&self.display))
    }

    pub async fn record_build(&self, b: &BuildInfo) -> Result<()> {
        self.exec(sqlx::query(
            "INSERT INTO runner_builds (id, image_ref, runner_version, adapters, runtime_versions, created_at, manifest) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING",
        )
        .bind(b.id.as_str())
        .bind(&b.image_ref)
        .bind(&b.runner_version)
        .bind(serde_json::to_string(&b.adapters).expect("json"))
        .bind(serde_json::to_string(&b.runtime_versions).expect("json"))
        .bind(now())
        .bind(b.manifest.as_ref().map(|m| serde_json::to_string(m).expect("json")))).await?;
        Ok(())
    }

    /// Records every case of `report` against the build (image) it ran in; returns how many
    /// were new. Recording the same run twice changes nothing.
    pub async fn record_run(&self, report: &RunReport, report_path: &str) -> Result<usize> {
        let images = if report.images.is_empty() {
            std::slice::from_ref(&report.image)
        } else {
            &report.images[..]
        };
        let builds = images
            .iter()
            .map(|i| {
                let id = i.id.parse::<BuildId>().map_err(|e| {
                    LabError::usage(
                        format!("the report's image {}: {e}", crate::text::clean(&i.reference)),
                        "a run report names each image by its content id (`sha256:` and hex); record a report the lab wrote",
                    )
                })?;
                Ok((i.reference.clone(), BuildInfo::from_image(&id, &i.reference, &i.labels)))
            })
            .collect::<Result<Vec<(String, BuildInfo)>>>()?;
        // Each case's result counts for the build it ran in, and only that one: a case naming an
        // image the run did not list is refused before anything is written.
        let cases = report
            .cases
            .iter()
            .map(|case| match builds.iter().find(|(r, _)| *r == case.image) {
                Some((_, b)) => Ok((case, b)),
                None if case.image.is_empty() && builds.len() == 1 => Ok((case, &builds[0].1)),
                None => Err(LabError::usage(
                    format!(
                        "case {} ran in image {}, which the report does not list",
                        crate::text::clean(&case.id),
                        crate::text::clean(&case.image)
                    ),
                    "record a report the lab wrote",
                )),
            })
            .collect::<Result<Vec<_>>>()?;
        for (_, b) in &builds {
            self.record_build(b).await?;
        }
        let mut added = 0;
        for (case, build) in cases {
            let metrics = serde_json::json!({ "timings": case.timings, "steps": case.steps.len() });
            let mut tx = self.write_tx().await?;
            let r = sqlx::query(
                "INSERT INTO compat_results (build_id, run_id, suite, repo, case_id, status, attempts, duration_ms, session_start_ms, metrics, report_path, recorded_at, provider) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) ON CONFLICT (run_id, case_id) DO NOTHING",
            )
            .bind(build.id.as_str())
            .bind(&report.run_id)
            .bind(&case.suite)
            .bind(&case.repo)
            .bind(&case.id)
            .bind(ResultStatus::from(case.status).as_str())
            .bind(case.attempts as i64)
            .bind(case.duration_ms as i64)
            .bind(None::<i64>)
            .bind(metrics.to_string())
            .bind(report_path)
            .bind(now())
            .bind(case.provider.map_or("", canary_contract::Provider::name))
            .execute(&mut *tx)
            .await
            .map_err(db_err(&self.display))?;
            tx.commit().await.map_err(db_err(&self.display))?;
            added += r.rows_affected() as usize;
        }
        // What the builds' CLIs printed, for `canary drift`.
        self.record_inventories(report).await?;
        Ok(added)
    }
}
