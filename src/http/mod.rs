//! The REST adapter: KServe v2 / Open Inference Protocol over HTTP/JSON,
//! Triton's statistics, binary tensor data, model configuration and model
//! repository extensions, v1 predict, and `/metrics`.
//!
//! Handlers decode, call [`Service`], and encode; they hold no inference
//! logic. Every error leaves as `{"error": "..."}` with the status chosen in
//! [`error`], once, for every route.

pub mod binary;
mod error;
pub mod guard;
pub mod json;
mod logging;
mod parse_errors;
mod repository;
mod routes;
pub mod serve;
mod v1;

pub use error::{ApiError, BodyLimits, check_json_depth};
pub use guard::Guard;
pub use repository::{config_datatype, config_json};

use crate::service::Service;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use std::time::Duration;

/// Settings of the HTTP adapter.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Largest accepted request body, in bytes (larger gets 413).
    pub max_body_bytes: usize,
    /// Largest request head (request line and headers); larger gets 431.
    pub max_header_bytes: usize,
    /// A request head must arrive within this; also the keep-alive idle limit.
    pub header_read_timeout: Option<Duration>,
    /// Concurrent streams on one HTTP/2 connection.
    pub max_concurrent_streams: u32,
    /// HTTP/2 keep-alive ping interval; a peer that does not answer is dropped.
    pub keepalive_interval: Option<Duration>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 << 20,
            max_header_bytes: 64 << 10,
            header_read_timeout: Some(Duration::from_secs(30)),
            max_concurrent_streams: 256,
            keepalive_interval: Some(Duration::from_secs(30)),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct AppState {
    pub service: Service,
    pub logging: crate::logging::LogControl,
    /// The body limit (also how much of a refused body is drained).
    pub max_body_bytes: usize,
}

/// The whole REST API, behind `guard` (auth, in-flight cap, timeouts).
pub fn router(
    service: Service,
    config: &HttpConfig,
    guard: Guard,
    logging: crate::logging::LogControl,
) -> Router {
    let limit = config.max_body_bytes;
    let state = AppState {
        service,
        logging,
        max_body_bytes: limit,
    };
    Router::new()
        .route("/v2/health/live", get(routes::live))
        .route("/v2/health/ready", get(routes::ready))
        .route("/v2", get(routes::server_metadata))
        .route("/v2/models/stats", get(routes::all_stats))
        .route("/v2/models/{model}", get(routes::model_metadata))
        .route(
            "/v2/models/{model}/versions/{version}",
            get(routes::model_metadata_v),
        )
        .route("/v2/models/{model}/ready", get(routes::model_ready))
        .route(
            "/v2/models/{model}/versions/{version}/ready",
            get(routes::model_ready_v),
        )
        .route("/v2/models/{model}/infer", post(routes::infer))
        .route(
            "/v2/models/{model}/versions/{version}/infer",
            post(routes::infer_v),
        )
        .route("/v2/models/{model}/stats", get(routes::model_stats))
        .route(
            "/v2/models/{model}/versions/{version}/stats",
            get(routes::model_stats_v),
        )
        .route("/v2/models/{model}/config", get(repository::config))
        .route(
            "/v2/models/{model}/versions/{version}/config",
            get(repository::config_v),
        )
        .route("/v2/repository/index", post(repository::index))
        .route("/v2/repository/models/{model}/load", post(repository::load))
        .route(
            "/v2/repository/models/{model}/unload",
            post(repository::unload),
        )
        .route("/v2/logging", get(logging::get).post(logging::update))
        // axum cannot capture `{m}:predict`; the handler splits on ':'.
        .route("/v1/models/{model_action}", post(v1::action))
        .route("/metrics", get(routes::metrics))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(guard, guard::guard))
        .with_state(state)
}

/// `/metrics` alone, for `--metrics-port` (behind the same guard).
pub fn metrics_router(service: Service, guard: Guard) -> Router {
    let state = AppState {
        service,
        logging: crate::logging::LogControl::detached(),
        max_body_bytes: 0,
    };
    Router::new()
        .route("/metrics", get(routes::metrics))
        .layer(axum::middleware::from_fn_with_state(guard, guard::guard))
        .with_state(state)
}
