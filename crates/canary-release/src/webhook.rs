//! Webhooks the lab posts to (pipeline verdicts, runners behind their offered build): JSON, a
//! bounded time per attempt, transient failures retried, a refusal not.

/// An http(s) URL without control characters (webhooks, forge APIs, model endpoints).
pub fn is_http_url(w: &str) -> bool {
    (w.starts_with("http://") || w.starts_with("https://"))
        && !w.chars().any(char::is_control)
        && reqwest::Url::parse(w).is_ok()
}

/// POSTs the payload once, within `timeout`: `Ok` on a 2xx answer.
pub async fn post_once(
    url: &str,
    payload: &serde_json::Value,
    timeout: std::time::Duration,
) -> std::result::Result<(), String> {
    crate::init_tls();
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())?;
    match client
        .post(url)
        .header("content-type", "application/json")
        .body(payload.to_string())
        .send()
        .await
    {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!("answered {}", r.status())),
        Err(e) => Err(e.to_string()),
    }
}

/// POSTs the payload, retrying transient failures a few times.
pub async fn post(url: &str, payload: &serde_json::Value) -> std::result::Result<(), String> {
    crate::init_tls();
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(15))
        .build()
        .map_err(|e| e.to_string())?;
    let mut last = String::new();
    for attempt in 0..3u32 {
        if attempt > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(500 * 2u64.pow(attempt))).await;
        }
        match client
            .post(url)
            .header("content-type", "application/json")
            .body(payload.to_string())
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) if r.status().is_client_error() && r.status().as_u16() != 429 => {
                return Err(format!("refused: {}", r.status()));
            }
            Ok(r) => last = format!("{}", r.status()),
            Err(e) => last = e.to_string(),
        }
    }
    Err(format!("not delivered after 3 attempts: {last}"))
}
