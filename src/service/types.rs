//! The plain values the service takes and returns. Adapters decode into
//! these and encode from them; none of them reaches into the registry, the
//! scheduler or the runtime.

use crate::tensor::{RunOutput, Tensor, TensorSpec};

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
    /// Triton's classification extension: outputs to answer as their top
    /// classes, as (output name, `classification` parameter). The service
    /// checks the counts (0 means the raw tensor, as in Triton).
    pub classification: Vec<(String, u64)>,
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

/// What a repository `load` call asks for beyond the model's name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Triton's `config` parameter: a JSON `ModelConfig` to load the model
    /// with instead of its configuration files.
    pub config: Option<String>,
    /// Names of `file:` parameters (model files sent in the call), which
    /// Sluice refuses.
    pub files: Vec<String>,
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
    "classification",
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
    /// The version's measured memory cost in bytes (0: not measured, as for
    /// an ensemble).
    pub(crate) memory_bytes: u64,
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
    /// When the version last served, in Unix milliseconds (on-demand
    /// eviction goes by it); `None` when never loaded.
    pub(crate) last_used_ms: Option<u64>,
    /// The version's measured memory cost, when known.
    pub(crate) memory_bytes: Option<u64>,
}

/// A served version's effective configuration as Triton's `ModelConfig`:
/// what the REST `config` route (as JSON) and gRPC `ModelConfig` (as the
/// message) show. Rendered by `repository::pbtxt::render`.
#[derive(Debug, Clone)]
pub struct ModelConfigView(pub(crate) crate::repository::pbtxt::pb::ModelConfig);

impl ModelConfigView {
    /// Triton's JSON form: proto field names, zero values printed, 64-bit
    /// integers as numbers.
    pub(crate) fn json(&self) -> crate::error::Result<serde_json::Value> {
        crate::repository::pbtxt::config_json(&self.0).map_err(crate::error::Error::internal)
    }
}
