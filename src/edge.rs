//! The edge policy: what every request passes before a handler runs, the
//! same for REST and gRPC. In order:
//!
//! 1. **auth**: the bearer token must open the route's [`Access`] scope
//!    (a refused caller never costs a permit);
//! 2. **admission**: a permit of the server-wide in-flight caps, taken at
//!    once or refused with 503 / `UNAVAILABLE` and `Retry-After`;
//! 3. **deadline**: the handler must answer within `--request-timeout-secs`.
//!
//! Health probes and metrics skip 2 and 3, so they never wait behind
//! inference. Each refusal is counted in `sluice_refused_requests_total`
//! with one reason label, and the messages are written here once. The
//! adapters' guards only extract the `authorization` header, choose the
//! route's scope, and map the outcome to their protocol. (The fourth step,
//! marking the connection busy until the response ends, belongs to the
//! connection: see [`crate::net::Activity`].)

use crate::admission::{Admission, Admitted};
use crate::auth::{Access, Auth};
use crate::error::Error;
use crate::net::metrics::EdgeMetrics;
use crate::service::Protocol;
use std::future::Future;
use std::time::Duration;

/// The policy's configuration and state; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Edge {
    pub(crate) auth: Option<Auth>,
    pub(crate) admission: Admission,
    /// A request must be answered within this; `None` = no limit.
    pub(crate) request_timeout: Option<Duration>,
    pub(crate) metrics: EdgeMetrics,
}

impl Default for Edge {
    /// No auth, no caps, no deadline (unit tests of the adapters).
    fn default() -> Self {
        Self {
            auth: None,
            admission: Admission::new(0, 0),
            request_timeout: None,
            metrics: EdgeMetrics::new(),
        }
    }
}

/// A request that passed auth and admission: the permit it holds, and the
/// deadline its handler runs under.
#[derive(Debug)]
pub(crate) struct Pass {
    pub(crate) admitted: Admitted,
    pub(crate) deadline: Deadline,
}

/// The request deadline of one admitted request.
#[derive(Debug)]
pub(crate) struct Deadline {
    limit: Option<Duration>,
    protocol: Protocol,
    metrics: EdgeMetrics,
}

impl Edge {
    /// Steps 1 and 2 for a request that wants `access`, carrying
    /// `authorization` (the header's bytes) and, when known before its body
    /// is read, at most `body_bytes` of body.
    pub(crate) fn admit(
        &self,
        protocol: Protocol,
        access: Access,
        authorization: Option<&[u8]>,
        body_bytes: Option<usize>,
    ) -> Result<Pass, Error> {
        if let Some(auth) = &self.auth {
            if let Err(denied) = auth.check(authorization, access) {
                self.metrics
                    .refuse_request(protocol.label(), denied.reason());
                return Err(denied.into());
            }
        }
        let unlimited = matches!(access, Access::Health | Access::Metrics);
        let admitted = if unlimited {
            Admitted::none()
        } else {
            self.admission.try_admit(body_bytes).inspect_err(|_| {
                self.metrics
                    .refuse_request(protocol.label(), "inflight_limit")
            })?
        };
        Ok(Pass {
            admitted,
            deadline: Deadline {
                limit: if unlimited {
                    None
                } else {
                    self.request_timeout
                },
                protocol,
                metrics: self.metrics.clone(),
            },
        })
    }

    /// Reserves `bytes` more of the body budget for a request already
    /// admitted (a gRPC message, whose length is known from its first frame).
    pub(crate) fn reserve_body(
        &self,
        protocol: Protocol,
        admitted: &mut Admitted,
        bytes: usize,
    ) -> Result<(), Error> {
        self.admission
            .reserve_body(admitted, bytes)
            .inspect_err(|_| {
                self.metrics
                    .refuse_request(protocol.label(), "inflight_limit")
            })
    }
}

impl Deadline {
    /// Step 3: runs `work` to its end, or answers `DeadlineExceeded` when
    /// the request timeout runs out first.
    pub async fn run<F: Future>(&self, work: F) -> Result<F::Output, Error> {
        let Some(limit) = self.limit else {
            return Ok(work.await);
        };
        tokio::time::timeout(limit, work).await.map_err(|_| {
            self.metrics
                .refuse_request(self.protocol.label(), "request_timeout");
            Error::DeadlineExceeded(format!(
                "the request was not answered within {} s (--request-timeout-secs)",
                limit.as_secs_f64()
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn health_skips_the_caps_and_the_deadline() {
        let edge = Edge {
            admission: Admission::new(1, 0),
            request_timeout: Some(Duration::from_millis(1)),
            ..Edge::default()
        };
        let held = edge
            .admit(Protocol::Http, Access::Infer, None, None)
            .unwrap();
        let refused = edge.admit(Protocol::Grpc, Access::Infer, None, None);
        assert!(matches!(refused, Err(Error::Overloaded { .. })));
        let health = edge
            .admit(Protocol::Http, Access::Health, None, None)
            .unwrap();
        let slow = health.deadline.run(tokio::task::yield_now()).await;
        assert!(slow.is_ok());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let timed_out = held.deadline.run(rx).await;
        assert!(matches!(timed_out, Err(Error::DeadlineExceeded(_))));
        drop(tx);
    }
}
