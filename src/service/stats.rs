//! Triton's statistics extension: cumulative counts and durations per
//! model version, recorded on the hot path with atomics and read as a plain
//! [`VersionStats`] snapshot that both adapters encode.

use crate::scheduler::job::{Phases, Timing};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A count and a total duration, as the statistics extension reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct StatDuration {
    pub(crate) count: u64,
    pub(crate) ns: u64,
}

/// The statistics of one executed batch size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BatchStats {
    pub(crate) batch_size: u64,
    pub(crate) compute_input: StatDuration,
    pub(crate) compute_infer: StatDuration,
    pub(crate) compute_output: StatDuration,
}

/// A snapshot of one served version's statistics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VersionStats {
    pub(crate) name: String,
    pub(crate) version: u64,
    /// Milliseconds since the epoch of the last inference (0: none yet).
    pub(crate) last_inference: u64,
    pub(crate) inference_count: u64,
    pub(crate) execution_count: u64,
    pub(crate) success: StatDuration,
    pub(crate) fail: StatDuration,
    pub(crate) queue: StatDuration,
    pub(crate) compute_input: StatDuration,
    pub(crate) compute_infer: StatDuration,
    pub(crate) compute_output: StatDuration,
    /// Response-cache lookups that hit and missed; `None` (left out of the
    /// answer) for a version without the cache, rather than fake zeros.
    pub(crate) cache_hit: Option<StatDuration>,
    pub(crate) cache_miss: Option<StatDuration>,
    pub(crate) batches: Vec<BatchStats>,
    /// Requests queued now.
    pub(crate) pending_requests: usize,
}

/// A count and a total duration in nanoseconds.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    count: AtomicU64,
    ns: AtomicU64,
}

impl Tally {
    fn add(&self, d: Duration) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.ns.fetch_add(
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    fn get(&self) -> StatDuration {
        StatDuration {
            count: self.count.load(Ordering::Relaxed),
            ns: self.ns.load(Ordering::Relaxed),
        }
    }
}

/// Cumulative statistics of one version, as Triton's statistics extension reports them.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    success: Tally,
    fail: Tally,
    queue: Tally,
    compute_input: Tally,
    compute_infer: Tally,
    compute_output: Tally,
    /// Response-cache lookups that hit (lookup time), and that missed
    /// (lookup plus insert time), as Triton reports them.
    cache_hit: Tally,
    cache_miss: Tally,
    inference_count: AtomicU64,
    execution_count: AtomicU64,
    /// Milliseconds since the epoch of the last inference.
    last_inference_ms: AtomicU64,
    /// Per executed batch size: the count and the phases' total ns.
    batches: Mutex<BTreeMap<usize, BatchTally>>,
}

#[derive(Debug, Default, Clone, Copy)]
struct BatchTally {
    count: u64,
    input_ns: u64,
    infer_ns: u64,
    output_ns: u64,
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Stats {
    pub(crate) fn record_batch(&self, rows: usize, phases: Phases) {
        self.inference_count
            .fetch_add(rows as u64, Ordering::Relaxed);
        self.execution_count.fetch_add(1, Ordering::Relaxed);
        self.last_inference_ms.store(now_ms(), Ordering::Relaxed);
        let mut batches = self.batches.lock().unwrap_or_else(|p| p.into_inner());
        let slot = batches.entry(rows).or_default();
        slot.count += 1;
        slot.input_ns = slot.input_ns.saturating_add(ns(phases.input));
        slot.infer_ns = slot.infer_ns.saturating_add(ns(phases.infer));
        slot.output_ns = slot.output_ns.saturating_add(ns(phases.output));
    }

    /// A request ended; `timing` when it succeeded. Each request counts its
    /// batch's phases, as Triton does.
    pub fn record_request(&self, total: Duration, timing: Option<&Timing>) {
        match timing {
            Some(t) => {
                self.success.add(total);
                self.queue.add(t.queue);
                self.compute_input.add(t.phases.input);
                self.compute_infer.add(t.phases.infer);
                self.compute_output.add(t.phases.output);
            }
            None => self.fail.add(total),
        }
    }

    /// A request answered from the response cache: as in Triton, a success
    /// and `rows` inferences, but no execution, queue or compute time.
    pub(crate) fn record_cache_hit(&self, total: Duration, lookup: Duration, rows: usize) {
        self.success.add(total);
        self.cache_hit.add(lookup);
        self.inference_count
            .fetch_add(rows as u64, Ordering::Relaxed);
        self.last_inference_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// A response-cache miss, whose lookup and insert took `took`.
    pub(crate) fn record_cache_miss(&self, took: Duration) {
        self.cache_miss.add(took);
    }

    /// What has been recorded so far, for `name` version `version` with
    /// `pending_requests` queued now; `cached` when the version uses the
    /// response cache (else its cache fields are left out).
    pub(crate) fn snapshot(
        &self,
        name: &str,
        version: u64,
        pending_requests: usize,
        cached: bool,
    ) -> VersionStats {
        let batches = self.batches.lock().unwrap_or_else(|p| p.into_inner());
        let d = |count, ns| StatDuration { count, ns };
        VersionStats {
            name: name.to_string(),
            version,
            last_inference: self.last_inference_ms.load(Ordering::Relaxed),
            inference_count: self.inference_count.load(Ordering::Relaxed),
            execution_count: self.execution_count.load(Ordering::Relaxed),
            success: self.success.get(),
            fail: self.fail.get(),
            queue: self.queue.get(),
            compute_input: self.compute_input.get(),
            compute_infer: self.compute_infer.get(),
            compute_output: self.compute_output.get(),
            cache_hit: cached.then(|| self.cache_hit.get()),
            cache_miss: cached.then(|| self.cache_miss.get()),
            batches: batches
                .iter()
                .map(|(&size, b)| BatchStats {
                    batch_size: size as u64,
                    compute_input: d(b.count, b.input_ns),
                    compute_infer: d(b.count, b.infer_ns),
                    compute_output: d(b.count, b.output_ns),
                })
                .collect(),
            pending_requests,
        }
    }
}
