//! Triton's statistics extension: cumulative counts and durations per
//! model version, recorded on the hot path with atomics and read as a plain
//! [`VersionStats`] snapshot that both adapters encode.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A count and a total duration, as the statistics extension reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatDuration {
    pub count: u64,
    pub ns: u64,
}

/// The statistics of one executed batch size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchStats {
    pub batch_size: u64,
    pub compute_input: StatDuration,
    pub compute_infer: StatDuration,
    pub compute_output: StatDuration,
}

/// A snapshot of one served version's statistics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionStats {
    pub name: String,
    pub version: u64,
    /// Milliseconds since the epoch of the last inference (0: none yet).
    pub last_inference: u64,
    pub inference_count: u64,
    pub execution_count: u64,
    pub success: StatDuration,
    pub fail: StatDuration,
    pub queue: StatDuration,
    pub compute_input: StatDuration,
    pub compute_infer: StatDuration,
    pub compute_output: StatDuration,
    pub cache_hit: StatDuration,
    pub cache_miss: StatDuration,
    pub batches: Vec<BatchStats>,
    /// Requests queued now.
    pub pending_requests: usize,
}

/// A count and a total duration in nanoseconds.
#[derive(Debug, Default)]
pub struct Tally {
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
pub struct Stats {
    success: Tally,
    fail: Tally,
    queue: Tally,
    compute_infer: Tally,
    inference_count: AtomicU64,
    execution_count: AtomicU64,
    /// Milliseconds since the epoch of the last inference.
    last_inference_ms: AtomicU64,
    /// Per executed batch size: (count, total compute ns).
    batches: Mutex<BTreeMap<usize, (u64, u64)>>,
}

impl Stats {
    pub(crate) fn record_batch(&self, rows: usize, took: Duration) {
        self.inference_count
            .fetch_add(rows as u64, Ordering::Relaxed);
        self.execution_count.fetch_add(1, Ordering::Relaxed);
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.last_inference_ms.store(ms, Ordering::Relaxed);
        let mut batches = self.batches.lock().unwrap_or_else(|p| p.into_inner());
        let slot = batches.entry(rows).or_insert((0, 0));
        slot.0 += 1;
        slot.1 += u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
    }

    pub(crate) fn record_request(
        &self,
        total: Duration,
        queue_and_compute: Option<(Duration, Duration)>,
    ) {
        match queue_and_compute {
            Some((queue, compute)) => {
                self.success.add(total);
                self.queue.add(queue);
                self.compute_infer.add(compute);
            }
            None => self.fail.add(total),
        }
    }

    /// What has been recorded so far, for `name` version `version` with
    /// `pending_requests` queued now.
    pub(crate) fn snapshot(
        &self,
        name: &str,
        version: u64,
        pending_requests: usize,
    ) -> VersionStats {
        let batches = self.batches.lock().unwrap_or_else(|p| p.into_inner());
        VersionStats {
            name: name.to_string(),
            version,
            last_inference: self.last_inference_ms.load(Ordering::Relaxed),
            inference_count: self.inference_count.load(Ordering::Relaxed),
            execution_count: self.execution_count.load(Ordering::Relaxed),
            success: self.success.get(),
            fail: self.fail.get(),
            queue: self.queue.get(),
            compute_input: StatDuration::default(),
            compute_infer: self.compute_infer.get(),
            compute_output: StatDuration::default(),
            cache_hit: StatDuration::default(),
            cache_miss: StatDuration::default(),
            batches: batches
                .iter()
                .map(|(&size, &(count, ns))| BatchStats {
                    batch_size: size as u64,
                    compute_input: StatDuration::default(),
                    compute_infer: StatDuration { count, ns },
                    compute_output: StatDuration::default(),
                })
                .collect(),
            pending_requests,
        }
    }
}
