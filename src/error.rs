//! The one domain error of Sluice.
//!
//! Every protocol adapter maps [`Error`] to its own status exhaustively (no `_`
//! arm): a new variant does not compile until HTTP and gRPC both decide what it
//! means. Messages are stable, lowercase, and name the field, what was expected
//! and what arrived.

use std::time::Duration;

/// Why a request (or an operation) failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The request is malformed or does not match the model (HTTP 400).
    #[error("{0}")]
    InvalidArgument(String),
    /// The request or one of its tensors is larger than a configured limit (HTTP 413).
    #[error("{0}")]
    TooLarge(String),
    /// No such model or version (HTTP 404).
    #[error("{0}")]
    NotFound(String),
    /// The model exists but cannot serve now: loading, failed, or unloaded (HTTP 503).
    #[error("{0}")]
    Unavailable(String),
    /// Admission refused: the queue is full (HTTP 503 with `Retry-After`).
    #[error("{message}")]
    Overloaded {
        message: String,
        retry_after: Duration,
    },
    /// The request's deadline passed before it ran (HTTP 504).
    #[error("{0}")]
    DeadlineExceeded(String),
    /// The client did not send its request in time (HTTP 408).
    #[error("{0}")]
    ClientTimeout(String),
    /// No valid credentials (HTTP 401, gRPC `UNAUTHENTICATED`).
    #[error("{0}")]
    Unauthenticated(String),
    /// Valid credentials without the needed scope (HTTP 403, gRPC `PERMISSION_DENIED`).
    #[error("{0}")]
    PermissionDenied(String),
    /// The model ran and failed, or the server broke an invariant (HTTP 500).
    #[error("{0}")]
    Internal(String),
}

impl Error {
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidArgument(message.into())
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::Internal(message.into())
    }

    /// The label this error carries in `sluice_requests_total{outcome}`.
    pub(crate) fn outcome(&self) -> &'static str {
        match self {
            Error::InvalidArgument(_) | Error::TooLarge(_) => "invalid",
            Error::NotFound(_) => "not_found",
            Error::Unavailable(_) => "unavailable",
            Error::Overloaded { .. } => "overloaded",
            Error::DeadlineExceeded(_) | Error::ClientTimeout(_) => "timeout",
            Error::Unauthenticated(_) | Error::PermissionDenied(_) => "denied",
            Error::Internal(_) => "error",
        }
    }
}

pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;
