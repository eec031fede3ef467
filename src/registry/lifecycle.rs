//! The registry over a server's life: the start-up load and the polling
//! loop of `--model-control-mode poll`.

use super::Registry;
use super::settings::ControlMode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Loads every model of the repositories (in explicit mode with a list,
/// those named by `load_models`), each in its own failure domain. Returns
/// the models that failed, with why.
pub(crate) async fn load_at_start(
    registry: &Arc<Registry>,
    mode: ControlMode,
    load_models: &[String],
) -> Vec<String> {
    if mode == ControlMode::OnDemand {
        return super::demand::start(registry).await;
    }
    let explicit = mode == ControlMode::Explicit
        && !load_models.is_empty()
        && !load_models.iter().any(|m| m == "*");
    // Remote repositories are downloaded first (only the named models, in
    // explicit mode with a list); one that cannot be listed is logged and
    // its models, if a previous run cached them, load from the cache.
    let wanted = |name: &str| !explicit || load_models.iter().any(|m| m == name);
    registry.sync(&wanted, true).await;
    let names = if explicit {
        load_models.to_vec()
    } else {
        // Readable at start (`Repositories::new`); gone since: nothing to load.
        registry.discover().unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot list the models to load");
            Vec::new()
        })
    };
    let started = Instant::now();
    let mut failed = Vec::new();
    for name in &names {
        match registry.load_internal(name).await {
            Ok(()) => {}
            Err(crate::error::Error::NotFound(why)) => {
                tracing::error!(model = %name, "{why}");
                registry.record_missing(name);
                failed.push((name, why));
            }
            Err(e) => failed.push((name, e.to_string())),
        }
    }
    // An ensemble loaded before its composing models answers its own load
    // with an error; it failed only if it still cannot serve now that
    // every model has been tried.
    failed.retain(|(name, _)| !matches!(registry.ensemble(name, None), Some(Ok(_))));
    tracing::info!(
        loaded = names.len() - failed.len(),
        failed = failed.len(),
        took_ms = started.elapsed().as_millis() as u64,
        "model repository loaded"
    );
    failed.into_iter().map(|(_, why)| why).collect()
}

/// Rescans the repository every `interval` until `stop` turns true (see
/// [`Registry::poll_once`]). A scan that fails keeps what is served.
pub(crate) fn spawn_polling(
    registry: Arc<Registry>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    if interval.is_zero() {
        return;
    }
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            let stopping = tokio::select! {
                _ = ticker.tick() => false,
                _ = stop.wait_for(|&s| s) => true,
            };
            if stopping {
                return;
            }
            registry.poll_once().await;
        }
    });
}
