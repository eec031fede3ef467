//! A handler that panics (a bug) is answered 500 on REST and INTERNAL on
//! gRPC; the connection and the server go on, the panic is logged with the
//! route and model but not sent, and `sluice_handler_panics_total` counts it.
//! The panic is injected with `ServerConfig::panic_for_model`, which no
//! flag sets.

use crate::harness::grpc::{client, stream};
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
    let iris = test_repo().join("iris/1/model.onnx");
    let repo = Repo::new()
        .with(MODEL, &iris, None)
        .with("iris", &iris, None);
    let s = TestServer::start_with(repo.path(), |c| {
        c.panic_for_model = Some(MODEL.to_string());
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
    // Inference panics too (over a pooled client this time).
    let body = serde_json::json!({"inputs": [{"name": "input", "shape": [1, 4],
        "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]});
    let (status, out) = s
        .post_json(&format!("/v2/models/{MODEL}/infer"), &body)
        .await;
    assert_eq!(status, 500, "{out}");
    let (status, out) = s.post_json("/v2/models/iris/infer", &body).await;
    assert_eq!(status, 200, "{out}");

    // The log names the route and the model, and holds the panic message.
    logs::wait_for(
        mark,
        &["handler panicked", "/v2/models/{model}", MODEL, "injected"],
        1,
        PATIENCE,
    )
    .await;
    // The inference route's own pattern, though it is matched outside the
    // router (`src/http/app.rs`).
    logs::wait_for(
        mark,
        &[
            "handler panicked",
            "/v2/models/{model}/infer",
            MODEL,
            "injected",
        ],
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

    // A stream: the panicking request answers an error message, and the
    // others on the same stream are answered.
    let infer = |model: &str, id: &str| pb::ModelInferRequest {
        model_name: model.into(),
        id: id.into(),
        inputs: vec![pb::model_infer_request::InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![1, 4],
            contents: Some(pb::InferTensorContents {
                fp32_contents: vec![5.1, 3.5, 1.4, 0.2],
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    };
    let requests = vec![infer("iris", "a"), infer(MODEL, "b"), infer("iris", "c")];
    let (answered, errors) = stream(&mut c, requests).await;
    let mut ok: Vec<String> = answered.into_iter().map(|r| r.id).collect();
    ok.sort();
    assert_eq!(ok, ["a", "c"]);
    assert_eq!(errors.len(), 1);
    assert!(errors[0].starts_with("internal error"), "{errors:?}");

    let metrics = s.metrics().await;
    let panics = |protocol| {
        metric(
            &metrics,
            "sluice_handler_panics_total",
            &[("protocol", protocol)],
        )
    };
    assert_eq!(panics("http"), 3.0);
    assert_eq!(panics("grpc"), 2.0);
    s.stop().await;
}
