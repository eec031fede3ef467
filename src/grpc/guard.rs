//! The gRPC twin of `http::guard`: one tower layer in front of every gRPC
//! service that checks the bearer token in `authorization` metadata, takes a
//! permit of the server-wide in-flight cap, bounds the time to the response,
//! and turns tonic's "message too large" into `RESOURCE_EXHAUSTED` with our
//! message (tonic says `OUT_OF_RANGE`; the gRPC spec says a message over the
//! limit is `RESOURCE_EXHAUSTED`).
//!
//! For `ModelStreamInfer` the permit and the timeout cover opening the stream;
//! each message on it then goes through its model's bounded queue.

use super::status;
use crate::admission::Admission;
use crate::auth::{Access, Auth};
use crate::error::Error;
use futures::future::BoxFuture;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tonic::codegen::http;
use tonic::{Code, Status};

/// What the layer enforces.
#[derive(Debug, Clone)]
pub struct GrpcGuard {
    pub auth: Option<Auth>,
    pub admission: Admission,
    pub request_timeout: Option<Duration>,
    pub max_message_bytes: usize,
    pub metrics: crate::metrics::EdgeMetrics,
}

/// What a gRPC method needs.
pub fn access(path: &str) -> Access {
    const SERVICE: &str = "/inference.GRPCInferenceService/";
    if path.starts_with("/grpc.health.v1.Health/") {
        return Access::Health;
    }
    match path.strip_prefix(SERVICE) {
        Some("ServerLive" | "ServerReady") => Access::Health,
        Some(method) if method.starts_with("Repository") || method == "LogSettings" => {
            Access::Admin
        }
        _ => Access::Infer,
    }
}

/// Rewrites tonic's decode-limit status into ours; other statuses pass.
pub fn oversize(s: Status, max_message_bytes: usize) -> Status {
    if s.code() == Code::OutOfRange && s.message().contains("message length too large") {
        return status(Error::TooLarge(format!(
            "request message is larger than the server's limit of {max_message_bytes} bytes (--grpc-max-message-bytes)"
        )));
    }
    s
}

#[derive(Debug, Clone)]
pub struct GuardLayer(pub Arc<GrpcGuard>);

impl<S> tower::Layer<S> for GuardLayer {
    type Service = Guarded<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Guarded {
            inner,
            guard: self.0.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Guarded<S> {
    inner: S,
    guard: Arc<GrpcGuard>,
}

impl<S, B, R> tower::Service<http::Request<B>> for Guarded<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        // The ready service handles this call; a fresh clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let guard = self.guard.clone();
        Box::pin(async move {
            let access = access(req.uri().path());
            if let Some(auth) = &guard.auth {
                let authorization = req.headers().get("authorization").map(|v| v.as_bytes());
                if let Err(denied) = auth.check(authorization, access) {
                    guard.metrics.refuse_request("grpc", denied.reason());
                    return Ok(status(denied.into()).into_http());
                }
            }
            if access == Access::Health {
                return inner.call(req).await;
            }
            let _admitted = match guard.admission.try_admit(None) {
                Ok(admitted) => admitted,
                Err(e) => {
                    guard.metrics.refuse_request("grpc", "inflight_limit");
                    return Ok(status(e).into_http());
                }
            };
            let response = match guard.request_timeout {
                None => inner.call(req).await?,
                Some(limit) => match tokio::time::timeout(limit, inner.call(req)).await {
                    Ok(response) => response?,
                    Err(_) => {
                        guard.metrics.refuse_request("grpc", "request_timeout");
                        return Ok(status(Error::DeadlineExceeded(format!(
                            "the request was not answered within {} s (--request-timeout-secs)",
                            limit.as_secs_f64()
                        )))
                        .into_http());
                    }
                },
            };
            // A trailers-only error response carries its status in the headers.
            if let Some(s) = Status::from_header_map(response.headers()) {
                if s.code() == Code::OutOfRange {
                    return Ok(oversize(s, guard.max_message_bytes).into_http());
                }
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_map_to_access() {
        assert_eq!(access("/grpc.health.v1.Health/Check"), Access::Health);
        assert_eq!(
            access("/inference.GRPCInferenceService/ServerReady"),
            Access::Health
        );
        assert_eq!(
            access("/inference.GRPCInferenceService/RepositoryModelLoad"),
            Access::Admin
        );
        assert_eq!(
            access("/inference.GRPCInferenceService/ModelInfer"),
            Access::Infer
        );
        assert_eq!(
            access("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
            Access::Infer
        );
    }

    #[test]
    fn oversize_becomes_resource_exhausted() {
        let s = oversize(
            Status::out_of_range(
                "Error, decoded message length too large: found 9 bytes, the limit is: 4 bytes",
            ),
            4,
        );
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert!(s.message().contains("--grpc-max-message-bytes"));
        assert_eq!(
            oversize(Status::out_of_range("x"), 4).code(),
            Code::OutOfRange
        );
    }
}
