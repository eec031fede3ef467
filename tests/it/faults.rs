//! Fault injection: a model whose run fails for some inputs, model files
//! deleted or truncated under a loaded model, an unreadable repository and a
//! full disk during polls, clients that disconnect mid-request and mid-stream,
//! and SIGTERM during a hot swap. In every case the other requests are
//! unaffected and nothing admitted is lost without an answer.
//!
//! Real ONNX Runtime sessions on real `.onnx` files, real servers on port 0,
//! real clients (reqwest, the generated tonic client, raw `TcpStream`s).
//! Waits poll a condition with a deadline; the only fixed waits let a few
//! poll intervals pass to show that *nothing* changes.
//!
//! Each test prints one line: `faults: <name>: N requests, M expected errors,
//! 0 lost` (`cargo test --test it faults -- --nocapture`); the figures are in
//! `docs/fault-results.md`.

use crate::grpc::{client as grpc_client, raw_request};
use crate::harness::{TestServer, bundled_repo, fixture, ort_lib};
use crate::shutdown::{Outcome, Server, free_port};
use bytes::Bytes;
use serde_json::{Value, json};
use sluice::config::ControlMode;
use sluice::tensor::{DataType, Tensor, TensorData};
use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;
use tonic::Code;

/// How long one request may take before it counts as lost.
const REQUEST_LIMIT: Duration = Duration::from_secs(30);

// === bookkeeping ===

/// What the clients of one test saw. Every request sent ends in exactly one
/// of `ok`, `expected_errors`, `wrong` (a wrong answer or an unexpected
/// status) or `lost` (no answer: a transport error or no reply in time).
#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    ok: AtomicU64,
    expected_errors: AtomicU64,
    wrong: Mutex<Vec<String>>,
    lost: Mutex<Vec<String>>,
    /// Per model, the K (= y - x) of the latest answer of a `swap` model.
    last_k: Mutex<HashMap<String, f64>>,
    /// Per model, every K seen.
    ks: Mutex<HashMap<String, BTreeSet<u64>>>,
}

impl Tally {
    fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    fn wrong(&self, what: String) {
        self.wrong.lock().unwrap().push(what);
    }

    fn lost(&self, what: String) {
        self.lost.lock().unwrap().push(what);
    }

    fn saw_k(&self, model: &str, k: f64) {
        self.last_k.lock().unwrap().insert(model.to_string(), k);
        self.ks
            .lock()
            .unwrap()
            .entry(model.to_string())
            .or_default()
            .insert(k as u64);
    }

    fn last_k(&self, model: &str) -> Option<f64> {
        self.last_k.lock().unwrap().get(model).copied()
    }

    fn ks(&self, model: &str) -> Vec<u64> {
        self.ks
            .lock()
            .unwrap()
            .get(model)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Asserts nothing went wrong or was lost, and prints the summary line.
    fn finish(&self, name: &str, note: &str) {
        let wrong = self.wrong.lock().unwrap();
        let lost = self.lost.lock().unwrap();
        let sent = self.sent.load(Ordering::Relaxed);
        let expected = self.expected_errors.load(Ordering::Relaxed);
        eprintln!(
            "faults: {name}: {sent} requests, {expected} expected errors, {} lost, {} wrong{}",
            lost.len(),
            wrong.len(),
            if note.is_empty() {
                String::new()
            } else {
                format!(" ({note})")
            }
        );
        assert!(
            wrong.is_empty(),
            "{} wrong answers, first: {:?}",
            wrong.len(),
            wrong.first()
        );
        assert!(
            lost.is_empty(),
            "{} requests lost, first: {:?}",
            lost.len(),
            lost.first()
        );
        assert_eq!(
            sent,
            self.ok() + expected,
            "every request ends as ok or an expected error"
        );
    }
}

/// Client tasks that run until stopped (or until their request count is done).
#[derive(Default)]
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Load {
    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.join().await;
    }

    async fn join(self) {
        for t in self.tasks {
            t.await.unwrap();
        }
    }
}

/// Polls `check` every 5 ms until it holds; fails the test after `limit`.
async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until `n` more requests have succeeded: the server keeps serving.
async fn more_ok(tally: &Tally, n: u64) {
    let target = tally.ok() + n;
    eventually(
        &format!("{n} more successful requests"),
        Duration::from_secs(30),
        || async move { tally.ok() >= target },
    )
    .await;
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(REQUEST_LIMIT)
        .build()
        .unwrap()
}

/// Starts `clients` HTTP clients on a `swap` fixture model (y = x + K), each
/// sending distinct x until stopped; an answer must be 200 with K in `allowed`.
fn swap_clients(
    load: &mut Load,
    tally: &Arc<Tally>,
    base: &str,
    model: &str,
    clients: usize,
    allowed: &[u64],
) {
    for c in 0..clients {
        let (tally, stop) = (tally.clone(), load.stop.clone());
        let (client, url, model) = (
            http_client(),
            format!("{base}/v2/models/{model}/infer"),
            model.to_string(),
        );
        let allowed = allowed.to_vec();
        let offset = 100_000 * (c as u64 + 1);
        load.tasks.push(tokio::spawn(async move {
            let mut k = 0u64;
            while !stop.load(Ordering::Relaxed) {
                k += 1;
                let x = (offset + k % 100_000) as f32;
                let body = json!({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [x]}]});
                tally.sent.fetch_add(1, Ordering::Relaxed);
                match client.post(&url).json(&body).send().await {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let out: Value = r.json().await.unwrap_or(Value::Null);
                        let y = out["outputs"][0]["data"][0].as_f64();
                        match y.map(|y| y - f64::from(x)) {
                            Some(kk) if status == 200 && allowed.contains(&(kk as u64)) && kk.fract() == 0.0 => {
                                tally.ok.fetch_add(1, Ordering::Relaxed);
                                tally.saw_k(&model, kk);
                            }
                            _ => tally.wrong(format!("{model} x={x}: {status} {out}")),
                        }
                    }
                    Err(e) => tally.lost(format!("{model} x={x}: {e}")),
                }
            }
        }));
    }
}

fn fp32_rows(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Sum of the samples of metric `name` whose labels include `labels`.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            series
                .strip_prefix(name)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('{'))
                && labels
                    .iter()
                    .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|(_, value)| value.parse::<f64>().ok())
        .sum()
}

async fn metrics_text(client: &reqwest::Client, base: &str) -> String {
    client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The repository index (200), or the status and error of a failed call.
async fn index(s: &TestServer) -> Result<Vec<Value>, (u16, Value)> {
    let (status, body) = s.post_json("/v2/repository/index", &json!({})).await;
    match body.as_array() {
        Some(rows) if status == 200 => Ok(rows.clone()),
        _ => Err((status, body)),
    }
}

/// Index rows of `model` that report a failure, as (version, state, reason):
/// UNAVAILABLE ones, and READY ones that serve an earlier session because
/// their reload failed.
async fn failed_rows(s: &TestServer, model: &str) -> Vec<(Option<String>, String, String)> {
    index(s)
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r["name"] == model && r["reason"].as_str().is_some_and(|r| !r.is_empty()))
        .map(|r| {
            (
                r["version"].as_str().map(str::to_string),
                r["state"].as_str().unwrap_or_default().to_string(),
                r["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// `<repo>/<name>/1/model.onnx` from `file`, with an optional config.toml.
fn add_model(repo: &Path, name: &str, file: &Path, config: Option<&str>) {
    let dir = repo.join(name);
    std::fs::create_dir_all(dir.join("1")).unwrap();
    std::fs::copy(file, dir.join("1/model.onnx")).unwrap();
    if let Some(config) = config {
        std::fs::write(dir.join("config.toml"), config).unwrap();
    }
}

/// Replaces `path` atomically with the content of `file` (write aside, rename).
fn replace_atomically(path: &Path, file: &Path) {
    let staging = path.with_extension("onnx.tmp");
    std::fs::copy(file, &staging).unwrap();
    std::fs::rename(&staging, path).unwrap();
}

fn swap_model(k: u64) -> PathBuf {
    fixture(&format!("swap/v{k}.onnx"))
}

// === 1. a model whose run fails for some inputs ===

/// `lookup`: y = 10 i + 0.5 for i in -16..=15; any other i fails the run
/// inside ONNX Runtime (Gather out of bounds). One instance and a 3 ms queue
/// delay, so bad requests are batched with good ones.
const LOOKUP_CONFIG: &str = "instances = 1\n[dynamic_batching]\nmax_queue_delay_us = 3000\n";

fn lookup_expect(i: i64) -> f32 {
    let k = if i < 0 { i + 16 } else { i };
    10.0 * k as f32 + 0.5
}

/// A `lookup` request over HTTP: `indices` as one row each.
async fn lookup_http(client: &reqwest::Client, base: &str, indices: &[i64]) -> (u16, Value) {
    let body = json!({"inputs": [{"name": "i", "shape": [indices.len(), 1], "datatype": "INT64", "data": indices}]});
    match client
        .post(format!("{base}/v2/models/lookup/infer"))
        .json(&body)
        .send()
        .await
    {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.json().await.unwrap_or(Value::Null))
        }
        Err(e) => (0, Value::String(e.to_string())),
    }
}

fn lookup_grpc(indices: &[i64]) -> sluice::grpc::pb::ModelInferRequest {
    let data: Vec<u8> = indices.iter().flat_map(|i| i.to_le_bytes()).collect();
    raw_request(
        "lookup",
        &[Tensor {
            name: "i".into(),
            datatype: DataType::Int64,
            shape: vec![indices.len(), 1],
            data: TensorData::Fixed(Bytes::from(data)),
        }],
    )
}

/// Checks an HTTP lookup answer; `bad` requests must get 500 with ONNX
/// Runtime's reason, good ones exactly their rows.
fn check_lookup_http(tally: &Tally, indices: &[i64], bad: bool, status: u16, out: &Value) {
    if status == 0 {
        tally.lost(format!("lookup {indices:?}: {out}"));
    } else if bad {
        let error = out["error"].as_str().unwrap_or_default();
        if status == 500 && error.contains("out of data bounds") {
            tally.expected_errors.fetch_add(1, Ordering::Relaxed);
        } else {
            tally.wrong(format!("bad lookup {indices:?}: {status} {out}"));
        }
    } else {
        let want: Vec<f64> = indices
            .iter()
            .map(|&i| f64::from(lookup_expect(i)))
            .collect();
        let got: Option<Vec<f64>> = out["outputs"][0]["data"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect());
        if status == 200 && got.as_ref() == Some(&want) {
            tally.ok.fetch_add(1, Ordering::Relaxed);
        } else {
            tally.wrong(format!("good lookup {indices:?}: {status} {out}"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_fails_for_some_inputs_fails_only_those_requests() {
    const PER_CLIENT: u64 = 60;
    let repo = tempfile::tempdir().unwrap();
    add_model(
        repo.path(),
        "lookup",
        &fixture("lookup.onnx"),
        Some(LOOKUP_CONFIG),
    );
    add_model(repo.path(), "other", &swap_model(1), None);
    let s = TestServer::start(repo.path()).await;
    let base = format!("http://{}", s.http);
    let tally = Arc::new(Tally::default());
    let mut load = Load::default();

    // Four HTTP clients with good requests of 1..3 rows.
    for c in 0..4i64 {
        let (tally, base, client) = (tally.clone(), base.clone(), http_client());
        load.tasks.push(tokio::spawn(async move {
            for k in 0..PER_CLIENT as i64 {
                let rows = 1 + (k % 3);
                let indices: Vec<i64> = (0..rows).map(|j| (c * 7 + k + j) % 32 - 16).collect();
                tally.sent.fetch_add(1, Ordering::Relaxed);
                let (status, out) = lookup_http(&client, &base, &indices).await;
                check_lookup_http(&tally, &indices, false, status, &out);
            }
        }));
    }
    // Two HTTP clients alternating bad and good requests (a bad request may
    // carry good rows too: the whole request fails, alone).
    for c in 0..2i64 {
        let (tally, base, client) = (tally.clone(), base.clone(), http_client());
        load.tasks.push(tokio::spawn(async move {
            for k in 0..PER_CLIENT as i64 {
                let bad = k % 2 == 0;
                let indices: Vec<i64> = if bad {
                    if k % 4 == 0 {
                        vec![16 + k + c]
                    } else {
                        vec![3, -17 - k]
                    }
                } else {
                    vec![(k + c) % 16]
                };
                tally.sent.fetch_add(1, Ordering::Relaxed);
                let (status, out) = lookup_http(&client, &base, &indices).await;
                check_lookup_http(&tally, &indices, bad, status, &out);
            }
        }));
    }
    // One gRPC client, every third request bad: INTERNAL.
    {
        let (tally, mut client) = (tally.clone(), grpc_client(s.grpc).await);
        load.tasks.push(tokio::spawn(async move {
            for k in 0..PER_CLIENT as i64 {
                let bad = k % 3 == 0;
                let indices = if bad {
                    vec![1000 + k]
                } else {
                    vec![k % 16, -1]
                };
                tally.sent.fetch_add(1, Ordering::Relaxed);
                let answer =
                    tokio::time::timeout(REQUEST_LIMIT, client.model_infer(lookup_grpc(&indices)))
                        .await;
                match answer {
                    Err(_) => tally.lost(format!("grpc lookup {indices:?}: no answer")),
                    Ok(Err(st))
                        if bad
                            && st.code() == Code::Internal
                            && st.message().contains("out of data bounds") =>
                    {
                        tally.expected_errors.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Ok(r)) if !bad => {
                        let r = r.into_inner();
                        let want: Vec<f32> = indices.iter().map(|&i| lookup_expect(i)).collect();
                        if r.raw_output_contents.first().map(|b| fp32_rows(b)) == Some(want) {
                            tally.ok.fetch_add(1, Ordering::Relaxed);
                        } else {
                            tally.wrong(format!("grpc lookup {indices:?}: {r:?}"));
                        }
                    }
                    Ok(other) => {
                        tally.wrong(format!("grpc lookup {indices:?} (bad: {bad}): {other:?}"))
                    }
                }
            }
        }));
    }
    // Two HTTP clients on another model.
    swap_clients(&mut load, &tally, &base, "other", 2, &[1]);
    let other_stop = load.stop.clone();

    // The lookup clients send a fixed number of requests; then stop the rest.
    let (other, lookups): (Vec<_>, Vec<_>) = {
        let mut tasks = std::mem::take(&mut load.tasks);
        let other = tasks.split_off(7);
        (other, tasks)
    };
    for t in lookups {
        t.await.unwrap();
    }
    more_ok(&tally, 10).await;
    other_stop.store(true, Ordering::Relaxed);
    for t in other {
        t.await.unwrap();
    }

    // The model keeps serving, over both protocols.
    let client = http_client();
    for i in [0, 5, 15, -16] {
        tally.sent.fetch_add(1, Ordering::Relaxed);
        let (status, out) = lookup_http(&client, &base, &[i]).await;
        check_lookup_http(&tally, &[i], false, status, &out);
    }
    let r = grpc_client(s.grpc)
        .await
        .model_infer(lookup_grpc(&[7]))
        .await
        .unwrap()
        .into_inner();
    tally.sent.fetch_add(1, Ordering::Relaxed);
    assert_eq!(fp32_rows(&r.raw_output_contents[0]), vec![70.5]);
    tally.ok.fetch_add(1, Ordering::Relaxed);

    let (_, m) = s.get("/metrics").await;
    let executions = metric(
        m.as_str().unwrap_or_default(),
        "sluice_executions_total",
        &[("model", "lookup")],
    );
    // Good lookups: 4 clients x 60, half of 2 x 60, two thirds of 60, 5 after.
    let good = 4 * PER_CLIENT + PER_CLIENT + PER_CLIENT * 2 / 3 + 5;
    tally.finish(
        "run_fails_for_some_inputs",
        &format!("{good} good lookups answered by {executions} successful runs"),
    );
    // Requests were batched (so bad ones shared batches with good ones).
    assert!(executions < good as f64, "no batching: {executions} runs");
    // The statistics count exactly the expected failures.
    let (_, stats) = s.get("/v2/models/lookup/stats").await;
    let fails = stats["model_stats"][0]["inference_stats"]["fail"]["count"].as_u64();
    let expected = tally.expected_errors.load(Ordering::Relaxed);
    assert_eq!(fails, Some(expected), "{stats}");
    assert_eq!(expected, 2 * PER_CLIENT / 2 + PER_CLIENT / 3);
    s.stop().await;
}

// === 2. the model file deleted or truncated under a loaded model ===

/// A reload of `m` fails with a clear error while the loaded version stays
/// ready and the index, still READY, says why. Returns the error.
async fn assert_load_fails(s: &TestServer, what: &str) -> String {
    let (status, out) = s
        .post_json("/v2/repository/models/m/load", &json!({}))
        .await;
    assert_eq!(status, 503, "{what}: {out}");
    let error = out["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("'m' failed to load"),
        "{what}: unclear error {out}"
    );
    let (status, ready) = s.get("/v2/models/m/ready").await;
    assert_eq!(status, 200, "{what}: {ready}");
    let rows = failed_rows(s, "m").await;
    assert!(
        rows.iter()
            .any(|(v, state, reason)| v.as_deref() == Some("1")
                && state == "READY"
                && reason.contains("reload failed")),
        "{what}: the index must show version 1 READY with the failed reload: {rows:?}"
    );
    error.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_file_deleted_or_truncated_while_loaded_keeps_serving_and_reloads() {
    let repo = tempfile::tempdir().unwrap();
    add_model(repo.path(), "m", &swap_model(1), None);
    let file = repo.path().join("m/1/model.onnx");
    let s = TestServer::start(repo.path()).await;
    let base = format!("http://{}", s.http);
    let tally = Arc::new(Tally::default());
    let mut load = Load::default();
    swap_clients(&mut load, &tally, &base, "m", 4, &[1, 2]);
    more_ok(&tally, 20).await;
    let mut failed_loads = 0;

    // Deleted: the session is in memory, so inference goes on; a reload finds
    // no version and fails without unloading what serves.
    std::fs::remove_file(&file).unwrap();
    more_ok(&tally, 30).await;
    let error = assert_load_fails(&s, "deleted").await;
    assert!(error.contains("no version"), "{error}");
    failed_loads += 1;
    more_ok(&tally, 30).await;

    // Truncated (a copy that died half-way), then empty.
    let bytes = std::fs::read(swap_model(2)).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    more_ok(&tally, 30).await;
    assert_load_fails(&s, "truncated").await;
    failed_loads += 1;
    more_ok(&tally, 30).await;
    std::fs::write(&file, b"").unwrap();
    assert_load_fails(&s, "empty").await;
    failed_loads += 1;
    more_ok(&tally, 30).await;
    assert_eq!(
        tally.ks("m"),
        vec![1],
        "only the loaded version answered so far"
    );

    // A good file again (new content: K = 2): the reload succeeds and serves.
    replace_atomically(&file, &swap_model(2));
    let (status, out) = s
        .post_json("/v2/repository/models/m/load", &json!({}))
        .await;
    assert_eq!(status, 200, "{out}");
    let t = &*tally;
    eventually(
        "the reloaded file to answer",
        Duration::from_secs(30),
        || async move { t.last_k("m") == Some(2.0) },
    )
    .await;
    more_ok(&tally, 20).await;
    load.stop().await;
    assert!(
        failed_rows(&s, "m").await.is_empty(),
        "a good load clears the failure"
    );
    tally.finish(
        "model_file_deleted_or_truncated",
        &format!("{failed_loads} failed reloads, then a good one"),
    );
    s.stop().await;
}

// === 3. an unreadable repository during polls ===

const POLL: Duration = Duration::from_millis(50);

/// Lets `n` poll intervals pass: used only to show that nothing changes.
async fn let_polls_run(n: u32) {
    tokio::time::sleep(POLL * n).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_repository_during_polls_keeps_every_model_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    add_model(&repo, "a", &swap_model(1), None);
    add_model(&repo, "b", &swap_model(2), None);
    let s = TestServer::start_with(&repo, |c| {
        c.control_mode = ControlMode::Poll;
        c.poll_interval = POLL;
    })
    .await;
    let base = format!("http://{}", s.http);
    let tally = Arc::new(Tally::default());
    let (sr, t): (&TestServer, &Tally) = (&s, &tally);
    let mut load = Load::default();
    swap_clients(&mut load, &tally, &base, "a", 2, &[1, 4]);
    swap_clients(&mut load, &tally, &base, "b", 2, &[2]);
    more_ok(&tally, 20).await;
    let mut faults = 0;

    // The whole repository disappears (a volume unmounted, a directory moved):
    // the scan fails, what is loaded keeps serving, the index API says why.
    let away = tmp.path().join("away");
    std::fs::rename(&repo, &away).unwrap();
    faults += 1;
    let (status, body) = index(&s).await.unwrap_err();
    assert_eq!(status, 500, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("cannot read the model repository"),
        "{body}"
    );
    let_polls_run(6).await;
    more_ok(&tally, 30).await;
    // While it is away a new model is staged; when it is back, polling
    // recovers and loads it.
    add_model(&away, "c", &swap_model(3), None);
    std::fs::rename(&away, &repo).unwrap();
    eventually(
        "polling to load 'c'",
        Duration::from_secs(30),
        || async move { sr.get("/v2/models/c/ready").await.0 == 200 },
    )
    .await;

    // a's model.onnx becomes a directory; b's a dangling symlink. Each poll
    // sees no version to serve; the load fails, the index says so, and the
    // loaded sessions keep serving.
    let a_file = repo.join("a/1/model.onnx");
    std::fs::remove_file(&a_file).unwrap();
    std::fs::create_dir(&a_file).unwrap();
    let b_file = repo.join("b/1/model.onnx");
    std::fs::remove_file(&b_file).unwrap();
    std::os::unix::fs::symlink(tmp.path().join("nowhere.onnx"), &b_file).unwrap();
    faults += 2;
    for model in ["a", "b"] {
        eventually(
            &format!("the index to report {model}'s failed poll"),
            Duration::from_secs(30),
            || async move {
                failed_rows(sr, model)
                    .await
                    .iter()
                    .any(|(v, state, reason)| {
                        v.as_deref() == Some("1")
                            && state == "READY"
                            && reason.contains("no version")
                    })
            },
        )
        .await;
        let (status, _) = s.get(&format!("/v2/models/{model}/ready")).await;
        assert_eq!(status, 200, "{model} must still be ready");
    }
    more_ok(&tally, 30).await;

    // c's config.toml becomes a directory: unreadable, skipped (and logged)
    // at every poll; c keeps serving.
    std::fs::create_dir(repo.join("c/config.toml")).unwrap();
    faults += 1;
    let_polls_run(6).await;
    let c_client = http_client();
    for x in 0..10 {
        tally.sent.fetch_add(1, Ordering::Relaxed);
        let out: Value = c_client
            .post(format!("{base}/v2/models/c/infer"))
            .json(&json!({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [x]}]}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            out["outputs"][0]["data"][0].as_f64(),
            Some(f64::from(x) + 3.0),
            "{out}"
        );
        tally.ok.fetch_add(1, Ordering::Relaxed);
    }

    // Repaired: a gets a new file (K = 4) and reloads; b gets its old file
    // back (same content: kept as it is) and its failure clears; c's config
    // goes back to none.
    std::fs::remove_dir(&a_file).unwrap();
    replace_atomically(&a_file, &swap_model(4));
    std::fs::remove_file(&b_file).unwrap();
    replace_atomically(&b_file, &swap_model(2));
    std::fs::remove_dir(repo.join("c/config.toml")).unwrap();
    eventually(
        "a's new file to answer",
        Duration::from_secs(30),
        || async move { t.last_k("a") == Some(4.0) },
    )
    .await;
    eventually(
        "b's failure to clear",
        Duration::from_secs(30),
        || async move { failed_rows(sr, "b").await.is_empty() },
    )
    .await;
    more_ok(&tally, 20).await;
    load.stop().await;
    assert_eq!(tally.ks("a"), vec![1, 4]);
    assert_eq!(tally.ks("b"), vec![2]);
    tally.finish(
        "unreadable_repository_during_polls",
        &format!("{faults} faults"),
    );
    s.stop().await;
}

/// A tmpfs of `size` mounted on `dir`, unmounted on drop; `None` (with the
/// reason printed) where mounting is not permitted.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stdin(Stdio::null())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Self(dir.to_path_buf())),
            Ok(o) => {
                eprintln!(
                    "faults: no tmpfs ({}); simulating the partial writes of a full disk",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!(
                    "faults: no tmpfs (mount: {e}); simulating the partial writes of a full disk"
                );
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Copies `from` to `to` as `cp` does on a full disk: on a real small tmpfs
/// the copy stops at ENOSPC and leaves a partial file; without one, the first
/// `simulated` bytes are written.
fn copy_onto_full_disk(from: &Path, to: &Path, real: bool, simulated: usize) -> u64 {
    if real {
        let err = std::fs::copy(from, to).expect_err("the disk is full");
        assert_eq!(err.raw_os_error(), Some(28), "ENOSPC expected: {err}");
    } else {
        let bytes = std::fs::read(from).unwrap();
        std::fs::write(to, &bytes[..simulated]).unwrap();
    }
    std::fs::metadata(to).unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_write_from_a_full_disk_is_rejected_by_the_poll() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let tmpfs = Tmpfs::mount(&repo, "64k");
    let real = tmpfs.is_some();
    add_model(&repo, "a", &swap_model(1), None);
    let s = TestServer::start_with(&repo, |c| {
        c.control_mode = ControlMode::Poll;
        c.poll_interval = POLL;
    })
    .await;
    let base = format!("http://{}", s.http);
    let tally = Arc::new(Tally::default());
    let (sr, t): (&TestServer, &Tally) = (&s, &tally);
    let mut load = Load::default();
    swap_clients(&mut load, &tally, &base, "a", 3, &[1, 2]);
    more_ok(&tally, 20).await;
    // A big model (3.6 MB) does not fit on the 64 KiB disk.
    let big = bundled_repo().join("dense/1/model.onnx");

    // A new version copied in place (not staged and renamed) onto a full
    // disk: version 2 appears with a partial file. The poll's load fails; v1
    // keeps serving.
    std::fs::create_dir_all(repo.join("a/2")).unwrap();
    let partial_new = copy_onto_full_disk(&big, &repo.join("a/2/model.onnx"), real, 60_000);
    eventually(
        "the poll to reject the partial version 2",
        Duration::from_secs(30),
        || async move {
            failed_rows(sr, "a")
                .await
                .iter()
                .any(|(v, state, _)| v.as_deref() == Some("2") && state == "UNAVAILABLE")
        },
    )
    .await;
    more_ok(&tally, 30).await;
    // The operator removes it; the next poll clears the failure.
    std::fs::remove_dir_all(repo.join("a/2")).unwrap();
    eventually(
        "the failure to clear",
        Duration::from_secs(30),
        || async move { failed_rows(sr, "a").await.is_empty() },
    )
    .await;

    // The served file itself overwritten in place on a full disk: a filler
    // takes the free space, then the copy truncates model.onnx and stops
    // part-way. The poll's reload fails; the session in memory keeps serving.
    let filler = repo.join("filler");
    if real {
        let _ = std::fs::write(&filler, vec![0u8; 1 << 20]); // ENOSPC, partially written
    }
    let file = repo.join("a/1/model.onnx");
    let partial_overwrite = copy_onto_full_disk(&big, &file, real, 4096);
    eventually(
        "the poll to reject the partial overwrite",
        Duration::from_secs(30),
        || async move {
            failed_rows(sr, "a")
                .await
                .iter()
                .any(|(v, state, _)| v.as_deref() == Some("1") && state == "READY")
        },
    )
    .await;
    let (status, _) = s.get("/v2/models/a/ready").await;
    assert_eq!(status, 200);
    more_ok(&tally, 30).await;
    assert_eq!(tally.ks("a"), vec![1]);

    // Space freed and a good file written: the poll reloads it (K = 2).
    let _ = std::fs::remove_file(&filler);
    replace_atomically(&file, &swap_model(2));
    eventually(
        "the repaired file to answer",
        Duration::from_secs(30),
        || async move { t.last_k("a") == Some(2.0) },
    )
    .await;
    more_ok(&tally, 20).await;
    load.stop().await;
    tally.finish(
        "full_disk_partial_write",
        &format!(
            "{} disk; partial files of {partial_new} and {partial_overwrite} bytes rejected",
            if real {
                "real 64 KiB tmpfs"
            } else {
                "simulated"
            }
        ),
    );
    s.stop().await;
    drop(tmpfs);
}

// === 4. clients that disconnect mid-request and mid-stream ===

/// `slow` (~100 ms a run) with one instance and no batching: requests queue.
const SLOW_CONFIG: &str = "instances = 1\nmax_batch_size = 0\n";

fn slow_body(x: f32) -> String {
    json!({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [x]}]}).to_string()
}

fn http_request(addr: std::net::SocketAddr, path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn slow_grpc(x: f32) -> sluice::grpc::pb::ModelInferRequest {
    raw_request(
        "slow",
        &[Tensor {
            name: "x".into(),
            datatype: DataType::Fp32,
            shape: vec![1, 1],
            data: TensorData::Fixed(Bytes::copy_from_slice(&x.to_le_bytes())),
        }],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_disconnect_mid_request_and_mid_stream_harm_nobody() {
    let repo = tempfile::tempdir().unwrap();
    add_model(
        repo.path(),
        "slow",
        &fixture("slow.onnx"),
        Some(SLOW_CONFIG),
    );
    add_model(repo.path(), "m", &swap_model(1), None);
    let s = TestServer::start(repo.path()).await;
    let base = format!("http://{}", s.http);
    let probe = http_client();
    let tally = Arc::new(Tally::default());
    let mut load = Load::default();
    swap_clients(&mut load, &tally, &base, "m", 2, &[1]);
    // A gRPC client on m as well.
    {
        let (tally, stop, mut client) =
            (tally.clone(), load.stop.clone(), grpc_client(s.grpc).await);
        load.tasks.push(tokio::spawn(async move {
            let mut x = 0f32;
            while !stop.load(Ordering::Relaxed) {
                x += 1.0;
                let request = raw_request(
                    "m",
                    &[Tensor {
                        name: "x".into(),
                        datatype: DataType::Fp32,
                        shape: vec![1, 1],
                        data: TensorData::Fixed(Bytes::copy_from_slice(&x.to_le_bytes())),
                    }],
                );
                tally.sent.fetch_add(1, Ordering::Relaxed);
                match tokio::time::timeout(REQUEST_LIMIT, client.model_infer(request)).await {
                    Ok(Ok(r))
                        if fp32_rows(&r.get_ref().raw_output_contents[0]) == vec![x + 1.0] =>
                    {
                        tally.ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(other) => tally.wrong(format!("grpc m x={x}: {other:?}")),
                    Err(_) => tally.lost(format!("grpc m x={x}: no answer")),
                }
            }
        }));
    }
    more_ok(&tally, 20).await;
    let mut disconnects = 0;

    // (a) Half a body, then close; and half the headers, then close.
    for i in 0..20 {
        let path = if i % 2 == 0 {
            "/v2/models/m/infer"
        } else {
            "/v2/models/slow/infer"
        };
        let request = http_request(s.http, path, &slow_body(i as f32));
        let cut = if i % 4 < 2 { request.len() - 20 } else { 40 };
        let mut socket = tokio::net::TcpStream::connect(s.http).await.unwrap();
        socket.write_all(&request.as_bytes()[..cut]).await.unwrap();
        drop(socket);
        disconnects += 1;
    }
    more_ok(&tally, 30).await;

    // (b) Full requests to the slow model; close once they are admitted.
    let (_, before) = s.get("/metrics").await;
    let ran_before = metric(
        before.as_str().unwrap(),
        "sluice_executions_total",
        &[("model", "slow")],
    );
    let mut sockets = Vec::new();
    for i in 0..6 {
        let mut socket = tokio::net::TcpStream::connect(s.http).await.unwrap();
        let request = http_request(s.http, "/v2/models/slow/infer", &slow_body(i as f32));
        socket.write_all(request.as_bytes()).await.unwrap();
        sockets.push(socket);
    }
    eventually(
        "the slow requests to be admitted",
        Duration::from_secs(30),
        || {
            let (probe, base) = (&probe, &base);
            async move {
                metric(
                    &metrics_text(probe, base).await,
                    "sluice_inflight_requests",
                    &[("model", "slow")],
                ) >= 3.0
            }
        },
    )
    .await;
    drop(sockets);
    disconnects += 6;

    // (c) gRPC ModelStreamInfer: six requests to the slow model, one answer
    // read, then the stream and the channel are dropped.
    {
        let mut client = grpc_client(s.grpc).await;
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        for i in 0..6 {
            tx.send(slow_grpc(i as f32)).await.unwrap();
        }
        let mut responses = client
            .model_stream_infer(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        let first = tokio::time::timeout(REQUEST_LIMIT, responses.message())
            .await
            .expect("a stream answer")
            .unwrap()
            .unwrap();
        assert!(first.error_message.is_empty(), "{first:?}");
        drop(responses);
        drop(tx);
        drop(client);
        disconnects += 1;
    }
    more_ok(&tally, 30).await;

    // Everything admitted is answered or dropped: the slow model's in-flight
    // and queue go to 0 while the other clients go on; then every model's.
    let drained = |model: Option<&'static str>| {
        let (probe, base) = (&probe, &base);
        async move {
            let labels: &[(&str, &str)] = match &model {
                Some(m) => &[("model", m)],
                None => &[],
            };
            let text = metrics_text(probe, base).await;
            metric(&text, "sluice_inflight_requests", labels) == 0.0
                && metric(&text, "sluice_pending_requests", labels) == 0.0
        }
    };
    eventually("the slow model to drain", Duration::from_secs(30), || {
        drained(Some("slow"))
    })
    .await;
    let text = metrics_text(&probe, &base).await;
    let slow_runs = metric(&text, "sluice_executions_total", &[("model", "slow")]) - ran_before;
    // The server is whole: the slow model answers, and load went on unharmed.
    tally.sent.fetch_add(1, Ordering::Relaxed);
    let (status, out) = s
        .post_raw("/v2/models/slow/infer", slow_body(42.0).into_bytes())
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["outputs"][0]["data"][0].as_f64(), Some(42.0));
    tally.ok.fetch_add(1, Ordering::Relaxed);
    load.stop().await;
    eventually("every model to drain", Duration::from_secs(30), || {
        drained(None)
    })
    .await;
    tally.finish(
        "client_disconnects",
        &format!("{disconnects} disconnecting clients; {slow_runs} of their 12 slow requests ran"),
    );
    s.stop().await;
}

// === 5. SIGTERM during a hot swap ===

const CLIENTS: usize = 6;
const GRACE: Duration = Duration::from_secs(10);

/// With a 1 s shutdown delay the listeners stay open while the swap finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_during_a_hot_swap_fails_no_admitted_request() {
    sigterm_during_a_hot_swap(Duration::from_secs(1), "sigterm_during_hot_swap").await;
}

/// With no delay the listeners close at once and the process exits while
/// the new version may still be loading.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_without_delay_during_a_hot_swap_exits_cleanly() {
    sigterm_during_a_hot_swap(Duration::ZERO, "sigterm_no_delay_during_hot_swap").await;
}

/// Serves `slow` from the real binary in poll mode under load, publishes
/// version 2, and sends SIGTERM as soon as the poll is loading it. Every
/// answer must be 200, connections are refused only once the listeners
/// close, nothing breaks mid-request, and the process exits 0 within the
/// delay plus the grace period.
async fn sigterm_during_a_hot_swap(delay: Duration, name: &str) {
    // slow (~100 ms a run), one instance, no batching; a warmup of four runs
    // makes each version's load last about half a second.
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    add_model(
        &repo,
        "slow",
        &fixture("slow.onnx"),
        Some(&format!(
            "{SLOW_CONFIG}[[warmup]]\nbatch_size = 1\ncount = 4\n"
        )),
    );
    let log = tmp.path().join("server.log");
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["serve", "--host", "127.0.0.1", "--grpc-port", "0"])
        .args(["--http-port", &port.to_string()])
        .arg("--model-repository")
        .arg(&repo)
        .arg("--onnxruntime-lib")
        .arg(ort_lib())
        .args(["--repository-poll-secs", "1"])
        .args(["--shutdown-delay-secs", &delay.as_secs().to_string()])
        .args(["--shutdown-grace-secs", &GRACE.as_secs().to_string()])
        .args(["--log", "info"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut server = Server(child);
    let pid = server.0.id().to_string();
    let base = format!("http://127.0.0.1:{port}");
    let probe = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    server.wait_ready(&probe, &base).await;

    // Clients send until their first transport error, as in shutdown.rs.
    let t0 = Instant::now();
    let answered = Arc::new(AtomicU64::new(0));
    let versions = Arc::new(Mutex::new(BTreeSet::new()));
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let client = reqwest::Client::builder()
            .timeout(delay + GRACE + Duration::from_secs(20))
            .build()
            .unwrap();
        let (url, answered, versions) = (
            format!("{base}/v2/models/slow/infer"),
            answered.clone(),
            versions.clone(),
        );
        clients.push(tokio::spawn(async move {
            let body = slow_body(i as f32);
            let mut outcomes = Vec::new();
            loop {
                let start = t0.elapsed();
                match client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let out: Value = r.json().await.unwrap_or(Value::Null);
                        if status == 200 && out["outputs"][0]["data"][0].as_f64() != Some(i as f64)
                        {
                            panic!("wrong answer for x = {i}: {out}");
                        }
                        if let Some(v) = out["model_version"].as_str() {
                            versions.lock().unwrap().insert(v.to_string());
                        }
                        answered.fetch_add(1, Ordering::Relaxed);
                        outcomes.push(Outcome::Answered {
                            status,
                            start,
                            end: t0.elapsed(),
                        });
                    }
                    Err(e) if e.is_connect() => {
                        outcomes.push(Outcome::Refused { at: t0.elapsed() });
                        break;
                    }
                    Err(e) => {
                        outcomes.push(Outcome::Broken {
                            at: t0.elapsed(),
                            error: format!("{e:?}"),
                        });
                        break;
                    }
                }
            }
            outcomes
        }));
    }
    eventually("the load to start", Duration::from_secs(30), || {
        let answered = &answered;
        async move { answered.load(Ordering::Relaxed) >= CLIENTS as u64 }
    })
    .await;

    // Publish version 2 (atomic rename); once the poll is loading it, SIGTERM.
    let staging = repo.join("slow/.2.tmp");
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::copy(fixture("slow.onnx"), staging.join("model.onnx")).unwrap();
    std::fs::rename(&staging, repo.join("slow/2")).unwrap();
    let state_of_v2 = |text: &str| {
        ["loading", "ready"].into_iter().find(|s| {
            metric(
                text,
                "sluice_model_state",
                &[("model", "slow"), ("version", "2"), ("state", s)],
            ) == 1.0
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let swap_state = loop {
        if let Some(state) = state_of_v2(&metrics_text(&probe, &base).await) {
            break state;
        }
        assert!(
            Instant::now() < deadline,
            "the poll never started loading version 2"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let term_at = t0.elapsed();
    let sigterm = Instant::now();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );

    let exit = loop {
        if let Some(exit) = server.0.try_wait().unwrap() {
            break exit;
        }
        assert!(
            sigterm.elapsed() < delay + GRACE + Duration::from_secs(10),
            "still running after delay + grace"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let exit_after = sigterm.elapsed();
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(exit.success(), "exit status {exit}; log:\n{stderr}");
    assert!(exit_after <= delay + GRACE, "exit took {exit_after:?}");
    assert!(
        !stderr.contains("panicked"),
        "a panic in the log:\n{stderr}"
    );

    let mut outcomes = Vec::new();
    for c in clients {
        outcomes.extend(c.await.unwrap());
    }
    let (mut ok, mut refused, mut during) = (0u64, 0u64, 0u64);
    for o in &outcomes {
        match o {
            Outcome::Answered { status, end, .. } => {
                assert_eq!(
                    *status, 200,
                    "an admitted request failed: {o:?}; log:\n{stderr}"
                );
                ok += 1;
                if *end > term_at {
                    during += 1;
                }
            }
            Outcome::Refused { at } => {
                assert!(*at >= term_at + delay, "refused during the delay: {o:?}");
                refused += 1;
            }
            Outcome::Broken { at, error } => {
                panic!(
                    "a request broke at {at:?} (SIGTERM at {term_at:?}): {error}; log:\n{stderr}"
                )
            }
        }
    }
    assert!(during > 0, "no request was in flight across the SIGTERM");
    let versions = versions.lock().unwrap().clone();
    let v2_published = strip_ansi(&stderr)
        .lines()
        .any(|l| l.contains("model version ready") && l.contains("version=2"));
    eprintln!(
        "faults: {name}: {} requests, 0 expected errors, 0 lost ({ok} answered 200, \
         {during} of them after SIGTERM, {refused} refused after the listeners closed; SIGTERM with \
         version 2 {swap_state}, published before exit: {v2_published}; versions answering \
         {versions:?}; exit 0 after {exit_after:.1?})",
        ok + refused
    );
}

/// The log without its colour codes.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
