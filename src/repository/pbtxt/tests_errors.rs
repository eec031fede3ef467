//! Tests of the `config.pbtxt` front end's refusals: bad values name the
//! field, unsupported fields are recorded, paths cannot leave the model
//! directory.

use super::tests::{model_dir, parse_err, parse_in, parse_ok};

#[test]
fn bad_values_name_the_field() {
    for (text, needle) in [
        (
            "name: \"other\"",
            "`name` must match the model's directory name 'm'. Given: 'other'",
        ),
        (
            "max_batch_size: -1",
            "`max_batch_size` must be ≥ 0. Given: -1",
        ),
        (
            "default_model_filename: \"../x.onnx\"",
            "`default_model_filename` must be a plain file name",
        ),
        (
            "input [ { name: \"x\", data_type: TYPE_FP32 } ]",
            "`input 'x'.dims` must list at least one dimension",
        ),
        (
            "input [ { name: \"x\", dims: [ 1 ] } ]",
            "`input 'x'.data_type` must be set",
        ),
        (
            "input [ { name: \"x\", data_type: TYPE_FP32, dims: [ 0 ] } ]",
            "`input 'x'.dims` entries must be ≥ 1, or -1",
        ),
        (
            "input [ { name: \"x\", data_type: TYPE_FP32, dims: [ 4 ], reshape: { shape: [ 3 ] } } ]",
            "`input 'x'.reshape.shape` [3] must hold as many elements as `dims` [4]",
        ),
        (
            "input [ { name: \"x\", data_type: TYPE_FP32, dims: [ 4 ] }, { name: \"x\", data_type: TYPE_FP32, dims: [ 4 ] } ]",
            "declares 'x' more than once",
        ),
        (
            "output [ { name: \"y\", data_type: TYPE_FP32, dims: [ 3 ], label_filename: \"missing.txt\" } ]",
            "`output 'y'.label_filename`",
        ),
        (
            "version_policy: { latest: { num_versions: 0 } }",
            "`version_policy.latest.num_versions` must be ≥ 1",
        ),
        (
            "version_policy: { specific: { versions: [ 0 ] } }",
            "`version_policy.specific.versions` must list positive versions",
        ),
        (
            "instance_group [ { count: -1 } ]",
            "`instance_group[0].count` must be ≥ 1. Given: -1",
        ),
        (
            "instance_group [ { kind: KIND_CPU, gpus: [ 0 ] } ]",
            "`instance_group[0].gpus` must be empty for KIND_CPU",
        ),
        (
            "max_batch_size: 4\ndynamic_batching { preferred_batch_size: [ 8 ] }",
            "`dynamic_batching.preferred_batch_size` entries must be ≤ max_batch_size (4). Given: 8",
        ),
        (
            "dynamic_batching { priority_levels: 2, default_priority_level: 3 }",
            "`dynamic_batching.default_priority_level` must be between 1 and priority_levels (2). Given: 3",
        ),
        (
            "dynamic_batching { priority_levels: 2, default_priority_level: 1, priority_queue_policy { key: 3 value: { } } }",
            "`dynamic_batching.priority_queue_policy[3]`",
        ),
        (
            "optimization { graph { level: 5 } }",
            "`optimization.graph.level` must be -1 (basic), 0 (all), 1 (extended) or 2 (disabled). Given: 5",
        ),
        (
            "optimization { execution_accelerators { gpu_execution_accelerator [ { name: \"rocm\" } ] } }",
            "must be 'tensorrt' or 'cuda'. Given: 'rocm'",
        ),
        (
            "optimization { execution_accelerators { gpu_execution_accelerator [ { name: \"tensorrt\", parameters { key: \"precision_mode\" value: \"FP8\" } } ] } }",
            "'precision_mode' must be FP32, FP16, BF16 or INT8. Given: 'FP8'",
        ),
        (
            "optimization { execution_accelerators { gpu_execution_accelerator [ { name: \"cuda\", parameters { key: \"user_compute_stream\" value: \"1\" } } ] } }",
            "'user_compute_stream' is set by Sluice",
        ),
        (
            "parameters { key: \"execution_mode\" value: { string_value: \"2\" } }",
            "`parameters 'execution_mode'` must be an integer between 0 and 1. Given: '2'",
        ),
        (
            "parameters { key: \"intra_op_thread_count\" value: { string_value: \"many\" } }",
            "`parameters 'intra_op_thread_count'` must be an integer",
        ),
        (
            "parameters { key: \"enable_mem_pattern\" value: { string_value: \"maybe\" } }",
            "`parameters 'enable_mem_pattern'` must be true or false",
        ),
        (
            "max_batch_size: 2\nmodel_warmup [ { batch_size: 4, inputs { key: \"x\" value: { data_type: TYPE_FP32, dims: [ 1 ], zero_data: true } } } ]",
            "`model_warmup[0].batch_size` must be ≤ max_batch_size (2). Given: 4",
        ),
        (
            "model_warmup [ { name: \"w\", batch_size: 1 } ]",
            "`model_warmup 'w'.inputs` must give every input",
        ),
        (
            "model_warmup [ { batch_size: 1, inputs { key: \"x\" value: { data_type: TYPE_FP32, dims: [ 1 ] } } } ]",
            "must set one of zero_data, random_data or input_data_file",
        ),
        (
            "model_warmup [ { batch_size: 1, inputs { key: \"x\" value: { data_type: TYPE_FP32, dims: [ 3 ], input_data_file: \"x.bin\" } } } ]",
            "holds 16 bytes; the sample needs 12",
        ),
        (
            "platform: \"ensemble\"",
            "needs an `ensemble_scheduling` block",
        ),
    ] {
        let err = parse_err(text);
        assert!(err.contains(needle), "{text}\n  gave: {err}");
        assert!(err.contains("config.pbtxt: "), "{err}");
    }
}

#[test]
fn unsupported_fields_are_named_never_dropped() {
    for (text, field) in [
        ("backend: \"python\"", "backend: \"python\""),
        (
            "platform: \"tensorflow_savedmodel\"",
            "platform: \"tensorflow_savedmodel\"",
        ),
        ("runtime: \"model.py\"", "runtime"),
        ("sequence_batching { }", "sequence_batching"),
        (
            "model_transaction_policy { decoupled: true }",
            "model_transaction_policy.decoupled",
        ),
        (
            "batch_input [ { kind: BATCH_ELEMENT_COUNT, target_name: \"n\" } ]",
            "batch_input",
        ),
        ("batch_output [ { target_name: \"o\" } ]", "batch_output"),
        (
            "model_repository_agents { agents [ { name: \"checksum\" } ] }",
            "model_repository_agents",
        ),
        (
            "model_operations { op_library_filename: \"libop.so\" }",
            "model_operations",
        ),
        (
            "cc_model_filenames { key: \"8.0\" value: \"a100.onnx\" }",
            "cc_model_filenames",
        ),
        ("metric_tags { key: \"team\" value: \"a\" }", "metric_tags"),
        (
            "model_metrics { metric_control [ { metric_identifier { family: \"x\" } } ] }",
            "model_metrics",
        ),
        (
            "input [ { name: \"x\", data_type: TYPE_FP32, dims: [ 1 ], allow_ragged_batch: true } ]",
            "allow_ragged_batch",
        ),
        ("instance_group [ { kind: KIND_MODEL } ]", "KIND_MODEL"),
        (
            "instance_group [ { kind: KIND_CPU, count: 1 }, { kind: KIND_GPU } ]",
            "instance_group",
        ),
        (
            "optimization { execution_accelerators { cpu_execution_accelerator [ { name: \"openvino\" } ] } }",
            "cpu_execution_accelerator 'openvino'",
        ),
        (
            "parameters { key: \"memory.enable_memory_arena_shrinkage\" value: { string_value: \"cpu:0\" } }",
            "memory.enable_memory_arena_shrinkage",
        ),
    ] {
        let c = parse_ok(text);
        assert!(
            c.unsupported.iter().any(|u| u.field.contains(field)),
            "{text}: {:?}",
            c.unsupported
        );
    }
}

#[test]
fn paths_never_leave_the_model_directory() {
    let (root, dir) = model_dir();
    std::fs::write(root.path().join("secret.txt"), "s").unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(
        root.path().join("secret.txt"),
        dir.join("warmup").join("link.bin"),
    )
    .unwrap();
    for text in [
        "output [ { name: \"y\", data_type: TYPE_FP32, dims: [ 1 ], label_filename: \"../secret.txt\" } ]",
        "output [ { name: \"y\", data_type: TYPE_FP32, dims: [ 1 ], label_filename: \"/etc/passwd\" } ]",
        "model_warmup [ { batch_size: 1, inputs { key: \"x\" value: { data_type: TYPE_FP32, dims: [ 1 ], input_data_file: \"../labels.txt\" } } } ]",
        "model_warmup [ { batch_size: 1, inputs { key: \"x\" value: { data_type: TYPE_FP32, dims: [ 1 ], input_data_file: \"link.bin\" } } } ]",
    ] {
        let err = parse_in(&dir, text, false).unwrap_err();
        assert!(
            err.contains("without '..'") || err.contains("leads outside the model directory"),
            "{text}: {err}"
        );
    }
}
