//! The whole server in-process, for the end-to-end fuzz targets of `fuzz/`
//! (`rest_router`, `grpc_service`): the REST router and the gRPC service
//! implementation that [`crate::run`] serves, built by the same code
//! ([`crate::server::core`], [`crate::server::load_models`]) over a real
//! model repository, called without a socket. Not a stable API.
//!
//! A [`Harness`] owns a current-thread tokio runtime and blocks on each
//! call, so one fuzz input runs to its end before the next starts. Model
//! loads, inference and the scheduler run on their own threads as in the
//! server. [`Harness::restore`] puts the model set back as the start-up load
//! left it, so an input that unloads a model does not change what the
//! next one sees (libFuzzer replays an input alone; findings must replay).

use crate::grpc::pb;
use crate::grpc::pb::grpc_inference_service_server::GrpcInferenceService as _;
use crate::grpc::service::Inference;
use crate::registry::Registry;
use crate::server::{Core, core, load_models};
use crate::service::Service;
use crate::{ServerConfig, http as rest};
use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::BodyExt as _;
use std::sync::Arc;

pub use tonic::{Code, Status};

/// One gRPC call of `inference.GRPCInferenceService`, with its request.
/// `ModelStreamInfer` is left out: it runs each message through the same
/// path as `ModelInfer`, and a `tonic::Streaming` needs a transport body.
#[derive(Debug, Clone)]
pub enum GrpcCall {
    ServerLive,
    ServerReady,
    ServerMetadata,
    ModelReady(pb::ModelReadyRequest),
    ModelMetadata(pb::ModelMetadataRequest),
    ModelInfer(pb::ModelInferRequest),
    ModelConfig(pb::ModelConfigRequest),
    ModelStatistics(pb::ModelStatisticsRequest),
    RepositoryIndex(pb::RepositoryIndexRequest),
    RepositoryModelLoad(pb::RepositoryModelLoadRequest),
    RepositoryModelUnload(pb::RepositoryModelUnloadRequest),
    LogSettings(pb::LogSettingsRequest),
}

/// The answer to a [`GrpcCall`]; only inference's is kept whole.
#[derive(Debug, Clone)]
pub enum GrpcReply {
    Infer(pb::ModelInferResponse),
    Other,
}

/// A REST response, its body read whole.
#[derive(Debug, Clone)]
pub struct RestResponse {
    pub status: http::StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

fn other<T>(_: T) -> GrpcReply {
    GrpcReply::Other
}

/// The server's REST router and gRPC service over one loaded repository.
pub struct Harness {
    runtime: tokio::runtime::Runtime,
    /// The REST app as `http::serve` serves it (without a connection).
    router: rest::App,
    grpc: Inference,
    service: Service,
    registry: Arc<Registry>,
    /// The repository index after the start-up load: what `restore` returns to.
    baseline: Vec<IndexState>,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness")
            .field("baseline", &self.baseline)
            .finish_non_exhaustive()
    }
}

/// One row of the repository index, comparable.
#[derive(Debug, Clone, PartialEq, Eq)]
struct IndexState {
    name: String,
    version: Option<u64>,
    state: &'static str,
}

impl Harness {
    /// Loads ONNX Runtime and every model of `config.model_repository`, as
    /// `sluice serve` would with this config (a model that fails to load is
    /// served as UNAVAILABLE unless `exit_on_error`).
    pub fn new(config: ServerConfig) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the tokio runtime")?;
        let Core {
            service,
            registry,
            http_guard,
            ..
        } = core(&config)?;
        runtime.block_on(load_models(&config, &registry, &service))?;
        let router = rest::app(service.clone(), http_guard, config.logging.clone());
        let max_message_bytes = config
            .grpc_max_message_bytes
            .unwrap_or(config.http.max_body_bytes);
        let grpc = Inference::new(service.clone(), config.logging.clone(), max_message_bytes);
        let mut harness = Self {
            runtime,
            router,
            grpc,
            service,
            registry,
            baseline: Vec::new(),
        };
        harness.baseline = harness.index()?;
        Ok(harness)
    }

    /// Names of the models in the repository (loaded or not), sorted.
    pub fn models(&self) -> Vec<String> {
        let mut names: Vec<String> = self.baseline.iter().map(|r| r.name.clone()).collect();
        names.dedup();
        names
    }

    /// Sends `request` through the router, as hyper would hand it over.
    pub fn rest(&self, request: http::Request<Bytes>) -> RestResponse {
        let request = request.map(axum::body::Body::from);
        self.runtime.block_on(async {
            let response = self.router.respond(request, None).await;
            let (parts, body) = response.into_parts();
            let body = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                // Our bodies are in memory; an error here is a finding.
                Err(e) => panic!("response body failed: {e}"),
            };
            RestResponse {
                status: parts.status,
                headers: parts.headers,
                body,
            }
        })
    }

    /// Calls one method of the gRPC service implementation.
    pub fn grpc(&self, call: GrpcCall) -> Result<GrpcReply, Status> {
        use tonic::Request;
        let g = &self.grpc;
        self.runtime.block_on(async {
            match call {
                GrpcCall::ServerLive => g
                    .server_live(Request::new(pb::ServerLiveRequest {}))
                    .await
                    .map(other),
                GrpcCall::ServerReady => g
                    .server_ready(Request::new(pb::ServerReadyRequest {}))
                    .await
                    .map(other),
                GrpcCall::ServerMetadata => g
                    .server_metadata(Request::new(pb::ServerMetadataRequest {}))
                    .await
                    .map(other),
                GrpcCall::ModelReady(r) => g.model_ready(Request::new(r)).await.map(other),
                GrpcCall::ModelMetadata(r) => g.model_metadata(Request::new(r)).await.map(other),
                GrpcCall::ModelInfer(r) => g
                    .model_infer(Request::new(r))
                    .await
                    .map(|r| GrpcReply::Infer(r.into_inner())),
                GrpcCall::ModelConfig(r) => g.model_config(Request::new(r)).await.map(other),
                GrpcCall::ModelStatistics(r) => {
                    g.model_statistics(Request::new(r)).await.map(other)
                }
                GrpcCall::RepositoryIndex(r) => {
                    g.repository_index(Request::new(r)).await.map(other)
                }
                GrpcCall::RepositoryModelLoad(r) => {
                    g.repository_model_load(Request::new(r)).await.map(other)
                }
                GrpcCall::RepositoryModelUnload(r) => {
                    g.repository_model_unload(Request::new(r)).await.map(other)
                }
                GrpcCall::LogSettings(r) => g.log_settings(Request::new(r)).await.map(other),
            }
        })
    }

    /// Reloads every model whose index rows differ from the start-up load's
    /// (unloaded, or reloaded and failed). `Err` names a model that served at
    /// the start and cannot be brought back: a finding.
    pub fn restore(&self) -> Result<(), String> {
        let now = self.index().map_err(|e| format!("{e:#}"))?;
        if now == self.baseline {
            return Ok(());
        }
        let mut changed: Vec<&str> = Vec::new();
        for name in now.iter().chain(&self.baseline).map(|r| r.name.as_str()) {
            let rows = |index: &[IndexState]| -> Vec<IndexState> {
                index.iter().filter(|r| r.name == name).cloned().collect()
            };
            if rows(&now) != rows(&self.baseline) && !changed.contains(&name) {
                changed.push(name);
            }
        }
        for name in changed {
            let result = self
                .runtime
                .block_on(self.registry.load_internal(name))
                .map_err(|e| e.to_string());
            let serves_at_start = self
                .baseline
                .iter()
                .any(|r| r.name == name && r.state == "READY");
            if serves_at_start {
                result.map_err(|e| format!("model '{name}' cannot be loaded again: {e}"))?;
            }
        }
        let after = self.index().map_err(|e| format!("{e:#}"))?;
        if after != self.baseline {
            return Err(format!(
                "the model set differs from the start-up load after reloading: {after:?}, at start {:?}",
                self.baseline
            ));
        }
        Ok(())
    }

    fn index(&self) -> anyhow::Result<Vec<IndexState>> {
        let rows = self
            .service
            .index(false)
            .map_err(|e| anyhow::anyhow!("repository index: {e}"))?;
        Ok(rows
            .into_iter()
            .map(|r| IndexState {
                name: r.name,
                version: r.version,
                state: r.state,
            })
            .collect())
    }
}
