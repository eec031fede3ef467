//! `sluice-hpa-sim`: runs the Kubernetes HPA algorithm ([`sluice_load::hpa`])
//! against real `sluice` processes on loopback, with time scaled down.
//!
//! * **Pods** are `sluice serve` processes over a one-model repository (a copy
//!   of `dense` with a small per-replica config), each on its own loopback port.
//!   A pod is *ready*, and joins the endpoints, once `/v2/health/ready` is 200.
//! * **Service**: client-side round robin. Each request goes to the next ready
//!   endpoint (as kube-proxy picks a ready endpoint per connection); a pod
//!   being removed leaves the endpoints *before* it gets SIGTERM, so only
//!   requests it already has are drained (`--shutdown-delay-secs`, then grace).
//! * **Metrics**: every scrape tick each ready pod's `/metrics` is read and
//!   `sluice_inflight_requests` summed over its series; the HPA's value for a
//!   pod is the mean of its samples in the averaging window (the adapter's
//!   `avg_over_time[1m]`).
//! * **Controller**: every sync, [`hpa::Autoscaler::sync`] with the base
//!   behavior of `deploy/base/hpa.yaml`; starting pods are `Unready`.
//! * **Load**: closed loop, `--profile` steps of `SECONDSxCLIENTS`.
//!
//! Cluster time runs `--time-scale` times faster than wall time: with the
//! default 15, the 15 s sync is 1 s, the 300 s scale-down window 20 s.
//! Writes one CSV row per sync and a PNG; exits non-zero if any request failed
//! or any pod did not exit with status 0 after SIGTERM.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::Parser;
use sluice_load::hpa::record::{self, Row, inflight, parse_profile};
use sluice_load::hpa::{Autoscaler, PodMetric, Spec};
use tokio::sync::watch;

/// Command-line flags.
#[derive(Debug, Parser)]
#[command(
    name = "sluice-hpa-sim",
    about = "Simulate the HPA against real sluice replicas"
)]
struct Args {
    /// The sluice binary.
    #[arg(long, default_value = "target/release/sluice")]
    sluice: PathBuf,
    /// The ONNX file every replica serves, as model `dense`.
    #[arg(long, default_value = "models/dense/1/model.onnx")]
    model_file: PathBuf,
    /// Model instances per replica (its `config.toml`), each with one thread.
    #[arg(long, default_value_t = 1)]
    instances: usize,
    /// `minReplicas`.
    #[arg(long, default_value_t = 1)]
    min_replicas: usize,
    /// `maxReplicas`.
    #[arg(long, default_value_t = 8)]
    max_replicas: usize,
    /// `averageValue` of in-flight requests per pod.
    #[arg(long, default_value_t = 6.0)]
    target: f64,
    /// Cluster seconds per wall second.
    #[arg(long, default_value_t = 15.0)]
    time_scale: f64,
    /// Load steps `SECONDSxCLIENTS`, comma-separated (wall seconds).
    #[arg(long, default_value = "10x1,8x8,8x16,8x32,30x64,8x32,8x16,8x4,60x1")]
    profile: String,
    /// Passed to every replica.
    #[arg(long, default_value_t = 1)]
    shutdown_delay_secs: u64,
    /// CSV output.
    #[arg(long, default_value = "docs/hpa-simulation.csv")]
    csv: PathBuf,
    /// PNG output.
    #[arg(long, default_value = "docs/hpa-simulation.png")]
    png: PathBuf,
}

/// Cluster-time constants of the metric pipeline (scaled by `--time-scale`).
const SYNC: Duration = Duration::from_secs(15);
const SCRAPE: Duration = Duration::from_millis(3750);
const AVERAGE_OVER: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Starting,
    Ready,
    Terminating,
}

struct Replica {
    id: usize,
    url: String,
    child: Child,
    state: State,
    samples: VecDeque<(Instant, f64)>,
}

/// Per-interval request statistics, shared by the load workers.
#[derive(Default)]
struct Window {
    ok: u64,
    errors: BTreeMap<String, u64>,
    latencies_us: Vec<u64>,
}

/// The ready endpoints, in round-robin order.
#[derive(Default)]
struct Endpoints {
    urls: RwLock<Vec<String>>,
    next: AtomicUsize,
}

impl Endpoints {
    fn pick(&self) -> Option<String> {
        let urls = self.urls.read().unwrap_or_else(|p| p.into_inner());
        let n = urls.len();
        (n > 0).then(|| urls[self.next.fetch_add(1, Ordering::Relaxed) % n].clone())
    }

    fn set(&self, f: impl FnOnce(&mut Vec<String>)) {
        f(&mut self.urls.write().unwrap_or_else(|p| p.into_inner()));
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// A free loopback port (bound and released; the replica binds it next).
fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn spawn_replica(args: &Args, dir: &Path, id: usize) -> Result<Replica> {
    let port = free_port()?;
    let log = std::fs::File::create(dir.join(format!("replica-{id}.log")))?;
    let child = Command::new(&args.sluice)
        .args([
            "serve",
            "--host",
            "127.0.0.1",
            "--grpc-port",
            "0",
            "--log",
            "warn",
        ])
        .args(["--http-port", &port.to_string()])
        .arg("--model-repository")
        .arg(dir.join("repo"))
        .args([
            "--shutdown-delay-secs",
            &args.shutdown_delay_secs.to_string(),
        ])
        .args(["--shutdown-grace-secs", "10"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", args.sluice.display()))?;
    Ok(Replica {
        id,
        url: format!("http://127.0.0.1:{port}"),
        child,
        state: State::Starting,
        samples: VecDeque::new(),
    })
}

fn sigterm(child: &Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
}

/// Starting replicas whose readiness is 200 become ready and join the endpoints.
async fn poll_ready(probe: &reqwest::Client, replicas: &mut [Replica], endpoints: &Endpoints) {
    for r in replicas.iter_mut().filter(|r| r.state == State::Starting) {
        let ready = get(probe, &format!("{}/v2/health/ready", r.url)).await;
        if ready.is_some_and(|(s, _)| s == 200) {
            r.state = State::Ready;
            endpoints.set(|u| u.push(r.url.clone()));
        }
    }
}

async fn get(client: &reqwest::Client, url: &str) -> Option<(u16, String)> {
    let r = client.get(url).send().await.ok()?;
    let status = r.status().as_u16();
    Some((status, r.text().await.ok()?))
}

/// A KServe v2 JSON request for `dense`: one row of 512 pseudo-random floats.
fn dense_body() -> Bytes {
    let mut x: u32 = 12345;
    let data: Vec<f32> = (0..512)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            #[allow(clippy::cast_precision_loss)]
            let v = (x >> 8) as f32 / (1u32 << 24) as f32;
            v
        })
        .collect();
    let body = serde_json::json!({"inputs": [{"name": "input", "shape": [1, 512], "datatype": "FP32", "data": data}]});
    Bytes::from(body.to_string())
}

/// Closed-loop worker `i`: active while the level is above `i`.
async fn worker(
    i: usize,
    mut level: watch::Receiver<usize>,
    stop: Arc<AtomicBool>,
    endpoints: Arc<Endpoints>,
    window: Arc<Mutex<Window>>,
    client: reqwest::Client,
    body: Bytes,
) {
    while !stop.load(Ordering::Relaxed) {
        if i >= *level.borrow_and_update() {
            if level.changed().await.is_err() {
                return;
            }
            continue;
        }
        let Some(url) = endpoints.pick() else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let start = Instant::now();
        let result = client
            .post(format!("{url}/v2/models/dense/infer"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await;
        let outcome = match result {
            Ok(r) if r.status() == 200 => match r.bytes().await {
                Ok(_) => Ok(()),
                Err(_) => Err("body".to_string()),
            },
            Ok(r) => Err(format!("http_{}", r.status().as_u16())),
            Err(e) if e.is_connect() => Err("connect".into()),
            Err(e) if e.is_timeout() => Err("timeout".into()),
            Err(_) => Err("other".into()),
        };
        let took = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
        let mut w = window.lock().unwrap_or_else(|p| p.into_inner());
        match outcome {
            Ok(()) => {
                w.ok += 1;
                w.latencies_us.push(took);
            }
            Err(kind) => *w.errors.entry(kind).or_default() += 1,
        }
    }
}

fn setup_dir(args: &Args) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("sluice-hpa-sim-{}", std::process::id()));
    let model = dir.join("repo/dense");
    std::fs::create_dir_all(model.join("1"))?;
    std::fs::copy(&args.model_file, model.join("1/model.onnx"))
        .with_context(|| format!("copying {}", args.model_file.display()))?;
    let config = format!("instances = {}\nintra_op_threads = 1\n", args.instances);
    std::fs::write(model.join("config.toml"), config)?;
    Ok(dir)
}

#[allow(clippy::too_many_lines)]
async fn run(args: Args) -> Result<bool> {
    let profile = parse_profile(&args.profile)?;
    if !args.sluice.is_file() {
        bail!(
            "{} not found: build it with `cargo build --release`",
            args.sluice.display()
        );
    }
    let dir = setup_dir(&args)?;
    let scale = args.time_scale.max(0.01);
    let wall = |d: Duration| d.div_f64(scale);
    let (sync, scrape, average_over) = (wall(SYNC), wall(SCRAPE), wall(AVERAGE_OVER));
    let mut spec = Spec::base(args.min_replicas, args.max_replicas, args.target);
    spec.min = spec.min.max(1);
    let mut hpa = Autoscaler::new(spec);
    eprintln!(
        "sync {sync:?}, scrape {scrape:?}, average over {average_over:?}, down window {:?}; logs in {}",
        wall(hpa.spec.down.window),
        dir.display()
    );

    let probe = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let endpoints = Arc::new(Endpoints::default());
    let mut replicas: Vec<Replica> = Vec::new();
    let mut next_id = 0;
    for _ in 0..args.min_replicas.max(1) {
        replicas.push(spawn_replica(&args, &dir, next_id)?);
        next_id += 1;
    }
    // Wait for the first replicas before offering load (bounded).
    let deadline = Instant::now() + Duration::from_secs(60);
    while replicas.iter().any(|r| r.state == State::Starting) {
        poll_ready(&probe, &mut replicas, &endpoints).await;
        if Instant::now() > deadline {
            bail!("the first replicas were not ready within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let max_clients = profile.iter().map(|p| p.1).max().unwrap_or(1);
    let (level_tx, level_rx) = watch::channel(0usize);
    let stop = Arc::new(AtomicBool::new(false));
    let window = Arc::new(Mutex::new(Window::default()));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .tcp_nodelay(true)
        .build()?;
    let body = dense_body();
    let mut workers = tokio::task::JoinSet::new();
    for i in 0..max_clients {
        let w = worker(
            i,
            level_rx.clone(),
            stop.clone(),
            endpoints.clone(),
            window.clone(),
            client.clone(),
            body.clone(),
        );
        workers.spawn(w);
    }

    let start = Instant::now();
    let total: Duration = profile.iter().map(|p| p.0).sum();
    let mut rows: Vec<Row> = Vec::new();
    let (mut terminating, mut bad_exits, mut errors_total, mut ok_total) =
        (Vec::<Replica>::new(), 0, 0, 0);
    let mut ticker = tokio::time::interval(scrape);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_sync = Instant::now();
    while start.elapsed() < total {
        ticker.tick().await;
        let now = Instant::now();
        let elapsed = now - start;
        let mut acc = Duration::ZERO;
        let offered = profile
            .iter()
            .find(|(d, _)| {
                acc += *d;
                elapsed < acc
            })
            .map_or(0, |p| p.1);
        level_tx.send_if_modified(|l| std::mem::replace(l, offered) != offered);

        // Readiness, scrapes and exits.
        poll_ready(&probe, &mut replicas, &endpoints).await;
        for r in &mut replicas {
            if r.state == State::Ready
                && let Some((200, text)) = get(&probe, &format!("{}/metrics", r.url)).await
            {
                r.samples.push_back((now, inflight(&text)));
            }
            while r
                .samples
                .front()
                .is_some_and(|(t, _)| now - *t > average_over)
            {
                r.samples.pop_front();
            }
        }
        terminating.retain_mut(|r| match r.child.try_wait() {
            Ok(Some(status)) => {
                if !status.success() {
                    eprintln!("replica {} exited with {status}", r.id);
                    bad_exits += 1;
                }
                false
            }
            _ => true,
        });
        if now - last_sync < sync {
            continue;
        }
        let interval = now - last_sync;
        last_sync = now;

        // HPA sync.
        let pods: Vec<(usize, PodMetric)> = replicas
            .iter()
            .map(|r| {
                let m = match r.state {
                    State::Ready if !r.samples.is_empty() => {
                        #[allow(clippy::cast_precision_loss)]
                        let n = r.samples.len() as f64;
                        PodMetric::Value(r.samples.iter().map(|s| s.1).sum::<f64>() / n)
                    }
                    State::Ready => PodMetric::Missing,
                    _ => PodMetric::Unready,
                };
                (r.id, m)
            })
            .collect();
        let metrics: Vec<PodMetric> = pods.iter().map(|p| p.1).collect();
        let current = replicas.len();
        let decision = hpa.sync(elapsed.mul_f64(scale), current, &metrics);
        if decision.desired > current {
            for _ in current..decision.desired {
                replicas.push(spawn_replica(&args, &dir, next_id)?);
                next_id += 1;
            }
        } else if decision.desired < current {
            // As a ReplicaSet does: unready pods first, then the newest.
            replicas.sort_by_key(|r| (r.state == State::Ready, std::cmp::Reverse(r.id)));
            for mut r in replicas
                .drain(..current - decision.desired)
                .collect::<Vec<_>>()
            {
                endpoints.set(|u| u.retain(|x| *x != r.url));
                sigterm(&r.child);
                r.state = State::Terminating;
                terminating.push(r);
            }
            replicas.sort_by_key(|r| r.id);
        }

        let w = std::mem::take(&mut *window.lock().unwrap_or_else(|p| p.into_inner()));
        let errors: u64 = w.errors.values().sum();
        if errors > 0 {
            eprintln!("errors at {:.1} s: {:?}", elapsed.as_secs_f64(), w.errors);
        }
        let (ok, mut lat) = (w.ok, w.latencies_us);
        lat.sort_unstable();
        #[allow(clippy::cast_precision_loss)]
        let p99_ms = lat
            .get((lat.len() * 99).div_ceil(100).saturating_sub(1))
            .map_or(0.0, |&v| v as f64 / 1e3);
        errors_total += errors;
        ok_total += ok;
        #[allow(clippy::cast_precision_loss)]
        let row = Row {
            t: elapsed.as_secs_f64(),
            clients: offered,
            throughput: ok as f64 / interval.as_secs_f64(),
            p99_ms,
            errors,
            pods: pods.iter().map(|(id, m)| (*id, m.value())).collect(),
            raw: decision.raw,
            desired: decision.desired,
            current,
            ready: pods.iter().filter(|p| p.1 != PodMetric::Unready).count(),
        };
        row.print();
        rows.push(row);
    }

    // Stop the load, then drain every replica.
    stop.store(true, Ordering::Relaxed);
    let _ = level_tx.send(0);
    let drain = tokio::time::timeout(Duration::from_secs(15), async {
        while workers.join_next().await.is_some() {}
    });
    if drain.await.is_err() {
        workers.abort_all();
    }
    let last = std::mem::take(&mut *window.lock().unwrap_or_else(|p| p.into_inner()));
    errors_total += last.errors.values().sum::<u64>();
    ok_total += last.ok;
    for r in &replicas {
        sigterm(&r.child);
    }
    terminating.extend(replicas);
    let deadline = Instant::now() + Duration::from_secs(args.shutdown_delay_secs + 15);
    for r in &mut terminating {
        let status = loop {
            match r.child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                _ => break None,
            }
        };
        if !status.is_some_and(|s| s.success()) {
            eprintln!("replica {} did not exit cleanly: {status:?}", r.id);
            let _ = r.child.kill();
            bad_exits += 1;
        }
    }

    record::write_csv(&args.csv, &rows)?;
    record::write_png(&args.png, &rows, args.target)?;
    let _ = std::fs::remove_dir_all(dir.join("repo"));
    record::summarize(&rows, ok_total, errors_total, bad_exits, next_id);
    Ok(errors_total == 0 && bad_exits == 0)
}
