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

    /// How the model set changes while serving, as Triton's `--model-control-mode`:
    /// `none` loads every model at start and refuses the repository load/unload API;
    /// `explicit` (the default) loads every model at start (or those named by
    /// --load-model) and accepts the API; `poll` also rescans the repository every
    /// --repository-poll-secs and loads new or changed models (by content).
    #[arg(long, env = "SLUICE_MODEL_CONTROL_MODE", value_enum)]
    pub model_control_mode: Option<ControlMode>,

    /// Seconds between repository scans; setting it (> 0) implies `poll` mode. 0 turns polling off.
    #[arg(long, env = "SLUICE_REPOSITORY_POLL_SECS", default_value_t = 0)]
    pub repository_poll_secs: u64,

    /// In explicit mode, the models to load at start (repeatable or comma-separated; `*` = all).
    #[arg(long = "load-model", env = "SLUICE_LOAD_MODEL", value_delimiter = ',')]
    pub load_model: Vec<String>,

    /// Log filter, in tracing's EnvFilter syntax (e.g. `info,sluice=debug`).
    #[arg(long, env = "SLUICE_LOG", default_value = "info,ort=warn")]
    pub log: String,

    /// Log format.
    #[arg(long, env = "SLUICE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ControlMode {
    None,
    Poll,
    Explicit,
}

impl ServeArgs {
    /// The control mode and poll interval these flags mean together.
    pub fn control(&self) -> (ControlMode, std::time::Duration) {
        let mode = self
            .model_control_mode
            .unwrap_or(if self.repository_poll_secs > 0 {
                ControlMode::Poll
            } else {
                ControlMode::Explicit
            });
        let secs = match (mode, self.repository_poll_secs) {
            (ControlMode::Poll, 0) => 15,
            (ControlMode::Poll, n) => n,
            _ => 0,
        };
        (mode, std::time::Duration::from_secs(secs))
    }
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
    fn control_mode_follows_poll_secs() {
        let parse = |args: &[&str]| {
            let mut all = vec!["sluice", "serve"];
            all.extend_from_slice(args);
            let Command::Serve(a) = Cli::try_parse_from(all).unwrap().command else {
                panic!()
            };
            a.control()
        };
        use std::time::Duration;
        assert_eq!(parse(&[]), (ControlMode::Explicit, Duration::ZERO));
        assert_eq!(
            parse(&["--repository-poll-secs", "5"]),
            (ControlMode::Poll, Duration::from_secs(5))
        );
        assert_eq!(
            parse(&["--model-control-mode", "poll"]),
            (ControlMode::Poll, Duration::from_secs(15))
        );
        assert_eq!(
            parse(&["--model-control-mode", "none"]).0,
            ControlMode::None
        );
        let Command::Serve(a) = Cli::try_parse_from([
            "sluice",
            "serve",
            "--load-model",
            "a,b",
            "--load-model",
            "c",
        ])
        .unwrap()
        .command
        else {
            panic!()
        };
        assert_eq!(a.load_model, vec!["a", "b", "c"]);
    }

    #[test]
    fn bad_flag_values_are_rejected() {
        assert!(Cli::try_parse_from(["sluice", "serve", "--http-port", "70000"]).is_err());
        assert!(Cli::try_parse_from(["sluice", "serve", "--log-format", "xml"]).is_err());
    }
}
