//! Command-line flags. Every flag can also be set from a `SLUICE_*`
//! environment variable; the doc comments are the operator manual
//! (`sluice serve --help`).

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::IpAddr;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "sluice",
    version,
    about = "A lean, predictable ONNX model inference server (KServe v2 / Open Inference Protocol)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the models of a model repository over HTTP and gRPC.
    Serve(Box<ServeArgs>),
    /// Exit 0 if the server at URL answers 200, else 1 (for container HEALTHCHECKs).
    Healthcheck(HealthcheckArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Model repository: <dir>/<model>/<version>/model.onnx, with an optional <dir>/<model>/config.toml.
    #[arg(long, env = "SLUICE_MODEL_REPOSITORY", default_value = "models")]
    pub model_repository: PathBuf,

    /// Address to listen on.
    #[arg(long, env = "SLUICE_HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,

    /// HTTP port (KServe v2 REST, /metrics). 0 picks a free port.
    #[arg(long, env = "SLUICE_HTTP_PORT", default_value_t = 8000)]
    pub http_port: u16,

    /// gRPC port (KServe v2 GRPCInferenceService). 0 picks a free port.
    #[arg(long, env = "SLUICE_GRPC_PORT", default_value_t = 8001)]
    pub grpc_port: u16,

    /// Also serve /metrics on this port (it is always on the HTTP port).
    #[arg(long, env = "SLUICE_METRICS_PORT")]
    pub metrics_port: Option<u16>,

    /// Path to libonnxruntime.so (or its folder). Default: ORT_DYLIB_PATH, then
    /// .onnxruntime/lib fetched by `make setup`, then the executable's folder.
    #[arg(long, env = "SLUICE_ONNXRUNTIME_LIB")]
    pub onnxruntime_lib: Option<PathBuf>,

    /// Largest request body in bytes; larger bodies get 413.
    #[arg(long, env = "SLUICE_MAX_BODY_BYTES", default_value_t = 64 << 20)]
    pub max_body_bytes: usize,

    /// Most elements one input tensor may declare; larger shapes get 400 before any allocation.
    #[arg(long, env = "SLUICE_MAX_TENSOR_ELEMENTS", default_value_t = 16 << 20)]
    pub max_tensor_elements: usize,

    /// After SIGTERM/SIGINT: seconds to keep accepting while readiness is
    /// already false, so load balancers stop sending first.
    #[arg(long, env = "SLUICE_SHUTDOWN_DELAY_SECS", default_value_t = 0)]
    pub shutdown_delay_secs: u64,

    /// After the delay: seconds admitted requests get to finish before exit.
    #[arg(long, env = "SLUICE_SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub shutdown_grace_secs: u64,

    /// Log filter, in tracing's EnvFilter syntax (e.g. `info,sluice=debug`).
    #[arg(long, env = "SLUICE_LOG", default_value = "info,ort=warn")]
    pub log: String,

    /// Log format.
    #[arg(long, env = "SLUICE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct HealthcheckArgs {
    /// URL to probe.
    #[arg(
        long,
        env = "SLUICE_HEALTHCHECK_URL",
        default_value = "http://127.0.0.1:8000/v2/health/ready"
    )]
    pub url: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_flags_parse() {
        let cli = Cli::try_parse_from([
            "sluice",
            "serve",
            "--model-repository",
            "m",
            "--http-port",
            "0",
            "--grpc-port",
            "9",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!()
        };
        assert_eq!(args.model_repository, PathBuf::from("m"));
        assert_eq!((args.http_port, args.grpc_port), (0, 9));
        assert_eq!(args.shutdown_grace_secs, 30);
    }

    #[test]
    fn bad_flag_values_are_rejected() {
        assert!(Cli::try_parse_from(["sluice", "serve", "--http-port", "70000"]).is_err());
        assert!(Cli::try_parse_from(["sluice", "serve", "--log-format", "xml"]).is_err());
    }
}
