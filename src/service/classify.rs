//! Triton's classification extension: an output requested with parameter
//! `classification = N` answers, instead of its tensor, its N highest
//! elements as a BYTES tensor of `"<value>:<index>"` strings, or
//! `"<value>:<index>:<label>"` when the output has labels.
//!
//! # Rules (Triton's)
//! - Elements are compared in the output's own datatype, highest first.
//!   Ties keep the lower index first (Triton's sort leaves them unspecified).
//! - A model that batches classifies each row on its own: the shape is
//!   `[rows, min(N, elements per row)]`; otherwise `[min(N, elements)]`.
//! - Integer values print as integers; FP32 and FP64 values with six
//!   decimals, as C's `%f` (`0.950000`), which is what Triton's
//!   `std::to_string` gives.
//! - Only INT*, UINT*, FP32 and FP64 outputs can be classified; BOOL, FP16,
//!   BF16 and BYTES are refused before the request runs.
//! - `classification = 0` asks for the raw tensor, as in Triton.

use crate::error::{Error, Result};
use crate::registry::LoadedVersion;
use crate::repository::ModelConfig;
use crate::tensor::{DataType, RunOutput, TensorData, TensorSpec};
use bytes::Bytes;
use std::cmp::Ordering;

/// Outputs to classify: (output name, class count ≥ 1), each name once.
pub(crate) type Classes = Vec<(String, u32)>;

/// Checks a request's classification parameters against the version it
/// reaches: the output exists and has a numeric datatype, the count fits.
pub(super) fn plan(version: &LoadedVersion, wanted: &[(String, u64)]) -> Result<Classes> {
    plan_for(&version.model, &version.signature.outputs, wanted)
}

/// [`plan`] for any model (an ensemble too): its name and its outputs.
pub(super) fn plan_for(
    model: &str,
    outputs: &[TensorSpec],
    wanted: &[(String, u64)],
) -> Result<Classes> {
    let mut classes: Classes = Vec::with_capacity(wanted.len());
    for (name, count) in wanted {
        let Some(spec) = outputs.iter().find(|s| &s.name == name) else {
            let known: Vec<&str> = outputs.iter().map(|s| s.name.as_str()).collect();
            return Err(Error::invalid(format!(
                "unknown output '{name}' for model '{model}'; expected outputs: {}",
                known.join(", ")
            )));
        };
        let count = u32::try_from(*count).map_err(|_| {
            Error::invalid(format!(
                "output '{name}': parameter 'classification' must be at most {}, got {count}",
                u32::MAX
            ))
        })?;
        if count == 0 {
            // Triton's meaning: no classification, the raw tensor.
            classes.retain(|(n, _)| n != name);
            continue;
        }
        if !classifiable(spec.datatype) {
            return Err(Error::invalid(format!(
                "output '{name}': parameter 'classification' needs an integer, FP32 or FP64 output, got {}",
                spec.datatype
            )));
        }
        match classes.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = count,
            None => classes.push((name.clone(), count)),
        }
    }
    Ok(classes)
}

fn classifiable(datatype: DataType) -> bool {
    !matches!(
        datatype,
        DataType::Bool | DataType::Fp16 | DataType::Bf16 | DataType::Bytes
    )
}

/// Replaces each classified output of a finished run by its classes.
pub(super) fn apply(
    version: &LoadedVersion,
    classes: &Classes,
    outputs: &mut [(String, RunOutput)],
) {
    apply_for(
        version.max_batch_size > 0,
        &version.config,
        classes,
        outputs,
    );
}

/// [`apply`] for any model: whether it batches, and its configuration (for
/// label files).
pub(super) fn apply_for(
    batching: bool,
    config: &ModelConfig,
    classes: &Classes,
    outputs: &mut [(String, RunOutput)],
) {
    if classes.is_empty() {
        return;
    }
    for (name, output) in outputs.iter_mut() {
        if let Some((_, count)) = classes.iter().find(|(n, _)| n == name) {
            let labels = config.labels(name);
            if let Some(classified) = classify(output, *count, batching, labels) {
                *output = classified;
            }
        }
    }
}

/// One element, in a type every classifiable datatype fits.
#[derive(Debug, Clone, Copy)]
enum Value {
    Int(i128),
    Float(f64),
}

impl Value {
    /// Descending order; NaN sorts below every number.
    fn desc(a: &Value, b: &Value) -> Ordering {
        match (a, b) {
            (Value::Int(a), Value::Int(b)) => b.cmp(a),
            (Value::Float(a), Value::Float(b)) => match (a.is_nan(), b.is_nan()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => b.partial_cmp(a).unwrap_or(Ordering::Equal),
            },
            // One output holds one datatype; mixed values cannot happen.
            _ => Ordering::Equal,
        }
    }

    fn render(self) -> String {
        match self {
            Value::Int(i) => i.to_string(),
            Value::Float(f) if f.is_nan() => {
                if f.is_sign_negative() { "-nan" } else { "nan" }.to_string()
            }
            Value::Float(f) => format!("{f:.6}"),
        }
    }
}

/// The elements of packed little-endian `bytes` of `datatype`; `None` for
/// a datatype that cannot be classified.
fn values(datatype: DataType, bytes: &[u8]) -> Option<Vec<Value>> {
    macro_rules! each {
        ($t:ty, $wrap:expr) => {
            bytes
                .chunks_exact(std::mem::size_of::<$t>())
                .filter_map(|c| c.try_into().ok().map(<$t>::from_le_bytes))
                .map($wrap)
                .collect()
        };
    }
    Some(match datatype {
        DataType::Uint8 => each!(u8, |v| Value::Int(v.into())),
        DataType::Uint16 => each!(u16, |v| Value::Int(v.into())),
        DataType::Uint32 => each!(u32, |v| Value::Int(v.into())),
        DataType::Uint64 => each!(u64, |v| Value::Int(v.into())),
        DataType::Int8 => each!(i8, |v| Value::Int(v.into())),
        DataType::Int16 => each!(i16, |v| Value::Int(v.into())),
        DataType::Int32 => each!(i32, |v| Value::Int(v.into())),
        DataType::Int64 => each!(i64, |v| Value::Int(v.into())),
        DataType::Fp32 => each!(f32, |v| Value::Float(v.into())),
        DataType::Fp64 => each!(f64, Value::Float),
        DataType::Bool | DataType::Fp16 | DataType::Bf16 | DataType::Bytes => return None,
    })
}

/// The top `count` classes of `output`, per row when `batching`.
fn classify(
    output: &RunOutput,
    count: u32,
    batching: bool,
    labels: Option<&[String]>,
) -> Option<RunOutput> {
    let TensorData::Fixed(bytes) = &output.data else {
        return None;
    };
    let all = values(output.datatype, bytes)?;
    let rows = match output.shape.first() {
        Some(&rows) if batching => Some(rows),
        _ => None,
    };
    let per_row = match rows {
        Some(_) => output.shape.iter().skip(1).product::<usize>(),
        None => output.shape.iter().product::<usize>(),
    };
    let k = per_row.min(count as usize);
    let mut strings = Vec::with_capacity(rows.unwrap_or(1).saturating_mul(k));
    for row in 0..rows.unwrap_or(1) {
        let start = row.saturating_mul(per_row);
        let slice = all
            .get(start..start.saturating_add(per_row))
            .unwrap_or_default();
        let mut order: Vec<usize> = (0..slice.len()).collect();
        // A stable sort: equal values keep the lower index first.
        order.sort_by(|&i, &j| match (slice.get(i), slice.get(j)) {
            (Some(a), Some(b)) => Value::desc(a, b),
            _ => Ordering::Equal,
        });
        for &index in order.iter().take(k) {
            let Some(value) = slice.get(index) else {
                continue;
            };
            let mut s = format!("{}:{index}", value.render());
            if let Some(label) = labels.and_then(|l| l.get(index)) {
                s.push(':');
                s.push_str(label);
            }
            strings.push(Bytes::from(s));
        }
    }
    let shape = match rows {
        Some(rows) => vec![rows, k],
        None => vec![k],
    };
    Some(RunOutput {
        datatype: DataType::Bytes,
        shape,
        data: TensorData::Bytes(strings),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp32(shape: &[usize], v: &[f32]) -> RunOutput {
        RunOutput {
            datatype: DataType::Fp32,
            shape: shape.to_vec(),
            data: TensorData::Fixed(v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        }
    }

    fn strings(out: &RunOutput) -> Vec<String> {
        match &out.data {
            TensorData::Bytes(v) => v
                .iter()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .collect(),
            TensorData::Fixed(_) => panic!("not BYTES"),
        }
    }

    #[test]
    fn top_classes_per_row_with_labels() {
        let out = fp32(&[2, 3], &[0.1, 0.7, 0.2, 0.5, 0.25, 0.25]);
        let labels = ["a".to_string(), "b".to_string()];
        let c = classify(&out, 2, true, Some(&labels)).unwrap();
        assert_eq!(c.shape, vec![2, 2]);
        assert_eq!(
            strings(&c),
            ["0.700000:1:b", "0.200000:2", "0.500000:0:a", "0.250000:1:b"]
        );
    }

    #[test]
    fn count_is_capped_and_unbatched_shape_is_flat() {
        let out = fp32(&[3], &[1.0, 5.0, 10.0]);
        let c = classify(&out, 10, false, None).unwrap();
        assert_eq!(c.shape, vec![3]);
        assert_eq!(strings(&c), ["10.000000:2", "5.000000:1", "1.000000:0"]);
    }

    #[test]
    fn integers_print_as_integers() {
        let out = RunOutput {
            datatype: DataType::Int64,
            shape: vec![4],
            data: TensorData::Fixed(
                [1i64, 5, -10, 4]
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect(),
            ),
        };
        let c = classify(&out, 2, false, None).unwrap();
        assert_eq!(strings(&c), ["5:1", "4:3"]);
    }

    #[test]
    fn non_numeric_outputs_are_not_classified() {
        assert!(!classifiable(DataType::Bytes));
        assert!(!classifiable(DataType::Fp16));
        assert!(classifiable(DataType::Uint8));
    }
}
