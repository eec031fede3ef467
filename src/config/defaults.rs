//! Every default of the server's configuration, in one place: the CLI's
//! flags (`crate::cli`) and [`super::ServerConfig::default`] both read
//! these, so tests run the same server as production.

/// The model repository served when none is named.
pub(crate) const MODEL_REPOSITORY: &str = "models";
/// Models of remote repositories downloaded at once.
pub(crate) const MODEL_DOWNLOADS: u16 = 4;
pub(crate) const HOST: &str = "0.0.0.0";
pub(crate) const HTTP_PORT: u16 = 8000;
pub(crate) const GRPC_PORT: u16 = 8001;

pub(crate) const MAX_BODY_BYTES: usize = 64 << 20;
pub(crate) const MAX_TENSOR_ELEMENTS: usize = 16 << 20;
pub(crate) const MAX_REQUEST_TENSOR_BYTES: usize = 256 << 20;
pub(crate) const MAX_BYTES_ELEMENT: usize = 16 << 20;
pub(crate) const MAX_HEADER_BYTES: u32 = 64 << 10;
/// hyper refuses read buffers smaller than this.
pub(crate) const MIN_HEADER_BYTES: u32 = 8192;
pub(crate) const MAX_JSON_DEPTH: usize = 64;
/// The response cache is off unless given a size.
pub(crate) const CACHE_SIZE_BYTES: usize = 0;

pub(crate) const MAX_CONNECTIONS: usize = 10_000;
pub(crate) const MAX_CONCURRENT_STREAMS: u32 = 256;
pub(crate) const MAX_INFLIGHT_REQUESTS: usize = 1024;
pub(crate) const MAX_INFLIGHT_BODY_BYTES: usize = 256 << 20;

pub(crate) const REQUEST_TIMEOUT_SECS: u64 = 120;
pub(crate) const HEADER_READ_TIMEOUT_SECS: u64 = 30;
pub(crate) const BODY_READ_TIMEOUT_SECS: u64 = 60;
pub(crate) const HTTP2_KEEPALIVE_SECS: u64 = 30;
pub(crate) const HANDSHAKE_TIMEOUT_SECS: u64 = 10;
pub(crate) const IDLE_TIMEOUT_SECS: u64 = 300;
pub(crate) const SECRETS_RELOAD_SECS: u64 = 10;

pub(crate) const SHUTDOWN_DELAY_SECS: u64 = 0;
pub(crate) const SHUTDOWN_GRACE_SECS: u64 = 30;

/// 0: no polling (explicit mode), unless the mode is `poll`.
pub(crate) const REPOSITORY_POLL_SECS: u64 = 0;
/// The interval of `--model-control-mode poll` without `--repository-poll-secs`.
pub(crate) const POLL_MODE_SECS: u64 = 15;

/// Ready only while every model meant to be served is ready (as Triton).
pub(crate) const STRICT_READINESS: bool = true;
/// A model that fails at start leaves the others serving (unlike Triton,
/// whose default is true): with strict readiness the pod stays unready.
pub(crate) const EXIT_ON_ERROR: bool = false;

/// Missing configuration is completed from the graph (as Triton's default).
pub(crate) const STRICT_MODEL_CONFIG: bool = false;

/// Requests of a version whose runs average at most this many µs may run on
/// the I/O thread of an idle server (`scheduler::inline`). 100 µs: an I/O
/// thread is held at most about as long as reading and decoding a large
/// JSON body holds it.
pub(crate) const INLINE_RUN_LIMIT_US: u64 = 100;

pub(crate) const LOG_FILTER: &str = "info,ort=warn";

/// `Some(seconds)`, or `None` for 0 (the flags' "off").
pub(crate) fn nonzero_secs(secs: u64) -> Option<std::time::Duration> {
    (secs > 0).then(|| std::time::Duration::from_secs(secs))
}
