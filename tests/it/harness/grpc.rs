//! The gRPC client of `inference.GRPCInferenceService`, generated from the
//! same protos as the server, and raw requests for it.

use sluice::grpc::pb::{self, grpc_inference_service_client::GrpcInferenceServiceClient};
use sluice::tensor::{Tensor, encode_raw};
use std::net::SocketAddr;
use tonic::transport::Channel;

pub type Client = GrpcInferenceServiceClient<Channel>;

pub async fn client(addr: SocketAddr) -> Client {
    GrpcInferenceServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
        .max_decoding_message_size(usize::MAX)
}

/// A `ModelInferRequest` carrying `inputs` in `raw_input_contents`.
pub fn raw_request(model: &str, inputs: &[Tensor]) -> pb::ModelInferRequest {
    pb::ModelInferRequest {
        model_name: model.into(),
        inputs: inputs
            .iter()
            .map(|t| pb::model_infer_request::InferInputTensor {
                name: t.name.clone(),
                datatype: t.datatype.as_str().into(),
                shape: t.shape.iter().map(|&d| d as i64).collect(),
                ..Default::default()
            })
            .collect(),
        raw_input_contents: inputs.iter().map(|t| encode_raw(&t.data)).collect(),
        ..Default::default()
    }
}

/// Sends `requests` on one `ModelStreamInfer` stream and reads it to its
/// end: the responses that answered (in arrival order) and the error
/// messages of those that failed.
pub async fn stream(
    client: &mut Client,
    requests: Vec<pb::ModelInferRequest>,
) -> (Vec<pb::ModelInferResponse>, Vec<String>) {
    let mut responses = client
        .model_stream_infer(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let (mut ok, mut errors) = (Vec::new(), Vec::new());
    while let Some(r) = responses.message().await.unwrap() {
        match r.infer_response {
            Some(resp) if r.error_message.is_empty() => ok.push(resp),
            _ => errors.push(r.error_message),
        }
    }
    (ok, errors)
}
