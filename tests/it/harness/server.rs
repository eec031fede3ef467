//! A server in this process: `sluice::run` on listeners bound to port 0,
//! with an HTTP client for it.

use super::wait::{PATIENCE, eventually};
use super::{logs, metrics, ort_lib};
use sluice::{Listeners, ServerConfig};
use std::net::SocketAddr;
use std::path::Path;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running server and an HTTP client for it.
pub struct TestServer {
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    pub client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    /// Starts a server over `repo` with default settings and waits until ready.
    pub async fn start(repo: &Path) -> Self {
        Self::start_with(repo, |_| {}).await
    }

    /// Starts a server after `tweak` adjusted its config, and waits until ready.
    pub async fn start_with(repo: &Path, tweak: impl FnOnce(&mut ServerConfig)) -> Self {
        let server = Self::spawn(repo, tweak).await;
        server.wait_ready().await;
        server
    }

    /// Starts a server without waiting for readiness (for TLS servers, which
    /// the plain client cannot probe).
    pub async fn spawn(repo: &Path, tweak: impl FnOnce(&mut ServerConfig)) -> Self {
        logs::capture();
        let mut config = ServerConfig::new(repo.to_path_buf(), ort_lib());
        config.cores = 2;
        // Many tests serve repositories with deliberately broken models (to
        // prove failure domains), which strict readiness would keep unready
        // for ever; the harness waits for "started", and tests/it/readiness.rs
        // turns strict readiness back on.
        config.strict_readiness = false;
        tweak(&mut config);
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (http_addr, grpc_addr) = (http.local_addr().unwrap(), grpc.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let listeners = Listeners {
            http,
            grpc: Some(grpc),
            metrics: None,
        };
        let handle = tokio::spawn(sluice::run(config, listeners, async move {
            let _ = rx.await;
        }));
        Self {
            http: http_addr,
            grpc: grpc_addr,
            client: reqwest::Client::new(),
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// `http://host:port`, for helpers that take a base URL.
    pub fn base(&self) -> String {
        format!("http://{}", self.http)
    }

    /// Polls readiness (the server loads models in the background).
    pub async fn wait_ready(&self) {
        eventually("the server to be ready", PATIENCE, || async {
            let ready = self.client.get(self.url("/v2/health/ready")).send().await;
            ready.is_ok_and(|r| r.status() == 200)
        })
        .await;
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        metrics::scrape(&self.client, &self.base()).await
    }

    /// The sum of the samples of `name` whose labels include `labels`.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metrics::metric(&self.metrics().await, name, labels)
    }

    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let r = self.client.get(self.url(path)).send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }

    pub async fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        self.post_raw(path, serde_json::to_vec(body).unwrap()).await
    }

    pub async fn post_raw(&self, path: &str, body: Vec<u8>) -> (u16, serde_json::Value) {
        let r = self
            .client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }

    /// Triggers shutdown and waits for `run` to return.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(handle) = self.handle.take() {
            handle.await.unwrap().unwrap();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
