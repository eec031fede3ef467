//! Building sessions, and reading a graph's signature.

use super::exec::Instance;
use super::library::environment;
use super::provider::{ExecutionProvider, GraphOptimization, ProviderOptions, TrtShapes};
use crate::tensor::ModelSignature;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use std::path::Path;

/// Where a model's sessions were placed: the provider that registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// `cpu`, `cuda` or `tensorrt`.
    pub(crate) provider: &'static str,
    pub(crate) device_id: u32,
    /// Providers that were asked for first and could not be used, with why.
    pub(crate) fell_back_from: Vec<String>,
}

impl std::fmt::Display for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.provider {
            "cpu" => f.write_str("cpu"),
            p => write!(f, "{p}:{}", self.device_id),
        }
    }
}

fn trt_shapes(signature: Option<&ModelSignature>, max_batch: usize) -> TrtShapes {
    let Some(signature) = signature else {
        return TrtShapes::default();
    };
    let render = |batch: usize| {
        signature
            .inputs
            .iter()
            .map(|t| {
                let dims: Vec<String> = t
                    .shape
                    .iter()
                    .enumerate()
                    .map(|(i, &d)| match (i, d) {
                        (0, -1) => batch.to_string(),
                        (_, -1) => "1".to_string(),
                        (_, d) => d.to_string(),
                    })
                    .collect();
                format!("{}:{}", t.name, dims.join("x"))
            })
            .collect::<Vec<_>>()
            .join(",")
    };
    let max_batch = max_batch.max(1);
    TrtShapes {
        min: render(1),
        opt: render(max_batch),
        max: render(max_batch),
    }
}

fn build_one(
    path: &Path,
    options: &ProviderOptions,
    provider: Option<&ExecutionProvider>,
    shapes: &TrtShapes,
) -> Result<Session, String> {
    let fail = |e: ort::Error| e.to_string();
    let fail_b = |e: ort::Error<_>| e.to_string();
    let environment = environment().ok_or("onnx runtime is not initialised")?;
    let session = &options.session;
    let level = match session.optimization {
        GraphOptimization::Disabled => GraphOptimizationLevel::Disable,
        GraphOptimization::Basic => GraphOptimizationLevel::Level1,
        GraphOptimization::Extended => GraphOptimizationLevel::Level2,
        GraphOptimization::All => GraphOptimizationLevel::Level3,
    };
    let mut builder = Session::builder(environment)
        .map_err(fail)?
        .with_optimization_level(level)
        .map_err(fail_b)?
        .with_intra_threads(options.intra_threads.max(1))
        .map_err(fail_b)?
        .with_inter_threads(session.inter_op_threads.unwrap_or(1).max(1))
        .map_err(fail_b)?
        .with_parallel_execution(session.parallel_execution)
        .map_err(fail_b)?
        .with_intra_op_spinning(false)
        .map_err(fail_b)?;
    if session.parallel_execution {
        builder = builder.with_inter_op_spinning(false).map_err(fail_b)?;
    }
    if let Some(enable) = session.memory_pattern {
        builder = builder.with_memory_pattern(enable).map_err(fail_b)?;
    }
    for (key, value) in &session.config_entries {
        builder = builder.with_config_entry(key, value).map_err(fail_b)?;
    }
    let providers = match provider {
        Some(p) => vec![p.dispatch(shapes)],
        None => vec![ExecutionProvider::Cpu { arena: true }.dispatch(shapes)],
    };
    builder = builder
        .with_execution_providers(providers)
        .map_err(fail_b)?;
    builder.commit_from_file(path).map_err(fail)
}

/// Builds one session of the model at `path` on the first provider that works
/// (or only the first, when fallback is off), with its signature and placement.
///
/// `signature` is the model's signature when known (it shapes TensorRT profiles).
pub fn load_instance(
    path: &Path,
    options: &ProviderOptions,
    signature: Option<&ModelSignature>,
    max_batch: usize,
) -> Result<(Instance, Placement), String> {
    let shapes = trt_shapes(signature, max_batch);
    let mut fell_back_from = Vec::new();
    let wanted: Vec<Option<&ExecutionProvider>> = if options.providers.is_empty() {
        vec![None]
    } else {
        options.providers.iter().map(Some).collect()
    };
    let mut last_error = String::new();
    for (i, provider) in wanted.iter().enumerate() {
        match build_one(path, options, *provider, &shapes) {
            Ok(session) => {
                let (name, device_id) = match provider {
                    Some(ExecutionProvider::Cuda { device_id, .. })
                    | Some(ExecutionProvider::Tensorrt { device_id, .. }) => {
                        (provider.map_or("cpu", |p| p.name()), *device_id)
                    }
                    _ => ("cpu", 0),
                };
                let instance = Instance::new(session)?;
                return Ok((
                    instance,
                    Placement {
                        provider: name,
                        device_id,
                        fell_back_from,
                    },
                ));
            }
            Err(e) => {
                let name = provider.map_or("cpu", |p| p.name());
                last_error = if provider.is_some_and(|p| p.is_gpu()) {
                    format!("execution provider '{name}' is unavailable: {e}")
                } else {
                    e
                };
                let more = i + 1 < wanted.len();
                if !(options.fallback && more) {
                    break;
                }
                tracing::warn!(provider = name, reason = %last_error, "execution provider failed; falling back to the next one (fallback = true)");
                fell_back_from.push(format!("{name}: {last_error}"));
            }
        }
    }
    Err(last_error)
}
