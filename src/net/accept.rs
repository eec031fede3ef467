//! The accept loop of one listener: take connections off the socket, cap
//! them, complete TLS and wait for the first bytes (each on its own task,
//! within the handshake deadline), and hand ready ones to the adapter.

use super::config::Kind;
use super::conn::{Conn, ConnectionLimit, Io};
use super::ratelimit::RateLimit;
use super::tls;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// What the accept loop of one listener needs.
#[derive(Debug, Clone)]
pub(crate) struct Acceptor {
    pub(crate) kind: Kind,
    pub(crate) limit: ConnectionLimit,
    pub(crate) tls: Option<tls::TlsConfigs>,
    pub(crate) handshake_timeout: Duration,
    pub(crate) idle_timeout: Option<Duration>,
}

/// The reply a plain HTTP client gets when the server is at its connection cap.
const OVER_CAP_REPLY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 88\r\n\r\n\
{\"error\":\"the server is at its connection limit (--max-connections); retry in a moment\"}";

/// Starts accepting on `listener`; ready connections arrive on the returned
/// channel until `stop` resolves (or the receiver is dropped).
pub(crate) fn incoming(
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
    // closing the listener would reset them, so take them first. But the
    // kernel goes on completing handshakes until the close, and one that
    // completes after the last accept is reset by it, after the client's
    // connect() succeeded and it sent its request. So: no new handshake may
    // start; those under way finish (their last ACK is one round trip
    // away) and are taken with the rest of the backlog, until it has stayed
    // empty for a quiet period; then the listener closes. The socket itself
    // is asked (not tokio's cached readiness).
    if let Ok(listener) = listener.into_std() {
        let refusing = refuse_new_handshakes(&listener);
        let mut taken = take_backlog(&listener, BACKLOG_AT_STOP, &acceptor, &tx, &stopped);
        // Without the filter, new handshakes keep completing while clients
        // reconnect, and waiting for a quiet backlog could take thousands of
        // them: one pass over what is there, then close.
        while refusing && taken < BACKLOG_AT_STOP {
            tokio::time::sleep(HANDSHAKES_SETTLE).await;
            let more = take_backlog(&listener, BACKLOG_AT_STOP - taken, &acceptor, &tx, &stopped);
            if more == 0 {
                break;
            }
            taken += more;
        }
    }
    let _ = stopping.send(true);
}

/// Accepts and admits up to `max` connections from the backlog, until it
/// is empty; returns how many it took.
fn take_backlog(
    listener: &std::net::TcpListener,
    max: usize,
    acceptor: &Acceptor,
    tx: &mpsc::Sender<Conn>,
    stopped: &tokio::sync::watch::Receiver<bool>,
) -> usize {
    let mut taken = 0;
    while taken < max {
        match listener.accept() {
            Ok((stream, remote)) => {
                taken += 1;
                let stream = stream
                    .set_nonblocking(true)
                    .and_then(|()| TcpStream::from_std(stream));
                if let Ok(stream) = stream {
                    admit(stream, remote, acceptor, tx, stopped);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(_) => continue, // that one connection (aborted, ...): the next
        }
    }
    taken
}

/// How long the backlog must stay empty at the stop before the listener
/// closes: handshakes under way when new ones were refused finish within a
/// round trip (microseconds on loopback, about a millisecond in a cluster).
const HANDSHAKES_SETTLE: Duration = Duration::from_millis(20);

/// Attaches a socket filter to the listening socket that drops every
/// segment with SYN set. Linux runs a listener's filter on each SYN and on
/// the ACK that completes a handshake: handshakes under way still complete
/// and land in the backlog, and no new one starts. A client's SYN goes
/// unanswered, its retry after the close is refused, and its connect()
/// fails, telling it that nothing was sent. Where this fails (not Linux, or
/// the socket refuses: some kernels ask for `CAP_NET_ADMIN`, which a
/// non-root container lacks), the stop keeps the narrow window it had
/// before, and returns false.
fn refuse_new_handshakes(listener: &std::net::TcpListener) -> bool {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use socket2::SockFilter;
        // Classic BPF over the TCP header (a TCP socket's filter sees the
        // segment from its TCP header): byte 13 holds the flags, SYN = 0x02.
        const LD_B_ABS: u16 = 0x30; // BPF_LD | BPF_B | BPF_ABS
        const JSET_K: u16 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
        const RET_K: u16 = 0x06; // BPF_RET | BPF_K
        let drop_syn = [
            SockFilter::new(LD_B_ABS, 0, 0, 13),
            SockFilter::new(JSET_K, 0, 1, 0x02),
            SockFilter::new(RET_K, 0, 0, 0), // SYN: keep 0 bytes (drop)
            SockFilter::new(RET_K, 0, 0, u32::MAX), // anything else: keep it
        ];
        match socket2::SockRef::from(listener).attach_filter(&drop_syn) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "cannot refuse new connections before closing the listener: a client connecting in the last moment may see a reset (readiness was false for --shutdown-delay-secs before this)"
                );
                false
            }
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = listener;
        false
    }
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
                let conn = Conn::new(io, prefix, remote, local, acceptor.idle_timeout, slot);
                let _ = tx.send(conn).await;
            }
            Ok(Err(e)) => {
                acceptor.limit.refuse(e.reason);
                if e.reason == "tls_handshake" {
                    // An operator must see a rejected client certificate or a
                    // plaintext client on a TLS port; a scan must not flood.
                    if let Some(held_back) = TLS_REJECTIONS.check() {
                        tracing::warn!(%remote, error = %e.error, held_back, "TLS handshake rejected");
                    }
                } else {
                    tracing::debug!(%remote, error = %e.error, "connection closed before serving");
                }
            }
            Err(_) => {
                acceptor.limit.refuse("idle");
                tracing::debug!(%remote, "connection closed: no handshake or request within --handshake-timeout-secs");
            }
        }
    });
}

/// At most one warning per 10 s for rejected TLS handshakes (each says how
/// many it stands for; `sluice_refused_connections_total` counts them all).
static TLS_REJECTIONS: RateLimit = RateLimit::new(Duration::from_secs(10));

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
