//! Domain error → HTTP response, exhaustively (no `_` arm: a new error
//! variant does not compile until REST decides its status), as
//! `{"error": "..."}` with `Retry-After` and `WWW-Authenticate` where they
//! apply.

use crate::error::Error;
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// An error on its way out as an HTTP response.
#[derive(Debug)]
pub(crate) struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

impl ApiError {
    pub(crate) fn status(&self) -> StatusCode {
        match &self.0 {
            Error::InvalidArgument(_) => StatusCode::BAD_REQUEST,
            Error::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Error::DeadlineExceeded(_) => StatusCode::GATEWAY_TIMEOUT,
            Error::ClientTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Error::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Error::PermissionDenied(_) => StatusCode::FORBIDDEN,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::debug!(%status, error = %self.0, "request failed");
        }
        let retry_after = match &self.0 {
            Error::Overloaded { retry_after, .. } => Some(retry_after.as_secs().max(1)),
            _ => None,
        };
        let mut response = (
            status,
            Json(serde_json::json!({ "error": self.0.to_string() })),
        )
            .into_response();
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"sluice\""),
            );
        }
        response
    }
}
