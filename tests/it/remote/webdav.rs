//! An `http://` repository: a directory served by a real WebDAV server
//! (WsgiDAV), which lists directories with `PROPFIND`, the listing that
//! `object_store`'s HTTP store reads.

use super::*;
use crate::harness::bundled_repo;
use crate::harness::models::{add_model, swap_model, x_body};
use crate::harness::process::Sluice;
use std::process::{Child, Command, Stdio};

/// WsgiDAV serving `root` anonymously on 127.0.0.1, killed when dropped.
struct WebDav {
    child: Child,
    port: u16,
}

impl Drop for WebDav {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl WebDav {
    /// WsgiDAV takes no port 0, so a free port is found first; if another
    /// process takes it before WsgiDAV binds it, WsgiDAV exits and another
    /// port is tried.
    async fn start(tools: &store::Tools, root: &Path) -> WebDav {
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let log = tempfile::NamedTempFile::new().unwrap();
            let mut child = Command::new(&tools.wsgidav)
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .arg("--root")
                .arg(root)
                .args(["--auth", "anonymous", "--no-config"])
                .stdin(Stdio::null())
                .stdout(log.reopen().unwrap())
                .stderr(log.reopen().unwrap())
                .spawn()
                .unwrap();
            let up = until("WsgiDAV to listen or exit", PATIENCE, || {
                let exited = child.try_wait().ok().flatten().is_some();
                async move {
                    if exited {
                        return Some(false);
                    }
                    tokio::net::TcpStream::connect(("127.0.0.1", port))
                        .await
                        .ok()
                        .map(|_| true)
                }
            })
            .await;
            if up {
                return WebDav { child, port };
            }
            let _ = child.wait();
        }
        panic!("WsgiDAV did not start on any of five ports");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_repository_served_over_webdav_loads_and_polls() {
    let Some(tools) = tools() else { return };
    let served = tempfile::tempdir().unwrap();
    let repo = served.path().join("repo");
    add_model(&repo, "swap", &swap_model(1), None);
    add_model(
        &repo,
        "iris",
        &bundled_repo().join("iris/1/model.onnx"),
        None,
    );
    let dav = WebDav::start(&tools, served.path()).await;
    let cache = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{}/repo", dav.port);
    let sluice = Sluice::serve_from(&url)
        .args(["--repository-poll-secs", "1"])
        .args([
            std::ffi::OsString::from("--model-cache-dir"),
            cache.path().into(),
        ])
        .start()
        .await;
    let client = reqwest::Client::new();
    let base = sluice.base.as_str();
    let k = |client: reqwest::Client| async move {
        let out: Value = client
            .post(format!("{base}/v2/models/swap/infer"))
            .json(&x_body(1.0))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        out["outputs"][0]["data"][0].as_f64().map(|y| y - 1.0)
    };
    assert_eq!(k(client.clone()).await, Some(1.0));
    // A version written to the served directory (rename: the server lists
    // it whole) is served after a poll.
    let staged = repo.join("swap/.2");
    std::fs::create_dir_all(&staged).unwrap();
    std::fs::copy(swap_model(2), staged.join("model.onnx")).unwrap();
    std::fs::rename(&staged, repo.join("swap/2")).unwrap();
    let c = &client;
    eventually(
        "version 2 from the WebDAV server",
        PATIENCE,
        || async move { k(c.clone()).await == Some(2.0) },
    )
    .await;
    let rows = index(&client, base).await;
    assert!(
        rows.iter()
            .any(|r| r["name"] == "iris" && r["state"] == "READY"),
        "{rows:?}"
    );
}
