//! What one request may be: the size of its head, how slowly it arrives,
//! how deep its JSON nests, how big its BYTES elements are, and how much a
//! gRPC message decodes to.

use super::{IRIS, iris_request, raw_exchange};
use crate::harness::grpc::client;
use crate::harness::{TestServer, test_repo};
use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::json;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tonic::Code;

#[tokio::test]
async fn oversized_headers_get_431() {
    let s = TestServer::start_with(&test_repo(), |c| c.http.max_header_bytes = 8192).await;
    // Too big, too many headers, or not HTTP at all: hyper refuses each
    // before routing; the reply still carries our JSON error.
    let big = format!(
        "GET /v2/health/live HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let many = format!(
        "GET /v2/health/live HTTP/1.1\r\nhost: x\r\n{}\r\n",
        (0..150).map(|i| format!("h{i}: x\r\n")).collect::<String>()
    );
    let cases: [(&[u8], &str, &str); 3] = [
        (
            big.as_bytes(),
            "431",
            "8192 bytes or 100 headers (--max-header-bytes)",
        ),
        (many.as_bytes(), "431", "--max-header-bytes"),
        (
            b"GET /v2 HTTP/1.1\r\nhost: x\r\nno colon here\r\n\r\n",
            "400",
            "not valid HTTP/1.1",
        ),
    ];
    for (request, status, words) in cases {
        let reply = raw_exchange(s.http, request, Duration::from_secs(10)).await;
        assert!(reply.starts_with(&format!("HTTP/1.1 {status} ")), "{reply}");
        let (head, body) = reply.split_once("\r\n\r\n").unwrap_or_default();
        assert!(head.contains("content-type: application/json"), "{head}");
        let error: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        assert!(
            error["error"].as_str().is_some_and(|e| e.contains(words)),
            "{reply}"
        );
    }
    // Under the limit is fine, and a JSON reply declares its length (the
    // connection's bookkeeping wraps every body but keeps its size).
    let request = format!(
        "GET /v2 HTTP/1.1\r\nhost: x\r\nconnection: close\r\nx-big: {}\r\n\r\n",
        "a".repeat(4000)
    );
    let reply = raw_exchange(s.http, request.as_bytes(), Duration::from_secs(10)).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or_default();
    assert!(
        head.contains(&format!("content-length: {}", body.len())) && !head.contains("chunked"),
        "{head}"
    );
}

#[tokio::test]
async fn slow_loris_headers_and_bodies_are_cut_off() {
    let s = TestServer::start_with(&test_repo(), |c| {
        c.http.header_read_timeout = Some(Duration::from_millis(500));
        c.body.read_timeout = Duration::from_millis(500);
        c.net.handshake_timeout = Duration::from_millis(300);
    })
    .await;
    // Connect and send nothing, on either port: closed after the handshake deadline.
    for addr in [s.http, s.grpc] {
        let started = Instant::now();
        let reply = raw_exchange(addr, b"", Duration::from_secs(20)).await;
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(15),
            "{addr}: closed after {took:?}"
        );
        assert!(reply.is_empty() || !reply.contains(" 200 "), "{reply}");
    }
    // Half a request head, then nothing: the server closes the connection.
    let started = Instant::now();
    let reply = raw_exchange(
        s.http,
        b"POST /v2/models/iris/infer HTTP/1.1\r\nhost: x\r\n",
        Duration::from_secs(20),
    )
    .await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "closed after {took:?}: {reply}"
    );
    assert!(!reply.contains(" 200 "), "{reply}");

    // A full head promising 100 bytes, then 10: 408 in our error format.
    let reply = raw_exchange(
        s.http,
        b"POST /v2/models/iris/infer HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"inputs\":",
        Duration::from_secs(20),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains("--body-read-timeout-secs"), "{reply}");

    // Everyone else is served meanwhile.
    assert_eq!(
        s.post_raw("/v2/models/iris/infer", IRIS.into()).await.0,
        200
    );
}

#[tokio::test]
async fn json_depth_and_bytes_element_limits() {
    let s = TestServer::start_with(&test_repo(), |c| {
        c.body.max_json_depth = 16;
        c.limits.max_bytes_element = 8;
    })
    .await;
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let (status, body) = s.post_raw("/v2/models/iris/infer", deep.into_bytes()).await;
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("nests deeper than 16"),
        "{body}"
    );

    let strings = |s: &str| {
        json!({"inputs": [{"name": "INPUT0", "shape": [2, 3], "datatype": "BYTES",
                           "data": ["a", "b", "c", "d", "e", s]}]})
    };
    let (status, body) = s
        .post_json("/v2/models/dtype_string/infer", &strings("f"))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = s
        .post_json("/v2/models/dtype_string/infer", &strings("0123456789"))
        .await;
    assert_eq!(status, 413, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("BYTES element 5 is 10 bytes") && error.contains("--max-bytes-element"),
        "{error}"
    );
}

/// Sends one gRPC message (already framed) on a fresh HTTP/2 connection and
/// returns the status, from the headers of a trailers-only reply or from
/// the trailers.
async fn raw_grpc(addr: SocketAddr, method: &str, framed: Bytes) -> Option<tonic::Status> {
    use hyper::client::conn::http2;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let request = hyper::Request::post(format!(
        "http://{addr}/inference.GRPCInferenceService/{method}"
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(http_body_util::Full::new(framed))
    .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let mut headers = response.headers().clone();
    let collected = response.into_body().collect().await.unwrap();
    if let Some(trailers) = collected.trailers() {
        headers.extend(trailers.clone());
    }
    tonic::Status::from_header_map(&headers)
}

/// prost would build the whole message before any limit looks at it, and
/// an empty input is 2 bytes on the wire but 312 in memory: 4 MiB of them
/// would take ~650 MiB. The codec refuses such a message before decoding,
/// unary and on a stream, and the server serves on.
#[tokio::test]
async fn grpc_messages_that_decode_to_far_more_are_refused_before_decoding() {
    let s = TestServer::start(&test_repo()).await;
    let empty_inputs = 2 << 20;
    let mut framed = Vec::with_capacity(5 + 2 * empty_inputs);
    framed.push(0);
    framed.extend_from_slice(&(2 * empty_inputs as u32).to_be_bytes());
    for _ in 0..empty_inputs {
        framed.extend_from_slice(&[0x2a, 0x00]); // inputs { }
    }
    let framed = Bytes::from(framed);
    for method in ["ModelInfer", "ModelStreamInfer"] {
        let status = raw_grpc(s.grpc, method, framed.clone()).await;
        let Some(status) = status else {
            panic!("{method}: no grpc-status")
        };
        assert_eq!(status.code(), Code::ResourceExhausted, "{method}: {status}");
        assert!(
            status.message().contains("once decoded")
                && status.message().contains("--max-request-tensor-bytes"),
            "{method}: {status}"
        );
    }
    let mut c = client(s.grpc).await;
    c.model_infer(iris_request()).await.unwrap();
}
