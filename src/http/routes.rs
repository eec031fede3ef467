//! REST handlers of the KServe v2 core API and Triton's statistics: decode,
//! call the service, encode.

use super::body::{Body, ReadLimits};
use super::codec::binary::HEADER_LENGTH_NAME;
use super::codec::describe::{metadata_json, stats_json};
use super::codec::encode_response;
use super::codec::infer::decode_request_with;
use super::error::ApiError;
use super::path::Path;
use super::state::AppState;
use crate::error::Error;
use crate::service::Protocol;
use crate::telemetry::{self, Phase};
use axum::Json;
use axum::extract::{FromRequest, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tracing::Instrument as _;

type ApiResult<T> = Result<T, ApiError>;

pub(super) async fn live() -> StatusCode {
    StatusCode::OK
}

pub(super) async fn ready(State(s): State<AppState>) -> Response {
    match s.service.readiness() {
        Ok(()) => StatusCode::OK.into_response(),
        Err(why) => {
            ApiError(Error::Unavailable(format!("server is not ready: {why}"))).into_response()
        }
    }
}

pub(super) async fn server_metadata(State(s): State<AppState>) -> Json<Value> {
    let m = s.service.server_metadata();
    Json(json!({
        "name": m.name,
        "version": m.version,
        "extensions": m.extensions,
    }))
}

pub(super) async fn not_found() -> ApiError {
    ApiError(Error::NotFound("no such endpoint".into()))
}

/// 405 in our error format (axum's own has an empty body).
pub(super) async fn method_not_allowed(method: axum::http::Method) -> Response {
    let mut response = ApiError(Error::invalid(format!(
        "method {method} is not allowed on this endpoint"
    )))
    .into_response();
    *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    response
}

/// A version path segment: a positive integer.
pub(super) fn parse_version(version: &str) -> ApiResult<u64> {
    version
        .parse::<u64>()
        .ok()
        .filter(|&v| v > 0)
        .ok_or_else(|| {
            ApiError(Error::invalid(format!(
                "model version must be a positive integer, got '{version}'"
            )))
        })
}

pub(super) async fn model_metadata(
    State(s): State<AppState>,
    Path(model): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(metadata_json(&s.service.metadata(&model, None)?)))
}

pub(super) async fn model_metadata_v(
    State(s): State<AppState>,
    Path((model, version)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let version = parse_version(&version)?;
    Ok(Json(metadata_json(
        &s.service.metadata(&model, Some(version))?,
    )))
}

fn ready_response(s: &AppState, model: &str, version: Option<u64>) -> ApiResult<Response> {
    let ready = s.service.model_ready(model, version)?;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok((status, Json(json!({"name": model, "ready": ready}))).into_response())
}

pub(super) async fn model_ready(
    State(s): State<AppState>,
    Path(model): Path<String>,
) -> ApiResult<Response> {
    ready_response(&s, &model, None)
}

pub(super) async fn model_ready_v(
    State(s): State<AppState>,
    Path((model, version)): Path<(String, String)>,
) -> ApiResult<Response> {
    ready_response(&s, &model, Some(parse_version(&version)?))
}

pub(super) async fn infer(
    State(s): State<AppState>,
    Path(model): Path<String>,
    request: Request,
) -> ApiResult<Response> {
    infer_common(s, model, None, request, None).await
}

pub(super) async fn infer_v(
    State(s): State<AppState>,
    Path((model, version)): Path<(String, String)>,
    request: Request,
) -> ApiResult<Response> {
    let version = parse_version(&version)?;
    infer_common(s, model, Some(version), request, None).await
}

/// Bodies at least this large are decoded on the blocking pool, so a burst of
/// big JSON bodies cannot stall the async threads that answer everyone else.
const DECODE_OFF_RUNTIME: usize = 256 << 10;

/// JSON and binary requests share one decoder. A full queue refuses before
/// the body is read.
pub(super) async fn infer_common(
    s: AppState,
    model: String,
    version: Option<u64>,
    request: Request,
    limits: Option<ReadLimits>,
) -> ApiResult<Response> {
    if let Err(e) = s.service.precheck(&model, version, Protocol::Http) {
        return Ok(super::guard::refuse(request, ApiError(e), s.max_body_bytes).await);
    }
    let span = telemetry::request_span("http", &model, request.headers());
    let work = async move {
        // The decoder needs one header, not a copy of them all (a shared
        // reference to the request's buffer).
        let header_length = request.headers().get(&HEADER_LENGTH_NAME).cloned();
        // Handed over by the caller, or put in the request by the guard.
        let Body(body) = match limits {
            Some(limits) => Body::read(request, limits).await?,
            None => Body::from_request(request, &()).await?,
        };
        let max_elements = s.service.limits().max_tensor_elements;
        let decode = telemetry::phase_span(Phase::Decode);
        let (request, format) = if body.len() >= DECODE_OFF_RUNTIME {
            tokio::task::spawn_blocking(move || {
                decode.in_scope(|| {
                    decode_request_with(model, version, header_length.as_ref(), body, max_elements)
                })
            })
            .await
            .map_err(|e| ApiError(Error::internal(format!("request decoding failed: {e}"))))??
        } else {
            decode.in_scope(|| {
                decode_request_with(model, version, header_length.as_ref(), body, max_elements)
            })?
        };
        let response = s.service.infer(request, Protocol::Http).await?;
        let _encode = telemetry::phase_span(Phase::Encode).entered();
        Ok(encode_response(&response, &format))
    };
    work.instrument(span).await
}

fn stats_response(
    s: &AppState,
    model: Option<&str>,
    version: Option<u64>,
) -> ApiResult<Json<Value>> {
    let stats: Vec<Value> = s
        .service
        .statistics(model, version)?
        .iter()
        .map(stats_json)
        .collect();
    Ok(Json(json!({"model_stats": stats})))
}

pub(super) async fn model_stats(
    State(s): State<AppState>,
    Path(model): Path<String>,
) -> ApiResult<Json<Value>> {
    stats_response(&s, Some(&model), None)
}

pub(super) async fn model_stats_v(
    State(s): State<AppState>,
    Path((model, version)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let version = parse_version(&version)?;
    stats_response(&s, Some(&model), Some(version))
}

pub(super) async fn all_stats(State(s): State<AppState>) -> ApiResult<Json<Value>> {
    stats_response(&s, None, None)
}

pub(super) async fn metrics(State(s): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.service.metrics_text(),
    )
        .into_response()
}
