//! The last moment of a stop, many times over: the real binary with default
//! flags (`--shutdown-delay-secs 0`) under eight clients that open a new
//! connection for every request, SIGTERM, and the count of requests whose
//! `connect()` succeeded but that got no answer (a reset, or the connection
//! closed unanswered). That count must be zero in every run: a client whose
//! connection was taken must be served, and one that cannot be served must
//! fail to connect, so it knows nothing was sent.
//!
//! What makes it hold: at the stop the listener first gets a socket filter
//! that drops every packet, so no handshake completes any more (a client's
//! SYN goes unanswered until the listener closes and its retry is refused);
//! then everything the backlog holds is accepted and served; only then is
//! the listener closed (`src/net/accept.rs`).

use crate::harness::fixture;
use crate::harness::models::{Repo, x_json};
use crate::harness::process::Sluice;
use crate::harness::wait::{PATIENCE, eventually};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CLIENTS: usize = 8;
/// Runs in `make test`; `SLUICE_STOP_RUNS=<n>` for a longer loop.
const RUNS: usize = 12;

/// What happened to one request.
#[derive(Debug)]
enum Sent {
    Answered(u16),
    /// `connect()` failed: nothing was sent, the client may retry elsewhere.
    Refused,
    /// Connected, then a reset or an end without an answer: a lost request.
    Lost(String),
}

/// One request on a fresh connection, `Connection: close`.
async fn once(addr: SocketAddr, body: &str) -> Sent {
    let Ok(mut conn) = TcpStream::connect(addr).await else {
        return Sent::Refused;
    };
    let request = format!(
        "POST /v2/models/m/infer HTTP/1.1\r\nHost: sluice\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if let Err(e) = conn.write_all(request.as_bytes()).await {
        return Sent::Lost(format!("write: {e}"));
    }
    let mut response = Vec::new();
    let read = tokio::time::timeout(PATIENCE, conn.read_to_end(&mut response)).await;
    match read {
        Err(_) => Sent::Lost("no answer in time".into()),
        Ok(Err(e)) if response.is_empty() => Sent::Lost(format!("read: {e}")),
        Ok(_) => match std::str::from_utf8(&response)
            .ok()
            .and_then(|r| r.strip_prefix("HTTP/1.1 "))
            .and_then(|r| r.get(..3))
            .and_then(|code| code.parse().ok())
        {
            Some(status) => Sent::Answered(status),
            None => Sent::Lost(format!("{} bytes, no status line", response.len())),
        },
    }
}

/// One run: load, SIGTERM, and every client's outcomes once it exits.
async fn run(repo: &Repo) -> Vec<Sent> {
    let mut server = Sluice::serve(repo.path()).start().await;
    let addr = server.http;
    let answered = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let answered = answered.clone();
            tokio::spawn(async move {
                let body = x_json(i as f32);
                let mut outcomes = Vec::new();
                loop {
                    let sent = once(addr, &body).await;
                    let done = matches!(sent, Sent::Refused);
                    if matches!(sent, Sent::Answered(_)) {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    outcomes.push(sent);
                    if done {
                        return outcomes;
                    }
                }
            })
        })
        .collect();
    eventually("the load to start", PATIENCE, || async {
        answered.load(Ordering::Relaxed) >= 4 * CLIENTS as u64
    })
    .await;
    server.sigterm();
    let exit = server.exit(PATIENCE).await;
    assert!(exit.success(), "exit status {exit}");
    let mut outcomes = Vec::new();
    for client in clients {
        outcomes.extend(client.await.unwrap());
    }
    outcomes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_loses_no_request_that_connected_over_many_runs() {
    let repo = Repo::new().with("m", &fixture("swap/v1.onnx"), None);
    let runs = std::env::var("SLUICE_STOP_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(RUNS);
    let (mut answered, mut refused) = (0, 0);
    let mut lost = Vec::new();
    for run_index in 0..runs {
        for sent in run(&repo).await {
            match sent {
                Sent::Answered(200) => answered += 1,
                Sent::Answered(status) => panic!("run {run_index}: status {status}"),
                Sent::Refused => refused += 1,
                Sent::Lost(why) => lost.push(format!("run {run_index}: {why}")),
            }
        }
    }
    eprintln!(
        "stop loop: {runs} runs, {answered} answered, {refused} refused at connect, {} lost",
        lost.len()
    );
    assert!(
        lost.is_empty(),
        "requests lost after a successful connect: {lost:?}"
    );
    assert_eq!(refused, runs * CLIENTS, "each client ends on a refusal");
}
