//! The states a model version can be in, with the two spellings the
//! protocols use: Triton's repository index (`READY`) and the
//! `sluice_model_state` gauge's label (`ready`).

/// Where a model version stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ModelState {
    Loading,
    Ready,
    Unavailable,
}

impl ModelState {
    pub const ALL: [ModelState; 3] = [
        ModelState::Loading,
        ModelState::Ready,
        ModelState::Unavailable,
    ];

    /// As Triton's repository index spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelState::Loading => "LOADING",
            ModelState::Ready => "READY",
            ModelState::Unavailable => "UNAVAILABLE",
        }
    }

    /// The `state` label of `sluice_model_state`.
    pub(crate) fn metric_label(self) -> &'static str {
        match self {
            ModelState::Loading => "loading",
            ModelState::Ready => "ready",
            ModelState::Unavailable => "unavailable",
        }
    }
}

/// A version's state as the repository index reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum VersionState {
    Loading,
    Ready,
    /// Serving the session loaded earlier; the last reload of this version
    /// failed for the reason given. Reported as `READY` with that reason.
    ReloadFailed(String),
    Unavailable(String),
    /// Unloaded on request: no longer meant to be served. Reported as
    /// `UNAVAILABLE` with the reason `unloaded`, as Triton does.
    Unloaded,
}

impl VersionState {
    /// The state without its reason.
    pub(crate) fn state(&self) -> ModelState {
        match self {
            VersionState::Loading => ModelState::Loading,
            VersionState::Ready | VersionState::ReloadFailed(_) => ModelState::Ready,
            VersionState::Unavailable(_) | VersionState::Unloaded => ModelState::Unavailable,
        }
    }

    pub(crate) fn reason(&self) -> &str {
        match self {
            VersionState::Unavailable(r) | VersionState::ReloadFailed(r) => r,
            VersionState::Unloaded => "unloaded",
            VersionState::Loading | VersionState::Ready => "",
        }
    }

    /// Whether a session of this version is serving.
    pub(crate) fn is_serving(&self) -> bool {
        matches!(self, VersionState::Ready | VersionState::ReloadFailed(_))
    }
}
