//! Building sessions, and reading a graph's signature.

use super::exec::Instance;
use super::provider::{ExecutionProvider, GraphOptimization, ProviderOptions, TrtShapes};
use crate::tensor::DataType;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{TensorElementType, ValueType};
use std::path::Path;

/// A model input or output as the graph declares it. `-1` marks a dynamic dim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub datatype: DataType,
    pub shape: Vec<i64>,
}

/// Inputs and outputs of a graph, in graph order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSignature {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

impl ModelSignature {
    /// True when every input and output has a dynamic first dimension.
    pub fn batchable(&self) -> bool {
        self.inputs
            .iter()
            .chain(&self.outputs)
            .all(|t| t.shape.first() == Some(&-1))
    }
}

/// Where a model's sessions were placed: the provider that registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// `cpu`, `cuda` or `tensorrt`.
    pub provider: &'static str,
    pub device_id: u32,
    /// Providers that were asked for first and could not be used, with why.
    pub fell_back_from: Vec<String>,
}

impl std::fmt::Display for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.provider {
            "cpu" => f.write_str("cpu"),
            p => write!(f, "{p}:{}", self.device_id),
        }
    }
}

pub(crate) fn datatype_of(ty: TensorElementType) -> Option<DataType> {
    Some(match ty {
        TensorElementType::Bool => DataType::Bool,
        TensorElementType::Uint8 => DataType::Uint8,
        TensorElementType::Uint16 => DataType::Uint16,
        TensorElementType::Uint32 => DataType::Uint32,
        TensorElementType::Uint64 => DataType::Uint64,
        TensorElementType::Int8 => DataType::Int8,
        TensorElementType::Int16 => DataType::Int16,
        TensorElementType::Int32 => DataType::Int32,
        TensorElementType::Int64 => DataType::Int64,
        TensorElementType::Float16 => DataType::Fp16,
        TensorElementType::Float32 => DataType::Fp32,
        TensorElementType::Float64 => DataType::Fp64,
        TensorElementType::Bfloat16 => DataType::Bf16,
        TensorElementType::String => DataType::Bytes,
        _ => return None,
    })
}

fn spec_of(name: &str, ty: &ValueType, role: &str) -> Result<TensorSpec, String> {
    match ty {
        ValueType::Tensor { ty, shape, .. } => {
            let datatype = datatype_of(*ty).ok_or_else(|| {
                format!("{role} '{name}' has element type {ty:?}, which KServe v2 cannot carry")
            })?;
            Ok(TensorSpec {
                name: name.to_string(),
                datatype,
                shape: shape.iter().map(|&d| if d < 0 { -1 } else { d }).collect(),
            })
        }
        other => Err(format!(
            "{role} '{name}' is a {}, not a tensor; only tensor inputs and outputs are served (for scikit-learn classifiers convert with zipmap=False)",
            match other {
                ValueType::Sequence(_) => "sequence",
                ValueType::Map { .. } => "map",
                ValueType::Optional(_) => "optional",
                ValueType::Tensor { .. } => "tensor",
            }
        )),
    }
}

/// Reads the signature of a loaded session.
pub fn read_signature(session: &Session) -> Result<ModelSignature, String> {
    let inputs = session
        .inputs()
        .iter()
        .map(|o| spec_of(o.name(), o.dtype(), "input"))
        .collect::<Result<_, _>>()?;
    let outputs = session
        .outputs()
        .iter()
        .map(|o| spec_of(o.name(), o.dtype(), "output"))
        .collect::<Result<_, _>>()?;
    Ok(ModelSignature { inputs, outputs })
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
    let environment = super::environment().ok_or("onnx runtime is not initialised")?;
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
