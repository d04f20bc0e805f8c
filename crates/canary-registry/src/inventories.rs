//! Each build's CLI inventories: what its CLIs printed over every recorded run (event kinds,
//! fields and their JSON types) and the flags their `--help` lists, merged run by run. `canary
//! drift` compares two builds by them.

use super::{Registry, db_err, now, text};
use crate::error::Result;
use crate::report::RunReport;
use crate::row::Col;
use crate::runner::inventory::Inventory;
use canary_contract::BuildId;

impl Registry {
    /// Merges the inventories of `report`'s cases into their builds' stored ones; returns how
    /// many (build, CLI) inventories changed.
    pub async fn record_inventories(&self, report: &RunReport) -> Result<usize> {
        let images = if report.images.is_empty() {
            std::slice::from_ref(&report.image)
        } else {
            &report.images[..]
        };
        // One merged inventory per build and CLI from this run first, then one write each.
        let mut merged: std::collections::BTreeMap<(String, String), Inventory> = Default::default();
        for case in &report.cases {
            let Some(inv) = &case.inventory else { continue };
            let build = images.iter().find(|i| i.reference == case.image).unwrap_or(&images[0]);
            merged
                .entry((build.id.clone(), inv.provider.clone()))
                .and_modify(|m| m.merge(inv))
                .or_insert_with(|| inv.clone());
        }
        let mut changed = 0;
        for ((build, provider), inv) in merged {
            let mut tx = self.write_tx().await?;
            // Read, merge, write: on PostgreSQL two recorders of one build and CLI take turns
            // (SQLite's write transaction is already exclusive), so neither loses the other's.
            if self.dialect() == super::Dialect::Postgres {
                sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))::text")
                    .bind(format!("build_inventories/{build}/{provider}"))
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err(&self.display))?;
            }
            let stored = sqlx::query("SELECT inventory FROM build_inventories WHERE build_id = $1 AND provider = $2")
                .bind(&build)
                .bind(&provider)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err(&self.display))?;
            let mut all = match stored {
                Some(r) => crate::row::Col::json::<Inventory>(&r, "inventory")?,
                None => Inventory::new(&inv.provider, &inv.version),
            };
            let before = all.clone();
            // Counts grow with every run; what a comparison reads is the shape.
            all.merge(&inv);
            let same_shape = before.same_shape(&all);
            sqlx::query(
                "INSERT INTO build_inventories (build_id, provider, cli_version, inventory, updated_at) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (build_id, provider) DO UPDATE SET cli_version = excluded.cli_version, inventory = excluded.inventory, updated_at = excluded.updated_at",
            )
            .bind(&build)
            .bind(&provider)
            .bind(&all.version)
            .bind(serde_json::to_string(&all).expect("inventory serializes"))
            .bind(now())
            .execute(&mut *tx)
            .await
            .map_err(db_err(&self.display))?;
            tx.commit().await.map_err(db_err(&self.display))?;
            changed += usize::from(!same_shape);
        }
        Ok(changed)
    }

    /// A build's inventories, one per CLI.
    pub async fn inventories(&self, build: &BuildId) -> Result<Vec<Inventory>> {
        let rows = self
            .rows(
                sqlx::query("SELECT inventory FROM build_inventories WHERE build_id = $1 ORDER BY provider")
                    .bind(build.as_str()),
            )
            .await?;
        rows.iter()
            .map(|r| self.cell(crate::row::Col::json(r, "inventory")))
            .collect()
    }

    /// The build to compare `build`'s `provider` inventory with when none is named: the newest
    /// build recorded before it with an inventory of that CLI, preferring one at another version.
    /// `None` for the first build of a CLI (a newer build is never the baseline).
    pub async fn inventory_baseline(&self, build: &BuildId, provider: &str) -> Result<Option<BuildId>> {
        let rows = self.rows(sqlx::query(
            "SELECT i.build_id, i.cli_version, b.created_at FROM build_inventories i JOIN runner_builds b ON b.id = i.build_id \
             WHERE i.provider = $1 AND i.build_id <> $2 ORDER BY b.created_at DESC, i.build_id",
        )
        .bind(provider)
        .bind(build.as_str())).await?;
        let mine = self.maybe_row(sqlx::query("SELECT i.cli_version, b.created_at FROM build_inventories i JOIN runner_builds b ON b.id = i.build_id WHERE i.build_id = $1 AND i.provider = $2")
            .bind(build.as_str())
            .bind(provider)).await?;
        let Some(mine) = mine else { return Ok(None) };
        let (version, created) = (text(&mine, "cli_version")?, text(&mine, "created_at")?);
        // (build, version) of each build recorded before this one, newest first.
        let mut earlier = Vec::new();
        for r in &rows {
            if text(r, "created_at")? < created {
                earlier.push((self.cell(r.parsed::<BuildId>("build_id"))?, text(r, "cli_version")?));
            }
        }
        let other_version = earlier.iter().find(|(_, v)| *v != version);
        Ok(other_version.or(earlier.first()).map(|(b, _)| b.clone()))
    }
}
