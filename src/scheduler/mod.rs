//! The scheduler of one model version: a bounded queue, a batcher, and N
//! instance workers, each an OS thread that owns one session.
//!
//! # Rules
//! - **Admission** is decided at once under the queue lock: a full queue
//!   answers [`Error::Overloaded`] (503 + `Retry-After`), a closed one
//!   [`Error::Unavailable`]. Memory is bounded by `max_queue_size` requests.
//! - **Greedy batching.** An idle worker takes the oldest request of the highest
//!   priority level plus every *compatible* request behind it (same dtypes and
//!   non-batch dims for every input, same requested outputs), up to
//!   `max_batch_size` rows. It never waits at low load unless
//!   `max_queue_delay` is set, and then only while the batch is below
//!   `max_batch_size` and is not one of `preferred_batch_sizes`.
//!   Incompatible requests head later batches, so none starves.
//! - **Each caller gets exactly its own rows**: inputs are concatenated along
//!   dim 0 in batch order and outputs are split by the same row counts.
//! - **Deadlines.** A request whose deadline passes while queued is answered
//!   with a timeout by its waiter and is never run: waiter and worker race on
//!   one atomic [`Ticket`], and only one of them wins. A request whose caller
//!   went away (its reply channel closed) is dropped before it runs. On a
//!   level whose policy delays instead ([`LevelPolicy::delay_on_timeout`]),
//!   the deadline moves the request behind every request of its own level
//!   that has not timed out (and ahead of lower levels); it is never answered
//!   with a timeout by the queue.
//! - **Bounds.** `max_queue_size` bounds the whole queue; a level may also
//!   have its own bound ([`LevelPolicy::max_queue_size`]).
//! - **Ordering.** With `preserve_ordering`, answers leave in admission order
//!   (`order`); answers held back count against `max_queue_size`.
//! - **Bad input never harms another request.** A failed run of several
//!   requests is run again one request at a time, so only the requests that
//!   fail on their own get 500 (with why). A panic is caught, answers its
//!   batch 500, and the worker rebuilds its executor; if it cannot, it exits,
//!   and when the last worker exits every queued request is answered 503.
//!
//! - **Inline runs.** A short request on an idle server runs on the thread
//!   that submits it, with a free instance's executor, as a batch of one;
//!   the conditions (nothing queued, the thread idle since its last inline
//!   run, one-request batches lately, short runs) are in `inline`.
//!
//! # Threads
//! Workers are spawned by [`Scheduler::start`] and stop when the scheduler is
//! closed and its queue is drained ([`Scheduler::close`], or drop). Each
//! worker's executor sits in a slot of the shared state, locked for each run
//! and free while the worker waits, so an inline run can borrow it. Callers
//! are answered after the slot is unlocked. Dropping the scheduler joins the
//! workers; the sessions are freed with the shared state.

mod entry;
mod executor;
mod inline;
pub(crate) mod job;
mod order;
mod policy;
mod queue;
mod shared;
mod worker;

pub use executor::{Executor, ExecutorFactory};
pub use inline::note_io_thread_idle;
pub use job::{BatchKey, Completion, Job, Phases, Timing};
pub use policy::{no_wakeup_preemption, only_one_cpu};
pub use queue::BatchPolicy;
pub use shared::{LevelPolicy, SchedulerConfig};

use crate::error::{Error, Result};
use crate::metrics::VersionMetrics;
use entry::Entry;
use job::{Reply, Ticket};
use queue::Queue;
use shared::{Shared, State};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Handle to one version's queue and workers.
pub struct Scheduler {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("name", &self.shared.config.name)
            .finish_non_exhaustive()
    }
}

impl Scheduler {
    /// Starts `executors.len()` workers, one per executor (sessions are built
    /// by the caller, one at a time, before the version is published).
    pub fn start(
        config: SchedulerConfig,
        executors: Vec<Box<dyn Executor>>,
        factory: ExecutorFactory,
        metrics: Arc<VersionMetrics>,
    ) -> Result<Self, String> {
        // Inline runs would skip the wait `max_queue_delay` asks for, and
        // answer before requests admitted earlier with `preserve_ordering`.
        let inline_limit_ns =
            if config.policy.max_queue_delay.is_zero() && !config.preserve_ordering {
                u64::try_from(config.inline_run_limit.as_nanos()).unwrap_or(u64::MAX)
            } else {
                0
            };
        let count = executors.len();
        let shared = Arc::new(Shared {
            gate: config
                .preserve_ordering
                .then(|| Arc::new(order::Gate::default())),
            state: Mutex::new(State {
                queue: Queue::new(config.priority_levels),
                closed: false,
                live_workers: count,
                waiting: 0,
                signalled: 0,
            }),
            config,
            work: Condvar::new(),
            metrics,
            executors: executors.into_iter().map(|e| Mutex::new(Some(e))).collect(),
            inline_limit_ns,
            run_time: inline::Average::new(),
            worker_batch: inline::Average::new(),
        });
        let mut workers = Vec::with_capacity(count);
        for i in 0..count {
            let shared = shared.clone();
            let factory = factory.clone();
            let name = format!("sluice-{}-{i}", shared.config.name);
            let handle = std::thread::Builder::new()
                .name(name.chars().take(15).collect())
                .spawn(move || worker::run(shared, i, factory))
                .map_err(|e| format!("cannot spawn a worker thread: {e}"))?;
            workers.push(handle);
        }
        Ok(Self { shared, workers })
    }

    /// Queues `job`, or refuses it at once when the queue is full or closed.
    /// A closed scheduler hands the job back, so the caller can take it to
    /// the version that replaced this one. A short job on an idle server runs
    /// here instead, before this returns (see `inline`).
    pub fn submit(&self, mut job: Job) -> Result<Pending, Box<Rejected>> {
        let (reply, rx) = oneshot::channel();
        let ticket = Arc::new(Ticket::new());
        let level = self.shared.config.level(job.priority);
        // A delayed level's deadline only reorders the queue; the waiter
        // then waits for the answer however long it takes.
        let demote_at = if level.delay_on_timeout {
            job.deadline.take()
        } else {
            None
        };
        let deadline = job.deadline;
        let wake;
        let mut entry = Entry {
            job,
            ticket: ticket.clone(),
            reply,
            enqueued: Instant::now(),
            demote_at,
            order: None,
        };
        {
            let mut state = self.shared.lock();
            if state.closed || state.live_workers == 0 {
                return Err(Box::new(Rejected {
                    error: Error::Unavailable(format!(
                        "model '{}' is not accepting requests (unloaded or failed)",
                        self.shared.config.name
                    )),
                    job: Some(Box::new(entry.job)),
                }));
            }
            if let Err(error) = self.room(&mut state, entry.enqueued) {
                return Err(Box::new(Rejected { error, job: None }));
            }
            if let Err(error) = self.level_room(&mut state, entry.enqueued, entry.job.priority) {
                return Err(Box::new(Rejected { error, job: None }));
            }
            if let Some(slot) = self.inline_executor(&state) {
                drop(state);
                worker::run_inline(&self.shared, slot, entry);
                return Ok(Pending {
                    rx,
                    ticket,
                    deadline,
                });
            }
            entry.order = self.shared.gate.as_ref().map(|g| g.issue());
            state.queue.push(entry);
            self.shared.metrics.pending.set(state.queue.len() as i64);
            wake = state.claim_waiter();
        }
        if wake {
            self.shared.work.notify_one();
        }
        Ok(Pending {
            rx,
            ticket,
            deadline,
        })
    }

    /// A free executor, when this request may run on the calling thread
    /// (the rule is in `inline`); called under the queue lock, so nothing is
    /// queued ahead of it meanwhile.
    fn inline_executor<'a>(&'a self, state: &State) -> Option<shared::Slot<'a>> {
        let limit = self.shared.inline_limit_ns;
        if limit == 0
            || !state.queue.is_empty()
            || !self.shared.run_time.at_most(limit)
            || !self.shared.worker_batch.alone()
            || !inline::idle_since_last_inline()
        {
            return None;
        }
        let slot = self.shared.free_executor()?;
        inline::mark_inline_run();
        Some(slot)
    }

    /// Whether a request would be queued now, checked before its body is
    /// read so a full queue refuses at once (`submit` checks again).
    pub(crate) fn check_room(&self) -> Result<(), Error> {
        let mut state = self.shared.lock();
        self.room(&mut state, Instant::now())
    }

    /// Room in the queue, after purging entries whose waiters gave up; the
    /// pending gauge follows the purge.
    fn room(&self, state: &mut State, now: Instant) -> Result<(), Error> {
        let max = self.shared.config.max_queue_size;
        let held = self.shared.gate.as_ref().map_or(0, |g| g.held());
        if state.queue.len() + held >= max {
            state.queue.purge(now);
            self.shared.metrics.pending.set(state.queue.len() as i64);
        }
        if state.queue.len() + held >= max {
            return Err(Error::Overloaded {
                message: format!(
                    "model '{}' queue is full ({} requests queued); retry later",
                    self.shared.config.name,
                    state.queue.len()
                ),
                retry_after: Duration::from_secs(1),
            });
        }
        Ok(())
    }

    /// Room on one priority level, when its policy bounds it.
    fn level_room(&self, state: &mut State, now: Instant, priority: usize) -> Result<(), Error> {
        let max = self.shared.config.level(priority).max_queue_size;
        if max == 0 {
            return Ok(());
        }
        if state.queue.level_len(priority) >= max {
            state.queue.purge(now);
            self.shared.metrics.pending.set(state.queue.len() as i64);
        }
        let queued = state.queue.level_len(priority);
        if queued >= max {
            return Err(Error::Overloaded {
                message: format!(
                    "model '{}' queue for priority level {priority} is full ({queued} requests queued); retry later",
                    self.shared.config.name
                ),
                retry_after: Duration::from_secs(1),
            });
        }
        Ok(())
    }

    /// Requests queued now.
    pub(crate) fn queue_depth(&self) -> usize {
        self.shared.lock().queue.len()
    }

    /// Stops admitting; workers finish what is queued, then exit.
    pub(crate) fn close(&self) {
        self.shared.lock().closed = true;
        self.shared.work.notify_all();
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.close();
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

/// Why [`Scheduler::submit`] refused a job.
#[derive(Debug)]
pub struct Rejected {
    pub(crate) error: Error,
    /// The job, when the scheduler was closed (its version is being replaced).
    pub(crate) job: Option<Box<Job>>,
}

/// A queued job's future answer.
#[derive(Debug)]
pub struct Pending {
    rx: oneshot::Receiver<Reply>,
    ticket: Arc<Ticket>,
    deadline: Option<Instant>,
}

impl Pending {
    /// Waits for the answer. At the deadline, a job still queued is cancelled
    /// and answered with a timeout; one already running is awaited.
    pub async fn wait(mut self) -> Result<Completion> {
        if let Some(deadline) = self.deadline {
            let deadline = tokio::time::Instant::from_std(deadline);
            match tokio::time::timeout_at(deadline, &mut self.rx).await {
                Ok(reply) => return self.settle(reply),
                Err(_elapsed) => {
                    if self.ticket.cancel() {
                        return Err(timeout_error());
                    }
                }
            }
        }
        let reply = (&mut self.rx).await;
        self.settle(reply)
    }

    fn settle(&self, reply: Result<Reply, oneshot::error::RecvError>) -> Result<Completion> {
        match reply {
            Ok(reply) => reply,
            Err(_) if self.ticket.is_cancelled() => Err(timeout_error()),
            Err(_) => Err(Error::internal("the request was dropped by its worker")),
        }
    }
}

fn timeout_error() -> Error {
    Error::DeadlineExceeded("request timed out in the queue before it could run".into())
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_inline;
#[cfg(test)]
mod tests_policy;
