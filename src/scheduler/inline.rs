//! Running a short request on the thread that received it, when the server
//! was idle and an instance is free.
//!
//! # Why
//! A queued request crosses two threads: the I/O thread queues it and wakes
//! an instance worker, and the worker answers through a channel that wakes
//! the I/O thread again. At low load nothing else is waiting, so those two
//! wake-ups (each a futex or eventfd write and a context switch) are most of
//! the server's own cost per request: on one core, iris at one request in
//! flight spent about 3× the CPU per request it spent saturated
//! (docs/benchmarks.md). Under load the hand-off pays for itself, because
//! requests pile up behind a running batch and share one model run.
//!
//! # The rule
//! [`Scheduler::submit`](super::Scheduler::submit) runs the request itself,
//! as a batch of one, only when all of these hold:
//! - inline runs are on for the version (`Shared::inline_limit_ns` > 0: the
//!   server's `--inline-run-limit-us` is above 0, the version has no
//!   `max_queue_delay`, which asks requests to wait for company, and no
//!   `preserve_ordering`);
//! - the version's recent runs were short: their moving average is at most
//!   the limit, so the I/O thread is never held long (other connections on
//!   that thread wait for it). Until a worker has run the version once, the
//!   average is unknown and nothing runs inline;
//! - the workers' recent batches held about one request each (a moving
//!   average of at most 1.5): requests are not piling up behind runs, so an
//!   inline run takes no company from a batch. Without this, a saturated
//!   server on one core would run the first request after each park alone
//!   and shrink every batch behind it (measured: iris at 64 in flight, 8-10
//!   requests per batch fell to 5-7 and CPU per request rose);
//! - the calling thread went idle (its async runtime parked it) since it last
//!   ran a request inline: the server is not saturated, so no batch would
//!   have formed anyway. A thread kept busy by back-to-back requests queues
//!   them for the workers, which batch them as before;
//! - the queue is empty (nothing older waits) and an instance's executor is
//!   free (`try_lock`), so no request is overtaken and no worker waits.
//!
//! The park signal comes from the runtime: the binary installs
//! [`note_io_thread_idle`] as tokio's `on_thread_park` hook. A runtime
//! without the hook never reports a park, and then nothing runs inline.
//!
//! A run that fails or panics is answered as a worker answers it; after a
//! panic the executor is dropped and its worker rebuilds it before its next
//! batch.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

thread_local! {
    /// Times the runtime parked this thread (wraps).
    static PARKS: Cell<u64> = const { Cell::new(0) };
    /// `PARKS` when this thread last ran a request inline.
    static SEEN: Cell<u64> = const { Cell::new(0) };
}

/// Call from the async runtime's `on_thread_park` hook: the calling thread
/// has nothing to run and is about to wait for I/O or a wake-up.
pub fn note_io_thread_idle() {
    PARKS.with(|parks| parks.set(parks.get().wrapping_add(1)));
}

/// Whether this thread was parked since it last ran a request inline.
pub(super) fn idle_since_last_inline() -> bool {
    PARKS.with(Cell::get) != SEEN.with(Cell::get)
}

/// Records that this thread runs a request inline now.
pub(super) fn mark_inline_run() {
    SEEN.with(|seen| seen.set(PARKS.with(Cell::get)));
}

/// A moving average of a version's batch run times (nanoseconds) or of its
/// workers' batch sizes (requests, in 1/256ths); [`Average::UNKNOWN`] until
/// the first sample.
#[derive(Debug)]
pub(super) struct Average(AtomicU64);

impl Average {
    const UNKNOWN: u64 = u64::MAX;
    /// Fixed-point scale of batch sizes.
    const ONE_REQUEST: u64 = 256;

    pub(super) fn new() -> Self {
        Self(AtomicU64::new(Self::UNKNOWN))
    }

    /// Folds in one sample: an exponential average with weight 1/8, so one
    /// outlier (a page fault, a preemption) moves it little, and a change
    /// that lasts (a model that became slow, a load that rose) shows within
    /// a few batches.
    fn note(&self, sample: u64) {
        let sample = sample.min(Self::UNKNOWN - 1);
        let old = self.0.load(Ordering::Relaxed);
        let new = if old == Self::UNKNOWN {
            sample
        } else {
            old - old / 8 + sample / 8
        };
        // Racing updates from several threads may lose a sample; the
        // average stays an average.
        self.0.store(new, Ordering::Relaxed);
    }

    pub(super) fn note_run(&self, took: Duration) {
        self.note(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
    }

    pub(super) fn note_batch(&self, requests: usize) {
        let requests = u64::try_from(requests).unwrap_or(u64::MAX);
        self.note(requests.saturating_mul(Self::ONE_REQUEST));
    }

    /// Whether the average is known and at most `limit` (in the unit noted).
    pub(super) fn at_most(&self, limit: u64) -> bool {
        self.0.load(Ordering::Relaxed) <= limit
    }

    /// Whether the workers' batches held about one request each: requests
    /// did not pile up behind runs, so running one inline takes no company
    /// from a batch. Unknown (no worker batch yet) counts as one.
    pub(super) fn alone(&self) -> bool {
        let average = self.0.load(Ordering::Relaxed);
        average == Self::UNKNOWN || average <= Self::ONE_REQUEST * 3 / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_average_is_unknown_until_the_first_run_and_follows_the_runs() {
        let average = Average::new();
        assert!(!average.at_most(u64::MAX - 1));
        average.note_run(Duration::from_micros(10));
        assert!(average.at_most(10_000));
        assert!(!average.at_most(9_999));
        // One slow run moves it by an eighth of the difference.
        average.note_run(Duration::from_micros(810));
        assert!(average.at_most(110_000) && !average.at_most(109_999));
        // A model that became slow leaves the limit within a few runs.
        for _ in 0..20 {
            average.note_run(Duration::from_millis(1));
        }
        assert!(!average.at_most(500_000));
    }

    #[test]
    fn batches_of_several_requests_stop_inline_runs_until_they_shrink_again() {
        let batches = Average::new();
        assert!(batches.alone(), "no batch seen yet");
        batches.note_batch(1);
        assert!(batches.alone());
        for _ in 0..3 {
            batches.note_batch(8);
        }
        assert!(!batches.alone(), "requests pile up behind runs");
        for _ in 0..30 {
            batches.note_batch(1);
        }
        assert!(batches.alone(), "load fell back");
    }

    #[test]
    fn a_park_re_arms_the_thread_once() {
        std::thread::spawn(|| {
            assert!(!idle_since_last_inline(), "no park seen yet");
            note_io_thread_idle();
            assert!(idle_since_last_inline());
            mark_inline_run();
            assert!(!idle_since_last_inline(), "one park allows one inline run");
            note_io_thread_idle();
            note_io_thread_idle();
            assert!(idle_since_last_inline());
        })
        .join()
        .unwrap();
    }
}
