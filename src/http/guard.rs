//! The one middleware in front of every REST route: authentication and
//! scope, the server-wide in-flight cap, and the request timeout, in that
//! order (a refused caller never costs a permit; health probes and metrics
//! never wait behind inference).

use super::error::{ApiError, BodyLimits};
use crate::admission::Admission;
use crate::auth::{Access, Auth};
use crate::error::Error;
use crate::metrics::EdgeMetrics;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::time::Duration;

/// What the guard enforces; cheap to clone.
#[derive(Debug, Clone)]
pub struct Guard {
    pub auth: Option<Auth>,
    pub admission: Admission,
    /// A request must be answered within this; `None` = no limit.
    pub request_timeout: Option<Duration>,
    pub body: BodyLimits,
    pub metrics: EdgeMetrics,
    /// The body limit, which also bounds how much of a refused body is drained.
    pub max_body_bytes: usize,
}

impl Default for Guard {
    fn default() -> Self {
        Self {
            auth: None,
            admission: Admission::new(0, 0),
            request_timeout: None,
            body: BodyLimits::default(),
            metrics: EdgeMetrics::new(),
            max_body_bytes: 64 << 20,
        }
    }
}

/// What a REST path needs.
pub fn access(path: &str) -> Access {
    if path.starts_with("/v2/health/") {
        Access::Health
    } else if path == "/metrics" {
        Access::Metrics
    } else if path.starts_with("/v2/repository/") || path.starts_with("/v2/logging") {
        Access::Admin
    } else {
        Access::Infer
    }
}

pub(super) async fn guard(State(g): State<Guard>, mut req: Request, next: Next) -> Response {
    let access = access(req.uri().path());
    if let Some(auth) = &g.auth {
        let authorization = req
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        if let Err(denied) = auth.check(authorization, access) {
            g.metrics.refuse_request("http", denied.reason());
            return refuse(req, ApiError(denied.into()), g.max_body_bytes).await;
        }
    }
    if matches!(access, Access::Health | Access::Metrics) {
        return next.run(req).await;
    }
    let _admitted = match g
        .admission
        .try_admit(Some(body_bound(&req, g.max_body_bytes)))
    {
        Ok(admitted) => admitted,
        Err(e) => {
            g.metrics.refuse_request("http", "inflight_limit");
            return refuse(req, ApiError(e), g.max_body_bytes).await;
        }
    };
    req.extensions_mut().insert(g.body);
    let Some(limit) = g.request_timeout else {
        return next.run(req).await;
    };
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            g.metrics.refuse_request("http", "request_timeout");
            ApiError(Error::DeadlineExceeded(format!(
                "the request was not answered within {} s (--request-timeout-secs)",
                limit.as_secs_f64()
            )))
            .into_response()
        }
    }
}

/// The most body bytes `req` can send: its `Content-Length`, the body limit
/// when it is chunked, 0 when it has no body.
fn body_bound(req: &Request, max_body_bytes: usize) -> usize {
    let headers = req.headers();
    if let Some(length) = headers.get(header::CONTENT_LENGTH) {
        return length
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .map_or(max_body_bytes, |n| n.min(max_body_bytes));
    }
    if headers.contains_key(header::TRANSFER_ENCODING)
        || req.version() >= axum::http::Version::HTTP_2
    {
        max_body_bytes
    } else {
        0
    }
}

/// Longest a refused request's body is drained before the refusal is sent.
const DRAIN_TIME: Duration = Duration::from_secs(2);

/// Answers a request refused before its body was read. The body is read and
/// discarded first (at most the body limit, for at most [`DRAIN_TIME`]):
/// otherwise hyper closes the connection with the body unread, and a client
/// still sending it sees a connection reset instead of our 503 or 401. The
/// chunks are dropped as they arrive, so draining holds no memory.
pub(super) async fn refuse(req: Request, error: ApiError, limit: usize) -> Response {
    let mut body = req.into_body().into_data_stream();
    let drain = async {
        let mut seen = 0usize;
        while let Some(Ok(chunk)) = futures::StreamExt::next(&mut body).await {
            seen = seen.saturating_add(chunk.len());
            if seen > limit {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
    error.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_access() {
        assert_eq!(access("/v2/health/ready"), Access::Health);
        assert_eq!(access("/metrics"), Access::Metrics);
        assert_eq!(access("/v2/repository/index"), Access::Admin);
        assert_eq!(access("/v2/repository/models/iris/load"), Access::Admin);
        assert_eq!(access("/v2/models/iris/infer"), Access::Infer);
        assert_eq!(access("/v1/models/iris:predict"), Access::Infer);
        assert_eq!(access("/v2"), Access::Infer);
        assert_eq!(access("/nope"), Access::Infer);
    }
}
