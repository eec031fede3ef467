//! The `sluice` binary: parse flags, set up logging, bind, and run.

use clap::Parser;
use sluice::config::{Cli, Command, LogFormat, ServeArgs};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
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

fn fail(message: String) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    init_tracing(&args);
    let env = std::env::var_os("ORT_DYLIB_PATH").map(std::path::PathBuf::from);
    let library = sluice::runtime::locate_library(args.onnxruntime_lib.as_deref(), env.as_deref())?;
    let mut config = sluice::ServerConfig::new(args.model_repository.clone(), library);
    config.limits.max_tensor_elements = args.max_tensor_elements;
    config.http.max_body_bytes = args.max_body_bytes;
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
