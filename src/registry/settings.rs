//! Server-wide settings of the model set.

/// How the model set changes while serving, as Triton's `--model-control-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlMode {
    /// Every model loads at start; the repository API may not load or unload.
    None,
    /// Every model loads at start, and the repository is rescanned on an
    /// interval: new or changed models load, removed ones unload.
    Poll,
    /// Every model (or those named) loads at start; the repository API
    /// changes the set.
    Explicit,
    /// Every model of the repository is listed UNLOADED and loads on its
    /// first request; the pinned ones load at start and stay. Under a
    /// memory budget the least recently used idle versions are evicted
    /// (`super::demand`). The repository API works as in `Explicit`.
    OnDemand,
}

/// Server-wide settings that apply to every model.
#[derive(Debug, Clone)]
pub struct Defaults {
    /// Cores available to the process.
    pub cores: usize,
    /// Whether the repository API may change the model set.
    pub control_mode: ControlMode,
    /// Load a model whose configuration has fields Sluice does not support,
    /// without them, logging each as a warning. False (the default): such a
    /// model is UNAVAILABLE with a reason naming the fields.
    pub ignore_unsupported_config: bool,
    /// Triton's `--strict-model-config`: a model needs a configuration file,
    /// and a `config.pbtxt` must be complete (nothing is derived from the
    /// graph). False (the default): missing parts come from the graph.
    pub strict_model_config: bool,
    /// A request may run on the thread that received it while its version's
    /// runs average at most this long and the server is idle (see
    /// `scheduler::inline`); zero: every request goes through the queue.
    pub inline_run_limit: std::time::Duration,
}

/// The settings of `--model-control-mode on-demand` (see `super::demand`).
#[derive(Debug, Clone, Default)]
pub struct DemandSettings {
    /// Bytes the loaded versions may cost together (their measured costs);
    /// `None`: no budget.
    pub budget: Option<u64>,
    /// Versions unused this long are unloaded; `None`: never.
    pub idle_unload: Option<std::time::Duration>,
    /// The longest a request waits for the load it started or joined
    /// before it is answered 503 with `Retry-After`; `None`: no bound.
    pub load_wait: Option<std::time::Duration>,
    /// Models loaded at start and never evicted (`--load-model`), beside
    /// those whose config.toml says `pinned = true`.
    pub pinned: Vec<String>,
}
