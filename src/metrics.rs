//! Prometheus metrics and Triton-style per-version statistics.
//!
//! One [`Metrics`] per server (tests run several servers in one process, so
//! nothing is global). Families are labelled `model` and `version` only, plus
//! `protocol`/`outcome`/`state` from small fixed sets: cardinality is bounded
//! by the models served. Each version caches its labelled handles in a
//! [`VersionMetrics`] so the hot path never formats labels.

mod cache;
mod demand;
mod repository;

pub(crate) use cache::CacheMetrics;
pub(crate) use demand::DemandMetrics;
pub(crate) use repository::{RepositoryFamilies, RepositoryMetrics};

use crate::registry::state::ModelState;
use crate::scheduler::job::{Phases, Timing};
use crate::service::stats::Stats;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

pub(crate) const REQUESTS_TOTAL: &str = "sluice_requests_total";
pub(crate) const REQUEST_DURATION: &str = "sluice_request_duration_seconds";
pub(crate) const QUEUE_DURATION: &str = "sluice_queue_duration_seconds";
pub(crate) const COMPUTE_DURATION: &str = "sluice_compute_duration_seconds";
pub(crate) const BATCH_SIZE: &str = "sluice_batch_size";
pub(crate) const COMPUTE_PHASE_DURATION: &str = "sluice_compute_phase_duration_seconds";
pub(crate) const INFERENCES_TOTAL: &str = "sluice_inferences_total";
pub(crate) const EXECUTIONS_TOTAL: &str = "sluice_executions_total";
pub(crate) const INLINE_EXECUTIONS_TOTAL: &str = "sluice_inline_executions_total";
pub(crate) const PENDING_REQUESTS: &str = "sluice_pending_requests";
pub(crate) const INFLIGHT_REQUESTS: &str = "sluice_inflight_requests";
pub(crate) const MODEL_STATE: &str = "sluice_model_state";
pub(crate) const MODEL_LOAD_DURATION: &str = "sluice_model_load_duration_seconds";
pub(crate) const MODEL_LOAD_FAILURES: &str = "sluice_model_load_failures_total";
pub(crate) const MODEL_INFO: &str = "sluice_model_info";

/// Latency buckets from 50 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];
const LOAD_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// The protocols and outcomes `sluice_requests_total` is labelled with; each
/// version caches one handle per pair so the hot path never hashes labels.
pub(crate) const PROTOCOLS: [&str; 2] = ["http", "grpc"];
pub(crate) const OUTCOMES: [&str; 8] = [
    "success",
    "invalid",
    "not_found",
    "unavailable",
    "overloaded",
    "timeout",
    "denied",
    "error",
];

/// Every metric family of one server.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_duration: HistogramVec,
    queue_duration: HistogramVec,
    compute_duration: HistogramVec,
    compute_phase: HistogramVec,
    batch_size: HistogramVec,
    inferences: IntCounterVec,
    executions: IntCounterVec,
    inline_executions: IntCounterVec,
    pending: IntGaugeVec,
    inflight: IntGaugeVec,
    model_state: IntGaugeVec,
    load_duration: HistogramVec,
    load_failures: IntCounterVec,
    model_info: IntGaugeVec,
    /// Server-wide refusals before a request reaches a model.
    pub(crate) edge: crate::net::metrics::EdgeMetrics,
    /// The response cache's families (present, at zero, when it is off).
    pub(crate) cache: CacheMetrics,
    /// Remote model repositories' downloads, failures and cache size.
    pub(crate) repositories: RepositoryFamilies,
    /// On-demand loading and the memory budget (present, at zero, in the
    /// other control modes).
    pub(crate) demand: DemandMetrics,
    /// The provider label each version's info series carries, to remove it.
    providers: std::sync::Arc<Mutex<BTreeMap<(String, String), String>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn histogram(name: &str, help: &str, buckets: &[f64], labels: &[&str]) -> HistogramVec {
    HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )
    .unwrap_or_else(|e| unreachable!("static histogram {name} is valid: {e}"))
}

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| unreachable!("static counter {name} is valid: {e}"))
}

fn gauge(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| unreachable!("static gauge {name} is valid: {e}"))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        const MV: &[&str] = &["model", "version"];
        let m = Self {
            registry: Registry::new(),
            requests: counter(
                REQUESTS_TOTAL,
                "Inference requests by protocol and outcome.",
                &["model", "version", "protocol", "outcome"],
            ),
            request_duration: histogram(
                REQUEST_DURATION,
                "End-to-end inference request duration, from decode to encode.",
                LATENCY_BUCKETS,
                &["model", "version", "protocol"],
            ),
            queue_duration: histogram(
                QUEUE_DURATION,
                "Time requests wait in the queue.",
                LATENCY_BUCKETS,
                MV,
            ),
            compute_duration: histogram(
                COMPUTE_DURATION,
                "Time of the batch run each request took part in.",
                LATENCY_BUCKETS,
                MV,
            ),
            compute_phase: histogram(
                COMPUTE_PHASE_DURATION,
                "Time of each phase of each executed batch: input (assembly), infer (the model run), output (copy-out and split).",
                LATENCY_BUCKETS,
                &["model", "version", "phase"],
            ),
            batch_size: histogram(
                BATCH_SIZE,
                "Rows in each executed batch.",
                BATCH_BUCKETS,
                MV,
            ),
            inferences: counter(INFERENCES_TOTAL, "Rows inferred.", MV),
            executions: counter(EXECUTIONS_TOTAL, "Batches executed.", MV),
            inline_executions: counter(
                INLINE_EXECUTIONS_TOTAL,
                "Batches of one request run on the I/O thread that received it, without the hand-off to an instance thread (--inline-run-limit-us); also counted in sluice_executions_total.",
                MV,
            ),
            pending: gauge(
                PENDING_REQUESTS,
                "Requests queued now, waiting for an instance.",
                MV,
            ),
            inflight: gauge(
                INFLIGHT_REQUESTS,
                "Requests admitted and not yet answered (queued plus running).",
                MV,
            ),
            model_state: gauge(
                MODEL_STATE,
                "1 for the state each model version is in (loading, ready, unavailable).",
                &["model", "version", "state"],
            ),
            load_duration: histogram(
                MODEL_LOAD_DURATION,
                "Time to load and warm a model version.",
                LOAD_BUCKETS,
                &["model"],
            ),
            load_failures: counter(
                MODEL_LOAD_FAILURES,
                "Model version loads that failed.",
                &["model"],
            ),
            model_info: gauge(
                MODEL_INFO,
                "1 per served model version, labelled with the execution provider its sessions were placed on.",
                &["model", "version", "execution_provider"],
            ),
            edge: crate::net::metrics::EdgeMetrics::new(),
            cache: CacheMetrics::new(),
            repositories: RepositoryFamilies::new(),
            demand: DemandMetrics::new(),
            providers: Default::default(),
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(m.requests.clone()),
            Box::new(m.request_duration.clone()),
            Box::new(m.queue_duration.clone()),
            Box::new(m.compute_duration.clone()),
            Box::new(m.compute_phase.clone()),
            Box::new(crate::telemetry::SPANS_DROPPED.clone()),
            Box::new(crate::telemetry::SPANS_EXPORTED.clone()),
            Box::new(m.batch_size.clone()),
            Box::new(m.inferences.clone()),
            Box::new(m.executions.clone()),
            Box::new(m.inline_executions.clone()),
            Box::new(m.pending.clone()),
            Box::new(m.inflight.clone()),
            Box::new(m.model_state.clone()),
            Box::new(m.load_duration.clone()),
            Box::new(m.load_failures.clone()),
            Box::new(m.model_info.clone()),
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
        ];
        let collectors = collectors
            .into_iter()
            .chain(m.edge.collectors())
            .chain(m.cache.collectors())
            .chain(m.repositories.collectors())
            .chain(m.demand.collectors());
        for c in collectors {
            if let Err(e) = m.registry.register(c) {
                tracing::warn!(error = %e, "metric not registered");
            }
        }
        m
    }

    /// The labelled handles of one model version.
    pub fn version(&self, model: &str, version: u64) -> VersionMetrics {
        let v = version.to_string();
        let l = [model, v.as_str()];
        VersionMetrics {
            model: model.to_string(),
            version: v.clone(),
            pending: self.pending.with_label_values(&l),
            inflight: self.inflight.with_label_values(&l),
            queue: self.queue_duration.with_label_values(&l),
            compute: self.compute_duration.with_label_values(&l),
            batch: self.batch_size.with_label_values(&l),
            phases: ["input", "infer", "output"].map(|p| {
                self.compute_phase
                    .with_label_values(&[model, v.as_str(), p])
            }),
            inferences: self.inferences.with_label_values(&l),
            executions: self.executions.with_label_values(&l),
            inline_executions: self.inline_executions.with_label_values(&l),
            per_protocol: PROTOCOLS
                .iter()
                .map(|&protocol| ProtocolHandles {
                    duration: self.request_duration.with_label_values(&[
                        model,
                        v.as_str(),
                        protocol,
                    ]),
                    outcomes: OUTCOMES
                        .iter()
                        .map(|&o| {
                            self.requests
                                .with_label_values(&[model, v.as_str(), protocol, o])
                        })
                        .collect(),
                })
                .collect(),
            requests: self.requests.clone(),
            request_duration: self.request_duration.clone(),
            cache_hits: self.cache.hits.with_label_values(&l),
            cache_misses: self.cache.misses.with_label_values(&l),
            stats: Stats::default(),
        }
    }

    /// Sets the state gauge of a version: 1 for `state`, 0 for the others.
    pub(crate) fn set_state(&self, model: &str, version: u64, state: ModelState) {
        let v = version.to_string();
        for s in ModelState::ALL {
            self.model_state
                .with_label_values(&[model, v.as_str(), s.metric_label()])
                .set(i64::from(s == state));
        }
    }

    /// Records where a version's sessions run (`cpu`, `cuda:0`, ...).
    pub(crate) fn set_provider(&self, model: &str, version: u64, provider: &str) {
        let v = version.to_string();
        let mut providers = self.providers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = providers.insert((model.to_string(), v.clone()), provider.to_string()) {
            let _ = self
                .model_info
                .remove_label_values(&[model, v.as_str(), old.as_str()]);
        }
        self.model_info
            .with_label_values(&[model, v.as_str(), provider])
            .set(1);
    }

    /// Removes a version's series once it is no longer served.
    pub(crate) fn forget_version(&self, model: &str, version: u64) {
        let v = version.to_string();
        let old = self
            .providers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(model.to_string(), v.clone()));
        if let Some(old) = old {
            let _ = self
                .model_info
                .remove_label_values(&[model, v.as_str(), old.as_str()]);
        }
        let l = [model, v.as_str()];
        for vec in [&self.pending, &self.inflight] {
            let _ = vec.remove_label_values(&l);
        }
        let _ = self.demand.memory.remove_label_values(&l);
        for vec in [&self.cache.hits, &self.cache.misses] {
            let _ = vec.remove_label_values(&l);
        }
        for s in ModelState::ALL {
            let _ = self
                .model_state
                .remove_label_values(&[model, v.as_str(), s.metric_label()]);
        }
        for p in ["input", "infer", "output"] {
            let _ = self
                .compute_phase
                .remove_label_values(&[model, v.as_str(), p]);
        }
    }

    pub(crate) fn record_load(&self, model: &str, took: Duration, ok: bool) {
        self.load_duration
            .with_label_values(&[model])
            .observe(took.as_secs_f64());
        if !ok {
            self.load_failures.with_label_values(&[model]).inc();
        }
    }

    /// The in-flight gauge of requests waiting for `model` to load on
    /// demand: labelled with the version "" (none is loaded yet), so that
    /// the sum per pod, the autoscaler's metric, counts cold starts.
    pub(crate) fn cold_inflight(&self, model: &str) -> IntGauge {
        self.inflight.with_label_values(&[model, ""])
    }

    /// Requests that failed before reaching a model version (unknown model,
    /// undecodable body): labelled with the version asked for, or "".
    pub(crate) fn record_unrouted(&self, model: &str, protocol: &str, outcome: &str) {
        self.requests
            .with_label_values(&[model, "", protocol, outcome])
            .inc();
    }

    /// Prometheus text exposition of every family.
    pub(crate) fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| format!("# error encoding metrics: {e}\n"))
    }
}

/// The handles and statistics of one model version.
pub struct VersionMetrics {
    pub(crate) model: String,
    pub(crate) version: String,
    /// Queued now.
    pub pending: IntGauge,
    /// Admitted, not yet answered.
    pub inflight: IntGauge,
    queue: Histogram,
    compute: Histogram,
    /// Per batch: input, infer, output.
    phases: [Histogram; 3],
    batch: Histogram,
    inferences: IntCounter,
    executions: IntCounter,
    inline_executions: IntCounter,
    /// Cached handles, indexed like [`PROTOCOLS`] and [`OUTCOMES`].
    per_protocol: Vec<ProtocolHandles>,
    /// For a protocol or outcome outside those lists (none today).
    requests: IntCounterVec,
    request_duration: HistogramVec,
    cache_hits: IntCounter,
    cache_misses: IntCounter,
    /// Triton-style statistics for `GET /v2/models/{m}/stats`.
    pub(crate) stats: Stats,
}

impl std::fmt::Debug for VersionMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VersionMetrics({}/{})", self.model, self.version)
    }
}

impl VersionMetrics {
    /// A batch of `rows` ran for `took`.
    pub fn record_execution(&self, rows: usize, took: Duration, phases: Phases) {
        self.batch.observe(rows as f64);
        self.executions.inc();
        self.inferences.inc_by(rows as u64);
        for (histogram, d) in self
            .phases
            .iter()
            .zip([phases.input, phases.infer, phases.output])
        {
            histogram.observe(d.as_secs_f64());
        }
        self.stats.record_batch(rows, phases);
        let _ = took;
    }

    /// A batch of one request ran on the thread that received it.
    pub(crate) fn record_inline_execution(&self) {
        self.inline_executions.inc();
    }

    /// A request finished: successfully with its queue and compute times, or not.
    pub fn record_request(
        &self,
        protocol: &str,
        outcome: &str,
        total: Duration,
        timing: Option<Timing>,
    ) {
        self.count_request(protocol, outcome, total);
        if let Some(t) = &timing {
            self.queue.observe(t.queue.as_secs_f64());
            self.compute.observe(t.compute.as_secs_f64());
        }
        self.stats.record_request(total, timing.as_ref());
    }

    fn count_request(&self, protocol: &str, outcome: &str, total: Duration) {
        let cached = PROTOCOLS
            .iter()
            .position(|&p| p == protocol)
            .and_then(|i| self.per_protocol.get(i));
        match (cached, OUTCOMES.iter().position(|&o| o == outcome)) {
            (Some(handles), Some(o)) => {
                handles.outcomes[o].inc();
                handles.duration.observe(total.as_secs_f64());
            }
            _ => {
                let (m, v) = (self.model.as_str(), self.version.as_str());
                self.requests
                    .with_label_values(&[m, v, protocol, outcome])
                    .inc();
                self.request_duration
                    .with_label_values(&[m, v, protocol])
                    .observe(total.as_secs_f64());
            }
        }
    }
}

/// One protocol's labelled handles for a version.
struct ProtocolHandles {
    duration: Histogram,
    outcomes: Vec<IntCounter>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    #[test]
    fn every_error_outcome_has_a_cached_handle() {
        let errors = [
            Error::InvalidArgument(String::new()),
            Error::TooLarge(String::new()),
            Error::NotFound(String::new()),
            Error::Unavailable(String::new()),
            Error::Overloaded {
                message: String::new(),
                retry_after: Duration::ZERO,
            },
            Error::DeadlineExceeded(String::new()),
            Error::ClientTimeout(String::new()),
            Error::Unauthenticated(String::new()),
            Error::PermissionDenied(String::new()),
            Error::Internal(String::new()),
        ];
        for e in errors {
            assert!(OUTCOMES.contains(&e.outcome()), "{}", e.outcome());
        }
    }

    #[test]
    fn cached_and_uncached_requests_land_in_the_same_series() {
        let m = Metrics::new();
        let v = m.version("iris", 1);
        v.record_request("http", "success", Duration::from_micros(5), None);
        v.record_request("grpc", "timeout", Duration::from_micros(5), None);
        v.record_request("other", "success", Duration::from_micros(5), None);
        let text = m.render();
        for line in [
            r#"sluice_requests_total{model="iris",outcome="success",protocol="http",version="1"} 1"#,
            r#"sluice_requests_total{model="iris",outcome="timeout",protocol="grpc",version="1"} 1"#,
            r#"sluice_requests_total{model="iris",outcome="success",protocol="other",version="1"} 1"#,
        ] {
            assert!(text.contains(line), "missing {line}");
        }
    }
}
