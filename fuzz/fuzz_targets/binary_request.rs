//! The REST request decoder with Triton's binary tensor extension
//! (`sluice::http::codec::decode_body`): JSON header of
//! `Inference-Header-Content-Length` bytes, then raw tensors.
//!
//! Input framing: everything up to the first `\n` is the value of the
//! `Inference-Header-Content-Length` header (empty: the header is not sent,
//! so the body is plain JSON); the rest is the body. With no `\n` at all the
//! whole input is a plain JSON body. Seeds in `fuzz/seeds/binary_request/`.
#![no_main]

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use sluice::http::codec::binary::HEADER_LENGTH;
use sluice::http::codec::decode_body;

fuzz_target!(|data: &[u8]| {
    let max_elements = sluice::service::Limits::default().max_tensor_elements;
    let mut headers = HeaderMap::new();
    let body = match data.iter().position(|&b| b == b'\n') {
        None => data,
        Some(at) => {
            let (value, rest) = (&data[..at], &data[at + 1..]);
            if !value.is_empty() {
                // Bytes no HTTP stack would deliver as a header value: skip.
                let Ok(value) = HeaderValue::from_bytes(value) else {
                    return;
                };
                headers.insert(HEADER_LENGTH, value);
            }
            rest
        }
    };
    let Ok(request) = decode_body(
        "m".to_string(),
        None,
        &headers,
        Bytes::copy_from_slice(body),
        max_elements,
    ) else {
        return;
    };
    for tensor in &request.inputs {
        if let Err(e) = tensor.check_consistent() {
            panic!("decoded an inconsistent tensor: {e}");
        }
    }
});
