//! The HTTP connection loop: hyper's HTTP/1.1 and HTTP/2 (h2c, or h2 by ALPN
//! under TLS) over the connections [`crate::net`] admits, with the limits
//! axum's own `serve` does not expose.
//!
//! - `max_header_bytes` bounds the read buffer, so an oversized request head
//!   gets `431` before it is buffered whole;
//! - `header_read_timeout` closes a connection whose request head does not
//!   arrive in time: slow-loris on headers, and idle keep-alive connections
//!   (hyper starts this timer while it waits for the next request);
//! - HTTP/2 caps concurrent streams and header-list size, and pings idle
//!   connections so dead peers are dropped.
//!
//! On shutdown, every connection is told to finish (HTTP/1 closes after the
//! response in progress, HTTP/2 sends GOAWAY) and the loop waits for them.

use super::HttpConfig;
use crate::net::Conn;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use tokio::sync::mpsc;

/// hyper refuses read buffers smaller than this.
pub const MIN_HEADER_BYTES: usize = 8192;

/// Serves `app` on every connection from `incoming` until `shutdown`
/// resolves, then waits for the open connections to finish.
pub async fn serve(
    mut incoming: mpsc::Receiver<Conn>,
    app: Router,
    config: &HttpConfig,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .max_buf_size(config.max_header_bytes.max(MIN_HEADER_BYTES))
        .header_read_timeout(config.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(config.max_concurrent_streams)
        .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(config.keepalive_interval)
        .keep_alive_timeout(
            config
                .keepalive_interval
                .unwrap_or_default()
                .max(std::time::Duration::from_secs(1)),
        );
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    let serve = |conn: Conn| {
        let service = TowerToHyperService::new(app.clone());
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(conn), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "http connection ended with an error");
            }
        });
    };
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            conn = incoming.recv() => match conn {
                Some(conn) => serve(conn),
                None => break,
            },
        }
    }
    // The accept loop stops on the same signal. Connections it already handed
    // over (their client has sent its request) are served, not dropped; the
    // channel ends once the accept loop and every handshake have finished.
    while let Some(conn) = incoming.recv().await {
        serve(conn);
    }
    graceful.shutdown().await;
}
