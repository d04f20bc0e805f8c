//! The fleet's side of the registry: session telemetry and its rollups, rollouts and their
//! transitions, runner tokens and org freezes.

use super::queries::{Audit, insert_audit};
use super::{Registry, db_err, format_ts, int, now, text};
use crate::error::{LabError, Result};
use crate::rollout::{ActiveRollout, EventKind, Figures, FleetState, State};
use crate::row::{Cell, Col, FromRow};
use crate::telemetry::{Session, SessionUsage, Sums};
use canary_contract::oci::PushedRef;
use canary_contract::{BuildId, Channel};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// Sessions per INSERT statement (15 parameters each: well under both databases' limits).
const CHUNK: usize = 400;

/// The second a session arrived in, as rollups key it.
pub fn rollup_second(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S").to_string()
}

#[derive(Debug, Clone, Serialize)]
pub struct RolloutRow {
    pub id: i64,
    pub channel: Channel,
    pub build_id: BuildId,
    pub baseline_id: BuildId,
    pub steps: Vec<f64>,
    pub step: usize,
    pub state: State,
    pub bake_ms: i64,
    pub min_sessions: i64,
    pub started_at: String,
    pub step_started_at: String,
    pub updated_at: String,
    pub revision: i64,
    pub note: String,
    pub actor: String,
    pub cohort_key: crate::rollout::CohortKey,
    /// The ring in progress, of `rings` (and everyone else after them).
    pub ring: usize,
    pub rings: Vec<crate::rollout::Ring>,
}

impl RolloutRow {
    pub fn percent(&self) -> f64 {
        self.steps.get(self.step).copied().unwrap_or(100.0)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RolloutEvent {
    pub id: i64,
    pub kind: EventKind,
    pub step: Option<i64>,
    pub from_build: Option<BuildId>,
    pub to_build: BuildId,
    pub ts: String,
    pub actor: String,
    pub figures: serde_json::Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct Freeze {
    pub org: String,
    pub since: String,
    pub actor: String,
    pub reason: String,
}

/// A transition of a rollout: from the revision the controller read to a new state and step.
pub struct Transition<'a> {
    pub id: i64,
    pub revision: i64,
    pub state: State,
    pub step: usize,
    /// The ring the rollout is in after the transition.
    pub ring: usize,
    /// A new step starts its bake now.
    pub restart_step: bool,
    pub note: &'a str,
    pub kind: EventKind,
    pub figures: serde_json::Value,
    /// Make the candidate the channel's build (completion).
    pub release: bool,
    pub audit: Audit<'a>,
}

const ROLLOUT_COLS: &str = "id, channel, build_id, baseline_id, steps, step, state, bake_ms, min_sessions, started_at, step_started_at, updated_at, revision, note, actor, cohort_key, ring, rings";

impl FromRow for RolloutRow {
    fn from_row(r: &sqlx::any::AnyRow) -> Cell<Self> {
        Ok(RolloutRow {
            id: r.int("id")?,
            channel: r.parsed("channel")?,
            build_id: r.parsed("build_id")?,
            baseline_id: r.parsed("baseline_id")?,
            steps: r.json("steps")?,
            step: r.int("step")?.max(0) as usize,
            state: State::from_word(&r.text("state")?),
            bake_ms: r.int("bake_ms")?,
            min_sessions: r.int("min_sessions")?,
            started_at: r.text("started_at")?,
            step_started_at: r.text("step_started_at")?,
            updated_at: r.text("updated_at")?,
            revision: r.int("revision")?,
            note: r.text("note")?,
            actor: r.text("actor")?,
            cohort_key: r.parsed("cohort_key")?,
            ring: r.int("ring")?.max(0) as usize,
            rings: r.json("rings")?,
        })
    }
}

impl Registry {
    /// The ids among `builds` the registry knows.
    pub async fn known_builds(&self, builds: &BTreeSet<&str>) -> Result<BTreeSet<String>> {
        let mut out = BTreeSet::new();
        for b in builds {
            let row = self
                .maybe_row(sqlx::query("SELECT id FROM runner_builds WHERE id = $1").bind(*b))
                .await?;
            if let Some(r) = row {
                out.insert(text(&r, "id")?);
            }
        }
        Ok(out)
    }

    /// Stores a checked batch received at `received`; sessions already stored (a batch sent again
    /// after a timeout) are skipped, and only new ones enter the rollups, all in one transaction.
    /// Returns how many were new.
    pub async fn ingest(&self, sessions: &[Session], received: jiff::Timestamp) -> Result<usize> {
        if sessions.is_empty() {
            return Ok(0);
        }
        let received_at = format_ts(received);
        let second = rollup_second(received);
        let _queued = self.queue_writer().await;
        let mut tx = self.write_tx().await?;
        let fresh = match self.dialect() {
            super::Dialect::Sqlite => self.insert_sessions_sqlite(&mut tx, sessions, &received_at).await?,
            super::Dialect::Postgres => self.insert_sessions_postgres(&mut tx, sessions, &received_at).await?,
        };
        // A session repeated inside one batch counts once.
        let mut seen = BTreeSet::new();
        let new: Vec<&Session> = sessions
            .iter()
            .filter(|s| {
                fresh.contains(&(s.runner.clone(), s.session.clone()))
                    && seen.insert((s.runner.as_str(), s.session.as_str()))
            })
            .collect();
        self.add_to_rollups(&mut tx, &new, &second).await?;
        self.count_reported(&mut tx, &new).await?;
        tx.commit().await.map_err(db_err(&self.display))?;
        Ok(new.len())
    }

    /// Counts new sessions as reported against the second they were assigned in (what the
    /// sample-ratio guard reads).
    async fn count_reported(&self, tx: &mut sqlx::Transaction<'static, sqlx::Any>, new: &[&Session]) -> Result<()> {
        if new.is_empty() {
            return Ok(());
        }
        let pairs: Vec<[&str; 2]> = new.iter().map(|s| [s.runner.as_str(), s.session.as_str()]).collect();
        let sql = match self.dialect() {
            // `WHERE true` tells SQLite's parser the ON CONFLICT belongs to the INSERT.
            super::Dialect::Sqlite => {
                "INSERT INTO assignment_rollups (build_id, cohort, second, assigned, reported) \
                 SELECT a.build_id, a.cohort, substr(a.assigned_at, 1, 19), 0, COUNT(*) FROM json_each($1) j \
                 CROSS JOIN session_assignments a ON a.runner = j.value ->> 0 AND a.session = j.value ->> 1 \
                 WHERE true GROUP BY a.build_id, a.cohort, substr(a.assigned_at, 1, 19) \
                 ON CONFLICT (build_id, cohort, second) DO UPDATE SET reported = assignment_rollups.reported + excluded.reported"
            }
            super::Dialect::Postgres => {
                "INSERT INTO assignment_rollups (build_id, cohort, second, assigned, reported) \
                 SELECT a.build_id, a.cohort, substr(a.assigned_at, 1, 19), 0, COUNT(*) FROM json_array_elements($1::json) j \
                 JOIN session_assignments a ON a.runner = j ->> 0 AND a.session = j ->> 1 \
                 GROUP BY a.build_id, a.cohort, substr(a.assigned_at, 1, 19) \
                 ON CONFLICT (build_id, cohort, second) DO UPDATE SET reported = assignment_rollups.reported + excluded.reported"
            }
        };
        sqlx::query(sql)
            .bind(serde_json::to_string(&pairs).expect("json"))
            .execute(&mut **tx)
            .await
            .map_err(db_err(&self.display))?;
        Ok(())
    }

    /// SQLite: sqlx asks SQLite for every parameter's name when it binds, which makes thousands
    /// of parameters quadratic: the batch goes in as one JSON array instead. Returns the
    /// (runner, session) pairs that were new.
    async fn insert_sessions_sqlite(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        sessions: &[Session],
        received_at: &str,
    ) -> Result<BTreeSet<(String, String)>> {
        let rows: Vec<serde_json::Value> = sessions
            .iter()
            .map(|s| {
                serde_json::json!([
                    s.session,
                    s.runner,
                    s.org,
                    s.build,
                    s.started_at,
                    s.start_latency_ms,
                    s.outcome.as_str(),
                    s.usage.commands,
                    s.usage.commands_failed,
                    s.usage.approvals,
                    s.usage.approval_wait_ms,
                    s.usage.tokens,
                    s.usage.cost_micros,
                    s.usage.duration_ms
                ])
            })
            .collect();
        let cols = (0..14).map(|i| format!("value ->> {i}")).collect::<Vec<_>>().join(", ");
        // `WHERE true` tells SQLite's parser the ON CONFLICT belongs to the INSERT.
        let sql = format!(
            "INSERT INTO telemetry_sessions (session, runner, org, build_id, started_at, start_latency_ms, outcome, commands, commands_failed, approvals, approval_wait_ms, tokens, cost_micros, duration_ms, received_at) \
                 SELECT {cols}, $2 FROM json_each($1) WHERE true ON CONFLICT (runner, session) DO NOTHING RETURNING runner, session"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(serde_json::Value::Array(rows).to_string())
            .bind(received_at)
            .fetch_all(&mut **tx)
            .await
            .map_err(db_err(&self.display))?;
        new_pairs(&rows)
    }

    /// PostgreSQL: multi-row inserts of [`CHUNK`] sessions. Returns the pairs that were new.
    async fn insert_sessions_postgres(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        sessions: &[Session],
        received_at: &str,
    ) -> Result<BTreeSet<(String, String)>> {
        let mut fresh = BTreeSet::new();
        for chunk in sessions.chunks(CHUNK) {
            let mut sql = String::from(
                "INSERT INTO telemetry_sessions (session, runner, org, build_id, started_at, received_at, start_latency_ms, outcome, commands, commands_failed, approvals, approval_wait_ms, tokens, cost_micros, duration_ms) VALUES ",
            );
            for i in 0..chunk.len() {
                let b = i * 15;
                if i > 0 {
                    sql.push(',');
                }
                sql.push('(');
                sql.push_str(&(1..=15).map(|k| format!("${}", b + k)).collect::<Vec<_>>().join(","));
                sql.push(')');
            }
            sql.push_str(" ON CONFLICT (runner, session) DO NOTHING RETURNING runner, session");
            // Built from constants and placeholders only.
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for s in chunk {
                let head = q
                    .bind(&s.session)
                    .bind(&s.runner)
                    .bind(&s.org)
                    .bind(s.build.as_str())
                    .bind(&s.started_at)
                    .bind(received_at)
                    .bind(s.start_latency_ms)
                    .bind(s.outcome.as_str());
                q = bind_usage(head, &s.usage);
            }
            let rows = q.fetch_all(&mut **tx).await.map_err(db_err(&self.display))?;
            fresh.extend(new_pairs(&rows)?);
        }
        Ok(fresh)
    }

    /// Adds new sessions to their build's per-second sums and per-minute histograms.
    async fn add_to_rollups(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        new: &[&Session],
        second: &str,
    ) -> Result<()> {
        for ((build, cohort), (sums, hist)) in crate::telemetry::rollup(new.iter().copied()) {
            let head = sqlx::query(
                "INSERT INTO telemetry_rollups (build_id, cohort, second, sessions, started, ok, failed, disconnected, timed_out, commands, commands_failed, approvals, approval_wait_ms, tokens, cost_micros, duration_ms, start_latency_ms, cost_sq, tokens_sq, approvals_sq) \
                 VALUES ($1, $20, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19) \
                 ON CONFLICT (build_id, cohort, second) DO UPDATE SET sessions = telemetry_rollups.sessions + excluded.sessions, started = telemetry_rollups.started + excluded.started, \
                 ok = telemetry_rollups.ok + excluded.ok, failed = telemetry_rollups.failed + excluded.failed, disconnected = telemetry_rollups.disconnected + excluded.disconnected, \
                 timed_out = telemetry_rollups.timed_out + excluded.timed_out, commands = telemetry_rollups.commands + excluded.commands, \
                 commands_failed = telemetry_rollups.commands_failed + excluded.commands_failed, approvals = telemetry_rollups.approvals + excluded.approvals, \
                 approval_wait_ms = telemetry_rollups.approval_wait_ms + excluded.approval_wait_ms, tokens = telemetry_rollups.tokens + excluded.tokens, \
                 cost_micros = telemetry_rollups.cost_micros + excluded.cost_micros, duration_ms = telemetry_rollups.duration_ms + excluded.duration_ms, \
                 start_latency_ms = telemetry_rollups.start_latency_ms + excluded.start_latency_ms, cost_sq = telemetry_rollups.cost_sq + excluded.cost_sq, \
                 tokens_sq = telemetry_rollups.tokens_sq + excluded.tokens_sq, approvals_sq = telemetry_rollups.approvals_sq + excluded.approvals_sq",
            )
            .bind(build.as_str())
            .bind(second)
            .bind(sums.sessions)
            .bind(sums.started)
            .bind(sums.ok)
            .bind(sums.failed)
            .bind(sums.disconnected)
            .bind(sums.timed_out);
            bind_usage(head, &sums.usage)
                .bind(sums.start_latency_ms)
                .bind(sums.cost_sq)
                .bind(sums.tokens_sq)
                .bind(sums.approvals_sq)
                .bind(&cohort)
                .execute(&mut **tx)
                .await
                .map_err(db_err(&self.display))?;
            for ((metric, bucket), n) in hist {
                sqlx::query(
                    "INSERT INTO telemetry_histograms (build_id, cohort, minute, metric, bucket, n) VALUES ($1, $6, $2, $3, $4, $5) \
                     ON CONFLICT (build_id, cohort, minute, metric, bucket) DO UPDATE SET n = telemetry_histograms.n + excluded.n",
                )
                .bind(build.as_str())
                .bind(&second[..16])
                .bind(metric)
                .bind(bucket)
                .bind(n)
                .bind(&cohort)
                .execute(&mut **tx)
                .await
                .map_err(db_err(&self.display))?;
            }
        }
        Ok(())
    }

    /// A build's sums and histograms over sessions that arrived at or after `since` (a rollup
    /// second, or `""` for all).
    pub async fn telemetry_sums(
        &self,
        build: &str,
        since: &str,
    ) -> Result<(Sums, BTreeMap<i64, i64>, BTreeMap<i64, i64>)> {
        let cols = [
            "sessions",
            "started",
            "ok",
            "failed",
            "disconnected",
            "timed_out",
            "commands",
            "commands_failed",
            "approvals",
            "approval_wait_ms",
            "tokens",
            "cost_micros",
            "duration_ms",
            "start_latency_ms",
        ];
        // SUM of BIGINT is NUMERIC on PostgreSQL: cast back so both dialects read an integer.
        let sql = format!(
            "SELECT {} FROM telemetry_rollups WHERE build_id = $1 AND second >= $2",
            cols.iter()
                .map(|c| format!("CAST(COALESCE(SUM({c}), 0) AS BIGINT) AS {c}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let r = self
            .row(sqlx::query(sqlx::AssertSqlSafe(sql)).bind(build).bind(since))
            .await?;
        let n = |c: &str| int(&r, c);
        let sums = Sums {
            sessions: n("sessions")?,
            started: n("started")?,
            ok: n("ok")?,
            failed: n("failed")?,
            disconnected: n("disconnected")?,
            timed_out: n("timed_out")?,
            usage: SessionUsage {
                commands: n("commands")?,
                commands_failed: n("commands_failed")?,
                approvals: n("approvals")?,
                approval_wait_ms: n("approval_wait_ms")?,
                tokens: n("tokens")?,
                cost_micros: n("cost_micros")?,
                duration_ms: n("duration_ms")?,
            },
            start_latency_ms: n("start_latency_ms")?,
            // The KPIs need no spread.
            ..Sums::default()
        };
        let rows = self.rows(sqlx::query(
            "SELECT metric, bucket, CAST(SUM(n) AS BIGINT) AS n FROM telemetry_histograms WHERE build_id = $1 AND minute >= $2 GROUP BY metric, bucket",
        )
        .bind(build)
        // Histograms are kept per minute (a day of a build is 1,440 rows per bucket, not
        // 86,400): a window's percentiles include what arrived earlier in its first minute.
        .bind(since.get(..16).unwrap_or(since))).await?;
        let (mut start, mut approval) = (BTreeMap::new(), BTreeMap::new());
        for row in rows {
            let target = if text(&row, "metric")? == "start" {
                &mut start
            } else {
                &mut approval
            };
            target.insert(int(&row, "bucket")?, int(&row, "n")?);
        }
        Ok((sums, start, approval))
    }

    /// One row of `columns` (sums) over a build's rollups since `since`, of one cohort or all.
    async fn rollup_sums(
        &self,
        columns: &str,
        (build, cohort): (&BuildId, Option<&str>),
        since: &str,
    ) -> Result<sqlx::any::AnyRow> {
        let sql = format!(
            "SELECT {columns} FROM telemetry_rollups WHERE build_id = $1 AND second >= $2{}",
            in_cohort(cohort)
        );
        self.row(with_cohort(
            sqlx::query(sqlx::AssertSqlSafe(sql)).bind(build.as_str()).bind(since),
            cohort,
        ))
        .await
    }

    /// The figures a rollout decision reads for a build since `since` (a rollup second): only the
    /// four counts and the start-latency histogram it judges on.
    pub async fn figures(&self, build: &BuildId, cohort: Option<&str>, since: &str) -> Result<Figures> {
        let r = self
            .rollup_sums(
                "CAST(COALESCE(SUM(sessions), 0) AS BIGINT) AS sessions, CAST(COALESCE(SUM(failed), 0) AS BIGINT) AS failed, \
                 CAST(COALESCE(SUM(timed_out), 0) AS BIGINT) AS timed_out, CAST(COALESCE(SUM(disconnected), 0) AS BIGINT) AS disconnected",
                (build, cohort),
                since,
            )
            .await?;
        let sql = format!(
            "SELECT bucket, CAST(SUM(n) AS BIGINT) AS n FROM telemetry_histograms WHERE build_id = $1 AND minute >= $2 AND metric = 'start'{} GROUP BY bucket",
            in_cohort(cohort)
        );
        let rows = self
            .rows(with_cohort(
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(build.as_str())
                    .bind(since.get(..16).unwrap_or(since)),
                cohort,
            ))
            .await?;
        let start = rows
            .iter()
            .map(|row| Ok((int(row, "bucket")?, int(row, "n")?)))
            .collect::<Result<BTreeMap<i64, i64>>>()?;
        let n = |c: &str| int(&r, c).map(|v| v.max(0) as u64);
        Ok(Figures {
            sessions: n("sessions")?,
            failed: n("failed")? + n("timed_out")?,
            disconnected: n("disconnected")?,
            p95_start_ms: crate::telemetry::quantile(&start, 0.95),
            ..Figures::default()
        })
    }

    /// Adds what the configured guardrails read (commands, and per-session cost, tokens and
    /// approvals with their sums of squares) over the same window: read only when a policy
    /// lists guardrails, so a decision without them sums four columns, not twelve.
    pub async fn add_guardrail_sums(
        &self,
        f: &mut Figures,
        build: &BuildId,
        cohort: Option<&str>,
        since: &str,
    ) -> Result<()> {
        let r = self
            .rollup_sums(
                "CAST(COALESCE(SUM(commands), 0) AS BIGINT) AS commands, CAST(COALESCE(SUM(commands_failed), 0) AS BIGINT) AS commands_failed, \
                 CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT) AS cost_micros, CAST(COALESCE(SUM(tokens), 0) AS BIGINT) AS tokens, \
                 CAST(COALESCE(SUM(approvals), 0) AS BIGINT) AS approvals, CAST(COALESCE(SUM(cost_sq), 0) AS DOUBLE PRECISION) AS cost_sq, \
                 CAST(COALESCE(SUM(tokens_sq), 0) AS DOUBLE PRECISION) AS tokens_sq, CAST(COALESCE(SUM(approvals_sq), 0) AS DOUBLE PRECISION) AS approvals_sq",
                (build, cohort),
                since,
            )
            .await?;
        let n = |c: &str| int(&r, c).map(|v| v.max(0) as u64);
        let moments = |sum: &str, sq: &str| -> Result<crate::rollout::Moments> {
            Ok(crate::rollout::Moments {
                sum: n(sum)? as f64,
                sq: self.cell(r.float(sq))?,
            })
        };
        f.commands = n("commands")?;
        f.commands_failed = n("commands_failed")?;
        f.cost = moments("cost_micros", "cost_sq")?;
        f.tokens = moments("tokens", "tokens_sq")?;
        f.approvals = moments("approvals", "approvals_sq")?;
        Ok(())
    }

    /// Sessions of `build` assigned in `[from, to)` (rollup seconds) and how many of those were
    /// reported: one arm of the sample-ratio guard.
    pub async fn assigned_and_reported(
        &self,
        build: &BuildId,
        cohort: Option<&str>,
        from: &str,
        to: &str,
    ) -> Result<(u64, u64)> {
        // The cohort is the fourth parameter here: `with_cohort` binds it after the others.
        let sql = format!(
            "SELECT CAST(COALESCE(SUM(assigned), 0) AS BIGINT) AS assigned, CAST(COALESCE(SUM(reported), 0) AS BIGINT) AS reported \
             FROM assignment_rollups WHERE build_id = $1 AND second >= $2 AND second < $3{}",
            cohort.map_or("", |_| " AND cohort = $4")
        );
        let r = self
            .row(with_cohort(
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(build.as_str())
                    .bind(from)
                    .bind(to),
                cohort,
            ))
            .await?;
        let n = |c: &str| int(&r, c).map(|v| v.max(0) as u64);
        Ok((n("assigned")?, n("reported")?))
    }

    /// A build's sessions, failures (`failed` + `timed_out`) and disconnects per minute of
    /// arrival since `since` (a rollup second), oldest first: what the fleet page charts.
    pub async fn telemetry_series(&self, build: &BuildId, since: &str) -> Result<Vec<(String, i64, i64, i64)>> {
        let rows = self.rows(sqlx::query(
            "SELECT substr(second, 1, 16) AS minute, CAST(SUM(sessions) AS BIGINT) AS sessions, \
             CAST(SUM(failed + timed_out) AS BIGINT) AS failed, CAST(SUM(disconnected) AS BIGINT) AS disconnected \
             FROM telemetry_rollups WHERE build_id = $1 AND second >= $2 GROUP BY substr(second, 1, 16) ORDER BY minute LIMIT 1440",
        )
        .bind(build.as_str())
        .bind(since)).await?;
        rows.iter()
            .map(|r| {
                Ok((
                    text(r, "minute")?,
                    int(r, "sessions")?,
                    int(r, "failed")?,
                    int(r, "disconnected")?,
                ))
            })
            .collect()
    }

    pub async fn telemetry_count(&self) -> Result<i64> {
        let r = self
            .row(sqlx::query("SELECT COUNT(*) AS n FROM telemetry_sessions"))
            .await?;
        int(&r, "n")
    }

    // --- rollouts ---

    /// Starts a rollout (one active per channel) and records its start, in one transaction.
    pub async fn create_rollout(&self, r: &RolloutRow, figures: serde_json::Value, a: Audit<'_>) -> Result<i64> {
        let mut tx = self.write_tx().await?;
        let active = sqlx::query("SELECT id FROM rollouts WHERE channel = $1 AND state IN ('running', 'paused')")
            .bind(r.channel.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err(&self.display))?;
        if let Some(row) = active {
            return Err(LabError::usage(
                format!("channel {} has rollout {} in progress", r.channel, int(&row, "id")?),
                "finish it, or `canary rollout abort` it, before starting another",
            ));
        }
        let ts = now();
        let row = sqlx::query(
            "INSERT INTO rollouts (channel, build_id, baseline_id, steps, step, state, bake_ms, min_sessions, started_at, step_started_at, updated_at, revision, note, actor, cohort_key, ring, rings) \
             VALUES ($1, $2, $3, $4, 0, 'running', $5, $6, $7, $7, $7, 1, $8, $9, $10, 0, $11) RETURNING id",
        )
        .bind(r.channel.as_str())
        .bind(r.build_id.as_str())
        .bind(r.baseline_id.as_str())
        .bind(serde_json::to_string(&r.steps).expect("json"))
        .bind(r.bake_ms)
        .bind(r.min_sessions)
        .bind(&ts)
        .bind(&r.note)
        .bind(a.actor)
        .bind(r.cohort_key.as_str())
        .bind(serde_json::to_string(&r.rings).expect("json"))
        .fetch_one(&mut *tx)
        .await
        .map_err(db_err(&self.display))?;
        let id = int(&row, "id")?;
        let event = NewEvent {
            rollout: id,
            channel: &r.channel,
            from: Some(&r.baseline_id),
            to: &r.build_id,
            kind: EventKind::Start,
            step: 0,
            figures: &figures,
            actor: a.actor,
            ts: &ts,
        };
        event.insert(&mut tx, &self.display).await?;
        insert_audit(&mut tx, &a, &self.display).await?;
        tx.commit().await.map_err(db_err(&self.display))?;
        Ok(id)
    }

    pub async fn rollouts(&self, active_only: bool, limit: i64) -> Result<Vec<RolloutRow>> {
        let sql = format!(
            "SELECT {ROLLOUT_COLS} FROM rollouts WHERE ($1 = 0 OR state IN ('running', 'paused')) ORDER BY id DESC LIMIT $2"
        );
        self.all(
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(active_only as i64)
                .bind(limit),
        )
        .await
    }

    pub async fn rollout(&self, id: i64) -> Result<Option<RolloutRow>> {
        let sql = format!("SELECT {ROLLOUT_COLS} FROM rollouts WHERE id = $1");
        let row = self.maybe_row(sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id)).await?;
        row.as_ref().map(|r| self.read_one(r)).transpose()
    }

    pub async fn rollout_events(&self, id: i64) -> Result<Vec<RolloutEvent>> {
        self.all(sqlx::query(
            "SELECT id, kind, step, from_build, to_build, ts, actor, figures FROM rollout_events WHERE rollout_id = $1 ORDER BY id",
        )
        .bind(id)).await
    }

    /// Applies a transition if the rollout is still at the revision it was read at; returns
    /// whether it was applied. The state change, its event, the audit entry and (on completion)
    /// the channel's release commit together or not at all, so a controller killed at any point
    /// or racing another never makes a transition twice.
    pub async fn transition(&self, t: Transition<'_>) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let ts = now();
        let r = sqlx::query(
            "UPDATE rollouts SET state = $1, step = $2, note = $3, updated_at = $4, revision = revision + 1, ring = $8, \
             step_started_at = CASE WHEN $5 = 1 THEN $4 ELSE step_started_at END WHERE id = $6 AND revision = $7",
        )
        .bind(t.state.as_str())
        .bind(t.step as i64)
        .bind(t.note)
        .bind(&ts)
        .bind(t.restart_step as i64)
        .bind(t.id)
        .bind(t.revision)
        .bind(t.ring as i64)
        .execute(&mut *tx)
        .await
        .map_err(db_err(&self.display))?;
        if r.rows_affected() == 0 {
            return Ok(false);
        }
        let row = sqlx::query("SELECT channel, build_id, baseline_id FROM rollouts WHERE id = $1")
            .bind(t.id)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err(&self.display))?;
        let (channel, build, baseline) = (
            row.parsed::<Channel>("channel")?,
            text(&row, "build_id")?,
            text(&row, "baseline_id")?,
        );
        let (from, to) = if t.kind == EventKind::Abort {
            (build.as_str(), baseline.as_str())
        } else {
            (baseline.as_str(), build.as_str())
        };
        let event = NewEvent {
            rollout: t.id,
            channel: &channel,
            from: Some(from),
            to,
            kind: t.kind,
            step: t.step as i64,
            figures: &t.figures,
            actor: t.audit.actor,
            ts: &ts,
        };
        event.insert(&mut tx, &self.display).await?;
        if t.release {
            sqlx::query(
                "INSERT INTO channel_releases (channel, build_id, released_at, actor, kind) VALUES ($1, $2, $3, $4, 'promote')",
            )
            .bind(channel.as_str())
            .bind(&build)
            .bind(&ts)
            .bind(t.audit.actor)
            .execute(&mut *tx)
            .await
            .map_err(db_err(&self.display))?;
            if channel.is_stable() {
                super::sweeps::enqueue_sweeps(&mut tx, &build, &ts, &self.display).await?;
            }
        }
        insert_audit(&mut tx, &t.audit, &self.display).await?;
        tx.commit().await.map_err(db_err(&self.display))?;
        Ok(true)
    }

    /// Keeps a rollout's note current without a transition (the figures of a lasting hold).
    pub async fn rollout_note(&self, id: i64, revision: i64, note: &str) -> Result<()> {
        self.exec(
            sqlx::query("UPDATE rollouts SET note = $1 WHERE id = $2 AND revision = $3")
                .bind(note)
                .bind(id)
                .bind(revision),
        )
        .await?;
        Ok(())
    }

    // --- freezes ---

    pub async fn set_freeze(&self, org: &str, frozen: bool, reason: &str, a: Audit<'_>) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let r = if frozen {
            sqlx::query("INSERT INTO org_freezes (org, since, actor, reason) VALUES ($1, $2, $3, $4) ON CONFLICT (org) DO NOTHING")
                .bind(org)
                .bind(now())
                .bind(a.actor)
                .bind(reason)
                .execute(&mut *tx)
                .await
        } else {
            sqlx::query("DELETE FROM org_freezes WHERE org = $1").bind(org).execute(&mut *tx).await
        }
        .map_err(db_err(&self.display))?;
        insert_audit(&mut tx, &a, &self.display).await?;
        tx.commit().await.map_err(db_err(&self.display))?;
        Ok(r.rows_affected() > 0)
    }

    pub async fn freezes(&self) -> Result<Vec<Freeze>> {
        self.all(sqlx::query(
            "SELECT org, since, actor, reason FROM org_freezes ORDER BY org",
        ))
        .await
    }

    /// What assignment reads: channels' builds, org pins and freezes, active rollouts.
    pub async fn fleet_state(&self) -> Result<FleetState> {
        let mut s = FleetState::default();
        for c in self.channels().await? {
            if let Some(r) = self.known_good(&c).await?.first() {
                s.channels.insert(c, r.build_id.clone());
            }
        }
        for p in self.pins().await? {
            s.orgs.insert(p.org, (p.channel, p.pinned_build_id));
        }
        s.frozen = self.freezes().await?.into_iter().map(|f| f.org).collect();
        for r in self.rollouts(true, 100).await? {
            s.rollouts.insert(
                r.channel.clone(),
                ActiveRollout {
                    id: r.id,
                    percent: r.percent(),
                    step: r.step,
                    build: r.build_id,
                    baseline: r.baseline_id,
                    key: r.cohort_key,
                    ring: r.ring,
                    rings: r.rings,
                },
            );
        }
        s.pushed = self.pushed_refs().await?;
        Ok(s)
    }

    /// Every published build's pushed reference.
    pub async fn pushed_refs(&self) -> Result<BTreeMap<BuildId, PushedRef>> {
        let rows = self
            .rows(sqlx::query(
                "SELECT id, pushed_ref FROM runner_builds WHERE pushed_ref IS NOT NULL",
            ))
            .await?;
        rows.iter()
            .map(|r| Ok((self.cell(r.parsed("id"))?, self.cell(r.parsed("pushed_ref"))?)))
            .collect()
    }

    /// The build a conversation was given during rollout `rollout`, if it was given one.
    pub async fn remembered_build(&self, rollout: i64, org: &str, conversation: &str) -> Result<Option<BuildId>> {
        let row = self
            .maybe_row(
                sqlx::query(
                    "SELECT build_id FROM conversation_builds WHERE rollout_id = $1 AND org = $2 AND conversation = $3",
                )
                .bind(rollout)
                .bind(org)
                .bind(conversation),
            )
            .await?;
        row.map(|r| self.cell(r.parsed("build_id"))).transpose()
    }

    /// Remembers the build a conversation was first given during rollout `rollout` (a second
    /// answer for it is ignored: the first stands).
    pub async fn remember_build(&self, rollout: i64, org: &str, conversation: &str, build: &BuildId) -> Result<()> {
        let _queued = self.queue_writer().await;
        self.exec(
            sqlx::query(
                "INSERT INTO conversation_builds (rollout_id, org, conversation, build_id, assigned_at) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (rollout_id, org, conversation) DO NOTHING",
            )
            .bind(rollout)
            .bind(org)
            .bind(conversation)
            .bind(build.as_str())
            .bind(now()),
        )
        .await?;
        Ok(())
    }
}

/// A rollout's event as it is written: a start, a step, a hold, an abort, a completion.
struct NewEvent<'a> {
    rollout: i64,
    channel: &'a str,
    from: Option<&'a str>,
    to: &'a str,
    kind: EventKind,
    step: i64,
    figures: &'a serde_json::Value,
    actor: &'a str,
    ts: &'a str,
}

impl NewEvent<'_> {
    async fn insert(&self, tx: &mut sqlx::Transaction<'static, sqlx::Any>, display: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO rollout_events (org, channel, from_build, to_build, kind, ts, actor, rollout_id, step, figures) VALUES (NULL, $1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(self.channel)
        .bind(self.from)
        .bind(self.to)
        .bind(self.kind.as_str())
        .bind(self.ts)
        .bind(self.actor)
        .bind(self.rollout)
        .bind(self.step)
        .bind(self.figures.to_string())
        .execute(&mut **tx)
        .await
        .map_err(db_err(display))?;
        Ok(())
    }
}

/// Binds a usage's figures in the order the telemetry tables list their columns: commands,
/// commands_failed, approvals, approval_wait_ms, tokens, cost_micros, duration_ms.
fn bind_usage<'q>(q: crate::row::Query<'q>, u: &SessionUsage) -> crate::row::Query<'q> {
    q.bind(u.commands)
        .bind(u.commands_failed)
        .bind(u.approvals)
        .bind(u.approval_wait_ms)
        .bind(u.tokens)
        .bind(u.cost_micros)
        .bind(u.duration_ms)
}

impl FromRow for RolloutEvent {
    fn from_row(r: &sqlx::any::AnyRow) -> Cell<Self> {
        Ok(RolloutEvent {
            id: r.int("id")?,
            kind: r.parsed("kind")?,
            step: r.opt_int("step")?,
            from_build: r.opt_parsed("from_build")?,
            to_build: r.parsed("to_build")?,
            ts: r.text("ts")?,
            actor: r.text("actor")?,
            figures: r.opt_json("figures")?.unwrap_or(serde_json::Value::Null),
        })
    }
}

from_row!(Freeze {
    org: text,
    since: text,
    actor: text,
    reason: text,
});

/// The (runner, session) pairs an `INSERT … RETURNING runner, session` stored.
fn new_pairs(rows: &[sqlx::any::AnyRow]) -> Result<BTreeSet<(String, String)>> {
    rows.iter()
        .map(|r| Ok((text(r, "runner")?, text(r, "session")?)))
        .collect()
}

/// The clause that keeps a rollup read to one cohort (its third parameter), or none: every
/// cohort summed.
fn in_cohort(cohort: Option<&str>) -> &'static str {
    cohort.map_or("", |_| " AND cohort = $3")
}

/// Binds the cohort after a query's other parameters, when there is one.
fn with_cohort<'q>(q: crate::row::Query<'q>, cohort: Option<&'q str>) -> crate::row::Query<'q> {
    match cohort {
        Some(c) => q.bind(c),
        None => q,
    }
}
