//! Plain JSON predict, as TensorFlow Serving and KServe v1 speak it:
//! `POST /v1/models/{m}:predict`.
//!
//! - Row format `{"instances": [...]}`: each instance is one row, a bare
//!   value or array for single-input models, or `{input: value}` for several
//!   inputs. The answer is `{"predictions": [...]}`: per-row values for one
//!   output, per-row `{output: value}` objects for several.
//! - Columnar format `{"inputs": ...}`: the whole tensor (single input) or
//!   `{input: tensor}`. The answer is `{"outputs": ...}` in the same shape.
//!
//! Datatypes come from the model's signature; shapes come from the nesting of
//! the data (rows: the batch dimension is the number of instances). The
//! tensors then go through the same JSON decoder and [`Service::infer`] as v2.
//!
//! [`Service::infer`]: crate::service::Service::infer

use super::body::Body;
use super::codec::json::{self, DataJson, InputJson};
use super::error::ApiError;
use super::path::Path;
use super::state::AppState;
use crate::error::Error;
use crate::service::{InferRequest, InferResponse, Protocol};
use crate::tensor::Tensor;
use crate::tensor::{RunOutput, TensorSpec};
use axum::Json;
use axum::extract::State;
use serde_json::{Map, Value, json};
use tracing::Instrument as _;

type ApiResult<T> = Result<T, ApiError>;

/// `POST /v1/models/{model}:{action}`; only `predict` exists.
pub(super) async fn action(
    State(s): State<AppState>,
    Path(model_action): Path<String>,
    headers: axum::http::HeaderMap,
    Body(body): Body,
) -> ApiResult<Json<Value>> {
    let Some((model, "predict")) = model_action.rsplit_once(':') else {
        return Err(ApiError(Error::NotFound(format!(
            "no such endpoint: expected /v1/models/<model>:predict, got /v1/models/{model_action}"
        ))));
    };
    let metadata = s.service.metadata(model, None)?;
    let body: Value = serde_json::from_slice(&body)
        .map_err(|e| Error::invalid(format!("malformed predict request JSON: {e}")))?;
    let Value::Object(mut body) = body else {
        return Err(Error::invalid("predict request must be a JSON object").into());
    };
    let specs = &metadata.inputs;
    let max = s.service.limits().max_tensor_elements;
    let (inputs, rows) = match (body.remove("instances"), body.remove("inputs")) {
        (instances, columns) if specs.is_empty() => no_inputs(model, instances, columns)?,
        (Some(instances), None) => (from_instances(specs, instances, max)?, true),
        (None, Some(columns)) => (from_columns(specs, columns, max)?, false),
        _ => {
            return Err(Error::invalid(
                "predict request needs exactly one of 'instances' (row format) or 'inputs' (columnar format)",
            )
            .into());
        }
    };
    let request = InferRequest {
        model: model.to_string(),
        version: Some(metadata.version),
        inputs,
        ..InferRequest::default()
    };
    let span = crate::telemetry::request_span("http", model, &headers);
    let response = s
        .service
        .infer(request, Protocol::Http)
        .instrument(span)
        .await?;
    Ok(Json(if rows {
        json!({"predictions": predictions(&response)})
    } else {
        json!({"outputs": columns(&response)})
    }))
}

/// A model with no inputs (a constant, a generator) runs on nothing: the
/// request may leave out both fields, or send `{"inputs": {}}`, or
/// instances that are all `{}`; the answer's format follows the field sent.
/// Data for inputs the model does not have is a 400 that says so.
fn no_inputs(
    model: &str,
    instances: Option<Value>,
    columns: Option<Value>,
) -> ApiResult<(Vec<Tensor>, bool)> {
    let empty = |v: &Value| v.as_object().is_some_and(Map::is_empty);
    let rows = match (&instances, &columns) {
        (Some(_), Some(_)) => {
            return Err(Error::invalid(
                "predict request needs at most one of 'instances' (row format) or 'inputs' (columnar format)",
            )
            .into());
        }
        (Some(Value::Array(rows)), None) if rows.iter().all(empty) => true,
        (None, Some(columns)) if empty(columns) => false,
        (None, None) => false,
        (Some(got), None) | (None, Some(got)) => {
            let field = if instances.is_some() {
                "instances"
            } else {
                "inputs"
            };
            return Err(Error::invalid(format!(
                "model '{model}' has no inputs, so '{field}' must be empty \
                 (a list of {{}} rows, or {{}}) or left out; got {got}"
            ))
            .into());
        }
    };
    Ok((Vec::new(), rows))
}

fn from_instances(specs: &[TensorSpec], instances: Value, max: usize) -> ApiResult<Vec<Tensor>> {
    let Value::Array(instances) = instances else {
        return Err(Error::invalid(format!(
            "'instances' must be a list of rows, got {instances}"
        ))
        .into());
    };
    if instances.is_empty() {
        return Err(Error::invalid("'instances' must hold at least one row").into());
    }
    let named = specs.len() > 1 || instances.iter().all(Value::is_object);
    let mut columns: Vec<Vec<Value>> = vec![Vec::with_capacity(instances.len()); specs.len()];
    for (i, instance) in instances.into_iter().enumerate() {
        if !named {
            // `named` is false only with exactly one input, so one column.
            if let Some(column) = columns.first_mut() {
                column.push(instance);
            }
            continue;
        }
        let Value::Object(mut fields) = instance else {
            return Err(Error::invalid(format!(
                "instance {i} must be an object {{input name: value}} for a model with inputs {}, got {instance}",
                names(specs)
            ))
            .into());
        };
        for (spec, column) in specs.iter().zip(&mut columns) {
            let value = fields.remove(&spec.name).ok_or_else(|| {
                Error::invalid(format!("instance {i} has no input '{}'", spec.name))
            })?;
            column.push(value);
        }
        if let Some(extra) = fields.keys().next() {
            return Err(Error::invalid(format!(
                "instance {i}: unknown input '{extra}'; expected inputs: {}",
                names(specs)
            ))
            .into());
        }
    }
    specs
        .iter()
        .zip(columns)
        .map(|(spec, rows)| tensor(spec, Value::Array(rows), max))
        .collect()
}

fn from_columns(specs: &[TensorSpec], columns: Value, max: usize) -> ApiResult<Vec<Tensor>> {
    match columns {
        Value::Object(mut map) => {
            let tensors = specs
                .iter()
                .map(|spec| {
                    let value = map.remove(&spec.name).ok_or_else(|| {
                        Error::invalid(format!("'inputs' has no input '{}'", spec.name))
                    })?;
                    tensor(spec, value, max)
                })
                .collect::<ApiResult<Vec<_>>>()?;
            if let Some(extra) = map.keys().next() {
                return Err(Error::invalid(format!(
                    "'inputs': unknown input '{extra}'; expected inputs: {}",
                    names(specs)
                ))
                .into());
            }
            Ok(tensors)
        }
        value => match specs {
            [spec] => Ok(vec![tensor(spec, value, max)?]),
            _ => Err(Error::invalid(format!(
                "'inputs' must be an object {{input name: tensor}} for a model with inputs {}",
                names(specs)
            ))
            .into()),
        },
    }
}

fn names(specs: &[TensorSpec]) -> String {
    specs
        .iter()
        .map(|s| s.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// One input from nested JSON: the shape from the nesting, the datatype from
/// the signature, the elements through the v2 decoder.
fn tensor(spec: &TensorSpec, value: Value, max: usize) -> ApiResult<Tensor> {
    let shape = shape_of(&spec.name, &value)?;
    let raw = serde_json::value::to_raw_value(&value)
        .map_err(|e| Error::internal(format!("cannot re-encode input '{}': {e}", spec.name)))?;
    let input = InputJson {
        name: spec.name.clone(),
        shape,
        datatype: spec.datatype.as_str().to_string(),
        parameters: None,
        data: Some(&raw),
    };
    Ok(json::decode_input(&input, max)?)
}

/// The shape of a rectangular nested array (a scalar has shape `[]`).
fn shape_of(name: &str, value: &Value) -> ApiResult<Vec<i64>> {
    let mut shape = Vec::new();
    let mut level = value;
    while let Value::Array(items) = level {
        shape.push(items.len() as i64);
        match items.first() {
            Some(first) => level = first,
            None => break,
        }
    }
    check_rectangular(name, value, &shape)?;
    Ok(shape)
}

fn check_rectangular(name: &str, value: &Value, shape: &[i64]) -> ApiResult<()> {
    match (value, shape.split_first()) {
        (Value::Array(items), Some((&n, rest))) if items.len() as i64 == n => items
            .iter()
            .try_for_each(|item| check_rectangular(name, item, rest)),
        (Value::Array(_), None) | (_, Some(_)) => Err(Error::invalid(format!(
            "input '{name}': nested lists are ragged; every row needs the same shape"
        ))
        .into()),
        (_, None) => Ok(()),
    }
}

/// Nests a flat list into `shape` (row-major).
fn nest(flat: &[Value], shape: &[usize]) -> Value {
    match shape.split_first() {
        None => flat.first().cloned().unwrap_or(Value::Null),
        Some((&n, rest)) => {
            let step = rest.iter().product::<usize>();
            Value::Array(
                (0..n)
                    .map(|i| nest(flat.get(i * step..(i + 1) * step).unwrap_or(&[]), rest))
                    .collect(),
            )
        }
    }
}

fn flat(out: &RunOutput) -> Vec<Value> {
    match serde_json::to_value(DataJson {
        datatype: out.datatype,
        data: &out.data,
    }) {
        Ok(Value::Array(v)) => v,
        _ => Vec::new(),
    }
}

/// Row format: split every output along its first dimension.
fn predictions(response: &InferResponse) -> Value {
    let rows = response
        .outputs
        .first()
        .map_or(0, |(_, o)| o.shape.first().copied().unwrap_or(1));
    let per_output: Vec<(&str, Vec<Value>)> = response
        .outputs
        .iter()
        .map(|(name, out)| {
            let values = flat(out);
            let row_shape = out.shape.get(1..).unwrap_or(&[]);
            let step = row_shape.iter().product::<usize>();
            let split = (0..rows)
                .map(|r| {
                    nest(
                        values.get(r * step..(r + 1) * step).unwrap_or(&[]),
                        row_shape,
                    )
                })
                .collect();
            (name.as_str(), split)
        })
        .collect();
    if let [(_, only)] = per_output.as_slice() {
        return Value::Array(only.clone());
    }
    Value::Array(
        (0..rows)
            .map(|r| {
                let row: Map<String, Value> = per_output
                    .iter()
                    .map(|(name, split)| {
                        let value = split.get(r).cloned().unwrap_or(Value::Null);
                        (name.to_string(), value)
                    })
                    .collect();
                Value::Object(row)
            })
            .collect(),
    )
}

/// Columnar format: each output whole.
fn columns(response: &InferResponse) -> Value {
    let nested: Vec<(&str, Value)> = response
        .outputs
        .iter()
        .map(|(name, out)| (name.as_str(), nest(&flat(out), &out.shape)))
        .collect();
    if let [(_, only)] = nested.as_slice() {
        return only.clone();
    }
    Value::Object(
        nested
            .into_iter()
            .map(|(n, v)| (n.to_string(), v))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_follow_nesting() {
        assert_eq!(shape_of("x", &json!([[1, 2], [3, 4]])).unwrap(), [2, 2]);
        assert_eq!(shape_of("x", &json!(5)).unwrap(), Vec::<i64>::new());
        assert!(shape_of("x", &json!([[1, 2], [3]])).is_err());
        assert!(shape_of("x", &json!([[1, 2], 3])).is_err());
    }

    #[test]
    fn nest_is_row_major() {
        let flat = [json!(1), json!(2), json!(3), json!(4), json!(5), json!(6)];
        assert_eq!(nest(&flat, &[2, 3]), json!([[1, 2, 3], [4, 5, 6]]));
        assert_eq!(nest(&flat[..1], &[]), json!(1));
    }
}
