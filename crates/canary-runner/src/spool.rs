//! A runner's telemetry spool: finished sessions wait in a bounded file until `canary serve` has
//! taken them, so a control plane that is down loses nothing until the bound, and a runner that
//! restarts sends what it had. Past the bound new sessions are dropped and counted, never silently.

use crate::error::{LabError, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

pub struct Spool {
    path: PathBuf,
    max: usize,
    /// Sessions dropped since the spool was opened because it was full.
    pub dropped: u64,
}

/// What a flush did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flushed {
    pub sent: usize,
    pub left: usize,
    /// Why sending stopped, when it did.
    pub error: Option<String>,
}

impl Spool {
    pub fn open(path: &Path, max: usize) -> Result<Spool> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| LabError::write(dir, e))?;
        }
        Ok(Spool {
            path: path.to_path_buf(),
            max,
            dropped: 0,
        })
    }

    /// The waiting sessions, oldest first (a torn last line from a crash is left out).
    pub fn pending(&self) -> Result<Vec<serde_json::Value>> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(LabError::read(&self.path, e)),
        };
        Ok(text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
    }

    /// Adds a finished session; false (and counted) when the spool is full.
    pub fn push(&mut self, session: &serde_json::Value) -> Result<bool> {
        if self.pending()?.len() >= self.max {
            self.dropped += 1;
            return Ok(false);
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| LabError::write(&self.path, e))?;
        writeln!(f, "{session}").map_err(|e| LabError::write(&self.path, e))?;
        Ok(true)
    }

    fn keep(&self, rest: &[serde_json::Value]) -> Result<()> {
        let tmp = self.path.with_extension("tmp");
        let mut text = String::new();
        for s in rest {
            text.push_str(&s.to_string());
            text.push('\n');
        }
        std::fs::write(&tmp, text).map_err(|e| LabError::write(&tmp, e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| LabError::write(&self.path, e))
    }

    /// Sends what waits in batches of `batch` through `send` (which posts one batch and says
    /// whether it was taken); what was taken leaves the file, the rest stays for the next flush.
    pub async fn flush<F, Fut>(&mut self, batch: usize, mut send: F) -> Result<Flushed>
    where
        F: FnMut(serde_json::Value) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<(), String>>,
    {
        let all = self.pending()?;
        let mut sent = 0;
        let mut error = None;
        for chunk in all.chunks(batch.max(1)) {
            match send(serde_json::json!({ "sessions": chunk })).await {
                Ok(()) => {
                    sent += chunk.len();
                    self.keep(&all[sent..])?;
                }
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        Ok(Flushed {
            sent,
            left: all.len() - sent,
            error,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sessions_wait_until_taken_and_the_bound_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.jsonl");
        let mut s = Spool::open(&path, 5).unwrap();
        for i in 0..7 {
            s.push(&serde_json::json!({"session": format!("s{i}")})).unwrap();
        }
        assert_eq!((s.pending().unwrap().len(), s.dropped), (5, 2));
        // The control plane is down: nothing leaves.
        let f = s
            .flush(2, |_| async { Err("connection refused".to_string()) })
            .await
            .unwrap();
        assert_eq!((f.sent, f.left), (0, 5));
        // It takes the first batch, then fails: the rest waits, oldest first.
        let mut calls = 0;
        let f = s
            .flush(2, |_| {
                calls += 1;
                let ok = calls == 1;
                async move { if ok { Ok(()) } else { Err("503".to_string()) } }
            })
            .await
            .unwrap();
        assert_eq!((f.sent, f.left), (2, 3));
        assert_eq!(s.pending().unwrap()[0]["session"], "s2");
        // A reopened spool (the runner restarted) still has them.
        let mut again = Spool::open(&path, 5).unwrap();
        let f = again.flush(10, |_| async { Ok(()) }).await.unwrap();
        assert_eq!((f.sent, f.left), (3, 0));
        assert!(again.pending().unwrap().is_empty());
    }
}
