//! `GET/POST /v2/logging`: Triton's logging extension (see [`crate::logging`]).

use super::body::Body;
use super::error::ApiError;
use super::state::AppState;
use crate::error::Error;
use crate::logging::Value as Setting;
use axum::Json;
use axum::extract::State;
use serde_json::Value;
use std::collections::BTreeMap;

fn to_json(settings: BTreeMap<String, Setting>) -> Json<Value> {
    let map = settings
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                Setting::Bool(b) => Value::Bool(b),
                Setting::Uint(u) => Value::from(u),
                Setting::String(s) => Value::String(s),
            };
            (k, v)
        })
        .collect();
    Json(Value::Object(map))
}

pub(super) async fn get(State(s): State<AppState>) -> Json<Value> {
    to_json(s.logging.get())
}

pub(super) async fn update(
    State(s): State<AppState>,
    Body(body): Body,
) -> Result<Json<Value>, ApiError> {
    let parsed: serde_json::Map<String, Value> = serde_json::from_slice(&body).map_err(|e| {
        Error::invalid(format!(
            "log settings must be a JSON object of setting names to values: {e}"
        ))
    })?;
    let mut changes = BTreeMap::new();
    for (key, value) in parsed {
        let setting = match &value {
            Value::Bool(b) => Setting::Bool(*b),
            Value::String(s) => Setting::String(s.clone()),
            Value::Number(n) => match n.as_u64().and_then(|n| u32::try_from(n).ok()) {
                Some(n) => Setting::Uint(n),
                None => {
                    return Err(ApiError(Error::invalid(format!(
                        "log setting '{key}' must be a boolean, a string or an integer in 0..=4294967295, got {n}"
                    ))));
                }
            },
            other => {
                return Err(ApiError(Error::invalid(format!(
                    "log setting '{key}' must be a boolean, a string or an integer, got {other}"
                ))));
            }
        };
        changes.insert(key, setting);
    }
    Ok(to_json(s.logging.update(changes)?))
}
