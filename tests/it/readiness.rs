//! Readiness that means ready (Triton's `--strict-readiness`), and a start-up
//! that fails fast on a repository it cannot read or, with
//! `--exit-on-error`, on a model that cannot load.

use crate::harness::{TestServer, ort_lib, test_repo};
use sluice::grpc::pb;
use std::path::Path;
use std::time::{Duration, Instant};

/// A repository of `iris` plus the models named, copied from tests/models.
fn repo_with(extra: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in std::iter::once("iris").chain(extra.iter().copied()) {
        copy_dir(&test_repo().join(name), &dir.path().join(name));
    }
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Waits until the start-up load is over (readiness no longer says the
/// server is loading), then returns the readiness status and body.
async fn settled_readiness(s: &TestServer) -> (u16, serde_json::Value) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = s.get("/v2/health/ready").await;
        let loading = body["error"]
            .as_str()
            .is_some_and(|e| e.contains("loading its models"));
        if !loading {
            return (status, body);
        }
        assert!(Instant::now() < deadline, "start-up load not over in 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn grpc_ready(s: &TestServer) -> bool {
    let mut client = crate::harness::grpc::client(s.grpc).await;
    client
        .server_ready(pb::ServerReadyRequest {})
        .await
        .unwrap()
        .into_inner()
        .ready
}

#[tokio::test]
async fn a_model_that_fails_to_load_keeps_the_server_unready() {
    let repo = repo_with(&["corrupt"]);
    let s = TestServer::spawn(repo.path(), |c| c.strict_readiness = true).await;
    let (status, body) = settled_readiness(&s).await;
    assert_eq!(status, 503, "{body}");
    let why = body["error"].as_str().unwrap();
    assert!(
        why.contains("model 'corrupt' is UNAVAILABLE") && why.contains("--strict-readiness"),
        "{why}"
    );
    assert!(!grpc_ready(&s).await);
    // Live, and the models that did load serve.
    assert_eq!(s.get("/v2/health/live").await.0, 200);
    assert_eq!(s.get("/v2/models/iris/ready").await.0, 200);
    // A model unloaded on purpose is no longer meant to be served.
    assert_eq!(
        s.post_json(
            "/v2/repository/models/corrupt/unload",
            &serde_json::json!({})
        )
        .await
        .0,
        200
    );
    assert_eq!(s.get("/v2/health/ready").await.0, 200);
    assert!(grpc_ready(&s).await);
    s.stop().await;
}

#[tokio::test]
async fn without_strict_readiness_ready_means_started() {
    let repo = repo_with(&["corrupt"]);
    let s = TestServer::spawn(repo.path(), |c| c.strict_readiness = false).await;
    let (status, body) = settled_readiness(&s).await;
    assert_eq!(status, 200, "{body}");
    assert!(grpc_ready(&s).await);
    s.stop().await;
}

/// The rollout consequence: a new pod whose new model fails stays out of the
/// Service, while the old pods keep serving.
#[tokio::test]
async fn a_rollout_with_a_broken_model_never_becomes_ready() {
    let old_repo = repo_with(&[]);
    let old = TestServer::spawn(old_repo.path(), |c| c.strict_readiness = true).await;
    assert_eq!(settled_readiness(&old).await.0, 200);
    let new_repo = repo_with(&["corrupt"]);
    let new = TestServer::spawn(new_repo.path(), |c| c.strict_readiness = true).await;
    assert_eq!(settled_readiness(&new).await.0, 503);
    let body = serde_json::json!({"inputs": [{"name": "input", "shape": [1, 4],
        "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]});
    assert_eq!(old.post_json("/v2/models/iris/infer", &body).await.0, 200);
    assert_eq!(old.get("/v2/health/ready").await.0, 200);
    new.stop().await;
    old.stop().await;
}

#[tokio::test]
async fn a_model_named_at_start_that_does_not_exist_keeps_the_server_unready() {
    let repo = repo_with(&[]);
    let s = TestServer::spawn(repo.path(), |c| {
        c.strict_readiness = true;
        c.load_models = vec!["iris".into(), "missing".into()];
    })
    .await;
    let (status, body) = settled_readiness(&s).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("model 'missing' is UNAVAILABLE: not in the model repository"),
        "{body}"
    );
    s.stop().await;
}

#[tokio::test]
async fn exit_on_error_stops_the_start_up_on_a_broken_model() {
    let repo = repo_with(&["corrupt"]);
    let mut config = sluice::ServerConfig::new(repo.path().to_path_buf(), ort_lib());
    config.exit_on_error = true;
    let listeners = sluice::Listeners {
        http: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        grpc: None,
        metrics: None,
    };
    let err = sluice::run(config, listeners, std::future::pending())
        .await
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("--exit-on-error") && msg.contains("corrupt"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_repository_that_cannot_be_read_is_a_start_up_error_naming_it() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "serve",
            "--model-repository",
            "/nonexistent/models",
            "--http-port",
            "0",
            "--grpc-port",
            "0",
        ])
        .env("ORT_DYLIB_PATH", ort_lib())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: cannot read the model repository /nonexistent/models")
            && last.contains("No such file or directory"),
        "{stderr}"
    );
}
