//! What a loaded version costs and when it last served: the process's
//! memory measured around a load, and the coarse last-used clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Coarseness of the last-used time: a version serving many requests
/// writes it at most this often (once per millisecond, so a hot version
/// costs at most 1000 stores a second). It must stay well below the time
/// the loaded set takes to turn over under eviction: with 30 versions and
/// 200 evictions a second that is 150 ms, and a 100 ms stamp measured the
/// most used model as older than versions loaded after its last request, so
/// it was evicted again and again (6-8 reloads in 6 s instead of 1).
pub(super) const TOUCH_MS: u64 = 1;

pub(super) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// When a loaded version last served, and what it costs.
#[derive(Debug)]
pub(crate) struct Usage {
    /// Unix time in milliseconds.
    last_used_ms: AtomicU64,
    /// Measured cost in bytes (the file's size until measured).
    pub(super) cost: AtomicU64,
    /// Size of the model file: the least a version can cost.
    pub(super) file_bytes: u64,
}

impl Usage {
    pub(crate) fn new(file_bytes: u64) -> Self {
        Self {
            last_used_ms: AtomicU64::new(unix_ms()),
            cost: AtomicU64::new(file_bytes),
            file_bytes,
        }
    }

    /// Records a use now (coarsely: see [`TOUCH_MS`]).
    pub(crate) fn touch(&self) {
        let now = unix_ms();
        if now.saturating_sub(self.last_used_ms.load(Ordering::Relaxed)) >= TOUCH_MS {
            self.last_used_ms.store(now, Ordering::Relaxed);
        }
    }

    pub(crate) fn last_used_ms(&self) -> u64 {
        self.last_used_ms.load(Ordering::Relaxed)
    }

    pub(crate) fn cost(&self) -> u64 {
        self.cost.load(Ordering::Relaxed)
    }
}

/// Memory in use by the process at one moment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Probe {
    rss: u64,
    heap: u64,
}

impl Probe {
    pub(crate) fn now() -> Self {
        Self {
            rss: resident_bytes(),
            heap: heap_bytes(),
        }
    }

    /// How much more is in use now than at `self`.
    pub(super) fn growth(&self) -> u64 {
        let now = Self::now();
        now.rss
            .saturating_sub(self.rss)
            .max(now.heap.saturating_sub(self.heap))
    }
}

/// The resident set size, from `/proc/self/statm` (0 where unavailable).
pub(crate) fn resident_bytes() -> u64 {
    const PAGE: u64 = 4096;
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * PAGE)
}

/// Bytes of the C heap in use (glibc's `mallinfo2`: allocated chunks plus
/// mmapped blocks); ONNX Runtime allocates through it.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn heap_bytes() -> u64 {
    // SAFETY: `mallinfo2` takes no arguments, only reads the allocator's
    // statistics under its own locks, and returns a plain struct by value.
    #[allow(unsafe_code)]
    let info = unsafe { libc::mallinfo2() };
    (info.uordblks as u64).saturating_add(info.hblkhd as u64)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn heap_bytes() -> u64 {
    0
}

/// Hands the heap's free memory back to the system. glibc keeps what a
/// freed session held in the arena of the thread that allocated it (each
/// session's worker is a thread of its own), so without this the resident
/// set keeps the peak of every arena after evictions: 300 models under a
/// budget of 35 MiB grew 100 MiB over it in 45 s of churn, against 15 MiB
/// with it.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(super) fn release_free_memory() {
    // SAFETY: `malloc_trim` takes a plain integer, only works on the
    // allocator's own free lists under its locks, and touches no memory
    // that is in use.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(super) fn release_free_memory() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_sees_memory_taken_and_touched() {
        let before = Probe::now();
        let taken = vec![1u8; 16 << 20];
        let growth = before.growth();
        assert!(taken.iter().all(|&b| b == 1));
        // Other tests allocate and free meanwhile: only a lower bound holds.
        assert!(growth >= 8 << 20, "growth {growth}");
    }

    #[test]
    fn touch_moves_the_last_used_time_forward() {
        let usage = Usage::new(10);
        usage.last_used_ms.store(0, Ordering::Relaxed);
        usage.touch();
        let first = usage.last_used_ms();
        assert!(first > 0);
        usage.touch();
        assert!(usage.last_used_ms() >= first);
        assert_eq!(usage.cost(), 10, "the file size until measured");
    }
}
