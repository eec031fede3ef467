//! The idle timeout: which requests are in progress on a connection, and
//! since when it has had none. The protocol adapters mark each request with
//! [`Activity::begin`] (and hold it through the response body with
//! [`Busy::hold`]); the connection's reads end once it has been idle for
//! `--idle-timeout-secs` ([`IdleTimer`], polled by [`super::Conn`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// The requests in progress on one connection, and since when it has had
/// none; shared by the connection's IO and its requests.
#[derive(Debug)]
pub(crate) struct Activity {
    /// Until the protocol has read the client's first bytes (see [`Conn`]).
    unread_prefix: AtomicBool,
    active: AtomicUsize,
    idle_since: std::sync::Mutex<Instant>,
    /// The connection's reader, woken when its last request ends so that
    /// the idle timer starts.
    reader: futures::task::AtomicWaker,
}

impl Activity {
    pub(super) fn new() -> Self {
        Self {
            unread_prefix: AtomicBool::new(true),
            active: AtomicUsize::new(0),
            idle_since: std::sync::Mutex::new(Instant::now()),
            reader: futures::task::AtomicWaker::new(),
        }
    }

    /// Whether the protocol has not yet read the client's first bytes: a
    /// connection told to shut down then would close without answering them.
    pub(crate) fn unread_prefix(&self) -> bool {
        self.unread_prefix.load(Ordering::Acquire)
    }

    /// Restarts the idle clock (bytes arrived).
    pub(super) fn touch(&self) {
        *self.idle_since.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    /// The protocol has read the client's first bytes.
    pub(super) fn prefix_read(&self) {
        self.unread_prefix.store(false, Ordering::Release);
    }

    /// Whether a request is in progress.
    pub(crate) fn is_busy(&self) -> bool {
        self.active.load(Ordering::Acquire) > 0
    }

    /// A tracker of its own, for tests.
    #[cfg(test)]
    pub(crate) fn idle() -> Arc<Self> {
        Arc::new(Self::new())
    }

    /// Marks a request in progress until the returned guard drops.
    pub(crate) fn begin(self: &Arc<Self>) -> Busy {
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
pub(crate) struct Busy(Arc<Activity>);

impl Busy {
    /// Keeps the connection busy until `body` (a response) is dropped.
    pub(crate) fn hold<B>(self, body: B) -> BusyBody<B> {
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
pub(crate) struct BusyBody<B> {
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
pub(super) struct IdleTimer {
    timeout: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
    /// Reads have ended (EOF given), for good.
    pub(super) closed: bool,
}

impl IdleTimer {
    pub(super) fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            sleep: Box::pin(tokio::time::sleep(timeout)),
            closed: false,
        }
    }

    /// Whether the timer has fired since it was last armed (possibly at an
    /// earlier deadline than the current one; see [`Self::poll_expired`]).
    pub(super) fn ran_out(&self) -> bool {
        self.sleep.is_elapsed()
    }

    /// Whether the connection has been idle for the timeout; if not, the
    /// task is woken when it may have been (or when its last request ends).
    pub(super) fn poll_expired(&mut self, activity: &Activity, cx: &mut Context<'_>) -> bool {
        activity.reader.register(cx.waker());
        let Some(since) = activity.idle_since() else {
            return false;
        };
        let Some(deadline) = since.checked_add(self.timeout) else {
            return false; // beyond the clock's range: never
        };
        let deadline = tokio::time::Instant::from_std(deadline);
        // The timer is re-armed lazily: every request moves the deadline
        // later, and re-registering the sleep with the runtime's timer for
        // each one cost about as much as the rest of the idle bookkeeping.
        // A sleep armed for an earlier deadline is left to fire, and is
        // then moved to the current deadline; only a later one (which
        // would fire late) is moved at once.
        if self.sleep.deadline() > deadline {
            self.sleep.as_mut().reset(deadline);
        }
        while self.sleep.as_mut().poll(cx).is_ready() {
            if self.sleep.deadline() >= deadline {
                return true;
            }
            self.sleep.as_mut().reset(deadline);
        }
        false
    }
}
