//! The response cache's metric families. Hits and misses are counted per
//! model version (cached handles in `VersionMetrics`); evictions, bytes and
//! entries are server-wide, as the cache is one store shared by every model.
//! A version's hits and misses also feed Triton's statistics (`Stats`).

use super::VersionMetrics;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts};
use std::time::Duration;

pub(crate) const CACHE_HITS: &str = "sluice_cache_hits_total";
pub(crate) const CACHE_MISSES: &str = "sluice_cache_misses_total";
pub(crate) const CACHE_EVICTIONS: &str = "sluice_cache_evictions_total";
pub(crate) const CACHE_SIZE: &str = "sluice_cache_size_bytes";
pub(crate) const CACHE_ENTRIES: &str = "sluice_cache_entries";

/// Cloneable handles to the cache's families.
#[derive(Debug, Clone)]
pub(crate) struct CacheMetrics {
    pub(crate) hits: IntCounterVec,
    pub(crate) misses: IntCounterVec,
    pub(crate) evictions: IntCounter,
    pub(crate) size_bytes: IntGauge,
    pub(crate) entries: IntGauge,
}

impl Default for CacheMetrics {
    fn default() -> Self {
        Self::new()
    }
}

fn counter(name: &str, help: &str) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), &["model", "version"])
        .unwrap_or_else(|e| unreachable!("static counter {name} is valid: {e}"))
}

impl CacheMetrics {
    pub(crate) fn new() -> Self {
        let plain = |name: &str, help: &str| {
            IntCounter::new(name, help)
                .unwrap_or_else(|e| unreachable!("static counter {name} is valid: {e}"))
        };
        let gauge = |name: &str, help: &str| {
            IntGauge::new(name, help)
                .unwrap_or_else(|e| unreachable!("static gauge {name} is valid: {e}"))
        };
        Self {
            hits: counter(
                CACHE_HITS,
                "Requests answered from the response cache, without running.",
            ),
            misses: counter(
                CACHE_MISSES,
                "Requests of cache-enabled models that were not in the response cache and ran.",
            ),
            evictions: plain(
                CACHE_EVICTIONS,
                "Response cache entries evicted (least recently used) to stay within --cache-size-bytes.",
            ),
            size_bytes: gauge(
                CACHE_SIZE,
                "Bytes the response cache holds now (keys plus outputs), at most --cache-size-bytes.",
            ),
            entries: gauge(CACHE_ENTRIES, "Entries in the response cache now."),
        }
    }

    /// Every family, for registration.
    pub(crate) fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.hits.clone()),
            Box::new(self.misses.clone()),
            Box::new(self.evictions.clone()),
            Box::new(self.size_bytes.clone()),
            Box::new(self.entries.clone()),
        ]
    }
}

impl VersionMetrics {
    /// A request of `rows` rows was answered from the response cache, whose
    /// lookup took `lookup`: a success that never queued nor ran.
    pub(crate) fn record_cache_hit(
        &self,
        protocol: &str,
        total: Duration,
        lookup: Duration,
        rows: usize,
    ) {
        self.count_request(protocol, "success", total);
        self.cache_hits.inc();
        self.stats.record_cache_hit(total, lookup, rows);
    }

    /// A request missed the response cache; `took` is its lookup and insert.
    pub(crate) fn record_cache_miss(&self, took: Duration) {
        self.cache_misses.inc();
        self.stats.record_cache_miss(took);
    }
}
