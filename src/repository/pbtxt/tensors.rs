//! Triton's `input` and `output` declarations: names, datatypes, dims,
//! `reshape`, and output label files. Checking them against the graph
//! happens at load (`registry::signature`), where the graph is known.

use super::{Findings, pb};
use crate::repository::spec::{Labels, ModelFiles, TensorDecl};
use crate::tensor::DataType;

/// Triton's datatype enum as Sluice's datatype. `TYPE_STRING` is BYTES.
pub(super) fn datatype(value: i32, field: &str) -> Result<DataType, String> {
    use pb::DataType as T;
    let t = T::try_from(value)
        .map_err(|_| format!("`{field}` is not a known data type. Given: {value}"))?;
    Ok(match t {
        T::TypeBool => DataType::Bool,
        T::TypeUint8 => DataType::Uint8,
        T::TypeUint16 => DataType::Uint16,
        T::TypeUint32 => DataType::Uint32,
        T::TypeUint64 => DataType::Uint64,
        T::TypeInt8 => DataType::Int8,
        T::TypeInt16 => DataType::Int16,
        T::TypeInt32 => DataType::Int32,
        T::TypeInt64 => DataType::Int64,
        T::TypeFp16 => DataType::Fp16,
        T::TypeFp32 => DataType::Fp32,
        T::TypeFp64 => DataType::Fp64,
        T::TypeString => DataType::Bytes,
        T::TypeBf16 => DataType::Bf16,
        T::TypeInvalid => {
            return Err(format!(
                "`{field}` must be set (TYPE_FP32, TYPE_INT64, ...). Given: TYPE_INVALID"
            ));
        }
    })
}

/// Checks a shape: each dim ≥ 1 or -1 (any size); `dims` may not be empty.
fn shape(dims: &[i64], field: &str, may_be_empty: bool) -> Result<Vec<i64>, String> {
    if dims.is_empty() && !may_be_empty {
        return Err(format!(
            "`{field}` must list at least one dimension (use `dims: [ 1 ]` with `reshape: {{ shape: [ ] }}` for a scalar)"
        ));
    }
    if let Some(bad) = dims.iter().find(|&&d| d == 0 || d < -1) {
        return Err(format!(
            "`{field}` entries must be ≥ 1, or -1 for any size. Given: {bad} in {dims:?}"
        ));
    }
    Ok(dims.to_vec())
}

/// Checks that `reshape` keeps the element count of `dims`: the fixed dims
/// multiply to the same count, and both have as many -1 dims.
fn check_reshape(dims: &[i64], reshape: &[i64], field: &str) -> Result<(), String> {
    let fixed = |s: &[i64]| -> Option<i64> {
        s.iter()
            .filter(|&&d| d > 0)
            .try_fold(1i64, |n, &d| n.checked_mul(d))
    };
    let variable = |s: &[i64]| s.iter().filter(|&&d| d < 0).count();
    if fixed(dims) != fixed(reshape) || variable(dims) != variable(reshape) {
        return Err(format!(
            "`{field}.reshape.shape` {reshape:?} must hold as many elements as `dims` {dims:?}"
        ));
    }
    Ok(())
}

fn name(name: &str, field: &str, seen: &mut Vec<String>) -> Result<String, String> {
    if name.is_empty() {
        return Err(format!("`{field}.name` must name a tensor of the model"));
    }
    if seen.iter().any(|n| n == name) {
        return Err(format!("`{field}` declares '{name}' more than once"));
    }
    seen.push(name.to_string());
    Ok(name.to_string())
}

/// `batching`: the model batches, so `dims` may be empty (the tensor is the
/// batch dimension alone, as Sluice's effective configuration shows it).
pub(super) fn inputs(
    inputs: &[pb::ModelInput],
    batching: bool,
    found: &mut Findings,
) -> Result<Vec<TensorDecl>, String> {
    let mut seen = Vec::new();
    inputs
        .iter()
        .map(|input| {
            let field = format!("input '{}'", input.name);
            let name = name(&input.name, "input", &mut seen)?;
            let mut decl = decl(
                &name,
                input.data_type,
                &input.dims,
                input.reshape.as_ref(),
                batching,
                &field,
            )?;
            // Checked against the graph at load: only an input with a
            // default value there can be left out.
            decl.optional = input.optional;
            if input.format != 0 {
                found.note(
                    &format!("{field}.format"),
                    "the layout is informational (Triton's ONNX Runtime backend ignores it too)",
                );
            }
            if input.is_shape_tensor {
                found.unsupported(
                    format!("{field}.is_shape_tensor"),
                    "shape tensors are a TensorRT feature",
                );
            }
            if input.is_non_linear_format_io {
                found.unsupported(
                    format!("{field}.is_non_linear_format_io"),
                    "non-linear IO formats are a TensorRT feature",
                );
            }
            if input.allow_ragged_batch {
                found.unsupported(
                    format!("{field}.allow_ragged_batch"),
                    "Sluice batches only requests of equal non-batch shapes",
                );
            }
            Ok(decl)
        })
        .collect()
}

pub(super) fn outputs(
    outputs: &[pb::ModelOutput],
    batching: bool,
    files: &ModelFiles,
    found: &mut Findings,
) -> Result<Vec<TensorDecl>, String> {
    let mut seen = Vec::new();
    outputs
        .iter()
        .map(|output| {
            let field = format!("output '{}'", output.name);
            let name = name(&output.name, "output", &mut seen)?;
            let mut decl = decl(
                &name,
                output.data_type,
                &output.dims,
                output.reshape.as_ref(),
                batching,
                &field,
            )?;
            if !output.label_filename.is_empty() {
                decl.labels = Some(Labels::read(&output.label_filename, files, &field)?);
            }
            if output.is_shape_tensor {
                found.unsupported(
                    format!("{field}.is_shape_tensor"),
                    "shape tensors are a TensorRT feature",
                );
            }
            if output.is_non_linear_format_io {
                found.unsupported(
                    format!("{field}.is_non_linear_format_io"),
                    "non-linear IO formats are a TensorRT feature",
                );
            }
            Ok(decl)
        })
        .collect()
}

fn decl(
    name: &str,
    data_type: i32,
    dims: &[i64],
    reshape: Option<&pb::ModelTensorReshape>,
    batching: bool,
    field: &str,
) -> Result<TensorDecl, String> {
    let datatype = datatype(data_type, &format!("{field}.data_type"))?;
    let dims = shape(dims, &format!("{field}.dims"), batching)?;
    let reshape = match reshape {
        None => None,
        Some(r) => {
            let to = shape(&r.shape, &format!("{field}.reshape.shape"), true)?;
            check_reshape(&dims, &to, field)?;
            Some(to)
        }
    };
    Ok(TensorDecl {
        name: name.to_string(),
        datatype,
        dims,
        reshape,
        labels: None,
        optional: false,
    })
}
