//! Graceful shutdown of the real binary under load: SIGTERM turns readiness
//! false at once while liveness stays true, the listeners keep accepting for
//! `--shutdown-delay-secs`, and every admitted request then gets up to
//! `--shutdown-grace-secs` to finish. No admitted request may fail.
//!
//! The model is `slow.onnx` (~100 ms a run) with one instance and batching
//! off, so eight clients keep a queue of about eight requests: whenever the
//! listeners close, requests are queued and running, and must still get 200.

use crate::harness::{fixture, ort_lib};
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const CLIENTS: usize = 8;
const DELAY: Duration = Duration::from_secs(1);
const GRACE: Duration = Duration::from_secs(10);

/// What happened to one request, with times relative to the start of the test.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// An HTTP answer (any status), sent at `start`, answered at `end`.
    Answered {
        status: u16,
        start: Duration,
        end: Duration,
    },
    /// The connection was refused: the listeners are closed; never admitted.
    Refused { at: Duration },
    /// Any other transport error (reset, closed mid-request, timeout).
    Broken { at: Duration, error: String },
}

impl Outcome {
    /// A transport error at `at`: refused (never admitted) or broken.
    pub(crate) fn failed(e: &reqwest::Error, at: Duration) -> Self {
        if e.is_connect() {
            Outcome::Refused { at }
        } else {
            Outcome::Broken {
                at,
                error: format!("{e:?}"),
            }
        }
    }
}

/// Kills the server if the test fails before it exits by itself.
pub(crate) struct Server(pub(crate) Child);

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl Server {
    /// Polls `{base}/v2/health/ready` until 200 (60 s at most), failing at
    /// once if the process exits meanwhile.
    pub(crate) async fn wait_ready(&mut self, probe: &reqwest::Client, base: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while status(probe, &format!("{base}/v2/health/ready")).await != Some(200) {
            assert!(self.0.try_wait().unwrap().is_none(), "server exited early");
            assert!(Instant::now() < deadline, "not ready within 60 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `slow` with one instance and no batching: requests queue and run one by one.
fn slow_repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("slow");
    std::fs::create_dir_all(model.join("1")).unwrap();
    std::fs::copy(fixture("slow.onnx"), model.join("1/model.onnx")).unwrap();
    std::fs::write(
        model.join("config.toml"),
        "instances = 1\nmax_batch_size = 0\n",
    )
    .unwrap();
    dir
}

pub(crate) async fn status(client: &reqwest::Client, url: &str) -> Option<u16> {
    client
        .get(url)
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_fails_no_admitted_request() {
    let repo = slow_repo();
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["serve", "--host", "127.0.0.1", "--grpc-port", "0"])
        .args(["--http-port", &port.to_string()])
        .arg("--model-repository")
        .arg(repo.path())
        .arg("--onnxruntime-lib")
        .arg(ort_lib())
        .args(["--shutdown-delay-secs", &DELAY.as_secs().to_string()])
        .args(["--shutdown-grace-secs", &GRACE.as_secs().to_string()])
        .args(["--log", "warn"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut server = Server(child);
    let pid = server.0.id().to_string();
    let base = format!("http://127.0.0.1:{port}");
    let probe = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();

    server.wait_ready(&probe, &base).await;

    // Load: each client sends until its first transport error (like a load
    // balancer that drops an endpoint it cannot reach).
    let t0 = Instant::now();
    let go = Arc::new(AtomicBool::new(true));
    let answered = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let client = reqwest::Client::builder()
            .timeout(DELAY + GRACE + Duration::from_secs(20))
            .build()
            .unwrap();
        let (url, go, answered) = (
            format!("{base}/v2/models/slow/infer"),
            go.clone(),
            answered.clone(),
        );
        clients.push(tokio::spawn(async move {
            let body = json!({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [i as f32]}]});
            let mut outcomes = Vec::new();
            while go.load(Ordering::Relaxed) {
                let start = t0.elapsed();
                match client.post(&url).json(&body).send().await {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let _ = r.bytes().await;
                        let end = t0.elapsed();
                        answered.fetch_add(1, Ordering::Relaxed);
                        outcomes.push(Outcome::Answered { status, start, end });
                    }
                    Err(e) => {
                        outcomes.push(Outcome::failed(&e, t0.elapsed()));
                        break;
                    }
                }
            }
            outcomes
        }));
    }

    // Wait for a round of answers: the queue is full and requests are in flight.
    let deadline = Instant::now() + Duration::from_secs(30);
    while answered.load(Ordering::Relaxed) < CLIENTS {
        assert!(Instant::now() < deadline, "load never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // SIGTERM.
    let term_at = t0.elapsed();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success(), "kill -TERM {pid} failed");
    let exit_deadline = Instant::now() + DELAY + GRACE + Duration::from_secs(10);

    // During the delay: readiness turns 503, liveness stays 200.
    let deadline = Instant::now() + DELAY;
    loop {
        let ready = status(&probe, &format!("{base}/v2/health/ready")).await;
        let live = status(&probe, &format!("{base}/v2/health/live")).await;
        assert!(
            Instant::now() < deadline,
            "readiness still {ready:?} (liveness {live:?}) at the end of the delay"
        );
        if ready == Some(503) {
            assert_eq!(live, Some(200), "liveness must stay 200 while draining");
            // HTTP/1 keep-alive is off while draining, so no client reuses
            // a connection the server is about to close.
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
            break;
        }
        assert_eq!(ready, Some(200), "readiness: unexpected answer");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The process exits by itself, with status 0, within delay + grace + margin.
    let exit = loop {
        if let Some(exit) = server.0.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < exit_deadline,
            "still running after delay + grace"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "exit status {exit}");
    go.store(false, Ordering::Relaxed);

    let mut outcomes = Vec::new();
    for c in clients {
        outcomes.extend(c.await.unwrap());
    }
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
