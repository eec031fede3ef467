//! REST handlers: decode, call the service, encode.

use super::AppState;
use super::binary;
use super::error::{ApiError, Body};
use super::json::DataJson;
use crate::error::Error;
use crate::registry::LoadedVersion;
use crate::service::{InferResponse, Protocol};
use axum::Json;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;

type ApiResult<T> = Result<T, ApiError>;

pub(super) async fn live() -> StatusCode {
    StatusCode::OK
}

pub(super) async fn ready(State(s): State<AppState>) -> Response {
    if s.service.is_ready() {
        StatusCode::OK.into_response()
    } else {
        ApiError(Error::Unavailable("server is not ready".into())).into_response()
    }
}

pub(super) async fn server_metadata() -> Json<Value> {
    Json(json!({
        "name": "sluice",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": crate::service::EXTENSIONS,
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

fn metadata_json(s: &AppState, version: &LoadedVersion, all_versions: bool) -> Value {
    let versions: Vec<String> = if all_versions {
        s.service
            .registry()
            .served()
            .get(&version.model)
            .map(|m| m.versions.keys().map(u64::to_string).collect())
            .unwrap_or_default()
    } else {
        vec![version.version.to_string()]
    };
    let tensors = |specs: &[crate::tensor::TensorSpec]| -> Vec<Value> {
        specs
            .iter()
            .map(|t| json!({"name": t.name, "datatype": t.datatype.as_str(), "shape": t.shape}))
            .collect()
    };
    json!({
        "name": version.model,
        "versions": versions,
        "platform": "onnxruntime_onnx",
        "inputs": tensors(&version.signature.inputs),
        "outputs": tensors(&version.signature.outputs),
        "parameters": {
            "max_batch_size": version.max_batch_size,
            "execution_provider": version.placement.to_string(),
            "execution_provider_fallbacks": version.placement.fell_back_from.join("; "),
        },
    })
}

pub(super) async fn model_metadata(
    State(s): State<AppState>,
    Path(model): Path<String>,
) -> ApiResult<Json<Value>> {
    let version = s.service.resolve(&model, None)?;
    Ok(Json(metadata_json(&s, &version, true)))
}

pub(super) async fn model_metadata_v(
    State(s): State<AppState>,
    Path((model, version)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let version = s.service.resolve(&model, Some(parse_version(&version)?))?;
    Ok(Json(metadata_json(&s, &version, false)))
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
    infer_common(s, model, None, request).await
}

pub(super) async fn infer_v(
    State(s): State<AppState>,
    Path((model, version)): Path<(String, String)>,
    request: Request,
) -> ApiResult<Response> {
    let version = parse_version(&version)?;
    infer_common(s, model, Some(version), request).await
}

/// Bodies at least this large are decoded on the blocking pool, so a burst of
/// big JSON bodies cannot stall the async threads that answer everyone else.
const DECODE_OFF_RUNTIME: usize = 256 << 10;

/// JSON and binary requests share one decoder (see [`binary`]). A full queue
/// refuses before the body is read.
async fn infer_common(
    s: AppState,
    model: String,
    version: Option<u64>,
    request: Request,
) -> ApiResult<Response> {
    if let Err(e) = s.service.precheck(&model, version, Protocol::Http) {
        return Ok(super::guard::refuse(request, ApiError(e), s.max_body_bytes).await);
    }
    let headers = request.headers().clone();
    let Body(body) = Body::from_request(request, &()).await?;
    let (request, format) = if body.len() >= DECODE_OFF_RUNTIME {
        let decoder = s.clone();
        tokio::task::spawn_blocking(move || {
            binary::decode_request(&decoder, model, version, &headers, body)
        })
        .await
        .map_err(|e| ApiError(Error::internal(format!("request decoding failed: {e}"))))??
    } else {
        binary::decode_request(&s, model, version, &headers, body)?
    };
    let response = s.service.infer(request, Protocol::Http).await?;
    Ok(binary::encode_response(&response, &format))
}

/// Encodes an inference response as v2 JSON.
pub(crate) fn encode_response(response: &InferResponse) -> Response {
    let outputs: Vec<Value> = response
        .outputs
        .iter()
        .map(|(name, out)| {
            json!({
                "name": name,
                "datatype": out.datatype.as_str(),
                "shape": out.shape,
                "data": serde_json::to_value(DataJson { datatype: out.datatype, data: &out.data })
                    .unwrap_or(Value::Null),
            })
        })
        .collect();
    let mut body = json!({
        "model_name": response.model,
        "model_version": response.version.to_string(),
        "outputs": outputs,
    });
    if let Some(id) = &response.id {
        body["id"] = Value::String(id.clone());
    }
    Json(body).into_response()
}

fn tally(t: &crate::metrics::Tally) -> Value {
    let (count, ns) = t.get();
    json!({"count": count, "ns": ns})
}

fn stats_json(v: &LoadedVersion) -> Value {
    let st = &v.metrics.stats;
    let zero = json!({"count": 0, "ns": 0});
    let batches: Vec<Value> = st
        .batch_sizes()
        .into_iter()
        .map(|(size, count, ns)| {
            json!({
                "batch_size": size,
                "compute_input": zero,
                "compute_infer": {"count": count, "ns": ns},
                "compute_output": zero,
            })
        })
        .collect();
    json!({
        "name": v.model,
        "version": v.version.to_string(),
        "last_inference": st.last_inference_ms.load(Ordering::Relaxed),
        "inference_count": st.inference_count.load(Ordering::Relaxed),
        "execution_count": st.execution_count.load(Ordering::Relaxed),
        "inference_stats": {
            "success": tally(&st.success),
            "fail": tally(&st.fail),
            "queue": tally(&st.queue),
            "compute_input": zero,
            "compute_infer": tally(&st.compute_infer),
            "compute_output": zero,
            "cache_hit": zero,
            "cache_miss": zero,
        },
        "batch_stats": batches,
        "pending_requests": v.scheduler.queue_depth(),
    })
}

fn versions_of(
    s: &AppState,
    model: &str,
    version: Option<u64>,
) -> ApiResult<Vec<Arc<LoadedVersion>>> {
    match version {
        Some(v) => Ok(vec![s.service.resolve(model, Some(v))?]),
        None => {
            let served = s.service.registry().served();
            match served.get(model) {
                Some(m) if !m.versions.is_empty() => Ok(m.versions.values().cloned().collect()),
                _ => Ok(vec![s.service.resolve(model, None)?]),
            }
        }
    }
}

pub(super) async fn model_stats(
    State(s): State<AppState>,
    Path(model): Path<String>,
) -> ApiResult<Json<Value>> {
    let stats: Vec<Value> = versions_of(&s, &model, None)?
        .iter()
        .map(|v| stats_json(v))
        .collect();
    Ok(Json(json!({"model_stats": stats})))
}

pub(super) async fn model_stats_v(
    State(s): State<AppState>,
    Path((model, version)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let version = parse_version(&version)?;
    let stats: Vec<Value> = versions_of(&s, &model, Some(version))?
        .iter()
        .map(|v| stats_json(v))
        .collect();
    Ok(Json(json!({"model_stats": stats})))
}

pub(super) async fn all_stats(State(s): State<AppState>) -> Json<Value> {
    let served = s.service.registry().served();
    let mut names: Vec<&String> = served.keys().collect();
    names.sort();
    let stats: Vec<Value> = names
        .into_iter()
        .flat_map(|n| served[n].versions.values().map(|v| stats_json(v)))
        .collect();
    Json(json!({"model_stats": stats}))
}

pub(super) async fn metrics(State(s): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.service.metrics().render(),
    )
        .into_response()
}
