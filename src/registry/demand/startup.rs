//! On-demand mode over the server's life: the start-up listing and the
//! pinned loads, and the sweeper of idle versions.

use super::super::Registry;
use super::locked;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The start-up of on-demand mode: every model of the repository is listed
/// UNLOADED, and the pinned ones are loaded: `--load-model`'s, those whose
/// config.toml says `pinned = true`, and every ensemble with the models
/// its steps run (a step does not load its model on demand). Returns the
/// models that failed, with why.
pub(crate) async fn start(registry: &Arc<Registry>) -> Vec<String> {
    // Remote repositories are listed (every model gets its directory in the
    // cache) and only the pinned models are downloaded: the rest are
    // downloaded by their first request.
    let named = registry.demand.settings.pinned.clone();
    registry
        .sync(&|m: &str| named.iter().any(|p| p == m), true)
        .await;
    let names = registry.discover().unwrap_or_else(|e| {
        tracing::error!(error = %e, "cannot list the models for on-demand loading");
        Vec::new()
    });
    let mut pinned: Vec<String> = registry.demand.settings.pinned.clone();
    // Ensembles, and the ensembles with the models their steps run.
    let (mut ensembles, mut with_steps): (Vec<String>, Vec<String>) = Default::default();
    for name in &names {
        registry.list_unloaded(name);
        let Some(dir) = registry.repos.model_dir(name) else {
            continue; // in two repositories: its first request reports why
        };
        let strict = registry.defaults.strict_model_config;
        let Ok(config) = crate::repository::load_config(&dir, name, strict) else {
            continue; // its first request reports why
        };
        let mut wanted = Vec::new();
        if config.pinned {
            wanted.push(name.clone());
        }
        if let Some(ensemble) = &config.ensemble {
            ensembles.push(name.clone());
            wanted.push(name.clone());
            wanted.extend(ensemble.steps.iter().map(|s| s.model_name.clone()));
            with_steps.extend(wanted.iter().cloned());
        }
        for model in wanted {
            if !pinned.contains(&model) {
                pinned.push(model);
            }
        }
    }
    // Ensembles last, after the models their steps run.
    pinned.sort_by_key(|m| ensembles.contains(m));
    *locked(&registry.demand.ensemble_pinned) = with_steps;
    let mut failed = Vec::new();
    for name in &pinned {
        if !names.contains(name) {
            registry.record_missing(name);
            failed.push(format!("model '{name}' is not in the model repository"));
            continue;
        }
        if let Err(e) = registry.load_internal(name).await {
            failed.push(e.to_string());
        }
    }
    tracing::info!(
        models = names.len(),
        pinned = pinned.len(),
        failed = failed.len(),
        budget_bytes = registry.demand.settings.budget.unwrap_or(0),
        "model repository listed for on-demand loading"
    );
    failed
}

/// Sweeps idle versions and refreshes the gauges every second (or a
/// quarter of the idle timeout, if shorter) until `stop` turns true.
pub(crate) fn spawn_sweeper(registry: Arc<Registry>, mut stop: watch::Receiver<bool>) {
    if !registry.on_demand() {
        return;
    }
    let every = registry
        .demand
        .settings
        .idle_unload
        .map_or(Duration::from_secs(1), |idle| {
            (idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
        });
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.wait_for(|&s| s) => return,
            }
            registry.sweep_idle().await;
        }
    });
}
