//! The HTTP connection loop: hyper's HTTP/1.1 and HTTP/2 (h2c, or h2 by ALPN
//! under TLS) over the connections [`crate::net`] admits, with the limits
//! axum's own `serve` does not expose.
//!
//! - `max_header_bytes` bounds the read buffer, so an oversized request head
//!   gets `431` before it is buffered whole (with a JSON body: hyper's own
//!   parse-error replies are rewritten by [`super::parse_errors`]);
//! - `header_read_timeout` closes a connection whose request head does not
//!   arrive in time: slow-loris on headers, and idle keep-alive connections
//!   (hyper starts this timer while it waits for the next request);
//! - HTTP/2 caps concurrent streams and header-list size, and pings idle
//!   connections so dead peers are dropped.
//!
//! Trailing slashes are trimmed before routing (`/v2/`, `/v2/models/m/`, as
//! Triton's and KServe's clients and gateways may send): axum routes before
//! any `Router::layer` sees the request, so [`App`] wraps the router, and
//! the trimmed path picks the route and with it the route's scope.
//!
//! Shutdown has two steps. From the moment draining starts (SIGTERM, before
//! the listeners close), every HTTP/1 response carries `Connection: close`, as
//! Envoy does when it drains: a client then opens a fresh connection for its
//! next request instead of reusing one the server is about to close, which is
//! the race HTTP/1.1 keep-alive otherwise loses (RFC 9112 §9.6). When the
//! listeners stop, every connection is told to finish (HTTP/1 closes after
//! the response in progress, HTTP/2 sends GOAWAY) and the loop waits for them.

use super::app::App;
use super::config::HttpConfig;
use super::parse_errors::JsonParseErrors;
use crate::net::Conn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use tokio::sync::{mpsc, watch};

/// hyper refuses read buffers smaller than this.
const MIN_HEADER_BYTES: usize = crate::config::defaults::MIN_HEADER_BYTES as usize;

/// Serves `app` on every connection from `incoming` until `shutdown`
/// resolves, then waits for the open connections to finish. Once `draining`
/// turns true, HTTP/1 connections close after their next response.
pub(crate) async fn serve(
    mut incoming: mpsc::Receiver<Conn>,
    app: App,
    config: &HttpConfig,
    draining: watch::Receiver<bool>,
    shutdown: impl Future<Output = ()>,
) {
    let app = app.closing_when(draining);
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
    // The stop, and (once every receiver is gone) the end of every connection.
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    let head_limit = config.max_header_bytes.max(MIN_HEADER_BYTES);
    let serve = |conn: Conn| {
        let activity = conn.activity();
        let service = TowerToHyperService::new(Tracked {
            inner: app.clone(),
            activity: activity.clone(),
        });
        let io = JsonParseErrors::new(conn, head_limit, activity.clone());
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(io), service)
            .into_owned();
        let stop = stop_rx.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_until_stop(connection, &activity, stop).await {
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
    let _ = stop_tx.send(true);
    // The accept loop stops on the same signal. Connections it already handed
    // over (their client has sent its request) are served, not dropped; the
    // channel ends once the accept loop and every handshake have finished.
    while let Some(conn) = incoming.recv().await {
        serve(conn);
    }
    drop(stop_rx);
    stop_tx.closed().await;
}

/// Serves one connection; at the stop, tells it to finish (HTTP/1 closes
/// after the response in progress, HTTP/2 sends GOAWAY) and waits for it.
/// A connection whose first bytes hyper has not read yet is polled until it
/// has: told to finish before, hyper would close it as idle, unanswered.
/// `_stop` is held to the end, so the serve loop can wait for every
/// connection.
async fn serve_until_stop<C>(
    connection: C,
    activity: &crate::net::Activity,
    mut stop: watch::Receiver<bool>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    C: Future<Output = Result<(), Box<dyn std::error::Error + Send + Sync>>> + Graceful,
{
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => return result,
        _ = stop.wait_for(|&s| s) => {}
    }
    let read_or_done = std::future::poll_fn(|cx| match connection.as_mut().poll(cx) {
        std::task::Poll::Ready(result) => std::task::Poll::Ready(Some(result)),
        std::task::Poll::Pending if activity.unread_prefix() => std::task::Poll::Pending,
        std::task::Poll::Pending => std::task::Poll::Ready(None),
    });
    if let Some(result) = read_or_done.await {
        return result;
    }
    connection.as_mut().graceful_shutdown();
    connection.await
}

/// hyper-util's connections' graceful shutdown (its own trait is sealed).
trait Graceful {
    fn graceful_shutdown(self: std::pin::Pin<&mut Self>);
}

impl<I, S, E, B> Graceful for auto::UpgradeableConnection<'static, I, S, E>
where
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = hyper::Response<B>,
        >,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Future: 'static,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: http_body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper_util::server::conn::auto::HttpServerConnExec<S::Future, B>,
{
    fn graceful_shutdown(self: std::pin::Pin<&mut Self>) {
        auto::UpgradeableConnection::graceful_shutdown(self);
    }
}

/// The app on one connection: each request marks the connection busy until
/// its response body has been sent (see [`crate::net::Activity`]).
#[derive(Clone)]
struct Tracked {
    inner: App,
    activity: std::sync::Arc<crate::net::Activity>,
}

impl<B> tower::Service<axum::http::Request<B>> for Tracked
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = futures::future::Map<
        futures::future::BoxFuture<'static, axum::response::Response>,
        fn(axum::response::Response) -> Result<axum::response::Response, std::convert::Infallible>,
    >;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        let busy = self.activity.begin();
        futures::FutureExt::map(self.inner.respond(request, Some(busy)), Ok)
    }
}
