//! SIGTERM during a hot swap, on the real binary.

use super::*;
use crate::harness::metrics::scrape;
use crate::harness::process::{ClientsUntilRefused, Outcome, Sluice};
use crate::harness::wait::until;
use std::time::Instant;

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
    let repo = Repo::new().with(
        "slow",
        &slow(),
        Some(&format!(
            "{SLOW_SERIAL}[[warmup]]\nbatch_size = 1\ncount = 4\n"
        )),
    );
    let repo = repo.path();
    let mut server = Sluice::serve(repo)
        .args(["--repository-poll-secs", "1"])
        .shutdown(delay, GRACE)
        .start()
        .await;
    let base = server.base.clone();
    let probe = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();

    // Clients send until their first transport error, as in shutdown.rs.
    let t0 = Instant::now();
    let versions = Arc::new(Mutex::new(BTreeSet::new()));
    let seen = versions.clone();
    let clients = ClientsUntilRefused::start(
        CLIENTS,
        &format!("{base}/v2/models/slow/infer"),
        delay + GRACE + Duration::from_secs(20),
        t0,
        |i| x_body(i as f32),
        move |i, status, out| {
            if status == 200 && out["outputs"][0]["data"][0].as_f64() != Some(i as f64) {
                panic!("wrong answer for x = {i}: {out}");
            }
            if let Some(v) = out["model_version"].as_str() {
                seen.lock().unwrap().insert(v.to_string());
            }
        },
    );
    eventually("the load to start", Duration::from_secs(30), || async {
        clients.answered() >= CLIENTS as u64
    })
    .await;

    // Publish version 2 (atomic rename); once the poll is loading it, SIGTERM.
    let staging = repo.join("slow/.2.tmp");
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::copy(slow(), staging.join("model.onnx")).unwrap();
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
    let swap_state = until(
        "the poll to start loading version 2",
        Duration::from_secs(30),
        || async { state_of_v2(&scrape(&probe, &base).await) },
    )
    .await;
    let term_at = t0.elapsed();
    let sigterm = Instant::now();
    server.sigterm();

    let exit = server.exit(delay + GRACE + Duration::from_secs(10)).await;
    let exit_after = sigterm.elapsed();
    let log = server.log();
    assert!(exit.success(), "exit status {exit}; log:\n{log}");
    assert!(exit_after <= delay + GRACE, "exit took {exit_after:?}");
    assert!(!log.contains("panicked"), "a panic in the log:\n{log}");

    let outcomes = clients.outcomes().await;
    let (mut ok, mut refused, mut during) = (0u64, 0u64, 0u64);
    for o in &outcomes {
        match o {
            Outcome::Answered { status, end, .. } => {
                assert_eq!(
                    *status, 200,
                    "an admitted request failed: {o:?}; log:\n{log}"
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
                panic!("a request broke at {at:?} (SIGTERM at {term_at:?}): {error}; log:\n{log}")
            }
        }
    }
    assert!(during > 0, "no request was in flight across the SIGTERM");
    let versions = versions.lock().unwrap().clone();
    let v2_published = server
        .logged("model version ready")
        .iter()
        .any(|fields| fields["version"] == 2);
    eprintln!(
        "faults: {name}: {} requests, 0 expected errors, 0 lost ({ok} answered 200, \
         {during} of them after SIGTERM, {refused} refused after the listeners closed; SIGTERM with \
         version 2 {swap_state}, published before exit: {v2_published}; versions answering \
         {versions:?}; exit 0 after {exit_after:.1?})",
        ok + refused
    );
}
