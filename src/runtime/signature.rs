//! ONNX element types and graph signatures in the server's tensor terms.

use crate::tensor::{DataType, ModelSignature, TensorSpec};
use ort::session::Session;
use ort::value::{TensorElementType, ValueType};

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
    // An input with a default of a type KServe cannot carry stays out of
    // reach rather than failing the model: it keeps its default.
    let defaulted = session
        .overridable_initializers()
        .iter()
        .filter_map(|o| spec_of(o.name(), o.dtype(), "input").ok())
        .collect();
    Ok(ModelSignature {
        inputs,
        outputs,
        defaulted,
    })
}
