//! Triton's binary tensor data extension for REST: the header that splits
//! a body into its JSON part and the raw tensors after it.
//!
//! A binary request carries `Inference-Header-Content-Length: N`: the first N
//! bytes are the JSON header; the rest are the raw inputs, in input order, each
//! sized by its `parameters.binary_data_size`. Fixed-size inputs are slices of
//! the request buffer (no copy); BYTES elements are 4-byte little-endian
//! length-prefixed. Outputs are binary when asked for (`binary_data` per
//! output, `binary_data_output` for all); then the response is
//! `application/octet-stream` with the JSON header's length in the same
//! header. The header is parsed here and nowhere else.

use crate::error::{Error, Result};
use axum::http::{HeaderMap, HeaderName, HeaderValue};

/// The request and response header naming the JSON header's length.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// [`HEADER_LENGTH`] as a header name, built once: looking a header up by a
/// `&str` parses and checks the name again on every call.
pub(crate) const HEADER_LENGTH_NAME: HeaderName = HeaderName::from_static(HEADER_LENGTH);

/// The JSON header's length from `Inference-Header-Content-Length`, if sent.
pub(crate) fn header_length(headers: &HeaderMap, body_len: usize) -> Result<Option<usize>> {
    declared_length(headers.get(&HEADER_LENGTH_NAME), body_len)
}

/// [`header_length`] of the header's value, `None` when not sent.
pub(crate) fn declared_length(
    value: Option<&HeaderValue>,
    body_len: usize,
) -> Result<Option<usize>> {
    let Some(value) = value else {
        return Ok(None);
    };
    let n = value
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .ok_or_else(|| {
            Error::invalid(format!(
                "header 'Inference-Header-Content-Length' must be a non-negative integer, got {value:?}"
            ))
        })?;
    if n > body_len {
        return Err(Error::invalid(format!(
            "header 'Inference-Header-Content-Length' is {n} but the body has only {body_len} bytes"
        )));
    }
    Ok(Some(n))
}

pub(super) fn binary_size(
    params: Option<&super::json::Parameters>,
    name: &str,
) -> Result<Option<usize>> {
    match super::json::param_u64(params, "binary_data_size") {
        Ok(v) => Ok(v.map(|n| usize::try_from(n).unwrap_or(usize::MAX))),
        Err(_) => Err(Error::invalid(format!(
            "input '{name}': parameter 'binary_data_size' must be a non-negative integer"
        ))),
    }
}
