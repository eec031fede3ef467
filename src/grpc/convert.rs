//! Conversions between the generated protobuf types and the domain:
//! requests into [`InferRequest`], responses out of [`InferResponse`],
//! configuration, statistics and the repository index.

use super::pb;
use crate::error::{Error, Result};
use crate::service::{
    IndexRow, InferRequest, InferResponse, ModelMetadata, StatDuration, VersionStats,
};
use crate::tensor::{
    DataType, Tensor, TensorData, check_shape, decode_raw, encode_raw, parse_datatype,
};
use bytes::{Bytes, BytesMut};
use pb::infer_parameter::ParameterChoice;
use std::collections::HashMap;

/// A version field: empty means "the server's choice".
pub fn version(field: &str, version: &str) -> Result<Option<u64>> {
    if version.is_empty() {
        return Ok(None);
    }
    version
        .parse::<u64>()
        .ok()
        .filter(|&v| v > 0)
        .map(Some)
        .ok_or_else(|| {
            Error::invalid(format!(
                "'{field}' must be a positive integer or empty, got '{version}'"
            ))
        })
}

/// A parameter as u64: tritonclient sends `priority` as uint64 and `timeout`
/// as int64 or uint64 (µs).
fn param_u64(params: &HashMap<String, pb::InferParameter>, key: &str) -> Result<Option<u64>> {
    let Some(choice) = params.get(key).and_then(|p| p.parameter_choice.as_ref()) else {
        return Ok(None);
    };
    match choice {
        ParameterChoice::Uint64Param(v) => Ok(Some(*v)),
        ParameterChoice::Int64Param(v) => u64::try_from(*v).map(Some).map_err(|_| {
            Error::invalid(format!(
                "parameter '{key}' must be a non-negative integer, got {v}"
            ))
        }),
        other => Err(Error::invalid(format!(
            "parameter '{key}' must be an int64 or uint64 integer, got {other:?}"
        ))),
    }
}

/// Decodes a `ModelInferRequest`: inputs from `raw_input_contents` (slices
/// of the received message) or from typed `contents`.
pub fn infer_request(req: pb::ModelInferRequest, max_elements: usize) -> Result<InferRequest> {
    let raw = req.raw_input_contents;
    if !raw.is_empty() && raw.len() != req.inputs.len() {
        return Err(Error::invalid(format!(
            "raw_input_contents has {} entries but there are {} inputs; send one per input, in order",
            raw.len(),
            req.inputs.len()
        )));
    }
    let mut raw = raw.into_iter();
    let mut inputs = Vec::with_capacity(req.inputs.len());
    for input in req.inputs {
        let name = input.name.as_str();
        let datatype = parse_datatype(name, &input.datatype)?;
        let (shape, count) = check_shape(name, &input.shape, max_elements)?;
        let data = match (raw.next(), input.contents) {
            (Some(_), Some(_)) => {
                return Err(Error::invalid(format!(
                    "input '{name}': has 'contents' while raw_input_contents is used; send one or the other"
                )));
            }
            (Some(bytes), None) => decode_raw(name, datatype, &shape, bytes)?,
            (None, Some(contents)) => typed_contents(name, datatype, contents, count)?,
            (None, None) => {
                return Err(Error::invalid(format!(
                    "input '{name}': no data; set 'contents' or 'raw_input_contents'"
                )));
            }
        };
        inputs.push(Tensor {
            name: input.name,
            datatype,
            shape,
            data,
        });
    }
    let mut classification = Vec::new();
    for output in &req.outputs {
        let count = param_u64(&output.parameters, "classification")
            .map_err(|e| Error::invalid(format!("output '{}': {e}", output.name)))?;
        if let Some(count) = count {
            classification.push((output.name.clone(), count));
        }
    }
    Ok(InferRequest {
        model: req.model_name,
        version: version("model_version", &req.model_version)?,
        id: (!req.id.is_empty()).then_some(req.id),
        inputs,
        outputs: (!req.outputs.is_empty())
            .then(|| req.outputs.into_iter().map(|o| o.name).collect()),
        classification,
        priority: param_u64(&req.parameters, "priority")?,
        timeout_us: param_u64(&req.parameters, "timeout")?,
    })
}

/// Packs typed `contents` little-endian, checking kinds, ranges and count.
fn typed_contents(
    name: &str,
    datatype: DataType,
    c: pb::InferTensorContents,
    count: usize,
) -> Result<TensorData> {
    let mut out = BytesMut::new();
    macro_rules! pack {
        ($field:ident, $field_name:literal, $t:ty) => {{
            let values = &c.$field;
            if values.len() != count {
                return Err(Error::invalid(format!(
                    "input '{name}': shape needs {count} elements, got {} in contents.{}",
                    values.len(),
                    $field_name
                )));
            }
            out.reserve(count * std::mem::size_of::<$t>());
            for (i, &v) in values.iter().enumerate() {
                let x = <$t>::try_from(v).map_err(|_| {
                    Error::invalid(format!(
                        "input '{name}': element {i} of contents.{} is {v}, out of range for {datatype}",
                        $field_name
                    ))
                })?;
                out.extend_from_slice(&x.to_le_bytes());
            }
        }};
    }
    match datatype {
        DataType::Bool => {
            if c.bool_contents.len() != count {
                return Err(Error::invalid(format!(
                    "input '{name}': shape needs {count} elements, got {} in contents.bool_contents",
                    c.bool_contents.len()
                )));
            }
            out.extend(c.bool_contents.iter().map(|&b| u8::from(b)));
        }
        DataType::Int8 => pack!(int_contents, "int_contents", i8),
        DataType::Int16 => pack!(int_contents, "int_contents", i16),
        DataType::Int32 => pack!(int_contents, "int_contents", i32),
        DataType::Int64 => pack!(int64_contents, "int64_contents", i64),
        DataType::Uint8 => pack!(uint_contents, "uint_contents", u8),
        DataType::Uint16 => pack!(uint_contents, "uint_contents", u16),
        DataType::Uint32 => pack!(uint_contents, "uint_contents", u32),
        DataType::Uint64 => pack!(uint64_contents, "uint64_contents", u64),
        DataType::Fp32 => pack!(fp32_contents, "fp32_contents", f32),
        DataType::Fp64 => pack!(fp64_contents, "fp64_contents", f64),
        DataType::Fp16 | DataType::Bf16 => {
            return Err(Error::invalid(format!(
                "input '{name}': {datatype} has no typed contents field; send it in raw_input_contents"
            )));
        }
        DataType::Bytes => {
            if c.bytes_contents.len() != count {
                return Err(Error::invalid(format!(
                    "input '{name}': shape needs {count} elements, got {} in contents.bytes_contents",
                    c.bytes_contents.len()
                )));
            }
            return Ok(TensorData::Bytes(c.bytes_contents));
        }
    }
    Ok(TensorData::Fixed(out.freeze()))
}

/// Encodes a response; outputs always leave in `raw_output_contents`.
pub(crate) fn infer_response(response: InferResponse) -> pb::ModelInferResponse {
    let mut outputs = Vec::with_capacity(response.outputs.len());
    let mut raw: Vec<Bytes> = Vec::with_capacity(response.outputs.len());
    for (name, out) in response.outputs {
        raw.push(encode_raw(&out.data));
        outputs.push(pb::model_infer_response::InferOutputTensor {
            name,
            datatype: out.datatype.as_str().to_string(),
            shape: out.shape.iter().map(|&d| d as i64).collect(),
            parameters: HashMap::new(),
            contents: None,
        });
    }
    pb::ModelInferResponse {
        model_name: response.model,
        model_version: response.version.to_string(),
        id: response.id.unwrap_or_default(),
        parameters: HashMap::new(),
        outputs,
        raw_output_contents: raw,
    }
}

/// KServe v2 model metadata.
pub(crate) fn metadata(m: ModelMetadata) -> pb::ModelMetadataResponse {
    let tensors = |specs: Vec<crate::tensor::TensorSpec>| {
        specs
            .into_iter()
            .map(|t| pb::model_metadata_response::TensorMetadata {
                name: t.name,
                datatype: t.datatype.as_str().to_string(),
                shape: t.shape,
            })
            .collect()
    };
    pb::ModelMetadataResponse {
        name: m.name,
        versions: m.versions.iter().map(u64::to_string).collect(),
        platform: m.platform.into(),
        inputs: tensors(m.inputs),
        outputs: tensors(m.outputs),
    }
}

fn duration(d: StatDuration) -> Option<pb::StatisticDuration> {
    Some(pb::StatisticDuration {
        count: d.count,
        ns: d.ns,
    })
}

/// Triton's statistics of one version (the same figures as REST `stats`).
pub(crate) fn statistics(s: VersionStats) -> pb::ModelStatistics {
    pb::ModelStatistics {
        name: s.name,
        version: s.version.to_string(),
        last_inference: s.last_inference,
        inference_count: s.inference_count,
        execution_count: s.execution_count,
        inference_stats: Some(pb::InferStatistics {
            success: duration(s.success),
            fail: duration(s.fail),
            queue: duration(s.queue),
            compute_input: duration(s.compute_input),
            compute_infer: duration(s.compute_infer),
            compute_output: duration(s.compute_output),
            cache_hit: s.cache_hit.and_then(duration),
            cache_miss: s.cache_miss.and_then(duration),
        }),
        batch_stats: s
            .batches
            .into_iter()
            .map(|b| pb::InferBatchStatistics {
                batch_size: b.batch_size,
                compute_input: duration(b.compute_input),
                compute_infer: duration(b.compute_infer),
                compute_output: duration(b.compute_output),
            })
            .collect(),
        memory_usage: vec![],
        response_stats: HashMap::new(),
    }
}

pub(crate) fn index(rows: Vec<IndexRow>) -> pb::RepositoryIndexResponse {
    pb::RepositoryIndexResponse {
        models: rows
            .into_iter()
            .map(|r| pb::repository_index_response::ModelIndex {
                name: r.name,
                version: r.version.map(|v| v.to_string()).unwrap_or_default(),
                state: r.state.into(),
                reason: r.reason,
            })
            .collect(),
    }
}
