//! The live model set: which versions serve, and the state of every model on disk.
//!
//! # Rules
//! - The served set is one `ArcSwap<HashMap<model, Arc<Model>>>`. A request
//!   resolves its version with one load and keeps that `Arc<LoadedVersion>`
//!   until it has replied, so a swap never pulls a version out from under it.
//! - A version is loaded completely (every instance's session, built one at a
//!   time) *before* it is published; publishing is one atomic store.
//! - A version that leaves the set stops admitting (its scheduler is closed),
//!   drains its queue, and is dropped with the last request holding it, which
//!   joins its worker threads and frees their sessions.
//! - Each model loads in its own failure domain: a corrupt file, a bad config
//!   or a missing GPU marks that model UNAVAILABLE with its reason and leaves
//!   every other model serving. A failed load leaves the serving version as is.
//! - Loads are serialised by one async mutex, so two loads of the same model
//!   cannot interleave.
//! - Ensembles are kept beside the served models, not in their map (they
//!   have no session and no scheduler); a name is one or the other. Their
//!   own rules are in `ensemble`.
//! - In on-demand mode a request's miss starts (or joins) its model's load,
//!   and evicting is unpublishing: the same store and close as a swap, so a
//!   version is freed with its last request. Its rules are in `demand`.

mod control;
mod demand;
mod ensemble;
mod lifecycle;
mod load;
mod settings;
mod signature;
pub(crate) mod state;
mod warmup;

pub(crate) use demand::{Demand, Usage, spawn_sweeper};
pub(crate) use ensemble::{EnsembleVersions, LoadedEnsemble, step_label};
pub(crate) use lifecycle::{load_at_start, spawn_polling};
pub use load::LoadedVersion;
pub use settings::{ControlMode, Defaults, DemandSettings};
pub(crate) use state::{ModelState, VersionState};

use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::repository::{self, Fingerprint, Repositories, valid_model_name};
use arc_swap::ArcSwap;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// How Triton starts the message of every request for a model it cannot
/// serve now; Triton's own client examples test for this prefix, so
/// Sluice's detail follows it.
pub(crate) const UNKNOWN: &str = "Request for unknown model: ";

/// The served versions of one model, highest last.
#[derive(Debug, Default)]
pub(crate) struct Model {
    pub(crate) versions: BTreeMap<u64, Arc<LoadedVersion>>,
}

/// One row of the repository index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub(crate) name: String,
    /// `None` when the failure concerns the whole model (e.g. its config).
    pub(crate) version: Option<u64>,
    pub(crate) state: VersionState,
    /// When the version last served (Unix milliseconds), kept after it
    /// is evicted or unloaded; `None` before its first load.
    pub(crate) last_used_ms: Option<u64>,
    /// The version's measured memory cost in bytes, when known.
    pub(crate) memory_bytes: Option<u64>,
}

pub struct Registry {
    repos: Repositories,
    served: ArcSwap<HashMap<String, Arc<Model>>>,
    /// The served ensembles, swapped like `served`.
    ensembles: ArcSwap<HashMap<String, EnsembleVersions>>,
    /// The state of every model known from disk or from a load call.
    index: Mutex<BTreeMap<String, BTreeMap<Option<u64>, VersionState>>>,
    loads: tokio::sync::Mutex<()>,
    /// What each model's directory held at its last load attempt, so polling
    /// reloads only on a change of content (and never retries a broken file).
    attempted: Mutex<HashMap<String, Fingerprint>>,
    /// Configurations given by the repository `load` call's `config`
    /// parameter (Triton's JSON `ModelConfig`), by model: used instead of
    /// the files on disk until a load without one. Changed only under
    /// `loads`; restored when the load it came with fails.
    overrides: Mutex<HashMap<String, Arc<str>>>,
    metrics: Metrics,
    defaults: Defaults,
    /// On-demand loading and the memory budget (`demand`).
    demand: Demand,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("repositories", &self.repos.describe())
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// A registry over one local repository directory.
    pub fn new(root: PathBuf, metrics: Metrics, defaults: Defaults) -> Self {
        Self::with_repositories(Repositories::local(root), metrics, defaults)
    }

    /// A registry over every repository of `repos`, local or remote.
    pub fn with_repositories(repos: Repositories, metrics: Metrics, defaults: Defaults) -> Self {
        Self {
            repos,
            served: ArcSwap::from_pointee(HashMap::new()),
            ensembles: ArcSwap::from_pointee(HashMap::new()),
            index: Mutex::new(BTreeMap::new()),
            loads: tokio::sync::Mutex::new(()),
            attempted: Mutex::new(HashMap::new()),
            overrides: Mutex::new(HashMap::new()),
            demand: Demand::new(DemandSettings::default(), metrics.demand.clone()),
            metrics,
            defaults,
        }
    }

    /// The settings of on-demand mode (its budget, idle unloading, load
    /// wait and pinned models); call before sharing the registry.
    pub fn with_demand(mut self, settings: DemandSettings) -> Self {
        self.demand = Demand::new(settings, self.metrics.demand.clone());
        self
    }

    /// Resolves a request's model version: the exact one, or the highest served.
    /// Every error starts with Triton's words ([`UNKNOWN`]), which clients
    /// written for Triton match on.
    pub(crate) fn resolve(&self, name: &str, version: Option<u64>) -> Result<Arc<LoadedVersion>> {
        let snapshot = self.served.load();
        let found = snapshot.get(name).and_then(|model| match version {
            Some(v) => model.versions.get(&v).cloned(),
            None => model.versions.values().next_back().cloned(),
        });
        if let Some(found) = found {
            found.usage.touch();
            return Ok(found);
        }
        let index = self.index_lock();
        let Some(states) = index.get(name) else {
            return Err(Error::NotFound(format!("{UNKNOWN}'{name}' is not found")));
        };
        let describe = |v: Option<u64>| match v {
            Some(v) => format!("version {v} of model '{name}'"),
            None => format!("model '{name}'"),
        };
        let state = version
            .and_then(|v| states.get(&Some(v)))
            .or_else(|| states.get(&None))
            .or_else(|| states.values().next_back());
        match (state, version) {
            (Some(VersionState::Loading), _) => Err(Error::Unavailable(format!(
                "{UNKNOWN}{} is loading",
                describe(version)
            ))),
            (Some(VersionState::Unavailable(reason)), _) => Err(Error::Unavailable(format!(
                "{UNKNOWN}{} is unavailable: {reason}",
                describe(version)
            ))),
            (Some(VersionState::Unloaded), _) => Err(Error::Unavailable(format!(
                "{UNKNOWN}{} is unavailable: unloaded",
                describe(version)
            ))),
            (Some(VersionState::Ready | VersionState::ReloadFailed(_)), Some(v))
            | (None, Some(v)) => Err(Error::NotFound(format!(
                "{UNKNOWN}model '{name}' has no version {v} being served"
            ))),
            (_, None) => Err(Error::Unavailable(format!(
                "{UNKNOWN}model '{name}' has no version being served"
            ))),
        }
    }

    /// Every model of the index, with its versions' states.
    /// A model of a remote repository that cannot be listed or downloaded
    /// now says so in its reason, while it serves what was downloaded.
    pub(crate) fn index(&self) -> Vec<IndexEntry> {
        let mut index = self.effective_index();
        if self.repos.has_remote() {
            for (name, states) in index.iter_mut() {
                let Some(problem) = self.repos.problem(Some(name)) else {
                    continue;
                };
                for state in states.values_mut() {
                    *state = match &*state {
                        VersionState::Ready => VersionState::ReloadFailed(format!(
                            "{problem}; serving the version downloaded before"
                        )),
                        VersionState::ReloadFailed(r) => {
                            VersionState::ReloadFailed(format!("{r}; {problem}"))
                        }
                        VersionState::Unavailable(r) => {
                            VersionState::Unavailable(format!("{r}; {problem}"))
                        }
                        other => other.clone(),
                    };
                }
            }
        }
        let mut entries: Vec<IndexEntry> = index
            .into_iter()
            .flat_map(|(name, states)| {
                states.into_iter().map(move |(version, state)| IndexEntry {
                    name: name.clone(),
                    version,
                    state,
                    last_used_ms: None,
                    memory_bytes: None,
                })
            })
            .collect();
        self.annotate(&mut entries);
        entries
    }

    /// The models this server is meant to serve (every model it was asked
    /// to load and did not unload) that have no version serving now, each
    /// with its state and reason: what strict readiness waits for.
    pub(crate) fn not_ready(&self) -> Vec<String> {
        let index = self.effective_index();
        let mut missing = Vec::new();
        for (name, states) in index.iter() {
            if states.values().any(VersionState::is_serving)
                || states.values().all(|s| *s == VersionState::Unloaded)
            {
                continue;
            }
            let why = states
                .values()
                .map(|s| match s.reason() {
                    "" => s.state().as_str().to_string(),
                    reason => format!("{}: {reason}", s.state().as_str()),
                })
                .next()
                .unwrap_or_default();
            missing.push(format!("model '{name}' is {why}"));
        }
        missing
    }

    /// Records that a model named for loading at start is not in the
    /// repository, so readiness and the index show it.
    pub(crate) fn record_missing(&self, name: &str) {
        self.set_state(
            name,
            None,
            Some(VersionState::Unavailable(
                "not in the model repository".into(),
            )),
        );
    }

    /// Versions being served, per model.
    pub(crate) fn served(&self) -> Arc<HashMap<String, Arc<Model>>> {
        self.served.load_full()
    }

    fn index_lock(
        &self,
    ) -> std::sync::MutexGuard<'_, BTreeMap<String, BTreeMap<Option<u64>, VersionState>>> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a state; `version: None, state: None` marks the model as loading.
    fn set_state(&self, name: &str, version: Option<u64>, state: Option<VersionState>) {
        let mut index = self.index_lock();
        let states = index.entry(name.to_string()).or_default();
        match state {
            None => {
                states.retain(|_, s| s.is_serving());
                if states.is_empty() {
                    states.insert(None, VersionState::Loading);
                }
            }
            Some(state) => {
                states.retain(|v, s| v.is_some() && s.is_serving());
                states.insert(version, state);
            }
        }
    }

    /// Publishes the freshly loaded versions of `name` in one store; versions
    /// that are no longer wanted are closed and drain.
    fn publish(&self, name: &str, loaded: BTreeMap<u64, Arc<LoadedVersion>>) {
        self.remove_ensemble(name);
        let versions: Vec<u64> = loaded.keys().copied().collect();
        for v in &versions {
            self.metrics.set_state(name, *v, ModelState::Ready);
        }
        let kept: Vec<Arc<LoadedVersion>> = loaded.values().cloned().collect();
        let old = self.replace(name, Some(Arc::new(Model { versions: loaded })));
        if let Some(old) = old {
            for (v, version) in &old.versions {
                if kept.iter().any(|k| Arc::ptr_eq(k, version)) {
                    continue; // unchanged: still serving
                }
                version.close();
                if !versions.contains(v) {
                    self.metrics.forget_version(name, *v);
                }
            }
        }
        let mut index = self.index_lock();
        let states = index.entry(name.to_string()).or_default();
        states.clear();
        for v in versions {
            states.insert(Some(v), VersionState::Ready);
        }
        if states.is_empty() {
            states.insert(
                None,
                VersionState::Unavailable("no version directory with a model.onnx".into()),
            );
        }
    }

    /// One atomic store of the map with `name` replaced (or removed).
    fn replace(&self, name: &str, model: Option<Arc<Model>>) -> Option<Arc<Model>> {
        let mut previous = None;
        self.served.rcu(|current| {
            let mut next = HashMap::clone(current);
            previous = match &model {
                Some(m) => next.insert(name.to_string(), m.clone()),
                None => next.remove(name),
            };
            next
        });
        self.refresh_ensemble_gauges();
        previous
    }
}
