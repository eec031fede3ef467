//! Where and how a model runs: `instance_group`, `optimization` (execution
//! accelerators, graph level) and the `parameters` Triton's ONNX Runtime
//! backend reads, onto Sluice's instances, execution providers and session
//! options.

use super::{Findings, pb};
use crate::repository::ModelConfig;
use crate::runtime::reserved_option;
use crate::runtime::{ExecutionProvider, GraphOptimization};
use std::collections::{BTreeMap, HashMap};

/// Triton's default instance count of a `KIND_CPU` group for ONNX Runtime.
const CPU_GROUP_COUNT: usize = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Cpu,
    Gpu,
    /// GPU when one can be used, else the CPU.
    Auto,
}

/// Maps `instance_group` and `optimization` onto instances, GPUs and the
/// ordered execution providers.
pub(super) fn placement(
    c: &pb::ModelConfig,
    config: &mut ModelConfig,
    found: &mut Findings,
) -> Result<(), String> {
    let (gpu_accels, cpu_accels) = c
        .optimization
        .as_ref()
        .and_then(|o| o.execution_accelerators.as_ref())
        .map_or((&[][..], &[][..]), |e| {
            (
                &e.gpu_execution_accelerator[..],
                &e.cpu_execution_accelerator[..],
            )
        });
    let kind = instance_groups(&c.instance_group, config, found, !gpu_accels.is_empty())?;
    for accel in cpu_accels {
        found.unsupported(
            format!(
                "optimization.execution_accelerators.cpu_execution_accelerator '{}'",
                accel.name
            ),
            "Sluice's CPU instances run ONNX Runtime's CPU provider only",
        );
    }
    let mut gpu = gpu_providers(gpu_accels)?;
    if kind == Kind::Cpu && !gpu_accels.is_empty() {
        found.note(
            "optimization.execution_accelerators.gpu_execution_accelerator",
            "the instances are KIND_CPU",
        );
        gpu.clear();
    }
    let cpu = ExecutionProvider::Cpu { arena: true };
    config.execution_providers = match kind {
        Kind::Cpu => vec![cpu],
        Kind::Gpu => gpu,
        Kind::Auto => gpu.into_iter().chain([cpu]).collect(),
    };
    config.fallback = kind == Kind::Auto;
    if let Some(o) = &c.optimization {
        optimization(o, config, found)?;
    }
    Ok(())
}

fn instance_groups(
    groups: &[pb::ModelInstanceGroup],
    config: &mut ModelConfig,
    found: &mut Findings,
    gpu_accelerators: bool,
) -> Result<Kind, String> {
    use pb::model_instance_group::Kind as K;
    if groups.is_empty() {
        // Sluice's defaults; Triton would use every GPU. GPUs are used when
        // the config names a GPU accelerator.
        return Ok(if gpu_accelerators {
            Kind::Auto
        } else {
            Kind::Cpu
        });
    }
    let mut kinds = Vec::new();
    let mut counts = Vec::new();
    let mut gpus: Vec<u32> = Vec::new();
    for (i, g) in groups.iter().enumerate() {
        let field = format!("instance_group[{i}]");
        let kind = match K::try_from(g.kind) {
            Ok(K::Cpu) => Kind::Cpu,
            Ok(K::Gpu) => Kind::Gpu,
            Ok(K::Auto) => Kind::Auto,
            Ok(K::Model) => {
                found.unsupported(
                    format!("{field}.kind: KIND_MODEL"),
                    "Sluice places every instance itself (CPU or GPU)",
                );
                Kind::Auto
            }
            Err(_) => {
                return Err(format!(
                    "`{field}.kind` is not a known kind. Given: {}",
                    g.kind
                ));
            }
        };
        if g.count < 0 {
            return Err(format!("`{field}.count` must be ≥ 1. Given: {}", g.count));
        }
        let count = match (g.count, kind) {
            (0, Kind::Cpu) => CPU_GROUP_COUNT,
            (0, _) => 1,
            (n, _) => n as usize,
        };
        if kind == Kind::Cpu && !g.gpus.is_empty() {
            return Err(format!(
                "`{field}.gpus` must be empty for KIND_CPU. Given: {:?}",
                g.gpus
            ));
        }
        for &id in &g.gpus {
            let id = u32::try_from(id)
                .map_err(|_| format!("`{field}.gpus` must be ≥ 0. Given: {id}"))?;
            if gpus.contains(&id) {
                return Err(format!("`{field}.gpus` lists GPU {id} more than once"));
            }
            gpus.push(id);
        }
        if g.rate_limiter.is_some() {
            found.note(
                &format!("{field}.rate_limiter"),
                "Sluice has no rate limiter (Triton ignores it too unless started with --rate-limit)",
            );
        }
        if !g.secondary_devices.is_empty() {
            found.unsupported(
                format!("{field}.secondary_devices"),
                "Sluice places instances on GPUs only",
            );
        }
        if !g.profile.is_empty() {
            found.note(
                &format!("{field}.profile"),
                "TensorRT optimisation profiles are derived from max_batch_size",
            );
        }
        if g.passive {
            found.unsupported(
                format!("{field}.passive"),
                "every Sluice instance takes requests",
            );
        }
        if !g.host_policy.is_empty() {
            found.note(
                &format!("{field}.host_policy"),
                "Sluice has no host policies",
            );
        }
        kinds.push(kind);
        counts.push(count);
    }
    let kind = kinds[0];
    if kinds.iter().any(|&k| k != kind) {
        found.unsupported(
            "instance_group",
            "groups of different kinds in one model (Sluice runs a version's instances on one kind of device)",
        );
    }
    if counts.iter().any(|&n| n != counts[0]) {
        found.unsupported(
            "instance_group",
            format!(
                "groups with different counts ({counts:?}); Sluice runs the same count on every GPU"
            ),
        );
    }
    if groups.iter().filter(|g| g.gpus.is_empty()).count() > 0 && !gpus.is_empty() {
        found.unsupported(
            "instance_group",
            "a group without `gpus` beside groups with `gpus`",
        );
    }
    config.instances = Some(counts[0]);
    config.gpus = gpus;
    Ok(kind)
}

/// The GPU providers named by `gpu_execution_accelerator`, in Sluice's
/// order of preference: TensorRT first when named, then CUDA.
fn gpu_providers(
    accels: &[pb::model_optimization_policy::execution_accelerators::Accelerator],
) -> Result<Vec<ExecutionProvider>, String> {
    let field = "optimization.execution_accelerators.gpu_execution_accelerator";
    let mut tensorrt = None;
    let mut cuda_options = BTreeMap::new();
    for accel in accels {
        match accel.name.as_str() {
            "tensorrt" => tensorrt = Some(tensorrt_provider(&accel.parameters)?),
            "cuda" => {
                for (key, value) in &accel.parameters {
                    if reserved_option(key) {
                        return Err(format!(
                            "`{field}` 'cuda' parameter '{key}' is set by Sluice and cannot be given"
                        ));
                    }
                    cuda_options.insert(key.clone(), value.clone());
                }
            }
            other => {
                return Err(format!(
                    "`{field}` must be 'tensorrt' or 'cuda'. Given: '{other}'"
                ));
            }
        }
    }
    let cuda = ExecutionProvider::Cuda {
        device_id: 0,
        memory_limit_bytes: None,
        arena_extend_strategy: Default::default(),
        cudnn_conv_algo_search: Default::default(),
        cuda_graph: false,
        options: cuda_options,
    };
    Ok(tensorrt.into_iter().chain([cuda]).collect())
}

/// Triton's TensorRT accelerator parameters onto ONNX Runtime's options.
fn tensorrt_provider(params: &HashMap<String, String>) -> Result<ExecutionProvider, String> {
    let field = "optimization.execution_accelerators.gpu_execution_accelerator 'tensorrt'";
    let (mut fp16, mut int8) = (false, false);
    let mut workspace = None;
    let mut options = BTreeMap::new();
    for (key, value) in params {
        match key.as_str() {
            "precision_mode" => match value.as_str() {
                "FP32" => {}
                "FP16" => fp16 = true,
                "INT8" => int8 = true,
                "BF16" => {
                    options.insert("trt_bf16_enable".to_string(), "1".to_string());
                }
                other => {
                    return Err(format!(
                        "`{field}` parameter 'precision_mode' must be FP32, FP16, BF16 or INT8. Given: '{other}'"
                    ));
                }
            },
            "max_workspace_size_bytes" => {
                workspace = Some(value.parse::<u64>().map_err(|_| {
                    format!("`{field}` parameter 'max_workspace_size_bytes' must be a byte count. Given: '{value}'")
                })?);
            }
            "int8_calibration_table_name" | "int8_use_native_calibration_table" => {
                options.insert(format!("trt_{key}"), value.clone());
            }
            k if k.starts_with("trt_") && !reserved_option(k) => {
                options.insert(k.to_string(), value.clone());
            }
            other => {
                return Err(format!(
                    "`{field}` has unknown parameter '{other}' (expected precision_mode, max_workspace_size_bytes, int8_* or trt_* options)"
                ));
            }
        }
    }
    Ok(ExecutionProvider::Tensorrt {
        device_id: 0,
        fp16,
        int8,
        engine_cache_path: None,
        workspace_size_bytes: workspace,
        options,
    })
}

fn optimization(
    o: &pb::ModelOptimizationPolicy,
    config: &mut ModelConfig,
    found: &mut Findings,
) -> Result<(), String> {
    if let Some(graph) = &o.graph {
        // Triton's ONNX Runtime backend: -1 basic, 1 extended, 2 none, 0 all.
        config.session.optimization = match graph.level {
            0 => GraphOptimization::All,
            -1 => GraphOptimization::Basic,
            1 => GraphOptimization::Extended,
            2 => GraphOptimization::Disabled,
            other => {
                return Err(format!(
                    "`optimization.graph.level` must be -1 (basic), 0 (all), 1 (extended) or 2 (disabled). Given: {other}"
                ));
            }
        };
    }
    if o.priority != 0 {
        found.note(
            "optimization.priority",
            "Triton's ONNX Runtime backend ignores it too",
        );
    }
    if o.cuda.is_some() {
        found.note(
            "optimization.cuda",
            "CUDA graphs for ONNX Runtime are set with the 'cuda' accelerator's enable_cuda_graph parameter",
        );
    }
    if o.input_pinned_memory.is_some() || o.output_pinned_memory.is_some() {
        found.note(
            "optimization.input_pinned_memory/output_pinned_memory",
            "ONNX Runtime copies tensors to and from the GPU itself",
        );
    }
    if o.gather_kernel_buffer_threshold != 0 {
        found.note(
            "optimization.gather_kernel_buffer_threshold",
            "Sluice assembles batches on the CPU",
        );
    }
    if o.eager_batching {
        found.note(
            "optimization.eager_batching",
            "Sluice dispatches a batch as soon as an instance is idle",
        );
    }
    Ok(())
}

/// Triton's `parameters` that its ONNX Runtime backend reads.
pub(super) fn parameters(
    params: &HashMap<String, pb::ModelParameter>,
    config: &mut ModelConfig,
    found: &mut Findings,
) -> Result<(), String> {
    let mut keys: Vec<&String> = params.keys().collect();
    keys.sort();
    for key in keys {
        let value = params[key].string_value.trim();
        let field = format!("parameters '{key}'");
        let int = |max: u64| -> Result<u64, String> {
            value
                .parse::<u64>()
                .ok()
                .filter(|&n| n <= max)
                .ok_or_else(|| {
                    format!("`{field}` must be an integer between 0 and {max}. Given: '{value}'")
                })
        };
        match key.as_str() {
            "intra_op_thread_count" => {
                // 0: ONNX Runtime picks; Sluice's default is cores / instances.
                config.intra_op_threads = Some(int(1024)? as usize).filter(|&n| n > 0);
            }
            "inter_op_thread_count" => {
                config.session.inter_op_threads = Some(int(1024)? as usize).filter(|&n| n > 0);
            }
            "execution_mode" => {
                config.session.parallel_execution = int(1)? == 1;
            }
            "enable_mem_pattern" => config.session.memory_pattern = Some(boolean(value, &field)?),
            "enable_mem_arena" => {
                let arena = boolean(value, &field)?;
                let mut applied = false;
                for p in &mut config.execution_providers {
                    if let ExecutionProvider::Cpu { arena: a } = p {
                        *a = arena;
                        applied = true;
                    }
                }
                if !applied {
                    found.note(
                        &field,
                        "it applies to CPU instances, and these run on a GPU",
                    );
                }
            }
            "session.use_device_allocator_for_initializers" => {
                boolean(value, &field)?;
                config
                    .session
                    .config_entries
                    .insert(key.clone(), value.to_string());
            }
            "cudnn_conv_algo_search"
            | "gpu_mem_limit"
            | "arena_extend_strategy"
            | "do_copy_in_default_stream" => cuda_parameter(key, value, config, found)?,
            "memory.enable_memory_arena_shrinkage" => found.unsupported(
                field,
                "Sluice does not shrink ONNX Runtime's arenas after runs",
            ),
            _ => found.note(
                &field,
                "Triton's ONNX Runtime backend does not read it either",
            ),
        }
    }
    Ok(())
}

/// The deprecated model-level CUDA parameters, onto the CUDA provider.
fn cuda_parameter(
    key: &str,
    value: &str,
    config: &mut ModelConfig,
    found: &mut Findings,
) -> Result<(), String> {
    let field = format!("parameters '{key}'");
    let ort_value = match key {
        "cudnn_conv_algo_search" => match value {
            "0" => "EXHAUSTIVE",
            "1" => "HEURISTIC",
            "2" => "DEFAULT",
            _ => {
                return Err(format!(
                    "`{field}` must be 0 (exhaustive), 1 (heuristic) or 2 (default). Given: '{value}'"
                ));
            }
        }
        .to_string(),
        "arena_extend_strategy" => match value {
            "0" => "kNextPowerOfTwo",
            "1" => "kSameAsRequested",
            _ => {
                return Err(format!(
                    "`{field}` must be 0 (next power of two) or 1 (same as requested). Given: '{value}'"
                ));
            }
        }
        .to_string(),
        "gpu_mem_limit" => value
            .parse::<u64>()
            .map_err(|_| format!("`{field}` must be a byte count. Given: '{value}'"))?
            .to_string(),
        _ => (if boolean(value, &field)? { "1" } else { "0" }).to_string(),
    };
    let mut applied = false;
    for p in &mut config.execution_providers {
        if let ExecutionProvider::Cuda { options, .. } = p {
            options
                .entry(key.to_string())
                .or_insert_with(|| ort_value.clone());
            applied = true;
        }
    }
    if !applied {
        found.note(&field, "the model has no CUDA instances");
    }
    Ok(())
}

/// Triton's boolean spellings.
fn boolean(value: &str, field: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(format!(
            "`{field}` must be true or false (1 or 0). Given: '{value}'"
        )),
    }
}
