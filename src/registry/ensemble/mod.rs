//! Ensembles (`platform: "ensemble"`): pipelines of served models that run
//! inside the server, and how the registry keeps them.
//!
//! # Rules
//! - An ensemble has no session and no scheduler of its own: it is a plan
//!   ([`LoadedEnsemble`]) kept beside the served models. Each step runs on
//!   its composing model's scheduler through the service's inference path,
//!   so it batches with that model's other traffic.
//! - What the configuration alone decides is checked when the ensemble loads
//!   ([`check_plan`]): every step input has a producer, no tensor has two,
//!   no cycle, every ensemble output is produced. A plan that fails never
//!   serves.
//! - What depends on the composing models (that they serve, that the mapped
//!   names are their inputs and outputs, that datatypes, shapes and batch
//!   sizes agree) is checked against one snapshot of the served set
//!   ([`Registry::bind`]) each time it matters: as the answer of the load,
//!   for the repository index and readiness, and at the start of every
//!   ensemble run. So composing models may load before or after the
//!   ensemble, and the ensemble is READY exactly while they serve compatible
//!   versions; otherwise it is UNAVAILABLE with a reason naming the step.
//! - A run resolves every step's version from that one snapshot (one
//!   `ArcSwap` load) and keeps those `Arc`s, so it never mixes versions; if a
//!   swap closes a pinned version mid-run, the service starts the run again
//!   on a fresh snapshot (`service::ensemble`).

mod plan;

pub(crate) use plan::step_label;

use plan::{check_plan, full_shape};

use super::state::ModelState;
use super::{LoadedVersion, Model, Registry, VersionState};
use crate::error::{Error, Result};
use crate::metrics::VersionMetrics;
use crate::repository::spec::EnsembleStep;
use crate::repository::{ModelConfig, ModelDir};
use crate::tensor::{TensorSpec, fmt_shape};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// One served version of an ensemble.
#[derive(Debug)]
pub(crate) struct LoadedEnsemble {
    pub(crate) name: String,
    pub(crate) version: u64,
    /// 0 when the ensemble does not batch; else the declared dims exclude
    /// the batch dimension, which `inputs` and `outputs` carry as -1.
    pub(crate) max_batch_size: usize,
    pub(crate) inputs: Vec<TensorSpec>,
    pub(crate) outputs: Vec<TensorSpec>,
    pub(crate) steps: Vec<EnsembleStep>,
    pub(crate) config: ModelConfig,
    pub(crate) metrics: Arc<VersionMetrics>,
    /// Hash of the configuration files it was loaded from: an unchanged
    /// reload keeps this value (and its statistics).
    config_hash: u64,
}

/// The versions of one ensemble, highest last.
pub(crate) type EnsembleVersions = BTreeMap<u64, Arc<LoadedEnsemble>>;

fn compatible(a: &TensorSpec, b: &TensorSpec) -> bool {
    a.datatype == b.datatype
        && a.shape.len() == b.shape.len()
        && a.shape
            .iter()
            .zip(&b.shape)
            .all(|(&x, &y)| x == y || x < 0 || y < 0)
}

fn describe(t: &TensorSpec) -> String {
    format!("{} {}", t.datatype, fmt_shape(&t.shape))
}

/// Checks what the configuration alone decides (see the module rules).
impl Registry {
    /// Builds the versions of ensemble `name` (nothing is published here).
    /// An ensemble's versions are its numeric directories, which hold no
    /// model file; without any it serves version 1.
    pub(super) fn load_ensemble(
        &self,
        name: &str,
        config: &ModelConfig,
        dir: &ModelDir,
        config_hash: u64,
    ) -> Result<EnsembleVersions, String> {
        check_plan(name, config)?;
        let Some(ensemble) = &config.ensemble else {
            return Err("not an ensemble".into());
        };
        let mut on_disk = crate::repository::version_dirs(&dir.path)
            .map_err(|e| format!("cannot read {}: {e}", dir.path.display()))?;
        if on_disk.is_empty() {
            on_disk.push(1);
        }
        let max_batch_size = config.max_batch_size.unwrap_or(0);
        let specs = |decls: &[crate::repository::spec::TensorDecl]| -> Vec<TensorSpec> {
            decls
                .iter()
                .map(|t| TensorSpec {
                    name: t.name.clone(),
                    datatype: t.datatype,
                    shape: full_shape(&t.dims, max_batch_size > 0),
                })
                .collect()
        };
        let current = self.ensembles.load().get(name).cloned();
        let mut versions = BTreeMap::new();
        for version in config.version_policy.select(&on_disk) {
            if let Some(existing) = current.as_ref().and_then(|c| c.get(&version)) {
                if existing.config_hash == config_hash {
                    versions.insert(version, existing.clone());
                    continue;
                }
            }
            let loaded = LoadedEnsemble {
                name: name.to_string(),
                version,
                max_batch_size,
                inputs: specs(&config.inputs),
                outputs: specs(&config.outputs),
                steps: ensemble.steps.clone(),
                config: config.clone(),
                metrics: Arc::new(self.metrics.version(name, version)),
                config_hash,
            };
            versions.insert(version, Arc::new(loaded));
        }
        if versions.is_empty() {
            return Err(format!(
                "the version policy selects none of the ensemble's versions {on_disk:?}"
            ));
        }
        Ok(versions)
    }

    /// Publishes an ensemble's versions in place of whatever `name` served
    /// (closing model versions of that name), and answers whether it can
    /// serve now.
    pub(super) fn publish_ensemble(&self, name: &str, versions: EnsembleVersions) -> Result<()> {
        if let Some(old) = self.replace(name, None) {
            for (v, version) in &old.versions {
                version.close();
                self.metrics.forget_version(name, *v);
            }
        }
        let kept: Vec<u64> = versions.keys().copied().collect();
        let previous = self.swap_ensemble(name, Some(versions));
        for v in previous.iter().flat_map(|p| p.keys()) {
            if !kept.contains(v) {
                self.metrics.forget_version(name, *v);
            }
        }
        {
            let mut index = self.index_lock();
            let states = index.entry(name.to_string()).or_default();
            states.clear();
            for v in &kept {
                states.insert(Some(*v), VersionState::Ready);
            }
        }
        self.refresh_ensemble_gauges();
        match self.ensemble(name, None) {
            Some(Err(e)) => {
                tracing::warn!(model = name, reason = %e, "ensemble loaded; it serves once its composing models do");
                Err(e)
            }
            _ => {
                tracing::info!(model = name, versions = ?kept, "ensemble ready");
                Ok(())
            }
        }
    }

    /// Sets every ensemble's `sluice_model_state` to what it is now: ready
    /// while its composing models serve compatible versions. Called on each
    /// change of the served set.
    pub(super) fn refresh_ensemble_gauges(&self) {
        let unready = self.unready_ensembles();
        for (name, versions) in self.ensembles.load().iter() {
            let state = if unready.contains_key(name) {
                ModelState::Unavailable
            } else {
                ModelState::Ready
            };
            for v in versions.keys() {
                self.metrics.set_state(name, *v, state);
            }
        }
    }

    /// Stops serving ensemble `name`; false when it was not one.
    pub(super) fn remove_ensemble(&self, name: &str) -> bool {
        let removed = self.swap_ensemble(name, None);
        for v in removed.iter().flat_map(|r| r.keys()) {
            self.metrics.forget_version(name, *v);
        }
        removed.is_some()
    }

    fn swap_ensemble(
        &self,
        name: &str,
        versions: Option<EnsembleVersions>,
    ) -> Option<EnsembleVersions> {
        let mut previous = None;
        self.ensembles.rcu(|current| {
            let mut next = HashMap::clone(current);
            previous = match &versions {
                Some(v) => next.insert(name.to_string(), v.clone()),
                None => next.remove(name),
            };
            next
        });
        previous
    }

    /// The served ensembles, by name.
    pub(crate) fn ensembles(&self) -> Arc<HashMap<String, EnsembleVersions>> {
        self.ensembles.load_full()
    }

    /// `None` when `name` is not an ensemble. Else its version (the one
    /// asked for, or the highest) bound to one snapshot of its composing
    /// models, one per step, or why it cannot serve now.
    #[allow(clippy::type_complexity)]
    pub(crate) fn ensemble(
        &self,
        name: &str,
        version: Option<u64>,
    ) -> Option<Result<(Arc<LoadedEnsemble>, Vec<Arc<LoadedVersion>>)>> {
        let ensembles = self.ensembles.load();
        let versions = ensembles.get(name)?;
        let found = match version {
            Some(v) => versions.get(&v),
            None => versions.values().next_back(),
        };
        let Some(ensemble) = found.cloned() else {
            return Some(Err(Error::NotFound(format!(
                "model '{name}' has no version {} being served",
                version.unwrap_or_default()
            ))));
        };
        Some(
            self.bind(&ensemble, &self.served.load())
                .map(|pinned| (ensemble, pinned))
                .map_err(|why| {
                    Error::Unavailable(format!("ensemble '{name}' is unavailable: {why}"))
                }),
        )
    }

    /// The index with each ensemble that cannot serve now shown as
    /// UNAVAILABLE, with why (its stored state says only that it loaded).
    pub(super) fn effective_index(&self) -> BTreeMap<String, BTreeMap<Option<u64>, VersionState>> {
        let unready = self.unready_ensembles();
        let mut index = self.index_lock().clone();
        for (name, why) in unready {
            if let Some(states) = index.get_mut(&name) {
                for state in states.values_mut().filter(|s| s.is_serving()) {
                    *state = VersionState::Unavailable(why.clone());
                }
            }
        }
        index
    }

    /// Ensembles that cannot serve now, with why.
    fn unready_ensembles(&self) -> HashMap<String, String> {
        let served = self.served.load();
        let mut unready = HashMap::new();
        for (name, versions) in self.ensembles.load().iter() {
            if let Some(e) = versions.values().next_back() {
                if let Err(why) = self.bind(e, &served) {
                    unready.insert(name.clone(), why);
                }
            }
        }
        unready
    }

    /// Resolves every step's composing version in `served` and checks the
    /// ensemble's tensors against their signatures (see the module rules).
    pub(crate) fn bind(
        &self,
        ensemble: &LoadedEnsemble,
        served: &HashMap<String, Arc<Model>>,
    ) -> Result<Vec<Arc<LoadedVersion>>, String> {
        // Ensemble tensor -> (its spec, who makes it).
        let mut specs: HashMap<&str, (&TensorSpec, String)> = ensemble
            .inputs
            .iter()
            .map(|t| (t.name.as_str(), (t, format!("ensemble input '{}'", t.name))))
            .collect();
        let mut pinned = Vec::with_capacity(ensemble.steps.len());
        for (i, step) in ensemble.steps.iter().enumerate() {
            let at = step_label(i, step);
            let found = served
                .get(&step.model_name)
                .and_then(|m| match step.model_version {
                    Some(v) => m.versions.get(&v),
                    None => m.versions.values().next_back(),
                });
            let Some(v) = found else {
                return Err(format!("{at}: {}", self.why_missing(step)));
            };
            if ensemble.max_batch_size > v.max_batch_size {
                return Err(format!(
                    "{at}: the model's max_batch_size is {} but the ensemble's is {}; every composing model must take the ensemble's batches",
                    v.max_batch_size, ensemble.max_batch_size
                ));
            }
            for (output, tensor) in &step.output_map {
                let Some(spec) = v.signature.outputs.iter().find(|s| &s.name == output) else {
                    return Err(format!(
                        "{at}: `output_map` key '{output}' is not an output of model '{}'; its outputs: {}",
                        step.model_name,
                        names(&v.signature.outputs)
                    ));
                };
                specs.insert(tensor, (spec, format!("output '{output}' of step[{i}]")));
            }
            pinned.push(v.clone());
        }
        for ((i, step), v) in ensemble.steps.iter().enumerate().zip(&pinned) {
            let at = step_label(i, step);
            for (input, tensor) in &step.input_map {
                let Some(want) = v.signature.inputs.iter().find(|s| &s.name == input) else {
                    return Err(format!(
                        "{at}: `input_map` key '{input}' is not an input of model '{}'; its inputs: {}",
                        step.model_name,
                        names(&v.signature.inputs)
                    ));
                };
                let Some((have, from)) = specs.get(tensor.as_str()) else {
                    return Err(format!("{at}: nothing produces ensemble tensor '{tensor}'"));
                };
                if !compatible(have, want) {
                    return Err(format!(
                        "{at}: input '{input}' expects {} but ensemble tensor '{tensor}' ({from}) is {}",
                        describe(want),
                        describe(have)
                    ));
                }
            }
            if let Some(unmapped) = v
                .signature
                .inputs
                .iter()
                .find(|s| !step.input_map.contains_key(&s.name))
            {
                return Err(format!(
                    "{at}: input '{}' of the model is not in `input_map`; every input must be mapped",
                    unmapped.name
                ));
            }
        }
        for out in &ensemble.outputs {
            let Some((have, from)) = specs.get(out.name.as_str()) else {
                return Err(format!("nothing produces ensemble output '{}'", out.name));
            };
            if !compatible(have, out) {
                return Err(format!(
                    "ensemble output '{}' is declared {} but {from} is {}",
                    out.name,
                    describe(out),
                    describe(have)
                ));
            }
        }
        Ok(pinned)
    }

    /// Why a step's model has no version to run, in the words of the index.
    fn why_missing(&self, step: &EnsembleStep) -> String {
        let model = &step.model_name;
        if self.ensembles.load().contains_key(model) {
            return format!("model '{model}' is an ensemble; ensembles cannot be nested");
        }
        match self.resolve(model, step.model_version) {
            Ok(_) => format!("model '{model}' was not being served a moment ago"),
            Err(Error::NotFound(_)) if self.repos.model_dir(model).is_none() => {
                format!("model '{model}' is not in the model repository")
            }
            Err(Error::NotFound(_)) if !self.index_lock().contains_key(model) => {
                format!("model '{model}' is not loaded")
            }
            Err(e) => e.to_string(),
        }
    }
}

fn names(specs: &[TensorSpec]) -> String {
    let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    names.join(", ")
}
