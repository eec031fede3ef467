//! The REST wire formats, stateless and below the routes: KServe v2 JSON
//! tensors ([`json`]), Triton's binary tensor extension ([`binary`]), and
//! the inference request decoder and response encoder built on both
//! ([`infer`]).

pub mod binary;
pub(crate) mod describe;
pub mod infer;
pub mod json;

pub use infer::{OutputFormat, decode_body, decode_request, encode_response};
