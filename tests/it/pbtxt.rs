//! Triton's `config.pbtxt`: a repository whose configs use every supported
//! field, served by the real server and compared with ONNX Runtime run
//! directly; unsupported fields (UNAVAILABLE by default, a warning with
//! `ignore_unsupported_config`); and configs that contradict the graph.
//! The repositories are built in a temp dir from the `.onnx` files of
//! `tests/models`; the configs are written from Triton's documentation.

use crate::harness::{TestServer, data_json, raw_run, test_repo};
use bytes::Bytes;
use serde_json::{Value, json};
use sluice::tensor::{DataType, Tensor, TensorData};
use std::path::Path;
use std::sync::Arc;

/// Iris served with every supported field. Clients send `input` as 2×2 and
/// get `label` as [1] per row; the graph takes [4] and gives a scalar.
const IRIS: &str = r#"
name: "iris_pb"
platform: "onnxruntime_onnx"
backend: "onnxruntime"
default_model_filename: "net.onnx"
max_batch_size: 8
version_policy: { specific: { versions: [ 2 ] } }
input [
  {
    name: "input"
    data_type: TYPE_FP32
    dims: [ 2, 2 ]
    reshape: { shape: [ 4 ] }
  }
]
output [
  {
    name: "probabilities"
    data_type: TYPE_FP32
    dims: [ 3 ]
    label_filename: "iris_labels.txt"
  },
  {
    name: "label"
    data_type: TYPE_INT64
    dims: [ 1 ]
    reshape: { shape: [ ] }
  }
]
instance_group [ { count: 2, kind: KIND_CPU } ]
dynamic_batching {
  preferred_batch_size: [ 2, 4 ]
  max_queue_delay_microseconds: 200
  preserve_ordering: true
  priority_levels: 2
  default_priority_level: 2
  default_queue_policy {
    max_queue_size: 64
    default_timeout_microseconds: 30000000
    allow_timeout_override: true
  }
  priority_queue_policy {
    key: 1
    value: { timeout_action: DELAY, default_timeout_microseconds: 10000000, max_queue_size: 32 }
  }
}
optimization { graph: { level: 1 } }
parameters { key: "intra_op_thread_count" value: { string_value: "1" } }
parameters { key: "inter_op_thread_count" value: { string_value: "1" } }
parameters { key: "execution_mode" value: { string_value: "0" } }
parameters { key: "enable_mem_pattern" value: { string_value: "1" } }
parameters { key: "enable_mem_arena" value: { string_value: "1" } }
parameters { key: "session.use_device_allocator_for_initializers" value: { string_value: "0" } }
model_warmup [
  {
    name: "zeros"
    batch_size: 4
    count: 2
    inputs { key: "input" value: { data_type: TYPE_FP32, dims: [ 2, 2 ], zero_data: true } }
  },
  {
    name: "random"
    batch_size: 8
    inputs { key: "input" value: { data_type: TYPE_FP32, dims: [ 2, 2 ], random_data: true } }
  },
  {
    name: "sample"
    batch_size: 1
    inputs { key: "input" value: { data_type: TYPE_FP32, dims: [ 2, 2 ], input_data_file: "setosa.bin" } }
  }
]
response_cache { enable: true }
"#;

fn copy_model(from: &str, to: &Path, version: u64, file: &str) {
    let dir = to.join(version.to_string());
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(test_repo().join(from).join("1/model.onnx"), dir.join(file)).unwrap();
}

fn model(root: &Path, name: &str, from: &str, config: &str) -> std::path::PathBuf {
    let dir = root.join(name);
    copy_model(from, &dir, 1, "model.onnx");
    std::fs::write(dir.join("config.pbtxt"), config).unwrap();
    dir
}

fn f32_bytes(values: &[f32]) -> Bytes {
    Bytes::from(
        values
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>(),
    )
}

/// The repository of the main test: iris_pb (everything), dyn_partial (a
/// config that only sets max_batch_size), and a model with no config.
pub(crate) fn repository() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let iris = root.path().join("iris_pb");
    for v in [1, 2] {
        copy_model("iris", &iris, v, "net.onnx");
    }
    std::fs::write(iris.join("config.pbtxt"), IRIS).unwrap();
    std::fs::write(
        iris.join("iris_labels.txt"),
        "setosa\nversicolor\nvirginica\n",
    )
    .unwrap();
    std::fs::create_dir_all(iris.join("warmup")).unwrap();
    std::fs::write(
        iris.join("warmup/setosa.bin"),
        f32_bytes(&[5.1, 3.5, 1.4, 0.2]),
    )
    .unwrap();
    model(
        root.path(),
        "dyn_partial",
        "dynamic2",
        "# Only the batch size: the rest comes from the model.\nmax_batch_size: 4\n",
    );
    copy_model("matmul_dyn", &root.path().join("plain"), 1, "model.onnx");
    root
}

#[tokio::test]
async fn a_config_using_every_supported_field_serves_what_onnx_runtime_computes() {
    let repo = repository();
    let s = TestServer::start(repo.path()).await;

    // Only version 2 (version_policy), under the declared names and shapes.
    let (status, meta) = s.get("/v2/models/iris_pb").await;
    assert_eq!(status, 200, "{meta}");
    assert_eq!(meta["versions"], json!(["2"]));
    assert_eq!(
        meta["inputs"],
        json!([{"name": "input", "datatype": "FP32", "shape": [-1, 2, 2]}])
    );
    assert_eq!(
        meta["outputs"],
        json!([
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
            {"name": "label", "datatype": "INT64", "shape": [-1, 1]}
        ])
    );
    assert_ne!(s.get("/v2/models/iris_pb/versions/1/ready").await.0, 200);

    // Concurrent distinct requests, both priority levels: each gets the rows
    // ONNX Runtime computes for it.
    let rows: Vec<[f32; 4]> = (0..12)
        .map(|i| {
            let f = i as f32;
            [4.5 + 0.2 * f, 3.0 - 0.1 * f, 1.0 + 0.4 * f, 0.1 + 0.15 * f]
        })
        .collect();
    let s = Arc::new(s);
    let mut tasks = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let (s, row) = (s.clone(), *row);
        tasks.push(tokio::spawn(async move {
            let body = json!({
                "inputs": [{"name": "input", "shape": [1, 2, 2], "datatype": "FP32", "data": row}],
                "parameters": {"priority": 1 + (i % 2), "timeout": 20_000_000}
            });
            let (status, out) = s.post_json("/v2/models/iris_pb/infer", &body).await;
            assert_eq!(status, 200, "{out}");
            (row, out)
        }));
    }
    let path = repo.path().join("iris_pb/2/net.onnx");
    for task in tasks {
        let (row, out) = task.await.unwrap();
        let want = raw_run(
            &path,
            &[Tensor {
                name: "input".into(),
                datatype: DataType::Fp32,
                shape: vec![1, 4],
                data: TensorData::Fixed(f32_bytes(&row)),
            }],
        );
        // Graph outputs: label [1], probabilities [1, 3].
        let outputs = out["outputs"].as_array().unwrap();
        assert_eq!(outputs[0]["name"], "probabilities");
        assert_eq!(outputs[0]["shape"], json!([1, 3]));
        assert_close(&outputs[0]["data"], &data_json(&want[1]));
        assert_eq!(outputs[1]["name"], "label");
        assert_eq!(outputs[1]["shape"], json!([1, 1]), "reshaped back to dims");
        assert_eq!(outputs[1]["data"], data_json(&want[0]));
    }

    // A batch of two in one request, and the partial config completed from
    // the graph (outputs y and s, batching at 4).
    let (status, out) = s
        .post_json(
            "/v2/models/iris_pb/infer",
            &json!({"inputs": [{"name": "input", "shape": [2, 2, 2], "datatype": "FP32",
                "data": [5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3]}]}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["outputs"][1]["data"], json!([0, 2]));
    // Classification carries the labels of `label_filename`.
    let (status, out) = s
        .post_json(
            "/v2/models/iris_pb/infer",
            &json!({"inputs": [{"name": "input", "shape": [2, 2, 2], "datatype": "FP32",
                "data": [5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3]}],
                "outputs": [{"name": "probabilities", "parameters": {"classification": 1}}]}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["outputs"][0]["shape"], json!([2, 1]));
    let classes = out["outputs"][0]["data"].as_array().unwrap();
    assert!(classes[0].as_str().unwrap().ends_with(":0:setosa"), "{out}");
    assert!(
        classes[1].as_str().unwrap().ends_with(":2:virginica"),
        "{out}"
    );
    let (status, meta) = s.get("/v2/models/dyn_partial").await;
    assert_eq!(status, 200, "{meta}");
    assert_eq!(meta["outputs"][1]["name"], "s");
    let x = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
    let (status, out) = s
        .post_json(
            "/v2/models/dyn_partial/infer",
            &json!({"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32", "data": x}]}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    let want = raw_run(
        &repo.path().join("dyn_partial/1/model.onnx"),
        &[Tensor {
            name: "x".into(),
            datatype: DataType::Fp32,
            shape: vec![2, 3],
            data: TensorData::Fixed(f32_bytes(&x)),
        }],
    );
    for (got, want) in out["outputs"].as_array().unwrap().iter().zip(&want) {
        assert_eq!(got["shape"], json!(want.shape));
        assert_close(&got["data"], &data_json(want));
    }
    let over = json!({"inputs": [{"name": "x", "shape": [5, 3], "datatype": "FP32", "data": vec![0.0f32; 15]}]});
    let (status, out) = s.post_json("/v2/models/dyn_partial/infer", &over).await;
    assert_eq!(status, 400, "max_batch_size 4 from config.pbtxt: {out}");
    assert_eq!(s.get("/v2/models/plain/ready").await.0, 200);
    if let Ok(s) = Arc::try_unwrap(s) {
        s.stop().await;
    }
}

fn assert_close(got: &Value, want: &Value) {
    let (got, want) = (got.as_array().unwrap(), want.as_array().unwrap());
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        let (g, w) = (g.as_f64().unwrap(), w.as_f64().unwrap());
        assert!((g - w).abs() <= 1e-5 * w.abs().max(1.0), "{g} vs {w}");
    }
}

/// Models whose config Sluice cannot honour, or that contradicts the graph.
fn broken_repository() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    model(
        root.path(),
        "seq",
        "iris",
        "max_batch_size: 4\nsequence_batching { }\n",
    );
    model(
        root.path(),
        "wrong_dims",
        "iris",
        "max_batch_size: 4\ninput [ { name: \"input\", data_type: TYPE_FP32, dims: [ 5 ] } ]\n",
    );
    model(
        root.path(),
        "wrong_type",
        "iris",
        "max_batch_size: 4\ninput [ { name: \"input\", data_type: TYPE_FP64, dims: [ 4 ] } ]\n",
    );
    let both = model(root.path(), "both", "iris", "max_batch_size: 4\n");
    std::fs::write(both.join("config.toml"), "max_batch_size = 4\n").unwrap();
    root
}

#[tokio::test]
async fn unsupported_or_contradicting_configs_are_unavailable_with_the_reason() {
    let repo = broken_repository();
    let s = TestServer::start(repo.path()).await;
    let (status, index) = s.post_json("/v2/repository/index", &json!({})).await;
    assert_eq!(status, 200, "{index}");
    let reason = |name: &str| -> String {
        let entry = index
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("{name} not in {index}"));
        assert_eq!(entry["state"], "UNAVAILABLE", "{name}: {entry}");
        entry["reason"].as_str().unwrap().to_string()
    };
    let seq = reason("seq");
    assert!(
        seq.contains("`sequence_batching` is not supported"),
        "{seq}"
    );
    assert!(seq.contains("--ignore-unsupported-config"), "{seq}");
    let dims = reason("wrong_dims");
    assert!(
        dims.contains("input 'input'") && dims.contains("[-1, 5]"),
        "{dims}"
    );
    let dtype = reason("wrong_type");
    assert!(
        dtype.contains("input 'input'") && dtype.contains("FP64"),
        "{dtype}"
    );
    let both = reason("both");
    assert!(both.contains("both config.toml and config.pbtxt"), "{both}");
    s.stop().await;
}

#[tokio::test]
async fn ignoring_unsupported_fields_loads_the_model_without_them() {
    let repo = broken_repository();
    let seq_state = |s: &TestServer| {
        let s = s.url("/v2/repository/index");
        async move {
            let index: Value = reqwest::Client::new()
                .post(s)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            index
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["name"] == "seq")
                .cloned()
                .unwrap()
        }
    };
    let strict = TestServer::start_with(repo.path(), |c| c.strict_readiness = false).await;
    let row = seq_state(&strict).await;
    assert_eq!(row["state"], "UNAVAILABLE", "{row}");
    assert!(
        row["reason"]
            .as_str()
            .unwrap()
            .contains("sequence_batching"),
        "{row}"
    );
    strict.stop().await;
    let lenient = TestServer::start_with(repo.path(), |c| {
        c.strict_readiness = false;
        c.ignore_unsupported_config = true;
    })
    .await;
    let row = seq_state(&lenient).await;
    assert_eq!(row["state"], "READY", "{row}");
    let (status, config) = lenient.get("/v2/models/seq/config").await;
    assert_eq!(status, 200, "{config}");
    assert_eq!(config["max_batch_size"], 4, "{config}");
    lenient.stop().await;
}
