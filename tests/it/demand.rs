//! On-demand loading (`--model-control-mode on-demand`): models load on
//! their first request, least recently used ones leave under the memory
//! budget, idle ones leave after the idle timeout, pinned ones stay.
//!
//! The models are made here: `fixtures/swap/v1.onnx` (y = x + 1) with its
//! one constant replaced, so model `mK` answers x + K and every answer
//! shows which model gave it. Tests that measure memory run `sluice` as a
//! child process, whose resident set is its own.

use crate::harness::TestServer;
use crate::harness::models::{Repo, add_model, infer_x, slow, swap_model, x_body};
use crate::harness::process::{Process, Sluice, proc_status};
use crate::harness::wait::{PATIENCE, eventually, until};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Each generated model has one instance, so its cost does not depend on
/// the machine's core count.
const ONE_INSTANCE: &str = "instances = 1\n";

/// The name of the generated model that adds `k`.
fn name(k: u32) -> String {
    format!("m{k:03}")
}

/// `fixtures/swap/v1.onnx` with its constant 1.0 replaced by `k`.
fn plus_k(k: u32) -> Vec<u8> {
    let base = std::fs::read(swap_model(1)).unwrap();
    let one = 1.0f32.to_le_bytes();
    let at: Vec<usize> = base
        .windows(4)
        .enumerate()
        .filter(|(_, w)| *w == one)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(at.len(), 1, "swap/v1.onnx must hold the float 1.0 once");
    let mut bytes = base;
    bytes[at[0]..at[0] + 4].copy_from_slice(&(k as f32).to_le_bytes());
    bytes
}

/// Models `m001` … `m{n}` (each y = x + K) in `repo`, with `config`.
fn generate(repo: &Path, n: u32, config: &str) {
    for k in 1..=n {
        let dir = repo.join(name(k));
        std::fs::create_dir_all(dir.join("1")).unwrap();
        std::fs::write(dir.join("1/model.onnx"), plus_k(k)).unwrap();
        std::fs::write(dir.join("config.toml"), config).unwrap();
    }
}

/// One request of `x` to `model` at `base`: its status and body.
async fn ask(client: &reqwest::Client, base: &str, model: &str, x: f32) -> (u16, Value) {
    let r = client
        .post(format!("{base}/v2/models/{model}/infer"))
        .json(&x_body(x))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn answer(body: &Value) -> Option<f64> {
    body["outputs"][0]["data"][0].as_f64()
}

/// The repository index of `base`, by (name, version).
async fn index(client: &reqwest::Client, base: &str) -> Vec<Value> {
    client
        .post(format!("{base}/v2/repository/index"))
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json::<Vec<Value>>()
        .await
        .unwrap()
}

fn row<'a>(rows: &'a [Value], model: &str) -> &'a Value {
    rows.iter()
        .find(|r| r["name"] == model)
        .unwrap_or_else(|| panic!("{model} is not in the index: {rows:?}"))
}

async fn metric(client: &reqwest::Client, base: &str, name: &str) -> f64 {
    crate::harness::metrics::metric(
        &crate::harness::metrics::scrape(client, base).await,
        name,
        &[],
    )
}

/// A small deterministic generator (xorshift64*), so a run can be repeated.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Zipf's law over ranks 1..=n with exponent `s`, as a cumulative table.
struct Zipf(Vec<f64>);

impl Zipf {
    fn new(n: u32, s: f64) -> Self {
        let weights: Vec<f64> = (1..=n).map(|k| 1.0 / f64::from(k).powf(s)).collect();
        let total: f64 = weights.iter().sum();
        let mut acc = 0.0;
        Self(
            weights
                .iter()
                .map(|w| {
                    acc += w / total;
                    acc
                })
                .collect(),
        )
    }

    /// A rank, 1 = the most likely.
    fn sample(&self, rng: &mut Rng) -> u32 {
        let u = rng.next();
        let i = self.0.partition_point(|&c| c < u).min(self.0.len() - 1);
        i as u32 + 1
    }
}

/// What a mix of clients saw.
#[derive(Debug, Default)]
struct Mix {
    ok: u64,
    failed: Vec<String>,
    latencies: Vec<Duration>,
    /// Requests sent to each model rank.
    sent: std::collections::HashMap<u32, u64>,
}

/// `clients` tasks send Zipf-skewed requests over `n` models for `run`;
/// every answer is checked against the model that should have given it.
async fn zipf_mix(base: &str, n: u32, clients: u64, run: Duration) -> Mix {
    let zipf = Arc::new(Zipf::new(n, 1.1));
    let until_at = Instant::now() + run;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (zipf, base) = (zipf.clone(), base.to_string());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (c + 1));
            let mut mix = Mix::default();
            while Instant::now() < until_at {
                let k = zipf.sample(&mut rng);
                let x = (rng.next() * 100.0) as f32;
                let started = Instant::now();
                *mix.sent.entry(k).or_default() += 1;
                let (status, body) = ask(&client, &base, &name(k), x).await;
                mix.latencies.push(started.elapsed());
                let want = f64::from(x + k as f32);
                match answer(&body) {
                    Some(got) if status == 200 && (got - want).abs() < 1e-3 => mix.ok += 1,
                    _ => mix
                        .failed
                        .push(format!("{}: {status} {body} (wanted {want})", name(k))),
                }
            }
            mix
        }));
    }
    let mut all = Mix::default();
    for task in tasks {
        let mix = task.await.unwrap();
        all.ok += mix.ok;
        all.failed.extend(mix.failed);
        all.latencies.extend(mix.latencies);
        for (k, n) in mix.sent {
            *all.sent.entry(k).or_default() += n;
        }
    }
    all
}

/// Resident set size of `pid` in bytes (`VmRSS`), and its peak (`VmHWM`).
fn rss(pid: u32) -> (u64, u64) {
    let kb = |key| proc_status(pid, key).unwrap() * 1024;
    (kb("VmRSS:"), kb("VmHWM:"))
}

/// Headroom over the budget that the process may use, beside what it uses
/// before any model loads: ONNX Runtime's one-time state on the first
/// session, thread stacks, a model loaded before the evictions that make
/// room for it, and heap memory freed by evictions that the allocator has
/// not handed back yet (the sweeper does once a second). Measured: 15–30 MiB.
/// docs/autoscaling.md gives the same figure.
const OVERHEAD: u64 = 64 << 20;

/// The cost the generated models measure in a server of their own, after
/// one first model took ONNX Runtime's one-time state.
async fn typical_cost(repo: &Path) -> u64 {
    let server = Sluice::serve(repo)
        .args(["--model-control-mode", "on-demand", "--load-model", "m300"])
        .start()
        .await;
    let client = reqwest::Client::new();
    for k in 1..=3 {
        ask(&client, &server.base, &name(k), 0.0).await;
    }
    let rows = index(&client, &server.base).await;
    (1..=3)
        .map(|k| row(&rows, &name(k))["memory_bytes"].as_u64().unwrap())
        .max()
        .unwrap()
}

/// 300 models under a budget that fits about 30, Zipf-skewed clients:
/// no request fails, every answer is the right model's, the resident set
/// stays within the budget plus the documented overhead, evictions happen
/// and the most used models stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_hundred_models_under_a_budget_for_thirty() {
    let repo = Repo::new();
    generate(repo.path(), 300, ONE_INSTANCE);
    let budget = 30 * typical_cost(repo.path()).await;
    let server = Sluice::serve(repo.path())
        .args(["--model-control-mode", "on-demand"])
        .args(["--model-memory-budget-bytes", &budget.to_string()])
        .start()
        .await;
    let (start_rss, _) = rss(server.pid());
    let mix = zipf_mix(&server.base, 300, 8, Duration::from_secs(6)).await;
    assert!(mix.failed.is_empty(), "failed requests: {:?}", mix.failed);
    assert!(mix.ok > 300, "only {} requests ran", mix.ok);

    let client = reqwest::Client::new();
    let evictions = metric(&client, &server.base, "sluice_model_evictions_total").await;
    assert!(
        evictions > 0.0,
        "no eviction with 300 models over a budget for 30"
    );
    let loaded = metric(&client, &server.base, "sluice_model_memory_loaded_bytes").await;
    let (_, peak) = rss(server.pid());
    assert!(
        peak <= start_rss + budget + OVERHEAD,
        "peak resident set {peak} B over start {start_rss} B + budget {budget} B + overhead {OVERHEAD} B (loaded costs now: {loaded} B)"
    );
    // The two most used models (a quarter of the requests) mostly stay
    // loaded: each was loaded a few times at most while served hundreds of
    // times. (Not "loaded at the end": a load whose measured cost comes out
    // high on a busy machine may evict everything, and the last request
    // may have been just before it.)
    let text = crate::harness::metrics::scrape(&client, &server.base).await;
    let rows = index(&client, &server.base).await;
    for k in 1..=2 {
        let model = name(k);
        let loads = crate::harness::metrics::metric(
            &text,
            "sluice_model_load_duration_seconds_count",
            &[("model", model.as_str())],
        );
        let served = mix.sent.get(&k).copied().unwrap_or(0) as f64;
        assert!(
            loads >= 1.0 && loads * 5.0 <= served,
            "{}: loaded {loads} times for {served} requests; row {}",
            name(k),
            row(&rows, &name(k))
        );
    }
}

/// Ten concurrent first requests to one cold model: one load, ten right
/// answers.
#[tokio::test]
async fn ten_first_requests_cause_one_load() {
    let repo = Repo::new();
    generate(repo.path(), 2, ONE_INSTANCE);
    let server = TestServer::start_with(repo.path(), |c| {
        c.control_mode = sluice::registry::ControlMode::OnDemand;
    })
    .await;
    let (_, before) = server.get("/v2/models/m002/ready").await;
    assert_eq!(
        before["ready"], false,
        "m002 must not be loaded before a request"
    );
    let base = server.base();
    let answers = futures::future::join_all((0..10).map(|i| {
        let (client, base) = (server.client.clone(), base.clone());
        async move { ask(&client, &base, "m002", i as f32).await }
    }))
    .await;
    for (i, (status, body)) in answers.iter().enumerate() {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(answer(body), Some(f64::from(i as f32 + 2.0)));
    }
    assert_eq!(
        server.metric("sluice_model_demand_loads_total", &[]).await,
        1.0
    );
    assert_eq!(
        server
            .metric(
                "sluice_model_load_duration_seconds_count",
                &[("model", "m002")]
            )
            .await,
        1.0
    );
    assert_eq!(
        server
            .metric("sluice_model_cold_start_seconds_count", &[])
            .await,
        10.0
    );
}

/// A request that may wait less than the load takes gets 503 with
/// `Retry-After`; the load goes on, and the next request is served.
#[tokio::test]
async fn a_load_longer_than_the_wait_answers_503_with_retry_after() {
    let repo = Repo::new().with("slow", &slow(), Some(ONE_INSTANCE));
    let server = TestServer::start_with(repo.path(), |c| {
        c.control_mode = sluice::registry::ControlMode::OnDemand;
    })
    .await;
    let mut body = x_body(1.0);
    body["parameters"] = json!({"timeout": 1});
    let r = server
        .client
        .post(server.url("/v2/models/slow/infer"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let error: Value = r.json().await.unwrap();
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("still loading on demand"),
        "{error}"
    );
    let answer = infer_x(&server.client, &server.base(), "slow", 1.0).await;
    assert_eq!(answer["outputs"][0]["data"][0], 1.0);
    assert_eq!(
        server.metric("sluice_model_demand_loads_total", &[]).await,
        1.0
    );
}

/// `slow` without batching (each request runs alone), on four instances so
/// that its cost (~14 MiB) dwarfs the noise of the measure.
const SLOW_CONFIG: &str = "instances = 4\nmax_batch_size = 0\n";

/// Loads `slow2` (measured while nothing else runs), unloads it, then
/// loads `slow`, beside the pinned `m002`.
async fn slow2_then_slow(client: &reqwest::Client, base: &str) {
    ask(client, base, "slow2", 0.0).await;
    let unload = format!("{base}/v2/repository/models/slow2/unload");
    assert_eq!(client.post(unload).send().await.unwrap().status(), 200);
    ask(client, base, "slow", 0.0).await;
}

/// Costs of the pinned `m002` (the first model: it also takes ONNX
/// Runtime's one-time state) and of `slow` in a server of their own,
/// loaded in the order of [`a_model_in_use_is_not_evicted_under_its_requests`].
async fn costs(repo: &Path) -> (u64, u64) {
    let server = Sluice::serve(repo)
        .args(["--model-control-mode", "on-demand", "--load-model", "m002"])
        .start()
        .await;
    let client = reqwest::Client::new();
    slow2_then_slow(&client, &server.base).await;
    let rows = index(&client, &server.base).await;
    let cost = |m| row(&rows, m)["memory_bytes"].as_u64().unwrap();
    // The model's metadata gives the same measured cost.
    let meta: serde_json::Value = client
        .get(format!("{}/v2/models/slow", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        meta["parameters"]["memory_bytes"].as_u64(),
        Some(cost("slow")),
        "{meta}"
    );
    (cost("m002"), cost("slow"))
}

/// Two copies of `slow` (and m001, m002) on demand, with m002 pinned and a
/// budget with room beside it for one copy of slow, not two: the margins
/// (half of slow's cost, ~7 MiB) are well above the noise of the measure
/// across processes (~2 MiB for the first model, which also takes ONNX
/// Runtime's one-time state).
/// Also says, for failure messages, what was measured and the budget.
async fn room_for_one_slow() -> (Repo, Process, String) {
    let repo = Repo::new();
    generate(repo.path(), 2, ONE_INSTANCE);
    for name in ["slow", "slow2"] {
        add_model(repo.path(), name, &slow(), Some(SLOW_CONFIG));
    }
    let (pinned, slow_cost) = costs(repo.path()).await;
    let budget = pinned + slow_cost + slow_cost / 2;
    let server = Sluice::serve(repo.path())
        .args(["--model-control-mode", "on-demand", "--load-model", "m002"])
        .args(["--model-memory-budget-bytes", &budget.to_string()])
        .start()
        .await;
    let sizes = format!(
        "costs measured before {:?}, budget {budget}",
        (pinned, slow_cost)
    );
    (repo, server, sizes)
}

/// A model with requests in flight is not freed under them: the load that
/// needs its memory marks it, its requests finish with the right answers,
/// and it leaves after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_model_in_use_is_not_evicted_under_its_requests() {
    let (_repo, server, sizes) = room_for_one_slow().await;
    let client = reqwest::Client::new();
    // slow2's cost, measured while nothing else ran, is what its next load
    // makes room for before it starts (requests running during a load add
    // noise to the load's own measure).
    slow2_then_slow(&client, &server.base).await;
    let held: Vec<_> = (0..12)
        .map(|i| {
            let (client, base) = (client.clone(), server.base.clone());
            tokio::spawn(async move { ask(&client, &base, "slow", i as f32).await })
        })
        .collect();
    eventually("requests running on slow", PATIENCE, || async {
        let text = crate::harness::metrics::scrape(&client, &server.base).await;
        crate::harness::metrics::metric(&text, "sluice_inflight_requests", &[("model", "slow")])
            >= 2.0
    })
    .await;
    let (status, body) = ask(&client, &server.base, "slow2", 7.0).await;
    assert_eq!((status, answer(&body)), (200, Some(7.0)), "{body}");
    for (i, task) in held.into_iter().enumerate() {
        let (status, body) = task.await.unwrap();
        assert_eq!((status, answer(&body)), (200, Some(i as f64)), "{body}");
    }
    let evicted = evicted_busy(&server, "slow");
    assert!(
        evicted,
        "slow was not evicted while busy; {sizes}, index now {:?}",
        index(&client, &server.base).await
    );
    // It was freed once its requests ended: the loaded bytes are then only
    // the served versions' costs (they count an evicted version until then).
    eventually("slow to be freed", PATIENCE, || async {
        let text = crate::harness::metrics::scrape(&client, &server.base).await;
        let loaded =
            crate::harness::metrics::metric(&text, "sluice_model_memory_loaded_bytes", &[]);
        let served = crate::harness::metrics::metric(&text, "sluice_model_memory_bytes", &[]);
        loaded == served
    })
    .await;
}

fn evicted_busy(server: &Process, model: &str) -> bool {
    server
        .logged("model version unloaded")
        .iter()
        .any(|e| e["model"] == model && e["busy"] == true)
}

/// A model that costs more than the whole budget fails with the reason,
/// and requests do not load it again and again.
#[tokio::test]
async fn a_model_larger_than_the_budget_fails_with_the_reason() {
    let repo = Repo::new();
    generate(repo.path(), 1, ONE_INSTANCE);
    let server = Sluice::serve(repo.path())
        .args(["--model-control-mode", "on-demand"])
        .args(["--model-memory-budget-bytes", "4096"])
        .start()
        .await;
    let client = reqwest::Client::new();
    for _ in 0..2 {
        let (status, body) = ask(&client, &server.base, "m001", 1.0).await;
        assert_eq!(status, 503, "{body}");
        let error = body["error"].as_str().unwrap();
        assert!(
            error.contains("more than the whole budget of 4096 bytes")
                && error.contains("--model-memory-budget-bytes"),
            "{error}"
        );
    }
    assert_eq!(
        metric(&client, &server.base, "sluice_model_demand_loads_total").await,
        1.0
    );
    let rows = index(&client, &server.base).await;
    let m = row(&rows, "m001");
    assert_eq!(m["state"], "UNAVAILABLE");
    assert!(m["reason"].as_str().unwrap().contains("whole budget"));
}

/// Versions unused for the idle timeout are unloaded and load again on
/// the next request; a pinned model stays however long it is idle.
#[tokio::test]
async fn idle_versions_unload_and_pinned_ones_stay() {
    let repo = Repo::new();
    generate(repo.path(), 2, ONE_INSTANCE);
    std::fs::write(
        repo.path().join("m002/config.toml"),
        format!("{ONE_INSTANCE}pinned = true\n"),
    )
    .unwrap();
    let server = TestServer::start_with(repo.path(), |c| {
        c.control_mode = sluice::registry::ControlMode::OnDemand;
        c.demand.idle_unload = Some(Duration::from_secs(1));
    })
    .await;
    let base = server.base();
    let rows = index(&server.client, &base).await;
    assert_eq!(
        row(&rows, "m002")["state"],
        "READY",
        "pinned: loaded at start"
    );
    assert_eq!(row(&rows, "m001")["state"], "UNAVAILABLE");
    assert_eq!(row(&rows, "m001")["reason"], "unloaded");

    let (status, body) = ask(&server.client, &base, "m001", 1.0).await;
    assert_eq!((status, answer(&body)), (200, Some(2.0)));
    let rows = until("m001 to be unloaded for idleness", PATIENCE, || async {
        let rows = index(&server.client, &base).await;
        (row(&rows, "m001")["state"] == "UNAVAILABLE").then_some(rows)
    })
    .await;
    assert_eq!(row(&rows, "m001")["reason"], "unloaded");
    assert!(row(&rows, "m001")["last_used_ms"].as_u64().is_some());
    // m002 has been idle longer than m001 and stays.
    assert_eq!(row(&rows, "m002")["state"], "READY");
    assert!(server.metric("sluice_model_idle_unloads_total", &[]).await >= 1.0);
    let (status, body) = ask(&server.client, &base, "m001", 2.0).await;
    assert_eq!((status, answer(&body)), (200, Some(3.0)));
    let (status, body) = ask(&server.client, &base, "m002", 2.0).await;
    assert_eq!((status, answer(&body)), (200, Some(4.0)));
}

/// With polling, a new version of a model that is not loaded is listed
/// and loads with the next request, not before.
#[tokio::test]
async fn a_swap_of_an_unloaded_model_loads_with_the_next_request() {
    let repo = Repo::new();
    generate(repo.path(), 1, ONE_INSTANCE);
    let server = Sluice::serve(repo.path())
        .args(["--model-control-mode", "on-demand"])
        .args(["--repository-poll-secs", "1"])
        .start()
        .await;
    let changes = |n: usize| {
        let server = &server;
        move || async move {
            let seen = server
                .logged("model changed in the repository while not loaded; it loads with its next request")
                .iter()
                .filter(|e| e["model"] == "m001")
                .count();
            (seen >= n).then_some(())
        }
    };
    // The first poll finds m001 new; only a change makes the next line.
    until("the first poll", PATIENCE, changes(1)).await;
    let dir = repo.path().join("m001");
    std::fs::create_dir_all(dir.join(".2")).unwrap();
    std::fs::write(dir.join(".2/model.onnx"), plus_k(40)).unwrap();
    std::fs::rename(dir.join(".2"), dir.join("2")).unwrap();
    until("the poll that sees version 2", PATIENCE, changes(2)).await;
    let client = reqwest::Client::new();
    let rows = index(&client, &server.base).await;
    assert_eq!(row(&rows, "m001")["state"], "UNAVAILABLE", "{rows:?}");
    assert_eq!(
        metric(&client, &server.base, "sluice_model_demand_loads_total").await,
        0.0
    );
    let (status, body) = ask(&client, &server.base, "m001", 1.0).await;
    assert_eq!((status, answer(&body)), (200, Some(41.0)), "{body}");
    assert_eq!(body["model_version"], "2");
}

/// Benchmarks of docs/benchmarks.md ("On-demand loading"): cold start of
/// a small and the dense model, the Zipf mix on demand against the same
/// models all loaded, and the resident set of 300 models either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "benchmark: run by hand, see docs/benchmarks.md"]
async fn bench_demand() {
    let repo = Repo::new();
    generate(repo.path(), 300, ONE_INSTANCE);
    let dense = crate::harness::bundled_repo().join("dense/1/model.onnx");
    add_model(repo.path(), "dense", &dense, Some(ONE_INSTANCE));
    let budget = 30 * typical_cost(repo.path()).await;

    // Cold starts: the first request's latency against the second's.
    let server = Sluice::serve(repo.path())
        .args(["--model-control-mode", "on-demand"])
        .start()
        .await;
    let client = reqwest::Client::new();
    for model in ["m150", "dense"] {
        let input = if model == "dense" {
            dense_body()
        } else {
            x_body(1.0)
        };
        let mut times = Vec::new();
        for _ in 0..2 {
            let started = Instant::now();
            let r = client
                .post(format!("{}/v2/models/{model}/infer", server.base))
                .json(&input)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
            times.push(started.elapsed());
        }
        eprintln!(
            "cold start {model}: first request {:.1} ms, second {:.2} ms",
            times[0].as_secs_f64() * 1e3,
            times[1].as_secs_f64() * 1e3
        );
    }
    drop(server);

    let run = Duration::from_secs(10);
    for (label, args) in [
        (
            "all loaded (explicit)",
            vec!["--model-control-mode", "explicit"],
        ),
        (
            "on demand, budget for 30",
            vec!["--model-control-mode", "on-demand"],
        ),
    ] {
        let mut sluice = Sluice::serve(repo.path()).args(args);
        if label.starts_with("on demand") {
            sluice = sluice.args([
                "--model-memory-budget-bytes".to_string(),
                budget.to_string(),
            ]);
        }
        let server = sluice.start().await;
        let (start_rss, _) = rss(server.pid());
        let mut mix = zipf_mix(&server.base, 300, 8, run).await;
        assert!(mix.failed.is_empty(), "{:?}", mix.failed);
        mix.latencies.sort();
        let p = |q: f64| mix.latencies[((mix.latencies.len() - 1) as f64 * q) as usize];
        let (end_rss, peak) = rss(server.pid());
        let evictions = metric(&client, &server.base, "sluice_model_evictions_total").await;
        let loads = metric(&client, &server.base, "sluice_model_demand_loads_total").await;
        eprintln!(
            "{label}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms; RSS at start {} MiB, end {} MiB, peak {} MiB; {} requests, {loads} on-demand loads, {evictions} evictions",
            mix.ok as f64 / run.as_secs_f64(),
            p(0.5).as_secs_f64() * 1e3,
            p(0.99).as_secs_f64() * 1e3,
            start_rss >> 20,
            end_rss >> 20,
            peak >> 20,
            mix.ok,
        );
    }
    eprintln!("budget: {} MiB", budget >> 20);
}

/// One row for the dense model: 512 zeros.
fn dense_body() -> Value {
    json!({"inputs": [{"name": "input", "shape": [1, 512], "datatype": "FP32", "data": vec![0.0f32; 512]}]})
}

/// Ensembles, and the models their steps run, are pinned in on-demand
/// mode (a step does not load its model on demand): loaded at start, kept
/// when idle, and the ensemble answers.
#[tokio::test]
async fn ensembles_and_their_steps_are_pinned() {
    let repo = Repo::new();
    generate(repo.path(), 1, ONE_INSTANCE);
    let models = crate::harness::test_repo();
    add_model(
        repo.path(),
        "dtype_fp32",
        &models.join("dtype_fp32/1/model.onnx"),
        None,
    );
    std::fs::create_dir_all(repo.path().join("ensemble_fp32")).unwrap();
    std::fs::copy(
        models.join("ensemble_fp32/config.pbtxt"),
        repo.path().join("ensemble_fp32/config.pbtxt"),
    )
    .unwrap();
    let server = TestServer::start_with(repo.path(), |c| {
        c.control_mode = sluice::registry::ControlMode::OnDemand;
        c.demand.idle_unload = Some(Duration::from_secs(1));
    })
    .await;
    let base = server.base();
    let (status, body) = ask(&server.client, &base, "m001", 1.0).await;
    assert_eq!((status, answer(&body)), (200, Some(2.0)));
    until("m001 to be unloaded for idleness", PATIENCE, || async {
        let rows = index(&server.client, &base).await;
        (row(&rows, "m001")["state"] == "UNAVAILABLE").then_some(())
    })
    .await;
    let rows = index(&server.client, &base).await;
    assert_eq!(row(&rows, "dtype_fp32")["state"], "READY", "{rows:?}");
    assert_eq!(row(&rows, "ensemble_fp32")["state"], "READY", "{rows:?}");
    let (status, body) = server
        .post_json(
            "/v2/models/ensemble_fp32/infer",
            &json!({"inputs": [{"name": "IN", "shape": [1, 2], "datatype": "FP32", "data": [1.0, 2.0]}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let quad = body["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "QUAD")
        .unwrap();
    assert_eq!(quad["data"], json!([4.0, 8.0]));
}

/// Two models that do not fit together, asked for in turn: each request
/// evicts the other, and a model reloaded after eviction more than three
/// times in the window is logged and counted as thrashing. Every answer is
/// still right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_evicted_and_reloaded_again_and_again_is_thrashing() {
    let (_repo, server, _) = room_for_one_slow().await;
    let client = reqwest::Client::new();
    for i in 0..10 {
        let model = if i % 2 == 0 { "slow" } else { "slow2" };
        let (status, body) = ask(&client, &server.base, model, i as f32).await;
        assert_eq!((status, answer(&body)), (200, Some(f64::from(i))), "{body}");
    }
    assert!(metric(&client, &server.base, "sluice_model_thrash_total").await >= 1.0);
    assert!(
        !server
            .logged("model is thrashing: evicted and reloaded again and again; the memory budget is smaller than the working set")
            .is_empty()
    );
}
