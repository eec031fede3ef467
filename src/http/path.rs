//! The path-parameter extractor every REST handler uses: axum's `Path`,
//! with its rejections (a segment that percent-decodes to invalid UTF-8,
//! such as `/v2/models/%ff/ready`) answered in our error format instead of
//! axum's plain text. Found by the `rest_router` fuzz target.

use super::error::ApiError;
use crate::error::Error;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

/// Path parameters, as `axum::extract::Path`, rejected as a 400 in JSON.
#[derive(Debug)]
pub(crate) struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(rejection) => Err(ApiError(Error::invalid(format!(
                "malformed request path: {}",
                rejection.body_text()
            )))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use axum::routing::get;
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    /// Regression (fuzz `rest_router`): `%ee` in a model name decodes to
    /// invalid UTF-8; axum answered 400 in plain text, not `{"error": ...}`.
    #[tokio::test]
    async fn invalid_utf8_segment_is_a_json_400() {
        async fn handler(Path(model): Path<String>) -> String {
            model
        }
        let app = Router::new().route("/v2/models/{model}/ready", get(handler));
        let request = Request::get("/v2/models/dt%eeype/ready")
            .body(Body::empty())
            .unwrap();
        let response = app.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let error = json["error"].as_str().unwrap();
        assert!(error.contains("Invalid UTF-8 in `model`"), "{error}");
    }
}
