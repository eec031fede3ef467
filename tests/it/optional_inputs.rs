//! Triton's `optional: true` inputs: an input with a default value in the
//! graph (`fixtures/defaulted.onnx`: y = a + b, b defaults to [[10, 20]])
//! may be left out of a request, over both protocols and under concurrent
//! load (requests that leave it out never share a batch with ones that give
//! it); an optional input without a default is a load error.

use crate::harness::grpc::client;
use crate::harness::models::add_model;
use crate::harness::{TestServer, fixture};
use serde_json::{Value, json};
use sluice::tensor::{DataType, Tensor, TensorData};

const CONFIG: &str = r#"
max_batch_size: 8
input [
  { name: "a", data_type: TYPE_FP32, dims: [ 2 ] },
  { name: "b", data_type: TYPE_FP32, dims: [ 2 ], optional: true }
]
output [ { name: "y", data_type: TYPE_FP32, dims: [ 2 ] } ]
dynamic_batching { max_queue_delay_microseconds: 2000 }
"#;

fn repository() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    for (name, config) in [
        ("opt", CONFIG.to_string()),
        // `a` has no default: it cannot be optional.
        (
            "bad",
            CONFIG.replace(r#"dims: [ 2 ] },"#, r#"dims: [ 2 ], optional: true },"#),
        ),
    ] {
        add_model(root.path(), name, &fixture("defaulted.onnx"), None);
        std::fs::write(root.path().join(name).join("config.pbtxt"), config).unwrap();
    }
    root
}

fn body(a: [f32; 2], b: Option<[f32; 2]>) -> Value {
    let mut inputs = vec![json!({"name": "a", "datatype": "FP32", "shape": [1, 2], "data": a})];
    if let Some(b) = b {
        inputs.push(json!({"name": "b", "datatype": "FP32", "shape": [1, 2], "data": b}));
    }
    json!({ "inputs": inputs })
}

fn expected(a: [f32; 2], b: Option<[f32; 2]>) -> Value {
    let b = b.unwrap_or([10.0, 20.0]);
    json!([a[0] + b[0], a[1] + b[1]])
}

#[tokio::test]
async fn an_optional_input_may_be_left_out_and_its_default_is_used() {
    let repo = repository();
    let server = TestServer::start_with(repo.path(), |c| c.strict_readiness = false).await;

    let (_, index) = server.post_json("/v2/repository/index", &json!({})).await;
    let bad = index
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "bad")
        .unwrap();
    assert_eq!(bad["state"], "UNAVAILABLE", "{bad}");
    assert!(
        bad["reason"]
            .as_str()
            .unwrap()
            .contains("input 'a' is declared optional"),
        "{bad}"
    );
    let (_, config) = server.get("/v2/models/opt/config").await;
    assert_eq!(config["input"][1]["optional"], true, "{config}");
    assert_eq!(config["input"][0]["optional"], false, "{config}");

    // Concurrently, with and without `b`: each answer is its own.
    let calls = (0..24).map(|i| {
        let a = [i as f32, -(i as f32)];
        let b = (i % 2 == 0).then_some([0.5, 0.25]);
        let server = &server;
        async move {
            let (status, out) = server.post_json("/v2/models/opt/infer", &body(a, b)).await;
            assert_eq!(status, 200, "{out}");
            assert_eq!(out["outputs"][0]["data"], expected(a, b), "{i}: {out}");
        }
    });
    futures::future::join_all(calls).await;

    // gRPC, without `b`.
    let mut g = client(server.grpc).await;
    let a = Tensor {
        name: "a".into(),
        datatype: DataType::Fp32,
        shape: vec![1, 2],
        data: TensorData::Fixed(
            [1.0f32, 2.0]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>()
                .into(),
        ),
    };
    let reply = g
        .model_infer(crate::harness::grpc::raw_request("opt", &[a]))
        .await
        .unwrap()
        .into_inner();
    let y: Vec<f32> = reply.raw_output_contents[0]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(y, [11.0, 22.0]);

    // A required input is still required.
    let (status, out) = server
        .post_json(
            "/v2/models/opt/infer",
            &json!({"inputs": [{"name": "b", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}),
        )
        .await;
    assert_eq!(status, 400, "{out}");
    assert!(
        out["error"].as_str().unwrap().contains("missing input 'a'"),
        "{out}"
    );
    server.stop().await;
}
