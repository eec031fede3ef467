//! Server against raw ONNX Runtime, and batching on against off, measured in
//! one run on the same cores (ratios are what count on a shared machine).
//!
//! ```text
//! cargo bench --bench compare -- iris        # p50 of one iris request vs session.run
//! cargo bench --bench compare -- swap        # steady load vs the same load during repeated hot swaps
//! cargo bench --bench compare -- batching    # dense model (REST binary), concurrency sweep, batching on/off, vs raw
//! cargo bench --bench compare -- raw         # raw rows/s of iris and dense per batch size, one session per core
//! cargo bench --bench compare -- raw-mixed   # dense, one session: fixed against varying batch sizes and values
//! ```
//!
//! `raw` is what `scripts/bench-pinned.sh` runs under `taskset` on the
//! server's cores; it prints one `raw model=… batch=… sessions=… rows_per_s=…`
//! line per point (`RAW_SECS` per point, default 2).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use bytes::Bytes;
use sluice::runtime::{self, BatchInput, Instance, ProviderOptions};
use sluice::tensor::{DataType, TensorData};
use sluice::{Listeners, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn lib() -> PathBuf {
    let env = std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from);
    runtime::locate_library(None, env.as_deref()).expect("run `make setup` first")
}

struct Server {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

async fn start(repo: &Path) -> Server {
    let config = ServerConfig::new(repo.to_path_buf(), lib());
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", http.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(sluice::run(
        config,
        Listeners {
            http,
            grpc: None,
            metrics: None,
        },
        async move {
            let _ = rx.await;
        },
    ));
    let client = reqwest::Client::new();
    while client
        .get(format!("{url}/v2/health/ready"))
        .send()
        .await
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Server {
        url,
        stop: Some(tx),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn fp32(values: &[f32]) -> TensorData {
    TensorData::Fixed(Bytes::from(
        values
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>(),
    ))
}

fn raw_instance(model: &Path) -> Instance {
    runtime::init(&lib()).unwrap();
    runtime::load_instance(model, &ProviderOptions::default(), None, 0)
        .unwrap()
        .0
}

fn raw_latencies(
    model: &Path,
    name: &str,
    shape: Vec<usize>,
    data: &TensorData,
    n: usize,
) -> Vec<Duration> {
    let mut instance = raw_instance(model);
    let wanted: Vec<usize> = (0..instance.signature().unwrap().outputs.len()).collect();
    let mut out = Vec::with_capacity(n);
    for i in 0..n + n / 10 {
        let input = [BatchInput {
            name,
            datatype: DataType::Fp32,
            shape: shape.clone(),
            parts: vec![data],
        }];
        let t = Instant::now();
        instance.run(&input, &wanted).unwrap();
        if i >= n / 10 {
            out.push(t.elapsed());
        }
    }
    out.sort();
    out
}

async fn iris() {
    let n = 3000;
    let server = start(&root().join("models")).await;
    let client = reqwest::Client::new();
    let url = format!("{}/v2/models/iris/infer", server.url);
    let body = Bytes::from_static(br#"{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[5.1,3.5,1.4,0.2]}]}"#);
    let mut served = Vec::with_capacity(n);
    for i in 0..n + 300 {
        let t = Instant::now();
        let r = client
            .post(&url)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
        if i >= 300 {
            served.push(t.elapsed());
        }
    }
    served.sort();
    let raw = raw_latencies(
        &root().join("models/iris/1/model.onnx"),
        "input",
        vec![1, 4],
        &fp32(&[5.1, 3.5, 1.4, 0.2]),
        n,
    );
    let (s50, r50) = (percentile(&served, 0.5), percentile(&raw, 0.5));
    let (s99, r99) = (percentile(&served, 0.99), percentile(&raw, 0.99));
    println!(
        "iris, one row, sequential, {n} requests each (REST JSON over loopback, client in the same process)"
    );
    println!(
        "  server  p50 {:>8.1} µs  p99 {:>8.1} µs",
        s50.as_secs_f64() * 1e6,
        s99.as_secs_f64() * 1e6
    );
    println!(
        "  raw     p50 {:>8.1} µs  p99 {:>8.1} µs",
        r50.as_secs_f64() * 1e6,
        r99.as_secs_f64() * 1e6
    );
    println!(
        "  ratio p50 {:.1}x, difference p50 {:.1} µs",
        s50.as_secs_f64() / r50.as_secs_f64(),
        (s50.as_secs_f64() - r50.as_secs_f64()) * 1e6
    );
    drop(server.stop);
}

/// Closed loop at `concurrency` for `secs`; returns (req/s, p50, p99).
async fn closed_loop(
    url: &str,
    body: Bytes,
    header_len: Option<usize>,
    concurrency: usize,
    secs: f64,
) -> (f64, Duration, Duration) {
    let client = reqwest::Client::new();
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, body, stop, errors, header_len) = (
            client.clone(),
            url.to_string(),
            body.clone(),
            stop.clone(),
            errors.clone(),
            header_len,
        );
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let request = client.post(&url).body(body.clone());
                let request = match header_len {
                    Some(n) => request
                        .header("inference-header-content-length", n)
                        .header("content-type", "application/octet-stream"),
                    None => request.header("content-type", "application/json"),
                };
                match request.send().await {
                    Ok(r) if r.status() == 200 => {
                        r.bytes().await.unwrap();
                        lat.push(t.elapsed());
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            lat
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let took = started.elapsed().as_secs_f64();
    assert_eq!(errors.load(Ordering::Relaxed), 0, "errors during the run");
    all.sort();
    (
        all.len() as f64 / took,
        percentile(&all, 0.5),
        percentile(&all, 0.99),
    )
}

/// Raw ONNX Runtime: `threads` sessions (one per thread, intra 1), each
/// running batches of `batch` rows of the dense model for `secs`. Returns rows/s.
fn raw_throughput(model: &Path, batch: usize, threads: usize, secs: f64) -> f64 {
    raw_rows_per_s(model, 512, batch, threads, secs)
}

/// Raw ONNX Runtime on a model with one FP32 input `input` of `[-1, width]`.
fn raw_rows_per_s(model: &Path, width: usize, batch: usize, threads: usize, secs: f64) -> f64 {
    let rows = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (model, rows) = (model.to_path_buf(), rows.clone());
            std::thread::spawn(move || {
                let mut instance = raw_instance(&model);
                let data = fp32(&vec![0.5; batch * width]);
                let started = Instant::now();
                while started.elapsed().as_secs_f64() < secs {
                    let input = [BatchInput {
                        name: "input",
                        datatype: DataType::Fp32,
                        shape: vec![batch, width],
                        parts: vec![&data],
                    }];
                    instance.run(&input, &[0]).unwrap();
                    rows.fetch_add(batch as u64, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    rows.load(Ordering::Relaxed) as f64 / secs
}

async fn batching() {
    let dense = root().join("models/dense/1/model.onnx");
    let secs = 4.0;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let mut best = (0usize, 0.0f64);
    for batch in [1, 8, 32, 64] {
        let r = raw_throughput(&dense, batch, cores, secs);
        println!("raw onnx runtime, batch {batch:>3}, {cores} sessions: {r:>9.0} rows/s");
        if r > best.1 {
            best = (batch, r);
        }
    }
    let repos: Vec<(&str, tempfile::TempDir)> = [("on", ""), ("off", "max_batch_size = 0\n")]
        .into_iter()
        .map(|(label, cfg)| {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(dir.path().join("dense/1")).unwrap();
            std::fs::copy(&dense, dir.path().join("dense/1/model.onnx")).unwrap();
            std::fs::write(dir.path().join("dense/config.toml"), cfg).unwrap();
            (label, dir)
        })
        .collect();
    // Triton's binary tensor extension, as tritonclient sends by default.
    let header = br#"{"inputs":[{"name":"input","shape":[1,512],"datatype":"FP32","parameters":{"binary_data_size":2048}}],"outputs":[{"name":"output","parameters":{"binary_data":true}}]}"#;
    let mut raw = header.to_vec();
    for i in 0..512 {
        raw.extend_from_slice(&((i % 17) as f32 * 0.1).to_le_bytes());
    }
    let body = Bytes::from(raw);
    let header_len = header.len();
    let mut results = Vec::new();
    for (label, repo) in &repos {
        let server = start(repo.path()).await;
        let url = format!("{}/v2/models/dense/infer", server.url);
        closed_loop(&url, body.clone(), Some(header_len), 8, 1.0).await; // warm up
        for c in [1, 8, 32, 64, 128] {
            let (rps, p50, p99) = closed_loop(&url, body.clone(), Some(header_len), c, secs).await;
            println!(
                "server, batching {label:>3}, concurrency {c:>3}: {rps:>8.0} req/s  p50 {:>8.2} ms  p99 {:>8.2} ms",
                p50.as_secs_f64() * 1e3,
                p99.as_secs_f64() * 1e3
            );
            results.push((*label, c, rps));
        }
        drop(server.stop);
    }
    for c in [1, 8, 32, 64, 128] {
        let on = results
            .iter()
            .find(|r| r.0 == "on" && r.1 == c)
            .map_or(0.0, |r| r.2);
        let off = results
            .iter()
            .find(|r| r.0 == "off" && r.1 == c)
            .map_or(1.0, |r| r.2);
        println!(
            "concurrency {c:>3}: batching on/off throughput = {:.2}x",
            on / off
        );
    }
    let saturated = results
        .iter()
        .filter(|r| r.0 == "on")
        .map(|r| r.2)
        .fold(0.0, f64::max);
    println!(
        "saturated server {saturated:.0} rows/s vs raw best (batch {}) {:.0} rows/s = {:.0}%",
        best.0,
        best.1,
        100.0 * saturated / best.1
    );
}

/// Steady closed-loop load, then the same load while version 1 of the model
/// is swapped (changed on disk + a load call) every `SWAP_INTERVAL_MS`
/// (default 200 ms): p50/p99/throughput
/// of both phases, in one run.
async fn swap() {
    let fixtures = root().join("tests/fixtures/swap");
    let repo = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(repo.path().join("m/1")).unwrap();
    std::fs::copy(fixtures.join("v1.onnx"), repo.path().join("m/1/model.onnx")).unwrap();
    let server = start(repo.path()).await;
    let url = format!("{}/v2/models/m/infer", server.url);
    let body = Bytes::from_static(
        br#"{"inputs":[{"name":"x","shape":[1,1],"datatype":"FP32","data":[0]}]}"#,
    );
    let secs = 6.0;
    closed_loop(&url, body.clone(), None, 8, 1.0).await; // warm up
    let (steady_rps, steady_p50, steady_p99) = closed_loop(&url, body.clone(), None, 8, secs).await;
    // SWAP_INTERVAL_MS sets the pause between swaps (default 200 ms).
    let interval = Duration::from_millis(
        std::env::var("SWAP_INTERVAL_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(200),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (stop, base, dir) = (stop.clone(), server.url.clone(), repo.path().to_path_buf());
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut swaps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let file = fixtures.join(format!("v{}.onnx", 1 + swaps % 2));
                std::fs::copy(file, dir.join("m/1/model.onnx")).unwrap();
                let r = client
                    .post(format!("{base}/v2/repository/models/m/load"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                swaps += 1;
                tokio::time::sleep(interval).await;
            }
            swaps
        })
    };
    let (swap_rps, swap_p50, swap_p99) = closed_loop(&url, body, None, 8, secs).await;
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.await.unwrap();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "model m (x + k), closed loop at concurrency 8, REST JSON, {secs} s per phase, zero errors asserted"
    );
    println!(
        "  steady       {steady_rps:>8.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms",
        ms(steady_p50),
        ms(steady_p99)
    );
    println!(
        "  {swaps:>3} swaps   {swap_rps:>8.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms",
        ms(swap_p50),
        ms(swap_p99)
    );
    println!(
        "  during swaps / steady: throughput {:.2}x, p50 {:.2}x, p99 {:.2}x",
        swap_rps / steady_rps,
        swap_p50.as_secs_f64() / steady_p50.as_secs_f64(),
        swap_p99.as_secs_f64() / steady_p99.as_secs_f64()
    );
    drop(server.stop);
}

/// Raw rows/s of iris and dense at each batch size, one session per core
/// this process may run on (so `taskset` decides), one line per point.
fn raw() {
    let secs = std::env::var("RAW_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(2.0);
    let sessions = std::thread::available_parallelism().map_or(1, usize::from);
    for (model, width) in [("iris", 4), ("dense", 512)] {
        let path = root().join(format!("models/{model}/1/model.onnx"));
        for batch in [1, 8, 32, 64] {
            let r = raw_rows_per_s(&path, width, batch, sessions, secs);
            println!("raw model={model} batch={batch} sessions={sessions} rows_per_s={r:.0}");
        }
    }
}

/// Raw dense rows/s on one session, with batches as a server forms them
/// and as `raw` runs them: one fixed size against sizes drawn from
/// `MIXED_LO..=MIXED_HI` (default 10..=30, fixed 20, the mean), with every
/// value 0.5 against values that vary. A server's runs vary in both; this
/// says whether ONNX Runtime's cost per row does.
fn raw_mixed() {
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            .unwrap_or(default)
    };
    let (lo, hi) = (env("MIXED_LO", 10).max(1), env("MIXED_HI", 30));
    let hi = hi.max(lo);
    let secs = std::env::var("RAW_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(3.0);
    let mut instance = raw_instance(&root().join("models/dense/1/model.onnx"));
    for (mixed, varied) in [(false, false), (true, false), (false, true), (true, true)] {
        // One body per batch size, built before the clock starts.
        let bodies: Vec<TensorData> = (0..=hi)
            .map(|rows| {
                let values: Vec<f32> = (0..rows * 512)
                    .map(|i| {
                        if varied {
                            (i * 7919 % 8000) as f32 / 1000.0
                        } else {
                            0.5
                        }
                    })
                    .collect();
                fp32(&values)
            })
            .collect();
        // xorshift: the same sequence of sizes every run.
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let (mut rows, mut runs) = (0usize, 0usize);
        let started = Instant::now();
        while started.elapsed().as_secs_f64() < secs {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let batch = if mixed {
                lo + (seed % (hi - lo + 1) as u64) as usize
            } else {
                (lo + hi) / 2
            };
            let input = [BatchInput {
                name: "input",
                datatype: DataType::Fp32,
                shape: vec![batch, 512],
                parts: vec![&bodies[batch]],
            }];
            instance.run(&input, &[0]).unwrap();
            rows += batch;
            runs += 1;
        }
        let took = started.elapsed().as_secs_f64();
        let sizes = if mixed {
            format!("{lo}..={hi}")
        } else {
            ((lo + hi) / 2).to_string()
        };
        println!(
            "raw-mixed model=dense batch={sizes} values={} runs={runs} rows_per_s={:.0} us_per_row={:.2}",
            if varied { "varied" } else { "constant" },
            rows as f64 / took,
            took * 1e6 / rows as f64
        );
    }
}

fn main() {
    let which = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_else(|| "iris".into());
    let rt = tokio::runtime::Runtime::new().unwrap();
    match which.as_str() {
        "iris" => rt.block_on(iris()),
        "batching" => rt.block_on(batching()),
        "swap" => rt.block_on(swap()),
        "raw" => raw(),
        "raw-mixed" => raw_mixed(),
        other => eprintln!("unknown scenario {other}; use iris, batching, swap, raw or raw-mixed"),
    }
}
