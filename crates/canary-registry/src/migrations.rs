//! The registry's schema history, written once for both dialects. Each file under
//! `migrations/` is one migration; a line that starts `--sqlite:` or `--postgres:` belongs to
//! that dialect alone (the marker is cut off), every other line to both. What a dialect runs is
//! byte for byte what its own folder held before the two were merged, so the checksums sqlx
//! recorded in existing registries still match (the header comments of the early files still
//! speak of those folders; a checksum binds them).

use crate::Dialect;
use sqlx::AssertSqlSafe;
use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use std::borrow::Cow;
use std::sync::OnceLock;

/// (version, description, source). The description is sqlx's: the file name after the version,
/// `_` read as a space.
const SOURCES: &[(i64, &str, &str)] = &[
    (1, "registry", include_str!("../migrations/0001_registry.sql")),
    (2, "upstream", include_str!("../migrations/0002_upstream.sql")),
    (3, "builds", include_str!("../migrations/0003_builds.sql")),
    (4, "rollouts", include_str!("../migrations/0004_rollouts.sql")),
    (
        5,
        "skipped versions",
        include_str!("../migrations/0005_skipped_versions.sql"),
    ),
    (
        6,
        "runner notices",
        include_str!("../migrations/0006_runner_notices.sql"),
    ),
    (7, "sweeps", include_str!("../migrations/0007_sweeps.sql")),
    (8, "drift", include_str!("../migrations/0008_drift.sql")),
    (
        9,
        "runner authority",
        include_str!("../migrations/0009_runner_authority.sql"),
    ),
    (10, "tuf", include_str!("../migrations/0010_tuf.sql")),
    (
        11,
        "assignment rollups",
        include_str!("../migrations/0011_assignment_rollups.sql"),
    ),
    (
        12,
        "rollout alerts",
        include_str!("../migrations/0012_rollout_alerts.sql"),
    ),
    (
        13,
        "rollup squares",
        include_str!("../migrations/0013_rollup_squares.sql"),
    ),
    (
        14,
        "conversation cohorts",
        include_str!("../migrations/0014_conversation_cohorts.sql"),
    ),
    (15, "rings", include_str!("../migrations/0015_rings.sql")),
    (16, "otel", include_str!("../migrations/0016_otel.sql")),
    (17, "cohorts", include_str!("../migrations/0017_cohorts.sql")),
    (18, "leases", include_str!("../migrations/0018_leases.sql")),
    (19, "pushed", include_str!("../migrations/0019_pushed.sql")),
];

/// The migration text `dialect` runs.
fn render(source: &str, dialect: Dialect) -> String {
    let (ours, theirs) = match dialect {
        Dialect::Sqlite => ("--sqlite:", "--postgres:"),
        Dialect::Postgres => ("--postgres:", "--sqlite:"),
    };
    source
        .split_inclusive('\n')
        .filter(|line| !line.starts_with(theirs))
        .map(|line| line.strip_prefix(ours).unwrap_or(line))
        .collect()
}

/// The migrator of one dialect, rendered once per process.
pub(crate) fn migrator(dialect: Dialect) -> &'static Migrator {
    static SQLITE: OnceLock<Migrator> = OnceLock::new();
    static POSTGRES: OnceLock<Migrator> = OnceLock::new();
    let cell = match dialect {
        Dialect::Sqlite => &SQLITE,
        Dialect::Postgres => &POSTGRES,
    };
    cell.get_or_init(|| {
        Migrator::with_migrations(
            SOURCES
                .iter()
                .map(|&(version, description, source)| {
                    let sql = render(source, dialect);
                    let no_tx = sql.starts_with("-- no-transaction");
                    Migration::new(
                        version,
                        Cow::Borrowed(description),
                        MigrationType::Simple,
                        AssertSqlSafe(sql).into_sql_str(),
                        no_tx,
                    )
                })
                .collect(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SHA-384 of what each dialect ran before the merge, as sqlx recorded it in every registry
    /// created since (first 16 hex digits each): a rendering that changes one byte fails here,
    /// not when a user's registry refuses to open.
    const RECORDED: &[(i64, &str, &str)] = &[
        (1, "8e59ffb41d13c26f", "b7f2d86227d10a52"),
        (2, "7b2f4807dca2f0fc", "ceccbb436dd53bec"),
        (3, "3dc7c01c60c79733", "3dc7c01c60c79733"),
        (4, "d6ff527b0ce72bef", "88ca3001ec55dae9"),
        (5, "92ee33c7dd64010c", "92ee33c7dd64010c"),
        (6, "0fa5e12f8da65b45", "0fa5e12f8da65b45"),
        (7, "4c696a869c2b00f3", "db2353d65eee6127"),
        (8, "6b2534e9cff2351b", "45237eae31cf38fb"),
        (9, "749d6d6d2670c1dd", "5cbfe66fa8f6ae2d"),
        (10, "f99f7d16b30f75c7", "f99f7d16b30f75c7"),
        (11, "a4c56c5ab6623eab", "a4c56c5ab6623eab"),
        (12, "99bd9cced50e16c5", "1f15ddbf65c4e908"),
        (13, "0123b612f84fd514", "6b2b970ad9b821fd"),
        (14, "21f9b83f14169ef6", "21f9b83f14169ef6"),
        (15, "f8871a36e2bba128", "f8871a36e2bba128"),
        (16, "086b6243225987bf", "086b6243225987bf"),
        (17, "42b27cf57c696f9d", "528186890bf3bae1"),
        (18, "81e6d561ab7e1022", "81e6d561ab7e1022"),
        (19, "7a6ec51dc93a8d02", "7a6ec51dc93a8d02"),
    ];

    /// The first 16 hex digits of the checksum `dialect` records for migration `version`.
    fn checksum(dialect: Dialect, version: i64) -> Option<String> {
        let m = migrator(dialect).iter().find(|m| m.version == version)?;
        Some(m.checksum.iter().take(8).map(|b| format!("{b:02x}")).collect())
    }

    #[test]
    fn every_dialect_renders_what_existing_registries_recorded() {
        for &(version, sqlite, postgres) in RECORDED {
            assert_eq!(
                checksum(Dialect::Sqlite, version).as_deref(),
                Some(sqlite),
                "migration {version}, SQLite"
            );
            assert_eq!(
                checksum(Dialect::Postgres, version).as_deref(),
                Some(postgres),
                "migration {version}, PostgreSQL"
            );
        }
        if let Some(m) = migrator(Dialect::Sqlite).iter().nth(RECORDED.len()) {
            let v = m.version;
            panic!(
                "migration {v} has no recorded checksums: add ({v}, \"{}\", \"{}\") to RECORDED",
                checksum(Dialect::Sqlite, v).unwrap_or_default(),
                checksum(Dialect::Postgres, v).unwrap_or_default()
            );
        }
    }

    #[test]
    fn every_file_under_migrations_is_listed_in_order() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .expect("migrations/")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        let listed: Vec<String> = SOURCES
            .iter()
            .map(|(v, d, _)| format!("{v:04}_{}.sql", d.replace(' ', "_")))
            .collect();
        assert_eq!(files, listed, "add a new migration file to SOURCES");
    }

    #[test]
    fn a_marked_line_goes_to_its_dialect_alone() {
        let source = "A\n--sqlite:S INTEGER\n--postgres:P BIGINT\nB";
        assert_eq!(render(source, Dialect::Sqlite), "A\nS INTEGER\nB");
        assert_eq!(render(source, Dialect::Postgres), "A\nP BIGINT\nB");
    }
}
