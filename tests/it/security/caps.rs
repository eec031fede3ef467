//! What the server holds at once: connections, requests in flight, body
//! bytes in flight, the time a request may take, a model's queue.

use super::{IRIS, SLOW_JSON, error_of, post, raw_exchange, slow_grpc};
use crate::harness::grpc::client;
use crate::harness::models::slow_repo;
use crate::harness::{TestServer, test_repo};
use bytes::Bytes;
use sluice::grpc::pb;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tonic::Code;

#[tokio::test]
async fn the_connection_cap_answers_503_and_frees_slots() {
    let s = TestServer::start_with(&test_repo(), |c| c.net.max_connections = 4).await;
    // Open eight idle connections at once; those past the cap get a 503 (the
    // test client may hold a slot too). Wait for all of them together, so a
    // slow accept loop on a busy machine does not count as a held slot.
    let mut streams = Vec::new();
    for _ in 0..8 {
        streams.push(TcpStream::connect(s.http).await.unwrap());
    }
    let replies = futures::future::join_all(streams.iter_mut().map(|stream| async move {
        let mut buf = vec![0u8; 512];
        match tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
            _ => None,
        }
    }))
    .await;
    let refused: Vec<&String> = replies.iter().flatten().collect();
    let held: Vec<TcpStream> = streams
        .into_iter()
        .zip(&replies)
        .filter(|(_, r)| r.is_none())
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
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = raw_exchange(
            s.http,
            b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
            Duration::from_secs(5),
        )
        .await;
        if reply.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "slots not freed: {reply}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
    let busy = post(&s, "/v2/models/slow/infer", None, SLOW_JSON);
    let refused = async {
        // Let the first request take the only permit.
        tokio::time::sleep(Duration::from_millis(30)).await;
        let started = Instant::now();
        let r = post(&s, "/v2/models/slow/infer", None, SLOW_JSON).await;
        (r, started.elapsed())
    };
    let (busy, (refused, took)) = tokio::join!(busy, refused);
    assert_eq!(busy.status(), 200);
    assert_eq!(refused.headers()["retry-after"], "1");
    let (status, error) = error_of(refused).await;
    assert_eq!(status, 503);
    assert!(error.contains("--max-inflight-requests"), "{error}");
    assert!(took < Duration::from_secs(2), "refused after {took:?}");
    // Health is never behind the cap.
    let (probe, _) = tokio::join!(
        s.get("/v2/health/ready"),
        post(&s, "/v2/models/slow/infer", None, SLOW_JSON)
    );
    assert_eq!(probe.0, 200);

    // gRPC shares the cap.
    let mut a = client(s.grpc).await;
    let mut b = a.clone();
    let (first, second) = tokio::join!(a.model_infer(slow_grpc()), async {
        tokio::time::sleep(Duration::from_millis(30)).await;
        b.model_infer(slow_grpc()).await
    });
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
    let (status, error) = error_of(post(&s, "/v2/models/slow/infer", None, SLOW_JSON).await).await;
    assert_eq!(status, 504);
    assert!(error.contains("--request-timeout-secs"), "{error}");
    let mut c = client(s.grpc).await;
    let e = c.model_infer(slow_grpc()).await.unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e}");
    // Fast requests are untouched.
    let s2 = TestServer::start_with(&test_repo(), |c| {
        c.request_timeout = Some(Duration::from_secs(30));
    })
    .await;
    assert_eq!(
        s2.post_raw("/v2/models/iris/infer", IRIS.into()).await.0,
        200
    );
}

#[tokio::test]
async fn the_body_budget_refuses_big_bodies_but_admits_small_ones() {
    let repo = slow_repo();
    let s = TestServer::start_with(repo.path(), |c| c.max_inflight_body_bytes = 1 << 20).await;
    // A valid slow request padded to 900 KiB: two do not fit in 1 MiB.
    let big = format!("{SLOW_JSON}{}", " ".repeat(900 << 10));
    let first = post(&s, "/v2/models/slow/infer", None, &big);
    let second = async {
        tokio::time::sleep(Duration::from_millis(30)).await;
        let refused = post(&s, "/v2/models/slow/infer", None, &big).await;
        // A small body still fits beside the big one.
        let small = post(&s, "/v2/models/slow/infer", None, SLOW_JSON).await;
        (refused, small)
    };
    let (first, (refused, small)) = tokio::join!(first, second);
    assert_eq!(first.status(), 200);
    assert_eq!(small.status(), 200);
    assert_eq!(refused.headers()["retry-after"], "1");
    let (status, error) = error_of(refused).await;
    assert_eq!(status, 503);
    assert!(error.contains("--max-inflight-body-bytes"), "{error}");

    // gRPC messages draw on the same budget: a 900 KiB ModelInfer beside a
    // 900 KiB REST body is refused at once; a small one passes.
    let mut c = client(s.grpc).await;
    let mut padded = slow_grpc();
    padded.id = "x".repeat(900 << 10);
    let first = post(&s, "/v2/models/slow/infer", None, &big);
    let second = async {
        tokio::time::sleep(Duration::from_millis(30)).await;
        let refused = c.clone().model_infer(padded).await;
        let small = c.model_infer(slow_grpc()).await;
        (refused, small)
    };
    let (first, (refused, small)) = tokio::join!(first, second);
    assert_eq!(first.status(), 200);
    small.unwrap();
    let e = refused.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e}");
    assert!(e.message().contains("--max-inflight-body-bytes"), "{e}");
    assert_eq!(e.metadata().get("retry-after").unwrap(), "1");
}

/// A ModelInfer for a model whose queue is full is refused from its first
/// frame: the rest of its (declared 32 MiB) message is never sent, and the
/// answer still comes at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_a_grpc_call_before_its_message_is_read() {
    use hyper::client::conn::http2;
    use hyper_util::rt::{TokioExecutor, TokioIo};
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
                let _ = s_client.post(&url).body(SLOW_JSON).send().await;
            }
        }));
    }

    let head = pb::ModelInferRequest {
        model_name: "slow_q1".into(),
        ..Default::default()
    }
    .encode_to_vec();
    let mut refusal = None;
    for _ in 0..50 {
        let stream = TcpStream::connect(s.grpc).await.unwrap();
        let (mut sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let (tx, rx) =
            tokio::sync::mpsc::channel::<Result<hyper::body::Frame<Bytes>, std::io::Error>>(1);
        // The header declares 32 MiB; only the fields that name the model follow.
        let mut first = vec![0u8];
        first.extend_from_slice(&(32u32 << 20).to_be_bytes());
        first.extend_from_slice(&head);
        tx.send(Ok(hyper::body::Frame::data(Bytes::from(first))))
            .await
            .unwrap();
        let request = hyper::Request::post(format!(
            "http://{}/inference.GRPCInferenceService/ModelInfer",
            s.grpc
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(http_body_util::StreamBody::new(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
        .unwrap();
        match tokio::time::timeout(Duration::from_millis(500), sender.send_request(request)).await {
            Ok(Ok(response)) => {
                let status = response.headers().get("grpc-status").cloned();
                let message = response.headers().get("grpc-message").cloned();
                let retry = response.headers().get("retry-after").cloned();
                refusal = Some((status, message, retry));
                drop(tx);
                break;
            }
            // Admitted (the queue had room): the call waits for a message
            // that never comes. Try again.
            _ => drop(tx),
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for l in load {
        let _ = l.await;
    }
    let (status, message, retry) = refusal.expect("no call was refused while the queue was full");
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
