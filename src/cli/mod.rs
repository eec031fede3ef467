//! Command-line flags. Every flag can also be set from a `SLUICE_*`
//! environment variable; the doc comments are the operator manual
//! (`sluice serve --help`). Defaults come from [`crate::config::defaults`],
//! and [`ServeArgs`] becomes a [`crate::ServerConfig`] in one `TryFrom` step
//! ([`convert`]).

mod convert;
mod triton;

pub use crate::auth::Secret;
use crate::config::defaults as d;
use clap::{Args, Parser, Subcommand, ValueEnum};
pub use convert::non_default_settings;
use std::net::IpAddr;
use std::path::PathBuf;
pub use triton::{unsupported_triton_flag, with_default_command};

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
    /// Exit 0 if the server at URL answers 2xx within 5 s; else print why to
    /// stderr and exit 1 (for container HEALTHCHECKs and exec probes).
    Healthcheck(HealthcheckArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Model repository: <dir>/<model>/<version>/model.onnx, with an optional <dir>/<model>/config.toml
    /// or config.pbtxt. A directory, or a URL: s3://bucket/prefix, gs://bucket/prefix,
    /// az://container/prefix (azure://, Triton's as://account/container/prefix), http(s):// (WebDAV),
    /// file://. Repeatable or comma-separated; a model name must be in only one.
    #[arg(long, env = "SLUICE_MODEL_REPOSITORY", default_value = d::MODEL_REPOSITORY,
          alias = "model-store", value_delimiter = ',')]
    pub(crate) model_repository: Vec<String>,

    /// Where remote repositories are downloaded to (one subdirectory each). Default: sluice-model-cache
    /// under the system temp dir. In Kubernetes, an emptyDir.
    #[arg(long, env = "SLUICE_MODEL_CACHE_DIR")]
    pub(crate) model_cache_dir: Option<PathBuf>,

    /// Bound on the bytes of downloaded repositories: cached versions that no version policy selects
    /// are removed, least recently used first, to stay within it. 0: no bound.
    #[arg(long, env = "SLUICE_MODEL_CACHE_MAX_BYTES", default_value_t = 0)]
    pub(crate) model_cache_max_bytes: u64,

    /// In remote repositories, load a version only once this marker object exists in its directory
    /// (e.g. `.ready`, uploaded after the version's files). Unset: every version directory counts.
    #[arg(long, env = "SLUICE_MODEL_READY_MARKER")]
    pub(crate) model_ready_marker: Option<String>,

    /// Models of remote repositories downloaded at the same time.
    #[arg(long, env = "SLUICE_MODEL_DOWNLOADS", default_value_t = d::MODEL_DOWNLOADS,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub(crate) model_downloads: u16,

    /// Address to listen on.
    #[arg(long, env = "SLUICE_HOST", default_value = d::HOST)]
    pub host: IpAddr,

    /// HTTP port (KServe v2 REST, /metrics). 0 picks a free port.
    #[arg(long, env = "SLUICE_HTTP_PORT", default_value_t = d::HTTP_PORT)]
    pub http_port: u16,

    /// gRPC port (KServe v2 GRPCInferenceService). 0 picks a free port.
    #[arg(long, env = "SLUICE_GRPC_PORT", default_value_t = d::GRPC_PORT)]
    pub grpc_port: u16,

    /// Also serve /metrics on this port (it is always on the HTTP port).
    #[arg(long, env = "SLUICE_METRICS_PORT")]
    pub metrics_port: Option<u16>,

    /// Path to libonnxruntime.so (or its folder). Default: ORT_DYLIB_PATH, then
    /// .onnxruntime/lib fetched by `make setup`, then the executable's folder.
    #[arg(long, env = "SLUICE_ONNXRUNTIME_LIB")]
    pub(crate) onnxruntime_lib: Option<PathBuf>,

    /// Largest request body in bytes; larger bodies get 413.
    #[arg(long, env = "SLUICE_MAX_BODY_BYTES", default_value_t = d::MAX_BODY_BYTES)]
    pub(crate) max_body_bytes: usize,

    /// Most elements one input tensor may declare; larger shapes get 413 before any allocation.
    #[arg(long, env = "SLUICE_MAX_TENSOR_ELEMENTS", default_value_t = d::MAX_TENSOR_ELEMENTS)]
    pub(crate) max_tensor_elements: usize,

    /// Most bytes in all of one request's input tensors together, after decoding; more gets 413.
    #[arg(long, env = "SLUICE_MAX_REQUEST_TENSOR_BYTES", default_value_t = d::MAX_REQUEST_TENSOR_BYTES)]
    pub(crate) max_request_tensor_bytes: usize,

    /// Bytes of the response cache (Triton's --cache-config local,size=N): identical requests to a
    /// model whose configuration sets `response_cache` are answered from memory, least recently used
    /// entries evicted first. 0 (the default) turns the cache off.
    #[arg(long, env = "SLUICE_CACHE_SIZE_BYTES", default_value_t = d::CACHE_SIZE_BYTES)]
    pub(crate) cache_size_bytes: usize,

    /// On an idle server, a request to a model whose runs average at most this many µs runs on the
    /// I/O thread that received it, skipping the hand-off to an instance thread and back (two
    /// thread wake-ups); under load requests queue and batch as usual. 0 sends every request
    /// through the queue. Only CPU sessions run inline, and never those of a model with a batching
    /// delay (`max_queue_delay_microseconds`) or `preserve_ordering`.
    #[arg(long, env = "SLUICE_INLINE_RUN_LIMIT_US", default_value_t = d::INLINE_RUN_LIMIT_US)]
    pub(crate) inline_run_limit_us: u64,

    /// Whether the async runtime's I/O threads, like the instance threads, run on Linux's
    /// `SCHED_BATCH` policy, so that a thread woken by a request does not preempt a model run on
    /// the same core: `auto` (the default) only when the server may use a single CPU (its
    /// affinity mask, as a pod given one exclusive core by the static CPU manager gets), `batch`
    /// always, `default` never.
    #[arg(long, env = "SLUICE_IO_THREAD_POLICY", value_enum, default_value_t = IoThreadPolicy::Auto)]
    pub io_thread_policy: IoThreadPolicy,

    /// Most bytes in one element of a BYTES (string) tensor; longer gets 413.
    #[arg(long, env = "SLUICE_MAX_BYTES_ELEMENT", default_value_t = d::MAX_BYTES_ELEMENT)]
    pub(crate) max_bytes_element: usize,

    /// Largest request head (request line plus headers, HTTP/1) or header list
    /// (HTTP/2, gRPC metadata), in bytes; larger gets 431. At least 8192.
    #[arg(long, env = "SLUICE_MAX_HEADER_BYTES", default_value_t = d::MAX_HEADER_BYTES,
          value_parser = clap::value_parser!(u32).range(i64::from(d::MIN_HEADER_BYTES)..))]
    pub(crate) max_header_bytes: u32,

    /// Deepest nesting of JSON arrays and objects in a request; deeper gets 400 before parsing.
    #[arg(long, env = "SLUICE_MAX_JSON_DEPTH", default_value_t = d::MAX_JSON_DEPTH)]
    pub(crate) max_json_depth: usize,

    /// Largest gRPC request message in bytes (default: --max-body-bytes); larger gets RESOURCE_EXHAUSTED.
    #[arg(long, env = "SLUICE_GRPC_MAX_MESSAGE_BYTES")]
    pub(crate) grpc_max_message_bytes: Option<usize>,

    /// Most connections open at once over all listeners. Over it, a plain HTTP
    /// client gets one 503 with Retry-After; TLS and gRPC connections are closed.
    #[arg(long, env = "SLUICE_MAX_CONNECTIONS", default_value_t = d::MAX_CONNECTIONS)]
    pub(crate) max_connections: usize,

    /// Most concurrent streams on one HTTP/2 connection (REST over h2 and gRPC).
    #[arg(long, env = "SLUICE_MAX_CONCURRENT_STREAMS", default_value_t = d::MAX_CONCURRENT_STREAMS)]
    pub(crate) max_concurrent_streams: u32,

    /// Most requests in flight over both protocols (including those still
    /// sending their body); over it, 503 + Retry-After (gRPC UNAVAILABLE) at
    /// once. Bounds memory: at most this many bodies are held. 0 = no cap.
    #[arg(long, env = "SLUICE_MAX_INFLIGHT_REQUESTS", default_value_t = d::MAX_INFLIGHT_REQUESTS)]
    pub(crate) max_inflight_requests: usize,

    /// Most request bytes in flight over both protocols, reserved before the
    /// body is read: a REST request reserves its Content-Length (the body
    /// limit if chunked), a unary gRPC call the length its message header
    /// declares (ModelStreamInfer messages are not counted). Over it, 503 +
    /// Retry-After (gRPC UNAVAILABLE) at once. Bounds the memory bodies hold. 0 = no cap.
    #[arg(long, env = "SLUICE_MAX_INFLIGHT_BODY_BYTES", default_value_t = d::MAX_INFLIGHT_BODY_BYTES)]
    pub(crate) max_inflight_body_bytes: usize,

    /// Seconds a request may take from its head to its answer; over it, 504
    /// (gRPC DEADLINE_EXCEEDED). 0 = no limit.
    #[arg(long, env = "SLUICE_REQUEST_TIMEOUT_SECS", default_value_t = d::REQUEST_TIMEOUT_SECS)]
    pub(crate) request_timeout_secs: u64,

    /// Seconds a request head may take to arrive, and an HTTP/1 keep-alive
    /// connection may stay idle; then the connection is closed (slow-loris).
    #[arg(long, env = "SLUICE_HEADER_READ_TIMEOUT_SECS", default_value_t = d::HEADER_READ_TIMEOUT_SECS)]
    pub(crate) header_read_timeout_secs: u64,

    /// Seconds a REST request body may take to arrive in full; over it, 408.
    #[arg(long, env = "SLUICE_BODY_READ_TIMEOUT_SECS", default_value_t = d::BODY_READ_TIMEOUT_SECS)]
    pub(crate) body_read_timeout_secs: u64,

    /// HTTP/2 keep-alive ping interval in seconds (REST h2 and gRPC); a peer that
    /// does not answer a ping within as long is dropped. 0 = no pings.
    #[arg(long, env = "SLUICE_HTTP2_KEEPALIVE_SECS", default_value_t = d::HTTP2_KEEPALIVE_SECS)]
    pub(crate) http2_keepalive_secs: u64,

    /// PEM certificate chain: turns on TLS for the HTTP and gRPC ports (needs --tls-key).
    #[arg(long, env = "SLUICE_TLS_CERT", requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(long, env = "SLUICE_TLS_KEY", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,

    /// PEM CA bundle: clients must present a certificate that chains to it (mutual TLS).
    #[arg(long, env = "SLUICE_TLS_CLIENT_CA", requires = "tls_cert")]
    pub(crate) tls_client_ca: Option<PathBuf>,

    /// Seconds from connect until the TLS handshake (if any) is done and the
    /// client's first bytes arrive; then the connection is closed (slow-loris).
    #[arg(long, env = "SLUICE_HANDSHAKE_TIMEOUT_SECS", default_value_t = d::HANDSHAKE_TIMEOUT_SECS)]
    pub(crate) handshake_timeout_secs: u64,

    /// Seconds a connection (HTTP/1, HTTP/2 or gRPC) may stay open with no
    /// request in progress; then it is closed. 0 = never.
    #[arg(long, env = "SLUICE_IDLE_TIMEOUT_SECS", default_value_t = d::IDLE_TIMEOUT_SECS)]
    pub(crate) idle_timeout_secs: u64,

    /// Seconds between checks of the TLS files and the token file; changed
    /// files are reloaded without a restart. 0 = never reload.
    #[arg(long, env = "SLUICE_SECRETS_RELOAD_SECS", default_value_t = d::SECRETS_RELOAD_SECS)]
    pub(crate) secrets_reload_secs: u64,

    /// A bearer token with the `infer` scope (repeatable or comma-separated).
    /// Setting any token turns authentication on.
    #[arg(
        long = "auth-infer-token",
        env = "SLUICE_AUTH_INFER_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub(crate) auth_infer_tokens: Vec<Secret>,

    /// A bearer token with the `admin` and `infer` scopes (repeatable or comma-separated).
    #[arg(
        long = "auth-admin-token",
        env = "SLUICE_AUTH_ADMIN_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub(crate) auth_admin_tokens: Vec<Secret>,

    /// A file of `<scopes> <token>` lines (scopes: `infer`, `admin` or
    /// `infer,admin`; `#` comments), re-read on change. Turns authentication on.
    #[arg(long, env = "SLUICE_AUTH_TOKEN_FILE")]
    pub(crate) auth_token_file: Option<PathBuf>,

    /// With authentication on, require a valid token for /v2/health/* and gRPC health too.
    #[arg(long, env = "SLUICE_AUTH_PROTECT_HEALTH")]
    pub(crate) auth_protect_health: bool,

    /// With authentication on, require a valid token for /metrics too.
    #[arg(long, env = "SLUICE_AUTH_PROTECT_METRICS")]
    pub(crate) auth_protect_metrics: bool,

    /// After SIGTERM/SIGINT: seconds to keep accepting while readiness is
    /// already false, so load balancers stop sending first.
    #[arg(long, env = "SLUICE_SHUTDOWN_DELAY_SECS", default_value_t = d::SHUTDOWN_DELAY_SECS)]
    pub(crate) shutdown_delay_secs: u64,

    /// After the delay: seconds admitted requests get to finish before exit.
    #[arg(long, env = "SLUICE_SHUTDOWN_GRACE_SECS", default_value_t = d::SHUTDOWN_GRACE_SECS)]
    pub(crate) shutdown_grace_secs: u64,

    /// How the model set changes while serving, as Triton's `--model-control-mode`:
    /// `none` loads every model at start and refuses the repository load/unload API;
    /// `explicit` (the default) loads every model at start (or those named by
    /// --load-model) and accepts the API; `poll` also rescans the repository every
    /// --repository-poll-secs and loads new or changed models (by content);
    /// `on-demand` lists every model UNLOADED and loads each on its first
    /// request (the --load-model ones, pinned, at start), evicting the least
    /// recently used idle versions under --model-memory-budget-bytes; with
    /// --repository-poll-secs it also rescans, without loading what is not loaded.
    #[arg(long, env = "SLUICE_MODEL_CONTROL_MODE", value_enum)]
    pub(crate) model_control_mode: Option<ControlModeArg>,

    /// In on-demand mode, the bytes of memory the loaded model versions may
    /// cost together, each version's cost being the resident memory it added
    /// while loading and warming. A load first evicts least recently used idle
    /// versions to fit; a model costing more than the whole budget fails to
    /// load. 0 (the default): no budget.
    #[arg(long, env = "SLUICE_MODEL_MEMORY_BUDGET_BYTES", default_value_t = 0)]
    pub(crate) model_memory_budget_bytes: u64,

    /// In on-demand mode, unload versions (not pinned) that served no request
    /// for this many seconds, even under the budget. 0 (the default): never.
    #[arg(long, env = "SLUICE_MODEL_IDLE_UNLOAD_SECS", default_value_t = 0)]
    pub(crate) model_idle_unload_secs: u64,

    /// Seconds between repository scans; setting it (> 0) implies `poll` mode. 0 turns polling off.
    #[arg(long, env = "SLUICE_REPOSITORY_POLL_SECS", default_value_t = d::REPOSITORY_POLL_SECS)]
    pub(crate) repository_poll_secs: u64,

    /// In explicit mode, the models to load at start (repeatable or comma-separated; `*` = all).
    /// In on-demand mode, the models to load at start and never evict (pinned).
    #[arg(long = "load-model", env = "SLUICE_LOAD_MODEL", value_delimiter = ',')]
    pub(crate) load_model: Vec<String>,

    /// Readiness (`/v2/health/ready`, gRPC ServerReady) is true only while
    /// every model this server is meant to serve (the --load-model set, or the
    /// whole repository, plus models loaded later and not unloaded) has a
    /// version serving, as Triton's flag of the same name. `false`: ready once
    /// the start-up load is done, until shutdown.
    #[arg(long, env = "SLUICE_STRICT_READINESS", default_value_t = d::STRICT_READINESS,
          action = clap::ArgAction::Set)]
    pub(crate) strict_readiness: bool,

    /// Exit with an error when a model fails its first load at start
    /// (Triton's flag; Triton defaults to true). `false` (the default): the
    /// other models serve, and with strict readiness the server stays unready.
    #[arg(long, env = "SLUICE_EXIT_ON_ERROR", default_value_t = d::EXIT_ON_ERROR,
          action = clap::ArgAction::Set)]
    pub(crate) exit_on_error: bool,

    /// Triton's flag: `true` requires every model to have a configuration file
    /// (`config.pbtxt` or `config.toml`), and a `config.pbtxt` to declare its
    /// inputs and outputs, nothing completed from the graph. `false` (the
    /// default): what a configuration leaves out comes from the ONNX graph.
    #[arg(long, env = "SLUICE_STRICT_MODEL_CONFIG", default_value_t = d::STRICT_MODEL_CONFIG,
          action = clap::ArgAction::Set)]
    pub(crate) strict_model_config: bool,

    /// Load a model whose `config.pbtxt` uses fields Sluice does not support
    /// (e.g. `sequence_batching`), without them, logging each as a warning.
    /// Off (the default): such a model is UNAVAILABLE, with a reason naming
    /// every such field.
    #[arg(long, env = "SLUICE_IGNORE_UNSUPPORTED_CONFIG")]
    pub(crate) ignore_unsupported_config: bool,

    /// Log filter, in tracing's EnvFilter syntax (e.g. `info,sluice=debug`).
    #[arg(long, env = "SLUICE_LOG", default_value = d::LOG_FILTER)]
    pub log: String,

    /// Triton's verbose logging level: 0 (the default) adds nothing to
    /// `--log`; 1 logs Sluice's debug events; 2 and more its trace events and
    /// the libraries' debug events.
    #[arg(long, env = "SLUICE_LOG_VERBOSE", default_value_t = 0)]
    pub log_verbose: u32,

    /// Log format: `text` for people, or `json`: one object per line with
    /// the event's fields as top-level keys (`timestamp`, `level`, `target`,
    /// `message`, then e.g. `model`, `version`), as log pipelines expect.
    #[arg(long, env = "SLUICE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// OpenTelemetry collector to export traces to (OTLP), e.g.
    /// `http://otel-collector:4317`. Unset: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
    /// or `OTEL_EXPORTER_OTLP_ENDPOINT`; with none of them, tracing is off.
    /// Sampling follows `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`
    /// (default: parent-based, always on), the service name `OTEL_SERVICE_NAME`.
    #[arg(long, env = "SLUICE_OTLP_ENDPOINT")]
    pub(crate) otlp_endpoint: Option<String>,

    /// OTLP transport: `grpc` (port 4317) or `http/protobuf` (port 4318; the
    /// `/v1/traces` path is added). Unset: `OTEL_EXPORTER_OTLP_PROTOCOL`, else grpc.
    #[arg(long, env = "SLUICE_OTLP_PROTOCOL", value_parser = ["grpc", "http/protobuf"])]
    pub(crate) otlp_protocol: Option<String>,

    /// ANSI colours in text logs: `auto` only when stderr is a terminal (never
    /// in a file, a pipe or a container log), `always`, or `never`.
    #[arg(long, env = "SLUICE_LOG_COLOR", value_enum, default_value_t = LogColor::Auto)]
    pub log_color: LogColor,
}

impl ServeArgs {
    /// The log filter: `--log`, with what `--log-verbose` adds (later
    /// directives of an EnvFilter win for the same target).
    pub fn log_filter(&self) -> String {
        match self.log_verbose {
            0 => self.log.clone(),
            1 => format!("{},sluice=debug", self.log),
            _ => format!("{},debug,ort=warn,sluice=trace", self.log),
        }
    }
}

/// The values of `--model-control-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ControlModeArg {
    None,
    Poll,
    Explicit,
    OnDemand,
}

/// The values of `--io-thread-policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IoThreadPolicy {
    Auto,
    Batch,
    Default,
}

impl IoThreadPolicy {
    /// Whether the I/O threads go on `SCHED_BATCH`.
    pub fn batch(self) -> bool {
        match self {
            Self::Auto => crate::scheduler::only_one_cpu(),
            Self::Batch => true,
            Self::Default => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogColor {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Args)]
pub struct HealthcheckArgs {
    /// URL to probe: http:// or https:// (the certificate is not checked, as
    /// the kubelet's HTTPS probes do not check it).
    #[arg(
        long,
        env = "SLUICE_HEALTHCHECK_URL",
        default_value = "http://127.0.0.1:8000/v2/health/ready"
    )]
    pub url: String,
}
