//! The REST app as each connection serves it: the router (trailing slashes
//! trimmed first, see [`super::serve`]), with the two inference routes
//! matched in front of it, and `Connection: close` once draining starts.
//!
//! Why the inference routes skip the router: they carry nearly every request
//! a server sees, and on their way through axum each paid for trimming,
//! `matchit`, a boxed clone of the route's service, the middleware's boxed
//! future and `Next`, the path extractor's percent-decoding and four
//! extension inserts (callgrind: about 19,500 instructions of an iris
//! request's 80,000; `docs/benchmarks.md`). Matched here they run the same
//! code the router would run: the route's scope from the route table, the
//! edge policy ([`super::guard::guarded`]), the panic catcher
//! ([`super::guard::unwinding`]) and the handler
//! ([`super::routes::infer_common`]). Anything this matcher is unsure of
//! (another method, a percent-encoded or empty segment, a trailing slash, a
//! version that is not a positive integer) goes to the router, which
//! answers it as it always has.

use super::error::ApiError;
use super::guard::{self, Guard};
use super::routes;
use super::state::AppState;
use crate::auth::Access;
use crate::net::Busy;
use crate::net::metrics::EdgeMetrics;
use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, Version, header};
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use std::sync::Arc;
use tokio::sync::watch;
use tower::ServiceExt as _;
use tower_http::normalize_path::NormalizePath;

/// The inference route without a version, as the route table writes it.
pub(super) const INFER: &str = "/v2/models/{model}/infer";
/// The inference route of one version, as the route table writes it.
pub(super) const INFER_VERSION: &str = "/v2/models/{model}/versions/{version}/infer";

/// The REST API as served: cheap to clone (reference counts).
#[derive(Clone)]
pub(crate) struct App {
    router: NormalizePath<Router>,
    direct: Option<Arc<Direct>>,
    draining: Option<watch::Receiver<bool>>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("direct", &self.direct.is_some())
            .finish_non_exhaustive()
    }
}

/// What the inference routes need when matched outside the router.
pub(super) struct Direct {
    pub(super) state: AppState,
    pub(super) guard: Guard,
    /// The scope the route table gives both inference routes.
    pub(super) access: Access,
    pub(super) metrics: EdgeMetrics,
}

/// An inference request matched outside the router.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    model: String,
    version: Option<u64>,
    /// The route's pattern, for the panic log and metric.
    route: &'static str,
}

/// `POST /v2/models/{model}/infer` or
/// `POST /v2/models/{model}/versions/{version}/infer`, when the segments
/// need no decoding and the version is valid; `None` sends the request to
/// the router.
fn infer_target(method: &Method, path: &str) -> Option<Target> {
    if method != Method::POST {
        return None;
    }
    let mut segments = path.strip_prefix("/v2/models/")?.split('/');
    let model = segments.next()?;
    if model.is_empty() || model.contains('%') {
        return None;
    }
    let (version, route) = match (segments.next()?, segments.next(), segments.next()) {
        ("infer", None, _) => (None, INFER),
        ("versions", Some(version), Some("infer")) => {
            let version = version.parse::<u64>().ok().filter(|&v| v > 0)?;
            (Some(version), INFER_VERSION)
        }
        _ => return None,
    };
    if segments.next().is_some() {
        return None;
    }
    Some(Target {
        model: model.to_owned(),
        version,
        route,
    })
}

impl App {
    /// `router` behind trailing-slash trimming, with `direct` (when given)
    /// answering the inference routes.
    pub(super) fn new(router: Router, direct: Option<Direct>) -> Self {
        Self {
            router: NormalizePath::trim_trailing_slash(router),
            direct: direct.map(Arc::new),
            draining: None,
        }
    }

    /// Adds `Connection: close` to HTTP/1 responses once `draining` turns
    /// true (checked when the response is ready, so a request in flight at
    /// SIGTERM gets it too). HTTP/2 has no such header; its GOAWAY comes at
    /// the stop.
    pub(crate) fn closing_when(mut self, draining: watch::Receiver<bool>) -> Self {
        self.draining = Some(draining);
        self
    }

    /// The response to `request`; `busy` (the connection's, when served
    /// on one) is held until the response body has been sent. The router's
    /// future and the inference routes' are boxed apart, so each request
    /// moves only its own.
    pub(crate) fn respond<B>(
        &self,
        request: axum::http::Request<B>,
        busy: Option<Busy>,
    ) -> BoxFuture<'static, Response>
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        let finish = Finish {
            http1: request.version() < Version::HTTP_2,
            draining: self.draining.clone(),
            busy,
        };
        let direct = self.direct.as_ref().and_then(|direct| {
            infer_target(request.method(), request.uri().path()).map(|t| (direct.clone(), t))
        });
        match direct {
            Some((direct, target)) => Box::pin(async move {
                let request = request.map(axum::body::Body::new);
                finish.apply(direct.infer(target, request).await)
            }),
            None => {
                let router = self.router.clone();
                Box::pin(async move {
                    match router.oneshot(request).await {
                        Ok(response) => finish.apply(response),
                        Err(never) => match never {},
                    }
                })
            }
        }
    }
}

/// What every response gets on its way out.
struct Finish {
    http1: bool,
    draining: Option<watch::Receiver<bool>>,
    busy: Option<Busy>,
}

impl Finish {
    fn apply(self, mut response: Response) -> Response {
        if self.http1 && self.draining.is_some_and(|d| *d.borrow()) {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        match self.busy {
            Some(busy) => response.map(|body| axum::body::Body::new(busy.hold(body))),
            None => response,
        }
    }
}

impl Direct {
    /// What the router, the route's guard and the handler would do.
    async fn infer(&self, target: Target, request: Request) -> Response {
        let uri = request.uri().clone();
        let Target {
            model,
            version,
            route,
        } = target;
        // The handler's future is boxed, as axum boxes a handler's: the
        // layers around it keep what they wrap inline (an `async fn` even
        // keeps its future argument twice), so an inline handler future would
        // be copied, at tens of kilobytes, into every layer's state.
        let work = guard::guarded(&self.guard, self.access, request, |request, limits| {
            let handler: BoxFuture<'_, Response> = Box::pin(async move {
                routes::infer_common(self.state.clone(), model, version, request, Some(limits))
                    .await
                    .unwrap_or_else(ApiError::into_response)
            });
            handler
        });
        guard::unwinding(&self.metrics, Some(route), &uri, work).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(method: Method, path: &str) -> Option<(String, Option<u64>, &'static str)> {
        infer_target(&method, path).map(|t| (t.model, t.version, t.route))
    }

    #[test]
    fn matches_the_two_inference_routes() {
        assert_eq!(
            target(Method::POST, "/v2/models/iris/infer"),
            Some(("iris".into(), None, INFER))
        );
        assert_eq!(
            target(Method::POST, "/v2/models/a.b-c_d/versions/12/infer"),
            Some(("a.b-c_d".into(), Some(12), INFER_VERSION))
        );
    }

    #[test]
    fn leaves_everything_else_to_the_router() {
        for path in [
            "/v2/models/iris/infer/",
            "/v2/models//infer",
            "/v2/models/ir%69s/infer",
            "/v2/models/iris/versions/0/infer",
            "/v2/models/iris/versions/x/infer",
            "/v2/models/iris/versions/1/infer/x",
            "/v2/models/iris/versions//infer",
            "/v2/models/iris/ready",
            "/v2/models/iris",
            "/v2/models/iris/infer/x",
            "//v2/models/iris/infer",
            "/v1/models/iris:predict",
        ] {
            assert_eq!(target(Method::POST, path), None, "{path}");
        }
        assert_eq!(target(Method::GET, "/v2/models/iris/infer"), None);
        assert_eq!(target(Method::PUT, "/v2/models/iris/infer"), None);
    }
}
