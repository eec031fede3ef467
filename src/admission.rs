//! The server-wide caps on requests in flight, shared by REST and gRPC: a
//! count, and a budget of body (REST) and message (gRPC unary) bytes.
//!
//! Each model's queue already bounds what waits for that model, but a
//! request holds memory before it reaches a queue: its body is read and
//! decoded first. Both caps are taken **before** the body is read, so the
//! memory requests hold is bounded by the configuration, not by the offered
//! load. A REST request reserves its `Content-Length` (the body limit when
//! it is chunked) from the byte budget; a unary gRPC call reserves the
//! length its message's 5-byte header declares, read from its first frame. Over either cap a request is answered
//! at once with [`Error::Overloaded`] (503 + `Retry-After`, gRPC
//! `UNAVAILABLE`), never queued.

use crate::error::Error;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The byte budget counts in KiB, so a `u32` of permits covers 4 TiB.
const UNIT: usize = 1024;

/// Cloneable handle to the caps; a cap of 0 is off.
#[derive(Debug, Clone)]
pub(crate) struct Admission {
    requests: Option<Arc<Semaphore>>,
    max_requests: usize,
    body: Option<Arc<Semaphore>>,
    max_body_units: usize,
}

/// Held for the life of an admitted request.
#[derive(Debug)]
pub(crate) struct Admitted {
    _request: Option<OwnedSemaphorePermit>,
    _body: Option<OwnedSemaphorePermit>,
}

impl Admitted {
    /// Holds no permit: for requests the caps do not apply to.
    pub(crate) fn none() -> Self {
        Self {
            _request: None,
            _body: None,
        }
    }
}

impl Admission {
    /// `max_requests` in flight, `max_body_bytes` of bodies and messages in flight.
    pub fn new(max_requests: usize, max_body_bytes: usize) -> Self {
        let max_requests = max_requests.min(Semaphore::MAX_PERMITS);
        let max_body_units = (max_body_bytes / UNIT)
            .min(u32::MAX as usize)
            .min(Semaphore::MAX_PERMITS);
        Self {
            requests: (max_requests > 0).then(|| Arc::new(Semaphore::new(max_requests))),
            max_requests,
            body: (max_body_units > 0).then(|| Arc::new(Semaphore::new(max_body_units))),
            max_body_units,
        }
    }

    /// Admits a request whose body will be at most `body_bytes` (`None`: not
    /// known yet, see [`Admission::reserve_body`]), or refuses it at once.
    pub(crate) fn try_admit(&self, body_bytes: Option<usize>) -> Result<Admitted, Error> {
        let request = match &self.requests {
            None => None,
            Some(permits) => Some(permits.clone().try_acquire_owned().map_err(|_| {
                overloaded(format!(
                    "the server has {} requests in flight, its limit (--max-inflight-requests); retry shortly",
                    self.max_requests
                ))
            })?),
        };
        let mut admitted = Admitted {
            _request: request,
            _body: None,
        };
        if let Some(bytes) = body_bytes {
            self.reserve_body(&mut admitted, bytes)?;
        }
        Ok(admitted)
    }

    /// Reserves `bytes` of the body budget for a request already admitted
    /// (gRPC, whose message length is known only from its first frame), or
    /// refuses it at once. A body larger than the whole budget may still
    /// pass alone.
    pub(crate) fn reserve_body(&self, admitted: &mut Admitted, bytes: usize) -> Result<(), Error> {
        let Some(budget) = &self.body else {
            return Ok(());
        };
        if bytes == 0 {
            return Ok(());
        }
        let units = bytes.div_ceil(UNIT).clamp(1, self.max_body_units);
        let units = u32::try_from(units).unwrap_or(u32::MAX);
        let permit = budget.clone().try_acquire_many_owned(units).map_err(|_| {
            overloaded(format!(
                "the server holds {} MiB of request bodies, its limit (--max-inflight-body-bytes); retry shortly",
                (self.max_body_units * UNIT) >> 20
            ))
        })?;
        admitted._body = Some(permit);
        Ok(())
    }

    /// Requests admitted and not yet answered.
    #[cfg(test)]
    fn in_flight(&self) -> usize {
        self.requests
            .as_ref()
            .map_or(0, |p| self.max_requests - p.available_permits())
    }
}

fn overloaded(message: String) -> Error {
    Error::Overloaded {
        message,
        retry_after: Duration::from_secs(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_over_the_request_cap_and_frees_on_drop() {
        let a = Admission::new(2, 0);
        let (x, y) = (a.try_admit(None), a.try_admit(None));
        assert!(x.is_ok() && y.is_ok());
        assert!(matches!(a.try_admit(None), Err(Error::Overloaded { .. })));
        assert_eq!(a.in_flight(), 2);
        drop(x);
        assert!(a.try_admit(None).is_ok());
        assert!(Admission::new(0, 0).try_admit(Some(1 << 30)).is_ok());
    }

    #[test]
    fn the_body_budget_counts_bytes() {
        let a = Admission::new(0, 3 << 20);
        let big = a.try_admit(Some(2 << 20));
        assert!(big.is_ok());
        let e = a.try_admit(Some(2 << 20)).unwrap_err().to_string();
        assert!(
            e.contains("3 MiB") && e.contains("--max-inflight-body-bytes"),
            "{e}"
        );
        // Small bodies still fit; bodiless requests are not counted.
        assert!(a.try_admit(Some(512 << 10)).is_ok());
        assert!(a.try_admit(Some(0)).is_ok() && a.try_admit(None).is_ok());
        // A reservation made after admission (gRPC) draws on the same budget.
        let mut later = a.try_admit(None).unwrap();
        assert!(a.reserve_body(&mut later, 2 << 20).is_err());
        assert!(a.reserve_body(&mut later, 256 << 10).is_ok());
        drop((big, later));
        // A body larger than the whole budget passes when nothing else holds it.
        assert!(a.try_admit(Some(10 << 20)).is_ok());
    }
}
