//! Leases between `canary serve` replicas on one registry: one holder per name at a time, for
//! as long as it renews before its lease expires. The rows live in the registry, so a replica
//! that is killed loses its lease at expiry and another takes it over.

use super::{Registry, format_ts};
use crate::error::Result;
use crate::row::Col;

/// A lease as the registry has it after a try.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Lease {
    pub name: String,
    pub holder: String,
    pub acquired_at: String,
    pub expires_at: String,
}

impl Lease {
    pub fn held_by(&self, holder: &str) -> bool {
        self.holder == holder
    }
}

impl Registry {
    /// Takes or renews the lease `name` for `holder` until `now + ttl`, when it is free, expired
    /// or already `holder`'s; `take_over` takes it whoever holds it (a SQLite registry's only
    /// `canary serve`, which holds the file's lock, after a predecessor was killed). Returns the
    /// lease as it stands: held by `holder` or by another.
    pub async fn hold_lease(
        &self,
        name: &str,
        holder: &str,
        (now, ttl): (jiff::Timestamp, std::time::Duration),
        take_over: bool,
    ) -> Result<Lease> {
        let until = now + jiff::SignedDuration::try_from(ttl).unwrap_or(jiff::SignedDuration::MAX);
        let (now, until) = (format_ts(now), format_ts(until));
        let _queued = self.queue_writer().await;
        self.exec(
            sqlx::query(
                "INSERT INTO leases (name, holder, acquired_at, expires_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at, \
                 acquired_at = CASE WHEN leases.holder = excluded.holder THEN leases.acquired_at ELSE excluded.acquired_at END \
                 WHERE leases.holder = excluded.holder OR leases.expires_at < excluded.acquired_at OR $5 = 1",
            )
            .bind(name)
            .bind(holder)
            .bind(&now)
            .bind(&until)
            .bind(i64::from(take_over)),
        )
        .await?;
        self.lease(name).await.map(|l| l.expect("the lease was just written"))
    }

    /// The lease `name`, if anyone ever held it.
    pub async fn lease(&self, name: &str) -> Result<Option<Lease>> {
        let row = self
            .maybe_row(
                sqlx::query("SELECT name, holder, acquired_at, expires_at FROM leases WHERE name = $1").bind(name),
            )
            .await?;
        row.map(|r| {
            self.cell((|| {
                Ok(Lease {
                    name: r.text("name")?,
                    holder: r.text("holder")?,
                    acquired_at: r.text("acquired_at")?,
                    expires_at: r.text("expires_at")?,
                })
            })())
        })
        .transpose()
    }

    /// Gives the lease up, if `holder` has it (a replica shutting down), so another takes it at
    /// once rather than at expiry.
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        let _queued = self.queue_writer().await;
        self.exec(
            sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
                .bind(name)
                .bind(holder),
        )
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn one_holder_at_a_time_until_its_lease_expires() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(&dir.path().join("r.db").to_string_lossy())
            .await
            .unwrap();
        let t0: jiff::Timestamp = "2026-12-06T10:00:00Z".parse().unwrap();
        let ttl = Duration::from_secs(10);
        let at = |s: i64| t0 + jiff::SignedDuration::from_secs(s);
        assert!(
            reg.hold_lease("controller", "a", (at(0), ttl), false)
                .await
                .unwrap()
                .held_by("a")
        );
        // b is refused while a's lease runs, and a renews it.
        assert!(
            reg.hold_lease("controller", "b", (at(5), ttl), false)
                .await
                .unwrap()
                .held_by("a")
        );
        let renewed = reg.hold_lease("controller", "a", (at(8), ttl), false).await.unwrap();
        assert_eq!(
            (renewed.acquired_at.as_str(), renewed.expires_at.as_str()),
            ("2026-12-06T10:00:00.000Z", "2026-12-06T10:00:18.000Z")
        );
        assert!(
            reg.hold_lease("controller", "b", (at(17), ttl), false)
                .await
                .unwrap()
                .held_by("a")
        );
        // a stopped renewing: b takes it once it expired.
        let taken = reg.hold_lease("controller", "b", (at(19), ttl), false).await.unwrap();
        assert!(taken.held_by("b"));
        assert_eq!(taken.acquired_at, "2026-12-06T10:00:19.000Z");
        // Released, it is free at once; taken over, whoever held it.
        reg.release_lease("controller", "b").await.unwrap();
        assert_eq!(reg.lease("controller").await.unwrap(), None);
        assert!(
            reg.hold_lease("controller", "c", (at(20), ttl), false)
                .await
                .unwrap()
                .held_by("c")
        );
        assert!(
            reg.hold_lease("controller", "d", (at(21), ttl), true)
                .await
                .unwrap()
                .held_by("d")
        );
    }
}
