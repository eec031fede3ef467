//! `inference.GRPCInferenceService`: every method decodes (see
//! [`super::convert`]), calls [`Service`], and encodes. Errors map to a
//! `tonic::Code` in [`super::status`], once.

use super::convert;
use super::pb;
use super::pb::grpc_inference_service_server::GrpcInferenceService;
use super::status::{oversize, status};
use crate::error::Error;
use crate::logging::LogControl;
use crate::service::{Protocol, Service};
use crate::telemetry::{self, Phase};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

const STREAM_ROUTE: &str = "/inference.GRPCInferenceService/ModelStreamInfer";
const PANIC_MESSAGE: &str =
    "internal error: the request handler failed; the server log has the details";

/// Requests of one `ModelStreamInfer` call that may run at once; the stream
/// is not read further until one finishes (backpressure, bounded memory).
const STREAM_CONCURRENCY: usize = 64;

type GrpcResult<T> = Result<Response<T>, Status>;

/// The `GRPCInferenceService` implementation: a thin shell around [`Service`].
#[derive(Debug, Clone)]
pub(crate) struct Inference {
    service: Service,
    logging: LogControl,
    /// For the stream's oversize message (see [`oversize`]).
    max_message_bytes: usize,
}

impl Inference {
    pub fn new(service: Service, logging: LogControl, max_message_bytes: usize) -> Self {
        Self {
            service,
            logging,
            max_message_bytes,
        }
    }

    async fn infer(
        &self,
        request: pb::ModelInferRequest,
        metadata: Option<&tonic::metadata::MetadataMap>,
    ) -> Result<pb::ModelInferResponse, Error> {
        let span = match metadata {
            Some(m) => {
                telemetry::request_span("grpc", &request.model_name, &m.clone().into_headers())
            }
            None => tracing::Span::none(),
        };
        let work = async {
            let max_elements = self.service.limits().max_tensor_elements;
            let request = telemetry::phase_span(Phase::Decode)
                .in_scope(|| convert::infer_request(request, max_elements))?;
            let response = self.service.infer(request, Protocol::Grpc).await?;
            let _encode = telemetry::phase_span(Phase::Encode).entered();
            Ok(convert::infer_response(response))
        };
        work.instrument(span).await
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
        let m = self.service.server_metadata();
        Ok(Response::new(pb::ServerMetadataResponse {
            name: m.name.into(),
            version: m.version.into(),
            extensions: m.extensions.iter().map(|e| e.to_string()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<pb::ModelMetadataRequest>,
    ) -> GrpcResult<pb::ModelMetadataResponse> {
        let r = request.into_inner();
        let version = convert::version("version", &r.version).map_err(status)?;
        let metadata = self.service.metadata(&r.name, version).map_err(status)?;
        Ok(Response::new(convert::metadata(metadata)))
    }

    async fn model_infer(
        &self,
        request: Request<pb::ModelInferRequest>,
    ) -> GrpcResult<pb::ModelInferResponse> {
        let metadata = telemetry::enabled().then(|| request.metadata().clone());
        self.infer(request.into_inner(), metadata.as_ref())
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
        let metadata = telemetry::enabled().then(|| request.metadata().clone());
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
                                let (this, metadata) = (this.clone(), metadata.clone());
                                let model = req.model_name.clone();
                                running.push(async move {
                                    // A panic (a bug) answers this request
                                    // and the stream goes on, as the guard
                                    // does for unary calls. Unwind safety:
                                    // the request is consumed; the service
                                    // keeps its state behind atomics and locks.
                                    let run = std::panic::AssertUnwindSafe(this.infer(req, metadata.as_ref()));
                                    let error = match futures::FutureExt::catch_unwind(run).await {
                                        Ok(Ok(r)) => {
                                            return pb::ModelStreamInferResponse {
                                                error_message: String::new(),
                                                infer_response: Some(r),
                                            };
                                        }
                                        Ok(Err(e)) => e.to_string(),
                                        Err(payload) => {
                                            this.service.handler_panicked(
                                                "grpc",
                                                STREAM_ROUTE,
                                                Some(&model),
                                                payload.as_ref(),
                                            );
                                            PANIC_MESSAGE.to_string()
                                        }
                                    };
                                    pb::ModelStreamInferResponse {
                                        error_message: error,
                                        infer_response: None,
                                    }
                                });
                            }
                            Ok(None) => open = false,
                            Err(e) => {
                                let _ = tx.send(Err(oversize(e, this.max_message_bytes))).await;
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
            config: Some(view.0),
        }))
    }

    async fn model_statistics(
        &self,
        request: Request<pb::ModelStatisticsRequest>,
    ) -> GrpcResult<pb::ModelStatisticsResponse> {
        let r = request.into_inner();
        let version = convert::version("version", &r.version).map_err(status)?;
        let name = (!r.name.is_empty()).then_some(r.name.as_str());
        let stats = self.service.statistics(name, version).map_err(status)?;
        Ok(Response::new(pb::ModelStatisticsResponse {
            model_stats: stats.into_iter().map(convert::statistics).collect(),
        }))
    }

    async fn repository_index(
        &self,
        request: Request<pb::RepositoryIndexRequest>,
    ) -> GrpcResult<pb::RepositoryIndexResponse> {
        let r = request.into_inner();
        let rows = self.service.index(r.ready).map_err(status)?;
        Ok(Response::new(convert::index(rows)))
    }

    async fn repository_model_load(
        &self,
        request: Request<pb::RepositoryModelLoadRequest>,
    ) -> GrpcResult<pb::RepositoryModelLoadResponse> {
        use pb::model_repository_parameter::ParameterChoice;
        let r = request.into_inner();
        let config = match r.parameters.get("config").map(|p| &p.parameter_choice) {
            None => None,
            Some(Some(ParameterChoice::StringParam(text))) => Some(text.clone()),
            Some(Some(ParameterChoice::BytesParam(bytes))) => Some(
                String::from_utf8(bytes.to_vec()).map_err(|_| {
                    status(Error::invalid(
                        "load parameter 'config' must be UTF-8 JSON. Given: bytes that are not UTF-8",
                    ))
                })?,
            ),
            Some(other) => {
                let given = match other {
                    Some(ParameterChoice::BoolParam(_)) => "a bool_param",
                    Some(ParameterChoice::Int64Param(_)) => "an int64_param",
                    _ => "no value",
                };
                return Err(status(Error::invalid(format!(
                    "load parameter 'config' must be a string_param holding a JSON ModelConfig. Given: {given}"
                ))));
            }
        };
        let files = r
            .parameters
            .keys()
            .filter(|k| k.starts_with("file:"))
            .cloned()
            .collect();
        self.service
            .load(&r.model_name, crate::service::LoadOptions { config, files })
            .await
            .map_err(status)?;
        Ok(Response::new(pb::RepositoryModelLoadResponse {}))
    }

    async fn repository_model_unload(
        &self,
        request: Request<pb::RepositoryModelUnloadRequest>,
    ) -> GrpcResult<pb::RepositoryModelUnloadResponse> {
        let r = request.into_inner();
        self.service.unload(&r.model_name).await.map_err(status)?;
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
