//! Short requests on an idle server run on the I/O thread that received them
//! (`--inline-run-limit-us`, `src/scheduler/inline.rs`). Through the real
//! binary, whose async runtime reports when its threads park: the answers
//! are ONNX Runtime's over REST and gRPC, sequential and concurrent, and the
//! inline runs are counted.

use crate::harness::grpc::{client, raw_request};
use crate::harness::metrics::{metric, scrape};
use crate::harness::models::Repo;
use crate::harness::process::Sluice;
use crate::harness::{raw_run, test_repo};
use bytes::Bytes;
use futures::future::join_all;
use serde_json::{Value, json};
use sluice::tensor::{DataType, Tensor, TensorData};

const MODEL: &str = "d2";

fn rows(n: usize) -> Vec<[f32; 3]> {
    (0..n)
        .map(|i| [i as f32 * 0.5, -(i as f32), 1.0 / (i as f32 + 1.0)])
        .collect()
}

fn tensor(values: &[f32], rows: usize) -> Tensor {
    Tensor {
        name: "x".into(),
        datatype: DataType::Fp32,
        shape: vec![rows, 3],
        data: TensorData::Fixed(Bytes::from(
            values
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>(),
        )),
    }
}

fn floats(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// ONNX Runtime's answer for every row at once: (y per row, sum per row).
fn expected(inputs: &[[f32; 3]]) -> (Vec<Vec<f32>>, Vec<f32>) {
    let flat: Vec<f32> = inputs.iter().flatten().copied().collect();
    let out = raw_run(
        &test_repo().join("dynamic2/1/model.onnx"),
        &[tensor(&flat, inputs.len())],
    );
    let data = |i: usize| match &out[i].data {
        TensorData::Fixed(b) => floats(b),
        TensorData::Bytes(_) => unreachable!(),
    };
    let ys = data(0).chunks(3).map(<[f32]>::to_vec).collect();
    (ys, data(1))
}

async fn rest(http: &reqwest::Client, base: &str, x: [f32; 3]) -> (Vec<f32>, Vec<f32>) {
    let body = json!({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": x}]});
    let response = http
        .post(format!("{base}/v2/models/{MODEL}/infer"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let out: Value = response.json().await.unwrap();
    let data = |i: usize| -> Vec<f32> {
        out["outputs"][i]["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect()
    };
    (data(0), data(1))
}

async fn inline_runs(http: &reqwest::Client, base: &str) -> f64 {
    let text = scrape(http, base).await;
    metric(&text, "sluice_inline_executions_total", &[("model", MODEL)])
}

fn repo() -> Repo {
    Repo::new().with(MODEL, &test_repo().join("dynamic2/1/model.onnx"), None)
}

#[tokio::test]
async fn requests_on_an_idle_server_run_inline_and_answer_as_onnx_runtime_does() {
    let repo = repo();
    // A limit no run reaches on a loaded machine, so the test does not
    // depend on its speed.
    let server = Sluice::serve(repo.path())
        .args(["--inline-run-limit-us", "1000000"])
        .start()
        .await;
    let http = reqwest::Client::new();
    let inputs = rows(300);
    let (ys, sums) = expected(&inputs);

    // One at a time over REST: the first runs on a worker (nothing is
    // measured yet), the next ones find the server idle.
    for (i, x) in inputs.iter().take(20).enumerate() {
        let (y, sum) = rest(&http, &server.base, *x).await;
        assert_eq!((y, sum), (ys[i].clone(), vec![sums[i]]), "REST request {i}");
    }
    let after_rest = inline_runs(&http, &server.base).await;
    assert!(after_rest >= 1.0, "no inline run over REST: {after_rest}");

    // One at a time over gRPC.
    let mut grpc = client(server.grpc).await;
    for (i, x) in inputs.iter().enumerate().skip(20).take(20) {
        let response = grpc
            .model_infer(raw_request(MODEL, &[tensor(x, 1)]))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            floats(&response.raw_output_contents[0]),
            ys[i],
            "gRPC request {i}"
        );
        assert_eq!(floats(&response.raw_output_contents[1]), vec![sums[i]]);
    }
    let after_grpc = inline_runs(&http, &server.base).await;
    assert!(
        after_grpc > after_rest,
        "no inline run over gRPC: {after_grpc}"
    );

    // Concurrent requests: inline runs and queued batches mixed, each caller
    // still gets exactly its own row.
    let answers = join_all(
        inputs
            .iter()
            .skip(40)
            .map(|x| rest(&http, &server.base, *x)),
    )
    .await;
    for (k, (y, sum)) in answers.into_iter().enumerate() {
        let i = k + 40;
        assert_eq!(
            (y, sum),
            (ys[i].clone(), vec![sums[i]]),
            "concurrent request {i}"
        );
    }
}

#[tokio::test]
async fn a_zero_limit_sends_every_request_through_the_queue() {
    let repo = repo();
    let server = Sluice::serve(repo.path())
        .args(["--inline-run-limit-us", "0"])
        .start()
        .await;
    let http = reqwest::Client::new();
    let inputs = rows(10);
    let (ys, _) = expected(&inputs);
    for (i, x) in inputs.iter().enumerate() {
        assert_eq!(rest(&http, &server.base, *x).await.0, ys[i]);
    }
    let text = scrape(&http, &server.base).await;
    assert_eq!(
        metric(&text, "sluice_executions_total", &[("model", MODEL)]),
        10.0
    );
    assert_eq!(inline_runs(&http, &server.base).await, 0.0);
}
