//! One inference path behind every protocol (REST JSON, REST binary and gRPC
//! give bit-identical outputs), the repository and configuration API over
//! REST, and v1 predict.

use crate::binary::{binary_body, binary_header, post_binary};
use crate::harness::grpc::{client, raw_request};
use crate::harness::{TestServer, raw_run, test_repo};
use bytes::Bytes;
use serde_json::{Value, json};
use sluice::tensor::encode_raw;
use sluice::tensor::{DataType, Tensor, TensorData};

fn f32_tensor(name: &str, shape: Vec<usize>, values: &[f32]) -> Tensor {
    Tensor {
        name: name.into(),
        datatype: DataType::Fp32,
        shape,
        data: TensorData::Fixed(Bytes::from(
            values
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>(),
        )),
    }
}

/// JSON output data back to packed little-endian bytes.
fn json_to_le(datatype: &str, data: &Value) -> Bytes {
    let items = data.as_array().unwrap();
    let bytes: Vec<u8> = match datatype {
        "FP32" => items
            .iter()
            .flat_map(|v| (v.as_f64().unwrap() as f32).to_le_bytes())
            .collect(),
        "INT64" => items
            .iter()
            .flat_map(|v| v.as_i64().unwrap().to_le_bytes())
            .collect(),
        other => panic!("unexpected {other}"),
    };
    Bytes::from(bytes)
}

#[tokio::test]
async fn rest_json_rest_binary_and_grpc_are_bit_identical() {
    let s = TestServer::start(&test_repo()).await;
    let mut g = client(s.grpc).await;
    // Values that are not round in binary, to catch any lossy float path.
    let values: Vec<f32> = (0..12)
        .map(|i| (i as f32 + 0.1) / 3.0 + 1e-7 * i as f32)
        .collect();
    for (model, input) in [
        ("iris", f32_tensor("input", vec![3, 4], &values)),
        ("dynamic2", f32_tensor("x", vec![2, 6], &values)),
    ] {
        let expected = raw_run(
            &test_repo().join(model).join("1/model.onnx"),
            std::slice::from_ref(&input),
        );

        let TensorData::Fixed(raw) = &input.data else {
            unreachable!()
        };
        let floats: Vec<f32> = raw
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let body = json!({"inputs": [{"name": input.name, "datatype": "FP32", "shape": input.shape, "data": floats}]});
        let (status, rest) = s
            .post_json(&format!("/v2/models/{model}/infer"), &body)
            .await;
        assert_eq!(status, 200, "{rest}");
        let via_json: Vec<Bytes> = rest["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| json_to_le(o["datatype"].as_str().unwrap(), &o["data"]))
            .collect();

        let (mut header, blobs) = binary_header(std::slice::from_ref(&input), None);
        header["parameters"] = json!({"binary_data_output": true});
        let (body, n) = binary_body(&header, &blobs);
        let bin = post_binary(&s, &format!("/v2/models/{model}/infer"), body, Some(n)).await;
        let via_binary: Vec<Bytes> = bin.outputs.into_iter().map(|(_, b)| b).collect();

        let via_grpc = g
            .model_infer(raw_request(model, std::slice::from_ref(&input)))
            .await
            .unwrap()
            .into_inner()
            .raw_output_contents;

        let reference: Vec<Bytes> = expected.iter().map(|o| encode_raw(&o.data)).collect();
        assert_eq!(via_json, reference, "{model}: REST JSON");
        assert_eq!(via_binary, reference, "{model}: REST binary");
        assert_eq!(via_grpc, reference, "{model}: gRPC");
    }
}

#[tokio::test]
async fn repository_index_load_unload_and_config_over_rest() {
    let repo = tempfile::tempdir().unwrap();
    let copy = |name: &str| {
        std::fs::create_dir_all(repo.path().join(name).join("1")).unwrap();
        std::fs::copy(
            test_repo().join(name).join("1/model.onnx"),
            repo.path().join(name).join("1/model.onnx"),
        )
        .unwrap();
    };
    copy("iris");
    copy("corrupt");
    let s = TestServer::start(repo.path()).await;

    let (status, index) = s.post_raw("/v2/repository/index", Vec::new()).await;
    assert_eq!(status, 200, "{index}");
    assert_eq!(index[0]["name"], "corrupt");
    assert_eq!(index[0]["state"], "UNAVAILABLE");
    assert!(
        index[0]["reason"].as_str().unwrap().contains("failed")
            || !index[0]["reason"].as_str().unwrap().is_empty()
    );
    assert_eq!(
        index[1],
        json!({"name": "iris", "version": "1", "state": "READY", "reason": ""})
    );
    let (_, ready) = s
        .post_json("/v2/repository/index", &json!({"ready": true}))
        .await;
    assert_eq!(ready.as_array().unwrap().len(), 1);
    assert_eq!(
        s.post_json("/v2/repository/index", &json!({"ready": "yes"}))
            .await
            .0,
        400
    );

    // A model put on disk after start-up is listed, then loads on request.
    copy("fixed");
    let (_, index) = s.post_raw("/v2/repository/index", Vec::new()).await;
    let fixed = index
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "fixed")
        .unwrap()
        .clone();
    assert_eq!(fixed["state"], "UNAVAILABLE");
    assert_eq!(fixed["reason"], "not loaded");
    assert_eq!(
        s.post_raw("/v2/repository/models/fixed/load", Vec::new())
            .await
            .0,
        200
    );
    assert_eq!(s.get("/v2/models/fixed/ready").await.0, 200);

    // Unload: the model stops serving (503) and the index says so; load again.
    assert_eq!(
        s.post_raw("/v2/repository/models/iris/unload", Vec::new())
            .await
            .0,
        200
    );
    let body = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]});
    assert_eq!(s.post_json("/v2/models/iris/infer", &body).await.0, 503);
    let (_, index) = s.post_raw("/v2/repository/index", Vec::new()).await;
    let iris = index
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "iris")
        .unwrap()
        .clone();
    assert_eq!(
        (iris["state"].as_str(), iris["reason"].as_str()),
        (Some("UNAVAILABLE"), Some("unloaded"))
    );
    assert_eq!(
        s.post_json("/v2/repository/models/iris/load", &json!({}))
            .await
            .0,
        200
    );
    assert_eq!(s.post_json("/v2/models/iris/infer", &body).await.0, 200);
    // Reload of a loaded model; failures keep their codes.
    assert_eq!(
        s.post_raw("/v2/repository/models/iris/load", Vec::new())
            .await
            .0,
        200
    );
    assert_eq!(
        s.post_raw("/v2/repository/models/absent/load", Vec::new())
            .await
            .0,
        404
    );
    assert_eq!(
        s.post_raw("/v2/repository/models/corrupt/load", Vec::new())
            .await
            .0,
        503
    );
    // Triton's `config` override loads (tests/it/triton_config.rs has the
    // rest); model files in the call are refused.
    let (status, e) = s
        .post_json(
            "/v2/repository/models/iris/load",
            &json!({"parameters": {"config": "{}"}}),
        )
        .await;
    assert_eq!(status, 200, "{e}");
    let (status, e) = s
        .post_json(
            "/v2/repository/models/iris/load",
            &json!({"parameters": {"file:1/model.onnx": "AAAA"}}),
        )
        .await;
    assert_eq!(status, 400, "{e}");
    assert!(
        e["error"].as_str().unwrap().contains("'file:1/model.onnx'"),
        "{e}"
    );

    // Names that could leave the repository: 400 on load, unload and config.
    // (A bare ".." segment is normalised away by the HTTP client; gRPC tests it.)
    for name in ["..%2Firis", "%2Fetc", ".hidden", "a%2Fb", "%2E%2E%2Fx"] {
        assert_eq!(
            s.post_raw(&format!("/v2/repository/models/{name}/load"), Vec::new())
                .await
                .0,
            400,
            "load {name}"
        );
        assert_eq!(
            s.post_raw(&format!("/v2/repository/models/{name}/unload"), Vec::new())
                .await
                .0,
            400,
            "unload {name}"
        );
        assert_eq!(
            s.get(&format!("/v2/models/{name}/config")).await.0,
            400,
            "config {name}"
        );
    }

    // Triton-style configuration.
    let (status, config) = s.get("/v2/models/iris/config").await;
    assert_eq!(status, 200, "{config}");
    assert_eq!(config["name"], "iris");
    assert_eq!(config["platform"], "onnxruntime_onnx");
    assert_eq!(config["backend"], "onnxruntime");
    assert_eq!(config["max_batch_size"], 32);
    let (input, label) = (&config["input"][0], &config["output"][0]);
    assert_eq!(
        (&input["name"], &input["data_type"], &input["dims"]),
        (&json!("input"), &json!("TYPE_FP32"), &json!([4]))
    );
    assert_eq!(
        (&label["name"], &label["data_type"], &label["dims"]),
        (&json!("label"), &json!("TYPE_INT64"), &json!([]))
    );
    assert_eq!(config["instance_group"][0]["kind"], "KIND_CPU");
    assert_eq!(
        config["dynamic_batching"]["max_queue_delay_microseconds"],
        0
    );
    assert_eq!(
        config["dynamic_batching"]["default_queue_policy"]["max_queue_size"],
        1024
    );
    assert_eq!(
        config["version_policy"],
        json!({"latest": {"num_versions": 1}})
    );
    assert_eq!(s.get("/v2/models/iris/versions/1/config").await.0, 200);
    assert_eq!(s.get("/v2/models/iris/versions/2/config").await.0, 404);
    assert_eq!(s.get("/v2/models/nope/config").await.0, 404);
    let (_, fixed) = s.get("/v2/models/fixed/config").await;
    assert_eq!(fixed["max_batch_size"], 0);
    assert_eq!(fixed["input"][0]["dims"], json!([2, 3]));
    assert!(fixed.get("dynamic_batching").is_none());
}

#[tokio::test]
async fn v1_predict_rows_and_columns() {
    let s = TestServer::start(&test_repo()).await;
    let rows = json!([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]);

    // Row format, multi-output model: a list of {output: value} per row.
    let (status, out) = s
        .post_json("/v1/models/iris:predict", &json!({"instances": rows}))
        .await;
    assert_eq!(status, 200, "{out}");
    let p = out["predictions"].as_array().unwrap();
    assert_eq!(p.len(), 2);
    assert_eq!(p[0]["label"], 0);
    assert_eq!(p[1]["label"], 2);
    assert_eq!(p[0]["probabilities"].as_array().unwrap().len(), 3);
    // The same rows as objects naming the input.
    let (_, named) = s
        .post_json(
            "/v1/models/iris:predict",
            &json!({"instances": [{"input": rows[0]}, {"input": rows[1]}]}),
        )
        .await;
    assert_eq!(named, out);

    // Matches v2 exactly.
    let (_, v2) = s
        .post_json("/v2/models/iris/infer", &json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 4], "data": rows}]}))
        .await;
    assert_eq!(
        p[1]["probabilities"].as_array().unwrap()[..],
        v2["outputs"][1]["data"].as_array().unwrap()[3..6]
    );

    // Row format, single-output model: per-row values. Columnar: the whole tensor.
    let (status, out) = s
        .post_json(
            "/v1/models/fixed:predict",
            &json!({"instances": [[1, 2, 3], [4, 5, 6]]}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(
        out,
        json!({"predictions": [[2.0, 3.0, 4.0], [5.0, 6.0, 7.0]]})
    );
    let (_, out) = s
        .post_json(
            "/v1/models/fixed:predict",
            &json!({"inputs": [[1, 2, 3], [4, 5, 6]]}),
        )
        .await;
    assert_eq!(out, json!({"outputs": [[2.0, 3.0, 4.0], [5.0, 6.0, 7.0]]}));
    let (_, out) = s
        .post_json(
            "/v1/models/dynamic2:predict",
            &json!({"inputs": {"x": [[1, 2]]}}),
        )
        .await;
    assert_eq!(out, json!({"outputs": {"y": [[3.0, 5.0]], "s": [3.0]}}));
    let (_, out) = s
        .post_json(
            "/v1/models/dtype_string:predict",
            &json!({"instances": [["a", "b"]]}),
        )
        .await;
    assert_eq!(out["predictions"][0]["OUTPUT0"], json!(["aa", "bb"]));

    // Errors.
    assert_eq!(
        s.post_json("/v1/models/iris:explain", &json!({"instances": rows}))
            .await
            .0,
        404
    );
    assert_eq!(
        s.post_json("/v1/models/iris", &json!({"instances": rows}))
            .await
            .0,
        404
    );
    assert_eq!(
        s.post_json("/v1/models/nope:predict", &json!({"instances": rows}))
            .await
            .0,
        404
    );
    assert_eq!(
        s.post_json("/v1/models/iris:predict", &json!({})).await.0,
        400
    );
    assert_eq!(
        s.post_json("/v1/models/iris:predict", &json!({"instances": []}))
            .await
            .0,
        400
    );
    let (status, e) = s
        .post_json(
            "/v1/models/iris:predict",
            &json!({"instances": [[1, 2, 3, 4], [1, 2]]}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(e["error"].as_str().unwrap().contains("ragged"), "{e}");
    let (status, e) = s
        .post_json(
            "/v1/models/iris:predict",
            &json!({"instances": [[1, 2, 3]]}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        e["error"].as_str().unwrap().contains("expected shape"),
        "{e}"
    );
    let (status, e) = s
        .post_json(
            "/v1/models/iris:predict",
            &json!({"instances": [["a", 2, 3, 4]]}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("must be a number (FP32)"),
        "{e}"
    );
}

/// Latency and throughput of one small iris request per protocol, against
/// raw ONNX Runtime. Not a pass/fail test; run it in release:
/// `cargo test --release --test it -- --ignored --nocapture bench_protocols`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run explicitly in release"]
async fn bench_protocols() {
    use std::time::{Duration, Instant};
    const N: usize = 2000;
    const WARMUP: usize = 300;
    const CONCURRENCY: usize = 32;
    const WINDOW: Duration = Duration::from_secs(4);
    let s = std::sync::Arc::new(TestServer::start(&test_repo()).await);
    let input = f32_tensor("input", vec![1, 4], &[5.1, 3.5, 1.4, 0.2]);
    let json_body = serde_json::to_vec(&json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]})).unwrap();
    let (mut header, blobs) = binary_header(std::slice::from_ref(&input), None);
    header["parameters"] = json!({"binary_data_output": true});
    let (bin_body, bin_len) = binary_body(&header, &blobs);
    let grpc_req = raw_request("iris", std::slice::from_ref(&input));
    let g = client(s.grpc).await;

    let one = move |proto: usize| {
        let (s, g, json_body, bin_body, grpc_req) = (
            s.clone(),
            g.clone(),
            json_body.clone(),
            bin_body.clone(),
            grpc_req.clone(),
        );
        async move {
            match proto {
                0 => {
                    let r = s
                        .client
                        .post(s.url("/v2/models/iris/infer"))
                        .body(json_body)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 200);
                    r.bytes().await.unwrap();
                }
                1 => {
                    let r = s
                        .client
                        .post(s.url("/v2/models/iris/infer"))
                        .header("Inference-Header-Content-Length", bin_len.to_string())
                        .body(bin_body)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 200);
                    r.bytes().await.unwrap();
                }
                _ => {
                    let mut g = g;
                    g.model_infer(grpc_req).await.unwrap();
                }
            }
        }
    };
    let pct = |v: &mut Vec<Duration>, p: f64| {
        v.sort();
        v[((v.len() as f64 * p) as usize).min(v.len() - 1)].as_secs_f64() * 1e6
    };
    let mut rows = Vec::new();
    for (proto, name) in [(0, "REST JSON"), (1, "REST binary"), (2, "gRPC")] {
        for _ in 0..WARMUP {
            one(proto).await;
        }
        let mut lat = Vec::with_capacity(N);
        for _ in 0..N {
            let t = Instant::now();
            one(proto).await;
            lat.push(t.elapsed());
        }
        let (p50, p99) = (pct(&mut lat, 0.50), pct(&mut lat, 0.99));
        let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let end = Instant::now() + WINDOW;
        let tasks: Vec<_> = (0..CONCURRENCY)
            .map(|_| {
                let (done, one) = (done.clone(), one.clone());
                tokio::spawn(async move {
                    while Instant::now() < end {
                        one(proto).await;
                        done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let rps = done.load(std::sync::atomic::Ordering::Relaxed) as f64 / WINDOW.as_secs_f64();
        rows.push((name, p50, p99, rps));
    }

    // Raw ONNX Runtime: the same input on one session, no server.
    sluice::runtime::init(&crate::harness::ort_lib()).unwrap();
    let path = test_repo().join("iris/1/model.onnx");
    let (mut inst, _) =
        sluice::runtime::load_instance(&path, &Default::default(), None, 0).unwrap();
    let batch = [sluice::runtime::BatchInput {
        name: "input",
        datatype: DataType::Fp32,
        shape: vec![1, 4],
        parts: vec![&input.data],
    }];
    for _ in 0..WARMUP {
        inst.run(&batch, &[0, 1]).unwrap();
    }
    let mut lat = Vec::with_capacity(N);
    let start = Instant::now();
    for _ in 0..N {
        let t = Instant::now();
        inst.run(&batch, &[0, 1]).unwrap();
        lat.push(t.elapsed());
    }
    let raw_rps = N as f64 / start.elapsed().as_secs_f64();
    let (raw50, raw99) = (pct(&mut lat, 0.50), pct(&mut lat, 0.99));

    let grpc50 = rows[2].1;
    eprintln!("| path | p50 µs | p99 µs | p50 / raw | p50 / gRPC | req/s @ {CONCURRENCY} |");
    eprintln!("|---|---:|---:|---:|---:|---:|");
    for (name, p50, p99, rps) in &rows {
        eprintln!(
            "| {name} | {p50:.0} | {p99:.0} | {:.1}× | {:.2}× | {rps:.0} |",
            p50 / raw50,
            p50 / grpc50
        );
    }
    eprintln!(
        "| raw ONNX Runtime (1 session, 1 thread) | {raw50:.1} | {raw99:.1} | 1.0× | {:.3}× | {raw_rps:.0} (sequential) |",
        raw50 / grpc50
    );
}
