//! Sluice: a lean, predictable ONNX model inference server speaking the
//! KServe v2 / Open Inference Protocol.
//!
//! # Layout
//! ```text
//! http/ ─┐                       adapters: decode the wire, call the service, encode
//! grpc/ ─┴─▶ service             one inference path: validate, admit, time, count
//!              ▶ registry         the live model set (arc-swap), loading, states
//!                ▶ scheduler/     per-version queue, batcher, instance worker threads
//!                  ▶ runtime/     the ONNX Runtime boundary (the only user of `ort`)
//! repository/  the on-disk layout and each model's config.toml
//! tensor       datatypes, shapes, packed tensor bytes
//! metrics      Prometheus families and per-version statistics
//! error        the one domain error, mapped exhaustively by each adapter
//! ```
//!
//! [`run`] takes a config, already-bound listeners and a shutdown future, so
//! tests start real servers on port 0.

pub mod config;
pub mod error;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod registry;
pub mod repository;
pub mod runtime;
pub mod scheduler;
pub mod service;
pub mod tensor;

use anyhow::Context as _;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// Everything [`run`] needs, already validated.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub model_repository: PathBuf,
    /// The ONNX Runtime library to load (see [`runtime::locate_library`]).
    pub onnxruntime_lib: PathBuf,
    pub limits: service::Limits,
    pub http: http::HttpConfig,
    /// Readiness is false this long before listeners stop accepting.
    pub shutdown_delay: Duration,
    /// Admitted requests get this long to finish.
    pub shutdown_grace: Duration,
    /// Cores the process may use (instance and thread defaults derive from it).
    pub cores: usize,
    /// How the model set changes while serving.
    pub control_mode: config::ControlMode,
    /// Repository scan interval in poll mode.
    pub poll_interval: Duration,
    /// In explicit mode, the models to load at start (empty or `*` = all).
    pub load_models: Vec<String>,
}

impl ServerConfig {
    /// Defaults for a repository, with the library found the usual way.
    pub fn new(model_repository: PathBuf, onnxruntime_lib: PathBuf) -> Self {
        Self {
            model_repository,
            onnxruntime_lib,
            limits: service::Limits::default(),
            http: http::HttpConfig {
                max_body_bytes: 64 << 20,
            },
            shutdown_delay: Duration::ZERO,
            shutdown_grace: Duration::from_secs(30),
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            control_mode: config::ControlMode::Explicit,
            poll_interval: Duration::ZERO,
            load_models: Vec::new(),
        }
    }
}

/// Bound sockets for the server.
#[derive(Debug)]
pub struct Listeners {
    pub http: TcpListener,
    pub grpc: Option<TcpListener>,
    pub metrics: Option<TcpListener>,
}

/// Loads ONNX Runtime, starts serving HTTP at once (liveness is true while
/// models load; readiness turns true once every loadable model has loaded),
/// and runs until `shutdown` resolves. Then readiness goes false, listeners
/// keep accepting for `shutdown_delay`, and admitted requests get
/// `shutdown_grace` to finish.
pub async fn run(
    config: ServerConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let ort_version = runtime::init(&config.onnxruntime_lib)?;
    tracing::info!(library = %config.onnxruntime_lib.display(), version = %ort_version, "onnx runtime loaded");

    let metrics = metrics::Metrics::new();
    let registry = Arc::new(registry::Registry::new(
        config.model_repository.clone(),
        metrics.clone(),
        registry::Defaults {
            cores: config.cores,
            control_mode: config.control_mode,
        },
    ));
    let service = service::Service::new(registry.clone(), metrics, config.limits.clone());

    // Stop signal for the listeners: fired after the drain delay.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let drain = {
        let service = service.clone();
        let delay = config.shutdown_delay;
        async move {
            shutdown.await;
            service.begin_drain();
            tracing::info!(
                delay_secs = delay.as_secs(),
                "shutting down: readiness is false; draining"
            );
            tokio::time::sleep(delay).await;
            let _ = stop_tx.send(true);
        }
    };
    tokio::spawn(drain);

    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|&s| s).await;
    };

    let app = http::router(service.clone(), config.http.clone());
    let http_addr = listeners.http.local_addr()?;
    tracing::info!(%http_addr, "http listening");
    let http_server =
        axum::serve(listeners.http, app).with_graceful_shutdown(stopped(stop_rx.clone()));
    let mut servers = tokio::task::JoinSet::new();
    servers.spawn(async move { http_server.await.context("http server") });
    if let Some(metrics_listener) = listeners.metrics {
        let app = http::metrics_router(service.clone());
        let server =
            axum::serve(metrics_listener, app).with_graceful_shutdown(stopped(stop_rx.clone()));
        servers.spawn(async move { server.await.context("metrics server") });
    }
    if let Some(grpc_listener) = listeners.grpc {
        let grpc_addr = grpc_listener.local_addr()?;
        tracing::info!(%grpc_addr, "grpc listening");
        let grpc_config = grpc::GrpcConfig {
            max_message_bytes: config.http.max_body_bytes,
        };
        let server = grpc::serve(
            service.clone(),
            grpc_listener,
            grpc_config,
            stopped(stop_rx.clone()),
        );
        servers.spawn(async move { server.await.context("grpc server") });
    }

    load_all(&registry, &config).await;
    service.set_started();
    tracing::info!("ready");
    if config.control_mode == config::ControlMode::Poll && !config.poll_interval.is_zero() {
        let (registry, interval, mut stop) =
            (registry.clone(), config.poll_interval, stop_rx.clone());
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            loop {
                let stopping = tokio::select! {
                    _ = ticker.tick() => false,
                    _ = stop.wait_for(|&s| s) => true,
                };
                if stopping {
                    break;
                }
                registry.poll_once().await;
            }
        });
    }

    // Wait for the listeners to stop, then give admitted requests the grace period.
    let mut stop_wait = stop_rx.clone();
    let _ = stop_wait.wait_for(|&s| s).await;
    let grace = config.shutdown_grace;
    let finished = tokio::time::timeout(grace, async {
        while let Some(result) = servers.join_next().await {
            if let Ok(Err(e)) = result {
                tracing::error!(error = %e, "server stopped with an error");
            }
        }
    })
    .await;
    if finished.is_err() {
        tracing::warn!(
            grace_secs = grace.as_secs(),
            "grace period over; exiting with requests still open"
        );
    }
    tracing::info!("stopped");
    Ok(())
}

/// Loads every model of the repository (in explicit mode, those named by
/// `load_models`), each in its own failure domain.
async fn load_all(registry: &Arc<registry::Registry>, config: &ServerConfig) {
    let explicit = config.control_mode == config::ControlMode::Explicit
        && !config.load_models.is_empty()
        && !config.load_models.iter().any(|m| m == "*");
    let discovered = if explicit {
        Ok(config.load_models.clone())
    } else {
        registry.discover()
    };
    let names = match discovered {
        Ok(names) => names,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the model repository");
            return;
        }
    };
    let started = Instant::now();
    let mut ok = 0;
    for name in &names {
        if registry.load_internal(name).await.is_ok() {
            ok += 1;
        }
    }
    tracing::info!(
        loaded = ok,
        failed = names.len() - ok,
        took_ms = started.elapsed().as_millis() as u64,
        "model repository loaded"
    );
}

/// Probes `url` with a GET; true on a 2xx answer within 5 s.
pub async fn healthcheck(url: &str) -> bool {
    let Ok(uri) = url.parse::<hyper::Uri>() else {
        return false;
    };
    let (Some(host), port) = (uri.host(), uri.port_u16().unwrap_or(80)) else {
        return false;
    };
    let probe = async {
        let stream = tokio::net::TcpStream::connect((host, port)).await.ok()?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .ok()?;
        tokio::spawn(conn);
        let request = hyper::Request::get(uri.path())
            .header(hyper::header::HOST, host)
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .ok()?;
        let response = sender.send_request(request).await.ok()?;
        Some(response.status().is_success())
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(5), probe).await,
        Ok(Some(true))
    )
}
