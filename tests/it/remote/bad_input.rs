//! Repositories that cannot work: a malformed URL, an unknown scheme and an
//! incomplete set-up stop the start with a message that says why; a bucket
//! that does not exist and credentials the store refuses are reported in
//! the index and the log while the server runs. Nothing panics and no
//! secret is printed.

use super::*;
use crate::harness::ort_lib;
use crate::harness::process::{Sluice, command};

/// `sluice serve --model-repository <repo>` with `env`: its exit status
/// and what it printed.
fn serve_fails(repo: &str, env: &[(&str, &str)]) -> String {
    let cache = tempfile::tempdir().unwrap();
    let mut c = command();
    c.args([
        "serve",
        "--host",
        "127.0.0.1",
        "--http-port",
        "0",
        "--grpc-port",
        "0",
    ])
    .args(["--model-repository", repo])
    .arg("--model-cache-dir")
    .arg(cache.path())
    .arg("--onnxruntime-lib")
    .arg(ort_lib());
    for (name, _) in std::env::vars() {
        if name.starts_with("AWS_") || name.starts_with("AZURE_") || name.starts_with("GOOGLE_") {
            c.env_remove(name);
        }
    }
    c.envs(env.iter().copied());
    let output = c.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !output.status.success(),
        "{repo}: started; printed:\n{text}"
    );
    assert!(!text.contains("panicked"), "{repo}: {text}");
    text
}

#[test]
fn malformed_and_unknown_repositories_stop_the_start_with_a_reason() {
    let text = serve_fails("s3://bu cket/models", &[]);
    assert!(
        text.contains("--model-repository") && text.contains("not a valid URL"),
        "{text}"
    );

    let text = serve_fails("ftp://user:hunter2@host/models?sig=SECRET", &[]);
    assert!(text.contains("unknown scheme 'ftp://'"), "{text}");
    assert!(
        !text.contains("hunter2") && !text.contains("SECRET"),
        "{text}"
    );

    let text = serve_fails("s3:///models", &[]);
    assert!(text.contains("names no bucket"), "{text}");

    // Azure needs an account (or the emulator): a set-up error, not a hang.
    let text = serve_fails("az://container/models", &[]);
    assert!(
        text.contains("az://container/models") && text.contains("cannot set up the object store"),
        "{text}"
    );

    // A local directory that does not exist, beside a valid URL.
    let text = serve_fails("/nonexistent/models,s3://bucket/models", &[]);
    assert!(
        text.contains("cannot read the model repository /nonexistent/models"),
        "{text}"
    );
}

/// A Sluice in explicit mode that must load `swap` from `url`, with `env`,
/// not strictly ready (its only model cannot load).
async fn explicit(
    url: &str,
    env: Vec<(&'static str, String)>,
) -> (crate::harness::process::Process, tempfile::TempDir) {
    let cache = tempfile::tempdir().unwrap();
    let mut sluice = Sluice::serve_from(url)
        .args(["--model-control-mode", "explicit", "--load-model", "swap"])
        .args(["--strict-readiness", "false"])
        .args([
            std::ffi::OsString::from("--model-cache-dir"),
            cache.path().into(),
        ]);
    for (key, value) in env {
        sluice = sluice.env(key, value);
    }
    (sluice.start().await, cache)
}

/// The reason the index gives for `swap`, once it gives one.
async fn swap_reason(base: &str) -> String {
    let client = reqwest::Client::new();
    until("the index to say why swap is missing", PATIENCE, || {
        let client = client.clone();
        async move {
            index(&client, base)
                .await
                .into_iter()
                .find(|r| r["name"] == "swap" && r["state"] == "UNAVAILABLE")
                .and_then(|r| r["reason"].as_str().map(str::to_string))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bucket_is_reported_in_the_index_and_the_server_runs() {
    let Some(tools) = tools() else { return };
    let store = StoreServer::start(Kind::S3, &tools).await;
    let url = Kind::S3.url("no-such-bucket", "models");
    let (sluice, _cache) = explicit(&url, Kind::S3.env(&store.endpoint())).await;
    let reason = swap_reason(&sluice.base).await;
    assert!(
        reason.contains(&url) && reason.contains("the bucket or container does not exist"),
        "{reason}"
    );
    assert!(
        !sluice.log().contains("sluice-test-secret"),
        "the secret key was logged"
    );
    assert!(!sluice.log().contains("panicked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_the_store_refuses_are_reported_without_the_secret() {
    let Some(tools) = tools() else { return };
    let store = StoreServer::start(Kind::Azure, &tools).await;
    store.create("models");
    let url = Kind::Azure.url("models", "repo");
    let mut env = Kind::Azure.env(&store.endpoint());
    // A well-formed key that is not the emulator's.
    let wrong = "bm90LXRoZS1lbXVsYXRvcnMta2V5LWF0LWFsbC0xMjM0NTY3ODkw";
    env.push(("AZURE_STORAGE_ACCOUNT_KEY", wrong.into()));
    let (sluice, _cache) = explicit(&url, env).await;
    let reason = swap_reason(&sluice.base).await;
    assert!(
        reason.contains(&url) && reason.contains("access denied"),
        "{reason}"
    );
    assert!(
        !reason.contains(wrong) && !sluice.log().contains(wrong),
        "the key was printed"
    );
}
