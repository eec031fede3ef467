//! Hot swap under load: versions published by atomic rename (plus a load call,
//! or by polling) while clients keep sending; zero errors allowed.

use crate::harness::{TestServer, fixture};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Publishes `fixtures/swap/v{k}.onnx` as version `k` of model `m` the
/// documented way: write under a hidden name, then rename atomically.
fn publish(repo: &Path, k: u64, file: &Path) {
    let staging = repo.join("m").join(format!(".{k}.tmp"));
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::copy(file, staging.join("model.onnx")).unwrap();
    std::fs::rename(&staging, repo.join("m").join(k.to_string())).unwrap();
}

fn swap_model(k: u64) -> std::path::PathBuf {
    fixture(&format!("swap/v{k}.onnx"))
}

struct Load {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<f64>>>,
    errors: Arc<Mutex<Vec<String>>>,
    ok: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// `clients` tasks sending x = 0 to model `m` until stopped; y = version.
fn start_load(s: &TestServer, clients: usize) -> Load {
    let load = Load {
        stop: Arc::new(AtomicBool::new(false)),
        seen: Arc::new(Mutex::new(Vec::new())),
        errors: Arc::new(Mutex::new(Vec::new())),
        ok: Arc::new(AtomicU64::new(0)),
        tasks: Vec::new(),
    };
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (client, url) = (s.client.clone(), s.url("/v2/models/m/infer"));
        let (stop, seen, errors, ok) = (
            load.stop.clone(),
            load.seen.clone(),
            load.errors.clone(),
            load.ok.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let body = json!({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [0.0]}]});
            while !stop.load(Ordering::Relaxed) {
                match client.post(&url).json(&body).send().await {
                    Ok(r) => {
                        let status = r.status();
                        let out: Value = r.json().await.unwrap_or(Value::Null);
                        if status == 200 {
                            seen.lock().unwrap().push(out["outputs"][0]["data"][0].as_f64().unwrap_or(-1.0));
                            ok.fetch_add(1, Ordering::Relaxed);
                        } else {
                            errors.lock().unwrap().push(format!("{status}: {out}"));
                        }
                    }
                    Err(e) => errors.lock().unwrap().push(e.to_string()),
                }
            }
        }));
    }
    Load { tasks, ..load }
}

impl Load {
    async fn stop(self) -> (Vec<f64>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        let seen = self.seen.lock().unwrap().clone();
        let errors = self.errors.lock().unwrap().clone();
        (seen, errors)
    }

    /// Waits until a response from version `k` has been seen after `since` responses.
    async fn wait_for_version(&self, k: f64, since: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            {
                let seen = self.seen.lock().unwrap();
                if seen[since.min(seen.len())..].contains(&k) {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "version {k} never answered");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

fn repo_with_v1() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("m")).unwrap();
    publish(dir.path(), 1, &swap_model(1));
    dir
}

/// Stops the load and checks the swap cost nothing: zero errors, and every
/// answer came from a published version (1..=6). Returns the answers.
async fn assert_clean_swaps(load: Load) -> Vec<f64> {
    let (seen, errors) = load.stop().await;
    assert!(
        errors.is_empty(),
        "{} errors, first: {:?}",
        errors.len(),
        errors.first()
    );
    assert!(
        seen.iter()
            .all(|y| (1.0..=6.0).contains(y) && y.fract() == 0.0),
        "an output from no published version"
    );
    seen
}

async fn assert_only_version(s: &TestServer, k: f64) {
    for _ in 0..20 {
        let (status, out) = s
            .post_json("/v2/models/m/infer", &json!({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [0.0]}]}))
            .await;
        assert_eq!(status, 200, "{out}");
        assert_eq!(out["outputs"][0]["data"][0].as_f64(), Some(k));
    }
    let (_, meta) = s.get("/v2/models/m").await;
    assert_eq!(meta["versions"], json!([k.to_string()]));
}

#[tokio::test]
async fn five_versions_swapped_by_load_calls_under_load_with_zero_errors() {
    let repo = repo_with_v1();
    let s = TestServer::start(repo.path()).await;
    let load = start_load(&s, 8);
    load.wait_for_version(1.0, 0).await;
    for k in 2..=6u64 {
        publish(repo.path(), k, &swap_model(k));
        let seen_before = load.seen.lock().unwrap().len();
        let (status, out) = s
            .post_json("/v2/repository/models/m/load", &json!({}))
            .await;
        assert_eq!(status, 200, "{out}");
        load.wait_for_version(k as f64, seen_before).await;
    }
    let seen = assert_clean_swaps(load).await;
    assert!(seen.len() > 50, "only {} requests completed", seen.len());
    assert_only_version(&s, 6.0).await;
    s.stop().await;
}

#[tokio::test]
async fn five_versions_swapped_by_polling_under_load_with_zero_errors() {
    let repo = repo_with_v1();
    let s = TestServer::start_with(repo.path(), |c| {
        c.control_mode = sluice::registry::ControlMode::Poll;
        c.poll_interval = Duration::from_millis(100);
    })
    .await;
    let load = start_load(&s, 8);
    load.wait_for_version(1.0, 0).await;
    for k in 2..=6u64 {
        let seen_before = load.seen.lock().unwrap().len();
        publish(repo.path(), k, &swap_model(k));
        load.wait_for_version(k as f64, seen_before).await;
    }
    // A half-written version directory (no model.onnx yet, hidden name) is ignored.
    std::fs::create_dir_all(repo.path().join("m/.7.tmp")).unwrap();
    std::fs::create_dir_all(repo.path().join("m/8")).unwrap();
    assert_clean_swaps(load).await;
    assert_only_version(&s, 6.0).await;
    s.stop().await;
}

#[tokio::test]
async fn a_broken_new_version_leaves_the_old_one_serving() {
    let repo = repo_with_v1();
    let s = TestServer::start(repo.path()).await;
    let load = start_load(&s, 8);
    load.wait_for_version(1.0, 0).await;
    let staging = repo.path().join("m/.2.tmp");
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::write(staging.join("model.onnx"), b"definitely not an onnx file").unwrap();
    std::fs::rename(&staging, repo.path().join("m/2")).unwrap();
    let (status, out) = s
        .post_json("/v2/repository/models/m/load", &json!({}))
        .await;
    assert_ne!(status, 200, "{out}");
    assert!(
        out["error"].as_str().unwrap().contains("failed to load"),
        "{out}"
    );
    let before = load.ok.load(Ordering::Relaxed);
    while load.ok.load(Ordering::Relaxed) < before + 50 {
        tokio::task::yield_now().await;
    }
    let (seen, errors) = load.stop().await;
    assert!(errors.is_empty(), "{errors:?}");
    assert!(seen.iter().all(|&y| y == 1.0));
    let (_, index) = s.post_json("/v2/repository/index", &json!({})).await;
    let row = index
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "m" && r["version"] == "2")
        .cloned();
    let row = row.unwrap_or_else(|| panic!("no index row for m/2: {index}"));
    assert_eq!(row["state"], "UNAVAILABLE");
    assert!(!row["reason"].as_str().unwrap().is_empty());
    s.stop().await;
}

#[tokio::test]
async fn unload_under_load_finishes_admitted_and_refuses_later_requests_cleanly() {
    let repo = repo_with_v1();
    let s = TestServer::start(repo.path()).await;
    let load = start_load(&s, 8);
    load.wait_for_version(1.0, 0).await;
    let (status, out) = s
        .post_json("/v2/repository/models/m/unload", &json!({}))
        .await;
    assert_eq!(status, 200, "{out}");
    let (seen, errors) = load.stop().await;
    assert!(seen.iter().all(|&y| y == 1.0));
    // Requests after the unload fail cleanly: 404/503 with a message, never a hang or a 500.
    for e in &errors {
        assert!(e.starts_with("503") || e.starts_with("404"), "{e}");
    }
    let (status, out) = s
        .post_json(
            "/v2/models/m/infer",
            &json!({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [0.0]}]}),
        )
        .await;
    assert!(status == 503 || status == 404, "{status} {out}");
    assert!(out["error"].as_str().unwrap().contains("'m'"), "{out}");
    s.stop().await;
}

fn proc_status(pid: u32, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[tokio::test]
async fn a_hundred_swaps_free_their_threads_and_memory() {
    let repo = repo_with_v1();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "serve",
            "--http-port",
            &port.to_string(),
            "--grpc-port",
            "0",
            "--log",
            "warn",
        ])
        .arg("--model-repository")
        .arg(repo.path())
        .spawn()
        .unwrap();
    let pid = child.id();
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while client
        .get(format!("{base}/v2/health/ready"))
        .send()
        .await
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "server not ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let body =
        json!({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [0.0]}]});
    let swap = |i: u64| {
        // Alternate the content of version 1: a changed file reloads it.
        std::fs::copy(swap_model(1 + i % 2), repo.path().join("m/1/model.onnx")).unwrap();
        let (client, base, body) = (client.clone(), base.clone(), body.clone());
        async move {
            let r = client
                .post(format!("{base}/v2/repository/models/m/load"))
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let out: Value = client
                .post(format!("{base}/v2/models/m/infer"))
                .json(&body)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(
                out["outputs"][0]["data"][0].as_f64(),
                Some((1 + i % 2) as f64)
            );
        }
    };
    for i in 0..10 {
        swap(i).await;
    }
    let (threads0, rss0) = (proc_status(pid, "Threads:"), proc_status(pid, "VmRSS:"));
    for i in 10..110 {
        swap(i).await;
    }
    let (threads1, rss1) = (proc_status(pid, "Threads:"), proc_status(pid, "VmRSS:"));
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        threads1 <= threads0 + 2,
        "threads grew from {threads0} to {threads1}"
    );
    assert!(
        rss1 <= rss0 + 48 * 1024,
        "RSS grew from {rss0} kB to {rss1} kB"
    );
    eprintln!("after 100 swaps: threads {threads0} -> {threads1}, RSS {rss0} kB -> {rss1} kB");
}
