//! Queue policies with a gated executor: per-level bounds, delaying
//! timeouts, and answer ordering. Explicit barriers, no sleeps.

use super::tests::{harness_config, ids_of, job};
use super::*;

#[tokio::test]
async fn a_level_bound_refuses_that_level_only() {
    let h = harness_config(1, 100, 2, true, |c| {
        c.levels = vec![LevelPolicy {
            max_queue_size: 1,
            delay_on_timeout: false,
        }];
    });
    let running = h.scheduler.submit(job(&[0.0], 1, None)).unwrap();
    h.started.recv().unwrap();
    let queued = h.scheduler.submit(job(&[1.0], 1, None)).unwrap();
    let refused = h.scheduler.submit(job(&[2.0], 1, None)).unwrap_err();
    match refused.error {
        Error::Overloaded { message, .. } => {
            assert!(message.contains("priority level 1 is full"), "{message}");
        }
        other => panic!("expected overload, got {other:?}"),
    }
    // Level 2 has no bound of its own.
    let low = h.scheduler.submit(job(&[3.0], 2, None)).unwrap();
    for _ in 0..3 {
        h.release.send(()).unwrap();
    }
    running.wait().await.unwrap();
    queued.wait().await.unwrap();
    low.wait().await.unwrap();
}

#[tokio::test]
async fn a_delaying_level_runs_a_late_request_last_instead_of_timing_it_out() {
    let h = harness_config(1, 100, 1, true, |c| {
        c.levels = vec![LevelPolicy {
            max_queue_size: 0,
            delay_on_timeout: true,
        }];
    });
    let running = h.scheduler.submit(job(&[0.0], 1, None)).unwrap();
    h.started.recv().unwrap();
    let late = h
        .scheduler
        .submit(job(&[1.0], 1, Some(Instant::now())))
        .unwrap();
    let on_time = h.scheduler.submit(job(&[2.0], 1, None)).unwrap();
    for _ in 0..3 {
        h.release.send(()).unwrap();
    }
    running.wait().await.unwrap();
    // The late request moved behind the one that had not timed out...
    assert_eq!(h.started.recv().unwrap(), vec![2.0]);
    assert_eq!(h.started.recv().unwrap(), vec![1.0]);
    // ...and was run, not answered with a timeout.
    assert_eq!(ids_of(&late.wait().await.unwrap()), vec![1.0]);
    on_time.wait().await.unwrap();
}

#[tokio::test]
async fn preserved_ordering_holds_an_answer_behind_an_earlier_request() {
    let h = harness_config(1, 100, 2, true, |c| c.preserve_ordering = true);
    let running = h.scheduler.submit(job(&[0.0], 1, None)).unwrap();
    h.started.recv().unwrap();
    // Admitted first, but lower priority: it runs after `high`.
    let low = h.scheduler.submit(job(&[1.0], 2, None)).unwrap();
    let high = h.scheduler.submit(job(&[2.0], 1, None)).unwrap();
    h.release.send(()).unwrap();
    running.wait().await.unwrap();
    assert_eq!(h.started.recv().unwrap(), vec![2.0]);
    h.release.send(()).unwrap();
    // `low` starting means `high` has finished and been answered to the gate,
    // which holds it until `low` is answered.
    assert_eq!(h.started.recv().unwrap(), vec![1.0]);
    let gate = h.scheduler.shared.gate.clone().unwrap();
    assert_eq!(gate.held(), 1);
    h.release.send(()).unwrap();
    assert_eq!(ids_of(&low.wait().await.unwrap()), vec![1.0]);
    assert_eq!(ids_of(&high.wait().await.unwrap()), vec![2.0]);
    assert_eq!(gate.held(), 0);
}
