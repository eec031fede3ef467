//! The state one version's scheduler shares with its workers.

use super::executor::Executor;
use super::inline::Average;
use super::order::Gate;
use super::queue::{BatchPolicy, Queue};
use crate::metrics::VersionMetrics;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// The queue policy of one priority level.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LevelPolicy {
    /// Requests this level may hold; 0: only `max_queue_size` bounds it.
    pub(crate) max_queue_size: usize,
    /// A queue deadline delays the request instead of timing it out.
    pub(crate) delay_on_timeout: bool,
}

/// Scheduler settings of one version.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    pub name: String,
    pub policy: BatchPolicy,
    pub max_queue_size: usize,
    pub priority_levels: usize,
    pub instances: usize,
    /// Per level (index 0 is level 1); a level beyond the list has the default.
    pub levels: Vec<LevelPolicy>,
    /// Answers leave in the order requests were admitted.
    pub preserve_ordering: bool,
    /// A request may run on the thread that received it while the
    /// version's runs average at most this long (see `inline`); zero: never.
    pub inline_run_limit: Duration,
}

impl SchedulerConfig {
    pub(super) fn level(&self, priority: usize) -> LevelPolicy {
        self.levels
            .get(priority.saturating_sub(1))
            .cloned()
            .unwrap_or_default()
    }
}

/// What the queue lock guards.
pub(super) struct State {
    pub(super) queue: Queue,
    pub(super) closed: bool,
    pub(super) live_workers: usize,
    /// Workers blocked on [`Shared::work`], and how many of them have been
    /// signalled and not yet run: see [`State::claim_waiter`].
    pub(super) waiting: usize,
    pub(super) signalled: usize,
}

impl State {
    /// Whether to signal [`Shared::work`] for work just queued: only when
    /// some waiting worker has not been signalled yet. Every signal is a
    /// system call whether or not anyone waits, and on a busy core a
    /// signalled worker may not run until many more requests have arrived;
    /// each of them signalled it again before this count existed (about
    /// one `futex` call per request at saturation). A worker that is not
    /// waiting, or has been signalled, looks at the queue under this lock
    /// before it next waits, so no work is left unseen.
    pub(super) fn claim_waiter(&mut self) -> bool {
        if self.waiting > self.signalled {
            self.signalled += 1;
            true
        } else {
            false
        }
    }

    /// Marks a worker as waiting; undone by [`State::woke`].
    pub(super) fn will_wait(&mut self) {
        self.waiting += 1;
    }

    /// A waiting worker woke, signalled or not (a timeout, or spuriously);
    /// an error here only errs towards an extra signal.
    pub(super) fn woke(&mut self) {
        self.waiting = self.waiting.saturating_sub(1);
        self.signalled = self.signalled.saturating_sub(1);
    }
}

/// What the scheduler handle and its workers share.
pub(super) struct Shared {
    pub(super) config: SchedulerConfig,
    /// Present with `preserve_ordering`.
    pub(super) gate: Option<Arc<Gate>>,
    pub(super) state: Mutex<State>,
    /// Signalled on every arrival, on close, and when a worker leaves work behind.
    pub(super) work: Condvar,
    pub(super) metrics: Arc<VersionMetrics>,
    /// One executor per worker, locked for each run. `None` after a run
    /// panicked until the worker rebuilds it. A submitting thread may borrow
    /// a free one for an inline run.
    pub(super) executors: Vec<Mutex<Option<Box<dyn Executor>>>>,
    /// The inline limit in nanoseconds; 0 when inline runs are off for this
    /// version (see `inline`).
    pub(super) inline_limit_ns: u64,
    /// The moving average of this version's run times.
    pub(super) run_time: Average,
    /// The moving average of the requests in each batch a worker takes.
    pub(super) worker_batch: Average,
}

/// A worker's executor slot, locked.
pub(super) type Slot<'a> = MutexGuard<'a, Option<Box<dyn Executor>>>;

impl Shared {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A worker never panics while holding the lock (runs happen outside
        // it), so poisoning can only come from a bug; keep serving regardless.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Worker `index`'s executor, waiting while an inline run holds it.
    pub(super) fn executor(&self, index: usize) -> Option<Slot<'_>> {
        // Runs are inside `catch_unwind`, so a poisoned slot only means a
        // panic outside a run, which the worker survives as well.
        let slot = self.executors.get(index)?;
        Some(slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// A free, live executor for an inline run, if one is.
    pub(super) fn free_executor(&self) -> Option<Slot<'_>> {
        self.executors
            .iter()
            .filter_map(|slot| slot.try_lock().ok())
            .find(|slot| slot.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiting_worker_is_signalled_once_until_it_wakes() {
        let mut state = State {
            queue: Queue::new(1),
            closed: false,
            live_workers: 2,
            waiting: 0,
            signalled: 0,
        };
        // Nobody waits: no signal.
        assert!(!state.claim_waiter());
        state.will_wait();
        // One signal for the waiting worker, however many arrivals follow
        // before it runs.
        assert!(state.claim_waiter());
        assert!(!state.claim_waiter());
        assert!(!state.claim_waiter());
        // A second waiter gets its own signal.
        state.will_wait();
        assert!(state.claim_waiter());
        assert!(!state.claim_waiter());
        // Both wake; the next wait is signalled again.
        state.woke();
        state.woke();
        assert_eq!((state.waiting, state.signalled), (0, 0));
        state.will_wait();
        assert!(state.claim_waiter());
        // A worker that wakes without a signal (a timeout) errs towards an
        // extra signal, never towards none.
        let mut timed_out = State {
            queue: Queue::new(1),
            closed: false,
            live_workers: 2,
            waiting: 2,
            signalled: 1,
        };
        timed_out.woke();
        assert_eq!((timed_out.waiting, timed_out.signalled), (1, 0));
        assert!(timed_out.claim_waiter());
    }
}
