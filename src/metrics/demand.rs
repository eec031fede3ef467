//! The metric families of on-demand loading (`registry::demand`): what is
//! loaded against the memory budget, how often models come and go, and what
//! a cold start costs the request that waits for it.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, IntGaugeVec, Opts};

pub(crate) const MODELS_LOADED: &str = "sluice_models_loaded";
pub(crate) const MODEL_MEMORY: &str = "sluice_model_memory_bytes";
pub(crate) const LOADED_BYTES: &str = "sluice_model_memory_loaded_bytes";
pub(crate) const BUDGET_BYTES: &str = "sluice_model_memory_budget_bytes";
pub(crate) const DEMAND_LOADS: &str = "sluice_model_demand_loads_total";
pub(crate) const EVICTIONS: &str = "sluice_model_evictions_total";
pub(crate) const IDLE_UNLOADS: &str = "sluice_model_idle_unloads_total";
pub(crate) const THRASH: &str = "sluice_model_thrash_total";
pub(crate) const COLD_START: &str = "sluice_model_cold_start_seconds";
pub(crate) const COLD_WAITING: &str = "sluice_model_cold_start_waiting";

/// Cold starts run from milliseconds (a tiny model) to minutes (a large one
/// on a GPU).
const COLD_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// Cloneable handles to the on-demand families.
#[derive(Debug, Clone)]
pub(crate) struct DemandMetrics {
    pub(crate) models_loaded: IntGauge,
    pub(crate) memory: IntGaugeVec,
    pub(crate) loaded_bytes: IntGauge,
    pub(crate) budget_bytes: IntGauge,
    pub(crate) loads: IntCounter,
    pub(crate) evictions: IntCounter,
    pub(crate) idle_unloads: IntCounter,
    pub(crate) thrash: IntCounter,
    pub(crate) cold_start: Histogram,
    pub(crate) cold_waiting: IntGauge,
}

impl Default for DemandMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl DemandMetrics {
    pub(crate) fn new() -> Self {
        let counter = |name: &str, help: &str| {
            IntCounter::new(name, help)
                .unwrap_or_else(|e| unreachable!("static counter {name} is valid: {e}"))
        };
        let gauge = |name: &str, help: &str| {
            IntGauge::new(name, help)
                .unwrap_or_else(|e| unreachable!("static gauge {name} is valid: {e}"))
        };
        Self {
            models_loaded: gauge(
                MODELS_LOADED,
                "Model versions loaded and serving now (ensembles not counted).",
            ),
            memory: IntGaugeVec::new(
                Opts::new(
                    MODEL_MEMORY,
                    "Measured memory cost of each loaded model version: the resident memory it added while loading and warming.",
                ),
                &["model", "version"],
            )
            .unwrap_or_else(|e| unreachable!("static gauge {MODEL_MEMORY} is valid: {e}")),
            loaded_bytes: gauge(
                LOADED_BYTES,
                "Sum of the memory costs of the loaded model versions, including evicted ones still finishing requests.",
            ),
            budget_bytes: gauge(
                BUDGET_BYTES,
                "The memory budget of the loaded model versions (--model-memory-budget-bytes); 0: none.",
            ),
            loads: counter(
                DEMAND_LOADS,
                "Model loads started by a request for a model that was not loaded (on-demand mode).",
            ),
            evictions: counter(
                EVICTIONS,
                "Model versions unloaded to make room under the memory budget.",
            ),
            idle_unloads: counter(
                IDLE_UNLOADS,
                "Model versions unloaded after --model-idle-unload-secs without a request.",
            ),
            thrash: counter(
                THRASH,
                "On-demand reloads of a model that was evicted and reloaded more than 3 times in 5 minutes: the budget is smaller than the working set.",
            ),
            cold_start: Histogram::with_opts(
                HistogramOpts::new(
                    COLD_START,
                    "Extra time requests waited for their model to load on demand.",
                )
                .buckets(COLD_BUCKETS.to_vec()),
            )
            .unwrap_or_else(|e| unreachable!("static histogram {COLD_START} is valid: {e}")),
            cold_waiting: gauge(
                COLD_WAITING,
                "Requests waiting now for their model to load on demand.",
            ),
        }
    }

    /// Every family, for registration.
    pub(crate) fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.models_loaded.clone()),
            Box::new(self.memory.clone()),
            Box::new(self.loaded_bytes.clone()),
            Box::new(self.budget_bytes.clone()),
            Box::new(self.loads.clone()),
            Box::new(self.evictions.clone()),
            Box::new(self.idle_unloads.clone()),
            Box::new(self.thrash.clone()),
            Box::new(self.cold_start.clone()),
            Box::new(self.cold_waiting.clone()),
        ]
    }
}
