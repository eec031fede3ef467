//! Settings of the REST adapter.

use crate::config::defaults::{self as d, nonzero_secs};
use std::time::Duration;

/// Connection and protocol limits of the HTTP listener.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Largest accepted request body, in bytes (larger gets 413).
    pub max_body_bytes: usize,
    /// Largest request head (request line and headers); larger gets 431.
    pub max_header_bytes: usize,
    /// A request head must arrive within this; also the keep-alive idle limit.
    pub header_read_timeout: Option<Duration>,
    /// Concurrent streams on one HTTP/2 connection.
    pub(crate) max_concurrent_streams: u32,
    /// HTTP/2 keep-alive ping interval (REST and gRPC); a peer that does
    /// not answer is dropped.
    pub keepalive_interval: Option<Duration>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: d::MAX_BODY_BYTES,
            max_header_bytes: d::MAX_HEADER_BYTES as usize,
            header_read_timeout: nonzero_secs(d::HEADER_READ_TIMEOUT_SECS),
            max_concurrent_streams: d::MAX_CONCURRENT_STREAMS,
            keepalive_interval: nonzero_secs(d::HTTP2_KEEPALIVE_SECS),
        }
    }
}

/// Limits the body extractor applies; the guard puts the configured ones in
/// each request's extensions (defaults otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    /// The whole body must arrive within this (slow-loris on the body).
    pub read_timeout: Duration,
    /// Deepest nesting of `[`/`{` allowed in a JSON body (or binary header).
    pub max_json_depth: usize,
}

impl Default for BodyLimits {
    fn default() -> Self {
        Self {
            read_timeout: Duration::from_secs(d::BODY_READ_TIMEOUT_SECS),
            max_json_depth: d::MAX_JSON_DEPTH,
        }
    }
}
