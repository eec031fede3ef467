//! An instance worker: an OS thread that owns one executor (session), takes
//! batches from its version's queue, runs them, and answers every caller.

use super::entry::Entry;
use super::executor::{Executor, ExecutorFactory};
use super::job::{Completion, Phases};
use super::queue::Decision;
use super::shared::Shared;
use super::shared::Slot;
use crate::error::Error;
use crate::runtime::BatchInput;
use crate::telemetry;
use crate::tensor::RunOutput;
use crate::tensor::{TensorData, element_count};
use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use std::time::Instant;

pub(super) fn run(shared: Arc<Shared>, index: usize, factory: ExecutorFactory) {
    super::policy::no_wakeup_preemption();
    while let Some(batch) = next_batch(&shared) {
        // Claim every entry; one whose waiter timed out first is dropped unrun.
        let batch: Vec<Entry> = batch.into_iter().filter(|e| e.ticket.start()).collect();
        if batch.is_empty() {
            continue;
        }
        shared.worker_batch.note_batch(batch.len());
        // Bad input must never harm another request. A run that fails for a
        // batch of several requests may have failed because of one of them
        // (an index out of range, a value the model rejects), and every other
        // request of the batch would get its 500. So a failed batch of several
        // is run again one request at a time: only the requests that fail on
        // their own get the error. (Panics are not retried: the executor is
        // suspect and rebuilding it costs a session load.)
        let mut runs: VecDeque<Vec<Entry>> = VecDeque::from([batch]);
        while let Some(batch) = runs.pop_front() {
            let Some(mut slot) = shared.executor(index) else {
                fail_all(batch, &Error::internal("the worker has no executor"));
                break;
            };
            // The executor is gone after a panic in an inline run.
            if let Err(error) = rebuild_if_gone(&shared, &mut slot, &factory, index) {
                drop(slot);
                fail_all(batch, &error);
                return exit(&shared, runs, &error);
            }
            let ran = match slot.as_mut() {
                Some(executor) => run_batch(&shared, executor.as_mut(), batch),
                None => Ran::Failed(batch, "the worker has no executor".into()),
            };
            if matches!(ran, Ran::Panicked(..)) {
                *slot = None;
            }
            // Answer with the executor free again, so the caller's next
            // request finds it free for an inline run.
            drop(slot);
            match ran {
                Ran::Done(answers) => answers.send(),
                Ran::Failed(batch, message) if batch.len() > 1 => {
                    tracing::warn!(model = %shared.config.name, requests = batch.len(), error = %message, "batch failed; running its requests one at a time");
                    // A caller that went away meanwhile needs no solo run.
                    runs.extend(
                        batch
                            .into_iter()
                            .filter(|entry| !entry.reply.is_closed())
                            .map(|entry| vec![entry]),
                    );
                }
                Ran::Failed(batch, message) => {
                    tracing::warn!(model = %shared.config.name, rows = batch[0].job.rows, error = %message, "request failed");
                    fail_all(batch, &Error::Internal(message));
                }
                Ran::Panicked(batch, error) => {
                    fail_all(batch, &error);
                    // Rebuilt now rather than before the next batch, which
                    // would then wait for a session load.
                    let rebuilt = match shared.executor(index) {
                        Some(mut slot) => rebuild_if_gone(&shared, &mut slot, &factory, index),
                        None => Ok(()),
                    };
                    if let Err(error) = rebuilt {
                        return exit(&shared, runs, &error);
                    }
                }
            }
        }
    }
    leave(&shared);
}

/// A worker that cannot rebuild its executor answers what it still holds
/// (requests of a failed batch waiting for their solo run), and leaves.
fn exit(shared: &Shared, runs: VecDeque<Vec<Entry>>, error: &Error) {
    for batch in runs {
        fail_all(batch, error);
    }
    leave(shared);
}

/// Builds a fresh executor into an empty slot; the error is what the worker
/// answers when that fails and it must exit.
fn rebuild_if_gone(
    shared: &Shared,
    slot: &mut Slot<'_>,
    factory: &ExecutorFactory,
    index: usize,
) -> Result<(), Error> {
    if slot.is_some() {
        return Ok(());
    }
    match factory(index) {
        Ok(fresh) => {
            **slot = Some(fresh);
            Ok(())
        }
        Err(e) => {
            tracing::error!(model = %shared.config.name, error = %e, "cannot rebuild the worker's session; worker exits");
            Err(Error::Internal(format!(
                "the model's worker failed and could not be rebuilt: {e}"
            )))
        }
    }
}

/// Runs one admitted request on the calling thread with an executor that
/// was free (see `inline`), and answers it as a worker would.
pub(super) fn run_inline(shared: &Shared, mut slot: Slot<'_>, entry: Entry) {
    // Nobody else has seen the entry, so its ticket is still queued.
    entry.ticket.start();
    shared.metrics.record_inline_execution();
    let ran = match slot.as_mut() {
        Some(executor) => run_batch(shared, executor.as_mut(), vec![entry]),
        // `free_executor` hands out live executors only.
        None => Ran::Failed(vec![entry], "the inline executor was gone".into()),
    };
    if matches!(ran, Ran::Panicked(..)) {
        // The slot's worker rebuilds it before its next batch.
        *slot = None;
    }
    drop(slot);
    match ran {
        Ran::Done(answers) => answers.send(),
        Ran::Failed(batch, message) => {
            tracing::warn!(model = %shared.config.name, error = %message, "request failed");
            fail_all(batch, &Error::Internal(message));
        }
        Ran::Panicked(batch, error) => fail_all(batch, &error),
    }
}

/// How one run of a batch ended. Nobody has been answered yet: callers are
/// answered once the executor is unlocked.
enum Ran {
    /// The answers, ready to send.
    Done(Answers),
    /// The run returned an error.
    Failed(Vec<Entry>, String),
    /// The run panicked: the executor must be replaced, and these callers
    /// get this error.
    Panicked(Vec<Entry>, Error),
}

/// Each caller of a batch that ran, with its answer.
struct Answers(Vec<(Entry, Completion)>);

impl Answers {
    fn send(self) {
        for (entry, completion) in self.0 {
            entry.respond(Ok(completion));
        }
    }
}

/// Runs one batch and says how it went; answers nobody.
fn run_batch(shared: &Shared, executor: &mut dyn Executor, mut batch: Vec<Entry>) -> Ran {
    let started = Instant::now();
    let rows: usize = batch.iter().map(|e| e.job.rows).sum();
    // The batch's span links to each request's queue span; taking the job
    // ends that wait.
    let batch_span = telemetry::batch_span(
        &shared.config.name,
        rows,
        batch.iter().map(|e| &e.job.trace),
    );
    for entry in &mut batch {
        entry.job.trace = tracing::Span::none();
    }
    let link = telemetry::span_link(&batch_span.span);
    let result = batch_span
        .span
        .in_scope(|| catch_unwind(AssertUnwindSafe(|| execute(shared, executor, &batch))));
    let compute_time = started.elapsed();
    shared.run_time.note_run(compute_time);
    match result {
        Ok(Ok((per_job, phases))) => {
            shared.metrics.record_execution(rows, compute_time, phases);
            let answers = batch
                .into_iter()
                .zip(per_job)
                .map(|(entry, outputs)| {
                    let completion = Completion {
                        outputs,
                        queue_time: started.saturating_duration_since(entry.enqueued),
                        compute_time,
                        batch_rows: rows,
                        phases,
                        batch_span: link.clone(),
                    };
                    (entry, completion)
                })
                .collect();
            Ran::Done(Answers(answers))
        }
        Ok(Err(message)) => Ran::Failed(batch, message),
        Err(panic) => {
            let what = panic_message(panic.as_ref());
            tracing::error!(model = %shared.config.name, panic = %what, "instance worker panicked; replacing its session");
            let error = Error::Internal(format!("the model's worker panicked: {what}"));
            Ran::Panicked(batch, error)
        }
    }
}

/// Waits for the next batch; `None` once the scheduler is closed and drained.
fn next_batch(shared: &Shared) -> Option<Vec<Entry>> {
    let mut state = shared.lock();
    loop {
        let now = Instant::now();
        let closed = state.closed;
        let decision = state.queue.next_batch(&shared.config.policy, now, closed);
        shared.metrics.pending.set(state.queue.len() as i64);
        match decision {
            Decision::Run(batch) => {
                if !state.queue.is_empty() && state.claim_waiter() {
                    shared.work.notify_one();
                }
                return Some(batch);
            }
            Decision::WaitUntil(at) => {
                let timeout = at.saturating_duration_since(now);
                state.will_wait();
                state = shared
                    .work
                    .wait_timeout(state, timeout)
                    .map(|(guard, _)| guard)
                    .unwrap_or_else(|poisoned| poisoned.into_inner().0);
                state.woke();
            }
            Decision::Idle if closed => return None,
            Decision::Idle => {
                state.will_wait();
                state = shared
                    .work
                    .wait(state)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                state.woke();
            }
        }
    }
}

/// The last worker to leave answers whatever is still queued.
fn leave(shared: &Shared) {
    let orphans = {
        let mut state = shared.lock();
        state.live_workers -= 1;
        if state.live_workers > 0 {
            return;
        }
        state.closed = true;
        state.queue.drain()
    };
    shared.metrics.pending.set(0);
    let error = Error::Unavailable(format!(
        "model '{}' has no running instance",
        shared.config.name
    ));
    fail_all(orphans, &error);
}

fn fail_all(batch: Vec<Entry>, error: &Error) {
    for entry in batch {
        entry.respond(Err(error.clone()));
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

/// Concatenates the batch's inputs, runs them, and splits the outputs so each
/// job gets exactly its own rows; also says how long each phase took.
fn execute(
    shared: &Shared,
    executor: &mut dyn Executor,
    batch: &[Entry],
) -> Result<(Vec<Vec<RunOutput>>, Phases), String> {
    let first = &batch.first().ok_or("empty batch")?.job;
    let batching = shared.config.policy.max_batch_size > 0;
    let total_rows: usize = batch.iter().map(|e| e.job.rows).sum();
    let inputs: Vec<BatchInput<'_>> = first
        .inputs
        .iter()
        .enumerate()
        .map(|(i, head)| {
            let mut shape = head.shape.clone();
            if batching {
                if let Some(d0) = shape.first_mut() {
                    *d0 = total_rows;
                }
            }
            BatchInput {
                name: &head.name,
                datatype: head.datatype,
                shape,
                parts: batch.iter().map(|e| &e.job.inputs[i].data).collect(),
            }
        })
        .collect();
    let (outputs, times) = executor.run_timed(&inputs, &first.outputs)?;
    let mut phases = Phases {
        input: times.assemble,
        infer: times.run,
        output: times.extract,
    };
    if batch.len() == 1 {
        return Ok((vec![outputs], phases));
    }
    let splitting = Instant::now();
    let _split = telemetry::phase_span(telemetry::Phase::ComputeOutput).entered();
    let mut per_job: Vec<Vec<RunOutput>> = batch
        .iter()
        .map(|_| Vec::with_capacity(outputs.len()))
        .collect();
    for output in outputs {
        let rows_out = output.shape.first().copied().unwrap_or(0);
        if rows_out != total_rows {
            return Err(format!(
                "an output has {rows_out} rows for a batch of {total_rows}; the model does not keep rows independent"
            ));
        }
        let per_row = element_count(&output.shape[1..]).ok_or("output shape overflows")?;
        let mut row = 0usize;
        for (entry, slot) in batch.iter().zip(per_job.iter_mut()) {
            let rows = entry.job.rows;
            let (start, end) = (row * per_row, (row + rows) * per_row);
            let data = match &output.data {
                TensorData::Fixed(bytes) => {
                    let size = output.datatype.size().unwrap_or(1);
                    TensorData::Fixed(bytes.slice(start * size..end * size))
                }
                TensorData::Bytes(elements) => TensorData::Bytes(elements[start..end].to_vec()),
            };
            let mut shape = output.shape.clone();
            shape[0] = rows;
            slot.push(RunOutput {
                datatype: output.datatype,
                shape,
                data,
            });
            row += rows;
        }
    }
    phases.output += splitting.elapsed();
    Ok((per_job, phases))
}
