//! What every REST handler is given.

use crate::logging::LogControl;
use crate::service::Service;

#[derive(Debug, Clone)]
pub(crate) struct AppState {
    pub(crate) service: Service,
    pub(crate) logging: LogControl,
    /// The body limit (also how much of a refused body is drained).
    pub(crate) max_body_bytes: usize,
}
