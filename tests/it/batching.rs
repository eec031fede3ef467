//! Dynamic batching through the real server and real ONNX Runtime sessions.

use crate::harness::metrics::metric;
use crate::harness::models::{Repo, slow, x_body};
use crate::harness::wait::{PATIENCE, eventually};
use crate::harness::{TestServer, raw_run, test_repo};
use bytes::Bytes;
use futures::future::join_all;
use serde_json::{Value, json};
use sluice::tensor::{DataType, Tensor, TensorData};
use std::time::{Duration, Instant};

fn f32_tensor(name: &str, shape: Vec<usize>, values: &[f32]) -> Tensor {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    Tensor {
        name: name.into(),
        datatype: DataType::Fp32,
        shape,
        data: TensorData::Fixed(Bytes::from(bytes)),
    }
}

fn as_f32(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn floats(out: &sluice::runtime::RunOutput) -> Vec<f32> {
    let TensorData::Fixed(b) = &out.data else {
        unreachable!()
    };
    b.chunks(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[tokio::test]
async fn hundreds_of_concurrent_requests_each_get_their_own_answer() {
    let s = TestServer::start(&test_repo()).await;
    let n = 300;
    let inputs: Vec<[f32; 3]> = (0..n)
        .map(|i| [i as f32, i as f32 + 0.5, -(i as f32) * 0.25])
        .collect();
    let requests = inputs.iter().map(|x| {
        let body =
            json!({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": x}]});
        let s = &s;
        async move { s.post_json("/v2/models/dynamic2/infer", &body).await }
    });
    let answers = join_all(requests).await;

    let flat: Vec<f32> = inputs.iter().flatten().copied().collect();
    let expected = raw_run(
        &test_repo().join("dynamic2/1/model.onnx"),
        &[f32_tensor("x", vec![n, 3], &flat)],
    );
    let (ys, sums) = (floats(&expected[0]), floats(&expected[1]));
    for (i, (status, out)) in answers.iter().enumerate() {
        assert_eq!(*status, 200, "{out}");
        assert_eq!(
            as_f32(&out["outputs"][0]["data"]),
            ys[i * 3..i * 3 + 3],
            "request {i}"
        );
        assert_eq!(
            as_f32(&out["outputs"][1]["data"]),
            sums[i..i + 1],
            "request {i}"
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn mixed_rows_and_shapes_batch_correctly() {
    let s = TestServer::start(&test_repo()).await;
    let cases: Vec<(usize, usize, Vec<f32>)> = (0..120)
        .map(|i| {
            let rows = 1 + i % 4;
            let cols = [2, 3, 5][i % 3];
            let values = (0..rows * cols)
                .map(|k| (i * 100 + k) as f32 * 0.5)
                .collect();
            (rows, cols, values)
        })
        .collect();
    let requests = cases.iter().map(|(rows, cols, values)| {
        let body = json!({"inputs": [{"name": "x", "shape": [rows, cols], "datatype": "FP32", "data": values}]});
        let s = &s;
        async move { s.post_json("/v2/models/dynamic2/infer", &body).await }
    });
    let answers = join_all(requests).await;
    let model = test_repo().join("dynamic2/1/model.onnx");
    for ((rows, cols, values), (status, out)) in cases.iter().zip(&answers) {
        assert_eq!(*status, 200, "{out}");
        let expected = raw_run(&model, &[f32_tensor("x", vec![*rows, *cols], values)]);
        assert_eq!(out["outputs"][0]["shape"], json!([rows, cols]));
        assert_eq!(as_f32(&out["outputs"][0]["data"]), floats(&expected[0]));
        assert_eq!(as_f32(&out["outputs"][1]["data"]), floats(&expected[1]));
    }
    s.stop().await;
}

#[tokio::test]
async fn preferred_size_dispatches_without_waiting_for_the_delay() {
    // A 60 s delay: only reaching the preferred size can dispatch in time.
    let repo = Repo::new().with(
        "d2",
        &test_repo().join("dynamic2/1/model.onnx"),
        Some("max_batch_size = 8\ninstances = 1\n[dynamic_batching]\nmax_queue_delay_us = 60000000\npreferred_batch_sizes = [8]\n"),
    );
    let s = TestServer::start(repo.path()).await;
    let started = Instant::now();
    let requests = (0..8).map(|i| {
        let body =
            json!({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [i, i]}]});
        let s = &s;
        async move { s.post_json("/v2/models/d2/infer", &body).await }
    });
    for (i, (status, out)) in join_all(requests).await.into_iter().enumerate() {
        assert_eq!(status, 200, "{out}");
        assert_eq!(
            as_f32(&out["outputs"][0]["data"]),
            vec![2.0 * i as f32 + 1.0; 2]
        );
    }
    assert!(started.elapsed() < Duration::from_secs(30));
    let (_, stats) = s.get("/v2/models/d2/stats").await;
    let batches = &stats["model_stats"][0]["batch_stats"];
    // One batch of 8, its three phases measured separately (issue 19).
    let ns = |phase: &str| batches[0][phase]["ns"].clone();
    assert_eq!(
        batches,
        &json!([{"batch_size": 8, "compute_input": {"count": 1, "ns": ns("compute_input")},
        "compute_infer": {"count": 1, "ns": ns("compute_infer")},
        "compute_output": {"count": 1, "ns": ns("compute_output")}}])
    );
    for phase in ["compute_input", "compute_infer", "compute_output"] {
        assert!(batches[0][phase]["ns"].as_u64().unwrap() > 0, "{phase}");
    }
    assert_eq!(stats["model_stats"][0]["execution_count"], 1);
    assert_eq!(stats["model_stats"][0]["inference_count"], 8);
    s.stop().await;
}

/// Waits (by observing the gauges, not by sleeping a guess) for `model`'s
/// worker to hold `inflight - pending` requests and its queue `pending`.
async fn wait_for(s: &TestServer, model: &str, inflight: i64, pending: i64) {
    let labels = [("model", model), ("version", "1")];
    eventually(
        format!("gauges inflight={inflight} pending={pending}"),
        PATIENCE,
        || async {
            let text = s.metrics().await;
            metric(&text, "sluice_inflight_requests", &labels) == inflight as f64
                && metric(&text, "sluice_pending_requests", &labels) == pending as f64
        },
    )
    .await;
}

#[tokio::test]
async fn full_queue_503_with_retry_after_and_deadline_504() {
    let repo = Repo::new().with(
        "slow",
        &slow(),
        Some("instances = 1\n[dynamic_batching]\nmax_queue_size = 1\n"),
    );
    let s = TestServer::start(repo.path()).await;
    let body = x_body;
    let url = s.url("/v2/models/slow/infer");

    let first = tokio::spawn(s.client.post(&url).json(&body(1.0)).send());
    wait_for(&s, "slow", 1, 0).await; // running, queue empty
    // Deadline: 1 ms in a queue whose only worker is busy -> 504, never run.
    let mut late = body(2.0);
    late["parameters"] = json!({"timeout": 1000});
    let (status, out) = s.post_json("/v2/models/slow/infer", &late).await;
    assert_eq!(status, 504, "{out}");
    assert!(
        out["error"]
            .as_str()
            .unwrap()
            .contains("timed out in the queue")
    );

    // A burst while the first runs: one request waits in the queue, the
    // rest find it full. (Waiting for "one running, one queued" before
    // sending the next one raced with the run's end on a fast machine under
    // load; a burst of eight against room for one cannot all be let in by
    // runs of tens of milliseconds.)
    let burst = (0..8).map(|_| {
        let request = s.client.post(&url).json(&body(3.0));
        async move { request.send().await.unwrap() }
    });
    let mut admitted = 0;
    let mut refused = 0;
    for r in join_all(burst).await {
        if r.status() == 200 {
            admitted += 1;
            continue;
        }
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["retry-after"], "1");
        let out: Value = r.json().await.unwrap();
        assert!(
            out["error"].as_str().unwrap().contains("queue is full"),
            "{out}"
        );
        refused += 1;
    }
    assert!(refused > 0, "no request of the burst found the queue full");
    assert_eq!(first.await.unwrap().unwrap().status(), 200);
    // Only the admitted requests ever ran: not the late one, not the refused.
    let (_, stats) = s.get("/v2/models/slow/stats").await;
    assert_eq!(
        stats["model_stats"][0]["inference_count"],
        1 + admitted,
        "{stats}"
    );
    s.stop().await;
}

#[tokio::test]
async fn a_run_that_fails_fails_only_its_batch() {
    let s = TestServer::start(&test_repo()).await;
    let requests = (0..40).map(|i| {
        let cols = if i % 2 == 0 { 3 } else { 4 }; // 4 columns pass validation but fail in MatMul
        let body = json!({"inputs": [{"name": "x", "shape": [1, cols], "datatype": "FP32", "data": vec![1.0; cols]}]});
        let s = &s;
        async move { (cols, s.post_json("/v2/models/matmul_dyn/infer", &body).await) }
    });
    for (cols, (status, out)) in join_all(requests).await {
        if cols == 3 {
            assert_eq!(status, 200, "{out}");
            assert_eq!(out["outputs"][0]["shape"], json!([1, 2]));
        } else {
            assert_eq!(status, 500, "{out}");
            assert!(
                out["error"]
                    .as_str()
                    .unwrap()
                    .contains("onnx runtime failed to run the model"),
                "{out}"
            );
        }
    }
    assert_eq!(s.get("/v2/health/ready").await.0, 200);
    s.stop().await;
}
