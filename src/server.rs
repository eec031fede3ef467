//! Starting and stopping a server: ONNX Runtime, the registry and the
//! service, the listeners with their edge policy, the start-up load, and
//! the drain at shutdown.

use crate::config::ServerConfig;
use crate::{admission, auth, edge, grpc, http, metrics, net, registry, runtime, service};
use anyhow::Context as _;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

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
    let Core {
        service,
        registry,
        auth,
        edge,
        http_guard,
    } = core(&config)?;
    let edge_metrics = edge.metrics.clone();

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
    let connections = net::ConnectionLimit::new(config.net.max_connections, edge_metrics);
    let acceptor = |kind, tls: Option<net::tls::TlsConfigs>| net::Acceptor {
        kind,
        limit: connections.clone(),
        tls,
        handshake_timeout: config.net.handshake_timeout,
        idle_timeout: config.net.idle_timeout,
    };
    let mut servers = tokio::task::JoinSet::new();
    let mut spawn_http = |listener: TcpListener, tls, app: http::App| {
        let incoming = net::incoming(
            listener,
            acceptor(net::Kind::Http, tls),
            stopped(stop_rx.clone()),
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
    };
    let http_addr = listeners.http.local_addr()?;
    tracing::info!(%http_addr, tls = tls.is_some(), auth = auth.is_some(), "http listening");
    let app = http::app(service.clone(), http_guard.clone(), config.logging.clone());
    spawn_http(listeners.http, tls.clone(), app);
    if let Some(metrics_listener) = listeners.metrics {
        // Plain HTTP, for an in-cluster scraper; the auth setting still applies.
        spawn_http(
            metrics_listener,
            None,
            http::metrics_app(service.clone(), http_guard),
        );
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
            edge,
            max_message_bytes,
            service: service.clone(),
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

    load_models(&config, &registry, &service).await?;
    tracing::info!("ready");
    if matches!(
        config.control_mode,
        registry::ControlMode::Poll | registry::ControlMode::OnDemand
    ) {
        registry::spawn_polling(registry.clone(), config.poll_interval, stop_rx.clone());
    }
    registry::spawn_sweeper(registry.clone(), stop_rx.clone());

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

/// What both listeners serve, built the same way for [`run`] and for the
/// in-process fuzz harness (`crate::fuzzing`): ONNX Runtime loaded, the
/// registry and the service over it, and the edge policy.
pub(crate) struct Core {
    pub(crate) service: service::Service,
    pub(crate) registry: Arc<registry::Registry>,
    pub(crate) auth: Option<auth::Auth>,
    pub(crate) edge: edge::Edge,
    pub(crate) http_guard: http::Guard,
}

/// Checks the repository, loads ONNX Runtime (`ORT_DYLIB_PATH` or the usual
/// places) and builds the [`Core`]; no model is loaded yet.
pub(crate) fn core(config: &ServerConfig) -> anyhow::Result<Core> {
    let env = std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from);
    let library = runtime::locate_library(config.onnxruntime_lib.as_deref(), env.as_deref())?;
    let ort_version = runtime::init(&library)?;
    tracing::info!(library = %library.display(), version = %ort_version, "onnx runtime loaded");

    let metrics = metrics::Metrics::new();
    let edge_metrics = metrics.edge.clone();
    // A local repository that cannot be read, or a remote one that cannot
    // be set up (a bad URL, a cache directory that cannot be made), is a
    // start-up error, not a ready server with no models. A remote store
    // that is only unreachable is not: its models wait for it.
    let repositories = crate::repository::Repositories::new(
        &config.model_repositories,
        &config.model_cache,
        &metrics.repositories,
    )
    .map_err(anyhow::Error::msg)?;
    let registry = Arc::new(
        registry::Registry::with_repositories(
            repositories,
            metrics.clone(),
            registry::Defaults {
                cores: config.cores,
                control_mode: config.control_mode,
                ignore_unsupported_config: config.ignore_unsupported_config,
                strict_model_config: config.strict_model_config,
                inline_run_limit: config.inline_run_limit,
            },
        )
        .with_demand(demand_settings(config)),
    );
    let service = service::Service::new(
        registry.clone(),
        metrics,
        config.limits.clone(),
        config.strict_readiness,
    )
    .with_panic_for_model(config.panic_for_model.clone())
    .with_response_cache(config.cache_size_bytes);
    let auth = auth::Auth::new(config.auth.clone())?;
    let edge = edge::Edge {
        auth: auth.clone(),
        admission: admission::Admission::new(
            config.max_inflight_requests,
            config.max_inflight_body_bytes,
        ),
        request_timeout: config.request_timeout,
        metrics: edge_metrics,
    };
    let http_guard = http::Guard {
        edge: edge.clone(),
        body: config.body,
        max_body_bytes: config.http.max_body_bytes,
    };
    Ok(Core {
        service,
        registry,
        auth,
        edge,
        http_guard,
    })
}

/// On-demand settings from the configuration: a request waits for a load
/// a little less than the request timeout, so that it is answered 503 with
/// `Retry-After` before the edge cuts it off; `--load-model` pins.
fn demand_settings(config: &ServerConfig) -> registry::DemandSettings {
    let on_demand = config.control_mode == registry::ControlMode::OnDemand;
    registry::DemandSettings {
        load_wait: config
            .request_timeout
            .map(|t| t.saturating_sub((t / 10).min(Duration::from_secs(1)))),
        pinned: if on_demand {
            config.load_models.clone()
        } else {
            Vec::new()
        },
        ..config.demand.clone()
    }
}

/// The start-up load (every model, or `--load-model`'s), then the service
/// counts as started. A model that fails is logged and stays UNAVAILABLE,
/// unless `--exit-on-error` makes it fatal.
pub(crate) async fn load_models(
    config: &ServerConfig,
    registry: &Arc<registry::Registry>,
    service: &service::Service,
) -> anyhow::Result<()> {
    let failed = registry::load_at_start(registry, config.control_mode, &config.load_models).await;
    if config.exit_on_error && !failed.is_empty() {
        anyhow::bail!(
            "{} model(s) failed to load at start and --exit-on-error is set: {}",
            failed.len(),
            failed.join("; ")
        );
    }
    service.set_started();
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
