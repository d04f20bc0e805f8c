//! The rollout alerts' outbox: which rollout events have been looked at, the alerts waiting to be
//! delivered, and what became of each delivery (also in the audit log).

use crate::error::Result;
use crate::row::{Cell, Col, FromRow};
use crate::{Audit, Registry, RolloutEvent, db_err, format_ts, now};
use canary_contract::{BuildId, Channel};
use serde::Serialize;

/// A rollout event with the rollout it belongs to, as the alert scan reads it.
#[derive(Debug, Clone)]
pub struct EventOfRollout {
    pub event: RolloutEvent,
    pub rollout: i64,
    pub channel: Channel,
    pub build: BuildId,
    pub baseline: BuildId,
    pub steps: Vec<f64>,
}

impl FromRow for EventOfRollout {
    fn from_row(r: &sqlx::any::AnyRow) -> Cell<Self> {
        Ok(EventOfRollout {
            event: RolloutEvent::from_row(r)?,
            rollout: r.int("rollout_id")?,
            channel: r.parsed("channel")?,
            build: r.parsed("build_id")?,
            baseline: r.parsed("baseline_id")?,
            steps: r.json("steps")?,
        })
    }
}

/// An alert to queue: about which event, which alert, where, and what to post.
#[derive(Debug, Clone)]
pub struct NewAlert {
    pub event_id: i64,
    pub alert: String,
    pub url: String,
    pub body: serde_json::Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct AlertRow {
    pub id: i64,
    pub event_id: i64,
    pub alert: String,
    pub url: String,
    pub body: String,
    pub state: String,
    pub attempts: i64,
    pub next_at: String,
    pub last_error: String,
    pub created_at: String,
}

from_row!(AlertRow {
    id: int,
    event_id: int,
    alert: text,
    url: text,
    body: text,
    state: text,
    attempts: int,
    next_at: text,
    last_error: text,
    created_at: text,
});

const ALERT_COLS: &str = "id, event_id, alert, url, body, state, attempts, next_at, last_error, created_at";

impl Registry {
    /// Rollout events after the scan's cursor, oldest first, at most `limit`. On the first scan
    /// the cursor starts at the newest event: history raises no alert.
    /// Starts the alert scan's cursor at the newest rollout event, if it has none: events from
    /// then on are alerted, history is not. `canary serve` calls it before it listens.
    pub async fn start_alert_scan(&self) -> Result<()> {
        let _queued = self.queue_writer().await;
        self.exec(sqlx::query(
            // `WHERE true` tells SQLite's parser the ON CONFLICT belongs to the INSERT.
            "INSERT INTO alert_cursor (id, last_event) SELECT 1, COALESCE(MAX(id), 0) FROM rollout_events \
             WHERE true ON CONFLICT (id) DO NOTHING",
        ))
        .await?;
        Ok(())
    }

    pub async fn events_to_scan(&self, limit: i64) -> Result<Vec<EventOfRollout>> {
        let cursor = self
            .maybe_row(sqlx::query("SELECT last_event FROM alert_cursor WHERE id = 1"))
            .await?;
        let Some(cursor) = cursor else {
            self.start_alert_scan().await?;
            return Ok(Vec::new());
        };
        let last = self.cell(cursor.int("last_event"))?;
        self.all(
            sqlx::query(
                "SELECT e.id, e.kind, e.step, e.from_build, e.to_build, e.ts, e.actor, e.figures, e.rollout_id, \
                 r.channel, r.build_id, r.baseline_id, r.steps \
                 FROM rollout_events e JOIN rollouts r ON r.id = e.rollout_id WHERE e.id > $1 ORDER BY e.id LIMIT $2",
            )
            .bind(last)
            .bind(limit),
        )
        .await
    }

    /// Queues alerts (one per event and alert: a second is ignored) and moves the scan's cursor
    /// to `scanned`, together.
    pub async fn queue_alerts(&self, alerts: &[NewAlert], scanned: Option<i64>) -> Result<()> {
        let _queued = self.queue_writer().await;
        let mut tx = self.write_tx().await?;
        let ts = now();
        for a in alerts {
            sqlx::query(
                "INSERT INTO rollout_alerts (event_id, alert, url, body, state, attempts, next_at, last_error, created_at) \
                 VALUES ($1, $2, $3, $4, 'pending', 0, $5, '', $5) ON CONFLICT (event_id, alert) DO NOTHING",
            )
            .bind(a.event_id)
            .bind(&a.alert)
            .bind(&a.url)
            .bind(a.body.to_string())
            .bind(&ts)
            .execute(&mut *tx)
            .await
            .map_err(db_err(&self.display))?;
        }
        if let Some(last) = scanned {
            sqlx::query("UPDATE alert_cursor SET last_event = $1 WHERE id = 1 AND last_event < $1")
                .bind(last)
                .execute(&mut *tx)
                .await
                .map_err(db_err(&self.display))?;
        }
        tx.commit().await.map_err(db_err(&self.display))
    }

    /// Pending alerts due at `at`, oldest first.
    pub async fn due_alerts(&self, at: jiff::Timestamp, limit: i64) -> Result<Vec<AlertRow>> {
        let sql = format!(
            "SELECT {ALERT_COLS} FROM rollout_alerts WHERE state = 'pending' AND next_at <= $1 ORDER BY id LIMIT $2"
        );
        self.all(sqlx::query(sqlx::AssertSqlSafe(sql)).bind(format_ts(at)).bind(limit))
            .await
    }

    /// The newest alerts, newest first (what `canary rollout status --json` shows).
    pub async fn alerts(&self, limit: i64) -> Result<Vec<AlertRow>> {
        let sql = format!("SELECT {ALERT_COLS} FROM rollout_alerts ORDER BY id DESC LIMIT $1");
        self.all(sqlx::query(sqlx::AssertSqlSafe(sql)).bind(limit)).await
    }

    /// Alerts in the outbox by state.
    pub async fn alert_counts(&self) -> Result<Vec<(String, i64)>> {
        self.counts("SELECT state AS k, COUNT(*) AS n FROM rollout_alerts GROUP BY state ORDER BY state")
            .await
    }

    /// Rollout transitions written, by kind.
    pub async fn rollout_event_counts(&self) -> Result<Vec<(String, i64)>> {
        self.counts(
            "SELECT kind AS k, COUNT(*) AS n FROM rollout_events WHERE rollout_id IS NOT NULL GROUP BY kind ORDER BY kind",
        )
        .await
    }

    /// (k, n) rows of a counting query.
    async fn counts(&self, sql: &'static str) -> Result<Vec<(String, i64)>> {
        let rows = self.rows(sqlx::query(sql)).await?;
        rows.iter()
            .map(|r| Ok((self.cell(r.text("k"))?, self.cell(r.int("n"))?)))
            .collect()
    }

    /// Records a delivery attempt: delivered, to be tried again at `retry_at`, or given up
    /// (`retry_at` `None`); a delivery and a giving up are audited with the alert.
    pub async fn alert_attempted(
        &self,
        a: &AlertRow,
        outcome: std::result::Result<(), String>,
        retry_at: Option<jiff::Timestamp>,
    ) -> Result<()> {
        let (state, error, next) = match (&outcome, retry_at) {
            (Ok(()), _) => ("delivered", String::new(), a.next_at.clone()),
            (Err(e), Some(at)) => ("pending", e.clone(), format_ts(at)),
            (Err(e), None) => ("failed", e.clone(), a.next_at.clone()),
        };
        let _queued = self.queue_writer().await;
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "UPDATE rollout_alerts SET state = $1, attempts = attempts + 1, last_error = $2, next_at = $3 WHERE id = $4 AND state = 'pending'",
        )
        .bind(state)
        .bind(&error)
        .bind(&next)
        .bind(a.id)
        .execute(&mut *tx)
        .await
        .map_err(db_err(&self.display))?;
        if state != "pending" {
            let audit = Audit {
                actor: "rollout-alerts",
                action: "alert",
                target: &format!("{} {}", a.alert, a.url),
                decision: state,
                reason: &error,
                evidence: serde_json::json!({"event": a.event_id, "attempts": a.attempts + 1}),
            };
            crate::queries::insert_audit(&mut tx, &audit, &self.display).await?;
        }
        tx.commit().await.map_err(db_err(&self.display))
    }
}
