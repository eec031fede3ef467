//! The plain values the service takes and returns. Adapters decode into
//! these and encode from them; none of them reaches into the registry, the
//! scheduler or the runtime.

use crate::repository::config::{DynamicBatching, VersionPolicy};
use crate::tensor::{DataType, RunOutput, Tensor, TensorSpec};

/// Limits on what one request may ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Most elements in one input tensor.
    pub max_tensor_elements: usize,
    /// Most bytes in all of a request's input tensors together.
    pub max_request_bytes: usize,
    /// Most bytes in one element of a BYTES tensor.
    pub max_bytes_element: usize,
}

impl Default for Limits {
    fn default() -> Self {
        use crate::config::defaults as d;
        Self {
            max_tensor_elements: d::MAX_TENSOR_ELEMENTS,
            max_request_bytes: d::MAX_REQUEST_TENSOR_BYTES,
            max_bytes_element: d::MAX_BYTES_ELEMENT,
        }
    }
}

/// A decoded inference request, before it is checked against the model.
#[derive(Debug, Clone, Default)]
pub struct InferRequest {
    pub model: String,
    pub version: Option<u64>,
    pub id: Option<String>,
    pub inputs: Vec<Tensor>,
    /// Outputs to return, by name; `None` means all of them.
    pub outputs: Option<Vec<String>>,
    /// Priority level (1 is the highest); `None` or 0 means the model's default.
    pub priority: Option<u64>,
    /// Queue timeout in µs; it can only shorten the model's default.
    pub timeout_us: Option<u64>,
}

/// The answer to an [`InferRequest`].
#[derive(Debug, Clone)]
pub struct InferResponse {
    pub(crate) model: String,
    pub(crate) version: u64,
    pub(crate) id: Option<String>,
    /// Requested outputs, in the requested (or graph) order.
    pub(crate) outputs: Vec<(String, RunOutput)>,
}

/// Which adapter a request came through, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Grpc,
}

impl Protocol {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Grpc => "grpc",
        }
    }
}

/// Triton protocol extensions this server implements, as server metadata
/// reports them on both protocols.
pub const EXTENSIONS: &[&str] = &[
    "binary_tensor_data",
    "statistics",
    "model_configuration",
    "model_repository",
    "parameters",
    "logging",
];

/// The server's name, version and protocol extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerMetadata {
    pub(crate) name: &'static str,
    pub(crate) version: &'static str,
    pub(crate) extensions: &'static [&'static str],
}

/// What a model (or one of its versions) serves: KServe v2 model metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelMetadata {
    pub(crate) name: String,
    /// The version that answered: the one asked for, or the highest served.
    pub(crate) version: u64,
    /// The versions reported: every served one, or only the one asked for.
    pub(crate) versions: Vec<u64>,
    pub(crate) platform: &'static str,
    pub(crate) inputs: Vec<TensorSpec>,
    pub(crate) outputs: Vec<TensorSpec>,
    /// 0 when the model does not batch.
    pub(crate) max_batch_size: usize,
    /// Where the sessions run: `cpu`, `cuda:0`, ...
    pub(crate) execution_provider: String,
    /// Providers asked for first that could not be used, with why.
    pub(crate) provider_fallbacks: Vec<String>,
}

/// One row of the repository index, as both adapters report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexRow {
    pub(crate) name: String,
    /// `None` when the state concerns the whole model (or it was never loaded).
    pub(crate) version: Option<u64>,
    /// `READY`, `LOADING` or `UNAVAILABLE`.
    pub(crate) state: &'static str,
    pub(crate) reason: String,
}

/// A tensor of a model's configuration; `dims` exclude the batch dimension
/// when the model batches (as Triton's `config.pbtxt` does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigTensor {
    pub(crate) name: String,
    pub(crate) datatype: DataType,
    pub(crate) dims: Vec<i64>,
}

/// A served version's effective configuration, Triton-style and
/// protocol-neutral: what the REST `config` route and gRPC `ModelConfig` show.
#[derive(Debug, Clone)]
pub struct ModelConfigView {
    pub(crate) name: String,
    pub(crate) max_batch_size: usize,
    pub(crate) inputs: Vec<ConfigTensor>,
    pub(crate) outputs: Vec<ConfigTensor>,
    pub(crate) instances: usize,
    /// Whether the sessions run on a GPU provider (`KIND_GPU`) or the CPU.
    pub(crate) gpu: bool,
    pub(crate) device_id: u32,
    pub(crate) dynamic_batching: DynamicBatching,
    pub(crate) version_policy: VersionPolicy,
    /// The steps, when the model is an ensemble (`platform: "ensemble"`;
    /// then it has no instances and no batcher of its own).
    pub(crate) ensemble: Option<Vec<EnsembleStepView>>,
}

/// One step of an ensemble's configuration (Triton's `ensemble_scheduling.step`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnsembleStepView {
    pub(crate) model_name: String,
    /// -1: the latest version.
    pub(crate) model_version: i64,
    /// Step model's input -> ensemble tensor.
    pub(crate) input_map: std::collections::BTreeMap<String, String>,
    /// Step model's output -> ensemble tensor.
    pub(crate) output_map: std::collections::BTreeMap<String, String>,
}
