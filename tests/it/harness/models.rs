//! Model repositories in temporary folders, the fixtures they are made of,
//! and requests for the one-input fixtures.
//!
//! `slow.onnx` is y = x after 32 chained 512 x 512 MatMuls: 66 ms a run on
//! an idle 2-core machine, several times that under load, about the same
//! for any batch size. `swap/v{k}.onnx` is y = x + k. Both take one input
//! `x` of shape `[batch, 1]`, FP32.

use super::fixture;
use super::grpc::raw_request;
use bytes::Bytes;
use serde_json::{Value, json};
use sluice::grpc::pb;
use sluice::tensor::{DataType, Tensor, TensorData};
use std::path::{Path, PathBuf};

/// `slow` on one instance with batching off: requests queue and run one
/// after another.
pub const SLOW_SERIAL: &str = "instances = 1\nmax_batch_size = 0\n";

pub fn slow() -> PathBuf {
    fixture("slow.onnx")
}

/// `fixtures/swap/v{k}.onnx`: y = x + k.
pub fn swap_model(k: u64) -> PathBuf {
    fixture(&format!("swap/v{k}.onnx"))
}

/// A model repository in a temporary folder, removed when dropped.
pub struct Repo {
    dir: tempfile::TempDir,
}

impl Repo {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Adds model `name` (version 1: a copy of `file`) with `config` as its
    /// `config.toml`.
    pub fn with(self, name: &str, file: &Path, config: Option<&str>) -> Self {
        add_model(self.path(), name, file, config);
        self
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// A repository with `slow.onnx` as two models: `slow` (one instance) and
/// `slow_q1` (one instance, a queue of one).
pub fn slow_repo() -> Repo {
    Repo::new()
        .with("slow", &slow(), Some("instances = 1\n"))
        .with(
            "slow_q1",
            &slow(),
            Some("instances = 1\n[dynamic_batching]\nmax_queue_size = 1\n"),
        )
}

/// `<repo>/<name>/1/model.onnx` from `file`, with an optional config.toml.
pub fn add_model(repo: &Path, name: &str, file: &Path, config: Option<&str>) {
    let dir = repo.join(name);
    std::fs::create_dir_all(dir.join("1")).unwrap();
    std::fs::copy(file, dir.join("1/model.onnx")).unwrap();
    if let Some(config) = config {
        std::fs::write(dir.join("config.toml"), config).unwrap();
    }
}

/// A REST request of one row `x` for the one-input fixtures.
pub fn x_body(x: f32) -> Value {
    json!({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [x]}]})
}

/// [`x_body`] as the text of a request body.
pub fn x_json(x: f32) -> String {
    x_body(x).to_string()
}

/// The JSON answer of `model` (a one-input fixture) at `base` to one row `x`.
pub async fn infer_x(client: &reqwest::Client, base: &str, model: &str, x: f32) -> Value {
    client
        .post(format!("{base}/v2/models/{model}/infer"))
        .json(&x_body(x))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A `ModelInferRequest` of one row `x` to `model` (a one-input fixture),
/// in `raw_input_contents`.
pub fn x_grpc(model: &str, x: f32) -> pb::ModelInferRequest {
    raw_request(
        model,
        &[Tensor {
            name: "x".into(),
            datatype: DataType::Fp32,
            shape: vec![1, 1],
            data: TensorData::Fixed(Bytes::copy_from_slice(&x.to_le_bytes())),
        }],
    )
}
