//! Graceful shutdown of the real binary under load: SIGTERM turns readiness
//! false at once while liveness stays true, the listeners keep accepting for
//! `--shutdown-delay-secs`, and every admitted request then gets up to
//! `--shutdown-grace-secs` to finish. No admitted request may fail.
//!
//! The model is `slow.onnx` (~100 ms a run) with one instance and batching
//! off, so eight clients keep a queue of about eight requests: whenever the
//! listeners close, requests are queued and running, and must still get 200.

use crate::harness::models::{Repo, SLOW_SERIAL, slow, x_body};
use crate::harness::process::{ClientsUntilRefused, Outcome, Sluice, status};
use crate::harness::wait::{PATIENCE, eventually, until};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CLIENTS: usize = 8;
const DELAY: Duration = Duration::from_secs(1);
const GRACE: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_fails_no_admitted_request() {
    let repo = Repo::new().with("slow", &slow(), Some(SLOW_SERIAL));
    let mut server = Sluice::serve(repo.path())
        .shutdown(DELAY, GRACE)
        .start()
        .await;
    let base = server.base.clone();
    let probe = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();

    // Load: each client sends until its first transport error (like a load
    // balancer that drops an endpoint it cannot reach).
    let t0 = Instant::now();
    let clients = ClientsUntilRefused::start(
        CLIENTS,
        &format!("{base}/v2/models/slow/infer"),
        DELAY + GRACE + Duration::from_secs(20),
        t0,
        |i| x_body(i as f32),
        |_, _, _| {},
    );

    // Wait for a round of answers: the queue is full and requests are in flight.
    eventually("the load to start", PATIENCE, || async {
        clients.answered() >= CLIENTS as u64
    })
    .await;

    // SIGTERM.
    let term_at = t0.elapsed();
    server.sigterm();

    // During the delay: readiness turns 503, liveness stays 200. The delay is
    // the time the listeners stay open after SIGTERM, so readiness must be
    // seen at 503 before any probe is refused.
    let probe = &probe;
    let (ready, live) = until("readiness to turn 503", PATIENCE, || async {
        let ready = status(probe, &format!("{base}/v2/health/ready")).await;
        let live = status(probe, &format!("{base}/v2/health/live")).await;
        if ready == Some(503) {
            return Some((ready, live));
        }
        assert_eq!(
            ready,
            Some(200),
            "readiness: unexpected answer (liveness {live:?}); a refused probe means the \
             listeners closed before readiness turned false"
        );
        None
    })
    .await;
    assert_eq!(ready, Some(503));
    assert_eq!(live, Some(200), "liveness must stay 200 while draining");
    // HTTP/1 keep-alive is off while draining, so no client reuses a
    // connection the server is about to close.
    let r = probe
        .get(format!("{base}/v2/health/live"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers().get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..]),
        "a response while draining must close its connection: {:?}",
        r.headers()
    );

    // The process exits by itself, with status 0, within delay + grace + margin.
    let exit = server.exit(DELAY + GRACE + Duration::from_secs(10)).await;
    assert!(exit.success(), "exit status {exit}");

    let outcomes = clients.outcomes().await;
    let listeners_open_until = term_at + DELAY; // at the earliest
    let (mut ok, mut during_delay, mut across_close, mut refused) = (0, 0, 0, 0);
    let first_refusal = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Refused { at } => Some(*at),
            _ => None,
        })
        .min();
    for o in &outcomes {
        match o {
            Outcome::Answered { status, start, end } => {
                assert_eq!(*status, 200, "an admitted request failed: {o:?}");
                ok += 1;
                if *start > term_at && *start < listeners_open_until {
                    during_delay += 1;
                }
                if *start < listeners_open_until && first_refusal.is_some_and(|r| *end > r) {
                    across_close += 1;
                }
            }
            Outcome::Refused { at } => {
                assert!(
                    *at >= listeners_open_until,
                    "refused during the delay: {o:?}"
                );
                refused += 1;
            }
            Outcome::Broken { at, error } => {
                panic!("a request broke at {at:?} (SIGTERM at {term_at:?}): {error}")
            }
        }
    }
    eprintln!(
        "shutdown: {ok} ok ({during_delay} sent during the delay, {across_close} finished after \
         the listeners closed), {refused} refused after close"
    );
    assert!(ok > CLIENTS, "too little load: {outcomes:?}");
    assert!(during_delay > 0, "no request was admitted during the delay");
    assert!(
        across_close > 0,
        "no request was in flight when the listeners closed"
    );
}

/// The metrics' cost on the hot path against the cost of a request, in one
/// run (`docs/benchmarks.md`, "Operating figures"): what the service and scheduler record
/// per request (in-flight gauge, pending gauge twice, one batch, one request
/// with its labelled counter and histograms, one `Instant::now`), timed in a
/// criterion-style loop on one and on two threads, against iris over REST at
/// concurrency 8 driven by `sluice-load` on an in-process server. A
/// measurement, not a check: run it in release with
/// `cargo test --release --test it -- --ignored --nocapture metrics_cost`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run in release"]
async fn metrics_cost_against_an_iris_request() {
    use std::hint::black_box;
    let metrics = sluice::metrics::Metrics::new();
    let v = Arc::new(metrics.version("iris", 1));
    let per_op = |v: &sluice::metrics::VersionMetrics, n: u32| {
        let start = Instant::now();
        for _ in 0..n {
            let t = Instant::now();
            v.inflight.inc();
            let guard = v.inflight.clone();
            v.pending.set(1);
            v.pending.set(0);
            let phases = sluice::scheduler::Phases {
                input: Duration::from_micros(2),
                infer: Duration::from_micros(16),
                output: Duration::from_micros(2),
            };
            v.record_execution(1, Duration::from_micros(20), phases);
            let timing = Some(sluice::scheduler::Timing {
                queue: Duration::from_micros(5),
                compute: Duration::from_micros(20),
                phases,
            });
            v.record_request("http", "success", black_box(t.elapsed()), timing);
            guard.dec();
        }
        start.elapsed() / n
    };
    // Criterion-style: 1 s warm-up, then 20 samples; report the median.
    let n = 20_000;
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_secs(1) {
        per_op(&v, n);
    }
    let median = |mut xs: Vec<Duration>| {
        xs.sort();
        xs[xs.len() / 2]
    };
    let one_thread = median((0..20).map(|_| per_op(&v, n)).collect());
    let two_threads = median(
        (0..20)
            .map(|_| {
                std::thread::scope(|s| {
                    let a = s.spawn(|| per_op(&v, n));
                    let b = s.spawn(|| per_op(&v, n));
                    a.join().unwrap().max(b.join().unwrap())
                })
            })
            .collect(),
    );

    let server = crate::harness::TestServer::start(&crate::harness::bundled_repo()).await;
    let results = sluice_load::run(sluice_load::RunConfig {
        url: format!("http://{}", server.http),
        model: "iris".into(),
        load: sluice_load::Load::Concurrency(vec![8]),
        duration: Duration::from_secs(10),
        warmup: Duration::from_secs(2),
        quiet: true,
        ..sluice_load::RunConfig::default()
    })
    .await
    .unwrap();
    server.stop().await;
    let r = &results[0];
    assert_eq!(r.error_count, 0, "{:?}", r.errors);
    let per_request = Duration::from_secs_f64(1.0 / r.throughput_rps);
    let ratio = |d: Duration| 100.0 * d.as_secs_f64() / per_request.as_secs_f64();
    eprintln!(
        "metrics per request: {one_thread:?} (1 thread), {two_threads:?} (2 threads at once)\n\
         iris rest-json c=8: {:.0} req/s = {per_request:?} per request; p50 {} us, mean {:.0} us\n\
         ratio: {:.2} % (1 thread), {:.2} % (2 threads) of the per-request time",
        r.throughput_rps,
        r.latency_us.p50,
        r.latency_us.mean,
        ratio(one_thread),
        ratio(two_threads),
    );
}
