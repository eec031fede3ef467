//! Triton's classification extension: `classification = N` on an output
//! answers its top N classes as BYTES `"<value>:<index>[:<label>]"`, over
//! REST JSON, REST binary and gRPC, checked against the raw output of the
//! same request; and bad parameters are 400 / INVALID_ARGUMENT naming it.

use crate::binary::{binary_body, binary_header, post_binary};
use crate::harness::grpc::{client, raw_request};
use crate::harness::models::Repo;
use crate::harness::{TestServer, test_repo};
use serde_json::{Value, json};
use sluice::grpc::pb;
use sluice::tensor::{DataType, Tensor, TensorData};

const LABELS: [&str; 3] = ["setosa", "versicolor", "virginica"];

/// Iris twice: `iris_labels` with labels from config.toml, `iris` without.
pub fn iris_repo(extra_config: &str) -> Repo {
    let iris = test_repo().join("iris/1/model.onnx");
    let repo = Repo::new().with("iris", &iris, Some(extra_config)).with(
        "iris_labels",
        &iris,
        Some(&format!(
            "{extra_config}\n[outputs.probabilities]\nlabel_filename = \"labels.txt\"\n"
        )),
    );
    std::fs::write(
        repo.path().join("iris_labels/labels.txt"),
        LABELS.join("\n") + "\n",
    )
    .unwrap();
    repo
}

/// Two rows of iris features.
pub fn iris_input() -> Tensor {
    let v: [f32; 8] = [5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3];
    Tensor {
        name: "input".into(),
        datatype: DataType::Fp32,
        shape: vec![2, 4],
        data: TensorData::Fixed(v.iter().flat_map(|x| x.to_le_bytes()).collect()),
    }
}

fn json_body(outputs: Value) -> Value {
    json!({
        "inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32",
                    "data": [5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3]}],
        "outputs": outputs,
    })
}

/// The expected classes of raw `[rows, 3]` probabilities, per Triton.
fn expected(probs: &[f64], k: usize, labels: bool) -> Vec<String> {
    let mut all = Vec::new();
    for row in probs.chunks(3) {
        let mut order: Vec<usize> = (0..row.len()).collect();
        order.sort_by(|&a, &b| row[b].partial_cmp(&row[a]).unwrap());
        for &i in order.iter().take(k) {
            let mut s = format!("{:.6}:{i}", row[i] as f32);
            if labels {
                s = format!("{s}:{}", LABELS[i]);
            }
            all.push(s);
        }
    }
    all
}

/// BYTES elements as Triton's binary extension encodes them.
pub fn decode_bytes(mut raw: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    while raw.len() >= 4 {
        let n = u32::from_le_bytes(raw[..4].try_into().unwrap()) as usize;
        out.push(String::from_utf8(raw[4..4 + n].to_vec()).unwrap());
        raw = &raw[4 + n..];
    }
    assert!(raw.is_empty(), "trailing bytes");
    out
}

async fn raw_probabilities(s: &TestServer, model: &str) -> Vec<f64> {
    let (status, out) = s
        .post_json(
            &format!("/v2/models/{model}/infer"),
            &json_body(json!([{"name": "probabilities"}])),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    out["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

fn grpc_request(model: &str, count: pb::infer_parameter::ParameterChoice) -> pb::ModelInferRequest {
    let mut request = raw_request(model, &[iris_input()]);
    request.outputs = vec![pb::model_infer_request::InferRequestedOutputTensor {
        name: "probabilities".into(),
        parameters: [(
            "classification".to_string(),
            pb::InferParameter {
                parameter_choice: Some(count),
            },
        )]
        .into(),
    }];
    request
}

#[tokio::test]
async fn classification_over_rest_json_binary_and_grpc_with_and_without_labels() {
    let repo = iris_repo("");
    let s = TestServer::start(repo.path()).await;
    let mut grpc = client(s.grpc).await;
    for (model, labels) in [("iris", false), ("iris_labels", true)] {
        let probs = raw_probabilities(&s, model).await;
        assert_eq!(probs.len(), 6);
        let want = expected(&probs, 2, labels);

        // REST JSON
        let (status, out) = s
            .post_json(
                &format!("/v2/models/{model}/infer"),
                &json_body(json!([{"name": "probabilities", "parameters": {"classification": 2}}])),
            )
            .await;
        assert_eq!(status, 200, "{out}");
        let o = &out["outputs"][0];
        assert_eq!(o["datatype"], "BYTES");
        assert_eq!(o["shape"], json!([2, 2]));
        assert_eq!(o["data"], json!(want), "{model}");

        // A count over the class count gives every class.
        let (_, out) = s
            .post_json(
                &format!("/v2/models/{model}/infer"),
                &json_body(
                    json!([{"name": "probabilities", "parameters": {"classification": 10}}]),
                ),
            )
            .await;
        assert_eq!(out["outputs"][0]["shape"], json!([2, 3]));
        assert_eq!(
            out["outputs"][0]["data"],
            json!(expected(&probs, 3, labels))
        );

        // REST binary
        let outputs = json!([{"name": "probabilities",
                              "parameters": {"classification": 2, "binary_data": true}}]);
        let (header, blobs) = binary_header(&[iris_input()], Some(outputs));
        let (body, len) = binary_body(&header, &blobs);
        let reply = post_binary(&s, &format!("/v2/models/{model}/infer"), body, Some(len)).await;
        assert_eq!(reply.status, 200, "{}", reply.header);
        assert_eq!(reply.header["outputs"][0]["datatype"], "BYTES");
        assert_eq!(reply.header["outputs"][0]["shape"], json!([2, 2]));
        assert_eq!(decode_bytes(&reply.outputs[0].1), want);

        // gRPC, as tritonclient's class_count sends it
        let request = grpc_request(model, pb::infer_parameter::ParameterChoice::Int64Param(2));
        let response = grpc.model_infer(request).await.unwrap().into_inner();
        assert_eq!(response.outputs[0].datatype, "BYTES");
        assert_eq!(response.outputs[0].shape, vec![2, 2]);
        assert_eq!(decode_bytes(&response.raw_output_contents[0]), want);
    }
    // Triton reports the extension.
    let (_, meta) = s.get("/v2").await;
    assert!(
        meta["extensions"]
            .as_array()
            .unwrap()
            .contains(&json!("classification"))
    );
    s.stop().await;
}

#[tokio::test]
async fn bad_classification_parameters_are_400_naming_it() {
    let repo = iris_repo("");
    crate::harness::models::add_model(
        repo.path(),
        "strings",
        &test_repo().join("dtype_string/1/model.onnx"),
        None,
    );
    let s = TestServer::start(repo.path()).await;
    for (value, needle) in [
        (json!(-1), "non-negative integer, got -1"),
        (json!(1.5), "non-negative integer, got 1.5"),
        (json!("2"), "non-negative integer, got \"2\""),
        (
            json!(5_000_000_000u64),
            "at most 4294967295, got 5000000000",
        ),
    ] {
        let (status, out) = s
            .post_json(
                "/v2/models/iris/infer",
                &json_body(
                    json!([{"name": "probabilities", "parameters": {"classification": value}}]),
                ),
            )
            .await;
        assert_eq!(status, 400, "{out}");
        let error = out["error"].as_str().unwrap();
        assert!(error.contains("output 'probabilities'"), "{error}");
        assert!(error.contains("'classification'"), "{error}");
        assert!(error.contains(needle), "{error}");
    }
    // 0 is Triton's "no classification": the raw tensor.
    let (status, out) = s
        .post_json(
            "/v2/models/iris/infer",
            &json_body(json!([{"name": "probabilities", "parameters": {"classification": 0}}])),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["outputs"][0]["datatype"], "FP32");

    // A BYTES output cannot be classified.
    let body = json!({
        "inputs": [{"name": "INPUT0", "shape": [1, 1], "datatype": "BYTES", "data": ["a"]}],
        "outputs": [{"name": "OUTPUT0", "parameters": {"classification": 1}}],
    });
    let (status, out) = s.post_json("/v2/models/strings/infer", &body).await;
    assert_eq!(status, 400, "{out}");
    let error = out["error"].as_str().unwrap();
    assert!(
        error.contains("output 'OUTPUT0': parameter 'classification' needs an integer, FP32 or FP64 output, got BYTES"),
        "{error}"
    );

    // gRPC: a string parameter is INVALID_ARGUMENT naming it.
    let mut grpc = client(s.grpc).await;
    let request = grpc_request(
        "iris",
        pb::infer_parameter::ParameterChoice::StringParam("2".into()),
    );
    let status = grpc.model_infer(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("'classification'"),
        "{}",
        status.message()
    );
    let request = grpc_request("iris", pb::infer_parameter::ParameterChoice::Int64Param(-2));
    let status = grpc.model_infer(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("got -2"), "{}", status.message());
    s.stop().await;
}

#[tokio::test]
async fn a_label_file_for_an_unknown_output_fails_the_load() {
    let repo = Repo::new().with(
        "iris",
        &test_repo().join("iris/1/model.onnx"),
        Some("[outputs.nope]\nlabel_filename = \"labels.txt\"\n"),
    );
    std::fs::write(repo.path().join("iris/labels.txt"), "a\n").unwrap();
    let s = TestServer::start(repo.path()).await;
    let (_, index) = s.post_json("/v2/repository/index", &json!({})).await;
    let reason = index[0]["reason"].as_str().unwrap_or_default().to_string();
    assert!(reason.contains("no output 'nope'"), "{index}");
    s.stop().await;
}
