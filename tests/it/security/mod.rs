//! Hardening at the edge: bearer tokens on REST and gRPC, TLS (with reload
//! and mutual TLS), and the limits on everything a client controls. Real
//! servers on port 0, real clients (reqwest, tonic, hyper over rustls, raw
//! TCP for what no well-behaved client would send).
//!
//! - [`auth`]: tokens and scopes on both protocols, protected health and
//!   metrics, the admin-only log settings;
//! - [`tls`]: TLS on both protocols, certificate rotation, mutual TLS;
//! - [`limits`]: what one request may be: header size, slow clients, JSON
//!   depth, BYTES elements, gRPC messages that decode to far more;
//! - [`caps`]: what the server holds at once: connections, requests and body
//!   bytes in flight, the request timeout, a full queue;
//! - [`idle`]: connections idle after serving, on every protocol.

use crate::harness::TestServer;
use bytes::Bytes;
use sluice::grpc::pb;
use sluice::tensor::{DataType, Tensor, TensorData};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod auth;
mod caps;
mod idle;
mod limits;
mod tls;

const IRIS: &str =
    r#"{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[5.1,3.5,1.4,0.2]}]}"#;

async fn post(s: &TestServer, path: &str, token: Option<&str>, body: &str) -> reqwest::Response {
    let mut r = s.client.post(s.url(path)).body(body.to_string());
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    r.send().await.unwrap()
}

async fn error_of(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let v: serde_json::Value = r.json().await.unwrap();
    (status, v["error"].as_str().unwrap().to_string())
}

fn iris_request() -> pb::ModelInferRequest {
    let x: Vec<u8> = [5.1f32, 3.5, 1.4, 0.2]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    crate::harness::grpc::raw_request(
        "iris",
        &[Tensor {
            name: "input".into(),
            datatype: DataType::Fp32,
            shape: vec![1, 4],
            data: TensorData::Fixed(Bytes::from(x)),
        }],
    )
}

/// Sends `request` on a fresh connection and reads until the server closes
/// it or `wait` passes; returns what came back.
async fn raw_exchange(addr: SocketAddr, request: &[u8], wait: Duration) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(request).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&out).into_owned()
}
