//! End-to-end: drives the library's `run` against the in-process echo
//! endpoint over REST (JSON and binary), closed and open loop.

use std::time::Duration;

use sluice_load::{Load, Mode, Protocol, RunConfig, echo};

async fn echo_url() -> std::io::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(echo::serve_on(listener));
    Ok(format!("http://{addr}"))
}

#[tokio::test]
async fn rest_json_and_binary_closed_and_open_loop() {
    let url = echo_url().await.unwrap();
    for protocol in [Protocol::RestJson, Protocol::RestBinary] {
        let base = RunConfig {
            url: url.clone(),
            model: "echo".into(),
            protocol,
            batch_size: 3,
            max_requests: Some(60),
            duration: Duration::from_secs(20),
            quiet: true,
            ..RunConfig::default()
        };
        let closed = RunConfig {
            load: Load::Concurrency(vec![1, 4]),
            ..base.clone()
        };
        let results = sluice_load::run(closed).await.unwrap();
        assert_eq!(results.len(), 2);
        for r in &results {
            assert_eq!(r.mode, Mode::Concurrency);
            assert_eq!((r.sent, r.ok, r.error_count), (60, 60, 0), "{r:?}");
            assert_eq!(r.rows_per_request, 3);
            assert!(r.latency_us.p50 > 0 && r.latency_us.p50 <= r.latency_us.max);
        }
        let open = RunConfig {
            load: Load::Rate(vec![200.0]),
            ..base
        };
        let r = &sluice_load::run(open).await.unwrap()[0];
        assert_eq!((r.mode, r.sent, r.ok), (Mode::Rate, 60, 60), "{r:?}");
        // 60 requests at 200/s take about 0.3 s.
        assert!(r.duration_s > 0.25 && r.duration_s < 5.0, "{r:?}");
    }
}

#[tokio::test]
async fn unreachable_server_fails_fast() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let cfg = RunConfig {
        url: dead,
        model: "m".into(),
        quiet: true,
        ..RunConfig::default()
    };
    assert!(
        sluice_load::run(cfg).await.is_err(),
        "metadata fetch must fail"
    );
}
