//! The inference client the load engine drives. The request is encoded once
//! (JSON body, binary-extension body, or protobuf message with `Bytes` raw
//! contents) and every call only clones reference-counted buffers; one pooled
//! `reqwest::Client` and a few multiplexed tonic channels are reused.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use reqwest::header::{CONTENT_TYPE, HeaderMap};
use serde::Deserialize;
use serde::de::IgnoredAny;
use tonic::transport::{Channel, Endpoint};

use crate::Protocol;
use crate::binary::{self, HEADER_LENGTH};
use crate::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use crate::proto::{ModelInferRequest, model_infer_request::InferInputTensor};
use crate::stats::{ErrorKind, Outcome};
use crate::tensor::InputTensor;

/// Something the load engine can send one inference request to.
pub trait Target: Send + Sync + 'static {
    /// Sends one request and classifies the result.
    fn infer(&self) -> impl Future<Output = Outcome> + Send;
}

/// Shared transport handles.
#[derive(Debug, Clone)]
pub struct Connections {
    /// Pooled HTTP/1.1 client (no TLS).
    pub http: reqwest::Client,
    /// gRPC channels (empty unless the protocol is gRPC).
    pub channels: Vec<Channel>,
}

impl Connections {
    /// Builds the HTTP client and, for gRPC, connects `grpc_connections`
    /// HTTP/2 channels to `grpc_url`.
    pub async fn open(protocol: Protocol, grpc_url: &str, grpc_connections: usize) -> Result<Self> {
        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(usize::MAX)
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .context("building HTTP client")?;
        let mut channels = Vec::new();
        if protocol == Protocol::Grpc {
            let endpoint = Endpoint::from_shared(grpc_url.to_string())
                .with_context(|| format!("invalid --grpc-url {grpc_url:?}"))?
                .tcp_nodelay(true)
                .connect_timeout(Duration::from_secs(5));
            for _ in 0..grpc_connections.max(1) {
                let channel = endpoint
                    .connect()
                    .await
                    .with_context(|| format!("connecting to gRPC endpoint {grpc_url}"))?;
                channels.push(channel);
            }
        }
        Ok(Self { http, channels })
    }
}

/// `{base}/v2/models/{model}[/versions/{version}]`.
pub fn model_url(base: &str, model: &str, version: Option<&str>) -> String {
    let base = base.trim_end_matches('/');
    match version {
        Some(v) => format!("{base}/v2/models/{model}/versions/{v}"),
        None => format!("{base}/v2/models/{model}"),
    }
}

/// A gRPC client with generous message-size limits.
pub fn grpc_client(channel: Channel) -> GrpcInferenceServiceClient<Channel> {
    GrpcInferenceServiceClient::new(channel)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX)
}

enum Kind {
    Rest {
        http: reqwest::Client,
        url: String,
        body: Bytes,
        /// `Some` for the binary extension.
        header_len: Option<usize>,
    },
    Grpc {
        clients: Vec<GrpcInferenceServiceClient<Channel>>,
        next: AtomicUsize,
        request: ModelInferRequest,
    },
}

/// A pre-encoded inference request bound to a transport.
pub struct InferClient {
    kind: Kind,
    timeout: Duration,
    validate: bool,
}

impl std::fmt::Debug for InferClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InferClient")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// What to send and how.
#[derive(Debug, Clone)]
pub struct RequestSpec<'a> {
    /// Protocol.
    pub protocol: Protocol,
    /// HTTP base URL.
    pub url: &'a str,
    /// Model name.
    pub model: &'a str,
    /// Model version.
    pub version: Option<&'a str>,
    /// Input tensors.
    pub inputs: &'a [InputTensor],
    /// Output names to request (binary extension); empty = all.
    pub outputs: &'a [String],
    /// Per-request timeout.
    pub timeout: Duration,
    /// Decode and check every response body.
    pub validate: bool,
}

impl InferClient {
    /// Encodes the request once for `spec.protocol`.
    pub fn new(conns: &Connections, spec: &RequestSpec<'_>) -> Result<Arc<Self>> {
        let url = format!("{}/infer", model_url(spec.url, spec.model, spec.version));
        let kind = match spec.protocol {
            Protocol::RestJson => {
                let inputs: Vec<_> = spec.inputs.iter().map(InputTensor::to_json).collect();
                let body = serde_json::to_vec(&serde_json::json!({ "inputs": inputs }))?;
                Kind::Rest {
                    http: conns.http.clone(),
                    url,
                    body: body.into(),
                    header_len: None,
                }
            }
            Protocol::RestBinary => {
                let enc = binary::encode_request(spec.inputs, spec.outputs)?;
                Kind::Rest {
                    http: conns.http.clone(),
                    url,
                    body: enc.body,
                    header_len: Some(enc.header_len),
                }
            }
            Protocol::Grpc => {
                anyhow::ensure!(!conns.channels.is_empty(), "no gRPC channel is open");
                Kind::Grpc {
                    clients: conns.channels.iter().cloned().map(grpc_client).collect(),
                    next: AtomicUsize::new(0),
                    request: grpc_request(spec.model, spec.version, spec.inputs),
                }
            }
        };
        Ok(Arc::new(Self {
            kind,
            timeout: spec.timeout,
            validate: spec.validate,
        }))
    }

    async fn send(&self) -> Outcome {
        match &self.kind {
            Kind::Rest {
                http,
                url,
                body,
                header_len,
            } => {
                let mut req = http.post(url.as_str()).body(body.clone());
                req = match header_len {
                    Some(n) => req
                        .header(CONTENT_TYPE, "application/octet-stream")
                        .header(HEADER_LENGTH, *n),
                    None => req.header(CONTENT_TYPE, "application/json"),
                };
                let resp = req.send().await.map_err(classify_reqwest)?;
                let status = resp.status();
                let headers = resp.headers().clone();
                // Always drain the body so the connection goes back to the pool.
                let bytes = resp.bytes().await.map_err(classify_reqwest);
                if !status.is_success() {
                    return Err(ErrorKind::Http(status.as_u16()));
                }
                let bytes = bytes?;
                if self.validate {
                    check_rest_response(&headers, &bytes).map_err(|_| ErrorKind::Decode)?;
                }
                Ok(())
            }
            Kind::Grpc {
                clients,
                next,
                request,
            } => {
                let i = next.fetch_add(1, Ordering::Relaxed) % clients.len();
                let mut client = clients[i].clone();
                let resp = client
                    .model_infer(request.clone())
                    .await
                    .map_err(classify_status)?;
                let resp = resp.into_inner();
                if self.validate
                    && !resp.raw_output_contents.is_empty()
                    && resp.raw_output_contents.len() != resp.outputs.len()
                {
                    return Err(ErrorKind::Decode);
                }
                Ok(())
            }
        }
    }
}

impl Target for InferClient {
    async fn infer(&self) -> Outcome {
        match tokio::time::timeout(self.timeout, self.send()).await {
            Ok(outcome) => outcome,
            Err(_) => Err(ErrorKind::Timeout),
        }
    }
}

fn grpc_request(model: &str, version: Option<&str>, inputs: &[InputTensor]) -> ModelInferRequest {
    ModelInferRequest {
        model_name: model.to_string(),
        model_version: version.unwrap_or_default().to_string(),
        inputs: inputs
            .iter()
            .map(|t| InferInputTensor {
                name: t.name.clone(),
                datatype: t.datatype().as_str().to_string(),
                shape: t.shape.clone(),
                ..Default::default()
            })
            .collect(),
        raw_input_contents: inputs
            .iter()
            .map(|t| Bytes::from(t.data.to_raw()))
            .collect(),
        ..Default::default()
    }
}

#[derive(Deserialize)]
struct JsonResponse {
    #[allow(dead_code)]
    outputs: Vec<IgnoredAny>,
}

/// Checks that a 2xx REST body is a well-formed inference response.
fn check_rest_response(headers: &HeaderMap, body: &Bytes) -> Result<()> {
    match headers.get(HEADER_LENGTH) {
        Some(v) => {
            let n = v.to_str()?.trim().parse::<usize>()?;
            binary::decode_body(body, Some(n), "outputs")?;
        }
        None => {
            serde_json::from_slice::<JsonResponse>(body)?;
        }
    }
    Ok(())
}

fn classify_reqwest(e: reqwest::Error) -> ErrorKind {
    if e.is_timeout() {
        ErrorKind::Timeout
    } else if e.is_connect() {
        ErrorKind::Connect
    } else if let Some(status) = e.status() {
        ErrorKind::Http(status.as_u16())
    } else {
        ErrorKind::Other
    }
}

fn classify_status(s: tonic::Status) -> ErrorKind {
    let msg = s.message().to_ascii_lowercase();
    match s.code() {
        tonic::Code::Unavailable if msg.contains("connect") => ErrorKind::Connect,
        tonic::Code::DeadlineExceeded if msg.contains("timeout") => ErrorKind::Timeout,
        code => ErrorKind::Grpc(code),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::TensorData;

    #[test]
    fn urls_and_grpc_request_shape() {
        assert_eq!(
            model_url("http://h:1/", "m", None),
            "http://h:1/v2/models/m"
        );
        assert_eq!(
            model_url("http://h:1", "m", Some("2")),
            "http://h:1/v2/models/m/versions/2"
        );
        let t = InputTensor {
            name: "x".into(),
            shape: vec![1, 2],
            data: TensorData::F32(vec![1.0, 2.0]),
        };
        let r = grpc_request("m", Some("3"), &[t]);
        assert_eq!(r.model_version, "3");
        assert_eq!(r.inputs[0].datatype, "FP32");
        assert_eq!(r.raw_input_contents[0].len(), 8);
    }

    #[test]
    fn rest_response_validation() {
        let mut h = HeaderMap::new();
        assert!(check_rest_response(&h, &Bytes::from_static(b"{\"outputs\":[]}")).is_ok());
        assert!(check_rest_response(&h, &Bytes::from_static(b"{\"error\":\"x\"}")).is_err());
        h.insert(HEADER_LENGTH, "14".parse().unwrap());
        assert!(check_rest_response(&h, &Bytes::from_static(b"{\"outputs\":[]}")).is_ok());
        assert!(check_rest_response(&h, &Bytes::from_static(b"{\"outputs\":[]}xx")).is_err());
    }
}
