//! The `sluice` binary: parse flags, set up logging, bind, and run.

use clap::Parser;
use sluice::cli::{Cli, Command, LogFormat, ServeArgs};
use std::net::SocketAddr;
use std::process::ExitCode;

fn main() -> ExitCode {
    disable_onnxruntime_telemetry();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    match cli.command {
        Command::Healthcheck(args) => {
            match runtime.block_on(sluice::healthcheck::probe(&args.url)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(why) => {
                    eprintln!("unhealthy: {why}");
                    ExitCode::FAILURE
                }
            }
        }
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
    let logging = init_tracing(&args);
    let mut config = sluice::ServerConfig::try_from(&args)?;
    // Fail fast, before anything is logged or bound, on a missing library.
    let env = std::env::var_os("ORT_DYLIB_PATH").map(std::path::PathBuf::from);
    let library =
        sluice::runtime::locate_library(config.onnxruntime_lib.as_deref(), env.as_deref())?;
    config.onnxruntime_lib = Some(library);
    config.logging = logging;
    tracing::info!(config = ?args, "starting (secrets redacted)");
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

/// Logs to stderr with a filter that `/v2/logging` can swap while serving.
fn init_tracing(args: &ServeArgs) -> sluice::logging::LogControl {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::{EnvFilter, fmt, reload};
    let filter = EnvFilter::try_new(&args.log).unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    let format = match args.log_format {
        LogFormat::Json => {
            registry
                .with(fmt::layer().json().with_writer(std::io::stderr))
                .init();
            "json"
        }
        LogFormat::Text => {
            registry
                .with(fmt::layer().with_writer(std::io::stderr))
                .init();
            "text"
        }
    };
    let apply: sluice::logging::ApplyFilter = std::sync::Arc::new(move |directives: &str| {
        let filter = EnvFilter::try_new(directives).map_err(|e| e.to_string())?;
        handle.reload(filter).map_err(|e| e.to_string())
    });
    sluice::logging::LogControl::new(&args.log, format, Some(apply))
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
