//! Domain error → HTTP response, exhaustively, and the body extractor that
//! turns axum's own rejections into the same `{"error": "..."}` format.

use crate::error::Error;
use axum::Json;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

/// An error on its way out as an HTTP response.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
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

/// Limits the [`Body`] extractor applies; the guard middleware puts the
/// configured ones in each request's extensions (defaults otherwise).
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// The whole body must arrive within this (slow-loris on the body).
    pub read_timeout: std::time::Duration,
    /// Deepest nesting of `[`/`{` allowed in a JSON body (or binary header).
    pub max_json_depth: usize,
}

impl Default for BodyLimits {
    fn default() -> Self {
        Self {
            read_timeout: std::time::Duration::from_secs(60),
            max_json_depth: 64,
        }
    }
}

/// The raw request body, with oversize, slow, too deeply nested and
/// unreadable bodies answered in our error format (413, 408, 400, 400).
#[derive(Debug)]
pub struct Body(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limits = req
            .extensions()
            .get::<BodyLimits>()
            .copied()
            .unwrap_or_default();
        // JSON is the whole body, or with the binary extension its first
        // `Inference-Header-Content-Length` bytes (a bad value is the decoder's to report).
        let json_len = req.headers().get(super::binary::HEADER_LENGTH).map(|v| {
            v.to_str()
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0)
        });
        let read = tokio::time::timeout(limits.read_timeout, Bytes::from_request(req, state));
        let bytes = match read.await {
            Err(_) => {
                return Err(ApiError(Error::ClientTimeout(format!(
                    "request body did not arrive within {} s (--body-read-timeout-secs)",
                    limits.read_timeout.as_secs_f64()
                ))));
            }
            Ok(Ok(bytes)) => bytes,
            Ok(Err(rejection)) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return Err(ApiError(Error::TooLarge(
                    "request body is larger than the server's limit (--max-body-bytes)".into(),
                )));
            }
            Ok(Err(rejection)) => {
                return Err(ApiError(Error::invalid(format!(
                    "cannot read the request body: {}",
                    rejection.body_text()
                ))));
            }
        };
        let json = &bytes[..json_len.unwrap_or(bytes.len()).min(bytes.len())];
        check_json_depth(json, limits.max_json_depth)?;
        Ok(Body(bytes))
    }
}

/// Refuses JSON nested deeper than `max` arrays/objects, in one pass and
/// before any parsing, so no parser recursion depends on the client.
pub fn check_json_depth(json: &[u8], max: usize) -> Result<(), Error> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in json {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Err(Error::invalid(format!(
                        "request JSON nests deeper than {max} levels (--max-json-depth)"
                    )));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_depth_counts_only_structure() {
        assert!(check_json_depth(br#"{"a":[[1,2],[3]]}"#, 3).is_ok());
        assert!(check_json_depth(br#"{"a":[[1,2],[3]]}"#, 2).is_err());
        // Brackets inside strings, with escaped quotes, do not count.
        assert!(check_json_depth(br#"{"s":"[[[[\"[[[["}"#, 1).is_ok());
        let deep = "[".repeat(10_000);
        let err = check_json_depth(deep.as_bytes(), 64).unwrap_err();
        assert!(err.to_string().contains("deeper than 64"), "{err}");
    }
}
