//! An unreadable repository and a full disk during polls.

use super::*;
use crate::harness::logs;
use crate::harness::models::infer_x;

const POLL: Duration = Duration::from_millis(50);

/// A server polling `repo` every [`POLL`].
async fn polling(repo: &Path) -> TestServer {
    TestServer::start_with(repo, |c| {
        c.control_mode = ControlMode::Poll;
        c.poll_interval = POLL;
    })
    .await
}

/// Waits until `n` polls after `mark` have logged a warning with every one
/// of `needles`: what a test needs to show that nothing changes while the
/// polls fail. Only these tests' repositories fail that way.
async fn failed_polls(mark: logs::Mark, needles: &[&str], n: usize) {
    logs::wait_for(mark, needles, n, PATIENCE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_repository_during_polls_keeps_every_model_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    add_model(&repo, "a", &swap_model(1), None);
    add_model(&repo, "b", &swap_model(2), None);
    let s = polling(&repo).await;
    let base = s.base();
    let tally = Arc::new(Tally::default());
    let (sr, t): (&TestServer, &Tally) = (&s, &tally);
    let mut load = Load::default();
    swap_clients(&mut load, &tally, &base, "a", 2, &[1, 4]);
    swap_clients(&mut load, &tally, &base, "b", 2, &[2]);
    more_ok(&tally, 20).await;
    let mut faults = 0;

    // The whole repository disappears (a volume unmounted, a directory moved):
    // the scan fails, what is loaded keeps serving, the index API says why.
    let away = tmp.path().join("away");
    let mark = logs::mark();
    std::fs::rename(&repo, &away).unwrap();
    faults += 1;
    let (status, body) = index(&s).await.unwrap_err();
    assert_eq!(status, 500, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("cannot read the model repository"),
        "{body}"
    );
    failed_polls(mark, &["cannot scan the model repository", "os error 2"], 6).await;
    more_ok(&tally, 30).await;
    // While it is away a new model is staged; when it is back, polling
    // recovers and loads it.
    add_model(&away, "c", &swap_model(3), None);
    std::fs::rename(&away, &repo).unwrap();
    eventually(
        "polling to load 'c'",
        Duration::from_secs(30),
        || async move { sr.get("/v2/models/c/ready").await.0 == 200 },
    )
    .await;

    // a's model.onnx becomes a directory; b's a dangling symlink. Each poll
    // sees no version to serve; the load fails, the index says so, and the
    // loaded sessions keep serving.
    let a_file = repo.join("a/1/model.onnx");
    std::fs::remove_file(&a_file).unwrap();
    std::fs::create_dir(&a_file).unwrap();
    let b_file = repo.join("b/1/model.onnx");
    std::fs::remove_file(&b_file).unwrap();
    std::os::unix::fs::symlink(tmp.path().join("nowhere.onnx"), &b_file).unwrap();
    faults += 2;
    for model in ["a", "b"] {
        eventually(
            &format!("the index to report {model}'s failed poll"),
            Duration::from_secs(30),
            || async move {
                failed_rows(sr, model)
                    .await
                    .iter()
                    .any(|(v, state, reason)| {
                        v.as_deref() == Some("1")
                            && state == "READY"
                            && reason.contains("no version")
                    })
            },
        )
        .await;
        let (status, _) = s.get(&format!("/v2/models/{model}/ready")).await;
        assert_eq!(status, 200, "{model} must still be ready");
    }
    more_ok(&tally, 30).await;

    // c's config.toml becomes a directory: unreadable, skipped (and logged)
    // at every poll; c keeps serving.
    let mark = logs::mark();
    std::fs::create_dir(repo.join("c/config.toml")).unwrap();
    faults += 1;
    failed_polls(mark, &["cannot read the model directory", "model=c"], 6).await;
    let c_client = http_client();
    for x in 0..10 {
        tally.sent.fetch_add(1, Ordering::Relaxed);
        let out = infer_x(&c_client, &base, "c", x as f32).await;
        assert_eq!(
            out["outputs"][0]["data"][0].as_f64(),
            Some(f64::from(x) + 3.0),
            "{out}"
        );
        tally.ok.fetch_add(1, Ordering::Relaxed);
    }

    // Repaired: a gets a new file (K = 4) and reloads; b gets its old file
    // back (same content: kept as it is) and its failure clears; c's config
    // goes back to none.
    std::fs::remove_dir(&a_file).unwrap();
    replace_atomically(&a_file, &swap_model(4));
    std::fs::remove_file(&b_file).unwrap();
    replace_atomically(&b_file, &swap_model(2));
    std::fs::remove_dir(repo.join("c/config.toml")).unwrap();
    eventually(
        "a's new file to answer",
        Duration::from_secs(30),
        || async move { t.last_k("a") == Some(4.0) },
    )
    .await;
    eventually(
        "b's failure to clear",
        Duration::from_secs(30),
        || async move { failed_rows(sr, "b").await.is_empty() },
    )
    .await;
    more_ok(&tally, 20).await;
    load.stop().await;
    assert_eq!(tally.ks("a"), vec![1, 4]);
    assert_eq!(tally.ks("b"), vec![2]);
    tally.finish(
        "unreadable_repository_during_polls",
        &format!("{faults} faults"),
    );
    s.stop().await;
}

/// A tmpfs of `size` mounted on `dir`, unmounted on drop; `None` (with the
/// reason printed) where mounting is not permitted.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stdin(Stdio::null())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Self(dir.to_path_buf())),
            Ok(o) => {
                eprintln!(
                    "faults: no tmpfs ({}); simulating the partial writes of a full disk",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!(
                    "faults: no tmpfs (mount: {e}); simulating the partial writes of a full disk"
                );
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Copies `from` to `to` as `cp` does on a full disk: on a real small tmpfs
/// the copy stops at ENOSPC and leaves a partial file; without one, the first
/// `simulated` bytes are written.
fn copy_onto_full_disk(from: &Path, to: &Path, real: bool, simulated: usize) -> u64 {
    if real {
        let err = std::fs::copy(from, to).expect_err("the disk is full");
        assert_eq!(err.raw_os_error(), Some(28), "ENOSPC expected: {err}");
    } else {
        let bytes = std::fs::read(from).unwrap();
        std::fs::write(to, &bytes[..simulated]).unwrap();
    }
    std::fs::metadata(to).unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_write_from_a_full_disk_is_rejected_by_the_poll() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let tmpfs = Tmpfs::mount(&repo, "64k");
    let real = tmpfs.is_some();
    add_model(&repo, "a", &swap_model(1), None);
    let s = polling(&repo).await;
    let base = s.base();
    let tally = Arc::new(Tally::default());
    let (sr, t): (&TestServer, &Tally) = (&s, &tally);
    let mut load = Load::default();
    swap_clients(&mut load, &tally, &base, "a", 3, &[1, 2]);
    more_ok(&tally, 20).await;
    // A big model (3.6 MB) does not fit on the 64 KiB disk.
    let big = bundled_repo().join("dense/1/model.onnx");

    // A new version copied in place (not staged and renamed) onto a full
    // disk: version 2 appears with a partial file. The poll's load fails; v1
    // keeps serving.
    std::fs::create_dir_all(repo.join("a/2")).unwrap();
    let partial_new = copy_onto_full_disk(&big, &repo.join("a/2/model.onnx"), real, 60_000);
    eventually(
        "the poll to reject the partial version 2",
        Duration::from_secs(30),
        || async move {
            failed_rows(sr, "a")
                .await
                .iter()
                .any(|(v, state, _)| v.as_deref() == Some("2") && state == "UNAVAILABLE")
        },
    )
    .await;
    more_ok(&tally, 30).await;
    // The operator removes it; the next poll clears the failure.
    std::fs::remove_dir_all(repo.join("a/2")).unwrap();
    eventually(
        "the failure to clear",
        Duration::from_secs(30),
        || async move { failed_rows(sr, "a").await.is_empty() },
    )
    .await;

    // The served file itself overwritten in place on a full disk: a filler
    // takes the free space, then the copy truncates model.onnx and stops
    // part-way. The poll's reload fails; the session in memory keeps serving.
    let filler = repo.join("filler");
    if real {
        let _ = std::fs::write(&filler, vec![0u8; 1 << 20]); // ENOSPC, partially written
    }
    let file = repo.join("a/1/model.onnx");
    let partial_overwrite = copy_onto_full_disk(&big, &file, real, 4096);
    eventually(
        "the poll to reject the partial overwrite",
        Duration::from_secs(30),
        || async move {
            failed_rows(sr, "a")
                .await
                .iter()
                .any(|(v, state, _)| v.as_deref() == Some("1") && state == "READY")
        },
    )
    .await;
    let (status, _) = s.get("/v2/models/a/ready").await;
    assert_eq!(status, 200);
    more_ok(&tally, 30).await;
    assert_eq!(tally.ks("a"), vec![1]);

    // Space freed and a good file written: the poll reloads it (K = 2).
    let _ = std::fs::remove_file(&filler);
    replace_atomically(&file, &swap_model(2));
    eventually(
        "the repaired file to answer",
        Duration::from_secs(30),
        || async move { t.last_k("a") == Some(2.0) },
    )
    .await;
    more_ok(&tally, 20).await;
    load.stop().await;
    tally.finish(
        "full_disk_partial_write",
        &format!(
            "{} disk; partial files of {partial_new} and {partial_overwrite} bytes rejected",
            if real {
                "real 64 KiB tmpfs"
            } else {
                "simulated"
            }
        ),
    );
    s.stop().await;
    drop(tmpfs);
}
