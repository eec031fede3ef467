//! Ensembles (`platform: "ensemble"`): a pipeline of three real models
//! (`fixtures/ensemble/`: pre-processing, a linear layer, softmax/argmax)
//! plus a parallel branch, served by the real server over REST JSON, REST
//! binary, gRPC and gRPC streaming, with the answers computed here by hand
//! from the constants of `scripts/gen_models.py`.
//!
//! - here: outputs, requested outputs, metadata, config, statistics, metrics;
//! - [`load`]: concurrent load over HTTP and gRPC, and hot swaps of the
//!   middle model under that load;
//! - [`validation`]: load-time errors naming the step, and readiness that
//!   follows the composing models.

mod load;
mod validation;

use crate::binary::{binary_body, binary_header, post_binary};
use crate::harness::TestServer;
use crate::harness::grpc::{client, raw_request, stream};
use crate::harness::models::Repo;
use bytes::Bytes;
use serde_json::{Value, json};
use sluice::grpc::pb;
use sluice::tensor::{DataType, Tensor, TensorData};
use std::path::{Path, PathBuf};

/// The pipeline: RAW -> pre -> net -> post -> PROBS, LABEL; LOGITS is an
/// output too, and a second `pre` step (independent of net and post) gives
/// NORMED2 = pre(pre(RAW)). Tensor names differ from the models' own.
pub const PIPELINE: &str = r#"
name: "pipeline"
platform: "ensemble"
max_batch_size: 8
input [ { name: "RAW", data_type: TYPE_FP32, dims: [ 4 ] } ]
output [
  { name: "PROBS", data_type: TYPE_FP32, dims: [ 3 ] },
  { name: "LABEL", data_type: TYPE_INT64, dims: [ 1 ] },
  { name: "LOGITS", data_type: TYPE_FP32, dims: [ 3 ] },
  { name: "NORMED2", data_type: TYPE_FP32, dims: [ 4 ] }
]
ensemble_scheduling {
  step [
    {
      model_name: "post"
      model_version: -1
      input_map { key: "logits" value: "LOGITS" }
      output_map { key: "probs" value: "PROBS" }
      output_map { key: "label" value: "LABEL" }
    },
    {
      model_name: "pre"
      model_version: -1
      input_map { key: "x" value: "RAW" }
      output_map { key: "y" value: "normed" }
    },
    {
      model_name: "net"
      model_version: -1
      input_map { key: "features" value: "normed" }
      output_map { key: "logits" value: "LOGITS" }
    },
    {
      model_name: "pre"
      model_version: -1
      input_map { key: "x" value: "normed" }
      output_map { key: "y" value: "NORMED2" }
    }
  ]
}
"#;

pub fn fixture(name: &str) -> PathBuf {
    crate::harness::fixture(&format!("ensemble/{name}.onnx"))
}

/// `net`'s weights (`ENS_W` of gen_models.py); its bias is [0, k, -k].
const W: [[f32; 3]; 4] = [
    [1.0, -1.0, 0.0],
    [0.0, 2.0, -1.0],
    [-1.0, 0.0, 1.0],
    [0.5, 0.5, 0.5],
];

/// What the pipeline answers for one row, with `net` version k.
#[derive(Debug, Clone, PartialEq)]
pub struct Expected {
    pub probs: Vec<f32>,
    pub label: i64,
    pub logits: Vec<f32>,
    pub normed2: Vec<f32>,
}

pub fn expected(raw: [f32; 4], k: f32) -> Expected {
    let pre = |x: &[f32]| -> Vec<f32> { x.iter().map(|v| (v - 2.0) * 0.5).collect() };
    let normed = pre(&raw);
    let bias = [0.0, k, -k];
    let logits: Vec<f32> = (0..3)
        .map(|j| (0..4).map(|i| normed[i] * W[i][j]).sum::<f32>() + bias[j])
        .collect();
    let max = logits.iter().copied().fold(f32::MIN, f32::max);
    let exp: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    let label = (0..3).fold(0, |best, j| if logits[j] > logits[best] { j } else { best }) as i64;
    Expected {
        probs: exp.iter().map(|e| e / sum).collect(),
        label,
        logits,
        normed2: pre(&normed),
    }
}

pub fn close(got: &[f32], want: &[f32]) -> bool {
    got.len() == want.len() && got.iter().zip(want).all(|(g, w)| (g - w).abs() < 1e-5)
}

/// The rows the tests send.
pub fn rows(n: usize, seed: usize) -> Vec<[f32; 4]> {
    (0..n)
        .map(|r| {
            let s = (seed * 7 + r * 3) as f32;
            [
                s % 5.0,
                (s * 0.5) % 3.0 - 1.0,
                4.0 - s % 6.0,
                (s % 4.0) * 1.5,
            ]
        })
        .collect()
}

/// The pipeline's three models (net as version 1) and the ensemble.
pub fn pipeline_repo() -> Repo {
    let repo = Repo::new()
        .with("pre", &fixture("pre"), None)
        .with("net", &fixture("net_v1"), None)
        .with("post", &fixture("post"), None);
    add_ensemble(repo.path(), "pipeline", PIPELINE);
    repo
}

/// `<repo>/<name>/config.pbtxt` and an empty version directory `1/`.
pub fn add_ensemble(repo: &Path, name: &str, config: &str) {
    let dir = repo.join(name);
    std::fs::create_dir_all(dir.join("1")).unwrap();
    std::fs::write(dir.join("config.pbtxt"), config).unwrap();
}

pub fn raw_tensor(rows: &[[f32; 4]]) -> Tensor {
    let data: Vec<u8> = rows
        .iter()
        .flatten()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    Tensor {
        name: "RAW".into(),
        datatype: DataType::Fp32,
        shape: vec![rows.len(), 4],
        data: TensorData::Fixed(Bytes::from(data)),
    }
}

pub fn json_body(rows: &[[f32; 4]]) -> Value {
    json!({"inputs": [{
        "name": "RAW", "datatype": "FP32", "shape": [rows.len(), 4],
        "data": rows.iter().flatten().collect::<Vec<_>>(),
    }]})
}

fn f32s(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

pub fn le_f32(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

pub fn le_i64(b: &[u8]) -> Vec<i64> {
    b.chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Per output name, the answer's data as f32 (LABEL converted).
pub fn json_outputs(out: &Value) -> Vec<(String, Vec<f32>)> {
    out["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["name"].as_str().unwrap().to_string(), f32s(&o["data"])))
        .collect()
}

/// Checks a whole answer (every output, row-major) against `rows` at net version k.
pub fn matches(outputs: &[(String, Vec<f32>)], rows: &[[f32; 4]], k: f32) -> Result<(), String> {
    let exp: Vec<Expected> = rows.iter().map(|r| expected(*r, k)).collect();
    for (name, got) in outputs {
        let want: Vec<f32> = match name.as_str() {
            "PROBS" => exp.iter().flat_map(|e| e.probs.clone()).collect(),
            "LABEL" => exp.iter().map(|e| e.label as f32).collect(),
            "LOGITS" => exp.iter().flat_map(|e| e.logits.clone()).collect(),
            "NORMED2" => exp.iter().flat_map(|e| e.normed2.clone()).collect(),
            other => return Err(format!("unexpected output {other}")),
        };
        if !close(got, &want) {
            return Err(format!("{name} at k={k}: got {got:?}, want {want:?}"));
        }
    }
    Ok(())
}

fn grpc_outputs(r: &pb::ModelInferResponse) -> Vec<(String, Vec<f32>)> {
    r.outputs
        .iter()
        .zip(&r.raw_output_contents)
        .map(|(o, raw)| {
            let values = match o.datatype.as_str() {
                "INT64" => le_i64(raw).into_iter().map(|v| v as f32).collect(),
                _ => le_f32(raw),
            };
            (o.name.clone(), values)
        })
        .collect()
}

#[tokio::test]
async fn a_pipeline_answers_what_its_models_compute_over_every_protocol() {
    let repo = pipeline_repo();
    let s = TestServer::start(repo.path()).await;
    let x = rows(3, 1);

    // REST JSON: every output, in the declared order, with batch dims.
    let (status, out) = s
        .post_json("/v2/models/pipeline/infer", &json_body(&x))
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["model_name"], "pipeline");
    assert_eq!(out["model_version"], "1");
    let names: Vec<&str> = out["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["PROBS", "LABEL", "LOGITS", "NORMED2"]);
    assert_eq!(out["outputs"][0]["shape"], json!([3, 3]));
    assert_eq!(out["outputs"][1]["shape"], json!([3, 1]));
    assert_eq!(out["outputs"][1]["datatype"], "INT64");
    matches(&json_outputs(&out), &x, 1.0).unwrap();

    // Requested outputs filter and order the answer.
    let mut body = json_body(&x);
    body["outputs"] = json!([{"name": "LABEL"}, {"name": "PROBS"}]);
    let (status, out) = s.post_json("/v2/models/pipeline/infer", &body).await;
    assert_eq!(status, 200, "{out}");
    let got = json_outputs(&out);
    assert_eq!(
        got.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["LABEL", "PROBS"]
    );
    matches(&got, &x, 1.0).unwrap();

    // REST binary in and out.
    let (mut header, blobs) = binary_header(&[raw_tensor(&x)], None);
    header["parameters"] = json!({"binary_data_output": true});
    let (body, n) = binary_body(&header, &blobs);
    let r = post_binary(&s, "/v2/models/pipeline/infer", body, Some(n)).await;
    assert_eq!(r.status, 200, "{}", r.header);
    let got: Vec<(String, Vec<f32>)> = r
        .outputs
        .iter()
        .map(|(name, b)| {
            let v = if name == "LABEL" {
                le_i64(b).into_iter().map(|v| v as f32).collect()
            } else {
                le_f32(b)
            };
            (name.clone(), v)
        })
        .collect();
    assert_eq!(got.len(), 4);
    matches(&got, &x, 1.0).unwrap();

    // gRPC ModelInfer and ModelStreamInfer.
    let mut c = client(s.grpc).await;
    let r = c
        .model_infer(raw_request("pipeline", &[raw_tensor(&x)]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.model_name, "pipeline");
    matches(&grpc_outputs(&r), &x, 1.0).unwrap();
    let requests = (0..4)
        .map(|i| raw_request("pipeline", &[raw_tensor(&rows(2, i))]))
        .collect();
    let (answers, errors) = stream(&mut c, requests).await;
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(answers.len(), 4);
    for a in &answers {
        let seed = (0..4)
            .find(|&i| matches(&grpc_outputs(a), &rows(2, i), 1.0).is_ok())
            .expect("every streamed answer matches one of the requests");
        let _ = seed;
    }

    // Statistics and /metrics: 4 + 4 ensemble requests; each step counts
    // under its own model (pre runs twice per ensemble request).
    let (status, stats) = s.get("/v2/models/pipeline/stats").await;
    assert_eq!(status, 200, "{stats}");
    let st = &stats["model_stats"][0];
    assert_eq!(st["name"], "pipeline");
    assert_eq!(st["inference_stats"]["success"]["count"], 8, "{st}");
    let (_, net) = s.get("/v2/models/net/stats").await;
    assert_eq!(
        net["model_stats"][0]["inference_stats"]["success"]["count"],
        8
    );
    let (_, pre) = s.get("/v2/models/pre/stats").await;
    assert_eq!(
        pre["model_stats"][0]["inference_stats"]["success"]["count"],
        16
    );
    let ok = [("model", "pipeline"), ("outcome", "success")];
    assert_eq!(s.metric("sluice_requests_total", &ok).await, 8.0);
    assert_eq!(
        s.metric(
            "sluice_requests_total",
            &[("model", "net"), ("outcome", "success")]
        )
        .await,
        8.0
    );
    s.stop().await;
}

#[tokio::test]
async fn metadata_config_and_bad_requests_of_an_ensemble() {
    let repo = pipeline_repo();
    let s = TestServer::start(repo.path()).await;
    let (status, meta) = s.get("/v2/models/pipeline").await;
    assert_eq!(status, 200, "{meta}");
    assert_eq!(meta["platform"], "ensemble");
    assert_eq!(meta["versions"], json!(["1"]));
    assert_eq!(
        meta["inputs"],
        json!([{"name": "RAW", "datatype": "FP32", "shape": [-1, 4]}])
    );
    assert_eq!(
        meta["outputs"][1],
        json!({"name": "LABEL", "datatype": "INT64", "shape": [-1, 1]})
    );
    let (status, ready) = s.get("/v2/models/pipeline/ready").await;
    assert_eq!((status, &ready["ready"]), (200, &json!(true)));

    let (status, config) = s.get("/v2/models/pipeline/config").await;
    assert_eq!(status, 200, "{config}");
    assert_eq!(config["platform"], "ensemble");
    assert_eq!(config["max_batch_size"], 8);
    assert_eq!(config["input"][0]["dims"], json!([4]));
    let steps = config["ensemble_scheduling"]["step"].as_array().unwrap();
    assert_eq!(steps.len(), 4);
    assert_eq!(steps[2]["model_name"], "net");
    assert_eq!(steps[2]["model_version"], -1);
    assert_eq!(steps[2]["input_map"], json!({"features": "normed"}));

    let mut c = client(s.grpc).await;
    let meta = c
        .model_metadata(pb::ModelMetadataRequest {
            name: "pipeline".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(meta.platform, "ensemble");
    let config = c
        .model_config(pb::ModelConfigRequest {
            name: "pipeline".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .config
        .unwrap();
    assert_eq!(config.platform, "ensemble");
    match config.scheduling_choice {
        Some(pb::model_config::SchedulingChoice::EnsembleScheduling(e)) => {
            assert_eq!(e.step.len(), 4);
            assert_eq!(e.step[1].output_map["y"], "normed");
        }
        other => panic!("expected ensemble_scheduling, got {other:?}"),
    }

    // Requests are checked against the ensemble's own declaration.
    for (body, needle) in [
        (
            json!({"inputs": [{"name": "RAW", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}),
            "expected shape [-1, 4]",
        ),
        (
            json!({"inputs": [{"name": "RAW", "datatype": "INT32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}),
            "expected datatype FP32, got INT32",
        ),
        (
            json!({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}),
            "unknown input 'x' for model 'pipeline'",
        ),
        (json!({"inputs": []}), "missing input 'RAW'"),
        (
            json!({"inputs": [{"name": "RAW", "datatype": "FP32", "shape": [9, 4], "data": vec![0.0; 36]}]}),
            "max_batch_size 8",
        ),
        (
            json!({"inputs": [{"name": "RAW", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}], "outputs": [{"name": "normed"}]}),
            "unknown output 'normed'",
        ),
    ] {
        let (status, out) = s.post_json("/v2/models/pipeline/infer", &body).await;
        assert_eq!(status, 400, "{body}: {out}");
        assert!(out["error"].as_str().unwrap().contains(needle), "{out}");
    }
    // Priority passes to the steps, which check it against their own levels.
    let mut body = json_body(&rows(1, 0));
    body["parameters"] = json!({"priority": 7});
    let (status, out) = s.post_json("/v2/models/pipeline/infer", &body).await;
    assert_eq!(status, 400, "{out}");
    let error = out["error"].as_str().unwrap();
    assert!(
        error.contains("ensemble 'pipeline' ensemble_scheduling.step["),
        "{error}"
    );
    assert!(error.contains("priority"), "{error}");
    let invalid = [("model", "pipeline"), ("outcome", "invalid")];
    assert!(s.metric("sluice_requests_total", &invalid).await >= 1.0);
    s.stop().await;
}
