//! Scheduler behaviour with a gated executor: explicit barriers, no sleeps.

use super::*;
use crate::metrics::Metrics;
use crate::runtime::RunOutput;
use crate::tensor::TensorData;
use bytes::Bytes;
use std::sync::mpsc;

/// Runs "identity" on one FP32 input, reports each batch's ids on `started`,
/// then waits for a release token. Ids < 0 fail the batch; id 666 panics.
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

struct Harness {
    scheduler: Scheduler,
    started: mpsc::Receiver<Vec<f32>>,
    release: mpsc::Sender<()>,
}

fn harness(max_batch: usize, max_queue: usize, levels: usize) -> Harness {
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
        Arc::new(move |_| Ok(make()))
    };
    let metrics = Arc::new(Metrics::new().version("gate", 1));
    let scheduler = Scheduler::start(
        SchedulerConfig {
            name: "gate".into(),
            policy: BatchPolicy {
                max_batch_size: max_batch,
                max_queue_delay: Duration::ZERO,
                preferred_batch_sizes: vec![],
            },
            max_queue_size: max_queue,
            priority_levels: levels,
            instances: 1,
        },
        vec![make()],
        factory,
        metrics,
    )
    .unwrap();
    Harness {
        scheduler,
        started,
        release,
    }
}

fn job(ids: &[f32], priority: usize, deadline: Option<Instant>) -> Job {
    let data: Vec<u8> = ids.iter().flat_map(|i| i.to_le_bytes()).collect();
    Job {
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
        }),
        priority,
        deadline,
    }
}

fn ids_of(c: &Completion) -> Vec<f32> {
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
