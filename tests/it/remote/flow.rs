//! The publishing flow, the same against each store: serve from the store,
//! match the local-directory answers, publish a version with its marker
//! under load, ignore one without it, fall back when the newest version is
//! deleted, and ride out a store outage.

use super::*;
use crate::harness::TestServer;
use crate::harness::bundled_repo;
use crate::harness::models::{swap_model, x_body};
use crate::harness::process::Sluice;
use serde_json::json;
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

const BUCKET: &str = "models";
const PREFIX: &str = "repo";
const MARKER: &str = ".ready";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_serves_publishes_and_survives_an_outage() {
    if let Some(tools) = tools() {
        publish_and_swap(Kind::S3, &tools).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azurite_serves_publishes_and_survives_an_outage() {
    if let Some(tools) = tools() {
        publish_and_swap(Kind::Azure, &tools).await;
    }
}

/// What the clients saw: every request ends as ok, wrong or lost.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    wrong: Mutex<Vec<String>>,
    lost: Mutex<Vec<String>>,
    last_k: Mutex<Option<u64>>,
    ks: Mutex<BTreeSet<u64>>,
}

impl Tally {
    fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    fn last_k(&self) -> Option<u64> {
        *self.last_k.lock().unwrap()
    }
}

/// `clients` HTTP clients on `swap` (y = x + K) until `stop`; an answer
/// must be 200 with K in `allowed`.
fn clients(
    base: &str,
    tally: &Arc<Tally>,
    stop: &Arc<AtomicBool>,
    clients: usize,
    allowed: &[u64],
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..clients)
        .map(|c| {
            let (tally, stop, allowed) = (tally.clone(), stop.clone(), allowed.to_vec());
            let url = format!("{base}/v2/models/swap/infer");
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap();
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let x = (1000 * (c as u64 + 1) + n % 1000) as f32;
                    match client.post(&url).json(&x_body(x)).send().await {
                        Ok(r) => {
                            let status = r.status().as_u16();
                            let out: Value = r.json().await.unwrap_or(Value::Null);
                            let k = out["outputs"][0]["data"][0]
                                .as_f64()
                                .map(|y| y - f64::from(x));
                            match k {
                                Some(k) if status == 200 && allowed.contains(&(k as u64)) => {
                                    tally.ok.fetch_add(1, Ordering::Relaxed);
                                    *tally.last_k.lock().unwrap() = Some(k as u64);
                                    tally.ks.lock().unwrap().insert(k as u64);
                                }
                                _ => tally
                                    .wrong
                                    .lock()
                                    .unwrap()
                                    .push(format!("x={x}: {status} {out}")),
                            }
                        }
                        Err(e) => tally.lost.lock().unwrap().push(format!("x={x}: {e}")),
                    }
                }
            })
        })
        .collect()
}

async fn more_ok(tally: &Tally, n: u64) {
    let target = tally.ok() + n;
    eventually(format!("{n} more answers"), PATIENCE, || async move {
        tally.ok() >= target
    })
    .await;
}

/// `<dir>/<version>/model.onnx` from `file`, and the marker.
fn version(dir: &Path, v: u64, file: &Path, marker: bool) {
    let vdir = dir.join(v.to_string());
    std::fs::create_dir_all(&vdir).unwrap();
    std::fs::copy(file, vdir.join("model.onnx")).unwrap();
    if marker {
        std::fs::write(vdir.join(MARKER), b"").unwrap();
    }
}

/// The first repository: iris (bundled) and `swap` version 1, each with
/// its marker; swap has a config.toml too.
fn first_repository(dir: &Path) {
    version(
        &dir.join("iris"),
        1,
        &bundled_repo().join("iris/1/model.onnx"),
        true,
    );
    version(&dir.join("swap"), 1, &swap_model(1), true);
    std::fs::write(
        dir.join("swap/config.toml"),
        "instances = 1\nmax_batch_size = 8\n",
    )
    .unwrap();
}

async fn infer(client: &reqwest::Client, base: &str, model: &str, body: &Value) -> Value {
    let out: Value = client
        .post(format!("{base}/v2/models/{model}/infer"))
        .json(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    out["outputs"].clone()
}

/// The index rows of `model`.
async fn rows(client: &reqwest::Client, base: &str, model: &str) -> Vec<Value> {
    index(client, base)
        .await
        .into_iter()
        .filter(|r| r["name"] == model)
        .collect()
}

async fn publish_and_swap(kind: Kind, tools: &store::Tools) {
    let store = StoreServer::start(kind, tools).await;
    let gate = Gate::open_to(store.addr).await;
    store.create(BUCKET);
    let local = tempfile::tempdir().unwrap();
    first_repository(local.path());
    store.upload(BUCKET, local.path(), PREFIX);
    // A file named like a version and a hidden file at the top of a model
    // are not part of it.
    store.put(BUCKET, &format!("{PREFIX}/swap/.notes"), &swap_model(1));

    let url = kind.url(BUCKET, PREFIX);
    let cache = tempfile::tempdir().unwrap();
    let flags = [
        "--repository-poll-secs",
        "1",
        "--model-ready-marker",
        MARKER,
    ];
    let sluice = serve(kind, &gate.endpoint(), &url, cache.path(), &flags).await;
    let base = sluice.base.clone();
    let client = reqwest::Client::new();
    let repository = [("repository", url.as_str())];

    // The answers are those of the same repository served from a directory.
    let local_server = TestServer::start(local.path()).await;
    let iris = json!({"inputs": [{"name": "input", "shape": [3, 4], "datatype": "FP32",
        "data": [5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3, 5.9, 3.0, 4.2, 1.5]}]});
    for (model, body) in [("iris", iris), ("swap", x_body(2.5))] {
        let remote = infer(&client, &base, model, &body).await;
        let direct = infer(&local_server.client, &local_server.base(), model, &body).await;
        assert!(remote.is_array(), "{model}: {remote}");
        assert_eq!(
            remote, direct,
            "{model}: from the store vs from a directory"
        );
    }
    local_server.stop().await;
    let downloaded = metric(
        &client,
        &base,
        "sluice_repository_download_bytes_total",
        &repository,
    )
    .await;
    assert!(downloaded > 0.0, "download bytes: {downloaded}");
    // Every family of docs/observability.md's "Remote repositories" table.
    for (name, least) in [
        ("sluice_repository_download_duration_seconds_count", 2.0),
        ("sluice_repository_syncs_total", 1.0),
        ("sluice_repository_last_sync_timestamp_seconds", 1.0),
        ("sluice_repository_cache_bytes", downloaded),
    ] {
        let value = metric(&client, &base, name, &repository).await;
        assert!(value >= least, "{name}: {value} < {least}");
    }
    let failures = metric(
        &client,
        &base,
        "sluice_repository_failures_total",
        &repository,
    )
    .await;
    assert_eq!(failures, 0.0, "no failure yet");

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = clients(&base, &tally, &stop, 3, &[1, 2, 4]);
    more_ok(&tally, 20).await;

    // Version 2, published files first and marker last, is served after a
    // poll, with the clients running.
    let v2 = tempfile::tempdir().unwrap();
    version(v2.path(), 2, &swap_model(2), true);
    store.upload(BUCKET, v2.path(), &format!("{PREFIX}/swap"));
    let t: &Tally = &tally;
    eventually("version 2 to serve", PATIENCE, || async move {
        t.last_k() == Some(2)
    })
    .await;
    more_ok(&tally, 20).await;

    // Version 3 without its marker is never served, however many polls.
    store.put(
        BUCKET,
        &format!("{PREFIX}/swap/3/model.onnx"),
        &swap_model(3),
    );
    let syncs = metric(&client, &base, "sluice_repository_syncs_total", &repository).await;
    let (c, b) = (&client, base.as_str());
    eventually("three more listings", PATIENCE, || async move {
        metric(c, b, "sluice_repository_syncs_total", &repository).await >= syncs + 3.0
    })
    .await;
    more_ok(&tally, 10).await;
    assert!(
        !tally.ks.lock().unwrap().contains(&3),
        "version 3 has no marker"
    );
    assert!(
        rows(&client, &base, "swap")
            .await
            .iter()
            .all(|r| r["version"] != "3"),
        "{:?}",
        rows(&client, &base, "swap").await
    );

    // Version 2 deleted: the version policy (latest 1) serves version 1
    // again, from the cache.
    store.delete(BUCKET, &format!("{PREFIX}/swap/2"));
    eventually("version 1 to serve again", PATIENCE, || async move {
        t.last_k() == Some(1)
    })
    .await;
    more_ok(&tally, 20).await;

    // The store goes down: listings fail, every model keeps serving, and
    // the index says why.
    let failures = [("repository", url.as_str()), ("operation", "list")];
    let failed = metric(
        &client,
        &base,
        "sluice_repository_failures_total",
        &failures,
    )
    .await;
    gate.shut().await;
    eventually("two failed listings", PATIENCE, || async move {
        metric(c, b, "sluice_repository_failures_total", &failures).await >= failed + 2.0
    })
    .await;
    let u = url.as_str();
    let why = until("the index to report the store", PATIENCE, || async move {
        rows(c, b, "swap")
            .await
            .into_iter()
            .find(|r| r["state"] == "READY" && r["reason"].as_str().is_some_and(|s| s.contains(u)))
    })
    .await;
    assert_eq!(why["version"], "1", "{why}");
    more_ok(&tally, 30).await;
    let (status, _) = get(&client, &format!("{base}/v2/health/ready")).await;
    assert_eq!(status, 200, "a store outage is not a reason to be unready");

    // Version 4 is published while Sluice cannot see the store; when the
    // store is back, it is found and served, and the index is clear again.
    let v4 = tempfile::tempdir().unwrap();
    version(v4.path(), 4, &swap_model(4), true);
    store.upload(BUCKET, v4.path(), &format!("{PREFIX}/swap"));
    gate.open().await;
    eventually("version 4 to serve", PATIENCE, || async move {
        t.last_k() == Some(4)
    })
    .await;
    eventually("the index to be clear", PATIENCE, || async move {
        rows(c, b, "swap").await.iter().all(|r| r["reason"] == "")
    })
    .await;
    more_ok(&tally, 20).await;

    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    let wrong = tally.wrong.lock().unwrap();
    let lost = tally.lost.lock().unwrap();
    eprintln!(
        "remote: {}: {} answers, {} wrong, {} lost, versions seen {:?}",
        kind.name(),
        tally.ok(),
        wrong.len(),
        lost.len(),
        tally.ks.lock().unwrap()
    );
    assert!(wrong.is_empty(), "wrong answers: {:?}", wrong.first());
    assert!(lost.is_empty(), "lost requests: {:?}", lost.first());
    let cached = std::fs::read_dir(cache.path()).unwrap().count();
    assert_eq!(cached, 1, "one cache directory per repository");
    drop(sluice);
}

async fn get(client: &reqwest::Client, url: &str) -> (u16, Value) {
    match client.get(url).send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.json().await.unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

/// A Sluice serving `url`, reaching `kind`'s store at `endpoint`.
async fn serve(
    kind: Kind,
    endpoint: &str,
    url: &str,
    cache: &Path,
    flags: &[&str],
) -> crate::harness::process::Process {
    let mut sluice = Sluice::serve_from(url)
        .args(flags)
        .args([OsString::from("--model-cache-dir"), cache.into()]);
    for (key, value) in kind.env(endpoint) {
        sluice = sluice.env(key, value);
    }
    sluice.start().await
}

/// The version directories of `model` in the one repository of `cache`.
fn cached_versions(cache: &Path, model: &str) -> Vec<u64> {
    let Some(repo) = std::fs::read_dir(cache).ok().and_then(|mut d| d.next()) else {
        return Vec::new();
    };
    let mut versions: Vec<u64> = std::fs::read_dir(repo.unwrap().path().join(model))
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    versions.sort_unstable();
    versions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_budget_removes_versions_no_longer_served_oldest_first() {
    let Some(tools) = tools() else { return };
    let kind = Kind::S3;
    let store = StoreServer::start(kind, &tools).await;
    store.create(BUCKET);
    let local = tempfile::tempdir().unwrap();
    version(&local.path().join("swap"), 1, &swap_model(1), false);
    store.upload(BUCKET, local.path(), PREFIX);
    let size = std::fs::metadata(swap_model(1)).unwrap().len();
    // Room for two versions of swap, not three.
    let budget = (size * 5 / 2).to_string();
    let url = kind.url(BUCKET, PREFIX);
    let cache = tempfile::tempdir().unwrap();
    let sluice = serve(
        kind,
        &store.endpoint(),
        &url,
        cache.path(),
        &[
            "--repository-poll-secs",
            "1",
            "--model-cache-max-bytes",
            &budget,
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let (c, b) = (&client, sluice.base.as_str());
    for v in 2..=3u64 {
        let dir = tempfile::tempdir().unwrap();
        version(dir.path(), v, &swap_model(v), false);
        store.upload(BUCKET, dir.path(), &format!("{PREFIX}/swap"));
        eventually(format!("version {v} to serve"), PATIENCE, || async move {
            let out = infer(c, b, "swap", &x_body(0.0)).await;
            out[0]["data"][0].as_f64() == Some(v as f64)
        })
        .await;
    }
    // Versions 1 and 2 were each served, then replaced; 1 is the older.
    let cache_path = cache.path();
    eventually("version 1 to leave the cache", PATIENCE, || async move {
        cached_versions(cache_path, "swap") == [2, 3]
    })
    .await;
    let bytes = metric(
        c,
        b,
        "sluice_repository_cache_bytes",
        &[("repository", url.as_str())],
    )
    .await;
    assert!(bytes <= (size * 5 / 2) as f64, "cache holds {bytes} bytes");
    // Deleting version 3 serves 2 from the cache, and deleting 2 as well
    // serves 1, downloaded again.
    store.delete(BUCKET, &format!("{PREFIX}/swap/3"));
    store.delete(BUCKET, &format!("{PREFIX}/swap/2"));
    eventually("version 1 to serve again", PATIENCE, || async move {
        infer(c, b, "swap", &x_body(0.0)).await[0]["data"][0].as_f64() == Some(1.0)
    })
    .await;
}

/// A store of `kind` holding [`first_repository`], and a Sluice serving it
/// with `flags` (and its cache directory).
async fn published(
    kind: Kind,
    tools: &store::Tools,
    flags: &[&str],
) -> (
    StoreServer,
    crate::harness::process::Process,
    tempfile::TempDir,
) {
    let store = StoreServer::start(kind, tools).await;
    store.create(BUCKET);
    let local = tempfile::tempdir().unwrap();
    first_repository(local.path());
    store.upload(BUCKET, local.path(), PREFIX);
    let cache = tempfile::tempdir().unwrap();
    let url = kind.url(BUCKET, PREFIX);
    let sluice = serve(kind, &store.endpoint(), &url, cache.path(), flags).await;
    (store, sluice, cache)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_mode_lists_remote_models_and_loads_them_on_request() {
    let Some(tools) = tools() else { return };
    let (_store, sluice, cache) = published(
        Kind::Azure,
        &tools,
        &["--model-control-mode", "explicit", "--load-model", "iris"],
    )
    .await;
    let client = reqwest::Client::new();
    let base = sluice.base.as_str();
    // Only iris was downloaded; swap is listed, not loaded, not downloaded.
    let swap = rows(&client, base, "swap").await;
    assert_eq!(swap.len(), 1, "{swap:?}");
    assert_eq!(swap[0]["reason"], "not loaded", "{swap:?}");
    assert!(cached_versions(cache.path(), "swap").is_empty());
    // A load call downloads it and serves it.
    let response = client
        .post(format!("{base}/v2/repository/models/swap/load"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    let out = infer(&client, base, "swap", &x_body(1.0)).await;
    assert_eq!(out[0]["data"][0].as_f64(), Some(2.0), "{out}");
    assert_eq!(cached_versions(cache.path(), "swap"), [1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_demand_downloads_a_remote_model_on_its_first_request() {
    let Some(tools) = tools() else { return };
    let (_store, sluice, cache) =
        published(Kind::S3, &tools, &["--model-control-mode", "on-demand"]).await;
    let client = reqwest::Client::new();
    let base = sluice.base.as_str();
    // Listed, not downloaded.
    for model in ["iris", "swap"] {
        assert_eq!(rows(&client, base, model).await.len(), 1, "{model}");
        assert!(cached_versions(cache.path(), model).is_empty(), "{model}");
    }
    // The first request downloads and loads swap, and only swap.
    let out = infer(&client, base, "swap", &x_body(1.0)).await;
    assert_eq!(out[0]["data"][0].as_f64(), Some(2.0), "{out}");
    assert_eq!(cached_versions(cache.path(), "swap"), [1]);
    assert!(cached_versions(cache.path(), "iris").is_empty());
}
