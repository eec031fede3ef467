//! Fault injection: a model whose run fails for some inputs, model files
//! deleted or truncated under a loaded model, an unreadable repository and a
//! full disk during polls, clients that disconnect mid-request and mid-stream,
//! and SIGTERM during a hot swap. In every case the other requests are
//! unaffected and nothing admitted is lost without an answer.
//!
//! Real ONNX Runtime sessions on real `.onnx` files, real servers on port 0,
//! real clients (reqwest, the generated tonic client, raw `TcpStream`s).
//! Waits poll a condition with a deadline; where a test shows that nothing
//! changes over a few repository polls, it counts the polls in the log.
//!
//! Each test prints one line: `faults: <name>: N requests, M expected errors,
//! 0 lost` (`cargo test --test it faults -- --nocapture`); the figures are in
//! `docs/fault-results.md`.

use crate::harness::grpc::{client as grpc_client, raw_request};
use crate::harness::metrics::metric;
use crate::harness::models::{
    Repo, SLOW_SERIAL, add_model, slow, swap_model, x_body, x_grpc, x_json,
};
use crate::harness::wait::{PATIENCE, eventually};
use crate::harness::{TestServer, bundled_repo, fixture};
use bytes::Bytes;
use serde_json::{Value, json};
use sluice::registry::ControlMode;
use sluice::tensor::{DataType, Tensor, TensorData};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;
use tonic::Code;

mod disconnects;
mod files;
mod repository;
mod runs;
mod sigterm;

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

/// Waits until `n` more requests have succeeded: the server keeps serving.
async fn more_ok(tally: &Tally, n: u64) {
    let target = tally.ok() + n;
    eventually(
        format!("{n} more successful requests"),
        PATIENCE,
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
                let body = x_body(x);
                tally.sent.fetch_add(1, Ordering::Relaxed);
                match client.post(&url).json(&body).send().await {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let out: Value = r.json().await.unwrap_or(Value::Null);
                        let y = out["outputs"][0]["data"][0].as_f64();
                        match y.map(|y| y - f64::from(x)) {
                            Some(kk)
                                if status == 200
                                    && allowed.contains(&(kk as u64))
                                    && kk.fract() == 0.0 =>
                            {
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

/// Replaces `path` atomically with the content of `file` (write aside, rename).
fn replace_atomically(path: &Path, file: &Path) {
    let staging = path.with_extension("onnx.tmp");
    std::fs::copy(file, &staging).unwrap();
    std::fs::rename(&staging, path).unwrap();
}
