//! Serving an axum router over HTTP/1 with the timeouts a server reachable by strangers needs,
//! which `axum::serve` does not set: a connection must finish its request headers within
//! `header_read` (the same bound holds while a kept-alive connection waits for its next request),
//! and a request must be answered within `request` (a body that trickles in is cut off with 408).

use axum::response::{IntoResponse, Response};
use std::future::Future;
use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub header_read: Duration,
    pub request: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            header_read: Duration::from_secs(10),
            request: Duration::from_secs(60),
        }
    }
}

/// Answers 408 when the inner service takes longer than `limit`.
async fn deadline(limit: Duration, request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(r) => r,
        Err(_) => (
            axum::http::StatusCode::REQUEST_TIMEOUT,
            axum::Json(serde_json::json!({"error": format!("the request took longer than {} s", limit.as_secs())})),
        )
            .into_response(),
    }
}

/// Serves `app` on `listener` until `shutdown` completes; then stops accepting, lets open
/// connections finish their request in flight for up to five seconds, and returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    timeouts: Timeouts,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let limit = timeouts.request;
    let app = app.layer(axum::middleware::from_fn(move |req, next| deadline(limit, req, next)));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of descriptors and the like: wait a moment rather than spin.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        while connections.try_join_next().is_some() {}
        let service = hyper::service::service_fn({
            let app = app.clone();
            move |request: hyper::Request<hyper::body::Incoming>| {
                use tower::ServiceExt;
                app.clone().oneshot(request)
            }
        });
        let mut stop = stop_rx.clone();
        connections.spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(timeouts.header_read)
                .max_buf_size(64 * 1024);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            let stopped = tokio::select! {
                _ = conn.as_mut() => false,
                r = stop.wait_for(|s| *s) => r.is_ok(),
            };
            if stopped {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
        });
    }
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A client that opens a connection and never finishes its headers is cut off.
    #[tokio::test]
    async fn a_connection_that_never_finishes_its_headers_is_closed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let timeouts = Timeouts {
            header_read: Duration::from_millis(300),
            request: Duration::from_secs(5),
        };
        let server = tokio::spawn(serve(listener, app, timeouts, std::future::pending()));
        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "the server kept a half-sent request open for 5 s");
        // A well-formed request is still answered.
        let mut ok = tokio::net::TcpStream::connect(addr).await.unwrap();
        ok.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        ok.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok"), "{answer}");
        server.abort();
    }
}
