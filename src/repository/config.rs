//! Sluice's [`ModelConfig`], and its `config.toml` front end: the knobs an
//! operator may set per model.
//!
//! `ModelConfig` is the one description of a model that loading uses;
//! `config.toml` (here) and Triton's `config.pbtxt` ([`super::pbtxt`]) both
//! parse into it, and the graph fills in what neither says. Fields marked
//! "config.pbtxt only" cannot be written in `config.toml` (yet).
//!
//! Every key is documented in `docs/configuration.md`. Unknown keys and bad
//! values are load errors that name the file, the key and the problem.

use super::spec::{
    ConfigSource, Ensemble, Labels, ModelFiles, QueuePolicy, TensorDecl, TimeoutAction, Unsupported,
};
use crate::runtime::{ExecutionProvider, SessionOptions};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// Default `max_batch_size` of a batchable model without a config.
pub(crate) const DEFAULT_MAX_BATCH_SIZE: usize = 32;
/// Default bound of each version's queue, in requests.
pub(crate) const DEFAULT_MAX_QUEUE_SIZE: usize = 1024;

/// The contents of `<repo>/<model>/config.toml`. All keys are optional.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Most rows in one batch; 0 turns batching off. Default: 32 when every
    /// input and output has a dynamic first dim, else 0.
    pub(crate) max_batch_size: Option<usize>,
    /// Instance workers (one ONNX Runtime session each). Default: the core
    /// count on the CPU, 1 per GPU. With `gpus`, this many on each GPU.
    pub(crate) instances: Option<usize>,
    /// GPUs to place instances on, as Triton's `instance_group.gpus`: each
    /// GPU gets `instances` workers, and the GPU providers' `device_id` is
    /// replaced by that GPU. Empty (default): the providers' own device_id.
    #[serde(default)]
    pub(crate) gpus: Vec<u32>,
    /// ONNX Runtime intra-op threads per instance. Default: cores / instances, at least 1.
    pub(crate) intra_op_threads: Option<usize>,
    /// Execution providers in order of preference. Default: the CPU.
    #[serde(default)]
    pub execution_providers: Vec<ExecutionProvider>,
    /// Whether a provider that cannot be registered falls through to the next
    /// one (true) or fails the load with its reason (false, the default).
    #[serde(default)]
    pub(crate) fallback: bool,
    #[serde(default)]
    pub(crate) dynamic_batching: DynamicBatching,
    /// Which versions to serve. Default: the latest one.
    #[serde(default)]
    pub version_policy: VersionPolicy,
    /// Runs made on every instance before a version is published. Default:
    /// one run at batch 1 and one at `max_batch_size`, with zeros, whose
    /// failure is only logged; runs listed here must succeed.
    #[serde(default)]
    pub(crate) warmup: Option<Vec<WarmupRun>>,
    /// Whether identical requests may be answered from the server's
    /// response cache (when `--cache-size-bytes` gives it room).
    #[serde(default)]
    pub(crate) response_cache: bool,
    /// In `--model-control-mode on-demand`: load this model at start and
    /// never evict it (as naming it with `--load-model` does).
    #[serde(default)]
    pub(crate) pinned: bool,
    /// Per-output settings, `[outputs.<name>]`, by output name.
    #[serde(default, rename = "outputs")]
    pub(crate) output_settings: BTreeMap<String, OutputSettings>,

    /// Which front end this came from.
    #[serde(skip)]
    pub(crate) source: ConfigSource,
    /// The model file of each version directory. None: `model.onnx`.
    /// (config.pbtxt only: `default_model_filename`.)
    #[serde(skip)]
    pub(crate) model_filename: Option<String>,
    /// Declared inputs, in the order clients see them; empty: the graph's.
    /// (config.pbtxt only.)
    #[serde(skip)]
    pub(crate) inputs: Vec<TensorDecl>,
    /// Declared outputs; empty: the graph's. When some are declared, only
    /// those are served. (config.pbtxt only.)
    #[serde(skip)]
    pub(crate) outputs: Vec<TensorDecl>,
    /// Whether undeclared parts (tensors, `max_batch_size`) are completed
    /// from the graph. False only for a `config.pbtxt` under strict model
    /// config, where the file must be complete.
    #[serde(skip)]
    pub(crate) complete_from_graph: bool,
    /// ONNX Runtime session settings beyond threads. (config.pbtxt only:
    /// `parameters` and `optimization.graph`.)
    #[serde(skip)]
    pub(crate) session: SessionOptions,
    /// The pipeline, when the model is an ensemble. (config.pbtxt only.)
    #[serde(skip)]
    pub(crate) ensemble: Option<Ensemble>,
    /// Fields Sluice does not support: the model is UNAVAILABLE unless the
    /// server ignores unsupported configuration.
    #[serde(skip)]
    pub(crate) unsupported: Vec<Unsupported>,
    /// Fields accepted without effect in Sluice, with why; logged at load.
    #[serde(skip)]
    pub(crate) notes: Vec<String>,
}

/// One warmup step: `count` runs of `batch_size` rows.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarmupRun {
    /// A name for logs (config.pbtxt's sample name).
    #[serde(skip)]
    pub(crate) name: String,
    #[serde(default = "one")]
    pub(crate) batch_size: usize,
    #[serde(default = "one")]
    pub(crate) count: usize,
    /// Random data instead of zeros.
    #[serde(default)]
    pub(crate) random: bool,
    /// Sizes of the dynamic non-batch dims, per input (default 1 each).
    #[serde(default)]
    pub(crate) dims: BTreeMap<String, Vec<usize>>,
    /// Every input's datatype, shape and data (config.pbtxt's
    /// `model_warmup.inputs`). When set, `random` and `dims` are unused.
    #[serde(skip)]
    pub(crate) inputs: BTreeMap<String, super::spec::WarmupInput>,
}

/// The settings of one output in `config.toml`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSettings {
    /// A file of class labels, one per line, relative to the model
    /// directory: classification results carry them.
    pub(crate) label_filename: Option<String>,
    /// The labels read from `label_filename`.
    #[serde(skip)]
    pub(crate) labels: Option<Labels>,
}

fn one() -> usize {
    1
}

/// The scheduler's knobs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DynamicBatching {
    /// Whether requests are combined into batches. False: each request runs
    /// alone, with its own rows (a config.pbtxt without `dynamic_batching`).
    pub(crate) enabled: bool,
    /// How long (µs) a forming batch may wait for more rows. 0 (default) never waits.
    pub(crate) max_queue_delay_us: u64,
    /// Batch sizes that dispatch at once, even while a delay is set.
    pub(crate) preferred_batch_sizes: Vec<usize>,
    /// Requests queued per version before admission answers 503.
    pub(crate) max_queue_size: usize,
    /// Queue timeout (µs) of a request that sets none; 0 means none.
    pub(crate) default_timeout_us: u64,
    /// Number of priority levels; level 1 is the highest.
    pub(crate) priority_levels: u32,
    /// Level of a request that sets no `priority`.
    pub(crate) default_priority_level: u32,
    /// Whether a request may set a queue timeout shorter than the default
    /// (levels without their own policy).
    pub(crate) allow_timeout_override: bool,
    /// What a queue timeout does (levels without their own policy).
    pub(crate) timeout_action: TimeoutAction,
    /// Whether responses leave in the order requests arrived.
    pub(crate) preserve_ordering: bool,
    /// Requests each level without its own policy may hold; 0: only
    /// `max_queue_size` bounds it.
    pub(crate) level_queue_size: usize,
    /// Levels with their own queue policy. (config.pbtxt only.)
    #[serde(skip)]
    pub(crate) priority_queue_policy: BTreeMap<u32, QueuePolicy>,
}

impl Default for DynamicBatching {
    fn default() -> Self {
        Self {
            enabled: true,
            max_queue_delay_us: 0,
            preferred_batch_sizes: Vec::new(),
            max_queue_size: DEFAULT_MAX_QUEUE_SIZE,
            default_timeout_us: 0,
            priority_levels: 1,
            default_priority_level: 1,
            allow_timeout_override: true,
            timeout_action: TimeoutAction::Reject,
            preserve_ordering: false,
            level_queue_size: 0,
            priority_queue_policy: BTreeMap::new(),
        }
    }
}

impl DynamicBatching {
    /// The queue timeout of a request at `level` that asked for
    /// `requested_us` (0 or None: none): the level's default, which the
    /// request can shorten where the level's policy allows an override.
    pub(crate) fn queue_timeout(&self, level: u32, requested_us: Option<u64>) -> Option<Duration> {
        let policy = self.queue_policy(level);
        let default = (policy.default_timeout_us > 0)
            .then(|| Duration::from_micros(policy.default_timeout_us));
        let requested = requested_us
            .filter(|&us| us > 0 && policy.allow_timeout_override)
            .map(Duration::from_micros);
        match (requested, default) {
            (Some(r), Some(d)) => Some(r.min(d)),
            (r, d) => r.or(d),
        }
    }

    /// The queue policy of `level` (1 is the highest).
    pub(crate) fn queue_policy(&self, level: u32) -> QueuePolicy {
        self.priority_queue_policy
            .get(&level)
            .cloned()
            .unwrap_or(QueuePolicy {
                max_queue_size: self.level_queue_size,
                default_timeout_us: self.default_timeout_us,
                allow_timeout_override: self.allow_timeout_override,
                timeout_action: self.timeout_action,
            })
    }
}

/// Which versions of a model are served.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum VersionPolicy {
    /// The N highest versions.
    Latest(usize),
    /// Every version on disk.
    All,
    /// Exactly these versions.
    Specific(Vec<u64>),
}

impl Default for VersionPolicy {
    fn default() -> Self {
        VersionPolicy::Latest(1)
    }
}

impl VersionPolicy {
    /// The versions to serve out of those on disk (sorted ascending).
    pub fn select(&self, on_disk: &[u64]) -> Vec<u64> {
        match self {
            VersionPolicy::Latest(n) => {
                let skip = on_disk.len().saturating_sub(*n);
                on_disk[skip..].to_vec()
            }
            VersionPolicy::All => on_disk.to_vec(),
            VersionPolicy::Specific(wanted) => on_disk
                .iter()
                .copied()
                .filter(|v| wanted.contains(v))
                .collect(),
        }
    }
}

impl ModelConfig {
    /// The configuration of a model with no file: all from the graph.
    pub(crate) fn from_graph() -> Self {
        Self {
            complete_from_graph: true,
            ..Self::default()
        }
    }

    /// Parses and checks `text`, the contents of the `config.toml` at `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, String> {
        let mut config: ModelConfig = toml::from_str(text)
            .map_err(|e| format!("{}: {}", path.display(), e.to_string().trim_end()))?;
        config.source = ConfigSource::Toml;
        config.complete_from_graph = true;
        let files = ModelFiles {
            dir: path.parent().unwrap_or(Path::new(".")).to_path_buf(),
        };
        for (name, output) in &mut config.output_settings {
            if let Some(file) = &output.label_filename {
                output.labels = Some(
                    Labels::read(file, &files, &format!("outputs.{name}"))
                        .map_err(|e| format!("{}: {e}", path.display()))?,
                );
            }
        }
        config
            .check()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(config)
    }

    /// The class labels of output `name`, from either front end.
    pub(crate) fn labels(&self, name: &str) -> Option<&[String]> {
        self.outputs
            .iter()
            .find(|d| d.name == name)
            .and_then(|d| d.labels.as_ref())
            .or_else(|| {
                self.output_settings
                    .get(name)
                    .and_then(|o| o.labels.as_ref())
            })
            .map(|l| l.labels.as_slice())
    }

    /// Checks values both front ends can set; messages name the field as
    /// `config.toml` spells it.
    pub(crate) fn check(&self) -> Result<(), String> {
        if let Some(n) = self.instances {
            if !(1..=256).contains(&n) {
                return Err(format!("`instances` must be between 1 and 256. Given: {n}"));
            }
        }
        if let Some(n) = self.intra_op_threads {
            if !(1..=1024).contains(&n) {
                return Err(format!(
                    "`intra_op_threads` must be between 1 and 1024. Given: {n}"
                ));
            }
        }
        if let Some(n) = self.max_batch_size {
            if n > 1 << 20 {
                return Err(format!(
                    "`max_batch_size` must be ≤ {}. Given: {n}",
                    1 << 20
                ));
            }
        }
        let b = &self.dynamic_batching;
        if b.max_queue_size == 0 {
            return Err("`dynamic_batching.max_queue_size` must be ≥ 1. Given: 0".into());
        }
        if b.priority_levels == 0 {
            return Err("`dynamic_batching.priority_levels` must be ≥ 1. Given: 0".into());
        }
        if !(1..=b.priority_levels).contains(&b.default_priority_level) {
            return Err(format!(
                "`dynamic_batching.default_priority_level` must be between 1 and priority_levels ({}). Given: {}",
                b.priority_levels, b.default_priority_level
            ));
        }
        if let Some(level) = b
            .priority_queue_policy
            .keys()
            .find(|l| !(1..=b.priority_levels).contains(*l))
        {
            return Err(format!(
                "`dynamic_batching.priority_queue_policy` levels must be between 1 and priority_levels ({}). Given: {level}",
                b.priority_levels
            ));
        }
        if let Some(&bad) = b.preferred_batch_sizes.iter().find(|&&s| s == 0) {
            return Err(format!(
                "`dynamic_batching.preferred_batch_sizes` entries must be ≥ 1. Given: {bad}"
            ));
        }
        if let (Some(max), Some(&big)) = (self.max_batch_size, b.preferred_batch_sizes.iter().max())
        {
            if big > max.max(1) {
                return Err(format!(
                    "`dynamic_batching.preferred_batch_sizes` entries must be ≤ max_batch_size ({max}). Given: {big}"
                ));
            }
        }
        match &self.version_policy {
            VersionPolicy::Latest(0) => {
                return Err("`version_policy.latest` must be ≥ 1. Given: 0".into());
            }
            VersionPolicy::Specific(v) if v.is_empty() || v.contains(&0) => {
                return Err(format!(
                    "`version_policy.specific` must list positive versions. Given: {v:?}"
                ));
            }
            _ => {}
        }
        for run in self.warmup.iter().flatten() {
            if run.batch_size == 0 || run.count == 0 || run.count > 1000 {
                return Err(format!(
                    "`warmup` runs need batch_size ≥ 1 and count between 1 and 1000. Given: batch_size {}, count {}",
                    run.batch_size, run.count
                ));
            }
        }
        if !self.gpus.is_empty() && !self.execution_providers.iter().any(|p| p.is_gpu()) {
            return Err(format!(
                "`gpus` = {:?} needs a cuda or tensorrt entry in `execution_providers`",
                self.gpus
            ));
        }
        let cpu_count = self
            .execution_providers
            .iter()
            .filter(|p| !p.is_gpu())
            .count();
        if cpu_count > 1 {
            return Err("`execution_providers` lists cpu more than once".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
