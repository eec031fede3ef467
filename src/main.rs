//! The `sluice` binary: parse flags, set up logging, bind, and run.

use clap::{CommandFactory as _, FromArgMatches as _};
use sluice::cli::{Cli, Command, ServeArgs};
use std::net::SocketAddr;
use std::process::ExitCode;

/// mimalloc serves the server's own (Rust) allocations. A request's buffers
/// are allocated on an I/O thread and freed on an instance worker thread
/// (and the reverse for outputs); glibc's malloc spent about 14% of the
/// server's CPU on that traffic under load (`malloc`, `_int_free`,
/// `malloc_consolidate`), mimalloc's thread-local free lists much less (see
/// docs/benchmarks.md). ONNX Runtime's own allocations still go through
/// glibc, which is what the on-demand loader's memory probe (`mallinfo2`)
/// and `malloc_trim` act on. `allocator` says how it is called.
#[global_allocator]
static ALLOCATOR: allocator::Allocator = allocator::Allocator;

mod allocator;

fn main() -> ExitCode {
    disable_onnxruntime_telemetry();
    let args = sluice::cli::with_default_command(std::env::args_os().collect());
    if let Some(why) = sluice::cli::unsupported_triton_flag(&args) {
        return fail(why);
    }
    let matches = Cli::command().get_matches_from(args);
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    // The park hook tells the scheduler an I/O thread went idle, which lets
    // a short request on an idle server run without the hand-off to an
    // instance worker (`sluice::scheduler::note_io_thread_idle`).
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder
        .enable_all()
        .on_thread_park(sluice::scheduler::note_io_thread_idle);
    // `--io-thread-policy`: see `sluice::scheduler::no_wakeup_preemption`.
    if let Command::Serve(args) = &cli.command
        && args.io_thread_policy.batch()
    {
        builder.on_thread_start(sluice::scheduler::no_wakeup_preemption);
    }
    let runtime = match builder.build() {
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
        Command::Serve(args) => match runtime.block_on(serve(*args, serve_matches(&matches))) {
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

/// The `serve` subcommand's matches, for the start-up summary.
fn serve_matches(matches: &clap::ArgMatches) -> String {
    matches
        .subcommand_matches("serve")
        .map(sluice::cli::non_default_settings)
        .unwrap_or_default()
}

async fn serve(args: ServeArgs, settings: String) -> anyhow::Result<()> {
    let traces = sluice::telemetry::init(&args.otlp()).map_err(anyhow::Error::msg)?;
    let tracer = traces.as_ref().map(|t| t.tracer.clone());
    let logging = sluice::logging::init(
        &args.log_filter(),
        args.log_format.into(),
        args.log_color.into(),
        tracer,
    )
    .map_err(anyhow::Error::msg)?;
    if let Some(t) = &traces {
        tracing::info!(endpoint = %t.endpoint, protocol = %t.protocol, "exporting traces (OTLP)");
    }
    let mut config = sluice::ServerConfig::try_from(&args)?;
    // Fail fast, before anything is logged or bound, on a missing library.
    let env = std::env::var_os("ORT_DYLIB_PATH").map(std::path::PathBuf::from);
    let library =
        sluice::runtime::locate_library(config.onnxruntime_lib.as_deref(), env.as_deref())?;
    config.onnxruntime_lib = Some(library);
    config.logging = logging;
    tracing::info!(version = env!("CARGO_PKG_VERSION"), %settings, "starting");
    if args.io_thread_policy.batch() {
        tracing::info!(
            "I/O threads run on SCHED_BATCH (--io-thread-policy): a request's arrival does not preempt a model run"
        );
    }
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
    let served = sluice::run(config, listeners, shutdown_signal()).await;
    drop(traces); // flushes what is queued
    served
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
