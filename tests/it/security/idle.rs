//! Connections idle after serving close after the idle timeout, on every
//! protocol; a connection in use is never cut.

use super::raw_exchange;
use crate::harness::TestServer;
use crate::harness::grpc::client;
use crate::harness::models::{Repo, SLOW_SERIAL, slow, x_grpc, x_json};
use crate::harness::wait::PATIENCE;
use bytes::Bytes;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// The HTTP/2 connection preface and an empty SETTINGS frame: a gRPC
/// connection that never sends a request.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// Waits until the idle timeout has run out `times` times over, in a row,
/// from now: each time a witness connection opened then sends the preface
/// and nothing more, and the server closes it for idleness. Any connection
/// idle since before the call has then been idle at least that long.
async fn idle_timeouts_pass(grpc: SocketAddr, times: u32) {
    for _ in 0..times {
        let started = Instant::now();
        raw_exchange(grpc, PREFACE, PATIENCE).await;
        assert!(
            started.elapsed() < PATIENCE,
            "an idle witness connection stayed open"
        );
    }
}

/// Connections with no request in progress close after the idle timeout on
/// HTTP/1, HTTP/2 and gRPC; a connection in use for longer (requests, or an
/// open stream) is not cut, and a gRPC client reconnects by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_close_on_every_protocol() {
    use hyper::client::conn::http2;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    const IDLE: Duration = Duration::from_millis(400);
    // No batching: six requests run one after another (≥ 66 ms each).
    let repo = Repo::new().with("slow", &slow(), Some(SLOW_SERIAL));
    let s = TestServer::start_with(repo.path(), |c| {
        c.net.idle_timeout = Some(IDLE);
        // Not the keep-alive timer: only the idle timeout may close these.
        c.http.header_read_timeout = Some(Duration::from_secs(60));
        // HTTP/2 pings (and their answers) several times per timeout: an
        // idle connection still exchanges them, and must close all the same.
        c.http.keepalive_interval = Some(IDLE / 4);
    })
    .await;

    // HTTP/2 (h2c) on the REST port: rounds of six slow requests at once
    // (one instance, no batching) use the connection for longer than the
    // timeout and all succeed; then, idle, it closes.
    let stream = TcpStream::connect(s.http).await.unwrap();
    let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let started = Instant::now();
    while started.elapsed() < IDLE * 2 {
        let calls = (0..6).map(|_| {
            let mut sender = sender.clone();
            let url = format!("http://{}/v2/models/slow/infer", s.http);
            async move {
                let request = hyper::Request::post(url)
                    .header("content-type", "application/json")
                    .body(http_body_util::Full::new(Bytes::from(x_json(1.0))))
                    .unwrap();
                sender.send_request(request).await.map(|r| r.status())
            }
        });
        for status in futures::future::join_all(calls).await {
            assert_eq!(status.unwrap(), 200);
        }
    }
    let closed = tokio::time::timeout(Duration::from_secs(10), conn).await;
    assert!(closed.is_ok(), "the idle HTTP/2 connection stayed open");

    // HTTP/1 keep-alive and a gRPC connection that never sends a request:
    // the server closes both.
    for addr in [s.http, s.grpc] {
        let first: &[u8] = if addr == s.http {
            b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n\r\n"
        } else {
            PREFACE
        };
        let started = Instant::now();
        let reply = raw_exchange(addr, first, Duration::from_secs(10)).await;
        let took = started.elapsed();
        assert!(
            took >= IDLE - Duration::from_millis(50) && took < Duration::from_secs(5),
            "{addr}: closed after {took:?}: {reply:?}"
        );
    }

    // An open ModelStreamInfer stream keeps its connection busy: a request
    // sent after twice the timeout is still answered on it.
    let mut c = client(s.grpc).await;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut responses = c
        .model_stream_infer(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    for round in 0..2 {
        if round > 0 {
            idle_timeouts_pass(s.grpc, 2).await;
        }
        tx.send(x_grpc("slow", 1.0)).await.unwrap();
        let r = responses.message().await.unwrap().unwrap();
        assert!(r.error_message.is_empty(), "{}", r.error_message);
    }
    drop(tx);
    assert!(responses.message().await.unwrap().is_none());

    // A gRPC client whose connection went idle reconnects on its next call.
    c.model_infer(x_grpc("slow", 1.0)).await.unwrap();
    idle_timeouts_pass(s.grpc, 3).await;
    c.model_infer(x_grpc("slow", 1.0)).await.unwrap();
}
