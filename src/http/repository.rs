//! Triton's model repository and model configuration extensions over REST:
//! `POST /v2/repository/index`, `POST /v2/repository/models/{m}/load|unload`
//! and `GET /v2/models/{m}[/versions/{v}]/config`.

use super::AppState;
use super::error::{ApiError, Body};
use super::routes::parse_version;
use crate::error::Error;
use crate::repository::config::VersionPolicy;
use crate::service::{ConfigTensor, ModelConfigView, Service};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Map, Value, json};

type ApiResult<T> = Result<T, ApiError>;

/// Parses an optional JSON object body (empty means `{}`).
fn object_body(body: &[u8], what: &str) -> ApiResult<Map<String, Value>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(ApiError(Error::invalid(format!(
            "{what} body must be a JSON object, got {other}"
        )))),
        Err(e) => Err(ApiError(Error::invalid(format!(
            "malformed {what} JSON: {e}"
        )))),
    }
}

pub(super) async fn index(State(s): State<AppState>, Body(body): Body) -> ApiResult<Json<Value>> {
    let params = object_body(&body, "repository index")?;
    let ready = match params.get("ready") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(ApiError(Error::invalid(format!(
                "'ready' must be true or false, got {other}"
            ))));
        }
    };
    let rows: Vec<Value> = s
        .service
        .repository_index(ready)?
        .into_iter()
        .map(|r| {
            let mut v = json!({"name": r.name, "state": r.state, "reason": r.reason});
            if let Some(version) = r.version {
                v["version"] = Value::String(version.to_string());
            }
            v
        })
        .collect();
    Ok(Json(Value::Array(rows)))
}

pub(super) async fn load(
    State(s): State<AppState>,
    Path(model): Path<String>,
    Body(body): Body,
) -> ApiResult<StatusCode> {
    Service::check_model_name(&model)?;
    let params = object_body(&body, "model load")?;
    if let Some(Value::Object(p)) = params.get("parameters") {
        if let Some(key) = p.keys().find(|k| *k == "config" || k.starts_with("file:")) {
            return Err(ApiError(Error::invalid(format!(
                "load parameter '{key}' is not supported: models load from the repository on disk"
            ))));
        }
    }
    s.service.load_model(&model).await?;
    Ok(StatusCode::OK)
}

pub(super) async fn unload(
    State(s): State<AppState>,
    Path(model): Path<String>,
    Body(body): Body,
) -> ApiResult<StatusCode> {
    Service::check_model_name(&model)?;
    object_body(&body, "model unload")?;
    s.service.unload_model(&model).await?;
    Ok(StatusCode::OK)
}

pub(super) async fn config(
    State(s): State<AppState>,
    Path(model): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(config_json(&s.service.model_config(&model, None)?)))
}

pub(super) async fn config_v(
    State(s): State<AppState>,
    Path((model, version)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    Service::check_model_name(&model)?;
    let version = parse_version(&version)?;
    Ok(Json(config_json(
        &s.service.model_config(&model, Some(version))?,
    )))
}

/// Triton's JSON model configuration.
pub fn config_json(c: &ModelConfigView) -> Value {
    let tensors = |ts: &[ConfigTensor]| -> Vec<Value> {
        ts.iter()
            .map(|t| {
                json!({
                    "name": t.name,
                    "data_type": config_datatype(t.datatype),
                    "dims": t.dims,
                })
            })
            .collect()
    };
    let b = &c.dynamic_batching;
    let policy = match &c.version_policy {
        VersionPolicy::Latest(n) => json!({"latest": {"num_versions": n}}),
        VersionPolicy::All => json!({"all": {}}),
        VersionPolicy::Specific(v) => json!({"specific": {"versions": v}}),
    };
    let (kind, gpus) = if c.gpu {
        ("KIND_GPU", vec![c.device_id])
    } else {
        ("KIND_CPU", vec![])
    };
    let mut config = json!({
        "name": c.name,
        "platform": "onnxruntime_onnx",
        "backend": "onnxruntime",
        "version_policy": policy,
        "max_batch_size": c.max_batch_size,
        "input": tensors(&c.inputs),
        "output": tensors(&c.outputs),
        "instance_group": [{
            "name": format!("{}_0", c.name),
            "count": c.instances,
            "kind": kind,
            "gpus": gpus,
        }],
        "default_model_filename": "model.onnx",
    });
    if c.max_batch_size > 0 {
        config["dynamic_batching"] = json!({
            "preferred_batch_size": b.preferred_batch_sizes,
            "max_queue_delay_microseconds": b.max_queue_delay_us,
            "preserve_ordering": false,
            "priority_levels": b.priority_levels,
            "default_priority_level": b.default_priority_level,
            "default_queue_policy": {
                "timeout_action": "REJECT",
                "default_timeout_microseconds": b.default_timeout_us,
                "allow_timeout_override": true,
                "max_queue_size": b.max_queue_size,
            },
        });
    }
    config
}

/// Triton's config name of a datatype (`TYPE_FP32`; BYTES is `TYPE_STRING`).
pub fn config_datatype(dt: crate::tensor::DataType) -> &'static str {
    use crate::tensor::DataType as D;
    match dt {
        D::Bool => "TYPE_BOOL",
        D::Uint8 => "TYPE_UINT8",
        D::Uint16 => "TYPE_UINT16",
        D::Uint32 => "TYPE_UINT32",
        D::Uint64 => "TYPE_UINT64",
        D::Int8 => "TYPE_INT8",
        D::Int16 => "TYPE_INT16",
        D::Int32 => "TYPE_INT32",
        D::Int64 => "TYPE_INT64",
        D::Fp16 => "TYPE_FP16",
        D::Fp32 => "TYPE_FP32",
        D::Fp64 => "TYPE_FP64",
        D::Bf16 => "TYPE_BF16",
        D::Bytes => "TYPE_STRING",
    }
}
