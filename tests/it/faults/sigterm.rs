//! SIGTERM during a hot swap, on the real binary.

use super::*;

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
                    Err(e) => {
                        outcomes.push(Outcome::failed(&e, t0.elapsed()));
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
