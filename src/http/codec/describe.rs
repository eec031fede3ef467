//! The JSON of the non-inference answers: model metadata, Triton's
//! statistics, model configuration and repository index, each encoded from
//! the service's plain snapshot.

use crate::repository::config::VersionPolicy;
use crate::service::{
    ConfigTensor, IndexRow, ModelConfigView, ModelMetadata, StatDuration, VersionStats,
};
use crate::tensor::TensorSpec;
use serde_json::{Value, json};

/// KServe v2 model metadata.
pub(crate) fn metadata_json(m: &ModelMetadata) -> Value {
    let tensors = |specs: &[TensorSpec]| -> Vec<Value> {
        specs
            .iter()
            .map(|t| json!({"name": t.name, "datatype": t.datatype.as_str(), "shape": t.shape}))
            .collect()
    };
    let versions: Vec<String> = m.versions.iter().map(u64::to_string).collect();
    json!({
        "name": m.name,
        "versions": versions,
        "platform": m.platform,
        "inputs": tensors(&m.inputs),
        "outputs": tensors(&m.outputs),
        "parameters": {
            "max_batch_size": m.max_batch_size,
            "execution_provider": m.execution_provider,
            "execution_provider_fallbacks": m.provider_fallbacks.join("; "),
        },
    })
}

fn duration(d: StatDuration) -> Value {
    json!({"count": d.count, "ns": d.ns})
}

/// Triton's statistics of one version.
pub(crate) fn stats_json(s: &VersionStats) -> Value {
    let batches: Vec<Value> = s
        .batches
        .iter()
        .map(|b| {
            json!({
                "batch_size": b.batch_size,
                "compute_input": duration(b.compute_input),
                "compute_infer": duration(b.compute_infer),
                "compute_output": duration(b.compute_output),
            })
        })
        .collect();
    let mut inference = json!({
        "success": duration(s.success),
        "fail": duration(s.fail),
        "queue": duration(s.queue),
        "compute_input": duration(s.compute_input),
        "compute_infer": duration(s.compute_infer),
        "compute_output": duration(s.compute_output),
    });
    if let (Some(hit), Some(miss)) = (s.cache_hit, s.cache_miss) {
        super::set(&mut inference, "cache_hit", duration(hit));
        super::set(&mut inference, "cache_miss", duration(miss));
    }
    json!({
        "name": s.name,
        "version": s.version.to_string(),
        "last_inference": s.last_inference,
        "inference_count": s.inference_count,
        "execution_count": s.execution_count,
        "inference_stats": inference,
        "batch_stats": batches,
        "pending_requests": s.pending_requests,
    })
}

/// Triton's repository index.
pub(crate) fn index_json(rows: Vec<IndexRow>) -> Value {
    Value::Array(
        rows.into_iter()
            .map(|r| {
                let mut v = json!({"name": r.name, "state": r.state, "reason": r.reason});
                if let Some(version) = r.version {
                    super::set(&mut v, "version", Value::String(version.to_string()));
                }
                v
            })
            .collect(),
    )
}

/// Triton's JSON model configuration.
pub(crate) fn config_json(c: &ModelConfigView) -> Value {
    let tensors = |ts: &[ConfigTensor]| -> Vec<Value> {
        ts.iter()
            .map(|t| {
                json!({
                    "name": t.name,
                    "data_type": config_datatype(t.datatype),
                    "dims": t.dims,
                })
            })
            .collect()
    };
    let b = &c.dynamic_batching;
    let policy = match &c.version_policy {
        VersionPolicy::Latest(n) => json!({"latest": {"num_versions": n}}),
        VersionPolicy::All => json!({"all": {}}),
        VersionPolicy::Specific(v) => json!({"specific": {"versions": v}}),
    };
    let (kind, gpus) = if c.gpu {
        ("KIND_GPU", vec![c.device_id])
    } else {
        ("KIND_CPU", vec![])
    };
    let mut config = json!({
        "name": c.name,
        "platform": "onnxruntime_onnx",
        "backend": "onnxruntime",
        "version_policy": policy,
        "max_batch_size": c.max_batch_size,
        "input": tensors(&c.inputs),
        "output": tensors(&c.outputs),
        "instance_group": [{
            "name": format!("{}_0", c.name),
            "count": c.instances,
            "kind": kind,
            "gpus": gpus,
        }],
        "default_model_filename": "model.onnx",
    });
    if let Some(steps) = &c.ensemble {
        let steps: Vec<Value> = steps
            .iter()
            .map(|s| {
                json!({
                    "model_name": s.model_name,
                    "model_version": s.model_version,
                    "input_map": s.input_map,
                    "output_map": s.output_map,
                })
            })
            .collect();
        return json!({
            "name": c.name,
            "platform": "ensemble",
            "backend": "",
            "version_policy": policy,
            "max_batch_size": c.max_batch_size,
            "input": tensors(&c.inputs),
            "output": tensors(&c.outputs),
            "ensemble_scheduling": {"step": steps},
        });
    }
    if c.max_batch_size > 0 {
        super::set(
            &mut config,
            "dynamic_batching",
            json!({
                "preferred_batch_size": b.preferred_batch_sizes,
                "max_queue_delay_microseconds": b.max_queue_delay_us,
                "preserve_ordering": false,
                "priority_levels": b.priority_levels,
                "default_priority_level": b.default_priority_level,
                "default_queue_policy": {
                    "timeout_action": "REJECT",
                    "default_timeout_microseconds": b.default_timeout_us,
                    "allow_timeout_override": true,
                    "max_queue_size": b.max_queue_size,
                },
            }),
        );
    }
    config
}

/// Triton's config name of a datatype (`TYPE_FP32`; BYTES is `TYPE_STRING`).
pub(crate) fn config_datatype(dt: crate::tensor::DataType) -> &'static str {
    use crate::tensor::DataType as D;
    match dt {
        D::Bool => "TYPE_BOOL",
        D::Uint8 => "TYPE_UINT8",
        D::Uint16 => "TYPE_UINT16",
        D::Uint32 => "TYPE_UINT32",
        D::Uint64 => "TYPE_UINT64",
        D::Int8 => "TYPE_INT8",
        D::Int16 => "TYPE_INT16",
        D::Int32 => "TYPE_INT32",
        D::Int64 => "TYPE_INT64",
        D::Fp16 => "TYPE_FP16",
        D::Fp32 => "TYPE_FP32",
        D::Fp64 => "TYPE_FP64",
        D::Bf16 => "TYPE_BF16",
        D::Bytes => "TYPE_STRING",
    }
}
