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

pub mod admission;
pub mod auth;
pub mod config;
pub mod error;
pub mod grpc;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod net;
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
    /// Body read timeout and JSON nesting depth of REST requests.
    pub body: http::BodyLimits,
    /// Largest gRPC request message; `None` = `http.max_body_bytes`.
    pub grpc_max_message_bytes: Option<usize>,
    /// Connection cap and TLS handshake deadline, over every listener.
    pub net: net::NetConfig,
    /// Requests in flight over both protocols; over it, 503 at once (0 = no cap).
    pub max_inflight_requests: usize,
    /// REST body bytes in flight, reserved before reading; over it, 503 (0 = no cap).
    pub max_inflight_body_bytes: usize,
    /// A request must be answered within this (`None` = no limit).
    pub request_timeout: Option<Duration>,
    /// Bearer tokens; off when none is configured.
    pub auth: auth::AuthConfig,
    /// TLS for the HTTP and gRPC listeners; `None` = plaintext.
    pub tls: Option<net::tls::TlsFiles>,
    /// How often the TLS files and the token file are checked for changes.
    pub secrets_reload: Duration,
    /// Log settings that `/v2/logging` and gRPC `LogSettings` read and change.
    pub logging: logging::LogControl,
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
            http: http::HttpConfig::default(),
            body: http::BodyLimits::default(),
            grpc_max_message_bytes: None,
            net: net::NetConfig::default(),
            max_inflight_requests: 0,
            max_inflight_body_bytes: 0,
            request_timeout: None,
            auth: auth::AuthConfig::default(),
            tls: None,
            secrets_reload: Duration::from_secs(10),
            logging: logging::LogControl::detached(),
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
            ..registry::Defaults::default()
        },
    ));
    let service = service::Service::new(registry.clone(), metrics, config.limits.clone());

    // Drain signal (readiness false, HTTP/1 keep-alive off) at SIGTERM; stop
    // signal for the listeners after the drain delay.
    let (drain_tx, drain_rx) = tokio::sync::watch::channel(false);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let drain = {
        let service = service.clone();
        let delay = config.shutdown_delay;
        async move {
            shutdown.await;
            service.begin_drain();
            let _ = drain_tx.send(true);
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

    let auth = auth::Auth::new(config.auth.clone())?;
    let tls = match config.tls.clone() {
        Some(files) => Some(net::tls::TlsConfigs::load(files)?),
        None => None,
    };
    if auth.is_some() || tls.is_some() {
        spawn_secret_reloader(
            auth.clone(),
            tls.clone(),
            config.secrets_reload,
            stop_rx.clone(),
        );
    }
    let admission =
        admission::Admission::new(config.max_inflight_requests, config.max_inflight_body_bytes);
    let edge = service.metrics().edge.clone();
    let connections = net::ConnectionLimit::new(config.net.max_connections, edge.clone());
    let acceptor = |kind, tls: Option<net::tls::TlsConfigs>| net::Acceptor {
        kind,
        limit: connections.clone(),
        tls,
        handshake_timeout: config.net.handshake_timeout,
        idle_timeout: config.net.idle_timeout,
    };
    let http_guard = http::Guard {
        auth: auth.clone(),
        admission: admission.clone(),
        request_timeout: config.request_timeout,
        body: config.body,
        metrics: edge.clone(),
        max_body_bytes: config.http.max_body_bytes,
    };

    let mut servers = tokio::task::JoinSet::new();
    let http_addr = listeners.http.local_addr()?;
    tracing::info!(%http_addr, tls = tls.is_some(), auth = auth.is_some(), "http listening");
    let incoming = net::incoming(
        listeners.http,
        acceptor(net::Kind::Http, tls.clone()),
        stopped(stop_rx.clone()),
    );
    let app = http::router(
        service.clone(),
        &config.http,
        http_guard.clone(),
        config.logging.clone(),
    );
    let (http_config, draining, stop) = (
        config.http.clone(),
        drain_rx.clone(),
        stopped(stop_rx.clone()),
    );
    servers.spawn(async move {
        http::serve::serve(incoming, app, &http_config, draining, stop).await;
        Ok(())
    });
    if let Some(metrics_listener) = listeners.metrics {
        // Plain HTTP, for an in-cluster scraper; the auth setting still applies.
        let incoming = net::incoming(
            metrics_listener,
            acceptor(net::Kind::Http, None),
            stopped(stop_rx.clone()),
        );
        let app = http::metrics_router(service.clone(), http_guard);
        let (http_config, draining, stop) = (
            config.http.clone(),
            drain_rx.clone(),
            stopped(stop_rx.clone()),
        );
        servers.spawn(async move {
            http::serve::serve(incoming, app, &http_config, draining, stop).await;
            Ok(())
        });
    }
    if let Some(grpc_listener) = listeners.grpc {
        let grpc_addr = grpc_listener.local_addr()?;
        tracing::info!(%grpc_addr, tls = tls.is_some(), "grpc listening");
        let max_message_bytes = config
            .grpc_max_message_bytes
            .unwrap_or(config.http.max_body_bytes);
        let grpc_config = grpc::GrpcConfig {
            max_message_bytes,
            max_concurrent_streams: config.http.max_concurrent_streams,
            max_header_bytes: config.http.max_header_bytes,
            keepalive_interval: config.http.keepalive_interval,
        };
        let guard = grpc::guard::GrpcGuard {
            service: service.clone(),
            auth: auth.clone(),
            admission: admission.clone(),
            request_timeout: config.request_timeout,
            max_message_bytes,
            metrics: edge.clone(),
        };
        let incoming = net::incoming(
            grpc_listener,
            acceptor(net::Kind::Grpc, tls.clone()),
            stopped(stop_rx.clone()),
        );
        let server = grpc::serve(
            service.clone(),
            config.logging.clone(),
            incoming,
            grpc_config,
            guard,
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

/// Re-reads the TLS files and the token file every `every` until stopped.
/// A change that loads is swapped in; one that does not is logged once and
/// the previous material keeps serving.
fn spawn_secret_reloader(
    auth: Option<auth::Auth>,
    tls: Option<net::tls::TlsConfigs>,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    if every.is_zero() {
        return;
    }
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        let (mut tls_error, mut auth_error) = (String::new(), String::new());
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.wait_for(|&s| s) => return,
            }
            let report = |what: &str, result: anyhow::Result<bool>, last: &mut String| match result
            {
                Ok(true) => {
                    tracing::info!("{what} reloaded");
                    last.clear();
                }
                Ok(false) => last.clear(),
                Err(e) => {
                    let e = format!("{e:#}");
                    if *last != e {
                        tracing::warn!(error = %e, "{what} not reloaded; the previous one stays in force");
                        *last = e;
                    }
                }
            };
            if let Some(tls) = &tls {
                report("tls certificate", tls.reload(), &mut tls_error);
            }
            if let Some(auth) = &auth {
                report("token file", auth.reload(), &mut auth_error);
            }
        }
    });
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

/// Probes `url` (`http://` or `https://`, whose certificate is not checked,
/// as the kubelet's HTTPS probes) with a GET; true on a 2xx answer within 5 s.
pub async fn healthcheck(url: &str) -> bool {
    let Ok(uri) = url.parse::<hyper::Uri>() else {
        return false;
    };
    let https = uri.scheme_str() == Some("https");
    let default_port = if https { 443 } else { 80 };
    let (Some(host), port) = (uri.host(), uri.port_u16().unwrap_or(default_port)) else {
        return false;
    };
    let probe = async {
        let stream = tokio::net::TcpStream::connect((host, port)).await.ok()?;
        if !https {
            return probe_get(stream, host, uri.path()).await;
        }
        let name = rustls_pki_types::ServerName::try_from(host.to_string()).ok()?;
        let tls = tokio_rustls::TlsConnector::from(net::tls::probe_client_config())
            .connect(name, stream)
            .await
            .ok()?;
        probe_get(tls, host, uri.path()).await
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(5), probe).await,
        Ok(Some(true))
    )
}

async fn probe_get<IO>(io: IO, host: &str, path: &str) -> Option<bool>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
            .await
            .ok()?;
    tokio::spawn(conn);
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, host)
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .ok()?;
    let response = sender.send_request(request).await.ok()?;
    Some(response.status().is_success())
}
