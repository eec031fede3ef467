//! The way back: a served version's effective configuration as Triton's
//! `ModelConfig`, what `GET /v2/models/{m}/config` and gRPC `ModelConfig`
//! answer. It is rendered from what Sluice runs (the signature clients see,
//! the instances and the provider that was registered), whichever front end
//! the configuration came from, so a model without any file gets the
//! completed configuration Triton's auto-complete would show.
//!
//! The JSON form is the protobuf JSON mapping as Triton prints it: proto
//! field names, every scalar and list field present (zero values
//! included), 64-bit integers as numbers, and message fields only where set
//! (so `dynamic_batching` is absent for a model that does not batch).

use super::pb;
use crate::repository::ModelConfig;
use crate::repository::config::VersionPolicy;
use crate::repository::spec::{TimeoutAction, WarmupData};
use crate::runtime::{ExecutionProvider, GraphOptimization};
use crate::tensor::{DataType, TensorSpec};
use prost_reflect::{DynamicMessage, Kind, MessageDescriptor, ReflectMessage};
use serde_json::Value;
use std::collections::HashMap;

/// What a loaded version runs with, beyond its [`ModelConfig`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Served<'a> {
    pub(crate) name: &'a str,
    /// 0 when the model does not batch.
    pub(crate) max_batch_size: usize,
    /// The tensors clients send and receive (with the batch dimension).
    pub(crate) inputs: &'a [TensorSpec],
    pub(crate) outputs: &'a [TensorSpec],
    /// Instances per device.
    pub(crate) instances: usize,
    /// The provider registered: `cpu`, `cuda` or `tensorrt`.
    pub(crate) provider: &'a str,
    pub(crate) device_id: u32,
}

/// Triton's datatype enum of a Sluice datatype (BYTES is `TYPE_STRING`).
pub(crate) fn triton_datatype(dt: DataType) -> pb::DataType {
    use pb::DataType as T;
    match dt {
        DataType::Bool => T::TypeBool,
        DataType::Uint8 => T::TypeUint8,
        DataType::Uint16 => T::TypeUint16,
        DataType::Uint32 => T::TypeUint32,
        DataType::Uint64 => T::TypeUint64,
        DataType::Int8 => T::TypeInt8,
        DataType::Int16 => T::TypeInt16,
        DataType::Int32 => T::TypeInt32,
        DataType::Int64 => T::TypeInt64,
        DataType::Fp16 => T::TypeFp16,
        DataType::Fp32 => T::TypeFp32,
        DataType::Fp64 => T::TypeFp64,
        DataType::Bf16 => T::TypeBf16,
        DataType::Bytes => T::TypeString,
    }
}

/// The effective `ModelConfig` of an ensemble: its tensors, version policy
/// and steps (it has no instances, batcher or session of its own).
pub(crate) fn ensemble_config(config: &ModelConfig, served: &Served<'_>) -> pb::ModelConfig {
    let mut rendered = model_config(config, served);
    let step = config
        .ensemble
        .iter()
        .flat_map(|e| &e.steps)
        .map(|s| pb::model_ensembling::Step {
            model_name: s.model_name.clone(),
            model_version: s
                .model_version
                .map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX)),
            input_map: s.input_map.clone().into_iter().collect(),
            output_map: s.output_map.clone().into_iter().collect(),
            ..Default::default()
        })
        .collect();
    pb::ModelConfig {
        name: rendered.name,
        platform: "ensemble".into(),
        version_policy: rendered.version_policy,
        max_batch_size: rendered.max_batch_size,
        input: std::mem::take(&mut rendered.input),
        output: std::mem::take(&mut rendered.output),
        scheduling_choice: Some(pb::model_config::SchedulingChoice::EnsembleScheduling(
            pb::ModelEnsembling {
                step,
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

/// The effective `ModelConfig` of a served version.
pub(crate) fn model_config(config: &ModelConfig, served: &Served<'_>) -> pb::ModelConfig {
    let batching = served.max_batch_size > 0;
    let client_dims = |t: &TensorSpec| -> Vec<i64> {
        match t.shape.split_first() {
            Some((_, rest)) if batching => rest.to_vec(),
            _ => t.shape.clone(),
        }
    };
    let reshape = |r: Option<&Vec<i64>>| {
        r.map(|shape| pb::ModelTensorReshape {
            shape: shape.clone(),
        })
    };
    let input = served
        .inputs
        .iter()
        .map(|t| {
            let decl = config.inputs.iter().find(|d| d.name == t.name);
            pb::ModelInput {
                name: t.name.clone(),
                data_type: triton_datatype(t.datatype).into(),
                dims: client_dims(t),
                reshape: reshape(decl.and_then(|d| d.reshape.as_ref())),
                optional: decl.is_some_and(|d| d.optional),
                ..Default::default()
            }
        })
        .collect();
    let output = served
        .outputs
        .iter()
        .map(|t| {
            let decl = config.outputs.iter().find(|d| d.name == t.name);
            pb::ModelOutput {
                name: t.name.clone(),
                data_type: triton_datatype(t.datatype).into(),
                dims: client_dims(t),
                reshape: reshape(decl.and_then(|d| d.reshape.as_ref())),
                label_filename: decl
                    .and_then(|d| d.labels.as_ref())
                    .map(|l| l.file.clone())
                    .or_else(|| {
                        config
                            .output_settings
                            .get(&t.name)
                            .and_then(|o| o.label_filename.clone())
                    })
                    .unwrap_or_default(),
                ..Default::default()
            }
        })
        .collect();
    let scheduling_choice = (config.dynamic_batching.enabled && batching)
        .then(|| pb::model_config::SchedulingChoice::DynamicBatching(dynamic_batching(config)));
    pb::ModelConfig {
        name: served.name.to_string(),
        platform: "onnxruntime_onnx".into(),
        backend: "onnxruntime".into(),
        version_policy: Some(version_policy(&config.version_policy)),
        max_batch_size: i32::try_from(served.max_batch_size).unwrap_or(i32::MAX),
        input,
        output,
        scheduling_choice,
        instance_group: vec![instance_group(config, served)],
        default_model_filename: config
            .model_filename
            .clone()
            .unwrap_or_else(|| crate::repository::MODEL_FILE.to_string()),
        parameters: parameters(config),
        optimization: Some(optimization(config)),
        model_warmup: warmup(config),
        response_cache: config
            .response_cache
            .then_some(pb::ModelResponseCache { enable: true }),
        ..Default::default()
    }
}

fn version_policy(policy: &VersionPolicy) -> pb::ModelVersionPolicy {
    use pb::model_version_policy::{All, Latest, PolicyChoice, Specific};
    let choice = match policy {
        VersionPolicy::Latest(n) => PolicyChoice::Latest(Latest {
            num_versions: u32::try_from(*n).unwrap_or(u32::MAX),
        }),
        VersionPolicy::All => PolicyChoice::All(All {}),
        VersionPolicy::Specific(v) => PolicyChoice::Specific(Specific {
            versions: v
                .iter()
                .map(|&v| i64::try_from(v).unwrap_or(i64::MAX))
                .collect(),
        }),
    };
    pb::ModelVersionPolicy {
        policy_choice: Some(choice),
    }
}

fn dynamic_batching(config: &ModelConfig) -> pb::ModelDynamicBatching {
    let b = &config.dynamic_batching;
    let queue_policy = |level: u32| {
        let p = b.queue_policy(level);
        pb::ModelQueuePolicy {
            timeout_action: match p.timeout_action {
                TimeoutAction::Reject => pb::model_queue_policy::TimeoutAction::Reject,
                TimeoutAction::Delay => pb::model_queue_policy::TimeoutAction::Delay,
            }
            .into(),
            default_timeout_microseconds: p.default_timeout_us,
            allow_timeout_override: p.allow_timeout_override,
            // Sluice always bounds a level; without a bound of its own, the
            // version's queue bound is the level's.
            max_queue_size: u32::try_from(if p.max_queue_size > 0 {
                p.max_queue_size
            } else {
                b.max_queue_size
            })
            .unwrap_or(u32::MAX),
        }
    };
    // Triton reports one level as `priority_levels: 0` (priorities off).
    let (levels, default_level) = if b.priority_levels > 1 {
        (
            u64::from(b.priority_levels),
            u64::from(b.default_priority_level),
        )
    } else {
        (0, 0)
    };
    pb::ModelDynamicBatching {
        preferred_batch_size: b
            .preferred_batch_sizes
            .iter()
            .map(|&n| i32::try_from(n).unwrap_or(i32::MAX))
            .collect(),
        max_queue_delay_microseconds: b.max_queue_delay_us,
        preserve_ordering: b.preserve_ordering,
        priority_levels: levels,
        default_priority_level: default_level,
        default_queue_policy: Some(queue_policy(0)),
        priority_queue_policy: b
            .priority_queue_policy
            .keys()
            .map(|&level| (u64::from(level), queue_policy(level)))
            .collect(),
    }
}

fn instance_group(config: &ModelConfig, served: &Served<'_>) -> pb::ModelInstanceGroup {
    use pb::model_instance_group::Kind as K;
    let gpu = served.provider != "cpu";
    let gpus: Vec<i32> = match (gpu, config.gpus.is_empty()) {
        (false, _) => Vec::new(),
        (true, true) => vec![i32::try_from(served.device_id).unwrap_or(i32::MAX)],
        (true, false) => config
            .gpus
            .iter()
            .map(|&g| i32::try_from(g).unwrap_or(i32::MAX))
            .collect(),
    };
    pb::ModelInstanceGroup {
        name: served.name.to_string(),
        kind: if gpu { K::Gpu } else { K::Cpu }.into(),
        count: i32::try_from(served.instances).unwrap_or(i32::MAX),
        gpus,
        ..Default::default()
    }
}

/// The `parameters` Triton's ONNX Runtime backend reads, as Sluice set them.
fn parameters(config: &ModelConfig) -> HashMap<String, pb::ModelParameter> {
    let s = &config.session;
    let mut out = HashMap::new();
    let mut put = |key: &str, value: String| {
        out.insert(
            key.to_string(),
            pb::ModelParameter {
                string_value: value,
            },
        );
    };
    if let Some(n) = config.intra_op_threads {
        put("intra_op_thread_count", n.to_string());
    }
    if let Some(n) = s.inter_op_threads {
        put("inter_op_thread_count", n.to_string());
    }
    put("execution_mode", u8::from(s.parallel_execution).to_string());
    if let Some(on) = s.memory_pattern {
        put("enable_mem_pattern", on.to_string());
    }
    for (key, value) in &s.config_entries {
        put(key, value.clone());
    }
    out
}

fn optimization(config: &ModelConfig) -> pb::ModelOptimizationPolicy {
    use pb::model_optimization_policy::execution_accelerators::Accelerator;
    use pb::model_optimization_policy::{ExecutionAccelerators, Graph};
    let level = match config.session.optimization {
        GraphOptimization::All => 0,
        GraphOptimization::Basic => -1,
        GraphOptimization::Extended => 1,
        GraphOptimization::Disabled => 2,
    };
    let gpu_execution_accelerator: Vec<Accelerator> = config
        .execution_providers
        .iter()
        .filter_map(|p| match p {
            ExecutionProvider::Tensorrt {
                fp16,
                int8,
                workspace_size_bytes,
                options,
                ..
            } => {
                let mut parameters: HashMap<String, String> = options.clone().into_iter().collect();
                let precision = match (fp16, int8) {
                    (_, true) => "INT8",
                    (true, false) => "FP16",
                    (false, false) => "FP32",
                };
                parameters.insert("precision_mode".into(), precision.into());
                if let Some(n) = workspace_size_bytes {
                    parameters.insert("max_workspace_size_bytes".into(), n.to_string());
                }
                Some(Accelerator {
                    name: "tensorrt".into(),
                    parameters,
                })
            }
            ExecutionProvider::Cuda { options, .. } => Some(Accelerator {
                name: "cuda".into(),
                parameters: options.clone().into_iter().collect(),
            }),
            ExecutionProvider::Cpu { .. } => None,
        })
        .collect();
    pb::ModelOptimizationPolicy {
        graph: Some(Graph { level }),
        execution_accelerators: (!gpu_execution_accelerator.is_empty()).then(|| {
            ExecutionAccelerators {
                gpu_execution_accelerator,
                cpu_execution_accelerator: Vec::new(),
            }
        }),
        ..Default::default()
    }
}

/// Warmup samples that name their inputs (those of a `config.pbtxt`).
fn warmup(config: &ModelConfig) -> Vec<pb::ModelWarmup> {
    use pb::model_warmup::Input;
    use pb::model_warmup::input::InputDataType;
    config
        .warmup
        .iter()
        .flatten()
        .filter(|run| !run.inputs.is_empty())
        .map(|run| pb::ModelWarmup {
            name: run.name.clone(),
            batch_size: u32::try_from(run.batch_size).unwrap_or(u32::MAX),
            count: u32::try_from(run.count).unwrap_or(u32::MAX),
            inputs: run
                .inputs
                .iter()
                .map(|(name, input)| {
                    let data = match &input.data {
                        WarmupData::Zero => InputDataType::ZeroData(true),
                        WarmupData::Random => InputDataType::RandomData(true),
                        WarmupData::File { name, .. } => InputDataType::InputDataFile(name.clone()),
                    };
                    (
                        name.clone(),
                        Input {
                            data_type: triton_datatype(input.datatype).into(),
                            dims: input
                                .dims
                                .iter()
                                .map(|&d| i64::try_from(d).unwrap_or(i64::MAX))
                                .collect(),
                            input_data_type: Some(data),
                        },
                    )
                })
                .collect(),
        })
        .collect()
}

/// Triton's JSON form of a `ModelConfig` (see the module doc).
pub(crate) fn to_json(config: &pb::ModelConfig) -> Result<Value, String> {
    let descriptor = super::pool()?
        .get_message_by_name("inference.ModelConfig")
        .ok_or("the built-in descriptor has no inference.ModelConfig")?;
    let mut message = DynamicMessage::new(descriptor);
    message
        .transcode_from(config)
        .map_err(|e| format!("cannot encode the model configuration: {e}"))?;
    let options = prost_reflect::SerializeOptions::new()
        .stringify_64_bit_integers(false)
        .use_proto_field_name(true)
        .skip_default_fields(true);
    let mut json = message
        .serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|e| format!("cannot encode the model configuration as JSON: {e}"))?;
    fill_defaults(&mut json, &message.descriptor());
    Ok(json)
}

/// Adds the scalar, list and map fields the serializer skipped for holding
/// their zero value, recursively; unset message fields and oneof members
/// stay absent, as Triton prints them.
fn fill_defaults(json: &mut Value, descriptor: &MessageDescriptor) {
    let Value::Object(object) = json else {
        return;
    };
    for field in descriptor.fields() {
        let name = field.name();
        if let Some(value) = object.get_mut(name) {
            if let Kind::Message(inner) = field.kind() {
                if field.is_map() {
                    let value_kind = inner.map_entry_value_field().kind();
                    if let (Value::Object(entries), Kind::Message(m)) = (value, value_kind) {
                        entries.values_mut().for_each(|v| fill_defaults(v, &m));
                    }
                } else if field.is_list() {
                    if let Value::Array(items) = value {
                        items.iter_mut().for_each(|v| fill_defaults(v, &inner));
                    }
                } else {
                    fill_defaults(value, &inner);
                }
            }
            continue;
        }
        let default = if field.is_map() {
            Value::Object(serde_json::Map::new())
        } else if field.is_list() {
            Value::Array(Vec::new())
        } else if field.containing_oneof().is_some() || field.supports_presence() {
            continue;
        } else {
            match field.kind() {
                Kind::Message(_) => continue,
                Kind::Bool => Value::Bool(false),
                Kind::String => Value::String(String::new()),
                Kind::Bytes => Value::String(String::new()),
                Kind::Float | Kind::Double => Value::from(0.0),
                Kind::Enum(e) => Value::String(e.default_value().name().to_string()),
                _ => Value::from(0),
            }
        };
        object.insert(name.to_string(), default);
    }
}

/// Parses Triton's JSON `ModelConfig` (the repository `load` call's
/// `config` parameter): proto or lowerCamelCase field names, 64-bit
/// integers as numbers or strings. Unknown fields are errors.
pub(crate) fn from_json(text: &str) -> Result<pb::ModelConfig, String> {
    let descriptor = super::pool()?
        .get_message_by_name("inference.ModelConfig")
        .ok_or("the built-in descriptor has no inference.ModelConfig")?;
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let message = DynamicMessage::deserialize(descriptor, &mut deserializer)
        .map_err(|e| format!("not a valid ModelConfig JSON: {e}"))?;
    deserializer
        .end()
        .map_err(|e| format!("not a valid ModelConfig JSON: {e}"))?;
    message
        .transcode_to::<pb::ModelConfig>()
        .map_err(|e| format!("cannot decode the ModelConfig: {e}"))
}
