//! Conversions between the generated protobuf types and the domain:
//! requests into [`InferRequest`], responses out of [`InferResponse`],
//! configuration, statistics and the repository index.

use super::pb;
use crate::error::{Error, Result};
use crate::repository::config::VersionPolicy;
use crate::service::{
    ConfigTensor, IndexRow, InferRequest, InferResponse, ModelConfigView, ModelMetadata,
    StatDuration, VersionStats,
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
    Ok(InferRequest {
        model: req.model_name,
        version: version("model_version", &req.model_version)?,
        id: (!req.id.is_empty()).then_some(req.id),
        inputs,
        outputs: (!req.outputs.is_empty())
            .then(|| req.outputs.into_iter().map(|o| o.name).collect()),
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

fn config_datatype(dt: DataType) -> pb::DataType {
    match dt {
        DataType::Bool => pb::DataType::TypeBool,
        DataType::Uint8 => pb::DataType::TypeUint8,
        DataType::Uint16 => pb::DataType::TypeUint16,
        DataType::Uint32 => pb::DataType::TypeUint32,
        DataType::Uint64 => pb::DataType::TypeUint64,
        DataType::Int8 => pb::DataType::TypeInt8,
        DataType::Int16 => pb::DataType::TypeInt16,
        DataType::Int32 => pb::DataType::TypeInt32,
        DataType::Int64 => pb::DataType::TypeInt64,
        DataType::Fp16 => pb::DataType::TypeFp16,
        DataType::Fp32 => pb::DataType::TypeFp32,
        DataType::Fp64 => pb::DataType::TypeFp64,
        DataType::Bf16 => pb::DataType::TypeBf16,
        DataType::Bytes => pb::DataType::TypeString,
    }
}

pub(crate) fn config(c: &ModelConfigView) -> pb::ModelConfig {
    let b = &c.dynamic_batching;
    let policy = match &c.version_policy {
        VersionPolicy::Latest(n) => {
            pb::model_version_policy::PolicyChoice::Latest(pb::model_version_policy::Latest {
                num_versions: u32::try_from(*n).unwrap_or(u32::MAX),
            })
        }
        VersionPolicy::All => {
            pb::model_version_policy::PolicyChoice::All(pb::model_version_policy::All {})
        }
        VersionPolicy::Specific(v) => {
            pb::model_version_policy::PolicyChoice::Specific(pb::model_version_policy::Specific {
                versions: v.iter().map(|&x| x as i64).collect(),
            })
        }
    };
    let inputs = c
        .inputs
        .iter()
        .map(|t: &ConfigTensor| pb::ModelInput {
            name: t.name.clone(),
            data_type: config_datatype(t.datatype).into(),
            dims: t.dims.clone(),
            ..Default::default()
        })
        .collect();
    let outputs = c
        .outputs
        .iter()
        .map(|t| pb::ModelOutput {
            name: t.name.clone(),
            data_type: config_datatype(t.datatype).into(),
            dims: t.dims.clone(),
            ..Default::default()
        })
        .collect();
    let kind = if c.gpu {
        pb::model_instance_group::Kind::Gpu
    } else {
        pb::model_instance_group::Kind::Cpu
    };
    let batching = (c.max_batch_size > 0).then(|| {
        pb::model_config::SchedulingChoice::DynamicBatching(pb::ModelDynamicBatching {
            preferred_batch_size: b
                .preferred_batch_sizes
                .iter()
                .map(|&s| i32::try_from(s).unwrap_or(i32::MAX))
                .collect(),
            max_queue_delay_microseconds: b.max_queue_delay_us,
            priority_levels: u64::from(b.priority_levels),
            default_priority_level: u64::from(b.default_priority_level),
            default_queue_policy: Some(pb::ModelQueuePolicy {
                timeout_action: pb::model_queue_policy::TimeoutAction::Reject.into(),
                default_timeout_microseconds: b.default_timeout_us,
                allow_timeout_override: true,
                max_queue_size: u32::try_from(b.max_queue_size).unwrap_or(u32::MAX),
            }),
            ..Default::default()
        })
    });
    if let Some(steps) = &c.ensemble {
        let step = steps
            .iter()
            .map(|s| pb::model_ensembling::Step {
                model_name: s.model_name.clone(),
                model_version: s.model_version,
                input_map: s.input_map.clone().into_iter().collect(),
                output_map: s.output_map.clone().into_iter().collect(),
                ..Default::default()
            })
            .collect();
        return pb::ModelConfig {
            name: c.name.clone(),
            platform: "ensemble".into(),
            version_policy: Some(pb::ModelVersionPolicy {
                policy_choice: Some(policy),
            }),
            max_batch_size: i32::try_from(c.max_batch_size).unwrap_or(i32::MAX),
            input: inputs,
            output: outputs,
            scheduling_choice: Some(pb::model_config::SchedulingChoice::EnsembleScheduling(
                pb::ModelEnsembling {
                    step,
                    ..Default::default()
                },
            )),
            ..Default::default()
        };
    }
    pb::ModelConfig {
        name: c.name.clone(),
        platform: "onnxruntime_onnx".into(),
        backend: "onnxruntime".into(),
        version_policy: Some(pb::ModelVersionPolicy {
            policy_choice: Some(policy),
        }),
        max_batch_size: i32::try_from(c.max_batch_size).unwrap_or(i32::MAX),
        input: inputs,
        output: outputs,
        instance_group: vec![pb::ModelInstanceGroup {
            name: format!("{}_0", c.name),
            kind: kind.into(),
            count: i32::try_from(c.instances).unwrap_or(i32::MAX),
            gpus: if c.gpu {
                vec![c.device_id as i32]
            } else {
                vec![]
            },
            ..Default::default()
        }],
        default_model_filename: "model.onnx".into(),
        scheduling_choice: batching,
        ..Default::default()
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
