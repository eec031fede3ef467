//! Triton's response cache: hits answer bit-identical outputs without
//! running (REST JSON, REST binary, gRPC), the byte bound holds under a
//! stream of distinct requests, a reload never serves its predecessor's
//! entries, and nothing is cached unless both the server and the model
//! enable it.

use crate::binary::{binary_body, binary_header, post_binary};
use crate::classification::{iris_input, iris_repo};
use crate::harness::grpc::{client, raw_request};
use crate::harness::models::{Repo, swap_model, x_body};
use crate::harness::{TestServer, test_repo};
use serde_json::{Value, json};
use sluice::grpc::pb;

const MIB: usize = 1 << 20;

fn iris_body(x: f32, outputs: Option<Value>) -> Value {
    let mut body = json!({
        "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32",
                    "data": [x, 3.5, 1.4, 0.2]}],
    });
    if let Some(o) = outputs {
        body["outputs"] = o;
    }
    body
}

async fn stats(s: &TestServer, model: &str) -> Value {
    let (status, stats) = s.get(&format!("/v2/models/{model}/stats")).await;
    assert_eq!(status, 200, "{stats}");
    stats["model_stats"][0].clone()
}

async fn cache_counts(s: &TestServer, model: &str) -> (f64, f64) {
    let text = s.metrics().await;
    let l = [("model", model)];
    (
        crate::harness::metrics::metric(&text, "sluice_cache_hits_total", &l),
        crate::harness::metrics::metric(&text, "sluice_cache_misses_total", &l),
    )
}

#[tokio::test]
async fn cache_hits_are_bit_identical_over_every_protocol_and_skip_the_run() {
    let repo = iris_repo("response_cache = true\n");
    let s = TestServer::start_with(repo.path(), |c| c.cache_size_bytes = MIB).await;

    // REST JSON: the same body twice, and once with classification.
    let first = s
        .post_json("/v2/models/iris/infer", &iris_body(5.1, None))
        .await;
    let second = s
        .post_json("/v2/models/iris/infer", &iris_body(5.1, None))
        .await;
    assert_eq!(first.0, 200, "{}", first.1);
    assert_eq!(first, second);
    assert_eq!(cache_counts(&s, "iris").await, (1.0, 1.0));
    let st = stats(&s, "iris").await;
    assert_eq!(st["execution_count"], 1, "{st}");
    assert_eq!(st["inference_count"], 2, "{st}");
    assert_eq!(st["inference_stats"]["success"]["count"], 2, "{st}");
    assert_eq!(st["inference_stats"]["cache_hit"]["count"], 1, "{st}");
    assert_eq!(st["inference_stats"]["cache_miss"]["count"], 1, "{st}");
    assert_eq!(st["inference_stats"]["queue"]["count"], 1, "{st}");

    // Classification is part of the key: its answer is not the raw one's.
    let classes = json!([{"name": "probabilities", "parameters": {"classification": 2}}]);
    let a = s
        .post_json(
            "/v2/models/iris_labels/infer",
            &iris_body(5.1, Some(classes.clone())),
        )
        .await;
    let b = s
        .post_json(
            "/v2/models/iris_labels/infer",
            &iris_body(5.1, Some(classes)),
        )
        .await;
    assert_eq!(a, b);
    assert_eq!(a.1["outputs"][0]["datatype"], "BYTES", "{}", a.1);
    assert_eq!(cache_counts(&s, "iris_labels").await, (1.0, 1.0));

    // REST binary: identical bytes.
    let outputs = json!([{"name": "probabilities", "parameters": {"binary_data": true}},
                         {"name": "label", "parameters": {"binary_data": true}}]);
    let mut replies = Vec::new();
    for _ in 0..2 {
        let (header, blobs) = binary_header(&[iris_input()], Some(outputs.clone()));
        let (body, len) = binary_body(&header, &blobs);
        let reply = post_binary(&s, "/v2/models/iris/infer", body, Some(len)).await;
        assert_eq!(reply.status, 200, "{}", reply.header);
        replies.push((reply.header, reply.outputs));
    }
    assert_eq!(replies[0], replies[1]);
    assert_eq!(cache_counts(&s, "iris").await, (2.0, 2.0));

    // gRPC: identical raw contents, and a hit of the entry REST binary made
    // (the key is the request's tensors, not its wire format).
    let mut grpc = client(s.grpc).await;
    let mut answers = Vec::new();
    for _ in 0..2 {
        let mut request = raw_request("iris", &[iris_input()]);
        request.outputs = ["probabilities", "label"]
            .iter()
            .map(|n| pb::model_infer_request::InferRequestedOutputTensor {
                name: (*n).into(),
                ..Default::default()
            })
            .collect();
        let r = grpc.model_infer(request).await.unwrap().into_inner();
        answers.push((r.outputs, r.raw_output_contents));
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(cache_counts(&s, "iris").await, (4.0, 2.0));
    let rest: Vec<Vec<u8>> = replies[0].1.iter().map(|(_, b)| b.to_vec()).collect();
    let grpc_raw: Vec<Vec<u8>> = answers[0].1.iter().map(|b| b.to_vec()).collect();
    assert_eq!(rest, grpc_raw);
    // gRPC statistics carry the cache fields too.
    let st = grpc
        .model_statistics(pb::ModelStatisticsRequest {
            name: "iris".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let inference = st.model_stats[0].inference_stats.unwrap();
    assert_eq!(inference.cache_hit.unwrap().count, 4);
    assert_eq!(inference.cache_miss.unwrap().count, 2);
    assert_eq!(st.model_stats[0].execution_count, 2);
    s.stop().await;
}

#[tokio::test]
async fn cache_size_bound_holds_under_distinct_requests() {
    const BOUND: usize = 4096;
    let repo = iris_repo("response_cache = true\n");
    let s = TestServer::start_with(repo.path(), |c| c.cache_size_bytes = BOUND).await;
    for i in 0..60 {
        let (status, out) = s
            .post_json("/v2/models/iris/infer", &iris_body(i as f32, None))
            .await;
        assert_eq!(status, 200, "{out}");
        let size = s.metric("sluice_cache_size_bytes", &[]).await;
        assert!(
            size <= BOUND as f64,
            "cache holds {size} bytes, over {BOUND}"
        );
    }
    assert!(s.metric("sluice_cache_evictions_total", &[]).await > 0.0);
    let entries = s.metric("sluice_cache_entries", &[]).await;
    assert!((1.0..60.0).contains(&entries), "{entries} entries");
    // The most recent request is still there; the first is gone.
    let (_, misses_before) = cache_counts(&s, "iris").await;
    s.post_json("/v2/models/iris/infer", &iris_body(59.0, None))
        .await;
    s.post_json("/v2/models/iris/infer", &iris_body(0.0, None))
        .await;
    let (hits, misses) = cache_counts(&s, "iris").await;
    assert_eq!((hits, misses), (1.0, misses_before + 1.0));
    s.stop().await;
}

#[tokio::test]
async fn cache_a_reload_of_the_same_version_never_serves_old_entries() {
    let repo = Repo::new().with("m", &swap_model(1), Some("response_cache = true\n"));
    let s = TestServer::start_with(repo.path(), |c| c.cache_size_bytes = MIB).await;
    for _ in 0..2 {
        let (status, out) = s.post_json("/v2/models/m/infer", &x_body(0.0)).await;
        assert_eq!(status, 200, "{out}");
        assert_eq!(out["outputs"][0]["data"][0].as_f64(), Some(1.0));
    }
    assert_eq!(cache_counts(&s, "m").await, (1.0, 1.0));
    // Version 1 again, with a different graph (y = x + 2).
    std::fs::copy(swap_model(2), repo.path().join("m/1/model.onnx")).unwrap();
    let (status, out) = s
        .post_json("/v2/repository/models/m/load", &json!({}))
        .await;
    assert_eq!(status, 200, "{out}");
    for _ in 0..2 {
        let (status, out) = s.post_json("/v2/models/m/infer", &x_body(0.0)).await;
        assert_eq!(status, 200, "{out}");
        assert_eq!(
            out["outputs"][0]["data"][0].as_f64(),
            Some(2.0),
            "an old entry"
        );
    }
    // The first request after the reload missed and ran; the second hit
    // the reloaded version's own entry.
    assert_eq!(cache_counts(&s, "m").await, (2.0, 2.0));
    s.stop().await;
}

#[tokio::test]
async fn cache_is_off_by_default_and_for_models_that_do_not_enable_it() {
    // The server's cache is off by default, even for a model that enables it.
    let repo = iris_repo("response_cache = true\n");
    let s = TestServer::start(repo.path()).await;
    for _ in 0..2 {
        s.post_json("/v2/models/iris/infer", &iris_body(5.1, None))
            .await;
    }
    assert_eq!(cache_counts(&s, "iris").await, (0.0, 0.0));
    let st = stats(&s, "iris").await;
    assert_eq!(st["execution_count"], 2, "{st}");
    assert!(st["inference_stats"].get("cache_hit").is_none(), "{st}");
    s.stop().await;

    // A model without response_cache is never cached, with the cache on.
    let repo = Repo::new().with("iris", &test_repo().join("iris/1/model.onnx"), None);
    let s = TestServer::start_with(repo.path(), |c| c.cache_size_bytes = MIB).await;
    for _ in 0..2 {
        s.post_json("/v2/models/iris/infer", &iris_body(5.1, None))
            .await;
    }
    assert_eq!(cache_counts(&s, "iris").await, (0.0, 0.0));
    assert_eq!(s.metric("sluice_cache_entries", &[]).await, 0.0);
    let st = stats(&s, "iris").await;
    assert_eq!(st["execution_count"], 2, "{st}");
    assert!(st["inference_stats"].get("cache_hit").is_none(), "{st}");
    s.stop().await;
}
