//! Sluice: a lean, predictable ONNX model inference server speaking the
//! KServe v2 / Open Inference Protocol.
//!
//! # Layout
//! ```text
//! http/ ─┐                       adapters: decode the wire, call the service, encode
//! grpc/ ─┴─▶ service             the only door: infer, metadata, statistics, repository
//!              ▶ registry         the live model set (arc-swap), loading, polling, states
//!                ▶ scheduler/     per-version queue, batcher, instance worker threads
//!                  ▶ runtime/     the ONNX Runtime boundary (the only user of `ort`)
//! edge         one policy before any handler: auth, in-flight caps, deadline
//! net/         listeners: connection cap, TLS, idle timeout, edge metrics
//! auth         bearer tokens and scopes       admission  the in-flight caps
//! repository/  the on-disk layout and each model's config.toml
//! tensor       datatypes, shapes, packed tensor bytes, tensor specs
//! metrics      Prometheus families, labelled by model and version
//! config       ServerConfig and its defaults  cli  flags → ServerConfig
//! logging      log settings changed while serving (Triton's logging API)
//! telemetry/   OpenTelemetry traces: request and batch spans, OTLP export
//! server       start, serve, drain           healthcheck  the probe command
//! error        the one domain error, mapped exhaustively by each adapter
//! fuzzing      the server in-process for fuzz/'s end-to-end targets (not an API)
//! ```
//!
//! [`run`] takes a config, already-bound listeners and a shutdown future, so
//! tests start real servers on port 0.

pub(crate) mod admission;
#[warn(clippy::indexing_slicing)] // request data: get() or a stated invariant
pub(crate) mod auth;
pub mod cli;
pub(crate) mod config;
#[warn(clippy::indexing_slicing)] // request data: get() or a stated invariant
pub(crate) mod edge;
pub(crate) mod error;
#[doc(hidden)]
pub mod fuzzing;
#[warn(clippy::indexing_slicing)] // request data: get() or a stated invariant
pub mod grpc;
pub mod healthcheck;
#[warn(clippy::indexing_slicing)] // request data: get() or a stated invariant
pub mod http;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod registry;
pub mod repository;
pub mod runtime;
pub mod scheduler;
mod server;
#[warn(clippy::indexing_slicing)] // request data: get() or a stated invariant
pub mod service;
pub mod telemetry;
#[warn(clippy::indexing_slicing)] // request data: get() or a stated invariant
pub mod tensor;

pub use config::ServerConfig;
pub use server::{Listeners, run};

/// Probes `url` with a GET: true on a 2xx answer (see [`healthcheck::probe`]).
pub async fn healthcheck(url: &str) -> bool {
    healthcheck::probe(url).await.is_ok()
}
