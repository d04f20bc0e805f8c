//! HTTP for the version sources: conditional requests against an on-disk ETag cache, retries
//! with exponential backoff on timeouts, 5xx and 429 (honouring `Retry-After`), and answers
//! that must be JSON. A source that still fails is one clear error naming the URL.

use crate::error::{LabError, Result};
use reqwest::StatusCode;
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    cache_dir: PathBuf,
    pub retries: u32,
    /// First backoff; it doubles per attempt.
    pub backoff: Duration,
    /// The longest `Retry-After` the fetcher waits for; longer ones fail at once.
    pub max_wait: Duration,
}

/// Where an answer came from, for the watch's report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Freshness {
    /// A full 200 answer.
    Fetched,
    /// 304 Not Modified: the cached body was still current.
    NotModified,
}

/// What one try of a request came to.
pub enum Attempt<T> {
    Done(T),
    /// Worth another try (timeout, 5xx, 429, a malformed answer); `wait` is the server's
    /// `Retry-After`, if it sent one.
    Retry {
        why: String,
        wait: Option<Duration>,
    },
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Cached {
    url: String,
    etag: Option<String>,
    last_modified: Option<String>,
    body: serde_json::Value,
}

impl Fetcher {
    pub fn new(cache_dir: PathBuf, timeout: Duration) -> Result<Fetcher> {
        // TLS uses ring (no C toolchain for aws-lc) and the platform's trust store.
        crate::init_tls();
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("canary-lab/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| LabError::usage(format!("cannot build an HTTP client: {e}"), "internal"))?;
        Ok(Fetcher {
            client,
            cache_dir,
            retries: 3,
            backoff: Duration::from_millis(500),
            max_wait: Duration::from_secs(60),
        })
    }

    fn cache_file(&self, url: &str, accept: &str) -> PathBuf {
        let key = hex::encode(Sha256::digest(format!("{accept}\n{url}").as_bytes()));
        self.cache_dir.join(format!("{}.json", &key[..24]))
    }

    /// Runs `attempt` until it is done: a retryable outcome waits the server's `Retry-After` (up
    /// to `max_wait`) or an exponential backoff, at most `retries` times; an error ends at once.
    /// `what` names the registry in messages.
    pub async fn retrying<T>(&self, what: &str, mut attempt: impl AsyncFnMut() -> Result<Attempt<T>>) -> Result<T> {
        let mut n = 0u32;
        loop {
            n += 1;
            let (why, wait) = match attempt().await? {
                Attempt::Done(t) => return Ok(t),
                Attempt::Retry { why, wait } => (why, wait),
            };
            if n > self.retries {
                return Err(source_error(
                    format!("{why} (after {n} attempts)"),
                    "the registry is unreachable or misbehaving; nothing was recorded",
                ));
            }
            let delay = wait.unwrap_or(self.backoff * 2u32.pow(n - 1));
            if delay > self.max_wait {
                return Err(source_error(
                    format!("{why}; {what} asks to wait {}s", delay.as_secs()),
                    "try again later, or raise upstream.max_wait in canary.yaml",
                ));
            }
            tracing::info!("{why}; retrying in {delay:?}");
            tokio::time::sleep(delay).await;
        }
    }

    /// GETs `url` as JSON. `Ok(None)` for 404 (the package does not exist there).
    pub async fn get_json(
        &self,
        url: &str,
        accept: &str,
        headers: &[(&str, String)],
    ) -> Result<Option<(serde_json::Value, Freshness)>> {
        let cache_file = self.cache_file(url, accept);
        let cached: Option<Cached> = std::fs::read(&cache_file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .filter(|c: &Cached| c.url == url);
        self.retrying("the registry", async || {
            let mut req = self.client.get(url).header("accept", accept);
            for (k, v) in headers {
                req = req.header(*k, v);
            }
            if let Some(c) = &cached {
                if let Some(etag) = &c.etag {
                    req = req.header("if-none-match", etag);
                }
                if let Some(lm) = &c.last_modified {
                    req = req.header("if-modified-since", lm);
                }
            }
            let retry = |why: String| Ok(Attempt::Retry { why, wait: None });
            let resp = match req.send().await {
                Ok(resp) => resp,
                Err(e) if e.is_timeout() => return retry(format!("{url}: timed out")),
                Err(e) if e.is_connect() => return retry(format!("{url}: cannot connect ({})", root_cause(&e))),
                Err(e) => return retry(format!("{url}: {}", root_cause(&e))),
            };
            let status = resp.status();
            if status == StatusCode::NOT_MODIFIED {
                return match &cached {
                    Some(c) => Ok(Attempt::Done(Some((c.body.clone(), Freshness::NotModified)))),
                    None => retry(format!("{url}: 304 Not Modified without a cached copy")),
                };
            }
            if status == StatusCode::NOT_FOUND {
                return Ok(Attempt::Done(None));
            }
            if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
                return Ok(Attempt::Retry {
                    why: format!("{url}: {status}"),
                    wait: retry_after(&resp),
                });
            }
            if !status.is_success() {
                return Err(source_error(
                    format!("{url}: {status}"),
                    "check the registry URL (upstream: in canary.yaml, or the client's own configuration)",
                ));
            }
            let etag = header(&resp, "etag");
            let last_modified = header(&resp, "last-modified");
            // A malformed answer is retried like a 500.
            match resp
                .bytes()
                .await
                .map(|b| serde_json::from_slice::<serde_json::Value>(&b))
            {
                Ok(Ok(body)) => {
                    if etag.is_some() || last_modified.is_some() {
                        self.store(&cache_file, url, etag, last_modified, &body);
                    }
                    Ok(Attempt::Done(Some((body, Freshness::Fetched))))
                }
                Ok(Err(e)) => retry(format!("{url}: the answer is not JSON ({e})")),
                Err(e) => retry(format!("{url}: reading the answer failed ({e})")),
            }
        })
        .await
    }

    /// A cache entry for a client that makes its own requests (GitHub through octocrab).
    pub fn conditional_cache(&self, key: &str) -> ConditionalCache {
        ConditionalCache {
            fetcher: self.clone(),
            key: key.to_string(),
            file: self.cache_file(key, "conditional"),
        }
    }

    fn store(
        &self,
        file: &std::path::Path,
        url: &str,
        etag: Option<String>,
        last_modified: Option<String>,
        body: &serde_json::Value,
    ) {
        let c = Cached {
            url: url.into(),
            etag,
            last_modified,
            body: body.clone(),
        };
        if std::fs::create_dir_all(&self.cache_dir).is_ok() {
            let tmp = file.with_extension("tmp");
            if std::fs::write(&tmp, serde_json::to_vec(&c).expect("json")).is_ok() {
                let _ = std::fs::rename(&tmp, file);
            }
        }
    }
}

pub struct ConditionalCache {
    fetcher: Fetcher,
    key: String,
    file: PathBuf,
}

impl ConditionalCache {
    fn load(&self) -> Option<Cached> {
        std::fs::read(&self.file)
            .ok()
            .and_then(|b| serde_json::from_slice::<Cached>(&b).ok())
            .filter(|c| c.url == self.key)
    }

    pub fn etag(&self) -> Option<String> {
        self.load().and_then(|c| c.etag)
    }

    pub fn body(&self) -> Option<serde_json::Value> {
        self.load().map(|c| c.body)
    }

    pub fn store(&self, etag: Option<String>, body: &serde_json::Value) {
        if etag.is_some() {
            self.fetcher.store(&self.file, &self.key, etag, None, body);
        }
    }
}

fn source_error(message: String, help: &str) -> LabError {
    LabError::usage(message, help)
}

fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers().get(name).and_then(|v| v.to_str().ok()).map(String::from)
}

/// `Retry-After` as seconds or an HTTP date.
fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    let v = header(resp, "retry-after")?;
    parse_retry_after(&v, jiff::Timestamp::now())
}

pub fn parse_retry_after(v: &str, now: jiff::Timestamp) -> Option<Duration> {
    if let Ok(secs) = v.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = jiff::fmt::rfc2822::parse(v.trim()).ok()?.timestamp();
    let secs = (when - now).get_seconds().max(0);
    Some(Duration::from_secs(secs as u64))
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

#[cfg(test)]
mod tests {
    use super::parse_retry_after;
    use std::time::Duration;

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        let now: jiff::Timestamp = "2026-11-21T10:00:00Z".parse().unwrap();
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after("Sat, 21 Nov 2026 10:00:07 GMT", now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
