//! The protocol-neutral operations, and the only door from the adapters to
//! the models: every adapter (REST JSON, REST binary, gRPC, v1 predict)
//! decodes its wire format into the plain values of [`types`], calls a
//! [`Service`] method, and encodes what it returns. Validation, admission
//! to the queue, timing and metrics live here, once; no adapter sees the
//! registry, the scheduler or the runtime.

mod cache;
mod classify;
mod control;
mod describe;
mod ensemble;
mod infer;
pub(crate) mod stats;
mod types;
mod validate;

pub(crate) use stats::{StatDuration, VersionStats};
pub use types::{
    EXTENSIONS, IndexRow, InferRequest, InferResponse, Limits, LoadOptions, ModelConfigView,
    ModelMetadata, Protocol, ServerMetadata,
};

use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::registry::Registry;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The cheap, cloneable handle every adapter holds.
#[derive(Debug, Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Arc<Registry>,
    metrics: Metrics,
    limits: Limits,
    /// Readiness also needs every model meant to be served to be ready.
    strict_readiness: bool,
    /// Set once the startup load finished.
    started: AtomicBool,
    /// Set at SIGTERM: readiness turns false at once.
    draining: AtomicBool,
    /// Tests only: the model whose metadata and inference calls panic.
    panic_for_model: Option<String>,
    /// The response cache; `None` when `--cache-size-bytes` is 0.
    cache: Option<cache::ResponseCache>,
}

impl Service {
    pub fn new(
        registry: Arc<Registry>,
        metrics: Metrics,
        limits: Limits,
        strict_readiness: bool,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                registry,
                metrics,
                limits,
                strict_readiness,
                started: AtomicBool::new(false),
                draining: AtomicBool::new(false),
                panic_for_model: None,
                cache: None,
            }),
        }
    }

    /// Fault injection for tests of the panic handling (see
    /// `ServerConfig::panic_for_model`); call before cloning.
    pub(crate) fn with_panic_for_model(mut self, model: Option<String>) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.panic_for_model = model;
        }
        self
    }

    /// Turns the response cache on with a bound of `bytes` (0: off); call
    /// before cloning.
    pub(crate) fn with_response_cache(mut self, bytes: usize) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.cache = cache::ResponseCache::new(bytes, inner.metrics.cache.clone());
        }
        self
    }

    /// Counts and logs a request handler's panic (see
    /// `http::guard::catch_panic`): for the adapters' own tasks, such as a
    /// gRPC stream's requests, which no middleware wraps.
    pub(crate) fn handler_panicked(
        &self,
        protocol: &str,
        route: &str,
        model: Option<&str>,
        payload: &(dyn std::any::Any + Send),
    ) {
        self.inner
            .metrics
            .edge
            .handler_panicked(protocol, route, model, payload);
    }

    /// What one request may ask for; the decoders check element counts
    /// against it before allocating.
    pub(crate) fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    // === health ===

    /// Marks the startup load as finished.
    pub fn set_started(&self) {
        self.inner.started.store(true, Ordering::Release);
    }

    /// Turns readiness false (SIGTERM); liveness stays true.
    pub(crate) fn begin_drain(&self) {
        self.inner.draining.store(true, Ordering::Release);
    }

    pub(crate) fn is_live(&self) -> bool {
        true
    }

    /// Ready once the start-up load is done and, with strict readiness,
    /// while every model meant to be served has a version serving; never
    /// while draining. `Err` says why not.
    pub(crate) fn readiness(&self) -> std::result::Result<(), String> {
        if self.inner.draining.load(Ordering::Acquire) {
            return Err("the server is shutting down".into());
        }
        if !self.inner.started.load(Ordering::Acquire) {
            return Err("the server is loading its models".into());
        }
        if self.inner.strict_readiness {
            let missing = self.inner.registry.not_ready();
            if !missing.is_empty() {
                return Err(format!(
                    "{} (strict readiness: every model must be ready; see --strict-readiness)",
                    missing.join("; ")
                ));
            }
        }
        Ok(())
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.readiness().is_ok()
    }

    /// Whether a model (version) can take requests now.
    pub(crate) fn model_ready(&self, model: &str, version: Option<u64>) -> Result<bool> {
        let registry = &self.inner.registry;
        let found = match registry.ensemble(model, version) {
            Some(bound) => bound.map(|_| ()),
            None => registry.resolve(model, version).map(|_| ()),
        };
        match found {
            Ok(_) => Ok(true),
            Err(Error::Unavailable(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    // === metadata and statistics ===

    pub(crate) fn server_metadata(&self) -> ServerMetadata {
        ServerMetadata {
            name: "sluice",
            version: env!("CARGO_PKG_VERSION"),
            extensions: EXTENSIONS,
        }
    }

    /// A model's metadata (see [`describe::metadata`] for which versions).
    pub(crate) fn metadata(&self, model: &str, version: Option<u64>) -> Result<ModelMetadata> {
        if self.inner.panic_for_model.as_deref() == Some(model) {
            panic!("injected panic in the metadata of model '{model}'");
        }
        describe::metadata(&self.inner.registry, model, version)
    }

    /// The effective configuration of the version a request would reach.
    pub(crate) fn model_config(
        &self,
        model: &str,
        version: Option<u64>,
    ) -> Result<ModelConfigView> {
        control::check_model_name(model)?;
        describe::model_config(&self.inner.registry, model, version)
    }

    /// Triton's statistics: of one model (every served version, or one), or
    /// of every served model when `model` is `None`.
    pub(crate) fn statistics(
        &self,
        model: Option<&str>,
        version: Option<u64>,
    ) -> Result<Vec<VersionStats>> {
        let cache_on = self.inner.cache.is_some();
        describe::statistics(&self.inner.registry, model, version, cache_on)
    }

    /// Every metric family, in Prometheus' text format.
    pub(crate) fn metrics_text(&self) -> String {
        self.inner.metrics.render()
    }

    // === the model repository ===

    /// The repository index; with `ready_only`, only versions that serve.
    pub(crate) fn index(&self, ready_only: bool) -> Result<Vec<IndexRow>> {
        control::index(&self.inner.registry, ready_only)
    }

    /// Loads (or reloads from the repository) one model.
    pub async fn load(&self, model: &str, options: LoadOptions) -> Result<()> {
        control::load(&self.inner.registry, model, options).await
    }

    /// Stops serving one model; in-flight requests complete.
    pub(crate) async fn unload(&self, model: &str) -> Result<()> {
        control::unload(&self.inner.registry, model).await
    }

    // === inference ===

    /// Refuses at once a request for a model whose queue is full, before its
    /// body is read and decoded: under overload the 503 then costs no decode.
    /// Anything else (an unknown model, a bad version) passes, to be reported
    /// with the full request by [`Service::infer`].
    pub(crate) fn precheck(
        &self,
        model: &str,
        version: Option<u64>,
        protocol: Protocol,
    ) -> Result<()> {
        infer::precheck(&self.inner.registry, model, version, protocol)
    }

    /// Checks, queues and runs one request.
    pub async fn infer(&self, request: InferRequest, protocol: Protocol) -> Result<InferResponse> {
        if self.inner.panic_for_model.as_deref() == Some(request.model.as_str()) {
            panic!(
                "injected panic in an inference of model '{}'",
                request.model
            );
        }
        let inner = &self.inner;
        if let Some(bound) = inner.registry.ensemble(&request.model, request.version) {
            return ensemble::infer(
                &inner.registry,
                &inner.metrics,
                &inner.limits,
                bound,
                request,
                protocol,
            )
            .await;
        }
        infer::infer(
            &inner.registry,
            &inner.metrics,
            &inner.limits,
            inner.cache.as_ref(),
            request,
            protocol,
        )
        .await
    }
}
