//! A model's optional `config.toml`: the knobs an operator may set per model.
//!
//! Every key is documented in `docs/configuration.md`. Unknown keys and bad
//! values are load errors that name the file, the key and the problem.

use crate::runtime::ExecutionProvider;
use serde::Deserialize;
use std::path::Path;

/// Default `max_batch_size` of a batchable model without a config.
pub const DEFAULT_MAX_BATCH_SIZE: usize = 32;
/// Default bound of each version's queue, in requests.
pub const DEFAULT_MAX_QUEUE_SIZE: usize = 1024;

/// The contents of `<repo>/<model>/config.toml`. All keys are optional.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Most rows in one batch; 0 turns batching off. Default: 32 when every
    /// input and output has a dynamic first dim, else 0.
    pub max_batch_size: Option<usize>,
    /// Instance workers (one ONNX Runtime session each). Default: the core
    /// count on the CPU, 1 per GPU. With `gpus`, this many on each GPU.
    pub instances: Option<usize>,
    /// GPUs to place instances on, as Triton's `instance_group.gpus`: each
    /// GPU gets `instances` workers, and the GPU providers' `device_id` is
    /// replaced by that GPU. Empty (default): the providers' own device_id.
    #[serde(default)]
    pub gpus: Vec<u32>,
    /// ONNX Runtime intra-op threads per instance. Default: cores / instances, at least 1.
    pub intra_op_threads: Option<usize>,
    /// Execution providers in order of preference. Default: the CPU.
    #[serde(default)]
    pub execution_providers: Vec<ExecutionProvider>,
    /// Whether a provider that cannot be registered falls through to the next
    /// one (true) or fails the load with its reason (false, the default).
    #[serde(default)]
    pub fallback: bool,
    #[serde(default)]
    pub dynamic_batching: DynamicBatching,
    /// Which versions to serve. Default: the latest one.
    #[serde(default)]
    pub version_policy: VersionPolicy,
    /// Runs made on every instance before a version is published. Default:
    /// one run at batch 1 and one at `max_batch_size`, with zeros, whose
    /// failure is only logged; runs listed here must succeed.
    #[serde(default)]
    pub warmup: Option<Vec<WarmupRun>>,
}

/// One warmup step: `count` runs of `batch_size` rows.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarmupRun {
    #[serde(default = "one")]
    pub batch_size: usize,
    #[serde(default = "one")]
    pub count: usize,
    /// Random data instead of zeros.
    #[serde(default)]
    pub random: bool,
    /// Sizes of the dynamic non-batch dims, per input (default 1 each).
    #[serde(default)]
    pub dims: std::collections::BTreeMap<String, Vec<usize>>,
}

fn one() -> usize {
    1
}

/// The scheduler's knobs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DynamicBatching {
    /// How long (µs) a forming batch may wait for more rows. 0 (default) never waits.
    pub max_queue_delay_us: u64,
    /// Batch sizes that dispatch at once, even while a delay is set.
    pub preferred_batch_sizes: Vec<usize>,
    /// Requests queued per version before admission answers 503.
    pub max_queue_size: usize,
    /// Queue timeout (µs) of a request that sets none; 0 means none.
    pub default_timeout_us: u64,
    /// Number of priority levels; level 1 is the highest.
    pub priority_levels: u32,
    /// Level of a request that sets no `priority`.
    pub default_priority_level: u32,
}

impl Default for DynamicBatching {
    fn default() -> Self {
        Self {
            max_queue_delay_us: 0,
            preferred_batch_sizes: Vec::new(),
            max_queue_size: DEFAULT_MAX_QUEUE_SIZE,
            default_timeout_us: 0,
            priority_levels: 1,
            default_priority_level: 1,
        }
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
    /// Parses and checks `text`, the contents of the file at `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, String> {
        let config: ModelConfig = toml::from_str(text)
            .map_err(|e| format!("{}: {}", path.display(), e.to_string().trim_end()))?;
        config
            .check()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(config)
    }

    /// Reads `<model_dir>/config.toml` if it exists.
    pub fn load(model_dir: &Path) -> Result<Self, String> {
        let path = model_dir.join("config.toml");
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(format!("{}: cannot read: {e}", path.display())),
        }
    }

    fn check(&self) -> Result<(), String> {
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
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ModelConfig, String> {
        ModelConfig::parse(Path::new("m/config.toml"), text)
    }

    #[test]
    fn empty_config_has_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c, ModelConfig::default());
        assert_eq!(c.dynamic_batching.max_queue_size, DEFAULT_MAX_QUEUE_SIZE);
        assert_eq!(c.version_policy, VersionPolicy::Latest(1));
    }

    #[test]
    fn full_config_parses() {
        let c = parse(
            r#"
max_batch_size = 16
instances = 2
gpus = [0, 1]
intra_op_threads = 1
fallback = true
version_policy = { specific = [1, 3] }

[[warmup]]
batch_size = 4
count = 2
random = true
dims = { x = [3] }

[dynamic_batching]
max_queue_delay_us = 500
preferred_batch_sizes = [4, 8]
max_queue_size = 10
default_timeout_us = 1000
priority_levels = 3
default_priority_level = 2

[[execution_providers]]
kind = "tensorrt"
device_id = 1
fp16 = true
engine_cache_path = "/tmp/trt"

[[execution_providers]]
kind = "cuda"
device_id = 1
memory_limit_bytes = 1073741824
arena_extend_strategy = "same_as_requested"
cudnn_conv_algo_search = "heuristic"

[[execution_providers]]
kind = "cpu"
"#,
        )
        .unwrap();
        assert_eq!(c.max_batch_size, Some(16));
        assert_eq!(c.gpus, vec![0, 1]);
        assert_eq!(c.execution_providers.len(), 3);
        assert_eq!(c.execution_providers[0].name(), "tensorrt");
        assert_eq!(
            c.execution_providers[2],
            ExecutionProvider::Cpu { arena: true }
        );
        assert_eq!(c.version_policy, VersionPolicy::Specific(vec![1, 3]));
        assert_eq!(c.dynamic_batching.preferred_batch_sizes, vec![4, 8]);
        let warmup = c.warmup.unwrap();
        assert_eq!(
            (warmup[0].batch_size, warmup[0].count, warmup[0].random),
            (4, 2, true)
        );
        assert_eq!(warmup[0].dims["x"], vec![3]);
    }

    #[test]
    fn unknown_key_names_file_and_key() {
        let err = parse("max_batch = 3").unwrap_err();
        assert!(err.starts_with("m/config.toml:"), "{err}");
        assert!(err.contains("unknown field `max_batch`"), "{err}");
    }

    #[test]
    fn unknown_provider_option_is_rejected() {
        let err = parse("[[execution_providers]]\nkind = \"cuda\"\nfp16 = true\n").unwrap_err();
        assert!(err.contains("fp16"), "{err}");
        let err = parse("[[execution_providers]]\nkind = \"rocm\"\n").unwrap_err();
        assert!(err.contains("rocm"), "{err}");
    }

    #[test]
    fn bad_values_are_rejected() {
        for (text, needle) in [
            (
                "instances = 0",
                "`instances` must be between 1 and 256. Given: 0",
            ),
            ("max_batch_size = -1", "max_batch_size"),
            ("max_batch_size = \"8\"", "max_batch_size"),
            ("[dynamic_batching]\nmax_queue_size = 0", "max_queue_size"),
            (
                "[dynamic_batching]\npriority_levels = 2\ndefault_priority_level = 3",
                "default_priority_level",
            ),
            (
                "max_batch_size = 4\n[dynamic_batching]\npreferred_batch_sizes = [8]",
                "preferred_batch_sizes",
            ),
            ("version_policy = { latest = 0 }", "version_policy.latest"),
            ("version_policy = \"newest\"", "newest"),
            ("gpus = [0]", "needs a cuda or tensorrt entry"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }

    #[test]
    fn version_policy_selects() {
        let disk = [1, 2, 3, 5];
        assert_eq!(VersionPolicy::Latest(1).select(&disk), vec![5]);
        assert_eq!(VersionPolicy::Latest(2).select(&disk), vec![3, 5]);
        assert_eq!(VersionPolicy::Latest(9).select(&disk), vec![1, 2, 3, 5]);
        assert_eq!(VersionPolicy::All.select(&disk), vec![1, 2, 3, 5]);
        assert_eq!(VersionPolicy::Specific(vec![2, 4]).select(&disk), vec![2]);
    }
}
