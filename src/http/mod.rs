//! The REST adapter: KServe v2 / Open Inference Protocol over HTTP/JSON,
//! Triton's statistics, binary tensor data, model configuration and model
//! repository extensions, v1 predict, and `/metrics`.
//!
//! Handlers decode, call [`Service`], and encode; they hold no inference
//! logic. Every error leaves as `{"error": "..."}` with the status chosen in
//! [`error`], once, for every route.

pub mod binary;
mod error;
pub mod json;
mod repository;
mod routes;
mod v1;

pub use error::ApiError;
pub use repository::{config_datatype, config_json};
pub use routes::EXTENSIONS;

use crate::service::Service;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

/// Settings of the HTTP adapter.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Largest accepted request body, in bytes (larger gets 413).
    pub max_body_bytes: usize,
}

#[derive(Debug, Clone)]
pub(crate) struct AppState {
    pub service: Service,
}

/// The whole REST API.
pub fn router(service: Service, config: HttpConfig) -> Router {
    let limit = config.max_body_bytes;
    let state = AppState { service };
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
        // axum cannot capture `{m}:predict`; the handler splits on ':'.
        .route("/v1/models/{model_action}", post(v1::action))
        .route("/metrics", get(routes::metrics))
        .fallback(routes::not_found)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// `/metrics` alone, for `--metrics-port`.
pub fn metrics_router(service: Service) -> Router {
    let state = AppState { service };
    Router::new()
        .route("/metrics", get(routes::metrics))
        .with_state(state)
}
