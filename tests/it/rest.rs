//! KServe v2 REST: every endpoint, every dtype against ONNX Runtime's own
//! results, every bad input, and failure domains.

use crate::harness::{self, TestServer, data_json, raw_run, test_repo};
use bytes::Bytes;
use serde_json::{Value, json};
use sluice::tensor::{DataType, Tensor, TensorData};

fn iris_body() -> Value {
    json!({"id": "req-1", "inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32",
        "data": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}]})
}

#[tokio::test]
async fn health_metadata_and_infer_endpoints() {
    let s = TestServer::start(&test_repo()).await;
    assert_eq!(s.get("/v2/health/live").await.0, 200);
    assert_eq!(s.get("/v2/health/ready").await.0, 200);

    let (status, meta) = s.get("/v2").await;
    assert_eq!(status, 200);
    assert_eq!(meta["name"], "sluice");
    assert!(meta["extensions"].is_array());

    let (status, meta) = s.get("/v2/models/iris").await;
    assert_eq!(status, 200);
    assert_eq!(meta["name"], "iris");
    assert_eq!(meta["versions"], json!(["1"]));
    assert_eq!(
        meta["inputs"],
        json!([{"name": "input", "datatype": "FP32", "shape": [-1, 4]}])
    );
    assert_eq!(meta["outputs"][0]["name"], "label");
    assert_eq!(s.get("/v2/models/iris/versions/1").await.0, 200);
    assert_eq!(s.get("/v2/models/iris/ready").await.0, 200);
    assert_eq!(s.get("/v2/models/iris/versions/1/ready").await.0, 200);

    let (status, out) = s.post_json("/v2/models/iris/infer", &iris_body()).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["id"], "req-1");
    assert_eq!(out["model_name"], "iris");
    assert_eq!(out["model_version"], "1");
    assert_eq!(out["outputs"][0]["name"], "label");
    assert_eq!(out["outputs"][0]["data"], json!([0, 2]));
    assert_eq!(out["outputs"][1]["shape"], json!([2, 3]));

    // Output selection, and the versioned path.
    let mut body = iris_body();
    body["outputs"] = json!([{"name": "probabilities"}]);
    let (status, out) = s.post_json("/v2/models/iris/versions/1/infer", &body).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["outputs"].as_array().unwrap().len(), 1);
    assert_eq!(out["outputs"][0]["name"], "probabilities");

    // Statistics count the requests.
    let (status, stats) = s.get("/v2/models/iris/stats").await;
    assert_eq!(status, 200);
    assert_eq!(
        stats["model_stats"][0]["inference_stats"]["success"]["count"],
        2
    );

    let (status, text) = s.get("/metrics").await;
    assert_eq!(status, 200);
    let text = text.as_str().unwrap().to_string();
    assert!(text.contains("sluice_requests_total{model=\"iris\",outcome=\"success\",protocol=\"http\",version=\"1\"} 2"), "{text}");
    s.stop().await;
}

#[tokio::test]
async fn unknown_models_versions_and_routes() {
    let s = TestServer::start(&test_repo()).await;
    let (status, body) = s.get("/v2/models/nope").await;
    assert_eq!(status, 404);
    assert_eq!(
        body["error"],
        "Request for unknown model: 'nope' is not found"
    );
    assert_eq!(s.get("/v2/models/iris/versions/7").await.0, 404);
    assert_eq!(s.get("/v2/models/iris/versions/x").await.0, 400);
    assert_eq!(s.get("/v2/models/iris/versions/0/ready").await.0, 400);
    assert_eq!(
        s.post_json("/v2/models/nope/infer", &iris_body()).await.0,
        404
    );
    assert_eq!(s.get("/v2/nothing/here").await.0, 404);
    s.stop().await;
}

/// Two rows of sample values for a dtype, as JSON and as packed bytes.
fn sample(dt: DataType) -> (Value, TensorData) {
    fn pack<T: Copy>(v: &[T], f: impl Fn(T) -> Vec<u8>) -> TensorData {
        TensorData::Fixed(Bytes::from(
            v.iter().flat_map(|&x| f(x)).collect::<Vec<u8>>(),
        ))
    }
    match dt {
        DataType::Bool => (
            json!([true, false, true, true, false, false]),
            pack(&[1u8, 0, 1, 1, 0, 0], |x| vec![x]),
        ),
        DataType::Uint8 => (
            json!([0, 1, 2, 100, 200, 255]),
            pack(&[0u8, 1, 2, 100, 200, 255], |x| vec![x]),
        ),
        DataType::Uint16 => (
            json!([0, 1, 2, 1000, 40000, 65535]),
            pack(&[0u16, 1, 2, 1000, 40000, 65535], |x| {
                x.to_le_bytes().to_vec()
            }),
        ),
        DataType::Uint32 => (
            json!([0, 1, 7, 70000, 3000000000u32, 5]),
            pack(&[0u32, 1, 7, 70000, 3000000000, 5], |x| {
                x.to_le_bytes().to_vec()
            }),
        ),
        DataType::Uint64 => (
            json!([0, 1, 7, 70000, 9000000000000u64, 5]),
            pack(&[0u64, 1, 7, 70000, 9000000000000, 5], |x| {
                x.to_le_bytes().to_vec()
            }),
        ),
        DataType::Int8 => (
            json!([-128, -1, 0, 1, 60, 127]),
            pack(&[-128i8, -1, 0, 1, 60, 127], |x| x.to_le_bytes().to_vec()),
        ),
        DataType::Int16 => (
            json!([-300, -1, 0, 1, 600, 32767]),
            pack(&[-300i16, -1, 0, 1, 600, 32767], |x| {
                x.to_le_bytes().to_vec()
            }),
        ),
        DataType::Int32 => (
            json!([-70000, -1, 0, 1, 7, 2147483647]),
            pack(&[-70000i32, -1, 0, 1, 7, 2147483647], |x| {
                x.to_le_bytes().to_vec()
            }),
        ),
        DataType::Int64 => (
            json!([-9000000000i64, -1, 0, 1, 7, 5]),
            pack(&[-9000000000i64, -1, 0, 1, 7, 5], |x| {
                x.to_le_bytes().to_vec()
            }),
        ),
        DataType::Fp16 => (
            json!([0.5, -1.5, 2.0, 0.25, 100.0, -3.0]),
            pack(&[0.5f32, -1.5, 2.0, 0.25, 100.0, -3.0], |x| {
                half::f16::from_f32(x).to_le_bytes().to_vec()
            }),
        ),
        DataType::Bf16 => (
            json!([0.5, -1.5, 2.0, 0.25, 96.0, -3.0]),
            pack(&[0.5f32, -1.5, 2.0, 0.25, 96.0, -3.0], |x| {
                half::bf16::from_f32(x).to_le_bytes().to_vec()
            }),
        ),
        DataType::Fp32 => (
            json!([0.1, -1.5, 2.0, 1e-3, 1e6, -3.25]),
            pack(&[0.1f32, -1.5, 2.0, 1e-3, 1e6, -3.25], |x| {
                x.to_le_bytes().to_vec()
            }),
        ),
        DataType::Fp64 => (
            json!([0.1, -1.5, 2.0, 1e-300, 1e300, -3.25]),
            pack(&[0.1f64, -1.5, 2.0, 1e-300, 1e300, -3.25], |x| {
                x.to_le_bytes().to_vec()
            }),
        ),
        DataType::Bytes => (
            json!(["a", "", "βγ", "hello", "x y", "z"]),
            TensorData::Bytes(
                ["a", "", "βγ", "hello", "x y", "z"]
                    .iter()
                    .map(|s| Bytes::from(s.as_bytes().to_vec()))
                    .collect(),
            ),
        ),
    }
}

#[tokio::test]
async fn every_dtype_matches_onnx_runtime() {
    let s = TestServer::start(&test_repo()).await;
    for dt in DataType::ALL {
        let model = format!(
            "dtype_{}",
            if dt == DataType::Bytes {
                "string".to_string()
            } else {
                dt.as_str().to_lowercase()
            }
        );
        let (json_data, packed) = sample(dt);
        let body = json!({"inputs": [{"name": "INPUT0", "shape": [2, 3], "datatype": dt.as_str(), "data": json_data}]});
        let (status, out) = s
            .post_json(&format!("/v2/models/{model}/infer"), &body)
            .await;
        assert_eq!(status, 200, "{model}: {out}");

        let path = test_repo().join(&model).join("1/model.onnx");
        let input = Tensor {
            name: "INPUT0".into(),
            datatype: dt,
            shape: vec![2, 3],
            data: packed,
        };
        let expected = raw_run(&path, &[input]);
        let outputs = out["outputs"].as_array().unwrap();
        assert_eq!(outputs.len(), expected.len(), "{model}");
        for (got, want) in outputs.iter().zip(&expected) {
            assert_eq!(got["datatype"], want.datatype.as_str(), "{model}");
            assert_eq!(got["shape"], json!(want.shape), "{model}");
            assert_eq!(got["data"], data_json(want), "{model} {}", got["name"]);
        }
    }
    s.stop().await;
}

#[tokio::test]
async fn bad_inputs_get_400_naming_the_input() {
    let s = TestServer::start_with(&test_repo(), |c| {
        c.limits.max_tensor_elements = 1000;
        c.http.max_body_bytes = 4096;
    })
    .await;
    let x = |shape: Value, dt: &str, data: Value| json!({"inputs": [{"name": "x", "shape": shape, "datatype": dt, "data": data}]});
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "fixed",
            x(json!([2, 3]), "FP64", json!([1, 2, 3, 4, 5, 6])),
            "input 'x': expected datatype FP32, got FP64",
        ),
        (
            "fixed",
            x(json!([6]), "FP32", json!([1, 2, 3, 4, 5, 6])),
            "input 'x': expected shape [2, 3] (-1 is any size), got [6]",
        ),
        (
            "fixed",
            x(json!([2, 4]), "FP32", json!([1, 2, 3, 4, 5, 6, 7, 8])),
            "input 'x': expected shape [2, 3] (-1 is any size), got [2, 4]",
        ),
        (
            "fixed",
            x(json!([2, 3]), "FP32", json!([1, 2, 3, 4, 5])),
            "input 'x': shape [2, 3] needs 6 elements, got 5",
        ),
        (
            "fixed",
            x(json!([2, 3]), "FP32", json!([1, 2, 3, 4, 5, 6, 7])),
            "input 'x': data has more than the 6 elements its shape declares",
        ),
        (
            "fixed",
            json!({"inputs": []}),
            "missing input 'x' (FP32 [2, 3]) for model 'fixed'",
        ),
        (
            "fixed",
            json!({"inputs": [{"name": "y", "shape": [1], "datatype": "FP32", "data": [1]}]}),
            "unknown input 'y' for model 'fixed'; expected inputs: x",
        ),
        (
            "fixed",
            {
                let mut b = x(json!([2, 3]), "FP32", json!([1, 2, 3, 4, 5, 6]));
                b["outputs"] = json!([{"name": "nope"}]);
                b
            },
            "unknown output 'nope' for model 'fixed'; expected outputs: y",
        ),
        (
            "fixed",
            x(json!([2, 3]), "FP32", json!([1, 2, "3", 4, 5, 6])),
            "input 'x': element 2 must be a number (FP32), got the string \"3\"",
        ),
        (
            "dtype_int32",
            json!({"inputs": [{"name": "INPUT0", "shape": [1, 2], "datatype": "INT32", "data": [1, 2.5]}]}),
            "input 'INPUT0': element 1 must be an integer (INT32), got 2.5, a fraction",
        ),
        (
            "dtype_int8",
            json!({"inputs": [{"name": "INPUT0", "shape": [1, 1], "datatype": "INT8", "data": [300]}]}),
            "input 'INPUT0': element 0 must be an integer (INT8), got 300, out of range for INT8",
        ),
        (
            "fixed",
            x(json!([-2, 3]), "FP32", json!([])),
            "input 'x': shape [-2, 3] has a negative dimension; every dimension must be ≥ 0",
        ),
        (
            "fixed",
            x(json!([4294967296i64, 4294967296i64]), "FP32", json!([])),
            "input 'x': shape [4294967296, 4294967296] overflows the element count",
        ),
        (
            "fixed",
            x(json!([2, 3]), "FLOAT", json!([1, 2, 3, 4, 5, 6])),
            "input 'x': unknown datatype 'FLOAT'",
        ),
        (
            "dynamic2",
            x(json!([40, 1]), "FP32", json!(vec![1.0; 40])),
            "input 'x': batch of 40 rows exceeds max_batch_size 32 of model 'dynamic2'",
        ),
    ];
    for (model, body, expected) in cases {
        let (status, out) = s
            .post_json(&format!("/v2/models/{model}/infer"), &body)
            .await;
        assert_eq!(status, 400, "{body}: {out}");
        let msg = out["error"].as_str().unwrap_or_default();
        assert!(
            msg.starts_with(expected),
            "{body}\n got: {msg}\nwant: {expected}"
        );
    }
    // Over the element limit is too large (413), not malformed.
    let (status, out) = s
        .post_json(
            "/v2/models/fixed/infer",
            &x(json!([2000]), "FP32", json!([])),
        )
        .await;
    assert_eq!(status, 413, "{out}");
    assert_eq!(
        out["error"],
        "input 'x': shape [2000] has 2000 elements, more than the limit of 1000 (--max-tensor-elements)"
    );

    // Malformed JSON, and JSON of the wrong shape.
    for raw in [&b"{not json"[..], b"[]", b"{\"inputs\": 3}"] {
        let (status, out) = s.post_raw("/v2/models/fixed/infer", raw.to_vec()).await;
        assert_eq!(status, 400, "{out}");
        assert!(
            out["error"]
                .as_str()
                .unwrap()
                .starts_with("malformed inference request JSON"),
            "{out}"
        );
    }
    // A body over the limit gets 413.
    let (status, out) = s.post_raw("/v2/models/fixed/infer", vec![b' '; 8192]).await;
    assert_eq!(status, 413, "{out}");
    assert!(
        out["error"]
            .as_str()
            .unwrap()
            .contains("larger than the server's limit")
    );

    // The server is still healthy and serving.
    assert_eq!(s.get("/v2/health/ready").await.0, 200);
    let (status, out) = s
        .post_json(
            "/v2/models/fixed/infer",
            &x(json!([2, 3]), "FP32", json!([1, 2, 3, 4, 5, 6])),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(
        out["outputs"][0]["data"],
        json!([2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    );
    s.stop().await;
}

#[tokio::test]
async fn corrupt_model_fails_alone() {
    let s = TestServer::start(&test_repo()).await;
    // Readiness is about every loadable model; the corrupt one is not loadable.
    assert_eq!(s.get("/v2/health/ready").await.0, 200);
    let (status, body) = s.get("/v2/models/corrupt/ready").await;
    assert_eq!(status, 503, "{body}");
    let (status, body) = s
        .post_json(
            "/v2/models/corrupt/infer",
            &json!({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}),
        )
        .await;
    assert_eq!(status, 503);
    let msg = body["error"].as_str().unwrap();
    assert!(
        msg.contains("corrupt") && msg.contains("unavailable"),
        "{msg}"
    );
    assert_eq!(
        s.post_json("/v2/models/iris/infer", &iris_body()).await.0,
        200
    );
    s.stop().await;
}

#[tokio::test]
async fn missing_library_is_one_clear_line() {
    let out = harness::process::command()
        .args([
            "serve",
            "--onnxruntime-lib",
            "/nonexistent/libonnxruntime.so",
            "--http-port",
            "0",
            "--grpc-port",
            "0",
        ])
        .env_remove("ORT_DYLIB_PATH")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].starts_with("error: onnx runtime library not found"),
        "{stderr}"
    );
    assert!(lines[0].contains("make setup"), "{stderr}");
    assert!(!stderr.contains("panicked"));
    let _ = harness::ort_lib();
}
