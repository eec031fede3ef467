//! An admitted connection ([`Conn`]: plain or TLS, its first bytes replayed,
//! its idle timer) and the process-wide cap it holds a place under.

use super::idle::{Activity, IdleTimer};
use super::metrics::EdgeMetrics;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The process-wide connection cap, reported in `sluice_open_connections`
/// and `sluice_refused_connections_total`.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionLimit {
    permits: Arc<Semaphore>,
    metrics: EdgeMetrics,
}

impl ConnectionLimit {
    pub fn new(max: usize, metrics: EdgeMetrics) -> Self {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            permits: Arc::new(Semaphore::new(max)),
            metrics,
        }
    }

    pub(super) fn refuse(&self, reason: &str) {
        self.metrics.refuse_connection(reason);
    }

    pub(super) fn slot(&self) -> Option<Slot> {
        let permit = self.permits.clone().try_acquire_owned().ok()?;
        self.metrics.open_connections.inc();
        Some(Slot {
            _permit: permit,
            gauge: self.metrics.open_connections.clone(),
        })
    }
}

/// A connection's place under the cap; freed (and counted down) on drop.
pub(super) struct Slot {
    _permit: OwnedSemaphorePermit,
    gauge: prometheus::IntGauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// An accepted connection, plain or TLS, holding its slot under the cap.
pub(crate) struct Conn {
    io: Io,
    /// Bytes read while waiting for the client to speak, replayed first.
    prefix: bytes::Bytes,
    pub(crate) remote: Option<SocketAddr>,
    pub(crate) local: Option<SocketAddr>,
    activity: Arc<Activity>,
    idle: Option<IdleTimer>,
    /// Bytes handed to the protocol so far, and whether they could still be
    /// the start of the HTTP/2 preface.
    handed_out: usize,
    maybe_h2: bool,
    _slot: Slot,
}

impl Conn {
    /// A connection whose `prefix` (its first bytes, never empty) was read
    /// while it was opened.
    pub(super) fn new(
        io: Io,
        prefix: bytes::Bytes,
        remote: SocketAddr,
        local: Option<SocketAddr>,
        idle_timeout: Option<Duration>,
        slot: Slot,
    ) -> Self {
        let maybe_h2 = H2_PREFACE.starts_with(&prefix[..prefix.len().min(H2_PREFACE.len())]);
        Self {
            io,
            prefix,
            handed_out: 0,
            maybe_h2,
            remote: Some(remote),
            local,
            activity: Arc::new(Activity::new()),
            idle: idle_timeout.map(IdleTimer::new),
            _slot: slot,
        }
    }

    /// The connection's request tracker, for the protocol adapters.
    pub(crate) fn activity(&self) -> Arc<Activity> {
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

pub(super) enum Io {
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
        if this.idle.as_ref().is_some_and(|idle| idle.closed) {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let read = match &mut this.io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        };
        let n = buf.filled().len() - before;
        if n > 0 {
            // The timer is consulted only when the read would wait: hyper
            // reads until then, and polling it on every read cost more than
            // the rest of the bookkeeping. Bytes that arrive once the timer
            // has run out, on a connection with no request in progress,
            // restart the idle clock, so a request begun by the deadline is
            // read. Earlier bytes do not: an idle HTTP/2 connection still
            // exchanges pings, which must not keep it open.
            if let Some(idle) = &this.idle
                && idle.ran_out()
                && !this.activity.is_busy()
            {
                this.activity.touch();
            }
            this.note_read(n);
            return read;
        }
        if read.is_pending() {
            let expired = match &mut this.idle {
                Some(idle) => idle.poll_expired(&this.activity, cx),
                None => false,
            };
            if !expired {
                return Poll::Pending;
            }
            // As if the client had closed: the protocol ends the connection.
            tracing::debug!(
                remote = this.remote.map(tracing::field::display),
                "connection closed: idle for --idle-timeout-secs"
            );
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
            self.activity.prefix_read();
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
