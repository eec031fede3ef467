//! The `sluice` binary: parse flags, set up logging, bind, and run.

use clap::Parser;
use sluice::config::{Cli, Command, LogFormat, ServeArgs};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    disable_onnxruntime_telemetry();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    match cli.command {
        Command::Healthcheck(args) => match runtime.block_on(sluice::healthcheck(&args.url)) {
            true => ExitCode::SUCCESS,
            false => ExitCode::FAILURE,
        },
        Command::Serve(args) => match runtime.block_on(serve(*args)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(format!("{e:#}")),
        },
    }
}

/// ONNX Runtime 1.32 on Linux sends usage telemetry (and writes an event
/// store under `$HOME/.cache`) unless `ORT_DISABLE_TELEMETRY` is set;
/// `EnvironmentBuilder::with_telemetry(false)` does not stop it. A server on
/// a product's request path must not phone home, so it is off unless the
/// operator sets the variable explicitly.
fn disable_onnxruntime_telemetry() {
    if std::env::var_os("ORT_DISABLE_TELEMETRY").is_none() {
        // SAFETY: this is the first statement of `main`, before the async
        // runtime or any other thread exists, so nothing can read or write
        // the environment concurrently (the hazard `set_var` is unsafe for).
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var("ORT_DISABLE_TELEMETRY", "1");
        }
    }
}

fn fail(message: String) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    init_tracing(&args);
    let env = std::env::var_os("ORT_DYLIB_PATH").map(std::path::PathBuf::from);
    let library = sluice::runtime::locate_library(args.onnxruntime_lib.as_deref(), env.as_deref())?;
    let mut config = sluice::ServerConfig::new(args.model_repository.clone(), library);
    tracing::info!(config = ?args, "starting (secrets redacted)");
    apply_limits(&mut config, &args);
    config.shutdown_delay = Duration::from_secs(args.shutdown_delay_secs);
    config.shutdown_grace = Duration::from_secs(args.shutdown_grace_secs);
    (config.control_mode, config.poll_interval) = args.control();
    config.load_models = args.load_model.clone();
    let bind = |port: u16, what: &'static str| async move {
        let addr = SocketAddr::new(args.host, port);
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen for {what} on {addr}: {e}"))
    };
    let listeners = sluice::Listeners {
        http: bind(args.http_port, "http").await?,
        grpc: Some(bind(args.grpc_port, "grpc").await?),
        metrics: match args.metrics_port {
            Some(port) => Some(bind(port, "metrics").await?),
            None => None,
        },
    };
    sluice::run(config, listeners, shutdown_signal()).await
}

/// The limits, auth and TLS flags, onto the server's config.
fn apply_limits(config: &mut sluice::ServerConfig, args: &ServeArgs) {
    let secs = Duration::from_secs;
    let nonzero = |s: u64| (s > 0).then(|| secs(s));
    config.limits.max_tensor_elements = args.max_tensor_elements;
    config.limits.max_request_bytes = args.max_request_tensor_bytes;
    config.limits.max_bytes_element = args.max_bytes_element;
    config.http.max_body_bytes = args.max_body_bytes;
    config.http.max_header_bytes = args.max_header_bytes as usize;
    config.http.header_read_timeout = nonzero(args.header_read_timeout_secs);
    config.http.max_concurrent_streams = args.max_concurrent_streams;
    config.http.keepalive_interval = nonzero(args.http2_keepalive_secs);
    config.body.read_timeout = secs(args.body_read_timeout_secs);
    config.body.max_json_depth = args.max_json_depth;
    config.grpc_max_message_bytes = args.grpc_max_message_bytes;
    config.net.max_connections = args.max_connections;
    config.net.handshake_timeout = secs(args.tls_handshake_timeout_secs);
    config.max_inflight_requests = args.max_inflight_requests;
    config.request_timeout = nonzero(args.request_timeout_secs);
    config.secrets_reload = secs(args.secrets_reload_secs);
    config.auth = sluice::auth::AuthConfig {
        infer_tokens: args.auth_infer_tokens.clone(),
        admin_tokens: args.auth_admin_tokens.clone(),
        token_file: args.auth_token_file.clone(),
        protect_health: args.auth_protect_health,
        protect_metrics: args.auth_protect_metrics,
    };
    config.tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(sluice::net::tls::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: args.tls_client_ca.clone(),
        }),
        _ => None,
    };
}

fn init_tracing(args: &ServeArgs) {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
