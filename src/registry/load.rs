//! Loading one model's versions from disk into running schedulers.

use super::Registry;
use super::settings::Defaults;
use super::signature::{self, Mapped};
use crate::metrics::VersionMetrics;
use crate::repository::spec::TimeoutAction;
use crate::repository::{self, Fingerprint, ModelConfig, config::DEFAULT_MAX_BATCH_SIZE};
use crate::runtime::{self, Placement, ProviderOptions};
use crate::scheduler::{
    BatchKey, BatchPolicy, Executor, ExecutorFactory, LevelPolicy, Scheduler, SchedulerConfig,
};
use crate::tensor::ModelSignature;
use crate::tensor::fmt_shape;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A version that is loaded and serving (or draining after a swap).
#[derive(Debug)]
pub struct LoadedVersion {
    pub(crate) model: String,
    pub(crate) version: u64,
    /// What clients send and receive: the graph's signature as the config
    /// declares it (`registry::signature`).
    pub(crate) signature: ModelSignature,
    /// 0 when the model does not batch.
    pub(crate) max_batch_size: usize,
    pub(crate) instances: usize,
    pub(crate) placement: Placement,
    pub(crate) config: ModelConfig,
    pub(crate) scheduler: Scheduler,
    pub(crate) metrics: Arc<VersionMetrics>,
    /// Hashes of (model file, configuration files) this version was loaded from.
    pub(crate) fingerprint: (u64, u64),
    /// Unique in the process, never reused: a reload of the same version
    /// number gets a new one, so the response cache never answers with a
    /// predecessor's outputs.
    pub(crate) uid: u64,
    /// When it last served and what it costs, for on-demand eviction.
    pub(crate) usage: super::Usage,
    /// The batch key of the first request validated: requests with the same
    /// key (nearly all of them, in most traffic) share it instead of
    /// allocating their own (`service::validate`).
    pub(crate) common_key: std::sync::OnceLock<Arc<BatchKey>>,
}

/// The next [`LoadedVersion::uid`].
fn next_uid() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl LoadedVersion {
    /// Stops admitting; queued work drains.
    pub(crate) fn close(&self) {
        self.scheduler.close();
    }

    /// The queue timeout of a request at `priority` that asked for
    /// `requested_us` (0 or None: none): its level's default, which the
    /// request can shorten where the level's policy allows an override.
    pub(crate) fn queue_timeout(
        &self,
        priority: usize,
        requested_us: Option<u64>,
    ) -> Option<Duration> {
        let level = u32::try_from(priority).unwrap_or(u32::MAX);
        self.config
            .dynamic_batching
            .queue_timeout(level, requested_us)
    }
}

/// Why a load failed, and which version (None: the whole model).
#[derive(Debug)]
pub(super) struct LoadFailure {
    pub(crate) version: Option<u64>,
    pub(crate) reason: String,
    /// What was on disk when the load was tried (None if unreadable).
    pub(crate) fingerprint: Option<Fingerprint>,
}

/// The result of a successful load: the versions to publish.
#[derive(Debug)]
pub(super) struct Loaded {
    pub(crate) versions: BTreeMap<u64, Arc<LoadedVersion>>,
    pub(crate) fingerprint: Fingerprint,
    /// Versions that were loaded anew (the rest were unchanged and kept).
    pub(crate) fresh: Vec<u64>,
    /// An ensemble's versions (then `versions` is empty).
    pub(crate) ensemble: Option<super::EnsembleVersions>,
}

fn model_failure(reason: String) -> LoadFailure {
    LoadFailure {
        version: None,
        reason,
        fingerprint: None,
    }
}

impl Registry {
    /// Loads what the model directory holds now. Versions whose model file
    /// and config are unchanged keep their running instance; others are
    /// loaded and warmed anew. Nothing is published here.
    pub(super) fn load_blocking(&self, name: &str) -> Result<Loaded, LoadFailure> {
        let model_dir = self
            .repos
            .read_model(name)
            .map_err(|e| model_failure(format!("cannot read model '{name}': {e}")))?;
        let dir = model_dir.path.clone();
        let fingerprint = model_dir
            .fingerprint()
            .map_err(|e| model_failure(format!("cannot read {}: {e}", dir.display())))?;
        let failure = |reason: String| LoadFailure {
            version: None,
            reason,
            fingerprint: Some(fingerprint.clone()),
        };
        let strict = self.defaults.strict_model_config;
        let overridden = self.config_override(name);
        let config = match &overridden {
            None => repository::load_config(&dir, name, strict),
            Some(text) => {
                let context = repository::pbtxt::Context {
                    dir: &dir,
                    name,
                    strict,
                };
                repository::pbtxt::parse_json(text, &context)
                    .map_err(|e| format!("the load call's 'config' parameter: {e}"))
            }
        }
        .map_err(failure)?;
        // A version is reused only when its configuration is the same: an
        // override counts as part of it.
        let config_key = overridden.as_deref().map_or(fingerprint.config, |text| {
            fingerprint.config ^ xxhash_rust::xxh3::xxh3_64(text.as_bytes())
        });
        self.admit(name, &config).map_err(failure)?;
        if config.ensemble.is_some() {
            let ensemble = self
                .load_ensemble(name, &config, &model_dir, fingerprint.config)
                .map_err(failure)?;
            return Ok(Loaded {
                versions: BTreeMap::new(),
                fingerprint,
                fresh: Vec::new(),
                ensemble: Some(ensemble),
            });
        }
        let current = self.served.load().get(name).cloned();
        let mut versions = BTreeMap::new();
        let mut fresh = Vec::new();
        for version in config.version_policy.select(&model_dir.versions) {
            let key = (
                fingerprint.versions.get(&version).copied().unwrap_or(0),
                config_key,
            );
            if let Some(existing) = current.as_ref().and_then(|m| m.versions.get(&version)) {
                if existing.fingerprint == key {
                    versions.insert(version, existing.clone());
                    continue;
                }
            }
            self.metrics
                .set_state(name, version, super::state::ModelState::Loading);
            let path = model_dir.version_path(version);
            let lv = load_version(name, version, path, &config, &self.defaults, self, key)
                .map_err(|reason| LoadFailure {
                    version: Some(version),
                    reason,
                    fingerprint: Some(fingerprint.clone()),
                })?;
            versions.insert(version, Arc::new(lv));
            fresh.push(version);
        }
        // A reload that finds nothing to serve (the model file deleted, turned
        // into a directory or a dangling link, the version directory gone)
        // must not unload what serves: that would turn a broken or half-done
        // edit of the repository into failed requests. It fails like any
        // other load and the serving versions stay. (Removing the whole model
        // directory, or the unload API, is how a model stops serving.)
        let serving = current.as_ref().is_some_and(|m| !m.versions.is_empty());
        if versions.is_empty() && serving {
            return Err(LoadFailure {
                version: None,
                reason: format!(
                    "no version to serve in {}: no version directory with a {} that the version policy selects; the versions being served are kept",
                    dir.display(),
                    model_dir.model_file
                ),
                fingerprint: Some(fingerprint),
            });
        }
        Ok(Loaded {
            versions,
            fingerprint,
            fresh,
            ensemble: None,
        })
    }

    /// Decides on what the configuration does not support: by default the
    /// model is refused with every such field named; with
    /// `ignore_unsupported_config` each is logged and the model loads
    /// without it. Fields without effect are logged either way.
    fn admit(&self, name: &str, config: &ModelConfig) -> Result<(), String> {
        for note in &config.notes {
            tracing::info!(model = name, %note, "configuration field without effect");
        }
        if config.unsupported.is_empty() {
            return Ok(());
        }
        if self.defaults.ignore_unsupported_config {
            for field in &config.unsupported {
                tracing::warn!(model = name, %field, "ignoring an unsupported configuration field (ignore_unsupported_config)");
            }
            return Ok(());
        }
        let fields: Vec<String> = config.unsupported.iter().map(ToString::to_string).collect();
        Err(format!(
            "{}: {}; the model is not loaded (start the server with --ignore-unsupported-config to load it without these fields)",
            repository::pbtxt::FILE_NAME,
            fields.join("; ")
        ))
    }
}

fn load_version(
    name: &str,
    version: u64,
    path: PathBuf,
    config: &ModelConfig,
    defaults: &Defaults,
    registry: &Registry,
    fingerprint: (u64, u64),
) -> Result<LoadedVersion, String> {
    let gpu = config
        .execution_providers
        .first()
        .is_some_and(|p| p.is_gpu());
    let per_device = config
        .instances
        .unwrap_or(if gpu { 1 } else { defaults.cores.max(1) });
    let instances = per_device * config.gpus.len().max(1);
    let intra_op_threads = config
        .intra_op_threads
        .unwrap_or((defaults.cores / instances).max(1));
    let options = ProviderOptions {
        providers: config.execution_providers.clone(),
        fallback: config.fallback,
        intra_threads: intra_op_threads,
        session: config.session.clone(),
    };

    // Worker i runs on gpus[i / per_device] when `gpus` is set.
    let device_options = {
        let (options, gpus) = (options.clone(), config.gpus.clone());
        move |i: usize| match gpus.get(i / per_device.max(1)) {
            Some(&device) => options.on_device(device),
            None => options.clone(),
        }
    };
    let (first, placement) = runtime::load_instance(&path, &device_options(0), None, 0)
        .map_err(|e| format!("cannot load {}: {e}", path.display()))?;
    let graph = first.signature()?;
    let batchable = graph.batchable();
    let max_batch_size = match config.max_batch_size {
        Some(n) if n > 0 && !batchable => {
            let fixed = graph
                .inputs
                .iter()
                .chain(&graph.outputs)
                .find(|t| t.shape.first() != Some(&-1))
                .map(|t| format!("'{}' has shape {}", t.name, fmt_shape(&t.shape)))
                .unwrap_or_default();
            return Err(format!(
                "max_batch_size = {n} needs every input and output to have a dynamic first dimension, but {fixed}"
            ));
        }
        Some(n) => n,
        None if batchable && config.complete_from_graph => DEFAULT_MAX_BATCH_SIZE,
        None => 0,
    };
    let served = signature::served(&graph, config, max_batch_size)?;
    let signature = served.signature;
    if let Some(name) = config
        .output_settings
        .keys()
        .find(|n| !signature.outputs.iter().any(|o| &o.name == *n))
    {
        let known: Vec<&str> = signature.outputs.iter().map(|o| o.name.as_str()).collect();
        return Err(format!(
            "config.toml `[outputs.{name}]`: the model has no output '{name}'; its outputs: {}",
            known.join(", ")
        ));
    }
    let mapping = served.mapping;
    let wrap = move |executor: Box<dyn Executor>| -> Box<dyn Executor> {
        match &mapping {
            Some(mapping) => Box::new(Mapped {
                inner: executor,
                mapping: mapping.clone(),
            }),
            None => executor,
        }
    };

    let factory: ExecutorFactory = {
        let (path, graph, wrap) = (path.clone(), graph.clone(), wrap.clone());
        Arc::new(move |i| {
            runtime::load_instance(&path, &device_options(i), Some(&graph), max_batch_size)
                .map(|(instance, _)| wrap(Box::new(instance)))
        })
    };
    // Sessions are built one at a time: concurrent builds have crashed
    // TensorRT inside ONNX Runtime.
    let mut executors: Vec<Box<dyn Executor>> = vec![wrap(Box::new(first))];
    for i in 1..instances {
        executors.push(factory(i)?);
    }
    super::warmup::warm(
        &mut executors,
        &signature,
        max_batch_size,
        config.warmup.as_deref(),
    )?;

    let metrics = Arc::new(registry.metrics.version(name, version));
    let batching = &config.dynamic_batching;
    let mut preferred = batching.preferred_batch_sizes.clone();
    preferred.sort_unstable();
    let levels = (1..=batching.priority_levels)
        .map(|level| {
            let policy = batching.queue_policy(level);
            LevelPolicy {
                max_queue_size: policy.max_queue_size,
                delay_on_timeout: policy.timeout_action == TimeoutAction::Delay,
            }
        })
        .collect();
    let scheduler = Scheduler::start(
        SchedulerConfig {
            name: format!("{name}/{version}"),
            policy: BatchPolicy {
                // Without dynamic batching each request runs alone (with
                // its own rows); requests are still checked against
                // `max_batch_size` by the service.
                max_batch_size: if batching.enabled { max_batch_size } else { 0 },
                max_queue_delay: Duration::from_micros(batching.max_queue_delay_us),
                preferred_batch_sizes: preferred,
            },
            max_queue_size: batching.max_queue_size,
            priority_levels: batching.priority_levels as usize,
            instances,
            levels,
            preserve_ordering: batching.preserve_ordering,
            // Only sessions on the CPU run inline: a GPU session is only
            // ever run from its own worker thread, the way it was proven.
            inline_run_limit: if placement.provider == "cpu" {
                defaults.inline_run_limit
            } else {
                Duration::ZERO
            },
        },
        executors,
        factory,
        metrics.clone(),
    )?;
    Ok(LoadedVersion {
        model: name.to_string(),
        version,
        signature,
        max_batch_size,
        instances,
        placement,
        config: config.clone(),
        scheduler,
        metrics,
        fingerprint,
        uid: next_uid(),
        usage: super::Usage::new(std::fs::metadata(&path).map_or(0, |m| m.len())),
        common_key: std::sync::OnceLock::new(),
    })
}
