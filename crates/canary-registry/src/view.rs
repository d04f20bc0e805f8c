//! The registry's listings as terminal lines (`canary registry ...`), one function per row type.
//! Every stored string is cleaned of control characters before it is shown: runner ids, actors
//! and reasons come from outside.

use crate::{AuditRow, BuildRow, Release, ResultRow, VersionRow};
use canary_contract::build::short_id as short;
use canary_contract::text::clean;

pub fn builds(rows: &[BuildRow]) -> Vec<String> {
    let mut out = vec![format!(
        "{:<14} {:<34} {:<12} {:>7} {:>7}  RUNTIMES",
        "BUILD", "IMAGE", "RUNNER", "RESULTS", "PASSING"
    )];
    out.extend(rows.iter().map(|b| {
        format!(
            "{:<14} {:<34} {:<12} {:>7} {:>7}  {}",
            short(&b.id),
            clean(&b.image_ref),
            clean(&b.runner_version),
            b.results,
            b.passing,
            b.runtime_versions
        )
    }));
    out
}

pub fn results(rows: &[ResultRow]) -> Vec<String> {
    let mut out = vec![format!(
        "{:<14} {:<22} {:<28} {:<11} {:>8}  RECORDED",
        "BUILD", "RUN", "CASE", "STATUS", "TIME"
    )];
    out.extend(rows.iter().map(|r| {
        format!(
            "{:<14} {:<22} {:<28} {:<11} {:>7.1}s  {}",
            short(&r.build_id),
            clean(&r.run_id),
            clean(&r.case_id),
            r.status.as_str(),
            r.duration_ms as f64 / 1000.0,
            r.recorded_at
        )
    }));
    out
}

pub fn versions(rows: &[VersionRow]) -> Vec<String> {
    rows.iter()
        .map(|v| {
            format!(
                "{:<14} {:<14} {:<7} {:<24} {}",
                v.provider,
                clean(&v.version),
                v.channel,
                v.released_at.as_deref().unwrap_or("-"),
                clean(&v.source)
            )
        })
        .collect()
}

pub fn known_good(rows: &[Release]) -> Vec<String> {
    rows.iter()
        .map(|r| {
            format!(
                "{:<8} {:<14} {:<34} {:<9} {} by {}",
                r.channel,
                short(&r.build_id),
                clean(&r.image_ref),
                r.kind,
                r.released_at,
                clean(&r.actor)
            )
        })
        .collect()
}

/// One cell of the compatibility matrix: a runtime of a build, a suite on a repo, its status.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MatrixCell {
    pub runtime: String,
    pub build: canary_contract::BuildId,
    pub suite: String,
    pub repo: String,
    pub status: crate::ResultStatus,
    pub recorded_at: String,
}

impl crate::Registry {
    /// Each build's latest cells, once per runtime the build holds (`runner@V` when it
    /// records none).
    pub async fn matrix_cells(&self) -> crate::Result<Vec<MatrixCell>> {
        let mut rows = Vec::new();
        for b in self.builds().await? {
            let runtimes: Vec<String> = match b.runtime_versions.as_object() {
                Some(m) if !m.is_empty() => m
                    .iter()
                    .map(|(k, v)| format!("{k}@{}", v.as_str().unwrap_or_default()))
                    .collect(),
                _ => vec![format!("runner@{}", b.runner_version)],
            };
            for cell in self.latest_cells(&b.id).await? {
                for rt in &runtimes {
                    rows.push(MatrixCell {
                        runtime: rt.clone(),
                        build: b.id.clone(),
                        suite: cell.suite.clone(),
                        repo: cell.repo.clone(),
                        status: cell.status,
                        recorded_at: cell.recorded_at.clone(),
                    });
                }
            }
        }
        Ok(rows)
    }
}

pub fn matrix(rows: &[MatrixCell]) -> Vec<String> {
    let mut out = vec![format!(
        "{:<28} {:<14} {:<16} {:<12} STATUS",
        "RUNTIME", "BUILD", "SUITE", "REPO"
    )];
    out.extend(rows.iter().map(|r| {
        format!(
            "{:<28} {:<14} {:<16} {:<12} {}",
            clean(&r.runtime),
            short(&r.build),
            clean(&r.suite),
            clean(&r.repo),
            r.status.as_str()
        )
    }));
    out
}

pub fn audit(rows: &[AuditRow]) -> Vec<String> {
    rows.iter()
        .map(|a| {
            format!(
                "#{:<5} {} {:<10} {:<9} {:<9} {}  {}",
                a.id,
                a.ts,
                clean(&a.actor),
                a.action,
                a.decision,
                clean(&a.target),
                clean(&a.reason)
            )
        })
        .collect()
}
