//! The gRPC side of the edge policy ([`crate::edge`]): one tower layer in
//! front of every gRPC service. It finds the method's scope in a table,
//! runs the policy with the `authorization` metadata, and turns tonic's
//! "message too large" into `RESOURCE_EXHAUSTED` with our message (tonic
//! says `OUT_OF_RANGE`; the gRPC spec says a message over the limit is
//! `RESOURCE_EXHAUSTED`).
//!
//! A unary call of the inference service is held until its first frame
//! arrives: the 5-byte gRPC message header there gives the message length,
//! which is reserved from the server-wide byte budget (as a REST body's
//! `Content-Length` is), and for `ModelInfer` the model name and version,
//! which lead the encoded request, let a full queue refuse the call before
//! its message is read and decoded. What was read is put back in front of
//! the body, so tonic sees the stream untouched.
//!
//! For `ModelStreamInfer` the permit and the timeout cover opening the stream;
//! each message on it then goes through its model's bounded queue.

use super::conn::ConnInfo;
use super::pb::grpc_inference_service_server::GrpcInferenceServiceServer;
use super::service::Inference;
use super::status::{oversize, status};
use crate::admission::Admitted;
use crate::auth::Access;
use crate::edge::Edge;
use crate::service::{Protocol, Service};
use bytes::{Buf, Bytes};
use futures::StreamExt;
use futures::future::BoxFuture;
use http_body::Frame;
use http_body_util::{BodyExt, BodyStream, StreamBody};
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::body::Body;
use tonic::codegen::http;
use tonic::{Code, Status};

/// What the layer enforces.
#[derive(Debug, Clone)]
pub(crate) struct GrpcGuard {
    pub(crate) edge: Edge,
    pub(crate) max_message_bytes: usize,
    /// For the queue check before a `ModelInfer` message is read.
    pub(crate) service: Service,
}

const INFERENCE: &str = "/inference.GRPCInferenceService/";
const MODEL_INFER: &str = "/inference.GRPCInferenceService/ModelInfer";
const STREAM_INFER: &str = "/inference.GRPCInferenceService/ModelStreamInfer";

/// The scope each method needs, by full method path. The health service
/// and the liveness and readiness calls are probes; the repository and log
/// settings are administration; everything else (inference, metadata,
/// statistics, configuration, reflection) needs `infer`.
pub(crate) fn access(path: &str) -> Access {
    match path {
        "/grpc.health.v1.Health/Check"
        | "/grpc.health.v1.Health/Watch"
        | "/inference.GRPCInferenceService/ServerLive"
        | "/inference.GRPCInferenceService/ServerReady" => Access::Health,
        "/inference.GRPCInferenceService/RepositoryIndex"
        | "/inference.GRPCInferenceService/RepositoryModelLoad"
        | "/inference.GRPCInferenceService/RepositoryModelUnload"
        | "/inference.GRPCInferenceService/LogSettings" => Access::Admin,
        _ => Access::Infer,
    }
}

/// The inference service as tonic generates it, which the guard calls
/// itself for the methods under [`INFERENCE`].
pub(crate) type InferenceServer = GrpcInferenceServiceServer<Inference>;

/// Wraps tonic's routes (health, reflection, inference) in the guard.
/// Calls of the inference service skip the routes: the guard already knows
/// their path, and tonic's router (an axum router: a path match and two
/// boxed services per call) cost about 3,500 instructions of an iris call.
#[derive(Clone)]
pub(crate) struct GuardLayer {
    pub(crate) guard: Arc<GrpcGuard>,
    pub(crate) inference: InferenceServer,
}

impl<S> tower::Layer<S> for GuardLayer {
    type Service = Guarded<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Guarded {
            inner,
            inference: self.inference.clone(),
            guard: self.guard.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct Guarded<S> {
    inner: S,
    inference: InferenceServer,
    guard: Arc<GrpcGuard>,
}

impl<S> tower::Service<http::Request<Body>> for Guarded<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        let guard = self.guard.clone();
        // The connection is busy until the response (or stream) ends.
        let busy = req.extensions().get::<ConnInfo>().cloned().map(|info| {
            req.extensions_mut().insert(info.tcp);
            info.activity.begin()
        });
        // A reference count; the route is read only if the handler panics.
        let uri = req.uri().clone();
        if uri.path().starts_with(INFERENCE) {
            // tonic's generated service is always ready and never fails
            // (errors are statuses in the response).
            let call = guarded_call(self.inference.clone(), guard.clone(), req);
            let call = futures::FutureExt::map(call, |r| r.map_err(|never| match never {}));
            return Box::pin(finish(call, guard, uri, busy));
        }
        // The ready service handles this call; a fresh clone takes its place.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let call = guarded_call(inner, guard.clone(), req);
        Box::pin(finish(call, guard, uri, busy))
    }
}

/// Runs a guarded call: a handler that panics (a bug) is answered INTERNAL
/// and the connection goes on (see `http::guard::catch_panic`), and the
/// connection stays busy until the response's body ends. Unwind safety:
/// the request is consumed, and the shared service keeps its invariants
/// behind atomics and locks.
async fn finish<F, E>(
    call: F,
    guard: Arc<GrpcGuard>,
    uri: http::Uri,
    busy: Option<crate::net::Busy>,
) -> Result<http::Response<Body>, E>
where
    F: std::future::Future<Output = Result<http::Response<Body>, E>>,
{
    let response = match futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(call)).await
    {
        Ok(response) => response?,
        Err(payload) => {
            guard
                .edge
                .metrics
                .handler_panicked("grpc", uri.path(), None, payload.as_ref());
            status(crate::error::Error::internal(
                "internal error: the request handler failed; the server log has the details",
            ))
            .into_http()
        }
    };
    Ok(match busy {
        None => response,
        Some(busy) => response.map(|body| Body::new(busy.hold(body))),
    })
}

/// Auth, admission, the message budget and queue check, and the timeout,
/// around one call.
async fn guarded_call<S>(
    mut inner: S,
    guard: Arc<GrpcGuard>,
    req: http::Request<Body>,
) -> Result<http::Response<Body>, S::Error>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>,
{
    let access = access(req.uri().path());
    let authorization = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    let pass = match guard
        .edge
        .admit(Protocol::Grpc, access, authorization, None)
    {
        Ok(pass) => pass,
        Err(e) => return Ok(status(e).into_http()),
    };
    if access == Access::Health {
        return inner.call(req).await;
    }
    let mut admitted = pass.admitted;
    let work = async {
        let req = match admit_message(&guard, &mut admitted, req).await {
            Ok(req) => req,
            Err(refused) => return Ok(refused.into_http()),
        };
        inner.call(req).await
    };
    let response = match pass.deadline.run(work).await {
        Ok(response) => response?,
        Err(e) => return Ok(status(e).into_http()),
    };
    drop(admitted);
    // A trailers-only error response carries its status in the headers.
    if let Some(s) = Status::from_header_map(response.headers()) {
        if s.code() == Code::OutOfRange {
            return Ok(oversize(s, guard.max_message_bytes).into_http());
        }
    }
    Ok(response)
}

/// For a unary call of the inference service: waits for the message header,
/// reserves the message's length from the byte budget and, for `ModelInfer`,
/// checks the model's queue. Returns the request with its body intact, or
/// the status that refuses it.
async fn admit_message(
    guard: &GrpcGuard,
    admitted: &mut Admitted,
    req: http::Request<Body>,
) -> Result<http::Request<Body>, Status> {
    let path = req.uri().path();
    if !path.starts_with(INFERENCE) || path == STREAM_INFER {
        return Ok(req);
    }
    let model_infer = path == MODEL_INFER;
    let (parts, body) = req.into_parts();
    let (head, body) = peek(body).await;
    let req = http::Request::from_parts(parts, body);
    let Some(length) = message_length(&head) else {
        return Ok(req); // tonic reports the short or broken body
    };
    guard
        .edge
        .reserve_body(
            Protocol::Grpc,
            admitted,
            length.min(guard.max_message_bytes),
        )
        .map_err(status)?;
    if model_infer {
        if let Some((model, version)) = head.get(5..).and_then(infer_target) {
            guard
                .service
                .precheck(&model, version, Protocol::Grpc)
                .map_err(status)?;
        }
    }
    Ok(req)
}

/// Reads `body` until the 5-byte message header has arrived (or the body
/// ends or fails) and returns what was read, with a body that replays it.
async fn peek(mut body: Body) -> (Bytes, Body) {
    let mut frames: Vec<Result<Frame<Bytes>, Status>> = Vec::new();
    let mut head = bytes::BytesMut::new();
    while head.len() < 5 {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    head.extend_from_slice(data);
                }
                frames.push(Ok(frame));
            }
            Some(Err(e)) => {
                frames.push(Err(e));
                break;
            }
            None => break,
        }
    }
    let replay = futures::stream::iter(frames).chain(BodyStream::new(body));
    (head.freeze(), Body::new(StreamBody::new(replay)))
}

/// The length a gRPC message header (flag byte, u32 big-endian) declares.
fn message_length(head: &[u8]) -> Option<usize> {
    let mut header = head.get(..5)?;
    header.advance(1);
    usize::try_from(header.get_u32()).ok()
}

/// The model name (field 1) and version (field 2) at the start of an
/// encoded `ModelInferRequest`, when both are there and well-formed
/// (encoders write fields in order). `None` leaves the check to decoding.
fn infer_target(mut message: &[u8]) -> Option<(String, Option<u64>)> {
    let model = string_field(&mut message, 0x0a)?;
    // proto3 omits an empty version; one that is there must parse whole.
    let version = if message.first() == Some(&0x12) {
        let v = string_field(&mut message, 0x12)?;
        if v.is_empty() {
            None
        } else {
            Some(v.parse::<u64>().ok()?)
        }
    } else {
        None
    };
    Some((model, version))
}

/// A length-delimited string field with the one-byte `tag`, taken from the
/// front of `message`.
fn string_field(message: &mut &[u8], tag: u8) -> Option<String> {
    if message.first() != Some(&tag) {
        return None;
    }
    message.advance(1);
    let len = usize::try_from(prost::encoding::decode_varint(message).ok()?).ok()?;
    let text = std::str::from_utf8(message.get(..len)?).ok()?.to_string();
    message.advance(len);
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_map_to_access() {
        assert_eq!(access("/grpc.health.v1.Health/Check"), Access::Health);
        assert_eq!(
            access("/inference.GRPCInferenceService/ServerReady"),
            Access::Health
        );
        assert_eq!(
            access("/inference.GRPCInferenceService/RepositoryModelLoad"),
            Access::Admin
        );
        assert_eq!(
            access("/inference.GRPCInferenceService/ModelInfer"),
            Access::Infer
        );
        assert_eq!(
            access("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
            Access::Infer
        );
    }

    #[test]
    fn the_message_header_and_infer_target_are_read_from_the_first_bytes() {
        use prost::Message;
        let request = crate::grpc::pb::ModelInferRequest {
            model_name: "iris".into(),
            model_version: "3".into(),
            id: "x".into(),
            ..Default::default()
        };
        let encoded = request.encode_to_vec();
        let mut framed = vec![0u8];
        framed.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
        framed.extend_from_slice(&encoded);
        assert_eq!(message_length(&framed), Some(encoded.len()));
        assert_eq!(message_length(&framed[..4]), None);
        assert_eq!(
            infer_target(&framed[5..]),
            Some(("iris".to_string(), Some(3)))
        );
        // No version (proto3 leaves it out): the server's choice.
        let latest = crate::grpc::pb::ModelInferRequest {
            model_name: "iris".into(),
            ..Default::default()
        };
        assert_eq!(
            infer_target(&latest.encode_to_vec()),
            Some(("iris".to_string(), None))
        );
        // Cut inside the name or the version, or a version that is not a
        // number: no guess.
        assert_eq!(infer_target(&encoded[..4]), None);
        assert_eq!(infer_target(&encoded[..7]), None);
        let bad = crate::grpc::pb::ModelInferRequest {
            model_name: "iris".into(),
            model_version: "v1".into(),
            ..Default::default()
        };
        assert_eq!(infer_target(&bad.encode_to_vec()), None);
        assert_eq!(infer_target(b"\x22\x00"), None);
    }
}
