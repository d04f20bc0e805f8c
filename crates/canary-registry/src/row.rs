//! Reading rows back, loudly. Every column a row type reads goes through [`Col`]: a missing
//! column, a NULL where a value must be, a value of the wrong type or JSON that does not parse
//! is an error naming the column, never a silent `""`, `0` or default. Each row type says how it
//! is read in one [`FromRow`] impl, and [`Registry::read`](crate::Registry) turns a column error
//! into the registry's error.

use crate::error::{LabError, Result};
use crate::{Registry, db_err};
use serde::de::DeserializeOwned;
use sqlx::Row;
use sqlx::any::AnyRow;

/// A column that does not read as its row type needs: which one, and why.
#[derive(Debug)]
pub struct BadColumn(String);

impl BadColumn {
    fn new(col: &str, why: impl std::fmt::Display) -> BadColumn {
        BadColumn(format!("column `{col}` does not read: {why}"))
    }
}

pub(crate) type Cell<T> = std::result::Result<T, BadColumn>;

/// One row type, read from one row of its query.
pub(crate) trait FromRow: Sized {
    fn from_row(r: &AnyRow) -> Cell<Self>;
}

/// A row type whose every field is the column of the same name, read as `text`, `opt_text`,
/// `int`, `opt_int`, `json` or `opt_json`:
/// `from_row!(Release { channel: text, build_id: text, released_at: text })`.
macro_rules! from_row {
    ($ty:ident { $($field:ident: $how:ident),* $(,)? }) => {
        impl $crate::row::FromRow for $ty {
            fn from_row(r: &sqlx::any::AnyRow) -> $crate::row::Cell<Self> {
                use $crate::row::Col;
                Ok($ty { $($field: r.$how(stringify!($field))?),* })
            }
        }
    };
}

/// The columns of a row, each read as its type or an error.
pub(crate) trait Col {
    fn text(&self, col: &str) -> Cell<String>;
    fn opt_text(&self, col: &str) -> Cell<Option<String>>;
    fn int(&self, col: &str) -> Cell<i64>;
    fn float(&self, col: &str) -> Cell<f64>;
    fn opt_int(&self, col: &str) -> Cell<Option<i64>>;
    /// A text column holding a value of a checked type (a `BuildId`, a `Channel`).
    fn parsed<T: std::str::FromStr<Err = String>>(&self, col: &str) -> Cell<T>;
    fn opt_parsed<T: std::str::FromStr<Err = String>>(&self, col: &str) -> Cell<Option<T>>;
    /// A text column where the empty string stands for no value (columns declared `NOT NULL
    /// DEFAULT ''`), parsed when not empty.
    fn blank_or_parsed<T: std::str::FromStr<Err = String>>(&self, col: &str) -> Cell<Option<T>>;
    /// A JSON text column, parsed.
    fn json<T: DeserializeOwned>(&self, col: &str) -> Cell<T>;
    /// A nullable JSON text column, parsed when present.
    fn opt_json<T: DeserializeOwned>(&self, col: &str) -> Cell<Option<T>>;
}

impl Col for AnyRow {
    fn text(&self, col: &str) -> Cell<String> {
        self.try_get::<String, _>(col).map_err(|e| BadColumn::new(col, e))
    }

    fn opt_text(&self, col: &str) -> Cell<Option<String>> {
        self.try_get::<Option<String>, _>(col)
            .map_err(|e| BadColumn::new(col, e))
    }

    fn int(&self, col: &str) -> Cell<i64> {
        self.try_get::<i64, _>(col).map_err(|e| BadColumn::new(col, e))
    }

    fn float(&self, col: &str) -> Cell<f64> {
        self.try_get::<f64, _>(col).map_err(|e| BadColumn::new(col, e))
    }

    fn opt_int(&self, col: &str) -> Cell<Option<i64>> {
        self.try_get::<Option<i64>, _>(col).map_err(|e| BadColumn::new(col, e))
    }

    fn parsed<T: std::str::FromStr<Err = String>>(&self, col: &str) -> Cell<T> {
        self.text(col)?.parse().map_err(|e: String| BadColumn::new(col, e))
    }

    fn opt_parsed<T: std::str::FromStr<Err = String>>(&self, col: &str) -> Cell<Option<T>> {
        self.opt_text(col)?
            .map(|t| t.parse().map_err(|e: String| BadColumn::new(col, e)))
            .transpose()
    }

    fn blank_or_parsed<T: std::str::FromStr<Err = String>>(&self, col: &str) -> Cell<Option<T>> {
        Some(self.text(col)?)
            .filter(|t| !t.is_empty())
            .map(|t| t.parse().map_err(|e: String| BadColumn::new(col, e)))
            .transpose()
    }

    fn json<T: DeserializeOwned>(&self, col: &str) -> Cell<T> {
        serde_json::from_str(&self.text(col)?).map_err(|e| BadColumn::new(col, e))
    }

    fn opt_json<T: DeserializeOwned>(&self, col: &str) -> Cell<Option<T>> {
        match self.opt_text(col)? {
            Some(t) => serde_json::from_str(&t).map(Some).map_err(|e| BadColumn::new(col, e)),
            None => Ok(None),
        }
    }
}

/// A statement with its bound values, as `sqlx::query(...).bind(...)` builds it.
pub(crate) type Query<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

/// Runs statements on the pool; a database error names the registry it came from.
impl Registry {
    pub(crate) async fn rows(&self, q: Query<'_>) -> Result<Vec<AnyRow>> {
        q.fetch_all(self.pool()).await.map_err(db_err(&self.display))
    }

    /// Every row the statement returns, read as `T`.
    pub(crate) async fn all<T: FromRow>(&self, q: Query<'_>) -> Result<Vec<T>> {
        let rows = self.rows(q).await?;
        self.read(&rows)
    }

    /// Whether the registry answers a trivial query now: a replica's readiness.
    pub async fn ping(&self) -> Result<()> {
        self.row(sqlx::query("SELECT 1 AS one")).await.map(|_| ())
    }

    pub(crate) async fn row(&self, q: Query<'_>) -> Result<AnyRow> {
        q.fetch_one(self.pool()).await.map_err(db_err(&self.display))
    }

    pub(crate) async fn maybe_row(&self, q: Query<'_>) -> Result<Option<AnyRow>> {
        q.fetch_optional(self.pool()).await.map_err(db_err(&self.display))
    }

    pub(crate) async fn exec(&self, q: Query<'_>) -> Result<sqlx::any::AnyQueryResult> {
        q.execute(self.pool()).await.map_err(db_err(&self.display))
    }

    /// Runs `q`; whether it changed exactly one row.
    pub(crate) async fn exec_one(&self, q: Query<'_>) -> Result<bool> {
        Ok(self.exec(q).await?.rows_affected() == 1)
    }
}

impl Registry {
    /// Reads every row as `T`; the first column that does not read is the error.
    pub(crate) fn read<T: FromRow>(&self, rows: &[AnyRow]) -> Result<Vec<T>> {
        rows.iter().map(|r| self.read_one(r)).collect()
    }

    /// Reads one row as `T`.
    pub(crate) fn read_one<T: FromRow>(&self, row: &AnyRow) -> Result<T> {
        T::from_row(row).map_err(|BadColumn(message)| self.bad(message))
    }

    /// Reads one column of a row that has no row type (a count, an id).
    pub(crate) fn cell<T>(&self, c: Cell<T>) -> Result<T> {
        c.map_err(|BadColumn(message)| self.bad(message))
    }

    fn bad(&self, message: String) -> LabError {
        LabError::Registry {
            url: self.display.clone(),
            message,
        }
    }
}

/// For reads inside a transaction, where the registry's name is not at hand.
impl From<BadColumn> for LabError {
    fn from(BadColumn(message): BadColumn) -> LabError {
        LabError::Registry {
            url: "the registry".into(),
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Connection;

    async fn row(sql: &'static str) -> AnyRow {
        sqlx::any::install_default_drivers();
        let mut c = sqlx::AnyConnection::connect("sqlite::memory:").await.unwrap();
        sqlx::query(sql).fetch_one(&mut c).await.unwrap()
    }

    /// What used to read as `""`, `0` or a default now names the column.
    #[tokio::test]
    async fn a_column_that_does_not_read_is_an_error_naming_it() {
        let r = row("SELECT NULL AS name, 'x' AS n, 'not json' AS steps, 7 AS id").await;
        assert!(r.text("name").unwrap_err().0.contains("column `name`"));
        assert!(r.int("n").unwrap_err().0.contains("column `n`"));
        assert!(r.json::<Vec<f64>>("steps").unwrap_err().0.contains("column `steps`"));
        assert!(r.text("missing").unwrap_err().0.contains("column `missing`"));
        assert_eq!(r.int("id").unwrap(), 7);
        assert_eq!(r.opt_text("name").unwrap(), None);
    }
}
