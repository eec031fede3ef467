//! Execution providers: what a model's `config.toml` may ask for, and how it is
//! registered with ONNX Runtime.
//!
//! GPU providers are registered with `error_on_failure`, so a missing GPU is an
//! explicit decision, never an accident: ONNX Runtime otherwise falls back to the
//! CPU silently (pykeio/ort#109). With `fallback = false` (the default) a model
//! that cannot get its provider fails to load with the reason; with
//! `fallback = true` the next provider in the list is tried and the fallback is
//! logged.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// One execution provider with its options, as written in `config.toml`
/// (`[[execution_providers]]` tables, in order of preference).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum ExecutionProvider {
    /// ONNX Runtime's CPU provider.
    Cpu {
        /// Use the CPU memory arena (default true; off lets RSS grow with varying batch sizes).
        #[serde(default = "yes")]
        arena: bool,
    },
    /// NVIDIA CUDA.
    Cuda {
        #[serde(default)]
        device_id: u32,
        /// Upper bound of the CUDA arena in bytes (default: no limit).
        #[serde(default)]
        memory_limit_bytes: Option<u64>,
        /// `next_power_of_two` (default) or `same_as_requested`.
        #[serde(default)]
        arena_extend_strategy: ArenaExtendStrategy,
        /// cuDNN convolution algorithm search: `exhaustive` (default), `heuristic` or `default`.
        #[serde(default)]
        cudnn_conv_algo_search: ConvAlgoSearch,
        /// Capture the graph with CUDA graphs (only for models with static shapes).
        #[serde(default)]
        cuda_graph: bool,
        /// Further ONNX Runtime CUDA provider options, by their ONNX Runtime
        /// name, passed through (ONNX Runtime checks them when the session is
        /// built). See [`reserved_option`] for the keys Sluice sets itself.
        #[serde(default)]
        options: BTreeMap<String, String>,
    },
    /// NVIDIA TensorRT (falls back to CUDA or CPU for unsupported nodes inside ONNX Runtime).
    Tensorrt {
        #[serde(default)]
        device_id: u32,
        #[serde(default)]
        fp16: bool,
        #[serde(default)]
        int8: bool,
        /// Directory for serialized engines; enables the engine cache when set.
        #[serde(default)]
        engine_cache_path: Option<PathBuf>,
        /// TensorRT builder workspace in bytes.
        #[serde(default)]
        workspace_size_bytes: Option<u64>,
        /// Further ONNX Runtime TensorRT provider options (`trt_*`), passed
        /// through. `trt_profile_*` shapes given here replace the derived ones.
        #[serde(default)]
        options: BTreeMap<String, String>,
    },
}

fn yes() -> bool {
    true
}

/// Provider option keys that Sluice sets itself or that would hand ONNX
/// Runtime a raw pointer: never accepted in `options`.
pub(crate) fn reserved_option(key: &str) -> bool {
    matches!(
        key,
        "device_id"
            | "has_user_compute_stream"
            | "user_compute_stream"
            | "default_memory_arena_cfg"
            | "trt_engine_decryption_enable"
            | "trt_engine_decryption_lib_path"
    )
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArenaExtendStrategy {
    #[default]
    NextPowerOfTwo,
    SameAsRequested,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConvAlgoSearch {
    #[default]
    Exhaustive,
    Heuristic,
    Default,
}

impl ExecutionProvider {
    pub fn name(&self) -> &'static str {
        match self {
            ExecutionProvider::Cpu { .. } => "cpu",
            ExecutionProvider::Cuda { .. } => "cuda",
            ExecutionProvider::Tensorrt { .. } => "tensorrt",
        }
    }

    pub(crate) fn is_gpu(&self) -> bool {
        !matches!(self, ExecutionProvider::Cpu { .. })
    }

    /// The ONNX Runtime registration for this provider. GPU providers error on
    /// failure, so the caller learns that the GPU is missing.
    pub(crate) fn dispatch(&self, shapes: &TrtShapes) -> ort::ep::ExecutionProviderDispatch {
        use ort::ep::{self, ArbitrarilyConfigurableExecutionProvider};
        match self {
            ExecutionProvider::Cpu { arena } => {
                ep::CPU::default().with_arena_allocator(*arena).build()
            }
            ExecutionProvider::Cuda {
                device_id,
                memory_limit_bytes,
                arena_extend_strategy,
                cudnn_conv_algo_search,
                cuda_graph,
                options,
            } => {
                let mut cuda = ep::CUDA::default()
                    .with_device_id(i32::try_from(*device_id).unwrap_or(i32::MAX))
                    .with_arena_extend_strategy(match arena_extend_strategy {
                        ArenaExtendStrategy::NextPowerOfTwo => {
                            ep::ArenaExtendStrategy::NextPowerOfTwo
                        }
                        ArenaExtendStrategy::SameAsRequested => {
                            ep::ArenaExtendStrategy::SameAsRequested
                        }
                    })
                    .with_conv_algorithm_search(match cudnn_conv_algo_search {
                        ConvAlgoSearch::Exhaustive => ep::cuda::ConvAlgorithmSearch::Exhaustive,
                        ConvAlgoSearch::Heuristic => ep::cuda::ConvAlgorithmSearch::Heuristic,
                        ConvAlgoSearch::Default => ep::cuda::ConvAlgorithmSearch::Default,
                    })
                    .with_cuda_graph(*cuda_graph);
                if let Some(limit) = memory_limit_bytes {
                    cuda = cuda.with_memory_limit(usize::try_from(*limit).unwrap_or(usize::MAX));
                }
                for (key, value) in options.iter().filter(|(k, _)| !reserved_option(k)) {
                    cuda = cuda.with_arbitrary_config(key, value);
                }
                cuda.build().error_on_failure()
            }
            ExecutionProvider::Tensorrt {
                device_id,
                fp16,
                int8,
                engine_cache_path,
                workspace_size_bytes,
                options,
            } => {
                let mut trt = ep::TensorRT::default()
                    .with_device_id(i32::try_from(*device_id).unwrap_or(i32::MAX))
                    .with_fp16(*fp16)
                    .with_int8(*int8);
                if let Some(path) = engine_cache_path {
                    trt = trt
                        .with_engine_cache(true)
                        .with_engine_cache_path(path.display());
                }
                if let Some(size) = workspace_size_bytes {
                    trt = trt.with_max_workspace_size(usize::try_from(*size).unwrap_or(usize::MAX));
                }
                let own_profile = options.keys().any(|k| k.starts_with("trt_profile_"));
                if !shapes.min.is_empty() && !own_profile {
                    trt = trt
                        .with_profile_min_shapes(&shapes.min)
                        .with_profile_opt_shapes(&shapes.opt)
                        .with_profile_max_shapes(&shapes.max);
                }
                for (key, value) in options.iter().filter(|(k, _)| !reserved_option(k)) {
                    trt = trt.with_arbitrary_config(key, value);
                }
                trt.build().error_on_failure()
            }
        }
    }
}

/// TensorRT optimisation profile shapes, in its `name:1x3,name2:1x4` form,
/// derived from the model's inputs and `max_batch_size`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TrtShapes {
    pub(crate) min: String,
    pub(crate) opt: String,
    pub(crate) max: String,
}

/// How a model's sessions are built.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderOptions {
    /// Providers in order of preference; empty means the CPU.
    pub(crate) providers: Vec<ExecutionProvider>,
    /// Whether a provider that cannot be registered falls through to the next one.
    pub(crate) fallback: bool,
    /// ONNX Runtime intra-op threads per session.
    pub(crate) intra_threads: usize,
    /// Session settings beyond threads and providers.
    pub(crate) session: SessionOptions,
}

/// ONNX Runtime's graph optimisation levels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GraphOptimization {
    Disabled,
    Basic,
    Extended,
    #[default]
    All,
}

/// Session-wide ONNX Runtime settings beyond threads and providers (what
/// Triton's ONNX Runtime backend reads from a model's `parameters` and
/// `optimization.graph`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionOptions {
    /// Inter-op threads, used in parallel execution mode. None: 1.
    pub(crate) inter_op_threads: Option<usize>,
    /// Run independent nodes of the graph in parallel (`ORT_PARALLEL`).
    pub(crate) parallel_execution: bool,
    pub(crate) optimization: GraphOptimization,
    /// Memory pattern optimisation. None: ONNX Runtime's default (on).
    pub(crate) memory_pattern: Option<bool>,
    /// Session configuration entries (`session.*` keys), passed through.
    pub(crate) config_entries: BTreeMap<String, String>,
}

impl ProviderOptions {
    /// The same options with every GPU provider placed on `device`.
    pub(crate) fn on_device(&self, device: u32) -> Self {
        let mut options = self.clone();
        for p in &mut options.providers {
            match p {
                ExecutionProvider::Cuda { device_id, .. }
                | ExecutionProvider::Tensorrt { device_id, .. } => {
                    *device_id = device;
                }
                ExecutionProvider::Cpu { .. } => {}
            }
        }
        options
    }
}

impl Default for ProviderOptions {
    fn default() -> Self {
        Self {
            providers: Vec::new(),
            fallback: false,
            intra_threads: 1,
            session: SessionOptions::default(),
        }
    }
}
