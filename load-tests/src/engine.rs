//! The load engines. Each request runs as its own tokio task (so encoding
//! and decoding spread over all worker threads); one coordinator owns the
//! statistics, so no locks are taken per request.
//!
//! * Closed loop ([`closed_loop`]): exactly `concurrency` requests are kept
//!   outstanding; latency is measured from the actual send.
//! * Open loop ([`open_loop`]): request `i` is *intended* to be sent at
//!   `start + i / rate`, regardless of how the server is doing, and its latency
//!   is measured from that intended time (as wrk2 does), so queueing in the
//!   server or in the generator (when `max_inflight` is reached) shows up in
//!   the latencies instead of being hidden by coordinated omission. Send
//!   times are paced by a dedicated OS thread with `std::thread::sleep`
//!   (tens of microseconds of jitter) rather than tokio's 1 ms timer wheel,
//!   whose lag would otherwise be charged to the server.
//!
//! Both stop issuing at the deadline or after `max_requests`, whichever comes
//! first, then drain the requests in flight (each bounded by the per-request
//! timeout), so a run always ends by itself.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use tokio::sync::mpsc;
use tokio::task::{JoinError, JoinSet};
use tokio::time::{Instant, MissedTickBehavior, interval_at};

use crate::client::Target;
use crate::stats::{ErrorKind, Outcome, Stats};

/// When to stop issuing requests.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Stop issuing after this long.
    pub duration: Duration,
    /// Stop issuing after this many requests.
    pub max_requests: Option<u64>,
}

/// A drained run: its statistics and wall time from start to last completion.
#[derive(Debug)]
pub struct Measured {
    /// Counts and latencies.
    pub stats: Stats,
    /// Elapsed wall time.
    pub elapsed: Duration,
}

type Done = (Outcome, Duration);

fn spawn<T: Target>(set: &mut JoinSet<Done>, target: &Arc<T>, intended: Instant) {
    let target = Arc::clone(target);
    set.spawn(async move {
        let outcome = target.infer().await;
        (outcome, Instant::now().saturating_duration_since(intended))
    });
}

fn completed(res: std::result::Result<Done, JoinError>) -> Done {
    res.unwrap_or((Err(ErrorKind::Other), Duration::ZERO))
}

/// Offset from the start of the run at which request `i` is intended to be
/// sent at `rate` requests/s (computed from `i`, so errors never accumulate).
pub fn intended_offset(rate: f64, i: u64) -> Duration {
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    let nanos = (i as f64 * 1e9 / rate).round() as u64;
    Duration::from_nanos(nanos)
}

/// Prints a one-line status to stderr every second when enabled.
struct Progress {
    label: Option<String>,
    start: Instant,
    last_ok: u64,
    last_at: Instant,
}

impl Progress {
    fn new(label: Option<String>, start: Instant) -> Self {
        Self {
            label,
            start,
            last_ok: 0,
            last_at: start,
        }
    }

    fn tick(&mut self, stats: &Stats) {
        let Some(label) = &self.label else { return };
        let now = Instant::now();
        let dt = now.saturating_duration_since(self.last_at).as_secs_f64();
        #[allow(clippy::cast_precision_loss)]
        let rps = if dt > 0.0 {
            (stats.ok() - self.last_ok) as f64 / dt
        } else {
            0.0
        };
        let l = stats.latency();
        eprintln!(
            "[{label}] {:>5.1}s sent {} ok {} err {} inflight {} | {rps:.0} req/s | p50 {} us p99 {} us",
            now.saturating_duration_since(self.start).as_secs_f64(),
            stats.sent(),
            stats.ok(),
            stats.error_count(),
            stats.in_flight(),
            l.p50,
            l.p99,
        );
        self.last_ok = stats.ok();
        self.last_at = now;
    }
}

fn ticker(start: Instant) -> tokio::time::Interval {
    let mut t = interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
    t.set_missed_tick_behavior(MissedTickBehavior::Delay);
    t
}

/// Closed loop with `concurrency` requests outstanding.
pub async fn closed_loop<T: Target>(
    target: Arc<T>,
    concurrency: usize,
    limits: Limits,
    progress: Option<String>,
) -> Result<Measured> {
    let start = Instant::now();
    let deadline = start + limits.duration;
    let mut stats = Stats::new()?;
    let mut set = JoinSet::new();
    let mut progress = Progress::new(progress, start);
    let mut tick = ticker(start);
    let may_send =
        |s: &Stats| Instant::now() < deadline && limits.max_requests.is_none_or(|n| s.sent() < n);
    for _ in 0..concurrency.max(1) {
        if !may_send(&stats) {
            break;
        }
        spawn(&mut set, &target, Instant::now());
        stats.record_sent();
    }
    while !set.is_empty() {
        tokio::select! {
            biased;
            Some(res) = set.join_next() => {
                let (outcome, latency) = completed(res);
                stats.record(&outcome, latency);
                if may_send(&stats) {
                    spawn(&mut set, &target, Instant::now());
                    stats.record_sent();
                }
            }
            _ = tick.tick() => progress.tick(&stats),
        }
    }
    Ok(Measured {
        stats,
        elapsed: start.elapsed(),
    })
}

/// Paces the open loop from a dedicated OS thread: sends index `i` into
/// `tx` at `start + intended_offset(rate, i)` until the deadline or budget.
fn spawn_pacer(
    start: std::time::Instant,
    rate: f64,
    limits: Limits,
    tx: mpsc::UnboundedSender<u64>,
) -> Result<std::thread::JoinHandle<()>> {
    let pace = move || {
        for i in 0u64.. {
            let offset = intended_offset(rate, i);
            if offset >= limits.duration || limits.max_requests.is_some_and(|n| i >= n) {
                break;
            }
            let now = std::time::Instant::now();
            let at = start + offset;
            if at > now {
                std::thread::sleep(at - now);
            }
            if tx.send(i).is_err() {
                break; // the coordinator is gone
            }
        }
    };
    Ok(std::thread::Builder::new()
        .name("sluice-load-pacer".into())
        .spawn(pace)?)
}

/// Open loop at `rate` requests/s with at most `max_inflight` outstanding.
pub async fn open_loop<T: Target>(
    target: Arc<T>,
    rate: f64,
    max_inflight: usize,
    limits: Limits,
    progress: Option<String>,
) -> Result<Measured> {
    anyhow::ensure!(
        rate.is_finite() && rate > 0.0,
        "rate must be positive, got {rate}"
    );
    let max_inflight = max_inflight.max(1);
    let start = Instant::now();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let pacer = spawn_pacer(start.into_std(), rate, limits, tx)?;
    let mut pacing = true;
    let mut stats = Stats::new()?;
    let mut set = JoinSet::new();
    let mut progress = Progress::new(progress, start);
    let mut tick = ticker(start);
    while pacing || !set.is_empty() {
        let room = set.len() < max_inflight;
        tokio::select! {
            biased;
            Some(res) = set.join_next(), if !set.is_empty() => {
                let (outcome, latency) = completed(res);
                stats.record(&outcome, latency);
            }
            // Indices queue up here while `max_inflight` is reached; they are
            // sent late but still timed from their intended send time.
            msg = rx.recv(), if pacing && room => match msg {
                Some(i) => {
                    spawn(&mut set, &target, start + intended_offset(rate, i));
                    stats.record_sent();
                }
                None => pacing = false,
            },
            _ = tick.tick() => progress.tick(&stats),
        }
    }
    // The pacer has already returned (its sender is dropped); reap it.
    let _ = pacer.join();
    Ok(Measured {
        stats,
        elapsed: start.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Serves every request in `service` time; with `fail_every`, every
    /// n-th request fails with HTTP 500.
    struct Fake {
        service: Duration,
        fail_every: u64,
        calls: AtomicU64,
    }

    impl Fake {
        fn new(service_ms: u64, fail_every: u64) -> Arc<Self> {
            Arc::new(Self {
                service: Duration::from_millis(service_ms),
                fail_every,
                calls: AtomicU64::new(0),
            })
        }
    }

    impl Target for Fake {
        fn infer(&self) -> impl Future<Output = Outcome> + Send {
            let n = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
            let service = self.service;
            let fail = self.fail_every > 0 && n.is_multiple_of(self.fail_every);
            async move {
                tokio::time::sleep(service).await;
                if fail {
                    Err(ErrorKind::Http(500))
                } else {
                    Ok(())
                }
            }
        }
    }

    fn near(actual_us: u64, expected_ms: u64) -> bool {
        let e = expected_ms * 1000;
        actual_us.abs_diff(e) <= e / 500 + 1_000
    }

    /// Real-time tolerance: 15 ms + 5 %.
    fn about(actual_us: u64, expected_ms: u64) -> bool {
        let e = expected_ms * 1000;
        actual_us.abs_diff(e) <= 15_000 + e / 20
    }

    #[test]
    fn intended_offsets_are_evenly_spaced_from_start() {
        assert_eq!(intended_offset(100.0, 0), Duration::ZERO);
        assert_eq!(intended_offset(100.0, 5), Duration::from_millis(50));
        assert_eq!(intended_offset(3.0, 3), Duration::from_secs(1));
        assert_eq!(intended_offset(1e6, 1_500_000), Duration::from_millis(1500));
    }

    #[tokio::test]
    async fn open_loop_measures_from_intended_time() {
        // 100 req/s (10 ms apart) into a 50 ms server that can only take one
        // request at a time: request k is intended at 10k ms but completes at
        // 50(k+1) ms, so its latency is 50 + 40k ms; a naive measurement from
        // the actual send would report a flat 50 ms.
        let limits = Limits {
            duration: Duration::from_secs(10),
            max_requests: Some(5),
        };
        let m = open_loop(Fake::new(50, 0), 100.0, 1, limits, None)
            .await
            .unwrap();
        let l = m.stats.latency();
        assert_eq!((m.stats.sent(), m.stats.ok()), (5, 5));
        assert!(about(l.min, 50), "{l:?}");
        assert!(about(l.p50, 50 + 40 * 2), "{l:?}");
        assert!(about(l.max, 50 + 40 * 4), "{l:?}");
        assert!(about(m.elapsed.as_micros() as u64, 250), "{:?}", m.elapsed);
    }

    #[tokio::test]
    async fn open_loop_without_queueing_sees_service_time_and_stops_at_deadline() {
        let limits = Limits {
            duration: Duration::from_secs(1),
            max_requests: None,
        };
        let m = open_loop(Fake::new(5, 0), 200.0, 1000, limits, None)
            .await
            .unwrap();
        let l = m.stats.latency();
        // Exactly the requests intended before the deadline: 0, 5, ..., 995 ms.
        assert_eq!((m.stats.sent(), m.stats.ok()), (200, 200));
        assert!(l.min >= 5_000 && about(l.p50, 5), "{l:?}");
        assert!(about(m.elapsed.as_micros() as u64, 1000), "{:?}", m.elapsed);
    }

    #[tokio::test(start_paused = true)]
    async fn closed_loop_keeps_concurrency_and_counts_add_up() {
        let limits = Limits {
            duration: Duration::from_secs(1),
            max_requests: None,
        };
        let m = closed_loop(Fake::new(10, 4), 4, limits, None)
            .await
            .unwrap();
        let s = &m.stats;
        // 4 outstanding x 100 per second each.
        assert_eq!(s.sent(), 400);
        assert_eq!(s.sent(), s.ok() + s.error_count());
        assert_eq!(s.errors()["http_500"], 100);
        assert!(near(s.latency().p50, 10));
        // Request budget stops before the deadline.
        let limits = Limits {
            duration: Duration::from_secs(60),
            max_requests: Some(10),
        };
        let m = closed_loop(Fake::new(10, 0), 3, limits, None)
            .await
            .unwrap();
        assert_eq!((m.stats.sent(), m.stats.ok()), (10, 10));
        assert!(m.elapsed < Duration::from_millis(50));
    }
}
