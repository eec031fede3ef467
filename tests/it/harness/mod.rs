//! What the integration tests share, one concern a file:
//!
//! - [`server`]: a server in this process on port 0 ([`TestServer`]);
//! - [`process`]: the `sluice` binary as a child process ([`Sluice`]), and
//!   what its clients saw while it stopped ([`Outcome`]);
//! - [`models`]: model repositories in temporary folders, the slow model
//!   and its requests;
//! - [`metrics`]: reading `/metrics`;
//! - [`grpc`]: the tonic client and raw `ModelInferRequest`s;
//! - [`hold`]: requests held open at a known point (admitted, body unsent);
//! - [`logs`]: the in-process servers' warnings, captured to wait on;
//! - [`wait`]: bounded polling on a condition, the only way a test waits.
//!
//! This file keeps the paths and the reference runs on ONNX Runtime.

// Each test module uses a different subset of these helpers.
#![allow(dead_code)]

pub mod grpc;
pub mod hold;
pub mod logs;
pub mod metrics;
pub mod models;
pub mod process;
pub mod server;
pub mod wait;

pub use server::TestServer;

use sluice::runtime::{self, BatchInput, ProviderOptions, RunOutput};
use sluice::tensor::Tensor;
use std::path::{Path, PathBuf};

/// The ONNX Runtime library, found as the binary finds it.
pub fn ort_lib() -> PathBuf {
    let env = std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from);
    runtime::locate_library(None, env.as_deref()).expect("run `make setup` first")
}

/// The repository of test models (`tests/models`).
pub fn test_repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/models")
}

/// The bundled repository (`models`).
pub fn bundled_repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models")
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Runs `model` directly on an ONNX Runtime session (no server), returning
/// every output in graph order: the reference the server must match.
pub fn raw_run(model: &Path, inputs: &[Tensor]) -> Vec<RunOutput> {
    runtime::init(&ort_lib()).unwrap();
    let (mut instance, _) =
        runtime::load_instance(model, &ProviderOptions::default(), None, 0).unwrap();
    let signature = instance.signature().unwrap();
    let batch: Vec<BatchInput<'_>> = signature
        .inputs
        .iter()
        .map(|spec| {
            let t = inputs
                .iter()
                .find(|t| t.name == spec.name)
                .expect("input given");
            BatchInput {
                name: &t.name,
                datatype: t.datatype,
                shape: t.shape.clone(),
                parts: vec![&t.data],
            }
        })
        .collect();
    let wanted: Vec<usize> = (0..signature.outputs.len()).collect();
    instance.run(&batch, &wanted).unwrap()
}

/// The JSON `data` of a tensor, as the server should encode it.
pub fn data_json(out: &RunOutput) -> serde_json::Value {
    serde_json::to_value(sluice::http::codec::json::DataJson {
        datatype: out.datatype,
        data: &out.data,
    })
    .unwrap()
}
