//! The state one version's scheduler shares with its workers.

use super::queue::{BatchPolicy, Queue};
use crate::metrics::VersionMetrics;
use std::sync::{Arc, Condvar, Mutex};

/// Scheduler settings of one version.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    pub name: String,
    pub policy: BatchPolicy,
    pub max_queue_size: usize,
    pub priority_levels: usize,
    pub instances: usize,
}

/// What the queue lock guards.
pub(super) struct State {
    pub(super) queue: Queue,
    pub(super) closed: bool,
    pub(super) live_workers: usize,
}

/// What the scheduler handle and its workers share.
pub(super) struct Shared {
    pub(super) config: SchedulerConfig,
    pub(super) state: Mutex<State>,
    /// Signalled on every arrival, on close, and when a worker leaves work behind.
    pub(super) work: Condvar,
    pub(super) metrics: Arc<VersionMetrics>,
}

impl Shared {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A worker never panics while holding the lock (runs happen outside
        // it), so poisoning can only come from a bug; keep serving regardless.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
