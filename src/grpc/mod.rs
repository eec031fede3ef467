//! The gRPC adapter: `inference.GRPCInferenceService` (KServe v2 plus
//! Triton's configuration, statistics, repository and streaming extensions),
//! `grpc.health.v1.Health`, and server reflection.
//!
//! Like the REST handlers, every method decodes (see [`convert`]), calls
//! [`Service`], and encodes; errors map to a `tonic::Code` in [`status`], once.

pub mod codec;
pub mod convert;
pub mod guard;

use crate::error::Error;
use crate::service::{Protocol, Service};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// The code generated from `proto/` by `build.rs`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod pb {
    pub use crate::repository::pbtxt::pb::*;
    tonic::include_proto!("inference");
}

/// The encoded `FileDescriptorSet` of `proto/`, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/inference_descriptor.bin"));

/// Requests of one `ModelStreamInfer` call that may run at once; the stream
/// is not read further until one finishes (backpressure, bounded memory).
const STREAM_CONCURRENCY: usize = 64;

use pb::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};

/// Domain error → gRPC status, exhaustively (mirrors `http::error`).
pub fn status(error: Error) -> Status {
    let code = match &error {
        Error::InvalidArgument(_) => tonic::Code::InvalidArgument,
        Error::TooLarge(_) => tonic::Code::ResourceExhausted,
        Error::NotFound(_) => tonic::Code::NotFound,
        Error::Unavailable(_) => tonic::Code::Unavailable,
        Error::Overloaded { .. } => tonic::Code::Unavailable,
        Error::DeadlineExceeded(_) => tonic::Code::DeadlineExceeded,
        Error::ClientTimeout(_) => tonic::Code::DeadlineExceeded,
        Error::Unauthenticated(_) => tonic::Code::Unauthenticated,
        Error::PermissionDenied(_) => tonic::Code::PermissionDenied,
        Error::Internal(_) => tonic::Code::Internal,
    };
    let mut status = Status::new(code, error.to_string());
    if let Error::Overloaded { retry_after, .. } = &error {
        let secs = retry_after.as_secs().max(1).to_string();
        if let Ok(value) = secs.parse() {
            status.metadata_mut().insert("retry-after", value);
        }
    }
    status
}

type GrpcResult<T> = Result<Response<T>, Status>;

/// The `GRPCInferenceService` implementation: a thin shell around [`Service`].
#[derive(Debug, Clone)]
pub struct Inference {
    service: Service,
    logging: crate::logging::LogControl,
    /// For the stream's oversize message (see [`guard::oversize`]).
    max_message_bytes: usize,
}

impl Inference {
    pub fn new(
        service: Service,
        logging: crate::logging::LogControl,
        max_message_bytes: usize,
    ) -> Self {
        Self {
            service,
            logging,
            max_message_bytes,
        }
    }

    async fn infer(&self, request: pb::ModelInferRequest) -> Result<pb::ModelInferResponse, Error> {
        let request = convert::infer_request(request, self.service.limits().max_tensor_elements)?;
        let response = self.service.infer(request, Protocol::Grpc).await?;
        Ok(convert::infer_response(response))
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for Inference {
    async fn server_live(
        &self,
        _: Request<pb::ServerLiveRequest>,
    ) -> GrpcResult<pb::ServerLiveResponse> {
        Ok(Response::new(pb::ServerLiveResponse {
            live: self.service.is_live(),
        }))
    }

    async fn server_ready(
        &self,
        _: Request<pb::ServerReadyRequest>,
    ) -> GrpcResult<pb::ServerReadyResponse> {
        Ok(Response::new(pb::ServerReadyResponse {
            ready: self.service.is_ready(),
        }))
    }

    /// An unknown model is not ready (no error), as Triton answers.
    async fn model_ready(
        &self,
        request: Request<pb::ModelReadyRequest>,
    ) -> GrpcResult<pb::ModelReadyResponse> {
        let r = request.into_inner();
        let version = convert::version("version", &r.version).map_err(status)?;
        let ready = match self.service.model_ready(&r.name, version) {
            Ok(ready) => ready,
            Err(Error::NotFound(_)) => false,
            Err(e) => return Err(status(e)),
        };
        Ok(Response::new(pb::ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<pb::ServerMetadataRequest>,
    ) -> GrpcResult<pb::ServerMetadataResponse> {
        Ok(Response::new(pb::ServerMetadataResponse {
            name: "sluice".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: crate::service::EXTENSIONS
                .iter()
                .map(|e| e.to_string())
                .collect(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<pb::ModelMetadataRequest>,
    ) -> GrpcResult<pb::ModelMetadataResponse> {
        let r = request.into_inner();
        let version = convert::version("version", &r.version).map_err(status)?;
        let v = self.service.resolve(&r.name, version).map_err(status)?;
        let versions = match version {
            Some(_) => vec![v.version.to_string()],
            None => self
                .service
                .registry()
                .served()
                .get(&v.model)
                .map(|m| m.versions.keys().map(u64::to_string).collect())
                .unwrap_or_default(),
        };
        Ok(Response::new(convert::metadata(&v, versions)))
    }

    async fn model_infer(
        &self,
        request: Request<pb::ModelInferRequest>,
    ) -> GrpcResult<pb::ModelInferResponse> {
        self.infer(request.into_inner())
            .await
            .map(Response::new)
            .map_err(status)
    }

    type ModelStreamInferStream = ReceiverStream<Result<pb::ModelStreamInferResponse, Status>>;

    /// Runs the stream's requests concurrently (up to [`STREAM_CONCURRENCY`]);
    /// responses come back as they finish, each carrying its request's `id`.
    /// A failed request answers `error_message` and the stream goes on, as
    /// Triton does.
    async fn model_stream_infer(
        &self,
        request: Request<tonic::Streaming<pb::ModelInferRequest>>,
    ) -> GrpcResult<Self::ModelStreamInferStream> {
        let mut incoming = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(STREAM_CONCURRENCY);
        let this = self.clone();
        tokio::spawn(async move {
            let mut running = FuturesUnordered::new();
            let mut open = true;
            loop {
                tokio::select! {
                    message = incoming.message(), if open && running.len() < STREAM_CONCURRENCY => {
                        match message {
                            Ok(Some(req)) => {
                                let this = this.clone();
                                running.push(async move {
                                    match this.infer(req).await {
                                        Ok(r) => pb::ModelStreamInferResponse {
                                            error_message: String::new(),
                                            infer_response: Some(r),
                                        },
                                        Err(e) => pb::ModelStreamInferResponse {
                                            error_message: e.to_string(),
                                            infer_response: None,
                                        },
                                    }
                                });
                            }
                            Ok(None) => open = false,
                            Err(e) => {
                                let _ = tx.send(Err(guard::oversize(e, this.max_message_bytes))).await;
                                return;
                            }
                        }
                    }
                    Some(done) = running.next(), if !running.is_empty() => {
                        if tx.send(Ok(done)).await.is_err() {
                            return; // the client went away
                        }
                    }
                    else => return,
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn model_config(
        &self,
        request: Request<pb::ModelConfigRequest>,
    ) -> GrpcResult<pb::ModelConfigResponse> {
        let r = request.into_inner();
        let version = convert::version("version", &r.version).map_err(status)?;
        let view = self
            .service
            .model_config(&r.name, version)
            .map_err(status)?;
        Ok(Response::new(pb::ModelConfigResponse {
            config: Some(convert::config(&view)),
        }))
    }

    async fn model_statistics(
        &self,
        request: Request<pb::ModelStatisticsRequest>,
    ) -> GrpcResult<pb::ModelStatisticsResponse> {
        let r = request.into_inner();
        let version = convert::version("version", &r.version).map_err(status)?;
        let name = (!r.name.is_empty()).then_some(r.name.as_str());
        let versions = self.service.stats_versions(name, version).map_err(status)?;
        Ok(Response::new(pb::ModelStatisticsResponse {
            model_stats: versions.iter().map(|v| convert::statistics(v)).collect(),
        }))
    }

    async fn repository_index(
        &self,
        request: Request<pb::RepositoryIndexRequest>,
    ) -> GrpcResult<pb::RepositoryIndexResponse> {
        let r = request.into_inner();
        let rows = self.service.repository_index(r.ready).map_err(status)?;
        Ok(Response::new(convert::index(rows)))
    }

    async fn repository_model_load(
        &self,
        request: Request<pb::RepositoryModelLoadRequest>,
    ) -> GrpcResult<pb::RepositoryModelLoadResponse> {
        let r = request.into_inner();
        if let Some(key) = r
            .parameters
            .keys()
            .find(|k| *k == "config" || k.starts_with("file:"))
        {
            return Err(status(Error::invalid(format!(
                "load parameter '{key}' is not supported: models load from the repository on disk"
            ))));
        }
        self.service
            .load_model(&r.model_name)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::RepositoryModelLoadResponse {}))
    }

    async fn repository_model_unload(
        &self,
        request: Request<pb::RepositoryModelUnloadRequest>,
    ) -> GrpcResult<pb::RepositoryModelUnloadResponse> {
        let r = request.into_inner();
        self.service
            .unload_model(&r.model_name)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::RepositoryModelUnloadResponse {}))
    }

    async fn log_settings(
        &self,
        request: Request<pb::LogSettingsRequest>,
    ) -> GrpcResult<pb::LogSettingsResponse> {
        use crate::logging::Value;
        use pb::log_settings_request::setting_value::ParameterChoice as In;
        use pb::log_settings_response::{SettingValue, setting_value::ParameterChoice as Out};
        let mut changes = std::collections::BTreeMap::new();
        for (key, value) in request.into_inner().settings {
            let value = match value.parameter_choice {
                Some(In::BoolParam(b)) => Value::Bool(b),
                Some(In::Uint32Param(u)) => Value::Uint(u),
                Some(In::StringParam(s)) => Value::String(s),
                None => {
                    return Err(status(Error::invalid(format!(
                        "log setting '{key}' has no value"
                    ))));
                }
            };
            changes.insert(key, value);
        }
        let settings = if changes.is_empty() {
            self.logging.get()
        } else {
            self.logging.update(changes).map_err(status)?
        };
        let settings = settings
            .into_iter()
            .map(|(k, v)| {
                let choice = match v {
                    Value::Bool(b) => Out::BoolParam(b),
                    Value::Uint(u) => Out::Uint32Param(u),
                    Value::String(s) => Out::StringParam(s),
                };
                (
                    k,
                    SettingValue {
                        parameter_choice: Some(choice),
                    },
                )
            })
            .collect();
        Ok(Response::new(pb::LogSettingsResponse { settings }))
    }
}

/// Settings of the gRPC adapter.
#[derive(Debug, Clone)]
pub struct GrpcConfig {
    /// Largest accepted request message; larger gets `RESOURCE_EXHAUSTED`.
    /// Responses are not limited.
    pub max_message_bytes: usize,
    /// Concurrent streams (calls) on one HTTP/2 connection.
    pub max_concurrent_streams: u32,
    /// Largest header list (metadata) of a call.
    pub max_header_bytes: usize,
    /// Keep-alive ping interval; a peer that does not answer is dropped.
    pub keepalive_interval: Option<Duration>,
}

/// What tonic puts in every request's extensions: the addresses, and the
/// connection's request tracker for its idle timeout.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub tcp: tonic::transport::server::TcpConnectInfo,
    pub activity: std::sync::Arc<crate::net::Activity>,
}

/// A connection [`crate::net`] admitted, as tonic sees it.
impl tonic::transport::server::Connected for crate::net::Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        ConnInfo {
            tcp: tonic::transport::server::TcpConnectInfo {
                local_addr: self.local,
                remote_addr: self.remote,
            },
            activity: self.activity(),
        }
    }
}

/// Serves gRPC on the connections from `incoming` until it ends (the accept
/// loop stops on the same signal as `shutdown` and closes the channel once
/// the connections it accepted have been handed over, so none is dropped
/// unserved); then every connection gets GOAWAY and is waited for.
/// Health follows the server's readiness: `SERVING` once started,
/// `NOT_SERVING` while draining.
pub async fn serve(
    service: Service,
    logging: crate::logging::LogControl,
    incoming: tokio::sync::mpsc::Receiver<crate::net::Conn>,
    config: GrpcConfig,
    guard: guard::GrpcGuard,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    codec::allow_decoded_bytes(service.limits().max_request_bytes);
    let inference = GrpcInferenceServiceServer::new(Inference::new(
        service.clone(),
        logging,
        config.max_message_bytes,
    ))
    .max_decoding_message_size(config.max_message_bytes)
    .max_encoding_message_size(usize::MAX);
    let (health, health_service) = tonic_health::server::health_reporter();
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let mut shutdown: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(shutdown);
    let health_watch = async move {
        let mut last = None;
        loop {
            let ready = service.is_ready();
            if last != Some(ready) {
                let s = if ready {
                    tonic_health::ServingStatus::Serving
                } else {
                    tonic_health::ServingStatus::NotServing
                };
                health.set_service_status("", s).await;
                health
                    .set_service_status("inference.GRPCInferenceService", s)
                    .await;
                last = Some(ready);
            }
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    };
    tokio::spawn(health_watch);

    let keepalive_timeout = config
        .keepalive_interval
        .map(|i| i.max(Duration::from_secs(1)));
    tonic::transport::Server::builder()
        .max_concurrent_streams(config.max_concurrent_streams)
        .http2_max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX))
        .http2_keepalive_interval(config.keepalive_interval)
        .http2_keepalive_timeout(keepalive_timeout)
        .layer(guard::GuardLayer(std::sync::Arc::new(guard)))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(inference)
        // The end of `incoming` is the stop; a signal that never fires only
        // selects tonic's graceful mode (GOAWAY, then wait for connections).
        .serve_with_incoming_shutdown(
            ReceiverStream::new(incoming).map(Ok::<_, std::io::Error>),
            std::future::pending::<()>(),
        )
        .await?;
    Ok(())
}
