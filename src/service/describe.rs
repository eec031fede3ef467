//! What the service says about the models it serves: metadata, the
//! effective configuration, and statistics, each as a plain snapshot.

use super::stats::VersionStats;
use super::types::{ModelConfigView, ModelMetadata};
use crate::error::Result;
use crate::registry::{LoadedEnsemble, LoadedVersion, Registry};
use crate::repository::pbtxt::render;
use std::sync::Arc;

/// Model metadata: of one version when `version` is given (only it is
/// listed), else of the highest served version (every served one listed).
pub(super) fn metadata(
    registry: &Registry,
    name: &str,
    version: Option<u64>,
) -> Result<ModelMetadata> {
    if let Some(bound) = registry.ensemble(name, version) {
        let (e, _) = bound?;
        let versions = match version {
            Some(_) => vec![e.version],
            None => registry
                .ensembles()
                .get(name)
                .map(|v| v.keys().copied().collect())
                .unwrap_or_default(),
        };
        return Ok(ModelMetadata {
            name: e.name.clone(),
            version: e.version,
            versions,
            platform: "ensemble",
            inputs: e.inputs.clone(),
            outputs: e.outputs.clone(),
            max_batch_size: e.max_batch_size,
            execution_provider: String::new(),
            provider_fallbacks: Vec::new(),
            memory_bytes: 0,
        });
    }
    let v = registry.resolve(name, version)?;
    let versions = match version {
        Some(_) => vec![v.version],
        None => registry
            .served()
            .get(&v.model)
            .map(|m| m.versions.keys().copied().collect())
            .unwrap_or_default(),
    };
    Ok(ModelMetadata {
        name: v.model.clone(),
        version: v.version,
        versions,
        platform: "onnxruntime_onnx",
        inputs: v.signature.inputs.clone(),
        outputs: v.signature.outputs.clone(),
        max_batch_size: v.max_batch_size,
        execution_provider: v.placement.to_string(),
        provider_fallbacks: v.placement.fell_back_from.clone(),
        memory_bytes: v.usage.cost(),
    })
}

/// The effective configuration of the version a request would reach.
pub(super) fn model_config(
    registry: &Registry,
    name: &str,
    version: Option<u64>,
) -> Result<ModelConfigView> {
    if let Some(bound) = registry.ensemble(name, version) {
        return Ok(ensemble_config(&bound?.0));
    }
    let v = registry.resolve(name, version)?;
    let served = render::Served {
        name: &v.model,
        max_batch_size: v.max_batch_size,
        inputs: &v.signature.inputs,
        outputs: &v.signature.outputs,
        instances: v.instances,
        provider: v.placement.provider,
        device_id: v.placement.device_id,
    };
    Ok(ModelConfigView(render::model_config(&v.config, &served)))
}

fn ensemble_config(e: &LoadedEnsemble) -> ModelConfigView {
    let served = render::Served {
        name: &e.name,
        max_batch_size: e.max_batch_size,
        inputs: &e.inputs,
        outputs: &e.outputs,
        instances: 0,
        provider: "cpu",
        device_id: 0,
    };
    ModelConfigView(render::ensemble_config(&e.config, &served))
}

/// Statistics of one model (all its served versions, or one), or of every
/// served model when `name` is `None`, ordered by model then version.
pub(super) fn statistics(
    registry: &Registry,
    name: Option<&str>,
    version: Option<u64>,
    cache_on: bool,
) -> Result<Vec<VersionStats>> {
    if let Some(name) = name {
        if let Some(ensembles) = registry.ensembles().get(name) {
            return match version {
                None => Ok(ensembles.values().map(|e| ensemble_stats(e)).collect()),
                Some(v) => match ensembles.get(&v) {
                    Some(e) => Ok(vec![ensemble_stats(e)]),
                    None => Err(crate::error::Error::NotFound(format!(
                        "model '{name}' has no version {v} being served"
                    ))),
                },
            };
        }
    }
    let served = registry.served();
    let versions: Vec<Arc<LoadedVersion>> = match name {
        None => {
            let mut names: Vec<&String> = served.keys().collect();
            names.sort();
            names
                .into_iter()
                .filter_map(|n| served.get(n))
                .flat_map(|m| m.versions.values().cloned())
                .collect()
        }
        Some(name) => match (version, served.get(name)) {
            (None, Some(m)) if !m.versions.is_empty() => m.versions.values().cloned().collect(),
            _ => vec![registry.resolve(name, version)?],
        },
    };
    let mut stats: Vec<VersionStats> = versions
        .iter()
        .map(|v| {
            v.metrics.stats.snapshot(
                &v.model,
                v.version,
                v.scheduler.queue_depth(),
                cache_on && v.config.response_cache,
            )
        })
        .collect();
    if name.is_none() {
        let ensembles = registry.ensembles();
        stats.extend(
            ensembles
                .values()
                .flat_map(|e| e.values().map(|e| ensemble_stats(e))),
        );
        stats.sort_by(|a, b| (&a.name, a.version).cmp(&(&b.name, b.version)));
    }
    Ok(stats)
}

/// An ensemble's statistics: its own requests; it queues nothing itself.
fn ensemble_stats(e: &LoadedEnsemble) -> VersionStats {
    e.metrics.stats.snapshot(&e.name, e.version, 0, false)
}
