//! The JSON of the non-inference answers: model metadata, Triton's
//! statistics, model configuration and repository index, each encoded from
//! the service's plain snapshot.

use crate::service::{IndexRow, ModelMetadata, StatDuration, VersionStats};
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
            "memory_bytes": m.memory_bytes,
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
                if let Some(ms) = r.last_used_ms {
                    super::set(&mut v, "last_used_ms", Value::from(ms));
                }
                if let Some(bytes) = r.memory_bytes {
                    super::set(&mut v, "memory_bytes", Value::from(bytes));
                }
                v
            })
            .collect(),
    )
}
