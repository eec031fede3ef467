//! The model file deleted or truncated under a loaded model.

use super::*;

/// A reload of `m` fails with a clear error while the loaded version stays
/// ready and the index, still READY, says why. Returns the error.
async fn assert_load_fails(s: &TestServer, what: &str) -> String {
    let (status, out) = s
        .post_json("/v2/repository/models/m/load", &json!({}))
        .await;
    assert_eq!(status, 503, "{what}: {out}");
    let error = out["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("'m' failed to load"),
        "{what}: unclear error {out}"
    );
    let (status, ready) = s.get("/v2/models/m/ready").await;
    assert_eq!(status, 200, "{what}: {ready}");
    let rows = failed_rows(s, "m").await;
    assert!(
        rows.iter()
            .any(|(v, state, reason)| v.as_deref() == Some("1")
                && state == "READY"
                && reason.contains("reload failed")),
        "{what}: the index must show version 1 READY with the failed reload: {rows:?}"
    );
    error.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_file_deleted_or_truncated_while_loaded_keeps_serving_and_reloads() {
    let repo = Repo::new().with("m", &swap_model(1), None);
    let file = repo.path().join("m/1/model.onnx");
    let s = TestServer::start(repo.path()).await;
    let base = s.base();
    let tally = Arc::new(Tally::default());
    let mut load = Load::default();
    swap_clients(&mut load, &tally, &base, "m", 4, &[1, 2]);
    more_ok(&tally, 20).await;
    let mut failed_loads = 0;

    // Deleted: the session is in memory, so inference goes on; a reload finds
    // no version and fails without unloading what serves.
    std::fs::remove_file(&file).unwrap();
    more_ok(&tally, 30).await;
    let error = assert_load_fails(&s, "deleted").await;
    assert!(error.contains("no version"), "{error}");
    failed_loads += 1;
    more_ok(&tally, 30).await;

    // Truncated (a copy that died half-way), then empty.
    let bytes = std::fs::read(swap_model(2)).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    more_ok(&tally, 30).await;
    assert_load_fails(&s, "truncated").await;
    failed_loads += 1;
    more_ok(&tally, 30).await;
    std::fs::write(&file, b"").unwrap();
    assert_load_fails(&s, "empty").await;
    failed_loads += 1;
    more_ok(&tally, 30).await;
    assert_eq!(
        tally.ks("m"),
        vec![1],
        "only the loaded version answered so far"
    );

    // A good file again (new content: K = 2): the reload succeeds and serves.
    replace_atomically(&file, &swap_model(2));
    let (status, out) = s
        .post_json("/v2/repository/models/m/load", &json!({}))
        .await;
    assert_eq!(status, 200, "{out}");
    let t = &*tally;
    eventually(
        "the reloaded file to answer",
        Duration::from_secs(30),
        || async move { t.last_k("m") == Some(2.0) },
    )
    .await;
    more_ok(&tally, 20).await;
    load.stop().await;
    assert!(
        failed_rows(&s, "m").await.is_empty(),
        "a good load clears the failure"
    );
    tally.finish(
        "model_file_deleted_or_truncated",
        &format!("{failed_loads} failed reloads, then a good one"),
    );
    s.stop().await;
}
