//! `sluice-load` driven in-process against a real server, in every protocol
//! (REST JSON, REST binary, gRPC) and every mode (closed loop, open loop, and
//! a small concurrency sweep) on `iris`.
//!
//! These check the generator's bookkeeping and that the server answers every
//! request under sustained load, not how fast it is: there are no speed
//! assertions (the suite runs on shared, small machines). Each protocol costs
//! about 3 s.

use crate::harness::{TestServer, test_repo};
use sluice_load::{Load, Mode, Protocol, RunConfig, RunResult};
use std::time::Duration;

/// One step's invariants: bookkeeping adds up, nothing failed, and the
/// latency summary is ordered.
fn check(r: &RunResult) {
    let what = format!(
        "{} {:?} c={:?} r={:?}",
        r.protocol, r.mode, r.concurrency, r.rate
    );
    assert_eq!(r.sent, r.ok + r.error_count, "{what}: sent != ok + errors");
    assert_eq!(r.error_count, 0, "{what}: errors {:?}", r.errors);
    assert_eq!(
        r.errors.values().sum::<u64>(),
        r.error_count,
        "{what}: error kinds do not add up"
    );
    assert!(r.ok > 0, "{what}: no request succeeded");
    assert_eq!(r.model, "iris");
    assert_eq!(r.rows_per_request, 1, "{what}");
    let l = &r.latency_us;
    assert!(
        l.min <= l.p50 && l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.p999 && l.p999 <= l.max,
        "{what}: percentiles out of order: {l:?}"
    );
    assert!(l.p50 > 0, "{what}: zero median latency: {l:?}");
    assert!(
        r.throughput_rps > 0.0 && r.duration_s > 0.0,
        "{what}: {r:?}"
    );
}

/// `b` read back from the results file equals `a`, floats to within
/// rounding (serde_json does not round-trip every last ulp).
fn same(b: &RunResult, a: &RunResult) {
    let close = |x: f64, y: f64| (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0);
    let floats = |r: &RunResult| {
        [
            r.duration_s,
            r.throughput_rps,
            r.throughput_rows_per_s,
            r.latency_us.mean,
            r.latency_us.stdev,
        ]
    };
    assert!(
        floats(b).iter().zip(floats(a)).all(|(&x, y)| close(x, y)),
        "results file changed a float: {b:?} vs {a:?}"
    );
    let mut b = b.clone();
    (b.duration_s, b.throughput_rps, b.throughput_rows_per_s) =
        (a.duration_s, a.throughput_rps, a.throughput_rows_per_s);
    (b.latency_us.mean, b.latency_us.stdev) = (a.latency_us.mean, a.latency_us.stdev);
    assert_eq!(&b, a, "the results file does not round-trip");
}

/// Closed loop at 4, open loop at 200 req/s, then a sweep over 1 and 2
/// outstanding requests; every result is checked and round-trips through
/// the JSON results file.
async fn drive(protocol: Protocol) {
    let server = TestServer::start(&test_repo()).await;
    let base = RunConfig {
        url: format!("http://{}", server.http),
        grpc_url: format!("http://{}", server.grpc),
        protocol,
        model: "iris".into(),
        quiet: true,
        grpc_connections: 2,
        request_timeout: Duration::from_secs(10),
        ..RunConfig::default()
    };
    let steps = [
        (Load::Concurrency(vec![4]), Duration::from_millis(1000)),
        (Load::Rate(vec![200.0]), Duration::from_millis(1000)),
        (Load::Concurrency(vec![1, 2]), Duration::from_millis(500)),
    ];
    let mut all = Vec::new();
    for (load, duration) in steps {
        let results = sluice_load::run(RunConfig {
            load: load.clone(),
            duration,
            ..base.clone()
        })
        .await
        .unwrap();
        let levels = match &load {
            Load::Concurrency(cs) => cs.len(),
            Load::Rate(rs) => rs.len(),
        };
        assert_eq!(results.len(), levels, "one result per step of {load:?}");
        for (i, r) in results.iter().enumerate() {
            check(r);
            assert_eq!(r.protocol, protocol.as_str());
            match &load {
                Load::Concurrency(cs) => {
                    assert_eq!(r.mode, Mode::Concurrency);
                    assert_eq!(r.concurrency, Some(cs[i] as u64));
                    assert_eq!(r.rate, None);
                }
                Load::Rate(rs) => {
                    assert_eq!(r.mode, Mode::Rate);
                    assert_eq!(r.rate, Some(rs[i]));
                    assert_eq!(r.concurrency, None);
                }
            }
        }
        all.extend(results);
    }

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("results.json");
    sluice_load::report::write_json(&path, &all).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let back: Vec<RunResult> = serde_json::from_str(&text).unwrap();
    assert_eq!(back.len(), all.len());
    for (b, a) in back.iter().zip(&all) {
        same(b, a);
    }
    let raw: serde_json::Value = serde_json::from_str(&text).unwrap();
    let first = &raw[0];
    for field in [
        "mode",
        "protocol",
        "sent",
        "ok",
        "error_count",
        "latency_us",
    ] {
        assert!(first.get(field).is_some(), "results file lacks '{field}'");
    }
    assert!(first["latency_us"]["p999"].is_u64());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_json_closed_open_sweep() {
    drive(Protocol::RestJson).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_binary_closed_open_sweep() {
    drive(Protocol::RestBinary).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_closed_open_sweep() {
    drive(Protocol::Grpc).await;
}
