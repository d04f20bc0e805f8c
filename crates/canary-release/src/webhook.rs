//! Webhooks the lab posts to (pipeline verdicts, runners behind their offered build): JSON, a
//! bounded time per attempt, transient failures retried, a refusal not.

/// An http(s) URL without control characters (webhooks, forge APIs, model endpoints).
pub fn is_http_url(w: &str) -> bool {
    (w.starts_with("http://") || w.starts_with("https://"))
        && !w.chars().any(char::is_control)
        && reqwest::Url::parse(w).is_ok()
}

/// One POST of the payload as JSON: the answer's status, or the transport's error.
async fn send(
    client: &reqwest::Client,
    url: &str,
    payload: &serde_json::Value,
) -> std::result::Result<reqwest::StatusCode, String> {
    client
        .post(url)
        .header("content-type", "application/json")
        .body(payload.to_string())
        .send()
        .await
        .map(|r| r.status())
        .map_err(|e| e.to_string())
}

fn client(timeout: std::time::Duration) -> std::result::Result<reqwest::Client, String> {
    crate::init_tls();
    reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())
}

/// POSTs the payload once, within `timeout`: `Ok` on a 2xx answer.
pub async fn post_once(
    url: &str,
    payload: &serde_json::Value,
    timeout: std::time::Duration,
) -> std::result::Result<(), String> {
    match send(&client(timeout)?, url, payload).await? {
        s if s.is_success() => Ok(()),
        s => Err(format!("answered {s}")),
    }
}

/// POSTs the payload, retrying transient failures a few times.
pub async fn post(url: &str, payload: &serde_json::Value) -> std::result::Result<(), String> {
    let client = client(std::time::Duration::from_secs(15))?;
    let mut last = String::new();
    for attempt in 0..3u32 {
        if attempt > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(500 * 2u64.pow(attempt))).await;
        }
        match send(&client, url, payload).await {
            Ok(s) if s.is_success() => return Ok(()),
            Ok(s) if s.is_client_error() && s.as_u16() != 429 => return Err(format!("refused: {s}")),
            Ok(s) => last = s.to_string(),
            Err(e) => last = e,
        }
    }
    Err(format!("not delivered after 3 attempts: {last}"))
}
