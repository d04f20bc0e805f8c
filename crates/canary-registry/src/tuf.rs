//! The published TUF files (`update::tuf`): read by path for `GET /v1/tuf/...`, written all at
//! once per publication so a reader never sees a timestamp without the snapshot it names.

use super::{Registry, db_err, now};
use crate::error::Result;

impl Registry {
    /// The file published at `path`, if any.
    pub async fn tuf_file(&self, path: &str) -> Result<Option<String>> {
        let row = self
            .maybe_row(sqlx::query("SELECT body FROM tuf_files WHERE path = $1").bind(path))
            .await?;
        row.map(|r| crate::text(&r, "body")).transpose()
    }

    /// Writes `files` (path, body) in one transaction, replacing files of the same path. Every
    /// publication carries every root version: roots it does not carry (from a root folder that
    /// was replaced) are removed, so no host is offered a root that does not follow.
    pub async fn put_tuf_files(&self, files: &[(String, String)]) -> Result<()> {
        let ts = now();
        let _queued = self.queue_writer().await;
        let mut tx = self.write_tx().await?;
        sqlx::query("DELETE FROM tuf_files WHERE path LIKE '%.root.json'")
            .execute(&mut *tx)
            .await
            .map_err(db_err(&self.display))?;
        for (path, body) in files {
            sqlx::query(
                "INSERT INTO tuf_files (path, body, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (path) DO UPDATE SET body = excluded.body, created_at = excluded.created_at",
            )
            .bind(path)
            .bind(body)
            .bind(&ts)
            .execute(&mut *tx)
            .await
            .map_err(db_err(&self.display))?;
        }
        tx.commit().await.map_err(db_err(&self.display))
    }
}
