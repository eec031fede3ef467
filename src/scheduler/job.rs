//! What the scheduler moves around: a validated job, its queued entry, the
//! ticket its waiter and its worker race on, and its answer.

use crate::error::Result;
use crate::tensor::{DataType, RunOutput, Tensor};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

/// What makes two requests batchable together.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BatchKey {
    /// Per input: dtype and the dims after the first.
    pub inputs: Vec<(DataType, Vec<usize>)>,
    /// Requested output indices.
    pub outputs: Vec<usize>,
    /// Signature indices of the optional inputs left out (the job's
    /// `inputs` hold only those given).
    pub omitted: Vec<usize>,
}

/// A validated request, ready to queue.
#[derive(Debug)]
pub struct Job {
    /// In the signature's input order, without optional inputs left out
    /// (see [`BatchKey::omitted`]).
    pub inputs: Vec<Tensor>,
    /// Indices of the graph outputs to return, in the caller's order.
    pub outputs: Vec<usize>,
    /// Rows along dim 0 (1 when the model does not batch).
    pub rows: usize,
    pub key: Arc<BatchKey>,
    /// Priority level, 1 is the highest.
    pub priority: usize,
    pub deadline: Option<Instant>,
    /// The request's queue-wait span (`Span::none()` when tracing is off);
    /// the worker that takes the job closes it.
    pub trace: tracing::Span,
}

/// The answer to one job.
#[derive(Debug)]
pub struct Completion {
    /// The job's own rows of each requested output.
    pub(crate) outputs: Vec<RunOutput>,
    pub(crate) queue_time: Duration,
    pub(crate) compute_time: Duration,
    /// Rows of the batch the job ran in.
    pub(crate) batch_rows: usize,
    /// The batch's phases: assembly, the run, and copy-out with the split.
    pub(crate) phases: Phases,
    /// The batch's span, for the request to link to.
    pub(crate) batch_span: crate::telemetry::SpanLink,
}

/// How long a finished request waited and ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub queue: Duration,
    /// The whole batch run the request took part in.
    pub compute: Duration,
    pub phases: Phases,
}

/// How one batch's compute time divides, as Triton's statistics report it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Phases {
    /// Assembling the requests' inputs into the run's tensors.
    pub input: Duration,
    /// The model run.
    pub infer: Duration,
    /// Copying the outputs out and splitting them per request.
    pub output: Duration,
}

pub(crate) type Reply = Result<Completion>;

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

    pub(super) fn new() -> Self {
        Self {
            state: AtomicU8::new(Self::QUEUED),
        }
    }

    /// QUEUED -> RUNNING; false if the waiter cancelled first.
    pub(super) fn start(&self) -> bool {
        self.state
            .compare_exchange(
                Self::QUEUED,
                Self::RUNNING,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }

    pub(super) fn is_cancelled(&self) -> bool {
        self.state.load(std::sync::atomic::Ordering::Acquire) == Self::CANCELLED
    }

    /// QUEUED -> CANCELLED; true if the job will now never run.
    pub(super) fn cancel(&self) -> bool {
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
