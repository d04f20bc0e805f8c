//! Reads, and the writes of the gate (promotions, pins, rollbacks, audit). Placeholders are
//! `$n`, which both SQLite and PostgreSQL accept.

use super::record::ResultStatus;
use super::{Registry, db_err, now};
use crate::CellEvidence;
use crate::error::{LabError, Result};
use crate::row::{Cell, Col, FromRow};
use canary_contract::oci::PushedRef;
use canary_contract::{BuildId, Channel};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct BuildRow {
    pub id: BuildId,
    pub image_ref: String,
    pub runner_version: String,
    pub adapters: serde_json::Value,
    pub runtime_versions: serde_json::Value,
    /// What the build holds, component by component (`None` for images without a manifest).
    pub manifest: Option<crate::builds::BuildManifest>,
    /// Where the build was published (`canary images push`), if it was.
    pub pushed_ref: Option<PushedRef>,
    pub created_at: String,
    pub results: i64,
    pub passing: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ResultRow {
    pub build_id: BuildId,
    pub run_id: String,
    pub suite: String,
    pub repo: String,
    /// The CLI of the build the case judged; `None` for suites that judge the build as a whole.
    pub provider: Option<canary_contract::Provider>,
    pub case_id: String,
    pub status: ResultStatus,
    pub attempts: i64,
    pub duration_ms: i64,
    pub report_path: String,
    pub recorded_at: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Release {
    pub channel: Channel,
    pub build_id: BuildId,
    pub image_ref: String,
    /// Where the build was published, if it was (`canary images push`).
    pub pushed_ref: Option<PushedRef>,
    pub released_at: String,
    pub actor: String,
    pub kind: ReleaseKind,
}

/// How a build became its channel's current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReleaseKind {
    /// Through the gate, or as a completed staged rollout.
    Promote,
    /// Back to the channel's previous known-good build.
    Rollback,
}

canary_contract::words!(ReleaseKind, "a release kind", { Promote => "promote", Rollback => "rollback" });

/// How an org came to run what it runs: an operator's pin, or a rollback to the build before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PinChange {
    Pin,
    Rollback,
}

canary_contract::words!(PinChange, "a pin change", { Pin => "pin", Rollback => "rollback" });

#[derive(Debug, Clone, Serialize)]
pub struct OrgPin {
    pub org: String,
    pub channel: Channel,
    /// `None`: the org follows its channel.
    pub pinned_build_id: Option<BuildId>,
    pub since: String,
    pub actor: String,
}

/// Filters of the audit log (empty: no filter).
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct AuditFilter {
    pub actor: String,
    pub action: String,
    pub target: String,
    pub since: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct AuditRow {
    pub id: i64,
    pub ts: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub decision: String,
    pub reason: String,
    pub evidence: serde_json::Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct VersionRow {
    pub provider: canary_contract::Provider,
    pub version: String,
    pub released_at: Option<String>,
    pub source: String,
    pub channel: String,
    /// The package release that carries it (`claude-agent-sdk` 0.2.186 for Claude Code 2.1.329).
    pub package: Option<String>,
    pub package_version: Option<String>,
}

/// An upstream version the candidate policy skipped, and why.
#[derive(Debug, Clone, Serialize)]
pub struct SkippedVersion {
    pub provider: canary_contract::Provider,
    pub package_version: String,
    pub version: String,
    pub source: String,
    pub released_at: Option<String>,
    pub reason: String,
    pub seen_at: String,
}

/// The pipeline's verdict on one candidate.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineVerdict {
    pub provider: canary_contract::Provider,
    pub package_version: String,
    pub version: String,
    pub build_id: Option<BuildId>,
    pub status: Light,
    pub channel: Option<Channel>,
    pub summary: serde_json::Value,
    pub decided_at: String,
}

/// A candidate's verdict as the pipeline gives it: `green` (passed, promoted), `yellow` (passed
/// with flaky cases, or the gate refused), `red` (a suite failed), `error` (the lab could not
/// judge it: judged again on the next run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Light {
    Green,
    Yellow,
    Red,
    Error,
}

canary_contract::words!(Light, "a verdict", { Green => "green", Yellow => "yellow", Red => "red", Error => "error" });

/// What a deployed runner last reported.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Heartbeat {
    pub runner_id: String,
    #[serde(default)]
    pub org: Option<String>,
    #[serde(default)]
    pub channel: Option<Channel>,
    pub versions: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub capabilities: Vec<String>,
    pub sent_at: String,
    #[serde(default)]
    pub received_at: String,
}

/// One audit entry to append.
pub struct Audit<'a> {
    pub actor: &'a str,
    pub action: &'a str,
    pub target: &'a str,
    pub decision: &'a str,
    pub reason: &'a str,
    pub evidence: serde_json::Value,
}

from_row!(BuildRow {
    id: parsed,
    image_ref: text,
    runner_version: text,
    adapters: json,
    runtime_versions: json,
    manifest: opt_json,
    pushed_ref: opt_parsed,
    created_at: text,
    results: int,
    passing: int,
});

impl FromRow for ResultRow {
    fn from_row(r: &sqlx::any::AnyRow) -> Cell<Self> {
        Ok(ResultRow {
            build_id: r.parsed("build_id")?,
            run_id: r.text("run_id")?,
            suite: r.text("suite")?,
            repo: r.text("repo")?,
            provider: r.blank_or_parsed("provider")?,
            case_id: r.text("case_id")?,
            status: ResultStatus::from_word(&r.text("status")?),
            attempts: r.int("attempts")?,
            duration_ms: r.int("duration_ms")?,
            report_path: r.text("report_path")?,
            recorded_at: r.text("recorded_at")?,
        })
    }
}

/// A build with its result counts, counted per build through the (build_id, ...) index: no join
/// to group and sort. Callers add the WHERE and ORDER BY.
const BUILD_SELECT: &str = "SELECT b.id, b.image_ref, b.runner_version, b.adapters, b.runtime_versions, b.manifest, b.pushed_ref, b.created_at, \
     (SELECT COUNT(*) FROM compat_results r WHERE r.build_id = b.id) AS results, \
     (SELECT COUNT(*) FROM compat_results r WHERE r.build_id = b.id AND r.status = 'pass') AS passing \
     FROM runner_builds b";

impl Registry {
    /// A build by full id, id prefix (with or without `sha256:`, at least 6 hex digits) or the
    /// image reference it was recorded under.
    pub async fn resolve_build(&self, name: &str) -> Result<BuildId> {
        let hex = name.trim_start_matches("sha256:");
        // Not a digest prefix: a pattern no id matches (ids start with `sha256:`).
        let prefix = if hex.len() >= 6 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
            format!("sha256:{hex}%")
        } else {
            "-".to_string()
        };
        let rows = self.rows(sqlx::query(
            "SELECT id FROM runner_builds WHERE id = $1 OR image_ref = $1 OR id LIKE $2 ORDER BY created_at DESC",
        )
        .bind(name)
        .bind(&prefix)).await?;
        let mut ids = rows
            .iter()
            .map(|r| self.cell(r.parsed("id")))
            .collect::<Result<Vec<BuildId>>>()?;
        ids.dedup();
        match ids.len() {
            1 => Ok(ids.remove(0)),
            0 => Err(LabError::usage(
                format!("unknown build `{name}`"),
                "`canary registry builds` lists the builds the registry knows (a build is recorded by `canary run`)",
            )),
            _ => Err(LabError::usage(
                format!("`{name}` matches {} builds", ids.len()),
                format!("use more of the digest: {}", ids.join(", ")),
            )),
        }
    }

    /// The runner version a build (digest, prefix or image reference) was recorded with.
    pub async fn runner_version(&self, build: &BuildId) -> Result<String> {
        let id = self.resolve_build(build).await?;
        Ok(self
            .builds()
            .await?
            .into_iter()
            .find(|x| x.id == id)
            .map(|x| x.runner_version)
            .unwrap_or_default())
    }

    pub async fn builds(&self) -> Result<Vec<BuildRow>> {
        let sql = format!("{BUILD_SELECT} ORDER BY b.created_at DESC");
        self.all(sqlx::query(sqlx::AssertSqlSafe(sql))).await
    }

    /// The newest `limit` builds that have results (the dashboard's history columns).
    pub async fn recent_builds(&self, limit: i64) -> Result<Vec<BuildRow>> {
        let sql = format!(
            "{BUILD_SELECT} WHERE EXISTS (SELECT 1 FROM compat_results r WHERE r.build_id = b.id) \
             ORDER BY b.created_at DESC LIMIT $1"
        );
        self.all(sqlx::query(sqlx::AssertSqlSafe(sql)).bind(limit)).await
    }

    /// One build by its full id.
    /// Records where `build` was published; a later push of the same build replaces it.
    pub async fn record_push(&self, build: &BuildId, pushed: &PushedRef) -> Result<()> {
        let n = self
            .exec(
                sqlx::query("UPDATE runner_builds SET pushed_ref = $1 WHERE id = $2")
                    .bind(pushed.to_string())
                    .bind(build.as_str()),
            )
            .await?
            .rows_affected();
        if n == 0 {
            return Err(LabError::usage(
                format!("build {} is not in the registry", build.short()),
                "record it first: a build is recorded by `canary run` or `canary images push`",
            ));
        }
        Ok(())
    }

    /// Where `build` was published, if it was.
    pub async fn pushed_ref(&self, build: &BuildId) -> Result<Option<PushedRef>> {
        let row = self
            .maybe_row(sqlx::query("SELECT pushed_ref FROM runner_builds WHERE id = $1").bind(build.as_str()))
            .await?;
        match row {
            Some(r) => self.cell(r.opt_parsed("pushed_ref")),
            None => Ok(None),
        }
    }

    /// One build's row, read by its id (not the whole table).
    pub async fn build_row(&self, id: &BuildId) -> Result<Option<BuildRow>> {
        let sql = format!("{BUILD_SELECT} WHERE b.id = $1");
        let row = self
            .maybe_row(sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id.as_str()))
            .await?;
        row.map(|r| self.read_one(&r)).transpose()
    }

    pub async fn results(&self, build: Option<&str>, limit: i64) -> Result<Vec<ResultRow>> {
        self.all(sqlx::query(
            "SELECT build_id, run_id, suite, repo, provider, case_id, status, attempts, duration_ms, report_path, recorded_at FROM compat_results \
             WHERE ($1 = '' OR build_id = $1) ORDER BY id DESC LIMIT $2",
        )
        .bind(build.unwrap_or(""))
        .bind(limit)).await
    }

    /// The latest result of every (suite, repo, provider) cell of `build`.
    pub async fn latest_cells(&self, build: &BuildId) -> Result<Vec<ResultRow>> {
        self.all(sqlx::query(
            "SELECT r.build_id, r.run_id, r.suite, r.repo, r.provider, r.case_id, r.status, r.attempts, r.duration_ms, r.report_path, r.recorded_at \
             FROM compat_results r JOIN (SELECT MAX(id) AS id FROM compat_results WHERE build_id = $1 GROUP BY suite, repo, provider) latest ON latest.id = r.id \
             ORDER BY r.suite, r.repo, r.provider",
        )
        .bind(build.as_str())).await
    }

    /// Evidence for the gate: the build's latest results, laid on the cells the policy requires
    /// (see [`crate::required_cells`]).
    pub async fn evidence(
        &self,
        build: &BuildId,
        suites: &[String],
        repos: &[String],
        providers: &[canary_contract::Provider],
    ) -> Result<Vec<CellEvidence>> {
        let cells = self.latest_cells(build).await?;
        Ok(crate::required_cells(&cells, suites, repos, providers))
    }

    pub async fn versions(&self) -> Result<Vec<VersionRow>> {
        self.all(sqlx::query("SELECT provider, version, released_at, source, channel, package, package_version FROM runtime_versions ORDER BY provider, recorded_at DESC")).await
    }

    /// Records every new upstream version in one transaction: all or nothing. Returns how many
    /// were new.
    pub async fn record_versions(&self, rows: &[VersionRow]) -> Result<usize> {
        // Nothing new: no write transaction (on SQLite it would wait for the writer's lock).
        if rows.is_empty() {
            return Ok(0);
        }
        let mut tx = self.write_tx().await?;
        let mut added = 0;
        for v in rows {
            let r = sqlx::query(
                "INSERT INTO runtime_versions (provider, version, released_at, source, channel, recorded_at, package, package_version) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (provider, version) DO NOTHING",
            )
            .bind(v.provider.name())
            .bind(&v.version)
            .bind(v.released_at.as_deref())
            .bind(&v.source)
            .bind(&v.channel)
            .bind(now())
            .bind(v.package.as_deref())
            .bind(v.package_version.as_deref())
            .execute(&mut *tx)
            .await
            .map_err(db_err(&self.display))?;
            added += r.rows_affected() as usize;
        }
        tx.commit().await.map_err(db_err(&self.display))?;
        Ok(added)
    }

    pub async fn verdicts(&self) -> Result<Vec<PipelineVerdict>> {
        self.all(sqlx::query(
            "SELECT provider, package_version, version, build_id, status, channel, summary, decided_at \
             FROM candidate_verdicts ORDER BY decided_at DESC",
        ))
        .await
    }

    /// Records (or, when a candidate is judged again, replaces) a verdict, with an audit entry.
    pub async fn record_verdict(&self, v: &PipelineVerdict, a: Audit<'_>) -> Result<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO candidate_verdicts (provider, package_version, version, build_id, status, channel, summary, decided_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (provider, package_version) DO UPDATE SET \
             version = excluded.version, build_id = excluded.build_id, status = excluded.status, \
             channel = excluded.channel, summary = excluded.summary, decided_at = excluded.decided_at",
        )
        .bind(v.provider.name())
        .bind(&v.package_version)
        .bind(&v.version)
        .bind(v.build_id.as_deref())
        .bind(v.status.as_str())
        .bind(v.channel.as_deref())
        .bind(v.summary.to_string())
        .bind(&v.decided_at)
        .execute(&mut *tx)
        .await
        .map_err(db_err(&self.display))?;
        insert_audit(&mut tx, &a, &self.display).await?;
        tx.commit().await.map_err(db_err(&self.display))?;
        Ok(())
    }

    /// Stores a runner's heartbeat (the newest per runner wins).
    /// Keeps the newest heartbeat per runner: one that arrives late (sent before the stored
    /// one) changes nothing. `sent_at` is normalised UTC, so text order is time order.
    pub async fn record_heartbeat(&self, h: &Heartbeat) -> Result<()> {
        self.exec(
            sqlx::query(
                "INSERT INTO runner_heartbeats (runner_id, org, channel, versions, capabilities, sent_at, received_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (runner_id) DO UPDATE SET \
             org = excluded.org, channel = excluded.channel, versions = excluded.versions, \
             capabilities = excluded.capabilities, sent_at = excluded.sent_at, received_at = excluded.received_at \
             WHERE runner_heartbeats.sent_at <= excluded.sent_at",
            )
            .bind(&h.runner_id)
            .bind(h.org.as_deref())
            .bind(h.channel.as_deref())
            .bind(serde_json::to_string(&h.versions).expect("json"))
            .bind(serde_json::to_string(&h.capabilities).expect("json"))
            .bind(&h.sent_at)
            .bind(now()),
        )
        .await?;
        Ok(())
    }

    pub async fn heartbeats(&self) -> Result<Vec<Heartbeat>> {
        self.all(sqlx::query(
            "SELECT runner_id, org, channel, versions, capabilities, sent_at, received_at FROM runner_heartbeats ORDER BY runner_id",
        )).await
    }

    /// A channel's known-good history, newest first.
    pub async fn releases(&self, channel: Option<&Channel>, limit: i64) -> Result<Vec<Release>> {
        self.all(sqlx::query(
            "SELECT c.channel, c.build_id, b.image_ref, b.pushed_ref, c.released_at, c.actor, c.kind FROM channel_releases c JOIN runner_builds b ON b.id = c.build_id \
             WHERE ($1 = '' OR c.channel = $1) ORDER BY c.id DESC LIMIT $2",
        )
        .bind(channel.map_or("", Channel::as_str))
        .bind(limit)).await
    }

    /// Distinct builds of a channel's history, newest first: [current, previous, ...].
    pub async fn known_good(&self, channel: &Channel) -> Result<Vec<Release>> {
        let mut seen = std::collections::HashSet::new();
        Ok(self
            .releases(Some(channel), 1000)
            .await?
            .into_iter()
            .filter(|r| seen.insert(r.build_id.clone()))
            .collect())
    }

    /// Channels that have a release history, sorted.
    pub async fn channels(&self) -> Result<Vec<Channel>> {
        let mut names: Vec<Channel> = self
            .releases(None, 10_000)
            .await?
            .into_iter()
            .map(|r| r.channel)
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    pub async fn pins(&self) -> Result<Vec<OrgPin>> {
        self.all(sqlx::query(
            "SELECT org, channel, pinned_build_id, since, actor FROM org_runtime_pins ORDER BY org",
        ))
        .await
    }

    /// One page of the audit log, newest first, filtered by exact actor and action, a target
    /// substring and a start time (empty strings filter nothing).
    pub async fn audit_page(&self, f: &AuditFilter, limit: i64, offset: i64) -> Result<Vec<AuditRow>> {
        self.all(sqlx::query(
            "SELECT id, ts, actor, action, target, decision, reason, evidence FROM audit_log \
             WHERE ($1 = '' OR actor = $1) AND ($2 = '' OR action = $2) AND ($3 = '' OR target LIKE $4) AND ($5 = '' OR ts >= $5) \
             ORDER BY id DESC LIMIT $6 OFFSET $7",
        )
        .bind(&f.actor)
        .bind(&f.action)
        .bind(&f.target)
        .bind(format!("%{}%", f.target.replace(['%', '_'], "")))
        .bind(&f.since)
        .bind(limit)
        .bind(offset)).await
    }

    pub async fn audit_log(&self, limit: i64) -> Result<Vec<AuditRow>> {
        self.audit_page(&AuditFilter::default(), limit, 0).await
    }

    /// Appends to the audit log on its own (refusals, which change nothing else).
    pub async fn audit(&self, a: Audit<'_>) -> Result<()> {
        let mut tx = self.write_tx().await?;
        insert_audit(&mut tx, &a, &self.display).await?;
        tx.commit().await.map_err(db_err(&self.display))
    }

    /// Makes `build` the channel's current build (a promotion or a rollback) and audits it,
    /// in one transaction.
    pub async fn release(&self, channel: &Channel, build: &BuildId, kind: ReleaseKind, a: Audit<'_>) -> Result<()> {
        let from = self.known_good(channel).await?.first().map(|r| r.build_id.clone());
        let mut tx = self.write_tx().await?;
        let ts = now();
        sqlx::query(
            "INSERT INTO channel_releases (channel, build_id, released_at, actor, kind) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(channel.as_str())
        .bind(build.as_str())
        .bind(&ts)
        .bind(a.actor)
        .bind(kind.as_str())
        .execute(&mut *tx)
        .await
        .map_err(db_err(&self.display))?;
        let event = Rollout {
            org: None,
            channel,
            from: from.as_deref(),
            to: build,
            kind: kind.as_str(),
            ts: &ts,
            actor: a.actor,
        };
        insert_rollout(&mut tx, &event, &self.display).await?;
        if channel.is_stable() && kind == ReleaseKind::Promote {
            super::sweeps::enqueue_sweeps(&mut tx, build, &ts, &self.display).await?;
        }
        insert_audit(&mut tx, &a, &self.display).await?;
        tx.commit().await.map_err(db_err(&self.display))
    }

    /// Sets what an org runs (`build: None` follows the channel) and audits it.
    pub async fn set_pin(
        &self,
        org: &str,
        channel: &Channel,
        build: Option<&BuildId>,
        from: Option<&BuildId>,
        kind: PinChange,
        a: Audit<'_>,
    ) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let ts = now();
        sqlx::query(
            "INSERT INTO org_runtime_pins (org, channel, pinned_build_id, since, actor) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (org) DO UPDATE SET channel = excluded.channel, pinned_build_id = excluded.pinned_build_id, since = excluded.since, actor = excluded.actor",
        )
        .bind(org)
        .bind(channel.as_str())
        .bind(build.map(BuildId::as_str))
        .bind(&ts)
        .bind(a.actor)
        .execute(&mut *tx)
        .await
        .map_err(db_err(&self.display))?;
        let to = match build {
            Some(b) => Some(b.clone()),
            None => self.known_good(channel).await?.first().map(|r| r.build_id.clone()),
        };
        if let Some(to) = to {
            let event = Rollout {
                org: Some(org),
                channel,
                from: from.map(BuildId::as_str),
                to: &to,
                kind: kind.as_str(),
                ts: &ts,
                actor: a.actor,
            };
            insert_rollout(&mut tx, &event, &self.display).await?;
        }
        insert_audit(&mut tx, &a, &self.display).await?;
        tx.commit().await.map_err(db_err(&self.display))
    }

    /// Deletes a build, its results and its entries in older channel history (never one a
    /// channel keeps or an org runs: the caller checks) and audits it.
    pub async fn forget_build(&self, build: &BuildId, a: Audit<'_>) -> Result<u64> {
        let mut tx = self.write_tx().await?;
        // Its place in older channel history goes with it (the audit log keeps the record):
        // no rollback can return to a build that is gone. The results come first: their count
        // is what the caller reports.
        let mut results = None;
        for statement in [
            "DELETE FROM compat_results WHERE build_id = $1",
            "DELETE FROM build_inventories WHERE build_id = $1",
            "DELETE FROM channel_releases WHERE build_id = $1",
            "DELETE FROM runner_builds WHERE id = $1",
        ] {
            let r = sqlx::query(statement)
                .bind(build.as_str())
                .execute(&mut *tx)
                .await
                .map_err(db_err(&self.display))?;
            results.get_or_insert(r.rows_affected());
        }
        insert_audit(&mut tx, &a, &self.display).await?;
        tx.commit().await.map_err(db_err(&self.display))?;
        Ok(results.unwrap_or(0))
    }

    /// Records an upstream runtime version (first sighting wins).
    pub async fn record_version(&self, v: &VersionRow) -> Result<bool> {
        let r = self.exec(sqlx::query(
            "INSERT INTO runtime_versions (provider, version, released_at, source, channel, recorded_at) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (provider, version) DO NOTHING",
        )
        .bind(v.provider.name())
        .bind(&v.version)
        .bind(v.released_at.as_deref())
        .bind(&v.source)
        .bind(&v.channel)
        .bind(now())).await?;
        Ok(r.rows_affected() > 0)
    }

    /// Records what a watch skipped (the latest reason per version wins).
    pub async fn record_skipped(&self, rows: &[SkippedVersion]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = self.write_tx().await?;
        for v in rows {
            sqlx::query(
                "INSERT INTO skipped_versions (provider, package_version, version, source, released_at, reason, seen_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (provider, package_version) DO UPDATE SET version = excluded.version, source = excluded.source, \
                 released_at = excluded.released_at, reason = excluded.reason, seen_at = excluded.seen_at",
            )
            .bind(v.provider.name())
            .bind(&v.package_version)
            .bind(&v.version)
            .bind(&v.source)
            .bind(v.released_at.as_deref())
            .bind(&v.reason)
            .bind(&v.seen_at)
            .execute(&mut *tx)
            .await
            .map_err(db_err(&self.display))?;
        }
        tx.commit().await.map_err(db_err(&self.display))
    }

    /// Skipped versions, most recently seen first.
    pub async fn skipped_versions(&self, limit: i64) -> Result<Vec<SkippedVersion>> {
        self.all(sqlx::query(
            "SELECT provider, package_version, version, source, released_at, reason, seen_at FROM skipped_versions ORDER BY seen_at DESC, provider, package_version LIMIT $1",
        )
        .bind(limit)).await
    }

    /// Row counts, for `canary registry` summaries and tests.
    pub async fn count(&self, table: Table) -> Result<i64> {
        let sql = match table {
            Table::Results => "SELECT COUNT(*) AS n FROM compat_results",
            Table::Builds => "SELECT COUNT(*) AS n FROM runner_builds",
            Table::Audit => "SELECT COUNT(*) AS n FROM audit_log",
        };
        let row = self.row(sqlx::query(sql)).await?;
        crate::int(&row, "n")
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Table {
    Results,
    Builds,
    Audit,
}

/// One row of `rollout_events`: what an org or a channel switched from and to.
pub(super) struct Rollout<'a> {
    org: Option<&'a str>,
    channel: &'a str,
    from: Option<&'a str>,
    to: &'a str,
    kind: &'a str,
    ts: &'a str,
    actor: &'a str,
}

pub(super) async fn insert_rollout(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    r: &Rollout<'_>,
    display: &str,
) -> Result<()> {
    sqlx::query("INSERT INTO rollout_events (org, channel, from_build, to_build, kind, ts, actor) VALUES ($1, $2, $3, $4, $5, $6, $7)")
        .bind(r.org)
        .bind(r.channel)
        .bind(r.from)
        .bind(r.to)
        .bind(r.kind)
        .bind(r.ts)
        .bind(r.actor)
        .execute(&mut **tx)
        .await
        .map_err(db_err(display))?;
    Ok(())
}

pub(crate) async fn insert_audit(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    a: &Audit<'_>,
    display: &str,
) -> Result<()> {
    sqlx::query("INSERT INTO audit_log (ts, actor, action, target, decision, reason, evidence) VALUES ($1, $2, $3, $4, $5, $6, $7)")
        .bind(now())
        .bind(a.actor)
        .bind(a.action)
        .bind(a.target)
        .bind(a.decision)
        .bind(a.reason)
        .bind(a.evidence.to_string())
        .execute(&mut **tx)
        .await
        .map_err(db_err(display))?;
    Ok(())
}

from_row!(VersionRow {
    provider: parsed,
    version: text,
    released_at: opt_text,
    source: text,
    channel: text,
    package: opt_text,
    package_version: opt_text,
});

from_row!(PipelineVerdict {
    provider: parsed,
    package_version: text,
    version: text,
    build_id: opt_parsed,
    status: parsed,
    channel: opt_parsed,
    summary: json,
    decided_at: text,
});

from_row!(Heartbeat {
    runner_id: text,
    org: opt_text,
    channel: opt_parsed,
    versions: json,
    capabilities: json,
    sent_at: text,
    received_at: text,
});

from_row!(Release {
    channel: parsed,
    build_id: parsed,
    image_ref: text,
    pushed_ref: opt_parsed,
    released_at: text,
    actor: text,
    kind: parsed,
});

from_row!(OrgPin {
    org: text,
    channel: parsed,
    pinned_build_id: opt_parsed,
    since: text,
    actor: text,
});

from_row!(AuditRow {
    id: int,
    ts: text,
    actor: text,
    action: text,
    target: text,
    decision: text,
    reason: text,
    evidence: json,
});

from_row!(SkippedVersion {
    provider: parsed,
    package_version: text,
    version: text,
    source: text,
    released_at: opt_text,
    reason: text,
    seen_at: text,
});
