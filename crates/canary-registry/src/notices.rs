//! Customer-hosted runners behind the build offered to them: noticed once per runner and offered
//! build (so an admin is told once, not at every heartbeat), cleared when the runner catches up.

use super::queries::{Audit, insert_audit};
use super::{Registry, db_err, now};
use crate::error::Result;
use canary_contract::BuildId;
use serde::Serialize;

/// A runner found behind its offered build.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Notice {
    pub runner_id: String,
    pub build_id: BuildId,
    pub org: Option<String>,
    pub channel: canary_contract::Channel,
    /// The offered build's traffic light: `green` or `yellow` (a red build is not offered).
    pub status: String,
    /// Component changes from what the runner reports, as `update::Change`s.
    pub changes: serde_json::Value,
    pub noticed_at: String,
    /// How the admin was told: `webhook URL: delivered`, the failure, or none configured.
    pub delivery: Option<String>,
}

impl Registry {
    /// Records that `n.runner_id` is behind `n.build_id`, audited, and says whether this is new
    /// (a runner already noticed behind the same build is not noticed again). Older notices of
    /// the runner for other builds are cleared: only the newest offer is outstanding.
    pub async fn notice_behind(&self, n: &Notice) -> Result<bool> {
        let ts = now();
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "UPDATE runner_notices SET cleared_at = $1 WHERE runner_id = $2 AND build_id <> $3 AND cleared_at IS NULL",
        )
        .bind(&ts)
        .bind(&n.runner_id)
        .bind(n.build_id.as_str())
        .execute(&mut *tx)
        .await
        .map_err(db_err(&self.display))?;
        let inserted = sqlx::query(
            "INSERT INTO runner_notices (runner_id, build_id, org, channel, status, changes, noticed_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (runner_id, build_id) DO NOTHING",
        )
        .bind(&n.runner_id)
        .bind(n.build_id.as_str())
        .bind(n.org.as_deref())
        .bind(n.channel.as_str())
        .bind(&n.status)
        .bind(n.changes.to_string())
        .bind(&ts)
        .execute(&mut *tx)
        .await
        .map_err(db_err(&self.display))?
        .rows_affected()
            == 1;
        if inserted {
            let summary = summary(&n.changes);
            let target = format!("runner:{}", n.runner_id);
            insert_audit(
                &mut tx,
                &Audit {
                    actor: "control-plane",
                    action: "runner.behind",
                    target: &target,
                    decision: &n.status,
                    reason: &format!("offered {} on {}: {summary}", n.build_id, n.channel),
                    evidence: serde_json::json!({"build": n.build_id, "org": n.org, "channel": n.channel, "changes": n.changes}),
                },
                &self.display,
            )
            .await?;
        }
        tx.commit().await.map_err(db_err(&self.display))?;
        Ok(inserted)
    }

    /// The runner runs what it is offered: its outstanding notices are cleared.
    pub async fn clear_notices(&self, runner: &str) -> Result<u64> {
        let _w = self.queue_writer().await;
        Ok(self
            .exec(
                sqlx::query("UPDATE runner_notices SET cleared_at = $1 WHERE runner_id = $2 AND cleared_at IS NULL")
                    .bind(now())
                    .bind(runner),
            )
            .await?
            .rows_affected())
    }

    /// Records how the admin was told of a notice.
    pub async fn set_notice_delivery(&self, runner: &str, build: &BuildId, delivery: &str) -> Result<()> {
        let _w = self.queue_writer().await;
        self.exec(
            sqlx::query("UPDATE runner_notices SET delivery = $1 WHERE runner_id = $2 AND build_id = $3")
                .bind(delivery)
                .bind(runner)
                .bind(build.as_str()),
        )
        .await?;
        Ok(())
    }

    /// Runners behind their offered build now, by runner.
    pub async fn open_notices(&self) -> Result<Vec<Notice>> {
        self.all(sqlx::query(
            "SELECT runner_id, build_id, org, channel, status, changes, noticed_at, delivery FROM runner_notices \
             WHERE cleared_at IS NULL ORDER BY runner_id",
        ))
        .await
    }
}

/// `claude-code 2.1.329 → 2.1.330, runner (none) → 0.1.0` from a changes array.
pub fn summary(changes: &serde_json::Value) -> String {
    let parts: Vec<String> = changes
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            format!(
                "{} {} → {}",
                crate::text::clean(c["component"].as_str().unwrap_or("?")),
                crate::text::clean(c["from"].as_str().unwrap_or("(none)")),
                crate::text::clean(c["to"].as_str().unwrap_or("(removed)"))
            )
        })
        .collect();
    if parts.is_empty() {
        "no component changes".into()
    } else {
        parts.join(", ")
    }
}

from_row!(Notice {
    runner_id: text,
    build_id: parsed,
    org: opt_text,
    channel: parsed,
    status: text,
    changes: json,
    noticed_at: text,
    delivery: opt_text,
});
