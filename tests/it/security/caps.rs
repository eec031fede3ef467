//! What the server holds at once: connections, requests in flight, body
//! bytes in flight, the time a request may take, a model's queue.
//!
//! A request that must hold a permit while another one arrives is held by
//! the test at a known point ([`HeldRequest`]: admitted, body unsent), never
//! by a sleep that bets on how long a model runs.

use super::{error_of, post, raw_exchange};
use crate::harness::grpc::client;
use crate::harness::hold::{HeldRequest, RawCall};
use crate::harness::models::{slow_repo, x_grpc, x_json};
use crate::harness::wait::{PATIENCE, eventually, until};
use crate::harness::{TestServer, test_repo};
use bytes::Bytes;
use sluice::grpc::pb;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tonic::Code;

#[tokio::test]
async fn the_connection_cap_answers_503_and_frees_slots() {
    let s = TestServer::start_with(&test_repo(), |c| c.net.max_connections = 4).await;
    // Open eight idle connections at once; those past the cap get a 503 and
    // are closed (the test client may hold a slot too), the others hear
    // nothing. Wait until four have been refused, however slowly the
    // accept loop runs on a busy machine, then count.
    let mut streams = Vec::new();
    for _ in 0..8 {
        streams.push(TcpStream::connect(s.http).await.unwrap());
    }
    // Per connection: what it received, and whether the server closed it.
    let mut replies = vec![(Vec::new(), false); 8];
    until("four of eight connections to be refused", PATIENCE, || {
        for (stream, (reply, closed)) in streams.iter().zip(replies.iter_mut()) {
            let mut buf = [0u8; 512];
            while !*closed {
                match stream.try_read(&mut buf) {
                    Ok(0) => *closed = true,
                    Ok(n) => reply.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(_) => *closed = true,
                }
            }
        }
        let refused = replies
            .iter()
            .filter(|(reply, closed)| *closed && !reply.is_empty())
            .count();
        std::future::ready((refused >= 4).then_some(()))
    })
    .await;
    let refused: Vec<String> = replies
        .iter()
        .filter(|(reply, _)| !reply.is_empty())
        .map(|(reply, _)| String::from_utf8_lossy(reply).into_owned())
        .collect();
    let held: Vec<TcpStream> = streams
        .into_iter()
        .zip(&replies)
        .filter(|(_, (reply, closed))| reply.is_empty() && !closed)
        .map(|(s, _)| s)
        .collect();
    assert!(held.len() <= 4, "{} connections held", held.len());
    assert!(refused.len() >= 4, "{refused:?}");
    let reply = refused[0].clone();
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    assert!(reply.to_lowercase().contains("retry-after: 1"), "{reply}");
    assert!(reply.contains("--max-connections"), "{reply}");
    let metrics = raw_exchange(
        s.http,
        b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    // The probe itself may be refused while every slot is held.
    if metrics.starts_with("HTTP/1.1 200") {
        assert!(metrics.contains("sluice_open_connections"), "{metrics}");
    }
    drop(held);
    // Slots come back as connections close.
    eventually("slots to be freed", PATIENCE, || async {
        let reply = raw_exchange(
            s.http,
            b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
            Duration::from_secs(5),
        )
        .await;
        reply.starts_with("HTTP/1.1 200")
    })
    .await;
    let (_, metrics) = s.get("/metrics").await;
    let metrics = metrics.as_str().unwrap().to_string();
    assert!(
        metrics.contains(r#"sluice_refused_connections_total{reason="limit"} "#),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_inflight_cap_refuses_at_once_with_retry_after() {
    let repo = slow_repo();
    let s = TestServer::start_with(repo.path(), |c| c.max_inflight_requests = 1).await;
    // The first request takes the only permit and is held there, before its
    // body, until the second has been answered.
    let busy = HeldRequest::admitted(s.http, "/v2/models/slow/infer", x_json(1.0)).await;
    let started = Instant::now();
    let refused = post(&s, "/v2/models/slow/infer", None, &x_json(1.0)).await;
    let took = started.elapsed();
    // Health is never behind the cap.
    let probe = s.get("/v2/health/ready").await;
    let busy = busy.finish().await;
    assert_eq!(busy.status, 200);
    assert_eq!(refused.headers()["retry-after"], "1");
    let (status, error) = error_of(refused).await;
    assert_eq!(status, 503);
    assert!(error.contains("--max-inflight-requests"), "{error}");
    assert!(took < Duration::from_secs(2), "refused after {took:?}");
    assert_eq!(probe.0, 200);

    // gRPC shares the cap: refused while a request holds the permit, served
    // once it is answered.
    let mut c = client(s.grpc).await;
    let busy = HeldRequest::admitted(s.http, "/v2/models/slow/infer", x_json(1.0)).await;
    let second = c.model_infer(x_grpc("slow", 1.0)).await;
    assert_eq!(busy.finish().await.status, 200);
    let first = c.model_infer(x_grpc("slow", 1.0)).await;
    first.unwrap();
    let e = second.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e}");
    assert_eq!(e.metadata().get("retry-after").unwrap(), "1");
}

#[tokio::test]
async fn the_request_timeout_answers_504_and_deadline_exceeded() {
    let repo = slow_repo();
    let s = TestServer::start_with(repo.path(), |c| {
        c.request_timeout = Some(Duration::from_millis(20));
    })
    .await;
    // A request whose body never comes cannot be answered in time, however
    // fast the model runs. (With a whole request the test raced a 20 ms
    // timer against a run of slow.onnx: a run that ended before the timer
    // was polled answered 200.)
    let head = format!(
        "POST /v2/models/slow/infer HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        x_json(1.0).len()
    );
    let reply = raw_exchange(s.http, head.as_bytes(), PATIENCE).await;
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or_default();
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let error = v["error"].as_str().unwrap_or_else(|| panic!("{reply}"));
    assert_eq!(status, 504);
    assert!(error.contains("--request-timeout-secs"), "{error}");
    // The same on gRPC: a call whose message never comes.
    let call = RawCall::start(s.grpc, "ModelInfer").await;
    let e = tonic::Status::from_header_map(&call.headers().await).expect("a grpc-status");
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e}");
    // Fast requests are untouched.
    let s2 = TestServer::start_with(&test_repo(), |c| {
        c.request_timeout = Some(Duration::from_secs(30));
    })
    .await;
    assert_eq!(
        s2.post_raw("/v2/models/iris/infer", super::IRIS.into())
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn the_body_budget_refuses_big_bodies_but_admits_small_ones() {
    let repo = slow_repo();
    let s = TestServer::start_with(repo.path(), |c| c.max_inflight_body_bytes = 1 << 20).await;
    // A valid slow request padded to 900 KiB: two do not fit in 1 MiB. The
    // first is admitted (its 900 KiB reserved) and held before its body.
    let big = format!("{}{}", x_json(1.0), " ".repeat(900 << 10));
    let first = HeldRequest::admitted(s.http, "/v2/models/slow/infer", big.clone()).await;
    let refused = post(&s, "/v2/models/slow/infer", None, &big).await;
    // A small body still fits beside the big one.
    let small = post(&s, "/v2/models/slow/infer", None, &x_json(1.0)).await;
    let first = first.finish().await;
    assert_eq!(first.status, 200);
    assert_eq!(small.status(), 200);
    assert_eq!(refused.headers()["retry-after"], "1");
    let (status, error) = error_of(refused).await;
    assert_eq!(status, 503);
    assert!(error.contains("--max-inflight-body-bytes"), "{error}");

    // gRPC messages draw on the same budget: a 900 KiB ModelInfer beside a
    // 900 KiB REST body is refused at once; a small one passes.
    let mut c = client(s.grpc).await;
    let mut padded = x_grpc("slow", 1.0);
    padded.id = "x".repeat(900 << 10);
    let first = HeldRequest::admitted(s.http, "/v2/models/slow/infer", big).await;
    let refused = c.clone().model_infer(padded).await;
    let small = c.model_infer(x_grpc("slow", 1.0)).await;
    assert_eq!(first.finish().await.status, 200);
    small.unwrap();
    let e = refused.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e}");
    assert!(e.message().contains("--max-inflight-body-bytes"), "{e}");
    assert_eq!(e.metadata().get("retry-after").unwrap(), "1");
}

/// A ModelInfer for a model whose queue is full is refused from its first
/// frame: the rest of its (declared 32 MiB) message is never sent, and the
/// answer still comes at once.
///
/// Load keeps `slow_q1` (one instance, a queue of one) full most of the
/// time. Each attempt waits for the gauge to show the queue full, sends the
/// first frame (the message's header and the fields that name the model)
/// and ends the body there. Only the check on the first frame can answer
/// "queue is full" for a message that could never be read whole; an
/// attempt that found room fails to decode its message instead, and the
/// next attempt tries again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_a_grpc_call_before_its_message_is_read() {
    use prost::Message;

    let repo = slow_repo();
    let s = TestServer::start(repo.path()).await;
    // Keep slow_q1 (one instance, a queue of one) full.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (s_client, url, stop) = (
            s.client.clone(),
            s.url("/v2/models/slow_q1/infer"),
            stop.clone(),
        );
        load.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = s_client.post(&url).body(x_json(1.0)).send().await;
            }
        }));
    }

    let head = pb::ModelInferRequest {
        model_name: "slow_q1".into(),
        ..Default::default()
    }
    .encode_to_vec();
    let mut refusal = None;
    let mut admitted = Vec::new();
    for _ in 0..50 {
        eventually("slow_q1's queue to be full", PATIENCE, || async {
            s.metric("sluice_pending_requests", &[("model", "slow_q1")])
                .await
                >= 1.0
        })
        .await;
        let mut call = RawCall::start(s.grpc, "ModelInfer").await;
        // The header declares 32 MiB; only the fields that name the model follow.
        let mut first = vec![0u8];
        first.extend_from_slice(&(32u32 << 20).to_be_bytes());
        first.extend_from_slice(&head);
        call.send(Bytes::from(first)).await;
        call.end();
        let headers = call.headers().await;
        let status = headers.get("grpc-status").cloned();
        let message = headers.get("grpc-message").cloned();
        let retry = headers.get("retry-after").cloned();
        let truncated = status.as_ref().is_some_and(|v| v.as_bytes() == b"13")
            && message
                .as_ref()
                .is_some_and(|m| m.to_str().unwrap_or_default().contains("Unexpected%20EOF"));
        if truncated {
            // Admitted (the queue had room): its message ended short
            // (INTERNAL, "Unexpected EOF decoding stream."). Try again.
            admitted.push(message);
            continue;
        }
        refusal = Some((status, message, retry));
        break;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for l in load {
        let _ = l.await;
    }
    let (status, message, retry) = refusal.unwrap_or_else(|| {
        panic!("no call was refused while the queue was full; admitted: {admitted:?}")
    });
    assert_eq!(
        status.as_ref().map(|v| v.as_bytes()),
        Some(&b"14"[..]),
        "{message:?}"
    );
    let message = message.map(|m| String::from_utf8_lossy(m.as_bytes()).to_string());
    assert!(
        message.as_deref().is_some_and(|m| m.contains("queue")),
        "{message:?}"
    );
    assert_eq!(retry.as_ref().map(|v| v.as_bytes()), Some(&b"1"[..]));
}
