//! Post-update repo sweeps in the registry: the opted-in repos and the durable job queue. A
//! promotion to stable enqueues one job per repo and build (in the promotion's transaction, so
//! idempotent by the `(repo, build)` key); workers claim a job with a lease (a compare-and-set
//! update, so two workers never hold one job), and a job whose worker died is claimed again
//! when its lease runs out.

use super::queries::{Audit, insert_audit};
use super::{Registry, db_err, format_ts, int, now, opt_text};
use crate::error::{LabError, Result};
use crate::row::{Cell, Col, FromRow};
use canary_contract::BuildId;
use serde::Serialize;

/// A repo an org opted in to sweeps.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SweepRepo {
    /// `owner/name` on its forge.
    pub id: String,
    pub org: String,
    /// The git remote (https, http, ssh or git).
    pub url: String,
    pub branch: String,
    /// Base URL of the forge's REST API (GitHub's layout).
    pub api_url: String,
    /// The environment variable that holds the token (the token itself is never stored).
    pub token_env: Option<String>,
    /// `lint`, `test`, `ci` commands given when it was added; the repo's `canary-repo.yaml`
    /// fills in the others.
    pub commands: serde_json::Value,
    pub added_at: String,
}

/// One sweep job.
#[derive(Debug, Clone, Serialize)]
pub struct SweepJob {
    pub id: i64,
    pub repo_id: String,
    pub org: String,
    pub build_id: BuildId,
    pub state: JobState,
    /// What a `done` job came to.
    pub outcome: Option<SweepOutcome>,
    pub reason: Option<String>,
    pub attempts: i64,
    pub worker: Option<String>,
    pub lease_until: Option<String>,
    pub next_at: String,
    pub detail: serde_json::Value,
    pub pr_number: Option<i64>,
    pub pr_url: Option<String>,
    pub pr_state: Option<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

/// Where a sweep job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Done,
    /// Out of tries.
    Dead,
}

/// What a finished sweep job came to, as the registry keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SweepOutcome {
    /// A draft pull request is open for the change.
    PrOpened,
    NothingToPropose,
    /// The change touched what the org's policy protects; nothing was pushed.
    Dropped,
    /// Not started: the repo left sweeps or the org's quota refused it.
    Skipped,
}

canary_contract::words!(JobState, "a sweep job state", { Queued => "queued", Running => "running", Done => "done", Dead => "dead" });
canary_contract::words!(SweepOutcome, "a sweep outcome", {
    PrOpened => "pr_opened",
    NothingToPropose => "nothing_to_propose",
    Dropped => "dropped",
    Skipped => "skipped",
});

/// What an org's quota is judged on, for one claimed job.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QuotaCounts {
    /// Jobs of the same org and build queued or started before this one and not skipped.
    pub earlier_in_sweep: i64,
    /// Other builds this org had sweep jobs started for in the last day.
    pub other_sweeps_today: i64,
    /// Sweep PRs of this repo still open.
    pub open_prs: i64,
}

impl FromRow for SweepJob {
    fn from_row(r: &sqlx::any::AnyRow) -> Cell<Self> {
        Ok(SweepJob {
            id: r.int("id")?,
            repo_id: r.text("repo_id")?,
            org: r.text("org")?,
            build_id: r.parsed("build_id")?,
            state: r.parsed("state")?,
            outcome: r.opt_parsed("outcome")?,
            reason: r.opt_text("reason")?,
            attempts: r.int("attempts")?,
            worker: r.opt_text("worker")?,
            lease_until: r.opt_text("lease_until")?,
            next_at: r.text("next_at")?,
            detail: r.opt_json("detail")?.unwrap_or(serde_json::Value::Null),
            pr_number: r.opt_int("pr_number")?,
            pr_url: r.opt_text("pr_url")?,
            pr_state: r.opt_text("pr_state")?,
            created_at: r.text("created_at")?,
            started_at: r.opt_text("started_at")?,
            finished_at: r.opt_text("finished_at")?,
        })
    }
}

const JOB_COLUMNS: &str = "id, repo_id, org, build_id, state, outcome, reason, attempts, worker, lease_until, next_at, detail, pr_number, pr_url, pr_state, created_at, started_at, finished_at";

/// Enqueues one job per opted-in repo for `build`, inside a promotion's transaction. A job that
/// exists for the repo and build is left as it is.
pub(super) async fn enqueue_sweeps(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    build: &str,
    ts: &str,
    display: &str,
) -> Result<u64> {
    // `WHERE 1 = 1` keeps SQLite from reading ON CONFLICT as part of the SELECT.
    Ok(sqlx::query(
        "INSERT INTO sweep_jobs (repo_id, org, build_id, state, attempts, next_at, created_at) \
         SELECT id, org, $1, 'queued', 0, $2, $2 FROM sweep_repos WHERE 1 = 1 ORDER BY id \
         ON CONFLICT (repo_id, build_id) DO NOTHING",
    )
    .bind(build)
    .bind(ts)
    .execute(&mut **tx)
    .await
    .map_err(db_err(display))?
    .rows_affected())
}

impl Registry {
    pub async fn add_sweep_repo(&self, r: &SweepRepo, a: Audit<'_>) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let added = sqlx::query(
            "INSERT INTO sweep_repos (id, org, url, branch, api_url, token_env, commands, added_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&r.id)
        .bind(&r.org)
        .bind(&r.url)
        .bind(&r.branch)
        .bind(&r.api_url)
        .bind(r.token_env.as_deref())
        .bind(r.commands.to_string())
        .bind(&r.added_at)
        .execute(&mut *tx)
        .await
        .map_err(db_err(&self.display))?
        .rows_affected();
        if added == 0 {
            return Err(LabError::usage(
                format!("repo {} is opted in already", r.id),
                "`canary sweeps repos remove ID` first to change it",
            ));
        }
        insert_audit(&mut tx, &a, &self.display).await?;
        tx.commit().await.map_err(db_err(&self.display))
    }

    pub async fn sweep_repos(&self) -> Result<Vec<SweepRepo>> {
        self.all(sqlx::query(
            "SELECT id, org, url, branch, api_url, token_env, commands, added_at FROM sweep_repos ORDER BY org, id",
        ))
        .await
    }

    /// Removes a repo from sweeps; its queued jobs go with it (finished ones stay, for KPIs).
    pub async fn remove_sweep_repo(&self, id: &str, a: Audit<'_>) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let n = sqlx::query("DELETE FROM sweep_repos WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db_err(&self.display))?
            .rows_affected();
        sqlx::query("DELETE FROM sweep_jobs WHERE repo_id = $1 AND state = 'queued'")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db_err(&self.display))?;
        if n > 0 {
            insert_audit(&mut tx, &a, &self.display).await?;
        }
        tx.commit().await.map_err(db_err(&self.display))?;
        Ok(n > 0)
    }

    /// Enqueues sweeps for `build` outside a promotion (a promotion does it itself).
    pub async fn enqueue_sweeps(&self, build: &BuildId) -> Result<u64> {
        let mut tx = self.write_tx().await?;
        let n = enqueue_sweeps(&mut tx, build, &now(), &self.display).await?;
        tx.commit().await.map_err(db_err(&self.display))?;
        Ok(n)
    }

    /// Claims the oldest job that is due (queued and past its retry time, or running with an
    /// expired lease) for `worker` until `now + lease`. A job claimed more than `max_attempts`
    /// times ends dead instead, with the reason.
    pub async fn claim_sweep(
        &self,
        worker: &str,
        lease: std::time::Duration,
        max_attempts: i64,
        at: jiff::Timestamp,
    ) -> Result<Option<SweepJob>> {
        let ts = format_ts(at);
        let until =
            format_ts(at + jiff::SignedDuration::try_from(lease).unwrap_or(jiff::SignedDuration::from_secs(600)));
        loop {
            let _w = self.queue_writer().await;
            let mut tx = self.write_tx().await?;
            let due = "((state = 'queued' AND next_at <= $1) OR (state = 'running' AND lease_until < $1))";
            let Some(row) = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT id, attempts, reason FROM sweep_jobs WHERE {due} ORDER BY id LIMIT 1"
            )))
            .bind(&ts)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err(&self.display))?
            else {
                return Ok(None);
            };
            let id = int(&row, "id")?;
            if int(&row, "attempts")? >= max_attempts {
                let reason = opt_text(&row, "reason")?.unwrap_or_else(|| "its worker was lost".into());
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "UPDATE sweep_jobs SET state = 'dead', finished_at = $1, reason = $2, worker = NULL, lease_until = NULL WHERE id = $3 AND {due}"
                )))
                .bind(&ts)
                .bind(format!("gave up after {max_attempts} attempts: {reason}"))
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(db_err(&self.display))?;
                tx.commit().await.map_err(db_err(&self.display))?;
                continue;
            }
            let took = sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE sweep_jobs SET state = 'running', worker = $2, lease_until = $3, attempts = attempts + 1, \
                 started_at = COALESCE(started_at, $1) WHERE id = $4 AND {due}"
            )))
            .bind(&ts)
            .bind(worker)
            .bind(&until)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db_err(&self.display))?
            .rows_affected();
            tx.commit().await.map_err(db_err(&self.display))?;
            if took == 1 {
                return self.sweep_job(id).await;
            }
        }
    }

    /// Jobs not ended yet (queued, or running under a lease).
    pub async fn sweeps_pending(&self) -> Result<i64> {
        let r = self
            .row(sqlx::query(
                "SELECT COUNT(*) AS n FROM sweep_jobs WHERE state IN ('queued', 'running')",
            ))
            .await?;
        int(&r, "n")
    }

    pub async fn sweep_job(&self, id: i64) -> Result<Option<SweepJob>> {
        let row = self
            .maybe_row(
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {JOB_COLUMNS} FROM sweep_jobs WHERE id = $1"
                )))
                .bind(id),
            )
            .await?;
        row.as_ref().map(|r| self.read_one(r)).transpose()
    }

    /// Newest first.
    pub async fn sweep_jobs(&self, limit: i64) -> Result<Vec<SweepJob>> {
        self.all(
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {JOB_COLUMNS} FROM sweep_jobs ORDER BY id DESC LIMIT $1"
            )))
            .bind(limit),
        )
        .await
    }

    /// What `job`'s org quota is judged on (see [`QuotaCounts`]).
    pub async fn sweep_quota_counts(&self, j: &SweepJob, since: &str) -> Result<QuotaCounts> {
        let earlier = self
            .row(
                sqlx::query(
                    "SELECT COUNT(*) AS n FROM sweep_jobs WHERE org = $1 AND build_id = $2 AND id < $3 \
             AND state <> 'dead' AND (outcome IS NULL OR outcome <> 'skipped')",
                )
                .bind(&j.org)
                .bind(j.build_id.as_str())
                .bind(j.id),
            )
            .await?;
        let today = self
            .row(
                sqlx::query(
                    "SELECT COUNT(DISTINCT build_id) AS n FROM sweep_jobs WHERE org = $1 AND build_id <> $2 \
             AND started_at >= $3 AND (outcome IS NULL OR outcome <> 'skipped')",
                )
                .bind(&j.org)
                .bind(j.build_id.as_str())
                .bind(since),
            )
            .await?;
        let open = self
            .row(
                sqlx::query(
                    "SELECT COUNT(*) AS n FROM sweep_jobs WHERE repo_id = $1 AND pr_number IS NOT NULL AND id <> $2 \
             AND (pr_state IS NULL OR pr_state = 'open')",
                )
                .bind(&j.repo_id)
                .bind(j.id),
            )
            .await?;
        Ok(QuotaCounts {
            earlier_in_sweep: int(&earlier, "n")?,
            other_sweeps_today: int(&today, "n")?,
            open_prs: int(&open, "n")?,
        })
    }

    /// Ends a job `worker` holds: `done` with its outcome. `false`: the worker lost the job (its
    /// lease ran out and another took it), and nothing was written.
    pub async fn finish_sweep(
        &self,
        id: i64,
        worker: &str,
        outcome: SweepOutcome,
        reason: &str,
        detail: &serde_json::Value,
        pr: Option<(i64, &str)>,
    ) -> Result<bool> {
        let _w = self.queue_writer().await;
        self.exec_one(sqlx::query(
            "UPDATE sweep_jobs SET state = 'done', outcome = $1, reason = $2, detail = $3, pr_number = $4, pr_url = $5, \
             pr_state = CASE WHEN $4 IS NULL THEN NULL ELSE 'open' END, finished_at = $6, lease_until = NULL \
             WHERE id = $7 AND worker = $8 AND state = 'running'",
        )
        .bind(outcome.as_str())
        .bind(reason)
        .bind(detail.to_string())
        .bind(pr.map(|p| p.0))
        .bind(pr.map(|p| p.1))
        .bind(now())
        .bind(id)
        .bind(worker)).await
    }

    /// A try of a job `worker` holds failed: queued again at `next_at`, or dead with the reason
    /// once it has had `max_attempts`.
    pub async fn retry_sweep(
        &self,
        id: i64,
        worker: &str,
        reason: &str,
        next_at: jiff::Timestamp,
        max_attempts: i64,
    ) -> Result<bool> {
        let _w = self.queue_writer().await;
        self.exec_one(
            sqlx::query(
                "UPDATE sweep_jobs SET state = CASE WHEN attempts >= $1 THEN 'dead' ELSE 'queued' END, \
             reason = $2, next_at = $3, worker = NULL, lease_until = NULL, \
             finished_at = CASE WHEN attempts >= $1 THEN $4 ELSE NULL END \
             WHERE id = $5 AND worker = $6 AND state = 'running'",
            )
            .bind(max_attempts)
            .bind(reason)
            .bind(format_ts(next_at))
            .bind(now())
            .bind(id)
            .bind(worker),
        )
        .await
    }

    /// Gives back a job `worker` holds without counting its try: the engine it ran on went
    /// away, which says nothing of the repo or the build. It is due again at once, for a worker
    /// on another engine. `false`: the worker no longer held it.
    pub async fn release_sweep(&self, id: i64, worker: &str, reason: &str) -> Result<bool> {
        let _w = self.queue_writer().await;
        self.exec_one(
            sqlx::query(
                "UPDATE sweep_jobs SET state = 'queued', attempts = attempts - 1, reason = $1, next_at = $2, \
                     worker = NULL, lease_until = NULL WHERE id = $3 AND worker = $4 AND state = 'running'",
            )
            .bind(reason)
            .bind(now())
            .bind(id)
            .bind(worker),
        )
        .await
    }

    /// Records a sweep PR's state as its forge reports it (`open`, `closed`, `merged`).
    pub async fn set_sweep_pr_state(&self, id: i64, state: &str) -> Result<()> {
        let _w = self.queue_writer().await;
        self.exec(
            sqlx::query("UPDATE sweep_jobs SET pr_state = $1 WHERE id = $2")
                .bind(state)
                .bind(id),
        )
        .await?;
        Ok(())
    }
}

from_row!(SweepRepo {
    id: text,
    org: text,
    url: text,
    branch: text,
    api_url: text,
    token_env: opt_text,
    commands: json,
    added_at: text,
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_states_and_outcomes_read_back_what_they_write_and_nothing_else() {
        use JobState as J;
        use SweepOutcome as O;
        for s in [J::Queued, J::Running, J::Done, J::Dead] {
            assert_eq!(s.as_str().parse::<JobState>(), Ok(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for o in [O::PrOpened, O::NothingToPropose, O::Dropped, O::Skipped] {
            assert_eq!(o.as_str().parse::<SweepOutcome>(), Ok(o));
            assert_eq!(serde_json::to_value(o).unwrap(), o.as_str());
        }
        let e = "opened\u{1b}[2J".parse::<SweepOutcome>().unwrap_err();
        assert!(
            e.contains("is not a sweep outcome (pr_opened, ") && !e.contains('\u{1b}'),
            "{e}"
        );
        assert!("Dead".parse::<JobState>().is_err(), "spellings are exact");
    }
}
