//! Mapping Triton's `ModelConfig` onto Sluice's: the top-level fields, and
//! the calls into the mappers of each part.

use super::{Context, Findings, accel, batching, pb, tensors, warmup};
use crate::repository::ModelConfig;
use crate::repository::config::VersionPolicy;
use crate::repository::spec::{ConfigSource, Ensemble, EnsembleStep, ModelFiles};

/// The platform and backend names of ONNX Runtime models.
const PLATFORM: &str = "onnxruntime_onnx";
const BACKEND: &str = "onnxruntime";
const ENSEMBLE: &str = "ensemble";

pub(super) fn model_config(
    c: &pb::ModelConfig,
    cx: &Context<'_>,
    files: &ModelFiles,
) -> Result<ModelConfig, String> {
    let mut found = Findings::default();
    if !c.name.is_empty() && c.name != cx.name {
        return Err(format!(
            "`name` must match the model's directory name '{}'. Given: '{}'",
            cx.name, c.name
        ));
    }
    let is_ensemble = platform(c, &mut found)?;
    if c.max_batch_size < 0 {
        return Err(format!(
            "`max_batch_size` must be ≥ 0. Given: {}",
            c.max_batch_size
        ));
    }
    let declared = !c.input.is_empty() && !c.output.is_empty();
    // Triton completes a config from the model unless it declares both
    // inputs and outputs (or strict config forbids it); proto3 cannot tell
    // an omitted `max_batch_size` from 0, so 0 then means "derive it".
    let complete = !cx.strict && !declared && !is_ensemble;
    let max_batch_size = match c.max_batch_size {
        0 if complete => None,
        n => Some(usize::try_from(n).unwrap_or(0)),
    };
    let mut config = ModelConfig {
        source: ConfigSource::Pbtxt,
        complete_from_graph: complete,
        max_batch_size,
        model_filename: check_model_filename(&c.default_model_filename)?,
        inputs: tensors::inputs(&c.input, c.max_batch_size > 0, &mut found)?,
        outputs: tensors::outputs(&c.output, c.max_batch_size > 0, files, &mut found)?,
        version_policy: version_policy(c.version_policy.as_ref())?,
        response_cache: c.response_cache.as_ref().is_some_and(|r| r.enable),
        ..ModelConfig::default()
    };
    if cx.strict && !is_ensemble && !declared {
        return Err(
            "strict model configuration: `input` and `output` must both be declared (the file is not completed from the model)"
                .into(),
        );
    }
    for b in &c.batch_input {
        found.unsupported(
            format!("batch_input (targets {:?})", b.target_name),
            "Sluice does not build batcher-derived input tensors",
        );
    }
    for b in &c.batch_output {
        found.unsupported(
            format!("batch_output (targets {:?})", b.target_name),
            "Sluice does not scatter batcher-derived outputs",
        );
    }

    use pb::model_config::SchedulingChoice;
    match &c.scheduling_choice {
        Some(SchedulingChoice::DynamicBatching(b)) => {
            config.dynamic_batching = batching::dynamic_batching(b, max_batch_size)?;
        }
        scheduling => {
            config.dynamic_batching =
                batching::dynamic_batching(&pb::ModelDynamicBatching::default(), max_batch_size)?;
            // Without a scheduler Triton runs each request alone; a config
            // it completes from the model gets the dynamic batcher.
            config.dynamic_batching.enabled = complete && max_batch_size.is_none_or(|n| n > 1);
            match scheduling {
                Some(SchedulingChoice::SequenceBatching(_)) => found.unsupported(
                    "sequence_batching",
                    "Sluice has no sequence batcher (stateful models with correlation IDs)",
                ),
                Some(SchedulingChoice::EnsembleScheduling(e)) => {
                    config.ensemble = Some(ensemble(e, is_ensemble)?);
                    if e.max_inflight_requests > 0 {
                        found.note(
                            "ensemble_scheduling.max_inflight_requests",
                            "each step is bounded by its own model's queue instead",
                        );
                    }
                    if e.step.iter().any(|s| !s.model_namespace.is_empty()) {
                        found.note(
                            "ensemble_scheduling.step[].model_namespace",
                            "Sluice's repository has one namespace",
                        );
                    }
                }
                _ => {}
            }
        }
    }
    if is_ensemble {
        for input in c.input.iter().filter(|i| i.optional) {
            found.unsupported(
                format!("input '{}'.optional", input.name),
                "an ensemble's inputs are all required (only an ONNX model's input with a default can be optional)",
            );
        }
    }
    if is_ensemble && config.ensemble.is_none() {
        return Err(format!(
            "`platform: \"{ENSEMBLE}\"` needs an `ensemble_scheduling` block"
        ));
    }

    accel::placement(c, &mut config, &mut found)?;
    accel::parameters(&c.parameters, &mut config, &mut found)?;
    config.warmup = warmup::model_warmup(&c.model_warmup, max_batch_size, files)?;
    other_fields(c, &mut found);
    config
        .check()
        .map_err(|e| format!("{e} (as mapped from config.pbtxt)"))?;
    config.unsupported = found.unsupported;
    config.notes = found.notes;
    Ok(config)
}

/// Checks `platform`, `backend` and `runtime`; true when the model is an
/// ensemble. Another framework is unsupported, not an error: its file is a
/// valid Triton config.
fn platform(c: &pb::ModelConfig, found: &mut Findings) -> Result<bool, String> {
    let (platform, backend) = (c.platform.as_str(), c.backend.as_str());
    if platform == ENSEMBLE {
        if !backend.is_empty() {
            return Err(format!(
                "`backend` must be empty for `platform: \"{ENSEMBLE}\"`. Given: \"{backend}\""
            ));
        }
        return Ok(true);
    }
    let onnx_platform = platform.is_empty() || platform == PLATFORM;
    let onnx_backend = backend.is_empty() || backend == BACKEND;
    if !onnx_platform {
        found.unsupported(
            format!("platform: \"{platform}\""),
            format!("Sluice serves ONNX models only (`platform: \"{PLATFORM}\"`)"),
        );
    }
    if !onnx_backend {
        found.unsupported(
            format!("backend: \"{backend}\""),
            format!("Sluice serves ONNX models only (`backend: \"{BACKEND}\"`)"),
        );
    }
    if !c.runtime.is_empty() {
        found.unsupported(
            format!("runtime: \"{}\"", c.runtime),
            "Sluice runs ONNX Runtime itself; backends built on a runtime file are not supported",
        );
    }
    Ok(false)
}

/// A model file name: one plain file name, never a path.
pub(super) fn check_model_filename(name: &str) -> Result<Option<String>, String> {
    if name.is_empty() {
        return Ok(None);
    }
    if !crate::repository::valid_model_name(name) {
        return Err(format!(
            "`default_model_filename` must be a plain file name (letters, digits, '_', '-', '.'; no path separators, no leading '.'). Given: {name:?}"
        ));
    }
    Ok(Some(name.to_string()))
}

fn version_policy(policy: Option<&pb::ModelVersionPolicy>) -> Result<VersionPolicy, String> {
    use pb::model_version_policy::PolicyChoice;
    Ok(match policy.and_then(|p| p.policy_choice.as_ref()) {
        None => VersionPolicy::default(),
        Some(PolicyChoice::Latest(l)) => {
            if l.num_versions == 0 {
                return Err("`version_policy.latest.num_versions` must be ≥ 1. Given: 0".into());
            }
            VersionPolicy::Latest(l.num_versions as usize)
        }
        Some(PolicyChoice::All(_)) => VersionPolicy::All,
        Some(PolicyChoice::Specific(s)) => {
            let versions = s
                    .versions
                    .iter()
                    .map(|&v| u64::try_from(v).ok().filter(|&v| v > 0))
                    .collect::<Option<Vec<u64>>>()
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| {
                        format!(
                            "`version_policy.specific.versions` must list positive versions. Given: {:?}",
                            s.versions
                        )
                    })?;
            VersionPolicy::Specific(versions)
        }
    })
}

fn ensemble(e: &pb::ModelEnsembling, is_ensemble: bool) -> Result<Ensemble, String> {
    if !is_ensemble {
        return Err(format!(
            "`ensemble_scheduling` needs `platform: \"{ENSEMBLE}\"`"
        ));
    }
    if e.step.is_empty() {
        return Err("`ensemble_scheduling.step` must list at least one step".into());
    }
    let steps = e
        .step
        .iter()
        .enumerate()
        .map(|(i, s)| {
            if s.model_name.is_empty() {
                return Err(format!(
                    "`ensemble_scheduling.step[{i}].model_name` must name a model"
                ));
            }
            let model_version = match s.model_version {
                -1 => None,
                v if v > 0 => Some(v as u64),
                v => {
                    return Err(format!(
                        "`ensemble_scheduling.step[{i}].model_version` must be -1 (latest) or a positive version. Given: {v}"
                    ));
                }
            };
            Ok(EnsembleStep {
                model_name: s.model_name.clone(),
                model_version,
                input_map: s.input_map.clone().into_iter().collect(),
                output_map: s.output_map.clone().into_iter().collect(),
            })
        })
        .collect::<Result<_, String>>()?;
    Ok(Ensemble { steps })
}

/// The fields with no counterpart in Sluice.
fn other_fields(c: &pb::ModelConfig, found: &mut Findings) {
    if c.model_transaction_policy
        .as_ref()
        .is_some_and(|p| p.decoupled)
    {
        found.unsupported(
            "model_transaction_policy.decoupled",
            "Sluice answers each request with exactly one response",
        );
    }
    if !c.cc_model_filenames.is_empty() {
        found.unsupported(
            "cc_model_filenames",
            "Sluice loads `default_model_filename` on every GPU",
        );
    }
    if !c.metric_tags.is_empty() {
        found.unsupported(
            "metric_tags",
            "Sluice's metrics carry model and version labels only",
        );
    }
    if c.model_operations
        .as_ref()
        .is_some_and(|o| !o.op_library_filename.is_empty())
    {
        found.unsupported(
            "model_operations.op_library_filename",
            "Sluice does not load custom operator libraries",
        );
    }
    if c.model_repository_agents
        .as_ref()
        .is_some_and(|a| !a.agents.is_empty())
    {
        found.unsupported("model_repository_agents", "Sluice has no repository agents");
    }
    if c.model_metrics
        .as_ref()
        .is_some_and(|m| !m.metric_control.is_empty())
    {
        found.unsupported(
            "model_metrics",
            "Sluice's metric families and buckets are fixed",
        );
    }
}
