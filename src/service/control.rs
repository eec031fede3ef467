//! Changing and listing the model set: Triton's repository extension
//! (index, load, unload), the same for every protocol.

use super::types::{IndexRow, LoadOptions};
use crate::error::{Error, Result};
use crate::registry::{ModelState, Registry};
use std::sync::Arc;

/// Rejects model names that could address anything outside the repository.
pub(super) fn check_model_name(name: &str) -> Result<()> {
    if crate::repository::valid_model_name(name) {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "model name '{name}' is not valid: use letters, digits, '_', '-' and '.', without path separators or a leading '.'"
        )))
    }
}

/// Every model of the repository: those the registry knows (loaded,
/// failed, unloaded) and those on disk that were never loaded. With
/// `ready_only`, only versions that serve.
pub(super) fn index(registry: &Registry, ready_only: bool) -> Result<Vec<IndexRow>> {
    let mut rows: Vec<IndexRow> = registry
        .index()
        .into_iter()
        .map(|e| IndexRow {
            state: e.state.state().as_str(),
            reason: e.state.reason().to_string(),
            name: e.name,
            version: e.version,
            last_used_ms: e.last_used_ms,
            memory_bytes: e.memory_bytes,
        })
        .collect();
    for name in registry.discover().map_err(Error::internal)? {
        if !rows.iter().any(|r| r.name == name) {
            rows.push(IndexRow {
                name,
                version: None,
                state: ModelState::Unavailable.as_str(),
                reason: "not loaded".into(),
                last_used_ms: None,
                memory_bytes: None,
            });
        }
    }
    rows.sort_by(|a, b| (&a.name, a.version).cmp(&(&b.name, b.version)));
    if ready_only {
        rows.retain(|r| r.state == ModelState::Ready.as_str());
    }
    Ok(rows)
}

/// Loads (or reloads from the repository) one model, with Triton's
/// `config` override when the call gives one. Triton's `file:` overrides
/// (model files in the request) are refused: files come from the repository.
pub(super) async fn load(registry: &Arc<Registry>, name: &str, options: LoadOptions) -> Result<()> {
    check_model_name(name)?;
    if let Some(key) = options.files.first() {
        return Err(Error::invalid(format!(
            "load parameter '{key}' is not supported: model files load from the repository, not from the request"
        )));
    }
    if let Some(text) = &options.config {
        if text.len() > MAX_CONFIG_BYTES {
            return Err(Error::invalid(format!(
                "load parameter 'config' must be at most {MAX_CONFIG_BYTES} bytes of JSON. Given: {} bytes",
                text.len()
            )));
        }
    }
    registry.load(name, options.config).await
}

/// Largest `config` a load call may give.
const MAX_CONFIG_BYTES: usize = 1 << 20;

/// Stops serving one model; in-flight requests complete.
pub(super) async fn unload(registry: &Registry, name: &str) -> Result<()> {
    check_model_name(name)?;
    registry.unload(name).await
}
