//! A handler that panics (a bug) is answered 500 on REST and INTERNAL on
//! gRPC; the connection and the server go on, the panic is logged with the
//! route and model but not sent, and `sluice_handler_panics_total` counts it.
//! The panic is injected with `ServerConfig::panic_on_metadata_of`, which no
//! flag sets.

use crate::harness::grpc::client;
use crate::harness::logs;
use crate::harness::metrics::metric;
use crate::harness::models::Repo;
use crate::harness::wait::PATIENCE;
use crate::harness::{TestServer, test_repo};
use sluice::grpc::pb;
use std::net::SocketAddr;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const MODEL: &str = "panicky";

/// One HTTP/1.1 GET on an open connection: the status and the body.
async fn get(conn: &mut BufReader<TcpStream>, path: &str) -> (u16, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: sluice\r\n\r\n");
    conn.get_mut().write_all(request.as_bytes()).await.unwrap();
    let mut line = String::new();
    conn.read_line(&mut line).await.unwrap();
    let status: u16 = line
        .split(' ')
        .nth(1)
        .unwrap_or_else(|| panic!("no status line: {line:?}"))
        .parse()
        .unwrap();
    let mut length = 0usize;
    loop {
        line.clear();
        conn.read_line(&mut line).await.unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap();
            }
        }
    }
    let mut body = vec![0; length];
    conn.read_exact(&mut body).await.unwrap();
    (status, String::from_utf8(body).unwrap())
}

async fn connect(addr: SocketAddr) -> BufReader<TcpStream> {
    BufReader::new(TcpStream::connect(addr).await.unwrap())
}

#[tokio::test]
async fn a_panicking_handler_is_a_500_or_internal_and_the_connection_goes_on() {
    let repo = Repo::new().with(MODEL, &test_repo().join("iris/1/model.onnx"), None);
    let s = TestServer::start_with(repo.path(), |c| {
        c.panic_on_metadata_of = Some(MODEL.to_string());
    })
    .await;
    let mark = logs::mark();

    // REST: two panics and a good request, all on one connection.
    let mut conn = connect(s.http).await;
    for path in [
        format!("/v2/models/{MODEL}"),
        format!("/v2/models/{MODEL}/versions/1"),
    ] {
        let (status, body) = get(&mut conn, &path).await;
        assert_eq!(status, 500, "{path}: {body}");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        let error = body["error"].as_str().unwrap();
        assert!(error.starts_with("internal error"), "{error}");
        assert!(
            !error.contains("injected"),
            "the panic message leaked: {error}"
        );
    }
    let (status, body) = get(&mut conn, &format!("/v2/models/{MODEL}/ready")).await;
    assert_eq!(status, 200, "the connection went on: {body}");

    // The log names the route and the model, and holds the panic message.
    logs::wait_for(
        mark,
        &["handler panicked", "/v2/models/{model}", MODEL, "injected"],
        1,
        PATIENCE,
    )
    .await;

    // gRPC: INTERNAL, then the same channel serves the next call.
    let mut c = client(s.grpc).await;
    let e = c
        .model_metadata(pb::ModelMetadataRequest {
            name: MODEL.into(),
            version: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Internal, "{e}");
    assert!(!e.message().contains("injected"), "{}", e.message());
    let ready = c
        .model_ready(pb::ModelReadyRequest {
            name: MODEL.into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(ready.ready);

    let metrics = s.metrics().await;
    let panics = |protocol| {
        metric(
            &metrics,
            "sluice_handler_panics_total",
            &[("protocol", protocol)],
        )
    };
    assert_eq!(panics("http"), 2.0);
    assert_eq!(panics("grpc"), 1.0);
    s.stop().await;
}
