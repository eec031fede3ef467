//! A catalogue of bad requests, by category, over REST and gRPC. Each must
//! get its exact 4xx status (or gRPC code) with a non-empty `{"error": ...}`
//! body, and afterwards the server must still answer good requests: no
//! panic, no poisoned state. The counts printed here are the ones
//! docs/reliability.md reports.

use crate::harness::grpc::client;
use crate::harness::{TestServer, test_repo};
use sluice::grpc::pb;
use sluice::grpc::pb::model_infer_request::InferInputTensor;
use std::collections::BTreeMap;
use tonic::Code;

const GOOD: &str =
    r#"{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[5.1,3.5,1.4,0.2]}]}"#;

/// (category, method, path, extra headers, body, expected status)
type Case = (
    &'static str,
    &'static str,
    &'static str,
    Vec<(&'static str, String)>,
    Vec<u8>,
    u16,
);

fn rest_cases() -> Vec<Case> {
    let infer = "/v2/models/iris/infer";
    let j = |category, body: &str, status| -> Case {
        (
            category,
            "POST",
            infer,
            vec![],
            body.as_bytes().to_vec(),
            status,
        )
    };
    let mut cases = vec![
        // Not JSON at all, or not the right JSON document.
        j("malformed JSON", "", 400),
        j("malformed JSON", "{", 400),
        j("malformed JSON", "not json", 400),
        j("malformed JSON", r#"{"inputs": [}"#, 400),
        j("malformed JSON", "null", 400),
        j("malformed JSON", "[]", 400),
        j("malformed JSON", r#"{"inputs": 5}"#, 400),
        j(
            "malformed JSON",
            r#"{"inputs": [{"name": "input", "shape": [1,4], "datatype": "FP32", "data": [1,2,3,4]}"#,
            400,
        ),
        (
            "malformed JSON",
            "POST",
            infer,
            vec![],
            vec![0xff, 0xfe, 0x00, 0x7b],
            400,
        ),
        // Valid JSON, wrong schema.
        j("schema", r#"{}"#, 400),
        j(
            "schema",
            r#"{"inputs":[{"shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}"#,
            400,
        ),
        j(
            "schema",
            r#"{"inputs":[{"name":"input","datatype":"FP32","data":[1,2,3,4]}]}"#,
            400,
        ),
        j(
            "schema",
            r#"{"inputs":[{"name":"input","shape":[1,4],"data":[1,2,3,4]}]}"#,
            400,
        ),
        j(
            "schema",
            r#"{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP33","data":[1,2,3,4]}]}"#,
            400,
        ),
        j(
            "schema",
            r#"{"inputs":[{"name":"input","shape":[-1,4],"datatype":"FP32","data":[1,2,3,4]}]}"#,
            400,
        ),
        j(
            "schema",
            r#"{"inputs":[{"name":"input","shape":[1.5,4],"datatype":"FP32","data":[1,2,3,4]}]}"#,
            400,
        ),
        j(
            "schema",
            r#"{"inputs":[{"name":"input","shape":"1,4","datatype":"FP32","data":[1,2,3,4]}]}"#,
            400,
        ),
        j(
            "schema",
            r#"{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":["a","b","c","d"]}]}"#,
            400,
        ),
        j(
            "schema",
            r#"{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,{"x":3},4]}]}"#,
            400,
        ),
        j(
            "schema",
            r#"{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],"outputs":"label"}"#,
            400,
        ),
        j(
            "schema",
            r#"{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],"parameters":[]}"#,
            400,
        ),
        // Well-formed, but not what the model takes.
        j(
            "tensor vs model",
            r#"{"inputs":[{"name":"nope","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}"#,
            400,
        ),
        j("tensor vs model", r#"{"inputs":[]}"#, 400),
        j(
            "tensor vs model",
            r#"{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]},{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}"#,
            400,
        ),
        j(
            "tensor vs model",
            r#"{"inputs":[{"name":"input","shape":[1,4],"datatype":"INT64","data":[1,2,3,4]}]}"#,
            400,
        ),
        j(
            "tensor vs model",
            r#"{"inputs":[{"name":"input","shape":[4],"datatype":"FP32","data":[1,2,3,4]}]}"#,
            400,
        ),
        j(
            "tensor vs model",
            r#"{"inputs":[{"name":"input","shape":[1,5],"datatype":"FP32","data":[1,2,3,4,5]}]}"#,
            400,
        ),
        j(
            "tensor vs model",
            r#"{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3]}]}"#,
            400,
        ),
        j(
            "tensor vs model",
            r#"{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3,4,5]}]}"#,
            400,
        ),
        j(
            "tensor vs model",
            r#"{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],"outputs":[{"name":"nope"}]}"#,
            400,
        ),
        j(
            "tensor vs model",
            r#"{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1e39,2,3,4]}]}"#,
            400,
        ),
        // Addressing.
        (
            "addressing",
            "POST",
            "/v2/models/nope/infer",
            vec![],
            GOOD.into(),
            404,
        ),
        (
            "addressing",
            "POST",
            "/v2/models/iris/versions/0/infer",
            vec![],
            GOOD.into(),
            400,
        ),
        (
            "addressing",
            "POST",
            "/v2/models/iris/versions/abc/infer",
            vec![],
            GOOD.into(),
            400,
        ),
        (
            "addressing",
            "POST",
            "/v2/models/iris/versions/99/infer",
            vec![],
            GOOD.into(),
            404,
        ),
        ("addressing", "GET", "/v2/models/nope", vec![], vec![], 404),
        ("addressing", "GET", "/v2/nothing/here", vec![], vec![], 404),
        // Regression (fuzz rest_router): a name that percent-decodes to
        // invalid UTF-8 got axum's plain-text 400, not our JSON error.
        (
            "addressing",
            "GET",
            "/v2/models/dt%eeype/ready",
            vec![],
            vec![],
            400,
        ),
        (
            "addressing",
            "GET",
            "/v2/models/iris/infer",
            vec![],
            vec![],
            405,
        ),
        (
            "addressing",
            "POST",
            "/v1/models/iris:explode",
            vec![],
            br#"{"instances":[[1,2,3,4]]}"#.to_vec(),
            404,
        ),
        (
            "addressing",
            "POST",
            "/v2/repository/models/nope/load",
            vec![],
            vec![],
            404,
        ),
        (
            "repository",
            "POST",
            "/v2/repository/models/iris/load",
            vec![],
            br#"{"parameters":[null,null]}"#.to_vec(),
            400,
        ),
        (
            "repository",
            "POST",
            "/v2/repository/models/iris/unload",
            vec![],
            br#"{"parameters":5}"#.to_vec(),
            400,
        ),
    ];
    // Triton's binary tensor extension.
    let bin = |header_len: &str, body: Vec<u8>| -> Case {
        (
            "binary extension",
            "POST",
            infer,
            vec![("inference-header-content-length", header_len.to_string())],
            body,
            400,
        )
    };
    let header =
        br#"{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":16}}]}"#;
    let with_data = |n: usize| {
        let mut b = header.to_vec();
        b.extend(std::iter::repeat_n(0u8, n));
        b
    };
    let hl = header.len().to_string();
    cases.extend([
        bin("abc", with_data(16)),
        bin("-1", with_data(16)),
        bin(&(header.len() + 100).to_string(), with_data(16)),
        bin("0", with_data(16)),
        bin(&hl, with_data(8)),
        bin(&hl, with_data(24)),
        bin(&(header.len() - 5).to_string(), with_data(16)),
    ]);
    // Limits (the server below runs with small ones).
    let big = format!(
        r#"{{"inputs":[{{"name":"input","shape":[1,4],"datatype":"FP32","data":[{}]}}]}}"#,
        vec!["1"; 40_000].join(",")
    );
    cases.extend([
        ("limits", "POST", infer, vec![], big.into_bytes(), 413),
        (
            "limits",
            "POST",
            infer,
            vec![],
            format!("{}{}", "[".repeat(5000), "]".repeat(5000)).into_bytes(),
            400,
        ),
        (
            "limits",
            "POST",
            infer,
            vec![],
            br#"{"inputs":[{"name":"input","shape":[100000,4],"datatype":"FP32","data":[1]}]}"#
                .to_vec(),
            413,
        ),
        (
            "limits",
            "POST",
            infer,
            vec![],
            br#"{"inputs":[{"name":"input","shape":[4611686018427387904,4],"datatype":"FP32","data":[1]}]}"#
                .to_vec(),
            400,
        ),
    ]);
    cases
}

#[tokio::test]
async fn every_bad_request_gets_its_4xx_and_harms_nobody() {
    let s = TestServer::start_with(&test_repo(), |c| {
        c.http.max_body_bytes = 64 << 10;
        c.limits.max_tensor_elements = 100_000;
        c.body.max_json_depth = 32;
    })
    .await;
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut wrong = Vec::new();
    for (category, method, path, headers, body, expected) in rest_cases() {
        let mut r = s
            .client
            .request(method.parse().unwrap(), s.url(path))
            .header("content-type", "application/json")
            .body(body.clone());
        for (k, v) in &headers {
            r = r.header(*k, v);
        }
        let response = r.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let error = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_default();
        if status != expected || error.is_empty() {
            wrong.push(format!(
                "{category}: {method} {path} {:?} -> {status} {text:?} (expected {expected})",
                String::from_utf8_lossy(&body[..body.len().min(80)])
            ));
        }
        *counts.entry(category).or_default() += 1;
        // The server is never harmed: a good request still works after each bad one.
        assert_eq!(
            s.post_raw("/v2/models/iris/infer", GOOD.into()).await.0,
            200
        );
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // gRPC: the same kinds of mistakes in protobuf.
    let mut c = client(s.grpc).await;
    let input = |datatype: &str, shape: Vec<i64>| InferInputTensor {
        name: "input".into(),
        datatype: datatype.into(),
        shape,
        ..Default::default()
    };
    let request = |model: &str, version: &str, inputs: Vec<InferInputTensor>, raw: Vec<Vec<u8>>| {
        pb::ModelInferRequest {
            model_name: model.into(),
            model_version: version.into(),
            inputs,
            raw_input_contents: raw.into_iter().map(bytes::Bytes::from).collect(),
            ..Default::default()
        }
    };
    let sixteen = vec![0u8; 16];
    let typed = |v: Vec<f32>| {
        let mut t = input("FP32", vec![1, 4]);
        t.contents = Some(pb::InferTensorContents {
            fp32_contents: v,
            ..Default::default()
        });
        t
    };
    let grpc_cases: Vec<(&str, pb::ModelInferRequest, Code)> = vec![
        (
            "addressing",
            request(
                "nope",
                "",
                vec![input("FP32", vec![1, 4])],
                vec![sixteen.clone()],
            ),
            Code::NotFound,
        ),
        (
            "addressing",
            request(
                "iris",
                "x",
                vec![input("FP32", vec![1, 4])],
                vec![sixteen.clone()],
            ),
            Code::InvalidArgument,
        ),
        (
            "addressing",
            request(
                "iris",
                "9",
                vec![input("FP32", vec![1, 4])],
                vec![sixteen.clone()],
            ),
            Code::NotFound,
        ),
        (
            "schema",
            request(
                "iris",
                "",
                vec![input("FP33", vec![1, 4])],
                vec![sixteen.clone()],
            ),
            Code::InvalidArgument,
        ),
        (
            "schema",
            request(
                "iris",
                "",
                vec![input("FP32", vec![-1, 4])],
                vec![sixteen.clone()],
            ),
            Code::InvalidArgument,
        ),
        (
            "schema",
            request("iris", "", vec![input("FP32", vec![1, 4])], vec![]),
            Code::InvalidArgument,
        ),
        (
            "schema",
            request(
                "iris",
                "",
                vec![input("FP32", vec![1, 4])],
                vec![vec![0u8; 15]],
            ),
            Code::InvalidArgument,
        ),
        (
            "schema",
            request("iris", "", vec![typed(vec![1.0, 2.0, 3.0])], vec![]),
            Code::InvalidArgument,
        ),
        (
            "schema",
            request("iris", "", vec![typed(vec![1.0; 4])], vec![sixteen.clone()]),
            Code::InvalidArgument,
        ),
        (
            "schema",
            request(
                "iris",
                "",
                vec![input("FP32", vec![1, 4])],
                vec![sixteen.clone(), sixteen.clone()],
            ),
            Code::InvalidArgument,
        ),
        (
            "tensor vs model",
            request("iris", "", vec![], vec![]),
            Code::InvalidArgument,
        ),
        (
            "tensor vs model",
            request(
                "iris",
                "",
                vec![input("INT64", vec![1, 2])],
                vec![sixteen.clone()],
            ),
            Code::InvalidArgument,
        ),
        (
            "tensor vs model",
            request(
                "iris",
                "",
                vec![input("FP32", vec![1, 2, 2])],
                vec![sixteen.clone()],
            ),
            Code::InvalidArgument,
        ),
        (
            "limits",
            request(
                "iris",
                "",
                vec![input("FP32", vec![100_000, 4])],
                vec![sixteen.clone()],
            ),
            Code::ResourceExhausted,
        ),
        (
            "limits",
            request(
                "iris",
                "",
                vec![input("FP32", vec![i64::MAX, 4])],
                vec![sixteen.clone()],
            ),
            Code::InvalidArgument,
        ),
    ];
    let mut grpc_counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (category, req, code) in grpc_cases {
        let e = c.model_infer(req.clone()).await.unwrap_err();
        assert_eq!(e.code(), code, "{category}: {req:?}: {e}");
        assert!(!e.message().is_empty());
        *grpc_counts.entry(category).or_default() += 1;
    }
    let live = s.get("/v2/health/live").await.0;
    assert_eq!(live, 200);
    let rest_total: usize = counts.values().sum();
    let grpc_total: usize = grpc_counts.values().sum();
    eprintln!(
        "bad inputs: REST {rest_total} {counts:?}; gRPC {grpc_total} {grpc_counts:?}; every one its exact 4xx, {rest_total} good requests between them all 200"
    );
}
