//! The REST wire formats, stateless and below the routes: KServe v2 JSON
//! tensors ([`json`]), Triton's binary tensor extension ([`binary`]), and
//! the inference request decoder and response encoder built on both
//! ([`infer`]).

pub mod binary;
pub(crate) mod describe;
pub mod infer;
pub mod json;

/// Sets `key` of the JSON object `object` (built here with `json!`); a
/// non-object is left alone. Replaces `value[key] = ...`, which panics on a
/// non-object.
fn set(object: &mut serde_json::Value, key: &str, value: serde_json::Value) {
    if let Some(map) = object.as_object_mut() {
        map.insert(key.to_string(), value);
    }
}

pub use infer::{OutputFormat, decode_body, decode_request, encode_response};
