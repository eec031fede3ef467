//! The server-wide cap on requests in flight, shared by REST and gRPC.
//!
//! Each model's queue already bounds what waits for that model, but a
//! request holds memory before it reaches a queue: its body is read and
//! decoded first. This cap is taken before the body is read, so the memory
//! held by requests is at most `max_inflight × (body limit + decoded
//! tensors)`, whatever the offered load. Over the cap a request is answered
//! at once with [`Error::Overloaded`] (503 + `Retry-After`, gRPC
//! `UNAVAILABLE`), never queued.

use crate::error::Error;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Cloneable handle to the cap; `max = 0` turns it off.
#[derive(Debug, Clone)]
pub struct Admission {
    permits: Option<Arc<Semaphore>>,
    max: usize,
}

/// Held for the life of an admitted request.
#[derive(Debug)]
pub struct Admitted(#[allow(dead_code)] Option<OwnedSemaphorePermit>);

impl Admission {
    pub fn new(max: usize) -> Self {
        let max = max.min(Semaphore::MAX_PERMITS);
        Self {
            permits: (max > 0).then(|| Arc::new(Semaphore::new(max))),
            max,
        }
    }

    /// Admits a request or refuses it at once.
    pub fn try_admit(&self) -> Result<Admitted, Error> {
        let Some(permits) = &self.permits else {
            return Ok(Admitted(None));
        };
        match permits.clone().try_acquire_owned() {
            Ok(permit) => Ok(Admitted(Some(permit))),
            Err(_) => Err(Error::Overloaded {
                message: format!(
                    "the server has {} requests in flight, its limit (--max-inflight-requests); retry shortly",
                    self.max
                ),
                retry_after: Duration::from_secs(1),
            }),
        }
    }

    /// Requests admitted and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.permits
            .as_ref()
            .map_or(0, |p| self.max - p.available_permits())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_over_the_cap_and_frees_on_drop() {
        let a = Admission::new(2);
        let (x, y) = (a.try_admit(), a.try_admit());
        assert!(x.is_ok() && y.is_ok());
        assert!(matches!(a.try_admit(), Err(Error::Overloaded { .. })));
        assert_eq!(a.in_flight(), 2);
        drop(x);
        assert!(a.try_admit().is_ok());
        assert!(Admission::new(0).try_admit().is_ok());
    }
}
