//! Hot swap under load: versions published by atomic rename (plus a load call,
//! or by polling) while clients keep sending; zero errors allowed.

use crate::harness::TestServer;
use crate::harness::models::{infer_x, swap_model, x_body};
use crate::harness::process::{Sluice, proc_status};
use crate::harness::wait::{PATIENCE, eventually};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Publishes `fixtures/swap/v{k}.onnx` as version `k` of model `m` the
/// documented way: write under a hidden name, then rename atomically.
fn publish(repo: &Path, k: u64, file: &Path) {
    let staging = repo.join("m").join(format!(".{k}.tmp"));
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::copy(file, staging.join("model.onnx")).unwrap();
    std::fs::rename(&staging, repo.join("m").join(k.to_string())).unwrap();
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
            let body = x_body(0.0);
            while !stop.load(Ordering::Relaxed) {
                match client.post(&url).json(&body).send().await {
                    Ok(r) => {
                        let status = r.status();
                        let out: Value = r.json().await.unwrap_or(Value::Null);
                        if status == 200 {
                            seen.lock()
                                .unwrap()
                                .push(out["outputs"][0]["data"][0].as_f64().unwrap_or(-1.0));
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
        eventually(format!("version {k} to answer"), PATIENCE, || async {
            let seen = self.seen.lock().unwrap();
            seen[since.min(seen.len())..].contains(&k)
        })
        .await;
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
        let (status, out) = s.post_json("/v2/models/m/infer", &x_body(0.0)).await;
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
    eventually("50 more answers from version 1", PATIENCE, || async {
        load.ok.load(Ordering::Relaxed) >= before + 50
    })
    .await;
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
    let (status, out) = s.post_json("/v2/models/m/infer", &x_body(0.0)).await;
    assert!(status == 503 || status == 404, "{status} {out}");
    assert!(out["error"].as_str().unwrap().contains("'m'"), "{out}");
    s.stop().await;
}

#[tokio::test]
async fn a_hundred_swaps_free_their_threads_and_memory() {
    let repo = repo_with_v1();
    let server = Sluice::serve(repo.path()).start().await;
    let pid = server.pid();
    let client = reqwest::Client::new();
    let base = server.base.clone();
    let swap = |i: u64| {
        // Alternate the content of version 1: a changed file reloads it.
        std::fs::copy(swap_model(1 + i % 2), repo.path().join("m/1/model.onnx")).unwrap();
        let (client, base) = (client.clone(), base.clone());
        async move {
            let r = client
                .post(format!("{base}/v2/repository/models/m/load"))
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let out = infer_x(&client, &base, "m", 0.0).await;
            assert_eq!(
                out["outputs"][0]["data"][0].as_f64(),
                Some((1 + i % 2) as f64)
            );
        }
    };
    for i in 0..10 {
        swap(i).await;
    }
    let status = |key| proc_status(pid, key).unwrap();
    let (threads0, rss0) = (status("Threads:"), status("VmRSS:"));
    for i in 10..110 {
        swap(i).await;
    }
    let (threads1, rss1) = (status("Threads:"), status("VmRSS:"));
    drop(server);
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
