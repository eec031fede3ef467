//! Connection admission, shared by every listener: accept, cap the number of
//! open connections, complete the TLS handshake (with a deadline), and hand
//! the connection to a protocol adapter.
//!
//! One accept task per listener owns the socket. It never waits on a client:
//! each connection gets its own task that completes the TLS handshake (if
//! any) and waits for the client's first bytes, both within
//! [`NetConfig::handshake_timeout`]. A client that connects and sends
//! nothing (slow loris) therefore holds a connection slot for at most that
//! long and never blocks the accept loop; after that, hyper's header-read
//! timeout bounds each request head. The first bytes are kept and replayed
//! to the protocol, which sees the stream untouched. Ready connections go
//! through a bounded channel to the adapter's serve loop.
//!
//! Once serving, a connection closes after [`NetConfig::idle_timeout`] with no
//! request in progress on it. The protocol adapters mark each request (from
//! its head to the end of its response body) with [`Activity::begin`]; the
//! connection's reads end (as if the client had closed) when the timer runs
//! out. HTTP/2 keep-alive pings keep a dead peer from holding a slot, but
//! only this closes a live one that sends nothing: on HTTP/2 and gRPC a
//! connection is otherwise never idle at the socket.
//!
//! The connection cap is a semaphore shared by all listeners. A permit rides
//! inside [`Conn`] and is returned when the connection drops, however it ends.
//! Over the cap, a plain-HTTP listener answers one `503` with `Retry-After`
//! and closes; TLS and gRPC listeners close at once (there is no protocol in
//! which to say more before a handshake).

pub mod tls;

use crate::metrics::EdgeMetrics;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

/// Settings shared by the listeners.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Most connections open at once, over every listener.
    pub max_connections: usize,
    /// From connect until the TLS handshake is done and the client's first
    /// bytes have arrived.
    pub handshake_timeout: Duration,
    /// A serving connection with no request in progress for this long is
    /// closed (`None`: never).
    pub idle_timeout: Option<Duration>,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Some(Duration::from_secs(300)),
        }
    }
}

/// The requests in progress on one connection, and since when it has had
/// none; shared by the connection's IO and its requests.
#[derive(Debug)]
pub struct Activity {
    /// Until the protocol has read the client's first bytes (see [`Conn`]).
    unread_prefix: std::sync::atomic::AtomicBool,
    active: AtomicUsize,
    idle_since: std::sync::Mutex<Instant>,
    /// The connection's reader, woken when its last request ends so that
    /// the idle timer starts.
    reader: futures::task::AtomicWaker,
}

impl Activity {
    fn new() -> Self {
        Self {
            unread_prefix: std::sync::atomic::AtomicBool::new(true),
            active: AtomicUsize::new(0),
            idle_since: std::sync::Mutex::new(Instant::now()),
            reader: futures::task::AtomicWaker::new(),
        }
    }

    /// Whether the protocol has not yet read the client's first bytes: a
    /// connection told to shut down then would close without answering them.
    pub fn unread_prefix(&self) -> bool {
        self.unread_prefix.load(Ordering::Acquire)
    }

    /// Restarts the idle clock (bytes arrived).
    fn touch(&self) {
        *self.idle_since.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    /// Whether a request is in progress.
    pub fn is_busy(&self) -> bool {
        self.active.load(Ordering::Acquire) > 0
    }

    /// A tracker of its own, for tests.
    #[cfg(test)]
    pub fn idle() -> Arc<Self> {
        Arc::new(Self::new())
    }

    /// Marks a request in progress until the returned guard drops.
    pub fn begin(self: &Arc<Self>) -> Busy {
        self.active.fetch_add(1, Ordering::AcqRel);
        Busy(self.clone())
    }

    /// When the connection goes idle, or `None` while a request is in progress.
    fn idle_since(&self) -> Option<Instant> {
        if self.active.load(Ordering::Acquire) > 0 {
            return None;
        }
        Some(*self.idle_since.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// A request in progress on a connection (see [`Activity::begin`]).
#[derive(Debug)]
pub struct Busy(Arc<Activity>);

impl Busy {
    /// Keeps the connection busy until `body` (a response) is dropped.
    pub fn hold<B>(self, body: B) -> BusyBody<B> {
        BusyBody {
            inner: body,
            _busy: self,
        }
    }
}

/// A response body that keeps its connection busy until it is dropped.
/// Frames, the end of stream and the size hint pass through untouched
/// (hyper takes `Content-Length` from the hint).
#[derive(Debug)]
pub struct BusyBody<B> {
    inner: B,
    _busy: Busy,
}

impl<B: http_body::Body + Unpin> http_body::Body for BusyBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        if self.0.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.reader.wake();
        }
    }
}

/// Ends a connection's reads once it has been idle for the timeout.
struct IdleTimer {
    timeout: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
    expired: bool,
    /// Reads have ended (EOF given), for good.
    closed: bool,
}

impl IdleTimer {
    fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            sleep: Box::pin(tokio::time::sleep(timeout)),
            expired: false,
            closed: false,
        }
    }

    /// Whether the connection has been idle for the timeout (then for good).
    fn poll_expired(&mut self, activity: &Activity, cx: &mut Context<'_>) -> bool {
        if self.expired {
            return true;
        }
        activity.reader.register(cx.waker());
        let Some(since) = activity.idle_since() else {
            return false;
        };
        let Some(deadline) = since.checked_add(self.timeout) else {
            return false; // beyond the clock's range: never
        };
        let deadline = tokio::time::Instant::from_std(deadline);
        if self.sleep.deadline() != deadline {
            self.sleep.as_mut().reset(deadline);
        }
        self.expired = self.sleep.as_mut().poll(cx).is_ready();
        self.expired
    }
}

/// Which protocol a listener serves (it decides ALPN and the over-cap reply).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Http,
    Grpc,
}

/// The process-wide connection cap, reported in `sluice_open_connections`
/// and `sluice_refused_connections_total`.
#[derive(Debug, Clone)]
pub struct ConnectionLimit {
    permits: Arc<Semaphore>,
    max: usize,
    metrics: EdgeMetrics,
}

impl ConnectionLimit {
    pub fn new(max: usize, metrics: EdgeMetrics) -> Self {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            permits: Arc::new(Semaphore::new(max)),
            max,
            metrics,
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.max - self.permits.available_permits()
    }

    fn refuse(&self, reason: &str) {
        self.metrics.refuse_connection(reason);
    }

    fn slot(&self) -> Option<Slot> {
        let permit = self.permits.clone().try_acquire_owned().ok()?;
        self.metrics.open_connections.inc();
        Some(Slot {
            _permit: permit,
            gauge: self.metrics.open_connections.clone(),
        })
    }
}

/// A connection's place under the cap; freed (and counted down) on drop.
struct Slot {
    _permit: OwnedSemaphorePermit,
    gauge: prometheus::IntGauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// An accepted connection, plain or TLS, holding its slot under the cap.
pub struct Conn {
    io: Io,
    /// Bytes read while waiting for the client to speak, replayed first.
    prefix: bytes::Bytes,
    pub remote: Option<SocketAddr>,
    pub local: Option<SocketAddr>,
    activity: Arc<Activity>,
    idle: Option<IdleTimer>,
    /// Bytes handed to the protocol so far, and whether they could still be
    /// the start of the HTTP/2 preface.
    handed_out: usize,
    maybe_h2: bool,
    _slot: Slot,
}

impl Conn {
    /// The connection's request tracker, for the protocol adapters.
    pub fn activity(&self) -> Arc<Activity> {
        self.activity.clone()
    }
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("remote", &self.remote)
            .field("tls", &matches!(self.io, Io::Tls(_)))
            .finish()
    }
}

enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            // The client's first bytes come first, whatever the idle clock says.
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix.split_to(n));
            this.activity.touch();
            this.note_read(n);
            return Poll::Ready(Ok(()));
        }
        let expired = match &mut this.idle {
            Some(idle) if idle.closed => return Poll::Ready(Ok(())),
            Some(idle) => idle.poll_expired(&this.activity, cx),
            None => false,
        };
        let before = buf.filled().len();
        let read = match &mut this.io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        };
        let n = buf.filled().len() - before;
        if n > 0 {
            this.note_read(n);
        }
        if expired {
            if n > 0 {
                // Bytes that arrived by the deadline are a request: not idle.
                this.activity.touch();
                if let Some(idle) = &mut this.idle {
                    idle.expired = false;
                }
                return read;
            }
            // As if the client had closed: the protocol ends the connection.
            tracing::debug!(remote = ?this.remote, "connection closed: idle for --idle-timeout-secs");
            if let Some(idle) = &mut this.idle {
                idle.closed = true;
            }
            return Poll::Ready(Ok(()));
        }
        read
    }
}

impl Conn {
    /// Counts bytes handed to the protocol; once it has the first bytes
    /// (and, for a start that could still be the HTTP/2 preface, all 24 of
    /// the preface, which hyper-util reads before choosing a protocol), it
    /// can be told to shut down without losing them.
    fn note_read(&mut self, n: usize) {
        self.handed_out = self.handed_out.saturating_add(n);
        if self.prefix.is_empty() && (!self.maybe_h2 || self.handed_out >= H2_PREFACE.len()) {
            self.activity.unread_prefix.store(false, Ordering::Release);
        }
    }
}

/// What an HTTP/2 client sends first.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// What the accept loop of one listener needs.
#[derive(Debug, Clone)]
pub struct Acceptor {
    pub kind: Kind,
    pub limit: ConnectionLimit,
    pub tls: Option<tls::TlsConfigs>,
    pub handshake_timeout: Duration,
    pub idle_timeout: Option<Duration>,
}

/// The reply a plain HTTP client gets when the server is at its connection cap.
const OVER_CAP_REPLY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 88\r\n\r\n\
{\"error\":\"the server is at its connection limit (--max-connections); retry in a moment\"}";

/// Starts accepting on `listener`; ready connections arrive on the returned
/// channel until `stop` resolves (or the receiver is dropped).
pub fn incoming(
    listener: TcpListener,
    acceptor: Acceptor,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> mpsc::Receiver<Conn> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(accept_loop(listener, acceptor, tx, stop));
    rx
}

/// How long a connection accepted before the listener closed may still take
/// to send its first bytes once the server stops. A client that connected
/// just before the stop is served; a silent one delays the stop this long.
const FIRST_BYTES_AFTER_STOP: Duration = Duration::from_secs(1);

async fn accept_loop(
    listener: TcpListener,
    acceptor: Acceptor,
    tx: mpsc::Sender<Conn>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) {
    tokio::pin!(stop);
    // Tells connections still waiting for their first bytes that the server
    // stops: they get [`FIRST_BYTES_AFTER_STOP`] more, so the serve loop can
    // drain the ones that did speak and then finish.
    let (stopping, stopped) = tokio::sync::watch::channel(false);
    loop {
        let accepted = tokio::select! {
            _ = &mut stop => break,
            _ = tx.closed() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, remote)) => admit(stream, remote, &acceptor, &tx, &stopped),
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    // Connections the kernel completed before the stop wait in the backlog;
    // closing the listener would reset them, so take them first. The socket
    // itself is asked (not tokio's cached readiness) until it has none left.
    if let Ok(listener) = listener.into_std() {
        for _ in 0..BACKLOG_AT_STOP {
            match listener.accept() {
                Ok((stream, remote)) => {
                    let stream = stream
                        .set_nonblocking(true)
                        .and_then(|()| TcpStream::from_std(stream));
                    if let Ok(stream) = stream {
                        admit(stream, remote, &acceptor, &tx, &stopped);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => continue, // that one connection (aborted, ...): the next
            }
        }
    }
    let _ = stopping.send(true);
}

/// The most connections taken from the backlog at the stop (the kernel's
/// default `somaxconn` is 4096).
const BACKLOG_AT_STOP: usize = 4096;

/// Takes a slot under the cap and spawns the task that opens the connection
/// (TLS handshake, first bytes) and hands it to the serve loop.
fn admit(
    stream: TcpStream,
    remote: SocketAddr,
    acceptor: &Acceptor,
    tx: &mpsc::Sender<Conn>,
    stopped: &tokio::sync::watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().ok();
    let Some(slot) = acceptor.limit.slot() else {
        acceptor.limit.refuse("limit");
        tracing::debug!(%remote, "connection refused: at --max-connections");
        if acceptor.kind == Kind::Http && acceptor.tls.is_none() {
            tokio::spawn(refuse_http(stream));
        }
        return;
    };
    let (tx, acceptor, mut stopped) = (tx.clone(), acceptor.clone(), stopped.clone());
    tokio::spawn(async move {
        let deadline = acceptor.handshake_timeout;
        let opening =
            tokio::time::timeout(deadline, open(stream, acceptor.tls.as_ref(), acceptor.kind));
        let stop_then_linger = async {
            let _ = stopped.wait_for(|&s| s).await;
            tokio::time::sleep(FIRST_BYTES_AFTER_STOP).await;
        };
        let opened = tokio::select! {
            biased;
            opened = opening => opened,
            _ = stop_then_linger => return,
        };
        match opened {
            Ok(Ok((io, prefix))) => {
                let maybe_h2 =
                    H2_PREFACE.starts_with(&prefix[..prefix.len().min(H2_PREFACE.len())]);
                let conn = Conn {
                    io,
                    prefix,
                    handed_out: 0,
                    maybe_h2,
                    remote: Some(remote),
                    local,
                    activity: Arc::new(Activity::new()),
                    idle: acceptor.idle_timeout.map(IdleTimer::new),
                    _slot: slot,
                };
                let _ = tx.send(conn).await;
            }
            Ok(Err(e)) => {
                acceptor.limit.refuse(e.reason);
                tracing::debug!(%remote, error = %e.error, "connection closed before serving");
            }
            Err(_) => {
                acceptor.limit.refuse("idle");
                tracing::debug!(%remote, "connection closed: no handshake or request within --handshake-timeout-secs");
            }
        }
    });
}

struct OpenError {
    reason: &'static str,
    error: io::Error,
}

/// Completes the TLS handshake (if any) and reads the client's first bytes.
async fn open(
    stream: TcpStream,
    tls: Option<&tls::TlsConfigs>,
    kind: Kind,
) -> Result<(Io, bytes::Bytes), OpenError> {
    let mut io = match tls {
        None => Io::Plain(stream),
        Some(tls) => {
            let accept = tokio_rustls::TlsAcceptor::from(tls.current(kind)).accept(stream);
            let stream = accept.await.map_err(|error| OpenError {
                reason: "tls_handshake",
                error,
            })?;
            Io::Tls(Box::new(stream))
        }
    };
    let mut first = vec![0u8; 4096];
    let n = match &mut io {
        Io::Plain(s) => s.read(&mut first).await,
        Io::Tls(s) => s.read(&mut first).await,
    }
    .map_err(|error| OpenError {
        reason: "idle",
        error,
    })?;
    if n == 0 {
        return Err(OpenError {
            reason: "idle",
            error: io::Error::new(io::ErrorKind::UnexpectedEof, "closed before a request"),
        });
    }
    first.truncate(n);
    Ok((io, bytes::Bytes::from(first)))
}

/// Best effort: tell a plain HTTP client why, then close. Bounded in time so
/// a client that never reads cannot hold the task.
async fn refuse_http(mut stream: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(OVER_CAP_REPLY).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

#[cfg(test)]
mod tests {
    #[test]
    fn over_cap_reply_has_the_declared_length() {
        let reply = std::str::from_utf8(super::OVER_CAP_REPLY).unwrap_or_default();
        let (head, body) = reply.split_once("\r\n\r\n").unwrap_or_default();
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{body}"
        );
        assert!(serde_json::from_str::<serde_json::Value>(body).is_ok());
    }
}
