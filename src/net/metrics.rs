//! The edge's metric families: what is refused before a request reaches a
//! model's queue (over the connection cap, failed TLS handshakes, bad tokens,
//! the in-flight cap, the request timeout) and the connections open now.
//! Labels come from small fixed sets. [`crate::metrics::Metrics`] registers
//! them with the server's other families.

use prometheus::{IntCounterVec, IntGauge, Opts};

pub(crate) const OPEN_CONNECTIONS: &str = "sluice_open_connections";
pub(crate) const REFUSED_CONNECTIONS: &str = "sluice_refused_connections_total";
pub(crate) const REFUSED_REQUESTS: &str = "sluice_refused_requests_total";
pub(crate) const HANDLER_PANICS: &str = "sluice_handler_panics_total";

/// Cloneable handles to the edge's families.
#[derive(Debug, Clone)]
pub(crate) struct EdgeMetrics {
    pub(crate) open_connections: IntGauge,
    refused_connections: IntCounterVec,
    refused_requests: IntCounterVec,
    handler_panics: IntCounterVec,
}

impl Default for EdgeMetrics {
    fn default() -> Self {
        Self::new()
    }
}

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| unreachable!("static counter {name} is valid: {e}"))
}

impl EdgeMetrics {
    /// Unregistered families; see [`EdgeMetrics::register`].
    pub fn new() -> Self {
        let metrics = Self {
            open_connections: IntGauge::new(
                OPEN_CONNECTIONS,
                "Connections open now, all listeners.",
            )
            .unwrap_or_else(|e| unreachable!("static gauge is valid: {e}")),
            refused_connections: counter(
                REFUSED_CONNECTIONS,
                "Connections closed before serving: reason is limit (--max-connections), tls_handshake, or idle (no request within --handshake-timeout-secs).",
                &["reason"],
            ),
            refused_requests: counter(
                REFUSED_REQUESTS,
                "Requests refused before reaching a model: unauthenticated, forbidden, inflight_limit, request_timeout.",
                &["protocol", "reason"],
            ),
            handler_panics: counter(
                HANDLER_PANICS,
                "Requests whose handler panicked (a bug): answered 500 (REST) or INTERNAL (gRPC), the connection kept.",
                &["protocol"],
            ),
        };
        // Present at zero from the start, so an alert on increase() works.
        for protocol in ["http", "grpc"] {
            metrics.handler_panics.with_label_values(&[protocol]);
        }
        metrics
    }

    /// The collectors to register with the server's registry.
    pub(crate) fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.open_connections.clone()),
            Box::new(self.refused_connections.clone()),
            Box::new(self.refused_requests.clone()),
            Box::new(self.handler_panics.clone()),
        ]
    }

    pub(crate) fn refuse_connection(&self, reason: &str) {
        self.refused_connections.with_label_values(&[reason]).inc();
    }

    pub(crate) fn refuse_request(&self, protocol: &str, reason: &str) {
        self.refused_requests
            .with_label_values(&[protocol, reason])
            .inc();
    }

    /// Counts a handler panic and logs it with what is known of the request.
    /// The message goes to the log only, never to the client.
    pub(crate) fn handler_panicked(
        &self,
        protocol: &str,
        route: &str,
        model: Option<&str>,
        payload: &(dyn std::any::Any + Send),
    ) {
        self.handler_panics.with_label_values(&[protocol]).inc();
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic with a non-string payload".to_string());
        tracing::error!(
            protocol,
            route,
            model = model.unwrap_or("-"),
            panic = %message,
            "a request handler panicked; answered as an internal error"
        );
    }
}
