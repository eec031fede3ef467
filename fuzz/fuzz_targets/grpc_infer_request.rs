//! The gRPC request conversion (`sluice::grpc::convert::infer_request`):
//! arbitrary bytes decoded with prost as a `ModelInferRequest` (what tonic
//! does with a received message), then converted with the server's default
//! element limit. Properties: no panic; a converted tensor holds exactly the
//! elements its shape declares; the codec's size walk
//! (`sluice::grpc::codec::decoded_size`) never panics and sizes every message
//! prost accepts (a message it could not size would skip the decoded-size
//! check).
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use sluice::grpc::convert::infer_request;
use sluice::grpc::pb::ModelInferRequest;

fuzz_target!(|data: &[u8]| {
    let max_elements = sluice::service::Limits::default().max_tensor_elements;
    let sized = sluice::grpc::codec::decoded_size(data);
    let Ok(message) = ModelInferRequest::decode(data) else {
        return;
    };
    assert!(
        sized.is_some(),
        "prost decodes a message the size walk rejects"
    );
    let Ok(request) = infer_request(message, max_elements) else {
        return;
    };
    for tensor in &request.inputs {
        if let Err(e) = tensor.check_consistent() {
            panic!("converted an inconsistent tensor: {e}");
        }
    }
});
