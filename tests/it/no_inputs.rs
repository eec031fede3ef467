//! A model with no inputs (a constant, a generator) is a legal ONNX graph:
//! every protocol serves it, and v1 explains what it expects instead of
//! dropping the connection.

use crate::harness::grpc::{client, raw_request};
use crate::harness::models::Repo;
use crate::harness::{TestServer, fixture};
use serde_json::json;

fn repo() -> Repo {
    Repo::new().with("constant", &fixture("constant.onnx"), None)
}

#[tokio::test]
async fn a_model_with_no_inputs_answers_every_protocol() {
    let repo = repo();
    let s = TestServer::start(repo.path()).await;

    let (status, meta) = s.get("/v2/models/constant").await;
    assert_eq!(status, 200, "{meta}");
    assert_eq!(meta["inputs"], json!([]));

    // v2 JSON: `inputs` is a required field, here empty.
    let body = json!({"inputs": []});
    let (status, out) = s.post_json("/v2/models/constant/infer", &body).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["outputs"][0]["shape"], json!([1, 3]));
    assert_eq!(out["outputs"][0]["data"], json!([1.0, 2.0, 3.0]));

    // v1: no fields, empty columns, or empty rows.
    let (status, out) = s.post_json("/v1/models/constant:predict", &json!({})).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out, json!({"outputs": [[1.0, 2.0, 3.0]]}));
    let body = json!({"inputs": {}});
    let (status, out) = s.post_json("/v1/models/constant:predict", &body).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out, json!({"outputs": [[1.0, 2.0, 3.0]]}));
    let body = json!({"instances": [{}]});
    let (status, out) = s.post_json("/v1/models/constant:predict", &body).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out, json!({"predictions": [[1.0, 2.0, 3.0]]}));

    // Data for inputs the model does not have: a 400 that says why.
    let body = json!({"instances": [[1.0]]});
    let (status, out) = s.post_json("/v1/models/constant:predict", &body).await;
    assert_eq!(status, 400, "{out}");
    let error = out["error"].as_str().unwrap();
    assert!(
        error.contains("has no inputs") && error.contains("instances"),
        "{error}"
    );
    let body = json!({"inputs": [1.0]});
    let (status, out) = s.post_json("/v1/models/constant:predict", &body).await;
    assert_eq!(status, 400, "{out}");
    let body = json!({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}]});
    let (status, out) = s.post_json("/v2/models/constant/infer", &body).await;
    assert_eq!(status, 400, "{out}");
    assert!(out["error"].as_str().unwrap().contains("unknown input 'x'"));

    // gRPC.
    let mut c = client(s.grpc).await;
    let r = c
        .model_infer(raw_request("constant", &[]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.outputs.len(), 1);
    assert_eq!(r.outputs[0].shape, [1, 3]);
    let floats: Vec<f32> = r.raw_output_contents[0]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(floats, [1.0, 2.0, 3.0]);

    // The server went on.
    assert_eq!(s.get("/v2/health/ready").await.0, 200);
    s.stop().await;
}
