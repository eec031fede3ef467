//! Starts real servers on port 0 over a model repository, and runs models
//! directly through ONNX Runtime for reference results.
// Each test module uses a different subset of these helpers.
#![allow(dead_code)]

use sluice::runtime::{self, BatchInput, ProviderOptions, RunOutput};
use sluice::tensor::Tensor;
use sluice::{Listeners, ServerConfig};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The ONNX Runtime library, found as the binary finds it.
pub fn ort_lib() -> PathBuf {
    let env = std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from);
    runtime::locate_library(None, env.as_deref()).expect("run `make setup` first")
}

/// The repository of test models (`tests/models`).
pub fn test_repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/models")
}

/// The bundled repository (`models`).
pub fn bundled_repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models")
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

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
        if let Some(filter) = std::env::var_os("SLUICE_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter.to_string_lossy().as_ref())
                .with_test_writer()
                .try_init();
        }
        let mut config = ServerConfig::new(repo.to_path_buf(), ort_lib());
        config.cores = 2;
        // tests/models holds a deliberately corrupt model, which strict
        // readiness would keep unready for ever; readiness tests set it back.
        config.strict_readiness = repo != test_repo();
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

    /// Polls readiness (the server loads models in the background).
    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = self.client.get(self.url("/v2/health/ready")).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "server not ready within 60 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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

/// Runs `model` directly on an ONNX Runtime session (no server), returning
/// every output in graph order: the reference the server must match.
pub fn raw_run(model: &Path, inputs: &[Tensor]) -> Vec<RunOutput> {
    runtime::init(&ort_lib()).unwrap();
    let (mut instance, _) =
        runtime::load_instance(model, &ProviderOptions::default(), None, 0).unwrap();
    let signature = instance.signature().unwrap();
    let batch: Vec<BatchInput<'_>> = signature
        .inputs
        .iter()
        .map(|spec| {
            let t = inputs
                .iter()
                .find(|t| t.name == spec.name)
                .expect("input given");
            BatchInput {
                name: &t.name,
                datatype: t.datatype,
                shape: t.shape.clone(),
                parts: vec![&t.data],
            }
        })
        .collect();
    let wanted: Vec<usize> = (0..signature.outputs.len()).collect();
    instance.run(&batch, &wanted).unwrap()
}

/// The JSON `data` of a tensor, as the server should encode it.
pub fn data_json(out: &RunOutput) -> serde_json::Value {
    serde_json::to_value(sluice::http::codec::json::DataJson {
        datatype: out.datatype,
        data: &out.data,
    })
    .unwrap()
}
