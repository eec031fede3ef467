//! Remote model repositories' metric families, labelled by `repository`
//! (the URL as logs print it, without secrets): a handful of series per
//! repository, however many models it holds.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
};
use std::time::Duration;

pub(crate) const DOWNLOAD_BYTES: &str = "sluice_repository_download_bytes_total";
pub(crate) const DOWNLOAD_DURATION: &str = "sluice_repository_download_duration_seconds";
pub(crate) const FAILURES: &str = "sluice_repository_failures_total";
pub(crate) const CACHE_BYTES: &str = "sluice_repository_cache_bytes";
pub(crate) const SYNCS: &str = "sluice_repository_syncs_total";
pub(crate) const LAST_SYNC: &str = "sluice_repository_last_sync_timestamp_seconds";

/// Download times: from a small config file to a multi-gigabyte model.
const DOWNLOAD_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
];

/// The families, shared by every remote repository of a server.
#[derive(Debug, Clone)]
pub(crate) struct RepositoryFamilies {
    bytes: IntCounterVec,
    duration: HistogramVec,
    failures: IntCounterVec,
    cache: IntGaugeVec,
    syncs: IntCounterVec,
    last_sync: IntGaugeVec,
}

impl Default for RepositoryFamilies {
    fn default() -> Self {
        Self::new()
    }
}

impl RepositoryFamilies {
    pub(crate) fn new() -> Self {
        let labels = ["repository"];
        let fail = |name: &str, e: prometheus::Error| -> ! {
            unreachable!("static metric {name} is valid: {e}")
        };
        Self {
            bytes: IntCounterVec::new(
                Opts::new(DOWNLOAD_BYTES, "Bytes downloaded from remote model repositories."),
                &labels,
            )
            .unwrap_or_else(|e| fail(DOWNLOAD_BYTES, e)),
            duration: HistogramVec::new(
                HistogramOpts::new(
                    DOWNLOAD_DURATION,
                    "Time to download one file of a remote model repository.",
                )
                .buckets(DOWNLOAD_BUCKETS.to_vec()),
                &labels,
            )
            .unwrap_or_else(|e| fail(DOWNLOAD_DURATION, e)),
            failures: IntCounterVec::new(
                Opts::new(
                    FAILURES,
                    "Failed listings and downloads of remote model repositories, by operation (list, download).",
                ),
                &["repository", "operation"],
            )
            .unwrap_or_else(|e| fail(FAILURES, e)),
            cache: IntGaugeVec::new(
                Opts::new(CACHE_BYTES, "Bytes of a remote repository's files in the local model cache."),
                &labels,
            )
            .unwrap_or_else(|e| fail(CACHE_BYTES, e)),
            syncs: IntCounterVec::new(
                Opts::new(
                    SYNCS,
                    "Successful listings of a remote repository (each followed by the downloads it called for).",
                ),
                &labels,
            )
            .unwrap_or_else(|e| fail(SYNCS, e)),
            last_sync: IntGaugeVec::new(
                Opts::new(
                    LAST_SYNC,
                    "Unix time of a remote repository's last successful listing (0: none yet).",
                ),
                &labels,
            )
            .unwrap_or_else(|e| fail(LAST_SYNC, e)),
        }
    }

    /// Every family, for registration.
    pub(crate) fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.bytes.clone()),
            Box::new(self.duration.clone()),
            Box::new(self.failures.clone()),
            Box::new(self.cache.clone()),
            Box::new(self.syncs.clone()),
            Box::new(self.last_sync.clone()),
        ]
    }

    /// The handles of one repository; its series exist (at zero) from now on.
    pub(crate) fn repository(&self, repository: &str) -> RepositoryMetrics {
        let l = [repository];
        let failures = |op: &str| self.failures.with_label_values(&[repository, op]);
        RepositoryMetrics {
            bytes: self.bytes.with_label_values(&l),
            duration: self.duration.with_label_values(&l),
            list_failures: failures("list"),
            download_failures: failures("download"),
            cache: self.cache.with_label_values(&l),
            syncs: self.syncs.with_label_values(&l),
            last_sync: self.last_sync.with_label_values(&l),
        }
    }
}

/// One repository's handles.
#[derive(Debug, Clone)]
pub(crate) struct RepositoryMetrics {
    bytes: IntCounter,
    duration: Histogram,
    list_failures: IntCounter,
    download_failures: IntCounter,
    cache: IntGauge,
    syncs: IntCounter,
    last_sync: IntGauge,
}

impl RepositoryMetrics {
    pub(crate) fn downloaded(&self, bytes: u64, took: Duration) {
        self.bytes.inc_by(bytes);
        self.duration.observe(took.as_secs_f64());
    }

    /// Counts a failed `list` or `download`.
    pub(crate) fn failure(&self, operation: &str) {
        match operation {
            "list" => self.list_failures.inc(),
            _ => self.download_failures.inc(),
        }
    }

    pub(crate) fn synced(&self) {
        self.syncs.inc();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.last_sync.set(i64::try_from(now).unwrap_or(i64::MAX));
    }

    pub(crate) fn set_cache_bytes(&self, bytes: u64) {
        self.cache.set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }
}
