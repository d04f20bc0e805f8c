//! The CLIs' OpenTelemetry events, stored by the runner's session they name: each record once
//! (by digest), their usage summed per session, read back when a runner reports the session.

use super::{Registry, db_err, format_ts};
use crate::error::Result;
use crate::otlp::{Record, Usage};
use crate::row::{Col, FromRow};
use std::collections::BTreeMap;

/// A session's OpenTelemetry so far.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct OtelSession {
    pub runner: String,
    pub session: String,
    pub service: String,
    pub first_at: String,
    pub last_at: String,
    pub usage: Usage,
}

impl FromRow for OtelSession {
    fn from_row(r: &sqlx::any::AnyRow) -> crate::row::Cell<Self> {
        let n = |col: &str| -> crate::row::Cell<u64> { Ok(r.int(col)?.max(0) as u64) };
        Ok(OtelSession {
            runner: r.text("runner")?,
            session: r.text("session")?,
            service: r.text("service")?,
            first_at: r.text("first_at")?,
            last_at: r.text("last_at")?,
            usage: Usage {
                records: n("records")?,
                api_requests: n("api_requests")?,
                api_errors: n("api_errors")?,
                commands: n("commands")?,
                commands_failed: n("commands_failed")?,
                decisions: n("decisions")?,
                approvals: n("approvals")?,
                rejections: n("rejections")?,
                tokens: n("tokens")?,
                cost_micros: n("cost_micros")?,
            },
        })
    }
}

const COLUMNS: &str = "runner, session, service, first_at, last_at, records, api_requests, api_errors, commands, commands_failed, \
     decisions, approvals, rejections, tokens, cost_micros";

impl Registry {
    /// Takes `records` of `runner`'s sessions received at `at`; a record already taken (same
    /// digest) is skipped. Returns how many were new. One transaction: all or nothing.
    pub async fn add_otel(&self, runner: &str, records: &[&Record], at: jiff::Timestamp) -> Result<u64> {
        if records.is_empty() {
            return Ok(0);
        }
        let at = format_ts(at);
        let _queued = self.queue_writer().await;
        let mut tx = self.write_tx().await?;
        let mut fresh: BTreeMap<&str, (Usage, &str)> = BTreeMap::new();
        let mut new = 0u64;
        for r in records {
            let done = sqlx::query(
                "INSERT INTO otel_records (runner, session, digest, received_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (runner, session, digest) DO NOTHING",
            )
            .bind(runner)
            .bind(&r.session)
            .bind(&r.digest)
            .bind(&at)
            .execute(&mut *tx)
            .await
            .map_err(db_err(&self.display))?;
            if done.rows_affected() == 1 {
                new += 1;
                fresh
                    .entry(&r.session)
                    .or_insert((Usage::default(), &r.service))
                    .0
                    .add(&r.usage);
            }
        }
        let sql = format!(
            "INSERT INTO otel_sessions ({COLUMNS}) VALUES ($1, $2, $3, $4, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
             ON CONFLICT (runner, session) DO UPDATE SET last_at = excluded.last_at, \
             records = otel_sessions.records + excluded.records, \
             api_requests = otel_sessions.api_requests + excluded.api_requests, \
             api_errors = otel_sessions.api_errors + excluded.api_errors, \
             commands = otel_sessions.commands + excluded.commands, \
             commands_failed = otel_sessions.commands_failed + excluded.commands_failed, \
             decisions = otel_sessions.decisions + excluded.decisions, \
             approvals = otel_sessions.approvals + excluded.approvals, \
             rejections = otel_sessions.rejections + excluded.rejections, \
             tokens = otel_sessions.tokens + excluded.tokens, \
             cost_micros = otel_sessions.cost_micros + excluded.cost_micros"
        );
        for (session, (u, service)) in fresh {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .bind(runner)
                .bind(session)
                .bind(service)
                .bind(&at);
            for v in [
                u.records,
                u.api_requests,
                u.api_errors,
                u.commands,
                u.commands_failed,
                u.decisions,
                u.approvals,
                u.rejections,
                u.tokens,
                u.cost_micros,
            ] {
                q = q.bind(v.min(i64::MAX as u64) as i64);
            }
            q.execute(&mut *tx).await.map_err(db_err(&self.display))?;
        }
        tx.commit().await.map_err(db_err(&self.display))?;
        Ok(new)
    }

    /// What OpenTelemetry said of each of `sessions` of `runner`; sessions with none are absent.
    pub async fn otel_sessions(&self, runner: &str, sessions: &[&str]) -> Result<BTreeMap<String, OtelSession>> {
        if sessions.is_empty() {
            return Ok(BTreeMap::new());
        }
        let ids = serde_json::to_string(sessions).expect("json");
        let sql = match self.dialect() {
            super::Dialect::Sqlite => format!(
                "SELECT {COLUMNS} FROM otel_sessions WHERE runner = $1 AND session IN (SELECT value FROM json_each($2))"
            ),
            super::Dialect::Postgres => format!(
                "SELECT {COLUMNS} FROM otel_sessions WHERE runner = $1 AND session IN (SELECT json_array_elements_text($2::json))"
            ),
        };
        let rows: Vec<OtelSession> = self
            .all(sqlx::query(sqlx::AssertSqlSafe(sql)).bind(runner).bind(ids))
            .await?;
        Ok(rows.into_iter().map(|s| (s.session.clone(), s)).collect())
    }

    /// Forgets OpenTelemetry last heard before `before` (with the assignments it belongs to).
    pub(crate) async fn prune_otel(&self, before: &str) -> Result<()> {
        self.exec(sqlx::query("DELETE FROM otel_records WHERE received_at < $1").bind(before))
            .await?;
        self.exec(sqlx::query("DELETE FROM otel_sessions WHERE last_at < $1").bind(before))
            .await?;
        Ok(())
    }
}
