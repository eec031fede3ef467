//! Triton's model repository and model configuration extensions over REST:
//! `POST /v2/repository/index`, `POST /v2/repository/models/{m}/load|unload`
//! and `GET /v2/models/{m}[/versions/{v}]/config`.

use super::body::Body;
use super::codec::describe::index_json;
use super::error::ApiError;
use super::path::Path;
use super::routes::parse_version;
use super::state::AppState;
use crate::error::Error;
use crate::service::LoadOptions;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Map, Value};

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

/// The `parameters` field of a load or unload body: absent, or an object
/// (the repository extension's type); anything else is a 400.
fn parameters<'a>(body: &'a Map<String, Value>, what: &str) -> ApiResult<&'a Map<String, Value>> {
    static NONE: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);
    match body.get("parameters") {
        None => Ok(&NONE),
        Some(Value::Object(p)) => Ok(p),
        Some(other) => Err(ApiError(Error::invalid(format!(
            "{what}: 'parameters' must be an object {{name: value}}, got {other}"
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
    Ok(Json(index_json(s.service.index(ready)?)))
}

pub(super) async fn load(
    State(s): State<AppState>,
    Path(model): Path<String>,
    Body(body): Body,
) -> ApiResult<StatusCode> {
    let params = object_body(&body, "model load")?;
    let params = parameters(&params, "model load")?;
    let config = match params.get("config") {
        None => None,
        Some(Value::String(text)) => Some(text.clone()),
        // Triton's clients send the JSON as a string; an object is taken
        // as the same configuration.
        Some(object @ Value::Object(_)) => Some(object.to_string()),
        Some(other) => {
            return Err(ApiError(Error::invalid(format!(
                "load parameter 'config' must be a string holding a JSON ModelConfig. Given: {other}"
            ))));
        }
    };
    let files = params
        .keys()
        .filter(|k| k.starts_with("file:"))
        .cloned()
        .collect();
    s.service
        .load(&model, LoadOptions { config, files })
        .await?;
    Ok(StatusCode::OK)
}

pub(super) async fn unload(
    State(s): State<AppState>,
    Path(model): Path<String>,
    Body(body): Body,
) -> ApiResult<StatusCode> {
    let params = object_body(&body, "model unload")?;
    parameters(&params, "model unload")?;
    s.service.unload(&model).await?;
    Ok(StatusCode::OK)
}

pub(super) async fn config(
    State(s): State<AppState>,
    Path(model): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(s.service.model_config(&model, None)?.json()?))
}

pub(super) async fn config_v(
    State(s): State<AppState>,
    Path((model, version)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let version = parse_version(&version)?;
    Ok(Json(s.service.model_config(&model, Some(version))?.json()?))
}
