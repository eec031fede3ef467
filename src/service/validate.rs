//! Checking a decoded request against the model it addresses: names,
//! datatypes, shapes, batch rows and limits, into a schedulable [`Job`].
//! Messages name the input, what was expected and what arrived.

use super::types::{InferRequest, Limits};
use crate::error::{Error, Result};
use crate::registry::LoadedVersion;
use crate::scheduler::{BatchKey, Job};
use crate::tensor::{DataType, Tensor, TensorData, TensorSpec, element_count, fmt_shape};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

/// Checks `request` against the model and turns it into a schedulable job.
/// Messages name the input, what was expected and what arrived.
pub(crate) fn validate(
    version: &LoadedVersion,
    request: InferRequest,
    limits: &Limits,
    now: Instant,
) -> Result<Job> {
    let signature = &version.signature;
    let batching = version.max_batch_size > 0;
    let mut by_name: Vec<Option<Tensor>> = vec![None; signature.inputs.len()];
    let mut total_bytes = 0usize;
    for tensor in request.inputs {
        let Some(index) = signature.inputs.iter().position(|s| s.name == tensor.name) else {
            let known: Vec<&str> = signature.inputs.iter().map(|s| s.name.as_str()).collect();
            return Err(Error::invalid(format!(
                "unknown input '{}' for model '{}'; expected inputs: {}",
                tensor.name,
                version.model,
                known.join(", ")
            )));
        };
        // `index` is a position in the signature, which by_name mirrors.
        let Some(slot @ None) = by_name.get_mut(index) else {
            return Err(Error::invalid(format!(
                "input '{}' is given more than once",
                tensor.name
            )));
        };
        let count = element_count(&tensor.shape).ok_or_else(|| {
            Error::invalid(format!(
                "input '{}': shape {} overflows the element count",
                tensor.name,
                fmt_shape(&tensor.shape)
            ))
        })?;
        if count > limits.max_tensor_elements {
            return Err(Error::TooLarge(format!(
                "input '{}': {count} elements exceed the limit of {} (--max-tensor-elements)",
                tensor.name, limits.max_tensor_elements
            )));
        }
        if let TensorData::Bytes(elements) = &tensor.data {
            if let Some((i, e)) = elements
                .iter()
                .enumerate()
                .find(|(_, e)| e.len() > limits.max_bytes_element)
            {
                return Err(Error::TooLarge(format!(
                    "input '{}': BYTES element {i} is {} bytes, over the limit of {} (--max-bytes-element)",
                    tensor.name,
                    e.len(),
                    limits.max_bytes_element
                )));
            }
        }
        total_bytes = total_bytes.saturating_add(tensor.data.byte_len());
        *slot = Some(tensor);
    }
    if total_bytes > limits.max_request_bytes {
        return Err(Error::TooLarge(format!(
            "request tensors hold {total_bytes} bytes, over the limit of {} (--max-request-tensor-bytes)",
            limits.max_request_bytes
        )));
    }

    let mut inputs = Vec::with_capacity(by_name.len());
    let mut rows: Option<(usize, &str)> = None;
    let mut omitted = Vec::new();
    for (index, (spec, tensor)) in signature.inputs.iter().zip(by_name).enumerate() {
        let Some(tensor) = tensor else {
            // An optional input left out: the graph's default is used, and
            // the job runs only with requests that leave out the same ones.
            if signature.defaulted.iter().any(|d| d.name == spec.name) {
                omitted.push(index);
                continue;
            }
            return Err(Error::invalid(format!(
                "missing input '{}' ({} {}) for model '{}'",
                spec.name,
                spec.datatype,
                fmt_shape(&spec.shape),
                version.model
            )));
        };
        check_type_and_shape(spec, &tensor)?;
        tensor.check_consistent().map_err(Error::InvalidArgument)?;
        if batching {
            let n = tensor.rows();
            if n == 0 {
                return Err(Error::invalid(format!(
                    "input '{}': the batch dimension must be ≥ 1, got 0",
                    spec.name
                )));
            }
            if n > version.max_batch_size {
                return Err(Error::invalid(format!(
                    "input '{}': batch of {n} rows exceeds max_batch_size {} of model '{}'",
                    spec.name, version.max_batch_size, version.model
                )));
            }
            match &rows {
                Some((r, first)) if *r != n => {
                    return Err(Error::invalid(format!(
                        "input '{}': has {n} rows but input '{first}' has {r}; every input needs the same batch size",
                        spec.name
                    )));
                }
                Some(_) => {}
                None => rows = Some((n, spec.name.as_str())),
            }
        }
        if spec.datatype == DataType::Bytes {
            if let TensorData::Bytes(elements) = &tensor.data {
                if let Some(i) = elements
                    .iter()
                    .position(|e| std::str::from_utf8(e).is_err())
                {
                    return Err(Error::invalid(format!(
                        "input '{}': BYTES element {i} is not valid UTF-8, which ONNX string tensors require",
                        spec.name
                    )));
                }
            }
        }
        inputs.push(tensor);
    }

    let outputs = match request.outputs {
        None => (0..signature.outputs.len()).collect(),
        Some(names) => {
            let mut seen = HashSet::new();
            let mut indices = Vec::with_capacity(names.len());
            for name in names {
                let Some(i) = signature.outputs.iter().position(|s| s.name == name) else {
                    let known: Vec<&str> =
                        signature.outputs.iter().map(|s| s.name.as_str()).collect();
                    return Err(Error::invalid(format!(
                        "unknown output '{name}' for model '{}'; expected outputs: {}",
                        version.model,
                        known.join(", ")
                    )));
                };
                if seen.insert(i) {
                    indices.push(i);
                }
            }
            indices
        }
    };

    let batching_cfg = &version.config.dynamic_batching;
    let priority = match request.priority {
        None | Some(0) => batching_cfg.default_priority_level as usize,
        Some(p) if p <= u64::from(batching_cfg.priority_levels) => p as usize,
        Some(p) => {
            return Err(Error::invalid(format!(
                "parameter 'priority' must be between 1 and {} for model '{}', got {p}",
                batching_cfg.priority_levels, version.model
            )));
        }
    };
    let timeout = version.queue_timeout(priority, request.timeout_us);
    let key = batch_key(version, &inputs, &outputs, omitted);
    Ok(Job {
        rows: rows.map_or(1, |(r, _)| r),
        inputs,
        outputs,
        key,
        priority,
        deadline: timeout.map(|t| now + t),
        trace: tracing::Span::none(),
    })
}

/// The job's batch key: the version's common key when the job's matches it
/// (compared in place, no allocation), else a key of its own; the first key
/// a version sees becomes its common key.
fn batch_key(
    version: &LoadedVersion,
    inputs: &[Tensor],
    outputs: &[usize],
    omitted: Vec<usize>,
) -> Arc<BatchKey> {
    let batching = version.max_batch_size > 0;
    // The dims that must match for two jobs to share a batch.
    fn dims(t: &Tensor, batching: bool) -> &[usize] {
        if batching {
            t.shape.get(1..).unwrap_or_default()
        } else {
            &t.shape
        }
    }
    if let Some(common) = version.common_key.get() {
        let same = common.outputs == outputs
            && common.omitted == omitted
            && common.inputs.len() == inputs.len()
            && common.inputs.iter().zip(inputs).all(|((datatype, d), t)| {
                *datatype == t.datatype && d.as_slice() == dims(t, batching)
            });
        if same {
            return Arc::clone(common);
        }
    }
    let key = Arc::new(BatchKey {
        inputs: inputs
            .iter()
            .map(|t| (t.datatype, dims(t, batching).to_vec()))
            .collect(),
        outputs: outputs.to_vec(),
        omitted,
    });
    version.common_key.get_or_init(|| Arc::clone(&key));
    key
}

/// Checks a given input's datatype and shape against the spec it fills
/// (-1 in the spec is any size).
pub(super) fn check_type_and_shape(spec: &TensorSpec, tensor: &Tensor) -> Result<()> {
    if tensor.datatype != spec.datatype {
        return Err(Error::invalid(format!(
            "input '{}': expected datatype {}, got {}",
            spec.name, spec.datatype, tensor.datatype
        )));
    }
    let fits = tensor.shape.len() == spec.shape.len()
        && tensor
            .shape
            .iter()
            .zip(&spec.shape)
            .all(|(&got, &want)| want < 0 || i64::try_from(got).is_ok_and(|g| g == want));
    if !fits {
        return Err(Error::invalid(format!(
            "input '{}': expected shape {} (-1 is any size), got {}",
            spec.name,
            fmt_shape(&spec.shape),
            fmt_shape(&tensor.shape)
        )));
    }
    Ok(())
}

// === repository and model configuration ===
