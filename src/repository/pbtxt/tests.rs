//! Tests of the `config.pbtxt` front end: each field's mapping, completion
//! from the graph, strict configuration, ensembles, fields
//! without effect, and where a configuration may come from.

use super::*;
use crate::repository::VersionPolicy;
use crate::repository::spec::{ConfigSource, TimeoutAction, WarmupData};
use crate::runtime::{ExecutionProvider, GraphOptimization};
use crate::tensor::DataType;
use std::path::PathBuf;

/// A model directory `m` with a label file and a warmup data file.
pub(super) fn model_dir() -> (tempfile::TempDir, PathBuf) {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("m");
    std::fs::create_dir_all(dir.join("warmup")).unwrap();
    std::fs::write(dir.join("labels.txt"), "cat\ndog\r\nbird\n").unwrap();
    let sample: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    std::fs::write(dir.join("warmup").join("x.bin"), sample).unwrap();
    (root, dir)
}

pub(super) fn parse_in(dir: &Path, text: &str, strict: bool) -> Result<ModelConfig, String> {
    let context = Context {
        dir,
        name: "m",
        strict,
    };
    parse(&dir.join(FILE_NAME), text, &context)
}

pub(super) fn parse_ok(text: &str) -> ModelConfig {
    let (_root, dir) = model_dir();
    parse_in(&dir, text, false).unwrap()
}

pub(super) fn parse_err(text: &str) -> String {
    let (_root, dir) = model_dir();
    parse_in(&dir, text, false).unwrap_err()
}

const FULL: &str = r#"
# Every field Sluice maps, as a Triton user writes them.
name: "m"
platform: "onnxruntime_onnx"
backend: "onnxruntime"
default_model_filename: "net.onnx"
max_batch_size: 8
version_policy: { specific: { versions: [ 1, 3 ] } }
input [
  { name: "x", data_type: TYPE_FP32, dims: [ 2, 2 ], reshape: { shape: [ 4 ] } }
]
output [
  { name: "y", data_type: TYPE_FP32, dims: [ 3 ], label_filename: "labels.txt" },
  { name: "z", data_type: TYPE_INT64, dims: [ 1 ], reshape: { shape: [ ] } }
]
instance_group [ { count: 3, kind: KIND_CPU } ]
dynamic_batching {
  preferred_batch_size: [ 2, 4 ]
  max_queue_delay_microseconds: 500
  preserve_ordering: true
  priority_levels: 2
  default_priority_level: 2
  default_queue_policy { max_queue_size: 16, default_timeout_microseconds: 1000, allow_timeout_override: true }
  priority_queue_policy { key: 1 value: { timeout_action: DELAY, default_timeout_microseconds: 50, max_queue_size: 4 } }
}
optimization { graph: { level: 1 } }
parameters { key: "intra_op_thread_count" value: { string_value: "2" } }
parameters { key: "inter_op_thread_count" value: { string_value: "3" } }
parameters { key: "execution_mode" value: { string_value: "1" } }
parameters { key: "enable_mem_pattern" value: { string_value: "0" } }
parameters { key: "enable_mem_arena" value: { string_value: "false" } }
parameters { key: "session.use_device_allocator_for_initializers" value: { string_value: "1" } }
model_warmup [
  { name: "zeros", batch_size: 2, count: 3, inputs { key: "x" value: { data_type: TYPE_FP32, dims: [ 2, 2 ], zero_data: true } } },
  { name: "file", batch_size: 1, inputs { key: "x" value: { data_type: TYPE_FP32, dims: [ 2, 2 ], input_data_file: "x.bin" } } }
]
response_cache { enable: True }
"#;

#[test]
fn every_supported_field_maps() {
    let c = parse_ok(FULL);
    assert_eq!(c.source, ConfigSource::Pbtxt);
    assert!(c.unsupported.is_empty(), "{:?}", c.unsupported);
    assert!(c.notes.is_empty(), "{:?}", c.notes);
    assert!(!c.complete_from_graph, "inputs and outputs are declared");
    assert_eq!(c.model_filename.as_deref(), Some("net.onnx"));
    assert_eq!(c.max_batch_size, Some(8));
    assert_eq!(c.version_policy, VersionPolicy::Specific(vec![1, 3]));

    assert_eq!(c.inputs.len(), 1);
    assert_eq!(
        (c.inputs[0].datatype, &c.inputs[0].dims[..]),
        (DataType::Fp32, &[2, 2][..])
    );
    assert_eq!(c.inputs[0].reshape.as_deref(), Some(&[4][..]));
    let labels = c.outputs[0].labels.as_ref().unwrap();
    assert_eq!(labels.file, "labels.txt");
    assert_eq!(*labels.labels, vec!["cat", "dog", "bird"]);
    assert_eq!(c.outputs[1].datatype, DataType::Int64);
    assert_eq!(c.outputs[1].reshape.as_deref(), Some(&[][..]));

    assert_eq!((c.instances, c.gpus.clone()), (Some(3), vec![]));
    assert_eq!(
        c.execution_providers,
        vec![ExecutionProvider::Cpu { arena: false }]
    );
    assert!(!c.fallback);

    let b = &c.dynamic_batching;
    assert!(b.enabled && b.preserve_ordering);
    assert_eq!(b.preferred_batch_sizes, vec![2, 4]);
    assert_eq!(b.max_queue_delay_us, 500);
    assert_eq!((b.priority_levels, b.default_priority_level), (2, 2));
    assert_eq!(
        (
            b.default_timeout_us,
            b.allow_timeout_override,
            b.level_queue_size
        ),
        (1000, true, 16)
    );
    assert_eq!(b.max_queue_size, 4 + 16, "the sum of the levels' bounds");
    let level1 = b.queue_policy(1);
    assert_eq!(level1.timeout_action, TimeoutAction::Delay);
    assert_eq!((level1.default_timeout_us, level1.max_queue_size), (50, 4));
    assert!(!level1.allow_timeout_override, "Triton's default is false");
    assert_eq!(b.queue_policy(2).timeout_action, TimeoutAction::Reject);

    assert_eq!(c.intra_op_threads, Some(2));
    let s = &c.session;
    assert_eq!(s.inter_op_threads, Some(3));
    assert!(s.parallel_execution);
    assert_eq!(s.memory_pattern, Some(false));
    assert_eq!(s.optimization, GraphOptimization::Extended);
    assert_eq!(
        s.config_entries["session.use_device_allocator_for_initializers"],
        "1"
    );

    let warmup = c.warmup.as_ref().unwrap();
    assert_eq!(
        (
            warmup[0].name.as_str(),
            warmup[0].batch_size,
            warmup[0].count
        ),
        ("zeros", 2, 3)
    );
    assert_eq!(warmup[0].inputs["x"].data, WarmupData::Zero);
    assert_eq!(warmup[1].count, 1, "count 0 runs once");
    match &warmup[1].inputs["x"].data {
        WarmupData::File { name, bytes } => assert_eq!((name.as_str(), bytes.len()), ("x.bin", 16)),
        other => panic!("expected file data, got {other:?}"),
    }
    assert!(c.response_cache);
}

#[test]
fn a_partial_config_is_completed_from_the_graph() {
    let c = parse_ok("max_batch_size: 0\n");
    assert!(c.complete_from_graph);
    assert_eq!(c.max_batch_size, None, "0 in a partial config: derive it");
    assert!(c.dynamic_batching.enabled, "Triton turns the batcher on");
    let c = parse_ok("max_batch_size: 4\n");
    assert_eq!(c.max_batch_size, Some(4));
    assert_eq!(c.version_policy, VersionPolicy::Latest(1));
    assert_eq!(
        c.execution_providers,
        vec![ExecutionProvider::Cpu { arena: true }]
    );
    // A complete config without dynamic_batching runs requests one at a time.
    let c = parse_ok(
        "input [ { name: \"x\", data_type: TYPE_FP32, dims: [ 4 ] } ]\noutput [ { name: \"y\", data_type: TYPE_FP32, dims: [ 3 ] } ]\nmax_batch_size: 8\n",
    );
    assert!(!c.complete_from_graph);
    assert!(!c.dynamic_batching.enabled);
    assert!(!c.dynamic_batching.allow_timeout_override);
}

#[test]
fn strict_config_must_be_complete() {
    let (_root, dir) = model_dir();
    let err = parse_in(&dir, "max_batch_size: 4\n", true).unwrap_err();
    assert!(err.contains("strict model configuration"), "{err}");
    let c = parse_in(&dir, FULL, true).unwrap();
    assert!(!c.complete_from_graph);
}

#[test]
fn syntax_errors_give_line_and_column() {
    let err = parse_err("max_batch_size: 4\ninput [ { name: \"x\" dims: [ 1, ] } ]\n");
    assert!(err.contains("config.pbtxt: line 2, column"), "{err}");
    let err = parse_err("max_batch_size: 4\nmax_batch: 3\n");
    assert!(err.contains("line 2, column 1"), "{err}");
    assert!(err.contains("max_batch"), "{err}");
    let err = parse_err("instance_group [ { kind: KIND_TPU } ]");
    assert!(err.contains("KIND_TPU"), "{err}");
}

#[test]
fn an_ensemble_is_parsed_into_its_steps() {
    let c = parse_ok(
        r#"
platform: "ensemble"
max_batch_size: 4
input [ { name: "raw", data_type: TYPE_FP32, dims: [ 4 ] } ]
output [ { name: "label", data_type: TYPE_INT64, dims: [ 1 ] } ]
ensemble_scheduling {
  step [
    { model_name: "pre", model_version: -1, input_map { key: "in" value: "raw" }, output_map { key: "out" value: "mid" } },
    { model_name: "net", model_version: 2, input_map { key: "x" value: "mid" }, output_map { key: "y" value: "label" } }
  ]
}
"#,
    );
    let e = c.ensemble.as_ref().unwrap();
    assert_eq!(e.steps.len(), 2);
    assert_eq!(
        (e.steps[0].model_name.as_str(), e.steps[0].model_version),
        ("pre", None)
    );
    assert_eq!(e.steps[1].model_version, Some(2));
    assert_eq!(e.steps[1].input_map["x"], "mid");
    assert!(c.unsupported.is_empty(), "{:?}", c.unsupported);
}

#[test]
fn fields_without_effect_are_noted() {
    let c = parse_ok(
        r#"
input [ { name: "x", data_type: TYPE_FP32, format: FORMAT_NCHW, dims: [ 3, 2, 2 ] } ]
instance_group [ { kind: KIND_CPU, rate_limiter { priority: 2 } } ]
optimization { priority: PRIORITY_MAX, input_pinned_memory { enable: false }, eager_batching: true }
parameters { key: "my_own" value: { string_value: "x" } }
"#,
    );
    assert!(c.unsupported.is_empty(), "{:?}", c.unsupported);
    for needle in [
        "format",
        "rate_limiter",
        "optimization.priority",
        "pinned_memory",
        "eager_batching",
        "my_own",
    ] {
        assert!(
            c.notes.iter().any(|n| n.contains(needle)),
            "{needle}: {:?}",
            c.notes
        );
    }
    assert_eq!(
        c.instances,
        Some(2),
        "Triton's KIND_CPU default count for ONNX Runtime"
    );
}

#[test]
fn gpu_groups_map_to_providers() {
    let c = parse_ok(
        r#"
instance_group [ { count: 2, kind: KIND_GPU, gpus: [ 0 ] }, { count: 2, kind: KIND_GPU, gpus: [ 1, 2 ] } ]
optimization { execution_accelerators { gpu_execution_accelerator [
  { name: "tensorrt", parameters { key: "precision_mode" value: "FP16" } parameters { key: "max_workspace_size_bytes" value: "1073741824" } parameters { key: "trt_engine_cache_enable" value: "1" } },
  { name: "cuda", parameters { key: "cudnn_conv_use_max_workspace" value: "0" } }
] } }
parameters { key: "gpu_mem_limit" value: { string_value: "4294967296" } }
"#,
    );
    assert!(c.unsupported.is_empty(), "{:?}", c.unsupported);
    assert_eq!((c.instances, c.gpus.clone()), (Some(2), vec![0, 1, 2]));
    assert!(!c.fallback);
    match &c.execution_providers[..] {
        [
            ExecutionProvider::Tensorrt {
                fp16: true,
                workspace_size_bytes: Some(1073741824),
                options: trt,
                ..
            },
            ExecutionProvider::Cuda { options: cuda, .. },
        ] => {
            assert_eq!(trt["trt_engine_cache_enable"], "1");
            assert_eq!(cuda["cudnn_conv_use_max_workspace"], "0");
            assert_eq!(cuda["gpu_mem_limit"], "4294967296");
        }
        other => panic!("expected tensorrt then cuda, got {other:?}"),
    }
    let c = parse_ok("instance_group [ { kind: KIND_AUTO } ]");
    assert!(c.fallback);
    assert_eq!(c.execution_providers.len(), 2, "cuda, then the cpu");
}

#[test]
fn the_scan_reads_the_model_filename() {
    let (_root, dir) = model_dir();
    std::fs::write(dir.join(FILE_NAME), "default_model_filename: \"net.onnx\"").unwrap();
    assert_eq!(model_filename(&dir).as_deref(), Some("net.onnx"));
    std::fs::write(dir.join(FILE_NAME), "this is not a config").unwrap();
    assert_eq!(model_filename(&dir), None);
}

#[test]
fn a_directory_holds_one_config_at_most() {
    let (_root, dir) = model_dir();
    let load = |strict| crate::repository::load_config(&dir, "m", strict);
    assert_eq!(load(false).unwrap().source, ConfigSource::Graph);
    let err = load(true).unwrap_err();
    assert!(
        err.contains("no config.pbtxt (strict model configuration"),
        "{err}"
    );
    std::fs::write(dir.join(FILE_NAME), "max_batch_size: 2").unwrap();
    assert_eq!(load(false).unwrap().source, ConfigSource::Pbtxt);
    std::fs::write(dir.join("config.toml"), "max_batch_size = 2").unwrap();
    let err = load(false).unwrap_err();
    assert!(
        err.contains("has both config.toml and config.pbtxt"),
        "{err}"
    );
}
