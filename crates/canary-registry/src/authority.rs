//! Who may speak to the control plane: tokens (runners bound to orgs, operators with roles) and
//! the sessions the control plane assigned, which are the only sessions a runner may report.
//! Columns here decode loudly: a row that does not read is an error, never a default.

use super::queries::{Audit, insert_audit};
use super::{Dialect, Registry, db_err, format_ts, now};
use crate::error::{LabError, Result};
use crate::tokens::{Issued, Principal, Role};
use canary_contract::BuildId;
use serde::Serialize;
use sqlx::Row;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Serialize)]
pub struct TokenRow {
    pub id: String,
    #[serde(flatten)]
    pub principal: Principal,
    pub created_at: String,
    pub actor: String,
    pub revoked_at: Option<String>,
}

/// Sessions assigned are counted by build, cohort and rollup second.
pub type AssignedKey = (BuildId, String, String);

/// What a session was assigned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assigned {
    pub org: String,
    pub build: BuildId,
    /// The rollout comparison the session counts in (`rollout::cohort_label`), or `""`.
    pub cohort: String,
}

fn get<'r, T: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>>(
    r: &'r sqlx::any::AnyRow,
    col: &str,
    display: &str,
) -> Result<T> {
    r.try_get::<T, _>(col).map_err(|e| LabError::Registry {
        url: display.to_string(),
        message: format!("column {col} does not read: {e}"),
    })
}

fn principal_of(r: &sqlx::any::AnyRow, display: &str) -> Result<Principal> {
    let bad = |what: String| LabError::Registry {
        url: display.to_string(),
        message: what,
    };
    let kind: String = get(r, "kind", display)?;
    let name: String = get(r, "runner", display)?;
    match kind.as_str() {
        "runner" => {
            let orgs: Option<String> = get(r, "orgs", display)?;
            let orgs: BTreeSet<String> = match orgs {
                None => BTreeSet::new(),
                Some(text) => serde_json::from_str(&text).map_err(|e| bad(format!("token orgs `{text}`: {e}")))?,
            };
            Ok(Principal::Runner { runner: name, orgs })
        }
        "operator" => {
            let role: Option<String> = get(r, "role", display)?;
            let role = role
                .as_deref()
                .and_then(|r| r.parse::<Role>().ok())
                .ok_or_else(|| bad(format!("operator token of {name} has no valid role")))?;
            Ok(Principal::Operator { operator: name, role })
        }
        other => Err(bad(format!("unknown token kind `{other}`"))),
    }
}

impl Registry {
    pub async fn add_token(&self, t: &Issued, a: Audit<'_>) -> Result<()> {
        let (kind, orgs, role) = match &t.principal {
            Principal::Runner { orgs, .. } => ("runner", Some(serde_json::to_string(orgs).expect("json")), None),
            Principal::Operator { role, .. } => ("operator", None, Some(role.as_str())),
        };
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO runner_tokens (id, runner, token_hash, created_at, actor, kind, orgs, role) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&t.id)
        .bind(t.principal.name())
        .bind(&t.hash)
        .bind(now())
        .bind(a.actor)
        .bind(kind)
        .bind(orgs)
        .bind(role)
        .execute(&mut *tx)
        .await
        .map_err(db_err(&self.display))?;
        insert_audit(&mut tx, &a, &self.display).await?;
        tx.commit().await.map_err(db_err(&self.display))
    }

    pub async fn tokens(&self) -> Result<Vec<TokenRow>> {
        let rows = self.rows(sqlx::query(
            "SELECT id, runner, kind, orgs, role, created_at, actor, revoked_at FROM runner_tokens ORDER BY kind, runner, created_at",
        )).await?;
        rows.iter()
            .map(|r| {
                Ok(TokenRow {
                    id: get(r, "id", &self.display)?,
                    principal: principal_of(r, &self.display)?,
                    created_at: get(r, "created_at", &self.display)?,
                    actor: get(r, "actor", &self.display)?,
                    revoked_at: get(r, "revoked_at", &self.display)?,
                })
            })
            .collect()
    }

    /// Revokes the live tokens named by id, or every live token of a runner (operators' tokens
    /// are revoked by id); returns how many were revoked.
    pub async fn revoke_tokens(&self, id: Option<&str>, runner: Option<&str>, a: Audit<'_>) -> Result<u64> {
        let mut tx = self.write_tx().await?;
        let r = sqlx::query(
            "UPDATE runner_tokens SET revoked_at = $1 WHERE revoked_at IS NULL AND (($2 <> '' AND id = $2) OR ($3 <> '' AND runner = $3 AND kind = 'runner'))",
        )
        .bind(now())
        .bind(id.unwrap_or(""))
        .bind(runner.unwrap_or(""))
        .execute(&mut *tx)
        .await
        .map_err(db_err(&self.display))?;
        insert_audit(&mut tx, &a, &self.display).await?;
        tx.commit().await.map_err(db_err(&self.display))?;
        Ok(r.rows_affected())
    }

    /// Hash → whom the token speaks for, of every live token.
    pub async fn live_tokens(&self) -> Result<BTreeMap<String, Principal>> {
        let rows = self
            .rows(sqlx::query(
                "SELECT token_hash, runner, kind, orgs, role FROM runner_tokens WHERE revoked_at IS NULL",
            ))
            .await?;
        rows.iter()
            .map(|r| Ok((get(r, "token_hash", &self.display)?, principal_of(r, &self.display)?)))
            .collect()
    }

    /// Records that `session` of `runner` runs `build` for `org` (a session asked again is
    /// assigned again: the latest answer is the one its telemetry must match).
    pub async fn record_assignment(
        &self,
        runner: &str,
        session: &str,
        org: &str,
        (build, cohort): (&BuildId, &str),
        at: jiff::Timestamp,
    ) -> Result<()> {
        let _queued = self.queue_writer().await;
        self.exec(
            sqlx::query(
                "INSERT INTO session_assignments (runner, session, org, build_id, assigned_at, cohort) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (runner, session) DO UPDATE SET org = excluded.org, build_id = excluded.build_id, assigned_at = excluded.assigned_at, cohort = excluded.cohort",
            )
            .bind(runner)
            .bind(session)
            .bind(org)
            .bind(build.as_str())
            .bind(format_ts(at))
            .bind(cohort),
        )
        .await?;
        Ok(())
    }

    /// Adds counts of sessions assigned, per build and rollup second (the sample-ratio guard's
    /// denominators). `canary serve` sums them in memory and adds them once a pass: a row per
    /// assignment would make every assignment wait for the same (build, second) row lock.
    pub async fn add_assigned(&self, counts: &BTreeMap<AssignedKey, u64>) -> Result<()> {
        if counts.is_empty() {
            return Ok(());
        }
        let _queued = self.queue_writer().await;
        let mut tx = self.write_tx().await?;
        for ((build, cohort, second), n) in counts {
            sqlx::query(
                "INSERT INTO assignment_rollups (build_id, cohort, second, assigned, reported) VALUES ($1, $2, $3, $4, 0) \
                 ON CONFLICT (build_id, cohort, second) DO UPDATE SET assigned = assignment_rollups.assigned + excluded.assigned",
            )
            .bind(build.as_str())
            .bind(cohort)
            .bind(second)
            .bind(*n as i64)
            .execute(&mut *tx)
            .await
            .map_err(db_err(&self.display))?;
        }
        tx.commit().await.map_err(db_err(&self.display))
    }

    /// Forgets assignments made before `before` (telemetry older than its sessions' start bound
    /// is refused anyway); returns how many.
    pub async fn prune_assignments(&self, before: jiff::Timestamp) -> Result<u64> {
        let _queued = self.queue_writer().await;
        let r = self
            .exec(sqlx::query("DELETE FROM session_assignments WHERE assigned_at < $1").bind(super::format_ts(before)))
            .await?;
        self.prune_otel(&super::format_ts(before)).await?;
        Ok(r.rows_affected())
    }

    /// What each of `sessions` of `runner` was assigned; sessions never assigned are absent.
    pub async fn assignments(&self, runner: &str, sessions: &[&str]) -> Result<BTreeMap<String, Assigned>> {
        if sessions.is_empty() {
            return Ok(BTreeMap::new());
        }
        let ids = serde_json::to_string(sessions).expect("json");
        let sql = match self.dialect() {
            // CROSS JOIN fixes SQLite's join order: each listed session is looked up by the
            // (runner, session) key. Left to itself the planner scanned all of the runner's
            // assignments per listed session (4.7 s for a batch of 1,000 against 100,000).
            Dialect::Sqlite => {
                "SELECT a.session, a.org, a.build_id, a.cohort FROM json_each($2) j CROSS JOIN session_assignments a ON a.runner = $1 AND a.session = j.value"
            }
            Dialect::Postgres => {
                "SELECT a.session, a.org, a.build_id, a.cohort FROM session_assignments a JOIN json_array_elements_text($2::json) j(value) ON a.session = j.value WHERE a.runner = $1"
            }
        };
        let rows = self.rows(sqlx::query(sql).bind(runner).bind(ids)).await?;
        rows.iter()
            .map(|r| {
                Ok((
                    get(r, "session", &self.display)?,
                    Assigned {
                        org: get(r, "org", &self.display)?,
                        build: crate::row::Col::parsed(r, "build_id")?,
                        cohort: get(r, "cohort", &self.display)?,
                    },
                ))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Assignments are per runner: another runner's ids are not its own; old ones are pruned.
    #[tokio::test]
    async fn assignments_belong_to_their_runner_and_old_ones_go() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(dir.path().join("r.db").to_str().unwrap()).await.unwrap();
        reg.record_assignment(
            "a",
            "s1",
            "acme",
            (&"sha256:b1".parse().unwrap(), ""),
            jiff::Timestamp::now(),
        )
        .await
        .unwrap();
        reg.record_assignment(
            "a",
            "s1",
            "acme",
            (&"sha256:b2".parse().unwrap(), ""),
            jiff::Timestamp::now(),
        )
        .await
        .unwrap();
        let got = reg.assignments("a", &["s1", "s2"]).await.unwrap();
        assert_eq!(
            got.get("s1"),
            Some(&Assigned {
                org: "acme".into(),
                build: "sha256:b2".parse().unwrap(),
                cohort: String::new(),
            }),
            "asked again, the latest answer holds"
        );
        assert!(!got.contains_key("s2"));
        assert!(
            reg.assignments("b", &["s1"]).await.unwrap().is_empty(),
            "runner b does not own a's s1"
        );
        assert_eq!(
            reg.prune_assignments(jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1))
                .await
                .unwrap(),
            0
        );
        assert_eq!(
            reg.prune_assignments(jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1))
                .await
                .unwrap(),
            1
        );
        assert!(reg.assignments("a", &["s1"]).await.unwrap().is_empty());
    }
}
