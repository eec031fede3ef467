//! On-demand loading (`--model-control-mode on-demand`): models load on
//! their first request and leave, least recently used first, to keep the
//! loaded versions within a memory budget.
//!
//! # Rules
//! - A request that finds its model unloaded starts one load, or joins the
//!   load already running for that model (`pending`): ten concurrent first
//!   requests cause one load. The load runs in its own task, so a request
//!   that gives up does not cancel it; each request waits at most
//!   `load_wait` (from the server's request timeout, shortened by the
//!   request's own `timeout`), then gets 503 with `Retry-After`.
//! - A model whose load failed stays UNAVAILABLE with its reason: requests
//!   do not retry it (a broken file would be loaded again on every
//!   request). A change seen by polling, or the load API, tries again.
//! - Each version's cost is measured while it loads and warms, under the
//!   registry's load mutex: the growth of resident memory and of the heap
//!   in use, and at least the model file's size, whichever is largest. The
//!   heap counts because memory freed by an eviction is reused by the next
//!   load without growing the resident set. Other work running during the
//!   load (requests to other models) adds noise to the measurement.
//! - Before a load, and again once it is published, the least recently used
//!   versions of other models are evicted until the loaded costs fit the
//!   budget. Idle versions go first. A version with requests in flight or
//!   queued (its `Arc` held by someone besides the served map) is evicted
//!   only when no idle one is left: it is unpublished and closed at once,
//!   finishes the requests it holds, and is freed with the last of them.
//!   Until then its cost stays counted (`draining`).
//! - Pinned versions (`--load-model`, config.toml `pinned = true`) load at
//!   start and are never evicted nor unloaded for idleness.
//! - Evicting is an atomic store of the served map plus closing the
//!   version's queue; sessions are freed on a blocking thread, so requests
//!   to other models never wait for it.
//! - The last-used time is one relaxed atomic per version, written at most
//!   every `memory::TOUCH_MS` (1 ms), so the hot path stays a load of the
//!   served map and a clock read.

use super::settings::{ControlMode, DemandSettings};
use super::state::VersionState;
use super::{IndexEntry, LoadedVersion, Model, Registry};
use crate::error::{Error, Result};
use crate::metrics::DemandMetrics;
use memory::{Probe, release_free_memory, unix_ms};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};
use tokio::sync::watch;

mod memory;
mod startup;

pub(crate) use memory::Usage;
pub(crate) use startup::{spawn_sweeper, start};

/// A model evicted and reloaded more than this many times within
/// [`THRASH_WINDOW`] is thrashing: the budget is smaller than the working set.
pub(crate) const THRASH_RELOADS: usize = 3;
pub(crate) const THRASH_WINDOW: Duration = Duration::from_secs(300);

/// Why a version left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    Budget,
    Idle,
}

/// A model's memory after its versions leave: for the index, and as the
/// estimate of its next load.
#[derive(Debug, Default, Clone)]
struct Remembered {
    last_used_ms: u64,
    costs: BTreeMap<u64, u64>,
}

type Outcome = Option<Result<()>>;

/// The on-demand state of a registry.
#[derive(Debug)]
pub(crate) struct Demand {
    pub(super) settings: DemandSettings,
    metrics: DemandMetrics,
    /// Loads started by requests, by model; later requests join them.
    pending: Mutex<HashMap<String, watch::Receiver<Outcome>>>,
    remembered: Mutex<HashMap<String, Remembered>>,
    /// Evicted versions still finishing their requests, with their costs.
    draining: Mutex<Vec<(Weak<LoadedVersion>, u64)>>,
    /// Per model: whether it was evicted since its last load, and when it
    /// was reloaded after an eviction, within [`THRASH_WINDOW`].
    reloads: Mutex<HashMap<String, (bool, VecDeque<Instant>)>>,
    /// Set by an eviction: the sweeper's next tick hands free heap memory
    /// back to the system (at most once a tick, as it walks every arena).
    freed: std::sync::atomic::AtomicBool,
    /// Models pinned at start beside `settings.pinned`: ensembles and the
    /// models their steps run, which ensembles need loaded (a step does not
    /// load its model on demand).
    ensemble_pinned: Mutex<Vec<String>>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Demand {
    pub(super) fn new(settings: DemandSettings, metrics: DemandMetrics) -> Self {
        metrics
            .budget_bytes
            .set(i64::try_from(settings.budget.unwrap_or(0)).unwrap_or(i64::MAX));
        Self {
            settings,
            metrics,
            pending: Mutex::default(),
            remembered: Mutex::default(),
            draining: Mutex::default(),
            reloads: Mutex::default(),
            freed: std::sync::atomic::AtomicBool::new(false),
            ensemble_pinned: Mutex::default(),
        }
    }

    fn draining_bytes(&self) -> u64 {
        let mut draining = locked(&self.draining);
        draining.retain(|(weak, _)| weak.strong_count() > 0);
        draining.iter().map(|(_, cost)| cost).sum()
    }
}

/// Decrements a gauge however the wait ends.
struct Waiting(prometheus::IntGauge);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Registry {
    pub(crate) fn on_demand(&self) -> bool {
        self.defaults.control_mode == ControlMode::OnDemand
    }

    fn pinned(&self, version: &LoadedVersion) -> bool {
        version.config.pinned
            || self.demand.settings.pinned.contains(&version.model)
            || locked(&self.demand.ensemble_pinned).contains(&version.model)
    }

    /// [`Registry::resolve`], loading the model first when on-demand mode
    /// may: waits for the load at most `wait` (and the server's load wait).
    pub(crate) async fn resolve_or_load(
        self: &Arc<Self>,
        name: &str,
        version: Option<u64>,
        wait: Option<Duration>,
    ) -> Result<Arc<LoadedVersion>> {
        let missing = match self.resolve(name, version) {
            Ok(found) => return Ok(found),
            Err(e) => e,
        };
        if !self.on_demand() || !self.loadable(name) {
            return Err(missing);
        }
        let wait = match (wait, self.demand.settings.load_wait) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let started = Instant::now();
        let metrics = &self.demand.metrics;
        let waiting = [
            metrics.cold_waiting.clone(),
            self.metrics.cold_inflight(name),
        ]
        .map(|gauge| {
            gauge.inc();
            Waiting(gauge)
        });
        let found = self.load_and_resolve(name, version, wait).await;
        drop(waiting);
        metrics.cold_start.observe(started.elapsed().as_secs_f64());
        found
    }

    /// Joins or starts the load, then resolves. Under a budget too small
    /// for the models in use, another load can evict the version between
    /// its load and this resolve: then it loads again, a few times at most.
    async fn load_and_resolve(
        self: &Arc<Self>,
        name: &str,
        version: Option<u64>,
        wait: Option<Duration>,
    ) -> Result<Arc<LoadedVersion>> {
        const ATTEMPTS: usize = 3;
        let deadline = wait.map(|w| Instant::now() + w);
        for _ in 0..ATTEMPTS {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            self.join_load(name, version, left).await?;
            match self.resolve(name, version) {
                Ok(found) => return Ok(found),
                // Evicted again before this request could use it.
                Err(Error::Unavailable(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::Overloaded {
            message: format!(
                "model '{name}' was evicted {ATTEMPTS} times before this request could use it: the memory budget is smaller than the models in use; retry"
            ),
            retry_after: Duration::from_secs(1),
        })
    }

    /// Whether a request may load `name`: it is in the repository and its
    /// last load did not fail.
    fn loadable(&self, name: &str) -> bool {
        if self.repos.model_dir(name).is_none() {
            return false;
        }
        let index = self.index_lock();
        !index.get(name).is_some_and(|states| {
            states
                .values()
                .any(|s| matches!(s, VersionState::Unavailable(_)))
        })
    }

    /// Starts the load of `name`, or joins the one running, and waits for
    /// it at most `wait`.
    async fn join_load(
        self: &Arc<Self>,
        name: &str,
        version: Option<u64>,
        wait: Option<Duration>,
    ) -> Result<()> {
        let mut outcome = {
            let mut pending = locked(&self.demand.pending);
            match pending.get(name) {
                Some(rx) => rx.clone(),
                // Published between the miss and now (a load publishes
                // before it leaves `pending`).
                None if self.resolve(name, version).is_ok() => return Ok(()),
                None => {
                    let (tx, rx) = watch::channel(None);
                    pending.insert(name.to_string(), rx.clone());
                    let this = self.clone();
                    let owned = name.to_string();
                    tokio::spawn(async move {
                        this.demand.metrics.loads.inc();
                        this.note_reload(&owned);
                        // A model of a remote repository is downloaded
                        // (or brought up to date) first.
                        this.sync_model(&owned).await;
                        let result = this.load_internal(&owned).await;
                        locked(&this.demand.pending).remove(&owned);
                        let _ = tx.send(Some(result));
                    });
                    rx
                }
            }
        };
        let done = async {
            match outcome.wait_for(Option::is_some).await {
                Ok(result) => result.clone().unwrap_or(Ok(())),
                Err(_) => Err(Error::internal(format!(
                    "the on-demand load of model '{name}' ended without an outcome"
                ))),
            }
        };
        let Some(limit) = wait else {
            return done.await;
        };
        match tokio::time::timeout(limit, done).await {
            Ok(result) => result,
            Err(_) => Err(Error::Overloaded {
                message: format!(
                    "model '{name}' is still loading on demand after {} ms, as long as this request may wait; retry",
                    limit.as_millis()
                ),
                retry_after: Duration::from_secs(1),
            }),
        }
    }

    /// Counts a load of a model evicted since its last one, and reports a
    /// model that keeps coming back.
    fn note_reload(&self, name: &str) {
        let mut reloads = locked(&self.demand.reloads);
        let (evicted, times) = reloads.entry(name.to_string()).or_default();
        if !std::mem::take(evicted) {
            return;
        }
        let now = Instant::now();
        times.push_back(now);
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) > THRASH_WINDOW)
        {
            times.pop_front();
        }
        if times.len() > THRASH_RELOADS {
            self.demand.metrics.thrash.inc();
            tracing::warn!(
                model = name,
                reloads = times.len(),
                window_secs = THRASH_WINDOW.as_secs(),
                budget_bytes = self.demand.settings.budget.unwrap_or(0),
                "model is thrashing: evicted and reloaded again and again; the memory budget is smaller than the working set"
            );
        }
    }

    /// Before a load of `name` (under the load mutex): evicts until its
    /// estimated cost fits, and returns the memory in use after that, to
    /// measure the load against.
    pub(super) async fn before_load(&self, name: &str) -> Probe {
        let estimate = locked(&self.demand.remembered)
            .get(name)
            .map_or(0, |r| r.costs.values().sum());
        self.make_room(name, estimate).await;
        Probe::now()
    }

    /// After a load (under the load mutex): gives each fresh version its
    /// measured cost, or refuses the load when one costs more than the
    /// whole budget. A refused load is dropped on a blocking thread.
    pub(super) fn measure(
        &self,
        loaded: super::load::Loaded,
        probe: Probe,
    ) -> std::result::Result<super::load::Loaded, super::load::LoadFailure> {
        if loaded.fresh.is_empty() {
            return Ok(loaded);
        }
        let growth = probe.growth() / loaded.fresh.len() as u64;
        for v in &loaded.fresh {
            let Some(lv) = loaded.versions.get(v) else {
                continue;
            };
            let cost = growth.max(lv.usage.file_bytes);
            lv.usage.cost.store(cost, Ordering::Relaxed);
            if let Some(budget) = self.demand.settings.budget.filter(|b| cost > *b) {
                let failure = super::load::LoadFailure {
                    version: Some(*v),
                    reason: format!(
                        "version {v} needs {cost} bytes of memory (measured while it loaded and warmed), more than the whole budget of {budget} bytes (--model-memory-budget-bytes); raise the budget or make the model smaller"
                    ),
                    fingerprint: Some(loaded.fingerprint.clone()),
                };
                tokio::task::spawn_blocking(move || drop(loaded));
                return Err(failure);
            }
        }
        Ok(loaded)
    }

    /// After `name` was published (under the load mutex): evicts others
    /// until the budget holds again, and refreshes the gauges.
    pub(super) async fn after_publish(&self, name: &str) {
        if let Some(model) = self.served.load().get(name) {
            let mut remembered = locked(&self.demand.remembered);
            let entry = remembered.entry(name.to_string()).or_default();
            for (v, lv) in &model.versions {
                entry.costs.insert(*v, lv.usage.cost());
                self.demand
                    .metrics
                    .memory
                    .with_label_values(&[name, v.to_string().as_str()])
                    .set(i64::try_from(lv.usage.cost()).unwrap_or(i64::MAX));
            }
        }
        self.make_room(name, 0).await;
        self.refresh_demand_gauges();
    }

    /// The costs of the loaded versions, and of the evicted ones not yet freed.
    pub(crate) fn loaded_bytes(&self) -> u64 {
        self.served_bytes() + self.demand.draining_bytes()
    }

    fn served_bytes(&self) -> u64 {
        self.served
            .load()
            .values()
            .flat_map(|m| m.versions.values())
            .map(|v| v.usage.cost())
            .sum()
    }

    pub(super) fn refresh_demand_gauges(&self) {
        let metrics = &self.demand.metrics;
        let count: usize = self.served.load().values().map(|m| m.versions.len()).sum();
        metrics
            .models_loaded
            .set(i64::try_from(count).unwrap_or(i64::MAX));
        metrics
            .loaded_bytes
            .set(i64::try_from(self.loaded_bytes()).unwrap_or(i64::MAX));
    }

    /// Evicts least recently used versions of models other than `keep`
    /// until `incoming` more bytes fit the budget (under the load mutex).
    async fn make_room(&self, keep: &str, incoming: u64) {
        let Some(budget) = self.demand.settings.budget else {
            return;
        };
        // Evicted versions still finishing requests are not counted here:
        // evicting more would not free them sooner.
        while self.served_bytes().saturating_add(incoming) > budget {
            let Some((name, version)) = self.victim(keep) else {
                tracing::warn!(
                    model = keep,
                    loaded_bytes = self.loaded_bytes(),
                    budget_bytes = budget,
                    "over the memory budget with nothing left to evict (the rest is pinned, draining or this model)"
                );
                return;
            };
            self.evict(&name, version, Why::Budget).await;
        }
    }

    /// The version to evict first: idle before busy, then least recently used.
    fn victim(&self, keep: &str) -> Option<(String, u64)> {
        let served = self.served.load();
        served
            .iter()
            .filter(|(name, _)| name.as_str() != keep)
            .flat_map(|(name, m)| m.versions.iter().map(move |(v, lv)| (name, *v, lv)))
            .filter(|(_, _, lv)| !self.pinned(lv))
            .min_by_key(|(_, _, lv)| (Arc::strong_count(lv) > 1, lv.usage.last_used_ms()))
            .map(|(name, v, _)| (name.clone(), v))
    }

    /// Unpublishes one version (under the load mutex): it stops admitting,
    /// finishes what it holds, and is freed with its last request.
    async fn evict(&self, name: &str, version: u64, why: Why) {
        let Some(model) = self.served.load().get(name).cloned() else {
            return;
        };
        let mut versions = model.versions.clone();
        let Some(victim) = versions.remove(&version) else {
            return;
        };
        drop(model);
        let rest = (!versions.is_empty()).then(|| Arc::new(Model { versions }));
        let old = self.replace(name, rest);
        victim.close();
        self.metrics.forget_version(name, version);
        self.set_state(name, Some(version), Some(VersionState::Unloaded));
        let cost = victim.usage.cost();
        {
            let mut remembered = locked(&self.demand.remembered);
            let entry = remembered.entry(name.to_string()).or_default();
            entry.last_used_ms = entry.last_used_ms.max(victim.usage.last_used_ms());
            entry.costs.insert(version, cost);
        }
        locked(&self.demand.reloads)
            .entry(name.to_string())
            .or_default()
            .0 = true;
        let busy = Arc::strong_count(&victim) > 2; // the map's old copy and ours
        match why {
            Why::Budget => self.demand.metrics.evictions.inc(),
            Why::Idle => self.demand.metrics.idle_unloads.inc(),
        }
        tracing::info!(
            model = name,
            version,
            cost_bytes = cost,
            busy,
            reason = match why {
                Why::Budget => "memory budget",
                Why::Idle => "idle",
            },
            "model version unloaded"
        );
        locked(&self.demand.draining).push((Arc::downgrade(&victim), cost));
        // Freeing sessions joins their worker threads: not on the runtime.
        let _ = tokio::task::spawn_blocking(move || drop((old, victim))).await;
        self.demand.freed.store(true, Ordering::Relaxed);
        self.refresh_demand_gauges();
    }

    /// One pass of the idle sweep: unloads versions unused for
    /// `idle_unload` that hold no request, and refreshes the gauges.
    pub(crate) async fn sweep_idle(&self) {
        if self.demand.freed.swap(false, Ordering::Relaxed) {
            let _ = tokio::task::spawn_blocking(release_free_memory).await;
        }
        self.refresh_demand_gauges();
        let Some(idle) = self.demand.settings.idle_unload else {
            return;
        };
        let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
        let stale = |lv: &LoadedVersion| {
            unix_ms().saturating_sub(lv.usage.last_used_ms()) >= idle_ms && !self.pinned(lv)
        };
        let any = self
            .served
            .load()
            .values()
            .flat_map(|m| m.versions.values())
            .any(|lv| stale(lv) && Arc::strong_count(lv) == 1);
        if !any {
            return;
        }
        let _serial = self.loads.lock().await;
        let victims: Vec<(String, u64)> = self
            .served
            .load()
            .iter()
            .flat_map(|(name, m)| m.versions.iter().map(move |(v, lv)| (name, *v, lv)))
            .filter(|(_, _, lv)| stale(lv) && Arc::strong_count(lv) == 1)
            .map(|(name, v, _)| (name.clone(), v))
            .collect();
        for (name, version) in victims {
            self.evict(&name, version, Why::Idle).await;
        }
    }

    /// In on-demand mode, whether polling should leave a new or changed
    /// model unloaded (it is not loaded now, nor pinned by flag) and only
    /// list it: the next request loads what the repository holds then.
    /// `seen` is what the directory holds now: polling acts again only
    /// when it changes.
    pub(super) fn defer_to_demand(
        &self,
        name: &str,
        seen: &crate::repository::Fingerprint,
    ) -> bool {
        if !self.on_demand()
            || self.demand.settings.pinned.iter().any(|p| p == name)
            || self.served.load().contains_key(name)
        {
            return false;
        }
        self.list_unloaded(name);
        self.remember(name, Some(seen.clone()));
        tracing::info!(
            model = name,
            "model changed in the repository while not loaded; it loads with its next request"
        );
        true
    }

    /// Lists `name` in the index as unloaded (unless a load is under way).
    fn list_unloaded(&self, name: &str) {
        let mut index = self.index_lock();
        let states = index.entry(name.to_string()).or_default();
        if !states.values().any(|s| *s == VersionState::Loading) {
            states.clear();
            states.insert(None, VersionState::Unloaded);
        }
    }

    /// The last-used time and cost of each row of the index, in on-demand
    /// mode (the other modes keep Triton's rows exactly).
    pub(super) fn annotate(&self, entries: &mut [IndexEntry]) {
        if !self.on_demand() {
            return;
        }
        let served = self.served.load();
        let remembered = locked(&self.demand.remembered);
        for entry in entries {
            let live = served.get(&entry.name).and_then(|m| match entry.version {
                Some(v) => m.versions.get(&v),
                None => m.versions.values().next_back(),
            });
            let past = remembered.get(&entry.name);
            entry.last_used_ms = live
                .map(|lv| lv.usage.last_used_ms())
                .or_else(|| past.map(|r| r.last_used_ms).filter(|t| *t > 0));
            entry.memory_bytes = live.map(|lv| lv.usage.cost()).or_else(|| {
                past.and_then(|r| entry.version.and_then(|v| r.costs.get(&v).copied()))
            });
        }
    }
}
