//! The REST side of the edge policy ([`crate::edge`]): one middleware per
//! route, built with the route's [`Access`] scope (the router declares it;
//! nothing here matches paths). It runs the policy, puts the body limits in
//! the request for the body extractor, and answers a refusal in our error
//! format after draining the unread body.

use super::body::ReadLimits;
use super::config::BodyLimits;
use super::error::ApiError;
use crate::auth::Access;
use crate::edge::Edge;
use crate::net::metrics::EdgeMetrics;
use crate::service::Protocol;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::FutureExt as _;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

/// What the middleware of one route enforces; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Guard {
    pub(crate) edge: Edge,
    pub(crate) body: BodyLimits,
    /// The body limit, which also bounds how much of a refused body is drained.
    pub(crate) max_body_bytes: usize,
}

/// The middleware: `scoped.0` with the route's scope `scoped.1` (shared:
/// axum clones a middleware's state for every request).
pub(super) async fn guard(
    State(scoped): State<Arc<(Guard, Access)>>,
    req: Request,
    next: Next,
) -> Response {
    let (g, access) = &*scoped;
    guarded(g, *access, req, |mut req, limits| {
        // For the `Body` extractor of the handler behind the router.
        req.extensions_mut().insert(limits);
        next.run(req)
    })
    .await
}

/// The policy around `handler` for a request that wants `access`: what the
/// middleware does, and what the inference routes matched without the
/// router (see [`super::app`]) do with the same code.
pub(super) async fn guarded<H, F>(g: &Guard, access: Access, req: Request, handler: H) -> Response
where
    H: FnOnce(Request, ReadLimits) -> F,
    F: Future<Output = Response>,
{
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    let body_bytes = body_bound(&req, g.max_body_bytes);
    let pass = match g
        .edge
        .admit(Protocol::Http, access, authorization, Some(body_bytes))
    {
        Ok(pass) => pass,
        Err(e) => return refuse(req, ApiError(e), g.max_body_bytes).await,
    };
    let limits = ReadLimits {
        body: g.body,
        max_bytes: g.max_body_bytes,
    };
    let response = pass.deadline.run(handler(req, limits)).await;
    drop(pass.admitted);
    response.unwrap_or_else(|e| ApiError(e).into_response())
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

/// The outermost middleware: a handler that panics (a bug) is answered
/// `500 {"error": "internal error: ..."}` and the connection goes on, as
/// Triton and TF Serving answer. The panic message is logged with the route
/// and model, never sent; `sluice_handler_panics_total` counts it.
pub(super) async fn catch_panic(
    State(metrics): State<EdgeMetrics>,
    req: Request,
    next: Next,
) -> Response {
    // Kept by reference count (both share the request's buffers); the
    // strings the log line needs are made only when a handler panics.
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let uri = req.uri().clone();
    let route = matched.as_ref().map(MatchedPath::as_str);
    unwinding(&metrics, route, &uri, next.run(req)).await
}

/// Runs `work`, answering a panic in it as [`catch_panic`] describes;
/// `route` is the route's pattern (the path when no route matched). A plain
/// function, not an `async fn`: that would keep `work` twice in its state.
pub(super) fn unwinding<'a>(
    metrics: &'a EdgeMetrics,
    route: Option<&'a str>,
    uri: &'a Uri,
    work: impl Future<Output = Response> + 'a,
) -> impl Future<Output = Response> + 'a {
    // Unwind safety: the request is consumed by the handler, and what it
    // shares (the service) keeps its invariants behind atomics and locks
    // that a panic cannot leave half-written.
    AssertUnwindSafe(work)
        .catch_unwind()
        .map(move |outcome| match outcome {
            Ok(response) => response,
            Err(payload) => {
                let route = route.unwrap_or(uri.path());
                let model = model_in(uri.path());
                metrics.handler_panicked("http", route, model, payload.as_ref());
                ApiError(crate::error::Error::internal(
                    "internal error: the request handler failed; the server log has the details",
                ))
                .into_response()
            }
        })
}

/// The model a REST path names: the segment after `models`, without a
/// `:predict` suffix (v1).
fn model_in(path: &str) -> Option<&str> {
    let mut segments = path.split('/');
    segments.find(|s| *s == "models")?;
    let name = segments.next()?;
    let name = name.split_once(':').map_or(name, |(m, _)| m);
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::model_in;

    #[test]
    fn the_model_is_the_segment_after_models() {
        assert_eq!(model_in("/v2/models/iris/infer"), Some("iris"));
        assert_eq!(model_in("/v2/repository/models/iris/load"), Some("iris"));
        assert_eq!(model_in("/v1/models/iris:predict"), Some("iris"));
        assert_eq!(model_in("/v2/models/stats"), Some("stats"));
        assert_eq!(model_in("/v2/health/ready"), None);
        assert_eq!(model_in("/v2/models/"), None);
    }
}
