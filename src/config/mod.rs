//! The server's whole configuration as one validated value, [`ServerConfig`],
//! whose defaults come from [`defaults`] alone. The CLI (`crate::cli`)
//! converts its flags into it in one `TryFrom` step; tests and embedders
//! start from [`ServerConfig::default`] and change what they need.

pub(crate) mod defaults;

pub(crate) use defaults::nonzero_secs;

use crate::registry::ControlMode;
use std::path::PathBuf;
use std::time::Duration;

/// Everything [`crate::run`] needs, already validated.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where models come from: directories and object-store URLs.
    pub model_repositories: Vec<crate::repository::Location>,
    /// The local cache of remote repositories.
    pub model_cache: crate::repository::CacheSettings,
    /// The ONNX Runtime library to load; `None` finds it the usual way
    /// (`ORT_DYLIB_PATH`, then `make setup`'s folder, then the executable's).
    pub onnxruntime_lib: Option<PathBuf>,
    pub limits: crate::service::Limits,
    pub http: crate::http::HttpConfig,
    /// Body read timeout and JSON nesting depth of REST requests.
    pub body: crate::http::BodyLimits,
    /// Largest gRPC request message; `None` = `http.max_body_bytes`.
    pub(crate) grpc_max_message_bytes: Option<usize>,
    /// Connection cap and TLS handshake deadline, over every listener.
    pub net: crate::net::NetConfig,
    /// Requests in flight over both protocols; over it, 503 at once (0 = no cap).
    pub max_inflight_requests: usize,
    /// REST body and gRPC message bytes in flight, reserved before reading;
    /// over it, 503 (0 = no cap).
    pub max_inflight_body_bytes: usize,
    /// A request must be answered within this (`None` = no limit).
    pub request_timeout: Option<Duration>,
    /// Bearer tokens; off when none is configured.
    pub auth: crate::auth::AuthConfig,
    /// TLS for the HTTP and gRPC listeners; `None` = plaintext.
    pub tls: Option<crate::net::tls::TlsFiles>,
    /// How often the TLS files and the token file are checked for changes
    /// (zero: never).
    pub secrets_reload: Duration,
    /// Log settings that `/v2/logging` and gRPC `LogSettings` read and change.
    pub logging: crate::logging::LogControl,
    /// Readiness is false this long before listeners stop accepting.
    pub(crate) shutdown_delay: Duration,
    /// Admitted requests get this long to finish.
    pub(crate) shutdown_grace: Duration,
    /// Cores the process may use (instance and thread defaults derive from it).
    pub cores: usize,
    /// How the model set changes while serving.
    pub control_mode: ControlMode,
    /// Repository scan interval in poll mode.
    pub poll_interval: Duration,
    /// In explicit mode, the models to load at start (empty or `*` = all).
    pub load_models: Vec<String>,
    /// Ready only while every model meant to be served is (Triton's
    /// `--strict-readiness`); false: ready once started, until draining.
    pub strict_readiness: bool,
    /// A model that fails its first load stops the start-up.
    pub exit_on_error: bool,
    /// Load models whose configuration names fields Sluice does not
    /// support, without them (each logged); else such a model is UNAVAILABLE.
    pub ignore_unsupported_config: bool,
    /// Triton's `--strict-model-config`: every model needs a configuration
    /// file, and nothing is completed from the graph.
    pub(crate) strict_model_config: bool,
    /// A request may run on the I/O thread that received it, skipping the
    /// hand-off to an instance worker, while its version's runs average at
    /// most this long and that thread was idle; zero: never.
    pub inline_run_limit: Duration,
    /// Bytes of the response cache, shared by the models that enable it
    /// (`response_cache`); 0: no cache.
    pub cache_size_bytes: usize,
    /// On-demand loading: the memory budget and idle unloading (the load
    /// wait and the pinned models are filled in from `request_timeout` and
    /// `load_models` at start).
    pub demand: crate::registry::DemandSettings,
    /// Fault injection for tests of the panic handling: the metadata and
    /// inference calls of the model named here panic, over every protocol. No flag or config
    /// key sets it, so a server started from the command line never has it.
    #[doc(hidden)]
    pub panic_for_model: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        use defaults as d;
        let secs = Duration::from_secs;
        Self {
            model_repositories: vec![crate::repository::Location::Local(PathBuf::from(
                d::MODEL_REPOSITORY,
            ))],
            model_cache: crate::repository::CacheSettings::default(),
            onnxruntime_lib: None,
            limits: crate::service::Limits::default(),
            http: crate::http::HttpConfig::default(),
            body: crate::http::BodyLimits::default(),
            grpc_max_message_bytes: None,
            net: crate::net::NetConfig::default(),
            max_inflight_requests: d::MAX_INFLIGHT_REQUESTS,
            max_inflight_body_bytes: d::MAX_INFLIGHT_BODY_BYTES,
            request_timeout: nonzero_secs(d::REQUEST_TIMEOUT_SECS),
            auth: crate::auth::AuthConfig::default(),
            tls: None,
            secrets_reload: secs(d::SECRETS_RELOAD_SECS),
            logging: crate::logging::LogControl::detached(),
            shutdown_delay: secs(d::SHUTDOWN_DELAY_SECS),
            shutdown_grace: secs(d::SHUTDOWN_GRACE_SECS),
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            control_mode: ControlMode::Explicit,
            poll_interval: Duration::ZERO,
            load_models: Vec::new(),
            strict_readiness: d::STRICT_READINESS,
            cache_size_bytes: d::CACHE_SIZE_BYTES,
            demand: crate::registry::DemandSettings::default(),
            exit_on_error: d::EXIT_ON_ERROR,
            ignore_unsupported_config: false,
            strict_model_config: d::STRICT_MODEL_CONFIG,
            inline_run_limit: Duration::from_micros(d::INLINE_RUN_LIMIT_US),
            panic_for_model: None,
        }
    }
}

impl ServerConfig {
    /// The defaults, serving `model_repository` with the ONNX Runtime
    /// library at `onnxruntime_lib`.
    pub fn new(model_repository: PathBuf, onnxruntime_lib: PathBuf) -> Self {
        Self {
            model_repositories: vec![crate::repository::Location::Local(model_repository)],
            onnxruntime_lib: Some(onnxruntime_lib),
            ..Self::default()
        }
    }
}
