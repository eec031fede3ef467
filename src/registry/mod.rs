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

    /// Names of every model of the repositories (those in two included:
    /// their load reports the conflict); an error when a repository cannot
    /// be read, since its models are then unknown.
    pub(crate) fn discover(&self) -> std::result::Result<Vec<String>, String> {
        let scan = self.repos.scan();
        if !scan.errors.is_empty() {
            return Err(scan.errors.join("; "));
        }
        let mut names: Vec<String> = scan.models.into_iter().map(|m| m.name).collect();
        names.extend(scan.conflicts.into_iter().map(|(name, _)| name));
        names.sort();
        Ok(names)
    }

    /// Brings the local copies of remote repositories up to date (a no-op
    /// without one), holding the load lock so no load reads a directory
    /// while a download replaces it.
    pub(crate) async fn sync(&self, wanted: &(dyn Fn(&str) -> bool + Sync), now: bool) {
        if self.repos.has_remote() {
            let _serial = self.loads.lock().await;
            self.repos.sync(wanted, now).await;
        }
    }

    /// [`Registry::sync`] of one model, listing only its directory (a load
    /// call, an on-demand first request).
    pub(crate) async fn sync_model(&self, name: &str) {
        if self.repos.has_remote() {
            let _serial = self.loads.lock().await;
            self.repos.sync_one(name).await;
        }
    }

    /// The repository API's load: refused in `none` control mode. `config`
    /// (Triton's JSON `ModelConfig`) replaces the model's configuration files
    /// from this load on; `None` goes back to the files.
    pub async fn load(self: &Arc<Self>, name: &str, config: Option<String>) -> Result<()> {
        self.check_api()?;
        self.sync_model(name).await;
        if let Some(text) = &config {
            self.check_override(name, text)?;
        }
        self.load_as(name, Some(config.map(Arc::from))).await
    }

    /// Maps a load call's `config` against the model's directory, so that a
    /// configuration that cannot load is the caller's error (400), named as
    /// the parameter, before anything changes.
    fn check_override(&self, name: &str, text: &str) -> Result<()> {
        let Some(dir) = self.repos.model_dir(name) else {
            return Ok(()); // the load reports it
        };
        let context = repository::pbtxt::Context {
            dir: &dir,
            name,
            strict: self.defaults.strict_model_config,
        };
        repository::pbtxt::parse_json(text, &context)
            .map(drop)
            .map_err(|e| Error::invalid(format!("load parameter 'config': {e}")))
    }

    fn check_api(&self) -> Result<()> {
        if self.defaults.control_mode == ControlMode::None {
            return Err(Error::invalid(
                "explicit model load and unload are not allowed in model control mode 'none'; start with --model-control-mode explicit or poll",
            ));
        }
        Ok(())
    }

    /// Loads (or reloads) `name` from disk and publishes it. The error, if any,
    /// is also recorded in the index; other models are untouched.
    pub async fn load_internal(self: &Arc<Self>, name: &str) -> Result<()> {
        self.load_as(name, None).await
    }

    /// [`Registry::load_internal`], first setting (`Some(Some)`) or clearing
    /// (`Some(None)`) the model's configuration override; `None` keeps it.
    async fn load_as(self: &Arc<Self>, name: &str, config: Option<Option<Arc<str>>>) -> Result<()> {
        if !valid_model_name(name) {
            return Err(Error::invalid(format!(
                "model name '{name}' is not valid: use letters, digits, '_', '-' and '.', without path separators or a leading '.'"
            )));
        }
        let _serial = self.loads.lock().await;
        match self.repos.root_of(name) {
            Ok(Some(_)) => {}
            Ok(None) => {
                let why = match self.repos.problem(Some(name)) {
                    Some(problem) => {
                        format!("model '{name}' is not in the model repository ({problem})")
                    }
                    None => format!("model '{name}' is not in the model repository"),
                };
                return Err(Error::NotFound(why));
            }
            Err(conflict) => {
                self.set_state(
                    name,
                    None,
                    Some(VersionState::Unavailable(conflict.clone())),
                );
                return Err(Error::Unavailable(conflict));
            }
        }
        let probe = self.before_load(name).await;
        let previous = config.map(|config| {
            let mut overrides = self.overrides_lock();
            match config {
                Some(text) => overrides.insert(name.to_string(), text),
                None => overrides.remove(name),
            }
        });
        self.set_state(name, None, None);
        let this = self.clone();
        let owned = name.to_string();
        let started = Instant::now();
        let outcome = tokio::task::spawn_blocking(move || this.load_blocking(&owned))
            .await
            .map_err(|e| Error::internal(format!("model load task failed: {e}")))?
            .and_then(|loaded| self.measure(loaded, probe));
        let took = started.elapsed();
        match outcome {
            Ok(loaded) => {
                self.metrics.record_load(name, took, true);
                self.remember(name, Some(loaded.fingerprint.clone()));
                if let Some(ensemble) = loaded.ensemble {
                    return self.publish_ensemble(name, ensemble);
                }
                let fresh = loaded.fresh.clone();
                self.publish(name, loaded.versions);
                for v in &fresh {
                    if let Some(lv) = self.served.load().get(name).and_then(|m| m.versions.get(v)) {
                        self.metrics
                            .set_provider(name, *v, &lv.placement.to_string());
                        for fallback in &lv.placement.fell_back_from {
                            tracing::warn!(model = name, version = v, %fallback, "execution provider fell back");
                        }
                        tracing::info!(model = name, version = v, provider = %lv.placement, instances = lv.instances, max_batch_size = lv.max_batch_size, took_ms = took.as_millis() as u64, "model version ready");
                    }
                }
                self.after_publish(name).await;
                if self
                    .served
                    .load()
                    .get(name)
                    .is_none_or(|m| m.versions.is_empty())
                {
                    tracing::warn!(model = name, "model has no version to serve");
                }
                Ok(())
            }
            Err(failure) => {
                if let Some(previous) = previous {
                    let mut overrides = self.overrides_lock();
                    match previous {
                        Some(text) => overrides.insert(name.to_string(), text),
                        None => overrides.remove(name),
                    };
                }
                self.metrics.record_load(name, took, false);
                self.remember(name, failure.fingerprint.clone());
                tracing::error!(model = name, version = failure.version, reason = %failure.reason, "model failed to load; the serving versions are untouched");
                // A version that still serves its earlier session stays
                // READY (with the reason); only one that does not serve
                // becomes UNAVAILABLE.
                let served: Vec<u64> = self
                    .served
                    .load()
                    .get(name)
                    .map(|m| m.versions.keys().copied().collect())
                    .or_else(|| {
                        let ensembles = self.ensembles.load();
                        ensembles.get(name).map(|e| e.keys().copied().collect())
                    })
                    .unwrap_or_default();
                let still_serving: Vec<u64> = match failure.version {
                    Some(v) => served.into_iter().filter(|s| *s == v).collect(),
                    None => served,
                };
                if still_serving.is_empty() {
                    self.set_state(
                        name,
                        failure.version,
                        Some(VersionState::Unavailable(failure.reason.clone())),
                    );
                    if let Some(v) = failure.version {
                        self.metrics.set_state(name, v, ModelState::Unavailable);
                    }
                } else {
                    let reason = format!(
                        "serving the version loaded earlier; its reload failed: {}",
                        failure.reason
                    );
                    let mut index = self.index_lock();
                    let states = index.entry(name.to_string()).or_default();
                    states.retain(|v, s| v.is_some() && s.is_serving());
                    for v in still_serving {
                        states.insert(Some(v), VersionState::ReloadFailed(reason.clone()));
                    }
                }
                Err(Error::Unavailable(format!(
                    "model '{name}' failed to load: {}",
                    failure.reason
                )))
            }
        }
    }

    fn overrides_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<str>>> {
        self.overrides.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The configuration override of `name`, if a load call gave one.
    pub(super) fn config_override(&self, name: &str) -> Option<Arc<str>> {
        self.overrides_lock().get(name).cloned()
    }

    fn remember(&self, name: &str, fingerprint: Option<Fingerprint>) {
        let mut attempted = self.attempted.lock().unwrap_or_else(|p| p.into_inner());
        match fingerprint {
            Some(fp) => {
                attempted.insert(name.to_string(), fp);
            }
            None => {
                attempted.remove(name);
            }
        }
    }

    /// One pass of repository polling: loads models that appeared or whose
    /// content changed since their last load attempt, and unloads models whose
    /// directory is gone. Version directories appear atomically by rename;
    /// anything else (a hidden or non-numeric name, a version without its
    /// model.onnx yet) is ignored until complete.
    pub(crate) async fn poll_once(self: &Arc<Self>) {
        self.sync(&|_: &str| true, false).await;
        let this = self.clone();
        let scanned = tokio::task::spawn_blocking(move || {
            let scan = this.repos.scan();
            let models = scan
                .models
                .into_iter()
                .map(|m| {
                    let fp = m.fingerprint();
                    (m.name, fp)
                })
                .collect::<Vec<_>>();
            (models, scan.conflicts, scan.errors.is_empty())
        })
        .await;
        let (models, conflicts, complete) = match scanned {
            Ok(scanned) => scanned,
            Err(e) => {
                tracing::warn!(error = %e, "repository scan failed; keeping what is served");
                return;
            }
        };
        let mut on_disk: Vec<String> = models.iter().map(|(n, _)| n.clone()).collect();
        for (name, conflict) in conflicts {
            // Serving what was loaded from the one repository it was in
            // before; a model never loaded becomes UNAVAILABLE.
            let serving = self.served.load().contains_key(&name);
            if !serving
                && self.index_lock().get(&name).is_none_or(|s| {
                    !s.values()
                        .any(|v| matches!(v, VersionState::Unavailable(r) if *r == conflict))
                })
            {
                tracing::error!(model = %name, "{conflict}");
                self.set_state(&name, None, Some(VersionState::Unavailable(conflict)));
            }
            on_disk.push(name);
        }
        for (name, fingerprint) in models {
            let fingerprint = match fingerprint {
                Ok(fingerprint) => fingerprint,
                Err(e) => {
                    // Unreadable right now (e.g. config.toml is a directory):
                    // keep serving what is loaded and try again next poll.
                    tracing::warn!(model = %name, error = %e, "cannot read the model directory; keeping what is served");
                    continue;
                }
            };
            let unchanged = self
                .attempted
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&name)
                .is_some_and(|last| *last == fingerprint);
            if !unchanged && !self.defer_to_demand(&name, &fingerprint) {
                let _ = self.load_internal(&name).await;
            }
        }
        if !complete {
            return; // a model not seen may be in the repository not read
        }
        let gone: Vec<String> = self
            .index_lock()
            .keys()
            .filter(|n| !on_disk.contains(n))
            .cloned()
            .collect();
        for name in gone {
            tracing::info!(model = %name, "model directory removed; unloading");
            let _ = self.unload_internal(&name).await;
            self.index_lock().remove(&name);
            self.remember(&name, None);
            self.overrides_lock().remove(&name);
        }
    }

    /// Stops serving every version of `name`. In-flight requests complete.
    pub(crate) async fn unload(&self, name: &str) -> Result<()> {
        self.check_api()?;
        self.unload_internal(name).await
    }

    async fn unload_internal(&self, name: &str) -> Result<()> {
        let _serial = self.loads.lock().await;
        let known = self.index_lock().contains_key(name);
        let removed = self.replace(name, None);
        let was_ensemble = self.remove_ensemble(name);
        if removed.is_none() && !was_ensemble && !known {
            return Err(Error::NotFound(format!("model '{name}' is not loaded")));
        }
        if let Some(old) = removed {
            for (v, version) in &old.versions {
                version.close();
                self.metrics.forget_version(name, *v);
            }
        }
        self.remember(name, None);
        self.overrides_lock().remove(name);
        let mut index = self.index_lock();
        if let Some(states) = index.get_mut(name) {
            states.clear();
            states.insert(None, VersionState::Unloaded);
        }
        drop(index);
        self.refresh_demand_gauges();
        Ok(())
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
