//! The registry over a server's life: the start-up load and the polling
//! loop of `--model-control-mode poll`.

use super::Registry;
use super::settings::ControlMode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Loads every model of the repository (in explicit mode with a list,
/// those named by `load_models`), each in its own failure domain.
pub async fn load_at_start(registry: &Arc<Registry>, mode: ControlMode, load_models: &[String]) {
    let explicit = mode == ControlMode::Explicit
        && !load_models.is_empty()
        && !load_models.iter().any(|m| m == "*");
    let discovered = if explicit {
        Ok(load_models.to_vec())
    } else {
        registry.discover()
    };
    let names = match discovered {
        Ok(names) => names,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the model repository");
            return;
        }
    };
    let started = Instant::now();
    let mut ok = 0;
    for name in &names {
        if registry.load_internal(name).await.is_ok() {
            ok += 1;
        }
    }
    tracing::info!(
        loaded = ok,
        failed = names.len() - ok,
        took_ms = started.elapsed().as_millis() as u64,
        "model repository loaded"
    );
}

/// Rescans the repository every `interval` until `stop` turns true (see
/// [`Registry::poll_once`]). A scan that fails keeps what is served.
pub fn spawn_polling(registry: Arc<Registry>, interval: Duration, mut stop: watch::Receiver<bool>) {
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
