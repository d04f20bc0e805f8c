//! The known-good registry: every case verdict, the builds they judged, what each channel and
//! org runs, and an append-only audit log. SQLite file by default, PostgreSQL by URL; one set
//! of queries (sqlx's `Any` driver), one migration folder per dialect. The only module that
//! speaks SQL.

mod queries;
mod record;

pub use queries::*;
pub use record::*;

use crate::error::{LabError, Result};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_PATH: &str = ".canary/registry.db";

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct Registry {
    pool: AnyPool,
    dialect: Dialect,
    /// The URL with any password masked, for messages.
    pub display: String,
}

/// `postgres://…` / `postgresql://…` as is; `sqlite:…` as is; anything else is a file path.
fn resolve(url: &str) -> (Dialect, String, Option<PathBuf>) {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        (Dialect::Postgres, url.to_string(), None)
    } else if let Some(rest) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
        let path = rest.split('?').next().unwrap_or(rest);
        (Dialect::Sqlite, url.to_string(), Some(PathBuf::from(path)))
    } else {
        (
            Dialect::Sqlite,
            format!("sqlite://{url}?mode=rwc"),
            Some(PathBuf::from(url)),
        )
    }
}

fn mask(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

pub(crate) fn db_err(display: &str) -> impl Fn(sqlx::Error) -> LabError + '_ {
    move |e| LabError::Registry {
        url: display.to_string(),
        message: e.to_string(),
    }
}

/// Now, as the registry stores times: RFC 3339 UTC with milliseconds (sorts as text).
pub fn now() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

impl Registry {
    /// Opens (creating a SQLite file if needed) and brings the schema up to date. A database
    /// whose schema is newer than this binary knows is refused, never downgraded.
    pub async fn open(url: &str) -> Result<Registry> {
        static DRIVERS: std::sync::Once = std::sync::Once::new();
        DRIVERS.call_once(sqlx::any::install_default_drivers);
        let (dialect, url, path) = resolve(url);
        let display = mask(&url);
        if let Some(dir) = path
            .as_deref()
            .and_then(Path::parent)
            .filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir).map_err(|e| LabError::write(dir, e))?;
        }
        // One plain attempt first: the pool would retry a refused connection until its acquire
        // timeout, and a wrong URL should fail at once.
        let probe = tokio::time::timeout(
            Duration::from_secs(10),
            <sqlx::AnyConnection as sqlx::Connection>::connect(&url),
        )
        .await;
        match probe {
            Ok(Ok(conn)) => drop(conn),
            Ok(Err(e)) => {
                return Err(LabError::Registry {
                    url: display,
                    message: e.to_string(),
                });
            }
            Err(_) => {
                return Err(LabError::Registry {
                    url: display,
                    message: "no answer within 10 s".into(),
                });
            }
        }
        let pool = AnyPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if dialect == Dialect::Sqlite {
                        // WAL lets readers run beside the one writer; the busy timeout makes
                        // concurrent writers (parallel `canary run`s) queue instead of failing.
                        for pragma in [
                            "PRAGMA busy_timeout = 30000",
                            "PRAGMA journal_mode = WAL",
                            "PRAGMA foreign_keys = ON",
                            "PRAGMA synchronous = NORMAL",
                        ] {
                            sqlx::query(pragma).execute(&mut *conn).await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .map_err(|e| LabError::Registry {
                url: display.clone(),
                message: e.to_string(),
            })?;
        let registry = Registry { pool, dialect, display };
        // SQLite has no migration lock of its own: serialize first-time setup between processes.
        let _lock = match path.as_deref() {
            Some(p) => Some(crate::fsutil::lock(&p.with_extension("migrate.lock")).await?),
            None => None,
        };
        registry.migrate().await?;
        Ok(registry)
    }

    fn migrator(&self) -> &'static sqlx::migrate::Migrator {
        match self.dialect {
            Dialect::Sqlite => &SQLITE_MIGRATIONS,
            Dialect::Postgres => &POSTGRES_MIGRATIONS,
        }
    }

    /// The newest schema version this binary knows.
    pub fn schema_version(&self) -> i64 {
        self.migrator().iter().map(|m| m.version).max().unwrap_or(0)
    }

    async fn migrate(&self) -> Result<()> {
        let known = self.schema_version();
        // Absent on a fresh database: the query fails and there is nothing to compare.
        if let Ok(row) = sqlx::query("SELECT MAX(version) AS v FROM _sqlx_migrations")
            .fetch_one(&self.pool)
            .await
        {
            let applied: Option<i64> = row.try_get("v").ok();
            if let Some(v) = applied.filter(|v| *v > known) {
                return Err(LabError::usage(
                    format!(
                        "registry {} has schema version {v}, newer than this canary understands ({known})",
                        self.display
                    ),
                    "upgrade canary to the version that wrote this registry; it is never downgraded",
                ));
            }
        }
        self.migrator().run(&self.pool).await.map_err(|e| LabError::Registry {
            url: self.display.clone(),
            message: format!("migration failed: {e}"),
        })
    }

    /// A write transaction. On SQLite it takes the write lock up front (`BEGIN IMMEDIATE`), so
    /// writers wait on the busy timeout instead of failing on a lock upgrade.
    pub(crate) async fn write_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        let tx = match self.dialect {
            Dialect::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Dialect::Postgres => self.pool.begin().await,
        };
        tx.map_err(db_err(&self.display))
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }
}

pub(crate) fn text(row: &AnyRow, col: &str) -> String {
    row.try_get::<String, _>(col).unwrap_or_default()
}

pub(crate) fn opt_text(row: &AnyRow, col: &str) -> Option<String> {
    row.try_get::<Option<String>, _>(col).ok().flatten()
}

pub(crate) fn int(row: &AnyRow, col: &str) -> i64 {
    row.try_get::<i64, _>(col).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_paths_resolve_to_their_dialect() {
        assert_eq!(resolve("postgres://u:p@h/db").0, Dialect::Postgres);
        let (d, url, path) = resolve(".canary/registry.db");
        assert_eq!(
            (d, url.as_str()),
            (Dialect::Sqlite, "sqlite://.canary/registry.db?mode=rwc")
        );
        assert_eq!(path.unwrap(), PathBuf::from(".canary/registry.db"));
        assert_eq!(
            mask("postgres://canary:secret@localhost:5432/db"),
            "postgres://canary:***@localhost:5432/db"
        );
    }
}
