//! The known-good registry: every case verdict, the builds they judged, what each channel and
//! org runs, and an append-only audit log. SQLite file by default, PostgreSQL by URL; one set
//! of queries (sqlx's `Any` driver), one migration folder per dialect. The only crate that
//! speaks SQL. It stores what the lab reports (`canary-lab`) and what the fleet's rules decide
//! (`canary-fleet`); the gate, the control plane and the CLI above read and write through it.

// The layers below, at the paths this crate's modules have always used.
use canary_contract::text;
use canary_fleet::{otlp, rollout, telemetry, tokens};
use canary_lab::{builds, report};
use canary_runner::{error, fsutil, runner};

#[macro_use]
mod row;
mod alerts;
mod authority;
mod evidence;
mod fleet;
mod inventories;
mod lease;
mod migrations;
mod notices;
mod otel;
mod queries;
mod record;
mod recorder;
mod sweeps;
mod tuf;
pub mod view;

pub use alerts::*;
pub use authority::*;
pub use evidence::{CellEvidence, required_cells};
pub use fleet::*;
pub use lease::Lease;
pub use notices::*;
pub use otel::OtelSession;
pub use queries::*;
pub use record::*;
pub use recorder::Recorder;
pub use sweeps::*;

use crate::error::{LabError, Result};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_PATH: &str = ".canary/registry.db";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct Registry {
    pool: AnyPool,
    dialect: Dialect,
    /// SQLite has one writer: writers of this process queue here rather than in SQLite's busy
    /// handler, which sleeps in growing steps and turns contention into idle time.
    writer: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// The URL with any password masked, for messages.
    pub display: String,
    /// A SQLite registry's file.
    path: Option<PathBuf>,
}

/// Whether a command may create or change the registry. Read-only commands (`status`,
/// `registry builds`, `compat check`, ...) open an existing registry and never create one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    ReadWrite,
    /// Writes to a registry that must exist already: a command about recorded builds
    /// (promote, rollback, forget) has nothing to do on a new one, so it creates none.
    WriteExisting,
    ReadOnly,
}

/// Where a registry URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    dialect: Dialect,
    /// The connection URL without SQLite's `mode` (added once the file has been looked at).
    url: String,
    /// The SQLite file, when the registry is one.
    path: Option<PathBuf>,
}

const URL_HELP: &str =
    "the registry is --registry or `registry:` in canary.yaml: a SQLite file path, `sqlite:PATH`, or a postgres:// URL";

/// `postgres://…` / `postgresql://…` as is; `sqlite:PATH` and plain paths are SQLite files; any
/// other `scheme://` is an error (a typo must not become a file of that name).
fn resolve(url: &str) -> Result<Target> {
    if url.trim().is_empty() {
        return Err(LabError::usage("the registry URL is empty", URL_HELP));
    }
    if url.chars().any(char::is_control) {
        return Err(LabError::usage(
            format!(
                "the registry URL {} contains control characters",
                crate::text::clean(url)
            ),
            URL_HELP,
        ));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Target {
            dialect: Dialect::Postgres,
            url: url.to_string(),
            path: None,
        });
    }
    let path = if let Some(rest) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        if !query.is_empty() {
            return Err(LabError::usage(
                format!("registry {url}: SQLite options in the URL are not supported"),
                "give the file alone (`sqlite:.canary/registry.db`); the lab sets its own options",
            ));
        }
        path
    } else if let Some((scheme, _)) = url.split_once("://") {
        return Err(LabError::usage(
            format!(
                "registry {}: unknown URL scheme `{}`",
                mask(url),
                crate::text::clean(scheme)
            ),
            format!("{URL_HELP}; no other database is supported"),
        ));
    } else {
        url
    };
    if path.is_empty() || path == ":memory:" {
        return Err(LabError::usage(
            format!("registry {url}: no file named"),
            "a registry must outlive the command: name a file",
        ));
    }
    Ok(Target {
        dialect: Dialect::Sqlite,
        url: format!("sqlite://{path}"),
        path: Some(PathBuf::from(path)),
    })
}

/// The first 16 bytes of every SQLite database file.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Looks at a SQLite registry file before SQLite does, so that a wrong file fails at once with
/// a named cause instead of a pool timeout. Returns the `mode` to open it with.
fn check_sqlite_file(path: &Path, access: Access, display: &str) -> Result<&'static str> {
    let refuse = |message: String, help: &str| Err(LabError::usage(format!("registry {display}: {message}"), help));
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if access != Access::ReadWrite {
                return refuse(
                    "no registry there yet".into(),
                    "`canary run --promote beta` (or `./lab demo`) records the first build; or pass --registry with an existing one",
                );
            }
            let parent = path.parent().filter(|d| !d.as_os_str().is_empty());
            match parent {
                // The lab's own folder is created on first use; any other folder must exist, so
                // that a typo in a path does not create folders.
                Some(dir) if !dir.is_dir() => {
                    if dir.file_name().is_some_and(|n| n == ".canary")
                        && dir.parent().is_none_or(|p| p.as_os_str().is_empty() || p.is_dir())
                    {
                        std::fs::create_dir_all(dir).map_err(|e| LabError::write(dir, e))?;
                    } else {
                        return refuse(
                            format!("folder {} does not exist", dir.display()),
                            "check the path for a typo, or create the folder first; the lab creates only its own .canary folder",
                        );
                    }
                }
                _ => {}
            }
            return Ok("rwc");
        }
        Err(e) => return Err(LabError::read(path, e)),
    };
    if !meta.is_file() {
        return refuse("is not a file".into(), "name a SQLite file (or a postgres:// URL)");
    }
    let mut head = [0u8; 16];
    let n = {
        use std::io::Read;
        let mut f = std::fs::File::open(path).map_err(|e| LabError::read(path, e))?;
        let mut n = 0;
        while n < head.len() {
            match f.read(&mut head[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) => return Err(LabError::read(path, e)),
            }
        }
        n
    };
    if n > 0 && (n < head.len() || &head != SQLITE_MAGIC) {
        return refuse(
            "the file is not a SQLite database".into(),
            "point --registry at the lab's registry file (default .canary/registry.db) or at a new file",
        );
    }
    // The file's mode is honoured even where the user could write through it (root).
    let writable = !meta.permissions().readonly() && std::fs::OpenOptions::new().write(true).open(path).is_ok();
    match (access, writable) {
        (_, true) => Ok("rw"),
        (Access::ReadOnly, false) => Ok("ro"),
        (Access::ReadWrite | Access::WriteExisting, false) => refuse(
            "the file is read-only and this command writes to it".into(),
            "give the user write access to the file and its folder; read-only commands (status, registry builds, audit) work as is",
        ),
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

pub use canary_contract::time::{format_ts, now};

impl Registry {
    /// Opens for reading and writing (creating a SQLite file if needed) and brings the schema
    /// up to date. A database whose schema is newer than this binary knows is refused, never
    /// downgraded; another application's database is refused, never migrated.
    pub async fn open(url: &str) -> Result<Registry> {
        Self::open_with(url, Access::ReadWrite).await
    }

    /// Opens an existing registry to change it; a missing one is an error, never created.
    pub async fn open_to_change(url: &str) -> Result<Registry> {
        Self::open_with(url, Access::WriteExisting).await
    }

    /// Opens an existing registry for a command that only reads: nothing is created.
    pub async fn open_existing(url: &str) -> Result<Registry> {
        Self::open_with(url, Access::ReadOnly).await
    }

    pub async fn open_with(url: &str, access: Access) -> Result<Registry> {
        static DRIVERS: std::sync::Once = std::sync::Once::new();
        DRIVERS.call_once(sqlx::any::install_default_drivers);
        let target = resolve(url)?;
        let dialect = target.dialect;
        let display = mask(&target.url);
        let path = target.path.clone();
        let url = match &path {
            Some(p) => format!("{}?mode={}", target.url, check_sqlite_file(p, access, &display)?),
            None => target.url.clone(),
        };
        let read_only = url.ends_with("?mode=ro");
        probe(&url, dialect, &display).await?;
        let pool = AnyPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if dialect == Dialect::Sqlite {
                        // WAL lets readers run beside the one writer; the busy timeout makes
                        // concurrent writers (parallel `canary run`s) queue instead of failing.
                        let pragmas: &[&'static str] = if read_only {
                            &["PRAGMA busy_timeout = 30000", "PRAGMA foreign_keys = ON"]
                        } else {
                            &[
                                "PRAGMA busy_timeout = 30000",
                                "PRAGMA journal_mode = WAL",
                                "PRAGMA foreign_keys = ON",
                                "PRAGMA synchronous = NORMAL",
                            ]
                        };
                        for pragma in pragmas {
                            sqlx::query(*pragma).execute(&mut *conn).await?;
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
        let registry = Registry {
            pool,
            dialect,
            display,
            writer: Default::default(),
            path: path.clone(),
        };
        if read_only || access == Access::ReadOnly {
            // Read-only commands never change the file: an older schema is migrated by the next
            // command that writes.
            registry.check_schema(access == Access::ReadOnly && !read_only).await?;
            return Ok(registry);
        }
        // SQLite has no migration lock of its own: serialize first-time setup between processes.
        let _lock = match path.as_deref() {
            Some(p) => Some(crate::fsutil::lock(&p.with_extension("migrate.lock")).await?),
            None => None,
        };
        registry.migrate().await?;
        Ok(registry)
    }

    fn migrator(&self) -> &'static sqlx::migrate::Migrator {
        migrations::migrator(self.dialect)
    }

    /// The newest schema version this binary knows.
    pub fn schema_version(&self) -> i64 {
        self.migrator().iter().map(|m| m.version).max().unwrap_or(0)
    }

    /// The tables of the database (its current schema on PostgreSQL).
    async fn tables(&self) -> Result<Vec<String>> {
        let mut conn = self.pool.acquire().await.map_err(db_err(&self.display))?;
        tables(&mut conn, self.dialect, &self.display).await
    }
}

async fn tables(conn: &mut sqlx::AnyConnection, dialect: Dialect, display: &str) -> Result<Vec<String>> {
    let sql = match dialect {
        Dialect::Sqlite => {
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
        }
        Dialect::Postgres => {
            "SELECT CAST(table_name AS TEXT) AS name FROM information_schema.tables WHERE table_schema = current_schema() ORDER BY name"
        }
    };
    let rows = sqlx::query(sql).fetch_all(&mut *conn).await.map_err(db_err(display))?;
    rows.iter().map(|r| text(r, "name")).collect()
}

/// Refuses a database that holds another application's tables: a registry is created only in
/// an empty database and only ever migrated from its own history. Runs on the first connection,
/// before any setting is applied, so a refused file is left byte for byte as it was.
async fn refuse_foreign(conn: &mut sqlx::AnyConnection, dialect: Dialect, display: &str) -> Result<()> {
    let tables = tables(conn, dialect, display).await?;
    // Empty, or a registry another process is creating right now: the migrator makes its
    // bookkeeping table first and each migration's tables appear only when it commits.
    if tables.iter().all(|t| t == "_sqlx_migrations") {
        return Ok(());
    }
    let help = "point --registry at the lab's registry, a new file or an empty database; the lab never migrates another application's database";
    if !tables.iter().any(|t| t == "_sqlx_migrations") {
        let shown: Vec<String> = tables
            .iter()
            .take(5)
            .map(|t| crate::text::clean(t).into_owned())
            .collect();
        return Err(LabError::usage(
            format!(
                "registry {}: not a Canary Lab registry: it holds another application's tables ({}{})",
                display,
                shown.join(", "),
                if tables.len() > 5 { ", ..." } else { "" }
            ),
            help,
        ));
    }
    let ours = migrations::migrator(dialect).iter().next().map(|m| m.checksum.to_vec());
    let first = sqlx::query("SELECT checksum FROM _sqlx_migrations WHERE version = 1")
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_err(display))?;
    let theirs: Option<Vec<u8>> = first.and_then(|r| r.try_get::<Vec<u8>, _>("checksum").ok());
    if theirs.is_some() && theirs != ours || !tables.iter().any(|t| t == "runner_builds") {
        return Err(LabError::usage(
            format!(
                "registry {}: not a Canary Lab registry: its migration history is another application's",
                display
            ),
            help,
        ));
    }
    Ok(())
}

impl Registry {
    /// For a registry opened read-only: refuse a newer schema, and an older one when it cannot
    /// be migrated.
    async fn check_schema(&self, may_migrate: bool) -> Result<()> {
        if self.tables().await?.is_empty() {
            return Err(LabError::usage(
                format!("registry {}: the database is empty, not a registry yet", self.display),
                "`canary run --promote beta` (or `./lab demo`) records the first build",
            ));
        }
        let known = self.schema_version();
        let row = sqlx::query("SELECT MAX(version) AS v FROM _sqlx_migrations")
            .fetch_one(&self.pool)
            .await
            .map_err(db_err(&self.display))?;
        let applied: i64 = row.try_get::<Option<i64>, _>("v").ok().flatten().unwrap_or(0);
        if applied > known {
            return Err(LabError::usage(
                format!(
                    "registry {} has schema version {applied}, newer than this canary understands ({known})",
                    self.display
                ),
                "upgrade canary to the version that wrote this registry; it is never downgraded",
            ));
        }
        if applied < known {
            if may_migrate {
                return self.migrate().await;
            }
            return Err(LabError::usage(
                format!(
                    "registry {} has schema version {applied}, older than this canary's ({known}), and is read-only",
                    self.display
                ),
                "run a command that writes (e.g. `canary registry builds` with write access) to migrate it",
            ));
        }
        Ok(())
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

    /// Held around a write transaction that may meet others of this process (telemetry batches
    /// arriving together): on SQLite it queues them; on PostgreSQL it is not taken.
    pub(crate) async fn queue_writer(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match self.dialect {
            Dialect::Sqlite => Some(self.writer.lock().await),
            Dialect::Postgres => None,
        }
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// A SQLite registry's file; `None` for PostgreSQL.
    pub fn sqlite_path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }
}

/// One column of a row that has no row type (a count, an id), read loudly (see [`row`]).
pub(crate) fn text(row: &AnyRow, col: &str) -> Result<String> {
    Ok(row::Col::text(row, col)?)
}

pub(crate) fn opt_text(row: &AnyRow, col: &str) -> Result<Option<String>> {
    Ok(row::Col::opt_text(row, col)?)
}

pub(crate) fn int(row: &AnyRow, col: &str) -> Result<i64> {
    Ok(row::Col::int(row, col)?)
}

/// One plain connection first: the pool would retry a refused connection until its acquire
/// timeout, and a wrong URL should fail at once. Reads SQLite's schema (it opens lazily, so a
/// damaged file fails here) and refuses a database that belongs to something else.
async fn probe(url: &str, dialect: Dialect, display: &str) -> Result<()> {
    let probe = tokio::time::timeout(
        Duration::from_secs(10),
        <sqlx::AnyConnection as sqlx::Connection>::connect(url),
    )
    .await;
    match probe {
        Ok(Ok(mut conn)) => {
            // SQLite opens lazily: read the schema now, so a damaged file fails here.
            if dialect == Dialect::Sqlite {
                sqlx::query("SELECT COUNT(*) FROM sqlite_master")
                    .fetch_one(&mut conn)
                    .await
                    .map_err(|e| LabError::usage(
                        format!("registry {display}: the database cannot be read: {e}"),
                        "the file is damaged or not a SQLite database; restore it from a backup or point --registry at another file",
                    ))?;
            }
            refuse_foreign(&mut conn, dialect, display).await?;
            drop(conn)
        }
        Ok(Err(e)) => {
            return Err(LabError::Registry {
                url: display.to_string(),
                message: e.to_string(),
            });
        }
        Err(_) => {
            return Err(LabError::Registry {
                url: display.to_string(),
                message: "no answer within 10 s".into(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Eight `canary run`s on a new registry: one creates it while the others open it. What they
    /// see mid-creation (the migrator's bookkeeping table alone) is a registry being made, not
    /// another application's database.
    #[tokio::test]
    async fn a_registry_being_created_is_not_foreign() {
        use sqlx::Connection;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", path.display()))
            .await
            .unwrap();
        sqlx::query(
            "CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL, \
             installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, success BOOLEAN NOT NULL, \
             checksum BLOB NOT NULL, execution_time BIGINT NOT NULL)",
        )
        .execute(&mut c)
        .await
        .unwrap();
        drop(c);
        let reg = Registry::open(path.to_str().unwrap()).await.unwrap();
        assert!(reg.tables().await.unwrap().iter().any(|t| t == "runner_builds"));
    }

    /// A push is recorded with its build, read back typed, and carried by the fleet state and the
    /// channel history; a build the registry does not know cannot be given a reference.
    #[tokio::test]
    async fn a_pushed_reference_is_kept_with_its_build() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(dir.path().join("r.db").to_str().unwrap()).await.unwrap();
        let id: canary_contract::BuildId = format!("sha256:{}", "1".repeat(64)).parse().unwrap();
        let pushed: canary_contract::oci::PushedRef = format!("reg:5443/canary/builds@sha256:{}", "2".repeat(64))
            .parse()
            .unwrap();
        let missing = reg.record_push(&id, &pushed).await.unwrap_err();
        assert!(missing.to_string().contains("not in the registry"), "{missing}");
        reg.record_build(&crate::BuildInfo::from_image(
            &id,
            "canary-lab/build:k",
            &Default::default(),
        ))
        .await
        .unwrap();
        assert_eq!(reg.pushed_ref(&id).await.unwrap(), None);
        reg.record_push(&id, &pushed).await.unwrap();
        assert_eq!(reg.pushed_ref(&id).await.unwrap(), Some(pushed.clone()));
        assert_eq!(
            reg.build_row(&id).await.unwrap().unwrap().pushed_ref,
            Some(pushed.clone())
        );
        assert_eq!(reg.fleet_state().await.unwrap().pushed.get(&id), Some(&pushed));
        // A row someone wrote by hand that is not a reference fails loudly, never reads as "none".
        sqlx::query("UPDATE runner_builds SET pushed_ref = 'http://x/y@sha256:00'")
            .execute(reg.pool())
            .await
            .unwrap();
        assert!(reg.pushed_ref(&id).await.is_err());
    }

    #[test]
    fn urls_and_paths_resolve_to_their_dialect() {
        assert_eq!(resolve("postgres://u:p@h/db").unwrap().dialect, Dialect::Postgres);
        let t = resolve(".canary/registry.db").unwrap();
        assert_eq!(
            (t.dialect, t.url.as_str()),
            (Dialect::Sqlite, "sqlite://.canary/registry.db")
        );
        assert_eq!(t.path.unwrap(), PathBuf::from(".canary/registry.db"));
        assert_eq!(resolve("sqlite:x.db").unwrap().path.unwrap(), PathBuf::from("x.db"));
        for bad in [
            "mysql://root@db/canary",
            "",
            "sqlite::memory:",
            "sqlite:x.db?mode=memory",
            "a\u{1b}[2J.db",
        ] {
            assert!(resolve(bad).is_err(), "{bad:?} must be refused");
        }
        assert_eq!(
            mask("postgres://canary:secret@localhost:5432/db"),
            "postgres://canary:***@localhost:5432/db"
        );
    }
}
