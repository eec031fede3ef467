//! The listeners' settings.

use crate::config::defaults as d;
use std::time::Duration;

/// Settings shared by the listeners.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Most connections open at once, over every listener.
    pub max_connections: usize,
    /// From connect until the TLS handshake is done and the client's first
    /// bytes have arrived.
    pub handshake_timeout: Duration,
    /// A serving connection with no request in progress for this long is
    /// closed (`None`: never).
    pub idle_timeout: Option<Duration>,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            max_connections: d::MAX_CONNECTIONS,
            handshake_timeout: Duration::from_secs(d::HANDSHAKE_TIMEOUT_SECS),
            idle_timeout: d::nonzero_secs(d::IDLE_TIMEOUT_SECS),
        }
    }
}

/// Which protocol a listener serves (it decides ALPN and the over-cap reply).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Http,
    Grpc,
}
