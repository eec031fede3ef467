//! Scheduler behaviour with a gated executor: explicit barriers, no sleeps.

use super::*;
use crate::metrics::Metrics;
use crate::runtime::BatchInput;
use crate::tensor::RunOutput;
use crate::tensor::{DataType, Tensor, TensorData};
use bytes::Bytes;
use std::sync::mpsc;

/// Runs "identity" on one FP32 input, reports each batch's ids on `started`,
/// then waits for a release token. Ids < 0 fail the batch; id 666 panics;
/// id 777 fails a batch of several and panics when run alone.
struct Gate {
    started: mpsc::Sender<Vec<f32>>,
    release: Arc<Mutex<mpsc::Receiver<()>>>,
}

impl Executor for Gate {
    fn run(
        &mut self,
        inputs: &[BatchInput<'_>],
        _wanted: &[usize],
    ) -> Result<Vec<RunOutput>, String> {
        let mut ids = Vec::new();
        let mut bytes = Vec::new();
        for part in &inputs[0].parts {
            let TensorData::Fixed(b) = part else {
                unreachable!()
            };
            bytes.extend_from_slice(b);
            ids.extend(
                b.chunks(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            );
        }
        let _ = self.started.send(ids.clone());
        let _ = self.release.lock().unwrap().recv();
        if ids.contains(&666.0) || ids == [777.0] {
            panic!("boom");
        }
        if ids.contains(&777.0) {
            return Err("777 in a batch".into());
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

pub(super) struct Harness {
    pub(crate) scheduler: Scheduler,
    pub(crate) started: mpsc::Receiver<Vec<f32>>,
    pub(crate) release: mpsc::Sender<()>,
}

fn harness(max_batch: usize, max_queue: usize, levels: usize) -> Harness {
    harness_with(max_batch, max_queue, levels, true)
}

fn harness_with(max_batch: usize, max_queue: usize, levels: usize, rebuild: bool) -> Harness {
    harness_config(max_batch, max_queue, levels, rebuild, |_| {})
}

/// `rebuild: false` makes the executor factory fail (a session that cannot be
/// rebuilt after a panic).
/// `tweak` adjusts the scheduler's config (queue policies, ordering).
pub(super) fn harness_config(
    max_batch: usize,
    max_queue: usize,
    levels: usize,
    rebuild: bool,
    tweak: impl FnOnce(&mut SchedulerConfig),
) -> Harness {
    let (started_tx, started) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    let release_rx = Arc::new(Mutex::new(release_rx));
    let make = {
        let (s, r) = (started_tx.clone(), release_rx.clone());
        move || {
            Box::new(Gate {
                started: s.clone(),
                release: r.clone(),
            }) as Box<dyn Executor>
        }
    };
    let factory: ExecutorFactory = {
        let make = make.clone();
        Arc::new(move |_| {
            if rebuild {
                Ok(make())
            } else {
                Err("no session for you".to_string())
            }
        })
    };
    let metrics = Arc::new(Metrics::new().version("gate", 1));
    let mut config = config("gate", max_batch, max_queue, levels);
    tweak(&mut config);
    let scheduler = Scheduler::start(config, vec![make()], factory, metrics).unwrap();
    Harness {
        scheduler,
        started,
        release,
    }
}

/// One instance, no delay, no ordering, no inline runs.
pub(super) fn config(
    name: &str,
    max_batch: usize,
    max_queue: usize,
    levels: usize,
) -> SchedulerConfig {
    SchedulerConfig {
        name: name.into(),
        policy: BatchPolicy {
            max_batch_size: max_batch,
            max_queue_delay: Duration::ZERO,
            preferred_batch_sizes: vec![],
        },
        max_queue_size: max_queue,
        priority_levels: levels,
        instances: 1,
        levels: Vec::new(),
        preserve_ordering: false,
        inline_run_limit: Duration::ZERO,
    }
}

pub(super) fn job(ids: &[f32], priority: usize, deadline: Option<Instant>) -> Job {
    let data: Vec<u8> = ids.iter().flat_map(|i| i.to_le_bytes()).collect();
    Job {
        trace: tracing::Span::none(),
        inputs: vec![Tensor {
            name: "x".into(),
            datatype: DataType::Fp32,
            shape: vec![ids.len(), 1],
            data: TensorData::Fixed(Bytes::from(data)),
        }],
        outputs: vec![0],
        rows: ids.len(),
        key: Arc::new(BatchKey {
            inputs: vec![(DataType::Fp32, vec![1])],
            outputs: vec![0],
            omitted: Vec::new(),
        }),
        priority,
        deadline,
    }
}

pub(super) fn ids_of(c: &Completion) -> Vec<f32> {
    let TensorData::Fixed(b) = &c.outputs[0].data else {
        unreachable!()
    };
    b.chunks(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[tokio::test]
async fn each_caller_gets_its_own_rows() {
    let h = harness(8, 100, 1);
    // Block the worker on a first job so the next ones queue and batch together.
    let first = h.scheduler.submit(job(&[0.0], 1, None)).unwrap();
    assert_eq!(h.started.recv().unwrap(), vec![0.0]);
    let pending: Vec<(Vec<f32>, Pending)> =
        [vec![1.0], vec![2.0, 3.0], vec![4.0, 5.0, 6.0], vec![7.0]]
            .into_iter()
            .map(|ids| (ids.clone(), h.scheduler.submit(job(&ids, 1, None)).unwrap()))
            .collect();
    h.release.send(()).unwrap();
    h.release.send(()).unwrap();
    assert_eq!(ids_of(&first.wait().await.unwrap()), vec![0.0]);
    // The four queued jobs ran as one batch of 7 rows.
    assert_eq!(
        h.started.recv().unwrap(),
        vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    );
    for (ids, p) in pending {
        let c = p.wait().await.unwrap();
        assert_eq!(ids_of(&c), ids);
        assert_eq!(c.batch_rows, 7);
    }
}

#[tokio::test]
async fn full_queue_refuses_at_once() {
    let h = harness(1, 2, 1);
    let running = h.scheduler.submit(job(&[0.0], 1, None)).unwrap();
    h.started.recv().unwrap();
    let queued: Vec<Pending> = (1..=2)
        .map(|i| h.scheduler.submit(job(&[i as f32], 1, None)).unwrap())
        .collect();
    let refused = h.scheduler.submit(job(&[9.0], 1, None)).unwrap_err();
    assert!(
        matches!(refused.error, Error::Overloaded { retry_after, .. } if retry_after >= Duration::from_secs(1))
    );
    assert!(refused.job.is_none());
    for _ in 0..3 {
        h.release.send(()).unwrap();
    }
    running.wait().await.unwrap();
    for p in queued {
        p.wait().await.unwrap();
    }
}

#[tokio::test]
async fn expired_deadline_times_out_and_never_runs() {
    let h = harness(4, 10, 1);
    let running = h.scheduler.submit(job(&[0.0], 1, None)).unwrap();
    h.started.recv().unwrap();
    let late = h
        .scheduler
        .submit(job(
            &[1.0],
            1,
            Some(Instant::now() + Duration::from_millis(5)),
        ))
        .unwrap();
    let fine = h.scheduler.submit(job(&[2.0], 1, None)).unwrap();
    // The worker is still blocked, so the deadline passes in the queue.
    assert!(matches!(late.wait().await, Err(Error::DeadlineExceeded(_))));
    h.release.send(()).unwrap();
    h.release.send(()).unwrap();
    running.wait().await.unwrap();
    assert_eq!(ids_of(&fine.wait().await.unwrap()), vec![2.0]);
    // The next batch held only the job whose deadline had not passed.
    assert_eq!(h.started.recv().unwrap(), vec![2.0]);
}

#[tokio::test]
async fn higher_priority_overtakes_queued_lower() {
    let h = harness(1, 10, 2);
    let running = h.scheduler.submit(job(&[0.0], 1, None)).unwrap();
    h.started.recv().unwrap();
    let low = h.scheduler.submit(job(&[1.0], 2, None)).unwrap();
    let high = h.scheduler.submit(job(&[2.0], 1, None)).unwrap();
    for _ in 0..3 {
        h.release.send(()).unwrap();
    }
    running.wait().await.unwrap();
    assert_eq!(h.started.recv().unwrap(), vec![2.0]);
    assert_eq!(h.started.recv().unwrap(), vec![1.0]);
    high.wait().await.unwrap();
    low.wait().await.unwrap();
}

#[tokio::test]
async fn a_failing_batch_fails_alone_and_a_panic_is_survived() {
    let h = harness(1, 10, 1);
    for _ in 0..4 {
        h.release.send(()).unwrap();
    }
    let bad = h.scheduler.submit(job(&[-1.0], 1, None)).unwrap();
    assert!(matches!(bad.wait().await, Err(Error::Internal(m)) if m.contains("negative id")));
    let boom = h.scheduler.submit(job(&[666.0], 1, None)).unwrap();
    assert!(matches!(boom.wait().await, Err(Error::Internal(m)) if m.contains("panicked: boom")));
    // The worker was replaced and keeps serving.
    let ok = h.scheduler.submit(job(&[3.0], 1, None)).unwrap();
    assert_eq!(ids_of(&ok.wait().await.unwrap()), vec![3.0]);
}

#[tokio::test]
async fn dropped_caller_is_not_run() {
    let h = harness(4, 10, 1);
    let running = h.scheduler.submit(job(&[0.0], 1, None)).unwrap();
    h.started.recv().unwrap();
    drop(h.scheduler.submit(job(&[1.0], 1, None)).unwrap()); // the client went away
    let kept = h.scheduler.submit(job(&[2.0], 1, None)).unwrap();
    h.release.send(()).unwrap();
    h.release.send(()).unwrap();
    running.wait().await.unwrap();
    kept.wait().await.unwrap();
    assert_eq!(h.started.recv().unwrap(), vec![2.0]);
}

#[tokio::test]
async fn closed_scheduler_hands_the_job_back() {
    let h = harness(4, 10, 1);
    h.scheduler.close();
    let refused = h.scheduler.submit(job(&[1.0], 1, None)).unwrap_err();
    assert!(matches!(refused.error, Error::Unavailable(_)));
    assert!(refused.job.is_some());
}

/// Bad input never harms another request: a batch that fails because of one
/// request is run again one request at a time, so only that request fails.
#[tokio::test]
async fn a_failed_batch_is_rerun_one_by_one_and_only_the_bad_request_fails() {
    let h = harness(8, 100, 1);
    let first = h.scheduler.submit(job(&[0.0], 1, None)).unwrap();
    assert_eq!(h.started.recv().unwrap(), vec![0.0]);
    let good1 = h.scheduler.submit(job(&[1.0], 1, None)).unwrap();
    let bad = h.scheduler.submit(job(&[-1.0], 1, None)).unwrap();
    let good2 = h.scheduler.submit(job(&[2.0, 3.0], 1, None)).unwrap();
    for _ in 0..5 {
        h.release.send(()).unwrap();
    }
    first.wait().await.unwrap();
    let c1 = good1.wait().await.unwrap();
    assert_eq!(ids_of(&c1), vec![1.0]);
    assert_eq!(c1.batch_rows, 1, "answered by its solo run");
    assert!(matches!(bad.wait().await, Err(Error::Internal(m)) if m.contains("negative id")));
    let c2 = good2.wait().await.unwrap();
    assert_eq!(ids_of(&c2), vec![2.0, 3.0]);
    // One batch of the three, then each alone.
    let runs: Vec<Vec<f32>> = h.started.try_iter().collect();
    assert_eq!(
        runs,
        vec![
            vec![1.0, -1.0, 2.0, 3.0],
            vec![1.0],
            vec![-1.0],
            vec![2.0, 3.0]
        ]
    );
    // The worker keeps serving, batching again.
    let later = h.scheduler.submit(job(&[4.0], 1, None)).unwrap();
    h.release.send(()).unwrap();
    assert_eq!(ids_of(&later.wait().await.unwrap()), vec![4.0]);
}

/// The executor panics midway under concurrent load from several threads:
/// every caller of a panicking batch gets Internal, every other request gets
/// its own rows, none is lost (each wait returns), and later requests succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_panic_under_concurrent_load_answers_every_request() {
    let h = harness(4, 10_000, 1);
    // Deterministic part: a panic in a batch of three.
    let first = h.scheduler.submit(job(&[0.0], 1, None)).unwrap();
    assert_eq!(h.started.recv().unwrap(), vec![0.0]);
    let queued: Vec<Pending> = [1.0, 666.0, 2.0]
        .iter()
        .map(|&i| h.scheduler.submit(job(&[i], 1, None)).unwrap())
        .collect();
    // From here on the gate never blocks.
    for _ in 0..100_000 {
        h.release.send(()).unwrap();
    }
    first.wait().await.unwrap();
    for p in queued {
        assert!(matches!(p.wait().await, Err(Error::Internal(m)) if m.contains("panicked: boom")));
    }
    assert_eq!(h.started.recv().unwrap(), vec![1.0, 666.0, 2.0]);

    // Concurrent part: 4 clients x 200 requests, every 25th a poison (666).
    let scheduler = Arc::new(h.scheduler);
    let mut clients = Vec::new();
    for c in 0..4u32 {
        let scheduler = scheduler.clone();
        clients.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            for k in 0..200u32 {
                let id = if k % 25 == 12 {
                    666.0
                } else {
                    (10_000 + c * 1000 + k) as f32
                };
                let pending = scheduler.submit(job(&[id], 1, None)).unwrap();
                let answer = tokio::time::timeout(Duration::from_secs(30), pending.wait())
                    .await
                    .expect("a request was never answered");
                answers.push((id, answer));
            }
            answers
        }));
    }
    let mut answers = Vec::new();
    for c in clients {
        answers.extend(c.await.unwrap());
    }
    let batches: Vec<Vec<f32>> = h.started.try_iter().collect();
    let panicked: Vec<&Vec<f32>> = batches.iter().filter(|b| b.contains(&666.0)).collect();
    let (mut ok, mut failed) = (0, 0);
    for (id, answer) in &answers {
        let in_panic = panicked.iter().any(|b| b.contains(id));
        match answer {
            Ok(c) => {
                assert!(!in_panic, "{id} ran in a panicking batch yet succeeded");
                assert_eq!(ids_of(c), vec![*id]);
                ok += 1;
            }
            Err(Error::Internal(m)) if m.contains("panicked") => {
                assert!(in_panic, "{id} failed but its batch did not panic: {m}");
                failed += 1;
            }
            Err(e) => panic!("{id}: unexpected {e:?}"),
        }
    }
    assert_eq!(answers.len(), 800);
    assert!(failed >= 32, "every poison fails: {failed}");
    assert_eq!(ok + failed, 800);
    // Later requests succeed on the rebuilt executor.
    let later = scheduler.submit(job(&[5.0], 1, None)).unwrap();
    assert_eq!(ids_of(&later.wait().await.unwrap()), vec![5.0]);
    // Counted with the 3 of the deterministic part, the first and the last.
    eprintln!(
        "faults: scheduler_panic_under_load: {} requests, {} expected errors, 0 lost ({} panicking batches)",
        answers.len() + 5,
        failed + 3,
        panicked.len() + 1
    );
}

/// A worker whose executor cannot be rebuilt after a panic exits, and still
/// answers everything it held: the rest of a failed batch waiting for solo
/// runs, and (as the last worker) every queued request.
#[tokio::test]
async fn a_worker_that_cannot_be_rebuilt_answers_everything_it_held() {
    let h = harness_with(4, 100, 1, false);
    let first = h.scheduler.submit(job(&[0.0], 1, None)).unwrap();
    assert_eq!(h.started.recv().unwrap(), vec![0.0]);
    // One batch [1, 777, 2] fails; solo runs: 1 succeeds, 777 panics, and the
    // rebuild fails, so 2 is answered without running.
    let held: Vec<Pending> = [1.0, 777.0, 2.0]
        .iter()
        .map(|&i| h.scheduler.submit(job(&[i], 1, None)).unwrap())
        .collect();
    // Enough releases for every run; the gate is gone once the worker exits,
    // so a release it no longer needs may fail to send.
    for _ in 0..10 {
        let _ = h.release.send(());
    }
    first.wait().await.unwrap();
    // Queued behind the batch with other shapes (so never in it).
    let mut behind = job(&[3.0, 4.0], 1, None);
    behind.key = Arc::new(BatchKey {
        inputs: vec![(DataType::Fp32, vec![2])],
        outputs: vec![0],
        omitted: Vec::new(),
    });
    let behind = h.scheduler.submit(behind);
    let mut held = held.into_iter();
    assert_eq!(
        ids_of(&held.next().unwrap().wait().await.unwrap()),
        vec![1.0]
    );
    assert!(
        matches!(held.next().unwrap().wait().await, Err(Error::Internal(m)) if m.contains("panicked"))
    );
    assert!(
        matches!(held.next().unwrap().wait().await, Err(Error::Internal(m)) if m.contains("could not be rebuilt"))
    );
    if let Ok(behind) = behind {
        // Admitted before the worker left: answered 503 by the last worker.
        let answer = behind.wait().await;
        assert!(matches!(&answer, Err(Error::Unavailable(_))), "{answer:?}");
    }
    // No worker is left: later requests are refused at once.
    let refused = h.scheduler.submit(job(&[5.0], 1, None)).unwrap_err();
    assert!(matches!(refused.error, Error::Unavailable(_)));
}
