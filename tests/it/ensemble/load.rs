//! Ensembles under load: concurrent clients over HTTP and gRPC get exactly
//! their own rows, and swapping the middle model under that load costs no
//! request and never mixes versions within one answer.

use super::{
    fixture, grpc_outputs, json_body, json_outputs, matches, pipeline_repo, raw_tensor, rows,
};
use crate::harness::TestServer;
use crate::harness::grpc::{client, raw_request};
use crate::harness::wait::{PATIENCE, eventually};
use serde_json::json;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// What the clients saw: the net version k of each answer, and the errors.
#[derive(Default)]
struct Seen {
    versions: Vec<f32>,
    errors: Vec<String>,
}

/// The k (net's bias, 1 or 2) that explains a whole answer, if one does.
fn version_of(outputs: &[(String, Vec<f32>)], x: &[[f32; 4]]) -> Result<f32, String> {
    [1.0, 2.0]
        .into_iter()
        .find(|&k| matches(outputs, x, k).is_ok())
        .ok_or_else(|| format!("no single net version explains {outputs:?}"))
}

/// Starts `http` + `grpc` clients sending distinct batches to the pipeline
/// until `stop`; each answer is checked against its own rows.
fn start_clients(
    s: &TestServer,
    http: usize,
    grpc: usize,
    stop: &Arc<AtomicBool>,
    seen: &Arc<Mutex<Seen>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for c in 0..http {
        let (client, url) = (s.client.clone(), s.url("/v2/models/pipeline/infer"));
        let (stop, seen) = (stop.clone(), seen.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let x = rows(1 + (c + i) % 4, c * 100 + i);
                i += 1;
                let outcome = match client.post(&url).json(&json_body(&x)).send().await {
                    Ok(r) if r.status() == 200 => {
                        let out = r.json().await.unwrap_or(json!(null));
                        version_of(&json_outputs(&out), &x)
                    }
                    Ok(r) => Err(format!(
                        "{}: {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    )),
                    Err(e) => Err(e.to_string()),
                };
                let mut seen = seen.lock().unwrap();
                match outcome {
                    Ok(k) => seen.versions.push(k),
                    Err(e) => seen.errors.push(e),
                }
            }
        }));
    }
    for c in 0..grpc {
        let addr = s.grpc;
        let (stop, seen) = (stop.clone(), seen.clone());
        tasks.push(tokio::spawn(async move {
            let mut grpc = client(addr).await;
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let x = rows(1 + (c + i) % 3, 5000 + c * 100 + i);
                i += 1;
                let outcome = match grpc
                    .model_infer(raw_request("pipeline", &[raw_tensor(&x)]))
                    .await
                {
                    Ok(r) => version_of(&grpc_outputs(&r.into_inner()), &x),
                    Err(status) => Err(status.to_string()),
                };
                let mut seen = seen.lock().unwrap();
                match outcome {
                    Ok(k) => seen.versions.push(k),
                    Err(e) => seen.errors.push(e),
                }
            }
        }));
    }
    tasks
}

async fn wait_for_answers(seen: &Arc<Mutex<Seen>>, k: f32, at_least: usize) {
    eventually(
        format!("{at_least} answers from net k={k}"),
        PATIENCE,
        || async {
            let seen = seen.lock().unwrap();
            !seen.errors.is_empty() || seen.versions.iter().filter(|&&v| v == k).count() >= at_least
        },
    )
    .await;
}

/// Fails on any error the clients saw; the net versions of the answers.
fn no_errors(seen: &Mutex<Seen>) -> Vec<f32> {
    let seen = seen.lock().unwrap();
    assert!(
        seen.errors.is_empty(),
        "{} errors, first: {:?}",
        seen.errors.len(),
        seen.errors.first()
    );
    seen.versions.clone()
}

async fn stop_clients(stop: &AtomicBool, tasks: Vec<tokio::task::JoinHandle<()>>) {
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn concurrent_clients_over_http_and_grpc_each_get_their_own_answers() {
    let repo = pipeline_repo();
    let s = TestServer::start(repo.path()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let tasks = start_clients(&s, 6, 6, &stop, &seen);
    wait_for_answers(&seen, 1.0, 200).await;
    stop_clients(&stop, tasks).await;
    let versions = no_errors(&seen);
    assert!(versions.iter().all(|&k| k == 1.0));
    // The steps were batched with each other: fewer executions than requests.
    let (_, net) = s.get("/v2/models/net/stats").await;
    let st = &net["model_stats"][0];
    let (requests, executions) = (
        st["inference_stats"]["success"]["count"].as_u64().unwrap(),
        st["execution_count"].as_u64().unwrap(),
    );
    assert!(requests >= 200, "{st}");
    assert!(executions <= requests, "{st}");
    s.stop().await;
}

/// Publishes `file` as version `v` of `net` by atomic rename.
fn publish_net(repo: &Path, v: u64, file: &Path) {
    let staging = repo.join("net").join(format!(".{v}.tmp"));
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::copy(file, staging.join("model.onnx")).unwrap();
    std::fs::rename(&staging, repo.join("net").join(v.to_string())).unwrap();
}

async fn swap_under_load(poll: bool) {
    let repo = pipeline_repo();
    let s = TestServer::start_with(repo.path(), |c| {
        if poll {
            c.control_mode = sluice::registry::ControlMode::Poll;
            c.poll_interval = std::time::Duration::from_millis(50);
        }
    })
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let tasks = start_clients(&s, 4, 4, &stop, &seen);
    wait_for_answers(&seen, 1.0, 50).await;
    // Three swaps: to k=2, back to k=1 (as version 3), to k=2 (version 4).
    for (v, k) in [(2u64, 2.0f32), (3, 1.0), (4, 2.0)] {
        let before = seen.lock().unwrap().versions.len();
        publish_net(
            repo.path(),
            v,
            &fixture(if k == 2.0 { "net_v2" } else { "net_v1" }),
        );
        if !poll {
            let (status, out) = s
                .post_json("/v2/repository/models/net/load", &json!({}))
                .await;
            assert_eq!(status, 200, "{out}");
        }
        eventually(
            format!("net version {v} (k={k}) to answer"),
            crate::harness::wait::PATIENCE,
            || async {
                let seen = seen.lock().unwrap();
                !seen.errors.is_empty()
                    || seen.versions[before.min(seen.versions.len())..].contains(&k)
            },
        )
        .await;
    }
    wait_for_answers(&seen, 2.0, 50).await;
    stop_clients(&stop, tasks).await;
    no_errors(&seen);
    // Once swapped, every run uses the new version.
    for i in 0..10 {
        let x = rows(2, 900 + i);
        let (status, out) = s
            .post_json("/v2/models/pipeline/infer", &json_body(&x))
            .await;
        assert_eq!(status, 200, "{out}");
        matches(&json_outputs(&out), &x, 2.0).unwrap();
    }
    let (_, index) = s.post_json("/v2/repository/index", &json!({})).await;
    let pipeline = index
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "pipeline")
        .unwrap();
    assert_eq!(pipeline["state"], "READY", "{index}");
    s.stop().await;
}

#[tokio::test]
async fn swapping_the_middle_model_by_load_calls_under_ensemble_load_gives_zero_errors() {
    swap_under_load(false).await;
}

#[tokio::test]
async fn swapping_the_middle_model_by_polling_under_ensemble_load_gives_zero_errors() {
    swap_under_load(true).await;
}

/// `slow` then `m` (y = x + k at version k): the answer tells which version
/// of `m` the run used.
const SLOWPIPE: &str = r#"
platform: "ensemble"
max_batch_size: 0
input [ { name: "X", data_type: TYPE_FP32, dims: [ -1, 1 ] } ]
output [ { name: "Y", data_type: TYPE_FP32, dims: [ -1, 1 ] } ]
ensemble_scheduling {
  step [
    { model_name: "slow", model_version: -1, input_map { key: "x" value: "X" }, output_map { key: "y" value: "A" } },
    { model_name: "m", model_version: -1, input_map { key: "x" value: "A" }, output_map { key: "y" value: "Y" } }
  ]
}
"#;

#[tokio::test]
async fn a_run_whose_pinned_version_is_swapped_out_starts_again_on_the_new_one() {
    use crate::harness::models::{Repo, SLOW_SERIAL, slow, swap_model};
    let repo = Repo::new()
        .with("slow", &slow(), Some(SLOW_SERIAL))
        .with("m", &swap_model(1), None);
    super::add_ensemble(repo.path(), "slowpipe", SLOWPIPE);
    let s = TestServer::start(repo.path()).await;
    // Twelve runs, each bound to m v1 when admitted, queue on slow's one
    // instance (about 0.1-0.5 s each).
    let n = 12;
    let runs: Vec<_> = (0..n)
        .map(|i| {
            let (client, url) = (s.client.clone(), s.url("/v2/models/slowpipe/infer"));
            tokio::spawn(async move {
                let body = json!({"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 1], "data": [i as f32]}]});
                let r = client.post(&url).json(&body).send().await.unwrap();
                let status = r.status().as_u16();
                (i, status, r.json::<serde_json::Value>().await.unwrap())
            })
        })
        .collect();
    let inflight = [("model", "slowpipe")];
    eventually("every run to be bound and in flight", PATIENCE, || async {
        s.metric("sluice_inflight_requests", &inflight).await == n as f64
    })
    .await;
    // Swap m while most runs still wait for slow: their pinned v1 closes.
    let staging = repo.path().join("m/.2.tmp");
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::copy(swap_model(2), staging.join("model.onnx")).unwrap();
    std::fs::rename(&staging, repo.path().join("m/2")).unwrap();
    let (status, out) = s
        .post_json("/v2/repository/models/m/load", &json!({}))
        .await;
    assert_eq!(status, 200, "{out}");
    let mut ks = Vec::new();
    for run in runs {
        let (i, status, out) = run.await.unwrap();
        assert_eq!(status, 200, "run {i}: {out}");
        let y = out["outputs"][0]["data"][0].as_f64().unwrap();
        ks.push(y - i as f64);
    }
    assert!(ks.iter().all(|&k| k == 1.0 || k == 2.0), "{ks:?}");
    // Every run was bound to v1; one answered by v2 ran again after the swap.
    assert!(ks.contains(&2.0), "no run started again on m v2: {ks:?}");
    let (_, stats) = s.get("/v2/models/slowpipe/stats").await;
    assert_eq!(
        stats["model_stats"][0]["inference_stats"]["success"]["count"],
        n
    );
    s.stop().await;
}

#[tokio::test]
async fn the_request_timeout_covers_the_whole_run() {
    use crate::harness::models::{Repo, SLOW_SERIAL, slow, swap_model};
    let repo = Repo::new()
        .with("slow", &slow(), Some(SLOW_SERIAL))
        .with("m", &swap_model(1), None);
    super::add_ensemble(repo.path(), "slowpipe", SLOWPIPE);
    let s = TestServer::start(repo.path()).await;
    // 5 ms cannot cover the slow step (32 chained 512 x 512 MatMuls): the
    // run ends at the queue of one step or before the next, never with an answer.
    let body = json!({
        "inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 1], "data": [1.0]}],
        "parameters": {"timeout": 5000},
    });
    let (status, out) = s.post_json("/v2/models/slowpipe/infer", &body).await;
    assert_eq!(status, 504, "{out}");
    assert!(
        out["error"]
            .as_str()
            .unwrap()
            .contains("ensemble 'slowpipe'"),
        "{out}"
    );
    // Without a timeout the same run answers.
    let body =
        json!({"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 1], "data": [1.0]}]});
    let (status, out) = s.post_json("/v2/models/slowpipe/infer", &body).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["outputs"][0]["data"][0], 2.0);
    s.stop().await;
}
