//! Inline runs (see `inline`): which requests run on the submitting thread,
//! and that they are answered exactly as a worker answers them. The park
//! hook is called by hand; no sleeps.

use super::tests::{config, ids_of, job};
use super::*;
use crate::metrics::Metrics;
use crate::runtime::BatchInput;
use crate::tensor::{DataType, RunOutput, TensorData};
use bytes::Bytes;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::ThreadId;

/// Identity on one FP32 input; reports each run's thread and ids, then
/// waits while the test holds `hold`. Id 666 panics; negative ids fail the run.
struct Echo {
    runs: mpsc::Sender<(ThreadId, Vec<f32>)>,
    hold: Arc<Mutex<()>>,
}

impl Executor for Echo {
    fn run(
        &mut self,
        inputs: &[BatchInput<'_>],
        _wanted: &[usize],
    ) -> Result<Vec<RunOutput>, String> {
        let mut bytes = Vec::new();
        for part in &inputs[0].parts {
            let TensorData::Fixed(b) = part else {
                unreachable!()
            };
            bytes.extend_from_slice(b);
        }
        let ids: Vec<f32> = bytes
            .chunks(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let _ = self.runs.send((std::thread::current().id(), ids.clone()));
        drop(self.hold.lock().unwrap_or_else(|p| p.into_inner()));
        if ids.contains(&666.0) {
            panic!("boom");
        }
        if ids.iter().any(|&i| i < 0.0) {
            return Err("negative id".into());
        }
        Ok(vec![RunOutput {
            datatype: DataType::Fp32,
            shape: inputs[0].shape.clone(),
            data: TensorData::Fixed(Bytes::from(bytes)),
        }])
    }
}

struct Bench {
    scheduler: Scheduler,
    runs: mpsc::Receiver<(ThreadId, Vec<f32>)>,
    hold: Arc<Mutex<()>>,
    /// Executors the factory built (after panics).
    rebuilt: Arc<AtomicUsize>,
}

impl Bench {
    fn new(tweak: impl FnOnce(&mut SchedulerConfig)) -> Self {
        let (tx, runs) = mpsc::channel();
        let hold = Arc::new(Mutex::new(()));
        let rebuilt = Arc::new(AtomicUsize::new(0));
        let make = {
            let (tx, hold) = (tx.clone(), hold.clone());
            move || {
                Box::new(Echo {
                    runs: tx.clone(),
                    hold: hold.clone(),
                }) as Box<dyn Executor>
            }
        };
        let factory: ExecutorFactory = {
            let (make, rebuilt) = (make.clone(), rebuilt.clone());
            Arc::new(move |_| {
                rebuilt.fetch_add(1, Ordering::SeqCst);
                Ok(make())
            })
        };
        let mut config = config("echo", 8, 100, 1);
        config.inline_run_limit = Duration::from_secs(1);
        tweak(&mut config);
        let metrics = Arc::new(Metrics::new().version("echo", 1));
        let scheduler = Scheduler::start(config, vec![make()], factory, metrics).unwrap();
        Self {
            scheduler,
            runs,
            hold,
            rebuilt,
        }
    }

    /// Submits `ids` and waits for the answer; says which thread ran it.
    async fn call(&self, ids: &[f32]) -> (ThreadId, Result<Completion>) {
        let pending = self.scheduler.submit(job(ids, 1, None)).unwrap();
        let (thread, ran) = self.runs.recv().unwrap();
        assert_eq!(ran, ids);
        (thread, pending.wait().await)
    }

    /// A first request, which a worker runs, so the run time is known.
    async fn warm(&self) {
        let (thread, answer) = self.call(&[0.0]).await;
        assert_ne!(thread, here(), "nothing is measured before the first run");
        answer.unwrap();
    }
}

fn here() -> ThreadId {
    std::thread::current().id()
}

#[tokio::test]
async fn after_a_park_one_short_request_runs_on_the_calling_thread() {
    let b = Bench::new(|_| {});
    b.warm().await;
    note_io_thread_idle();
    let (thread, answer) = b.call(&[1.0, 2.0]).await;
    assert_eq!(thread, here());
    let answer = answer.unwrap();
    assert_eq!(ids_of(&answer), vec![1.0, 2.0]);
    assert_eq!(answer.batch_rows, 2);
    // One park allows one inline run: the next request goes to the worker.
    let (thread, answer) = b.call(&[3.0]).await;
    assert_ne!(thread, here());
    assert_eq!(ids_of(&answer.unwrap()), vec![3.0]);
    note_io_thread_idle();
    assert_eq!(b.call(&[4.0]).await.0, here());
}

#[tokio::test]
async fn nothing_runs_inline_without_a_park_or_a_measured_run() {
    let b = Bench::new(|_| {});
    note_io_thread_idle();
    // The first request: no run time known yet.
    b.warm().await;
    // The park above was not spent by the worker's run.
    assert_eq!(b.call(&[1.0]).await.0, here());
    // No park since.
    assert_ne!(b.call(&[2.0]).await.0, here());
}

#[tokio::test]
async fn inline_runs_are_off_for_a_zero_limit_a_queue_delay_ordering_or_a_slow_model() {
    type Tweak = Box<dyn FnOnce(&mut SchedulerConfig)>;
    let configs: [(&str, Tweak); 4] = [
        (
            "zero limit",
            Box::new(|c| c.inline_run_limit = Duration::ZERO),
        ),
        (
            "max_queue_delay",
            Box::new(|c| c.policy.max_queue_delay = Duration::from_micros(1)),
        ),
        (
            "preserve_ordering",
            Box::new(|c| c.preserve_ordering = true),
        ),
        (
            "runs over the limit",
            Box::new(|c| c.inline_run_limit = Duration::from_nanos(1)),
        ),
    ];
    for (what, tweak) in configs {
        let b = Bench::new(tweak);
        b.warm().await;
        note_io_thread_idle();
        let (thread, answer) = b.call(&[1.0]).await;
        assert_ne!(thread, here(), "{what}");
        assert_eq!(ids_of(&answer.unwrap()), vec![1.0], "{what}");
    }
}

#[tokio::test]
async fn a_request_behind_a_busy_instance_or_a_queue_waits_its_turn() {
    let b = Bench::new(|_| {});
    b.warm().await;
    // The worker is held inside a run: its executor is not free.
    let held = b.hold.lock().unwrap();
    let first = b.scheduler.submit(job(&[1.0], 1, None)).unwrap();
    let (thread, ids) = b.runs.recv().unwrap();
    assert_eq!((thread == here(), ids), (false, vec![1.0]));
    note_io_thread_idle();
    let second = b.scheduler.submit(job(&[2.0], 1, None)).unwrap();
    drop(held);
    let (thread, ids) = b.runs.recv().unwrap();
    assert_eq!((thread == here(), ids), (false, vec![2.0]));
    assert_eq!(ids_of(&first.wait().await.unwrap()), vec![1.0]);
    assert_eq!(ids_of(&second.wait().await.unwrap()), vec![2.0]);
}

#[tokio::test]
async fn batches_of_several_requests_turn_inline_runs_off() {
    let b = Bench::new(|_| {});
    b.warm().await;
    // Requests pile up behind a held run, three times: the worker's
    // batches average well over 1.5 requests.
    for round in 0..3 {
        let held = b.hold.lock().unwrap();
        let blocker = b.scheduler.submit(job(&[100.0], 1, None)).unwrap();
        let queued: Vec<Pending> = (0..4u8)
            .map(|i| b.scheduler.submit(job(&[f32::from(i)], 1, None)).unwrap())
            .collect();
        drop(held);
        blocker.wait().await.unwrap();
        for p in queued {
            p.wait().await.unwrap();
        }
        while let Ok((thread, _)) = b.runs.try_recv() {
            assert_ne!(thread, here(), "round {round}");
        }
    }
    note_io_thread_idle();
    assert_ne!(b.call(&[1.0]).await.0, here());
}

#[tokio::test]
async fn a_failed_or_panicking_inline_run_answers_its_request_and_the_worker_rebuilds() {
    let b = Bench::new(|_| {});
    b.warm().await;
    note_io_thread_idle();
    let (thread, answer) = b.call(&[-1.0]).await;
    assert_eq!(thread, here());
    assert!(
        matches!(&answer, Err(Error::Internal(m)) if m.contains("negative id")),
        "{answer:?}"
    );
    note_io_thread_idle();
    let (thread, answer) = b.call(&[666.0]).await;
    assert_eq!(thread, here());
    assert!(
        matches!(&answer, Err(Error::Internal(m)) if m.contains("panicked: boom")),
        "{answer:?}"
    );
    assert_eq!(b.rebuilt.load(Ordering::SeqCst), 0);
    // The executor is gone: the next park finds none free, and the worker
    // builds a fresh one before it runs the request.
    note_io_thread_idle();
    let (thread, answer) = b.call(&[5.0]).await;
    assert_ne!(thread, here());
    assert_eq!(ids_of(&answer.unwrap()), vec![5.0]);
    assert_eq!(b.rebuilt.load(Ordering::SeqCst), 1);
    // With it back, inline runs resume.
    assert_eq!(b.call(&[6.0]).await.0, here());
}
