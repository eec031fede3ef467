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
}

impl Default for Guard {
    fn default() -> Self {
        Self {
            auth: None,
            admission: Admission::new(0),
            request_timeout: None,
            body: BodyLimits::default(),
            metrics: EdgeMetrics::new(),
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
            return ApiError(denied.into()).into_response();
        }
    }
    if matches!(access, Access::Health | Access::Metrics) {
        return next.run(req).await;
    }
    let _admitted = match g.admission.try_admit() {
        Ok(admitted) => admitted,
        Err(e) => {
            g.metrics.refuse_request("http", "inflight_limit");
            return ApiError(e).into_response();
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
