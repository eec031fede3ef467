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
//!   ([`order`]); answers held back count against `max_queue_size`.
//! - **Bad input never harms another request.** A failed run of several
//!   requests is run again one request at a time, so only the requests that
//!   fail on their own get 500 (with why). A panic is caught, answers its
//!   batch 500, and the worker rebuilds its executor; if it cannot, it exits,
//!   and when the last worker exits every queued request is answered 503.
//!
//! # Threads
//! Workers are spawned by [`Scheduler::start`] and stop when the scheduler is
//! closed and its queue is drained ([`Scheduler::close`], or drop). Dropping
//! the scheduler joins them, which frees their sessions.

mod order;
mod queue;
mod worker;

pub use queue::BatchPolicy;

use crate::error::{Error, Result};
use crate::metrics::VersionMetrics;
use crate::runtime::{BatchInput, RunOutput};
use crate::tensor::{DataType, Tensor};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Runs one assembled batch. Implemented by ONNX Runtime sessions
/// ([`crate::runtime::Instance`]) and by test doubles of the scheduler.
pub trait Executor: Send {
    fn run(
        &mut self,
        inputs: &[BatchInput<'_>],
        wanted: &[usize],
    ) -> Result<Vec<RunOutput>, String>;
}

impl Executor for crate::runtime::Instance {
    fn run(
        &mut self,
        inputs: &[BatchInput<'_>],
        wanted: &[usize],
    ) -> Result<Vec<RunOutput>, String> {
        crate::runtime::Instance::run(self, inputs, wanted)
    }
}

/// Builds a fresh executor for worker `i` (after a panic), e.g. on that
/// worker's GPU.
pub type ExecutorFactory = Arc<dyn Fn(usize) -> Result<Box<dyn Executor>, String> + Send + Sync>;

/// What makes two requests batchable together.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BatchKey {
    /// Per input: dtype and the dims after the first.
    pub inputs: Vec<(DataType, Vec<usize>)>,
    /// Requested output indices.
    pub outputs: Vec<usize>,
}

/// A validated request, ready to queue.
#[derive(Debug)]
pub struct Job {
    /// In the graph's input order.
    pub inputs: Vec<Tensor>,
    /// Indices of the graph outputs to return, in the caller's order.
    pub outputs: Vec<usize>,
    /// Rows along dim 0 (1 when the model does not batch).
    pub rows: usize,
    pub key: Arc<BatchKey>,
    /// Priority level, 1 is the highest.
    pub priority: usize,
    pub deadline: Option<Instant>,
}

/// The answer to one job.
#[derive(Debug)]
pub struct Completion {
    /// The job's own rows of each requested output.
    pub outputs: Vec<RunOutput>,
    pub queue_time: Duration,
    pub compute_time: Duration,
    /// Rows of the batch the job ran in.
    pub batch_rows: usize,
}

type Reply = Result<Completion>;

/// Shared between a queued entry and its waiter; whoever moves it out of
/// `QUEUED` first decides whether the job runs or times out.
#[derive(Debug)]
pub(crate) struct Ticket {
    state: AtomicU8,
}

impl Ticket {
    const QUEUED: u8 = 0;
    const RUNNING: u8 = 1;
    const CANCELLED: u8 = 2;

    fn new() -> Self {
        Self {
            state: AtomicU8::new(Self::QUEUED),
        }
    }

    /// QUEUED -> RUNNING; false if the waiter cancelled first.
    fn start(&self) -> bool {
        self.state
            .compare_exchange(
                Self::QUEUED,
                Self::RUNNING,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }

    /// QUEUED -> CANCELLED; true if the job will now never run.
    fn cancel(&self) -> bool {
        match self.state.compare_exchange(
            Self::QUEUED,
            Self::CANCELLED,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => true,
            Err(state) => state == Self::CANCELLED,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Entry {
    job: Job,
    ticket: Arc<Ticket>,
    reply: oneshot::Sender<Reply>,
    enqueued: Instant,
    /// When a delayed level's request moves behind the others (its deadline,
    /// which then never times it out).
    demote_at: Option<Instant>,
    /// Its place in the answer order, with `preserve_ordering`.
    order: Option<order::Slot>,
}

impl Entry {
    /// Answers the caller (in admission order, with `preserve_ordering`).
    fn respond(self, reply: Reply) {
        let Entry {
            reply: tx, order, ..
        } = self;
        match order {
            Some(slot) => slot.deliver(tx, reply),
            None => {
                let _ = tx.send(reply);
            }
        }
    }
}

/// The queue policy of one priority level.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LevelPolicy {
    /// Requests this level may hold; 0: only `max_queue_size` bounds it.
    pub max_queue_size: usize,
    /// A queue deadline delays the request instead of timing it out.
    pub delay_on_timeout: bool,
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
}

impl SchedulerConfig {
    fn level(&self, priority: usize) -> LevelPolicy {
        self.levels
            .get(priority.saturating_sub(1))
            .cloned()
            .unwrap_or_default()
    }
}

struct State {
    queue: queue::Queue,
    closed: bool,
    live_workers: usize,
}

struct Shared {
    config: SchedulerConfig,
    /// Present with `preserve_ordering`.
    gate: Option<Arc<order::Gate>>,
    state: Mutex<State>,
    /// Signalled on every arrival, on close, and when a worker leaves work behind.
    work: Condvar,
    metrics: Arc<VersionMetrics>,
    busy: AtomicUsize,
}

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
        let shared = Arc::new(Shared {
            gate: config
                .preserve_ordering
                .then(|| Arc::new(order::Gate::default())),
            state: Mutex::new(State {
                queue: queue::Queue::new(config.priority_levels),
                closed: false,
                live_workers: executors.len(),
            }),
            config,
            work: Condvar::new(),
            metrics,
            busy: AtomicUsize::new(0),
        });
        let mut workers = Vec::with_capacity(executors.len());
        for (i, executor) in executors.into_iter().enumerate() {
            let shared = shared.clone();
            let factory = factory.clone();
            let name = format!("sluice-{}-{i}", shared.config.name);
            let handle = std::thread::Builder::new()
                .name(name.chars().take(15).collect())
                .spawn(move || worker::run(shared, i, executor, factory))
                .map_err(|e| format!("cannot spawn a worker thread: {e}"))?;
            workers.push(handle);
        }
        Ok(Self { shared, workers })
    }

    /// Queues `job`, or refuses it at once when the queue is full or closed.
    /// A closed scheduler hands the job back, so the caller can take it to
    /// the version that replaced this one.
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
            entry.order = self.shared.gate.as_ref().map(|g| g.issue());
            state.queue.push(entry);
            self.shared.metrics.pending.set(state.queue.len() as i64);
        }
        self.shared.work.notify_one();
        Ok(Pending {
            rx,
            ticket,
            deadline,
        })
    }

    /// Whether a request would be queued now, checked before its body is
    /// read so a full queue refuses at once (`submit` checks again).
    pub fn check_room(&self) -> Result<(), Error> {
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
    pub fn queue_depth(&self) -> usize {
        self.shared.lock().queue.len()
    }

    /// Stops admitting; workers finish what is queued, then exit.
    pub fn close(&self) {
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

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A worker never panics while holding the lock (runs happen outside
        // it), so poisoning can only come from a bug; keep serving regardless.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Why [`Scheduler::submit`] refused a job.
#[derive(Debug)]
pub struct Rejected {
    pub error: Error,
    /// The job, when the scheduler was closed (its version is being replaced).
    pub job: Option<Box<Job>>,
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
mod tests_policy;
