//! What a model declares and returns, in tensor terms: the graph's input and
//! output specs, and one run's outputs. Protocol- and runtime-neutral, so the
//! adapters describe models and encode results without importing `runtime`.

use super::{DataType, TensorData};

/// A model input or output as the graph declares it. `-1` marks a dynamic dim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub(crate) datatype: DataType,
    pub(crate) shape: Vec<i64>,
}

/// Inputs and outputs of a graph, in graph order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelSignature {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    /// Inputs a request may leave out. Of a graph: the inputs that have a
    /// default value (ONNX initializers also listed as graph inputs, which
    /// ONNX Runtime calls overridable initializers; not in `inputs`). Of a
    /// served signature: those of `inputs` declared `optional`.
    pub(crate) defaulted: Vec<TensorSpec>,
}

impl ModelSignature {
    /// True when every input and output has a dynamic first dimension.
    pub(crate) fn batchable(&self) -> bool {
        self.inputs
            .iter()
            .chain(&self.outputs)
            .all(|t| t.shape.first() == Some(&-1))
    }
}

/// One output of a run: for a whole batch, or one request's rows of it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOutput {
    pub datatype: DataType,
    pub shape: Vec<usize>,
    pub data: TensorData,
}
